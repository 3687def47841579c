//! A typed client of the v1 API, used by the mount as its v1 [`RegistryBackend`]. It shares names and JSON shapes with the
//! server ([`crate::names`], [`crate::v1`]), so the two cannot disagree on what a valid tag or a
//! search result is.
//!
//! One pooled `reqwest::Client` serves every call (keep-alive, parallel connections for ranged
//! reads). Idempotent reads are retried with exponential back-off on connection errors and 5xx,
//! within the overall `timeout`, so a registry that blinks does not fail a `cat`. (Layer reads
//! of the registry this process serves itself skip HTTP: see the mount's embedded backend.)
//!
//! Memory stays bounded whatever the registry sends: a layer GET answered whole (a registry
//! that ignores `Range`) is streamed through, keeping only the window asked for, and the body
//! is kept open for the next block ([`WholeBodies`]) rather than read again from its start;
//! error bodies are read up to [`ERROR_BODY_LIMIT`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use reqwest::{Method, StatusCode};

pub use crate::mount::backend::{BackendError as ClientError, ImageInfo, ListedTag};
use crate::mount::backend::{LayerBody, RegistryBackend, retry_range};
use crate::names::{ImageId, RepoRef, Tag};
use crate::v1;

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Largest JSON answer read whole (a listing of many tags or repositories).
const JSON_LIMIT: usize = 64 * 1024 * 1024;

/// Most of an error answer's body read (for its message); the rest is left unread.
pub const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Most whole layer bodies kept open at once, and how long one may wait for its next block.
const WHOLE_BODIES_KEPT: usize = 8;
const WHOLE_BODY_IDLE: Duration = Duration::from_secs(10);

/// Settings of a client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `http://127.0.0.1:5000`.
    pub url: String,
    /// Basic credentials.
    pub credentials: Option<(String, String)>,
    /// Longest time one call may take, retries included.
    pub timeout: Duration,
}

/// A v1 registry.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
    credentials: Option<(String, String)>,
    timeout: Duration,
    /// Layer bodies a registry that ignores `Range` sent whole, open where the last block
    /// read from them ended.
    whole: Arc<WholeBodies>,
}

