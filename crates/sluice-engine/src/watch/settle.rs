//! The settle gate for flow, schema and script files: a change is passed on only when the
//! file looked the same (size, modification time, inode — or absent) over `LOOKS` looks
//! spaced `INTERVAL` apart, and the change was first seen at least `MIN_AGE` ago. The same
//! rule as the file trigger's stability gate, so that a file still being written (`scp`,
//! `cat >`, a network copy, an editor that saves in two writes) never becomes the running
//! version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How often a changing file is looked at.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// How many looks in a row must agree.
pub const LOOKS: u32 = 3;
/// How long after the change was first seen it may load, at the earliest.
pub const MIN_AGE: Duration = Duration::from_millis(500);

/// What a look at a file sees, symlinks followed; cheap to take (one `stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// Size in bytes.
    pub len: u64,
    /// Modification time.
    pub mtime: Option<SystemTime>,
    /// Device and inode: a file replaced by a rename (or a ConfigMap's symlink swap) is
    /// another file even when size and time agree.
    pub id: (u64, u64),
}

impl Look {
    /// A look at `path`; `None` when it is not a readable regular file (absent, a folder).
    pub fn at(path: &Path) -> Option<Look> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        #[cfg(unix)]
        let id = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let id = (0, 0);
        Some(Look {
            len: meta.len(),
            mtime: meta.modified().ok(),
            id,
        })
    }
}

#[derive(Debug)]
struct Settling {
    first_seen: Instant,
    look: Option<Look>,
    agreeing: u32,
    last_look: Instant,
}

/// Files whose change is still settling.
#[derive(Debug, Default)]
pub struct Settle {
    settling: HashMap<PathBuf, Settling>,
}

impl Settle {
    /// Records a look at a changed file; true when the change has settled.
    pub fn observe(&mut self, path: &Path, look: Option<Look>, now: Instant) -> bool {
        let entry = self
            .settling
            .entry(path.to_owned())
            .or_insert_with(|| Settling {
                first_seen: now,
                look,
                agreeing: 1,
                last_look: now,
            });
        if entry.look != look {
            entry.look = look;
            entry.agreeing = 1;
            entry.last_look = now;
        } else if now.duration_since(entry.last_look) >= INTERVAL {
            entry.agreeing += 1;
            entry.last_look = now;
        }
        let settled = entry.agreeing >= LOOKS && now.duration_since(entry.first_seen) >= MIN_AGE;
        if settled {
            self.settling.remove(path);
        }
        settled
    }

    /// Forgets a file (its change was undone, or it was passed on).
    pub fn forget(&mut self, path: &Path) {
        self.settling.remove(path);
    }

    /// The files still settling.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.settling.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(len: u64) -> Option<Look> {
        Some(Look {
            len,
            mtime: Some(SystemTime::UNIX_EPOCH),
            id: (1, 2),
        })
    }

    #[test]
    fn a_change_settles_after_agreeing_spaced_looks_and_the_minimum_age() {
        let ms = Duration::from_millis;
        let p = Path::new("flows/a.yaml");
        let mut gate = Settle::default();
        let t0 = Instant::now();
        assert!(!gate.observe(p, look(10), t0));
        assert!(!gate.observe(p, look(10), t0 + ms(100)));
        assert!(!gate.observe(p, look(10), t0 + ms(200)), "too young");
        // The second half of a two-part write resets the looks, not the age.
        assert!(!gate.observe(p, look(20), t0 + ms(300)));
        assert!(!gate.observe(p, look(20), t0 + ms(400)));
        assert!(!gate.observe(p, look(20), t0 + ms(450)), "looks too close");
        assert!(gate.observe(p, look(20), t0 + ms(500)));
        assert!(gate.paths().is_empty());
    }

    #[test]
    fn a_removal_settles_too() {
        let ms = Duration::from_millis;
        let p = Path::new("flows/a.yaml");
        let mut gate = Settle::default();
        let t0 = Instant::now();
        assert!(!gate.observe(p, None, t0));
        assert!(!gate.observe(p, None, t0 + ms(300)));
        assert!(gate.observe(p, None, t0 + ms(600)));
    }
}
