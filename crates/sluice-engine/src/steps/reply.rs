use super::{Control, Exec, ReplyBody, Run, Step};
use crate::compile::Compiler;
use crate::error::{ErrorKind, FlowError};
use crate::expr::Template;
use sluice_flow::{ReplyConfig, ReplyFormat, Span};

/// `reply: {status, headers}` — sets the status and headers of a request-reply answer
/// (the HTTP response); other triggers ignore them. Inside a `catch` it also ends the
/// message: the caller is answered the handled error, the steps after `catch` do not run.
pub struct Reply {
    status: Option<u16>,
    headers: Vec<(String, Template)>,
    /// Set only when the step names a format (or a root), so that a later `reply` that sets
    /// only a status keeps an earlier one's format.
    body: Option<ReplyBody>,
    /// In a `catch`: answer [`Control::End`] rather than [`Control::Continue`].
    ends: bool,
}

impl Reply {
    /// A reply step; the status is already checked to be 100–599.
    pub fn new(
        status: Option<u16>,
        headers: Vec<(String, Template)>,
        body: Option<ReplyBody>,
        ends: bool,
    ) -> Self {
        Reply {
            status,
            headers,
            body,
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
        if let Some(body) = &self.body {
            exec.reply.body = Some(body.clone());
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
    let root = match &reply.root {
        Some(root) if reply.format != Some(ReplyFormat::Xml) => {
            cx.error(
                Span::of(root),
                "`root` names the XML root element",
                "add `format: xml`, or remove `root`",
            );
            return None;
        }
        Some(root) if !sluice_xml::is_name(root.value.as_str()) => {
            cx.error(
                Span::of(root),
                format!("`{}` is not an XML element name", root.value.as_str()),
                "use a letter or `_` first, then letters, digits, `-`, `.`, `_`, `:`",
            );
            return None;
        }
        root => root.as_ref().map(|r| r.value.as_str().to_owned()),
    };
    let body = match reply.format {
        Some(ReplyFormat::Xml) => Some(ReplyBody::Xml(root)),
        Some(ReplyFormat::Json) => Some(ReplyBody::Json),
        None => None,
    };
    Some(Box::new(Reply::new(
        status,
        headers,
        body,
        cx.catch_depth > 0,
    )))
}
