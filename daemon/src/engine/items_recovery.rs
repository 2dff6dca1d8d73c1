//! A fan-out's items after a restart: rebuilt from their stored rows,
//! the ones a dead daemon left running killed and interrupted (local) or
//! adopted (Slurm array tasks).

use holdfast_api::AttemptState;

use super::Engine;
use super::recovery::{Leftover, kill_leftovers};
use crate::store::{self, WriteOp};

impl Engine {
    /// A fan-out's state from its stored items: succeeded items stay done
    /// (never run again), items a dead daemon left running are killed if
    /// still there, marked interrupted and start again with their
    /// checkpoint, as do those that were waiting for a retry. Items
    /// running as Slurm array tasks are adopted instead (`adoptions`):
    /// they stay running and are watched again.
    pub(super) fn resume_fanout(
        &mut self,
        job_id: u64,
        stored: &store::StoredActivity,
        activity: &holdfast_workflow::Activity,
        simulated: bool,
        adoptions: &mut Vec<super::adopt::Adoption>,
    ) -> Option<Box<super::items::FanOut>> {
        let mut fan = super::items::FanOut::from_stored(stored, activity.on_failure)?;
        let adopts = super::adopt::adopts(activity, simulated);
        let mut running: Vec<&store::StoredItem> = Vec::new();
        for row in stored.item_rows.iter().filter(|r| r.state == "running") {
            let (true, Some(name)) = (adopts, &row.slurm_name) else {
                running.push(row);
                continue;
            };
            if let Some(run) = fan.live.get_mut(&row.item) {
                run.state = super::items::ItemState::Running;
                fan.again.remove(&row.item);
                fan.running += 1;
            }
            adoptions.push(super::adopt::Adoption {
                idx: stored.idx,
                number: row.attempts,
                slurm_job_id: row.slurm_job_id,
                started_at: row.started_at.unwrap_or_default(),
                control_offset: row.control_offset,
                item: Some(super::adopt::AdoptedItem {
                    item: row.item,
                    slurm_name: name.clone(),
                    task_job_id: row.slurm_task_job_id,
                }),
            });
        }
        let leftovers: Vec<Leftover> = running
            .iter()
            .map(|row| {
                let attempt = store::StoredAttempt {
                    number: row.attempts,
                    state: AttemptState::Running,
                    pid: row.pid,
                    pid_start: row.pid_start,
                    error_id: None,
                    error: None,
                    error_tail: None,
                    error_message: None,
                    slurm_job_id: None,
                    started_at: row.started_at.unwrap_or_default(),
                    control_offset: 0,
                };
                let mut leftover = self.leftover(job_id, stored.idx, activity, &attempt);
                leftover.started_at = row.started_at;
                leftover
            })
            .collect();
        kill_leftovers(&leftovers, &self.settings.database().display().to_string());
        for row in running {
            let interruptions = row.interruptions + 1;
            if let Some(run) = fan.live.get_mut(&row.item) {
                run.interruptions = interruptions;
            }
            // Like an activity, an item interrupted too often fails.
            let item_state = if interruptions > self.settings.max_interruptions {
                tracing::error!(HF_JOB_ID = job_id, HF_ACTIVITY = %activity.path, item = row.item, interruptions, "item interrupted too often; failing it");
                fan.live.remove(&row.item);
                fan.again.remove(&row.item);
                fan.failed += 1;
                fan.halted |= activity.on_failure == holdfast_workflow::OnFailure::Fail;
                "failed"
            } else {
                "pending"
            };
            let end = self.interrupted_end(job_id, stored.idx, row.attempts, store::now_ms());
            self.ops.push(WriteOp::ItemEnd {
                item: row.item,
                item_state,
                interruptions,
                end: Box::new(end),
            });
        }
        tracing::info!(HF_JOB_ID = job_id, HF_ACTIVITY = %activity.path, succeeded = fan.succeeded, again = fan.again.len(), next = fan.next, total = fan.total, "fan-out resumed");
        Some(Box::new(fan))
    }
}
