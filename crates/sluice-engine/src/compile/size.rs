//! The size of a flow: how many steps it has (nested ones counted) and how deeply they nest.
//! A flow past either limit is refused at load, before anything is compiled.

use super::Compiler;
use sluice_flow::{FlowStep, Span, Spanned, StepConfig};

/// The most steps a flow may have, counting the steps nested in `route` arms, `try` and
/// `catch`. Real flows have tens; a flow of thousands is a generated mistake.
pub const MAX_STEPS: usize = 1000;

/// The deepest nesting of `route` arms and `try`/`catch` bodies.
pub const MAX_DEPTH: usize = 16;

/// Where a flow first passes a limit.
#[derive(Default)]
struct Tally {
    steps: usize,
    first_past_steps: Option<Option<Span>>,
    first_past_depth: Option<Option<Span>>,
}

impl Tally {
    fn walk(&mut self, list: &[Spanned<FlowStep>], depth: usize) {
        for step in list {
            self.steps += 1;
            if self.steps == MAX_STEPS + 1 {
                self.first_past_steps = Some(Span::of(step));
            }
            if depth > MAX_DEPTH && self.first_past_depth.is_none() {
                self.first_past_depth = Some(Span::of(step));
            }
            match &step.value.config {
                StepConfig::Route(arms) => {
                    for arm in arms {
                        if let Some(nested) = &arm.value.steps {
                            self.walk(nested, depth + 1);
                        }
                    }
                }
                StepConfig::Try(nested) | StepConfig::Catch(nested) => self.walk(nested, depth + 1),
                _ => {}
            }
        }
    }
}

impl Compiler<'_> {
    /// Refuses a flow with more than [`MAX_STEPS`] steps or nested deeper than
    /// [`MAX_DEPTH`]; returns false when it did.
    pub(super) fn check_size(&mut self) -> bool {
        let mut tally = Tally::default();
        tally.walk(&self.flow.file.steps, 1);
        let mut ok = true;
        if let Some(span) = tally.first_past_steps {
            self.error(
                span,
                format!(
                    "the flow has {} steps (nested steps in `route`, `try` and `catch` counted); the limit is {MAX_STEPS}",
                    tally.steps
                ),
                "split the work into several flows connected by `call` or a `channel`; this is the first step past the limit",
            );
            ok = false;
        }
        if let Some(span) = tally.first_past_depth {
            self.error(
                span,
                format!("steps nest more than {MAX_DEPTH} levels deep (`route` arms, `try`, `catch`)"),
                "flatten the nesting, or move the inner steps into a flow of their own and `call` it",
            );
            ok = false;
        }
        ok
    }
}
