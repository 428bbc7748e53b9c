//! The `postgres` sink: one transaction per message. With `table` + `columns`, the row is
//! built by PostgreSQL itself from a JSON object (`json_populate_record`), so each value is
//! converted to its column's type by the database; `on_conflict` turns the insert into an
//! upsert. With `sql` + `args`, the statement runs with the arguments as bind parameters.

use super::params::JsonParam;
use super::{quote_ident, quote_table};
use async_trait::async_trait;
use deadpool_postgres::Pool;
use serde_json::{Map, Value};
use sluice_engine::Expr;
use sluice_engine::{BuildContext, ErrorKind, FlowError, Outgoing, Sink};
use sluice_flow::{Diagnostic, PostgresSinkConfig, Spanned, Text};
use tokio_postgres::types::ToSql;

/// How a message becomes a statement's parameters.
enum Shape {
    /// `$1` is a JSON object with one key per column.
    Columns(Vec<(String, Expr)>),
    /// `$1`, `$2`, … are the expressions' results.
    Args(Vec<Expr>),
}

/// Writes messages into PostgreSQL.
pub struct PostgresSink {
    url: String,
    pool_size: usize,
    statement: String,
    shape: Shape,
    pool: std::sync::OnceLock<Pool>,
}

fn expr(text: &Spanned<Text>, cx: &BuildContext<'_>) -> Result<Expr, Diagnostic> {
    Expr::compile(text.value.as_str())
        .map_err(|e| cx.diagnostic(text, format!("invalid JMESPath expression: {}", e.message)))
}

impl PostgresSink {
    /// Builds the sink: checks and quotes every identifier, compiles every expression and
    /// prepares the statement text; nothing is opened yet.
    pub fn new(config: &PostgresSinkConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let (statement, shape) = match (&config.table, &config.sql) {
            (Some(table), None) => {
                if config.columns.is_empty() {
                    return Err(cx
                        .diagnostic(table, "a `table` sink needs `columns`")
                        .with_help("map each column to a JMESPath expression: `columns: { id: id, total: total }`"));
                }
                if !config.args.is_empty() {
                    return Err(cx.diagnostic(table, "`args` belong to `sql`, not to `table`"));
                }
                let quoted_table =
                    quote_table(&table.value).map_err(|e| cx.diagnostic(table, e.to_string()))?;
                let mut names = Vec::new();
                let mut exprs = Vec::new();
                for (column, value) in &config.columns {
                    names.push(
                        quote_ident(column).map_err(|e| cx.diagnostic(value, e.to_string()))?,
                    );
                    exprs.push((column.clone(), expr(value, cx)?));
                }
                let list = names.join(", ");
                let selected: Vec<String> = names.iter().map(|n| format!("r.{n}")).collect();
                let mut sql = format!(
                    "INSERT INTO {quoted_table} ({list}) SELECT {} FROM json_populate_record(NULL::{quoted_table}, $1::json) AS r",
                    selected.join(", ")
                );
                if let Some(conflict) = &config.on_conflict {
                    let quote_all = |names: &[Spanned<Text>]| -> Result<Vec<String>, Diagnostic> {
                        names
                            .iter()
                            .map(|n| {
                                quote_ident(&n.value).map_err(|e| cx.diagnostic(n, e.to_string()))
                            })
                            .collect()
                    };
                    let key = quote_all(&conflict.value.key)?;
                    if key.is_empty() {
                        return Err(cx.diagnostic(
                            conflict,
                            "`on_conflict.key` names the unique key's columns; it is empty",
                        ));
                    }
                    let update = quote_all(&conflict.value.update)?;
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
                (sql, Shape::Columns(exprs))
            }
            (None, Some(sql)) => {
                if !config.columns.is_empty() || config.on_conflict.is_some() {
                    return Err(cx.diagnostic(
                        sql,
                        "`columns` and `on_conflict` belong to `table`, not to `sql`",
                    ));
                }
                let args: Result<Vec<Expr>, Diagnostic> =
                    config.args.iter().map(|a| expr(a, cx)).collect();
                (sql.value.to_string(), Shape::Args(args?))
            }
            (Some(table), Some(_)) => {
                return Err(cx.diagnostic(
                    table,
                    "give either `table` (with `columns`) or `sql` (with `args`), not both",
                ));
            }
            (None, None) => {
                return Err(cx.diagnostic(
                    &config.url,
                    "a postgres sink needs `table` (with `columns`) or `sql` (with `args`)",
                ));
            }
        };
        Ok(PostgresSink {
            url: config.url.value.to_string(),
            pool_size: config.pool,
            statement,
            shape,
            pool: std::sync::OnceLock::new(),
        })
    }

    fn pool(&self) -> Result<&Pool, FlowError> {
        if let Some(pool) = self.pool.get() {
            return Ok(pool);
        }
        // A URL that cannot be read stays unreadable: no retry.
        let pool = super::pool(&self.url, self.pool_size)
            .map_err(|e| FlowError::permanent(ErrorKind::Sink, e.to_string()))?;
        // Two writers may race to build it; either pool is fine, the loser's is dropped.
        Ok(self.pool.get_or_init(|| pool))
    }

    fn params(&self, out: &mut Outgoing) -> Result<Vec<JsonParam>, FlowError> {
        let data = out
            .payload
            .jmes()
            .map_err(|e| FlowError::permanent(ErrorKind::Transform, e))?;
        let eval = |e: &Expr| -> Result<Value, FlowError> {
            e.search(data.clone(), &out.meta)
                .map(|v| sluice_engine::jmes_to_json(&v))
                .map_err(|m| FlowError::permanent(ErrorKind::Transform, m).at_step("postgres sink"))
        };
        Ok(match &self.shape {
            Shape::Columns(columns) => {
                let mut row = Map::new();
                for (column, e) in columns {
                    row.insert(column.clone(), eval(e)?);
                }
                vec![JsonParam(Value::Object(row))]
            }
            Shape::Args(args) => args
                .iter()
                .map(|e| eval(e).map(JsonParam))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[async_trait]
impl Sink for PostgresSink {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let params = self.params(out)?;
        let mut client =
            self.pool()?.get().await.map_err(|e| {
                FlowError::new(ErrorKind::Sink, format!("postgres connection: {e}"))
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
