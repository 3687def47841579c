//! [`BlobStore`] over the `object_store` crate: the local-directory, memory and S3 backends are
//! the same code over a different `ObjectStore`.
//!
//! Local reads bypass `object_store`'s 8 KiB read loop: the crate hands back the open file, and
//! [`super::local_read`] streams it in large chunks, mostly without leaving the runtime.

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, WriteMultipart,
};

use super::{BlobStore, DirListing, Download, Key, ObjectInfo, StorageError, Upload};

/// A [`BlobStore`] backed by any `object_store` implementation.
#[derive(Debug, Clone)]
pub struct ObjectBackend {
    inner: Arc<dyn ObjectStore>,
    /// Size of each part of a streamed upload.
    part_size: usize,
    /// Parts of one upload in flight at once; with `part_size` this bounds an upload's memory.
    part_concurrency: usize,
    /// Whether empty "directories" can exist (a local filesystem) and must be hidden.
    prune_empty_dirs: bool,
    /// The directory of a local store: listings read it directly, which is several times
    /// cheaper per call than the generic walk (tags are listed on every tags GET).
    local_root: Option<std::path::PathBuf>,
    /// Listings of local directories that have not changed since they were taken.
    listings: Arc<super::local_listing::ListingCache>,
    /// Aborts of uploads dropped unfinished, still running in the background.
    aborts: Arc<BackgroundAborts>,
    /// Signs direct-download URLs: only an S3 store has one.
    signer: Option<UrlSigner>,
}

/// The S3 client under a [`PrefixStore`](object_store::prefix::PrefixStore), kept beside it
/// because presigning needs the bucket-relative path, prefix included.
#[derive(Debug, Clone)]
struct UrlSigner {
    s3: Arc<AmazonS3>,
    prefix: Path,
}

impl ObjectBackend {
    /// A local directory, created if missing. Writes are fsynced (file and directory) before
    /// they are acknowledged, so a 2xx survives a crash.
    pub fn local(dir: &FsPath) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)?;
        let removed = remove_staged_uploads(dir);
        if removed > 0 {
            tracing::info!(removed, "removed unfinished uploads left by an earlier run");
        }
        let fs = LocalFileSystem::new_with_prefix(dir)?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        let mut backend = Self::new(Arc::new(fs), 4 * 1024 * 1024, 2);
        backend.prune_empty_dirs = true;
        backend.local_root = Some(std::fs::canonicalize(dir)?);
        Ok(backend)
    }

    /// An S3-compatible bucket, path-style (what self-hosted stores expect), with retries and
    /// back-off on transient errors from `object_store`.
    pub fn s3(config: &super::S3Config) -> Result<Self, StorageError> {
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_virtual_hosted_style_request(false);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        let s3 = Arc::new(builder.build()?);
        let prefix = Path::from(config.prefix.as_str());
        let store: Arc<dyn ObjectStore> = if config.prefix.is_empty() {
            s3.clone()
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(
                s3.clone(),
                prefix.clone(),
            ))
        };
        let mut backend = Self::new(store, config.part_size, config.part_concurrency);
        backend.signer = Some(UrlSigner { s3, prefix });
        Ok(backend)
    }

    /// Process memory.
    pub fn memory() -> Self {
        Self::new(Arc::new(InMemory::new()), 4 * 1024 * 1024, 2)
    }

    /// Wraps an `ObjectStore` with the given upload part size and part concurrency.
    pub fn new(inner: Arc<dyn ObjectStore>, part_size: usize, part_concurrency: usize) -> Self {
        ObjectBackend {
            inner,
            part_size,
            part_concurrency: part_concurrency.max(1),
            prune_empty_dirs: false,
            local_root: None,
            listings: Default::default(),
            aborts: Default::default(),
            signer: None,
        }
    }

    /// Whether `prefix` holds an object at any depth, found one level at a time: a recursive
    /// listing walks, and stats, a whole subtree (every tag of a repository) before it yields
    /// the first object. A level that cannot be listed counts as holding one, so nothing is
    /// hidden by a passing error.
    async fn holds_object(&self, prefix: &Path) -> bool {
        let mut pending = vec![prefix.clone()];
        while let Some(dir) = pending.pop() {
            match self.inner.list_with_delimiter(Some(&dir)).await {
                Ok(level) if !level.objects.is_empty() => return true,
                Ok(level) => pending.extend(level.common_prefixes),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(_) => return true,
            }
        }
        false
    }

    fn path(key: &Key) -> Path {
        Path::from(key.as_str())
    }
}

