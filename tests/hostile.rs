//! Hostile input: requests generated from a grammar of the API's real route shapes, where every
//! path segment, header and body is sometimes valid and sometimes hostile, sent by the tens of
//! thousands to the in-process router over pre-populated memory storage; a table of every path
//! parameter position against every hostile value; and raw bytes that are not HTTP at all over a
//! real socket.
//!
//! The properties are API.md section 9 and 10: never a panic, never a 5xx for a client mistake,
//! every 4xx a JSON `{"error": ...}` (or the exact body the spec prescribes), and afterwards the
//! data nobody was allowed to touch is intact and a normal push and pull still work.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use regfs::names::{RepoRef, Username};
use regfs::registry::{Registry, RegistryConfig};
use regfs::server::auth::{Access, TokenSigner};
use regfs::server::state::AppState;
use regfs::storage::StorageConfig;
use serde_json::{Value, json};
use warp::http::{HeaderValue, Response};

use crate::common::{Image, TestServer};

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-secret";
const USER: &str = "alice";
const USER_PASSWORD: &str = "alice-pass";
/// Owns the data that must survive: longer than any generated valid name, so no generated
/// request can address it.
const KEEPER: &str = "keeper_of_fixtures";
const KEEPER_PASSWORD: &str = "keeper-pass";
const SECRET: &[u8] = b"hostile-test-secret";
/// Small, so that a body "just over the layer limit" is cheap to generate.
const LAYER_LIMIT: usize = 64 * 1024;
const JSON_LIMIT: usize = regfs::server::JSON_LIMIT as usize;

fn base_image() -> Image {
    Image::new("hostile-base", 300)
}
fn child_image() -> Image {
    Image::child("hostile-child", &base_image(), 5000)
}
/// An id that no fixture pushes, so generated pushes can start one.
fn fresh_id() -> String {
    Image::new("hostile-fresh", 1).id
}

// ------------------------------------------------------------------------------------------
// The server under test, in process.

struct Fixture {
    state: AppState,
}

impl Fixture {
    async fn new() -> Self {
        let store = regfs::storage::open(&StorageConfig::Memory).unwrap();
        let admin: Username = ADMIN.parse().unwrap();
        let registry = Registry::new(
            store,
            RegistryConfig {
                max_layer_size: LAYER_LIMIT as u64,
                admin: Some((admin, ADMIN_PASSWORD.to_string())),
                ..RegistryConfig::default()
            },
        );
        let fx = Fixture {
            state: AppState {
                registry,
                signer: TokenSigner::new(SECRET, 3600),
                public_host: "registry.test".into(),
                uploads: regfs::server::state::UploadSlots::new(64),
                timeouts: regfs::server::listen::Timeouts::default(),
                redirect_layers: false,
            },
        };
        for (user, password) in [(USER, USER_PASSWORD), (KEEPER, KEEPER_PASSWORD)] {
            let body = json!({"username": user, "password": password, "email": format!("{user}@example.com")});
            let r = fx
                .send(&Req::new("POST", "/v1/users/").body(body.to_string()))
                .await;
            assert_eq!(r.status(), 201, "register {user}");
        }
        let images = [base_image(), child_image()];
        fx.push(
            &format!("{USER}/app"),
            &images,
            "latest",
            basic(USER, USER_PASSWORD),
        )
        .await;
        fx.push(
            "library/base",
            &images[..1],
            "latest",
            basic(ADMIN, ADMIN_PASSWORD),
        )
        .await;
        fx.push(
            &format!("{KEEPER}/safe"),
            &images,
            "v1",
            basic(KEEPER, KEEPER_PASSWORD),
        )
        .await;
        fx
    }

