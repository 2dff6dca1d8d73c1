//! Write operations: every change the daemon makes to the database, as data,
//! so the engine can batch a whole round of transitions into one transaction.

use rusqlite::{OptionalExtension, Transaction, params};

use super::StoreError;

/// A job as first committed by `job.submit`.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: u64,
    pub target: String,
    pub chain: String,
    pub version: String,
    pub params: String,
    pub tenant: Option<String>,
    pub priority: i32,
    pub submitted_by: String,
    pub submitter_uid: Option<u32>,
    pub submitter_gid: Option<u32>,
    pub submitter_pid: Option<u32>,
    pub retry_of: Option<u64>,
    /// The first job of its retry chain (its own id for a new job).
    pub run_id: u64,
    /// `--until PROCESS`, kept so a retry keeps the partial plan.
    pub until: Option<String>,
    pub simulated: bool,
    pub created_at: i64,
    /// The instant the job runs as of (ms) and the zone it is read in.
    pub scheduled_at: Option<i64>,
    pub scheduled_zone: Option<String>,
    /// The job's secret parameter values, sealed (`crate::secrets`); the
    /// `params` text holds `***` for them.
    pub secrets: Option<Vec<u8>>,
    /// `(index in the chain, chain.process.activity)` of every activity the
    /// job runs.
    pub activities: Vec<(usize, String)>,
}

/// How an attempt ended, as stored.
#[derive(Debug, Clone)]
pub struct AttemptEnd {
    pub job_id: u64,
    pub idx: usize,
    pub number: u32,
    pub state: &'static str,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error_id: Option<String>,
    pub error: Option<String>,
    pub finished_at: i64,
    pub log_bytes: u64,
    pub log_dropped: u64,
    /// The last lines of a failed attempt's output, masked.
    pub error_tail: Option<String>,
    /// What the attempt said with `error <text>`.
    pub error_message: Option<String>,
    /// What the attempt used, when a process ran.
    pub resources: Option<holdfast_api::ResourceUse>,
}

/// An audit row: who called what, and how it went.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub at: i64,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub pid: Option<u32>,
    pub method: &'static str,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

