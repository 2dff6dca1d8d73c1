//! Statistics and the read-only SQL views: `stats.get` / `hfctl stats`
//! against figures computed by hand on a fixed history and on real runs,
//! and every view queried through a read-only connection while the daemon
//! runs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast_api::{ActivityState, JobState, Percentiles, Stats};
use holdfast_tests::TestDaemon;
use holdfast_tests::poll::eventually;
use rusqlite::{Connection, OpenFlags, params};

use crate::support::{activity, shown};

const MIB: i64 = 1024 * 1024;

/// A job row of the fixed history: id, chain, tenant, state, created,
/// started, finished.
type JobRow = (
    i64,
    &'static str,
    &'static str,
    &'static str,
    i64,
    Option<i64>,
    Option<i64>,
);

/// An attempt row: job, number, state, start, end, user us, system us, peak.
type AttemptRow = (
    i64,
    i64,
    &'static str,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn stats(daemon: &TestDaemon, args: &[&str]) -> Stats {
    let mut full = vec!["stats"];
    full.extend_from_slice(args);
    let value = daemon.hfctl_json(&full);
    serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("`hfctl --json stats` is not Stats ({e}): {value:#}"))
}

fn percentiles(count: u64, p50: u64, p95: u64, max: u64) -> Percentiles {
    Percentiles {
        count,
        p50_ms: Some(p50),
        p95_ms: Some(p95),
        max_ms: Some(max),
    }
}

const ETL: &str = r#"
[process.load.activity.copy]
command = ["true"]
"#;

const OTHER: &str = r#"
[process.p.activity.a]
command = ["true"]
"#;

/// A history whose durations are exact to the millisecond, which real runs
/// never are: so it is written into the database of the stopped daemon
/// (before the daemon reads it again), the only way to pin percentiles to
/// hand-computed values. Jobs 101–105 are etl's within the week (105
/// cancelled before it started), 106 is etl's a month ago, 107 other's.
fn write_fixed_history(db: &std::path::Path, now: i64) {
    let conn = Connection::open(db).expect("the stopped daemon's database opens");
    let t = now - 3_600_000;
    let month_ago = now - 30 * 86_400_000;
    let jobs: [JobRow; 7] = [
        (
            101,
            "etl",
            "a",
            "succeeded",
            t,
            Some(t + 1000),
            Some(t + 11_000),
        ),
        (
            102,
            "etl",
            "a",
            "succeeded",
            t,
            Some(t + 2000),
            Some(t + 22_000),
        ),
        (
            103,
            "etl",
            "b",
            "failed",
            t,
            Some(t + 3000),
            Some(t + 33_000),
        ),
        (
            104,
            "etl",
            "b",
            "succeeded",
            t,
            Some(t + 4000),
            Some(t + 44_000),
        ),
        (105, "etl", "a", "cancelled", t, None, Some(t + 5000)),
        (
            106,
            "etl",
            "a",
            "succeeded",
            month_ago,
            Some(month_ago),
            Some(month_ago + 999_000),
        ),
        (
            107,
            "other",
            "a",
            "succeeded",
            t,
            Some(t + 500),
            Some(t + 1500),
        ),
    ];
    for (id, chain, tenant, state, created, started, finished) in jobs {
        conn.execute(
            "INSERT INTO jobs (id, target, chain, version, params, tenant, state, submitted_by,
                               created_at, started_at, finished_at, run_id)
             VALUES (?1, ?2, ?2, 'fixture', '{}', ?3, ?4, 'fixture', ?5, ?6, ?7, ?1)",
            params![id, chain, tenant, state, created, started, finished],
        )
        .expect("a job row");
        let (path, activity_state) = match (chain, state) {
            ("other", _) => ("other.p.a", "succeeded"),
            (_, "failed") => ("etl.load.copy", "failed"),
            (_, "cancelled") => ("etl.load.copy", "cancelled"),
            _ => ("etl.load.copy", "succeeded"),
        };
        conn.execute(
            "INSERT INTO activities (job_id, idx, path, state) VALUES (?1, 0, ?2, ?3)",
            params![id, path, activity_state],
        )
        .expect("an activity row");
    }
    let attempts: [AttemptRow; 7] = [
        (
            101,
            1,
            "succeeded",
            t + 1000,
            t + 11_000,
            Some(1_000_000),
            Some(500_000),
            Some(10 * MIB),
        ),
        (
            102,
            1,
            "failed",
            t + 2000,
            t + 7000,
            Some(100_000),
            Some(0),
            Some(20 * MIB),
        ),
        (
            102,
            2,
            "succeeded",
            t + 12_000,
            t + 22_000,
            Some(200_000),
            Some(0),
            Some(30 * MIB),
        ),
        (
            103,
            1,
            "failed",
            t + 3000,
            t + 33_000,
            Some(300_000),
            Some(0),
            Some(5 * MIB),
        ),
        // Recorded before resource use was: no figures.
        (104, 1, "succeeded", t + 4000, t + 44_000, None, None, None),
        (
            106,
            1,
            "succeeded",
            month_ago,
            month_ago + 999_000,
            Some(9_000_000),
            Some(0),
            Some(900 * MIB),
        ),
        (
            107,
            1,
            "succeeded",
            t + 500,
            t + 1500,
            Some(1000),
            Some(0),
            Some(MIB),
        ),
    ];
    for (job, number, state, start, end, user, system, peak) in attempts {
        conn.execute(
            "INSERT INTO attempts (job_id, idx, number, state, started_at, finished_at,
                                   usage_source, user_cpu_us, system_cpu_us, peak_memory_bytes,
                                   wall_ms)
             VALUES (?1, 0, ?2, ?3, ?4, ?5, CASE WHEN ?6 IS NULL THEN NULL ELSE 'rusage' END,
                     ?6, ?7, ?8, ?5 - ?4)",
            params![job, number, state, start, end, user, system, peak],
        )
        .expect("an attempt row");
    }
    conn.execute("UPDATE job_id_high_water SET last_id = 200", [])
        .expect("the high-water mark");
}

