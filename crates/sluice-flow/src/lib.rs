//! The sluice flow file: its serde model, loading with `${env:…}` substitution, and
//! rustc-style diagnostics that point at the file, line and column of a mistake.
//!
//! This crate does no I/O beyond reading flow files; compiling expressions, scripts and
//! contracts is the engine's job, which reports its findings with [`Diagnostic`] too.

// A `Diagnostic` carries its snippet and hints; it is built once per mistake, on a cold
// path, so returning it unboxed is simpler and costs nothing that matters.
#![allow(clippy::result_large_err)]
// Both crates are read by connector and step authors; every public item says what it is for.
#![warn(missing_docs)]

pub mod diagnostic;
pub mod load;
pub mod model;
pub mod paths;
pub mod schema;
pub mod secrets;
pub mod settings;
pub mod text;
pub mod units;

pub use diagnostic::{Diagnostic, Span};
pub use load::{LoadedFlow, flow_name_from_path, load_flow_file, parse_flow};
pub use model::*;
pub use serde_saphyr::Spanned;
pub use settings::{ChannelBackend, HttpListenerSettings, Settings};
pub use text::Text;
pub use units::{ByteSize, Count, Dur, WholeSeconds};
