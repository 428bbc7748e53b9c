//! Kafka end to end, against the broker `.ci/kafka-broker.sh` starts (`SLUICE_KAFKA_BROKERS`):
//! in → transform → out with every output checked, dead letters (contract and undecodable),
//! SIGKILL of sluice with messages in flight, a sink that fails and recovers (nothing
//! committed past it), per-partition order, and the consumer lag metric.
//!
//! Every consumer uses `session_timeout: 6s`, `heartbeat_interval: 1s` and a rebalance
//! timeout of 10 s, so that a group forms and re-forms quickly.

use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};

/// The group settings every test flow uses.
/// (A rebalance waits for the members it knew up to `max.poll.interval.ms`, librdkafka's
/// rebalance timeout, on the test broker even for one that was SIGKILLed.)
const GROUP_TIMINGS: &str =
    r#"session_timeout: 6s, heartbeat_interval: 1s, options: { max.poll.interval.ms: "10000" }"#;

fn ready_line(sluice: &mut Sluice) {
    sluice.wait_for_log("kafka: partitions assigned", secs(60));
}

#[test]
fn kafka_in_transform_out_with_every_output_checked_and_dead_letters() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let (ins, outs) = (kafka_topic("kin"), kafka_topic("kout"));
    create_topic(&brokers, &ins, 3);
    create_topic(&brokers, &outs, 2);
    let group = unique_name("g");
    let sb = Sandbox::new();
    sb.write(
        "schemas/order.v1.json",
        r#"{"type":"object","required":["id","qty"],"properties":{"qty":{"type":"integer","minimum":1}}}"#,
    );
    sb.write(
        "flows/k.yaml",
        format!(
            r#"name: k
concurrency: 8
trigger:
  kafka: {{ brokers: "{brokers}", topics: ["{ins}"], group: {group}, {GROUP_TIMINGS}, lag_interval: 1s }}
contract: {{ input: order.v1 }}
steps:
  - transform: >-
      {{id: id, qty: qty, double: sum([qty, qty]), topic: meta('kafka.topic'),
        partition: meta('kafka.partition'), offset: meta('kafka.offset'), key: meta('kafka.key'),
        source: meta('kafka.header.source'), ts: meta('kafka.timestamp')}}
  - to: out
sinks:
  out:
    kafka: {{ brokers: "{brokers}", topic: "{outs}", key: "{{{{id}}}}", partitioner: murmur2 }}
errors:
  dead_letter: {{ file: {{ path: dead-letter }} }}
"#
        ),
    );
    let (mut sluice, ports) = Sluice::serve(&sb, &[], &[]);
    ready_line(&mut sluice);
    // The group's state: this process holds every partition of the topic.
    let flow = admin_flow(ports, "k");
    assert_eq!(flow["state"], "running", "{flow:#}");
    assert_eq!(flow["source"]["group"], group.as_str(), "{flow:#}");
    assert_eq!(
        flow["source"]["partitions"][&ins],
        json!([0, 1, 2]),
        "{flow:#}"
    );

    const N: usize = 1000;
    let bodies: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| {
            let id = format!("o-{i:04}");
            let body = serde_json::to_vec(&json!({ "id": id, "qty": i + 1 })).expect("json");
            (id, body)
        })
        .collect();
    let headers: Vec<[(&str, &str); 2]> = bodies
        .iter()
        .map(|(id, _)| [("source", "test"), ("message_id", id.as_str())])
        .collect();
    let mut records: Vec<Out<'_>> = bodies
        .iter()
        .zip(&headers)
        .map(|((id, body), headers)| Out {
            key: Some(id),
            value: body,
            headers,
            partition: None,
        })
        .collect();
    let contract = br#"{"id":"bad-qty","qty":0}"#;
    let undecodable = b"{not json";
    records.push(Out {
        key: Some("bad-qty"),
        value: contract,
        headers: &[],
        partition: Some(0),
    });
    records.push(Out {
        key: Some("bad-body"),
        value: undecodable,
        headers: &[],
        partition: Some(1),
    });
    produce(&brokers, &ins, &records);

    sluice.expect_within(secs(60), "two dead letters", || {
        sb.count("dead-letter") == 2
    });
    let out = read_all(&brokers, &outs, N, secs(120));
    let mut seen = BTreeMap::new();
    for record in &out {
        let body = record.json();
        let id = body["id"].as_str().expect("an id").to_owned();
        let i: usize = id[2..].parse().expect("a number");
        assert_eq!(body["qty"], i + 1, "{body}");
        assert_eq!(
            body["double"].as_f64(),
            Some(2.0 * (i + 1) as f64),
            "{body}"
        );
        assert_eq!(body["topic"], ins.as_str());
        assert_eq!(body["key"], id.as_str());
        assert_eq!(body["source"], "test");
        assert!(
            body["partition"]
                .as_str()
                .is_some_and(|p| ["0", "1", "2"].contains(&p))
        );
        assert!(
            body["offset"]
                .as_str()
                .is_some_and(|o| o.parse::<i64>().is_ok())
        );
        assert!(
            body["ts"]
                .as_str()
                .is_some_and(|t| t.parse::<i64>().is_ok_and(|t| t > 0))
        );
        // The sink's key and headers: the id it arrived with travels on.
        assert_eq!(record.key.as_deref(), Some(id.as_str()));
        assert_eq!(record.headers.get("message_id"), Some(&id));
        assert_eq!(record.headers.get("correlation_id"), Some(&id));
        *seen.entry(id).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), N, "every id once");
    assert!(
        seen.values().all(|&n| n == 1),
        "no duplicates without a failure"
    );

    let dead: Vec<serde_json::Value> = sb
        .names("dead-letter")
        .iter()
        .map(|name| sb.read_json(&format!("dead-letter/{name}")))
        .collect();
    let kinds: BTreeSet<&str> = dead
        .iter()
        .filter_map(|d| d["error"]["kind"].as_str())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["contract", "trigger"]), "{dead:?}");
    let contract_letter = dead
        .iter()
        .find(|d| d["error"]["kind"] == "contract")
        .expect("the contract failure");
    assert_eq!(contract_letter["message"]["id"], "bad-qty");

    // Everything settled is committed: the group's offsets reach the end of each partition.
    let ends: i64 = (N + 2) as i64;
    sluice.expect_within(secs(30), "every offset committed", || {
        committed(&brokers, &group, &ins, 3).values().sum::<i64>() == ends
    });
    // The lag of each partition is measured, and falls to nothing.
    sluice.expect_within(secs(30), "a consumer lag of 0 per partition", || {
        let metrics = scrape(ports);
        (0..3).all(|p| {
            metrics.value(
                "sluice_kafka_consumer_lag",
                &[
                    ("flow", "k"),
                    ("topic", &ins),
                    ("partition", &p.to_string()),
                ],
            ) == Some(0.0)
        })
    });
}

