//! A fan-out on Slurm: the items ready together start as one job array.
//! Each item keeps its own attempt (row, log, control file, retries,
//! timeout, outcome); the attempts are committed with the array's job
//! name before `sbatch` runs, so a restart finds the array by that name
//! when its id was not committed yet.

use std::collections::BTreeSet;

use holdfast_api::ActivityState;
use holdfast_workflow::Executor;

use super::items::{ItemRun, ItemState};
use super::job::JobRun;
use super::{Effect, Engine};
use crate::executor::AttemptKey;
use crate::executor::slurm::ArrayBatch;
use crate::store::{self, WriteOp};

/// The most items one job array is submitted with; more ready at once go
/// in the next array (Slurm's `MaxArraySize` bounds the indices too).
const MAX_ARRAY_TASKS: usize = 1000;

/// True when fan-out `idx` of `job` runs its items as Slurm array tasks.
pub(super) fn on_slurm(job: &JobRun, idx: usize) -> bool {
    job.chain.activities[idx].executor == Executor::Slurm && !job.simulated
}

impl Engine {
    /// Start every item of Slurm fan-out `idx` that may start now (to run
    /// again first, then never started, at most [`MAX_ARRAY_TASKS`]) as
    /// the tasks of one job array; Slurm runs `max_parallel` of them at a
    /// time.
    pub(super) fn start_item_array(&mut self, id: u64, idx: usize) {
        let settings = self.settings.clone();
        let Some(fan) = (self.jobs.get_mut(&id)).and_then(|j| j.acts[idx].fanout.as_mut()) else {
            return;
        };
        let mut items: BTreeSet<u32> = BTreeSet::new();
        if !fan.halted {
            while items.len() < MAX_ARRAY_TASKS
                && let Some(item) = fan.again.pop_first()
            {
                items.insert(item);
            }
            while items.len() < MAX_ARRAY_TASKS && fan.next < fan.total {
                items.insert(fan.next);
                fan.next += 1;
            }
        }
        if items.is_empty() {
            self.fanout_settled(id, idx);
            self.effects.push(Effect::Changed(id));
            self.finish_if_done(id);
            return;
        }
        self.job_started(id);
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let chain = job.chain.clone();
        let act = &mut job.acts[idx];
        if act.state() != ActivityState::Running {
            act.state = Some(ActivityState::Running);
            self.ops.push(WriteOp::ActivityState {
                job_id: id,
                idx,
                state: ActivityState::Running.as_str(),
            });
        }
        let Some(fan) = act.fanout.as_mut() else {
            return;
        };
        let started_at = store::now_ms();
        let mut keys = Vec::with_capacity(items.len());
        for item in items {
            let run = fan.live.entry(item).or_insert_with(ItemRun::new);
            run.attempts += 1;
            run.state = ItemState::Running;
            run.no_retry = false;
            run.error_message = None;
            fan.running += 1;
            keys.push(AttemptKey {
                job_id: id,
                idx,
                number: run.attempts,
                item: Some(item),
            });
        }
        let batch = ArrayBatch::new(&self.slurm, keys[0], &settings, &chain.activities[idx]);
        // Committed before sbatch runs: a restart finds the array by name.
        for key in &keys {
            self.ops.push(WriteOp::ItemStart {
                job_id: id,
                idx,
                item: key.item.unwrap_or_default(),
                attempt: key.number,
                started_at,
                slurm_name: Some(batch.name.clone()),
            });
        }
        tracing::info!(HF_JOB_ID = id, HF_ACTIVITY = %chain.activities[idx].path, items = keys.len(), array = %batch.name, "fan-out items submitted as one Slurm job array");
        for key in keys {
            self.launch_in(key, Some(batch.clone()));
        }
        self.fanout_settled(id, idx);
    }
}
