//! Named steps: `name:` on any step, unique within a flow (a load error naming both
//! positions otherwise); metrics, errors, traces and `/api/flows` use the name, and the
//! position for a step without one.

use crate::support::*;
use serde_json::json;

#[test]
fn a_name_used_twice_is_a_load_error_with_both_positions() {
    let sb = Sandbox::new();
    let flow = r#"trigger:
  file: { path: inbox/twice }
steps:
  - name: price
    set: { a: "`1`" }
  - route:
      - when: "a == `1`"
        steps:
          - name: price
            set: { b: "`2`" }
"#;
    sb.write("flows/twice.yaml", flow);
    let out = sb.cli(&["check", "flows/twice.yaml"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let (first, second) = (line_of(flow, "- name: price"), 9);
    assert!(
        out.stderr.contains(&format!(
            "step name `price` is used twice: at line {first} column 11 and at line {second} column 19"
        )),
        "{}",
        out.all()
    );
    assert!(
        out.stderr
            .contains(&format!("flows/twice.yaml:{second}:19")),
        "{}",
        out.all()
    );
    // A name alone is no step, and two kinds in one step are refused.
    sb.write(
        "flows/twice.yaml",
        "trigger:\n  file: { path: inbox/twice }\nsteps:\n  - name: lonely\n",
    );
    let out = sb.cli(&["check", "flows/twice.yaml"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("a step needs a kind"), "{}", out.all());
    assert!(out.stderr.contains("flows/twice.yaml:4:5"), "{}", out.all());
    sb.write(
        "flows/twice.yaml",
        "trigger:\n  file: { path: inbox/twice }\nsteps:\n  - name: both\n    set: { a: \"`1`\" }\n    filter: a\n",
    );
    let out = sb.cli(&["check", "flows/twice.yaml"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("this one has `set` and `filter`"),
        "{}",
        out.all()
    );
}

#[test]
fn metrics_errors_and_the_admin_api_use_the_name() {
    let sb = Sandbox::new();
    sb.write(
        "flows/named.yaml",
        r#"name: named
trigger:
  file: { path: inbox/named }
steps:
  - name: shape
    transform: "{id: id, qty: qty}"
  - set: { doubled: "qty" }
  - name: check-qty
    script: |
      if payload.qty > 5 { throw "too many"; }
      payload
  - to: out
sinks:
  out: { file: { path: outbox/named, name: "{{id}}.json" } }
errors:
  dead_letter: { file: { path: dead-letter/named } }
"#,
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("named");
    sb.drop_json("inbox/named", "ok.json", &json!({"id": "n-1", "qty": 1}));
    sb.drop_json("inbox/named", "bad.json", &json!({"id": "n-2", "qty": 9}));
    sluice.expect_within(secs(20), "both files finished", || {
        sb.count("inbox/named/.done") == 1 && sb.count("inbox/named/.error") >= 1
    });
    // The failure names the step by its name, in the sidecar and the dead letter.
    let sidecar = sb.read_json("inbox/named/.error/bad.json.error.json");
    assert_eq!(sidecar["step"], "check-qty", "{sidecar:#}");
    let dead = sb.only_json("dead-letter/named");
    assert_eq!(dead["error"]["step"], "check-qty", "{dead:#}");
    // The step histograms are labelled with names, and with positions for unnamed steps.
    let mut metrics = scrape(ports);
    wait_until(secs(5), || {
        metrics = scrape(ports);
        metrics.count(
            "sluice_step_duration_seconds_count",
            &[("flow", "named"), ("step", "shape")],
        ) >= 2.0
    });
    for (step, count) in [
        ("shape", 2.0),
        ("steps[1] (set)", 2.0),
        ("check-qty", 2.0),
        ("steps[3] (to)", 1.0),
    ] {
        assert_eq!(
            metrics.count(
                "sluice_step_duration_seconds_count",
                &[("flow", "named"), ("step", step)]
            ),
            count,
            "step `{step}`"
        );
    }
    // `/api/flows` lists the steps with their labels, names and positions.
    let flow = admin_flow(ports, "named");
    assert_eq!(
        flow["steps"],
        json!([
            {"label": "shape", "kind": "transform", "name": "shape", "position": "steps[0]"},
            {"label": "steps[1] (set)", "kind": "set", "position": "steps[1]"},
            {"label": "check-qty", "kind": "script", "name": "check-qty", "position": "steps[2]"},
            {"label": "steps[3] (to)", "kind": "to", "position": "steps[3]"},
        ]),
        "{flow:#}"
    );
}
