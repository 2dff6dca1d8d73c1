//! What attempts report on the control channel (progress, checkpoints,
//! outputs, alerts, errors), applied to the job and written once per
//! batch.

use std::collections::HashSet;

use holdfast_workflow::Executor;

use super::{Effect, Engine};
use crate::executor::{AttemptKey, ControlMessage};
use crate::store::WriteOp;

impl Engine {
    pub(super) fn on_control(&mut self, key: AttemptKey, message: ControlMessage, offset: u64) {
        let Some(job) = self.jobs.get_mut(&key.job_id) else {
            return;
        };
        let Some(act) = job.acts.get_mut(key.idx) else {
            return;
        };
        if job.chain.activities[key.idx].executor == Executor::Slurm {
            let current = match key.item {
                None => act.attempts == key.number,
                Some(item) => (act.fanout.as_ref())
                    .and_then(|f| f.live.get(&item))
                    .is_some_and(|run| run.attempts == key.number),
            };
            if current {
                self.control_offsets.insert(key, offset);
            }
        }
        if let Some(item) = key.item {
            // A fan-out item keeps its own checkpoint and outputs; its
            // progress is counted in items by the activity.
            let Some(run) = act.fanout.as_mut().and_then(|f| f.live.get_mut(&item)) else {
                return;
            };
            if run.attempts != key.number {
                return;
            }
            match message {
                ControlMessage::Progress { .. } => return,
                ControlMessage::Checkpoint(value) => {
                    run.checkpoint = Some(value);
                    self.item_dirty.insert((key.job_id, key.idx, item));
                    return;
                }
                ControlMessage::Output(map) => {
                    run.outputs.extend(map);
                    self.item_dirty.insert((key.job_id, key.idx, item));
                    return;
                }
                ControlMessage::Error(text) => {
                    run.error_message = Some(text);
                    return;
                }
                ControlMessage::Alert(_) => {}
            }
        } else if act.attempts != key.number {
            return;
        }
        match message {
            ControlMessage::Progress { percent, text } => {
                act.progress = Some(percent);
                act.progress_text = text;
                self.progress_dirty.insert((key.job_id, key.idx));
            }
            // Written once per batch, the last value (`flush_progress`).
            ControlMessage::Checkpoint(value) => {
                act.checkpoint = Some(value);
                self.checkpoint_dirty.insert((key.job_id, key.idx));
            }
            ControlMessage::Output(map) => {
                act.outputs.extend(map);
                self.outputs_dirty.insert((key.job_id, key.idx));
            }
            // Cut and masked at fd 3 like an alert; only the latest stays.
            ControlMessage::Error(text) => {
                act.error_message = Some(text);
                return;
            }
            ControlMessage::Alert(text) => {
                job.alerts += 1;
                let path = &crate::executor::logs::item_path(
                    &job.chain.activities[key.idx].path,
                    key.item,
                );
                // The text was cut to its start and alerts are rate-limited
                // at fd 3 (`control::Gate`), so neither the log nor the
                // journal nor `last_alert` grows with what an activity sends.
                tracing::warn!(HF_JOB_ID = key.job_id, HF_ACTIVITY = %path, HF_ATTEMPT = key.number, "alert: {text}");
                self.ops.push(WriteOp::JobAlert {
                    id: key.job_id,
                    alerts: job.alerts,
                    text: format!("{path}: {text}"),
                });
                self.ops.push(self.outbox.alert(job, key, &text));
            }
        }
        self.effects.push(Effect::Changed(key.job_id));
    }

    /// Write the latest progress, checkpoint and outputs of every activity
    /// that reported some in this batch: one row update each, however many
    /// lines arrived.
    pub(super) fn flush_progress(&mut self) {
        for (job_id, idx) in std::mem::take(&mut self.progress_dirty) {
            self.write_progress(job_id, idx);
        }
        let dirty: HashSet<(u64, usize)> = (self.checkpoint_dirty.iter())
            .chain(&self.outputs_dirty)
            .copied()
            .collect();
        for (job_id, idx) in dirty {
            self.write_control(job_id, idx);
        }
        for (job_id, idx, item) in std::mem::take(&mut self.item_dirty) {
            self.write_item_control(job_id, idx, item);
        }
        for (key, offset) in std::mem::take(&mut self.control_offsets) {
            self.ops.push(match key.item {
                Some(item) => WriteOp::ItemControlOffset {
                    job_id: key.job_id,
                    idx: key.idx,
                    item,
                    attempt: key.number,
                    offset,
                },
                None => WriteOp::AttemptControlOffset {
                    job_id: key.job_id,
                    idx: key.idx,
                    number: key.number,
                    offset,
                },
            });
        }
    }

    /// Queue the write of one activity's latest checkpoint and outputs,
    /// whichever changed.
    pub(super) fn write_control(&mut self, job_id: u64, idx: usize) {
        let checkpoint = self.checkpoint_dirty.remove(&(job_id, idx));
        let outputs = self.outputs_dirty.remove(&(job_id, idx));
        let Some(act) = self.jobs.get(&job_id).and_then(|j| j.acts.get(idx)) else {
            return;
        };
        if checkpoint && let Some(value) = &act.checkpoint {
            self.ops.push(WriteOp::ActivityCheckpoint {
                job_id,
                idx,
                checkpoint: value.to_string(),
            });
        }
        if outputs {
            self.ops.push(WriteOp::ActivityOutputs {
                job_id,
                idx,
                outputs: serde_json::Value::Object(act.outputs.clone()).to_string(),
            });
        }
    }

    /// Queue the write of one activity's latest progress.
    pub(super) fn write_progress(&mut self, job_id: u64, idx: usize) {
        if let Some(act) = self.jobs.get(&job_id).and_then(|j| j.acts.get(idx))
            && let Some(progress) = act.progress
        {
            self.ops.push(WriteOp::ActivityProgress {
                job_id,
                idx,
                progress,
                text: act.progress_text.clone(),
            });
        }
    }
}
