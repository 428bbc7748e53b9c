//! Scale-out on NATS JetStream: three `sluice run` processes share one durable consumer;
//! 20,000 messages are published; one process is SIGKILLed midway; a PostgreSQL table keyed
//! by message id ends with every id. Prints the split over the processes and the duplicates.

use crate::support::*;
use async_nats::jetstream::{self, stream};
use std::time::Instant;

const N: usize = 20_000;

#[test]
fn three_processes_share_one_durable_and_lose_nothing_when_one_is_killed() {
    if !service_available("NATS JetStream", 4222) || !postgres_available() {
        return;
    }
    let u = unique_name("scale");
    let table = u.clone();
    psql(&format!(
        "CREATE TABLE {table} (id text PRIMARY KEY, worker text NOT NULL, n int, deliveries int NOT NULL DEFAULT 1)"
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let js = rt.block_on(async {
        let client = async_nats::connect("nats://127.0.0.1:4222")
            .await
            .expect("connect");
        let js = jetstream::new(client);
        js.get_or_create_stream(stream::Config {
            name: format!("IN_{u}"),
            subjects: vec![format!("{u}.in")],
            ..Default::default()
        })
        .await
        .expect("stream");
        js
    });

    let sb = Sandbox::new();
    sb.write(
        "flows/scale.yaml",
        format!(
            r#"name: scale
concurrency: 16
trigger:
  nats: {{ stream: IN_{u}, subject: "{u}.in", durable: scale, ack_wait: 5s, batch: 128 }}
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
        w.wait_for_log("nats consumer ready", secs(30));
    }

    let started = Instant::now();
    rt.block_on(async {
        for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
            let mut acks = Vec::new();
            for &i in chunk {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("m-{i:05}").as_str());
                let body =
                    serde_json::to_vec(&json!({ "n": i, "pad": "x".repeat(180) })).expect("json");
                acks.push(
                    js.publish_with_headers(format!("{u}.in"), headers, body.into())
                        .await
                        .expect("publish"),
                );
            }
            for ack in acks {
                ack.await.expect("publish ack");
            }
        }
    });
    let published = started.elapsed();

    let count = || {
        psql(&format!("SELECT count(*) FROM {table}"))
            .parse::<usize>()
            .unwrap_or(0)
    };
    workers[0].expect_within(secs(120), "a third of the rows", || count() >= N / 3);
    workers[1].kill();
    let at_kill = count();
    workers[0].expect_within(secs(240), "every id in the table", || count() >= N);
    let elapsed = started.elapsed();

    let split = psql(&format!(
        "SELECT worker || '=' || count(*) FROM {table} GROUP BY worker ORDER BY worker"
    ));
    let duplicates = psql(&format!(
        "SELECT coalesce(sum(deliveries - 1), 0) FROM {table}"
    ));
    eprintln!(
        "scale-out: {N} messages (published in {published:.1?}), w2 SIGKILLed at {at_kill} rows; \
         all {N} ids after {elapsed:.1?}; split {}; duplicate deliveries {duplicates}",
        split.replace('\n', " ")
    );
    assert_eq!(count(), N);
    let per_worker: Vec<usize> = split
        .lines()
        .filter_map(|l| l.split('=').nth(1)?.parse().ok())
        .collect();
    assert_eq!(per_worker.len(), 3, "every process took a share: {split}");
    assert!(per_worker.iter().all(|&n| n > 0), "{split}");
    workers[0].assert_running();
    workers[2].assert_running();
    drop(workers);
    psql(&format!("DROP TABLE {table}"));
    rt.block_on(async {
        let _ = js.delete_stream(format!("IN_{u}")).await;
    });
}
