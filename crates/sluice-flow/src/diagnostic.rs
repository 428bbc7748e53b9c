//! Diagnostics in the style of rustc: file, line, column, the offending line, and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a flow, schema or script file (1-based line and column, length in chars).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// 1-based line.
    pub line: u64,
    /// 1-based column, in characters.
    pub column: u64,
    /// Characters to underline; at least one is shown.
    pub len: u64,
}

impl Span {
    /// The span of a parsed value, or `None` when the value has no known position
    /// (a default that was not written in the file).
    pub fn of<T>(spanned: &serde_saphyr::Spanned<T>) -> Option<Span> {
        let at = spanned.referenced;
        (at.line() > 0).then(|| Span {
            line: at.line(),
            column: at.column().max(1),
            len: at.span().len().max(1),
        })
    }
}

/// One problem found while loading or compiling a flow, pointing at where it applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong, in one sentence.
    pub message: String,
    /// The file the problem is in.
    pub file: PathBuf,
    /// Where in the file, when known.
    pub span: Option<Span>,
    /// The text of the line at `span`, for the snippet.
    pub source_line: Option<String>,
    /// Hints: what was expected, what to do.
    pub help: Vec<String>,
}

impl Diagnostic {
    /// A diagnostic for a whole file.
    pub fn file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Diagnostic {
            message: crate::secrets::redacted(&message.into()),
            file: file.into(),
            span: None,
            source_line: None,
            help: Vec::new(),
        }
    }

    /// A diagnostic at a position; the source text supplies the snippet line.
    pub fn at(
        file: impl Into<PathBuf>,
        source: &str,
        span: Option<Span>,
        message: impl Into<String>,
    ) -> Self {
        let source_line = span.and_then(|s| {
            source
                .lines()
                .nth(s.line.saturating_sub(1) as usize)
                .map(str::to_owned)
        });
        Diagnostic {
            message: crate::secrets::redacted(&message.into()),
            file: file.into(),
            span,
            source_line,
            help: Vec::new(),
        }
    }

    /// Adds a hint line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help.push(crate::secrets::redacted(&help.into()));
        self
    }

    /// `file:line:col`, or just the file when the position is unknown.
    pub fn location(&self) -> String {
        location(&self.file, self.span)
    }

    /// The multi-line, rustc-style rendering used by `sluice check`; secrets masked.
    pub fn render(&self) -> String {
        self.render_as("error")
    }

    /// The same rendering for a problem that does not stop the flow; secrets masked.
    pub fn render_warning(&self) -> String {
        self.render_as("warning")
    }

    fn render_as(&self, severity: &str) -> String {
        crate::secrets::redacted(&self.render_raw(severity))
    }

    fn render_raw(&self, severity: &str) -> String {
        let mut out = format!("{severity}: {}\n", self.message);
        let Some(span) = self.span else {
            out.push_str(&format!("  --> {}\n", self.file.display()));
            for help in &self.help {
                out.push_str(&format!("  = help: {help}\n"));
            }
            return out;
        };
        let number = span.line.to_string();
        let pad = " ".repeat(number.len());
        out.push_str(&format!("{pad}--> {}\n", self.location()));
        if let Some(line) = &self.source_line {
            let line = line.trim_end();
            let visible = line.chars().count() as u64;
            let start = span.column.saturating_sub(1);
            let len = span.len.min(visible.saturating_sub(start)).max(1);
            out.push_str(&format!("{pad} |\n"));
            out.push_str(&format!("{number} | {line}\n"));
            out.push_str(&format!(
                "{pad} | {}{}\n",
                " ".repeat(start as usize),
                "^".repeat(len as usize)
            ));
        }
        for help in &self.help {
            out.push_str(&format!("{pad} = help: {help}\n"));
        }
        out
    }
}

fn location(file: &Path, span: Option<Span>) -> String {
    match span {
        Some(s) => format!("{}:{}:{}", file.display(), s.line, s.column),
        None => file.display().to_string(),
    }
}

/// The one-line form used in logs and the admin API: `file:line:col: message (help)`.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The fields are public and may have been changed after construction: mask again.
        let mut line = format!("{}: {}", self.location(), self.message);
        for help in &self.help {
            line.push_str("; ");
            line.push_str(help);
        }
        f.write_str(&crate::secrets::redact(&line))
    }
}

impl std::error::Error for Diagnostic {}

/// The closest candidate to `word`, if it is close enough to be a plausible typo: at most
/// two edits away (a swap of neighbours counts as one), or very similar overall.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::osa_distance(word, c),
                strsim::jaro_winkler(word, c),
                c,
            )
        })
        .filter(|(edits, similarity, c)| {
            (*edits <= 2 && *edits < word.chars().count().min(c.chars().count()))
                || *similarity > 0.85
        })
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_rustc() {
        let source = "name: x\nsteps:\n  - tranform: a\n";
        let d = Diagnostic::at(
            "flows/x.yaml",
            source,
            Some(Span {
                line: 3,
                column: 5,
                len: 8,
            }),
            "unknown step kind `tranform`",
        )
        .with_help("did you mean `transform`?");
        let text = d.render();
        assert!(text.contains("--> flows/x.yaml:3:5"), "{text}");
        assert!(text.contains("3 |   - tranform: a"), "{text}");
        assert!(text.contains("  |     ^^^^^^^^"), "{text}");
        assert!(text.contains("= help: did you mean `transform`?"), "{text}");
        assert_eq!(
            d.to_string(),
            "flows/x.yaml:3:5: unknown step kind `tranform`; did you mean `transform`?"
        );
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("tranform", ["transform", "filter"]),
            Some("transform")
        );
        assert_eq!(did_you_mean("zzz", ["transform", "filter"]), None);
        assert_eq!(did_you_mean("lgo", ["log", "to", "set"]), Some("log"));
        assert_eq!(did_you_mean("sinkz", ["sinks", "steps"]), Some("sinks"));
    }
}
