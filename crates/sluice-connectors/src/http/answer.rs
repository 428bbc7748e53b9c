//! Waiting for a message's outcome and turning it into the HTTP answer, including what a
//! 504 means: before the message's first sink write it is cancelled (nothing delivered),
//! after it the outcome is unknown and the answer says so.

use super::server::RouteEntry;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice_engine::{Caller, Envelope, ErrorKind, GaveUp, Outcome};
use std::time::Duration;
use tokio::sync::oneshot;

/// Gives the caller up when the request ends without the outcome (the client left, or the
/// timeout answered), so the engine does not write sinks for an answer nobody waits for.
struct Waiting<'a> {
    caller: &'a Caller,
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.caller.give_up();
        }
    }
}

/// Violations listed in a 422 body (its message gives the full count).
const MAX_VIOLATIONS_SHOWN: usize = 100;

/// Starts the message, waits for its outcome (bounded by the route's timeout), and turns
/// it into a response.
pub(super) async fn answer(
    route: &RouteEntry,
    envelope: Envelope,
    message_id: &str,
    rx: oneshot::Receiver<Outcome>,
    caller: &Caller,
) -> Response {
    let mut waiting = Waiting {
        caller,
        answered: false,
    };
    let answered = tokio::time::timeout(route.timeout, async {
        if route.inlet.start(envelope).await.is_err() {
            return None;
        }
        rx.await.ok()
    })
    .await;
    waiting.answered = true;
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
        Err(_) => return timed_out(route.timeout, message_id, caller.give_up()),
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
            match reply.xml {
                Some(xml) => body_response(status, xml, "application/xml", &reply.headers),
                None => json_response(status, &reply.payload, &reply.headers),
            }
        }
        Outcome::Filtered => StatusCode::NO_CONTENT.into_response(),
        Outcome::Failed(failure) => {
            let error = &failure.error;
            let status = match error.kind {
                ErrorKind::Contract => StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                ErrorKind::Enrich => StatusCode::BAD_GATEWAY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let violations = (error.kind == ErrorKind::Contract).then(|| {
                let shown = &error.violations[..error.violations.len().min(MAX_VIOLATIONS_SHOWN)];
                serde_json::to_value(shown).unwrap_or(Value::Null)
            });
            // Contract messages help the caller; other internals (paths, sinks) stay inside.
            let message = match error.kind {
                ErrorKind::Contract => error.message.clone(),
                ErrorKind::Timeout => "a downstream service did not answer in time".to_owned(),
                ErrorKind::Enrich => match error.upstream_status {
                    Some(status) => format!("an upstream service answered {status}"),
                    None => "an upstream service could not be reached".to_owned(),
                },
                ErrorKind::Transform | ErrorKind::Script => format!(
                    "the flow failed in {}",
                    error.step.as_deref().unwrap_or("a step")
                ),
                _ => "the flow could not deliver the message".to_owned(),
            };
            let mut body = error_body(error.kind.as_str(), &message, Some(message_id), violations);
            // The caller may act on what the upstream said (a 404 from a lookup, a 429).
            if let Some(upstream) = error
                .upstream_status
                .filter(|_| error.kind == ErrorKind::Enrich)
            {
                body["upstream_status"] = upstream.into();
            }
            json_response(status, &json!({ "error": body }), &[])
        }
    }
}

/// The 504 after the route's timeout. Which one depends on the commit point: before any
/// sink the message is cancelled and nothing is delivered (a retry is safe); once its sinks
/// were being written the outcome is unknown, and the message id lets the retry be
/// recognised.
fn timed_out(timeout: Duration, message_id: &str, gave_up: GaveUp) -> Response {
    let took = humantime::format_duration(timeout);
    let (outcome, message) = match gave_up {
        GaveUp::NothingDelivered => (
            "not_delivered",
            format!(
                "the flow did not answer within {took}; the message was cancelled before any sink wrote it, so nothing was delivered and a retry is safe"
            ),
        ),
        GaveUp::OutcomeUnknown => (
            "unknown",
            format!(
                "the flow did not answer within {took} while its sinks were being written: the outcome is unknown; retry with the header `Idempotency-Key: {message_id}` so that a flow deduplicating on it does not deliver twice"
            ),
        ),
    };
    let body = json!({ "error": {
        "kind": "timeout",
        "message": message,
        "message_id": message_id,
        "outcome": outcome,
    }});
    let mut response = json_response(StatusCode::GATEWAY_TIMEOUT, &body, &[]);
    if let Ok(value) = HeaderValue::try_from(message_id) {
        response.headers_mut().insert("x-message-id", value);
    }
    response
}

/// Error bodies: `{"error": {"kind", "message", "message_id", "violations"?}}`.
pub(super) fn error_response(
    status: StatusCode,
    kind: &str,
    message: &str,
    message_id: Option<&str>,
    violations: Option<Value>,
) -> Response {
    let error = error_body(kind, message, message_id, violations);
    json_response(status, &json!({ "error": error }), &[])
}

/// The object under `"error"` in every error answer.
fn error_body(
    kind: &str,
    message: &str,
    message_id: Option<&str>,
    violations: Option<Value>,
) -> Value {
    let mut error = json!({ "kind": kind, "message": message, "message_id": message_id });
    if let Some(violations) = violations {
        error["violations"] = violations;
    }
    error
}

pub(super) fn json_response(
    status: StatusCode,
    body: &Value,
    headers: &[(String, String)],
) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
    body_response(status, bytes, "application/json", headers)
}

/// An answer of `bytes` of `content_type`, with the `reply` step's headers.
fn body_response(
    status: StatusCode,
    bytes: Vec<u8>,
    content_type: &'static str,
    headers: &[(String, String)],
) -> Response {
    let mut response = (status, bytes).into_response();
    let h = response.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
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
