//! What the admin API reports about each flow: its state, why it is not ready, its last
//! reload error. Built from a short look at the registry, never waiting for a reload.

use crate::connector::TriggerInfo;
use crate::stats::Counters;
use serde::Serialize;
use std::path::{Path, PathBuf};

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
    /// `owner:`.
    pub owner: Option<String>,
    /// `tags:`.
    pub tags: Vec<String>,
    /// The trigger, e.g. `http POST /orders`.
    pub trigger: Option<String>,
    /// The broker a trigger connects to, without user, password or query.
    pub url: Option<String>,
    /// Why the trigger is unhealthy, if it is.
    pub unhealthy: Option<String>,
    /// What the trigger reports about its source, when it does: for `kafka`, `{"group",
    /// "partitions": {topic: [partition, …]}}`, the partitions this process holds now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<serde_json::Value>,
    /// The last failed reload of its file (`file:line:col: …`), if still current. For a
    /// running flow the previous version keeps running meanwhile.
    pub last_error: Option<String>,
    /// Message counters.
    pub counters: Counters,
    /// The steps of the running version, nested ones included, each by the label its
    /// metrics (`sluice_step_duration_seconds{step=…}`) and errors use: its `name:`, or
    /// its position.
    pub steps: Vec<crate::compile::StepInfo>,
}

/// The state of a flow whose trigger is `trigger` and whose health is `unhealthy`.
pub fn state_of(trigger: &TriggerInfo, unhealthy: Option<&str>) -> &'static str {
    match unhealthy {
        None => "running",
        Some(_) if trigger.connects => "connecting",
        Some(_) => "unhealthy",
    }
}

/// The broker address of a trigger, shown without credentials.
pub fn broker_url(trigger: &TriggerInfo) -> Option<String> {
    trigger.url.as_deref().map(without_credentials)
}

/// A trigger's reason for being unhealthy, with its broker URL (`raw`, as configured) shown
/// without credentials should a client library have put the URL (or its user info) into
/// an error.
pub fn scrub(reason: String, raw: Option<&str>) -> String {
    let Some(raw) = raw else {
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

impl super::Registry {
    /// Status of every running flow and every flow file that failed to load. Never waits
    /// for a reload in progress.
    pub async fn status(&self) -> Vec<FlowStatus> {
        self.status_now()
    }

    fn status_now(&self) -> Vec<FlowStatus> {
        let state = self.lock();
        let errors_of = |path: &Path| {
            state.errors.get(path).map(|d| {
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        };
        let counters_of = |name: &str| {
            state
                .stats
                .get(name)
                .map(|s| s.snapshot())
                .unwrap_or_default()
        };
        let mut out: Vec<FlowStatus> = state
            .running
            .iter()
            .map(|(name, flow)| {
                let current = flow.current.load();
                let unhealthy = flow
                    .health
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .map(|reason| scrub(reason, current.trigger_info.url.as_deref()));
                FlowStatus {
                    name: name.clone(),
                    path: flow.path.clone(),
                    version: Some(current.version.clone()),
                    state: state_of(&current.trigger_info, unhealthy.as_deref()),
                    ready: unhealthy.is_none(),
                    description: current.description.clone(),
                    owner: current.owner.clone(),
                    tags: current.tags.clone(),
                    trigger: Some(current.trigger_info.description.clone()),
                    url: broker_url(&current.trigger_info),
                    unhealthy,
                    source: flow
                        .source
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone(),
                    last_error: errors_of(&flow.path),
                    counters: counters_of(name),
                    steps: current.step_list.clone(),
                }
            })
            .collect();
        for path in state.errors.keys() {
            if state.running.values().any(|f| &f.path == path) {
                continue;
            }
            let name = sluice_flow::flow_name_from_path(path);
            out.push(FlowStatus {
                counters: counters_of(&name),
                name,
                path: path.clone(),
                version: None,
                state: "invalid",
                ready: !state.unloaded_at_start.contains(path),
                description: None,
                owner: None,
                tags: Vec::new(),
                trigger: None,
                url: None,
                unhealthy: None,
                source: None,
                last_error: errors_of(path),
                steps: Vec::new(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.path.cmp(&b.path)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_never_shows_the_credentials() {
        let reason = scrub(
            "cannot connect to nats://me:pw-42@127.0.0.1:4999 (user me:pw-42@; pw-42)".into(),
            Some("nats://me:pw-42@127.0.0.1:4999"),
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
