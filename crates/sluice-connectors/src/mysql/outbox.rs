//! The `mysql` outbox trigger. Each poll claims up to `batch` rows in a transaction with
//! `SELECT … FOR UPDATE SKIP LOCKED` (so several sluice processes share one outbox without
//! taking the same row), hands them to the flow, waits for every outcome, deletes the rows
//! whose sinks (or dead letter) confirmed, and commits. A crash rolls the transaction back:
//! the rows are still there and are taken again. A failed row stays and is retried after
//! `poll`.
//!
//! The transaction reads `READ COMMITTED`: under MariaDB's default `REPEATABLE READ`, the
//! locking read would also lock the gap after the last row, and a producer inserting the next
//! outbox row would wait until the batch is done.

use super::{Connect, MysqlError};
use crate::codec::consume_reconnecting;
use crate::sql::{Delivered, Quote, quote_ident, quote_table};
use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{IsolationLevel, Params, TxOpts, Value};
use sluice_engine::{BuildContext, Inlet, Meta, Trigger};
use sluice_flow::{Diagnostic, MysqlTriggerConfig};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Polls one outbox table.
pub struct OutboxTrigger {
    connect: Connect,
    table_name: String,
    select: String,
    /// `DELETE … WHERE id = ?`, run once per row.
    delete: String,
    poll: Duration,
}

impl OutboxTrigger {
    /// Builds the trigger, reading the URL and checking and quoting the table and column
    /// names.
    pub fn new(config: &MysqlTriggerConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let table = quote_table(&config.table.value, Quote::Backtick)
            .map_err(|e| cx.diagnostic(&config.table, e.to_string()))?;
        let id = quote_ident(&config.id, Quote::Backtick)
            .map_err(|e| cx.diagnostic(&config.table, format!("`id`: {e}")))?;
        let payload = quote_ident(&config.payload, Quote::Backtick)
            .map_err(|e| cx.diagnostic(&config.table, format!("`payload`: {e}")))?;
        Ok(OutboxTrigger {
            connect: Connect::load(&config.url, cx)?,
            table_name: config.table.value.to_string(),
            // The batch is a number from the flow file, never payload data.
            select: format!(
                "SELECT {id}, CAST({payload} AS CHAR) FROM {table} ORDER BY {id} LIMIT {} FOR UPDATE SKIP LOCKED",
                config.batch.0
            ),
            // One row per statement: an equality on the key finds the row without scanning,
            // whereas MariaDB may plan `IN (…)` over a small table as a scan, whose row locks
            // then wait on the rows another process holds (a deadlock, seen in the tests).
            delete: format!("DELETE FROM {table} WHERE {id} = ?"),
            poll: config.poll.0,
        })
    }

    async fn consume(&self, inlet: &Inlet, stop: &CancellationToken) -> Result<(), MysqlError> {
        let pool = self.connect.pool(1);
        let result = self.poll_loop(&pool, inlet, stop).await;
        // Closes the connection now rather than whenever the pool notices; bounded, since a
        // server that went away may never answer.
        let _ = tokio::time::timeout(Duration::from_secs(5), pool.disconnect()).await;
        result
    }

    async fn poll_loop(
        &self,
        pool: &mysql_async::Pool,
        inlet: &Inlet,
        stop: &CancellationToken,
    ) -> Result<(), MysqlError> {
        let mut conn = pool
            .get_conn()
            .await
            .map_err(|source| MysqlError::Connect {
                url: self.connect.shown(),
                source,
            })?;
        let statement = |what| move |source| MysqlError::Statement { what, source };
        let mut options = TxOpts::default();
        options.with_isolation_level(IsolationLevel::ReadCommitted);
        inlet.set_healthy();
        tracing::info!(flow = %inlet.flow(), table = %self.table_name, "mysql outbox ready");
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let mut tx = conn
                .start_transaction(options.clone())
                .await
                .map_err(statement("mysql"))?;
            let rows: Vec<(Value, Option<String>)> = tx
                .exec(self.select.as_str(), ())
                .await
                .map_err(statement("outbox select"))?;
            if rows.is_empty() {
                tx.commit().await.map_err(statement("mysql"))?;
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.poll) => continue,
                }
            }
            let mut batch = Vec::with_capacity(rows.len());
            for (key, body) in rows {
                let id = super::params::key_text(&key);
                let mut meta = Meta::new();
                meta.insert("mysql.table".to_owned(), self.table_name.clone());
                meta.insert("mysql.id".to_owned(), id.clone());
                meta.insert(
                    sluice_engine::MESSAGE_ID.to_owned(),
                    format!("{}-{id}", self.table_name),
                );
                batch.push((key, crate::sql::row_message(inlet, body, meta)));
            }
            // Stopping: the transaction rolls back, the rows stay.
            let Some(Delivered { finished, failed }) =
                crate::sql::deliver(inlet, stop, batch).await
            else {
                return Ok(());
            };
            if !finished.is_empty() {
                tx.exec_batch(
                    self.delete.as_str(),
                    finished
                        .into_iter()
                        .map(|key| Params::Positional(vec![key])),
                )
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
            &format!("mysql outbox ({})", this.table_name),
            || this.consume(inlet, stop),
        )
        .await;
    }
}
