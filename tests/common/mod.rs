//! Shared test harness: a real server on 127.0.0.1:0 on its own thread and runtime, a client,
//! and image fixtures.
#![allow(dead_code)]

pub mod distribution;
pub mod fs;
pub mod mount;
pub mod process;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use regfs::server::ServeConfig;
use regfs::storage::{BlobStore, StorageConfig};
use sha2::{Digest, Sha256};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-secret";
/// A user the suites register through the API.
pub const ALICE: &str = "alice";
pub const ALICE_PASSWORD: &str = "alice-pass";

/// A running server. Stopped and joined on drop, so tests never leak one.
pub struct TestServer {
    pub addr: SocketAddr,
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Memory storage, an admin account, signup on.
    pub fn start() -> Self {
        Self::with_config(Self::config())
    }

    /// Local storage in `dir` (to test restarts), otherwise as [`TestServer::start`].
    pub fn on_disk(dir: &Path) -> Self {
        let mut cfg = Self::config();
        cfg.storage = StorageConfig::Local(dir.to_path_buf());
        Self::with_config(cfg)
    }

    pub fn config() -> ServeConfig {
        let mut cfg = ServeConfig::ephemeral();
        cfg.admin = Some((ADMIN.parse().unwrap(), ADMIN_PASSWORD.to_string()));
        cfg.token_secret = Some(b"test-secret-test-secret".to_vec());
        cfg
    }

    /// Runs the server on its own thread and runtime, so a test's blocking calls (or a FUSE
    /// mount's) can never starve it.
    pub fn with_config(cfg: ServeConfig) -> Self {
        Self::spawn(cfg, None)
    }

    /// A server over `store` (a wrapped one, say), otherwise as [`TestServer::start`].
    pub fn with_store(store: Arc<dyn BlobStore>) -> Self {
        Self::spawn(Self::config(), Some(store))
    }

    fn spawn(cfg: ServeConfig, store: Option<Arc<dyn BlobStore>>) -> Self {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let server = match store {
                        Some(store) => regfs::server::bind_with_store(&cfg, store).await,
                        None => regfs::server::bind(&cfg).await,
                    }
                    .unwrap();
                    addr_tx.send(server.local_addr()).unwrap();
                    let serve = server.serve(async {
                        let _ = shutdown_rx.await;
                    });
                    tokio::select! {
                        () = serve => {}
                        // A kill: in-flight requests are cut off where they are.
                        Ok(()) = kill_rx => {}
                    }
                });
                rt.shutdown_background();
            })
            .unwrap();
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("test server should start");
        TestServer {
            addr,
            url: format!("http://{addr}"),
            shutdown: Some(shutdown_tx),
            kill: Some(kill_tx),
            thread: Some(thread),
        }
    }

    /// Stops the server abruptly, as `kill -9` would: requests in flight are cut off.
    pub fn kill(mut self) {
        if let Some(tx) = self.kill.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// A server on `addr` over local storage in `dir` (a restart after a kill).
    pub fn restart(addr: SocketAddr, dir: &Path) -> Self {
        let mut cfg = Self::config();
        cfg.listen = addr;
        cfg.storage = StorageConfig::Local(dir.to_path_buf());
        Self::with_config(cfg)
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() && !std::thread::panicking() {
                panic!("test server should not panic");
            }
        }
    }
}

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Basic(String, String),
    Token(String),
    Raw(String),
}

impl Auth {
    pub fn admin() -> Self {
        Auth::Basic(ADMIN.into(), ADMIN_PASSWORD.into())
    }
    pub fn alice() -> Self {
        Auth::Basic(ALICE.into(), ALICE_PASSWORD.into())
    }
    pub fn basic(user: &str, password: &str) -> Self {
        Auth::Basic(user.into(), password.into())
    }
}

/// A thin client over reqwest with the v1 calls tests need.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
    /// The `{"error": ...}` message of a failed request.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {:?}", self.text()))
            .to_string()
    }
}

