//! Backfill: `hfctl schedule backfill` submits one fire per instant of a
//! past range, each job as of its own instant, in order and respecting
//! `overlap`; the range is capped and checked before any job exists, and
//! the queue survives a restart.

use std::time::Duration;

use holdfast_api::JobState;
use holdfast_tests::{TestDaemon, eventually};
use serde_json::{Value, json};

use crate::dates::{fired_ids, job, scheduled_at};
use crate::support::shown;

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
    // `hfctl schedules` shows what waits.
    let listed = daemon.hfctl_json(&["schedules"]);
    let slow = listed
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == "slow"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        slow["backfill"].as_array().map(Vec::len),
        Some(4),
        "{slow:#}"
    );
    assert!(
        slow["backfill"][0]
            .as_str()
            .is_some_and(|t| t.starts_with("2026-11-02T04:00:00")),
        "{slow:#}"
    );
    let table = daemon.hfctl(&["schedules"]);
    assert!(
        String::from_utf8_lossy(&table.stdout)
            .contains("hold.slow: backfill under way, 4 fires waiting"),
        "{}",
        shown(&table)
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