    async fn send(&self, req: &Req) -> Response<Bytes> {
        let mut b = warp::test::request()
            .method(req.method)
            .path(&uri_safe(&req.path));
        match &req.body {
            Body::Bytes(v) => b = b.body(v),
            Body::OverJson => b = b.body(vec![b' '; JSON_LIMIT + 1]),
            Body::OverLayer => b = b.body(vec![7u8; LAYER_LIMIT + 1]),
        }
        // After the body, so a generated Content-Length replaces the true one.
        for (name, value) in &req.headers {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                b = b.header(*name, v);
            }
        }
        b.reply(&regfs::server::routes::api(self.state.clone()))
            .await
    }

    /// Pushes images and a tag the way `docker push` does, asserting every step.
    async fn push(&self, repo: &str, images: &[Image], tag: &str, auth: Vec<u8>) {
        let list: Vec<Value> = images.iter().map(|i| json!({"id": i.id})).collect();
        let list = Value::Array(list).to_string();
        let ok = |r: &Response<Bytes>, what: &str, want: u16| {
            assert_eq!(r.status(), want, "{what}: {:?}", r.body());
        };
        let r = self
            .send(
                &Req::new("PUT", &format!("/v1/repositories/{repo}/"))
                    .auth(&auth)
                    .body(list.clone()),
            )
            .await;
        ok(&r, "PUT repo", 200);
        for image in images {
            let json_path = format!("/v1/images/{}/json", image.id);
            if self.send(&Req::new("GET", &json_path)).await.status() == 200 {
                continue;
            }
            let r = self
                .send(
                    &Req::new("PUT", &json_path)
                        .auth(&auth)
                        .body(image.json.clone()),
                )
                .await;
            ok(&r, "PUT json", 200);
            let r = self
                .send(
                    &Req::new("PUT", &format!("/v1/images/{}/layer", image.id))
                        .auth(&auth)
                        .body(image.layer.clone()),
                )
                .await;
            ok(&r, "PUT layer", 200);
            let r = self
                .send(
                    &Req::new("PUT", &format!("/v1/images/{}/checksum", image.id))
                        .auth(&auth)
                        .header("x-docker-checksum-payload", image.checksum().into_bytes()),
                )
                .await;
            ok(&r, "PUT checksum", 200);
        }
        let top = &images[images.len() - 1];
        let r = self
            .send(
                &Req::new("PUT", &format!("/v1/repositories/{repo}/tags/{tag}"))
                    .auth(&auth)
                    .body(format!("\"{}\"", top.id)),
            )
            .await;
        ok(&r, "PUT tag", 200);
        let r = self
            .send(
                &Req::new("PUT", &format!("/v1/repositories/{repo}/images"))
                    .auth(&auth)
                    .body(list),
            )
            .await;
        ok(&r, "PUT images", 204);
    }

    /// Pulls `repo:tag` as `docker pull` does and checks every byte against `images`.
    async fn pull(&self, repo: &str, tag: &str, images: &[Image]) {
        let r = self
            .send(&Req::new("GET", &format!("/v1/repositories/{repo}/images")))
            .await;
        assert_eq!(r.status(), 200, "GET images of {repo}");
        let r = self
            .send(&Req::new("GET", &format!("/v1/repositories/{repo}/tags")))
            .await;
        assert_eq!(r.status(), 200, "GET tags of {repo}");
        let tags: Value = serde_json::from_slice(r.body()).unwrap();
        let top = &images[images.len() - 1];
        assert_eq!(tags[tag], json!(top.id), "tag {tag} of {repo}: {tags}");
        let r = self
            .send(&Req::new("GET", &format!("/v1/images/{}/ancestry", top.id)))
            .await;
        let ancestry: Vec<String> = serde_json::from_slice(r.body()).unwrap();
        let want: Vec<String> = images.iter().rev().map(|i| i.id.clone()).collect();
        assert_eq!(ancestry, want);
        for image in images {
            let r = self
                .send(&Req::new("GET", &format!("/v1/images/{}/json", image.id)))
                .await;
            assert_eq!(r.status(), 200);
            assert_eq!(
                r.body().as_ref(),
                image.json.as_slice(),
                "json of {}",
                image.id
            );
            let r = self
                .send(&Req::new("GET", &format!("/v1/images/{}/layer", image.id)))
                .await;
            assert_eq!(r.status(), 200);
            assert!(
                r.body().as_ref() == image.layer.as_slice(),
                "layer of {}",
                image.id
            );
        }
    }

    /// What no generated request may change, and a normal push and pull afterwards.
    async fn assert_intact_and_usable(&self, seed: &str) {
        let images = [base_image(), child_image()];
        self.pull(&format!("{KEEPER}/safe"), "v1", &images).await;
        let r = self
            .send(&Req::new("GET", "/v1/users/").auth(&basic(KEEPER, KEEPER_PASSWORD)))
            .await;
        assert_eq!(r.status(), 200, "the keeper still logs in");
        let r = self.send(&Req::new("GET", "/v1/search?q=keeper_of")).await;
        let found: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(found["num_results"], json!(1), "{found}");
        let fresh = [base_image(), Image::child(seed, &base_image(), 2000)];
        let repo = format!("{KEEPER}/after");
        self.push(&repo, &fresh, "latest", basic(KEEPER, KEEPER_PASSWORD))
            .await;
        self.pull(&repo, "latest", &fresh).await;
    }
}

// ------------------------------------------------------------------------------------------
// A generated request.

#[derive(Debug, Clone)]
enum Body {
    Bytes(Vec<u8>),
    /// One byte over the JSON limit (built when sent, so cases stay cheap to generate).
    OverJson,
    /// One byte over the layer limit.
    OverLayer,
}

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Body,
}

