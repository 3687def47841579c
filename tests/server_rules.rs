//! Rules of `regfs serve` that hold on every route, checked over the route table itself
//! (`Endpoint::ALL`) rather than a sample, so a new endpoint is covered the day it is added:
//! wrong credentials of any kind are a 401 everywhere (API.md section 9), and every JSON body
//! that is empty or blank is a 400 (API.md section 2). Also: password checks stay bounded under a
//! flood of wrong passwords, a repository write never waits behind a store scan, and image
//! responses carry the image's real `Last-Modified` (issues 17 and 18).

use regfs::server::routes::{AuthClass, BodyKind, Endpoint};

use crate::common::{ADMIN_PASSWORD, ALICE, Auth, Client, Image, Resp, TestServer};

/// The challenge a 401 carries on each class of route.
fn challenge(class: AuthClass) -> &'static str {
    match class {
        AuthClass::Registry => "Token",
        AuthClass::Index | AuthClass::TokenCheck => "Basic realm=\"auth required\",Token",
    }
}

/// An endpoint's path with its placeholders filled in.
fn path_of(endpoint: Endpoint, image: &str) -> String {
    endpoint
        .spec()
        .path
        .replace("{image}", image)
        .replace("{repo}", "alice/app")
        .replace("{tag}", "latest")
        .replace("{user}", ALICE)
}

/// Sends `method` to an endpoint with `body` (JSON endpoints) and `auth`.
async fn call(c: &Client, method: &str, path: &str, body: &str, auth: &Auth) -> Resp {
    c.send(c.request(method, path).body(body.to_string()), auth)
        .await
}

