//! The registry's logic: images, repositories, tags, accounts and search over a [`BlobStore`],
//! with no HTTP in sight. The server's handlers translate requests into calls here and
//! [`RegistryError`]s into statuses (in `server::error`, the one place that does).
//!
//! State lives only in the store, so any number of server processes can share one store: the
//! in-memory caches hold either immutable facts (a complete image never changes) or data that
//! may be a few seconds stale by design (the search listing, API.md section 10).

mod images;
mod repos;
mod users;
pub mod v2;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::names::{ImageId, NameError, Tag};
use crate::storage::{BlobStore, Key, ObjectInfo, StorageError};

pub use images::{ImageMeta, LayerStream};
pub use repos::TagRecord;
pub use users::{Account, Role};

/// Largest JSON document the registry stores or reads back (image json, lists, records).
pub const MAX_JSON_BYTES: u64 = 1024 * 1024;

/// What can go wrong in a registry operation; each variant has one HTTP status and message.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Image not found")]
    ImageNotFound,
    #[error("Image is being uploaded, retry later")]
    ImageInProgress,
    #[error("Image already exists")]
    ImageExists,
    #[error("Image depends on a non existing parent")]
    ParentMissing,
    #[error("Invalid JSON")]
    InvalidJson,
    #[error("{0}")]
    InvalidImageJson(&'static str),
    #[error("Checksum mismatch")]
    ChecksumMismatch,
    #[error("Missing Image's checksum")]
    ChecksumMissing,
    #[error("Invalid checksum")]
    ChecksumEmpty,
    #[error("Image layer not uploaded yet")]
    LayerMissing,
    #[error("Cannot set this image checksum")]
    CannotSetChecksum,
    #[error("Layer is larger than the {limit}-byte limit")]
    LayerTooLarge { limit: u64 },
    #[error("Upload interrupted: {0}")]
    UploadInterrupted(String),
    #[error("Repository not found")]
    RepoNotFound,
    #[error("Tag not found")]
    TagNotFound(Tag),
    #[error("Invalid data")]
    InvalidData,
    #[error("{0}")]
    InvalidName(#[from] NameError),
    #[error("Username or email already exists")]
    UserExists,
    #[error("User not found")]
    UserNotFound,
    #[error("{0}")]
    InvalidField(&'static str),
    #[error("storage failure: {0}")]
    Storage(StorageError),
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        RegistryError::Storage(e)
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Settings of the registry logic.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Largest layer accepted, in bytes.
    pub max_layer_size: u64,
    /// How long a listing of all repositories may be served from memory.
    pub listing_ttl: Duration,
    /// The built-in administrator, if configured: `(name, password)`.
    pub admin: Option<(crate::names::Username, String)>,
    /// Whether `POST /v1/users` may create accounts.
    pub signup: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_layer_size: 64 * 1024 * 1024 * 1024,
            listing_ttl: Duration::from_secs(5),
            admin: None,
            signup: true,
        }
    }
}

/// The registry: cheap to clone, shared by every request.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn BlobStore>,
    config: RegistryConfig,
    /// Complete images never change, so their metadata is cached without expiry.
    complete: Mutex<lru::LruCache<ImageId, Arc<ImageMeta>>>,
    /// All repositories, for search and listings; refreshed after `listing_ttl`. Held only
    /// for moments, never across a store call: a repository write bumps its generation here
    /// without waiting for a scan in progress.
    listing: Mutex<repos::Listing>,
    /// Held by the one scan of the store under way, so concurrent searches share its result
    /// instead of each scanning; only searches wait for it.
    listing_scan: tokio::sync::Mutex<()>,
    users: users::CredentialCache,
    /// Where argon2 runs, a few at a time.
    hashing: users::HashPool,
    /// A hash of a random password, checked for unknown users (see `authenticate`).
    decoy_hash: tokio::sync::OnceCell<String>,
    /// Tag records by key, valid while the listed object's version is unchanged.
    tag_records: VersionedCache<repos::TagRecord>,
    /// Image-list entries by key, likewise.
    list_entries: VersionedCache<crate::v1::ImageEntry>,
    /// Json of complete images (immutable), within a byte budget.
    json: Mutex<JsonCache>,
}

