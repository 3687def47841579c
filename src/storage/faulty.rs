//! [`FaultyStore`]: a [`BlobStore`] wrapper that makes chosen calls fail, so tests can show what
//! the server and the mount do when the store misbehaves.
//!
//! A test keeps a [`Faults`] handle (cheap to clone, shared with the store) and arms [`Fault`]s
//! on it: an error, a delay, or a GET stream cut short, for one or more kinds of call
//! ([`Op`]), optionally only for keys containing a substring, and either for the next N
//! matching calls, with a probability drawn from a seeded RNG (so a failing run can be
//! replayed), or always. [`Faults::clear`] disarms everything: the store is healthy again at
//! once, which is how tests check recovery. Every fault that fires is counted.
//!
//! Injected errors are [`StorageError::Backend`], the kind a real store's outage produces, so
//! they take the same paths through the registry as a real failure (never `NotFound`, which
//! would be a different claim, nor `InvalidData`, which listings skip as corruption).

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{BlobStore, ByteStream, DirListing, Download, Key, ObjectInfo, StorageError, Upload};

/// A kind of store call a fault can apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`BlobStore::get`], whole or ranged.
    Get,
    /// [`BlobStore::get_bytes`].
    GetBytes,
    /// [`BlobStore::head`].
    Head,
    /// [`BlobStore::put`].
    Put,
    /// [`BlobStore::put_if_absent`].
    PutIfAbsent,
    /// [`BlobStore::upload`]: starting a streamed upload.
    UploadStart,
    /// [`Upload::write`].
    UploadWrite,
    /// [`Upload::finish`].
    UploadFinish,
    /// [`BlobStore::delete`].
    Delete,
    /// [`BlobStore::list`], [`BlobStore::list_with_info`] and [`BlobStore::list_dir`].
    List,
}

impl Op {
    /// Every kind of call.
    pub const ALL: [Op; 10] = [
        Op::Get,
        Op::GetBytes,
        Op::Head,
        Op::Put,
        Op::PutIfAbsent,
        Op::UploadStart,
        Op::UploadWrite,
        Op::UploadFinish,
        Op::Delete,
        Op::List,
    ];
    /// Calls that only read.
    pub const READS: [Op; 4] = [Op::Get, Op::GetBytes, Op::Head, Op::List];
    /// Calls that change the store.
    pub const WRITES: [Op; 6] = [
        Op::Put,
        Op::PutIfAbsent,
        Op::UploadStart,
        Op::UploadWrite,
        Op::UploadFinish,
        Op::Delete,
    ];

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::GetBytes => "get_bytes",
            Op::Head => "head",
            Op::Put => "put",
            Op::PutIfAbsent => "put_if_absent",
            Op::UploadStart => "upload",
            Op::UploadWrite => "upload write",
            Op::UploadFinish => "upload finish",
            Op::Delete => "delete",
            Op::List => "list",
        }
    }
}

/// A set of [`Op`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpSet(u16);

impl OpSet {
    pub fn contains(self, op: Op) -> bool {
        self.0 & op.bit() != 0
    }
}

impl From<Op> for OpSet {
    fn from(op: Op) -> Self {
        OpSet(op.bit())
    }
}

impl From<&[Op]> for OpSet {
    fn from(ops: &[Op]) -> Self {
        OpSet(ops.iter().fold(0, |acc, op| acc | op.bit()))
    }
}

impl<const N: usize> From<[Op; N]> for OpSet {
    fn from(ops: [Op; N]) -> Self {
        OpSet::from(&ops[..])
    }
}

/// What a fault does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The call fails without reaching the store.
    Error,
    /// The call reaches the store and its change is made, but the caller is told it failed:
    /// a store that committed and then timed out. Reads fail as with [`Effect::Error`].
    ErrorAfterApplying,
    /// The call waits this long first, then proceeds normally.
    Delay(Duration),
    /// A GET's stream ends cleanly after this many bytes, as if the object were shorter.
    /// Applies to [`Op::Get`] only.
    ShortRead(u64),
    /// A GET's stream yields an error after this many bytes. Applies to [`Op::Get`] only.
    BrokenRead(u64),
}

