//! Read queries. Every query is indexed (by primary key, `jobs_by_state`,
//! `jobs_by_chain`, `jobs_by_tenant` or `jobs_by_created`), so its cost
//! does not grow with the job history.

use holdfast_api::{
    ActivityRun, ActivityState, Attempt, AttemptState, ItemCounts, Job, JobList, JobState,
    JobSummary, ResourceUse,
};
use holdfast_workflow::{BusinessDate, DateZone};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value};

use super::StoreError;

/// Render a store timestamp (ms since the epoch) as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The resource use stored on an attempt row, from column `first` on
/// (`usage_source`, then the figures in `ResourceUse` order).
fn resource_use(row: &Row<'_>, first: usize) -> rusqlite::Result<Option<ResourceUse>> {
    let Some(source) = row.get::<_, Option<String>>(first)? else {
        return Ok(None);
    };
    let figure = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(row
            .get::<_, Option<i64>>(first + i)?
            .map(|v| v.max(0) as u64))
    };
    Ok(Some(ResourceUse {
        source,
        wall_ms: figure(1)?.unwrap_or(0),
        user_cpu_us: figure(2)?.unwrap_or(0),
        system_cpu_us: figure(3)?.unwrap_or(0),
        peak_memory_bytes: figure(4)?,
        io_read_bytes: figure(5)?,
        io_write_bytes: figure(6)?,
    }))
}

fn parse_job_state(s: &str) -> JobState {
    JobState::parse(s).unwrap_or(JobState::Failed)
}

pub(super) fn json_object(text: Option<String>) -> Map<String, Value> {
    match text.and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// SQL for a job's overall progress, in percent: the share of its work
/// done, not whether it ended. A fan-out counts its succeeded items; other
/// activities count 100 once succeeded or skipped, nothing once failed or
/// cancelled, and their last reported figure while they run.
const PROGRESS_SQL: &str = "(SELECT COALESCE(AVG(CASE
        WHEN a.items_total > 0 THEN 100.0 * (SELECT COUNT(*) FROM items i
            WHERE i.job_id = a.job_id AND i.idx = a.idx AND i.state = 'succeeded')
            / a.items_total
        WHEN a.state IN ('succeeded', 'skipped') THEN 100.0
        WHEN a.state IN ('failed', 'cancelled') THEN 0.0
        ELSE COALESCE(a.progress, 0.0) END), 0.0)
     FROM activities a WHERE a.job_id = jobs.id)";

fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<JobSummary> {
    let state: String = row.get("state")?;
    Ok(JobSummary {
        id: row.get::<_, i64>("id")? as u64,
        target: row.get("target")?,
        chain: row.get("chain")?,
        state: parse_job_state(&state),
        alerts: row.get("alerts")?,
        tenant: row.get("tenant")?,
        priority: row.get("priority")?,
        submitted_by: row.get("submitted_by")?,
        created_at: rfc3339(row.get("created_at")?),
        started_at: row.get::<_, Option<i64>>("started_at")?.map(rfc3339),
        finished_at: row.get::<_, Option<i64>>("finished_at")?.map(rfc3339),
        progress: row.get("progress")?,
        simulated: row.get("simulated")?,
        waiting: None,
    })
}

/// The page sizes `job.list` accepts.
pub const LIST_LIMITS: std::ops::RangeInclusive<u32> = 1..=1000;

/// Filters of `job.list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<JobState>,
    pub chain: Option<String>,
    pub tenant: Option<String>,
    /// Only jobs created at or after this instant (ms since the epoch).
    pub since_ms: Option<i64>,
    pub limit: u32,
    pub before: Option<u64>,
}

