//! `sluice exec --trace`: every step of a dry run with the payload and metadata after it,
//! the route arm taken, `log` lines and the error with the payload at the failing step;
//! metadata from `--meta`, `--meta-file` and `--http-path`; flows given by name; and the
//! trace of a failed `tests:` case.

use crate::support::*;
use serde_json::{Value, json};

/// The entries of a trace, by step label.
fn trace(out: &Value) -> Vec<Value> {
    out["trace"]
        .as_array()
        .unwrap_or_else(|| panic!("a trace in {out:#}"))
        .clone()
}

fn entry<'a>(trace: &'a [Value], step: &str) -> &'a Value {
    trace
        .iter()
        .find(|e| e["step"] == step)
        .unwrap_or_else(|| panic!("no `{step}` in the trace {trace:#?}"))
}

const ORDER_FLOW: &str = r#"name: orders
trigger:
  file: { path: inbox/orders }
steps:
  - name: shape
    transform: "{id: id, priority: priority, lines: lines}"
  - set: { count: "length(lines)" }
  - log: "order {{id}} has {{count}} lines"
  - name: by-priority
    route:
      - when: "priority == 'high'"
        to: express
      - when: "priority == 'low'"
        steps:
          - set: { slow: "`true`" }
      - else: standard
  - try:
      - script: |
          if payload.count > 2 { throw "too many lines"; }
          payload
  - catch:
      - set: { problem: "meta('error.message')" }
sinks:
  express: { file: { path: outbox/express } }
  standard: { file: { path: outbox/standard } }
"#;