impl RegistryClient {
    pub fn new(config: ClientConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("regfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(RegistryClient {
            base: config.url.trim_end_matches('/').to_string(),
            http,
            credentials: config.credentials,
            timeout: config.timeout,
            whole: Arc::default(),
        })
    }

    /// Longest time one call may take, retries included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The registry's URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{}", self.base, path));
        match &self.credentials {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    /// Sends an idempotent request, retrying transient failures until the deadline.
    async fn send_retrying(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        self.send_retrying_until(build, Instant::now() + self.timeout)
            .await
    }

    /// [`Self::send_retrying`] within a deadline the caller already runs under, so retries
    /// around it never extend it.
    async fn send_retrying_until(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<reqwest::Response> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            let attempt = tokio::time::timeout(left, build().send()).await;
            let err = match attempt {
                Err(_) => ClientError::Timeout,
                Ok(Err(e)) => transport(e),
                Ok(Ok(res)) => match check(res).await {
                    Ok(res) => return Ok(res),
                    Err(e) => e,
                },
            };
            if !err.retryable() || Instant::now() + backoff >= deadline {
                return Err(err);
            }
            tracing::debug!(error = %err, ?backoff, "retrying registry call");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response> {
        self.send_retrying(|| self.request(Method::GET, path)).await
    }

    async fn get_body(
        &self,
        path: &str,
        limit: usize,
    ) -> Result<(reqwest::header::HeaderMap, Bytes)> {
        self.fetch_body(|| self.request(Method::GET, path), limit)
            .await
    }

    /// Sends an idempotent request and reads its whole body, within one deadline.
    async fn fetch_body(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<(reqwest::header::HeaderMap, Bytes)> {
        let deadline = Instant::now() + self.timeout;
        let res = self.send_retrying(build).await?;
        let headers = res.headers().clone();
        let left = deadline.saturating_duration_since(Instant::now());
        let body = tokio::time::timeout(left, read_limited(res, limit, BytesMut::new()))
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok((headers, body))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let (_, body) = self.get_body(path, JSON_LIMIT).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Checks that the registry answers.
    pub async fn ping(&self) -> Result<()> {
        self.get("/v1/_ping").await.map(|_| ())
    }

    /// The user this client authenticates as, if any.
    pub fn user(&self) -> Option<&str> {
        self.credentials.as_ref().map(|(u, _)| u.as_str())
    }

    /// Checks, within `limit`, that the registry answers and accepts this client's
    /// credentials: the v1 login check (`GET /v1/users/`) with credentials, `GET /v1/_ping`
    /// (or `/_ping`) without. A refusal of the credentials is [`ClientError::Unauthorized`]
    /// or [`ClientError::Forbidden`].
    pub async fn check_access(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit.min(self.timeout);
        if self.credentials.is_some() {
            return self
                .send_retrying_until(|| self.request(Method::GET, "/v1/users/"), deadline)
                .await
                .map(|_| ());
        }
        match self
            .send_retrying_until(|| self.request(Method::GET, "/v1/_ping"), deadline)
            .await
        {
            Err(ClientError::NotFound) => self
                .send_retrying_until(|| self.request(Method::GET, "/_ping"), deadline)
                .await
                .map(|_| ()),
            other => other.map(|_| ()),
        }
    }

    /// Every repository (search with no query).
    pub async fn repositories(&self) -> Result<Vec<RepoRef>> {
        let res: v1::SearchResponse = self.get_json("/v1/search").await?;
        Ok(res
            .results
            .iter()
            .filter_map(|r| RepoRef::parse_full(&r.name).ok())
            .collect())
    }

    /// Search results for a term.
    pub async fn search(&self, term: &str) -> Result<Vec<v1::SearchResult>> {
        let q: String = url_encode(term);
        let res: v1::SearchResponse = self.get_json(&format!("/v1/search?q={q}")).await?;
        Ok(res.results)
    }

    /// A repository's tags, with the time each last changed where the registry lists it.
    pub async fn tags(&self, repo: &RepoRef) -> Result<BTreeMap<Tag, ListedTag>> {
        let path = format!("/v1/repositories/{repo}/tags");
        let accept = format!("{}, application/json;q=0.9", v1::TAGS_WITH_TIMES);
        let (headers, body) = self
            .fetch_body(
                || {
                    self.request(Method::GET, &path)
                        .header(reqwest::header::ACCEPT, &accept)
                },
                JSON_LIMIT,
            )
            .await?;
        let with_times = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(v1::TAGS_WITH_TIMES));
        let protocol = |e: serde_json::Error| ClientError::Protocol(e.to_string());
        let listed: Vec<(String, String, Option<i64>)> = if with_times {
            let raw: BTreeMap<String, v1::ListedTag> =
                serde_json::from_slice(&body).map_err(protocol)?;
            raw.into_iter()
                .map(|(t, l)| (t, l.id, l.last_update))
                .collect()
        } else {
            let raw: BTreeMap<String, String> = serde_json::from_slice(&body).map_err(protocol)?;
            raw.into_iter().map(|(t, id)| (t, id, None)).collect()
        };
        Ok(listed
            .into_iter()
            .filter_map(|(t, id, updated)| {
                let updated = updated
                    .and_then(|s| u64::try_from(s).ok())
                    .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
                let id = id.parse().ok()?;
                Some((t.parse().ok()?, ListedTag { id, updated }))
            })
            .collect())
    }

    /// A repository's image list.
    pub async fn repo_images(&self, repo: &RepoRef) -> Result<Vec<ImageId>> {
        let raw: Vec<v1::ImageEntry> = self
            .get_json(&format!("/v1/repositories/{repo}/images"))
            .await?;
        Ok(raw.into_iter().filter_map(|e| e.id.parse().ok()).collect())
    }

    /// The json and layer size of a complete image.
    pub async fn image(&self, id: &ImageId) -> Result<ImageInfo> {
        let (headers, json) = self
            .get_body(&format!("/v1/images/{id}/json"), 16 * 1024 * 1024)
            .await?;
        let layer_size = headers
            .get(v1::HEADER_SIZE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let layer_size = match layer_size {
            Some(s) => s,
            None => self.layer_size(id).await?,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&json).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let parent = value
            .get("parent")
            .and_then(|p| p.as_str())
            .and_then(|p| p.parse().ok());
        let created = value
            .get("created")
            .and_then(|c| c.as_str())
            .and_then(|c| humantime::parse_rfc3339_weak(c.trim_end_matches('Z')).ok());
        Ok(ImageInfo {
            json,
            layer_size,
            parent,
            created,
        })
    }

    /// The layer size from a HEAD, for registries that send no `X-Docker-Size`.
    async fn layer_size(&self, id: &ImageId) -> Result<u64> {
        let path = format!("/v1/images/{id}/layer");
        let res = self
            .send_retrying(|| self.request(Method::HEAD, &path))
            .await?;
        res.headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::Protocol("no layer size".into()))
    }

    /// An image's ancestry, the image first.
    pub async fn ancestry(&self, id: &ImageId) -> Result<Vec<ImageId>> {
        let raw: Vec<String> = self.get_json(&format!("/v1/images/{id}/ancestry")).await?;
        raw.iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| ClientError::Protocol("bad ancestry".into()))
            })
            .collect()
    }

    /// Bytes `range` of a layer.
    pub async fn layer_range(&self, id: &ImageId, range: Range<u64>) -> Result<Bytes> {
        self.layer_range_into(id, range, None).await
    }

    /// Bytes `range` of a layer, received into `buf` when it is given (its contents are
    /// dropped). Reusing a buffer whose pages are already mapped saves the page faults and
    /// zeroing of a fresh one, a large part of a cold read's cost.
    pub async fn layer_range_into(
        &self,
        id: &ImageId,
        range: Range<u64>,
        buf: Option<BytesMut>,
    ) -> Result<Bytes> {
        retry_range(&range, self.timeout, buf, |into, deadline| {
            self.http_range(id, &range, into, deadline)
        })
        .await
    }

    /// One ranged GET of a layer, its body read into `into` by `deadline`. A registry that
    /// answers 200 with the whole layer is read through to the window (never more than the
    /// window is held), and the body is kept open for the next block.
    async fn http_range(
        &self,
        id: &ImageId,
        range: &Range<u64>,
        mut into: BytesMut,
        deadline: Instant,
    ) -> Result<Bytes> {
        let left = || deadline.saturating_duration_since(Instant::now());
        if let Some(mut body) = self.whole.take(id, range.start) {
            match tokio::time::timeout(left(), body.read(range, &mut into)).await {
                Ok(Ok(())) => {
                    let bytes = into.freeze();
                    self.whole.keep(body);
                    return Ok(bytes);
                }
                // Cut off while it waited (the registry's idle timeout): ask again.
                Ok(Err(error)) => {
                    tracing::debug!(%id, %error, "a kept layer body failed; asking again");
                    into = BytesMut::new();
                }
                Err(_) => return Err(ClientError::Timeout),
            }
        }
        let path = format!("/v1/images/{id}/layer");
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let want = (range.end - range.start) as usize;
        let res = self
            .send_retrying_until(
                || {
                    self.request(Method::GET, &path)
                        .header(reqwest::header::RANGE, &header)
                },
                deadline,
            )
            .await?;
        if res.status() != StatusCode::PARTIAL_CONTENT {
            // A registry that ignores Range sends the whole layer.
            let more = res.content_length().is_none_or(|n| n > range.end);
            let mut body = WholeBody::new(id.clone(), res);
            tokio::time::timeout(left(), body.read(range, &mut into))
                .await
                .map_err(|_| ClientError::Timeout)??;
            if more {
                self.whole.keep(body);
            }
            return Ok(into.freeze());
        }
        let body = tokio::time::timeout(left(), read_limited(res, want, into))
            .await
            .map_err(|_| ClientError::Timeout)??;
        if body.len() != want {
            return Err(ClientError::Protocol("short range read".into()));
        }
        Ok(body)
    }
}

