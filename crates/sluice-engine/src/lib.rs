//! The sluice engine: compiles flows into steps and runs messages through them, with
//! bounded queues, concurrency limits, retries, dead letters and end-to-end acknowledgement;
//! keeps the registry of running flows and hot-reloads them.
//!
//! Data flows one way: trigger → queue → steps → sinks → ack.

// A `Diagnostic` carries its snippet and hints; it is built once per mistake, on a cold
// path, so returning it unboxed is simpler and costs nothing that matters.
#![allow(clippy::result_large_err)]

pub mod breaker;
pub mod compile;
pub mod connector;
pub mod contract;
pub mod directory;
pub mod dry_run;
pub mod error;
pub mod expr;
pub mod flow;
pub mod hold;
pub mod http_client;
pub mod http_url;
pub mod message;
pub mod registry;
pub mod retry;
pub mod script;
pub mod state;
pub mod stats;
pub mod steps;
pub mod testing;
pub mod value;
pub mod watch;
pub mod workers;

#[cfg(test)]
mod eip_tests;

pub use compile::{Folders, compile};
pub use connector::{
    Acker, BuildContext, Caller, Connectors, Envelope, Failure, GaveUp, Inlet, Outcome, Outgoing,
    Reply, Sink, SinkInfo, Trigger, TriggerInfo, TriggerKey,
};
pub use error::{ErrorEnvelope, ErrorKind, FlowError, Violation};
pub use flow::CompiledFlow;
pub use message::{CORRELATION_ID, Ids, MESSAGE_ID, Message, Meta, Payload};
pub use registry::{Registry, RegistryOptions, build_flow, flow_files};
