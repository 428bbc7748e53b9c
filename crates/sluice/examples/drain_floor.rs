//! The floor for the file drain of `bench/file_drain.py --compare`: a plain program that does
//! the work of `flows/order-intake.yaml` for every file of a prefilled folder, with two
//! threads and the same libraries as sluice, and then exits.
//!
//! Payloads move between the libraries through direct walks, as in sluice, since serde_json
//! is built with `arbitrary_precision` here, which the serde bridges of jmespath and rhai do
//! not understand. For the same reason the filter's number literal is compared in Rust: jmespath
//! parses a literal through serde (sluice repairs such literals when it compiles a flow).
//!
//! Per file, in one thread, one file after the other:
//!
//! 1. claim: rename `inbox/orders/<name>` to `inbox/orders/.inflight/<name>`;
//! 2. read it (`std::fs::read`) and parse it (`serde_json`);
//! 3. validate against `schemas/order.v1.json` (`jsonschema`);
//! 4. JMESPath transform `{order_id: id, customer: customer, lines: lines, currency: currency}`
//!    and add `received_at` (RFC 3339, ms, UTC), what the flow's `set` step does;
//! 5. run `scripts/price.rhai` in a Rhai engine with sluice's sandbox settings;
//! 6. the filter `length(lines) > `0`` (JMESPath `length(lines)`, then `> 0`) and the route
//!    predicate `priority == 'high'` (JMESPath);
//! 7. validate against `schemas/priced-order.v1.json`, serialize;
//! 8. write `outbox/express/` or `outbox/standard/` as `.<order_id>.json.tmp-<thread>-<n>`,
//!    then rename it to `<order_id>.json`;
//! 9. move the claimed file to `inbox/orders/.done/<name>`.
//!
//! The folders are created once at the start. Nothing is logged per file, there is no
//! stability gate, no queue, no metrics, no sidecar and no retry: that is what makes it a
//! floor. A file that fails any step is counted and left in `.inflight/`; the exit code is 1
//! when any did.
//!
//! Build: `cargo build --release -p sluice --features bench-floors --example drain_floor`
//! Run:   `target/release/examples/drain_floor --root DIR [--threads 2]`
//! (`DIR` holds `schemas/`, `scripts/` and `inbox/orders/`, as the working folder of
//! `sluice run` with the sample flow does.)

#[path = "../../../bench/plain_convert.rs"]
mod plain_convert;
use plain_convert::{jmes_to_json, json_to_jmes, json_to_rhai, rhai_to_json, search};
use rhai::{Dynamic, Engine, Scope};
use serde_json::Value;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

const TRANSFORM: &str = "{order_id: id, customer: customer, lines: lines, currency: currency}";
/// The flow's filter is `length(lines) > `0``; the comparison with 0 is made in Rust.
const FILTER: &str = "length(lines)";
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

struct Floor {
    input: jsonschema::Validator,
    output: jsonschema::Validator,
    transform: jmespath::Expression<'static>,
    filter: jmespath::Expression<'static>,
    when: jmespath::Expression<'static>,
    engine: Engine,
    script: rhai::AST,
}

/// Where one processed order goes.
enum Routed {
    Express(String, Vec<u8>),
    Standard(String, Vec<u8>),
    Filtered,
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
    fn load(root: &Path) -> Result<Floor, String> {
        let engine = sandbox();
        let script_path = root.join("scripts/price.rhai");
        let source = std::fs::read_to_string(&script_path)
            .map_err(|e| format!("cannot read {}: {e}", script_path.display()))?;
        let script = engine
            .compile(&source)
            .map_err(|e| format!("{}: {e}", script_path.display()))?;
        let compile = |text: &'static str| jmespath::compile(text).map_err(|e| e.to_string());
        Ok(Floor {
            input: validator(&root.join("schemas/order.v1.json"))?,
            output: validator(&root.join("schemas/priced-order.v1.json"))?,
            transform: compile(TRANSFORM)?,
            filter: compile(FILTER)?,
            when: compile(WHEN)?,
            engine,
            script,
        })
    }

    /// The steps of the flow for the bytes of one file.
    fn handle(&self, name: &str, body: &[u8]) -> Result<Routed, String> {
        let order: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if !self.input.is_valid(&order) {
            let violations: Vec<String> = self
                .input
                .iter_errors(&order)
                .map(|e| e.to_string())
                .collect();
            return Err(violations.join("; "));
        }
        let text = |e: &dyn std::fmt::Display| e.to_string();

        let shaped = search(&self.transform, &json_to_jmes(&order))?;
        let mut payload = jmes_to_json(&shaped)?;

        let received_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        if let Value::Object(map) = &mut payload {
            map.insert("received_at".to_owned(), Value::String(received_at.clone()));
        }

        // `payload` mutable and `meta` read-only, as in sluice.
        let mut scope = Scope::new();
        scope.push_dynamic("payload", json_to_rhai(&payload)?);
        let mut meta = rhai::Map::new();
        meta.insert("flow".into(), Dynamic::from("order-intake".to_owned()));
        meta.insert("file.name".into(), Dynamic::from(name.to_owned()));
        meta.insert("received_at".into(), Dynamic::from(received_at));
        scope.push_constant("meta", meta);
        DEADLINE.set(Some(Instant::now() + SCRIPT_DEADLINE));
        let ran = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut scope, &self.script);
        DEADLINE.set(None);
        let returned = ran.map_err(|e| text(&e))?;
        let result = if returned.is_unit() {
            scope.get_value::<Dynamic>("payload").unwrap_or_default()
        } else {
            returned
        };
        let priced = rhai_to_json(&result)?;

