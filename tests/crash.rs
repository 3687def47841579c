//! Crash safety of `regfs serve` on the local backend under `kill -9`: the built binary is
//! killed while many pushes are in flight, restarted on the same storage, and the store is
//! checked against what the clients were told.
//!
//! The promise checked (README, "Data safety"): every image whose checksum PUT got a 2xx is
//! complete and byte exact after the restart, every other image is complete and exact or not
//! served at all, every acknowledged tag is there, no tag points to an image that is not
//! served, no staged upload (`<key>#<n>`) survives the start, and a retry of every push that
//! was not acknowledged then succeeds.
//!
//! Knobs: `REGFS_CRASH_CYCLES` (kill/restart cycles, default 4) and `REGFS_CRASH_SEED` (the
//! seed of the kill points and layer sizes, default fixed so a failure can be replayed);
//! `scripts/crash-soak.sh` runs many cycles and prints the summary line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::common::process::ServeProcess;
use crate::common::{Image, noise};

const ADMIN: &str = "admin";
const PASSWORD: &str = "crash-admin-pw";
/// Images pushed per cycle, and the client tasks pushing them.
const IMAGES: usize = 24;
const PUSHERS: usize = 6;
/// Requests per image: json, layer, checksum, tag.
const STEPS: usize = 4;
const REPO: &str = "library/crash";

/// One image of the workload and what the server acknowledged of it.
#[derive(Clone)]
struct Pushed {
    image: Image,
    tag: String,
    /// The checksum PUT got a 2xx: the image must survive.
    complete_acked: bool,
    /// The tag PUT got a 2xx: the tag must survive.
    tag_acked: bool,
}

/// Figures over the whole run, printed as one line for scripts/crash-soak.sh.
#[derive(Default, Debug)]
struct Tally {
    cycles: usize,
    images: usize,
    acked: usize,
    /// Images complete after a restart although their checksum PUT got no answer.
    complete_unacked: usize,
    /// Images left in progress (json stored, never completed) by a kill.
    in_progress: usize,
    staged_left_by_kill: usize,
    retried: usize,
    lost: usize,
}

fn basic(rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    rb.basic_auth(ADMIN, Some(PASSWORD))
}

/// The layer as a body of 256 KiB chunks, so a kill can land in the middle of it.
fn layer_body(layer: &[u8]) -> reqwest::Body {
    let chunks: Vec<bytes::Bytes> = layer
        .chunks(256 * 1024)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    reqwest::Body::wrap_stream(futures::stream::iter(
        chunks.into_iter().map(Ok::<_, std::io::Error>),
    ))
}

/// One push step; `Ok(true)` for a 2xx, `Ok(false)` when the server went away (no answer),
/// `Err` for any other answer, which no kill can explain.
async fn step(rb: reqwest::RequestBuilder, what: &str) -> Result<bool, String> {
    match basic(rb).send().await {
        Ok(r) if r.status().is_success() => Ok(true),
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            Err(format!("{what}: {status} {body}"))
        }
        Err(_) => Ok(false),
    }
}

/// json, layer, checksum, tag; stops at the first request without an answer. Every answered
/// request bumps `done`.
async fn push(
    http: &reqwest::Client,
    url: &str,
    entry: &Mutex<Pushed>,
    done: &AtomicUsize,
) -> Result<(), String> {
    let (image, tag) = {
        let e = entry.lock().unwrap();
        (e.image.clone(), e.tag.clone())
    };
    let id = &image.id;
    let requests = [
        http.put(format!("{url}/v1/images/{id}/json"))
            .body(image.json.clone()),
        http.put(format!("{url}/v1/images/{id}/layer"))
            .body(layer_body(&image.layer)),
        http.put(format!("{url}/v1/images/{id}/checksum"))
            .header("X-Docker-Checksum-Payload", image.checksum()),
        http.put(format!("{url}/v1/repositories/{REPO}/tags/{tag}"))
            .body(format!("\"{id}\"")),
    ];
    for (n, rb) in requests.into_iter().enumerate() {
        if !step(rb, &format!("image {id} step {n}")).await? {
            return Ok(());
        }
        done.fetch_add(1, Ordering::SeqCst);
        let mut e = entry.lock().unwrap();
        match n {
            2 => e.complete_acked = true,
            3 => e.tag_acked = true,
            _ => {}
        }
    }
    Ok(())
}

/// Pushes again what the server did not acknowledge: the whole image unless it is already
/// complete (its checksum PUT was carried out but its answer lost), then the tag.
async fn retry(
    http: &reqwest::Client,
    url: &str,
    entry: &Mutex<Pushed>,
    complete: bool,
) -> Result<(), String> {
    let (id, tag) = {
        let e = entry.lock().unwrap();
        (e.image.id.clone(), e.tag.clone())
    };
    if complete {
        let rb = http
            .put(format!("{url}/v1/repositories/{REPO}/tags/{tag}"))
            .body(format!("\"{id}\""));
        if step(rb, "retried tag").await? {
            let mut e = entry.lock().unwrap();
            e.complete_acked = true;
            e.tag_acked = true;
        }
    } else {
        push(http, url, entry, &AtomicUsize::new(0)).await?;
    }
    let e = entry.lock().unwrap();
    if e.complete_acked && e.tag_acked {
        Ok(())
    } else {
        Err(format!("a retry of {id} got no answer"))
    }
}

