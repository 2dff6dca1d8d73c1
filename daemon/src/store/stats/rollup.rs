//! The whole hours of a `stats.get` window, read from the rollup tables
//! of schema version 16 (`stats_jobs`, `stats_activities`,
//! `stats_values`), whose rows are keyed by hour, chain, tenant and path:
//! the cost follows the hours, chains, tenants, activities and distinct
//! kept values of the window, not its jobs.

use rusqlite::{Connection, ToSql};

use super::{StatsFilter, Sums, count, max_of};
use crate::store::StoreError;

/// `kind` of `stats_values`.
const JOB_DURATION: i64 = 0;
const JOB_QUEUE_WAIT: i64 = 1;
const ATTEMPT_DURATION: i64 = 2;
const ACTIVITY_QUEUE_WAIT: i64 = 3;
const PEAK_MEMORY: i64 = 4;

/// The rollup rows of `filter` from `first_hour` on, as SQL and
/// parameters: `rows` for chain figures, `activity_rows` with the
/// target's activity filter too.
struct Where {
    rows: String,
    activity_rows: String,
    params: Vec<Box<dyn ToSql>>,
    /// How many of `params` `rows` uses.
    rows_params: usize,
}

impl Where {
    fn new(filter: &StatsFilter, first_hour: i64) -> Where {
        let mut rows = String::from("hour >= ?1");
        let mut params: Vec<Box<dyn ToSql>> = vec![Box::new(first_hour)];
        if let Some(chain) = filter.chain() {
            params.push(Box::new(chain.to_string()));
            rows.push_str(&format!(" AND chain = ?{}", params.len()));
        }
        if let Some(tenant) = &filter.tenant {
            params.push(Box::new(tenant.clone()));
            rows.push_str(&format!(" AND tenant = ?{}", params.len()));
        }
        let rows_params = params.len();
        // '' holds attempts without an activity row: a chain's, no path's.
        let mut activity_rows = format!("{rows} AND path <> ''");
        if let Some((target, exact)) = filter.activities() {
            params.push(Box::new(target));
            let n = params.len();
            activity_rows.push_str(&if exact {
                format!(" AND path = ?{n}")
            } else {
                format!(" AND substr(path, 1, length(?{n})) = ?{n}")
            });
        }
        Where {
            rows,
            activity_rows,
            params,
            rows_params,
        }
    }

    fn params(&self) -> Vec<&dyn ToSql> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &dyn ToSql)
            .collect()
    }

    fn rows_params(&self) -> Vec<&dyn ToSql> {
        self.params[..self.rows_params]
            .iter()
            .map(|p| p.as_ref() as &dyn ToSql)
            .collect()
    }
}

/// Adds the figures of the jobs of `filter` created in `first_hour` or
/// later to `sums`.
pub(super) fn add(
    conn: &Connection,
    filter: &StatsFilter,
    first_hour: i64,
    sums: &mut Sums,
) -> Result<(), StoreError> {
    let w = Where::new(filter, first_hour);
    let rows = &w.rows;
    let activity_rows = &w.activity_rows;
    {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT chain, SUM(jobs), SUM(succeeded), SUM(failed), SUM(cancelled), SUM(in_flight)
             FROM stats_jobs WHERE {rows} GROUP BY chain"
        ))?;
        let mut found = stmt.query(w.rows_params().as_slice())?;
        while let Some(row) = found.next()? {
            let c = sums.chain(row.get(0)?);
            c.jobs += count(row.get(1)?);
            c.succeeded += count(row.get(2)?);
            c.failed += count(row.get(3)?);
            c.cancelled += count(row.get(4)?);
            c.in_flight += count(row.get(5)?);
        }
    }
    {
        // Every attempt of the chain's jobs, whatever the target's
        // activity: as the exact count.
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT chain, SUM(retries), SUM(cpu_us) FROM stats_activities
             WHERE {rows} GROUP BY chain"
        ))?;
        let mut found = stmt.query(w.rows_params().as_slice())?;
        while let Some(row) = found.next()? {
            let c = sums.chain(row.get(0)?);
            c.retries += count(row.get(1)?);
            c.cpu_us += count(row.get(2)?);
        }
    }
    {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT chain, kind, value, SUM(n), MAX(max_exact) FROM stats_values
             WHERE {rows} AND (kind = {PEAK_MEMORY} OR (path = '' AND kind IN
                 ({JOB_DURATION}, {JOB_QUEUE_WAIT}))) AND n > 0
             GROUP BY chain, kind, value"
        ))?;
        let mut found = stmt.query(w.rows_params().as_slice())?;
        while let Some(row) = found.next()? {
            let c = sums.chain(row.get(0)?);
            let (kind, value, n, largest): (i64, i64, Option<i64>, i64) =
                (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
            match kind {
                JOB_DURATION => c.duration.add(value, count(n), largest),
                JOB_QUEUE_WAIT => c.queue_wait.add(value, count(n), largest),
                _ => c.peak_memory = max_of(c.peak_memory, Some(largest)),
            }
        }
    }
    {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT path, SUM(activities), SUM(runs), SUM(succeeded), SUM(failed), SUM(attempts),
                    SUM(retries), SUM(cpu_us)
             FROM stats_activities WHERE {activity_rows} GROUP BY path"
        ))?;
        let mut found = stmt.query(w.params().as_slice())?;
        while let Some(row) = found.next()? {
            let a = sums.activity(row.get(0)?);
            a.rows += count(row.get(1)?);
            a.runs += count(row.get(2)?);
            a.succeeded += count(row.get(3)?);
            a.failed += count(row.get(4)?);
            a.attempts += count(row.get(5)?);
            a.retries += count(row.get(6)?);
            a.cpu_us += count(row.get(7)?);
        }
    }
    {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT path, kind, value, SUM(n), MAX(max_exact) FROM stats_values
             WHERE {activity_rows}
               AND kind IN ({ATTEMPT_DURATION}, {ACTIVITY_QUEUE_WAIT}, {PEAK_MEMORY}) AND n > 0
             GROUP BY path, kind, value"
        ))?;
        let mut found = stmt.query(w.params().as_slice())?;
        while let Some(row) = found.next()? {
            let a = sums.activity(row.get(0)?);
            let (kind, value, n, largest): (i64, i64, Option<i64>, i64) =
                (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
            match kind {
                ATTEMPT_DURATION => a.duration.add(value, count(n), largest),
                ACTIVITY_QUEUE_WAIT => a.queue_wait.add(value, count(n), largest),
                _ => a.peak_memory = max_of(a.peak_memory, Some(largest)),
            }
        }
    }
    Ok(())
}
