//! RabbitMQ end to end, against the broker on 127.0.0.1:5672: transform and republish with
//! publisher confirms, dead letters, requeue after a transient failure, SIGKILL of sluice.

use crate::support::*;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use std::collections::BTreeMap;

pub(crate) const AMQP_PORT: u16 = 5672;
pub(crate) const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A test-side RabbitMQ client (also used by `sink_declare`).
pub(crate) struct Amqp {
    rt: tokio::runtime::Runtime,
    _connection: Connection,
    channel: lapin::Channel,
}

impl Amqp {
    pub(crate) fn connect() -> Amqp {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (connection, channel) = rt.block_on(async {
            let connection = Connection::connect(URL, ConnectionProperties::default())
                .await
                .expect("connect to RabbitMQ");
            let channel = connection.create_channel().await.expect("channel");
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirm mode");
            (connection, channel)
        });
        Amqp {
            rt,
            _connection: connection,
            channel,
        }
    }

    pub(crate) fn declare(&self, queue: &str) {
        self.rt.block_on(async {
            self.channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("declare queue");
        });
    }

    /// The passive declare of `queue`: (ready messages, consumers). Any error — the queue is
    /// missing, the connection is gone — fails the test rather than reading as "empty".
    pub(crate) fn queue_state(&self, queue: &str) -> (u32, u32) {
        self.rt.block_on(async {
            self.channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map(|q| (q.message_count(), q.consumer_count()))
                .unwrap_or_else(|e| panic!("passive declare of queue {queue}: {e}"))
        })
    }

    /// Fails unless nothing is left in `queue`, neither ready nor unacknowledged. Checked once
    /// sluice's consumer is gone (its connection closed): RabbitMQ then has put every message
    /// sluice had not acknowledged back among the ready ones, so "none ready" means none at all.
    fn assert_empty(&self, queue: &str, what: &str) {
        let mut state = self.queue_state(queue);
        let gone = wait_until(secs(15), || {
            state = self.queue_state(queue);
            state.1 == 0
        });
        assert!(
            gone,
            "sluice's consumer of {queue} is still there 15 s after it stopped (ready, consumers): {state:?}"
        );
        assert_eq!(state.0, 0, "{what}: messages left in {queue}");
    }

    pub(crate) fn delete(&self, queue: &str) {
        self.rt.block_on(async {
            let _ = self
                .channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
        });
    }

    pub(crate) fn delete_exchange(&self, exchange: &str) {
        self.rt.block_on(async {
            let _ = self
                .channel
                .exchange_delete(exchange.into(), Default::default())
                .await;
        });
    }

    /// Publishes to the default exchange (routing key = queue) and waits for the confirm.
    pub(crate) fn publish(&self, queue: &str, id: &str, body: &Value) {
        let body = serde_json::to_vec(body).expect("serialize");
        self.publish_raw(queue, id, &body);
    }

    /// Like [`Amqp::publish`], with the body as it is (JSON or not).
    fn publish_raw(&self, queue: &str, id: &str, body: &[u8]) {
        self.rt.block_on(async {
            self.channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_message_id(id.into()),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
        });
    }

    /// Takes up to 200 ready messages out of `queue`: (message id, correlation id, body).
    pub(crate) fn drain(&self, queue: &str) -> Vec<(String, String, Value)> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            while out.len() < 200 {
                let got = self
                    .channel
                    .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap_or_else(|e| panic!("basic.get from queue {queue}: {e}"));
                let Some(got) = got else {
                    break;
                };
                let d = got.delivery;
                let id = d.properties.message_id().as_ref().map(|s| s.to_string());
                let corr = d
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|s| s.to_string());
                out.push((
                    id.unwrap_or_default(),
                    corr.unwrap_or_default(),
                    serde_json::from_slice(&d.data).unwrap_or(Value::Null),
                ));
            }
            out
        })
    }
}

const ORDER_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["id", "qty"],
  "properties": { "id": { "type": "string" }, "qty": { "type": "integer", "minimum": 1 } }
}"#;

