//! The `regfs mount` process, run as the built binary over real FUSE mounts in temporary
//! directories: the embedded default, the URL on stdout, `--daemon`, SIGTERM/SIGINT and
//! `fusermount3 -u`, credentials, and a registry outage under a live mount.
//!
//! Every test owns its processes and mountpoints: [`MountProcess`] kills what is still running
//! and lazily unmounts what is still mounted when it is dropped, so a failed test leaves
//! nothing behind.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::process::{
    MountProcess, STARTUP, alive, cmdline, is_mounted, status_kib, wait_free, wait_until,
};
use crate::common::{ALICE, ALICE_PASSWORD, Auth, Client, Image, TestServer, runtime};

/// Admin password given to embedded registries.
const PW: &str = "mount-admin-pw";

/// Entry names of a directory, sorted; the first error of opening or reading it.
fn ls(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        v.push(e?.file_name().to_string_lossy().into_owned());
    }
    v.sort();
    Ok(v)
}

fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("not an OS error: {e}")),
    }
}

/// Whether something accepts connections at `url`'s address.
fn answers(url: &str) -> bool {
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Processes other than `except` whose command line names `mountpoint` (the daemon a
/// `--daemon` run leaves behind).
fn processes_for(mountpoint: &Path, except: u32) -> Vec<u32> {
    let want = mountpoint.to_string_lossy();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == except || !alive(pid) {
            continue;
        }
        if let Some(args) = cmdline(pid) {
            if args.iter().any(|a| a == "mount") && args.iter().any(|a| *a == *want) {
                found.push(pid);
            }
        }
    }
    found
}

/// Arguments of an embedded mount on a free port with a known admin.
fn embedded(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec![
        "--listen",
        "127.0.0.1:0",
        "--admin-user",
        "admin",
        "--admin-password",
        PW,
        "--ttl",
        "0.2",
    ];
    v.extend_from_slice(extra);
    v
}

fn embedded_admin() -> Auth {
    Auth::basic("admin", PW)
}

/// `fusermount3 -u`, as a user types it. A process that another test forks at the moment this
/// one holds a descriptor in the mount keeps a copy of it until its `exec`, and the unmount is
/// "busy" for that instant: that (and only that) is tried again.
fn fusermount_u(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return;
        }
        assert!(
            stderr.contains("busy") && Instant::now() < deadline,
            "fusermount3 -u: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn embedded_default_prints_its_url_and_mounts_what_is_pushed() {
    let mut m = MountProcess::start(&embedded(&["--memory"]), &[]);
    assert!(m.url.starts_with("http://127.0.0.1:"), "{}", m.url);
    let port: u16 = m.url.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);
    m.wait_mounted();
    assert_eq!(
        ls(&m.mountpoint).unwrap(),
        ["images", "repositories", "search"]
    );
    assert!(ls(&m.path("repositories")).unwrap().is_empty());

    // Push through the printed URL, with the admin credentials.
    let rt = runtime();
    let c = Client::new(&m.url);
    let base = Image::new("mp-base", 100_000);
    let child = Image::child("mp-child", &base, 1_000_003);
    rt.block_on(async {
        let ping = c.get("/v1/_ping", &Auth::None).await;
        assert_eq!(ping.status, 200);
        c.push_repo(
            "library/hello",
            &[base.clone(), child.clone()],
            "latest",
            &embedded_admin(),
        )
        .await;
        assert_eq!(c.register("alice", "alice-pass").await.status, 201);
        c.push_repo(
            "alice/app",
            std::slice::from_ref(&base),
            "v1",
            &Auth::basic("alice", "alice-pass"),
        )
        .await;
    });

    // Visible once the TTL has passed.
    wait_until("the pushed repositories", Duration::from_secs(5), || {
        ls(&m.path("repositories")).ok().as_deref() == Some(&["alice".into(), "library".into()])
    });
    assert_eq!(ls(&m.path("repositories/library")).unwrap(), ["hello"]);
    let tag = std::fs::read_to_string(m.path("repositories/library/hello/tags/latest")).unwrap();
    assert_eq!(tag, format!("{}\n", child.id));
    let tag = std::fs::read_to_string(m.path("repositories/alice/app/tags/v1")).unwrap();
    assert_eq!(tag, format!("{}\n", base.id));
    let layer = m.path(&format!("images/{}/layer", child.id));
    assert!(std::fs::read(&layer).unwrap() == child.layer);
    assert_eq!(
        std::fs::read(m.path(&format!("images/{}/json", child.id))).unwrap(),
        child.json
    );
    let mut images = ls(&m.path("images")).unwrap();
    images.sort();
    let mut want = vec![base.id.clone(), child.id.clone()];
    want.sort();
    assert_eq!(images, want);

    // Ownership is the mounting user; modes as documented.
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").unwrap();
    let meta = std::fs::metadata(&layer).unwrap();
    assert_eq!(meta.len(), child.layer.len() as u64);
    assert_eq!(meta.mode() & 0o777, 0o444);
    assert_eq!((meta.uid(), meta.gid()), (me.uid(), me.gid()));
    let meta = std::fs::metadata(m.path("repositories/library/hello/tags/latest")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o644);
    let meta = std::fs::metadata(m.path("repositories/library")).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o777, 0o755);

    // The mount acts as the embedded registry's admin: it may change library/*.
    std::fs::create_dir(m.path("repositories/library/made")).unwrap();
    // Empty to the thread that made it (as `cp -r` expects) until it makes `tags/`.
    std::fs::create_dir(m.path("repositories/library/made/tags")).unwrap();
    std::fs::write(
        m.path("repositories/library/made/tags/v1"),
        format!("{}\n", base.id),
    )
    .unwrap();
    let r = rt.block_on(c.get("/v1/repositories/library/made/tags", &Auth::None));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["v1"], base.id.as_str());

    m.stop();
    assert!(
        !answers(&m.url),
        "the embedded registry stops with the mount"
    );
}

