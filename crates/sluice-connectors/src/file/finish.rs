//! Where a claimed file goes when all its messages are done, and the sidecar beside it.

use super::temp::{NAME_MAX, temp_path, truncate};
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
    /// A message broke a contract (for `ndjson` and `csv`: every record failed, all of them
    /// on a contract): `.rejected/`.
    Rejected,
    /// Any other failure (for `ndjson` and `csv`: every record failed): `.error/`.
    Error,
    /// `ndjson` and `csv` only: some records failed and the others succeeded: `.partial/`.
    /// Dropping such a file again would deliver its good records twice, so it gets a place
    /// of its own; the failed records are in the sidecar and the dead letter.
    Partial,
}

impl Disposition {
    /// The folder in the watched folder where files of this end go.
    pub fn folder(self) -> &'static str {
        match self {
            Disposition::Done | Disposition::Delete => ".done",
            Disposition::Rejected => ".rejected",
            Disposition::Error => ".error",
            Disposition::Partial => ".partial",
        }
    }

    /// Every folder a claimed file can end in (their stale temporary sidecars are removed at
    /// start).
    pub const FOLDERS: [&'static str; 4] = [".done", ".rejected", ".error", ".partial"];
}

/// Where a finished file that gets a sidecar goes: a free name for `name` in `folder` (which
/// exists), free of a sidecar too. Chosen once per file, so that a retried move after a
/// failure (a full disk) keeps the sidecar it already wrote beside the same name.
pub fn target_in(folder: &Path, name: &str) -> PathBuf {
    unique_target(folder, name)
}

/// Moves `claimed` into `folder` (which exists) under `name`, or `stem-1.ext`, … when taken,
/// and returns where it went: one `rename` that never replaces a file, for a file that gets
/// no sidecar. Where the filesystem cannot rename that way, it looks for a free name first.
pub fn rename_new(claimed: &Path, folder: &Path, name: &str) -> io::Result<PathBuf> {
    for n in 0..10_000u32 {
        let to = folder.join(suffixed(name, n));
        match rename_noreplace(claimed, &to) {
            Some(Ok(())) => return Ok(to),
            Some(Err(e)) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    let to = unique_target(folder, name);
    std::fs::rename(claimed, &to)?;
    Ok(to)
}

/// `rename` that fails with `AlreadyExists` instead of replacing `to`; `None` where the
/// system or the filesystem cannot rename that way (`EINVAL`, `ENOSYS`: remembered for the
/// process, so that the callers' fallbacks are taken at once from then on).
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> Option<io::Result<()>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return None;
    }
    match renameat2_noreplace(from, to) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            None
        }
        done => Some(done),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn renameat2_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both paths are NUL-terminated strings that live across the call.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn renameat2_noreplace(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// Moves `claimed` to `target` (deletes it when `None`), writing `sidecar` as
/// `<name>.error.json` beside it first. Safe to call again after a failure.
pub fn place(claimed: &Path, target: Option<&Path>, sidecar: Option<&Value>) -> io::Result<()> {
    let Some(target) = target else {
        return std::fs::remove_file(claimed);
    };
    if let Some(sidecar) = sidecar {
        let text = serde_json::to_vec_pretty(sidecar).map_err(io::Error::other)?;
        write_atomic(&sidecar_path(target), &text)?;
    }
    std::fs::rename(claimed, target)
}

const SIDECAR: &str = ".error.json";

/// `<file>.error.json`. For a file name so long that this would not fit in a file name, the
/// name is shortened and a hash of the whole name keeps it apart from its neighbours:
/// `<first bytes of the name>~<hash>.error.json`.
pub fn sidecar_path(file: &Path) -> PathBuf {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    if name.len() + SIDECAR.len() <= NAME_MAX {
        return file.with_file_name(format!("{name}{SIDECAR}"));
    }
    let hash = fnv1a(name.as_bytes());
    let keep = truncate(&name, NAME_MAX - SIDECAR.len() - 17);
    file.with_file_name(format!("{keep}~{hash:016x}{SIDECAR}"))
}

/// FNV-1a: small, and the same in every run (a sidecar is found again after a restart).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `name`, or `stem-1.ext`, `stem-2.ext`, … when taken (also by a sidecar).
fn unique_target(folder: &Path, name: &str) -> PathBuf {
    (0..)
        .map(|n| folder.join(suffixed(name, n)))
        .find(|candidate| !candidate.exists() && !sidecar_path(candidate).exists())
        .unwrap_or_else(|| folder.join(name))
}

/// `name` for 0, else `stem-n.ext`; the stem is shortened when needed so that the suffixed
/// name still fits in [`NAME_MAX`] bytes.
pub fn suffixed(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    let suffix = format!("-{n}");
    let (stem, ext) = split_extension(name);
    let (stem, ext) = if ext.len() + suffix.len() < NAME_MAX {
        (stem, ext)
    } else {
        (name, "")
    };
    let room = NAME_MAX - suffix.len() - ext.len();
    format!("{}{suffix}{ext}", truncate(stem, room))
}

/// `order.json` → (`order`, `.json`); `README` → (`README`, ``).
pub fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = temp_path(path.parent().unwrap_or(Path::new(".")), &name);
    // A failed write (a full disk) leaves no half-written temporary file behind.
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
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
            let folder = dir.path().join(Disposition::Rejected.folder());
            std::fs::create_dir_all(&folder).unwrap();
            let target = target_in(&folder, "a.json");
            place(&claimed, Some(&target), Some(&sidecar)).unwrap();
            assert!(sidecar_path(&target).exists());
            assert_eq!(std::fs::read_to_string(&target).unwrap(), round.to_string());
        }
        assert!(dir.path().join(".rejected/a-1.json").exists());
        assert!(dir.path().join(".rejected/a-1.json.error.json").exists());
    }

    #[test]
    fn a_file_without_sidecar_never_replaces_one_of_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let (inflight, done) = (dir.path().join(".inflight"), dir.path().join(".done"));
        std::fs::create_dir_all(&inflight).unwrap();
        std::fs::create_dir_all(&done).unwrap();
        for round in 0..3 {
            let claimed = inflight.join("a.json");
            std::fs::write(&claimed, format!("{round}")).unwrap();
            let to = rename_new(&claimed, &done, "a.json").unwrap();
            assert_eq!(std::fs::read_to_string(&to).unwrap(), round.to_string());
            assert!(!claimed.exists());
        }
        assert_eq!(std::fs::read_to_string(done.join("a.json")).unwrap(), "0");
        assert_eq!(std::fs::read_to_string(done.join("a-1.json")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(done.join("a-2.json")).unwrap(), "2");
    }

    #[test]
    fn the_sidecar_of_a_long_name_fits() {
        let long = "o".repeat(250);
        let a = sidecar_path(&Path::new("/x").join(format!("{long}.csv")));
        let b = sidecar_path(&Path::new("/x").join(format!("{long}-1.csv")));
        let a_name = a.file_name().unwrap().to_str().unwrap();
        assert!(
            a_name.len() <= NAME_MAX && a_name.ends_with(".error.json"),
            "{a_name}"
        );
        assert_ne!(a, b, "neighbours keep apart");
        let name = format!("{long}.csv");
        assert_eq!(suffixed(&name, 1).len(), NAME_MAX);
        assert!(suffixed(&name, 12).ends_with("-12.csv"));
        assert_eq!(
            sidecar_path(Path::new("/x/a.json")),
            Path::new("/x/a.json.error.json")
        );
    }
}
