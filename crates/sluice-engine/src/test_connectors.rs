//! Connectors for the engine's unit tests: every sink is what the test makes for its name,
//! and the trigger never sends anything (the tests hand messages to the flow themselves).

use crate::connector::{BuildContext, Connectors, Inlet, Sink, SinkInfo, Trigger, TriggerInfo};
use async_trait::async_trait;
use sluice_flow::{Diagnostic, SinkConfig, Spanned, TriggerConfig};
use std::sync::Arc;

/// A trigger that sends nothing.
pub(crate) struct Idle;

#[async_trait]
impl Trigger for Idle {
    async fn run(self: Box<Self>, _: Inlet, _: tokio_util::sync::CancellationToken) {}
}

/// Builds every sink of a flow with the function it holds (given the sink's name).
pub(crate) struct Stub<F>(pub(crate) F);

impl<F> Connectors for Stub<F>
where
    F: Fn(&str) -> Arc<dyn Sink> + Send + Sync,
{
    fn sink(
        &self,
        name: &str,
        _: &Spanned<SinkConfig>,
        _: &BuildContext<'_>,
    ) -> Result<Arc<dyn Sink>, Diagnostic> {
        Ok((self.0)(name))
    }
    fn trigger(
        &self,
        _: &Spanned<TriggerConfig>,
        _: &BuildContext<'_>,
    ) -> Result<Box<dyn Trigger>, Diagnostic> {
        Ok(Box::new(Idle))
    }
    fn trigger_info(&self, _: &Spanned<TriggerConfig>, _: &BuildContext<'_>) -> TriggerInfo {
        TriggerInfo::default()
    }
    fn sink_info(&self, _: &Spanned<SinkConfig>) -> SinkInfo {
        SinkInfo::default()
    }
}
