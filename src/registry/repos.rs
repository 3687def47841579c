//! Repositories: existence, image lists, tags, deletion, and the listing behind search.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{Registry, RegistryError, Result, exists, now_unix, read_json};
use crate::names::{ImageId, Namespace, RepoName, RepoRef, Tag};
use crate::storage::{Key, ObjectInfo, StorageError, keys};
use crate::v1::{ImageEntry, SearchResult, TagInfo};

/// How many small objects are read at once when a listing needs each of them.
const READ_CONCURRENCY: usize = 32;

/// The marker of an existing repository.
#[derive(Debug, Serialize, Deserialize)]
struct RepoRecord {
    created: i64,
    #[serde(default)]
    description: String,
}

/// A stored tag: the image it names and the metadata of the push that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub id: String,
    #[serde(flatten)]
    pub info: TagInfo,
}

/// The cached list of all repositories, and the generation of the repository set it was
/// scanned at: every create or delete bumps the generation, so a scan that overlapped one is
/// recognised and not kept.
#[derive(Debug, Default)]
pub(super) struct Listing {
    generation: u64,
    cached: Option<(Instant, Arc<Vec<RepoRef>>)>,
}

impl Listing {
    /// The cached list if it is younger than `ttl`.
    fn fresh(&self, now: Instant, ttl: std::time::Duration) -> Option<Arc<Vec<RepoRef>>> {
        match &self.cached {
            Some((at, repos)) if now.saturating_duration_since(*at) < ttl => Some(repos.clone()),
            _ => None,
        }
    }

    /// A repository was created or deleted.
    fn invalidate(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.cached = None;
    }

    /// Keeps a scan started at `generation`, unless the set changed since.
    fn install(&mut self, generation: u64, repos: Arc<Vec<RepoRef>>, now: Instant) {
        if self.generation == generation {
            self.cached = Some((now, repos));
        }
    }
}

impl Registry {
    /// Whether a repository exists.
    pub async fn repo_exists(&self, repo: &RepoRef) -> Result<bool> {
        exists(self.store().as_ref(), &keys::repo_marker(repo)).await
    }

    async fn require_repo(&self, repo: &RepoRef) -> Result<()> {
        if self.repo_exists(repo).await? {
            Ok(())
        } else {
            Err(RegistryError::RepoNotFound)
        }
    }

    /// Creates a repository if it does not exist yet (a re-push keeps it).
    pub async fn ensure_repo(&self, repo: &RepoRef) -> Result<()> {
        if self.repo_exists(repo).await? {
            return Ok(());
        }
        let record = RepoRecord {
            created: now_unix(),
            description: String::new(),
        };
        let record = serde_json::to_vec(&record).map_err(|_| RegistryError::InvalidData)?;
        self.store()
            .put(&keys::repo_marker(repo), Bytes::from(record))
            .await?;
        self.invalidate_listing();
        Ok(())
    }

