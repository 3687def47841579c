//! The mount's caches, all inside one memory budget.
//!
//! - [`TtlMap`]: small mutable facts (listings, tags, search results), re-validated after the
//!   TTL (`--ttl`, default 1 s).
//! - [`BlockCache`]: layer bytes in fixed blocks, LRU within the budget. Layers never change,
//!   so a block is valid forever. Fetches are single-flight (readers of the same block share one
//!   ranged GET) and bounded in number, and prefetched blocks count against the same budget.
//!   With a disk cache, a block missing from memory is looked for there before any request,
//!   and every block fetched is also handed to it.

use crate::mount::lock;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use lru::LruCache;
use tokio::sync::Semaphore;

use super::disk_cache::DiskCache;
use crate::client::{ClientError, RegistryClient};
use crate::names::ImageId;

/// A map whose entries expire after a fixed time; bounded in entries.
#[derive(Debug)]
pub struct TtlMap<K: Hash + Eq, V> {
    ttl: Duration,
    entries: Mutex<LruCache<K, (Instant, V)>>,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlMap<K, V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        TtlMap {
            ttl,
            entries: Mutex::new(LruCache::new(cap)),
        }
    }

    /// A fresh entry, if any.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut entries = lock(&self.entries);
        match entries.get(key) {
            Some((at, v)) if at.elapsed() < self.ttl => Some(v.clone()),
            Some(_) => {
                entries.pop(key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, key: K, value: V) {
        lock(&self.entries).put(key, (Instant::now(), value));
    }

    pub fn remove(&self, key: &K) {
        lock(&self.entries).pop(key);
    }

    /// The cached value, or the result of `fetch` (cached when it succeeds).
    pub async fn get_or_fetch<E, F>(&self, key: &K, fetch: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        let v = fetch.await?;
        self.put(key.clone(), v.clone());
        Ok(v)
    }
}

type BlockKey = (ImageId, u64);
type BlockFuture = Shared<BoxFuture<'static, Result<Bytes, ClientError>>>;

/// Layer blocks in memory, within a byte budget.
#[derive(Debug)]
pub struct BlockCache {
    block_size: u64,
    budget: u64,
    inner: Mutex<Blocks>,
    fetches: Arc<Semaphore>,
    disk: Option<Arc<DiskCache>>,
}

struct Blocks {
    lru: LruCache<BlockKey, Bytes>,
    bytes: u64,
    /// Bytes promised to fetches under way: they count against the budget too.
    reserved: u64,
    inflight: HashMap<BlockKey, BlockFuture>,
}

impl Blocks {
    /// Drops least recently used blocks until cached and promised bytes fit the budget.
    fn evict_to(&mut self, budget: u64) {
        while self.bytes + self.reserved > budget {
            match self.lru.pop_lru() {
                Some((_, old)) => self.bytes -= old.len() as u64,
                None => break,
            }
        }
    }
}

impl std::fmt::Debug for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocks")
            .field("cached", &self.lru.len())
            .field("bytes", &self.bytes)
            .field("inflight", &self.inflight.len())
            .finish()
    }
}

impl BlockCache {
    /// `budget` bytes of blocks of `block_size`, with at most `max_fetches` ranged GETs at once,
    /// over `disk` if given.
    pub fn new(
        block_size: u64,
        budget: u64,
        max_fetches: usize,
        disk: Option<Arc<DiskCache>>,
    ) -> Arc<Self> {
        Arc::new(BlockCache {
            block_size,
            budget,
            inner: Mutex::new(Blocks {
                lru: LruCache::unbounded(),
                bytes: 0,
                reserved: 0,
                inflight: HashMap::new(),
            }),
            fetches: Arc::new(Semaphore::new(max_fetches.max(1))),
            disk,
        })
    }

    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Marks a block as the first to go: a sequential reader has read past it, and the
    /// kernel's page cache keeps what it returned, so blocks other readers have yet to read
    /// are worth more.
    pub fn consumed(&self, id: &ImageId, index: u64) {
        lock(&self.inner).lru.demote(&(id.clone(), index));
    }

    /// Whether a block is cached or being fetched.
    pub fn is_present(&self, id: &ImageId, index: u64) -> bool {
        let inner = lock(&self.inner);
        let key = (id.clone(), index);
        inner.lru.contains(&key) || inner.inflight.contains_key(&key)
    }

    /// Whether a block can be had without a new registry request: in memory, on its way, or on
    /// disk.
    pub fn is_local(&self, id: &ImageId, index: u64) -> bool {
        self.is_present(id, index) || self.disk.as_ref().is_some_and(|d| d.has_block(id, index))
    }

    /// Block `index` of a layer of `size` bytes: from the cache, from a fetch already under
    /// way, from the disk cache, or from a new ranged GET.
    pub fn block(
        self: &Arc<Self>,
        client: &RegistryClient,
        id: &ImageId,
        size: u64,
        index: u64,
    ) -> BlockFuture {
        let key = (id.clone(), index);
        let mut inner = lock(&self.inner);
        if let Some(b) = inner.lru.get(&key) {
            let b = b.clone();
            return futures::future::ready(Ok(b)).boxed().shared();
        }
        if let Some(f) = inner.inflight.get(&key) {
            return f.clone();
        }
        let start = index * self.block_size;
        let end = (start + self.block_size).min(size);
        let promised = end.saturating_sub(start);
        inner.reserved += promised;
        inner.evict_to(self.budget);
        let this = self.clone();
        let client = client.clone();
        let fetch_key = key.clone();
        let fut = async move {
            let on_disk = match &this.disk {
                Some(disk) => disk.block(&fetch_key.0, size, index).await,
                None => None,
            };
            let result = match on_disk {
                Some(bytes) => Ok(bytes),
                None => {
                    let permit = this.fetches.clone().acquire_owned().await;
                    let result = client.layer_range(&fetch_key.0, start..end).await;
                    drop(permit);
                    if let (Ok(bytes), Some(disk)) = (&result, &this.disk) {
                        // A short answer is an error later on; it must never be kept.
                        if bytes.len() as u64 == promised {
                            disk.store_block(&fetch_key.0, size, index, bytes.clone());
                        }
                    }
                    result
                }
            };
            let mut inner = lock(&this.inner);
            inner.inflight.remove(&fetch_key);
            inner.reserved -= promised;
            if let Ok(bytes) = &result {
                inner.bytes += bytes.len() as u64;
                inner.lru.put(fetch_key, bytes.clone());
                inner.evict_to(this.budget);
            }
            result
        }
        .boxed()
        .shared();
        inner.inflight.insert(key, fut.clone());
        drop(inner);
        // Drive the fetch even if every reader goes away, so a prefetch completes.
        let driver = fut.clone();
        tokio::spawn(async move {
            let _ = driver.await;
        });
        fut
    }

    /// Bytes held (for tests and metrics).
    pub fn bytes(&self) -> u64 {
        lock(&self.inner).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_entries_expire() {
        let m: TtlMap<u32, u32> = TtlMap::new(Duration::from_millis(20), 10);
        m.put(1, 10);
        assert_eq!(m.get(&1), Some(10));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(m.get(&1), None);
    }

    #[test]
    fn ttl_map_is_bounded() {
        let m: TtlMap<u32, u32> = TtlMap::new(Duration::from_secs(60), 2);
        m.put(1, 1);
        m.put(2, 2);
        m.put(3, 3);
        assert_eq!(m.get(&1), None);
        assert_eq!(m.get(&3), Some(3));
    }
}
