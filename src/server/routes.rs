//! Routing: one warp filter that captures the request, and a pure parser from path to [`Route`].
//!
//! The v1 paths overlap in ways warp's `.or()` chains handle badly: a repository is one segment
//! (`library` implied) or two, and a suffix (`/images`, `/tags/<t>`, ...) says what is meant, so
//! `/v1/repositories/foo/tags/latest` is tag `latest` of `library/foo`. Parsing the path in one
//! function keeps that rule in one place, testable without a server, and lets every handler turn
//! its own errors into responses instead of warp rejections that would fall through to the next
//! route (see the module docs of `server`).

use std::convert::Infallible;
use std::time::Instant;

use bytes::{Buf, Bytes};
use futures::{StreamExt, TryStreamExt};
use warp::Filter;
use warp::http::{HeaderMap, Method};
use warp::reply::Response;

use super::error::ApiError;
use super::handlers;
use super::state::AppState;
use crate::names::{ImageId, RepoRef};

/// What a request addresses, before any name is validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/_ping`, `/v1/_ping`
    Ping,
    /// `/v1/users`, `/v1/users/`
    Users,
    /// `/v1/users/<name>/`
    User(String),
    /// `/v1/search`
    Search,
    /// `/v1/repositories/[<ns>/]<repo>/...`
    Repo(RawRepo, RepoOp),
    /// `/v1/images/<id>/...`
    Image(String, ImageOp),
    /// `/v2/...`: not a v2 registry.
    V2,
    NotFound,
}

/// A repository path as written: one segment (library) or two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRepo {
    pub namespace: Option<String>,
    pub repo: String,
}

