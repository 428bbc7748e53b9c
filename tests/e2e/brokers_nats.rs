//! NATS JetStream end to end, against the NATS server on 127.0.0.1:4222 and private
//! `nats-server` processes: transform and republish, dead letters, redelivery after a
//! transient failure, broker restart, SIGKILL of sluice, and channels over both backends.

use crate::support::*;
use async_nats::jetstream::{self, stream};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

pub(crate) const NATS_PORT: u16 = 4222;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A test-side JetStream client (also used by `sink_declare`).
pub(crate) struct Js {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) js: jetstream::Context,
}

impl Js {
    pub(crate) fn connect(port: u16) -> Js {
        let rt = runtime();
        let js = rt.block_on(async {
            let client = async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .connect(format!("nats://127.0.0.1:{port}"))
                .await
                .expect("connect to NATS");
            jetstream::new(client)
        });
        Js { rt, js }
    }

    pub(crate) fn create_stream(&self, name: &str, subjects: &[&str]) {
        self.rt.block_on(async {
            self.js
                .get_or_create_stream(stream::Config {
                    name: name.to_owned(),
                    subjects: subjects.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                })
                .await
                .expect("create stream");
        });
    }

    pub(crate) fn delete_stream(&self, name: &str) {
        self.rt.block_on(async {
            let _ = self.js.delete_stream(name).await;
        });
    }

    /// Publishes with `Nats-Msg-Id: id`, retrying until JetStream acknowledges it.
    pub(crate) fn publish(&self, subject: &str, id: &str, body: &Value) {
        let body = serde_json::to_vec(body).expect("serialize");
        self.publish_raw(subject, id, &body);
    }

