//! Access control through the real server: one table of caller x operation x repository with
//! the status API.md section 9 prescribes, the admin-only `library` namespace, reserved and
//! invalid names at registration, and the logs of the real binary at trace level, which must
//! never show a password or a token.
//!
//! Secret comparison is constant-time in the server (`subtle::ConstantTimeEq` for token MACs,
//! the admin password and the password cache), so it is not re-tested here.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use regfs::names::RepoRef;
use regfs::server::auth::{Access, TokenSigner};
use regfs::server::state::Clock;

use crate::common::{ADMIN, ADMIN_PASSWORD, Auth, Client, Image, Resp, TestServer};

const OWNER: &str = "owner_a";
const OWNER_PASSWORD: &str = "owner-pass";
const OTHER: &str = "other_b";
const OTHER_PASSWORD: &str = "other-pass";
/// The secret `TestServer::config` signs tokens with.
const TEST_SECRET: &[u8] = b"test-secret-test-secret";

/// A token the server would accept for `repo`, but issued two hours ago with a one-hour life.
fn expired_token(repo: &str, access: Access) -> String {
    let repo = RepoRef::parse_full(repo).unwrap();
    TokenSigner::new(TEST_SECRET, 3600).issue(&repo, access, regfs::server::now_unix() - 7200)
}

/// Asks the index for a token, as `docker push` (PUT repo) and `docker pull` (GET images) do.
async fn issued_token(c: &Client, method: &str, path: &str, auth: &Auth) -> String {
    let r = c
        .send(
            c.request(method, path)
                .header("X-Docker-Token", "true")
                .body("[]"),
            auth,
        )
        .await;
    assert!(r.status < 300, "{method} {path}: {}", r.status);
    r.header("x-docker-token")
        .unwrap_or_else(|| panic!("no token from {method} {path}"))
}

/// One write (or read) against a repository.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    PutRepo,
    PutImages,
    PutTag,
    DeleteTag,
    DeleteRepo,
    PutAuth,
    GetTags,
    GetImages,
}

impl Op {
    async fn run(self, c: &Client, repo: &str, image: &Image, auth: &Auth) -> Resp {
        let base = format!("/v1/repositories/{repo}");
        let list = format!("[{{\"id\":\"{}\"}}]", image.id);
        let tag = format!("\"{}\"", image.id);
        match self {
            Op::PutRepo => c.put(&format!("{base}/"), list, auth).await,
            Op::PutImages => c.put(&format!("{base}/images"), list, auth).await,
            Op::PutTag => c.put(&format!("{base}/tags/matrix"), tag, auth).await,
            Op::DeleteTag => c.delete(&format!("{base}/tags/matrix"), auth).await,
            Op::DeleteRepo => c.delete(&format!("{base}/"), auth).await,
            Op::PutAuth => c.put(&format!("{base}/auth"), "", auth).await,
            Op::GetTags => c.get(&format!("{base}/tags"), auth).await,
            Op::GetImages => c.get(&format!("{base}/images"), auth).await,
        }
    }

    /// Status when allowed. `DeleteTag` runs right after `PutTag`, so the tag exists.
    fn ok(self) -> u16 {
        match self {
            Op::PutImages => 204,
            _ => 200,
        }
    }

    fn is_index(self) -> bool {
        matches!(self, Op::PutRepo | Op::PutImages | Op::DeleteRepo)
    }
}

const WRITES: [Op; 5] = [
    Op::PutRepo,
    Op::PutImages,
    Op::PutTag,
    Op::DeleteTag,
    Op::DeleteRepo,
];
const READS: [Op; 2] = [Op::GetTags, Op::GetImages];

/// What a caller gets on every write of a repository: allowed, or one refusal status.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Allowed,
    Refused(u16),
}

