//! The one HTTP listener shared by every `http` trigger, with a routing table that hot
//! reload changes in place: no restart of the listener, no dropped requests.

use super::auth::Auth;
use super::route::{Pattern, parse_query};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice_engine::{Acker, Envelope, ErrorKind, Inlet, Message, Meta, Outcome, Payload};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// One registered route.
#[derive(Clone)]
pub(crate) struct RouteEntry {
    pub id: u64,
    pub method: Method,
    pub pattern: Pattern,
    pub max_body: u64,
    pub timeout: Duration,
    pub auth: Option<Auth>,
    pub inlet: Inlet,
}

enum Listener {
    Idle,
    Running,
}

/// The shared listener and its routing table.
pub struct HttpHub {
    listen: String,
    routes: RwLock<Vec<RouteEntry>>,
    next_id: AtomicU64,
    listener: Mutex<Listener>,
    shutdown: CancellationToken,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    counters: RwLock<std::collections::HashMap<(String, u16), metrics::Counter>>,
}

impl HttpHub {
    /// A hub that will listen on `listen` once the first route is added.
    pub fn new(listen: impl Into<String>) -> Arc<Self> {
        Arc::new(HttpHub {
            listen: listen.into(),
            routes: RwLock::new(Vec::new()),
            next_id: AtomicU64::new(1),
            listener: Mutex::new(Listener::Idle),
            shutdown: CancellationToken::new(),
            server: Mutex::new(None),
            counters: RwLock::default(),
        })
    }

    /// Adds (or replaces, for the same method and path shape) a route; binds the listener
    /// first if needed. Returns the route id, or why the listener is unavailable.
    pub(crate) async fn add(self: &Arc<Self>, mut entry: RouteEntry) -> Result<u64, String> {
        self.ensure_listening().await?;
        entry.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = entry.id;
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes
            .retain(|r| !(r.method == entry.method && r.pattern.shape() == entry.pattern.shape()));
        routes.push(entry);
        Ok(id)
    }

    /// Removes a route, unless a newer version already replaced it.
    pub(crate) fn remove(&self, id: u64) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.retain(|r| r.id != id);
    }

    async fn ensure_listening(self: &Arc<Self>) -> Result<(), String> {
        {
            let state = self.listener.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(*state, Listener::Running) {
                return Ok(());
            }
        }
        let bound = tokio::net::TcpListener::bind(&self.listen).await;
        let mut state = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, Listener::Running) {
            return Ok(());
        }
        let listener = match bound {
            Ok(listener) => listener,
            Err(e) => {
                let reason = format!("cannot listen on {}: {e}", self.listen);
                tracing::error!("{reason}; pass --listen ADDR or set SLUICE_LISTEN");
                // Retrying is left to the next flow that needs the listener.
                return Err(reason);
            }
        };
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| self.listen.clone());
        tracing::info!("http listener on {local}");
        *state = Listener::Running;
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(self.clone());
        let stop = self.shutdown.clone();
        let drained = Arc::new(tokio::sync::Notify::new());
        let listener = DrainingListener {
            inner: listener,
            stop: stop.clone(),
            drained: drained.clone(),
            drain_deadline: None,
        };
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    stop.cancelled().await;
                    drained.notified().await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!("http listener stopped: {e}");
            }
        });
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
        Ok(())
    }

    /// Stops accepting connections; requests in flight are answered. Returns when the
    /// listener has closed (after `finish_in_flight`).
    pub fn stop_accepting(&self) {
        self.shutdown.cancel();
    }

    /// Waits until every connection has been answered and closed, bounded by `grace`.
    pub async fn finish_in_flight(&self, grace: Duration) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(server) = server {
            let _ = tokio::time::timeout(grace, server).await;
        }
    }

    /// Counts an answered request; handles are cached because building a labelled counter
    /// on every request costs more than the rest of the bookkeeping.
    fn count(&self, flow: &str, status: u16) {
        let key = (flow.to_owned(), status);
        if let Some(counter) = self
            .counters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!(
            "sluice_http_requests_total",
            "flow" => flow.to_owned(),
            "status" => status.to_string()
        );
        counter.increment(1);
        self.counters
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, counter);
    }

    fn find(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<(RouteEntry, Vec<(String, String)>), StatusCode> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let mut path_matched = false;
        for route in routes.iter() {
            if let Some(params) = route.pattern.matches(path) {
                if route.method == method {
                    return Ok((route.clone(), params));
                }
                path_matched = true;
            }
        }
        Err(if path_matched {
            StatusCode::METHOD_NOT_ALLOWED
        } else {
            StatusCode::NOT_FOUND
        })
    }
}