#[test]
fn read_only_mounts_refuse_changes_with_erofs() {
    let mut m = MountProcess::start(&embedded(&["--memory", "--read-only"]), &[]);
    m.wait_ready();
    let img = Image::new("mp-ro", 1000);
    let rt = runtime();
    rt.block_on(Client::new(&m.url).push_repo(
        "library/ro",
        std::slice::from_ref(&img),
        "latest",
        &embedded_admin(),
    ));
    let tag = m.path("repositories/library/ro/tags/latest");
    wait_until("the pushed tag", Duration::from_secs(5), || tag.exists());
    assert_eq!(
        errno_of(std::fs::create_dir(m.path("repositories/library/other"))),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::fs::write(
            m.path("repositories/library/ro/tags/v2"),
            &img.id
        )),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::fs::OpenOptions::new().append(true).open(&tag)),
        libc::EROFS
    );
    assert_eq!(errno_of(std::fs::remove_file(&tag)), libc::EROFS);
    // Reading is unaffected.
    assert_eq!(
        std::fs::read_to_string(&tag).unwrap(),
        format!("{}\n", img.id)
    );
    m.stop();
}

#[test]
fn sigterm_and_sigint_end_the_process_with_code_0_and_release_the_mountpoint() {
    let storage = tempfile::tempdir().unwrap();
    let storage_arg = storage.path().to_str().unwrap();
    let img = Image::new("mp-persist", 12_345);
    for (round, sig) in ["TERM", "INT"].into_iter().enumerate() {
        let mut args = embedded(&[]);
        args.extend_from_slice(&["--storage", storage_arg]);
        let mut m = MountProcess::start(&args, &[]);
        m.wait_ready();
        if round == 0 {
            let rt = runtime();
            let c = Client::new(&m.url);
            rt.block_on(c.push_repo(
                "library/kept",
                std::slice::from_ref(&img),
                "latest",
                &embedded_admin(),
            ));
        }
        // The embedded registry keeps its data in --storage across runs.
        wait_until("the pushed image", Duration::from_secs(5), || {
            std::fs::read(m.path(&format!("images/{}/layer", img.id))).ok()
                == Some(img.layer.clone())
        });
        assert_eq!(ls(&m.path("repositories/library")).unwrap(), ["kept"]);

        m.signal(sig);
        // A hang guard, not a timing: an idle mount has nothing to wait for on the way out.
        let status = m.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(0), "SIG{sig}: {status}\n{}", m.log());
        assert!(!is_mounted(&m.mountpoint), "SIG{sig}: still mounted");
        assert!(
            ls(&m.mountpoint).unwrap().is_empty(),
            "an ordinary empty directory again"
        );
        assert!(!answers(&m.url));
    }
}

