//! The OCI Distribution (v2) side of the registry over a [`BlobStore`], with no HTTP: blob upload
//! sessions, blobs, manifests, tags, the catalog and referrers. The server's v2 handlers call
//! [`V2`] (from [`Registry::v2`]) and map [`V2Error`] through [`V2Error::code`] in one place.
//!
//! Design, on the layout of `storage::keys::v2`:
//! - **State lives only in the store.** An upload session is a `state` object (repository,
//!   start time, bytes received) and one object per chunk, keyed by its offset; any instance
//!   sharing the store continues a session another started. Nothing is cached in memory, so
//!   several servers on one bucket never disagree beyond the store's own consistency.
//! - **Nothing half-visible.** Every large write (a chunk, a blob) goes through the store's
//!   streamed upload, which publishes only on `finish`. A blob is written to its
//!   content-addressed key while it is hashed and finished only when the hash matches the
//!   digest the client named; the repository link is written after it, so a link never names a
//!   missing or wrong blob. A manifest's bytes, its revision link, its referrer entry, the
//!   catalog marker and its tag are written in that order, each an object of its own: a crash
//!   between two leaves only unreachable data, left for `regfs gc` to reclaim.
//! - **Bounded memory.** Blobs and chunks stream through; finishing an upload reads its chunks
//!   one after the other as streams. Only manifests (at most `MAX_MANIFEST_SIZE`) and small
//!   records are read whole.
//! - **Chunk order without compare-and-swap.** The session's offset is checked before a chunk
//!   is stored under its start offset and advanced after; finishing walks the chunks from 0 by
//!   their sizes up to the recorded offset, so a stray chunk (a retried or raced write) past it
//!   is never concatenated.

mod blobs;
mod manifests;
mod uploads;

use crate::oci::{Digest, ErrorCode, ManifestError};
use crate::storage::{BlobStore, Key, StorageError};

pub use manifests::{ListPage, ManifestContent, ManifestInfo, PutManifest, TagPage};
pub use uploads::UploadStatus;

use super::Registry;

/// What can go wrong in a v2 operation; [`V2Error::code`] gives its spec error code.
#[derive(Debug, thiserror::Error)]
pub enum V2Error {
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    #[error("blob upload invalid: {0}")]
    UploadInvalid(String),
    /// A chunk that does not start where the session is (416).
    #[error("chunk starts at {start}, the upload is at {offset}")]
    ChunkOutOfOrder { start: u64, offset: u64 },
    /// A read range past the end of a blob (416).
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("provided digest did not match uploaded content")]
    DigestInvalid,
    #[error("blob is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("upload cut off: {0}")]
    Interrupted(String),
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("manifest references unknown content {0}")]
    ManifestBlobUnknown(Digest),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(#[from] ManifestError),
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("storage failure: {0}")]
    Storage(#[from] StorageError),
}

impl V2Error {
    /// The spec's error code; its status is `code().status()` (`Storage` is 503 `UNAVAILABLE`).
    pub fn code(&self) -> ErrorCode {
        match self {
            V2Error::BlobUnknown => ErrorCode::BlobUnknown,
            V2Error::UploadUnknown => ErrorCode::BlobUploadUnknown,
            V2Error::UploadInvalid(_) | V2Error::Interrupted(_) => ErrorCode::BlobUploadInvalid,
            V2Error::ChunkOutOfOrder { .. } | V2Error::RangeNotSatisfiable { .. } => {
                ErrorCode::RangeInvalid
            }
            V2Error::DigestInvalid => ErrorCode::DigestInvalid,
            V2Error::TooLarge { .. } => ErrorCode::SizeInvalid,
            V2Error::ManifestUnknown => ErrorCode::ManifestUnknown,
            V2Error::ManifestBlobUnknown(_) => ErrorCode::ManifestBlobUnknown,
            V2Error::ManifestInvalid(e) => e.code(),
            V2Error::NameUnknown => ErrorCode::NameUnknown,
            V2Error::Storage(_) => ErrorCode::Unavailable,
        }
    }
}

pub type Result<T, E = V2Error> = std::result::Result<T, E>;

/// The v2 operations of a registry: a cheap handle borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct V2<'a> {
    registry: &'a Registry,
}

impl Registry {
    /// The OCI Distribution side of this registry.
    pub fn v2(&self) -> V2<'_> {
        V2 { registry: self }
    }
}

impl V2<'_> {
    fn store(&self) -> &dyn BlobStore {
        self.registry.store().as_ref()
    }

    /// Largest blob accepted: the v1 layer limit.
    fn max_blob_size(&self) -> u64 {
        self.registry.config().max_layer_size
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        match self.store().head(key).await {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures::stream;

    use crate::registry::{Registry, RegistryConfig};
    use crate::storage::{BlobStore, ObjectBackend};

    pub fn memory_store() -> Arc<dyn BlobStore> {
        Arc::new(ObjectBackend::memory())
    }

    pub fn registry(store: &Arc<dyn BlobStore>) -> Registry {
        Registry::new(store.clone(), RegistryConfig::default())
    }

    /// A body of `chunks`, as a request body would arrive.
    pub fn body(
        chunks: &[&[u8]],
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let v: Vec<Result<Bytes, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        stream::iter(v)
    }

    pub async fn collect(d: crate::storage::Download) -> Vec<u8> {
        use futures::StreamExt;
        let mut out = Vec::new();
        let mut s = d.stream;
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }
}