/// Newest jobs first, one page.
pub fn list_jobs(conn: &Connection, filter: &ListFilter) -> Result<JobList, StoreError> {
    let limit = filter.limit.clamp(*LIST_LIMITS.start(), *LIST_LIMITS.end());
    let before = filter.before.map(|b| b as i64).unwrap_or(i64::MAX);
    let sql = list_sql(filter);
    let mut stmt = conn.prepare_cached(&sql)?;
    let state = filter.state.map(|s| s.as_str());
    let mut bound = stmt.raw_bind_parameter(1, before).map(|_| ());
    if state.is_some() {
        bound = bound.and(stmt.raw_bind_parameter(2, state));
    }
    if filter.chain.is_some() {
        bound = bound.and(stmt.raw_bind_parameter(3, filter.chain.as_deref()));
    }
    if filter.tenant.is_some() {
        bound = bound.and(stmt.raw_bind_parameter(5, filter.tenant.as_deref()));
    }
    if let Some(since) = filter.since_ms {
        bound = bound.and(stmt.raw_bind_parameter(6, since));
    }
    bound.and(stmt.raw_bind_parameter(4, limit as i64))?;
    let mut rows = stmt.raw_query();
    let mut jobs = Vec::new();
    while let Some(row) = rows.next()? {
        jobs.push(summary_from_row(row)?);
    }
    let next_before = if jobs.len() == limit as usize {
        jobs.last().map(|j| j.id)
    } else {
        None
    };
    Ok(JobList { jobs, next_before })
}

/// The SQL of one `job.list` page: parameters ?1 before, ?2 state, ?3 chain,
/// ?4 limit, ?5 tenant, ?6 since; each filter reads through an index.
pub(crate) fn list_sql(filter: &ListFilter) -> String {
    let mut sql = format!("SELECT jobs.*, {PROGRESS_SQL} AS progress FROM jobs WHERE id < ?1");
    if filter.state.is_some() {
        sql.push_str(" AND state = ?2");
    }
    if filter.chain.is_some() {
        sql.push_str(" AND chain = ?3");
    }
    if filter.tenant.is_some() {
        sql.push_str(" AND tenant = ?5");
    }
    if filter.since_ms.is_some() {
        // Ids follow creation, so the walk down the ids may stop at the
        // first job of the window, found through `jobs_by_created`. The
        // margin of a minute keeps jobs whose id and creation time were
        // taken in a different order by concurrent submissions.
        sql.push_str(
            " AND created_at >= ?6 AND id >= COALESCE((SELECT id FROM jobs \
             WHERE created_at >= ?6 - 60000 ORDER BY created_at LIMIT 1), 0)",
        );
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?4");
    sql
}

/// One job with its activities and attempts, or None.
pub fn get_job(conn: &Connection, id: u64) -> Result<Option<Job>, StoreError> {
    let sql = format!("SELECT jobs.*, {PROGRESS_SQL} AS progress FROM jobs WHERE id = ?1");
    let head = conn
        .prepare_cached(&sql)?
        .query_row(params![id as i64], |row| {
            let summary = summary_from_row(row)?;
            Ok((
                summary,
                row.get::<_, String>("params")?,
                row.get::<_, Option<u32>>("submitter_uid")?,
                row.get::<_, Option<u32>>("submitter_pid")?,
                row.get::<_, String>("version")?,
                row.get::<_, Option<String>>("reason")?,
                row.get::<_, Option<i64>>("retry_of")?,
                row.get::<_, Option<String>>("last_alert")?,
                row.get::<_, Option<String>>("outcome")?,
                row.get::<_, Option<i64>>("run_id")?,
                row.get::<_, Option<String>>("until")?,
                business_date(row.get("scheduled_at")?, row.get("scheduled_zone")?),
            ))
        })
        .optional()?;
    let Some((
        summary,
        params_text,
        uid,
        pid,
        version,
        reason,
        retry_of,
        last_alert,
        outcome,
        run_id,
        until,
        scheduled,
    )) = head
    else {
        return Ok(None);
    };

    let mut activities: Vec<ActivityRun> = Vec::new();
    let mut outputs = Map::new();
    let mut index_of = std::collections::HashMap::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT idx, path, state, progress, progress_text, outputs, undone, items_total
             FROM activities WHERE job_id = ?1 ORDER BY idx",
        )?;
        let mut rows = stmt.query(params![id as i64])?;
        while let Some(row) = rows.next()? {
            let idx: i64 = row.get(0)?;
            let items_total: Option<u32> = row.get(7)?;
            let path: String = row.get(1)?;
            let state: String = row.get(2)?;
            let mut parts = path.splitn(3, '.');
            let _chain = parts.next();
            let process = parts.next().unwrap_or_default().to_string();
            let activity = parts.next().unwrap_or_default().to_string();
            let produced = json_object(row.get(5)?);
            if !produced.is_empty() {
                outputs.insert(format!("{process}.{activity}"), Value::Object(produced));
            }
            index_of.insert(idx, activities.len());
            activities.push(ActivityRun {
                path,
                activity,
                state: ActivityState::parse(&state).unwrap_or(ActivityState::Failed),
                progress: row.get(3)?,
                progress_text: row.get(4)?,
                attempts: Vec::new(),
                // Process names of handlers are kept for them (`[handler.<kind>]`).
                handler: holdfast_workflow::HandlerKind::parse(&process)
                    .map(|k| k.as_str().to_string()),
                undone: row.get::<_, i64>(6)? != 0,
                items: items_total.map(|total| ItemCounts {
                    total,
                    ..ItemCounts::default()
                }),
                process,
            });
        }
    }
    for (&idx, &i) in &index_of {
        if let Some(counts) = activities[i].items.as_mut() {
            super::items::item_counts(conn, id, idx, counts)?;
        }
    }
    {
        let mut stmt = conn.prepare_cached(
            "SELECT idx, number, state, pid, exit_code, signal, error_id, error, started_at,
                    finished_at, log_bytes, log_dropped, error_tail, error_message,
                usage_source, wall_ms, user_cpu_us, system_cpu_us, peak_memory_bytes,
                io_read_bytes, io_write_bytes, slurm_job_id
             FROM attempts WHERE job_id = ?1 ORDER BY idx, number",
        )?;
        let mut rows = stmt.query(params![id as i64])?;
        while let Some(row) = rows.next()? {
            let idx: i64 = row.get(0)?;
            let state: String = row.get(2)?;
            let attempt = Attempt {
                number: row.get(1)?,
                state: AttemptState::parse(&state).unwrap_or(AttemptState::Failed),
                pid: row.get(3)?,
                exit_code: row.get(4)?,
                signal: row.get(5)?,
                error_id: row.get(6)?,
                error: row.get(7)?,
                started_at: rfc3339(row.get(8)?),
                finished_at: row.get::<_, Option<i64>>(9)?.map(rfc3339),
                log_bytes: row.get::<_, i64>(10)? as u64,
                log_dropped: row.get::<_, i64>(11)? as u64,
                error_tail: row.get(12)?,
                error_message: row.get(13)?,
                resources: resource_use(row, 14)?,
                slurm_job_id: row.get::<_, Option<i64>>(21)?.map(|id| id as u64),
            };
            if let Some(&i) = index_of.get(&idx) {
                activities[i].attempts.push(attempt);
            }
        }
    }

    Ok(Some(Job {
        id: summary.id,
        target: summary.target,
        chain: summary.chain,
        state: summary.state,
        alerts: summary.alerts,
        last_alert,
        params: json_object(Some(params_text)),
        tenant: summary.tenant,
        priority: summary.priority,
        submitted_by: summary.submitted_by,
        submitter_uid: uid,
        submitter_pid: pid,
        version,
        created_at: summary.created_at,
        started_at: summary.started_at,
        finished_at: summary.finished_at,
        progress: summary.progress,
        reason,
        retry_of: retry_of.map(|r| r as u64),
        run_id: run_id.map_or(summary.id, |r| r as u64),
        until,
        simulated: summary.simulated,
        outputs,
        activities,
        outcome: outcome.as_deref().map(parse_job_state),
        scheduled_at: scheduled.map(|d| d.rfc3339()),
        waiting: None,
    }))
}

