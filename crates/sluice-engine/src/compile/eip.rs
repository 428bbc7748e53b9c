//! Compiling the enterprise-integration-pattern steps, each with positioned diagnostics.

use super::Compiler;
use crate::steps::{self, Node};
use sluice_flow::{Span, Spanned, StepConfig};
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
}
