//! The filesystem logic, with no FUSE types: lookup, getattr, readdir, readlink, open, read,
//! release over a [`RegistryBackend`]. The FUSE adapter (`fuse.rs`) only translates; everything
//! here is tested without a kernel mount.
//!
//! Every failed change is recorded once here, with the operation and the mount-relative path:
//! logged at warn, and kept (the last `MAX_REFUSALS`) for `.regfs/errors`, a read-only file in
//! a control directory that listings of the root leave out.

use crate::mount::lock;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::cache::{BlockCache, Clock};
use super::disk_cache::{DiskCache, DiskCacheError};
use super::error::FsError;
use super::inode::{InodeTable, ROOT_INO};
use super::tree::{self, ImageFile, Kind, Node, child_path};

mod layers;
mod meta;
mod passthrough;
mod push;
mod write;
use super::backend::{ImageInfo, ListedTag, RegistryBackend};
use crate::names::{ImageId, Namespace, RepoRef, Tag};
pub use passthrough::Passthrough;

/// Bytes of a tag file, and of each line of an ancestry file: an image id and a newline.
const ID_LINE_LEN: u64 = 65;
/// How long the kernel may keep attributes of things that never change.
pub(super) const IMMUTABLE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Largest window of layer bytes fetched ahead of a sequential reader.
const MAX_WINDOW: u64 = 64 * 1024 * 1024;
/// How far a read may land from where the last one ended and still count as sequential: the
/// kernel's readahead arrives out of order across FUSE threads.
const REORDER_SLACK: u64 = 8 * 1024 * 1024;
/// Refusals kept for `.regfs/errors`.
const MAX_REFUSALS: usize = 100;

pub type Result<T, E = FsError> = std::result::Result<T, E>;

/// Settings of the filesystem.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Time listings and tags are trusted (`--ttl`).
    pub ttl: Duration,
    /// Memory for layer blocks and prefetch (`--cache-size`).
    pub cache_size: u64,
    /// Where layer blocks and image metadata are also kept (`--cache-dir`), if anywhere.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes kept there (`--cache-dir-size`).
    pub cache_dir_size: u64,
    /// Whose data the disk cache entries are: the registry URL when `None`.
    pub cache_scope: Option<String>,
    /// Size of one ranged GET.
    pub block_size: u64,
    /// Ranged GETs in flight across the mount.
    pub max_fetches: usize,
    pub uid: u32,
    pub gid: u32,
    /// Refuse every change with EROFS.
    pub read_only: bool,
    /// Where a layer written before its json is spooled; the system's temporary directory
    /// (`TMPDIR`) when `None`.
    pub spool_dir: Option<PathBuf>,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            ttl: Duration::from_secs(1),
            cache_size: 256 * 1024 * 1024,
            cache_dir: None,
            cache_dir_size: 10 * 1024 * 1024 * 1024,
            cache_scope: None,
            block_size: 4 * 1024 * 1024,
            max_fetches: 4,
            uid: 0,
            gid: 0,
            read_only: false,
            spool_dir: None,
        }
    }
}

/// Attributes of an inode, independent of FUSE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub mtime: SystemTime,
    pub uid: u32,
    pub gid: u32,
}

/// A looked-up entry: attributes and how long the kernel may trust them.
#[derive(Debug, Clone)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

/// One directory entry.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub entry: Entry,
}

/// What `open` tells the kernel.
#[derive(Debug, Clone)]
pub struct Opened {
    pub fh: u64,
    /// Keep the page cache across opens: the content never changes.
    pub keep_cache: bool,
    /// Have the kernel read this handle from a file instead (a layer held whole on disk);
    /// `keep_cache` then only matters if the adapter cannot register the file.
    pub passthrough: Option<Passthrough>,
}

impl Handle {
    fn new(node: Node) -> Self {
        Handle {
            node,
            tag_write: None,
            image_write: None,
            content: None,
            last_end: 0,
            window: 0,
            reads: 0,
            served: 0,
            layer: None,
            owner: None,
        }
    }

    fn with_content(mut self, content: Option<Bytes>) -> Self {
        self.content = content;
        self
    }
}

