//! `dedupe:` — the idempotent receiver: a message whose key was seen within the TTL is
//! dropped (counted and logged).
//!
//! The key is added eagerly, when the message passes, so that a duplicate arriving while the
//! first is still in flight is caught; it is removed again if the message fails, so that a
//! redelivery is not mistaken for a duplicate. The persistent store (a redb file) also marks
//! each key *pending* until its message finished: keys still pending when the store is
//! opened belong to messages a crash interrupted, which their sources redeliver, so they
//! are forgotten rather than treated as seen.

use super::{Control, Exec, Run, Step};
use crate::compile::Compiler;
use crate::error::{ErrorKind, FlowError};
use crate::expr::Expr;
use crate::message::Ids;
use redb::{ReadableTable, TableDefinition};
use sluice_flow::{DedupeConfig, Span, Spanned};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEYS: TableDefinition<&str, u64> = TableDefinition::new("dedupe_keys");

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where keys are remembered.
pub trait Store: Send + Sync {
    /// Adds `key` (pending) unless it is there and unexpired; `true` when it was added.
    fn add(&self, key: &str, expires_ms: u64) -> Result<bool, String>;
    /// The key's message finished well: keep the key until it expires.
    fn confirm(&self, key: &str, expires_ms: u64);
    /// The key's message failed: forget the key.
    fn remove(&self, key: &str);
}

/// Keys in memory, at most `max_keys` (the oldest are forgotten first).
pub struct MemoryStore {
    max_keys: usize,
    inner: Mutex<(HashMap<String, u64>, VecDeque<String>)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(max_keys: usize) -> Self {
        MemoryStore {
            max_keys: max_keys.max(1),
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }
}

impl Store for MemoryStore {
    fn add(&self, key: &str, expires_ms: u64) -> Result<bool, String> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *guard;
        if map.get(key).is_some_and(|exp| *exp > now_ms()) {
            return Ok(false);
        }
        map.insert(key.to_owned(), expires_ms);
        order.push_back(key.to_owned());
        while map.len() > self.max_keys {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            map.remove(&oldest);
        }
        // The order list may hold keys removed meanwhile; keep it from growing unbounded.
        if order.len() > self.max_keys * 2 {
            order.retain(|k| map.contains_key(k));
        }
        Ok(true)
    }

    fn confirm(&self, _key: &str, _expires_ms: u64) {}

    fn remove(&self, key: &str) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.remove(key);
    }
}

/// Keys in a redb file; each value is `expiry_ms << 1 | confirmed`.
pub struct RedbStore {
    db: redb::Database,
}

impl RedbStore {
    /// Opens (or creates) the file and forgets expired and pending keys.
    pub fn open(path: &std::path::Path) -> Result<Self, String> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let db = redb::Database::create(path)
            .map_err(|e| format!("cannot open the dedupe store {}: {e}", path.display()))?;
        let store = RedbStore { db };
        store
            .purge(true)
            .map_err(|e| format!("dedupe store {}: {e}", path.display()))?;
        Ok(store)
    }

    fn purge(&self, pending_too: bool) -> Result<(), String> {
        let now = now_ms();
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(KEYS).map_err(|e| e.to_string())?;
            table
                .retain(|_, v| (v >> 1) > now && (!pending_too || v & 1 == 1))
                .map_err(|e| e.to_string())?;
        }
        txn.commit().map_err(|e| e.to_string())
    }

    fn write(
        &self,
        f: impl FnOnce(&mut redb::Table<&str, u64>) -> Result<bool, redb::StorageError>,
    ) -> Result<bool, String> {
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        let result = {
            let mut table = txn.open_table(KEYS).map_err(|e| e.to_string())?;
            f(&mut table).map_err(|e| e.to_string())?
        };
        txn.commit().map_err(|e| e.to_string())?;
        Ok(result)
    }

    /// Whether `key` is remembered.
    #[cfg(test)]
    pub fn contains(&self, key: &str) -> bool {
        use redb::ReadableDatabase;
        let Ok(txn) = self.db.begin_read() else {
            return false;
        };
        let Ok(table) = txn.open_table(KEYS) else {
            return false;
        };
        matches!(table.get(key), Ok(Some(v)) if (v.value() >> 1) > now_ms())
    }
}

