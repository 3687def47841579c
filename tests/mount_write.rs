//! Writes through a real mount, each checked through the HTTP API afterwards.

use std::time::Duration;

use regfs::mount::FsConfig;

use crate::common::mount::TestMount;
use crate::common::{ADMIN, ADMIN_PASSWORD, Auth, Image, TestServer};

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
        std::fs::create_dir_all(&repo).unwrap();
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
        std::fs::create_dir_all(&repo).unwrap();
        // Not an id: refused at write.
        let e = std::fs::write(repo.join("tags/bad"), "garbage\n").unwrap_err();
        assert_eq!(errno(e), libc::EINVAL);
        // A valid-looking id of no image: refused when committed (fsync here; close too,
        // but std does not report errors from close).
        let mut f = std::fs::File::create(repo.join("tags/ghost")).unwrap();
        std::io::Write::write_all(&mut f, "f".repeat(64).as_bytes()).unwrap();
        assert_eq!(errno(f.sync_all().unwrap_err()), libc::EINVAL);
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
