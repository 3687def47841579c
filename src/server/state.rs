//! What every request handler shares.

use super::auth::TokenSigner;
use crate::registry::Registry;

/// Shared state, cheap to clone into each request.
#[derive(Debug, Clone)]
pub struct AppState {
    pub registry: Registry,
    pub signer: TokenSigner,
    /// `host:port` to advertise in `X-Docker-Endpoints` when a request has no `Host` header.
    pub public_host: String,
    /// Layer GETs answer with a redirect to the store where it can sign one.
    pub redirect_layers: bool,
}