fn in_flight_flow(brokers: &str, ins: &str, group: &str) -> String {
    format!(
        r#"name: fwd
concurrency: 8
queue: 8
trigger:
  kafka:
    brokers: "{brokers}"
    topics: ["{ins}"]
    group: {group}
    session_timeout: 6s
    heartbeat_interval: 1s
    order: none
    commit_count: 1
    # Static membership: the restarted process takes the killed one's place at once (the
    # test broker never evicts a SIGKILLed group leader otherwise).
    options: {{ max.poll.interval.ms: "10000", group.instance.id: fwd-1 }}
steps:
  - transform: "{{id: id, n: n, at: meta('received_at'), pid: '${{env:WORKER}}'}}"
  - to: out
sinks:
  out:
    file: {{ path: outbox, name: "{{{{id}}}}.json" }}
errors:
  retry: {{ attempts: 10, backoff: 100ms, max_backoff: 2s }}
"#
    )
}

/// Output files per id: `m-00001.json`, and `m-00001-1.json`, … for each further delivery.
fn deliveries(sb: &Sandbox) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for name in sb.names("outbox") {
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let id = match stem.rsplit_once('-') {
            Some((id, n)) if id.starts_with("m-") && n.parse::<u32>().is_ok() && id.len() > 2 => {
                id.to_owned()
            }
            _ => stem.to_owned(),
        };
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

#[test]
fn kafka_sigkill_with_messages_in_flight_loses_nothing() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let ins = kafka_topic("kkill");
    create_topic(&brokers, &ins, 3);
    let group = unique_name("g");
    const N: usize = 2000;
    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|i| serde_json::to_vec(&json!({ "id": format!("m-{i:05}"), "n": i })).expect("json"))
        .collect();
    let records: Vec<Out<'_>> = bodies
        .iter()
        .map(|body| Out {
            key: None,
            value: body,
            headers: &[],
            partition: None,
        })
        .collect();
    produce(&brokers, &ins, &records);
    let sb = Sandbox::new();
    sb.write("flows/fwd.yaml", in_flight_flow(&brokers, &ins, &group));
    // Slow writes keep messages in flight when the process is killed.
    let env = [("SLUICE_TEST_SINK_DELAY", "5ms"), ("WORKER", "first")];
    let started = std::time::Instant::now();
    let mut first = Sluice::start_with_env(&sb, &["run", "--admin", "off"], &env);
    first.expect_within(secs(120), "the first outputs", || sb.count("outbox") >= 300);
    first.kill();
    let (at_kill, killed_after) = (sb.count("outbox"), started.elapsed());
    let mut second =
        Sluice::start_with_env(&sb, &["run", "--admin", "off"], &[("WORKER", "second")]);
    second.expect_within(secs(180), "every id delivered", || {
        deliveries(&sb).len() == N
    });
    let ids = deliveries(&sb);
    let all_after = started.elapsed();
    let duplicates: usize = ids.values().map(|n| n - 1).sum();
    // In flight at the kill: at most the flow's concurrency plus its queue, and the
    // acknowledgements whose commit was under way.
    eprintln!(
        "kafka SIGKILL: {at_kill} of {N} written before the kill ({killed_after:.1?}); all {N} ids after the restart ({all_after:.1?}); {duplicates} duplicates"
    );
    assert!(duplicates <= 8 + 8 + 8, "{duplicates} duplicates");
    second.expect_within(secs(30), "every offset committed", || {
        committed(&brokers, &group, &ins, 3).values().sum::<i64>() == N as i64
    });
}

