//! Positions inside YAML scalars: an error at a character of an expression or an inline
//! script points at that character in the flow file.

use sluice_flow::Span;

/// 0-based line and column of a character offset in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 0;
    let mut column = 0;
    for c in text.chars().take(offset) {
        if c == '\n' {
            line += 1;
            column = 0;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// Maps a (0-based) line and column inside a YAML scalar's value to a file position.
/// Handles plain and quoted one-line scalars, and `|`/`>` block scalars.
pub fn position_in_scalar(
    source: &str,
    at: Option<Span>,
    line: usize,
    column: usize,
) -> Option<Span> {
    let at = at?;
    let lines: Vec<&str> = source.lines().collect();
    let start_line = lines.get(at.line.saturating_sub(1) as usize)?;
    let first = start_line.chars().nth(at.column.saturating_sub(1) as usize);
    match first {
        Some('|') | Some('>') => {
            // Block scalar: content starts on the next line, at its indentation.
            let content_line = at.line as usize + 1 + line;
            let text = lines.get(content_line - 1)?;
            let indent = text.chars().take_while(|c| *c == ' ').count();
            Some(Span {
                line: content_line as u64,
                column: (indent + column + 1) as u64,
                len: 1,
            })
        }
        Some('"') | Some('\'') if line == 0 => Some(Span {
            line: at.line,
            column: at.column + 1 + column as u64,
            len: 1,
        }),
        _ if line == 0 && !is_block_content(&lines, at) => Some(Span {
            line: at.line,
            column: at.column + column as u64,
            len: 1,
        }),
        _ => {
            // A block scalar's position is its first content line; later lines keep its indentation.
            let content_line = at.line as usize + line;
            let text = lines.get(content_line - 1)?;
            let indent = text.chars().take_while(|c| *c == ' ').count();
            Some(Span {
                line: content_line as u64,
                column: (indent + column + 1) as u64,
                len: 1,
            })
        }
    }
}

/// True when the scalar at `at` is the content of a `|` or `>` block (the line before ends
/// with the block indicator).
fn is_block_content(lines: &[&str], at: Span) -> bool {
    let Some(before) = (at.line as usize).checked_sub(2).and_then(|i| lines.get(i)) else {
        return false;
    };
    let before = before.split(" #").next().unwrap_or("").trim_end();
    let indicator = before.trim_end_matches(|c: char| c == '-' || c == '+' || c.is_ascii_digit());
    indicator.ends_with('|') || indicator.ends_with('>')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_inside_scalars() {
        let source =
            "steps:\n  - filter: \"a ==\"\n  - script: |\n      let a = 1;\n      let = 2;\n";
        let quoted = Span {
            line: 2,
            column: 13,
            len: 1,
        };
        assert_eq!(
            position_in_scalar(source, Some(quoted), 0, 3).map(|s| (s.line, s.column)),
            Some((2, 17))
        );
        let block = Span {
            line: 4,
            column: 7,
            len: 1,
        };
        assert_eq!(
            position_in_scalar(source, Some(block), 1, 4).map(|s| (s.line, s.column)),
            Some((5, 11))
        );
        assert_eq!(
            position_in_scalar(source, Some(block), 0, 4).map(|s| (s.line, s.column)),
            Some((4, 11))
        );
    }
}
