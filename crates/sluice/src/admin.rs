//! The admin server: health, readiness, Prometheus metrics, and the flows API.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use sluice_engine::{Outcome, Registry};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

mod bind;
mod dlq;
mod tap;
mod trust;

#[derive(Clone)]
struct Admin {
    registry: Arc<Registry>,
    metrics: PrometheusHandle,
    token: Option<String>,
    server: String,
    /// Held while dead letters are replayed or purged (one at a time).
    replaying: Arc<tokio::sync::Mutex<()>>,
    /// Whether the live tap is on: with a token, or on a loopback address.
    tap_allowed: bool,
    /// Ends open streams (the live tap) when the server stops.
    stop: CancellationToken,
    /// The version each flow's `sluice_flow_info` last showed (set to 0 when replaced).
    versions: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

/// What `sluice run` says about the admin server.
pub struct AdminOptions {
    /// `--admin ADDR`.
    pub addr: String,
    /// `--admin-token`.
    pub token: Option<String>,
    /// `--admin-host NAME…`: names it answers to besides its own address.
    pub hosts: Vec<String>,
    /// The HTTP listener's base URL, the `servers` entry of `/api/openapi.json`.
    pub server: String,
}

/// Binds and serves the admin API until `stop`; a bind failure is logged, not fatal.
pub async fn serve(
    options: AdminOptions,
    registry: Arc<Registry>,
    metrics: PrometheusHandle,
    stop: CancellationToken,
) {
    let AdminOptions {
        addr,
        token,
        hosts,
        server,
    } = options;
    let listener = match bind::bind(&addr, &stop).await {
        Ok(listener) => listener,
        // Stopping while the port was still taken: nothing went wrong that needs a word.
        Err(_) if stop.is_cancelled() => return,
        Err(e) => {
            tracing::error!("cannot start the admin server on {addr}: {e}");
            return;
        }
    };
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(e) => {
            tracing::error!("cannot start the admin server on {addr}: {e}");
            return;
        }
    };
    tracing::info!("admin server on {local}");
    let trust = trust::Trust::new(local, hosts, token.clone());
    let tap_allowed = token.is_some() || local.ip().is_loopback();
    let state = Admin {
        tap_allowed,
        stop: stop.clone(),
        versions: Arc::default(),
        registry,
        metrics,
        token,
        server,
        replaying: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/flows", get(flows))
        .route("/api/flows/{name}", get(flow))
        .route("/api/flows/{name}/messages", post(inject))
        .route("/api/flows/{name}/tap", get(tap::tap))
        .route("/api/dead-letters", get(dlq::list))
        .route("/api/dead-letters/replay", post(dlq::replay))
        .route("/api/dead-letters/purge", post(dlq::purge))
        .route("/api/dead-letters/{id}", get(dlq::show))
        .route("/api/openapi.json", get(openapi))
        .route("/", get(dashboard))
        .layer(middleware::from_fn_with_state(trust, trust::guard))
        .with_state(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!("admin server stopped: {e}");
    }
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 503 while a flow's trigger is not healthy (a broker still `connecting`), while a flow file
/// that failed to load at start-up has not loaded, or while the flows folder is gone; each
/// named in `unready`. A failed reload of a running flow (the previous version keeps running)
/// does not make it unready; it is listed in `errors`. Answers from a snapshot of the
/// registry: it never waits for a reload.
async fn readyz(State(admin): State<Admin>) -> Response {
    let flows = admin.registry.status().await;
    let mut unready: Vec<Value> = flows
        .iter()
        .filter(|f| !f.ready)
        .map(|f| {
            json!({
                "flow": f.name,
                "file": f.path,
                "state": f.state,
                "reason": f.unhealthy.as_deref().or(f.last_error.as_deref()),
            })
        })
        .collect();
    if let Some(problem) = admin.registry.problem().await {
        unready.push(json!({"reason": problem}));
    }
    let errors: Vec<Value> = flows
        .iter()
        .filter(|f| f.ready)
        .filter_map(|f| {
            f.last_error
                .as_deref()
                .map(|e| json!({"flow": f.name, "file": f.path, "error": e}))
        })
        .collect();
    let mut body = json!({"ready": unready.is_empty()});
    if !unready.is_empty() {
        body["unready"] = Value::Array(unready);
    }
    if !errors.is_empty() {
        body["errors"] = Value::Array(errors);
    }
    let status = if body["ready"] == true {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics_text(State(admin): State<Admin>) -> Response {
    flow_gauges(&admin).await;
    // Dead-letter depth is counted when it is asked for: nothing on the message path.
    let folders = admin.registry.dead_letter_folders().await;
    if let Ok(depths) = tokio::task::spawn_blocking(move || dlq::depths(&folders)).await {
        for (flow, depth) in depths {
            metrics::gauge!("sluice_dead_letters", "flow" => flow).set(depth as f64);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        admin.metrics.render(),
    )
        .into_response()
}

/// `sluice_ready` (what `/readyz` says), `sluice_trigger_connected` and `sluice_flow_info`, read from the registry's status when
/// `/metrics` is scraped (nothing on the message path).
async fn flow_gauges(admin: &Admin) {
    let flows = admin.registry.status().await;
    let ready = flows.iter().all(|f| f.ready) && admin.registry.problem().await.is_none();
    metrics::gauge!("sluice_ready").set(if ready { 1.0 } else { 0.0 });
    let mut versions = admin.versions.lock().unwrap_or_else(|p| p.into_inner());
    for flow in flows {
        let Some(version) = flow.version else {
            continue;
        };
        let connected = if flow.state == "running" { 1.0 } else { 0.0 };
        metrics::gauge!("sluice_trigger_connected", "flow" => flow.name.clone()).set(connected);
        if let Some(old) = versions.insert(flow.name.clone(), version.clone())
            && old != version
        {
            metrics::gauge!("sluice_flow_info", "flow" => flow.name.clone(), "version" => old)
                .set(0.0);
        }
        metrics::gauge!("sluice_flow_info", "flow" => flow.name, "version" => version).set(1.0);
    }
}

async fn flows(State(admin): State<Admin>) -> Json<Value> {
    Json(serde_json::to_value(admin.registry.status().await).unwrap_or(Value::Null))
}

/// The OpenAPI document of the running versions of the `http` flows.
async fn openapi(State(admin): State<Admin>) -> Json<Value> {
    let running: Vec<_> = admin
        .registry
        .status()
        .await
        .into_iter()
        .filter_map(|f| sluice_engine::directory::lookup(&f.name))
        .collect();
    Json(crate::openapi::document(
        running.iter().map(|f| f.as_ref()),
        std::slice::from_ref(&admin.server),
    ))
}

async fn flow(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    match admin
        .registry
        .status()
        .await
        .into_iter()
        .find(|f| f.name == name)
    {
        Some(status) => Json(serde_json::to_value(status).unwrap_or(Value::Null)).into_response(),
        None => not_found(&name),
    }
}

fn not_found(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"kind": "not_found", "message": format!("no flow named `{name}`")}})),
    )
        .into_response()
}