/// When a fault fires among the calls it matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum When {
    /// Every matching call.
    Always,
    /// The next N matching calls, then no more.
    Next(u64),
    /// Each matching call with this probability (0.0..=1.0), from the handle's seeded RNG.
    Probability(f64),
}

/// One armed fault: which calls, on which keys, when, and with what effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    ops: OpSet,
    effect: Effect,
    when: When,
    key_contains: Option<String>,
}

impl Fault {
    /// Calls in `ops` fail without reaching the store.
    pub fn error(ops: impl Into<OpSet>) -> Self {
        Self::new(ops.into(), Effect::Error)
    }

    /// Calls in `ops` reach the store, which makes the change, and then report failure.
    pub fn error_after_applying(ops: impl Into<OpSet>) -> Self {
        Self::new(ops.into(), Effect::ErrorAfterApplying)
    }

    /// Calls in `ops` wait `delay` before going ahead.
    pub fn delay(ops: impl Into<OpSet>, delay: Duration) -> Self {
        Self::new(ops.into(), Effect::Delay(delay))
    }

    /// GET streams end cleanly after `after` bytes.
    pub fn short_read(after: u64) -> Self {
        Self::new(Op::Get.into(), Effect::ShortRead(after))
    }

    /// GET streams fail after `after` bytes.
    pub fn broken_read(after: u64) -> Self {
        Self::new(Op::Get.into(), Effect::BrokenRead(after))
    }

    fn new(ops: OpSet, effect: Effect) -> Self {
        Fault {
            ops,
            effect,
            when: When::Always,
            key_contains: None,
        }
    }

    /// Fires for the next `n` matching calls only.
    pub fn times(mut self, n: u64) -> Self {
        self.when = When::Next(n);
        self
    }

    /// Fires for each matching call with probability `p`.
    pub fn with_probability(mut self, p: f64) -> Self {
        self.when = When::Probability(p.clamp(0.0, 1.0));
        self
    }

    /// Matches only keys (or listing prefixes) containing `part`.
    pub fn on_keys(mut self, part: &str) -> Self {
        self.key_contains = Some(part.to_string());
        self
    }

    fn matches(&self, op: Op, key: &str) -> bool {
        self.ops.contains(op)
            && self.key_contains.as_deref().is_none_or(|p| key.contains(p))
            && match self.effect {
                Effect::ShortRead(_) | Effect::BrokenRead(_) => op == Op::Get,
                _ => true,
            }
    }
}

/// What the armed faults decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Decision {
    delay: Duration,
    error: Option<Failure>,
    cut: Option<Cut>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Before,
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    End(u64),
    Error(u64),
}

/// How many faults fired, in total and per kind of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Calls failed (before or after applying).
    pub errors: u64,
    /// Calls delayed.
    pub delays: u64,
    /// GET streams cut short (cleanly or with an error).
    pub cut_reads: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.errors + self.delays + self.cut_reads
    }
}

#[derive(Debug)]
struct State {
    faults: Vec<Fault>,
    rng: StdRng,
    counts: Counts,
    per_op: [Counts; Op::ALL.len()],
}