/// Whether image `id` is served (its json GET is a 200).
async fn is_served(http: &reqwest::Client, url: &str, id: &str) -> bool {
    let r = http
        .get(format!("{url}/v1/images/{id}/json"))
        .send()
        .await
        .unwrap();
    r.status().as_u16() == 200
}

/// What a GET of an image says after the restart.
#[derive(Debug, PartialEq)]
enum Served {
    /// Served, json and layer byte exact, the payload checksum matching.
    Exact,
    /// 404: never stored.
    Absent,
    /// 400: json stored, never completed, not served.
    InProgress,
}

async fn served(http: &reqwest::Client, url: &str, image: &Image) -> Served {
    let id = &image.id;
    let r = http
        .get(format!("{url}/v1/images/{id}/json"))
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        404 => return Served::Absent,
        400 => return Served::InProgress,
        200 => {}
        s => panic!("GET json of {id}: {s}"),
    }
    let checksum = r
        .headers()
        .get("X-Docker-Checksum-Payload")
        .map(|v| v.to_str().unwrap().to_string());
    let json = r.bytes().await.unwrap();
    assert!(json == image.json, "json of {id} is not what was pushed");
    assert_eq!(checksum, Some(image.checksum()), "payload checksum of {id}");
    let r = http
        .get(format!("{url}/v1/images/{id}/layer"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "GET layer of a served image {id}");
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        len += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(len, image.layer.len(), "layer length of {id}");
    assert_eq!(
        hex::encode(hasher.finalize()),
        hex::encode(Sha256::digest(&image.layer)),
        "layer sha256 of {id}"
    );
    Served::Exact
}

/// Staged uploads (`<name>#<digits>`) anywhere under `root`.
fn staged_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let staged = name.rsplit_once('#').is_some_and(|(base, n)| {
                !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
            });
            if staged {
                found.push(path);
            }
        }
    }
    found
}

