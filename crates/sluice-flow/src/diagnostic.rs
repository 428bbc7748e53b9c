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
            yaml_lines(source)
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

/// The lines of a YAML text as its parser counts them: `\n`, `\r\n` and a lone `\r` each end one.
pub fn yaml_lines(source: &str) -> impl Iterator<Item = &str> {
    let mut rest = (!source.is_empty()).then_some(source);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\n', '\r']) {
            Some(at) => {
                let skip = if text[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[at + skip..]).filter(|r| !r.is_empty());
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

/// One character of a YAML text with its 1-based position; every line break is one `'\n'`.
#[derive(Clone, Copy)]
struct Placed {
    c: char,
    line: u64,
    column: u64,
}

fn placed_chars(source: &str) -> Vec<Placed> {
    let mut out = Vec::with_capacity(source.len());
    let (mut line, mut column) = (1, 1);
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        let c = match c {
            '\r' => {
                chars.next_if_eq(&'\n');
                '\n'
            }
            c => c,
        };
        out.push(Placed { c, line, column });
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    out
}

/// Maps a position inside a YAML scalar's value (0-based `line` and `column` of the value as
/// loaded, after `${env:…}` substitution) to the file position of the character it comes
/// from, for a scalar written at `at`. The value is rebuilt from the file text the way YAML
/// builds it, so quotes, escapes, folded line breaks of multi-line plain and quoted scalars,
/// and `|`/`>` blocks (with `at` at the indicator or at the first content line) all map to
/// where the character is written. A position past the value's end points just after its
/// last character. The result is always inside the file's text.
pub fn position_in_scalar(
    source: &str,
    at: Option<Span>,
    line: usize,
    column: usize,
) -> Option<Span> {
    let at = at?;
    let chars = placed_chars(source);
    let point = |i: usize| {
        let p = chars[i];
        Span {
            line: p.line,
            column: p.column,
            len: 1,
        }
    };
    let Some(start) = chars
        .iter()
        .position(|p| p.line == at.line && p.column == at.column)
    else {
        // The scalar is not at a character (an empty value at the end of its line, or a
        // position from elsewhere): keep its line, within the line.
        let width = yaml_lines(source)
            .nth(at.line.saturating_sub(1) as usize)?
            .chars()
            .count() as u64;
        return Some(Span {
            line: at.line,
            column: at.column.clamp(1, width + 1),
            len: 1,
        });
    };
    // A one-character span is also what a caller without the real extent passes.
    let end = match at.len {
        len if len > 1 => (start + len as usize).min(chars.len()),
        _ => chars.len(),
    };
    let raw = scalar_value(&chars, start, end);
    let raw_text: String = raw.iter().map(|&(c, _)| c).collect();
    let value = crate::text::value_origins(&raw_text);
    // The value's character at (line, column); a column past its line counts on, so that a
    // caller may pass a character offset into the whole value as column of line 0.
    let mut offset = 0;
    let mut lines_to_go = line;
    while lines_to_go > 0 && offset < value.len() {
        if value[offset].0 == '\n' {
            lines_to_go -= 1;
        }
        offset += 1;
    }
    let offset = offset + column;
    match value.get(offset).and_then(|&(_, r)| raw.get(r)) {
        Some(&(_, i)) => Some(point(i)),
        None => {
            // Past the end: just after the value's last character, on its line.
            let last = raw.last().map_or(start, |&(_, i)| i);
            let next = last + 1;
            let after = if raw.is_empty() && !matches!(chars[start].c, '"' | '\'') {
                start
            } else {
                next
            };
            Some(point(match chars.get(after) {
                Some(p) if p.line == chars[last].line => after,
                _ => last,
            }))
        }
    }
}

/// The characters of the scalar starting at `chars[start]`, each with the index of the
/// character it is written as; `end` bounds the walk.
fn scalar_value(chars: &[Placed], start: usize, end: usize) -> Vec<(char, usize)> {
    match chars[start].c {
        '"' => quoted(chars, start + 1, end, true),
        '\'' => quoted(chars, start + 1, end, false),
        c @ ('|' | '>') => {
            let content = (start..end)
                .find(|&i| chars[i].c == '\n')
                .map_or(end, |i| i + 1);
            block(chars, content, end, c == '>')
        }
        _ => match block_indicator(chars, start) {
            Some(folded) => {
                let line_start = (0..start)
                    .rev()
                    .find(|&i| chars[i].c == '\n')
                    .map_or(0, |i| i + 1);
                block(chars, line_start, end, folded)
            }
            None => plain(chars, start, end),
        },
    }
}

/// `Some(folded)` when the line before `chars[start]`'s ends with a `|` or `>` block
/// indicator (a parser may place a block scalar at its first content line).
fn block_indicator(chars: &[Placed], start: usize) -> Option<bool> {
    let line = chars[start].line;
    let before: String = chars
        .iter()
        .filter(|p| p.line + 1 == line && p.c != '\n')
        .map(|p| p.c)
        .collect();
    let before = before.split(" #").next().unwrap_or("").trim_end();
    let indicator = before.trim_end_matches(|c: char| c == '-' || c == '+' || c.is_ascii_digit());
    match indicator.chars().last() {
        Some('|') => Some(false),
        Some('>') => Some(true),
        _ => None,
    }
}

/// The index after the spaces and tabs from `i`.
fn skip_blanks(chars: &[Placed], mut i: usize, end: usize) -> usize {
    while i < end && matches!(chars[i].c, ' ' | '\t') {
        i += 1;
    }
    i
}

/// Folds the line break at `chars[at]` of a flow scalar: one space, or one `\n` per empty
/// line that follows; the next line's leading blanks go. Returns where the text goes on.
fn fold(chars: &[Placed], at: usize, end: usize, out: &mut Vec<(char, usize)>) -> usize {
    let mut empty = Vec::new();
    let mut i = at + 1;
    loop {
        let next = skip_blanks(chars, i, end);
        if next < end && chars[next].c == '\n' {
            empty.push(next);
            i = next + 1;
        } else {
            if empty.is_empty() {
                out.push((' ', at));
            }
            out.extend(empty.into_iter().map(|e| ('\n', e)));
            return next;
        }
    }
}

/// A single- or double-quoted scalar from just after its opening quote.
fn quoted(chars: &[Placed], mut i: usize, end: usize, double: bool) -> Vec<(char, usize)> {
    let mut out = Vec::new();
    while i < end {
        match chars[i].c {
            '"' if double => break,
            '\'' if !double => {
                if i + 1 < end && chars[i + 1].c == '\'' {
                    out.push(('\'', i));
                    i += 2;
                    continue;
                }
                break;
            }
            '\\' if double => match chars.get(i + 1).map(|p| p.c) {
                // An escaped line break joins the lines without a space.
                Some('\n') => i = skip_blanks(chars, i + 2, end),
                Some(e) => {
                    let digits = match e {
                        'x' => 2,
                        'u' => 4,
                        'U' => 8,
                        _ => 0,
                    };
                    out.push((
                        unescape(e, &chars[(i + 2).min(end)..(i + 2 + digits).min(end)]),
                        i,
                    ));
                    i += 2 + digits;
                }
                None => break,
            },
            ' ' | '\t' | '\n' => i = blanks(chars, i, end, &mut out),
            c => {
                out.push((c, i));
                i += 1;
            }
        }
    }
    out
}

/// Blanks inside a flow scalar: kept, unless they end the line, where the break folds.
fn blanks(chars: &[Placed], i: usize, end: usize, out: &mut Vec<(char, usize)>) -> usize {
    let next = skip_blanks(chars, i, end);
    if next < end && chars[next].c == '\n' {
        fold(chars, next, end, out)
    } else {
        out.extend((i..next).map(|j| (chars[j].c, j)));
        next
    }
}

/// The character a double-quoted escape stands for (`e` after the backslash, `hex` its digits).
fn unescape(e: char, hex: &[Placed]) -> char {
    match e {
        '0' => '\0',
        'a' => '\u{7}',
        'b' => '\u{8}',
        't' => '\t',
        'n' => '\n',
        'v' => '\u{b}',
        'f' => '\u{c}',
        'r' => '\r',
        'e' => '\u{1b}',
        'N' => '\u{85}',
        '_' => '\u{a0}',
        'L' => '\u{2028}',
        'P' => '\u{2029}',
        'x' | 'u' | 'U' => {
            let digits: String = hex.iter().map(|p| p.c).collect();
            u32::from_str_radix(&digits, 16)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{fffd}')
        }
        other => other,
    }
}

/// A plain scalar: to the end of its line or a ` #` comment, folded onto the lines after.
fn plain(chars: &[Placed], mut i: usize, end: usize) -> Vec<(char, usize)> {
    let mut out = Vec::new();
    while i < end {
        match chars[i].c {
            ' ' | '\t' | '\n' => {
                let next = skip_blanks(chars, i, end);
                if next < end && chars[next].c == '#' && next > i {
                    break;
                }
                i = blanks(chars, i, end, &mut out);
            }
            c => {
                out.push((c, i));
                i += 1;
            }
        }
    }
    out
}

/// The content of a `|` (literal) or `>` (folded) block from the start of its first line.
fn block(chars: &[Placed], first: usize, end: usize, folded: bool) -> Vec<(char, usize)> {
    struct Line {
        text: std::ops::Range<usize>,
        brk: Option<usize>,
        empty: bool,
        more_indented: bool,
    }
    let mut lines = Vec::new();
    let mut indent = None;
    let mut i = first;
    while i < end {
        let line_end = (i..end).find(|&j| chars[j].c == '\n');
        let stop = line_end.unwrap_or(end);
        let spaces = (i..stop).take_while(|&j| chars[j].c == ' ').count();
        let empty = (i..stop).all(|j| matches!(chars[j].c, ' ' | '\t'));
        let width = match indent {
            Some(width) => width,
            None if empty => spaces,
            None => *indent.insert(spaces),
        };
        if !empty && spaces < width {
            break;
        }
        let text = (i + spaces.min(width)).min(stop)..stop;
        let more_indented =
            !empty && matches!(chars.get(text.start).map(|p| p.c), Some(' ' | '\t'));
        lines.push(Line {
            text,
            brk: line_end,
            empty,
            more_indented,
        });
        i = stop + 1;
    }
    let mut out = Vec::new();
    let mut n = 0;
    while n < lines.len() {
        let line = &lines[n];
        out.extend(line.text.clone().map(|j| (chars[j].c, j)));
        n += 1;
        let Some(brk) = line.brk else { break };
        let plain_line = !line.empty && !line.more_indented;
        let empties = lines[n..].iter().take_while(|l| l.empty).count();
        let next = lines.get(n + empties);
        if folded && plain_line && next.is_some_and(|l| !l.more_indented) {
            if empties == 0 {
                out.push((' ', brk));
            }
            for l in &lines[n..n + empties] {
                out.extend(l.text.clone().map(|j| (chars[j].c, j)));
                if let Some(b) = l.brk {
                    out.push(('\n', b));
                }
            }
            n += empties;
        } else {
            out.push(('\n', brk));
        }
    }
    out
}

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

    /// The span of the scalar that starts at the first `marker` of `source`, with its length.
    fn scalar_at(source: &str, marker: &str, len: u64) -> Option<Span> {
        let offset = source.find(marker).expect("the marker is in the source");
        let before = &source[..offset];
        let line = before.matches('\n').count() as u64 + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() as u64 + 1;
        Some(Span { line, column, len })
    }

    /// The file (line, column) of the value's character at a 0-based `offset`.
    fn where_is(source: &str, at: Option<Span>, offset: usize) -> (u64, u64) {
        let span = position_in_scalar(source, at, 0, offset).expect("a position");
        (span.line, span.column)
    }

    #[test]
    fn a_multi_line_quoted_scalar_maps_each_line() {
        let source = "sinks:\n  s:\n    file: { name: \"{{a_  b: c\n      d\n\n  e}}.json\" }\n";
        let scalar = "\"{{a_  b: c\n      d\n\n  e}}.json\"";
        let at = scalar_at(source, "\"{{", scalar.chars().count() as u64);
        // The value is `{{a_  b: c d\ne}}.json`.
        assert_eq!(where_is(source, at, 2), (3, 22));
        assert_eq!(where_is(source, at, 11), (4, 7), "`d` after a folded break");
        assert_eq!(where_is(source, at, 13), (6, 3), "`e` after an empty line");
        assert_eq!(
            where_is(source, at, 21),
            (6, 11),
            "past the end: the closing quote"
        );
        // Without the scalar's length the walk still stops at the closing quote.
        assert_eq!(where_is(source, scalar_at(source, "\"{{", 1), 21), (6, 11));
    }

    #[test]
    fn escapes_and_doubled_quotes_count_as_one_character() {
        let source = "a: \"x\\ty\\u00e9\\\"z\"\nb: 'it''s q'\n";
        let at = scalar_at(source, "\"x", 1);
        assert_eq!(where_is(source, at, 2), (1, 8), "`y` after `\\t`");
        assert_eq!(
            where_is(source, at, 5),
            (1, 17),
            "`z` after `\\u00e9` and `\\\"`"
        );
        let at = scalar_at(source, "'it", 1);
        assert_eq!(where_is(source, at, 5), (2, 11), "`q` after `''`");
    }

    #[test]
    fn a_plain_scalar_folds_and_stops_at_a_comment() {
        let source = "a: one\n  two # note\nb: c\n";
        let at = scalar_at(source, "one", 1);
        assert_eq!(where_is(source, at, 4), (2, 3), "`two` on the next line");
        assert_eq!(where_is(source, at, 7), (2, 6), "past the end, on its line");
    }

    #[test]
    fn block_scalars_map_from_the_indicator_or_the_first_line() {
        let source = "s: |\n  ab\n   cd\nf: >\n  one\n  two\n\n  three\n";
        let at = scalar_at(source, "|", 1);
        let span = position_in_scalar(source, at, 1, 2).unwrap();
        assert_eq!((span.line, span.column), (3, 5), "`d`, kept indentation");
        let first = scalar_at(source, "ab", 1);
        let span = position_in_scalar(source, first, 1, 1).unwrap();
        assert_eq!((span.line, span.column), (3, 4));
        let at = scalar_at(source, ">", 1);
        // Folded: `one two\nthree\n`.
        assert_eq!(where_is(source, at, 4), (6, 3));
        assert_eq!(where_is(source, at, 8), (8, 3));
    }

    #[test]
    fn an_env_reference_maps_to_the_reference() {
        let source = "n: \"${env:SLUICE_SURELY_UNSET_VAR:-abc}{{\"\n";
        let at = scalar_at(source, "\"$", 1);
        assert_eq!(
            where_is(source, at, 1),
            (1, 5),
            "inside the value: its reference"
        );
        assert_eq!(where_is(source, at, 3), (1, 40), "`{{` after the reference");
    }

    #[test]
    fn positions_stay_inside_the_text() {
        let source = "a: \"ab\"\nb:\n";
        assert_eq!(where_is(source, scalar_at(source, "\"ab", 4), 50), (1, 7));
        let empty = Some(Span {
            line: 2,
            column: 9,
            len: 1,
        });
        assert_eq!(where_is(source, empty, 3), (2, 3));
        assert_eq!(position_in_scalar(source, None, 0, 0), None);
        let lines: Vec<_> = yaml_lines("a\r\nb\rc\n\nd").collect();
        assert_eq!(lines, ["a", "b", "c", "", "d"]);
        assert_eq!(yaml_lines("").count(), 0);
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
