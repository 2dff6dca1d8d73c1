//! The shipped example chains of etc/workflows.d run as their comments say:
//! the chunked load (fan-out), the month-end close (business dates) and the
//! rollback demo's notification rule.

use std::fs;
use std::path::Path;
use std::time::Duration;

use holdfast_api::JobState;
use holdfast_tests::TestDaemon;
use holdfast_tests::poll::eventually;

use crate::notifications::deliveries;
use crate::support::{activity, shown};

fn example(name: &str) -> String {
    fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../etc/workflows.d")
            .join(name),
    )
    .expect("the example chain is readable")
}

/// The log of `path` in job `id`, as `hfctl logs` prints it.
fn log_of(daemon: &TestDaemon, id: u64, path: &str) -> String {
    let out = daemon.hfctl(&["logs", &id.to_string(), path]);
    assert!(out.status.success(), "{}", shown(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `chunked-etl` with 10,500 rows: eleven chunks of at most 1,000, each
/// with its own log, and the report sees their outputs as a list.
#[test]
fn the_chunked_etl_example_fans_out_over_its_chunks() {
    let daemon = TestDaemon::start(&[("chunked-etl.toml", &example("chunked-etl.toml"))]);
    let id = daemon.submit("chunked-etl", &["-p", "rows=10500"]);
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let counts = activity(&job, "load.chunk")
        .items
        .clone()
        .expect("a fan-out has item counts");
    assert_eq!((counts.total, counts.succeeded), (11, 11), "{counts:?}");
    assert!(
        log_of(&daemon, id, "load.chunk[3]").contains("loading records 3000..4000"),
        "chunk 3's own log"
    );
    assert!(
        log_of(&daemon, id, "load.chunk[10]").contains("loading records 10000..10500"),
        "the last chunk is the rest"
    );
    assert!(
        log_of(&daemon, id, "report.total").contains("11 chunks loaded"),
        "the report sees every chunk's output"
    );
}

/// `monthly-close` triggered as of the first of December closes November,
/// and a dry-run backfill over half a year lists one fire per month.
#[test]
fn the_monthly_close_example_closes_the_previous_month() {
    let daemon = TestDaemon::start(&[("monthly-close.toml", &example("monthly-close.toml"))]);
    let info = daemon.hfctl_json(&[
        "schedule",
        "trigger",
        "monthly-close.first",
        "--at",
        "2026-12-01",
    ]);
    let id = info["last_job"].as_u64().expect("the trigger made a job");
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(
        log_of(&daemon, id, "close.books").contains("closing 2026-11 as of 2026-12-01"),
        "the previous month, as of the trigger's instant"
    );
    let backfill = daemon.hfctl_json(&[
        "schedule",
        "backfill",
        "monthly-close.first",
        "--from",
        "2026-01-01",
        "--to",
        "2026-06-30",
        "--dry-run",
    ]);
    let fires = backfill["fires"].as_array().expect("fires is a list");
    assert_eq!(fires.len(), 6, "{backfill:#}");
}

/// `rollback-demo`'s own notification rule delivers the failure's event
/// to its exec hook (`hfctl notifications` lists it delivered).
#[test]
fn the_rollback_example_notifies_its_failure() {
    let daemon = TestDaemon::start(&[("rollback-demo.toml", &example("rollback-demo.toml"))]);
    let dir = daemon.dir().join("demo");
    fs::create_dir_all(&dir).expect("the test directory is writable");
    fs::write(dir.join("remote-down"), "").expect("the test directory is writable");
    let param = format!("dir={}", dir.display());
    let id = daemon.submit("rollback-demo", &["-p", &param]);
    assert_eq!(daemon.wait_done(id).state, JobState::Failed);
    eventually(
        Duration::from_secs(20),
        "the failure's notification is delivered",
        || {
            let listed = deliveries(&daemon, &[]);
            match listed
                .iter()
                .find(|d| d["rule"] == "rollback-demo.failures" && d["job_id"].as_u64() == Some(id))
            {
                Some(d) if d["state"] == "delivered" && d["kind"] == "job.failed" => Ok(()),
                other => Err(format!("{other:?} in {listed:?}")),
            }
        },
    );
}