#[test]
fn sigterm_with_a_busy_mountpoint_still_releases_it() {
    let mut m = MountProcess::start(&embedded(&["--memory"]), &[]);
    m.wait_ready();
    let img = Image::new("mp-busy", 50_000);
    let rt = runtime();
    rt.block_on(Client::new(&m.url).push_repo(
        "library/busy",
        std::slice::from_ref(&img),
        "latest",
        &embedded_admin(),
    ));
    // Hold a file open in the mount: a plain unmount fails with EBUSY.
    let layer = m.path(&format!("images/{}/layer", img.id));
    wait_until("the image", Duration::from_secs(5), || layer.exists());
    let mut held = std::fs::File::open(&layer).unwrap();
    let mut first = [0u8; 100];
    held.read_exact(&mut first).unwrap();
    assert_eq!(first[..], img.layer[..100]);
    // And a process whose working directory is inside it.
    let _cwd_holder = KillOnDrop(
        Command::new("sleep")
            .arg("30")
            .current_dir(m.path("repositories"))
            .spawn()
            .unwrap(),
    );

    m.signal("TERM");
    let status = m.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}\n{}", m.log());
    assert!(!is_mounted(&m.mountpoint), "lazily detached");
    drop(held);
}

/// A helper process, killed when the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn fusermount_u_from_outside_ends_the_process_cleanly() {
    // Verbose, so that a warning about the unmount would show.
    let mut m = MountProcess::start(&embedded(&["--memory", "-v"]), &[]);
    m.wait_ready();
    assert_eq!(ls(&m.mountpoint).unwrap().len(), 3);
    let url = m.url.clone();
    assert!(answers(&url));
    fusermount_u(&m.mountpoint);
    let status = m.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}\n{}", m.log());
    assert!(!is_mounted(&m.mountpoint));
    assert!(!answers(&url), "the embedded registry stopped too");
    assert!(!m.log().contains("WARN"), "{}", m.log());
}

#[test]
fn daemon_returns_once_mounted_and_serves_until_unmounted() {
    let mut m = MountProcess::start(&embedded(&["--memory", "--daemon"]), &[]);
    assert!(m.url.starts_with("http://127.0.0.1:"), "{}", m.url);
    // The command itself returns, successfully, with the mount in place.
    let status = m.wait_exit(STARTUP);
    assert_eq!(status.code(), Some(0), "{status}\n{}", m.log());
    assert!(
        is_mounted(&m.mountpoint),
        "mounted when the command returns"
    );
    let daemons = processes_for(&m.mountpoint, m.pid());
    assert_eq!(daemons.len(), 1, "one daemon: {daemons:?}");
    let daemon = daemons[0];
    m.daemon = Some(daemon);
    // It is detached from our process group (a Ctrl-C here is not for it).
    let stat = std::fs::read_to_string(format!("/proc/{daemon}/stat")).unwrap();
    let pgrp: u32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pgrp, daemon, "its own process group");

    // The daemon keeps serving, both the registry and the mount.
    assert!(answers(&m.url));
    let img = Image::new("mp-daemon", 70_000);
    let rt = runtime();
    rt.block_on(Client::new(&m.url).push_repo(
        "library/daemon",
        std::slice::from_ref(&img),
        "latest",
        &embedded_admin(),
    ));
    wait_until("the pushed repository", Duration::from_secs(5), || {
        ls(&m.path("repositories/library")).ok().as_deref() == Some(&["daemon".into()])
    });
    assert!(std::fs::read(m.path(&format!("images/{}/layer", img.id))).unwrap() == img.layer);

    // fusermount3 -u ends it.
    fusermount_u(&m.mountpoint);
    wait_until("the daemon to exit", Duration::from_secs(10), || {
        !alive(daemon)
    });
    assert!(!is_mounted(&m.mountpoint));
    assert!(!answers(&m.url), "the daemon's registry stopped");
}