/// On a fixed history, `stats.get` gives the counts, the nearest-rank
/// p50/p95/max of durations and queue waits, retries, the largest peak
/// memory and the summed CPU computed by hand; the window leaves out the
/// month-old job, and `target` and `tenant` narrow what is counted.
#[test]
fn stats_match_hand_computed_figures_on_a_fixed_history() {
    let mut daemon = TestDaemon::start(&[("etl.toml", ETL), ("other.toml", OTHER)]);
    daemon.stop();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    write_fixed_history(&daemon.state_dir().join("holdfast.db"), now);
    daemon.launch();

    let all = stats(&daemon, &[]);
    assert_eq!(all.chains.len(), 2, "{all:#?}");
    let etl = &all.chains[0];
    assert_eq!(etl.chain, "etl");
    assert_eq!(
        (
            etl.jobs,
            etl.succeeded,
            etl.failed,
            etl.cancelled,
            etl.in_flight
        ),
        (5, 3, 1, 1, 0),
        "the month-old job is outside 7d: {etl:#?}"
    );
    assert_eq!(etl.success_rate, Some(0.75));
    assert_eq!(etl.retries, 1);
    // Durations 10, 20, 30, 40 s: p50 is rank ⌈2⌉, p95 rank ⌈3.8⌉.
    assert_eq!(etl.duration, percentiles(4, 20_000, 40_000, 40_000));
    assert_eq!(etl.queue_wait, percentiles(4, 2000, 4000, 4000));
    assert_eq!(etl.peak_memory_bytes, Some(30 * MIB as u64));
    assert_eq!(etl.cpu_us, 2_100_000);
    assert_eq!(all.chains[1].chain, "other");

    let copy = all
        .activities
        .iter()
        .find(|a| a.path == "etl.load.copy")
        .unwrap_or_else(|| panic!("etl.load.copy: {all:#?}"));
    assert_eq!(
        (
            copy.runs,
            copy.succeeded,
            copy.failed,
            copy.attempts,
            copy.retries
        ),
        (5, 3, 1, 5, 1),
        "{copy:#?}"
    );
    assert_eq!(copy.success_rate, Some(0.75));
    // Attempts of 5, 10, 10, 30, 40 s: p50 is rank ⌈2.5⌉, p95 rank ⌈4.75⌉.
    assert_eq!(copy.duration, percentiles(5, 10_000, 40_000, 40_000));
    assert_eq!(copy.queue_wait, percentiles(4, 2000, 4000, 4000));
    assert_eq!(copy.peak_memory_bytes, Some(30 * MIB as u64));
    assert_eq!(copy.cpu_us, 2_100_000);

    let narrowed = stats(&daemon, &["etl.load.copy"]);
    assert_eq!(narrowed.chains.len(), 1, "{narrowed:#?}");
    assert_eq!(narrowed.activities.len(), 1, "{narrowed:#?}");
    assert_eq!(narrowed.activities[0].path, "etl.load.copy");

    let tenant_b = stats(&daemon, &["--tenant", "b"]);
    assert_eq!(
        tenant_b.chains.len(),
        1,
        "other has no job of b: {tenant_b:#?}"
    );
    let etl_b = &tenant_b.chains[0];
    assert_eq!((etl_b.jobs, etl_b.succeeded, etl_b.failed), (2, 1, 1));
    assert_eq!(etl_b.duration, percentiles(2, 30_000, 40_000, 40_000));

    let month = stats(&daemon, &["etl", "--since", "31d"]);
    assert_eq!(month.chains[0].jobs, 6, "{month:#?}");
    assert_eq!(month.chains[0].duration.max_ms, Some(999_000));

    let text = shown(&daemon.hfctl(&["stats"]));
    let line = text
        .lines()
        .find(|l| l.starts_with("etl "))
        .unwrap_or_else(|| panic!("a row for etl: {text}"));
    assert!(
        line.contains("75.0%") && line.contains("20.0s") && line.contains("30M"),
        "the etl row shows the rate, p50 and peak memory: {line}"
    );
    let refused = daemon.hfctl(&["stats", "--since", "last tuesday"]);
    assert_eq!(
        refused.status.code(),
        Some(8),
        "an unreadable --since is INVALID_PARAMETERS"
    );
    assert!(
        shown(&refused).contains("since"),
        "the refusal names since: {}",
        shown(&refused)
    );
}

