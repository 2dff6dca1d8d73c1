//! Embedded schema migrations. Migrations are only ever appended, never
//! edited: a database made by any released version upgrades in place.

use rusqlite_migration::{M, Migrations};

use super::stats::triggers::{V19, V20};

/// Every migration's SQL, oldest first.
const ALL: [&str; 21] = [
    V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12, V13, V14, V15, V16, V17, V18, V19, V20, V21,
];

/// Every migration, oldest first.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(ALL.iter().map(|sql| M::up(sql)).collect())
}

/// The schema version this build writes (SQLite's `user_version` once
/// every migration is applied).
pub const fn latest() -> usize {
    ALL.len()
}

/// Version 1: definitions, jobs, activities, attempts and audit.
const V1: &str = r#"
CREATE TABLE definitions (
    version   TEXT PRIMARY KEY,
    chain     TEXT NOT NULL,
    file      TEXT NOT NULL,
    source    TEXT NOT NULL,
    loaded_at INTEGER NOT NULL
);

CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY,
    target        TEXT NOT NULL,
    chain         TEXT NOT NULL,
    version       TEXT NOT NULL,
    params        TEXT NOT NULL,
    tenant        TEXT,
    priority      INTEGER NOT NULL DEFAULT 0,
    state         TEXT NOT NULL,
    alerts        INTEGER NOT NULL DEFAULT 0,
    reason        TEXT,
    submitted_by  TEXT NOT NULL,
    submitter_uid INTEGER,
    submitter_gid INTEGER,
    submitter_pid INTEGER,
    retry_of      INTEGER,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER
);
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX jobs_by_chain ON jobs (chain, id);

CREATE TABLE activities (
    job_id        INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    path          TEXT NOT NULL,
    state         TEXT NOT NULL,
    progress      REAL,
    progress_text TEXT,
    checkpoint    TEXT,
    outputs       TEXT,
    interruptions INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;

CREATE TABLE attempts (
    job_id      INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    number      INTEGER NOT NULL,
    state       TEXT NOT NULL,
    pid         INTEGER,
    pid_start   INTEGER,
    exit_code   INTEGER,
    signal      INTEGER,
    error_id    TEXT,
    error       TEXT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    log_bytes   INTEGER NOT NULL DEFAULT 0,
    log_dropped INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx, number)
) WITHOUT ROWID;
CREATE INDEX attempts_running ON attempts (state) WHERE state = 'running';

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    uid     INTEGER,
    user    TEXT,
    pid     INTEGER,
    method  TEXT NOT NULL,
    target  TEXT,
    outcome TEXT NOT NULL,
    detail  TEXT
);
CREATE INDEX audit_by_time ON audit (at);
"#;

/// Version 2: schedule state (so a restart neither fires twice nor misses)
/// and the simulation mark on jobs.
const V2: &str = r#"
CREATE TABLE schedules (
    chain     TEXT NOT NULL,
    name      TEXT NOT NULL,
    paused    INTEGER NOT NULL DEFAULT 0,
    last_fire INTEGER,
    last_job  INTEGER,
    PRIMARY KEY (chain, name)
) WITHOUT ROWID;

ALTER TABLE jobs ADD COLUMN simulated INTEGER NOT NULL DEFAULT 0;
"#;

/// Version 3: the text of a job's latest alert (the count was there).
const V3: &str = r#"
ALTER TABLE jobs ADD COLUMN last_alert TEXT;
"#;

/// Version 4: the highest job id ever assigned, kept apart from `jobs` so
/// that retention deleting the newest jobs never lets an id be given out
/// twice. Seeded from the jobs already there.
const V4: &str = r#"
CREATE TABLE job_id_high_water (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    last_id   INTEGER NOT NULL
);
INSERT INTO job_id_high_water (singleton, last_id) SELECT 1, COALESCE(MAX(id), 0) FROM jobs;
"#;

/// Version 5: secret parameter values, sealed, apart from `jobs.params`
/// (which shows them as `***`); see `crate::secrets`.
const V5: &str = r#"
CREATE TABLE job_secrets (
    job_id INTEGER PRIMARY KEY,
    sealed BLOB NOT NULL
);
"#;

/// Version 6: a submission's client idempotency key (`request_id`, unique
/// per submitter uid) and the request it came with, and why an attempt's
/// log could not be created.
const V6: &str = r#"
ALTER TABLE jobs ADD COLUMN request_id TEXT;
ALTER TABLE jobs ADD COLUMN request TEXT;
CREATE UNIQUE INDEX jobs_by_request ON jobs (submitter_uid, request_id)
    WHERE request_id IS NOT NULL;
ALTER TABLE attempts ADD COLUMN log_error TEXT;
"#;

