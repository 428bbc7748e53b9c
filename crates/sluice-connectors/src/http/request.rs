//! One request through the listener's path without a connection, for the fuzz target of the
//! request → message path (`fuzz/fuzz_targets/http_request.rs`).

use super::server::{HttpHub, handle};
use axum::body::Body;
use axum::http::Request;
use axum::response::Response;
use std::sync::Arc;

impl HttpHub {
    /// Answers one request exactly as the listener does once a connection has delivered it:
    /// routing, auth, body limits and parsing, the message and its metadata, and the answer.
    /// The routes are those that running `http` triggers registered on this hub.
    ///
    /// Public on purpose: the fuzz target drives the real request path with it, without a
    /// socket in between (a socket would make it slow and flaky, and hyper's own parsing is
    /// not ours to fuzz). The listener itself calls the same function for every request.
    pub async fn answer_request(self: &Arc<Self>, request: Request<Body>) -> Response {
        handle(self.clone(), request).await
    }
}
