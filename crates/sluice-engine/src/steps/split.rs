//! `split: <jmespath>` — one child message per element of an array.
//!
//! The children run the steps after the split (at the top level of a flow), each with its own
//! deliveries, retries and dead letter; the parent is acknowledged when every child is done.

use super::{Control, Exec, Fork, Run, Step};
use crate::compile::Compiler;
use crate::error::{ErrorKind, FlowError};
use crate::expr::Expr;
use crate::hold::Hold;
use crate::message::{Ids, MESSAGE_ID, Meta, Payload};
use jmespath::Variable;
use sluice_flow::{FlowStep, OnChildError, Span, Spanned, SplitConfig};
use std::sync::Arc;

/// Metadata: the 0-based position of a child.
pub const SPLIT_INDEX: &str = "split.index";
/// Metadata: the number of children.
pub const SPLIT_COUNT: &str = "split.count";
/// Metadata: the parent's message id.
pub const SPLIT_PARENT: &str = "split.parent";

/// The compiled `split` step.
pub struct Split {
    on: Expr,
    fail_parent: bool,
}

impl Split {
    /// A split over the array `on` yields; `fail_parent`: a failing child fails the parent.
    pub fn new(on: Expr, fail_parent: bool) -> Self {
        Split { on, fail_parent }
    }
}

/// The children of a split, not yet running.
pub struct Children {
    payloads: Vec<Payload>,
    /// A failing child fails the parent (instead of dead-lettering itself only).
    pub fail_parent: bool,
}

impl Children {
    /// One execution per child, with `split.*` metadata and a share of the parent's hold.
    pub fn into_execs(self, parent: &Arc<Meta>, hold: Option<&Hold>) -> Vec<Exec> {
        let count = self.payloads.len();
        let parent_id = parent.message_id();
        self.payloads
            .into_iter()
            .enumerate()
            .map(|(index, payload)| {
                let mut meta = (**parent).clone();
                meta.insert(SPLIT_INDEX.to_owned(), index.to_string());
                meta.insert(SPLIT_COUNT.to_owned(), count.to_string());
                meta.insert(SPLIT_PARENT.to_owned(), parent_id.to_owned());
                meta.insert(MESSAGE_ID.to_owned(), format!("{parent_id}.{index}"));
                let mut exec = Exec::new(payload, Arc::new(meta));
                exec.hold = hold.cloned();
                exec
            })
            .collect()
    }
}

impl Step for Split {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Done(self.apply(exec))
    }
}

impl Split {
    fn apply(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        let data = exec.jmes()?;
        let result = self
            .on
            .search(data, &exec.meta)
            .map_err(|e| FlowError::new(ErrorKind::Transform, e))?;
        let payloads: Vec<Payload> = match &*result {
            Variable::Array(items) => items.iter().cloned().map(Payload::from_jmes).collect(),
            other => {
                return Err(FlowError::new(
                    ErrorKind::Transform,
                    format!(
                        "`split` needs an array, but the expression yielded {}",
                        other.get_type()
                    ),
                ));
            }
        };
        if payloads.is_empty() {
            // Nothing to split: the message is complete, like a filtered one.
            return Ok(Control::Drop);
        }
        exec.fork = Some(Fork::Split(Children {
            payloads,
            fail_parent: self.fail_parent,
        }));
        Ok(Control::Fork)
    }
}

/// Compiles `split:`; the shorthand `split: <jmespath>` has no position of its own, so its
/// mistakes point at the step.
pub(crate) fn compile(
    cx: &mut Compiler<'_>,
    step: &Spanned<FlowStep>,
    config: &Spanned<SplitConfig>,
) -> Option<Box<dyn Step>> {
    let c = &config.value;
    cx.expr_at(&c.on, Span::of(config).or(Span::of(step)))
        .map(|on| {
            Box::new(Split::new(on, c.on_child_error == OnChildError::FailParent)) as Box<dyn Step>
        })
}