#[test]
fn daemon_reports_a_mount_that_fails() {
    let missing = tempfile::tempdir().unwrap();
    let gone = missing.path().join("no-such-dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regfs"));
    cmd.arg("mount")
        .arg(&gone)
        .args(embedded(&["--memory", "--daemon"]))
        .env("HOME", missing.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // A hang guard below the 60 s a daemon's parent waits for a mount that never comes: the
    // failure must be reported, not waited out.
    wait_until(
        "the daemon's parent to exit",
        Duration::from_secs(45),
        || matches!(child.try_wait(), Ok(Some(_))),
    );
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{:?}", out.status);
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    // The daemon that failed exits too (it may take a moment).
    wait_until("no daemon left behind", Duration::from_secs(10), || {
        processes_for(&gone, 0).is_empty()
    });
}

#[test]
fn a_missing_mountpoint_is_an_error_exit() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("no-such-dir");
    let out = Command::new(env!("CARGO_BIN_EXE_regfs"))
        .arg("mount")
        .arg(&gone)
        .args(embedded(&["--memory"]))
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-dir"), "{err}");
}

#[test]
fn the_embedded_registry_takes_a_free_port_when_its_own_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut m = MountProcess::start(
        &[
            "--memory",
            "--listen",
            &listen,
            "--admin-user",
            "admin",
            "--admin-password",
            PW,
        ],
        &[],
    );
    let got: u16 = m.url.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(got, port, "{}", m.url);
    assert_ne!(got, 0);
    m.wait_ready();
    let rt = runtime();
    let r = rt.block_on(Client::new(&m.url).get("/v1/_ping", &Auth::None));
    assert_eq!(r.status, 200);
    assert_eq!(ls(&m.mountpoint).unwrap().len(), 3);
    m.stop();
    drop(taken);
}

/// A server with alice/app (base + child) and library/busybox, on local storage.
fn outage_fixture(rt: &tokio::runtime::Runtime, storage: &Path) -> (TestServer, Image, Image) {
    let server = TestServer::on_disk(storage);
    let c = server.client();
    let (base, child) = rt.block_on(async {
        let app = c.push_alice_app("mp-outage", 300_000, 2_000_000).await;
        let bb = Image::new("mp-outage-bb", 1000);
        c.push_repo(
            "library/busybox",
            std::slice::from_ref(&bb),
            "latest",
            &Auth::admin(),
        )
        .await;
        app
    });
    (server, base, child)
}

/// Runs `op` until it fails, expecting EIO. Answers from cache (a listing still within its
/// TTL) are retried; `limit` is a hang guard past which the mount has not given up.
fn expect_eio<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut op: impl FnMut() -> std::io::Result<T>,
) {
    let deadline = Instant::now() + limit;
    loop {
        match op() {
            Ok(v) => {
                assert!(Instant::now() < deadline, "{what}: still answers {v:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{what}: {e}");
                return;
            }
        }
    }
}

