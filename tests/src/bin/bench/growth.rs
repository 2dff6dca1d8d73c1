//! The growth scenario (issue 19): how `hfctl status`, `hfctl list`, the
//! start to READY=1 and the daemon's memory follow the history (10^3 to
//! 10^6 finished jobs) and the queue (jobs waiting behind a
//! `concurrency = 1` chain), and what an idle daemon holds.
//!
//! A history of N jobs is made fast but faithfully: a base of jobs is
//! submitted through the real daemon (16 clients) and run to the end; then,
//! for each size, a state directory a fresh daemon made (schema, keys,
//! definitions) gets N/base copies of the base's rows while the daemon is
//! stopped. Each copy has new job, event and audit ids and its times moved
//! back, so ids and times grow together and the whole history fits in the
//! last 25 days (inside the default 30-day retention). The rows go through
//! SQL `INSERT ... SELECT` into the daemon's own tables, so every index is
//! kept and the statistics rollup's triggers count them as they count the
//! daemon's own writes. Events are copied only where the daemon's retention
//! keeps them (the newest 200,000, within 7 days); audit rows (a year) all.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use holdfast_api::rpc::HoldfastClient;
use rusqlite::{Connection, params};

use super::{Daemon, median, percentile, secs, wait_terminal};

/// The span the copied history covers, back from the base's own time.
const HISTORY_SPAN_MS: i64 = 25 * 86_400_000;
/// The daemon keeps at most this many events, and those of 7 days
/// (`retention::EVENTS_KEPT`, `EVENTS_RETENTION`).
const EVENTS_KEPT: i64 = 200_000;
const EVENTS_RETENTION_MS: i64 = 7 * 86_400_000;
/// Jobs queued behind the running one at each history size (as the
/// startup scenario has).
const QUEUED_AT_START: usize = 1000;

/// The sizes of one run.
pub struct Sizes {
    /// Jobs submitted through the daemon and run, copied to make the rest.
    pub base: u64,
    /// History sizes (multiples of `base`).
    pub history: Vec<u64>,
    /// Queue sizes behind a `concurrency = 1` chain; the first is the
    /// empty queue the others are compared with.
    pub queues: Vec<u64>,
    /// Calls of each kind per measurement.
    pub calls: usize,
}

impl Sizes {
    /// Issue 19's sizes; `HOLDFAST_BENCH_GROWTH=1000,10000` picks history
    /// sizes for a quicker run, `HOLDFAST_BENCH_QUEUES=0,100000` queue
    /// sizes (the first is the baseline).
    pub fn full() -> Sizes {
        let history = std::env::var("HOLDFAST_BENCH_GROWTH")
            .ok()
            .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1_000, 10_000, 100_000, 1_000_000]);
        Sizes {
            base: 1000,
            history,
            queues: std::env::var("HOLDFAST_BENCH_QUEUES")
                .ok()
                .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
                .unwrap_or_else(|| vec![0, 1_000, 10_000]),
            calls: 51,
        }
    }

    /// A few seconds of the same code paths, for the smoke run.
    pub fn smoke() -> Sizes {
        Sizes {
            base: 20,
            history: vec![20, 200],
            queues: vec![0, 50],
            calls: 3,
        }
    }
}

fn chains() -> [(&'static str, String); 2] {
    [
        (
            "one.toml",
            "[process.p.activity.a]\ncommand = [\"true\"]\n".to_string(),
        ),
        (
            "hold.toml",
            "[chain]\nconcurrency = 1\n[process.p.activity.a]\ncommand = [\"sleep\", \"3600\"]\n"
                .to_string(),
        ),
    ]
}

fn daemon() -> Result<Daemon> {
    Daemon::new("max_parallel = 2\n", &chains())
}

/// Resident memory of `pid` now (VmRSS) and at its peak (VmHWM), in MiB.
fn rss_mib(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} in /proc/{pid}/status"))?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn pid(daemon: &Daemon) -> Result<u32> {
    Ok(daemon.child.as_ref().context("daemon runs")?.id())
}

