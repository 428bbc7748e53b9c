//! The one HTTP listener shared by every `http` trigger, with a routing table that hot
//! reload changes in place: no restart of the listener, no dropped requests.

use super::answer::answer;
use super::auth::{Auth, unix_now};
use super::listener::{self, BodyBudget, Limits};
use super::route::{Pattern, parse_query};
use axum::body::{Body, HttpBody};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice_engine::{Acker, Caller, Envelope, Inlet, Message, Meta, Outcome, Payload};
use sluice_flow::HttpListenerSettings;
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
    limits: Limits,
    budget: BodyBudget,
}

impl HttpHub {
    /// A hub that will listen on `listen` once the first route is added, with the default
    /// limits.
    pub fn new(listen: impl Into<String>) -> Arc<Self> {
        HttpHub::with_limits(listen, &HttpListenerSettings::default())
    }

    /// A hub with the listener limits of `sluice.yaml` (`http:`); the connection cap is
    /// lowered to fit the process's open-file limit.
    pub fn with_limits(listen: impl Into<String>, settings: &HttpListenerSettings) -> Arc<Self> {
        let mut limits = Limits::from_settings(settings);
        let (cap, lowered_by) = listener::fitting_cap(limits.max_connections);
        if let Some(nofile) = lowered_by {
            tracing::warn!(
                "http.max_connections lowered from {} to {cap}: the open-file limit is {nofile} (ulimit -n), and the listener may use half of it",
                limits.max_connections
            );
        }
        limits.max_connections = cap;
        Arc::new(HttpHub {
            listen: listen.into(),
            routes: RwLock::new(Vec::new()),
            next_id: AtomicU64::new(1),
            listener: Mutex::new(Listener::Idle),
            shutdown: CancellationToken::new(),
            server: Mutex::new(None),
            counters: RwLock::default(),
            budget: BodyBudget::new(limits.max_body_in_flight),
            limits,
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
        tracing::info!(
            "http listener on {local} (at most {} connections; header timeout {}, body timeout {})",
            self.limits.max_connections,
            humantime::format_duration(self.limits.header_timeout),
            humantime::format_duration(self.limits.body_timeout)
        );
        *state = Listener::Running;
        let hub = self.clone();
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let hub = hub.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(hub, request.map(Body::new)).await) }
        });
        let server = tokio::spawn(listener::serve(
            listener,
            self.limits.clone(),
            self.shutdown.clone(),
            service,
        ));
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

/// Error bodies: `{"error": {"kind", "message", "message_id", "violations"?}}`.
pub(super) fn error_response(
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

pub(super) fn json_response(
    status: StatusCode,
    body: &Value,
    headers: &[(String, String)],
) -> Response {
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

struct ReplyAck {
    tx: oneshot::Sender<Outcome>,
    caller: Caller,
}

#[async_trait::async_trait]
impl Acker for ReplyAck {
    async fn ack(self: Box<Self>, outcome: Outcome) {
        // The client may have gone away; the caller state says what it was told.
        let _ = self.tx.send(outcome);
    }

    fn caller(&self) -> Option<Caller> {
        Some(self.caller.clone())
    }
}

pub(super) async fn handle(hub: Arc<HttpHub>, request: Request<Body>) -> Response {
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
    let response = serve(&hub, &route, params, request).await;
    hub.count(route.inlet.flow(), response.status().as_u16());
    response
}

async fn serve(
    hub: &HttpHub,
    route: &RouteEntry,
    params: Vec<(String, String)>,
    request: Request<Body>,
) -> Response {
    // The head has arrived: the body has `body_timeout` from now.
    let body_deadline = tokio::time::Instant::now() + hub.limits.body_timeout;
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    // Everything the headers decide (token, key, a missing or stale signature) is decided
    // before any of the body is read or buffered.
    if let Some(auth) = &route.auth
        && let Err(reason) = auth.check(headers, None, unix_now())
    {
        return error_response(StatusCode::UNAUTHORIZED, "auth", &reason, None, None);
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
    // Room in the listener's body budget first, for as much as this body may take; held
    // until the request is answered, since the message keeps the body until then.
    let expected = declared.unwrap_or(route.max_body).min(route.max_body);
    let _budget = if body.size_hint().exact() == Some(0) {
        None
    } else {
        match hub.budget.reserve(expected, body_deadline).await {
            Some(permit) => Some(permit),
            None => return body_busy(),
        }
    };
    let limit = usize::try_from(route.max_body).unwrap_or(usize::MAX);
    let read = tokio::time::timeout_at(body_deadline, axum::body::to_bytes(body, limit)).await;
    let Ok(read) = read else {
        return body_late(hub.limits.body_timeout);
    };
    let Ok(bytes) = read else {
        return too_large();
    };
    if !bytes.is_empty() && declared.is_none() && !is_json(headers) {
        return not_json();
    }
    if let Some(auth) = route.auth.as_ref().filter(|a| a.needs_body())
        && let Err(reason) = auth.check(headers, Some(&bytes), unix_now())
    {
        return error_response(StatusCode::UNAUTHORIZED, "auth", &reason, None, None);
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
        // Credentials never become metadata, which dead letters and logs carry.
        let secret = NEVER_COPIED.contains(&name)
            || route.auth.as_ref().and_then(Auth::credential_header) == Some(name);
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
    let caller = Caller::new();
    let envelope = Envelope {
        message,
        ack: Box::new(ReplyAck {
            tx,
            caller: caller.clone(),
        }),
        reply: true,
    };
    let mut response = answer(route, envelope, &message_id, rx, &caller).await;
    if let Ok(value) = HeaderValue::try_from(correlation.as_str()) {
        response.headers_mut().insert("x-correlation-id", value);
    }
    response
}

/// Request headers never copied into metadata: they carry credentials of the caller, and
/// metadata is written into dead letters and may be logged.
const NEVER_COPIED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// 408: the body did not arrive within the listener's `body_timeout`.
fn body_late(timeout: Duration) -> Response {
    let why = format!(
        "the request body did not arrive within {} (sluice.yaml `http.body_timeout`)",
        humantime::format_duration(timeout)
    );
    let mut response = error_response(StatusCode::REQUEST_TIMEOUT, "trigger", &why, None, None);
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
    response
}

/// 503: the listener's body budget stayed full for the whole `body_timeout`.
fn body_busy() -> Response {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "trigger",
        "too many request bodies are being received at once (sluice.yaml `http.max_body_in_flight`); retry later",
        None,
        None,
    );
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from_static("1"),
    );
    headers.insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
    response
}
