//! The mount's filesystem logic ([`RegistryFs`]) driven directly against a real server, with no
//! kernel in the loop: the tree, attributes, inode identity and lookup counts, reads, caching,
//! TTLs and the errno each failure becomes.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use regfs::mount::cache::Clock;
use regfs::storage::{BlobStore, ObjectBackend, keys};

use regfs::mount::fs::DirEntry;
use regfs::mount::inode::ROOT_INO;
use regfs::mount::tree::{Kind, Node};
use regfs::mount::{FsConfig, FsError, RegistryFs};
use regfs::names::{ImageId, RepoRef};
use regfs::storage::StorageConfig;

use crate::common::fs::{no_hang, registry_fs as new_fs, registry_fs_with_clock, walk};
use crate::common::{ALICE, ALICE_PASSWORD, Auth, Image, TestServer};

/// `created` of every fixture image: 2014-10-01T00:00:00Z.
const CREATED_UNIX: u64 = 1_412_121_600;

fn default_fs(url: &str) -> RegistryFs {
    new_fs(url, None, FsConfig::default(), Duration::from_secs(5))
}

/// A URL where nothing listens: bound once, then released.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A server with alice/app (base + child; `latest` -> child, `v1` -> base) and library/busybox.
struct Fixture {
    server: TestServer,
    base: Image,
    child: Image,
    bb: Image,
}

async fn push_fixture(server: &TestServer) -> (Image, Image, Image) {
    let c = server.client();
    let (base, child) = c.push_alice_app("fs", 20_000, 300_001).await;
    let r = c
        .put(
            "/v1/repositories/alice/app/tags/v1",
            format!("\"{}\"", base.id),
            &Auth::alice(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let bb = Image::new("fs-busybox", 5000);
    c.push_repo(
        "library/busybox",
        std::slice::from_ref(&bb),
        "latest",
        &Auth::admin(),
    )
    .await;
    (base, child, bb)
}

async fn fixture() -> Fixture {
    let server = TestServer::start();
    let (base, child, bb) = push_fixture(&server).await;
    Fixture {
        server,
        base,
        child,
        bb,
    }
}

async fn ino(fs: &RegistryFs, path: &str) -> u64 {
    walk(fs, path)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .attr
        .ino
}

/// The errno of a failed call.
fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.errno(),
    }
}

