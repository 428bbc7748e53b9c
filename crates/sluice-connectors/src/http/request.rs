//! A request becomes a message: routing, auth, body limits and parsing, metadata; then the
//! message goes to its flow and the outcome is answered (`answer.rs`). Also one request
//! through that path without a connection, for the fuzz target of the request → message
//! path (`fuzz/fuzz_targets/http_request.rs`).

use super::answer::{answer, error_response};
use super::auth::{Auth, unix_now};
use super::route::parse_query;
use super::server::{HttpHub, RouteEntry};
use axum::body::{Body, HttpBody};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::Response;
use serde_json::Value;
use sluice_engine::{Acker, Caller, Envelope, Message, Meta, Outcome, Payload};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

impl HttpHub {
    /// Answers one request exactly as the listener does once a connection has delivered it:
    /// routing, auth, body limits and parsing, the message and its metadata, and the answer.
    /// The routes are those that running `http` triggers registered on this hub.
    ///
    /// Public on purpose: the fuzz target drives the real request path with it, without a
    /// socket in between (a socket would make it slow and flaky, and hyper's own parsing is
    /// not ours to fuzz). The listener itself calls the same function for every request.
    pub async fn answer_request(self: &Arc<Self>, request: Request<Body>) -> Response {
        handle(self.clone(), request).await
    }
}

/// The body formats a request may declare.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Xml,
}

fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let declared = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())?
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let suffixed =
        |suffix: &str| declared.starts_with("application/") && declared.ends_with(suffix);
    if declared == "application/json" || suffixed("+json") {
        Some(BodyKind::Json)
    } else if declared == "application/xml" || declared == "text/xml" || suffixed("+xml") {
        Some(BodyKind::Xml)
    } else {
        None
    }
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
        return error_response(
            StatusCode::UNAUTHORIZED,
            "auth",
            &reason.to_string(),
            None,
            None,
        );
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
            "the body must be JSON (Content-Type: application/json) or XML (application/xml, text/xml)",
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
    let kind = body_kind(headers);
    if declared.is_some_and(|len| len > 0) && kind.is_none() {
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
    if !bytes.is_empty() && declared.is_none() && kind.is_none() {
        return not_json();
    }
    if let Some(auth) = route.auth.as_ref().filter(|a| a.needs_body())
        && let Err(reason) = auth.check(headers, Some(&bytes), unix_now())
    {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "auth",
            &reason.to_string(),
            None,
            None,
        );
    }
    let payload: Payload = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null.into()
    } else if kind == Some(BodyKind::Xml) {
        match sluice_xml::to_json(&bytes, &route.xml) {
            Ok(value) => value.into(),
            Err(e) => {
                let why = format!("the body is not XML sluice reads: {e}");
                return error_response(StatusCode::BAD_REQUEST, "trigger", &why, None, None);
            }
        }
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
    let message_id = sluice_engine::Ids::message_id(&*message.meta).to_owned();
    let correlation = correlation_id(headers).unwrap_or_else(|| message_id.clone());
    let mut message = message;
    std::sync::Arc::make_mut(&mut message.meta).insert(
        sluice_engine::CORRELATION_ID.to_owned(),
        correlation.clone(),
    );
    let (tx, rx) = oneshot::channel();
    let caller = Caller::new();
    let envelope = Envelope::new(
        message,
        Box::new(ReplyAck {
            tx,
            caller: caller.clone(),
        }),
    )
    .wanting_reply();
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
