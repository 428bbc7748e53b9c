//! `aggregate:` — collects messages into groups by a correlation key and emits one message
//! per completed group.
//!
//! Nothing is stored outside memory: a member's trigger acknowledgement is held until the
//! aggregate built from it is delivered (or dead-lettered), so a crash loses nothing; the
//! source redelivers the members and the group is built again. The first member of a group
//! (its leader) runs the aggregated message through the steps after the aggregate and hands
//! the outcome to the other members. The groups live in [`crate::state`], so they survive a
//! hot reload that leaves the step's definition unchanged.

use super::{Control, Exec, Fork, Run, Stateful, Step};
use crate::compile::Compiler;
use crate::connector::Outcome;
use crate::error::{ErrorKind, FlowError};
use crate::expr::Expr;
use crate::hold::{BATCH_ID, BATCH_SIZE, BatchListener};
use crate::message::{MESSAGE_ID, Meta, Payload};
use jmespath::{Rcvar, Variable};
use sluice_flow::OnShutdown;
use sluice_flow::{AggregateConfig, Span, Spanned};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Metadata of an aggregated message: the correlation key.
pub const AGGREGATE_KEY: &str = "aggregate.key";
/// Metadata of an aggregated message: the number of members.
pub const AGGREGATE_SIZE: &str = "aggregate.size";
/// Metadata of an aggregated message: why the group completed (`size`, `when`, `timeout`,
/// `interval`, `end_of_batch`, `overflow`, `shutdown`, `reload`).
pub const AGGREGATE_REASON: &str = "aggregate.reason";

/// The compiled settings of an aggregate.
pub struct Settings {
    /// Correlation key; `None`: one group.
    pub key: Option<Expr>,
    /// Completion by size.
    pub size: Option<usize>,
    /// Completion by inactivity.
    pub timeout: Option<Duration>,
    /// Completion by age.
    pub interval: Option<Duration>,
    /// Completion by predicate over the member payloads.
    pub when: Option<Expr>,
    /// Completion when the members' batches ended.
    pub end_of_batch: bool,
    /// What `stop` does.
    pub on_shutdown: OnShutdown,
    /// Output shape over the member payloads; `None`: the array.
    pub output: Option<Expr>,
    /// Open groups at most.
    pub max_groups: usize,
}

/// How a member waits for its group.
pub enum Parked {
    /// The first member: receives the completed group and runs it on.
    Leader(oneshot::Receiver<Closed>),
    /// Any other member: receives the outcome (`None`: abandoned).
    Member(oneshot::Receiver<Option<Outcome>>),
}

type Follower = oneshot::Sender<Option<Outcome>>;

/// The aggregated message, or the error building it (with the metadata it would have had).
pub type Aggregated = Result<Exec, (FlowError, Arc<Meta>)>;

/// A completed group, handed to its leader.
pub struct Closed {
    message: Aggregated,
    followers: Vec<Follower>,
}

impl Closed {
    /// The aggregated message (or the error building it) and the other members' channels.
    pub fn into_parts(self) -> (Aggregated, Vec<Follower>) {
        (self.message, self.followers)
    }
}

struct Group {
    key: String,
    seq: u64,
    opened: Instant,
    last: Instant,
    payloads: Vec<Rcvar>,
    meta: Arc<Meta>,
    leader: Option<oneshot::Sender<Closed>>,
    followers: Vec<Follower>,
    open_batches: HashSet<u64>,
    batch_tracked: bool,
}

/// The groups of one aggregate step, shared across versions with the same definition.
pub struct AggregateState {
    flow: String,
    settings: Settings,
    groups: Mutex<HashMap<String, Group>>,
    seq: std::sync::atomic::AtomicU64,
    ticking: AtomicBool,
    me: Weak<AggregateState>,
}

/// The compiled `aggregate` step.
pub struct Aggregate {
    state: Arc<AggregateState>,
}