const FLAKY: &str = r#"
[process.p.activity.once]
shell = '''
test -e @DIR@/failed-$HF_JOB_ID && exit 0
touch @DIR@/failed-$HF_JOB_ID
exit 1
'''
retries = 1
retry_delay = "0s"
"#;

const BROKEN: &str = r#"
[process.p.activity.always]
command = ["false"]
retries = 0
"#;

/// Real runs: two jobs whose activity fails once then succeeds and one
/// that fails are counted with their retries, durations and resource use;
/// a queued job waiting behind `concurrency` is in flight.
#[test]
fn stats_count_real_runs_and_their_retries() {
    let daemon = TestDaemon::start(&[("flaky.toml", FLAKY), ("broken.toml", BROKEN)]);
    let mut ids = vec![daemon.submit("flaky", &[]), daemon.submit("flaky", &[])];
    ids.push(daemon.submit("broken", &[]));
    for id in &ids {
        daemon.wait_done(*id);
    }
    let all = stats(&daemon, &[]);
    let broken = &all.chains[0];
    let flaky = &all.chains[1];
    assert_eq!(
        (broken.chain.as_str(), flaky.chain.as_str()),
        ("broken", "flaky")
    );
    assert_eq!(
        (flaky.jobs, flaky.succeeded, flaky.failed, flaky.retries),
        (2, 2, 0, 2),
        "{flaky:#?}"
    );
    assert_eq!(flaky.success_rate, Some(1.0));
    assert_eq!(flaky.duration.count, 2);
    assert!(flaky.peak_memory_bytes.is_some_and(|p| p > 0), "{flaky:#?}");
    assert_eq!((broken.jobs, broken.failed), (1, 1));
    assert_eq!(broken.success_rate, Some(0.0));
    let once = all
        .activities
        .iter()
        .find(|a| a.path == "flaky.p.once")
        .unwrap_or_else(|| panic!("{all:#?}"));
    assert_eq!(
        (once.runs, once.attempts, once.retries),
        (2, 4, 2),
        "{once:#?}"
    );
    assert_eq!(once.duration.count, 4);
    assert_eq!(once.queue_wait.count, 2);
}