impl Req {
    fn new(method: &'static str, path: &str) -> Self {
        Req {
            method,
            path: path.to_string(),
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
        }
    }
    fn header(mut self, name: &'static str, value: Vec<u8>) -> Self {
        self.headers.push((name, value));
        self
    }
    fn auth(self, value: &[u8]) -> Self {
        self.header("authorization", value.to_vec())
    }
    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Bytes(body.into());
        self
    }
}

fn b64(s: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn basic(user: &str, password: &str) -> Vec<u8> {
    format!("Basic {}", b64(format!("{user}:{password}"))).into_bytes()
}

fn token(repo: &str, access: Access, issued: i64) -> String {
    let repo = RepoRef::parse_full(repo).unwrap();
    TokenSigner::new(SECRET, 3600).issue(&repo, access, issued)
}

/// Percent-encodes what an HTTP request target cannot carry (spaces, controls, non-ASCII,
/// quotes, ...), keeping `%` as is so invalid escapes reach the server as written.
fn uri_safe(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_encode_all(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02x}")).collect()
}

// ------------------------------------------------------------------------------------------
// The grammar.

/// Values that are wrong in every path position.
const HOSTILE: &[&str] = &[
    "..",
    ".",
    "%2e%2e",
    "%2E%2e",
    ".%2e",
    "..%2f..%2fetc%2fpasswd",
    "a%2fb",
    "%2f",
    "%5c..%5c",
    "%00",
    "a%00b",
    "%ff%fe",
    "%c3%28",
    "%ed%a0%80",
    "%",
    "%zz",
    "%2",
    "%e2%80%ae",
    "%c3%a9",
    "%20",
    "a%20b",
    "a;b",
    "~root",
];

fn hostile_segment() -> BoxedStrategy<String> {
    prop_oneof![
        6 => proptest::sample::select(HOSTILE).prop_map(str::to_string),
        1 => "[a-z]{300,400}",
        1 => (300usize..1000).prop_map(|n| "%2e".repeat(n / 3)),
        1 => any::<String>().prop_map(|s| percent_encode_all(s.as_bytes())),
        1 => any::<String>(),
        1 => proptest::collection::vec(any::<u8>(), 1..12).prop_map(|b| percent_encode_all(&b)),
        1 => "[ -~]{1,12}".prop_map(|s| s.replace(['/', '?', '#'], "")),
    ]
    .boxed()
}

fn sometimes_hostile(valid: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![5 => valid, 1 => hostile_segment()].boxed()
}

fn namespace() -> BoxedStrategy<String> {
    sometimes_hostile(
        prop_oneof![
            6 => Just(USER.to_string()),
            3 => Just("library".to_string()),
            1 => Just(ADMIN.to_string()),
            1 => "[a-z0-9_]{4,10}",
            1 => "[a-zA-Z0-9_\\-]{1,40}",
        ]
        .boxed(),
    )
}

fn repo_name() -> BoxedStrategy<String> {
    sometimes_hostile(
        prop_oneof![
            6 => Just("app".to_string()),
            3 => Just("base".to_string()),
            1 => "[a-z0-9._\\-]{1,12}",
            1 => Just(base_image().id),
        ]
        .boxed(),
    )
}

fn tag_name() -> BoxedStrategy<String> {
    sometimes_hostile(
        prop_oneof![
            3 => Just("latest".to_string()),
            1 => "[A-Za-z0-9_][A-Za-z0-9_.\\-]{0,10}",
            1 => "[A-Za-z0-9_.\\-]{125,130}",
        ]
        .boxed(),
    )
}

fn image_id() -> BoxedStrategy<String> {
    sometimes_hostile(
        prop_oneof![
            3 => Just(base_image().id),
            3 => Just(child_image().id),
            3 => Just(fresh_id()),
            1 => "[0-9a-f]{64}",
            1 => "[0-9a-f]{16}",
            1 => "[0-9a-fA-F]{60,70}",
        ]
        .boxed(),
    )
}

fn query() -> BoxedStrategy<String> {
    prop_oneof![
        4 => Just(String::new()),
        1 => "[a-z0-9=&%]{0,20}".prop_map(|q| format!("?{q}")),
        1 => hostile_segment().prop_map(|q| format!("?q={q}&{q}")),
    ]
    .boxed()
}

/// Weighted towards the methods the routes serve, so most cases get past method dispatch.
fn method() -> BoxedStrategy<&'static str> {
    prop_oneof![
        5 => Just("GET"),
        5 => Just("PUT"),
        1 => Just("HEAD"),
        2 => Just("DELETE"),
        1 => Just("POST"),
        1 => Just("PATCH"),
        1 => Just("OPTIONS"),
    ]
    .boxed()
}

