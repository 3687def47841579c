//! Resource limits of the server, through raw sockets where a well-behaved HTTP client cannot
//! misbehave on purpose: the upload cap, body and header timeouts, idle keep-alive connections,
//! stalled readers, oversized bodies, and memory under many slow clients (of a `regfs serve`
//! child process).
//!
//! Where a test must know the server is inside an upload, it sends `Expect: 100-continue`:
//! the server answers `100 Continue` only once the handler holds its upload slot and reads the
//! body, so no test waits on a guess.

use std::net::SocketAddr;
use std::time::Duration;

use regfs::server::ServeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::process::{ServeProcess, reset_peak_rss, status_bytes};
use crate::common::{ADMIN, ADMIN_PASSWORD, Auth, Client, Image, TestServer};

/// `admin:admin-secret`, the test server's administrator.
const ADMIN_BASIC: &str = "Basic YWRtaW46YWRtaW4tc2VjcmV0";
/// Bound on every wait of these tests: far above what any answer needs, so it only turns a
/// hang into a failure.
const PATIENCE: Duration = Duration::from_secs(10);

/// A short timeout for tests that wait for one to fire.
fn quick_timeouts(mut cfg: ServeConfig) -> ServeConfig {
    cfg.timeouts.header = Duration::from_secs(1);
    cfg.timeouts.body = Duration::from_secs(1);
    cfg
}

/// The head of a response as read off the wire.
#[derive(Debug)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 connection driven by hand.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// A connection with a small receive buffer, so that a client that does not read holds
    /// little of a response in its own kernel buffers.
    async fn connect_small(addr: SocketAddr) -> Raw {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        Raw {
            stream: socket.connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends a request head; `extra` is more header lines, each ending in `\r\n`.
    async fn send_head(&mut self, method: &str, path: &str, extra: &str) {
        let head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n");
        self.send(head.as_bytes()).await;
    }

    /// Reads until `buf` holds at least `n` bytes; false at end of stream or on an error.
    async fn fill(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return false,
                Ok(Ok(k)) => self.buf.extend_from_slice(&chunk[..k]),
                Err(_) => panic!("no answer within {PATIENCE:?}"),
            }
        }
        true
    }

    /// The next response head (a `100 Continue` counts as one).
    async fn head(&mut self) -> Head {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                let mut lines = text.split("\r\n");
                let status = lines
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("not a status line: {text:?}"));
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .collect();
                return Head { status, headers };
            }
            let want = self.buf.len() + 1;
            assert!(self.fill(want).await, "connection closed before a response");
        }
    }

    /// The body of a response with a `Content-Length`.
    async fn body(&mut self, head: &Head) -> Vec<u8> {
        let len: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
        assert!(self.fill(len).await, "connection closed inside a body");
        self.buf.drain(..len).collect()
    }

    /// Whether the server closes the connection (end of stream or reset) within `PATIENCE`,
    /// counting the bytes that still arrive before it does.
    async fn closed(&mut self) -> Option<usize> {
        let mut seen = std::mem::take(&mut self.buf).len();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(seen),
                Ok(Ok(k)) => seen += k,
                Err(_) => return None,
            }
        }
    }

    /// Starts `PUT /v1/images/<id>/layer` of `len` bytes, waiting for the server's go-ahead.
    /// Returns the refusal instead if the server answers with a final status.
    async fn start_upload(addr: SocketAddr, id: &str, len: usize) -> Result<Raw, (Head, Vec<u8>)> {
        let mut raw = Raw::connect(addr).await;
        let extra = format!(
            "Authorization: {ADMIN_BASIC}\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n"
        );
        raw.send_head("PUT", &format!("/v1/images/{id}/layer"), &extra)
            .await;
        let head = raw.head().await;
        if head.status == 100 {
            Ok(raw)
        } else {
            let body = raw.body(&head).await;
            Err((head, body))
        }
    }

    /// Sends the rest of an upload and reads the final status.
    async fn finish_upload(mut self, body: &[u8]) -> u16 {
        self.send(body).await;
        let head = self.head().await;
        self.body(&head).await;
        head.status
    }
}

/// An image with a layer of `len` bytes (a multiple of 1 MiB), one MiB repeated: generating
/// that many test bytes the usual way takes seconds.
fn big_image(seed: &str, len: usize) -> Image {
    let mut image = Image::new(seed, 1024 * 1024);
    image.layer = image.layer.repeat(len / image.layer.len());
    image
}

async fn put_json(c: &Client, image: &Image) {
    let r = c.put_json(image, &Auth::admin()).await;
    assert_eq!(r.status, 200, "PUT json: {}", r.text());
}

