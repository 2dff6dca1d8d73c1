//! The rollup against the exact count: the same answer for every window
//! and filter on a history written with plain SQL (the triggers keep the
//! rollup, whoever writes), and the kept values and ranks.

use rusqlite::{Connection, params};

use super::*;
use crate::store::Store;

/// A new store (migrated, so with every trigger) and a plain connection to
/// its file, writing as `sqlite3` would; the directory goes when the first
/// value is dropped.
fn opened() -> (tempfile::TempDir, Store, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let store = Store::open(&path).expect("open");
    let conn = Connection::open(&path).expect("connection");
    (dir, store, conn)
}

/// Job 1 of chain `k`, created at 0, in `state`.
fn job_one(conn: &Connection, state: &str) {
    conn.execute(
        "INSERT INTO jobs (id, target, chain, version, params, state, submitted_by,
                           created_at, run_id)
         VALUES (1, 'k', 'k', 'v', '{}', ?1, 't', 0, 1)",
        [state],
    )
    .expect("job 1");
}

#[test]
fn kept_values_are_three_significant_digits_rounded_down() {
    for (value, kept) in [
        (-5, -5),
        (0, 0),
        (999, 999),
        (1000, 1000),
        (1009, 1000),
        (12_345, 12_300),
        (20_000, 20_000),
        (999_999, 999_000),
        (i64::MAX, 9_220_000_000_000_000_000),
    ] {
        assert_eq!(keep(value), kept, "{value}");
    }
}

/// `keep` and the trigger's SQL agree.
#[test]
fn the_trigger_keeps_values_as_keep_does() {
    let (_dir, _store, conn) = opened();
    let mut value: i64 = 1;
    let mut values = vec![0, -1, 999, 1000, 1001, i64::MAX];
    while let Some(next) = value.checked_mul(7) {
        values.extend([value, value + 1, value * 3 + 11]);
        value = next;
    }
    for v in values {
        conn.execute(
            "INSERT INTO stats_values_delta VALUES (0, 'k', '', '', 9, ?1, 1)",
            params![v],
        )
        .expect("a delta");
        let (kept, largest): (i64, i64) = conn
            .query_row(
                "SELECT value, max_exact FROM stats_values WHERE kind = 9",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the kept value");
        assert_eq!((kept, largest), (keep(v), v), "{v}");
        conn.execute(
            "INSERT INTO stats_values_delta VALUES (0, 'k', '', '', 9, ?1, -1)",
            params![v],
        )
        .expect("its removal");
        let left: i64 = conn
            .query_row("SELECT COUNT(*) FROM stats_values", [], |r| r.get(0))
            .expect("count");
        assert_eq!(left, 0, "a value counted down to 0 leaves no row");
    }
}

/// The same through the triggers that count a job's queue wait as it
/// starts, and take it back when the job is deleted.
#[test]
fn a_counted_queue_wait_is_kept_as_keep_does() {
    let (_dir, _store, conn) = opened();
    let mut value: i64 = 1;
    let mut values = vec![0, 999, 1000, 1001, i64::MAX];
    while let Some(next) = value.checked_mul(7) {
        values.extend([value, value + 1, value.saturating_mul(3).saturating_add(11)]);
        value = next;
    }
    for v in values {
        job_one(&conn, "queued");
        conn.execute(
            "UPDATE jobs SET state = 'running', started_at = ?1 WHERE id = 1",
            params![v],
        )
        .expect("it starts");
        let (kept, largest): (i64, i64) = conn
            .query_row(
                "SELECT value, max_exact FROM stats_values WHERE kind = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the kept value");
        assert_eq!((kept, largest), (keep(v), v), "{v}");
        conn.execute("DELETE FROM jobs WHERE id = 1", [])
            .expect("deleted");
        let left: i64 = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM stats_values) + (SELECT COUNT(*) FROM stats_jobs)",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(left, 0, "a deleted job leaves no rollup row");
    }
}

