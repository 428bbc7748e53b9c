//! The `stdout` sink: one line (or an indented document) per message on standard output.

use async_trait::async_trait;
use sluice_engine::{ErrorKind, FlowError, Outgoing, Sink};
use sluice_flow::{OutputFormat, StdoutSinkConfig};
use std::io::Write;

/// Prints each payload on standard output.
pub struct StdoutSink {
    format: OutputFormat,
}

impl StdoutSink {
    /// A stdout sink.
    pub fn new(config: &StdoutSinkConfig) -> Self {
        StdoutSink {
            format: config.format,
        }
    }
}

#[async_trait]
impl Sink for StdoutSink {
    async fn write(&self, out: &mut Outgoing) -> Result<(), FlowError> {
        let mut bytes = crate::file::serialize(self.format, None, &mut out.payload)?;
        if bytes.last() != Some(&b'\n') {
            bytes.push(b'\n');
        }
        // One locked write per message keeps lines from interleaving.
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&bytes)
            .and_then(|()| stdout.flush())
            .map_err(|e| FlowError::new(ErrorKind::Sink, format!("cannot write to stdout: {e}")))
    }

    fn target(&self, _out: &mut Outgoing) -> Result<String, FlowError> {
        Ok("stdout".to_owned())
    }

    // It writes in place already (one locked write, wherever it runs).
    fn in_place(&self) -> bool {
        true
    }
}

impl crate::SinkComponent for StdoutSinkConfig {
    const KEY: &'static str = "stdout";

    fn build(
        &self,
        _: &str,
        _: &crate::StandardConnectors,
        _: &sluice_engine::BuildContext<'_>,
    ) -> Result<std::sync::Arc<dyn Sink>, sluice_flow::Diagnostic> {
        Ok(std::sync::Arc::new(StdoutSink::new(self)))
    }
}
