//! Retention: an hourly sweep that deletes finished jobs older than
//! `retention` or beyond the newest `retention_jobs`, with their activities,
//! attempts and log files, audit rows older than `audit_retention`, and
//! events older than [`EVENTS_RETENTION`] or beyond the newest [`EVENTS_KEPT`]
//! (with notification deliveries that are over and as old).
//!
//! Queued and running jobs are never deleted. The sweep runs beside the
//! engine, not in it: finished jobs are no longer in the engine's memory.
//! It deletes in batches of [`BATCH`] jobs, one transaction each, so the
//! store's writer is never held for long and the engine's commits interleave.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::params;

use crate::store::{Store, StoreError, WriteOp, now_ms};

/// Jobs per delete transaction.
pub const BATCH: usize = 500;
/// Time between sweeps.
const EVERY: Duration = Duration::from_secs(3600);
/// Events (the outbox, `events.subscribe`'s resume points) are kept this
/// long, and at most [`EVENTS_KEPT`] of them.
pub const EVENTS_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
pub const EVENTS_KEPT: u64 = 200_000;

/// What to keep.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub retention: Duration,
    pub retention_jobs: Option<u64>,
    pub audit_retention: Duration,
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub jobs: usize,
    pub audit_rows: usize,
}

const FINISHED: &str = "state IN ('succeeded', 'failed', 'cancelled')";

/// Finished jobs to delete, oldest first, at most `limit`.
fn expired(
    conn: &rusqlite::Connection,
    before_ms: i64,
    keep_newest: Option<u64>,
    limit: usize,
) -> Result<Vec<u64>, StoreError> {
    // The id below which finished jobs are beyond `retention_jobs`.
    let count_floor: Option<i64> = match keep_newest {
        Some(n) => conn
            .query_row(
                &format!("SELECT id FROM jobs WHERE {FINISHED} ORDER BY id DESC LIMIT 1 OFFSET ?1"),
                params![n as i64],
                |r| r.get(0),
            )
            .ok(),
        None => None,
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id FROM jobs WHERE {FINISHED}
           AND (finished_at < ?1 OR id <= ?2)
         ORDER BY id LIMIT ?3"
    ))?;
    let ids = stmt
        .query_map(
            params![before_ms, count_floor.unwrap_or(0), limit as i64],
            |r| r.get::<_, i64>(0),
        )?
        .map(|r| r.map(|id| id as u64))
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// One sweep at `now_ms`.
pub async fn sweep(
    store: &Store,
    logs_dir: &Path,
    policy: Policy,
    now: i64,
) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let before = now - policy.retention.as_millis() as i64;
    loop {
        let keep = policy.retention_jobs;
        let ids = store
            .read(move |conn| expired(conn, before, keep, BATCH))
            .await?;
        if ids.is_empty() {
            break;
        }
        let n = ids.len();
        store
            .write(vec![WriteOp::DeleteJobs(ids.clone())], false)
            .await?;
        // Unlinking large logs can take a while: off the runtime's workers.
        let dirs: Vec<PathBuf> = ids.iter().map(|id| logs_dir.join(id.to_string())).collect();
        let removed = tokio::task::spawn_blocking(move || dirs.iter().for_each(remove_logs));
        if let Err(e) = removed.await {
            tracing::warn!(error = %e, "removing deleted jobs' logs stopped");
        }
        report.jobs += n;
        if n < BATCH {
            break;
        }
        tokio::task::yield_now().await;
    }
    let audit_before = now - policy.audit_retention.as_millis() as i64;
    loop {
        let ids: Vec<i64> = store
            .read(move |conn| {
                let mut stmt =
                    conn.prepare_cached("SELECT id FROM audit WHERE at < ?1 ORDER BY id LIMIT ?2")?;
                let rows = stmt
                    .query_map(params![audit_before, BATCH as i64], |r| r.get(0))?
                    .collect::<Result<Vec<i64>, _>>()?;
                Ok(rows)
            })
            .await?;
        if ids.is_empty() {
            break;
        }
        let n = ids.len();
        store.write(vec![WriteOp::DeleteAudit(ids)], false).await?;
        report.audit_rows += n;
        if n < BATCH {
            break;
        }
    }
    let before = now - EVENTS_RETENTION.as_millis() as i64;
    let keep = EVENTS_KEPT;
    store
        .write(vec![WriteOp::DeleteEvents { before, keep }], false)
        .await?;
    Ok(report)
}

fn remove_logs(dir: &PathBuf) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted job's logs");
    }
}

