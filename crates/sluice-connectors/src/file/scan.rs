//! The scanner's part of the file trigger: listing the folder through the stability gate,
//! and filesystem notifications that wake it up early.

use super::is_ignored_name;
use super::stability::Stability;
use std::path::Path;
use std::time::Instant;
use tokio::sync::mpsc;

/// Lists `folder`, forgets files that are gone, looks at every file still settling, and
/// returns the names that just became ready with their sizes (regular files matching the
/// glob, not temporary).
pub(super) fn scan(
    folder: &Path,
    glob: &globset::GlobMatcher,
    gate: &mut Stability,
) -> std::io::Result<Vec<(String, u64)>> {
    let now = Instant::now();
    let mut newly_ready = Vec::new();
    gate.start_listing();
    for entry in std::fs::read_dir(folder)? {
        let Ok(entry) = entry else { continue };
        let name = match entry.file_name().into_string() {
            Ok(name) => name,
            Err(raw) => raw.to_string_lossy().into_owned(),
        };
        if is_ignored_name(&name) || !glob.is_match(&name) {
            continue;
        }
        // `file_type` comes from the directory listing itself on Linux: no `stat` call.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        // Ready files (waiting for a slot) and looks that would not count cost no `stat`.
        if !gate.wants_look(&name, now) {
            gate.listed(&name);
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            gate.listed(&name);
            continue;
        };
        if gate.observe(&name, meta.len(), meta.modified().ok(), now) {
            newly_ready.push((name, meta.len()));
        }
    }
    gate.end_listing();
    newly_ready.sort();
    Ok(newly_ready)
}

pub(super) fn list_names(folder: &Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

pub(super) fn watch_folder(
    folder: &Path,
    poke: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    use notify::event::{EventKind, ModifyKind, RenameMode};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Only appearing or changing files matter; files leaving (our own claims) do not.
        let relevant = event.is_ok_and(|e| match e.kind {
            EventKind::Create(_) => true,
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => false,
            EventKind::Modify(_) => true,
            EventKind::Any | EventKind::Other => true,
            EventKind::Access(_) | EventKind::Remove(_) => false,
        });
        if relevant {
            let _ = poke.send(());
        }
    })
    .map_err(|e| tracing::warn!("file notifications unavailable, relying on rescans: {e}"))
    .ok()?;
    watcher
        .watch(folder, notify::RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!(folder = %folder.display(), "file notifications unavailable, relying on rescans: {e}"))
        .ok()?;
    Some(watcher)
}