#[test]
fn kafka_a_failing_sink_holds_the_commit_and_loses_nothing_when_it_recovers() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    if !service_available("Redis", 6379) {
        return;
    }
    let ins = kafka_topic("kfail");
    create_topic(&brokers, &ins, 1);
    let group = unique_name("g");
    let u = unique_name("kr");
    let (good, late) = (format!("good:{u}"), format!("late:{u}"));
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("redis");
    let mut c = client.get_connection().expect("redis connection");
    // The key holds a string: XADD to it fails (retryably) until it is removed.
    let _: () = redis::cmd("SET")
        .arg(&late)
        .arg("in the way")
        .query(&mut c)
        .expect("SET");
    let sb = Sandbox::new();
    sb.write(
        "flows/late.yaml",
        format!(
            r#"name: late
concurrency: 4
trigger:
  kafka: {{ brokers: "{brokers}", topics: ["{ins}"], group: {group}, {GROUP_TIMINGS}, order: none, commit_count: 1, commit_interval: 100ms, retry_delay: 500ms }}
steps:
  - to: out
sinks:
  out:
    redis: {{ stream: "{{{{target}}}}" }}
errors:
  retry: {{ attempts: 2, backoff: 50ms }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    ready_line(&mut sluice);
    let bodies: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            let target = if i == 2 { &late } else { &good };
            serde_json::to_vec(&json!({ "id": format!("m-{i}"), "target": target })).expect("json")
        })
        .collect();
    let records: Vec<Out<'_>> = bodies
        .iter()
        .map(|body| Out {
            key: None,
            value: body,
            headers: &[],
            partition: Some(0),
        })
        .collect();
    produce(&brokers, &ins, &records);
    let xlen = |c: &mut redis::Connection, key: &str| -> usize {
        redis::cmd("XLEN").arg(key).query(c).unwrap_or(0)
    };
    sluice.wait_for_log("its partition is read again from offset 2", secs(60));
    sluice.expect_within(
        secs(30),
        "the messages around the failing one written",
        || xlen(&mut c, &good) >= 4,
    );
    // Read again (and failing again) a few times: the commit never passes offset 2, though
    // the messages after it were written.
    sluice.wait_for_log("its partition is read again from offset 2", secs(30));
    let mark = sluice.mark();
    sluice.wait_for_line_since(mark, "a second rewind", secs(30), |l| {
        l.contains("its partition is read again from offset 2")
    });
    assert_eq!(
        committed(&brokers, &group, &ins, 1).get(&0).copied(),
        Some(2),
        "committed up to the failing message, not past it"
    );
    let _: () = redis::cmd("DEL").arg(&late).query(&mut c).expect("DEL");
    sluice.expect_within(secs(30), "the failing message arrives", || {
        xlen(&mut c, &late) == 1
    });
    sluice.expect_within(secs(30), "every offset committed", || {
        committed(&brokers, &group, &ins, 1).get(&0).copied() == Some(5)
    });
    // Nothing lost: every message of the good stream is there (the ones after the failure
    // possibly more than once: they were in flight when their partition was read again).
    let ids: BTreeSet<String> = {
        let reply: redis::Value = redis::cmd("XRANGE")
            .arg(&good)
            .arg("-")
            .arg("+")
            .query(&mut c)
            .expect("XRANGE");
        format!("{reply:?}")
            .split("m-")
            .skip(1)
            .filter_map(|s| s.chars().next())
            .map(|d| format!("m-{d}"))
            .collect()
    };
    assert_eq!(
        ids,
        BTreeSet::from(["m-0", "m-1", "m-3", "m-4"].map(str::to_owned))
    );
    let _: () = redis::cmd("DEL")
        .arg(&good)
        .arg(&late)
        .query(&mut c)
        .expect("DEL");
}