/// One change to the database.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Record a chain definition version (kept once per content hash).
    Definition {
        version: String,
        chain: String,
        file: String,
        source: String,
        loaded_at: i64,
    },
    InsertJob(Box<NewJob>),
    /// The client idempotency key of a job just inserted, with the request
    /// (JSON) it came with.
    JobRequest {
        job_id: u64,
        uid: u32,
        request_id: String,
        request: String,
    },
    /// Why an attempt's log file could not be created.
    AttemptLogError {
        job_id: u64,
        idx: usize,
        number: u32,
        error: String,
    },
    JobState {
        id: u64,
        state: &'static str,
        started_at: Option<i64>,
        finished_at: Option<i64>,
        reason: Option<String>,
        alerts: u32,
    },
    /// An alert: the new count and what it said.
    JobAlert {
        id: u64,
        alerts: u32,
        text: String,
    },
    ActivityState {
        job_id: u64,
        idx: usize,
        state: &'static str,
    },
    /// The outcome a job's handlers answer, decided once its graph is done.
    JobOutcome {
        id: u64,
        outcome: &'static str,
    },
    /// A handler that `undoes` this activity succeeded.
    ActivityUndone {
        job_id: u64,
        idx: usize,
    },
    ActivityProgress {
        job_id: u64,
        idx: usize,
        progress: f64,
        text: Option<String>,
    },
    ActivityCheckpoint {
        job_id: u64,
        idx: usize,
        checkpoint: String,
    },
    ActivityOutputs {
        job_id: u64,
        idx: usize,
        outputs: String,
    },
    ActivityInterruptions {
        job_id: u64,
        idx: usize,
        interruptions: u32,
    },
    InsertAttempt {
        job_id: u64,
        idx: usize,
        number: u32,
        started_at: i64,
    },
    AttemptPid {
        job_id: u64,
        idx: usize,
        number: u32,
        pid: u32,
        pid_start: Option<u64>,
    },
    AttemptEnd(Box<AttemptEnd>),
    /// The Slurm job id `sbatch` gave an attempt (the Slurm executor).
    AttemptSlurmJob {
        job_id: u64,
        idx: usize,
        number: u32,
        slurm_job_id: u64,
    },
    /// How far into its control file a Slurm attempt was applied.
    AttemptControlOffset {
        job_id: u64,
        idx: usize,
        number: u32,
        offset: u64,
    },
    Audit(Box<AuditRow>),
    /// A schedule's state: paused, the last instant handled, its last job.
    Schedule {
        chain: String,
        name: String,
        paused: bool,
        last_fire: i64,
        last_job: Option<u64>,
    },
    /// Delete finished jobs with their activities and attempts (retention).
    DeleteJobs(Vec<u64>),
    /// A fan-out's item list (JSON), fixed from its first start on.
    ActivityItems {
        job_id: u64,
        idx: usize,
        items: String,
        total: u32,
    },
    /// An attempt of one fan-out item started (its row made if new).
    ItemStart {
        job_id: u64,
        idx: usize,
        item: u32,
        attempt: u32,
        started_at: i64,
        /// The Slurm job array the attempt is submitted in (its job name),
        /// committed before `sbatch` runs.
        slurm_name: Option<String>,
    },
    /// What Slurm told of a fan-out item's attempt: its array's job id,
    /// the task's own job id (each once known; None leaves it as is).
    ItemSlurmJob {
        job_id: u64,
        idx: usize,
        item: u32,
        attempt: u32,
        slurm_job_id: Option<u64>,
        task_job_id: Option<u64>,
    },
    /// How far into its control file a Slurm item's attempt was applied.
    ItemControlOffset {
        job_id: u64,
        idx: usize,
        item: u32,
        attempt: u32,
        offset: u64,
    },
    /// The pid of a fan-out item's running attempt.
    ItemPid {
        job_id: u64,
        idx: usize,
        item: u32,
        pid: u32,
        pid_start: Option<u64>,
    },
    /// A fan-out item's state alone (a retry due, a stop).
    ItemState {
        job_id: u64,
        idx: usize,
        item: u32,
        state: &'static str,
    },
    /// How an item's attempt ended, and the item's state after it.
    ItemEnd {
        item: u32,
        item_state: &'static str,
        interruptions: u32,
        end: Box<AttemptEnd>,
    },
    /// A fan-out item's latest checkpoint and outputs (JSON), whichever
    /// changed.
    ItemControl {
        job_id: u64,
        idx: usize,
        item: u32,
        checkpoint: Option<String>,
        outputs: Option<String>,
    },
    /// `job.retry`: the items of `from`'s fan-out carried into the new
    /// job, succeeded ones as they were and the rest pending again (with
    /// their checkpoints).
    CarryItems {
        from: u64,
        job_id: u64,
        idx: usize,
    },
    /// Delete audit rows by id (retention).
    DeleteAudit(Vec<i64>),
    /// An event of the outbox, committed with the transition it reports.
    Event(Box<EventRow>),
    /// Delete events older than `before` (ms) and all but the newest
    /// `keep` (retention).
    DeleteEvents {
        before: i64,
        keep: u64,
    },
    /// Notifications to deliver, and the last event they were made for.
    QueueDeliveries {
        deliveries: Vec<NewDelivery>,
        last_event: u64,
        at: i64,
    },
    /// How a delivery attempt went: `state` is `delivered`, `pending`
    /// (tried again at `next_at`) or `failed` (no attempt left).
    DeliveryAttempt {
        id: u64,
        state: &'static str,
        attempts: u32,
        next_at: i64,
        error: Option<String>,
        at: i64,
    },
    /// `hfctl notifications retry`: deliver again now.
    RetryDelivery {
        id: u64,
        at: i64,
    },
    /// Why a schedule's fire created no job (None clears it).
    ScheduleError {
        chain: String,
        name: String,
        error: Option<String>,
        at: i64,
    },
    /// The fires of a schedule's backfill not yet submitted (ms), oldest
    /// first; empty when none waits.
    ScheduleBackfill {
        chain: String,
        name: String,
        fires: Vec<i64>,
    },
}

