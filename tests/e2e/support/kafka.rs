//! The Kafka tests' brokers and client. The brokers are the ones `.ci/kafka-broker.sh` starts
//! (from PyPI, on private ports): noida-db, named by `SLUICE_KAFKA_BROKERS`, and tansu, named
//! by `SLUICE_KAFKA_GROUP_BROKERS`, for the scale-out test (noida-db never evicts a SIGKILLed
//! member from a consumer group; tansu does); the client is
//! rdkafka's, used synchronously (a producer flushed before it returns, a consumer assigned
//! every partition from the start, outside any group).

use super::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The test broker's address, when `SLUICE_KAFKA_BROKERS` names one that answers; otherwise
/// prints why the test skips (or fails under `SLUICE_REQUIRE_SERVICES=1`).
pub fn kafka_brokers() -> Option<String> {
    brokers_of("SLUICE_KAFKA_BROKERS")
}

/// The broker of the scale-out test (`SLUICE_KAFKA_GROUP_BROKERS`), like [`kafka_brokers`].
pub fn kafka_group_brokers() -> Option<String> {
    brokers_of("SLUICE_KAFKA_GROUP_BROKERS")
}

fn brokers_of(var: &str) -> Option<String> {
    let Ok(brokers) = std::env::var(var) else {
        skip_or_fail(&format!(
            "{var} is not set (start the test brokers with `eval \"$(.ci/kafka-broker.sh start)\"`)"
        ));
        return None;
    };
    let port = brokers
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse::<u16>().ok());
    match port {
        Some(port) if service_available("Kafka", port) => Some(brokers),
        Some(_) => None,
        None => {
            skip_or_fail(&format!("{var}={brokers} is not host:port"));
            None
        }
    }
}

/// A topic name of its own for this test run.
pub fn kafka_topic(prefix: &str) -> String {
    unique_name(prefix)
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// Creates `topic` with `partitions` partitions (replication 1).
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = block_on(admin.create_topics(
        [&new],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
    ))
    .expect("create_topics");
    for result in results {
        if let Err((name, code)) = result {
            panic!("create topic {name}: {code}");
        }
    }
    // Wait (bounded) until the metadata shows every partition.
    let consumer = plain_consumer(brokers);
    let ok = wait_until(secs(20), || {
        partitions_of(&consumer, topic) == partitions as usize
    });
    assert!(
        ok,
        "topic {topic} did not show {partitions} partitions within 20 s"
    );
}

fn plain_consumer(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer")
}

fn partitions_of(consumer: &BaseConsumer, topic: &str) -> usize {
    consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()
        .and_then(|m| {
            m.topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len())
        })
        .unwrap_or(0)
}

/// One record to produce: an optional key, the value, and headers.
pub struct Out<'a> {
    /// The key.
    pub key: Option<&'a str>,
    /// The value (the message body).
    pub value: &'a [u8],
    /// Headers, name and value.
    pub headers: &'a [(&'a str, &'a str)],
    /// A partition, or the partitioner's choice.
    pub partition: Option<i32>,
}

/// Produces every record and waits (bounded) until the broker acknowledged them all.
pub fn produce(brokers: &str, topic: &str, records: &[Out<'_>]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for record in records {
        let mut headers = OwnedHeaders::new();
        for (name, value) in record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(*value),
            });
        }
        let mut base = BaseRecord::<str, [u8]>::to(topic)
            .payload(record.value)
            .headers(headers);
        if let Some(key) = record.key {
            base = base.key(key);
        }
        if let Some(partition) = record.partition {
            base = base.partition(partition);
        }
        let mut base = base;
        loop {
            match producer.send(base) {
                Ok(()) => break,
                Err((e, back)) => {
                    assert!(
                        e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        "produce: {e}"
                    );
                    producer.poll(millis(50));
                    base = back;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(secs(60)).expect("every record acknowledged");
}

/// A record read back.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its key, as text.
    pub key: Option<String>,
    /// Its value, as text.
    pub value: String,
    /// Its headers.
    pub headers: BTreeMap<String, String>,
}

impl Record {
    /// The value as JSON (`null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.value).unwrap_or(serde_json::Value::Null)
    }
}

/// Reads `topic` from the start of every partition until at least `at_least` records came
/// (or `timeout` passed), then what follows within a short quiet period; returns them all.
pub fn read_all(brokers: &str, topic: &str, at_least: usize, timeout: Duration) -> Vec<Record> {
    let consumer = plain_consumer(brokers);
    let deadline = Instant::now() + timeout;
    let mut partitions = 0;
    while partitions == 0 && Instant::now() < deadline {
        partitions = partitions_of(&consumer, topic);
    }
    let mut list = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&list).expect("assign");
    let mut records = Vec::new();
    let mut quiet_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= deadline || quiet_until.is_some_and(|q| now >= q) {
            break;
        }
        match consumer.poll(millis(200)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Record {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    headers,
                });
                if records.len() >= at_least && quiet_until.is_none() {
                    quiet_until = Some(Instant::now() + millis(500));
                }
            }
            Some(Err(e)) => eprintln!("read {topic}: {e}"),
            None => {}
        }
    }
    records
}

/// The offsets `group` committed on `topic`, per partition (absent: none committed).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let Ok(list) = consumer.committed_offsets(list, secs(10)) else {
        return BTreeMap::new();
    };
    list.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}
