//! After `split` and `aggregate`: the children of a split, and the members of a group that
//! wait for its leader.

use super::{CompiledFlow, Mode};
use crate::connector::{Failure, Outcome};
use crate::error::{ErrorEnvelope, ErrorKind, FlowError};
use crate::steps::{Exec, Fork};
use futures_util::future::join_all;

impl CompiledFlow {
    /// Carries on after `split` (the children) or `aggregate` (the group).
    pub(super) async fn forked(
        &self,
        mut exec: Exec,
        at: usize,
        mode: Mode<'_>,
    ) -> Option<Outcome> {
        match exec.fork.take() {
            Some(Fork::Split(children)) => self.run_children(exec, children, at, mode).await,
            Some(Fork::Park(parked)) => self.run_parked(exec, parked, at, mode).await,
            None => {
                exec.finish(true);
                Some(Outcome::Completed(None))
            }
        }
    }

    /// Runs every child of a split (all at once: a child may wait in an aggregate group
    /// for its siblings), then the parent's own deliveries; combines the outcomes.
    pub(super) async fn run_children(
        &self,
        mut exec: Exec,
        children: crate::steps::split::Children,
        at: usize,
        mode: Mode<'_>,
    ) -> Option<Outcome> {
        let original = self.original(&exec, mode);
        let fail_parent = children.fail_parent;
        // The children share the parent's hold; the parent settles when the last child does.
        let hold = exec.hold.take();
        let mut execs = children.into_execs(&exec.meta, hold.as_ref());
        drop(hold);
        // The children's sinks pass the same commit point as the parent's.
        for child in &mut execs {
            child.caller = exec.caller.clone();
            child.dry = exec.dry;
            child.probe = exec.probe.clone();
        }
        let child_mode = Mode {
            want_reply: false,
            dead_letter: mode.dead_letter && !fail_parent,
            dry: mode.dry,
        };
        let outcomes = match mode.dry {
            None => {
                let runs = execs
                    .into_iter()
                    .map(|child| self.run(child, at + 1, child_mode));
                join_all(runs).await
            }
            Some(recorder) => {
                // No child waits for a sibling in a dry run (an aggregate completes at
                // once), so they run in order and their results are recorded in order,
                // after the parent's own deliveries.
                recorder.split(&mut exec);
                let mut outcomes = Vec::with_capacity(execs.len());
                for child in execs {
                    outcomes.push(self.run(child, at + 1, child_mode).await);
                }
                outcomes
            }
        };
        let mut failure: Option<Box<Failure>> = None;
        for outcome in outcomes {
            match outcome {
                None => {
                    exec.finish(false);
                    return None;
                }
                Some(Outcome::Failed(f)) if fail_parent || !f.dead_lettered => {
                    failure.get_or_insert(f);
                }
                Some(_) => {}
            }
        }
        let failed = match failure {
            Some(f) if fail_parent => Some((f.error, f.envelope.attempts)),
            Some(f) => {
                // A child failed and no dead letter took it: the parent must not be
                // acknowledged as done, or the child would be lost.
                exec.finish(false);
                return Some(Outcome::Failed(f));
            }
            None if exec.deliveries.is_empty() => {
                exec.finish(true);
                return Some(Outcome::Delivered(None));
            }
            None => {
                let deliveries = std::mem::take(&mut exec.deliveries);
                self.deliver_for(exec.caller.as_ref(), &exec.meta, deliveries)
                    .await
                    .err()
            }
        };
        match failed {
            None => {
                exec.finish(true);
                Some(Outcome::Delivered(None))
            }
            Some((error, attempts)) => {
                exec.finish(false);
                let keep = mode.dead_letter && self.keeps_failure(exec.caller.as_ref());
                Some(
                    self.fail(error, attempts, &exec.meta, original, keep, mode)
                        .await,
                )
            }
        }
    }

    /// A message that joined an aggregate group gives back its slot and waits. The group's
    /// first member (the leader) runs the aggregated message through the rest of the steps
    /// and hands the outcome to every other member.
    pub(super) async fn run_parked(
        &self,
        mut exec: Exec,
        parked: crate::steps::aggregate::Parked,
        at: usize,
        mode: Mode<'_>,
    ) -> Option<Outcome> {
        use crate::steps::aggregate::Parked;
        if let Some(hold) = exec.hold.take() {
            hold.park();
        }
        exec.guards.clear();
        let outcome = match parked {
            Parked::Member(rx) => rx.await.ok().flatten(),
            Parked::Leader(rx) => match rx.await {
                Err(_) => None,
                Ok(closed) => {
                    let (aggregated, followers) = closed.into_parts();
                    let outcome = match aggregated {
                        Ok(next) => {
                            // The aggregated message is a message of its own: its failure
                            // is dead-lettered (a dry run never parks).
                            let next_mode = Mode {
                                dead_letter: mode.dry.is_none(),
                                ..mode
                            };
                            self.run(next, at + 1, next_mode).await
                        }
                        Err((error, meta)) => {
                            Some(self.fail(error, 1, &meta, None, true, mode).await)
                        }
                    };
                    for follower in followers {
                        let _ = follower.send(outcome.as_ref().map(replicate));
                    }
                    outcome
                }
            },
        };
        let success = outcome
            .as_ref()
            .is_some_and(|o| !matches!(o, Outcome::Failed(_)));
        exec.finish(success);
        outcome
    }
}

/// A copy of an outcome for another member of an aggregate group.
fn replicate(outcome: &Outcome) -> Outcome {
    match outcome {
        Outcome::Delivered(_) => Outcome::Delivered(None),
        Outcome::Completed(_) => Outcome::Completed(None),
        Outcome::Filtered => Outcome::Filtered,
        Outcome::Failed(f) => Outcome::Failed(Box::new(Failure {
            error: f.error.clone(),
            envelope: f.envelope.clone(),
            dead_lettered: f.dead_lettered,
        })),
    }
}

pub(super) fn abandoned(flow: &CompiledFlow, message_id: &str) -> Failure {
    let error = FlowError::new(
        ErrorKind::Timeout,
        "the message was abandoned while waiting in an aggregate group",
    );
    Failure {
        envelope: ErrorEnvelope::new(&flow.name, &flow.version, message_id, &error, 1),
        error,
        dead_lettered: false,
    }
}
