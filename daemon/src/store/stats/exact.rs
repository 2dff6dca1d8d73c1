//! The exact part of `stats.get`: counts, retries, CPU and memory by
//! chain and by activity, and every duration and queue wait, from the
//! jobs created in a span (found through `jobs_by_created`, or
//! `jobs_by_chain_created` with a chain, and read from the table by rowid;
//! attempts and activities by their primary keys). Used for the part of an
//! hour at the start of a window, which the rollup cannot split, so its
//! cost follows the jobs of at most that hour. The indexes hold only the
//! creation time (and chain): a job's changes of state do not rewrite
//! them (schema version 21).

use rusqlite::{Connection, ToSql};

use super::{StatsFilter, Sums, count, max_of};
use crate::store::StoreError;

/// The job filter as SQL over `jobs j`, with its parameters, and the
/// activity filter over `act`.
struct Where {
    /// `jobs j` with the index for the window named: the planner, without
    /// `ANALYZE` figures, would otherwise scan every job for `GROUP BY`.
    from: &'static str,
    jobs: String,
    activities: String,
    params: Vec<Box<dyn ToSql>>,
    /// How many of `params` the job filter uses.
    jobs_params: usize,
}

impl Where {
    /// The jobs of `filter` created before `until_ms`, when given.
    fn new(filter: &StatsFilter, until_ms: Option<i64>) -> Where {
        let mut jobs = String::from("j.created_at >= ?1");
        let mut params: Vec<Box<dyn ToSql>> = vec![Box::new(filter.since_ms)];
        if let Some(until) = until_ms {
            params.push(Box::new(until));
            jobs.push_str(&format!(" AND j.created_at < ?{}", params.len()));
        }
        if let Some(chain) = filter.chain() {
            params.push(Box::new(chain.to_string()));
            jobs.push_str(&format!(" AND j.chain = ?{}", params.len()));
        }
        if let Some(tenant) = &filter.tenant {
            params.push(Box::new(tenant.clone()));
            jobs.push_str(&format!(" AND j.tenant = ?{}", params.len()));
        }
        // The activity's parameter comes last, so queries without
        // `activities` bind the others alone.
        let jobs_params = params.len();
        let activities = match filter.activities() {
            None => String::new(),
            Some((target, exact)) => {
                params.push(Box::new(target));
                let n = params.len();
                if exact {
                    format!(" AND act.path = ?{n}")
                } else {
                    format!(" AND substr(act.path, 1, length(?{n})) = ?{n}")
                }
            }
        };
        let from = if filter.tenant.as_deref() == Some("") {
            // Counted over the whole window (`stats`), and no tenant file
            // can name '': the tenant index finds its jobs (none, unless
            // written by hand) at once, rather than every job of the
            // window being read from the table only to be left out.
            "jobs j INDEXED BY jobs_by_tenant"
        } else if filter.target.is_some() {
            "jobs j INDEXED BY jobs_by_chain_created"
        } else {
            "jobs j INDEXED BY jobs_by_created"
        };
        Where {
            from,
            jobs,
            activities,
            params,
            jobs_params,
        }
    }

    /// Parameters of a query that uses `activities`.
    fn params(&self) -> Vec<&dyn ToSql> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &dyn ToSql)
            .collect()
    }

    /// Parameters of a query over jobs alone.
    fn jobs_params(&self) -> Vec<&dyn ToSql> {
        self.params[..self.jobs_params]
            .iter()
            .map(|p| p.as_ref() as &dyn ToSql)
            .collect()
    }
}