fn repo_path() -> BoxedStrategy<String> {
    let repo = prop_oneof![
        3 => (namespace(), repo_name()).prop_map(|(ns, r)| format!("{ns}/{r}")),
        1 => repo_name(),
        1 => (namespace(), repo_name(), repo_name()).prop_map(|(a, b, c)| format!("{a}/{b}/{c}")),
    ];
    let suffix = prop_oneof![
        2 => Just("/".to_string()),
        1 => Just(String::new()),
        2 => Just("/images".to_string()),
        3 => Just("/tags".to_string()),
        3 => tag_name().prop_map(|t| format!("/tags/{t}")),
        1 => tag_name().prop_map(|t| format!("/tags/{t}/json")),
        1 => Just("/auth".to_string()),
        1 => Just("/json".to_string()),
        1 => hostile_segment().prop_map(|s| format!("/{s}")),
    ];
    (repo, suffix, query())
        .prop_map(|(r, s, q)| format!("/v1/repositories/{r}{s}{q}"))
        .boxed()
}

fn image_path() -> BoxedStrategy<String> {
    let op = prop_oneof![
        3 => Just("json".to_string()),
        3 => Just("layer".to_string()),
        2 => Just("ancestry".to_string()),
        2 => Just("checksum".to_string()),
        1 => Just("files".to_string()),
        1 => Just("diff".to_string()),
        1 => hostile_segment(),
    ];
    (image_id(), op, query())
        .prop_map(|(id, op, q)| format!("/v1/images/{id}/{op}{q}"))
        .boxed()
}

fn other_path() -> BoxedStrategy<String> {
    let user = sometimes_hostile(
        prop_oneof![
            Just(USER.to_string()),
            Just(ADMIN.to_string()),
            "[a-z0-9_]{4,10}"
        ]
        .boxed(),
    );
    prop_oneof![
        2 => Just("/v1/_ping".to_string()),
        1 => Just("/_ping".to_string()),
        3 => prop_oneof![Just("/v1/users/"), Just("/v1/users")].prop_map(str::to_string),
        2 => user.prop_map(|u| format!("/v1/users/{u}/")),
        3 => prop_oneof![
            Just(String::new()),
            "[a-z_]{0,8}",
            hostile_segment(),
        ]
        .prop_map(|q| format!("/v1/search?q={q}")),
        1 => Just("/v1/search".to_string()),
        1 => Just("/v2/".to_string()),
        2 => proptest::collection::vec(hostile_segment(), 0..4)
            .prop_map(|s| format!("/{}", s.join("/"))),
        1 => "/[ -~]{0,40}",
    ]
    .boxed()
}

fn authorization() -> BoxedStrategy<Option<Vec<u8>>> {
    let now = regfs::server::now_unix();
    let repos = [
        format!("{USER}/app"),
        "library/base".into(),
        format!("{USER}/other"),
    ];
    let valid_token = (
        proptest::sample::select(repos.to_vec()),
        prop_oneof![
            Just(Access::Read),
            Just(Access::Write),
            Just(Access::Delete)
        ],
    )
        .prop_map(move |(r, a)| token(&r, a, now));
    prop_oneof![
        60 => Just(None),
        40 => Just(Some(basic(ADMIN, ADMIN_PASSWORD))),
        30 => Just(Some(basic(USER, USER_PASSWORD))),
        20 => Just(Some(basic(ADMIN, "wrong-password"))),
        // Rare: a wrong password for a real account costs a full argon2 check.
        1 => Just(Some(basic(USER, "wrong-password"))),
        20 => ("[a-z0-9_]{0,12}", "[ -~]{0,12}").prop_map(|(u, p)| Some(basic(&u, &p))),
        20 => "[A-Za-z0-9+/=!]{0,40}".prop_map(|s| Some(format!("Basic {s}").into_bytes())),
        10 => proptest::collection::vec(any::<u8>(), 0..30)
            .prop_map(|b| Some(format!("Basic {}", b64(b)).into_bytes())),
        40 => valid_token.clone().prop_map(|t| Some(format!("Token {t}").into_bytes())),
        10 => valid_token.clone().prop_map(|t| Some(format!("Token Token {t}").into_bytes())),
        10 => Just(Some(format!("Token {}", token(&format!("{USER}/app"), Access::Write, now - 7200)).into_bytes())),
        20 => (valid_token, any::<proptest::sample::Index>(), proptest::char::range('!', '~'))
            .prop_map(|(t, i, c)| {
                let mut chars: Vec<char> = t.chars().collect();
                let i = i.index(chars.len());
                chars[i] = c;
                Some(format!("Token {}", chars.into_iter().collect::<String>()).into_bytes())
            }),
        10 => "signature=[0-9a-f]{0,8},repository=\"[ -~]{0,20}\",access=[a-z]{0,6}(,expires=[0-9]{0,12})?"
            .prop_map(|t| Some(format!("Token {t}").into_bytes())),
        10 => prop_oneof![Just("Bearer abc"), Just("Digest x"), Just(""), Just("Token "), Just("Basic")]
            .prop_map(|s| Some(s.as_bytes().to_vec())),
        10 => proptest::collection::vec(any::<u8>(), 0..60).prop_map(Some),
        10 => (1usize..4).prop_map(|k| Some(format!("Basic {}", "QUFB".repeat(k * 600)).into_bytes())),
    ]
    .boxed()
}

