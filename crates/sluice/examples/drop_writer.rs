//! The fast writer of `bench/file_drain.py --live-rate`: writes N order files into a folder,
//! one by one, at a steady rate, the way a producer drops files (create, write, close; no
//! temporary name), and records when each was complete, so that the harness can measure
//! each file's latency from "written" to "delivered". Python cannot write 5,000 files/s
//! steadily, which is why this is a Rust program.
//!
//! Build: `cargo build --release -p sluice --features bench-floors --example drop_writer`
//! Run:   `target/release/examples/drop_writer --dir INBOX --files N --rate PER_SECOND --log FILE`
//! The log has one line per file: `<name> <CLOCK_REALTIME ns when closed>`.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One order of about 250 bytes, the same shape as `bench/file_drain.py`'s `order(i)`.
fn order(i: usize) -> (String, String) {
    let id = format!("o-{i:06}");
    let tier = ["gold", "silver", "standard"][i % 3];
    let body = format!(
        r#"{{"id": "{id}", "currency": "EUR", "customer": {{"id": "c-{:04}", "country": "DE", "tier": "{tier}"}}, "lines": [{{"sku": "KETTLE-1", "qty": {}, "price": 39.5}}, {{"sku": "MUG-4", "qty": 2, "price": 7.25}}], "note": "benchmark order padded to ~250 bytes"}}"#,
        i % 997,
        1 + i % 4
    );
    (format!("{id}.json"), body)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: drop_writer --dir INBOX --files N --rate PER_SECOND --log FILE";
    let (Some(dir), Some(files), Some(rate), Some(log)) = (
        arg(&args, "--dir"),
        arg(&args, "--files").and_then(|n| n.parse::<usize>().ok()),
        arg(&args, "--rate").and_then(|n| n.parse::<f64>().ok()),
        arg(&args, "--log"),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut written = Vec::with_capacity(files);
    let start = Instant::now();
    for i in 1..=files {
        // Paced against the start, so that a slow write is caught up rather than added up.
        let due = start + every * (i as u32 - 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let (name, body) = order(i);
        let mut file = std::fs::File::create(dir.join(&name))?;
        file.write_all(body.as_bytes())?;
        drop(file);
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        written.push((name, at));
    }
    let took = start.elapsed();
    let mut out = std::io::BufWriter::new(std::fs::File::create(log)?);
    for (name, at) in &written {
        writeln!(out, "{name} {at}")?;
    }
    out.flush()?;
    eprintln!(
        "wrote {files} files in {:.3} s ({:.0} files/s)",
        took.as_secs_f64(),
        files as f64 / took.as_secs_f64()
    );
    Ok(())
}
