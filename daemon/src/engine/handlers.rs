//! A job's handlers (`[handler.on_failure]`, ...): the decision to run them
//! once the job's graph is done (committed like any transition), which of
//! their activities may start, what they see of the outcome, `undoes`, and
//! stopping them.

use holdfast_api::{ActivityState, JobState};
use holdfast_workflow::HandlerKind;
use holdfast_workflow::template::JobOutcome;
use serde_json::{Value, json};

use super::Engine;
use super::job::{ActError, JobRun, Stop};
use super::{Command, Effect};
use crate::executor::KillReason;
use crate::store::{StoredAttempt, WriteOp};

/// The handler that answers an outcome (on_exit runs after it, always).
fn handler_for(outcome: JobState) -> HandlerKind {
    match outcome {
        JobState::Succeeded => HandlerKind::OnSuccess,
        JobState::Cancelled => HandlerKind::OnCancel,
        _ => HandlerKind::OnFailure,
    }
}

/// What a stored attempt said when it failed, for `job.errors` after a
/// restart.
pub(super) fn error_of_stored(attempt: &StoredAttempt) -> Option<ActError> {
    attempt.error_id.as_ref().map(|error_id| ActError {
        error_id: error_id.clone(),
        error: attempt.error.clone(),
        error_tail: attempt.error_tail.clone(),
        error_message: attempt.error_message.clone(),
    })
}

impl JobRun {
    /// True when activity `idx` may start once its dependencies are done:
    /// the job's own activities until the job is stopped or its outcome
    /// decided; a handler's only after that decision, for the handler of
    /// the outcome, then on_exit, and never once the handlers are stopped.
    pub fn may_start(&self, idx: usize) -> bool {
        match self.chain.activities[idx].handler {
            None => self.stop.is_none() && self.outcome.is_none(),
            Some(kind) => match self.outcome {
                None => false,
                Some(_) if self.handlers_stop.is_some() => false,
                Some(outcome) if kind == handler_for(outcome) => true,
                Some(outcome) => {
                    kind == HandlerKind::OnExit && self.handler_done(handler_for(outcome))
                }
            },
        }
    }

    /// Whether any activity of the job could be started now (used to keep
    /// the job among those with ready work).
    pub fn startable(&self) -> bool {
        match self.outcome {
            None => self.stop.is_none(),
            Some(_) => self.handlers_stop.is_none(),
        }
    }

    /// How the job is being stopped, as far as activity `idx` is concerned.
    pub fn stop_for(&self, idx: usize) -> Option<Stop> {
        match self.chain.activities[idx].handler {
            None => self.stop,
            Some(_) => self.handlers_stop,
        }
    }

    /// Every included activity of handler `kind` is finished.
    fn handler_done(&self, kind: HandlerKind) -> bool {
        (self.chain.activities.iter().enumerate())
            .filter(|(i, a)| a.handler == Some(kind) && self.acts[*i].included)
            .all(|(i, _)| self.acts[i].state().is_terminal())
    }

    /// The outcome once the graph is done. A job whose activities were
    /// cancelled by a stop the daemon did not live to finish ends cancelled.
    fn decided_outcome(&self) -> JobState {
        let cancelled = (self.chain.activities.iter().enumerate())
            .any(|(i, a)| a.handler.is_none() && self.acts[i].state() == ActivityState::Cancelled);
        match self.final_state() {
            JobState::Succeeded if cancelled => JobState::Cancelled,
            state => state,
        }
    }

    /// What a handler's templates see as `job.state`, `job.failed` and
    /// `job.errors`.
    pub fn outcome_context(&self) -> Option<JobOutcome> {
        let outcome = self.outcome?;
        let mut failed = Vec::new();
        let mut errors = Vec::new();
        for (idx, activity) in self.chain.activities.iter().enumerate() {
            let act = &self.acts[idx];
            if activity.handler.is_some() || act.state() != ActivityState::Failed {
                continue;
            }
            failed.push(activity.path.clone());
            let error = act.last_error.clone().unwrap_or_default();
            errors.push(json!({
                "path": activity.path,
                "error_id": error.error_id,
                "error": error.error_message.or(error.error),
                "error_tail": error.error_tail,
            }));
        }
        Some(JobOutcome {
            state: outcome.as_str().to_string(),
            failed,
            errors,
        })
    }

    /// Activity `idx`s of process `name` and of everything after it, for
    /// `job.retry --from`.
    pub fn rerun_from(&self, name: &str) -> Result<Vec<bool>, String> {
        if self.chain.process(name).is_none_or(|p| p.handler.is_some()) {
            let known: Vec<&str> = (self.chain.processes.iter())
                .filter(|p| p.handler.is_none())
                .map(|p| p.name.as_str())
                .collect();
            return Err(format!(
                "chain {} has no process {name:?} to re-run from; processes: {}",
                self.chain.name,
                known.join(", ")
            ));
        }
        let mut rerun = vec![false; self.acts.len()];
        let mut stack: Vec<usize> = (self.chain.activities.iter().enumerate())
            .filter(|(_, a)| a.process == name)
            .map(|(i, _)| i)
            .collect();
        while let Some(idx) = stack.pop() {
            if !std::mem::replace(&mut rerun[idx], true) {
                stack.extend(self.dependants[idx].iter().copied());
            }
        }
        Ok(rerun)
    }

