//! The EIP steps from the outside: `sluice check` diagnostics for their mistakes, cycles of
//! `call`s across files, the examples' `tests:`, multicast, try/catch and call end to end,
//! and aggregate groups across a hot reload.

use std::path::Path;

use crate::support::*;

fn bad_flow(step: &str) -> String {
    format!(
        "name: bad\ntrigger:\n  file: {{ path: inbox/x }}\nsteps:\n  - {step}\nsinks:\n  audit: {{ stdout: {{}} }}\n"
    )
}

#[test]
fn every_eip_step_mistake_is_a_positioned_check_error_with_a_hint() {
    let cases: &[(&str, &str, &str)] = &[
        (r#"split: "lines[?""#, "invalid JMESPath", "JMESPath syntax"),
        (
            "split: { on: lines, on_child_eror: fail_parent }",
            "unknown key `on_child_eror`",
            "on_child_error",
        ),
        (
            "aggregate: { key: id }",
            "never completes a group",
            "end_of_batch",
        ),
        (
            "aggregate: { size: 0 }",
            "`size` must be at least 1",
            "size: 10",
        ),
        (
            "aggregate: { size: 2, output: \"[\" }",
            "invalid JMESPath",
            "JMESPath syntax",
        ),
        (
            "aggregate: { size: 2, max_groups: 0 }",
            "`max_groups` must be at least 1",
            "10000",
        ),
        ("dedupe: { ttl: 0s }", "`ttl` must be longer than 0", "24h"),
        (
            "dedupe: { path: \"\" }",
            "dedupe store `path` is empty",
            "redb",
        ),
        (
            "dedupe: { key: \"a[\" }",
            "invalid JMESPath",
            "JMESPath syntax",
        ),
        (
            "wiretap: audti",
            "wiretap to undefined sink `audti`",
            "did you mean `audit`",
        ),
        ("throttle: { rate: 50 }", "is not a rate", "50/s"),
        ("throttle: {}", "limits nothing", "concurrency"),
        (
            "throttle: { concurrency: 0 }",
            "`concurrency` must be at least 1",
            "concurrency: 4",
        ),
        (
            "throttle: { concurrency: 2, key: id }",
            "`key` needs a `rate`",
            "rate",
        ),
        ("call: bad", "calls itself", "cycle"),
        (
            r#"try: [ {filter: "a"} ]"#,
            "must be followed by a `catch`",
            "meta('error.kind')",
        ),
        (
            r#"catch: [ {filter: "a"} ]"#,
            "must come right after a `try`",
            "try",
        ),
        (
            r#"route: [ {when: "a", steps: [ {aggregate: {size: 2}} ]} ]"#,
            "may only be a top-level step",
            "steps:",
        ),
    ];
    let sb = Sandbox::new();
    for (step, message, hint) in cases {
        sb.write("flows/bad.yaml", bad_flow(step));
        let out = sb.cli(&["check"], None);
        assert_eq!(
            out.code,
            Some(1),
            "`{step}` passed the check:\n{}",
            out.all()
        );
        assert!(
            out.stderr.contains(message),
            "`{step}`: no `{message}` in:\n{}",
            out.all()
        );
        assert!(
            out.stderr.contains(hint),
            "`{step}`: no hint `{hint}` in:\n{}",
            out.all()
        );
        assert!(
            positions(&out.stderr, "flows/bad.yaml")
                .iter()
                .any(|(line, _)| *line == 5),
            "`{step}`: no position on line 5:\n{}",
            out.all()
        );
    }
    let flow = "name: bad\ntrigger:\n  file: { path: inbox/x }\nsteps:\n  - to: out\nsinks:\n  out: { stdout: {} }\nerrors:\n  circuit_breaker: { failures: 0, fallback: ot }\n";
    sb.write("flows/bad.yaml", flow);
    let out = sb.cli(&["check"], None);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("`failures` must be at least 1"),
        "{}",
        out.all()
    );
    assert!(
        out.stderr.contains("fallback to undefined sink `ot`"),
        "{}",
        out.all()
    );
    assert!(out.stderr.contains("did you mean `out`"), "{}", out.all());
}

const CALLER: &str =
    "name: @NAME@\ntrigger:\n  file: { path: inbox/@NAME@ }\nsteps:\n  - call: @CALLEE@\n";

