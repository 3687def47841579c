//! What every request handler shares.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    pub uploads: UploadSlots,
    pub timeouts: Timeouts,
    /// Layer GETs answer with a redirect to the store where it can sign one.
    pub redirect_layers: bool,
}

/// The cap on layer uploads in progress: each holds a slot for as long as its handler runs, so
/// the slot comes back however the upload ends (done, refused, failed, or the client gone and
/// the request dropped).
#[derive(Debug, Clone)]
pub struct UploadSlots(Arc<Semaphore>);

impl UploadSlots {
    pub fn new(max: usize) -> Self {
        UploadSlots(Arc::new(Semaphore::new(
            max.clamp(1, Semaphore::MAX_PERMITS),
        )))
    }

    /// A slot if one is free now; uploads never queue, since a queued one would hold its
    /// connection (and the client's patience) while it waits.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}
