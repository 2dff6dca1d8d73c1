//! Schedules: cron rules from chain files that submit jobs.
//!
//! Their state (paused, the last instant handled, the last job) is kept in
//! SQLite, so a restart neither fires twice nor silently misses a fire
//! beyond what the rule's `catch_up` policy allows. One timer task sleeps
//! until the earliest next fire and is re-armed whenever a schedule, a
//! pause or the registry changes; the sleep is capped at five minutes so a
//! wall-clock jump (NTP, suspend) is noticed, since timers run on the
//! monotonic clock. A wake-up only re-evaluates; it never polls for work.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_workflow::{BusinessDate, CatchUp, Chain, Overlap, Schedule, cron::due_fires};
use serde_json::Map;
use tokio::sync::oneshot;

use super::job::{JobRun, prepare};
use super::{Caller, Command, Engine, PendingJob};
use crate::store::{self, StoredSchedule, WriteOp};

/// Longest the scheduler sleeps without re-evaluating.
const MAX_SLEEP: Duration = Duration::from_secs(300);

/// One schedule's runtime state.
#[derive(Debug)]
pub struct ScheduleRun {
    pub chain: Arc<Chain>,
    pub schedule: Schedule,
    pub paused: bool,
    /// The last instant handled: fires at or before it never run again.
    pub last: DateTime<Utc>,
    /// Jobs of the most recent fire (one per tenant).
    pub last_jobs: Vec<u64>,
    /// The instant of a fire that waits for the previous jobs
    /// (`overlap = "queue"`).
    pub waiting: Option<DateTime<Utc>>,
    /// Fires of a backfill not yet submitted, oldest first; each waits for
    /// the previous fire's jobs unless `overlap = "allow"`.
    pub backfill: VecDeque<DateTime<Utc>>,
}

/// What `schedule.list` shows of one schedule.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub chain: String,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub enabled: bool,
    pub paused: bool,
    pub catch_up: CatchUp,
    pub overlap: Overlap,
    pub tenants: Vec<String>,
    pub next_fire: Option<DateTime<Utc>>,
    pub last_handled: DateTime<Utc>,
    pub last_job: Option<u64>,
    /// Backfill fires still waiting, oldest first.
    pub backfill: Vec<BusinessDate>,
}

