//! The gate every sandbox passes: how many tests run sluice at once in this one process.
//!
//! The harness runs tests on parallel threads. The machine's cores, the admin port a plain
//! `sluice run` tries (127.0.0.1:9850) and the time and memory bounds some tests assert are
//! shared, so the gate lets in `SLUICE_E2E_JOBS` sandboxes at a time (default 1: one test at
//! a time, as when each file was its own binary), and a test that must run alone waits until
//! every other one is out and keeps newcomers out until it is done.

use std::sync::{Condvar, Mutex, MutexGuard};

struct State {
    /// Passes out now.
    running: usize,
    /// Whether the pass out is an `alone` one.
    alone: bool,
    /// `alone` passes asked for and not yet given: they go before new shared ones, so a
    /// stream of shared tests cannot starve them.
    waiting_alone: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    running: 0,
    alone: false,
    waiting_alone: 0,
});
static CHANGED: Condvar = Condvar::new();

/// Held while a test runs; handing it back (dropping it) lets the next one in.
pub struct Pass {
    _private: (),
}

/// How many shared passes may be out at once.
fn jobs() -> usize {
    std::env::var("SLUICE_E2E_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

fn lock() -> MutexGuard<'static, State> {
    // Only the counters above are behind the lock, and no code that can panic runs while it
    // is held, so a poisoned lock still holds consistent counts.
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

fn wait(state: MutexGuard<'static, State>) -> MutexGuard<'static, State> {
    CHANGED.wait(state).unwrap_or_else(|p| p.into_inner())
}

/// A pass beside up to `SLUICE_E2E_JOBS - 1` others.
pub fn enter() -> Pass {
    let jobs = jobs();
    let mut state = lock();
    while state.alone || state.waiting_alone > 0 || state.running >= jobs {
        state = wait(state);
    }
    state.running += 1;
    Pass { _private: () }
}

/// A pass while no other one is out.
pub fn alone() -> Pass {
    let mut state = lock();
    state.waiting_alone += 1;
    while state.running > 0 {
        state = wait(state);
    }
    state.waiting_alone -= 1;
    state.running = 1;
    state.alone = true;
    Pass { _private: () }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut state = lock();
        state.running -= 1;
        state.alone = false;
        drop(state);
        CHANGED.notify_all();
    }
}
