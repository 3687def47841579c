//! One conformance suite for every [`BlobStore`] backend.
//!
//! Each behaviour is written once, as an async fn over `Arc<dyn BlobStore>`, and `conformance!`
//! runs the whole list against one backend (`storage::memory::*`, `storage::local::*`). Adding a
//! backend (S3, ...) is one more `conformance!` line naming a constructor that returns a
//! [`Fixture`]. Backend-specific checks (what is left on disk) live at the end of the file.

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use regfs::names::{ImageId, RepoRef, Tag, Username};
use regfs::storage::{
    BlobStore, DirListing, Download, Key, ObjectBackend, StorageError, Upload, keys,
};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

/// How long a background abort (of a dropped upload) may take to clean up.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// A store under test, and whatever must outlive it (a temporary directory, a bucket, ...).
struct Fixture {
    store: Arc<dyn BlobStore>,
    _guard: Box<dyn Any + Send>,
}

async fn memory_store() -> Fixture {
    Fixture {
        store: Arc::new(ObjectBackend::memory()),
        _guard: Box::new(()),
    }
}

async fn local_store() -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = ObjectBackend::local(dir.path()).expect("local backend");
    Fixture {
        store: Arc::new(store),
        _guard: Box::new(dir),
    }
}

/// Runs every conformance test against the backend `$make` builds, in a module `$backend`.
macro_rules! conformance {
    ($backend:ident => $make:ident) => {
        conformance!(@suite $backend => $make;
            put_get_round_trip,
            get_bytes_refuses_objects_over_the_limit,
            missing_objects_are_not_found,
            delete_removes_and_tolerates_missing_objects,
            delete_of_a_key_that_is_only_a_prefix_is_ok,
            head_reports_size_and_age,
            ranged_get_within_the_object,
            ranged_get_past_the_end,
            large_streamed_upload,
            abort_leaves_nothing,
            dropped_upload_leaves_nothing,
            unfinished_uploads_leave_no_directories,
            directories_holding_only_deep_objects_are_listed,
            deleted_objects_leave_no_directories,
            overwrite_is_last_writer_wins,
            concurrent_uploads_to_one_key_publish_one_whole_object,
            concurrent_puts_to_one_key_publish_one_whole_object,
            list_is_recursive_and_only_under_the_prefix,
            list_dir_shows_one_level,
            an_opened_file_is_the_whole_object_and_outlives_an_overwrite,
        );
    };
    (@suite $backend:ident => $make:ident; $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let fixture = super::$make().await;
                    super::$test(fixture.store.clone()).await;
                }
            )*
        }
    };
}

conformance!(memory => memory_store);
conformance!(local => local_store);
#[cfg(feature = "s3-tests")]
conformance!(s3 => s3_store);