/// A job's `scheduled_at` and `scheduled_zone` columns; None for jobs
/// stored before jobs had them.
fn business_date(at: Option<i64>, zone: Option<String>) -> Option<BusinessDate> {
    let at = chrono::DateTime::from_timestamp_millis(at?)?;
    let zone = zone
        .and_then(|name| DateZone::parse(&name).ok())
        .unwrap_or(DateZone::Local);
    Some(BusinessDate { at, zone })
}

/// The job state alone (cheap; used by watchers).
pub fn job_state(conn: &Connection, id: u64) -> Result<Option<JobState>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT state FROM jobs WHERE id = ?1")?
        .query_row(params![id as i64], |r| r.get::<_, String>(0))
        .optional()?
        .map(|s| parse_job_state(&s)))
}

/// The job `uid` submitted with client key `request_id`, with the request
/// (JSON) it came with.
pub fn job_by_request(
    conn: &Connection,
    uid: u32,
    request_id: &str,
) -> Result<Option<(u64, Option<String>)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, request FROM jobs WHERE submitter_uid = ?1 AND request_id = ?2",
        )?
        .query_row(params![uid, request_id], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })
        .optional()?)
}

/// Queued jobs, running jobs and running attempts as stored (indexed), for
/// `daemon.info` while the engine is held back and cannot count its own.
pub fn stored_counts(conn: &Connection) -> Result<(usize, usize, usize), StoreError> {
    let count = |sql: &str| -> Result<usize, StoreError> {
        let n: i64 = conn.prepare_cached(sql)?.query_row([], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    };
    Ok((
        count("SELECT COUNT(*) FROM jobs WHERE state = 'queued'")?,
        count("SELECT COUNT(*) FROM jobs WHERE state = 'running'")?,
        count("SELECT COUNT(*) FROM attempts WHERE state = 'running'")?
            + count("SELECT COUNT(*) FROM items WHERE state = 'running'")?,
    ))
}

/// The highest job id ever assigned (0 when none): the durable high-water
/// mark, which outlives the jobs retention deletes.
pub fn max_job_id(conn: &Connection) -> Result<u64, StoreError> {
    let id: Option<i64> = conn.query_row(
        "SELECT MAX(COALESCE((SELECT MAX(id) FROM jobs), 0),
                    COALESCE((SELECT last_id FROM job_id_high_water WHERE singleton = 1), 0))",
        [],
        |r| r.get(0),
    )?;
    Ok(id.unwrap_or(0) as u64)
}

