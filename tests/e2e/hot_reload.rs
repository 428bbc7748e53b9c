//! Hot reload: a saved flow, script or schema replaces the running version only when it builds
//! completely; otherwise the old version keeps running and the log says where the problem is.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

use crate::support::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// (a) reload while files stream in
// ---------------------------------------------------------------------------------------------

const STREAM_FLOW: &str = r#"name: stream
trigger:
  file:
    path: inbox/stream
    glob: "*.json"
    @FAST@
steps:
  - set:
      version: "'@VERSION@'"
  - to: out
sinks:
  out:
    file: { path: outbox/stream, name: "{{id}}.json" }
"#;

fn stream_flow(version: &str) -> String {
    STREAM_FLOW
        .replace("@FAST@", FAST_TRIGGER)
        .replace("@VERSION@", version)
}

#[test]
fn reload_while_files_stream_in_loses_nothing() {
    const N: usize = 300;
    let sb = Sandbox::new();
    sb.write("flows/stream.yaml", stream_flow("v1"));
    std::fs::create_dir_all(sb.path("inbox/stream")).unwrap();
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("stream");

    let drops: Mutex<Vec<(String, Instant)>> = Mutex::new(Vec::new());
    let mut reloaded_at = None;
    thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..N {
                let id = format!("s-{i:03}");
                sb.drop_json("inbox/stream", &format!("{id}.json"), &json!({ "id": id }));
                drops.lock().unwrap().push((id, Instant::now()));
                thread::sleep(millis(10));
            }
        });
        thread::sleep(millis(1000));
        let mark = sluice.mark();
        sb.write("flows/stream.yaml", stream_flow("v2"));
        sluice.wait_for_line_since(mark, "`flow reloaded` for flow=stream", secs(20), |l| {
            l.contains("flow reloaded") && has_flow(l, "stream")
        });
        reloaded_at = Some(Instant::now());
    });
    let reloaded_at = reloaded_at.unwrap();

    sluice.expect_within(secs(60), &format!("{N} outputs"), || {
        sb.count("outbox/stream") >= N
    });
    let mut versions: BTreeMap<String, String> = BTreeMap::new();
    for (id, _) in drops.lock().unwrap().iter() {
        let out = sb.read_json(&format!("outbox/stream/{id}.json"));
        let v = out["version"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: no version: {out}"))
            .to_owned();
        assert!(v == "v1" || v == "v2", "{id}: version {v}");
        versions.insert(id.clone(), v);
    }
    let v1 = versions.values().filter(|v| *v == "v1").count();
    let v2 = versions.values().filter(|v| *v == "v2").count();
    eprintln!("v1: {v1}, v2: {v2}");
    assert!(v1 > 0, "some files were processed by v1");
    assert!(v2 > 0, "some files were processed by v2");
    // A file dropped after the reload was logged can only meet the new version.
    for (id, at) in drops.lock().unwrap().iter() {
        if *at > reloaded_at {
            assert_eq!(
                versions[id], "v2",
                "{id} was dropped after `flow reloaded` but got v1"
            );
        }
    }
    assert_eq!(sb.count("outbox/stream"), N, "exactly one output per file");
    assert_eq!(
        sb.count("inbox/stream/.error"),
        0,
        "nothing in .error/:\n{}",
        sluice.log_tail(40)
    );
    assert_eq!(sb.count("inbox/stream/.rejected"), 0);
    sluice.expect_within(secs(10), "all files in .done/", || {
        sb.count("inbox/stream/.done") == N
    });
}

// ---------------------------------------------------------------------------------------------
// (b) broken saves keep the old version
// ---------------------------------------------------------------------------------------------

const HR_FLOW: &str = r#"name: hr
trigger:
  file:
    path: inbox/hr
    glob: "*.json"
    @FAST@
steps:
  - set:
      stage: @STAGE@
@EXTRA@  - to: out
sinks:
  out:
    file: { path: outbox/hr, name: "{{id}}.json" }
tests:
  - name: stage is set
    input: { id: t-1 }
    expect: { sink: out, payload: { id: t-1, stage: @EXPECT@ } }
"#;

fn hr_flow(stage_expr: &str, extra_steps: &str, expect_stage: &str) -> String {
    HR_FLOW
        .replace("@FAST@", FAST_TRIGGER)
        .replace("@STAGE@", stage_expr)
        .replace("@EXTRA@", extra_steps)
        .replace("@EXPECT@", expect_stage)
}

