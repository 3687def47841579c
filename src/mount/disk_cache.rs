//! The optional disk cache (`--cache-dir`): layer blocks and image metadata kept on disk, so a
//! re-read after the memory cache let go, and a later mount, need no registry request.
//!
//! Layout, under the cache directory:
//!
//! ```text
//! lock                                  flock'd by the daemon that owns the cache
//! v1/<registry>/<image id>/image        layer size, parent, created, then the json verbatim
//! v1/<registry>/<image id>/ancestry     one id per line
//! v1/<registry>/<image id>/block-<block size>-<index>    the block's bytes, nothing else
//! ```
//!
//! `<registry>` is a hash of the registry URL (of the storage, for the embedded registry): ids
//! are chosen by whoever pushes, so one registry's bytes must never answer for another's. Only complete images reach this cache,
//! and their files never change, so an entry is valid forever; what can go wrong is a file cut
//! short (a crash, a full disk, a hand edit), so every file is written to a temporary name,
//! synced and renamed into place, and a block of the wrong length is deleted and refetched.
//!
//! Writes never hold up a read: they run on the blocking pool, a bounded number at once (see
//! [`DiskCache::open`]), and one that finds no free slot is dropped (the block is fetched again
//! next time). The
//! total size is kept under the limit by evicting least recently used files; the order
//! survives restarts through file modification times, which a hit refreshes.
//!
//! One daemon owns a cache directory at a time (an exclusive `flock` on `lock`); a second one
//! gets [`DiskCacheError::Busy`] and runs without a disk cache.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lru::LruCache;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::client::ImageInfo;
use crate::names::ImageId;

/// Most disk writes under way at once, whatever the block size.
const MAX_WRITES: usize = 64;
/// First line of an `image` file: a format change makes old files unreadable, not misread.
const IMAGE_MAGIC: &str = "regfs-image 1";
/// Name prefix of files being written (tempfile's default).
const TEMP_PREFIX: &str = ".tmp";

