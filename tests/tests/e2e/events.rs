//! Events: the outbox committed with each transition (it survives a kill -9
//! right after the transition is visible), `events.subscribe` replaying
//! after `since` and following without gap or duplicate across a restart,
//! `hfctl events` and `-f`, and refused schedule fires made visible.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc;
use std::time::Duration;

use holdfast_api::rpc::HoldfastClient;
use holdfast_api::{Event, JobState};
use holdfast_tests::{HFCTL_TIMEOUT, TestDaemon, eventually, finish_child_output};
use serde_json::Value;

use crate::support::{activity, shown};

/// Longest a test waits for one event.
const EVENT_WAIT: Duration = Duration::from_secs(30);

const FAILS: &str = r#"
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

/// A webhook receiver: Python's http.server on 127.0.0.1, appending one
/// JSON line per request (the body, the event id header, whether the
/// HMAC-SHA256 signature matches the secret file) to a file.
const RECEIVER: &str = r#"
import hashlib, hmac, http.server, json, sys
port, out, secret_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
secret = open(secret_path, "rb").read().rstrip()
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        got = self.headers.get("X-Holdfast-Signature", "")
        record = {"signature_ok": hmac.compare_digest(want, got),
                  "event_id": self.headers.get("X-Holdfast-Event-Id"),
                  "body": json.loads(body)}
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Hook).serve_forever()
"#;

/// A child process killed when the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lines_of(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn deliveries(daemon: &TestDaemon, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["notifications"];
    args.extend_from_slice(extra);
    daemon
        .hfctl_json(&args)
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("`hfctl --json notifications` is a list"))
}

