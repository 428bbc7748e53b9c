//! The offsets of one assigned partition: which messages are in the flow, which are done,
//! and how far the group may commit. Kept apart from the consumer so the rule "never past
//! an earlier offset still in flight" is plain data, tested without a broker.

use std::collections::BTreeMap;

/// The messages of one partition that were read and not yet committed past.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    /// Offset → whether its message settled (sinks or dead letter confirmed). Every message
    /// read is entered, in order, until the contiguous settled prefix is dropped.
    open: BTreeMap<i64, bool>,
    /// The offset to commit: every message before it settled. `None` until one did.
    commit_to: Option<i64>,
    /// The offset last committed (or being committed).
    committed: Option<i64>,
}

impl Offsets {
    /// A message was read.
    pub(crate) fn read(&mut self, offset: i64) {
        self.open.entry(offset).or_insert(false);
    }

    /// A message settled; returns whether the commit point moved.
    pub(crate) fn settled(&mut self, offset: i64) -> bool {
        match self.open.get_mut(&offset) {
            Some(done) => *done = true,
            // Not read in this assignment (a stale acknowledgement): nothing to move.
            None => return false,
        }
        let mut moved = false;
        while let Some(entry) = self.open.first_entry() {
            if !*entry.get() {
                break;
            }
            let (offset, _) = entry.remove_entry();
            self.commit_to = Some(offset + 1);
            moved = true;
        }
        moved
    }

    /// The lowest offset read and not settled: where reading must start again when a
    /// message fails for good (everything before it may be committed).
    pub(crate) fn first_open(&self) -> Option<i64> {
        self.open
            .iter()
            .find_map(|(&offset, &done)| (!done).then_some(offset))
    }

    /// Forgets every message read: they will be read again from `first_open`.
    pub(crate) fn rewind(&mut self) {
        self.open.clear();
    }

    /// The offset to commit, when it is past the last one committed; marks it committed.
    pub(crate) fn take_commit(&mut self) -> Option<i64> {
        let to = self.commit_to?;
        if self.committed.is_some_and(|done| done >= to) {
            return None;
        }
        self.committed = Some(to);
        Some(to)
    }

    /// A commit of `offset` failed: it is to be committed again.
    pub(crate) fn commit_failed(&mut self, offset: i64) {
        if self.committed == Some(offset) {
            self.committed = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_offset_never_commits_past_an_earlier_one_in_flight() {
        let mut p = Offsets::default();
        for offset in 10..15 {
            p.read(offset);
        }
        assert!(!p.settled(12));
        assert!(!p.settled(11));
        assert_eq!(p.take_commit(), None);
        assert_eq!(p.first_open(), Some(10));
        assert!(p.settled(10));
        assert_eq!(p.take_commit(), Some(13));
        assert_eq!(p.take_commit(), None, "already committed");
        assert_eq!(p.first_open(), Some(13));
        assert!(p.settled(13) && p.settled(14));
        assert_eq!(p.take_commit(), Some(15));
        assert_eq!(p.first_open(), None);
    }

    #[test]
    fn a_stale_acknowledgement_moves_nothing() {
        let mut p = Offsets::default();
        p.read(5);
        p.rewind();
        assert!(!p.settled(5));
        assert_eq!(p.take_commit(), None);
        p.read(5);
        p.read(6);
        assert!(!p.settled(6));
        assert_eq!(p.first_open(), Some(5));
    }

    #[test]
    fn a_failed_commit_is_made_again() {
        let mut p = Offsets::default();
        p.read(0);
        p.settled(0);
        assert_eq!(p.take_commit(), Some(1));
        p.commit_failed(1);
        assert_eq!(p.take_commit(), Some(1));
    }
}
