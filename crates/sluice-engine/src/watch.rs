//! Watches the flows, schemas and scripts folders and feeds settled changes to the registry.
//!
//! Filesystem notifications only say *that* something changed; what changed is decided by
//! comparing a scan of the folders with what the registry was last given, and the scan also
//! runs every [`RESCAN`] as the source of truth. That catches what notifications miss or
//! hide: a Kubernetes ConfigMap update (only the hidden `..data` symlink changes), an edit
//! of the file a symlinked flow points to, a folder deleted and created again, an overflowed
//! notification queue. A changed file is passed on only once it has settled (see
//! [`settle`]), so a half-written save never loads.

mod settle;

pub(crate) use settle::INTERVAL as SETTLE_INTERVAL;

use crate::registry::Registry;
use notify::{RecursiveMode, Watcher};
use settle::{Look, Settle};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the folders are scanned even without a notification.
pub const RESCAN: Duration = Duration::from_secs(1);

/// How deep the scan descends into sub-folders (symlinked folders could otherwise loop).
const MAX_DEPTH: usize = 8;

/// What the registry was last given for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Known {
    look: Look,
    content: u64,
}

/// The files of the watched folders as the registry knows them.
#[derive(Debug, Default)]
pub struct Snapshot {
    files: HashMap<PathBuf, Known>,
}

impl Snapshot {
    /// Reads the folders as they are now. Taken before the flows load, so that a change made
    /// while they load is seen as a change.
    pub fn take(folders: &[PathBuf]) -> Snapshot {
        let mut files = HashMap::new();
        for path in scan(folders) {
            if let Some(known) = know(&path) {
                files.insert(path, known);
            }
        }
        Snapshot { files }
    }
}

/// Waits at start-up until no file of `folders` is being written, so that a flow, schema or
/// script still being copied in when the process starts never becomes the running version.
/// A file changed less than the settle gate's minimum age ago goes through the same gate the
/// watcher uses; the others load at once (a start does not wait when nothing is being
/// written). Returns the files still changing after `limit`: they load as they are then,
/// and the watcher reloads them once they settle.
pub async fn settle_at_start(folders: &[PathBuf], limit: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + limit;
    let mut gate = Settle::default();
    let mut pending = BTreeSet::new();
    loop {
        // Files that appear while it waits are looked at too.
        pending.extend(scan(folders).into_iter().filter(|p| recently_changed(p)));
        let now = Instant::now();
        pending.retain(|path: &PathBuf| !gate.observe(path, Look::at(path), now));
        if pending.is_empty() {
            return Vec::new();
        }
        if now >= deadline {
            return pending.into_iter().collect();
        }
        tokio::time::sleep(SETTLE_INTERVAL).await;
    }
}

/// Whether a file was modified less than the settle gate's minimum age ago (a modification
/// time in the future, a skewed clock, counts as old: the gate's looks still have to agree
/// for a file that is changing).
fn recently_changed(path: &Path) -> bool {
    Look::at(path)
        .and_then(|look| look.mtime)
        .and_then(|mtime| std::time::SystemTime::now().duration_since(mtime).ok())
        .is_some_and(|age| age < settle::MIN_AGE)
}

/// The look and content hash of a file, or `None` when it cannot be read.
fn know(path: &Path) -> Option<Known> {
    let look = Look::at(path)?;
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(Known {
        look,
        content: hasher.finish(),
    })
}

/// Every file of the watched folders that could be a flow, schema or script: hidden names
/// and editor leftovers are skipped, symlinks are followed.
fn scan(folders: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for folder in folders {
        walk(folder, 0, &mut out);
    }
    out
}

fn walk(dir: &Path, depth: usize, out: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = dir.join(entry.file_name());
        if is_hidden(&path) {
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {
                out.insert(path);
            }
            Ok(meta) if meta.is_dir() && depth < MAX_DEPTH => walk(&path, depth + 1, out),
            _ => {}
        }
    }
}

