//! The built `regfs` binary as child processes: spawned with the first stdout line (the URL)
//! read under a deadline, signalled, killed and reaped; and, for the mount suites, what /proc
//! says about mounts, processes and signal handlers.
//!
//! Every handle kills what still runs when it is dropped (a mount handle also lazily unmounts
//! what is still mounted), so a failed test leaves nothing behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Client;

/// Longest wait for a process to start, mount, or end.
pub const STARTUP: Duration = Duration::from_secs(20);

/// The token secret of every `regfs serve` process: the same across restarts on one storage,
/// so tokens it issued stay valid.
const TOKEN_SECRET: &str = "process-token-secret-process-token-secret";

/// A child process and the file its stderr goes to; killed and reaped on drop.
pub struct Process {
    child: Child,
    /// The first line it printed on stdout, trimmed.
    pub line: String,
    log: PathBuf,
    /// Kept open so later output never meets a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Process {
    /// Spawns `cmd` with stdin closed, stdout piped and stderr into `log`, and reads its first
    /// stdout line within [`STARTUP`]; panics with the log if none comes.
    pub fn start(cmd: &mut Command, log: PathBuf) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // A thread reads the line and hands the reader back, so a silent child cannot hang
        // the test past the deadline.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let r = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send((r, reader));
        });
        match rx.recv_timeout(STARTUP) {
            Ok((Ok(line), reader)) if !line.is_empty() => Process {
                child,
                line: line.trim().to_string(),
                log,
                _stdout: reader,
            },
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no line on stdout within {STARTUP:?} ({:?})\n{}",
                    other.map(|(r, _)| r),
                    read_log(&log)
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote on stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Its exit status, if it has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for it to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {timeout:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reap it: it must end by the signal.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        let status = self.wait_exit(STARTUP);
        assert!(!status.success(), "killed, not exited: {status}");
    }

    /// `kill -<sig>` (`TERM`, `INT`, ...).
    #[cfg(feature = "fuse-tests")]
    pub fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig);
    }

    /// Kills it if it still runs, and reaps it: what drop does, for an owner that must do it
    /// before its own cleanup.
    pub fn end(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.end();
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A `regfs serve` process over local storage, with an administrator; SIGKILLed on drop if
/// still running.
pub struct ServeProcess {
    process: Process,
    pub url: String,
    pub addr: SocketAddr,
}

impl ServeProcess {
    /// `regfs serve --storage <storage> --listen <listen>` with `admin` (user, password) as its
    /// administrator; stderr goes into `log`.
    pub fn start(storage: &Path, listen: &str, admin: (&str, &str), log: PathBuf) -> Self {
        Self::start_with(storage, listen, admin, log, &[])
    }

    /// [`ServeProcess::start`] with more arguments for `regfs serve`.
    pub fn start_with(
        storage: &Path,
        listen: &str,
        admin: (&str, &str),
        log: PathBuf,
        args: &[&str],
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regfs"));
        cmd.arg("serve")
            .arg("--storage")
            .arg(storage)
            .args(["--listen", listen, "--admin-user", admin.0])
            .args(["--admin-password", admin.1])
            .args(["--token-secret", TOKEN_SECRET])
            .args(args)
            .env_remove("RUST_LOG");
        let process = Process::start(&mut cmd, log);
        assert!(
            process.line.starts_with("http://"),
            "no URL on stdout ({:?})\n{}",
            process.line,
            process.log()
        );
        let url = process.line.clone();
        let addr = url.trim_start_matches("http://").parse().unwrap();
        ServeProcess { process, url, addr }
    }

    /// Serves `storage` again on the address of a killed server, once it can be bound.
    #[cfg(feature = "fuse-tests")]
    pub fn restart(addr: SocketAddr, storage: &Path, admin: (&str, &str), log: PathBuf) -> Self {
        wait_free(addr);
        Self::start(storage, &addr.to_string(), admin, log)
    }

    /// SIGKILL, and reap it.
    pub fn kill_9(mut self) {
        self.process.kill_9();
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// A `/proc/<pid>/status` field given in kB (`VmRSS:`, `VmHWM:`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// A `/proc/<pid>/status` field given in kB, in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    status_bytes(pid, field) / 1024
}

/// Starts the peak resident memory (`VmHWM`) of `pid` afresh from what it holds now, so a peak
/// read later belongs to what happened in between.
pub fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
#[cfg(feature = "fuse-tests")]
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `addr` (a killed or stopped server's) can be bound again.
#[cfg(feature = "fuse-tests")]
pub fn wait_free(addr: SocketAddr) {
    wait_until(
        "the old address to be free",
        Duration::from_secs(10),
        || std::net::TcpListener::bind(addr).is_ok(),
    );
}

/// Whether something is mounted at `path` (canonical), from /proc/self/mountinfo.
#[cfg(feature = "fuse-tests")]
pub fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*want))
}