/// A body the endpoint would accept, so that only the credentials can refuse the request.
fn good_body(endpoint: Endpoint, image: &Image) -> String {
    match endpoint {
        Endpoint::Register => {
            r#"{"username":"newcomer","password":"pass-word","email":"n@example.com"}"#.into()
        }
        Endpoint::UpdateUser => r#"{"email":"alice2@example.com"}"#.into(),
        Endpoint::PutImageJson => String::from_utf8(image.json.clone()).unwrap(),
        Endpoint::PutTag => format!("\"{}\"", image.id),
        Endpoint::PutRepo | Endpoint::PutRepoImages => format!("[{{\"id\":\"{}\"}}]", image.id),
        Endpoint::PutLayer => String::from_utf8_lossy(&image.layer).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn wrong_credentials_are_401_on_every_route_and_method() {
    let server = TestServer::start();
    let c = server.client();
    let (_, child) = c.push_alice_app("rules-auth", 100, 200).await;
    // A token this server never issued: right shape, another secret.
    let foreign = regfs::server::auth::TokenSigner::new(b"another-secret", 3600).issue(
        &regfs::names::RepoRef::parse_full("alice/app").unwrap(),
        regfs::server::auth::Access::Write,
        regfs::server::now_unix(),
    );
    let wrong: [(&str, Auth); 5] = [
        ("malformed Basic", Auth::Raw("Basic !!!".into())),
        ("unknown scheme", Auth::Raw("Bearer abc".into())),
        ("wrong password", Auth::basic(ALICE, "not-her-password")),
        ("unknown user", Auth::basic("nobody_here", "whatever")),
        ("unknown token", Auth::Token(foreign)),
    ];
    let mut checked = 0;
    for &endpoint in Endpoint::ALL {
        let spec = endpoint.spec();
        let path = path_of(endpoint, &child.id);
        let body = good_body(endpoint, &child);
        let mut methods = vec![spec.method];
        if spec.method == "GET" {
            methods.push("HEAD");
        }
        for method in methods {
            for (what, auth) in &wrong {
                let r = call(&c, method, &path, &body, auth).await;
                if spec.auth == AuthClass::TokenCheck && *what == "unknown token" {
                    // API.md section 9: `PUT .../auth` answers 403 for a token it did not issue.
                    assert_eq!(r.status, 403, "{method} {path} with {what}");
                    continue;
                }
                assert_eq!(r.status, 401, "{method} {path} with {what}: {}", r.text());
                assert_eq!(
                    r.header("www-authenticate").as_deref(),
                    Some(challenge(spec.auth)),
                    "{method} {path} with {what}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} checks");
    // Nothing was changed by any of them: the fixture still pulls, anonymously.
    let r = c
        .get(&format!("/v1/images/{}/ancestry", child.id), &Auth::None)
        .await;
    assert_eq!(r.status, 200);
    let r = c.get("/v1/repositories/alice/app/tags", &Auth::None).await;
    assert_eq!(r.json()["latest"], child.id.as_str());
}

#[tokio::test]
async fn not_a_route_stays_404_whatever_the_credentials() {
    // `/v2/` must stay a 404, or Docker takes the server for a v2 registry wanting a login.
    let server = TestServer::start();
    let c = server.client();
    for path in ["/v2/", "/v2/library/x/manifests/latest", "/nothing/here"] {
        let r = c.get(path, &Auth::Raw("Basic !!!".into())).await;
        assert_eq!(r.status, 404, "{path}");
    }
}

#[tokio::test]
async fn empty_or_blank_json_bodies_are_400_on_every_json_endpoint() {
    let server = TestServer::start();
    let c = server.client();
    let (_, child) = c.push_alice_app("rules-body", 100, 200).await;
    // An image not pushed yet, so that PUT json could only fail on its body.
    let fresh = Image::new("rules-body-fresh", 10);
    let admin = Auth::admin();
    let json_endpoints: Vec<Endpoint> = Endpoint::ALL
        .iter()
        .copied()
        .filter(|e| e.spec().body == BodyKind::Json)
        .collect();
    assert!(json_endpoints.len() >= 6, "{json_endpoints:?}");
    for endpoint in json_endpoints {
        let spec = endpoint.spec();
        let image = if endpoint == Endpoint::PutImageJson {
            &fresh.id
        } else {
            &child.id
        };
        let path = path_of(endpoint, image);
        for body in ["", "  \n"] {
            let r = call(&c, spec.method, &path, body, &admin).await;
            assert_eq!(r.status, 400, "{} {path} with {body:?}", spec.method);
            assert_eq!(r.error(), "Invalid JSON", "{} {path}", spec.method);
        }
    }
    // What the mount sends on mkdir still creates a repository.
    let r = c.put("/v1/repositories/alice/made/", "[]", &admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.get("/v1/repositories/alice/made/tags", &Auth::None).await;
    assert_eq!(r.status, 200);
    // The admin credentials were right all along.
    let r = c
        .get("/v1/users/", &Auth::basic("admin", ADMIN_PASSWORD))
        .await;
    assert_eq!(r.status, 200);
}

/// Wrong passwords in the flood.
const FLOOD: usize = 1000;
/// A generous ceiling on the server's peak RSS: argon2 takes 19 MiB per check in progress, so a
/// pool of a few checks stays far below it, and one check per request (1,000) far above.
const FLOOD_PEAK_KIB: u64 = 256 * 1024;

/// 1,000 concurrent wrong-password requests for a real account against the real binary: each
/// costs an argon2 check, which run a few at a time, so the server's peak RSS stays bounded,
/// and an anonymous pull made while they are still being answered succeeds.
#[test]
fn a_flood_of_wrong_passwords_keeps_memory_bounded_and_pulls_working() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::common::process::{Process, status_kib};

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_regfs"));
    cmd.args(["serve", "--memory", "--listen", "127.0.0.1:0"])
        .args(["--admin-user", "admin", "--admin-password", ADMIN_PASSWORD])
        .env_remove("RUST_LOG");
    let server = Process::start(&mut cmd, dir.path().join("serve.log"));
    let c = Client::new(&server.line);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_, child) = c.push_alice_app("rules-flood", 1000, 50_000).await;
        let idle = status_kib(server.pid(), "VmHWM:");
        let answered = Arc::new(AtomicUsize::new(0));
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
        let first_tx = Arc::new(std::sync::Mutex::new(Some(first_tx)));
        let flood: Vec<_> = (0..FLOOD)
            .map(|i| {
                // One client per request: each its own connection, as separate attackers.
                let c = Client::new(&c.base);
                let answered = answered.clone();
                let first_tx = first_tx.clone();
                tokio::spawn(async move {
                    let auth = Auth::basic(ALICE, &format!("wrong-password-{i}"));
                    let r = c.get("/v1/users/", &auth).await;
                    answered.fetch_add(1, Ordering::SeqCst);
                    if let Some(tx) = first_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    r.status
                })
            })
            .collect();
        // Checks are under way once the first answer is back; then pull, anonymously.
        first_rx.await.unwrap();
        for path in [
            "/v1/repositories/alice/app/images".to_string(),
            "/v1/repositories/alice/app/tags".to_string(),
            format!("/v1/images/{}/ancestry", child.id),
            format!("/v1/images/{}/json", child.id),
            format!("/v1/images/{}/layer", child.id),
        ] {
            let r = c.get(&path, &Auth::None).await;
            assert_eq!(r.status, 200, "{path} during the flood: {}", r.text());
            if path.ends_with("/layer") {
                assert!(r.body == child.layer, "layer bytes during the flood");
            }
        }
        let done_at_pull = answered.load(Ordering::SeqCst);
        for task in flood {
            assert_eq!(task.await.unwrap(), 401, "a wrong password");
        }
        let peak = status_kib(server.pid(), "VmHWM:");
        eprintln!(
            "server VmHWM: {idle} KiB before, {peak} KiB after {FLOOD} wrong passwords \
             ({done_at_pull} answered when the pull had finished)"
        );
        assert!(
            done_at_pull < FLOOD,
            "the pull finished only after the whole flood"
        );
        assert!(
            peak < FLOOD_PEAK_KIB,
            "server peak RSS {peak} KiB under {FLOOD} wrong passwords"
        );
        // Right credentials still work afterwards.
        let r = c.get("/v1/users/", &Auth::alice()).await;
        assert_eq!(r.status, 200);
    });
}

/// Creating and deleting repositories never waits for a scan of every repository (a search):
/// with the scan stalled in the store, both complete, and a later search sees them.
#[tokio::test]
async fn repository_writes_do_not_wait_for_a_stalled_scan() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use regfs::storage::ObjectBackend;
    use regfs::storage::faulty::{Fault, Faults, FaultyStore, Op};

    let faults = Faults::new(17);
    let store = Arc::new(FaultyStore::new(
        Arc::new(ObjectBackend::memory()),
        faults.clone(),
    ));
    let server = TestServer::with_store(store);
    let c = server.client();
    let admin = Auth::admin();
    for repo in ["stalled_ns/slow", "quick_ns/kept", "quick_ns/gone"] {
        let r = c
            .put(&format!("/v1/repositories/{repo}/"), "[]", &admin)
            .await;
        assert_eq!(r.status, 200, "{repo}");
    }
    // The scan lists every namespace; this one's listing stalls far past any deadline below.
    faults.arm(Fault::delay(Op::List, Duration::from_secs(600)).on_keys("stalled_ns"));
    let search = {
        let c = c.clone();
        tokio::spawn(async move { c.get("/v1/search?q=", &Auth::None).await })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while faults.counts_on(Op::List).delays == 0 {
        assert!(
            Instant::now() < deadline,
            "the scan never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = bounded("PUT", c.put("/v1/repositories/quick_ns/new/", "[]", &admin)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = bounded(
        "DELETE",
        c.delete("/v1/repositories/quick_ns/gone/", &admin),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!search.is_finished(), "the scan was not stalled after all");
    search.abort();
    faults.clear();
    // The abandoned scan kept nothing; a new one sees both changes.
    let r = c.get("/v1/search?q=quick_ns", &Auth::None).await;
    let names: Vec<String> = r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["quick_ns/kept", "quick_ns/new"]);
    // The stalled request is still in the server: stop it without waiting for it.
    server.kill();
}

/// `f`'s result, or a panic naming `what` if it takes longer than 20 s.
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} waited for the stalled scan"))
}

