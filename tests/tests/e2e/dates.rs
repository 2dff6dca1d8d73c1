//! Business dates: every job runs as of an instant (`schedule.at`,
//! `HF_SCHEDULED_AT`, `scheduled_at` in `job.get`): a schedule's fire, each
//! catch-up fire its own, `--at` on a submission or a trigger, one per fire
//! of a backfill (see `backfill.rs`). Schedule parameters computed from it
//! with date filters.

use std::time::Duration;

use holdfast_api::JobState;
use holdfast_tests::http::rpc_call;
use holdfast_tests::{TestDaemon, eventually};
use serde_json::{Value, json};

use crate::support::shown;

/// Seconds since the epoch of an RFC 3339 time with an offset
/// (`2026-03-01T04:00:00+01:00`, `...Z`).
fn epoch_seconds(text: &str) -> i64 {
    fn bad<T>(text: &str) -> T {
        panic!("{text:?} is not an RFC 3339 time")
    }
    let (date, rest) = text.split_once('T').unwrap_or_else(|| bad(text));
    let (time, offset) = if let Some(time) = rest.strip_suffix('Z') {
        (time, 0)
    } else {
        let at = rest.rfind(['+', '-']).unwrap_or_else(|| bad(text));
        let sign = if rest.as_bytes()[at] == b'-' { -1 } else { 1 };
        let (hours, minutes) = rest[at + 1..].split_once(':').unwrap_or_else(|| bad(text));
        let minutes = hours.parse::<i64>().unwrap_or_else(|_| bad(text)) * 60
            + minutes.parse::<i64>().unwrap_or_else(|_| bad(text));
        (&rest[..at], sign * minutes * 60)
    };
    let number = |p: &str| p.parse::<i64>().unwrap_or_else(|_| bad(text));
    let d: Vec<i64> = date.split('-').map(number).collect();
    let t: Vec<i64> = time.split(':').map(number).collect();
    let (year, month, day) = (d[0], d[1], d[2]);
    // Days from civil (proleptic Gregorian).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2] - offset
}

/// `job.get` of `id` as JSON.
pub(super) fn job(daemon: &TestDaemon, id: u64) -> Value {
    let answer = rpc_call(daemon.socket(), "job.get", json!({ "job_id": id }));
    answer["result"].clone()
}

pub(super) fn scheduled_at(daemon: &TestDaemon, id: u64) -> String {
    let job = job(daemon, id);
    job["scheduled_at"]
        .as_str()
        .unwrap_or_else(|| panic!("job {id} has a scheduled_at: {job:#}"))
        .to_string()
}

