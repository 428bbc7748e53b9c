//! The floor for the file drain of `bench/file_drain.py --compare`: a plain program that does
//! the work of `flows/order-intake.yaml` for every file of a prefilled folder, with two
//! threads and the same libraries as sluice, and then exits.
//!
//! The flow's steps for one order are `bench/floor.rs`'s `OrderIntake`, shared with
//! `http_floor` (direct walks between the payload forms, the filter's `> 0` compared in Rust;
//! that file says why).
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

#[path = "../../../bench/floor.rs"]
mod floor;
use floor::{OrderIntake, Refused};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Where one processed order goes.
enum Routed {
    Express(String, Vec<u8>),
    Standard(String, Vec<u8>),
    Filtered,
}

/// The steps of the flow for the bytes of one file.
fn handle(flow: &OrderIntake, name: &str, body: &[u8]) -> Result<Routed, String> {
    let order: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let priced = match flow.run(&order, &[("flow", "order-intake"), ("file.name", name)]) {
        Ok(Some(priced)) => priced,
        Ok(None) => return Ok(Routed::Filtered),
        Err(Refused::Input(why) | Refused::Step(why) | Refused::Output(why)) => return Err(why),
    };
    let order_id = match priced.value.get("order_id") {
        Some(Value::String(id)) => id.clone(),
        _ => return Err("no order_id".to_owned()),
    };
    Ok(if priced.express {
        Routed::Express(order_id, priced.bytes)
    } else {
        Routed::Standard(order_id, priced.bytes)
    })
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
fn one(flow: &OrderIntake, dirs: &Folders, name: &str, temp: &str) -> Result<(), String> {
    let claimed = dirs.inflight.join(name);
    std::fs::rename(dirs.inbox.join(name), &claimed).map_err(|e| format!("claim: {e}"))?;
    let bytes = std::fs::read(&claimed).map_err(|e| format!("read: {e}"))?;
    let write = |folder: &Path, id: &str, bytes: &[u8]| {
        write_file(folder, &format!("{id}.json"), bytes, temp).map_err(|e| format!("write: {e}"))
    };
    match handle(flow, name, &bytes)? {
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
    let floor = OrderIntake::load(&root).unwrap_or_else(|e| {
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
