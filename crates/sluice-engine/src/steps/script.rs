use super::{Control, Exec, Run, Step};
use crate::compile::Compiler;
use crate::script::Sandbox;
use crate::script::tail::TailWarning;
use sluice_flow::diagnostic::position_in_scalar;
use sluice_flow::{Diagnostic, Span, Spanned, Text};
use std::path::Path;
use std::sync::Arc;

/// `script: <rhai>` — runs a sandboxed Rhai script over the payload, on the blocking pool or
/// on the blocking thread that read the message (see [`Sandbox::run_isolated`]), so that a
/// busy script never holds up the threads that serve I/O and the other flows.
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
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Wait(Box::pin(async move {
            self.sandbox
                .run_isolated(&self.ast, self.uses_meta, &mut exec.payload, &exec.meta)
                .await?;
            Ok(Control::Continue)
        }))
    }

    // A script is bounded by its deadline; in place it runs on the reading thread, which
    // serves no I/O (see `Sandbox::run_isolated`).
    fn in_place(&self) -> bool {
        true
    }
}

/// Compiles `script:`, inline or a `.rhai` file (found beside the flow's working directory
/// or in the scripts folder, and watched); a script whose last call's result is ignored
/// gets a warning.
pub(crate) fn compile(cx: &mut Compiler<'_>, text: &Spanned<Text>) -> Option<Box<dyn Step>> {
    let value = text.value.as_str();
    let is_file = !value.contains('\n') && value.trim().ends_with(".rhai");
    if is_file {
        return compile_file(cx, text, value);
    }
    match cx.sandbox.compile(value) {
        Ok(script) => {
            if let Some(w) = &script.warning {
                let span = inline_position(cx, text, w.line, w.column);
                let d = cx.flow.diagnostic(span, w.message()).with_help(w.help());
                cx.warnings.push(d);
            }
            Some(Box::new(Script::new(cx.sandbox.clone(), script.ast, value)))
        }
        Err((line, column, message)) => {
            let span = inline_position(cx, text, line, column);
            let d = cx
                .flow
                .diagnostic(span, format!("Rhai syntax error: {message}"))
                .with_help(format!(
                    "at line {line}, column {column} of the inline script"
                ));
            cx.diagnostics.push(d);
            None
        }
    }
}

/// The file position of a 1-based line and column inside an inline script.
fn inline_position(
    cx: &Compiler<'_>,
    text: &Spanned<Text>,
    line: usize,
    column: usize,
) -> Option<Span> {
    position_in_scalar(
        &cx.flow.source,
        Span::of(text),
        line.saturating_sub(1),
        column.saturating_sub(1),
    )
}

fn compile_file(cx: &mut Compiler<'_>, text: &Spanned<Text>, value: &str) -> Option<Box<dyn Step>> {
    let reference = Path::new(value.trim());
    let candidates = [reference.to_owned(), cx.folders.scripts.join(reference)];
    let Some(path) = candidates.iter().find(|p| p.is_file()).cloned() else {
        cx.error(
            Span::of(text),
            format!("script file `{value}` not found"),
            format!(
                "looked for {} and {}; create it or fix the path",
                candidates[0].display(),
                candidates[1].display()
            ),
        );
        return None;
    };
    cx.depend(path.clone());
    let source = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) => {
            cx.error(
                Span::of(text),
                format!("cannot read script {}: {e}", path.display()),
                "check the file's permissions",
            );
            return None;
        }
    };
    let at = |line: usize, column: usize| {
        Some(Span {
            line: line as u64,
            column: column as u64,
            len: 1,
        })
    };
    match cx.sandbox.compile(&source) {
        Ok(script) => {
            if let Some(w) = &script.warning {
                let d = file_warning(&path, &source, at(w.line, w.column), w)
                    .with_help(format!("in the script used by flow `{}`", cx.flow.name));
                cx.warnings.push(d);
            }
            Some(Box::new(Script::new(
                cx.sandbox.clone(),
                script.ast,
                &source,
            )))
        }
        Err((line, column, message)) => {
            let d = Diagnostic::at(
                &path,
                &source,
                at(line, column),
                format!("Rhai syntax error: {message}"),
            )
            .with_help(format!("in the script used by flow `{}`", cx.flow.name));
            cx.diagnostics.push(d);
            None
        }
    }
}

fn file_warning(path: &Path, source: &str, span: Option<Span>, w: &TailWarning) -> Diagnostic {
    Diagnostic::at(path, source, span, w.message()).with_help(w.help())
}
