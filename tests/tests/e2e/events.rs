//! Events: the outbox committed with each transition (it survives a kill -9
//! right after the transition is visible), `events.subscribe` replaying
//! after `since` and following without gap or duplicate across a restart,
//! `hfctl events` and `-f`, alerts as events, and refused schedule fires
//! made visible. Notifications are in `notifications.rs`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use holdfast_api::rpc::HoldfastClient;
use holdfast_api::{Event, JobState};
use holdfast_tests::{HFCTL_TIMEOUT, TestDaemon, eventually, finish_child_output};
use serde_json::Value;

use crate::support::{activity, shown};

/// Longest a test waits for one event.
pub(crate) const EVENT_WAIT: Duration = Duration::from_secs(30);

pub(crate) const FAILS: &str = r#"
[process.load.activity.facts]
shell = "echo 'ORA-01555: snapshot too old' >&2; exit 3"
"#;

const WAITS: &str = r#"
[process.p.activity.wait]
shell = "while [ ! -e @DIR@/go ]; do sleep 0.02; done"

[process.q]
after = ["p"]

[process.q.activity.after]
command = ["true"]
"#;

const QUICK: &str = r#"
[process.p.activity.a]
command = ["true"]
"#;

/// Every event kept, through `hfctl --json events` (one JSON line each).
fn all_events(daemon: &TestDaemon, extra: &[&str]) -> Vec<Event> {
    let mut args = vec!["--json", "events"];
    args.extend_from_slice(extra);
    let output = daemon.hfctl(&args);
    assert!(output.status.success(), "{}", shown(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("`hfctl --json events` printed a non-event ({e}): {line}")
            })
        })
        .collect()
}

fn kinds_of(events: &[Event], job_id: u64) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e.job_id == Some(job_id))
        .map(|e| e.kind.as_str())
        .collect()
}