/// A listener that, once told to stop, still accepts the connections already waiting in
/// the kernel's backlog (their clients have sent requests), so no request is reset; only
/// then does it report that it is drained and the server may close.
struct DrainingListener {
    inner: tokio::net::TcpListener,
    stop: CancellationToken,
    drained: Arc<tokio::sync::Notify>,
    drain_deadline: Option<tokio::time::Instant>,
}

/// How long after the stop the listener keeps taking connections that were already queued
/// (clients that connected just before the stop have sent their requests).
const DRAIN_LINGER: Duration = Duration::from_millis(150);

impl axum::serve::Listener for DrainingListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if !self.stop.is_cancelled() {
                tokio::select! {
                    accepted = self.inner.accept() => match accepted {
                        Ok(connection) => return connection,
                        Err(e) => {
                            tracing::warn!("http accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = self.stop.cancelled() => {}
                }
            }
            // Stopping: take what is already queued, for a short window, then report drained.
            let deadline = *self
                .drain_deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_LINGER);
            match tokio::time::timeout_at(deadline, self.inner.accept()).await {
                Ok(Ok(connection)) => return connection,
                _ => {
                    self.drained.notify_one();
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Error bodies: `{"error": {"kind", "message", "message_id", "violations"?}}`.
fn error_response(
    status: StatusCode,
    kind: &str,
    message: &str,
    message_id: Option<&str>,
    violations: Option<Value>,
) -> Response {
    let mut error = json!({ "kind": kind, "message": message, "message_id": message_id });
    if let Some(violations) = violations {
        error["violations"] = violations;
    }
    json_response(status, &json!({ "error": error }), &[])
}

fn json_response(status: StatusCode, body: &Value, headers: &[(String, String)]) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
    let mut response = (status, bytes).into_response();
    let h = response.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            h.insert(name, value);
        }
    }
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| {
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        })
}

/// The correlation id: a `traceparent`'s trace id, else `x-correlation-id`.
fn correlation_id(headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(trace) = header("traceparent").and_then(|t| t.split('-').nth(1))
        && trace.len() == 32
        && trace.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Some(trace.to_ascii_lowercase());
    }
    header("x-correlation-id")
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
}

struct ReplyAck(oneshot::Sender<Outcome>);

#[async_trait::async_trait]
impl Acker for ReplyAck {
    async fn ack(self: Box<Self>, outcome: Outcome) {
        // The client may have gone away; the message was processed all the same.
        let _ = self.0.send(outcome);
    }
}

async fn handle(State(hub): State<Arc<HttpHub>>, request: Request<Body>) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let (route, params) = match hub.find(&method, &path) {
        Ok(found) => found,
        Err(StatusCode::METHOD_NOT_ALLOWED) => {
            return error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{path} does not accept {method}"),
                None,
                None,
            );
        }
        Err(_) => {
            return error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no flow listens on {method} {path}"),
                None,
                None,
            );
        }
    };
    let response = serve(&route, params, request).await;
    hub.count(route.inlet.flow(), response.status().as_u16());
    response
}

