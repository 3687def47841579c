//! Search over repository names.

use warp::http::StatusCode;
use warp::reply::Response;

use crate::server::error::ApiError;
use crate::server::reply;
use crate::server::routes::Request;
use crate::v1::SearchResponse;

/// Longest search term accepted.
const MAX_QUERY: usize = 255;

/// GET /v1/search?q=<term>
pub async fn search(
    state: &crate::server::state::AppState,
    req: Request,
) -> Result<Response, ApiError> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(&req.query)
        .map_err(|_| ApiError::BadRequest("Invalid query string".into()))?;
    let query = params
        .into_iter()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v)
        .unwrap_or_default();
    if query.len() > MAX_QUERY {
        return Err(ApiError::BadRequest("Search term is too long".into()));
    }
    let results = state.registry.search(&query).await?;
    Ok(reply::json(
        StatusCode::OK,
        &SearchResponse {
            query,
            num_results: results.len(),
            results,
        },
    ))
}