fn other_headers() -> BoxedStrategy<Vec<(&'static str, Vec<u8>)>> {
    let range = prop_oneof![
        "bytes=[0-9]{0,6}-[0-9]{0,6}",
        "bytes=-[0-9]{0,25}",
        "[ -~]{0,20}",
        "bytes=[0-9]{1,3}-[0-9]{1,3},[0-9]{1,3}-",
    ];
    let checksum = prop_oneof![
        Just(String::new()),
        "sha256:[0-9a-f]{64}",
        "[ -~]{0,30}",
        Just(base_image().checksum()),
    ];
    let content_type = prop_oneof![
        Just("application/json".to_string()),
        Just("application/octet-stream".to_string()),
        "[ -~]{0,30}",
    ];
    let optional = |name: &'static str, s: BoxedStrategy<String>| {
        proptest::option::weighted(0.25, s).prop_map(move |v| v.map(|v| (name, v.into_bytes())))
    };
    (
        optional("range", range.boxed()),
        optional("x-docker-checksum-payload", checksum.boxed()),
        optional("content-type", content_type.boxed()),
        optional(
            "x-docker-token",
            prop_oneof![Just("true".to_string()), "[ -~]{0,8}"].boxed(),
        ),
        optional(
            "content-length",
            prop_oneof![(0u64..100).prop_map(|n| n.to_string()), "[ -~]{0,22}"].boxed(),
        ),
        optional("if-modified-since", "[ -~]{0,30}".boxed()),
        optional("host", "[ -~]{0,40}".boxed()),
        optional("x-docker-endpoints", "[ -~]{0,40}".boxed()),
    )
        .prop_map(|(a, b, c, d, e, f, g, h)| {
            [a, b, c, d, e, f, g, h].into_iter().flatten().collect()
        })
        .boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        any::<String>().prop_map(Value::String),
        Just(json!(base_image().id)),
        Just(json!(fresh_id())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("parent".to_string()),
                    Just("checksum".to_string()),
                    Just("username".to_string()),
                    Just("password".to_string()),
                    Just("email".to_string()),
                    "[a-zA-Z]{0,6}",
                ],
                inner,
                0..4,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

fn body() -> BoxedStrategy<Body> {
    let id = prop_oneof![Just(base_image().id), Just(fresh_id()), "[0-9a-f]{64}"];
    let right_types = prop_oneof![
        Just("[]".to_string()),
        id.clone()
            .prop_map(|i| format!("[{{\"id\":\"{i}\",\"Tag\":\"\"}}]")),
        id.clone()
            .prop_map(|i| format!("[{{\"id\":\"{i}\",\"checksum\":\"tarsum+sha256:00\"}}]")),
        id.clone().prop_map(|i| format!("\"{i}\"")),
        id.clone()
            .prop_map(|i| format!("{{\"id\":\"{i}\",\"created\":\"2014-10-01T00:00:00Z\"}}")),
        (id.clone(), id).prop_map(|(i, p)| format!("{{\"id\":\"{i}\",\"parent\":\"{p}\"}}")),
        ("[a-z0-9_]{3,12}", "[ -~]{3,10}", "[a-z@.]{0,12}").prop_map(|(u, p, e)| {
            json!({"username": u, "password": p, "email": e}).to_string()
        }),
        ("[ -~]{0,10}", "[a-z@.]{0,12}")
            .prop_map(|(p, e)| json!({"password": p, "email": e}).to_string()),
    ];
    prop_oneof![
        6 => Just(Body::Bytes(Vec::new())),
        4 => right_types.prop_map(|s| Body::Bytes(s.into_bytes())),
        4 => json_value().prop_map(|v| Body::Bytes(v.to_string().into_bytes())),
        2 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(Body::Bytes),
        1 => prop_oneof![Just("{"), Just("[{\"id\":"), Just("\"unterminated"), Just("nul\0l")]
            .prop_map(|s| Body::Bytes(s.as_bytes().to_vec())),
        1 => Just(Body::OverJson),
        1 => Just(Body::OverLayer),
    ]
    .boxed()
}

