//! Consumer lag where the broker can tell: `sluice_consumer_lag` and
//! `sluice_consumer_pending` rise while a slow flow works through a backlog, and fall back to
//! zero once it is done (Redis streams against 127.0.0.1:6379, RabbitMQ against 5672).

use crate::brokers_amqp::{Amqp, URL as AMQP_URL};
use crate::support::*;
use serde_json::json;

const BACKLOG: usize = 30;

/// Waits until the gauge `name` of `flow` satisfies `ok`.
fn gauge_until(
    sluice: &mut Sluice,
    ports: Ports,
    name: &str,
    flow: &str,
    ok: impl Fn(f64) -> bool,
) {
    let mut last = None;
    let seen = wait_until(secs(30), || {
        last = scrape(ports).value(name, &[("flow", flow)]);
        last.is_some_and(&ok)
    });
    assert!(
        seen,
        "{name}{{flow={flow}}} stayed {last:?}:\n{}",
        sluice.log_tail(20)
    );
}

fn slow_flow(name: &str, trigger: &str) -> String {
    format!(
        "name: {name}\nconcurrency: 1\ntrigger:\n  {trigger}\nsteps:\n  - to: out\nsinks:\n  out:\n    file: {{ path: outbox/{name}, name: \"{{{{n}}}}.json\" }}\n"
    )
}

#[test]
fn redis_group_lag_and_pending_are_metrics() {
    if !service_available("Redis", 6379) {
        return;
    }
    let stream = unique_name("lag-redis");
    let sb = Sandbox::new();
    sb.write(
        "flows/lagr.yaml",
        slow_flow(
            "lagr",
            &format!("redis: {{ stream: \"{stream}\", group: workers, batch: 1 }}"),
        ),
    );
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut c = client.get_connection().expect("redis");
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[("SLUICE_TEST_SINK_DELAY", "300ms")]);
    sluice.wait_ready("lagr");
    for n in 0..BACKLOG {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("payload")
            .arg(json!({"n": n}).to_string())
            .query(&mut c)
            .expect("XADD");
    }
    gauge_until(&mut sluice, ports, "sluice_consumer_lag", "lagr", |v| {
        v > 0.0
    });
    sluice.expect_within(secs(60), "the backlog delivered", || {
        sb.count("outbox/lagr") == BACKLOG
    });
    gauge_until(&mut sluice, ports, "sluice_consumer_lag", "lagr", |v| {
        v == 0.0
    });
    gauge_until(&mut sluice, ports, "sluice_consumer_pending", "lagr", |v| {
        v == 0.0
    });
    let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&stream).query(&mut c);
}

#[test]
fn amqp_queue_depth_is_the_lag() {
    if !service_available("RabbitMQ", 5672) {
        return;
    }
    let queue = unique_name("lag-amqp");
    let amqp = Amqp::connect();
    amqp.declare(&queue);
    let sb = Sandbox::new();
    sb.write(
        "flows/laga.yaml",
        slow_flow(
            "laga",
            &format!("amqp: {{ url: \"{AMQP_URL}\", queue: {queue}, prefetch: 1 }}"),
        ),
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[("SLUICE_TEST_SINK_DELAY", "300ms")]);
    sluice.wait_ready("laga");
    for n in 0..BACKLOG {
        amqp.publish(&queue, &format!("l-{n}"), &json!({"n": n}));
    }
    gauge_until(&mut sluice, ports, "sluice_consumer_lag", "laga", |v| {
        v > 0.0
    });
    sluice.expect_within(secs(60), "the backlog delivered", || {
        sb.count("outbox/laga") == BACKLOG
    });
    gauge_until(&mut sluice, ports, "sluice_consumer_lag", "laga", |v| {
        v == 0.0
    });
    amqp.delete(&queue);
}

#[test]
fn jetstream_pending_is_the_lag() {
    use crate::brokers_nats::{Js, NATS_PORT};
    if !service_available("NATS JetStream", NATS_PORT) {
        return;
    }
    let u = unique_name("lagjs");
    let stream = format!("IN_{u}");
    let js = Js::connect(NATS_PORT);
    js.create_stream(&stream, &[&format!("{u}.in")]);
    let sb = Sandbox::new();
    sb.write(
        "flows/lagn.yaml",
        slow_flow(
            "lagn",
            &format!(
                "nats: {{ stream: {stream}, subject: \"{u}.in\", durable: worker, batch: 1 }}"
            ),
        ),
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[("SLUICE_TEST_SINK_DELAY", "300ms")]);
    sluice.wait_ready("lagn");
    for n in 0..BACKLOG {
        js.publish(&format!("{u}.in"), &format!("l-{n}"), &json!({"n": n}));
    }
    gauge_until(&mut sluice, ports, "sluice_consumer_lag", "lagn", |v| {
        v > 0.0
    });
    sluice.expect_within(secs(60), "the backlog delivered", || {
        sb.count("outbox/lagn") == BACKLOG
    });
    gauge_until(&mut sluice, ports, "sluice_consumer_lag", "lagn", |v| {
        v == 0.0
    });
    gauge_until(&mut sluice, ports, "sluice_consumer_pending", "lagn", |v| {
        v == 0.0
    });
    js.delete_stream(&stream);
}
