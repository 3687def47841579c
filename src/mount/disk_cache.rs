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
//! v1/<registry>/<image id>/layer        the whole layer, once every block of it was here
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
//! When the kernel can read files of this cache itself (FUSE passthrough, see
//! `fs/passthrough.rs`), a layer whose blocks are all on disk is folded into one `layer` file,
//! which the kernel then reads at local-file speed. The design is the
//! simplest that keeps one invariant, "a name on disk is complete": the index counts each image's
//! block files, and when the write of a block makes the count reach the layer's number of
//! blocks (or an `open` finds it there), one assembly at a time copies the blocks, in order, into
//! a temporary file on the blocking pool, checks its length, syncs and renames it to `layer`, and
//! only then deletes the blocks, so the layer is stored once. A layer file is one index entry
//! (of the layer's size) in the same LRU as everything else; reads of single blocks are served
//! from it by offset. An assembly that finds a block missing or of the wrong length gives up (the
//! block is fetched again and the next completion retries); a `layer` file whose length is not
//! the layer's size is deleted when opened; block files left next to a `layer` file by a crash
//! between the rename and their deletion are deleted at start-up. While an assembly runs, the
//! disk holds the layer twice (blocks and copy); a layer larger than the limit is never
//! assembled. A layer file evicted while the kernel reads it stays on disk until closed. Since
//! block writes are dropped when the disk falls behind, a fast first read can leave gaps that
//! later reads (from the page cache) never fill: after a whole read, the filesystem writes the
//! missing blocks with [`DiskCache::store_block_waiting`], which waits instead of dropping.
//!
//! One daemon owns a cache directory at a time (an exclusive `flock` on `lock`); a second one
//! gets [`DiskCacheError::Busy`] and runs without a disk cache.

use crate::mount::lock;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lru::LruCache;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::backend::ImageInfo;
use crate::names::ImageId;

/// Most disk writes under way at once, whatever the block size.
const MAX_WRITES: usize = 64;
/// First line of an `image` file: a format change makes old files unreadable, not misread.
const IMAGE_MAGIC: &str = "regfs-image 1";
/// Name prefix of files being written (tempfile's default).
const TEMP_PREFIX: &str = ".tmp";
/// Name of a whole layer's file in its image directory.
const LAYER_FILE: &str = "layer";
/// Name prefix of block files.
const BLOCK_PREFIX: &str = "block-";

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

/// Layer blocks and image metadata on disk, within a size limit.
#[derive(Debug)]
pub struct DiskCache {
    shared: Arc<Shared>,
    writes: Arc<Semaphore>,
    max_writes: u32,
    /// One layer assembly at a time: each reads and writes a whole layer.
    assembly: Arc<Semaphore>,
}

#[derive(Debug)]
struct Shared {
    /// `<dir>/v1`: index keys are relative to it.
    base: PathBuf,
    /// `<registry>`: this mount's part of the cache.
    registry: String,
    block_size: u64,
    limit: u64,
    /// Whether complete layers are assembled: only worth its I/O when the kernel can read the
    /// result itself (passthrough).
    whole_layers: AtomicBool,
    index: Mutex<Index>,
    /// Held for the cache's lifetime: the flock lasts as long as the file is open.
    _lock: File,
}

/// What is on disk, least recently used first.
struct Index {
    files: LruCache<PathBuf, u64>,
    bytes: u64,
    /// Name prefix of this mount's block files (`block-<block size>-`): blocks of another size
    /// are never assembled.
    block_prefix: String,
    /// How many of those each image directory holds: a layer is whole on disk when the count
    /// reaches its number of blocks.
    blocks: HashMap<PathBuf, u64>,
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
    fn new(block_size: u64) -> Self {
        Index {
            files: LruCache::unbounded(),
            bytes: 0,
            block_prefix: format!("{BLOCK_PREFIX}{block_size}-"),
            blocks: HashMap::new(),
        }
    }

    fn insert(&mut self, key: PathBuf, len: u64) {
        match self.files.put(key.clone(), len) {
            Some(old) => self.bytes -= old,
            None => self.count_block(&key, true),
        }
        self.bytes += len;
    }

    fn remove(&mut self, key: &Path) {
        if let Some(len) = self.files.pop(key) {
            self.bytes -= len;
            self.count_block(key, false);
        }
    }