impl State {
    /// Walks the armed faults in the order they were added: delays add up, the first error
    /// and the first cut win, and only faults that fire use up a `Next` budget or are counted.
    fn decide(&mut self, op: Op, key: &str) -> Decision {
        let mut d = Decision::default();
        for fault in &mut self.faults {
            if !fault.matches(op, key) {
                continue;
            }
            let already = match fault.effect {
                Effect::Error | Effect::ErrorAfterApplying => d.error.is_some(),
                Effect::ShortRead(_) | Effect::BrokenRead(_) => d.cut.is_some(),
                Effect::Delay(_) => false,
            };
            if already {
                continue;
            }
            let fires = match &mut fault.when {
                When::Always => true,
                When::Next(0) => false,
                When::Next(n) => {
                    *n -= 1;
                    true
                }
                When::Probability(p) => self.rng.random_bool(*p),
            };
            if !fires {
                continue;
            }
            let counts = &mut self.per_op[op as usize];
            match fault.effect {
                Effect::Error => {
                    d.error = Some(Failure::Before);
                    counts.errors += 1;
                    self.counts.errors += 1;
                }
                Effect::ErrorAfterApplying => {
                    d.error = Some(Failure::After);
                    counts.errors += 1;
                    self.counts.errors += 1;
                }
                Effect::Delay(delay) => {
                    d.delay += delay;
                    counts.delays += 1;
                    self.counts.delays += 1;
                }
                Effect::ShortRead(n) => {
                    d.cut = Some(Cut::End(n));
                    counts.cut_reads += 1;
                    self.counts.cut_reads += 1;
                }
                Effect::BrokenRead(n) => {
                    d.cut = Some(Cut::Error(n));
                    counts.cut_reads += 1;
                    self.counts.cut_reads += 1;
                }
            }
        }
        // A call that fails outright streams nothing, so there is nothing to cut.
        if d.error.is_some() && d.cut.is_some() {
            d.cut = None;
            let counts = &mut self.per_op[op as usize];
            counts.cut_reads -= 1;
            self.counts.cut_reads -= 1;
        }
        d
    }
}

/// The control handle of one or more [`FaultyStore`]s: arm, clear, count.
#[derive(Debug, Clone)]
pub struct Faults {
    state: Arc<Mutex<State>>,
}

