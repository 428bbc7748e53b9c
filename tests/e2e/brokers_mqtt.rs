//! MQTT end to end, against the Mosquitto broker on 127.0.0.1:1883 and private `mosquitto`
//! processes: transform and republish with dead letters, redelivery after a transient failure,
//! the persistent session across a stop, SIGKILL of sluice and broker restart. Bad bodies and
//! load errors are in brokers_mqtt_bad_input.rs, TLS in brokers_mqtt_tls.rs.
//!
//! Every test uses its own topics (`sluice-test/<unique>/…`) and its own session client id;
//! the test-side clients use clean sessions, and each test ends sluice's persistent session
//! with a clean-session connect under the same id once sluice has stopped.

use crate::support::mosquitto::{Mosquitto, mosquitto_installed};
use crate::support::mqtt::*;
use crate::support::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const ORDER_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["id", "region", "qty"],
  "properties": {
    "id": { "type": "string" },
    "region": { "type": "string" },
    "qty": { "type": "integer", "minimum": 1 }
  }
}"#;

const REGIONS: [&str; 3] = ["eu", "us", "apac"];

#[test]
fn mqtt_in_transform_out_with_dead_letter() {
    if !service_available("Mosquitto", MQTT_PORT) {
        return;
    }
    let TestNames {
        prefix,
        client_id,
        session: _session,
    } = TestNames::new(MQTT_PORT, "mq");
    let sub = Mqtt::connect(MQTT_PORT);
    sub.subscribe(&format!("{prefix}/out/#"));
    let mut publisher = Mqtt::connect(MQTT_PORT);
    let sb = Sandbox::new();
    sb.write("schemas/order.v1.json", ORDER_SCHEMA);
    sb.write(
        "flows/mq.yaml",
        format!(
            r#"name: mq
concurrency: 4
trigger:
  mqtt:
    url: "{url}"
    topics: ["{prefix}/in/+"]
    client_id: "{client_id}"
contract: {{ input: order.v1 }}
steps:
  - set:
      source: "meta('mqtt.topic')"
      qos: "meta('mqtt.qos')"
      retain: "meta('mqtt.retain')"
      dup: "meta('mqtt.dup')"
  - to: out
sinks:
  out:
    mqtt:
      url: "{url}"
      topic: "{prefix}/out/{{{{ region }}}}"
      timeout: 5s
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#,
            url = url(MQTT_PORT)
        ),
    );
    let mut sluice = Sluice::run(&sb);
    let ready = wait_session(&mut sluice, "mq");
    assert!(
        has_field(&ready, "client_id", &client_id),
        "the session line names the client id: {ready}"
    );
    const N: usize = 200;
    for i in 0..N {
        let region = REGIONS[i % REGIONS.len()];
        publisher.publish_json(
            &format!("{prefix}/in/{region}"),
            &json!({ "id": format!("o-{i}"), "region": region, "qty": i + 1 }),
        );
    }
    publisher.publish_json(
        &format!("{prefix}/in/eu"),
        &json!({ "id": "bad-1", "region": "eu", "qty": 0 }),
    );
    publisher.flush();
    sluice.expect_within(secs(60), "200 messages on the output topics", || {
        sub.count() >= N
    });
    sluice.expect_within(secs(30), "one dead letter", || sb.count("dead-letter") == 1);

    let out = sub.received();
    assert_eq!(out.len(), N, "exactly {N} outputs");
    let mut seen = BTreeMap::new();
    for (topic, body) in &out {
        let id = body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("output without id on {topic}: {body}"));
        let i: usize = id.trim_start_matches("o-").parse().expect("o-<n>");
        let region = REGIONS[i % REGIONS.len()];
        assert_eq!(
            topic,
            &format!("{prefix}/out/{region}"),
            "{id}: topic template"
        );
        assert_ne!(body["dup"], "true", "{id}: a first delivery is not a dup");
        let mut body = body.clone();
        body.as_object_mut().unwrap().remove("dup");
        assert_eq!(
            body,
            json!({
                "id": id,
                "region": region,
                "qty": i + 1,
                "source": format!("{prefix}/in/{region}"),
                "qos": "1",
                "retain": "false",
            }),
            "{id}: output content"
        );
        *seen.entry(id.to_owned()).or_insert(0usize) += 1;
    }
    assert_eq!(seen.len(), N, "every id once");
    let dead = sb.only_json("dead-letter");
    assert_eq!(dead["error"]["kind"], "contract");
    assert_eq!(dead["message"]["id"], "bad-1");
    assert_eq!(
        dead["meta"]["mqtt.topic"],
        format!("{prefix}/in/eu").as_str()
    );

    // Stop, start again with the same session: anything not acknowledged would come back.
    let status = sluice.terminate(secs(30));
    assert!(status.success(), "graceful stop: {status:?}");
    let mut again = Sluice::run(&sb);
    let ready = wait_session(&mut again, "mq");
    assert!(
        has_field(&ready, "session_present", "true"),
        "the broker kept the session: {ready}"
    );
    std::thread::sleep(secs(2));
    again.assert_running();
    assert_eq!(
        sub.count(),
        N,
        "nothing was redelivered and published again"
    );
    assert_eq!(
        sb.count("dead-letter"),
        1,
        "the refused message was acknowledged too"
    );
    assert_eq!(
        lines_with(&again.log(), "message failed", "mq"),
        0,
        "no failure after the restart:\n{}",
        again.log_tail(30)
    );
    drop(again);
    sub.disconnect();
    publisher.disconnect();
}