async fn serve(
    route: &RouteEntry,
    params: Vec<(String, String)>,
    request: Request<Body>,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    if let Some(auth) = &route.auth
        && let Err(reason) = auth.check(headers, None)
    {
        return error_response(StatusCode::UNAUTHORIZED, "auth", reason, None, None);
    }
    let too_large = || {
        let why = format!(
            "the body is over this route's max_body of {} bytes",
            route.max_body
        );
        error_response(StatusCode::PAYLOAD_TOO_LARGE, "trigger", &why, None, None)
    };
    let not_json = || {
        error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "trigger",
            "the body must be JSON (Content-Type: application/json)",
            None,
            None,
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > route.max_body) {
        return too_large();
    }
    if declared.is_some_and(|len| len > 0) && !is_json(headers) {
        return not_json();
    }
    let limit = usize::try_from(route.max_body).unwrap_or(usize::MAX);
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return too_large();
    };
    if !bytes.is_empty() && declared.is_none() && !is_json(headers) {
        return not_json();
    }
    if let Some(auth) = route.auth.as_ref().filter(|a| a.needs_body())
        && let Err(reason) = auth.check(headers, Some(&bytes))
    {
        return error_response(StatusCode::UNAUTHORIZED, "auth", reason, None, None);
    }
    let payload: Payload = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null.into()
    } else {
        match Payload::from_json_bytes(bytes.clone()) {
            Ok(payload) => payload,
            // One parse decides: what it refuses never reaches a step. Well-formed JSON that
            // cannot be represented (too deep, a number out of range) is 422, the rest 400.
            Err(e) => {
                let status = if e.unrepresentable() {
                    StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    StatusCode::BAD_REQUEST
                };
                return error_response(status, "trigger", &e.to_string(), None, None);
            }
        }
    };
    let mut meta = Meta::new();
    meta.insert("http.method".to_owned(), parts.method.to_string());
    meta.insert("http.path".to_owned(), parts.uri.path().to_owned());
    for (name, value) in params {
        meta.insert(format!("http.path.{name}"), value);
    }
    if let Some(query) = parts.uri.query() {
        for (name, value) in parse_query(query) {
            meta.insert(format!("http.query.{name}"), value);
        }
    }
    for (name, value) in headers {
        let name = name.as_str();
        let secret = name == "authorization"
            || matches!(&route.auth, Some(Auth::ApiKey { header, .. }) if header == name);
        if secret {
            continue;
        }
        if let Ok(value) = value.to_str() {
            meta.insert(format!("http.header.{name}"), value.to_owned());
        }
    }
    let message = Message::new(route.inlet.flow(), payload, meta);
    let message_id = message.id().to_owned();
    let correlation = correlation_id(headers).unwrap_or_else(|| message_id.clone());
    let mut message = message;
    std::sync::Arc::make_mut(&mut message.meta)
        .insert("correlation_id".to_owned(), correlation.clone());
    let (tx, rx) = oneshot::channel();
    let envelope = Envelope {
        message,
        ack: Box::new(ReplyAck(tx)),
        reply: true,
    };
    let mut response = answer(route, envelope, &message_id, rx).await;
    if let Ok(value) = HeaderValue::try_from(correlation.as_str()) {
        response.headers_mut().insert("x-correlation-id", value);
    }
    response
}

/// Queues the message, waits for its outcome (bounded by the route's timeout), and turns
/// it into a response.
async fn answer(
    route: &RouteEntry,
    envelope: Envelope,
    message_id: &str,
    rx: oneshot::Receiver<Outcome>,
) -> Response {
    let answered = tokio::time::timeout(route.timeout, async {
        if route.inlet.send(envelope).await.is_err() {
            return None;
        }
        rx.await.ok()
    })
    .await;
    let outcome = match answered {
        Ok(Some(outcome)) => outcome,
        Ok(None) => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "trigger",
                "the flow is stopping; retry",
                Some(message_id),
                None,
            );
        }
        Err(_) => {
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the flow did not answer in time",
                Some(message_id),
                None,
            );
        }
    };
    match outcome {
        Outcome::Delivered(reply) | Outcome::Completed(reply) => {
            let Some(reply) = reply else {
                return json_response(StatusCode::OK, &Value::Null, &[]);
            };
            let status = reply
                .status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK);
            json_response(status, &reply.payload, &reply.headers)
        }
        Outcome::Filtered => StatusCode::NO_CONTENT.into_response(),
        Outcome::Failed(failure) => {
            let error = &failure.error;
            let status = match error.kind {
                ErrorKind::Contract => StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let violations = (error.kind == ErrorKind::Contract)
                .then(|| serde_json::to_value(&error.violations).unwrap_or(Value::Null));
            // Contract messages help the caller; other internals (paths, sinks) stay inside.
            let message = match error.kind {
                ErrorKind::Contract => error.message.clone(),
                ErrorKind::Timeout => "a downstream service did not answer in time".to_owned(),
                ErrorKind::Transform | ErrorKind::Script => format!(
                    "the flow failed in {}",
                    error.step.as_deref().unwrap_or("a step")
                ),
                _ => "the flow could not deliver the message".to_owned(),
            };
            error_response(
                status,
                error.kind.as_str(),
                &message,
                Some(message_id),
                violations,
            )
        }
    }
}
