//! What the consuming loop shares with librdkafka's callbacks: the assigned partitions and
//! their offsets, and the callbacks themselves (commit on revoke, take an assignment, the
//! consumer lag metric, broker health).
//!
//! The callbacks run inside the consumer's poll, on the loop's own task, while the loop
//! holds no lock; neither side holds the lock while it calls into librdkafka (a commit may
//! call back into [`ConsumerCx::commit_callback`] before it returns).

use super::offsets::Offsets;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_engine::{Envelope, Inlet};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// One assigned partition.
pub(crate) struct Part {
    /// Changes whenever the messages read so far are forgotten (a rewind, a new
    /// assignment), so that an acknowledgement from before is recognised and ignored.
    pub epoch: u64,
    pub offsets: Offsets,
    /// The next offset expected; a message before it is one fetched before a rewind.
    pub position: i64,
    /// `order: partition`: the messages read behind the one in the flow.
    pub waiting: VecDeque<Envelope>,
    /// `order: partition`: a message of this partition is in the flow.
    pub busy: bool,
    /// Paused for a reason of its own (too many waiting, or a retry delay), apart from the
    /// pause of every partition while the flow's queue is full.
    pub held: bool,
    /// When a partition held after a failure reads again.
    pub resume_at: Option<Instant>,
}

/// An envelope ready to go into the flow's queue, in order, with its partition.
pub(crate) struct Ready {
    pub topic: Arc<str>,
    pub partition: i32,
    pub envelope: Envelope,
}

/// The state of one consumer, shared by the loop and the callbacks.
#[derive(Default)]
pub(crate) struct Shared {
    /// Topic → partition → its state; only assigned partitions are here.
    pub parts: HashMap<Arc<str>, HashMap<i32, Part>>,
    pub ready: VecDeque<Ready>,
    /// Every partition is paused: the flow's queue is full.
    pub paused_all: bool,
    /// The group gave this consumer an assignment (possibly empty) at least once.
    pub joined: bool,
    next_epoch: u64,
}

impl Shared {
    /// A fresh epoch.
    pub fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    /// The state of an assigned partition.
    pub fn part(&mut self, topic: &str, partition: i32) -> Option<&mut Part> {
        self.parts.get_mut(topic)?.get_mut(&partition)
    }

    /// How many messages may wait in front of a full flow queue before every partition is
    /// paused: four times `batch` per assigned partition, a bound a flow that keeps up never
    /// reaches. Lower bounds paused and resumed all the time, and each pause drops
    /// librdkafka's prefetch: `batch` in all ran the Kafka → Kafka benchmark at 0.09 of its
    /// floor, `batch` per partition at 0.31-0.59, four times that at 0.88-1.36 (bench/README.md).
    pub fn full_at(&self, batch: usize) -> usize {
        let assigned: usize = self.parts.values().map(|parts| parts.len()).sum();
        batch.saturating_mul(assigned.max(1)).saturating_mul(4)
    }

    /// The interned name of an assigned topic.
    pub fn topic(&self, topic: &str) -> Option<Arc<str>> {
        self.parts
            .get_key_value(topic)
            .map(|(name, _)| name.clone())
    }

    /// Every assigned partition for which `keep` holds, as a list for librdkafka.
    pub fn list(&self, keep: impl Fn(&Part) -> bool) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, parts) in &self.parts {
            for (partition, part) in parts {
                if keep(part) {
                    list.add_partition(topic, *partition);
                }
            }
        }
        list
    }

    /// The offsets to commit now (each marked committed).
    pub fn take_commit(&mut self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, parts) in &mut self.parts {
            for (partition, part) in parts {
                if let Some(to) = part.offsets.take_commit() {
                    // Adding to a fresh list fails only for an invalid offset, which this is not.
                    let _ = list.add_partition_offset(topic, *partition, Offset::Offset(to));
                }
            }
        }
        list
    }

    /// A commit of `list` failed: its offsets are to be committed again.
    pub fn commit_failed(&mut self, list: &TopicPartitionList) {
        for element in list.elements() {
            if let (Some(part), Offset::Offset(to)) = (
                self.part(element.topic(), element.partition()),
                element.offset(),
            ) {
                part.offsets.commit_failed(to);
            }
        }
    }
}

/// The shared state, locked (a panic elsewhere does not make it unusable).
pub(crate) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The consumer's callbacks.
pub(crate) struct ConsumerCx {
    pub shared: Arc<Mutex<Shared>>,
    pub inlet: Inlet,
    pub group: String,
}

impl ConsumerCx {
    fn flow(&self) -> &str {
        self.inlet.flow()
    }

