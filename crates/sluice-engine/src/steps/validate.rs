use super::{Control, Exec, Step};
use crate::contract::Contract;
use crate::error::{ErrorKind, FlowError};
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
    fn run(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        let json = exec
            .payload
            .json()
            .map_err(|e| FlowError::new(ErrorKind::Transform, e))?;
        self.contract.check(json)?;
        Ok(Control::Continue)
    }
}
