//! The error codes of the distribution-spec and their JSON body,
//! `{"errors":[{"code":"...","message":"...","detail":...}]}`.
//!
//! The server sends these (the one mapping of its errors to statuses stays in
//! `server/error.rs`, which takes the status from [`ErrorCode::status`]); the mount reads them
//! from other registries, so parsing is lenient: an unknown code is kept as
//! [`ErrorCode::Other`], a missing message is empty, any `detail` is kept as JSON.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One error code of the spec (`spec.md`, "Error Codes"), plus the few more the reference
/// server sends (`RANGE_INVALID`, `PAGINATION_NUMBER_INVALID`, `TAG_INVALID`, `UNAVAILABLE`,
/// `UNKNOWN`). Statuses are the reference server's (`registry/api/errcode`), except
/// `BLOB_UPLOAD_INVALID`: 400, the spec's answer to a bad upload request, where the reference
/// server says 404, which clients would read as a session that no longer exists.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    RangeInvalid,
    PaginationNumberInvalid,
    TagInvalid,
    Unavailable,
    Unknown,
    /// A code from another registry that is none of the above.
    Other(String),
}

/// Every code we send, with its wire name, status and default message (the spec's wording).
const CODES: &[(ErrorCode, &str, u16, &str)] = &[
    (
        ErrorCode::BlobUnknown,
        "BLOB_UNKNOWN",
        404,
        "blob unknown to registry",
    ),
    (
        ErrorCode::BlobUploadInvalid,
        "BLOB_UPLOAD_INVALID",
        400,
        "blob upload invalid",
    ),
    (
        ErrorCode::BlobUploadUnknown,
        "BLOB_UPLOAD_UNKNOWN",
        404,
        "blob upload unknown to registry",
    ),
    (
        ErrorCode::DigestInvalid,
        "DIGEST_INVALID",
        400,
        "provided digest did not match uploaded content",
    ),
    (
        ErrorCode::ManifestBlobUnknown,
        "MANIFEST_BLOB_UNKNOWN",
        400,
        "manifest references a manifest or blob unknown to registry",
    ),
    (
        ErrorCode::ManifestInvalid,
        "MANIFEST_INVALID",
        400,
        "manifest invalid",
    ),
    (
        ErrorCode::ManifestUnknown,
        "MANIFEST_UNKNOWN",
        404,
        "manifest unknown to registry",
    ),
    (
        ErrorCode::NameInvalid,
        "NAME_INVALID",
        400,
        "invalid repository name",
    ),
    (
        ErrorCode::NameUnknown,
        "NAME_UNKNOWN",
        404,
        "repository name not known to registry",
    ),
    (
        ErrorCode::SizeInvalid,
        "SIZE_INVALID",
        400,
        "provided length did not match content length",
    ),
    (
        ErrorCode::Unauthorized,
        "UNAUTHORIZED",
        401,
        "authentication required",
    ),
    (
        ErrorCode::Denied,
        "DENIED",
        403,
        "requested access to the resource is denied",
    ),
    (
        ErrorCode::Unsupported,
        "UNSUPPORTED",
        405,
        "the operation is unsupported",
    ),
    (
        ErrorCode::TooManyRequests,
        "TOOMANYREQUESTS",
        429,
        "too many requests",
    ),
    (
        ErrorCode::RangeInvalid,
        "RANGE_INVALID",
        416,
        "invalid content range",
    ),
    (
        ErrorCode::PaginationNumberInvalid,
        "PAGINATION_NUMBER_INVALID",
        400,
        "invalid number of results requested",
    ),
    (
        ErrorCode::TagInvalid,
        "TAG_INVALID",
        400,
        "manifest tag did not match URI",
    ),
    (
        ErrorCode::Unavailable,
        "UNAVAILABLE",
        503,
        "service unavailable",
    ),
    (ErrorCode::Unknown, "UNKNOWN", 500, "unknown error"),
];

