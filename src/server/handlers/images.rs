//! Images: json, layer, ancestry and checksum.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use warp::http::{StatusCode, header};
use warp::reply::{Reply, Response};

use crate::names::ImageId;
use crate::registry::RegistryError;
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::range::{self, RangeRequest};
use crate::server::reply;
use crate::server::routes::{Request, drain_in_background};
use crate::server::state::AppState;
use crate::storage::keys;
use crate::v1;

/// How long a presigned layer URL stays valid. The store checks it when the request starts, not
/// while the bytes flow, so this only has to cover the client following the redirect; a resumed
/// pull asks the registry again and gets a fresh URL.
const REDIRECT_TTL: Duration = Duration::from_secs(300);

/// GET /v1/images/<id>/json
pub async fn get_json(state: &AppState, req: Request, id: ImageId) -> Result<Response, ApiError> {
    let (meta, json) = state.registry.image_json(&id).await?;
    let mut res = if req.headers.contains_key(header::IF_MODIFIED_SINCE) {
        // The json never changes once complete, whatever date the client has.
        let mut res = Response::new(bytes::Bytes::new().into());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        reply::cache_forever(res.headers_mut(), meta.last_modified_time());
        res
    } else {
        reply::immutable(json, "application/json", meta.last_modified_time())
    };
    let h = res.headers_mut();
    reply::set(h, v1::HEADER_SIZE, &meta.size.to_string());
    reply::set(h, v1::HEADER_CHECKSUM_PAYLOAD, &meta.checksum);
    Ok(res)
}

/// PUT /v1/images/<id>/json
pub async fn put_json(
    state: &AppState,
    caller: Caller,
    id: ImageId,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.authorize_image_write()?;
    state.registry.put_image_json(&id, body).await?;
    Ok(reply::ok_true())
}

/// GET /v1/images/<id>/layer (HEAD too; `Range` gives 206 or 416; with `--redirect-layers` a
/// GET is a 302 to the store)
pub async fn get_layer(state: &AppState, req: Request, id: ImageId) -> Result<Response, ApiError> {
    let meta = state.registry.image(&id).await?;
    let size = meta.size;
    let wanted = range::parse(req.header(header::RANGE.as_str()), size);
    let range = match wanted {
        RangeRequest::Full => None,
        RangeRequest::Partial(r) => Some(r),
        RangeRequest::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { size }),
    };
    // A HEAD is answered here: sizes come without a round trip to the store, and a URL signed
    // for GET would refuse a HEAD anyway.
    if state.redirect_layers && !req.head {
        if let Some(res) = redirect_to_store(state, &id, &meta).await {
            return Ok(res);
        }
    }
    let layer = state.registry.image_layer(&id, range.clone()).await?;
    let served = layer.download.range.clone();
    let stream = sync_wrapper::SyncStream::new(
        layer
            .download
            .stream
            .map(|r| r.map_err(std::io::Error::other)),
    );
    let mut res = warp::reply::stream(stream).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    reply::cache_forever(h, meta.last_modified_time());
    reply::set(h, header::ACCEPT_RANGES.as_str(), "bytes");
    reply::set(
        h,
        header::CONTENT_LENGTH.as_str(),
        &(served.end - served.start).to_string(),
    );
    reply::set(h, v1::HEADER_SIZE, &size.to_string());
    reply::set(h, v1::HEADER_CHECKSUM_PAYLOAD, &meta.checksum);
    if range.is_some() {
        reply::set(
            h,
            header::CONTENT_RANGE.as_str(),
            &format!(
                "bytes {}-{}/{}",
                served.start,
                served.end.saturating_sub(1),
                size
            ),
        );
        *res.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(res)
}

/// A 302 to a presigned URL of the layer, with the size and checksum headers a direct answer
/// has. The reference registry redirected to its storage with 302 too; Docker's Go client
/// follows it and re-sends `Range` (but not `Authorization`) to the new location. `None` when
/// the store cannot sign: the caller streams the layer instead.
async fn redirect_to_store(
    state: &AppState,
    id: &ImageId,
    meta: &crate::registry::ImageMeta,
) -> Option<Response> {
    let url = match state
        .registry
        .store()
        .presigned_get(&keys::image_layer(id), REDIRECT_TTL)
        .await
    {
        Ok(url) => url?,
        Err(e) => {
            tracing::warn!(error = %e, image = %id, "cannot presign a layer URL; streaming it");
            return None;
        }
    };
    let location = header::HeaderValue::from_str(&url).ok()?;
    let mut res = Response::new(bytes::Bytes::new().into());
    *res.status_mut() = StatusCode::FOUND;
    let h = res.headers_mut();
    h.insert(header::LOCATION, location);
    // The URL expires: the redirect must not outlive it in a cache.
    reply::no_cache(h);
    reply::set(h, v1::HEADER_SIZE, &meta.size.to_string());
    reply::set(h, v1::HEADER_CHECKSUM_PAYLOAD, &meta.checksum);
    Some(res)
}

