use super::{Control, Exec, Run, Step};
use crate::compile::Compiler;
use crate::error::{ErrorKind, FlowError};
use crate::expr::Expr;
use crate::message::Payload;
use jmespath::{Rcvar, Variable};
use sluice_flow::{FlowStep, Span, Spanned, Text};
use std::collections::BTreeMap;

/// `set: {field: <jmespath>}` — evaluates each expression against the payload and merges
/// the results in as fields.
pub struct Set {
    fields: Vec<(String, Expr)>,
}

impl Set {
    /// A set step.
    pub fn new(fields: Vec<(String, Expr)>) -> Self {
        Set { fields }
    }
}

impl Step for Set {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Done(self.apply(exec))
    }

    fn in_place(&self) -> bool {
        true
    }
}

impl Set {
    fn apply(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        let data = exec.jmes()?;
        let Some(object) = data.as_object() else {
            return Err(FlowError::new(
                ErrorKind::Transform,
                format!(
                    "`set` needs an object payload, but the payload is {}",
                    data.get_type()
                ),
            ));
        };
        let mut merged = object.clone();
        for (field, expr) in &self.fields {
            let value = expr.search(data.clone(), &exec.meta).map_err(|e| {
                FlowError::new(ErrorKind::Transform, format!("field `{field}`: {e}"))
            })?;
            merged.insert(field.clone(), value);
        }
        exec.payload = Payload::from_jmes(Rcvar::new(Variable::Object(merged)));
        Ok(Control::Continue)
    }
}

/// Compiles `set: {field: <jmespath>}`; `step` is the whole step, for an empty map.
pub(crate) fn compile(
    cx: &mut Compiler<'_>,
    step: &Spanned<FlowStep>,
    fields: &BTreeMap<String, Spanned<Text>>,
) -> Option<Box<dyn Step>> {
    if fields.is_empty() {
        cx.error(
            Span::of(step),
            "`set` has no fields",
            "add `field: <jmespath>` entries",
        );
        return None;
    }
    let mut compiled = Vec::new();
    for (field, text) in fields {
        compiled.push((field.clone(), cx.expr(text)?));
    }
    Some(Box::new(Set::new(compiled)))
}
