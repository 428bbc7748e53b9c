//! Running a message on the thread that read it.
//!
//! A trigger that does its reading on a blocking thread (the file trigger's drain) can run
//! the messages it reads right there, to their acknowledgement, instead of handing each to a
//! worker task, its script to the blocking pool and its file writes to the blocking pool
//! again: three hand-offs between threads per message, which cost more than the work itself
//! for small files (bench/README.md). It does so only for flows whose every step and sink
//! does local, bounded work ([`crate::CompiledFlow::in_place`]); a flow that calls the
//! network, or waits for other messages, keeps its worker tasks and their concurrency.
//!
//! The thread says it may block by running the trigger's work through [`block_on`]; the
//! script step and the file sink then do their work in place ([`may_block`]).

use std::cell::Cell;
use std::future::Future;

thread_local! {
    static MAY_BLOCK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `future` to its end on this thread (which must not be one of the runtime's worker
/// threads: a `spawn_blocking` thread or a thread of the caller's own), telling the steps
/// and sinks it runs that they may block it ([`may_block`]).
pub fn block_on<F: Future>(runtime: &tokio::runtime::Handle, future: F) -> F::Output {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            MAY_BLOCK.with(|flag| flag.set(self.0));
        }
    }
    let _reset = Reset(MAY_BLOCK.with(|flag| flag.replace(true)));
    runtime.block_on(future)
}

/// Whether the code running now is inside [`block_on`], on a thread that may block: a
/// script runs, and a file is written, in place rather than on the blocking pool.
pub fn may_block() -> bool {
    MAY_BLOCK.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use crate::connector::{Acker, Envelope, Inlet, Outcome, Outgoing, Sink};
    use crate::error::FlowError;
    use crate::message::{Message, Meta};
    use crate::stats::FlowStats;
    use crate::test_connectors::Stub;
    use crate::workers::{Workers, run_workers};
    use arc_swap::ArcSwap;
    use async_trait::async_trait;
    use sluice_flow::parse_flow;
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::thread::ThreadId;

    /// Where each write happened: the thread, and whether it was told it may block.
    type Writes = Arc<Mutex<Vec<(ThreadId, bool)>>>;

    /// A sink that says its writes are local, and records where they happen.
    struct Local(Writes);

    #[async_trait]
    impl Sink for Local {
        async fn write(&self, _: &mut Outgoing) -> Result<(), FlowError> {
            let here = (std::thread::current().id(), super::may_block());
            self.0.lock().unwrap().push(here);
            Ok(())
        }
        fn target(&self, _: &mut Outgoing) -> Result<String, FlowError> {
            Ok("local".into())
        }
        fn in_place(&self) -> bool {
            true
        }
    }

    /// Counts the acknowledgements, with the thread each came on.
    struct Ack(Arc<Mutex<Vec<(ThreadId, bool)>>>);

    #[async_trait]
    impl Acker for Ack {
        async fn ack(self: Box<Self>, outcome: Outcome) {
            let delivered = matches!(outcome, Outcome::Delivered(_));
            self.0
                .lock()
                .unwrap()
                .push((std::thread::current().id(), delivered));
        }
    }

    /// Runs one message through `process_here` on a blocking thread inside `block_on`, for a
    /// flow with these steps; returns the reading thread, the writes and the acks (as seen
    /// right after `process_here` returned, and once the workers stopped).
    async fn run_one(steps: &str) -> (bool, ThreadId, Vec<(ThreadId, bool)>, usize, usize) {
        let yaml = format!(
            "name: local\ntrigger:\n  file: {{ path: inbox }}\nsteps:\n{steps}  - to: out\nsinks:\n  out: {{ stdout: {{}} }}\n"
        );
        let loaded = parse_flow(Path::new("t.yaml"), yaml).unwrap_or_else(|d| panic!("{d}"));
        let writes: Writes = Arc::default();
        let compiled = crate::compile(
            &loaded,
            &crate::Folders::default(),
            &Stub(|_: &str| -> Arc<dyn Sink> { Arc::new(Local(writes.clone())) }),
        )
        .unwrap_or_else(|d| panic!("{d:?}"));
        let in_place = compiled.in_place;
        let current = Arc::new(ArcSwap::from_pointee(compiled));
        let stats = Arc::new(FlowStats::new("local"));
        let workers = Workers::new(current, 2, stats, tracing::Span::none());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let health = Arc::new(Mutex::new(None));
        let inlet = Inlet::new("local", tx, health).for_flow(workers.clone());
        let running = tokio::spawn(run_workers(rx, workers));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let runtime = tokio::runtime::Handle::current();
        let message = Message::new("local", serde_json::json!({"n": 1}), Meta::new());
        let envelope = Envelope::new(message, Box::new(Ack(acks.clone())));
        let seen = acks.clone();
        let (reader, acked_at_return) = tokio::task::spawn_blocking(move || {
            let handed = super::block_on(&runtime, inlet.process_here(envelope));
            assert!(handed.is_ok(), "the flow is running");
            (std::thread::current().id(), seen.lock().unwrap().len())
        })
        .await
        .expect("the reading thread");
        // The inlet is gone: the workers stop once every message settled.
        running.await.expect("the workers");
        let writes = writes.lock().unwrap().clone();
        let acks = acks.lock().unwrap();
        assert!(acks.iter().all(|(_, delivered)| *delivered), "delivered");
        (in_place, reader, writes, acked_at_return, acks.len())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_local_flow_runs_its_message_on_the_reading_thread() {
        let (in_place, reader, writes, acked_at_return, acks) =
            run_one("  - set: { seen: \"`true`\" }\n  - script: \"payload.n += 1; payload\"\n")
                .await;
        assert!(in_place, "set, script and a local sink are local work");
        assert_eq!(acks, 1);
        assert_eq!(
            acked_at_return, 1,
            "acknowledged before process_here returned"
        );
        assert_eq!(
            writes,
            vec![(reader, true)],
            "written on the reading thread, told it may block"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flow_that_waits_on_a_timer_is_queued_to_the_workers() {
        let (in_place, reader, writes, _, acks) = run_one("  - throttle: { rate: 1000/s }\n").await;
        assert!(!in_place, "a throttle waits: not local work");
        assert_eq!(acks, 1);
        assert_eq!(writes.len(), 1);
        let (thread, may_block) = writes[0];
        assert!(
            thread != reader && !may_block,
            "written by a worker, which may not block: {writes:?}"
        );
    }
}
