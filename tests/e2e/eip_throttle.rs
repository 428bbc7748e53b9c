//! `throttle`: a rate of 50/s over 10 s lets 500 ± 5 messages through; a concurrency limit of
//! 4 against a slow sink never has more than 4 writes under way.
//!
//! The slow sink is the file sink with the test hook `SLUICE_TEST_SINK_DELAY` (every write
//! takes that long, and the sink logs `writers=N`, the writes under way at that moment): the
//! measurement is the sink's own, independent of the throttle's bookkeeping.

use std::time::{Duration, SystemTime};

use crate::support::*;

#[test]
fn a_rate_of_50_per_second_lets_500_through_in_10_seconds() {
    let sb = Sandbox::new();
    sb.write(
        "flows/rate.yaml",
        format!(
            r#"name: rate
concurrency: 4
trigger:
  file:
    path: inbox/rate
    format: ndjson
    {FAST_TRIGGER}
steps:
  - throttle: {{ rate: 50/s }}
  - to: out
sinks:
  out:
    file: {{ path: outbox/rate, name: "{{{{n}}}}.json" }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("rate");
    let lines: String = (0..1500)
        .map(|n| format!("{}\n", json!({"n": n})))
        .collect();
    sb.write_atomic("inbox/rate/many.ndjson", lines);
    let out = sb.path("outbox/rate");
    sluice.expect_within(secs(30), "the first message passes", || {
        count_files(&out) >= 1
    });
    std::thread::sleep(Duration::from_millis(11_000));
    let mut times: Vec<SystemTime> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.metadata().unwrap().modified().unwrap())
        .collect();
    times.sort();
    let first = times[0];
    let within = times
        .iter()
        .filter(|t| t.duration_since(first).unwrap_or_default() < Duration::from_secs(10))
        .count();
    eprintln!("{within} messages within 10 s of the first");
    assert!(
        (495..=505).contains(&within),
        "{within} messages passed in 10 s, expected 500 ± 5"
    );
}

fn max_writers(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("test sink delay"))
        .filter_map(|l| l.split("writers=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

fn slow_sink_flow(throttle: &str) -> String {
    format!(
        r#"name: slow
concurrency: 16
trigger:
  file:
    path: inbox/slow
    format: ndjson
    {FAST_TRIGGER}
steps:
{throttle}  - to: out
sinks:
  out:
    file: {{ path: outbox/slow, name: "{{{{n}}}}.json" }}
"#
    )
}

#[test]
fn a_concurrency_limit_of_4_holds_against_a_slow_sink() {
    for (throttle, limit) in [("  - throttle: { concurrency: 4 }\n", Some(4)), ("", None)] {
        let sb = Sandbox::new();
        sb.write("flows/slow.yaml", slow_sink_flow(throttle));
        let mut sluice =
            Sluice::start_with_env(&sb, &["run"], &[("SLUICE_TEST_SINK_DELAY", "150ms")]);
        sluice.wait_ready("slow");
        let lines: String = (0..40).map(|n| format!("{}\n", json!({"n": n}))).collect();
        sb.write_atomic("inbox/slow/batch.ndjson", lines);
        sluice.expect_within(secs(60), "40 messages delivered", || {
            sb.count("outbox/slow") == 40 && sb.count("inbox/slow/.done") == 1
        });
        let peak = max_writers(&sluice.log());
        eprintln!("limit {limit:?}: at most {peak} writes under way");
        match limit {
            Some(limit) => {
                assert!(peak <= limit, "{peak} writes under way, limit {limit}");
                assert!(peak >= 2, "the sink never worked in parallel ({peak})");
            }
            // Without the throttle the same measurement sees more: it can tell.
            None => assert!(peak > 4, "without a throttle only {peak} writes overlapped"),
        }
        drop(sluice);
        drop(sb);
    }
}