/// Submit `count` jobs of `target` from 16 clients; returns the largest id.
async fn submit_many(daemon: &Daemon, target: &str, count: u64) -> Result<u64> {
    let clients = 16u64.min(count.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let client = daemon.client().await?;
        let share = count / clients + u64::from(i < count % clients);
        let target = target.to_string();
        tasks.spawn(async move {
            let mut last = 0;
            for _ in 0..share {
                last = client
                    .job_submit(target.clone(), None, None, None, None, None, None, None)
                    .await?
                    .job_id;
            }
            anyhow::Ok(last)
        });
    }
    let mut last = 0;
    while let Some(r) = tasks.join_next().await {
        last = last.max(r??);
    }
    Ok(last)
}

/// Wait until no job of chain `one` is queued or running.
async fn drain(daemon: &Daemon, last: u64) -> Result<()> {
    let client = daemon.client().await?;
    wait_terminal(&client, last).await?;
    loop {
        let mut open = None;
        for state in ["running", "queued"] {
            let list = client
                .job_list(
                    Some(state.into()),
                    Some("one".into()),
                    Some(1),
                    None,
                    None,
                    None,
                )
                .await?;
            open = open.or(list.jobs.first().map(|j| j.id));
        }
        match open {
            Some(id) => wait_terminal(&client, id).await?,
            None => return Ok(()),
        }
    }
}

/// What the base's rows are: the largest job, event and audit ids and the
/// first and last instants of their times.
struct Base {
    jobs: i64,
    events: i64,
    audit: i64,
    first_ms: i64,
    last_ms: i64,
}

fn read_base(db: &Path) -> Result<Base> {
    let conn = Connection::open(db)?;
    let one = |sql: &str| -> Result<i64> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    Ok(Base {
        jobs: one("SELECT COALESCE(MAX(id), 0) FROM jobs")?,
        events: one("SELECT COALESCE(MAX(id), 0) FROM events")?,
        audit: one("SELECT COALESCE(MAX(id), 0) FROM audit")?,
        first_ms: one("SELECT MIN(created_at) FROM jobs")?,
        last_ms: one("SELECT MAX(t) FROM (SELECT MAX(finished_at) AS t FROM jobs
             UNION ALL SELECT MAX(at) FROM events UNION ALL SELECT MAX(at) FROM audit)")?,
    })
}

/// `SELECT` list copying every column of `table`, with `changed` columns
/// given by expressions.
fn select_list(conn: &Connection, table: &str, changed: &[(&str, &str)]) -> Result<String> {
    let mut stmt = conn.prepare(&format!("PRAGMA main.table_info({table})"))?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    if columns.is_empty() {
        bail!("no table {table}");
    }
    let exprs: Vec<String> = columns
        .iter()
        .map(|c| {
            changed
                .iter()
                .find(|(name, _)| name == c)
                .map_or_else(|| c.clone(), |(_, e)| e.to_string())
        })
        .collect();
    Ok(format!(
        "INSERT INTO main.{table} ({}) SELECT {} FROM base.{table}",
        columns.join(", "),
        exprs.join(", ")
    ))
}