/// A job fails and the daemon is killed -9 the moment the failure is
/// visible: after the restart its events are all there, in order, with the
/// failed activity's error id (the one its attempt carries) and no secret.
/// Proves the event is committed in the transaction of its transition.
#[test]
fn events_are_committed_with_their_transition_and_survive_kill_9() {
    let mut daemon = TestDaemon::start(&[("nightly.toml", FAILS)]);
    let job_id = daemon.submit("nightly", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    daemon.kill9();
    daemon.launch();

    let events = all_events(&daemon, &[]);
    assert_eq!(
        kinds_of(&events, job_id),
        [
            "job.submitted",
            "job.started",
            "activity.started",
            "activity.failed",
            "job.failed",
            "job.finished"
        ],
        "{events:#?}"
    );
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let error_id = activity(&job, "load.facts").attempts[0]
        .error_id
        .clone()
        .expect("the failed attempt has an error id");
    let failed = events
        .iter()
        .find(|e| e.kind == "job.failed")
        .expect("a job.failed event");
    assert_eq!(failed.state, Some(JobState::Failed), "{failed:#?}");
    assert_eq!(failed.chain.as_deref(), Some("nightly"), "{failed:#?}");
    assert_eq!(failed.failed.len(), 1, "{failed:#?}");
    assert_eq!(
        failed.failed[0].activity, "nightly.load.facts",
        "{failed:#?}"
    );
    assert_eq!(
        failed.failed[0].error_id.as_deref(),
        Some(error_id.as_str())
    );
    assert!(failed.duration_ms.is_some(), "{failed:#?}");
    assert!(
        failed.links.contains(&format!("hfctl status {job_id}")),
        "{failed:#?}"
    );

    // The human form: one line per event.
    let output = daemon.hfctl(&["events", "--kind", "job.failed"]);
    assert!(output.status.success(), "{}", shown(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("job.failed") && text.contains(&format!("job {job_id}")),
        "{text}"
    );
    assert!(text.contains(&error_id), "{text}");
}

/// Next event of a subscription (None once it ended), or a panic naming
/// what was seen.
macro_rules! next_event {
    ($stream:expr, $seen:expr) => {
        tokio::time::timeout(EVENT_WAIT, $stream.next())
            .await
            .unwrap_or_else(|_| panic!("no event within {EVENT_WAIT:?}; seen {:#?}", $seen))
            .map(|item| item.expect("events.event items are Events"))
    };
}

/// A subscriber sees a job's transitions live; the daemon is killed -9
/// while an activity runs and the subscriber is cut off; after the restart
/// it resubscribes with `since` = the last id it saw and gets every event
/// after it (the recovery, the rerun, the job's end) exactly once: what it
/// saw before and after is the table's whole content, without gap or
/// duplicate.
#[tokio::test]
async fn subscribe_follows_transitions_and_resumes_across_a_restart_without_gap_or_duplicate() {
    let mut daemon = TestDaemon::start(&[("waits.toml", WAITS)]);
    let client = daemon.client().await;
    let mut live = client
        .events_subscribe(None, None, None, None, None, None)
        .await
        .expect("events.subscribe subscribes");
    let job_id = daemon.submit("waits", &[]);
    let mut seen: Vec<Event> = Vec::new();
    while !seen
        .iter()
        .any(|e| e.kind == "activity.started" && e.activity.as_deref() == Some("waits.p.wait"))
    {
        let event = next_event!(live, &seen).expect("the stream stays open while the daemon runs");
        seen.push(event);
    }
    assert_eq!(
        kinds_of(&seen, job_id),
        ["job.submitted", "job.started", "activity.started"],
        "{seen:#?}"
    );
    let last = seen.last().map(|e| e.id).expect("events seen");

    daemon.kill9();
    // The cut-off subscriber's stream ends.
    while next_event!(live, &seen).is_some() {}
    std::fs::write(daemon.dir().join("go"), "").expect("the go file can be written");
    daemon.launch();
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");

    let client = daemon.client().await;
    let mut resumed = client
        .events_subscribe(Some(last), None, None, None, None, None)
        .await
        .expect("events.subscribe resumes");
    let mut after: Vec<Event> = Vec::new();
    while !after.iter().any(|e| e.kind == "job.finished") {
        let event = next_event!(resumed, &after).expect("the stream stays open");
        after.push(event);
    }
    assert!(
        after.iter().any(|e| e.kind == "daemon.recovered"),
        "{after:#?}"
    );
    assert_eq!(
        kinds_of(&after, job_id),
        [
            "activity.started",
            "activity.succeeded",
            "activity.started",
            "activity.succeeded",
            "job.succeeded",
            "job.finished"
        ],
        "the rerun of p.wait, then q.after, then the end: {after:#?}"
    );
    let mut ids: Vec<u64> = seen.iter().chain(&after).map(|e| e.id).collect();
    let expected: Vec<u64> = all_events(&daemon, &[]).iter().map(|e| e.id).collect();
    assert_eq!(ids, expected, "no gap, no duplicate");
    ids.dedup();
    assert_eq!(ids.len(), expected.len());
}

/// `hfctl events -f` prints events as they happen and, when the daemon
/// restarts, reconnects and goes on after the last one it printed: each
/// event once.
#[test]
fn hfctl_events_follow_goes_on_across_a_restart() {
    let mut daemon = TestDaemon::start(&[("quick.toml", QUICK)]);
    let mut follower = daemon.hfctl_spawn(&["events", "-f", "--since", "0"]);
    let stdout = follower.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed: Vec<String> = Vec::new();
    // Until the line of `job`'s `job.finished` was printed.
    let wait_finished = |printed: &mut Vec<String>, job: u64| {
        let needle = format!(" job {job} ");
        while !printed
            .iter()
            .any(|l| l.contains("job.finished") && l.contains(&needle))
        {
            let line = lines
                .recv_timeout(EVENT_WAIT)
                .unwrap_or_else(|_| panic!("no job.finished of job {job}; printed {printed:#?}"));
            printed.push(line);
        }
    };
    let first = daemon.submit("quick", &[]);
    daemon.wait_done(first);
    wait_finished(&mut printed, first);
    daemon.restart();
    let second = daemon.submit("quick", &[]);
    daemon.wait_done(second);
    wait_finished(&mut printed, second);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(follower.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = finish_child_output(follower, HFCTL_TIMEOUT);

    let ids: Vec<u64> = printed
        .iter()
        .map(|l| {
            l.split_whitespace()
                .next()
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("a line starts with its event id: {l}"))
        })
        .collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "no event printed twice: {printed:#?}"
    );
    for job in [first, second] {
        for kind in ["job.submitted", "job.succeeded", "job.finished"] {
            assert!(
                printed
                    .iter()
                    .any(|l| l.contains(kind) && l.contains(&format!("job {job} "))),
                "{kind} of job {job}: {printed:#?}"
            );
        }
    }
}

const REFUSED: &str = r#"
[params.date]
type = "date"
required = true

[schedule.acme]
cron = "0 0 0 1 1 *"
tenants = ["acme"]

[schedule.globex]
cron = "0 0 0 1 1 *"
tenants = ["globex"]

[schedule.timed]
cron = "* * * * * *"
tenants = ["acme"]

[process.p.activity.a]
command = ["true"]
"#;

/// A schedule trigger whose job is refused (a required parameter the
/// tenant does not give) exits non-zero with the field and its reason; the
/// refusal is recorded on the schedule (`hfctl schedules`), raised as
/// `schedule.refused` and audited as the schedule's; a timed fire's refusal
/// too. A scheduled submission that works is audited by `schedule:...`.
#[test]
fn refused_schedule_fires_are_reported_recorded_raised_and_audited() {
    let mut daemon = TestDaemon::prepare(None, &[("billing.toml", REFUSED)]);
    daemon.write_tenant("acme", "[params]\n");
    daemon.write_tenant("globex", "[params]\ndate = \"2026-12-04\"\n");
    daemon.launch();

    let output = daemon.hfctl(&["schedule", "trigger", "billing.acme"]);
    assert!(!output.status.success(), "{}", shown(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tenant acme") && stderr.contains("date"),
        "the per-field reason: {}",
        shown(&output)
    );

    let listed = daemon.hfctl_json(&["schedules"]);
    let acme = listed
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == "acme"))
        .unwrap_or_else(|| panic!("billing.acme is listed: {listed:#}"));
    assert!(
        acme["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("date")),
        "{acme:#}"
    );
    let table = daemon.hfctl(&["schedules"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("billing.acme: last fire refused"),
        "{}",
        shown(&table)
    );

    let ok = daemon.hfctl_json(&["schedule", "trigger", "billing.globex"]);
    let job_id = ok["last_job"]
        .as_u64()
        .unwrap_or_else(|| panic!("the trigger reports its job: {ok:#}"));

    let audit = daemon.hfctl_json(&["audit", "--limit", "100"]);
    let rows = audit.as_array().expect("audit rows");
    let by = |user: &str, outcome: &str| -> Option<&Value> {
        rows.iter()
            .find(|r| r["user"] == user && r["outcome"] == outcome && r["method"] == "job.submit")
    };
    let refused = by("schedule:billing.acme", "refused")
        .unwrap_or_else(|| panic!("the refusal is audited: {audit:#}"));
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("date")),
        "{refused:#}"
    );
    let submitted = by("schedule:billing.globex", "ok")
        .unwrap_or_else(|| panic!("the scheduled submission is audited: {audit:#}"));
    assert_eq!(
        submitted["detail"],
        format!("job {job_id}"),
        "{submitted:#}"
    );

    // A timed fire that is refused is recorded and raised as well.
    eventually(EVENT_WAIT, "billing.timed to record its refusal", || {
        let listed = daemon.hfctl_json(&["schedules"]);
        let timed = listed
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == "timed").cloned())
            .unwrap_or_default();
        if timed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("date"))
        {
            Ok(())
        } else {
            Err(timed.to_string())
        }
    });
    let events = all_events(&daemon, &["--kind", "schedule.refused"]);
    for schedule in ["billing.acme", "billing.timed"] {
        assert!(
            events
                .iter()
                .any(|e| e.schedule.as_deref() == Some(schedule)
                    && e.error.as_deref().is_some_and(|t| t.contains("date"))),
            "{schedule}: {events:#?}"
        );
    }
}