#[derive(Debug)]
struct Handle {
    node: Node,
    /// A tag opened for writing: what has been written, committed on flush/fsync/release.
    tag_write: Option<write::TagWrite>,
    /// A file of an image being pushed.
    image_write: Option<push::ImageWrite>,
    /// Small files: their whole content, read once at open.
    content: Option<Bytes>,
    /// Layers: where the last read ended, and the prefetch window.
    last_end: u64,
    window: u64,
    reads: u64,
    /// Bytes of layer returned to the kernel through this handle.
    served: u64,
    /// Layers opened for reading: how the kernel reads them.
    layer: Option<passthrough::LayerOpen>,
    /// The process (thread group) that opened the handle, where the kernel told.
    owner: Option<u32>,
}

/// The registry as a filesystem.
#[derive(Debug)]
pub struct RegistryFs {
    /// The registry, whatever speaks to it (chosen once at mount).
    backend: Arc<dyn RegistryBackend>,
    config: FsConfig,
    started: SystemTime,
    inodes: InodeTable,
    /// The registry's listings and image facts, cached.
    meta: meta::Metadata,
    /// What the expiries above and a completed push's grace period read the time from.
    clock: Clock,
    /// Namespaces made with `mkdir` that hold no repository yet (visible to this mount only).
    pending_namespaces: Mutex<BTreeSet<Namespace>>,
    /// Images being pushed through this mount.
    pending_images: Mutex<HashMap<ImageId, push::PendingImage>>,
    /// Layer reads: the block cache and read-ahead over the backend.
    layers: layers::LayerReads,
    disk: Option<Arc<DiskCache>>,
    handles: Mutex<HashMap<u64, Handle>>,
    /// Whether the kernel reads whole layers on disk itself (granted at INIT).
    passthrough: AtomicBool,
    /// Open layers by inode and mode: the kernel refuses to mix modes on one inode.
    layer_opens: Mutex<HashMap<u64, passthrough::InodeOpens>>,
    /// `read` requests answered.
    read_requests: AtomicU64,
    /// One layer at a time is completed on disk after a whole read.
    completing: Arc<tokio::sync::Semaphore>,
    /// Open directories: the listing taken at `opendir`, served page by page to `readdir`.
    dirs: Mutex<HashMap<u64, Arc<DirSnapshot>>>,
    /// The last refusals, oldest first: what `.regfs/errors` shows.
    refusals: Mutex<VecDeque<Refusal>>,
    /// Repositories just made with `mkdir`, which their maker sees empty (see
    /// [`RegistryFs::lookup_by`]).
    fresh_repos: Mutex<HashMap<RepoRef, write::FreshRepo>>,
    /// Image links of repositories just unlinked (which only hides them: image lists only
    /// grow), with the thread that did and when: to it alone they are gone for a while, so
    /// `cp -r` over an existing copy can make them again.
    unlinked_links: Mutex<HashMap<(RepoRef, ImageId), (u32, std::time::Instant)>>,
    /// Images whose push through this mount completed (the latest, bounded): `ls images`
    /// keeps listing them.
    pushed: Mutex<VecDeque<ImageId>>,
    next_fh: AtomicU64,
}

/// A change the mount refused, as `.regfs/errors` lists it.
#[derive(Debug, Clone)]
struct Refusal {
    at: SystemTime,
    op: &'static str,
    path: String,
    reason: String,
}

/// A directory's entries as of `opendir`, with the directory's own attributes.
#[derive(Debug)]
pub struct DirSnapshot {
    pub this: Entry,
    pub entries: Vec<DirEntry>,
}

impl RegistryFs {
    pub fn new(backend: Arc<dyn RegistryBackend>, config: FsConfig) -> Self {
        Self::with_clock(backend, config, Clock::system())
    }