/// One watched folder: the folder itself (recursively) and its parent (for the folder's
/// own removal and re-creation).
#[derive(Debug)]
struct Folder {
    path: PathBuf,
    /// The folder's identity when it was last watched; `None` while it is not watched.
    watched: Option<(u64, u64)>,
    /// Whether its parent is watched.
    parent_watched: bool,
    /// Whether the folder existed at the last look (for logging its loss once).
    present: bool,
    /// Whether it was reported gone (its new watch is then worth a log line).
    lost: bool,
}

/// Watches `folders` until `stop` is cancelled, reloading what changes. `snapshot` is what
/// the registry loaded (see [`Snapshot::take`]).
pub async fn watch(
    registry: Arc<Registry>,
    folders: Vec<PathBuf>,
    snapshot: Snapshot,
    stop: CancellationToken,
) {
    // Only the paths are passed on: what changed is decided by the scan.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let handler = move |event: notify::Result<notify::Event>| {
        let paths = match event {
            Ok(event) if event.kind.is_access() => return,
            Ok(event) => event.paths,
            Err(e) => {
                tracing::warn!("file watcher: {e}; rescanning");
                Vec::new()
            }
        };
        let _ = tx.send(paths);
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(
                "cannot watch for changes: {e}; the folders are scanned every {} instead",
                humantime::format_duration(RESCAN)
            );
            None
        }
    };
    let cwd = std::env::current_dir().unwrap_or_default();
    let mut watches = Watches {
        folders: folders
            .iter()
            .map(|f| Folder {
                path: f.clone(),
                watched: None,
                parent_watched: false,
                present: f.is_dir(),
                lost: false,
            })
            .collect(),
        targets: BTreeMap::new(),
        cwd,
    };
    let mut known = snapshot.files;
    let mut settle = Settle::default();
    let mut ticks = tokio::time::interval(SETTLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_scan: Option<Instant> = None;
    loop {
        let mut events: Vec<PathBuf> = Vec::new();
        let mut notified = tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => false,
            paths = rx.recv() => match paths {
                Some(paths) => {
                    events.extend(paths);
                    true
                }
                None => false,
            },
        };
        while let Ok(paths) = rx.try_recv() {
            events.extend(paths);
            notified = true;
        }
        // Error events carry no path and always count; others only when they concern a
        // watched folder or a symlink target (a parent's watch also reports its siblings).
        let notified =
            notified && (events.is_empty() || events.iter().any(|e| watches.concerns(e)));
        let now = Instant::now();
        let full = notified || last_scan.is_none_or(|at| now.duration_since(at) >= RESCAN);
        let mut look_at: BTreeSet<PathBuf> = settle.paths().into_iter().collect();
        if full {
            last_scan = Some(now);
            if let Some(watcher) = watcher.as_mut() {
                watches.refresh(watcher, &registry, &known, &events);
            }
            look_at.extend(scan(&folders));
            look_at.extend(known.keys().cloned());
        }
        let mut changed = Vec::new();
        for path in look_at {
            let look = Look::at(&path);
            let before = known.get(&path).copied();
            if before.map(|k| k.look) == look {
                settle.forget(&path);
                continue;
            }
            if !settle.observe(&path, look, now) {
                continue;
            }
            match look.and_then(|_| know(&path)) {
                // Touched or replaced by the same bytes (a ConfigMap sync that changed
                // nothing): nothing to reload.
                Some(now_known) if before.is_some_and(|b| b.content == now_known.content) => {
                    known.insert(path, now_known);
                }
                Some(now_known) => {
                    known.insert(path.clone(), now_known);
                    changed.push(path);
                }
                None => {
                    if known.remove(&path).is_some() {
                        changed.push(path);
                    }
                }
            }
        }
        if !changed.is_empty() {
            // Reloads run on their own, so a flow that drains does not hold up the watcher
            // (nor other files' reloads).
            let registry = registry.clone();
            tokio::spawn(async move { registry.apply_changes(&changed).await });
        }
    }
    drop(watcher);
}

/// The notification watches: the folders, their parents, and the folders of symlink targets
/// outside them.
struct Watches {
    folders: Vec<Folder>,
    /// Folders holding the target of a symlinked file, watched non-recursively.
    targets: BTreeMap<PathBuf, bool>,
    cwd: PathBuf,
}