    /// Tells `/api/flows` which partitions this process holds now.
    fn report_assignment(&self, shared: &Shared) {
        let mut partitions = serde_json::Map::new();
        let mut topics: Vec<_> = shared.parts.iter().collect();
        topics.sort_by(|a, b| a.0.cmp(b.0));
        for (topic, parts) in topics {
            let mut numbers: Vec<i32> = parts.keys().copied().collect();
            numbers.sort_unstable();
            partitions.insert(topic.to_string(), serde_json::json!(numbers));
        }
        self.inlet.set_source_state(serde_json::json!({
            "group": self.group,
            "partitions": partitions,
        }));
    }
}

impl ClientContext for ConsumerCx {
    fn stats(&self, statistics: Statistics) {
        {
            let mut shared = lock(&self.shared);
            for (name, topic) in &statistics.topics {
                for (partition, stats) in &topic.partitions {
                    // librdkafka's internal partition -1, and partitions of other members.
                    if *partition < 0 || shared.part(name, *partition).is_none() {
                        continue;
                    }
                    if stats.consumer_lag >= 0 {
                        metrics::gauge!("sluice_kafka_consumer_lag",
                            "flow" => self.flow().to_owned(),
                            "topic" => name.clone(),
                            "partition" => partition.to_string())
                        .set(stats.consumer_lag as f64);
                    }
                }
            }
            if !shared.joined {
                return;
            }
        }
        let up = statistics
            .brokers
            .values()
            .any(|broker| broker.nodeid >= 0 && broker.state == "UP");
        let known = statistics.brokers.values().any(|broker| broker.nodeid >= 0);
        if up {
            self.inlet.set_healthy();
        } else if known {
            self.inlet
                .set_unhealthy("kafka: no broker of the cluster is reachable");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.inlet
                .set_unhealthy(format!("kafka: all brokers are down ({reason})"));
        } else {
            tracing::warn!(flow = %self.flow(), "kafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ConsumerCx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        // Commit what the sinks confirmed before another member takes the partitions, and
        // forget the rest: it is redelivered to the new owner (at most what was in flight).
        let (commit, dropped) = {
            let mut shared = lock(&self.shared);
            let mut commit = TopicPartitionList::new();
            let mut dropped = Vec::new();
            for element in revoked.elements() {
                let (topic, partition) = (element.topic(), element.partition());
                let Some(parts) = shared.parts.get_mut(topic) else {
                    continue;
                };
                if let Some(mut part) = parts.remove(&partition) {
                    if let Some(to) = part.offsets.take_commit() {
                        let _ = commit.add_partition_offset(topic, partition, Offset::Offset(to));
                    }
                    dropped.extend(part.waiting.drain(..));
                }
                if parts.is_empty() {
                    shared.parts.remove(topic);
                }
            }
            self.report_assignment(&shared);
            let ready = std::mem::take(&mut shared.ready);
            let (keep, gone): (VecDeque<Ready>, VecDeque<Ready>) =
                ready.into_iter().partition(|r| {
                    shared
                        .parts
                        .get(&r.topic)
                        .is_some_and(|p| p.contains_key(&r.partition))
                });
            shared.ready = keep;
            dropped.extend(gone.into_iter().map(|r| r.envelope));
            (commit, dropped)
        };
        // Their acknowledgers tell the loop they were not processed; outside the lock.
        drop(dropped);
        if commit.count() > 0
            && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
        {
            tracing::warn!(flow = %self.flow(), group = %self.group,
                "kafka: commit on revoke failed (the new owner reads those messages again): {e}");
        }
        tracing::info!(flow = %self.flow(), group = %self.group, partitions = %names(revoked), "kafka: partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                let paused = {
                    let mut shared = lock(&self.shared);
                    for element in assigned.elements() {
                        let epoch = shared.epoch();
                        let topic: Arc<str> = shared
                            .topic(element.topic())
                            .unwrap_or_else(|| element.topic().into());
                        shared.parts.entry(topic).or_default().insert(
                            element.partition(),
                            Part {
                                epoch,
                                offsets: Offsets::default(),
                                position: 0,
                                waiting: VecDeque::new(),
                                busy: false,
                                held: false,
                                resume_at: None,
                            },
                        );
                    }
                    shared.joined = true;
                    self.report_assignment(&shared);
                    shared.paused_all
                };
                if paused {
                    // The flow's queue is still full: the new partitions wait too.
                    let _ = consumer.pause(assigned);
                }
                self.inlet.set_healthy();
                tracing::info!(flow = %self.flow(), group = %self.group, partitions = %names(assigned), "kafka: partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(flow = %self.flow(), group = %self.group, "kafka: rebalance failed: {e}");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // Nothing to commit is no failure (a revoke with nothing new, say).
            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) {
                return;
            }
            tracing::warn!(flow = %self.flow(), group = %self.group, "kafka: commit failed (made again at the next one): {e}");
            lock(&self.shared).commit_failed(offsets);
        }
    }
}

/// `topic/partition` of every partition in `list`, for a log line.
fn names(list: &TopicPartitionList) -> String {
    let names: Vec<String> = list
        .elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(",")
    }
}
