//! The mount of a registry that runs in the same process (the embedded default). On a local
//! directory, with passthrough, a layer open hands the kernel the stored file itself, and no
//! read reaches the daemon or the HTTP server; without it, the daemon reads that file. On any
//! other store, layer bytes come from the registry directly, not through a loopback socket.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use regfs::client::{ClientConfig, ClientError, RegistryClient};
use regfs::mount::RegistryBackend;
use regfs::mount::backend::embedded::EmbeddedBackend;
use regfs::mount::{FsConfig, RegistryFs};
use regfs::names::ImageId;
use regfs::registry::{Registry, RegistryConfig};
use regfs::storage::{BlobStore, ObjectBackend, keys};

use crate::common::fs::walk;
use crate::common::{Auth, Image, TestServer};

/// A server over `store` holding one image with a layer of `len` bytes.
async fn server_with(store: Arc<dyn BlobStore>, seed: &str, len: usize) -> (TestServer, Image) {
    let server = TestServer::with_store(store);
    let image = Image::new(seed, len);
    server.client().push_image(&image, &Auth::admin()).await;
    (server, image)
}

fn local(dir: &Path) -> Arc<dyn BlobStore> {
    Arc::new(ObjectBackend::local(dir).unwrap())
}

/// A filesystem over `url` whose layer reads go to a registry over `store` in this process, as
/// the embedded mount's do.
fn new_fs(url: &str, store: Arc<dyn BlobStore>, passthrough: bool) -> RegistryFs {
    let registry = Registry::new(store, RegistryConfig::default());
    let config = FsConfig {
        block_size: 64 * 1024,
        ..FsConfig::default()
    };
    let fs = RegistryFs::new(Arc::new(in_process_client(url, registry)), config);
    fs.set_passthrough(passthrough);
    fs
}

async fn layer_ino(fs: &RegistryFs, image: &Image) -> u64 {
    let rel = format!("images/{}/layer", image.id);
    walk(fs, &rel).await.unwrap().attr.ino
}