/// The `Last-Modified` of every image response.
async fn image_times(c: &Client, id: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (method, what) in [
        ("GET", "json"),
        ("GET", "layer"),
        ("HEAD", "layer"),
        ("GET", "ancestry"),
    ] {
        let r = c
            .send(
                c.request(method, &format!("/v1/images/{id}/{what}")),
                &Auth::None,
            )
            .await;
        assert_eq!(r.status, 200, "{method} {what}");
        let at = r
            .header("last-modified")
            .unwrap_or_else(|| panic!("{method} {what}: no Last-Modified"));
        out.push((format!("{method} {what}"), at));
    }
    out
}

/// Issue 18: image responses carry the image's `created` as `Last-Modified`, else the time it
/// was stored; never the epoch.
#[tokio::test]
async fn image_responses_carry_the_images_time() {
    use std::sync::Arc;

    use regfs::storage::{BlobStore, ObjectBackend, keys};

    let store: Arc<dyn BlobStore> = Arc::new(ObjectBackend::memory());
    let server = TestServer::with_store(store.clone());
    let c = server.client();
    let (base, child) = c.push_alice_app("rules-time", 100, 200).await;
    // The fixtures' json says "created":"2014-10-01T00:00:00Z".
    for (what, at) in image_times(&c, &child.id).await {
        assert_eq!(at, "Wed, 01 Oct 2014 00:00:00 GMT", "{what}");
    }
    // 304 answers say it too.
    let r = c
        .send(
            c.request("GET", &format!("/v1/images/{}/json", base.id))
                .header("If-Modified-Since", "Wed, 01 Oct 2014 00:00:00 GMT"),
            &Auth::None,
        )
        .await;
    assert_eq!(r.status, 304);
    assert_eq!(
        r.header("last-modified").as_deref(),
        Some("Wed, 01 Oct 2014 00:00:00 GMT")
    );

    // No `created`: the time the image was stored.
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let id = Image::new("rules-time-undated", 1).id;
    let bare = Image {
        json: format!(r#"{{"id":"{id}"}}"#).into_bytes(),
        layer: b"undated".to_vec(),
        id,
    };
    c.push_image(&bare, &Auth::alice()).await;
    let after = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    for (what, at) in image_times(&c, &bare.id).await {
        let at = httpdate::parse_http_date(&at).unwrap();
        assert!(before <= at && at <= after, "{what}: {at:?}");
    }

    // A record written before the time was kept: read from the json, by a server that has
    // not seen the image yet.
    drop(server);
    let child_id: regfs::names::ImageId = child.id.parse().unwrap();
    let old_record = serde_json::json!({"size": 200, "checksum": child.checksum()});
    store
        .put(
            &keys::image_complete(&child_id),
            serde_json::to_vec(&old_record).unwrap().into(),
        )
        .await
        .unwrap();
    let server = TestServer::with_store(store);
    for (what, at) in image_times(&server.client(), &child.id).await {
        assert_eq!(
            at, "Wed, 01 Oct 2014 00:00:00 GMT",
            "{what} of an old record"
        );
    }
}
