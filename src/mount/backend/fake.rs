//! An in-memory registry behind the backend seam, so the filesystem logic is tested with no
//! server at all: built only with the `fault-injection` feature (the tests turn it on), never
//! in a release binary.
//!
//! It keeps what a v1 registry keeps (repositories with tags and image lists, images with json,
//! layer and completeness) and answers as one does: an image is served once its checksum,
//! `sha256(json + "\n" + layer)`, is confirmed, and a tag needs a complete image. A test can
//! make every call fail with a given error ([`FakeBackend::fail_with`]) and count the layer
//! reads that reached the "registry" ([`FakeBackend::layer_reads`]).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{BackendError, ImageInfo, LayerBody, ListedTag, RegistryBackend, Result};
use crate::mount::lock;
use crate::names::{ImageId, RepoRef, Tag};
use crate::v1::SearchResult;

/// `created` of every image [`FakeBackend::add_image`] makes: 2014-10-01T00:00:00Z.
pub const CREATED: &str = "2014-10-01T00:00:00Z";

#[derive(Debug, Default)]
struct FakeImage {
    json: Option<Bytes>,
    layer: Option<Bytes>,
    parent: Option<ImageId>,
    complete: bool,
}

#[derive(Debug, Default)]
struct FakeRepo {
    tags: BTreeMap<Tag, ImageId>,
    images: Vec<ImageId>,
}

#[derive(Debug, Default)]
struct State {
    repos: BTreeMap<RepoRef, FakeRepo>,
    images: HashMap<ImageId, FakeImage>,
    /// When set, every call fails with it (the registry down, or refusing everything).
    failure: Option<BackendError>,
}

/// A registry held in memory.
#[derive(Debug, Default)]
pub struct FakeBackend {
    user: Option<String>,
    state: Mutex<State>,
    layer_reads: AtomicU64,
}

impl FakeBackend {
    /// An empty registry, used anonymously (writes are refused by the filesystem).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry, used as `user` (with credentials, so writes are allowed).
    pub fn with_user(user: &str) -> Self {
        FakeBackend {
            user: Some(user.to_string()),
            ..Self::default()
        }
    }

    /// Adds a complete image with `layer` and `parent` (which must have been added first);
    /// its json is `{"id", "parent", "created"}`. Returns the json.
    pub fn add_image(&self, id: &ImageId, parent: Option<&ImageId>, layer: Bytes) -> Bytes {
        let mut json = serde_json::json!({ "id": id.as_str(), "created": CREATED });
        if let Some(p) = parent {
            json["parent"] = serde_json::Value::from(p.as_str());
        }
        let json = Bytes::from(json.to_string());
        lock(&self.state).images.insert(
            id.clone(),
            FakeImage {
                json: Some(json.clone()),
                layer: Some(layer),
                parent: parent.cloned(),
                complete: true,
            },
        );
        json
    }

    /// Points `tag` of `repo` at `id` and adds its ancestry to the repository's image list,
    /// as a push does.
    pub fn tag(&self, repo: &RepoRef, tag: &Tag, id: &ImageId) {
        let mut state = lock(&self.state);
        let ancestry = ancestry_of(&state, id).unwrap_or_default();
        let r = state.repos.entry(repo.clone()).or_default();
        r.tags.insert(tag.clone(), id.clone());
        for i in ancestry {
            if !r.images.contains(&i) {
                r.images.push(i);
            }
        }
    }

    /// Where `tag` of `repo` points, if it exists.
    pub fn tag_target(&self, repo: &RepoRef, tag: &Tag) -> Option<ImageId> {
        lock(&self.state).repos.get(repo)?.tags.get(tag).cloned()
    }

    /// Whether the registry holds `repo`.
    pub fn has_repo(&self, repo: &RepoRef) -> bool {
        lock(&self.state).repos.contains_key(repo)
    }

