//! Response builders with the headers every v1 response carries.

use bytes::Bytes;
use serde::Serialize;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

/// A JSON response with the reference registry's no-cache headers.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    no_cache(h);
    res
}

/// The reference's "nothing to say" success body: `true`.
pub fn ok_true() -> Response {
    json(StatusCode::OK, &true)
}

/// The index routes' bare success body: `""`.
pub fn empty_string(status: StatusCode) -> Response {
    json(status, "")
}

/// Raw bytes with a content type, cacheable forever (immutable image data).
pub fn immutable(bytes: Bytes, content_type: &'static str) -> Response {
    let mut res = Response::new(bytes.into());
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    cache_forever(h);
    res
}

pub fn no_cache(h: &mut warp::http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("-1"));
}

/// Image json, layers and ancestry never change once complete.
pub fn cache_forever(h: &mut warp::http::HeaderMap) {
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(31_536_000);
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(expires)) {
        h.insert(header::EXPIRES, v);
    }
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    );
}

/// Sets a header from a string, skipping values that are not valid header text.
pub fn set(h: &mut warp::http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}
