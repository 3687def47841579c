//! Writes through a real mount, each checked through the HTTP API afterwards.

use std::time::Duration;

use regfs::mount::FsConfig;

use crate::common::mount::TestMount;
use crate::common::{
    ADMIN, ADMIN_PASSWORD, Auth, Image, TestServer, write_and_fsync, write_cut_short,
};

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// A server holding one complete image (and a child), and a mount as the given user.
async fn setup(
    user: Option<(&str, &str)>,
    read_only: bool,
) -> (TestServer, Image, Image, TestMount) {
    let server = TestServer::start();
    let c = server.client();
    let base = Image::new("w-base", 1000);
    let child = Image::child("w-child", &base, 2000);
    c.push_image(&base, &Auth::admin()).await;
    c.push_image(&child, &Auth::admin()).await;
    assert_eq!(c.register("writer", "writer-pass").await.status, 201);
    let url = server.url.clone();
    let user = user.map(|(u, p)| (u.to_string(), p.to_string()));
    let mount = tokio::task::spawn_blocking(move || {
        let config = FsConfig {
            read_only,
            ..FsConfig::default()
        };
        let creds = user.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        TestMount::with_config(&url, creds, config, Duration::from_secs(5))
    })
    .await
    .unwrap();
    (server, base, child, mount)
}

