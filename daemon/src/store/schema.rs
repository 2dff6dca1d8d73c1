//! Embedded schema migrations. Migrations are only ever appended, never
//! edited: a database made by any released version upgrades in place.

use rusqlite_migration::{M, Migrations};

/// Every migration's SQL, oldest first.
const ALL: [&str; 11] = [V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11];

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

/// Version 11: the Slurm job id of an attempt run by the Slurm executor,
/// committed once `sbatch` answered.
const V11: &str = r#"
ALTER TABLE attempts ADD COLUMN slurm_job_id INTEGER;
"#;

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
