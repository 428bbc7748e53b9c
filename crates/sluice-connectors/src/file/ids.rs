//! UUIDv7s for the file connector's per-file ids (message and batch ids, temporary names),
//! made without a `getrandom` system call each.
//!
//! The first 48 bits are the time in Unix milliseconds, as in every UUIDv7 (`temp.rs` reads
//! them back to tell an earlier run's temporary files from this one's). The rest is a random
//! value drawn once per process plus a counter, the "monotonic random" method of RFC 9562
//! (section 6.2): ids of one process never repeat, and two processes start far apart.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// A fresh UUIDv7.
pub fn next_v7() -> uuid::Uuid {
    static SEED: OnceLock<(u16, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let &(high, low) = SEED.get_or_init(|| {
        // The one random draw of this process: the 74 random bits of a UUIDv7.
        let random = uuid::Uuid::now_v7().as_u128();
        ((random >> 64) as u16, random as u64)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 10];
    bytes[..2].copy_from_slice(&high.to_be_bytes());
    // The version and variant bits take the top bits of the first bytes of each part; the
    // low 62 bits of the sum stay, so 2^62 ids in a row are distinct.
    bytes[2..].copy_from_slice(&low.wrapping_add(n).to_be_bytes());
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_distinct_version_7_and_carry_the_time() {
        let before = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let ids: HashSet<uuid::Uuid> = (0..10_000).map(|_| next_v7()).collect();
        assert_eq!(ids.len(), 10_000);
        let id = next_v7();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        let made = secs * 1000 + u64::from(nanos) / 1_000_000;
        assert!(
            made >= before && made < before + 60_000,
            "{made} vs {before}"
        );
    }
}
