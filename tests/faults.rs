//! The server, and the mount's filesystem logic, over a store that fails on purpose
//! ([`FaultyStore`]): transient errors become 503 with `Retry-After` and clear up when the store
//! does, a GET cut short never looks complete, failed pushes publish nothing, and a long run
//! with random faults loses or corrupts no acknowledged image.

use std::sync::Arc;
use std::time::Duration;

use regfs::mount::{FsConfig, FsError, RegistryFs};
use regfs::names::ImageId;
use regfs::storage::faulty::{Fault, Faults, FaultyStore, Op};
use regfs::storage::{BlobStore, ObjectBackend, StorageError, keys};

use crate::common::fs::no_hang;
use crate::common::{ALICE, ALICE_PASSWORD, Auth, Client, Image, Resp, TestServer};

/// A healthy store and a directory it may live in.
struct Backing {
    store: Arc<dyn BlobStore>,
    dir: Option<tempfile::TempDir>,
}

fn memory() -> Backing {
    Backing {
        store: Arc::new(ObjectBackend::memory()),
        dir: None,
    }
}

fn local() -> Backing {
    let dir = tempfile::tempdir().unwrap();
    Backing {
        store: Arc::new(ObjectBackend::local(dir.path()).unwrap()),
        dir: Some(dir),
    }
}

/// A server over `store` wrapped in a [`FaultyStore`], and the handle that arms its faults.
/// A new server starts with cold caches, so every request it answers reads the store.
fn faulty_server(store: &Arc<dyn BlobStore>, seed: u64) -> (TestServer, Faults) {
    let faults = Faults::new(seed);
    let faulty = FaultyStore::new(store.clone(), faults.clone());
    (TestServer::with_store(Arc::new(faulty)), faults)
}

/// alice/app: `base` <- `child`, `latest` -> child; alice's account.
async fn push_fixture(c: &Client) -> (Image, Image) {
    c.push_alice_app("faults", 30_000, 700_001).await
}

/// Every read endpoint, with the credentials it needs.
fn read_endpoints(base: &Image, child: &Image) -> Vec<(String, Auth)> {
    let mut v: Vec<(String, Auth)> = [
        format!("/v1/images/{}/json", child.id),
        format!("/v1/images/{}/layer", child.id),
        format!("/v1/images/{}/ancestry", child.id),
        format!("/v1/images/{}/json", base.id),
        "/v1/repositories/alice/app/tags".to_string(),
        "/v1/repositories/alice/app/tags/latest".to_string(),
        "/v1/repositories/alice/app/tags/latest/json".to_string(),
        "/v1/repositories/alice/app/images".to_string(),
        "/v1/search?q=app".to_string(),
    ]
    .into_iter()
    .map(|p| (p, Auth::None))
    .collect();
    v.push(("/v1/users/".to_string(), Auth::alice()));
    v
}

/// A 503 as API.md has it: `Retry-After` and a JSON `{"error": ...}` body.
fn assert_unavailable(r: &Resp, what: &str) {
    assert_eq!(r.status, 503, "{what}: {} {}", r.status, r.text());
    assert!(r.header("retry-after").is_some(), "{what}: no Retry-After");
    assert!(!r.error().is_empty(), "{what}");
}