/// Saves `text` as flows/hr.yaml and waits for the `reload failed` line that names the file with
/// a position; returns (line, col).
fn expect_reload_failure(sluice: &mut Sluice, sb: &Sandbox, what: &str, text: &str) -> (u32, u32) {
    let mark = sluice.mark();
    sb.write("flows/hr.yaml", text);
    let line = sluice.wait_for_line_since(
        mark,
        &format!("`reload failed` with flows/hr.yaml:<line>:<col> after saving {what}"),
        secs(20),
        |l| l.contains("reload failed") && !positions(l, "flows/hr.yaml").is_empty(),
    );
    eprintln!("{what}: {line}");
    let since = sluice.log_since(mark);
    assert!(
        !since
            .lines()
            .any(|l| l.contains("flow reloaded") && has_flow(l, "hr")),
        "{what} must not be reloaded:\n{}",
        tail(&since, 20)
    );
    positions(&line, "flows/hr.yaml")[0]
}

/// Drops `<id>.json` and returns the stage its output got.
fn process(sluice: &mut Sluice, sb: &Sandbox, id: &str) -> Value {
    sb.drop_json("inbox/hr", &format!("{id}.json"), &json!({ "id": id }));
    let out = sluice.wait_json(sb, &format!("outbox/hr/{id}.json"), secs(15));
    out["stage"].clone()
}

#[test]
fn broken_saves_keep_the_old_version_until_the_fix() {
    let sb = Sandbox::new();
    sb.write("flows/hr.yaml", hr_flow("\"'good-1'\"", "", "good-1"));
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("hr");
    assert_eq!(process(&mut sluice, &sb, "first"), "good-1");

    // 1. YAML syntax: a second `: ` in a plain scalar.
    let text = hr_flow("a: b", "", "good-1");
    let (line, _col) = expect_reload_failure(&mut sluice, &sb, "bad YAML", &text);
    assert_eq!(
        line,
        line_of(&text, "stage: a: b"),
        "bad YAML: line of the problem"
    );
    assert_eq!(
        process(&mut sluice, &sb, "after-yaml"),
        "good-1",
        "old version after bad YAML"
    );

    // 2. JMESPath: an expression cut short.
    let expr = "'good-1' ||";
    let text = hr_flow(&format!("\"{expr}\""), "", "good-1");
    let (line, col) = expect_reload_failure(&mut sluice, &sb, "bad JMESPath", &text);
    assert_eq!(
        line,
        line_of(&text, expr),
        "bad JMESPath: line of the expression"
    );
    let start = col_of(&text, expr);
    assert!(
        (start..=start + expr.len() as u32).contains(&col),
        "bad JMESPath: column {col} points into the expression (columns {start}..={})",
        start + expr.len() as u32
    );
    assert_eq!(
        process(&mut sluice, &sb, "after-jmespath"),
        "good-1",
        "old version after bad JMESPath"
    );

    // 3. Rhai syntax, on the second line of an inline script.
    let text = hr_flow(
        "\"'good-1'\"",
        "  - script: |\n      payload.extra = 1;\n      let x = ;\n      payload\n",
        "good-1",
    );
    let (line, _col) = expect_reload_failure(&mut sluice, &sb, "bad Rhai", &text);
    assert_eq!(
        line,
        line_of(&text, "let x = ;"),
        "bad Rhai: line of the syntax error"
    );
    assert_eq!(
        process(&mut sluice, &sb, "after-rhai"),
        "good-1",
        "old version after bad Rhai"
    );

    // 4. Everything compiles, but the flow's own test fails.
    let text = hr_flow("\"'broken'\"", "", "good-1");
    let (line, _col) = expect_reload_failure(&mut sluice, &sb, "a failing test", &text);
    let (first, last) = (
        line_of(&text, "- name: stage is set"),
        line_of(&text, "expect: { sink: out"),
    );
    assert!(
        (first..=last).contains(&line),
        "failing test: line {line} points at the test case (lines {first}..={last})"
    );
    assert_eq!(
        process(&mut sluice, &sb, "after-test"),
        "good-1",
        "old version after a failing test"
    );

    // The fix.
    let mark = sluice.mark();
    sb.write("flows/hr.yaml", hr_flow("\"'good-2'\"", "", "good-2"));
    sluice.wait_for_line_since(mark, "`flow reloaded` for flow=hr", secs(20), |l| {
        l.contains("flow reloaded") && has_flow(l, "hr")
    });
    assert_eq!(
        process(&mut sluice, &sb, "after-fix"),
        "good-2",
        "new version after the fix"
    );
    assert_eq!(sb.count("inbox/hr/.error"), 0, "nothing in .error/");
    sluice.assert_running();
}

