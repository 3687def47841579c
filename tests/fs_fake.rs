//! The mount's filesystem logic over an in-memory registry
//! ([`FakeBackend`](regfs::mount::backend::fake::FakeBackend)), with no server and no socket:
//! lookups, listings, layer reads, a push, and a registry failure as the errno a program sees.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use regfs::mount::backend::BackendError;
use regfs::mount::backend::fake::FakeBackend;
use regfs::mount::fs::DirEntry;
use regfs::mount::{FsConfig, FsError, RegistryBackend, RegistryFs};
use regfs::names::{ImageId, RepoRef, Tag};
use sha2::{Digest, Sha256};

use crate::common::fs::{no_hang, walk};

fn id(seed: &str) -> ImageId {
    hex::encode(Sha256::digest(seed.as_bytes()))
        .parse()
        .unwrap()
}

fn repo(name: &str) -> RepoRef {
    RepoRef::parse_full(name).unwrap()
}

fn tag(name: &str) -> Tag {
    name.parse().unwrap()
}

/// Bytes that differ at every offset modulo a prime, so a misplaced range shows.
fn layer_bytes(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A registry with alice/app: `base` <- `child`, `latest` -> child, `v1` -> base.
struct Fixture {
    backend: Arc<FakeBackend>,
    fs: RegistryFs,
    base: ImageId,
    child: ImageId,
    child_layer: Bytes,
}

fn fixture(backend: FakeBackend) -> Fixture {
    let backend = Arc::new(backend);
    let (base, child) = (id("fake-base"), id("fake-child"));
    let child_layer = layer_bytes(300_001);
    backend.add_image(&base, None, layer_bytes(20_000));
    backend.add_image(&child, Some(&base), child_layer.clone());
    backend.tag(&repo("alice/app"), &tag("latest"), &child);
    backend.tag(&repo("alice/app"), &tag("v1"), &base);
    let config = FsConfig {
        block_size: 64 * 1024,
        ..FsConfig::default()
    };
    let dyn_backend: Arc<dyn RegistryBackend> = backend.clone();
    Fixture {
        fs: RegistryFs::new(dyn_backend, config),
        backend,
        base,
        child,
        child_layer,
    }
}

async fn names(fs: &RegistryFs, path: &str) -> Vec<String> {
    let dir = walk(fs, path).await.unwrap();
    let entries: Vec<DirEntry> = fs.readdir(dir.attr.ino).await.unwrap();
    let mut names: Vec<String> = entries.into_iter().map(|e| e.name).collect();
    names.sort();
    names
}

async fn read_range(fs: &RegistryFs, fh: u64, offset: u64, len: u32) -> Vec<u8> {
    fs.read(fh, offset, len).await.unwrap().to_vec()
}

fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> i32 {
    r.expect_err("expected a failure").errno()
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_and_listings_show_the_backend() {
    let f = fixture(FakeBackend::new());
    assert_eq!(names(&f.fs, "repositories").await, ["alice"]);
    assert_eq!(names(&f.fs, "repositories/alice").await, ["app"]);
    assert_eq!(
        names(&f.fs, "repositories/alice/app/tags").await,
        ["latest", "v1"]
    );
    let mut linked = vec![f.base.to_string(), f.child.to_string()];
    linked.sort();
    assert_eq!(names(&f.fs, "repositories/alice/app/images").await, linked);

    let latest = walk(&f.fs, "repositories/alice/app/tags/latest")
        .await
        .unwrap();
    assert_eq!(latest.attr.size, 65, "an id and a newline");
    let o = f.fs.open(latest.attr.ino, false, false).await.unwrap();
    assert_eq!(
        read_range(&f.fs, o.fh, 0, 4096).await,
        format!("{}\n", f.child).into_bytes()
    );
    f.fs.release(o.fh).await;

    let layer = walk(&f.fs, &format!("images/{}/layer", f.child))
        .await
        .unwrap();
    assert_eq!(layer.attr.size, f.child_layer.len() as u64);
    let parent = walk(&f.fs, &format!("images/{}/parent", f.child))
        .await
        .unwrap();
    assert_eq!(
        f.fs.readlink(parent.attr.ino).await.unwrap(),
        format!("../{}", f.base)
    );
    // The base has no parent link; an unknown tag or image is ENOENT.
    assert_eq!(
        errno(walk(&f.fs, &format!("images/{}/parent", f.base)).await),
        libc::ENOENT
    );
    assert_eq!(
        errno(walk(&f.fs, "repositories/alice/app/tags/nope").await),
        libc::ENOENT
    );
    assert_eq!(
        errno(walk(&f.fs, &format!("images/{}", id("absent"))).await),
        libc::ENOENT
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn layer_ranges_are_the_backend_bytes_and_then_cached() {
    let f = fixture(FakeBackend::new());
    let layer = walk(&f.fs, &format!("images/{}/layer", f.child))
        .await
        .unwrap();
    let o = f.fs.open(layer.attr.ino, false, false).await.unwrap();
    // Odd offsets and sizes, across block boundaries, and past the end.
    for (offset, len) in [(12_345u64, 70_001u32), (0, 1), (65_535, 2), (299_999, 4096)] {
        let end = (offset as usize + len as usize).min(f.child_layer.len());
        assert_eq!(
            read_range(&f.fs, o.fh, offset, len).await,
            f.child_layer[offset as usize..end],
            "{offset}+{len}"
        );
    }
    assert!(f.backend.layer_reads() > 0);

    // Read whole once, then again: the second pass is served from the block cache.
    let mut whole = Vec::new();
    while whole.len() < f.child_layer.len() {
        let got = read_range(&f.fs, o.fh, whole.len() as u64, 131_072).await;
        assert!(!got.is_empty(), "short layer");
        whole.extend_from_slice(&got);
    }
    assert_eq!(whole, f.child_layer);
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.fs.fetches_in_flight() > 0 {
        assert!(Instant::now() < deadline, "block fetches never ended");
        tokio::task::yield_now().await;
    }
    let reads = f.backend.layer_reads();
    let again = f.fs.open(layer.attr.ino, false, false).await.unwrap();
    assert_eq!(
        read_range(&f.fs, again.fh, 100_000, 100_000).await,
        f.child_layer[100_000..200_000]
    );
    assert_eq!(
        f.backend.layer_reads(),
        reads,
        "a cached block was read again"
    );
    f.fs.release(again.fh).await;
    f.fs.release(o.fh).await;
}

/// `mkdir images/<id>`, then its json and layer, then a tag: what lands in the registry is the
/// image, checksum-confirmed, and the tag pointing at it.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_through_the_filesystem_lands_in_the_backend() {
    let f = fixture(FakeBackend::with_user("alice"));
    let new = id("fake-pushed");
    let json = Bytes::from(format!(
        r#"{{"id":"{new}","parent":"{}","created":"2015-01-01T00:00:00Z"}}"#,
        f.base
    ));
    let layer = layer_bytes(200_003);
    let images = walk(&f.fs, "images").await.unwrap();
    let dir = f.fs.mkdir(images.attr.ino, new.as_str()).await.unwrap();
    for (name, content) in [("json", &json), ("layer", &layer)] {
        let (_, o) = f.fs.create(dir.attr.ino, name).await.unwrap();
        let mut at = 0;
        for chunk in content.chunks(65_536) {
            let n =
                f.fs.write(o.fh, at, Bytes::copy_from_slice(chunk))
                    .await
                    .unwrap();
            at += u64::from(n);
        }
        no_hang(name, f.fs.flush(o.fh)).await.unwrap();
        f.fs.release(o.fh).await;
    }
    assert_eq!(
        f.backend.complete_image(&new),
        Some((json, layer.clone())),
        "the image is complete with the bytes written"
    );

    let tags = walk(&f.fs, "repositories/alice/app/tags").await.unwrap();
    let (_, o) = f.fs.create(tags.attr.ino, "pushed").await.unwrap();
    f.fs.write(o.fh, 0, Bytes::from(format!("{new}\n")))
        .await
        .unwrap();
    f.fs.flush(o.fh).await.unwrap();
    f.fs.release(o.fh).await;
    assert_eq!(
        f.backend.tag_target(&repo("alice/app"), &tag("pushed")),
        Some(new.clone())
    );
    // And the mount reads it back.
    let back = walk(&f.fs, &format!("images/{new}/layer")).await.unwrap();
    assert_eq!(back.attr.size, layer.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_failures_are_the_errno_a_program_sees() {
    let f = fixture(FakeBackend::new());
    f.backend
        .fail_with(Some(BackendError::Transport("refused".into())));
    assert_eq!(errno(walk(&f.fs, "repositories/alice").await), libc::EIO);
    f.backend.fail_with(Some(BackendError::Forbidden));
    assert_eq!(errno(walk(&f.fs, "repositories/alice").await), libc::EACCES);
    f.backend.fail_with(Some(BackendError::Timeout));
    assert_eq!(
        errno(walk(&f.fs, &format!("images/{}/layer", f.child)).await),
        libc::EIO
    );
    // Back again: nothing of the failures was kept.
    f.backend.fail_with(None);
    assert_eq!(names(&f.fs, "repositories").await, ["alice"]);

    // Anonymous, a change is refused before the registry is asked.
    let images = walk(&f.fs, "images").await.unwrap();
    assert_eq!(
        errno(f.fs.mkdir(images.attr.ino, id("anon").as_str()).await),
        libc::EACCES
    );
}
