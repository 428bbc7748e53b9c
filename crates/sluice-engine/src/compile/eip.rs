//! Compiling the enterprise-integration-pattern steps, each with positioned diagnostics.

use super::Compiler;
use crate::connector::Sink;
use crate::expr::Expr;
use crate::steps::{self, Node};
use sluice_flow::Text;
use sluice_flow::diagnostic::did_you_mean;
use sluice_flow::{Span, Spanned, StepConfig};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Keys are remembered this long by default.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// In-memory dedupe keys at most, by default.
const DEFAULT_MAX_KEYS: usize = 1_000_000;
/// Open aggregate groups at most, by default.
const DEFAULT_MAX_GROUPS: usize = 10_000;

impl Compiler<'_> {
    /// Compiles `split`, `aggregate`, `dedupe`, `wiretap`, `throttle` and `call`; `None` for
    /// any other kind, `Some(None)` when the step has mistakes (reported).
    pub(super) fn eip_step(
        &mut self,
        step: &Spanned<StepConfig>,
        path: &str,
        sinks: &[&str],
    ) -> Option<Option<Node>> {
        let at = Span::of(step);
        Some(match &step.value {
            StepConfig::Split(config) => {
                let c = &config.value;
                self.expr_at(&c.on, Span::of(config).or(at)).map(|on| {
                    Node::Sync(Box::new(steps::split::Split::new(
                        on,
                        c.on_child_error == sluice_flow::OnChildError::FailParent,
                    )))
                })
            }
            StepConfig::Aggregate(config) => self.aggregate(config, path),
            StepConfig::Dedupe(config) => self.dedupe(config, path),
            StepConfig::Wiretap(sink) => {
                let name = sink.value.as_str();
                match self.sink_map.get(name) {
                    Some(built) => Some(Node::Sync(Box::new(steps::wiretap::Wiretap::new(
                        &self.flow.name,
                        name,
                        built.clone(),
                    )))),
                    None => {
                        if !sinks.contains(&name) {
                            self.unknown_sink(sink, name, sinks, "wiretap to");
                        }
                        None
                    }
                }
            }
            StepConfig::Throttle(config) => self.throttle(config, path),
            StepConfig::Call(flow) => {
                let name = flow.value.as_str().trim();
                if name.is_empty() {
                    self.error(
                        Span::of(flow),
                        "`call` needs the name of a flow",
                        "for example `call: price-lookup`",
                    );
                    None
                } else if name == self.flow.name {
                    self.error(
                        Span::of(flow),
                        format!("flow `{name}` calls itself"),
                        "a cycle of calls would never end; call another flow",
                    );
                    None
                } else {
                    self.calls.push((name.to_owned(), Span::of(flow)));
                    Some(Node::Async(Box::new(steps::call::Call::new(name))))
                }
            }
            _ => return None,
        })
    }

    fn aggregate(
        &mut self,
        config: &Spanned<sluice_flow::AggregateConfig>,
        path: &str,
    ) -> Option<Node> {
        let c = &config.value;
        let at = Span::of(config);
        let before = self.diagnostics.len();
        let key = self.optional_expr(&c.key).ok().flatten();
        let when = self.optional_expr(&c.when).ok().flatten();
        let output = self.optional_expr(&c.output).ok().flatten();
        if c.size.is_none()
            && c.timeout.is_none()
            && c.interval.is_none()
            && c.when.is_none()
            && !c.end_of_batch
        {
            self.error(
                at,
                "this aggregate never completes a group",
                "give at least one of `size`, `timeout`, `interval`, `when` or `end_of_batch: true`",
            );
        }
        if let Some(size) = &c.size
            && size.value == 0
        {
            self.error(
                Span::of(size),
                "`size` must be at least 1",
                "for example `size: 10`",
            );
        }
        if let Some(max) = &c.max_groups
            && max.value == 0
        {
            self.error(
                Span::of(max),
                "`max_groups` must be at least 1",
                "the default is 10000",
            );
        }
        if c.timeout.is_some_and(|t| t.0.is_zero()) || c.interval.is_some_and(|t| t.0.is_zero()) {
            self.error(
                at,
                "`timeout` and `interval` must be longer than 0",
                "for example `timeout: 5s`",
            );
        }
        if self.diagnostics.len() != before {
            return None;
        }
        let text = |t: &Option<Spanned<sluice_flow::Text>>| t.as_ref().map(|t| t.value.0.clone());
        // Positions are left out: moving the step in the file keeps its groups.
        let definition = format!(
            "{:?}",
            (
                text(&c.key),
                c.size.as_ref().map(|s| s.value),
                c.timeout,
                c.interval,
                text(&c.when),
                c.end_of_batch,
                c.on_shutdown,
                text(&c.output),
                c.max_groups.as_ref().map(|m| m.value),
            )
        );
        let state_key = format!("aggregate/{}/{path}/{definition}", self.flow.name);
        let step = steps::aggregate::Aggregate::new(
            &self.flow.name,
            &state_key,
            steps::aggregate::Settings {
                key,
                size: c.size.as_ref().map(|s| s.value),
                timeout: c.timeout.map(|t| t.0),
                interval: c.interval.map(|t| t.0),
                when,
                end_of_batch: c.end_of_batch,
                on_shutdown: c.on_shutdown,
                output,
                max_groups: c
                    .max_groups
                    .as_ref()
                    .map_or(DEFAULT_MAX_GROUPS, |m| m.value),
            },
        );
        self.stateful.push(step.stateful());
        Some(Node::Sync(Box::new(step)))
    }

    fn dedupe(&mut self, config: &Spanned<sluice_flow::DedupeConfig>, path: &str) -> Option<Node> {
        let c = &config.value;
        let before = self.diagnostics.len();
        let key = self.optional_expr(&c.key).ok().flatten();
        if c.ttl.is_some_and(|t| t.0.is_zero()) {
            self.error(
                Span::of(config),
                "`ttl` must be longer than 0",
                "how long a key is remembered, e.g. `ttl: 24h`",
            );
        }
        if let Some(max) = &c.max_keys
            && max.value == 0
        {
            self.error(
                Span::of(max),
                "`max_keys` must be at least 1",
                "the default is 1000000",
            );
        }
        let file = match &c.path {
            Some(p) if p.value.as_str().trim().is_empty() => {
                self.error(
                    Span::of(p),
                    "the dedupe store `path` is empty",
                    "a redb file, e.g. `state/orders-dedupe.redb`, or leave `path` out for memory",
                );
                None
            }
            Some(p) => {
                let file = super::normalize(Path::new(p.value.as_str()));
                if file.is_dir() {
                    self.error(
                        Span::of(p),
                        format!("`{}` is a folder", p.value),
                        "give the path of a file (it is created when missing)",
                    );
                }
                Some(file)
            }
            None => None,
        };
        if self.diagnostics.len() != before {
            return None;
        }
        let max_keys = c.max_keys.as_ref().map_or(DEFAULT_MAX_KEYS, |m| m.value);
        // A file store is shared by every step that names the file (one open per process);
        // a memory store by the versions of this step.
        let state_key = match &file {
            Some(f) => format!("dedupe-file/{}", f.display()),
            None => format!("dedupe/{}/{path}/{max_keys}", self.flow.name),
        };
        let cell = crate::state::shared(&state_key, || {
            Arc::new(steps::dedupe::StoreCell::new(file.clone(), max_keys))
        });
        Some(Node::Async(Box::new(steps::dedupe::Dedupe::new(
            &self.flow.name,
            key,
            c.ttl.map_or(DEFAULT_TTL, |t| t.0),
            cell,
        ))))
    }

    fn throttle(
        &mut self,
        config: &Spanned<sluice_flow::ThrottleConfig>,
        path: &str,
    ) -> Option<Node> {
        let c = &config.value;
        let before = self.diagnostics.len();
        let key = self.optional_expr(&c.key).ok().flatten();
        if c.rate.is_none() && c.concurrency.is_none() {
            self.error(
                Span::of(config),
                "this throttle limits nothing",
                "give `rate` (e.g. `rate: 50/s`), `concurrency` (e.g. `concurrency: 4`), or both",
            );
        }
        if c.key.is_some() && c.rate.is_none() {
            self.error(
                Span::of(config),
                "`key` needs a `rate`: it picks one token bucket per key",
                "add `rate:`, or remove `key:`",
            );
        }
        let rate = match &c.rate {
            None => None,
            Some(text) => match steps::throttle::Rate::parse(text.value.as_str()) {
                Ok(rate) => Some(rate),
                Err(e) => {
                    self.error(
                        Span::of(text),
                        e,
                        "a rate is `<count>/<s|m|h>`, e.g. `50/s`",
                    );
                    None
                }
            },
        };
        if let Some(burst) = &c.burst
            && burst.value == 0
        {
            self.error(
                Span::of(burst),
                "`burst` must be at least 1",
                "the default is 1",
            );
        }
        if let Some(n) = &c.concurrency
            && n.value == 0
        {
            self.error(
                Span::of(n),
                "`concurrency` must be at least 1",
                "for example `concurrency: 4`",
            );
        }
        if self.diagnostics.len() != before {
            return None;
        }
        let burst = c.burst.as_ref().map_or(1, |b| b.value);
        let concurrency = c.concurrency.as_ref().map(|n| n.value);
        let definition = format!(
            "{:?}",
            (
                rate.map(|r| r.per_second.to_bits()),
                burst,
                c.on_rate,
                concurrency,
                c.on_concurrency
            )
        );
        let state_key = format!("throttle/{}/{path}/{definition}", self.flow.name);
        let limits = crate::state::shared(&state_key, || {
            Arc::new(steps::throttle::Limits::new(
                rate.map(|r| (r, burst, c.on_rate)),
                concurrency.map(|n| (n, c.on_concurrency)),
            ))
        });
        Some(Node::Async(Box::new(steps::throttle::Throttle::new(
            &self.flow.name,
            key,
            limits,
        ))))
    }

    pub(super) fn try_catch(
        &mut self,
        step: &Spanned<StepConfig>,
        body: &[Spanned<StepConfig>],
        handler: Option<&Vec<Spanned<StepConfig>>>,
        path: &str,
        sinks: &[&str],
    ) -> Option<Box<dyn steps::AsyncStep>> {
        let Some(handler) = handler else {
            self.error(
                Span::of(step),
                "`try` must be followed by a `catch` step",
                "add `- catch: [...]` right after it, with the steps that handle the error (the error is in meta('error.kind'), meta('error.message'), meta('error.step'))",
            );
            return None;
        };
        if body.is_empty() {
            self.error(
                Span::of(step),
                "`try` has no steps",
                "list the steps that may fail: `- try: [ {script: ...} ]`",
            );
            return None;
        }
        let before = self.diagnostics.len();
        let body = self.steps(body, &format!("{path}.try"), sinks);
        let handler = self.steps(handler, &format!("{path}.catch"), sinks);
        (self.diagnostics.len() == before)
            .then(|| Box::new(steps::TryCatch::new(body, handler)) as Box<dyn steps::AsyncStep>)
    }

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

    pub(super) fn unknown_sink<T>(
        &mut self,
        at: &Spanned<T>,
        name: &str,
        sinks: &[&str],
        what: &str,
    ) {
        let mut d = self
            .flow
            .diagnostic(Span::of(at), format!("{what} undefined sink `{name}`"));
        if let Some(close) = did_you_mean(name, sinks.iter().copied()) {
            d = d.with_help(format!("did you mean `{close}`?"));
        }
        d = d.with_help(if sinks.is_empty() {
            "the flow defines no sinks; add one under `sinks:`".to_owned()
        } else {
            format!("defined sinks: {}", sinks.join(", "))
        });
        self.diagnostics.push(d);
    }

    /// An expression whose position falls back to the step's when it has none (shorthand).
    pub(super) fn expr_at(&mut self, text: &Spanned<Text>, step: Option<Span>) -> Option<Expr> {
        if Span::of(text).is_some() {
            return self.expr(text);
        }
        match Expr::compile(text.value.as_str()) {
            Ok(expr) => Some(expr),
            Err(e) => {
                self.error(
                    step,
                    e.message,
                    "check the JMESPath syntax: https://jmespath.org/specification.html",
                );
                None
            }
        }
    }

    pub(super) fn optional_expr(
        &mut self,
        text: &Option<Spanned<Text>>,
    ) -> Result<Option<Expr>, ()> {
        match text {
            None => Ok(None),
            Some(t) => self.expr(t).map(Some).ok_or(()),
        }
    }
}