/// A real S3-compatible store from the environment (`scripts/s3-local.sh start` prints it):
/// `S3_BUCKET` plus the usual `AWS_*` variables. Each test gets its own prefix.
#[cfg(feature = "s3-tests")]
async fn s3_store() -> Fixture {
    let bucket = std::env::var("S3_BUCKET").expect("S3_BUCKET (see scripts/s3-local.sh)");
    let url = format!("s3://{bucket}/conformance-{}", uuid::Uuid::new_v4());
    let mut config = regfs::storage::S3Config::parse(&url).expect("valid s3 url");
    // Small parts, so the large-upload tests exercise several of them.
    config.part_size = 5 * MIB;
    let store = ObjectBackend::s3(&config).expect("s3 backend");
    Fixture {
        store: Arc::new(store),
        _guard: Box::new(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn repo(s: &str) -> RepoRef {
    RepoRef::parse_full(s).expect("valid repository")
}

fn tag(s: &str) -> Tag {
    s.parse().expect("valid tag")
}

fn image(n: u64) -> ImageId {
    format!("{n:064x}").parse().expect("valid image id")
}

fn user(s: &str) -> Username {
    s.parse().expect("valid username")
}

/// `len` deterministic pseudo-random bytes; different seeds give different bytes everywhere.
fn pattern(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Reads a download to the end, checking it yields exactly the bytes its range announces.
async fn read_download(download: Download) -> Vec<u8> {
    let expected = download.range.end - download.range.start;
    let mut out = Vec::with_capacity(usize::try_from(expected).expect("fits in memory"));
    let mut stream = download.stream;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("stream chunk"));
    }
    assert_eq!(
        out.len() as u64,
        expected,
        "a download must stream exactly its announced range"
    );
    out
}

/// The whole object under `key`.
async fn get_all(store: &dyn BlobStore, key: &Key) -> Vec<u8> {
    let download = store
        .get(key, None)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"));
    assert_eq!(
        download.range,
        0..download.info.size,
        "get {key} without a range"
    );
    read_download(download).await
}

#[track_caller]
fn assert_not_found<T: Debug>(result: Result<T, StorageError>, what: &str) {
    match result {
        Err(StorageError::NotFound) => {}
        other => panic!("{what}: expected StorageError::NotFound, got {other:?}"),
    }
}

/// Nothing can be read under `key`, by any read.
async fn assert_absent(store: &dyn BlobStore, key: &Key) {
    assert_not_found(store.get(key, None).await, &format!("get {key}"));
    assert_not_found(
        store.get(key, Some(0..1)).await,
        &format!("ranged get {key}"),
    );
    assert_not_found(
        store.get_bytes(key, u64::MAX).await,
        &format!("get_bytes {key}"),
    );
    assert_not_found(store.head(key).await, &format!("head {key}"));
}

/// `list(prefix)` as sorted strings.
async fn listed(store: &dyn BlobStore, prefix: &Key) -> Vec<String> {
    let keys = store
        .list(prefix)
        .await
        .unwrap_or_else(|e| panic!("list {prefix}: {e}"));
    let mut out: Vec<String> = keys.iter().map(|k| k.as_str().to_string()).collect();
    out.sort();
    let unique: BTreeSet<&String> = out.iter().collect();
    assert_eq!(
        unique.len(),
        out.len(),
        "list {prefix} repeats keys: {out:?}"
    );
    out
}

/// `list_dir(prefix)`, sorted.
async fn dir(store: &dyn BlobStore, prefix: &Key) -> DirListing {
    let mut listing = store
        .list_dir(prefix)
        .await
        .unwrap_or_else(|e| panic!("list_dir {prefix}: {e}"));
    listing.dirs.sort();
    listing.objects.sort();
    listing
}

fn listing(dirs: &[&str], objects: &[&str]) -> DirListing {
    DirListing {
        dirs: dirs.iter().map(|s| s.to_string()).collect(),
        objects: objects.iter().map(|s| s.to_string()).collect(),
    }
}

fn strings(keys: &[&Key]) -> Vec<String> {
    let mut out: Vec<String> = keys.iter().map(|k| k.as_str().to_string()).collect();
    out.sort();
    out
}

/// Starts an upload and writes `chunks` pieces of `chunk` bytes (seeded by `seed`).
async fn started_upload(
    store: &dyn BlobStore,
    key: &Key,
    seed: u64,
    chunks: usize,
    chunk: usize,
) -> Box<dyn Upload> {
    let mut upload = store
        .upload(key)
        .await
        .unwrap_or_else(|e| panic!("upload {key}: {e}"));
    for i in 0..chunks {
        upload
            .write(pattern(seed * 1000 + i as u64, chunk))
            .await
            .unwrap_or_else(|e| panic!("write to {key}: {e}"));
    }
    upload
}

/// Uploads `data` under `key` in pieces of `chunk` bytes.
async fn upload_all(store: &dyn BlobStore, key: &Key, data: &Bytes, chunk: usize) {
    let mut upload = store
        .upload(key)
        .await
        .unwrap_or_else(|e| panic!("upload {key}: {e}"));
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        upload.write(data.slice(offset..end)).await.expect("write");
        offset = end;
    }
    let size = upload.finish().await.expect("finish");
    assert_eq!(size, data.len() as u64, "finish returns the size written");
}

/// Waits until the background aborts of dropped uploads have ended, within the cleanup bound.
async fn settled(store: &dyn BlobStore) {
    let done = tokio::time::timeout(CLEANUP_TIMEOUT, store.settled()).await;
    assert!(done.is_ok(), "background aborts still running");
}

/// Waits until `check` holds, giving background work (the abort of a dropped upload) time.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + CLEANUP_TIMEOUT;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still not true after {CLEANUP_TIMEOUT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The conformance suite
// ---------------------------------------------------------------------------------------------

async fn put_get_round_trip(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    let id = image(1);

    // Small, with bytes that are not text.
    let json = keys::image_json(&id);
    let body = Bytes::from_static(b"{\"id\": \"1\"}\n\0\x01\xfe\xff");
    store.put(&json, body.clone()).await.expect("put");
    let download = store.get(&json, None).await.expect("get");
    assert_eq!(download.info.size, body.len() as u64);
    assert_eq!(download.range, 0..body.len() as u64);
    assert_eq!(read_download(download).await, body);
    assert_eq!(
        store.get_bytes(&json, 1 << 20).await.expect("get_bytes"),
        body
    );

    // Larger than any read chunk, so it streams in several pieces.
    let layer = keys::image_layer(&id);
    let big = pattern(2, 3 * MIB + 5);
    store.put(&layer, big.clone()).await.expect("put big");
    assert!(get_all(store, &layer).await == big, "big object round trip");
    let whole = store
        .get_bytes(&layer, big.len() as u64)
        .await
        .expect("get_bytes at exactly the limit");
    assert!(whole == big, "big object via get_bytes");

    // Empty.
    let complete = keys::image_complete(&id);
    store.put(&complete, Bytes::new()).await.expect("put empty");
    let download = store.get(&complete, None).await.expect("get empty");
    assert_eq!(download.info.size, 0);
    assert_eq!(download.range, 0..0);
    assert!(read_download(download).await.is_empty());
    assert!(
        store
            .get_bytes(&complete, 0)
            .await
            .expect("empty")
            .is_empty()
    );

    // Every kind of key holds its own object.
    let app = repo("alice/app");
    let others = [
        (keys::image_ancestry(&id), "ancestry"),
        (keys::image_checksum(&id), "checksum"),
        (keys::repo_marker(&app), "marker"),
        (keys::repo_image(&app, &id), "listed image"),
        (keys::repo_tag(&app, &tag("latest")), "tag"),
        (keys::user(&user("alice")), "user"),
    ];
    for (key, content) in &others {
        store
            .put(key, Bytes::from_static(content.as_bytes()))
            .await
            .expect("put");
    }
    for (key, content) in &others {
        assert_eq!(get_all(store, key).await, content.as_bytes(), "{key}");
    }
    assert_eq!(get_all(store, &json).await, body, "untouched by later puts");
}

async fn get_bytes_refuses_objects_over_the_limit(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    let key = keys::image_json(&image(2));
    store
        .put(&key, Bytes::from_static(b"0123456789"))
        .await
        .expect("put");
    assert_eq!(
        store.get_bytes(&key, 10).await.expect("at the limit"),
        "0123456789"
    );
    assert_eq!(
        store.get_bytes(&key, 11).await.expect("under the limit"),
        "0123456789"
    );
    for limit in [9, 1, 0] {
        match store.get_bytes(&key, limit).await {
            Err(StorageError::TooLarge { limit: l }) => assert_eq!(l, limit),
            other => panic!("get_bytes with limit {limit}: expected TooLarge, got {other:?}"),
        }
    }

    let layer = keys::image_layer(&image(2));
    store
        .put(&layer, pattern(3, 3 * MIB))
        .await
        .expect("put big");
    match store.get_bytes(&layer, MIB as u64).await {
        Err(StorageError::TooLarge { limit }) => assert_eq!(limit, MIB as u64),
        other => panic!("get_bytes of 3 MiB with a 1 MiB limit: {other:?}"),
    }

    let empty = keys::image_complete(&image(2));
    store.put(&empty, Bytes::new()).await.expect("put empty");
    assert!(store.get_bytes(&empty, 0).await.expect("0 <= 0").is_empty());
}

/// `open_file` is optional (a local directory has files, other stores do not), but what it
/// gives is the whole object, and an object replaced later leaves the open file as it was.
async fn an_opened_file_is_the_whole_object_and_outlives_an_overwrite(store: Arc<dyn BlobStore>) {
    use std::os::unix::fs::FileExt;
    let store = store.as_ref();
    let key = keys::image_layer(&image(40));
    assert!(
        store.open_file(&key).await.expect("open missing").is_none(),
        "a missing object has no file"
    );
    let first = pattern(40, MIB + 7);
    store.put(&key, first.clone()).await.expect("put");
    let Some((file, size)) = store.open_file(&key).await.expect("open") else {
        return;
    };
    assert_eq!(size, first.len() as u64);
    store.put(&key, pattern(41, 10)).await.expect("overwrite");
    let mut got = vec![0; first.len() + 1];
    let mut done = 0;
    while let Ok(n @ 1..) = file.read_at(&mut got[done..], done as u64) {
        done += n;
    }
    assert!(
        got[..done] == first[..],
        "the open file still holds the first object"
    );
}

async fn missing_objects_are_not_found(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    let app = repo("alice/app");

    // Never written, in an empty store.
    assert_absent(store, &keys::image_layer(&image(3))).await;
    assert_absent(store, &keys::user(&user("nobody"))).await;

    // Never written, next to objects that exist.
    store
        .put(
            &keys::repo_tag(&app, &tag("latest")),
            Bytes::from_static(b"x"),
        )
        .await
        .expect("put");
    assert_absent(store, &keys::repo_tag(&app, &tag("other"))).await;

    // Keys that are only prefixes of objects (directories, on disk) are not objects.
    assert_absent(store, &keys::repo_tags(&app)).await;
    assert_absent(store, &keys::repo_dir(&app)).await;
    assert_absent(store, &keys::repositories()).await;

    // Deleted.
    let key = keys::image_json(&image(3));
    store
        .put(&key, Bytes::from_static(b"{}"))
        .await
        .expect("put");
    store.delete(&key).await.expect("delete");
    assert_absent(store, &key).await;
}

async fn delete_removes_and_tolerates_missing_objects(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    let app = repo("alice/app");
    let latest = keys::repo_tag(&app, &tag("latest"));
    let stable = keys::repo_tag(&app, &tag("stable"));
    store
        .put(&latest, Bytes::from_static(b"1"))
        .await
        .expect("put");
    store
        .put(&stable, Bytes::from_static(b"2"))
        .await
        .expect("put");

    store.delete(&latest).await.expect("delete");
    assert_absent(store, &latest).await;
    assert_eq!(
        get_all(store, &stable).await,
        b"2",
        "siblings survive a delete"
    );
    assert_eq!(
        listed(store, &keys::repo_tags(&app)).await,
        strings(&[&stable])
    );

    store.delete(&latest).await.expect("deleting twice is Ok");
    store
        .delete(&keys::repo_tag(&app, &tag("never")))
        .await
        .expect("deleting a never-written key is Ok");
    store
        .delete(&keys::image_layer(&image(4)))
        .await
        .expect("deleting under a missing directory is Ok");

    // The key can be written again.
    store
        .put(&latest, Bytes::from_static(b"3"))
        .await
        .expect("put again");
    assert_eq!(get_all(store, &latest).await, b"3");
}

async fn delete_of_a_key_that_is_only_a_prefix_is_ok(store: Arc<dyn BlobStore>) {
    // "Deleting a missing object is not an error": a key with objects under it but none at it
    // names a missing object too, and deleting it must not touch the objects under it.
    let store = store.as_ref();
    let app = repo("alice/app");
    let latest = keys::repo_tag(&app, &tag("latest"));
    store
        .put(&latest, Bytes::from_static(b"1"))
        .await
        .expect("put");

    if let Err(e) = store.delete(&keys::repo_tags(&app)).await {
        panic!(
            "delete of {} (no object, objects under it): {e:?}",
            keys::repo_tags(&app)
        );
    }
    assert_eq!(
        get_all(store, &latest).await,
        b"1",
        "objects under the prefix survive"
    );
}

async fn head_reports_size_and_age(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    let before = SystemTime::now() - Duration::from_secs(5);
    let sizes = [0usize, 1, 4096, 5 * MIB + 3];
    let keys: Vec<Key> = (0..sizes.len() as u64)
        .map(|n| keys::image_layer(&image(100 + n)))
        .collect();
    for (key, &size) in keys.iter().zip(&sizes) {
        store
            .put(key, pattern(size as u64, size))
            .await
            .expect("put");
    }
    let after = SystemTime::now() + Duration::from_secs(5);
    for (key, &size) in keys.iter().zip(&sizes) {
        let info = store.head(key).await.expect("head");
        assert_eq!(info.size, size as u64, "head {key}");
        assert!(
            info.last_modified >= before && info.last_modified <= after,
            "head {key}: last_modified {:?} is not around now",
            info.last_modified
        );
        let download = store.get(key, None).await.expect("get");
        assert_eq!(
            download.info.size, size as u64,
            "get {key} reports the same size"
        );
    }

    // The size follows overwrites, shorter and longer, by put and by upload.
    let key = &keys[3];
    store
        .put(key, Bytes::from_static(b"short"))
        .await
        .expect("put");
    assert_eq!(store.head(key).await.expect("head").size, 5);
    upload_all(store, key, &pattern(9, 2 * MIB + 1), 300_000).await;
    assert_eq!(
        store.head(key).await.expect("head").size,
        2 * MIB as u64 + 1
    );
}

async fn ranged_get_within_the_object(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    let key = keys::image_layer(&image(5));
    // Over 1 MiB, and not a multiple of any read chunk, so ranges cross chunk boundaries.
    let data = pattern(5, MIB + 4097);
    let size = data.len() as u64;
    store.put(&key, data.clone()).await.expect("put");

    let ranges: [Range<u64>; 10] = [
        0..1,
        0..100,
        0..size,
        100..200,
        1000..600_000,
        (512 * 1024 - 1)..(512 * 1024 + 1),
        (MIB as u64 - 7)..(MIB as u64 + 9),
        (size / 2)..(size / 2 + 1),
        (size - 10)..size,
        (size - 1)..size,
    ];
    for range in ranges {
        let download = store
            .get(&key, Some(range.clone()))
            .await
            .unwrap_or_else(|e| panic!("get {range:?}: {e}"));
        assert_eq!(
            download.range, range,
            "the download covers the requested range"
        );
        assert_eq!(download.info.size, size, "info is the whole object's");
        let bytes = read_download(download).await;
        assert!(
            bytes[..] == data[range.start as usize..range.end as usize],
            "bytes of {range:?}"
        );
    }
}

async fn ranged_get_past_the_end(store: Arc<dyn BlobStore>) {
    // The contract leaves clamping to the caller. What the backends do with an unclamped range,
    // and what this pins down so that every backend behaves the same: an end past the object is
    // clamped (and `Download::range` says so), a range that starts at or past the end (or is
    // empty) is refused with `InvalidRange` carrying the object's size.
    let store = store.as_ref();
    let key = keys::image_layer(&image(6));
    let data = pattern(6, 1000);
    let size = data.len() as u64;
    store.put(&key, data.clone()).await.expect("put");

    for (range, clamped) in [
        ((size - 10)..(size + 10), (size - 10)..size),
        (0..(size + 1), 0..size),
        (500..u64::MAX, 500..size),
    ] {
        let download = store
            .get(&key, Some(range.clone()))
            .await
            .unwrap_or_else(|e| panic!("get {range:?} of {size} bytes: {e}"));
        assert_eq!(download.range, clamped, "get {range:?} of {size} bytes");
        assert_eq!(download.info.size, size);
        let bytes = read_download(download).await;
        assert!(
            bytes[..] == data[clamped.start as usize..],
            "bytes of {range:?}"
        );
    }

    let refused = [
        size..(size + 1),
        (size + 100)..(size + 200),
        10..10,
        Range { start: 20, end: 10 },
    ];
    for range in refused {
        match store.get(&key, Some(range.clone())).await {
            Err(StorageError::InvalidRange { size: s }) => assert_eq!(s, size, "{range:?}"),
            other => panic!("get {range:?} of {size} bytes: expected InvalidRange, got {other:?}"),
        }
    }

    let empty = keys::image_json(&image(6));
    store.put(&empty, Bytes::new()).await.expect("put empty");
    match store.get(&empty, Some(0..1)).await {
        Err(StorageError::InvalidRange { size: 0 }) => {}
        other => panic!("get 0..1 of an empty object: expected InvalidRange, got {other:?}"),
    }
}

async fn large_streamed_upload(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    let big = repo("alice/big");
    let key = keys::repo_image(&big, &image(7));
    let parent = keys::repo_images(&big);
    let chunks = 64;
    let chunk = |i: usize| pattern(7_000 + i as u64, MIB);

    let assert_invisible = |when: &'static str| {
        let key = key.clone();
        let parent = parent.clone();
        async move {
            assert_absent(store, &key).await;
            assert_eq!(listed(store, &parent).await, Vec::<String>::new(), "{when}");
            assert_eq!(dir(store, &parent).await, listing(&[], &[]), "{when}");
        }
    };

    let mut upload = store.upload(&key).await.expect("upload");
    assert_invisible("after upload()").await;
    let mut hasher = Sha256::new();
    for i in 0..chunks {
        let data = chunk(i);
        hasher.update(&data);
        upload.write(data).await.expect("write");
        if i == 0 || i == chunks / 2 || i == chunks - 1 {
            assert_invisible("while writing").await;
        }
    }
    let expected: [u8; 32] = hasher.finalize().into();
    let size = upload.finish().await.expect("finish");
    assert_eq!(size, (chunks * MIB) as u64, "finish returns the size");

    assert_eq!(store.head(&key).await.expect("head").size, size);
    assert_eq!(listed(store, &parent).await, strings(&[&key]));

    let download = store.get(&key, None).await.expect("get");
    assert_eq!(download.info.size, size);
    assert_eq!(download.range, 0..size);
    let mut stream = download.stream;
    let mut hasher = Sha256::new();
    let mut read = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.expect("read");
        read += piece.len() as u64;
        hasher.update(&piece);
    }
    assert_eq!(read, size, "bytes read back");
    let actual: [u8; 32] = hasher.finalize().into();
    assert_eq!(
        hex::encode(actual),
        hex::encode(expected),
        "sha256 of what is read back"
    );

    // A range straddling two writes (and upload parts) reads back in place.
    let start = 4 * MIB - 3;
    let range = start as u64..(start + 8) as u64;
    let bytes = read_download(store.get(&key, Some(range)).await.expect("ranged")).await;
    let mut want = chunk(3)[MIB - 3..].to_vec();
    want.extend_from_slice(&chunk(4)[..5]);
    assert_eq!(bytes, want, "ranged read across writes");
}

