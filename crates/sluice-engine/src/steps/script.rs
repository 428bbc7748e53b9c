use super::{Control, Exec, Step, StepFuture};
use crate::error::{ErrorKind, FlowError};
use crate::script::Sandbox;
use std::sync::Arc;

/// `script: <rhai>` — runs a sandboxed Rhai script over the payload, on the blocking pool
/// (see [`Sandbox::run_isolated`]), so that a busy script never holds up the threads that
/// serve I/O and the other flows.
pub struct Script {
    sandbox: Arc<Sandbox>,
    // Shared with the thread that runs it.
    ast: Arc<rhai::AST>,
    uses_meta: bool,
}

impl Script {
    /// A script step with its compiled AST.
    pub fn new(sandbox: Arc<Sandbox>, ast: rhai::AST, source: &str) -> Self {
        Script {
            sandbox,
            ast: Arc::new(ast),
            // A script that never names `meta` does not need the map built for it.
            uses_meta: source.contains("meta"),
        }
    }
}

impl Step for Script {
    fn run(&self, _exec: &mut Exec) -> Result<Control, FlowError> {
        Err(FlowError::new(
            ErrorKind::Script,
            "internal: a script step must run asynchronously",
        ))
    }

    fn is_async(&self) -> bool {
        true
    }

    fn run_async<'a>(&'a self, exec: &'a mut Exec) -> StepFuture<'a> {
        Box::pin(async move {
            self.sandbox
                .run_isolated(&self.ast, self.uses_meta, &mut exec.payload, &exec.meta)
                .await?;
            Ok(Control::Continue)
        })
    }
}
