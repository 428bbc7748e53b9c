//! A runaway Rhai script fails its own message with a `script` error; the runtime keeps going.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::support::*;
use serde_json::Value;

const LOOP_FLOW: &str = r#"name: sandbox
script_limits: { @LIMITS@ }
trigger:
  file:
    path: inbox/sandbox
    glob: "*.json"
    @FAST@
steps:
  - script: |
      if "loop" in payload && payload["loop"] == true {
        loop { }
      }
      payload.checked = true;
      payload
  - to: out
sinks:
  out:
    file: { path: outbox/sandbox, name: "{{id}}.json" }
"#;

fn run_loop_scenario(limits: &str) {
    let sb = Sandbox::new();
    sb.write(
        "flows/sandbox.yaml",
        LOOP_FLOW
            .replace("@LIMITS@", limits)
            .replace("@FAST@", FAST_TRIGGER),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("sandbox");

    sb.drop_json(
        "inbox/sandbox",
        "spin.json",
        &json!({ "id": "spin", "loop": true }),
    );
    let dropped = Instant::now();
    for i in 0..5 {
        sb.drop_json(
            "inbox/sandbox",
            &format!("ok-{i}.json"),
            &json!({ "id": format!("ok-{i}"), "loop": false }),
        );
    }

    sluice.expect_within(secs(10), "spin.json.error.json in .error/", || {
        sb.exists("inbox/sandbox/.error/spin.json.error.json")
    });
    let took = dropped.elapsed();
    eprintln!("the looping message failed {took:?} after it was dropped");
    assert!(
        took < secs(5),
        "the looping message took {took:?} to fail (limit: a few seconds)"
    );
    assert!(
        sb.exists("inbox/sandbox/.error/spin.json"),
        "the file itself is in .error/"
    );

    let side: Value = sb.read_json("inbox/sandbox/.error/spin.json.error.json");
    assert_eq!(side["kind"], "script", "{side:#}");
    assert_eq!(side["flow"], "sandbox", "{side:#}");
    assert!(
        side["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{side:#}"
    );

    sluice.expect_within(secs(15), "the 5 good files are delivered", || {
        sb.count("outbox/sandbox") >= 5
    });
    for i in 0..5 {
        let out = sb.read_json(&format!("outbox/sandbox/ok-{i}.json"));
        assert_eq!(
            out,
            json!({ "id": format!("ok-{i}"), "loop": false, "checked": true })
        );
    }
    sluice.expect_within(secs(10), "the 5 good files are in .done/", || {
        sb.count("inbox/sandbox/.done") == 5
    });
    assert_eq!(
        sb.count("outbox/sandbox"),
        5,
        "nothing delivered for the looping message"
    );
    assert_eq!(
        sb.names("inbox/sandbox/.error"),
        BTreeSet::from(["spin.json".to_owned(), "spin.json.error.json".to_owned()]),
        "only the looping file failed"
    );
    assert_eq!(sb.count("inbox/sandbox/.inflight"), 0);
    sluice.assert_running();
}

/// The brief's scenario: a flow-level deadline of 300 ms (the operation limit may stop the loop
/// first; either way it is a `script` error).
#[test]
fn endless_loop_fails_with_script_error_and_others_pass() {
    run_loop_scenario("deadline: 300ms");
}

/// With an operation budget far beyond what 300 ms can use, only the wall-clock deadline can stop
/// the loop in time.
#[test]
fn wall_clock_deadline_stops_an_endless_loop() {
    run_loop_scenario("deadline: 300ms, max_operations: 100000000000");
}

/// Default limits (1 s deadline, 1,000,000 operations): still a `script` error.
#[test]
fn default_limits_stop_an_endless_loop() {
    let sb = Sandbox::new();
    let flow = LOOP_FLOW
        .replace("script_limits: { @LIMITS@ }\n", "")
        .replace("@FAST@", FAST_TRIGGER);
    sb.write("flows/sandbox.yaml", flow);
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("sandbox");

    sb.drop_json(
        "inbox/sandbox",
        "spin.json",
        &json!({ "id": "spin", "loop": true }),
    );
    sluice.expect_within(secs(10), "spin.json.error.json in .error/", || {
        sb.exists("inbox/sandbox/.error/spin.json.error.json")
    });
    let side: Value = sb.read_json("inbox/sandbox/.error/spin.json.error.json");
    assert_eq!(side["kind"], "script", "{side:#}");

    sb.drop_json("inbox/sandbox", "after.json", &json!({ "id": "after" }));
    let out = sluice.wait_json(&sb, "outbox/sandbox/after.json", secs(15));
    assert_eq!(out, json!({ "id": "after", "checked": true }));
    sluice.assert_running();
}
