//! What the SQL connectors (`postgres`, `mysql`) share: the check and quoting of the names a
//! flow file gives, the choice between `table` + `columns` and `sql` + `args` (with the same
//! load errors for both), the evaluation of their expressions for one message, and the
//! outbox's hand-over of a batch of rows to the flow.
//!
//! Values always travel as bind parameters, never inside the SQL text; table and column names
//! are checked to be plain identifiers and then quoted, so no name from a flow file can change
//! the meaning of a statement.

// Some parts serve only some of the connectors (postgres or mysql);
// a build without the others leaves them unused.
#![cfg_attr(not(all(feature = "postgres", feature = "mysql")), allow(dead_code))]

use async_trait::async_trait;
use serde_json::Value;
use sluice_engine::{Acker, Envelope, Inlet, Message, Meta, Outcome};
use sluice_engine::{BuildContext, ErrorKind, Expr, FlowError, Outgoing};
use sluice_flow::{Diagnostic, Spanned, Text};
use std::collections::BTreeMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How a database quotes an identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quote {
    /// `"name"`: standard SQL (PostgreSQL).
    Double,
    /// `` `name` ``: MariaDB and MySQL.
    Backtick,
}

/// A name from a flow file that is not usable as a table or column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    /// Not a plain SQL identifier.
    #[error(
        "`{0}` is not a plain SQL identifier (letters, digits and `_`, not starting with a digit, at most 63 characters)"
    )]
    Identifier(String),
    /// A table name with more than one `.`.
    #[error("`{0}`: a table is `name` or `{1}.name`")]
    Table(String, &'static str),
}

/// A plain SQL identifier (`[A-Za-z_][A-Za-z0-9_]*`, at most 63 characters: PostgreSQL's
/// limit, below MariaDB's 64), quoted; anything else is refused.
pub(crate) fn quote_ident(name: &str, quote: Quote) -> Result<String, IdentError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || name.len() > 63 {
        return Err(IdentError::Identifier(name.to_owned()));
    }
    Ok(match quote {
        Quote::Double => format!("\"{name}\""),
        Quote::Backtick => format!("`{name}`"),
    })
}

/// A table name, `name` or `schema.name` (`database.name` in MariaDB), quoted part by part.
pub(crate) fn quote_table(name: &str, quote: Quote) -> Result<String, IdentError> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 {
        let prefix = match quote {
            Quote::Double => "schema",
            Quote::Backtick => "database",
        };
        return Err(IdentError::Table(name.to_owned(), prefix));
    }
    let quoted: Result<Vec<String>, IdentError> =
        parts.into_iter().map(|p| quote_ident(p, quote)).collect();
    Ok(quoted?.join("."))
}

/// The keys of a SQL sink that say what it writes, borrowed from its config.
pub(crate) struct SinkKeys<'a> {
    /// The sink's key (`postgres`, `mysql`), for messages.
    pub kind: &'static str,
    /// Its `url`, where a sink with neither `table` nor `sql` is reported.
    pub url: &'a Spanned<Text>,
    /// `table`.
    pub table: Option<&'a Spanned<Text>>,
    /// `columns`.
    pub columns: &'a BTreeMap<String, Spanned<Text>>,
    /// Whether `on_conflict` is given.
    pub on_conflict: bool,
    /// `sql`.
    pub sql: Option<&'a Spanned<Text>>,
    /// `args`.
    pub args: &'a [Spanned<Text>],
}

/// One column of a `table` sink.
pub(crate) struct Column {
    /// The name as written (the key of the row object PostgreSQL builds from).
    pub name: String,
    /// The name quoted for the statement.
    pub quoted: String,
    /// The expression giving its value.
    pub expr: Expr,
}

