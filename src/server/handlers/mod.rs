//! Request handlers: one plain `async fn` per endpoint, each documented by its HTTP line. The
//! dispatcher here runs the steps every endpoint shares first (resolving the caller, reading a
//! JSON body), so handlers take the resolved [`auth::Caller`] and decide only what it may do;
//! they call the registry and build a response; errors are [`ApiError`]s, turned into responses
//! in one place.

mod images;
mod ping;
mod repositories;
mod search;
mod users;

use warp::reply::Response;

use super::JSON_LIMIT;
use super::auth;
use super::error::ApiError;
use super::routes::{BodyKind, Endpoint, Request, Route};
use super::state::AppState;

/// Calls the handler of a request's endpoint, after the steps every endpoint goes through:
/// resolving the caller (a 401 for wrong credentials of any kind, on every route: API.md
/// section 9) and, for a JSON endpoint, reading its body whole (a 400 for an empty one). The
/// handler receives both and decides only what this caller may do.
pub async fn handle(
    state: &AppState,
    route: Route,
    mut req: Request,
) -> Result<Response, ApiError> {
    let endpoint = Endpoint::of(&route, &req.method)?;
    let spec = endpoint.spec();
    let caller =
        auth::resolve_caller(&state.registry, &state.signer, &req.headers, spec.auth).await?;
    let json = match spec.body {
        BodyKind::Json => req.json_body(JSON_LIMIT).await?,
        BodyKind::None | BodyKind::Stream => bytes::Bytes::new(),
    };
    use Endpoint as E;
    match endpoint {
        E::Ping => Ok(ping::ping()),
        E::Register => users::register(state, json).await,
        E::Login => users::login(caller),
        E::UpdateUser => users::update(state, caller, route.user(), json).await,
        E::Search => search::search(state, req).await,
        E::GetImageJson => images::get_json(state, req, route.image()?).await,
        E::PutImageJson => images::put_json(state, caller, route.image()?, json).await,
        E::GetLayer => images::get_layer(state, req, route.image()?).await,
        E::PutLayer => images::put_layer(state, caller, req, route.image()?).await,
        E::GetAncestry => images::get_ancestry(state, route.image()?).await,
        E::PutChecksum => images::put_checksum(state, caller, req, route.image()?).await,
        E::GetFiles => images::get_files(state, route.image()?).await,
        E::GetDiff => images::get_diff(state, route.image()?).await,
        E::PutRepo => repositories::put_repo(state, caller, req, route.repo()?, json).await,
        E::DeleteRepo | E::DeleteTags => {
            repositories::delete_repo(state, caller, req, route.repo()?).await
        }
        E::GetRepoImages => repositories::get_images(state, req, route.repo()?).await,
        E::PutRepoImages => repositories::put_images(state, caller, req, route.repo()?, json).await,
        E::DeleteRepoImages => repositories::delete_images(caller, route.repo()?),
        E::PutRepoAuth => repositories::put_auth(state, caller, route.repo()?).await,
        E::GetTags => repositories::get_tags(state, req, route.repo()?).await,
        E::GetTag => repositories::get_tag(state, route.repo()?, route.tag()).await,
        E::PutTag => {
            repositories::put_tag(state, caller, req, route.repo()?, route.tag(), json).await
        }
        E::DeleteTag => repositories::delete_tag(state, caller, route.repo()?, route.tag()).await,
        E::GetTagJson | E::GetRepoJson => {
            repositories::get_tag_json(state, route.repo()?, route.tag()).await
        }
    }
}
