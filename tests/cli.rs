//! The built binary: help, argument errors, and `serve` printing its URL first.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn regfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_regfs"))
}

#[test]
fn help_lists_the_subcommands() {
    let out = regfs().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("serve"));
}

/// Issue 18: the name rules and what `ls images` lists are in the help, not only in the code.
#[test]
fn mount_help_states_the_name_rules_and_the_start_up_checks() {
    let out = regfs().args(["mount", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "namespace  4 to 30 characters of a-z, 0-9 and _",
        "repo       1 to 255 characters of a-z, 0-9, -, _ and .",
        "tag        1 to 128 characters",
        "`ls images` lists",
        "--allow-non-empty",
        "--no-check",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

#[test]
fn bad_arguments_exit_non_zero_with_a_message() {
    let out = regfs()
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!out.stderr.is_empty());
    let out = regfs()
        .args([
            "serve",
            "--memory",
            "--admin-user",
            "x",
            "--admin-password",
            "secret",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin-user"));
}

#[test]
fn redirect_layers_without_s3_storage_refuses_to_start() {
    let out = regfs()
        .args([
            "serve",
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--redirect-layers",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "no URL announced");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--redirect-layers needs S3 storage"), "{err}");
}

#[test]
fn serve_prints_its_url_first_and_stops_on_sigterm() {
    let mut child = regfs()
        .args(["serve", "--memory", "--listen", "127.0.0.1:0"])
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);
    // Plain HTTP by hand: the server answers _ping.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /v1/_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    // The log went to a pipe, not a terminal: plain text, no colour codes.
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("GET") && log.contains("/v1/_ping"), "{log}");
    // Request times in milliseconds to the microsecond, not a float's last digits.
    let ms = log.split("ms=").nth(1).expect("a request time");
    let ms = ms.split_whitespace().next().unwrap_or_default();
    assert!(
        ms.split_once('.').is_some_and(|(_, frac)| frac.len() == 3),
        "ms={ms}"
    );
    assert!(
        !log.contains('\x1b'),
        "escape codes in a piped log: {log:?}"
    );
}
