//! Scripts cannot freeze the runtime (issue 9, items 14, 16 and 23): a script runs off the
//! threads that serve I/O and the other flows, `sleep` is gone, absurd limits and flow sizes
//! are refused at load, and a trailing method call no longer replaces the payload.

use crate::support::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How many scripts to keep busy at once: more than the runtime has worker threads (one per
/// core), so that on a runtime that runs scripts on its workers every worker is taken.
fn busy_count() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) + 2
}

const ECHO_FLOW: &str = r#"name: echo
trigger:
  http: { path: /echo, method: POST }
steps:
  - set:
      echoed: "`true`"
"#;

/// The slowest of `rounds` requests to /healthz and to the `echo` flow, with the answers
/// checked.
fn slowest_answer(addr: SocketAddr, admin: SocketAddr, rounds: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..rounds {
        let started = Instant::now();
        let health = http_get(admin, "/healthz");
        assert_eq!(health.status, 200, "{health}");
        let r = post_json(addr, "/echo", &[], &json!({ "i": i }));
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.json(), json!({ "i": i, "echoed": true }), "{r}");
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

const SLEEPY_FLOW: &str = r#"name: sleepy
concurrency: @N@
trigger:
  http: { path: /sleepy, method: POST }
script_limits: { deadline: 3s }
steps:
  - script: |
      sleep(10);
      payload
"#;

/// `sleep(10)` fails its own message with a `script` error well within the 3 s deadline,
/// and while several such requests are under way /healthz and another flow answer at once.
#[test]
fn sleep_fails_its_message_and_the_runtime_keeps_answering() {
    let sb = Sandbox::new();
    let n = busy_count();
    sb.write(
        "flows/sleepy.yaml",
        SLEEPY_FLOW.replace("@N@", &n.to_string()),
    );
    sb.write("flows/echo.yaml", ECHO_FLOW);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("sleepy");
    sluice.wait_ready("echo");
    sluice.wait_listener(ports);

    let started = Instant::now();
    let sleepers: Vec<_> = (0..n)
        .map(|i| {
            let addr = ports.listen;
            std::thread::spawn(move || {
                let sent = Instant::now();
                let r = post_json(addr, "/sleepy", &[], &json!({ "i": i }));
                (r, sent.elapsed())
            })
        })
        .collect();
    // Measure for at least a second and for as long as any sleeper is outstanding: on a
    // runtime whose workers sleep, the answers wait for them.
    let mut slowest = Duration::ZERO;
    while started.elapsed() < secs(1) || !sleepers.iter().all(|s| s.is_finished()) {
        slowest = slowest.max(slowest_answer(ports.listen, ports.admin, 1));
        if started.elapsed() > secs(30) {
            break;
        }
    }
    eprintln!("slowest /healthz + /echo round while {n} scripts call sleep(10): {slowest:?}");
    assert!(
        slowest < secs(1),
        "/healthz and another flow took {slowest:?} while scripts called sleep (bound: 1 s)\n{}",
        sluice.log_tail(30)
    );

    for sleeper in sleepers {
        let (r, took) = sleeper.join().expect("the request thread");
        assert_eq!(r.status, 500, "{r}");
        let body = r.json();
        assert_eq!(body["error"]["kind"], "script", "{r}");
        assert!(
            took < secs(3),
            "a sleeping script failed after {took:?}, past its 3 s deadline"
        );
    }
    // The answer keeps details to itself; the log says why.
    assert!(
        sluice.log().contains("`sleep` is not available"),
        "{}",
        sluice.log_tail(30)
    );
    sluice.assert_running();
}

const BUSY_FLOW: &str = r#"name: busy
concurrency: @N@
trigger:
  file:
    path: inbox/busy
    glob: "*.json"
    @FAST@
script_limits: { deadline: 2s, max_operations: 1000000000000 }
steps:
  - script: |
      let x = 0;
      loop { x += 1; }
  - to: out
sinks:
  out:
    file: { path: outbox/busy, name: "{{id}}.json" }
"#;

/// More CPU-bound scripts than there are cores, each running to its 2 s deadline, do not
/// delay /healthz or another flow by more than a bound; every one fails with `script`.
#[test]
fn busy_scripts_of_one_flow_do_not_delay_another_flow() {
    let sb = Sandbox::new();
    let n = busy_count();
    sb.write(
        "flows/busy.yaml",
        BUSY_FLOW
            .replace("@N@", &n.to_string())
            .replace("@FAST@", FAST_TRIGGER),
    );
    sb.write("flows/echo.yaml", ECHO_FLOW);
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("busy");
    sluice.wait_ready("echo");
    sluice.wait_listener(ports);

    for i in 0..n {
        sb.drop_json("inbox/busy", &format!("b-{i}.json"), &json!({ "id": i }));
    }
    // A file flow whose steps are local runs each file's message on the drain thread that
    // claimed it, one drain per core (bench/README.md): the files are claimed as drains
    // come free, so the first claim starts the measurement.
    sluice.expect_within(secs(10), "the first busy files are claimed", || {
        sb.count("inbox/busy/.inflight") > 0
    });
    // The scripts spin for 2 s each, one per core at most: the first 1.5 s after the claim
    // are busy throughout.
    let claimed = Instant::now();
    let mut slowest = Duration::ZERO;
    while claimed.elapsed() < millis(1500) {
        slowest = slowest.max(slowest_answer(ports.listen, ports.admin, 1));
    }
    let measured_for = claimed.elapsed();
    eprintln!(
        "slowest /healthz + /echo round while {n} scripts spin: {slowest:?} (over {measured_for:?})"
    );
    assert!(
        slowest < millis(750),
        "another flow took {slowest:?} while the busy flow's scripts ran (bound: 750 ms)\n{}",
        sluice.log_tail(30)
    );
    assert!(
        sb.count("inbox/busy/.inflight") > 0,
        "the busy flow was still busy after the measurement"
    );

    sluice.expect_within(secs(60), "every busy file fails", || {
        (0..n).all(|i| sb.exists(&format!("inbox/busy/.error/b-{i}.json.error.json")))
    });
    for i in 0..n {
        let side: Value = sb.read_json(&format!("inbox/busy/.error/b-{i}.json.error.json"));
        assert_eq!(side["kind"], "script", "{side:#}");
        assert!(
            side["message"]
                .as_str()
                .is_some_and(|m| m.contains("deadline")),
            "{side:#}"
        );
    }
    assert_eq!(sb.count("outbox/busy"), 0);
    sluice.assert_running();
}

const CAPPED_FLOW: &str = r#"name: capped
concurrency: 4
trigger:
  file:
    path: inbox/capped
    glob: "*.json"
    @FAST@
script_limits: { deadline: 1s, max_operations: 1000000000000, concurrency: 1 }
steps:
  - script: |
      loop { }
"#;

/// `script_limits.concurrency: 1`: three spinning scripts of a flow with `concurrency: 4` run
/// one after the other, so the third fails about 3 s after the files were claimed.
#[test]
fn script_concurrency_caps_the_runs_of_a_flow() {
    let sb = Sandbox::new();
    sb.write(
        "flows/capped.yaml",
        CAPPED_FLOW.replace("@FAST@", FAST_TRIGGER),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("capped");
    for i in 0..3 {
        sb.drop_json("inbox/capped", &format!("c-{i}.json"), &json!({ "id": i }));
    }
    // Claimed as the drains (one per core) come free: the first claim starts the clock.
    sluice.expect_within(secs(10), "the first file is claimed", || {
        sb.count("inbox/capped/.inflight") > 0
    });
    let claimed = Instant::now();
    sluice.expect_within(secs(5), "the first run fails", || {
        sb.count("inbox/capped/.error") >= 2
    });
    let first = claimed.elapsed();
    sluice.expect_within(secs(15), "all three fail", || {
        sb.count("inbox/capped/.error") == 6
    });
    let last = claimed.elapsed();
    eprintln!("first failure after {first:?}, the third after {last:?}");
    assert!(
        last >= millis(2500),
        "three 1 s scripts under `concurrency: 1` all failed within {last:?}: they ran at once"
    );
    assert!(
        last - first >= millis(1700),
        "the runs overlapped: {first:?} to {last:?}"
    );
}

const LIMITS_FLOW: &str = r#"name: limits
trigger:
  file: { path: inbox/limits }
script_limits: { deadline: @DEADLINE@, max_operations: @OPS@, concurrency: @CONC@ }
steps:
  - script: |
      loop { }
tests:
  - name: the loop is stopped
    input: { id: 1 }
    expect: { error: script }
"#;

fn limits_flow(deadline: &str, ops: &str, concurrency: &str) -> String {
    LIMITS_FLOW
        .replace("@DEADLINE@", deadline)
        .replace("@OPS@", ops)
        .replace("@CONC@", concurrency)
}

/// `max_operations: 0` (Rhai's "no limit"), a zero deadline and a zero concurrency are
/// refused by `sluice check` and `sluice test` (which no longer hangs), with the position of
/// the value and the accepted range.
#[test]
fn absurd_script_limits_are_refused_at_load() {
    for (text, needle, range) in [
        (
            limits_flow("1s", "0", "1"),
            "max_operations: 0",
            "outside the accepted range 1 to 1000000000000",
        ),
        (
            limits_flow("0s", "1000", "1"),
            "deadline: 0s",
            "outside the accepted range 1ms to 1m",
        ),
        (
            limits_flow("1s", "1000", "0"),
            "concurrency: 0",
            "outside the accepted range 1 to 1024",
        ),
    ] {
        let sb = Sandbox::new();
        sb.write("flows/limits.yaml", &text);
        let line = line_of(&text, needle);
        let column = col_of(&text, needle) + needle.find(':').unwrap() as u32 + 2;
        let at = format!("flows/limits.yaml:{line}:{column}");
        for command in ["check", "test"] {
            let started = Instant::now();
            let out = sb.cli(&[command], None);
            assert_eq!(out.code, Some(1), "{command} with {needle}:\n{}", out.all());
            assert!(out.stderr.contains(range), "{needle}:\n{}", out.all());
            assert!(
                out.stderr.contains(&at),
                "{needle}: expected {at}\n{}",
                out.all()
            );
            assert!(
                started.elapsed() < secs(20),
                "`sluice {command}` took {:?}",
                started.elapsed()
            );
        }
    }
    // The boundaries themselves are accepted.
    let sb = Sandbox::new();
    sb.write(
        "flows/limits.yaml",
        limits_flow("1ms", "1000000000000", "1024"),
    );
    let out = sb.cli(&["test"], None);
    assert_eq!(out.code, Some(0), "{}", out.all());
}

const REMOVE_FLOW: &str = r#"name: remove
trigger:
  file:
    path: inbox/remove
    glob: "*.json"
    @FAST@
steps:
  - script: |
      payload.seen = true;
      payload.remove("x");
  - to: out
sinks:
  out:
    file: { path: outbox/remove, name: "{{id}}.json" }
"#;

/// A script ending in `payload.remove("x");` keeps the payload (minus `x`) instead of
/// replacing it with the removed value, and `sluice check` warns about the ignored result
/// at the position of the call.
#[test]
fn trailing_method_call_keeps_the_payload_and_check_warns() {
    let sb = Sandbox::new();
    let text = REMOVE_FLOW.replace("@FAST@", FAST_TRIGGER);
    sb.write("flows/remove.yaml", &text);

    let out = sb.cli(&["check"], None);
    assert_eq!(
        out.code,
        Some(0),
        "a warning does not fail the check:\n{}",
        out.all()
    );
    let at = format!(
        "flows/remove.yaml:{}:{}",
        line_of(&text, "payload.remove"),
        col_of(&text, "payload.remove")
    );
    assert!(
        out.stderr
            .contains("warning: the script ends with a call of the method `remove`"),
        "{}",
        out.all()
    );
    assert!(out.stderr.contains(&at), "expected {at}:\n{}", out.all());
    assert!(out.stderr.contains("return"), "{}", out.all());

    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("remove");
    sb.drop_json(
        "inbox/remove",
        "r-1.json",
        &json!({ "id": "r-1", "x": 42, "keep": [1, 2] }),
    );
    let out = sluice.wait_json(&sb, "outbox/remove/r-1.json", secs(10));
    assert_eq!(out, json!({ "id": "r-1", "keep": [1, 2], "seen": true }));

    // A script that says what it returns is not warned about.
    sb.write(
        "flows/remove.yaml",
        text.replace(
            "payload.remove(\"x\");",
            "payload.remove(\"x\");\n      payload",
        ),
    );
    let out = sb.cli(&["check"], None);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!out.stderr.contains("warning"), "{}", out.all());
}

/// A flow of `top` top-level `set` steps, the last of them a `route` whose arm nests
/// `nested` more.
fn many_steps_flow(top: usize, nested: usize) -> String {
    let mut text = String::from("name: many\ntrigger:\n  file: { path: inbox/many }\nsteps:\n");
    for i in 0..top {
        text.push_str(&format!("  - set: {{ s{i}: \"`{i}`\" }}\n"));
    }
    if nested > 0 {
        text.push_str("  - route:\n      - when: \"`true`\"\n        steps:\n");
        for i in 0..nested {
            text.push_str(&format!("          - set: {{ n{i}: \"`{i}`\" }}\n"));
        }
    }
    text
}

/// `levels` nested `try` steps (each with its `catch`) around one `set`.
fn nested_try(levels: usize, indent: &str) -> String {
    if levels == 0 {
        return format!("{indent}- set: {{ a: \"`1`\" }}\n");
    }
    format!(
        "{indent}- try:\n{}{indent}- catch:\n{indent}    - set: {{ c: \"`1`\" }}\n",
        nested_try(levels - 1, &format!("{indent}    "))
    )
}

/// A flow of 10,000 steps is refused at load with the limit (1000, nested steps counted),
/// pointing at the first step past it; so is a flow whose nested steps take it past the
/// limit, and one nested deeper than 16 levels. A flow at the limit loads.
#[test]
fn oversized_flows_are_refused_at_load_with_the_limit() {
    let sb = Sandbox::new();
    let text = many_steps_flow(10_000, 0);
    sb.write("flows/many.yaml", &text);
    let started = Instant::now();
    let out = sb.cli(&["check"], None);
    eprintln!(
        "`sluice check` of 10,000 steps took {:?}",
        started.elapsed()
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr
            .contains("the flow has 10000 steps (nested steps in `route`, `try` and `catch` counted); the limit is 1000"),
        "{}",
        out.all()
    );
    let first_past = line_of(&text, "s1000:");
    assert!(
        out.stderr
            .contains(&format!("flows/many.yaml:{first_past}:")),
        "expected the position of step 1001 (line {first_past}):\n{}",
        out.all()
    );

    // 600 + 1 route + 500 nested = 1101 steps.
    sb.write("flows/many.yaml", many_steps_flow(600, 500));
    let out = sb.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("the flow has 1101 steps"),
        "{}",
        out.all()
    );

    // Exactly 1000 (999 + the route + 0 nested would be 1000 too; use nesting).
    sb.write("flows/many.yaml", many_steps_flow(499, 500));
    let out = sb.cli(&["check"], None);
    assert_eq!(out.code, Some(0), "{}", out.all());

    // 17 levels of nested `try` (routes that deep are refused by the YAML depth budget).
    let deep = format!(
        "name: many\ntrigger:\n  file: {{ path: inbox/many }}\nsteps:\n{}",
        nested_try(17, "  ")
    );
    sb.write("flows/many.yaml", &deep);
    let out = sb.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("steps nest more than 16 levels deep"),
        "{}",
        out.all()
    );
}