/// What an operator can do to a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleAction {
    Pause,
    Resume,
    /// Fire now, as of `at` (read in the schedule's zone) when given.
    Trigger {
        at: Option<String>,
    },
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Engine {
    /// Bring schedules in line with the registry: new ones start from now
    /// (or their stored state), removed ones are forgotten, changed rules
    /// keep their state.
    pub(super) fn sync_schedules(
        &mut self,
        stored: Option<HashMap<(String, String), StoredSchedule>>,
    ) {
        let now = Utc::now();
        let registry = self.registry.borrow().clone();
        let mut next: BTreeMap<(String, String), ScheduleRun> = BTreeMap::new();
        for chain in registry.entries.values().filter_map(|e| e.chain.clone()) {
            for schedule in &chain.schedules {
                let key = (chain.name.clone(), schedule.name.clone());
                // A schedule that went away and came back takes up its state
                // from memory, which is never behind the store (the store's
                // copy may still be in a batch being committed).
                let known = self.schedules.remove(&key).or_else(|| {
                    self.retired_schedules.remove(&key).map(|mut run| {
                        run.waiting = None;
                        run
                    })
                });
                let run = match known {
                    Some(mut run) => {
                        run.chain = chain.clone();
                        run.schedule = schedule.clone();
                        run
                    }
                    None => {
                        let saved = stored.as_ref().and_then(|s| s.get(&key));
                        let last = saved
                            .and_then(|s| s.last_fire)
                            .map(ms_to_time)
                            .unwrap_or(now);
                        if saved.is_none() {
                            self.ops.push(WriteOp::Schedule {
                                chain: key.0.clone(),
                                name: key.1.clone(),
                                paused: false,
                                last_fire: last.timestamp_millis(),
                                last_job: None,
                            });
                        }
                        ScheduleRun {
                            chain: chain.clone(),
                            schedule: schedule.clone(),
                            paused: saved.is_some_and(|s| s.paused),
                            last,
                            last_jobs: saved.and_then(|s| s.last_job).into_iter().collect(),
                            waiting: None,
                            backfill: saved
                                .map(|s| s.backfill.iter().copied().map(ms_to_time).collect())
                                .unwrap_or_default(),
                        }
                    }
                };
                next.insert(key, run);
            }
        }
        // State of schedules that disappeared is kept: a file moved away and
        // back (or saved by a slow rename) must not lose its pause.
        for (key, run) in std::mem::take(&mut self.schedules) {
            self.retired_schedules.insert(key, run);
        }
        self.schedules = next;
        self.arm_schedule_timer();
    }

    /// After a start: schedules with `catch_up = "none"` skip what was
    /// missed while the daemon was down; the others run what their policy
    /// allows at once instead of at their next fire.
    pub(super) fn startup_catch_up(&mut self) {
        let now = Utc::now();
        for ((chain, name), run) in &mut self.schedules {
            if run.schedule.catch_up == CatchUp::None && run.last < now {
                run.last = now;
                self.ops.push(WriteOp::Schedule {
                    chain: chain.clone(),
                    name: name.clone(),
                    paused: run.paused,
                    last_fire: now.timestamp_millis(),
                    last_job: None,
                });
            }
        }
        self.schedule_tick();
        // A backfill the last run left under way goes on once nothing of
        // its last fire is in flight (recovery has resumed its jobs).
        let backfills: Vec<(String, String)> = self
            .schedules
            .iter()
            .filter(|(_, run)| !run.backfill.is_empty())
            .map(|(key, _)| key.clone())
            .collect();
        for key in backfills {
            self.next_backfill_fire(&key, None);
        }
    }

    /// Sleep until the earliest next fire (at most [`MAX_SLEEP`]).
    pub(super) fn arm_schedule_timer(&mut self) {
        if let Some(timer) = self.schedule_timer.take() {
            timer.abort();
        }
        let now = Utc::now();
        let next = self
            .schedules
            .values()
            .filter(|r| r.schedule.enabled && !r.paused)
            .filter_map(|r| r.schedule.rule.next_after(r.last.max(now)))
            .min();
        let Some(next) = next else {
            return;
        };
        let delay = (next - now).to_std().unwrap_or_default().min(MAX_SLEEP);
        let tx = self.commands_tx.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Command::ScheduleTick).await;
        });
        self.schedule_timer = Some(task.abort_handle());
    }

    /// Run what is due, per each rule's catch-up policy, then re-arm.
    pub(super) fn schedule_tick(&mut self) {
        if self.shutting_down.is_some() {
            return;
        }
        let now = Utc::now();
        let keys: Vec<(String, String)> = self.schedules.keys().cloned().collect();
        for key in keys {
            let Some(run) = self.schedules.get_mut(&key) else {
                continue;
            };
            if !run.schedule.enabled || run.paused {
                continue;
            }
            let due = due_fires(
                &run.schedule.rule,
                run.last,
                now,
                run.schedule.catch_up,
                run.schedule.max_catch_up,
            );
            run.last = run.last.max(now);
            let last_fire = run.last.timestamp_millis();
            self.ops.push(WriteOp::Schedule {
                chain: key.0.clone(),
                name: key.1.clone(),
                paused: false,
                last_fire,
                last_job: None,
            });
            // Each fire runs as of its own instant, caught-up ones included.
            for fire in due {
                tracing::info!(HF_CHAIN = %key.0, schedule = %key.1, fire = %fire.to_rfc3339(), "schedule fires");
                self.fire(&key, false, fire);
            }
        }
        self.arm_schedule_timer();
    }

    /// Whether jobs of the schedule's last fire (other than `except`) are
    /// still queued or running.
    pub(super) fn fire_in_flight(&self, run: &ScheduleRun, except: Option<u64>) -> bool {
        run.last_jobs
            .iter()
            .any(|id| Some(*id) != except && (self.jobs.contains_key(id) || self.is_pending(*id)))
    }

    /// Submit the jobs of one fire at instant `at`, honouring `overlap`
    /// unless `manual`. Returns why jobs were refused (empty when none
    /// was).
    pub(super) fn fire(
        &mut self,
        key: &(String, String),
        manual: bool,
        at: DateTime<Utc>,
    ) -> Vec<String> {
        let Some(run) = self.schedules.get(key) else {
            return Vec::new();
        };
        let in_flight = self.fire_in_flight(run, None);
        if in_flight && !manual {
            match run.schedule.overlap {
                Overlap::Skip => {
                    tracing::warn!(HF_CHAIN = %key.0, schedule = %key.1, "fire skipped: the previous job of this schedule is still running (overlap = \"skip\")");
                    return Vec::new();
                }
                Overlap::Queue => {
                    tracing::info!(HF_CHAIN = %key.0, schedule = %key.1, "fire waits for the previous job (overlap = \"queue\")");
                    if let Some(run) = self.schedules.get_mut(key) {
                        run.waiting = Some(at);
                    }
                    return Vec::new();
                }
                Overlap::Allow => {}
            }
        }
        let chain = run.chain.clone();
        let schedule = run.schedule.clone();
        let tenants: Vec<Option<String>> = if schedule.tenants.is_empty() {
            vec![None]
        } else {
            schedule.tenants.iter().cloned().map(Some).collect()
        };
        let caller = Caller {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: Vec::new(),
            pid: None,
            user: format!("schedule:{}.{}", key.0, key.1),
        };
        let mut started = Vec::new();
        let mut refused = Vec::new();
        // The fire's business date: its parameters that are templates are
        // computed from it, and its jobs run as of it.
        let date = BusinessDate {
            at,
            zone: schedule.zone(),
        };
        let params = match schedule.params_at(&date) {
            Ok(params) => params,
            Err(errors) => {
                let reason = errors
                    .iter()
                    .map(|(name, message)| format!("{name}: {message}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::error!(HF_CHAIN = %key.0, schedule = %key.1, fire = %date.rfc3339(), error = %reason, "scheduled job refused");
                refused.push(format!("as of {}: {reason}", date.rfc3339()));
                Map::new()
            }
        };
        let tenants = if refused.is_empty() {
            tenants
        } else {
            Vec::new()
        };
        for tenant in tenants {
            let prepared = {
                let registry = self.registry.borrow();
                prepare(
                    &registry,
                    &chain.name,
                    None,
                    &Map::new(),
                    Some(&params),
                    tenant.as_deref(),
                    &caller,
                )
            };
            let prepared = match prepared {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(HF_CHAIN = %key.0, schedule = %key.1, tenant = tenant.as_deref().unwrap_or(""), error = %e, "scheduled job refused");
                    refused.push(refusal(tenant.as_deref(), &e));
                    continue;
                }
            };
            let id = self.next_job_id;
            self.next_job_id += 1;
            let mut job = JobRun::new(
                id,
                prepared.chain,
                chain.name.clone(),
                &prepared.included,
                prepared.params,
                tenant.clone(),
                0,
            );
            job.secret = prepared.secret;
            job.scheduled = Some(date);
            if let Err(e) = self.record_new_job(&job, &caller, None) {
                tracing::error!(HF_CHAIN = %key.0, schedule = %key.1, error = %e, "scheduled job refused");
                refused.push(refusal(tenant.as_deref(), &e));
                continue;
            }
            self.audit_fire(key, &caller, "ok", format!("job {id}"));
            tracing::info!(HF_JOB_ID = id, HF_CHAIN = %key.0, schedule = %key.1, tenant = tenant.as_deref().unwrap_or(""), "job {id} ({}) submitted by schedule {}", key.0, key.1);
            // Nobody waits for the answer of a scheduled submission.
            let (reply, _) = oneshot::channel();
            self.pending_jobs.push(PendingJob { job, reply });
            started.push(id);
        }
        if let Some(run) = self.schedules.get_mut(key) {
            // A fire that made no job leaves the last fire's jobs to
            // `overlap`, so a refused backfill fire does not let the next
            // one run beside them.
            if !started.is_empty() || refused.is_empty() {
                run.last_jobs = started.clone();
            }
            run.waiting = None;
            self.ops.push(WriteOp::Schedule {
                chain: key.0.clone(),
                name: key.1.clone(),
                paused: run.paused,
                last_fire: run.last.timestamp_millis(),
                last_job: started.last().copied(),
            });
        }
        self.record_refusals(key, &caller, &refused);
        refused
    }

    /// Record on the schedule why its fire created no job (or clear it when
    /// every job was created), raise `schedule.refused` and audit it.
    fn record_refusals(&mut self, key: &(String, String), caller: &Caller, refused: &[String]) {
        let error = (!refused.is_empty()).then(|| refused.join("; "));
        self.ops.push(WriteOp::ScheduleError {
            chain: key.0.clone(),
            name: key.1.clone(),
            error: error.clone(),
            at: store::now_ms(),
        });
        crate::metrics::global().schedule_fired();
        if let Some(error) = error {
            crate::metrics::global().schedule_refused();
            self.ops
                .push(self.outbox.schedule_refused(&key.0, &key.1, &error));
            self.audit_fire(key, caller, "refused", error);
            self.durable = true;
        }
    }

    /// An audit row for a schedule's submission, by `schedule:CHAIN.NAME`.
    fn audit_fire(
        &mut self,
        key: &(String, String),
        caller: &Caller,
        outcome: &str,
        detail: String,
    ) {
        self.ops.push(WriteOp::Audit(Box::new(store::AuditRow {
            at: store::now_ms(),
            uid: Some(caller.uid),
            user: Some(caller.user.clone()),
            pid: None,
            method: "job.submit",
            target: Some(key.0.clone()),
            outcome: outcome.to_string(),
            detail: Some(detail),
        })));
    }

    /// A job ended: a schedule waiting on it (`overlap = "queue"`) fires
    /// now, then the next fire of a backfill, in order.
    pub(super) fn schedule_job_finished(&mut self, id: u64) {
        let done: Vec<(String, String)> = self
            .schedules
            .iter()
            .filter(|(_, r)| {
                (r.waiting.is_some() || !r.backfill.is_empty())
                    && !r.paused
                    && r.last_jobs.contains(&id)
            })
            .filter(|(_, r)| !self.fire_in_flight(r, Some(id)))
            .map(|(k, _)| k.clone())
            .collect();
        for key in done {
            if let Some(at) = self.schedules.get(&key).and_then(|r| r.waiting) {
                self.fire(&key, true, at);
            }
            self.next_backfill_fire(&key, Some(id));
        }
    }

    /// Pause, resume or trigger a schedule named `chain.name`.
    pub(super) fn schedule_control(
        &mut self,
        chain: &str,
        name: &str,
        action: ScheduleAction,
    ) -> Result<ScheduleView, ScheduleControlError> {
        let key = (chain.to_string(), name.to_string());
        let Some(run) = self.schedules.get_mut(&key) else {
            return Err(ScheduleControlError::NotFound(format!(
                "no schedule {chain}.{name}; see `hfctl schedules`"
            )));
        };
        // A trigger runs as of now unless told otherwise; a time that does
        // not exist is refused before anything changes.
        let trigger_at = match &action {
            ScheduleAction::Trigger { at: Some(text) } => {
                match BusinessDate::parse(text, run.schedule.zone()) {
                    Ok(date) => Some(date.at),
                    Err(message) => {
                        return Err(ScheduleControlError::Invalid {
                            field: "at",
                            message,
                        });
                    }
                }
            }
            ScheduleAction::Trigger { at: None } => Some(Utc::now()),
            _ => None,
        };
        match action {
            ScheduleAction::Pause => {
                run.paused = true;
                run.waiting = None;
                // A pause stops a backfill too: its remaining fires are
                // dropped (run it again with --from past the last job).
                if !run.backfill.is_empty() {
                    run.backfill.clear();
                    self.ops.push(WriteOp::ScheduleBackfill {
                        chain: key.0.clone(),
                        name: key.1.clone(),
                        fires: Vec::new(),
                    });
                }
            }
            ScheduleAction::Resume => {
                // Fires missed while paused are not caught up: a pause is a
                // decision, not downtime.
                run.paused = false;
                run.last = run.last.max(Utc::now());
            }
            ScheduleAction::Trigger { .. } => {}
        }
        self.ops.push(WriteOp::Schedule {
            chain: key.0.clone(),
            name: key.1.clone(),
            paused: run.paused,
            last_fire: run.last.timestamp_millis(),
            last_job: None,
        });
        self.durable = true;
        tracing::info!(HF_CHAIN = %chain, schedule = %name, action = ?action, "schedule changed");
        if let (ScheduleAction::Trigger { .. }, Some(at)) = (&action, trigger_at) {
            let refused = self.fire(&key, true, at);
            if !refused.is_empty() {
                self.arm_schedule_timer();
                return Err(ScheduleControlError::Refused(format!(
                    "{chain}.{name}: the fire's job was refused: {}",
                    refused.join("; ")
                )));
            }
        }
        self.arm_schedule_timer();
        self.schedule_views()
            .into_iter()
            .find(|v| v.chain == chain && v.name == name)
            .ok_or_else(|| ScheduleControlError::NotFound("schedule vanished".to_string()))
    }

    pub(super) fn schedule_views(&self) -> Vec<ScheduleView> {
        let now = Utc::now();
        self.schedules
            .iter()
            .map(|((chain, name), run)| ScheduleView {
                chain: chain.clone(),
                name: name.clone(),
                cron: run.schedule.rule.expression().to_string(),
                timezone: run.schedule.rule.zone_name(),
                enabled: run.schedule.enabled,
                paused: run.paused,
                catch_up: run.schedule.catch_up,
                overlap: run.schedule.overlap,
                tenants: run.schedule.tenants.clone(),
                next_fire: if run.schedule.enabled && !run.paused {
                    run.schedule.rule.next_after(run.last.max(now))
                } else {
                    None
                },
                last_handled: run.last,
                last_job: run.last_jobs.last().copied(),
                backfill: run
                    .backfill
                    .iter()
                    .map(|at| BusinessDate {
                        at: *at,
                        zone: run.schedule.zone(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Why `schedule.pause`, `schedule.resume` or `schedule.trigger` did not do
/// what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScheduleControlError {
    #[error("{0}")]
    NotFound(String),
    /// A backfill of the schedule is still under way.
    #[error("{0}")]
    Busy(String),
    /// A value of the request that cannot be used (`at`, `from`, `to`).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A trigger whose fire created no job, with every tenant's reason.
    #[error("{0}")]
    Refused(String),
    #[error("the daemon is stopping; try again once it runs")]
    Stopping,
    /// The jobs the call made could not be committed and were refused.
    #[error("{0}")]
    Unavailable(String),
}

/// Why one tenant's job of a fire was refused, with per-field reasons.
fn refusal(tenant: Option<&str>, error: &super::SubmitError) -> String {
    let reason = match error {
        super::SubmitError::Invalid(fields) => fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    };
    match tenant {
        Some(tenant) => format!("tenant {tenant}: {reason}"),
        None => reason,
    }
}

/// Read stored schedule states at start.
pub(super) fn load_states(
    store: &store::Store,
) -> Result<HashMap<(String, String), StoredSchedule>, store::StoreError> {
    store.read_now(store::schedule_states)
}
