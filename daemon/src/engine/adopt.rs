//! Slurm attempts across daemon restarts: at a stop they are left running
//! in Slurm (detached), and at start recovery adopts every one an earlier
//! run left `running` (watched again, never killed, never submitted twice)
//! instead of interrupting it as it does a local attempt. A fan-out
//! item's array task is adopted the same way, as that item's attempt.

use holdfast_api::ActivityState;
use holdfast_workflow::params::value_as_env;
use holdfast_workflow::{Activity, Executor};
use tokio::sync::oneshot;

use super::items::ItemState;
use super::{Effect, Engine};
use crate::executor::{AttemptKey, AttemptSpec, logs};

/// A stored `running` attempt recovery adopts.
pub(super) struct Adoption {
    pub idx: usize,
    pub number: u32,
    pub slurm_job_id: Option<u64>,
    /// When the attempt started (ms since the epoch): its timeout counts
    /// from then, not from the adoption.
    pub started_at: i64,
    /// How far into its control file the earlier run applied.
    pub control_offset: u64,
    /// A fan-out item's attempt: the item, its job array's name (its
    /// id is `slurm_job_id`) and the task's own job id when committed.
    pub item: Option<AdoptedItem>,
}

/// The array task of an adopted fan-out item.
pub(super) struct AdoptedItem {
    pub item: u32,
    pub slurm_name: String,
    pub task_job_id: Option<u64>,
}

/// True when recovery adopts a running attempt of this activity rather
/// than interrupting it: it ran on Slurm, where it outlives the daemon.
pub(super) fn adopts(activity: &Activity, simulated: bool) -> bool {
    activity.executor == Executor::Slurm && !simulated
}

impl Engine {
    /// Watch the Slurm job of a running attempt a previous daemon left:
    /// the activity stays `running` and ends as that job ends. Its log is
    /// rebuilt from the job's output file, which holds all of it.
    pub(super) fn adopt(&mut self, job_id: u64, adoption: Adoption) {
        let settings = self.settings.clone();
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let chain = job.chain.clone();
        let activity = &chain.activities[adoption.idx];
        let key = AttemptKey {
            job_id,
            idx: adoption.idx,
            number: adoption.number,
            item: adoption.item.as_ref().map(|i| i.item),
        };
        let slurm = match &adoption.item {
            Some(item) => self
                .slurm
                .item_attempt(activity, key, &settings, &item.slurm_name, None),
            None => self.slurm.attempt(activity, key, &settings),
        };
        let Some(mut slurm) = slurm else {
            return;
        };
        slurm.adopt = Some(adoption.slurm_job_id);
        slurm.control_offset = adoption.control_offset;
        slurm.task_job_id = adoption.item.as_ref().and_then(|i| i.task_job_id);
        let path = logs::item_path(&activity.path, key.item);
        // What is left of the timeout: the attempt has run since it started.
        let ran = std::time::Duration::from_millis(
            (crate::store::now_ms() - adoption.started_at).max(0) as u64,
        );
        let timeout = activity.timeout.map(|t| t.saturating_sub(ran));
        let log_path = logs::log_path(&settings.logs_dir(), job_id, &path, key.number);
        // The output file is read again from its start.
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&log_path) {
            let _ = file.set_len(0);
        }
        let act = &mut job.acts[adoption.idx];
        let item_run =
            (key.item).and_then(|item| act.fanout.as_mut().and_then(|f| f.live.get_mut(&item)));
        let outputs = match &item_run {
            Some(run) => run.outputs.clone(),
            None => act.outputs.clone(),
        };
        let spec = AttemptSpec {
            key,
            path: path.clone(),
            argv: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            timeout,
            kill_grace: settings.kill_grace,
            log_path,
            log_max_bytes: settings.log_max_bytes,
            simulated: None,
            identity: None,
            run_as: None,
            secret_files: None,
            caps: crate::caps::Plan::default(),
            cgroups: None,
            journal: chain.journal,
            secrets: job
                .params
                .iter()
                .filter(|(name, _)| job.secret.contains(*name))
                .map(|(_, value)| value_as_env(value))
                .collect(),
            outputs,
            slurm: Some(slurm),
        };
        let (kill_tx, kill_rx) = oneshot::channel();
        match item_run {
            Some(run) => run.kill = Some(kill_tx),
            None => act.kill = Some(kill_tx),
        }
        job.running += 1;
        self.running += 1;
        tracing::info!(HF_JOB_ID = job_id, HF_CHAIN = %chain.name, HF_ACTIVITY = %path, HF_ATTEMPT = key.number, slurm_job_id = ?adoption.slurm_job_id, "Slurm attempt adopted after a restart");
        self.effects.push(Effect::Spawn(Box::new(spec), kill_rx));
        self.effects.push(Effect::Changed(job_id));
    }

    /// A Slurm attempt left running at a stop: it no longer counts as
    /// running here, and stays `running` in the store for the next start.
    pub(super) fn on_detached(&mut self, key: AttemptKey) {
        let Some(job) = self.jobs.get_mut(&key.job_id) else {
            return;
        };
        let act = &mut job.acts[key.idx];
        if let Some(item) = key.item {
            let Some(fan) = act.fanout.as_mut() else {
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
        } else {
            if act.attempts != key.number || act.state() != ActivityState::Running {
                return;
            }
            act.kill = None;
        }
        job.running -= 1;
        self.running -= 1;
    }
}