fn request(path: BoxedStrategy<String>) -> BoxedStrategy<Req> {
    (method(), path, authorization(), other_headers(), body())
        .prop_map(|(method, path, auth, mut headers, body)| {
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            Req {
                method,
                path,
                headers,
                body,
            }
        })
        .boxed()
}

// ------------------------------------------------------------------------------------------
// The properties.

/// What every response to any request must satisfy.
fn check(req: &Req, res: &Response<Bytes>) -> Result<(), TestCaseError> {
    let status = res.status();
    prop_assert!(
        !status.is_server_error(),
        "{} {} -> {}: {:?}",
        req.method,
        req.path,
        status,
        res.body()
    );
    if status.is_client_error() && req.method != "HEAD" {
        let v: Value = serde_json::from_slice(res.body()).map_err(|e| {
            TestCaseError::fail(format!(
                "{} {} -> {status}: body is not JSON ({e}): {:?}",
                req.method,
                req.path,
                res.body()
            ))
        })?;
        // API.md section 1: `docker login` compares this exact body.
        let duplicate_user = v == json!("Username or email already exists");
        prop_assert!(
            v["error"].is_string() || (duplicate_user && status == 400 && req.method == "POST"),
            "{} {} -> {status}: {v}",
            req.method,
            req.path
        );
    }
    if status == 401 {
        prop_assert!(
            res.headers().contains_key("www-authenticate"),
            "401 without a challenge"
        );
    }
    Ok(())
}

/// Runs `cases` generated requests against one fixture, then checks it is intact and usable.
fn run_property(name: &str, cases: u32, path: BoxedStrategy<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fx = rt.block_on(Fixture::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        // ChaCha, the default, dominates the run time in a debug build.
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..Config::default()
    });
    let started = Instant::now();
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let result = runner.run(&request(path), |req| {
        let res = rt.block_on(fx.send(&req));
        *statuses
            .borrow_mut()
            .entry(res.status().as_u16())
            .or_default() += 1;
        check(&req, &res)
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    // Shown with --nocapture: how many cases reached real data (2xx) rather than a refusal.
    eprintln!(
        "{name}: {cases} requests in {:?}, statuses {:?}",
        started.elapsed(),
        statuses.borrow()
    );
    rt.block_on(fx.assert_intact_and_usable(name));
}

#[test]
fn generated_repository_requests_never_fail_the_server() {
    run_property("repository routes", 8000, repo_path());
}

#[test]
fn generated_image_requests_never_fail_the_server() {
    run_property("image routes", 7000, image_path());
}

#[test]
fn generated_index_and_other_requests_never_fail_the_server() {
    run_property("index and other routes", 5000, other_path());
}

/// Every path parameter position of the API, as `(what, path with {} for the value)`.
fn positions() -> Vec<(&'static str, String)> {
    vec![
        ("user", "/v1/users/{}/".into()),
        ("namespace", "/v1/repositories/{}/app/".into()),
        ("namespace", "/v1/repositories/{}/app/tags".into()),
        ("namespace", "/v1/repositories/{}/app/images".into()),
        ("repository", format!("/v1/repositories/{USER}/{{}}/")),
        ("repository", format!("/v1/repositories/{USER}/{{}}/tags")),
        ("repository", format!("/v1/repositories/{USER}/{{}}/auth")),
        ("repository", format!("/v1/repositories/{USER}/{{}}/json")),
        ("library repository", "/v1/repositories/{}/".into()),
        (
            "library repository",
            "/v1/repositories/{}/tags/latest".into(),
        ),
        ("library repository", "/v1/repositories/{}/images".into()),
        ("tag", format!("/v1/repositories/{USER}/app/tags/{{}}")),
        ("tag", format!("/v1/repositories/{USER}/app/tags/{{}}/json")),
        ("tag", "/v1/repositories/base/tags/{}".into()),
        ("image id", "/v1/images/{}/json".into()),
        ("image id", "/v1/images/{}/layer".into()),
        ("image id", "/v1/images/{}/ancestry".into()),
        ("image id", "/v1/images/{}/checksum".into()),
        ("image id", "/v1/images/{}/files".into()),
    ]
}

/// Every path parameter position against every hostile value, with valid admin credentials so
/// writes get past authentication to the name checks.
#[test]
fn every_path_parameter_refuses_every_hostile_value() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fx = rt.block_on(Fixture::new());
    let long = "a".repeat(300);
    let nul_raw = "a\0b".to_string();
    let unicode = "é".to_string();
    let mut values: Vec<&str> = HOSTILE.to_vec();
    values.extend([long.as_str(), nul_raw.as_str(), unicode.as_str()]);
    let base = base_image().id;
    let positions = positions();
    let admin = basic(ADMIN, ADMIN_PASSWORD);
    let bodies = [
        format!("\"{base}\""),
        format!("[{{\"id\":\"{base}\"}}]"),
        json!({"password": "new-password", "email": "x@example.com"}).to_string(),
    ];
    let mut n = 0;
    for (what, shape) in &positions {
        for value in &values {
            let path = shape.replace("{}", value);
            for method in ["GET", "HEAD", "PUT", "DELETE", "POST"] {
                for body in &bodies {
                    let req = Req::new(method, &path).auth(&admin).body(body.clone());
                    let res = rt.block_on(fx.send(&req));
                    n += 1;
                    // API.md section 3: tag metadata is "always 200", defaults when missing.
                    let tag_json = shape.ends_with("/json") && *what == "tag";
                    if tag_json && matches!(method, "GET" | "HEAD") && res.status() == 200 {
                        let nulls = r#"{"last_update":null,"docker_version":null,"docker_go_version":null,"arch":null,"os":null,"kernel":null}"#;
                        if method == "GET" {
                            assert_eq!(res.body().as_ref(), nulls.as_bytes(), "{path}");
                        }
                        continue;
                    }
                    assert!(
                        res.status().is_client_error(),
                        "{what} {value:?}: {method} {path} -> {}: {:?}",
                        res.status(),
                        res.body()
                    );
                    check(&req, &res).unwrap_or_else(|e| panic!("{what} {value:?}: {e}"));
                }
            }
        }
    }
    // Search takes any text, hostile or not, and answers it; only an over-long term is a 400.
    for value in &values {
        let req = Req::new("GET", &format!("/v1/search?q={value}"));
        let res = rt.block_on(fx.send(&req));
        n += 1;
        let want = if value.len() > 255 { 400 } else { 200 };
        assert_eq!(res.status(), want, "search {value:?}");
        check(&req, &res).unwrap_or_else(|e| panic!("search {value:?}: {e}"));
    }
    eprintln!("path table: {n} requests");
    rt.block_on(fx.assert_intact_and_usable("table"));
}

