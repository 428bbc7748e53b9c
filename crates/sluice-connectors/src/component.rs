//! What every trigger and sink declares about itself, once, beside its config type: its YAML
//! key, how it is built, the resource it holds exclusively, how it shows in `/api/flows`, and
//! which config changes restart it. [`crate::StandardConnectors`] dispatches to these through
//! the one registration list in `lib.rs` (Vector's component registration is the model).

use crate::StandardConnectors;
use sluice_engine::{BuildContext, InputFormat, Sink, Trigger};
use sluice_flow::{Diagnostic, Spanned, Text};
use std::path::PathBuf;
use std::sync::Arc;

/// A kind of trigger, implemented by its config type (`FileTriggerConfig`, …).
pub trait TriggerComponent {
    /// The key that names it under `trigger:` (its `TriggerConfig` variant's serde name).
    const KEY: &'static str;

    /// Builds and checks the trigger; nothing is opened until it runs. `shared` holds what
    /// the connectors of one process share (the HTTP listener, NATS connections, channels).
    fn build(
        &self,
        shared: &StandardConnectors,
        cx: &BuildContext<'_>,
    ) -> Result<Box<dyn Trigger>, Diagnostic>;

    /// A short description for logs and `/api/flows`, e.g. `http POST /orders`.
    fn describe(&self) -> String;

    /// The resource it holds exclusively (two flows claiming the same one is a load error
    /// naming both files). None by default: broker sources are shared on purpose, since
    /// flows and processes using one durable, queue, group or outbox split the work.
    fn claim(&self) -> Option<String> {
        None
    }

    /// The broker it connects to, as written (may hold credentials; the engine shows it
    /// only without them). A trigger with a URL starts `connecting` and is not ready until
    /// it consumes.
    fn url(&self) -> Option<&str> {
        None
    }

    /// Whether its source is a connection that can be down: shown `connecting` rather than
    /// `unhealthy` while it is not working. True for every broker.
    fn connects(&self) -> bool {
        self.url().is_some()
    }

    /// The folder it scans, if it does: no sink of the flow may write into it.
    fn watched_folder(&self) -> Option<PathBuf> {
        None
    }

    /// Whether it authenticates its own callers (the admin server then asks for the same
    /// authentication before injecting a message into its flow).
    fn authenticates(&self) -> bool {
        false
    }

    /// How it reads a body into messages (`sluice exec` reads its input the same way): one
    /// JSON document by default.
    fn input(&self) -> InputFormat {
        InputFormat::default()
    }

    /// The part of its configuration whose change restarts it on a reload, given the whole
    /// map under its key as plain data (no source positions, comments or key order). By
    /// default everything: any change restarts the trigger.
    fn restart_key(&self, plain: serde_json::Value) -> serde_json::Value {
        plain
    }
}

/// A kind of sink, implemented by its config type (`FileSinkConfig`, …).
pub trait SinkComponent {
    /// The key that names it in `sinks:` and `dead_letter:`.
    const KEY: &'static str;

    /// Builds and checks the sink (`name` is its name in `sinks:`, or `dead_letter`);
    /// nothing is opened or written yet.
    fn build(
        &self,
        name: &str,
        shared: &StandardConnectors,
        cx: &BuildContext<'_>,
    ) -> Result<Arc<dyn Sink>, Diagnostic>;

    /// The folder it writes files into, if it does (refused inside the trigger's folder;
    /// listed by the admin API for a dead letter).
    fn folder(&self) -> Option<&Spanned<Text>> {
        None
    }
}

/// The load error for a flow using a connector this build left out.
#[cfg_attr(
    all(
        feature = "nats",
        feature = "amqp",
        feature = "mqtt",
        feature = "redis",
        feature = "postgres",
        feature = "mysql",
        feature = "kafka",
        feature = "sftp"
    ),
    allow(dead_code)
)]
pub(crate) fn left_out<T>(
    at: &Spanned<T>,
    cx: &BuildContext<'_>,
    role: &str,
    feature: &str,
) -> Diagnostic {
    cx.diagnostic(
        at,
        format!(
            "this build of sluice has no `{feature}` {role}: it was built without the cargo feature `{feature}`"
        ),
    )
    .with_help(format!(
        "use a sluice built with the `{feature}` feature (on by default; `cargo build --features {feature}` adds it to a build made with `--no-default-features`)"
    ))
}
