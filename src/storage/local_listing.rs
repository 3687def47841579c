//! Reuse of a local directory's listing while the directory is unchanged.
//!
//! Every tags GET lists its repository's tags directory, so it cannot serve a tag another
//! process wrote a moment ago from a stale cache. Listing means a trip through the blocking
//! pool, a `readdir` and a `stat` per entry: a third of what nginx serves a small file at. A
//! directory's own modification time changes with every entry created, renamed over or
//! removed in it, and the local backend writes every object that way (a staged file renamed
//! into place), so one `stat` of the directory tells whether the last listing still holds, for
//! any process writing to the same filesystem.
//!
//! Timestamps come from a clock that ticks in steps, so a change in the same tick as the
//! directory's last one would leave its time unchanged. A listing is therefore kept only when the
//! directory's last change is older than [`SETTLED`]: any later change then gets a later time.
//! Only one-level listings are kept, since a change in a subdirectory leaves its parent's time
//! alone.

use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lru::LruCache;

use super::{Key, ObjectInfo};

/// How long ago a directory must have last changed for its listing to be kept: far more than
/// any filesystem's timestamp step.
const SETTLED: Duration = Duration::from_secs(2);
/// Directories whose listings are kept.
const MAX_DIRS: usize = 1024;
/// Larger listings are not kept, which bounds the memory to `MAX_DIRS * MAX_ENTRIES` entries.
const MAX_ENTRIES: usize = 4096;

pub type Listing = Arc<Vec<(Key, ObjectInfo)>>;

/// What identifies one state of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    /// Whether the directory last changed long enough ago for a listing to be kept.
    settled: bool,
}

/// Reads a directory's stamp; `None` when it is missing or not a directory.
///
/// This `stat` runs on the caller's thread, async runtime included: it is of a directory the
/// server lists over and over, whose inode is in the kernel's cache, and moving it to the
/// blocking pool would cost what the cache saves.
pub fn stamp(dir: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(dir).ok()?;
    if !meta.is_dir() {
        return None;
    }
    let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
    let settled = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age > SETTLED);
    Some(Stamp {
        ino: meta.ino(),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        settled,
    })
}

/// Listings of settled directories, by prefix.
#[derive(Debug)]
pub struct ListingCache {
    entries: Mutex<LruCache<String, (Stamp, Listing)>>,
}

impl Default for ListingCache {
    fn default() -> Self {
        ListingCache {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(MAX_DIRS).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }
}

impl ListingCache {
    /// The listing of `prefix` taken when the directory had this `stamp`, if kept.
    pub fn get(&self, prefix: &Key, stamp: Stamp) -> Option<Listing> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(prefix.as_str()) {
            Some((s, listing)) if *s == stamp => Some(listing.clone()),
            _ => None,
        }
    }

    /// Keeps a listing of `prefix` taken after its directory's stamp was read, if the
    /// directory had settled and the listing is one level deep and not too large.
    pub fn put(&self, prefix: &Key, stamp: Stamp, listing: &Listing) {
        if !stamp.settled || listing.len() > MAX_ENTRIES {
            return;
        }
        let base = prefix.as_str();
        let one_level = listing.iter().all(|(k, _)| {
            k.as_str()
                .strip_prefix(base)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|name| !name.contains('/'))
        });
        if one_level {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.put(base.to_string(), (stamp, listing.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ObjectInfo {
        ObjectInfo {
            size: 1,
            last_modified: SystemTime::UNIX_EPOCH,
            e_tag: None,
        }
    }

    fn settled(mut s: Stamp) -> Stamp {
        s.settled = true;
        s
    }

    /// Sets `dir`'s modification time to `age` ago, as if it had not changed since.
    fn backdate(dir: &Path, age: Duration) {
        let then = SystemTime::now() - age;
        std::fs::File::open(dir)
            .unwrap()
            .set_modified(then)
            .unwrap();
    }

    #[test]
    fn a_fresh_directory_is_not_settled_and_a_change_changes_its_stamp() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!stamp(dir.path()).unwrap().settled, "just created");
        // Last changed a minute ago: settled. A change now then has a later time whatever the
        // filesystem's timestamp step.
        backdate(dir.path(), Duration::from_secs(60));
        let before = stamp(dir.path()).unwrap();
        assert!(before.settled, "unchanged for a minute");
        std::fs::write(dir.path().join("t"), b"x").unwrap();
        let after = stamp(dir.path()).unwrap();
        assert_ne!(
            (before.mtime_ns, before.ctime_ns),
            (after.mtime_ns, after.ctime_ns)
        );
        assert!(!after.settled, "just changed");
        assert!(
            stamp(&dir.path().join("t")).is_none(),
            "a file is no directory"
        );
        assert!(stamp(&dir.path().join("missing")).is_none());
    }

    #[test]
    fn only_settled_one_level_listings_are_kept_and_only_for_their_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let s = stamp(dir.path()).unwrap();
        let cache = ListingCache::default();
        let prefix = Key::from_listing("repositories/a/b/tags".to_string());
        let flat: Listing = Arc::new(vec![(
            Key::from_listing("repositories/a/b/tags/latest".to_string()),
            info(),
        )]);
        cache.put(&prefix, s, &flat);
        assert!(cache.get(&prefix, s).is_none(), "not settled");
        cache.put(&prefix, settled(s), &flat);
        assert!(cache.get(&prefix, settled(s)).is_some());
        let mut other = settled(s);
        other.mtime_ns += 1;
        assert!(cache.get(&prefix, other).is_none(), "changed since");

        let nested: Listing = Arc::new(vec![(
            Key::from_listing("repositories/a/b/other/x/y".to_string()),
            info(),
        )]);
        let p2 = Key::from_listing("repositories/a/b/other".to_string());
        cache.put(&p2, settled(s), &nested);
        assert!(
            cache.get(&p2, settled(s)).is_none(),
            "nested listings are not kept"
        );
    }
}