/// Handlers and the error itself: the outcome a job's handlers answer
/// (decided before they start), activities a handler rolled back, and
/// what a failed attempt said.
const V7: &str = r#"
ALTER TABLE jobs ADD COLUMN outcome TEXT;
ALTER TABLE activities ADD COLUMN undone INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN error_tail TEXT;
ALTER TABLE attempts ADD COLUMN error_message TEXT;
"#;

/// Version 8: the event outbox (each event committed with its transition;
/// AUTOINCREMENT so an id is never given out twice, even after retention
/// deleted the newest), a schedule's last refused fire, and notification
/// deliveries with the last event the notifier has queued them for.
const V8: &str = r#"
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL,
    at      INTEGER NOT NULL,
    job_id  INTEGER,
    chain   TEXT,
    tenant  TEXT,
    payload TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (at);
ALTER TABLE schedules ADD COLUMN last_error TEXT;
ALTER TABLE schedules ADD COLUMN last_error_at INTEGER;

CREATE TABLE deliveries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     INTEGER NOT NULL,
    rule         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    job_id       INTEGER,
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,
    last_error   TEXT,
    delivered_at INTEGER,
    created_at   INTEGER NOT NULL,
    UNIQUE (event_id, rule)
);
CREATE INDEX deliveries_due ON deliveries (state, next_at);
CREATE TABLE notify_cursor (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    last_event INTEGER NOT NULL
);
"#;

/// Version 9: a job's `run_id` (the first job of its retry chain; jobs
/// made before it are each their own) and its `--until` process.
const V9: &str = r#"
ALTER TABLE jobs ADD COLUMN run_id INTEGER;
ALTER TABLE jobs ADD COLUMN until TEXT;
UPDATE jobs SET run_id = id;
"#;

/// Version 10: the instant a job runs as of (`schedule.at`): a schedule's
/// fire, `--at`, or the submission; with the zone it is read in. And the
/// fires of a schedule's backfill not yet submitted (a JSON array of ms).
const V10: &str = r#"
ALTER TABLE jobs ADD COLUMN scheduled_at INTEGER;
ALTER TABLE jobs ADD COLUMN scheduled_zone TEXT;
ALTER TABLE schedules ADD COLUMN backfill TEXT;
"#;

/// Version 11: resource use per attempt (which source, wall time, CPU,
/// peak memory, block I/O; see docs/monitoring.md), an index for
/// statistics over a time window, and read-only views for people who query
/// the file with `sqlite3 -readonly`. Times in the views are ms since the
/// epoch, like the tables'.
const V11: &str = r#"
ALTER TABLE attempts ADD COLUMN usage_source TEXT;
ALTER TABLE attempts ADD COLUMN wall_ms INTEGER;
ALTER TABLE attempts ADD COLUMN user_cpu_us INTEGER;
ALTER TABLE attempts ADD COLUMN system_cpu_us INTEGER;
ALTER TABLE attempts ADD COLUMN peak_memory_bytes INTEGER;
ALTER TABLE attempts ADD COLUMN io_read_bytes INTEGER;
ALTER TABLE attempts ADD COLUMN io_write_bytes INTEGER;
-- Covering for statistics' passes over jobs: the window's rows are read
-- from the index alone.
CREATE INDEX jobs_by_created
    ON jobs (created_at, chain, state, tenant, started_at, finished_at);
CREATE INDEX jobs_by_chain_created
    ON jobs (chain, created_at, state, tenant, started_at, finished_at);

CREATE VIEW v_job_runs AS
SELECT id AS job_id, chain, target, tenant, state, submitted_by, created_at, started_at,
       finished_at,
       started_at - created_at AS queue_wait_ms,
       finished_at - started_at AS duration_ms,
       (SELECT COUNT(*) FROM attempts a WHERE a.job_id = jobs.id) AS attempts,
       (SELECT COUNT(*) FROM attempts a WHERE a.job_id = jobs.id AND a.number > 1) AS retries,
       (SELECT SUM(a.user_cpu_us + a.system_cpu_us) FROM attempts a WHERE a.job_id = jobs.id)
           AS cpu_us,
       (SELECT MAX(a.peak_memory_bytes) FROM attempts a WHERE a.job_id = jobs.id)
           AS peak_memory_bytes
FROM jobs;

CREATE VIEW v_attempts AS
SELECT a.job_id, j.chain, j.tenant, act.path, a.number AS attempt, a.state, a.pid,
       a.exit_code, a.signal, a.error_id, a.error, a.started_at, a.finished_at,
       a.finished_at - a.started_at AS duration_ms, a.usage_source, a.wall_ms,
       a.user_cpu_us, a.system_cpu_us, a.peak_memory_bytes, a.io_read_bytes, a.io_write_bytes
FROM attempts a
JOIN activities act ON act.job_id = a.job_id AND act.idx = a.idx
JOIN jobs j ON j.id = a.job_id;

CREATE VIEW v_running_activities AS
SELECT a.job_id, j.chain, j.tenant, act.path, a.number AS attempt, a.pid, a.started_at,
       act.progress, act.progress_text
