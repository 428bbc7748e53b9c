//! Why a document could not be read, and where.

/// A document that is not XML sluice accepts: malformed, with a DTD, too deep, not UTF-8, or
/// an undefined entity. `line` and `column` (1-based, the column in bytes) point at the
/// problem, or as near as the parser saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at line {line} column {column}")]
pub struct XmlError {
    /// What is wrong, for humans.
    pub reason: String,
    /// The 1-based line.
    pub line: usize,
    /// The 1-based column, in bytes.
    pub column: usize,
    /// The byte offset of the problem in the input.
    pub offset: u64,
}

impl XmlError {
    pub(crate) fn at(
        reason: impl Into<String>,
        offset: u64,
        (line, column): (usize, usize),
    ) -> Self {
        XmlError {
            reason: reason.into(),
            line,
            column,
            offset,
        }
    }
}
