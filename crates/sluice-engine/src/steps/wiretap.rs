//! `wiretap: <sink>` — a copy of the current payload to a sink, through a bounded queue.
//!
//! The message never waits for the copy and never fails because of it: a full queue drops
//! the copy and a failed write is logged; both are counted. A wiretap is for observation
//! (audit trails, debugging feeds), not for deliveries that must arrive — use `to` for those.

use super::{Control, Delivery, Exec, Run, Step};
use crate::compile::Compiler;
use crate::connector::{Outgoing, Sink};
use crate::error::FlowError;
use crate::message::Ids;
use sluice_flow::{Spanned, Text};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Copies waiting for the wiretap sink, at most.
pub const QUEUE: usize = 1024;

/// The compiled `wiretap` step.
pub struct Wiretap {
    sink_name: Arc<[String]>,
    tx: mpsc::Sender<Outgoing>,
    // Taken by the writer task on first use (compiling must work without a runtime).
    rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    sink: Arc<dyn Sink>,
    flow: String,
    counters: Arc<Counters>,
}

/// What a wiretap dropped and failed to write.
#[derive(Default)]
pub struct Counters {
    /// Copies dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Copies the sink refused.
    pub failed: AtomicU64,
}

impl Wiretap {
    /// A wiretap to `sink`, named `name` in the flow.
    pub fn new(flow: &str, name: &str, sink: Arc<dyn Sink>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Wiretap {
            sink_name: vec![name.to_owned()].into(),
            tx,
            rx: Mutex::new(Some(rx)),
            sink,
            flow: flow.to_owned(),
            counters: Arc::default(),
        }
    }

    fn start_writer(&self) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let sink = self.sink.clone();
        let counters = self.counters.clone();
        let (flow, name) = (self.flow.clone(), self.sink_name[0].clone());
        tokio::spawn(async move {
            while let Some(mut out) = rx.recv().await {
                if let Err(e) = sink.write(&mut out).await {
                    let n = counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(flow = %flow, sink = %name, failed = n, "wiretap write failed (the message is not affected): {e}");
                }
            }
        });
    }
}

impl Step for Wiretap {
    fn run<'a>(&'a self, exec: &'a mut Exec) -> Run<'a> {
        Run::Done(self.apply(exec))
    }

    fn in_place(&self) -> bool {
        true
    }
}

impl Wiretap {
    fn apply(&self, exec: &mut Exec) -> Result<Control, FlowError> {
        if exec.dry {
            // A dry run shows the copy as a delivery, so `tests:` can check it.
            exec.deliveries.push(Delivery {
                sinks: self.sink_name.clone(),
                payload: exec.payload.snapshot(),
            });
            return Ok(Control::Continue);
        }
        self.start_writer();
        let out = Outgoing {
            payload: exec.payload.snapshot(),
            meta: exec.meta.clone(),
        };
        if self.tx.try_send(out).is_err() {
            let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let message_id = exec.meta.message_id().to_owned();
            tracing::warn!(flow = %self.flow, message_id = %message_id, sink = %self.sink_name[0], dropped = n, "wiretap queue full: copy dropped");
        }
        Ok(Control::Continue)
    }
}

/// Compiles `wiretap: <sink>`; the sink is one of the flow's, already built.
pub(crate) fn compile(
    cx: &mut Compiler<'_>,
    sink: &Spanned<Text>,
    sinks: &[&str],
) -> Option<Box<dyn Step>> {
    let name = sink.value.as_str();
    match cx.sink_map.get(name) {
        Some(built) => Some(Box::new(Wiretap::new(&cx.flow.name, name, built.clone()))),
        None => {
            if !sinks.contains(&name) {
                cx.unknown_sink(sink, name, sinks, "wiretap to");
            }
            None
        }
    }
}
