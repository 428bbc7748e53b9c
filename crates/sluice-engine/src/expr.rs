//! JMESPath expressions with a `meta('name')` function, and `{{ expr }}` templates.

use crate::message::{Meta, PathValue, Payload};
use jmespath::functions::Function;
use jmespath::{Context, JmespathError, Rcvar, Runtime, Variable};
use std::cell::RefCell;
use std::sync::{Arc, LazyLock};

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    let mut runtime = Runtime::new();
    runtime.register_builtin_functions();
    runtime.register_function("meta", Box::new(MetaFunction));
    // The built-in one loses numbers that are not i64/u64 (see value::jmes_numbers).
    runtime.register_function("to_number", Box::new(crate::value::ToNumber));
    runtime
});

thread_local! {
    // JMESPath functions get no user context, so `meta()` reads the metadata of the message
    // being evaluated on this thread; `Expr::search` sets it for exactly one evaluation.
    static CURRENT_META: RefCell<Option<Arc<Meta>>> = const { RefCell::new(None) };
}

struct MetaFunction;

impl Function for MetaFunction {
    fn evaluate(&self, args: &[Rcvar], ctx: &mut Context<'_>) -> Result<Rcvar, JmespathError> {
        let name = match args {
            [arg] => arg.as_string().cloned(),
            _ => None,
        };
        let Some(name) = name else {
            return Err(JmespathError::from_ctx(
                ctx,
                jmespath::ErrorReason::Parse(
                    "meta() takes one string argument, the metadata name, e.g. meta('file.name')"
                        .to_owned(),
                ),
            ));
        };
        let value =
            CURRENT_META.with(|meta| meta.borrow().as_ref().and_then(|m| m.get(&name).cloned()));
        Ok(Rcvar::new(match value {
            Some(v) => Variable::String(v),
            None => Variable::Null,
        }))
    }
}

/// A compile error of an expression: the character offset in the expression and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// 0-based character offset into the expression text.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// A compiled JMESPath expression.
pub struct Expr {
    inner: jmespath::Expression<'static>,
    uses_meta: bool,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({})", self.inner.as_str())
    }
}

impl Expr {
    /// Compiles an expression; errors carry the offset of the problem.
    pub fn compile(text: &str) -> Result<Expr, ExprError> {
        if text.trim().is_empty() {
            return Err(ExprError {
                offset: 0,
                message: "the expression is empty".to_owned(),
            });
        }
        let mut inner = RUNTIME.compile(text).map_err(|e| ExprError {
            offset: e.offset.min(text.chars().count()),
            message: format!("invalid JMESPath: {}", e.reason),
        })?;
        // Number literals such as `9.5` come out of jmespath's parser mangled by serde_json's
        // `arbitrary_precision` (see value::jmes_numbers); mend them once, here.
        let mut ast = inner.as_ast().clone();
        if crate::value::repair_literals(&mut ast) {
            inner = jmespath::Expression::new(text, ast, &RUNTIME);
        }
        Ok(Expr {
            uses_meta: text.contains("meta"),
            inner,
        })
    }

    /// The source text.
    pub fn as_str(&self) -> &str {
        self.inner.as_str()
    }

    /// Evaluates against `data`, with `meta` visible to `meta('…')`.
    pub fn search(&self, data: Rcvar, meta: &Arc<Meta>) -> Result<Rcvar, String> {
        if !self.uses_meta {
            return self.interpret(&data).map_err(|e| self.runtime_error(e));
        }
        CURRENT_META.with(|current| *current.borrow_mut() = Some(meta.clone()));
        let result = self.interpret(&data);
        CURRENT_META.with(|current| *current.borrow_mut() = None);
        result.map_err(|e| self.runtime_error(e))
    }

    /// Runs the expression on `data` as it is. `Expression::search` takes any `Serialize`
    /// input and, without the nightly-only `specialized` feature, serializes even an `Rcvar`
    /// into a fresh copy: a deep copy of the payload per evaluation.
    fn interpret(&self, data: &Rcvar) -> Result<Rcvar, JmespathError> {
        let mut context = Context::new(self.inner.as_str(), &RUNTIME);
        jmespath::interpret(data, self.inner.as_ast(), &mut context)
    }

    fn runtime_error(&self, e: JmespathError) -> String {
        format!("expression `{}` failed: {}", self.inner.as_str(), e.reason)
    }
}

/// A string with `{{ expr }}` holes, rendered against a payload and its metadata.
#[derive(Debug)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Literal(String),
    /// A plain field path such as `order_id` or `customer.id`, read without conversion.
    Path(Vec<String>, String),
    Expr(Expr),
}