impl Watches {
    /// Whether an event path is about a watched folder (or inside one) or a symlink target.
    fn concerns(&self, event: &Path) -> bool {
        self.folders
            .iter()
            .any(|f| event.starts_with(self.cwd.join(&f.path)))
            || event
                .parent()
                .is_some_and(|dir| self.targets.contains_key(dir))
    }

    /// (Re-)establishes every watch that is missing or stale; logs each change.
    fn refresh(
        &mut self,
        watcher: &mut notify::RecommendedWatcher,
        registry: &Registry,
        known: &HashMap<PathBuf, Known>,
        events: &[PathBuf],
    ) {
        for folder in &mut self.folders {
            let absolute = self.cwd.join(&folder.path);
            // An event about the folder itself (seen through its parent's watch) means it was
            // removed, created or renamed: watch it afresh even if the new one happens to
            // reuse the old inode number.
            if events.contains(&absolute) && folder.watched.is_some() {
                let _ = watcher.unwatch(&absolute);
                folder.watched = None;
                folder.lost = true;
            }
            if !folder.parent_watched
                && let Some(parent) = absolute.parent()
                && parent.is_dir()
            {
                folder.parent_watched = watcher.watch(parent, RecursiveMode::NonRecursive).is_ok();
            }
            let id = folder_id(&absolute);
            if id.is_none() && folder.present {
                folder.present = false;
                folder.lost = true;
                tracing::warn!(
                    folder = %folder.path.display(),
                    "watched folder is gone; its flows stop, and it is watched again once it is back"
                );
            }
            if folder.watched.is_some() && folder.watched != id {
                let _ = watcher.unwatch(&absolute);
                folder.watched = None;
                folder.lost = true;
            }
            let Some(id) = id else {
                registry.set_folder_problem(&folder.path, folder_gone(&folder.path));
                continue;
            };
            if folder.watched.is_none() {
                match watcher.watch(&absolute, RecursiveMode::Recursive) {
                    Ok(()) => {
                        folder.watched = Some(id);
                        if folder.lost {
                            tracing::info!(folder = %folder.path.display(), "watching folder again (it was removed or replaced)");
                        }
                        folder.lost = false;
                    }
                    Err(e) => tracing::warn!(
                        folder = %folder.path.display(),
                        "cannot watch folder: {e}; it is scanned every {} instead",
                        humantime::format_duration(RESCAN)
                    ),
                }
            }
            folder.present = true;
            registry.set_folder_problem(&folder.path, None);
        }
        // Symlinked files whose target lives outside the watched folders: watch the folder
        // of the target, so that editing it reloads at once.
        let inside: Vec<PathBuf> = self
            .folders
            .iter()
            .filter_map(|f| std::fs::canonicalize(self.cwd.join(&f.path)).ok())
            .collect();
        let mut wanted = BTreeSet::new();
        for path in known.keys() {
            let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if !is_link {
                continue;
            }
            if let Some(dir) = std::fs::canonicalize(path)
                .ok()
                .and_then(|t| t.parent().map(Path::to_path_buf))
                && !inside.iter().any(|i| dir.starts_with(i))
            {
                wanted.insert(dir);
            }
        }
        self.targets.retain(|dir, _| {
            let keep = wanted.contains(dir);
            if !keep {
                let _ = watcher.unwatch(dir);
            }
            keep
        });
        for dir in wanted {
            let watched = self.targets.entry(dir.clone()).or_insert(false);
            if !*watched {
                *watched = watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok();
            }
        }
    }
}

/// The message for a folder that disappeared (the registry decides whether it matters).
fn folder_gone(path: &Path) -> Option<String> {
    Some(format!(
        "the folder `{}` is gone; create it again (its changes are picked up once it is back)",
        path.display()
    ))
}

fn folder_id(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    Some((0, 0))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().is_some_and(|n| {
        let n = n.to_string_lossy();
        n.starts_with('.') || n.ends_with('~') || n.ends_with(".swp") || n.ends_with(".tmp")
    })
}
