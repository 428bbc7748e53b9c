//! The floor for `bench/http_load.sh`: a plain axum handler that does the work of the
//! order-intake flow for one HTTP request, with the same libraries as sluice and nothing else.
//!
//! `POST /orders` with a JSON order:
//!
//! 1. parse the body (`serde_json`), 415 if the content type is not JSON, 400 if malformed;
//! 2. validate against `schemas/order.v1.json` (`jsonschema`), 422 on a violation;
//! 3. JMESPath transform `{order_id: id, customer: customer, lines: lines, currency: currency}`;
//! 4. add `received_at` (RFC 3339, ms, UTC), what the flow's `set` step does with
//!    `meta('received_at')`;
//! 5. run `scripts/price.rhai` in a Rhai engine with sluice's sandbox settings;
//! 6. the filter `length(lines) > `0`` (JMESPath `length(lines)`, then `> 0`; 204 when
//!    false) and the route predicate `priority == 'high'`;
//! 7. validate against `schemas/priced-order.v1.json`, 500 on a violation;
//! 8. serialize; with `--outbox DIR`, write it to `DIR/express/last.json` or
//!    `DIR/standard/last.json` (as the route picks) under a temporary name and rename it over
//!    the last one, on a blocking thread, as sluice's file sink with `on_conflict: overwrite`
//!    does; answer 200 with the priced order.
//!
//! Steps 2–8 are `bench/floor.rs`'s `OrderIntake`, shared with `drain_floor` (direct walks
//! between the payload forms), like the
//! `plain_loop_sandboxed` case of `cargo bench -p sluice-engine --bench pipeline`. Nothing is
//! logged per request and there are no metrics: that is what makes it a floor.
//!
//! Build: `cargo build --release --example http_floor -p sluice`
//! Run:   `target/release/examples/http_floor --listen 127.0.0.1:8090 --root . [--outbox DIR]`
//! (`--root` is the folder that holds `schemas/` and `scripts/`; default: the current folder.)

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
#[path = "../../../bench/floor.rs"]
mod floor;
use floor::{OrderIntake, Refused};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A request answered with an error: its status, the error kind and the message.
type Refusal = (StatusCode, &'static str, String);

struct Floor {
    /// Where the priced orders are written (`--outbox`); nowhere without it.
    outbox: Option<PathBuf>,
    flow: OrderIntake,
}

impl Floor {
    fn load(root: &Path, outbox: Option<PathBuf>) -> Result<Floor, String> {
        if let Some(outbox) = &outbox {
            for sink in ["express", "standard"] {
                std::fs::create_dir_all(outbox.join(sink))
                    .map_err(|e| format!("cannot create {}: {e}", outbox.display()))?;
            }
        }
        Ok(Floor {
            outbox,
            flow: OrderIntake::load(root)?,
        })
    }

    /// The request path after the HTTP layer: Ok(Some((body, express))) for 200, Ok(None)
    /// for 204.
    fn handle(&self, body: &[u8]) -> Result<Option<(Vec<u8>, bool)>, Refusal> {
        let order: Value = serde_json::from_slice(body)
            .map_err(|e| (StatusCode::BAD_REQUEST, "trigger", e.to_string()))?;
        match self.flow.run(&order, &[("flow", "order-intake-http")]) {
            Ok(priced) => Ok(priced.map(|p| (p.bytes, p.express))),
            Err(Refused::Input(why)) => Err((StatusCode::UNPROCESSABLE_ENTITY, "contract", why)),
            Err(Refused::Step(why)) => Err((StatusCode::INTERNAL_SERVER_ERROR, "step", why)),
            Err(Refused::Output(why)) => Err((StatusCode::INTERNAL_SERVER_ERROR, "contract", why)),
        }
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case("+json"))
}

fn json_body(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn orders(State(floor): State<Arc<Floor>>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_json(&headers) {
        let error = json!({"error": {"kind": "trigger", "message": "the body is not JSON"}});
        return json_body(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error.to_string().into_bytes(),
        );
    }
    match floor.handle(&body) {
        Ok(Some((bytes, express))) => match &floor.outbox {
            None => json_body(StatusCode::OK, bytes),
            Some(outbox) => {
                let folder = outbox.join(if express { "express" } else { "standard" });
                let written = tokio::task::spawn_blocking(move || {
                    write_over(&folder, &bytes).map(|()| bytes)
                })
                .await;
                match written {
                    Ok(Ok(bytes)) => json_body(StatusCode::OK, bytes),
                    Ok(Err(e)) => {
                        let error = json!({"error": {"kind": "sink", "message": e.to_string()}});
                        json_body(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            error.to_string().into_bytes(),
                        )
                    }
                    Err(e) => {
                        let error = json!({"error": {"kind": "sink", "message": e.to_string()}});
                        json_body(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            error.to_string().into_bytes(),
                        )
                    }
                }
            }
        },
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err((status, kind, message)) => {
            let error = json!({"error": {"kind": kind, "message": message}});
            json_body(status, error.to_string().into_bytes())
        }
    }
}

/// Writes `bytes` to `folder/last.json`: a temporary file (a name per write, from a counter),
/// then one rename over the last one.
fn write_over(folder: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = folder.join(format!(".last.json.{n}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, folder.join("last.json"))
}

fn usage() -> ! {
    eprintln!(
        "usage: http_floor [--listen ADDR] [--root DIR] [--outbox DIR]   (default 127.0.0.1:8090, ., none)"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut listen = "127.0.0.1:8090".to_owned();
    let mut root = PathBuf::from(".");
    let mut outbox = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().unwrap_or_else(|| usage()),
            "--root" => root = PathBuf::from(args.next().unwrap_or_else(|| usage())),
            "--outbox" => outbox = Some(PathBuf::from(args.next().unwrap_or_else(|| usage()))),
            _ => usage(),
        }
    }
    let floor = match Floor::load(&root, outbox) {
        Ok(floor) => Arc::new(floor),
        Err(e) => {
            eprintln!("http_floor: {e}");
            std::process::exit(1);
        }
    };
    let app = Router::new()
        .route("/orders", post(orders))
        .with_state(floor);
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("http_floor: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(listen);
    eprintln!("http_floor listening on {local}");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("http_floor: {e}");
        std::process::exit(1);
    }
}
