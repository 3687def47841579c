//! The disk cache (`--cache-dir`) against a real server: reads fill it, a later filesystem over
//! the same directory reads from it with the registry gone, files cut short are refetched, the
//! size limit holds, and one directory serves one mount at a time. With passthrough, layers read
//! whole become one file the kernel reads itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use regfs::mount::{FsConfig, FsError, RegistryFs};

use crate::common::fs::{registry_fs, walk};
use crate::common::{Auth, Image, TestServer};

const BLOCK: u64 = 64 * 1024;

fn config(dir: &Path) -> FsConfig {
    FsConfig {
        block_size: BLOCK,
        cache_dir: Some(dir.to_path_buf()),
        ..FsConfig::default()
    }
}

fn new_fs(url: &str, config: FsConfig) -> RegistryFs {
    registry_fs(url, None, config, Duration::from_secs(2))
}

/// A server holding one image with a layer of `len` bytes.
async fn server_with(seed: &str, len: usize) -> (TestServer, Image) {
    let server = TestServer::start();
    let image = Image::new(seed, len);
    server.client().push_image(&image, &Auth::admin()).await;
    (server, image)
}

/// The whole layer of `image`, read sequentially in 100,000-byte reads.
async fn read_layer(fs: &RegistryFs, image: &Image) -> Result<Vec<u8>, FsError> {
    let ino = walk(fs, &format!("images/{}/layer", image.id))
        .await?
        .attr
        .ino;
    let fh = fs.open(ino, false, false).await?.fh;
    let mut out = Vec::new();
    loop {
        let data = fs.read(fh, out.len() as u64, 100_000).await?;
        if data.is_empty() {
            break;
        }
        out.extend_from_slice(&data);
    }
    fs.release(fh).await;
    Ok(out)
}

/// Reads the layer and waits until what it fetched is on disk. It reads twice: the second read
/// waits for the fetches the first one left running in the background, which then are queued for
/// the disk.
async fn read_and_flush(fs: &RegistryFs, image: &Image) {
    for _ in 0..2 {
        let data = read_layer(fs, image).await.unwrap();
        assert!(data == image.layer, "layer read through the cache");
    }
    fs.flush_disk_cache().await;
}

/// Every block file under `dir`, sorted.
fn block_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().starts_with("block-") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The whole-layer file of `image` under the cache `dir`, if there is one.
fn layer_file(dir: &Path, image: &Image) -> Option<PathBuf> {
    let v1 = dir.join("v1");
    std::fs::read_dir(&v1)
        .ok()?
        .flatten()
        .map(|registry| registry.path().join(&image.id).join("layer"))
        .find(|p| p.is_file())
}

fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.join("v1")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn a_later_filesystem_reads_cached_layers_with_the_registry_gone() {
    use std::os::unix::fs::PermissionsExt;
    let (server, image) = server_with("dc-gone", 300_001).await;
    let url = server.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");

    let fs = new_fs(&url, config(&dir));
    read_and_flush(&fs, &image).await;
    assert_eq!(
        block_files(&dir).len(),
        5,
        "300,001 bytes are five 64 KiB blocks"
    );
    assert!(fs.disk_cached_bytes().unwrap() >= image.layer.len() as u64);
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the cache directory is private");
    drop(fs);

    drop(server);
    let fs = new_fs(&url, config(&dir));
    let data = read_layer(&fs, &image)
        .await
        .expect("the layer and its metadata come from disk");
    assert!(data == image.layer);
    // The registry really is gone: anything not cached fails.
    let json = walk(&fs, &format!("images/{}/json", "c".repeat(64))).await;
    assert!(matches!(json, Err(FsError::Registry(_))), "{json:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_file_cut_short_is_fetched_again() {
    let (server, image) = server_with("dc-cut", 200_000).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let fs = new_fs(&server.url, config(&dir));
    read_and_flush(&fs, &image).await;
    drop(fs);

    let files = block_files(&dir);
    assert_eq!(files.len(), 4);
    let (cut, grown) = (&files[1], &files[2]);
    std::fs::write(cut, &image.layer[BLOCK as usize..BLOCK as usize + 1000]).unwrap();
    let mut longer = std::fs::read(grown).unwrap();
    longer.extend_from_slice(b"trailing garbage");
    std::fs::write(grown, &longer).unwrap();
    // The image's metadata cut short too: it is asked for again.
    let meta = cut.with_file_name("image");
    let whole = std::fs::read(&meta).unwrap();
    std::fs::write(&meta, &whole[..whole.len() / 2]).unwrap();

    let fs = new_fs(&server.url, config(&dir));
    read_and_flush(&fs, &image).await;
    assert_eq!(std::fs::read(&meta).unwrap(), whole, "metadata rewritten");
    for f in [cut, grown] {
        assert_eq!(
            std::fs::metadata(f).unwrap().len(),
            BLOCK,
            "{} rewritten whole",
            f.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_size_limit_evicts_and_holds_across_restarts() {
    let (server, image) = server_with("dc-limit", 10 * BLOCK as usize).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let limit = 3 * BLOCK + 4096;
    let fs = new_fs(
        &server.url,
        FsConfig {
            cache_dir_size: limit,
            ..config(&dir)
        },
    );
    read_and_flush(&fs, &image).await;
    let held = fs.disk_cached_bytes().unwrap();
    assert!(held <= limit, "{held} bytes held, limit {limit}");
    assert!(bytes_under(&dir) <= limit);
    assert!(!block_files(&dir).is_empty(), "the newest blocks stay");
    // Reading everything again works, and still within the limit.
    read_and_flush(&fs, &image).await;
    assert!(bytes_under(&dir) <= limit);
    drop(fs);

    // A smaller limit on the next start trims what is there.
    let fs = new_fs(
        &server.url,
        FsConfig {
            cache_dir_size: BLOCK,
            ..config(&dir)
        },
    );
    assert!(fs.disk_cached_bytes().unwrap() <= BLOCK);
    assert!(bytes_under(&dir) <= BLOCK);
    read_and_flush(&fs, &image).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_filesystem_on_a_busy_directory_runs_without_it() {
    let (server, image) = server_with("dc-two", 150_000).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let first = new_fs(&server.url, config(&dir));
    let second = new_fs(&server.url, config(&dir));
    assert!(first.disk_cached_bytes().is_some());
    assert_eq!(second.disk_cached_bytes(), None, "the directory is taken");
    // Both read correctly; only the first writes to the directory.
    read_and_flush(&second, &image).await;
    assert!(block_files(&dir).is_empty());
    read_and_flush(&first, &image).await;
    assert_eq!(block_files(&dir).len(), 3);
    drop(second);
    drop(first);

    // Released with the filesystem that held it.
    let third = new_fs(&server.url, config(&dir));
    assert!(third.disk_cached_bytes().is_some());
    read_and_flush(&third, &image).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registries_do_not_share_entries() {
    let (a, image) = server_with("dc-registries", 100_000).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let fs = new_fs(&a.url, config(&dir));
    read_and_flush(&fs, &image).await;
    drop(fs);
    // Another registry with no such image: the cached copy must not answer for it.
    let b = TestServer::start();
    let fs = new_fs(&b.url, config(&dir));
    let e = walk(&fs, &format!("images/{}/layer", image.id)).await;
    assert!(matches!(e, Err(FsError::NotFound)), "{e:?}");
}

/// Through the kernel: `cat` of a layer, unmount, remount with the server gone, same bytes.
#[cfg(feature = "fuse-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn a_remount_reads_the_layer_from_disk_with_the_server_gone() {
    use crate::common::mount::TestMount;
    let (server, image) = server_with("dc-mount", 2 * 1024 * 1024 + 17).await;
    let url = server.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let cfg = FsConfig {
        block_size: 256 * 1024,
        cache_dir: Some(dir.clone()),
        ..FsConfig::default()
    };
    let rel = format!("images/{}/layer", image.id);
    let (cfg2, rel2, layer) = (cfg.clone(), rel.clone(), image.layer.clone());
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let m = TestMount::with_config(&url, None, cfg, Duration::from_secs(5));
        let out = std::process::Command::new("cat")
            .arg(m.join(&rel))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(out.stdout == layer, "first read");
        rt.block_on(m.fs().flush_disk_cache());
        drop(m);
        drop(server);

        let m = TestMount::with_config(&url, None, cfg2, Duration::from_secs(2));
        let out = std::process::Command::new("cat")
            .arg(m.join(&rel2))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == layer, "second read, from disk");
    })
    .await
    .unwrap();
}

/// Runs `regfs mount --registry url --cache-dir cache`, reads `rel` through it, and ends it
/// with SIGTERM.
#[cfg(feature = "fuse-tests")]
fn run_mount(url: &str, cache: &Path, home: &Path, rel: &str) -> std::io::Result<Vec<u8>> {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = std::fs::canonicalize(dir.path()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_regfs"))
        .arg("mount")
        .arg(&mountpoint)
        .args([
            "--registry",
            url,
            "--no-check",
            "--timeout",
            "2",
            "--cache-dir",
        ])
        .arg(cache)
        .env("HOME", home)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let want = mountpoint.to_string_lossy().into_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
    {
        assert!(std::time::Instant::now() < deadline, "not mounted in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    let data = std::fs::read(mountpoint.join(rel));
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "the mount ends cleanly: {status}");
    data
}

/// `regfs mount --cache-dir` as a process: what one run read, the next reads with the registry
/// gone.
#[cfg(feature = "fuse-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn the_mount_command_keeps_its_disk_cache_across_runs() {
    let (server, image) = server_with("dc-process", 5 * 1024 * 1024 + 3).await;
    let url = server.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let rel = format!("images/{}/layer", image.id);
    let first = tokio::task::spawn_blocking({
        let (url, cache, home, rel) = (url.clone(), cache.clone(), home.clone(), rel.clone());
        move || run_mount(&url, &cache, &home, &rel)
    })
    .await
    .unwrap();
    assert!(first.unwrap() == image.layer, "first run reads the layer");
    assert!(
        !block_files(&cache).is_empty() || layer_file(&cache, &image).is_some(),
        "the first run filled the cache"
    );
    drop(server);
    let second = tokio::task::spawn_blocking(move || run_mount(&url, &cache, &home, &rel))
        .await
        .unwrap()
        .expect("the second run reads from disk");
    assert!(second == image.layer);
}

/// A filesystem over the cache in `dir`, as if the kernel had granted passthrough.
fn passthrough_fs(url: &str, config: FsConfig) -> RegistryFs {
    let fs = new_fs(url, config);
    fs.set_passthrough(true);
    fs
}

async fn layer_ino(fs: &RegistryFs, image: &Image) -> u64 {
    walk(fs, &format!("images/{}/layer", image.id))
        .await
        .unwrap()
        .attr
        .ino
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_read_whole_becomes_one_file_with_its_exact_bytes() {
    let (server, image) = server_with("dc-whole", 300_001).await;
    let url = server.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let fs = passthrough_fs(&url, config(&dir));
    read_and_flush(&fs, &image).await;
    let whole = layer_file(&dir, &image).expect("the layer is one file");
    assert!(std::fs::read(&whole).unwrap() == image.layer);
    assert!(block_files(&dir).is_empty(), "stored once: the blocks went");
    assert_eq!(
        fs.disk_cached_bytes().unwrap(),
        bytes_under(&dir),
        "the index counts the layer file"
    );

    // Opened now, the layer is handed over as that file; `read` on the handle still works.
    let ino = layer_ino(&fs, &image).await;
    let o = fs.open(ino, false, false).await.unwrap();
    let p = o.passthrough.clone().expect("a passthrough open");
    assert_eq!(p.ino, ino);
    assert_eq!(p.file.metadata().unwrap().len(), image.layer.len() as u64);
    let data = fs.read(o.fh, 299_000, 100_000).await.unwrap();
    assert!(data[..] == image.layer[299_000..]);
    fs.release(o.fh).await;
    drop(fs);

    // Without passthrough and with the registry gone, blocks are read out of the layer file.
    drop(server);
    let fs = new_fs(&url, config(&dir));
    let data = read_layer(&fs, &image)
        .await
        .expect("served from the layer file");
    assert!(data == image.layer);
    assert!(
        fs.open(ino, false, false)
            .await
            .unwrap()
            .passthrough
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_read_whole_is_completed_on_disk_when_writes_were_dropped() {
    let (server, image) = server_with("dc-dropped", 2 * 1024 * 1024 + 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    // One disk writer for 33 blocks read as fast as loopback goes: most writes are dropped.
    let fs = passthrough_fs(
        &server.url,
        FsConfig {
            cache_size: 16 * BLOCK,
            ..config(&dir)
        },
    );
    let data = read_layer(&fs, &image).await.unwrap();
    assert!(data == image.layer);
    fs.flush_disk_cache().await;
    let whole = layer_file(&dir, &image).expect("completed and assembled after the read");
    assert!(std::fs::read(whole).unwrap() == image.layer);
    assert!(block_files(&dir).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn complete_blocks_found_at_open_are_assembled() {
    let (server, image) = server_with("dc-found", 200_000).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    // A mount without passthrough keeps blocks only.
    let fs = new_fs(&server.url, config(&dir));
    read_and_flush(&fs, &image).await;
    assert_eq!(block_files(&dir).len(), 4);
    assert!(layer_file(&dir, &image).is_none());
    drop(fs);

    let fs = passthrough_fs(&server.url, config(&dir));
    let ino = layer_ino(&fs, &image).await;
    let o = fs.open(ino, false, false).await.unwrap();
    assert!(o.passthrough.is_none(), "not yet one file at this open");
    fs.release(o.fh).await;
    fs.flush_disk_cache().await;
    let whole = layer_file(&dir, &image).expect("assembled after the open");
    assert!(std::fs::read(whole).unwrap() == image.layer);
    let o = fs.open(ino, false, false).await.unwrap();
    assert!(o.passthrough.is_some(), "the next open passes through");
    fs.release(o.fh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn layer_files_count_against_the_limit() {
    let server = TestServer::start();
    let (a, b) = (
        Image::new("dc-evict-a", 300_000),
        Image::new("dc-evict-b", 300_000),
    );
    for image in [&a, &b] {
        server.client().push_image(image, &Auth::admin()).await;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    // Room for one layer and its metadata, not two.
    let limit = 450_000;
    let cfg = FsConfig {
        cache_dir_size: limit,
        ..config(&dir)
    };
    let fs = passthrough_fs(&server.url, cfg.clone());
    read_and_flush(&fs, &a).await;
    assert!(layer_file(&dir, &a).is_some());
    read_and_flush(&fs, &b).await;
    assert!(
        layer_file(&dir, &b).is_some(),
        "the newest layer is kept whole"
    );
    assert!(layer_file(&dir, &a).is_none(), "the older one was evicted");
    let held = fs.disk_cached_bytes().unwrap();
    assert!(held <= limit, "{held} bytes held, limit {limit}");
    assert_eq!(held, bytes_under(&dir));
    drop(fs);

    // Counted again at the next start, as one entry.
    let fs = passthrough_fs(
        &server.url,
        FsConfig {
            cache_dir_size: 100_000,
            ..cfg
        },
    );
    assert!(layer_file(&dir, &b).is_none(), "a smaller limit evicts it");
    assert!(fs.disk_cached_bytes().unwrap() <= 100_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_file_of_the_wrong_length_is_discarded() {
    let (server, image) = server_with("dc-bad-layer", 200_000).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let fs = passthrough_fs(&server.url, config(&dir));
    read_and_flush(&fs, &image).await;
    drop(fs);
    let whole = layer_file(&dir, &image).unwrap();

    for cut in [150_000, 200_007] {
        let mut bad = image.layer.clone();
        bad.resize(cut, 0xee);
        std::fs::write(&whole, &bad).unwrap();
        let fs = passthrough_fs(&server.url, config(&dir));
        let ino = layer_ino(&fs, &image).await;
        let o = fs.open(ino, false, false).await.unwrap();
        assert!(
            o.passthrough.is_none(),
            "{cut} bytes: not handed to the kernel"
        );
        assert!(!whole.exists(), "{cut} bytes: deleted");
        fs.release(o.fh).await;
        // Read again from the registry, and assembled anew.
        read_and_flush(&fs, &image).await;
        assert!(
            std::fs::read(&whole).unwrap() == image.layer,
            "{cut}: rebuilt"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn opens_of_one_layer_never_mix_passthrough_and_cached() {
    let (server, image) = server_with("dc-modes", 100_000).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let fs = passthrough_fs(&server.url, config(&dir));
    read_and_flush(&fs, &image).await;
    assert!(layer_file(&dir, &image).is_some());
    let ino = layer_ino(&fs, &image).await;

    // A cached open (as before passthrough) keeps later opens cached while it lasts.
    fs.set_passthrough(false);
    let cached = fs.open(ino, false, false).await.unwrap();
    fs.set_passthrough(true);
    let second = fs.open(ino, false, false).await.unwrap();
    assert!(cached.passthrough.is_none() && second.passthrough.is_none());
    fs.release(cached.fh).await;
    fs.release(second.fh).await;

    // Passthrough opens share one file, even once passthrough is withdrawn and the file gone.
    let first = fs.open(ino, false, false).await.unwrap();
    let file = first.passthrough.clone().unwrap().file;
    std::fs::remove_file(layer_file(&dir, &image).unwrap()).unwrap();
    fs.set_passthrough(false);
    let again = fs.open(ino, false, false).await.unwrap();
    let shared = again.passthrough.clone().expect("follows the open handle");
    assert!(std::sync::Arc::ptr_eq(&file, &shared.file));
    let data = fs.read(again.fh, 0, 200_000).await.unwrap();
    assert!(data == image.layer);

    // A refused registration turns that handle into a cached one.
    fs.passthrough_refused(again.fh, &std::io::Error::from_raw_os_error(libc::EPERM));
    assert!(
        !fs.passthrough(),
        "no privilege: passthrough is off for the mount"
    );
    fs.release(again.fh).await;
    fs.release(first.fh).await;
    let o = fs.open(ino, false, false).await.unwrap();
    assert!(o.passthrough.is_none());
    let data = fs.read(o.fh, 0, 200_000).await.unwrap();
    assert!(data == image.layer);
    fs.release(o.fh).await;
}

/// Through the kernel: a layer read whole becomes one file, and a remount with the server gone
/// serves it by passthrough, with no read reaching the daemon.
#[cfg(feature = "fuse-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn a_whole_layer_is_read_by_passthrough_without_the_daemon() {
    use crate::common::mount::TestMount;
    let (server, image) = server_with("dc-passthrough", 3 * 1024 * 1024 + 5).await;
    let url = server.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let cfg = FsConfig {
        block_size: 256 * 1024,
        cache_dir: Some(dir.clone()),
        ..FsConfig::default()
    };
    let rel = format!("images/{}/layer", image.id);
    let layer = image.layer.clone();
    let rt = tokio::runtime::Handle::current();
    let granted = tokio::task::spawn_blocking({
        let (dir, image) = (dir.clone(), image);
        move || {
            let m = TestMount::with_config(&url, None, cfg.clone(), Duration::from_secs(5));
            let granted = m.fs().passthrough();
            let first = std::fs::read(m.join(&rel)).unwrap();
            assert!(first == layer, "first read");
            rt.block_on(m.fs().flush_disk_cache());
            assert_eq!(
                layer_file(&dir, &image).is_some(),
                granted,
                "assembled exactly when passthrough was granted"
            );
            drop(m);
            drop(server);

            let m = TestMount::with_config(&url, None, cfg, Duration::from_secs(2));
            let before = m.fs().read_requests();
            let second = std::fs::read(m.join(&rel)).unwrap();
            assert!(second == layer, "second read, from disk");
            if granted {
                assert_eq!(m.fs().read_requests(), before, "no read reached the daemon");
            }
            granted
        }
    })
    .await
    .unwrap();
    if !granted {
        eprintln!("FUSE passthrough not granted here; checked the fallback only");
    }
}
