//! Accepting connections: plain TCP or TLS (rustls), HTTP/1.1 and HTTP/2, with bounds.
//!
//! warp's own `serve` has no TLS in 0.4 and no header timeout, so connections are served here
//! with hyper-util, the way warp does internally, plus what a server on the open network needs:
//! a cap on open connections, a deadline for request headers (a slow client cannot hold a
//! connection forever), and a graceful shutdown that lets in-flight requests finish within a
//! bound.
//!
//! Bodies are bounded by progress, not by total time, because a 64 GiB layer on a slow link is
//! legitimate: a request body that delivers nothing for [`Timeouts::body`] ends in an error
//! ([`IdleBody`]), and a response that the client stops reading for as long fails its socket
//! ([`StallGuard`]). hyper's header timeout also runs while a keep-alive connection waits for
//! its next request, so idle connections close after [`Timeouts::header`]; it starts only once
//! the auto builder has read a first byte to pick the HTTP version, so [`StallGuard`] gives that
//! byte the same deadline.
//!
//! HTTP/2 has neither in hyper: an idle HTTP/2 connection is pinged every [`Timeouts::header`]
//! and closed when a ping goes unanswered for as long, which ends connections whose client is
//! gone or silent, but one whose client answers pings may stay open while idle (it still
//! counts against the connection cap).

use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use warp::Filter;
use warp::reply::Response;

/// Most connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 4096;
/// Time a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Time in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How long a connection may make no progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time a client has to send a request's headers, a new connection its first byte, and an
    /// idle keep-alive connection to start its next request.
    pub header: Duration,
    /// Longest pause in a body: no request bytes arriving, or no response bytes taken by a
    /// client that has stopped reading.
    pub body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(30),
            body: Duration::from_secs(60),
        }
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {path}: {source}")]
    Cert {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("cannot read private key {path}: {source}")]
    Key {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("invalid certificate or key: {0}")]
    Config(#[from] tokio_rustls::rustls::Error),
}

/// Builds a TLS acceptor from PEM files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: cert.display().to_string(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.display().to_string(),
        source,
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `filter` on `listener` until `shutdown` resolves.
pub async fn serve<F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    timeouts: Timeouts,
    filter: F,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let inner = TowerToHyperService::new(warp::service(filter.clone()));
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let req = req.map(|body| IdleBody::new(body, timeouts.body));
            hyper::service::Service::call(&inner, req)
        });
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.header);
            // HTTP/2 has no header timeout in hyper; pings at least find clients that are gone.
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(timeouts.header)
                .keep_alive_timeout(timeouts.header);
            let result = match tls {
                None => {
                    let stream = StallGuard::new(stream, timeouts.header, timeouts.body);
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let stream = StallGuard::new(stream, timeouts.header, timeouts.body);
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                // Clients that go away mid-request are routine; nothing for an operator to do.
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time; closing them");
    }
}

/// The error of a request body that delivered nothing for too long.
#[derive(Debug, thiserror::Error)]
#[error("no body bytes received for {0:?}")]
pub struct BodyIdle(Duration);

/// A request body that fails when the client sends nothing for `timeout`.
///
/// Only time spent waiting on the client counts: the clock starts when a poll finds no data and
/// stops when data arrives, so a handler that is slow to read (storage pushing back) never
/// trips it.
pub struct IdleBody<B> {
    inner: B,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    waiting: bool,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        IdleBody {
            inner,
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            waiting: false,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    this.timer.as_mut().reset(Instant::now() + this.timeout);
                }
                ready!(this.timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(BodyIdle(this.timeout)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that fails when its client stalls: when no first byte arrives within `first_byte`
/// (hyper's header timeout starts only once the HTTP version is known, which needs that byte),
/// and when a write has been blocked for `timeout`, so a client that stops reading a response
/// is disconnected instead of holding its connection, its buffers and the stream behind them.
/// Later reads pass through: hyper's header timeout and [`IdleBody`] bound those.
pub struct StallGuard<T> {
    inner: T,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    blocked: bool,
    /// Until the first byte is read.
    first_byte: Option<Pin<Box<Sleep>>>,
}

impl<T> StallGuard<T> {
    pub fn new(inner: T, first_byte: Duration, timeout: Duration) -> Self {
        StallGuard {
            inner,
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            blocked: false,
            first_byte: Some(Box::pin(tokio::time::sleep(first_byte))),
        }
    }

    /// Turns a blocked write into an error once it has been blocked too long.
    fn on_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        res: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        if res.is_ready() {
            self.blocked = false;
            return res;
        }
        if !self.blocked {
            self.blocked = true;
            self.timer.as_mut().reset(Instant::now() + self.timeout);
        }
        ready!(self.timer.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("client took no bytes for {:?}", self.timeout),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(deadline) = this.first_byte.as_mut() else {
            return res;
        };
        if res.is_ready() {
            this.first_byte = None;
            return res;
        }
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client sent nothing",
        )))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, res)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write(cx, res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.on_write(cx, res)
    }
}
