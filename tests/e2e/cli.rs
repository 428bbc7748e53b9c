//! The one-shot commands: `check`, `test`, `exec`, `schema`, and usage errors.

use crate::support::*;
use serde_json::Value;

const ORDER_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["id", "priority"],
  "properties": {
    "id": { "type": "string" },
    "priority": { "enum": ["high", "low"] }
  }
}
"#;

/// A valid flow with a route; every mistake below is one edit of it.
const VALID: &str = r#"name: @NAME@
trigger:
  file:
    path: inbox/@NAME@
    glob: "*.json"
contract:
  input: order.v1
steps:
  - transform: "{order_id: id, priority: priority}"
  - route:
      - when: "priority == 'high'"
        to: express
      - else: standard
sinks:
  express:
    file: { path: outbox/express, name: "{{order_id}}.json" }
  standard:
    file: { path: outbox/standard, name: "{{order_id}}.json" }
tests:
  - name: high goes express
    input: { id: o-1, priority: high }
    expect: { sink: express, payload: { order_id: o-1, priority: high } }
  - name: low goes standard
    input: { id: o-2, priority: low }
    expect: { sink: standard, payload: { order_id: o-2 } }
"#;

fn valid(name: &str) -> String {
    VALID.replace("@NAME@", name)
}

/// `valid(name)` with `from` replaced by `to` (which must occur).
fn edit(name: &str, from: &str, to: &str) -> String {
    let text = valid(name);
    assert!(text.contains(from), "{from:?} not in the template");
    text.replacen(from, to, 1)
}

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("schemas/order.v1.json", ORDER_SCHEMA);
    sb
}

/// The first `error…` headline of a diagnostic output.
fn headline(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.trim_start().starts_with("error"))
        .unwrap_or_else(|| panic!("no `error` line in:\n{stderr}"))
        .to_owned()
}

/// Runs `sluice check flows/<file>` and checks: exit 1, the position is named.
fn check_fails_at(sb: &Sandbox, file: &str, line: u32, col: Option<u32>) -> String {
    let rel = format!("flows/{file}");
    let out = sb.cli(&["check", &rel], None);
    assert_eq!(
        out.code,
        Some(1),
        "`sluice check {rel}` exits 1\n{}",
        out.all()
    );
    let found = positions(&out.stderr, &rel);
    let hit = found
        .iter()
        .any(|&(l, c)| l == line && col.is_none_or(|col| c == col));
    assert!(
        hit,
        "`sluice check {rel}` names {rel}:{line}:{} (found {found:?})\n{}",
        col.map_or("<col>".to_owned(), |c| c.to_string()),
        out.all()
    );
    out.stderr
}

#[test]
fn check_unknown_key_suggests_the_right_one() {
    let sb = sandbox();
    let text = edit("typo", "  - transform:", "  - tranform:");
    sb.write("flows/typo.yaml", &text);
    let line = line_of(&text, "- tranform:");
    let stderr = check_fails_at(&sb, "typo.yaml", line, Some(5));
    assert!(
        headline(&stderr).contains("tranform"),
        "the headline names the key:\n{stderr}"
    );
    let hint = stderr
        .lines()
        .find(|l| l.contains("did you mean"))
        .unwrap_or_else(|| panic!("no `did you mean` hint:\n{stderr}"));
    assert!(
        hint.contains("transform"),
        "the hint suggests `transform`: {hint}"
    );
    assert!(
        stderr.contains("-->"),
        "rustc-style `-->` location line:\n{stderr}"
    );
    assert!(
        stderr.contains("- tranform:"),
        "the source line is shown:\n{stderr}"
    );
    assert!(stderr.contains('^'), "the problem is underlined:\n{stderr}");
}