#[tokio::test]
async fn access_matrix_of_callers_tokens_and_repositories() {
    let server = TestServer::start();
    let c = server.client();
    assert_eq!(c.register(OWNER, OWNER_PASSWORD).await.status, 201);
    assert_eq!(c.register(OTHER, OTHER_PASSWORD).await.status, 201);
    let owner = Auth::basic(OWNER, OWNER_PASSWORD);
    let other = Auth::basic(OTHER, OTHER_PASSWORD);
    let admin = Auth::admin();
    let image = Image::new("access-matrix", 64);
    let one = format!("{OWNER}/one");
    let two = format!("{OWNER}/two");
    let theirs = format!("{OTHER}/app");
    c.push_repo(&one, std::slice::from_ref(&image), "latest", &owner)
        .await;
    c.push_repo(&two, std::slice::from_ref(&image), "latest", &owner)
        .await;
    c.push_repo(&theirs, std::slice::from_ref(&image), "latest", &other)
        .await;
    c.push_repo(
        "library/lib",
        std::slice::from_ref(&image),
        "latest",
        &admin,
    )
    .await;

    let write_one = issued_token(&c, "PUT", &format!("/v1/repositories/{one}/"), &owner).await;
    let read_one = issued_token(&c, "GET", &format!("/v1/repositories/{one}/images"), &owner).await;
    let write_two = issued_token(&c, "PUT", &format!("/v1/repositories/{two}/"), &owner).await;
    let write_lib = issued_token(&c, "PUT", "/v1/repositories/lib/", &admin).await;
    assert!(
        write_lib.contains("repository=\"library/lib\""),
        "{write_lib}"
    );
    // Anonymous pulls get a read token too.
    let anon_read = issued_token(
        &c,
        "GET",
        &format!("/v1/repositories/{one}/images"),
        &Auth::None,
    )
    .await;

    let tampered_repo = write_one.replace(&format!("\"{one}\""), &format!("\"{two}\""));
    let tampered_access = write_two.replace("access=write", "access=delete");
    let tampered_expiry = {
        let (head, expires) = write_one.rsplit_once("expires=").unwrap();
        let later: i64 = expires.parse::<i64>().unwrap() + 86_400;
        format!("{head}expires={later}")
    };
    let tampered_signature = {
        let i = "signature=".len();
        let mut t = write_one.clone().into_bytes();
        t[i] = if t[i] == b'0' { b'1' } else { b'0' };
        String::from_utf8(t).unwrap()
    };
    let foreign = TokenSigner::new(b"another secret", 3600).issue(
        &RepoRef::parse_full(&one).unwrap(),
        Access::Write,
        regfs::server::now_unix(),
    );

    use Expect::*;
    let tok = |t: &String| Auth::Token(t.clone());
    // (who, credentials, repository, expectation on writes, status of reads)
    let rows: Vec<(&str, Auth, &str, Expect, u16)> = vec![
        ("anonymous", Auth::None, &one, Refused(401), 200),
        ("owner", owner.clone(), &one, Allowed, 200),
        (
            "owner on library",
            owner.clone(),
            "library/lib",
            Refused(403),
            200,
        ),
        (
            "owner on another user's namespace",
            owner.clone(),
            &theirs,
            Refused(403),
            200,
        ),
        (
            "another user on my namespace",
            other.clone(),
            &one,
            Refused(403),
            200,
        ),
        (
            "wrong password",
            Auth::basic(OWNER, "not-my-password"),
            &one,
            Refused(401),
            401,
        ),
        (
            "another user's name, my password",
            Auth::basic(OTHER, OWNER_PASSWORD),
            &one,
            Refused(401),
            401,
        ),
        (
            "unknown user",
            Auth::basic("nobody_here", "whatever"),
            &one,
            Refused(401),
            401,
        ),
        (
            "admin on a user namespace",
            admin.clone(),
            &one,
            Allowed,
            200,
        ),
        (
            "admin on library",
            admin.clone(),
            "library/lib",
            Allowed,
            200,
        ),
        (
            "write token, its repository",
            tok(&write_one),
            &one,
            Allowed,
            200,
        ),
        (
            "write token for A on B",
            tok(&write_one),
            &two,
            Refused(403),
            200,
        ),
        (
            "write token on another user's repository",
            tok(&write_one),
            &theirs,
            Refused(403),
            200,
        ),
        (
            "write token on library",
            tok(&write_one),
            "library/lib",
            Refused(403),
            200,
        ),
        (
            "library write token on a user repository",
            tok(&write_lib),
            &one,
            Refused(403),
            200,
        ),
        (
            "library write token on library",
            tok(&write_lib),
            "library/lib",
            Allowed,
            200,
        ),
        (
            "read token used to write",
            tok(&read_one),
            &one,
            Refused(403),
            200,
        ),
        (
            "read token for A on B",
            tok(&read_one),
            &two,
            Refused(403),
            200,
        ),
        (
            "anonymous read token used to write",
            tok(&anon_read),
            &one,
            Refused(403),
            200,
        ),
        (
            "expired write token",
            tok(&expired_token(&one, Access::Write)),
            &one,
            Refused(401),
            401,
        ),
        (
            "expired delete token",
            tok(&expired_token(&one, Access::Delete)),
            &one,
            Refused(401),
            401,
        ),
        (
            "token with its repository changed",
            tok(&tampered_repo),
            &two,
            Refused(401),
            401,
        ),
        (
            "token with its access changed",
            tok(&tampered_access),
            &two,
            Refused(401),
            401,
        ),
        (
            "token with its expiry changed",
            tok(&tampered_expiry),
            &one,
            Refused(401),
            401,
        ),
        (
            "token with its signature changed",
            tok(&tampered_signature),
            &one,
            Refused(401),
            401,
        ),
        (
            "token of another server",
            tok(&foreign),
            &one,
            Refused(401),
            401,
        ),
        (
            "doubled Token prefix",
            Auth::Raw(format!("Token Token {write_one}")),
            &one,
            Allowed,
            200,
        ),
    ];
    for (who, auth, repo, writes, reads) in &rows {
        for op in WRITES {
            // Deleting a repository that was allowed would empty the table's fixtures: it is
            // run last, below, for the callers allowed to.
            if op == Op::DeleteRepo && *writes == Allowed {
                continue;
            }
            let r = op.run(&c, repo, &image, auth).await;
            let want = match writes {
                Allowed => op.ok(),
                Refused(s) => *s,
            };
            assert_eq!(r.status, want, "{who}: {op:?} {repo}: {}", r.text());
            if r.status >= 400 {
                assert!(!r.error().is_empty(), "{who}: {op:?}");
            }
            if r.status == 401 {
                let challenge = r.header("www-authenticate").unwrap_or_default();
                let want = if op.is_index() {
                    "Basic realm=\"auth required\",Token"
                } else {
                    "Token"
                };
                assert_eq!(challenge, want, "{who}: {op:?}");
            }
        }
        for op in READS {
            let r = op.run(&c, repo, &image, auth).await;
            assert_eq!(r.status, *reads, "{who}: {op:?} {repo}: {}", r.text());
        }
        // A registry validating a token: only a token for this very repository passes; a token
        // that does not verify is refused with 403 (API.md section 9), while wrong Basic
        // credentials are a 401 there as on every route.
        let r = Op::PutAuth.run(&c, repo, &image, auth).await;
        let valid_token_here = matches!(auth, Auth::Token(_) | Auth::Raw(_)) && *writes == Allowed
            || (*who == "read token used to write" || *who == "anonymous read token used to write");
        let wrong_basic = matches!(auth, Auth::Basic(..)) && *reads == 401;
        assert_eq!(
            r.status,
            if valid_token_here {
                200
            } else if wrong_basic {
                401
            } else {
                403
            },
            "{who}: PUT auth {repo}: {}",
            r.text()
        );
    }

    // Image data is global: any account or any write token may push it, a read token may not.
    for (i, (who, auth, want)) in [
        ("anonymous", Auth::None, 401),
        ("read token", tok(&read_one), 403),
        (
            "expired token",
            tok(&expired_token(&one, Access::Write)),
            401,
        ),
        ("wrong password", Auth::basic(OWNER, "nope-nope"), 401),
        ("write token", tok(&write_two), 200),
        ("another user", other.clone(), 200),
    ]
    .into_iter()
    .enumerate()
    {
        let fresh = Image::new(&format!("access-image-{i}"), 8);
        let r = c.put_json(&fresh, &auth).await;
        assert_eq!(r.status, want, "{who}: PUT image json: {}", r.text());
    }

    // Creating a library repository is the admin's alone.
    for (who, auth, want) in [
        ("owner", owner.clone(), 403),
        ("owner's write token", tok(&write_one), 403),
        ("anonymous", Auth::None, 401),
        ("admin", admin.clone(), 200),
    ] {
        let r = c.put("/v1/repositories/newlib/", "[]", &auth).await;
        assert_eq!(r.status, want, "{who}: PUT library repository");
    }

    // Accounts: only oneself or the admin.
    let update = serde_json::json!({"email": "new@example.com"}).to_string();
    for (who, auth, target, want) in [
        ("another user", other.clone(), OWNER, 403),
        ("a token", tok(&write_one), OWNER, 401),
        ("anonymous", Auth::None, OWNER, 401),
        ("oneself", owner.clone(), OWNER, 204),
        ("the admin", admin.clone(), OWNER, 204),
        (
            "the admin, unknown account",
            admin.clone(),
            "nobody_here",
            404,
        ),
    ] {
        let r = c
            .put(&format!("/v1/users/{target}/"), update.clone(), &auth)
            .await;
        assert_eq!(r.status, want, "{who}: PUT user {target}: {}", r.text());
    }

    // Finally, the deletions that are allowed, each on a repository of its own.
    for (who, auth, repo) in [
        ("owner", owner.clone(), format!("{OWNER}/del1")),
        ("admin", admin.clone(), format!("{OWNER}/del2")),
        ("write token", Auth::None, format!("{OWNER}/del3")),
    ] {
        c.push_repo(&repo, std::slice::from_ref(&image), "latest", &owner)
            .await;
        let auth = if who == "write token" {
            tok(&issued_token(&c, "PUT", &format!("/v1/repositories/{repo}/"), &owner).await)
        } else {
            auth
        };
        let r = c.delete(&format!("/v1/repositories/{repo}/"), &auth).await;
        assert_eq!(r.status, 200, "{who}: DELETE {repo}: {}", r.text());
        assert_eq!(
            c.get(&format!("/v1/repositories/{repo}/tags"), &Auth::None)
                .await
                .status,
            404
        );
    }
    // And the untouched repositories are as pushed.
    let r = c
        .get(&format!("/v1/repositories/{theirs}/tags"), &Auth::None)
        .await;
    assert_eq!(r.json(), serde_json::json!({"latest": image.id}));
}

