//! `regfs mount` start-up through the built binary (issue 18): a mountpoint that is not empty
//! or already mounted is refused before anything starts, unless `--allow-non-empty`; a
//! registry where nothing listens, or one that refuses the credentials, fails the start with a
//! message saying which, unless `--no-check`; and a mountpoint whose name has spaces, tabs or
//! backslashes (escaped in /proc/self/mountinfo) mounts with `--daemon` (issue 17, item 8).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::process::{
    MountProcess, alive, cmdline, send_signal, wait_until, without_outside_config,
};
use crate::common::{ALICE, ALICE_PASSWORD, Image, TestServer, runtime};

/// Whether something is mounted at `path` (canonical), from /proc/self/mountinfo with its
/// octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash) decoded.
fn is_mounted(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let info = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    info.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .any(|field| regfs::mount::run::unescape_mountinfo(field) == path.as_os_str().as_bytes())
}

/// `regfs mount <mountpoint> <args>` run to its end (at most [`RUN_LIMIT`]: one still running
/// then is stopped with SIGTERM, which unmounts, and the test fails), with a HOME of its own
/// and none of the variables that would configure it from outside.
fn mount_output(mountpoint: &Path, args: &[&str], cwd: Option<&Path>) -> Output {
    let home = tempfile::tempdir().unwrap();
    let (out, err) = (home.path().join("stdout"), home.path().join("stderr"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regfs"));
    cmd.arg("mount")
        .arg(mountpoint)
        .args(args)
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    without_outside_config(&mut cmd);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            send_signal(child.id(), "TERM");
            let _ = child.wait();
            panic!(
                "still running after {RUN_LIMIT:?} (not refused?)\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

/// Longest a start that should fail may run (a bound for a hang, not a timing check).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Asserts a failed start: exit code 2, nothing announced on stdout, nothing mounted, and a
/// message on stderr holding every one of `words`.
fn assert_refused(out: &Output, mountpoint: &Path, words: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{:?}\n{err}", out.status);
    assert!(
        out.stdout.is_empty(),
        "nothing started, so no URL: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    for w in words {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
    assert!(!is_mounted(mountpoint));
    err
}

/// A URL where nothing listens (a port just released).
fn nothing_listening() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn canonical_tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = std::fs::canonicalize(dir.path()).unwrap();
    (dir, path)
}

#[test]
fn a_non_empty_mountpoint_is_refused_before_the_embedded_registry_starts() {
    let (_dir, mp) = canonical_tempdir();
    std::fs::write(mp.join("keep.txt"), "mine").unwrap();
    let out = mount_output(&mp, &["--memory", "--listen", "127.0.0.1:0"], None);
    assert_refused(
        &out,
        &mp,
        &[&mp.to_string_lossy(), "not empty", "--allow-non-empty"],
    );
    assert_eq!(
        std::fs::read_to_string(mp.join("keep.txt")).unwrap(),
        "mine"
    );
    // --daemon checks before it detaches, so the user sees the reason.
    let out = mount_output(
        &mp,
        &["--memory", "--listen", "127.0.0.1:0", "--daemon"],
        None,
    );
    assert_refused(&out, &mp, &["not empty", "--allow-non-empty"]);
}

#[test]
fn allow_non_empty_mounts_over_a_directory_and_leaves_its_contents() {
    let (_dir, mp) = canonical_tempdir();
    std::fs::write(mp.join("keep.txt"), "mine").unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_regfs"))
        .arg("mount")
        .arg(&mp)
        .args(["--memory", "--listen", "127.0.0.1:0", "--allow-non-empty"])
        .env("HOME", home.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_until("the mount", Duration::from_secs(20), || {
        is_mounted(&mp) || child.try_wait().unwrap().is_some()
    });
    let mut names: Vec<String> = std::fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["images", "repositories", "search"]);
    send_signal(pid, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&mp));
    assert_eq!(
        std::fs::read_to_string(mp.join("keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn an_already_mounted_mountpoint_is_refused() {
    let mut m = MountProcess::start(&["--memory", "--listen", "127.0.0.1:0"], &[]);
    m.wait_ready();
    let out = mount_output(
        &m.mountpoint,
        &["--memory", "--listen", "127.0.0.1:0"],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{:?}", out.status);
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    for w in [
        &*m.mountpoint.to_string_lossy(),
        "already a mount point",
        "unmount it first",
    ] {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
    // The first mount is unharmed.
    assert_eq!(std::fs::read_dir(&m.mountpoint).unwrap().count(), 3);
    m.stop();
}

#[test]
fn a_registry_where_nothing_listens_fails_the_start_and_says_so() {
    let (_dir, mp) = canonical_tempdir();
    let url = nothing_listening();
    let out = mount_output(&mp, &["--registry", &url, "--timeout", "2"], None);
    assert_refused(&out, &mp, &["registry unreachable at", &url, "--no-check"]);
    let out = mount_output(
        &mp,
        &["--registry", &url, "--timeout", "2", "--daemon"],
        None,
    );
    assert_refused(&out, &mp, &["registry unreachable at", &url]);
}

#[test]
fn no_check_mounts_with_nothing_listening() {
    let url = nothing_listening();
    let mut m = MountProcess::start(&["--registry", &url, "--no-check", "--timeout", "1"], &[]);
    assert_eq!(m.url, url);
    m.wait_ready();
    assert_eq!(std::fs::read_dir(&m.mountpoint).unwrap().count(), 3);
    m.stop();
}

#[test]
fn wrong_credentials_fail_the_start_naming_the_user() {
    let server = TestServer::start();
    let img = Image::new("startup-creds", 100);
    runtime().block_on(server.client().push_as_new_user(
        (ALICE, ALICE_PASSWORD),
        "alice/app",
        std::slice::from_ref(&img),
        "latest",
    ));
    let (_dir, mp) = canonical_tempdir();
    let args = [
        "--registry",
        &server.url,
        "--user",
        ALICE,
        "--password",
        "wrong-password",
    ];
    let out = mount_output(&mp, &args, None);
    assert_refused(
        &out,
        &mp,
        &["credentials refused", &server.url, "\"alice\""],
    );
    // The right ones mount.
    let mut m = MountProcess::start(
        &[
            "--registry",
            &server.url,
            "--user",
            ALICE,
            "--password",
            ALICE_PASSWORD,
        ],
        &[],
    );
    m.wait_ready();
    assert_eq!(
        std::fs::read_to_string(m.path("repositories/alice/app/tags/latest")).unwrap(),
        format!("{}\n", img.id)
    );
    m.stop();
}

/// Issue 17 item 8: mountinfo writes a space as `\040` (a tab `\011`, a backslash `\134`);
/// `--daemon` waits for the mount to appear there, so it must decode them.
#[test]
fn daemon_mounts_on_a_directory_with_spaces_tabs_and_backslashes_in_its_name() {
    let (_parent, parent) = canonical_tempdir();
    let name = "dir with space\tand\\backslash";
    let mp = parent.join(name);
    std::fs::create_dir(&mp).unwrap();
    let _stop = StopDaemon(mp.clone());
    // A relative path, as typed in a shell: regfs mount "dir with space" --daemon.
    let out = mount_output(
        Path::new(name),
        &["--memory", "--listen", "127.0.0.1:0", "--daemon"],
        Some(&parent),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{:?}\n{err}", out.status);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("http://127.0.0.1:"),
        "the URL first"
    );
    assert!(is_mounted(&mp), "mounted when the command returns");
    let mut names: Vec<String> = std::fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["images", "repositories", "search"]);
}

/// The daemon serving `mountpoint`, if one runs: a `regfs mount` whose command line names
/// the mountpoint's last component.
fn daemon_of(mountpoint: &Path) -> Option<u32> {
    let last = mountpoint.file_name()?.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| {
            alive(pid)
                && pid != std::process::id()
                && cmdline(pid).is_some_and(|args| {
                    args.iter().any(|a| a == "mount") && args.iter().any(|a| a.ends_with(&last))
                })
        })
}

/// Stops the daemon serving a mountpoint of the test's own, if one runs (SIGTERM), and waits
/// for its mount to go.
struct StopDaemon(PathBuf);

impl Drop for StopDaemon {
    fn drop(&mut self) {
        if let Some(pid) = daemon_of(&self.0) {
            send_signal(pid, "TERM");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while (alive(pid) || is_mounted(&self.0)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}