/// A layer body sent whole, read forward from `pos`.
#[derive(Debug)]
struct WholeBody {
    id: ImageId,
    res: reqwest::Response,
    /// Bytes received but not yet consumed; they start at `pos`.
    pending: Bytes,
    pos: u64,
    idle_since: Instant,
}

impl WholeBody {
    fn new(id: ImageId, res: reqwest::Response) -> Self {
        WholeBody {
            id,
            res,
            pending: Bytes::new(),
            pos: 0,
            idle_since: Instant::now(),
        }
    }

    /// Reads bytes `range` (at or after `pos`) into `buf` (cleared first), skipping what lies
    /// before: only the window is held, whatever the layer's size.
    async fn read(&mut self, range: &Range<u64>, buf: &mut BytesMut) -> Result<()> {
        let want = (range.end - range.start) as usize;
        buf.clear();
        buf.reserve(want);
        while buf.len() < want {
            if self.pending.is_empty() {
                match self.res.chunk().await.map_err(transport)? {
                    Some(chunk) => self.pending = chunk,
                    None => return Err(ClientError::Protocol("short range read".into())),
                }
            }
            if self.pos < range.start {
                let skip = (range.start - self.pos).min(self.pending.len() as u64);
                self.pending.advance(skip as usize);
                self.pos += skip;
                continue;
            }
            let take = (want - buf.len()).min(self.pending.len());
            buf.extend_from_slice(&self.pending.split_to(take));
            self.pos += take as u64;
        }
        Ok(())
    }
}

