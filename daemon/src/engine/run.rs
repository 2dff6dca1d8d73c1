//! The engine's transitions: submitting, admitting, starting activities,
//! reacting to attempt ends and control messages, cancelling and finishing.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::collections::HashSet;

use holdfast_api::{ActivityState, AttemptState, CancelOutcome, JobState};
use holdfast_workflow::OnFailure;
use holdfast_workflow::params::{env_name, fits_environment, value_as_env};
use holdfast_workflow::template::{JobContext, RenderContext, render_activity};
use tokio::sync::oneshot;

use super::job::{JobRun, Stop, prepare};
use super::{Caller, Command, Effect, Engine, PendingJob, SubmitError, SubmitRequest};
use crate::executor::{
    AttemptEnd, AttemptKey, AttemptSpec, CONTROL_FD, ControlMessage, KillReason, logs,
};
use crate::store::{self, NewJob, StoredJob, WriteOp};

/// How long an activity that could not start for lack of file descriptors
/// waits before it is tried again.
const TRANSIENT_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

impl Engine {
    pub(super) fn submit(
        &mut self,
        request: SubmitRequest,
        reply: oneshot::Sender<Result<u64, SubmitError>>,
    ) {
        if self.shutting_down.is_some() {
            let _ = reply.send(Err(SubmitError::ShuttingDown));
            return;
        }
        if let Some(key) = &request.request_id {
            match self.earlier_request(&request, key) {
                Ok(super::request::Earlier::None) => {}
                Ok(super::request::Earlier::Job(id)) => {
                    let _ = reply.send(Ok(id));
                    return;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let prepared = {
            let registry = self.registry.borrow();
            prepare(
                &registry,
                &request.target,
                &request.params,
                None,
                request.tenant.as_deref(),
                &request.caller,
            )
        };
        let super::job::Prepared {
            chain,
            included,
            params,
            secret,
        } = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let id = self.next_job_id;
        self.next_job_id += 1;
        let mut job = JobRun::new(
            id,
            chain.clone(),
            request.target.clone(),
            &included,
            params.clone(),
            request.tenant.clone(),
            request.priority,
        );
        job.simulated = request.simulate;
        job.secret = secret;
        if let Err(e) = self.record_new_job(&job, &request.caller, None) {
            let _ = reply.send(Err(e));
            return;
        }
        if let Some(key) = &request.request_id {
            self.record_request(id, &request, &chain, key);
        }
        self.durable = true;
        tracing::info!(
            HF_JOB_ID = id,
            HF_CHAIN = %chain.name,
            target = %request.target,
            user = %request.caller.user,
            "job submitted"
        );
        self.pending_jobs.push(PendingJob { job, reply });
    }

    /// The writes that create a job: its definition version, its row and
    /// one row per included activity.
    ///
    /// Secret values are sealed into a row of their own and the stored
    /// parameters show them as `***`; when they cannot be sealed nothing is
    /// recorded and the submission is refused.
    pub(super) fn record_new_job(
        &mut self,
        job: &JobRun,
        caller: &Caller,
        retry_of: Option<u64>,
    ) -> Result<(), SubmitError> {
        let secrets = if job.secret.is_empty() {
            None
        } else {
            let values: serde_json::Map<String, serde_json::Value> = job
                .params
                .iter()
                .filter(|(name, _)| job.secret.contains(*name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            let sealer = self.secrets.as_ref().map_err(|e| {
                SubmitError::Unavailable(format!("secret parameters cannot be kept: {e}"))
            })?;
            Some(
                sealer
                    .seal(job.id, &values)
                    .map_err(|e| SubmitError::Unavailable(e.to_string()))?,
            )
        };
        let chain = &job.chain;
        self.ops.push(WriteOp::Definition {
            version: chain.version.clone(),
            chain: chain.name.clone(),
            file: chain.file.display().to_string(),
            source: chain.source.clone(),
            loaded_at: store::now_ms(),
        });
        self.ops.push(WriteOp::InsertJob(Box::new(NewJob {
            id: job.id,
            target: job.target.clone(),
            chain: chain.name.clone(),
            version: chain.version.clone(),
            params: serde_json::Value::Object(job.shown_params()).to_string(),
            secrets,
            tenant: job.tenant.clone(),
            priority: job.priority,
            submitted_by: caller.user.clone(),
            submitter_uid: Some(caller.uid),
            submitter_gid: Some(caller.gid),
            submitter_pid: caller.pid,
            retry_of,
            simulated: job.simulated,
            created_at: store::now_ms(),
            activities: chain
                .activities
                .iter()
                .enumerate()
                .filter(|(idx, _)| job.acts[*idx].included)
                .map(|(idx, a)| (idx, a.path.clone()))
                .collect(),
        })));
        self.ops.push(self.outbox.submitted(job));
        self.durable = true;
        Ok(())
    }

    /// A stored job's parameters with its sealed secret values put back,
    /// and the names of those values.
    pub(super) fn stored_params(
        &self,
        stored: &StoredJob,
    ) -> Result<(serde_json::Map<String, serde_json::Value>, BTreeSet<String>), String> {
        let mut params = stored.params.clone();
        let Some(sealed) = &stored.secrets else {
            return Ok((params, BTreeSet::new()));
        };
        let sealer = self
            .secrets
            .as_ref()
            .map_err(|e| format!("its secret parameters cannot be read: {e}"))?;
        let values = sealer.open(stored.id, sealed).map_err(|e| e.to_string())?;
        let names = values.keys().cloned().collect();
        params.extend(values);
        Ok((params, names))
    }

    /// A new job from a finished one: same definition version, target and
    /// parameters; what succeeded is kept with its outputs, the rest runs
    /// again with its last checkpoint. What a handler `undoes` runs again
    /// without its checkpoint; with `from`, that process and everything
    /// after it runs again too. Handlers always start afresh.
    pub(super) fn reprocess(
        &mut self,
        original: StoredJob,
        from_start: bool,
        from: Option<String>,
        caller: Caller,
        reply: oneshot::Sender<Result<u64, SubmitError>>,
    ) {
        let refuse = |reply: oneshot::Sender<Result<u64, SubmitError>>, message: String| {
            let _ = reply.send(Err(SubmitError::InvalidState(message)));
        };
        if self.shutting_down.is_some() {
            let _ = reply.send(Err(SubmitError::ShuttingDown));
            return;
        }
        if !original.state.is_terminal() {
            return refuse(
                reply,
                format!(
                    "job {} is still {}; wait for it or cancel it first",
                    original.id,
                    original.state.as_str()
                ),
            );
        }
        let chain = match self.pinned_chain(
            &original.version,
            super::recovery::chain_of(&original.target),
        ) {
            Ok(Some(chain)) => chain,
            Ok(None) => {
                return refuse(
                    reply,
                    format!(
                        "the definition job {} ran with is no longer readable",
                        original.id
                    ),
                );
            }
            Err(e) => {
                let _ = reply.send(Err(SubmitError::Unavailable(e.to_string())));
                return;
            }
        };
        // The pinned definition runs only if today's policy still allows it.
        if let Err(message) = self.may_still_run(&chain, original.tenant.as_deref(), &caller) {
            let _ = reply.send(Err(SubmitError::PermissionDenied(message)));
            return;
        }
        let mut included = vec![false; chain.activities.len()];
        for a in &original.activities {
            if let Some(slot) = included.get_mut(a.idx) {
                *slot = true;
            }
        }
        // A reprocess uses the connection profiles again: their `allow` as
        // it is now. A profile missing now is the attempt's business.
        if let Err(e) = crate::connections::check_reprocess(
            &self.registry.borrow(),
            &chain,
            &included,
            original.tenant.as_deref(),
            &caller,
        ) {
            let _ = reply.send(Err(e));
            return;
        }
        let (params, secret) = match self.stored_params(&original) {
            Ok(found) => found,
            Err(message) => return refuse(reply, format!("job {}: {message}", original.id)),
        };
        let id = self.next_job_id;
        let mut job = JobRun::new(
            id,
            chain,
            original.target.clone(),
            &included,
            params,
            original.tenant.clone(),
            original.priority,
        );
        job.secret = secret;
        // A reprocess of a simulated job is simulated too.
        job.simulated = original.simulated;
        let rerun = match from.as_deref().map(|p| job.rerun_from(p)) {
            None => vec![false; job.acts.len()],
            Some(Ok(rerun)) => rerun,
            Some(Err(message)) => return refuse(reply, message),
        };
        let mut carried = Vec::new();
        for a in &original.activities {
            let handler = job
                .chain
                .activities
                .get(a.idx)
                .is_some_and(|d| d.handler.is_some());
            let Some(act) = job.acts.get_mut(a.idx) else {
                continue;
            };
            if handler || a.undone {
                continue;
            }
            let from_here = rerun.get(a.idx).copied().unwrap_or(false);
            if from_here && a.state == ActivityState::Succeeded {
                continue;
            }
            if !from_start && a.state == ActivityState::Succeeded {
                act.state = Some(ActivityState::Succeeded);
                act.outputs = a.outputs.clone();
                act.progress = Some(100.0);
                carried.push(WriteOp::ActivityState {
                    job_id: id,
                    idx: a.idx,
                    state: ActivityState::Succeeded.as_str(),
                });
                if !a.outputs.is_empty() {
                    carried.push(WriteOp::ActivityOutputs {
                        job_id: id,
                        idx: a.idx,
                        outputs: serde_json::Value::Object(a.outputs.clone()).to_string(),
                    });
                }
            } else if !from_start && let Some(checkpoint) = &a.checkpoint {
                act.checkpoint = Some(checkpoint.clone());
                carried.push(WriteOp::ActivityCheckpoint {
                    job_id: id,
                    idx: a.idx,
                    checkpoint: checkpoint.to_string(),
                });
            }
        }
        job.recount();
        if job.unfinished == job.handlers_unfinished {
            return refuse(
                reply,
                format!(
                    "every activity of job {} succeeded; nothing to re-run (use --from-start)",
                    original.id
                ),
            );
        }
        self.next_job_id += 1;
        if let Err(e) = self.record_new_job(&job, &caller, Some(original.id)) {
            let _ = reply.send(Err(e));
            return;
        }
        self.ops.append(&mut carried);
        tracing::info!(HF_JOB_ID = id, HF_CHAIN = %job.chain.name, retry_of = original.id, from_start, user = %caller.user, "job submitted (reprocess)");
        self.pending_jobs.push(PendingJob { job, reply });
    }

    /// Put a committed job into the queue of its chain.
    pub(super) fn enqueue(&mut self, job: JobRun) {
        let chain = job.chain.name.clone();
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
                let Some(&(prio, id)) = queue.first() else {
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

    fn start_activity(&mut self, id: u64, idx: usize) {
        let now = store::now_ms();
        let settings = self.settings.clone();
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let chain = job.chain.clone();
        let activity = &chain.activities[idx];
        let outputs = job.outputs_for(idx);
        let act = &mut job.acts[idx];
        act.attempts += 1;
        act.no_retry = false;
        act.error_message = None;
        act.state = Some(ActivityState::Running);
        let number = act.attempts;
        let key = AttemptKey {
            job_id: id,
            idx,
            number,
        };
        if job.state == JobState::Queued {
            job.state = JobState::Running;
            job.started_at = Some(now);
            self.ops.push(WriteOp::JobState {
                id,
                state: JobState::Running.as_str(),
                started_at: Some(now),
                finished_at: None,
                reason: None,
                alerts: job.alerts,
            });
            tracing::info!(HF_JOB_ID = id, HF_CHAIN = %chain.name, "job started");
            self.ops.push(self.outbox.started(job));
            self.effects.push(Effect::Changed(id));
            if let Some(timeout) = chain.timeout {
                self.effects.push(Effect::JobTimer(id, timeout));
            }
        }
        self.ops.push(WriteOp::InsertAttempt {
            job_id: id,
            idx,
            number,
            started_at: now,
        });
        self.ops.push(WriteOp::ActivityState {
            job_id: id,
            idx,
            state: ActivityState::Running.as_str(),
        });
        self.ops
            .push(self.outbox.activity_started(job, idx, number));
        job.running += 1;
        self.running += 1;

        let context = RenderContext {
            params: job.params.clone(),
            job: JobContext {
                id,
                chain: chain.name.clone(),
                target: job.target.clone(),
                tenant: job.tenant.clone(),
                attempt: number,
                outcome: activity.handler.and_then(|_| job.outcome_context()),
            },
            outputs,
            secret_dir: (!activity.secret_files.is_empty()).then(|| {
                crate::secret_files::attempt_dir(&settings.socket, key)
                    .display()
                    .to_string()
            }),
        };
        let rendered = match render_activity(activity, &context) {
            Ok(r) => r,
            Err(e) => {
                // A template that cannot render will not render on a retry
                // either: fail the activity at once.
                tracing::error!(HF_JOB_ID = id, HF_CHAIN = %chain.name, HF_PROCESS = %activity.process, HF_ACTIVITY = %activity.name, HF_ATTEMPT = number, error = %e, "cannot render the activity's command");
                let end = AttemptEnd::spawn_error(e.to_string());
                if let Some(act) = self.jobs.get_mut(&id).map(|j| &mut j.acts[idx]) {
                    act.no_retry = true;
                }
                self.on_attempt_end(key, end);
                return;
            }
        };
        let identity = match crate::run_as::user_for(activity, &settings) {
            None => None,
            Some(user) => match crate::run_as::resolve(
                user,
                activity.group.as_deref(),
                &settings.run_as_groups,
            ) {
                Ok(identity) => Some(identity),
                Err(e @ crate::run_as::RunAsError::OutOfFiles { .. }) => {
                    self.on_attempt_end(key, AttemptEnd::out_of_files(e.to_string()));
                    return;
                }
                Err(e) => {
                    let message = e.to_string();
                    tracing::error!(HF_JOB_ID = id, HF_CHAIN = %chain.name, HF_PROCESS = %activity.process, HF_ACTIVITY = %activity.name, HF_ATTEMPT = number, %message, "cannot run the activity as its user");
                    self.on_attempt_end(key, AttemptEnd::spawn_error(message));
                    return;
                }
            },
        };
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if let Err(message) = write_secret_files(job, activity, key, &settings, identity.as_ref()) {
            tracing::error!(HF_JOB_ID = id, HF_CHAIN = %chain.name, HF_PROCESS = %activity.process, HF_ACTIVITY = %activity.name, HF_ATTEMPT = number, %message, "cannot start the activity");
            self.on_attempt_end(key, AttemptEnd::spawn_error(message));
            return;
        }
        let registry = self.registry.borrow().clone();
        let connections = match crate::connections::for_attempt(
            &registry,
            activity,
            job.tenant.as_deref(),
            job.simulated,
        ) {
            Ok(connections) => connections,
            Err(e) => {
                let message = e.to_string();
                tracing::error!(HF_JOB_ID = id, HF_CHAIN = %chain.name, HF_PROCESS = %activity.process, HF_ACTIVITY = %activity.name, HF_ATTEMPT = number, %message, "cannot give the activity its connections");
                self.on_attempt_end(key, AttemptEnd::spawn_error(message));
                return;
            }
        };
        let act = &job.acts[idx];
        let mut env = vec![
            ("HF_JOB_ID".to_string(), id.to_string()),
            ("HF_CHAIN".to_string(), chain.name.clone()),
            ("HF_PROCESS".to_string(), activity.process.clone()),
            ("HF_ACTIVITY".to_string(), activity.name.clone()),
            ("HF_ATTEMPT".to_string(), number.to_string()),
            (
                "HF_TENANT".to_string(),
                job.tenant.clone().unwrap_or_default(),
            ),
            // Secrets travel only in their own HF_PARAM_<NAME>.
            (
                "HF_PARAMS".to_string(),
                serde_json::Value::Object(job.shown_params()).to_string(),
            ),
            ("HF_CONTROL_FD".to_string(), CONTROL_FD.to_string()),
            // Which daemon started it: recovery kills leftovers of its own
            // jobs only, never those of another daemon on the host.
            (
                "HF_DAEMON".to_string(),
                settings.database().display().to_string(),
            ),
        ];
        for (name, value) in &job.params {
            env.push((env_name(name), value_as_env(value)));
        }
        if activity.handler.is_some() {
            env.extend(job.outcome_env());
        }
        if let Some(checkpoint) = &act.checkpoint {
            let checkpoint = checkpoint.to_string();
            // Checkpoints that cannot be delivered are refused at fd 3; one
            // stored by an older daemon is left out rather than failing
            // every attempt with "Argument list too long".
            if fits_environment("HF_CHECKPOINT", checkpoint.len()) {
                env.push(("HF_CHECKPOINT".to_string(), checkpoint));
            } else {
                tracing::warn!(HF_JOB_ID = id, HF_CHAIN = %chain.name, HF_PROCESS = %activity.process, HF_ACTIVITY = %activity.name, HF_ATTEMPT = number, bytes = checkpoint.len(), "checkpoint too large for HF_CHECKPOINT; the attempt starts without it");
            }
        }
        env.extend(rendered.env);
        env.extend(connections.env);
        let spec = AttemptSpec {
            key,
            path: activity.path.clone(),
            argv: rendered.argv,
            env,
            working_dir: rendered.working_dir,
            timeout: activity.timeout,
            kill_grace: settings.kill_grace,
            log_path: logs::log_path(&settings.logs_dir(), id, &activity.path, number),
            log_max_bytes: settings.log_max_bytes,
            simulated: job
                .simulated
                .then(|| activity.simulate.clone().unwrap_or_default()),
            caps: crate::caps::plan(
                activity,
                self.cgroups.as_ref().map(|c| c.controllers()),
                crate::run_as::identity_is_root(identity.as_ref()),
            )
            .0,
            identity,
            cgroups: self.cgroups.clone(),
            journal: chain.journal,
            secrets: job
                .params
                .iter()
                .filter(|(name, _)| job.secret.contains(*name))
                .map(|(_, value)| value_as_env(value))
                .chain(connections.secrets)
                .collect(),
            outputs: act.outputs.clone(),
        };
        let (kill_tx, kill_rx) = oneshot::channel();
        if let Some(job) = self.jobs.get_mut(&id) {
            job.acts[idx].kill = Some(kill_tx);
        }
        tracing::info!(HF_JOB_ID = id, HF_CHAIN = %chain.name, HF_PROCESS = %activity.process, HF_ACTIVITY = %activity.name, HF_ATTEMPT = number, "activity started");
        self.effects.push(Effect::Spawn(Box::new(spec), kill_rx));
        self.effects.push(Effect::Changed(id));
    }

    pub(super) fn on_attempt_end(&mut self, key: AttemptKey, end: AttemptEnd) {
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
        self.ops
            .push(WriteOp::AttemptEnd(Box::new(store::AttemptEnd {
                job_id: key.job_id,
                idx: key.idx,
                number: key.number,
                state: end.state.as_str(),
                exit_code: end.exit_code,
                signal: end.signal,
                error_id: error_id.clone(),
                error: end.error.clone(),
                finished_at: now,
                log_bytes: end.log_bytes,
                log_dropped: end.log_dropped,
                error_tail: end.error_tail.clone(),
                error_message,
            })));
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
                    "activity succeeded"
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
                tracing::warn!(HF_JOB_ID = fields.0, HF_CHAIN = fields.1, HF_PROCESS = fields.2, HF_ACTIVITY = fields.3, HF_ATTEMPT = fields.4, HF_ERROR_ID = error_id.as_deref().unwrap_or(""), error = end.error.as_deref().unwrap_or(""), delay = %humantime::format_duration(delay), "activity failed; retrying");
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
                    "activity failed"
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

    fn release_dependants(&mut self, id: u64, idx: usize) {
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
    fn stop_job(&mut self, id: u64, stop: Stop, reason: KillReason) {
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
        if job.admitted {
            if let Some(n) = self.admitted_per_chain.get_mut(&chain) {
                *n = n.saturating_sub(1);
            }
        } else if let Some(queue) = self.queued.get_mut(&chain) {
            queue.remove(&(Reverse(job.priority), id));
        }
        self.dirty_chains.insert(chain.clone());
        self.ready_jobs.remove(&(Reverse(job.priority), id));
        match state {
            JobState::Failed => {
                tracing::error!(HF_JOB_ID = id, HF_CHAIN = %chain, alerts = job.alerts, "job finished: failed")
            }
            _ => {
                tracing::info!(HF_JOB_ID = id, HF_CHAIN = %chain, alerts = job.alerts, "job finished: {}", state.as_str())
            }
        }
        self.effects.push(Effect::Changed(id));
        self.schedule_job_finished(id);
    }

    pub(super) fn on_control(&mut self, key: AttemptKey, message: ControlMessage) {
        let Some(job) = self.jobs.get_mut(&key.job_id) else {
            return;
        };
        let Some(act) = job.acts.get_mut(key.idx) else {
            return;
        };
        if act.attempts != key.number {
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
                let path = &job.chain.activities[key.idx].path;
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
    }

    /// Queue the write of one activity's latest checkpoint and outputs,
    /// whichever changed.
    fn write_control(&mut self, job_id: u64, idx: usize) {
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
    fn write_progress(&mut self, job_id: u64, idx: usize) {
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

/// The files `secret_file("name")` names for this attempt, written before
/// it starts (removed in `on_attempt_end`).
fn write_secret_files(
    job: &JobRun,
    activity: &holdfast_workflow::Activity,
    key: AttemptKey,
    settings: &crate::settings::Settings,
    identity: Option<&crate::run_as::Identity>,
) -> Result<(), String> {
    if activity.secret_files.is_empty() {
        return Ok(());
    }
    let mut files = Vec::with_capacity(activity.secret_files.len());
    for name in &activity.secret_files {
        let Some(value) = job.params.get(name) else {
            return Err(format!(
                "secret parameter {name:?} has no value in this job, so secret_file({name:?}) \
                 has nothing to hold: submit it"
            ));
        };
        files.push((name.clone(), value_as_env(value)));
    }
    crate::secret_files::write(
        &crate::secret_files::attempt_dir(&settings.socket, key),
        &files,
        identity,
    )
}