async fn abort_leaves_nothing(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    let app = repo("alice/app");
    let tags = keys::repo_tags(&app);
    let kept = keys::repo_tag(&app, &tag("kept"));
    store
        .put(&kept, Bytes::from_static(b"kept"))
        .await
        .expect("put");

    // A new key, more than one upload part written.
    let fresh = keys::repo_tag(&app, &tag("fresh"));
    let upload = started_upload(store, &fresh, 1, 5, MIB).await;
    upload.abort().await.expect("abort");
    assert_absent(store, &fresh).await;
    assert_eq!(listed(store, &tags).await, strings(&[&kept]));
    assert_eq!(dir(store, &tags).await, listing(&[], &["kept"]));

    // Nothing written at all.
    let upload = store.upload(&fresh).await.expect("upload");
    upload.abort().await.expect("abort of an empty upload");
    assert_absent(store, &fresh).await;

    // Over an existing object: the old object stays, whole.
    let old = pattern(11, 3 * MIB);
    store.put(&fresh, old.clone()).await.expect("put");
    let upload = started_upload(store, &fresh, 2, 5, MIB).await;
    upload.abort().await.expect("abort");
    assert!(
        get_all(store, &fresh).await == old,
        "aborting leaves the old object"
    );
    assert_eq!(
        store.head(&fresh).await.expect("head").size,
        old.len() as u64
    );

    // The key takes a new upload afterwards.
    let new = pattern(12, MIB + 1);
    upload_all(store, &fresh, &new, 100_000).await;
    assert!(get_all(store, &fresh).await == new);
    assert_eq!(listed(store, &tags).await, strings(&[&fresh, &kept]));
}