/// A value moved within its bucket (a job's end corrected from 1509 to
/// 1501 ms after its start) keeps the new value as the bucket's largest:
/// the old one is taken back (the row emptied and dropped) before the new
/// one is added. The other way round the bucket would hold the new value
/// and still claim 1509, which no kept row has. SQLite fires the newest
/// trigger of an event first, so this holds only while every trigger that
/// takes a value back is created after the one that adds its new value.
#[test]
fn a_value_moved_within_its_bucket_keeps_its_own_maximum() {
    let (_dir, _store, conn) = opened();
    job_one(&conn, "queued");
    conn.execute_batch(
        "INSERT INTO activities (job_id, idx, path, state) VALUES (1, 0, 'k.a', 'running');
         UPDATE jobs SET state = 'running', started_at = 0 WHERE id = 1;
         INSERT INTO attempts (job_id, idx, number, state, started_at)
         VALUES (1, 0, 1, 'running', 0);
         UPDATE attempts SET state = 'succeeded', finished_at = 1509,
                             peak_memory_bytes = 1509 WHERE job_id = 1;
         UPDATE jobs SET state = 'succeeded', finished_at = 1509 WHERE id = 1;",
    )
    .expect("a job that ran 1509 ms");
    let kept = |conn: &Connection| -> Vec<(i64, i64, i64, i64)> {
        let mut stmt = conn
            .prepare(
                "SELECT kind, value, n, max_exact FROM stats_values
                 WHERE kind IN (0, 2, 4) ORDER BY kind",
            )
            .expect("values");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let at = |v| vec![(0, 1500, 1, v), (2, 1500, 1, v), (4, 1500, 1, v)];
    assert_eq!(kept(&conn), at(1509));
    conn.execute_batch(
        "UPDATE attempts SET finished_at = 1501, peak_memory_bytes = 1501 WHERE job_id = 1;
         UPDATE jobs SET finished_at = 1501 WHERE id = 1;",
    )
    .expect("corrected to 1501 ms");
    assert_eq!(kept(&conn), at(1501));
}

/// The daemon writes peak memory as an integer, but a hand edit with
/// `sqlite3` can write text: it is counted as the number its removal
/// takes back (`value - 0`), so the write succeeds and taking it back
/// leaves no row.
#[test]
fn a_peak_memory_written_as_text_is_taken_back_as_it_was_counted() {
    let (_dir, _store, conn) = opened();
    job_one(&conn, "running");
    conn.execute_batch(
        "INSERT INTO activities (job_id, idx, path, state) VALUES (1, 0, 'k.a', 'running');
         INSERT INTO attempts (job_id, idx, number, state, started_at, peak_memory_bytes)
         VALUES (1, 0, 1, 'running', 0, 'ab');
         INSERT INTO attempts (job_id, idx, number, state, started_at)
         VALUES (1, 0, 2, 'running', 0);
         UPDATE attempts SET peak_memory_bytes = 'x' WHERE number = 2;",
    )
    .expect("text written by hand");
    let count = |conn: &Connection| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM stats_values WHERE kind = 4",
            [],
            |r| r.get(0),
        )
        .expect("count")
    };
    assert_eq!(count(&conn), 1, "both counted as 0");
    conn.execute_batch(
        "UPDATE attempts SET peak_memory_bytes = NULL WHERE number = 1;
         DELETE FROM attempts WHERE number = 2;",
    )
    .expect("taken back");
    assert_eq!(count(&conn), 0);
}

/// Inside a trigger SQLite builds a constant `IN` list of more than two
/// values as an ephemeral table on every row the trigger fires for (see
/// `triggers.rs`): no trigger of the rollup compares states that way.
#[test]
fn no_rollup_trigger_tests_states_with_an_in_list() {
    let (_dir, _store, conn) = opened();
    let mut stmt = conn
        .prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger'")
        .expect("triggers");
    let triggers: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(triggers.len() >= 14, "{triggers:?}");
    for (name, sql) in triggers {
        let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        let flat = flat.replace("IN(", "IN (");
        assert!(!flat.contains("state IN ("), "{name}: {sql}");
    }
}