    /// Like [`Js::publish`], with the body as it is (JSON or not).
    fn publish_raw(&self, subject: &str, id: &str, body: &[u8]) {
        self.rt.block_on(async {
            for _ in 0..200 {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", id);
                let sent = self
                    .js
                    .publish_with_headers(subject.to_owned(), headers, body.to_vec().into())
                    .await;
                if let Ok(ack) = sent
                    && ack.await.is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("could not publish {id} to {subject}");
        });
    }

    /// Every message in `stream` (headers flattened, body as JSON); empty when it is missing.
    pub(crate) fn read_all(&self, stream_name: &str) -> Vec<(BTreeMap<String, String>, Value)> {
        self.rt.block_on(async {
            let Ok(mut stream) = self.js.get_stream(stream_name).await else {
                return Vec::new();
            };
            let Ok(info) = stream.info().await else {
                return Vec::new();
            };
            let (first, last) = (info.state.first_sequence, info.state.last_sequence);
            let mut out = Vec::new();
            if info.state.messages == 0 {
                return out;
            }
            for seq in first..=last {
                let Ok(raw) = stream.get_raw_message(seq).await else {
                    continue;
                };
                let mut headers = BTreeMap::new();
                for (k, v) in raw.headers.iter() {
                    if let Some(v) = v.first() {
                        headers.insert(k.to_string(), v.to_string());
                    }
                }
                let body = serde_json::from_slice(&raw.payload).unwrap_or(Value::Null);
                out.push((headers, body));
            }
            out
        })
    }

    /// Every body in `stream`, as it is.
    fn read_bodies(&self, stream_name: &str) -> Vec<Vec<u8>> {
        self.rt.block_on(async {
            let Ok(mut stream) = self.js.get_stream(stream_name).await else {
                return Vec::new();
            };
            let Ok(info) = stream.info().await else {
                return Vec::new();
            };
            let mut out = Vec::new();
            if info.state.messages == 0 {
                return out;
            }
            for seq in info.state.first_sequence..=info.state.last_sequence {
                if let Ok(raw) = stream.get_raw_message(seq).await {
                    out.push(raw.payload.to_vec());
                }
            }
            out
        })
    }

    pub(crate) fn count(&self, stream_name: &str) -> u64 {
        self.rt.block_on(async {
            match self.js.get_stream(stream_name).await {
                Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
                Err(_) => 0,
            }
        })
    }

    /// (pending, ack pending) of a durable consumer.
    fn consumer_backlog(&self, stream_name: &str, durable: &str) -> Option<(u64, usize)> {
        self.rt.block_on(async {
            let stream = self.js.get_stream(stream_name).await.ok()?;
            let mut consumer: jetstream::consumer::PullConsumer =
                stream.get_consumer(durable).await.ok()?;
            let info = consumer.info().await.ok()?;
            Some((info.num_pending, info.num_ack_pending))
        })
    }
}

/// The `id`s in a stream's message bodies, with how many times each occurs.
fn ids(messages: &[(BTreeMap<String, String>, Value)]) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for (_, body) in messages {
        if let Some(id) = body["id"].as_str() {
            *ids.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    ids
}

const ORDER_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["id", "qty"],
  "properties": { "id": { "type": "string" }, "qty": { "type": "integer", "minimum": 1 } }
}"#;

#[test]
fn jetstream_in_transform_out_with_dead_letter() {
    if !service_available("NATS JetStream", NATS_PORT) {
        return;
    }
    let u = unique_name("js");
    let js = Js::connect(NATS_PORT);
    let (in_stream, out_stream) = (format!("IN_{u}"), format!("OUT_{u}"));
    js.create_stream(&out_stream, &[&format!("{u}.out.>")]);
    let sb = Sandbox::new();
    sb.write("schemas/order.v1.json", ORDER_SCHEMA);
    sb.write(
        "flows/js.yaml",
        format!(
            r#"name: js
trigger:
  nats: {{ stream: {in_stream}, subject: "{u}.in", durable: worker }}
contract: {{ input: order.v1 }}
steps:
  - transform: "{{id: id, qty: qty, double: qty, subject: meta('nats.subject'), delivered: meta('nats.delivered')}}"
  - to: out
sinks:
  out:
    nats: {{ subject: "{u}.out.{{{{id}}}}" }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("nats consumer ready", secs(30));
    for i in 0..20 {
        let id = format!("o-{i}");
        js.publish(&format!("{u}.in"), &id, &json!({ "id": id, "qty": i + 1 }));
    }
    js.publish(
        &format!("{u}.in"),
        "bad-1",
        &json!({ "id": "bad-1", "qty": "many" }),
    );

    sluice.expect_within(secs(30), "20 messages in the output stream", || {
        js.count(&out_stream) >= 20
    });
    sluice.expect_within(secs(30), "one dead letter", || sb.count("dead-letter") == 1);
    // Everything, the contract violation included, is acknowledged at the source.
    sluice.expect_within(secs(30), "the consumer has no backlog", || {
        js.consumer_backlog(&in_stream, "worker") == Some((0, 0))
    });

    let out = js.read_all(&out_stream);
    assert_eq!(out.len(), 20, "{out:?}");
    for (headers, body) in &out {
        let id = body["id"].as_str().expect("id");
        assert_eq!(body["subject"], format!("{u}.in"));
        assert_eq!(body["qty"], body["double"]);
        assert_eq!(body["delivered"], "1");
        // The message id travels with the message; the correlation id too.
        assert_eq!(
            headers.get("Sluice-Message-Id").map(String::as_str),
            Some(id)
        );
        assert_eq!(
            headers.get("Sluice-Correlation-Id").map(String::as_str),
            Some(id)
        );
    }
    assert_eq!(ids(&out).len(), 20);
    let dead = sb.only_json("dead-letter");
    assert_eq!(dead["error"]["kind"], "contract");
    assert_eq!(dead["message"]["id"], "bad-1");
    assert_eq!(dead["meta"]["message_id"], "bad-1");
    drop(sluice);
    js.delete_stream(&in_stream);
    js.delete_stream(&out_stream);
}

#[test]
fn jetstream_transient_sink_failure_is_redelivered_then_succeeds() {
    if !service_available("NATS JetStream", NATS_PORT) {
        return;
    }
    let u = unique_name("jsr");
    let js = Js::connect(NATS_PORT);
    let (in_stream, late_stream) = (format!("IN_{u}"), format!("LATE_{u}"));
    let sb = Sandbox::new();
    // No retries inside sluice and no dead letter: a failed write is `nak`ed and JetStream
    // redelivers it.
    sb.write(
        "flows/late.yaml",
        format!(
            r#"name: late
trigger:
  nats: {{ stream: {in_stream}, subject: "{u}.in", durable: worker, nak_delay: 300ms, max_deliver: 100 }}
steps:
  - set: {{ delivered: "meta('nats.delivered')" }}
  - to: out
sinks:
  out:
    nats: {{ subject: "{u}.late", timeout: 1s }}
errors:
  retry: {{ attempts: 1 }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("nats consumer ready", secs(30));
    js.publish(&format!("{u}.in"), "m-1", &json!({ "id": "m-1" }));
    // The output stream does not exist yet: the publish is refused, the message nak'ed.
    sluice.wait_for_log("nak, redelivery in", secs(30));
    js.create_stream(&late_stream, &[&format!("{u}.late")]);
    sluice.expect_within(secs(30), "the message arrives after redelivery", || {
        js.count(&late_stream) == 1
    });
    let out = js.read_all(&late_stream);
    let delivered: u32 = out[0].1["delivered"].as_str().unwrap().parse().unwrap();
    assert!(delivered >= 2, "delivered on attempt {delivered}");
    sluice.expect_within(secs(30), "the consumer has no backlog", || {
        js.consumer_backlog(&in_stream, "worker") == Some((0, 0))
    });
    drop(sluice);
    js.delete_stream(&in_stream);
    js.delete_stream(&late_stream);
}

fn forward_flow(url: &str, in_stream: &str, u: &str) -> String {
    format!(
        r#"name: fwd
concurrency: 8
trigger:
  nats: {{ url: "{url}", stream: {in_stream}, subject: "{u}.in", durable: fwd }}
steps:
  - transform: "{{id: id, n: n, seen: `true`}}"
  - to: out
sinks:
  out:
    nats: {{ url: "{url}", subject: "{u}.out" }}
errors:
  retry: {{ attempts: 10, backoff: 100ms, max_backoff: 2s }}
"#
    )
}

#[test]
fn jetstream_broker_restart_loses_nothing() {
    if !program_available("nats-server") {
        return;
    }
    let port = free_port();
    let store = tempfile::tempdir().expect("store dir");
    let mut server = Server::start(
        "nats-server",
        &[
            "-js".into(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-sd".into(),
            store.path().display().to_string(),
        ],
        port,
    );
    let u = unique_name("jsb");
    let url = format!("nats://127.0.0.1:{port}");
    let js = Js::connect(port);
    let (in_stream, out_stream) = (format!("IN_{u}"), format!("OUT_{u}"));
    js.create_stream(&in_stream, &[&format!("{u}.in")]);
    js.create_stream(&out_stream, &[&format!("{u}.out")]);
    let sb = Sandbox::new();
    sb.write("flows/fwd.yaml", forward_flow(&url, &in_stream, &u));
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("nats consumer ready", secs(30));
    const N: usize = 600;
    for i in 0..N / 2 {
        js.publish(
            &format!("{u}.in"),
            &format!("m-{i}"),
            &json!({ "id": format!("m-{i}"), "n": i }),
        );
    }
    sluice.expect_within(secs(30), "the first outputs", || {
        js.count(&out_stream) >= 50
    });
    server.kill();
    std::thread::sleep(millis(500));
    server.restart();
    let js = Js::connect(port);
    for i in N / 2..N {
        js.publish(
            &format!("{u}.in"),
            &format!("m-{i}"),
            &json!({ "id": format!("m-{i}"), "n": i }),
        );
    }
    sluice.expect_within(secs(90), "every message arrives", || {
        js.count(&out_stream) as usize >= N && ids(&js.read_all(&out_stream)).len() == N
    });
    let out = ids(&js.read_all(&out_stream));
    assert_eq!(out.len(), N);
    let duplicates: usize = out.values().map(|c| c - 1).sum();
    eprintln!("broker restart: {N} messages, {duplicates} duplicates");
    sluice.assert_running();
}

#[test]
fn jetstream_sigkill_of_sluice_loses_nothing() {
    if !service_available("NATS JetStream", NATS_PORT) {
        return;
    }
    let u = unique_name("jsk");
    let url = format!("nats://127.0.0.1:{NATS_PORT}");
    let js = Js::connect(NATS_PORT);
    let (in_stream, out_stream) = (format!("IN_{u}"), format!("OUT_{u}"));
    js.create_stream(&in_stream, &[&format!("{u}.in")]);
    js.create_stream(&out_stream, &[&format!("{u}.out")]);
    const N: usize = 3000;
    for i in 0..N {
        js.publish(
            &format!("{u}.in"),
            &format!("m-{i}"),
            &json!({ "id": format!("m-{i}"), "n": i }),
        );
    }
    let sb = Sandbox::new();
    sb.write("flows/fwd.yaml", forward_flow(&url, &in_stream, &u));
    let mut first = Sluice::run(&sb);
    first.expect_within(secs(60), "the first outputs", || {
        js.count(&out_stream) >= 300
    });
    first.kill();
    let at_kill = js.count(&out_stream);
    assert!(
        (at_kill as usize) < N,
        "killed too late: everything was already out"
    );
    let mut second = Sluice::run(&sb);
    second.expect_within(secs(120), "every message arrives", || {
        js.count(&out_stream) as usize >= N && ids(&js.read_all(&out_stream)).len() == N
    });
    let out = ids(&js.read_all(&out_stream));
    let duplicates: usize = out.values().map(|c| c - 1).sum();
    eprintln!("sigkill: {N} messages, {at_kill} out at the kill, {duplicates} duplicates");
    assert_eq!(out.len(), N);
    drop(second);
    js.delete_stream(&in_stream);
    js.delete_stream(&out_stream);
}

const PIPELINE_A: &str = r#"name: intake
trigger:
  file: { path: inbox, min_age: 50ms, check_interval: 50ms, stable_checks: 1 }
steps:
  - set: { stage: "'intake'" }
  - to: next
sinks:
  next:
    channel: { name: @CH@ }
"#;

const PIPELINE_B: &str = r#"name: pricing
trigger:
  channel: { name: @CH@ }
steps:
  - set: { priced: "`true`", via: "meta('channel.name')", origin: "meta('correlation_id')" }
  - to: out
sinks:
  out:
    file: { path: outbox, name: "{{id}}.json" }
"#;

fn run_pipeline(sb: &Sandbox, channel: &str) {
    sb.write("flows/a.yaml", PIPELINE_A.replace("@CH@", channel));
    sb.write("flows/b.yaml", PIPELINE_B.replace("@CH@", channel));
    let mut sluice = Sluice::run(sb);
    sluice.wait_ready("intake");
    sluice.wait_ready("pricing");
    for i in 0..25 {
        sb.drop_json(
            "inbox",
            &format!("p-{i}.json"),
            &json!({ "id": format!("p-{i}") }),
        );
    }
    sluice.expect_within(secs(60), "25 outputs", || sb.count("outbox") == 25);
    sluice.expect_within(secs(30), "25 inputs done", || sb.count("inbox/.done") == 25);
    let out = sb.read_json("outbox/p-7.json");
    assert_eq!(out["stage"], "intake");
    assert_eq!(out["priced"], true);
    assert_eq!(out["via"], channel);
    assert!(out["origin"].is_string());
}

#[test]
fn channel_pipeline_in_process() {
    let sb = Sandbox::new();
    run_pipeline(&sb, "orders");
}

#[test]
fn channel_pipeline_over_jetstream_with_identical_flows() {
    if !service_available("NATS JetStream", NATS_PORT) {
        return;
    }
    let channel = unique_name("ch");
    let sb = Sandbox::new();
    sb.write(
        "sluice.yaml",
        format!("channels: {{ backend: nats, url: \"nats://127.0.0.1:{NATS_PORT}\" }}\n"),
    );
    run_pipeline(&sb, &channel);
    let js = Js::connect(NATS_PORT);
    // The channel really was a JetStream stream.
    assert_eq!(js.count(&format!("SLUICE_CH_{channel}")), 25);
    js.delete_stream(&format!("SLUICE_CH_{channel}"));
}

#[test]
fn nats_undecodable_body_goes_to_the_dead_letter() {
    if !service_available("NATS JetStream", NATS_PORT) {
        return;
    }
    let u = unique_name("jsu");
    let js = Js::connect(NATS_PORT);
    let (in_stream, out_stream) = (format!("IN_{u}"), format!("OUT_{u}"));
    js.create_stream(&out_stream, &[&format!("{u}.out")]);
    let sb = Sandbox::new();
    // A short `ack_wait`: a message left unacknowledged would be redelivered within the test.
    sb.write(
        "flows/jsu.yaml",
        format!(
            r#"name: jsu
trigger:
  nats: {{ stream: {in_stream}, subject: "{u}.in", durable: worker, ack_wait: 1s, nak_delay: 300ms }}
steps:
  - to: out
sinks:
  out:
    nats: {{ subject: "{u}.out" }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("nats consumer ready", secs(30));
    js.publish_raw(&format!("{u}.in"), "bad-1", b"not json {");
    js.publish(
        &format!("{u}.in"),
        "good-1",
        &json!({ "id": "good-1", "n": 1 }),
    );
    sluice.expect_within(secs(30), "the good message in the output stream", || {
        js.count(&out_stream) >= 1
    });
    sluice.expect_within(secs(30), "one dead letter", || sb.count("dead-letter") == 1);
    sluice.expect_within(secs(30), "the consumer has no backlog", || {
        js.consumer_backlog(&in_stream, "worker") == Some((0, 0))
    });
    // Past `ack_wait`: nothing is delivered again.
    std::thread::sleep(millis(2000));
    assert_eq!(
        js.consumer_backlog(&in_stream, "worker"),
        Some((0, 0)),
        "both messages were acknowledged"
    );
    assert_eq!(sb.count("dead-letter"), 1, "dead-lettered once");
    let out = js.read_all(&out_stream);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].1, json!({ "id": "good-1", "n": 1 }));
    let log = sluice.log();
    assert_logged_once(
        &log,
        "message failed: trigger error: the body is not JSON",
        "jsu",
    );
    let dead = undecodable_dead_letter(&sb, "not json {", "not JSON");
    assert_eq!(dead["meta"]["message_id"], "bad-1", "{dead:#}");
    assert_eq!(dead["meta"]["nats.subject"], format!("{u}.in"), "{dead:#}");
    drop(sluice);
    js.delete_stream(&in_stream);
    js.delete_stream(&out_stream);
}

#[test]
fn nats_xml_in_transform_xml_out_and_a_dtd_to_the_dead_letter() {
    if !service_available("NATS JetStream", NATS_PORT) {
        return;
    }
    let u = unique_name("jsx");
    let js = Js::connect(NATS_PORT);
    let (in_stream, out_stream) = (format!("IN_{u}"), format!("OUT_{u}"));
    js.create_stream(&in_stream, &[&format!("{u}.in")]);
    js.create_stream(&out_stream, &[&format!("{u}.out")]);
    let sb = Sandbox::new();
    sb.write(
        "flows/jsx.yaml",
        format!(
            r#"name: jsx
trigger:
  nats: {{ stream: {in_stream}, subject: "{u}.in", durable: worker, format: xml }}
steps:
  - transform: "{{Priced: {{\"@id\": Order.\"@id\", total: Order.total}}}}"
  - to: out
sinks:
  out:
    nats: {{ subject: "{u}.out", format: xml }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("nats consumer ready", secs(30));
    js.publish_raw(
        &format!("{u}.in"),
        "x-1",
        b"<Order id=\"o-1\"><total>9.50</total><note>n</note></Order>",
    );
    js.publish_raw(
        &format!("{u}.in"),
        "x-bad",
        b"<!DOCTYPE o [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><o>&e;</o>",
    );
    sluice.expect_within(secs(30), "the XML message in the output stream", || {
        js.count(&out_stream) >= 1
    });
    sluice.expect_within(secs(30), "one dead letter", || sb.count("dead-letter") == 1);
    let bodies = js.read_bodies(&out_stream);
    assert_eq!(bodies.len(), 1);
    let text = String::from_utf8(bodies[0].clone()).unwrap();
    assert!(
        text.contains("<Priced id=\"o-1\"><total>9.50</total></Priced>"),
        "{text}"
    );
    let dead = undecodable_dead_letter(
        &sb,
        "<!DOCTYPE o [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><o>&e;</o>",
        "DOCTYPE",
    );
    assert_eq!(dead["meta"]["message_id"], "x-bad", "{dead:#}");
    drop(sluice);
    js.delete_stream(&in_stream);
    js.delete_stream(&out_stream);
}