impl Client {
    /// A client of the registry at `url`.
    pub fn new(url: &str) -> Self {
        Client {
            base: url.to_string(),
            http: reqwest::Client::new(),
        }
    }

    pub fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        self.http.request(method, format!("{}{}", self.base, path))
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder, auth: &Auth) -> Resp {
        let rb = match auth {
            Auth::None => rb,
            Auth::Basic(u, p) => rb.basic_auth(u, Some(p)),
            Auth::Token(t) => rb.header("Authorization", format!("Token {t}")),
            Auth::Raw(h) => rb.header("Authorization", h.as_str()),
        };
        let res = rb.send().await.expect("request should reach the server");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.bytes().await.expect("body").to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, auth: &Auth) -> Resp {
        self.send(self.request("GET", path), auth).await
    }

    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>, auth: &Auth) -> Resp {
        self.send(self.request("PUT", path).body(body), auth).await
    }

    pub async fn delete(&self, path: &str, auth: &Auth) -> Resp {
        self.send(self.request("DELETE", path), auth).await
    }

    pub async fn register(&self, user: &str, password: &str) -> Resp {
        let body = serde_json::json!({"username": user, "password": password, "email": format!("{user}@example.com")});
        self.send(self.request("POST", "/v1/users/").json(&body), &Auth::None)
            .await
    }

    /// `PUT /v1/images/<id>/json` with the image's own json.
    pub async fn put_json(&self, image: &Image, auth: &Auth) -> Resp {
        let path = format!("/v1/images/{}/json", image.id);
        self.put(&path, image.json.clone(), auth).await
    }

    /// `PUT /v1/images/<id>/layer` with the image's whole layer.
    pub async fn put_layer(&self, image: &Image, auth: &Auth) -> Resp {
        let path = format!("/v1/images/{}/layer", image.id);
        self.put(&path, image.layer.clone(), auth).await
    }

    /// `PUT /v1/images/<id>/checksum` with the image's payload checksum.
    pub async fn put_checksum(&self, image: &Image, auth: &Auth) -> Resp {
        let path = format!("/v1/images/{}/checksum", image.id);
        let rb = self
            .request("PUT", &path)
            .header("X-Docker-Checksum-Payload", image.checksum());
        self.send(rb, auth).await
    }

    /// Pushes an image's json, layer and checksum, asserting each step succeeds.
    pub async fn push_image(&self, image: &Image, auth: &Auth) {
        let r = self.put_json(image, auth).await;
        assert_eq!(r.status, 200, "PUT json: {}", r.text());
        let r = self.put_layer(image, auth).await;
        assert_eq!(r.status, 200, "PUT layer: {}", r.text());
        let r = self.put_checksum(image, auth).await;
        assert_eq!(r.status, 200, "PUT checksum: {}", r.text());
    }

    /// Creates `repo` (`ns/name`), pushes the images in order and tags the last one.
    pub async fn push_repo(&self, repo: &str, images: &[Image], tag: &str, auth: &Auth) {
        let r = self
            .put(&format!("/v1/repositories/{repo}/"), "[]", auth)
            .await;
        assert_eq!(r.status, 200, "PUT repo: {}", r.text());
        for image in images {
            // As Docker does: an image that is already complete is skipped.
            let r = self
                .get(&format!("/v1/images/{}/json", image.id), auth)
                .await;
            if r.status != 200 {
                self.push_image(image, auth).await;
            }
        }
        let top = images.last().unwrap();
        let r = self
            .put(
                &format!("/v1/repositories/{repo}/tags/{tag}"),
                format!("\"{}\"", top.id),
                auth,
            )
            .await;
        assert_eq!(r.status, 200, "PUT tag: {}", r.text());
        let list: Vec<_> = images
            .iter()
            .map(|i| serde_json::json!({"id": i.id}))
            .collect();
        let r = self
            .put(
                &format!("/v1/repositories/{repo}/images"),
                serde_json::to_vec(&list).unwrap(),
                auth,
            )
            .await;
        assert_eq!(r.status, 204, "PUT images: {}", r.text());
    }

    /// Registers `user` (a 201), then pushes `repo` as that user, as [`Client::push_repo`].
    pub async fn push_as_new_user(
        &self,
        (user, password): (&str, &str),
        repo: &str,
        images: &[Image],
        tag: &str,
    ) {
        assert_eq!(self.register(user, password).await.status, 201);
        self.push_repo(repo, images, tag, &Auth::basic(user, password))
            .await;
    }

    /// Registers alice and pushes alice/app as her: `<prefix>-base` <- `<prefix>-child`, with
    /// layers of `base_len` and `child_len` bytes, `latest` -> the child. Returns both.
    pub async fn push_alice_app(
        &self,
        prefix: &str,
        base_len: usize,
        child_len: usize,
    ) -> (Image, Image) {
        let base = Image::new(&format!("{prefix}-base"), base_len);
        let child = Image::child(&format!("{prefix}-child"), &base, child_len);
        let images = [base.clone(), child.clone()];
        self.push_as_new_user((ALICE, ALICE_PASSWORD), "alice/app", &images, "latest")
            .await;
        (base, child)
    }
}