/// A notification to deliver: one event for one rule.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub event_id: u64,
    pub rule: String,
    pub kind: String,
    pub job_id: Option<u64>,
    pub payload: String,
    /// The rule coalesces: the event joins the rule's open digest, or opens
    /// one that is sent at this time (ms).
    pub digest_until: Option<i64>,
}

/// An event as stored: the columns filters use, and the whole payload.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: u64,
    pub kind: String,
    pub at: i64,
    pub job_id: Option<u64>,
    pub chain: Option<String>,
    pub tenant: Option<String>,
    /// The `holdfast_api::Event`, as JSON.
    pub payload: String,
}

impl WriteOp {
    /// The job this write is about, when it is about one job (a job row,
    /// one of its activities, attempts or items, its event).
    pub fn job_id(&self) -> Option<u64> {
        match self {
            WriteOp::InsertJob(job) => Some(job.id),
            WriteOp::JobState { id, .. }
            | WriteOp::JobAlert { id, .. }
            | WriteOp::JobOutcome { id, .. } => Some(*id),
            WriteOp::JobRequest { job_id, .. }
            | WriteOp::AttemptLogError { job_id, .. }
            | WriteOp::ActivityState { job_id, .. }
            | WriteOp::ActivityUndone { job_id, .. }
            | WriteOp::ActivityProgress { job_id, .. }
            | WriteOp::ActivityCheckpoint { job_id, .. }
            | WriteOp::ActivityOutputs { job_id, .. }
            | WriteOp::ActivityInterruptions { job_id, .. }
            | WriteOp::InsertAttempt { job_id, .. }
            | WriteOp::AttemptPid { job_id, .. }
            | WriteOp::AttemptSlurmJob { job_id, .. }
            | WriteOp::AttemptControlOffset { job_id, .. }
            | WriteOp::ActivityItems { job_id, .. }
            | WriteOp::ItemStart { job_id, .. }
            | WriteOp::ItemSlurmJob { job_id, .. }
            | WriteOp::ItemControlOffset { job_id, .. }
            | WriteOp::ItemPid { job_id, .. }
            | WriteOp::ItemState { job_id, .. }
            | WriteOp::ItemControl { job_id, .. }
            | WriteOp::CarryItems { job_id, .. } => Some(*job_id),
            WriteOp::AttemptEnd(end) => Some(end.job_id),
            WriteOp::ItemEnd { end, .. } => Some(end.job_id),
            WriteOp::Event(event) => event.job_id,
            WriteOp::Definition { .. }
            | WriteOp::Audit(_)
            | WriteOp::Schedule { .. }
            | WriteOp::DeleteJobs(_)
            | WriteOp::DeleteAudit(_)
            | WriteOp::DeleteEvents { .. }
            | WriteOp::QueueDeliveries { .. }
            | WriteOp::DeliveryAttempt { .. }
            | WriteOp::RetryDelivery { .. }
            | WriteOp::ScheduleError { .. }
            | WriteOp::ScheduleBackfill { .. } => None,
        }
    }

    /// The id of the job this op creates, if it creates one.
    pub(super) fn new_job_id(&self) -> Option<u64> {
        match self {
            WriteOp::InsertJob(job) => Some(job.id),
            _ => None,
        }
    }

