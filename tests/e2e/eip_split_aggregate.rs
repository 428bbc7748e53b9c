//! `split` then `aggregate … end_of_batch`: 1,000 orders of an NDJSON file are split per line
//! and put back together per order id when the file has been read completely. The totals
//! equal the input's, the file is done only after every aggregate was written, and a SIGKILL
//! in the middle loses no aggregate.

use std::collections::BTreeMap;

use crate::support::*;

const FLOW: &str = r#"name: orders
concurrency: 4
trigger:
  file:
    path: inbox/orders
    glob: "*.ndjson"
    format: ndjson
    @FAST@
steps:
  - split: lines
  - aggregate:
      key: order_id
      end_of_batch: true
      output: "{order_id: [0].order_id, lines: length(@), qty: sum([].qty), cents: sum([].cents)}"
  - to: totals
sinks:
  totals:
    file: { path: outbox/totals, name: "{{order_id}}.json", fsync: @FSYNC@ }
"#;

/// 1,000 orders with 1 to 4 lines each; returns the file and the expected totals per order.
fn orders() -> (String, BTreeMap<String, (u64, u64, u64)>) {
    let mut text = String::new();
    let mut expected = BTreeMap::new();
    let mut seed: u64 = 7;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for i in 0..1000 {
        let id = format!("o-{i:04}");
        let count = 1 + next(4);
        let mut lines = Vec::new();
        let (mut qty, mut cents) = (0, 0);
        for l in 0..count {
            let q = 1 + next(9);
            let c = 1 + next(10_000);
            qty += q;
            cents += c;
            lines.push(json!({"order_id": id, "sku": format!("S{l}"), "qty": q, "cents": c}));
        }
        expected.insert(id.clone(), (count, qty, cents));
        text.push_str(&serde_json::to_string(&json!({"order_id": id, "lines": lines})).unwrap());
        text.push('\n');
    }
    (text, expected)
}

fn check_totals(sb: &Sandbox, expected: &BTreeMap<String, (u64, u64, u64)>) {
    let names = sb.names("outbox/totals");
    assert_eq!(
        names.len(),
        expected.len(),
        "one aggregate per order, no duplicates"
    );
    let (mut all_qty, mut all_cents) = (0, 0);
    for (id, (count, qty, cents)) in expected {
        let total = sb.read_json(&format!("outbox/totals/{id}.json"));
        assert_eq!(total["lines"].as_u64(), Some(*count), "{id}: {total}");
        assert_eq!(total["qty"].as_f64(), Some(*qty as f64), "{id}: {total}");
        assert_eq!(
            total["cents"].as_f64(),
            Some(*cents as f64),
            "{id}: {total}"
        );
        all_qty += total["qty"].as_f64().unwrap() as u64;
        all_cents += total["cents"].as_f64().unwrap() as u64;
    }
    let want_qty: u64 = expected.values().map(|v| v.1).sum();
    let want_cents: u64 = expected.values().map(|v| v.2).sum();
    assert_eq!((all_qty, all_cents), (want_qty, want_cents), "grand totals");
}

#[test]
fn split_then_aggregate_on_end_of_file_restores_every_order_before_the_file_is_done() {
    let sb = Sandbox::new();
    sb.write(
        "flows/orders.yaml",
        FLOW.replace("@FAST@", FAST_TRIGGER)
            .replace("@FSYNC@", "false"),
    );
    let (text, expected) = orders();
    let mut sluice = Sluice::run(&sb);
    sluice.wait_ready("orders");
    sb.write_atomic("inbox/orders/orders.ndjson", &text);
    let done = sb.path("inbox/orders/.done/orders.ndjson");
    sluice.expect_within(secs(90), "the file is done", || {
        if done.exists() {
            // Acknowledged only after every aggregate was written.
            assert_eq!(
                sb.count("outbox/totals"),
                1000,
                "the file was done before all aggregates were written"
            );
            true
        } else {
            false
        }
    });
    check_totals(&sb, &expected);
    assert_eq!(
        sb.count("inbox/orders/.error"),
        0,
        "{}",
        sluice.log_tail(30)
    );
    sluice.assert_running();
}

#[test]
fn sigkill_while_aggregating_then_restart_loses_no_aggregate() {
    let sb = Sandbox::new();
    // fsync makes the 1,000 writes slow enough to be killed among them.
    sb.write(
        "flows/orders.yaml",
        FLOW.replace("@FAST@", FAST_TRIGGER)
            .replace("@FSYNC@", "true"),
    );
    let (text, expected) = orders();
    let mut first = Sluice::run(&sb);
    first.wait_ready("orders");
    sb.write_atomic("inbox/orders/orders.ndjson", &text);
    let totals = sb.path("outbox/totals");
    first.expect_within(secs(90), "the first aggregates are written", || {
        count_files(&totals) >= 1
    });
    first.kill();
    let at_kill = count_files(&totals);
    eprintln!("killed with {at_kill} aggregates written");
    assert!(
        !sb.exists("inbox/orders/.done/orders.ndjson") || at_kill == 1000,
        "the file was done before all aggregates were written"
    );

    let mut second = Sluice::run(&sb);
    let done = sb.path("inbox/orders/.done/orders.ndjson");
    second.expect_within(secs(120), "the file is done after the restart", || {
        done.exists()
    });
    check_totals(&sb, &expected);
    assert_eq!(sb.count("inbox/orders/.inflight"), 0);
    second.assert_running();
}
