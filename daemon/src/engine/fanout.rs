//! Fan-out: an activity with `foreach` runs once per item, each item an
//! instance (`load.chunk[17]`) with its own attempts, retries, checkpoint,
//! outputs and log. Memory holds counts, the items started and not done,
//! and a cursor: items are started in index order, never-started ones have
//! no row and no struct, and the list itself is a count or the JSON array
//! the activity was given (bounded by what an output or parameter holds).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use holdfast_api::{ActivityState, AttemptState};
use holdfast_workflow::template::{JobContext, RenderContext, render, render_json};
use holdfast_workflow::{Foreach, OnFailure};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::job::{JobRun, Stop};
use super::{Command, Effect, Engine};
use crate::executor::{AttemptEnd, AttemptKey, KillReason};
use crate::store::{self, ItemList, StoredActivity, WriteOp};

/// The most items one fan-out may have.
pub const MAX_ITEMS: u64 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    Running,
    RetryWait,
    /// Waiting in `FanOut::again` to start (again).
    Pending,
}

/// One item started and not done yet.
#[derive(Debug)]
pub struct ItemRun {
    pub state: ItemState,
    pub attempts: u32,
    pub interruptions: u32,
    pub deferred: u32,
    pub kill: Option<oneshot::Sender<KillReason>>,
    pub checkpoint: Option<Value>,
    pub outputs: Map<String, Value>,
    pub no_retry: bool,
    pub error_message: Option<String>,
}

impl ItemRun {
    fn new() -> ItemRun {
        ItemRun {
            state: ItemState::Pending,
            attempts: 0,
            interruptions: 0,
            deferred: 0,
            kill: None,
            checkpoint: None,
            outputs: Map::new(),
            no_retry: false,
            error_message: None,
        }
    }
}

/// A fan-out activity's state in a running job.
#[derive(Debug)]
pub struct FanOut {
    pub list: ItemList,
    pub total: u32,
    /// The first item never started.
    pub next: u32,
    /// Items below `next` to start again (a retry due, an interruption, a
    /// `job.retry`).
    pub again: BTreeSet<u32>,
    /// Items started and not done.
    pub live: HashMap<u32, ItemRun>,
    pub running: usize,
    pub succeeded: u32,
    pub failed: u32,
    /// Outputs of succeeded items that sent any, by item.
    pub outputs: BTreeMap<u32, Map<String, Value>>,
    /// No more items start: one failed under `on_failure = "fail"`, or the
    /// job is stopping.
    pub halted: bool,
}

impl FanOut {
    pub fn new(list: ItemList) -> FanOut {
        FanOut {
            total: list.total(),
            list,
            next: 0,
            again: BTreeSet::new(),
            live: HashMap::new(),
            running: 0,
            succeeded: 0,
            failed: 0,
            outputs: BTreeMap::new(),
            halted: false,
        }
    }

    /// An item could start now (room aside).
    pub fn has_startable(&self) -> bool {
        !self.halted && (!self.again.is_empty() || self.next < self.total)
    }

    /// Nothing runs and nothing more will start.
    pub fn is_done(&self) -> bool {
        self.running == 0
            && (self.halted
                || (self.again.is_empty()
                    && self.next >= self.total
                    && self.live.values().all(|r| r.state != ItemState::RetryWait)))
    }

    /// The items' outputs for dependants: a list in item order.
    pub fn outputs_list(&self) -> Value {
        Value::Array(
            (0..self.total)
                .map(|i| Value::Object(self.outputs.get(&i).cloned().unwrap_or_default()))
                .collect(),
        )
    }

