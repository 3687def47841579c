//! The one place where failures become HTTP responses.
//!
//! Client mistakes get a 4xx with `{"error": "..."}` (the reference registry's shape, and the
//! exact strings the Docker client compares); store failures get a 503 with `Retry-After` and a
//! generic message, and their details go to the log only.

use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use crate::registry::RegistryError;
use crate::storage::StorageError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// No or wrong credentials. `index` routes challenge for Basic, registry routes for a token.
    #[error("Requires authorization")]
    Unauthorized { index: bool },
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("Request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("Requested range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    PreconditionFailed(&'static str),
    /// Too many uploads under way: the client retries later.
    #[error("Too many uploads in progress, retry later")]
    Busy,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use RegistryError as R;
        match self {
            ApiError::Registry(e) => match e {
                R::ImageNotFound | R::RepoNotFound | R::TagNotFound(_) | R::UserNotFound => {
                    StatusCode::NOT_FOUND
                }
                R::ImageExists | R::CannotSetChecksum => StatusCode::CONFLICT,
                R::ChecksumMissing => StatusCode::PRECONDITION_FAILED,
                R::LayerTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                R::ImageInProgress
                | R::ParentMissing
                | R::InvalidJson
                | R::InvalidImageJson(_)
                | R::ChecksumMismatch
                | R::ChecksumEmpty
                | R::LayerMissing
                | R::UploadInterrupted(_)
                | R::InvalidData
                | R::InvalidName(_)
                | R::UserExists
                | R::InvalidField(_) => StatusCode::BAD_REQUEST,
                R::Storage(StorageError::NotFound) => StatusCode::NOT_FOUND,
                R::Storage(StorageError::InvalidRange { .. }) => StatusCode::RANGE_NOT_SATISFIABLE,
                R::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The response a client sees. Internal details never leave the server.
    pub fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            // `docker login` compares this raw body, quotes included, to fall through to login.
            ApiError::Registry(RegistryError::UserExists) => {
                serde_json::Value::String(self.to_string())
            }
            ApiError::Registry(RegistryError::Storage(e)) => {
                tracing::error!(error = %e, "storage failure");
                serde_json::json!({"error": "Storage is unavailable, retry later"})
            }
            _ => serde_json::json!({"error": self.to_string()}),
        };
        if status.is_server_error() {
            tracing::warn!(%status, "request failed");
        } else {
            tracing::debug!(%status, error = %self, "request refused");
        }
        let mut res = super::reply::json(status, &body);
        let headers = res.headers_mut();
        match &self {
            ApiError::Unauthorized { index: true } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"auth required\",Token"),
                );
            }
            ApiError::Unauthorized { index: false } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
            }
            ApiError::RangeNotSatisfiable { size }
            | ApiError::Registry(RegistryError::Storage(StorageError::InvalidRange { size })) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                // A refusal of a request whose body is left unread also closes the
                // connection; that rule is the dispatcher's, for every status.
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        res
    }
}

impl From<crate::names::NameError> for ApiError {
    fn from(e: crate::names::NameError) -> Self {
        match e {
            crate::names::NameError::ImageId => ApiError::NotFound("Invalid image ID"),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_registration_body_is_the_bare_json_string() {
        let res = ApiError::Registry(RegistryError::UserExists).into_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn storage_failures_are_503_with_retry_after() {
        let e = ApiError::Registry(RegistryError::Storage(StorageError::Io(
            std::io::Error::other("disk on fire"),
        )));
        let res = e.into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn invalid_image_ids_are_404() {
        let e: ApiError = crate::names::NameError::ImageId.into();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
    }
}