#[tokio::test(flavor = "multi_thread")]
async fn mkdir_tag_copy_move_remove_and_rm_r_reach_the_registry() {
    let (server, base, child, m) = setup(Some(("writer", "writer-pass")), false).await;
    let c = server.client();
    let (child_id, base_id) = (child.id.clone(), base.id.clone());
    let m = tokio::task::spawn_blocking(move || {
        let repo = m.join("repositories/writer/app");
        // A repository this thread just made is empty to it until it makes `tags/`.
        std::fs::create_dir_all(repo.join("tags")).unwrap();
        std::fs::write(repo.join("tags/latest"), format!("{child_id}\n")).unwrap();
        std::fs::write(repo.join("tags/quoted"), format!("\"{base_id}\"")).unwrap();
        assert_eq!(
            std::fs::read_to_string(repo.join("tags/latest")).unwrap(),
            format!("{child_id}\n")
        );
        std::fs::copy(repo.join("tags/latest"), repo.join("tags/copy")).unwrap();
        std::fs::rename(repo.join("tags/copy"), repo.join("tags/moved")).unwrap();
        std::fs::remove_file(repo.join("tags/quoted")).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(repo.join("tags"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["latest", "moved"]);
        m
    })
    .await
    .unwrap();
    let tags = c.get("/v1/repositories/writer/app/tags", &Auth::None).await;
    assert_eq!(
        tags.json(),
        serde_json::json!({"latest": child.id, "moved": child.id})
    );
    // The image list follows the tags, ancestry included: pullable by Docker 1.x.
    let images = c
        .get("/v1/repositories/writer/app/images", &Auth::None)
        .await;
    let ids: Vec<String> = images
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&child.id) && ids.contains(&base.id), "{ids:?}");

    let m = tokio::task::spawn_blocking(move || {
        std::fs::remove_dir_all(m.join("repositories/writer/app")).unwrap();
        m
    })
    .await
    .unwrap();
    let r = c.get("/v1/repositories/writer/app/tags", &Auth::None).await;
    assert_eq!(r.status, 404, "rm -r deleted the repository");
    let r = c
        .get(&format!("/v1/images/{}/json", child.id), &Auth::None)
        .await;
    assert_eq!(r.status, 200, "images stay");
    tokio::task::spawn_blocking(move || drop(m)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_writes_fail_where_programs_see_them() {
    let (server, _base, child, m) = setup(Some(("writer", "writer-pass")), false).await;
    let c = server.client();
    let child_id = child.id.clone();
    let m = tokio::task::spawn_blocking(move || {
        let repo = m.join("repositories/writer/errs");
        std::fs::create_dir_all(repo.join("tags")).unwrap();
        // Not an id: refused at write.
        let e = std::fs::write(repo.join("tags/bad"), "garbage\n").unwrap_err();
        assert_eq!(errno(e), libc::EINVAL);
        // A valid-looking id of no image: refused at the write that completes the id, and
        // again at fsync (close too, but std does not report errors from close).
        let mut f = std::fs::File::create(repo.join("tags/ghost")).unwrap();
        let e = std::io::Write::write_all(&mut f, "f".repeat(64).as_bytes()).unwrap_err();
        assert_eq!(errno(e), libc::EINVAL);
        drop(f);
        // Invalid names.
        let e = std::fs::write(repo.join("tags/-bad"), &child_id).unwrap_err();
        assert_eq!(errno(e), libc::EINVAL);
        let e = std::fs::create_dir(m.join("repositories/writer/Bad")).unwrap_err();
        assert_eq!(errno(e), libc::EINVAL);
        // Another user's namespace.
        let e = std::fs::create_dir_all(m.join("repositories/someone/app")).unwrap_err();
        assert_eq!(errno(e), libc::EACCES);
        // Images are immutable.
        let image = m.join(&format!("images/{child_id}"));
        let e = std::fs::write(image.join("json"), "{}").unwrap_err();
        assert_eq!(errno(e), libc::EPERM);
        let e = std::fs::remove_file(image.join("layer")).unwrap_err();
        assert_eq!(errno(e), libc::EPERM);
        // A repository with tags is not removed by a bare rmdir.
        std::fs::write(repo.join("tags/keep"), &child_id).unwrap();
        let e = std::fs::remove_dir(&repo).unwrap_err();
        assert_eq!(errno(e), libc::ENOTEMPTY);
        // Existing repository.
        let e = std::fs::create_dir(&repo).unwrap_err();
        assert_eq!(errno(e), libc::EEXIST);
        m
    })
    .await
    .unwrap();
    let tags = c
        .get("/v1/repositories/writer/errs/tags", &Auth::None)
        .await;
    assert_eq!(tags.json(), serde_json::json!({"keep": child.id}));
    let r = c
        .get("/v1/repositories/someone/app/tags", &Auth::None)
        .await;
    assert_eq!(r.status, 404);
    tokio::task::spawn_blocking(move || drop(m)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_and_read_only_mounts_refuse_at_open() {
    let (server, _base, child, anon) = setup(None, false).await;
    let url = server.url.clone();
    let child_id = child.id.clone();
    let c = server.client();
    let r = c
        .put(
            "/v1/repositories/writer/ro/",
            "[]",
            &Auth::basic("writer", "writer-pass"),
        )
        .await;
    assert_eq!(r.status, 200);
    tokio::task::spawn_blocking(move || {
        let e = std::fs::write(anon.join("repositories/writer/ro/tags/t"), &child_id).unwrap_err();
        assert_eq!(errno(e), libc::EACCES);
        let e = std::fs::create_dir(anon.join("repositories/writer/new")).unwrap_err();
        assert_eq!(errno(e), libc::EACCES);
        drop(anon);
        let config = FsConfig {
            read_only: true,
            ..FsConfig::default()
        };
        let ro = TestMount::with_config(
            &url,
            Some((ADMIN, ADMIN_PASSWORD)),
            config,
            Duration::from_secs(5),
        );
        let e = std::fs::write(ro.join("repositories/writer/ro/tags/t"), &child_id).unwrap_err();
        assert_eq!(errno(e), libc::EROFS);
        let e = std::fs::create_dir(ro.join("repositories/writer/new")).unwrap_err();
        assert_eq!(errno(e), libc::EROFS);
    })
    .await
    .unwrap();
    let r = c.get("/v1/repositories/writer/ro/tags", &Auth::None).await;
    assert_eq!(r.json(), serde_json::json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_writers_racing_on_one_tag_leave_one_of_their_values() {
    let (server, base, child, m) = setup(Some((ADMIN, ADMIN_PASSWORD)), false).await;
    let c = server.client();
    let (a, b) = (base.id.clone(), child.id.clone());
    let m = tokio::task::spawn_blocking(move || {
        let repo = m.join("repositories/library/race");
        std::fs::create_dir_all(&repo).unwrap();
        let tag = repo.join("tags/latest");
        std::thread::scope(|s| {
            for _ in 0..4 {
                for id in [&a, &b] {
                    let tag = tag.clone();
                    s.spawn(move || std::fs::write(&tag, format!("{id}\n")).unwrap());
                }
            }
        });
        m
    })
    .await
    .unwrap();
    let r = c
        .get("/v1/repositories/library/race/tags/latest", &Auth::None)
        .await;
    let id = r.json();
    assert!(
        id == serde_json::json!(base.id) || id == serde_json::json!(child.id),
        "{id}"
    );
    tokio::task::spawn_blocking(move || drop(m)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn images_push_through_the_mount_in_either_order_and_pull_over_http() {
    let (server, _base, _child, m) = setup(Some((ADMIN, ADMIN_PASSWORD)), false).await;
    let c = server.client();
    let first = Image::new("push-json-first", 3_000_123);
    let second = Image::child("push-layer-first", &first, 2_000_001);
    let (a, b) = (first.clone(), second.clone());
    let m = tokio::task::spawn_blocking(move || {
        let dir = m.join(&format!("images/{}", a.id));
        std::fs::create_dir(&dir).unwrap();
        write_and_fsync(&dir.join("json"), &a.json).unwrap();
        write_and_fsync(&dir.join("layer"), &a.layer).unwrap();
        let dir = m.join(&format!("images/{}", b.id));
        std::fs::create_dir(&dir).unwrap();
        write_and_fsync(&dir.join("layer"), &b.layer).unwrap();
        write_and_fsync(&dir.join("json"), &b.json).unwrap();
        // Tag it, as a user would, and the repository becomes pullable.
        std::fs::create_dir_all(m.join("repositories/library/pushed/tags")).unwrap();
        write_and_fsync(
            &m.join("repositories/library/pushed/tags/latest"),
            format!("{}\n", b.id).as_bytes(),
        )
        .unwrap();
        m
    })
    .await
    .unwrap();
    // A Docker 1.x pull, request by request.
    let r = c
        .send(
            c.request("GET", "/v1/repositories/library/pushed/images")
                .header("X-Docker-Token", "true"),
            &Auth::None,
        )
        .await;
    assert_eq!(r.status, 200);
    let token = Auth::Token(r.header("x-docker-token").unwrap());
    let tags = c.get("/v1/repositories/library/pushed/tags", &token).await;
    assert_eq!(tags.json(), serde_json::json!({"latest": second.id}));
    let ancestry = c
        .get(&format!("/v1/images/{}/ancestry", second.id), &token)
        .await;
    assert_eq!(ancestry.json(), serde_json::json!([second.id, first.id]));
    for image in [&first, &second] {
        let json = c
            .get(&format!("/v1/images/{}/json", image.id), &token)
            .await;
        assert_eq!(json.status, 200);
        assert_eq!(json.body, image.json);
        assert_eq!(
            json.header("x-docker-checksum-payload"),
            Some(image.checksum())
        );
        let layer = c
            .get(&format!("/v1/images/{}/layer", image.id), &token)
            .await;
        assert!(layer.body == image.layer, "layer differs");
    }
    tokio::task::spawn_blocking(move || drop(m)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cp_r_copies_an_image_between_two_registries() {
    let source = TestServer::start();
    let target = TestServer::start();
    let base = Image::new("cp-base", 100_000);
    let top = Image::child("cp-top", &base, 1_500_000);
    source
        .client()
        .push_repo(
            "library/src",
            &[base.clone(), top.clone()],
            "latest",
            &Auth::admin(),
        )
        .await;
    let (su, tu) = (source.url.clone(), target.url.clone());
    let (b, t) = (base.id.clone(), top.id.clone());
    tokio::task::spawn_blocking(move || {
        let creds = Some((ADMIN, ADMIN_PASSWORD));
        let ms = TestMount::new(&su, creds);
        let mt = TestMount::new(&tu, creds);
        for id in [&b, &t] {
            let status = std::process::Command::new("cp")
                .arg("-r")
                .arg(ms.join(&format!("images/{id}")))
                .arg(mt.join("images/"))
                .status()
                .unwrap();
            assert!(status.success(), "cp -r of {id}");
        }
    })
    .await
    .unwrap();
    let c = target.client();
    let r = c
        .get(&format!("/v1/images/{}/ancestry", top.id), &Auth::None)
        .await;
    assert_eq!(r.json(), serde_json::json!([top.id, base.id]));
    let r = c
        .get(&format!("/v1/images/{}/layer", top.id), &Auth::None)
        .await;
    assert!(r.body == top.layer);
    let r = c
        .get(&format!("/v1/images/{}/json", top.id), &Auth::None)
        .await;
    assert_eq!(r.body, top.json);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_pushes_fail_and_leave_nothing_served() {
    let (server, base, _child, m) = setup(Some((ADMIN, ADMIN_PASSWORD)), false).await;
    let c = server.client();
    let fresh = Image::new("bad-push", 10_000);
    let orphan = Image::child("orphan", &Image::new("never-pushed", 1), 100);
    let (f, o, existing) = (fresh.clone(), orphan.clone(), base.id.clone());
    let m = tokio::task::spawn_blocking(move || {
        // An image the registry has: EEXIST; its files: EPERM.
        let e = std::fs::create_dir(m.join(&format!("images/{existing}"))).unwrap_err();
        assert_eq!(errno(e), libc::EEXIST);
        let dir = m.join(&format!("images/{}", f.id));
        std::fs::create_dir(&dir).unwrap();
        // json naming another image: EINVAL, nothing sent.
        let e = write_and_fsync(&dir.join("json"), &o.json).unwrap_err();
        assert_eq!(errno(e), libc::EINVAL);
        // Non-sequential layer writes: EINVAL.
        write_and_fsync(&dir.join("json"), &f.json).unwrap();
        {
            use std::os::unix::fs::FileExt;
            let file = std::fs::File::create(dir.join("layer")).unwrap();
            file.write_all_at(&f.layer[..100], 0).unwrap();
            let e = file.write_all_at(&f.layer[5000..5100], 5000).unwrap_err();
            assert_eq!(errno(e), libc::EINVAL);
        }
        // A parent the registry does not have: refused at close of the json.
        let dir = m.join(&format!("images/{}", o.id));
        std::fs::create_dir(&dir).unwrap();
        let e = write_and_fsync(&dir.join("json"), &o.json).unwrap_err();
        assert_eq!(errno(e), libc::EINVAL);
        // A file that is not part of an image.
        let e = std::fs::write(dir.join("other"), "x").unwrap_err();
        assert_eq!(errno(e), libc::EINVAL);
        m
    })
    .await
    .unwrap();
    for id in [&fresh.id, &orphan.id] {
        let r = c.get(&format!("/v1/images/{id}/layer"), &Auth::None).await;
        assert!(
            r.status == 400 || r.status == 404,
            "{id} is not served: {}",
            r.status
        );
    }
    // A retry of the interrupted push completes it.
    let f = fresh.clone();
    let m = tokio::task::spawn_blocking(move || {
        let dir = m.join(&format!("images/{}", f.id));
        write_and_fsync(&dir.join("layer"), &f.layer).unwrap();
        m
    })
    .await
    .unwrap();
    let r = c
        .get(&format!("/v1/images/{}/layer", fresh.id), &Auth::None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body == fresh.layer);
    tokio::task::spawn_blocking(move || drop(m)).await.unwrap();
}

/// The registry dies in the middle of a layer: the error reaches the writer (write, close or
/// fsync), nothing is served, and after a restart a retry completes the push.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_push_fails_the_push_and_a_retry_succeeds() {
    let storage = tempfile::tempdir().unwrap();
    let server = TestServer::on_disk(storage.path());
    let addr = server.addr;
    let url = server.url.clone();
    let image = Image::new("killed-mid-push", 24 * 1024 * 1024);
    let img = image.clone();
    let (m, server) = tokio::task::spawn_blocking(move || {
        let m = TestMount::with_config(
            &url,
            Some((ADMIN, ADMIN_PASSWORD)),
            FsConfig::default(),
            Duration::from_secs(2),
        );
        let dir = m.join(&format!("images/{}", img.id));
        std::fs::create_dir(&dir).unwrap();
        write_and_fsync(&dir.join("json"), &img.json).unwrap();
        write_cut_short(&dir.join("layer"), &img.layer, || server.kill());
        let server = TestServer::restart(addr, storage.path());
        (m, (server, storage))
    })
    .await
    .unwrap();
    let (server, storage) = server;
    let c = server.client();
    let r = c
        .get(&format!("/v1/images/{}/layer", image.id), &Auth::None)
        .await;
    assert!(
        r.status == 400 || r.status == 404,
        "nothing served: {}",
        r.status
    );
    // The retry: write the layer again.
    let img = image.clone();
    let m = tokio::task::spawn_blocking(move || {
        let dir = m.join(&format!("images/{}", img.id));
        write_and_fsync(&dir.join("layer"), &img.layer).unwrap();
        m
    })
    .await
    .unwrap();
    let r = c
        .get(&format!("/v1/images/{}/layer", image.id), &Auth::None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body == image.layer);
    tokio::task::spawn_blocking(move || drop(m)).await.unwrap();
    drop(server);
    drop(storage);
}

/// A writer that starts another program while it writes a layer: the child inherits the open
/// file and the kernel closes it there at exec, which reaches the daemon as a flush. That must
/// not commit the layer cut short; the writer's own close commits all of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_child_started_mid_write_does_not_commit_a_layer_cut_short() {
    let (server, _base, _child, m) = setup(Some((ADMIN, ADMIN_PASSWORD)), false).await;
    let image = Image::new("fork-mid-write", 3 * 1024 * 1024 + 17);
    let img = image.clone();
    let m = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let dir = m.join(&format!("images/{}", img.id));
        std::fs::create_dir(&dir).unwrap();
        write_and_fsync(&dir.join("json"), &img.json).unwrap();
        let mut layer = std::fs::File::create(dir.join("layer")).unwrap();
        let (head, tail) = img.layer.split_at(img.layer.len() / 2);
        layer.write_all(head).unwrap();
        let status = std::process::Command::new("true").status().unwrap();
        assert!(status.success());
        layer.write_all(tail).unwrap();
        layer.sync_all().unwrap();
        drop(layer);
        m
    })
    .await
    .unwrap();
    let c = server.client();
    let r = c
        .get(&format!("/v1/images/{}/layer", image.id), &Auth::None)
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body == image.layer,
        "layer cut short: {} bytes",
        r.body.len()
    );
    tokio::task::spawn_blocking(move || drop(m)).await.unwrap();
}
