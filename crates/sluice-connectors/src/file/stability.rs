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
    /// The last listing that showed the file (see [`Stability::listed`]).
    listing: u32,
}

/// Tracks files that are waiting to settle.
#[derive(Debug)]
pub struct Stability {
    min_age: Duration,
    check_interval: Duration,
    stable_checks: u32,
    seen: HashMap<String, Seen>,
    /// How many entries of `seen` are not ready: asked after every scan, so it is kept
    /// rather than counted over a backlog of 100,000 files.
    pending: usize,
    /// The current listing, so that files gone from the folder are forgotten without a set
    /// of every name the listing showed.
    listing: u32,
}

impl Stability {
    /// A gate with the trigger's settings.
    pub fn new(min_age: Duration, check_interval: Duration, stable_checks: u32) -> Self {
        Stability {
            min_age,
            check_interval,
            stable_checks: stable_checks.max(1),
            seen: HashMap::new(),
            pending: 0,
            listing: 0,
        }
    }

    /// Starts a listing of the folder: [`Stability::listed`] and [`Stability::observe`]
    /// mark the files it shows, and [`Stability::end_listing`] forgets the others.
    pub fn start_listing(&mut self) {
        self.listing = self.listing.wrapping_add(1);
    }

    /// Marks a file the listing showed; false when the gate does not know it yet.
    pub fn listed(&mut self, name: &str) -> bool {
        match self.seen.get_mut(name) {
            Some(entry) => {
                entry.listing = self.listing;
                true
            }
            None => false,
        }
    }

    /// Forgets every file the current listing did not show.
    pub fn end_listing(&mut self) {
        let listing = self.listing;
        let mut gone_pending = 0;
        self.seen.retain(|_, e| {
            let keep = e.listing == listing;
            gone_pending += usize::from(!keep && !e.ready);
            keep
        });
        self.pending -= gone_pending;
    }

    /// Whether a look at this file now could change anything: a look closer than
    /// `check_interval` to the last one does not count, and a change it could see is seen
    /// by the next look that does (which compares with the last counted one), so the scanner
    /// skips its `stat`; unless the file only waits for `min_age`, which may have passed.
    pub fn wants_look(&self, name: &str, now: Instant) -> bool {
        self.seen.get(name).is_none_or(|e| {
            !e.ready
                && (now.duration_since(e.last_look) >= self.check_interval
                    || e.stable_looks >= self.stable_checks
                        && now.duration_since(e.first_seen) >= self.min_age)
        })
    }

    /// Records a look at a file; returns true when the file is ready to be taken.
    pub fn observe(
        &mut self,
        name: &str,
        size: u64,
        mtime: Option<SystemTime>,
        now: Instant,
    ) -> bool {
        let listing = self.listing;
        let entry = self.seen.entry(name.to_owned()).or_insert_with(|| {
            self.pending += 1;
            Seen {
                first_seen: now,
                size,
                mtime,
                stable_looks: 1,
                last_look: now,
                ready: false,
                listing,
            }
        });
        entry.listing = listing;
        let was_ready = entry.ready;
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
        match (was_ready, entry.ready) {
            (false, true) => self.pending -= 1,
            (true, false) => self.pending += 1,
            _ => {}
        }
        entry.ready
    }

    /// Forgets a file (taken, or gone).
    pub fn forget(&mut self, name: &str) {
        if let Some(entry) = self.seen.remove(name) {
            self.pending -= usize::from(!entry.ready);
        }
    }

    /// True when some file is still settling (the scanner then looks again soon).
    pub fn has_pending(&self) -> bool {
        self.pending > 0
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
    fn the_pending_count_follows_looks_listings_and_forgets() {
        let ms = Duration::from_millis;
        let mut gate = Stability::new(ms(0), ms(10), 2);
        let t0 = Instant::now();
        gate.start_listing();
        assert!(!gate.observe("a", 1, None, t0));
        assert!(!gate.observe("b", 1, None, t0));
        gate.end_listing();
        assert!(gate.has_pending());
        assert!(!gate.wants_look("a", t0 + ms(5)), "too soon to count");
        assert!(gate.wants_look("a", t0 + ms(10)));
        gate.start_listing();
        assert!(gate.observe("a", 1, None, t0 + ms(10)));
        assert!(
            !gate.wants_look("a", t0 + ms(20)),
            "ready files are not looked at"
        );
        gate.end_listing();
        // `b` was not listed: gone.
        assert!(!gate.has_pending() && !gate.listed("b"));
        gate.start_listing();
        assert!(gate.listed("a"));
        assert!(!gate.observe("c", 1, None, t0 + ms(20)));
        gate.forget("c");
        gate.end_listing();
        assert!(!gate.has_pending() && !gate.wants_look("a", t0 + ms(99)));
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