    /// Keeps `blocks` in step with `files` for a key added or removed.
    fn count_block(&mut self, key: &Path, added: bool) {
        let is_block = key
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&self.block_prefix));
        let Some(dir) = key.parent().filter(|_| is_block) else {
            return;
        };
        if added {
            *self.blocks.entry(dir.to_path_buf()).or_insert(0) += 1;
        } else if let Some(n) = self.blocks.get_mut(dir) {
            *n -= 1;
            if *n == 0 {
                self.blocks.remove(dir);
            }
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
                    self.count_block(&key, false);
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
        let mut index = Index::new(block_size);
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
                whole_layers: AtomicBool::new(false),
                index: Mutex::new(index),
                _lock: lock_file,
            }),
            writes: Arc::new(Semaphore::new(max_writes as usize)),
            max_writes,
            assembly: Arc::new(Semaphore::new(1)),
        })
    }

    /// Whether layers whose blocks are all here are assembled into one file (off until the
    /// mount knows the kernel can read such files itself).
    pub fn set_whole_layers(&self, on: bool) {
        self.shared.whole_layers.store(on, Ordering::Relaxed);
    }

    /// Bytes on disk, as the index counts them.
    pub fn bytes(&self) -> u64 {
        lock(&self.shared.index).bytes
    }

    /// Whether block `index` of layer `id` is on disk (without reading it), in its own file or
    /// in the whole layer's.
    pub fn has_block(&self, id: &ImageId, index: u64) -> bool {
        let index_lock = lock(&self.shared.index);
        index_lock.files.contains(&self.shared.block_key(id, index))
            || index_lock.files.contains(&self.shared.layer_key(id))
    }

    /// Block `index` of layer `id` (of `layer_size` bytes), if it is on disk with the right
    /// length.
    pub async fn block(&self, id: &ImageId, layer_size: u64, index: u64) -> Option<Bytes> {
        if !self.has_block(id, index) {
            return None;
        }
        let shared = self.shared.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || shared.block(&id, layer_size, index))
            .await
            .ok()
            .flatten()
            .map(Bytes::from)
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

    /// Keeps block `index` of layer `id` (of `layer_size` bytes) on disk; dropped when the
    /// writers are all busy. The write that completes the layer starts its assembly.
    pub fn store_block(&self, id: &ImageId, layer_size: u64, index: u64, data: Bytes) {
        if lock(&self.shared.index)
            .files
            .contains(&self.shared.layer_key(id))
        {
            return;
        }
        let key = self.shared.block_key(id, index);
        self.store(key, data, Some((id.clone(), layer_size)));
    }

    /// Blocks of layer `id` not on disk (none once it is one file); empty unless whole layers
    /// are being assembled.
    pub fn missing_blocks(&self, id: &ImageId, layer_size: u64) -> Vec<u64> {
        let shared = &self.shared;
        if !shared.whole_layers.load(Ordering::Relaxed) || layer_size > shared.limit {
            return Vec::new();
        }
        let index = lock(&shared.index);
        if index.files.contains(&shared.layer_key(id)) {
            return Vec::new();
        }
        (0..layer_size.div_ceil(shared.block_size))
            .filter(|&i| !index.files.contains(&shared.block_key(id, i)))
            .collect()
    }

    /// Like [`DiskCache::store_block`], but waits for a free writer and for the write, instead
    /// of dropping the block: for background work that completes a layer, never for a read.
    pub async fn store_block_waiting(
        &self,
        id: &ImageId,
        layer_size: u64,
        index: u64,
        data: Bytes,
    ) {
        let Ok(permit) = self.writes.clone().acquire_owned().await else {
            return;
        };
        let shared = self.shared.clone();
        let assembly = self.assembly.clone();
        let key = shared.block_key(id, index);
        let id = id.clone();
        let rt = tokio::runtime::Handle::current();
        let _ = tokio::task::spawn_blocking(move || {
            match shared.write(&key, &data) {
                Err(e) => {
                    tracing::warn!(file = %key.display(), error = %e, "disk cache write failed")
                }
                Ok(()) if shared.is_complete(&id, layer_size) => {
                    start_assembly(&shared, &assembly, &rt, id, layer_size);
                }
                Ok(()) => {}
            }
            // The cache (and its lock) must be free once `flush` sees every permit back.
            drop(shared);
            drop(permit);
        })
        .await;
    }

    /// The whole file of layer `id`, opened read-only, if it is on disk with `layer_size` bytes
    /// (one of another length is deleted). When it is not there but all its blocks are, starts
    /// assembling it, for a later open.
    pub async fn layer_file(&self, id: &ImageId, layer_size: u64) -> Option<File> {
        let key = self.shared.layer_key(id);
        if !lock(&self.shared.index).files.contains(&key) {
            self.assemble_if_complete(id, layer_size);
            return None;
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.open_layer(&key, layer_size))
            .await
            .ok()
            .flatten()
    }

    /// Starts assembling layer `id` into one file if all its blocks are on disk and no other
    /// assembly is under way (the next completion or open tries again). Never waits.
    pub fn assemble_if_complete(&self, id: &ImageId, layer_size: u64) {
        if !self.shared.is_complete(id, layer_size) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        start_assembly(&self.shared, &self.assembly, &rt, id.clone(), layer_size);
    }

    /// Whether layer `id` is on disk as one file.
    pub fn has_layer_file(&self, id: &ImageId) -> bool {
        lock(&self.shared.index)
            .files
            .contains(&self.shared.layer_key(id))
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
        self.store(self.shared.image_key(id, "image"), raw, None);
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
        self.store(
            self.shared.image_key(id, "ancestry"),
            Bytes::from(text),
            None,
        );
    }

    /// Waits for every write under way to land, and then for the layer assembly they started
    /// (tests, and an orderly end).
    pub async fn flush(&self) {
        if let Ok(all) = self.writes.acquire_many(self.max_writes).await {
            drop(all);
        }
        // A write starts its assembly before it gives its permit back, so this sees it.
        if let Ok(p) = self.assembly.acquire().await {
            drop(p);
        }
    }

    /// Deletes a file that turned out unreadable, before the caller fetches and stores it anew.
    async fn discard(&self, key: PathBuf) {
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.discard(&key)).await;
    }

    /// Writes `data` to `key` in the background; `layer` names the layer a block belongs to,
    /// whose assembly the write may complete.
    fn store(&self, key: PathBuf, data: Bytes, layer: Option<(ImageId, u64)>) {
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
        let assembly = self.assembly.clone();
        let handle = rt.clone();
        drop(rt.spawn_blocking(move || {
            match shared.write(&key, &data) {
                Err(e) => {
                    tracing::warn!(file = %key.display(), error = %e, "disk cache write failed")
                }
                Ok(()) => {
                    if let Some((id, size)) = layer {
                        if shared.is_complete(&id, size) {
                            start_assembly(&shared, &assembly, &handle, id, size);
                        }
                    }
                }
            }
            // The cache (and its lock) must be free once `flush` sees every permit back.
            drop(shared);
            drop(permit);
        }));
    }
}

