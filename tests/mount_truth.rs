//! The mount tells the truth where the shell looks (issue 18): refusals fail the `write` a
//! shell redirection sees, leave no trace, are listed in `.regfs/errors`; `cp -r` of a
//! repository works; the mount's own pushes show at once; a full spool is ENOSPC.
//!
//! Every step runs through `bash -c` as a user would type it, with the mountpoint in `$M`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use regfs::mount::FsConfig;

use crate::common::mount::TestMount;
use crate::common::{ADMIN, ADMIN_PASSWORD, Auth, Image, TestServer};

/// What a shell command did.
struct Shell {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `script` in bash with `$M` set to `mount` and the given variables.
fn sh(mount: &Path, script: &str, vars: &[(&str, &str)]) -> Shell {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("M", mount)
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    Shell {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `script`, which must fail with `message` on stderr.
fn refused(mount: &Path, script: &str, vars: &[(&str, &str)], message: &str) {
    let r = sh(mount, script, vars);
    assert!(!r.ok, "`{script}` exited 0 ({vars:?})");
    assert!(
        r.stderr.contains(message),
        "`{script}`: expected {message:?} on stderr, got {:?}",
        r.stderr
    );
}

/// Runs `script`, which must succeed; returns its stdout.
fn fine(mount: &Path, script: &str, vars: &[(&str, &str)]) -> String {
    let r = sh(mount, script, vars);
    assert!(r.ok, "`{script}` failed: {}", r.stderr);
    r.stdout
}

/// A server holding one complete image, and a mount of it as the administrator.
async fn setup(config: FsConfig) -> (TestServer, Image, TestMount) {
    let server = TestServer::start();
    let base = Image::new("truth-base", 1000);
    server.client().push_image(&base, &Auth::admin()).await;
    let url = server.url.clone();
    let mount = tokio::task::spawn_blocking(move || {
        TestMount::with_config(
            &url,
            Some((ADMIN, ADMIN_PASSWORD)),
            config,
            Duration::from_secs(5),
        )
    })
    .await
    .unwrap();
    (server, base, mount)
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_json_and_tags_fail_the_shell_and_leave_no_trace() {
    let (server, base, m) = setup(FsConfig::default()).await;
    let fresh = Image::new("truth-fresh", 5000);
    let orphan = Image::child("truth-orphan", &Image::new("truth-never-pushed", 1), 100);
    let (f, o, b) = (fresh.clone(), orphan.clone(), base.id.clone());
    let m = tokio::task::spawn_blocking(move || {
        let dir = m.path().to_path_buf();
        let fresh_json = String::from_utf8(f.json.clone()).unwrap();
        let orphan_json = String::from_utf8(o.json.clone()).unwrap();
        let layer = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(layer.path(), &f.layer).unwrap();
        let layer = layer.path().to_str().unwrap().to_string();
        let vars = [
            ("ID", f.id.as_str()),
            ("ORPHAN", o.id.as_str()),
            ("FRESH_JSON", fresh_json.as_str()),
            ("ORPHAN_JSON", orphan_json.as_str()),
            ("LAYER", layer.as_str()),
            ("BASE", b.as_str()),
        ];
        let vars = &vars[..];
        // Not JSON at all.
        refused(
            &dir,
            r#"mkdir "$M/images/$ID" && echo not-json > "$M/images/$ID/json""#,
            vars,
            "Invalid argument",
        );
        // No trace: not listed, and cat agrees.
        assert_eq!(fine(&dir, r#"ls -A "$M/images/$ID""#, vars), "");
        refused(
            &dir,
            r#"cat "$M/images/$ID/json""#,
            vars,
            "No such file",
        );
        // A json naming another image.
        refused(
            &dir,
            r#"printf '%s\n' "$ORPHAN_JSON" > "$M/images/$ID/json""#,
            vars,
            "Invalid argument",
        );
        assert_eq!(fine(&dir, r#"ls -A "$M/images/$ID""#, vars), "");
        // A layer after the refused json can never complete the push: it fails.
        refused(
            &dir,
            r#"cp "$LAYER" "$M/images/$ID/layer""#,
            vars,
            "Invalid argument",
        );
        assert_eq!(fine(&dir, r#"ls -A "$M/images/$ID""#, vars), "");
        // A json whose parent the registry does not have.
        refused(
            &dir,
            r#"mkdir "$M/images/$ORPHAN" && printf '%s\n' "$ORPHAN_JSON" > "$M/images/$ORPHAN/json""#,
            vars,
            "Invalid argument",
        );
        assert_eq!(fine(&dir, r#"ls -A "$M/images/$ORPHAN""#, vars), "");
        // Tags: garbage, and an id of no complete image.
        fine(&dir, r#"mkdir -p "$M/repositories/library/truth""#, vars);
        refused(
            &dir,
            r#"echo garbage > "$M/repositories/library/truth/tags/x""#,
            vars,
            "Invalid argument",
        );
        refused(
            &dir,
            r#"echo "$ID" > "$M/repositories/library/truth/tags/ghost""#,
            vars,
            "Invalid argument",
        );
        assert_eq!(
            fine(&dir, r#"ls -A "$M/repositories/library/truth/tags""#, vars),
            ""
        );
        // The right content still goes through, and the push completes.
        fine(
            &dir,
            r#"printf '%s' "$FRESH_JSON" > "$M/images/$ID/json" && cp "$LAYER" "$M/images/$ID/layer" && echo "$ID" > "$M/repositories/library/truth/tags/latest""#,
            vars,
        );
        m
    })
    .await
    .unwrap();
    let c = server.client();
    let r = c
        .get(&format!("/v1/images/{}/layer", fresh.id), &Auth::None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body == fresh.layer);
    let r = c
        .get(&format!("/v1/images/{}/json", orphan.id), &Auth::None)
        .await;
    assert_eq!(r.status, 404, "nothing of the orphan reached the registry");
    let r = c
        .get("/v1/repositories/library/truth/tags", &Auth::None)
        .await;
    assert_eq!(r.json(), serde_json::json!({"latest": fresh.id}));
    tokio::task::spawn_blocking(move || drop(m)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_listed_in_a_hidden_errors_file() {
    let (_server, _base, m) = setup(FsConfig::default()).await;
    let id = Image::new("truth-errors", 10).id;
    tokio::task::spawn_blocking(move || {
        let dir = m.path().to_path_buf();
        let vars = [("ID", id.as_str())];
        let vars = &vars[..];
        assert_eq!(fine(&dir, r#"cat "$M/.regfs/errors""#, vars), "");
        refused(
            &dir,
            r#"mkdir "$M/images/$ID" && echo not-json > "$M/images/$ID/json""#,
            vars,
            "Invalid argument",
        );
        refused(
            &dir,
            r#"mkdir -p "$M/repositories/library/Bad""#,
            vars,
            "Invalid argument",
        );
        let errors = fine(&dir, r#"cat "$M/.regfs/errors""#, vars);
        let lines: Vec<&str> = errors.lines().collect();
        assert_eq!(lines.len(), 2, "one line per refusal: {errors}");
        let fields: Vec<&str> = lines[0].split('\t').collect();
        assert_eq!(
            fields.len(),
            4,
            "time, operation, path, reason: {}",
            lines[0]
        );
        assert!(fields[0].ends_with('Z'), "{}", fields[0]);
        assert_eq!(fields[1], "write");
        assert_eq!(fields[2], format!("images/{id}/json"));
        assert!(fields[3].contains("not a JSON object"), "{}", fields[3]);
        let fields: Vec<&str> = lines[1].split('\t').collect();
        assert_eq!(fields[1], "mkdir");
        assert_eq!(fields[2], "repositories/library/Bad");
        // Hidden from listings of the root, read-only.
        let root = fine(&dir, r#"ls -A "$M""#, vars);
        assert_eq!(
            root.split_whitespace().collect::<Vec<_>>(),
            ["images", "repositories", "search"]
        );
        assert_eq!(fine(&dir, r#"ls "$M/.regfs""#, vars).trim(), "errors");
        refused(
            &dir,
            r#"echo x > "$M/.regfs/errors""#,
            vars,
            "Operation not permitted",
        );
        drop(m);
    })
    .await
    .unwrap();
}

/// Tags and image list of `repo` on `server`, as the HTTP API lists them.
async fn repo_state(server: &TestServer, repo: &str) -> (serde_json::Value, Vec<String>) {
    let c = server.client();
    let tags = c
        .get(&format!("/v1/repositories/{repo}/tags"), &Auth::None)
        .await
        .json();
    let images = c
        .get(&format!("/v1/repositories/{repo}/images"), &Auth::None)
        .await
        .json();
    let mut ids: Vec<String> = images
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    (tags, ids)
}

#[tokio::test(flavor = "multi_thread")]
async fn cp_r_copies_a_repository_with_its_tags_within_one_mount() {
    let server = TestServer::start();
    let base = Image::new("truth-cp-base", 2000);
    let top = Image::child("truth-cp-top", &base, 3000);
    let c = server.client();
    c.push_repo(
        "library/src",
        &[base.clone(), top.clone()],
        "latest",
        &Auth::admin(),
    )
    .await;
    let r = c
        .put(
            "/v1/repositories/library/src/tags/old",
            format!("\"{}\"", base.id),
            &Auth::admin(),
        )
        .await;
    assert_eq!(r.status, 200);
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || {
        let m = TestMount::new(&url, Some((ADMIN, ADMIN_PASSWORD)));
        let dir = m.path().to_path_buf();
        fine(
            &dir,
            r#"cp -r "$M/repositories/library/src" "$M/repositories/library/copy""#,
            &[],
        );
        let tags = fine(&dir, r#"ls "$M/repositories/library/copy/tags""#, &[]);
        assert_eq!(
            tags.split_whitespace().collect::<Vec<_>>(),
            ["latest", "old"]
        );
        // Copying again over the existing copy (cp unlinks each link and makes it again).
        fine(
            &dir,
            r#"cp -r "$M/repositories/library/src/." "$M/repositories/library/copy/""#,
            &[],
        );
        drop(m);
    })
    .await
    .unwrap();
    let (src_tags, src_images) = repo_state(&server, "library/src").await;
    let (copy_tags, copy_images) = repo_state(&server, "library/copy").await;
    assert_eq!(copy_tags, src_tags);
    assert_eq!(copy_images, src_images);
}

#[tokio::test(flavor = "multi_thread")]
async fn cp_r_copies_a_repository_with_its_tags_between_two_mounts() {
    let source = TestServer::start();
    let target = TestServer::start();
    let base = Image::new("truth-cp2-base", 2000);
    let top = Image::child("truth-cp2-top", &base, 3000);
    source
        .client()
        .push_repo(
            "alice/app",
            &[base.clone(), top.clone()],
            "v1",
            &Auth::admin(),
        )
        .await;
    // The images are there already (cp -r of images/ would copy them, as another test shows).
    for image in [&base, &top] {
        target.client().push_image(image, &Auth::admin()).await;
    }
    let (su, tu) = (source.url.clone(), target.url.clone());
    tokio::task::spawn_blocking(move || {
        let a = TestMount::new(&su, Some((ADMIN, ADMIN_PASSWORD)));
        let b = TestMount::new(&tu, Some((ADMIN, ADMIN_PASSWORD)));
        let (pa, pb) = (
            a.path().to_str().unwrap().to_string(),
            b.path().to_str().unwrap().to_string(),
        );
        let vars = [("A", pa.as_str()), ("B", pb.as_str())];
        fine(
            a.path(),
            r#"mkdir -p "$B/repositories/alice" && cp -r "$A/repositories/alice/app" "$B/repositories/alice/app""#,
            &vars,
        );
        drop((a, b));
    })
    .await
    .unwrap();
    let (src_tags, src_images) = repo_state(&source, "alice/app").await;
    let (copy_tags, copy_images) = repo_state(&target, "alice/app").await;
    assert_eq!(copy_tags, serde_json::json!({"v1": top.id}));
    assert_eq!(copy_tags, src_tags);
    assert_eq!(copy_images, src_images);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mounts_own_push_and_tag_show_at_once_in_every_file_they_change() {
    // Listings and tags trusted for ten minutes: only the mount's own bookkeeping can make
    // its changes show.
    let config = FsConfig {
        ttl: Duration::from_secs(600),
        ..FsConfig::default()
    };
    let (_server, base, m) = setup(config).await;
    let child = Image::child("truth-visible", &base, 4000);
    let (c, b) = (child.clone(), base.id.clone());
    tokio::task::spawn_blocking(move || {
        let dir = m.path().to_path_buf();
        let json = String::from_utf8(c.json.clone()).unwrap();
        let layer = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(layer.path(), &c.layer).unwrap();
        let layer = layer.path().to_str().unwrap().to_string();
        let vars = [
            ("ID", c.id.as_str()),
            ("JSON", json.as_str()),
            ("LAYER", layer.as_str()),
        ];
        let vars = &vars[..];
        // Read before, so anything cached would be stale after.
        fine(&dir, r#"mkdir -p "$M/repositories/library/seen/tags""#, vars);
        assert_eq!(
            fine(&dir, r#"ls "$M/repositories/library/seen/images""#, vars),
            ""
        );
        fine(
            &dir,
            r#"mkdir "$M/images/$ID" && printf '%s' "$JSON" > "$M/images/$ID/json" && cp "$LAYER" "$M/images/$ID/layer""#,
            vars,
        );
        assert_eq!(
            fine(&dir, r#"cat "$M/images/$ID/ancestry""#, vars),
            format!("{}\n{}\n", c.id, b)
        );
        assert_eq!(
            fine(&dir, r#"readlink "$M/images/$ID/parent""#, vars).trim(),
            format!("../{b}")
        );
        let files = fine(&dir, r#"ls "$M/images/$ID""#, vars);
        assert_eq!(
            files.split_whitespace().collect::<Vec<_>>(),
            ["ancestry", "json", "layer", "parent"]
        );
        assert!(fine(&dir, r#"ls "$M/images""#, vars).contains(&c.id));
        fine(
            &dir,
            r#"echo "$ID" > "$M/repositories/library/seen/tags/latest""#,
            vars,
        );
        let listed = fine(&dir, r#"ls "$M/repositories/library/seen/images""#, vars);
        let mut want = vec![c.id.clone(), b.clone()];
        want.sort();
        assert_eq!(listed.split_whitespace().collect::<Vec<_>>(), want);
        assert_eq!(
            fine(&dir, r#"cat "$M/repositories/library/seen/tags/latest""#, vars),
            format!("{}\n", c.id)
        );
        drop(m);
    })
    .await
    .unwrap();
}

/// A tmpfs of `size`, mounted on a temporary directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_spool_fails_the_layer_write_with_enospc() {
    let spool = Tmpfs::new("1m");
    let config = FsConfig {
        spool_dir: Some(spool.0.path().to_path_buf()),
        ..FsConfig::default()
    };
    let (server, _base, m) = setup(config).await;
    let image = Image::new("truth-full-spool", 4 * 1024 * 1024);
    let img = image.clone();
    let m = tokio::task::spawn_blocking(move || {
        let dir = m.path().to_path_buf();
        let big = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(big.path(), &img.layer).unwrap();
        let big = big.path().to_str().unwrap().to_string();
        let vars = [("ID", img.id.as_str()), ("BIG", big.as_str())];
        // Layer first: it is spooled until the json comes, and the spool is full.
        refused(
            &dir,
            r#"mkdir "$M/images/$ID" && cp "$BIG" "$M/images/$ID/layer""#,
            &vars,
            "No space left on device",
        );
        assert_eq!(fine(&dir, r#"ls -A "$M/images/$ID""#, &vars), "");
        let errors = fine(&dir, r#"cat "$M/.regfs/errors""#, &vars);
        assert!(errors.contains("spooling the layer"), "{errors}");
        m
    })
    .await
    .unwrap();
    let r = server
        .client()
        .get(&format!("/v1/images/{}/layer", image.id), &Auth::None)
        .await;
    assert_eq!(r.status, 404);
    tokio::task::spawn_blocking(move || drop(m)).await.unwrap();
    drop(spool);
}

/// Through the real daemon: a refusal is one warn line naming the operation, the path and the
/// reason, and a layer spooled under a full `TMPDIR` is ENOSPC.
#[test]
fn the_daemon_logs_each_refusal_once_and_spools_under_tmpdir() {
    use crate::common::process::MountProcess;
    let spool = Tmpfs::new("1m");
    let tmpdir = spool.0.path().to_str().unwrap().to_string();
    let mut m = MountProcess::start(
        &[
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--admin-user",
            "admin",
            "--admin-password",
            "truth-admin-password",
        ],
        &[("TMPDIR", tmpdir.as_str())],
    );
    m.wait_ready();
    let dir = m.path("");
    let image = Image::new("truth-daemon", 4 * 1024 * 1024);
    let big = tempfile::NamedTempFile::new_in(std::env::temp_dir()).unwrap();
    std::fs::write(big.path(), &image.layer).unwrap();
    let big_path = big.path().to_str().unwrap().to_string();
    let vars = [("ID", image.id.as_str()), ("BIG", big_path.as_str())];
    refused(
        &dir,
        r#"mkdir "$M/images/$ID" && echo not-json > "$M/images/$ID/json""#,
        &vars,
        "Invalid argument",
    );
    refused(
        &dir,
        r#"cp "$BIG" "$M/images/$ID/layer""#,
        &vars,
        "Invalid argument",
    );
    let other = Image::new("truth-daemon-spool", 10);
    let vars = [("ID", other.id.as_str()), ("BIG", big_path.as_str())];
    refused(
        &dir,
        r#"mkdir "$M/images/$ID" && cp "$BIG" "$M/images/$ID/layer""#,
        &vars,
        "No space left on device",
    );
    let errors = fine(&dir, r#"cat "$M/.regfs/errors""#, &vars);
    assert_eq!(errors.lines().count(), 3, "{errors}");
    m.stop();
    let log = m.log();
    let json_path = format!("images/{}/json", image.id);
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains(&json_path))
        .collect();
    assert_eq!(
        warned.len(),
        1,
        "one warn line for the refused json:\n{log}"
    );
    assert!(
        warned[0].contains("write") && warned[0].contains("not a JSON object"),
        "{}",
        warned[0]
    );
    let spool_warnings = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("spooling the layer"))
        .count();
    assert_eq!(spool_warnings, 1, "{log}");
    drop(spool);
}
