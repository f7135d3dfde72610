//! The HTTP server loop: accepts connections up to a bound, serves each with
//! hyper's HTTP/1.1 connection (header read timeout, which also closes idle
//! keep-alive connections), and stops gracefully. The router (`http.rs`)
//! bounds the body's size and read time.
//!
//! Requests go through a [`Front`]: the current router behind a lock that
//! each request holds (shared) while its handler runs. The online erasure
//! compaction (`mod.rs`) takes it exclusively to stop the pipeline, rewrite
//! the store and start it again on the new one: requests that arrive
//! meanwhile wait, on their open connections, and are then served by the new
//! router.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Limits of the HTTP server and of what intake accepts.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Time a client has to send a request's head (and the longest a
    /// keep-alive connection stays idle).
    pub header_timeout: Duration,
    /// Time a client has to send a request's body, from the end of its head.
    pub body_timeout: Duration,
    /// Open connections at most; further ones wait in the listen backlog.
    pub connections_max: usize,
    /// How far ahead of the daemon's clock an event's time may be.
    pub future_max_ms: i64,
    /// The read-only aggregates (`/ui`, `/v1/journeys…`, `/metrics`) need
    /// the token too (`--protect-ui`); by default they are open.
    pub protect_ui: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            connections_max: 1024,
            future_max_ms: 24 * 3_600_000,
            protect_ui: false,
        }
    }
}

/// The router requests are served by, swappable (see the module's note);
/// `None` only while it is being replaced.
pub type Front = Arc<tokio::sync::RwLock<Option<Router>>>;

/// Serves one request with the current router.
async fn through_front(
    front: Front,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<axum::response::Response, std::convert::Infallible> {
    let current = front.read().await;
    match current.as_ref() {
        Some(router) => {
            let service = TowerToHyperService::new(router.clone());
            hyper::service::Service::call(&service, request).await
        }
        None => Ok(super::reply::error(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "",
            "shutting down",
        )),
    }
}

/// How long a graceful stop waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish (idle connections are closed at once).
pub async fn serve(listener: TcpListener, front: Front, options: &HttpOptions, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(options.connections_max.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    tokio::pin!(shutdown);
    loop {
        // Wait for a free slot first: at the bound, new connections stay in
        // the kernel's backlog instead of costing memory here.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        let service = hyper::service::service_fn(move |request| through_front(front.clone(), request));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
}
