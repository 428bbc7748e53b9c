//! The `mysql` sink: one transaction per message. With `table` + `columns`, an
//! `INSERT … VALUES (?, …)` whose values MariaDB converts to each column's type;
//! `on_conflict` adds `ON DUPLICATE KEY UPDATE`. With `sql` + `args`, the statement runs with
//! the arguments as its `?` parameters. Statements are prepared once per connection (the
//! client's statement cache).

use super::{Connect, classify};
use crate::sql::{Plan, Quote, SinkKeys, quote_all};
use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Pool, TxOpts};
use sluice_engine::{BuildContext, ErrorKind, FlowError, Outgoing, Sink};
use sluice_flow::{Diagnostic, MysqlSinkConfig};

/// Writes messages into MariaDB or MySQL.
pub struct MysqlSink {
    connect: Connect,
    pool_size: usize,
    statement: String,
    plan: Plan,
    pool: std::sync::OnceLock<Pool>,
}

impl MysqlSink {
    /// Builds the sink: reads the URL, checks and quotes every identifier, compiles every
    /// expression and prepares the statement text; nothing is opened yet.
    pub fn new(config: &MysqlSinkConfig, cx: &BuildContext<'_>) -> Result<Self, Diagnostic> {
        let keys = SinkKeys {
            kind: "mysql",
            url: &config.url,
            table: config.table.as_ref(),
            columns: &config.columns,
            on_conflict: config.on_conflict.is_some(),
            sql: config.sql.as_ref(),
            args: &config.args,
        };
        let plan = Plan::new(&keys, Quote::Backtick, cx)?;
        let statement = match &plan {
            Plan::Table { table, columns } => {
                let names: Vec<&str> = columns.iter().map(|c| c.quoted.as_str()).collect();
                let marks = vec!["?"; names.len()].join(", ");
                let mut sql = format!(
                    "INSERT INTO {table} ({}) VALUES ({marks})",
                    names.join(", ")
                );
                if let Some(conflict) = &config.on_conflict {
                    let update = quote_all(&conflict.value.update, Quote::Backtick, cx)?;
                    // With nothing to update, the first column keeps its own value: the row
                    // stays as it is, and no other error is hidden (as `INSERT IGNORE` would).
                    let sets: Vec<String> = if update.is_empty() {
                        vec![format!("{0} = {0}", names[0])]
                    } else {
                        update
                            .iter()
                            .map(|c| format!("{c} = VALUES({c})"))
                            .collect()
                    };
                    sql.push_str(&format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", ")));
                }
                sql
            }
            Plan::Sql { sql, args } => {
                let marks = placeholders(sql);
                if marks != args.len() {
                    let at = config.sql.as_ref().expect("a `sql` plan has `sql`");
                    return Err(cx
                        .diagnostic(
                            at,
                            format!(
                                "the statement has {marks} `?` placeholder(s) but {} `args`",
                                args.len()
                            ),
                        )
                        .with_help("give one JMESPath expression in `args` per `?`, in order"));
                }
                sql.clone()
            }
        };
        Ok(MysqlSink {
            connect: Connect::load(&config.url, cx)?,
            pool_size: config.pool,
            statement,
            plan,
            pool: std::sync::OnceLock::new(),
        })
    }

    fn pool(&self) -> &Pool {
        // Two writers may race to build it; either pool is fine, the loser's is dropped.
        self.pool.get_or_init(|| self.connect.pool(self.pool_size))
    }
}

/// The `?` placeholders of a statement, outside quoted strings, quoted names and comments.
fn placeholders(sql: &str) -> usize {
    let mut count = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '?' => count += 1,
            '\'' | '"' | '`' => {
                // A quote ends at the next same quote; a doubled one or a backslash escapes.
                while let Some(d) = chars.next() {
                    if d == '\\' && c != '`' {
                        chars.next();
                    } else if d == c {
                        if chars.peek() == Some(&c) {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '#' => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for d in chars.by_ref() {
                    if last == '*' && d == '/' {
                        break;
                    }
                    last = d;
                }
            }
            _ => {}
        }
    }
    count
}

#[async_trait]
impl Sink for MysqlSink {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let values = self.plan.values(out, "mysql sink")?;
        let params = Params::Positional(values.into_iter().map(super::params::to_sql).collect());
        let mut conn = self.pool().get_conn().await.map_err(|e| {
            FlowError::new(
                ErrorKind::Sink,
                format!(
                    "mysql connection to {}: {}",
                    self.connect.shown(),
                    super::describe(&e)
                ),
            )
        })?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|e| classify(&e, "begin"))?;
        tx.exec_drop(self.statement.as_str(), params)
            .await
            .map_err(|e| classify(&e, "execute"))?;
        tx.commit().await.map_err(|e| classify(&e, "commit"))
    }

    fn target(&self, _out: &mut Outgoing) -> Result<String, FlowError> {
        Ok(format!("mysql: {}", self.statement))
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_are_counted_outside_quotes_and_comments() {
        assert_eq!(placeholders("INSERT INTO t (a, b) VALUES (?, ?)"), 2);
        assert_eq!(
            placeholders("SELECT '?', \"?\", `a?`, 'it''s ?', 'x\\'?' FROM t WHERE a = ?"),
            1
        );
        assert_eq!(
            placeholders("UPDATE t SET a = ? -- why?\n WHERE b = ? # ?"),
            2
        );
        assert_eq!(placeholders("SELECT /* ? */ ?"), 1);
    }
}
