//! The process allocator, and handing memory back to the system once a burst is over.
//!
//! With glibc's malloc a third of the CPU time on the broker path went to its arena locks and
//! free-list consolidation (perf, bench/README.md); mimalloc's thread-local heaps avoid both.
//! mimalloc returns freed pages to the system only after a delay, and only when the thread
//! that owns them allocates again: a runtime thread that goes idle after a burst of large
//! request bodies kept them (190 MiB after 32 bodies of 4 MiB, for as long as it stayed
//! idle). [`on_park`] collects the parking thread's heap, at most once per
//! [`COLLECT_EVERY`], so that the cost stays out of the busy path; [`tick`] wakes a runtime
//! thread once a second, so that a park (and with it a collection) follows every burst even
//! in a process with no timers of its own (`--admin off`, no scans due).

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The shortest time between two collections by one thread.
#[cfg(feature = "mimalloc")]
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Called by a runtime thread when it has nothing to do.
pub fn on_park() {
    #[cfg(feature = "mimalloc")]
    {
        use std::cell::Cell;
        use std::time::Instant;
        thread_local! {
            static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
        }
        let now = Instant::now();
        if LAST.with(|last| last.get().is_some_and(|at| now - at < COLLECT_EVERY)) {
            return;
        }
        LAST.with(|last| last.set(Some(now)));
        // SAFETY: `mi_collect` has no preconditions; `false` asks for the ordinary
        // collection (free what is free, return it to the system), not the forced one.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

/// Wakes a runtime thread every second until `stop`: the thread parks again right after,
/// and collects then if its last collection is old enough (mimalloc's arenas are shared, so
/// one thread's collection also returns what the others freed in them).
pub async fn tick(stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
    }
}