async fn dropped_upload_leaves_nothing(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    let app = repo("alice/app");
    let tags = keys::repo_tags(&app);
    let kept = keys::repo_tag(&app, &tag("kept"));
    store
        .put(&kept, Bytes::from_static(b"kept"))
        .await
        .expect("put");

    // A new key.
    let fresh = keys::repo_tag(&app, &tag("fresh"));
    drop(started_upload(store, &fresh, 1, 5, MIB).await);
    assert_absent(store, &fresh).await;
    eventually("the dropped upload is not listed", || async {
        listed(store, &tags).await == strings(&[&kept])
            && dir(store, &tags).await == listing(&[], &["kept"])
    })
    .await;
    // The background abort must never publish anything.
    settled(store).await;
    assert_absent(store, &fresh).await;
    assert_eq!(listed(store, &tags).await, strings(&[&kept]));

    // Over an existing object.
    let old = pattern(21, 2 * MIB);
    store.put(&fresh, old.clone()).await.expect("put");
    drop(started_upload(store, &fresh, 2, 5, MIB).await);
    assert!(
        get_all(store, &fresh).await == old,
        "dropping leaves the old object"
    );
    settled(store).await;
    assert!(
        get_all(store, &fresh).await == old,
        "after the background abort too"
    );

    // Dropped right after it started, and the key takes a new upload meanwhile.
    drop(store.upload(&fresh).await.expect("upload"));
    let new = pattern(22, MIB + 7);
    upload_all(store, &fresh, &new, 200_000).await;
    settled(store).await;
    assert!(
        get_all(store, &fresh).await == new,
        "a later upload is not disturbed"
    );
    assert_eq!(listed(store, &tags).await, strings(&[&fresh, &kept]));
}