/// Adds the figures of the jobs of `filter` created before `until_ms`
/// (every job since `filter.since_ms` without it) to `sums`.
pub(super) fn add(
    conn: &Connection,
    filter: &StatsFilter,
    until_ms: Option<i64>,
    sums: &mut Sums,
) -> Result<(), StoreError> {
    if until_ms.is_some_and(|until| until <= filter.since_ms) {
        return Ok(());
    }
    let w = Where::new(filter, until_ms);
    let jobs = &w.jobs;
    let from = w.from;
    let acts = &w.activities;

    {
        let sql = format!(
            "SELECT j.chain, COUNT(*), SUM(j.state = 'succeeded'), SUM(j.state = 'failed'),
                    SUM(j.state = 'cancelled'), SUM(j.state IN ('queued', 'running'))
             FROM {from} WHERE {jobs} GROUP BY j.chain"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(w.jobs_params().as_slice())?;
        while let Some(row) = rows.next()? {
            let c = sums.chain(row.get(0)?);
            c.jobs += count(row.get(1)?);
            c.succeeded += count(row.get(2)?);
            c.failed += count(row.get(3)?);
            c.cancelled += count(row.get(4)?);
            c.in_flight += count(row.get(5)?);
        }
    }
    {
        let sql = format!(
            "SELECT j.chain, SUM(a.number > 1),
                    SUM(COALESCE(a.user_cpu_us, 0) + COALESCE(a.system_cpu_us, 0)),
                    MAX(a.peak_memory_bytes)
             FROM {from} JOIN attempts a ON a.job_id = j.id WHERE {jobs} GROUP BY j.chain"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(w.jobs_params().as_slice())?;
        while let Some(row) = rows.next()? {
            let c = sums.chain(row.get(0)?);
            c.retries += count(row.get(1)?);
            c.cpu_us += count(row.get(2)?);
            c.peak_memory = max_of(c.peak_memory, row.get(3)?);
        }
    }
    let ended = "j.state IN ('succeeded', 'failed', 'cancelled')";
    each_value(
        conn,
        &format!(
            "SELECT j.chain, j.finished_at - j.started_at FROM {from}
             WHERE {jobs} AND {ended} AND j.started_at IS NOT NULL AND j.finished_at IS NOT NULL"
        ),
        &w.jobs_params(),
        |chain, value| sums.chain(chain).duration.add_exact(value),
    )?;
    each_value(
        conn,
        &format!(
            "SELECT j.chain, j.started_at - j.created_at FROM {from}
             WHERE {jobs} AND j.started_at IS NOT NULL"
        ),
        &w.jobs_params(),
        |chain, value| sums.chain(chain).queue_wait.add_exact(value),
    )?;

    {
        let sql = format!(
            "SELECT act.path, COUNT(*), SUM(act.state IN ('succeeded', 'failed', 'cancelled')),
                    SUM(act.state = 'succeeded'), SUM(act.state = 'failed')
             FROM {from} JOIN activities act ON act.job_id = j.id
             WHERE {jobs}{acts} GROUP BY act.path"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(w.params().as_slice())?;
        while let Some(row) = rows.next()? {
            let a = sums.activity(row.get(0)?);
            a.rows += count(row.get(1)?);
            a.runs += count(row.get(2)?);
            a.succeeded += count(row.get(3)?);
            a.failed += count(row.get(4)?);
        }
    }
    let attempts_of = format!(
        "FROM {from} JOIN activities act ON act.job_id = j.id
         JOIN attempts a ON a.job_id = act.job_id AND a.idx = act.idx
         WHERE {jobs}{acts}"
    );
    {
        let sql = format!(
            "SELECT act.path, COUNT(*), SUM(a.number > 1),
                    SUM(COALESCE(a.user_cpu_us, 0) + COALESCE(a.system_cpu_us, 0)),
                    MAX(a.peak_memory_bytes)
             {attempts_of} GROUP BY act.path"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(w.params().as_slice())?;
        while let Some(row) = rows.next()? {
            let a = sums.activity(row.get(0)?);
            a.attempts += count(row.get(1)?);
            a.retries += count(row.get(2)?);
            a.cpu_us += count(row.get(3)?);
            a.peak_memory = max_of(a.peak_memory, row.get(4)?);
        }
    }
    each_value(
        conn,
        &format!(
            "SELECT act.path, a.finished_at - a.started_at {attempts_of}
             AND a.finished_at IS NOT NULL"
        ),
        &w.params(),
        |path, value| sums.activity(path).duration.add_exact(value),
    )?;
    each_value(
        conn,
        &format!("SELECT act.path, a.started_at - j.created_at {attempts_of} AND a.number = 1"),
        &w.params(),
        |path, value| sums.activity(path).queue_wait.add_exact(value),
    )?;
    Ok(())
}

/// Calls `f` with each `key, value` row of `values` whose value is not
/// NULL.
fn each_value(
    conn: &Connection,
    values: &str,
    params: &[&dyn ToSql],
    mut f: impl FnMut(String, i64),
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(values)?;
    let mut rows = stmt.query(params)?;
    while let Some(row) = rows.next()? {
        if let Some(value) = row.get::<_, Option<i64>>(1)? {
            f(row.get(0)?, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queries use the indexes they were written for, not a scan of
    /// every job.
    #[test]
    fn queries_use_the_window_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(&dir.path().join("s.db")).expect("open");
        let plans = store
            .read_now(|conn| {
                let mut plans = Vec::new();
                for (target, tenant) in [
                    (None, None),
                    (Some("c".to_string()), None),
                    (Some("c".to_string()), Some(String::new())),
                ] {
                    let filter = StatsFilter {
                        since_ms: 0,
                        target,
                        tenant,
                    };
                    let w = Where::new(&filter, Some(3_600_000));
                    let sql = format!(
                        "EXPLAIN QUERY PLAN SELECT j.chain FROM {} WHERE {} GROUP BY j.chain",
                        w.from, w.jobs
                    );
                    let mut stmt = conn.prepare(&sql)?;
                    let mut rows = stmt.query(w.jobs_params().as_slice())?;
                    let mut plan = String::new();
                    while let Some(row) = rows.next()? {
                        plan.push_str(&row.get::<_, String>(3)?);
                        plan.push('\n');
                    }
                    plans.push(plan);
                }
                Ok(plans)
            })
            .expect("plans");
        // SEARCH, not SCAN: only the window's rows are visited.
        assert!(
            plans[0].contains("SEARCH j USING")
                && plans[0].contains("jobs_by_created (created_at>? AND created_at<?)"),
            "{}",
            plans[0]
        );
        assert!(
            plans[1].contains("SEARCH j USING")
                && plans[1]
                    .contains("jobs_by_chain_created (chain=? AND created_at>? AND created_at<?)"),
            "{}",
            plans[1]
        );
        // The tenant '' is counted over the whole window: through the
        // tenant index, not every job of the window.
        assert!(
            plans[2].contains("SEARCH j USING INDEX jobs_by_tenant (tenant=?)"),
            "{}",
            plans[2]
        );
    }
}