#[test]
fn a_registry_outage_fails_with_eio_within_the_timeout_and_the_mount_recovers() {
    let rt = runtime();
    let storage = tempfile::tempdir().unwrap();
    let (server, base, child) = outage_fixture(&rt, storage.path());
    let addr = server.addr;
    let mut m = MountProcess::start(
        &["--registry", &server.url, "--timeout", "2", "--ttl", "0.2"],
        &[],
    );
    assert_eq!(m.url, server.url, "the registry URL is announced");
    m.wait_ready();

    // Read some things; open the child's layer without reading it.
    let base_layer = m.path(&format!("images/{}/layer", base.id));
    assert!(std::fs::read(&base_layer).unwrap() == base.layer);
    assert_eq!(ls(&m.path("repositories")).unwrap(), ["alice", "library"]);
    let tag = m.path("repositories/alice/app/tags/latest");
    assert_eq!(
        std::fs::read_to_string(&tag).unwrap(),
        format!("{}\n", child.id)
    );
    let child_layer = m.path(&format!("images/{}/layer", child.id));
    let mut open_child = std::fs::File::open(&child_layer).unwrap();

    drop(server);
    // Far above `--timeout 2` and the TTL, yet below the default timeout of 30 s: every call
    // below ending in EIO by then shows that the flag bounds it, without timing any call.
    let limit = Duration::from_secs(20);
    let mut buf = vec![0u8; 4096];
    expect_eio("reading an unread layer", limit, || {
        open_child.read(&mut buf)
    });
    expect_eio(
        "listing repositories",
        limit,
        || ls(&m.path("repositories")),
    );
    expect_eio("listing a repository's tags", limit, || {
        ls(&m.path("repositories/alice/app/tags"))
    });
    expect_eio("an unknown image", limit, || {
        std::fs::metadata(m.path(&format!("images/{}", "c".repeat(64))))
    });
    expect_eio("a fresh open of the unread layer", limit, || {
        std::fs::read(&child_layer)
    });
    // Image metadata already fetched is cached: images never change. (Layer bytes read once
    // may be cached by the kernel only; see fs::bytes_read_once_are_served_from_cache.)
    let json = std::fs::read(m.path(&format!("images/{}/json", base.id)));
    assert_eq!(json.unwrap(), base.json);
    let meta = std::fs::metadata(&base_layer).unwrap();
    assert_eq!(meta.len(), base.layer.len() as u64);
    // The mount stays up.
    assert!(is_mounted(&m.mountpoint));
    assert!(m.try_wait().is_none(), "still running");

    // The registry comes back on the same address and storage: everything works again.
    wait_free(addr);
    let server = TestServer::restart(addr, storage.path());
    let mut start = vec![0u8; 4096];
    open_child.read_exact(&mut start).unwrap();
    assert!(start[..] == child.layer[..4096]);
    drop(open_child);
    assert!(std::fs::read(&child_layer).unwrap() == child.layer);
    assert_eq!(ls(&m.path("repositories")).unwrap(), ["alice", "library"]);
    assert_eq!(
        std::fs::read_to_string(&tag).unwrap(),
        format!("{}\n", child.id)
    );
    m.stop();
    drop(server);
}

/// A server with alice/app, for the credential tests.
fn credentials_fixture(rt: &tokio::runtime::Runtime) -> (TestServer, Image) {
    let server = TestServer::start();
    let c = server.client();
    let img = Image::new("mp-creds", 1000);
    rt.block_on(c.push_as_new_user(
        (ALICE, ALICE_PASSWORD),
        "alice/app",
        std::slice::from_ref(&img),
        "latest",
    ));
    (server, img)
}