impl Template {
    /// Parses a template; errors carry the character offset into the template text.
    pub fn compile(text: &str) -> Result<Template, ExprError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut consumed = 0usize;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(ExprError {
                    offset: consumed + rest[..start].chars().count(),
                    message: "`{{` is not closed by `}}`".to_owned(),
                });
            };
            let inner = &after[..end];
            let inner_offset = consumed + rest[..start + 2].chars().count();
            let trimmed = inner.trim();
            let lead = inner.len() - inner.trim_start().len();
            if is_plain_path(trimmed) {
                parts.push(Part::Path(
                    trimmed.split('.').map(str::to_owned).collect(),
                    trimmed.to_owned(),
                ));
            } else {
                let expr = Expr::compile(trimmed).map_err(|e| ExprError {
                    offset: inner_offset + lead + e.offset,
                    message: e.message,
                })?;
                parts.push(Part::Expr(expr));
            }
            let advance = start + 2 + end + 2;
            consumed += rest[..advance].chars().count();
            rest = &rest[advance..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// True when the template has no holes.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The pieces in order: `Some(text)` for literal text, `None` for a `{{ }}` hole (URL
    /// templates decide from the text before a hole which part of the URL it fills).
    pub fn pieces(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        self.parts.iter().map(|part| match part {
            Part::Literal(text) => Some(text.as_str()),
            Part::Path(..) | Part::Expr(_) => None,
        })
    }

    /// Renders the template. Strings are inserted as they are, numbers and booleans as JSON.
    pub fn render(&self, payload: &mut Payload, meta: &Arc<Meta>) -> Result<String, String> {
        self.render_with(payload, meta, |_, value, out| out.push_str(value))
    }

    /// Renders the template, handing the value of the n-th hole to `hole(n, value, out)`,
    /// which appends it to `out` (escaped as the caller's context needs).
    pub fn render_with(
        &self,
        payload: &mut Payload,
        meta: &Arc<Meta>,
        mut hole: impl FnMut(usize, &str, &mut String),
    ) -> Result<String, String> {
        let mut out = String::new();
        let mut index = 0;
        for part in &self.parts {
            let n = index;
            if !matches!(part, Part::Literal(_)) {
                index += 1;
            }
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Path(path, text) => match payload.get_path(path) {
                    Some(PathValue::Text(value)) => hole(n, &value, &mut out),
                    Some(PathValue::Other) => {
                        return Err(format!(
                            "`{{{{{text}}}}}` is an array or object; a template needs a string, number or boolean"
                        ));
                    }
                    Some(PathValue::Null) | None => {
                        return Err(format!(
                            "`{{{{{text}}}}}` is missing or null in the payload"
                        ));
                    }
                },
                Part::Expr(expr) => {
                    let value = expr.search(payload.jmes()?, meta)?;
                    match &*value {
                        Variable::String(s) => hole(n, s, &mut out),
                        Variable::Number(number) => hole(n, &number.to_string(), &mut out),
                        Variable::Bool(b) => hole(n, &b.to_string(), &mut out),
                        Variable::Null => {
                            return Err(format!(
                                "`{{{{{}}}}}` is null; a template needs a string, number or boolean",
                                expr.as_str()
                            ));
                        }
                        _ => {
                            return Err(format!(
                                "`{{{{{}}}}}` is an array or object; a template needs a string, number or boolean",
                                expr.as_str()
                            ));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn is_plain_path(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|segment| {
            let mut chars = segment.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta() -> Arc<Meta> {
        Arc::new(Meta::from([("file.name".to_owned(), "a.json".to_owned())]))
    }

    #[test]
    fn meta_function_reads_message_metadata() {
        let expr = Expr::compile("meta('file.name')").unwrap();
        let out = expr.search(Rcvar::new(Variable::Null), &meta()).unwrap();
        assert_eq!(out.as_string().map(String::as_str), Some("a.json"));
        let missing = Expr::compile("meta('nope')").unwrap();
        assert!(
            missing
                .search(Rcvar::new(Variable::Null), &meta())
                .unwrap()
                .is_null()
        );
    }

    #[test]
    fn compile_errors_have_offsets() {
        let err = Expr::compile("a.[b").unwrap_err();
        assert!(err.offset > 0, "{err:?}");
        let err = Template::compile("x-{{ a.[ }}.json").unwrap_err();
        assert!(err.offset >= 5, "{err:?}");
        assert!(Template::compile("x-{{a").is_err());
    }

    #[test]
    fn templates_render_paths_and_expressions() {
        let t =
            Template::compile("{{order_id}}-{{ customer.id }}-{{ length(lines) }}.json").unwrap();
        let mut p =
            Payload::from_json(json!({"order_id": "o-1", "customer": {"id": 7}, "lines": [1, 2]}));
        assert_eq!(t.render(&mut p, &meta()).unwrap(), "o-1-7-2.json");
        let mut missing = Payload::from_json(json!({}));
        assert!(
            t.render(&mut missing, &meta())
                .unwrap_err()
                .contains("order_id")
        );
        let m = Template::compile("{{ meta('file.name') }}").unwrap();
        assert_eq!(m.render(&mut missing, &meta()).unwrap(), "a.json");
    }
}
