//! Rules of `regfs serve` that hold on every route, checked over the route table itself
//! (`Endpoint::ALL`) rather than a sample, so a new endpoint is covered the day it is added:
//! wrong credentials of any kind are a 401 everywhere (API.md section 9), and every JSON body
//! that is empty or blank is a 400 (API.md section 2). Also: password checks stay bounded under a
//! flood of wrong passwords, a repository write never waits behind a store scan, and image
//! responses carry the image's real `Last-Modified` (issues 17 and 18).

use regfs::server::routes::{AuthClass, BodyKind, Endpoint};

use crate::common::{ADMIN_PASSWORD, ALICE, Auth, Client, Image, Resp, TestServer};

/// The challenge a 401 carries on each class of route.
fn challenge(class: AuthClass) -> &'static str {
    match class {
        AuthClass::Registry => "Token",
        AuthClass::Index | AuthClass::TokenCheck => "Basic realm=\"auth required\",Token",
    }
}

/// An endpoint's path with its placeholders filled in.
fn path_of(endpoint: Endpoint, image: &str) -> String {
    endpoint
        .spec()
        .path
        .replace("{image}", image)
        .replace("{repo}", "alice/app")
        .replace("{tag}", "latest")
        .replace("{user}", ALICE)
}

/// Sends `method` to an endpoint with `body` (JSON endpoints) and `auth`.
async fn call(c: &Client, method: &str, path: &str, body: &str, auth: &Auth) -> Resp {
    c.send(c.request(method, path).body(body.to_string()), auth)
        .await
}

/// A body the endpoint would accept, so that only the credentials can refuse the request.
fn good_body(endpoint: Endpoint, image: &Image) -> String {
    match endpoint {
        Endpoint::Register => {
            r#"{"username":"newcomer","password":"pass-word","email":"n@example.com"}"#.into()
        }
        Endpoint::UpdateUser => r#"{"email":"alice2@example.com"}"#.into(),
        Endpoint::PutImageJson => String::from_utf8(image.json.clone()).unwrap(),
        Endpoint::PutTag => format!("\"{}\"", image.id),
        Endpoint::PutRepo | Endpoint::PutRepoImages => format!("[{{\"id\":\"{}\"}}]", image.id),
        Endpoint::PutLayer => String::from_utf8_lossy(&image.layer).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn wrong_credentials_are_401_on_every_route_and_method() {
    let server = TestServer::start();
    let c = server.client();
    let (_, child) = c.push_alice_app("rules-auth", 100, 200).await;
    // A token this server never issued: right shape, another secret.
    let foreign = regfs::server::auth::TokenSigner::new(b"another-secret", 3600).issue(
        &regfs::names::RepoRef::parse_full("alice/app").unwrap(),
        regfs::server::auth::Access::Write,
        regfs::server::now_unix(),
    );
    let wrong: [(&str, Auth); 5] = [
        ("malformed Basic", Auth::Raw("Basic !!!".into())),
        ("unknown scheme", Auth::Raw("Bearer abc".into())),
        ("wrong password", Auth::basic(ALICE, "not-her-password")),
        ("unknown user", Auth::basic("nobody_here", "whatever")),
        ("unknown token", Auth::Token(foreign)),
    ];
    let mut checked = 0;
    for &endpoint in Endpoint::ALL {
        let spec = endpoint.spec();
        let path = path_of(endpoint, &child.id);
        let body = good_body(endpoint, &child);
        let mut methods = vec![spec.method];
        if spec.method == "GET" {
            methods.push("HEAD");
        }
        for method in methods {
            for (what, auth) in &wrong {
                let r = call(&c, method, &path, &body, auth).await;
                if spec.auth == AuthClass::TokenCheck && *what == "unknown token" {
                    // API.md section 9: `PUT .../auth` answers 403 for a token it did not issue.
                    assert_eq!(r.status, 403, "{method} {path} with {what}");
                    continue;
                }
                assert_eq!(r.status, 401, "{method} {path} with {what}: {}", r.text());
                assert_eq!(
                    r.header("www-authenticate").as_deref(),
                    Some(challenge(spec.auth)),
                    "{method} {path} with {what}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} checks");
    // Nothing was changed by any of them: the fixture still pulls, anonymously.
    let r = c
        .get(&format!("/v1/images/{}/ancestry", child.id), &Auth::None)
        .await;
    assert_eq!(r.status, 200);
    let r = c.get("/v1/repositories/alice/app/tags", &Auth::None).await;
    assert_eq!(r.json()["latest"], child.id.as_str());
}

#[tokio::test]
async fn not_a_route_stays_404_whatever_the_credentials() {
    // `/v2/` must stay a 404, or Docker takes the server for a v2 registry wanting a login.
    let server = TestServer::start();
    let c = server.client();
    for path in ["/v2/", "/v2/library/x/manifests/latest", "/nothing/here"] {
        let r = c.get(path, &Auth::Raw("Basic !!!".into())).await;
        assert_eq!(r.status, 404, "{path}");
    }
}

#[tokio::test]
async fn empty_or_blank_json_bodies_are_400_on_every_json_endpoint() {
    let server = TestServer::start();
    let c = server.client();
    let (_, child) = c.push_alice_app("rules-body", 100, 200).await;
    // An image not pushed yet, so that PUT json could only fail on its body.
    let fresh = Image::new("rules-body-fresh", 10);
    let admin = Auth::admin();
    let json_endpoints: Vec<Endpoint> = Endpoint::ALL
        .iter()
        .copied()
        .filter(|e| e.spec().body == BodyKind::Json)
        .collect();
    assert!(json_endpoints.len() >= 6, "{json_endpoints:?}");
    for endpoint in json_endpoints {
        let spec = endpoint.spec();
        let image = if endpoint == Endpoint::PutImageJson {
            &fresh.id
        } else {
            &child.id
        };
        let path = path_of(endpoint, image);
        for body in ["", "  \n"] {
            let r = call(&c, spec.method, &path, body, &admin).await;
            assert_eq!(r.status, 400, "{} {path} with {body:?}", spec.method);
            assert_eq!(r.error(), "Invalid JSON", "{} {path}", spec.method);
        }
    }
    // What the mount sends on mkdir still creates a repository.
    let r = c.put("/v1/repositories/alice/made/", "[]", &admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.get("/v1/repositories/alice/made/tags", &Auth::None).await;
    assert_eq!(r.status, 200);
    // The admin credentials were right all along.
    let r = c
        .get("/v1/users/", &Auth::basic("admin", ADMIN_PASSWORD))
        .await;
    assert_eq!(r.status, 200);
}