impl ErrorCode {
    fn entry(&self) -> Option<&'static (ErrorCode, &'static str, u16, &'static str)> {
        CODES.iter().find(|(c, ..)| c == self)
    }

    /// The code as it appears on the wire, `BLOB_UNKNOWN`.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Other(s) => s,
            known => known.entry().map_or("UNKNOWN", |e| e.1),
        }
    }

    /// The HTTP status the spec (or the reference server) answers with.
    pub fn status(&self) -> u16 {
        self.entry().map_or(500, |e| e.2)
    }

    /// The spec's message for the code.
    pub fn default_message(&self) -> &'static str {
        self.entry().map_or("unknown error", |e| e.3)
    }

    /// Parses a wire name; unknown names are kept as [`ErrorCode::Other`].
    pub fn parse(s: &str) -> ErrorCode {
        CODES
            .iter()
            .find(|e| e.1 == s)
            .map_or_else(|| ErrorCode::Other(s.to_string()), |e| e.0.clone())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(ErrorCode::parse(&s))
    }
}

/// One entry of an error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: ErrorCode,
    #[serde(default)]
    pub message: String,
    /// Free-form; omitted when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl ErrorInfo {
    /// An entry with the code's default message and no detail.
    pub fn new(code: ErrorCode) -> Self {
        let message = code.default_message().to_string();
        ErrorInfo {
            code,
            message,
            detail: None,
        }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// The body of every v2 error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub errors: Vec<ErrorInfo>,
}

impl ErrorBody {
    /// A body of one entry with the code's default message.
    pub fn single(code: ErrorCode) -> Self {
        ErrorBody {
            errors: vec![ErrorInfo::new(code)],
        }
    }

    /// The serialized body.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and JSON values always serializes; the fallback keeps this total.
        serde_json::to_vec(self).unwrap_or_else(|_| br#"{"errors":[]}"#.to_vec())
    }

    /// Parses an error body from another registry; `None` when it is not one (an HTML page,
    /// a proxy's text), so the caller falls back to the status alone.
    pub fn parse(body: &[u8]) -> Option<ErrorBody> {
        serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .filter(|b| !b.errors.is_empty())
    }

    /// The first entry's code, which is what a client acts on.
    pub fn first_code(&self) -> Option<&ErrorCode> {
        self.errors.first().map(|e| &e.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_with_their_statuses() {
        for (code, name, status, _) in CODES {
            assert_eq!(code.as_str(), *name);
            assert_eq!(ErrorCode::parse(name), *code);
            assert_eq!(code.status(), *status);
        }
        assert_eq!(ErrorCode::ManifestBlobUnknown.status(), 400);
        assert_eq!(ErrorCode::NameUnknown.status(), 404);
        assert_eq!(ErrorCode::Unauthorized.status(), 401);
        assert_eq!(ErrorCode::Denied.status(), 403);
        assert_eq!(ErrorCode::TooManyRequests.status(), 429);
        assert_eq!(ErrorCode::RangeInvalid.status(), 416);
    }

    #[test]
    fn every_wire_name_is_distinct() {
        let mut names: Vec<_> = CODES.iter().map(|e| e.1).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CODES.len());
    }

    #[test]
    fn the_body_has_the_spec_shape() {
        let body = ErrorBody::single(ErrorCode::BlobUnknown);
        let v: serde_json::Value = serde_json::from_slice(&body.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]})
        );
        let with_detail = ErrorBody {
            errors: vec![
                ErrorInfo::new(ErrorCode::DigestInvalid)
                    .with_message("digest mismatch")
                    .with_detail(serde_json::json!({"digest": "sha256:00"})),
            ],
        };
        assert_eq!(ErrorBody::parse(&with_detail.to_json()), Some(with_detail));
    }

    #[test]
    fn bodies_of_other_registries_parse_leniently() {
        let hub = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Name":"library/x","Action":"pull"}]}]}"#;
        let b = ErrorBody::parse(hub).unwrap();
        assert_eq!(b.first_code(), Some(&ErrorCode::Unauthorized));
        let odd = br#"{"errors":[{"code":"QUOTA_EXCEEDED"}]}"#;
        let b = ErrorBody::parse(odd).unwrap();
        assert_eq!(
            b.first_code(),
            Some(&ErrorCode::Other("QUOTA_EXCEEDED".into()))
        );
        assert_eq!(b.errors[0].message, "");
        assert_eq!(ErrorCode::Other("X".into()).status(), 500);
        for not_one in [
            &b"<html>502</html>"[..],
            b"",
            b"{}",
            br#"{"errors":[]}"#,
            b"null",
        ] {
            assert_eq!(ErrorBody::parse(not_one), None);
        }
    }
}