/// Why the disk cache could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskCacheError {
    #[error("{0} is in use by another regfs mount")]
    Busy(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DiskCacheError + '_ {
    move |source| DiskCacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the index consistent, so poisoning is harmless.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Layer blocks and image metadata on disk, within a size limit.
#[derive(Debug)]
pub struct DiskCache {
    shared: Arc<Shared>,
    writes: Arc<Semaphore>,
    max_writes: u32,
}

#[derive(Debug)]
struct Shared {
    /// `<dir>/v1`: index keys are relative to it.
    base: PathBuf,
    /// `<registry>`: this mount's part of the cache.
    registry: String,
    block_size: u64,
    limit: u64,
    index: Mutex<Index>,
    /// Held for the cache's lifetime: the flock lasts as long as the file is open.
    _lock: File,
}

/// What is on disk, least recently used first.
struct Index {
    files: LruCache<PathBuf, u64>,
    bytes: u64,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("files", &self.files.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Index {
    fn insert(&mut self, key: PathBuf, len: u64) {
        if let Some(old) = self.files.put(key, len) {
            self.bytes -= old;
        }
        self.bytes += len;
    }

    fn remove(&mut self, key: &Path) {
        if let Some(len) = self.files.pop(key) {
            self.bytes -= len;
        }
    }

    /// Takes least recently used entries out until the rest fits `limit`; the caller deletes
    /// their files.
    fn evict_to(&mut self, limit: u64) -> Vec<PathBuf> {
        let mut out = Vec::new();
        while self.bytes > limit {
            match self.files.pop_lru() {
                Some((key, len)) => {
                    self.bytes -= len;
                    out.push(key);
                }
                None => break,
            }
        }
        out
    }
}

fn dir_builder() -> fs::DirBuilder {
    let mut b = fs::DirBuilder::new();
    b.recursive(true).mode(0o700);
    b
}

impl DiskCache {
    /// Opens (creating it 0700 if missing) the cache in `dir` for the registry `scope` names
    /// (its URL), holding at most `limit` bytes, and takes its lock. Blocks waiting to be
    /// written may hold up to `write_buffer` bytes (at least one block). Lists what is there
    /// already, so this does blocking I/O: call it at start-up, not on a request path.
    pub fn open(
        dir: &Path,
        limit: u64,
        scope: &str,
        block_size: u64,
        write_buffer: u64,
    ) -> Result<Self, DiskCacheError> {
        dir_builder().create(dir).map_err(io_error(dir))?;
        let lock_path = dir.join("lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        match rustix::fs::flock(
            &lock_file,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(DiskCacheError::Busy(dir.into())),
            Err(e) => return Err(io_error(&lock_path)(e.into())),
        }
        let max_writes = (write_buffer / block_size.max(1)).clamp(1, MAX_WRITES as u64) as u32;
        let base = dir.join("v1");
        dir_builder().create(&base).map_err(io_error(&base))?;
        // The directory may have existed with looser permissions; what we keep stays ours.
        fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io_error(&base))?;
        let mut index = Index {
            files: LruCache::unbounded(),
            bytes: 0,
        };
        for (key, len) in scan(&base) {
            index.insert(key, len);
        }
        for key in index.evict_to(limit) {
            remove_file(&base, &key);
        }
        tracing::info!(
            dir = %dir.display(),
            files = index.files.len(),
            bytes = index.bytes,
            limit,
            "disk cache opened"
        );
        Ok(DiskCache {
            shared: Arc::new(Shared {
                base,
                registry: registry_key(scope),
                block_size,
                limit,
                index: Mutex::new(index),
                _lock: lock_file,
            }),
            writes: Arc::new(Semaphore::new(max_writes as usize)),
            max_writes,
        })
    }

    /// Bytes on disk, as the index counts them.
    pub fn bytes(&self) -> u64 {
        lock(&self.shared.index).bytes
    }

    /// Whether block `index` of layer `id` is on disk (without reading it).
    pub fn has_block(&self, id: &ImageId, index: u64) -> bool {
        lock(&self.shared.index)
            .files
            .contains(&self.shared.block_key(id, index))
    }

    /// Block `index` of layer `id`, if it is on disk with exactly `len` bytes.
    pub async fn block(&self, id: &ImageId, index: u64, len: u64) -> Option<Bytes> {
        let key = self.shared.block_key(id, index);
        self.read(key, Some(len)).await.map(Bytes::from)
    }

    /// An indexed file's bytes, read on the blocking pool.
    async fn read(&self, key: PathBuf, want: Option<u64>) -> Option<Vec<u8>> {
        if !lock(&self.shared.index).files.contains(&key) {
            return None;
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.read(&key, want))
            .await
            .ok()
            .flatten()
    }

    /// Keeps a block of layer `id` on disk; dropped when the writers are all busy.
    pub fn store_block(&self, id: &ImageId, index: u64, data: Bytes) {
        let key = self.shared.block_key(id, index);
        self.store(key, data);
    }

    /// A complete image's metadata, if on disk.
    pub async fn image(&self, id: &ImageId) -> Option<ImageInfo> {
        let raw = self.read(self.shared.image_key(id, "image"), None).await?;
        let info = parse_image(&raw);
        if info.is_none() {
            self.discard(self.shared.image_key(id, "image")).await;
        }
        info
    }

    /// Keeps a complete image's metadata on disk.
    pub fn store_image(&self, id: &ImageId, info: &ImageInfo) {
        let raw = Bytes::from(format_image(info));
        self.store(self.shared.image_key(id, "image"), raw);
    }

    /// A complete image's ancestry, if on disk.
    pub async fn ancestry(&self, id: &ImageId) -> Option<Vec<ImageId>> {
        let raw = self
            .read(self.shared.image_key(id, "ancestry"), None)
            .await?;
        let ids: Option<Vec<ImageId>> = std::str::from_utf8(&raw)
            .ok()?
            .lines()
            .map(|l| l.parse().ok())
            .collect();
        match ids {
            Some(ids) if ids.first() == Some(id) => Some(ids),
            _ => {
                self.discard(self.shared.image_key(id, "ancestry")).await;
                None
            }
        }
    }

    /// Keeps a complete image's ancestry on disk.
    pub fn store_ancestry(&self, id: &ImageId, ancestry: &[ImageId]) {
        let text: String = ancestry.iter().map(|i| format!("{i}\n")).collect();
        self.store(self.shared.image_key(id, "ancestry"), Bytes::from(text));
    }

    /// Waits for every write under way to land (tests, and an orderly end).
    pub async fn flush(&self) {
        if let Ok(all) = self.writes.acquire_many(self.max_writes).await {
            drop(all);
        }
    }

    /// Deletes a file that turned out unreadable, before the caller fetches and stores it anew.
    async fn discard(&self, key: PathBuf) {
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.discard(&key)).await;
    }

    fn store(&self, key: PathBuf, data: Bytes) {
        if lock(&self.shared.index).files.contains(&key) {
            return;
        }
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            tracing::debug!(file = %key.display(), "disk cache writers busy; not kept");
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.shared.clone();
        drop(rt.spawn_blocking(move || {
            if let Err(e) = shared.write(&key, &data) {
                tracing::warn!(file = %key.display(), error = %e, "disk cache write failed");
            }
            // The cache (and its lock) must be free once `flush` sees every permit back.
            drop(shared);
            drop(permit);
        }));
    }
}

impl Shared {
    fn image_key(&self, id: &ImageId, file: &str) -> PathBuf {
        [self.registry.as_str(), id.as_str(), file].iter().collect()
    }

    fn block_key(&self, id: &ImageId, index: u64) -> PathBuf {
        self.image_key(id, &format!("block-{}-{index}", self.block_size))
    }

    /// The file's bytes; a file that is missing, or not `want` bytes long, is a miss (and an
    /// unreadable one is deleted, so it is fetched again).
    fn read(&self, key: &Path, want: Option<u64>) -> Option<Vec<u8>> {
        let path = self.base.join(key);
        let data = match read_file(&path, want) {
            Ok(Some(data)) => data,
            Ok(None) => {
                tracing::warn!(file = %path.display(), "disk cache file of the wrong length; refetching");
                self.discard(key);
                return None;
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), error = %e, "disk cache read failed");
                }
                lock(&self.index).remove(key);
                return None;
            }
        };
        // Only promotes: the entry may have been evicted meanwhile, and then stays out.
        let _ = lock(&self.index).files.get(key);
        Some(data)
    }

    fn discard(&self, key: &Path) {
        lock(&self.index).remove(key);
        remove_file(&self.base, key);
    }

    fn write(&self, key: &Path, data: &[u8]) -> std::io::Result<()> {
        if data.len() as u64 > self.limit {
            return Ok(());
        }
        let path = self.base.join(key);
        let dir = path.parent().unwrap_or(&self.base);
        let temp = || {
            dir_builder().create(dir)?;
            tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .tempfile_in(dir)
        };
        // An eviction may remove the image's directory between the two steps: once more then.
        // Once the temporary file is in it, the directory stays.
        let mut tmp = match temp() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => temp()?,
            other => other?,
        };
        tmp.as_file_mut().write_all(data)?;
        // Synced before the rename, so a crash leaves no name or the whole file.
        tmp.as_file().sync_data()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        let evicted = {
            let mut index = lock(&self.index);
            index.insert(key.to_path_buf(), data.len() as u64);
            index.evict_to(self.limit)
        };
        for key in evicted {
            remove_file(&self.base, &key);
        }
        Ok(())
    }
}

