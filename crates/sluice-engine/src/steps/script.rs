use super::{Control, Exec, Step};
use crate::error::FlowError;
use crate::script::Sandbox;
use std::sync::Arc;

/// `script: <rhai>` — runs a sandboxed Rhai script over the payload.
pub struct Script {
    sandbox: Arc<Sandbox>,
    ast: rhai::AST,
    uses_meta: bool,
}

impl Script {
    /// A script step with its compiled AST.
    pub fn new(sandbox: Arc<Sandbox>, ast: rhai::AST, source: &str) -> Self {
        Script {
            sandbox,
            ast,
            // A script that never names `meta` does not need the map built for it.
            uses_meta: source.contains("meta"),
        }
    }
}

impl Step for Script {
    fn run(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        self.sandbox
            .run(&self.ast, self.uses_meta, &mut exec.payload, &exec.meta)?;
        Ok(Control::Continue)
    }
}
