use super::{AsyncStep, Control, Exec, Steps, To};
use crate::error::{ErrorKind, FlowError};
use crate::expr::Expr;
use async_trait::async_trait;
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

// Asynchronous because an arm's nested steps may wait.
#[async_trait]
impl AsyncStep for Route {
    async fn run(&self, exec: &mut Exec) -> Result<Control, FlowError> {
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
            return match &arm.action {
                RouteAction::Deliver(sinks) => {
                    To::record(sinks, exec);
                    Ok(Control::Continue)
                }
                RouteAction::Steps(steps) => steps.run(exec).await,
            };
        }
        Ok(Control::Continue)
    }
}
