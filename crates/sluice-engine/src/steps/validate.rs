use super::{Control, Exec, Run, Step};
use crate::compile::Compiler;
use crate::contract::Contract;
use crate::error::{ErrorKind, FlowError};
use sluice_flow::{Spanned, Text};
use std::sync::Arc;

/// `validate: <contract>` — checks the payload against a JSON Schema.
pub struct Validate {
    contract: Arc<Contract>,
}

impl Validate {
    /// A validate step for a loaded contract.
    pub fn new(contract: Arc<Contract>) -> Self {
        Validate { contract }
    }
}

impl Step for Validate {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Done(self.apply(exec))
    }

    fn in_place(&self) -> bool {
        true
    }
}

impl Validate {
    fn apply(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        let json = exec
            .payload
            .json()
            .map_err(|e| FlowError::new(ErrorKind::Transform, e))?;
        self.contract.check(json)?;
        Ok(Control::Continue)
    }
}

/// Compiles `validate: <contract>`: the contract is loaded (and watched) now.
pub(crate) fn compile(cx: &mut Compiler<'_>, name: &Spanned<Text>) -> Option<Box<dyn Step>> {
    Some(Box::new(Validate::new(cx.contract(name)?)))
}
