//! The statistics rollup (schema version 16) against the history it sums:
//! after a mixed run (retries, tenants, a failure, a daemon killed with
//! SIGKILL while an attempt ran, and the restart's recovery), its rows
//! equal the same sums recomputed from jobs, activities and attempts, and
//! `stats.get` answers the same from the rollup as from the exact count.

use std::time::Instant;

use holdfast_api::{ActivityState, JobState};
use holdfast_tests::TestDaemon;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::support::activity;

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

const QUICK: &str = r#"
[process.p.activity.a]
command = ["true"]
[process.q]
after = ["p"]
[process.q.activity.b]
command = ["false"]
retries = 0
"#;

const NAP: &str = r#"
[process.p.activity.nap]
command = ["sleep", "2"]
"#;

/// Each rollup table, and the same rows recomputed from the history.
const CHECKS: [(&str, &str); 3] = [
    (
        "SELECT hour, chain, tenant, jobs, succeeded, failed, cancelled, in_flight FROM stats_jobs",
        "SELECT created_at / 3600000, chain, COALESCE(tenant, ''), COUNT(*),
                SUM(state = 'succeeded'), SUM(state = 'failed'), SUM(state = 'cancelled'),
                SUM(state IN ('queued', 'running'))
         FROM jobs GROUP BY 1, 2, 3",
    ),
    (
        "SELECT hour, chain, tenant, path, activities, runs, succeeded, failed, attempts, retries,
                cpu_us
         FROM stats_activities",
        "SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''), act.path, COUNT(*),
                SUM(act.state IN ('succeeded', 'failed', 'cancelled')),
                SUM(act.state = 'succeeded'), SUM(act.state = 'failed'),
                (SELECT COUNT(*) FROM attempts a JOIN jobs k ON k.id = a.job_id
                 JOIN activities x ON x.job_id = a.job_id AND x.idx = a.idx
                 WHERE k.created_at / 3600000 = j.created_at / 3600000 AND k.chain = j.chain
                   AND COALESCE(k.tenant, '') = COALESCE(j.tenant, '') AND x.path = act.path),
                (SELECT COALESCE(SUM(a.number > 1), 0) FROM attempts a JOIN jobs k ON k.id = a.job_id
                 JOIN activities x ON x.job_id = a.job_id AND x.idx = a.idx
                 WHERE k.created_at / 3600000 = j.created_at / 3600000 AND k.chain = j.chain
                   AND COALESCE(k.tenant, '') = COALESCE(j.tenant, '') AND x.path = act.path),
                (SELECT COALESCE(SUM(COALESCE(a.user_cpu_us, 0) + COALESCE(a.system_cpu_us, 0)), 0)
                 FROM attempts a JOIN jobs k ON k.id = a.job_id
                 JOIN activities x ON x.job_id = a.job_id AND x.idx = a.idx
                 WHERE k.created_at / 3600000 = j.created_at / 3600000 AND k.chain = j.chain
                   AND COALESCE(k.tenant, '') = COALESCE(j.tenant, '') AND x.path = act.path)
         FROM activities act JOIN jobs j ON j.id = act.job_id GROUP BY 1, 2, 3, 4",
    ),
    (
        // Values to three significant digits (below 1000 exactly), with
        // the largest exact value of each.
        "SELECT hour, chain, tenant, path, kind, value, n, max_exact FROM stats_values",
        "SELECT hour, chain, tenant, path, kind,
                CASE WHEN value < 1000 THEN value
                     WHEN value < 10000 THEN value / 10 * 10
                     WHEN value < 100000 THEN value / 100 * 100
                     WHEN value < 1000000 THEN value / 1000 * 1000
                     WHEN value < 10000000 THEN value / 10000 * 10000
                     WHEN value < 100000000 THEN value / 100000 * 100000
                     WHEN value < 1000000000 THEN value / 1000000 * 1000000
                     WHEN value < 10000000000 THEN value / 10000000 * 10000000
                     WHEN value < 100000000000 THEN value / 100000000 * 100000000
                     WHEN value < 1000000000000 THEN value / 1000000000 * 1000000000
                     WHEN value < 10000000000000 THEN value / 10000000000 * 10000000000
                     WHEN value < 100000000000000 THEN value / 100000000000 * 100000000000
                     WHEN value < 1000000000000000 THEN value / 1000000000000 * 1000000000000
                     END AS kept,
                COUNT(*), MAX(value)
         FROM (SELECT created_at / 3600000 AS hour, chain, COALESCE(tenant, '') AS tenant,
                      '' AS path, 0 AS kind, finished_at - started_at AS value
               FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled')
               UNION ALL
               SELECT created_at / 3600000, chain, COALESCE(tenant, ''), '', 1,
                      started_at - created_at FROM jobs
               UNION ALL
               SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''), act.path, 2,
                      a.finished_at - a.started_at
               FROM attempts a JOIN jobs j ON j.id = a.job_id
               JOIN activities act ON act.job_id = a.job_id AND act.idx = a.idx
               UNION ALL
               SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''), act.path, 3,
                      a.started_at - j.created_at
               FROM attempts a JOIN jobs j ON j.id = a.job_id
               JOIN activities act ON act.job_id = a.job_id AND act.idx = a.idx
               WHERE a.number = 1
               UNION ALL
               SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''), act.path, 4,
                      a.peak_memory_bytes
               FROM attempts a JOIN jobs j ON j.id = a.job_id
               JOIN activities act ON act.job_id = a.job_id AND act.idx = a.idx)
         WHERE value IS NOT NULL
         GROUP BY 1, 2, 3, 4, 5, 6",
    ),
];

