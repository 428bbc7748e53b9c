//! The `redis` trigger: a Redis Stream read through a consumer group.
//!
//! On start the consumer first re-reads its own pending entries (a restart under the same
//! consumer name), then new ones (`>`); every `claim_idle / 2` it claims entries that have been
//! pending longer than `claim_idle` with any consumer (`XAUTOCLAIM`): a consumer that died
//! leaves nothing behind, and an entry whose processing failed is retried that way too.

use super::{CORRELATION_ID_FIELD, MESSAGE_ID_FIELD, RedisError};
use crate::codec::{self, consume_reconnecting};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};
use sluice_engine::{Acker, BuildContext, Envelope, Inlet, Message, Meta, Outcome, Trigger};
use sluice_engine::{CORRELATION_ID, Ids, MESSAGE_ID};
use sluice_flow::{Diagnostic, MessageFormat, RedisTriggerConfig};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long one `XREADGROUP` blocks waiting for new entries.
const BLOCK: Duration = Duration::from_secs(1);

/// Reads one stream through a consumer group.
pub struct RedisTrigger {
    url: String,
    tls: Option<redis::TlsCertificates>,
    stream: String,
    group: String,
    consumer: String,
    claim_idle: Duration,
    batch: usize,
    field: String,
    format: MessageFormat,
}

impl RedisTrigger {
    /// Builds the trigger; nothing is opened yet.
    pub fn new(config: &RedisTriggerConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        if config.stream.value.is_empty() {
            return Err(cx.diagnostic(&config.stream, "the `stream` is empty"));
        }
        if config.group.value.is_empty() {
            return Err(cx.diagnostic(&config.group, "the `group` is empty"));
        }
        let consumer = match &config.consumer {
            Some(name) => name.value.to_string(),
            None => {
                // Unique per process: a restarted process is a new consumer, and the entries
                // the old one left pending are claimed after `claim_idle`.
                let host = std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_default();
                format!("sluice-{host}-{}", std::process::id())
            }
        };
        Ok(RedisTrigger {
            url: config.url.value.to_string(),
            tls: super::load_tls(&config.url, config.tls.as_deref(), cx)?,
            stream: config.stream.value.to_string(),
            group: config.group.value.to_string(),
            consumer,
            claim_idle: config.claim_idle.0.max(Duration::from_millis(10)),
            batch: config.batch.0,
            field: config.field.to_string(),
            format: config.format,
        })
    }

