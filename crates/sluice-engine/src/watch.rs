//! Watches the flows, schemas and scripts folders and feeds debounced changes to the registry.

use crate::registry::Registry;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long the watcher waits for a burst of writes (an editor's save) to settle.
pub const DEBOUNCE: Duration = Duration::from_millis(60);

/// Watches `folders` until `stop` is cancelled, reloading what changes.
pub async fn watch(registry: Arc<Registry>, folders: Vec<PathBuf>, stop: CancellationToken) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            let paths: Vec<PathBuf> = events
                .into_iter()
                .filter(|e| !e.kind.is_access())
                .flat_map(|e| e.event.paths)
                .collect();
            if !paths.is_empty() {
                let _ = tx.send(paths);
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!("file watcher: {e}");
            }
        }
    };
    let mut debouncer = match new_debouncer(DEBOUNCE, Some(DEBOUNCE / 3), handler) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("cannot watch for changes, hot reload is off: {e}");
            return;
        }
    };
    for folder in &folders {
        if !folder.is_dir() {
            tracing::debug!(folder = %folder.display(), "not watching a missing folder");
            continue;
        }
        if let Err(e) = debouncer.watch(folder, RecursiveMode::Recursive) {
            tracing::warn!(folder = %folder.display(), "cannot watch folder, hot reload is off for it: {e}");
        }
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    loop {
        let mut batch = tokio::select! {
            _ = stop.cancelled() => break,
            paths = rx.recv() => match paths { Some(p) => p, None => break },
        };
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        let mut changed: Vec<PathBuf> = batch
            .into_iter()
            .map(|p| relative_to(&p, &cwd))
            .filter(|p| !is_hidden(p))
            .collect();
        changed.sort();
        changed.dedup();
        registry.apply_changes(&changed).await;
    }
    drop(debouncer);
}

fn relative_to(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().is_some_and(|n| {
        let n = n.to_string_lossy();
        n.starts_with('.') || n.ends_with('~') || n.ends_with(".swp") || n.ends_with(".tmp")
    })
}
