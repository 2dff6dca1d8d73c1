//! Fan-out transitions: an activity with `foreach` runs once per item,
//! each item an instance (`load.chunk[17]`) with its own attempts,
//! retries, checkpoint, outputs and log; items start from a cursor within
//! the activity's `max_parallel`, and the activity ends once they are all
//! done. (The state they work on is `items.rs`.)

use holdfast_api::{ActivityState, AttemptState};
use holdfast_workflow::OnFailure;
use serde_json::Value;

use super::items::{FanOut, ItemRun, ItemState, compute_items};
use super::job::Stop;
use super::{Command, Effect, Engine};
use crate::executor::{AttemptEnd, AttemptKey, KillReason};
use crate::store::{self, WriteOp};

impl Engine {
    /// Start the next item of fan-out `idx` (its list computed first, on
    /// the first call), and keep the activity ready while it has room.
    pub(super) fn start_next_item(&mut self, id: u64, idx: usize) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.acts[idx].fanout.is_none() {
            let registry = self.registry.borrow().clone();
            match compute_items(job, idx, &registry) {
                Ok(list) => {
                    let fan = FanOut::new(list);
                    self.ops.push(WriteOp::ActivityItems {
                        job_id: id,
                        idx,
                        items: fan.list.stored().to_string(),
                        total: fan.total,
                    });
                    job.acts[idx].fanout = Some(Box::new(fan));
                }
                Err(message) => {
                    let path = job.chain.activities[idx].path.clone();
                    tracing::error!(HF_JOB_ID = id, HF_ACTIVITY = %path, %message, "cannot start the fan-out");
                    job.acts[idx].last_error = Some(super::job::ActError {
                        error_id: String::new(),
                        error: Some(message.clone()),
                        error_tail: None,
                        error_message: None,
                    });
                    job.alerts += 1;
                    self.ops.push(WriteOp::JobAlert {
                        id,
                        alerts: job.alerts,
                        text: format!("{path}: {message}"),
                    });
                    self.set_activity_state(id, idx, ActivityState::Failed);
                    self.effects.push(Effect::Changed(id));
                    self.finish_if_done(id);
                    return;
                }
            }
        }
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if super::slurm_array::on_slurm(job, idx) {
            // Slurm starts them: every item ready now, as one job array.
            self.start_item_array(id, idx);
            return;
        }
        let act = &mut job.acts[idx];
        let Some(fan) = act.fanout.as_mut() else {
            return;
        };
        let item = if fan.halted {
            None
        } else if let Some(item) = fan.again.pop_first() {
            Some(item)
        } else if fan.next < fan.total {
            fan.next += 1;
            Some(fan.next - 1)
        } else {
            None
        };
        let Some(item) = item else {
            // Nothing to start: an empty list, or every item done (a
            // resume after the last one ended) ends the activity here.
            self.fanout_settled(id, idx);
            self.effects.push(Effect::Changed(id));
            self.finish_if_done(id);
            return;
        };
        self.job_started(id);
        let Some(fan) = (self.jobs.get_mut(&id)).and_then(|j| j.acts[idx].fanout.as_mut()) else {
            return;
        };
        let run = fan.live.entry(item).or_insert_with(ItemRun::new);
        run.attempts += 1;
        run.state = ItemState::Running;
        run.no_retry = false;
        run.error_message = None;
        let number = run.attempts;
        fan.running += 1;
        let Some(act) = self.jobs.get_mut(&id).map(|j| &mut j.acts[idx]) else {
            return;
        };
        if act.state() != ActivityState::Running {
            act.state = Some(ActivityState::Running);
            self.ops.push(WriteOp::ActivityState {
                job_id: id,
                idx,
                state: ActivityState::Running.as_str(),
            });
        }
        self.ops.push(WriteOp::ItemStart {
            job_id: id,
            idx,
            item,
            attempt: number,
            started_at: store::now_ms(),
            slurm_name: None,
        });
        let key = AttemptKey {
            job_id: id,
            idx,
            number,
            item: Some(item),
        };
        self.launch(key);
        self.fanout_settled(id, idx);
    }

    /// After a change to fan-out `idx`: ready again while it has items and
    /// room, finished (and its dependants released) once it is done.
    pub(super) fn fanout_settled(&mut self, id: u64, idx: usize) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        // On Slurm the array's `%max_parallel` throttles the items.
        let max = match super::slurm_array::on_slurm(job, idx) {
            true => usize::MAX,
            false => job.chain.activities[idx].max_parallel.unwrap_or(usize::MAX),
        };
        let startable = job.may_start(idx);
        let stop = job.stop_for(idx);
        let on_failure = job.chain.activities[idx].on_failure;
        let act = &mut job.acts[idx];
        if act.state().is_terminal() {
            return;
        }
        let Some(fan) = act.fanout.as_ref() else {
            return;
        };
        if startable && fan.has_startable() && fan.running < max && act.waiting == 0 {
            job.ready.insert(idx);
        } else {
            job.ready.remove(&idx);
        }
        // Progress counts items.
        let done = fan.succeeded + fan.failed;
        let progress = if fan.total == 0 {
            100.0
        } else {
            f64::from(done) * 100.0 / f64::from(fan.total)
        };
        if act.progress != Some(progress) {
            act.progress = Some(progress);
            act.progress_text = Some(format!("{done}/{} items", fan.total));
            self.progress_dirty.insert((id, idx));
        }
        if !fan.is_done() {
            return;
        }
        let state = match stop {
            Some(Stop::Cancel) => ActivityState::Cancelled,
            Some(Stop::Timeout) => ActivityState::Failed,
            None if fan.failed > 0 && on_failure == OnFailure::Fail => ActivityState::Failed,
            None => ActivityState::Succeeded,
        };
        // Items left waiting for a retry will not get it.
        let waiting: Vec<u32> = (fan.live.iter())
            .filter(|(_, r)| r.state == ItemState::RetryWait)
            .map(|(&i, _)| i)
            .collect();
        let left = if stop == Some(Stop::Cancel) {
            "cancelled"
        } else {
            "failed"
        };
        for item in waiting {
            self.ops.push(WriteOp::ItemState {
                job_id: id,
                idx,
                item,
                state: left,
            });
        }
        job.ready.remove(&idx);
        self.set_activity_state(id, idx, state);
    }

    /// An item's attempt ended.
    pub(super) fn on_item_end(&mut self, key: AttemptKey, end: AttemptEnd) {
        let Some(item) = key.item else {
            return;
        };
        let error_id = (end.state != AttemptState::Succeeded).then(|| self.error_id());
        let now = store::now_ms();
        let Some(job) = self.jobs.get_mut(&key.job_id) else {
            return;
        };
        let chain = job.chain.clone();
        let activity = &chain.activities[key.idx];
        let stop = job.stop_for(key.idx);
        let Some(fan) = job.acts[key.idx].fanout.as_mut() else {
            return;
        };
        let Some(run) = fan.live.get_mut(&item) else {
            return;
        };
        if run.attempts != key.number || run.state != ItemState::Running {
            return;
        }
        run.kill = None;
        fan.running -= 1;
        job.running -= 1;
        self.running -= 1;
        if !activity.secret_files.is_empty() {
            crate::secret_files::remove(&crate::secret_files::attempt_dir(
                &self.settings.socket,
                key,
            ));
        }
        let path = crate::executor::logs::item_path(&activity.path, Some(item));
        let retries_left = run
            .attempts
            .saturating_sub(run.interruptions + run.deferred)
            <= activity.retries
            && !run.no_retry;
        let (item_state, again_after) = match end.state {
            AttemptState::Succeeded => ("succeeded", None),
            AttemptState::Interrupted => {
                run.interruptions += 1;
                ("pending", None)
            }
            _ if stop == Some(Stop::Cancel) => ("cancelled", None),
            _ if stop == Some(Stop::Timeout) => ("failed", None),
            _ if end.transient => {
                run.deferred += 1;
                ("retry_wait", Some(super::run::TRANSIENT_DELAY))
            }
            _ if retries_left && !fan.halted => {
                ("retry_wait", Some(activity.retry_delay_for(run.attempts)))
            }
            _ => ("failed", None),
        };
        let interruptions = run.interruptions;
        let error_message = run.error_message.take();
        match item_state {
            "succeeded" => {
                let run = fan.live.remove(&item);
                fan.succeeded += 1;
                if let Some(run) = run
                    && !run.outputs.is_empty()
                {
                    fan.outputs.insert(item, run.outputs);
                }
            }
            "pending" => {
                run.state = ItemState::Pending;
                fan.again.insert(item);
            }
            "retry_wait" => run.state = ItemState::RetryWait,
            _ => {
                fan.live.remove(&item);
                fan.failed += 1;
            }
        }
        if item_state == "failed" && stop.is_none() {
            tracing::error!(HF_JOB_ID = key.job_id, HF_CHAIN = %chain.name, HF_ACTIVITY = %path, HF_ATTEMPT = key.number, HF_ERROR_ID = error_id.as_deref().unwrap_or(""), error = end.error.as_deref().unwrap_or(""), "item failed");
            job.acts[key.idx].last_error = error_id.clone().map(|error_id| super::job::ActError {
                error_id,
                error: end.error.clone(),
                error_tail: end.error_tail.clone(),
                error_message: error_message.clone(),
            });
            match activity.on_failure {
                OnFailure::Continue => {
                    job.alerts += 1;
                    let text = format!(
                        "{path} failed and was skipped; the other items go on \
                         (on_failure = \"continue\")"
                    );
                    // An alert event too, so notification rules on alerts
                    // hear of each skipped item.
                    self.ops.push(self.outbox.alert(job, key, &text));
                    self.ops.push(WriteOp::JobAlert {
                        id: key.job_id,
                        alerts: job.alerts,
                        text,
                    });
                }
                OnFailure::Fail => {
                    if let Some(fan) = job.acts[key.idx].fanout.as_mut() {
                        fan.halted = true;
                    }
                }
            }
        }
        if let Some(delay) = again_after {
            self.effects.push(Effect::Timer(
                delay,
                Command::ItemRetryDue {
                    job_id: key.job_id,
                    idx: key.idx,
                    item,
                    after: key.number,
                },
            ));
        }
        self.ops.push(WriteOp::ItemEnd {
            item,
            item_state,
            interruptions,
            // Each item's attempt is an attempt for the metrics too.
            end: Box::new(super::run::ended_attempt(
                &chain.name,
                key,
                &end,
                error_id,
                error_message,
                now,
            )),
        });
        if let Some(error) = &end.log_error {
            tracing::warn!(HF_JOB_ID = key.job_id, HF_ACTIVITY = %path, %error, "cannot keep the item's log");
        }
        self.item_dirty.remove(&(key.job_id, key.idx, item));
        self.write_item_control(key.job_id, key.idx, item);
        self.fanout_settled(key.job_id, key.idx);
        self.effects.push(Effect::Changed(key.job_id));
        self.refresh(key.job_id);
        self.finish_if_done(key.job_id);
    }

    /// An item's retry delay expired: it may start again.
    pub(super) fn item_retry_due(&mut self, id: u64, idx: usize, item: u32, after: u32) {
        let Some(fan) = (self.jobs.get_mut(&id))
            .and_then(|j| j.acts.get_mut(idx))
            .filter(|a| !a.state().is_terminal())
            .and_then(|a| a.fanout.as_mut())
        else {
            return;
        };
        let Some(run) = fan.live.get_mut(&item) else {
            return;
        };
        if run.state != ItemState::RetryWait || run.attempts != after {
            return;
        }
        run.state = ItemState::Pending;
        fan.again.insert(item);
        self.ops.push(WriteOp::ItemState {
            job_id: id,
            idx,
            item,
            state: "pending",
        });
        self.fanout_settled(id, idx);
        self.refresh(id);
    }

    /// A stop reached the job: fan-outs start no more items and their
    /// running items are asked to stop; one with none running ends now.
    pub(super) fn stop_fanouts(&mut self, id: u64, reason: KillReason) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let mut settle = Vec::new();
        for (idx, act) in job.acts.iter_mut().enumerate() {
            if act.state() != ActivityState::Running {
                continue;
            }
            let Some(fan) = act.fanout.as_mut() else {
                continue;
            };
            fan.halted = true;
            for run in fan.live.values_mut() {
                if let Some(kill) = run.kill.take() {
                    self.effects.push(Effect::Kill(kill, reason));
                }
            }
            settle.push(idx);
        }
        for idx in settle {
            self.fanout_settled(id, idx);
        }
    }

    /// Queue the write of an item's latest checkpoint and outputs, those it
    /// has (once per batch for a running item, and at its end).
    pub(super) fn write_item_control(&mut self, job_id: u64, idx: usize, item: u32) {
        let Some(fan) = (self.jobs.get(&job_id))
            .and_then(|j| j.acts.get(idx))
            .and_then(|a| a.fanout.as_ref())
        else {
            return;
        };
        let (checkpoint, outputs) = match (fan.live.get(&item), fan.outputs.get(&item)) {
            (Some(run), _) => (
                run.checkpoint.as_ref().map(Value::to_string),
                (!run.outputs.is_empty()).then(|| Value::Object(run.outputs.clone()).to_string()),
            ),
            (None, Some(outputs)) => (None, Some(Value::Object(outputs.clone()).to_string())),
            (None, None) => (None, None),
        };
        if checkpoint.is_some() || outputs.is_some() {
            self.ops.push(WriteOp::ItemControl {
                job_id,
                idx,
                item,
                checkpoint,
                outputs,
            });
        }
    }
}
