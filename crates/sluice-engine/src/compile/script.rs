//! Script steps and `script_limits`: the script is found, compiled and prepared for the
//! return rule; a script whose last call's result is ignored gets a warning; limits outside
//! their range are errors at their position.

use super::{Compiler, position_in_scalar};
use crate::script::tail::TailWarning;
use crate::steps;
use sluice_flow::{Diagnostic, ScriptLimits, Span, Spanned, Text};
use std::path::Path;
use std::time::Duration;

impl Compiler<'_> {
    /// Refuses `script_limits` values outside their ranges (Rhai reads an operation limit of
    /// 0 as "unlimited", which would let a loop run until the deadline on every message, and
    /// `sluice test` forever).
    pub(super) fn check_script_limits(&mut self) {
        let limits = &self.flow.file.script_limits;
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        if let Some(deadline) = &limits.deadline {
            let (low, high) = ScriptLimits::DEADLINE_RANGE;
            if !(low..=high).contains(&deadline.value.0) {
                self.error(
                    Span::of(deadline),
                    format!(
                        "`script_limits.deadline` is {}, outside the accepted range {} to {}",
                        fmt(deadline.value.0),
                        fmt(low),
                        fmt(high)
                    ),
                    "use a deadline from 1ms to 1m (the default is 1s)",
                );
            }
        }
        if let Some(ops) = &limits.max_operations {
            let (low, high) = ScriptLimits::MAX_OPERATIONS_RANGE;
            if !(low..=high).contains(&ops.value) {
                self.error(
                    Span::of(ops),
                    format!(
                        "`script_limits.max_operations` is {}, outside the accepted range {low} to {high}",
                        ops.value
                    ),
                    "0 does not mean \"no limit\": use a limit from 1 to 1000000000000 (the default is 1000000); the deadline bounds the time either way",
                );
            }
        }
        if let Some(c) = &limits.concurrency {
            let (low, high) = ScriptLimits::CONCURRENCY_RANGE;
            if !(low..=high).contains(&c.value) {
                self.error(
                    Span::of(c),
                    format!(
                        "`script_limits.concurrency` is {}, outside the accepted range {low} to {high}",
                        c.value
                    ),
                    "use the number of script runs of this flow allowed at once (default: the number of cores less one)",
                );
            }
        }
    }

    pub(super) fn script(&mut self, text: &Spanned<Text>) -> Option<Box<dyn steps::Step>> {
        let value = text.value.as_str();
        let is_file = !value.contains('\n') && value.trim().ends_with(".rhai");
        if is_file {
            return self.script_file(text, value);
        }
        match self.sandbox.compile(value) {
            Ok(script) => {
                if let Some(w) = &script.warning {
                    let span = self.inline_position(text, w.line, w.column);
                    let d = self.flow.diagnostic(span, w.message()).with_help(w.help());
                    self.warnings.push(d);
                }
                Some(Box::new(steps::Script::new(
                    self.sandbox.clone(),
                    script.ast,
                    value,
                )))
            }
            Err((line, column, message)) => {
                let span = self.inline_position(text, line, column);
                let d = self
                    .flow
                    .diagnostic(span, format!("Rhai syntax error: {message}"))
                    .with_help(format!(
                        "at line {line}, column {column} of the inline script"
                    ));
                self.diagnostics.push(d);
                None
            }
        }
    }

    /// The file position of a 1-based line and column inside an inline script.
    fn inline_position(&self, text: &Spanned<Text>, line: usize, column: usize) -> Option<Span> {
        position_in_scalar(
            &self.flow.source,
            Span::of(text),
            line.saturating_sub(1),
            column.saturating_sub(1),
        )
    }

    fn script_file(&mut self, text: &Spanned<Text>, value: &str) -> Option<Box<dyn steps::Step>> {
        let reference = Path::new(value.trim());
        let candidates = [reference.to_owned(), self.folders.scripts.join(reference)];
        let Some(path) = candidates.iter().find(|p| p.is_file()).cloned() else {
            self.error(
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
        self.depend(path.clone());
        let source = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => {
                self.error(
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
        match self.sandbox.compile(&source) {
            Ok(script) => {
                if let Some(w) = &script.warning {
                    let d = file_warning(&path, &source, at(w.line, w.column), w)
                        .with_help(format!("in the script used by flow `{}`", self.flow.name));
                    self.warnings.push(d);
                }
                Some(Box::new(steps::Script::new(
                    self.sandbox.clone(),
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
                .with_help(format!("in the script used by flow `{}`", self.flow.name));
                self.diagnostics.push(d);
                None
            }
        }
    }
}

fn file_warning(path: &Path, source: &str, span: Option<Span>, w: &TailWarning) -> Diagnostic {
    Diagnostic::at(path, source, span, w.message()).with_help(w.help())
}