    /// The json and layer of complete image `id`.
    pub fn complete_image(&self, id: &ImageId) -> Option<(Bytes, Bytes)> {
        let state = lock(&self.state);
        let image = state.images.get(id).filter(|i| i.complete)?;
        Some((image.json.clone()?, image.layer.clone()?))
    }

    /// Makes every later call fail with `error`, or work again with `None`.
    pub fn fail_with(&self, error: Option<BackendError>) {
        lock(&self.state).failure = error;
    }

    /// Layer range reads answered so far (failed ones included).
    pub fn layer_reads(&self) -> u64 {
        self.layer_reads.load(Ordering::Relaxed)
    }

    /// The state, or the failure every call is set to give.
    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        let state = lock(&self.state);
        match &state.failure {
            Some(e) => Err(e.clone()),
            None => Ok(state),
        }
    }
}

/// The ancestry of complete image `id`, the image first.
fn ancestry_of(state: &State, id: &ImageId) -> Result<Vec<ImageId>> {
    let mut out = Vec::new();
    let mut at = Some(id.clone());
    while let Some(i) = at {
        let image = state
            .images
            .get(&i)
            .filter(|im| im.complete)
            .ok_or(BackendError::NotFound)?;
        if out.contains(&i) {
            return Err(BackendError::Protocol("ancestry loops".into()));
        }
        at = image.parent.clone();
        out.push(i);
    }
    Ok(out)
}

#[async_trait]
impl RegistryBackend for FakeBackend {
    fn location(&self) -> &str {
        "fake://registry"
    }

    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    async fn check_access(&self, _limit: Duration) -> Result<()> {
        self.state().map(|_| ())
    }

    async fn ping(&self) -> Result<()> {
        self.state().map(|_| ())
    }

    async fn repositories(&self) -> Result<Vec<RepoRef>> {
        Ok(self.state()?.repos.keys().cloned().collect())
    }

    async fn search(&self, term: &str) -> Result<Vec<SearchResult>> {
        Ok(self
            .state()?
            .repos
            .keys()
            .filter(|r| r.to_string().contains(term))
            .map(|r| SearchResult {
                name: r.to_string(),
                description: String::new(),
            })
            .collect())
    }

    async fn tags(&self, repo: &RepoRef) -> Result<BTreeMap<Tag, ListedTag>> {
        let state = self.state()?;
        let r = state.repos.get(repo).ok_or(BackendError::NotFound)?;
        Ok(r.tags
            .iter()
            .map(|(t, id)| {
                let listed = ListedTag {
                    id: id.clone(),
                    updated: None,
                };
                (t.clone(), listed)
            })
            .collect())
    }

    async fn repo_images(&self, repo: &RepoRef) -> Result<Vec<ImageId>> {
        let state = self.state()?;
        let r = state.repos.get(repo).ok_or(BackendError::NotFound)?;
        Ok(r.images.clone())
    }

