//! The v1 API through a real server on 127.0.0.1:0.

use std::time::Duration;

use crate::common::{ADMIN, ADMIN_PASSWORD, Auth, Image, TestServer};

fn no_auth() -> Auth {
    Auth::None
}

#[tokio::test]
async fn ping_answers_on_both_paths_with_registry_headers() {
    let server = TestServer::start();
    let c = server.client();
    for path in ["/_ping", "/v1/_ping"] {
        let r = c.get(path, &no_auth()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), serde_json::json!({}));
        assert_eq!(
            r.header("x-docker-registry-standalone").as_deref(),
            Some("true")
        );
        assert!(r.header("x-docker-registry-version").is_some());
    }
    let r = c.get("/v2/", &no_auth()).await;
    assert_eq!(r.status, 404);
    assert!(r.header("docker-distribution-api-version").is_none());
}

/// The tags listing is the reference's plain map unless a client asks, by `Accept`, for the
/// listing with each tag's last update; either way it says which it is and that it varies.
#[tokio::test]
async fn the_tags_listing_gives_last_updates_to_a_client_that_asks() {
    let server = TestServer::start();
    let c = server.client();
    assert_eq!(c.register("alice", "secret1").await.status, 201);
    let alice = Auth::basic("alice", "secret1");
    let img = Image::new("base", 1_000);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    c.push_repo("alice/app", std::slice::from_ref(&img), "v1", &alice)
        .await;
    let path = "/v1/repositories/alice/app/tags";
    let last_update = c.get(&format!("{path}/v1/json"), &no_auth()).await.json()["last_update"]
        .as_i64()
        .expect("last_update");
    assert!(last_update >= before, "{last_update} < {before}");

    let plain = c.get(path, &no_auth()).await;
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(plain.header("vary").as_deref(), Some("accept"));
    assert_eq!(plain.json(), serde_json::json!({"v1": img.id}));

    let media = "application/vnd.regfs.tags.v1+json";
    for accept in [
        media.to_string(),
        format!("text/plain, {media}; q=0.8, application/json; q=0.5"),
    ] {
        let rb = c.request("GET", path).header("Accept", &accept);
        let timed = c.send(rb, &no_auth()).await;
        assert_eq!(timed.status, 200, "{accept}");
        assert_eq!(timed.header("content-type").as_deref(), Some(media));
        assert_eq!(timed.header("vary").as_deref(), Some("accept"));
        assert_eq!(
            timed.json(),
            serde_json::json!({"v1": {"id": img.id, "last_update": last_update}}),
            "{accept}"
        );
    }
    for accept in ["*/*", "application/json", &format!("{media};q=0")] {
        let rb = c.request("GET", path).header("Accept", accept);
        let r = c.send(rb, &no_auth()).await;
        assert_eq!(r.json(), serde_json::json!({"v1": img.id}), "{accept}");
    }
}

#[tokio::test]
async fn push_then_pull_roundtrips_a_user_repository() {
    let server = TestServer::start();
    let c = server.client();
    assert_eq!(c.register("alice", "secret1").await.status, 201);
    let alice = Auth::basic("alice", "secret1");
    let base = Image::new("base", 10_000);
    let child = Image::child("child", &base, 70_001);
    c.push_repo(
        "alice/app",
        &[base.clone(), child.clone()],
        "latest",
        &alice,
    )
    .await;

    let tags = c.get("/v1/repositories/alice/app/tags", &no_auth()).await;
    assert_eq!(tags.status, 200);
    assert_eq!(tags.json(), serde_json::json!({"latest": child.id}));
    let tag = c
        .get("/v1/repositories/alice/app/tags/latest", &no_auth())
        .await;
    assert_eq!(tag.json(), serde_json::json!(child.id));

    let images = c.get("/v1/repositories/alice/app/images", &no_auth()).await;
    assert_eq!(images.status, 200);
    let mut ids: Vec<String> = images
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut want = vec![base.id.clone(), child.id.clone()];
    want.sort();
    assert_eq!(ids, want);

    let anc = c
        .get(&format!("/v1/images/{}/ancestry", child.id), &no_auth())
        .await;
    assert_eq!(anc.json(), serde_json::json!([child.id, base.id]));

    for image in [&base, &child] {
        let json = c
            .get(&format!("/v1/images/{}/json", image.id), &no_auth())
            .await;
        assert_eq!(json.status, 200);
        assert_eq!(json.body, image.json, "json is served verbatim");
        assert_eq!(
            json.header("x-docker-size"),
            Some(image.layer.len().to_string())
        );
        assert_eq!(
            json.header("x-docker-checksum-payload"),
            Some(image.checksum())
        );
        assert!(json.header("cache-control").unwrap().contains("max-age"));
        let layer = c
            .get(&format!("/v1/images/{}/layer", image.id), &no_auth())
            .await;
        assert_eq!(layer.status, 200);
        assert_eq!(layer.body, image.layer);
        assert_eq!(layer.header("accept-ranges").as_deref(), Some("bytes"));
        assert_eq!(
            layer.header("content-type").as_deref(),
            Some("application/octet-stream")
        );
    }
}