#[test]
fn nearest_rank_percentiles() {
    let of = |values: &[i64]| {
        let mut v = Values::default();
        for value in values {
            v.add_exact(*value);
        }
        let p = v.percentiles();
        (p.count, p.p50_ms, p.p95_ms, p.max_ms)
    };
    assert_eq!(of(&[40, 10, 30, 20]), (4, Some(20), Some(40), Some(40)));
    assert_eq!(of(&[5]), (1, Some(5), Some(5), Some(5)));
    let hundred: Vec<i64> = (1..=100).collect();
    assert_eq!(of(&hundred), (100, Some(50), Some(95), Some(100)));
    // Kept to three digits; the maximum stays exact.
    assert_eq!(
        of(&[12_345, 12_399]),
        (2, Some(12_300), Some(12_300), Some(12_399))
    );
    assert_eq!(of(&[]), (0, None, None, None));
}

#[test]
fn the_first_whole_hour_of_a_window() {
    assert_eq!(first_whole_hour(HOUR_MS * 5), 5);
    assert_eq!(first_whole_hour(HOUR_MS * 5 + 1), 6);
    assert_eq!(first_whole_hour(HOUR_MS * 5 - 1), 5);
    // Hour 0 also holds the hour before the epoch.
    assert_eq!(first_whole_hour(0), 1);
    assert_eq!(first_whole_hour(-HOUR_MS * 3 - 7), 1);
}

/// A small deterministic generator (no dependency for a test).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// A history as the engine writes it: jobs of two chains and three
/// tenants over several hours, activities, attempts with retries and
/// resource use, jobs still queued or running; then retention deleting
/// some whole jobs.
fn write_history(conn: &Connection, rng: &mut Lcg, base: i64, first_id: i64, jobs: i64) {
    for id in first_id..first_id + jobs {
        let chain = ["etl", "load"][rng.below(2) as usize];
        let tenant = [None, Some("a"), Some("b")][rng.below(3) as usize];
        let created = base + rng.below(6 * HOUR_MS as u64) as i64;
        conn.execute(
            "INSERT INTO jobs (id, target, chain, version, params, tenant, state, submitted_by,
                               created_at, run_id)
             VALUES (?1, ?2, ?2, 'v', '{}', ?3, 'queued', 't', ?4, ?1)",
            params![id, chain, tenant, created],
        )
        .expect("job");
        for idx in 0..2 {
            conn.execute(
                "INSERT INTO activities (job_id, idx, path, state) VALUES (?1, ?2, ?3, 'pending')",
                params![id, idx, format!("{chain}.p.a{idx}")],
            )
            .expect("activity");
        }
        let fate = rng.below(10);
        if fate == 0 {
            continue; // still queued
        }
        let started = created + rng.below(5000) as i64;
        conn.execute(
            "UPDATE jobs SET state = 'running', started_at = ?2 WHERE id = ?1",
            params![id, started],
        )
        .expect("start");
        let mut at = started;
        let mut failed = false;
        for idx in 0..2 {
            conn.execute(
                "UPDATE activities SET state = 'running' WHERE job_id = ?1 AND idx = ?2",
                params![id, idx],
            )
            .expect("activity runs");
            let tries = 1 + rng.below(3) as i64;
            let mut ok = false;
            for number in 1..=tries {
                conn.execute(
                    "INSERT INTO attempts (job_id, idx, number, state, started_at)
                     VALUES (?1, ?2, ?3, 'running', ?4)",
                    params![id, idx, number, at],
                )
                .expect("attempt");
                if fate == 1 && idx == 1 {
                    break; // still running, as when the daemon was killed
                }
                let digits = 1 + rng.below(6) as u32;
                let took = rng.below(10u64.pow(digits)) as i64;
                at += took;
                ok = rng.below(3) != 0 || number == tries && rng.below(2) == 0;
                let peak = (rng.below(4) != 0).then(|| rng.below(1 << 30) as i64);
                let cpu = (rng.below(4) != 0).then(|| rng.below(1_000_000) as i64);
                conn.execute(
                    "UPDATE attempts SET state = ?4, finished_at = ?5, user_cpu_us = ?6,
                         system_cpu_us = ?6, peak_memory_bytes = ?7, usage_source = 'rusage'
                     WHERE job_id = ?1 AND idx = ?2 AND number = ?3",
                    params![
                        id,
                        idx,
                        number,
                        if ok { "succeeded" } else { "failed" },
                        at,
                        cpu,
                        peak
                    ],
                )
                .expect("attempt ends");
                if ok {
                    break;
                }
            }
            if fate == 1 && idx == 1 {
                break;
            }
            conn.execute(
                "UPDATE activities SET state = ?3 WHERE job_id = ?1 AND idx = ?2",
                params![id, idx, if ok { "succeeded" } else { "failed" }],
            )
            .expect("activity ends");
            if !ok {
                failed = true;
                break;
            }
        }
        if fate == 1 {
            continue;
        }
        let state = match (failed, rng.below(8)) {
            (_, 0) => "cancelled",
            (true, _) => "failed",
            (false, _) => "succeeded",
        };
        conn.execute(
            "UPDATE jobs SET state = ?2, finished_at = ?3 WHERE id = ?1",
            params![id, state, at + 1],
        )
        .expect("job ends");
    }
}

