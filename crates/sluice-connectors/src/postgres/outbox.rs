//! The `postgres` outbox trigger. Each poll claims up to `batch` rows in a transaction with
//! `SELECT … FOR UPDATE SKIP LOCKED` (so several sluice processes share one outbox without
//! taking the same row), hands them to the flow, waits for every outcome, deletes the rows
//! whose sinks (or dead letter) confirmed, and commits. A crash rolls the transaction back:
//! the rows are still there and are taken again. A failed row stays and is retried after
//! `poll`.

use super::{PostgresError, quote_ident, quote_table};
use crate::codec::consume_reconnecting;
use async_trait::async_trait;
use sluice_engine::{Acker, BuildContext, Envelope, Inlet, Message, Meta, Outcome, Trigger};
use sluice_flow::{Diagnostic, PostgresTriggerConfig};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Polls one outbox table.
pub struct OutboxTrigger {
    url: String,
    table_name: String,
    select: String,
    delete: String,
    batch: i64,
    poll: Duration,
}

impl OutboxTrigger {
    /// Builds the trigger, checking and quoting the table and column names.
    pub fn new(config: &PostgresTriggerConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let table = quote_table(&config.table.value)
            .map_err(|e| cx.diagnostic(&config.table, e.to_string()))?;
        let id = quote_ident(&config.id)
            .map_err(|e| cx.diagnostic(&config.table, format!("`id`: {e}")))?;
        let payload = quote_ident(&config.payload)
            .map_err(|e| cx.diagnostic(&config.table, format!("`payload`: {e}")))?;
        Ok(OutboxTrigger {
            url: config.url.value.to_string(),
            table_name: config.table.value.to_string(),
            select: format!(
                "SELECT ctid::text, {id}::text, {payload}::text FROM {table} ORDER BY {id} LIMIT $1 FOR UPDATE SKIP LOCKED"
            ),
            // The rows are locked by this transaction, so their ctid cannot change under it.
            delete: format!("DELETE FROM {table} WHERE ctid = ANY($1::text[]::tid[])"),
            batch: i64::try_from(config.batch.0).unwrap_or(i64::MAX),
            poll: config.poll.0,
        })
    }

    async fn consume(&self, inlet: &Inlet, stop: &CancellationToken) -> Result<(), PostgresError> {
        let pool = super::pool(&self.url, 1)?;
        let mut client = pool.get().await.map_err(|source| PostgresError::Connect {
            url: crate::shown_url(&self.url),
            source,
        })?;
        let statement = |what| move |source| PostgresError::Statement { what, source };
        inlet.set_healthy();
        tracing::info!(flow = %inlet.flow(), table = %self.table_name, "postgres outbox ready");
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let tx = client.transaction().await.map_err(statement("postgres"))?;
            let rows = tx
                .query(&self.select, &[&self.batch])
                .await
                .map_err(statement("outbox select"))?;
            if rows.is_empty() {
                tx.commit().await.map_err(statement("postgres"))?;
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.poll) => continue,
                }
            }
            let (done_tx, mut done_rx) = mpsc::channel(rows.len());
            let mut expected = 0;
            for row in &rows {
                let ctid: String = row.get(0);
                let id: Option<String> = row.get(1);
                let body: Option<String> = row.get(2);
                let id = id.unwrap_or_default();
                let mut meta = Meta::new();
                meta.insert("postgres.table".to_owned(), self.table_name.clone());
                meta.insert("postgres.id".to_owned(), id.clone());
                meta.insert(
                    sluice_engine::MESSAGE_ID.to_owned(),
                    format!("{}-{id}", self.table_name),
                );
                // A payload that is not JSON goes to the dead letter (the row is then deleted);
                // without one, the row stays for someone to look at.
                let message = match body
                    .as_deref()
                    .map(serde_json::from_str::<serde_json::Value>)
                {
                    Some(Ok(payload)) => Message::new(inlet.flow(), payload, meta),
                    Some(Err(e)) => Message::undecodable(
                        inlet.flow(),
                        body.as_deref().unwrap_or_default().as_bytes(),
                        format!("the payload column is not JSON: {e}"),
                        meta,
                    ),
                    None => Message::undecodable(
                        inlet.flow(),
                        b"",
                        "the payload column is NULL".to_owned(),
                        meta,
                    ),
                };
                let envelope = Envelope::new(
                    message,
                    Box::new(RowAcker {
                        ctid,
                        done: done_tx.clone(),
                    }),
                );
                if inlet.start(envelope).await.is_err() {
                    // Stopping: the transaction rolls back, the rows stay.
                    return Ok(());
                }
                expected += 1;
            }
            drop(done_tx);
            let mut finished = Vec::new();
            let mut failed = 0;
            while finished.len() + failed < expected {
                let next = tokio::select! {
                    _ = stop.cancelled() => None,
                    next = done_rx.recv() => next,
                };
                match next {
                    Some((ctid, true)) => finished.push(ctid),
                    Some((_, false)) => failed += 1,
                    // Stopping, or the flow dropped messages unfinished: roll back, keep rows.
                    None => return Ok(()),
                }
            }
            if !finished.is_empty() {
                tx.execute(&self.delete, &[&finished])
                    .await
                    .map_err(statement("outbox delete"))?;
            }
            tx.commit().await.map_err(statement("outbox commit"))?;
            if failed > 0 {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.poll) => {}
                }
            }
        }
    }
}

#[async_trait]
impl Trigger for OutboxTrigger {
    async fn run(self: Box<Self>, inlet: Inlet, stop: CancellationToken) {
        let this = &*self;
        let (inlet, stop) = (&inlet, &stop);
        consume_reconnecting(
            inlet,
            stop,
            &format!("postgres outbox ({})", this.table_name),
            || this.consume(inlet, stop),
        )
        .await;
    }
}

/// Reports whether the row may be deleted.
struct RowAcker {
    ctid: String,
    done: mpsc::Sender<(String, bool)>,
}

#[async_trait]
impl Acker for RowAcker {
    async fn ack(self: Box<Self>, outcome: Outcome) {
        let ok = match &outcome {
            Outcome::Failed(failure) => failure.dead_lettered,
            _ => true,
        };
        // The poll loop may have gone (stopping); then the row simply stays.
        let _ = self.done.send((self.ctid, ok)).await;
    }
}
