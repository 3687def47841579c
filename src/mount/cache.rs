//! The mount's caches, all inside one memory budget.
//!
//! - [`TtlMap`]: small mutable facts (listings, tags, search results), re-validated after the
//!   TTL (`--ttl`, default 1 s), by a [`Clock`] that tests move on by hand.
//! - [`BlockCache`]: layer bytes in fixed blocks, LRU within the budget. Layers never change,
//!   so a block is valid forever. Fetches are single-flight (readers of the same block share one
//!   ranged GET) and bounded in number, and prefetched blocks count against the same budget.
//!   A fetch receives into the buffer of a block read past or evicted, so a long read does not
//!   fault in fresh memory for every block.
//!   With a disk cache, a block missing from memory is looked for there before any request,
//!   and every block fetched is also handed to it.

use crate::mount::lock;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use lru::LruCache;
use tokio::sync::Semaphore;

use super::backend::{BackendError, RegistryBackend};
use super::disk_cache::DiskCache;
use crate::names::ImageId;

/// Where the mount's expiries read the time: the system's monotonic clock, or one that only
/// moves when told ([`Clock::manual`]), so a test of an expiry advances time instead of
/// sleeping through it. Cheap to clone; the system clock costs one branch over
/// [`Instant::now`].
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Nanoseconds a manual clock has been moved on; `None` for the system clock.
    manual: Option<Arc<ManualTime>>,
}

#[derive(Debug)]
struct ManualTime {
    start: Instant,
    offset_nanos: AtomicU64,
}

impl Clock {
    /// The system's monotonic clock.
    pub fn system() -> Self {
        Clock::default()
    }

    /// A clock standing still at the present until [`Clock::advance`] moves it; clones share
    /// its time.
    pub fn manual() -> Self {
        Clock {
            manual: Some(Arc::new(ManualTime {
                start: Instant::now(),
                offset_nanos: AtomicU64::new(0),
            })),
        }
    }

    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(m) => m.start + Duration::from_nanos(m.offset_nanos.load(Ordering::SeqCst)),
        }
    }

    /// Moves a manual clock on by `by`; the system clock cannot be moved, so it is left alone.
    pub fn advance(&self, by: Duration) {
        if let Some(m) = &self.manual {
            let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            m.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
        }
    }
}