#[test]
fn amqp_in_transform_out_with_dead_letter() {
    if !service_available("RabbitMQ", AMQP_PORT) {
        return;
    }
    let u = unique_name("amqp");
    let (inq, outq) = (format!("in_{u}"), format!("out_{u}"));
    let mq = Amqp::connect();
    mq.declare(&inq);
    mq.declare(&outq);
    let sb = Sandbox::new();
    sb.write("schemas/order.v1.json", ORDER_SCHEMA);
    sb.write(
        "flows/mq.yaml",
        format!(
            r#"name: mq
concurrency: 4
trigger:
  amqp: {{ url: "{URL}", queue: {inq} }}
contract: {{ input: order.v1 }}
steps:
  - transform: "{{id: id, qty: qty, queue: meta('amqp.queue'), redelivered: meta('amqp.redelivered')}}"
  - to: out
sinks:
  out:
    amqp: {{ url: "{URL}", routing_key: "{outq}" }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("amqp consumer ready", secs(30));
    for i in 0..20 {
        let id = format!("o-{i}");
        mq.publish(&inq, &id, &json!({ "id": id, "qty": i + 1 }));
    }
    mq.publish(&inq, "bad-1", &json!({ "id": "bad-1", "qty": 0 }));
    let mut out = Vec::new();
    sluice.expect_within(secs(30), "20 messages in the output queue", || {
        out.extend(mq.drain(&outq));
        out.len() >= 20
    });
    sluice.expect_within(secs(30), "one dead letter", || sb.count("dead-letter") == 1);
    // Stop sluice: anything it had not acknowledged would be back in the queue now.
    sluice.kill();
    mq.assert_empty(&inq, "every message, the refused one included, was acked");
    assert_eq!(out.len(), 20);
    let mut seen = BTreeMap::new();
    for (id, corr, body) in &out {
        assert_eq!(body["id"].as_str(), Some(id.as_str()));
        assert_eq!(corr, id);
        assert_eq!(body["queue"], inq.as_str());
        assert_eq!(body["redelivered"], "false");
        seen.insert(id.clone(), ());
    }
    assert_eq!(seen.len(), 20);
    let dead = sb.only_json("dead-letter");
    assert_eq!(dead["error"]["kind"], "contract");
    assert_eq!(dead["message"]["id"], "bad-1");
    mq.delete(&inq);
    mq.delete(&outq);
}

#[test]
fn amqp_transient_sink_failure_is_requeued_then_succeeds() {
    if !service_available("RabbitMQ", AMQP_PORT) {
        return;
    }
    let u = unique_name("amqpr");
    let (inq, lateq) = (format!("in_{u}"), format!("late_{u}"));
    let mq = Amqp::connect();
    mq.declare(&inq);
    let sb = Sandbox::new();
    sb.write(
        "flows/late.yaml",
        format!(
            r#"name: late
trigger:
  amqp: {{ url: "{URL}", queue: {inq}, requeue_delay: 300ms }}
steps:
  - set: {{ redelivered: "meta('amqp.redelivered')" }}
  - to: out
sinks:
  out:
    amqp: {{ url: "{URL}", routing_key: "{lateq}" }}
errors:
  retry: {{ attempts: 1 }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("amqp consumer ready", secs(30));
    mq.publish(&inq, "m-1", &json!({ "id": "m-1" }));
    // No queue is bound to the routing key yet: the message comes back, is requeued.
    sluice.wait_for_log("requeued in", secs(30));
    mq.declare(&lateq);
    let mut out = Vec::new();
    sluice.expect_within(secs(30), "the message arrives after the requeue", || {
        out.extend(mq.drain(&lateq));
        !out.is_empty()
    });
    assert_eq!(out[0].2["id"], "m-1");
    assert_eq!(out[0].2["redelivered"], "true");
    // A graceful stop settles every ack it owes; a SIGKILL right after the delivery could
    // race the ack on the wire and leave the (delivered) message to be redelivered.
    assert!(sluice.terminate(secs(15)).success());
    mq.assert_empty(&inq, "the requeued message was acked once delivered");
    mq.delete(&inq);
    mq.delete(&lateq);
}

#[test]
fn amqp_sigkill_of_sluice_loses_nothing() {
    if !service_available("RabbitMQ", AMQP_PORT) {
        return;
    }
    let u = unique_name("amqpk");
    let (inq, outq) = (format!("in_{u}"), format!("out_{u}"));
    let mq = Amqp::connect();
    mq.declare(&inq);
    mq.declare(&outq);
    const N: usize = 3000;
    for i in 0..N {
        mq.publish(
            &inq,
            &format!("m-{i}"),
            &json!({ "id": format!("m-{i}"), "n": i }),
        );
    }
    let sb = Sandbox::new();
    sb.write(
        "flows/fwd.yaml",
        format!(
            r#"name: fwd
concurrency: 8
trigger:
  amqp: {{ url: "{URL}", queue: {inq} }}
steps:
  - transform: "{{id: id, n: n}}"
  - to: out
sinks:
  out:
    amqp: {{ url: "{URL}", routing_key: "{outq}" }}
"#
        ),
    );
    let mut out = Vec::new();
    let mut first = Sluice::run(&sb);
    first.expect_within(secs(60), "the first outputs", || {
        out.extend(mq.drain(&outq));
        out.len() >= 300
    });
    first.kill();
    let at_kill = out.len();
    assert!(at_kill < N, "killed too late");
    let mut second = Sluice::run(&sb);
    let mut ids = BTreeMap::new();
    second.expect_within(secs(120), "every message arrives", || {
        out.extend(mq.drain(&outq));
        for (id, _, _) in out.drain(..) {
            *ids.entry(id).or_insert(0usize) += 1;
        }
        ids.len() >= N
    });
    let duplicates: usize = ids.values().map(|c| c - 1).sum();
    eprintln!("amqp sigkill: {N} messages, {at_kill} out at the kill, {duplicates} duplicates");
    assert_eq!(ids.len(), N);
    drop(second);
    mq.delete(&inq);
    mq.delete(&outq);
}

#[test]
fn amqp_undecodable_body_goes_to_the_dead_letter() {
    if !service_available("RabbitMQ", AMQP_PORT) {
        return;
    }
    let u = unique_name("amqpu");
    let (inq, outq) = (format!("in_{u}"), format!("out_{u}"));
    let mq = Amqp::connect();
    mq.declare(&inq);
    mq.declare(&outq);
    let sb = Sandbox::new();
    sb.write(
        "flows/mqu.yaml",
        format!(
            r#"name: mqu
trigger:
  amqp: {{ url: "{URL}", queue: {inq}, requeue_delay: 300ms }}
steps:
  - to: out
sinks:
  out:
    amqp: {{ url: "{URL}", routing_key: "{outq}" }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("amqp consumer ready", secs(30));
    mq.publish_raw(&inq, "bad-1", b"not json {");
    mq.publish(&inq, "good-1", &json!({ "id": "good-1", "n": 1 }));
    let mut out = Vec::new();
    sluice.expect_within(secs(30), "the good message in the output queue", || {
        out.extend(mq.drain(&outq));
        !out.is_empty()
    });
    sluice.expect_within(secs(30), "one dead letter", || sb.count("dead-letter") == 1);
    // Nothing comes back: no second failure, no second dead letter.
    std::thread::sleep(millis(1500));
    out.extend(mq.drain(&outq));
    assert_eq!(sb.count("dead-letter"), 1, "dead-lettered once");
    let log = sluice.log();
    assert_logged_once(
        &log,
        "message failed: trigger error: the body is not JSON",
        "mqu",
    );
    assert!(
        !log.contains("requeued in"),
        "the unreadable message is not requeued:\n{}",
        tail(&log, 30)
    );
    // Stop sluice: anything it had not acknowledged would be back in the queue now.
    sluice.kill();
    mq.assert_empty(&inq, "both messages were settled");
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, "good-1");
    assert_eq!(out[0].2, json!({ "id": "good-1", "n": 1 }));
    let dead = undecodable_dead_letter(&sb, "not json {", "not JSON");
    assert_eq!(dead["meta"]["message_id"], "bad-1", "{dead:#}");
    assert_eq!(dead["meta"]["amqp.queue"], inq.as_str(), "{dead:#}");
    mq.delete(&inq);
    mq.delete(&outq);
}