async fn unfinished_uploads_leave_no_directories(store: Arc<dyn BlobStore>) {
    // "An unfinished upload leaves nothing under its key": not even the "directories" above it,
    // which `list_dir` would otherwise report as (empty) repositories or namespaces. Every
    // stage is checked before failing, so one run reports all of them.
    let store = store.as_ref();
    let app = repo("alice/app");
    store
        .put(&keys::repo_marker(&app), Bytes::from_static(b"{}"))
        .await
        .expect("put");
    let alice = keys::namespace_dir(&app.namespace);
    let root = keys::repositories();
    let only_app = vec![keys::repo_marker(&app).as_str().to_string()];
    let mut problems: Vec<String> = Vec::new();
    let mut check = async |stage: &str| {
        assert_eq!(listed(store, &root).await, only_app, "{stage}: list");
        let ns = dir(store, &alice).await;
        if ns != listing(&["app"], &[]) {
            problems.push(format!("{stage}: list_dir({alice}) = {ns:?}"));
        }
        let top = dir(store, &root).await;
        if top != listing(&["alice"], &[]) {
            problems.push(format!("{stage}: list_dir({root}) = {top:?}"));
        }
    };

    let ghost = keys::repo_tag(&repo("alice/ghost"), &tag("latest"));
    let other_ns = keys::repo_image(&repo("carol/ghost"), &image(8));

    let in_flight = started_upload(store, &ghost, 1, 2, MIB).await;
    let other = started_upload(store, &other_ns, 2, 2, MIB).await;
    check("in flight").await;

    in_flight.abort().await.expect("abort");
    other.abort().await.expect("abort");
    assert_absent(store, &ghost).await;
    assert_absent(store, &other_ns).await;
    check("after abort()").await;

    let dropped = keys::repo_tag(&repo("alice/dropped"), &tag("latest"));
    let dropped_ns = keys::repo_tag(&repo("dave/dropped"), &tag("latest"));
    drop(started_upload(store, &dropped, 3, 2, MIB).await);
    drop(started_upload(store, &dropped_ns, 4, 2, MIB).await);
    assert_absent(store, &dropped).await;
    assert_absent(store, &dropped_ns).await;
    settled(store).await;
    check("after the drop's background abort").await;

    assert!(
        problems.is_empty(),
        "unfinished uploads show up as directories:\n{}",
        problems.join("\n")
    );
}

async fn directories_holding_only_deep_objects_are_listed(store: Arc<dyn BlobStore>) {
    // The other side of hiding empty directories: one whose objects all lie levels below it
    // (a repository with tags but no marker yet) is still a directory, at every level above
    // them, however many objects it holds.
    let store = store.as_ref();
    let app = repo("erin/app");
    store
        .put(
            &keys::repo_tag(&app, &tag("latest")),
            Bytes::from(image(1).to_string()),
        )
        .await
        .expect("put");
    let crowded = repo("erin/crowded");
    for n in 0..50 {
        store
            .put(
                &keys::repo_tag(&crowded, &tag(&format!("t{n}"))),
                Bytes::from(image(n).to_string()),
            )
            .await
            .expect("put");
    }
    assert_eq!(
        dir(store, &keys::repositories()).await,
        listing(&["erin"], &[])
    );
    assert_eq!(
        dir(store, &keys::namespace_dir(&app.namespace)).await,
        listing(&["app", "crowded"], &[])
    );
}