FROM attempts a
JOIN activities act ON act.job_id = a.job_id AND act.idx = a.idx
JOIN jobs j ON j.id = a.job_id
WHERE a.state = 'running';

CREATE VIEW v_activity_stats AS
SELECT act.path,
       COUNT(*) AS attempts,
       SUM(a.state = 'succeeded') AS succeeded,
       SUM(a.state <> 'succeeded') AS not_succeeded,
       SUM(a.number > 1) AS retries,
       ROUND(AVG(a.finished_at - a.started_at)) AS avg_duration_ms,
       MAX(a.finished_at - a.started_at) AS max_duration_ms,
       SUM(a.user_cpu_us + a.system_cpu_us) AS cpu_us,
       MAX(a.peak_memory_bytes) AS peak_memory_bytes
FROM attempts a
JOIN activities act ON act.job_id = a.job_id AND act.idx = a.idx
WHERE a.state <> 'running'
GROUP BY act.path;

CREATE VIEW v_chain_stats AS
SELECT chain,
       COUNT(*) AS jobs,
       SUM(state = 'succeeded') AS succeeded,
       SUM(state = 'failed') AS failed,
       SUM(state = 'cancelled') AS cancelled,
       SUM(state IN ('queued', 'running')) AS in_flight,
       ROUND(AVG(finished_at - started_at)) AS avg_duration_ms,
       MAX(finished_at - started_at) AS max_duration_ms,
       ROUND(AVG(started_at - created_at)) AS avg_queue_wait_ms
FROM jobs
GROUP BY chain;
"#;

/// Version 12: the events of a `coalesce` digest, one row each (a digest
/// grows by an insert, not by rewriting its whole payload; digests not yet
/// delivered move their events there), and the open digest of a rule
/// found by an index.
const V12: &str = r#"
CREATE TABLE digest_events (
    delivery_id INTEGER NOT NULL,
    event_id    INTEGER NOT NULL,
    payload     TEXT NOT NULL,
    PRIMARY KEY (delivery_id, event_id)
) WITHOUT ROWID;
CREATE INDEX deliveries_collecting ON deliveries (rule) WHERE state = 'collecting';
INSERT OR IGNORE INTO digest_events (delivery_id, event_id, payload)
    SELECT d.id, json_extract(e.value, '$.id'), e.value
    FROM deliveries AS d, json_each(d.payload, '$.events') AS e
    WHERE d.kind = 'digest' AND d.state IN ('collecting', 'pending');
"#;

/// Version 13: fan-out. An activity with `foreach` keeps its item list
/// (computed once, at its first start) in `activities.items`; each item
/// started has a row in `items` keyed by (job, activity, item index) with
/// its state, its latest attempt and its checkpoint and outputs. Items
/// never started have no row: the engine starts them in index order from
/// a cursor, so memory holds counts and running items, not the list.
const V13: &str = r#"
ALTER TABLE activities ADD COLUMN items TEXT;
ALTER TABLE activities ADD COLUMN items_total INTEGER;
CREATE TABLE items (
    job_id        INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    item          INTEGER NOT NULL,
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    interruptions INTEGER NOT NULL DEFAULT 0,
    attempt_state TEXT,
    pid           INTEGER,
    pid_start     INTEGER,
    exit_code     INTEGER,
    signal        INTEGER,
    error_id      TEXT,
    error         TEXT,
    error_tail    TEXT,
    error_message TEXT,
    started_at    INTEGER,
    finished_at   INTEGER,
    log_bytes     INTEGER NOT NULL DEFAULT 0,
    log_dropped   INTEGER NOT NULL DEFAULT 0,
    log_error     TEXT,
    checkpoint    TEXT,
    outputs       TEXT,
    PRIMARY KEY (job_id, idx, item)
) WITHOUT ROWID;
CREATE INDEX items_running ON items (state) WHERE state = 'running';
"#;

/// Version 14: the Slurm job id of an attempt run by the Slurm executor,
/// committed once `sbatch` answered.
const V14: &str = r#"
ALTER TABLE attempts ADD COLUMN slurm_job_id INTEGER;
"#;

/// How far into a Slurm attempt's control file the daemon has applied,
/// committed with what those lines changed: an adopted attempt's control
/// file is read on from there, so no alert counts twice.
const V15: &str = r#"
ALTER TABLE attempts ADD COLUMN control_offset INTEGER NOT NULL DEFAULT 0;
"#;