/// `Ok(None)`: the file is not `want` bytes long.
fn read_file(path: &Path, want: Option<u64>) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if want.is_some_and(|w| w != len) {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(len as usize);
    file.read_to_end(&mut data)?;
    if data.len() as u64 != len {
        return Ok(None);
    }
    // A hit moves the file to the back of the eviction order of the next start too.
    let _ = file.set_modified(SystemTime::now());
    Ok(Some(data))
}

/// Deletes a file and, when it was the last, its image directory.
fn remove_file(base: &Path, key: &Path) {
    let path = base.join(key);
    if let Err(e) = fs::remove_file(&path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), error = %e, "cannot delete from disk cache");
        }
    }
    if let Some(dir) = path.parent() {
        let _ = fs::remove_dir(dir);
    }
}

/// Every cache file under `base`, oldest first; leftovers of interrupted writes are deleted.
fn scan(base: &Path) -> Vec<(PathBuf, u64)> {
    let mut found: Vec<(SystemTime, PathBuf, u64)> = Vec::new();
    for registry in entries(base) {
        for image in entries(&base.join(&registry)) {
            let dir = base.join(&registry).join(&image);
            for file in entries(&dir) {
                let path = dir.join(&file);
                if file.to_string_lossy().starts_with(TEMP_PREFIX) {
                    let _ = fs::remove_file(&path);
                    continue;
                }
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let at = meta.modified().unwrap_or(UNIX_EPOCH);
                found.push((at, [&registry, &image, &file].iter().collect(), meta.len()));
            }
        }
    }
    found.sort();
    found.into_iter().map(|(_, k, len)| (k, len)).collect()
}

