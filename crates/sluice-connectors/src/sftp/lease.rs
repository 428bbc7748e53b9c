//! Which files in `.inflight/` are still held, and by whom nobody knows: the lease.
//!
//! Several sluice processes may take files from one remote folder; each claims a file by
//! renaming it into `.inflight/`, so that exactly one of them gets it. A process that dies
//! leaves its files there, and a process that starts cannot tell them from the files of a
//! process that runs. So every process touches the files it holds (sets their modification
//! time) every third of `lease`, and a file whose modification time this process has seen
//! unchanged for a whole `lease` is held by no one: it goes back into the folder and is taken
//! like a new file. The modification time is compared with itself only, never with this
//! machine's clock, so clocks that differ between the server and the processes do not matter.

use super::trigger::{Shared, lock};
use russh_sftp::protocol::FileAttributes;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Watches the files in `.inflight/` that this process does not hold.
pub(super) struct Watcher {
    lease: Duration,
    /// Each file's modification time and since when it has not changed.
    seen: HashMap<String, (Option<u32>, Instant)>,
}

impl Watcher {
    pub(super) fn new(lease: Duration) -> Watcher {
        Watcher {
            lease,
            seen: HashMap::new(),
        }
    }

    /// Takes a listing of `.inflight/` (names and modification times); returns the files
    /// whose lease ran out. Files this process holds, and files gone, are forgotten.
    pub(super) fn observe(
        &mut self,
        listing: Vec<(String, Option<u32>)>,
        held: &HashSet<String>,
        now: Instant,
    ) -> Vec<String> {
        let mut next = HashMap::with_capacity(listing.len());
        let mut stale = Vec::new();
        for (name, mtime) in listing {
            if held.contains(&name) {
                continue;
            }
            let since = match self.seen.get(&name) {
                Some(&(seen, since)) if seen == mtime => since,
                _ => now,
            };
            if now.duration_since(since) >= self.lease {
                stale.push(name.clone());
            }
            next.insert(name, (mtime, since));
        }
        self.seen = next;
        stale.sort();
        stale
    }

    /// Forgets a file moved back into the folder.
    pub(super) fn forget(&mut self, name: &str) {
        self.seen.remove(name);
    }
}

/// Touches every held file every third of the lease, until `until` is cancelled (after the
/// trigger's last file is placed).
pub(super) async fn refresh(shared: Arc<Shared>, until: CancellationToken) {
    let every = shared.config.lease.0 / 3;
    loop {
        tokio::select! {
            _ = until.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as u32;
        let held: Vec<(String, u32)> = lock(&shared.held)
            .iter()
            .map(|(name, &last)| (name.clone(), last))
            .collect();
        for (name, last) in held {
            // Always a new value, even within one second, so that every touch is seen.
            let mtime = if now > last {
                now
            } else {
                last.wrapping_add(1)
            };
            let path = shared.link.remote.path_in(".inflight", &name);
            let mut attrs = FileAttributes::empty();
            attrs.atime = Some(mtime);
            attrs.mtime = Some(mtime);
            let touched = {
                let path = path.clone();
                shared
                    .link
                    .run("touch", &path.clone(), |s| async move {
                        s.sftp.set_metadata(path, attrs).await
                    })
                    .await
            };
            match touched {
                Ok(()) => {
                    if let Some(last) = lock(&shared.held).get_mut(&name) {
                        *last = mtime;
                    }
                }
                // Finished meanwhile.
                Err(e) if e.not_found() => {}
                Err(e) => {
                    tracing::warn!(flow = %shared.flow, file = %path, "cannot renew the lease of a file in flight: {e}");
                    if !e.refused() {
                        // The connection is down; the next round tries again.
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_stale_once_its_time_stood_still_for_a_lease() {
        let s = Duration::from_secs;
        let mut w = Watcher::new(s(3));
        let t0 = Instant::now();
        let held = HashSet::from(["mine".to_owned()]);
        let list = |m: u32| vec![("a".to_owned(), Some(m)), ("mine".to_owned(), Some(1))];
        assert!(w.observe(list(10), &held, t0).is_empty());
        assert!(w.observe(list(10), &held, t0 + s(2)).is_empty());
        // Touched: the count starts again.
        assert!(w.observe(list(11), &held, t0 + s(3)).is_empty());
        assert!(w.observe(list(11), &held, t0 + s(5)).is_empty());
        assert_eq!(w.observe(list(11), &held, t0 + s(6)), ["a"]);
        // Gone from the listing: forgotten.
        assert!(w.observe(Vec::new(), &held, t0 + s(7)).is_empty());
        assert!(w.observe(list(11), &held, t0 + s(8)).is_empty());
    }
}