const CONTINUES: &str = r#"
[process.p.activity.flaky]
command = ["false"]
on_failure = "continue"

[process.q]
after = ["p"]

[process.q.activity.report]
shell = "echo 'alert rows missing' >&3"
"#;

/// Alerts are events too: an activity that fails with `on_failure =
/// "continue"` and an `alert` on the control channel each raise
/// `job.alert` (after the activity's own event), and the job succeeds.
#[test]
fn alerts_raise_job_alert_events() {
    let daemon = TestDaemon::start(&[("continues.toml", CONTINUES)]);
    let job_id = daemon.submit("continues", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let events = all_events(&daemon, &[]);
    let kinds = kinds_of(&events, job_id);
    let failed_at = kinds.iter().position(|k| *k == "activity.failed");
    let first_alert = kinds.iter().position(|k| *k == "job.alert");
    assert!(failed_at < first_alert && failed_at.is_some(), "{kinds:?}");
    let alerts: Vec<&Event> = events.iter().filter(|e| e.kind == "job.alert").collect();
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert!(
        alerts[1].error.as_deref() == Some("rows missing"),
        "{alerts:#?}"
    );
    let end = events
        .iter()
        .find(|e| e.kind == "job.succeeded")
        .expect("job.succeeded");
    assert_eq!(end.alerts, Some(2), "{end:#?}");
}