async fn deleted_objects_leave_no_directories(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    let app = repo("alice/app");
    let gone = repo("alice/gone");
    let keep = keys::repo_marker(&app);
    let tag_key = keys::repo_tag(&gone, &tag("latest"));
    let marker = keys::repo_marker(&gone);
    for key in [&keep, &tag_key, &marker] {
        store
            .put(key, Bytes::from_static(b"{}"))
            .await
            .expect("put");
    }
    let alice = keys::namespace_dir(&app.namespace);
    assert_eq!(dir(store, &alice).await, listing(&["app", "gone"], &[]));
    assert_eq!(
        dir(store, &keys::repo_dir(&gone)).await,
        listing(&["tags"], &["_repo"])
    );

    store.delete(&tag_key).await.expect("delete");
    assert_eq!(
        dir(store, &keys::repo_dir(&gone)).await,
        listing(&[], &["_repo"])
    );
    store.delete(&marker).await.expect("delete");
    assert_eq!(dir(store, &alice).await, listing(&["app"], &[]));

    store.delete(&keep).await.expect("delete");
    assert_eq!(dir(store, &keys::repositories()).await, listing(&[], &[]));
    assert_eq!(
        listed(store, &keys::repositories()).await,
        Vec::<String>::new()
    );
}

async fn overwrite_is_last_writer_wins(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    let key = keys::repo_tag(&repo("alice/app"), &tag("latest"));

    // Put over put, longer then shorter: nothing of the longer one remains.
    store.put(&key, pattern(31, 1000)).await.expect("put");
    store
        .put(&key, Bytes::from_static(b"short"))
        .await
        .expect("put");
    assert_eq!(get_all(store, &key).await, b"short");
    assert_eq!(store.head(&key).await.expect("head").size, 5);

    // Upload over put, put over upload, an empty upload over everything.
    let uploaded = pattern(32, 5 * MIB + 1);
    upload_all(store, &key, &uploaded, MIB).await;
    assert!(get_all(store, &key).await == uploaded, "upload over put");
    store
        .put(&key, Bytes::from_static(b"abc"))
        .await
        .expect("put");
    assert_eq!(get_all(store, &key).await, b"abc", "put over upload");
    upload_all(store, &key, &Bytes::new(), MIB).await;
    assert!(
        get_all(store, &key).await.is_empty(),
        "empty upload over put"
    );
    assert_eq!(store.head(&key).await.expect("head").size, 0);

    // Many in a row.
    for i in 0..20 {
        store
            .put(&key, Bytes::from(format!("version {i}")))
            .await
            .expect("put");
    }
    assert_eq!(get_all(store, &key).await, b"version 19");

    // Two overlapping uploads: the one that finishes last wins. A store may instead refuse
    // the finish of an upload overtaken by a newer one of the same key (Garage does): that
    // is an error the writer sees, and the newer object stays whole.
    let first = pattern(33, 2 * MIB + 11);
    let second = pattern(34, MIB + 13);
    let mut a = store.upload(&key).await.expect("upload a");
    let mut b = store.upload(&key).await.expect("upload b");
    a.write(first.clone()).await.expect("write a");
    b.write(second.clone()).await.expect("write b");
    b.finish().await.expect("finish b");
    assert!(get_all(store, &key).await == second, "b finished");
    match a.finish().await {
        Ok(_) => assert!(get_all(store, &key).await == first, "a finished last"),
        Err(_) => assert!(get_all(store, &key).await == second, "a refused, b stays"),
    }
    assert_eq!(
        listed(store, &keys::repo_tags(&repo("alice/app"))).await,
        strings(&[&key])
    );
}

async fn concurrent_uploads_to_one_key_publish_one_whole_object(store: Arc<dyn BlobStore>) {
    const WRITERS: usize = 4;
    let app = repo("alice/app");
    let key = keys::repo_tag(&app, &tag("contended"));
    // Different sizes and different bytes everywhere: any mix or truncation shows.
    let contents: Vec<Bytes> = (0..WRITERS)
        .map(|w| pattern(40 + w as u64, 9 * MIB + 1000 * w))
        .collect();
    let initial = pattern(39, 100);
    store.put(&key, initial.clone()).await.expect("put");
    let mut known: Vec<[u8; 32]> = contents.iter().map(|c| sha256(c)).collect();
    known.push(sha256(&initial));

    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let writers: Vec<_> = contents
        .iter()
        .cloned()
        .map(|data| {
            let store = store.clone();
            let key = key.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut upload = store.upload(&key).await.expect("upload");
                barrier.wait().await;
                for piece in data.chunks(512 * 1024) {
                    upload.write(data.slice_ref(piece)).await.expect("write");
                    tokio::task::yield_now().await;
                }
                // A store may refuse overtaken uploads (see overwrite_is_last_writer_wins).
                upload.finish().await
            })
        })
        .collect();

    // A reader all along: every read is one whole version, never a mix.
    let reader = {
        let store = store.clone();
        let key = key.clone();
        let known = known.clone();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let task = tokio::spawn(async move {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let data = get_all(store.as_ref(), &key).await;
                assert!(
                    known.contains(&sha256(&data)),
                    "a read during concurrent uploads returned {} bytes that no writer wrote",
                    data.len()
                );
                reads += 1;
                // Memory reads never wait; without a yield this loop would starve the writers.
                tokio::task::yield_now().await;
            }
            reads
        });
        (task, done)
    };

    let mut finished = Vec::new();
    for (writer, data) in writers.into_iter().zip(&contents) {
        if let Ok(size) = writer.await.expect("writer task") {
            assert_eq!(size, data.len() as u64);
            finished.push(sha256(data));
        }
    }
    assert!(!finished.is_empty(), "no upload finished");
    reader.1.store(true, std::sync::atomic::Ordering::SeqCst);
    let reads = reader.0.await.expect("reader task");
    assert!(reads > 0);

    let data = get_all(store.as_ref(), &key).await;
    let digest = sha256(&data);
    assert!(
        finished.contains(&digest),
        "the final object ({} bytes) is not the whole content of a writer that finished",
        data.len()
    );
    assert_eq!(
        store.head(&key).await.expect("head").size,
        data.len() as u64
    );
    let tags = keys::repo_tags(&app);
    assert_eq!(listed(store.as_ref(), &tags).await, strings(&[&key]));
    assert_eq!(
        dir(store.as_ref(), &tags).await,
        listing(&[], &["contended"])
    );
}