/// Open whole layer bodies, bounded in number and idle time. Read-ahead asks for several
/// blocks at once, so a layer may have several bodies open, each at another offset; a block
/// takes the one closest before it.
#[derive(Debug, Default)]
struct WholeBodies(Mutex<Vec<WholeBody>>);

impl WholeBodies {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WholeBody>> {
        // Each update is one push or remove: a poisoned list is still consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The body of layer `id` open at or before offset `start`, nearest to it.
    fn take(&self, id: &ImageId, start: u64) -> Option<WholeBody> {
        let mut bodies = self.lock();
        bodies.retain(|b| b.idle_since.elapsed() < WHOLE_BODY_IDLE);
        let at = bodies
            .iter()
            .enumerate()
            .filter(|(_, b)| b.id == *id && b.pos <= start)
            .max_by_key(|(_, b)| b.pos)
            .map(|(i, _)| i)?;
        Some(bodies.swap_remove(at))
    }

    /// Keeps `body` for a later block, dropping (and so disconnecting) the longest idle one
    /// when full.
    fn keep(&self, mut body: WholeBody) {
        body.idle_since = Instant::now();
        let mut bodies = self.lock();
        bodies.retain(|b| b.idle_since.elapsed() < WHOLE_BODY_IDLE);
        if bodies.len() >= WHOLE_BODIES_KEPT {
            if let Some(oldest) = bodies
                .iter()
                .enumerate()
                .min_by_key(|(_, b)| b.idle_since)
                .map(|(i, _)| i)
            {
                bodies.swap_remove(oldest);
            }
        }
        bodies.push(body);
    }
}

/// Writes. Each is idempotent (PUT and DELETE of named things), so transient failures are
/// retried like reads.
impl RegistryClient {
    /// Whether this client sends credentials at all.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    async fn send_json(&self, method: Method, path: &str, body: Option<String>) -> Result<()> {
        self.send_retrying(|| {
            let rb = self.request(method.clone(), path);
            match &body {
                Some(b) => rb
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone()),
                None => rb,
            }
        })
        .await
        .map(|_| ())
    }

    /// Creates a repository (a re-push of an existing one is fine).
    pub async fn create_repo(&self, repo: &RepoRef) -> Result<()> {
        self.send_json(
            Method::PUT,
            &format!("/v1/repositories/{repo}/"),
            Some("[]".into()),
        )
        .await
    }

    /// Deletes a repository (tags and image list; images stay).
    pub async fn delete_repo(&self, repo: &RepoRef) -> Result<()> {
        self.send_json(Method::DELETE, &format!("/v1/repositories/{repo}/"), None)
            .await
    }

    /// Points a tag at an image.
    pub async fn put_tag(&self, repo: &RepoRef, tag: &Tag, id: &ImageId) -> Result<()> {
        self.send_json(
            Method::PUT,
            &format!("/v1/repositories/{repo}/tags/{tag}"),
            Some(format!("\"{id}\"")),
        )
        .await
    }

    /// Deletes a tag.
    pub async fn delete_tag(&self, repo: &RepoRef, tag: &Tag) -> Result<()> {
        self.send_json(
            Method::DELETE,
            &format!("/v1/repositories/{repo}/tags/{tag}"),
            None,
        )
        .await
    }

    /// Starts an image push with its json (`PUT /v1/images/<id>/json`).
    pub async fn put_image_json(&self, id: &ImageId, json: Bytes) -> Result<()> {
        let path = format!("/v1/images/{id}/json");
        self.send_retrying(|| {
            self.request(Method::PUT, &path)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json.clone())
        })
        .await
        .map(|_| ())
    }

    /// Uploads a layer from a stream of chunks (`PUT /v1/images/<id>/layer`, chunked). Not
    /// retried: the stream cannot be replayed; the caller retries the push.
    pub async fn put_layer(&self, id: &ImageId, body: reqwest::Body) -> Result<()> {
        let path = format!("/v1/images/{id}/layer");
        let res = self
            .request(Method::PUT, &path)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        check(res).await.map(|_| ())
    }

    /// Completes an image push with the payload checksum.
    pub async fn put_checksum(&self, id: &ImageId, payload: &str) -> Result<()> {
        let path = format!("/v1/images/{id}/checksum");
        self.send_retrying(|| {
            self.request(Method::PUT, &path)
                .header(v1::HEADER_CHECKSUM_PAYLOAD, payload)
        })
        .await
        .map(|_| ())
    }

    /// Adds images to a repository's image list.
    pub async fn add_repo_images(&self, repo: &RepoRef, ids: &[ImageId]) -> Result<()> {
        let entries: Vec<v1::ImageEntry> = ids
            .iter()
            .map(|id| v1::ImageEntry {
                id: id.to_string(),
                checksum: None,
            })
            .collect();
        let body =
            serde_json::to_string(&entries).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.send_json(
            Method::PUT,
            &format!("/v1/repositories/{repo}/images"),
            Some(body),
        )
        .await
    }
}

