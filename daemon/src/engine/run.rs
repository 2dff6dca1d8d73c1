//! The engine's transitions once a job exists: admitting queued jobs and
//! picking activities to start, attempt ends and retries, skipping
//! dependants, cancelling, timeouts and finishing. (Submitting is
//! `submit.rs`, starting an attempt `start.rs`, control messages
//! `control.rs`.)

use std::cmp::Reverse;

use holdfast_api::{ActivityState, AttemptState, CancelOutcome, JobState};
use holdfast_workflow::OnFailure;

use super::job::{JobRun, Stop};
use super::{Command, Effect, Engine};
use crate::executor::{AttemptEnd, AttemptKey, KillReason};
use crate::store::{self, WriteOp};

/// How long an activity that could not start for lack of file descriptors
/// waits before it is tried again.
pub(super) const TRANSIENT_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

impl Engine {
    /// Put a committed job into the queue of its chain (or, with
    /// `concurrency_per = "tenant"`, of its tenant within the chain).
    pub(super) fn enqueue(&mut self, job: JobRun) {
        let chain = job.concurrency_key();
        self.queued
            .entry(chain.clone())
            .or_default()
            .insert((Reverse(job.priority), job.id));
        self.dirty_chains.insert(chain);
        self.jobs.insert(job.id, job);
    }

