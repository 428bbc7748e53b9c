//! The stability gate: a file is taken only when its size and mtime stayed the same over
//! `stable_checks` looks spaced at least `check_interval` apart, and it was first seen at
//! least `min_age` ago.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug)]
struct Seen {
    first_seen: Instant,
    size: u64,
    mtime: Option<SystemTime>,
    stable_looks: u32,
    last_look: Instant,
    ready: bool,
}

/// Tracks files that are waiting to settle.
#[derive(Debug)]
pub struct Stability {
    min_age: Duration,
    check_interval: Duration,
    stable_checks: u32,
    seen: HashMap<String, Seen>,
}

impl Stability {
    /// A gate with the trigger's settings.
    pub fn new(min_age: Duration, check_interval: Duration, stable_checks: u32) -> Self {
        Stability {
            min_age,
            check_interval,
            stable_checks: stable_checks.max(1),
            seen: HashMap::new(),
        }
    }

    /// Records a look at a file; returns true when the file is ready to be taken.
    pub fn observe(
        &mut self,
        name: &str,
        size: u64,
        mtime: Option<SystemTime>,
        now: Instant,
    ) -> bool {
        let entry = self.seen.entry(name.to_owned()).or_insert(Seen {
            first_seen: now,
            size,
            mtime,
            stable_looks: 1,
            last_look: now,
            ready: false,
        });
        if entry.size != size || entry.mtime != mtime {
            entry.size = size;
            entry.mtime = mtime;
            entry.stable_looks = 1;
            entry.last_look = now;
        } else if now.duration_since(entry.last_look) >= self.check_interval {
            entry.stable_looks += 1;
            entry.last_look = now;
        }
        entry.ready = entry.stable_looks >= self.stable_checks
            && now.duration_since(entry.first_seen) >= self.min_age;
        entry.ready
    }

    /// True when a file already passed the gate and waits only for a free slot; such a
    /// file is not looked at again, so a large backlog costs no repeated `stat` calls.
    pub fn is_ready(&self, name: &str) -> bool {
        self.seen.get(name).is_some_and(|e| e.ready)
    }

    /// Forgets a file (taken, or gone).
    pub fn forget(&mut self, name: &str) {
        self.seen.remove(name);
    }

    /// Forgets every file not in `present`.
    pub fn retain(&mut self, present: impl Fn(&str) -> bool) {
        self.seen.retain(|name, _| present(name));
    }

    /// True when some file is still settling (the scanner then looks again soon).
    pub fn has_pending(&self) -> bool {
        self.seen.values().any(|e| !e.ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_must_stay_unchanged_over_spaced_looks_and_be_old_enough() {
        let ms = Duration::from_millis;
        let mut gate = Stability::new(ms(500), ms(200), 3);
        let t0 = Instant::now();
        let m = Some(SystemTime::UNIX_EPOCH);
        assert!(!gate.observe("a", 10, m, t0));
        // Looks closer together than check_interval do not count.
        assert!(!gate.observe("a", 10, m, t0 + ms(50)));
        assert!(!gate.observe("a", 10, m, t0 + ms(250)));
        // A change resets the count.
        assert!(!gate.observe("a", 20, m, t0 + ms(300)));
        assert!(!gate.observe("a", 20, m, t0 + ms(520)));
        assert!(gate.observe("a", 20, m, t0 + ms(740)));
    }

    #[test]
    fn min_age_holds_back_a_stable_file() {
        let ms = Duration::from_millis;
        let mut gate = Stability::new(ms(1000), ms(10), 2);
        let t0 = Instant::now();
        assert!(!gate.observe("a", 1, None, t0));
        assert!(!gate.observe("a", 1, None, t0 + ms(20)));
        assert!(gate.observe("a", 1, None, t0 + ms(1000)));
    }
}