/// The v1 protocol over HTTP, as the mount's backend: each call is the inherent method of the
/// same name.
#[async_trait::async_trait]
impl RegistryBackend for RegistryClient {
    fn location(&self) -> &str {
        self.base_url()
    }

    fn user(&self) -> Option<&str> {
        RegistryClient::user(self)
    }

    fn has_credentials(&self) -> bool {
        RegistryClient::has_credentials(self)
    }

    async fn check_access(&self, limit: Duration) -> Result<()> {
        RegistryClient::check_access(self, limit).await
    }

    async fn ping(&self) -> Result<()> {
        RegistryClient::ping(self).await
    }

    async fn repositories(&self) -> Result<Vec<RepoRef>> {
        RegistryClient::repositories(self).await
    }

    async fn search(&self, term: &str) -> Result<Vec<v1::SearchResult>> {
        RegistryClient::search(self, term).await
    }

    async fn tags(&self, repo: &RepoRef) -> Result<BTreeMap<Tag, ListedTag>> {
        RegistryClient::tags(self, repo).await
    }

    async fn repo_images(&self, repo: &RepoRef) -> Result<Vec<ImageId>> {
        RegistryClient::repo_images(self, repo).await
    }

    async fn image(&self, id: &ImageId) -> Result<ImageInfo> {
        RegistryClient::image(self, id).await
    }

    async fn ancestry(&self, id: &ImageId) -> Result<Vec<ImageId>> {
        RegistryClient::ancestry(self, id).await
    }

    async fn layer_range_into(
        &self,
        id: &ImageId,
        range: Range<u64>,
        buf: Option<BytesMut>,
    ) -> Result<Bytes> {
        RegistryClient::layer_range_into(self, id, range, buf).await
    }

    async fn create_repo(&self, repo: &RepoRef) -> Result<()> {
        RegistryClient::create_repo(self, repo).await
    }

    async fn delete_repo(&self, repo: &RepoRef) -> Result<()> {
        RegistryClient::delete_repo(self, repo).await
    }

    async fn put_tag(&self, repo: &RepoRef, tag: &Tag, id: &ImageId) -> Result<()> {
        RegistryClient::put_tag(self, repo, tag, id).await
    }

    async fn delete_tag(&self, repo: &RepoRef, tag: &Tag) -> Result<()> {
        RegistryClient::delete_tag(self, repo, tag).await
    }

    async fn add_repo_images(&self, repo: &RepoRef, ids: &[ImageId]) -> Result<()> {
        RegistryClient::add_repo_images(self, repo, ids).await
    }

