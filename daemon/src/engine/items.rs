//! A fan-out's state in memory: counts, the items started and not done,
//! and a cursor. Items are started in index order, never-started ones have
//! no row and no struct, and the list itself is a count or the JSON array
//! the activity was given (bounded by what an output or parameter holds).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use holdfast_workflow::template::{JobContext, RenderContext, render, render_json};
use holdfast_workflow::{Foreach, OnFailure};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::job::JobRun;
use crate::executor::KillReason;
use crate::store::{ItemList, StoredActivity};

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
    pub fn new() -> ItemRun {
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
        fan.next = stored.items_next;
        fan.succeeded = stored.items_succeeded_plain;
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
pub fn compute_items(
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
            run_id: job.run_id,
            chain: job.chain.name.clone(),
            target: job.target.clone(),
            tenant: job.tenant.clone(),
            attempt: 1,
            outcome: None,
        },
        outputs: job.outputs_for(idx),
        secret_dir: None,
        item: None,
        schedule: job.scheduled,
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
        // The items are stored and shown (`job.items`) and may reach argv,
        // so a value some chain declares secret (this job's chain
        // included) is `***` in them, as in `tenant.list`; `[secrets]` are
        // never carried.
        Foreach::Tenants => {
            let secret = registry.secret_param_names();
            let secret_here = job.chain.params.values().filter(|p| p.secret);
            let masked: BTreeSet<&str> = (secret.into_iter())
                .chain(secret_here.map(|p| p.name.as_str()))
                .collect();
            ItemList::List(Arc::new(
                (registry.tenants_for(&job.chain.name).into_iter())
                    .filter_map(|name| registry.tenant(&name).cloned())
                    .map(|t| {
                        let mut params = t.params.clone();
                        for (name, value) in params.iter_mut() {
                            if masked.contains(name.as_str()) {
                                *value = Value::from(holdfast_workflow::params::MASK);
                            }
                        }
                        serde_json::json!({ "tenant": t.name, "params": params })
                    })
                    .collect(),
            ))
        }
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
