//! The HTTP connector: request-reply flows on one shared listener, and the `http` sink.

mod answer;
mod auth;
mod listener;
mod request;
mod route;
mod server;
mod sink;
mod trigger;

pub use server::HttpHub;
pub use sink::HttpSink;
pub use trigger::HttpTrigger;

impl crate::TriggerComponent for sluice_flow::HttpTriggerConfig {
    const KEY: &'static str = "http";

    fn build(
        &self,
        shared: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<Box<dyn sluice_engine::Trigger>, sluice_flow::Diagnostic> {
        Ok(Box::new(HttpTrigger::new(shared.http.clone(), self, cx)?))
    }

    fn describe(&self) -> String {
        format!("http {} {}", self.method.as_str(), self.path.value)
    }

    /// Method and path shape: one route answers one flow.
    fn claim(&self) -> Option<String> {
        HttpTrigger::claim(self)
    }

    fn authenticates(&self) -> bool {
        self.auth.is_some()
    }
}

impl crate::SinkComponent for sluice_flow::HttpSinkConfig {
    const KEY: &'static str = "http";

    fn build(
        &self,
        _: &str,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<std::sync::Arc<dyn sluice_engine::Sink>, sluice_flow::Diagnostic> {
        Ok(std::sync::Arc::new(HttpSink::new(self, cx)?))
    }
}