#[test]
fn check_wrong_type() {
    let sb = sandbox();
    let text = edit("wrongtype", "trigger:\n", "concurrency: lots\ntrigger:\n");
    sb.write("flows/wrongtype.yaml", &text);
    let stderr = check_fails_at(
        &sb,
        "wrongtype.yaml",
        line_of(&text, "concurrency: lots"),
        Some(14),
    );
    let head = headline(&stderr).to_lowercase();
    assert!(
        ["integer", "number", "invalid type", "expected"]
            .iter()
            .any(|w| head.contains(w)),
        "the headline says what type is expected: {head}\n{stderr}"
    );
}

#[test]
fn check_unknown_step_kind() {
    let sb = sandbox();
    let text = edit(
        "kind",
        "  - transform: \"{order_id: id, priority: priority}\"",
        "  - frobnicate: \"x\"",
    );
    sb.write("flows/kind.yaml", &text);
    let stderr = check_fails_at(&sb, "kind.yaml", line_of(&text, "- frobnicate:"), Some(5));
    assert!(
        headline(&stderr).contains("frobnicate"),
        "the headline names the step kind:\n{stderr}"
    );
    assert!(
        stderr.contains("transform") && stderr.contains("route"),
        "the diagnostic lists the known step kinds:\n{stderr}"
    );
}

#[test]
fn check_bad_jmespath_points_into_the_expression() {
    let sb = sandbox();
    let expr = "{order_id: id, priority: priority ==}";
    let text = edit("jp", "{order_id: id, priority: priority}", expr);
    sb.write("flows/jp.yaml", &text);
    let line = line_of(&text, expr);
    let stderr = check_fails_at(&sb, "jp.yaml", line, None);
    let (_, col) = *positions(&stderr, "flows/jp.yaml")
        .iter()
        .find(|p| p.0 == line)
        .unwrap();
    let start = col_of(&text, expr);
    let problem = col_of(&text, "priority ==}");
    let end = start + expr.len() as u32;
    assert!(
        (problem..=end).contains(&col),
        "column {col} points at the broken part of the expression (columns {problem}..={end})\n{stderr}"
    );
    let head = headline(&stderr).to_lowercase();
    assert!(
        head.contains("jmespath") || head.contains("expression"),
        "headline: {head}"
    );
}

#[test]
fn check_rhai_syntax_error_names_the_line() {
    let sb = sandbox();
    let text = edit(
        "rhai",
        "  - route:",
        "  - script: |\n      let total = 0;\n      total += ;\n      payload\n  - route:",
    );
    sb.write("flows/rhai.yaml", &text);
    check_fails_at(&sb, "rhai.yaml", line_of(&text, "total += ;"), None);
}

#[test]
fn check_missing_contract() {
    let sb = sandbox();
    let text = edit("nocontract", "input: order.v1", "input: nope.v1");
    sb.write("flows/nocontract.yaml", &text);
    let stderr = check_fails_at(
        &sb,
        "nocontract.yaml",
        line_of(&text, "input: nope.v1"),
        Some(col_of(&text, "nope.v1")),
    );
    assert!(
        headline(&stderr).contains("nope.v1"),
        "the headline names the contract:\n{stderr}"
    );
}

#[test]
fn check_route_to_undefined_sink() {
    let sb = sandbox();
    let text = edit("nosink", "        to: express", "        to: expres");
    sb.write("flows/nosink.yaml", &text);
    let stderr = check_fails_at(
        &sb,
        "nosink.yaml",
        line_of(&text, "to: expres"),
        Some(col_of(&text, "expres")),
    );
    assert!(
        headline(&stderr).contains("expres"),
        "the headline names the sink:\n{stderr}"
    );
}