impl Faults {
    /// A handle with nothing armed; probabilities are drawn from an RNG seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Faults {
            state: Arc::new(Mutex::new(State {
                faults: Vec::new(),
                rng: StdRng::seed_from_u64(seed),
                counts: Counts::default(),
                per_op: [Counts::default(); Op::ALL.len()],
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is one step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Arms a fault, after those already armed.
    pub fn arm(&self, fault: Fault) -> &Self {
        self.lock().faults.push(fault);
        self
    }

    /// Disarms every fault; counts are kept.
    pub fn clear(&self) {
        self.lock().faults.clear();
    }

    /// Faults fired so far.
    pub fn counts(&self) -> Counts {
        self.lock().counts
    }

    /// Faults fired so far on one kind of call.
    pub fn counts_on(&self, op: Op) -> Counts {
        self.lock().per_op[op as usize]
    }

    fn decide(&self, op: Op, key: &Key) -> Decision {
        self.lock().decide(op, key.as_str())
    }
}

/// The error an injected failure reports.
#[derive(Debug, thiserror::Error)]
#[error("injected fault: {op} {key}")]
pub struct InjectedFault {
    op: &'static str,
    key: String,
}

fn injected(op: Op, key: &Key) -> StorageError {
    StorageError::Backend(Box::new(InjectedFault {
        op: op.name(),
        key: key.to_string(),
    }))
}

/// A [`BlobStore`] that passes every call to `inner` unless an armed fault says otherwise.
#[derive(Debug, Clone)]
pub struct FaultyStore {
    inner: Arc<dyn BlobStore>,
    faults: Faults,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn BlobStore>, faults: Faults) -> Self {
        FaultyStore { inner, faults }
    }

    /// Waits out any delay, then fails the call if a fault says it fails before the store.
    async fn enter(&self, op: Op, key: &Key) -> Result<Decision, StorageError> {
        let d = decide_and_wait(&self.faults, op, key).await;
        match d.error {
            Some(Failure::Before) => Err(injected(op, key)),
            // Reads change nothing, so failing after them is failing before them.
            Some(Failure::After) if Op::READS.contains(&op) => Err(injected(op, key)),
            _ => Ok(d),
        }
    }

    /// The result of a call that went through, unless a fault reports it failed anyway.
    fn leave<T>(
        d: Decision,
        op: Op,
        key: &Key,
        result: Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let value = result?;
        match d.error {
            Some(Failure::After) => Err(injected(op, key)),
            _ => Ok(value),
        }
    }
}

#[async_trait]
impl BlobStore for FaultyStore {
    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<Download, StorageError> {
        let d = self.enter(Op::Get, key).await?;
        let mut download = self.inner.get(key, range).await?;
        if let Some(cut) = d.cut {
            download.stream = cut_stream(download.stream, cut, key.clone());
        }
        Ok(download)
    }

    async fn get_bytes(&self, key: &Key, limit: u64) -> Result<Bytes, StorageError> {
        self.enter(Op::GetBytes, key).await?;
        self.inner.get_bytes(key, limit).await
    }

    async fn head(&self, key: &Key) -> Result<ObjectInfo, StorageError> {
        self.enter(Op::Head, key).await?;
        self.inner.head(key).await
    }

    async fn put(&self, key: &Key, data: Bytes) -> Result<(), StorageError> {
        let d = self.enter(Op::Put, key).await?;
        Self::leave(d, Op::Put, key, self.inner.put(key, data).await)
    }

    async fn put_if_absent(&self, key: &Key, data: Bytes) -> Result<(), StorageError> {
        let d = self.enter(Op::PutIfAbsent, key).await?;
        let result = self.inner.put_if_absent(key, data).await;
        Self::leave(d, Op::PutIfAbsent, key, result)
    }

    async fn settled(&self) {
        self.inner.settled().await;
    }

    async fn upload(&self, key: &Key) -> Result<Box<dyn Upload>, StorageError> {
        let d = self.enter(Op::UploadStart, key).await?;
        let upload = self.inner.upload(key).await;
        let upload = match (upload, d.error) {
            // Started, but the caller is told it did not: the upload is simply abandoned.
            (Ok(u), Some(Failure::After)) => {
                let _ = u.abort().await;
                return Err(injected(Op::UploadStart, key));
            }
            (upload, _) => upload?,
        };
        Ok(Box::new(FaultyUpload {
            inner: upload,
            key: key.clone(),
            faults: self.faults.clone(),
        }))
    }

    async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        let d = self.enter(Op::Delete, key).await?;
        Self::leave(d, Op::Delete, key, self.inner.delete(key).await)
    }

    async fn list(&self, prefix: &Key) -> Result<Vec<Key>, StorageError> {
        self.enter(Op::List, prefix).await?;
        self.inner.list(prefix).await
    }

    async fn list_with_info(&self, prefix: &Key) -> Result<Vec<(Key, ObjectInfo)>, StorageError> {
        self.enter(Op::List, prefix).await?;
        self.inner.list_with_info(prefix).await
    }

    async fn list_dir(&self, prefix: &Key) -> Result<DirListing, StorageError> {
        self.enter(Op::List, prefix).await?;
        self.inner.list_dir(prefix).await
    }
}

/// An upload whose writes and finish can be made to fail.
struct FaultyUpload {
    inner: Box<dyn Upload>,
    key: Key,
    faults: Faults,
}

/// Decides a call and waits out its delay. Takes the handle and key rather than the upload,
/// which is `Send` but not `Sync`.
async fn decide_and_wait(faults: &Faults, op: Op, key: &Key) -> Decision {
    let d = faults.decide(op, key);
    if !d.delay.is_zero() {
        tokio::time::sleep(d.delay).await;
    }
    d
}

#[async_trait]
impl Upload for FaultyUpload {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        let d = decide_and_wait(&self.faults, Op::UploadWrite, &self.key).await;
        if d.error == Some(Failure::Before) {
            return Err(injected(Op::UploadWrite, &self.key));
        }
        self.inner.write(data).await?;
        match d.error {
            Some(Failure::After) => Err(injected(Op::UploadWrite, &self.key)),
            _ => Ok(()),
        }
    }

