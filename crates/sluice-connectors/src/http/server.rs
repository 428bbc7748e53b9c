//! The one HTTP listener shared by every `http` trigger, with a routing table that hot
//! reload changes in place: no restart of the listener, no dropped requests. A request
//! becomes a message in `request.rs`; its outcome becomes the answer in `answer.rs`.

use super::HttpError;
use super::auth::Auth;
use super::listener::{self, BodyBudget, Limits};
use super::request::handle;
use super::route::Pattern;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use sluice_engine::Inlet;
use sluice_flow::HttpListenerSettings;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One registered route.
#[derive(Clone)]
pub(crate) struct RouteEntry {
    pub id: u64,
    pub method: Method,
    pub pattern: Pattern,
    pub max_body: u64,
    pub timeout: Duration,
    pub auth: Option<Auth>,
    /// How an XML body is read.
    pub xml: Arc<sluice_xml::ReadOptions>,
    pub inlet: Inlet,
}

enum Listener {
    Idle,
    Running,
}

/// The shared listener and its routing table.
pub struct HttpHub {
    listen: String,
    routes: RwLock<Vec<RouteEntry>>,
    next_id: AtomicU64,
    listener: Mutex<Listener>,
    shutdown: CancellationToken,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    counters: RwLock<std::collections::HashMap<(String, u16), metrics::Counter>>,
    pub(super) limits: Limits,
    pub(super) budget: BodyBudget,
}

impl HttpHub {
    /// A hub that will listen on `listen` once the first route is added, with the default
    /// limits.
    pub fn new(listen: impl Into<String>) -> Arc<Self> {
        HttpHub::with_limits(listen, &HttpListenerSettings::default())
    }

    /// A hub with the listener limits of `sluice.yaml` (`http:`); the connection cap is
    /// lowered to fit the process's open-file limit.
    pub fn with_limits(listen: impl Into<String>, settings: &HttpListenerSettings) -> Arc<Self> {
        let mut limits = Limits::from_settings(settings);
        let (cap, lowered_by) = listener::fitting_cap(limits.max_connections);
        if let Some(nofile) = lowered_by {
            tracing::warn!(
                "http.max_connections lowered from {} to {cap}: the open-file limit is {nofile} (ulimit -n), and the listener may use half of it",
                limits.max_connections
            );
        }
        limits.max_connections = cap;
        Arc::new(HttpHub {
            listen: listen.into(),
            routes: RwLock::new(Vec::new()),
            next_id: AtomicU64::new(1),
            listener: Mutex::new(Listener::Idle),
            shutdown: CancellationToken::new(),
            server: Mutex::new(None),
            counters: RwLock::default(),
            budget: BodyBudget::new(limits.max_body_in_flight),
            limits,
        })
    }

    /// Adds (or replaces, for the same method and path shape) a route; binds the listener
    /// first if needed. Returns the route id, or why the listener is unavailable.
    pub(crate) async fn add(self: &Arc<Self>, mut entry: RouteEntry) -> Result<u64, HttpError> {
        self.ensure_listening().await?;
        entry.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = entry.id;
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes
            .retain(|r| !(r.method == entry.method && r.pattern.shape() == entry.pattern.shape()));
        routes.push(entry);
        Ok(id)
    }

    /// Removes a route, unless a newer version already replaced it.
    pub(crate) fn remove(&self, id: u64) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.retain(|r| r.id != id);
    }

    async fn ensure_listening(self: &Arc<Self>) -> Result<(), HttpError> {
        {
            let state = self.listener.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(*state, Listener::Running) {
                return Ok(());
            }
        }
        let bound = tokio::net::TcpListener::bind(&self.listen).await;
        let mut state = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, Listener::Running) {
            return Ok(());
        }
        let listener = match bound {
            Ok(listener) => listener,
            Err(source) => {
                let reason = HttpError::Listen {
                    listen: self.listen.clone(),
                    source,
                };
                tracing::error!("{reason}; pass --listen ADDR or set SLUICE_LISTEN");
                // Retrying is left to the next flow that needs the listener.
                return Err(reason);
            }
        };
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| self.listen.clone());
        tracing::info!(
            "http listener on {local} (at most {} connections; header timeout {}, body timeout {})",
            self.limits.max_connections,
            humantime::format_duration(self.limits.header_timeout),
            humantime::format_duration(self.limits.body_timeout)
        );
        *state = Listener::Running;
        let hub = self.clone();
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let hub = hub.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(hub, request.map(Body::new)).await) }
        });
        let server = tokio::spawn(listener::serve(
            listener,
            self.limits.clone(),
            self.shutdown.clone(),
            service,
        ));
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
        Ok(())
    }

    /// Stops accepting connections; requests in flight are answered. Returns when the
    /// listener has closed (after `finish_in_flight`).
    pub fn stop_accepting(&self) {
        self.shutdown.cancel();
    }

    /// Waits until every connection has been answered and closed, bounded by `grace`.
    pub async fn finish_in_flight(&self, grace: Duration) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(server) = server {
            let _ = tokio::time::timeout(grace, server).await;
        }
    }

    /// Counts an answered request; handles are cached because building a labelled counter
    /// on every request costs more than the rest of the bookkeeping.
    pub(super) fn count(&self, flow: &str, status: u16) {
        let key = (flow.to_owned(), status);
        if let Some(counter) = self
            .counters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!(
            "sluice_http_requests_total",
            "flow" => flow.to_owned(),
            "status" => status.to_string()
        );
        counter.increment(1);
        self.counters
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, counter);
    }

    pub(super) fn find(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<(RouteEntry, Vec<(String, String)>), StatusCode> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let mut path_matched = false;
        for route in routes.iter() {
            if let Some(params) = route.pattern.matches(path) {
                if route.method == method {
                    return Ok((route.clone(), params));
                }
                path_matched = true;
            }
        }
        Err(if path_matched {
            StatusCode::METHOD_NOT_ALLOWED
        } else {
            StatusCode::NOT_FOUND
        })
    }
}