/// The highest event id ever given out (kept by SQLite's AUTOINCREMENT
/// even when retention deleted the newest events).
pub fn max_event_id(conn: &Connection) -> Result<u64, StoreError> {
    let id: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(id.unwrap_or(0).max(0) as u64)
}

/// The last event the notifier queued deliveries for; None before its
/// first start.
pub fn notify_cursor(conn: &Connection) -> Result<Option<u64>, StoreError> {
    let id: Option<i64> = conn
        .query_row(
            "SELECT last_event FROM notify_cursor WHERE singleton = 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(id.map(|id| id as u64))
}

/// A delivery the notifier is to attempt.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: u64,
    pub rule: String,
    pub kind: String,
    pub event_id: u64,
    pub payload: String,
    pub attempts: u32,
}

/// Pending deliveries due at `now`, oldest first.
pub fn due_deliveries(
    conn: &Connection,
    now: i64,
    limit: u32,
) -> Result<Vec<DueDelivery>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, rule, kind, event_id, payload, attempts FROM deliveries
         WHERE state IN ('pending', 'collecting') AND next_at <= ?1
         ORDER BY next_at, id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now, limit], |r| {
        Ok(DueDelivery {
            id: r.get::<_, i64>(0)? as u64,
            rule: r.get(1)?,
            kind: r.get(2)?,
            event_id: r.get::<_, i64>(3)? as u64,
            payload: r.get(4)?,
            attempts: r.get(5)?,
        })
    })?;
    let mut due: Vec<DueDelivery> = rows.collect::<Result<_, _>>()?;
    for delivery in due.iter_mut().filter(|d| d.kind == "digest") {
        if let Some(payload) = digest_payload(conn, delivery.id, &delivery.rule)? {
            delivery.payload = payload;
        }
    }
    Ok(due)
}

/// A digest's payload, `{"kind":"digest","rule","count","events":[...]}`,
/// from its events' rows in event order (None for a digest a previous
/// version kept whole in its payload).
fn digest_payload(conn: &Connection, id: u64, rule: &str) -> Result<Option<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT payload FROM digest_events WHERE delivery_id = ?1 ORDER BY event_id",
    )?;
    let events: Vec<String> = stmt
        .query_map(params![id as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if events.is_empty() {
        return Ok(None);
    }
    let rule = serde_json::to_string(rule).unwrap_or_else(|_| "\"\"".into());
    Ok(Some(format!(
        "{{\"kind\":\"digest\",\"rule\":{rule},\"count\":{},\"events\":[{}]}}",
        events.len(),
        events.join(",")
    )))
}

/// When the next pending delivery is due (ms), if any.
pub fn next_delivery_at(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn.query_row(
        "SELECT MIN(next_at) FROM deliveries WHERE state IN ('pending', 'collecting')",
        [],
        |r| r.get(0),
    )?)
}

