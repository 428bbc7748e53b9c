//! sluice's triggers and sinks, one module per connector.
//!
//! A connector is a config struct from `sluice-flow` plus an implementation of the engine's
//! [`Trigger`](sluice_engine::Trigger) or [`Sink`](sluice_engine::Sink) trait; acks, retries
//! and concurrency belong to the engine. [`StandardConnectors`] is the registry the binary
//! hands to the engine: adding a connector adds one match arm there.

// A `Diagnostic` carries its snippet and hints; it is built once per mistake, on a cold
// path, so returning it unboxed is simpler and costs nothing that matters.
#![allow(clippy::result_large_err)]

pub mod file;
pub mod stdout;

use sluice_engine::{BuildContext, Connectors, Sink, Trigger};
use sluice_flow::{Diagnostic, SinkConfig, Spanned, TriggerConfig};
use std::sync::Arc;

/// Every connector that ships with sluice.
#[derive(Debug, Default, Clone, Copy)]
pub struct StandardConnectors;

impl Connectors for StandardConnectors {
    fn sink(
        &self,
        name: &str,
        config: &Spanned<SinkConfig>,
        cx: &BuildContext<'_>,
    ) -> Result<Arc<dyn Sink>, Diagnostic> {
        match &config.value {
            SinkConfig::File(file) => Ok(Arc::new(file::FileSink::new(name, file, cx)?)),
            SinkConfig::Stdout(stdout) => Ok(Arc::new(stdout::StdoutSink::new(stdout))),
        }
    }

    fn trigger(
        &self,
        config: &Spanned<TriggerConfig>,
        cx: &BuildContext<'_>,
    ) -> Result<Box<dyn Trigger>, Diagnostic> {
        match &config.value {
            TriggerConfig::File(file) => Ok(Box::new(file::FileTrigger::new(file, cx)?)),
        }
    }
}
