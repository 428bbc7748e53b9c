//! Redis Streams end to end, against the server on 127.0.0.1:6379 and private `redis-server`
//! processes: transform and re-append, dead letters, redelivery (XAUTOCLAIM) after a
//! transient failure, broker restart, SIGKILL of sluice.

use crate::support::*;
use redis::Commands;
use serde_json::Value;
use std::collections::BTreeMap;

const REDIS_PORT: u16 = 6379;

fn conn(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
    for _ in 0..100 {
        if let Ok(c) = client.get_connection() {
            return c;
        }
        std::thread::sleep(millis(100));
    }
    panic!("cannot connect to Redis on port {port}");
}

fn add(c: &mut redis::Connection, stream: &str, id: &str, body: &Value) {
    let body = serde_json::to_string(body).expect("serialize");
    add_raw(c, stream, id, &body);
}

/// Appends an entry whose `payload` field is `body` as it is (JSON or not).
/// A restarted server answers `BUSYLOADING` while it reads its data back; that is waited out
/// (bounded), any other error fails the test.
fn add_raw(c: &mut redis::Connection, stream: &str, id: &str, body: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let sent: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("payload")
            .arg(body)
            .arg("message_id")
            .arg(id)
            .query(c);
        match sent {
            Ok(_) => return,
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("XADD: {e}"),
        }
    }
}

/// Every entry of a stream: (fields, body).
fn entries(c: &mut redis::Connection, stream: &str) -> Vec<(BTreeMap<String, String>, Value)> {
    let reply: redis::streams::StreamRangeReply = match c.xrange_all(stream) {
        Ok(reply) => reply,
        Err(_) => return Vec::new(),
    };
    reply
        .ids
        .into_iter()
        .map(|e| {
            let fields: BTreeMap<String, String> = e
                .map
                .iter()
                .filter_map(|(k, v)| {
                    redis::from_redis_value_ref::<String>(v)
                        .ok()
                        .map(|v| (k.clone(), v))
                })
                .collect();
            let body = fields
                .get("payload")
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or(Value::Null);
            (fields, body)
        })
        .collect()
}

fn len(c: &mut redis::Connection, stream: &str) -> usize {
    c.xlen(stream).unwrap_or(0)
}

/// (pending entries of the group) — 0 when everything was acknowledged.
fn pending(c: &mut redis::Connection, stream: &str, group: &str) -> usize {
    let reply: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query(c)
        .expect("XPENDING");
    match reply {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n as usize,
            _ => 0,
        },
        _ => 0,
    }
}

