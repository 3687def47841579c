//! What every request handler shares.

use super::auth::TokenSigner;
use super::listen::Timeouts;
use crate::registry::Registry;

/// Shared state, cheap to clone into each request.
#[derive(Debug, Clone)]
pub struct AppState {
    pub registry: Registry,
    pub signer: TokenSigner,
    /// `host:port` to advertise in `X-Docker-Endpoints` when a request has no `Host` header.
    pub public_host: String,
    pub timeouts: Timeouts,
}