/// Small records read back by key, reused while the store reports the same version of the
/// object (its e-tag, else size and modification time). Each use still starts from a fresh
/// listing, so several servers on one store never serve each other's stale tags.
#[derive(Debug)]
struct VersionedCache<T> {
    entries: Mutex<lru::LruCache<Key, (String, T)>>,
}

impl<T: Clone> VersionedCache<T> {
    fn new(capacity: usize) -> Self {
        let cap = std::num::NonZeroUsize::new(capacity).unwrap_or(std::num::NonZeroUsize::MIN);
        VersionedCache {
            entries: Mutex::new(lru::LruCache::new(cap)),
        }
    }

    fn version(info: &ObjectInfo) -> String {
        let mtime = info
            .last_modified
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "{}:{}:{mtime}",
            info.e_tag.as_deref().unwrap_or(""),
            info.size
        )
    }

    fn get(&self, key: &Key, info: &ObjectInfo) -> Option<T> {
        let mut entries = self.entries.lock().ok()?;
        match entries.get(key) {
            Some((v, t)) if *v == Self::version(info) => Some(t.clone()),
            _ => None,
        }
    }

    fn put(&self, key: Key, info: &ObjectInfo, value: T) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.put(key, (Self::version(info), value));
        }
    }
}

/// Json bodies of complete images; they never change, so they need no validation.
#[derive(Debug)]
struct JsonCache {
    entries: lru::LruCache<ImageId, bytes::Bytes>,
    bytes: usize,
}

/// Memory for cached image json.
const JSON_CACHE_BYTES: usize = 32 * 1024 * 1024;

impl JsonCache {
    fn get(&mut self, id: &ImageId) -> Option<bytes::Bytes> {
        self.entries.get(id).cloned()
    }

    fn put(&mut self, id: ImageId, json: bytes::Bytes) {
        self.bytes += json.len();
        if let Some(old) = self.entries.put(id, json) {
            self.bytes -= old.len();
        }
        while self.bytes > JSON_CACHE_BYTES {
            match self.entries.pop_lru() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }
}

impl Registry {
    pub fn new(store: Arc<dyn BlobStore>, config: RegistryConfig) -> Self {
        let cap = std::num::NonZeroUsize::new(65_536).unwrap_or(std::num::NonZeroUsize::MIN);
        Registry {
            inner: Arc::new(Inner {
                store,
                config,
                complete: Mutex::new(lru::LruCache::new(cap)),
                listing: Mutex::new(repos::Listing::default()),
                listing_scan: tokio::sync::Mutex::new(()),
                users: users::CredentialCache::default(),
                hashing: users::HashPool::default(),
                decoy_hash: tokio::sync::OnceCell::new(),
                tag_records: VersionedCache::new(65_536),
                list_entries: VersionedCache::new(65_536),
                json: Mutex::new(JsonCache {
                    entries: lru::LruCache::unbounded(),
                    bytes: 0,
                }),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.inner.store
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }
}

/// Reads a small JSON object, mapping a missing one to `missing`.
async fn read_json<T: serde::de::DeserializeOwned>(
    store: &dyn BlobStore,
    key: &crate::storage::Key,
    missing: impl FnOnce() -> RegistryError,
) -> Result<T> {
    let bytes = match store.get_bytes(key, MAX_JSON_BYTES).await {
        Ok(b) => b,
        Err(StorageError::NotFound) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("record {key}: {e}")))
}

/// A stored record that does not parse: a store failure (503), never the client's fault.
fn corrupt(what: String) -> RegistryError {
    RegistryError::Storage(StorageError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("corrupt {what}"),
    )))
}

/// Whether an object exists.
async fn exists(store: &dyn BlobStore, key: &crate::storage::Key) -> Result<bool> {
    match store.head(key).await {
        Ok(_) => Ok(true),
        Err(StorageError::NotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
