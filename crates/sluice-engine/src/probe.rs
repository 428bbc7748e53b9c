//! What a dry run (`tests:`, `sluice exec`) watches and stands in for: the trace of every
//! step (payload and metadata after it, the route arm taken, `log` lines, the error), the
//! mocks that replace `enrich`, `call` and sinks, and what was sent to each of them.
//!
//! One [`Probe`] per dry message, shared (behind an `Arc`) by its split children and the
//! flows it calls; a called flow sees it with a prefix (`<flow>/`) on its step labels.

use crate::error::{ErrorKind, FlowError};
use crate::message::Meta;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a mock answers in place of an `enrich` endpoint, a called flow or a sink.
#[derive(Clone, Debug, Default)]
pub struct Mock {
    /// The answer's JSON body (`enrich`: merged at `into`; `call`: the called flow's result).
    pub body: Option<Value>,
    /// The answer's HTTP status (`enrich`; default 200): a status that is not 2xx fails
    /// the step as the real endpoint would.
    pub status: Option<u16>,
    /// How long the answer takes; past the step's timeout it is a `timeout` error.
    pub delay: Option<Duration>,
    /// Fail with this error kind instead of answering.
    pub error: Option<ErrorKind>,
}

/// One request or write a dry run made to a mock (or, with `--live`, to the real endpoint).
#[derive(Clone, Debug, Serialize)]
pub struct Sent {
    /// The sink's name, or the label of the `enrich` or `call` step.
    pub to: String,
    /// The request body or payload (`null` for a request without a body).
    pub payload: Value,
}

/// One line of a trace.
#[derive(Clone, Debug, Serialize, Default)]
pub struct TraceEntry {
    /// The step (its name, or its position and kind), or `input` for the message as it
    /// arrived, or `contract.input` / `contract.output`.
    pub step: String,
    /// For a child of a `split`: its index (`split.index`), as its steps run once per child.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
    /// The whole payload after the step, when the step replaced it (more than
    /// [`MAX_CHANGES`] fields, or another type); at an error: as it was when the step
    /// failed; for `input`: as it arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// The fields the step added or changed, by JSON pointer, with their new values (when
    /// the payload kept its shape).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub changed: BTreeMap<String, Value>,
    /// The fields the step removed, by JSON pointer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Metadata the step set (every entry for `input`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    /// Metadata entries the step removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub meta_removed: Vec<String>,
    /// The `route` arm that matched (`steps[2].route[0]`), or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<String>,
    /// Lines a `log` step wrote.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
    /// Sinks the step recorded a delivery to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// A mock answered in place of the endpoint, called flow or sink.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mocked: bool,
    /// `filtered` when the step dropped the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// The step's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<TraceError>,
}

/// An error in a trace.
#[derive(Clone, Debug, Serialize)]
pub struct TraceError {
    /// Its kind.
    pub kind: ErrorKind,
    /// Its message.
    pub message: String,
}

/// Notes a step makes about itself while it runs, put on its trace entry when it ends.
#[derive(Default)]
pub(crate) struct Notes {
    matched: Option<String>,
    log: Vec<String>,
    mocked: bool,
}

#[derive(Default)]
struct Shared {
    trace: Vec<TraceEntry>,
    /// One frame per step running (nested steps push their own).
    frames: Vec<Notes>,
    sent: Vec<Sent>,
}

/// What one dry message is watched and mocked by.
#[derive(Clone)]
pub struct Probe {
    /// `<flow>/` inside a called flow, else empty.
    prefix: String,
    /// Whether a trace is kept.
    tracing: bool,
    /// Mocks by sink name or step label; `<flow>/<step>` for the steps of a called flow.
    mocks: Arc<BTreeMap<String, Mock>>,
    /// `sluice exec --live`: unmocked `enrich` steps call the real endpoint.
    live: bool,
    /// How to mock an unmocked step, for its error (`tests:` or `sluice exec`).
    how_to_mock: &'static str,
    shared: Arc<Mutex<Shared>>,
}

/// How a `tests:` case mocks a step.
pub(crate) const MOCK_IN_TEST: &str =
    "give the test case `mocks: { <step>: { body: {...}, status: 200 } }`";
/// How `sluice exec` mocks a step.
pub(crate) const MOCK_IN_EXEC: &str = "give `sluice exec` a `--mocks FILE` with `<step>: { body: {...}, status: 200 }`, or `--live` to call it for real";

