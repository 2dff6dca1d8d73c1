//! The commit pipeline: a batch of writes handed to the store's writer
//! thread, the effects, new jobs and events that wait for it, and what
//! happens when it lands or fails. Up to [`DEPTH`] batches are in flight,
//! committed in order, each applied only if the one before it committed;
//! the loop builds the next one meanwhile.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use super::{
    Command, Effect, Engine, PendingJob, ScheduleControlError, SubmitError, events, submit,
};
use crate::executor;
use crate::store::{StoreError, WriteOp};

/// How many batches may be handed to the store before the first is
/// answered. With two, the writer goes from one commit to the next without
/// waiting for the engine to hear of the first: a second slot's attempt end
/// is written while the first's commit runs, instead of after it lands.
pub(super) const DEPTH: usize = 2;

/// A batch handed to the store and not yet committed, with what waits for
/// its commit. While its fsync runs the engine goes on taking commands and
/// building the next batch, whose effects wait for that next commit in
/// turn.
pub(super) struct InFlight {
    committing: crate::store::Committing,
    seq: u64,
    batch: Batch,
}

/// What a batch handed to the store carries besides its writes.
pub(super) struct Batch {
    durable: bool,
    effects: Vec<Effect>,
    pending_jobs: Vec<PendingJob>,
    events: events::Sealed,
    /// `(uid, request_id)` of the batch's idempotency keys, so a repeat
    /// arriving meanwhile is told to try again, as within a batch.
    request_ids: Vec<(u32, String)>,
}

