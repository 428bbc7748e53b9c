//! The sluice engine: compiles flows into steps and runs messages through them, with
//! bounded queues, concurrency limits, retries, dead letters and end-to-end acknowledgement;
//! keeps the registry of running flows and hot-reloads them.
//!
//! Data flows one way: trigger → queue → steps → sinks → ack.

// A `Diagnostic` carries its snippet and hints; it is built once per mistake, on a cold
// path, so returning it unboxed is simpler and costs nothing that matters.
#![allow(clippy::result_large_err)]
#![warn(missing_docs)]

// The modules are the engine's own; what connectors and the binary use is re-exported
// below, so the seams inside can move without breaking them. `testing` (for tests of
// triggers and flows), `directory` (the process's flows by name, for `call`) and
// `in_place` (running a message on the thread that read it) are namespaces on purpose.
mod breaker;
mod compile;
mod connector;
mod contract;
pub mod directory;
mod dry_run;
mod error;
mod expr;
mod flow;
mod hold;
mod http_client;
mod http_url;
pub mod in_place;
mod message;
pub mod probe;
mod registry;
mod retry;
mod script;
mod state;
mod stats;
mod steps;
pub mod tap;
pub mod testing;
mod value;
mod watch;
mod workers;

#[cfg(test)]
mod eip_tests;
#[cfg(test)]
mod test_connectors;

pub use compile::{Folders, StepInfo, compile};
pub use connector::{
    Acker, BuildContext, Caller, Connectors, Envelope, Failure, GaveUp, Health, Inlet, InputFormat,
    Outcome, Outgoing, Reply, Sink, SinkInfo, Trigger, TriggerInfo, TriggerKey,
};
pub use contract::Contract;
pub use error::{ErrorEnvelope, ErrorKind, FlowError, Violation};
pub use expr::{Expr, ExprError, Template};
pub use flow::{CompiledFlow, Executed, FlowSource};
pub use hold::{BATCH_ID, BATCH_SIZE, Batch};
pub use http_client::{CallError, HttpAnswer, HttpCall, use_ring};
pub use message::{
    BODY_ENCODING, BodyError, BodyErrorKind, CORRELATION_ID, Ids, MAX_DEPTH, MESSAGE_ID, Message,
    Meta, Payload, UNDECODABLE, check_numbers, parse_json,
};
pub use registry::{
    FlowStatus, Registry, RegistryOptions, build_flow, duplicate_name, flow_files,
    without_credentials,
};
pub use script::Sandbox;
pub use stats::describe_metrics;
pub use steps::ReplyBody;
pub use value::jmes_to_json;
pub use watch::{Snapshot, settle_at_start, watch};
