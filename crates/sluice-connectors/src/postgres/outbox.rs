//! The `postgres` outbox trigger. Each poll claims up to `batch` rows in a transaction with
//! `SELECT … FOR UPDATE SKIP LOCKED` (so several sluice processes share one outbox without
//! taking the same row), hands them to the flow, waits for every outcome, deletes the rows
//! whose sinks (or dead letter) confirmed, and commits. A crash rolls the transaction back:
//! the rows are still there and are taken again. A failed row stays and is retried after
//! `poll`.

use super::PostgresError;
use crate::codec::consume_reconnecting;
use crate::sql::Delivered;
use crate::sql::{Quote, quote_ident, quote_table};
use async_trait::async_trait;
use sluice_engine::{BuildContext, Inlet, Meta, Trigger};
use sluice_flow::{Diagnostic, PostgresTriggerConfig};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Polls one outbox table.
pub struct OutboxTrigger {
    connect: super::Connect,
    table_name: String,
    select: String,
    delete: String,
    batch: i64,
    poll: Duration,
}

impl OutboxTrigger {
    /// Builds the trigger, checking and quoting the table and column names.
    pub fn new(config: &PostgresTriggerConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let table = quote_table(&config.table.value, Quote::Double)
            .map_err(|e| cx.diagnostic(&config.table, e.to_string()))?;
        let id = quote_ident(&config.id, Quote::Double)
            .map_err(|e| cx.diagnostic(&config.table, format!("`id`: {e}")))?;
        let payload = quote_ident(&config.payload, Quote::Double)
            .map_err(|e| cx.diagnostic(&config.table, format!("`payload`: {e}")))?;
        Ok(OutboxTrigger {
            connect: super::Connect::load(&config.url, config.tls.as_deref(), cx)?,
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
        let pool = self.connect.pool(1)?;
        let mut client = pool.get().await.map_err(|source| PostgresError::Connect {
            url: self.connect.shown(),
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
            let mut batch = Vec::with_capacity(rows.len());
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
                batch.push((ctid, crate::sql::row_message(inlet, body, meta)));
            }
            // Stopping: the transaction rolls back, the rows stay.
            let Some(Delivered { finished, failed }) =
                crate::sql::deliver(inlet, stop, batch).await
            else {
                return Ok(());
            };
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
