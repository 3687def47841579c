//! Request handlers: one plain `async fn` per endpoint, each documented by its HTTP line. They
//! take what the router extracted, call the registry, and build a response; errors are
//! [`ApiError`]s, turned into responses in one place.

mod images;
mod ping;
mod repositories;
mod search;
mod users;

use warp::http::Method;
use warp::reply::Response;

use super::error::ApiError;
use super::routes::{ImageOp, RepoOp, Request, Route};
use super::state::AppState;

/// Calls the handler for a route and method.
pub async fn handle(state: &AppState, route: Route, req: Request) -> Result<Response, ApiError> {
    use Method as M;
    let method = req.method.clone();
    match route {
        Route::Ping => match method {
            M::GET => Ok(ping::ping()),
            _ => Err(ApiError::MethodNotAllowed),
        },
        Route::Users => match method {
            M::POST => users::register(state, req).await,
            M::GET => users::login(state, req).await,
            _ => Err(ApiError::MethodNotAllowed),
        },
        Route::User(name) => match method {
            M::PUT => users::update(state, req, &name).await,
            _ => Err(ApiError::MethodNotAllowed),
        },
        Route::Search => match method {
            M::GET => search::search(state, req).await,
            _ => Err(ApiError::MethodNotAllowed),
        },
        Route::Image(id, op) => {
            let id = super::routes::image_id(&id)?;
            match (op, method) {
                (ImageOp::Json, M::GET) => images::get_json(state, req, id).await,
                (ImageOp::Json, M::PUT) => images::put_json(state, req, id).await,
                (ImageOp::Layer, M::GET) => images::get_layer(state, req, id).await,
                (ImageOp::Layer, M::PUT) => images::put_layer(state, req, id).await,
                (ImageOp::Ancestry, M::GET) => images::get_ancestry(state, id).await,
                (ImageOp::Checksum, M::PUT) => images::put_checksum(state, req, id).await,
                (ImageOp::Files, M::GET) => images::get_files(state, id).await,
                (ImageOp::Diff, M::GET) => images::get_diff(state, id).await,
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
        Route::Repo(raw, op) => {
            let repo = raw.parse()?;
            match (op, method) {
                (RepoOp::Root, M::PUT) => repositories::put_repo(state, req, repo).await,
                (RepoOp::Root, M::DELETE) => repositories::delete_repo(state, req, repo).await,
                (RepoOp::Images, M::GET) => repositories::get_images(state, req, repo).await,
                (RepoOp::Images, M::PUT) => repositories::put_images(state, req, repo).await,
                (RepoOp::Images, M::DELETE) => repositories::delete_images(state, req, repo).await,
                (RepoOp::Auth, M::PUT) => repositories::put_auth(state, req, repo).await,
                (RepoOp::Tags, M::GET) => repositories::get_tags(state, req, repo).await,
                (RepoOp::Tags, M::DELETE) => repositories::delete_repo(state, req, repo).await,
                (RepoOp::Tag(tag), M::GET) => repositories::get_tag(state, req, repo, &tag).await,
                (RepoOp::Tag(tag), M::PUT) => repositories::put_tag(state, req, repo, &tag).await,
                (RepoOp::Tag(tag), M::DELETE) => {
                    repositories::delete_tag(state, req, repo, &tag).await
                }
                (RepoOp::TagJson(tag), M::GET) => {
                    repositories::get_tag_json(state, req, repo, &tag).await
                }
                (RepoOp::Json, M::GET) => {
                    repositories::get_tag_json(state, req, repo, "latest").await
                }
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
        Route::V2 => Err(ApiError::NotFound("Not a v2 registry")),
        Route::NotFound => Err(ApiError::NotFound("Not found")),
    }
}
