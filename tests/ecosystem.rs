//! The binary among the tools around it: shell completions, manual pages, `serve --config`
//! and the mount-helper form that mount.fuse3 runs.

use std::process::{Command, Output};

fn regfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_regfs"))
}

fn run_ok(args: &[&str]) -> String {
    let out = regfs().args(args).output().unwrap();
    assert!(out.status.success(), "regfs {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn bash_completion_is_valid_bash_and_completes_the_commands_and_options() {
    let script = run_ok(&["completions", "bash"]);
    for want in ["serve", "mount", "--listen", "--registry", "--cache-dir"] {
        assert!(script.contains(want), "{want} not completed");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("regfs.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "bash -n: {check:?}");
    // Sourced, it registers a completion for regfs.
    let registered = Command::new("bash")
        .args([
            "-c",
            &format!("source {} && complete -p regfs", file.display()),
        ])
        .output()
        .unwrap();
    assert!(registered.status.success(), "{registered:?}");
}

#[test]
fn zsh_and_fish_completions_are_generated() {
    let zsh = run_ok(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef regfs"), "{zsh}");
    assert!(zsh.contains("serve") && zsh.contains("--listen"));
    let fish = run_ok(&["completions", "fish"]);
    assert!(fish.contains("complete -c regfs"), "{fish}");
    assert!(fish.contains("mount") && fish.contains("cache-dir"));
    for (shell, script) in [("zsh", &zsh), ("fish", &fish)] {
        if have(shell) {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("script");
            std::fs::write(&file, script).unwrap();
            let check = Command::new(shell).arg("-n").arg(&file).output().unwrap();
            assert!(check.status.success(), "{shell} -n: {check:?}");
        }
    }
    let out = regfs().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "unknown shell refused");
}

/// Renders roff as `man` shows it, with `man -l` or else groff; `None` when neither is here.
fn render(page: &str) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("page.1");
    std::fs::write(&file, page).unwrap();
    let out: Output = if have("man") {
        Command::new("man")
            .arg("-l")
            .arg(&file)
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .unwrap()
    } else if have("groff") {
        Command::new("groff")
            .args(["-man", "-Tutf8"])
            .arg(&file)
            .output()
            .unwrap()
    } else {
        return None;
    };
    assert!(out.status.success(), "rendering failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // Drop overstrike bold and underline, which groff writes when not told otherwise.
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    Some(plain)
}

#[test]
fn man_prints_regfs_1_listing_one_page_per_command() {
    let page = run_ok(&["man"]);
    assert!(page.contains(".TH regfs 1"), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH OPTIONS"] {
        assert!(page.contains(section), "{section} missing");
    }
    if let Some(text) = render(&page) {
        assert!(text.contains("NAME"), "{text}");
        assert!(text.contains("regfs-serve(1)"), "{text}");
        assert!(text.contains("regfs-mount(1)"), "{text}");
        assert!(
            !text.contains(".TH") && !text.contains("\\fB"),
            "roff left: {text}"
        );
    }
}

#[test]
fn man_serve_and_man_mount_are_the_commands_pages() {
    let serve = run_ok(&["man", "serve"]);
    assert!(serve.contains(".TH regfs-serve 1"), "{serve}");
    let mount = run_ok(&["man", "mount"]);
    assert!(mount.contains(".TH regfs-mount 1"), "{mount}");
    if let Some(text) = render(&serve) {
        assert!(text.contains("--listen"), "{text}");
        assert!(text.contains("--body-timeout"), "{text}");
    }
    if let Some(text) = render(&mount) {
        assert!(text.contains("--cache-dir"), "{text}");
        // The tree and the name rules from `--help` are in the page too.
        assert!(text.contains("4 to 30 characters"), "{text}");
    }
    let out = regfs().args(["man", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"nope\"") && err.contains("serve"), "{err}");
}

#[test]
fn man_dir_writes_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    run_ok(&["man", "--dir", out.to_str().unwrap()]);
    for name in [
        "regfs.1",
        "regfs-serve.1",
        "regfs-mount.1",
        "regfs-completions.1",
    ] {
        let page = std::fs::read_to_string(out.join(name)).unwrap();
        assert!(page.contains(".SH NAME"), "{name}");
    }
}

#[test]
fn help_reads_like_a_man_page() {
    // -h: one summary line per command; --help: the summary, then paragraphs.
    let short = run_ok(&["serve", "-h"]);
    let long = run_ok(&["serve", "--help"]);
    let first = long.lines().next().unwrap();
    assert!(first.starts_with("Run the registry server"), "{long}");
    assert_eq!(
        long.lines().nth(1),
        Some(""),
        "a blank line after the summary"
    );
    assert!(
        long.contains("SIGTERM") && !short.contains("SIGTERM"),
        "{short}"
    );
    let top = run_ok(&["--help"]);
    assert!(top.contains("completions") && top.contains("man"), "{top}");
    assert!(run_ok(&["mount", "--help"]).contains("--daemon detaches"));
}

/// A `regfs serve` started for a test, killed when dropped.
struct Server {
    child: std::process::Child,
    url: String,
    _cwd: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `regfs serve ARGS` with `env` and returns it once it printed its URL.
fn serve(args: &[&str], env: &[(&str, &str)]) -> Server {
    let cwd = tempfile::tempdir().unwrap();
    let mut server = serve_in(cwd.path(), args, env);
    server._cwd = Some(cwd);
    server
}

/// [`serve`] started in `cwd`.
fn serve_in(cwd: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    use std::io::BufRead;
    let mut cmd = regfs();
    // Should the file's storage be ignored, the default store is a temporary one.
    cmd.current_dir(cwd)
        .env("XDG_DATA_HOME", cwd.join("xdg-data"))
        .arg("serve")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_string();
    assert!(url.starts_with("http://"), "no URL: {line:?}");
    Server {
        child,
        url,
        _cwd: None,
    }
}

/// The status code of a sign-up request (`POST /v1/users/`) to `url`.
fn sign_up(url: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let body = r#"{"username":"newcomer","password":"secret12","email":"n@example.com"}"#;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/users/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split(' ').nth(1).unwrap().parse().unwrap()
}

fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regfs.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, path)
}

/// 127.0.0.2 and 127.0.0.3 are loopback too: the address announced shows which option won.
const FILE: &str = "listen = \"127.0.0.2:0\"\nmemory = true\nno-signup = true\n";

#[test]
fn config_file_sets_the_listen_address_and_closes_sign_up() {
    let (_dir, path) = config_file(FILE);
    let server = serve(&["--config", path.to_str().unwrap()], &[]);
    assert!(
        server.url.starts_with("http://127.0.0.2:"),
        "{}",
        server.url
    );
    assert_eq!(sign_up(&server.url), 403, "no-signup from the file");
    // Without the file, sign-up is open: the 403 above is the file's doing.
    let open = serve(&["--memory", "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(sign_up(&open.url), 201);
}

#[test]
fn flags_and_environment_override_the_config_file() {
    let (_dir, path) = config_file(FILE);
    let config = path.to_str().unwrap();
    let flag = serve(&["--config", config, "--listen", "127.0.0.1:0"], &[]);
    assert!(flag.url.starts_with("http://127.0.0.1:"), "{}", flag.url);
    let env = serve(&["--config", config], &[("REGFS_LISTEN", "127.0.0.3:0")]);
    assert!(env.url.starts_with("http://127.0.0.3:"), "{}", env.url);
    // The file through REGFS_CONFIG, its sign-up setting through REGFS_NO_SIGNUP.
    let (_dir, open) = config_file("listen = \"127.0.0.2:0\"\nmemory = true\n");
    let by_env = serve(
        &[],
        &[
            ("REGFS_CONFIG", open.to_str().unwrap()),
            ("REGFS_NO_SIGNUP", "true"),
        ],
    );
    assert!(
        by_env.url.starts_with("http://127.0.0.2:"),
        "{}",
        by_env.url
    );
    assert_eq!(sign_up(&by_env.url), 403);
}

#[test]
fn config_file_paths_are_relative_to_the_file() {
    let (dir, path) = config_file("listen = \"127.0.0.1:0\"\nstorage = \"data\"\n");
    // Started elsewhere, the store still lands beside the file.
    let elsewhere = tempfile::tempdir().unwrap();
    let server = serve_in(elsewhere.path(), &["--config", path.to_str().unwrap()], &[]);
    assert_eq!(sign_up(&server.url), 201);
    assert!(
        dir.path().join("data").is_dir(),
        "store not beside the file"
    );
}

/// The error of `regfs serve --config FILE` with `config_text` in FILE.
fn refused(config_text: &str) -> String {
    let (_dir, path) = config_file(config_text);
    // In memory on a free port, should the file not be read: the server must stop by itself.
    let child = regfs()
        .args(["serve", "--config", path.to_str().unwrap()])
        .args(["--memory", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "no URL announced");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The output of `child`, which must exit within 30 s (else it is killed and the test fails).
fn wait_bounded(mut child: std::process::Child) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn unknown_keys_and_malformed_files_are_refused_naming_line_and_key() {
    let err = refused("memory = true\nlisten = \"127.0.0.1:0\"\nlistn = \"127.0.0.1:0\"\n");
    assert!(err.contains("/regfs.toml:3:1:"), "{err}");
    assert!(err.contains("`listn`"), "{err}");
    let err = refused("memory = true\n\nmax-uploads = \n");
    assert!(err.contains("regfs.toml:3:"), "{err}");
    let err = refused("memory = true\nmax-uploads = \"many\"\n");
    assert!(err.contains("regfs.toml:2:"), "{err}");
    let err = refused("listen = \"127.0.0.1:0\"\nstorage = \"x\"\nmemory = true\n");
    assert!(err.contains("both storage and memory"), "{err}");
    assert!(err.contains("/regfs.toml"), "file not named: {err}");
    let err = refused("memory = true\nadmin-user = \"admin\"\n");
    assert!(err.contains("--admin-user needs --admin-password"), "{err}");
    let out = regfs()
        .args(["serve", "--config", "/nonexistent/regfs.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_world_readable_file_with_secrets_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = config_file(
        "listen = \"127.0.0.1:0\"\nmemory = true\nadmin-user = \"admin\"\n\
         admin-password = \"secret12\"\n",
    );
    let log = |mode: u32| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        // An invalid flag value after the config is read: the process stops at once.
        let out = regfs()
            .args(["serve", "--config", path.to_str().unwrap()])
            .args(["--max-uploads", "0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let open = log(0o644);
    assert!(open.contains("readable by every user"), "{open}");
    let closed = log(0o600);
    assert!(!closed.contains("readable by every user"), "{closed}");
}

#[test]
fn mount_helper_form_refuses_unknown_options_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().to_str().unwrap();
    let out = regfs()
        .args(["http://127.0.0.1:9", mnt, "-o", "ro,_netdev,compress=zstd"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"compress=zstd\""), "{err}");
    let out = regfs().args(["ftp://127.0.0.1:9", mnt]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("SOURCE must be"));
    // A mistyped command is not taken for a SOURCE.
    let out = regfs().args(["serv", mnt]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
    // A bad value is refused as the flag's would be.
    let out = regfs()
        .args(["http://127.0.0.1:9", mnt, "-o", "ttl=soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ttl"));
}

/// `regfs URL MOUNTPOINT -o ro,...` as mount.fuse3 runs it: returns once mounted, read-only.
#[cfg(feature = "fuse-tests")]
#[test]
fn mount_helper_form_mounts_read_only_and_returns() {
    let server = serve(&["--memory", "--listen", "127.0.0.1:0"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let child = regfs()
        .arg(&server.url)
        .arg(&mnt)
        .args(["-o", "ro,_netdev,nofail,x-systemd.automount,ttl=1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child);
    assert!(out.status.success(), "{out:?}");
    let names: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.contains(&"repositories".to_string()), "{names:?}");
    let err = std::fs::create_dir(mnt.join("repositories/somebody")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(&mnt)
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("busy") && std::time::Instant::now() < deadline,
            "fusermount3 -u: {stderr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
