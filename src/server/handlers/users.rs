//! Accounts: registration, login check, update.

use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::names::Username;
use crate::registry::{RegistryError, Role};
use crate::server::auth::{self, Caller};
use crate::server::error::ApiError;
use crate::server::reply;
use crate::server::routes::Request;
use crate::server::state::AppState;
use crate::server::{JSON_LIMIT, parse_json};

#[derive(Deserialize)]
struct Registration {
    username: String,
    password: String,
    email: String,
}

#[derive(Deserialize)]
struct Update {
    email: Option<String>,
    password: Option<String>,
}

/// POST /v1/users/
pub async fn register(state: &AppState, mut req: Request) -> Result<Response, ApiError> {
    if !state.registry.config().signup {
        return Err(ApiError::Forbidden(
            "Registration is disabled on this registry",
        ));
    }
    let body = req.body_bytes(JSON_LIMIT).await?;
    let r: Registration = parse_json(&body)?;
    state
        .registry
        .register(&r.username, &r.password, &r.email)
        .await?;
    Ok(reply::json(StatusCode::CREATED, "User Created"))
}

/// GET /v1/users/ : checks Basic credentials.
pub async fn login(state: &AppState, req: Request) -> Result<Response, ApiError> {
    match auth::authenticate(&state.registry, &state.signer, &req.headers, true).await? {
        Caller::User(_) => Ok(reply::json(StatusCode::OK, "OK")),
        _ => Err(ApiError::Unauthorized { index: true }),
    }
}

/// PUT /v1/users/<username>/
pub async fn update(state: &AppState, mut req: Request, name: &str) -> Result<Response, ApiError> {
    let caller = auth::authenticate(&state.registry, &state.signer, &req.headers, true).await?;
    let Caller::User(account) = caller else {
        return Err(ApiError::Unauthorized { index: true });
    };
    let target: Username = name
        .parse()
        .map_err(|_| ApiError::Registry(RegistryError::UserNotFound))?;
    if account.role != Role::Admin && account.name != target {
        return Err(ApiError::Forbidden("You may only update your own account"));
    }
    let body = req.body_bytes(JSON_LIMIT).await?;
    let u: Update = parse_json(&body)?;
    state
        .registry
        .update_user(&target, u.email.as_deref(), u.password.as_deref())
        .await?;
    Ok(reply::empty_string(StatusCode::NO_CONTENT))
}
