//! The HTTP connector: request-reply flows on one shared listener, and the `http` sink.

mod answer;
mod auth;
mod listener;
mod request;
mod route;
mod server;
mod sink;
mod trigger;

pub use server::HttpHub;
pub use sink::HttpSink;
pub use trigger::HttpTrigger;
