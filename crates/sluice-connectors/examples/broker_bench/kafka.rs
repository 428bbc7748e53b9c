//! Kafka → transform → Kafka: the floor is a consumer group member and an idempotent producer
//! written directly against rdkafka; sluice runs the equivalent flow. Both read the same
//! preloaded 6-partition topic and write to a topic of their own.

use super::{Res, TRANSFORM, measure, order, start_sluice, transform};
use futures_util::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const PARTITIONS: i32 = 6;

/// The bench's broker: `SLUICE_KAFKA_BROKERS`, as `.ci/kafka-broker.sh start` exports it.
pub fn brokers() -> Res<String> {
    std::env::var("SLUICE_KAFKA_BROKERS").map_err(|_| {
        "SLUICE_KAFKA_BROKERS is not set: start a broker with `eval \"$(.ci/kafka-broker.sh start)\"`"
            .into()
    })
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

async fn create_topics(brokers: &str, names: &[&str]) -> Res<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await?
    {
        result.map_err(|(name, code)| format!("create topic {name}: {code}"))?;
    }
    Ok(())
}

/// Produces `n` orders into `topic` (acks=all), spread over its partitions by key.
async fn preload(brokers: &str, topic: &str, n: usize) -> Res<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let sends = chunk.iter().map(|&i| {
            let (key, body) = (format!("c-{}", i % 997), order(i));
            let producer = producer.clone();
            async move {
                producer
                    .send(
                        FutureRecord::to(topic).key(&key).payload(&body),
                        Duration::from_secs(30),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }
        });
        for sent in futures_util::future::join_all(sends).await {
            sent?;
        }
    }
    Ok(())
}

/// Counts the records arriving in `topic` by reading every partition from its start on a
/// thread of its own (the broker's high watermarks are not trusted: tansu's are wrong).
struct Counter {
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Counter {
    fn start(brokers: &str, topic: &str) -> Res<Counter> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("bench-counter"))
            .set("enable.auto.commit", "false")
            .create()?;
        let mut list = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            list.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&list)?;
        let (count, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, s) = (count.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(Ok(_)) = consumer.poll(Duration::from_millis(50)) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Counter {
            count,
            stop,
            thread: Some(thread),
        })
    }

    fn get(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The floor: a group member that transforms each message, produces it (idempotent, acks=all)
/// and, once the broker acknowledged it, stores the input's offset for the next commit, with
/// `c` messages in flight.
pub async fn floor(brokers: &str, n: usize, c: usize) -> Res<f64> {
    let (inp, out) = (unique("bench-in-floor"), unique("bench-out-floor"));
    create_topics(brokers, &[&inp, &out]).await?;
    preload(brokers, &inp, n).await?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("floor"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("queued.min.messages", "500")
        .create()?;
    consumer.subscribe(&[&inp])?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let consumer = Arc::new(consumer);
    let counter = Counter::start(brokers, &out)?;
    let worker = {
        let (consumer, out) = (consumer.clone(), out.clone());
        tokio::spawn(async move {
            consumer
                .stream()
                .for_each_concurrent(c, |m| {
                    let (consumer, producer, out) = (&consumer, producer.clone(), &out);
                    async move {
                        let Ok(m) = m else { return };
                        let Ok(body) = transform(m.payload().unwrap_or_default()) else {
                            return;
                        };
                        let mut record = FutureRecord::to(out).payload(&body);
                        if let Some(key) = m.key() {
                            record = record.key(key);
                        }
                        if producer.send(record, Duration::from_secs(30)).await.is_ok() {
                            let _ = consumer.store_offset_from_message(&m);
                        }
                    }
                })
                .await;
        })
    };
    let rate = measure(n, || async { Ok(counter.get()) }).await;
    worker.abort();
    rate
}

/// sluice: a `kafka` trigger (`order: none`, so that the messages of a partition run side by
/// side as the floor's do), a `transform` step and a `kafka` sink.
pub async fn sluice(brokers: &str, bin: &Path, n: usize, c: usize) -> Res<f64> {
    let (inp, out) = (unique("bench-in-sluice"), unique("bench-out-sluice"));
    create_topics(brokers, &[&inp, &out]).await?;
    preload(brokers, &inp, n).await?;
    let counter = Counter::start(brokers, &out)?;
    let group = unique("sluice");
    let flow = format!(
        "name: bench\nconcurrency: {c}\ntrigger:\n  kafka: {{ brokers: \"{brokers}\", topics: [{inp}], group: {group}, start: earliest, order: none, session_timeout: 6s, heartbeat_interval: 1s }}\nsteps:\n  - transform: \"{TRANSFORM}\"\n  - to: out\nsinks:\n  out:\n    kafka: {{ brokers: \"{brokers}\", topic: {out}, key: \"{{{{customer}}}}\" }}\n"
    );
    let _proc = start_sluice(bin, &flow)?;
    measure(n, || async { Ok(counter.get()) }).await
}