fn entries(dir: &Path) -> Vec<std::ffi::OsString> {
    fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// A short, fixed-length directory name for a registry URL.
fn registry_key(url: &str) -> String {
    let digest = Sha256::digest(url.trim_end_matches('/').as_bytes());
    hex::encode(&digest[..16])
}

fn format_image(info: &ImageInfo) -> Vec<u8> {
    let parent = info
        .parent
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let created = info
        .created
        .and_then(|c| c.duration_since(UNIX_EPOCH).ok())
        .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
        .unwrap_or_default();
    let mut out = format!("{IMAGE_MAGIC}\n{}\n{parent}\n{created}\n", info.layer_size).into_bytes();
    out.extend_from_slice(&info.json);
    out
}

fn parse_image(raw: &[u8]) -> Option<ImageInfo> {
    let mut rest = raw;
    let mut line = || -> Option<&str> {
        let end = rest.iter().position(|&b| b == b'\n')?;
        let l = std::str::from_utf8(&rest[..end]).ok()?;
        rest = &rest[end + 1..];
        Some(l)
    };
    if line()? != IMAGE_MAGIC {
        return None;
    }
    let layer_size = line()?.parse().ok()?;
    let parent = match line()? {
        "" => None,
        p => Some(p.parse().ok()?),
    };
    let created = match line()? {
        "" => None,
        c => {
            let (secs, nanos) = c.split_once('.')?;
            Some(UNIX_EPOCH + Duration::new(secs.parse().ok()?, nanos.parse().ok()?))
        }
    };
    let json = Bytes::copy_from_slice(rest);
    // The json is what a writer wrote last: a file cut short shows here.
    serde_json::from_slice::<serde_json::Value>(&json).ok()?;
    Some(ImageInfo {
        json,
        layer_size,
        parent,
        created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_metadata_round_trips_and_a_cut_file_is_rejected() {
        let info = ImageInfo {
            json: Bytes::from_static(br#"{"id":"x","created":"2014-10-01T00:00:00Z"}"#),
            layer_size: 1234,
            parent: Some("a".repeat(64).parse().unwrap()),
            created: Some(UNIX_EPOCH + Duration::new(1_412_121_600, 5)),
        };
        let raw = format_image(&info);
        let back = parse_image(&raw).unwrap();
        assert_eq!(back.json, info.json);
        assert_eq!(back.layer_size, 1234);
        assert_eq!(back.parent, info.parent);
        assert_eq!(back.created, info.created);
        assert!(parse_image(&raw[..raw.len() - 3]).is_none());
        assert!(parse_image(b"something else\n").is_none());
    }

    fn id(c: char) -> ImageId {
        c.to_string().repeat(64).parse().unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_least_recently_used_go_first_also_after_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let open = |blocks: u64| DiskCache::open(tmp.path(), blocks * 100, "http://r", 100, 1000);
        let cache = open(3).unwrap();
        let block = |c: u8| Bytes::from(vec![c; 100]);
        for c in [b'a', b'b', b'c'] {
            cache.store_block(&id(c as char), 0, block(c));
            cache.flush().await;
        }
        // A hit on a: b is now the least recently used.
        assert_eq!(cache.block(&id('a'), 0, 100).await, Some(block(b'a')));
        cache.store_block(&id('d'), 0, block(b'd'));
        cache.flush().await;
        assert!(!cache.has_block(&id('b'), 0));
        for c in ['a', 'c', 'd'] {
            assert!(cache.has_block(&id(c), 0), "{c}");
        }
        assert_eq!(cache.bytes(), 300);
        assert!(
            matches!(open(3), Err(DiskCacheError::Busy(_))),
            "one owner at a time"
        );
        drop(cache);

        // Reopened smaller, what goes is what was used longest ago (c), as file times say.
        let cache = open(2).unwrap();
        assert!(!cache.has_block(&id('c'), 0));
        assert_eq!(cache.block(&id('a'), 0, 100).await, Some(block(b'a')));
        assert_eq!(cache.block(&id('d'), 0, 100).await, Some(block(b'd')));
        // A wrong expected length is a miss, and the file goes.
        assert_eq!(cache.block(&id('d'), 0, 99).await, None);
        assert!(!cache.has_block(&id('d'), 0));
        assert_eq!(cache.bytes(), 100);
    }

    #[test]
    fn registries_get_different_directories() {
        assert_ne!(registry_key("http://a:5000"), registry_key("http://b:5000"));
        assert_eq!(
            registry_key("http://a:5000/"),
            registry_key("http://a:5000")
        );
        assert_eq!(registry_key("http://a:5000").len(), 32);
    }
}