/// Version 16: the statistics rollup (`stats.get` without reading every
/// job of the window). Per hour of job creation, chain, tenant (`''` for
/// none) and activity path: counts in `stats_jobs` and
/// `stats_activities`, and in `stats_values` how many durations, queue
/// waits and peak memories (`kind` 0 job duration, 1 job queue wait, 2
/// attempt duration, 3 activity queue wait, 4 peak memory) fell on each
/// value kept to three significant digits, with the largest exact value.
/// Triggers keep them in the transaction of every write to `jobs`,
/// `activities` and `attempts` (so also a crash, retention, or a hand
/// edit with `sqlite3`), which never change a job's chain, tenant or
/// creation, nor an activity's path; the history already there is
/// counted here. See `store/stats/`.
const V16: &str = r#"
CREATE TABLE stats_jobs (
    hour      INTEGER NOT NULL,
    chain     TEXT NOT NULL,
    tenant    TEXT NOT NULL,
    jobs      INTEGER NOT NULL,
    succeeded INTEGER NOT NULL,
    failed    INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    in_flight INTEGER NOT NULL,
    PRIMARY KEY (hour, chain, tenant)
) WITHOUT ROWID;

CREATE TABLE stats_activities (
    hour       INTEGER NOT NULL,
    chain      TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    path       TEXT NOT NULL,
    activities INTEGER NOT NULL,
    runs       INTEGER NOT NULL,
    succeeded  INTEGER NOT NULL,
    failed     INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    retries    INTEGER NOT NULL,
    cpu_us     INTEGER NOT NULL,
    PRIMARY KEY (hour, chain, tenant, path)
) WITHOUT ROWID;

CREATE TABLE stats_values (
    hour      INTEGER NOT NULL,
    chain     TEXT NOT NULL,
    tenant    TEXT NOT NULL,
    path      TEXT NOT NULL,
    kind      INTEGER NOT NULL,
    value     INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    max_exact INTEGER NOT NULL,
    PRIMARY KEY (hour, chain, tenant, path, kind, value)
) WITHOUT ROWID;

-- Deltas are inserted into these views; their INSTEAD OF triggers add
-- them to the tables and drop rows that fell to nothing.
CREATE VIEW stats_jobs_delta AS
    SELECT hour, chain, tenant, jobs, succeeded, failed, cancelled, in_flight
    FROM stats_jobs WHERE 0;
CREATE TRIGGER stats_jobs_delta INSTEAD OF INSERT ON stats_jobs_delta BEGIN
    INSERT INTO stats_jobs (hour, chain, tenant, jobs, succeeded, failed, cancelled, in_flight)
    VALUES (NEW.hour, NEW.chain, NEW.tenant, NEW.jobs, NEW.succeeded, NEW.failed,
            NEW.cancelled, NEW.in_flight)
    ON CONFLICT DO UPDATE SET jobs = jobs + excluded.jobs,
        succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled, in_flight = in_flight + excluded.in_flight;
    DELETE FROM stats_jobs
    WHERE NEW.jobs < 0 AND hour = NEW.hour AND chain = NEW.chain AND tenant = NEW.tenant
      AND jobs <= 0;
END;

CREATE VIEW stats_activities_delta AS
    SELECT hour, chain, tenant, path, activities, runs, succeeded, failed, attempts, retries,
           cpu_us
    FROM stats_activities WHERE 0;
CREATE TRIGGER stats_activities_delta INSTEAD OF INSERT ON stats_activities_delta BEGIN
    INSERT INTO stats_activities (hour, chain, tenant, path, activities, runs, succeeded,
                                  failed, attempts, retries, cpu_us)
    VALUES (NEW.hour, NEW.chain, NEW.tenant, NEW.path, NEW.activities, NEW.runs,
            NEW.succeeded, NEW.failed, NEW.attempts, NEW.retries, NEW.cpu_us)
    ON CONFLICT DO UPDATE SET activities = activities + excluded.activities,
        runs = runs + excluded.runs, succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed, attempts = attempts + excluded.attempts,
        retries = retries + excluded.retries, cpu_us = cpu_us + excluded.cpu_us;
    DELETE FROM stats_activities
    WHERE (NEW.activities < 0 OR NEW.attempts < 0) AND hour = NEW.hour AND chain = NEW.chain
      AND tenant = NEW.tenant AND path = NEW.path AND activities <= 0 AND attempts <= 0;
END;

-- A value is kept to three significant digits, rounded down (below
-- 1000 exactly): 12,345 ms is counted as 12,300.
CREATE VIEW stats_values_delta AS
    SELECT hour, chain, tenant, path, kind, value, n FROM stats_values WHERE 0;
CREATE TRIGGER stats_values_delta INSTEAD OF INSERT ON stats_values_delta BEGIN
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
    VALUES (NEW.hour, NEW.chain, NEW.tenant, NEW.path, NEW.kind,
            NEW.value - NEW.value % CASE WHEN NEW.value < 1000 THEN 1
                ELSE CAST(substr('1000000000000000000', 1, length(NEW.value) - 2) AS INTEGER)
                END,
            NEW.n, NEW.value)
    ON CONFLICT DO UPDATE SET n = n + excluded.n,
        max_exact = CASE WHEN excluded.n > 0 THEN MAX(max_exact, excluded.max_exact)
                         ELSE max_exact END;
    DELETE FROM stats_values
    WHERE NEW.n < 0 AND hour = NEW.hour AND chain = NEW.chain AND tenant = NEW.tenant
      AND path = NEW.path AND kind = NEW.kind
      AND value = NEW.value - NEW.value % CASE WHEN NEW.value < 1000 THEN 1
                ELSE CAST(substr('1000000000000000000', 1, length(NEW.value) - 2) AS INTEGER)
                END
      AND n <= 0;