impl Engine {
    /// Hand the batch to the store unless one is in flight (it goes when
    /// that one lands). A batch without writes carries out its effects at
    /// once when nothing is in flight. Returns true when the loop should
    /// go round again without waiting (new jobs joined).
    pub(super) fn commit(&mut self) -> bool {
        if self.in_flight.len() >= DEPTH {
            return false;
        }
        self.flush_progress();
        if self.ops.is_empty() {
            // Effects without writes of their own may still rest on writes
            // in flight (an answer naming a job they store): they wait.
            if !self.in_flight.is_empty() {
                return false;
            }
            self.durable = false;
            let pending_jobs = std::mem::take(&mut self.pending_jobs);
            let effects = std::mem::take(&mut self.effects);
            return self.carry_out_batch(pending_jobs, effects);
        }
        let ops = std::mem::take(&mut self.ops);
        let durable = std::mem::take(&mut self.durable);
        let request_ids = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::JobRequest {
                    uid, request_id, ..
                } => Some((*uid, request_id.clone())),
                _ => None,
            })
            .collect();
        let batch = Batch {
            durable,
            effects: std::mem::take(&mut self.effects),
            pending_jobs: std::mem::take(&mut self.pending_jobs),
            events: self.outbox.seal(),
            request_ids,
        };
        self.batch_seq += 1;
        let seq = self.batch_seq;
        let link = crate::store::Link {
            seq,
            after: self.in_flight.back().map(|f| f.seq),
        };
        tracing::trace!(seq, behind = ?link.after, "batch handed to the store");
        match self.store.start_write(ops, durable, Some(link)) {
            Ok(committing) => self.in_flight.push_back(InFlight {
                committing,
                seq,
                batch,
            }),
            // Refused at once (a read-only store, a writer gone): whatever
            // is still in flight fails too, and its writes are put back
            // ahead of these when it is answered.
            Err(unwritten) => self.failed(*unwritten, batch),
        }
        false
    }

    /// The oldest batch in flight was answered. Returns false when it
    /// failed. The batches handed over after a failed one come back
    /// unapplied (the writer applies none on top of a failure); they are
    /// taken in here and put back with it, in their order.
    pub(super) async fn landed(&mut self, outcome: crate::store::WriteOutcome) -> bool {
        let Some(InFlight { batch, .. }) = self.in_flight.pop_front() else {
            return true;
        };
        match outcome {
            Ok(()) => {
                self.committed(batch);
                true
            }
            Err(unwritten) => {
                let crate::store::Unwritten { error, mut ops } = *unwritten;
                let mut batch = batch;
                let mut put_back = 0;
                while let Some(mut later) = self.in_flight.pop_front() {
                    match later.committing.landed().await {
                        Err(unwritten) => {
                            ops.extend(unwritten.ops);
                            batch.absorb(later.batch);
                            put_back += 1;
                        }
                        // Cannot happen: the writer sends back what follows
                        // a failure. Were it to, the store would hold writes
                        // built on ones it lacks, and this batch's events
                        // would be published past the failed one's: a
                        // restart recovers from what was committed instead.
                        Ok(()) => {
                            tracing::error!(
                                "a batch committed after the one it follows failed; exiting so that the service manager starts the daemon again"
                            );
                            std::process::exit(70);
                        }
                    }
                }
                if put_back > 0 {
                    tracing::debug!(
                        batches = put_back,
                        "batches handed over after the failed one are put back with it"
                    );
                }
                self.failed(crate::store::Unwritten { error, ops }, batch);
                false
            }
        }
    }

    /// A batch committed: its events are out, its effects carried out.
    fn committed(&mut self, batch: Batch) {
        self.outbox.committed(batch.events);
        self.carry_out_batch(batch.pending_jobs, batch.effects);
        self.take_deferred();
    }

    /// Take again the commands that waited for a job's first commit.
    fn take_deferred(&mut self) {
        for command in std::mem::take(&mut self.deferred) {
            self.on_command(command);
        }
    }

    /// A batch committed (or had nothing to write): its new jobs join their
    /// queues and its effects are carried out. Returns whether jobs joined.
    fn carry_out_batch(&mut self, pending_jobs: Vec<PendingJob>, effects: Vec<Effect>) -> bool {
        let joined = !pending_jobs.is_empty();
        let mut effects = effects;
        for pending in pending_jobs {
            let id = pending.job.id;
            effects.push(Effect::Submitted(pending.reply, id));
            effects.push(Effect::Changed(id));
            self.enqueue(pending.job);
        }
        for effect in effects {
            self.carry_out(effect);
        }
        joined
    }

    /// A batch could not be committed: its submissions are refused, the
    /// rest of it is kept ahead of what was built meanwhile and tried
    /// again shortly. Effects wait for their writes, so no process starts
    /// unrecorded.
    fn failed(&mut self, unwritten: crate::store::Unwritten, batch: Batch) {
        let crate::store::Unwritten { error, ops } = unwritten;
        if matches!(error, StoreError::WriterGone) {
            // The writer thread died (a bug) and took the writes it held:
            // nothing can be recorded any more, and the effects kept here
            // would start processes that were never recorded. A restart
            // recovers from what was committed, as after a crash.
            tracing::error!(
                "the store's writer thread has stopped; exiting so that the service manager starts the daemon again"
            );
            std::process::exit(75);
        }
        let Batch {
            durable,
            effects,
            pending_jobs,
            events,
            ..
        } = batch;
        let refused_ids: HashSet<u64> = pending_jobs.iter().map(|p| p.job.id).collect();
        // The jobs named "submitted" in the log when they were accepted.
        let mut named: Vec<u64> = refused_ids.iter().copied().collect();
        named.sort_unstable();
        tracing::error!(%error, refused_jobs = ?named, "cannot commit to the store; submissions are refused until it can write again");
        let refused: HashSet<String> = pending_jobs
            .iter()
            .map(|p| submit::submitted_detail(p.job.id))
            .collect();
        for pending in pending_jobs {
            let _ = pending
                .reply
                .send(Err(SubmitError::Unavailable(store_message(&error))));
        }
        // Nor does a schedule's answer name a job that was refused: it is
        // a refusal now, given at once instead of after the next commit.
        let (named, kept_effects): (Vec<Effect>, Vec<Effect>) = effects
            .into_iter()
            .partition(|effect| names_refused(effect, &refused_ids));
        let mut effects = kept_effects;
        for effect in named {
            self.carry_out(as_refusal(effect, &error));
        }
        // Every write about a refused job goes (its row, its activities'
        // and items' rows a reprocess carried over, its events, its key),
        // and its audit row: the RPC layer audits the refusal, which it
        // gets as an error.
        let mut kept = ops;
        kept.retain(|op| !op.job_id().is_some_and(|id| refused_ids.contains(&id)));
        kept.retain(|op| {
            !matches!(op, WriteOp::Audit(a) if a.method == submit::SUBMIT_AUDIT
                && a.detail.as_ref().is_some_and(|d| refused.contains(d)))
        });
        kept.append(&mut self.ops);
        self.ops = kept;
        effects.append(&mut self.effects);
        self.effects = effects;
        self.durable |= durable;
        self.outbox.unseal(events);
        // A refused job of a schedule's fire ends it as far as `overlap`
        // goes: a fire held back behind it may go now.
        for id in refused_ids {
            self.schedule_job_finished(id);
        }
        self.take_deferred();
        let tx = self.commands_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = tx.send(Command::Flush).await;
        });
    }

    fn carry_out(&mut self, effect: Effect) {
        match effect {
            Effect::Submitted(reply, id) => {
                let _ = reply.send(Ok(id));
            }
            Effect::Cancelled(reply, outcomes) => {
                let _ = reply.send(outcomes);
            }
            Effect::Spawn(spec, kill) => {
                executor::spawn(*spec, self.exec_tx.clone(), kill, self.hub.clone());
            }
            Effect::Kill(sender, reason) => {
                let _ = sender.send(reason);
            }
            Effect::Timer(delay, command) => {
                let tx = self.commands_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(command).await;
                });
            }
            Effect::JobTimer(job_id, delay) => {
                let tx = self.commands_tx.clone();
                let handle = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Command::JobTimeout { job_id }).await;
                });
                if let Some(job) = self.jobs.get_mut(&job_id) {
                    job.timeout_timer = Some(handle.abort_handle());
                } else {
                    handle.abort();
                }
            }
            Effect::Changed(id) => {
                let live = self.jobs.contains_key(&id);
                let _ = self.changes.send(super::JobChange { job_id: id, live });
            }
            Effect::ScheduleChanged(reply, result) => {
                let _ = reply.send(result);
            }
            Effect::Backfilled(reply, result) => {
                let _ = reply.send(result);
            }
        }
    }

    /// Whether a batch in flight carries `uid`'s idempotency key `key`.
    pub(super) fn key_in_flight(&self, uid: u32, key: &str) -> bool {
        self.in_flight.iter().any(|in_flight| {
            in_flight
                .batch
                .request_ids
                .iter()
                .any(|(u, request_id)| *u == uid && request_id == key)
        })
    }

    /// Whether job `id` was accepted and waits for its first commit.
    pub(super) fn is_pending(&self, id: u64) -> bool {
        self.pending_jobs.iter().any(|p| p.job.id == id)
            || self
                .in_flight
                .iter()
                .any(|in_flight| in_flight.batch.pending_jobs.iter().any(|p| p.job.id == id))
    }
}