/// Takes counted values back: some ended jobs run again (a new start, a
/// new end, the state changing on the way) and some ended attempts have
/// their figures corrected (a later duration, peak memory and CPU).
fn rework(conn: &Connection, rng: &mut Lcg, last_id: i64) -> (usize, usize) {
    let (mut reruns, mut corrected) = (0, 0);
    for id in 1..=last_id {
        match rng.below(6) {
            0 => {
                let ended: Option<(i64, i64)> = conn
                    .query_row(
                        "SELECT started_at, finished_at FROM jobs
                         WHERE id = ?1 AND state IN ('succeeded', 'failed', 'cancelled')",
                        [id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .ok();
                let Some((_, finished)) = ended else { continue };
                let again = finished + 1 + rng.below(100_000) as i64;
                conn.execute(
                    "UPDATE jobs SET state = 'running', started_at = ?2 WHERE id = ?1",
                    params![id, again],
                )
                .expect("runs again");
                conn.execute(
                    "UPDATE jobs SET state = ?2, finished_at = ?3 WHERE id = ?1",
                    params![
                        id,
                        ["succeeded", "failed"][rng.below(2) as usize],
                        again + rng.below(10_000_000) as i64
                    ],
                )
                .expect("ends again");
                reruns += 1;
            }
            1 => {
                corrected += conn
                    .execute(
                        "UPDATE attempts SET finished_at = finished_at + ?2,
                         peak_memory_bytes = ?3, user_cpu_us = ?4
                     WHERE job_id = ?1 AND number = 1 AND finished_at IS NOT NULL",
                        params![
                            id,
                            rng.below(50_000) as i64,
                            (rng.below(2) == 0).then(|| rng.below(1 << 20) as i64),
                            rng.below(1000) as i64
                        ],
                    )
                    .expect("corrected");
            }
            _ => {}
        }
    }
    (reruns, corrected)
}

/// Deletes whole jobs as retention does: attempts, activities, the job.
fn delete_jobs(conn: &Connection, rng: &mut Lcg, last_id: i64) {
    for id in 1..=last_id {
        if rng.below(5) == 0 {
            for table in ["attempts", "activities"] {
                conn.execute(&format!("DELETE FROM {table} WHERE job_id = ?1"), [id])
                    .expect("delete");
            }
            conn.execute("DELETE FROM jobs WHERE id = ?1", [id])
                .expect("delete");
        }
    }
}

/// The answer with every job counted exactly, as JSON.
fn exact_answer(conn: &Connection, filter: &StatsFilter) -> serde_json::Value {
    let mut sums = Sums::default();
    exact::add(conn, filter, None, &mut sums).expect("exact");
    serde_json::to_value(sums.answer(filter)).expect("json")
}

/// Maxima as their kept values: after retention deleted a value of a
/// rollup row, its largest exact value may be the deleted one.
fn maxima_kept(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "max_ms" || key == "peak_memory_bytes" {
                    if let Some(n) = v.as_i64() {
                        *v = keep(n).into();
                    }
                } else {
                    maxima_kept(v);
                }
            }
        }
        serde_json::Value::Array(list) => list.iter_mut().for_each(maxima_kept),
        _ => {}
    }
}

