//! Where a claimed file goes when all its messages are done, and the sidecar beside it.

use serde_json::Value;
use std::io;
use std::path::{Path, PathBuf};

/// The end of a claimed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Every message succeeded (or was filtered): `.done/`.
    Done,
    /// Every message succeeded and the flow says `on_success: delete`.
    Delete,
    /// A message broke a contract: `.rejected/`.
    Rejected,
    /// Any other failure: `.error/`.
    Error,
}

impl Disposition {
    fn folder(self) -> &'static str {
        match self {
            Disposition::Done | Disposition::Delete => ".done",
            Disposition::Rejected => ".rejected",
            Disposition::Error => ".error",
        }
    }
}

/// Moves `claimed` out of `.inflight/` according to `disposition`, writing `sidecar` as
/// `<name>.error.json` beside it first. Never overwrites: an existing name gets a suffix.
/// Returns the file's final path (`None` when deleted).
pub fn finish(
    inbox: &Path,
    claimed: &Path,
    name: &str,
    disposition: Disposition,
    sidecar: Option<&Value>,
) -> io::Result<Option<PathBuf>> {
    if disposition == Disposition::Delete {
        std::fs::remove_file(claimed)?;
        return Ok(None);
    }
    let folder = inbox.join(disposition.folder());
    std::fs::create_dir_all(&folder)?;
    let target = unique_target(&folder, name);
    if let Some(sidecar) = sidecar {
        let sidecar_path = sidecar_path(&target);
        let text = serde_json::to_vec_pretty(sidecar).map_err(io::Error::other)?;
        write_atomic(&sidecar_path, &text)?;
    }
    std::fs::rename(claimed, &target)?;
    Ok(Some(target))
}

/// `<file>.error.json`.
pub fn sidecar_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".error.json");
    file.with_file_name(name)
}

/// `name`, or `stem-1.ext`, `stem-2.ext`, … when taken (also by a sidecar).
fn unique_target(folder: &Path, name: &str) -> PathBuf {
    let first = folder.join(name);
    if !first.exists() && !sidecar_path(&first).exists() {
        return first;
    }
    let (stem, ext) = split_extension(name);
    for n in 1.. {
        let candidate = folder.join(format!("{stem}-{n}{ext}"));
        if !candidate.exists() && !sidecar_path(&candidate).exists() {
            return candidate;
        }
    }
    unreachable!("an unbounded counter always finds a free name")
}

/// `order.json` → (`order`, `.json`); `README` → (`README`, ``).
pub fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_with_sidecar_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let inflight = dir.path().join(".inflight");
        std::fs::create_dir_all(&inflight).unwrap();
        for round in 0..2 {
            let claimed = inflight.join("a.json");
            std::fs::write(&claimed, format!("{round}")).unwrap();
            let sidecar = serde_json::json!({"kind": "contract"});
            let target = finish(
                dir.path(),
                &claimed,
                "a.json",
                Disposition::Rejected,
                Some(&sidecar),
            )
            .unwrap()
            .unwrap();
            assert!(sidecar_path(&target).exists());
            assert_eq!(std::fs::read_to_string(&target).unwrap(), round.to_string());
        }
        assert!(dir.path().join(".rejected/a-1.json").exists());
        assert!(dir.path().join(".rejected/a-1.json.error.json").exists());
    }
}
