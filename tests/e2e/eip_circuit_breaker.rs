//! A circuit breaker against a sink that fails for 5 s (its folder is a file, then becomes a
//! folder): the circuit opens, fails fast, closes when the sink recovers, and every message
//! is either delivered or dead-lettered.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::*;

const FLOW: &str = r#"name: cb
concurrency: 2
trigger:
  file:
    path: inbox/cb
    glob: "*.json"
    @FAST@
steps:
  - to: out
sinks:
  out:
    file: { path: outbox/cb, name: "{{id}}.json" }
errors:
  retry: { attempts: 2, backoff: 50ms }
  circuit_breaker: { failures: 3, window: 10s, open_for: 1s, probes: 1 }
  dead_letter: { file: { path: dead-letter/cb, name: "{{message.id}}.json" } }
"#;

#[test]
fn the_breaker_opens_fails_fast_and_closes_and_nothing_is_lost() {
    let sb = Sandbox::new();
    sb.write("flows/cb.yaml", FLOW.replace("@FAST@", FAST_TRIGGER));
    sb.write("outbox/cb", "the sink folder is a file: every write fails");
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("cb");
    let start = Instant::now();
    let mut ids = BTreeSet::new();
    let mut repaired = false;
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(9) {
        let id = format!("m-{i:03}");
        sb.drop_json("inbox/cb", &format!("{id}.json"), &json!({"id": id}));
        ids.insert(id);
        i += 1;
        if !repaired && start.elapsed() >= Duration::from_secs(5) {
            std::fs::remove_file(sb.path("outbox/cb")).unwrap();
            std::fs::create_dir_all(sb.path("outbox/cb")).unwrap();
            repaired = true;
        }
        std::thread::sleep(millis(60));
    }
    let total = ids.len();
    // `.error/` holds each failed file and its `.error.json` sidecar.
    let failed = |sb: &Sandbox| {
        sb.names("inbox/cb/.error")
            .iter()
            .filter(|n| !n.ends_with(".error.json"))
            .count()
    };
    sluice.expect_within(secs(60), "every file is done or failed", || {
        sb.count("inbox/cb/.done") + failed(&sb) == total
    });
    let delivered: BTreeSet<String> = sb
        .names("outbox/cb")
        .into_iter()
        .map(|n| n.trim_end_matches(".json").to_owned())
        .collect();
    let dead: BTreeSet<String> = sb
        .names("dead-letter/cb")
        .into_iter()
        .map(|n| n.trim_end_matches(".json").to_owned())
        .collect();
    let accounted: BTreeSet<String> = delivered.union(&dead).cloned().collect();
    assert_eq!(
        accounted, ids,
        "every message is delivered or dead-lettered"
    );
    assert!(!delivered.is_empty() && !dead.is_empty());
    let log = sluice.log();
    assert!(log.contains("circuit opened"), "{}", sluice.log_tail(40));
    assert!(log.contains("circuit half-open"), "{}", sluice.log_tail(40));
    assert!(log.contains("circuit closed"), "{}", sluice.log_tail(40));
    let fast = dead
        .iter()
        .filter(|id| {
            let letter = sb.read_json(&format!("dead-letter/cb/{id}.json"));
            letter["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("circuit open"))
        })
        .count();
    assert!(
        fast > 0,
        "no message failed fast while the circuit was open"
    );
    // After the repair the circuit closed: the last messages were delivered.
    let last = ids.iter().next_back().unwrap();
    assert!(
        delivered.contains(last),
        "the last message was not delivered"
    );
    sluice.assert_running();
}
