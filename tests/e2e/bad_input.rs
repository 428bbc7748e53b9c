//! Bad input is put aside, typed and explained; it never stops the flow or the other flows.

use std::collections::BTreeSet;
use std::fs::File;
use std::time::Instant;

use crate::support::*;
use serde_json::Value;

const ORDER_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["id", "currency", "lines"],
  "properties": {
    "id": { "type": "string" },
    "currency": { "enum": ["EUR", "USD"] },
    "lines": {
      "type": "array",
      "items": {
        "type": "object",
        "required": ["sku", "qty"],
        "properties": {
          "sku": { "type": "string" },
          "qty": { "type": "integer", "minimum": 1 }
        }
      }
    }
  }
}
"#;

const ORDERS_FLOW: &str = r#"name: orders
trigger:
  file:
    path: inbox/orders
    glob: "*.json"
    @FAST@
contract:
  input: order.v1
steps:
  - set:
      checked: "`true`"
  - to: out
sinks:
  out:
    file: { path: outbox/orders, name: "{{id}}.json" }
"#;

fn orders_sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("schemas/order.v1.json", ORDER_SCHEMA);
    sb.write(
        "flows/orders.yaml",
        ORDERS_FLOW.replace("@FAST@", FAST_TRIGGER),
    );
    sb
}

fn good_order(id: &str) -> Value {
    json!({ "id": id, "currency": "EUR", "lines": [ { "sku": "A1", "qty": 2 } ] })
}

/// Checks the fields every sidecar carries and returns it.
fn sidecar(sb: &Sandbox, rel: &str, file_name: &str) -> Value {
    let side = sb.read_json(rel);
    let obj = side
        .as_object()
        .unwrap_or_else(|| panic!("{rel} is not an object: {side}"));
    for key in [
        "flow",
        "flow_version",
        "step",
        "kind",
        "message",
        "violations",
        "attempts",
        "time",
        "file",
        "message_id",
    ] {
        assert!(obj.contains_key(key), "{rel} lacks `{key}`: {side:#}");
    }
    // Every sidecar, a file's that was never read included, names the message and the
    // version that handled it, as a dead-letter entry does.
    for key in ["message_id", "flow_version"] {
        assert!(
            side[key]
                .as_str()
                .is_some_and(|v| !v.is_empty() && v != "-"),
            "{rel}: `{key}` is set: {side:#}"
        );
    }
    assert_eq!(side["flow"], "orders", "{rel}: flow");
    assert!(
        side["violations"].is_array(),
        "{rel}: violations is an array: {side:#}"
    );
    assert!(
        side["attempts"].as_u64().is_some_and(|n| n >= 1),
        "{rel}: attempts >= 1: {side:#}"
    );
    assert!(
        side["time"].as_str().is_some_and(|t| !t.is_empty()),
        "{rel}: time: {side:#}"
    );
    assert!(
        side["file"].as_str().is_some_and(|f| f.contains(file_name)),
        "{rel}: `file` names {file_name}: {side:#}"
    );
    assert!(
        side["message"]
            .as_str()
            .is_some_and(|m| !m.trim().is_empty()),
        "{rel}: message is not empty: {side:#}"
    );
    side
}

/// A good file after the bad ones: the flow still delivers.
fn assert_still_delivers(sluice: &mut Sluice, sb: &Sandbox, id: &str) {
    sb.drop_json("inbox/orders", &format!("{id}.json"), &good_order(id));
    let out = sluice.wait_json(sb, &format!("outbox/orders/{id}.json"), secs(15));
    assert_eq!(out["id"], id);
    assert_eq!(out["checked"], true);
    sluice.assert_running();
}

#[test]
fn contract_violation_is_rejected_with_every_violation() {
    let sb = orders_sandbox();
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("orders");

    let bad = json!({
        "id": 42,
        "currency": "XXX",
        "lines": [ { "sku": "A1", "qty": 0 }, { "sku": "B2", "qty": 3 } ]
    });
    let original = serde_json::to_vec(&bad).unwrap();
    sb.write_atomic("inbox/orders/bad-order.json", &original);

    sluice.expect_within(secs(15), "bad-order.json.error.json in .rejected/", || {
        sb.exists("inbox/orders/.rejected/bad-order.json.error.json")
    });
    assert!(
        sb.exists("inbox/orders/.rejected/bad-order.json"),
        "the file itself is in .rejected/"
    );
    assert_eq!(
        std::fs::read(sb.path("inbox/orders/.rejected/bad-order.json")).unwrap(),
        original,
        "the rejected file is kept unchanged"
    );

    let side = sidecar(
        &sb,
        "inbox/orders/.rejected/bad-order.json.error.json",
        "bad-order.json",
    );
    assert_eq!(side["kind"], "contract", "{side:#}");
    let violations = side["violations"].as_array().unwrap();
    for v in violations {
        assert!(v["pointer"].is_string(), "violation has a pointer: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "violation has a message: {v}"
        );
    }
    let pointers: BTreeSet<&str> = violations
        .iter()
        .filter_map(|v| v["pointer"].as_str())
        .collect();
    let expected: BTreeSet<&str> = ["/id", "/currency", "/lines/0/qty"].into_iter().collect();
    assert_eq!(
        pointers, expected,
        "every violation, by JSON pointer: {side:#}"
    );

    assert_eq!(
        sb.count("outbox/orders"),
        0,
        "nothing delivered for the rejected order"
    );
    assert_eq!(
        sb.count("inbox/orders/.error"),
        0,
        "a contract violation is not an .error/"
    );
    assert_still_delivers(&mut sluice, &sb, "after-reject");
}