/// Deliveries, newest first (`notification.list`), or the one with `id`.
pub fn list_deliveries(
    conn: &Connection,
    failed_only: bool,
    limit: u32,
    id: Option<u64>,
) -> Result<Vec<holdfast_api::Delivery>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, event_id, rule, kind, job_id, state, attempts, last_error, next_at,
                delivered_at, created_at
         FROM deliveries WHERE (?1 = 0 OR state = 'failed' OR (state = 'pending' AND attempts > 0))
            AND (?3 IS NULL OR id = ?3)
         ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![failed_only, limit, id.map(|i| i as i64)], |r| {
        let state: String = r.get(5)?;
        Ok(holdfast_api::Delivery {
            id: r.get::<_, i64>(0)? as u64,
            event_id: r.get::<_, i64>(1)? as u64,
            rule: r.get(2)?,
            kind: r.get(3)?,
            job_id: r.get::<_, Option<i64>>(4)?.map(|j| j as u64),
            next_at: (state == "pending" || state == "collecting")
                .then(|| r.get::<_, i64>(8).map(rfc3339))
                .transpose()?,
            state,
            attempts: r.get(6)?,
            last_error: r.get(7)?,
            delivered_at: r.get::<_, Option<i64>>(9)?.map(rfc3339),
            created_at: rfc3339(r.get(10)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The oldest event kept, if any.
pub fn min_event_id(conn: &Connection) -> Result<Option<u64>, StoreError> {
    let id: Option<i64> = conn.query_row("SELECT MIN(id) FROM events", [], |r| r.get(0))?;
    Ok(id.map(|id| id as u64))
}

/// Events with an id above `since`, oldest first, at most `limit`.
pub fn events_since(
    conn: &Connection,
    since: u64,
    limit: u32,
) -> Result<Vec<holdfast_api::Event>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT payload FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let rows = stmt.query_map(rusqlite::params![since as i64, limit], |r| {
        r.get::<_, String>(0)
    })?;
    let mut events = Vec::new();
    for payload in rows {
        match serde_json::from_str(&payload?) {
            Ok(event) => events.push(event),
            Err(error) => tracing::warn!(%error, "an event's payload cannot be read; skipped"),
        }
    }
    Ok(events)
}

/// Events after `since` up to `upto` whose kind is one of `kinds`, as
/// stored (the notifier matches on the columns and sends the payload as it
/// is, without reading it).
pub fn events_of_kinds(
    conn: &Connection,
    since: u64,
    upto: u64,
    kinds: &str,
    limit: u32,
) -> Result<Vec<super::EventRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, at, job_id, chain, tenant, payload FROM events
         WHERE id > ?1 AND id <= ?2 AND kind IN (SELECT value FROM json_each(?3))
         ORDER BY id LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![since as i64, upto as i64, kinds, limit],
        |r| {
            Ok(super::EventRow {
                id: r.get::<_, i64>(0)? as u64,
                kind: r.get(1)?,
                at: r.get(2)?,
                job_id: r.get::<_, Option<i64>>(3)?.map(|j| j as u64),
                chain: r.get(4)?,
                tenant: r.get(5)?,
                payload: r.get(6)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The text of a stored chain definition.
pub fn definition_source(
    conn: &Connection,
    version: &str,
) -> Result<Option<(String, String)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT file, source FROM definitions WHERE version = ?1")?
        .query_row(params![version], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// A job left unfinished by a previous daemon, as needed to resume it.
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub id: u64,
    pub target: String,
    pub version: String,
    pub params: Map<String, Value>,
    pub tenant: Option<String>,
    pub priority: i32,
    pub state: JobState,
    pub alerts: u32,
    pub started_at: Option<i64>,
    pub simulated: bool,
    pub submitter_uid: Option<u32>,
    /// Sealed secret parameter values (`params` shows them as `***`).
    pub secrets: Option<Vec<u8>>,
    /// The outcome its handlers answer, once its graph is done.
    pub outcome: Option<JobState>,
    /// The first job of its retry chain.
    pub run_id: u64,
    /// `--until PROCESS`, if it was given.
    pub until: Option<String>,
    /// The instant it runs as of (`schedule.at`).
    pub scheduled: Option<BusinessDate>,
    pub activities: Vec<StoredActivity>,
}

#[derive(Debug, Clone)]
pub struct StoredActivity {
    pub idx: usize,
    pub state: ActivityState,
    pub checkpoint: Option<Value>,
    pub outputs: Map<String, Value>,
    pub interruptions: u32,
    pub progress: Option<f64>,
    pub attempts: Vec<StoredAttempt>,
    /// A handler that `undoes` it succeeded.
    pub undone: bool,
    /// A fan-out's item list as stored once computed (`activities.items`).
    pub items: Option<Value>,
    /// A fan-out's items started so far (or carried by a retry) that
    /// matter to a resume: not succeeded, or succeeded with outputs.
    pub item_rows: Vec<super::items::StoredItem>,
    /// Succeeded items without outputs: counted, not loaded.
    pub items_succeeded_plain: u32,
    /// One past the highest item with a row: where the cursor resumes.
    pub items_next: u32,
}

#[derive(Debug, Clone)]
pub struct StoredAttempt {
    pub number: u32,
    pub state: AttemptState,
    pub pid: Option<u32>,
    pub pid_start: Option<u64>,
    pub error_id: Option<String>,
    pub error: Option<String>,
    pub error_tail: Option<String>,
    pub error_message: Option<String>,
    /// The Slurm job of an attempt of the Slurm executor, once committed.
    pub slurm_job_id: Option<u64>,
    /// When the attempt started (ms since the epoch).
    pub started_at: i64,
    /// How far into its control file a Slurm attempt was applied.
    pub control_offset: u64,
}

/// Every queued or running job, oldest first, with activities and attempts.
pub fn unfinished_jobs(conn: &Connection) -> Result<Vec<StoredJob>, StoreError> {
    let ids: Vec<i64> = conn
        .prepare("SELECT id FROM jobs WHERE state IN ('queued', 'running') ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(job) = stored_job(conn, id as u64)? {
            jobs.push(job);
        }
    }
    Ok(jobs)
}

/// One job with what is needed to resume or reprocess it.
pub fn stored_job(conn: &Connection, id: u64) -> Result<Option<StoredJob>, StoreError> {
    let job = conn
        .prepare_cached(
            "SELECT id, target, version, params, tenant, priority, state, alerts, started_at,
                    simulated, submitter_uid,
                    (SELECT sealed FROM job_secrets WHERE job_id = jobs.id), outcome,
                    run_id, until,
                    scheduled_at, scheduled_zone
             FROM jobs WHERE id = ?1",
        )?
        .query_row(params![id as i64], |row| {
            let state: String = row.get(6)?;
            Ok(StoredJob {
                id: row.get::<_, i64>(0)? as u64,
                target: row.get(1)?,
                version: row.get(2)?,
                params: json_object(row.get(3)?),
                tenant: row.get(4)?,
                priority: row.get(5)?,
                state: parse_job_state(&state),
                alerts: row.get(7)?,
                started_at: row.get(8)?,
                simulated: row.get(9)?,
                submitter_uid: row.get(10)?,
                secrets: row.get(11)?,
                outcome: row
                    .get::<_, Option<String>>(12)?
                    .as_deref()
                    .map(parse_job_state),
                run_id: row
                    .get::<_, Option<i64>>(13)?
                    .map_or(row.get::<_, i64>(0)? as u64, |r| r as u64),
                until: row.get(14)?,
                scheduled: business_date(row.get(15)?, row.get(16)?),
                activities: Vec::new(),
            })
        })
        .optional()?;
    let Some(mut job) = job else {
        return Ok(None);
    };
    let mut act_stmt = conn.prepare_cached(
        "SELECT idx, state, checkpoint, outputs, interruptions, progress, undone, items
         FROM activities WHERE job_id = ?1 ORDER BY idx",
    )?;
    let mut rows = act_stmt.query(params![job.id as i64])?;
    while let Some(row) = rows.next()? {
        let state: String = row.get(1)?;
        let checkpoint: Option<String> = row.get(2)?;
        job.activities.push(StoredActivity {
            idx: row.get::<_, i64>(0)? as usize,
            state: ActivityState::parse(&state).unwrap_or(ActivityState::Pending),
            checkpoint: checkpoint.and_then(|c| serde_json::from_str(&c).ok()),
            outputs: json_object(row.get(3)?),
            interruptions: row.get(4)?,
            progress: row.get(5)?,
            attempts: Vec::new(),
            undone: row.get::<_, i64>(6)? != 0,
            items: row
                .get::<_, Option<String>>(7)?
                .and_then(|t| serde_json::from_str(&t).ok()),
            item_rows: Vec::new(),
            items_succeeded_plain: 0,
            items_next: 0,
        });
    }
    super::items::load_item_rows(conn, &mut job)?;
    let mut att_stmt = conn.prepare_cached(
        "SELECT idx, number, state, pid, pid_start, error_id, error, error_tail, error_message,
                slurm_job_id, started_at, control_offset
         FROM attempts WHERE job_id = ?1 ORDER BY idx, number",
    )?;
    let mut rows = att_stmt.query(params![job.id as i64])?;
    while let Some(row) = rows.next()? {
        let idx = row.get::<_, i64>(0)? as usize;
        let state: String = row.get(2)?;
        let attempt = StoredAttempt {
            number: row.get(1)?,
            state: AttemptState::parse(&state).unwrap_or(AttemptState::Failed),
            pid: row.get(3)?,
            pid_start: row.get::<_, Option<i64>>(4)?.map(|s| s as u64),
            error_id: row.get(5)?,
            error: row.get(6)?,
            error_tail: row.get(7)?,
            error_message: row.get(8)?,
            slurm_job_id: row.get::<_, Option<i64>>(9)?.map(|id| id as u64),
            started_at: row.get(10)?,
            control_offset: row.get::<_, i64>(11)?.max(0) as u64,
        };
        if let Some(a) = job.activities.iter_mut().find(|a| a.idx == idx) {
            a.attempts.push(attempt);
        }
    }
    Ok(Some(job))
}

/// The audit trail, newest first.
pub fn list_audit(
    conn: &Connection,
    limit: u32,
    before: Option<u64>,
) -> Result<Vec<holdfast_api::AuditEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, uid, user, pid, method, target, outcome, detail FROM audit
         WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        params![
            before.map_or(i64::MAX, |b| b as i64),
            limit.clamp(1, 10_000)
        ],
        |row| {
            Ok(holdfast_api::AuditEntry {
                id: row.get::<_, i64>(0)? as u64,
                at: rfc3339(row.get(1)?),
                uid: row.get(2)?,
                user: row.get(3)?,
                pid: row.get(4)?,
                method: row.get(5)?,
                target: row.get(6)?,
                outcome: row.get(7)?,
                detail: row.get(8)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Where an attempt's log is, for `job.logs`.
#[derive(Debug, Clone)]
pub struct AttemptRef {
    pub idx: usize,
    pub path: String,
    pub number: u32,
    pub finished: bool,
    pub log_dropped: u64,
    /// Why the attempt's log file could not be created, if it could not.
    pub log_error: Option<String>,
    /// The fan-out item (`path` is then `chain.process.activity[N]`).
    pub item: Option<u32>,
}

/// Resolve `activity` (`process.activity`, `chain.process.activity`, or None
/// when the job has one activity) and `attempt` (None: the latest) of a job.
/// Err(message) when it does not resolve.
pub fn find_attempt(
    conn: &Connection,
    job_id: u64,
    activity: Option<&str>,
    attempt: Option<u32>,
) -> Result<Result<AttemptRef, String>, StoreError> {
    let chain: Option<String> = conn
        .prepare_cached("SELECT chain FROM jobs WHERE id = ?1")?
        .query_row(params![job_id as i64], |r| r.get(0))
        .optional()?;
    let Some(chain) = chain else {
        return Ok(Err(format!("job {job_id} does not exist")));
    };
    let mut stmt = conn.prepare_cached("SELECT idx, path FROM activities WHERE job_id = ?1")?;
    let all: Vec<(i64, String)> = stmt
        .query_map(params![job_id as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    // A fan-out item: `process.activity[17]`.
    let (activity, item) = match activity.map(super::items::split_item) {
        Some((name, item)) => (Some(name), item),
        None => (None, None),
    };
    let chosen = match activity {
        None if all.len() == 1 => all.first().cloned(),
        None => {
            return Ok(Err(format!(
                "job {job_id} has {} activities; name one as process.activity",
                all.len()
            )));
        }
        Some(name) => {
            let full = if name.starts_with(&format!("{chain}.")) && name.matches('.').count() == 2 {
                name.to_string()
            } else {
                format!("{chain}.{name}")
            };
            all.iter().find(|(_, p)| *p == full).cloned()
        }
    };
    let Some((idx, path)) = chosen else {
        return Ok(Err(format!(
            "job {job_id} has no activity {}",
            activity.unwrap_or_default()
        )));
    };
    if let Some(item) = item {
        return super::items::find_item_attempt(conn, job_id, idx, &path, item, attempt);
    }
    let fan_out: Option<Option<u32>> = conn
        .prepare_cached("SELECT items_total FROM activities WHERE job_id = ?1 AND idx = ?2")?
        .query_row(params![job_id as i64, idx], |r| r.get(0))
        .optional()?;
    if let Some(Some(total)) = fan_out {
        return Ok(Err(format!(
            "{path} is a fan-out of {total} items, each with its own log; name one as \
             {}[N] (N from 0; `hfctl status {job_id} --all` lists them)",
            activity.unwrap_or_default()
        )));
    }
    let row: Option<(u32, Option<i64>, i64, Option<String>)> = match attempt {
        Some(n) => conn
            .prepare_cached(
                "SELECT number, finished_at, log_dropped, log_error FROM attempts
                 WHERE job_id = ?1 AND idx = ?2 AND number = ?3",
            )?
            .query_row(params![job_id as i64, idx, n], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?,
        None => conn
            .prepare_cached(
                "SELECT number, finished_at, log_dropped, log_error FROM attempts
                 WHERE job_id = ?1 AND idx = ?2 ORDER BY number DESC LIMIT 1",
            )?
            .query_row(params![job_id as i64, idx], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?,
    };
    let Some((number, finished_at, dropped, log_error)) = row else {
        return Ok(Err(match attempt {
            Some(n) => format!("{path} has no attempt {n}"),
            None => format!("{path} has not started yet"),
        }));
    };
    Ok(Ok(AttemptRef {
        idx: idx as usize,
        path,
        number,
        finished: finished_at.is_some(),
        log_dropped: dropped as u64,
        log_error,
        item: None,
    }))
}

/// A schedule's stored state.
#[derive(Debug, Clone)]
pub struct StoredSchedule {
    pub paused: bool,
    pub last_fire: Option<i64>,
    pub last_job: Option<u64>,
    /// Fires of a backfill not yet submitted (ms), oldest first.
    pub backfill: Vec<i64>,
}

/// Why a schedule's last fire created no job, and when (ms); None when its
/// last fire created every job.
pub fn schedule_error(
    conn: &Connection,
    chain: &str,
    name: &str,
) -> Result<Option<(String, i64)>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT last_error, last_error_at FROM schedules WHERE chain = ?1 AND name = ?2",
        )?
        .query_row(params![chain, name], |r| {
            Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .optional()?;
    Ok(match row {
        Some((Some(error), at)) => Some((error, at.unwrap_or(0))),
        _ => None,
    })
}

/// Every stored schedule state, keyed by (chain, name).
pub fn schedule_states(
    conn: &Connection,
) -> Result<std::collections::HashMap<(String, String), StoredSchedule>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT chain, name, paused, last_fire, last_job, backfill FROM schedules")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
            StoredSchedule {
                paused: r.get(2)?,
                last_fire: r.get(3)?,
                last_job: r.get::<_, Option<i64>>(4)?.map(|j| j as u64),
                backfill: r
                    .get::<_, Option<String>>(5)?
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .unwrap_or_default(),
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Who submitted each of `ids` (None for an unknown job), for permission
/// checks.
pub fn job_owners(conn: &Connection, ids: &[u64]) -> Result<Vec<Option<Option<u32>>>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT submitter_uid FROM jobs WHERE id = ?1")?;
    ids.iter()
        .map(|id| {
            Ok(stmt
                .query_row(params![*id as i64], |r| r.get::<_, Option<u32>>(0))
                .optional()?)
        })
        .collect()
}

/// How many jobs keep sealed secret parameters.
pub fn sealed_jobs(conn: &Connection) -> Result<u64, StoreError> {
    Ok(conn.query_row("SELECT COUNT(*) FROM job_secrets", [], |r| {
        r.get::<_, i64>(0)
    })? as u64)
}