#[test]
fn kafka_order_partition_keeps_each_partition_in_order() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let (ins, outs) = (kafka_topic("kord"), kafka_topic("kordout"));
    create_topic(&brokers, &ins, 3);
    create_topic(&brokers, &outs, 1);
    let group = unique_name("g");
    let sb = Sandbox::new();
    sb.write(
        "flows/ord.yaml",
        format!(
            r#"name: ord
concurrency: 16
trigger:
  kafka: {{ brokers: "{brokers}", topics: ["{ins}"], group: {group}, {GROUP_TIMINGS} }}
steps:
  - transform: "{{n: n, partition: meta('kafka.partition'), offset: meta('kafka.offset')}}"
  - to: out
sinks:
  out:
    kafka: {{ brokers: "{brokers}", topic: "{outs}", linger: 0ms }}
"#
        ),
    );
    let mut sluice = Sluice::run(&sb);
    ready_line(&mut sluice);
    const N: usize = 3000;
    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|i| serde_json::to_vec(&json!({ "n": i })).expect("json"))
        .collect();
    let records: Vec<Out<'_>> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| Out {
            key: None,
            value: body,
            headers: &[],
            partition: Some((i % 3) as i32),
        })
        .collect();
    produce(&brokers, &ins, &records);
    let out = read_all(&brokers, &outs, N, secs(120));
    assert_eq!(out.len(), N, "every message once");
    // The output topic has one partition, so its order is the order of the writes: within
    // each input partition, offsets (and so the produced order) only go up.
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for record in &out {
        let body = record.json();
        let partition = body["partition"].as_str().expect("partition").to_owned();
        let offset: i64 = body["offset"]
            .as_str()
            .expect("offset")
            .parse()
            .expect("number");
        if let Some(previous) = last.get(&partition) {
            assert!(
                offset > *previous,
                "partition {partition}: offset {offset} written after {previous}"
            );
        }
        last.insert(partition, offset);
        let n = body["n"].as_u64().expect("n") as usize;
        assert_eq!(
            n % 3,
            body["partition"]
                .as_str()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        );
    }
    assert_eq!(last.len(), 3);
}