    pub(super) fn apply(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        match self {
            WriteOp::Definition {
                version,
                chain,
                file,
                source,
                loaded_at,
            } => {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO definitions (version, chain, file, source, loaded_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![version, chain, file, source, loaded_at])?;
            }
            WriteOp::InsertJob(job) => {
                tx.prepare_cached(
                    "INSERT INTO jobs (id, target, chain, version, params, tenant, priority, state,
                        submitted_by, submitter_uid, submitter_gid, submitter_pid, retry_of, created_at,
                        simulated, run_id, until, scheduled_at, scheduled_zone)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                        ?15, ?16, ?17, ?18)",
                )?
                .execute(params![
                    job.id as i64,
                    job.target,
                    job.chain,
                    job.version,
                    job.params,
                    job.tenant,
                    job.priority,
                    job.submitted_by,
                    job.submitter_uid,
                    job.submitter_gid,
                    job.submitter_pid,
                    job.retry_of.map(|r| r as i64),
                    job.created_at,
                    job.simulated,
                    job.run_id as i64,
                    job.until,
                    job.scheduled_at,
                    job.scheduled_zone,
                ])?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO activities (job_id, idx, path, state) VALUES (?1, ?2, ?3, 'pending')",
                )?;
                for (idx, path) in &job.activities {
                    insert.execute(params![job.id as i64, *idx as i64, path])?;
                }
                if let Some(sealed) = &job.secrets {
                    tx.prepare_cached("INSERT INTO job_secrets (job_id, sealed) VALUES (?1, ?2)")?
                        .execute(params![job.id as i64, sealed])?;
                }
                // The job id high-water mark is raised once per
                // transaction, by `raise_high_water`.
            }
            WriteOp::JobState {
                id,
                state,
                started_at,
                finished_at,
                reason,
                alerts,
            } => {
                tx.prepare_cached(
                    "UPDATE jobs SET state = ?2, started_at = COALESCE(?3, started_at),
                        finished_at = COALESCE(?4, finished_at), reason = COALESCE(?5, reason),
                        alerts = ?6
                     WHERE id = ?1",
                )?
                .execute(params![
                    *id as i64,
                    state,
                    started_at,
                    finished_at,
                    reason,
                    alerts
                ])?;
            }
            WriteOp::JobAlert { id, alerts, text } => {
                tx.prepare_cached("UPDATE jobs SET alerts = ?2, last_alert = ?3 WHERE id = ?1")?
                    .execute(params![*id as i64, alerts, text])?;
            }
            WriteOp::JobOutcome { id, outcome } => {
                tx.prepare_cached("UPDATE jobs SET outcome = ?2 WHERE id = ?1")?
                    .execute(params![*id as i64, outcome])?;
            }
            WriteOp::ActivityUndone { job_id, idx } => {
                tx.prepare_cached(
                    "UPDATE activities SET undone = 1 WHERE job_id = ?1 AND idx = ?2",
                )?
                .execute(params![*job_id as i64, *idx as i64])?;
            }
            WriteOp::ActivityState { job_id, idx, state } => {
                tx.prepare_cached(
                    "UPDATE activities SET state = ?3 WHERE job_id = ?1 AND idx = ?2",
                )?
                .execute(params![*job_id as i64, *idx as i64, state])?;
            }
            WriteOp::ActivityProgress {
                job_id,
                idx,
                progress,
                text,
            } => {
                tx.prepare_cached(
                    "UPDATE activities SET progress = ?3, progress_text = ?4 WHERE job_id = ?1 AND idx = ?2",
                )?
                .execute(params![*job_id as i64, *idx as i64, progress, text])?;
            }
            WriteOp::ActivityCheckpoint {
                job_id,
                idx,
                checkpoint,
            } => {
                tx.prepare_cached(
                    "UPDATE activities SET checkpoint = ?3 WHERE job_id = ?1 AND idx = ?2",
                )?
                .execute(params![*job_id as i64, *idx as i64, checkpoint])?;
            }
            WriteOp::ActivityOutputs {
                job_id,
                idx,
                outputs,
            } => {
                tx.prepare_cached(
                    "UPDATE activities SET outputs = ?3 WHERE job_id = ?1 AND idx = ?2",
                )?
                .execute(params![*job_id as i64, *idx as i64, outputs])?;
            }
            WriteOp::ActivityInterruptions {
                job_id,
                idx,
                interruptions,
            } => {
                tx.prepare_cached(
                    "UPDATE activities SET interruptions = ?3 WHERE job_id = ?1 AND idx = ?2",
                )?
                .execute(params![*job_id as i64, *idx as i64, interruptions])?;
            }
            WriteOp::InsertAttempt {
                job_id,
                idx,
                number,
                started_at,
            } => {
                tx.prepare_cached(
                    "INSERT INTO attempts (job_id, idx, number, state, started_at)
                     VALUES (?1, ?2, ?3, 'running', ?4)",
                )?
                .execute(params![
                    *job_id as i64,
                    *idx as i64,
                    number,
                    started_at
                ])?;
            }
            WriteOp::AttemptPid {
                job_id,
                idx,
                number,
                pid,
                pid_start,
            } => {
                tx.prepare_cached(
                    "UPDATE attempts SET pid = ?4, pid_start = ?5
                     WHERE job_id = ?1 AND idx = ?2 AND number = ?3",
                )?
                .execute(params![
                    *job_id as i64,
                    *idx as i64,
                    number,
                    pid,
                    pid_start.map(|s| s as i64)
                ])?;
            }
            WriteOp::AttemptControlOffset {
                job_id,
                idx,
                number,
                offset,
            } => {
                tx.prepare_cached(
                    "UPDATE attempts SET control_offset = ?4
                     WHERE job_id = ?1 AND idx = ?2 AND number = ?3",
                )?
                .execute(params![
                    *job_id as i64,
                    *idx as i64,
                    number,
                    *offset as i64
                ])?;
            }
            WriteOp::AttemptSlurmJob {
                job_id,
                idx,
                number,
                slurm_job_id,
            } => {
                tx.prepare_cached(
                    "UPDATE attempts SET slurm_job_id = ?4
                     WHERE job_id = ?1 AND idx = ?2 AND number = ?3",
                )?
                .execute(params![
                    *job_id as i64,
                    *idx as i64,
                    number,
                    *slurm_job_id as i64
                ])?;
            }
            WriteOp::AttemptEnd(end) => {
                let usage = end.resources.as_ref();
                // SQLite integers are signed; no real figure comes near.
                let figure = |v: u64| v.min(i64::MAX as u64) as i64;
                tx.prepare_cached(
                    "UPDATE attempts SET state = ?4, exit_code = ?5, signal = ?6, error_id = ?7,
                        error = ?8, finished_at = ?9, log_bytes = ?10, log_dropped = ?11,
                        error_tail = ?12, error_message = ?13, usage_source = ?14,
                        wall_ms = ?15, user_cpu_us = ?16, system_cpu_us = ?17,
                        peak_memory_bytes = ?18, io_read_bytes = ?19, io_write_bytes = ?20
                     WHERE job_id = ?1 AND idx = ?2 AND number = ?3",
                )?
                .execute(params![
                    end.job_id as i64,
                    end.idx as i64,
                    end.number,
                    end.state,
                    end.exit_code,
                    end.signal,
                    end.error_id,
                    end.error,
                    end.finished_at,
                    end.log_bytes as i64,
                    end.log_dropped as i64,
                    end.error_tail,
                    end.error_message,
                    usage.map(|u| u.source.as_str()),
                    usage.map(|u| figure(u.wall_ms)),
                    usage.map(|u| figure(u.user_cpu_us)),
                    usage.map(|u| figure(u.system_cpu_us)),
                    usage.and_then(|u| u.peak_memory_bytes).map(figure),
                    usage.and_then(|u| u.io_read_bytes).map(figure),
                    usage.and_then(|u| u.io_write_bytes).map(figure),
                ])?;
            }
            WriteOp::Schedule {
                chain,
                name,
                paused,
                last_fire,
                last_job,
            } => {
                tx.prepare_cached(
                    "INSERT INTO schedules (chain, name, paused, last_fire, last_job)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (chain, name) DO UPDATE SET paused = ?3, last_fire = ?4,
                        last_job = COALESCE(?5, last_job)",
                )?
                .execute(params![
                    chain,
                    name,
                    paused,
                    last_fire,
                    last_job.map(|j| j as i64)
                ])?;
            }
            WriteOp::ActivityItems { .. }
            | WriteOp::ItemStart { .. }
            | WriteOp::ItemSlurmJob { .. }
            | WriteOp::ItemControlOffset { .. }
            | WriteOp::ItemPid { .. }
            | WriteOp::ItemState { .. }
            | WriteOp::ItemEnd { .. }
            | WriteOp::ItemControl { .. }
            | WriteOp::CarryItems { .. } => super::items::apply(self, tx)?,
            WriteOp::DeleteJobs(ids) => {
                let mut jobs = tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?;
                let mut activities =
                    tx.prepare_cached("DELETE FROM activities WHERE job_id = ?1")?;
                let mut attempts = tx.prepare_cached("DELETE FROM attempts WHERE job_id = ?1")?;
                let mut items = tx.prepare_cached("DELETE FROM items WHERE job_id = ?1")?;
                let mut secrets = tx.prepare_cached("DELETE FROM job_secrets WHERE job_id = ?1")?;
                for id in ids {
                    let id = *id as i64;
                    secrets.execute(params![id])?;
                    attempts.execute(params![id])?;
                    items.execute(params![id])?;
                    activities.execute(params![id])?;
                    jobs.execute(params![id])?;
                }
            }
            WriteOp::Event(event) => {
                tx.prepare_cached(
                    "INSERT INTO events (id, kind, at, job_id, chain, tenant, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    event.id as i64,
                    event.kind,
                    event.at,
                    event.job_id.map(|j| j as i64),
                    event.chain,
                    event.tenant,
                    event.payload,
                ])?;
            }
            WriteOp::QueueDeliveries {
                deliveries,
                last_event,
                at,
            } => {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO deliveries
                        (event_id, rule, kind, job_id, payload, state, next_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6)",
                )?;
                // A digest collects events (a row each) until its time
                // comes; then it is delivered like any other, and the next
                // event opens a new one. One whose time has come takes no
                // more: its payload may already be on its way.
                let mut open_digest = tx.prepare_cached(
                    "SELECT id FROM deliveries
                     WHERE rule = ?1 AND state = 'collecting' AND next_at > ?2",
                )?;
                let mut open = tx.prepare_cached(
                    "INSERT OR IGNORE INTO deliveries
                        (event_id, rule, kind, payload, state, next_at, created_at)
                     VALUES (?1, ?2, 'digest', json_object('kind', 'digest', 'rule', ?2),
                        'collecting', ?3, ?4)
                     RETURNING id",
                )?;
                let mut join = tx.prepare_cached(
                    "INSERT OR IGNORE INTO digest_events (delivery_id, event_id, payload)
                     VALUES (?1, ?2, ?3)",
                )?;
                for d in deliveries {
                    if let Some(until) = d.digest_until {
                        let digest: Option<i64> = match open_digest
                            .query_row(params![d.rule, at], |r| r.get(0))
                            .optional()?
                        {
                            Some(id) => Some(id),
                            None => open
                                .query_row(params![d.event_id as i64, d.rule, until, at], |r| {
                                    r.get(0)
                                })
                                .optional()?,
                        };
                        // None: this event opened a digest before (queued
                        // again after a restart), which has it already.
                        if let Some(digest) = digest {
                            join.execute(params![digest, d.event_id as i64, d.payload])?;
                        }
                        continue;
                    }
                    insert.execute(params![
                        d.event_id as i64,
                        d.rule,
                        d.kind,
                        d.job_id.map(|j| j as i64),
                        d.payload,
                        at
                    ])?;
                }
                tx.prepare_cached(
                    "INSERT INTO notify_cursor (singleton, last_event) VALUES (1, ?1)
                     ON CONFLICT (singleton) DO UPDATE SET last_event = MAX(last_event, ?1)",
                )?
                .execute(params![*last_event as i64])?;
            }
            WriteOp::DeliveryAttempt {
                id,
                state,
                attempts,
                next_at,
                error,
                at,
            } => {
                tx.prepare_cached(
                    "UPDATE deliveries SET state = ?2, attempts = ?3, next_at = ?4,
                        last_error = COALESCE(?5, last_error),
                        delivered_at = CASE WHEN ?2 = 'delivered' THEN ?6 ELSE delivered_at END
                     WHERE id = ?1",
                )?
                .execute(params![*id as i64, state, attempts, next_at, error, at])?;
            }
            WriteOp::RetryDelivery { id, at } => {
                tx.prepare_cached(
                    "UPDATE deliveries SET state = 'pending', next_at = ?2
                     WHERE id = ?1 AND state != 'delivered'",
                )?
                .execute(params![*id as i64, at])?;
            }
            WriteOp::DeleteEvents { before, keep } => {
                tx.prepare_cached(
                    "DELETE FROM events WHERE at < ?1
                        OR id <= (SELECT COALESCE(MAX(id), 0) FROM events) - ?2",
                )?
                .execute(params![before, *keep as i64])?;
                // Deliveries that are over (delivered, or failed for good)
                // go with their events' age; pending ones stay.
                tx.prepare_cached(
                    "DELETE FROM deliveries WHERE state != 'pending' AND created_at < ?1",
                )?
                .execute(params![before])?;
                tx.prepare_cached(
                    "DELETE FROM digest_events
                     WHERE delivery_id NOT IN (SELECT id FROM deliveries)",
                )?
                .execute([])?;
            }
            WriteOp::ScheduleError {
                chain,
                name,
                error,
                at,
            } => {
                tx.prepare_cached(
                    "INSERT INTO schedules (chain, name, last_error, last_error_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (chain, name) DO UPDATE SET last_error = ?3, last_error_at = ?4",
                )?
                .execute(params![chain, name, error, at])?;
            }
            WriteOp::ScheduleBackfill { chain, name, fires } => {
                let fires =
                    (!fires.is_empty()).then(|| serde_json::Value::from(fires.clone()).to_string());
                tx.prepare_cached(
                    "INSERT INTO schedules (chain, name, backfill) VALUES (?1, ?2, ?3)
                     ON CONFLICT (chain, name) DO UPDATE SET backfill = ?3",
                )?
                .execute(params![chain, name, fires])?;
            }
            WriteOp::DeleteAudit(ids) => {
                let mut delete = tx.prepare_cached("DELETE FROM audit WHERE id = ?1")?;
                for id in ids {
                    delete.execute(params![id])?;
                }
            }
            WriteOp::JobRequest {
                job_id,
                uid: _,
                request_id,
                request,
            } => {
                tx.prepare_cached("UPDATE jobs SET request_id = ?2, request = ?3 WHERE id = ?1")?
                    .execute(params![*job_id as i64, request_id, request])?;
            }
            WriteOp::AttemptLogError {
                job_id,
                idx,
                number,
                error,
            } => {
                tx.prepare_cached(
                    "UPDATE attempts SET log_error = ?4 WHERE job_id = ?1 AND idx = ?2 AND number = ?3",
                )?
                .execute(params![*job_id as i64, *idx as i64, number, error])?;
            }
            WriteOp::Audit(row) => {
                tx.prepare_cached(
                    "INSERT INTO audit (at, uid, user, pid, method, target, outcome, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    row.at,
                    row.uid,
                    row.user,
                    row.pid,
                    row.method,
                    row.target,
                    row.outcome,
                    row.detail
                ])?;
            }
        }
        Ok(())
    }
}

/// Raise the job id high-water mark to `id`, in the transaction that
/// creates the job: the id is never given out again, even once retention
/// deleted the job. Once per transaction, for its highest new id (a batch
/// of 64 submissions updated the one row 64 times).
pub(super) fn raise_high_water(tx: &Transaction<'_>, id: u64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE job_id_high_water SET last_id = MAX(last_id, ?1) WHERE singleton = 1",
    )?
    .execute(params![id as i64])?;
    Ok(())
}
