//! Several `regfs serve` instances on one S3 bucket, and layer GETs redirected to the store
//! (a real store: `scripts/s3-local.sh`).

use std::time::{Duration, Instant};

use regfs::server::ServeConfig;
use regfs::storage::{S3Config, StorageConfig};

use crate::common::{Auth, Client, Image, TestServer};

/// A server on `prefix` of the test bucket, with the shared token secret of `TestServer`.
fn instance(prefix: &str) -> TestServer {
    TestServer::with_config(config(prefix))
}

fn config(prefix: &str) -> ServeConfig {
    let bucket = std::env::var("S3_BUCKET").expect("S3_BUCKET (see scripts/s3-local.sh)");
    let mut cfg = TestServer::config();
    cfg.storage = StorageConfig::S3(S3Config::parse(&format!("s3://{bucket}/{prefix}")).unwrap());
    cfg
}

/// A server with `--redirect-layers` on a fresh prefix.
fn redirecting() -> TestServer {
    let mut cfg = config(&format!("redirect-{}", uuid::Uuid::new_v4()));
    cfg.redirect_layers = true;
    TestServer::with_config(cfg)
}

/// A client of `server` that shows redirects instead of following them.
fn no_follow(server: &TestServer) -> Client {
    Client {
        base: server.url.clone(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_bucket_serve_each_other_s_pushes() {
    let prefix = format!("two-{}", uuid::Uuid::new_v4());
    let a = instance(&prefix);
    let b = instance(&prefix);
    let (ca, cb) = (a.client(), b.client());
    assert_eq!(ca.register("sharer", "sharer-pass").await.status, 201);
    // The account made on A logs in on B.
    assert_eq!(
        cb.get("/v1/users/", &Auth::basic("sharer", "sharer-pass"))
            .await
            .status,
        200
    );

    let base = Image::new("s3-base", 6 * 1024 * 1024 + 17);
    let top = Image::child("s3-top", &base, 1000);
    // A token from A is accepted by B: push the repository with it.
    let r = ca
        .send(
            ca.request("PUT", "/v1/repositories/sharer/app/")
                .header("X-Docker-Token", "true")
                .body("[]"),
            &Auth::basic("sharer", "sharer-pass"),
        )
        .await;
    let token = Auth::Token(r.header("x-docker-token").unwrap());
    cb.push_image(&base, &token).await;
    ca.push_image(&top, &token).await;
    let r = cb
        .put(
            "/v1/repositories/sharer/app/tags/latest",
            format!("\"{}\"", top.id),
            &token,
        )
        .await;
    assert_eq!(r.status, 200);

    // Pull through the other one.
    let r = ca
        .get("/v1/repositories/sharer/app/tags", &Auth::None)
        .await;
    assert_eq!(r.json(), serde_json::json!({"latest": top.id}));
    let r = ca
        .get(&format!("/v1/images/{}/ancestry", top.id), &Auth::None)
        .await;
    assert_eq!(r.json(), serde_json::json!([top.id, base.id]));
    let r = ca
        .get(&format!("/v1/images/{}/layer", base.id), &Auth::None)
        .await;
    assert!(
        r.body == base.layer,
        "a multipart layer pushed via B reads back via A"
    );
    let r = cb
        .send(
            cb.request("GET", &format!("/v1/images/{}/layer", base.id))
                .header("Range", "bytes=5242870-5242900"),
            &Auth::None,
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, base.layer[5_242_870..=5_242_900]);

    // Search on both, within the 10 s the listing may lag.
    let deadline = Instant::now() + Duration::from_secs(10);
    for c in [&ca, &cb] {
        loop {
            let r = c.get("/v1/search?q=sharer", &Auth::None).await;
            if r.json()["num_results"] == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "search on every instance within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pushes_of_one_image_through_two_instances_end_complete() {
    let prefix = format!("race-{}", uuid::Uuid::new_v4());
    let a = instance(&prefix);
    let b = instance(&prefix);
    let image = Image::new("s3-race", 3 * 1024 * 1024);
    let (ca, cb) = (a.client(), b.client());
    let push = |c: crate::common::Client, image: Image| async move {
        let admin = Auth::admin();
        let json = c.put_json(&image, &admin).await;
        let layer = c.put_layer(&image, &admin).await;
        let sum = c.put_checksum(&image, &admin).await;
        (json.status, layer.status, sum.status)
    };
    let (ra, rb) = tokio::join!(
        push(ca.clone(), image.clone()),
        push(cb.clone(), image.clone())
    );
    // Each step either succeeds or meets the other's completed image (409); never a 5xx.
    for (json, layer, sum) in [ra, rb] {
        for status in [json, layer, sum] {
            assert!(
                status == 200 || status == 409 || status == 400,
                "{ra:?} {rb:?}"
            );
        }
    }
    // Whatever the interleaving, a retry completes the image if neither finished.
    if ca
        .get(&format!("/v1/images/{}/json", image.id), &Auth::None)
        .await
        .status
        != 200
    {
        push(ca.clone(), image.clone()).await;
    }
    for c in [&ca, &cb] {
        let r = c
            .get(&format!("/v1/images/{}/layer", image.id), &Auth::None)
            .await;
        assert_eq!(r.status, 200);
        assert!(r.body == image.layer);
        let r = c
            .get(&format!("/v1/images/{}/json", image.id), &Auth::None)
            .await;
        assert_eq!(
            r.header("x-docker-checksum-payload"),
            Some(image.checksum())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redirected_layer_gets_lead_to_the_exact_bytes_in_the_store() {
    let server = redirecting();
    let follow = server.client();
    let image = Image::new(
        &format!("redirect-{}", uuid::Uuid::new_v4()),
        6 * 1024 * 1024 + 5,
    );
    follow.push_image(&image, &Auth::admin()).await;
    let path = format!("/v1/images/{}/layer", image.id);

    // Anonymous: layers stay public, and the answer is a redirect with the usual headers.
    let r = no_follow(&server).get(&path, &Auth::None).await;
    assert_eq!(r.status, 302, "{}", r.text());
    let location = r.header("location").unwrap();
    let endpoint = std::env::var("S3_ENDPOINT").expect("S3_ENDPOINT");
    assert!(location.starts_with(&endpoint), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    assert_eq!(
        r.header("x-docker-size"),
        Some(image.layer.len().to_string())
    );
    assert_eq!(
        r.header("x-docker-checksum-payload"),
        Some(image.checksum())
    );
    assert!(r.header("cache-control").unwrap().contains("no-cache"));

    // Following it gives the layer byte for byte, anonymous or with credentials (a client
    // drops them on the way to another origin, as Docker's does).
    for auth in [Auth::None, Auth::admin()] {
        let r = follow.get(&path, &auth).await;
        assert_eq!(r.status, 200);
        assert!(r.body == image.layer, "redirected GET returns the layer");
    }
    // Ranges are re-sent to the store, which answers them.
    let r = follow
        .send(
            follow
                .request("GET", &path)
                .header("Range", "bytes=5242870-5242900"),
            &Auth::None,
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, image.layer[5_242_870..=5_242_900]);
    let r = follow
        .send(
            follow.request("GET", &path).header("Range", "bytes=-10"),
            &Auth::None,
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, image.layer[image.layer.len() - 10..]);

    // An unsatisfiable range is answered here, as without redirects.
    let nf = no_follow(&server);
    let r = nf
        .send(
            nf.request("GET", &path).header("Range", "bytes=99999999-"),
            &Auth::None,
        )
        .await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("location"), None);

    // HEAD is answered by the server itself: sizes without a trip to the store.
    let r = nf.send(nf.request("HEAD", &path), &Auth::None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("location"), None);
    assert_eq!(
        r.header("x-docker-size"),
        Some(image.layer.len().to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_complete_images_and_valid_callers_are_redirected() {
    let server = redirecting();
    let c = no_follow(&server);
    let image = Image::new(&format!("pending-{}", uuid::Uuid::new_v4()), 1000);
    let admin = Auth::admin();
    let path = format!("/v1/images/{}/layer", image.id);
    // Unknown image: 404.
    assert_eq!(c.get(&path, &Auth::None).await.status, 404);
    // json and layer stored, checksum not yet: in progress, 400 as without redirects.
    let json = format!("/v1/images/{}/json", image.id);
    assert_eq!(c.put(&json, image.json.clone(), &admin).await.status, 200);
    assert_eq!(c.put(&path, image.layer.clone(), &admin).await.status, 200);
    let r = c.get(&path, &Auth::None).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("location"), None);
    // Credentials are checked before any redirect: a wrong password is 401.
    let r = c
        .get(&path, &Auth::basic(crate::common::ADMIN, "wrong"))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("location"), None);
}
