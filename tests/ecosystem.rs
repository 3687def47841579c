//! The binary among the tools around it: shell completions and manual pages.

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
