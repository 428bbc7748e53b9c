//! The loop of one consumer: hands messages to the flow, keeps the offsets of each
//! partition, commits the confirmed ones in batches, pauses partitions instead of buffering,
//! and reads a partition again after a failure that was not dead-lettered.

use super::context::{ConsumerCx, Part, Ready, Shared, lock};
use super::message::{Settle, envelope};
use super::trigger::{KafkaTrigger, KafkaTriggerError};
use futures_util::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use sluice_engine::{Envelope, Inlet};
use sluice_flow::KafkaOrder;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An envelope on its way into the flow's queue: `false` once the flow is stopping.
type Sending = Pin<Box<dyn Future<Output = bool> + Send>>;

/// One consumer's loop.
pub(super) struct Run<'a> {
    pub(super) trigger: &'a KafkaTrigger,
    pub(super) inlet: &'a Inlet,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) tx: mpsc::UnboundedSender<Settle>,
    /// Envelopes made and not yet heard back from (each acknowledger reports once).
    pub(super) open: usize,
    /// Messages settled since the last commit.
    pub(super) since_commit: usize,
    pub(super) stopping: bool,
}

/// What to ask of librdkafka once the lock is released.
#[derive(Default)]
struct Actions {
    pause: TopicPartitionList,
    resume: TopicPartitionList,
    seek: Vec<(Arc<str>, i32, i64)>,
}