/// A job fails while the webhook receiver is down: the webhook delivery is
/// retried (and listed as such), the exec hook gets the event on its stdin
/// at once. The daemon is killed -9 before the webhook was delivered; the
/// receiver comes up, the daemon starts again, and the receiver gets the
/// event once, signed with HMAC-SHA256 of the secret file, with the event
/// id in the payload and header.
#[test]
fn notifications_are_delivered_at_least_once_across_kill_9_and_a_receiver_that_was_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let settings = format!(
        r#"
[notify.chat]
on = ["job.failed"]
webhook = {{ url = "http://127.0.0.1:{port}/hook", secret_file = "@DIR@/hook.secret" }}
retry_delay = "100ms"
max_retry_delay = "300ms"

[notify.pager]
on = ["job.failed"]
chains = ["night*"]
exec = ["@DIR@/page.sh"]
"#
    );
    let mut daemon = TestDaemon::prepare(Some(&settings), &[("nightly.toml", FAILS)]);
    let dir = daemon.dir().to_path_buf();
    std::fs::write(dir.join("hook.secret"), "s3cret\n").expect("secret file");
    let hook = dir.join("page.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >> {0}/paged; echo >> {0}/paged\n",
            dir.display()
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    daemon.launch();

    let job_id = daemon.submit("nightly", &[]);
    daemon.wait_done(job_id);
    let paged = dir.join("paged");
    let (paged_events, _) = eventually(EVENT_WAIT, "the exec hook to get the event", || {
        let events = lines_of(&paged);
        if events.is_empty() {
            Err("nothing yet".to_string())
        } else {
            Ok(events)
        }
    });
    assert_eq!(paged_events.len(), 1, "{paged_events:#?}");
    assert_eq!(paged_events[0]["kind"], "job.failed");
    assert_eq!(paged_events[0]["job_id"], job_id);
    let (trouble, _) = eventually(EVENT_WAIT, "the webhook to be retried", || {
        let listed = deliveries(&daemon, &["--failed"]);
        match listed.iter().find(|d| d["rule"] == "chat") {
            Some(d) if d["attempts"].as_u64().unwrap_or(0) >= 2 => Ok(d.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(trouble["state"], "pending", "{trouble:#}");
    assert!(
        trouble["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach")),
        "{trouble:#}"
    );

    daemon.kill9();
    let received = dir.join("received");
    let _receiver = Killed(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(RECEIVER)
            .arg(port.to_string())
            .arg(&received)
            .arg(dir.join("hook.secret"))
            .spawn()
            .expect("python3 runs"),
    );
    eventually(EVENT_WAIT, "the receiver to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).map(drop)
    });
    daemon.launch();
    let (delivered, _) = eventually(EVENT_WAIT, "the webhook to be delivered", || {
        let listed = deliveries(&daemon, &[]);
        match listed.iter().find(|d| d["rule"] == "chat") {
            Some(d) if d["state"] == "delivered" => Ok(d.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(delivered["delivered_at"].is_string(), "{delivered:#}");
    let got = lines_of(&received);
    assert_eq!(got.len(), 1, "delivered once: {got:#?}");
    assert_eq!(got[0]["signature_ok"], true, "{got:#?}");
    assert_eq!(got[0]["body"]["kind"], "job.failed");
    assert_eq!(got[0]["body"]["job_id"], job_id);
    assert_eq!(got[0]["event_id"], got[0]["body"]["id"].to_string());
    assert_eq!(lines_of(&paged).len(), 1, "the exec hook ran once");

    let table = daemon.hfctl(&["notifications"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("chat") && text.contains("delivered"),
        "{text}"
    );
}

/// A hook that fails is tried `max_attempts` times, then listed as failed;
/// `hfctl notifications retry` delivers it again. A rule that can never
/// work (an unreadable secret file) stops the daemon from starting.
#[test]
fn failed_notifications_can_be_retried_and_impossible_rules_are_load_errors() {
    let settings = r#"
[notify.broken]
on = ["job.failed"]
exec = ["/bin/false"]
max_attempts = 2
retry_delay = "50ms"
"#;
    let daemon = TestDaemon::start_with(settings, &[("nightly.toml", FAILS)]);
    let job_id = daemon.submit("nightly", &[]);
    daemon.wait_done(job_id);
    let (failed, _) = eventually(EVENT_WAIT, "the delivery to fail", || {
        let listed = deliveries(&daemon, &["--failed"]);
        match listed.first() {
            Some(d) if d["state"] == "failed" => Ok(d.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(failed["attempts"], 2, "{failed:#}");
    let id = failed["id"].as_u64().expect("an id").to_string();
    let retried = daemon.hfctl(&["notifications", "retry", &id]);
    assert!(retried.status.success(), "{}", shown(&retried));
    eventually(EVENT_WAIT, "the retried delivery to be attempted", || {
        let listed = deliveries(&daemon, &["--failed"]);
        match listed.first() {
            Some(d) if d["state"] == "failed" && d["attempts"] == 3 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    let mut bad = TestDaemon::prepare(
        Some(
            r#"
[notify.chat]
on = ["job.failed"]
webhook = { url = "http://127.0.0.1:9/hook", secret_file = "/nonexistent/hook.secret" }
"#,
        ),
        &[],
    );
    let error = bad
        .try_launch()
        .expect_err("a rule with an unreadable secret file is a load error");
    let log = bad.log_tail();
    assert!(
        log.contains("[notify.chat]") && log.contains("secret_file"),
        "{error}\n{log}"
    );
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

/// Retrying a notification is for operators: a member is refused (exit 7)
/// and the delivery stays as it was; an operator's retry is let through. A
/// member reads events as it reads jobs (every caller on the socket does).
#[test]
fn retrying_notifications_is_for_operators_and_members_read_events() {
    let Some(accounts) = crate::users::accounts_or_skip(
        "retrying_notifications_is_for_operators_and_members_read_events",
    ) else {
        return;
    };
    let settings = r#"
socket_group = "hft-sock"
operator_groups = ["hft-ops"]
run_as_default = "hft-runas"

[notify.broken]
on = ["job.failed"]
exec = ["/bin/false"]
max_attempts = 1
"#;
    let daemon =
        holdfast_tests::users::SystemDaemon::start(settings, &[("nightly.toml", FAILS)], &[]);
    let socket = daemon.socket();
    let job_id = daemon.submit("nightly", &[]);
    daemon.wait_done(job_id);
    let (failed, _) = eventually(EVENT_WAIT, "the delivery to fail", || {
        match deliveries(&daemon, &["--failed"]).first() {
            Some(d) if d["state"] == "failed" => Ok(d.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    let id = failed["id"].as_u64().expect("an id").to_string();

    let (member, operator) = (&accounts.member, &accounts.operator);
    let line = crate::users::denied(
        &member.hfctl(socket, &["notifications", "retry", &id]),
        "`hfctl notifications retry` by a member",
    );
    assert!(line.contains("operator"), "{line}");
    assert_eq!(
        deliveries(&daemon, &["--failed"]).first(),
        Some(&failed),
        "a refused retry changes nothing"
    );
    let output = member.hfctl(socket, &["--json", "events", "--kind", "job.failed"]);
    assert!(output.status.success(), "{}", shown(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!("\"job_id\":{job_id}")),
        "{}",
        shown(&output)
    );
    let retried = operator.hfctl(socket, &["notifications", "retry", &id]);
    assert!(retried.status.success(), "{}", shown(&retried));
}

/// A rule with `coalesce` sends one digest for the events of its window
/// instead of one notification each: 40 failing jobs, a handful of digests
/// at most (one when the machine keeps up), every event in exactly one.
#[test]
fn coalesce_sends_digests_instead_of_one_notification_per_event() {
    const JOBS: usize = 40;
    let settings = r#"
[notify.digest]
on = ["job.failed"]
exec = ["@DIR@/page.sh"]
coalesce = "3s"
"#;
    let mut daemon = TestDaemon::prepare(Some(settings), &[("nightly.toml", FAILS)]);
    let dir = daemon.dir().to_path_buf();
    let hook = dir.join("page.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat >> {0}/paged; echo >> {0}/paged\n",
            dir.display()
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    daemon.launch();
    let mut jobs = BTreeSet::new();
    for _ in 0..JOBS {
        let answer = holdfast_tests::http::rpc_call(
            daemon.socket(),
            "job.submit",
            serde_json::json!({"target": "nightly"}),
        );
        jobs.insert(
            answer["result"]["job_id"]
                .as_u64()
                .unwrap_or_else(|| panic!("submitted: {answer}")),
        );
    }
    let paged = dir.join("paged");
    let (digests, _) = eventually(Duration::from_secs(60), "every failure in a digest", || {
        let digests = lines_of(&paged);
        let count: u64 = digests.iter().filter_map(|d| d["count"].as_u64()).sum();
        if count as usize >= JOBS {
            Ok(digests)
        } else {
            Err(format!("{count} events in {} digests", digests.len()))
        }
    });
    assert!(
        digests.len() <= 4,
        "{} digests for {JOBS} jobs",
        digests.len()
    );
    let mut seen = BTreeSet::new();
    for digest in &digests {
        assert_eq!(digest["kind"], "digest", "{digest:#}");
        assert_eq!(digest["rule"], "digest", "{digest:#}");
        let events = digest["events"].as_array().expect("events");
        assert_eq!(digest["count"].as_u64(), Some(events.len() as u64));
        for event in events {
            assert_eq!(event["kind"], "job.failed", "{event:#}");
            assert!(
                seen.insert(event["job_id"].as_u64().expect("job id")),
                "each event once: {event:#}"
            );
        }
    }
    assert_eq!(seen, jobs, "every failure was in a digest");
}

/// An SMTP server: Python's smtpd on 127.0.0.1, appending one JSON line per
/// mail (sender, recipients, the message) to a file.
const SMTP_SERVER: &str = r#"
import asyncore, json, sys, warnings
warnings.simplefilter("ignore")
import smtpd
port, out = int(sys.argv[1]), sys.argv[2]
class Server(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        if isinstance(data, bytes):
            data = data.decode()
        with open(out, "a") as f:
            f.write(json.dumps({"from": mailfrom, "to": rcpttos, "data": data}) + "\n")
Server(("127.0.0.1", port), None)
asyncore.loop()
"#;

/// A mail rule sends a readable mail with the facts of the event through
/// a real SMTP server process; a mail rule without `[smtp]` is a load
/// error.
#[test]
fn mail_rules_send_a_readable_mail_through_the_smtp_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut daemon = TestDaemon::prepare(
        Some(&format!(
            r#"
[smtp]
host = "127.0.0.1"
port = {port}
from = "holdfast@test.example"

[notify.ops]
on = ["job.failed"]
mail = {{ to = ["ops@example.com", "dba@example.com"] }}
"#
        )),
        &[("nightly.toml", FAILS)],
    );
    let received = daemon.dir().join("mails");
    let _server = Killed(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(SMTP_SERVER)
            .arg(port.to_string())
            .arg(&received)
            .spawn()
            .expect("python3 runs"),
    );
    eventually(EVENT_WAIT, "the SMTP server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).map(drop)
    });
    daemon.launch();
    let job_id = daemon.submit("nightly", &[]);
    let job = daemon.wait_done(job_id);
    let error_id = activity(&job, "load.facts").attempts[0]
        .error_id
        .clone()
        .expect("an error id");
    let (mails, _) = eventually(EVENT_WAIT, "the mail to arrive", || {
        let mails = lines_of(&received);
        if mails.is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(mails)
        }
    });
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let mail = &mails[0];
    assert_eq!(mail["from"], "holdfast@test.example");
    assert_eq!(
        mail["to"],
        serde_json::json!(["ops@example.com", "dba@example.com"])
    );
    let data = mail["data"].as_str().expect("the message");
    for fact in [
        format!("Subject: [holdfast] job.failed: job {job_id} (nightly)"),
        "nightly.load.facts".to_string(),
        error_id,
        format!("hfctl status {job_id}"),
    ] {
        assert!(data.contains(&fact), "the mail says {fact:?}:\n{data}");
    }

    let mut bad = TestDaemon::prepare(
        Some("[notify.ops]\non = [\"job.failed\"]\nmail = { to = [\"ops@example.com\"] }\n"),
        &[],
    );
    let error = bad
        .try_launch()
        .expect_err("a mail rule without [smtp] is a load error");
    let log = bad.log_tail();
    assert!(
        log.contains("[notify.ops]") && log.contains("[smtp]"),
        "{error}\n{log}"
    );
}