    async fn image(&self, id: &ImageId) -> Result<ImageInfo> {
        let state = self.state()?;
        let image = state
            .images
            .get(id)
            .filter(|i| i.complete)
            .ok_or(BackendError::NotFound)?;
        let (Some(json), Some(layer)) = (&image.json, &image.layer) else {
            return Err(BackendError::NotFound);
        };
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| BackendError::Protocol(e.to_string()))?;
        let created = value
            .get("created")
            .and_then(|c| c.as_str())
            .and_then(|c| humantime::parse_rfc3339_weak(c.trim_end_matches('Z')).ok());
        Ok(ImageInfo {
            json: json.clone(),
            layer_size: layer.len() as u64,
            parent: image.parent.clone(),
            created,
        })
    }

    async fn ancestry(&self, id: &ImageId) -> Result<Vec<ImageId>> {
        ancestry_of(&*self.state()?, id)
    }

    async fn layer_range_into(
        &self,
        id: &ImageId,
        range: Range<u64>,
        buf: Option<BytesMut>,
    ) -> Result<Bytes> {
        self.layer_reads.fetch_add(1, Ordering::Relaxed);
        let state = self.state()?;
        let layer = state
            .images
            .get(id)
            .filter(|i| i.complete)
            .and_then(|i| i.layer.as_ref())
            .ok_or(BackendError::NotFound)?;
        if range.start > range.end || range.end > layer.len() as u64 {
            return Err(BackendError::Protocol("short range read".into()));
        }
        let mut buf = buf.unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&layer[range.start as usize..range.end as usize]);
        Ok(buf.freeze())
    }

    async fn create_repo(&self, repo: &RepoRef) -> Result<()> {
        self.state()?.repos.entry(repo.clone()).or_default();
        Ok(())
    }

    async fn delete_repo(&self, repo: &RepoRef) -> Result<()> {
        self.state()?
            .repos
            .remove(repo)
            .map(|_| ())
            .ok_or(BackendError::NotFound)
    }

    async fn put_tag(&self, repo: &RepoRef, tag: &Tag, id: &ImageId) -> Result<()> {
        let mut state = self.state()?;
        if !state.images.get(id).is_some_and(|i| i.complete) {
            return Err(BackendError::NotFound);
        }
        let r = state.repos.entry(repo.clone()).or_default();
        r.tags.insert(tag.clone(), id.clone());
        Ok(())
    }

    async fn delete_tag(&self, repo: &RepoRef, tag: &Tag) -> Result<()> {
        self.state()?
            .repos
            .get_mut(repo)
            .and_then(|r| r.tags.remove(tag))
            .map(|_| ())
            .ok_or(BackendError::NotFound)
    }

    async fn add_repo_images(&self, repo: &RepoRef, ids: &[ImageId]) -> Result<()> {
        let mut state = self.state()?;
        let r = state.repos.entry(repo.clone()).or_default();
        for id in ids {
            if !r.images.contains(id) {
                r.images.push(id.clone());
            }
        }
        Ok(())
    }

    async fn put_image_json(&self, id: &ImageId, json: Bytes) -> Result<()> {
        let mut state = self.state()?;
        if state.images.get(id).is_some_and(|i| i.complete) {
            return Err(BackendError::Conflict);
        }
        let value: serde_json::Value =
            serde_json::from_slice(&json).map_err(|_| BackendError::Refused("bad json".into()))?;
        let parent = match value.get("parent").and_then(|p| p.as_str()) {
            Some(p) => Some(
                p.parse::<ImageId>()
                    .map_err(|_| BackendError::Refused("bad parent".into()))?,
            ),
            None => None,
        };
        let image = state.images.entry(id.clone()).or_default();
        image.json = Some(json);
        image.parent = parent;
        Ok(())
    }

    async fn put_layer(&self, id: &ImageId, mut body: LayerBody) -> Result<()> {
        if !lock(&self.state).images.contains_key(id) {
            return Err(BackendError::NotFound);
        }
        // Read before taking the state: the body is fed by writes that may need it.
        let mut layer = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BackendError::Transport(e.to_string()))?;
            layer.extend_from_slice(&chunk);
        }
        let mut state = self.state()?;
        let image = state.images.get_mut(id).ok_or(BackendError::NotFound)?;
        image.layer = Some(layer.freeze());
        Ok(())
    }

    async fn put_checksum(&self, id: &ImageId, payload: &str) -> Result<()> {
        let mut state = self.state()?;
        let image = state.images.get_mut(id).ok_or(BackendError::NotFound)?;
        if image.complete {
            return Err(BackendError::Conflict);
        }
        let (Some(json), Some(layer)) = (&image.json, &image.layer) else {
            return Err(BackendError::Refused("image not uploaded".into()));
        };
        let mut hash = Sha256::new();
        hash.update(json);
        hash.update(b"\n");
        hash.update(layer);
        if payload != format!("sha256:{}", hex::encode(hash.finalize())) {
            return Err(BackendError::Refused("Checksum mismatch".into()));
        }
        image.complete = true;
        Ok(())
    }
}