    /// A filesystem whose cached facts expire by `clock` (tests pass a [`Clock::manual`]).
    pub fn with_clock(backend: Arc<dyn RegistryBackend>, config: FsConfig, clock: Clock) -> Self {
        // Blocks get three quarters of the budget: the rest is for what the process holds
        // besides cached blocks (transfers, FUSE request buffers, copies for replies), which
        // measured 60-100 MiB under heavy reading.
        let block_budget = config.cache_size - config.cache_size / 4;
        let disk = config.cache_dir.as_deref().and_then(|dir| {
            match DiskCache::open(
                dir,
                config.cache_dir_size,
                config.cache_scope.as_deref().unwrap_or(backend.location()),
                config.block_size,
                // Blocks on their way to disk are mostly still in memory too; a sixteenth of
                // the budget bounds the rest.
                config.cache_size / 16,
            ) {
                Ok(disk) => Some(Arc::new(disk)),
                // A second mount over the same directory still works, only without it.
                Err(e @ DiskCacheError::Busy(_)) => {
                    tracing::warn!(error = %e, "running without the disk cache");
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot use the disk cache; running without it");
                    None
                }
            }
        });
        let blocks = BlockCache::new(
            config.block_size,
            block_budget,
            config.max_fetches,
            disk.clone(),
        );
        RegistryFs {
            meta: meta::Metadata::new(backend.clone(), disk.clone(), config.ttl, clock.clone()),
            layers: layers::LayerReads::new(backend.clone(), blocks),
            clock,
            pending_namespaces: Mutex::new(BTreeSet::new()),
            pending_images: Mutex::new(HashMap::new()),
            backend,
            started: SystemTime::now(),
            inodes: InodeTable::default(),
            disk,
            handles: Mutex::new(HashMap::new()),
            passthrough: AtomicBool::new(false),
            layer_opens: Mutex::new(HashMap::new()),
            read_requests: AtomicU64::new(0),
            completing: Arc::new(tokio::sync::Semaphore::new(1)),
            dirs: Mutex::new(HashMap::new()),
            refusals: Mutex::new(VecDeque::new()),
            fresh_repos: Mutex::new(HashMap::new()),
            unlinked_links: Mutex::new(HashMap::new()),
            pushed: Mutex::new(VecDeque::new()),
            next_fh: AtomicU64::new(1),
            config,
        }
    }

    /// The registry this filesystem shows.
    pub fn backend(&self) -> &Arc<dyn RegistryBackend> {
        &self.backend
    }

    pub fn read_only(&self) -> bool {
        self.config.read_only
    }

    pub fn inodes(&self) -> &InodeTable {
        &self.inodes
    }

    fn node(&self, ino: u64) -> Result<Node> {
        self.inodes.node(ino).ok_or(FsError::NotFound)
    }

    // ----- refusals: logged once, kept for `.regfs/errors` -----

    /// Records a failed change of `op` on `path` (logged at warn, kept for `.regfs/errors`)
    /// and returns it carrying the path, so the adapter does not log it again. Routine
    /// failures (a name that does not exist) and failures already recorded pass unchanged.
    fn refused(&self, op: &'static str, path: impl FnOnce() -> String, e: FsError) -> FsError {
        if e.is_routine() {
            return e;
        }
        let path = path();
        let reason = e.to_string();
        tracing::warn!(op, path = %path, reason = %reason, "refused");
        let mut refusals = lock(&self.refusals);
        if refusals.len() >= MAX_REFUSALS {
            refusals.pop_front();
        }
        refusals.push_back(Refusal {
            at: SystemTime::now(),
            op,
            path: path.clone(),
            reason,
        });
        FsError::At {
            path,
            source: Box::new(e),
        }
    }

    /// `result`, with a failure recorded as a refusal of `op` on `path`.
    fn outcome<T>(
        &self,
        op: &'static str,
        path: impl FnOnce() -> String,
        result: Result<T>,
    ) -> Result<T> {
        result.map_err(|e| self.refused(op, path, e))
    }

    /// The mount-relative path of an inode, for refusals.
    fn ino_path(&self, ino: u64) -> String {
        self.inodes
            .node(ino)
            .map_or_else(|| format!("(inode {ino})"), |n| n.path())
    }

    /// The mount-relative path of `name` in directory `parent`, for refusals.
    fn name_path(&self, parent: u64, name: &str) -> String {
        self.inodes.node(parent).map_or_else(
            || format!("(inode {parent})/{name}"),
            |n| child_path(&n, name),
        )
    }

    /// The mount-relative path of the file open as `fh`, for refusals.
    fn fh_path(&self, fh: u64) -> String {
        lock(&self.handles)
            .get(&fh)
            .map_or_else(|| format!("(handle {fh})"), |h| h.node.path())
    }

    /// `.regfs/errors`: one line per refusal, oldest first: time, operation, path, reason,
    /// separated by tabs.
    pub fn errors_text(&self) -> String {
        lock(&self.refusals)
            .iter()
            .map(|r| {
                let clean = |s: &str| s.replace(['\t', '\n'], " ");
                format!(
                    "{}\t{}\t{}\t{}\n",
                    humantime::format_rfc3339_seconds(r.at),
                    r.op,
                    clean(&r.path),
                    clean(&r.reason)
                )
            })
            .collect()
    }

