//! Reading sluice's log: fields, flows, positions, tails.

/// Removes ANSI escape sequences (colours), in case the logger emits them into a file.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates, then one final byte in @..~
                for c2 in chars.by_ref() {
                    if ('@'..='~').contains(&c2) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Whether `line` carries the field `key=value` exactly (quoted or not), not as a prefix of a
/// longer value: `flow=hr` does not match `flow=hr2`.
pub fn has_field(line: &str, key: &str, value: &str) -> bool {
    for needle in [format!("{key}={value}"), format!("{key}=\"{value}\"")] {
        let mut start = 0;
        while let Some(i) = line[start..].find(&needle) {
            let at = start + i;
            let before_ok = at == 0 || {
                let b = line.as_bytes()[at - 1];
                !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            };
            let end = at + needle.len();
            let after_ok = end == line.len() || {
                let b = line.as_bytes()[end];
                !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            };
            if before_ok && after_ok {
                return true;
            }
            start = at + 1;
        }
    }
    false
}

pub fn has_flow(line: &str, flow: &str) -> bool {
    has_field(line, "flow", flow)
}

/// Lines of `log` containing `substr` with `flow=<flow>`.
pub fn lines_with(log: &str, substr: &str, flow: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(substr) && has_flow(l, flow))
        .count()
}

/// Fails unless exactly one line of `log` for `flow` contains `substr`.
pub fn assert_logged_once(log: &str, substr: &str, flow: &str) {
    assert_eq!(
        lines_with(log, substr, flow),
        1,
        "`{substr}` logged once for flow={flow}:\n{}",
        tail(log, 30)
    );
}

/// Every `<file>:<line>:<col>` position named in `text` for a file whose path ends with `file`
/// (e.g. `flows/hr.yaml`).
pub fn positions(text: &str, file: &str) -> Vec<(u32, u32)> {
    let needle = format!("{file}:");
    let mut found = Vec::new();
    let mut start = 0;
    while let Some(i) = text[start..].find(&needle) {
        let rest = &text[start + i + needle.len()..];
        if let Some(pos) = parse_line_col(rest) {
            found.push(pos);
        }
        start += i + 1;
    }
    found
}

fn parse_line_col(s: &str) -> Option<(u32, u32)> {
    let line_len = s.bytes().take_while(u8::is_ascii_digit).count();
    if line_len == 0 || s.as_bytes().get(line_len) != Some(&b':') {
        return None;
    }
    let rest = &s[line_len + 1..];
    let col_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    if col_len == 0 {
        return None;
    }
    Some((s[..line_len].parse().ok()?, rest[..col_len].parse().ok()?))
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}