    /// Rebuild from the store after a restart, or from the rows a
    /// `job.retry` carried: succeeded items stay done, the rest run again.
    pub fn from_stored(stored: &StoredActivity, on_failure: OnFailure) -> Option<FanOut> {
        let list = ItemList::from_stored(stored.items.as_ref()?)?;
        let mut fan = FanOut::new(list);
        for row in &stored.item_rows {
            fan.next = fan.next.max(row.item + 1);
            match row.state.as_str() {
                "succeeded" => {
                    fan.succeeded += 1;
                    if !row.outputs.is_empty() {
                        fan.outputs.insert(row.item, row.outputs.clone());
                    }
                }
                "failed" | "cancelled" => fan.failed += 1,
                _ => {
                    let mut run = ItemRun::new();
                    run.attempts = row.attempts;
                    run.interruptions = row.interruptions;
                    run.checkpoint = row.checkpoint.clone();
                    fan.live.insert(row.item, run);
                    fan.again.insert(row.item);
                }
            }
        }
        fan.halted = on_failure == OnFailure::Fail && fan.failed > 0;
        Some(fan)
    }
}

/// The item list of a fan-out, rendered against the job as it is now.
fn compute_items(
    job: &JobRun,
    idx: usize,
    registry: &crate::registry::Registry,
) -> Result<ItemList, String> {
    let activity = &job.chain.activities[idx];
    let Some(foreach) = &activity.foreach else {
        return Err("not a fan-out".into());
    };
    let context = RenderContext {
        params: job.params.clone(),
        job: JobContext {
            id: job.id,
            chain: job.chain.name.clone(),
            target: job.target.clone(),
            tenant: job.tenant.clone(),
            attempt: 1,
            outcome: None,
        },
        outputs: job.outputs_for(idx),
        secret_dir: None,
        item: None,
    };
    let list = match foreach {
        Foreach::List(template) => match render_json(template, &context) {
            Ok(Value::Array(list)) => ItemList::List(Arc::new(list)),
            Ok(other) => {
                return Err(format!(
                    "foreach must give a JSON array; it gave {}",
                    excerpt(&other.to_string())
                ));
            }
            Err(e) => return Err(format!("cannot compute foreach: {e}")),
        },
        Foreach::Chunks { count, chunk_size } => {
            let text =
                render(count, &context).map_err(|e| format!("cannot compute foreach: {e}"))?;
            let count = text.trim().parse::<u64>().map_err(|_| {
                format!(
                    "foreach.count must give a whole number of records; it gave {:?}",
                    excerpt(&text)
                )
            })?;
            ItemList::Chunks {
                count,
                chunk_size: *chunk_size,
            }
        }
        // The tenants as the registry has them now, fixed from here on.
        Foreach::Tenants => ItemList::List(Arc::new(
            (registry.tenants_for(&job.chain.name).into_iter())
                .filter_map(|name| registry.tenant(&name).cloned())
                .map(|t| serde_json::json!({ "tenant": t.name, "params": t.params }))
                .collect(),
        )),
    };
    let total = match &list {
        ItemList::List(l) => l.len() as u64,
        ItemList::Chunks { count, chunk_size } => count.div_ceil(*chunk_size),
    };
    if total > MAX_ITEMS {
        return Err(format!(
            "foreach gives {total} items, more than {MAX_ITEMS}; use larger chunks"
        ));
    }
    Ok(list)
}

fn excerpt(text: &str) -> String {
    text.chars().take(80).collect()
}

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
                    return;
                }
            }
        }
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
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
            self.fanout_settled(id, idx);
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
        let max = job.chain.activities[idx].max_parallel.unwrap_or(usize::MAX);
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
                    self.ops.push(WriteOp::JobAlert {
                        id: key.job_id,
                        alerts: job.alerts,
                        text: format!(
                            "{path} failed and was skipped; the other items go on \
                             (on_failure = \"continue\")"
                        ),
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
            end: Box::new(store::AttemptEnd {
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
            }),
        });
        if let Some(error) = &end.log_error {
            tracing::warn!(HF_JOB_ID = key.job_id, HF_ACTIVITY = %path, %error, "cannot keep the item's log");
        }
        self.item_dirty.remove(&(key.job_id, key.idx, item));
        self.write_item_control(key.job_id, key.idx, item, true);
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

    /// Queue the write of an item's latest checkpoint and outputs (`all`:
    /// whether or not they changed in this batch, at its end).
    pub(super) fn write_item_control(&mut self, job_id: u64, idx: usize, item: u32, all: bool) {
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
        if !all && checkpoint.is_none() && outputs.is_none() {
            return;
        }
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