async fn concurrent_puts_to_one_key_publish_one_whole_object(store: Arc<dyn BlobStore>) {
    const WRITERS: usize = 16;
    let key = keys::image_json(&image(9));
    let contents: Vec<Bytes> = (0..WRITERS)
        .map(|w| pattern(50 + w as u64, 64 * 1024 + 17 * w))
        .collect();
    let writers: Vec<_> = contents
        .iter()
        .cloned()
        .map(|data| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move { store.put(&key, data).await.expect("put") })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task");
    }
    let data = get_all(store.as_ref(), &key).await;
    assert!(
        contents.iter().any(|c| c[..] == data[..]),
        "the final object ({} bytes) is not one writer's whole content",
        data.len()
    );
}

/// What [`populate`] wrote: the keys under `repositories/`, per repository, and the uploads it
/// left in flight (kept alive here).
struct Populated {
    app: RepoRef,
    app_keys: Vec<Key>,
    app2_keys: Vec<Key>,
    carol_keys: Vec<Key>,
    in_flight: Vec<Box<dyn Upload>>,
}

/// Objects under several repositories, namespaces and roots, plus uploads that are in flight,
/// aborted and dropped among them.
async fn populate(store: &dyn BlobStore) -> Populated {
    let app = repo("alice/app");
    let app2 = repo("alice/app2");
    let carol = repo("carol/app");
    let id = image(10);
    let app_keys = vec![
        keys::repo_marker(&app),
        keys::repo_tag(&app, &tag("latest")),
        keys::repo_tag(&app, &tag("v1.0")),
        keys::repo_image(&app, &id),
    ];
    let app2_keys = vec![
        keys::repo_marker(&app2),
        keys::repo_tag(&app2, &tag("latest")),
    ];
    let carol_keys = vec![keys::repo_marker(&carol)];
    let outside = vec![
        keys::user(&user("alice")),
        keys::image_json(&id),
        keys::image_layer(&id),
    ];
    for key in app_keys
        .iter()
        .chain(&app2_keys)
        .chain(&carol_keys)
        .chain(&outside)
    {
        store
            .put(key, Bytes::from(key.as_str().to_string()))
            .await
            .expect("put");
    }

    // In flight: a new key, and over an existing one.
    let in_flight = vec![
        started_upload(store, &keys::repo_tag(&app, &tag("inflight")), 1, 1, MIB).await,
        started_upload(store, &keys::repo_tag(&app, &tag("latest")), 2, 1, MIB).await,
        started_upload(store, &keys::repo_image(&app, &image(11)), 3, 1, MIB).await,
    ];
    // Aborted and dropped.
    started_upload(store, &keys::repo_tag(&app, &tag("aborted")), 4, 1, MIB)
        .await
        .abort()
        .await
        .expect("abort");
    drop(started_upload(store, &keys::repo_tag(&app, &tag("dropped")), 5, 1, MIB).await);

    Populated {
        app,
        app_keys,
        app2_keys,
        carol_keys,
        in_flight,
    }
}