/// Fill the database `db` (made by a daemon, which is stopped) with
/// `copies` copies of the base database's history. Copy `c` has ids moved
/// up by `c` times the base's and times moved back by `copies - 1 - c`
/// spans, so the last copy has the base's own ids and times shifted up.
fn grow(db: &Path, base_db: &Path, base: &Base, copies: i64) -> Result<()> {
    let mut conn = Connection::open(db)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.execute(
        "ATTACH DATABASE ?1 AS base",
        params![base_db.to_string_lossy()],
    )?;
    let one = |conn: &Connection, sql: &str| -> Result<i64> {
        Ok(conn.query_row(sql, [], |r| r.get(0))?)
    };
    let (j0, e0, a0) = (
        one(&conn, "SELECT last_id FROM job_id_high_water")?,
        one(&conn, "SELECT COALESCE(MAX(id), 0) FROM events")?,
        one(&conn, "SELECT COALESCE(MAX(id), 0) FROM audit")?,
    );
    let span = (HISTORY_SPAN_MS / copies).max(base.last_ms - base.first_ms + 1000);
    // Copies whose events the daemon's retention keeps.
    let with_events = (EVENTS_KEPT / base.events.max(1)).max(1);
    let jobs = select_list(
        &conn,
        "jobs",
        &[
            ("id", "id + :jobs"),
            ("run_id", "run_id + :jobs"),
            ("retry_of", "retry_of + :jobs"),
            ("created_at", "created_at + :dt"),
            ("started_at", "started_at + :dt"),
            ("finished_at", "finished_at + :dt"),
            ("scheduled_at", "scheduled_at + :dt"),
        ],
    )?;
    let activities = select_list(&conn, "activities", &[("job_id", "job_id + :jobs")])?;
    let attempts = select_list(
        &conn,
        "attempts",
        &[
            ("job_id", "job_id + :jobs"),
            ("started_at", "started_at + :dt"),
            ("finished_at", "finished_at + :dt"),
        ],
    )?;
    let items = select_list(
        &conn,
        "items",
        &[
            ("job_id", "job_id + :jobs"),
            ("started_at", "started_at + :dt"),
            ("finished_at", "finished_at + :dt"),
        ],
    )?;
    let secrets = select_list(&conn, "job_secrets", &[("job_id", "job_id + :jobs")])?;
    let audit = select_list(
        &conn,
        "audit",
        &[
            ("id", "id + :audit"),
            ("at", "at + :dt"),
            (
                "detail",
                "CASE WHEN method = 'job.submit' AND detail LIKE 'job %'
                 THEN 'job ' || (CAST(substr(detail, 5) AS INTEGER) + :jobs) ELSE detail END",
            ),
        ],
    )?;
    let events = select_list(
        &conn,
        "events",
        &[
            ("id", "id + :events"),
            ("at", "at + :dt"),
            ("job_id", "job_id + :jobs"),
            (
                "payload",
                "json_set(payload, '$.id', id + :events,
                    '$.at', strftime('%Y-%m-%dT%H:%M:%fZ', (at + :dt) / 1000.0, 'unixepoch'),
                    '$.job_id', job_id + :jobs,
                    '$.links[0]', 'hfctl status ' || (job_id + :jobs))",
            ),
        ],
    )? + " WHERE at + :dt >= :events_from";
    let now = base.last_ms;
    for c in 0..copies {
        let tx = conn.transaction()?;
        let dt = -(copies - 1 - c) * span;
        let named = |sql: &str| -> Vec<(&str, i64)> {
            [
                (":jobs", j0 + c * base.jobs),
                (":dt", dt),
                (":audit", a0 + c * base.audit),
                (":events", e0 + c * base.events),
                (":events_from", now - EVENTS_RETENTION_MS),
            ]
            .into_iter()
            .filter(|(name, _)| sql.contains(name))
            .collect()
        };
        for sql in [&jobs, &activities, &attempts, &items, &secrets, &audit] {
            let args = named(sql);
            let args: Vec<(&str, &dyn rusqlite::ToSql)> = args
                .iter()
                .map(|(n, v)| (*n, v as &dyn rusqlite::ToSql))
                .collect();
            tx.execute(sql, args.as_slice())
                .with_context(|| format!("copy {c}: {sql}"))?;
        }
        if c >= copies - with_events {
            let args = named(&events);
            let args: Vec<(&str, &dyn rusqlite::ToSql)> = args
                .iter()
                .map(|(n, v)| (*n, v as &dyn rusqlite::ToSql))
                .collect();
            tx.execute(&events, args.as_slice())
                .with_context(|| format!("copy {c}: events"))?;
        }
        tx.commit()?;
    }
    conn.execute_batch(
        "INSERT OR IGNORE INTO main.definitions SELECT * FROM base.definitions;
         UPDATE job_id_high_water SET last_id = (SELECT MAX(id) FROM jobs);
         UPDATE notify_cursor SET last_event = (SELECT MAX(id) FROM events);",
    )?;
    conn.execute("DETACH DATABASE base", [])?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// Check the copy: the rollup counts every job, and no index is broken.
