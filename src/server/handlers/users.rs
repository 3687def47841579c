//! Accounts: registration, login check, update.

use bytes::Bytes;
use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::names::Username;
use crate::registry::{RegistryError, Role};
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::parse_json;
use crate::server::reply;
use crate::server::state::AppState;

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
pub async fn register(state: &AppState, body: Bytes) -> Result<Response, ApiError> {
    if !state.registry.config().signup {
        return Err(ApiError::Forbidden(
            "Registration is disabled on this registry",
        ));
    }
    let r: Registration = parse_json(&body)?;
    state
        .registry
        .register(&r.username, &r.password, &r.email)
        .await?;
    Ok(reply::json(StatusCode::CREATED, "User Created"))
}

/// GET /v1/users/ : checks Basic credentials.
pub fn login(caller: Caller) -> Result<Response, ApiError> {
    match caller {
        Caller::User(_) => Ok(reply::json(StatusCode::OK, "OK")),
        _ => Err(ApiError::Unauthorized { index: true }),
    }
}

/// PUT /v1/users/<username>/
pub async fn update(
    state: &AppState,
    caller: Caller,
    name: &str,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Caller::User(account) = caller else {
        return Err(ApiError::Unauthorized { index: true });
    };
    let target: Username = name
        .parse()
        .map_err(|_| ApiError::Registry(RegistryError::UserNotFound))?;
    if account.role != Role::Admin && account.name != target {
        return Err(ApiError::Forbidden("You may only update your own account"));
    }
    let u: Update = parse_json(&body)?;
    state
        .registry
        .update_user(&target, u.email.as_deref(), u.password.as_deref())
        .await?;
    Ok(reply::empty_string(StatusCode::NO_CONTENT))
}
