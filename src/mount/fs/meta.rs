//! The registry's facts as the filesystem caches them: the repository list, each
//! repository's tags and image list (trusted for `--ttl`), and the json, size and ancestry of
//! complete images (which never change: kept a day in memory, and in the disk cache so a later
//! mount reaches cached layers with the registry away). Each fetch is shared by concurrent
//! callers ([`TtlMap::get_or_fetch`]); changes made through the mount forget what they touched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{FsError, IMMUTABLE_TTL, Result};
use crate::mount::backend::{BackendError, ImageInfo, ListedTag, RegistryBackend};
use crate::mount::cache::{Clock, TtlMap};
use crate::mount::disk_cache::DiskCache;
use crate::names::{ImageId, RepoRef, Tag};

/// The cached facts, over the backend they come from.
#[derive(Debug)]
pub(super) struct Metadata {
    backend: Arc<dyn RegistryBackend>,
    disk: Option<Arc<DiskCache>>,
    images: TtlMap<ImageId, Arc<ImageInfo>>,
    ancestry: TtlMap<ImageId, Arc<Vec<ImageId>>>,
    repos: TtlMap<(), Arc<Vec<RepoRef>>>,
    tags: TtlMap<RepoRef, Arc<BTreeMap<Tag, ListedTag>>>,
    repo_images: TtlMap<RepoRef, Arc<Vec<ImageId>>>,
    search: TtlMap<String, Bytes>,
}

/// "Not found" from the registry, or an image still being pushed, is ENOENT for a reader.
fn absent(e: BackendError) -> FsError {
    match e {
        BackendError::NotFound | BackendError::Refused(_) => FsError::NotFound,
        other => FsError::Registry(other),
    }
}

impl Metadata {
    /// Listings are trusted for `ttl`; facts of complete images for [`IMMUTABLE_TTL`], in
    /// large maps.
    pub(super) fn new(
        backend: Arc<dyn RegistryBackend>,
        disk: Option<Arc<DiskCache>>,
        ttl: Duration,
        clock: Clock,
    ) -> Self {
        Metadata {
            backend,
            disk,
            images: TtlMap::with_clock(IMMUTABLE_TTL, 65_536, clock.clone()),
            ancestry: TtlMap::with_clock(IMMUTABLE_TTL, 65_536, clock.clone()),
            repos: TtlMap::with_clock(ttl, 1, clock.clone()),
            tags: TtlMap::with_clock(ttl, 4096, clock.clone()),
            repo_images: TtlMap::with_clock(ttl, 4096, clock.clone()),
            search: TtlMap::with_clock(ttl, 1024, clock),
        }
    }

    /// Image `id`'s facts if cached, without asking the registry.
    pub(super) fn cached_image(&self, id: &ImageId) -> Option<Arc<ImageInfo>> {
        self.images.get(id)
    }

    /// Image `id`'s ancestry if cached, without asking the registry.
    pub(super) fn cached_ancestry(&self, id: &ImageId) -> Option<Arc<Vec<ImageId>>> {
        self.ancestry.get(id)
    }

    /// Forgets what is known of image `id` (its push just completed).
    pub(super) fn forget_image(&self, id: &ImageId) {
        self.images.remove(id);
        self.ancestry.remove(id);
    }

    /// Forgets the repository list (one was made or removed).
    pub(super) fn forget_repositories(&self) {
        self.repos.remove(&());
    }

    /// Forgets `repo`'s tags.
    pub(super) fn forget_tags(&self, repo: &RepoRef) {
        self.tags.remove(repo);
    }

    /// Forgets `repo`'s image list.
    pub(super) fn forget_repo_images(&self, repo: &RepoRef) {
        self.repo_images.remove(repo);
    }

    // Both are facts of complete images, which never change: the disk cache keeps them, so a
    // later mount can reach cached layers with the registry away.

    pub(super) async fn image(&self, id: &ImageId) -> Result<Arc<ImageInfo>> {
        self.images
            .get_or_fetch(id, async {
                if let Some(disk) = &self.disk {
                    if let Some(info) = disk.image(id).await {
                        return Ok(Arc::new(info));
                    }
                }
                let info = self.backend.image(id).await.map_err(absent)?;
                if let Some(disk) = &self.disk {
                    disk.store_image(id, &info);
                }
                Ok(Arc::new(info))
            })
            .await
    }

    pub(super) async fn image_ancestry(&self, id: &ImageId) -> Result<Arc<Vec<ImageId>>> {
        self.ancestry
            .get_or_fetch(id, async {
                if let Some(disk) = &self.disk {
                    if let Some(ids) = disk.ancestry(id).await {
                        return Ok(Arc::new(ids));
                    }
                }
                let ids = self.backend.ancestry(id).await.map_err(absent)?;
                if let Some(disk) = &self.disk {
                    disk.store_ancestry(id, &ids);
                }
                Ok(Arc::new(ids))
            })
            .await
    }

    pub(super) async fn repositories(&self) -> Result<Arc<Vec<RepoRef>>> {
        self.repos
            .get_or_fetch(&(), async {
                Ok(Arc::new(self.backend.repositories().await?))
            })
            .await
    }

    pub(super) async fn repo_tags(&self, repo: &RepoRef) -> Result<Arc<BTreeMap<Tag, ListedTag>>> {
        self.tags
            .get_or_fetch(repo, async {
                self.backend.tags(repo).await.map(Arc::new).map_err(absent)
            })
            .await
    }

    pub(super) async fn repo_image_list(&self, repo: &RepoRef) -> Result<Arc<Vec<ImageId>>> {
        self.repo_images
            .get_or_fetch(repo, async {
                self.backend
                    .repo_images(repo)
                    .await
                    .map(Arc::new)
                    .map_err(absent)
            })
            .await
    }

    pub(super) async fn search_content(&self, term: &str) -> Result<Bytes> {
        let key = term.to_string();
        self.search
            .get_or_fetch(&key, async {
                let results = self.backend.search(term).await?;
                let mut out = String::new();
                for r in results {
                    out.push_str(&r.name);
                    out.push('\t');
                    out.push_str(&r.description.replace(['\n', '\t'], " "));
                    out.push('\n');
                }
                Ok::<_, FsError>(Bytes::from(out))
            })
            .await
    }
}
