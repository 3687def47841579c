//! Faults under a live mount with both halves as real processes: `regfs serve` is killed with
//! SIGKILL and restarted on the same address and storage while a `regfs mount` daemon reads
//! and writes through it.
//!
//! mount_process.rs covers a graceful outage and mount_write.rs a kill of an in-process server
//! mid-push; this adds what they leave out: a read in progress when the server dies (EIO, not a
//! hang, then the same read works on the same open file), a push through the daemon
//! cut by `kill -9` and retried, and the daemon stopped while the registry is still down. Every
//! test ends with the daemon exiting on SIGTERM and the mountpoint released.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::process::{MountProcess, ServeProcess, is_mounted};
use crate::common::{Auth, Image, noise, runtime, write_and_fsync, write_cut_short};

const ADMIN: &str = "admin";
const PW: &str = "fault-admin-pw";
/// The mount's `--timeout`, in seconds.
const TIMEOUT: u64 = 2;
/// How long the test waits for the reader's next report before calling it a hang: far beyond
/// `--timeout` and its retries, so only a read that never returns trips it. How soon the EIO
/// comes is a figure for scripts/bench.sh (`mount-outage`), not an assertion here.
const HANG: Duration = Duration::from_secs(90);

/// The storage and log directories of one test's `regfs serve` processes.
struct Registry {
    storage: tempfile::TempDir,
    logs: tempfile::TempDir,
}

impl Registry {
    /// Fresh directories and the first server, on a free port.
    fn start() -> (Self, ServeProcess) {
        let dirs = Registry {
            storage: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
        };
        let server = ServeProcess::start(
            dirs.storage.path(),
            "127.0.0.1:0",
            (ADMIN, PW),
            dirs.logs.path().join("s0.log"),
        );
        (dirs, server)
    }

    /// The same storage served again on `addr`, after a kill.
    fn restart(&self, addr: SocketAddr) -> ServeProcess {
        ServeProcess::restart(
            addr,
            self.storage.path(),
            (ADMIN, PW),
            self.logs.path().join("s1.log"),
        )
    }
}

/// `regfs mount <dir> --registry <url> <args>`, mounted and handling signals.
fn mount(url: &str, args: &[&str]) -> MountProcess {
    let timeout = TIMEOUT.to_string();
    let mut all = vec!["--registry", url, "--timeout", &timeout, "--ttl", "0.2"];
    all.extend_from_slice(args);
    let mut m = MountProcess::start(&all, &[]);
    m.wait_ready();
    m
}

/// SIGTERM; the daemon must exit with code 0 and leave the mountpoint an ordinary empty
/// directory again.
fn stop(m: &mut MountProcess) {
    m.stop();
    assert!(
        std::fs::read_dir(&m.mountpoint).unwrap().next().is_none(),
        "an ordinary empty directory again"
    );
}

/// Pushes `img` as `repo:latest`, as the administrator.
fn push(server: &ServeProcess, repo: &str, img: &Image) {
    runtime().block_on(server.client().push_repo(
        repo,
        std::slice::from_ref(img),
        "latest",
        &Auth::basic(ADMIN, PW),
    ));
}

/// An image with a layer of `len` pseudo-random bytes.
fn image(seed: &str, len: usize) -> Image {
    let base = Image::new(seed, 0);
    let bits = u64::from_le_bytes(base.id.as_bytes()[..8].try_into().unwrap());
    Image {
        layer: noise(bits, len),
        ..base
    }
}

/// What the reader thread reports.
#[derive(Debug)]
enum Report {
    /// Read the first 4 MiB, all as pushed, and waits.
    Paused,
    /// A read at `offset` failed with `errno`.
    Failed { offset: usize, errno: Option<i32> },
    /// Reached the end without an error.
    Finished,
    /// The rest, from the failed offset on, read back exact on the same open file.
    Resumed,
}