// ------------------------------------------------------------------------------------------
// Over a real socket: bytes the router never sees, because they are not valid HTTP.

/// What came back for raw bytes.
#[derive(Debug, PartialEq)]
enum Answer {
    /// Closed without a word.
    Closed,
    Http(u16),
    /// Bytes that are not HTTP/1 (the server took the bytes for HTTP/2 and answered in frames).
    Frames,
}

/// Writes `bytes`, then reads what comes back until the server closes the connection. The
/// write side stays open, since a server may drop a connection at end of input without
/// answering what it read: a request left incomplete ends by the server's own header or body
/// timeout.
fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Answer {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    // The server may answer and close before everything is written; that is fine.
    let _ = s.write_all(bytes);
    let mut resp = Vec::new();
    // Only turns a hang into a failure: far beyond the timeouts of the servers used here.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    if let Err(e) = s.read_to_end(&mut resp) {
        // A reset is a close; a read that timed out is a server that neither answered nor
        // closed.
        let hung = matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        );
        assert!(!hung, "neither an answer nor a close: {e}");
    }
    let text = String::from_utf8_lossy(&resp[..resp.len().min(64)]).into_owned();
    if resp.is_empty() {
        Answer::Closed
    } else if text.starts_with("HTTP/1.") {
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        Answer::Http(status.unwrap_or(0))
    } else {
        Answer::Frames
    }
}

