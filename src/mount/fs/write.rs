//! Changes through the mount (MOUNT.md, "Writes"): repositories and tags.
//!
//! - `mkdir repositories/<ns>` is remembered locally (a namespace exists once it holds a
//!   repository); `mkdir repositories/<ns>/<repo>` creates the repository.
//! - A tag file opened for writing collects its content in memory (at most 4 KiB) and is set on
//!   `flush` (close) or `fsync`, whose result is the registry's answer; the repository's image
//!   list then gains the image's ancestry, so a Docker 1.x client can pull the tag.
//! - `rm` of a tag deletes it; `mv` of a tag sets the new name, then deletes the old one.
//! - `rmdir` of a repository deletes it (ENOTEMPTY while it still has tags); `rm` of an entry
//!   under `images/` of a repository and `rmdir` of the emptied `tags/` and `images/` are
//!   accepted with no registry effect, so `rm -r` of a repository works and exits 0.
//!
//! - `cp -r` of a repository works: its maker sees a repository it just made empty until it
//!   makes `tags/` and `images/` (see [`RegistryFs::lookup_by`]), and an `images/<id>` link
//!   made in it adds a complete image to its image list.
//!
//! Refusals known up front come from `open`/`creat`/`mkdir` themselves: a read-only mount
//! (EROFS), no credentials (EACCES), immutable image content (EPERM). Tag content is judged at
//! each `write` (shells ignore errors from `close`): bytes that can never become an id, and a
//! whole id of no complete image, fail that write. Every refusal is recorded once, with its
//! path (see `RegistryFs::refused`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Entry, FsError, Handle, Opened, RegistryFs, Result, lock};
use crate::mount::backend::BackendError;
use crate::mount::tree::{ImageFile, Kind, Node};
use crate::names::{ImageId, RepoRef, Tag};

/// Largest content accepted for a tag file; a tag holds one id.
const MAX_TAG_FILE: usize = 4096;
/// How long a repository made with `mkdir` stays empty to its maker (see
/// [`RegistryFs::lookup_by`]), unless it makes `tags/` and `images/` sooner.
const FRESH_REPO_GRACE: Duration = Duration::from_secs(30);
/// How long an unlinked image link of a repository stays gone to the thread that unlinked it.
const UNLINKED_GRACE: Duration = Duration::from_secs(10);

/// A repository just made through the mount.
#[derive(Debug)]
pub struct FreshRepo {
    /// The thread that made it.
    maker: u32,
    at: Instant,
    /// Which of `tags` and `images` its maker has not made yet.
    unmade: BTreeSet<&'static str>,
}

/// A tag being written.
#[derive(Debug)]
pub struct TagWrite {
    repo: RepoRef,
    tag: Tag,
    buf: Vec<u8>,
    dirty: bool,
    /// The last write was refused: the tag does not show as being written.
    refused: bool,
}

impl TagWrite {
    pub fn is_dirty(&self) -> bool {
        self.dirty && !self.buf.is_empty()
    }

    pub fn repo(&self) -> &RepoRef {
        &self.repo
    }

    pub fn tag(&self) -> &Tag {
        &self.tag
    }

    pub fn read(&self, offset: u64, size: u32) -> Bytes {
        let len = self.buf.len() as u64;
        let start = offset.min(len) as usize;
        let end = (offset + size as u64).min(len) as usize;
        Bytes::copy_from_slice(&self.buf[start..end])
    }
}

/// The image id a tag file's content names: an id, optionally in JSON quotes, optionally
/// followed by a newline.
pub fn parse_tag_content(content: &[u8]) -> Option<ImageId> {
    let text = std::str::from_utf8(content).ok()?.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    (text.len() == 64).then(|| text.parse().ok())?
}