    /// Admit queued jobs within their chains' `concurrency`, then start
    /// ready activities within `max_parallel` (global and per job).
    pub(super) fn schedule(&mut self) {
        if self.shutting_down.is_some() {
            return;
        }
        for chain in std::mem::take(&mut self.dirty_chains) {
            while let Some(queue) = self.queued.get_mut(&chain) {
                let Some((prio, id)) = queue.first() else {
                    self.queued.remove(&chain);
                    break;
                };
                let admitted = self.admitted_per_chain.get(&chain).copied().unwrap_or(0);
                let limit = self
                    .jobs
                    .get(&id)
                    .and_then(|j| j.chain.concurrency)
                    .unwrap_or(usize::MAX);
                if admitted >= limit {
                    break;
                }
                queue.remove(&(prio, id));
                *self.admitted_per_chain.entry(chain.clone()).or_default() += 1;
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.admitted = true;
                }
                self.refresh(id);
                self.finish_if_done(id);
            }
        }
        while self.running < self.settings.max_parallel {
            let Some(&(_, id)) = self.ready_jobs.first() else {
                break;
            };
            let next = self.jobs.get_mut(&id).and_then(|j| j.ready.pop_first());
            // Nothing ready after all: `refresh` below drops the job from
            // `ready_jobs`, so the loop cannot spin.
            if let Some(idx) = next {
                self.start_activity(id, idx);
            }
            self.refresh(id);
        }
    }

    /// Keep `ready_jobs` in step with one job's readiness and capacity.
    pub(super) fn refresh(&mut self, id: u64) {
        let Some(job) = self.jobs.get(&id) else {
            self.ready_jobs.retain(|&(_, j)| j != id);
            return;
        };
        let key = (Reverse(job.priority), id);
        let room = job.running < job.chain.max_parallel.unwrap_or(usize::MAX);
        if job.admitted && job.startable() && room && !job.ready.is_empty() {
            self.ready_jobs.insert(key);
        } else {
            self.ready_jobs.remove(&key);
        }
    }

    pub(super) fn on_attempt_end(&mut self, key: AttemptKey, end: AttemptEnd) {
        if key.item.is_some() {
            self.on_item_end(key, end);
            return;
        }
        let error_id = (end.state != AttemptState::Succeeded).then(|| self.error_id());
        let now = store::now_ms();
        let Some(job) = self.jobs.get_mut(&key.job_id) else {
            return;
        };
        let chain = job.chain.clone();
        let activity = &chain.activities[key.idx];
        let act = &mut job.acts[key.idx];
        if act.attempts != key.number || act.state() != ActivityState::Running {
            return;
        }
        act.kill = None;
        job.running -= 1;
        self.running -= 1;
        let error_message = act.error_message.take();
        if let Some(error_id) = &error_id {
            act.last_error = Some(super::job::ActError {
                error_id: error_id.clone(),
                error: end.error.clone(),
                error_tail: end.error_tail.clone(),
                error_message: error_message.clone(),
            });
        }
        let stop = job.stop_for(key.idx);
        let act = &mut job.acts[key.idx];
        if !activity.secret_files.is_empty() {
            crate::secret_files::remove(&crate::secret_files::attempt_dir(
                &self.settings.socket,
                key,
            ));
        }
        self.ops.push(WriteOp::AttemptEnd(Box::new(ended_attempt(
            &chain.name,
            key,
            &end,
            error_id.clone(),
            error_message,
            now,
        ))));
        if let Some(error) = &end.log_error {
            self.ops.push(WriteOp::AttemptLogError {
                job_id: key.job_id,
                idx: key.idx,
                number: key.number,
                error: error.clone(),
            });
        }
        let fields = (
            key.job_id,
            chain.name.as_str(),
            activity.process.as_str(),
            activity.name.as_str(),
            key.number,
        );
        let next = match end.state {
            AttemptState::Succeeded => {
                tracing::info!(
                    HF_JOB_ID = fields.0,
                    HF_CHAIN = fields.1,
                    HF_PROCESS = fields.2,
                    HF_ACTIVITY = fields.3,
                    HF_ATTEMPT = fields.4,
                    "job {} ({}): {}.{} succeeded",
                    fields.0,
                    fields.1,
                    fields.2,
                    fields.3
                );
                ActivityState::Succeeded
            }
            AttemptState::Interrupted => {
                act.interruptions += 1;
                self.ops.push(WriteOp::ActivityInterruptions {
                    job_id: key.job_id,
                    idx: key.idx,
                    interruptions: act.interruptions,
                });
                tracing::warn!(
                    HF_JOB_ID = fields.0,
                    HF_CHAIN = fields.1,
                    HF_PROCESS = fields.2,
                    HF_ACTIVITY = fields.3,
                    HF_ATTEMPT = fields.4,
                    "activity interrupted; it resumes when the daemon starts again"
                );
                ActivityState::Pending
            }
            _ if stop == Some(Stop::Cancel) => ActivityState::Cancelled,
            _ if stop == Some(Stop::Timeout) => ActivityState::Failed,
            // Out of file descriptors: start it again shortly, without
            // using up a retry.
            _ if end.transient => {
                act.deferred += 1;
                act.retry_due_at = Some(now + TRANSIENT_DELAY.as_millis() as i64);
                tracing::warn!(
                    HF_JOB_ID = fields.0,
                    HF_CHAIN = fields.1,
                    HF_PROCESS = fields.2,
                    HF_ACTIVITY = fields.3,
                    HF_ATTEMPT = fields.4,
                    error = end.error.as_deref().unwrap_or(""),
                    "activity could not start; trying again shortly"
                );
                self.effects.push(Effect::Timer(
                    TRANSIENT_DELAY,
                    Command::RetryDue {
                        job_id: key.job_id,
                        idx: key.idx,
                        after: key.number,
                    },
                ));
                ActivityState::RetryWait
            }
            // Interrupted attempts (daemon stops and crashes) do not count
            // against `retries`.
            _ if act
                .attempts
                .saturating_sub(act.interruptions + act.deferred)
                <= activity.retries
                && !act.no_retry =>
            {
                let delay = activity.retry_delay_for(act.attempts);
                act.retry_due_at = Some(now.saturating_add(delay.as_millis() as i64));
                tracing::warn!(HF_JOB_ID = fields.0, HF_CHAIN = fields.1, HF_PROCESS = fields.2, HF_ACTIVITY = fields.3, HF_ATTEMPT = fields.4, HF_ERROR_ID = error_id.as_deref().unwrap_or(""), error = end.error.as_deref().unwrap_or(""), delay = %humantime::format_duration(delay), "job {} ({}): {}.{} failed: {} [{}]; retrying in {}", fields.0, fields.1, fields.2, fields.3, end.error.as_deref().unwrap_or("no reason given"), error_id.as_deref().unwrap_or("-"), humantime::format_duration(delay));
                self.effects.push(Effect::Timer(
                    delay,
                    Command::RetryDue {
                        job_id: key.job_id,
                        idx: key.idx,
                        after: key.number,
                    },
                ));
                ActivityState::RetryWait
            }
            _ => {
                tracing::error!(
                    HF_JOB_ID = fields.0,
                    HF_CHAIN = fields.1,
                    HF_PROCESS = fields.2,
                    HF_ACTIVITY = fields.3,
                    HF_ATTEMPT = fields.4,
                    HF_ERROR_ID = error_id.as_deref().unwrap_or(""),
                    error = end.error.as_deref().unwrap_or(""),
                    "job {} ({}) failed: {}.{} {} [{}]",
                    fields.0,
                    fields.1,
                    fields.2,
                    fields.3,
                    end.error.as_deref().unwrap_or("no reason given"),
                    error_id.as_deref().unwrap_or("-")
                );
                ActivityState::Failed
            }
        };
        self.emit_attempt_end(key, next, error_id.as_deref(), end.error.as_deref());
        self.set_activity_state(key.job_id, key.idx, next);
        self.effects.push(Effect::Changed(key.job_id));
        self.refresh(key.job_id);
        self.finish_if_done(key.job_id);
    }

    /// Move one activity to `state` and apply what follows from it: release
    /// or skip its dependants, count alerts, track what is unfinished.
    pub(super) fn set_activity_state(&mut self, id: u64, idx: usize, state: ActivityState) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let was_terminal = job.acts[idx].state().is_terminal();
        job.acts[idx].state = Some(state);
        self.ops.push(WriteOp::ActivityState {
            job_id: id,
            idx,
            state: state.as_str(),
        });
        let handler = job.chain.activities[idx].handler.is_some();
        if state.is_terminal() && !was_terminal {
            job.unfinished -= 1;
            if handler {
                job.handlers_unfinished -= 1;
            }
        }
        if state == ActivityState::Pending && job.acts[idx].waiting == 0 && job.may_start(idx) {
            job.ready.insert(idx);
        }
        if !state.is_terminal() || was_terminal {
            return;
        }
        let on_failure = job.chain.activities[idx].on_failure;
        if handler {
            if state == ActivityState::Failed && on_failure == OnFailure::Fail {
                self.skip_dependants(id, idx);
            } else if matches!(state, ActivityState::Succeeded | ActivityState::Failed) {
                self.release_dependants(id, idx);
            }
            self.handler_ended(id, idx, state);
            return;
        }
        match state {
            ActivityState::Failed if on_failure == OnFailure::Continue => {
                job.alerts += 1;
                let text = format!(
                    "{} failed; the job goes on (on_failure = \"continue\")",
                    job.chain.activities[idx].path
                );
                self.ops.push(self.outbox.continued(job, idx, &text));
                self.ops.push(WriteOp::JobAlert {
                    id,
                    alerts: job.alerts,
                    text,
                });
                self.release_dependants(id, idx);
            }
            ActivityState::Failed => {
                job.failed = true;
                self.skip_dependants(id, idx);
            }
            ActivityState::Succeeded => self.release_dependants(id, idx),
            _ => {}
        }
    }

    pub(super) fn release_dependants(&mut self, id: u64, idx: usize) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        for d in job.dependants[idx].clone() {
            let act = &mut job.acts[d];
            if !act.included {
                continue;
            }
            act.waiting = act.waiting.saturating_sub(1);
            if act.waiting == 0 && act.state() == ActivityState::Pending && job.may_start(d) {
                job.ready.insert(d);
            }
        }
    }

    pub(super) fn skip_dependants(&mut self, id: u64, idx: usize) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let mut stack = job.dependants[idx].clone();
        while let Some(d) = stack.pop() {
            let Some(job) = self.jobs.get_mut(&id) else {
                return;
            };
            let act = &job.acts[d];
            if !act.included || act.state() != ActivityState::Pending {
                continue;
            }
            stack.extend(job.dependants[d].iter().copied());
            job.ready.remove(&d);
            self.set_activity_state(id, d, ActivityState::Skipped);
        }
    }

    pub(super) fn retry_due(&mut self, id: u64, idx: usize, after: u32) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let act = &job.acts[idx];
        if act.state() != ActivityState::RetryWait || act.attempts != after {
            return;
        }
        self.set_activity_state(id, idx, ActivityState::Pending);
        self.refresh(id);
    }

    pub(super) fn cancel(&mut self, id: u64) -> CancelOutcome {
        let Some(job) = self.jobs.get(&id) else {
            return CancelOutcome {
                job_id: id,
                state: None,
                error: Some(format!(
                    "job {id} is not queued or running (finished, or does not exist)"
                )),
            };
        };
        if job.stop.is_some() || job.outcome.is_some() {
            // A second cancel, or one while the handlers run, stops them.
            let state = job.state;
            self.stop_handlers(id, Stop::Cancel, KillReason::Cancel);
            return CancelOutcome {
                job_id: id,
                state: Some(state),
                error: None,
            };
        }
        tracing::info!(HF_JOB_ID = id, HF_CHAIN = %job.chain.name, "job cancel requested");
        self.stop_job(id, Stop::Cancel, KillReason::Cancel);
        let state = self
            .jobs
            .get(&id)
            .map(|j| j.state)
            .unwrap_or(JobState::Cancelled);
        CancelOutcome {
            job_id: id,
            state: Some(state),
            error: None,
        }
    }

    pub(super) fn job_timeout(&mut self, id: u64) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if job.outcome.is_some() {
            self.stop_handlers(id, Stop::Timeout, KillReason::JobTimeout);
            return;
        }
        if job.stop.is_some() {
            return;
        }
        let timeout = job.chain.timeout.unwrap_or_default();
        tracing::error!(HF_JOB_ID = id, HF_CHAIN = %job.chain.name, "job timeout after {}", humantime::format_duration(timeout));
        self.ops.push(WriteOp::JobState {
            id,
            state: job.state.as_str(),
            started_at: None,
            finished_at: None,
            reason: Some(format!(
                "job timeout after {}",
                humantime::format_duration(timeout)
            )),
            alerts: job.alerts,
        });
        self.stop_job(id, Stop::Timeout, KillReason::JobTimeout);
    }

    /// Stop a job: what has not started is cancelled (or failed, for a
    /// timeout), running attempts are asked to stop.
    pub(super) fn stop_job(&mut self, id: u64, stop: Stop, reason: KillReason) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.stop = Some(stop);
        job.ready.clear();
        let not_started = if stop == Stop::Cancel {
            ActivityState::Cancelled
        } else {
            ActivityState::Skipped
        };
        let mut to_set = Vec::new();
        for (idx, act) in job.acts.iter_mut().enumerate() {
            // Handlers answer the stop once the graph is done.
            if !act.included || job.chain.activities[idx].handler.is_some() {
                continue;
            }
            match act.state() {
                ActivityState::Pending | ActivityState::RetryWait => to_set.push(idx),
                ActivityState::Running => {
                    if let Some(kill) = act.kill.take() {
                        self.effects.push(Effect::Kill(kill, reason));
                    }
                }
                _ => {}
            }
        }
        for idx in to_set {
            self.set_activity_state(id, idx, not_started);
        }
        self.stop_fanouts(id, reason);
        self.durable = true;
        self.effects.push(Effect::Changed(id));
        self.refresh(id);
        self.finish_if_done(id);
    }

    /// End the job if nothing of it is unfinished.
    pub(super) fn finish_if_done(&mut self, id: u64) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if job.running > 0 {
            return;
        }
        if job.outcome.is_none() && job.handlers_unfinished > 0 {
            self.decide_handlers(id);
        }
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if job.unfinished > 0 || job.running > 0 {
            return;
        }
        // Progress reported in this batch is written before the job leaves
        // memory; `flush_progress` would no longer find it.
        let dirty: Vec<usize> = self
            .progress_dirty
            .iter()
            .filter(|(j, _)| *j == id)
            .map(|(_, idx)| *idx)
            .collect();
        for idx in dirty {
            self.progress_dirty.remove(&(id, idx));
            self.write_progress(id, idx);
        }
        // So are checkpoints and outputs.
        let dirty: Vec<usize> = (self.checkpoint_dirty.iter())
            .chain(&self.outputs_dirty)
            .filter(|(j, _)| *j == id)
            .map(|(_, idx)| *idx)
            .collect();
        for idx in dirty {
            self.write_control(id, idx);
        }
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        let state = job.final_state();
        let now = store::now_ms();
        self.ops.extend(self.outbox.finished(&job, state, now));
        self.ops.push(WriteOp::JobState {
            id,
            state: state.as_str(),
            started_at: None,
            finished_at: Some(now),
            reason: None,
            alerts: job.alerts,
        });
        if let Some(timer) = &job.timeout_timer {
            timer.abort();
        }
        let chain = job.chain.name.clone();
        let queue_key = job.concurrency_key();
        if job.admitted {
            if let Some(n) = self.admitted_per_chain.get_mut(&queue_key) {
                *n = n.saturating_sub(1);
            }
        } else if let Some(queue) = self.queued.get_mut(&queue_key) {
            queue.remove(&(Reverse(job.priority), id));
        }
        self.dirty_chains.insert(queue_key);
        self.ready_jobs.remove(&(Reverse(job.priority), id));
        crate::metrics::global().job_ended(&chain, state.as_str());
        match state {
            JobState::Failed => {
                tracing::error!(HF_JOB_ID = id, HF_CHAIN = %chain, alerts = job.alerts, "job {id} ({chain}) finished: failed")
            }
            _ => {
                tracing::info!(HF_JOB_ID = id, HF_CHAIN = %chain, alerts = job.alerts, "job {id} ({chain}) finished: {}", state.as_str())
            }
        }
        self.effects.push(Effect::Changed(id));
        self.schedule_job_finished(id);
    }
}

/// The stored row of an ended attempt (an activity's or a fan-out item's),
/// counted in the attempt metrics as it is made.
pub(super) fn ended_attempt(
    chain: &str,
    key: AttemptKey,
    end: &AttemptEnd,
    error_id: Option<String>,
    error_message: Option<String>,
    now: i64,
) -> store::AttemptEnd {
    crate::metrics::global().attempt_ended(
        chain,
        end.state.as_str(),
        end.resources
            .as_ref()
            .map(|r| std::time::Duration::from_millis(r.wall_ms)),
    );
    store::AttemptEnd {
        job_id: key.job_id,
        idx: key.idx,
        number: key.number,
        state: end.state.as_str(),
        exit_code: end.exit_code,
        signal: end.signal,
        error_id,
        error: end.error.clone(),
        finished_at: now,
        log_bytes: end.log_bytes,
        log_dropped: end.log_dropped,
        error_tail: end.error_tail.clone(),
        error_message,
        resources: end.resources.clone(),
    }
}
