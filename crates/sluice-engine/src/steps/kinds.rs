//! The one list of step kinds: each `StepConfig` variant and the function, beside the step's
//! runtime in `steps/<kind>.rs`, that compiles it. Adding a step kind adds one line here.

use super::Step;
use crate::compile::Compiler;
use sluice_flow::{FlowStep, Spanned, StepConfig};

/// Compiles one step (not `try`/`catch`, which the step list pairs up, see
/// [`Compiler::steps`]); `None` when it has mistakes, which are reported to `cx`. `path` is
/// where the step sits (`steps[2]`), `sinks` the flow's sink names.
pub(crate) fn compile(
    cx: &mut Compiler<'_>,
    step: &Spanned<FlowStep>,
    path: &str,
    sinks: &[&str],
) -> Option<Box<dyn Step>> {
    match &step.value.config {
        StepConfig::Validate(name) => super::validate::compile(cx, name),
        StepConfig::Transform(text) => super::transform::compile(cx, text),
        StepConfig::Set(fields) => super::set::compile(cx, step, fields),
        StepConfig::Script(text) => super::script::compile(cx, text),
        StepConfig::Filter(text) => super::filter::compile(cx, text),
        StepConfig::Route(arms) => super::route::compile(cx, step, arms, path, sinks),
        StepConfig::To(targets) => super::to::compile(cx, targets, sinks),
        StepConfig::Log(text) => super::log::compile(cx, text),
        StepConfig::Split(config) => super::split::compile(cx, step, config),
        StepConfig::Aggregate(config) => super::aggregate::compile(cx, config, path),
        StepConfig::Dedupe(config) => super::dedupe::compile(cx, config, path),
        StepConfig::Wiretap(sink) => super::wiretap::compile(cx, sink, sinks),
        StepConfig::Throttle(config) => super::throttle::compile(cx, config, path),
        StepConfig::Call(flow) => super::call::compile(cx, flow, path),
        StepConfig::Reply(reply) => super::reply::compile(cx, reply),
        StepConfig::Enrich(enrich) => super::enrich::compile(cx, enrich, path),
        StepConfig::Stop(outcome) => super::stop::compile(cx, *outcome),
        // Paired up by the step list: a `try` with the `catch` after it is one step.
        StepConfig::Try(body) => super::try_catch::compile(cx, step, body, None, path, sinks),
        StepConfig::Catch(_) => {
            cx.error(
                sluice_flow::Span::of(step),
                "`catch` must come right after a `try` step",
                "put the steps that may fail in a `- try: [...]` step just before this one",
            );
            None
        }
    }
}
