//! sluice's own temporary file names (`.<name>.tmp-<uuid>`), and removing the ones that a
//! killed process left behind.
//!
//! The uuid is a UUIDv7, whose first 48 bits are the time it was made. A temporary name made
//! before this process started belongs to an earlier run, whose write can never finish: it
//! is removed. Names of this process are never touched, and neither is any other name.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// The longest file name Linux filesystems accept (`NAME_MAX`), in bytes.
pub const NAME_MAX: usize = 255;

const MARK: &str = ".tmp-";
const UUID_HEX: usize = 32;

/// When this process started using temporary names (Unix milliseconds). Fixed before the
/// first temporary name is made, so every name of this process is at or after it.
fn started_ms() -> u64 {
    static STARTED: OnceLock<u64> = OnceLock::new();
    *STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

/// `folder/.<name>.tmp-<uuid>`, shortened so that it stays within [`NAME_MAX`] bytes even
/// when `name` itself is up to [`NAME_MAX`] bytes long.
pub fn temp_path(folder: &Path, name: &str) -> PathBuf {
    started_ms();
    let room = NAME_MAX - 1 - MARK.len() - UUID_HEX;
    folder.join(format!(
        ".{}{MARK}{}",
        truncate(name, room),
        super::ids::next_v7().simple()
    ))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether `name` is a temporary name that sluice made before this process started.
fn is_stale(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some(at) = rest.rfind(MARK) else {
        return false;
    };
    let hex = &rest[at + MARK.len()..];
    if at == 0 || hex.len() != UUID_HEX || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let Ok(id) = uuid::Uuid::try_parse(hex) else {
        return false;
    };
    if id.get_version_num() != 7 {
        return false;
    }
    let Some(made) = id.get_timestamp() else {
        return false;
    };
    let (secs, nanos) = made.to_unix();
    let made_ms = secs * 1000 + u64::from(nanos) / 1_000_000;
    made_ms < started_ms()
}

/// Removes the stale temporary files in `folder`, once per folder and process (a flow that
/// is reloaded does not list its folders again). Returns how many were removed.
pub fn clean_once(folder: &Path, flow: &str) -> usize {
    static CLEANED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    {
        let mut cleaned = CLEANED.lock().unwrap_or_else(|p| p.into_inner());
        let cleaned = cleaned.get_or_insert_with(HashSet::new);
        // Looked up first: every write asks, and only the first may allocate.
        if cleaned.contains(folder) || !cleaned.insert(folder.to_path_buf()) {
            return 0;
        }
    }
    started_ms();
    let Ok(entries) = std::fs::read_dir(folder) else {
        // Not there yet: nothing was left in it.
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_stale(name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(flow = %flow, file = %entry.path().display(), "cannot remove a temporary file left by an earlier run: {e}");
            }
        }
    }
    if removed > 0 {
        tracing::info!(flow = %flow, folder = %folder.display(), removed, "removed temporary files left by an earlier run (killed during a write)");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UUIDv7 in simple form made at `ms` (Unix milliseconds).
    fn v7_at(ms: u64) -> String {
        let ts =
            uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000);
        uuid::Uuid::new_v7(ts).simple().to_string()
    }

    #[test]
    fn temporary_names_fit_even_for_the_longest_names() {
        let dir = Path::new("/x");
        let long = "é".repeat(127); // 254 bytes
        let tmp = temp_path(dir, &long);
        let name = tmp.file_name().unwrap().to_str().unwrap();
        assert!(name.len() <= NAME_MAX, "{} bytes", name.len());
        assert!(name.starts_with(".é") && name.contains(".tmp-"));
    }

    #[test]
    fn only_our_names_from_before_this_process_are_stale() {
        let before = started_ms() - 60_000;
        assert!(is_stale(&format!(".a.json.tmp-{}", v7_at(before))));
        assert!(!is_stale(&format!(
            ".a.json.tmp-{}",
            v7_at(started_ms() + 1)
        )));
        let mine = temp_path(Path::new("/x"), "a.json");
        assert!(!is_stale(mine.file_name().unwrap().to_str().unwrap()));
        // Other people's names.
        for name in [
            "a.json",
            ".a.json.tmp-1234",
            "a.json.tmp-0190f5c1a2b37c3d8e9fa0b1c2d3e4f5",
            ".a.json.tmp-zz90f5c1a2b37c3d8e9fa0b1c2d3e4f5",
            ".tmp-0190f5c1a2b37c3d8e9fa0b1c2d3e4f5",
            // A version-4 uuid carries no time.
            ".a.json.tmp-0190f5c1a2b34c3d8e9fa0b1c2d3e4f5",
        ] {
            assert!(!is_stale(name), "{name}");
        }
    }

    #[test]
    fn cleaning_removes_stale_names_once() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir
            .path()
            .join(format!(".o.json.tmp-{}", v7_at(started_ms() - 1000)));
        let keep = dir.path().join(".notes.tmp-mine");
        std::fs::write(&stale, b"").unwrap();
        std::fs::write(&keep, b"x").unwrap();
        assert_eq!(clean_once(dir.path(), "f"), 1);
        assert!(!stale.exists() && keep.exists());
        std::fs::write(&stale, b"").unwrap();
        assert_eq!(clean_once(dir.path(), "f"), 0, "a folder is cleaned once");
    }
}