    async fn consume(&self, inlet: &Inlet, stop: &CancellationToken) -> Result<(), RedisError> {
        let client = super::client(&self.url, self.tls.as_ref())?;
        // Blocking reads get their own connection, so acks never wait behind them.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
        let mut reader: MultiplexedConnection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|source| RedisError::Connect {
                url: crate::shown_url(&self.url),
                source,
            })?;
        let acks = super::manager(client, &self.url).await?;
        let created: Result<Value, _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut reader)
            .await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(RedisError::Command {
                command: "XGROUP CREATE",
                source: e,
            });
        }
        inlet.set_healthy();
        tracing::info!(flow = %inlet.flow(), stream = %self.stream, group = %self.group, consumer = %self.consumer, "redis consumer ready");
        // The group's lag (Redis 7: entries not yet delivered) and its pending entries.
        let _lag = {
            let (conn, stream, group) = (acks.clone(), self.stream.clone(), self.group.clone());
            crate::lag::spawn(inlet.flow(), stop, move || {
                let (mut conn, stream, group) = (conn.clone(), stream.clone(), group.clone());
                async move {
                    let reply: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
                        .arg("GROUPS")
                        .arg(&stream)
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    let found = reply.groups.into_iter().find(|g| g.name == group)?;
                    Some(crate::lag::Lag {
                        lag: found.lag.map(|l| l as u64),
                        pending: Some(found.pending as u64),
                    })
                }
            })
        };
        // Own pending entries first (a restart under a fixed consumer name), then new ones.
        let mut own_pending = true;
        let mut next_claim = Instant::now();
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            if Instant::now() >= next_claim {
                next_claim = Instant::now() + self.claim_idle / 2;
                if !self.claim(&mut reader, &acks, inlet).await? {
                    return Ok(());
                }
            }
            let id = if own_pending { "0" } else { ">" };
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(&self.group)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(self.batch);
            if !own_pending {
                read.arg("BLOCK").arg(BLOCK.as_millis() as u64);
            }
            read.arg("STREAMS").arg(&self.stream).arg(id);
            let reply: Option<StreamReadReply> = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                reply = read.query_async(&mut reader) => reply.map_err(|source| RedisError::Command { command: "XREADGROUP", source })?,
            };
            let entries: Vec<StreamId> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            if own_pending && entries.is_empty() {
                own_pending = false;
                continue;
            }
            if own_pending {
                // Pending entries come back without their fields when they were deleted.
                tracing::info!(flow = %inlet.flow(), entries = entries.len(), "redis: re-reading this consumer's pending entries");
            }
            let last = entries.last().map(|e| e.id.clone());
            for entry in entries {
                if !self.forward(entry, &acks, inlet).await {
                    return Ok(());
                }
            }
            if own_pending && last.is_some() {
                // `0` again would return the same entries until they are acked; the pending
                // ones are now in the flow, so move on to new entries.
                own_pending = false;
            }
        }
    }

    /// Claims entries idle for longer than `claim_idle`; `false` when the flow is stopping.
    async fn claim(
        &self,
        conn: &mut MultiplexedConnection,
        acks: &ConnectionManager,
        inlet: &Inlet,
    ) -> Result<bool, RedisError> {
        let mut start = "0-0".to_owned();
        // Bounded: at most a few rounds per call, the next call continues.
        for _ in 0..16 {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(self.claim_idle.as_millis() as u64)
                .arg(&start)
                .arg("COUNT")
                .arg(self.batch)
                .query_async(conn)
                .await
                .map_err(|source| RedisError::Command {
                    command: "XAUTOCLAIM",
                    source,
                })?;
            if !reply.claimed.is_empty() {
                tracing::info!(flow = %inlet.flow(), stream = %self.stream, entries = reply.claimed.len(), "redis: claimed entries idle for over {}", humantime::format_duration(self.claim_idle));
            }
            for entry in reply.claimed {
                if !self.forward(entry, acks, inlet).await {
                    return Ok(false);
                }
            }
            if reply.next_stream_id == "0-0" {
                break;
            }
            start = reply.next_stream_id;
        }
        Ok(true)
    }

    /// Hands one entry to the flow; `false` when the flow is stopping.
    async fn forward(&self, entry: StreamId, acks: &ConnectionManager, inlet: &Inlet) -> bool {
        let flow = inlet.flow().to_owned();
        let acker = RedisAcker {
            conn: acks.clone(),
            stream: self.stream.clone(),
            group: self.group.clone(),
            id: entry.id.clone(),
            flow: flow.clone(),
        };
        let mut meta = Meta::new();
        meta.insert("redis.stream".to_owned(), self.stream.clone());
        meta.insert("redis.id".to_owned(), entry.id.clone());
        let mut body: Option<Vec<u8>> = None;
        for (name, value) in &entry.map {
            let bytes = match value {
                Value::BulkString(bytes) => bytes.clone(),
                Value::SimpleString(s) => s.clone().into_bytes(),
                _ => continue,
            };
            if *name == self.field {
                body = Some(bytes);
            } else if name == MESSAGE_ID_FIELD || name == CORRELATION_ID_FIELD {
                meta.insert(name.clone(), String::from_utf8_lossy(&bytes).into_owned());
            } else {
                meta.insert(
                    format!("redis.field.{name}"),
                    String::from_utf8_lossy(&bytes).into_owned(),
                );
            }
        }
        meta.entry(MESSAGE_ID.to_owned())
            .or_insert_with(|| format!("{}-{}", self.stream, entry.id));
        if meta.correlation_id().is_none() {
            let id = meta.message_id().to_owned();
            meta.insert(CORRELATION_ID.to_owned(), id);
        }
        // An entry that cannot be read goes to the dead letter and is acknowledged (retrying
        // cannot fix it; the entry itself stays in the stream).
        let message = match body {
            None => {
                let why = format!("the entry has no field `{}`", self.field);
                Message::undecodable(&flow, b"", why, meta)
            }
            Some(body) => match codec::decode(self.format, &body) {
                Ok(payload) => Message::new(&flow, payload, meta),
                Err(why) => Message::undecodable(&flow, &body, why.to_string(), meta),
            },
        };
        let envelope = Envelope::new(message, Box::new(acker));
        inlet.start(envelope).await.is_ok()
    }
}

#[async_trait]
impl Trigger for RedisTrigger {
    async fn run(self: Box<Self>, inlet: Inlet, stop: CancellationToken) {
        let this = &*self;
        let (inlet, stop) = (&inlet, &stop);
        consume_reconnecting(
            inlet,
            stop,
            &format!("redis trigger (stream {})", this.stream),
            || this.consume(inlet, stop),
        )
        .await;
    }
}

/// Acknowledges one entry (`XACK`) unless its flow failed without dead-lettering it; then it
/// stays pending and is claimed again after `claim_idle`.
struct RedisAcker {
    conn: ConnectionManager,
    stream: String,
    group: String,
    id: String,
    flow: String,
}

#[async_trait]
impl Acker for RedisAcker {
    async fn ack(self: Box<Self>, outcome: Outcome) {
        match &outcome {
            Outcome::Failed(failure) if !outcome.settled() => {
                tracing::info!(flow = %self.flow, message_id = %failure.envelope.message_id, id = %self.id,
                    "message failed; the entry stays pending and is claimed again after `claim_idle`");
                return;
            }
            _ => {}
        }
        let mut conn = self.conn.clone();
        let acked: Result<i64, _> = redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.id)
            .query_async(&mut conn)
            .await;
        if let Err(e) = acked {
            // Still pending: it is claimed and processed again — a duplicate, never a loss.
            tracing::warn!(flow = %self.flow, id = %self.id, "redis XACK failed (the entry will be redelivered): {e}");
        }
    }
}