async fn list(fs: &RegistryFs, ino: u64) -> Vec<DirEntry> {
    let mut v = fs.readdir(ino).await.unwrap();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

async fn names(fs: &RegistryFs, ino: u64) -> Vec<String> {
    list(fs, ino).await.into_iter().map(|d| d.name).collect()
}

/// Opens `ino`, reads it sequentially in `chunk`-byte reads until an empty read, releases it.
async fn read_all(fs: &RegistryFs, ino: u64, chunk: u32) -> Vec<u8> {
    let fh = fs.open(ino, false, false).await.unwrap().fh;
    let mut out = Vec::new();
    loop {
        let data = fs.read(fh, out.len() as u64, chunk).await.unwrap();
        if data.is_empty() {
            break;
        }
        assert!(data.len() <= chunk as usize);
        out.extend_from_slice(&data);
    }
    fs.release(fh).await;
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn lookup_and_getattr_describe_every_kind_of_node() {
    let f = fixture().await;
    let config = FsConfig {
        ttl: Duration::from_millis(1500),
        uid: 4321,
        gid: 8765,
        ..FsConfig::default()
    };
    let fs = new_fs(&f.server.url, None, config, Duration::from_secs(5));
    let created = SystemTime::UNIX_EPOCH + Duration::from_secs(CREATED_UNIX);
    let (child, base) = (&f.child.id, &f.base.id);

    let root = fs.getattr(ROOT_INO).await.unwrap();
    assert_eq!(root.attr.ino, ROOT_INO);
    assert_eq!(root.attr.kind, Kind::Dir);
    assert_eq!(root.attr.perm, 0o755);
    assert_eq!((root.attr.uid, root.attr.gid), (4321, 8765));
    assert_eq!(fs.root().await.unwrap().attr, root.attr);

    for dir in [
        "repositories",
        "images",
        "search",
        "repositories/alice",
        "repositories/library",
        "repositories/alice/app",
        "repositories/alice/app/tags",
        "repositories/alice/app/images",
        "repositories/library/busybox/tags",
    ] {
        let e = walk(&fs, dir).await.unwrap();
        assert_eq!(e.attr.kind, Kind::Dir, "{dir}");
        assert_eq!(e.attr.perm, 0o755, "{dir}");
        assert_eq!((e.attr.uid, e.attr.gid), (4321, 8765), "{dir}");
        assert_ne!(e.attr.ino, ROOT_INO, "{dir}");
        // Mutable things are trusted for the TTL only.
        assert_eq!(e.ttl, Duration::from_millis(1500), "{dir}");
    }

    let tag = walk(&fs, "repositories/alice/app/tags/latest")
        .await
        .unwrap();
    assert_eq!(tag.attr.kind, Kind::File);
    assert_eq!(tag.attr.size, 65, "64 hex digits and a newline");
    assert_eq!(tag.attr.perm, 0o644);
    assert_eq!(tag.ttl, Duration::from_millis(1500));

    let image = walk(&fs, &format!("images/{child}")).await.unwrap();
    assert_eq!(image.attr.kind, Kind::Dir);
    assert_eq!(image.attr.perm, 0o755);
    assert_eq!(
        image.attr.mtime, created,
        "image mtime is the json's created"
    );
    assert!(
        image.ttl >= Duration::from_secs(3600),
        "images never change"
    );

    for (file, size) in [
        ("json", f.child.json.len() as u64),
        ("layer", f.child.layer.len() as u64),
        ("ancestry", 2 * 65),
    ] {
        let e = walk(&fs, &format!("images/{child}/{file}")).await.unwrap();
        assert_eq!(e.attr.kind, Kind::File, "{file}");
        assert_eq!(e.attr.size, size, "{file}");
        assert_eq!(e.attr.perm, 0o444, "{file}");
        assert_eq!(e.attr.mtime, created, "{file}");
        assert_eq!((e.attr.uid, e.attr.gid), (4321, 8765), "{file}");
        assert!(e.ttl >= Duration::from_secs(3600), "{file}");
        // getattr on the number agrees with the lookup.
        let again = fs.getattr(e.attr.ino).await.unwrap();
        assert_eq!(again.attr, e.attr, "{file}");
    }
    let base_ancestry = walk(&fs, &format!("images/{base}/ancestry")).await.unwrap();
    assert_eq!(base_ancestry.attr.size, 65);

    let parent = walk(&fs, &format!("images/{child}/parent")).await.unwrap();
    assert_eq!(parent.attr.kind, Kind::Symlink);
    assert_eq!(parent.attr.size, format!("../{base}").len() as u64);
    let link = walk(&fs, &format!("repositories/alice/app/images/{child}"))
        .await
        .unwrap();
    assert_eq!(link.attr.kind, Kind::Symlink);
    assert_eq!(
        link.attr.size,
        format!("../../../../images/{child}").len() as u64
    );

    let search = walk(&fs, "search/app").await.unwrap();
    assert_eq!(search.attr.kind, Kind::File);
    assert_eq!(search.attr.size, "alice/app\t\n".len() as u64);
    assert_eq!(search.attr.perm, 0o444);

    // Names that are valid but absent.
    for missing in [
        "repositories/nobody".to_string(),
        "repositories/alice/missing".to_string(),
        "repositories/alice/app/tags/none".to_string(),
        format!("repositories/alice/app/images/{}", f.bb.id),
        format!("images/{}", "f".repeat(64)),
        format!("images/{base}/parent"),
    ] {
        assert_eq!(errno(walk(&fs, &missing).await), libc::ENOENT, "{missing}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readdir_lists_every_level_and_readlink_resolves() {
    let f = fixture().await;
    let fs = default_fs(&f.server.url);
    let (child, base, bb) = (&f.child.id, &f.base.id, &f.bb.id);

    assert_eq!(
        names(&fs, ROOT_INO).await,
        ["images", "repositories", "search"]
    );
    assert_eq!(
        names(&fs, ino(&fs, "repositories").await).await,
        ["alice", "library"]
    );
    assert_eq!(
        names(&fs, ino(&fs, "repositories/alice").await).await,
        ["app"]
    );
    assert_eq!(
        names(&fs, ino(&fs, "repositories/library").await).await,
        ["busybox"]
    );
    assert_eq!(
        names(&fs, ino(&fs, "repositories/alice/app").await).await,
        ["images", "tags"]
    );
    let tags_dir = ino(&fs, "repositories/alice/app/tags").await;
    let tags = list(&fs, tags_dir).await;
    assert_eq!(
        tags.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["latest", "v1"]
    );
    for d in &tags {
        assert_eq!(d.entry.attr.kind, Kind::File);
        assert_eq!(d.entry.attr.size, 65);
        assert_eq!(d.entry.attr.perm, 0o644);
        // Tag entries are built from the listing alone; a lookup must agree with them.
        let looked_up = fs.lookup(tags_dir, &d.name).await.expect("lookup");
        assert_eq!(looked_up.attr, d.entry.attr, "{}", d.name);
        assert_eq!(looked_up.ttl, d.entry.ttl, "{}", d.name);
    }
    let links = list(&fs, ino(&fs, "repositories/alice/app/images").await).await;
    assert_eq!(
        links.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
        sorted(vec![base.clone(), child.clone()])
    );
    assert!(links.iter().all(|d| d.entry.attr.kind == Kind::Symlink));
    assert_eq!(
        names(&fs, ino(&fs, "images").await).await,
        sorted(vec![base.clone(), child.clone(), bb.clone()])
    );
    let files = list(&fs, ino(&fs, &format!("images/{child}")).await).await;
    assert_eq!(
        files.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["ancestry", "json", "layer", "parent"]
    );
    let layer = files.iter().find(|d| d.name == "layer").unwrap();
    assert_eq!(layer.entry.attr.size, f.child.layer.len() as u64);
    assert_eq!(layer.entry.attr.kind, Kind::File);
    let parent = files.iter().find(|d| d.name == "parent").unwrap();
    assert_eq!(parent.entry.attr.kind, Kind::Symlink);
    assert_eq!(
        names(&fs, ino(&fs, &format!("images/{base}")).await).await,
        ["ancestry", "json", "layer"],
        "a base image has no parent link"
    );
    // Search results exist only when looked up.
    assert!(names(&fs, ino(&fs, "search").await).await.is_empty());

    // Entries carry the numbers a lookup gives.
    for d in &files {
        let e = fs.lookup(ino(&fs, &format!("images/{child}")).await, &d.name);
        assert_eq!(e.await.unwrap().attr.ino, d.entry.attr.ino, "{}", d.name);
    }

    // Symlinks.
    let parent_ino = ino(&fs, &format!("images/{child}/parent")).await;
    assert_eq!(fs.readlink(parent_ino).await.unwrap(), format!("../{base}"));
    let link_ino = ino(&fs, &format!("repositories/alice/app/images/{child}")).await;
    assert_eq!(
        fs.readlink(link_ino).await.unwrap(),
        format!("../../../../images/{child}")
    );

    // Wrong kinds.
    let layer_ino = ino(&fs, &format!("images/{child}/layer")).await;
    assert_eq!(errno(fs.readlink(layer_ino).await), libc::EINVAL);
    assert_eq!(errno(fs.readlink(ROOT_INO).await), libc::EINVAL);
    assert_eq!(errno(fs.readdir(layer_ino).await), libc::ENOTDIR);
    assert_eq!(errno(fs.readdir(link_ino).await), libc::ENOTDIR);
    assert_eq!(errno(fs.lookup(layer_ino, "x").await), libc::ENOTDIR);
    // Unknown numbers.
    assert_eq!(errno(fs.getattr(999_999).await), libc::ENOENT);
    assert_eq!(errno(fs.readdir(999_999).await), libc::ENOENT);
    assert_eq!(errno(fs.lookup(999_999, "images").await), libc::ENOENT);
}

#[tokio::test(flavor = "multi_thread")]
async fn open_and_read_give_exact_content_and_reads_past_eof_are_empty() {
    let f = fixture().await;
    let fs = default_fs(&f.server.url);
    let (child, base) = (&f.child.id, &f.base.id);

    let tag = ino(&fs, "repositories/alice/app/tags/latest").await;
    assert_eq!(
        read_all(&fs, tag, 4096).await,
        format!("{child}\n").as_bytes()
    );
    let v1 = ino(&fs, "repositories/alice/app/tags/v1").await;
    assert_eq!(read_all(&fs, v1, 7).await, format!("{base}\n").as_bytes());
    let json = ino(&fs, &format!("images/{child}/json")).await;
    assert_eq!(read_all(&fs, json, 10).await, f.child.json);
    let ancestry = ino(&fs, &format!("images/{child}/ancestry")).await;
    assert_eq!(
        read_all(&fs, ancestry, 4096).await,
        format!("{child}\n{base}\n").as_bytes()
    );
    let search = ino(&fs, "search/busy").await;
    assert_eq!(read_all(&fs, search, 4096).await, b"library/busybox\t\n");
    let none = ino(&fs, "search/zzz-nothing").await;
    assert_eq!(read_all(&fs, none, 4096).await, b"");
    let layer = ino(&fs, &format!("images/{child}/layer")).await;
    assert!(read_all(&fs, layer, 70_001).await == f.child.layer);
    let base_layer = ino(&fs, &format!("images/{base}/layer")).await;
    assert!(read_all(&fs, base_layer, 128 * 1024).await == f.base.layer);

    // Image files keep the kernel's page cache; tags and search results do not.
    let o = fs.open(layer, false, false).await.unwrap();
    assert!(o.keep_cache);
    fs.release(o.fh).await;
    let o = fs.open(tag, false, false).await.unwrap();
    assert!(!o.keep_cache);
    fs.release(o.fh).await;

    // Random reads of a layer, and reads at and past the end.
    let len = f.child.layer.len() as u64;
    let fh = fs.open(layer, false, false).await.unwrap().fh;
    for (offset, size) in [
        (len / 2, 100_000u32),
        (0, 1),
        (4095, 4097),
        (len - 10, 100),
        (len, 10),
        (len + 5000, 10),
        (len - 1, 0),
        (0, 0),
        (u64::from(u32::MAX) * 4, 4096),
    ] {
        let data = fs.read(fh, offset, size).await.unwrap();
        let start = offset.min(len) as usize;
        let end = (offset + u64::from(size)).min(len) as usize;
        assert!(
            data[..] == f.child.layer[start..end],
            "offset {offset} size {size}: {} bytes",
            data.len()
        );
    }
    // Two handles on one file are independent.
    let fh2 = fs.open(layer, false, false).await.unwrap().fh;
    assert_ne!(fh, fh2);
    let (a, b) = tokio::join!(fs.read(fh, 1000, 5000), fs.read(fh2, 200_000, 5000));
    assert!(a.unwrap()[..] == f.child.layer[1000..6000]);
    assert!(b.unwrap()[..] == f.child.layer[200_000..205_000]);
    fs.release(fh).await;
    fs.release(fh2).await;
    assert_eq!(errno(fs.read(fh, 0, 10).await), libc::EBADF, "released");
    fs.release(fh).await; // twice is harmless

    // Small files past the end.
    let jlen = f.child.json.len() as u64;
    let fh = fs.open(json, false, false).await.unwrap().fh;
    assert!(fs.read(fh, jlen, 10).await.unwrap().is_empty());
    assert!(fs.read(fh, jlen + 1000, 10).await.unwrap().is_empty());
    assert_eq!(
        fs.read(fh, jlen - 3, 10).await.unwrap()[..],
        f.child.json[f.child.json.len() - 3..]
    );
    fs.release(fh).await;
    let fh = fs.open(tag, false, false).await.unwrap().fh;
    assert!(fs.read(fh, 65, 1).await.unwrap().is_empty());
    assert_eq!(&fs.read(fh, 64, 100).await.unwrap()[..], b"\n");
    fs.release(fh).await;

    // What cannot be opened.
    assert_eq!(errno(fs.read(123_456_789, 0, 1).await), libc::EBADF);
    assert_eq!(errno(fs.open(ROOT_INO, false, false).await), libc::EISDIR);
    let dir = ino(&fs, &format!("images/{child}")).await;
    assert_eq!(errno(fs.open(dir, false, false).await), libc::EISDIR);
    let parent = ino(&fs, &format!("images/{child}/parent")).await;
    assert_eq!(errno(fs.open(parent, false, false).await), libc::EINVAL);
    assert_eq!(errno(fs.open(999_999, false, false).await), libc::ENOENT);
    // Refusals known at open: an anonymous mount cannot write; image files never change.
    assert_eq!(errno(fs.open(tag, true, false).await), libc::EACCES);
    let rw = new_fs(
        &f.server.url,
        Some((ALICE, ALICE_PASSWORD)),
        FsConfig::default(),
        Duration::from_secs(5),
    );
    let rw_layer = ino(&rw, &format!("images/{child}/layer")).await;
    let rw_json = ino(&rw, &format!("images/{child}/json")).await;
    assert_eq!(errno(rw.open(rw_layer, true, false).await), libc::EPERM);
    assert_eq!(errno(rw.open(rw_json, true, true).await), libc::EPERM);
    // `--read-only`: EROFS for everything.
    let ro = new_fs(
        &f.server.url,
        Some((ALICE, ALICE_PASSWORD)),
        FsConfig {
            read_only: true,
            ..FsConfig::default()
        },
        Duration::from_secs(5),
    );
    let ro_tag = ino(&ro, "repositories/alice/app/tags/latest").await;
    let ro_layer = ino(&ro, &format!("images/{child}/layer")).await;
    assert_eq!(errno(ro.open(ro_tag, true, false).await), libc::EROFS);
    assert_eq!(errno(ro.open(ro_layer, true, false).await), libc::EROFS);
    assert!(read_all(&ro, ro_layer, 65536).await == f.child.layer);
}

#[tokio::test(flavor = "multi_thread")]
async fn inode_numbers_are_stable_while_referenced_and_released_after_forget() {
    let f = fixture().await;
    let fs = default_fs(&f.server.url);
    let tag_path = "repositories/alice/app/tags/latest";

    let images = fs.lookup(ROOT_INO, "images").await.unwrap().attr.ino;
    assert_eq!(
        fs.lookup(ROOT_INO, "images").await.unwrap().attr.ino,
        images
    );
    let tag = ino(&fs, tag_path).await;
    assert_eq!(ino(&fs, tag_path).await, tag, "same path, same number");
    assert_eq!(fs.getattr(tag).await.unwrap().attr.ino, tag);
    let layer_path = format!("images/{}/layer", f.child.id);
    let layer = ino(&fs, &layer_path).await;
    assert_ne!(layer, tag);

    // A missing name allocates nothing (the parents are looked up first, as the kernel would).
    ino(&fs, &format!("images/{}", f.base.id)).await;
    let held = fs.inodes().len();
    for missing in [
        "repositories/nobody".to_string(),
        "repositories/alice/app/tags/none".to_string(),
        format!("images/{}", "e".repeat(64)),
        format!("images/{}/parent", f.base.id),
        "nope".to_string(),
    ] {
        assert_eq!(errno(walk(&fs, &missing).await), libc::ENOENT, "{missing}");
    }
    assert_eq!(fs.inodes().len(), held, "failed lookups take no inode");

    // The tag was looked up twice: one forget keeps it, the second releases it.
    fs.forget(tag, 1);
    assert_eq!(fs.getattr(tag).await.unwrap().attr.ino, tag);
    fs.forget(tag, 1);
    assert_eq!(errno(fs.getattr(tag).await), libc::ENOENT, "released");
    assert_eq!(fs.inodes().len(), held - 1);
    let again = ino(&fs, tag_path).await;
    assert_ne!(again, tag, "a released number is not reused");
    assert_eq!(fs.getattr(again).await.unwrap().attr.size, 65);

    // Forgetting more than was counted releases; unknown numbers are ignored.
    fs.forget(layer, 100);
    assert_eq!(errno(fs.getattr(layer).await), libc::ENOENT);
    fs.forget(layer, 1);
    fs.forget(987_654_321, 1);
    // The root is never released.
    fs.forget(ROOT_INO, 1000);
    assert_eq!(fs.getattr(ROOT_INO).await.unwrap().attr.kind, Kind::Dir);
    assert_eq!(
        fs.lookup(ROOT_INO, "images").await.unwrap().attr.ino,
        images
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn remember_counts_the_references_readdirplus_hands_out() {
    let f = fixture().await;
    let fs = default_fs(&f.server.url);
    let tags_dir = ino(&fs, "repositories/alice/app/tags").await;

    let first = list(&fs, tags_dir).await;
    let second = list(&fs, tags_dir).await;
    let latest = first
        .iter()
        .find(|d| d.name == "latest")
        .unwrap()
        .entry
        .attr
        .ino;
    let v1 = first
        .iter()
        .find(|d| d.name == "v1")
        .unwrap()
        .entry
        .attr
        .ino;
    assert_ne!(latest, v1);
    assert_eq!(
        second.iter().map(|d| d.entry.attr.ino).collect::<Vec<_>>(),
        first.iter().map(|d| d.entry.attr.ino).collect::<Vec<_>>(),
        "listing twice gives the same numbers"
    );
    assert_eq!(fs.getattr(latest).await.unwrap().attr.ino, latest);

    // Two references handed out: two forgets to release.
    fs.remember(latest);
    fs.remember(latest);
    fs.forget(latest, 1);
    assert!(fs.getattr(latest).await.is_ok(), "one reference left");
    assert_eq!(
        fs.lookup(tags_dir, "latest").await.unwrap().attr.ino,
        latest
    );
    // lookup + remember = 2 references now.
    fs.forget(latest, 1);
    assert!(fs.getattr(latest).await.is_ok(), "lookup reference left");
    fs.forget(latest, 1);
    assert_eq!(errno(fs.getattr(latest).await), libc::ENOENT);

    // remember and lookup add up.
    assert_eq!(fs.lookup(tags_dir, "v1").await.unwrap().attr.ino, v1);
    fs.remember(v1);
    fs.forget(v1, 1);
    assert!(fs.getattr(v1).await.is_ok());
    fs.forget(v1, 1);
    assert_eq!(errno(fs.getattr(v1).await), libc::ENOENT);

    // A released entry listed again gets a fresh number.
    let third = list(&fs, tags_dir).await;
    let latest2 = third
        .iter()
        .find(|d| d.name == "latest")
        .unwrap()
        .entry
        .attr
        .ino;
    assert_ne!(latest2, latest);
    // remember on an unknown number does nothing.
    fs.remember(555_555_555);
    assert_eq!(errno(fs.getattr(555_555_555).await), libc::ENOENT);
}

/// Waits until no layer block fetch (prefetches included) is under way.
async fn settle(fs: &RegistryFs) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs.fetches_in_flight() > 0 {
        assert!(Instant::now() < deadline, "block fetches never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Puts a node straight into the inode table, so names under it can be looked up without the
/// registry (its parents would need it).
fn plant(fs: &RegistryFs, node: Node) -> u64 {
    fs.inodes().lookup(&node)
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_names_are_enoent_without_contacting_the_registry() {
    // A registry that counts what reaches it, and would answer anything with a 503.
    let counting = FakeRegistry::answering(503);
    let fs = new_fs(
        &counting.url(),
        None,
        FsConfig::default(),
        Duration::from_secs(2),
    );
    let id = "a".repeat(64);
    let alice_app = RepoRef::parse_full("alice/app").unwrap();
    let image: ImageId = id.parse().unwrap();

    // What needs no registry works without asking it.
    assert_eq!(
        names(&fs, ROOT_INO).await,
        ["images", "repositories", "search"]
    );
    let repos = fs.lookup(ROOT_INO, "repositories").await.unwrap().attr.ino;
    let images = fs.lookup(ROOT_INO, "images").await.unwrap().attr.ino;
    let search = fs.lookup(ROOT_INO, "search").await.unwrap().attr.ino;
    assert!(names(&fs, search).await.is_empty());
    assert_eq!(counting.requests.load(Ordering::SeqCst), 0);

    let alice = plant(&fs, Node::Namespace("alice".parse().unwrap()));
    let library = plant(&fs, Node::Namespace("library".parse().unwrap()));
    let repo = plant(&fs, Node::Repo(alice_app.clone()));
    let tags = plant(&fs, Node::Tags(alice_app.clone()));
    let repo_images = plant(&fs, Node::RepoImages(alice_app));
    let image_dir = plant(&fs, Node::Image(image));
    let held = fs.inodes().len();

    let upper = "A".repeat(64);
    let long_tag = "t".repeat(129);
    let long_term = "s".repeat(256);
    for (parent, name) in [
        (ROOT_INO, "nope"),
        (ROOT_INO, "Images"),
        (ROOT_INO, ""),
        (repos, "ab"),
        (repos, "Alice"),
        (repos, "al ice"),
        (repos, &"n".repeat(31)),
        (alice, ".."),
        (alice, "."),
        (alice, "App"),
        (library, &id),
        (repo, "other"),
        (repo, "Tags"),
        (tags, "-x"),
        (tags, ".hidden"),
        (tags, &long_tag),
        (tags, "a/b"),
        (repo_images, "abc"),
        (repo_images, &upper),
        (images, "abc"),
        (images, "0123456789abcdef"),
        (images, &upper),
        (images, &format!("{id}0")),
        (images, &"g".repeat(64)),
        (image_dir, "other"),
        (image_dir, "Layer"),
        (search, ".hidden"),
        (search, ""),
        (search, &long_term),
    ] {
        let r = fs.lookup(parent, name).await;
        assert_eq!(errno(r), libc::ENOENT, "{parent}/{name}");
        assert_eq!(
            counting.requests.load(Ordering::SeqCst),
            0,
            "{parent}/{name} reached the registry"
        );
    }
    assert_eq!(fs.inodes().len(), held);

    // The same places with valid names need the registry, which is unreachable: EIO once the
    // timeout is up (all at once, to keep the test short).
    let timeout = Duration::from_secs(1);
    let unreachable = new_fs(&closed_port_url(), None, FsConfig::default(), timeout);
    let fs = &unreachable;
    let repos = fs.lookup(ROOT_INO, "repositories").await.unwrap().attr.ino;
    let images = fs.lookup(ROOT_INO, "images").await.unwrap().attr.ino;
    let search = fs.lookup(ROOT_INO, "search").await.unwrap().attr.ino;
    let alice = plant(fs, Node::Namespace("alice".parse().unwrap()));
    let tags = plant(fs, Node::Tags(RepoRef::parse_full("alice/app").unwrap()));
    let image_dir = plant(fs, Node::Image(id.parse().unwrap()));
    let valid = [
        (repos, "alice"),
        (alice, "app"),
        (tags, "latest"),
        (images, id.as_str()),
        (image_dir, "layer"),
        (search, "term"),
    ];
    let lookups = valid.iter().map(|&(parent, name)| async move {
        let r = fs.lookup(parent, name).await;
        (parent, name, r.map(|e| e.attr))
    });
    let results = no_hang("lookups", futures::future::join_all(lookups)).await;
    for (parent, name, r) in results {
        assert_eq!(errno(r), libc::EIO, "{parent}/{name}");
    }
    let (a, b) = no_hang("readdirs", async {
        tokio::join!(fs.readdir(repos), fs.readdir(images))
    })
    .await;
    assert_eq!(errno(a), libc::EIO);
    assert_eq!(errno(b), libc::EIO);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_give_eacces() {
    let f = fixture().await;
    let id = f.child.id.clone();
    let alice_app = RepoRef::parse_full("alice/app").unwrap();
    for creds in [(ALICE, "wrong-password"), ("nobody-here", "whatever")] {
        let fs = new_fs(
            &f.server.url,
            Some(creds),
            FsConfig::default(),
            Duration::from_secs(5),
        );
        // The root needs no registry.
        assert_eq!(names(&fs, ROOT_INO).await.len(), 3);
        let images = ino(&fs, "images").await;
        assert_eq!(
            errno(fs.lookup(images, &id).await),
            libc::EACCES,
            "{creds:?}"
        );
        assert_eq!(errno(fs.readdir(images).await), libc::EACCES, "{creds:?}");
        // Below a repository (reached without the search listing, see the ignored test).
        let repo = plant(&fs, Node::Repo(alice_app.clone()));
        let tags = plant(&fs, Node::Tags(alice_app.clone()));
        assert_eq!(errno(fs.lookup(repo, "tags").await), libc::EACCES);
        assert_eq!(errno(fs.readdir(repo).await), libc::EACCES);
        assert_eq!(errno(fs.readdir(tags).await), libc::EACCES);
        assert_eq!(errno(fs.lookup(tags, "latest").await), libc::EACCES);
        // That a refusal is final (one request, no retries) is counted in
        // registry_failures_map_to_errno.
    }
    // The right password reads.
    let fs = new_fs(
        &f.server.url,
        Some((ALICE, ALICE_PASSWORD)),
        FsConfig::default(),
        Duration::from_secs(5),
    );
    let layer = ino(&fs, &format!("images/{id}/layer")).await;
    assert!(read_all(&fs, layer, 65536).await == f.child.layer);
    assert_eq!(
        names(&fs, ino(&fs, "repositories").await).await,
        ["alice", "library"]
    );
}

/// API.md section 9: "a *provided* Basic credential must be valid (else 401)", also for search;
/// MOUNT.md: wrong credentials are EACCES. `GET /v1/search` never looks at the credentials, so
/// `ls repositories/` (and `search/<term>`) with a wrong password lists everything.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_give_eacces_on_repository_listings_and_search() {
    let f = fixture().await;
    let fs = new_fs(
        &f.server.url,
        Some((ALICE, "wrong-password")),
        FsConfig::default(),
        Duration::from_secs(5),
    );
    let repos = ino(&fs, "repositories").await;
    let search = ino(&fs, "search").await;
    assert_eq!(errno(fs.readdir(repos).await), libc::EACCES);
    assert_eq!(errno(fs.lookup(repos, ALICE).await), libc::EACCES);
    assert_eq!(errno(fs.lookup(search, "app").await), libc::EACCES);
}

/// What a [`FakeRegistry`] answers: status, extra headers, body (left out for HEAD).
struct FakeReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl FakeReply {
    fn status(status: u16) -> Self {
        FakeReply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn ok(body: impl Into<Vec<u8>>) -> Self {
        FakeReply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// One parsed request: method, path with query, lower-cased header lines.
type FakeHandler = dyn Fn(&str, &str, &str) -> FakeReply + Send + Sync;

/// A stand-in registry on a plain socket, one request per connection, counting requests.
struct FakeRegistry {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeRegistry {
    fn answering(status: u16) -> Self {
        Self::new(Arc::new(move |_, _, _| FakeReply::status(status)))
    }

    fn new(handler: Arc<FakeHandler>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&head).to_string();
                let mut words = head.split_whitespace();
                let method = words.next().unwrap_or("").to_string();
                let path = words.next().unwrap_or("").to_string();
                let reply = handler(&method, &path, &head.to_ascii_lowercase());
                let mut out = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    reply.status,
                    reply.body.len()
                );
                for (k, v) in &reply.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let _ = s.write_all(out.as_bytes());
                if method != "HEAD" {
                    let _ = s.write_all(&reply.body);
                }
            }
        });
        FakeRegistry {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_failures_map_to_errno_within_the_timeout() {
    let timeout = Duration::from_secs(2);
    let id = "b".repeat(64);

    // 5xx: retried, then EIO once the timeout is up.
    let failing = FakeRegistry::answering(503);
    let fs = new_fs(&failing.url(), None, FsConfig::default(), timeout);
    let images = ino(&fs, "images").await;
    assert_eq!(
        errno(no_hang("5xx lookup", fs.lookup(images, &id)).await),
        libc::EIO
    );
    let tries = failing.requests.load(Ordering::SeqCst);
    assert!(tries > 1, "a 5xx is retried ({tries} requests)");
    assert!(tries < 50, "retries back off ({tries} requests)");

    // 403 and 404 are answers, not failures: no retry.
    for (status, want) in [
        (403, libc::EACCES),
        (401, libc::EACCES),
        (404, libc::ENOENT),
    ] {
        let fake = FakeRegistry::answering(status);
        let fs = new_fs(&fake.url(), None, FsConfig::default(), timeout);
        let images = ino(&fs, "images").await;
        let repos = ino(&fs, "repositories").await;
        assert_eq!(errno(fs.lookup(images, &id).await), want, "{status}");
        assert_eq!(fake.requests.load(Ordering::SeqCst), 1, "{status}");
        if status != 404 {
            assert_eq!(errno(fs.readdir(repos).await), want, "{status}");
            assert_eq!(fake.requests.load(Ordering::SeqCst), 2, "{status}");
        }
    }

    // A registry that accepts connections and never answers: EIO once the timeout is up.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let fs = new_fs(&url, None, FsConfig::default(), Duration::from_secs(1));
    let images = ino(&fs, "images").await;
    let repos = ino(&fs, "repositories").await;
    let lookup = no_hang("silent lookup", fs.lookup(images, &id)).await;
    assert_eq!(errno(lookup), libc::EIO);
    let readdir = no_hang("silent readdir", fs.readdir(repos)).await;
    assert_eq!(errno(readdir), libc::EIO);
    drop(silent);

    // A registry slow to answer, but within the timeout, is waited for: the client does not
    // give up before its timeout. The fake answers one request at a time, each after a third
    // of the timeout.
    let timeout = Duration::from_secs(3);
    let json = format!(r#"{{"id":"{id}"}}"#);
    let slow = FakeRegistry::new(Arc::new(move |method, path, _| {
        std::thread::sleep(timeout / 3);
        match (method, path) {
            ("GET", "/v1/search?q=") | ("GET", "/v1/search") => FakeReply::ok(
                r#"{"query": "", "num_results": 1,
                    "results": [{"name": "library/slow", "description": ""}]}"#,
            ),
            ("GET", p) if p == format!("/v1/images/{}/json", "b".repeat(64)) => FakeReply {
                status: 200,
                headers: vec![("X-Docker-Size".into(), "0".into())],
                body: json.clone().into_bytes(),
            },
            _ => FakeReply::status(404),
        }
    }));
    let fs = new_fs(&slow.url(), None, FsConfig::default(), timeout);
    let images = ino(&fs, "images").await;
    let repos = ino(&fs, "repositories").await;
    let found = no_hang("slow lookup", fs.lookup(images, &id)).await;
    assert!(found.is_ok(), "a slow answer within the timeout: {found:?}");
    let listed = no_hang("slow readdir", fs.readdir(repos)).await;
    assert!(
        listed.is_ok(),
        "a slow listing within the timeout: {listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_still_being_pushed_is_not_visible() {
    let f = fixture().await;
    let c = f.server.client();
    let half = Image::child("fs-half", &f.child, 10_000);
    let r = c.put_json(&half, &Auth::alice()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.put_layer(&half, &Auth::alice()).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let fs = default_fs(&f.server.url);
    let images = ino(&fs, "images").await;
    assert_eq!(errno(fs.lookup(images, &half.id).await), libc::ENOENT);
    assert!(!names(&fs, images).await.contains(&half.id));

    // The checksum completes it; the failed lookup was not cached.
    let r = c.put_checksum(&half, &Auth::alice()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let layer = ino(&fs, &format!("images/{}/layer", half.id)).await;
    assert!(read_all(&fs, layer, 4096).await == half.layer);
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_and_listings_change_after_the_ttl() {
    let f = fixture().await;
    let c = f.server.client();
    let ttl = Duration::from_secs(1);
    let config = FsConfig {
        ttl,
        ..FsConfig::default()
    };
    let clock = Clock::manual();
    let fs = registry_fs_with_clock(
        &f.server.url,
        None,
        config,
        Duration::from_secs(5),
        clock.clone(),
    );
    let tag_path = "repositories/alice/app/tags/latest";

    let tag = ino(&fs, tag_path).await;
    let tags_dir = ino(&fs, "repositories/alice/app/tags").await;
    let alice_dir = ino(&fs, "repositories/alice").await;
    assert_eq!(
        read_all(&fs, tag, 100).await,
        format!("{}\n", f.child.id).as_bytes()
    );
    assert_eq!(names(&fs, tags_dir).await, ["latest", "v1"]);
    assert_eq!(names(&fs, alice_dir).await, ["app"]);
    let image_dir = ino(&fs, &format!("images/{}", f.bb.id)).await;
    assert_eq!(names(&fs, image_dir).await.len(), 3);

    // Change things behind the filesystem's back.
    let r = c
        .put(
            "/v1/repositories/alice/app/tags/latest",
            format!("\"{}\"", f.base.id),
            &Auth::alice(),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .put(
            "/v1/repositories/alice/app/tags/v2",
            format!("\"{}\"", f.child.id),
            &Auth::alice(),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = c
        .delete("/v1/repositories/alice/app/tags/v1", &Auth::alice())
        .await;
    assert_eq!(r.status, 200);
    let other = Image::new("fs-other", 1000);
    c.push_repo(
        "alice/other",
        std::slice::from_ref(&other),
        "x",
        &Auth::alice(),
    )
    .await;
    let r = c
        .delete("/v1/repositories/library/busybox/", &Auth::admin())
        .await;
    assert!(r.status == 200 || r.status == 204, "{}", r.text());

    // Within the TTL the cached answers stand.
    clock.advance(ttl - Duration::from_millis(1));
    assert_eq!(
        read_all(&fs, tag, 100).await,
        format!("{}\n", f.child.id).as_bytes()
    );
    assert_eq!(names(&fs, tags_dir).await, ["latest", "v1"]);
    assert_eq!(names(&fs, alice_dir).await, ["app"]);

    clock.advance(Duration::from_millis(1));
    assert_eq!(
        read_all(&fs, tag, 100).await,
        format!("{}\n", f.base.id).as_bytes(),
        "the new tag target after the TTL"
    );
    assert_eq!(names(&fs, tags_dir).await, ["latest", "v2"]);
    assert_eq!(errno(fs.lookup(tags_dir, "v1").await), libc::ENOENT);
    assert_eq!(names(&fs, alice_dir).await, ["app", "other"]);
    assert_eq!(
        fs.lookup(tags_dir, "latest").await.unwrap().attr.ino,
        tag,
        "identity outlives the cached content"
    );
    let all = names(&fs, ino(&fs, "images").await).await;
    assert!(all.contains(&other.id), "{all:?}");
    // The deleted repository is gone; its image stays reachable by path.
    let repos = ino(&fs, "repositories").await;
    assert_eq!(names(&fs, repos).await, ["alice"]);
    assert_eq!(errno(fs.lookup(repos, "library").await), libc::ENOENT);
    assert!(!all.contains(&f.bb.id), "{all:?}");
    assert_eq!(names(&fs, image_dir).await.len(), 3);
    // The search file follows too.
    let search = ino(&fs, "search/other").await;
    assert_eq!(read_all(&fs, search, 100).await, b"alice/other\t\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn sequential_reads_prefetch_within_the_cache_budget() {
    let server = TestServer::start();
    let c = server.client();
    let big = Image::new("fs-readahead", 3 * 1024 * 1024 + 777);
    c.push_repo(
        "library/big",
        std::slice::from_ref(&big),
        "latest",
        &Auth::admin(),
    )
    .await;
    let block_size = 64 * 1024;
    let cache_size = 512 * 1024;
    let config = FsConfig {
        block_size,
        cache_size,
        max_fetches: 4,
        ..FsConfig::default()
    };
    let fs = new_fs(&server.url, None, config, Duration::from_secs(10));
    let layer = ino(&fs, &format!("images/{}/layer", big.id)).await;
    assert_eq!(fs.cached_bytes(), 0);

    let fh = fs.open(layer, false, false).await.unwrap().fh;
    // A cold first read returns its bytes and starts fetching the blocks after it.
    let first = fs.read(fh, 0, 4096).await.unwrap();
    assert!(first[..] == big.layer[..4096]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs.cached_bytes() == 0 {
        assert!(Instant::now() < deadline, "nothing was prefetched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Kernel-sized sequential reads, unaligned to the blocks.
    let mut out = first.to_vec();
    let mut peak = 0;
    loop {
        let data = fs.read(fh, out.len() as u64, 100_003).await.unwrap();
        peak = peak.max(fs.cached_bytes());
        assert!(
            fs.cached_bytes() <= cache_size,
            "{} bytes cached, budget {cache_size}",
            fs.cached_bytes()
        );
        if data.is_empty() {
            break;
        }
        out.extend_from_slice(&data);
    }
    fs.release(fh).await;
    assert_eq!(out.len(), big.layer.len());
    assert!(out == big.layer, "sequential read differs");
    assert!(
        peak > block_size,
        "read-ahead used the cache ({peak} bytes)"
    );

    // Reads spanning several blocks at odd offsets, then backwards.
    let fh = fs.open(layer, false, false).await.unwrap().fh;
    let len = big.layer.len() as u64;
    for offset in [
        block_size - 1,
        5 * block_size + 17,
        len - 300_000,
        2 * block_size,
        0,
    ] {
        let data = fs.read(fh, offset, 300_000).await.unwrap();
        let end = (offset + 300_000).min(len) as usize;
        assert!(
            data[..] == big.layer[offset as usize..end],
            "offset {offset}"
        );
        assert!(fs.cached_bytes() <= cache_size);
    }
    fs.release(fh).await;

    // Concurrent sequential readers of one layer.
    let readers = (0..3).map(|_| read_all(&fs, layer, 128 * 1024));
    for data in futures::future::join_all(readers).await {
        assert!(data == big.layer);
    }
    // Once stray prefetches have landed, the budget still holds.
    settle(&fs).await;
    assert!(fs.cached_bytes() <= cache_size);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_larger_than_the_budget_still_reads_exactly() {
    let server = TestServer::start();
    let c = server.client();
    let img = Image::new("fs-tiny-budget", 700_000);
    c.push_repo(
        "library/tiny",
        std::slice::from_ref(&img),
        "latest",
        &Auth::admin(),
    )
    .await;
    let config = FsConfig {
        block_size: 256 * 1024,
        cache_size: 100 * 1024,
        ..FsConfig::default()
    };
    let fs = new_fs(&server.url, None, config, Duration::from_secs(10));
    let layer = ino(&fs, &format!("images/{}/layer", img.id)).await;
    assert!(read_all(&fs, layer, 128 * 1024).await == img.layer);
    assert!(read_all(&fs, layer, 50_000).await == img.layer);
    assert!(fs.cached_bytes() <= 100 * 1024);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_layers_empty_repositories_and_precise_created_times() {
    let server = TestServer::start();
    let c = server.client();
    assert_eq!(c.register(ALICE, ALICE_PASSWORD).await.status, 201);
    let id = "d".repeat(64);
    let empty = Image {
        id: id.clone(),
        json: format!(r#"{{"id":"{id}","created":"2015-03-04T05:06:07.123456789Z"}}"#).into_bytes(),
        layer: Vec::new(),
    };
    c.push_repo(
        "alice/blank",
        std::slice::from_ref(&empty),
        "v0",
        &Auth::alice(),
    )
    .await;
    let r = c
        .put("/v1/repositories/alice/notags/", "[]", &Auth::alice())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let fs = default_fs(&server.url);
    let layer = walk(&fs, &format!("images/{id}/layer")).await.unwrap();
    assert_eq!(layer.attr.size, 0);
    let created = SystemTime::UNIX_EPOCH + Duration::new(1_425_445_567, 123_456_789);
    assert_eq!(layer.attr.mtime, created);
    assert!(read_all(&fs, layer.attr.ino, 4096).await.is_empty());
    let fh = fs.open(layer.attr.ino, false, false).await.unwrap().fh;
    assert!(fs.read(fh, 10, 10).await.unwrap().is_empty());
    fs.release(fh).await;
    assert_eq!(
        names(&fs, ino(&fs, "repositories/alice").await).await,
        ["blank", "notags"]
    );
    let tags = ino(&fs, "repositories/alice/notags/tags").await;
    assert!(names(&fs, tags).await.is_empty());
    let images = ino(&fs, "repositories/alice/notags/images").await;
    assert!(names(&fs, images).await.is_empty());
}

/// MOUNT.md: "`ls images/` lists the images the mount knows of (from repository image lists
/// and ancestries)". An image known only as a tagged image's parent is left out.
#[tokio::test(flavor = "multi_thread")]
async fn the_images_listing_includes_ancestors() {
    let server = TestServer::start();
    let c = server.client();
    assert_eq!(c.register(ALICE, ALICE_PASSWORD).await.status, 201);
    let base = Image::new("fs-anc-base", 100);
    let top = Image::child("fs-anc-top", &base, 100);
    c.push_image(&base, &Auth::alice()).await;
    // The repository's image list names the top image only.
    c.push_repo(
        "alice/thin",
        std::slice::from_ref(&top),
        "latest",
        &Auth::alice(),
    )
    .await;
    let fs = default_fs(&server.url);
    let ancestry = ino(&fs, &format!("images/{}/ancestry", top.id)).await;
    assert_eq!(
        read_all(&fs, ancestry, 4096).await,
        format!("{}\n{}\n", top.id, base.id).as_bytes()
    );
    let listed = names(&fs, ino(&fs, "images").await).await;
    assert!(listed.contains(&top.id));
    assert!(listed.contains(&base.id), "{listed:?}");
}

/// The requested `Range: bytes=a-b` of a request's header lines, if any.
fn range_of(headers: &str) -> Option<(usize, usize)> {
    let line = headers.lines().find(|l| l.starts_with("range:"))?;
    let spec = line.split_once("bytes=")?.1.trim();
    let (a, b) = spec.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_without_size_header_or_ranges_still_reads_exactly() {
    let img = Image::new("fs-plain-registry", 200_000);
    let (id, json, layer) = (img.id.clone(), img.json.clone(), img.layer.clone());
    let ranged = Arc::new(AtomicUsize::new(0));
    let seen_range = ranged.clone();
    let fake = FakeRegistry::new(Arc::new(move |method, path, headers| {
        if range_of(headers).is_some() {
            seen_range.fetch_add(1, Ordering::SeqCst);
        }
        match (method, path.strip_prefix(&format!("/v1/images/{id}/"))) {
            // No X-Docker-Size: the size comes from a HEAD of the layer.
            ("GET", Some("json")) => FakeReply::ok(json.clone()),
            ("GET", Some("ancestry")) => FakeReply::ok(format!("[\"{id}\"]")),
            // Range is ignored: the whole layer, 200.
            ("HEAD" | "GET", Some("layer")) => FakeReply::ok(layer.clone()),
            _ => FakeReply::status(404),
        }
    }));
    let fs = new_fs(
        &fake.url(),
        None,
        FsConfig {
            block_size: 64 * 1024,
            ..FsConfig::default()
        },
        Duration::from_secs(5),
    );
    let e = walk(&fs, &format!("images/{}/layer", img.id))
        .await
        .unwrap();
    assert_eq!(e.attr.size, img.layer.len() as u64, "size from a HEAD");
    assert!(read_all(&fs, e.attr.ino, 100_000).await == img.layer);
    let fh = fs.open(e.attr.ino, false, false).await.unwrap().fh;
    for (offset, size) in [(150_000u64, 10_000u32), (7, 70_000), (199_990, 100)] {
        let data = fs.read(fh, offset, size).await.unwrap();
        let end = (offset as usize + size as usize).min(img.layer.len());
        assert!(
            data[..] == img.layer[offset as usize..end],
            "offset {offset}"
        );
    }
    fs.release(fh).await;
    assert!(ranged.load(Ordering::SeqCst) > 0, "ranges were asked for");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_shorter_than_its_size_is_eio_not_short_data() {
    let img = Image::new("fs-short-layer", 1000);
    let (id, json, layer) = (img.id.clone(), img.json.clone(), img.layer.clone());
    let fake = FakeRegistry::new(Arc::new(move |method, path, headers| {
        match (method, path.strip_prefix(&format!("/v1/images/{id}/"))) {
            // The registry claims 1500 bytes but has 1000.
            ("GET", Some("json")) => FakeReply {
                status: 200,
                headers: vec![("X-Docker-Size".into(), "1500".into())],
                body: json.clone(),
            },
            ("GET", Some("layer")) => match range_of(headers) {
                Some((a, b)) => {
                    let end = (b + 1).min(layer.len());
                    let start = a.min(end);
                    FakeReply {
                        status: 206,
                        headers: vec![(
                            "Content-Range".into(),
                            format!("bytes {a}-{b}/{}", layer.len()),
                        )],
                        body: layer[start..end].to_vec(),
                    }
                }
                None => FakeReply::ok(layer.clone()),
            },
            _ => FakeReply::status(404),
        }
    }));
    let fs = new_fs(
        &fake.url(),
        None,
        FsConfig::default(),
        Duration::from_secs(2),
    );
    let e = walk(&fs, &format!("images/{}/layer", img.id))
        .await
        .unwrap();
    assert_eq!(e.attr.size, 1500);
    let fh = fs.open(e.attr.ino, false, false).await.unwrap().fh;
    assert!(fs.read(fh, 0, 100).await.unwrap()[..] == img.layer[..100]);
    assert_eq!(errno(fs.read(fh, 900, 400).await), libc::EIO);
    assert_eq!(errno(fs.read(fh, 1200, 100).await), libc::EIO);
    fs.release(fh).await;
}

/// Waits until `addr` can be bound again, then serves `storage` there.
fn restart_on(addr: SocketAddr, storage: &std::path::Path) -> TestServer {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpListener::bind(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} stays taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cfg = TestServer::config();
    cfg.listen = addr;
    cfg.storage = StorageConfig::Local(storage.to_path_buf());
    TestServer::with_config(cfg)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_fails_with_eio_cached_images_stay_readable_and_recovery_is_automatic() {
    let storage = tempfile::tempdir().unwrap();
    let server = TestServer::on_disk(storage.path());
    let (base, child, _bb) = push_fixture(&server).await;
    let addr = server.addr;
    let timeout = Duration::from_secs(2);
    let config = FsConfig {
        ttl: Duration::from_secs(1),
        ..FsConfig::default()
    };
    let clock = Clock::manual();
    let fs = registry_fs_with_clock(&server.url, None, config, timeout, clock.clone());

    // Read the base image whole and list; leave the child's layer unread.
    let base_layer = ino(&fs, &format!("images/{}/layer", base.id)).await;
    assert!(read_all(&fs, base_layer, 8192).await == base.layer);
    let base_json = ino(&fs, &format!("images/{}/json", base.id)).await;
    let repos = ino(&fs, "repositories").await;
    assert_eq!(names(&fs, repos).await, ["alice", "library"]);
    let child_layer = ino(&fs, &format!("images/{}/layer", child.id)).await;
    let open_child = fs.open(child_layer, false, false).await.unwrap().fh;
    let tag = ino(&fs, "repositories/alice/app/tags/latest").await;
    let images = ino(&fs, "images").await;

    settle(&fs).await;
    drop(server);
    clock.advance(Duration::from_secs(2)); // past the TTL

    // Image data already read is served from cache: with the registry gone, any request would
    // fail.
    assert!(read_all(&fs, base_layer, 8192).await == base.layer);
    assert!(read_all(&fs, base_layer, 1000).await == base.layer);
    assert_eq!(read_all(&fs, base_json, 4096).await, base.json);
    assert_eq!(
        fs.getattr(child_layer).await.unwrap().attr.size,
        child.layer.len() as u64
    );

    // Everything else fails with EIO (never ENOENT), once the timeout is up.
    let r = no_hang("layer read", fs.read(open_child, 0, 4096)).await;
    assert_eq!(errno(r), libc::EIO, "layer read");
    let r = no_hang("readdir", fs.readdir(repos)).await;
    assert_eq!(errno(r), libc::EIO, "readdir");
    let r = no_hang("tag getattr", fs.getattr(tag)).await;
    assert_eq!(errno(r), libc::EIO, "tag getattr");
    let r = no_hang("unknown image", fs.lookup(images, &"c".repeat(64))).await;
    assert_eq!(errno(r), libc::EIO, "unknown image");

    // The registry comes back on the same address and storage: everything works again,
    // including the handle opened before the outage.
    let server = restart_on(addr, storage.path());
    let data = fs.read(open_child, 0, 4096).await.unwrap();
    assert!(data[..] == child.layer[..4096]);
    fs.release(open_child).await;
    assert!(read_all(&fs, child_layer, 65536).await == child.layer);
    assert_eq!(names(&fs, repos).await, ["alice", "library"]);
    assert_eq!(
        read_all(&fs, tag, 100).await,
        format!("{}\n", child.id).as_bytes()
    );
    assert_eq!(
        errno(fs.lookup(images, &"c".repeat(64)).await),
        libc::ENOENT
    );
    drop(server);
}

/// MOUNT.md: "a second read of the same bytes is served from cache". A cold first read is
/// fetched with an exact range and never enters the block cache, so when that read covered the
/// bytes (a small layer read in one kernel request, as with the 4 MiB readahead `regfs mount`
/// sets), reading them again goes back to the registry, and fails while it is away.
#[tokio::test(flavor = "multi_thread")]
async fn bytes_read_once_are_served_from_cache() {
    let server = TestServer::start();
    let c = server.client();
    let img = Image::new("fs-read-once", 300_000);
    c.push_repo(
        "library/once",
        std::slice::from_ref(&img),
        "latest",
        &Auth::admin(),
    )
    .await;
    let fs = new_fs(
        &server.url,
        None,
        FsConfig::default(),
        Duration::from_secs(2),
    );
    let layer = ino(&fs, &format!("images/{}/layer", img.id)).await;
    let fh = fs.open(layer, false, false).await.unwrap().fh;
    let all = fs.read(fh, 0, 300_000).await.unwrap();
    assert!(all[..] == img.layer[..]);
    fs.release(fh).await;
    // Let any prefetch land, then take the registry away.
    settle(&fs).await;
    drop(server);
    let fh = fs.open(layer, false, false).await.unwrap().fh;
    let again = fs.read(fh, 0, 300_000).await;
    fs.release(fh).await;
    assert!(
        again.as_ref().is_ok_and(|b| b[..] == img.layer[..]),
        "second read: {:?}; {} bytes cached",
        again.map(|b| b.len()),
        fs.cached_bytes()
    );
}

/// MOUNT.md: "Modification times come from the image JSON's `created` and the tag's
/// `last_update` where known." The registry knows `last_update` (`GET .../tags/<tag>/json`), and
/// a listing, a lookup and the repository's own time agree on it.
#[tokio::test(flavor = "multi_thread")]
async fn a_tag_mtime_is_its_last_update() {
    // Tags last updated years before the filesystem starts, so no time of its own can pass
    // for theirs: written into the store as the registry keeps them, then served afresh.
    let store: Arc<dyn BlobStore> = Arc::new(ObjectBackend::memory());
    let server = TestServer::with_store(store.clone());
    let (base, child, _bb) = push_fixture(&server).await;
    drop(server);
    let app = RepoRef::parse_full("alice/app").unwrap();
    for (tag, id, at) in [
        ("latest", &child.id, 1_400_000_000),
        ("v1", &base.id, 1_400_000_100),
        ("moved", &base.id, 1_500_000_000),
    ] {
        let record = format!(r#"{{"id":"{id}","last_update":{at}}}"#);
        store
            .put(&keys::repo_tag(&app, &tag.parse().unwrap()), record.into())
            .await
            .unwrap();
    }
    let server = TestServer::with_store(store);
    let c = server.client();
    let fs = default_fs(&server.url);
    let info = c
        .get("/v1/repositories/alice/app/tags/moved/json", &Auth::alice())
        .await
        .json();
    let last_update = info["last_update"].as_u64().expect("last_update");
    assert_eq!(last_update, 1_500_000_000);
    let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let tag = walk(&fs, "repositories/alice/app/tags/moved")
        .await
        .unwrap();
    assert_eq!(unix(tag.attr.mtime), last_update);

    let tags = ino(&fs, "repositories/alice/app/tags").await;
    let listed = list(&fs, tags).await;
    let moved = listed.iter().find(|d| d.name == "moved").expect("listed");
    assert_eq!(unix(moved.entry.attr.mtime), last_update);
    // The newest tag changed last, so the repository did.
    for dir in ["repositories/alice/app", "repositories/alice/app/tags"] {
        let e = walk(&fs, dir).await.unwrap();
        assert_eq!(unix(e.attr.mtime), last_update, "{dir}");
    }
}

/// A registry that knows only the plain tags map (the reference's) is asked for times, answers
/// without them, and is still listed; its tags keep one time, the mount's start.
#[tokio::test(flavor = "multi_thread")]
async fn tags_of_a_registry_without_times_are_listed() {
    let id = Image::new("plain", 10).id;
    let want = format!("{id}\n");
    let asked_for_times = Arc::new(AtomicBool::new(false));
    let asked = asked_for_times.clone();
    let fake = FakeRegistry::new(Arc::new(move |method, path, headers| {
        match (method, path) {
            ("GET", p) if p.starts_with("/v1/search") => FakeReply::ok(
                r#"{"query": "", "num_results": 1,
                    "results": [{"name": "library/plain", "description": ""}]}"#,
            ),
            ("GET", "/v1/repositories/library/plain/tags") => {
                if headers.contains("application/vnd.regfs.tags.v1+json") {
                    asked.store(true, Ordering::SeqCst);
                }
                FakeReply {
                    status: 200,
                    headers: vec![("Content-Type".into(), "application/json".into())],
                    body: format!("{{\"v1\": \"{id}\", \"bad tag!\": \"{id}\"}}").into_bytes(),
                }
            }
            _ => FakeReply::status(404),
        }
    }));
    let before = SystemTime::now();
    let fs = default_fs(&fake.url());
    let tags = ino(&fs, "repositories/library/plain/tags").await;
    assert!(asked_for_times.load(Ordering::SeqCst));
    let listed = list(&fs, tags).await;
    let names: Vec<&str> = listed.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["v1"], "a name that is not a valid tag is left out");
    let tag = walk(&fs, "repositories/library/plain/tags/v1")
        .await
        .unwrap();
    assert_eq!(tag.attr.mtime, listed[0].entry.attr.mtime);
    assert!(tag.attr.mtime >= before - Duration::from_secs(1));
    assert!(tag.attr.mtime <= SystemTime::now());
    assert_eq!(read_all(&fs, tag.attr.ino, 4096).await, want.into_bytes());
}
