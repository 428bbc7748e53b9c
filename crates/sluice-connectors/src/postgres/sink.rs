//! The `postgres` sink: one transaction per message. With `table` + `columns`, the row is
//! built by PostgreSQL itself from a JSON object (`json_populate_record`), so each value is
//! converted to its column's type by the database; `on_conflict` turns the insert into an
//! upsert. With `sql` + `args`, the statement runs with the arguments as bind parameters.

use super::params::JsonParam;
use crate::sql::{Plan, Quote, SinkKeys, quote_all};
use async_trait::async_trait;
use deadpool_postgres::Pool;
use serde_json::{Map, Value};
use sluice_engine::{BuildContext, ErrorKind, FlowError, Outgoing, Sink};
use sluice_flow::{Diagnostic, PostgresSinkConfig};
use tokio_postgres::types::ToSql;

/// Writes messages into PostgreSQL.
pub struct PostgresSink {
    connect: super::Connect,
    pool_size: usize,
    statement: String,
    plan: Plan,
    pool: std::sync::OnceLock<Pool>,
}

impl PostgresSink {
    /// Builds the sink: checks and quotes every identifier, compiles every expression, reads
    /// the TLS files and prepares the statement text; nothing is opened yet.
    pub fn new(config: &PostgresSinkConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let keys = SinkKeys {
            kind: "postgres",
            url: &config.url,
            table: config.table.as_ref(),
            columns: &config.columns,
            on_conflict: config.on_conflict.is_some(),
            sql: config.sql.as_ref(),
            args: &config.args,
        };
        let plan = Plan::new(&keys, Quote::Double, cx)?;
        let statement = match &plan {
            Plan::Table { table, columns } => {
                let names: Vec<&str> = columns.iter().map(|c| c.quoted.as_str()).collect();
                let selected: Vec<String> = names.iter().map(|n| format!("r.{n}")).collect();
                let mut sql = format!(
                    "INSERT INTO {table} ({}) SELECT {} FROM json_populate_record(NULL::{table}, $1::json) AS r",
                    names.join(", "),
                    selected.join(", ")
                );
                if let Some(conflict) = &config.on_conflict {
                    let key = quote_all(&conflict.value.key, Quote::Double, cx)?;
                    if key.is_empty() {
                        return Err(cx.diagnostic(
                            conflict,
                            "`on_conflict.key` names the unique key's columns; it is empty",
                        ));
                    }
                    let update = quote_all(&conflict.value.update, Quote::Double, cx)?;
                    sql.push_str(&format!(" ON CONFLICT ({}) DO ", key.join(", ")));
                    if update.is_empty() {
                        sql.push_str("NOTHING");
                    } else {
                        let sets: Vec<String> = update
                            .iter()
                            .map(|c| format!("{c} = EXCLUDED.{c}"))
                            .collect();
                        sql.push_str(&format!("UPDATE SET {}", sets.join(", ")));
                    }
                }
                sql
            }
            Plan::Sql { sql, .. } => sql.clone(),
        };
        Ok(PostgresSink {
            connect: super::Connect::load(&config.url, config.tls.as_deref(), cx)?,
            pool_size: config.pool,
            statement,
            plan,
            pool: std::sync::OnceLock::new(),
        })
    }

    fn pool(&self) -> Result<&Pool, FlowError> {
        if let Some(pool) = self.pool.get() {
            return Ok(pool);
        }
        // A URL that cannot be read stays unreadable: no retry.
        let pool = self
            .connect
            .pool(self.pool_size)
            .map_err(|e| FlowError::permanent(ErrorKind::Sink, e.to_string()))?;
        // Two writers may race to build it; either pool is fine, the loser's is dropped.
        Ok(self.pool.get_or_init(|| pool))
    }

    fn params(&self, out: &mut Outgoing) -> Result<Vec<JsonParam>, FlowError> {
        let values = self.plan.values(out, "postgres sink")?;
        Ok(match &self.plan {
            // `$1` is a JSON object with one key per column.
            Plan::Table { columns, .. } => {
                let row: Map<String, Value> =
                    columns.iter().map(|c| c.name.clone()).zip(values).collect();
                vec![JsonParam(Value::Object(row))]
            }
            // `$1`, `$2`, … are the expressions' results.
            Plan::Sql { .. } => values.into_iter().map(JsonParam).collect(),
        })
    }
}

#[async_trait]
impl Sink for PostgresSink {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let params = self.params(out)?;
        let mut client = self.pool()?.get().await.map_err(|e| {
            FlowError::new(
                ErrorKind::Sink,
                format!("postgres connection: {}", crate::error_chain(&e)),
            )
        })?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| FlowError::new(ErrorKind::Sink, format!("postgres: {e}")))?;
        let statement = tx
            .prepare_cached(&self.statement)
            .await
            .map_err(|e| classify(&e, "prepare"))?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        tx.execute(&statement, &refs)
            .await
            .map_err(|e| classify(&e, "execute"))?;
        tx.commit().await.map_err(|e| classify(&e, "commit"))
    }

    fn target(&self, _out: &mut Outgoing) -> Result<String, FlowError> {
        Ok(format!("postgres: {}", self.statement))
    }
}

/// A database error: data problems (constraint, type, syntax) are permanent; the rest
/// (connection, serialization failure, deadlock, shutdown) may pass and are retried.
fn classify(e: &tokio_postgres::Error, what: &str) -> FlowError {
    let message = match e.as_db_error() {
        Some(db) => format!("postgres {what}: {} ({})", db.message(), db.code().code()),
        None => format!("postgres {what}: {e}"),
    };
    match e.code().map(|c| c.code()) {
        // Class 22 data exception, 23 integrity constraint, 42 syntax or access rule.
        Some(code)
            if code.starts_with("22") || code.starts_with("23") || code.starts_with("42") =>
        {
            FlowError::permanent(ErrorKind::Sink, message)
        }
        _ => FlowError::new(ErrorKind::Sink, message),
    }
}