/// Finds out whether a store honours conditional puts (create-only). Nothing relies on them;
/// the answer is logged so operators know what their store does (Garage ignores them).
pub async fn probe_conditional_puts(store: &dyn BlobStore) -> Result<bool, StorageError> {
    let key = Key::from_listing(format!("_probe/{}", uuid::Uuid::new_v4()));
    let first = store.put_if_absent(&key, Bytes::from_static(b"1")).await;
    let second = store.put_if_absent(&key, Bytes::from_static(b"2")).await;
    store.delete(&key).await?;
    first?;
    Ok(second.is_err())
}

/// Deletes the staging files of uploads a crash or kill left behind (`<key>#<n>`, never
/// listed or served, but taking space). Runs once, before the store is used.
fn remove_staged_uploads(root: &FsPath) -> usize {
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(path);
            } else if is_staged_upload(&entry.file_name().to_string_lossy())
                && std::fs::remove_file(&path).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

/// Every object under `prefix` in a local store, with versions, skipping staged uploads.
fn list_local(root: &FsPath, prefix: &Key) -> Result<Vec<(Key, ObjectInfo)>, StorageError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut dirs = vec![(root.join(prefix.as_str()), prefix.as_str().to_string())];
    while let Some((dir, key)) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let child = format!("{key}/{name}");
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Deleted since the directory was read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            if meta.is_dir() {
                dirs.push((entry.path(), child));
            } else if !is_staged_upload(name) {
                let mtime_ns = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
                out.push((
                    Key::from_listing(child),
                    ObjectInfo {
                        size: meta.len(),
                        last_modified: meta.modified()?,
                        e_tag: Some(format!("{:x}-{mtime_ns:x}-{:x}", meta.ino(), meta.len())),
                    },
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `name#<digits>`: how the local backend names an upload before publishing it.
fn is_staged_upload(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(base, n)| {
        !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

fn info(meta: &object_store::ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        size: meta.size,
        last_modified: meta.last_modified.into(),
        e_tag: meta.e_tag.clone(),
    }
}

#[async_trait]
impl BlobStore for ObjectBackend {
    async fn settled(&self) {
        self.aborts.settled().await;
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<Download, StorageError> {
        let opts = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..Default::default()
        };
        let result = match self.inner.get_opts(&Self::path(key), opts).await {
            Err(object_store::Error::NotModified { .. }) => return Err(StorageError::NotFound),
            Err(e @ object_store::Error::Generic { .. }) if range.is_some() => {
                // Backends report a range past the end as a generic error; tell that apart
                // from a real failure by looking at the object.
                let size = self.head(key).await?.size;
                match &range {
                    Some(r) if r.start >= size || r.is_empty() => {
                        tracing::debug!(error = %e, "range read refused");
                        return Err(StorageError::InvalidRange { size });
                    }
                    _ => return Err(e.into()),
                }
            }
            other => other?,
        };
        let info = info(&result.meta);
        let range = result.range.clone();
        let stream = match result.payload {
            GetResultPayload::File(file, _) => super::local_read::stream(file, range.clone()),
            GetResultPayload::Stream(s) => s.map_err(StorageError::from).boxed(),
        };
        Ok(Download {
            info,
            range,
            stream,
        })
    }

    async fn open_file(&self, key: &Key) -> Result<Option<(std::fs::File, u64)>, StorageError> {
        if self.local_root.is_none() {
            return Ok(None);
        }
        // The local store opens the file off the runtime and reads nothing of it.
        match self
            .inner
            .get_opts(&Self::path(key), GetOptions::default())
            .await
        {
            Ok(result) => match result.payload {
                GetResultPayload::File(file, _) => Ok(Some((file, result.meta.size))),
                GetResultPayload::Stream(_) => Ok(None),
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_bytes(&self, key: &Key, limit: u64) -> Result<Bytes, StorageError> {
        let result = self.inner.get(&Self::path(key)).await?;
        if result.meta.size > limit {
            return Err(StorageError::TooLarge { limit });
        }
        Ok(result.bytes().await?)
    }

    async fn head(&self, key: &Key) -> Result<ObjectInfo, StorageError> {
        Ok(info(&self.inner.head(&Self::path(key)).await?))
    }

    async fn put(&self, key: &Key, data: Bytes) -> Result<(), StorageError> {
        self.inner.put(&Self::path(key), data.into()).await?;
        Ok(())
    }

    async fn put_if_absent(&self, key: &Key, data: Bytes) -> Result<(), StorageError> {
        let opts = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        self.inner
            .put_opts(&Self::path(key), data.into(), opts)
            .await?;
        Ok(())
    }

    async fn upload(&self, key: &Key) -> Result<Box<dyn Upload>, StorageError> {
        let upload = self.inner.put_multipart(&Self::path(key)).await?;
        Ok(Box::new(ObjectUpload {
            writer: Some(WriteMultipart::new_with_chunk_size(upload, self.part_size)),
            concurrency: self.part_concurrency,
            written: 0,
            store: self.inner.clone(),
            path: Self::path(key),
            aborts: self.aborts.clone(),
        }))
    }

    async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        match self.inner.delete(&Self::path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            // A key that is only a prefix of other objects (a directory on the local backend)
            // is not an object: nothing to delete.
            Err(e) => match self.head(key).await {
                Err(StorageError::NotFound) => Ok(()),
                _ => Err(e.into()),
            },
        }
    }

    async fn presigned_get(
        &self,
        key: &Key,
        expires_in: Duration,
    ) -> Result<Option<String>, StorageError> {
        use object_store::signer::{Method, Signer};
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let path: Path = signer
            .prefix
            .parts()
            .chain(Self::path(key).parts())
            .collect();
        let url = signer.s3.signed_url(Method::GET, &path, expires_in).await?;
        Ok(Some(url.into()))
    }

    async fn list_with_info(&self, prefix: &Key) -> Result<Vec<(Key, ObjectInfo)>, StorageError> {
        if let Some(root) = &self.local_root {
            // The stamp is read before the listing, so a change made while listing shows as a
            // new stamp next time.
            let stamp = super::local_listing::stamp(&root.join(prefix.as_str()));
            if let Some(hit) = stamp.and_then(|s| self.listings.get(prefix, s)) {
                return Ok(hit.as_ref().clone());
            }
            let (root, key) = (root.clone(), prefix.clone());
            let listing = tokio::task::spawn_blocking(move || list_local(&root, &key))
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
            if let Some(s) = stamp {
                let listing = Arc::new(listing);
                self.listings.put(prefix, s, &listing);
                return Ok(Arc::unwrap_or_clone(listing));
            }
            return Ok(listing);
        }
        let metas: Vec<_> = self
            .inner
            .list(Some(&Self::path(prefix)))
            .try_collect()
            .await?;
        Ok(metas
            .iter()
            .map(|m| (Key::from_listing(m.location.to_string()), info(m)))
            .collect())
    }

    async fn list_dir(&self, prefix: &Key) -> Result<DirListing, StorageError> {
        let result = self
            .inner
            .list_with_delimiter(Some(&Self::path(prefix)))
            .await?;
        let last = |p: &Path| p.filename().map(str::to_string);
        let mut dirs = Vec::with_capacity(result.common_prefixes.len());
        for prefix in &result.common_prefixes {
            // A directory left behind by an unfinished upload holds no object: not a prefix.
            if self.prune_empty_dirs && !self.holds_object(prefix).await {
                continue;
            }
            if let Some(name) = last(prefix) {
                dirs.push(name);
            }
        }
        Ok(DirListing {
            dirs,
            objects: result
                .objects
                .iter()
                .filter_map(|m| last(&m.location))
                .collect(),
        })
    }
}

/// A multipart upload; aborted in the background when dropped unfinished.
struct ObjectUpload {
    writer: Option<WriteMultipart>,
    concurrency: usize,
    written: u64,
    /// Where an empty upload is written as a plain put instead.
    store: Arc<dyn ObjectStore>,
    path: Path,
    aborts: Arc<BackgroundAborts>,
}

/// A count of background aborts, and a wake-up for whoever waits for them to end.
#[derive(Debug, Default)]
struct BackgroundAborts {
    running: std::sync::atomic::AtomicUsize,
    ended: tokio::sync::Notify,
}

impl BackgroundAborts {
    async fn settled(&self) {
        use std::sync::atomic::Ordering;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the check, so an abort ending in between still wakes us.
            ended.as_mut().enable();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            ended.await;
        }
    }
}

#[async_trait]
impl Upload for ObjectUpload {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        let writer = self.writer.as_mut().ok_or_else(finished)?;
        writer.wait_for_capacity(self.concurrency).await?;
        self.written += data.len() as u64;
        writer.put(data);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        let writer = self.writer.take().ok_or_else(finished)?;
        if self.written == 0 {
            // A multipart upload of nothing sends one empty part, which Garage refuses
            // ("Empty body"): publish the empty object with a plain put.
            writer.abort().await?;
            self.store.put(&self.path, Bytes::new().into()).await?;
            return Ok(0);
        }
        writer.finish().await?;
        Ok(self.written)
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        if let Some(writer) = self.writer.take() {
            writer.abort().await?;
        }
        Ok(())
    }
}

fn finished() -> StorageError {
    StorageError::Io(std::io::Error::other("upload already finished"))
}

impl Drop for ObjectUpload {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            // Dropped mid-way (client went away): release the parts so nothing is published.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                use std::sync::atomic::Ordering;
                let aborts = self.aborts.clone();
                aborts.running.fetch_add(1, Ordering::SeqCst);
                handle.spawn(async move {
                    if let Err(e) = writer.abort().await {
                        tracing::warn!(error = %e, "could not abort an unfinished upload");
                    }
                    aborts.running.fetch_sub(1, Ordering::SeqCst);
                    aborts.ended.notify_waiters();
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_that_cannot_sign_urls_say_so() {
        let key = Key::from_listing("images/abc/layer".to_string());
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        for store in [
            ObjectBackend::memory(),
            ObjectBackend::local(dir.path()).unwrap(),
        ] {
            assert_eq!(store.presigned_get(&key, ttl).await.unwrap(), None);
        }
    }

    #[test]
    fn staged_uploads_are_recognised_and_removed_at_open() {
        assert!(is_staged_upload("layer#1"));
        assert!(is_staged_upload("layer#12345"));
        for name in ["layer", "#1", "layer#", "layer#x1", "json"] {
            assert!(!is_staged_upload(name), "{name}");
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("images/abc");
        std::fs::create_dir_all(&image).unwrap();
        std::fs::write(image.join("layer#7"), b"half").unwrap();
        std::fs::write(image.join("json"), b"{}").unwrap();
        ObjectBackend::local(dir.path()).unwrap();
        assert!(!image.join("layer#7").exists());
        assert!(image.join("json").exists());
    }
}