END;

-- Jobs: counts by state, duration (kind 0) and queue wait (kind 1).
CREATE TRIGGER stats_job_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO stats_jobs_delta VALUES (NEW.created_at / 3600000, NEW.chain,
        COALESCE(NEW.tenant, ''), 1, NEW.state = 'succeeded', NEW.state = 'failed',
        NEW.state = 'cancelled', NEW.state IN ('queued', 'running'));
    INSERT INTO stats_values_delta
        SELECT NEW.created_at / 3600000, NEW.chain, COALESCE(NEW.tenant, ''), '', 0,
               NEW.finished_at - NEW.started_at, 1
        WHERE NEW.state IN ('succeeded', 'failed', 'cancelled')
          AND NEW.started_at IS NOT NULL AND NEW.finished_at IS NOT NULL;
    INSERT INTO stats_values_delta
        SELECT NEW.created_at / 3600000, NEW.chain, COALESCE(NEW.tenant, ''), '', 1,
               NEW.started_at - NEW.created_at, 1
        WHERE NEW.started_at IS NOT NULL;
END;
CREATE TRIGGER stats_job_update AFTER UPDATE OF state, started_at, finished_at ON jobs BEGIN
    INSERT INTO stats_jobs_delta
        SELECT NEW.created_at / 3600000, NEW.chain, COALESCE(NEW.tenant, ''), 0,
               (NEW.state = 'succeeded') - (OLD.state = 'succeeded'),
               (NEW.state = 'failed') - (OLD.state = 'failed'),
               (NEW.state = 'cancelled') - (OLD.state = 'cancelled'),
               (NEW.state IN ('queued', 'running')) - (OLD.state IN ('queued', 'running'))
        WHERE NEW.state IS NOT OLD.state;
    INSERT INTO stats_values_delta
        SELECT OLD.created_at / 3600000, OLD.chain, COALESCE(OLD.tenant, ''), '', 0,
               OLD.finished_at - OLD.started_at, -1
        WHERE OLD.state IN ('succeeded', 'failed', 'cancelled')
          AND OLD.started_at IS NOT NULL AND OLD.finished_at IS NOT NULL
          AND NOT (NEW.state IN ('succeeded', 'failed', 'cancelled')
                   AND NEW.started_at IS OLD.started_at AND NEW.finished_at IS OLD.finished_at);
    INSERT INTO stats_values_delta
        SELECT NEW.created_at / 3600000, NEW.chain, COALESCE(NEW.tenant, ''), '', 0,
               NEW.finished_at - NEW.started_at, 1
        WHERE NEW.state IN ('succeeded', 'failed', 'cancelled')
          AND NEW.started_at IS NOT NULL AND NEW.finished_at IS NOT NULL
          AND NOT (OLD.state IN ('succeeded', 'failed', 'cancelled')
                   AND NEW.started_at IS OLD.started_at AND NEW.finished_at IS OLD.finished_at);
    INSERT INTO stats_values_delta
        SELECT OLD.created_at / 3600000, OLD.chain, COALESCE(OLD.tenant, ''), '', 1,
               OLD.started_at - OLD.created_at, -1
        WHERE OLD.started_at IS NOT NULL AND NEW.started_at IS NOT OLD.started_at;
    INSERT INTO stats_values_delta
        SELECT NEW.created_at / 3600000, NEW.chain, COALESCE(NEW.tenant, ''), '', 1,
               NEW.started_at - NEW.created_at, 1
        WHERE NEW.started_at IS NOT NULL AND NEW.started_at IS NOT OLD.started_at;
END;
CREATE TRIGGER stats_job_delete AFTER DELETE ON jobs BEGIN
    INSERT INTO stats_jobs_delta VALUES (OLD.created_at / 3600000, OLD.chain,
        COALESCE(OLD.tenant, ''), -1, -(OLD.state = 'succeeded'), -(OLD.state = 'failed'),
        -(OLD.state = 'cancelled'), -(OLD.state IN ('queued', 'running')));
    INSERT INTO stats_values_delta
        SELECT OLD.created_at / 3600000, OLD.chain, COALESCE(OLD.tenant, ''), '', 0,
               OLD.finished_at - OLD.started_at, -1
        WHERE OLD.state IN ('succeeded', 'failed', 'cancelled')
          AND OLD.started_at IS NOT NULL AND OLD.finished_at IS NOT NULL;
    INSERT INTO stats_values_delta
        SELECT OLD.created_at / 3600000, OLD.chain, COALESCE(OLD.tenant, ''), '', 1,
               OLD.started_at - OLD.created_at, -1
        WHERE OLD.started_at IS NOT NULL;
