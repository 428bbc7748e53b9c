//! The `postgres` connector: a sink that inserts or upserts one row per message (or runs a
//! parameterised statement), and an outbox trigger that polls a table with
//! `FOR UPDATE SKIP LOCKED` and deletes rows only after the flow's sinks confirmed them.
//!
//! Values always travel as bind parameters, never inside the SQL text; table and column names
//! are checked to be plain identifiers and quoted.

mod outbox;
mod params;
mod sink;

pub use outbox::OutboxTrigger;
pub use sink::PostgresSink;

use deadpool_postgres::{Manager, Pool};
use tokio_postgres::NoTls;

/// What went wrong with PostgreSQL: a name a flow file gave that is not a plain identifier
/// (a load diagnostic), or a failure of the connection or of the outbox's statements (the
/// trigger shows it as the flow's unhealthy reason and connects again). The URL in it is the
/// shown form, without user info or query (where credentials live).
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The URL (or connection string) cannot be read.
    #[error("invalid PostgreSQL URL {url}: {source}")]
    Url {
        /// The URL, without credentials.
        url: String,
        /// The client's reason.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The connection pool could not be set up.
    #[error("PostgreSQL pool: {0}")]
    Pool(#[source] deadpool_postgres::BuildError),
    /// No connection could be had from the pool (server down, refused login).
    #[error("postgres connection to {url}: {source}")]
    Connect {
        /// The server, without credentials.
        url: String,
        /// The pool's reason.
        #[source]
        source: deadpool_postgres::PoolError,
    },
    /// A statement of the outbox failed.
    #[error("{what}: {source}")]
    Statement {
        /// Which one: `outbox select`, `outbox delete`, `outbox commit`, or `postgres` for
        /// the transaction around them.
        what: &'static str,
        /// The server's or the client's reason.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A table or column name that is not a plain SQL identifier.
    #[error(
        "`{0}` is not a plain SQL identifier (letters, digits and `_`, not starting with a digit, at most 63 characters)"
    )]
    Identifier(String),
    /// A table name with more than one `.`.
    #[error("`{0}`: a table is `name` or `schema.name`")]
    Table(String),
}

/// A connection pool for `url`; connections are opened on first use. The error shows the
/// URL without its credentials.
fn pool(url: &str, size: usize) -> Result<Pool, PostgresError> {
    let config: tokio_postgres::Config = url.parse().map_err(|source| PostgresError::Url {
        url: crate::shown_url(url),
        source,
    })?;
    Pool::builder(Manager::new(config, NoTls))
        .max_size(size.max(1))
        .build()
        .map_err(PostgresError::Pool)
}

/// A plain SQL identifier (`[A-Za-z_][A-Za-z0-9_]*`), quoted; anything else is refused so
/// that no name from a flow file can change the meaning of a statement.
pub(crate) fn quote_ident(name: &str) -> Result<String, PostgresError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || name.len() > 63 {
        return Err(PostgresError::Identifier(name.to_owned()));
    }
    Ok(format!("\"{name}\""))
}

/// A table name, `name` or `schema.name`, quoted part by part.
pub(crate) fn quote_table(name: &str) -> Result<String, PostgresError> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 {
        return Err(PostgresError::Table(name.to_owned()));
    }
    let quoted: Result<Vec<String>, PostgresError> = parts.into_iter().map(quote_ident).collect();
    Ok(quoted?.join("."))
}

impl crate::TriggerComponent for sluice_flow::PostgresTriggerConfig {
    const KEY: &'static str = "postgres";

    fn build(
        &self,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<Box<dyn sluice_engine::Trigger>, sluice_flow::Diagnostic> {
        Ok(Box::new(outbox::OutboxTrigger::new(self, cx)?))
    }

    fn describe(&self) -> String {
        format!("postgres outbox {}", self.table.value)
    }

    fn url(&self) -> Option<&str> {
        Some(self.url.value.as_str())
    }
}

impl crate::SinkComponent for sluice_flow::PostgresSinkConfig {
    const KEY: &'static str = "postgres";

    fn build(
        &self,
        _: &str,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<std::sync::Arc<dyn sluice_engine::Sink>, sluice_flow::Diagnostic> {
        Ok(std::sync::Arc::new(sink::PostgresSink::new(self, cx)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert_eq!(quote_ident("order_id").unwrap(), "\"order_id\"");
        assert_eq!(quote_table("app.orders").unwrap(), "\"app\".\"orders\"");
        for bad in ["", "1a", "a b", "a\"b", "a;drop table x", "a.b.c"] {
            assert!(quote_table(bad).is_err(), "{bad}");
        }
        assert_eq!(
            quote_table("a.b.c").unwrap_err().to_string(),
            "`a.b.c`: a table is `name` or `schema.name`"
        );
        assert!(
            quote_ident("1a")
                .unwrap_err()
                .to_string()
                .starts_with("`1a` is not a plain SQL identifier")
        );
    }
}
