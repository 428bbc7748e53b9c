//! Typed message errors and the envelope written beside failed files and to dead letters.

use serde::Serialize;
use std::fmt;

/// What went wrong with a message; decides retry and where a failed file goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The payload broke a JSON Schema contract.
    Contract,
    /// A JMESPath expression failed at run time.
    Transform,
    /// A Rhai script failed, or ran out of time or operations.
    Script,
    /// A sink could not take the message.
    Sink,
    /// A sink did not answer in time.
    Timeout,
    /// The trigger could not turn its input into a message (unreadable, malformed, too big).
    Trigger,
    /// A `throttle` with `reject` refused the message (over its rate or concurrency).
    Throttle,
    /// An `enrich` call failed: the service could not be reached or answered an error
    /// status (in [`FlowError::upstream_status`]). A timeout stays a `timeout`.
    Enrich,
}

impl ErrorKind {
    /// Every kind, as written in flow files.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Contract,
        ErrorKind::Transform,
        ErrorKind::Script,
        ErrorKind::Sink,
        ErrorKind::Timeout,
        ErrorKind::Trigger,
        ErrorKind::Throttle,
        ErrorKind::Enrich,
    ];

    /// The name used in flow files, sidecars and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Contract => "contract",
            ErrorKind::Transform => "transform",
            ErrorKind::Script => "script",
            ErrorKind::Sink => "sink",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Trigger => "trigger",
            ErrorKind::Throttle => "throttle",
            ErrorKind::Enrich => "enrich",
        }
    }

    /// Parses a kind name.
    pub fn parse(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One contract violation: where in the payload, and what the schema wanted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON pointer into the payload (`""` is the whole payload).
    pub pointer: String,
    /// The schema's complaint.
    pub message: String,
}

/// An error that fails one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowError {
    /// Its kind.
    pub kind: ErrorKind,
    /// A sentence for humans.
    pub message: String,
    /// Which step (e.g. `steps[2] (script)`), or `contract.input`, or `sink express`.
    pub step: Option<String>,
    /// Contract violations, for `contract` errors.
    pub violations: Vec<Violation>,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// The earliest time another attempt makes sense (an HTTP `Retry-After`).
    pub retry_after: Option<std::time::Duration>,
    /// Attempts made before giving up (1 unless retried).
    pub attempts: u32,
    /// The HTTP status an upstream service answered (an `enrich` call, an `http` sink).
    pub upstream_status: Option<u16>,
}

impl FlowError {
    /// An error of a kind; `sink`, `enrich` and `timeout` errors are retryable by default.
    ///
    /// The message is redacted here, once, because it is printed in many places (log lines,
    /// envelopes, sidecars, the admin API, `sluice exec`): values from `${env:…}` become
    /// `***`, and so does the userinfo of any URL in it.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        FlowError {
            kind,
            message: sluice_flow::secrets::redacted(&message.into()),
            step: None,
            violations: Vec::new(),
            retryable: matches!(
                kind,
                ErrorKind::Sink | ErrorKind::Timeout | ErrorKind::Enrich
            ),
            retry_after: None,
            attempts: 1,
            upstream_status: None,
        }
    }

    /// A sink error that no retry can fix (a bad rendered name, a refused payload).
    pub fn permanent(kind: ErrorKind, message: impl Into<String>) -> Self {
        FlowError {
            retryable: false,
            ..FlowError::new(kind, message)
        }
    }

    /// Records the step the error happened in, unless already set by a nested step.
    pub fn at_step(mut self, step: impl Into<String>) -> Self {
        if self.step.is_none() {
            self.step = Some(step.into());
        }
        self
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The fields are public and may have been rewritten since `new`: mask again.
        f.write_str(&sluice_flow::secrets::redact(&self.render()))
    }
}

impl FlowError {
    /// The unredacted one-line rendering behind `Display`.
    fn render(&self) -> String {
        let mut f = String::new();
        // Writing into a `String` cannot fail.
        let _ = self.write_to(&mut f);
        f
    }

    fn write_to(&self, f: &mut String) -> fmt::Result {
        use std::fmt::Write;
        write!(f, "{} error", self.kind)?;
        if let Some(step) = &self.step {
            write!(f, " in {step}")?;
        }
        write!(f, ": {}", self.message)?;
        for v in self.violations.iter().take(5) {
            write!(
                f,
                "; {} {}",
                if v.pointer.is_empty() {
                    "/"
                } else {
                    &v.pointer
                },
                v.message
            )?;
        }
        if self.violations.len() > 5 {
            write!(f, "; … {} more", self.violations.len() - 5)?;
        }
        Ok(())
    }
}

impl std::error::Error for FlowError {}

/// The error envelope: beside a rejected file, inside a dead letter, in `sluice exec` output.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorEnvelope {
    /// The flow's name.
    pub flow: String,
    /// The version (content hash) of the flow that handled the message.
    pub flow_version: String,
    /// Where it failed.
    pub step: Option<String>,
    /// The error kind.
    pub kind: ErrorKind,
    /// The error message.
    pub message: String,
    /// Every contract violation.
    pub violations: Vec<Violation>,
    /// Attempts made, the first included.
    pub attempts: u32,
    /// The HTTP status the upstream service answered (`enrich`, `http` sink), when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// When the message failed (RFC 3339, UTC).
    pub time: String,
    /// The message id.
    pub message_id: String,
    /// The correlation id the message arrived with (HTTP `traceparent` / `x-correlation-id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl ErrorEnvelope {
    /// The envelope for `error` after `attempts` attempts.
    pub fn new(
        flow: &str,
        version: &str,
        message_id: &str,
        error: &FlowError,
        attempts: u32,
    ) -> Self {
        ErrorEnvelope {
            flow: flow.to_owned(),
            flow_version: version.to_owned(),
            step: error.step.clone(),
            kind: error.kind,
            // What goes to dead letters and sidecars never carries a secret.
            message: sluice_flow::secrets::redacted(&error.message),
            violations: error
                .violations
                .iter()
                .map(|v| Violation {
                    pointer: v.pointer.clone(),
                    message: sluice_flow::secrets::redacted(&v.message),
                })
                .collect(),
            attempts,
            upstream_status: error.upstream_status,
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            message_id: message_id.to_owned(),
            correlation_id: None,
        }
    }
}