#[test]
fn check_duplicate_flow_name_names_both_files() {
    let sb = sandbox();
    sb.write(
        "flows/dup-a.yaml",
        edit("same", "path: inbox/same", "path: inbox/a"),
    );
    sb.write(
        "flows/dup-b.yaml",
        edit("same", "path: inbox/same", "path: inbox/b"),
    );
    let out = sb.cli(&["check"], None);
    assert_eq!(
        out.code,
        Some(1),
        "duplicate names fail the check\n{}",
        out.all()
    );
    assert!(
        out.stderr.contains("flows/dup-a.yaml") && out.stderr.contains("flows/dup-b.yaml"),
        "both files are named\n{}",
        out.all()
    );
    let named: Vec<_> = ["flows/dup-a.yaml", "flows/dup-b.yaml"]
        .iter()
        .flat_map(|f| positions(&out.stderr, f))
        .collect();
    assert!(
        named.iter().any(|p| p.0 == 1),
        "the `name:` line is pointed at (1:<col>), found {named:?}\n{}",
        out.all()
    );
    assert!(
        out.stderr.contains("same"),
        "the flow name is mentioned\n{}",
        out.all()
    );
}

#[test]
fn check_valid_flows_exit_0_and_any_invalid_exits_1() {
    let sb = sandbox();
    sb.write("flows/one.yaml", valid("one"));
    sb.write("flows/two.yml", valid("two"));
    let out = sb.cli(&["check"], None);
    assert_eq!(out.code, Some(0), "valid flows pass\n{}", out.all());
    assert!(
        !out.stderr
            .lines()
            .any(|l| l.trim_start().starts_with("error")),
        "no errors for valid flows\n{}",
        out.all()
    );

    let out = sb.cli(&["check", "flows/one.yaml"], None);
    assert_eq!(
        out.code,
        Some(0),
        "an explicit valid file passes\n{}",
        out.all()
    );

    // A mistake in the .yml file (also discovered by default) fails the whole check.
    let text = edit("two", "        to: express", "        to: nowhere");
    sb.write("flows/two.yml", &text);
    let out = sb.cli(&["check"], None);
    assert_eq!(
        out.code,
        Some(1),
        "one invalid flow fails the check\n{}",
        out.all()
    );
    assert!(
        positions(&out.stderr, "flows/two.yml").contains(&(line_of(&text, "to: nowhere"), 13)),
        "names flows/two.yml:<line>:13\n{}",
        out.all()
    );
    assert!(
        positions(&out.stderr, "flows/one.yaml").is_empty(),
        "the valid flow is not blamed\n{}",
        out.all()
    );
}

// ---------------------------------------------------------------------------------------------
// sluice test
// ---------------------------------------------------------------------------------------------

const TESTED: &str = r#"name: tested
trigger:
  file: { path: inbox/tested }
contract:
  input: order.v1
steps:
  - filter: "priority == 'high'"
  - set:
      urgent: "`true`"
  - to: out
sinks:
  out:
    file: { path: outbox/tested, name: "{{id}}.json" }
tests:
  - name: high is delivered
    input: { id: t-1, priority: high }
    expect: { sink: out, payload: { id: t-1, urgent: true } }
  - name: low is dropped
    input: { id: t-2, priority: low }
    expect: { filtered: true }
  - name: broken is refused
    input: { nope: 1 }
    expect: { error: contract }
"#;

#[test]
fn test_command_passes() {
    let sb = sandbox();
    sb.write("flows/tested.yaml", TESTED);
    sb.write("flows/route.yaml", valid("route"));
    let out = sb.cli(&["test"], None);
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(0), "all tests pass\n{}", out.all());
    for case in [
        "ok tested: high is delivered",
        "ok tested: low is dropped",
        "ok tested: broken is refused",
        "ok route: high goes express",
        "ok route: low goes standard",
    ] {
        assert!(all.contains(case), "prints `{case}`\n{}", out.all());
    }
    assert!(!all.contains("FAIL"), "no failures\n{}", out.all());

    let out = sb.cli(&["test", "flows/route.yaml"], None);
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(all.contains("ok route: high goes express"), "{}", out.all());
    assert!(
        !all.contains("tested:"),
        "only the named file runs\n{}",
        out.all()
    );
    assert_eq!(sb.count("outbox/tested"), 0, "tests write nothing");
    assert_eq!(sb.count("outbox/express"), 0, "tests write nothing");
}

