//! Small helpers for writing flows and finding positions in them.

/// The file-trigger options used by tests that want quick pick-up (the defaults favour safety:
/// 500 ms minimum age, three looks 200 ms apart).
pub const FAST_TRIGGER: &str =
    "min_age: 100ms\n    check_interval: 50ms\n    stable_checks: 2\n    rescan_interval: 1s";

/// The 1-based line number of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> u32 {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i as u32 + 1)
        .unwrap_or_else(|| panic!("{needle:?} not found in:\n{text}"))
}

/// The 1-based column of `needle` in the first line of `text` containing it.
pub fn col_of(text: &str, needle: &str) -> u32 {
    let line = text
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not found in:\n{text}"));
    line.find(needle).unwrap() as u32 + 1
}