const SLOW: &str = r#"
[process.p.activity.nap]
command = ["sleep", "300"]
"#;

/// Every view documented in docs/monitoring.md answers on a read-only
/// connection while the daemon runs: a running attempt is in
/// `v_running_activities` with its pid, finished runs in the others.
#[test]
fn sql_views_answer_on_a_read_only_connection() {
    let daemon = TestDaemon::start(&[("flaky.toml", FLAKY), ("slow.toml", SLOW)]);
    let done = daemon.submit("flaky", &[]);
    let job = daemon.wait_done(done);
    assert_eq!(job.state, JobState::Succeeded);
    let running = daemon.submit("slow", &[]);
    daemon.wait_for(running, "nap runs", |j| {
        activity(j, "p.nap").state == ActivityState::Running
    });
    // The pid is committed just after the spawn, with no watch update of
    // its own.
    let (pid, _) = eventually(Duration::from_secs(10), "nap's pid is recorded", || {
        let job = daemon.status(running);
        activity(&job, "p.nap").attempts[0]
            .pid
            .ok_or_else(|| format!("{job:?}"))
    });
    let pid = Some(pid);

    let conn = Connection::open_with_flags(
        daemon.state_dir().join("holdfast.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the database opens read-only");
    let (path, attempt, seen_pid): (String, u32, Option<u32>) = conn
        .query_row(
            "SELECT path, attempt, pid FROM v_running_activities WHERE job_id = ?1",
            [running as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the running attempt is in v_running_activities");
    assert_eq!((path.as_str(), attempt, seen_pid), ("slow.p.nap", 1, pid));

    let (state, attempts, retries, duration): (String, i64, i64, Option<i64>) = conn
        .query_row(
            "SELECT state, attempts, retries, duration_ms FROM v_job_runs WHERE job_id = ?1",
            [done as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("the finished job is in v_job_runs");
    assert_eq!((state.as_str(), attempts, retries), ("succeeded", 2, 1));
    assert!(duration.is_some_and(|d| d >= 0));

    let sources: Vec<(i64, String)> = conn
        .prepare("SELECT attempt, usage_source FROM v_attempts WHERE job_id = ?1 ORDER BY attempt")
        .and_then(|mut s| {
            s.query_map([done as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .expect("v_attempts");
    assert_eq!(sources, vec![(1, "rusage".into()), (2, "rusage".into())]);

    let (attempts, succeeded, retries): (i64, i64, i64) = conn
        .query_row(
            "SELECT attempts, succeeded, retries FROM v_activity_stats WHERE path = 'flaky.p.once'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("v_activity_stats");
    assert_eq!((attempts, succeeded, retries), (2, 1, 1));

    let (jobs, in_flight): (i64, i64) = conn
        .query_row(
            "SELECT jobs, in_flight FROM v_chain_stats WHERE chain = 'slow'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("v_chain_stats");
    assert_eq!((jobs, in_flight), (1, 1));

    let write = conn.execute("DELETE FROM jobs", []);
    assert!(write.is_err(), "a read-only connection cannot write");
    drop(conn);
    daemon.hfctl(&["cancel", &running.to_string()]);
}