impl Store for RedbStore {
    fn add(&self, key: &str, expires_ms: u64) -> Result<bool, String> {
        let now = now_ms();
        self.write(|table| {
            if let Some(v) = table.get(key)?
                && (v.value() >> 1) > now
            {
                return Ok(false);
            }
            table.insert(key, expires_ms << 1)?;
            Ok(true)
        })
    }

    fn confirm(&self, key: &str, expires_ms: u64) {
        if let Err(e) = self.write(|table| {
            table.insert(key, (expires_ms << 1) | 1)?;
            Ok(true)
        }) {
            tracing::error!(key = %key, "dedupe store: cannot confirm a key: {e}");
        }
    }

    fn remove(&self, key: &str) {
        if let Err(e) = self.write(|table| {
            table.remove(key)?;
            Ok(true)
        }) {
            tracing::error!(key = %key, "dedupe store: cannot remove a key: {e}");
        }
    }
}

/// A store, opened on first use (so that `sluice check` never opens a file in use), and
/// the number of duplicates it caught.
pub struct StoreCell {
    path: Option<PathBuf>,
    max_keys: usize,
    store: OnceLock<Result<Arc<dyn Store>, String>>,
    duplicates: AtomicU64,
}

impl StoreCell {
    /// A memory store (`path` none) or a redb file.
    pub fn new(path: Option<PathBuf>, max_keys: usize) -> Self {
        StoreCell {
            path,
            max_keys,
            store: OnceLock::new(),
            duplicates: AtomicU64::new(0),
        }
    }

    fn get(&self) -> Result<Arc<dyn Store>, FlowError> {
        self.store
            .get_or_init(|| match &self.path {
                None => Ok(Arc::new(MemoryStore::new(self.max_keys)) as Arc<dyn Store>),
                Some(path) => RedbStore::open(path).map(|s| Arc::new(s) as Arc<dyn Store>),
            })
            .clone()
            .map_err(|e| FlowError::new(ErrorKind::Sink, e))
    }
}

/// The compiled `dedupe` step.
pub struct Dedupe {
    key: Option<Expr>,
    ttl: Duration,
    cell: Arc<StoreCell>,
    flow: String,
}

impl Dedupe {
    /// A dedupe step over a (possibly shared) store.
    pub fn new(flow: &str, key: Option<Expr>, ttl: Duration, cell: Arc<StoreCell>) -> Self {
        Dedupe {
            key,
            ttl,
            cell,
            flow: flow.to_owned(),
        }
    }

    fn key(&self, exec: &mut Exec) -> Result<String, FlowError> {
        match &self.key {
            Some(expr) => {
                let data = exec.jmes()?;
                let value = expr
                    .search(data, &exec.meta)
                    .map_err(|e| FlowError::new(ErrorKind::Transform, format!("key: {e}")))?;
                Ok(match &*value {
                    jmespath::Variable::String(s) => s.clone(),
                    other => serde_json::to_string(other).unwrap_or_default(),
                })
            }
            None => {
                let bytes = exec
                    .payload
                    .to_json_vec()
                    .map_err(|e| FlowError::new(ErrorKind::Transform, e))?;
                Ok(payload_hash(&bytes))
            }
        }
    }
}

/// A 128-bit FNV-1a hash of the payload's JSON, as hex (two 64-bit lanes, different seeds).
pub fn payload_hash(bytes: &[u8]) -> String {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for byte in bytes {
        a = (a ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        b = (b ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3 ^ 0x2f);
    }
    format!("{a:016x}{b:016x}")
}

impl Step for Dedupe {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Wait(Box::pin(self.wait(exec)))
    }
}

