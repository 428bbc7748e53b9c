//! `GET /api/flows/{name}/tap`: the live tap as server-sent events (one `data:` line of JSON
//! per sample), for `sluice tap` and the browser.
//!
//! Off unless the admin server is on a loopback address or has a token: a tap shows
//! payloads. Values from `${env:…}` and credential headers are redacted. Each subscriber has
//! a bounded queue (a slow reader loses samples, counted in `lost` and
//! `sluice_tap_lost_total`); the flow never waits for it.

use super::{Admin, trust};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice_engine::tap::{Filter, TapEvent};
use std::collections::HashMap;
use std::time::Duration;

/// Samples queued per subscriber before new ones are dropped.
const QUEUE: usize = 256;
/// Taps open at once.
const MAX_TAPS: usize = 16;
/// A comment line this often keeps proxies from closing an idle stream, and notices a
/// reader that went away.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Header names (after `http.header.`) whose values a tap never shows.
fn is_credential(header: &str) -> bool {
    let header = header.to_ascii_lowercase();
    matches!(
        header.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || [
        "token",
        "secret",
        "password",
        "api-key",
        "apikey",
        "signature",
        "auth",
    ]
    .iter()
    .any(|word| header.contains(word))
}

/// The JSON text of one sample, redacted.
pub fn event_json(event: &TapEvent, lost: u64) -> String {
    let meta: serde_json::Map<String, Value> = event
        .meta
        .iter()
        .map(|(key, value)| {
            let shown = match key.strip_prefix("http.header.") {
                Some(name) if is_credential(name) => "***".to_owned(),
                _ => value.clone(),
            };
            (key.clone(), Value::String(shown))
        })
        .collect();
    let value = json!({
        "time": event.time,
        "flow": event.flow,
        "message_id": event.message_id,
        "step": event.step,
        "payload": event.payload,
        "meta": meta,
        "error": event.error.as_ref().map(|(kind, message)| json!({"kind": kind, "message": message})),
        "lost": lost,
    });
    sluice_flow::secrets::redact(&value.to_string()).into_owned()
}

fn count(query: &HashMap<String, String>, key: &str) -> Result<Option<u64>, String> {
    match query.get(key) {
        None => Ok(None),
        Some(text) => match text.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(format!(
                "`{key}` must be a count of at least 1 (got `{text}`)"
            )),
        },
    }
}

/// `GET /api/flows/{name}/tap?step=NAME&sample=N&limit=N`.
pub async fn tap(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !admin.tap_allowed {
        return trust::refuse(
            StatusCode::FORBIDDEN,
            "tap",
            "the live tap shows payloads, so it is off while the admin server listens beyond \
             loopback without a token: start sluice with --admin-token TOKEN (or \
             SLUICE_ADMIN_TOKEN), or bind the admin server to 127.0.0.1"
                .to_owned(),
        );
    }
    if sluice_engine::directory::lookup(&name).is_none() {
        return trust::refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no running flow named `{name}`"),
        );
    }
    let (sample, limit) = match (count(&query, "sample"), count(&query, "limit")) {
        (Ok(sample), Ok(limit)) => (sample.unwrap_or(1), limit),
        (Err(message), _) | (_, Err(message)) => {
            return trust::refuse(StatusCode::BAD_REQUEST, "request", message);
        }
    };
    if sluice_engine::tap::subscribers() >= MAX_TAPS {
        return trust::refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "tap",
            format!("{MAX_TAPS} taps are open already; close one and try again"),
        );
    }
    let tap = sluice_engine::tap::subscribe(
        Filter {
            flow: name,
            step: query.get("step").cloned(),
            sample,
        },
        QUEUE,
    );
    let stop = admin.stop.clone();
    // The state: the subscription, samples sent, and whether the stream has ended.
    let stream = futures_util::stream::unfold((tap, 0u64, false), move |(mut tap, sent, done)| {
        let stop = stop.clone();
        async move {
            if done || limit.is_some_and(|l| sent >= l) {
                return None;
            }
            let chunk = tokio::select! {
                _ = stop.cancelled() => return None,
                next = tokio::time::timeout(KEEP_ALIVE, tap.events.recv()) => match next {
                    Err(_) => Bytes::from_static(b": keep-alive\n\n"),
                    Ok(None) => return None,
                    Ok(Some(event)) => {
                        let text = event_json(&event, tap.lost());
                        return Some((
                            Ok::<_, std::convert::Infallible>(Bytes::from(format!("data: {text}\n\n"))),
                            (tap, sent + 1, false),
                        ));
                    }
                },
            };
            Some((Ok(chunk), (tap, sent, false)))
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
