use super::{Control, Exec, Run, Step};
use crate::compile::Compiler;
use crate::error::{ErrorKind, FlowError};
use crate::expr::Template;
use sluice_flow::{ReplyConfig, Span};

/// `reply: {status, headers}` — sets the status and headers of a request-reply answer
/// (the HTTP response); other triggers ignore them. Inside a `catch` it also ends the
/// message: the caller is answered the handled error, the steps after `catch` do not run.
pub struct Reply {
    status: Option<u16>,
    headers: Vec<(String, Template)>,
    /// In a `catch`: answer [`Control::End`] rather than [`Control::Continue`].
    ends: bool,
}

impl Reply {
    /// A reply step; the status is already checked to be 100–599.
    pub fn new(status: Option<u16>, headers: Vec<(String, Template)>, ends: bool) -> Self {
        Reply {
            status,
            headers,
            ends,
        }
    }
}

impl Step for Reply {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Done(self.apply(exec))
    }

    fn in_place(&self) -> bool {
        true
    }
}

impl Reply {
    fn apply(&self, exec: &mut Exec) -> Result<Control, FlowError> {
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
        Ok(if self.ends {
            Control::End
        } else {
            Control::Continue
        })
    }
}

/// Compiles `reply: {status, headers}`.
pub(crate) fn compile(cx: &mut Compiler<'_>, reply: &ReplyConfig) -> Option<Box<dyn Step>> {
    let status = match &reply.status {
        Some(status) if !(100..=599).contains(&status.value) => {
            cx.error(
                Span::of(status),
                format!("`{}` is not an HTTP status", status.value),
                "use a status from 100 to 599",
            );
            return None;
        }
        Some(status) => Some(status.value),
        None => None,
    };
    let mut headers = Vec::new();
    for (name, value) in &reply.headers {
        match Template::compile(value.value.as_str()) {
            Ok(t) => headers.push((name.clone(), t)),
            Err(e) => {
                cx.expr_error(
                    value,
                    &e,
                    "a header value is text with `{{ jmespath }}` holes",
                );
                return None;
            }
        }
    }
    Some(Box::new(Reply::new(status, headers, cx.catch_depth > 0)))
}