fn check(db: &Path, expected: u64) -> Result<()> {
    let conn = Connection::open(db)?;
    let jobs: i64 = conn.query_row("SELECT COUNT(*) FROM jobs WHERE chain = 'one'", [], |r| {
        r.get(0)
    })?;
    let rolled: i64 = conn.query_row(
        "SELECT COALESCE(SUM(jobs), 0) FROM stats_jobs WHERE chain = 'one'",
        [],
        |r| r.get(0),
    )?;
    let attempts: i64 = conn.query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0))?;
    let rolled_attempts: i64 = conn.query_row(
        "SELECT COALESCE(SUM(attempts), 0) FROM stats_activities",
        [],
        |r| r.get(0),
    )?;
    if jobs as u64 != expected || rolled != jobs || rolled_attempts != attempts {
        bail!(
            "grown history is inconsistent: {jobs} jobs (expected {expected}), rollup {rolled}; \
             {attempts} attempts, rollup {rolled_attempts}"
        );
    }
    let quick: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if quick != "ok" {
        bail!("quick_check: {quick}");
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    secs(d) * 1000.0
}

/// Time `hfctl ARGS`, in ms.
fn timed(daemon: &Daemon, args: &[&str]) -> Result<f64> {
    let started = Instant::now();
    daemon.hfctl(args)?;
    Ok(ms(started.elapsed()))
}

/// Make a state directory with a history of `n` jobs at `out` (with
/// `workflows.d/` and `holdfast.toml`), for profiling a start or a query by
/// hand: `holdfast-bench growth-db DIR N`.
pub async fn make_db(out: &Path, n: u64) -> Result<()> {
    let mut base = daemon()?;
    let last = submit_many(&base, "one", 1000).await?;
    drain(&base, last).await?;
    base.stop()?;
    let base_db = base.dir.path().join("state/holdfast.db");
    let base_rows = read_base(&base_db)?;
    let mut d = daemon()?;
    d.stop()?;
    let db = d.dir.path().join("state/holdfast.db");
    grow(&db, &base_db, &base_rows, (n / 1000).max(1) as i64)?;
    check(&db, n.max(1000))?;
    std::fs::create_dir_all(out)?;
    for what in ["state", "workflows.d", "holdfast.toml"] {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(d.dir.path().join(what))
            .arg(out)
            .status()?;
        if !status.success() {
            bail!("cannot copy {what} to {}", out.display());
        }
    }
    println!(
        "growth-db: {} holds a history of {} jobs",
        out.display(),
        n.max(1000)
    );
    Ok(())
}

/// The history part: one row per size.
pub async fn history(sizes: &Sizes) -> Result<()> {
    // The base: real submissions, run to the end, then a graceful stop
    // (the WAL checkpointed into holdfast.db).
    let mut base = daemon()?;
    let started = Instant::now();
    let last = submit_many(&base, "one", sizes.base).await?;
    drain(&base, last).await?;
    base.stop()?;
    println!(
        "growth: base of {} jobs submitted by 16 clients and run in {:.1} s",
        sizes.base,
        secs(started.elapsed())
    );
    let base_db = base.dir.path().join("state/holdfast.db");
    let base_rows = read_base(&base_db)?;

    println!(
        "growth: | jobs | fill | db MiB | first start ms | restarts ms (median) | status ms (p90) | list ms | info ms | RSS MiB (peak) |"
    );
    for &n in &sizes.history {
        let mut d = daemon()?;
        d.stop()?;
        let db = d.dir.path().join("state/holdfast.db");
        let started = Instant::now();
        grow(&db, &base_db, &base_rows, (n / sizes.base).max(1) as i64)?;
        check(&db, n)?;
        let fill = secs(started.elapsed());
        let db_mib = std::fs::metadata(&db)?.len() as f64 / 1048576.0;
        let first = ms(d.start()?);
        // 1,000 jobs queued behind a running one, as a busy daemon has.
        submit_many(&d, "hold", QUEUED_AT_START as u64 + 1).await?;
        let (mut status, mut list, mut info) = (Vec::new(), Vec::new(), Vec::new());
        let (middle, newest) = ((n / 2).max(1).to_string(), n.to_string());
        for i in 0..sizes.calls {
            let job = if i % 2 == 0 { &middle } else { &newest };
            status.push(timed(&d, &["status", job])?);
            list.push(timed(&d, &["list", "--limit", "20"])?);
            info.push(timed(&d, &["info"])?);
        }
        let (rss, peak) = rss_mib(pid(&d)?)?;
        let mut restarts = Vec::new();
        for _ in 0..5 {
            d.stop()?;
            restarts.push(ms(d.start()?));
        }
        d.stop()?;
        println!(
            "growth: | {n} | {fill:.1} s | {db_mib:.0} | {first:.0} | {:.0} {restarts:.0?} | {:.2} ({:.2}) | {:.2} | {:.2} | {rss:.1} ({peak:.1}) |",
            median(restarts.clone()),
            median(status.clone()),
            percentile(&mut status, 0.9),
            median(list),
            median(info),
        );
    }
    Ok(())
}