fn tags(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    url: &str,
) -> BTreeMap<String, String> {
    rt.block_on(async {
        let r = http
            .get(format!("{url}/v1/repositories/{REPO}/tags"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET tags");
        r.json().await.unwrap()
    })
}

/// `regfs serve` over `storage`, its stderr into `log`.
fn serve(storage: &Path, log: PathBuf) -> ServeProcess {
    ServeProcess::start(storage, "127.0.0.1:0", (ADMIN, PASSWORD), log)
}

fn running(server: &Option<ServeProcess>) -> &ServeProcess {
    server.as_ref().expect("a server is running")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    }
}

#[test]
fn kill_9_during_concurrent_pushes_loses_nothing_acknowledged() {
    let cycles: usize = env_or("REGFS_CRASH_CYCLES", 4);
    let seed: u64 = env_or("REGFS_CRASH_SEED", 0x5eed_c4a5);
    let mut rng = StdRng::seed_from_u64(seed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let log = |n: usize| dir.path().join(format!("server-{n}.log"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut tally = Tally::default();
    let mut all: Vec<Pushed> = Vec::new();
    let started = Instant::now();

    let mut server = Some(serve(&storage, log(0)));
    for cycle in 0..cycles {
        let ctx = format!("seed {seed:#x}, cycle {cycle}");
        // This cycle's images: fresh ids, layers of 1-3 MiB; half are children of an image
        // an earlier cycle completed, so pushes also read parents' ancestry.
        let entries: Vec<Arc<Mutex<Pushed>>> = (0..IMAGES)
            .map(|i| {
                let seed_str = format!("crash-{seed}-{cycle}-{i}");
                let len = rng.random_range(1024 * 1024..3 * 1024 * 1024);
                let image = match all.get(rng.random_range(0..all.len().max(1) * 2)) {
                    Some(parent) => Image::child(&seed_str, &parent.image, 0),
                    None => Image::new(&seed_str, 0),
                };
                Arc::new(Mutex::new(Pushed {
                    image: Image {
                        layer: noise(rng.random(), len),
                        ..image
                    },
                    tag: format!("c{cycle}-{i}"),
                    complete_acked: false,
                    tag_acked: false,
                }))
            })
            .collect();
        // Kill after a random number of answered requests (never all of them), and then after
        // a random few milliseconds more, so the kill lands between requests as well as in
        // the middle of a layer.
        let kill_after = rng.random_range(IMAGES / 2..IMAGES * STEPS * 3 / 4);
        let extra = Duration::from_millis(rng.random_range(0..30));

        let done = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let errors: Vec<String> = rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..PUSHERS {
                let (http, url) = (http.clone(), running(&server).url.clone());
                let (entries, done, next) = (entries.clone(), done.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let Some(entry) = entries.get(next.fetch_add(1, Ordering::SeqCst)) else {
                            return Ok(());
                        };
                        push(&http, &url, entry, &done).await?;
                    }
                }));
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            // (All pushers ending early means one met an answer no kill explains.)
            while done.load(Ordering::SeqCst) < kill_after && !tasks.iter().all(|t| t.is_finished())
            {
                assert!(Instant::now() < deadline, "{ctx}: pushes stalled");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(extra).await;
            if let Some(s) = server.take() {
                s.kill_9();
            }
            let mut errors = Vec::new();
            for t in tasks {
                if let Err(e) = t.await.unwrap() {
                    errors.push(e);
                }
            }
            errors
        });
        assert!(
            errors.is_empty(),
            "{ctx}: answers no kill explains: {errors:?}"
        );
        let staged_before = staged_files(&storage).len();
        tally.staged_left_by_kill += staged_before;

        let log_path = log(cycle + 1);
        let srv = server.insert(serve(&storage, log_path));
        let url = srv.url.clone();
        let staged = staged_files(&storage);
        assert!(
            staged.is_empty(),
            "{ctx}: staged uploads left after the restart: {staged:?}"
        );

        // Every image is exact or not served; acknowledged ones are exact.
        let mut lost = Vec::new();
        let snapshot: Vec<Pushed> = entries.iter().map(|e| e.lock().unwrap().clone()).collect();
        let states: Vec<Served> = rt.block_on(
            futures::stream::iter(&snapshot)
                .map(|p| served(&http, &url, &p.image))
                .buffered(PUSHERS)
                .collect(),
        );
        for (p, state) in snapshot.iter().zip(&states) {
            match (state, p.complete_acked) {
                (Served::Exact, false) => tally.complete_unacked += 1,
                (Served::InProgress, false) => tally.in_progress += 1,
                (Served::Exact, true) | (Served::Absent, false) => {}
                (_, true) => lost.push(format!("{} ({state:?})", p.image.id)),
            }
        }
        let tags_now = tags(&rt, &http, &url);
        for p in &snapshot {
            if p.tag_acked && tags_now.get(&p.tag) != Some(&p.image.id) {
                lost.push(format!("tag {}", p.tag));
            }
        }
        tally.cycles = cycle + 1;
        tally.images += snapshot.len();
        tally.acked += snapshot.iter().filter(|p| p.complete_acked).count();
        tally.lost += lost.len();
        if !lost.is_empty() {
            eprintln!("crash summary: {tally:?}");
        }
        assert!(
            lost.is_empty(),
            "{ctx}: acknowledged but lost: {lost:?}\n{}",
            srv.log()
        );
        // No tag names an image that is not served. This cycle's images were just read in
        // full; earlier ones are read in full once at the end.
        let this_cycle: BTreeMap<&str, &Served> = snapshot
            .iter()
            .zip(&states)
            .map(|(p, s)| (p.image.id.as_str(), s))
            .collect();
        for (tag, id) in &tags_now {
            let ok = match this_cycle.get(id.as_str()) {
                Some(state) => **state == Served::Exact,
                None => rt.block_on(is_served(&http, &url, id)),
            };
            assert!(ok, "{ctx}: tag {tag} points to {id}, which is not served");
        }

        // Retry what was not acknowledged, as Docker would: skip images already complete.
        let retries: Vec<(&Arc<Mutex<Pushed>>, bool)> = entries
            .iter()
            .zip(&snapshot)
            .zip(&states)
            .filter(|((_, p), _)| !(p.complete_acked && p.tag_acked))
            .map(|((e, _), state)| (e, *state == Served::Exact))
            .collect();
        tally.retried += retries.len();
        let failures: Vec<String> = rt.block_on(
            futures::stream::iter(retries)
                .map(|(entry, complete)| retry(&http, &url, entry, complete))
                .buffer_unordered(PUSHERS)
                .filter_map(|r| async move { r.err() })
                .collect(),
        );
        assert!(
            failures.is_empty(),
            "{ctx}: retries failed: {failures:?}\n{}",
            srv.log()
        );
        all.extend(entries.iter().map(|e| e.lock().unwrap().clone()));
    }

    // Everything pushed in every cycle is there and exact, and so is every tag.
    let url = running(&server).url.clone();
    let tags_now = tags(&rt, &http, &url);
    let states: Vec<Served> = rt.block_on(
        futures::stream::iter(&all)
            .map(|p| served(&http, &url, &p.image))
            .buffered(PUSHERS)
            .collect(),
    );
    for (p, state) in all.iter().zip(states) {
        assert_eq!(
            state,
            Served::Exact,
            "seed {seed:#x}: {} after all cycles",
            p.image.id
        );
        assert_eq!(tags_now.get(&p.tag), Some(&p.image.id), "tag {}", p.tag);
    }
    drop(server);
    println!(
        "crash summary: seed={seed:#x} cycles={} images={} acked={} complete_unacked={} \
         in_progress={} staged_left_by_kill={} retried={} lost={} secs={:.1}",
        tally.cycles,
        tally.images,
        tally.acked,
        tally.complete_unacked,
        tally.in_progress,
        tally.staged_left_by_kill,
        tally.retried,
        tally.lost,
        started.elapsed().as_secs_f64()
    );
}