impl RawRepo {
    /// Validates the names; a missing namespace is `library`.
    pub fn parse(&self) -> Result<RepoRef, ApiError> {
        match &self.namespace {
            Some(ns) => Ok(RepoRef::new(ns.parse()?, self.repo.parse()?)),
            None => Ok(RepoRef::library(&self.repo)?),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoOp {
    /// `.../` : create (PUT) or delete (DELETE) the repository
    Root,
    /// `.../images`
    Images,
    /// `.../auth`
    Auth,
    /// `.../tags`
    Tags,
    /// `.../tags/<tag>`
    Tag(String),
    /// `.../tags/<tag>/json`
    TagJson(String),
    /// `.../json`: metadata of `latest` (deprecated)
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageOp {
    Json,
    Layer,
    Ancestry,
    Checksum,
    Files,
    Diff,
}

impl Route {
    /// Parses a request path (without query). Trailing slashes are ignored.
    pub fn parse(path: &str) -> Route {
        let trimmed = path.trim_end_matches('/');
        let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
        match segs.as_slice() {
            ["_ping"] | ["v1", "_ping"] => Route::Ping,
            ["v1", "users"] => Route::Users,
            ["v1", "users", name] => Route::User(name.to_string()),
            ["v1", "search"] => Route::Search,
            ["v1", "images", id, op] => {
                let op = match *op {
                    "json" => ImageOp::Json,
                    "layer" => ImageOp::Layer,
                    "ancestry" => ImageOp::Ancestry,
                    "checksum" => ImageOp::Checksum,
                    "files" => ImageOp::Files,
                    "diff" => ImageOp::Diff,
                    _ => return Route::NotFound,
                };
                Route::Image(id.to_string(), op)
            }
            ["v1", "repositories", rest @ ..] => Self::parse_repo(rest),
            ["v2", ..] => Route::V2,
            _ => Route::NotFound,
        }
    }

    fn parse_repo(segs: &[&str]) -> Route {
        let n = segs.len();
        let last = |i: usize| segs.get(n.wrapping_sub(i)).copied();
        // Most specific suffix first; the remaining prefix must be one or two segments.
        let candidates: [(usize, Option<RepoOp>); 6] = [
            (
                3,
                (last(3) == Some("tags") && last(1) == Some("json"))
                    .then(|| RepoOp::TagJson(last(2).unwrap_or_default().to_string())),
            ),
            (
                2,
                (last(2) == Some("tags"))
                    .then(|| RepoOp::Tag(last(1).unwrap_or_default().to_string())),
            ),
            (1, (last(1) == Some("tags")).then_some(RepoOp::Tags)),
            (1, (last(1) == Some("images")).then_some(RepoOp::Images)),
            (1, (last(1) == Some("auth")).then_some(RepoOp::Auth)),
            (1, (last(1) == Some("json")).then_some(RepoOp::Json)),
        ];
        for (suffix, op) in candidates {
            if let Some(op) = op {
                if let Some(repo) = raw_repo(&segs[..n.saturating_sub(suffix)]) {
                    return Route::Repo(repo, op);
                }
            }
        }
        match raw_repo(segs) {
            Some(repo) => Route::Repo(repo, RepoOp::Root),
            None => Route::NotFound,
        }
    }
}

/// Which challenge a refused caller gets, and how credentials are resolved (API.md section 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthClass {
    /// Index routes: a 401 challenges for Basic (`Basic realm="auth required",Token`).
    Index,
    /// Registry routes: a 401 challenges for a token (`Token`).
    Registry,
    /// `PUT .../auth`, whose question is whether a token is valid: a token that does not
    /// verify is the answer (403, API.md section 9), not a 401. Anything else is as [`Index`].
    ///
    /// [`Index`]: AuthClass::Index
    TokenCheck,
}

impl AuthClass {
    /// Whether a 401 on this class carries the index's Basic challenge.
    pub fn index(self) -> bool {
        !matches!(self, AuthClass::Registry)
    }
}

/// What an endpoint reads from the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Nothing; a body sent anyway is ignored.
    None,
    /// A JSON document of at most [`crate::server::JSON_LIMIT`] bytes, read whole by the
    /// dispatcher before the handler runs; an empty or blank body is invalid JSON (400).
    Json,
    /// A stream the handler reads itself (a layer).
    Stream,
}

/// One line of the route table: method, path (with `{image}`, `{repo}` (`ns/name`), `{tag}`
/// and `{user}` placeholders), how its caller is resolved, and its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub auth: AuthClass,
    pub body: BodyKind,
}

/// Declares [`Endpoint`] and its table together, so no endpoint can exist without its line.
macro_rules! endpoints {
    ($( $(#[$doc:meta])* $name:ident => $method:literal $path:literal, $auth:ident, $body:ident; )*) => {
        /// Every endpoint of the API: a parsed [`Route`] plus a method. The dispatcher resolves
        /// the caller of each from its [`EndpointSpec`] before any handler runs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Endpoint { $( $(#[$doc])* $name, )* }

        impl Endpoint {
            /// The route table, in one place: tests iterate it, so a new endpoint is covered
            /// by every rule checked over the table.
            pub const ALL: &'static [Endpoint] = &[ $( Endpoint::$name, )* ];

            pub fn spec(self) -> EndpointSpec {
                match self {
                    $( Endpoint::$name => EndpointSpec {
                        method: $method,
                        path: $path,
                        auth: AuthClass::$auth,
                        body: BodyKind::$body,
                    }, )*
                }
            }
        }
    };
}

endpoints! {
    /// GET /v1/_ping (and /_ping)
    Ping => "GET" "/v1/_ping", Registry, None;
    /// POST /v1/users/
    Register => "POST" "/v1/users/", Index, Json;
    /// GET /v1/users/
    Login => "GET" "/v1/users/", Index, None;
    /// PUT /v1/users/<name>/
    UpdateUser => "PUT" "/v1/users/{user}/", Index, Json;
    /// GET /v1/search
    Search => "GET" "/v1/search", Index, None;
    /// GET /v1/images/<id>/json
    GetImageJson => "GET" "/v1/images/{image}/json", Registry, None;
    /// PUT /v1/images/<id>/json
    PutImageJson => "PUT" "/v1/images/{image}/json", Registry, Json;
    /// GET /v1/images/<id>/layer
    GetLayer => "GET" "/v1/images/{image}/layer", Registry, None;
    /// PUT /v1/images/<id>/layer
    PutLayer => "PUT" "/v1/images/{image}/layer", Registry, Stream;
    /// GET /v1/images/<id>/ancestry
    GetAncestry => "GET" "/v1/images/{image}/ancestry", Registry, None;
    /// PUT /v1/images/<id>/checksum
    PutChecksum => "PUT" "/v1/images/{image}/checksum", Registry, None;
    /// GET /v1/images/<id>/files
    GetFiles => "GET" "/v1/images/{image}/files", Registry, None;
    /// GET /v1/images/<id>/diff
    GetDiff => "GET" "/v1/images/{image}/diff", Registry, None;
    /// PUT /v1/repositories/<ns>/<repo>/
    PutRepo => "PUT" "/v1/repositories/{repo}/", Index, Json;
    /// DELETE /v1/repositories/<ns>/<repo>/
    DeleteRepo => "DELETE" "/v1/repositories/{repo}/", Index, None;
    /// GET /v1/repositories/<ns>/<repo>/images
    GetRepoImages => "GET" "/v1/repositories/{repo}/images", Index, None;
    /// PUT /v1/repositories/<ns>/<repo>/images
    PutRepoImages => "PUT" "/v1/repositories/{repo}/images", Index, Json;
    /// DELETE /v1/repositories/<ns>/<repo>/images
    DeleteRepoImages => "DELETE" "/v1/repositories/{repo}/images", Index, None;
    /// PUT /v1/repositories/<ns>/<repo>/auth
    PutRepoAuth => "PUT" "/v1/repositories/{repo}/auth", TokenCheck, None;
    /// GET /v1/repositories/<ns>/<repo>/tags
    GetTags => "GET" "/v1/repositories/{repo}/tags", Registry, None;
    /// DELETE /v1/repositories/<ns>/<repo>/tags (the repository, as DELETE .../)
    DeleteTags => "DELETE" "/v1/repositories/{repo}/tags", Index, None;
    /// GET /v1/repositories/<ns>/<repo>/tags/<tag>
    GetTag => "GET" "/v1/repositories/{repo}/tags/{tag}", Registry, None;
    /// PUT /v1/repositories/<ns>/<repo>/tags/<tag>
    PutTag => "PUT" "/v1/repositories/{repo}/tags/{tag}", Registry, Json;
    /// DELETE /v1/repositories/<ns>/<repo>/tags/<tag>
    DeleteTag => "DELETE" "/v1/repositories/{repo}/tags/{tag}", Registry, None;
    /// GET /v1/repositories/<ns>/<repo>/tags/<tag>/json
    GetTagJson => "GET" "/v1/repositories/{repo}/tags/{tag}/json", Registry, None;
    /// GET /v1/repositories/<ns>/<repo>/json (`latest`'s metadata)
    GetRepoJson => "GET" "/v1/repositories/{repo}/json", Registry, None;
}

impl Endpoint {
    /// The endpoint a request means: 404 for a path that is none (and `/v2/`), 405 for a
    /// method its path does not take. HEAD arrives here as GET.
    pub fn of(route: &Route, method: &Method) -> Result<Endpoint, ApiError> {
        use Endpoint as E;
        use Method as M;
        let endpoint = match (route, method) {
            (Route::Ping, &M::GET) => E::Ping,
            (Route::Users, &M::POST) => E::Register,
            (Route::Users, &M::GET) => E::Login,
            (Route::User(_), &M::PUT) => E::UpdateUser,
            (Route::Search, &M::GET) => E::Search,
            (Route::Image(_, op), m) => match (op, m) {
                (ImageOp::Json, &M::GET) => E::GetImageJson,
                (ImageOp::Json, &M::PUT) => E::PutImageJson,
                (ImageOp::Layer, &M::GET) => E::GetLayer,
                (ImageOp::Layer, &M::PUT) => E::PutLayer,
                (ImageOp::Ancestry, &M::GET) => E::GetAncestry,
                (ImageOp::Checksum, &M::PUT) => E::PutChecksum,
                (ImageOp::Files, &M::GET) => E::GetFiles,
                (ImageOp::Diff, &M::GET) => E::GetDiff,
                _ => return Err(ApiError::MethodNotAllowed),
            },
            (Route::Repo(_, op), m) => match (op, m) {
                (RepoOp::Root, &M::PUT) => E::PutRepo,
                (RepoOp::Root, &M::DELETE) => E::DeleteRepo,
                (RepoOp::Images, &M::GET) => E::GetRepoImages,
                (RepoOp::Images, &M::PUT) => E::PutRepoImages,
                (RepoOp::Images, &M::DELETE) => E::DeleteRepoImages,
                (RepoOp::Auth, &M::PUT) => E::PutRepoAuth,
                (RepoOp::Tags, &M::GET) => E::GetTags,
                (RepoOp::Tags, &M::DELETE) => E::DeleteTags,
                (RepoOp::Tag(_), &M::GET) => E::GetTag,
                (RepoOp::Tag(_), &M::PUT) => E::PutTag,
                (RepoOp::Tag(_), &M::DELETE) => E::DeleteTag,
                (RepoOp::TagJson(_), &M::GET) => E::GetTagJson,
                (RepoOp::Json, &M::GET) => E::GetRepoJson,
                _ => return Err(ApiError::MethodNotAllowed),
            },
            // Not a route of this API, so no caller is resolved: `/v2/` in particular must stay
            // a plain 404 whatever the credentials, since a 401 there tells Docker it faces a
            // v2 registry wanting a login, and it would never fall back to v1.
            (Route::V2, _) => return Err(ApiError::NotFound("Not a v2 registry")),
            (Route::NotFound, _) => return Err(ApiError::NotFound("Not found")),
            _ => return Err(ApiError::MethodNotAllowed),
        };
        Ok(endpoint)
    }
}

impl Route {
    /// The image id of an image route (404 "Invalid image ID" for a malformed one).
    pub fn image(&self) -> Result<ImageId, ApiError> {
        match self {
            Route::Image(id, _) => image_id(id),
            _ => Err(ApiError::NotFound("Not found")),
        }
    }

    /// The repository of a repository route, names validated.
    pub fn repo(&self) -> Result<RepoRef, ApiError> {
        match self {
            Route::Repo(raw, _) => raw.parse(),
            _ => Err(ApiError::NotFound("Not found")),
        }
    }

    /// The tag named by a tag route, as written (`latest` for `.../json`).
    pub fn tag(&self) -> &str {
        match self {
            Route::Repo(_, RepoOp::Tag(t) | RepoOp::TagJson(t)) => t,
            _ => "latest",
        }
    }

    /// The account named by `/v1/users/<name>/`.
    pub fn user(&self) -> &str {
        match self {
            Route::User(name) => name,
            _ => "",
        }
    }
}

fn raw_repo(segs: &[&str]) -> Option<RawRepo> {
    match segs {
        [repo] => Some(RawRepo {
            namespace: None,
            repo: repo.to_string(),
        }),
        [ns, repo] => Some(RawRepo {
            namespace: Some(ns.to_string()),
            repo: repo.to_string(),
        }),
        _ => None,
    }
}

/// A request as the handlers see it.
pub struct Request {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: String,
    pub body: Body,
    /// A HEAD, which handlers see as a GET (its body is dropped on the way out).
    pub head: bool,
}

impl Request {
    /// Reads a small body whole, refusing more than `limit` bytes.
    pub async fn body_bytes(&mut self, limit: u64) -> Result<Bytes, ApiError> {
        let declared = self
            .headers
            .get(warp::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            self.drain().await;
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let mut buf = Vec::new();
        while let Some(chunk) = self.body.next().await {
            let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("Invalid body: {e}")))?;
            if (buf.len() + chunk.len()) as u64 > limit {
                self.drain().await;
                return Err(ApiError::PayloadTooLarge { limit });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    }

    /// Reads a JSON body whole ([`Request::body_bytes`]); an empty or blank body is invalid
    /// JSON (API.md section 2), like any other that does not parse.
    pub async fn json_body(&mut self, limit: u64) -> Result<Bytes, ApiError> {
        let body = self.body_bytes(limit).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(crate::registry::RegistryError::InvalidJson.into());
        }
        Ok(body)
    }

    /// Reads and drops a refused body before answering (see [`drain`]).
    async fn drain(&mut self) {
        drain(&mut self.body).await;
    }

    /// A header as text, if present and valid.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The whole API as one warp filter.
pub fn api(
    state: AppState,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(warp::any().map(move || state.clone()))
        .then(
            |method: Method,
             path: warp::path::FullPath,
             query: String,
             headers: HeaderMap,
             body,
             state: AppState| async move {
                let body = boxed_body(body);
                let req = Request {
                    method,
                    headers,
                    query,
                    body,
                    head: false,
                };
                dispatch(state, path.as_str(), req).await
            },
        )
        .recover(|_| async { Ok::<_, Infallible>(ApiError::NotFound("Not found").into_response()) })
        .unify()
}

fn boxed_body<S, B>(body: S) -> Body
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf,
{
    body.map_ok(|mut b| {
        let n = b.remaining();
        b.copy_to_bytes(n)
    })
    .boxed()
}

/// Routes one request and logs it.
async fn dispatch(state: AppState, path: &str, mut req: Request) -> Response {
    let started = Instant::now();
    let method = req.method.clone();
    let head = method == Method::HEAD;
    if head {
        req.method = Method::GET;
        req.head = true;
    }
    let route = Route::parse(path);
    let sends_body = has_body(&req.headers);
    let mut res = handlers::handle(&state, route, req)
        .await
        .unwrap_or_else(ApiError::into_response);
    // A refusal may come before the body was read (a layer PUT for an unknown image, a 401).
    // hyper then closes the connection after answering; saying so lets the client open a new
    // one for its next request instead of failing on a connection it thought was reusable.
    if sends_body && (res.status().is_client_error() || res.status().is_server_error()) {
        res.headers_mut().insert(
            warp::http::header::CONNECTION,
            warp::http::HeaderValue::from_static("close"),
        );
    }
    let res = if head {
        let (parts, _) = res.into_parts();
        Response::from_parts(parts, Bytes::new().into())
    } else {
        res
    };
    tracing::info!(
        target: "regfs::access",
        %method,
        path,
        status = res.status().as_u16(),
        bytes = res
            .headers()
            .get(warp::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-"),
        ms = %format_args!("{:.3}", started.elapsed().as_secs_f64() * 1000.0),
    );
    res
}

/// A request body as handlers receive it.
pub type Body = futures::stream::BoxStream<'static, Result<Bytes, warp::Error>>;

/// Reads and drops a refused body, up to a bound, so that a client still sending it gets to
/// read our answer instead of a broken pipe (the kernel resets a socket closed with unread
/// bytes). Past the bound, or after a pause of the body timeout, the connection is dropped.
async fn drain(body: &mut Body) {
    const MAX_DRAIN: usize = 16 * 1024 * 1024;
    let mut seen = 0;
    while let Some(Ok(chunk)) = body.next().await {
        seen += chunk.len();
        if seen > MAX_DRAIN {
            break;
        }
    }
}

/// [`drain`] while the answer goes out: for bodies refused before they were read, which
/// clients that do not wait for `100 Continue` (most) are sending already. One task per
/// refused request at most, so the connection cap bounds them.
pub fn drain_in_background(mut body: Body) {
    tokio::spawn(async move { drain(&mut body).await });
}

/// Whether a request carries a body that a handler may leave unread.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(warp::http::header::TRANSFER_ENCODING)
        || headers
            .get(warp::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Parses an image id from a path, answering 404 "Invalid image ID" as the reference does.
pub fn image_id(raw: &str) -> Result<ImageId, ApiError> {
    Ok(raw.parse::<ImageId>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(ns: Option<&str>, repo: &str) -> RawRepo {
        RawRepo {
            namespace: ns.map(str::to_string),
            repo: repo.to_string(),
        }
    }

    #[test]
    fn repository_paths_default_to_library() {
        assert_eq!(
            Route::parse("/v1/repositories/foo/tags/latest"),
            Route::Repo(repo(None, "foo"), RepoOp::Tag("latest".into()))
        );
        assert_eq!(
            Route::parse("/v1/repositories/alice/app/tags/latest"),
            Route::Repo(repo(Some("alice"), "app"), RepoOp::Tag("latest".into()))
        );
        assert_eq!(
            Route::parse("/v1/repositories/alice/app/"),
            Route::Repo(repo(Some("alice"), "app"), RepoOp::Root)
        );
        assert_eq!(
            Route::parse("/v1/repositories/foo/"),
            Route::Repo(repo(None, "foo"), RepoOp::Root)
        );
        assert_eq!(
            Route::parse("/v1/repositories/alice/app/tags/v1/json"),
            Route::Repo(repo(Some("alice"), "app"), RepoOp::TagJson("v1".into()))
        );
        assert_eq!(
            Route::parse("/v1/repositories/foo/images"),
            Route::Repo(repo(None, "foo"), RepoOp::Images)
        );
        assert_eq!(
            Route::parse("/v1/repositories/alice/app/auth"),
            Route::Repo(repo(Some("alice"), "app"), RepoOp::Auth)
        );
        assert_eq!(Route::parse("/v1/repositories/a/b/c/d/e"), Route::NotFound);
        assert_eq!(Route::parse("/v1/repositories"), Route::NotFound);
    }

    #[test]
    fn every_endpoint_of_the_table_is_reached_by_its_own_line() {
        for &endpoint in Endpoint::ALL {
            let spec = endpoint.spec();
            let path = spec
                .path
                .replace("{image}", &"a".repeat(64))
                .replace("{repo}", "alice/app")
                .replace("{tag}", "latest")
                .replace("{user}", "alice");
            let method = Method::from_bytes(spec.method.as_bytes()).unwrap();
            assert_eq!(
                Endpoint::of(&Route::parse(&path), &method).unwrap(),
                endpoint,
                "{} {path}",
                spec.method
            );
        }
    }

    #[test]
    fn other_paths() {
        assert_eq!(Route::parse("/_ping"), Route::Ping);
        assert_eq!(Route::parse("/v1/_ping"), Route::Ping);
        assert_eq!(Route::parse("/v1/users/"), Route::Users);
        assert_eq!(Route::parse("/v1/users/bob/"), Route::User("bob".into()));
        assert_eq!(Route::parse("/v2/"), Route::V2);
        assert_eq!(
            Route::parse("/v1/images/abc/layer"),
            Route::Image("abc".into(), ImageOp::Layer)
        );
        assert_eq!(Route::parse("/v1/images/abc/evil"), Route::NotFound);
        assert_eq!(Route::parse("/"), Route::NotFound);
    }
}
