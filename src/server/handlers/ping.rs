//! `_ping`: liveness and the registry's role.

use warp::http::StatusCode;
use warp::reply::Response;

use crate::server::reply;
use crate::v1;

/// GET /v1/_ping (and /_ping)
pub fn ping() -> Response {
    let mut res = reply::json(StatusCode::OK, &serde_json::json!({}));
    let h = res.headers_mut();
    // One regfs process is both index and registry.
    reply::set(h, v1::HEADER_STANDALONE, "true");
    reply::set(h, v1::HEADER_REGISTRY_VERSION, env!("CARGO_PKG_VERSION"));
    res
}
