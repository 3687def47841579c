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
