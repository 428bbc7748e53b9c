//! The `mysql` connector (MariaDB and MySQL, through `mysql_async`): a sink that inserts or
//! upserts (`ON DUPLICATE KEY UPDATE`) one row per message, or runs a parameterised
//! statement, each in its own transaction; and an outbox trigger that polls a table with
//! `FOR UPDATE SKIP LOCKED` and deletes rows only after the flow's sinks confirmed them.
//!
//! The client is `mysql_async`: pure Rust on tokio, with its own connection pool and
//! transactions, and TLS through rustls; the SQL shared with the `postgres` connector
//! (identifier quoting, `table` or `sql`, expression evaluation, the outbox hand-over) is
//! `crate::sql`.

mod outbox;
mod params;
mod sink;

pub use outbox::OutboxTrigger;
pub use sink::MysqlSink;

use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use sluice_engine::{BuildContext, ErrorKind, FlowError};
use sluice_flow::{Diagnostic, Spanned, Text};

/// What went wrong with MariaDB in the outbox trigger (its unhealthy reason; it connects
/// again). The URL in it is the shown form, without credentials.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    /// No connection could be opened (server down, refused login).
    #[error("mysql connection to {url}: {}", describe(.source))]
    Connect {
        /// The server, without credentials.
        url: String,
        /// The client's reason.
        #[source]
        source: mysql_async::Error,
    },
    /// A statement of the outbox failed.
    #[error("{what}: {}", describe(.source))]
    Statement {
        /// Which one: `outbox select`, `outbox delete`, `outbox commit`, or `mysql` for the
        /// transaction around them.
        what: &'static str,
        /// The server's or the client's reason.
        #[source]
        source: mysql_async::Error,
    },
}

/// Where a trigger or sink connects: the URL, read at load.
pub(crate) struct Connect {
    url: String,
    opts: Opts,
}

impl Connect {
    /// Reads the URL (`mysql://` or `mariadb://`); one that cannot be read is a load error.
    pub(crate) fn load(url: &Spanned<Text>, cx: &BuildContext<'_>) -> Result<Connect, Diagnostic> {
        let text = url.value.as_str();
        // mysql_async knows the scheme under MySQL's name only.
        let as_mysql = match text.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => text.to_owned(),
        };
        let opts = Opts::from_url(&as_mysql).map_err(|e| {
            cx.diagnostic(
                url,
                format!("invalid MariaDB URL {}: {e}", crate::shown_url(text)),
            )
            .with_help("write e.g. mysql://user:${env:DB_PASSWORD}@127.0.0.1:3306/orders")
        })?;
        Ok(Connect {
            url: text.to_owned(),
            opts,
        })
    }

    /// The server as errors show it, without credentials.
    pub(crate) fn shown(&self) -> String {
        crate::shown_url(&self.url)
    }

    /// A pool of up to `size` connections, opened on first use. Connections go over TCP to
    /// the URL's host, not through a local socket the server names (mysql_async's default
    /// for a loopback address), unless the URL asks for `prefer_socket`.
    pub(crate) fn pool(&self, size: usize) -> Pool {
        let constraints = PoolConstraints::new(0, size.max(1)).unwrap_or_default();
        let mut builder = OptsBuilder::from_opts(self.opts.clone())
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        if !self.url.contains("prefer_socket=") {
            builder = builder.prefer_socket(false);
        }
        Pool::new(builder)
    }
}

/// A client error in words: a server error as its message with its code and SQLSTATE,
/// anything else as the client says it.
pub(crate) fn describe(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(server) => format!(
            "{} (error {}, SQLSTATE {})",
            server.message, server.code, server.state
        ),
        mysql_async::Error::Io(io) => io.to_string(),
        mysql_async::Error::Driver(driver) => driver.to_string(),
        other => other.to_string(),
    }
}

/// A sink error: data problems (constraint, type, syntax, unknown table or column) are
/// permanent; the rest (connection, deadlock, lock wait, shutdown) may pass and are retried.
pub(crate) fn classify(e: &mysql_async::Error, what: &str) -> FlowError {
    let message = format!("mysql {what}: {}", describe(e));
    match e {
        mysql_async::Error::Server(server) if is_data_error(&server.state, server.code) => {
            FlowError::permanent(ErrorKind::Sink, message)
        }
        _ => FlowError::new(ErrorKind::Sink, message),
    }
}

/// SQLSTATE class 22 (data exception), 23 (integrity constraint), 42 (syntax or access rule),
/// and the data errors MariaDB reports under the catch-all `HY000`.
fn is_data_error(state: &str, code: u16) -> bool {
    const DATA_ERRORS: [u16; 5] = [
        1292, // truncated incorrect value
        1364, // a column without default got no value
        1366, // incorrect value for a column
        3140, // invalid JSON text (MySQL)
        4025, // CHECK constraint failed
    ];
    state.starts_with("22")
        || state.starts_with("23")
        || state.starts_with("42")
        || DATA_ERRORS.contains(&code)
}

impl crate::TriggerComponent for sluice_flow::MysqlTriggerConfig {
    const KEY: &'static str = "mysql";

    fn build(
        &self,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<Box<dyn sluice_engine::Trigger>, sluice_flow::Diagnostic> {
        Ok(Box::new(outbox::OutboxTrigger::new(self, cx)?))
    }

    fn describe(&self) -> String {
        format!("mysql outbox {}", self.table.value)
    }

    fn url(&self) -> Option<&str> {
        Some(self.url.value.as_str())
    }
}

impl crate::SinkComponent for sluice_flow::MysqlSinkConfig {
    const KEY: &'static str = "mysql";

    fn build(
        &self,
        _: &str,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<std::sync::Arc<dyn sluice_engine::Sink>, sluice_flow::Diagnostic> {
        Ok(std::sync::Arc::new(sink::MysqlSink::new(self, cx)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_permanent_and_the_rest_retried() {
        let server = |code, state: &str| {
            mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: "m".to_owned(),
                state: state.to_owned(),
            })
        };
        // Duplicate key, unknown column, a CHECK constraint: permanent.
        for (code, state) in [(1062, "23000"), (1054, "42S22"), (4025, "HY000")] {
            assert!(
                !classify(&server(code, state), "execute").retryable,
                "{code}"
            );
        }
        // Deadlock, lock wait timeout, server shutting down: retried.
        for (code, state) in [(1213, "40001"), (1205, "HY000"), (1053, "08S01")] {
            assert!(
                classify(&server(code, state), "execute").retryable,
                "{code}"
            );
        }
        let e = classify(&server(1062, "23000"), "execute");
        assert_eq!(e.message, "mysql execute: m (error 1062, SQLSTATE 23000)");
    }
}