impl Batch {
    /// Take in the batch that followed this one, as one batch that failed.
    fn absorb(&mut self, later: Batch) {
        self.durable |= later.durable;
        self.effects.extend(later.effects);
        self.pending_jobs.extend(later.pending_jobs);
        self.events = self.events.then(later.events);
        self.request_ids.extend(later.request_ids);
    }
}

/// The answer to the oldest batch in flight; never resolves when there is
/// none.
pub(super) async fn landed(in_flight: &mut VecDeque<InFlight>) -> crate::store::WriteOutcome {
    match in_flight.front_mut() {
        Some(batch) => batch.committing.landed().await,
        None => std::future::pending().await,
    }
}

/// Whether `effect` is a backfill's or a trigger's answer naming a job
/// the failed batch refused.
fn names_refused(effect: &Effect, refused: &HashSet<u64>) -> bool {
    match effect {
        Effect::Backfilled(_, Ok(backfill)) => backfill.jobs.iter().any(|id| refused.contains(id)),
        Effect::ScheduleChanged(_, Ok(view)) => {
            view.last_job.is_some_and(|id| refused.contains(&id))
        }
        _ => false,
    }
}

/// The answer [`names_refused`] found, as the refusal it now is. The
/// fires are not run again.
fn as_refusal(effect: Effect, error: &StoreError) -> Effect {
    let message = format!(
        "{}; the fire's jobs were refused and are not run: fire it again once it can write",
        store_message(error)
    );
    match effect {
        Effect::Backfilled(reply, _) => {
            Effect::Backfilled(reply, Err(ScheduleControlError::Unavailable(message)))
        }
        Effect::ScheduleChanged(reply, _) => {
            Effect::ScheduleChanged(reply, Err(ScheduleControlError::Unavailable(message)))
        }
        other => other,
    }
}

fn store_message(error: &StoreError) -> String {
    if error.is_unavailable() {
        "the state directory cannot be written (disk full or read-only); try again when it can"
            .to_string()
    } else {
        "the store rejected the write; see the daemon's log".to_string()
    }
}
