//! Log setup: human-readable or JSON lines on stderr, filtered by `RUST_LOG`.
//!
//! Two things hold whatever `RUST_LOG` says, because a log is read by more people than the
//! secrets in it are meant for:
//! - every line goes through `secrets::redact` (values from `${env:…}` and URL userinfo
//!   become `***`), library lines included;
//! - lapin's lines that dump AMQP frames and message bodies never pass: it is capped at
//!   `warn`, and its `returned_messages` module (a `warn` line with the whole returned
//!   message, body bytes included) is off. The AMQP sink reports a returned message itself.

use crate::cli::LogFormat;
use std::io::{IsTerminal, Write};
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, filter};

/// Installs the global subscriber.
pub fn init(format: LogFormat, quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let libraries = filter::filter_fn(|meta| !is_hidden(meta.target(), *meta.level()));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(Redacting)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(layer.with_filter(libraries)).init(),
        LogFormat::Json => registry
            .with(layer.json().flatten_event(true).with_filter(libraries))
            .init(),
    }
}

/// Library lines that must never reach the log (see the module comment).
fn is_hidden(target: &str, level: Level) -> bool {
    let lapin = target == "lapin" || target.starts_with("lapin::");
    lapin && (level > Level::WARN || target.starts_with("lapin::returned_messages"))
}

/// Writes each formatted line to stderr with secrets masked. The fmt layer formats a whole
/// event into one buffer and hands it over with one `write_all`, so a secret is never split
/// between two writes.
struct Redacting;

impl<'a> MakeWriter<'a> for Redacting {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter
    }
}

struct RedactingWriter;

impl Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let clean = sluice_flow::secrets::redact(&text);
        std::io::stderr().lock().write_all(clean.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapin_is_capped_at_warn_and_its_returned_messages_are_off() {
        assert!(is_hidden("lapin::returned_messages", Level::WARN));
        assert!(is_hidden("lapin::returned_messages", Level::ERROR));
        assert!(is_hidden("lapin::channels", Level::TRACE));
        assert!(is_hidden("lapin", Level::DEBUG));
        assert!(!is_hidden("lapin::channels", Level::ERROR));
        assert!(!is_hidden("lapin::io_loop", Level::WARN));
        assert!(!is_hidden("lapinx", Level::TRACE));
        assert!(!is_hidden("sluice_engine::flow", Level::TRACE));
    }
}
