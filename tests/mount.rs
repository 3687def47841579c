//! Real FUSE mounts over an in-process server: what `ls`, `cat`, `stat` and `readlink` see.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;

use crate::common::mount::TestMount;
use crate::common::{Auth, Image, TestServer};

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// A server with alice/app (base + child, tags latest and v1) and library/busybox.
pub async fn populated() -> (TestServer, Image, Image, Image) {
    let server = TestServer::start();
    let c = server.client();
    assert_eq!(c.register("alice", "alice-pass").await.status, 201);
    let base = Image::new("m-base", 300_000);
    let child = Image::child("m-child", &base, 1_234_567);
    c.push_repo(
        "alice/app",
        &[base.clone(), child.clone()],
        "latest",
        &Auth::basic("alice", "alice-pass"),
    )
    .await;
    let r = c
        .put(
            "/v1/repositories/alice/app/tags/v1",
            format!("\"{}\"", base.id),
            &Auth::basic("alice", "alice-pass"),
        )
        .await;
    assert_eq!(r.status, 200);
    let bb = Image::new("m-busybox", 5000);
    c.push_repo(
        "library/busybox",
        std::slice::from_ref(&bb),
        "latest",
        &Auth::admin(),
    )
    .await;
    (server, base, child, bb)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_level_lists_what_the_api_returns() {
    let (server, base, child, bb) = populated().await;
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || {
        let m = TestMount::new(&url, None);
        assert_eq!(names(m.path()), ["images", "repositories", "search"]);
        assert_eq!(names(&m.join("repositories")), ["alice", "library"]);
        assert_eq!(names(&m.join("repositories/alice")), ["app"]);
        assert_eq!(names(&m.join("repositories/alice/app")), ["images", "tags"]);
        assert_eq!(
            names(&m.join("repositories/alice/app/tags")),
            ["latest", "v1"]
        );
        let mut ids = vec![base.id.clone(), child.id.clone()];
        ids.sort();
        assert_eq!(names(&m.join("repositories/alice/app/images")), ids);
        let mut all = vec![base.id.clone(), child.id.clone(), bb.id.clone()];
        all.sort();
        assert_eq!(names(&m.join("images")), all);
        assert_eq!(
            names(&m.join(&format!("images/{}", child.id))),
            ["ancestry", "json", "layer", "parent"]
        );
        assert_eq!(
            names(&m.join(&format!("images/{}", base.id))),
            ["ancestry", "json", "layer"]
        );

        let tag = std::fs::read_to_string(m.join("repositories/alice/app/tags/latest")).unwrap();
        assert_eq!(tag, format!("{}\n", child.id));
        let json = std::fs::read(m.join(&format!("images/{}/json", child.id))).unwrap();
        assert_eq!(json, child.json);
        let ancestry =
            std::fs::read_to_string(m.join(&format!("images/{}/ancestry", child.id))).unwrap();
        assert_eq!(ancestry, format!("{}\n{}\n", child.id, base.id));
        let layer = std::fs::read(m.join(&format!("images/{}/layer", child.id))).unwrap();
        assert_eq!(layer, child.layer);

        // Sizes without reading.
        let meta = std::fs::metadata(m.join(&format!("images/{}/layer", child.id))).unwrap();
        assert_eq!(meta.len(), child.layer.len() as u64);
        assert_eq!(meta.mode() & 0o777, 0o444);
        let meta = std::fs::metadata(m.join("repositories/alice/app/tags/latest")).unwrap();
        assert_eq!(meta.len(), 65);
        assert_eq!(meta.mode() & 0o777, 0o644);
        assert!(std::fs::metadata(m.join("repositories")).unwrap().is_dir());

        // Symlinks resolve.
        let link = m.join(&format!("repositories/alice/app/images/{}", child.id));
        assert_eq!(
            std::fs::read_link(&link).unwrap().to_str().unwrap(),
            format!("../../../../images/{}", child.id)
        );
        assert_eq!(std::fs::read(link.join("json")).unwrap(), child.json);
        let parent = m.join(&format!("images/{}/parent", child.id));
        assert_eq!(
            std::fs::read_link(&parent).unwrap().to_str().unwrap(),
            format!("../{}", base.id)
        );
        assert_eq!(std::fs::read(parent.join("layer")).unwrap(), base.layer);

        // Search files.
        let hits = std::fs::read_to_string(m.join("search/app")).unwrap();
        assert_eq!(hits, "alice/app\t\n");
        let all = std::fs::read_to_string(m.join("search/b")).unwrap();
        assert!(all.contains("library/busybox\t"));
        assert_eq!(
            std::fs::read_to_string(m.join("search/zzz-nothing")).unwrap(),
            ""
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_at_odd_offsets_and_sizes_are_byte_exact() {
    let (server, _base, child, _bb) = populated().await;
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || {
        let m = TestMount::new(&url, None);
        let path = m.join(&format!("images/{}/layer", child.id));
        let mut f = std::fs::File::open(&path).unwrap();
        let len = child.layer.len() as u64;
        for (offset, size) in [
            (0u64, 1usize),
            (1, 70_000),
            (4095, 4097),
            (len - 10, 100),
            (len / 2, 333_333),
            (len, 10),
            (len + 5000, 10),
        ] {
            f.seek(SeekFrom::Start(offset)).unwrap();
            let mut buf = vec![0u8; size];
            let mut got = 0;
            loop {
                let n = f.read(&mut buf[got..]).unwrap();
                if n == 0 {
                    break;
                }
                got += n;
            }
            let start = offset.min(len) as usize;
            let end = (offset + size as u64).min(len) as usize;
            assert_eq!(
                &buf[..got],
                &child.layer[start..end],
                "offset {offset} size {size}"
            );
        }
        // A sequential read with an odd buffer size.
        let mut f = std::fs::File::open(&path).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70_000];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, child.layer);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_and_invalid_names_are_enoent_and_writes_are_refused() {
    let (server, _base, child, _bb) = populated().await;
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || {
        let m = TestMount::new(&url, None);
        for rel in [
            "nope",
            "repositories/ab",
            "repositories/Alice",
            "repositories/nobody",
            "repositories/alice/missing",
            "repositories/alice/app/tags/none",
            "repositories/alice/app/other",
            "images/abc",
            &format!("images/{}", "f".repeat(64)),
            &format!("images/{}/nope", child.id),
        ] {
            let e = std::fs::metadata(m.join(rel)).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{rel}");
        }
        // Anonymous: refused at open, where shell redirections see it.
        let e = std::fs::write(m.join("repositories/alice/app/tags/new"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
        let e = std::fs::OpenOptions::new()
            .write(true)
            .open(m.join(&format!("images/{}/json", child.id)))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "images are immutable");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_larger_than_the_memory_budget_reads_back_exactly() {
    let server = TestServer::start();
    let c = server.client();
    let big = Image::new("bigger-than-budget", 40 * 1024 * 1024 + 12345);
    c.push_repo(
        "library/big",
        std::slice::from_ref(&big),
        "latest",
        &Auth::admin(),
    )
    .await;
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || {
        let config = regfs::mount::FsConfig {
            cache_size: 16 * 1024 * 1024,
            block_size: 1024 * 1024,
            ..Default::default()
        };
        let m = TestMount::with_config(&url, None, config, std::time::Duration::from_secs(10));
        let data = std::fs::read(m.join(&format!("images/{}/layer", big.id))).unwrap();
        assert!(data == big.layer, "layer differs");
        assert!(
            m.fs().cached_bytes() <= 16 * 1024 * 1024,
            "cache stays within its budget"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_readers_see_the_same_bytes() {
    let (server, base, child, bb) = populated().await;
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || {
        let m = TestMount::new(&url, None);
        std::thread::scope(|s| {
            for image in [&base, &child, &bb, &child, &base, &child] {
                let path = m.join(&format!("images/{}/layer", image.id));
                s.spawn(move || {
                    assert!(std::fs::read(&path).unwrap() == image.layer);
                });
            }
        });
    })
    .await
    .unwrap();
}