#[tokio::test(flavor = "multi_thread")]
async fn a_layer_open_hands_over_the_stored_file_and_reads_come_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = local(tmp.path());
    let (server, image) = server_with(store.clone(), "stored-layer", 200_003).await;
    let fs = new_fs(&server.url, store.clone(), true);
    let ino = layer_ino(&fs, &image).await;
    let o = fs.open(ino, false, false).await.unwrap();
    let p = o
        .passthrough
        .clone()
        .expect("the stored file is passed through");
    assert_eq!(p.ino, ino);
    assert_eq!(p.file.metadata().unwrap().len(), image.layer.len() as u64);
    // The kernel may still send a read; it is answered from the same file.
    let data = fs.read(o.fh, 199_990, 100).await.unwrap();
    assert!(data[..] == image.layer[199_990..]);
    // A second open shares the registration.
    let again = fs.open(ino, false, false).await.unwrap();
    assert!(Arc::ptr_eq(&again.passthrough.unwrap().file, &p.file));
    fs.release(again.fh).await;
    fs.release(o.fh).await;

    // Without passthrough the daemon reads the file it opened: no request reaches the
    // registry, which may as well be gone, and an object replaced since (which a read through
    // the registry would see) leaves the open file's bytes as they were.
    let fs = new_fs(&server.url, store.clone(), false);
    let ino = layer_ino(&fs, &image).await;
    let o = fs.open(ino, false, false).await.unwrap();
    assert!(o.passthrough.is_none());
    drop(server);
    let id: ImageId = image.id.parse().unwrap();
    let other = bytes::Bytes::from(vec![0xa5; image.layer.len()]);
    store.put(&keys::image_layer(&id), other).await.unwrap();
    let data = fs.read(o.fh, 7, 100_000).await.unwrap();
    assert!(data[..] == image.layer[7..100_007]);
    let data = fs.read(o.fh, 199_990, 100).await.unwrap();
    assert!(data[..] == image.layer[199_990..]);
    assert!(
        fs.read(o.fh, 200_003, 10).await.unwrap().is_empty(),
        "at the end"
    );
    fs.release(o.fh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_without_files_is_read_through_the_registry() {
    let store: Arc<dyn BlobStore> = Arc::new(ObjectBackend::memory());
    let (server, image) = server_with(store.clone(), "memory-layer", 70_001).await;
    let fs = new_fs(&server.url, store, true);
    let ino = layer_ino(&fs, &image).await;
    let o = fs.open(ino, false, false).await.unwrap();
    assert!(
        o.passthrough.is_none(),
        "memory storage has no file to hand over"
    );
    let data = fs.read(o.fh, 0, 70_001).await.unwrap();
    assert!(data[..] == image.layer[..]);
    fs.release(o.fh).await;
}

/// A client of `url` whose layer reads go to `registry` in this process.
fn in_process_client(url: &str, registry: Registry) -> EmbeddedBackend {
    let http = RegistryClient::new(ClientConfig {
        url: url.to_string(),
        credentials: None,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    EmbeddedBackend::new(http, registry)
}

/// Layer ranges read in process are the bytes and the errors the same registry gives over
/// HTTP, and need no server.
#[tokio::test(flavor = "multi_thread")]
async fn in_process_layer_reads_match_http_and_need_no_server() {
    let store: Arc<dyn BlobStore> = Arc::new(ObjectBackend::memory());
    let (server, image) = server_with(store.clone(), "in-process", 300_007).await;
    let pending = Image::new("in-process-pending", 1000);
    let r = server.client().put_json(&pending, &Auth::admin()).await;
    assert_eq!(r.status, 200);
    let registry = Registry::new(store, RegistryConfig::default());
    let http = RegistryClient::new(ClientConfig {
        url: server.url.clone(),
        credentials: None,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let local = in_process_client(&server.url, registry.clone());
    let id: ImageId = image.id.parse().unwrap();
    let missing: ImageId = "e".repeat(64).parse().unwrap();
    let pending_id: ImageId = pending.id.parse().unwrap();
    for range in [0..1, 5..70_000, 299_000..300_007, 0..300_007] {
        let a = http.layer_range(&id, range.clone()).await.unwrap();
        let b = local.layer_range(&id, range.clone()).await.unwrap();
        assert!(a == b, "{range:?}");
        assert!(b[..] == image.layer[range.start as usize..range.end as usize]);
    }
    for bad in [&missing, &pending_id] {
        let a = http.layer_range(bad, 0..10).await.unwrap_err();
        let b = local.layer_range(bad, 0..10).await.unwrap_err();
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{bad}");
    }
    assert!(matches!(
        local.layer_range(&missing, 0..10).await,
        Err(ClientError::NotFound)
    ));

    // Through the filesystem: looked up while the server ran, read after it stopped.
    let fs = RegistryFs::new(
        Arc::new(in_process_client(&server.url, registry)),
        FsConfig {
            block_size: 64 * 1024,
            ..FsConfig::default()
        },
    );
    let ino = layer_ino(&fs, &image).await;
    let o = fs.open(ino, false, false).await.unwrap();
    drop(server);
    let mut got = Vec::new();
    while got.len() < image.layer.len() {
        let data = fs.read(o.fh, got.len() as u64, 100_000).await.unwrap();
        assert!(!data.is_empty(), "short at {}", got.len());
        got.extend_from_slice(&data);
    }
    assert!(got == image.layer, "the whole layer, in order");
    fs.release(o.fh).await;
}

/// Through the kernel: the layer reads byte for byte, at odd offsets too, and when the kernel
/// granted passthrough no read reached the daemon.
#[cfg(feature = "fuse-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn a_mounted_stored_layer_is_read_by_the_kernel_alone() {
    use crate::common::mount::TestMount;
    use std::io::{Read, Seek, SeekFrom};
    let tmp = tempfile::tempdir().unwrap();
    let store = local(tmp.path());
    let (server, image) = server_with(store.clone(), "stored-mounted", 3 * 1024 * 1024 + 5).await;
    let url = server.url.clone();
    let rel = format!("images/{}/layer", image.id);
    let granted = tokio::task::spawn_blocking(move || {
        let m = TestMount::with_fs(new_fs(&url, store, false));
        let granted = m.fs().passthrough();
        let before = m.fs().read_requests();
        let whole = std::fs::read(m.join(&rel)).unwrap();
        assert!(whole == image.layer, "whole layer");
        let mut f = std::fs::File::open(m.join(&rel)).unwrap();
        for (offset, len) in [(1_048_575u64, 3usize), (3 * 1024 * 1024, 100), (17, 4097)] {
            f.seek(SeekFrom::Start(offset)).unwrap();
            let mut buf = vec![0; len];
            let n = f.read(&mut buf).unwrap();
            let end = (offset as usize + len).min(image.layer.len());
            assert!(buf[..n] == image.layer[offset as usize..end], "at {offset}");
        }
        if granted {
            assert_eq!(m.fs().read_requests(), before, "no read reached the daemon");
        }
        granted
    })
    .await
    .unwrap();
    if !granted {
        eprintln!("FUSE passthrough not granted here; checked reads through the daemon only");
    }
}

/// `regfs mount DIR --storage S`, the real binary: while a layer is open through the mount, the
/// daemon holds the stored file itself (the kernel reads it), and the bytes are the layer's.
#[cfg(feature = "fuse-tests")]
#[test]
fn the_embedded_mount_hands_the_kernel_its_stored_layer_files() {
    use crate::common::process::MountProcess;
    use crate::common::{Client, runtime};
    use std::io::Read;
    let storage = tempfile::tempdir().unwrap();
    let pw = "stored-layers-pw";
    let mut m = MountProcess::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-user",
            "admin",
            "--admin-password",
            pw,
            "--storage",
            storage.path().to_str().unwrap(),
            "-v",
        ],
        &[],
    );
    m.wait_ready();
    let image = Image::new("stored-process", 2 * 1024 * 1024 + 3);
    runtime().block_on(Client::new(&m.url).push_image(&image, &Auth::basic("admin", pw)));

    let rel = format!("images/{}/layer", image.id);
    let stored = storage.path().join(&rel).canonicalize().unwrap();
    let mut file = std::fs::File::open(m.path(&rel)).unwrap();
    let held = std::fs::read_dir(format!("/proc/{}/fd", m.pid()))
        .unwrap()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).ok().as_deref() == Some(stored.as_path()));
    let mut got = Vec::new();
    file.read_to_end(&mut got).unwrap();
    assert!(got == image.layer, "the layer reads byte for byte");
    drop(file);

    // An image pushed through this mount reads back through it, from its stored file.
    let pushed = Image::new("stored-process-pushed", 1024 * 1024 + 9);
    let dir = m.path(&format!("images/{}", pushed.id));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("json"), &pushed.json).unwrap();
    std::fs::write(dir.join("layer"), &pushed.layer).unwrap();
    let back = std::fs::read(dir.join("layer")).unwrap();
    assert!(
        back == pushed.layer,
        "a layer pushed through the mount reads back whole"
    );
    // Where the kernel or our privileges refuse passthrough, the daemon says so at -v and
    // reads through the registry instead.
    let log = m.log();
    if log.contains("lacks FUSE passthrough") || log.contains("passthrough refused") {
        eprintln!("no FUSE passthrough here; checked reads through the daemon only");
    } else {
        assert!(
            held,
            "the daemon holds the stored layer file while it is open\n{log}"
        );
    }
    m.stop();
}