#[test]
fn mqtt_transient_sink_failure_is_redelivered_then_succeeds() {
    if !service_available("Mosquitto", MQTT_PORT) {
        return;
    }
    let server = TestServer::start(|i, _| {
        if i < 2 {
            Answer::status(503)
        } else {
            Answer::status(200)
        }
    });
    let TestNames {
        prefix,
        client_id,
        session: _session,
    } = TestNames::new(MQTT_PORT, "mqr");
    let mut publisher = Mqtt::connect(MQTT_PORT);
    let sb = Sandbox::new();
    sb.write(
        "flows/late.yaml",
        format!(
            r#"name: late
trigger:
  mqtt:
    url: "{url}"
    topics: ["{prefix}/in"]
    client_id: "{client_id}"
    redeliver_delay: 300ms
steps:
  - set: {{ dup: "meta('mqtt.dup')" }}
  - to: crm
sinks:
  crm:
    http: {{ url: "{crm}/orders/{{{{id}}}}", timeout: 5s }}
errors:
  retry: {{ attempts: 1 }}
"#,
            url = url(MQTT_PORT),
            crm = server.url("")
        ),
    );
    let mut sluice = Sluice::run(&sb);
    wait_session(&mut sluice, "late");
    publisher.publish_json(&format!("{prefix}/in"), &json!({ "id": "m-1", "n": 1 }));
    publisher.flush();
    // 503, redelivered, 503, redelivered, 200.
    sluice.expect_within(secs(30), "the third request (the 200)", || {
        server.count() >= 3
    });
    std::thread::sleep(secs(1));
    let requests = server.requests();
    assert_eq!(
        requests.len(),
        3,
        "two failures, then one success, no more\n{}",
        sluice.log_tail(30)
    );
    let dups: Vec<Value> = requests.iter().map(|r| r.json()["dup"].clone()).collect();
    println!("mqtt redelivery: mqtt.dup per request: {dups:?}");
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r.target, "/orders/m-1", "request {i}");
        let mut body = r.json();
        body.as_object_mut().unwrap().remove("dup");
        assert_eq!(body, json!({ "id": "m-1", "n": 1 }), "request {i}: body");
    }
    assert_ne!(requests[0].json()["dup"], "true", "the first delivery");
    for w in requests.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= millis(250),
            "the redelivery waits redeliver_delay (300ms): gap {gap:?}"
        );
    }
    let log = sluice.log();
    assert!(
        lines_with(&log, "message failed", "late") >= 2,
        "both failures are logged:\n{}",
        tail(&log, 40)
    );

    // The success was acknowledged: a new process with the same session gets nothing.
    let status = sluice.terminate(secs(30));
    assert!(status.success(), "graceful stop: {status:?}");
    let mut again = Sluice::run(&sb);
    wait_session(&mut again, "late");
    std::thread::sleep(millis(1500));
    assert_eq!(
        server.count(),
        3,
        "nothing was redelivered after the success"
    );
    drop(again);
    publisher.disconnect();
}