async fn put_checksum(c: &Client, image: &Image) -> u16 {
    let r = c.put_checksum(image, &Auth::admin()).await;
    r.status
}

/// The layer is served, byte for byte: the image is complete.
async fn assert_served(c: &Client, image: &Image) {
    let r = c
        .get(&format!("/v1/images/{}/layer", image.id), &Auth::None)
        .await;
    assert_eq!(r.status, 200, "GET layer: {}", r.text());
    assert_eq!(r.body, image.layer, "layer bytes");
}

/// Nothing of the layer was kept: the checksum step finds no uploaded layer.
async fn assert_no_layer(c: &Client, image: &Image) {
    let r = c.put_checksum(image, &Auth::admin()).await;
    assert_eq!(
        r.status,
        400,
        "checksum after a refused upload: {}",
        r.text()
    );
    assert_eq!(r.error(), "Image layer not uploaded yet");
    let r = c
        .get(&format!("/v1/images/{}/layer", image.id), &Auth::None)
        .await;
    assert_eq!(r.status, 400, "an unfinished image is not served");
}

#[tokio::test]
async fn uploads_over_the_cap_get_503_at_once_and_leave_nothing() {
    let mut cfg = TestServer::config();
    cfg.max_uploads = 2;
    let server = TestServer::with_config(cfg);
    let c = server.client();
    let images: Vec<Image> = (0..5)
        .map(|i| Image::new(&format!("cap-{i}"), 1000))
        .collect();
    for image in &images {
        put_json(&c, image).await;
    }
    let [a, b, refused, d, gone] = &images[..] else {
        unreachable!()
    };
    let up_a = Raw::start_upload(server.addr, &a.id, a.layer.len())
        .await
        .unwrap();
    let up_b = Raw::start_upload(server.addr, &b.id, b.layer.len())
        .await
        .unwrap();
    // Answered before any body byte is sent: the client waits for 100 Continue that never comes.
    let Err((head, body)) = Raw::start_upload(server.addr, &refused.id, 1000).await else {
        panic!("a third upload was let in over a cap of 2");
    };
    assert_eq!(head.status, 503);
    assert!(head.header("retry-after").is_some(), "{head:?}");
    assert_eq!(head.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"].is_string(), "{v}");
    assert_no_layer(&c, refused).await;
    // A client that sends its body at once, without waiting for 100 Continue, reads the same
    // answer rather than a reset connection.
    let r = c
        .put(
            &format!("/v1/images/{}/layer", refused.id),
            vec![0u8; 1024 * 1024],
            &Auth::admin(),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(r.json()["error"].is_string());
    assert_no_layer(&c, refused).await;

    // A finished upload gives its slot back.
    assert_eq!(up_a.finish_upload(&a.layer).await, 200);
    let up_d = Raw::start_upload(server.addr, &d.id, d.layer.len())
        .await
        .expect("a slot is free again once an upload finished");
    // So does an upload whose client goes away mid-body.
    let Err((head, _)) = Raw::start_upload(server.addr, &gone.id, 1000).await else {
        panic!("over the cap");
    };
    assert_eq!(head.status, 503);
    assert_eq!(up_d.finish_upload(&d.layer).await, 200);
    let mut up_gone = Raw::start_upload(server.addr, &gone.id, gone.layer.len())
        .await
        .unwrap();
    up_gone.send(&gone.layer[..100]).await;
    drop(up_gone);
    // The server sees the close on its own schedule; poll until the slot is back.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let up_gone = loop {
        match Raw::start_upload(server.addr, &gone.id, gone.layer.len()).await {
            Ok(up) => break up,
            Err((head, _)) => {
                assert_eq!(head.status, 503);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "slot of a vanished client never came back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(up_gone.finish_upload(&gone.layer).await, 200);
    assert_eq!(up_b.finish_upload(&b.layer).await, 200);

    // Everything accepted completes; the refused image can be pushed now.
    for image in [a, b, d, gone] {
        assert_eq!(put_checksum(&c, image).await, 200);
        assert_served(&c, image).await;
    }
    c.push_image(refused, &Auth::admin()).await;
    assert_served(&c, refused).await;
}

#[tokio::test]
async fn a_stalled_upload_is_cut_off_and_nothing_is_published() {
    let server = TestServer::with_config(quick_timeouts(TestServer::config()));
    let c = server.client();
    let image = Image::new("stalled-layer", 100_000);
    put_json(&c, &image).await;
    let mut up = Raw::start_upload(server.addr, &image.id, image.layer.len())
        .await
        .unwrap();
    up.send(&image.layer[..10_000]).await;
    // No more bytes: the server gives up after the body timeout, answers and hangs up.
    let head = up.head().await;
    assert_eq!(head.status, 400, "{head:?}");
    let body = up.body(&head).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("Upload interrupted"),
        "{v}"
    );
    assert!(up.closed().await.is_some(), "connection left open");
    assert_no_layer(&c, &image).await;
    // A retry of the push completes the image.
    c.push_image(&image, &Auth::admin()).await;
    assert_served(&c, &image).await;

    // A JSON body that stalls is cut off the same way, and nothing is stored.
    let other = Image::new("stalled-json", 10);
    let mut raw = Raw::connect(server.addr).await;
    let extra = format!(
        "Authorization: {ADMIN_BASIC}\r\nContent-Length: {}\r\n",
        other.json.len()
    );
    raw.send_head("PUT", &format!("/v1/images/{}/json", other.id), &extra)
        .await;
    raw.send(&other.json[..10]).await;
    let head = raw.head().await;
    assert_eq!(head.status, 400, "{head:?}");
    raw.body(&head).await;
    assert!(raw.closed().await.is_some(), "connection left open");
    let r = c
        .get(&format!("/v1/images/{}/json", other.id), &Auth::None)
        .await;
    assert_eq!(r.status, 404, "a cut-off json was stored: {}", r.text());
}

#[tokio::test]
async fn a_client_sending_headers_byte_by_byte_is_cut_off() {
    let server = TestServer::with_config(quick_timeouts(TestServer::config()));
    let raw = Raw::connect(server.addr).await;
    let (mut reader, mut writer) = raw.stream.into_split();
    // One byte every 100 ms, for far longer than the 1 s header timeout if nobody stops it.
    let dribble = tokio::spawn(async move {
        writer.write_all(b"GET /_ping HTTP/1.1\r\nX-Slow: ").await?;
        for _ in 0..100 {
            writer.write_all(b"a").await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a dribbling client kept its connection");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text:?}"
    );
    dribble.abort();
    // Others are still served.
    let r = server.client().get("/_ping", &Auth::None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let server = TestServer::with_config(quick_timeouts(TestServer::config()));
    let mut raw = Raw::connect(server.addr).await;
    raw.send_head("GET", "/_ping", "").await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    raw.body(&head).await;
    assert_ne!(head.header("connection"), Some("close"), "keep-alive");
    assert!(
        raw.closed().await.is_some(),
        "an idle keep-alive connection stayed open"
    );
    // A connection that never sends a request at all goes the same way.
    let mut silent = Raw::connect(server.addr).await;
    assert!(
        silent.closed().await.is_some(),
        "a silent connection stayed open"
    );
}

#[tokio::test]
async fn a_silent_http2_connection_is_closed() {
    let server = TestServer::with_config(quick_timeouts(TestServer::config()));
    let mut raw = Raw::connect(server.addr).await;
    // The HTTP/2 preface and an empty SETTINGS frame, then nothing, not even ping answers.
    raw.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await;
    assert!(
        raw.closed().await.is_some(),
        "a silent HTTP/2 connection stayed open"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_a_layer_is_disconnected() {
    let server = TestServer::with_config(quick_timeouts(TestServer::config()));
    let c = server.client();
    // Far more than the kernel buffers of both ends hold, so the server's writes block.
    let image = big_image("stalled-reader", 32 * 1024 * 1024);
    c.push_image(&image, &Auth::admin()).await;
    let mut raw = Raw::connect_small(server.addr).await;
    raw.send_head("GET", &format!("/v1/images/{}/layer", image.id), "")
        .await;
    // Not reading for 3 s: three times the write-stall bound.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = raw
        .closed()
        .await
        .expect("the stalled connection stayed open");
    assert!(
        got < image.layer.len(),
        "the whole layer arrived ({got} bytes): the stall was not noticed"
    );
    let r = c.get("/_ping", &Auth::None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn oversized_bodies_get_413_json_and_store_nothing() {
    // tests/api.rs covers bodies with a Content-Length, read until over the limit; these are
    // the chunked ones, and a declared length refused before any body byte.
    let mut cfg = TestServer::config();
    cfg.max_layer_size = 1000;
    let server = TestServer::with_config(cfg);
    let c = server.client();
    let chunked = |bytes: Vec<u8>| {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(300).map(|c| Ok(c.to_vec())).collect();
        reqwest::Body::wrap_stream(futures::stream::iter(chunks))
    };

    let image = Image::new("chunked-too-big", 1001);
    put_json(&c, &image).await;
    let r = c
        .put(
            &format!("/v1/images/{}/layer", image.id),
            chunked(image.layer.clone()),
            &Auth::admin(),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.error().contains("1000"), "{}", r.text());
    assert_no_layer(&c, &image).await;
    // Far over the limit, still arriving when the server refuses it.
    let r = c
        .put(
            &format!("/v1/images/{}/layer", image.id),
            chunked(vec![0u8; 4 * 1024 * 1024]),
            &Auth::admin(),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_no_layer(&c, &image).await;

    // A declared size over the limit: refused on the headers alone.
    let mut raw = Raw::connect(server.addr).await;
    let extra = format!("Authorization: {ADMIN_BASIC}\r\nContent-Length: 1000000000000\r\n");
    raw.send_head("PUT", &format!("/v1/images/{}/layer", image.id), &extra)
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 413, "{head:?}");
    let body = raw.body(&head).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"].is_string(), "{v}");
    assert_no_layer(&c, &image).await;
    // The same with the body already on its way: the client reads the 413, not a reset.
    let r = c
        .put(
            &format!("/v1/images/{}/layer", image.id),
            vec![0u8; 4 * 1024 * 1024],
            &Auth::admin(),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_no_layer(&c, &image).await;

    // JSON over 1 MiB without a Content-Length.
    let other = Image::new("chunked-json", 10);
    let mut huge = other.json.clone();
    huge.resize(regfs::server::JSON_LIMIT as usize + 1, b' ');
    let r = c
        .put(
            &format!("/v1/images/{}/json", other.id),
            chunked(huge),
            &Auth::admin(),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["error"].is_string());
    let r = c
        .get(&format!("/v1/images/{}/json", other.id), &Auth::None)
        .await;
    assert_eq!(r.status, 404, "an oversized json was stored");

    // Under the limits, both still go through.
    c.push_image(&Image::new("fits", 1000), &Auth::admin())
        .await;
}

/// Memory is measured in a `regfs serve` child process of its own: the test process runs other
/// tests at the same time, whose allocations would be counted too.
#[tokio::test]
async fn many_slow_clients_leave_the_server_responsive_and_memory_bounded() {
    const SLOW: usize = 32;
    const LAYER: usize = 64 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    // Long enough that nothing is cut off while the test looks.
    let server = ServeProcess::start_with(
        &dir.path().join("storage"),
        "127.0.0.1:0",
        (ADMIN, ADMIN_PASSWORD),
        dir.path().join("serve.log"),
        &["--body-timeout", "60"],
    );
    let c = server.client();
    let big = big_image("load-big", LAYER);
    c.push_image(&big, &Auth::admin()).await;
    let pid = server.pid();
    reset_peak_rss(pid);
    let before = status_bytes(pid, "VmRSS:");

    let mut readers = Vec::new();
    for _ in 0..SLOW {
        let mut raw = Raw::connect_small(server.addr).await;
        raw.send_head("GET", &format!("/v1/images/{}/layer", big.id), "")
            .await;
        readers.push(raw);
    }
    let mut writers = Vec::new();
    let chunks_sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..SLOW {
        let image = Image::new(&format!("load-slow-{i}"), 0);
        put_json(&c, &image).await;
        let mut up = Raw::start_upload(server.addr, &image.id, 1024 * 1024)
            .await
            .unwrap();
        // A trickle: 4 KiB every 50 ms, never finishing while the test runs.
        let sent = chunks_sent.clone();
        writers.push(tokio::spawn(async move {
            let chunk = [7u8; 4096];
            for _ in 0..256 {
                if up.stream.write_all(&chunk).await.is_err() {
                    return;
                }
                sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }

    // Under way: every writer has sent a dozen chunks (more than half a second of trickle),
    // while the server answers pings.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while chunks_sent.load(std::sync::atomic::Ordering::SeqCst) < 12 * SLOW {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writers stalled"
        );
        let ping = tokio::time::timeout(PATIENCE, c.get("/_ping", &Auth::None)).await;
        let r = ping.expect("_ping did not answer within 10 s under load");
        assert_eq!(r.status, 200);
    }
    let peak = status_bytes(pid, "VmHWM:");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "server peak RSS under load: {} MiB, {} MiB over its idle RSS",
        peak / (1024 * 1024),
        growth / (1024 * 1024)
    );
    // A server buffering each stalled download whole would grow by SLOW x LAYER = 2 GiB.
    // Bounded, each holds hyper's write buffer (~400 KiB) and one 256 KiB read chunk, and each
    // upload one chunk: tens of MiB.
    assert!(
        growth < 128 * 1024 * 1024,
        "RSS grew by {growth} bytes under {SLOW} stalled readers and {SLOW} slow writers"
    );
    // Closed before the server stops, or its shutdown waits on their uploads.
    for w in writers {
        w.abort();
        let _ = w.await;
    }
    drop(readers);
}
