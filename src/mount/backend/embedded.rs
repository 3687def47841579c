//! The registry this process serves itself (the embedded default of `regfs mount`) as a
//! backend: its layer bytes are read straight from the in-process [`Registry`], without the
//! server's and the client's copies through a loopback socket, and on a local directory its
//! stored layer files are handed to the kernel (passthrough). Everything else goes over HTTP
//! through the v1 client, so listings, metadata and writes take exactly the server's paths
//! (its authentication and rules included).
//!
//! Reads are public, so the in-process read gives the same bytes and the same errors as HTTP:
//! a registry failure goes through the server's error mapping ([`ApiError`]) and becomes the
//! error the client would have read from that status.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{BackendError, ImageInfo, LayerBody, ListedTag, RegistryBackend, Result, retry_range};
use crate::client::{RegistryClient, status_error};
use crate::names::{ImageId, RepoRef, Tag};
use crate::registry::{Registry, RegistryError};
use crate::server::error::ApiError;
use crate::v1::SearchResult;

/// The registry in this process: layers read in process, the rest over HTTP.
#[derive(Debug, Clone)]
pub struct EmbeddedBackend {
    http: RegistryClient,
    registry: Registry,
}

impl EmbeddedBackend {
    /// `registry` must be the one this process serves at `http`'s URL.
    pub fn new(http: RegistryClient, registry: Registry) -> Self {
        EmbeddedBackend { http, registry }
    }
}

/// The error the server would have answered `e` with, as the client would have read it.
fn as_answered(e: RegistryError) -> BackendError {
    let api = ApiError::from(e);
    status_error(api.status()).unwrap_or_else(|| BackendError::Refused(api.to_string()))
}

/// Bytes `range` of layer `id` from `registry`, into `buf`. A store failure part-way is an
/// error, as a cut-off HTTP body is.
async fn local_range(
    registry: &Registry,
    id: &ImageId,
    range: Range<u64>,
    mut buf: BytesMut,
) -> Result<Bytes> {
    let want = (range.end - range.start) as usize;
    let mut layer = registry
        .image_layer(id, Some(range))
        .await
        .map_err(as_answered)?;
    buf.clear();
    buf.reserve(want);
    while let Some(chunk) = layer.download.stream.next().await {
        match chunk {
            Ok(chunk) if buf.len() + chunk.len() <= want => buf.extend_from_slice(&chunk),
            Ok(_) => return Err(BackendError::Protocol("layer larger than asked".into())),
            Err(e) => return Err(as_answered(e.into())),
        }
    }
    if buf.len() != want {
        return Err(BackendError::Protocol("short range read".into()));
    }
    Ok(buf.freeze())
}

#[async_trait]
impl RegistryBackend for EmbeddedBackend {
    fn location(&self) -> &str {
        self.http.base_url()
    }

    fn user(&self) -> Option<&str> {
        self.http.user()
    }

    fn has_credentials(&self) -> bool {
        self.http.has_credentials()
    }

    async fn check_access(&self, limit: Duration) -> Result<()> {
        self.http.check_access(limit).await
    }

    async fn ping(&self) -> Result<()> {
        self.http.ping().await
    }

    async fn repositories(&self) -> Result<Vec<RepoRef>> {
        self.http.repositories().await
    }

    async fn search(&self, term: &str) -> Result<Vec<SearchResult>> {
        self.http.search(term).await
    }

    async fn tags(&self, repo: &RepoRef) -> Result<BTreeMap<Tag, ListedTag>> {
        self.http.tags(repo).await
    }

    async fn repo_images(&self, repo: &RepoRef) -> Result<Vec<ImageId>> {
        self.http.repo_images(repo).await
    }

    async fn image(&self, id: &ImageId) -> Result<ImageInfo> {
        self.http.image(id).await
    }

    async fn ancestry(&self, id: &ImageId) -> Result<Vec<ImageId>> {
        self.http.ancestry(id).await
    }

    /// Read in process, retried as the client retries a ranged GET: transient failures again
    /// after a back-off, all within one `--timeout`.
    async fn layer_range_into(
        &self,
        id: &ImageId,
        range: Range<u64>,
        buf: Option<BytesMut>,
    ) -> Result<Bytes> {
        retry_range(&range, self.http.timeout(), buf, |into, deadline| {
            let left = deadline.saturating_duration_since(Instant::now());
            let read = local_range(&self.registry, id, range.clone(), into);
            async move {
                tokio::time::timeout(left, read)
                    .await
                    .unwrap_or(Err(BackendError::Timeout))
            }
        })
        .await
    }

    async fn local_layer_file(&self, id: &ImageId) -> Option<std::fs::File> {
        match self.registry.layer_file(id).await {
            Ok(file) => file,
            Err(error) => {
                tracing::debug!(%id, %error, "no stored layer file");
                None
            }
        }
    }

    async fn create_repo(&self, repo: &RepoRef) -> Result<()> {
        self.http.create_repo(repo).await
    }

    async fn delete_repo(&self, repo: &RepoRef) -> Result<()> {
        self.http.delete_repo(repo).await
    }

    async fn put_tag(&self, repo: &RepoRef, tag: &Tag, id: &ImageId) -> Result<()> {
        self.http.put_tag(repo, tag, id).await
    }

    async fn delete_tag(&self, repo: &RepoRef, tag: &Tag) -> Result<()> {
        self.http.delete_tag(repo, tag).await
    }

    async fn add_repo_images(&self, repo: &RepoRef, ids: &[ImageId]) -> Result<()> {
        self.http.add_repo_images(repo, ids).await
    }

    async fn put_image_json(&self, id: &ImageId, json: Bytes) -> Result<()> {
        self.http.put_image_json(id, json).await
    }

    async fn put_layer(&self, id: &ImageId, body: LayerBody) -> Result<()> {
        RegistryBackend::put_layer(&self.http, id, body).await
    }

    async fn put_checksum(&self, id: &ImageId, payload: &str) -> Result<()> {
        self.http.put_checksum(id, payload).await
    }
}