    // ----- nodes -----

    /// Checks that a node exists and works out its attributes.
    async fn stat(&self, node: &Node, ino: u64) -> Result<Entry> {
        let short = self.config.ttl;
        if let Some(pending) = self.pending_stat(node) {
            let size = pending?;
            let (kind, perm) = match node.kind() {
                Kind::Dir => (Kind::Dir, 0o755),
                kind => (kind, 0o644),
            };
            return Ok(Entry {
                attr: Attr {
                    ino,
                    kind,
                    size,
                    perm,
                    mtime: SystemTime::now(),
                    uid: self.config.uid,
                    gid: self.config.gid,
                },
                ttl: short,
            });
        }
        let (kind, size, mtime, ttl) = match node {
            Node::Root | Node::Repos | Node::Images | Node::Search | Node::Control => {
                (Kind::Dir, 0, self.started, short)
            }
            // Read fresh at every stat, so the kernel reads all of it.
            Node::Errors => (
                Kind::File,
                self.errors_text().len() as u64,
                SystemTime::now(),
                Duration::ZERO,
            ),
            Node::Namespace(ns) => {
                let pending = lock(&self.pending_namespaces).contains(ns);
                if !pending
                    && !self
                        .meta
                        .repositories()
                        .await?
                        .iter()
                        .any(|r| r.namespace == *ns)
                {
                    return Err(FsError::NotFound);
                }
                (Kind::Dir, 0, self.started, short)
            }
            Node::Repo(r) | Node::Tags(r) => {
                // A repository changes when a tag does: the newest tag's time, where known.
                let tags = self.meta.repo_tags(r).await?;
                let newest = tags.values().filter_map(|t| t.updated).max();
                (Kind::Dir, 0, newest.unwrap_or(self.started), short)
            }
            Node::RepoImages(r) => {
                self.meta.repo_tags(r).await?;
                (Kind::Dir, 0, self.started, short)
            }
            Node::Tag(r, t) => {
                // A tag being written exists, with what has been written so far.
                if let Some(len) = self.pending_tag_len(node) {
                    (Kind::File, len, SystemTime::now(), short)
                } else if let Some(listed) = self.meta.repo_tags(r).await?.get(t) {
                    return Ok(self.listed_tag(node, ino, listed));
                } else {
                    return Err(FsError::NotFound);
                }
            }
            Node::RepoImageLink(r, id) => {
                if !self.meta.repo_image_list(r).await?.contains(id) {
                    return Err(FsError::NotFound);
                }
                (
                    Kind::Symlink,
                    link_target(node).len() as u64,
                    self.started,
                    short,
                )
            }
            Node::Image(id) => {
                let info = self.meta.image(id).await?;
                (Kind::Dir, 0, created(&info, self.started), IMMUTABLE_TTL)
            }
            Node::ImageFile(id, file) => {
                let info = self.meta.image(id).await?;
                let size = match file {
                    ImageFile::Json => info.json.len() as u64,
                    ImageFile::Layer => info.layer_size,
                    ImageFile::Ancestry => {
                        ID_LINE_LEN * self.meta.image_ancestry(id).await?.len() as u64
                    }
                };
                (
                    Kind::File,
                    size,
                    created(&info, self.started),
                    IMMUTABLE_TTL,
                )
            }
            Node::ParentLink(id) => {
                let info = self.meta.image(id).await?;
                let Some(parent) = &info.parent else {
                    return Err(FsError::NotFound);
                };
                let len = format!("../{parent}").len() as u64;
                (
                    Kind::Symlink,
                    len,
                    created(&info, self.started),
                    IMMUTABLE_TTL,
                )
            }
            Node::SearchResult(term) => {
                let size = self.meta.search_content(term).await?.len() as u64;
                (Kind::File, size, self.started, short)
            }
        };
        Ok(self.entry(node, ino, kind, size, mtime, ttl))
    }