#[test]
fn test_command_fails() {
    let sb = sandbox();
    let text = TESTED
        .replace(
            "expect: { sink: out, payload: { id: t-1, urgent: true } }",
            "expect: { sink: out, payload: { id: t-1, urgent: false } }",
        )
        .replace("expect: { filtered: true }", "expect: { sink: out }");
    sb.write("flows/tested.yaml", &text);
    let out = sb.cli(&["test", "flows/tested.yaml"], None);
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.code,
        Some(1),
        "a failing case fails the run\n{}",
        out.all()
    );
    for name in ["high is delivered", "low is dropped"] {
        let line = all
            .lines()
            .find(|l| l.contains(&format!("FAIL tested: {name}: ")))
            .unwrap_or_else(|| panic!("prints `FAIL tested: {name}: <reason>`\n{}", out.all()));
        let reason = line.split_once(&format!("{name}: ")).unwrap().1;
        assert!(
            !reason.trim().is_empty(),
            "the failure has a reason: {line}"
        );
    }
    assert!(
        all.contains("ok tested: broken is refused"),
        "the passing case is still reported\n{}",
        out.all()
    );

    // An invalid flow also fails `sluice test`.
    sb.write(
        "flows/tested.yaml",
        TESTED.replace("  - filter:", "  - filtre:"),
    );
    let out = sb.cli(&["test", "flows/tested.yaml"], None);
    assert_eq!(
        out.code,
        Some(1),
        "an invalid flow fails `sluice test`\n{}",
        out.all()
    );
    assert!(
        !positions(&out.stderr, "flows/tested.yaml").is_empty(),
        "names the position\n{}",
        out.all()
    );
}

// ---------------------------------------------------------------------------------------------
// sluice exec
// ---------------------------------------------------------------------------------------------

fn exec_sandbox() -> Sandbox {
    let sb = sandbox();
    sb.write("flows/route.yaml", valid("route"));
    sb.write("flows/tested.yaml", TESTED);
    sb
}

fn assert_nothing_written(sb: &Sandbox) {
    for dir in [
        "outbox/express",
        "outbox/standard",
        "outbox/tested",
        "inbox/route/.done",
        "inbox/tested/.done",
    ] {
        assert_eq!(
            sb.count(dir),
            0,
            "`sluice exec` writes nothing, but {dir} has files"
        );
    }
}

