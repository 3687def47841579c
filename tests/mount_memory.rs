//! The `regfs mount` daemon's memory stays within its budget whatever the registry does: a
//! registry that ignores `Range` and sends every layer whole is read through to the window a
//! block needs (issue 17, item 3). Each test measures the peak RSS (VmHWM) of the daemon, a
//! child process of its own, never of the test process.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use warp::Filter;
use warp::http::{HeaderMap, Method, header};

use crate::common::process::{MountProcess, status_kib};
use crate::common::{Auth, Image, TestServer, noise, runtime};

const MIB: u64 = 1 << 20;

/// A registry that ignores `Range`: every request is forwarded to `upstream` without its
/// `Range` header, and the answer (a layer's whole body, 200) streamed back. Runs on its own
/// thread and runtime, so the test's blocking reads of the mount cannot starve it.
pub struct RangeIgnoringProxy {
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RangeIgnoringProxy {
    pub fn start(upstream: &str) -> Self {
        let upstream = upstream.to_string();
        let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("range-ignoring-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let http = reqwest::Client::new();
                    let route = warp::method()
                        .and(warp::path::full())
                        .and(
                            warp::query::raw()
                                .map(|q: String| format!("?{q}"))
                                .or(warp::any().map(String::new))
                                .unify(),
                        )
                        .and(warp::header::headers_cloned())
                        .and(warp::body::bytes())
                        .then(
                            move |method: Method,
                                  path: warp::path::FullPath,
                                  query: String,
                                  headers: HeaderMap,
                                  body: bytes::Bytes| {
                                let http = http.clone();
                                let url = format!("{upstream}{}{query}", path.as_str());
                                forward(http, method, url, headers, body)
                            },
                        );
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    addr_tx.send(listener.local_addr().unwrap()).unwrap();
                    warp::serve(route)
                        .incoming(listener)
                        .graceful(async {
                            let _ = shutdown_rx.await;
                        })
                        .run()
                        .await;
                });
                rt.shutdown_background();
            })
            .unwrap();
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        RangeIgnoringProxy {
            url: format!("http://{addr}"),
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for RangeIgnoringProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn forward(
    http: reqwest::Client,
    method: Method,
    url: String,
    mut headers: HeaderMap,
    body: bytes::Bytes,
) -> warp::reply::Response {
    use warp::Reply;
    headers.remove(header::RANGE);
    headers.remove(header::HOST);
    let sent = http
        .request(method, url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let res = match sent {
        Ok(res) => res,
        Err(e) => {
            return warp::reply::with_status(e.to_string(), warp::http::StatusCode::BAD_GATEWAY)
                .into_response();
        }
    };
    let status = res.status();
    let headers = res.headers().clone();
    let stream = sync_wrapper::SyncStream::new(res.bytes_stream().map_err(std::io::Error::other));
    let mut out = warp::reply::stream(stream).into_response();
    *out.status_mut() = status;
    for (name, value) in &headers {
        if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}

/// Issue 17 item 3: a 4 MiB block fetch from a registry that answers every layer GET with
/// the whole layer reads only its window; a layer eight times the budget reads back byte for
/// byte, and the daemon's peak RSS stays within `--cache-size` + 64 MiB.
#[test]
fn a_registry_that_ignores_range_does_not_make_the_mount_buffer_whole_layers() {
    const CACHE: u64 = 32 * MIB;
    const LAYER: u64 = 256 * MIB;
    let server = TestServer::start();
    let mut image = Image::new("mem-no-range", 0);
    image.layer = noise(17, LAYER as usize);
    let want = Sha256::digest(&image.layer);
    runtime().block_on(server.client().push_repo(
        "library/big",
        std::slice::from_ref(&image),
        "latest",
        &Auth::admin(),
    ));
    let id = image.id.clone();
    drop(image);
    let proxy = RangeIgnoringProxy::start(&server.url);
    // The stand-in really ignores Range.
    let probe = runtime().block_on(async {
        reqwest::Client::new()
            .get(format!("{}/v1/images/{id}/layer", proxy.url))
            .header("Range", "bytes=0-9")
            .send()
            .await
            .unwrap()
    });
    assert_eq!(probe.status(), 200);
    assert_eq!(probe.content_length(), Some(LAYER));
    drop(probe);

    let cache = CACHE.to_string();
    let mut m = MountProcess::start(
        &[
            "--registry",
            &proxy.url,
            "--cache-size",
            &cache,
            "--timeout",
            "120",
        ],
        &[],
    );
    m.wait_ready();
    let mut file = std::fs::File::open(m.path(&format!("images/{id}/layer"))).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        read += n as u64;
    }
    drop(file);
    let peak_kib = status_kib(m.pid(), "VmHWM:");
    eprintln!("daemon peak RSS reading a {LAYER} byte layer without Range: {peak_kib} KiB");
    assert_eq!(read, LAYER);
    assert!(hasher.finalize() == want, "the layer read differs");
    assert!(
        peak_kib * 1024 <= CACHE + 64 * MIB,
        "daemon peak RSS {peak_kib} KiB over --cache-size {CACHE} + 64 MiB"
    );
    m.stop();
}
