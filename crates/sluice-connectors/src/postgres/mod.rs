//! The `postgres` connector: a sink that inserts or upserts one row per message (or runs a
//! parameterised statement), and an outbox trigger that polls a table with
//! `FOR UPDATE SKIP LOCKED` and deletes rows only after the flow's sinks confirmed them.
//!
//! Values always travel as bind parameters, never inside the SQL text; table and column names
//! are checked to be plain identifiers and quoted.

mod outbox;
mod params;
mod sink;
mod tls;

pub use outbox::OutboxTrigger;
pub use sink::PostgresSink;

use deadpool_postgres::{Manager, Pool};
use sluice_engine::BuildContext;
use sluice_flow::{Diagnostic, PgSslMode, PostgresTls, Spanned, Text};
use std::sync::Arc;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

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
    #[error("postgres connection to {url}: {}", crate::error_chain(.source))]
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
}

/// Where a trigger or sink connects, and how: the URL and, with `tls:`, the rustls
/// configuration built at load.
pub(crate) struct Connect {
    url: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Connect {
    /// Reads the `tls:` settings (the certificate files are loaded now, so a missing or
    /// broken one is a load error at its position).
    pub(crate) fn load(
        url: &Spanned<Text>,
        tls: Option<&Spanned<PostgresTls>>,
        cx: &BuildContext<'_>,
    ) -> Result<Connect, Diagnostic> {
        let parsed = url.value.parse::<tokio_postgres::Config>().ok();
        let Some(tls) = tls else {
            if parsed.is_some_and(|c| c.get_ssl_mode() == SslMode::Require) {
                return Err(cx
                    .diagnostic(url, "`sslmode=require` needs the `tls` settings")
                    .with_help("add `tls: { mode: require }` (or `verify-full` with a `ca`) and take sslmode out of the URL"));
            }
            return Ok(Connect {
                url: url.value.to_string(),
                tls: None,
            });
        };
        let settings = &tls.value;
        let files = crate::tls::Files {
            ca: settings.ca.as_ref(),
            cert: settings.cert.as_ref(),
            key: settings.key.as_ref(),
        };
        let verify = match settings.mode {
            PgSslMode::VerifyFull => crate::tls::Verify::Full,
            PgSslMode::Require => {
                if let Some(ca) = &settings.ca {
                    return Err(cx
                        .diagnostic(ca, "`mode: require` does not check the server's certificate, so a `ca` has no use")
                        .with_help("write `mode: verify-full` to check the server against this CA, or remove `ca`"));
                }
                crate::tls::Verify::None
            }
        };
        let loaded = crate::tls::Loaded::read(files, cx)?;
        Ok(Connect {
            url: url.value.to_string(),
            tls: Some(loaded.client_config(verify, files, cx)?),
        })
    }

    /// The server as errors show it, without credentials.
    pub(crate) fn shown(&self) -> String {
        crate::shown_url(&self.url)
    }

    /// A connection pool; connections are opened on first use. With TLS the connection
    /// must be encrypted (whatever the URL's `sslmode` says).
    pub(crate) fn pool(&self, size: usize) -> Result<Pool, PostgresError> {
        let mut config: tokio_postgres::Config =
            self.url.parse().map_err(|source| PostgresError::Url {
                url: self.shown(),
                source,
            })?;
        let manager = match &self.tls {
            Some(tls) => {
                config.ssl_mode(SslMode::Require);
                Manager::new(config, tls::MakeRustls(tls.clone()))
            }
            None => Manager::new(config, NoTls),
        };
        Pool::builder(manager)
            .max_size(size.max(1))
            .build()
            .map_err(PostgresError::Pool)
    }
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
