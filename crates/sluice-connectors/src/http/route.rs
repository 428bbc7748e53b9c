//! Route patterns: `/orders/{id}` matched segment by segment.

use super::HttpError;

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A compiled route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
}

impl Pattern {
    /// Parses a pattern; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Pattern, HttpError> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(HttpError::RelativePath(text.to_owned()));
        };
        let mut segments = Vec::new();
        let mut names = Vec::new();
        for part in rest.split('/').filter(|p| !p.is_empty()) {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return Err(HttpError::BadParameter(name.to_owned()));
                }
                if names.contains(&name) {
                    return Err(HttpError::DuplicateParameter(name.to_owned()));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_owned()));
            } else if part.contains('{') || part.contains('}') {
                return Err(HttpError::PartialParameter(part.to_owned()));
            } else {
                segments.push(Segment::Literal(part.to_owned()));
            }
        }
        Ok(Pattern { segments })
    }

    /// The pattern with parameter names erased, so `/a/{id}` and `/a/{x}` compare equal.
    pub fn shape(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param(_) => out.push_str("{}"),
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// Matches a request path; returns the (percent-decoded) parameters.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.clone(), percent_decode(part))),
            }
        }
        Some(params)
    }
}

/// Decodes `%xx` escapes (and `+` is kept: it is only a space in query strings).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string into decoded pairs (`+` is a space).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_and_extract_parameters() {
        let p = Pattern::parse("/orders/{id}/lines/{line}").unwrap();
        assert_eq!(
            p.matches("/orders/o%201/lines/2"),
            Some(vec![
                ("id".into(), "o 1".into()),
                ("line".into(), "2".into())
            ])
        );
        assert_eq!(p.matches("/orders/1"), None);
        assert_eq!(p.shape(), "/orders/{}/lines/{}");
        let error = |text| Pattern::parse(text).unwrap_err().to_string();
        assert_eq!(error("orders"), "the path `orders` must start with `/`");
        assert_eq!(
            error("/a/{x}/{x}"),
            "the path parameter `{x}` appears twice"
        );
        assert_eq!(
            error("/a/b{x}"),
            "`b{x}`: a path parameter must be a whole segment, like `{id}`"
        );
        assert_eq!(
            error("/a/{x y}"),
            "`{x y}` is not a valid path parameter; use letters, digits, `_` and `-`"
        );
        assert_eq!(Pattern::parse("/").unwrap().matches("/"), Some(vec![]));
    }

    #[test]
    fn queries_decode() {
        assert_eq!(
            parse_query("q=a+b&x=%2F&flag"),
            vec![
                ("q".into(), "a b".into()),
                ("x".into(), "/".into()),
                ("flag".into(), "".into())
            ]
        );
    }
}