END;

-- Activities: one row each (so an activity with no run yet is listed),
-- and the runs that ended. The job's row is there first and goes last.
CREATE TRIGGER stats_activity_insert AFTER INSERT ON activities BEGIN
    INSERT INTO stats_activities_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''), NEW.path, 1,
               NEW.state IN ('succeeded', 'failed', 'cancelled'), NEW.state = 'succeeded',
               NEW.state = 'failed', 0, 0, 0
        FROM jobs j WHERE j.id = NEW.job_id;
END;
CREATE TRIGGER stats_activity_update AFTER UPDATE OF state ON activities
WHEN NEW.state IS NOT OLD.state BEGIN
    INSERT INTO stats_activities_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''), NEW.path, 0,
               (NEW.state IN ('succeeded', 'failed', 'cancelled'))
                   - (OLD.state IN ('succeeded', 'failed', 'cancelled')),
               (NEW.state = 'succeeded') - (OLD.state = 'succeeded'),
               (NEW.state = 'failed') - (OLD.state = 'failed'), 0, 0, 0
        FROM jobs j WHERE j.id = NEW.job_id;
END;
CREATE TRIGGER stats_activity_delete AFTER DELETE ON activities BEGIN
    INSERT INTO stats_activities_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''), OLD.path, -1,
               -(OLD.state IN ('succeeded', 'failed', 'cancelled')), -(OLD.state = 'succeeded'),
               -(OLD.state = 'failed'), 0, 0, 0
        FROM jobs j WHERE j.id = OLD.job_id;
END;

-- Attempts: counts, retries, CPU, duration (kind 2), the activity's
-- queue wait (kind 3, first attempts) and peak memory (kind 4), under
-- the path of their activity ('' for an attempt without one).
CREATE VIEW stats_attempt_keys AS
    SELECT a.job_id, a.idx, a.number, j.created_at, j.created_at / 3600000 AS hour, j.chain,
           COALESCE(j.tenant, '') AS tenant, COALESCE(act.path, '') AS path
    FROM attempts a JOIN jobs j ON j.id = a.job_id
    LEFT JOIN activities act ON act.job_id = a.job_id AND act.idx = a.idx;
CREATE TRIGGER stats_attempt_insert AFTER INSERT ON attempts BEGIN
    INSERT INTO stats_activities_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''),
               COALESCE((SELECT path FROM activities WHERE job_id = NEW.job_id AND idx = NEW.idx), ''),
               0, 0, 0, 0, 1, NEW.number > 1,
               COALESCE(NEW.user_cpu_us, 0) + COALESCE(NEW.system_cpu_us, 0)
        FROM jobs j WHERE j.id = NEW.job_id;
    INSERT INTO stats_values_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''),
               COALESCE((SELECT path FROM activities WHERE job_id = NEW.job_id AND idx = NEW.idx), ''),
               v.kind, v.value - CASE v.kind WHEN 3 THEN j.created_at ELSE 0 END, 1
        FROM jobs j, (SELECT 2 AS kind, NEW.finished_at - NEW.started_at AS value
                      UNION ALL SELECT 3, CASE WHEN NEW.number = 1 THEN NEW.started_at END
                      UNION ALL SELECT 4, NEW.peak_memory_bytes) v
        WHERE j.id = NEW.job_id AND v.value IS NOT NULL;
END;
CREATE TRIGGER stats_attempt_update
AFTER UPDATE OF number, started_at, finished_at, user_cpu_us, system_cpu_us, peak_memory_bytes
ON attempts BEGIN
    INSERT INTO stats_activities_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''),
               COALESCE((SELECT path FROM activities WHERE job_id = NEW.job_id AND idx = NEW.idx), ''),
               0, 0, 0, 0, 0, (NEW.number > 1) - (OLD.number > 1),
               COALESCE(NEW.user_cpu_us, 0) + COALESCE(NEW.system_cpu_us, 0)
                   - COALESCE(OLD.user_cpu_us, 0) - COALESCE(OLD.system_cpu_us, 0)
        FROM jobs j
        WHERE j.id = NEW.job_id AND (NEW.number > 1 IS NOT OLD.number > 1
            OR NEW.user_cpu_us IS NOT OLD.user_cpu_us OR NEW.system_cpu_us IS NOT OLD.system_cpu_us);
    INSERT INTO stats_values_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''),
               COALESCE((SELECT path FROM activities WHERE job_id = NEW.job_id AND idx = NEW.idx), ''),
               c.kind,
               CASE s.n WHEN -1 THEN c.old ELSE c.new END
                   - CASE c.kind WHEN 3 THEN j.created_at ELSE 0 END,
               s.n
        FROM jobs j,
             (SELECT 2 AS kind, OLD.finished_at - OLD.started_at AS old,
                     NEW.finished_at - NEW.started_at AS new
              UNION ALL SELECT 3, CASE WHEN OLD.number = 1 THEN OLD.started_at END,
                               CASE WHEN NEW.number = 1 THEN NEW.started_at END
              UNION ALL SELECT 4, OLD.peak_memory_bytes, NEW.peak_memory_bytes) c,
             (SELECT -1 AS n UNION ALL SELECT 1) s
        WHERE j.id = NEW.job_id AND c.old IS NOT c.new
          AND CASE s.n WHEN -1 THEN c.old ELSE c.new END IS NOT NULL;
