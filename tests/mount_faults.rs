//! Faults under a live mount with both halves as real processes: `regfs serve` is killed with
//! SIGKILL and restarted on the same address and storage while a `regfs mount` daemon reads
//! and writes through it.
//!
//! mount_process.rs covers a graceful outage and mount_write.rs a kill of an in-process server
//! mid-push; this adds what they leave out: a read in progress when the server dies (EIO within
//! `--timeout`, then the same read works on the same open file), a push through the daemon
//! cut by `kill -9` and retried, and the daemon stopped while the registry is still down. Every
//! test ends with the daemon exiting on SIGTERM and the mountpoint released.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{Auth, Client, Image};
use crate::crash::noise;

const ADMIN: &str = "admin";
const PW: &str = "fault-admin-pw";
/// The mount's `--timeout`, in seconds.
const TIMEOUT: u64 = 2;
/// How much later than `--timeout` an EIO may come (retries, a loaded machine).
const SLACK: Duration = Duration::from_secs(8);
/// Longest wait for a process to start, mount, or end.
const STARTUP: Duration = Duration::from_secs(20);

/// Reads the first stdout line of `child` within [`STARTUP`]; the reader is kept so later
/// output never meets a closed pipe.
fn first_line(child: &mut Child, log: &Path) -> (String, BufReader<ChildStdout>) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let r = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send((r, reader));
    });
    match rx.recv_timeout(STARTUP) {
        Ok((Ok(line), reader)) if !line.is_empty() => (line.trim().to_string(), reader),
        other => {
            let _ = child.kill();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("no URL on stdout ({:?})\n{log}", other.map(|(r, _)| r));
        }
    }
}

fn wait_exit(child: &mut Child, timeout: Duration, log: &Path) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("still running after {timeout:?}\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `regfs serve` process over local storage; SIGKILLed on drop if still running.
struct Serve {
    child: Child,
    url: String,
    addr: SocketAddr,
    log: PathBuf,
    _stdout: BufReader<ChildStdout>,
}

impl Serve {
    fn start(storage: &Path, listen: &str, log: PathBuf) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_regfs"))
            .arg("serve")
            .arg("--storage")
            .arg(storage)
            .args([
                "--listen",
                listen,
                "--admin-user",
                ADMIN,
                "--admin-password",
                PW,
            ])
            .args(["--token-secret", "fault-token-secret-fault-token-secret"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let (url, stdout) = first_line(&mut child, &log);
        let addr = url.trim_start_matches("http://").parse().unwrap();
        Serve {
            child,
            url,
            addr,
            log,
            _stdout: stdout,
        }
    }

    /// Serves `storage` again on the address of the killed one, once it can be bound.
    fn restart(addr: SocketAddr, storage: &Path, log: PathBuf) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpListener::bind(addr).is_err() {
            assert!(Instant::now() < deadline, "{addr} stays taken");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self::start(storage, &addr.to_string(), log)
    }

    fn kill_9(mut self) {
        self.child.kill().unwrap();
        let status = wait_exit(&mut self.child, STARTUP, &self.log);
        assert!(!status.success(), "{status}");
    }

    fn client(&self) -> Client {
        Client {
            base: self.url.clone(),
            http: reqwest::Client::new(),
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether something is mounted at `path` (canonical), from /proc/self/mountinfo.
fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*want))
}

/// Whether `pid` handles SIGTERM itself (bit 15 of SigCgt), so a SIGTERM asks it to stop.
fn catches_sigterm(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << 14) != 0)
}

/// A `regfs mount` daemon on its own temporary mountpoint; killed and lazily unmounted on drop.
struct MountDaemon {
    child: Child,
    mountpoint: PathBuf,
    log: PathBuf,
    _stdout: BufReader<ChildStdout>,
    _home: tempfile::TempDir,
    /// Dropped last, once nothing is mounted on it.
    _dir: tempfile::TempDir,
}

impl MountDaemon {
    /// `regfs mount <dir> --registry <url> <args>`, mounted and handling signals.
    fn start(url: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mountpoint = std::fs::canonicalize(dir.path()).unwrap();
        let home = tempfile::tempdir().unwrap();
        let log = home.path().join("mount.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_regfs"))
            .arg("mount")
            .arg(&mountpoint)
            .args(["--registry", url, "--timeout", &TIMEOUT.to_string()])
            .args(["--ttl", "0.2"])
            .args(args)
            .env("HOME", home.path())
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGFS_USER")
            .env_remove("REGFS_PASSWORD")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let (_, stdout) = first_line(&mut child, &log);
        let pid = child.id();
        let mut m = MountDaemon {
            child,
            mountpoint,
            log,
            _stdout: stdout,
            _home: home,
            _dir: dir,
        };
        let deadline = Instant::now() + STARTUP;
        while !(is_mounted(&m.mountpoint) && catches_sigterm(pid)) {
            if let Some(status) = m.child.try_wait().unwrap() {
                panic!("exited before mounting: {status}\n{}", m.log());
            }
            assert!(Instant::now() < deadline, "not mounted\n{}", m.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; the daemon must exit with `code` and leave the mountpoint released.
    fn stop(&mut self, code: i32) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = wait_exit(&mut self.child, Duration::from_secs(15), &self.log);
        assert_eq!(status.code(), Some(code), "{status}\n{}", self.log());
        assert!(!is_mounted(&self.mountpoint), "still mounted after exit");
        assert!(
            std::fs::read_dir(&self.mountpoint)
                .unwrap()
                .next()
                .is_none(),
            "an ordinary empty directory again"
        );
    }
}

impl Drop for MountDaemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mountpoint)
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn admin() -> Auth {
    Auth::basic(ADMIN, PW)
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
    /// A read at `offset` failed with `errno` after `took`.
    Failed {
        offset: usize,
        errno: Option<i32>,
        took: Duration,
    },
    /// Reached the end without an error.
    Finished,
    /// The rest, from the failed offset on, read back exact on the same open file.
    Resumed,
}

