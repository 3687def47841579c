//! Repositories (index side: create, delete, image lists, tokens) and tags (registry side).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use warp::http::{HeaderMap, StatusCode, header};
use warp::reply::Response;

use crate::names::{ImageId, RepoRef, Tag};
use crate::registry::RegistryError;
use crate::server::auth::{Access, Caller};
use crate::server::error::ApiError;
use crate::server::routes::Request;
use crate::server::state::AppState;
use crate::server::{parse_json, reply};
use crate::v1::{self, ImageEntry, TagInfo};

/// An entry of a pushed image list; Docker adds `Tag` and other keys, which are ignored.
#[derive(Deserialize)]
struct PushedImage {
    id: String,
    #[serde(default)]
    checksum: Option<String>,
}

fn parse_image_list(body: &[u8]) -> Result<Vec<ImageEntry>, ApiError> {
    let items: Vec<PushedImage> = parse_json(body)?;
    items
        .into_iter()
        .map(|i| {
            i.id.parse::<ImageId>()
                .map_err(|_| ApiError::BadRequest("Invalid image ID in list".into()))?;
            Ok(ImageEntry {
                id: i.id,
                checksum: i.checksum,
            })
        })
        .collect()
}

/// Adds `X-Docker-Token`, `WWW-Authenticate: Token` and `X-Docker-Endpoints` when the client
/// asked for a token with `X-Docker-Token: true`.
fn with_token(
    state: &AppState,
    req_headers: &HeaderMap,
    mut res: Response,
    repo: &RepoRef,
    access: Access,
) -> Response {
    let wants = req_headers
        .get(v1::HEADER_TOKEN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !wants {
        return res;
    }
    let token = state.signer.issue(repo, access, state.signer.now());
    let h = res.headers_mut();
    reply::set(h, v1::HEADER_TOKEN, &token);
    reply::set(
        h,
        header::WWW_AUTHENTICATE.as_str(),
        &format!("Token {token}"),
    );
    // The client comes back to the host it asked, whatever address we listen on.
    let host = req_headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(&state.public_host)
        .to_string();
    reply::set(h, v1::HEADER_ENDPOINTS, &host);
    res
}

/// PUT /v1/repositories/<ns>/<repo>/ : create, or re-push, a repository.
pub async fn put_repo(
    state: &AppState,
    caller: Caller,
    req: Request,
    repo: RepoRef,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.authorize_repo(&repo, Access::Write, true)?;
    let entries = parse_image_list(&body)?;
    state.registry.merge_repo_images(&repo, &entries).await?;
    let res = reply::empty_string(StatusCode::OK);
    Ok(with_token(state, &req.headers, res, &repo, Access::Write))
}

/// DELETE /v1/repositories/<ns>/<repo>/ (and DELETE .../tags): tags, image list and search
/// entry go; images stay.
pub async fn delete_repo(
    state: &AppState,
    caller: Caller,
    req: Request,
    repo: RepoRef,
) -> Result<Response, ApiError> {
    // A write token for the repository is as good as a delete one.
    caller
        .authorize_repo(&repo, Access::Delete, true)
        .or_else(|_| caller.authorize_repo(&repo, Access::Write, true))?;
    state.registry.delete_repo(&repo).await?;
    let res = reply::empty_string(StatusCode::OK);
    Ok(with_token(state, &req.headers, res, &repo, Access::Delete))
}

/// GET /v1/repositories/<ns>/<repo>/images
pub async fn get_images(
    state: &AppState,
    req: Request,
    repo: RepoRef,
) -> Result<Response, ApiError> {
    let images = state.registry.repo_images(&repo).await?;
    let res = reply::json(StatusCode::OK, &images);
    Ok(with_token(state, &req.headers, res, &repo, Access::Read))
}

/// PUT /v1/repositories/<ns>/<repo>/images : the last step of a push; merges the list.
pub async fn put_images(
    state: &AppState,
    caller: Caller,
    req: Request,
    repo: RepoRef,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.authorize_repo(&repo, Access::Write, true)?;
    let entries = parse_image_list(&body)?;
    state.registry.merge_repo_images(&repo, &entries).await?;
    let res = reply::empty_string(StatusCode::NO_CONTENT);
    Ok(with_token(state, &req.headers, res, &repo, Access::Write))
}

/// DELETE /v1/repositories/<ns>/<repo>/images : image lists only grow; a no-op.
pub fn delete_images(caller: Caller, repo: RepoRef) -> Result<Response, ApiError> {
    caller.authorize_repo(&repo, Access::Delete, true)?;
    Ok(reply::empty_string(StatusCode::NO_CONTENT))
}

/// PUT /v1/repositories/<ns>/<repo>/auth : is this token valid for this repository?
/// The dispatcher resolves a token that does not verify to an anonymous caller here (see
/// `AuthClass::TokenCheck`), so every caller but a valid token for `repo` gets the 403.
pub async fn put_auth(
    state: &AppState,
    caller: Caller,
    repo: RepoRef,
) -> Result<Response, ApiError> {
    let valid = matches!(&caller, Caller::Token(grant) if grant.repo == repo);
    if !state.registry.repo_exists(&repo).await? {
        return Err(RegistryError::RepoNotFound.into());
    }
    if valid {
        Ok(reply::json(StatusCode::OK, "OK"))
    } else {
        Err(ApiError::Forbidden("Permission denied"))
    }
}

/// GET /v1/repositories/<ns>/<repo>/tags: the plain `tag -> id` map, or with each tag's last
/// update for a client that asks for [`v1::TAGS_WITH_TIMES`].
pub async fn get_tags(state: &AppState, req: Request, repo: RepoRef) -> Result<Response, ApiError> {
    let records = state.registry.tag_records(&repo).await?;
    let mut res = if reply::accepts(&req.headers, v1::TAGS_WITH_TIMES) {
        let listed: BTreeMap<String, v1::ListedTag> = records
            .into_iter()
            .map(|(name, t)| {
                let listed = v1::ListedTag {
                    id: t.id,
                    last_update: t.info.last_update,
                };
                (name, listed)
            })
            .collect();
        reply::json_as(StatusCode::OK, &listed, v1::TAGS_WITH_TIMES)
    } else {
        let plain: BTreeMap<String, String> =
            records.into_iter().map(|(name, t)| (name, t.id)).collect();
        reply::json(StatusCode::OK, &plain)
    };
    res.headers_mut()
        .insert(header::VARY, header::HeaderValue::from_static("accept"));
    Ok(res)
}

fn parse_tag(tag: &str) -> Result<Tag, ApiError> {
    tag.parse::<Tag>()
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// GET /v1/repositories/<ns>/<repo>/tags/<tag>
pub async fn get_tag(state: &AppState, repo: RepoRef, tag: &str) -> Result<Response, ApiError> {
    let tag: Tag = tag
        .parse()
        .map_err(|_| ApiError::NotFound("Tag not found"))?;
    let record = state.registry.tag(&repo, &tag).await?;
    Ok(reply::json(StatusCode::OK, &record.id))
}

/// PUT /v1/repositories/<ns>/<repo>/tags/<tag> : body is the image id as a JSON string.
pub async fn put_tag(
    state: &AppState,
    caller: Caller,
    req: Request,
    repo: RepoRef,
    tag: &str,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.authorize_repo(&repo, Access::Write, false)?;
    let tag = parse_tag(tag)?;
    let id: String = serde_json::from_slice(&body).map_err(|_| RegistryError::InvalidData)?;
    let id: ImageId = id.parse().map_err(|_| RegistryError::InvalidData)?;
    let user_agent = req.header(header::USER_AGENT.as_str()).unwrap_or("");
    state.registry.put_tag(&repo, &tag, &id, user_agent).await?;
    Ok(reply::ok_true())
}

/// DELETE /v1/repositories/<ns>/<repo>/tags/<tag>
pub async fn delete_tag(
    state: &AppState,
    caller: Caller,
    repo: RepoRef,
    tag: &str,
) -> Result<Response, ApiError> {
    // Either a delete token or a write token for the repository may remove a tag.
    caller
        .authorize_repo(&repo, Access::Delete, false)
        .or_else(|_| caller.authorize_repo(&repo, Access::Write, false))?;
    let tag: Tag = tag
        .parse()
        .map_err(|_| ApiError::NotFound("Tag not found"))?;
    state.registry.delete_tag(&repo, &tag).await?;
    Ok(reply::ok_true())
}

/// GET /v1/repositories/<ns>/<repo>/tags/<tag>/json (and GET .../json for `latest`)
pub async fn get_tag_json(
    state: &AppState,
    repo: RepoRef,
    tag: &str,
) -> Result<Response, ApiError> {
    let info = match tag.parse::<Tag>() {
        Ok(tag) => match state.registry.tag(&repo, &tag).await {
            Ok(record) => record.info,
            Err(RegistryError::TagNotFound(_)) => TagInfo::default(),
            Err(e) => return Err(e.into()),
        },
        Err(_) => TagInfo::default(),
    };
    Ok(reply::json(StatusCode::OK, &info))
}