/// Ids of the jobs submitted by schedule `chain.name`, oldest first.
pub(super) fn fired_ids(daemon: &TestDaemon, schedule: &str) -> Vec<u64> {
    let chain = schedule.split('.').next().unwrap_or_default();
    let answer = rpc_call(
        daemon.socket(),
        "job.list",
        json!({"chain": chain, "limit": 1000}),
    );
    let by = format!("schedule:{schedule}");
    let mut ids: Vec<u64> = answer["result"]["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("job.list answers a list: {answer}"))
        .iter()
        .filter(|j| j["submitted_by"] == by.as_str())
        .filter_map(|j| j["id"].as_u64())
        .collect();
    ids.sort_unstable();
    ids
}

const MONTHLY: &str = r#"
[params.period]
type = "string"
required = true

[params.first_day]
type = "date"
required = true

[params.last_day]
type = "date"
required = true

[schedule.close]
cron = "0 4 1 * *"
timezone = "Europe/Berlin"
params = { period = "{{ schedule.at | add(months=-1) | format('%Y-%m') }}", first_day = "{{ schedule.at | add(months=-1) | start_of('month') | format('%Y-%m-%d') }}", last_day = "{{ schedule.at | start_of('month') | add(days=-1) | format('%Y-%m-%d') }}" }

[process.p.activity.a]
command = ["echo", "period={{ params.period }}", "at={{ schedule.at }}", "zone={{ schedule.timezone }}"]
env = { SEEN = "{{ schedule.at | format('%d.%m.%Y') }}" }

[process.p.activity.b]
shell = 'echo "env=$HF_SCHEDULED_AT seen=$SEEN"'
env = { SEEN = "{{ schedule.at | end_of('month') | format('%F %T') }}" }
"#;

/// A monthly close computes "the previous month" from its fire instant in
/// the schedule's zone: the parameters hold it, the activities see
/// `schedule.at` in templates and `HF_SCHEDULED_AT` in their environment,
/// months clamp to the month's end, and a trigger `--at` an impossible
/// date is refused as a field error, creating no job. Without the dates
/// the parameters would hold the raw template text (or the trigger
/// would fail).
#[test]
fn a_monthly_schedule_computes_the_previous_month() {
    let daemon = TestDaemon::start(&[("close.toml", MONTHLY)]);

    let info = daemon.hfctl_json(&[
        "schedule",
        "trigger",
        "close.close",
        "--at",
        "2026-03-01T04:00",
    ]);
    let id = info["last_job"].as_u64().expect("the trigger made a job");
    let done = daemon.wait_done(id);
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    let got = job(&daemon, id);
    assert_eq!(got["scheduled_at"], "2026-03-01T04:00:00+01:00", "{got:#}");
    assert_eq!(got["params"]["period"], "2026-02", "{got:#}");
    assert_eq!(got["params"]["first_day"], "2026-02-01", "{got:#}");
    assert_eq!(got["params"]["last_day"], "2026-02-28", "{got:#}");
    let log = daemon.logs(id, "p.a", None);
    assert_eq!(
        log.trim(),
        "period=2026-02 at=2026-03-01T04:00:00+01:00 zone=Europe/Berlin",
        "{log}"
    );
    let log = daemon.logs(id, "p.b", None);
    assert_eq!(
        log.trim(),
        "env=2026-03-01T04:00:00+01:00 seen=2026-03-31 23:59:59",
        "{log}"
    );
    // `hfctl status` shows the instant the job runs as of.
    let status = daemon.hfctl(&["status", &id.to_string()]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("2026-03-01T04:00:00+01:00"),
        "{}",
        shown(&status)
    );

    // A month end: March 31 minus one month is February 29 in a leap year.
    let info = daemon.hfctl_json(&["schedule", "trigger", "close.close", "--at", "2024-03-31"]);
    let id = info["last_job"].as_u64().expect("a job");
    let got = job(&daemon, id);
    assert_eq!(got["scheduled_at"], "2024-03-31T00:00:00+01:00", "{got:#}");
    assert_eq!(got["params"]["period"], "2024-02", "{got:#}");
    assert_eq!(got["params"]["last_day"], "2024-02-29", "{got:#}");

    // Without --at, the trigger runs as of now: a job with an instant.
    let info = daemon.hfctl_json(&["schedule", "trigger", "close.close"]);
    let id = info["last_job"].as_u64().expect("a job");
    assert!(
        job(&daemon, id)["params"]["period"]
            .as_str()
            .is_some_and(|p| p.len() == 7 && !p.contains('{'))
    );

    // An impossible date is a field error, and no job is made.
    let before = fired_ids(&daemon, "close.close");
    let refused = daemon.hfctl(&["schedule", "trigger", "close.close", "--at", "2026-02-30"]);
    assert_eq!(refused.status.code(), Some(8), "{}", shown(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("at"),
        "{}",
        shown(&refused)
    );
    assert_eq!(fired_ids(&daemon, "close.close"), before);
}

/// A parameter whose template cannot be computed for a fire is a refused
/// fire: the trigger fails with the reason, no job is made, and the
/// refusal is kept on the schedule (`last_error`) and raised as
/// `schedule.refused`, never a silent success.
#[test]
fn a_date_that_cannot_be_computed_refuses_the_fire() {
    let chain = r#"
[params.day]
type = "string"

[schedule.bad]
cron = "0 4 * * *"
params = { day = "{{ schedule.at | format('%d') | date('%Y-%m-%d') }}" }

[process.p.activity.a]
command = ["true"]
"#;
    let daemon = TestDaemon::start(&[("bad.toml", chain)]);
    let refused = daemon.hfctl(&["schedule", "trigger", "bad.bad", "--at", "2026-01-05"]);
    assert_eq!(refused.status.code(), Some(8), "{}", shown(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not match"),
        "{}",
        shown(&refused)
    );
    assert!(fired_ids(&daemon, "bad.bad").is_empty());
    let schedules = daemon.hfctl_json(&["schedules"]);
    let info = schedules
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == "bad"))
        .cloned()
        .unwrap_or_default();
    assert!(
        info["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("day")),
        "{info:#}"
    );
    let audit = daemon.hfctl_json(&["audit", "--limit", "100"]);
    assert!(
        audit.as_array().is_some_and(|rows| rows.iter().any(|r| {
            r["user"] == "schedule:bad.bad"
                && r["outcome"] == "refused"
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("2026-01-05"))
        })),
        "the refused fire is audited with its instant: {audit:#}"
    );

    // A template reading anything but the schedule is refused at load.
    let broken = r#"
[params.day]
type = "string"

[schedule.bad]
cron = "0 4 * * *"
params = { day = "{{ params.day }}" }

[process.p.activity.a]
command = ["true"]
"#;
    let file = daemon.dir().join("broken.toml");
    std::fs::write(&file, broken).expect("write");
    let output = daemon.hfctl(&["validate", &file.display().to_string()]);
    assert!(!output.status.success(), "{}", shown(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("schedule.at")
            || String::from_utf8_lossy(&output.stderr).contains("schedule.at"),
        "{}",
        shown(&output)
    );
}

/// With `catch_up = "all"`, each fire missed while the daemon was down
/// runs as of its own instant: the jobs' `scheduled_at` are distinct
/// whole seconds, one per fire without a gap across the downtime, not one
/// instant repeated (the jobs were identical before).
#[test]
fn catch_up_all_gives_each_missed_fire_its_own_instant() {
    let chain = r#"
[schedule.every]
cron = "* * * * * *"
catch_up = "all"
overlap = "allow"

[process.p.activity.a]
shell = 'echo "$HF_SCHEDULED_AT"'
"#;
    let mut daemon = TestDaemon::start(&[("tick.toml", chain)]);
    let (before, _) = eventually(Duration::from_secs(5), "a first fire", || {
        let ids = fired_ids(&daemon, "tick.every");
        if ids.is_empty() {
            Err("none yet")
        } else {
            Ok(ids)
        }
    });
    daemon.stop();
    // Down for about three seconds: three fires or more are missed. The
    // sleep makes the downtime; readiness is waited for by `launch`.
    std::thread::sleep(Duration::from_millis(3200));
    let relaunched = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    daemon.launch();
    let (all, _) = eventually(
        Duration::from_secs(10),
        "catch-up and regular fires",
        || {
            let ids = fired_ids(&daemon, "tick.every");
            if ids.len() >= before.len() + 5 {
                Ok(ids)
            } else {
                Err(format!("{ids:?}"))
            }
        },
    );
    let instants: Vec<i64> = all
        .iter()
        .map(|id| epoch_seconds(&scheduled_at(&daemon, *id)))
        .collect();
    // Oldest first, one job per second, the downtime included.
    let expected: Vec<i64> = (0..instants.len() as i64)
        .map(|n| instants[0] + n)
        .collect();
    assert_eq!(
        instants, expected,
        "one job per fire, each as of its own second, none repeated or missing: jobs {all:?}"
    );
    let caught_up = all
        .iter()
        .zip(&instants)
        .filter(|(id, at)| !before.contains(id) && **at < relaunched)
        .count();
    assert!(
        caught_up >= 2,
        "the fires missed while down ran as of their own instants: {instants:?}, relaunched \
         at {relaunched}"
    );
    let after: Vec<u64> = all
        .iter()
        .copied()
        .filter(|id| !before.contains(id))
        .collect();
    // The activity saw its own instant.
    let first = daemon.wait_done(after[0]);
    assert_eq!(first.state, JobState::Succeeded, "{first:#?}");
    assert_eq!(
        daemon.logs(after[0], "p.a", None).trim(),
        scheduled_at(&daemon, after[0])
    );
}

const AS_OF: &str = r#"
[process.p.activity.a]
command = ["echo", "{{ schedule.at | format('%Y-%m-%d') }}", "{{ schedule.at | add(days=-1) | format('%F') }}"]
"#;

/// `hfctl submit --at` runs a job as of that instant (templates and
/// `scheduled_at`), an impossible date is a field error making no job,
/// `hfctl retry` runs as of the same instant as the original, a
/// `request_id` tells one instant from another, and `--dry-run --at`
/// renders the plan as of that instant.
#[test]
fn submit_at_runs_a_job_as_of_that_instant_and_retry_keeps_it() {
    let daemon = TestDaemon::start(&[("asof.toml", AS_OF)]);
    let id = daemon.submit("asof", &["--at", "2026-03-01"]);
    let done = daemon.wait_done(id);
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    let at = scheduled_at(&daemon, id);
    assert!(at.starts_with("2026-03-01T00:00:00"), "{at}");
    assert_eq!(daemon.logs(id, "p.a", None).trim(), "2026-03-01 2026-02-28");

    let refused = daemon.hfctl(&["submit", "asof", "--at", "2026-02-30"]);
    assert_eq!(refused.status.code(), Some(8), "{}", shown(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("at"),
        "{}",
        shown(&refused)
    );

    let retried = daemon.hfctl_json(&["retry", &id.to_string(), "--from-start"]);
    let retry = retried["job_id"].as_u64().expect("a retry job");
    daemon.wait_done(retry);
    assert_eq!(scheduled_at(&daemon, retry), at);
    assert_eq!(
        daemon.logs(retry, "p.a", None).trim(),
        "2026-03-01 2026-02-28"
    );

    // A request_id names one business date: the same again answers with
    // its job, another date under the same key is refused.
    let keyed = daemon.hfctl_json(&[
        "submit",
        "asof",
        "--at",
        "2026-04-01",
        "--request-id",
        "close-2026-04",
    ])["job_id"]
        .clone();
    assert!(keyed.is_u64(), "{keyed}");
    let again = daemon.hfctl_json(&[
        "submit",
        "asof",
        "--at",
        "2026-04-01",
        "--request-id",
        "close-2026-04",
    ]);
    assert_eq!(again["job_id"], keyed, "{again:#}");
    let other = daemon.hfctl(&[
        "submit",
        "asof",
        "--at",
        "2026-05-01",
        "--request-id",
        "close-2026-04",
    ]);
    assert_eq!(other.status.code(), Some(8), "{}", shown(&other));

    // A dry run renders as of --at too.
    let plan = daemon.hfctl_json(&["submit", "asof", "--dry-run", "--at", "2024-03-01"]);
    assert_eq!(
        plan["waves"][0][0]["argv"],
        json!(["echo", "2024-03-01", "2024-02-29"]),
        "{plan:#}"
    );

    // Without --at a job runs as of its submission.
    let plain = daemon.submit("asof", &[]);
    daemon.wait_done(plain);
    let now = job(&daemon, plain);
    assert!(now["scheduled_at"].is_string(), "{now:#}");
}

/// A job resumed after a restart still runs as of its own instant: the
/// stored `scheduled_at` (and its zone) reach the activities that start
/// after the restart, not the clock at their start.
#[test]
fn a_resumed_job_keeps_its_instant_across_a_restart() {
    let chain = r#"
[process.p.activity.wait]
shell = 'while [ ! -e @DIR@/go ]; do sleep 0.05; done'

[process.p.activity.report]
command = ["echo", "{{ schedule.at }}"]
"#;
    let mut daemon = TestDaemon::prepare(None, &[]);
    daemon.write_workflow("resume.toml", chain);
    daemon.launch();
    let id = daemon.submit("resume", &["--at", "2025-12-31T23:30"]);
    let at = scheduled_at(&daemon, id);
    assert!(at.starts_with("2025-12-31T23:30:00"), "{at}");
    daemon.wait_for(id, "its first activity to run", |job| {
        job.state == JobState::Running
    });
    daemon.stop();
    std::fs::write(daemon.dir().join("go"), "").expect("write go");
    daemon.launch();
    let done = daemon.wait_done(id);
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert_eq!(
        done.activities[0].attempts.len(),
        2,
        "the restart interrupted the first activity: {done:#?}"
    );
    assert_eq!(scheduled_at(&daemon, id), at);
    assert_eq!(daemon.logs(id, "p.report", None).trim(), at);
}