fn caller(name: &str, callee: &str) -> String {
    CALLER.replace("@NAME@", name).replace("@CALLEE@", callee)
}

#[test]
fn a_cycle_of_calls_across_files_is_a_load_error() {
    let sb = Sandbox::new();
    sb.write("flows/a.yaml", caller("a", "b"));
    sb.write("flows/b.yaml", caller("b", "c"));
    sb.write("flows/c.yaml", caller("c", "a"));
    let out = sb.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("a cycle of calls: a → b → c → a"),
        "{}",
        out.all()
    );
    assert_eq!(
        positions(&out.stderr, "flows/a.yaml"),
        vec![(5, 11)],
        "{}",
        out.all()
    );

    sb.write("flows/c.yaml", caller("c", "nope"));
    let out = sb.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("`call` of undefined flow `nope`"),
        "{}",
        out.all()
    );

    sb.write(
        "flows/c.yaml",
        "name: c\ntrigger:\n  file: { path: inbox/c }\nsteps:\n  - split: items\n",
    );
    let out = sb.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr
            .contains("flow `c` cannot be called: it has a `split` step"),
        "{}",
        out.all()
    );

    // The running registry refuses the flow that would close a cycle.
    sb.write("flows/c.yaml", caller("c", "b"));
    sb.remove("flows/a.yaml");
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_line("the cycle is refused", secs(30), |l| {
        l.contains("a cycle of calls: ") && (l.contains("b → c → b") || l.contains("c → b → c"))
    });
}

fn example(sb: &Sandbox, name: &str) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    copy_dir(&from, sb.root());
}