/// What a SQL sink writes, checked and compiled.
pub(crate) enum Plan {
    /// A row into a table: the quoted table name and its columns, in name order.
    Table {
        /// The quoted table name.
        table: String,
        /// The columns.
        columns: Vec<Column>,
    },
    /// A statement of the flow file's, with its arguments in placeholder order.
    Sql {
        /// The statement as written.
        sql: String,
        /// The expressions giving its parameters.
        args: Vec<Expr>,
    },
}

impl Plan {
    /// Checks the combination of keys (exactly one of `table` + `columns` and `sql` +
    /// `args`), quotes every name and compiles every expression; a mistake is a load error at
    /// the key that is wrong.
    pub(crate) fn new(
        keys: &SinkKeys<'_>,
        quote: Quote,
        cx: &BuildContext<'_>,
    ) -> Result<Plan, Diagnostic> {
        match (keys.table, keys.sql) {
            (Some(table), None) => {
                if keys.columns.is_empty() {
                    return Err(cx
                        .diagnostic(table, "a `table` sink needs `columns`")
                        .with_help("map each column to a JMESPath expression: `columns: { id: id, total: total }`"));
                }
                if !keys.args.is_empty() {
                    return Err(cx.diagnostic(table, "`args` belong to `sql`, not to `table`"));
                }
                let quoted_table = quote_table(&table.value, quote)
                    .map_err(|e| cx.diagnostic(table, e.to_string()))?;
                let mut columns = Vec::new();
                for (name, value) in keys.columns {
                    columns.push(Column {
                        name: name.clone(),
                        quoted: quote_ident(name, quote)
                            .map_err(|e| cx.diagnostic(value, e.to_string()))?,
                        expr: expr(value, cx)?,
                    });
                }
                Ok(Plan::Table {
                    table: quoted_table,
                    columns,
                })
            }
            (None, Some(sql)) => {
                if !keys.columns.is_empty() || keys.on_conflict {
                    return Err(cx.diagnostic(
                        sql,
                        "`columns` and `on_conflict` belong to `table`, not to `sql`",
                    ));
                }
                let args: Result<Vec<Expr>, Diagnostic> =
                    keys.args.iter().map(|a| expr(a, cx)).collect();
                Ok(Plan::Sql {
                    sql: sql.value.to_string(),
                    args: args?,
                })
            }
            (Some(table), Some(_)) => Err(cx.diagnostic(
                table,
                "give either `table` (with `columns`) or `sql` (with `args`), not both",
            )),
            (None, None) => Err(cx.diagnostic(
                keys.url,
                format!(
                    "a {} sink needs `table` (with `columns`) or `sql` (with `args`)",
                    keys.kind
                ),
            )),
        }
    }

    /// The values of one message: a column's or an argument's expression each, in order.
    /// A failed expression is a permanent `transform` error at `step`.
    pub(crate) fn values(&self, out: &mut Outgoing, step: &str) -> Result<Vec<Value>, FlowError> {
        let data = out
            .payload
            .jmes()
            .map_err(|e| FlowError::permanent(ErrorKind::Transform, e))?;
        let eval = |e: &Expr| -> Result<Value, FlowError> {
            e.search(data.clone(), &out.meta)
                .map(|v| sluice_engine::jmes_to_json(&v))
                .map_err(|m| FlowError::permanent(ErrorKind::Transform, m).at_step(step))
        };
        match self {
            Plan::Table { columns, .. } => columns.iter().map(|c| eval(&c.expr)).collect(),
            Plan::Sql { args, .. } => args.iter().map(eval).collect(),
        }
    }
}

/// Quotes every name of an `on_conflict` list (`key`, `update`), reporting a bad one at its
/// position.
pub(crate) fn quote_all(
    names: &[Spanned<Text>],
    quote: Quote,
    cx: &BuildContext<'_>,
) -> Result<Vec<String>, Diagnostic> {
    names
        .iter()
        .map(|n| quote_ident(&n.value, quote).map_err(|e| cx.diagnostic(n, e.to_string())))
        .collect()
}

