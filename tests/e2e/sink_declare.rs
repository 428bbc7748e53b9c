//! Sinks that create what they write to, on request, against the real RabbitMQ and NATS on
//! 127.0.0.1: `declare:` on the `amqp` sink (queue, exchange, binding) and `create_stream:` on
//! the `nats` sink, both idempotent across restarts; without them the error says what is
//! missing and shows the key that would create it.

use crate::brokers_amqp::{AMQP_PORT, Amqp, URL as AMQP_URL};
use crate::brokers_nats::{Js, NATS_PORT};
use crate::support::*;

/// An `http` flow publishing its body to the sink `out` (one attempt, failures kept).
fn http_to_sink(name: &str, sink: &str) -> String {
    format!(
        r#"name: {name}
trigger:
  http: {{ path: /{name}, method: POST }}
steps:
  - to: out
sinks:
  out:
{sink}
errors:
  retry: {{ attempts: 1 }}
  dead_letter_answered: true
  dead_letter: {{ file: {{ path: dead-letter/{name} }} }}
"#
    )
}

/// The dead-letter entry's error message, once there is exactly one.
fn dead_message(sluice: &mut Sluice, sb: &Sandbox, flow: &str) -> String {
    let dir = format!("dead-letter/{flow}");
    sluice.expect_within(secs(15), "a dead letter", || sb.count(&dir) == 1);
    sb.only_json(&dir)["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned()
}

#[test]
fn amqp_declare_creates_queue_exchange_and_binding_idempotently() {
    if !service_available("RabbitMQ", AMQP_PORT) {
        return;
    }
    let u = unique_name("decl");
    let (plain_q, bound_q, exchange, missing_q) = (
        format!("plain_{u}"),
        format!("bound_{u}"),
        format!("ex_{u}"),
        format!("missing_{u}"),
    );
    let mq = Amqp::connect();
    let sb = Sandbox::new();
    sb.write(
        "flows/plain.yaml",
        http_to_sink(
            "plain",
            &format!(
                "    amqp:\n      url: \"{AMQP_URL}\"\n      routing_key: {plain_q}\n      declare: {{ queue: {plain_q} }}"
            ),
        ),
    );
    sb.write(
        "flows/bound.yaml",
        http_to_sink(
            "bound",
            &format!(
                "    amqp:\n      url: \"{AMQP_URL}\"\n      exchange: {exchange}\n      routing_key: \"orders.{{{{region}}}}\"\n      declare: {{ queue: {bound_q}, binding_key: \"orders.#\", exchange_type: topic }}"
            ),
        ),
    );
    sb.write(
        "flows/missing.yaml",
        http_to_sink(
            "missing",
            &format!("    amqp:\n      url: \"{AMQP_URL}\"\n      routing_key: {missing_q}"),
        ),
    );
    for round in 0..2 {
        // The second round is a fresh process declaring what exists: nothing changes.
        let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
        for flow in ["plain", "bound", "missing"] {
            sluice.wait_ready(flow);
        }
        sluice.wait_listener(ports);
        let id = format!("r{round}");
        let r = post_json(ports.listen, "/plain", &[], &json!({ "id": id }));
        assert_eq!(r.status, 200, "{r}\n{}", sluice.log_tail(20));
        for region in ["eu", "us"] {
            let r = post_json(
                ports.listen,
                "/bound",
                &[],
                &json!({ "id": id, "region": region }),
            );
            assert_eq!(r.status, 200, "{r}\n{}", sluice.log_tail(20));
        }
        let plain = mq.drain(&plain_q);
        assert_eq!(plain.len(), 1, "{plain:?}");
        assert_eq!(plain[0].2["id"], id.as_str());
        let bound = mq.drain(&bound_q);
        let regions: Vec<&str> = bound
            .iter()
            .map(|m| m.2["region"].as_str().unwrap())
            .collect();
        assert_eq!(
            regions,
            ["eu", "us"],
            "both keys match `orders.#`: {bound:?}"
        );
        sluice.kill();
    }

    // Without `declare:`, the returned message's error names the fix.
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("missing");
    sluice.wait_listener(ports);
    let r = post_json(ports.listen, "/missing", &[], &json!({ "id": "m-1" }));
    assert_eq!(r.status, 500, "{r}");
    let message = dead_message(&mut sluice, &sb, "missing");
    assert!(
        message.contains(&format!(
            "no queue is bound to exchange `` for routing key `{missing_q}`"
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("declare: {{ queue: \"{missing_q}\" }}")),
        "shows the key that would create it: {message}"
    );
    sluice.kill();
    mq.delete(&plain_q);
    mq.delete(&bound_q);
    mq.delete_exchange(&exchange);
}

/// `sluice check` on a flow with this sink refuses it, at the line of `key`, saying `needle`.
fn refused_at(sink: &str, key: &str, needle: &str) {
    let sb = Sandbox::new();
    let flow = http_to_sink("refused", sink);
    sb.write("flows/refused.yaml", &flow);
    let out = sb.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = line_of(&flow, key);
    assert!(
        out.all().contains(&format!("refused.yaml:{line}:")),
        "the error is at the line of `{key}`: {}",
        out.all()
    );
    assert!(out.all().contains(needle), "{}", out.all());
}

#[test]
fn amqp_declare_mistakes_are_load_errors() {
    refused_at(
        "    amqp:\n      exchange: orders\n      routing_key: \"orders.{{region}}\"\n      declare: { queue: all-orders }",
        "declare:",
        "needs a `binding_key`",
    );
    refused_at(
        "    amqp:\n      routing_key: orders\n      declare: { queue: other }",
        "declare:",
        "the routing key is the queue name",
    );
}

#[test]
fn nats_create_stream_makes_the_stream_once_and_its_absence_is_explained() {
    if !service_available("NATS JetStream", NATS_PORT) {
        return;
    }
    let u = unique_name("cs");
    let (stream, subject, missing) = (
        format!("CS_{u}").replace('-', "_"),
        format!("made.{u}"),
        format!("nowhere.{u}"),
    );
    let js = Js::connect(NATS_PORT);
    let sb = Sandbox::new();
    sb.write(
        "flows/made.yaml",
        http_to_sink(
            "made",
            &format!(
                "    nats:\n      subject: \"{subject}.{{{{kind}}}}\"\n      create_stream:\n        name: {stream}\n        subjects: [\"{subject}.>\"]\n        retention: workqueue\n        max_age: 1h"
            ),
        ),
    );
    sb.write(
        "flows/missing.yaml",
        http_to_sink("missing", &format!("    nats:\n      subject: {missing}")),
    );
    for round in 0..2 {
        let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
        sluice.wait_ready("made");
        sluice.wait_listener(ports);
        let r = post_json(
            ports.listen,
            "/made",
            &[],
            &json!({ "id": format!("r{round}"), "kind": "a" }),
        );
        assert_eq!(r.status, 200, "{r}\n{}", sluice.log_tail(20));
        sluice.kill();
    }
    assert_eq!(
        js.count(&stream),
        2,
        "one stream, both rounds' messages in it"
    );
    let config = js.rt.block_on(async {
        let mut s = js.js.get_stream(&stream).await.expect("the stream exists");
        s.info().await.expect("stream info").config.clone()
    });
    assert_eq!(config.subjects, [format!("{subject}.>")]);
    assert_eq!(
        config.retention,
        async_nats::jetstream::stream::RetentionPolicy::WorkQueue
    );
    assert_eq!(config.max_age, std::time::Duration::from_secs(3600));

    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    sluice.wait_ready("missing");
    sluice.wait_listener(ports);
    let r = post_json(ports.listen, "/missing", &[], &json!({ "id": "m-1" }));
    assert_eq!(r.status, 500, "{r}");
    let message = dead_message(&mut sluice, &sb, "missing");
    assert!(
        message.contains(&format!("no JetStream stream captures subject `{missing}`")),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "create_stream: {{ name: STREAM, subjects: [\"{missing}\"] }}"
        )),
        "shows the key that would create it: {message}"
    );
    sluice.kill();
    js.delete_stream(&stream);
}

#[test]
fn nats_create_stream_mistakes_are_load_errors() {
    refused_at(
        "    nats:\n      subject: \"orders.{{kind}}\"\n      create_stream: { name: ORDERS }",
        "create_stream:",
        "needs `subjects`",
    );
    refused_at(
        "    nats:\n      subject: orders\n      jetstream: false\n      create_stream: { name: ORDERS }",
        "create_stream:",
        "`create_stream` needs JetStream",
    );
}