END;
CREATE TRIGGER stats_attempt_delete AFTER DELETE ON attempts BEGIN
    INSERT INTO stats_activities_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''),
               COALESCE((SELECT path FROM activities WHERE job_id = OLD.job_id AND idx = OLD.idx), ''),
               0, 0, 0, 0, -1, -(OLD.number > 1),
               -(COALESCE(OLD.user_cpu_us, 0) + COALESCE(OLD.system_cpu_us, 0))
        FROM jobs j WHERE j.id = OLD.job_id;
    INSERT INTO stats_values_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''),
               COALESCE((SELECT path FROM activities WHERE job_id = OLD.job_id AND idx = OLD.idx), ''),
               v.kind, v.value - CASE v.kind WHEN 3 THEN j.created_at ELSE 0 END, -1
        FROM jobs j, (SELECT 2 AS kind, OLD.finished_at - OLD.started_at AS value
                      UNION ALL SELECT 3, CASE WHEN OLD.number = 1 THEN OLD.started_at END
                      UNION ALL SELECT 4, OLD.peak_memory_bytes) v
        WHERE j.id = OLD.job_id AND v.value IS NOT NULL;
END;

-- The history already there.
INSERT INTO stats_jobs (hour, chain, tenant, jobs, succeeded, failed, cancelled, in_flight)
    SELECT created_at / 3600000, chain, COALESCE(tenant, ''), COUNT(*), SUM(state = 'succeeded'),
           SUM(state = 'failed'), SUM(state = 'cancelled'), SUM(state IN ('queued', 'running'))
    FROM jobs GROUP BY 1, 2, 3;
INSERT INTO stats_activities (hour, chain, tenant, path, activities, runs, succeeded, failed,
                              attempts, retries, cpu_us)
    SELECT hour, chain, tenant, path, SUM(activities), SUM(runs), SUM(succeeded), SUM(failed),
           SUM(attempts), SUM(retries), SUM(cpu_us)
    FROM (SELECT j.created_at / 3600000 AS hour, j.chain, COALESCE(j.tenant, '') AS tenant,
                 act.path, 1 AS activities,
                 act.state IN ('succeeded', 'failed', 'cancelled') AS runs,
                 act.state = 'succeeded' AS succeeded, act.state = 'failed' AS failed,
                 0 AS attempts, 0 AS retries, 0 AS cpu_us
          FROM activities act JOIN jobs j ON j.id = act.job_id
          UNION ALL
          SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''), COALESCE(act.path, ''),
                 0, 0, 0, 0, 1, a.number > 1,
                 COALESCE(a.user_cpu_us, 0) + COALESCE(a.system_cpu_us, 0)
          FROM attempts a JOIN jobs j ON j.id = a.job_id
          LEFT JOIN activities act ON act.job_id = a.job_id AND act.idx = a.idx)
    GROUP BY hour, chain, tenant, path;
INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
    SELECT hour, chain, tenant, path, kind,
           value - value % CASE WHEN value < 1000 THEN 1
               ELSE CAST(substr('1000000000000000000', 1, length(value) - 2) AS INTEGER) END
               AS rounded,
           COUNT(*), MAX(value)
    FROM (SELECT created_at / 3600000 AS hour, chain, COALESCE(tenant, '') AS tenant, '' AS path,
                 0 AS kind, finished_at - started_at AS value
          FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled')
          UNION ALL
          SELECT created_at / 3600000, chain, COALESCE(tenant, ''), '', 1, started_at - created_at
          FROM jobs
          UNION ALL
          SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''), COALESCE(act.path, ''),
                 k.kind,
                 CASE k.kind WHEN 2 THEN a.finished_at - a.started_at
                             WHEN 3 THEN CASE WHEN a.number = 1 THEN a.started_at - j.created_at END
                             ELSE a.peak_memory_bytes END
          FROM attempts a JOIN jobs j ON j.id = a.job_id
          LEFT JOIN activities act ON act.job_id = a.job_id AND act.idx = a.idx
          CROSS JOIN (SELECT 2 AS kind UNION ALL SELECT 3 UNION ALL SELECT 4) k)
    WHERE value IS NOT NULL
    GROUP BY hour, chain, tenant, path, kind, rounded;
"#;

/// Version 17: `job.list --tenant` reads a tenant's jobs newest first from
/// an index instead of walking every job.
const V17: &str = r#"
CREATE INDEX jobs_by_tenant ON jobs (tenant, id);
"#;

