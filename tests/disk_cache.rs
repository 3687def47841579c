//! The disk cache (`--cache-dir`) against a real server: reads fill it, a later filesystem over
//! the same directory reads from it with the registry gone, files cut short are refetched, the
//! size limit holds, and one directory serves one mount at a time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use regfs::client::{ClientConfig, RegistryClient};
use regfs::mount::fs::Entry;
use regfs::mount::inode::ROOT_INO;
use regfs::mount::{FsConfig, FsError, RegistryFs};

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
    let client = RegistryClient::new(ClientConfig {
        url: url.to_string(),
        credentials: None,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    RegistryFs::new(client, config)
}

/// A server holding one image with a layer of `len` bytes.
async fn server_with(seed: &str, len: usize) -> (TestServer, Image) {
    let server = TestServer::start();
    let image = Image::new(seed, len);
    server.client().push_image(&image, &Auth::admin()).await;
    (server, image)
}

async fn walk(fs: &RegistryFs, path: &str) -> Result<Entry, FsError> {
    let mut entry = fs.getattr(ROOT_INO).await?;
    for name in path.split('/').filter(|n| !n.is_empty()) {
        entry = fs.lookup(entry.attr.ino, name).await?;
    }
    Ok(entry)
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

/// Reads the layer and waits until what it fetched is on disk.
async fn read_and_flush(fs: &RegistryFs, image: &Image) {
    let data = read_layer(fs, image).await.unwrap();
    assert!(data == image.layer, "layer read through the cache");
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
        .args(["--registry", url, "--timeout", "2", "--cache-dir"])
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
        !block_files(&cache).is_empty(),
        "the first run filled the cache"
    );
    drop(server);
    let second = tokio::task::spawn_blocking(move || run_mount(&url, &cache, &home, &rel))
        .await
        .unwrap()
        .expect("the second run reads from disk");
    assert!(second == image.layer);
}
