//! The Prometheus text format, parsed strictly, and scraping the admin server's `/metrics`.

use std::collections::BTreeSet;

use super::http::admin_get;
use super::process::Ports;

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    /// family name → type (`counter`, `gauge`, `histogram`, `summary`, `untyped`).
    pub types: std::collections::BTreeMap<String, String>,
    pub helps: std::collections::BTreeMap<String, String>,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_prom_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses the Prometheus text exposition format (0.0.4), strictly: every line is a comment,
/// `# HELP`, `# TYPE`, or a sample `name{label="value",…} value [timestamp]`; a family's
/// `# TYPE` comes at most once and before its samples.
pub fn parse_prometheus(text: &str) -> Result<Metrics, String> {
    let mut m = Metrics::default();
    let mut seen_samples: BTreeSet<String> = BTreeSet::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix("HELP ") {
                let (name, help) = r.split_once(' ').unwrap_or((r, ""));
                if !is_metric_name(name) {
                    return Err(format!("line {n}: bad metric name in HELP: {raw:?}"));
                }
                m.helps.insert(name.to_owned(), help.to_owned());
            } else if let Some(r) = rest.strip_prefix("TYPE ") {
                let (name, ty) = r
                    .split_once(' ')
                    .ok_or_else(|| format!("line {n}: TYPE without a type: {raw:?}"))?;
                if !is_metric_name(name) {
                    return Err(format!("line {n}: bad metric name in TYPE: {raw:?}"));
                }
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty.trim()) {
                    return Err(format!("line {n}: unknown type {ty:?}"));
                }
                if m.types
                    .insert(name.to_owned(), ty.trim().to_owned())
                    .is_some()
                {
                    return Err(format!("line {n}: second TYPE for {name}"));
                }
                if seen_samples.contains(name) {
                    return Err(format!("line {n}: TYPE for {name} after its samples"));
                }
            }
            continue;
        }
        // A sample.
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| format!("line {n}: no value: {raw:?}"))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(format!("line {n}: bad metric name {name:?}"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if rest.starts_with('{') {
            let bytes = rest.as_bytes();
            let mut i = 1;
            loop {
                while i < bytes.len() && bytes[i] == b' ' {
                    i += 1;
                }
                if i < bytes.len() && bytes[i] == b'}' {
                    i += 1;
                    break;
                }
                let key_start = i;
                while i < bytes.len() && bytes[i] != b'=' {
                    i += 1;
                }
                let key = rest[key_start..i].trim();
                if !is_label_name(key) || i + 1 >= bytes.len() || bytes[i + 1] != b'"' {
                    return Err(format!("line {n}: bad label near {:?}", &rest[key_start..]));
                }
                i += 2;
                let mut value = String::new();
                loop {
                    match bytes.get(i) {
                        None => return Err(format!("line {n}: unterminated label value")),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            match bytes.get(i + 1) {
                                Some(b'n') => value.push('\n'),
                                Some(b'\\') => value.push('\\'),
                                Some(b'"') => value.push('"'),
                                other => {
                                    return Err(format!("line {n}: bad escape {other:?}"));
                                }
                            }
                            i += 2;
                        }
                        Some(_) => {
                            let ch = rest[i..].chars().next().unwrap();
                            value.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                labels.push((key.to_owned(), value));
                while i < bytes.len() && bytes[i] == b' ' {
                    i += 1;
                }
                match bytes.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return Err(format!("line {n}: expected , or }} in labels: {raw:?}")),
                }
            }
            rest = &rest[i..];
        }
        let mut fields = rest.split_whitespace();
        let value_text = fields
            .next()
            .ok_or_else(|| format!("line {n}: no value: {raw:?}"))?;
        let value = parse_prom_value(value_text)
            .ok_or_else(|| format!("line {n}: bad value {value_text:?}"))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| format!("line {n}: bad timestamp {ts:?}"))?;
        }
        if fields.next().is_some() {
            return Err(format!("line {n}: trailing text: {raw:?}"));
        }
        let family = ["_bucket", "_sum", "_count", "_total", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| m.types.contains_key(*f)))
            .unwrap_or(name);
        seen_samples.insert(family.to_owned());
        seen_samples.insert(name.to_owned());
        m.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(m)
}

impl Metrics {
    /// Samples named `name` whose labels include every pair in `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }

    /// The sum of the matching samples; `None` when there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = false;
        let mut sum = 0.0;
        for s in self.matching(name, labels) {
            found = true;
            sum += s.value;
        }
        found.then_some(sum)
    }

    /// Like [`Metrics::value`], 0 when absent (counters that never moved may be missing).
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}

/// `GET <admin>/metrics`, checked for status 200 and parsed strictly.
pub fn scrape(ports: Ports) -> Metrics {
    scrape_with(ports, None)
}

pub fn scrape_with(ports: Ports, token: Option<&str>) -> Metrics {
    let r = admin_get(ports, "/metrics", token);
    assert_eq!(r.status, 200, "GET /metrics:\n{r}");
    parse_prometheus(&r.text())
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{}", r.text()))
}