/// A test image: id, json bytes exactly as pushed, and layer bytes.
#[derive(Clone, Debug)]
pub struct Image {
    pub id: String,
    pub json: Vec<u8>,
    pub layer: Vec<u8>,
}

impl Image {
    /// A base image with a deterministic id and layer derived from `seed`.
    pub fn new(seed: &str, layer_len: usize) -> Self {
        Self::build(seed, None, layer_len)
    }

    /// A child of `parent`.
    pub fn child(seed: &str, parent: &Image, layer_len: usize) -> Self {
        Self::build(seed, Some(&parent.id), layer_len)
    }

    fn build(seed: &str, parent: Option<&str>, layer_len: usize) -> Self {
        let id = hex::encode(Sha256::digest(seed.as_bytes()));
        let json = match parent {
            Some(p) => format!(
                r#"{{"id":"{id}","parent":"{p}","created":"2014-10-01T00:00:00Z","container_config":{{"Cmd":null}}}}"#
            ),
            None => format!(r#"{{"id":"{id}","created":"2014-10-01T00:00:00Z"}}"#),
        };
        Image {
            id,
            json: json.into_bytes(),
            layer: layer_bytes(seed, layer_len),
        }
    }

    /// `sha256:` of json + "\n" + layer: the payload checksum.
    pub fn checksum(&self) -> String {
        let mut h = Sha256::new();
        h.update(&self.json);
        h.update(b"\n");
        h.update(&self.layer);
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

/// Deterministic pseudo-random bytes.
pub fn layer_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

/// `len` pseudo-random bytes (splitmix64): cheap enough in a debug build for tens of MiB,
/// which [`layer_bytes`] (a SHA-256 chain) is not.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A current-thread runtime, for a test that mostly makes blocking calls and sends a few
/// requests in between.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes `data` to a new file at `path`, then fsyncs it: through a mount, fsync reports the
/// result of the push (std does not report errors from close).
pub fn write_and_fsync(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Writes `data` to a new file at `path` and calls `cut` (which stops the registry) halfway:
/// the failure must show at a write or, at the latest, at fsync.
pub fn write_cut_short(path: &Path, data: &[u8], cut: impl FnOnce()) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let half = data.len() / 2;
    f.write_all(&data[..half]).unwrap();
    cut();
    // The rest goes nowhere.
    let rest = f.write_all(&data[half..]);
    let synced = f.sync_all();
    assert!(
        rest.is_err() || synced.is_err(),
        "the failed push was reported"
    );
}

/// Sends a request with its path exactly as given (HTTP clients normalise `..` away), and
/// returns the status and body.
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &[u8],
    extra_headers: &str,
) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(path);
    req.extend_from_slice(
        format!(" HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 2\r\n{extra_headers}\r\n{{}}").as_bytes(),
    );
    s.write_all(&req).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = match resp.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => resp[i + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}