/// An idle daemon's memory: no jobs, its two chains loaded, right after
/// READY=1 and after answering 20 `hfctl info`.
pub fn idle() -> Result<()> {
    let d = daemon()?;
    let pid = pid(&d)?;
    let (ready, _) = rss_mib(pid)?;
    for _ in 0..20 {
        d.hfctl(&["info"])?;
    }
    let (served, peak) = rss_mib(pid)?;
    println!(
        "growth: idle daemon RSS: {ready:.1} MiB at READY=1, {served:.1} MiB after 20 calls (peak {peak:.1})"
    );
    Ok(())
}

/// The queue part: one daemon per queue size, each with a `sleep 3600`
/// job running and the queue behind it; then rounds that go from daemon to
/// daemon: RPC submissions (each answered after its fsync), then `hfctl
/// status` and `job.get` of the job just submitted (at the end of the
/// queue, where a position would cost the most).
pub async fn queue(sizes: &Sizes) -> Result<()> {
    let mut daemons = Vec::new();
    for &q in &sizes.queues {
        let d = daemon()?;
        let started = Instant::now();
        submit_many(&d, "hold", q + 1).await?;
        let fill = secs(started.elapsed());
        let (rss, _) = rss_mib(pid(&d)?)?;
        daemons.push((q, d, fill, rss, Vec::new(), Vec::new(), Vec::new()));
    }
    let per_round = sizes.calls.div_ceil(5).max(1);
    for _ in 0..5 {
        for (_, d, _, _, submit, status, get) in daemons.iter_mut() {
            let client = d.client().await?;
            for _ in 0..per_round {
                let started = Instant::now();
                let job = client
                    .job_submit("hold".into(), None, None, None, None, None, None, None)
                    .await?
                    .job_id;
                submit.push(ms(started.elapsed()));
                status.push(timed(d, &["status", &job.to_string()])?);
                let started = Instant::now();
                client.job_get(job).await?;
                get.push(ms(started.elapsed()));
            }
        }
    }
    println!(
        "growth: | queued | fill | RSS after fill MiB | RSS after MiB (peak) | submit ms | vs empty | hfctl status ms | vs empty | job.get ms | vs empty |"
    );
    let mut empty = None;
    for (q, d, fill, rss_fill, submit, status, get) in daemons {
        let (rss, peak) = rss_mib(pid(&d)?)?;
        let (s, st, g) = (median(submit), median(status), median(get));
        let (s0, st0, g0) = *empty.get_or_insert((s, st, g));
        println!(
            "growth: | {q} | {fill:.1} s | {rss_fill:.1} | {rss:.1} ({peak:.1}) | {s:.2} | {:.2}x | {st:.2} | {:.2}x | {g:.2} | {:.2}x |",
            s / s0,
            st / st0,
            g / g0
        );
    }
    Ok(())
}