    /// Adds images to a repository's list ("you always add images, you never remove them");
    /// an entry that already has a checksum keeps it. One object per image, so concurrent
    /// pushes never drop each other's entries.
    pub async fn merge_repo_images(&self, repo: &RepoRef, entries: &[ImageEntry]) -> Result<()> {
        self.ensure_repo(repo).await?;
        let mut ids = Vec::with_capacity(entries.len());
        for entry in entries {
            ids.push((entry.id.parse::<ImageId>()?, entry.checksum.clone()));
        }
        let store = self.store().clone();
        futures::stream::iter(ids)
            .map(|(id, checksum)| {
                let store = store.clone();
                async move {
                    let key = keys::repo_image(repo, &id);
                    let old: Option<ImageEntry> = match read_json(store.as_ref(), &key, || {
                        RegistryError::ImageNotFound
                    })
                    .await
                    {
                        Ok(e) => Some(e),
                        Err(RegistryError::ImageNotFound) => None,
                        Err(e) => return Err(e),
                    };
                    let keep = match &old {
                        Some(old) => old.checksum.is_some() || checksum.is_none(),
                        None => false,
                    };
                    if keep {
                        return Ok(());
                    }
                    let entry = ImageEntry {
                        id: id.to_string(),
                        checksum,
                    };
                    let body =
                        serde_json::to_vec(&entry).map_err(|_| RegistryError::InvalidData)?;
                    store.put(&key, Bytes::from(body)).await?;
                    Ok(())
                }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// A repository's image list.
    pub async fn repo_images(&self, repo: &RepoRef) -> Result<Vec<ImageEntry>> {
        let prefix = keys::repo_images(repo);
        let listing = self.repo_listing(repo, &prefix).await?;
        let cache = &self.inner.list_entries;
        let mut entries: Vec<ImageEntry> = self
            .read_records(listing, &prefix, cache)
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(entries)
    }

    /// The objects under one of a repository's prefixes, with versions. An empty listing
    /// means either no entries or no repository: only then is the marker looked at.
    async fn repo_listing(&self, repo: &RepoRef, prefix: &Key) -> Result<Vec<(Key, ObjectInfo)>> {
        let listing = self.store().list_with_info(prefix).await?;
        if listing.is_empty() {
            self.require_repo(repo).await?;
        }
        Ok(listing)
    }

    /// Reads the records directly under `prefix` from a listing, reusing cached ones whose
    /// version has not changed. Records deleted or garbled since the listing are skipped.
    async fn read_records<T>(
        &self,
        listing: Vec<(Key, ObjectInfo)>,
        prefix: &Key,
        cache: &super::VersionedCache<T>,
    ) -> Result<Vec<(String, T)>>
    where
        T: Clone + serde::de::DeserializeOwned + Send,
    {
        let store = self.store().clone();
        let wanted: Vec<(String, Key, ObjectInfo)> = listing
            .into_iter()
            .filter_map(|(key, info)| {
                let name = key.strip_prefix(prefix)?;
                (!name.contains('/')).then(|| (name.to_string(), key.clone(), info))
            })
            .collect();
        let records: Vec<Option<(String, T)>> = futures::stream::iter(wanted)
            .map(|(name, key, info)| {
                let store = store.clone();
                async move {
                    if let Some(hit) = cache.get(&key, &info) {
                        return Ok(Some((name, hit)));
                    }
                    match read_json::<T>(store.as_ref(), &key, || RegistryError::InvalidData).await
                    {
                        Ok(record) => {
                            cache.put(key, &info, record.clone());
                            Ok(Some((name, record)))
                        }
                        // Deleted since the listing.
                        Err(RegistryError::InvalidData) => Ok(None),
                        Err(RegistryError::Storage(StorageError::Io(e)))
                            if e.kind() == std::io::ErrorKind::InvalidData =>
                        {
                            tracing::warn!(%key, error = %e, "skipping a corrupt record");
                            Ok(None)
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(records.into_iter().flatten().collect())
    }

    /// Deletes a repository: its tags and image list, then the repository itself (last, so an
    /// interrupted delete can simply be retried). Images stay: they are shared.
    pub async fn delete_repo(&self, repo: &RepoRef) -> Result<()> {
        self.require_repo(repo).await?;
        let store = self.store().clone();
        let marker = keys::repo_marker(repo);
        let keys: Vec<_> = store
            .list(&keys::repo_dir(repo))
            .await?
            .into_iter()
            .filter(|k| *k != marker)
            .collect();
        futures::stream::iter(keys)
            .map(|key| {
                let store = store.clone();
                async move { store.delete(&key).await }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        store.delete(&marker).await?;
        self.invalidate_listing();
        Ok(())
    }

    /// All tags of a repository with their records (image id and metadata).
    pub async fn tag_records(&self, repo: &RepoRef) -> Result<BTreeMap<String, TagRecord>> {
        let prefix = keys::repo_tags(repo);
        let listing = self.repo_listing(repo, &prefix).await?;
        let records = self
            .read_records(listing, &prefix, &self.inner.tag_records)
            .await?;
        Ok(records.into_iter().collect())
    }

    /// One tag.
    pub async fn tag(&self, repo: &RepoRef, tag: &Tag) -> Result<TagRecord> {
        let record = read_json(self.store().as_ref(), &keys::repo_tag(repo, tag), || {
            RegistryError::TagNotFound(tag.clone())
        })
        .await;
        match record {
            Err(RegistryError::TagNotFound(t)) => {
                self.require_repo(repo).await?;
                Err(RegistryError::TagNotFound(t))
            }
            other => other,
        }
    }

    /// Points a tag at a complete image (last writer wins), creating the repository if needed.
    pub async fn put_tag(
        &self,
        repo: &RepoRef,
        tag: &Tag,
        id: &ImageId,
        user_agent: &str,
    ) -> Result<()> {
        self.image(id).await?;
        self.ensure_repo(repo).await?;
        let record = TagRecord {
            id: id.to_string(),
            info: TagInfo::from_user_agent(user_agent, now_unix()),
        };
        let body = serde_json::to_vec(&record).map_err(|_| RegistryError::InvalidData)?;
        self.store()
            .put(&keys::repo_tag(repo, tag), Bytes::from(body))
            .await?;
        Ok(())
    }

    /// Deletes a tag.
    pub async fn delete_tag(&self, repo: &RepoRef, tag: &Tag) -> Result<()> {
        self.tag(repo, tag).await?;
        self.store().delete(&keys::repo_tag(repo, tag)).await?;
        Ok(())
    }

    /// Every repository, read from storage (so every instance on one store sees the same) and
    /// kept for `listing_ttl`. The scan runs without the listing's lock, so creating or deleting
    /// a repository never waits for it; a scan during which one was created or deleted is
    /// returned to its callers but not kept, since it may miss that change.
    pub async fn all_repos(&self) -> Result<Arc<Vec<RepoRef>>> {
        let ttl = self.config().listing_ttl;
        if let Some(repos) = self.listing().fresh(Instant::now(), ttl) {
            return Ok(repos);
        }
        // One scan at a time: a search arriving during one waits for it and, unless a write
        // came in between, uses its result.
        let _scan = self.inner.listing_scan.lock().await;
        if let Some(repos) = self.listing().fresh(Instant::now(), ttl) {
            return Ok(repos);
        }
        let generation = self.listing().generation;
        let repos = Arc::new(self.scan_repos().await?);
        self.listing()
            .install(generation, repos.clone(), Instant::now());
        Ok(repos)
    }

    fn listing(&self) -> std::sync::MutexGuard<'_, Listing> {
        self.inner
            .listing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn invalidate_listing(&self) {
        self.listing().invalidate();
    }

    async fn scan_repos(&self) -> Result<Vec<RepoRef>> {
        let store = self.store().clone();
        let root = keys::repositories();
        let namespaces = store.list_dir(&root).await?.dirs;
        let per_ns: Vec<Vec<RepoRef>> = futures::stream::iter(namespaces)
            .filter_map(|ns| async move { ns.parse::<Namespace>().ok() })
            .map(|ns| {
                let store = store.clone();
                async move {
                    let mut out = Vec::new();
                    for name in store.list_dir(&keys::namespace_dir(&ns)).await?.dirs {
                        let Ok(repo) = name.parse::<RepoName>() else {
                            continue;
                        };
                        let r = RepoRef::new(ns.clone(), repo);
                        match store.head(&keys::repo_marker(&r)).await {
                            Ok(_) => out.push(r),
                            Err(StorageError::NotFound) => {}
                            Err(e) => return Err(RegistryError::from(e)),
                        }
                    }
                    Ok(out)
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let mut all: Vec<RepoRef> = per_ns.into_iter().flatten().collect();
        all.sort();
        Ok(all)
    }

    /// `GET /v1/search?q=`: repositories whose `ns/repo` contains the term; all for an empty one.
    pub async fn search(&self, term: &str) -> Result<Vec<SearchResult>> {
        let term = term.to_lowercase();
        Ok(self
            .all_repos()
            .await?
            .iter()
            .map(|r| r.to_string())
            .filter(|name| name.contains(&term))
            .map(|name| SearchResult {
                name,
                description: String::new(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn repos(names: &[&str]) -> Arc<Vec<RepoRef>> {
        Arc::new(
            names
                .iter()
                .map(|n| RepoRef::parse_full(n).unwrap())
                .collect(),
        )
    }

    #[test]
    fn a_scan_overlapping_a_write_is_not_kept() {
        let ttl = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut listing = Listing::default();
        // A scan starts, a repository is created while it runs, the scan ends.
        let started_at = listing.generation;
        listing.invalidate();
        listing.install(started_at, repos(&["alice/old"]), t0);
        assert!(listing.fresh(t0, ttl).is_none(), "a stale scan was kept");
        // A scan with no write during it is kept, for the ttl.
        let started_at = listing.generation;
        listing.install(started_at, repos(&["alice/new", "alice/old"]), t0);
        assert_eq!(listing.fresh(t0, ttl).unwrap().len(), 2);
        assert!(listing.fresh(t0 + ttl, ttl).is_none());
        // A write drops it at once.
        listing.invalidate();
        assert!(listing.fresh(t0, ttl).is_none());
    }
}