#[test]
fn exec_trace_shows_each_step_the_arm_taken_and_the_log_lines() {
    let sb = Sandbox::new();
    sb.write("flows/orders.yaml", ORDER_FLOW);
    sb.write(
        "order.json",
        r#"{"id": "o-1", "priority": "high", "lines": [1, 2, 3], "noise": true}"#,
    );
    let out = sb.cli(
        &["exec", "flows/orders.yaml", "-i", "order.json", "--trace"],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let result = out.stdout_json();
    assert_eq!(result["outcome"], "delivered", "{result:#}");
    let steps = trace(&result);
    let labels: Vec<&str> = steps.iter().map(|e| e["step"].as_str().unwrap()).collect();
    assert_eq!(
        labels,
        vec![
            "input",
            "shape",
            "steps[1] (set)",
            "steps[2] (log)",
            "by-priority",
            "steps[4].try[0] (script)",
            "steps[4].catch[0] (set)",
            "steps[4] (try)",
        ],
        "{result:#}"
    );
    // The input with its metadata; each step with what it changed.
    let input = entry(&steps, "input");
    assert_eq!(input["payload"]["noise"], true);
    assert_eq!(input["meta"]["file.name"], "order.json");
    // Each step shows what it changed (the fields, with their new values), not the whole
    // payload again.
    let shape = entry(&steps, "shape");
    assert_eq!(shape["removed"], json!(["/noise"]), "{shape:#}");
    assert_eq!(shape.get("payload"), None, "{shape:#}");
    assert_eq!(
        entry(&steps, "steps[1] (set)")["changed"],
        json!({"/count": 3})
    );
    // A step that changed nothing shows no payload; the log step shows its line.
    let log = entry(&steps, "steps[2] (log)");
    assert_eq!(log["log"], json!(["order o-1 has 3 lines"]), "{log:#}");
    assert_eq!(log.get("payload"), None, "{log:#}");
    assert_eq!(log.get("changed"), None, "{log:#}");
    let route = entry(&steps, "by-priority");
    assert_eq!(route["matched"], "by-priority.route[0]", "{route:#}");
    assert_eq!(route["to"], json!(["express"]));
    // The failing script: its error and the payload as it was; then the catch and its
    // metadata.
    let failed = entry(&steps, "steps[4].try[0] (script)");
    assert_eq!(failed["error"]["kind"], "script", "{failed:#}");
    assert_eq!(failed["payload"]["count"], 3, "{failed:#}");
    let caught = entry(&steps, "steps[4] (try)");
    assert_eq!(caught["meta"]["error.kind"], "script", "{caught:#}");
    assert!(
        caught["changed"]["/problem"]
            .as_str()
            .is_some_and(|p| p.contains("too many lines")),
        "{caught:#}"
    );

    // The arm with steps of its own: its nested steps are in the trace under it.
    sb.write(
        "low.json",
        r#"{"id": "o-2", "priority": "low", "lines": [1]}"#,
    );
    let out = sb.cli(&["exec", "orders", "-i", "low.json", "--trace"], None);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let result = out.stdout_json();
    let steps = trace(&result);
    assert_eq!(
        entry(&steps, "by-priority")["matched"],
        "by-priority.route[1]"
    );
    assert_eq!(
        entry(&steps, "by-priority.route[1].steps[0] (set)")["changed"],
        json!({"/slow": true})
    );
    assert_eq!(result["outcome"], "completed", "{result:#}");
    // Without --trace there is no trace.
    let out = sb.cli(&["exec", "orders", "-i", "low.json"], None);
    assert_eq!(out.stdout_json().get("trace"), None);
}

#[test]
fn an_error_keeps_the_payload_of_the_failing_step() {
    let sb = Sandbox::new();
    sb.write(
        "flows/fail.yaml",
        r#"trigger:
  file: { path: inbox/fail }
steps:
  - transform: "{id: id, total: `0`}"
  - name: explode
    script: |
      throw "no price for " + payload.id;
"#,
    );
    sb.write("in.json", r#"{"id": "o-9", "extra": 1}"#);
    let out = sb.cli(&["exec", "fail", "-i", "in.json", "--trace"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let result = out.stdout_json();
    assert_eq!(result["outcome"], "error");
    assert_eq!(result["error"]["step"], "explode", "{result:#}");
    assert_eq!(result["error"]["kind"], "script");
    // Never `null`: the payload as the failing step had it.
    assert_eq!(
        result["payload"],
        json!({"id": "o-9", "total": 0}),
        "{result:#}"
    );
    let steps = trace(&result);
    let last = steps.last().unwrap();
    assert_eq!(last["step"], "explode");
    assert!(
        last["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no price for o-9")),
        "{last:#}"
    );
    // Without --trace the payload is there too.
    let out = sb.cli(&["exec", "fail", "-i", "in.json"], None);
    assert_eq!(
        out.stdout_json()["payload"],
        json!({"id": "o-9", "total": 0})
    );
}

#[test]
fn metadata_comes_from_meta_flags_a_meta_file_and_the_http_route() {
    let sb = Sandbox::new();
    sb.write(
        "flows/quotes.yaml",
        r#"name: quote-api
trigger:
  http: { path: "/quotes/{sku}", method: GET }
steps:
  - transform: >-
      {sku: meta('http.path.sku'), currency: meta('http.query.currency'),
       method: meta('http.method'), tenant: meta('tenant'), region: meta('region'),
       topic: meta('mqtt.topic')}
"#,
    );
    sb.write(
        "meta.json",
        r#"{"region": "eu", "tenant": "from-file", "mqtt.topic": "sensors/s-1"}"#,
    );
    sb.write("empty.json", "{}");
    let out = sb.cli(
        &[
            "exec",
            "quote-api",
            "-i",
            "empty.json",
            "--http-path",
            "/quotes/KETTLE-1?currency=EUR",
            "--meta-file",
            "meta.json",
            "--meta",
            "tenant=acme",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(
        out.stdout_json()["payload"],
        json!({"sku": "KETTLE-1", "currency": "EUR", "method": "GET", "tenant": "acme",
               "region": "eu", "topic": "sensors/s-1"}),
        "{}",
        out.all()
    );

    // A path the route does not match, and a malformed --meta, are refused with the fix.
    let out = sb.cli(
        &[
            "exec",
            "quote-api",
            "-i",
            "empty.json",
            "--http-path",
            "/orders/1",
        ],
        None,
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr
            .contains("does not match the flow's route `/quotes/{sku}`"),
        "{}",
        out.all()
    );
    let out = sb.cli(
        &["exec", "quote-api", "-i", "empty.json", "--meta", "novalue"],
        None,
    );
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(out.stderr.contains("is not `key=value`"), "{}", out.all());
    // --http-path on a flow without an http trigger says what to use instead.
    sb.write(
        "flows/files.yaml",
        "trigger:\n  file: { path: inbox/files }\n",
    );
    let out = sb.cli(
        &["exec", "files", "-i", "empty.json", "--http-path", "/x"],
        None,
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("--meta key=value"), "{}", out.all());
}

#[test]
fn exec_and_check_take_a_flow_name_and_resolve_calls_from_the_flows_folder() {
    let sb = Sandbox::new();
    sb.write(
        "flows/price-lookup.yaml",
        r#"name: pricing
trigger:
  channel: { name: pricing }
steps:
  - set: { price: "`9.5`" }
"#,
    );
    sb.write(
        "flows/order-intake.yaml",
        r#"name: intake
trigger:
  file: { path: inbox/intake }
steps:
  - call: pricing
"#,
    );
    sb.write("in.json", r#"{"id": "o-1"}"#);
    // By the name written in the file, and by the file stem.
    for flow in ["intake", "order-intake", "flows/order-intake.yaml"] {
        let out = sb.cli(&["exec", flow, "-i", "in.json"], None);
        assert_eq!(out.code, Some(0), "exec {flow}\n{}", out.all());
        assert_eq!(
            out.stdout_json()["payload"],
            json!({"id": "o-1", "price": 9.5})
        );
    }
    // `check` of the one file resolves the call against the folder, as `exec` does.
    for flow in ["flows/order-intake.yaml", "intake"] {
        let out = sb.cli(&["check", flow], None);
        assert_eq!(out.code, Some(0), "check {flow}\n{}", out.all());
        assert!(!out.stderr.contains("undefined flow"), "{}", out.all());
    }
    // A flow that is nowhere is named, with the flows there.
    let out = sb.cli(&["exec", "intak", "-i", "in.json"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr
            .contains("neither a flow file nor the name of a flow")
            && out.stderr.contains("did you mean `intake`?"),
        "{}",
        out.all()
    );
    // A call of a flow that exists nowhere is still a check error.
    sb.write(
        "flows/lost.yaml",
        "trigger:\n  file: { path: inbox/lost }\nsteps:\n  - call: nowhere\n",
    );
    let out = sb.cli(&["check", "lost"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("`call` of undefined flow `nowhere`"),
        "{}",
        out.all()
    );
}

#[test]
fn a_failed_test_shows_the_trace_of_its_message() {
    let sb = Sandbox::new();
    sb.write(
        "flows/traced.yaml",
        r#"trigger:
  file: { path: inbox/traced }
steps:
  - name: shape
    transform: "{id: id, qty: qty}"
  - log: "qty is {{qty}}"
  - to: out
sinks:
  out: { file: { path: outbox/traced } }
tests:
  - name: keeps the id
    input: { id: t-1, qty: 2, note: drop me }
    expect: { sink: out, payload: { id: t-2 } }
"#,
    );
    let out = sb.cli(&["test", "traced"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let text = &out.stdout;
    assert!(
        text.contains("FAIL traced: keeps the id: /id: expected \"t-2\", got \"t-1\""),
        "{text}"
    );
    let trace_at = text
        .find("trace:")
        .unwrap_or_else(|| panic!("a trace in\n{text}"));
    let trace = &text[trace_at..];
    for line in [
        "input",
        "payload: {\"id\":\"t-1\",\"qty\":2,\"note\":\"drop me\"}",
        "shape",
        "removed: /note",
        "log: qty is 2",
        "steps[2] (to) → to out",
    ] {
        assert!(trace.contains(line), "`{line}` in the trace:\n{text}");
    }
}

#[test]
fn the_readme_trace_of_the_sample_order_is_what_exec_prints() {
    let sb = Sandbox::new();
    for dir in ["flows", "schemas", "scripts", "examples/inputs"] {
        copy_dir(&repo_file(dir), &sb.path(dir));
    }
    let out = sb.cli(
        &[
            "exec",
            "order-intake",
            "--input",
            "examples/inputs/orders/order-1001.json",
            "--trace",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let result = out.stdout_json();
    let steps = trace(&result);
    let labels: Vec<&str> = steps.iter().map(|e| e["step"].as_str().unwrap()).collect();
    assert_eq!(
        labels,
        vec![
            "input",
            "steps[0] (transform)",
            "steps[1] (set)",
            "steps[2] (script)",
            "steps[3] (filter)",
            "steps[4] (route)"
        ]
    );
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let transform = entry(&steps, "steps[0] (transform)");
    assert_eq!(transform["changed"], json!({"/order_id": "o-1001"}));
    assert_eq!(transform["removed"], json!(["/id"]));
    let script = entry(&steps, "steps[2] (script)");
    assert_eq!(
        script["changed"],
        json!({"/lines/0/total": 79.0, "/lines/1/total": 7.25, "/priority": "high", "/total": 86.25})
    );
    let route = entry(&steps, "steps[4] (route)");
    assert_eq!(route["matched"], "steps[4].route[0]");
    assert_eq!(route["to"], json!(["express"]));
    // The README shows these same lines.
    for shown in [
        r#""changed": { "/order_id": "o-1001" },"#,
        r#""removed": [ "/id" ]"#,
        r#""changed": { "/lines/0/total": 79.0, "/lines/1/total": 7.25, "/priority": "high", "/total": 86.25 }"#,
        r#""matched": "steps[4].route[0]","#,
        "sluice exec order-intake --input examples/inputs/orders/order-1001.json --trace",
    ] {
        assert!(readme.contains(shown), "the README shows `{shown}`");
    }
}

#[test]
fn the_steps_after_a_split_are_traced_once_per_child() {
    let sb = Sandbox::new();
    sb.write(
        "flows/lines.yaml",
        r#"trigger:
  file: { path: inbox/lines }
steps:
  - split: lines
  - name: mark
    set: { seen: "`true`" }
  - to: line
sinks:
  line: { file: { path: outbox/lines } }
"#,
    );
    sb.write("in.json", r#"{"lines": [{"sku": "a"}, {"sku": "b"}]}"#);
    let out = sb.cli(&["exec", "lines", "-i", "in.json", "--trace"], None);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let result = out.stdout_json();
    let marks: Vec<(Value, Value)> = trace(&result)
        .iter()
        .filter(|e| e["step"] == "mark")
        .map(|e| (e["child"].clone(), e["meta"].clone()))
        .collect();
    assert_eq!(marks.len(), 2, "{result:#}");
    assert_eq!(marks[0].0, "0");
    assert_eq!(marks[1].0, "1");
    let deliveries: Vec<&Value> = result["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["payload"]["sku"])
        .collect();
    assert_eq!(deliveries, vec!["a", "b"], "{result:#}");
}