/// Runs one assembly of layer `id` on the blocking pool, unless one is under way already.
fn start_assembly(
    shared: &Arc<Shared>,
    assembly: &Arc<Semaphore>,
    rt: &tokio::runtime::Handle,
    id: ImageId,
    layer_size: u64,
) {
    let Ok(permit) = assembly.clone().try_acquire_owned() else {
        tracing::debug!(%id, "another layer is being assembled; later");
        return;
    };
    let shared = shared.clone();
    drop(rt.spawn_blocking(move || {
        if let Err(e) = shared.assemble(&id, layer_size) {
            tracing::warn!(%id, error = %e, "layer not assembled");
        }
        drop(shared);
        drop(permit);
    }));
}

impl Shared {
    fn image_dir(&self, id: &ImageId) -> PathBuf {
        [self.registry.as_str(), id.as_str()].iter().collect()
    }

    fn image_key(&self, id: &ImageId, file: &str) -> PathBuf {
        self.image_dir(id).join(file)
    }

    fn block_key(&self, id: &ImageId, index: u64) -> PathBuf {
        self.image_key(id, &format!("{BLOCK_PREFIX}{}-{index}", self.block_size))
    }

    fn layer_key(&self, id: &ImageId) -> PathBuf {
        self.image_key(id, LAYER_FILE)
    }

