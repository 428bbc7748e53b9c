//! Positions inside YAML scalars: an error at a character of an expression or an inline
//! script points at that character in the flow file.

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

#[cfg(test)]
mod tests {
    use sluice_flow::Span;
    use sluice_flow::diagnostic::position_in_scalar;

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
