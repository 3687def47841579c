//! `regfs serve`: the Docker Registry v1 + Docker Hub v1 server.
//!
//! Layers, like warp's todos example: [`routes`] captures requests and parses paths, [`handlers`]
//! hold one `async fn` per endpoint, the [`crate::registry`] logic does the work over storage,
//! and [`error`] is the one place failures become statuses. Handlers return
//! `Result<Response, ApiError>` rather than warp rejections, because a rejection means "try the
//! next route" in warp and would let a refused request fall through to an unrelated one.

pub mod auth;
pub mod error;
mod handlers;
pub mod listen;
pub mod range;
pub mod reply;
pub mod routes;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::names::Username;
use crate::registry::{Registry, RegistryConfig, RegistryError};
use crate::storage::{self, BlobStore, StorageConfig, StorageError};
use error::ApiError;
use state::AppState;

/// Largest JSON request body accepted.
pub const JSON_LIMIT: u64 = 1024 * 1024;

/// Everything `regfs serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub storage: StorageConfig,
    pub admin: Option<(Username, String)>,
    /// HMAC key for tokens; random per start when absent (tokens then die with the process).
    pub token_secret: Option<Vec<u8>>,
    pub token_ttl: Duration,
    pub signup: bool,
    pub max_layer_size: u64,
    /// PEM certificate chain and private key: serve HTTPS instead of HTTP.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Layer uploads in progress at once; more are refused with 503 before their body is read.
    pub max_uploads: usize,
    /// Header deadline and longest pause in a body (see [`listen::Timeouts`]).
    pub timeouts: listen::Timeouts,
    /// Answer layer GETs with a redirect to a presigned URL of the store (S3 only), so the
    /// bytes go from the store to the client without passing through the server.
    pub redirect_layers: bool,
    /// The time tokens are issued at and checked against: the system's, except in tests of
    /// expiry.
    pub clock: state::Clock,
}

impl ServeConfig {
    /// A configuration for tests and embedding: memory storage on a free loopback port.
    pub fn ephemeral() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            storage: StorageConfig::Memory,
            admin: None,
            token_secret: None,
            token_ttl: Duration::from_secs(3600),
            signup: true,
            max_layer_size: RegistryConfig::default().max_layer_size,
            tls: None,
            max_uploads: 64,
            timeouts: listen::Timeouts::default(),
            redirect_layers: false,
            clock: state::Clock::system(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open storage: {0}")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Tls(#[from] listen::TlsError),
    #[error(
        "--redirect-layers needs S3 storage (--storage s3://bucket/prefix): only an S3 store \
         can sign the URLs clients are sent to"
    )]
    RedirectNeedsS3,
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A server bound to its port, not yet serving.
pub struct BoundServer {
    addr: SocketAddr,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: AppState,
}

impl BoundServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` (or `https://`) of the server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The registry logic behind the server, for embedding.
    pub fn registry(&self) -> &Registry {
        &self.state.registry
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let timeouts = self.state.timeouts;
        listen::serve(
            self.listener,
            self.tls,
            timeouts,
            routes::api(self.state),
            shutdown,
        )
        .await;
    }
}

/// Opens storage and binds the listening socket.
pub async fn bind(config: &ServeConfig) -> Result<BoundServer, ServeError> {
    if config.redirect_layers && !matches!(config.storage, StorageConfig::S3(_)) {
        return Err(ServeError::RedirectNeedsS3);
    }
    // Opening a local store walks it once (leftover uploads), so keep that off the runtime.
    let storage_config = config.storage.clone();
    let store = tokio::task::spawn_blocking(move || storage::open(&storage_config))
        .await
        .map_err(|e| ServeError::Storage(StorageError::Io(std::io::Error::other(e))))??;
    if matches!(config.storage, StorageConfig::S3(_)) {
        match storage::probe_conditional_puts(store.as_ref()).await {
            Ok(true) => tracing::info!("the store honours conditional writes (not relied upon)"),
            Ok(false) => tracing::info!("the store ignores conditional writes; none are needed"),
            Err(e) => tracing::warn!(error = %e, "could not probe the store"),
        }
    }
    bind_with_store(config, store).await
}

/// Binds the listening socket over a store that is already open; `config.storage` is not
/// looked at. For embedding, and for tests that wrap a store (to inject faults, for one).
pub async fn bind_with_store(
    config: &ServeConfig,
    store: Arc<dyn BlobStore>,
) -> Result<BoundServer, ServeError> {
    let tls = match &config.tls {
        Some((cert, key)) => Some(listen::tls_acceptor(cert, key)?),
        None => None,
    };
    let registry = Registry::new(
        store,
        RegistryConfig {
            max_layer_size: config.max_layer_size,
            admin: config.admin.clone(),
            signup: config.signup,
            ..RegistryConfig::default()
        },
    );
    let secret = config
        .token_secret
        .clone()
        .unwrap_or_else(|| rand::random::<[u8; 32]>().to_vec());
    let ttl = i64::try_from(config.token_ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let state = AppState {
        registry,
        signer: auth::TokenSigner::new(&secret, ttl).with_clock(config.clock.clone()),
        public_host: addr.to_string(),
        uploads: state::UploadSlots::new(config.max_uploads),
        timeouts: config.timeouts,
        redirect_layers: config.redirect_layers,
    };
    Ok(BoundServer {
        addr,
        listener,
        tls,
        state,
    })
}

/// SIGINT and SIGTERM, caught from the moment this is made: install it before announcing
/// anything, so a signal during start-up still ends the process cleanly.
pub struct ShutdownSignal {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    /// Installs the handlers (needs a tokio runtime).
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignal {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves when either signal arrives (or arrived since installation).
    pub async fn recv(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
        tracing::info!("shutting down");
    }
}

/// Parses a JSON request body into `T`; anything malformed is a 400.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::Registry(RegistryError::InvalidJson))
}

/// Seconds since the epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