#[test]
fn malformed_json_goes_to_error_with_line_and_column() {
    let sb = orders_sandbox();
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("orders");

    // Line 2, column 8 is the `}` where a value is expected.
    sb.write_atomic("inbox/orders/broken.json", "{\"id\": \"x\",\n  \"n\": }\n");
    sluice.expect_within(secs(15), "broken.json.error.json in .error/", || {
        sb.exists("inbox/orders/.error/broken.json.error.json")
    });
    assert!(
        sb.exists("inbox/orders/.error/broken.json"),
        "the file itself is in .error/"
    );
    let side = sidecar(
        &sb,
        "inbox/orders/.error/broken.json.error.json",
        "broken.json",
    );
    assert_eq!(side["kind"], "trigger", "{side:#}");
    let msg = side["message"].as_str().unwrap();
    assert!(
        msg.to_lowercase().contains("json"),
        "the message says it is about JSON: {msg}"
    );
    let names_position =
        (msg.contains("line 2") && msg.contains("column 8")) || msg.contains("2:8");
    assert!(names_position, "the message names line 2, column 8: {msg}");

    assert_eq!(sb.count("inbox/orders/.rejected"), 0);
    assert_still_delivers(&mut sluice, &sb, "after-malformed");
}

#[test]
fn binary_file_goes_to_error() {
    let sb = orders_sandbox();
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("orders");

    // Deterministic pseudo-random bytes with NULs and invalid UTF-8 sequences.
    let mut state: u32 = 0x2545_f491;
    let mut bytes: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect();
    bytes[0] = 0xff;
    bytes[1] = 0x00;
    bytes[2] = 0xc3;
    bytes[3] = 0x28;
    sb.write_atomic("inbox/orders/blob.json", &bytes);

    sluice.expect_within(secs(15), "blob.json.error.json in .error/", || {
        sb.exists("inbox/orders/.error/blob.json.error.json")
    });
    assert_eq!(
        std::fs::read(sb.path("inbox/orders/.error/blob.json")).unwrap(),
        bytes,
        "kept unchanged"
    );
    let side = sidecar(&sb, "inbox/orders/.error/blob.json.error.json", "blob.json");
    assert_ne!(
        side["kind"], "contract",
        "unreadable input is not a contract violation: {side:#}"
    );
    assert_eq!(sb.count("inbox/orders/.rejected"), 0);
    assert_still_delivers(&mut sluice, &sb, "after-binary");
}

#[test]
fn file_over_max_size_goes_to_error_unread() {
    let sb = Sandbox::alone();
    sb.write("schemas/order.v1.json", ORDER_SCHEMA);
    let flow = ORDERS_FLOW.replace("@FAST@", &format!("{FAST_TRIGGER}\n    max_size: 1KiB"));
    sb.write("flows/orders.yaml", flow);
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("orders");

    // 200 MiB, sparse: cheap to make, expensive to read into memory.
    const SIZE: u64 = 200 * 1024 * 1024;
    let tmp = sb.path("inbox/orders/.big.json.writing");
    std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
    File::create(&tmp).unwrap().set_len(SIZE).unwrap();
    std::fs::rename(&tmp, sb.path("inbox/orders/big.json")).unwrap();
    let dropped = Instant::now();

    sluice.expect_within(secs(20), "big.json.error.json in .error/", || {
        sb.exists("inbox/orders/.error/big.json.error.json")
    });
    eprintln!("big.json set aside after {:?}", dropped.elapsed());
    assert_eq!(
        std::fs::metadata(sb.path("inbox/orders/.error/big.json"))
            .unwrap()
            .len(),
        SIZE,
        "the file is kept as it was"
    );
    let side = sidecar(&sb, "inbox/orders/.error/big.json.error.json", "big.json");
    assert_eq!(side["kind"], "trigger", "{side:#}");
    let msg = side["message"].as_str().unwrap();
    assert!(
        msg.contains("max_size"),
        "the message mentions max_size: {msg}"
    );

    // A small file is still fine.
    assert_still_delivers(&mut sluice, &sb, "small");

    let peak_kib = sluice.peak_rss_kib();
    eprintln!("peak RSS: {} MiB", peak_kib / 1024);
    assert!(
        peak_kib < 100 * 1024,
        "peak RSS {} KiB >= 100 MiB: the oversized file was read into memory",
        peak_kib
    );
}

const GOOD_FLOW: &str = r#"name: good
trigger:
  file:
    path: inbox/good
    glob: "*.json"
    @FAST@
steps:
  - set:
      seen: "`true`"
  - to: out
sinks:
  out:
    file: { path: outbox/good, name: "{{id}}.json" }
"#;

const BROKEN_YAML: &str =
    "name: broken\ntrigger:\n  file: { path: inbox/broken\nsteps:\n  - to: [out\n";

#[test]
fn malformed_flow_file_does_not_stop_other_flows() {
    let sb = Sandbox::new();
    sb.write("flows/good.yaml", GOOD_FLOW.replace("@FAST@", FAST_TRIGGER));
    sb.write("flows/broken.yaml", BROKEN_YAML);
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("good");

    sb.drop_json("inbox/good", "g-1.json", &json!({ "id": "g-1" }));
    let out = sluice.wait_json(&sb, "outbox/good/g-1.json", secs(15));
    assert_eq!(out, json!({ "id": "g-1", "seen": true }));
    sluice.assert_running();

    let log = sluice.log();
    assert!(
        !positions(&log, "flows/broken.yaml").is_empty(),
        "the log names the broken file with line:col:\n{}",
        tail(&log, 40)
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("flow ready") && has_flow(l, "broken")),
        "the broken flow must not be reported ready:\n{}",
        tail(&log, 40)
    );
}