#[test]
fn kafka_scale_out_three_processes_share_a_group_and_lose_nothing_when_one_is_killed() {
    // On tansu: noida-db never evicts the SIGKILLed member, so its partitions would stay
    // with it (see support/kafka.rs).
    let Some(brokers) = kafka_group_brokers() else {
        return;
    };
    if !postgres_available() {
        return;
    }
    let ins = kafka_topic("kscale");
    create_topic(&brokers, &ins, 6);
    let group = unique_name("g");
    let table = unique_name("kscale");
    psql(&format!(
        "CREATE TABLE {table} (id text PRIMARY KEY, worker text NOT NULL, n int, deliveries int NOT NULL DEFAULT 1)"
    ));
    let sb = Sandbox::new();
    sb.write(
        "flows/scale.yaml",
        format!(
            r#"name: scale
concurrency: 16
trigger:
  kafka: {{ brokers: "{brokers}", topics: ["{ins}"], group: {group}, {GROUP_TIMINGS}, order: none }}
steps:
  - to: rows
sinks:
  rows:
    postgres:
      url: "{POSTGRES_URL}"
      sql: "INSERT INTO {table} (id, worker, n) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET deliveries = {table}.deliveries + 1"
      args: ["meta('message_id')", "'${{env:WORKER}}'", n]
errors:
  retry: {{ attempts: 10, backoff: 100ms, max_backoff: 2s }}
"#
        ),
    );
    let mut workers: Vec<Sluice> = ["w1", "w2", "w3"]
        .iter()
        .map(|w| Sluice::start_with_env(&sb, &["run", "--admin", "off"], &[("WORKER", w)]))
        .collect();
    for w in &mut workers {
        ready_line(w);
    }
    const N: usize = 20_000;
    let started = std::time::Instant::now();
    let bodies: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| {
            let id = format!("m-{i:05}");
            let body =
                serde_json::to_vec(&json!({ "n": i, "pad": "x".repeat(180) })).expect("json");
            (id, body)
        })
        .collect();
    let headers: Vec<[(&str, &str); 1]> = bodies
        .iter()
        .map(|(id, _)| [("message_id", id.as_str())])
        .collect();
    let records: Vec<Out<'_>> = bodies
        .iter()
        .zip(&headers)
        .map(|((id, body), headers)| Out {
            key: Some(id),
            value: body,
            headers,
            partition: None,
        })
        .collect();
    produce(&brokers, &ins, &records);
    let produced = started.elapsed();
    let count = || {
        psql(&format!("SELECT count(*) FROM {table}"))
            .parse::<usize>()
            .unwrap_or(0)
    };
    workers[0].expect_within(secs(180), "a third of the rows", || count() >= N / 3);
    workers[1].kill();
    let at_kill = count();
    workers[0].expect_within(secs(300), "every id in the table", || count() >= N);
    let elapsed = started.elapsed();
    let split = psql(&format!(
        "SELECT worker || '=' || count(*) FROM {table} GROUP BY worker ORDER BY worker"
    ));
    let duplicates = psql(&format!(
        "SELECT coalesce(sum(deliveries - 1), 0) FROM {table}"
    ));
    eprintln!(
        "kafka scale-out: {N} messages on 6 partitions (produced in {produced:.1?}), w2 SIGKILLed at {at_kill} rows; \
         all {N} ids after {elapsed:.1?}; split {}; duplicate deliveries {duplicates}",
        split.replace('\n', " ")
    );
    assert_eq!(count(), N);
    let per_worker: Vec<usize> = split
        .lines()
        .filter_map(|l| l.split('=').nth(1)?.parse().ok())
        .collect();
    assert_eq!(per_worker.len(), 3, "every process took a share: {split}");
    workers[0].assert_running();
    workers[2].assert_running();
    drop(workers);
    psql(&format!("DROP TABLE {table}"));
}
