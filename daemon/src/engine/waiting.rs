//! Why a job that has not ended runs nothing (or less than it could) now:
//! `Job::waiting`, derived from the engine's queues and counters when a
//! client asks, never stored.

use std::cmp::Reverse;
use std::collections::HashMap;

use holdfast_api::{ActivityState, WaitReason, Waiting};

use super::Engine;
use super::queue::QueueKey;
use crate::store::rfc3339;

/// Jobs ahead in a queue are counted exactly up to this many; a job further
/// back says "more than 10000 queued ahead". Only a queue with that many
/// distinct priorities ahead of a job needs the bound: finding a place is
/// a step per priority ahead, and this keeps the engine's turn short.
const AHEAD_COUNTED: usize = 10_000;

impl Engine {
    /// The wait reason of each of `ids` that has one. Queued jobs' places
    /// come from one pass per queue ([`super::queue::Queue::positions`]),
    /// a binary search per job and a step per priority ahead of it, those
    /// steps bounded by [`AHEAD_COUNTED`].
    pub(super) fn waiting_of(&self, ids: &[u64]) -> HashMap<u64, Waiting> {
        let ahead = self.positions(ids);
        ids.iter()
            .filter_map(|&id| Some((id, self.waiting(id, &ahead)?)))
            .collect()
    }

    /// How many jobs are ahead of each of `ids` not yet admitted.
    fn positions(&self, ids: &[u64]) -> HashMap<u64, usize> {
        let mut wanted: HashMap<String, Vec<QueueKey>> = HashMap::new();
        for id in ids {
            if let Some(job) = self.jobs.get(id)
                && !job.admitted
                && job.chain.concurrency.is_some()
            {
                wanted
                    .entry(job.concurrency_key())
                    .or_default()
                    .push((Reverse(job.priority), *id));
            }
        }
        wanted
            .into_iter()
            .filter_map(|(key, keys)| Some(self.queued.get(&key)?.positions(keys, AHEAD_COUNTED)))
            .flatten()
            .collect()
    }

    fn waiting(&self, id: u64, ahead: &HashMap<u64, usize>) -> Option<Waiting> {
        let job = self.jobs.get(&id)?;
        if job.state.is_terminal() {
            return None;
        }
        if self.shutting_down.is_some() {
            return Some(Waiting {
                reason: WaitReason::ShuttingDown,
                detail: "the daemon is stopping and starts nothing new".into(),
                until: None,
            });
        }
        if !job.admitted {
            // Not admitted without a concurrency limit only until the
            // engine's next pass: nothing to report.
            let limit = job.chain.concurrency?;
            let key = job.concurrency_key();
            let running = self.admitted_per_chain.get(&key).copied().unwrap_or(0);
            let queued = self.queued.get(&key).map_or(0, |queue| queue.len());
            let ahead = match ahead.get(&id) {
                Some(n) => n.to_string(),
                // Not found in its queue while being admitted this turn.
                None if queued <= AHEAD_COUNTED => queued.to_string(),
                None => format!("more than {AHEAD_COUNTED}"),
            };
            let whose = match (&job.tenant, key.contains('\u{0}')) {
                (Some(tenant), true) => format!("chain {} for tenant {tenant}", job.chain.name),
                _ => format!("chain {}", job.chain.name),
            };
            return Some(Waiting {
                reason: WaitReason::ChainConcurrency,
                detail: format!(
                    "{whose} runs {running} of its concurrency {limit}; {ahead} queued ahead"
                ),
                until: None,
            });
        }
        if !job.ready.is_empty() && job.startable() {
            let ready = job.ready.len();
            if let Some(limit) = job.chain.max_parallel
                && job.running >= limit
            {
                return Some(Waiting {
                    reason: WaitReason::JobMaxParallel,
                    detail: format!(
                        "{ready} ready, the job runs {} of its chain's max_parallel {limit}",
                        job.running
                    ),
                    until: None,
                });
            }
            if self.running >= self.settings.max_parallel {
                return Some(Waiting {
                    reason: WaitReason::MaxParallel,
                    detail: format!(
                        "{ready} ready, the daemon runs {} of its max_parallel {}",
                        self.running, self.settings.max_parallel
                    ),
                    until: None,
                });
            }
        }
        if job.running == 0 {
            let (idx, due) = job
                .acts
                .iter()
                .enumerate()
                .filter(|(_, act)| act.state() == ActivityState::RetryWait)
                .filter_map(|(idx, act)| Some((idx, act.retry_due_at?)))
                .min_by_key(|&(_, due)| due)?;
            let activity = &job.chain.activities[idx];
            return Some(Waiting {
                reason: WaitReason::RetryDelay,
                detail: format!(
                    "{}.{} waits to retry (attempt {} next)",
                    activity.process,
                    activity.name,
                    job.acts[idx].attempts + 1
                ),
                until: Some(rfc3339(due)),
            });
        }
        None
    }
}