// ---------------------------------------------------------------------------------------------
// (c) scripts and schemas are watched too
// ---------------------------------------------------------------------------------------------

const SCRIPT_FLOW: &str = r#"name: sc
trigger:
  file:
    path: inbox/sc
    glob: "*.json"
    @FAST@
steps:
  - script: scripts/tag.rhai
  - to: out
sinks:
  out:
    file: { path: outbox/sc, name: "{{id}}.json" }
"#;

const OTHER_FLOW: &str = r#"name: other
trigger:
  file:
    path: inbox/other
    glob: "*.json"
    @FAST@
steps:
  - to: out
sinks:
  out:
    file: { path: outbox/other, name: "{{id}}.json" }
"#;

#[test]
fn changed_script_reloads_the_flow_that_uses_it() {
    let sb = Sandbox::new();
    sb.write("scripts/tag.rhai", "payload.tag = \"one\";\npayload\n");
    sb.write("flows/sc.yaml", SCRIPT_FLOW.replace("@FAST@", FAST_TRIGGER));
    sb.write(
        "flows/other.yaml",
        OTHER_FLOW.replace("@FAST@", FAST_TRIGGER),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("sc");
    sluice.wait_ready("other");

    sb.drop_json("inbox/sc", "s-1.json", &json!({ "id": "s-1" }));
    assert_eq!(
        sluice.wait_json(&sb, "outbox/sc/s-1.json", secs(15))["tag"],
        "one"
    );

    let mark = sluice.mark();
    sb.write("scripts/tag.rhai", "payload.tag = \"two\";\npayload\n");
    sluice.wait_for_line_since(mark, "`flow reloaded` for flow=sc", secs(20), |l| {
        l.contains("flow reloaded") && has_flow(l, "sc")
    });
    sb.drop_json("inbox/sc", "s-2.json", &json!({ "id": "s-2" }));
    assert_eq!(
        sluice.wait_json(&sb, "outbox/sc/s-2.json", secs(15))["tag"],
        "two"
    );

    // A broken script: reload failed, with the script's position; the flow keeps "two".
    let mark = sluice.mark();
    sb.write(
        "scripts/tag.rhai",
        "payload.tag = \"three\";\nlet x = ;\npayload\n",
    );
    let line = sluice.wait_for_line_since(
        mark,
        "`reload failed` naming scripts/tag.rhai:<line>:<col>",
        secs(20),
        |l| l.contains("reload failed") && !positions(l, "scripts/tag.rhai").is_empty(),
    );
    assert_eq!(
        positions(&line, "scripts/tag.rhai")[0].0,
        2,
        "line of the syntax error: {line}"
    );
    sb.drop_json("inbox/sc", "s-3.json", &json!({ "id": "s-3" }));
    assert_eq!(
        sluice.wait_json(&sb, "outbox/sc/s-3.json", secs(15))["tag"],
        "two",
        "old script still runs"
    );

    // The flow that does not use the script kept running all along.
    sb.drop_json("inbox/other", "o-1.json", &json!({ "id": "o-1" }));
    assert_eq!(
        sluice.wait_json(&sb, "outbox/other/o-1.json", secs(15)),
        json!({ "id": "o-1" })
    );
    sluice.assert_running();
}

const SCHEMA_FLOW: &str = r#"name: sch
trigger:
  file:
    path: inbox/sch
    glob: "*.json"
    @FAST@
contract:
  input: thing.v1
steps:
  - to: out
sinks:
  out:
    file: { path: outbox/sch, name: "{{id}}.json" }
"#;

#[test]
fn changed_schema_reloads_the_flow_that_uses_it() {
    let sb = Sandbox::new();
    let schema = |max: u32| {
        json!({
            "type": "object",
            "required": ["id", "qty"],
            "properties": { "id": { "type": "string" }, "qty": { "type": "integer", "maximum": max } }
        })
        .to_string()
    };
    sb.write("schemas/thing.v1.json", schema(10));
    sb.write(
        "flows/sch.yaml",
        SCHEMA_FLOW.replace("@FAST@", FAST_TRIGGER),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("sch");

    sb.drop_json("inbox/sch", "a.json", &json!({ "id": "a", "qty": 5 }));
    sluice.wait_json(&sb, "outbox/sch/a.json", secs(15));

    let mark = sluice.mark();
    sb.write("schemas/thing.v1.json", schema(3));
    sluice.wait_for_line_since(mark, "`flow reloaded` for flow=sch", secs(20), |l| {
        l.contains("flow reloaded") && has_flow(l, "sch")
    });
    sb.drop_json("inbox/sch", "b.json", &json!({ "id": "b", "qty": 5 }));
    sluice.expect_within(secs(15), "b.json rejected by the new schema", || {
        sb.exists("inbox/sch/.rejected/b.json.error.json")
    });
    let side = sb.read_json("inbox/sch/.rejected/b.json.error.json");
    assert_eq!(side["kind"], "contract", "{side:#}");
    assert_eq!(side["violations"][0]["pointer"], "/qty", "{side:#}");
    assert!(!sb.exists("outbox/sch/b.json"));
}

// ---------------------------------------------------------------------------------------------
// (d) flows come and go
// ---------------------------------------------------------------------------------------------

fn simple_flow(name: &str, inbox: &str) -> String {
    OTHER_FLOW
        .replace("name: other", &format!("name: {name}"))
        .replace("inbox/other", inbox)
        .replace("outbox/other", &format!("outbox/{name}"))
        .replace("@FAST@", FAST_TRIGGER)
}

#[test]
fn deleted_added_and_duplicate_flow_files() {
    let sb = Sandbox::new();
    sb.write("flows/gone.yaml", simple_flow("gone", "inbox/gone"));
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("gone");
    sb.drop_json("inbox/gone", "g-1.json", &json!({ "id": "g-1" }));
    sluice.wait_json(&sb, "outbox/gone/g-1.json", secs(15));

    // Delete: the flow stops and takes no more files.
    let mark = sluice.mark();
    sb.remove("flows/gone.yaml");
    sluice.wait_for_line_since(mark, "`flow stopped` for flow=gone", secs(20), |l| {
        l.contains("flow stopped") && has_flow(l, "gone")
    });
    sb.drop_json("inbox/gone", "g-2.json", &json!({ "id": "g-2" }));
    let g2_dropped = Instant::now();

    // Add: a new file starts its flow.
    let mark = sluice.mark();
    sb.write("flows/fresh.yaml", simple_flow("fresh", "inbox/fresh"));
    sluice.wait_for_line_since(mark, "`flow ready` for flow=fresh", secs(20), |l| {
        l.contains("flow ready") && has_flow(l, "fresh")
    });
    sb.drop_json("inbox/fresh", "f-1.json", &json!({ "id": "f-1" }));
    sluice.wait_json(&sb, "outbox/fresh/f-1.json", secs(15));

    // A running flow takes a file within a few hundred ms with these settings; give it 2 s.
    if let Some(rest) = secs(2).checked_sub(g2_dropped.elapsed()) {
        thread::sleep(rest);
    }
    assert!(
        sb.exists("inbox/gone/g-2.json"),
        "a stopped flow leaves new files alone"
    );
    assert!(
        !sb.exists("outbox/gone/g-2.json"),
        "a stopped flow delivers nothing"
    );

    // Duplicate name: rejected, naming both files; the running flow is untouched.
    let mark = sluice.mark();
    sb.write("flows/fresh-copy.yaml", simple_flow("fresh", "inbox/copy"));
    sluice.wait_for_line_since(
        mark,
        "a `reload failed`/error line about flows/fresh-copy.yaml",
        secs(20),
        |l| (l.contains("reload failed") || l.contains("ERROR")) && l.contains("fresh-copy.yaml"),
    );
    let ok = wait_until(secs(2), || {
        let text = sluice.log_since(mark);
        text.contains("flows/fresh.yaml") && text.contains("flows/fresh-copy.yaml")
    });
    assert!(
        ok,
        "the error names both files:\n{}",
        sluice.log_since(mark)
    );
    sb.drop_json("inbox/fresh", "f-2.json", &json!({ "id": "f-2" }));
    sluice.wait_json(&sb, "outbox/fresh/f-2.json", secs(15));
    let since = sluice.log_since(mark);
    assert!(
        !since.lines().any(
            |l| (l.contains("flow ready") || l.contains("flow reloaded")) && has_flow(l, "fresh")
        ),
        "the duplicate must not replace or start a flow:\n{}",
        tail(&since, 20)
    );
    sluice.assert_running();
}