#[test]
fn a_read_in_progress_when_the_server_is_killed_fails_with_eio_then_resumes() {
    let storage = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let server = Serve::start(storage.path(), "127.0.0.1:0", logs.path().join("s0.log"));
    let addr = server.addr;
    // Four times what the mount may cache (three quarters of 16 MiB), so most of it can only
    // come from the server.
    let img = image("fault-read", 48 * 1024 * 1024);
    let rt = runtime();
    rt.block_on(server.client().push_repo(
        "library/big",
        std::slice::from_ref(&img),
        "latest",
        &admin(),
    ));
    let mut m = MountDaemon::start(&server.url, &["--cache-size", "16777216"]);
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
            let t = Instant::now();
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
                    let took = t.elapsed();
                    let errno = e.raw_os_error();
                    report_tx
                        .send(Report::Failed {
                            offset,
                            errno,
                            took,
                        })
                        .unwrap();
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
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no report ({what})"))
    };

    assert!(matches!(next("paused"), Report::Paused));
    server.kill_9();
    go.send(()).unwrap();
    match next("failed") {
        Report::Failed {
            offset,
            errno,
            took,
        } => {
            assert_eq!(errno, Some(libc::EIO), "at {offset}");
            let limit = Duration::from_secs(TIMEOUT) + SLACK;
            assert!(took < limit, "EIO after {took:?}, limit {limit:?}");
        }
        other => panic!("the read went on without the server: {other:?}"),
    }
    assert!(is_mounted(&m.mountpoint), "the mount stays up");

    let server = Serve::restart(addr, storage.path(), logs.path().join("s1.log"));
    go.send(()).unwrap();
    assert!(matches!(next("resumed"), Report::Resumed));
    reader.join().unwrap();
    // A fresh open reads it whole too.
    let layer = m.path(&format!("images/{}/layer", img.id));
    assert!(std::fs::read(&layer).unwrap() == img.layer);
    m.stop(0);
    drop(server);
}

#[test]
fn a_push_through_the_daemon_cut_by_kill_9_fails_then_a_retry_succeeds() {
    let storage = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let server = Serve::start(storage.path(), "127.0.0.1:0", logs.path().join("s0.log"));
    let addr = server.addr;
    let mut m = MountDaemon::start(&server.url, &["--user", ADMIN, "--password", PW]);
    let img = image("fault-push", 24 * 1024 * 1024);
    let dir = m.path(&format!("images/{}", img.id));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("json"), &img.json).unwrap();
    let mut f = std::fs::File::create(dir.join("layer")).unwrap();
    let half = img.layer.len() / 2;
    f.write_all(&img.layer[..half]).unwrap();
    server.kill_9();
    // The rest goes nowhere: the failure shows at write or, at the latest, at fsync.
    let rest = f.write_all(&img.layer[half..]);
    let synced = f.sync_all();
    assert!(
        rest.is_err() || synced.is_err(),
        "the failed push was reported"
    );
    drop(f);

    let server = Serve::restart(addr, storage.path(), logs.path().join("s1.log"));
    let c = server.client();
    let rt = runtime();
    let r = rt.block_on(c.get(&format!("/v1/images/{}/json", img.id), &Auth::None));
    assert!(
        r.status == 400 || r.status == 404,
        "nothing served: {}",
        r.status
    );
    // The retry: write the layer again, and see the push's result at fsync.
    let mut f = std::fs::File::create(dir.join("layer")).unwrap();
    f.write_all(&img.layer).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let r = rt.block_on(c.get(&format!("/v1/images/{}/layer", img.id), &Auth::None));
    assert_eq!(r.status, 200);
    assert!(r.body == img.layer);
    // Nothing left uncommitted: a clean stop, exit code 0.
    m.stop(0);
    drop(server);
}

#[test]
fn stopping_the_daemon_while_the_registry_is_down_releases_the_mountpoint() {
    let storage = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let server = Serve::start(storage.path(), "127.0.0.1:0", logs.path().join("s0.log"));
    let img = image("fault-stop", 8 * 1024 * 1024);
    let rt = runtime();
    rt.block_on(server.client().push_repo(
        "library/down",
        std::slice::from_ref(&img),
        "latest",
        &admin(),
    ));
    let mut m = MountDaemon::start(&server.url, &[]);
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
    m.stop(0);
    let result = done
        .recv_timeout(Duration::from_secs(15))
        .expect("the reader returns once the daemon is gone");
    assert!(result.is_err(), "nothing to read without the server");
}