async fn inject(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    // A flow with its own `auth:` trusts only callers that pass it; the admin API skips that
    // check, so it may only do so for a caller that proved to be the operator.
    if admin.token.is_none() && has_own_auth(&name) {
        return trust::refuse(
            StatusCode::FORBIDDEN,
            "auth",
            format!(
                "flow `{name}` has its own `auth:`; injecting into it through the admin API \
                 needs the admin token: start sluice with --admin-token TOKEN \
                 (or SLUICE_ADMIN_TOKEN) and send `Authorization: Bearer TOKEN`"
            ),
        );
    }
    let payload: Value = match sluice_engine::parse_json(&body) {
        Ok(value) => value,
        Err(e) => {
            let status = if e.unrepresentable() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_REQUEST
            };
            return (
                status,
                Json(json!({"error": {"kind": "trigger", "message": e.to_string()}})),
            )
                .into_response();
        }
    };
    let Some((message_id, outcome)) = admin.registry.inject(&name, payload).await else {
        return not_found(&name);
    };
    let body = match outcome {
        Outcome::Delivered(reply) => {
            json!({"outcome": "delivered", "message_id": message_id, "payload": reply.map(|r| r.payload)})
        }
        Outcome::Completed(reply) => {
            json!({"outcome": "completed", "message_id": message_id, "payload": reply.map(|r| r.payload)})
        }
        Outcome::Filtered => json!({"outcome": "filtered", "message_id": message_id}),
        Outcome::Failed(failure) => json!({
            "outcome": "error",
            "message_id": message_id,
            "error": {
                "kind": failure.error.kind,
                "message": failure.error.message,
                "step": failure.error.step,
                "violations": failure.error.violations,
            },
            "dead_lettered": failure.dead_lettered,
        }),
    };
    Json(body).into_response()
}

/// Whether the running version of flow `name` authenticates its own callers.
fn has_own_auth(name: &str) -> bool {
    sluice_engine::directory::lookup(name).is_some_and(|flow| flow.trigger_info.authenticates)
}

async fn dashboard(State(admin): State<Admin>) -> Response {
    let mut rows = String::new();
    for f in admin.registry.status().await {
        let c = f.counters;
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&f.name),
            f.state,
            escape(f.trigger.as_deref().unwrap_or("")),
            c.received,
            c.completed,
            c.filtered,
            c.failed,
            c.dead_lettered,
            escape(f.last_error.as_deref().or(f.unhealthy.as_deref()).unwrap_or("")),
        ));
    }
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>sluice</title><meta http-equiv=refresh content=5>\
         <style>body{{font:14px system-ui;margin:2em}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}</style>\
         <h1>sluice</h1><table><tr><th>flow</th><th>state</th><th>trigger</th><th>received</th><th>completed</th>\
         <th>filtered</th><th>failed</th><th>dead-lettered</th><th>problem</th></tr>{rows}</table>\
         <p><a href=/metrics>metrics</a> · <a href=/api/flows>flows</a> · <a href=/api/dead-letters>dead letters</a></p>"
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