impl Aggregate {
    /// The step for `flow`, sharing the groups stored under `key` (flow, step, definition).
    pub fn new(flow: &str, key: &str, settings: Settings) -> Self {
        let state = crate::state::shared(key, || {
            Arc::new_cyclic(|me| AggregateState {
                flow: flow.to_owned(),
                settings,
                groups: Mutex::new(HashMap::new()),
                seq: Default::default(),
                ticking: AtomicBool::new(false),
                me: me.clone(),
            })
        });
        Aggregate { state }
    }

    /// The step's state, as a [`Stateful`] for the runtime.
    pub fn stateful(&self) -> Arc<dyn Stateful> {
        self.state.clone()
    }
}

impl AggregateState {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds the aggregated message of a group and hands it to the leader.
    fn close(&self, mut group: Group, reason: &str) {
        let size = group.payloads.len();
        let array = Rcvar::new(Variable::Array(std::mem::take(&mut group.payloads)));
        let mut meta = (*group.meta).clone();
        for k in [
            BATCH_ID,
            BATCH_SIZE,
            "split.index",
            "split.count",
            "split.parent",
        ] {
            meta.remove(k);
        }
        meta.insert(AGGREGATE_KEY.to_owned(), group.key.clone());
        meta.insert(AGGREGATE_SIZE.to_owned(), size.to_string());
        meta.insert(AGGREGATE_REASON.to_owned(), reason.to_owned());
        meta.insert(MESSAGE_ID.to_owned(), uuid::Uuid::now_v7().to_string());
        let meta = Arc::new(meta);
        let payload = match &self.settings.output {
            None => Ok(array),
            Some(expr) => expr.search(array, &meta).map_err(|e| {
                FlowError::new(ErrorKind::Transform, format!("aggregate output: {e}"))
                    .at_step("aggregate")
            }),
        };
        tracing::debug!(flow = %self.flow, key = %group.key, size, reason, "aggregate group complete");
        let message = match payload {
            Ok(p) => Ok(Exec::new(Payload::from_jmes(p), meta)),
            Err(e) => Err((e, meta)),
        };
        if let Some(leader) = group.leader.take() {
            // A leader that is gone (its task ended at shutdown) drops the followers with
            // the group: they are abandoned and redelivered by their sources.
            let _ = leader.send(Closed {
                message,
                followers: std::mem::take(&mut group.followers),
            });
        }
    }

    fn complete(&self, group: &Group, now: Instant) -> Option<&'static str> {
        let s = &self.settings;
        if s.size.is_some_and(|n| group.payloads.len() >= n) {
            return Some("size");
        }
        if s.timeout
            .is_some_and(|t| now.duration_since(group.last) >= t)
        {
            return Some("timeout");
        }
        if s.interval
            .is_some_and(|t| now.duration_since(group.opened) >= t)
        {
            return Some("interval");
        }
        if let Some(when) = &s.when {
            let array = Rcvar::new(Variable::Array(group.payloads.clone()));
            match when.search(array, &group.meta) {
                Ok(v) if v.is_truthy() => return Some("when"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(flow = %self.flow, key = %group.key, "aggregate `when`: {e}; completing the group");
                    return Some("when");
                }
            }
        }
        None
    }

    /// Completes every group whose time is up.
    fn expire(&self) {
        let now = Instant::now();
        let done: Vec<(Group, &'static str)> = {
            let mut groups = self.lock();
            let keys: Vec<(String, &'static str)> = groups
                .iter()
                .filter_map(|(k, g)| self.complete(g, now).map(|r| (k.clone(), r)))
                .collect();
            keys.into_iter()
                .filter_map(|(k, r)| groups.remove(&k).map(|g| (g, r)))
                .collect()
        };
        for (group, reason) in done {
            self.close(group, reason);
        }
    }

    fn start_ticker(&self) {
        let s = &self.settings;
        let Some(shortest) = [s.timeout, s.interval].into_iter().flatten().min() else {
            return;
        };
        if self.ticking.swap(true, Ordering::SeqCst) {
            return;
        }
        let tick = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let me = self.me.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(state) = me.upgrade() else { break };
                state.expire();
            }
        });
    }

    fn close_all(&self, reason: &str) {
        let groups: Vec<Group> = self.lock().drain().map(|(_, g)| g).collect();
        for group in groups {
            self.close(group, reason);
        }
    }
}