    /// Whether `key` is a block file whose layer is on disk as one file.
    fn is_folded(&self, key: &Path, index: &Index) -> bool {
        let is_block = key
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(BLOCK_PREFIX));
        is_block
            && key
                .parent()
                .is_some_and(|dir| index.files.contains(&dir.join(LAYER_FILE)))
    }

    /// Bytes of block `index` of a layer of `layer_size` bytes.
    fn block_len(&self, layer_size: u64, index: u64) -> u64 {
        let start = index.saturating_mul(self.block_size);
        layer_size.saturating_sub(start).min(self.block_size)
    }

    /// Whether layer `id` is to be assembled: every block of it is on disk, in block files, and
    /// the layer file is not.
    fn is_complete(&self, id: &ImageId, layer_size: u64) -> bool {
        if !self.whole_layers.load(Ordering::Relaxed) || layer_size == 0 || layer_size > self.limit
        {
            return false;
        }
        let blocks = layer_size.div_ceil(self.block_size);
        let index = lock(&self.index);
        !index.files.contains(&self.layer_key(id))
            && index.blocks.get(&self.image_dir(id)).copied() == Some(blocks)
    }

    /// A block's bytes, from the whole layer's file or from its own.
    fn block(&self, id: &ImageId, layer_size: u64, index: u64) -> Option<Vec<u8>> {
        let len = self.block_len(layer_size, index);
        let layer = self.layer_key(id);
        let offset = index.saturating_mul(self.block_size);
        if lock(&self.index).files.contains(&layer) {
            return self.read_range(&layer, layer_size, offset, len);
        }
        let key = self.block_key(id, index);
        if let Some(data) = self.read(&key, Some(len)) {
            return Some(data);
        }
        // The block may have been folded into the layer's file meanwhile.
        if lock(&self.index).files.contains(&layer) {
            return self.read_range(&layer, layer_size, offset, len);
        }
        None
    }

    /// `len` bytes at `offset` of a layer file, which must be `layer_size` bytes long (else it
    /// is deleted).
    fn read_range(&self, key: &Path, layer_size: u64, offset: u64, len: u64) -> Option<Vec<u8>> {
        let file = self.open_layer(key, layer_size)?;
        let mut data = vec![0; len as usize];
        match file.read_exact_at(&mut data, offset) {
            Ok(()) => Some(data),
            Err(e) => {
                tracing::warn!(file = %key.display(), error = %e, "disk cache read failed");
                self.discard(key);
                None
            }
        }
    }

    /// A layer file opened read-only, if it is `layer_size` bytes long; a hit, for eviction.
    fn open_layer(&self, key: &Path, layer_size: u64) -> Option<File> {
        let path = self.base.join(key);
        let opened = File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f)));
        match opened {
            Ok((len, file)) if len == layer_size => {
                let _ = file.set_modified(SystemTime::now());
                let _ = lock(&self.index).files.get(key);
                Some(file)
            }
            Ok((len, _)) => {
                tracing::warn!(file = %path.display(), len, layer_size, "layer file of the wrong length; deleted");
                self.discard(key);
                None
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), error = %e, "disk cache read failed");
                }
                lock(&self.index).remove(key);
                None
            }
        }
    }

    /// Copies the blocks of layer `id`, in order, into its `layer` file, then deletes them.
    fn assemble(&self, id: &ImageId, layer_size: u64) -> std::io::Result<()> {
        if !self.is_complete(id, layer_size) {
            return Ok(());
        }
        let key = self.layer_key(id);
        let path = self.base.join(&key);
        let dir = path.parent().unwrap_or(&self.base);
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)?;
        let blocks = layer_size.div_ceil(self.block_size);
        for index in 0..blocks {
            let want = self.block_len(layer_size, index);
            let block = self.block_key(id, index);
            let mut file = File::open(self.base.join(&block))?;
            if file.metadata()?.len() != want {
                self.discard(&block);
                return Err(std::io::Error::other(format!(
                    "block {index} of the wrong length"
                )));
            }
            // `io::copy` between files lets the kernel copy (copy_file_range).
            let copied = std::io::copy(&mut (&mut file).take(want), tmp.as_file_mut())?;
            if copied != want {
                return Err(std::io::Error::other(format!("block {index} cut short")));
            }
        }
        if tmp.as_file().metadata()?.len() != layer_size {
            return Err(std::io::Error::other("assembled layer of the wrong length"));
        }
        // Synced before the rename, so a crash leaves no name or the whole file.
        tmp.as_file().sync_data()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        let evicted = {
            let mut index = lock(&self.index);
            index.insert(key, layer_size);
            // Deleted under the lock: a write of one of these blocks still under way then
            // either lands before (and is deleted here) or sees the layer file (see `write`).
            for i in 0..blocks {
                let block = self.block_key(id, i);
                if index.files.contains(&block) {
                    index.remove(&block);
                    let _ = fs::remove_file(self.base.join(&block));
                }
            }
            index.evict_to(self.limit)
        };
        for key in &evicted {
            remove_file(&self.base, key);
        }
        tracing::debug!(%id, layer_size, "layer assembled into one file");
        Ok(())
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
            if self.is_folded(key, &index) {
                // Its layer was assembled meanwhile: the block is stored there already.
                let _ = fs::remove_file(&path);
                return Ok(());
            }
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
            let files = entries(&dir);
            // Left by a crash between an assembly's rename and the deletion of its blocks.
            let whole = files.iter().any(|f| f == LAYER_FILE);
            for file in files {
                let path = dir.join(&file);
                let name = file.to_string_lossy();
                if name.starts_with(TEMP_PREFIX) || (whole && name.starts_with(BLOCK_PREFIX)) {
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
            cache.store_block(&id(c as char), 1000, 0, block(c));
            cache.flush().await;
        }
        // A hit on a: b is now the least recently used.
        assert_eq!(cache.block(&id('a'), 1000, 0).await, Some(block(b'a')));
        cache.store_block(&id('d'), 1000, 0, block(b'd'));
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
        assert_eq!(cache.block(&id('a'), 1000, 0).await, Some(block(b'a')));
        assert_eq!(cache.block(&id('d'), 1000, 0).await, Some(block(b'd')));
        // A wrong expected length is a miss, and the file goes.
        assert_eq!(cache.block(&id('d'), 99, 0).await, None);
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