async fn list_is_recursive_and_only_under_the_prefix(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    let mut p = populate(store).await;
    let app = p.app.clone();
    let joined = |lists: &[&Vec<Key>]| -> Vec<String> {
        let all: Vec<&Key> = lists.iter().flat_map(|k| k.iter()).collect();
        strings(&all)
    };

    let check = |stage: &'static str,
                 app_keys: Vec<String>,
                 alice_keys: Vec<String>,
                 all_keys: Vec<String>| {
        let app = app.clone();
        async move {
            assert_eq!(
                listed(store, &keys::repo_dir(&app)).await,
                app_keys,
                "{stage}"
            );
            let tags: Vec<String> = app_keys
                .iter()
                .filter(|k| k.contains("/tags/"))
                .cloned()
                .collect();
            assert_eq!(listed(store, &keys::repo_tags(&app)).await, tags, "{stage}");
            assert_eq!(
                listed(store, &keys::namespace_dir(&app.namespace)).await,
                alice_keys,
                "{stage}: alice/app2 is under alice, and alice/app's keys are not repeated"
            );
            assert_eq!(
                listed(store, &keys::repositories()).await,
                all_keys,
                "{stage}"
            );
        }
    };
    let app_keys = joined(&[&p.app_keys]);
    let alice_keys = joined(&[&p.app_keys, &p.app2_keys]);
    let all_keys = joined(&[&p.app_keys, &p.app2_keys, &p.carol_keys]);

    check(
        "with uploads in flight",
        app_keys.clone(),
        alice_keys.clone(),
        all_keys.clone(),
    )
    .await;
    // Keep writing: what is listed never changes while uploads are under way.
    for round in 0..4u64 {
        for (i, upload) in p.in_flight.iter_mut().enumerate() {
            upload
                .write(pattern(60 + round * 10 + i as u64, MIB))
                .await
                .expect("write");
        }
        check(
            "while writing",
            app_keys.clone(),
            alice_keys.clone(),
            all_keys.clone(),
        )
        .await;
    }

    // A prefix that is a string prefix but not a path prefix: alice/app vs alice/app2.
    let app_listing = listed(store, &keys::repo_dir(&app)).await;
    assert!(
        app_listing.iter().all(|k| !k.contains("/app2/")),
        "list(alice/app) must not include alice/app2: {app_listing:?}"
    );
    // Missing prefixes, and a prefix that is an object.
    let missing = repo("nobody/none");
    assert_eq!(
        listed(store, &keys::repo_dir(&missing)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        listed(store, &keys::namespace_dir(&missing.namespace)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        listed(store, &keys::repo_marker(&app)).await,
        Vec::<String>::new()
    );

    // Finishing the in-flight uploads publishes exactly their keys.
    for upload in p.in_flight.drain(..) {
        upload.finish().await.expect("finish");
    }
    p.app_keys.push(keys::repo_tag(&app, &tag("inflight")));
    p.app_keys.push(keys::repo_image(&app, &image(11)));
    let app_keys = joined(&[&p.app_keys]);
    let alice_keys = joined(&[&p.app_keys, &p.app2_keys]);
    let all_keys = joined(&[&p.app_keys, &p.app2_keys, &p.carol_keys]);
    check("after the uploads finished", app_keys, alice_keys, all_keys).await;
}

async fn list_dir_shows_one_level(store: Arc<dyn BlobStore>) {
    let store = store.as_ref();
    let mut p = populate(store).await;
    let app = p.app.clone();

    let check = |stage: &'static str, tags: &'static [&'static str], images: Vec<String>| {
        let app = app.clone();
        async move {
            let images: Vec<&str> = images.iter().map(String::as_str).collect();
            assert_eq!(
                dir(store, &keys::repositories()).await,
                listing(&["alice", "carol"], &[]),
                "{stage}"
            );
            assert_eq!(
                dir(store, &keys::namespace_dir(&app.namespace)).await,
                listing(&["app", "app2"], &[]),
                "{stage}"
            );
            assert_eq!(
                dir(store, &keys::repo_dir(&app)).await,
                listing(&["images", "tags"], &["_repo"]),
                "{stage}"
            );
            assert_eq!(
                dir(store, &keys::repo_tags(&app)).await,
                listing(&[], tags),
                "{stage}"
            );
            assert_eq!(
                dir(store, &keys::repo_images(&app)).await,
                listing(&[], &images),
                "{stage}"
            );
        }
    };

    let first = image(10).as_str().to_string();
    let second = image(11).as_str().to_string();
    check(
        "with uploads in flight",
        &["latest", "v1.0"],
        vec![first.clone()],
    )
    .await;
    for round in 0..3u64 {
        for (i, upload) in p.in_flight.iter_mut().enumerate() {
            upload
                .write(pattern(70 + round * 10 + i as u64, MIB))
                .await
                .expect("write");
        }
        check("while writing", &["latest", "v1.0"], vec![first.clone()]).await;
    }

    let missing = repo("nobody/none");
    assert_eq!(
        dir(store, &keys::repo_dir(&missing)).await,
        listing(&[], &[])
    );
    assert_eq!(
        dir(store, &keys::repo_marker(&app)).await,
        listing(&[], &[])
    );

    for upload in p.in_flight.drain(..) {
        upload.finish().await.expect("finish");
    }
    let mut images = vec![first, second];
    images.sort();
    check(
        "after the uploads finished",
        &["inflight", "latest", "v1.0"],
        images,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Local directory only: what is left on disk
// ---------------------------------------------------------------------------------------------

/// Every regular file under `root`, as `/`-separated paths relative to it.
fn files_on_disk(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("dir entry");
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_unfinished_uploads_leave_no_files() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store: Arc<dyn BlobStore> = Arc::new(ObjectBackend::local(dir.path()).expect("backend"));
    let store = store.as_ref();
    let app = repo("alice/app");
    let marker = keys::repo_marker(&app);
    store
        .put(&marker, Bytes::from_static(b"{}"))
        .await
        .expect("put");
    let root = keys::repositories();
    let expected = vec![marker.as_str().to_string()];

    // In flight: its bytes are somewhere on disk, but not in any listing.
    let in_flight_key = keys::repo_tag(&app, &tag("inflight"));
    let in_flight = started_upload(store, &in_flight_key, 1, 5, MIB).await;
    let on_disk = files_on_disk(dir.path());
    assert_eq!(listed(store, &root).await, expected);
    assert_eq!(
        on_disk.len(),
        2,
        "the marker and one staging file: {on_disk:?}"
    );
    assert_absent(store, &in_flight_key).await;

    // Aborted (a new key, and over an existing one) and dropped (likewise).
    let latest = keys::repo_tag(&app, &tag("latest"));
    let aborted = keys::repo_tag(&app, &tag("aborted"));
    let dropped = keys::repo_tag(&app, &tag("dropped"));
    in_flight.abort().await.expect("abort");
    started_upload(store, &aborted, 2, 5, MIB)
        .await
        .abort()
        .await
        .expect("abort");
    assert_eq!(files_on_disk(dir.path()), expected, "after abort()");

    store
        .put(&latest, Bytes::from_static(b"old"))
        .await
        .expect("put");
    started_upload(store, &latest, 3, 5, MIB)
        .await
        .abort()
        .await
        .expect("abort");
    drop(started_upload(store, &dropped, 4, 5, MIB).await);
    drop(started_upload(store, &latest, 5, 5, MIB).await);
    let with_latest = strings(&[&latest, &marker]);
    eventually("dropped uploads leave no file behind", || async {
        files_on_disk(dir.path()) == with_latest
    })
    .await;

    assert_eq!(listed(store, &root).await, with_latest);
    assert_eq!(files_on_disk(dir.path()), listed(store, &root).await);
    for key in [&in_flight_key, &aborted, &dropped] {
        assert_absent(store, key).await;
    }
    assert_eq!(get_all(store, &latest).await, b"old");
}

/// Only a local directory hands out files; the memory store streams.
#[tokio::test]
async fn only_a_local_store_opens_its_objects_as_files() {
    let key = keys::image_layer(&image(42));
    let memory = memory_store().await;
    memory.store.put(&key, pattern(42, 100)).await.unwrap();
    assert!(memory.store.open_file(&key).await.unwrap().is_none());
    let local = local_store().await;
    local.store.put(&key, pattern(42, 100)).await.unwrap();
    let (_, size) = local.store.open_file(&key).await.unwrap().expect("a file");
    assert_eq!(size, 100);
}