/// PUT /v1/images/<id>/layer : streamed; the payload checksum is computed on the way.
pub async fn put_layer(
    state: &AppState,
    caller: Caller,
    req: Request,
    id: ImageId,
) -> Result<Response, ApiError> {
    caller.authorize_image_write()?;
    if let Some(ua) = req.header(header::USER_AGENT.as_str()) {
        if is_pre_0_10_docker(ua) {
            return Err(ApiError::PreconditionFailed(
                "Docker client older than 0.10 is not supported",
            ));
        }
    }
    // A declared size over the limit is refused before a byte is read, rather than after
    // reading up to the limit.
    let limit = state.registry.config().max_layer_size;
    let declared = req
        .header(header::CONTENT_LENGTH.as_str())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        drain_in_background(req.body);
        return Err(RegistryError::LayerTooLarge { limit }.into());
    }
    // Held until this function returns or is dropped, whichever way the upload ends. Over
    // the cap, a 503 before the body is read: a flood of uploads cannot exhaust the store's
    // connections or the server's memory.
    let Some(_slot) = state.uploads.try_take() else {
        tracing::warn!(image = %id, "upload refused: too many in progress");
        drain_in_background(req.body);
        return Err(ApiError::Busy);
    };
    let mut body = req.body;
    let size = match state.registry.put_image_layer(&id, &mut body).await {
        Ok(size) => size,
        // Refused before or while reading the body (no json yet, too large, already
        // complete): whatever is left of it is drained so the client reads the answer.
        Err(e) => {
            drain_in_background(body);
            return Err(e.into());
        }
    };
    tracing::debug!(image = %id, size, "layer stored");
    Ok(reply::ok_true())
}

/// Docker clients before 0.10 relied on server-side tarsum, which is gone.
fn is_pre_0_10_docker(user_agent: &str) -> bool {
    let Some(version) = user_agent
        .split_whitespace()
        .find_map(|p| p.strip_prefix("docker/"))
    else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    major == 0 && minor < 10
}

/// PUT /v1/images/<id>/checksum : X-Docker-Checksum-Payload must match the computed one.
pub async fn put_checksum(
    state: &AppState,
    caller: Caller,
    req: Request,
    id: ImageId,
) -> Result<Response, ApiError> {
    caller.authorize_image_write()?;
    let payload = req.header(v1::HEADER_CHECKSUM_PAYLOAD);
    state.registry.put_image_checksum(&id, payload).await?;
    Ok(reply::ok_true())
}

/// GET /v1/images/<id>/ancestry
pub async fn get_ancestry(state: &AppState, id: ImageId) -> Result<Response, ApiError> {
    let meta = state.registry.image(&id).await?;
    let body = state.registry.image_ancestry(&id).await?;
    Ok(reply::immutable(
        body,
        "application/json",
        meta.last_modified_time(),
    ))
}

/// GET /v1/images/<id>/files : not offered; layers are opaque to this registry.
pub async fn get_files(state: &AppState, id: ImageId) -> Result<Response, ApiError> {
    state.registry.image(&id).await?;
    Err(RegistryError::InvalidField("Layer format not supported").into())
}

/// GET /v1/images/<id>/diff : needs a diff worker the reference ran on Redis; not offered.
pub async fn get_diff(state: &AppState, id: ImageId) -> Result<Response, ApiError> {
    state.registry.image(&id).await?;
    Err(RegistryError::InvalidField("Diff queue is disabled").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_docker_clients_are_recognised() {
        assert!(is_pre_0_10_docker("docker/0.9.1 go/go1.2"));
        assert!(!is_pre_0_10_docker("docker/0.10.0 go/go1.2"));
        assert!(!is_pre_0_10_docker("docker/1.3.2 go/go1.3.3"));
        assert!(!is_pre_0_10_docker("curl/8.0"));
    }
}