    async fn put_image_json(&self, id: &ImageId, json: Bytes) -> Result<()> {
        RegistryClient::put_image_json(self, id, json).await
    }

    async fn put_layer(&self, id: &ImageId, body: LayerBody) -> Result<()> {
        RegistryClient::put_layer(self, id, reqwest::Body::wrap_stream(body)).await
    }

    async fn put_checksum(&self, id: &ImageId, payload: &str) -> Result<()> {
        RegistryClient::put_checksum(self, id, payload).await
    }
}

fn transport(e: reqwest::Error) -> ClientError {
    if e.is_timeout() {
        return ClientError::Timeout;
    }
    // reqwest's own text names only the URL; the innermost cause says what went wrong
    // ("Connection refused", a failed name lookup).
    let mut cause: &dyn std::error::Error = &e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if std::ptr::addr_eq(cause, &e) {
        ClientError::Transport(e.to_string())
    } else {
        ClientError::Transport(format!("{e}: {cause}"))
    }
}

/// Maps a status to an error; success passes through.
async fn check(res: reqwest::Response) -> Result<reqwest::Response> {
    let status = res.status();
    if status.is_success() {
        return Ok(res);
    }
    if let Some(err) = status_error(status) {
        return Err(err);
    }
    let body = read_error_body(res).await;
    let msg = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| status.to_string());
    Err(ClientError::Refused(msg))
}

/// At most [`ERROR_BODY_LIMIT`] bytes of an error answer's body; the rest is left unread (the
/// connection is then closed rather than reused). A body that fails part-way gives what came.
async fn read_error_body(mut res: reqwest::Response) -> Bytes {
    let mut body = BytesMut::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        let room = ERROR_BODY_LIMIT - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= ERROR_BODY_LIMIT {
            break;
        }
    }
    body.freeze()
}

/// The error of a failed status, where the status alone tells it (else the registry's
/// message does: [`ClientError::Refused`]).
pub(crate) fn status_error(status: StatusCode) -> Option<ClientError> {
    Some(match status {
        StatusCode::NOT_FOUND => ClientError::NotFound,
        StatusCode::UNAUTHORIZED => ClientError::Unauthorized,
        StatusCode::FORBIDDEN => ClientError::Forbidden,
        StatusCode::CONFLICT => ClientError::Conflict,
        s if s.is_server_error() => ClientError::Server(s.as_u16()),
        _ => return None,
    })
}

/// Reads a body into `buf` (after clearing it), refusing more than `limit` bytes.
async fn read_limited(
    mut res: reqwest::Response,
    limit: usize,
    mut buf: BytesMut,
) -> Result<Bytes> {
    let cap = res
        .content_length()
        .map(|n| n as usize)
        .unwrap_or(0)
        .min(limit)
        .min(64 * 1024 * 1024);
    buf.clear();
    buf.reserve(cap);
    while let Some(chunk) = res.chunk().await.map_err(transport)? {
        if buf.len() + chunk.len() > limit {
            return Err(ClientError::Protocol(
                "response larger than expected".into(),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error answer whose body never ends: only its first [`ERROR_BODY_LIMIT`] bytes are
    /// read, so the call fails at once with the status rather than reading (and holding)
    /// until the timeout.
    #[tokio::test]
    async fn error_bodies_are_read_up_to_the_limit() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request).await;
            let head = "HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n";
            conn.write_all(head.as_bytes()).await.unwrap();
            let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
            while conn.write_all(chunk.as_bytes()).await.is_ok() {}
        });
        let client = RegistryClient::new(ClientConfig {
            url: format!("http://{addr}"),
            credentials: None,
            timeout: Duration::from_secs(30),
        })
        .unwrap();
        // A bounded wait, not a timing check: reading the whole body would never end.
        let got = tokio::time::timeout(Duration::from_secs(60), client.ping())
            .await
            .expect("the error body was read to its end");
        assert!(
            matches!(&got, Err(ClientError::Refused(m)) if m.contains("400")),
            "{got:?}"
        );
    }

    #[test]
    fn search_terms_are_percent_encoded() {
        assert_eq!(url_encode("a b/c&d"), "a%20b%2Fc%26d");
        assert_eq!(url_encode("ubuntu"), "ubuntu");
    }
}