        let data = json_to_jmes(&priced);
        if search(&self.filter, &data)?
            .as_number()
            .is_none_or(|n| n <= 0.0)
        {
            return Ok(Routed::Filtered);
        }
        let express = search(&self.when, &data)?.is_truthy();

        if !self.output.is_valid(&priced) {
            let violations: Vec<String> = self
                .output
                .iter_errors(&priced)
                .map(|e| e.to_string())
                .collect();
            return Err(violations.join("; "));
        }
        let order_id = match priced.get("order_id") {
            Some(Value::String(id)) => id.clone(),
            _ => return Err("no order_id".to_owned()),
        };
        let bytes = serde_json::to_vec(&priced).map_err(|e| text(&e))?;
        Ok(if express {
            Routed::Express(order_id, bytes)
        } else {
            Routed::Standard(order_id, bytes)
        })
    }
}

struct Folders {
    inbox: PathBuf,
    inflight: PathBuf,
    done: PathBuf,
    express: PathBuf,
    standard: PathBuf,
}

/// Writes `bytes` as `folder/name`: a temporary name, then a rename.
fn write_file(folder: &Path, name: &str, bytes: &[u8], temp: &str) -> std::io::Result<()> {
    let tmp = folder.join(format!(".{name}.tmp-{temp}"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, folder.join(name))
}

/// One file, from claim to archive.
fn one(floor: &Floor, dirs: &Folders, name: &str, temp: &str) -> Result<(), String> {
    let claimed = dirs.inflight.join(name);
    std::fs::rename(dirs.inbox.join(name), &claimed).map_err(|e| format!("claim: {e}"))?;
    let bytes = std::fs::read(&claimed).map_err(|e| format!("read: {e}"))?;
    let write = |folder: &Path, id: &str, bytes: &[u8]| {
        write_file(folder, &format!("{id}.json"), bytes, temp).map_err(|e| format!("write: {e}"))
    };
    match floor.handle(name, &bytes)? {
        Routed::Express(id, out) => write(&dirs.express, &id, &out)?,
        Routed::Standard(id, out) => write(&dirs.standard, &id, &out)?,
        Routed::Filtered => {}
    }
    std::fs::rename(&claimed, dirs.done.join(name)).map_err(|e| format!("archive: {e}"))
}

fn usage() -> ! {
    eprintln!("usage: drain_floor --root DIR [--threads N]   (default: . and 2)");
    std::process::exit(2)
}

fn main() {
    let mut root = PathBuf::from(".");
    let mut threads = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--root" => root = PathBuf::from(args.next().unwrap_or_else(|| usage())),
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    let floor = Floor::load(&root).unwrap_or_else(|e| {
        eprintln!("drain_floor: {e}");
        std::process::exit(1)
    });
    let inbox = root.join("inbox/orders");
    let dirs = Folders {
        inflight: inbox.join(".inflight"),
        done: inbox.join(".done"),
        express: root.join("outbox/express"),
        standard: root.join("outbox/standard"),
        inbox,
    };
    for dir in [&dirs.inflight, &dirs.done, &dirs.express, &dirs.standard] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("drain_floor: cannot create {}: {e}", dir.display());
            std::process::exit(1);
        }
    }
    let started = Instant::now();
    let names: Vec<String> = match std::fs::read_dir(&dirs.inbox) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && n.ends_with(".json"))
            .collect(),
        Err(e) => {
            eprintln!("drain_floor: cannot list {}: {e}", dirs.inbox.display());
            std::process::exit(1);
        }
    };
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for thread in 0..threads {
            let (floor, dirs, names, next, failed) = (&floor, &dirs, &names, &next, &failed);
            s.spawn(move || {
                let mut n = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(name) = names.get(i) else { break };
                    n += 1;
                    if let Err(e) = one(floor, dirs, name, &format!("{thread}-{n}"))
                        && failed.fetch_add(1, Ordering::Relaxed) < 5
                    {
                        eprintln!("drain_floor: {name}: {e}");
                    }
                }
            });
        }
    });
    let failed = failed.into_inner();
    eprintln!(
        "drain_floor: {} files, {failed} failed, {:.3} s with {threads} threads",
        names.len(),
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
