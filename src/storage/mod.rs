//! Storage: one narrow, streaming trait over which the registry keeps everything it stores.
//!
//! The registry needs little from a store: put a small object atomically, stream a large one in
//! and publish it only when complete, read a whole object or a byte range as a stream, stat,
//! delete, and list by prefix. [`BlobStore`] is exactly that. The backends are built on the
//! `object_store` crate ([`object::ObjectBackend`]): a local directory (the default), memory
//! (tests, CI, `--memory`), and S3-compatible stores, so their atomicity guarantees are the
//! crate's: a put is all or nothing, a multipart upload becomes visible only when finished, and
//! an unfinished one leaves nothing under its key. Nothing here relies on conditional writes,
//! which some S3-compatible stores silently ignore.
//!
//! Keys are built in one place only, [`keys`], from already validated names.

/// Test code: built only with the `fault-injection` feature, which the tests turn on.
#[cfg(feature = "fault-injection")]
pub mod faulty;
pub mod keys;
mod local_listing;
pub mod local_read;
pub mod object;

use std::fmt;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use keys::Key;
pub use object::ObjectBackend;
pub use object::probe_conditional_puts;

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StorageError>>;

/// What went wrong in the store. Callers only ever branch on [`StorageError::NotFound`]; the
/// rest are failures of the store itself, which the server reports as 503.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found")]
    NotFound,
    #[error("requested range is not satisfiable for an object of {size} bytes")]
    InvalidRange { size: u64 },
    #[error("object is larger than the {limit}-byte limit for this read")]
    TooLarge { limit: u64 },
    #[error("storage backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound,
            other => StorageError::Backend(Box::new(other)),
        }
    }
}

/// Size, age and version of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub last_modified: SystemTime,
    /// An opaque version tag that changes whenever the content does, where the store has one.
    pub e_tag: Option<String>,
}

/// An object being read: its total size, the byte range the stream covers, and the bytes.
pub struct Download {
    pub info: ObjectInfo,
    pub range: Range<u64>,
    pub stream: ByteStream,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("info", &self.info)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// An upload in progress. Nothing is visible under its key until [`Upload::finish`] returns;
/// dropping it unfinished (a killed client, a failed checksum) aborts it.
#[async_trait]
pub trait Upload: Send {
    /// Appends bytes. May wait for earlier parts to drain, which bounds the memory one upload
    /// holds.
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError>;
    /// Publishes the object atomically; returns its size.
    async fn finish(self: Box<Self>) -> Result<u64, StorageError>;
    /// Discards everything written so far.
    async fn abort(self: Box<Self>) -> Result<(), StorageError>;
}

/// The store the registry keeps its objects in.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug + 'static {
    /// Streams an object, or the byte `range` of it. A range reaching past the end is cut at
    /// the end (`Download::range` says what is streamed); one starting at or past the end, or
    /// empty, is [`StorageError::InvalidRange`].
    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<Download, StorageError>;

    /// Reads a small object whole; refuses objects over `limit` bytes.
    async fn get_bytes(&self, key: &Key, limit: u64) -> Result<Bytes, StorageError>;

    /// Size and modification time of an object.
    async fn head(&self, key: &Key) -> Result<ObjectInfo, StorageError>;

    /// Writes a small object atomically, replacing any previous one (last writer wins).
    async fn put(&self, key: &Key, data: Bytes) -> Result<(), StorageError>;

    /// Writes a small object only if none exists. Stores without conditional writes may
    /// overwrite anyway: callers must never depend on this for correctness (it backs the
    /// start-up probe only).
    async fn put_if_absent(&self, key: &Key, data: Bytes) -> Result<(), StorageError>;

    /// Starts a streamed upload that becomes visible under `key` only when finished.
    async fn upload(&self, key: &Key) -> Result<Box<dyn Upload>, StorageError>;

    /// Waits until the background work of uploads dropped unfinished (their aborts) has
    /// ended, so a test can look at the store after it instead of sleeping through it.
    async fn settled(&self) {}

    /// A URL that lets whoever holds it GET the object straight from the store for
    /// `expires_in`, where the store can sign one (S3). `None` where it cannot (memory, local
    /// directory): callers then stream the object themselves. The object need not exist.
    async fn presigned_get(
        &self,
        key: &Key,
        expires_in: Duration,
    ) -> Result<Option<String>, StorageError> {
        let _ = (key, expires_in);
        Ok(None)
    }

    /// The open file that holds an object, with its size, where the store is a local
    /// directory; `None` elsewhere, and for a missing object. Objects are written to a
    /// temporary file and renamed into place, so the file never changes while it is open: a
    /// reader in this process (the embedded registry's mount) can hand it to the kernel.
    async fn open_file(&self, key: &Key) -> Result<Option<(std::fs::File, u64)>, StorageError> {
        let _ = key;
        Ok(None)
    }

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &Key) -> Result<(), StorageError>;

    /// Every key under `prefix` (recursively), relative to the store root.
    async fn list(&self, prefix: &Key) -> Result<Vec<Key>, StorageError> {
        Ok(self
            .list_with_info(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Every key under `prefix` (recursively) with its size, age and version.
    async fn list_with_info(&self, prefix: &Key) -> Result<Vec<(Key, ObjectInfo)>, StorageError>;

    /// The immediate children of `prefix`: sub-"directories" and objects, as last path segments.
    async fn list_dir(&self, prefix: &Key) -> Result<DirListing, StorageError>;
}

/// One level of a listing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DirListing {
    pub dirs: Vec<String>,
    pub objects: Vec<String>,
}

/// Where the server keeps its data, chosen at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// A local directory, created if missing.
    Local(std::path::PathBuf),
    /// Process memory: gone when the process ends.
    Memory,
    /// An S3-compatible bucket (`s3://bucket/prefix`).
    S3(S3Config),
}

/// An S3-compatible store. Credentials and anything not given here come from the usual
/// `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ALLOW_HTTP`).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Size of each part of a multipart upload.
    pub part_size: usize,
    /// Parts of one upload in flight at once.
    pub part_concurrency: usize,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)?;
        if let Some(e) = &self.endpoint {
            write!(f, " at {e}")?;
        }
        Ok(())
    }
}

impl S3Config {
    /// Parses `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = !bucket.is_empty()
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        valid.then(|| S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            region: None,
            part_size: 8 * 1024 * 1024,
            part_concurrency: 4,
        })
    }
}

/// Builds the store a configuration names.
pub fn open(config: &StorageConfig) -> Result<std::sync::Arc<dyn BlobStore>, StorageError> {
    let backend = match config {
        StorageConfig::Local(dir) => ObjectBackend::local(dir)?,
        StorageConfig::Memory => ObjectBackend::memory(),
        StorageConfig::S3(s3) => ObjectBackend::s3(s3)?,
    };
    Ok(std::sync::Arc::new(backend))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_name_a_bucket_and_an_optional_prefix() {
        let c = S3Config::parse("s3://registry/team/a/").unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("registry", "team/a")
        );
        let c = S3Config::parse("s3://registry").unwrap();
        assert_eq!(c.prefix, "");
        for bad in ["s3://", "s3:///x", "http://x", "s3://Bad_Bucket/x", "/data"] {
            assert!(S3Config::parse(bad).is_none(), "{bad}");
        }
    }
}