#[test]
fn mqtt_persistent_session_delivers_messages_published_while_down() {
    if !service_available("Mosquitto", MQTT_PORT) {
        return;
    }
    let TestNames {
        prefix,
        client_id,
        session: _session,
    } = TestNames::new(MQTT_PORT, "mqp");
    let sb = Sandbox::new();
    sb.write(
        "flows/fwd.yaml",
        file_forward_flow(MQTT_PORT, &prefix, &client_id, ""),
    );
    let mut first = Sluice::run(&sb);
    let ready = wait_session(&mut first, "fwd");
    assert!(
        has_field(&ready, "session_present", "false"),
        "a new client id starts a new session: {ready}"
    );
    let status = first.terminate(secs(30));
    assert!(status.success(), "graceful stop: {status:?}");

    const N: usize = 300;
    let mut publisher = Mqtt::connect(MQTT_PORT);
    for i in 0..N {
        publisher.publish_json(
            &format!("{prefix}/in"),
            &json!({ "id": format!("m-{i}"), "n": i }),
        );
    }
    publisher.flush();
    assert_eq!(
        sb.count("outbox"),
        0,
        "nothing arrives while sluice is down"
    );

    let mut second = Sluice::run(&sb);
    let ready = wait_session(&mut second, "fwd");
    assert!(
        has_field(&ready, "session_present", "true"),
        "the broker kept the session: {ready}"
    );
    second.expect_within(secs(60), "all 300 messages arrive", || {
        sb.count("outbox") >= N
    });
    assert_eq!(sb.names("outbox"), file_names_for(0..N));
    for i in [0, N / 2, N - 1] {
        assert_eq!(
            sb.read_json(&format!("outbox/m-{i}.json")),
            json!({ "id": format!("m-{i}"), "n": i, "topic": format!("{prefix}/in") })
        );
    }
    drop(second);
    publisher.disconnect();
}