    /// `HF_JOB_STATE` and `HF_FAILED` (paths, one a line) for a handler.
    pub fn outcome_env(&self) -> Vec<(String, String)> {
        match self.outcome_context() {
            None => Vec::new(),
            Some(outcome) => vec![
                ("HF_JOB_STATE".to_string(), outcome.state),
                ("HF_FAILED".to_string(), outcome.failed.join("\n")),
                (
                    "HF_ERRORS".to_string(),
                    Value::Array(outcome.errors).to_string(),
                ),
            ],
        }
    }
}

impl Engine {
    /// Once nothing of the job's own graph is left: decide its outcome and
    /// which handlers answer it, and commit that before any of them starts.
    pub(super) fn decide_handlers(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.outcome.is_some() || job.handlers_unfinished == 0 || job.running > 0 {
            return;
        }
        if job.unfinished != job.handlers_unfinished {
            return;
        }
        let outcome = job.decided_outcome();
        job.outcome = Some(outcome);
        // A job cancelled while queued never ran: there is nothing to
        // answer, so no handler runs.
        let answering = (job.state != JobState::Queued).then(|| handler_for(outcome));
        self.ops.push(WriteOp::JobOutcome {
            id,
            outcome: outcome.as_str(),
        });
        self.durable = true;
        tracing::info!(HF_JOB_ID = id, HF_CHAIN = %job.chain.name, outcome = outcome.as_str(), "job graph done; running its handlers");
        let skipped: Vec<usize> = (job.chain.activities.iter().enumerate())
            .filter(|(i, a)| {
                job.acts[*i].included
                    && a.handler.is_some_and(|k| {
                        answering.is_none_or(|answering| k != answering && k != HandlerKind::OnExit)
                    })
                    && !job.acts[*i].state().is_terminal()
            })
            .map(|(i, _)| i)
            .collect();
        for idx in skipped {
            self.set_activity_state(id, idx, ActivityState::Skipped);
        }
        if outcome == JobState::Cancelled && answering.is_some() {
            // A cancelled job's handlers get `kill_grace` to clean up.
            self.effects.push(Effect::Timer(
                self.settings.kill_grace,
                Command::HandlersDue { job_id: id },
            ));
        }
        self.effects.push(Effect::Changed(id));
        self.open_handlers(id);
    }

    /// Make ready every handler activity that may start now.
    pub(super) fn open_handlers(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.outcome.is_none() {
            return;
        }
        for idx in 0..job.acts.len() {
            let act = &job.acts[idx];
            if act.included
                && job.chain.activities[idx].handler.is_some()
                && act.state() == ActivityState::Pending
                && act.waiting == 0
                && job.may_start(idx)
            {
                job.ready.insert(idx);
            }
        }
        self.refresh(id);
    }

    /// Stop the handlers: what has not started is cancelled, running
    /// attempts are asked to stop. The job's outcome stays.
    pub(super) fn stop_handlers(&mut self, id: u64, stop: Stop, reason: KillReason) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.handlers_stop.is_some() {
            return;
        }
        job.handlers_stop = Some(stop);
        tracing::warn!(HF_JOB_ID = id, HF_CHAIN = %job.chain.name, "stopping the job's handlers");
        let mut to_cancel = Vec::new();
        for (idx, act) in job.acts.iter_mut().enumerate() {
            if !act.included || job.chain.activities[idx].handler.is_none() {
                continue;
            }
            job.ready.remove(&idx);
            match act.state() {
                ActivityState::Pending | ActivityState::RetryWait => to_cancel.push(idx),
                ActivityState::Running => {
                    if let Some(kill) = act.kill.take() {
                        self.effects.push(Effect::Kill(kill, reason));
                    }
                }
                _ => {}
            }
        }
        for idx in to_cancel {
            self.set_activity_state(id, idx, ActivityState::Cancelled);
        }
        self.durable = true;
        self.effects.push(Effect::Changed(id));
        self.refresh(id);
        self.finish_if_done(id);
    }

    /// A cancelled job's handlers had their `kill_grace`.
    pub(super) fn handlers_due(&mut self, id: u64) {
        if self.jobs.get(&id).is_some_and(|j| j.outcome.is_some()) {
            self.stop_handlers(id, Stop::Cancel, KillReason::Cancel);
        }
    }

    /// A handler activity ended for good: a failure is an alert (the job's
    /// outcome stays), a success rolls back what it `undoes`.
    pub(super) fn handler_ended(&mut self, id: u64, idx: usize, state: ActivityState) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let activity = &job.chain.activities[idx];
        match state {
            ActivityState::Failed => {
                job.alerts += 1;
                self.ops.push(WriteOp::JobAlert {
                    id,
                    alerts: job.alerts,
                    text: format!(
                        "handler {} failed; the job stays {}",
                        activity.path,
                        job.outcome.unwrap_or(JobState::Failed).as_str()
                    ),
                });
            }
            ActivityState::Succeeded => {
                for &undone in &activity.undoes {
                    if job.acts.get(undone).is_some_and(|a| a.included) {
                        self.ops.push(WriteOp::ActivityUndone {
                            job_id: id,
                            idx: undone,
                        });
                    }
                }
            }
            _ => {}
        }
        self.open_handlers(id);
    }
}
