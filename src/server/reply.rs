//! Response builders with the headers every v1 response carries.

use bytes::Bytes;
use serde::Serialize;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

/// A JSON response with the reference registry's no-cache headers.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    json_as(status, value, "application/json")
}

/// A JSON response under a more specific media type (a `+json` one).
pub fn json_as<T: Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
    content_type: &'static str,
) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    no_cache(h);
    res
}

/// Whether the request's `Accept` names `media_type` with a nonzero quality. Wildcards do not
/// count: they ask for nothing in particular, and the plain form is the default.
pub fn accepts(headers: &warp::http::HeaderMap, media_type: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let named = parts
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(media_type));
            let refused = parts.any(|p| {
                p.split_once('=').is_some_and(|(k, q)| {
                    k.trim().eq_ignore_ascii_case("q")
                        && q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            });
            named && !refused
        })
}

/// The reference's "nothing to say" success body: `true`.
pub fn ok_true() -> Response {
    json(StatusCode::OK, &true)
}

/// The index routes' bare success body: `""`.
pub fn empty_string(status: StatusCode) -> Response {
    json(status, "")
}

/// Raw bytes with a content type, cacheable forever (immutable image data) and last changed
/// at `last_modified`.
pub fn immutable(
    bytes: Bytes,
    content_type: &'static str,
    last_modified: std::time::SystemTime,
) -> Response {
    let mut res = Response::new(bytes.into());
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    cache_forever(h, last_modified);
    res
}

pub fn no_cache(h: &mut warp::http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("-1"));
}

/// Image json, layers and ancestry never change once complete; `last_modified` is the image's
/// time (its `created`, else when it was stored).
pub fn cache_forever(h: &mut warp::http::HeaderMap, last_modified: std::time::SystemTime) {
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(31_536_000);
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(expires)) {
        h.insert(header::EXPIRES, v);
    }
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(last_modified)) {
        h.insert(header::LAST_MODIFIED, v);
    }
}

/// Sets a header from a string, skipping values that are not valid header text.
pub fn set(h: &mut warp::http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderMap;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn accept_names_a_media_type_among_others() {
        let t = "application/vnd.example+json";
        assert!(accepts(&accept(&[t]), t));
        assert!(accepts(
            &accept(&["text/html, APPLICATION/VND.EXAMPLE+JSON ;q=0.5"]),
            t
        ));
        assert!(accepts(&accept(&["text/html", t]), t));
    }

    #[test]
    fn accept_without_the_type_or_refusing_it_does_not_count() {
        let t = "application/vnd.example+json";
        assert!(!accepts(&HeaderMap::new(), t));
        assert!(!accepts(&accept(&["*/*", "application/*"]), t));
        assert!(!accepts(&accept(&["application/json"]), t));
        assert!(!accepts(&accept(&[&format!("{t};q=0")]), t));
        assert!(!accepts(&accept(&[&format!("{t}; q=0.000")]), t));
        assert!(!accepts(&accept(&[&format!("{t}x")]), t));
    }
}
