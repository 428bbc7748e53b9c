//! Unit tests of the EIP steps through the engine's own message path (no binary, no files):
//! dry runs as `tests:` see them, and live runs with holds, batches and a recording sink.

use crate::connector::{Outcome, Outgoing, Sink};
use crate::error::{ErrorKind, FlowError};
use crate::flow::CompiledFlow;
use crate::hold::{Batch, BatchTracker, HoldInner};
use crate::message::{Message, Meta};
use crate::steps::Control;
use crate::test_connectors::Stub;
use async_trait::async_trait;
use serde_json::{Value, json};
use sluice_flow::parse_flow;
use std::path::Path;
use std::sync::{Arc, Mutex};

type Written = Arc<Mutex<Vec<(String, Value)>>>;

struct Recording(String, Written);

#[async_trait]
impl Sink for Recording {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let value = out.payload.json().cloned().unwrap_or(Value::Null);
        if value.get("fail").is_some() {
            return Err(FlowError::permanent(ErrorKind::Sink, "refused"));
        }
        self.1.lock().unwrap().push((self.0.clone(), value));
        Ok(())
    }
    fn target(&self, _out: &mut Outgoing) -> Result<String, FlowError> {
        Ok(self.0.clone())
    }
}

fn flow(name: &str, steps: &str) -> (CompiledFlow, Written) {
    let yaml = format!(
        "name: {name}\ntrigger:\n  file: {{ path: inbox/{name} }}\nsteps:\n{steps}\nsinks:\n  out: {{ stdout: {{}} }}\n  other: {{ stdout: {{}} }}\n"
    );
    let loaded = parse_flow(Path::new("t.yaml"), yaml).unwrap_or_else(|d| panic!("{d}"));
    let written: Written = Arc::default();
    let compiled = crate::compile(
        &loaded,
        &crate::Folders::default(),
        &Stub(|name: &str| -> Arc<dyn Sink> {
            Arc::new(Recording(name.to_owned(), written.clone()))
        }),
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    (compiled, written)
}

fn message(flow: &str, payload: Value) -> Message {
    Message::new(flow, payload, Meta::new())
}

#[tokio::test]
async fn try_catch_restores_the_payload_and_exposes_the_error() {
    let (f, _) = flow(
        "tc",
        "  - try:\n      - set: { touched: \"`true`\" }\n      - transform: \"`5`\"\n      - set: { b: a }\n  - catch:\n      - set: { kind: \"meta('error.kind')\", step: \"meta('error.step')\" }\n  - to: out",
    );
    let mut done = f.execute(message("tc", json!({"a": 1}))).await.unwrap();
    let payload = done.payload.json().unwrap().clone();
    assert_eq!(
        payload.get("touched"),
        None,
        "the try's changes are undone: {payload}"
    );
    assert_eq!(payload["kind"], "transform");
    assert!(
        payload["step"].as_str().unwrap().contains("try"),
        "{payload}"
    );
}

#[tokio::test]
async fn a_dry_split_runs_every_child_and_a_dry_aggregate_completes_a_group_of_one() {
    let (f, _) = flow(
        "dry",
        "  - split: items\n  - aggregate: { size: 5, output: \"{n: length(@), first: [0]}\" }\n  - to: out",
    );
    let done = f
        .execute(message("dry", json!({"items": [1, 2, 3]})))
        .await
        .unwrap();
    assert_eq!(done.control, Control::Continue);
    assert_eq!(done.deliveries.len(), 3);
    let mut first = done.deliveries[2].payload.clone();
    assert_eq!(first.json().unwrap(), &json!({"n": 1, "first": 3}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_children_aggregate_back_when_their_batch_ends() {
    let (f, written) = flow(
        "agg",
        "  - split: lines\n  - aggregate: { key: k, end_of_batch: true, output: \"{k: [0].k, sum: sum([].v)}\" }\n  - to: out",
    );
    let f = Arc::new(f);
    let tracker = BatchTracker::new();
    let inputs = [
        json!({"lines": [{"k": "a", "v": 1}, {"k": "b", "v": 2}]}),
        json!({"lines": [{"k": "a", "v": 3}]}),
    ];
    let mut tasks = Vec::new();
    let batch = Batch::new(2);
    for input in inputs {
        let m = message("agg", input);
        let hold = HoldInner::new(None, &tracker, Some(batch));
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            f.process(m, false, Some(hold)).await
        }));
    }
    for t in tasks {
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), t)
            .await
            .expect("the batch ended and the groups completed")
            .unwrap();
        assert!(
            matches!(outcome, Some(Outcome::Delivered(_))),
            "{outcome:?}"
        );
    }
    let mut got: Vec<Value> = written
        .lock()
        .unwrap()
        .iter()
        .map(|w| w.1.clone())
        .collect();
    got.sort_by_key(|v| v["k"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        got,
        vec![json!({"k": "a", "sum": 4.0}), json!({"k": "b", "sum": 2.0})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_drops_a_duplicate_and_forgets_the_key_of_a_failed_message() {
    let (f, written) = flow("dd", "  - dedupe: { key: id }\n  - to: out");
    let run = |v: Value| {
        let f = &f;
        async move { f.process(message("dd", v), false, None).await }
    };
    assert!(matches!(
        run(json!({"id": 1})).await,
        Some(Outcome::Delivered(_))
    ));
    assert!(matches!(
        run(json!({"id": 1})).await,
        Some(Outcome::Filtered)
    ));
    assert!(matches!(
        run(json!({"id": 2, "fail": true})).await,
        Some(Outcome::Failed(_))
    ));
    assert!(
        matches!(run(json!({"id": 2})).await, Some(Outcome::Delivered(_))),
        "the failed message's key was removed"
    );
    assert_eq!(written.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_rejects_over_its_rate() {
    let (f, _) = flow(
        "th",
        "  - throttle: { rate: 1/h, on_rate: reject }\n  - to: out",
    );
    let first = f.process(message("th", json!({})), false, None).await;
    assert!(matches!(first, Some(Outcome::Delivered(_))));
    match f.process(message("th", json!({})), false, None).await {
        Some(Outcome::Failed(failure)) => assert_eq!(failure.error.kind, ErrorKind::Throttle),
        other => panic!("{other:?}"),
    }
}

async fn run_all(f: &Arc<CompiledFlow>, payloads: Vec<Value>) -> Vec<Option<Outcome>> {
    let tasks: Vec<_> = payloads
        .into_iter()
        .map(|p| {
            let f = f.clone();
            let name = f.name.clone();
            tokio::spawn(async move { f.process(message(&name, p), false, None).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        let done = tokio::time::timeout(std::time::Duration::from_secs(5), t)
            .await
            .expect("every member finished")
            .unwrap();
        out.push(done);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_completes_by_size_predicate_timeout_and_overflow() {
    let (f, written) = flow(
        "by",
        "  - aggregate: { key: k, size: 3, when: \"[?last] | length(@) > `0`\", timeout: 200ms, max_groups: 2, output: \"{k: [0].k, n: length(@), reason: '-'}\" }\n  - set: { reason: \"meta('aggregate.reason')\" }\n  - to: out",
    );
    let f = Arc::new(f);
    let outcomes = run_all(
        &f,
        vec![
            json!({"k": "size"}),
            json!({"k": "size"}),
            json!({"k": "size"}),
            json!({"k": "when", "last": true}),
            json!({"k": "slow"}),
        ],
    )
    .await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Some(Outcome::Delivered(_))))
    );
    let got: Vec<(String, Value)> = written
        .lock()
        .unwrap()
        .iter()
        .map(|(_, v)| (v["k"].as_str().unwrap().to_owned(), v.clone()))
        .collect();
    let reason = |k: &str| {
        got.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v["reason"].clone())
    };
    assert_eq!(reason("size"), Some(json!("size")));
    assert_eq!(reason("when"), Some(json!("when")));
    assert_eq!(reason("slow"), Some(json!("timeout")));

    // Two groups open at most: a third key completes the oldest at once.
    written.lock().unwrap().clear();
    let outcomes = run_all(
        &f,
        vec![json!({"k": "a"}), json!({"k": "b"}), json!({"k": "c"})],
    )
    .await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Some(Outcome::Delivered(_))))
    );
    let reasons: Vec<Value> = written
        .lock()
        .unwrap()
        .iter()
        .map(|(_, v)| v["reason"].clone())
        .collect();
    assert_eq!(reasons.len(), 3);
    assert_eq!(
        reasons.iter().filter(|r| **r == json!("overflow")).count(),
        1,
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_rejects_over_its_concurrency() {
    let (f, _) = flow(
        "tc2",
        "  - throttle: { concurrency: 1, on_concurrency: reject }\n  - call: tc2-slow\n  - to: out",
    );
    // The called flow is not running: the first message fails there, after passing the
    // throttle; the throttle's permit is back once it failed.
    let first = f.process(message("tc2", json!({})), false, None).await;
    match first {
        Some(Outcome::Failed(failure)) => assert!(failure.error.message.contains("not running")),
        other => panic!("{other:?}"),
    }
    let mut exec = crate::steps::Exec::new(
        crate::message::Payload::from_json(json!({})),
        Arc::new(Meta::new()),
    );
    let limits = Arc::new(crate::steps::throttle::Limits::new(
        None,
        Some((1, sluice_flow::OnLimit::Reject)),
    ));
    let step = crate::steps::throttle::Throttle::new("t", None, limits);
    use crate::steps::Step;
    assert_eq!(
        step.run(&mut exec).result().await.unwrap(),
        Control::Continue
    );
    let mut second = crate::steps::Exec::new(
        crate::message::Payload::from_json(json!({})),
        Arc::new(Meta::new()),
    );
    let err = step.run(&mut second).result().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Throttle);
    drop(exec);
    assert_eq!(
        step.run(&mut second).result().await.unwrap(),
        Control::Continue,
        "the permit came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_without_a_key_uses_a_hash_of_the_payload() {
    let (f, written) = flow("dh", "  - dedupe: { ttl: 1m }\n  - to: out");
    let run = |v: Value| {
        let f = &f;
        async move { f.process(message("dh", v), false, None).await }
    };
    assert!(matches!(
        run(json!({"a": 1})).await,
        Some(Outcome::Delivered(_))
    ));
    assert!(matches!(
        run(json!({"a": 1})).await,
        Some(Outcome::Filtered)
    ));
    assert!(matches!(
        run(json!({"a": 2})).await,
        Some(Outcome::Delivered(_))
    ));
    assert_eq!(written.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_completes_by_interval_while_members_keep_coming() {
    let (f, written) = flow(
        "iv",
        "  - aggregate: { interval: 300ms, output: \"{n: length(@)}\" }\n  - set: { reason: \"meta('aggregate.reason')\" }\n  - to: out",
    );
    let f = Arc::new(f);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let f2 = f.clone();
        tasks.push(tokio::spawn(async move {
            f2.process(message("iv", json!({})), false, None).await
        }));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for t in tasks {
        let done = tokio::time::timeout(std::time::Duration::from_secs(5), t)
            .await
            .expect("finished")
            .unwrap();
        assert!(matches!(done, Some(Outcome::Delivered(_))), "{done:?}");
    }
    let got: Vec<Value> = written
        .lock()
        .unwrap()
        .iter()
        .map(|w| w.1.clone())
        .collect();
    assert!(
        got.len() >= 2,
        "an inactivity timeout would never fire here: {got:?}"
    );
    assert!(got.iter().all(|v| v["reason"] == "interval"), "{got:?}");
    let total: u64 = got.iter().map(|v| v["n"].as_u64().unwrap()).sum();
    assert_eq!(total, 6);
}
