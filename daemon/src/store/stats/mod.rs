//! `stats.get`: figures of the jobs created in a window, per chain and per
//! activity. Whole hours of the window are read (`rollup.rs`) from the
//! rollup that triggers keep (schema version 16, rewritten by 19 in
//! `triggers.rs`); the part of an hour at the window's start is counted
//! exactly from the jobs themselves (`exact.rs`). Both add into the same sums, and durations, queue waits
//! and peak memories are kept to three significant digits (`keep`), so
//! the answer does not depend on where an hour boundary falls.

mod exact;
mod rollup;
pub(super) mod triggers;

use std::collections::BTreeMap;

use holdfast_api::{ActivityStats, ChainStats, Percentiles, Stats};
use rusqlite::Connection;

use super::StoreError;
use super::read::rfc3339;

/// The rollup's bucket: an hour of job creation, in ms.
const HOUR_MS: i64 = 3_600_000;

/// Which jobs `stats.get` counts.
#[derive(Debug, Clone)]
pub struct StatsFilter {
    /// Jobs created at or after this instant (ms since the epoch).
    pub since_ms: i64,
    /// `CHAIN[.PROCESS[.ACTIVITY]]`.
    pub target: Option<String>,
    pub tenant: Option<String>,
}

impl StatsFilter {
    /// The chain `target` names.
    fn chain(&self) -> Option<&str> {
        self.target
            .as_deref()
            .map(|t| t.split('.').next().unwrap_or_default())
    }

    /// The activity paths `target` selects: `(text, exact)`, where a
    /// `chain.process` matches the paths starting with `chain.process.`.
    fn activities(&self) -> Option<(String, bool)> {
        let target = self.target.as_deref().filter(|t| t.contains('.'))?;
        Some(if target.split('.').count() == 3 {
            (target.to_string(), true)
        } else {
            (format!("{target}."), false)
        })
    }
}

/// Everything `stats.get` answers.
pub fn stats(conn: &Connection, filter: &StatsFilter) -> Result<Stats, StoreError> {
    let mut sums = Sums::default();
    // The rollup keeps "no tenant" as '', so a filter on the tenant ''
    // (which no tenant file can name) is counted from the jobs alone.
    if filter.tenant.as_deref() == Some("") {
        exact::add(conn, filter, None, &mut sums)?;
    } else {
        let first_hour = first_whole_hour(filter.since_ms);
        exact::add(conn, filter, Some(first_hour * HOUR_MS), &mut sums)?;
        rollup::add(conn, filter, first_hour, &mut sums)?;
    }
    Ok(sums.answer(filter))
}

/// The first rollup hour wholly inside a window that starts at
/// `since_ms`. Hour 0 also holds the jobs of the hour before the epoch
/// (SQLite's division rounds towards zero), so it is never whole.
fn first_whole_hour(since_ms: i64) -> i64 {
    (since_ms.div_euclid(HOUR_MS) + i64::from(since_ms.rem_euclid(HOUR_MS) != 0)).max(1)
}

/// A duration, queue wait or peak memory as the rollup keeps it: exact
/// below 1000, else to three significant digits, rounded down (12,345 is
/// kept as 12,300), so less than 1% below the value. Schema version 16's
/// `stats_values_delta` trigger does the same in SQL.
pub(super) fn keep(value: i64) -> i64 {
    if value < 1000 {
        return value;
    }
    let digits = value.ilog10() + 1;
    let step = 10i64.pow(digits - 3);
    value - value % step
}

/// The figures of the parts of a window, added up.
#[derive(Debug, Default)]
struct Sums {
    chains: BTreeMap<String, ChainSum>,
    activities: BTreeMap<String, ActivitySum>,
}

#[derive(Debug, Default)]
struct ChainSum {
    jobs: u64,
    succeeded: u64,
    failed: u64,
    cancelled: u64,
    in_flight: u64,
    retries: u64,
    cpu_us: u64,
    duration: Values,
    queue_wait: Values,
    peak_memory: Option<i64>,
}

#[derive(Debug, Default)]
struct ActivitySum {
    /// Activity rows, whatever their state: an activity is listed once it
    /// has one.
    rows: u64,
    runs: u64,
    succeeded: u64,
    failed: u64,
    attempts: u64,
    retries: u64,
    cpu_us: u64,
    duration: Values,
    queue_wait: Values,
    peak_memory: Option<i64>,
}

/// How many values were kept as each value (`keep`), with the largest
/// exact value of each.
#[derive(Debug, Default)]
struct Values(BTreeMap<i64, (u64, i64)>);

impl Values {
    fn add(&mut self, kept: i64, n: u64, largest: i64) {
        if n == 0 {
            return;
        }
        let entry = self.0.entry(kept).or_insert((0, largest));
        entry.0 += n;
        entry.1 = entry.1.max(largest);
    }

    fn add_exact(&mut self, value: i64) {
        self.add(keep(value), 1, value);
    }

    /// Nearest-rank p50 and p95 (the kept value at rank ⌈p·n/100⌉ in
    /// ascending order) and the largest exact value.
    fn percentiles(&self) -> Percentiles {
        let count: u64 = self.0.values().map(|(n, _)| n).sum();
        if count == 0 {
            return Percentiles::default();
        }
        let at = |p: u64| {
            let rank = (count * p).div_ceil(100).max(1);
            let mut seen = 0;
            self.0.iter().find_map(|(value, (n, _))| {
                seen += n;
                (seen >= rank).then_some(*value)
            })
        };
        let ms = |v: Option<i64>| v.map(|v| v.max(0) as u64);
        Percentiles {
            count,
            p50_ms: ms(at(50)),
            p95_ms: ms(at(95)),
            max_ms: ms(self.0.values().next_back().map(|(_, largest)| *largest)),
        }
    }
}

impl Sums {
    fn chain(&mut self, name: String) -> &mut ChainSum {
        self.chains.entry(name).or_default()
    }

    fn activity(&mut self, path: String) -> &mut ActivitySum {
        self.activities.entry(path).or_default()
    }

    fn answer(self, filter: &StatsFilter) -> Stats {
        let chains = self
            .chains
            .into_iter()
            .filter(|(_, c)| c.jobs > 0)
            .map(|(chain, c)| ChainStats {
                chain,
                jobs: c.jobs,
                succeeded: c.succeeded,
                failed: c.failed,
                cancelled: c.cancelled,
                in_flight: c.in_flight,
                success_rate: rate(c.succeeded, c.failed),
                retries: c.retries,
                duration: c.duration.percentiles(),
                queue_wait: c.queue_wait.percentiles(),
                peak_memory_bytes: c.peak_memory.map(|v| v.max(0) as u64),
                cpu_us: c.cpu_us,
            })
            .collect();
        let activities = self
            .activities
            .into_iter()
            .filter(|(_, a)| a.rows > 0)
            .map(|(path, a)| ActivityStats {
                path,
                runs: a.runs,
                succeeded: a.succeeded,
                failed: a.failed,
                success_rate: rate(a.succeeded, a.failed),
                attempts: a.attempts,
                retries: a.retries,
                duration: a.duration.percentiles(),
                queue_wait: a.queue_wait.percentiles(),
                peak_memory_bytes: a.peak_memory.map(|v| v.max(0) as u64),
                cpu_us: a.cpu_us,
            })
            .collect();
        Stats {
            since: rfc3339(filter.since_ms),
            target: filter.target.clone(),
            tenant: filter.tenant.clone(),
            chains,
            activities,
        }
    }
}

fn max_of(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
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
mod tests;