impl Dedupe {
    async fn wait(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        let key = self.key(exec)?;
        if exec.dry {
            return Ok(Control::Continue);
        }
        let expires = now_ms().saturating_add(self.ttl.as_millis() as u64);
        let cell = self.cell.clone();
        let k = key.clone();
        let added = tokio::task::spawn_blocking(move || {
            cell.get()?
                .add(&k, expires)
                .map_err(|e| FlowError::new(ErrorKind::Sink, format!("dedupe store: {e}")))
        })
        .await
        .map_err(|e| FlowError::new(ErrorKind::Sink, format!("dedupe store task: {e}")))??;
        if !added {
            let n = self.cell.duplicates.fetch_add(1, Ordering::Relaxed) + 1;
            let message_id = exec.meta.message_id().to_owned();
            tracing::info!(flow = %self.flow, message_id = %message_id, key = %key, duplicates = n, "duplicate dropped");
            return Ok(Control::Drop);
        }
        let store = self.cell.get()?;
        exec.finally.push(Box::new(move |success| {
            if success {
                store.confirm(&key, expires);
            } else {
                store.remove(&key);
            }
        }));
        Ok(Control::Continue)
    }
}

/// Keys are remembered this long by default.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// In-memory keys at most, by default.
const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// Compiles `dedupe:`; the store is shared by the versions of this step (memory) or by every
/// step naming the same file (redb).
pub(crate) fn compile(
    cx: &mut Compiler<'_>,
    config: &Spanned<DedupeConfig>,
    path: &str,
) -> Option<Box<dyn Step>> {
    let c = &config.value;
    let before = cx.diagnostics.len();
    let key = cx.optional_expr(&c.key).ok().flatten();
    if c.ttl.is_some_and(|t| t.0.is_zero()) {
        cx.error(
            Span::of(config),
            "`ttl` must be longer than 0",
            "how long a key is remembered, e.g. `ttl: 24h`",
        );
    }
    if let Some(max) = &c.max_keys
        && max.value == 0
    {
        cx.error(
            Span::of(max),
            "`max_keys` must be at least 1",
            "the default is 1000000",
        );
    }
    let file = match &c.path {
        Some(p) if p.value.as_str().trim().is_empty() => {
            cx.error(
                Span::of(p),
                "the dedupe store `path` is empty",
                "a redb file, e.g. `state/orders-dedupe.redb`, or leave `path` out for memory",
            );
            None
        }
        Some(p) => {
            let file = sluice_flow::paths::normalize(Path::new(p.value.as_str()));
            if file.is_dir() {
                cx.error(
                    Span::of(p),
                    format!("`{}` is a folder", p.value),
                    "give the path of a file (it is created when missing)",
                );
            }
            Some(file)
        }
        None => None,
    };
    if cx.diagnostics.len() != before {
        return None;
    }
    let max_keys = c.max_keys.as_ref().map_or(DEFAULT_MAX_KEYS, |m| m.value);
    // A file store is shared by every step that names the file (one open per process);
    // a memory store by the versions of this step.
    let state_key = match &file {
        Some(f) => format!("dedupe-file/{}", f.display()),
        None => format!("dedupe/{}/{path}/{max_keys}", cx.flow.name),
    };
    let cell = crate::state::shared(&state_key, || {
        Arc::new(StoreCell::new(file.clone(), max_keys))
    });
    Some(Box::new(Dedupe::new(
        &cx.flow.name,
        key,
        c.ttl.map_or(DEFAULT_TTL, |t| t.0),
        cell,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_adds_once_and_forgets_on_remove() {
        let s = MemoryStore::new(2);
        let later = now_ms() + 60_000;
        assert!(s.add("a", later).unwrap());
        assert!(!s.add("a", later).unwrap());
        s.remove("a");
        assert!(s.add("a", later).unwrap());
        assert!(s.add("b", later).unwrap());
        assert!(s.add("c", later).unwrap());
        assert!(s.add("a", later).unwrap(), "the oldest key was forgotten");
        assert!(s.add("x", now_ms()).unwrap());
        assert!(s.add("x", later).unwrap(), "an expired key counts as new");
    }

    #[test]
    fn redb_store_keeps_confirmed_keys_and_forgets_pending_ones_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.redb");
        let later = now_ms() + 60_000;
        {
            let s = RedbStore::open(&path).unwrap();
            assert!(s.add("done", later).unwrap());
            s.confirm("done", later);
            assert!(s.add("pending", later).unwrap());
            assert!(!s.add("pending", later).unwrap());
        }
        let s = RedbStore::open(&path).unwrap();
        assert!(s.contains("done"));
        assert!(!s.contains("pending"));
        assert!(!s.add("done", later).unwrap());
        assert!(s.add("pending", later).unwrap());
    }
}