/// API.md section 4: the Docker 1.x push with tokens, then the pull, request by request.
#[tokio::test]
async fn docker_1x_push_and_pull_sequences_with_tokens() {
    let server = TestServer::start();
    let c = server.client();
    assert_eq!(c.register("dockeruser", "pass123").await.status, 201);
    let basic = Auth::basic("dockeruser", "pass123");
    let base = Image::new("d-base", 4096);
    let top = Image::child("d-top", &base, 8192);

    // 1. ping
    assert_eq!(c.get("/v1/_ping", &no_auth()).await.status, 200);
    // 2. index PUT repository with X-Docker-Token: true
    let body = serde_json::json!([{"id": base.id, "Tag": ""}, {"id": top.id, "Tag": "latest"}]);
    let r = c
        .send(
            c.request("PUT", "/v1/repositories/dockeruser/web/")
                .header("X-Docker-Token", "true")
                .json(&body),
            &basic,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.header("x-docker-token").expect("token issued");
    assert!(token.contains(r#"repository="dockeruser/web""#));
    assert!(token.contains("access=write"));
    assert_eq!(r.header("www-authenticate"), Some(format!("Token {token}")));
    assert_eq!(
        r.header("x-docker-endpoints"),
        Some(server.addr.to_string())
    );
    let tok = Auth::Token(token.clone());
    // 3. per image: lookup, json, layer, checksum; then tags
    for image in [&base, &top] {
        let r = c.get(&format!("/v1/images/{}/json", image.id), &tok).await;
        assert_eq!(r.status, 404, "not pushed yet");
        let r = c
            .send(
                c.request("PUT", &format!("/v1/images/{}/json", image.id))
                    .header("Content-Type", "application/json")
                    .body(image.json.clone()),
                &tok,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        // Docker streams the layer chunked, with no Content-Length.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            image.layer.chunks(1000).map(|c| Ok(c.to_vec())).collect();
        let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
        let r = c
            .send(
                c.request("PUT", &format!("/v1/images/{}/layer", image.id))
                    .header("Content-Type", "application/octet-stream")
                    .body(body),
                &tok,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = c
            .send(
                c.request("PUT", &format!("/v1/images/{}/checksum", image.id))
                    .header("X-Docker-Checksum", "tarsum+sha256:0000")
                    .header("X-Docker-Checksum-Payload", image.checksum()),
                &tok,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = c
        .put(
            "/v1/repositories/dockeruser/web/tags/latest",
            format!("\"{}\"", top.id),
            &tok,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // 4. index PUT images with checksums: exactly 204
    let body = serde_json::json!([
        {"id": base.id, "checksum": "tarsum+sha256:aaaa"},
        {"id": top.id, "checksum": "tarsum+sha256:bbbb", "Tag": "latest"}
    ]);
    let r = c
        .send(
            c.request("PUT", "/v1/repositories/dockeruser/web/images")
                .header("X-Docker-Token", "true")
                .header("X-Docker-Endpoints", server.addr.to_string())
                .json(&body),
            &basic,
        )
        .await;
    assert_eq!(r.status, 204);

    // Pull, as an anonymous Docker 1.9 client.
    let r = c
        .send(
            c.request("GET", "/v1/repositories/dockeruser/web/images")
                .header("X-Docker-Token", "true"),
            &no_auth(),
        )
        .await;
    assert_eq!(r.status, 200);
    let read_token = r.header("x-docker-token").expect("read token");
    assert!(read_token.contains("access=read"));
    let list = r.json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == top.id.as_str() && e["checksum"] == "tarsum+sha256:bbbb")
    );
    let rtok = Auth::Token(read_token);
    let r = c.get("/v1/repositories/dockeruser/web/tags", &rtok).await;
    assert_eq!(r.json(), serde_json::json!({"latest": top.id}));
    let r = c
        .get(&format!("/v1/images/{}/ancestry", top.id), &rtok)
        .await;
    assert_eq!(r.json(), serde_json::json!([top.id, base.id]));
    for image in [&base, &top] {
        let r = c.get(&format!("/v1/images/{}/json", image.id), &rtok).await;
        assert_eq!(r.status, 200);
        let size: usize = r.header("x-docker-size").unwrap().parse().unwrap();
        // A resumed download.
        let half = size / 2;
        let r = c
            .send(
                c.request("GET", &format!("/v1/images/{}/layer", image.id))
                    .header("Range", format!("bytes={half}-")),
                &rtok,
            )
            .await;
        assert_eq!(r.status, 206);
        assert_eq!(r.body, image.layer[half..]);
    }
    // Docker 1.3 sends an empty token when the index gave none; the doubled prefix of the
    // reference is tolerated too.
    let r = c
        .get(
            "/v1/repositories/dockeruser/web/tags",
            &Auth::Raw("Token ".into()),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .get(
            "/v1/repositories/dockeruser/web/tags",
            &Auth::Raw(format!("Token Token {token}")),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn library_repositories_are_admin_only_and_default_the_namespace() {
    let server = TestServer::start();
    let c = server.client();
    let image = Image::new("lib", 100);
    let admin = Auth::admin();
    // A library push uses one-segment paths; pulls ask for library/<name>.
    let r = c.put("/v1/repositories/busybox/", "[]", &admin).await;
    assert_eq!(r.status, 200);
    c.push_image(&image, &admin).await;
    let r = c
        .put(
            "/v1/repositories/busybox/tags/latest",
            format!("\"{}\"", image.id),
            &admin,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .get("/v1/repositories/library/busybox/tags", &no_auth())
        .await;
    assert_eq!(r.json(), serde_json::json!({"latest": image.id}));
    let r = c
        .send(
            c.request("PUT", "/v1/repositories/busybox/")
                .header("X-Docker-Token", "true")
                .body("[]"),
            &admin,
        )
        .await;
    assert!(
        r.header("x-docker-token")
            .unwrap()
            .contains(r#"repository="library/busybox""#)
    );

    assert_eq!(c.register("mallory", "secret1").await.status, 201);
    let mallory = Auth::basic("mallory", "secret1");
    for path in [
        "/v1/repositories/busybox/",
        "/v1/repositories/library/other/",
    ] {
        let r = c.put(path, "[]", &mallory).await;
        assert_eq!(r.status, 403, "{path}");
    }
    let r = c
        .put(
            "/v1/repositories/busybox/tags/evil",
            format!("\"{}\"", image.id),
            &mallory,
        )
        .await;
    assert_eq!(r.status, 403);
    // A name that looks like an image id cannot be a library repository.
    let r = c
        .put(&format!("/v1/repositories/{}/", image.id), "[]", &admin)
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn re_push_of_a_complete_image_is_refused_the_way_docker_expects() {
    let server = TestServer::start();
    let c = server.client();
    let admin = Auth::admin();
    let image = Image::new("again", 500);
    c.push_repo(
        "library/again",
        std::slice::from_ref(&image),
        "latest",
        &admin,
    )
    .await;
    // The client looks the image up first and skips it on 200.
    let r = c
        .get(&format!("/v1/images/{}/json", image.id), &admin)
        .await;
    assert_eq!(r.status, 200);
    let r = c.put_json(&image, &admin).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error(), "Image already exists");
    let r = c.put_layer(&image, &admin).await;
    assert_eq!(r.status, 409);
    let r = c.put_checksum(&image, &admin).await;
    assert_eq!(r.status, 409);
    // Re-pushing the repository itself is fine.
    let r = c.put("/v1/repositories/library/again/", "[]", &admin).await;
    assert_eq!(r.status, 200);
    let r = c
        .get(&format!("/v1/images/{}/layer", image.id), &no_auth())
        .await;
    assert_eq!(r.body, image.layer);
}

#[tokio::test]
async fn registration_then_login_flow() {
    let server = TestServer::start();
    let c = server.client();
    let r = c.register("newuser", "pass123").await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json(), serde_json::json!("User Created"));
    // `docker login` re-registers first and falls through to the login check only on this
    // exact raw body.
    let r = c.register("newuser", "pass123").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), "\"Username or email already exists\"");
    let r = c.register(ADMIN, "whatever").await;
    assert_eq!(r.text(), "\"Username or email already exists\"");
    let r = c
        .get("/v1/users/", &Auth::basic("newuser", "pass123"))
        .await;
    assert_eq!(r.status, 200);
    let r = c.get("/v1/users", &Auth::basic("newuser", "wrong")).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("Basic"));
    let r = c.get("/v1/users/", &no_auth()).await;
    assert_eq!(r.status, 401);
    let r = c
        .get("/v1/users/", &Auth::basic(ADMIN, ADMIN_PASSWORD))
        .await;
    assert_eq!(r.status, 200);

    for (body, why) in [
        (
            serde_json::json!({"username": "ab", "password": "pass123", "email": "a@b.co"}),
            "short name",
        ),
        (
            serde_json::json!({"username": "Upper", "password": "pass123", "email": "a@b.co"}),
            "upper case",
        ),
        (
            serde_json::json!({"username": "library", "password": "pass123", "email": "a@b.co"}),
            "reserved",
        ),
        (
            serde_json::json!({"username": "okname", "password": "123", "email": "a@b.co"}),
            "short password",
        ),
        (
            serde_json::json!({"username": "okname", "password": "pass123", "email": "nope"}),
            "bad email",
        ),
        (
            serde_json::json!({"username": "okname", "password": "pass123"}),
            "missing email",
        ),
        (
            serde_json::json!({"username": 5, "password": "pass123", "email": "a@b.co"}),
            "wrong type",
        ),
        (serde_json::json!(["okname"]), "not an object"),
    ] {
        let r = c
            .send(c.request("POST", "/v1/users/").json(&body), &no_auth())
            .await;
        assert_eq!(r.status, 400, "{why}: {}", r.text());
        assert!(!r.error().is_empty(), "{why}");
    }
}

#[tokio::test]
async fn signup_can_be_closed() {
    let mut cfg = TestServer::config();
    cfg.signup = false;
    let server = TestServer::with_config(cfg);
    let r = server.client().register("someone", "pass123").await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn users_update_themselves_and_the_admin_updates_anyone() {
    let server = TestServer::start();
    let c = server.client();
    c.register("carol", "first-pass").await;
    c.register("davey", "davey-pass").await;
    let body = serde_json::json!({"password": "second-pass", "email": "c2@example.com"});
    let r = c
        .send(
            c.request("PUT", "/v1/users/carol/").json(&body),
            &Auth::basic("carol", "first-pass"),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        c.get("/v1/users/", &Auth::basic("carol", "first-pass"))
            .await
            .status,
        401
    );
    assert_eq!(
        c.get("/v1/users/", &Auth::basic("carol", "second-pass"))
            .await
            .status,
        200
    );
    let r = c
        .send(
            c.request("PUT", "/v1/users/carol/").json(&body),
            &Auth::basic("davey", "davey-pass"),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .send(
            c.request("PUT", "/v1/users/carol/")
                .json(&serde_json::json!({"password": "third-pass"})),
            &Auth::admin(),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        c.get("/v1/users/", &Auth::basic("carol", "third-pass"))
            .await
            .status,
        200
    );
    let r = c
        .send(
            c.request("PUT", "/v1/users/nobody/").json(&body),
            &Auth::admin(),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = c
        .send(c.request("PUT", "/v1/users/carol/").json(&body), &no_auth())
        .await;
    assert_eq!(r.status, 401);
    let r = c
        .send(
            c.request("PUT", "/v1/users/carol/").body("{bad"),
            &Auth::basic("carol", "third-pass"),
        )
        .await;
    assert_eq!(r.status, 400);
}

/// Anonymous, owner, another user and the admin against every write.
#[tokio::test]
async fn permission_matrix() {
    let server = TestServer::start();
    let c = server.client();
    c.register("owner", "owner-pass").await;
    c.register("other", "other-pass").await;
    let image = Image::new("perm", 64);
    c.push_repo(
        "owner/repo",
        std::slice::from_ref(&image),
        "latest",
        &Auth::basic("owner", "owner-pass"),
    )
    .await;
    let tag_body = format!("\"{}\"", image.id);
    let list_body = format!("[{{\"id\":\"{}\"}}]", image.id);
    let callers = [
        ("anonymous", Auth::None, 401),
        ("owner", Auth::basic("owner", "owner-pass"), 0),
        ("other", Auth::basic("other", "other-pass"), 403),
        ("admin", Auth::admin(), 0),
        ("wrong password", Auth::basic("owner", "nope!"), 401),
    ];
    for (who, auth, refused) in &callers {
        let expect = |ok: u16| if *refused == 0 { ok } else { *refused };
        let r = c.put("/v1/repositories/owner/repo/", "[]", auth).await;
        assert_eq!(r.status, expect(200), "{who} PUT repo");
        let r = c
            .put(
                "/v1/repositories/owner/repo/tags/t1",
                tag_body.clone(),
                auth,
            )
            .await;
        assert_eq!(r.status, expect(200), "{who} PUT tag");
        let r = c
            .put(
                "/v1/repositories/owner/repo/images",
                list_body.clone(),
                auth,
            )
            .await;
        assert_eq!(r.status, expect(204), "{who} PUT images");
        let r = c.delete("/v1/repositories/owner/repo/tags/t1", auth).await;
        assert_eq!(r.status, expect(200), "{who} DELETE tag");
        if *refused != 0 {
            assert!(!r.error().is_empty());
            let r = c.delete("/v1/repositories/owner/repo/", auth).await;
            assert_eq!(r.status, *refused, "{who} DELETE repo");
            let r = c
                .put(&format!("/v1/images/{}/json", "e".repeat(64)), "{}", auth)
                .await;
            let image_refusal = if *who == "other" { 400 } else { *refused };
            assert_eq!(r.status, image_refusal, "{who} PUT json");
        }
        // Reads are public to all but wrong credentials.
        let read = if *who == "wrong password" { 401 } else { 200 };
        let r = c.get("/v1/repositories/owner/repo/tags", auth).await;
        assert_eq!(r.status, read, "{who} GET tags");
        let r = c.get("/v1/repositories/owner/repo/images", auth).await;
        assert_eq!(r.status, read, "{who} GET images");
    }
    let r = c
        .put("/v1/repositories/owner/repo/", "[]", &Auth::None)
        .await;
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Basic realm=\"auth required\",Token")
    );
    let r = c
        .put(
            "/v1/repositories/owner/repo/tags/x",
            tag_body.clone(),
            &Auth::None,
        )
        .await;
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Token"));
    assert_eq!(r.error(), "Requires authorization");
    let r = c
        .delete("/v1/repositories/owner/repo/", &Auth::admin())
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn tokens_are_scoped_to_repository_and_access() {
    let server = TestServer::start();
    let c = server.client();
    c.register("tokenuser", "token-pass").await;
    let basic = Auth::basic("tokenuser", "token-pass");
    let image = Image::new("scoped", 32);
    c.push_repo(
        "tokenuser/a",
        std::slice::from_ref(&image),
        "latest",
        &basic,
    )
    .await;
    c.push_repo(
        "tokenuser/b",
        std::slice::from_ref(&image),
        "latest",
        &basic,
    )
    .await;
    let token_for = |path: &'static str, method: &'static str| {
        let c = c.clone();
        let basic = basic.clone();
        async move {
            let r = c
                .send(
                    c.request(method, path)
                        .header("X-Docker-Token", "true")
                        .body("[]"),
                    &basic,
                )
                .await;
            r.header("x-docker-token").unwrap()
        }
    };
    let write_a = token_for("/v1/repositories/tokenuser/a/", "PUT").await;
    let read_a = token_for("/v1/repositories/tokenuser/a/images", "GET").await;
    let tag = format!("\"{}\"", image.id);

    let r = c
        .put(
            "/v1/repositories/tokenuser/a/tags/x",
            tag.clone(),
            &Auth::Token(write_a.clone()),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .put(
            "/v1/repositories/tokenuser/b/tags/x",
            tag.clone(),
            &Auth::Token(write_a.clone()),
        )
        .await;
    assert_eq!(r.status, 403, "token for a used on b");
    let r = c
        .put(
            "/v1/repositories/tokenuser/a/tags/y",
            tag.clone(),
            &Auth::Token(read_a.clone()),
        )
        .await;
    assert_eq!(r.status, 403, "read token used to write");
    let fresh = Image::new("scoped-new", 16);
    let r = c
        .put(
            &format!("/v1/images/{}/json", fresh.id),
            fresh.json.clone(),
            &Auth::Token(read_a.clone()),
        )
        .await;
    assert_eq!(r.status, 403, "read token used to push an image");
    let tampered = write_a.replace("tokenuser/a", "tokenuser/b");
    let r = c
        .put(
            "/v1/repositories/tokenuser/b/tags/x",
            tag.clone(),
            &Auth::Token(tampered),
        )
        .await;
    assert_eq!(r.status, 401, "tampered token");
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Token"));
    let r = c
        .put(
            "/v1/repositories/tokenuser/a/tags/x",
            tag.clone(),
            &Auth::Token("signature=abc".into()),
        )
        .await;
    assert_eq!(r.status, 401, "garbage token");

    // PUT .../auth validates a token for its repository.
    let r = c
        .put(
            "/v1/repositories/tokenuser/a/auth",
            "",
            &Auth::Token(write_a.clone()),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!("OK"));
    let r = c
        .put(
            "/v1/repositories/tokenuser/b/auth",
            "",
            &Auth::Token(write_a.clone()),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .put(
            "/v1/repositories/tokenuser/zz/auth",
            "",
            &Auth::Token(write_a),
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let mut cfg = TestServer::config();
    let ttl = Duration::from_secs(60);
    cfg.token_ttl = ttl;
    let clock = regfs::server::state::Clock::manual();
    cfg.clock = clock.clone();
    let server = TestServer::with_config(cfg);
    let c = server.client();
    let r = c
        .send(
            c.request("PUT", "/v1/repositories/library/exp/")
                .header("X-Docker-Token", "true")
                .body("[]"),
            &Auth::admin(),
        )
        .await;
    let token = r.header("x-docker-token").unwrap();
    let image = Image::new("exp", 8);
    c.push_image(&image, &Auth::Token(token.clone())).await;
    // Good to the last second of its life...
    clock.advance(ttl);
    let r = c
        .put(
            "/v1/repositories/library/exp/tags/last",
            format!("\"{}\"", image.id),
            &Auth::Token(token.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // ...and refused after it.
    clock.advance(Duration::from_secs(1));
    let r = c
        .put(
            "/v1/repositories/library/exp/tags/t",
            format!("\"{}\"", image.id),
            &Auth::Token(token),
        )
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn checksum_mismatch_leaves_the_image_unserved_and_a_retry_succeeds() {
    let server = TestServer::start();
    let c = server.client();
    let admin = Auth::admin();
    let image = Image::new("mismatch", 3000);
    let r = c.put_json(&image, &admin).await;
    assert_eq!(r.status, 200);
    let r = c.put_layer(&image, &admin).await;
    assert_eq!(r.status, 200);
    let r = c
        .send(
            c.request("PUT", &format!("/v1/images/{}/checksum", image.id))
                .header(
                    "X-Docker-Checksum-Payload",
                    format!("sha256:{}", "0".repeat(64)),
                ),
            &admin,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), "Checksum mismatch");
    for what in ["json", "layer", "ancestry"] {
        let r = c
            .get(&format!("/v1/images/{}/{what}", image.id), &no_auth())
            .await;
        assert_eq!(r.status, 400, "{what} of an unfinished image");
        assert_eq!(r.error(), "Image is being uploaded, retry later");
    }
    let r = c
        .put(
            "/v1/repositories/library/x/tags/t",
            format!("\"{}\"", image.id),
            &admin,
        )
        .await;
    assert!(
        r.status >= 400 && r.status < 500,
        "tagging an unfinished image"
    );
    // Checksum header rules.
    let r = c
        .put(&format!("/v1/images/{}/checksum", image.id), "", &admin)
        .await;
    assert_eq!(r.status, 412);
    let r = c
        .send(
            c.request("PUT", &format!("/v1/images/{}/checksum", image.id))
                .header("X-Docker-Checksum-Payload", ""),
            &admin,
        )
        .await;
    assert_eq!(r.status, 400);
    // The retry of the whole sequence completes the image.
    c.push_image(&image, &admin).await;
    let r = c
        .get(&format!("/v1/images/{}/layer", image.id), &no_auth())
        .await;
    assert_eq!(r.body, image.layer);
}

#[tokio::test]
async fn interrupted_layer_upload_leaves_nothing_served() {
    let server = TestServer::start();
    let c = server.client();
    let admin = Auth::admin();
    let image = Image::new("interrupted", 200_000);
    let r = c.put_json(&image, &admin).await;
    assert_eq!(r.status, 200);
    // The body stream fails half-way, as a killed client's would.
    let half = image.layer[..100_000].to_vec();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(half), Err(std::io::Error::other("client killed"))];
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let res = c
        .request("PUT", &format!("/v1/images/{}/layer", image.id))
        .basic_auth(ADMIN, Some(ADMIN_PASSWORD))
        .body(body)
        .send()
        .await;
    assert!(res.is_err() || res.unwrap().status().is_client_error());
    let r = c.put_checksum(&image, &admin).await;
    assert_eq!(r.status, 400, "no complete layer to check: {}", r.text());
    let r = c
        .get(&format!("/v1/images/{}/layer", image.id), &no_auth())
        .await;
    assert_eq!(r.status, 400);
    c.push_image(&image, &admin).await;
    let r = c
        .get(&format!("/v1/images/{}/layer", image.id), &no_auth())
        .await;
    assert_eq!(r.body, image.layer);
}

#[tokio::test]
async fn restart_on_the_same_storage_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let base = Image::new("persist-base", 1000);
    let top = Image::child("persist-top", &base, 2000);
    {
        let server = TestServer::on_disk(dir.path());
        let c = server.client();
        assert_eq!(c.register("persist", "persist-pass").await.status, 201);
        c.push_repo(
            "persist/app",
            &[base.clone(), top.clone()],
            "v1",
            &Auth::basic("persist", "persist-pass"),
        )
        .await;
        // An unfinished image too: it must stay unserved after the restart.
        let half = Image::new("persist-half", 10);
        c.put_json(&half, &Auth::admin()).await;
    }
    let server = TestServer::on_disk(dir.path());
    let c = server.client();
    assert_eq!(
        c.get("/v1/users/", &Auth::basic("persist", "persist-pass"))
            .await
            .status,
        200
    );
    let r = c.get("/v1/repositories/persist/app/tags", &no_auth()).await;
    assert_eq!(r.json(), serde_json::json!({"v1": top.id}));
    let r = c
        .get(&format!("/v1/images/{}/layer", top.id), &no_auth())
        .await;
    assert_eq!(r.body, top.layer);
    let r = c
        .get(&format!("/v1/images/{}/ancestry", top.id), &no_auth())
        .await;
    assert_eq!(r.json(), serde_json::json!([top.id, base.id]));
    let r = c.get("/v1/search?q=persist", &no_auth()).await;
    assert_eq!(r.json()["num_results"], 1);
    let half = Image::new("persist-half", 10);
    let r = c
        .get(&format!("/v1/images/{}/json", half.id), &no_auth())
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn layer_ranges_head_and_conditional_gets() {
    let server = TestServer::start();
    let c = server.client();
    let image = Image::new("ranges", 1000);
    c.push_repo(
        "library/ranges",
        std::slice::from_ref(&image),
        "latest",
        &Auth::admin(),
    )
    .await;
    let path = format!("/v1/images/{}/layer", image.id);
    let get_range = |range: &'static str| {
        let c = c.clone();
        let path = path.clone();
        async move {
            c.send(c.request("GET", &path).header("Range", range), &Auth::None)
                .await
        }
    };
    let r = get_range("bytes=0-99").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, image.layer[..100]);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes 0-99/1000")
    );
    let r = get_range("bytes=990-").await;
    assert_eq!(r.body, image.layer[990..]);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes 990-999/1000")
    );
    let r = get_range("bytes=-10").await;
    assert_eq!(r.body, image.layer[990..]);
    let r = get_range("bytes=500-5000").await;
    assert_eq!(r.body, image.layer[500..]);
    for bad in ["bytes=1000-", "bytes=5-1", "bytes=x-y", "bytes=-0"] {
        let r = get_range(bad).await;
        assert_eq!(r.status, 416, "{bad}");
        assert_eq!(r.header("content-range").as_deref(), Some("bytes */1000"));
        assert!(!r.error().is_empty());
    }
    let r = get_range("bytes=0-1,5-6").await;
    assert_eq!(r.status, 200, "multi-range is served whole");

    let r = c.send(c.request("HEAD", &path), &Auth::None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length").as_deref(), Some("1000"));
    assert_eq!(r.header("x-docker-size").as_deref(), Some("1000"));
    let r = c
        .send(
            c.request("GET", &format!("/v1/images/{}/json", image.id))
                .header("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT"),
            &Auth::None,
        )
        .await;
    assert_eq!(r.status, 304);
    let r = c
        .send(
            c.request("HEAD", "/v1/images/0000000000000000/layer"),
            &Auth::None,
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn search_lists_and_filters_repositories_as_namespace_slash_name() {
    let server = TestServer::start();
    let c = server.client();
    let image = Image::new("search", 8);
    let admin = Auth::admin();
    c.push_repo(
        "library/ubuntu",
        std::slice::from_ref(&image),
        "latest",
        &admin,
    )
    .await;
    c.push_repo(
        "library/debian",
        std::slice::from_ref(&image),
        "latest",
        &admin,
    )
    .await;
    c.register("searcher", "search-pass").await;
    c.push_repo(
        "searcher/ubuntu-tools",
        std::slice::from_ref(&image),
        "latest",
        &Auth::basic("searcher", "search-pass"),
    )
    .await;
    let r = c.get("/v1/search", &no_auth()).await;
    let body = r.json();
    assert_eq!(body["query"], "");
    assert_eq!(body["num_results"], 3);
    let names: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["library/debian", "library/ubuntu", "searcher/ubuntu-tools"]
    );
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["description"] == "")
    );
    let r = c.get("/v1/search?q=ubuntu", &no_auth()).await;
    assert_eq!(r.json()["num_results"], 2);
    assert_eq!(r.json()["query"], "ubuntu");
    let r = c.get("/v1/search?q=nothing-like-it", &no_auth()).await;
    assert_eq!(r.json()["num_results"], 0);
    let r = c.get("/v1/search?q=", &no_auth()).await;
    assert_eq!(r.json()["num_results"], 3);
}

#[tokio::test]
async fn deleting_a_repository_keeps_images_and_allows_a_new_push() {
    let server = TestServer::start();
    let c = server.client();
    let admin = Auth::admin();
    let image = Image::new("deleted", 64);
    c.push_repo(
        "library/gone",
        std::slice::from_ref(&image),
        "latest",
        &admin,
    )
    .await;
    let r = c
        .send(
            c.request("DELETE", "/v1/repositories/gone/")
                .header("X-Docker-Token", "true"),
            &admin,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-docker-token")
            .unwrap()
            .contains("access=delete")
    );
    for path in [
        "/v1/repositories/library/gone/tags",
        "/v1/repositories/library/gone/images",
        "/v1/repositories/library/gone/tags/latest",
    ] {
        let r = c.get(path, &no_auth()).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.error(), "Repository not found");
    }
    assert_eq!(
        c.get("/v1/search?q=gone", &no_auth()).await.json()["num_results"],
        0
    );
    let r = c
        .get(&format!("/v1/images/{}/layer", image.id), &no_auth())
        .await;
    assert_eq!(r.status, 200, "images are shared and stay");
    assert_eq!(
        c.delete("/v1/repositories/library/gone/", &admin)
            .await
            .status,
        404
    );
    c.push_repo(
        "library/gone",
        std::slice::from_ref(&image),
        "again",
        &admin,
    )
    .await;
    let r = c
        .get("/v1/repositories/library/gone/tags", &no_auth())
        .await;
    assert_eq!(r.json(), serde_json::json!({"again": image.id}));
    // DELETE .../tags deletes the repository too.
    assert_eq!(
        c.delete("/v1/repositories/library/gone/tags", &admin)
            .await
            .status,
        200
    );
    assert_eq!(
        c.get("/v1/repositories/library/gone/tags", &no_auth())
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn tags_get_put_delete_and_tag_json() {
    let server = TestServer::start();
    let c = server.client();
    let admin = Auth::admin();
    let image = Image::new("tagged", 64);
    c.push_repo(
        "library/tagged",
        std::slice::from_ref(&image),
        "latest",
        &admin,
    )
    .await;
    let ua = "docker/1.3.2 go/go1.3.3 git-commit/c78088f kernel/3.16.0-4-amd64 os/linux arch/amd64";
    let r = c
        .send(
            c.request("PUT", "/v1/repositories/library/tagged/tags/v1.0")
                .header("User-Agent", ua)
                .body(format!("\"{}\"", image.id)),
            &admin,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .get("/v1/repositories/library/tagged/tags/v1.0/json", &no_auth())
        .await;
    let info = r.json();
    assert_eq!(info["docker_version"], "1.3.2");
    assert_eq!(info["arch"], "amd64");
    assert!(info["last_update"].as_i64().unwrap() > 0);
    let r = c
        .get("/v1/repositories/library/tagged/json", &no_auth())
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .get("/v1/repositories/library/tagged/tags/nope", &no_auth())
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "Tag not found");
    let r = c
        .put(
            "/v1/repositories/library/tagged/tags/bad",
            format!("\"{}\"", "f".repeat(64)),
            &admin,
        )
        .await;
    assert_eq!(r.status, 404, "unknown image");
    for body in ["not json", "42", "[\"x\"]", "\"short\""] {
        let r = c
            .put("/v1/repositories/library/tagged/tags/bad", body, &admin)
            .await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.error(), "Invalid data");
    }
    let r = c
        .put(
            "/v1/repositories/library/tagged/tags/-bad",
            format!("\"{}\"", image.id),
            &admin,
        )
        .await;
    assert_eq!(r.status, 400, "invalid tag name");
    assert_eq!(
        c.delete("/v1/repositories/library/tagged/tags/v1.0", &admin)
            .await
            .status,
        200
    );
    assert_eq!(
        c.delete("/v1/repositories/library/tagged/tags/v1.0", &admin)
            .await
            .status,
        404
    );
    let r = c
        .get("/v1/repositories/library/tagged/tags", &no_auth())
        .await;
    assert_eq!(r.json(), serde_json::json!({"latest": image.id}));
    let r = c
        .get("/v1/repositories/library/unknown/tags", &no_auth())
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn image_json_is_validated() {
    let server = TestServer::start();
    let c = server.client();
    let admin = Auth::admin();
    let id = "c".repeat(64);
    let other = "d".repeat(64);
    for (body, why) in [
        ("not json".to_string(), "Invalid JSON"),
        ("[1,2]".to_string(), "Invalid JSON"),
        ("{}".to_string(), "missing id"),
        (format!(r#"{{"id":"{other}"}}"#), "id mismatch"),
        (
            format!(r#"{{"id":"{id}","parent":"{other}"}}"#),
            "parent missing",
        ),
        (
            format!(r#"{{"id":"{id}","parent":"../../etc"}}"#),
            "parent not an id",
        ),
        (
            format!(r#"{{"id":"{id}","parent":{{}}}}"#),
            "parent wrong type",
        ),
        (format!(r#"{{"id":"{id}","parent":"{id}"}}"#), "own parent"),
        (r#"{"id":5}"#.to_string(), "id wrong type"),
    ] {
        let r = c.put(&format!("/v1/images/{id}/json"), body, &admin).await;
        assert_eq!(r.status, 400, "{why}: {}", r.text());
        assert!(!r.error().is_empty());
    }
    let r = c
        .put(&format!("/v1/images/{id}/layer"), "bytes", &admin)
        .await;
    assert_eq!(r.status, 404, "layer before json");
    assert_eq!(r.error(), "Image not found");
    let r = c
        .send(
            c.request("PUT", &format!("/v1/images/{id}/checksum"))
                .header("X-Docker-Checksum-Payload", "sha256:00"),
            &admin,
        )
        .await;
    assert_eq!(r.status, 404, "checksum before json");
    let r = c
        .put(
            &format!("/v1/images/{id}/json"),
            format!(r#"{{"id":"{id}"}}"#),
            &admin,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .send(
            c.request("PUT", &format!("/v1/images/{id}/checksum"))
                .header("X-Docker-Checksum-Payload", "sha256:00"),
            &admin,
        )
        .await;
    assert_eq!(r.status, 400, "checksum before layer");
    let r = c
        .send(
            c.request("PUT", &format!("/v1/images/{id}/layer"))
                .header("User-Agent", "docker/0.9.1 go/go1.2"),
            &admin,
        )
        .await;
    assert_eq!(r.status, 412, "pre-0.10 clients");
}

#[tokio::test]
async fn oversized_layers_are_refused_and_not_served() {
    let mut cfg = TestServer::config();
    cfg.max_layer_size = 1000;
    let server = TestServer::with_config(cfg);
    let c = server.client();
    let admin = Auth::admin();
    let image = Image::new("big", 1001);
    c.put_json(&image, &admin).await;
    let r = c.put_layer(&image, &admin).await;
    assert_eq!(r.status, 413);
    let r = c.put_checksum(&image, &admin).await;
    assert_eq!(r.status, 400);
}

/// Malformed input of every kind gets a 4xx with a JSON error, never a 5xx.
#[tokio::test]
async fn hostile_input_gets_4xx_json_errors() {
    let server = TestServer::start();
    let c = server.client();
    let admin = Auth::admin();
    let image = Image::new("hostile", 16);
    c.push_repo(
        "library/target",
        std::slice::from_ref(&image),
        "latest",
        &admin,
    )
    .await;
    let long = "a".repeat(300);
    let paths = [
        "/v1/images/../../etc/passwd/json".to_string(),
        "/v1/images/%2e%2e/json".to_string(),
        "/v1/images/..%2f..%2fetc/layer".to_string(),
        format!("/v1/images/{}/json", "A".repeat(64)),
        "/v1/images/%00/json".to_string(),
        "/v1/repositories/../../tags".to_string(),
        "/v1/repositories/%2e%2e/tags".to_string(),
        "/v1/repositories/library/../tags".to_string(),
        "/v1/repositories/library/..%2f..%2fetc/tags".to_string(),
        "/v1/repositories/library/a%2fb/tags".to_string(),
        "/v1/repositories/library/%00/tags".to_string(),
        "/v1/repositories/library/%ff%fe/tags".to_string(),
        format!("/v1/repositories/library/{long}/tags"),
        format!("/v1/repositories/{long}/x/tags"),
        "/v1/repositories/library/target/tags/..".to_string(),
        "/v1/repositories/library/target/tags/%2e%2e".to_string(),
        format!("/v1/repositories/library/target/tags/{long}"),
        "/v1/users/..%2f..".to_string(),
        "/v1/nonsense".to_string(),
        "/v1/images/x".to_string(),
    ];
    let addr = server.addr;
    let auth_header = "Authorization: Basic YWRtaW46YWRtaW4tc2VjcmV0\r\n";
    let mut raw_paths: Vec<Vec<u8>> = paths.iter().map(|p| p.clone().into_bytes()).collect();
    raw_paths.push(b"/v1/repositories/library/\xff/tags".to_vec());
    raw_paths.push(b"/v1/images/\xc3\xa9/json".to_vec());
    for path in raw_paths {
        for method in ["GET", "PUT", "DELETE", "HEAD", "POST"] {
            let path2 = path.clone();
            let (status, body) = tokio::task::spawn_blocking(move || {
                crate::common::raw_request(addr, method, &path2, auth_header)
            })
            .await
            .unwrap();
            let shown = String::from_utf8_lossy(&path);
            assert!((400..500).contains(&status), "{method} {shown} -> {status}");
            // Bytes that are not a valid URI are refused by the HTTP parser itself (a bare 400).
            if method != "HEAD" && path.is_ascii() {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                    panic!("{method} {shown}: {:?}", String::from_utf8_lossy(&body))
                });
                assert!(v["error"].is_string(), "{method} {shown}: {v}");
            }
        }
    }
    // Bodies over the JSON limit.
    let huge = vec![b' '; 2 * 1024 * 1024];
    for path in [
        "/v1/repositories/library/target/",
        "/v1/repositories/library/target/images",
        "/v1/users/",
    ] {
        let method = if path == "/v1/users/" { "POST" } else { "PUT" };
        let r = c
            .send(c.request(method, path).body(huge.clone()), &admin)
            .await;
        assert_eq!(r.status, 413, "{path}");
    }
    let r = c
        .put(
            &format!("/v1/images/{}/json", "9".repeat(64)),
            huge.clone(),
            &admin,
        )
        .await;
    assert_eq!(r.status, 413);
    // Malformed JSON and wrong types on every JSON endpoint.
    for body in [
        "{",
        "null",
        "\"str\"",
        "{\"id\": 1}",
        "[{\"id\": 5}]",
        "[{\"id\": \"../x\"}]",
        "[1]",
    ] {
        for path in [
            "/v1/repositories/library/target/",
            "/v1/repositories/library/target/images",
        ] {
            let r = c.put(path, body, &admin).await;
            assert_eq!(r.status, 400, "PUT {path} {body}: {}", r.text());
        }
        let r = c
            .send(c.request("POST", "/v1/users/").body(body), &Auth::None)
            .await;
        assert_eq!(r.status, 400, "POST users {body}");
    }
    // Authorization headers that cannot be parsed are wrong credentials: 401, never 400.
    let long_auth = format!("Basic {}", "QUFB".repeat(2000));
    for header in [
        "Basic !!!!",
        "Basic",
        "Basic dXNlcg==",
        "Bearer abc.def",
        "Digest username=x",
        "Token signature=x,repository=\"../..\",access=write",
        long_auth.as_str(),
        "garbage",
    ] {
        let r = c
            .put(
                "/v1/repositories/library/target/tags/z",
                format!("\"{}\"", image.id),
                &Auth::Raw(header.into()),
            )
            .await;
        assert_eq!(r.status, 401, "{header}");
        let r = c
            .get(
                "/v1/repositories/library/target/tags",
                &Auth::Raw(header.into()),
            )
            .await;
        assert_eq!(r.status, 401, "{header}");
    }
    let r = c
        .send(
            c.request("GET", "/v1/users/").header(
                "Authorization",
                reqwest::header::HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap(),
            ),
            &Auth::None,
        )
        .await;
    assert_eq!(r.status, 401);
    // Search with odd queries.
    for q in ["%00", "%ff", &"x".repeat(300), "a&q=b", "%"] {
        let r = c.get(&format!("/v1/search?q={q}"), &no_auth()).await;
        assert!(
            (200..500).contains(&r.status) && r.status != 500,
            "q={q}: {}",
            r.status
        );
    }
    // The server is still healthy.
    assert_eq!(c.get("/v1/_ping", &no_auth()).await.status, 200);
}

#[tokio::test]
async fn serves_https_with_a_given_certificate() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut cfg = TestServer::config();
    cfg.tls = Some((cert_path, key_path));
    let server = TestServer::with_config(cfg);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /v1/_ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    let _ = tls.read_to_end(&mut resp).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_lowercase()
            .contains("x-docker-registry-standalone: true")
    );

    // Plain HTTP to the TLS port is refused, not served.
    let r = reqwest::Client::new()
        .get(format!("http://{}/v1/_ping", server.addr))
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_does_not_block_others() {
    let server = TestServer::start();
    // Hold a few connections open mid-headers.
    let mut idle = Vec::new();
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /v1/_ping HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        idle.push(s);
    }
    let r = server.client().get("/v1/_ping", &Auth::None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_body_refused_unread_does_not_break_the_clients_next_request() {
    let server = TestServer::start();
    let c = server.client();
    let img = Image::new("refused-unread", 256 * 1024);
    // No json yet: the layer is refused before its body is read. Several times over one
    // client, so a pooled connection the server closed would be picked up again.
    for _ in 0..5 {
        let r = c.put_layer(&img, &Auth::admin()).await;
        assert_eq!(r.status, 404, "{}", r.text());
        assert_eq!(r.header("connection").as_deref(), Some("close"));
        let ping = c.get("/v1/_ping", &Auth::None).await;
        assert_eq!(ping.status, 200);
    }
    c.push_image(&img, &Auth::admin()).await;
}

/// Sets the modification time of every directory under `root` (itself included) to `age` ago,
/// as if nothing had changed in them since.
fn backdate_dirs(root: &std::path::Path, age: Duration) {
    let then = std::time::SystemTime::now() - age;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            }
        }
        std::fs::File::open(&dir)
            .unwrap()
            .set_modified(then)
            .unwrap();
    }
}

#[tokio::test]
async fn tags_listed_from_a_settled_directory_still_see_another_servers_changes() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::on_disk(dir.path());
    let b = TestServer::on_disk(dir.path());
    let (ca, cb) = (a.client(), b.client());
    let (one, two) = (Image::new("settled-1", 1024), Image::new("settled-2", 1024));
    ca.push_image(&one, &Auth::admin()).await;
    ca.push_image(&two, &Auth::admin()).await;
    let tags = "/v1/repositories/library/settled/tags";
    let set = |c: &crate::common::Client, tag: &'static str, id: String| {
        let c = c.clone();
        async move {
            let r = c
                .put(
                    &format!("{tags}/{tag}"),
                    format!("\"{id}\""),
                    &Auth::admin(),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    };
    set(&ca, "t1", one.id.clone()).await;
    // Old enough for server A to keep its listing (the store keeps listings of directories
    // last changed over two seconds ago); then every change comes from B.
    backdate_dirs(dir.path(), Duration::from_secs(60));
    for _ in 0..2 {
        assert_eq!(
            ca.get(tags, &Auth::None).await.json(),
            serde_json::json!({"t1": one.id})
        );
    }
    set(&cb, "t2", one.id.clone()).await;
    assert_eq!(
        ca.get(tags, &Auth::None).await.json(),
        serde_json::json!({"t1": one.id, "t2": one.id})
    );
    set(&cb, "t2", two.id.clone()).await;
    assert_eq!(
        ca.get(tags, &Auth::None).await.json(),
        serde_json::json!({"t1": one.id, "t2": two.id})
    );
    let r = cb.delete(&format!("{tags}/t1"), &Auth::admin()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        ca.get(tags, &Auth::None).await.json(),
        serde_json::json!({"t2": two.id})
    );
}
