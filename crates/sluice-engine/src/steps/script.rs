use super::{Control, Exec, Step};
use crate::error::FlowError;
use crate::script::Sandbox;
use std::sync::Arc;

/// `script: <rhai>` — runs a sandboxed Rhai script over the payload.
pub struct Script {
    sandbox: Arc<Sandbox>,
    ast: rhai::AST,
}

impl Script {
    /// A script step with its compiled AST.
    pub fn new(sandbox: Arc<Sandbox>, ast: rhai::AST) -> Self {
        Script { sandbox, ast }
    }
}

impl Step for Script {
    fn run(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        self.sandbox.run(&self.ast, &mut exec.payload, &exec.meta)?;
        Ok(Control::Continue)
    }
}