    async fn finish(self: Box<Self>) -> Result<u64, StorageError> {
        let d = decide_and_wait(&self.faults, Op::UploadFinish, &self.key).await;
        let FaultyUpload { inner, key, .. } = *self;
        match d.error {
            // A failed finish publishes nothing.
            Some(Failure::Before) => {
                let _ = inner.abort().await;
                Err(injected(Op::UploadFinish, &key))
            }
            Some(Failure::After) => {
                inner.finish().await?;
                Err(injected(Op::UploadFinish, &key))
            }
            None => inner.finish().await,
        }
    }

    async fn abort(self: Box<Self>) -> Result<(), StorageError> {
        self.inner.abort().await
    }
}

/// Where a cut stream is.
enum CutState {
    Passing { stream: ByteStream, passed: u64 },
    Failing(StorageError),
    Done,
}

/// Passes the first bytes of `stream` through, up to the cut, then ends it or fails it.
fn cut_stream(stream: ByteStream, cut: Cut, key: Key) -> ByteStream {
    let limit = match cut {
        Cut::End(n) | Cut::Error(n) => n,
    };
    let at_cut = move || match cut {
        Cut::End(_) => CutState::Done,
        Cut::Error(_) => CutState::Failing(injected(Op::Get, &key)),
    };
    let start = if limit == 0 {
        at_cut()
    } else {
        CutState::Passing { stream, passed: 0 }
    };
    futures::stream::unfold(start, move |state| {
        let at_cut = at_cut.clone();
        async move {
            match state {
                CutState::Done => None,
                CutState::Failing(e) => Some((Err(e), CutState::Done)),
                CutState::Passing { mut stream, passed } => {
                    let chunk = match stream.next().await? {
                        Ok(chunk) => chunk,
                        Err(e) => return Some((Err(e), CutState::Done)),
                    };
                    let room = limit - passed;
                    if (chunk.len() as u64) < room {
                        let passed = passed + chunk.len() as u64;
                        return Some((Ok(chunk), CutState::Passing { stream, passed }));
                    }
                    // This chunk reaches the cut: pass what fits and stop there.
                    let fits = usize::try_from(room).unwrap_or(chunk.len());
                    Some((Ok(chunk.slice(..fits)), at_cut()))
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Key {
        Key::from_listing(s.to_string())
    }

    fn state(seed: u64, faults: Vec<Fault>) -> State {
        State {
            faults,
            rng: StdRng::seed_from_u64(seed),
            counts: Counts::default(),
            per_op: [Counts::default(); Op::ALL.len()],
        }
    }

    #[test]
    fn op_sets_hold_exactly_their_ops() {
        let set = OpSet::from([Op::Get, Op::List]);
        assert!(set.contains(Op::Get) && set.contains(Op::List));
        assert!(!set.contains(Op::GetBytes) && !set.contains(Op::Put));
        let all = OpSet::from(Op::ALL);
        assert!(Op::ALL.iter().all(|op| all.contains(*op)));
        let reads = OpSet::from(Op::READS);
        assert!(Op::WRITES.iter().all(|op| !reads.contains(*op)));
    }

    #[test]
    fn next_n_fires_n_times_then_stops() {
        let mut s = state(1, vec![Fault::error(Op::Get).times(2)]);
        let fired: Vec<bool> = (0..4)
            .map(|_| s.decide(Op::Get, "a").error.is_some())
            .collect();
        assert_eq!(fired, [true, true, false, false]);
        assert_eq!(s.counts.errors, 2);
        assert_eq!(s.per_op[Op::Get as usize].errors, 2);
        assert_eq!(s.per_op[Op::Head as usize].errors, 0);
    }

    #[test]
    fn other_ops_and_other_keys_do_not_use_up_the_budget() {
        let mut s = state(1, vec![Fault::error(Op::Put).on_keys("_complete").times(1)]);
        assert_eq!(s.decide(Op::Get, "images/x/_complete").error, None);
        assert_eq!(s.decide(Op::Put, "images/x/json").error, None);
        assert_eq!(
            s.decide(Op::Put, "images/x/_complete").error,
            Some(Failure::Before)
        );
        assert_eq!(s.decide(Op::Put, "images/x/_complete").error, None);
    }

    #[test]
    fn probabilities_are_reproducible_from_the_seed_and_roughly_right() {
        let run = |seed| {
            let mut s = state(seed, vec![Fault::error(Op::ALL).with_probability(0.1)]);
            (0..10_000)
                .map(|_| s.decide(Op::Head, "k").error.is_some())
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        let fired = a.iter().filter(|f| **f).count();
        assert!((800..1200).contains(&fired), "{fired}");
        let mut never = state(7, vec![Fault::error(Op::Get).with_probability(0.0)]);
        assert!((0..100).all(|_| never.decide(Op::Get, "k").error.is_none()));
    }

    #[test]
    fn delays_add_up_and_combine_with_an_error() {
        let ms = Duration::from_millis;
        let mut s = state(
            1,
            vec![
                Fault::delay(Op::Get, ms(10)),
                Fault::delay(Op::ALL, ms(5)),
                Fault::error(Op::Get).times(1),
                Fault::error_after_applying(Op::Get),
            ],
        );
        let d = s.decide(Op::Get, "k");
        assert_eq!((d.delay, d.error), (ms(15), Some(Failure::Before)));
        // The first error fired; the second one is then consulted.
        let d = s.decide(Op::Get, "k");
        assert_eq!((d.delay, d.error), (ms(15), Some(Failure::After)));
        assert_eq!(s.decide(Op::Head, "k").delay, ms(5));
        assert_eq!(
            s.counts,
            Counts {
                errors: 2,
                delays: 5,
                cut_reads: 0
            }
        );
    }

    #[test]
    fn cuts_apply_to_gets_only_and_not_to_calls_that_fail() {
        let mut s = state(1, vec![Fault::short_read(3), Fault::broken_read(9)]);
        assert_eq!(s.decide(Op::Get, "k").cut, Some(Cut::End(3)));
        assert_eq!(s.decide(Op::GetBytes, "k").cut, None);
        assert_eq!(s.counts.cut_reads, 1);
        let mut s = state(1, vec![Fault::error(Op::Get), Fault::short_read(3)]);
        let d = s.decide(Op::Get, "k");
        assert_eq!((d.error, d.cut), (Some(Failure::Before), None));
        assert_eq!(s.counts.total(), 1);
    }

    #[test]
    fn clearing_disarms_but_keeps_counts() {
        let f = Faults::new(1);
        f.arm(Fault::error(Op::Head));
        assert!(f.decide(Op::Head, &key("k")).error.is_some());
        f.clear();
        assert!(f.decide(Op::Head, &key("k")).error.is_none());
        assert_eq!(f.counts_on(Op::Head).errors, 1);
    }

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<Result<Bytes, StorageError>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        futures::stream::iter(items).boxed()
    }

    async fn drain(stream: ByteStream) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut stream = stream;
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => return (out, true),
            }
        }
        (out, false)
    }

    #[tokio::test]
    async fn cut_streams_pass_exactly_the_first_bytes() {
        let parts: &[&'static [u8]] = &[b"abc", b"defg", b"hi"];
        for n in 0..=10u64 {
            let want = &b"abcdefghi"[..(n as usize).min(9)];
            let (got, failed) = drain(cut_stream(chunks(parts), Cut::End(n), key("k"))).await;
            assert_eq!((&got[..], failed), (want, false), "end after {n}");
            let (got, failed) = drain(cut_stream(chunks(parts), Cut::Error(n), key("k"))).await;
            // A stream shorter than the cut is passed whole, with no error.
            assert_eq!((&got[..], failed), (want, n <= 9), "error after {n}");
        }
    }
}