#[test]
fn the_rollup_answers_as_the_exact_count() {
    let (_dir, store, conn) = opened();
    let mut rng = Lcg(7);
    let base = 1_800_000_000_000 + 1234;
    write_history(&conn, &mut rng, base, 1, 400);
    let filters = |since_ms: i64| {
        let mut all = Vec::new();
        for target in [None, Some("etl"), Some("etl.p"), Some("load.p.a1")] {
            for tenant in [None, Some("a"), Some("")] {
                all.push(StatsFilter {
                    since_ms,
                    target: target.map(str::to_string),
                    tenant: tenant.map(str::to_string),
                });
            }
        }
        all
    };
    let windows = [
        0,
        base - 1,
        base + HOUR_MS,
        base + 2 * HOUR_MS + 777,
        (base / HOUR_MS + 3) * HOUR_MS,
        base + 7 * HOUR_MS,
    ];
    let compare = |kept_maxima: bool| {
        for since in windows {
            for filter in filters(since) {
                let (mut rolled, mut exact) = store
                    .read_now(|c| {
                        let rolled = serde_json::to_value(stats(c, &filter)?).expect("json");
                        Ok((rolled, exact_answer(c, &filter)))
                    })
                    .expect("stats");
                if kept_maxima {
                    maxima_kept(&mut rolled);
                    maxima_kept(&mut exact);
                }
                assert_eq!(rolled, exact, "{filter:?}");
            }
        }
    };
    compare(false);
    let some = store.read_now(|c| stats(c, &filters(0)[0])).expect("stats");
    assert!(
        some.chains.len() == 2 && some.chains.iter().all(|c| c.retries > 0 && c.in_flight > 0),
        "the history has both chains, retries and jobs in flight: {some:#?}"
    );
    // Values taken back: a bucket's largest exact value may be one that
    // left it.
    let (again, corrected) = rework(&conn, &mut rng, 400);
    assert!(
        again > 10 && corrected > 10,
        "{again} jobs ran again, {corrected} attempts corrected"
    );
    compare(true);
    delete_jobs(&conn, &mut rng, 400);
    compare(true);
    // A database made before version 16 is counted by the migration:
    // rebuilt from scratch, the rollup has the same rows.
    let tables = ["stats_jobs", "stats_activities", "stats_values"];
    let dump = |conn: &Connection| -> Vec<String> {
        tables
            .iter()
            .flat_map(|t| {
                let mut stmt = conn
                    .prepare(&format!("SELECT * FROM {t} ORDER BY 1, 2, 3, 4"))
                    .expect("select");
                let n = stmt.column_count();
                stmt.query_map([], |r| {
                    let mut line = t.to_string();
                    for i in 0..n {
                        line.push_str(&format!(" {:?}", r.get_ref(i)?));
                    }
                    Ok(line)
                })
                .expect("rows")
                .collect::<Result<Vec<_>, _>>()
                .expect("rows")
            })
            .collect()
    };
    let kept = dump(&conn);
    for t in tables {
        conn.execute(&format!("DELETE FROM {t}"), [])
            .expect("empty");
    }
    let v16 = super::super::schema::V16_FOR_TESTS;
    let backfill = &v16[v16.find("-- The history already there.").expect("backfill")..];
    conn.execute_batch(backfill).expect("backfill");
    let rebuilt = dump(&conn);
    // Largest exact values may differ where retention deleted one.
    let strip = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .map(|l| {
                if l.starts_with("stats_values") {
                    l.rsplit_once(' ').map(|(a, _)| a.to_string()).unwrap_or(l)
                } else {
                    l
                }
            })
            .collect()
    };
    assert_eq!(strip(kept), strip(rebuilt));
}
