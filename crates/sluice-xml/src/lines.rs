//! Lines and columns of a document read as a stream: the parser reports byte offsets, and a
//! record's line (the `file.line` of its message) and an error's position are wanted in lines.

use std::io::{BufRead, Read};

/// A reader that counts the newlines of what its consumer has consumed.
pub(crate) struct LineCounter<R> {
    inner: R,
    consumed: u64,
    newlines: usize,
    /// The offset just after the last newline consumed.
    line_start: u64,
}

impl<R: BufRead> LineCounter<R> {
    pub(crate) fn new(inner: R) -> Self {
        LineCounter {
            inner,
            consumed: 0,
            newlines: 0,
            line_start: 0,
        }
    }

    /// The 1-based line of what was consumed last.
    pub(crate) fn line(&self) -> usize {
        1 + self.newlines
    }

    /// The 1-based line and column of `offset`, which the parser reports at or a little
    /// before what it consumed (on the same line, for the errors it reports).
    pub(crate) fn position(&self, offset: u64) -> (usize, usize) {
        let column = offset.saturating_sub(self.line_start);
        (
            self.line(),
            usize::try_from(column)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        )
    }
}

impl<R: BufRead> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for LineCounter<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        // The buffer is the one the consumer just saw: filling again does not read.
        if let Ok(buf) = self.inner.fill_buf() {
            let taken = &buf[..amt.min(buf.len())];
            if let Some(last) = taken.iter().rposition(|b| *b == b'\n') {
                self.newlines += taken.iter().filter(|b| **b == b'\n').count();
                self.line_start = self.consumed + last as u64 + 1;
            }
        }
        self.consumed += amt as u64;
        self.inner.consume(amt);
    }
}

/// The 1-based line and column (in bytes) of `offset` in `bytes`.
pub(crate) fn position_in(bytes: &[u8], offset: u64) -> (usize, usize) {
    let end = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let before = &bytes[..end];
    let line = 1 + before.iter().filter(|b| **b == b'\n').count();
    let column = end
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_in_bytes() {
        let text = b"ab\ncd\n\nef";
        assert_eq!(position_in(text, 0), (1, 1));
        assert_eq!(position_in(text, 4), (2, 2));
        assert_eq!(position_in(text, 7), (4, 1));
    }

    #[test]
    fn the_counter_follows_consumption() {
        let mut counter = LineCounter::new(&b"a\nb\nc"[..]);
        let mut all = Vec::new();
        counter.read_to_end(&mut all).unwrap();
        assert_eq!(counter.line(), 3);
        assert_eq!(counter.position(5), (3, 2));
    }
}