#[test]
fn the_eip_examples_pass_their_tests() {
    for name in [
        "order-totals",
        "reliable-delivery",
        "sensor-windows",
        "kafka-orders",
        "sftp-partner-drop",
    ] {
        let sb = Sandbox::new();
        example(&sb, name);
        let out = sb.cli(&["check"], None);
        assert_eq!(out.code, Some(0), "{name}: {}", out.all());
        let out = sb.cli(&["test"], None);
        assert_eq!(out.code, Some(0), "{name}: {}", out.all());
        assert!(out.stdout.contains(" 0 failed"), "{name}: {}", out.all());
    }
    // `sluice exec` dry-runs split children, aggregates of one and the called flow.
    let sb = Sandbox::new();
    example(&sb, "order-totals");
    let out = sb.cli(
        &[
            "exec",
            "flows/order-lines.yaml",
            "--input",
            "inputs/orders-1.ndjson",
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let results = out.stdout_json();
    assert_eq!(results[0]["outcome"], "delivered", "{results}");
    assert_eq!(
        results[0]["payload"][0]["summary"], "order o-1: 1 line(s)",
        "{results}"
    );
}

#[test]
fn split_try_catch_wiretap_aggregate_and_call_run_end_to_end() {
    let sb = Sandbox::new();
    example(&sb, "order-totals");
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("order-lines");
    let input = std::fs::read(sb.path("inputs/orders-1.ndjson")).unwrap();
    sb.write_atomic("inbox/orders/orders-1.ndjson", input);
    let o1 = sluice.wait_json(&sb, "outbox/totals/o-1.json", secs(30));
    assert_eq!(o1["total_cents"].as_f64(), Some(1299.0), "{o1}");
    assert_eq!(o1["summary"], "order o-1: 2 line(s)", "the called flow ran");
    let o2 = sluice.wait_json(&sb, "outbox/totals/o-2.json", secs(30));
    assert_eq!(o2["total_cents"].as_f64(), Some(60.0), "{o2}");
    sluice.expect_within(secs(30), "the file is done", || {
        sb.exists("inbox/orders/.done/orders-1.ndjson")
    });
    // The wiretap copies without waiting (a background writer), so its files may land after
    // the input is done.
    sluice.expect_within(secs(30), "the wiretap saw every line", || {
        sb.names("outbox/audit").len() >= 4
    });
    let audit: Vec<serde_json::Value> = sb
        .names("outbox/audit")
        .iter()
        .map(|n| sb.read_json(&format!("outbox/audit/{n}")))
        .collect();
    assert_eq!(audit.len(), 4, "the wiretap saw every line");
    assert!(
        audit.iter().any(|l| l["problem"]
            .as_str()
            .is_some_and(|p| p.contains("no price for D"))),
        "the catch steps ran: {audit:?}"
    );
}

#[test]
fn multicast_delivers_to_every_sink_and_completes_when_all_confirmed() {
    let sb = Sandbox::new();
    sb.write(
        "flows/multi.yaml",
        format!(
            r#"name: multi
trigger:
  file:
    path: inbox/multi
    {FAST_TRIGGER}
steps:
  - to: [a, b]
sinks:
  a: {{ file: {{ path: outbox/a, name: "{{{{id}}}}.json" }} }}
  b: {{ file: {{ path: outbox/b, name: "{{{{id}}}}.json" }} }}
errors:
  retry: {{ attempts: 1 }}
  dead_letter: {{ file: {{ path: dead-letter/multi }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("multi");
    for i in 0..20 {
        sb.drop_json(
            "inbox/multi",
            &format!("m{i}.json"),
            &json!({"id": format!("m{i}")}),
        );
    }
    sluice.expect_within(secs(30), "20 files done", || {
        sb.count("inbox/multi/.done") == 20
    });
    assert_eq!(sb.count("outbox/a"), 20);
    assert_eq!(sb.count("outbox/b"), 20);
    // One sink failing fails the message: not done, dead-lettered, though `a` has it.
    sb.write("outbox/b-broken", "");
    std::fs::rename(sb.path("outbox/b"), sb.path("outbox/b-ok")).unwrap();
    std::fs::rename(sb.path("outbox/b-broken"), sb.path("outbox/b")).unwrap();
    sb.drop_json("inbox/multi", "x.json", &json!({"id": "x"}));
    sluice.expect_within(secs(30), "x fails", || {
        sb.exists("inbox/multi/.error/x.json")
    });
    assert!(sb.exists("outbox/a/x.json"));
    assert_eq!(sb.count("dead-letter/multi"), 1);
}

#[test]
fn an_aggregate_group_survives_a_reload_that_keeps_its_definition() {
    let sb = Sandbox::new();
    let flow = |description: &str, size: u32| {
        format!(
            r#"name: agg
description: {description}
trigger:
  file:
    path: inbox/agg
    {FAST_TRIGGER}
steps:
  - aggregate: {{ key: k, size: {size}, output: "{{k: [0].k, n: length(@)}}" }}
  - to: out
sinks:
  out: {{ file: {{ path: outbox/agg, name: "{{{{k}}}}-{{{{n}}}}.json" }} }}
"#
        )
    };
    sb.write("flows/agg.yaml", flow("first", 3));
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("agg");
    sb.drop_json("inbox/agg", "1.json", &json!({"k": "g"}));
    sb.drop_json("inbox/agg", "2.json", &json!({"k": "g"}));
    sluice.expect_within(secs(10), "two members wait", || {
        sb.count("inbox/agg/.inflight") == 2
    });
    let mark = sluice.mark();
    sb.write_atomic("flows/agg.yaml", flow("second", 3));
    sluice.wait_for_line_since(mark, "reloaded", secs(30), |l| l.contains("flow reloaded"));
    sb.drop_json("inbox/agg", "3.json", &json!({"k": "g"}));
    let out = sluice.wait_json(&sb, "outbox/agg/g-3.json", secs(30));
    assert_eq!(out["n"], 3, "the group kept its members across the reload");
    sluice.expect_within(secs(10), "all done", || sb.count("inbox/agg/.done") == 3);

    // A changed definition completes the open groups of the old one (reason `reload`).
    sb.drop_json("inbox/agg", "4.json", &json!({"k": "h"}));
    sluice.expect_within(secs(10), "one member waits", || {
        sb.count("inbox/agg/.inflight") == 1
    });
    sb.write_atomic("flows/agg.yaml", flow("third", 5));
    let out = sluice.wait_json(&sb, "outbox/agg/h-1.json", secs(30));
    assert_eq!(out["n"], 1);
    sluice.expect_within(secs(10), "done", || sb.count("inbox/agg/.done") == 4);
}

#[test]
fn on_shutdown_complete_delivers_open_groups_and_abandon_leaves_them_for_redelivery() {
    for (mode, delivered) in [("complete", true), ("abandon", false)] {
        let sb = Sandbox::new();
        sb.write(
            "flows/agg.yaml",
            format!(
                r#"name: agg
trigger:
  file:
    path: inbox/agg
    {FAST_TRIGGER}
steps:
  - aggregate: {{ size: 10, on_shutdown: {mode}, output: "{{n: length(@)}}" }}
  - to: out
sinks:
  out: {{ file: {{ path: outbox/agg, name: "group.json" }} }}
"#
            ),
        );
        let mut sluice = Sluice::run(&sb);
        sluice.wait_ready("agg");
        for i in 0..3 {
            sb.drop_json("inbox/agg", &format!("{i}.json"), &json!({"i": i}));
        }
        sluice.expect_within(secs(10), "three members wait", || {
            sb.count("inbox/agg/.inflight") == 3
        });
        let status = sluice.terminate(secs(20));
        assert!(
            status.success(),
            "{mode}: {status:?}\n{}",
            sluice.log_tail(20)
        );
        if delivered {
            assert_eq!(sb.read_json("outbox/agg/group.json"), json!({"n": 3}));
            assert_eq!(sb.count("inbox/agg/.done"), 3);
        } else {
            assert!(!sb.exists("outbox/agg/group.json"));
            assert_eq!(
                sb.count("inbox/agg/.inflight"),
                3,
                "left for the next start"
            );
        }
    }
}

#[test]
fn a_failing_child_dead_letters_itself_or_fails_its_parent() {
    for (option, parent_fails) in [("", false), (", on_child_error: fail_parent", true)] {
        let sb = Sandbox::new();
        sb.write(
            "flows/split.yaml",
            format!(
                r#"name: split
trigger:
  file:
    path: inbox/split
    {FAST_TRIGGER}
steps:
  - split: {{ on: items{option} }}
  - script: |
      if payload.bad == true {{ throw "bad item " + payload.id; }}
  - to: out
sinks:
  out: {{ file: {{ path: outbox/split, name: "{{{{id}}}}.json" }} }}
errors:
  dead_letter: {{ file: {{ path: dead-letter/split }} }}
"#
            ),
        );
        let mut sluice = Sluice::run(&sb);
        sluice.wait_ready("split");
        let items = json!({"items": [{"id": "a"}, {"id": "b", "bad": true}, {"id": "c"}]});
        sb.drop_json("inbox/split", "order.json", &items);
        if parent_fails {
            sluice.expect_within(secs(20), "the file fails", || {
                sb.exists("inbox/split/.error/order.json")
            });
            let letters = sb.names("dead-letter/split");
            assert_eq!(letters.len(), 1, "the parent, once");
            let name = letters.iter().next().unwrap();
            let letter = sb.read_json(&format!("dead-letter/split/{name}"));
            assert_eq!(letter["message"], items, "the parent is dead-lettered");
            assert!(
                letter["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("bad item b")
            );
        } else {
            sluice.expect_within(secs(20), "the file is done", || {
                sb.exists("inbox/split/.done/order.json")
            });
            let letters = sb.names("dead-letter/split");
            assert_eq!(letters.len(), 1, "the child, alone");
            let name = letters.iter().next().unwrap();
            let letter = sb.read_json(&format!("dead-letter/split/{name}"));
            assert_eq!(letter["message"], json!({"id": "b", "bad": true}));
            assert_eq!(letter["meta"]["split.index"], "1");
        }
        assert!(sb.exists("outbox/split/a.json") && sb.exists("outbox/split/c.json"));
    }
}

#[test]
fn a_failing_wiretap_never_fails_the_message() {
    let sb = Sandbox::new();
    sb.write("outbox/tap", "a file where the wiretap's folder should be");
    sb.write(
        "flows/tap.yaml",
        format!(
            r#"name: tap
trigger:
  file:
    path: inbox/tap
    {FAST_TRIGGER}
steps:
  - wiretap: tap
  - to: out
sinks:
  out: {{ file: {{ path: outbox/out, name: "{{{{id}}}}.json" }} }}
  tap: {{ file: {{ path: outbox/tap }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("tap");
    for i in 0..5 {
        sb.drop_json("inbox/tap", &format!("{i}.json"), &json!({"id": i}));
    }
    sluice.expect_within(secs(20), "5 files done", || {
        sb.count("inbox/tap/.done") == 5
    });
    assert_eq!(sb.count("outbox/out"), 5);
    sluice.wait_for_line(
        "the wiretap failures are logged and counted",
        secs(10),
        |l| l.contains("wiretap write failed") && l.contains("failed=5"),
    );
}