#[test]
fn raw_garbage_over_a_socket_gets_4xx_or_a_close() {
    // Short timeouts, so a request cut short (the short body) is closed soon after it stops.
    let mut cfg = TestServer::config();
    cfg.timeouts.header = Duration::from_secs(1);
    cfg.timeouts.body = Duration::from_secs(1);
    let server = TestServer::with_config(cfg);
    let tail = b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let with_path = |path: &[u8]| [b"GET ".as_slice(), path, tail].concat();
    let long_uri = format!("/v1/images/{}/json", "a".repeat(64 * 1024));
    let long_header = format!(
        "GET /v1/_ping HTTP/1.1\r\nHost: t\r\nX-Long: {}\r\nConnection: close\r\n\r\n",
        "x".repeat(1024 * 1024)
    );
    let many_headers = format!(
        "GET /v1/_ping HTTP/1.1\r\nHost: t\r\n{}Connection: close\r\n\r\n",
        (0..500)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let long_auth = format!(
        "GET /v1/users/ HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
        "QUFB".repeat(16 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("non-UTF-8 path", with_path(b"/v1/repositories/\xff\xfe/tags")),
        ("overlong UTF-8 in path", with_path(b"/v1/images/\xc0\xae\xc0\xae/json")),
        ("NUL in path", with_path(b"/v1/images/\0/json")),
        ("NUL in method", b"G\0T /v1/_ping HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
        ("space in path", with_path(b"/v1/repositories/a b/tags")),
        ("64 KiB URI", with_path(long_uri.as_bytes())),
        ("1 MiB header", long_header.into_bytes()),
        ("500 headers", many_headers.into_bytes()),
        ("64 KiB Authorization", long_auth.into_bytes()),
        ("NUL in a header", b"GET /v1/_ping HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\nConnection: close\r\n\r\n".to_vec()),
        ("non-UTF-8 Authorization", b"GET /v1/users/ HTTP/1.1\r\nHost: t\r\nAuthorization: Basic \xff\xfe\r\nConnection: close\r\n\r\n".to_vec()),
        ("header without a colon", b"GET /v1/_ping HTTP/1.1\r\nHost: t\r\nnocolon\r\n\r\n".to_vec()),
        ("bad header name", b"GET /v1/_ping HTTP/1.1\r\nHost: t\r\nBad Name: v\r\n\r\n".to_vec()),
        ("unknown version", b"GET /v1/_ping HTTP/9.9\r\nHost: t\r\n\r\n".to_vec()),
        ("no version", b"GET /v1/_ping\r\n\r\n".to_vec()),
        ("plain garbage", b"HELLO THERE\r\n\r\n".to_vec()),
        ("binary garbage", (0u8..=255).cycle().take(4096).collect()),
        ("TLS hello on plain HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec()),
        ("negative Content-Length", b"PUT /v1/repositories/alice/app/ HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n".to_vec()),
        ("huge Content-Length", b"PUT /v1/repositories/alice/app/ HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec()),
        ("two Content-Lengths", b"PUT /v1/repositories/alice/app/ HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n[]".to_vec()),
        ("short body", b"PUT /v1/repositories/alice/app/ HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\nConnection: close\r\n\r\n[]".to_vec()),
        ("broken chunks", b"PUT /v1/images/0000000000000000/layer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n".to_vec()),
        ("chunked and Content-Length", b"PUT /v1/repositories/alice/app/ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n".to_vec()),
        ("HTTP/2 preface then garbage", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00garbage".to_vec()),
    ];
    for (what, bytes) in &cases {
        let answer = raw_exchange(server.addr, bytes);
        let h2 = bytes.starts_with(b"PRI * HTTP/2.0");
        assert!(
            match answer {
                Answer::Closed => true,
                Answer::Http(status) => (400..500).contains(&status),
                Answer::Frames => h2,
            },
            "{what}: {answer:?}"
        );
    }
    // Still healthy.
    let answer = raw_exchange(
        server.addr,
        b"GET /v1/_ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(answer, Answer::Http(200));
}

/// Raw bytes in every path position, past any client's normalisation: the HTTP parser refuses
/// what is not a valid request target, the router refuses the rest.
#[test]
fn raw_path_parameters_over_a_socket_get_4xx() {
    let server = TestServer::start();
    let auth = format!(
        "Authorization: {}\r\n",
        String::from_utf8(basic(ADMIN, ADMIN_PASSWORD)).unwrap()
    );
    let long = vec![b'a'; 300];
    let values: [&[u8]; 8] = [
        b"..",
        b".",
        b"\xff\xfe",
        b"\xc0\xae\xc0\xae",
        b"%00",
        b"a\\b",
        b"%2e%2e%2f%2e%2e",
        &long,
    ];
    for (what, shape) in positions() {
        let (head, tail) = shape.split_once("{}").unwrap();
        for value in values {
            let path = [head.as_bytes(), value, tail.as_bytes()].concat();
            for method in ["GET", "PUT"] {
                let req = [
                    method.as_bytes(),
                    b" ",
                    &path,
                    b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n",
                    auth.as_bytes(),
                    b"\r\n{}",
                ]
                .concat();
                let answer = raw_exchange(server.addr, &req);
                let shown = String::from_utf8_lossy(&path);
                // Tag metadata is "always 200" (API.md section 3), whatever the tag.
                let tag_json = what == "tag" && tail == "/json" && method == "GET";
                match answer {
                    Answer::Http(200) if tag_json => {}
                    Answer::Http(status) => assert!(
                        (400..500).contains(&status),
                        "{what}: {method} {shown} -> {status}"
                    ),
                    other => panic!("{what}: {method} {shown} -> {other:?}"),
                }
            }
        }
    }
    let answer = raw_exchange(
        server.addr,
        b"GET /v1/_ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(answer, Answer::Http(200));
}
