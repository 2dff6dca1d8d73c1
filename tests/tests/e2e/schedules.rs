//! Schedules: cron rules in chain files that submit jobs through the
//! daemon. Rules with a seconds field keep these tests short; fire times
//! are whole seconds, so each job's `created_at` tells which fire made it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast_api::JobState;
use holdfast_tests::http::rpc_call;
use holdfast_tests::{HFCTL_TIMEOUT, TestDaemon, eventually, hfctl_command, run_with_deadline};
use serde_json::{Value, json};

use crate::support::{Interval, intervals, shown, timed};

/// A job submitted by a schedule, as `job.list` shows it.
#[derive(Debug, Clone)]
struct Fired {
    id: u64,
    tenant: Option<String>,
    state: String,
    /// `created_at` in milliseconds since the epoch.
    created_ms: i64,
}

impl Fired {
    /// The whole second of the fire that made this job.
    fn second(&self) -> i64 {
        self.created_ms.div_euclid(1000)
    }
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit in i64")
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Milliseconds since the epoch of a wire timestamp (`2026-11-23T13:18:22.001Z`,
/// or with an offset, `2026-11-23T14:18:22+01:00`).
fn epoch_ms(text: &str) -> i64 {
    if let Some(at) = text.rfind(['+', '-']).filter(|at| *at > 10) {
        let sign: i64 = if text.as_bytes()[at] == b'-' { -1 } else { 1 };
        let (hours, minutes) = text[at + 1..]
            .split_once(':')
            .unwrap_or_else(|| panic!("{text:?} has no offset HH:MM"));
        let minutes = hours.parse::<i64>().unwrap_or_else(|_| panic!("{text:?}")) * 60
            + minutes
                .parse::<i64>()
                .unwrap_or_else(|_| panic!("{text:?}"));
        return epoch_ms(&format!("{}Z", &text[..at])) - sign * minutes * 60_000;
    }
    let number = |part: &str| -> i64 {
        part.parse()
            .unwrap_or_else(|_| panic!("{text:?} is not an RFC 3339 UTC time"))
    };
    let (date, time) = text
        .strip_suffix('Z')
        .and_then(|t| t.split_once('T'))
        .unwrap_or_else(|| panic!("{text:?} is not an RFC 3339 UTC time"));
    let date: Vec<i64> = date.split('-').map(number).collect();
    let (time, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let time: Vec<i64> = time.split(':').map(number).collect();
    let [year, month, day] = date[..] else {
        panic!("{text:?} has no YYYY-MM-DD date")
    };
    let [hour, minute, second] = time[..] else {
        panic!("{text:?} has no HH:MM:SS time")
    };
    let millis = number(&format!("{fraction:0<3}")[..3]);
    ((days_from_civil(year, month, day) * 24 + hour) * 60 + minute) * 60_000
        + second * 1000
        + millis
}

/// Sleep until the wall clock is `ms` milliseconds into a second, at or
/// after `not_before` (ms since the epoch). Used to place a restart or a
/// resume between two fires, never to wait for readiness.
fn sleep_until_into_second(ms: i64, not_before: i64) {
    let mut target = not_before.div_euclid(1000) * 1000 + ms;
    if target < not_before {
        target += 1000;
    }
    let wait = target - now_ms();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(wait.unsigned_abs()));
    }
}

/// Jobs submitted by schedule `chain.name`, oldest first.
fn fired(daemon: &TestDaemon, schedule: &str) -> Vec<Fired> {
    let chain = schedule.split('.').next().unwrap_or_default();
    let answer = rpc_call(
        daemon.socket(),
        "job.list",
        json!({"chain": chain, "limit": 1000}),
    );
    let listed = answer["result"]["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("job.list answers a list of jobs: {answer}"));
    let by = format!("schedule:{schedule}");
    let mut jobs: Vec<Fired> = listed
        .iter()
        .filter(|j| j["submitted_by"] == by.as_str())
        .map(|j| Fired {
            id: j["id"].as_u64().expect("a job id"),
            tenant: j["tenant"].as_str().map(String::from),
            state: j["state"].as_str().unwrap_or_default().to_string(),
            created_ms: epoch_ms(j["created_at"].as_str().expect("created_at")),
        })
        .collect();
    jobs.sort_by_key(|j| j.id);
    jobs
}

/// Wait until schedule `chain.name` has submitted at least `count` jobs.
fn wait_fired(daemon: &TestDaemon, schedule: &str, count: usize, within: Duration) -> Vec<Fired> {
    eventually(
        within,
        &format!("{schedule} to have submitted {count} jobs"),
        || {
            let jobs = fired(daemon, schedule);
            if jobs.len() >= count {
                Ok(jobs)
            } else {
                Err(format!("{jobs:?}"))
            }
        },
    )
    .0
}

/// Pause the schedule and wait until every job it submitted has finished;
/// returns them all.
fn settle(daemon: &TestDaemon, schedule: &str) -> Vec<Fired> {
    let paused = daemon.hfctl_json(&["schedule", "pause", schedule]);
    assert_eq!(paused["paused"], true, "{paused:#}");
    eventually(
        Duration::from_secs(10),
        &format!("every job of {schedule} to finish"),
        || {
            let jobs = fired(daemon, schedule);
            let running: Vec<&Fired> = jobs
                .iter()
                .filter(|j| !JobState::parse(&j.state).is_some_and(JobState::is_terminal))
                .collect();
            if running.is_empty() {
                Ok(jobs)
            } else {
                Err(format!("still running: {running:?}"))
            }
        },
    )
    .0
}

/// The entry of `hfctl --json schedules` for `chain.name`.
fn schedule_info(daemon: &TestDaemon, schedule: &str) -> Value {
    let listed = daemon.hfctl_json(&["schedules"]);
    listed
        .as_array()
        .unwrap_or_else(|| panic!("`hfctl --json schedules` prints a list: {listed}"))
        .iter()
        .find(|s| {
            format!(
                "{}.{}",
                s["chain"].as_str().unwrap_or(""),
                s["name"].as_str().unwrap_or("")
            ) == schedule
        })
        .unwrap_or_else(|| panic!("{schedule} is not listed: {listed:#}"))
        .clone()
}

/// The run interval of each job, as its activity recorded it with
/// [`timed`], in job id order.
fn job_intervals(daemon: &TestDaemon, jobs: &[Fired]) -> Vec<(u64, Interval)> {
    let recorded = intervals(daemon.dir());
    jobs.iter()
        .map(|j| {
            let interval = recorded
                .get(&j.id.to_string())
                .unwrap_or_else(|| panic!("job {} recorded no run: {recorded:?}", j.id));
            (j.id, *interval)
        })
        .collect()
}

fn millis(nanos: u128) -> i64 {
    i64::try_from(nanos / 1_000_000).expect("fits")
}

const EVERY_SECOND: &str = r#"
[schedule.every]
cron = "*/1 * * * * *"

[process.p.activity.a]
command = ["true"]
"#;

#[test]
fn a_seconds_rule_fires_through_the_daemon() {
    let started = now_ms();
    let daemon = TestDaemon::start(&[("tick.toml", EVERY_SECOND)]);
    let jobs = wait_fired(&daemon, "tick.every", 2, Duration::from_secs(5));
    let (first, second) = (&jobs[0], &jobs[1]);
    assert!(first.created_ms >= started, "{jobs:?}");
    let gap = second.created_ms - first.created_ms;
    assert!(
        (500..=1500).contains(&gap),
        "one job per fire, a second apart: {jobs:?}"
    );
    assert_eq!(second.second(), first.second() + 1, "{jobs:?}");

    let job = daemon.wait_done(first.id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.submitted_by, "schedule:tick.every", "{job:#?}");
    assert_eq!(job.tenant, None);

    let info = schedule_info(&daemon, "tick.every");
    assert_eq!(info["cron"], "*/1 * * * * *", "{info:#}");
    assert_eq!(info["enabled"], true, "{info:#}");
    assert_eq!(info["paused"], false, "{info:#}");
    assert_eq!(info["catch_up"], "latest", "the default: {info:#}");
    assert_eq!(info["overlap"], "skip", "the default: {info:#}");
    assert_eq!(info["tenants"], json!([]), "{info:#}");
    assert!(info["next_fire"].is_string(), "{info:#}");
    assert!(
        info["last_job"].as_u64().is_some_and(|id| id >= second.id),
        "{info:#}"
    );

    let output = daemon.hfctl(&["schedules"]);
    assert!(output.status.success(), "{}", shown(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("tick.every"),
        "{}",
        shown(&output)
    );

    // Unknown schedules are NOT_FOUND (exit 6), named CHAIN.NAME or not.
    for name in ["tick.nope", "nope.every", "tick"] {
        let output = daemon.hfctl(&["schedule", "trigger", name]);
        assert_eq!(output.status.code(), Some(6), "{name}: {}", shown(&output));
    }
}

#[test]
fn pause_stops_fires_trigger_fires_at_once_and_resume_restarts_them() {
    let mut daemon = TestDaemon::start(&[("tick.toml", EVERY_SECOND)]);
    wait_fired(&daemon, "tick.every", 1, Duration::from_secs(5));

    let paused = daemon.hfctl_json(&["schedule", "pause", "tick.every"]);
    assert_eq!(paused["paused"], true, "{paused:#}");
    assert!(paused["next_fire"].is_null(), "{paused:#}");
    let before: Vec<u64> = fired(&daemon, "tick.every").iter().map(|j| j.id).collect();

    // A pause is kept across a restart.
    daemon.restart();
    assert_eq!(schedule_info(&daemon, "tick.every")["paused"], true);

    // Three fire periods pass without a job.
    std::thread::sleep(Duration::from_millis(3200));
    let during: Vec<u64> = fired(&daemon, "tick.every").iter().map(|j| j.id).collect();
    assert_eq!(during, before, "a paused schedule fired");

    // A trigger fires at once, paused or not.
    let asked = now_ms();
    let triggered = daemon.hfctl_json(&["schedule", "trigger", "tick.every"]);
    let job_id = triggered["last_job"]
        .as_u64()
        .unwrap_or_else(|| panic!("a trigger reports its job: {triggered:#}"));
    assert!(!before.contains(&job_id), "{triggered:#}");
    assert_eq!(
        triggered["paused"], true,
        "a trigger does not resume: {triggered:#}"
    );
    let jobs = fired(&daemon, "tick.every");
    let new = jobs
        .iter()
        .find(|j| j.id == job_id)
        .unwrap_or_else(|| panic!("job {job_id} is listed as the schedule's: {jobs:?}"));
    assert!(
        new.created_ms - asked < 1000,
        "the trigger's job is created at once: {new:?}, asked at {asked}"
    );
    assert_eq!(jobs.len(), before.len() + 1, "{jobs:?}");
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");

    let audit = daemon.hfctl_json(&["audit", "--limit", "50"]);
    let entries = audit.as_array().expect("audit entries");
    for method in ["schedule.pause", "schedule.trigger"] {
        assert!(
            entries.iter().any(|e| e["method"] == method
                && e["target"] == "tick.every"
                && e["outcome"] == "ok"),
            "{method} is audited: {audit:#}"
        );
    }

    // Resume a third of a second into a second: a fire made up for the
    // paused time would come at once, the next regular one ~0.7 s later.
    sleep_until_into_second(300, now_ms());
    let resumed_at = now_ms();
    let resumed = daemon.hfctl_json(&["schedule", "resume", "tick.every"]);
    assert_eq!(resumed["paused"], false, "{resumed:#}");
    assert!(resumed["next_fire"].is_string(), "{resumed:#}");
    let count = fired(&daemon, "tick.every").len();
    let jobs = wait_fired(&daemon, "tick.every", count + 2, Duration::from_secs(4));
    let after: Vec<&Fired> = jobs.iter().filter(|j| j.created_ms >= resumed_at).collect();
    assert!(after.len() >= 2, "{jobs:?}");
    assert!(
        after[0].created_ms - resumed_at >= 400,
        "fires missed while paused are not run on resume: resumed at {resumed_at}, {after:?}"
    );
    assert_eq!(after[1].second(), after[0].second() + 1, "{after:?}");
    let audit = daemon.hfctl_json(&["audit", "--limit", "50"]);
    assert!(
        audit
            .as_array()
            .expect("audit entries")
            .iter()
            .any(|e| e["method"] == "schedule.resume" && e["target"] == "tick.every"),
        "resume is audited: {audit:#}"
    );
}

/// A chain whose schedule fires every second and whose one activity takes
/// `seconds`, recording its run in `@DIR@/times` under its job id.
fn slow(overlap: &str, seconds: &str) -> String {
    format!(
        r#"
[schedule.every]
cron = "* * * * * *"
overlap = "{overlap}"

[process.p.activity.work]
shell = '{}'
"#,
        timed("$HF_JOB_ID", seconds)
    )
}

fn assert_never_two_at_once(runs: &[(u64, Interval)]) {
    for (i, (a, first)) in runs.iter().enumerate() {
        for (b, second) in &runs[i + 1..] {
            assert!(
                !first.overlaps(*second),
                "jobs {a} and {b} ran at the same time: {runs:?}"
            );
        }
    }
}

#[test]
fn overlap_skip_drops_fires_while_the_previous_job_runs() {
    let daemon = TestDaemon::start(&[("slow.toml", &slow("skip", "2.4"))]);
    let jobs = wait_fired(&daemon, "slow.every", 2, Duration::from_secs(8));
    let gap = jobs[1].created_ms - jobs[0].created_ms;
    assert!(
        gap >= 2400,
        "the fires during the first job's 2.4 s were skipped, so the second job comes \
         from a later fire: {jobs:?}"
    );
    let jobs = settle(&daemon, "slow.every");
    let runs = job_intervals(&daemon, &jobs);
    assert_never_two_at_once(&runs);
    let first_start = millis(runs[0].1.start);
    let last_end = millis(runs.iter().map(|(_, i)| i.end).max().unwrap_or_default());
    let fires = (last_end - first_start) / 1000 + 1;
    assert!(
        (jobs.len() as i64) < fires,
        "{} jobs for {fires} fires: {jobs:?}",
        jobs.len()
    );
}

#[test]
fn overlap_allow_runs_jobs_side_by_side() {
    let daemon = TestDaemon::start(&[("slow.toml", &slow("allow", "2.4"))]);
    let jobs = wait_fired(&daemon, "slow.every", 3, Duration::from_secs(6));
    for pair in jobs.windows(2) {
        assert_eq!(
            pair[1].second(),
            pair[0].second() + 1,
            "every fire submits a job: {jobs:?}"
        );
    }
    let jobs = settle(&daemon, "slow.every");
    let runs = job_intervals(&daemon, &jobs);
    assert!(
        runs[0].1.overlaps(runs[1].1) && runs[1].1.overlaps(runs[2].1),
        "jobs of consecutive fires run at the same time: {runs:?}"
    );
}

#[test]
fn overlap_queue_runs_a_waiting_fire_as_soon_as_the_previous_job_ends() {
    let daemon = TestDaemon::start(&[("slow.toml", &slow("queue", "1.2"))]);
    wait_fired(&daemon, "slow.every", 3, Duration::from_secs(8));
    let jobs = settle(&daemon, "slow.every");
    let mut runs = job_intervals(&daemon, &jobs);
    runs.sort_by_key(|(_, i)| i.start);
    assert_never_two_at_once(&runs);
    // Each job runs 1.2 s and a fire comes every second, so a fire always
    // waits: it must start the moment the previous job ends (a skipped
    // fire would leave a gap of ~0.8 s until the next one).
    for pair in runs.windows(2) {
        let gap = millis(pair[1].1.start) - millis(pair[0].1.end);
        assert!(
            (0..500).contains(&gap),
            "job {} started {gap} ms after job {} ended: {runs:?}",
            pair[1].0,
            pair[0].0
        );
    }
}

#[test]
fn pausing_a_queue_schedule_drops_its_waiting_fire() {
    let daemon = TestDaemon::start(&[("slow.toml", &slow("queue", "2"))]);
    let first = wait_fired(&daemon, "slow.every", 1, Duration::from_secs(5))[0].clone();
    // Past the next fire, which now waits for the first job.
    sleep_until_into_second(300, first.created_ms + 1000);
    let paused = daemon.hfctl_json(&["schedule", "pause", "slow.every"]);
    assert_eq!(paused["paused"], true, "{paused:#}");
    let paused_at = now_ms();
    let job = daemon.wait_done(first.id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    // One more fire period: nothing may be submitted any more.
    std::thread::sleep(Duration::from_millis(1200));
    let jobs = fired(&daemon, "slow.every");
    let late: Vec<&Fired> = jobs.iter().filter(|j| j.created_ms > paused_at).collect();
    assert!(
        late.is_empty(),
        "`schedule pause` answered at {paused_at}, yet the schedule submitted {late:?}"
    );
}

const FAN_OUT: &str = r#"
[params.company]
type = "string"
default = "chain-company"

[params.region]
type = "string"
default = "chain-region"

[params.mode]
type = "string"
default = "chain-mode"

[schedule.nightly]
cron = "* * * * * *"
tenants = ["acme", "globex"]
params = { mode = "scheduled" }

[process.p.activity.show]
command = ["env"]
"#;

#[test]
fn each_fire_submits_one_job_per_tenant_with_its_parameters() {
    let mut daemon = TestDaemon::prepare(None, &[("fan.toml", FAN_OUT)]);
    daemon.write_tenant(
        "acme",
        "[params]\ncompany = \"ACME\"\nregion = \"acme-region\"\nmode = \"tenant-mode\"\n",
    );
    daemon.write_tenant("globex", "[params]\ncompany = \"GLOBEX\"\n");
    daemon.launch();

    wait_fired(&daemon, "fan.nightly", 4, Duration::from_secs(6));
    let jobs = settle(&daemon, "fan.nightly");
    let mut by_fire: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for job in &jobs {
        let tenant = job.tenant.clone().unwrap_or_else(|| "-".into());
        assert!(
            by_fire.entry(job.second()).or_default().insert(tenant),
            "one job per tenant per fire: {jobs:?}"
        );
    }
    let both = BTreeSet::from(["acme".to_string(), "globex".to_string()]);
    let complete = by_fire.values().filter(|t| **t == both).count();
    assert!(complete >= 2, "two fires, each for both tenants: {jobs:?}");
    assert!(by_fire.values().all(|t| t.is_subset(&both)), "{by_fire:?}");

    let expected = BTreeMap::from([
        ("acme", ("ACME", "acme-region")),
        ("globex", ("GLOBEX", "chain-region")),
    ]);
    for job in &jobs {
        let tenant = job.tenant.as_deref().expect("a tenant");
        let log = daemon.logs(job.id, "p.show", None);
        let env: BTreeMap<&str, &str> = log
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.starts_with("HF_"))
            .collect();
        let (company, region) = expected[tenant];
        assert_eq!(
            env.get("HF_TENANT"),
            Some(&tenant),
            "job {}: {env:#?}",
            job.id
        );
        assert_eq!(
            env.get("HF_PARAM_COMPANY"),
            Some(&company),
            "job {}",
            job.id
        );
        assert_eq!(env.get("HF_PARAM_REGION"), Some(&region), "job {}", job.id);
        assert_eq!(
            env.get("HF_PARAM_MODE"),
            Some(&"scheduled"),
            "the schedule's value beats the tenant's: job {}",
            job.id
        );
    }
    assert_eq!(
        schedule_info(&daemon, "fan.nightly")["tenants"],
        json!(["acme", "globex"])
    );
}

/// A rule firing every second. `overlap = "allow"`: a job the stop
/// interrupted resumes at the start and is in flight then, and with the
/// default `skip` the first fires after the restart would rightly be
/// dropped; these tests are about which fires run, not about overlap.
fn every_second(catch_up: &str) -> String {
    format!(
        r#"
[schedule.every]
cron = "* * * * * *"
catch_up = "{catch_up}"
overlap = "allow"

[process.p.activity.a]
command = ["true"]
"#
    )
}

/// Jobs created in `[from, until)` (ms since the epoch).
fn created_between(jobs: &[Fired], from: i64, until: i64) -> Vec<&Fired> {
    jobs.iter()
        .filter(|j| (from..until).contains(&j.created_ms))
        .collect()
}

/// The first whole second at or after `ms`.
fn next_second(ms: i64) -> i64 {
    (ms + 999).div_euclid(1000) * 1000
}

fn assert_one_job_per_fire(jobs: &[Fired]) {
    let mut seconds = BTreeSet::new();
    for job in jobs {
        assert!(
            seconds.insert(job.second()),
            "two jobs for the fire at second {}: {jobs:?}",
            job.second()
        );
    }
}

#[test]
fn a_restart_neither_repeats_the_last_fire_nor_runs_missed_ones_with_catch_up_none() {
    let mut daemon = TestDaemon::start(&[("tick.toml", &every_second("none"))]);
    let count = wait_fired(&daemon, "tick.every", 1, Duration::from_secs(5)).len();

    // Stopped and started again at once, right after a fire.
    let stopped = now_ms();
    daemon.stop();
    let spawned = now_ms();
    daemon.launch();
    let jobs = wait_fired(&daemon, "tick.every", count + 1, Duration::from_secs(4));
    let early = created_between(&jobs, stopped, next_second(spawned));
    assert!(
        early.is_empty(),
        "the fire handled before the stop ran again after the restart: {early:?}"
    );
    assert_one_job_per_fire(&jobs);

    // Down across at least one fire: it is not made up for.
    let count = jobs.len();
    let stopped = now_ms();
    daemon.stop();
    sleep_until_into_second(300, stopped + 1000);
    let spawned = now_ms();
    daemon.launch();
    let ready = now_ms();
    let first_regular = next_second(spawned);
    let jobs = wait_fired(&daemon, "tick.every", count + 2, Duration::from_secs(5));
    let early = created_between(&jobs, stopped, first_regular);
    assert!(
        early.is_empty(),
        "catch_up = \"none\" ran a fire missed while the daemon was down \
         (stopped {stopped}, started {spawned}): {early:?}"
    );
    let after: Vec<&Fired> = jobs.iter().filter(|j| j.created_ms >= spawned).collect();
    assert!(after.len() >= 2, "{jobs:?}");
    // The first fire after the restart runs (the next whole second, or the
    // one after if the daemon was slow to start).
    assert!(
        (first_regular..=next_second(ready)).contains(&(after[0].second() * 1000)),
        "started {spawned}, ready {ready}: {after:?}"
    );
    assert_eq!(after[1].second(), after[0].second() + 1, "{after:?}");
    assert_one_job_per_fire(&jobs);
}

/// With `catch_up = "latest"`, the fires missed while the daemon was down
/// run once, as of the newest of them: after the restart the first job's
/// `scheduled_at` is a fire of the downtime (at or after the relaunch's
/// second, not the oldest missed one), no job runs as of the fires before
/// it, and the regular fires follow, each as of its own second. Jobs are
/// told apart by the instant they run as of, so how fast the daemon starts
/// does not matter.
#[test]
fn catch_up_latest_runs_one_missed_fire_right_after_downtime() {
    let mut daemon = TestDaemon::start(&[("tick.toml", &every_second("latest"))]);
    wait_fired(&daemon, "tick.every", 1, Duration::from_secs(5));

    // About three seconds down: three fires or more are missed.
    let stopped = now_ms();
    daemon.stop();
    sleep_until_into_second(200, stopped + 3000);
    let spawned = now_ms();
    daemon.launch();
    let ready = now_ms();
    let fire_second = |job: &Fired| -> i64 {
        let answer = rpc_call(daemon.socket(), "job.get", json!({"job_id": job.id}));
        let at = answer["result"]["scheduled_at"]
            .as_str()
            .unwrap_or_else(|| panic!("job {} runs as of an instant: {answer}", job.id));
        epoch_ms(at).div_euclid(1000)
    };
    let (jobs, _) = eventually(
        Duration::from_secs(5),
        "a catch-up job and two regular fires after the restart",
        || {
            let jobs = fired(&daemon, "tick.every");
            let after = jobs.iter().filter(|j| j.created_ms >= spawned).count();
            if after >= 3 {
                Ok(jobs)
            } else {
                Err(format!("{jobs:?}"))
            }
        },
    );
    let before: Vec<i64> = jobs
        .iter()
        .filter(|j| j.created_ms < stopped)
        .map(fire_second)
        .collect();
    let after: Vec<i64> = jobs
        .iter()
        .filter(|j| j.created_ms >= spawned)
        .map(fire_second)
        .collect();
    let last_before = *before.last().expect("a fire before the stop");
    let caught_up = after[0];
    assert!(
        (spawned.div_euclid(1000)..=ready.div_euclid(1000)).contains(&caught_up),
        "the catch-up job runs as of the newest missed fire (relaunched at {spawned}, ready at \
         {ready}): before {before:?}, after {after:?}"
    );
    assert!(
        caught_up - last_before >= 3,
        "fires were missed in between: before {before:?}, after {after:?}"
    );
    // One job for the downtime (the first), then one per regular fire.
    assert!(
        after.windows(2).all(|w| w[1] > w[0]),
        "catch_up = \"latest\": one job per fire, each as of a later second: {after:?}"
    );
    assert_one_job_per_fire(&jobs);
}

// ---------------------------------------------------------------------
// hfctl cron next
// ---------------------------------------------------------------------

/// `hfctl cron next ARGS...` against a socket nobody listens on: the
/// command works offline.
fn cron_next(args: &[&str]) -> Output {
    let mut cmd = hfctl_command(Path::new("/nonexistent/holdfast.sock"));
    cmd.arg("cron").arg("next").args(args);
    run_with_deadline(cmd, HFCTL_TIMEOUT)
}

fn fire_lines(args: &[&str]) -> Vec<String> {
    let output = cron_next(args);
    assert!(output.status.success(), "{}", shown(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn cron_next_moves_a_time_in_the_spring_gap_to_the_end_of_the_gap() {
    let berlin = ["--tz", "Europe/Berlin"];
    let args = [
        "30 2 * * *",
        berlin[0],
        berlin[1],
        "-n",
        "3",
        "--from",
        "2026-03-28T00:00:00+01:00",
    ];
    let expected = [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ];
    assert_eq!(fire_lines(&args), expected);

    let mut cmd = hfctl_command(Path::new("/nonexistent/holdfast.sock"));
    cmd.args(["--json", "cron", "next"]).args(args);
    let output = run_with_deadline(cmd, HFCTL_TIMEOUT);
    assert!(output.status.success(), "{}", shown(&output));
    let printed: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}): {}", shown(&output)));
    assert_eq!(printed, json!(expected));

    // The gap day fires once, at 03:00 CEST, and not again.
    assert_eq!(
        fire_lines(&[
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "-n",
            "1",
            "--from",
            "2026-03-29T01:59:00+01:00"
        ]),
        ["2026-03-29T03:00:00+02:00"]
    );
    assert_eq!(
        fire_lines(&[
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "-n",
            "1",
            "--from",
            "2026-03-29T03:00:00+02:00"
        ]),
        ["2026-03-30T02:30:00+02:00"]
    );
    // An interval rule follows elapsed time: nothing in the gap.
    assert_eq!(
        fire_lines(&[
            "*/30 * * * *",
            "--tz",
            "Europe/Berlin",
            "-n",
            "3",
            "--from",
            "2026-03-29T01:00:00+01:00"
        ]),
        [
            "2026-03-29T01:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:30:00+02:00"
        ]
    );
    // The autumn repeat of 02:30 fires once, at its first pass.
    assert_eq!(
        fire_lines(&[
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "-n",
            "2",
            "--from",
            "2026-10-24T12:00:00+02:00"
        ]),
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    );
    // Six fields: seconds first.
    assert_eq!(
        fire_lines(&[
            "*/20 * * * * *",
            "--tz",
            "UTC",
            "-n",
            "3",
            "--from",
            "2026-01-01T00:00:00Z"
        ]),
        [
            "2026-01-01T00:00:20+00:00",
            "2026-01-01T00:00:40+00:00",
            "2026-01-01T00:01:00+00:00"
        ]
    );

    let bad = cron_next(&["61 4 * * *", "--tz", "Europe/Berlin"]);
    assert_eq!(bad.status.code(), Some(2), "{}", shown(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("minute"),
        "the bad field is named: {}",
        shown(&bad)
    );
}

/// A schedule whose file goes away and comes back (a slow editor's save,
/// a file moved aside for a moment) takes up its pause and its last fire
/// where it left them, from the daemon's memory.
#[test]
fn a_schedule_that_goes_away_and_comes_back_keeps_its_pause() {
    let daemon = TestDaemon::start(&[("tick.toml", EVERY_SECOND)]);
    wait_fired(&daemon, "tick.every", 1, Duration::from_secs(5));
    let jobs = settle(&daemon, "tick.every");
    let before = schedule_info(&daemon, "tick.every");
    assert_eq!(before["paused"], true, "{before:#}");

    let file = daemon.workflows_dir().join("tick.toml");
    let aside = daemon.dir().join("tick.toml.aside");
    std::fs::rename(&file, &aside).expect("the chain file can be moved aside");
    daemon.hfctl_json(&["reload"]);
    let listed = daemon.hfctl_json(&["schedules"]);
    assert!(
        listed
            .as_array()
            .is_some_and(|all| all.iter().all(|s| s["chain"] != "tick")),
        "the schedule is gone with its file: {listed:#}"
    );

    std::fs::rename(&aside, &file).expect("the chain file can be moved back");
    daemon.hfctl_json(&["reload"]);
    let after = schedule_info(&daemon, "tick.every");
    assert_eq!(after["paused"], true, "the pause survives: {after:#}");
    assert!(after["next_fire"].is_null(), "{after:#}");
    for field in ["last_handled", "last_job"] {
        assert_eq!(
            after[field], before[field],
            "{field} survives: {before:#} {after:#}"
        );
    }
    // Paused, it fires nothing more.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fired(&daemon, "tick.every").len(), jobs.len());
}
