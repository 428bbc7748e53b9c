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

/// What the `http` trigger refuses: a route or `auth` setting of a flow file (a load
/// diagnostic at the setting), a request's credentials (the message of the 401 answer, so it
/// names what is missing or wrong without revealing the secret), or a listener that cannot be
/// bound (the flow's unhealthy reason).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A `path` that does not start with `/`.
    #[error("the path `{0}` must start with `/`")]
    RelativePath(String),
    /// A `{name}` segment whose name is empty or has other characters than letters, digits,
    /// `_` and `-`.
    #[error("`{{{0}}}` is not a valid path parameter; use letters, digits, `_` and `-`")]
    BadParameter(String),
    /// Two path parameters with the same name.
    #[error("the path parameter `{{{0}}}` appears twice")]
    DuplicateParameter(String),
    /// A segment with a `{` or `}` that is not a whole parameter.
    #[error("`{0}`: a path parameter must be a whole segment, like `{{id}}`")]
    PartialParameter(String),
    /// `auth` with none, or more than one, of its methods.
    #[error("`auth` needs exactly one of `bearer`, `api_key`, `hmac` ({0} given)")]
    AuthMethods(usize),
    /// A token, key, secret or header name of `auth` that is empty (an unset variable, often).
    #[error("the {0} is empty; set it (usually from `${{env:…}}`)")]
    EmptyAuthSetting(&'static str),
    /// A signed timestamp with a tolerance of zero, which no request can meet.
    #[error(
        "`timestamp.tolerance` must be more than 0s (e.g. 5m): with 0 no request could ever arrive in time"
    )]
    ZeroTolerance,
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    MissingBearer,
    /// A bearer token that is not the configured one.
    #[error("wrong bearer token")]
    WrongBearer,
    /// No API key header.
    #[error("missing API key")]
    MissingApiKey,
    /// An API key that is not the configured one.
    #[error("wrong API key")]
    WrongApiKey,
    /// No signature header.
    #[error("missing signature (header `{0}`)")]
    MissingSignature(String),
    /// A signature header that cannot hold a digest.
    #[error("malformed signature: `{header}` must hold `{prefix}` and 64 hex digits")]
    MalformedSignature {
        /// The signature header.
        header: String,
        /// What the digest must be preceded by (e.g. `sha256=`).
        prefix: String,
    },
    /// A secret the HMAC implementation refuses.
    #[error("unusable HMAC secret")]
    UnusableSecret,
    /// A signature that is not the body's (or the timestamp's and the body's).
    #[error("wrong signature")]
    WrongSignature,
    /// No signature timestamp header.
    #[error("missing signature timestamp (header `{0}`)")]
    MissingTimestamp(String),
    /// A signature timestamp that is not a Unix time in seconds.
    #[error("malformed signature timestamp: `{0}` must be a Unix time in seconds")]
    MalformedTimestamp(String),
    /// A signature timestamp too far from this server's clock: a replay, or a skewed clock.
    #[error(
        "stale signature: its timestamp is {skew}s {}, this route accepts {tolerance}s; sign with the current time (a replayed request is refused this way)",
        if *.in_future { "in the future" } else { "old" }
    )]
    StaleTimestamp {
        /// How far the timestamp is from now, in seconds.
        skew: u64,
        /// Whether it is ahead of this server's clock.
        in_future: bool,
        /// How far it may be, in seconds.
        tolerance: u64,
    },
    /// The shared listener's address cannot be bound.
    #[error("cannot listen on {listen}: {source}")]
    Listen {
        /// The address, as given to `--listen`.
        listen: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
}

impl crate::TriggerComponent for sluice_flow::HttpTriggerConfig {
    const KEY: &'static str = "http";

    fn build(
        &self,
        shared: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<Box<dyn sluice_engine::Trigger>, sluice_flow::Diagnostic> {
        Ok(Box::new(HttpTrigger::new(shared.http.clone(), self, cx)?))
    }

    fn describe(&self) -> String {
        format!("http {} {}", self.method.as_str(), self.path.value)
    }

    /// Method and path shape: one route answers one flow.
    fn claim(&self) -> Option<String> {
        HttpTrigger::claim(self)
    }

    fn authenticates(&self) -> bool {
        self.auth.is_some()
    }
}

impl crate::SinkComponent for sluice_flow::HttpSinkConfig {
    const KEY: &'static str = "http";

    fn build(
        &self,
        _: &str,
        _: &crate::StandardConnectors,
        cx: &sluice_engine::BuildContext<'_>,
    ) -> Result<std::sync::Arc<dyn sluice_engine::Sink>, sluice_flow::Diagnostic> {
        Ok(std::sync::Arc::new(HttpSink::new(self, cx)?))
    }
}

/// The metadata an `http` trigger would give a request for `target` (a path with an
/// optional `?query`), for `sluice exec --http-path`: `http.method`, `http.path`,
/// `http.path.<param>` from the route template and `http.query.<name>`. `Err` says why
/// the path does not match the route.
pub fn simulated_meta(
    config: &sluice_flow::HttpTriggerConfig,
    target: &str,
) -> Result<Vec<(String, String)>, String> {
    let template = config.path.value.as_str();
    let pattern = route::Pattern::parse(template).map_err(|e| e.to_string())?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some(params) = pattern.matches(path) else {
        return Err(format!(
            "`{path}` does not match the flow's route `{template}`"
        ));
    };
    let mut meta = vec![
        ("http.method".to_owned(), config.method.as_str().to_owned()),
        ("http.path".to_owned(), path.to_owned()),
    ];
    for (name, value) in params {
        meta.push((format!("http.path.{name}"), value));
    }
    for (name, value) in route::parse_query(query) {
        meta.push((format!("http.query.{name}"), value));
    }
    Ok(meta)
}
