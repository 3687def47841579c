//! Blob upload sessions as text: the header names of the v2 protocol, the `Content-Range` of a
//! chunked `PATCH`, and the `Range` of an upload's status.
//!
//! A chunk's `Content-Range` is `<start>-<end>`, inclusive, without a unit (the spec's form);
//! we also take `bytes <start>-<end>[/<total>]` and `bytes=<start>-<end>`, which some clients
//! send. The server checks `start` against the session's offset (416 `RANGE_INVALID` when out of
//! order) and the body's length against the range. An upload's status says how much has been
//! received as `Range: 0-<last byte>`; like the reference server, an empty upload says `0-0`
//! (the format cannot say "nothing"), so a reader takes the offset from the byte count it knows
//! when it is zero. [`parse_upload_range`] returns the next offset to send.

/// `Docker-Content-Digest`: the digest of a blob or manifest, on GET, HEAD and after a push.
pub const HEADER_CONTENT_DIGEST: &str = "docker-content-digest";
/// `Docker-Upload-UUID`: an upload session's id.
pub const HEADER_UPLOAD_UUID: &str = "docker-upload-uuid";
/// `Docker-Distribution-API-Version: registry/2.0`, on every v2 response.
pub const HEADER_API_VERSION: &str = "docker-distribution-api-version";
pub const API_VERSION: &str = "registry/2.0";
/// `OCI-Subject`: the subject of a manifest just pushed, when the registry tracks referrers.
pub const HEADER_OCI_SUBJECT: &str = "oci-subject";
/// `OCI-Filters-Applied: artifactType` on a filtered referrers response.
pub const HEADER_OCI_FILTERS_APPLIED: &str = "oci-filters-applied";
/// `OCI-Chunk-Min-Length`: the smallest chunk the registry takes, on an upload's creation.
pub const HEADER_OCI_CHUNK_MIN_LENGTH: &str = "oci-chunk-min-length";

/// Why a range header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("malformed range {0:?}")]
    Malformed(String),
}

/// The bytes a chunk carries: `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl ChunkRange {
    /// How many bytes the chunk must hold.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true: a range names at least one byte. Here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the chunk continues an upload that has received `offset` bytes.
    pub fn follows(&self, offset: u64) -> bool {
        self.start == offset
    }
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a chunk's `Content-Range`.
pub fn parse_content_range(header: &str) -> Result<ChunkRange, RangeError> {
    let malformed = || RangeError::Malformed(header.to_string());
    let s = header.trim();
    let s = s
        .strip_prefix("bytes=")
        .or_else(|| s.strip_prefix("bytes "))
        .unwrap_or(s)
        .trim();
    // An optional `/total` (or `/*`) is not needed: the session knows its offset.
    let s = s.split_once('/').map_or(s, |(range, _)| range);
    let (start, end) = s.split_once('-').ok_or_else(malformed)?;
    let start = number(start).ok_or_else(malformed)?;
    let end = number(end).ok_or_else(malformed)?;
    if end < start {
        return Err(malformed());
    }
    Ok(ChunkRange { start, end })
}

/// The `Range` value of an upload that has received `received` bytes.
pub fn upload_range(received: u64) -> String {
    format!("0-{}", received.saturating_sub(1))
}

/// The offset to continue an upload at, from another registry's `Range: 0-<end>` (with or
/// without `bytes=`): `end + 1`. `0-0` is ambiguous (nothing, or one byte): it reads as 0, so a
/// client resends at most one byte rather than skipping one.
pub fn parse_upload_range(header: &str) -> Result<u64, RangeError> {
    let malformed = || RangeError::Malformed(header.to_string());
    let s = header.trim();
    let s = s.strip_prefix("bytes=").unwrap_or(s);
    let (start, end) = s.split_once('-').ok_or_else(malformed)?;
    if number(start) != Some(0) {
        return Err(malformed());
    }
    let end = number(end).ok_or_else(malformed)?;
    if end == 0 {
        return Ok(0);
    }
    end.checked_add(1).ok_or_else(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunk_ranges_of_every_form_parse() {
        let want = ChunkRange { start: 10, end: 19 };
        for form in [
            "10-19",
            " 10-19 ",
            "bytes=10-19",
            "bytes 10-19/100",
            "bytes 10-19/*",
            "10-19/*",
        ] {
            assert_eq!(parse_content_range(form), Ok(want), "{form}");
        }
        assert_eq!(want.len(), 10);
        assert!(want.follows(10));
        assert!(!want.follows(9));
        assert_eq!(parse_content_range("0-0").unwrap().len(), 1);
    }

    #[test]
    fn bad_chunk_ranges_are_refused() {
        for bad in [
            "",
            "-",
            "5-",
            "-5",
            "5-4",
            "a-b",
            "1-2-3",
            "bytes=",
            "+1-2",
            "1 -2x",
            "99999999999999999999999-1",
        ] {
            assert!(parse_content_range(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn upload_status_ranges_round_trip() {
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(1), "0-0");
        assert_eq!(upload_range(100), "0-99");
        assert_eq!(parse_upload_range("0-99"), Ok(100));
        assert_eq!(parse_upload_range("bytes=0-99"), Ok(100));
        assert_eq!(parse_upload_range("0-0"), Ok(0));
        for bad in ["", "1-99", "0-", "0-x", "0-18446744073709551615"] {
            assert!(parse_upload_range(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = parse_content_range(&s);
            let _ = parse_upload_range(&s);
        }

        #[test]
        fn printed_ranges_parse_back(start in 0u64..1 << 40, len in 1u64..1 << 30) {
            let end = start + len - 1;
            prop_assert_eq!(parse_content_range(&format!("{start}-{end}")), Ok(ChunkRange { start, end }));
            if len > 1 {
                prop_assert_eq!(parse_upload_range(&upload_range(len)), Ok(len));
            }
        }
    }
}