#[tokio::test]
async fn tokens_from_a_short_lived_server_expire() {
    let mut cfg = TestServer::config();
    let ttl = Duration::from_secs(60);
    cfg.token_ttl = ttl;
    let clock = Clock::manual();
    cfg.clock = clock.clone();
    let server = TestServer::with_config(cfg);
    let c = server.client();
    let admin = Auth::admin();
    let image = Image::new("access-expiry", 8);
    c.push_repo(
        "library/short",
        std::slice::from_ref(&image),
        "latest",
        &admin,
    )
    .await;
    let write = issued_token(&c, "PUT", "/v1/repositories/library/short/", &admin).await;
    let read = issued_token(&c, "GET", "/v1/repositories/library/short/images", &admin).await;
    let r = c
        .get(
            "/v1/repositories/library/short/tags",
            &Auth::Token(read.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "the read token works while it lives");
    // The server's clock moves on past the tokens' life (a token's last second still counts).
    clock.advance(ttl + Duration::from_secs(1));
    let tag = format!("\"{}\"", image.id);
    for (what, token) in [("write", &write), ("read", &read)] {
        let auth = Auth::Token(token.clone());
        let r = c
            .put(
                "/v1/repositories/library/short/tags/late",
                tag.clone(),
                &auth,
            )
            .await;
        assert_eq!(r.status, 401, "{what} token, PUT tag");
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Token"));
        let r = c.get("/v1/repositories/library/short/tags", &auth).await;
        assert_eq!(r.status, 401, "{what} token, GET tags");
        let r = c
            .put("/v1/repositories/library/short/auth", "", &auth)
            .await;
        assert_eq!(r.status, 403, "{what} token, PUT auth");
    }
}

#[tokio::test]
async fn registration_refuses_reserved_taken_and_invalid_names() {
    let server = TestServer::start();
    let c = server.client();
    assert_eq!(c.register("taken_name", "pass123").await.status, 201);
    let exists = "\"Username or email already exists\"";
    for (name, body) in [
        // API.md section 10: `library` cannot be registered.
        ("library", None),
        // The configured admin exists already, as far as any client can tell.
        (ADMIN, Some(exists)),
        ("taken_name", Some(exists)),
        ("abc", None),
        (&"a".repeat(31), None),
        ("Upper", None),
        ("with-dash", None),
        ("dot.ted", None),
        ("../../etc", None),
        ("sp ace", None),
        ("nul\0name", None),
        ("émile", None),
        ("", None),
    ] {
        let r = c.register(name, "pass123").await;
        assert_eq!(r.status, 400, "{name:?}: {}", r.text());
        match body {
            Some(b) => assert_eq!(r.text(), b, "{name:?}"),
            None => assert!(!r.error().is_empty(), "{name:?}"),
        }
    }
    // None of them became an account: logging in with them fails.
    for name in ["library", "abc", "Upper"] {
        let r = c.get("/v1/users/", &Auth::basic(name, "pass123")).await;
        assert_eq!(r.status, 401, "{name}");
    }
    // And `library` stays admin-only even for a user who tried to take it.
    let r = c
        .put(
            "/v1/repositories/library/x/",
            "[]",
            &Auth::basic("taken_name", "pass123"),
        )
        .await;
    assert_eq!(r.status, 403);
    // Nor does the admin's password work for a registered namesake of another account.
    let r = c
        .get("/v1/users/", &Auth::basic("taken_name", ADMIN_PASSWORD))
        .await;
    assert_eq!(r.status, 401);
}

/// The real binary at trace level: a login, a Basic push and a token push, then its whole
/// output is searched for every secret it saw.
#[tokio::test]
async fn trace_logs_never_show_credentials_or_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let out_path = dir.path().join("stdout");
    let admin_password = "admin-log-secret";
    let token_secret = "token-secret-for-the-log-test";
    let mut child = Command::new(env!("CARGO_BIN_EXE_regfs"))
        .args(["serve", "--memory", "--listen", "127.0.0.1:0", "-vv"])
        .env("RUST_LOG", "trace")
        .env("REGFS_ADMIN_USER", "logadmin")
        .env("REGFS_ADMIN_PASSWORD", admin_password)
        .env("REGFS_TOKEN_SECRET", token_secret)
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .unwrap();
    // The URL is the first line of stdout.
    let mut url = String::new();
    for _ in 0..200 {
        let f = std::fs::File::open(&out_path).unwrap();
        if BufReader::new(f).read_line(&mut url).unwrap() > 0 && url.ends_with('\n') {
            break;
        }
        url.clear();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = url.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "no URL on stdout: {url:?}"
    );
    let c = Client {
        base: url,
        http: reqwest::Client::new(),
    };

    let user = "loguser";
    let password = "log-user-password";
    assert_eq!(c.register(user, password).await.status, 201);
    let basic = Auth::basic(user, password);
    assert_eq!(c.get("/v1/users/", &basic).await.status, 200, "login");
    let r = c
        .get("/v1/users/", &Auth::basic(user, "a-wrong-password"))
        .await;
    assert_eq!(r.status, 401);
    let base = Image::new("log-base", 32);
    let child_image = Image::child("log-child", &base, 32);
    c.push_repo(
        &format!("{user}/basic"),
        std::slice::from_ref(&base),
        "latest",
        &basic,
    )
    .await;
    // A token push, as Docker does it over plain HTTP.
    let repo = format!("{user}/tokened");
    let write = issued_token(&c, "PUT", &format!("/v1/repositories/{repo}/"), &basic).await;
    let token = Auth::Token(write.clone());
    c.push_image(&child_image, &token).await;
    let r = c
        .put(
            &format!("/v1/repositories/{repo}/tags/latest"),
            format!("\"{}\"", child_image.id),
            &token,
        )
        .await;
    assert_eq!(r.status, 200);
    let read = issued_token(
        &c,
        "GET",
        &format!("/v1/repositories/{repo}/images"),
        &basic,
    )
    .await;
    let r = c
        .get(
            &format!("/v1/repositories/{repo}/tags"),
            &Auth::Token(read.clone()),
        )
        .await;
    assert_eq!(r.status, 200);
    let admin = issued_token(
        &c,
        "PUT",
        "/v1/repositories/library/logged/",
        &Auth::basic("logadmin", admin_password),
    )
    .await;

    let read_logs = || {
        let mut logs = String::new();
        for p in [&err_path, &out_path] {
            let mut raw = Vec::new();
            std::fs::File::open(p)
                .unwrap()
                .read_to_end(&mut raw)
                .unwrap();
            logs.push_str(&String::from_utf8_lossy(&raw));
        }
        logs
    };
    // Lines reach stderr from a logging thread of their own: wait until the last request's
    // access line is out before killing the server, or a loaded machine cuts the log short.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !read_logs().contains("path=\"/v1/repositories/library/logged/\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "the last request never reached the log: {}",
            read_logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let logs = read_logs();
    assert!(
        logs.lines().count() > 20 && logs.contains("/v1/users"),
        "the log is too thin to prove anything: {logs}"
    );
    let b64 = |s: String| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let signature = |t: &str| t.split(',').next().unwrap().to_string();
    let secrets = [
        ("user password", password.to_string()),
        ("wrong password", "a-wrong-password".to_string()),
        ("admin password", admin_password.to_string()),
        ("token secret", token_secret.to_string()),
        ("Basic of the user", b64(format!("{user}:{password}"))),
        (
            "Basic of the admin",
            b64(format!("logadmin:{admin_password}")),
        ),
        ("write token", write.clone()),
        ("write token signature", signature(&write)),
        ("read token signature", signature(&read)),
        ("admin token signature", signature(&admin)),
    ];
    for (what, secret) in secrets {
        assert!(!logs.contains(&secret), "the {what} is in the log");
    }
}