/// `kill -<sig> <pid>` (the crate denies unsafe code, so no libc::kill).
#[cfg(feature = "fuse-tests")]
pub fn send_signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

#[cfg(feature = "fuse-tests")]
pub const SIGINT: u32 = 2;
#[cfg(feature = "fuse-tests")]
pub const SIGTERM: u32 = 15;

/// Whether `pid` has a handler installed for signal `sig` (from /proc/<pid>/status), so that
/// signal asks it to stop rather than kills it.
#[cfg(feature = "fuse-tests")]
pub fn catches(pid: u32, sig: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

/// Whether process `pid` exists and is not a zombie.
#[cfg(feature = "fuse-tests")]
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The command line of `pid`, if it still exists.
#[cfg(feature = "fuse-tests")]
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// A `regfs mount` process on its own temporary mountpoint, with its own empty HOME; killed
/// and unmounted on drop.
#[cfg(feature = "fuse-tests")]
pub struct MountProcess {
    process: Process,
    /// The first line the process printed.
    pub url: String,
    /// Canonical path of the mountpoint.
    pub mountpoint: PathBuf,
    /// A `--daemon` run's detached process, once found.
    pub daemon: Option<u32>,
    /// HOME of the process and the log file; removed after the mountpoint is released.
    _home: tempfile::TempDir,
    /// Dropped last, once nothing is mounted on it.
    _dir: tempfile::TempDir,
}

#[cfg(feature = "fuse-tests")]
/// Clears what would configure a `regfs` process from outside its test: every `REGFS_*`
/// variable, the data directory, Docker's config and the log filter.
pub fn without_outside_config(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("XDG_DATA_HOME")
        .env_remove("DOCKER_CONFIG")
        .env_remove("RUST_LOG");
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("REGFS_") {
            cmd.env_remove(var);
        }
    }
    cmd
}

#[cfg(feature = "fuse-tests")]
impl MountProcess {
    /// Starts `regfs mount <new dir> <args>` with `envs` and none of the variables that would
    /// configure it from outside the test, and reads the URL line.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mountpoint = std::fs::canonicalize(dir.path()).unwrap();
        let home = tempfile::tempdir().unwrap();
        let log = home.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regfs"));
        cmd.arg("mount")
            .arg(&mountpoint)
            .args(args)
            .env("HOME", home.path());
        without_outside_config(&mut cmd);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let process = Process::start(&mut cmd, log);
        MountProcess {
            url: process.line.clone(),
            process,
            mountpoint,
            daemon: None,
            _home: home,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Its exit status, if it has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.process.try_wait()
    }

    /// Waits until the mount is in place (and the process still runs).
    pub fn wait_mounted(&mut self) {
        let deadline = Instant::now() + STARTUP;
        while !is_mounted(&self.mountpoint) {
            if let Some(status) = self.try_wait() {
                panic!("exited before mounting: {status}\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "not mounted\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the process handles SIGTERM and SIGINT itself, so a signal is a request to
    /// stop rather than a kill.
    pub fn wait_signal_handlers(&self) {
        let pid = self.pid();
        wait_until("signal handlers", STARTUP, || {
            catches(pid, SIGTERM) && catches(pid, SIGINT)
        });
    }

    /// Mounted and ready to take a signal.
    pub fn wait_ready(&mut self) {
        self.wait_mounted();
        self.wait_signal_handlers();
    }

    pub fn signal(&self, sig: &str) {
        self.process.signal(sig);
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process.wait_exit(timeout)
    }

    /// SIGTERM, then a clean exit with the mountpoint released.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(15));
        assert_eq!(status.code(), Some(0), "{status}\n{}", self.log());
        assert!(!is_mounted(&self.mountpoint), "still mounted after exit");
    }
}

#[cfg(feature = "fuse-tests")]
impl Drop for MountProcess {
    fn drop(&mut self) {
        self.process.end();
        if let Some(pid) = self.daemon {
            // Only the process we started: its command line still names our mountpoint.
            let ours = cmdline(pid).is_some_and(|args| {
                args.iter()
                    .any(|a| *a == *self.mountpoint.to_string_lossy())
            });
            if ours && alive(pid) {
                send_signal(pid, "KILL");
                let deadline = Instant::now() + Duration::from_secs(5);
                while alive(pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mountpoint)
                .stderr(Stdio::null())
                .status();
        }
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .stderr(Stdio::null())
                .status();
        }
    }
}
