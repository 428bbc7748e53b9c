//! What the admin API reports about each flow: its state, why it is not ready, its last
//! reload error. Built from a short look at the registry, never waiting for a reload.

use crate::stats::Counters;
use serde::Serialize;
use sluice_flow::TriggerConfig;
use std::path::PathBuf;

/// A flow's state for status reports and the admin API.
#[derive(Clone, Debug, Serialize)]
pub struct FlowStatus {
    /// Name.
    pub name: String,
    /// Flow file.
    pub path: PathBuf,
    /// Running version (content hash); null for a file that never loaded.
    pub version: Option<String>,
    /// `running`; `connecting` while a broker trigger is not (yet, or no longer) consuming;
    /// `unhealthy` when another trigger cannot work (e.g. its HTTP route); `invalid` for a
    /// file that failed to load and runs nothing.
    pub state: &'static str,
    /// Whether this flow lets `/readyz` answer 200: false while its trigger is not healthy,
    /// and for a file that failed to load at start-up and has not loaded since.
    pub ready: bool,
    /// `description:`.
    pub description: Option<String>,
    /// The trigger, e.g. `http POST /orders`.
    pub trigger: Option<String>,
    /// The broker a trigger connects to, without user, password or query.
    pub url: Option<String>,
    /// Why the trigger is unhealthy, if it is.
    pub unhealthy: Option<String>,
    /// The last failed reload of its file (`file:line:col: …`), if still current. For a
    /// running flow the previous version keeps running meanwhile.
    pub last_error: Option<String>,
    /// Message counters.
    pub counters: Counters,
}

/// The state of a flow whose trigger is `config` and whose health is `unhealthy`.
pub fn state_of(config: &TriggerConfig, unhealthy: Option<&str>) -> &'static str {
    match unhealthy {
        None => "running",
        Some(_) if connects(config) => "connecting",
        Some(_) => "unhealthy",
    }
}

/// Whether the trigger's source is a connection that can be down (a broker, or a channel
/// that lives on NATS): such a trigger is `connecting` until it consumes.
fn connects(config: &TriggerConfig) -> bool {
    broker_url(config).is_some() || matches!(config, TriggerConfig::Channel(_))
}

/// The broker address of a trigger, shown without credentials.
pub fn broker_url(config: &TriggerConfig) -> Option<String> {
    raw_url(config).map(without_credentials)
}

/// A trigger's reason for being unhealthy, with its broker URL shown without credentials
/// should a client library have put the URL (or its user info) into an error.
pub fn scrub(reason: String, config: &TriggerConfig) -> String {
    let Some(raw) = raw_url(config) else {
        return reason;
    };
    let mut reason = reason.replace(raw, &without_credentials(raw));
    let after_scheme = raw.find("://").map_or(raw, |at| &raw[at + 3..]);
    if let Some(at) = after_scheme.rfind('@') {
        let userinfo = &after_scheme[..=at];
        reason = reason.replace(userinfo, "");
        if let Some((_, password)) = userinfo.trim_end_matches('@').split_once(':')
            && !password.is_empty()
        {
            reason = reason.replace(password, "***");
        }
    }
    reason
}

fn raw_url(config: &TriggerConfig) -> Option<&str> {
    let url = match config {
        TriggerConfig::Nats(c) => &c.url,
        TriggerConfig::Amqp(c) => &c.url,
        TriggerConfig::Mqtt(c) => &c.url,
        TriggerConfig::Redis(c) => &c.url,
        TriggerConfig::Postgres(c) => &c.url,
        TriggerConfig::File(_)
        | TriggerConfig::Channel(_)
        | TriggerConfig::Http(_)
        | TriggerConfig::Schedule(_) => return None,
    };
    Some(url.value.as_str())
}

/// `scheme://user:password@host:port/path?query` → `scheme://host:port/path`: user info and
/// query (where some brokers take a password or token) are dropped, so a status page never
/// shows a secret. Everything up to the last `@` goes, so a password with a raw `/` or `@`
/// in it does not show either.
pub fn without_credentials(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => (&url[..at + 3], &url[at + 3..]),
        None => ("", url),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let rest = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
    format!("{scheme}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_never_shows_the_credentials() {
        let config: TriggerConfig =
            serde_saphyr::from_str("nats: { url: \"nats://me:pw-42@127.0.0.1:4999\", subject: a }")
                .unwrap();
        let reason = scrub(
            "cannot connect to nats://me:pw-42@127.0.0.1:4999 (user me:pw-42@; pw-42)".into(),
            &config,
        );
        assert!(!reason.contains("pw-42"), "{reason}");
        assert!(reason.contains("nats://127.0.0.1:4999"), "{reason}");
    }

    #[test]
    fn credentials_and_query_are_dropped() {
        assert_eq!(
            without_credentials("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(
            without_credentials("redis://:pw@localhost:6379/0?password=x"),
            "redis://localhost:6379/0"
        );
        assert_eq!(
            without_credentials("postgres://u:p%40ss@db/app?sslmode=disable"),
            "postgres://db/app"
        );
        assert_eq!(
            without_credentials("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        assert_eq!(
            without_credentials("tok@nats.example:4222"),
            "nats.example:4222"
        );
        assert_eq!(
            without_credentials("postgres://u:pa/ss@db/app"),
            "postgres://db/app"
        );
    }
}
