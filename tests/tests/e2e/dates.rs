//! Business dates: every job runs as of an instant (`schedule.at`,
//! `HF_SCHEDULED_AT`, `scheduled_at` in `job.get`): a schedule's fire, each
//! catch-up fire its own, `--at` on a submission or a trigger, one per fire
//! of a backfill. Schedule parameters computed from it with date filters.

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
fn job(daemon: &TestDaemon, id: u64) -> Value {
    let answer = rpc_call(daemon.socket(), "job.get", json!({ "job_id": id }));
    answer["result"].clone()
}

fn scheduled_at(daemon: &TestDaemon, id: u64) -> String {
    let job = job(daemon, id);
    job["scheduled_at"]
        .as_str()
        .unwrap_or_else(|| panic!("job {id} has a scheduled_at: {job:#}"))
        .to_string()
}

/// Ids of the jobs submitted by schedule `chain.name`, oldest first.
fn fired_ids(daemon: &TestDaemon, schedule: &str) -> Vec<u64> {
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

const DAILY: &str = r#"
[params.day]
type = "date"
required = true

[schedule.load]
cron = "0 4 * * *"
timezone = "Europe/Berlin"
params = { day = "{{ schedule.at | format('%Y-%m-%d') }}" }

[process.p.activity.a]
shell = 'echo "$HF_PARAM_DAY"'
"#;

/// `hfctl schedule backfill` over 30 days submits 30 jobs, one per fire,
/// each with its own date, in order and (with the default `overlap =
/// "skip"`) one after another; `--dry-run` lists the instants and submits
/// nothing; a range past the cap or backwards is refused.
#[test]
fn backfill_of_thirty_days_makes_thirty_jobs_with_thirty_dates() {
    let daemon = TestDaemon::start(&[("daily.toml", DAILY)]);

    let dry = daemon.hfctl_json(&[
        "schedule",
        "backfill",
        "daily.load",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
        "--dry-run",
    ]);
    let fires = dry["fires"].as_array().expect("fires");
    assert_eq!(fires.len(), 30, "{dry:#}");
    assert_eq!(fires[0], "2026-11-01T04:00:00+01:00", "{dry:#}");
    assert_eq!(fires[29], "2026-11-30T04:00:00+01:00", "{dry:#}");
    assert_eq!(dry["jobs"], json!([]), "{dry:#}");
    assert!(
        fired_ids(&daemon, "daily.load").is_empty(),
        "a dry run submits nothing"
    );

    let done = daemon.hfctl_json(&[
        "schedule",
        "backfill",
        "daily.load",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-30",
    ]);
    assert_eq!(done["fires"].as_array().map(Vec::len), Some(30), "{done:#}");
    assert_eq!(done["jobs"].as_array().map(Vec::len), Some(1), "{done:#}");
    assert_eq!(done["queued"], 29, "{done:#}");
    let (ids, _) = eventually(
        Duration::from_secs(60),
        "30 backfill jobs to finish",
        || {
            let ids = fired_ids(&daemon, "daily.load");
            let finished = ids
                .iter()
                .filter(|id| job(&daemon, **id)["finished_at"].is_string())
                .count();
            if ids.len() == 30 && finished == 30 {
                Ok(ids)
            } else {
                Err(format!("{} jobs, {finished} finished", ids.len()))
            }
        },
    );
    let jobs: Vec<Value> = ids.iter().map(|id| job(&daemon, *id)).collect();
    for (n, got) in jobs.iter().enumerate() {
        let day = format!("2026-11-{:02}", n + 1);
        assert_eq!(got["state"], "succeeded", "{got:#}");
        assert_eq!(got["params"]["day"], day.as_str(), "{got:#}");
        assert_eq!(
            got["scheduled_at"],
            format!("{day}T04:00:00+01:00").as_str(),
            "{got:#}"
        );
        let log = daemon.logs(got["id"].as_u64().expect("id"), "p.a", None);
        assert_eq!(log.trim(), day, "the activity saw its own date");
    }
    // In order, one at a time: each started after the previous finished.
    for pair in jobs.windows(2) {
        let (previous, next) = (&pair[0], &pair[1]);
        let finished = previous["finished_at"].as_str().expect("finished");
        let started = next["started_at"].as_str().expect("started");
        assert!(
            started >= finished,
            "job {} started before job {} finished",
            next["id"],
            previous["id"]
        );
    }

    // More than 1,000 fires, or a range the wrong way round: field errors.
    for (from, to, field) in [
        ("2020-01-01", "2023-01-01", "to"),
        ("2026-11-30", "2026-11-01", "to"),
        ("2026-11-31", "2026-12-01", "from"),
    ] {
        let output = daemon.hfctl(&[
            "schedule",
            "backfill",
            "daily.load",
            "--from",
            from,
            "--to",
            to,
        ]);
        assert_eq!(
            output.status.code(),
            Some(8),
            "{from}..{to}: {}",
            shown(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(field),
            "{}",
            shown(&output)
        );
    }
    assert_eq!(fired_ids(&daemon, "daily.load").len(), 30);
}

const AS_OF: &str = r#"
[process.p.activity.a]
command = ["echo", "{{ schedule.at | format('%Y-%m-%d') }}", "{{ schedule.at | add(days=-1) | format('%F') }}"]
"#;

/// `hfctl submit --at` runs a job as of that instant (templates and
/// `scheduled_at`), an impossible date is a field error making no job,
/// `hfctl retry` runs as of the same instant as the original, and a
/// `request_id` tells one instant from another.
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

    // Without --at a job runs as of its submission.
    let plain = daemon.submit("asof", &[]);
    daemon.wait_done(plain);
    let now = job(&daemon, plain);
    assert!(now["scheduled_at"].is_string(), "{now:#}");
}

/// With `overlap = "allow"` a backfill submits every fire at once, each
/// job as of its own day. With another overlap its fires wait in order: a
/// second backfill is refused while one is under way, and pausing the
/// schedule drops the waiting fires (the next job made is the next
/// backfill's, not a dropped fire's).
#[test]
fn backfill_overlap_allow_submits_all_and_a_pause_drops_waiting_fires() {
    let allow = DAILY.replace(
        "timezone = \"Europe/Berlin\"",
        "timezone = \"Europe/Berlin\"\noverlap = \"allow\"",
    );
    let hold = r#"
[schedule.slow]
cron = "0 4 * * *"
overlap = "queue"

[process.p.activity.a]
command = ["sleep", "60"]
"#;
    let daemon = TestDaemon::start(&[("daily.toml", &allow), ("hold.toml", hold)]);

    let done = daemon.hfctl_json(&[
        "schedule",
        "backfill",
        "daily.load",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-03",
    ]);
    assert_eq!(done["queued"], 0, "{done:#}");
    let ids: Vec<u64> = done["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(ids.len(), 3, "every fire at once: {done:#}");
    let days: Vec<String> = ids
        .iter()
        .map(|id| {
            job(&daemon, *id)["params"]["day"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(days, ["2026-11-01", "2026-11-02", "2026-11-03"]);

    let queued = daemon.hfctl_json(&[
        "schedule",
        "backfill",
        "hold.slow",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-05",
    ]);
    assert_eq!(queued["queued"], 4, "{queued:#}");
    let first = queued["jobs"][0].as_u64().expect("the first fire's job");
    let again = daemon.hfctl(&[
        "schedule",
        "backfill",
        "hold.slow",
        "--from",
        "2026-11-06",
        "--to",
        "2026-11-06",
    ]);
    assert_eq!(again.status.code(), Some(10), "{}", shown(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("under way"),
        "{}",
        shown(&again)
    );

    daemon.hfctl_json(&["schedule", "pause", "hold.slow"]);
    let cancel = daemon.hfctl(&["cancel", &first.to_string()]);
    assert!(cancel.status.success(), "{}", shown(&cancel));
    assert_eq!(daemon.wait_done(first).state, JobState::Cancelled);
    daemon.hfctl_json(&["schedule", "resume", "hold.slow"]);
    let next = daemon.hfctl_json(&[
        "schedule",
        "backfill",
        "hold.slow",
        "--from",
        "2026-11-06",
        "--to",
        "2026-11-06",
    ]);
    let next_id = next["jobs"][0].as_u64().expect("a job");
    assert_eq!(
        next_id,
        first + 1,
        "no fire of the dropped backfill was submitted in between: {next:#}"
    );
    assert!(scheduled_at(&daemon, next_id).starts_with("2026-11-06T04:00:00"));
    let cancel = daemon.hfctl(&["cancel", &next_id.to_string()]);
    assert!(cancel.status.success(), "{}", shown(&cancel));
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

/// A backfill under way survives a restart: the fires not yet submitted
/// are stored with the schedule, so after the restart the interrupted
/// fire's job is resumed and the rest follow in order, each fire exactly
/// once.
#[test]
fn a_backfill_goes_on_after_a_restart_without_repeating_a_fire() {
    let chain = r#"
[params.day]
type = "date"
required = true

[schedule.load]
cron = "0 4 * * *"
params = { day = "{{ schedule.at | format('%Y-%m-%d') }}" }

[process.p.activity.a]
shell = 'while [ ! -e @DIR@/go ]; do sleep 0.05; done; echo "$HF_PARAM_DAY"'
"#;
    let mut daemon = TestDaemon::prepare(None, &[]);
    daemon.write_workflow("held.toml", chain);
    daemon.launch();
    let started = daemon.hfctl_json(&[
        "schedule",
        "backfill",
        "held.load",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-04",
    ]);
    assert_eq!(started["queued"], 3, "{started:#}");
    let first = started["jobs"][0].as_u64().expect("the first fire's job");
    daemon.wait_for(first, "its activity to run", |job| {
        job.state == JobState::Running
    });
    daemon.stop();
    std::fs::write(daemon.dir().join("go"), "").expect("write go");
    daemon.launch();
    let (ids, _) = eventually(Duration::from_secs(30), "four jobs to finish", || {
        let ids = fired_ids(&daemon, "held.load");
        let finished = ids
            .iter()
            .filter(|id| job(&daemon, **id)["finished_at"].is_string())
            .count();
        if ids.len() >= 4 && finished == ids.len() {
            Ok(ids)
        } else {
            Err(format!("{ids:?}, {finished} finished"))
        }
    });
    let days: Vec<String> = ids
        .iter()
        .map(|id| {
            let got = job(&daemon, *id);
            assert_eq!(got["state"], "succeeded", "{got:#}");
            got["params"]["day"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        days,
        ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"],
        "each fire once, in order: jobs {ids:?}"
    );
    // Nothing is left waiting: a new backfill is accepted.
    let again = daemon.hfctl_json(&[
        "schedule",
        "backfill",
        "held.load",
        "--from",
        "2026-11-05",
        "--to",
        "2026-11-05",
    ]);
    assert_eq!(again["queued"], 0, "{again:#}");
}
