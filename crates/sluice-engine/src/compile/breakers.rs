//! `errors.circuit_breaker`: one breaker per sink, checked when the flow loads.

use super::Compiler;
use crate::connector::Sink;
use sluice_flow::{Span, Spanned};
use std::collections::HashMap;
use std::sync::Arc;

impl Compiler<'_> {
    /// The `errors.circuit_breaker` of the flow: one breaker per sink.
    pub(super) fn breakers(
        &mut self,
        config: &Spanned<sluice_flow::CircuitBreakerConfig>,
        sinks: &[&str],
        built: &HashMap<String, Arc<dyn Sink>>,
    ) -> Option<crate::breaker::Breakers> {
        let c = &config.value;
        let mut ok = true;
        if c.failures.value == 0 {
            self.error(
                Span::of(&c.failures).or(Span::of(config)),
                "`failures` must be at least 1",
                "the number of failed writes within `window` that opens the circuit, e.g. 5",
            );
            ok = false;
        }
        if c.probes.value == 0 {
            self.error(
                Span::of(&c.probes).or(Span::of(config)),
                "`probes` must be at least 1",
                "the number of trial writes while half-open, e.g. 1",
            );
            ok = false;
        }
        if c.window.0.is_zero() || c.open_for.0.is_zero() {
            self.error(
                Span::of(config),
                "`window` and `open_for` must be longer than 0",
                "for example `window: 10s`, `open_for: 5s`",
            );
            ok = false;
        }
        if let Some(fallback) = &c.fallback
            && !sinks.contains(&fallback.value.as_str())
        {
            self.unknown_sink(fallback, fallback.value.as_str(), sinks, "fallback to");
            ok = false;
        }
        ok.then(|| {
            crate::breaker::Breakers::new(
                &self.flow.name,
                built.keys(),
                crate::breaker::BreakerSettings {
                    failures: c.failures.value,
                    window: c.window.0,
                    open_for: c.open_for.0,
                    probes: c.probes.value,
                },
                c.fallback.as_ref().map(|f| f.value.0.clone()),
            )
        })
    }
}