fn rows(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = stmt.column_count();
    let mut all: Vec<String> = stmt
        .query_map([], |r| {
            (0..n)
                .map(|i| Ok(format!("{:?}", r.get_ref(i)?)))
                .collect::<Result<Vec<_>, rusqlite::Error>>()
                .map(|cols| cols.join(" "))
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    all.sort();
    all
}

/// `hfctl --json stats ARGS` without its `since`.
fn stats(daemon: &TestDaemon, args: &[&str]) -> Value {
    let mut full = vec!["stats"];
    full.extend_from_slice(args);
    let mut value = daemon.hfctl_json(&full);
    value
        .as_object_mut()
        .expect("Stats is an object")
        .remove("since");
    value
}

#[test]
fn the_rollup_equals_the_history_after_a_killed_daemon_and_its_recovery() {
    let began = Instant::now();
    let mut daemon = TestDaemon::prepare(
        None,
        &[
            ("flaky.toml", FLAKY),
            ("quick.toml", QUICK),
            ("nap.toml", NAP),
        ],
    );
    daemon.write_tenant("acme", "description = \"Acme\"\n");
    daemon.write_tenant("globex", "description = \"Globex\"\n");
    daemon.launch();

    let mut ids = vec![
        daemon.submit("flaky", &["--tenant", "acme"]),
        daemon.submit("flaky", &[]),
        daemon.submit("quick", &["--tenant", "globex"]),
        daemon.submit("quick", &["--tenant", "acme"]),
        daemon.submit("quick", &[]),
    ];
    for id in &ids {
        daemon.wait_done(*id);
    }
    // Killed while an attempt runs: its end, the activity's and the job's
    // are written by the next daemon's recovery and run.
    let nap = daemon.submit("nap", &["--tenant", "acme"]);
    daemon.wait_for(nap, "nap runs", |j| {
        activity(j, "p.nap").state == ActivityState::Running
    });
    daemon.kill9();
    daemon.launch();
    let napped = daemon.wait_done(nap);
    assert_eq!(napped.state, JobState::Succeeded, "{napped:?}");
    ids.push(nap);
    ids.push(daemon.submit("quick", &["--tenant", "globex"]));
    daemon.wait_done(*ids.last().expect("a job"));

    let conn = Connection::open_with_flags(
        daemon.state_dir().join("holdfast.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the database opens read-only");
    for (rollup, history) in CHECKS {
        let (kept, recomputed) = (rows(&conn, rollup), rows(&conn, history));
        assert!(!kept.is_empty(), "{rollup}: no rows");
        assert_eq!(kept, recomputed, "{rollup}");
    }
    let nap_attempts: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM attempts WHERE job_id = ?1",
            [nap as i64],
            |r| r.get(0),
        )
        .expect("nap's attempts");
    drop(conn);

    // From the rollup (every job is in a whole hour of the 7-day window)
    // and counted exactly (a window starting just before the first job,
    // within its hour), the answers are the same.
    let back = format!("{}ms", began.elapsed().as_millis() + 1000);
    for args in [
        vec![],
        vec!["quick"],
        vec!["quick.q"],
        vec!["--tenant", "acme"],
        vec!["flaky.p.once", "--tenant", "acme"],
    ] {
        let rolled = stats(&daemon, &args);
        let mut exact_args = args.clone();
        exact_args.extend(["--since", back.as_str()]);
        assert_eq!(rolled, stats(&daemon, &exact_args), "stats {args:?}");
    }
    let all = stats(&daemon, &[]);
    let chain = |name: &str| {
        all["chains"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["chain"] == name))
            .unwrap_or_else(|| panic!("{name}: {all:#}"))
            .clone()
    };
    assert_eq!(
        (
            chain("flaky")["jobs"].as_u64(),
            chain("flaky")["retries"].as_u64()
        ),
        (Some(2), Some(2)),
        "{all:#}"
    );
    assert_eq!(
        (
            chain("quick")["jobs"].as_u64(),
            chain("quick")["failed"].as_u64()
        ),
        (Some(4), Some(4)),
        "{all:#}"
    );
    assert_eq!(
        chain("nap")["retries"].as_u64(),
        Some(nap_attempts as u64 - 1),
        "the interrupted attempt and the one after it: {all:#}"
    );
    let acme = stats(&daemon, &["--tenant", "acme"]);
    let jobs: u64 = acme["chains"]
        .as_array()
        .expect("chains")
        .iter()
        .filter_map(|c| c["jobs"].as_u64())
        .sum();
    assert_eq!(jobs, 3, "acme's flaky, quick and nap: {acme:#}");
}
