use super::{Control, Exec, Step};
use crate::error::{ErrorKind, FlowError};
use crate::expr::Template;

/// `reply: {status, headers}` — sets the status and headers of a request-reply answer
/// (the HTTP response); other triggers ignore them.
pub struct Reply {
    status: Option<u16>,
    headers: Vec<(String, Template)>,
}

impl Reply {
    /// A reply step; the status is already checked to be 100–599.
    pub fn new(status: Option<u16>, headers: Vec<(String, Template)>) -> Self {
        Reply { status, headers }
    }
}

impl Step for Reply {
    fn run(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        if let Some(status) = self.status {
            exec.reply.status = Some(status);
        }
        let meta = exec.meta.clone();
        for (name, template) in &self.headers {
            let value = template.render(&mut exec.payload, &meta).map_err(|e| {
                FlowError::new(ErrorKind::Transform, format!("reply header `{name}`: {e}"))
            })?;
            exec.reply
                .headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            exec.reply.headers.push((name.clone(), value));
        }
        Ok(Control::Continue)
    }
}