#[test]
fn exec_delivers_to_the_routed_sink_without_writing() {
    let sb = exec_sandbox();
    sb.write(
        "order.json",
        json!({ "id": "o-1", "priority": "high" }).to_string(),
    );
    let out = sb.cli(&["exec", "flows/route.yaml", "--input", "order.json"], None);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let v: Value = out.stdout_json();
    assert_eq!(v["outcome"], "delivered", "{v:#}");
    assert_eq!(
        v["payload"],
        json!({ "order_id": "o-1", "priority": "high" }),
        "{v:#}"
    );
    assert_eq!(v["route"], json!(["express"]), "{v:#}");
    let deliveries = v["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("deliveries: {v:#}"));
    assert_eq!(deliveries.len(), 1, "{v:#}");
    assert_eq!(deliveries[0]["sink"], "express", "{v:#}");
    assert_eq!(
        deliveries[0]["payload"],
        json!({ "order_id": "o-1", "priority": "high" }),
        "{v:#}"
    );
    let target = deliveries[0]["target"]
        .as_str()
        .unwrap_or_else(|| panic!("target: {v:#}"));
    assert!(
        target.ends_with("outbox/express/o-1.json"),
        "target {target}"
    );
    assert!(v.get("error").is_none_or(Value::is_null), "no error: {v:#}");
    assert_nothing_written(&sb);
}

#[test]
fn exec_reads_stdin() {
    let sb = exec_sandbox();
    let input = json!({ "id": "o-2", "priority": "low" }).to_string();
    let out = sb.cli(
        &["exec", "flows/route.yaml", "--input", "-"],
        Some(input.as_bytes()),
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let v = out.stdout_json();
    assert_eq!(v["outcome"], "delivered", "{v:#}");
    assert_eq!(v["route"], json!(["standard"]), "{v:#}");
    assert_eq!(v["deliveries"][0]["sink"], "standard", "{v:#}");
    let target = v["deliveries"][0]["target"]
        .as_str()
        .unwrap_or_else(|| panic!("target: {v:#}"));
    assert!(
        target.ends_with("outbox/standard/o-2.json"),
        "target {target}"
    );
    assert_nothing_written(&sb);
}

#[test]
fn exec_filtered_and_invalid_inputs() {
    let sb = exec_sandbox();

    let out = sb.cli(
        &["exec", "flows/tested.yaml", "--input", "-"],
        Some(br#"{"id":"t-9","priority":"low"}"#),
    );
    assert_eq!(
        out.code,
        Some(0),
        "a filtered message is not an error\n{}",
        out.all()
    );
    let v = out.stdout_json();
    assert_eq!(v["outcome"], "filtered", "{v:#}");
    assert_eq!(v["deliveries"], json!([]), "{v:#}");

    // Contract violation: outcome error, exit 1.
    let out = sb.cli(
        &["exec", "flows/route.yaml", "--input", "-"],
        Some(br#"{"id": 5, "priority": "high"}"#),
    );
    assert_eq!(out.code, Some(1), "an error outcome exits 1\n{}", out.all());
    let v = out.stdout_json();
    assert_eq!(v["outcome"], "error", "{v:#}");
    assert_eq!(v["error"]["kind"], "contract", "{v:#}");
    let pointers: Vec<&str> = v["error"]["violations"]
        .as_array()
        .unwrap_or_else(|| panic!("violations: {v:#}"))
        .iter()
        .filter_map(|x| x["pointer"].as_str())
        .collect();
    assert_eq!(pointers, vec!["/id"], "{v:#}");
    assert_eq!(v["deliveries"], json!([]), "{v:#}");

    // Not JSON at all: exit 1.
    sb.write("broken.json", "{\"id\": ");
    let out = sb.cli(
        &["exec", "flows/route.yaml", "--input", "broken.json"],
        None,
    );
    assert_eq!(out.code, Some(1), "malformed input exits 1\n{}", out.all());

    // An invalid flow: exit 1.
    sb.write(
        "flows/bad.yaml",
        valid("bad").replace("  - transform:", "  - tranform:"),
    );
    sb.write(
        "order.json",
        json!({ "id": "o-1", "priority": "high" }).to_string(),
    );
    let out = sb.cli(&["exec", "flows/bad.yaml", "--input", "order.json"], None);
    assert_eq!(out.code, Some(1), "an invalid flow exits 1\n{}", out.all());
    assert_nothing_written(&sb);
}

// ---------------------------------------------------------------------------------------------
// sluice schema, usage errors
// ---------------------------------------------------------------------------------------------

#[test]
fn schema_prints_the_flow_format_json_schema() {
    let sb = Sandbox::new();
    let out = sb.cli(&["schema"], None);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let v = out.stdout_json();
    assert!(
        v.get("$schema").is_some_and(Value::is_string),
        "has a $schema: {}",
        out.stdout
    );
    let text = out.stdout.as_str();
    for key in ["trigger", "steps", "sinks", "transform"] {
        assert!(text.contains(key), "the schema describes `{key}`");
    }
}

#[test]
fn usage_errors_exit_2() {
    let sb = Sandbox::new();
    let out = sb.cli(&["frobnicate"], None);
    assert_eq!(out.code, Some(2), "unknown subcommand\n{}", out.all());
    let out = sb.cli(&["check", "--no-such-flag"], None);
    assert_eq!(out.code, Some(2), "unknown flag\n{}", out.all());
    let out = sb.cli(&["exec"], None);
    assert_eq!(out.code, Some(2), "exec without a flow\n{}", out.all());
}
