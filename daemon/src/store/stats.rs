//! `stats.get` in SQL: counts, retries, CPU and memory by chain and by
//! activity, and the durations nearest-rank percentiles are taken from,
//! over the jobs created in a window (`jobs_by_created`, or `jobs_by_chain_created`
//! with a chain; attempts and activities by their primary keys).

use std::collections::BTreeMap;

use holdfast_api::{ActivityStats, ChainStats, Percentiles, Stats};
use rusqlite::{Connection, ToSql};

use super::StoreError;
use super::read::rfc3339;

/// Which jobs `stats.get` counts.
#[derive(Debug, Clone)]
pub struct StatsFilter {
    /// Jobs created at or after this instant (ms since the epoch).
    pub since_ms: i64,
    /// `CHAIN[.PROCESS[.ACTIVITY]]`.
    pub target: Option<String>,
    pub tenant: Option<String>,
}

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
    fn new(filter: &StatsFilter) -> Where {
        let mut jobs = String::from("j.created_at >= ?1");
        let mut params: Vec<Box<dyn ToSql>> = vec![Box::new(filter.since_ms)];
        let mut activity = None;
        if let Some(target) = &filter.target {
            let chain = target.split('.').next().unwrap_or_default().to_string();
            params.push(Box::new(chain));
            jobs.push_str(&format!(" AND j.chain = ?{}", params.len()));
            if target.contains('.') {
                activity = Some(target.clone());
            }
        }
        if let Some(tenant) = &filter.tenant {
            params.push(Box::new(tenant.clone()));
            jobs.push_str(&format!(" AND j.tenant = ?{}", params.len()));
        }
        // The activity's parameter comes last, so queries without
        // `activities` bind the others alone.
        let jobs_params = params.len();
        let activities = match activity {
            None => String::new(),
            Some(target) => {
                // `chain.process` matches its activities; a full path itself.
                let exact = target.split('.').count() == 3;
                params.push(Box::new(if exact { target } else { format!("{target}.") }));
                let n = params.len();
                if exact {
                    format!(" AND act.path = ?{n}")
                } else {
                    format!(" AND substr(act.path, 1, length(?{n})) = ?{n}")
                }
            }
        };
        let from = if filter.target.is_some() {
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

/// Everything `stats.get` answers.
pub fn stats(conn: &Connection, filter: &StatsFilter) -> Result<Stats, StoreError> {
    let w = Where::new(filter);
    let jobs = &w.jobs;
    let from = w.from;
    let acts = &w.activities;

    let mut chains: BTreeMap<String, ChainStats> = BTreeMap::new();
    {
        let sql = format!(
            "SELECT j.chain, COUNT(*), SUM(j.state = 'succeeded'), SUM(j.state = 'failed'),
                    SUM(j.state = 'cancelled'), SUM(j.state IN ('queued', 'running'))
             FROM {from} WHERE {jobs} GROUP BY j.chain"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(w.jobs_params().as_slice())?;
        while let Some(row) = rows.next()? {
            let chain: String = row.get(0)?;
            let succeeded = count(row.get(2)?);
            let failed = count(row.get(3)?);
            chains.insert(
                chain.clone(),
                ChainStats {
                    chain,
                    jobs: count(row.get(1)?),
                    succeeded,
                    failed,
                    cancelled: count(row.get(4)?),
                    in_flight: count(row.get(5)?),
                    success_rate: rate(succeeded, failed),
                    retries: 0,
                    duration: Percentiles::default(),
                    queue_wait: Percentiles::default(),
                    peak_memory_bytes: None,
                    cpu_us: 0,
                },
            );
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
            if let Some(c) = chains.get_mut(&row.get::<_, String>(0)?) {
                c.retries = count(row.get(1)?);
                c.cpu_us = count(row.get(2)?);
                c.peak_memory_bytes = row.get::<_, Option<i64>>(3)?.map(|v| v.max(0) as u64);
            }
        }
    }
    let ended = "j.state IN ('succeeded', 'failed', 'cancelled')";
    for (key, p) in percentiles(
        conn,
        &format!(
            "SELECT j.chain, j.finished_at - j.started_at FROM {from}
             WHERE {jobs} AND {ended} AND j.started_at IS NOT NULL AND j.finished_at IS NOT NULL"
        ),
        &w.jobs_params(),
    )? {
        if let Some(c) = chains.get_mut(&key) {
            c.duration = p;
        }
    }
    for (key, p) in percentiles(
        conn,
        &format!(
            "SELECT j.chain, j.started_at - j.created_at FROM {from}
             WHERE {jobs} AND j.started_at IS NOT NULL"
        ),
        &w.jobs_params(),
    )? {
        if let Some(c) = chains.get_mut(&key) {
            c.queue_wait = p;
        }
    }

    let mut activities: BTreeMap<String, ActivityStats> = BTreeMap::new();
    {
        let sql = format!(
            "SELECT act.path, SUM(act.state IN ('succeeded', 'failed', 'cancelled')),
                    SUM(act.state = 'succeeded'), SUM(act.state = 'failed')
             FROM {from} JOIN activities act ON act.job_id = j.id
             WHERE {jobs}{acts} GROUP BY act.path"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(w.params().as_slice())?;
        while let Some(row) = rows.next()? {
            let path: String = row.get(0)?;
            let succeeded = count(row.get(2)?);
            let failed = count(row.get(3)?);
            activities.insert(
                path.clone(),
                ActivityStats {
                    path,
                    runs: count(row.get(1)?),
                    succeeded,
                    failed,
                    success_rate: rate(succeeded, failed),
                    attempts: 0,
                    retries: 0,
                    duration: Percentiles::default(),
                    queue_wait: Percentiles::default(),
                    peak_memory_bytes: None,
                    cpu_us: 0,
                },
            );
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
            if let Some(a) = activities.get_mut(&row.get::<_, String>(0)?) {
                a.attempts = count(row.get(1)?);
                a.retries = count(row.get(2)?);
                a.cpu_us = count(row.get(3)?);
                a.peak_memory_bytes = row.get::<_, Option<i64>>(4)?.map(|v| v.max(0) as u64);
            }
        }
    }
    for (key, p) in percentiles(
        conn,
        &format!(
            "SELECT act.path, a.finished_at - a.started_at {attempts_of}
             AND a.finished_at IS NOT NULL"
        ),
        &w.params(),
    )? {
        if let Some(a) = activities.get_mut(&key) {
            a.duration = p;
        }
    }
    for (key, p) in percentiles(
        conn,
        &format!("SELECT act.path, a.started_at - j.created_at {attempts_of} AND a.number = 1"),
        &w.params(),
    )? {
        if let Some(a) = activities.get_mut(&key) {
            a.queue_wait = p;
        }
    }

    Ok(Stats {
        since: rfc3339(filter.since_ms),
        target: filter.target.clone(),
        tenant: filter.tenant.clone(),
        chains: chains.into_values().collect(),
        activities: activities.into_values().collect(),
    })
}

/// Nearest-rank p50, p95 and the maximum of `values` (a query of
/// `key, value` rows) per key: the value at rank ⌈p·n/100⌉ in ascending
/// order. SQLite selects the values through the window's index; the ranks
/// are taken here, after a sort in memory, because SQLite's `ROW_NUMBER`
/// over each key's values measured three times slower than the whole
/// selection (100,000 jobs: ~175 ms against ~20 ms, plus ~5 ms to sort).
fn percentiles(
    conn: &Connection,
    values: &str,
    params: &[&dyn ToSql],
) -> Result<Vec<(String, Percentiles)>, StoreError> {
    let mut stmt = conn.prepare_cached(values)?;
    let mut rows = stmt.query(params)?;
    let mut by_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let Some(value) = row.get::<_, Option<i64>>(1)? else {
            continue;
        };
        let key: String = row.get(0)?;
        match by_key.get_mut(&key) {
            Some(list) => list.push(value),
            None => {
                by_key.insert(key, vec![value]);
            }
        }
    }
    Ok(by_key
        .into_iter()
        .map(|(key, mut list)| {
            list.sort_unstable();
            (key, nearest_rank(&list))
        })
        .collect())
}

/// The figures of sorted, non-empty `values`.
fn nearest_rank(values: &[i64]) -> Percentiles {
    let n = values.len();
    // Rank ⌈p·n/100⌉, counted from 1.
    let at = |p: usize| values.get((n * p).div_ceil(100).max(1) - 1).copied();
    let ms = |v: Option<i64>| v.map(|v| v.max(0) as u64);
    Percentiles {
        count: n as u64,
        p50_ms: ms(at(50)),
        p95_ms: ms(at(95)),
        max_ms: ms(values.last().copied()),
    }
}

fn count(v: Option<i64>) -> u64 {
    v.unwrap_or(0).max(0) as u64
}

/// succeeded / (succeeded + failed), or None when both are 0.
fn rate(succeeded: u64, failed: u64) -> Option<f64> {
    let ended = succeeded + failed;
    (ended > 0).then(|| succeeded as f64 / ended as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = nearest_rank(&[10, 20, 30, 40]);
        assert_eq!(
            (p.count, p.p50_ms, p.p95_ms, p.max_ms),
            (4, Some(20), Some(40), Some(40))
        );
        let p = nearest_rank(&[5]);
        assert_eq!((p.p50_ms, p.p95_ms), (Some(5), Some(5)));
        let hundred: Vec<i64> = (1..=100).collect();
        let p = nearest_rank(&hundred);
        assert_eq!((p.p50_ms, p.p95_ms), (Some(50), Some(95)));
    }

    /// The queries use the indexes they were written for, not a scan of
    /// every job.
    #[test]
    fn queries_use_the_window_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(&dir.path().join("s.db")).expect("open");
        let plans = store
            .read_now(|conn| {
                let mut plans = Vec::new();
                for target in [None, Some("c".to_string())] {
                    let w = Where::new(&StatsFilter {
                        since_ms: 0,
                        target,
                        tenant: None,
                    });
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
                && plans[0].contains("jobs_by_created (created_at>?)"),
            "{}",
            plans[0]
        );
        assert!(
            plans[1].contains("SEARCH j USING")
                && plans[1].contains("jobs_by_chain_created (chain=? AND created_at>?)"),
            "{}",
            plans[1]
        );
    }
}
