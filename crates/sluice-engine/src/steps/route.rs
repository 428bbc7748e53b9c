use super::to::To;
use super::{Control, Exec, Run, Step, Steps};
use crate::compile::Compiler;
use crate::error::{ErrorKind, FlowError};
use crate::expr::Expr;
use sluice_flow::{FlowStep, RouteArm as RouteArmConfig, Span, Spanned};
use std::sync::Arc;

/// What a matching route arm does.
pub enum RouteAction {
    /// Deliver to these sinks.
    Deliver(Arc<[String]>),
    /// Run these steps.
    Steps(Steps),
}

/// One arm: a predicate (none for `else`) and an action.
pub struct RouteArm {
    /// `None` for the `else` arm.
    pub when: Option<Expr>,
    /// What to do on a match.
    pub action: RouteAction,
}

/// `route:` — content-based router; the first arm whose predicate is truthy wins, and the
/// message then continues with the step after the route.
pub struct Route {
    arms: Vec<(String, RouteArm)>,
}

impl Route {
    /// A route with labelled arms.
    pub fn new(arms: Vec<(String, RouteArm)>) -> Self {
        Route { arms }
    }
}

impl Route {
    /// The first arm that matches, or `None`.
    fn pick(&self, exec: &mut Exec) -> Result<Option<&RouteAction>, FlowError> {
        for (label, arm) in &self.arms {
            if let Some(when) = &arm.when {
                let data = exec.jmes()?;
                let hit = when
                    .search(data, &exec.meta)
                    .map_err(|e| FlowError::new(ErrorKind::Transform, e).at_step(label.clone()))?
                    .is_truthy();
                if !hit {
                    continue;
                }
            }
            if let Some(probe) = &exec.probe {
                probe.note_matched(label);
            }
            return Ok(Some(&arm.action));
        }
        if let Some(probe) = &exec.probe {
            probe.note_matched("none");
        }
        Ok(None)
    }
}

impl Step for Route {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        match self.pick(exec) {
            Err(e) => Run::Done(Err(e)),
            Ok(Some(RouteAction::Deliver(sinks))) => {
                To::record(sinks, exec);
                Run::Done(Ok(Control::Continue))
            }
            // Only an arm with steps of its own waits (they may).
            Ok(Some(RouteAction::Steps(steps))) => Run::Wait(Box::pin(steps.run(exec))),
            Ok(None) => Run::Done(Ok(Control::Continue)),
        }
    }

    fn in_place(&self) -> bool {
        self.arms.iter().all(|(_, arm)| match &arm.action {
            RouteAction::Deliver(_) => true,
            RouteAction::Steps(steps) => steps.in_place(),
        })
    }
}

/// Compiles `route:`; `path` labels the arms (`steps[2].route[0]`) and their nested steps.
pub(crate) fn compile(
    cx: &mut Compiler<'_>,
    step: &Spanned<FlowStep>,
    arms: &[Spanned<RouteArmConfig>],
    path: &str,
    sinks: &[&str],
) -> Option<Box<dyn Step>> {
    let mut compiled = Vec::new();
    let mut failed = false;
    for (i, arm) in arms.iter().enumerate() {
        let label = format!("{path}.route[{i}]");
        let a = &arm.value;
        let span = Span::of(arm);
        let action = match (&a.when, &a.to, &a.steps, &a.otherwise) {
            (Some(_), Some(to), None, None) => cx
                .targets(to, sinks)
                .map(|t| RouteAction::Deliver(t.into())),
            (Some(_), None, Some(nested), None) => Some(RouteAction::Steps(cx.steps(
                nested,
                &format!("{label}.steps"),
                sinks,
            ))),
            (None, None, None, Some(to)) => {
                if i + 1 != arms.len() {
                    cx.error(
                        span,
                        "`else` must be the last arm of a route",
                        "move the `else` arm to the end",
                    );
                }
                cx.targets(to, sinks)
                    .map(|t| RouteAction::Deliver(t.into()))
            }
            _ => {
                cx.error(
                    span,
                    "a route arm is `{when, to}`, `{when, steps}` or `{else}`",
                    "give each arm a `when:` with either `to:` or `steps:`, and end with `else:` if needed",
                );
                None
            }
        };
        let when = match &a.when {
            Some(text) => cx.expr(text).map(Some),
            None => Some(None),
        };
        match (when, action) {
            (Some(when), Some(action)) => compiled.push((label, RouteArm { when, action })),
            _ => failed = true,
        }
    }
    if arms.is_empty() {
        cx.error(
            Span::of(step),
            "`route` has no arms",
            "add `- when: <jmespath>` arms",
        );
        return None;
    }
    if failed {
        return None;
    }
    Some(Box::new(Route::new(compiled)))
}