#[test]
fn wrong_credentials_give_eacces_from_flags_environment_and_docker_config() {
    let rt = runtime();
    let (server, img) = credentials_fixture(&rt);
    let docker = tempfile::tempdir().unwrap();
    let host = server.url.trim_start_matches("http://");
    let auth = base64_encode(b"alice:wrong-password");
    std::fs::write(
        docker.path().join("config.json"),
        format!(r#"{{"auths": {{"http://{host}/v1/": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let docker_dir = docker.path().to_str().unwrap();
    // --no-check: the mount comes up (without it, it refuses to start: tests/mount_startup.rs).
    let registry = ["--registry", server.url.as_str(), "--no-check"];
    let with_flags: Vec<&str> = registry
        .iter()
        .copied()
        .chain(["--user", "alice", "--password", "wrong-password"])
        .collect();
    for (how, args, envs) in [
        ("flags", with_flags, vec![]),
        (
            "environment",
            registry.to_vec(),
            vec![
                ("REGFS_USER", "alice"),
                ("REGFS_PASSWORD", "wrong-password"),
            ],
        ),
        (
            "docker config",
            registry.to_vec(),
            vec![("DOCKER_CONFIG", docker_dir)],
        ),
    ] {
        let mut m = MountProcess::start(&args, &envs);
        m.wait_ready();
        assert_eq!(ls(&m.mountpoint).unwrap().len(), 3, "{how}");
        assert_eq!(errno_of(ls(&m.path("images"))), libc::EACCES, "{how}");
        assert_eq!(
            errno_of(std::fs::metadata(m.path(&format!("images/{}", img.id)))),
            libc::EACCES,
            "{how}"
        );
        assert_eq!(
            errno_of(ls(&m.path("repositories/alice/app/tags"))),
            libc::EACCES,
            "{how}"
        );
        m.stop();
    }
}

#[test]
fn server_admin_options_do_not_apply_to_a_mount_of_another_registry() {
    let rt = runtime();
    let (server, img) = credentials_fixture(&rt);
    // Wrong as credentials for that registry: were they used, everything would be EACCES.
    let mut m = MountProcess::start(
        &["--registry", &server.url],
        &[
            ("REGFS_ADMIN_USER", "alice"),
            ("REGFS_ADMIN_PASSWORD", "wrong-password"),
        ],
    );
    m.wait_ready();
    assert_eq!(
        ls(&m.path("images")).unwrap(),
        std::slice::from_ref(&img.id)
    );
    assert_eq!(
        std::fs::read_to_string(m.path("repositories/alice/app/tags/latest")).unwrap(),
        format!("{}\n", img.id)
    );
    m.stop();
}

/// MOUNT.md: wrong credentials are EACCES; `ls repositories/` comes from `GET /v1/search`,
/// which the server answers whatever the credentials (API.md section 9 wants a 401).
#[test]
fn wrong_credentials_give_eacces_on_the_repository_listing() {
    let rt = runtime();
    let (server, _img) = credentials_fixture(&rt);
    let mut m = MountProcess::start(
        &[
            "--registry",
            &server.url,
            "--no-check",
            "--user",
            "alice",
            "--password",
            "wrong-password",
        ],
        &[],
    );
    m.wait_ready();
    assert_eq!(errno_of(ls(&m.path("repositories"))), libc::EACCES);
    m.stop();
}

/// MOUNT.md: "Ctrl-C, SIGTERM and `fusermount3 -u MOUNTPOINT` all end it cleanly ... the
/// mountpoint is released". `run` prints the URL and mounts before it installs its signal
/// handlers, so a SIGTERM in that window kills the process outright: exit by signal, and when
/// the mount was already made, a dead mount left behind (ENOTCONN for every access).
#[test]
fn sigterm_during_start_up_still_ends_cleanly() {
    // Right after the URL line.
    let mut m = MountProcess::start(&embedded(&["--memory"]), &[]);
    m.signal("TERM");
    let status = m.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "after the URL: {status}\n{}",
        m.log()
    );
    assert!(!is_mounted(&m.mountpoint));
    // The moment the mount appears (a service manager stopping a just-started unit).
    for round in 0..5 {
        let mut m = MountProcess::start(&embedded(&["--memory"]), &[]);
        let deadline = Instant::now() + STARTUP;
        while !is_mounted(&m.mountpoint) {
            assert!(Instant::now() < deadline, "not mounted\n{}", m.log());
        }
        m.signal("TERM");
        let status = m.wait_exit(Duration::from_secs(10));
        let stale = is_mounted(&m.mountpoint);
        let access = std::fs::metadata(&m.mountpoint).err();
        assert!(
            status.code() == Some(0) && !stale,
            "round {round}: {status}, still mounted: {stale}, access: {access:?}"
        );
    }
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A push left half-done when the mount ends is reported, and the exit code says so.
#[test]
fn ending_with_an_unfinished_push_reports_it_and_exits_non_zero() {
    let mut m = MountProcess::start(&embedded(&[]), &[]);
    m.wait_ready();
    let img = Image::new("mp-unfinished", 1000);
    let dir = m.path(&format!("images/{}", img.id));
    std::fs::create_dir(&dir).unwrap();
    // The json alone: the image waits for its layer.
    std::fs::write(dir.join("json"), &img.json).unwrap();
    m.signal("TERM");
    let status = m.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{status}\n{}", m.log());
    assert!(m.log().contains("not completely pushed"), "{}", m.log());
    assert!(!is_mounted(&m.mountpoint));
}

/// A 1 GiB layer written into the mount after its json streams to the registry as it is
/// written: the daemon's peak memory stays a small fraction of the layer, and the registry
/// holds it byte for byte.
#[test]
fn a_1_gib_layer_pushes_through_the_daemon_with_bounded_memory() {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    const MIB: usize = 1 << 20;
    const LAYER_MIB: usize = 1024;
    let storage = tempfile::tempdir().unwrap();
    let server = TestServer::on_disk(storage.path());
    let mut m = MountProcess::start(
        &[
            "--registry",
            &server.url,
            "--user",
            crate::common::ADMIN,
            "--password",
            crate::common::ADMIN_PASSWORD,
        ],
        &[],
    );
    m.wait_ready();
    let idle = status_kib(m.pid(), "VmRSS:");

    let id = hex::encode(Sha256::digest(b"one gib through the daemon"));
    std::fs::create_dir(m.path(&format!("images/{id}"))).unwrap();
    std::fs::write(
        m.path(&format!("images/{id}/json")),
        format!("{{\"id\":\"{id}\"}}"),
    )
    .unwrap();
    let mut layer = std::fs::File::create(m.path(&format!("images/{id}/layer"))).unwrap();
    let mut written = Sha256::new();
    let mut chunk = vec![0u8; MIB];
    for i in 0..LAYER_MIB {
        for (j, b) in chunk.iter_mut().enumerate() {
            *b = (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8;
        }
        written.update(&chunk);
        layer.write_all(&chunk).unwrap();
    }
    // The push completes at fsync (and close), which report its result.
    layer.sync_all().unwrap();
    drop(layer);
    let peak = status_kib(m.pid(), "VmHWM:");
    assert!(
        peak.saturating_sub(idle) < 256 * 1024,
        "daemon peak {peak} KiB over idle {idle} KiB while pushing a {LAYER_MIB} MiB layer"
    );

    let stored = runtime().block_on(async {
        let res = reqwest::get(format!("{}/v1/images/{id}/layer", server.url))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let mut res = res;
        let (mut hasher, mut len) = (Sha256::new(), 0usize);
        while let Some(bytes) = res.chunk().await.unwrap() {
            len += bytes.len();
            hasher.update(&bytes);
        }
        (len, hasher.finalize())
    });
    assert_eq!(stored.0, LAYER_MIB * MIB);
    assert_eq!(stored.1, written.finalize(), "the stored layer differs");
    m.stop();
}
