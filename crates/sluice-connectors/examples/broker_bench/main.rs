//! Broker throughput benchmark: sluice against the floor, a minimal consumer/republisher written
//! directly against the same client crate, in the same run, on the same ~250-byte messages.
//!
//! ```text
//! broker_bench <jetstream|amqp|kafka|postgres> --sluice target/release/sluice [-n 20000] [-c 64]
//! ```
//!
//! Each case preloads `n` messages, then measures from the first output to the last: for the
//! floor, an in-process consumer that parses each message, builds the same transformed JSON,
//! publishes it (waiting for the broker's confirmation) and acks the input, with `c` messages in
//! flight; for sluice, `sluice run` with an equivalent flow (concurrency `c`). `postgres` measures
//! JetStream → sluice → PostgreSQL rows/s. `kafka` runs against `SLUICE_KAFKA_BROKERS` (see
//! `.ci/kafka-broker.sh`).

mod kafka;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NATS: &str = "nats://127.0.0.1:4222";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const PG: &str = "host=127.0.0.1 user=postgres dbname=test";
const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A ~250-byte order.
fn order(i: usize) -> Vec<u8> {
    let v = json!({
        "id": format!("o-{i:07}"),
        "customer": { "id": format!("c-{}", i % 997), "country": "DE", "tier": "gold" },
        "currency": "EUR",
        "lines": [ { "sku": "A-100", "qty": 2, "price": 9.5 }, { "sku": "B-200", "qty": 1, "price": 24.0 } ],
        "note": "bench bench bench bench bench bench",
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The transformation both sides apply (the flow's `transform` step does the same).
const TRANSFORM: &str = "{order_id: id, customer: customer.id, country: customer.country, lines: lines, currency: currency}";

fn transform(body: &[u8]) -> Res<Vec<u8>> {
    let v: Value = serde_json::from_slice(body)?;
    let out = json!({
        "order_id": v["id"], "customer": v["customer"]["id"], "country": v["customer"]["country"],
        "lines": v["lines"], "currency": v["currency"],
    });
    Ok(serde_json::to_vec(&out)?)
}

/// A running `sluice run`, killed on drop.
struct SluiceProc {
    child: Child,
    // Kept so the working directory lives exactly as long as the process.
    _dir: tempfile::TempDir,
}

impl Drop for SluiceProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sluice(bin: &Path, flow: &str) -> Res<SluiceProc> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("flows"))?;
    std::fs::write(dir.path().join("flows/bench.yaml"), flow)?;
    let log = std::fs::File::create(dir.path().join("sluice.log"))?;
    let child = Command::new(bin)
        .arg("run")
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()?;
    Ok(SluiceProc { child, _dir: dir })
}

/// Polls `count` until it reaches `n`; returns msgs/s from the first output to the last.
async fn measure<F, Fut>(n: usize, mut count: F) -> Res<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Res<usize>>,
{
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut first, mut first_at) = (0, None);
    loop {
        let c = count().await?;
        if first_at.is_none() && c > 0 {
            first = c;
            first_at = Some(Instant::now());
        }
        if c >= n {
            let secs = first_at
                .map_or(1.0, |t| t.elapsed().as_secs_f64())
                .max(1e-3);
            return Ok((n - first) as f64 / secs);
        }
        if Instant::now() > deadline {
            return Err(format!("only {c} of {n} outputs after 600 s").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn js_setup(js: &jetstream::Context, tag: &str, n: usize) -> Res<(String, String)> {
    let (inp, out) = (format!("BENCH_IN_{tag}"), format!("BENCH_OUT_{tag}"));
    let _ = js.delete_stream(&inp).await;
    let _ = js.delete_stream(&out).await;
    for (name, subject) in [(&inp, "in"), (&out, "out")] {
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("bench.{tag}.{subject}")],
            ..Default::default()
        })
        .await?;
    }
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut acks = Vec::new();
        for &i in chunk {
            acks.push(
                js.publish(format!("bench.{tag}.in"), order(i).into())
                    .await?,
            );
        }
        for a in acks {
            a.await?;
        }
    }
    Ok((inp, out))
}

async fn js_count(js: &jetstream::Context, name: &str) -> Res<usize> {
    Ok(js.get_stream(name).await?.info().await?.state.messages as usize)
}

async fn jetstream_floor(js: jetstream::Context, n: usize, c: usize) -> Res<f64> {
    let (inp, out) = js_setup(&js, "floor", n).await?;
    let stream = js.get_stream(&inp).await?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("floor".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(256)
        .messages()
        .await?;
    let worker_js = js.clone();
    let worker = tokio::spawn(async move {
        messages
            .for_each_concurrent(c, |m| {
                let js = worker_js.clone();
                async move {
                    let Ok(m) = m else { return };
                    let Ok(body) = transform(&m.payload) else {
                        return;
                    };
                    if let Ok(ack) = js.publish("bench.floor.out", body.into()).await
                        && ack.await.is_ok()
                    {
                        let _ = m.ack().await;
                    }
                }
            })
            .await;
    });
    let rate = measure(n, || js_count(&js, &out)).await;
    worker.abort();
    let _ = js.delete_stream(&inp).await;
    let _ = js.delete_stream(&out).await;
    rate
}

async fn jetstream_sluice(js: jetstream::Context, bin: &Path, n: usize, c: usize) -> Res<f64> {
    let (inp, out) = js_setup(&js, "sluice", n).await?;
    let flow = format!(
        "name: bench\nconcurrency: {c}\ntrigger:\n  nats: {{ stream: {inp}, subject: bench.sluice.in, durable: sluice, batch: 256, max_deliver: -1 }}\nsteps:\n  - transform: \"{TRANSFORM}\"\n  - to: out\nsinks:\n  out:\n    nats: {{ subject: bench.sluice.out }}\n"
    );
    let _proc = start_sluice(bin, &flow)?;
    let rate = measure(n, || js_count(&js, &out)).await;
    let _ = js.delete_stream(&inp).await;
    let _ = js.delete_stream(&out).await;
    rate
}

async fn amqp_channel() -> Res<(Connection, lapin::Channel)> {
    let conn = Connection::connect(AMQP, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((conn, ch))
}

async fn amqp_setup(ch: &lapin::Channel, tag: &str, n: usize) -> Res<(String, String)> {
    let (inp, out) = (format!("bench_in_{tag}"), format!("bench_out_{tag}"));
    for q in [&inp, &out] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    }
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut confirms = Vec::new();
        for &i in chunk {
            confirms.push(
                ch.basic_publish(
                    "".into(),
                    inp.as_str().into(),
                    BasicPublishOptions::default(),
                    &order(i),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?,
            );
        }
        for c in confirms {
            c.await?;
        }
    }
    Ok((inp, out))
}

async fn amqp_count(ch: &lapin::Channel, q: &str) -> Res<usize> {
    let q = ch
        .queue_declare(
            q.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(q.message_count() as usize)
}

async fn amqp_floor(n: usize, c: usize) -> Res<f64> {
    let (_conn, ch) = amqp_channel().await?;
    let (inp, out) = amqp_setup(&ch, "floor", n).await?;
    let (_wconn, wch) = amqp_channel().await?;
    wch.basic_qos(c as u16, BasicQosOptions::default()).await?;
    let consumer = wch
        .basic_consume(
            inp.as_str().into(),
            "floor".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let out2 = out.clone();
    let worker = tokio::spawn(async move {
        consumer
            .for_each_concurrent(c, |d| {
                let (wch, out) = (wch.clone(), out2.clone());
                async move {
                    let Ok(d) = d else { return };
                    let Ok(body) = transform(&d.data) else {
                        return;
                    };
                    let published = wch
                        .basic_publish(
                            "".into(),
                            out.as_str().into(),
                            BasicPublishOptions::default(),
                            &body,
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await;
                    if let Ok(confirm) = published
                        && confirm.await.is_ok()
                    {
                        let _ = d.acker.ack(BasicAckOptions::default()).await;
                    }
                }
            })
            .await;
    });
    let rate = measure(n, || amqp_count(&ch, &out)).await;
    worker.abort();
    for q in [&inp, &out] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    rate
}

async fn amqp_sluice(bin: &Path, n: usize, c: usize) -> Res<f64> {
    let (_conn, ch) = amqp_channel().await?;
    let (inp, out) = amqp_setup(&ch, "sluice", n).await?;
    let flow = format!(
        "name: bench\nconcurrency: {c}\ntrigger:\n  amqp: {{ url: \"{AMQP}\", queue: {inp} }}\nsteps:\n  - transform: \"{TRANSFORM}\"\n  - to: out\nsinks:\n  out:\n    amqp: {{ url: \"{AMQP}\", routing_key: {out} }}\n"
    );
    let _proc = start_sluice(bin, &flow)?;
    let rate = measure(n, || amqp_count(&ch, &out)).await;
    for q in [&inp, &out] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    rate
}

async fn postgres_sluice(js: jetstream::Context, bin: &Path, n: usize, c: usize) -> Res<f64> {
    let (client, conn) = tokio_postgres::connect(PG, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(
            "DROP TABLE IF EXISTS bench_orders; CREATE TABLE bench_orders (order_id text PRIMARY KEY, customer text, country text, lines jsonb)",
        )
        .await?;
    let (inp, out) = js_setup(&js, "pg", n).await?;
    let _ = js.delete_stream(&out).await;
    let flow = format!(
        "name: bench\nconcurrency: {c}\ntrigger:\n  nats: {{ stream: {inp}, subject: bench.pg.in, durable: pg, batch: 256, max_deliver: -1 }}\nsteps:\n  - to: rows\nsinks:\n  rows:\n    postgres: {{ url: \"{PG_URL}\", pool: {pool}, table: bench_orders, columns: {{ order_id: id, customer: customer.id, country: customer.country, lines: lines }}, on_conflict: {{ key: [order_id], update: [lines] }} }}\n",
        pool = c.min(16)
    );
    let _proc = start_sluice(bin, &flow)?;
    let rate = measure(n, || async {
        let row = client
            .query_one("SELECT count(*) FROM bench_orders", &[])
            .await?;
        Ok(row.get::<_, i64>(0) as usize)
    })
    .await;
    let _ = js.delete_stream(&inp).await;
    client
        .batch_execute("DROP TABLE IF EXISTS bench_orders")
        .await?;
    rate
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let case = args.get(1).cloned().unwrap_or_default();
    let mut n = 20_000;
    let mut c = 64;
    let mut bin = PathBuf::from("target/release/sluice");
    let mut i = 2;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "-n" => n = value.parse()?,
            "-c" => c = value.parse()?,
            "--sluice" => bin = PathBuf::from(value),
            other => return Err(format!("unknown option {other}").into()),
        }
        i += 2;
    }
    println!(
        "message size: {} bytes, n = {n}, in flight = {c}",
        order(1).len()
    );
    match case.as_str() {
        "jetstream" => {
            let js = jetstream::new(async_nats::connect(NATS).await?);
            let floor = jetstream_floor(js.clone(), n, c).await?;
            let sluice = jetstream_sluice(js, &bin, n, c).await?;
            println!(
                "JetStream -> transform -> JetStream: floor {floor:.0} msg/s, sluice {sluice:.0} msg/s, ratio {:.2}",
                sluice / floor
            );
        }
        "amqp" => {
            let floor = amqp_floor(n, c).await?;
            let sluice = amqp_sluice(&bin, n, c).await?;
            println!(
                "RabbitMQ -> transform -> RabbitMQ: floor {floor:.0} msg/s, sluice {sluice:.0} msg/s, ratio {:.2}",
                sluice / floor
            );
        }
        "kafka" => {
            let brokers = kafka::brokers()?;
            let floor = kafka::floor(&brokers, n, c).await?;
            let sluice = kafka::sluice(&brokers, &bin, n, c).await?;
            println!(
                "Kafka -> transform -> Kafka: floor {floor:.0} msg/s, sluice {sluice:.0} msg/s, ratio {:.2}",
                sluice / floor
            );
        }
        "postgres" => {
            let js = jetstream::new(async_nats::connect(NATS).await?);
            let rate = postgres_sluice(js, &bin, n, c).await?;
            println!("JetStream -> sluice -> PostgreSQL upsert: {rate:.0} rows/s");
        }
        _ => {
            return Err(
                "usage: broker_bench <jetstream|amqp|kafka|postgres> [--sluice PATH] [-n N] [-c C]"
                    .into(),
            );
        }
    }
    Ok(())
}
