use super::{Control, Exec, Run, Step};
use crate::compile::Compiler;
use crate::error::{ErrorKind, FlowError};
use crate::expr::Expr;
use crate::message::Payload;
use sluice_flow::{Spanned, Text};

/// `transform: <jmespath>` — replaces the payload with the expression's result.
pub struct Transform {
    expr: Expr,
}

impl Transform {
    /// A transform step.
    pub fn new(expr: Expr) -> Self {
        Transform { expr }
    }
}

impl Step for Transform {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Done(self.apply(exec))
    }

    fn in_place(&self) -> bool {
        true
    }
}

impl Transform {
    fn apply(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        let data = exec.jmes()?;
        let result = self
            .expr
            .search(data, &exec.meta)
            .map_err(|e| FlowError::new(ErrorKind::Transform, e))?;
        exec.payload = Payload::from_jmes(result);
        Ok(Control::Continue)
    }
}

/// Compiles `transform: <jmespath>`.
pub(crate) fn compile(cx: &mut Compiler<'_>, text: &Spanned<Text>) -> Option<Box<dyn Step>> {
    Some(Box::new(Transform::new(cx.expr(text)?)))
}