/// Version 18: fan-out items on Slurm, one job array per batch of items.
/// An item's latest attempt keeps the array's job name (committed with
/// the attempt, before `sbatch`), the array's job id (`ARRAYID`), the
/// task's own Slurm job id once seen (its record after it leaves the
/// queue), and how far its control file was applied.
const V18: &str = r#"
ALTER TABLE items ADD COLUMN slurm_name TEXT;
ALTER TABLE items ADD COLUMN slurm_job_id INTEGER;
ALTER TABLE items ADD COLUMN slurm_task_job_id INTEGER;
ALTER TABLE items ADD COLUMN control_offset INTEGER NOT NULL DEFAULT 0;
"#;

/// Version 21: fewer index pages written per job. Version 11's two
/// indexes by creation time also held a job's state and start and end
/// times, so every change of state rewrote an entry in each; they now hold
/// only what orders them, and statistics read the rows of the at most one
/// hour they count exactly from the table. `jobs_by_tenant` keeps only the
/// jobs that have a tenant: a query on a tenant implies one.
const V21: &str = r#"
DROP INDEX jobs_by_created;
CREATE INDEX jobs_by_created ON jobs (created_at);
DROP INDEX jobs_by_chain_created;
CREATE INDEX jobs_by_chain_created ON jobs (chain, created_at);
DROP INDEX jobs_by_tenant;
CREATE INDEX jobs_by_tenant ON jobs (tenant, id) WHERE tenant IS NOT NULL;
"#;

/// Version 16's SQL, whose backfill tests run again.
#[cfg(test)]
pub(crate) const V16_FOR_TESTS: &str = V16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(migrations().validate().is_ok());
    }

    /// A database made by version 1 upgrades in place and keeps its jobs.
    #[test]
    fn upgrades_a_version_1_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        {
            let mut conn = rusqlite::Connection::open(&path).expect("open");
            Migrations::new(vec![M::up(V1)])
                .to_latest(&mut conn)
                .expect("version 1");
            conn.execute(
                "INSERT INTO jobs (id, target, chain, version, params, state, submitted_by, created_at)
                 VALUES (7, 'c', 'c', 'v', '{}', 'succeeded', 'alice', 1)",
                [],
            )
            .expect("insert");
        }
        let store = crate::store::Store::open(&path).expect("upgrade");
        let job = store
            .read_now(|conn| crate::store::get_job(conn, 7))
            .expect("read")
            .expect("job kept");
        assert_eq!(job.submitted_by, "alice");
        let simulated: i64 = store
            .read_now(|conn| {
                Ok(conn.query_row("SELECT simulated FROM jobs WHERE id = 7", [], |r| r.get(0))?)
            })
            .expect("new column");
        assert_eq!(simulated, 0);
        assert_eq!(job.run_id, 7, "an old job is its own run");
        // Version 4 seeds the high-water mark from the jobs there, and it
        // stays when they are deleted.
        assert_eq!(store.read_now(crate::store::max_job_id).expect("max"), 7);
        rusqlite::Connection::open(&path)
            .expect("open")
            .execute("DELETE FROM jobs", [])
            .expect("delete");
        assert_eq!(
            store.read_now(crate::store::max_job_id).expect("max"),
            7,
            "a deleted job's id is not given out again"
        );
    }
}

#[cfg(test)]
mod plan_tests {
    use crate::store::ListFilter;

    /// Every filter of `job.list` reads through an index, never a walk of
    /// every job: the plan names the index each one uses.
    #[test]
    fn job_list_filters_are_indexed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plan.db");
        drop(crate::store::Store::open(&path).expect("open"));
        let conn = rusqlite::Connection::open(&path).expect("open");
        let tenant = || Some("north".to_string());
        let cases = [
            (
                ListFilter {
                    tenant: tenant(),
                    ..ListFilter::default()
                },
                "USING INDEX jobs_by_tenant (tenant=? AND id<?)",
            ),
            (
                ListFilter {
                    since_ms: Some(5),
                    ..ListFilter::default()
                },
                "USING COVERING INDEX jobs_by_created (created_at>?)",
            ),
            (
                ListFilter {
                    tenant: tenant(),
                    since_ms: Some(5),
                    ..ListFilter::default()
                },
                "USING INDEX jobs_by_tenant",
            ),
        ];
        for (filter, index) in cases {
            let sql = format!("EXPLAIN QUERY PLAN {}", crate::store::list_sql(&filter));
            let mut stmt = conn.prepare(&sql).expect("prepare");
            let unbound = vec![rusqlite::types::Null; stmt.parameter_count()];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(unbound), |row| {
                    row.get::<_, String>(3)
                })
                .expect("plan")
                .map(|r| r.expect("row"))
                .collect();
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{filter:?}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|step| step == "SCAN jobs"),
                "{filter:?} walks every job: {plan:?}"
            );
        }
    }
}