/// Sweep now and then every hour, for the daemon's lifetime.
pub fn start(store: Store, logs_dir: PathBuf, policy: Policy) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            match sweep(&store, &logs_dir, policy, now_ms()).await {
                Ok(report) if report != Report::default() => {
                    tracing::info!(
                        jobs = report.jobs,
                        audit_rows = report.audit_rows,
                        "retention sweep deleted old history"
                    )
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "retention sweep failed; it runs again in an hour")
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn insert(store: &Store, id: u64, state: &str, finished_at: Option<i64>) {
        let state = state.to_string();
        let path = store_path(store);
        let conn = rusqlite::Connection::open(path).expect("open");
        conn.execute(
            "INSERT INTO jobs (id, target, chain, version, params, state, submitted_by, created_at, finished_at)
             VALUES (?1, 'c', 'c', 'v', '{}', ?2, 'u', 0, ?3)",
            params![id as i64, state, finished_at],
        )
        .expect("job");
        conn.execute(
            "INSERT INTO activities (job_id, idx, path, state) VALUES (?1, 0, 'c.p.a', 'succeeded')",
            params![id as i64],
        )
        .expect("activity");
        conn.execute(
            "INSERT INTO attempts (job_id, idx, number, state, started_at) VALUES (?1, 0, 1, 'succeeded', 0)",
            params![id as i64],
        )
        .expect("attempt");
    }

    fn store_path(store: &Store) -> PathBuf {
        store
            .read_now(|conn| Ok(PathBuf::from(conn.path().unwrap_or_default())))
            .expect("path")
    }

    fn ids(store: &Store) -> Vec<i64> {
        store
            .read_now(|conn| {
                let mut stmt = conn.prepare("SELECT id FROM jobs ORDER BY id")?;
                let rows = stmt
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .expect("ids")
    }

    #[tokio::test]
    async fn deletes_exactly_the_expired_finished_jobs_and_their_logs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db")).expect("store");
        let logs = dir.path().join("logs");
        let now = 100 * DAY;
        insert(&store, 1, "succeeded", Some(now - 40 * DAY));
        insert(&store, 2, "failed", Some(now - 31 * DAY));
        insert(&store, 3, "cancelled", Some(now - 29 * DAY));
        insert(&store, 4, "running", None);
        insert(&store, 5, "queued", None);
        insert(&store, 6, "succeeded", Some(now - DAY));
        for id in 1..=6 {
            std::fs::create_dir_all(logs.join(id.to_string())).expect("log dir");
        }
        let policy = Policy {
            retention: Duration::from_secs(30 * 86_400),
            retention_jobs: None,
            audit_retention: Duration::from_secs(365 * 86_400),
        };
        let report = sweep(&store, &logs, policy, now).await.expect("sweep");
        assert_eq!(report.jobs, 2);
        assert_eq!(ids(&store), vec![3, 4, 5, 6]);
        assert!(!logs.join("1").exists() && !logs.join("2").exists());
        assert!(logs.join("3").exists() && logs.join("4").exists());
        let orphans: i64 = store
            .read_now(|conn| {
                Ok(conn.query_row(
                    "SELECT (SELECT COUNT(*) FROM activities WHERE job_id IN (1, 2))
                          + (SELECT COUNT(*) FROM attempts WHERE job_id IN (1, 2))",
                    [],
                    |r| r.get(0),
                )?)
            })
            .expect("count");
        assert_eq!(orphans, 0, "activities and attempts go with their job");

        // Keep only the newest finished job: 3 goes, running/queued stay.
        let by_count = Policy {
            retention_jobs: Some(1),
            ..policy
        };
        sweep(&store, &logs, by_count, now).await.expect("sweep");
        assert_eq!(ids(&store), vec![4, 5, 6]);
    }

    #[tokio::test]
    async fn audit_rows_have_their_own_retention() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db")).expect("store");
        let now = 1000 * DAY;
        let rows = [now - 400 * DAY, now - 10 * DAY]
            .into_iter()
            .map(|at| {
                WriteOp::Audit(Box::new(crate::store::AuditRow {
                    at,
                    uid: Some(0),
                    user: None,
                    pid: None,
                    method: "job.submit",
                    target: None,
                    outcome: "ok".into(),
                    detail: None,
                }))
            })
            .collect();
        store.write(rows, false).await.expect("audit");
        let policy = Policy {
            retention: Duration::from_secs(30 * 86_400),
            retention_jobs: None,
            audit_retention: Duration::from_secs(365 * 86_400),
        };
        let report = sweep(&store, &dir.path().join("logs"), policy, now)
            .await
            .expect("sweep");
        assert_eq!(report.audit_rows, 1);
    }

    /// Events older than their retention go; the newest id stays the
    /// highest ever given out, so a resumed subscriber is never handed a
    /// reused id.
    #[tokio::test]
    async fn old_events_go_and_their_ids_are_not_given_out_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db")).expect("store");
        let now = 1000 * DAY;
        let rows = [(1, now - 8 * DAY), (2, now - 8 * DAY), (3, now - DAY)]
            .into_iter()
            .map(|(id, at)| {
                WriteOp::Event(Box::new(crate::store::EventRow {
                    id,
                    kind: "job.finished".into(),
                    at,
                    job_id: Some(id),
                    chain: None,
                    tenant: None,
                    payload: format!(r#"{{"id":{id},"kind":"job.finished","at":"x"}}"#),
                }))
            })
            .collect();
        store.write(rows, false).await.expect("events");
        let policy = Policy {
            retention: Duration::from_secs(30 * 86_400),
            retention_jobs: None,
            audit_retention: Duration::from_secs(365 * 86_400),
        };
        sweep(&store, &dir.path().join("logs"), policy, now)
            .await
            .expect("sweep");
        let kept: Vec<u64> = store
            .read_now(|conn| crate::store::events_since(conn, 0, 10))
            .expect("read")
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(kept, [3]);
        store
            .write(
                vec![WriteOp::DeleteEvents {
                    before: now,
                    keep: 0,
                }],
                false,
            )
            .await
            .expect("delete all");
        assert_eq!(store.read_now(crate::store::max_event_id).expect("max"), 3);
    }
}
