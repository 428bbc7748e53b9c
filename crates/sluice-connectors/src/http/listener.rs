//! The accept loop of the shared HTTP listener and what bounds it: a cap on connections
//! served at once, a deadline for every request head (which also closes idle keep-alive
//! connections), a bounded head size, and a budget for request bodies held in memory.
//! Half-sent requests and unfinished bodies are what an attacker sends first; none of them
//! may cost the process file descriptors or memory without bound.

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use sluice_flow::HttpListenerSettings;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The largest request head (request line and headers) accepted; a larger one gets 431.
/// It is also the connection's read buffer, so it bounds how much of an unread body a
/// connection can hold before the handler asks for it.
pub const MAX_HEAD: usize = 64 * 1024;

/// How long after the stop the listener keeps taking connections that were already queued
/// (clients that connected just before the stop have sent their requests).
const DRAIN_LINGER: Duration = Duration::from_millis(150);

/// How often, at most, reaching the connection cap is logged.
const FULL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits of the listener, from `sluice.yaml` (`http:`) and the command line.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Deadline for a request head, and for an idle keep-alive connection.
    pub header_timeout: Duration,
    /// Deadline for a request body, counted from the end of its head.
    pub body_timeout: Duration,
    /// Body bytes held at once by all requests being served.
    pub max_body_in_flight: u64,
}

impl Limits {
    /// The limits as configured.
    pub fn from_settings(settings: &HttpListenerSettings) -> Limits {
        Limits {
            max_connections: settings.max_connections,
            header_timeout: settings.header_timeout.0,
            body_timeout: settings.body_timeout.0,
            max_body_in_flight: settings.max_body_in_flight.0,
        }
    }
}

/// The connection cap that fits this process's open-file limit: the listener may use at
/// most half of it, so the admin server, the file triggers and the sinks always have
/// descriptors left. Returns the cap and, when it was lowered, the limit that lowered it.
pub fn fitting_cap(wanted: usize) -> (usize, Option<u64>) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct it is given.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !read || limit.rlim_cur == libc::RLIM_INFINITY {
        return (wanted, None);
    }
    let half = usize::try_from(limit.rlim_cur / 2)
        .unwrap_or(usize::MAX)
        .max(1);
    if wanted > half {
        (half, Some(limit.rlim_cur))
    } else {
        (wanted, None)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_settings(&HttpListenerSettings::default())
    }
}

/// The body budget, in KiB permits (a semaphore counts in `u32`; KiB units keep budgets up
/// to terabytes representable).
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    total_kib: u32,
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> BodyBudget {
        let total_kib = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        BodyBudget {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Waits (until `deadline`) for room for a body of up to `bytes`; a body larger than
    /// the whole budget waits for all of it. `None`: no room in time.
    pub async fn reserve(
        &self,
        bytes: u64,
        deadline: tokio::time::Instant,
    ) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib);
        let wanted = self.permits.clone().acquire_many_owned(kib);
        match tokio::time::timeout_at(deadline, wanted).await {
            Ok(Ok(permit)) => Some(permit),
            _ => None,
        }
    }
}

/// Serves `listener` with `service` until `stop`, then takes what is already queued for a
/// short while, lets every request in flight finish, and returns once every connection has
/// closed.
pub async fn serve<S>(listener: TcpListener, limits: Limits, stop: CancellationToken, service: S)
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<axum::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD)
        .max_header_size(MAX_HEAD)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    // Fired once no more connections are taken: idle connections then close, busy ones
    // after their current response.
    let closing = CancellationToken::new();
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut last_full_log: Option<Instant> = None;
    loop {
        // A free slot first: at the cap, new connections stay in the kernel's accept queue
        // (bounded by its backlog), using no file descriptor of this process.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_full_log.is_none_or(|t| t.elapsed() >= FULL_LOG_EVERY) {
                    last_full_log = Some(Instant::now());
                    tracing::warn!(
                        "http listener at its cap of {} connections; new connections wait until one closes (raise `http.max_connections` in sluice.yaml or --http-max-connections)",
                        limits.max_connections
                    );
                }
                tokio::select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = stop.cancelled(), if drain_deadline.is_none() => {
                        drain_deadline = Some(tokio::time::Instant::now() + DRAIN_LINGER);
                        continue;
                    }
                    _ = sleep_until(drain_deadline) => break,
                }
            }
        };
        let accepted = if drain_deadline.is_none() {
            tokio::select! {
                accepted = listener.accept() => Some(accepted),
                _ = stop.cancelled() => {
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_LINGER);
                    None
                }
            }
        } else {
            tokio::select! {
                accepted = listener.accept() => Some(accepted),
                _ = sleep_until(drain_deadline) => break,
            }
        };
        let stream = match accepted {
            None => continue,
            Some(Ok((stream, _))) => stream,
            Some(Err(e)) => {
                // Out of file descriptors, most often: wait a little instead of spinning.
                tracing::warn!("http accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), service.clone());
        let closing = closing.clone();
        connections.spawn(async move {
            // The slot is given back when the connection has closed.
            let _slot = permit;
            let mut connection = std::pin::pin!(connection);
            let finished = tokio::select! {
                result = connection.as_mut() => Some(result),
                _ = closing.cancelled() => None,
            };
            let result = match finished {
                Some(result) => result,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                // Timeouts, resets and malformed requests are the client's business.
                tracing::debug!("http connection ended: {e}");
            }
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    connections.wait().await;
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