/// Whether tag content written so far can still become a valid id (a prefix of one, with the
/// optional quotes and trailing whitespace).
fn could_become_id(buf: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(buf) else {
        return false;
    };
    let text = text.trim_start();
    let text = text.strip_prefix('"').unwrap_or(text);
    let hex = text
        .bytes()
        .take_while(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        .count();
    let rest = &text[hex..];
    match hex {
        64 => rest.strip_prefix('"').unwrap_or(rest).trim().is_empty(),
        n if n < 64 => rest.is_empty(),
        _ => false,
    }
}

impl RegistryFs {
    pub(super) fn check_writable(&self) -> Result<()> {
        if self.config.read_only {
            return Err(FsError::ReadOnly);
        }
        if !self.backend.has_credentials() {
            // Known before asking: the registry would answer 401.
            return Err(FsError::Registry(BackendError::Unauthorized));
        }
        Ok(())
    }

    pub(super) fn pending_tag_len(&self, node: &Node) -> Option<u64> {
        lock(&self.handles)
            .values()
            .filter(|h| h.node == *node)
            .find_map(|h| {
                h.tag_write
                    .as_ref()
                    .filter(|w| !w.refused)
                    .map(|w| w.buf.len() as u64)
            })
    }

    fn invalidate_repo(&self, repo: &RepoRef) {
        self.meta.forget_tags(repo);
        self.meta.forget_repo_images(repo);
    }

    /// `open` for writing: tags only.
    pub(super) async fn open_for_write(&self, node: Node, truncate: bool) -> Result<Opened> {
        if self.config.read_only {
            return Err(FsError::ReadOnly);
        }
        let Node::Tag(repo, tag) = &node else {
            return match node {
                Node::ImageFile(id, file) => self.open_image_file(&id, file).await,
                _ => Err(FsError::NotPermitted("this file cannot be written")),
            };
        };
        self.check_writable()?;
        let buf = if truncate {
            Vec::new()
        } else {
            match self.meta.repo_tags(repo).await?.get(tag) {
                Some(listed) => format!("{}\n", listed.id).into_bytes(),
                None => Vec::new(),
            }
        };
        Ok(self.new_write_handle(node.clone(), repo.clone(), tag.clone(), buf, truncate))
    }

    fn new_write_handle(
        &self,
        node: Node,
        repo: RepoRef,
        tag: Tag,
        buf: Vec<u8>,
        dirty: bool,
    ) -> Opened {
        let mut handle = Handle::new(node);
        handle.tag_write = Some(TagWrite {
            repo,
            tag,
            buf,
            dirty,
            refused: false,
        });
        let fh = self.add_handle(handle);
        Opened {
            fh,
            keep_cache: false,
            passthrough: None,
        }
    }

    /// `create`: a new tag file in a repository's `tags/`, or a file of an image being pushed.
    pub async fn create(&self, parent: u64, name: &str) -> Result<(Entry, Opened)> {
        let result = self.create_inner(parent, name).await;
        self.outcome("create", || self.name_path(parent, name), result)
    }

    async fn create_inner(&self, parent: u64, name: &str) -> Result<(Entry, Opened)> {
        let parent = self.node(parent)?;
        self.check_writable()?;
        let node = match &parent {
            Node::Tags(_) => parent
                .child(name)
                .ok_or(FsError::Invalid("not a valid tag name"))?,
            Node::Image(id) => {
                let Some(Node::ImageFile(_, file)) = parent.child(name) else {
                    return Err(FsError::Invalid("an image holds json, layer and ancestry"));
                };
                let opened = self.open_image_file(id, file).await?;
                let node = Node::ImageFile(id.clone(), file);
                let ino = self.inodes.lookup(&node);
                return Ok((self.stat(&node, ino).await?, opened));
            }
            _ => return Err(FsError::NotPermitted("files cannot be created here")),
        };
        let Node::Tag(repo, tag) = &node else {
            return Err(FsError::Invalid("not a tag"));
        };
        self.meta.repo_tags(repo).await?;
        let opened =
            self.new_write_handle(node.clone(), repo.clone(), tag.clone(), Vec::new(), true);
        let ino = self.inodes.lookup(&node);
        let entry = self.stat(&node, ino).await?;
        Ok((entry, opened))
    }

    /// `write`: tag files within their small size limit, and files of images being pushed.
    /// A refused write is recorded; a refused image file also remembers it, so its close
    /// reports the same reason and commits nothing.
    pub async fn write(&self, fh: u64, offset: u64, data: Bytes) -> Result<u32> {
        let result = self.write_inner(fh, offset, data).await;
        let result = self.outcome("write", || self.fh_path(fh), result);
        let refused = result.as_ref().err();
        let refused_json = {
            let mut handles = lock(&self.handles);
            let h = handles.get_mut(&fh);
            match h {
                Some(Handle {
                    tag_write: Some(w), ..
                }) => {
                    w.refused = refused.is_some();
                    None
                }
                Some(Handle {
                    image_write: Some(w),
                    ..
                }) => match refused {
                    Some(e) => {
                        w.failed = Some(e.clone());
                        (w.file == ImageFile::Json).then(|| (w.id.clone(), e.clone()))
                    }
                    None => None,
                },
                _ => None,
            }
        };
        if let Some((id, e)) = refused_json {
            self.json_refused(&id, &e);
        }
        result
    }

    async fn write_inner(&self, fh: u64, offset: u64, data: Bytes) -> Result<u32> {
        let is_image = lock(&self.handles)
            .get(&fh)
            .is_some_and(|h| h.image_write.is_some());
        if is_image {
            return self.write_image(fh, offset, data).await;
        }
        let next = self.tag_after_write(fh, offset, &data)?;
        // A whole id is checked at once: a shell's `echo <id> > tag` sees the refusal, which
        // at close it would ignore.
        if let Some(id) = parse_tag_content(&next) {
            self.check_tagged_image(&id).await?;
        }
        let mut handles = lock(&self.handles);
        let w = handles
            .get_mut(&fh)
            .and_then(|h| h.tag_write.as_mut())
            .ok_or(FsError::BadHandle)?;
        w.buf = next;
        w.dirty = true;
        Ok(data.len() as u32)
    }

    /// The content of tag handle `fh` once `data` is written at `offset`, if it can still
    /// become an image id.
    fn tag_after_write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<Vec<u8>> {
        let handles = lock(&self.handles);
        let h = handles.get(&fh).ok_or(FsError::BadHandle)?;
        let w = h.tag_write.as_ref().ok_or(FsError::BadHandle)?;
        let end = offset as usize + data.len();
        if end > MAX_TAG_FILE {
            return Err(FsError::Invalid("a tag file holds one image id"));
        }
        let mut next = w.buf.clone();
        if next.len() < end {
            next.resize(end, 0);
        }
        next[offset as usize..end].copy_from_slice(data);
        // Refuse at `write` what can never become an id: shells ignore errors from `close`.
        if !could_become_id(&next) {
            return Err(FsError::Invalid("tag content is not an image id"));
        }
        Ok(next)
    }

    /// Refuses a tag naming no complete image. Only the registry's "not found" refuses:
    /// any other failure leaves the decision to the commit at close.
    async fn check_tagged_image(&self, id: &ImageId) -> Result<()> {
        match self.meta.image(id).await {
            Err(FsError::NotFound) => Err(FsError::InvalidContent(format!(
                "no complete image {id} on the registry"
            ))),
            _ => Ok(()),
        }
    }

    /// Truncates an open tag to `size` (`O_TRUNC` without atomic truncation, `truncate`).
    pub fn truncate(&self, fh: Option<u64>, node_ino: u64, size: u64) -> Result<()> {
        let result = self.truncate_inner(fh, node_ino, size);
        self.outcome("truncate", || self.ino_path(node_ino), result)
    }

    fn truncate_inner(&self, fh: Option<u64>, node_ino: u64, size: u64) -> Result<()> {
        let node = self.node(node_ino)?;
        if node.is_immutable() {
            return Err(FsError::NotPermitted("images are immutable"));
        }
        let mut handles = lock(&self.handles);
        let writable = |h: &Handle| h.node == node && h.tag_write.is_some();
        let key = fh
            .filter(|fh| handles.get(fh).is_some_and(writable))
            .or_else(|| handles.iter().find(|(_, h)| writable(h)).map(|(k, _)| *k));
        let Some(w) = key
            .and_then(|k| handles.get_mut(&k))
            .and_then(|h| h.tag_write.as_mut())
        else {
            return Err(FsError::Invalid("only an open tag can be truncated"));
        };
        if size as usize > MAX_TAG_FILE {
            return Err(FsError::Invalid("a tag file holds one image id"));
        }
        w.buf.resize(size as usize, 0);
        w.dirty = true;
        Ok(())
    }

    /// `flush` (each `close`) and `fsync`: sets a written tag and reports the result.
    /// Records which process opened `fh`, so that [`RegistryFs::flush_from`] can tell its
    /// closes from those of other processes.
    pub fn set_owner(&self, fh: u64, process: u32) {
        let image = lock(&self.handles).get_mut(&fh).and_then(|h| {
            h.owner = Some(process);
            h.image_write.as_ref().map(|w| w.id.clone())
        });
        if let Some(id) = image {
            self.add_image_maker(&id, process);
        }
    }

    /// The process that opened `fh` for writing, if recorded.
    pub fn owner(&self, fh: u64) -> Option<u32> {
        lock(&self.handles).get(&fh).and_then(|h| h.owner)
    }

    /// `flush` as the kernel sends it, from the process that closed a descriptor. A process
    /// that forks and execs while it writes makes the kernel close its descriptors in the
    /// child, and each of those closes is a flush: committing then would publish a layer cut
    /// short while the writer is still writing. So a flush from another process than the
    /// opener commits nothing; the opener's own close, fsync and the release still do.
    pub async fn flush_from(&self, fh: u64, process: Option<u32>) -> Result<()> {
        match (self.owner(fh), process) {
            (Some(owner), Some(process)) if owner != process => {
                tracing::debug!(
                    fh,
                    owner,
                    process,
                    "flush from another process: nothing committed"
                );
                Ok(())
            }
            _ => {
                let result = self.flush_inner(fh).await;
                self.outcome("close", || self.fh_path(fh), result)
            }
        }
    }

    /// `fsync`: commits what the file completes, like its close.
    pub async fn flush(&self, fh: u64) -> Result<()> {
        let result = self.flush_inner(fh).await;
        self.outcome("fsync", || self.fh_path(fh), result)
    }

    async fn flush_inner(&self, fh: u64) -> Result<()> {
        self.flush_image(fh).await?;
        let pending = {
            let handles = lock(&self.handles);
            // Empty content is what a shell redirection has before the command writes (it
            // closes a duplicate first): nothing to commit yet.
            match handles.get(&fh).and_then(|h| h.tag_write.as_ref()) {
                Some(w) if w.dirty && !w.buf.is_empty() => {
                    Some((w.repo.clone(), w.tag.clone(), w.buf.clone()))
                }
                _ => None,
            }
        };
        let Some((repo, tag, buf)) = pending else {
            return Ok(());
        };
        let result = self.commit_tag(&repo, &tag, &buf).await;
        // Committed or refused, this content has had its answer: a later close of a duplicate
        // descriptor, or the release, must not try again.
        if let Some(w) = lock(&self.handles)
            .get_mut(&fh)
            .and_then(|h| h.tag_write.as_mut())
        {
            if w.buf == buf {
                w.dirty = false;
            }
        }
        result
    }

    async fn commit_tag(&self, repo: &RepoRef, tag: &Tag, content: &[u8]) -> Result<()> {
        let id =
            parse_tag_content(content).ok_or(FsError::Invalid("tag content is not an image id"))?;
        let result = self.set_tag(repo, tag, &id).await;
        self.invalidate_repo(repo);
        result
    }

    /// Sets a tag and keeps the repository's image list in step with the image's ancestry.
    async fn set_tag(&self, repo: &RepoRef, tag: &Tag, id: &ImageId) -> Result<()> {
        let ancestry = self.backend.ancestry(id).await.map_err(|e| match e {
            BackendError::NotFound => FsError::Invalid("no such complete image"),
            other => FsError::Registry(other),
        })?;
        self.backend.put_tag(repo, tag, id).await?;
        self.backend.add_repo_images(repo, &ancestry).await?;
        Ok(())
    }

    /// `release`: commits what no flush did; nobody hears the result, so a failure is only
    /// recorded (logged, and listed in `.regfs/errors`).
    pub async fn release(&self, fh: u64) {
        let path = self.fh_path(fh);
        if let Err(e) = self.flush_image(fh).await {
            self.refused("release", || path.clone(), e);
        }
        let Some(handle) = self.take_handle(fh) else {
            return;
        };
        if let Some(w) = handle.tag_write {
            if w.dirty && !w.buf.is_empty() {
                if let Err(e) = self.commit_tag(&w.repo, &w.tag, &w.buf).await {
                    self.refused("release", || path, e);
                }
            }
        }
    }

    /// `mkdir`: a namespace (local until it holds a repository) or a repository.
    pub async fn mkdir(&self, parent: u64, name: &str) -> Result<Entry> {
        self.mkdir_by(parent, name, None).await
    }

    /// `mkdir` on behalf of thread `caller`, who then sees what it made empty for a while
    /// (see [`RegistryFs::lookup_by`]). `tags` and `images` of a repository are accepted
    /// when it exists: they are what `cp -r` makes in a repository it just made.
    pub async fn mkdir_by(&self, parent: u64, name: &str, caller: Option<u32>) -> Result<Entry> {
        let result = self.mkdir_inner(parent, name, caller).await;
        self.outcome("mkdir", || self.name_path(parent, name), result)
    }

    /// Whether `node` is, to thread `caller`, not there yet: the `tags/` or `images/` of a
    /// repository it just made, or a file it has not written of an image it just pushed.
    pub(super) fn fresh_to(&self, node: &Node, caller: u32) -> bool {
        let (repo, name) = match node {
            Node::Tags(r) => (r, "tags"),
            Node::RepoImages(r) => (r, "images"),
            Node::RepoImageLink(r, id) => {
                let key = (r.clone(), id.clone());
                return lock(&self.unlinked_links)
                    .get(&key)
                    .is_some_and(|(by, at)| *by == caller && at.elapsed() < UNLINKED_GRACE);
            }
            _ => return self.unwritten_to(node, caller),
        };
        let mut fresh = lock(&self.fresh_repos);
        fresh.retain(|_, f| f.at.elapsed() < FRESH_REPO_GRACE && !f.unmade.is_empty());
        fresh
            .get(repo)
            .is_some_and(|f| f.maker == caller && f.unmade.contains(name))
    }

    async fn mkdir_inner(&self, parent: u64, name: &str, caller: Option<u32>) -> Result<Entry> {
        let parent = self.node(parent)?;
        self.check_writable()?;
        let node = match &parent {
            Node::Repos | Node::Namespace(_) => parent
                .child(name)
                .ok_or(FsError::Invalid("not a valid namespace or repository name"))?,
            Node::Images => {
                let Some(Node::Image(id)) = parent.child(name) else {
                    return Err(FsError::Invalid("not an image id"));
                };
                return self.mkdir_image(&id, caller).await;
            }
            Node::Repo(repo) => {
                let node = parent
                    .child(name)
                    .ok_or(FsError::NotPermitted("a repository holds tags and images"))?;
                self.meta.repo_tags(repo).await?;
                if let Some(f) = lock(&self.fresh_repos).get_mut(repo) {
                    f.unmade.remove(name);
                }
                let ino = self.inodes.lookup(&node);
                return self.stat(&node, ino).await;
            }
            _ => return Err(FsError::NotPermitted("directories cannot be made here")),
        };
        match &node {
            Node::Namespace(ns) => {
                lock(&self.pending_namespaces).insert(ns.clone());
            }
            Node::Repo(repo) => {
                if self.meta.repo_tags(repo).await.is_ok() {
                    return Err(FsError::Exists);
                }
                self.backend.create_repo(repo).await?;
                self.meta.forget_repositories();
                self.invalidate_repo(repo);
                lock(&self.pending_namespaces).remove(&repo.namespace);
                if let Some(maker) = caller {
                    let mut fresh = lock(&self.fresh_repos);
                    // Bounded by what is recent: the expired go whenever one is added.
                    fresh.retain(|_, f| f.at.elapsed() < FRESH_REPO_GRACE && !f.unmade.is_empty());
                    fresh.insert(
                        repo.clone(),
                        FreshRepo {
                            maker,
                            at: Instant::now(),
                            unmade: BTreeSet::from(["tags", "images"]),
                        },
                    );
                }
            }
            _ => return Err(FsError::Invalid("unexpected directory")),
        }
        let ino = self.inodes.lookup(&node);
        self.stat(&node, ino).await
    }

    /// `unlink`: deletes a tag; entries of a repository's image list go quietly (lists only
    /// grow); image files are immutable.
    pub async fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        self.unlink_by(parent, name, None).await
    }

    /// `unlink` on behalf of thread `caller`: an image link it unlinks is gone to it for a
    /// while, so `cp -r` over an existing copy (which unlinks a link before making it again)
    /// can make it again.
    pub async fn unlink_by(&self, parent: u64, name: &str, caller: Option<u32>) -> Result<()> {
        let result = self.unlink_inner(parent, name, caller).await;
        self.outcome("unlink", || self.name_path(parent, name), result)
    }

    async fn unlink_inner(&self, parent: u64, name: &str, caller: Option<u32>) -> Result<()> {
        let parent = self.node(parent)?;
        let node = parent.child(name).ok_or(FsError::NotFound)?;
        if self.config.read_only {
            return Err(FsError::ReadOnly);
        }
        match &node {
            Node::Tag(repo, tag) => {
                self.check_writable()?;
                let result = self.backend.delete_tag(repo, tag).await;
                self.invalidate_repo(repo);
                result.map_err(FsError::from)
            }
            Node::RepoImageLink(repo, id) => {
                self.stat(&node, 0).await?;
                if let Some(caller) = caller {
                    let mut unlinked = lock(&self.unlinked_links);
                    unlinked.retain(|_, (_, at)| at.elapsed() < UNLINKED_GRACE);
                    unlinked.insert((repo.clone(), id.clone()), (caller, Instant::now()));
                }
                Ok(())
            }
            Node::ImageFile(..) | Node::ParentLink(_) => {
                Err(FsError::NotPermitted("images are immutable"))
            }
            _ => Err(FsError::NotPermitted("this entry cannot be removed")),
        }
    }

    /// `rmdir`: deletes a repository once it has no tags; the emptied `tags/` and `images/`
    /// of a repository go quietly; a namespace goes when it holds no repository.
    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        let result = self.rmdir_inner(parent, name).await;
        self.outcome("rmdir", || self.name_path(parent, name), result)
    }

    async fn rmdir_inner(&self, parent: u64, name: &str) -> Result<()> {
        let parent = self.node(parent)?;
        let node = parent.child(name).ok_or(FsError::NotFound)?;
        if self.config.read_only {
            return Err(FsError::ReadOnly);
        }
        match &node {
            Node::Repo(repo) => {
                self.check_writable()?;
                self.invalidate_repo(repo);
                if !self.meta.repo_tags(repo).await?.is_empty() {
                    return Err(FsError::NotEmpty);
                }
                let result = self.backend.delete_repo(repo).await;
                self.meta.forget_repositories();
                self.invalidate_repo(repo);
                result.map_err(FsError::from)
            }
            Node::Tags(repo) => {
                self.invalidate_repo(repo);
                if self.meta.repo_tags(repo).await?.is_empty() {
                    Ok(())
                } else {
                    Err(FsError::NotEmpty)
                }
            }
            Node::RepoImages(repo) => {
                self.meta.repo_tags(repo).await?;
                Ok(())
            }
            Node::Namespace(ns) => {
                self.meta.forget_repositories();
                if self
                    .meta
                    .repositories()
                    .await?
                    .iter()
                    .any(|r| r.namespace == *ns)
                {
                    return Err(FsError::NotEmpty);
                }
                if lock(&self.pending_namespaces).remove(ns) {
                    Ok(())
                } else {
                    Err(FsError::NotFound)
                }
            }
            Node::Image(_) => Err(FsError::NotPermitted("images are immutable")),
            _ => Err(FsError::NotPermitted("this directory cannot be removed")),
        }
    }

    /// `rename`: tags only (set the new name, then delete the old); anything else is EXDEV, so
    /// `mv` falls back to copy and delete.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
    ) -> Result<()> {
        let result = self.rename_inner(parent, name, new_parent, new_name).await;
        self.outcome(
            "rename",
            || {
                format!(
                    "{} -> {}",
                    self.name_path(parent, name),
                    self.name_path(new_parent, new_name)
                )
            },
            result,
        )
    }

    async fn rename_inner(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
    ) -> Result<()> {
        let from = self.node(parent)?.child(name).ok_or(FsError::NotFound)?;
        let to_parent = self.node(new_parent)?;
        if self.config.read_only {
            return Err(FsError::ReadOnly);
        }
        let (Node::Tag(from_repo, from_tag), Node::Tags(_)) = (&from, &to_parent) else {
            return Err(FsError::CrossDevice);
        };
        let Some(Node::Tag(to_repo, to_tag)) = to_parent.child(new_name) else {
            return Err(FsError::Invalid("not a valid tag name"));
        };
        self.check_writable()?;
        self.invalidate_repo(from_repo);
        let id = self
            .meta
            .repo_tags(from_repo)
            .await?
            .get(from_tag)
            .map(|listed| listed.id.clone())
            .ok_or(FsError::NotFound)?;
        self.set_tag(&to_repo, &to_tag, &id).await?;
        self.invalidate_repo(&to_repo);
        if (from_repo, from_tag) != (&to_repo, &to_tag) {
            self.backend.delete_tag(from_repo, from_tag).await?;
        }
        self.invalidate_repo(from_repo);
        Ok(())
    }

    /// Whether a node can be changed at all (for `setattr` of times and modes, which are
    /// accepted and ignored on tags and directories).
    pub fn is_changeable(&self, ino: u64) -> Result<bool> {
        let node = self.node(ino)?;
        Ok(!node.is_immutable() && node.kind() != Kind::Symlink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_content_may_carry_a_newline_or_quotes() {
        let id = "a".repeat(64);
        assert!(parse_tag_content(id.as_bytes()).is_some());
        assert!(parse_tag_content(format!("{id}\n").as_bytes()).is_some());
        assert!(parse_tag_content(format!("\"{id}\"\n").as_bytes()).is_some());
        assert!(parse_tag_content(format!("  {id}  ").as_bytes()).is_some());
        for bad in [
            "",
            "latest",
            &"a".repeat(63),
            &"A".repeat(64),
            "0123456789abcdef",
        ] {
            assert!(parse_tag_content(bad.as_bytes()).is_none(), "{bad:?}");
        }
        assert!(parse_tag_content(&[0xff, 0xfe]).is_none());
    }

    #[test]
    fn partial_content_is_judged_as_a_prefix() {
        let id = "a".repeat(64);
        for ok in [
            "",
            "ab",
            "\"ab",
            &id,
            &format!("{id}\n"),
            &format!("\"{id}\"\n"),
        ] {
            assert!(could_become_id(ok.as_bytes()), "{ok:?}");
        }
        for bad in ["garbage", "ab\n", "AB", &"a".repeat(65), &format!("{id}x")] {
            assert!(!could_become_id(bad.as_bytes()), "{bad:?}");
        }
    }
}
