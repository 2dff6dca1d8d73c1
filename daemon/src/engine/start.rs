//! Starting one attempt of an activity: the attempt committed, its
//! templates rendered, its user, secret files, connections and
//! environment, and the spawn handed to the executor.

use holdfast_api::{ActivityState, JobState};
use holdfast_workflow::params::{env_name, fits_environment, value_as_env};
use holdfast_workflow::template::{JobContext, RenderContext, render_activity};
use tokio::sync::oneshot;

use super::job::JobRun;
use super::{Effect, Engine};
use crate::executor::{AttemptEnd, AttemptKey, AttemptSpec, CONTROL_FD, logs};
use crate::store::{self, WriteOp};

impl Engine {
    pub(super) fn start_activity(&mut self, id: u64, idx: usize) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.chain.activities[idx].foreach.is_some() {
            self.start_next_item(id, idx);
            return;
        }
        self.job_started(id);
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let act = &mut job.acts[idx];
        act.attempts += 1;
        act.no_retry = false;
        act.error_message = None;
        act.state = Some(ActivityState::Running);
        let number = act.attempts;
        self.ops.push(WriteOp::InsertAttempt {
            job_id: id,
            idx,
            number,
            started_at: store::now_ms(),
        });
        self.ops.push(WriteOp::ActivityState {
            job_id: id,
            idx,
            state: ActivityState::Running.as_str(),
        });
        self.ops
            .push(self.outbox.activity_started(job, idx, number));
        self.launch(AttemptKey {
            job_id: id,
            idx,
            number,
            item: None,
        });
    }

    /// The job's first start: it becomes `running` (committed with the
    /// attempt that starts it, before that attempt's own writes).
    pub(super) fn job_started(&mut self, id: u64) {
        let now = store::now_ms();
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let chain = job.chain.clone();
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
            tracing::info!(HF_JOB_ID = id, HF_CHAIN = %chain.name, "job {id} ({}) started", chain.name);
            self.ops.push(self.outbox.started(job));
            self.effects.push(Effect::Changed(id));
            if let Some(timeout) = chain.timeout {
                self.effects.push(Effect::JobTimer(id, timeout));
            }
        }
    }

    /// Start attempt `key` (committed by the caller's writes): the job
    /// marked started, templates rendered, user, environment and spawn.
    /// A fan-out item's attempt reads its item's checkpoint and outputs.
    pub(super) fn launch(&mut self, key: AttemptKey) {
        self.launch_in(key, None);
    }

    /// [`launch`](Self::launch), a fan-out item's attempt joining the Slurm
    /// job array `batch` when given.
    pub(super) fn launch_in(
        &mut self,
        key: AttemptKey,
        batch: Option<std::sync::Arc<crate::executor::slurm::ArrayBatch>>,
    ) {
        let AttemptKey {
            job_id: id,
            idx,
            number,
            item,
        } = key;
        let settings = self.settings.clone();
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let chain = job.chain.clone();
        let activity = &chain.activities[idx];
        let outputs = job.outputs_for(idx);
        let item_value =
            item.and_then(|i| (job.acts[idx].fanout.as_ref()).map(|fan| fan.list.item(i)));
        job.running += 1;
        self.running += 1;

        let context = RenderContext {
            params: job.params.clone(),
            job: JobContext {
                id,
                run_id: job.run_id,
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
            item: item_value.clone(),
            schedule: job.scheduled,
        };
        let rendered = match render_activity(activity, &context) {
            Ok(r) => r,
            Err(e) => {
                // A template that cannot render will not render on a retry
                // either: fail the activity at once.
                tracing::error!(HF_JOB_ID = id, HF_CHAIN = %chain.name, HF_PROCESS = %activity.process, HF_ACTIVITY = %activity.name, HF_ATTEMPT = number, error = %e, "cannot render the activity's command");
                let end = AttemptEnd::spawn_error(e.to_string());
                if let Some(act) = self.jobs.get_mut(&id).map(|j| &mut j.acts[idx]) {
                    match (item, act.fanout.as_mut()) {
                        (Some(i), Some(fan)) => {
                            if let Some(run) = fan.live.get_mut(&i) {
                                run.no_retry = true;
                            }
                        }
                        _ => act.no_retry = true,
                    }
                }
                self.on_attempt_end(key, end);
                return;
            }
        };
        // Who it runs as is asked of the user database by the executor, on
        // a blocking thread (executor/prepare.rs): never in this turn.
        let run_as = crate::run_as::Request::for_activity(activity, &settings);
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let secret_files = match secret_files(job, activity, key, &settings) {
            Ok(files) => files,
            Err(message) => {
                tracing::error!(HF_JOB_ID = id, HF_CHAIN = %chain.name, HF_PROCESS = %activity.process, HF_ACTIVITY = %activity.name, HF_ATTEMPT = number, %message, "cannot start the activity");
                self.on_attempt_end(key, AttemptEnd::spawn_error(message));
                return;
            }
        };
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
        let item_run = item.and_then(|i| act.fanout.as_ref().and_then(|f| f.live.get(&i)));
        let (checkpoint, attempt_outputs) = match item_run {
            Some(run) => (run.checkpoint.as_ref(), &run.outputs),
            None => (act.checkpoint.as_ref(), &act.outputs),
        };
        let path = logs::item_path(&activity.path, item);
        let mut env = vec![
            ("HF_JOB_ID".to_string(), id.to_string()),
            ("HF_RUN_ID".to_string(), job.run_id.to_string()),
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
        if let Some(date) = &job.scheduled {
            env.push(("HF_SCHEDULED_AT".to_string(), date.rfc3339()));
        }
        for (name, value) in &job.params {
            env.push((env_name(name), value_as_env(value)));
        }
        if activity.handler.is_some() {
            env.extend(job.outcome_env());
        }
        if let (Some(index), Some(value)) = (item, &item_value) {
            env.push(("HF_ITEM".to_string(), value.to_string()));
            env.push(("HF_ITEM_INDEX".to_string(), index.to_string()));
        }
        if let Some(checkpoint) = checkpoint {
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
            path: path.clone(),
            argv: rendered.argv,
            env,
            working_dir: rendered.working_dir,
            timeout: activity.timeout,
            kill_grace: settings.kill_grace,
            log_path: logs::log_path(&settings.logs_dir(), id, &path, number),
            log_max_bytes: settings.log_max_bytes,
            simulated: job
                .simulated
                .then(|| activity.simulate.clone().unwrap_or_default()),
            // A run-as user with uid 0 is known only once resolved; the
            // executor then drops what the kernel would not apply to root.
            caps: crate::caps::plan(
                activity,
                self.cgroups.as_ref().map(|c| c.controllers()),
                run_as.is_none() && crate::run_as::identity_is_root(None),
            )
            .0,
            identity: None,
            run_as,
            secret_files,
            cgroups: self.cgroups.clone(),
            journal: chain.journal,
            secrets: job
                .params
                .iter()
                .filter(|(name, _)| job.secret.contains(*name))
                .map(|(_, value)| value_as_env(value))
                .chain(connections.secrets)
                .collect(),
            outputs: attempt_outputs.clone(),
            slurm: match &batch {
                Some(batch) => self.slurm.item_attempt(
                    activity,
                    key,
                    &settings,
                    &batch.name,
                    Some(batch.clone()),
                ),
                None => self.slurm.attempt(activity, key, &settings),
            },
        };
        if let Some(batch) = &batch {
            batch.expect_one();
        }
        let (kill_tx, kill_rx) = oneshot::channel();
        if let Some(act) = self.jobs.get_mut(&id).map(|j| &mut j.acts[idx]) {
            match (item, act.fanout.as_mut()) {
                (Some(i), Some(fan)) => {
                    if let Some(run) = fan.live.get_mut(&i) {
                        run.kill = Some(kill_tx);
                    }
                }
                _ => act.kill = Some(kill_tx),
            }
        }
        if item.is_none() {
            tracing::info!(HF_JOB_ID = id, HF_CHAIN = %chain.name, HF_PROCESS = %activity.process, HF_ACTIVITY = %activity.name, HF_ATTEMPT = number, "job {id} ({}): {}.{} attempt {number} started", chain.name, activity.process, activity.name);
        } else {
            tracing::debug!(HF_JOB_ID = id, HF_CHAIN = %chain.name, HF_ACTIVITY = %path, HF_ATTEMPT = number, "job {id} ({}): {path} attempt {number} started", chain.name);
        }
        self.effects.push(Effect::Spawn(Box::new(spec), kill_rx));
        self.effects.push(Effect::Changed(id));
    }
}

/// The files `secret_file("name")` names for this attempt, to be written
/// by the executor before it starts, once its user is known (removed in
/// `on_attempt_end`).
fn secret_files(
    job: &JobRun,
    activity: &holdfast_workflow::Activity,
    key: AttemptKey,
    settings: &crate::settings::Settings,
) -> Result<Option<crate::secret_files::Pending>, String> {
    if activity.secret_files.is_empty() {
        return Ok(None);
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
    Ok(Some(crate::secret_files::Pending {
        dir: crate::secret_files::attempt_dir(&settings.socket, key),
        files,
    }))
}