#[test]
fn a_read_in_progress_when_the_server_is_killed_fails_with_eio_then_resumes() {
    let (registry, server) = Registry::start();
    let addr = server.addr;
    // Four times what the mount may cache (three quarters of 16 MiB), so most of it can only
    // come from the server.
    let img = image("fault-read", 48 * 1024 * 1024);
    push(&server, "library/big", &img);
    let mut m = mount(&server.url, &["--cache-size", "16777216"]);
    let layer = m.path(&format!("images/{}/layer", img.id));

    let (report_tx, report) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let expected = img.layer.clone();
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::open(&layer).unwrap();
        let mut buf = vec![0u8; 1024 * 1024];
        let mut offset = 0;
        while offset < 4 * 1024 * 1024 {
            f.read_exact(&mut buf).unwrap();
            assert!(buf[..] == expected[offset..offset + buf.len()]);
            offset += buf.len();
        }
        report_tx.send(Report::Paused).unwrap();
        go_rx.recv().unwrap();
        // The server is gone: read on until a read fails.
        loop {
            match f.read(&mut buf) {
                Ok(0) => {
                    report_tx.send(Report::Finished).unwrap();
                    return;
                }
                Ok(n) => {
                    assert!(buf[..n] == expected[offset..offset + n]);
                    offset += n;
                }
                Err(e) => {
                    let errno = e.raw_os_error();
                    report_tx.send(Report::Failed { offset, errno }).unwrap();
                    break;
                }
            }
        }
        go_rx.recv().unwrap();
        // The server is back: the same read, at the same offset on the same file, works.
        while offset < expected.len() {
            let n = f.read_at(&mut buf, offset as u64).unwrap();
            assert!(n > 0, "early end at {offset}");
            assert!(buf[..n] == expected[offset..offset + n], "at {offset}");
            offset += n;
        }
        report_tx.send(Report::Resumed).unwrap();
    });
    let next = |what: &str| {
        report
            .recv_timeout(HANG)
            .unwrap_or_else(|_| panic!("no report ({what})"))
    };

    assert!(matches!(next("paused"), Report::Paused));
    server.kill_9();
    go.send(()).unwrap();
    match next("failed") {
        // An EIO rather than a hang (which `next` turns into a failure) or a clean end.
        Report::Failed { offset, errno } => assert_eq!(errno, Some(libc::EIO), "at {offset}"),
        other => panic!("the read went on without the server: {other:?}"),
    }
    assert!(is_mounted(&m.mountpoint), "the mount stays up");

    let server = registry.restart(addr);
    go.send(()).unwrap();
    assert!(matches!(next("resumed"), Report::Resumed));
    reader.join().unwrap();
    // A fresh open reads it whole too.
    let layer = m.path(&format!("images/{}/layer", img.id));
    assert!(std::fs::read(&layer).unwrap() == img.layer);
    stop(&mut m);
    drop(server);
}

#[test]
fn a_push_through_the_daemon_cut_by_kill_9_fails_then_a_retry_succeeds() {
    let (registry, server) = Registry::start();
    let addr = server.addr;
    let mut m = mount(&server.url, &["--user", ADMIN, "--password", PW]);
    let img = image("fault-push", 24 * 1024 * 1024);
    let dir = m.path(&format!("images/{}", img.id));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("json"), &img.json).unwrap();
    write_cut_short(&dir.join("layer"), &img.layer, || server.kill_9());

    let server = registry.restart(addr);
    let c = server.client();
    let rt = runtime();
    let r = rt.block_on(c.get(&format!("/v1/images/{}/json", img.id), &Auth::None));
    assert!(
        r.status == 400 || r.status == 404,
        "nothing served: {}",
        r.status
    );
    // The retry: write the layer again, and see the push's result at fsync.
    write_and_fsync(&dir.join("layer"), &img.layer).unwrap();
    let r = rt.block_on(c.get(&format!("/v1/images/{}/layer", img.id), &Auth::None));
    assert_eq!(r.status, 200);
    assert!(r.body == img.layer);
    // Nothing left uncommitted: a clean stop, exit code 0.
    stop(&mut m);
    drop(server);
}

#[test]
fn stopping_the_daemon_while_the_registry_is_down_releases_the_mountpoint() {
    // The directories live to the end of the test, as the server does.
    let (_registry, server) = Registry::start();
    let img = image("fault-stop", 8 * 1024 * 1024);
    push(&server, "library/down", &img);
    let mut m = mount(&server.url, &[]);
    // Known to the mount, never read: its bytes can only come from the server.
    let layer = m.path(&format!("images/{}/layer", img.id));
    assert_eq!(
        std::fs::metadata(&layer).unwrap().len(),
        img.layer.len() as u64
    );
    server.kill_9();

    // A reader that may well be waiting on the dead registry when the daemon is told to stop.
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(std::fs::read(&layer).map(|b| b.len()));
    });
    stop(&mut m);
    let result = done
        .recv_timeout(Duration::from_secs(15))
        .expect("the reader returns once the daemon is gone");
    assert!(result.is_err(), "nothing to read without the server");
}