fn expr(text: &Spanned<Text>, cx: &BuildContext<'_>) -> Result<Expr, Diagnostic> {
    Expr::compile(text.value.as_str())
        .map_err(|e| cx.diagnostic(text, format!("invalid JMESPath expression: {}", e.message)))
}

/// The message of one outbox row: its payload column parsed as JSON. A payload that is not
/// JSON takes the engine's undecodable path (a `trigger` error, the dead letter, then the row
/// is deleted); a NULL one too, with the row kept by no one's mistake.
pub(crate) fn row_message(inlet: &Inlet, body: Option<String>, meta: Meta) -> Message {
    match body.as_deref().map(serde_json::from_str::<Value>) {
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
    }
}

/// What became of one batch of outbox rows.
pub(crate) struct Delivered<K> {
    /// The rows whose sinks (or dead letter) confirmed: to be deleted.
    pub finished: Vec<K>,
    /// How many failed and were not dead-lettered: they stay and are taken again.
    pub failed: usize,
}

/// Hands one batch of outbox rows (each with the key that deletes it) to the flow and waits
/// for every outcome. `None` when stopping, or when the flow dropped messages unfinished:
/// then the caller rolls back and every row stays.
pub(crate) async fn deliver<K: Send + 'static>(
    inlet: &Inlet,
    stop: &CancellationToken,
    batch: Vec<(K, Message)>,
) -> Option<Delivered<K>> {
    let (done_tx, mut done_rx) = mpsc::channel(batch.len().max(1));
    let expected = batch.len();
    for (key, message) in batch {
        let acker = RowAcker {
            key,
            done: done_tx.clone(),
        };
        if inlet
            .start(Envelope::new(message, Box::new(acker)))
            .await
            .is_err()
        {
            return None;
        }
    }
    drop(done_tx);
    let mut delivered = Delivered {
        finished: Vec::new(),
        failed: 0,
    };
    while delivered.finished.len() + delivered.failed < expected {
        let next = tokio::select! {
            _ = stop.cancelled() => None,
            next = done_rx.recv() => next,
        };
        match next? {
            (key, true) => delivered.finished.push(key),
            (_, false) => delivered.failed += 1,
        }
    }
    Some(delivered)
}

/// Reports whether an outbox row may be deleted.
struct RowAcker<K> {
    key: K,
    done: mpsc::Sender<(K, bool)>,
}

#[async_trait]
impl<K: Send + 'static> Acker for RowAcker<K> {
    async fn ack(self: Box<Self>, outcome: Outcome) {
        let ok = match &outcome {
            Outcome::Failed(failure) => failure.dead_lettered,
            _ => true,
        };
        // The poll loop may have gone (stopping); then the row simply stays.
        let _ = self.done.send((self.key, ok)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert_eq!(
            quote_ident("order_id", Quote::Double).unwrap(),
            "\"order_id\""
        );
        assert_eq!(
            quote_ident("order_id", Quote::Backtick).unwrap(),
            "`order_id`"
        );
        assert_eq!(
            quote_table("app.orders", Quote::Double).unwrap(),
            "\"app\".\"orders\""
        );
        assert_eq!(
            quote_table("app.orders", Quote::Backtick).unwrap(),
            "`app`.`orders`"
        );
        for quote in [Quote::Double, Quote::Backtick] {
            for bad in ["", "1a", "a b", "a\"b", "a`b", "a;drop table x", "a.b.c"] {
                assert!(quote_table(bad, quote).is_err(), "{bad}");
            }
        }
        assert_eq!(
            quote_table("a.b.c", Quote::Double).unwrap_err().to_string(),
            "`a.b.c`: a table is `name` or `schema.name`"
        );
        assert_eq!(
            quote_table("a.b.c", Quote::Backtick)
                .unwrap_err()
                .to_string(),
            "`a.b.c`: a table is `name` or `database.name`"
        );
        assert!(
            quote_ident("1a", Quote::Double)
                .unwrap_err()
                .to_string()
                .starts_with("`1a` is not a plain SQL identifier")
        );
    }
}