#[test]
fn mqtt_sigkill_of_sluice_loses_nothing() {
    if !service_available("Mosquitto", MQTT_PORT) {
        return;
    }
    let TestNames {
        prefix,
        client_id,
        session: _session,
    } = TestNames::new(MQTT_PORT, "mqk");
    let sub = Mqtt::connect(MQTT_PORT);
    sub.subscribe(&format!("{prefix}/out"));
    let sb = Sandbox::new();
    sb.write(
        "flows/fwd.yaml",
        format!(
            r#"name: fwd
concurrency: 8
trigger:
  mqtt:
    url: "{url}"
    topics: ["{prefix}/in"]
    client_id: "{client_id}"
steps:
  # 400 messages a second: the kill lands in the middle of the 800.
  - throttle: {{ rate: 400/s, burst: 20 }}
  - transform: "{{id: id, n: n}}"
  - to: out
sinks:
  out:
    mqtt: {{ url: "{url}", topic: "{prefix}/out" }}
errors:
  retry: {{ attempts: 10, backoff: 100ms, max_backoff: 2s }}
"#,
            url = url(MQTT_PORT)
        ),
    );
    let mut first = Sluice::run(&sb);
    wait_session(&mut first, "fwd");
    // At most 800 messages wait in the session (the shared broker queues 1000 per client).
    const N: usize = 800;
    let mut publisher = Mqtt::connect(MQTT_PORT);
    for i in 0..N {
        publisher.publish_json(
            &format!("{prefix}/in"),
            &json!({ "id": format!("m-{i}"), "n": i }),
        );
    }
    publisher.flush();
    first.expect_within(secs(60), "the first outputs", || sub.count() >= 100);
    first.kill();
    let at_kill = sub.count();
    assert!(at_kill < N, "killed too late: everything was already out");

    let mut second = Sluice::run(&sb);
    let ids = |sub: &Mqtt| {
        let mut ids = BTreeMap::new();
        for (_, body) in sub.received() {
            if let Some(id) = body["id"].as_str() {
                *ids.entry(id.to_owned()).or_insert(0usize) += 1;
            }
        }
        ids
    };
    second.expect_within(secs(120), "every message arrives", || {
        sub.count() >= N && ids(&sub).len() == N
    });
    let out = ids(&sub);
    let duplicates: usize = out.values().map(|c| c - 1).sum();
    println!("mqtt sigkill: {N} messages, {at_kill} out at the kill, {duplicates} duplicates");
    assert_eq!(out.len(), N);
    let expected: BTreeSet<String> = (0..N).map(|i| format!("m-{i}")).collect();
    assert_eq!(out.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for (topic, body) in sub.received() {
        assert_eq!(topic, format!("{prefix}/out"));
        let id = body["id"].as_str().unwrap();
        let n: usize = id.trim_start_matches("m-").parse().unwrap();
        assert_eq!(body, json!({ "id": id, "n": n }));
    }
    drop(second);
    sub.disconnect();
    publisher.disconnect();
}

/// `GET /readyz` status (0 when the admin server does not answer).
fn readyz(ports: Ports) -> u16 {
    try_http(ports.admin, "GET", "/readyz", &[], None)
        .map(|r| r.status)
        .unwrap_or(0)
}

#[test]
fn mqtt_broker_restart_loses_nothing() {
    if !mosquitto_installed() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("sluice-mosquitto-")
        .tempdir()
        .expect("mosquitto dir");
    let mut broker = Mosquitto::start(dir.path());
    let port = broker.port;
    let u = unique_name("mqb");
    let prefix = format!("sluice-test/{u}");
    let client_id = format!("sluice-{u}");
    let sb = Sandbox::new();
    sb.write(
        "flows/fwd.yaml",
        file_forward_flow(
            port,
            &prefix,
            &client_id,
            "  # 250 messages a second: the broker stops in the middle of the first 500.\n  - throttle: { rate: 250/s, burst: 20 }\n",
        ),
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    wait_session(&mut sluice, "fwd");
    sluice.expect_within(secs(10), "/readyz is 200 with the session up", || {
        readyz(ports) == 200
    });

    const N: usize = 1000;
    let mut publisher = Mqtt::connect(port);
    for i in 0..N / 2 {
        publisher.publish_json(
            &format!("{prefix}/in"),
            &json!({ "id": format!("m-{i}"), "n": i }),
        );
    }
    publisher.flush();
    drop(publisher);
    sluice.expect_within(secs(30), "the first outputs", || sb.count("outbox") >= 50);
    broker.stop();
    let at_stop = sb.count("outbox");
    sluice.expect_within(secs(15), "/readyz is 503 while the broker is away", || {
        readyz(ports) == 503
    });
    let unready = admin_get(ports, "/readyz", None);
    assert!(
        unready.text().contains("fwd"),
        "/readyz names the flow:\n{unready}"
    );
    std::thread::sleep(millis(500));
    broker.restart();

    let mut publisher = Mqtt::connect(port);
    for i in N / 2..N {
        publisher.publish_json(
            &format!("{prefix}/in"),
            &json!({ "id": format!("m-{i}"), "n": i }),
        );
    }
    publisher.flush();
    sluice.expect_within(secs(30), "/readyz is 200 again", || readyz(ports) == 200);
    sluice.expect_within(secs(90), "every message arrives", || {
        sb.count("outbox") >= N
    });
    println!("mqtt broker restart: {N} messages, {at_stop} out when the broker stopped");
    assert!(
        at_stop < N / 2,
        "the broker stopped too late: the first half was already out"
    );
    assert_eq!(sb.names("outbox"), file_names_for(0..N));
    assert_eq!(
        sb.read_json("outbox/m-999.json"),
        json!({ "id": "m-999", "n": 999, "topic": format!("{prefix}/in") })
    );
    sluice.assert_running();
    drop(sluice);
    publisher.disconnect();
}