/// A map whose entries expire after a fixed time; bounded in entries.
#[derive(Debug)]
pub struct TtlMap<K: Hash + Eq, V> {
    ttl: Duration,
    clock: Clock,
    entries: Mutex<LruCache<K, (Instant, V)>>,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlMap<K, V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self::with_clock(ttl, capacity, Clock::system())
    }

    /// A map whose entries age by `clock`.
    pub fn with_clock(ttl: Duration, capacity: usize, clock: Clock) -> Self {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        TtlMap {
            ttl,
            clock,
            entries: Mutex::new(LruCache::new(cap)),
        }
    }

    /// A fresh entry, if any.
    pub fn get(&self, key: &K) -> Option<V> {
        let now = self.clock.now();
        let mut entries = lock(&self.entries);
        match entries.get(key) {
            Some((at, v)) if now.saturating_duration_since(*at) < self.ttl => Some(v.clone()),
            Some(_) => {
                entries.pop(key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, key: K, value: V) {
        let now = self.clock.now();
        lock(&self.entries).put(key, (now, value));
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
type BlockFuture = Shared<BoxFuture<'static, Result<Bytes, BackendError>>>;

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
    /// Blocks a sequential reader has read past, oldest first: their buffers are the first
    /// to be reused.
    consumed: VecDeque<BlockKey>,
}

/// How many consumed blocks are remembered for reuse; older ones are left to the LRU.
const CONSUMED_KEPT: usize = 64;

impl Blocks {
    /// The buffer of the oldest consumed block, if nobody holds it any more and it has room
    /// for `want` bytes. A sequential reader never comes back to a block it has read past, and
    /// the kernel's page cache answers other readers of those bytes, so reusing its memory
    /// for the next fetch costs little and spares a fresh buffer's page faults.
    fn take_consumed(&mut self, want: usize) -> Option<BytesMut> {
        let lru = &self.lru;
        self.consumed.retain(|key| lru.contains(key));
        // One still held (being answered from, or written to disk) stays for a later fetch.
        let at = self
            .consumed
            .iter()
            .position(|key| self.lru.peek(key).is_some_and(Bytes::is_unique))?;
        let key = self.consumed.remove(at)?;
        let block = self.lru.pop(&key)?;
        self.bytes -= block.len() as u64;
        block.try_into_mut().ok().filter(|b| b.capacity() >= want)
    }

    /// Drops least recently used blocks until cached and promised bytes fit the budget.
    /// Returns the buffer of one dropped block that nobody else holds and that has room for
    /// `want` bytes, for the fetch that made the room: its pages are mapped already.
    fn evict_to(&mut self, budget: u64, want: usize) -> Option<BytesMut> {
        let mut spare = None;
        while self.bytes + self.reserved > budget {
            let Some((_, old)) = self.lru.pop_lru() else {
                break;
            };
            self.bytes -= old.len() as u64;
            if spare.is_none() && want > 0 {
                spare = old.try_into_mut().ok().filter(|b| b.capacity() >= want);
            }
        }
        spare
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
                consumed: VecDeque::new(),
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
        let mut inner = lock(&self.inner);
        let key = (id.clone(), index);
        if inner.lru.demote(&key) {
            if inner.consumed.len() >= CONSUMED_KEPT {
                inner.consumed.pop_front();
            }
            inner.consumed.push_back(key);
        }
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
        backend: &Arc<dyn RegistryBackend>,
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
        let spare = match inner.take_consumed(promised as usize) {
            Some(buf) => {
                inner.evict_to(self.budget, 0);
                Some(buf)
            }
            None => inner.evict_to(self.budget, promised as usize),
        };
        let this = self.clone();
        let backend = backend.clone();
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
                    let result = backend
                        .layer_range_into(&fetch_key.0, start..end, spare)
                        .await;
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
                inner.evict_to(this.budget, 0);
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

    /// Block fetches under way, prefetches included (for tests and metrics).
    pub fn fetches_in_flight(&self) -> usize {
        lock(&self.inner).inflight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_entries_expire() {
        let clock = Clock::manual();
        let m: TtlMap<u32, u32> = TtlMap::with_clock(Duration::from_secs(1), 10, clock.clone());
        m.put(1, 10);
        clock.advance(Duration::from_millis(999));
        assert_eq!(m.get(&1), Some(10), "fresh within the TTL");
        clock.advance(Duration::from_millis(1));
        assert_eq!(m.get(&1), None, "expired at the TTL");
        m.put(1, 11);
        assert_eq!(m.get(&1), Some(11), "a new entry counts from its own put");
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = Clock::manual();
        let other = clock.clone();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        other.advance(Duration::from_secs(5));
        assert_eq!(clock.now() - t0, Duration::from_secs(5));
        let system = Clock::system();
        let before = Instant::now();
        system.advance(Duration::from_secs(3600));
        assert!(system.now() < before + Duration::from_secs(3600));
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

    fn blocks_holding(block: Bytes) -> Blocks {
        let mut blocks = Blocks {
            lru: LruCache::unbounded(),
            bytes: block.len() as u64,
            reserved: 0,
            inflight: HashMap::new(),
            consumed: VecDeque::new(),
        };
        let id: ImageId = "a".repeat(64).parse().expect("valid id");
        blocks.lru.put((id, 0), block);
        blocks
    }

    #[test]
    fn an_evicted_block_nobody_holds_is_reused() {
        let mut buf = BytesMut::with_capacity(1024);
        buf.extend_from_slice(&[7; 1024]);
        let block = buf.freeze();
        let ptr = block.as_ptr();
        let mut blocks = blocks_holding(block);
        blocks.reserved = 1024;
        let spare = blocks.evict_to(1024, 1024).expect("a spare buffer");
        assert_eq!(spare.as_ptr(), ptr, "the same memory, not a copy");
        assert_eq!(
            &spare[..],
            &[7; 1024][..],
            "handed over whole; the fetch clears it"
        );
        assert!(spare.capacity() >= 1024);
        assert_eq!(blocks.bytes, 0);
    }

    #[test]
    fn an_evicted_block_still_read_is_not_reused() {
        let block = Bytes::from(vec![7u8; 1024]);
        let reader = block.slice(10..20);
        let mut blocks = blocks_holding(block);
        blocks.reserved = 1024;
        assert!(blocks.evict_to(1024, 1024).is_none());
        assert_eq!(&reader[..], &[7; 10]);
        assert_eq!(blocks.bytes, 0);
    }

    #[test]
    fn a_consumed_block_is_reused_once_nobody_holds_it() {
        let block = Bytes::from(vec![7u8; 1024]);
        let ptr = block.as_ptr();
        let reader = block.clone();
        let mut blocks = blocks_holding(block);
        let id: ImageId = "a".repeat(64).parse().expect("valid id");
        blocks.consumed.push_back((id.clone(), 0));
        assert!(
            blocks.take_consumed(1024).is_none(),
            "still held by a reader"
        );
        assert_eq!(blocks.consumed.len(), 1, "kept for a later fetch");
        drop(reader);
        let spare = blocks.take_consumed(1024).expect("free now");
        assert_eq!(spare.as_ptr(), ptr);
        assert_eq!(blocks.bytes, 0);
        assert!(!blocks.lru.contains(&(id, 0)));
        assert!(blocks.consumed.is_empty());
    }
}