    /// The entry of a node known to exist, from the facts that vary between nodes.
    fn entry(
        &self,
        node: &Node,
        ino: u64,
        kind: Kind,
        size: u64,
        mtime: SystemTime,
        ttl: Duration,
    ) -> Entry {
        let perm = match (kind, node) {
            (Kind::Dir, _) => 0o755,
            (Kind::Symlink, _) => 0o777,
            (Kind::File, Node::Tag(..)) => 0o644,
            (Kind::File, _) => 0o444,
        };
        Entry {
            attr: Attr {
                ino,
                kind,
                size,
                perm,
                mtime,
                uid: self.config.uid,
                gid: self.config.gid,
            },
            ttl,
        }
    }

    /// The entry of a tag the registry lists (not one being written): both `stat` and
    /// [`RegistryFs::tag_entries`] answer with it, so a listing and a lookup agree.
    fn listed_tag(&self, node: &Node, ino: u64, listed: &ListedTag) -> Entry {
        self.entry(
            node,
            ino,
            Kind::File,
            ID_LINE_LEN,
            listed.updated.unwrap_or(self.started),
            self.config.ttl,
        )
    }

    /// The entries of a tags directory straight from its listing: every tag's attributes follow
    /// from the listing itself, and a repository may have thousands. `None` while a tag of the
    /// repository is being written, whose entry [`RegistryFs::stat`] knows better.
    fn tag_entries(
        &self,
        repo: &RepoRef,
        tags: &BTreeMap<Tag, ListedTag>,
    ) -> Option<Vec<DirEntry>> {
        let writing = lock(&self.handles)
            .values()
            .any(|h| h.tag_write.is_some() && matches!(&h.node, Node::Tag(r, _) if r == repo));
        if writing {
            return None;
        }
        let nodes: Vec<Node> = tags
            .keys()
            .map(|t| Node::Tag(repo.clone(), t.clone()))
            .collect();
        let inos = self.inodes.peek_all(&nodes);
        Some(
            nodes
                .iter()
                .zip(inos)
                .zip(tags.values())
                .map(|((node, ino), listed)| DirEntry {
                    name: node_name(node),
                    entry: self.listed_tag(node, ino, listed),
                })
                .collect(),
        )
    }

    /// `lookup`: the child `name` of directory `parent`, counting a kernel reference.
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Entry> {
        self.lookup_by(parent, name, None).await
    }

    /// `lookup` on behalf of thread `caller`, as the kernel names it. A directory a thread
    /// just made is empty to that thread, as POSIX promises and `cp -r` (and Python's
    /// `copytree`) count on when they go on to create its entries with `mkdir`, `O_EXCL` and
    /// `symlink`, which the kernel refuses (EEXIST) without asking us once a lookup found
    /// them: for a while, the maker of a repository does not find its `tags/` and `images/`
    /// until it makes them, and the writer of an image does not find the files it has not
    /// written (`ancestry`, `parent`) in the image it completed. Everyone else sees
    /// everything at once.
    pub async fn lookup_by(&self, parent: u64, name: &str, caller: Option<u32>) -> Result<Entry> {
        let parent = self.node(parent)?;
        if parent.kind() != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let node = parent.child(name).ok_or(FsError::NotFound)?;
        if let Some(caller) = caller {
            if self.fresh_to(&node, caller) {
                return Err(FsError::NotFound);
            }
        }
        // Check existence before taking a reference, so a missing name allocates nothing.
        let entry = self.stat(&node, 0).await?;
        let ino = self.inodes.lookup(&node);
        Ok(Entry {
            attr: Attr { ino, ..entry.attr },
            ..entry
        })
    }

    /// `getattr`.
    pub async fn getattr(&self, ino: u64) -> Result<Entry> {
        let node = self.node(ino)?;
        self.stat(&node, ino).await
    }

    /// The kernel took a reference to `ino` through READDIRPLUS.
    pub fn remember(&self, ino: u64) {
        self.inodes.add_lookup(ino);
    }

    /// The kernel took a reference to `ino`, entry `name` of directory `dir`, through
    /// READDIRPLUS: counted by its node, since an inode given out without a reference may
    /// have been reclaimed since the listing.
    pub fn remember_entry(&self, dir: u64, name: &str, ino: u64) {
        match self.inodes.node(dir).and_then(|d| d.child(name)) {
            Some(node) => self.inodes.add_lookup_of(ino, &node),
            None => self.inodes.add_lookup(ino),
        }
    }