impl BatchListener for AggregateState {
    fn batch_ended(&self, id: u64) {
        let done: Vec<Group> = {
            let mut groups = self.lock();
            let mut keys = Vec::new();
            for (key, group) in groups.iter_mut() {
                if group.open_batches.remove(&id)
                    && group.open_batches.is_empty()
                    && group.batch_tracked
                {
                    keys.push(key.clone());
                }
            }
            keys.iter().filter_map(|k| groups.remove(k)).collect()
        };
        for group in done {
            self.close(group, "end_of_batch");
        }
    }
}

impl Stateful for AggregateState {
    fn stop(&self) {
        match self.settings.on_shutdown {
            OnShutdown::Complete => self.close_all("shutdown"),
            OnShutdown::Abandon => {
                let dropped = self.lock().drain().count();
                if dropped > 0 {
                    tracing::info!(flow = %self.flow, groups = dropped, "aggregate groups abandoned at shutdown; their sources will redeliver the members");
                }
            }
        }
    }

    fn retire(&self) {
        self.close_all("reload");
    }

    fn state_id(&self) -> usize {
        self as *const AggregateState as usize
    }
}

/// The text of a correlation key value.
fn key_text(value: &Variable) -> String {
    match value {
        Variable::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

impl Step for Aggregate {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Done(self.apply(exec))
    }
}

impl Aggregate {
    fn apply(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        let s = &self.state.settings;
        let data = exec.jmes()?;
        if exec.dry {
            // A dry run completes a group of one at once, so `tests:` show the output shape.
            let array = Rcvar::new(Variable::Array(vec![data]));
            let out = match &s.output {
                None => array,
                Some(expr) => expr
                    .search(array, &exec.meta)
                    .map_err(|e| FlowError::new(ErrorKind::Transform, e))?,
            };
            exec.payload = Payload::from_jmes(out);
            exec.set_meta(AGGREGATE_SIZE, "1");
            return Ok(Control::Continue);
        }
        let key = match &s.key {
            None => String::new(),
            Some(expr) => {
                let value = expr
                    .search(data.clone(), &exec.meta)
                    .map_err(|e| FlowError::new(ErrorKind::Transform, format!("key: {e}")))?;
                key_text(&value)
            }
        };
        let batch = match exec.hold.as_ref().and_then(|h| h.batch()) {
            Some((tracker, id)) if s.end_of_batch => {
                let me: Weak<dyn BatchListener> = self.state.me.clone();
                tracker.listen(me);
                Some(id)
            }
            _ => None,
        };
        let now = Instant::now();
        let mut closing: Vec<(Group, &'static str)> = Vec::new();
        let parked = {
            let mut groups = self.state.lock();
            if !groups.contains_key(&key) && groups.len() >= s.max_groups {
                let oldest = groups
                    .iter()
                    .min_by_key(|(_, g)| g.seq)
                    .map(|(k, _)| k.clone());
                if let Some(group) = oldest.and_then(|k| groups.remove(&k)) {
                    closing.push((group, "overflow"));
                }
            }
            let parked;
            let group = match groups.get_mut(&key) {
                Some(group) => {
                    let (tx, rx) = oneshot::channel();
                    group.followers.push(tx);
                    parked = Parked::Member(rx);
                    group
                }
                None => {
                    let (tx, rx) = oneshot::channel();
                    parked = Parked::Leader(rx);
                    let seq = self.state.seq.fetch_add(1, Ordering::SeqCst);
                    groups.entry(key.clone()).or_insert(Group {
                        key: key.clone(),
                        seq,
                        opened: now,
                        last: now,
                        payloads: Vec::new(),
                        meta: exec.meta.clone(),
                        leader: Some(tx),
                        followers: Vec::new(),
                        open_batches: HashSet::new(),
                        batch_tracked: false,
                    })
                }
            };
            group.payloads.push(data);
            group.last = now;
            if let Some(id) = batch {
                group.open_batches.insert(id);
                group.batch_tracked = true;
            }
            if let Some(reason) = self.state.complete(group, now)
                && let Some(group) = groups.remove(&key)
            {
                closing.push((group, reason));
            }
            parked
        };
        for (group, reason) in closing {
            self.state.close(group, reason);
        }
        self.state.start_ticker();
        exec.fork = Some(Fork::Park(parked));
        Ok(Control::Fork)
    }
}

/// Open groups at most, by default.
const DEFAULT_MAX_GROUPS: usize = 10_000;

/// Compiles `aggregate:`; `path` (e.g. `steps[3]`) and the definition name its groups in
/// [`crate::state`], so a reload that keeps both keeps the open groups.
pub(crate) fn compile(
    cx: &mut Compiler<'_>,
    config: &Spanned<AggregateConfig>,
    path: &str,
) -> Option<Box<dyn Step>> {
    let c = &config.value;
    let at = Span::of(config);
    let before = cx.diagnostics.len();
    let key = cx.optional_expr(&c.key).ok().flatten();
    let when = cx.optional_expr(&c.when).ok().flatten();
    let output = cx.optional_expr(&c.output).ok().flatten();
    if c.size.is_none()
        && c.timeout.is_none()
        && c.interval.is_none()
        && c.when.is_none()
        && !c.end_of_batch
    {
        cx.error(
            at,
            "this aggregate never completes a group",
            "give at least one of `size`, `timeout`, `interval`, `when` or `end_of_batch: true`",
        );
    }
    if let Some(size) = &c.size
        && size.value == 0
    {
        cx.error(
            Span::of(size),
            "`size` must be at least 1",
            "for example `size: 10`",
        );
    }
    if let Some(max) = &c.max_groups
        && max.value == 0
    {
        cx.error(
            Span::of(max),
            "`max_groups` must be at least 1",
            "the default is 10000",
        );
    }
    if c.timeout.is_some_and(|t| t.0.is_zero()) || c.interval.is_some_and(|t| t.0.is_zero()) {
        cx.error(
            at,
            "`timeout` and `interval` must be longer than 0",
            "for example `timeout: 5s`",
        );
    }
    if cx.diagnostics.len() != before {
        return None;
    }
    let text = |t: &Option<Spanned<sluice_flow::Text>>| t.as_ref().map(|t| t.value.0.clone());
    // Positions are left out: moving the step in the file keeps its groups.
    let definition = format!(
        "{:?}",
        (
            text(&c.key),
            c.size.as_ref().map(|s| s.value),
            c.timeout,
            c.interval,
            text(&c.when),
            c.end_of_batch,
            c.on_shutdown,
            text(&c.output),
            c.max_groups.as_ref().map(|m| m.value),
        )
    );
    let state_key = format!("aggregate/{}/{path}/{definition}", cx.flow.name);
    let step = Aggregate::new(
        &cx.flow.name,
        &state_key,
        Settings {
            key,
            size: c.size.as_ref().map(|s| s.value),
            timeout: c.timeout.map(|t| t.0),
            interval: c.interval.map(|t| t.0),
            when,
            end_of_batch: c.end_of_batch,
            on_shutdown: c.on_shutdown,
            output,
            max_groups: c
                .max_groups
                .as_ref()
                .map_or(DEFAULT_MAX_GROUPS, |m| m.value),
        },
    );
    cx.stateful.push(step.stateful());
    Some(Box::new(step))
}