fn ids(entries: &[(BTreeMap<String, String>, Value)]) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for (_, body) in entries {
        if let Some(id) = body["id"].as_str() {
            *ids.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    ids
}

#[test]
fn redis_in_transform_out_with_dead_letter() {
    if !service_available("Redis", REDIS_PORT) {
        return;
    }
    let u = unique_name("rs");
    let (ins, outs) = (format!("in:{u}"), format!("out:{u}"));
    let mut c = conn(REDIS_PORT);
    let sb = Sandbox::new();
    sb.write(
        "schemas/order.v1.json",
        r#"{"type":"object","required":["id","qty"],"properties":{"qty":{"type":"integer","minimum":1}}}"#,
    );
    sb.write(
        "flows/rs.yaml",
        format!(
            r#"name: rs
trigger:
  redis: {{ stream: "{ins}", group: workers }}
contract: {{ input: order.v1 }}
steps:
  - transform: "{{id: id, qty: qty, entry: meta('redis.id'), from: meta('redis.stream')}}"
  - to: out
sinks:
  out:
    redis: {{ stream: "{outs}", maxlen: 100000 }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("redis consumer ready", secs(30));
    for i in 0..20 {
        let id = format!("o-{i}");
        add(&mut c, &ins, &id, &json!({ "id": id, "qty": i + 1 }));
    }
    add(&mut c, &ins, "bad-1", &json!({ "id": "bad-1", "qty": 0 }));
    sluice.expect_within(secs(30), "20 entries out", || len(&mut c, &outs) >= 20);
    sluice.expect_within(secs(30), "one dead letter", || sb.count("dead-letter") == 1);
    sluice.expect_within(secs(30), "nothing pending", || {
        pending(&mut c, &ins, "workers") == 0
    });
    let out = entries(&mut c, &outs);
    assert_eq!(out.len(), 20);
    for (fields, body) in &out {
        assert_eq!(
            fields.get("message_id"),
            body["id"].as_str().map(str::to_owned).as_ref()
        );
        assert_eq!(fields.get("correlation_id"), fields.get("message_id"));
        assert_eq!(body["from"], ins.as_str());
        assert!(body["entry"].as_str().is_some_and(|e| e.contains('-')));
    }
    assert_eq!(ids(&out).len(), 20);
    let dead = sb.only_json("dead-letter");
    assert_eq!(dead["error"]["kind"], "contract");
    assert_eq!(dead["message"]["id"], "bad-1");
    drop(sluice);
    let _: () = c.del(&[&ins, &outs]).expect("DEL");
}

#[test]
fn redis_transient_sink_failure_is_claimed_again_then_succeeds() {
    if !service_available("Redis", REDIS_PORT) {
        return;
    }
    let u = unique_name("rsr");
    let (ins, late) = (format!("in:{u}"), format!("late:{u}"));
    let mut c = conn(REDIS_PORT);
    // The target key holds a string: XADD fails with WRONGTYPE until the key is removed.
    let _: () = c.set(&late, "in the way").expect("SET");
    let sb = Sandbox::new();
    sb.write(
        "flows/late.yaml",
        format!(
            r#"name: late
trigger:
  redis: {{ stream: "{ins}", group: workers, claim_idle: 1s }}
steps:
  - to: out
sinks:
  out:
    redis: {{ stream: "{late}" }}
errors:
  retry: {{ attempts: 1 }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("redis consumer ready", secs(30));
    add(&mut c, &ins, "m-1", &json!({ "id": "m-1" }));
    sluice.wait_for_log("the entry stays pending", secs(30));
    let _: () = c.del(&late).expect("DEL");
    sluice.expect_within(
        secs(30),
        "the entry arrives after it was claimed again",
        || len(&mut c, &late) == 1,
    );
    sluice.wait_for_log("claimed entries idle", secs(5));
    sluice.expect_within(secs(30), "nothing pending", || {
        pending(&mut c, &ins, "workers") == 0
    });
    assert_eq!(entries(&mut c, &late)[0].1["id"], "m-1");
    drop(sluice);
    let _: () = c.del(&[&ins, &late]).expect("DEL");
}

fn forward_flow(port: u16, ins: &str, outs: &str) -> String {
    format!(
        r#"name: fwd
concurrency: 8
trigger:
  redis: {{ url: "redis://127.0.0.1:{port}", stream: "{ins}", group: workers, claim_idle: 2s }}
steps:
  - transform: "{{id: id, n: n}}"
  - to: out
sinks:
  out:
    redis: {{ url: "redis://127.0.0.1:{port}", stream: "{outs}" }}
errors:
  retry: {{ attempts: 10, backoff: 100ms, max_backoff: 2s }}
"#
    )
}

#[test]
fn redis_sigkill_of_sluice_loses_nothing() {
    if !service_available("Redis", REDIS_PORT) {
        return;
    }
    let u = unique_name("rsk");
    let (ins, outs) = (format!("in:{u}"), format!("out:{u}"));
    let mut c = conn(REDIS_PORT);
    const N: usize = 3000;
    for i in 0..N {
        add(
            &mut c,
            &ins,
            &format!("m-{i}"),
            &json!({ "id": format!("m-{i}"), "n": i }),
        );
    }
    let sb = Sandbox::new();
    sb.write("flows/fwd.yaml", forward_flow(REDIS_PORT, &ins, &outs));
    let mut first = Sluice::run(&sb);
    first.expect_within(secs(60), "the first outputs", || len(&mut c, &outs) >= 300);
    first.kill();
    let at_kill = len(&mut c, &outs);
    assert!(at_kill < N, "killed too late");
    // A new process is a new consumer: it claims what the dead one left pending.
    let mut second = Sluice::run(&sb);
    second.expect_within(secs(120), "every entry arrives", || {
        len(&mut c, &outs) >= N && ids(&entries(&mut c, &outs)).len() == N
    });
    let out = ids(&entries(&mut c, &outs));
    let duplicates: usize = out.values().map(|n| n - 1).sum();
    eprintln!("redis sigkill: {N} entries, {at_kill} out at the kill, {duplicates} duplicates");
    assert_eq!(out.len(), N);
    drop(second);
    let _: () = c.del(&[&ins, &outs]).expect("DEL");
}

#[test]
fn redis_broker_restart_loses_nothing() {
    if !program_available("redis-server") {
        return;
    }
    let port = free_port();
    let dir = tempfile::tempdir().expect("data dir");
    let mut server = Server::start(
        "redis-server",
        &[
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--appendonly".into(),
            "yes".into(),
            // `everysec` (the default) may postpone the AOF write behind a slow fsync while
            // still answering OK, so a SIGKILL can drop entries the test was told were added
            // (seen on a loaded CI disk); `always` writes before answering.
            "--appendfsync".into(),
            "always".into(),
            "--save".into(),
            "".into(),
        ],
        port,
    );
    let (ins, outs) = ("in".to_owned(), "out".to_owned());
    let mut c = conn(port);
    let sb = Sandbox::new();
    sb.write("flows/fwd.yaml", forward_flow(port, &ins, &outs));
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("redis consumer ready", secs(30));
    const N: usize = 600;
    for i in 0..N / 2 {
        add(
            &mut c,
            &ins,
            &format!("m-{i}"),
            &json!({ "id": format!("m-{i}"), "n": i }),
        );
    }
    sluice.expect_within(secs(30), "the first outputs", || len(&mut c, &outs) >= 50);
    server.kill();
    std::thread::sleep(millis(500));
    server.restart();
    let mut c = conn(port);
    for i in N / 2..N {
        add(
            &mut c,
            &ins,
            &format!("m-{i}"),
            &json!({ "id": format!("m-{i}"), "n": i }),
        );
    }
    // The broker itself kept every input: a shortfall below is then sluice's, not Redis's.
    assert_eq!(
        len(&mut c, &ins),
        N,
        "Redis lost input entries in its restart"
    );
    sluice.expect_within(secs(90), "every entry arrives", || {
        len(&mut c, &outs) >= N && ids(&entries(&mut c, &outs)).len() == N
    });
    let out = ids(&entries(&mut c, &outs));
    let duplicates: usize = out.values().map(|n| n - 1).sum();
    eprintln!("redis restart: {N} entries, {duplicates} duplicates");
    assert_eq!(out.len(), N);
    sluice.assert_running();
}

#[test]
fn redis_undecodable_body_goes_to_the_dead_letter() {
    if !service_available("Redis", REDIS_PORT) {
        return;
    }
    let u = unique_name("rsu");
    let (ins, outs) = (format!("in:{u}"), format!("out:{u}"));
    let mut c = conn(REDIS_PORT);
    let sb = Sandbox::new();
    sb.write(
        "flows/rsu.yaml",
        format!(
            r#"name: rsu
trigger:
  redis: {{ stream: "{ins}", group: workers, claim_idle: 1s }}
steps:
  - to: out
sinks:
  out:
    redis: {{ stream: "{outs}" }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("redis consumer ready", secs(30));
    add_raw(&mut c, &ins, "bad-1", "not json {");
    add(&mut c, &ins, "good-1", &json!({ "id": "good-1", "n": 1 }));
    sluice.expect_within(secs(30), "the good entry out", || len(&mut c, &outs) >= 1);
    sluice.expect_within(secs(30), "one dead letter", || sb.count("dead-letter") == 1);
    sluice.expect_within(secs(30), "nothing pending", || {
        pending(&mut c, &ins, "workers") == 0
    });
    // Past `claim_idle`: nothing is claimed again, nothing more arrives.
    std::thread::sleep(millis(2500));
    assert_eq!(pending(&mut c, &ins, "workers"), 0);
    assert_eq!(sb.count("dead-letter"), 1, "dead-lettered once");
    let out = entries(&mut c, &outs);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].1, json!({ "id": "good-1", "n": 1 }));
    let dead = undecodable_dead_letter(&sb, "not json {", "not JSON");
    assert_eq!(dead["meta"]["message_id"], "bad-1", "{dead:#}");
    assert_eq!(dead["meta"]["redis.stream"], ins.as_str(), "{dead:#}");
    assert!(
        dead["meta"].get("sluice.body_encoding").is_none(),
        "a UTF-8 body is kept as text: {dead:#}"
    );
    let log = sluice.log();
    assert_logged_once(
        &log,
        "message failed: trigger error: the body is not JSON",
        "rsu",
    );
    assert!(
        !log.contains("no working dead letter"),
        "the dead letter took it:\n{}",
        tail(&log, 30)
    );
    drop(sluice);
    let _: () = c.del(&[&ins, &outs]).expect("DEL");
}

#[test]
fn redis_undecodable_body_without_dead_letter_is_acknowledged_and_logged() {
    if !service_available("Redis", REDIS_PORT) {
        return;
    }
    let u = unique_name("rsn");
    let (ins, outs) = (format!("in:{u}"), format!("out:{u}"));
    let mut c = conn(REDIS_PORT);
    let sb = Sandbox::new();
    sb.write(
        "flows/rsn.yaml",
        format!(
            r#"name: rsn
trigger:
  redis: {{ stream: "{ins}", group: workers, claim_idle: 1s }}
steps:
  - to: out
sinks:
  out:
    redis: {{ stream: "{outs}" }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    sluice.wait_for_log("redis consumer ready", secs(30));
    add_raw(&mut c, &ins, "bad-1", "not json {");
    let line = sluice.wait_for_line("`no working dead letter` for flow=rsn", secs(30), |l| {
        l.contains("the body cannot be read and the flow has no working dead letter")
            && has_flow(l, "rsn")
    });
    assert!(has_field(&line, "message_id", "bad-1"), "{line}");
    sluice.expect_within(secs(30), "nothing pending", || {
        pending(&mut c, &ins, "workers") == 0
    });
    add(&mut c, &ins, "good-1", &json!({ "id": "good-1", "n": 1 }));
    sluice.expect_within(secs(30), "the later entry out", || len(&mut c, &outs) >= 1);
    // Past `claim_idle`: the unreadable entry is not claimed again.
    std::thread::sleep(millis(2500));
    assert_eq!(pending(&mut c, &ins, "workers"), 0);
    let out = entries(&mut c, &outs);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].1, json!({ "id": "good-1", "n": 1 }));
    let log = sluice.log();
    // The entry failed once, never again.
    assert_logged_once(
        &log,
        "message failed: trigger error: the body is not JSON",
        "rsn",
    );
    assert_eq!(len(&mut c, &ins), 2, "the entries stay in the stream");
    sluice.assert_running();
    drop(sluice);
    let _: () = c.del(&[&ins, &outs]).expect("DEL");
}
