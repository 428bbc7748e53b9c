use super::{Control, Exec, Run, Step};
use crate::compile::Compiler;
use crate::error::{ErrorKind, FlowError};
use crate::expr::Expr;
use sluice_flow::{Spanned, Text};

/// `filter: <jmespath>` — drops the message unless the predicate is truthy.
pub struct Filter {
    predicate: Expr,
}

impl Filter {
    /// A filter step.
    pub fn new(predicate: Expr) -> Self {
        Filter { predicate }
    }
}

impl Step for Filter {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Done(self.apply(exec))
    }

    fn in_place(&self) -> bool {
        true
    }
}

impl Filter {
    fn apply(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        let data = exec.jmes()?;
        let keep = self
            .predicate
            .search(data, &exec.meta)
            .map_err(|e| FlowError::new(ErrorKind::Transform, e))?
            .is_truthy();
        Ok(if keep {
            Control::Continue
        } else {
            Control::Drop
        })
    }
}

/// Compiles `filter: <jmespath>`.
pub(crate) fn compile(cx: &mut Compiler<'_>, text: &Spanned<Text>) -> Option<Box<dyn Step>> {
    Some(Box::new(Filter::new(cx.expr(text)?)))
}
