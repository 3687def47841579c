//! What every request handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

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

/// Where the server reads the wall-clock time that tokens are issued and checked by: the
/// system's, or one that stands still until told to move ([`Clock::manual`]), so a test of
/// token expiry moves time on instead of sleeping through a token's lifetime. Cheap to clone;
/// clones share a manual clock's time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// A manual clock's present, in seconds since the epoch; `None` for the system clock.
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Clock::default()
    }

    /// A clock standing still at the present until [`Clock::advance`] moves it.
    pub fn manual() -> Self {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(super::now_unix()))),
        }
    }

    /// Seconds since the epoch.
    pub fn now_unix(&self) -> i64 {
        match &self.manual {
            None => super::now_unix(),
            Some(now) => now.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock on by `by` (whole seconds); the system clock cannot be moved, so
    /// it is left alone.
    pub fn advance(&self, by: Duration) {
        if let Some(now) = &self.manual {
            let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
            now.fetch_add(secs, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_its_clones_share_it() {
        let clock = Clock::manual();
        let other = clock.clone();
        let start = clock.now_unix();
        clock.advance(Duration::from_secs(90));
        assert_eq!(other.now_unix(), start + 90);
        // The system clock cannot be moved.
        let system = Clock::system();
        system.advance(Duration::from_secs(86_400));
        assert!(system.now_unix() < super::super::now_unix() + 3600);
    }
}