async fn transient_errors_are_503_and_clear_up(backing: Backing) {
    let store = backing.store.clone();
    let (healthy, _) = faulty_server(&store, 0);
    let (base, child) = push_fixture(&healthy.client()).await;
    drop(healthy);
    let endpoints = read_endpoints(&base, &child);

    // What each endpoint answers over a healthy store, from a cold server.
    let (server, _) = faulty_server(&store, 0);
    let c = server.client();
    let mut expected = Vec::new();
    for (path, auth) in &endpoints {
        let r = c.get(path, auth).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        expected.push(r.body);
    }
    assert!(expected[1] == child.layer && expected[0] == child.json);
    drop(server);

    // Every read failing: every endpoint is a 503, and the same requests succeed once cleared.
    let (server, faults) = faulty_server(&store, 0);
    let c = server.client();
    faults.arm(Fault::error(Op::READS));
    for (path, auth) in &endpoints {
        assert_unavailable(&c.get(path, auth).await, path);
    }
    faults.clear();
    for ((path, auth), want) in endpoints.iter().zip(&expected) {
        let r = c.get(path, auth).await;
        assert_eq!(r.status, 200, "{path} after clearing: {}", r.text());
        assert!(r.body == *want, "{path}: different bytes after clearing");
    }
    drop(server);

    // One kind of read failing at a time, on a cold server: an endpoint that needs it is a
    // 503, one that does not is served exactly; nothing is ever a 404 or a 500.
    for op in Op::READS {
        let (server, faults) = faulty_server(&store, 0);
        let c = server.client();
        faults.arm(Fault::error(op));
        for ((path, auth), want) in endpoints.iter().zip(&expected) {
            let r = c.get(path, auth).await;
            match r.status {
                503 => assert_unavailable(&r, path),
                200 => assert!(r.body == *want, "{op:?} {path}: 200 with other bytes"),
                s => panic!("{op:?} {path}: {s} {}", r.text()),
            }
        }
        assert!(faults.counts().errors > 0, "{op:?} was never used");
        faults.clear();
        for ((path, auth), want) in endpoints.iter().zip(&expected) {
            let r = c.get(path, auth).await;
            assert!(r.status == 200 && r.body == *want, "{op:?} {path} after");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_store_errors_are_503_on_every_read_and_clear_up_memory() {
    transient_errors_are_503_and_clear_up(memory()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_store_errors_are_503_on_every_read_and_clear_up_local() {
    transient_errors_are_503_and_clear_up(local()).await;
}

/// Sends a GET and reads the body whole: `Ok` only when it arrived complete. Status 0: the
/// connection was cut before a response head arrived.
async fn fetch(c: &Client, path: &str, range: Option<&str>) -> (u16, Result<Vec<u8>, String>) {
    let mut rb = c.request("GET", path);
    if let Some(r) = range {
        rb = rb.header("Range", r);
    }
    let res = match rb.send().await {
        Ok(res) => res,
        Err(e) => return (0, Err(e.to_string())),
    };
    let status = res.status().as_u16();
    let body = res.bytes().await.map(|b| b.to_vec());
    (status, body.map_err(|e| e.to_string()))
}

async fn cut_layer_reads_never_look_complete(backing: Backing) {
    let store = backing.store.clone();
    let (server, faults) = faulty_server(&store, 0);
    let c = server.client();
    let (_, child) = push_fixture(&c).await;
    let path = format!("/v1/images/{}/layer", child.id);
    let len = child.layer.len();
    let cases: [(Option<&str>, std::ops::Range<usize>); 3] = [
        (None, 0..len),
        (Some("bytes=1000-600000"), 1000..600_001),
        (Some("bytes=-300000"), len - 300_000..len),
    ];
    for cut in [0, 1, 299_999] {
        for fault in [Fault::short_read(cut), Fault::broken_read(cut)] {
            for (range, want) in &cases {
                faults.clear();
                faults.arm(fault.clone().on_keys("layer"));
                let (status, body) = fetch(&c, &path, *range).await;
                assert!([0, 200, 206].contains(&status), "{status}");
                // The body is cut: the client must see an error, not a short success.
                if let Ok(bytes) = body {
                    panic!(
                        "{fault:?} {range:?}: a {}-byte body accepted as whole (want {})",
                        bytes.len(),
                        want.len()
                    );
                }
            }
        }
    }
    // A cut past the end of what is sent changes nothing.
    faults.clear();
    faults.arm(Fault::broken_read(len as u64 + 1).on_keys("layer"));
    for (range, want) in &cases {
        let (_, body) = fetch(&c, &path, *range).await;
        assert!(body.unwrap() == child.layer[want.clone()], "{range:?}");
    }
    let cuts = faults.counts().cut_reads;
    faults.clear();
    for (range, want) in &cases {
        let (_, body) = fetch(&c, &path, *range).await;
        assert!(
            body.unwrap() == child.layer[want.clone()],
            "{range:?} after"
        );
    }
    assert_eq!(cuts, 3 * 2 * 3 + 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_read_cut_short_is_never_a_complete_looking_response_memory() {
    cut_layer_reads_never_look_complete(memory()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_read_cut_short_is_never_a_complete_looking_response_local() {
    cut_layer_reads_never_look_complete(local()).await;
}

/// The outcome of one push step.
async fn put_json(c: &Client, img: &Image) -> Resp {
    c.put_json(img, &Auth::alice()).await
}

async fn put_layer(c: &Client, img: &Image) -> Resp {
    c.put_layer(img, &Auth::alice()).await
}

async fn put_checksum(c: &Client, img: &Image) -> Resp {
    c.put_checksum(img, &Auth::alice()).await
}

/// How an image is served over a healthy store.
#[derive(Debug, PartialEq)]
enum Served {
    /// Json, layer and ancestry, byte for byte.
    Exactly,
    /// Not at all (in progress or unknown).
    Absent,
    /// Partly, or with other bytes.
    Wrong(String),
}

async fn served(c: &Client, img: &Image, ancestry: &[&Image]) -> Served {
    let json = c
        .get(&format!("/v1/images/{}/json", img.id), &Auth::None)
        .await;
    let layer = c
        .get(&format!("/v1/images/{}/layer", img.id), &Auth::None)
        .await;
    let anc = c
        .get(&format!("/v1/images/{}/ancestry", img.id), &Auth::None)
        .await;
    let statuses = (json.status, layer.status, anc.status);
    let ids: Vec<&str> = ancestry.iter().map(|i| i.id.as_str()).collect();
    match statuses {
        (200, 200, 200)
            if json.body == img.json
                && layer.body == img.layer
                && serde_json::from_slice::<serde_json::Value>(&anc.body).ok()
                    == Some(serde_json::json!(ids)) =>
        {
            Served::Exactly
        }
        (400 | 404, 400 | 404, 400 | 404) => Served::Absent,
        _ => Served::Wrong(format!("{}: {statuses:?}", img.id)),
    }
}

/// Whether `img` is served exactly; panics if it is served partly or wrongly.
async fn served_exactly(c: &Client, img: &Image, ancestry: &[&Image]) -> bool {
    match served(c, img, ancestry).await {
        Served::Exactly => true,
        Served::Absent => false,
        Served::Wrong(what) => panic!("{what}"),
    }
}

/// What no object of an unfinished image may be: a published layer or completion record.
async fn assert_nothing_published(store: &dyn BlobStore, img: &Image, layer_too: bool) {
    let id: ImageId = img.id.parse().unwrap();
    let mut keys = vec![keys::image_complete(&id)];
    if layer_too {
        keys.push(keys::image_layer(&id));
    }
    for key in keys {
        assert!(
            matches!(store.head(&key).await, Err(StorageError::NotFound)),
            "{key} is published"
        );
    }
}

/// Files a local store holds, relative to its root.
fn files(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.push(rel);
            }
        }
    }
    out
}

async fn failed_pushes_publish_nothing_and_retries_succeed(backing: Backing) {
    let store = backing.store.clone();
    let (server, faults) = faulty_server(&store, 0);
    let c = server.client();
    let base = Image::new("faults-push-base", 10_000);
    let app = std::slice::from_ref(&base);
    c.push_as_new_user((ALICE, ALICE_PASSWORD), "alice/app", app, "latest")
        .await;

    // (fault, the step that must fail: 0 json, 1 layer, 2 checksum, whether the layer may
    // have been published by then).
    let cases: Vec<(Fault, usize, bool)> = vec![
        (Fault::error(Op::Put).on_keys("/json"), 0, false),
        (Fault::error(Op::Put).on_keys("ancestry"), 0, false),
        (Fault::error(Op::Delete).on_keys("_checksum"), 0, false),
        (Fault::error(Op::UploadStart), 1, false),
        (Fault::error(Op::UploadWrite), 1, false),
        (Fault::error(Op::UploadFinish), 1, false),
        (Fault::error_after_applying(Op::UploadFinish), 1, true),
        (Fault::error(Op::Put).on_keys("_checksum"), 1, true),
        (Fault::error(Op::GetBytes).on_keys("_checksum"), 2, true),
        (Fault::error(Op::Put).on_keys("_complete"), 2, true),
    ];
    for (n, (fault, failing, layer_published)) in cases.into_iter().enumerate() {
        let img = Image::child(&format!("faults-push-{n}"), &base, 600_000 + n);
        let fired_before = faults.counts().errors;
        faults.arm(fault.clone());
        let mut steps = vec![put_json(&c, &img).await];
        if failing >= 1 {
            steps.push(put_layer(&c, &img).await);
        }
        if failing >= 2 {
            steps.push(put_checksum(&c, &img).await);
        }
        for (i, r) in steps.iter().enumerate() {
            if i < failing {
                assert_eq!(r.status, 200, "{fault:?} step {i}: {}", r.text());
            } else {
                assert_unavailable(r, &format!("{fault:?} step {i}"));
            }
        }
        // A client that carries on regardless still cannot complete the image. The layer PUT
        // goes through a client of its own: refused before its body is read (no json), it
        // leaves a connection the server closes without saying so.
        if failing == 0 {
            put_layer(&server.client(), &img).await;
        }
        let r = put_checksum(&c, &img).await;
        assert_ne!(r.status / 100, 2, "{fault:?}: the image completed");
        assert!(
            faults.counts().errors > fired_before,
            "{fault:?} never fired"
        );
        assert!(!served_exactly(&c, &img, &[&img, &base]).await, "{fault:?}");
        assert_nothing_published(store.as_ref(), &img, !layer_published).await;
        let tag = c
            .put(
                "/v1/repositories/alice/app/tags/broken",
                format!("\"{}\"", img.id),
                &Auth::alice(),
            )
            .await;
        assert_ne!(tag.status, 200, "{fault:?}: an unfinished image was tagged");

        // The store recovers; the same push goes through and reads back exactly.
        faults.clear();
        c.push_image(&img, &Auth::alice()).await;
        assert!(served_exactly(&c, &img, &[&img, &base]).await, "{fault:?}");
    }
    if let Some(dir) = &backing.dir {
        let staged: Vec<_> = files(dir.path())
            .into_iter()
            .filter(|f| f.contains('#'))
            .collect();
        assert!(
            staged.is_empty(),
            "unfinished uploads left behind: {staged:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_failing_in_the_store_publishes_nothing_and_its_retry_succeeds_memory() {
    failed_pushes_publish_nothing_and_retries_succeed(memory()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_failing_in_the_store_publishes_nothing_and_its_retry_succeeds_local() {
    failed_pushes_publish_nothing_and_retries_succeed(local()).await;
}

/// Regression: a layer PUT refused by a store failure before its body was read left a
/// connection the server was closing in the client's pool, and the client's next request
/// failed with a broken connection instead of being answered.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_after_a_refused_upload_is_answered() {
    let backing = memory();
    let (server, faults) = faulty_server(&backing.store, 0);
    let c = server.client();
    assert_eq!(c.register(ALICE, ALICE_PASSWORD).await.status, 201);
    let img = Image::new("faults-refused-upload", 600_000);
    assert_eq!(put_json(&c, &img).await.status, 200);
    for _ in 0..5 {
        // The layer handler reads the image json first, and fails before the body.
        faults.arm(Fault::error(Op::GetBytes).on_keys("/json").times(1));
        let r = put_layer(&c, &img).await;
        assert_unavailable(&r, "PUT layer");
        // A PUT, which the client does not retry on its own.
        assert_eq!(put_json(&c, &img).await.status, 200);
        assert_eq!(r.header("connection").as_deref(), Some("close"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_store_still_gives_exact_results() {
    let backing = local();
    let (healthy, _) = faulty_server(&backing.store, 0);
    let (base, child) = push_fixture(&healthy.client()).await;
    drop(healthy);
    let endpoints = read_endpoints(&base, &child);
    let (server, _) = faulty_server(&backing.store, 0);
    let c = server.client();
    let mut expected = Vec::new();
    for (path, auth) in &endpoints {
        expected.push(c.get(path, auth).await.body);
    }
    drop(server);

    let (server, faults) = faulty_server(&backing.store, 0);
    let c = server.client();
    faults.arm(Fault::delay(
        [Op::Get, Op::GetBytes],
        Duration::from_millis(200),
    ));
    faults.arm(Fault::delay(
        [Op::Head, Op::List],
        Duration::from_millis(20),
    ));
    // All at once, so the test takes about as long as the slowest request.
    let results = futures::future::join_all(endpoints.iter().map(|(p, a)| c.get(p, a))).await;
    for (((path, _), want), r) in endpoints.iter().zip(&expected).zip(results) {
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(r.body == *want, "{path}: other bytes when slow");
    }
    let img = Image::child("faults-slow", &child, 100_000);
    faults.arm(Fault::delay(Op::WRITES, Duration::from_millis(50)));
    c.push_image(&img, &Auth::alice()).await;
    assert!(served_exactly(&c, &img, &[&img, &child, &base]).await);
    assert!(faults.counts().delays > 10);
}

/// One randomised run: pushes (by a client that retries) and pulls over a store failing at
/// random, then a check of every image over the healthy store.
async fn random_faults_lose_and_corrupt_nothing(backing: Backing, seed: u64) {
    let store = backing.store.clone();
    let (server, faults) = faulty_server(&store, seed);
    let c = server.client();
    let root = Image::new(&format!("faults-random-root-{seed}"), 5_000);
    let app = std::slice::from_ref(&root);
    c.push_as_new_user((ALICE, ALICE_PASSWORD), "alice/app", app, "latest")
        .await;

    // Chains of four, so parents fail and recover under their children too. Each image comes
    // with its ancestry (itself first).
    let mut images: Vec<(Image, Vec<Image>)> = Vec::new();
    for i in 0..36usize {
        let name = format!("faults-random-{seed}-{i}");
        let len = 10_000 + (i * 7_919) % 90_000;
        let parent = if i % 4 == 0 {
            vec![root.clone()]
        } else {
            images[i - 1].1.clone()
        };
        let img = Image::child(&name, &parent[0], len);
        let mut ancestry = vec![img.clone()];
        ancestry.extend(parent);
        images.push((img, ancestry));
    }

    faults.arm(Fault::error(Op::ALL).with_probability(0.10));
    faults.arm(Fault::error_after_applying(Op::WRITES).with_probability(0.02));
    faults.arm(Fault::broken_read(20_000).with_probability(0.05));
    faults.arm(Fault::short_read(7_000).with_probability(0.05));

    let mut acknowledged = vec![false; images.len()];
    let (mut wrong_reads, mut pulls) = (0u64, 0u64);
    for (i, (img, _)) in images.iter().enumerate() {
        // A careful client: a step answered with a 5xx starts the push over, a few times;
        // any other refusal ends it.
        'attempts: for _ in 0..4 {
            for step in 0..3 {
                let r = match step {
                    0 => put_json(&c, img).await,
                    1 => put_layer(&c, img).await,
                    _ => put_checksum(&c, img).await,
                };
                match r.status {
                    200 if step == 2 => {
                        acknowledged[i] = true;
                        break 'attempts;
                    }
                    200 => {}
                    s if s >= 500 => {
                        assert_unavailable(&r, &format!("push step {step}"));
                        continue 'attempts;
                    }
                    _ => break 'attempts,
                }
            }
        }
        // Everything acknowledged so far, pulled under faults: exact bytes or a failure,
        // never other bytes or a 404.
        for (other, _) in images[..=i]
            .iter()
            .zip(&acknowledged)
            .filter(|(_, a)| **a)
            .map(|(o, _)| o)
        {
            pulls += 1;
            for (path, want) in [
                (format!("/v1/images/{}/json", other.id), &other.json),
                (format!("/v1/images/{}/layer", other.id), &other.layer),
            ] {
                match fetch(&c, &path, None).await {
                    (200, Ok(b)) if b == *want => {}
                    (0 | 200, Err(_)) | (503, _) => {}
                    (s, b) => {
                        wrong_reads += 1;
                        eprintln!("{path}: {s}, {:?}", b.map(|b| b.len()));
                    }
                }
            }
        }
    }
    let injected = faults.counts();
    faults.clear();

    let (mut lost, mut corrupt, mut complete) = (0u64, wrong_reads, 0u64);
    for ((img, ancestry), acked) in images.iter().zip(&acknowledged) {
        let refs: Vec<&Image> = ancestry.iter().collect();
        match served(&c, img, &refs).await {
            Served::Exactly => complete += 1,
            Served::Absent if *acked => lost += 1,
            Served::Absent => {}
            Served::Wrong(what) => {
                corrupt += 1;
                eprintln!("{what}");
            }
        }
    }
    let acked = acknowledged.iter().filter(|a| **a).count();
    let summary = format!(
        "seed {seed:#x}: {} images, {acked} acknowledged, {complete} complete, {pulls} pulls; \
         faults injected: {} ({injected:?}); data lost: {lost}; corrupted: {corrupt}",
        images.len(),
        injected.total()
    );
    eprintln!("{summary}");
    assert!(lost == 0 && corrupt == 0, "{summary}");
    assert!(injected.errors > 20 && injected.cut_reads > 0, "{summary}");
    assert!(acked > 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn random_store_faults_lose_or_corrupt_no_image_memory() {
    random_faults_lose_and_corrupt_nothing(memory(), 0x5eed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn random_store_faults_lose_or_corrupt_no_image_local() {
    random_faults_lose_and_corrupt_nothing(local(), 0xfa17).await;
}

/// The inode at `path`, looked up from the root.
async fn walk(fs: &RegistryFs, path: &str) -> Result<u64, FsError> {
    crate::common::fs::walk(fs, path).await.map(|e| e.attr.ino)
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_reads_under_store_faults_are_eio_and_succeed_once_cleared() {
    let backing = memory();
    let (server, faults) = faulty_server(&backing.store, 0);
    let (base, child) = push_fixture(&server.client()).await;
    let fs = crate::common::fs::registry_fs(
        &server.url,
        None,
        FsConfig::default(),
        Duration::from_secs(2),
    );

    // Opened while healthy; the layer's bytes are not read yet.
    let layer = walk(&fs, &format!("images/{}/layer", child.id))
        .await
        .unwrap();
    let fh = fs.open(layer, false, false).await.unwrap().fh;

    faults.arm(Fault::error(Op::READS));
    let err = fs.read(fh, 4096, 8192).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    // A path not looked at yet: EIO too, never ENOENT.
    let err = walk(&fs, &format!("images/{}/json", base.id))
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    let err = walk(&fs, "repositories/alice/app/tags/latest")
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(faults.counts().errors > 0);

    faults.clear();
    let data = fs.read(fh, 4096, 8192).await.unwrap();
    assert!(data[..] == child.layer[4096..4096 + 8192]);
    fs.release(fh).await;
    let json = walk(&fs, &format!("images/{}/json", base.id))
        .await
        .unwrap();
    let fh = fs.open(json, false, false).await.unwrap().fh;
    let data = fs.read(fh, 0, 1 << 20).await.unwrap();
    assert!(data[..] == base.json[..]);
    fs.release(fh).await;
    walk(&fs, "repositories/alice/app/tags/latest")
        .await
        .unwrap();
}

/// A layer range whose every attempt meets a failing store gives up within the client's
/// timeout: retries of the request and of the range share one deadline. Counted, not timed:
/// each attempt is held 550 ms by the store before it fails, and the client sleeps at least
/// 50 ms between attempts, so attempts start 600 ms apart or more and one 2 s deadline holds 4
/// at most, however loaded the machine (a slow one makes fewer). A range retry that restarted
/// the request's deadline makes more: the request gives up at 1.8 s, when its next backoff
/// would pass the deadline, the range retries 50 ms later with a fresh 2 s of its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_layer_range_gives_up_within_the_timeout() {
    let backing = memory();
    let (server, faults) = faulty_server(&backing.store, 0);
    let (_, child) = push_fixture(&server.client()).await;
    let client = regfs::client::RegistryClient::new(regfs::client::ClientConfig {
        url: server.url.clone(),
        credentials: None,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let id: ImageId = child.id.parse().unwrap();
    // Only this layer's reads fail, so nothing else the server reads meanwhile is counted.
    let layer_key = format!("{}/layer", child.id);
    faults.arm(Fault::delay(Op::READS, Duration::from_millis(550)).on_keys(&layer_key));
    faults.arm(Fault::error(Op::READS).on_keys(&layer_key));
    // What one attempt costs the store: a single ranged GET, not retried.
    let before = faults.counts().errors;
    let r = server
        .client()
        .request("GET", &format!("/v1/images/{}/layer", child.id))
        .header("Range", "bytes=0-999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let per_attempt = faults.counts().errors - before;
    assert!(per_attempt > 0);

    let before = faults.counts().errors;
    let err = no_hang("failing range", client.layer_range(&id, 0..1000))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            regfs::client::ClientError::Server(503) | regfs::client::ClientError::Timeout
        ),
        "{err:?}"
    );
    let injected = faults.counts().errors - before;
    assert_eq!(injected % per_attempt, 0, "{injected} / {per_attempt}");
    let attempts = injected / per_attempt;
    assert!(attempts > 1, "a 503 is retried");
    assert!(
        attempts <= 4,
        "{attempts} attempts: a retry restarted the deadline"
    );
    faults.clear();
    let data = client.layer_range(&id, 0..1000).await.unwrap();
    assert!(data[..] == child.layer[..1000]);
}