impl Probe {
    /// A probe with these mocks; `tracing` keeps a trace; `live` lets unmocked `enrich`
    /// steps make real calls.
    pub fn new(mocks: BTreeMap<String, Mock>, tracing: bool, live: bool, in_test: bool) -> Self {
        Probe {
            prefix: String::new(),
            tracing,
            mocks: Arc::new(mocks),
            live,
            how_to_mock: if in_test { MOCK_IN_TEST } else { MOCK_IN_EXEC },
            shared: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The same probe for the steps of called flow `flow`.
    pub(crate) fn in_call(&self, flow: &str) -> Probe {
        let mut probe = self.clone();
        probe.prefix = format!("{}{flow}/", self.prefix);
        probe
    }

    /// The key of a step of this flow (its label with the called-flow prefix).
    pub(crate) fn key(&self, label: &str) -> String {
        format!("{}{label}", self.prefix)
    }

    /// Whether unmocked steps may make real calls.
    pub(crate) fn live(&self) -> bool {
        self.live
    }

    /// The mock of a sink, or of a step known by `label` (name or position).
    pub(crate) fn mock(&self, label: &str) -> Option<&Mock> {
        self.mocks.get(&self.key(label))
    }

    /// The error of an `enrich` step that has no mock in a dry run.
    pub(crate) fn unmocked(&self, label: &str, what: &str) -> FlowError {
        FlowError::permanent(
            ErrorKind::Transform,
            format!(
                "{what} `{}` would reach the outside world, and dry runs never do: {}",
                self.key(label),
                self.how_to_mock.replace("<step>", &self.key(label))
            ),
        )
    }

    /// Records what was sent to a mock or endpoint.
    pub(crate) fn sent(&self, to: &str, payload: Value) {
        let to = self.key(to);
        self.lock().sent.push(Sent { to, payload });
    }

    /// Everything sent, in order.
    pub fn sent_list(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    /// The trace so far.
    pub fn trace(&self) -> Vec<TraceEntry> {
        self.lock().trace.clone()
    }

    /// Whether a trace is kept.
    pub(crate) fn tracing(&self) -> bool {
        self.tracing
    }

    /// A step starts: its notes go to a frame of its own.
    pub(crate) fn begin(&self) {
        if self.tracing {
            self.lock().frames.push(Notes::default());
        }
    }

    /// The running step notes the route arm it took.
    pub(crate) fn note_matched(&self, arm: &str) {
        if self.tracing
            && let Some(frame) = self.lock().frames.last_mut()
        {
            frame.matched = Some(self.key(arm));
        }
    }

    /// The running step wrote a log line.
    pub(crate) fn note_log(&self, line: &str) {
        if self.tracing
            && let Some(frame) = self.lock().frames.last_mut()
        {
            frame.log.push(line.to_owned());
        }
    }

    /// The running step was answered by a mock.
    pub(crate) fn note_mocked(&self) {
        if self.tracing
            && let Some(frame) = self.lock().frames.last_mut()
        {
            frame.mocked = true;
        }
    }

    /// A step ended: `entry` gets the notes of its frame and joins the trace.
    pub(crate) fn end(&self, mut entry: TraceEntry) {
        if !self.tracing {
            return;
        }
        entry.step = self.key(&entry.step);
        let mut shared = self.lock();
        if let Some(notes) = shared.frames.pop() {
            entry.matched = notes.matched;
            entry.log = notes.log;
            entry.mocked = notes.mocked;
        }
        shared.trace.push(entry);
    }

    /// An entry without a step frame (the input, a contract check).
    pub(crate) fn record(&self, mut entry: TraceEntry) {
        if self.tracing {
            entry.step = self.key(&entry.step);
            self.lock().trace.push(entry);
        }
    }
}

/// Past this many changed fields, a trace shows the whole payload instead of the fields.
pub const MAX_CHANGES: usize = 12;

/// The trace entry of a step, from the payload and metadata before and after it: the
/// fields that changed, or the whole payload when it was replaced (or there is no
/// `before`).
pub(crate) fn entry(
    step: &str,
    before: Option<&Value>,
    after: Option<Value>,
    meta_before: &Meta,
    meta_after: &Meta,
) -> TraceEntry {
    let mut changes = Vec::new();
    let mut payload = after;
    let (mut changed, mut removed) = (BTreeMap::new(), Vec::new());
    if let (Some(before), Some(after)) = (before, payload.as_ref()) {
        diff(before, after, "", &mut changes);
        let whole = changes.len() > MAX_CHANGES || changes.iter().any(|(p, _)| p == "/");
        if !whole {
            for (pointer, value) in changes {
                match value {
                    Some(value) => {
                        changed.insert(pointer, value);
                    }
                    None => removed.push(pointer),
                }
            }
            payload = None;
        }
    }
    let mut meta = BTreeMap::new();
    for (k, v) in meta_after.iter() {
        if meta_before.get(k) != Some(v) {
            meta.insert(k.clone(), v.clone());
        }
    }
    let meta_removed = meta_before
        .keys()
        .filter(|k| !meta_after.contains_key(*k))
        .cloned()
        .collect();
    TraceEntry {
        step: step.to_owned(),
        payload,
        changed,
        removed,
        meta,
        meta_removed,
        ..TraceEntry::default()
    }
}

/// Where `after` differs from `before`: each JSON pointer with its new value (`None`:
/// removed); `/` when the whole value differs.
fn diff(before: &Value, after: &Value, at: &str, out: &mut Vec<(String, Option<Value>)>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, v) in a {
                let child = format!("{at}/{}", escape(k));
                match b.get(k) {
                    Some(old) => diff(old, v, &child, out),
                    None => out.push((child, Some(v.clone()))),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push((format!("{at}/{}", escape(k)), None));
            }
        }
        (Value::Array(b), Value::Array(a)) if b.len() == a.len() => {
            for (i, (old, new)) in b.iter().zip(a).enumerate() {
                diff(old, new, &format!("{at}/{i}"), out);
            }
        }
        (b, a) if b == a => {}
        (_, a) => {
            let at = if at.is_empty() { "/" } else { at };
            out.push((at.to_owned(), Some(a.clone())));
        }
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The trace as text, one step a line, for `sluice test` failures.
pub fn render_trace(trace: &[TraceEntry]) -> String {
    let mut out = String::new();
    for e in trace {
        out.push_str(&format!("  {}", e.step));
        if let Some(child) = &e.child {
            out.push_str(&format!(" [split child {child}]"));
        }
        if let Some(arm) = &e.matched {
            out.push_str(&format!(" → matched {arm}"));
        }
        if e.mocked {
            out.push_str(" (mocked)");
        }
        if !e.to.is_empty() {
            out.push_str(&format!(" → to {}", e.to.join(", ")));
        }
        if let Some(outcome) = e.outcome {
            out.push_str(&format!(" → {outcome}"));
        }
        if let Some(error) = &e.error {
            out.push_str(&format!(" → {} error: {}", error.kind, error.message));
        }
        for line in &e.log {
            out.push_str(&format!("\n      log: {line}"));
        }
        if !e.meta.is_empty() {
            let meta: Vec<String> = e.meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("\n      meta: {}", meta.join(", ")));
        }
        if !e.changed.is_empty() {
            let changed: Vec<String> = e
                .changed
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            out.push_str(&format!("\n      changed: {}", changed.join(", ")));
        }
        if !e.removed.is_empty() {
            out.push_str(&format!("\n      removed: {}", e.removed.join(", ")));
        }
        if let Some(payload) = &e.payload {
            let label = if e.error.is_some() {
                "payload at the error"
            } else {
                "payload"
            };
            out.push_str(&format!("\n      {label}: {payload}"));
        }
        out.push('\n');
    }
    out
}

impl Mock {
    /// Answers as the mocked endpoint, flow or sink would: after `delay` (a delay past
    /// `timeout` is a `timeout` error, after the timeout), with `error`, with a status
    /// that is not 2xx as that HTTP error (of `kind`: `enrich` for an enrich step, `sink` for
    /// a sink, as the real ones fail), else with `body`.
    pub(crate) async fn answer(
        &self,
        what: &str,
        kind: ErrorKind,
        timeout: Option<Duration>,
    ) -> Result<Option<Value>, FlowError> {
        if let Some(delay) = self.delay {
            match timeout {
                Some(timeout) if delay >= timeout => {
                    tokio::time::sleep(timeout).await;
                    return Err(FlowError::new(
                        ErrorKind::Timeout,
                        format!(
                            "{what} did not answer in time (mocked delay {} past the timeout of {})",
                            humantime::format_duration(delay),
                            humantime::format_duration(timeout)
                        ),
                    ));
                }
                _ => tokio::time::sleep(delay).await,
            }
        }
        if let Some(kind) = self.error {
            return Err(FlowError::new(
                kind,
                format!("{what} failed (mocked `{kind}` error)"),
            ));
        }
        if let Some(status) = self.status.filter(|s| !(200..300).contains(s)) {
            // As the HTTP client reports a status that is not a success.
            let message = format!("{what} answered {status} (mocked)");
            let mut error = if status == 429 || status >= 500 {
                FlowError::new(kind, message)
            } else {
                FlowError::permanent(kind, message)
            };
            error.upstream_status = Some(status);
            return Err(error);
        }
        Ok(self.body.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diffs_name_the_fields_that_changed() {
        let mut out = Vec::new();
        diff(
            &json!({"a": 1, "b": {"c": 2}, "gone": true, "l": [1, 2]}),
            &json!({"a": 1, "b": {"c": 3}, "new": "x", "l": [1, 5]}),
            "",
            &mut out,
        );
        let pointers: Vec<&str> = out.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(pointers, vec!["/b/c", "/new", "/l/1", "/gone"]);
        assert_eq!(out[0].1, Some(json!(3)));
        assert_eq!(out[3].1, None);
        let mut out = Vec::new();
        diff(&json!({"a": 1}), &json!([1]), "", &mut out);
        assert_eq!(out, vec![("/".to_owned(), Some(json!([1])))]);
    }
}
