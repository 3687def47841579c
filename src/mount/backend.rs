//! The seam between the filesystem and a registry: [`RegistryBackend`] is everything
//! [`RegistryFs`](super::RegistryFs) asks of one, with typed names in and one error type out
//! ([`BackendError`], which [`FsError`](super::FsError) maps to errno in one place).
//!
//! The filesystem holds an `Arc<dyn RegistryBackend>` chosen once at mount: the v1 client over
//! HTTP ([`crate::client::RegistryClient`]) or the registry this process serves
//! ([`embedded::EmbeddedBackend`], layers read without a socket) today, another protocol or a fault-injecting wrapper
//! tomorrow, and an in-memory fake in tests (`fake`, built only with `fault-injection`). A
//! trait object rather than a type parameter: the choice is made at run time (by flag or by
//! probing the registry), the block cache hands the backend to `'static` fetch tasks, and
//! one dynamic call per network round trip costs nothing measurable.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;

use crate::names::{ImageId, RepoRef, Tag};
use crate::v1::SearchResult;

pub mod embedded;
#[cfg(feature = "fault-injection")]
pub mod fake;

/// Why a registry call failed, whatever the protocol: what the filesystem (and its errno
/// mapping) needs to tell apart.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("not found")]
    NotFound,
    #[error("authentication required or refused")]
    Unauthorized,
    #[error("permission denied")]
    Forbidden,
    #[error("already exists")]
    Conflict,
    #[error("refused by the registry: {0}")]
    Refused(String),
    #[error("registry error {0}")]
    Server(u16),
    #[error("registry unreachable: {0}")]
    Transport(String),
    #[error("registry did not answer in time")]
    Timeout,
    #[error("unexpected answer from the registry: {0}")]
    Protocol(String),
}

impl BackendError {
    /// Whether trying again may succeed: the registry blinked rather than said no.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            BackendError::Server(_) | BackendError::Transport(_) | BackendError::Timeout
        )
    }
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// Reads a layer range the way every backend retries it: a transient failure is tried again
/// after a back-off (50 ms, doubling up to 2 s) while that still fits in one deadline,
/// `timeout` from now. `attempt` reads into the buffer it is given (the caller's on the first
/// try, so its mapped pages are reused) by the deadline it is given.
pub(crate) async fn retry_range<F, Fut>(
    range: &Range<u64>,
    timeout: std::time::Duration,
    buf: Option<BytesMut>,
    mut attempt: F,
) -> Result<Bytes>
where
    F: FnMut(BytesMut, std::time::Instant) -> Fut,
    Fut: std::future::Future<Output = Result<Bytes>>,
{
    if range.is_empty() {
        return Ok(Bytes::new());
    }
    let deadline = std::time::Instant::now() + timeout;
    let mut backoff = std::time::Duration::from_millis(50);
    let mut buf = buf.unwrap_or_default();
    loop {
        match attempt(std::mem::take(&mut buf), deadline).await {
            Err(e) if e.retryable() && std::time::Instant::now() + backoff < deadline => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
            }
            got => return got,
        }
    }
}

/// What the registry says of a complete image.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The image json, verbatim.
    pub json: Bytes,
    /// Layer size in bytes.
    pub layer_size: u64,
    /// The parent id from the json, if any.
    pub parent: Option<ImageId>,
    /// The json's `created` time, if it parses.
    pub created: Option<SystemTime>,
}

/// A tag as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTag {
    pub id: ImageId,
    /// When the tag last changed, from registries that say.
    pub updated: Option<SystemTime>,
}

/// The bytes of a layer being uploaded, as they are written; an error ends the upload.
pub type LayerBody = BoxStream<'static, std::io::Result<Bytes>>;

/// What the filesystem needs from a registry. Reads of named things are idempotent and may be
/// retried by the implementation within its own deadline; writes of named things (PUT and
/// DELETE) are idempotent too; a layer upload is not (its body cannot be replayed).
#[async_trait]
pub trait RegistryBackend: Send + Sync + std::fmt::Debug {
    /// Where the registry is (its URL): what disk cache entries are scoped by when the mount
    /// names no other scope, and what messages name.
    fn location(&self) -> &str;

    /// The user this backend authenticates as, if any.
    fn user(&self) -> Option<&str>;

    /// Whether it sends credentials at all (writes need them).
    fn has_credentials(&self) -> bool {
        self.user().is_some()
    }

    /// Checks, within `limit`, that the registry answers and accepts the credentials; a
    /// refusal of them is [`BackendError::Unauthorized`] or [`BackendError::Forbidden`].
    async fn check_access(&self, limit: Duration) -> Result<()>;

    /// Checks that the registry answers.
    async fn ping(&self) -> Result<()>;

    // ----- listings -----

    /// Every repository.
    async fn repositories(&self) -> Result<Vec<RepoRef>>;

    /// Repositories matching a search term.
    async fn search(&self, term: &str) -> Result<Vec<SearchResult>>;

    /// A repository's tags.
    async fn tags(&self, repo: &RepoRef) -> Result<BTreeMap<Tag, ListedTag>>;

    /// A repository's image list.
    async fn repo_images(&self, repo: &RepoRef) -> Result<Vec<ImageId>>;

    // ----- images, which never change once complete -----

    /// The json and layer size of a complete image.
    async fn image(&self, id: &ImageId) -> Result<ImageInfo>;

    /// An image's ancestry, the image first.
    async fn ancestry(&self, id: &ImageId) -> Result<Vec<ImageId>>;

    /// Bytes `range` of a layer, exactly (a shorter answer is an error), received into `buf`
    /// when it is given (its contents are dropped; reusing mapped pages saves faults).
    async fn layer_range_into(
        &self,
        id: &ImageId,
        range: Range<u64>,
        buf: Option<BytesMut>,
    ) -> Result<Bytes>;

    /// Bytes `range` of a layer.
    async fn layer_range(&self, id: &ImageId, range: Range<u64>) -> Result<Bytes> {
        self.layer_range_into(id, range, None).await
    }

    /// The layer as a local file, where the registry keeps it in one this process can read
    /// (the registry this process serves, on a local directory); `None` otherwise.
    async fn local_layer_file(&self, id: &ImageId) -> Option<std::fs::File> {
        let _ = id;
        None
    }

    // ----- writes -----

    /// Creates a repository (making an existing one again is fine).
    async fn create_repo(&self, repo: &RepoRef) -> Result<()>;

    /// Deletes a repository (tags and image list; images stay).
    async fn delete_repo(&self, repo: &RepoRef) -> Result<()>;

    /// Points a tag at an image.
    async fn put_tag(&self, repo: &RepoRef, tag: &Tag, id: &ImageId) -> Result<()>;

    /// Deletes a tag.
    async fn delete_tag(&self, repo: &RepoRef, tag: &Tag) -> Result<()>;

    /// Adds images to a repository's image list.
    async fn add_repo_images(&self, repo: &RepoRef, ids: &[ImageId]) -> Result<()>;

    /// Starts an image push with its json.
    async fn put_image_json(&self, id: &ImageId, json: Bytes) -> Result<()>;

    /// Uploads an image's layer from `body`; not retried (see the trait's note).
    async fn put_layer(&self, id: &ImageId, body: LayerBody) -> Result<()>;

    /// Completes an image push with the payload checksum of its json and layer.
    async fn put_checksum(&self, id: &ImageId, payload: &str) -> Result<()>;
}