impl Run<'_> {
    pub(super) async fn serve(
        &mut self,
        consumer: &StreamConsumer<ConsumerCx>,
        mut rx: mpsc::UnboundedReceiver<Settle>,
        stop: &CancellationToken,
    ) -> Result<(), KafkaTriggerError> {
        let mut sending: Option<Sending> = None;
        let mut commits = tokio::time::interval(self.trigger.commit_interval);
        commits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if sending.is_none() {
                let next = lock(&self.shared).ready.pop_front();
                if let Some(ready) = next {
                    let inlet = self.inlet.clone();
                    let mut send: Sending =
                        Box::pin(async move { inlet.send(ready.envelope).await.is_ok() });
                    match send.as_mut().now_or_never() {
                        Some(true) => continue,
                        Some(false) => break,
                        // The flow's queue is full: what arrives meanwhile waits here, and
                        // past `batch` per assigned partition of it every partition is paused
                        // (`take`).
                        None => sending = Some(send),
                    }
                }
            }
            // Resumed once the waiting messages are down to half of the pause threshold: a
            // pause drops what librdkafka fetched ahead, so pausing and resuming at one
            // threshold would fetch the same messages again and again.
            let (waiting, full_at) = {
                let shared = lock(&self.shared);
                (shared.ready.len(), shared.full_at(self.trigger.batch))
            };
            if waiting <= full_at / 2 {
                self.resume_all(consumer);
            }
            let resume_at = self.next_resume();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(settle) = rx.recv() => {
                    let mut actions = Actions::default();
                    self.settle(settle, &mut actions);
                    while let Ok(settle) = rx.try_recv() {
                        self.settle(settle, &mut actions);
                    }
                    self.apply(consumer, actions)?;
                    if self.since_commit >= self.trigger.commit_count {
                        self.commit(consumer, CommitMode::Async);
                    }
                }
                queued = async { sending.as_mut().expect("guarded").await }, if sending.is_some() => {
                    sending = None;
                    if !queued {
                        break;
                    }
                }
                _ = commits.tick() => self.commit(consumer, CommitMode::Async),
                _ = sleep_until(resume_at), if resume_at.is_some() => self.resume_due(consumer),
                message = consumer.recv() => match message {
                    Ok(message) => self.take(consumer, &message),
                    Err(e) => self.consume_error(e)?,
                },
            }
        }
        // Stopping: nothing more goes into the flow; what is in it finishes (the engine
        // bounds the drain), and what it confirmed is committed before the consumer closes.
        self.stopping = true;
        drop(sending);
        let unsent = {
            let mut shared = lock(&self.shared);
            let mut unsent: Vec<Envelope> = shared.ready.drain(..).map(|r| r.envelope).collect();
            for parts in shared.parts.values_mut() {
                for part in parts.values_mut() {
                    unsent.extend(part.waiting.drain(..));
                }
            }
            unsent
        };
        drop(unsent);
        self.pause_all(consumer);
        while self.open > 0 {
            tokio::select! {
                Some(settle) = rx.recv() => self.settle(settle, &mut Actions::default()),
                _ = commits.tick() => self.commit(consumer, CommitMode::Async),
                // Served so the group keeps this member (and its revoke commits) meanwhile.
                _ = consumer.recv() => {}
            }
        }
        self.commit(consumer, CommitMode::Sync);
        Ok(())
    }

    /// A message arrived: it becomes an envelope, ready or waiting behind its partition.
    fn take(&mut self, consumer: &StreamConsumer<ConsumerCx>, message: &BorrowedMessage<'_>) {
        let (partition, offset) = (message.partition(), message.offset());
        let batch = self.trigger.batch;
        let mut pause = None;
        let mut shared = lock(&self.shared);
        let Some(topic) = shared.topic(message.topic()) else {
            // Not (or no longer) assigned here: its owner reads it.
            return;
        };
        let Some(part) = shared.part(&topic, partition) else {
            return;
        };
        if offset < part.position {
            // Fetched before a rewind; it comes again in its turn.
            return;
        }
        part.position = offset + 1;
        part.offsets.read(offset);
        let envelope = envelope(
            message,
            &topic,
            part.epoch,
            self.inlet,
            self.trigger.format,
            &self.tx,
        );
        self.open += 1;
        let ready = match self.trigger.order {
            KafkaOrder::Partition if part.busy => {
                part.waiting.push_back(envelope);
                if part.waiting.len() >= batch && !part.held {
                    part.held = true;
                    pause = Some(one(&topic, partition));
                }
                None
            }
            KafkaOrder::Partition => {
                part.busy = true;
                Some(envelope)
            }
            KafkaOrder::None => Some(envelope),
        };
        if let Some(envelope) = ready {
            shared.ready.push_back(Ready {
                topic,
                partition,
                envelope,
            });
        }
        let full = shared.ready.len() >= shared.full_at(batch);
        drop(shared);
        if let Some(list) = pause {
            let _ = consumer.pause(&list);
        }
        if full {
            // The flow cannot keep up: stop fetching rather than buffer.
            self.pause_all(consumer);
        }
    }

    /// An acknowledgement came back.
    fn settle(&mut self, settle: Settle, actions: &mut Actions) {
        self.open = self.open.saturating_sub(1);
        if self.stopping && !settle.settled {
            return;
        }
        let order = self.trigger.order;
        let batch = self.trigger.batch;
        let mut shared = lock(&self.shared);
        let fresh = shared.epoch();
        let Some(part) = shared.part(&settle.topic, settle.partition) else {
            return;
        };
        if part.epoch != settle.epoch {
            return;
        }
        if settle.settled {
            part.offsets.settled(settle.offset);
            self.since_commit += 1;
            if order == KafkaOrder::Partition {
                part.busy = false;
                let next = part.waiting.pop_front();
                if part.held && part.resume_at.is_none() && part.waiting.len() <= batch / 2 {
                    part.held = false;
                    actions
                        .resume
                        .add_partition(&settle.topic, settle.partition);
                }
                if let Some(envelope) = next {
                    part.busy = true;
                    shared.ready.push_back(Ready {
                        topic: settle.topic,
                        partition: settle.partition,
                        envelope,
                    });
                }
            }
            return;
        }
        if self.stopping {
            return;
        }
        // Failed for now and not dead-lettered: read the partition again from its first
        // open offset after `retry_delay`; what is in flight behind it is forgotten (its
        // acknowledgements carry the old epoch).
        let from = part.offsets.first_open().unwrap_or(settle.offset);
        part.offsets.rewind();
        let forgotten: Vec<Envelope> = part.waiting.drain(..).collect();
        part.epoch = fresh;
        part.busy = false;
        part.position = from;
        part.held = true;
        part.resume_at = Some(Instant::now() + self.trigger.retry_delay);
        shared
            .ready
            .retain(|r| !(r.partition == settle.partition && r.topic == settle.topic));
        drop(shared);
        drop(forgotten);
        tracing::info!(flow = %self.inlet.flow(), topic = %settle.topic, partition = settle.partition, offset = from,
            "kafka: a message failed and was not dead-lettered; its partition is read again from offset {from} in {}",
            humantime::format_duration(self.trigger.retry_delay));
        actions.pause.add_partition(&settle.topic, settle.partition);
        actions.seek.push((settle.topic, settle.partition, from));
    }

    fn apply(
        &self,
        consumer: &StreamConsumer<ConsumerCx>,
        actions: Actions,
    ) -> Result<(), KafkaTriggerError> {
        if actions.pause.count() > 0 {
            let _ = consumer.pause(&actions.pause);
        }
        for (topic, partition, offset) in actions.seek {
            consumer
                .seek(
                    &topic,
                    partition,
                    Offset::Offset(offset),
                    Duration::from_secs(10),
                )
                .map_err(|source| KafkaTriggerError::Seek {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    source,
                })?;
        }
        if actions.resume.count() > 0 && !lock(&self.shared).paused_all {
            let _ = consumer.resume(&actions.resume);
        }
        Ok(())
    }

    /// Commits the offsets confirmed since the last commit.
    fn commit(&mut self, consumer: &StreamConsumer<ConsumerCx>, mode: CommitMode) {
        self.since_commit = 0;
        let list = lock(&self.shared).take_commit();
        if list.count() == 0 {
            return;
        }
        if let Err(e) = consumer.commit(&list, mode) {
            tracing::warn!(flow = %self.inlet.flow(), group = %self.trigger.group, "kafka: commit failed (made again at the next one): {e}");
            lock(&self.shared).commit_failed(&list);
        }
    }

    /// Pauses every assigned partition (the flow's queue is full).
    fn pause_all(&self, consumer: &StreamConsumer<ConsumerCx>) {
        let list = {
            let mut shared = lock(&self.shared);
            if shared.paused_all {
                return;
            }
            shared.paused_all = true;
            shared.list(|_| true)
        };
        let _ = consumer.pause(&list);
    }

    /// Resumes the partitions paused for a full queue (not those held for their own reason).
    fn resume_all(&self, consumer: &StreamConsumer<ConsumerCx>) {
        let list = {
            let mut shared = lock(&self.shared);
            if !shared.paused_all || self.stopping {
                return;
            }
            shared.paused_all = false;
            shared.list(|part| !part.held)
        };
        let _ = consumer.resume(&list);
    }

    /// When the first partition held after a failure is due to read again.
    fn next_resume(&self) -> Option<Instant> {
        let shared = lock(&self.shared);
        shared
            .parts
            .values()
            .flat_map(|parts| parts.values())
            .filter_map(|part| part.resume_at)
            .min()
    }

    /// Resumes the partitions whose retry delay is over.
    fn resume_due(&self, consumer: &StreamConsumer<ConsumerCx>) {
        let now = Instant::now();
        let list = {
            let mut shared = lock(&self.shared);
            let mut list = TopicPartitionList::new();
            for (topic, parts) in &mut shared.parts {
                for (partition, part) in parts.iter_mut() {
                    if part.resume_at.is_some_and(|at| at <= now) {
                        resume_now(part);
                        list.add_partition(topic, *partition);
                    }
                }
            }
            if shared.paused_all {
                return;
            }
            list
        };
        let _ = consumer.resume(&list);
    }

    /// An error from the consumer: fatal ones make it again, the rest are logged (librdkafka
    /// recovers from them by itself).
    fn consume_error(&self, e: KafkaError) -> Result<(), KafkaTriggerError> {
        match e {
            KafkaError::MessageConsumptionFatal(_) => Err(KafkaTriggerError::Fatal(e)),
            other => {
                tracing::warn!(flow = %self.inlet.flow(), group = %self.trigger.group, "kafka: {other}");
                Ok(())
            }
        }
    }
}

/// A held partition reads again.
fn resume_now(part: &mut Part) {
    part.resume_at = None;
    part.held = false;
}

/// A list of one partition.
fn one(topic: &str, partition: i32) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    list
}

/// Sleeps until `at` (never, without one: the branch is disabled then).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
