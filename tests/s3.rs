//! Several `regfs serve` instances on one S3 bucket (a real store: `scripts/s3-local.sh`).

use std::time::{Duration, Instant};

use regfs::storage::{S3Config, StorageConfig};

use crate::common::{Auth, Image, TestServer};

/// A server on `prefix` of the test bucket, with the shared token secret of `TestServer`.
fn instance(prefix: &str) -> TestServer {
    let bucket = std::env::var("S3_BUCKET").expect("S3_BUCKET (see scripts/s3-local.sh)");
    let mut cfg = TestServer::config();
    cfg.storage = StorageConfig::S3(S3Config::parse(&format!("s3://{bucket}/{prefix}")).unwrap());
    TestServer::with_config(cfg)
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
        let json = c
            .put(
                &format!("/v1/images/{}/json", image.id),
                image.json.clone(),
                &admin,
            )
            .await;
        let layer = c
            .put(
                &format!("/v1/images/{}/layer", image.id),
                image.layer.clone(),
                &admin,
            )
            .await;
        let sum = c
            .send(
                c.request("PUT", &format!("/v1/images/{}/checksum", image.id))
                    .header("X-Docker-Checksum-Payload", image.checksum()),
                &admin,
            )
            .await;
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
