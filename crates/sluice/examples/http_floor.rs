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
//! 6. JMESPath filter `length(lines) > `0`` (204 when false) and route predicate
//!    `priority == 'high'`;
//! 7. validate against `schemas/priced-order.v1.json`, 500 on a violation;
//! 8. serialize; with `--outbox DIR`, write it to `DIR/express/last.json` or
//!    `DIR/standard/last.json` (as the route picks) under a temporary name and rename it over
//!    the last one, on a blocking thread, as sluice's file sink with `on_conflict: overwrite`
//!    does; answer 200 with the priced order.
//!
//! Payloads move between the libraries by direct walks (`bench/plain_convert.rs`), like the
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
#[path = "../../../bench/plain_convert.rs"]
mod plain_convert;
use plain_convert::{jmes_to_json, json_to_jmes, json_to_rhai, rhai_to_json, search};
use rhai::{Dynamic, Engine, Scope};
use serde_json::{Value, json};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const TRANSFORM: &str = "{order_id: id, customer: customer, lines: lines, currency: currency}";
const FILTER: &str = "length(lines) > `0`";
const WHEN: &str = "priority == 'high'";

/// sluice's defaults for `script_limits`.
const MAX_OPERATIONS: u64 = 1_000_000;
const SCRIPT_DEADLINE: Duration = Duration::from_secs(1);
/// sluice looks at the deadline every 256 Rhai operations.
const DEADLINE_CHECK_EVERY: u64 = 256;

thread_local! {
    // As in sluice: the progress callback is shared, so the deadline of the run on this
    // thread lives in a thread-local.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// A request answered with an error: its status, the error kind and the message.
type Refusal = (StatusCode, &'static str, String);

struct Floor {
    /// Where the priced orders are written (`--outbox`); nowhere without it.
    outbox: Option<PathBuf>,
    input: jsonschema::Validator,
    output: jsonschema::Validator,
    transform: jmespath::Expression<'static>,
    filter: jmespath::Expression<'static>,
    when: jmespath::Expression<'static>,
    engine: Engine,
    script: rhai::AST,
}

fn sandbox() -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(MAX_OPERATIONS)
        .set_max_call_levels(32)
        .set_max_expr_depths(64, 32)
        .set_max_string_size(1 << 20)
        .set_max_array_size(100_000)
        .set_max_map_size(10_000)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.disable_symbol("eval");
    engine.on_progress(|operations| {
        if operations % DEADLINE_CHECK_EVERY != 0 {
            return None;
        }
        match DEADLINE.get() {
            Some(deadline) if Instant::now() >= deadline => Some(Dynamic::from("deadline")),
            _ => None,
        }
    });
    engine
}

fn validator(path: &Path) -> Result<jsonschema::Validator, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let schema: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    // A file:// base URI so that priced-order.v1's `order.v1.json#/$defs/customer` resolves.
    let absolute = std::path::absolute(path).map_err(|e| e.to_string())?;
    jsonschema::options()
        .with_base_uri(format!("file://{}", absolute.display()))
        .build(&schema)
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl Floor {
    fn load(root: &Path, outbox: Option<PathBuf>) -> Result<Floor, String> {
        let engine = sandbox();
        let script_path = root.join("scripts/price.rhai");
        let source = std::fs::read_to_string(&script_path)
            .map_err(|e| format!("cannot read {}: {e}", script_path.display()))?;
        let script = engine
            .compile(&source)
            .map_err(|e| format!("{}: {e}", script_path.display()))?;
        let compile = |text| jmespath::compile(text).map_err(|e| e.to_string());
        if let Some(outbox) = &outbox {
            for sink in ["express", "standard"] {
                std::fs::create_dir_all(outbox.join(sink))
                    .map_err(|e| format!("cannot create {}: {e}", outbox.display()))?;
            }
        }
        Ok(Floor {
            outbox,
            input: validator(&root.join("schemas/order.v1.json"))?,
            output: validator(&root.join("schemas/priced-order.v1.json"))?,
            transform: compile(TRANSFORM)?,
            filter: compile(FILTER)?,
            when: compile(WHEN)?,
            engine,
            script,
        })
    }

    /// The request path after the HTTP layer: Ok(Some((body, express))) for 200, Ok(None)
    /// for 204.
    fn handle(&self, body: &[u8]) -> Result<Option<(Vec<u8>, bool)>, Refusal> {
        let fail = |status, kind, message: String| (status, kind, message);
        let order: Value = serde_json::from_slice(body)
            .map_err(|e| fail(StatusCode::BAD_REQUEST, "trigger", e.to_string()))?;
        if !self.input.is_valid(&order) {
            let violations: Vec<String> = self
                .input
                .iter_errors(&order)
                .map(|e| e.to_string())
                .collect();
            return Err(fail(
                StatusCode::UNPROCESSABLE_ENTITY,
                "contract",
                violations.join("; "),
            ));
        }
        let internal = |e: String| fail(StatusCode::INTERNAL_SERVER_ERROR, "step", e);

        // transform
        let data = json_to_jmes(&order);
        let shaped = search(&self.transform, &data).map_err(|e| internal(e.to_string()))?;
        let mut payload = jmes_to_json(&shaped).map_err(internal)?;

        // set received_at
        let received_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        if let Value::Object(map) = &mut payload {
            map.insert("received_at".to_owned(), Value::String(received_at.clone()));
        }

        // script, with `payload` mutable and `meta` read-only, as in sluice
        let mut scope = Scope::new();
        scope.push_dynamic("payload", json_to_rhai(&payload).map_err(internal)?);
        let mut meta = rhai::Map::new();
        meta.insert("flow".into(), Dynamic::from("order-intake-http".to_owned()));
        meta.insert("received_at".into(), Dynamic::from(received_at));
        scope.push_constant("meta", meta);
        DEADLINE.set(Some(Instant::now() + SCRIPT_DEADLINE));
        let ran = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut scope, &self.script);
        DEADLINE.set(None);
        let returned = ran.map_err(|e| internal(e.to_string()))?;
        let result = if returned.is_unit() {
            scope.get_value::<Dynamic>("payload").unwrap_or_default()
        } else {
            returned
        };
        let priced = rhai_to_json(&result).map_err(internal)?;

        // filter and route
        let data = json_to_jmes(&priced);
        let keep = search(&self.filter, &data)
            .map_err(|e| internal(e.to_string()))?
            .is_truthy();
        if !keep {
            return Ok(None);
        }
        let express = search(&self.when, &data)
            .map_err(|e| internal(e.to_string()))?
            .is_truthy();

        // output contract, then serialize
        if !self.output.is_valid(&priced) {
            let violations: Vec<String> = self
                .output
                .iter_errors(&priced)
                .map(|e| e.to_string())
                .collect();
            return Err(fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "contract",
                violations.join("; "),
            ));
        }
        serde_json::to_vec(&priced)
            .map(|bytes| Some((bytes, express)))
            .map_err(|e| internal(e.to_string()))
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