    /// `forget`: the kernel dropped `n` references.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }

    /// `readdir`/`readdirplus`: every entry of a directory, with attributes. No kernel
    /// reference is counted here: with READDIRPLUS the adapter calls [`RegistryFs::remember`]
    /// for each entry it actually hands to the kernel.
    pub async fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>> {
        let node = self.node(ino)?;
        let children: Vec<Node> = match &node {
            Node::Root => vec![Node::Images, Node::Repos, Node::Search],
            Node::Repos => {
                let mut namespaces: BTreeSet<Namespace> = self
                    .meta
                    .repositories()
                    .await?
                    .iter()
                    .map(|r| r.namespace.clone())
                    .collect();
                namespaces.extend(lock(&self.pending_namespaces).iter().cloned());
                namespaces.into_iter().map(Node::Namespace).collect()
            }
            Node::Namespace(ns) => {
                let repos = self.meta.repositories().await?;
                let mut out: Vec<Node> = repos
                    .iter()
                    .filter(|r| r.namespace == *ns)
                    .map(|r| Node::Repo(r.clone()))
                    .collect();
                if out.is_empty() && !lock(&self.pending_namespaces).contains(ns) {
                    return Err(FsError::NotFound);
                }
                out.dedup();
                out
            }
            Node::Repo(r) => {
                self.meta.repo_tags(r).await?;
                vec![Node::RepoImages(r.clone()), Node::Tags(r.clone())]
            }
            Node::Tags(r) => {
                let tags = self.meta.repo_tags(r).await?;
                if let Some(entries) = self.tag_entries(r, &tags) {
                    return Ok(entries);
                }
                tags.keys()
                    .map(|t| Node::Tag(r.clone(), t.clone()))
                    .collect()
            }
            Node::RepoImages(r) => {
                self.meta.repo_tags(r).await?;
                self.meta
                    .repo_image_list(r)
                    .await?
                    .iter()
                    .map(|id| Node::RepoImageLink(r.clone(), id.clone()))
                    .collect()
            }
            Node::Images => self
                .known_images()
                .await?
                .into_iter()
                .map(Node::Image)
                .collect(),
            Node::Image(id) if self.pending_incomplete(id) => {
                self.pending_files(id).unwrap_or_default()
            }
            Node::Image(id) => {
                let info = self.meta.image(id).await?;
                let mut out: Vec<Node> = ImageFile::ALL
                    .iter()
                    .map(|f| Node::ImageFile(id.clone(), *f))
                    .collect();
                if info.parent.is_some() {
                    out.push(Node::ParentLink(id.clone()));
                }
                out
            }
            // Search results exist only when looked up by term.
            Node::Search => Vec::new(),
            Node::Control => vec![Node::Errors],
            _ => return Err(FsError::NotDir),
        };
        let entries: Vec<Option<DirEntry>> = futures::stream::iter(children)
            .map(|child| async move {
                let name = node_name(&child);
                match self.stat(&child, 0).await {
                    Ok(entry) => {
                        let ino = self.inodes.peek(&child);
                        Ok(Some(DirEntry {
                            name,
                            entry: Entry {
                                attr: Attr { ino, ..entry.attr },
                                ..entry
                            },
                        }))
                    }
                    // Gone between the listing and the stat: leave it out.
                    Err(FsError::NotFound) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(16)
            .try_collect()
            .await?;
        Ok(entries.into_iter().flatten().collect())
    }

    /// `opendir`: lists the directory once; `readdir` calls page through this snapshot
    /// instead of listing again for every page (a 1,000-entry `ls -l` takes dozens of pages).
    pub async fn opendir(&self, ino: u64) -> Result<u64> {
        let this = self.getattr(ino).await?;
        if this.attr.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let entries = self.readdir(ino).await?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(fh, Arc::new(DirSnapshot { this, entries }));
        Ok(fh)
    }

    /// The snapshot of an open directory.
    pub fn dir_snapshot(&self, fh: u64) -> Option<Arc<DirSnapshot>> {
        lock(&self.dirs).get(&fh).cloned()
    }

    /// `releasedir`.
    pub fn releasedir(&self, fh: u64) {
        lock(&self.dirs).remove(&fh);
    }

    /// Images the mount knows of: every repository's image list, with the ancestors of those
    /// images whose ancestry has been read, and images being pushed through this mount.
    async fn known_images(&self) -> Result<BTreeSet<ImageId>> {
        let repos = self.meta.repositories().await?;
        let lists: Vec<Arc<Vec<ImageId>>> = futures::stream::iter(repos.iter().cloned())
            .map(|r| async move {
                match self.meta.repo_image_list(&r).await {
                    Ok(l) => Ok(l),
                    Err(FsError::NotFound) => Ok(Arc::new(Vec::new())),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let listed: BTreeSet<ImageId> = lists.iter().flat_map(|l| l.iter().cloned()).collect();
        let mut known = listed.clone();
        // Ancestors of listed images, where their ancestry has been read: no extra requests.
        for id in &listed {
            if let Some(ancestry) = self.meta.cached_ancestry(id) {
                known.extend(ancestry.iter().cloned());
            }
        }
        // Images being pushed through this mount show too, and those it pushed.
        known.extend(lock(&self.pending_images).keys().cloned());
        known.extend(lock(&self.pushed).iter().cloned());
        Ok(known)
    }

    /// `readlink`.
    pub async fn readlink(&self, ino: u64) -> Result<String> {
        let node = self.node(ino)?;
        match &node {
            Node::RepoImageLink(..) => Ok(link_target(&node)),
            Node::ParentLink(id) => {
                let info = self.meta.image(id).await?;
                let parent = info.parent.as_ref().ok_or(FsError::NotFound)?;
                Ok(format!("../{parent}"))
            }
            _ => Err(FsError::Invalid("not a symlink")),
        }
    }

    /// `open`: small files are read whole; only tags can be opened for writing.
    pub async fn open(&self, ino: u64, write: bool, truncate: bool) -> Result<Opened> {
        let node = self.node(ino)?;
        match node.kind() {
            Kind::Dir => return Err(FsError::IsDir),
            Kind::Symlink => return Err(FsError::Invalid("symlink")),
            Kind::File => {}
        }
        if write {
            let result = self.open_for_write(node, truncate).await;
            return self.outcome("open", || self.ino_path(ino), result);
        }
        let content = match &node {
            Node::Tag(r, t) => {
                let tags = self.meta.repo_tags(r).await?;
                let listed = tags.get(t).ok_or(FsError::NotFound)?;
                Some(Bytes::from(format!("{}\n", listed.id)))
            }
            Node::ImageFile(id, ImageFile::Json) => Some(self.meta.image(id).await?.json.clone()),
            Node::ImageFile(id, ImageFile::Ancestry) => {
                let ids = self.meta.image_ancestry(id).await?;
                let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
                Some(Bytes::from(text))
            }
            Node::SearchResult(term) => Some(self.meta.search_content(term).await?),
            Node::Errors => Some(Bytes::from(self.errors_text())),
            Node::ImageFile(id, ImageFile::Layer) => {
                let size = self.meta.image(id).await?.layer_size;
                return Ok(self.open_layer(ino, node.clone(), id, size).await);
            }
            _ => return Err(FsError::NotFound),
        };
        let fh = self.add_handle(Handle::new(node.clone()).with_content(content));
        Ok(Opened {
            fh,
            keep_cache: node.is_immutable(),
            passthrough: None,
        })
    }

    /// `read`: up to `size` bytes at `offset`; fewer only at the end of the file.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        tracing::trace!(fh, offset, size, "read");
        self.read_requests.fetch_add(1, Ordering::Relaxed);
        let (node, content, sequential, window, first, backing) = {
            let mut handles = lock(&self.handles);
            // Readers share the budget: each gets at most half of an equal share as its
            // window, so read-ahead of one never evicts what another has yet to read.
            let readers = handles
                .values()
                .filter(|h| h.reads > 0 && h.content.is_none() && h.tag_write.is_none())
                .count()
                .max(1) as u64;
            let h = handles.get_mut(&fh).ok_or(FsError::BadHandle)?;
            if let Some(w) = &h.tag_write {
                return Ok(w.read(offset, size));
            }
            let sequential = h.reads > 0
                && offset + REORDER_SLACK >= h.last_end
                && offset <= h.last_end + REORDER_SLACK;
            let bs = self.layers.blocks().block_size();
            let max_window = MAX_WINDOW
                .min(self.layers.blocks().budget() / (2 * readers))
                .max(bs);
            h.window = if sequential {
                (h.window * 2).clamp(bs, max_window)
            } else {
                bs
            };
            let first = h.reads == 0;
            h.reads += 1;
            h.last_end = h.last_end.max(offset + size as u64);
            if !sequential {
                h.last_end = offset + size as u64;
            }
            let backing = h.layer.as_ref().and_then(|l| l.file()).cloned();
            (
                h.node.clone(),
                h.content.clone(),
                sequential,
                h.window,
                first,
                backing,
            )
        };
        if let Some(content) = content {
            let len = content.len() as u64;
            let start = offset.min(len) as usize;
            let end = (offset + size as u64).min(len) as usize;
            return Ok(content.slice(start..end));
        }
        let Node::ImageFile(id, ImageFile::Layer) = &node else {
            return Err(FsError::BadHandle);
        };
        let layer_size = self.meta.image(id).await?.layer_size;
        if offset >= layer_size || size == 0 {
            return Ok(Bytes::new());
        }
        let end = (offset + size as u64).min(layer_size);
        if let Some(h) = lock(&self.handles).get_mut(&fh) {
            h.served += end - offset;
        }
        // A whole local copy: the stored file of the registry in this process, or a
        // passthrough file, which the kernel reads itself but may still ask for (it is allowed to).
        if let Some(file) = backing {
            if let Some(data) = passthrough::read_backing(file, offset, end - offset).await {
                return Ok(data);
            }
        }
        self.layers
            .read(id, layer_size, offset..end, sequential, window, first)
            .await
    }

    /// Registers an open file; returns its handle number.
    fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, handle);
        fh
    }

    fn take_handle(&self, fh: u64) -> Option<Handle> {
        let handle = lock(&self.handles).remove(&fh)?;
        if let Some(open) = &handle.layer {
            self.end_layer_open(open);
            // Read whole (at least as many bytes as it has): worth keeping whole on disk.
            if let Node::ImageFile(id, ImageFile::Layer) = &handle.node {
                let size = self.meta.cached_image(id).map_or(0, |i| i.layer_size);
                if size > 0 && handle.served >= size {
                    self.complete_layer(id, size);
                }
            }
        }
        Some(handle)
    }

    /// The root's attributes, for the adapter's `init`-time checks.
    pub async fn root(&self) -> Result<Entry> {
        self.getattr(ROOT_INO).await
    }

    /// Bytes of layer data held in memory.
    pub fn cached_bytes(&self) -> u64 {
        self.layers.blocks().bytes()
    }

    /// Layer block fetches under way, prefetches included.
    pub fn fetches_in_flight(&self) -> usize {
        self.layers.blocks().fetches_in_flight()
    }

    /// Bytes in the disk cache; `None` when this mount has none.
    pub fn disk_cached_bytes(&self) -> Option<u64> {
        self.disk.as_ref().map(|d| d.bytes())
    }

    /// Waits until every disk cache write under way has landed, and the layer assembly and
    /// completion they started.
    pub async fn flush_disk_cache(&self) {
        self.wait_completion().await;
        if let Some(disk) = &self.disk {
            disk.flush().await;
        }
    }
}

fn created(info: &ImageInfo, fallback: SystemTime) -> SystemTime {
    info.created.unwrap_or(fallback)
}

/// The symlink target of a repository's image entry.
fn link_target(node: &Node) -> String {
    match node {
        Node::RepoImageLink(_, id) => format!("../../../../images/{id}"),
        _ => String::new(),
    }
}

/// The name of a node in its parent directory.
pub fn node_name(node: &Node) -> String {
    match node {
        Node::Root => String::new(),
        Node::Repos => "repositories".into(),
        Node::Images => "images".into(),
        Node::Search => "search".into(),
        Node::Namespace(ns) => ns.to_string(),
        Node::Repo(r) => r.repo.to_string(),
        Node::Tags(_) => "tags".into(),
        Node::RepoImages(_) => "images".into(),
        Node::Tag(_, t) => t.to_string(),
        Node::RepoImageLink(_, id) | Node::Image(id) => id.to_string(),
        Node::ImageFile(_, f) => f.name().into(),
        Node::ParentLink(_) => "parent".into(),
        Node::SearchResult(term) => term.clone(),
        Node::Control => tree::CONTROL_DIR.into(),
        Node::Errors => "errors".into(),
    }
}
