//! Handlers (`[handler.on_failure]`, ...): they run once the job's graph is
//! done, see its outcome, roll back with `undoes` so `hfctl retry` runs the
//! rolled-back work again, survive a crash, answer cancels; `retry --from`;
//! and the error itself (`error_tail`, the `error` control message).

use std::fs;
use std::path::Path;
use std::time::Duration;

use holdfast_api::{ActivityState, AttemptState, Job, JobState};
use holdfast_tests::TestDaemon;
use holdfast_tests::poll::eventually;

use crate::support::{activity, shown};

/// The lines of a file the activities append to; empty when it is absent.
fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `hfctl --json retry JOB ARGS... --wait`, required to exit 0.
fn retry_wait(daemon: &TestDaemon, job_id: u64, extra: &[&str]) -> Job {
    let id = job_id.to_string();
    let mut args = vec!["--json", "retry", id.as_str(), "--wait"];
    args.extend_from_slice(extra);
    let output = daemon.hfctl(&args);
    assert!(output.status.success(), "{}", shown(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", shown(&output)))
}

/// Load writes rows to a file-backed table, upload fails while
/// `upload-broken` exists, and the on_failure handler empties the table.
const ROLLBACK: &str = r#"
[defaults]
retries = 0

[process.load.activity.facts]
shell = "echo row1 >> @DIR@/table; echo row2 >> @DIR@/table; echo run >> @DIR@/load-runs"

[process.upload]
after = ["load"]

[process.upload.activity.send]
shell = "if [ -e @DIR@/upload-broken ]; then echo 'upload refused'; exit 1; fi; cp @DIR@/table @DIR@/uploaded"

[handler.on_failure.activity.rollback]
shell = ": > @DIR@/table"
undoes = ["load"]
"#;

/// The issue's scenario: a rollback handler that `undoes` the load makes
/// `hfctl retry` load again, so the retried job ends with the rows in the
/// table. Without handlers (or without `undoes`, keeping the load as
/// succeeded) the retried job "succeeds" with an empty table.
#[test]
fn a_rollback_handler_undoes_the_load_and_retry_loads_again() {
    let daemon = TestDaemon::start(&[("etl.toml", ROLLBACK)]);
    let dir = daemon.dir().to_path_buf();
    fs::write(dir.join("upload-broken"), "").expect("the test directory is writable");

    let first = daemon.submit("etl", &[]);
    let job = daemon.wait_done(first);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let rollback = activity(&job, "on_failure.rollback");
    assert_eq!(rollback.state, ActivityState::Succeeded, "{rollback:#?}");
    assert_eq!(
        rollback.handler.as_deref(),
        Some("on_failure"),
        "{rollback:#?}"
    );
    let facts = activity(&job, "load.facts");
    assert_eq!(facts.state, ActivityState::Succeeded, "{facts:#?}");
    assert!(facts.undone, "the rollback undid the load: {facts:#?}");
    assert!(
        lines(&dir.join("table")).is_empty(),
        "the rollback emptied the table"
    );
    let text = daemon.hfctl(&["status", &first.to_string()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("handlers") && l.contains("for failed")),
        "{text}"
    );
    assert!(text.contains("succeeded (undone)"), "{text}");

    fs::remove_file(dir.join("upload-broken")).expect("the test directory is writable");
    let again = retry_wait(&daemon, first, &[]);
    assert_eq!(again.state, JobState::Succeeded, "{again:#?}");
    let facts = activity(&again, "load.facts");
    assert_eq!(
        facts.attempts.len(),
        1,
        "the undone load ran again: {facts:#?}"
    );
    assert_eq!(lines(&dir.join("load-runs")).len(), 2);
    assert_eq!(
        lines(&dir.join("table")),
        ["row1", "row2"],
        "the table holds the rows"
    );
    assert_eq!(lines(&dir.join("uploaded")), ["row1", "row2"]);
    let rollback = activity(&again, "on_failure.rollback");
    assert_eq!(
        rollback.state,
        ActivityState::Skipped,
        "on_failure does not answer a success: {rollback:#?}"
    );
}

const ORDER: &str = r#"
[process.work.activity.one]
shell = "echo work >> @DIR@/order"

[handler.on_exit.activity.last]
env = { STATE = "{{ job.state }}" }
shell = "echo exit $STATE $HF_JOB_STATE >> @DIR@/order"

[handler.on_success]
mode = "serial"

[handler.on_success.activity.a]
shell = "sleep 0.2; echo success-a $HF_JOB_STATE >> @DIR@/order"

[handler.on_success.activity.b]
shell = "echo success-b >> @DIR@/order"

[handler.on_failure.activity.never]
shell = "echo failure >> @DIR@/order"
"#;

/// on_success runs after the graph (its serial activities in order), then
/// on_exit, always last; on_failure does not run for a success. Both see
/// the outcome in templates and `HF_JOB_STATE`.
#[test]
fn on_success_runs_then_on_exit_last() {
    let daemon = TestDaemon::start(&[("order.toml", ORDER)]);
    let id = daemon.submit("order", &[]);
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(
        lines(&daemon.dir().join("order")),
        [
            "work",
            "success-a succeeded",
            "success-b",
            "exit succeeded succeeded"
        ]
    );
    let never = activity(&job, "on_failure.never");
    assert_eq!(never.state, ActivityState::Skipped, "{never:#?}");
    assert_eq!(job.alerts, 0, "{job:#?}");
}

const SEES: &str = r#"
[defaults]
retries = 0

[process.extract.activity.orders]
shell = "echo 'output {\"rows\": 42}' >&3"

[process.load]
after = ["extract"]

[process.load.activity.facts]
shell = "echo connecting; echo 'ORA-01555: snapshot too old'; exit 1"

[handler.on_failure.activity.report]
env = { FAILED = "{{ job.failed | tojson }}", ERRORS = "{{ job.errors | tojson }}", ROWS = "{{ outputs.extract.orders.rows }}", LOADED = "{{ outputs.load.facts.rows | default(7) }}" }
shell = '''
printf '%s\n' "$HF_JOB_STATE" "$HF_FAILED" "$FAILED" "$ROWS" "$LOADED" > @DIR@/seen
printf '%s' "$ERRORS" > @DIR@/errors.json
'''
"#;

/// A handler sees the outcome: the state, the failed activities' paths,
/// their error ids with the last lines of their output, and the outputs
/// produced so far (with a default for one that was not).
#[test]
fn a_handler_sees_state_failed_paths_errors_and_outputs() {
    let daemon = TestDaemon::start(&[("sees.toml", SEES)]);
    let id = daemon.submit("sees", &[]);
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let seen = lines(&daemon.dir().join("seen"));
    assert_eq!(
        seen,
        [
            "failed",
            "sees.load.facts",
            r#"["sees.load.facts"]"#,
            "42",
            "7"
        ],
        "{job:#?}"
    );
    let errors: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(daemon.dir().join("errors.json"))
            .expect("the handler wrote errors.json"),
    )
    .expect("job.errors renders as JSON");
    let facts = activity(&job, "load.facts");
    let error_id = facts.attempts[0]
        .error_id
        .clone()
        .expect("a failure has an error id");
    assert_eq!(errors[0]["path"], "sees.load.facts", "{errors}");
    assert_eq!(errors[0]["error_id"], error_id.as_str(), "{errors}");
    assert!(
        errors[0]["error_tail"]
            .as_str()
            .is_some_and(|t| t.ends_with("ORA-01555: snapshot too old")),
        "{errors}"
    );
}

const FAILING_HANDLER: &str = r#"
[defaults]
retries = 0

[params.fail]
type = "bool"
default = false

[process.work.activity.one]
env = { FAIL = "{{ params.fail }}" }
shell = "[ \"$FAIL\" = false ]"

[handler.on_success.activity.broken]
shell = "exit 4"

[handler.on_failure.activity.broken]
shell = "exit 5"
"#;

/// A failed handler adds an alert and never changes the job's state: a
/// succeeded job stays succeeded, a failed one stays failed.
#[test]
fn a_failing_handler_adds_an_alert_and_leaves_the_state() {
    let daemon = TestDaemon::start(&[("fh.toml", FAILING_HANDLER)]);
    let ok = daemon.submit("fh", &[]);
    let job = daemon.wait_done(ok);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.alerts, 1, "{job:#?}");
    assert!(
        job.last_alert
            .as_deref()
            .is_some_and(|a| a.contains("fh.on_success.broken")),
        "{job:#?}"
    );
    assert_eq!(
        activity(&job, "on_success.broken").state,
        ActivityState::Failed
    );

    let bad = daemon.submit("fh", &["-p", "fail=true"]);
    let job = daemon.wait_done(bad);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!(job.alerts, 1, "{job:#?}");
    assert_eq!(
        activity(&job, "on_failure.broken").state,
        ActivityState::Failed
    );
}

const CRASH: &str = r#"
[process.work.activity.one]
shell = "echo run >> @DIR@/work-runs"

[handler.on_success.activity.clean]
shell = "echo start >> @DIR@/clean-runs; while [ ! -e @DIR@/go ]; do sleep 0.05; done; echo end >> @DIR@/clean-runs"

[handler.on_exit.activity.note]
shell = "echo note >> @DIR@/note-runs"
"#;

/// The decision to run a handler is committed before it starts: a daemon
/// killed with SIGKILL while the handler runs resumes it after a restart
/// (the interrupted attempt runs again), it ends once, on_exit runs once,
/// and the job's own activity is not run again.
#[test]
fn a_handler_interrupted_by_kill9_resumes_and_ends_once() {
    let mut daemon = TestDaemon::start(&[("crash.toml", CRASH)]);
    let dir = daemon.dir().to_path_buf();
    let id = daemon.submit("crash", &[]);
    eventually(Duration::from_secs(20), "the handler started", || {
        if lines(&dir.join("clean-runs")).is_empty() {
            Err("no start yet")
        } else {
            Ok(())
        }
    });
    daemon.kill9();
    daemon.restart();
    eventually(
        Duration::from_secs(20),
        "the handler started again",
        || match lines(&dir.join("clean-runs")).len() {
            2 => Ok(()),
            n => Err(format!("{n} lines")),
        },
    );
    fs::write(dir.join("go"), "").expect("the test directory is writable");
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(lines(&dir.join("clean-runs")), ["start", "start", "end"]);
    assert_eq!(lines(&dir.join("note-runs")), ["note"]);
    assert_eq!(lines(&dir.join("work-runs")), ["run"]);
    let clean = activity(&job, "on_success.clean");
    assert_eq!(
        clean.attempts[0].state,
        AttemptState::Interrupted,
        "{clean:#?}"
    );
    assert_eq!(clean.state, ActivityState::Succeeded, "{clean:#?}");
}

const CANCEL: &str = r#"
[process.work.activity.hold]
shell = "touch @DIR@/holding; sleep 30"

[handler.on_cancel.activity.clean]
shell = "echo $HF_JOB_STATE > @DIR@/cancel-seen; touch @DIR@/cleaning; sleep @SLEEP@; touch @DIR@/cleaned"

[handler.on_failure.activity.never]
shell = "touch @DIR@/failure"
"#;

fn wait_file(path: &Path) {
    eventually(
        Duration::from_secs(20),
        &format!("{} exists", path.display()),
        || {
            if path.exists() { Ok(()) } else { Err("absent") }
        },
    );
}

/// A cancel stops the job's activities, then runs on_cancel (which sees
/// `cancelled`); the job ends cancelled.
#[test]
fn a_cancel_runs_on_cancel() {
    let daemon = TestDaemon::start(&[("c.toml", &CANCEL.replace("@SLEEP@", "0"))]);
    let dir = daemon.dir().to_path_buf();
    let id = daemon.submit("c", &[]);
    wait_file(&dir.join("holding"));
    let cancel = daemon.hfctl(&["cancel", &id.to_string()]);
    assert!(cancel.status.success(), "{}", shown(&cancel));
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Cancelled, "{job:#?}");
    assert_eq!(
        activity(&job, "on_cancel.clean").state,
        ActivityState::Succeeded
    );
    assert_eq!(lines(&dir.join("cancel-seen")), ["cancelled"]);
    assert!(dir.join("cleaned").exists());
    assert!(!dir.join("failure").exists());
}

/// A second cancel stops the handlers too, long before they would end.
#[test]
fn a_second_cancel_stops_the_handlers() {
    let daemon = TestDaemon::start_with(
        "kill_grace = \"60s\"\n",
        &[("c.toml", &CANCEL.replace("@SLEEP@", "60"))],
    );
    let dir = daemon.dir().to_path_buf();
    let id = daemon.submit("c", &[]);
    wait_file(&dir.join("holding"));
    let cancel = daemon.hfctl(&["cancel", &id.to_string()]);
    assert!(cancel.status.success(), "{}", shown(&cancel));
    wait_file(&dir.join("cleaning"));
    let again = daemon.hfctl(&["cancel", &id.to_string()]);
    assert!(again.status.success(), "{}", shown(&again));
    let job = daemon.wait_for_within(id, "finished", Duration::from_secs(15), |j| {
        j.state.is_terminal()
    });
    assert_eq!(job.state, JobState::Cancelled, "{job:#?}");
    let job = daemon.status(id);
    assert_eq!(
        activity(&job, "on_cancel.clean").state,
        ActivityState::Cancelled
    );
    assert!(!dir.join("cleaned").exists());
}

/// After a cancel, the handlers get `kill_grace` and no more.
#[test]
fn on_cancel_is_bounded_by_kill_grace() {
    let daemon = TestDaemon::start_with(
        "kill_grace = \"1s\"\n",
        &[("c.toml", &CANCEL.replace("@SLEEP@", "60"))],
    );
    let dir = daemon.dir().to_path_buf();
    let id = daemon.submit("c", &[]);
    wait_file(&dir.join("holding"));
    let cancel = daemon.hfctl(&["cancel", &id.to_string()]);
    assert!(cancel.status.success(), "{}", shown(&cancel));
    let job = daemon.wait_for_within(id, "finished", Duration::from_secs(15), |j| {
        j.state.is_terminal()
    });
    assert_eq!(job.state, JobState::Cancelled, "{job:#?}");
    assert!(dir.join("cleaning").exists());
    assert!(!dir.join("cleaned").exists());
}

const STAGES: &str = r#"
[process.extract.activity.a]
shell = "echo extract >> @DIR@/runs"

[process.load]
after = ["extract"]

[process.load.activity.b]
shell = "echo load >> @DIR@/runs"

[process.report]
after = ["load"]

[process.report.activity.c]
shell = "echo report >> @DIR@/runs"
"#;

/// `hfctl retry JOB --from PROCESS` re-runs that process and everything
/// after it although they succeeded, and keeps what came before.
#[test]
fn retry_from_reruns_that_process_and_what_follows() {
    let daemon = TestDaemon::start(&[("stages.toml", STAGES)]);
    let id = daemon.submit("stages", &[]);
    assert_eq!(daemon.wait_done(id).state, JobState::Succeeded);
    let plain = daemon.hfctl(&["retry", &id.to_string()]);
    assert!(
        !plain.status.success(),
        "nothing to re-run: {}",
        shown(&plain)
    );
    let unknown = daemon.hfctl(&["retry", &id.to_string(), "--from", "lod"]);
    assert!(!unknown.status.success(), "{}", shown(&unknown));
    assert!(
        shown(&unknown).contains("no process \"lod\""),
        "{}",
        shown(&unknown)
    );

    let again = retry_wait(&daemon, id, &["--from", "load"]);
    assert_eq!(again.state, JobState::Succeeded, "{again:#?}");
    assert!(activity(&again, "extract.a").attempts.is_empty(), "kept");
    assert_eq!(activity(&again, "load.b").attempts.len(), 1);
    assert_eq!(activity(&again, "report.c").attempts.len(), 1);
    assert_eq!(
        lines(&daemon.dir().join("runs")),
        ["extract", "load", "report", "load", "report"]
    );
}

const ORA: &str = r#"
[params.password]
type = "string"
secret = true

[process.load.activity.facts]
retries = 0
shell = '''
for i in $(seq 1 50); do echo "line $i"; done
echo "login with $HF_PARAM_PASSWORD refused" >&2
@BIN@/hfctl emit error ORA-01555 seen by "$HF_PARAM_PASSWORD"
echo "ORA-01555: snapshot too old"
exit 1
'''
"#;

/// A failed attempt keeps the last 20 lines of its output, secrets masked,
/// as `error_tail`, and what it said with `hfctl emit error` (masked too);
/// `hfctl status` shows both, so the cause is seen without the log.
#[test]
fn error_tail_and_error_message_are_shown_by_status() {
    let daemon = TestDaemon::start(&[("ora.toml", ORA)]);
    let id = daemon.submit("ora", &["-p", "password=hf-pw-81723"]);
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let attempt = &activity(&job, "load.facts").attempts[0];
    let tail = attempt.error_tail.as_deref().expect("an error tail");
    let tail_lines: Vec<&str> = tail.lines().collect();
    assert_eq!(tail_lines.len(), 20, "{tail}");
    assert_eq!(tail_lines[19], "ORA-01555: snapshot too old", "{tail}");
    assert!(tail.contains("login with *** refused"), "{tail}");
    assert_eq!(tail_lines[0], "line 33", "{tail}");
    assert_eq!(
        attempt.error_message.as_deref(),
        Some("ORA-01555 seen by ***"),
        "{attempt:#?}"
    );
    let status = daemon.hfctl(&["status", &id.to_string()]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("| ORA-01555: snapshot too old"), "{text}");
    assert!(text.contains("said: ORA-01555 seen by ***"), "{text}");
    assert!(!text.contains("hf-pw-81723"), "{text}");
}

/// The example chain `etc/workflows.d/rollback-demo.toml` loads and runs as
/// its comment says: a failed upload is rolled back, the retry loads again.
#[test]
fn the_rollback_example_runs_as_documented() {
    let example = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/workflows.d/rollback-demo.toml"),
    )
    .expect("the example chain is readable");
    let daemon = TestDaemon::start(&[("rollback-demo.toml", &example)]);
    let dir = daemon.dir().join("demo");
    fs::create_dir_all(&dir).expect("the test directory is writable");
    fs::write(dir.join("remote-down"), "").expect("the test directory is writable");
    let param = format!("dir={}", dir.display());
    let id = daemon.submit("rollback-demo", &["-p", &param]);
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert!(lines(&dir.join("table")).is_empty(), "rolled back");
    let send = &activity(&job, "upload.send").attempts[0];
    assert_eq!(
        send.error_message.as_deref(),
        Some("remote down"),
        "{send:#?}"
    );
    fs::remove_file(dir.join("remote-down")).expect("the test directory is writable");
    let again = retry_wait(&daemon, id, &[]);
    assert_eq!(again.state, JobState::Succeeded, "{again:#?}");
    assert_eq!(lines(&dir.join("uploaded")), ["row1", "row2"]);
}

const QUEUED: &str = r#"
[chain]
concurrency = 1

[process.work.activity.hold]
shell = "touch @DIR@/holding-$HF_JOB_ID; while [ ! -e @DIR@/go ]; do sleep 0.05; done"

[handler.on_cancel.activity.clean]
shell = "touch @DIR@/cancel-$HF_JOB_ID"

[handler.on_exit.activity.note]
shell = "touch @DIR@/exit-$HF_JOB_ID"
"#;

/// A job cancelled while queued ran nothing, so its handlers are skipped;
/// a dry run lists handlers after the job's own activities, on_exit last.
#[test]
fn a_job_cancelled_while_queued_runs_no_handler_and_plans_list_handlers_last() {
    let daemon = TestDaemon::start(&[("q.toml", QUEUED)]);
    let dir = daemon.dir().to_path_buf();
    let first = daemon.submit("q", &[]);
    wait_file(&dir.join(format!("holding-{first}")));
    let second = daemon.submit("q", &[]);
    let cancel = daemon.hfctl(&["cancel", &second.to_string()]);
    assert!(cancel.status.success(), "{}", shown(&cancel));
    let job = daemon.wait_done(second);
    assert_eq!(job.state, JobState::Cancelled, "{job:#?}");
    for path in ["on_cancel.clean", "on_exit.note"] {
        assert_eq!(
            activity(&job, path).state,
            ActivityState::Skipped,
            "{job:#?}"
        );
    }
    fs::write(dir.join("go"), "").expect("the test directory is writable");
    assert_eq!(daemon.wait_done(first).state, JobState::Succeeded);
    assert!(dir.join(format!("exit-{first}")).exists());
    assert!(!dir.join(format!("cancel-{first}")).exists());
    assert!(!dir.join(format!("exit-{second}")).exists());
    assert!(!dir.join(format!("cancel-{second}")).exists());

    let plan = daemon.hfctl_json(&["submit", "q", "--dry-run"]);
    let waves: Vec<Vec<String>> = plan["waves"]
        .as_array()
        .expect("waves is an array")
        .iter()
        .map(|w| {
            w.as_array()
                .expect("a wave is an array")
                .iter()
                .map(|a| a["path"].as_str().expect("a path").to_string())
                .collect()
        })
        .collect();
    assert_eq!(
        waves,
        [["q.work.hold"], ["q.on_cancel.clean"], ["q.on_exit.note"]],
        "{plan:#}"
    );
}

/// A daemon killed while on_cancel runs resumes it after a restart, still
/// bounded by `kill_grace`: the committed outcome says the job was
/// cancelled.
#[test]
fn on_cancel_resumed_after_kill9_is_still_bounded_by_kill_grace() {
    let mut daemon = TestDaemon::start_with(
        "kill_grace = \"2s\"\n",
        &[("c.toml", &CANCEL.replace("@SLEEP@", "60"))],
    );
    let dir = daemon.dir().to_path_buf();
    let id = daemon.submit("c", &[]);
    wait_file(&dir.join("holding"));
    let cancel = daemon.hfctl(&["cancel", &id.to_string()]);
    assert!(cancel.status.success(), "{}", shown(&cancel));
    wait_file(&dir.join("cleaning"));
    daemon.kill9();
    fs::remove_file(dir.join("cleaning")).expect("the test directory is writable");
    daemon.restart();
    wait_file(&dir.join("cleaning"));
    let job = daemon.wait_for_within(id, "finished", Duration::from_secs(15), |j| {
        j.state.is_terminal()
    });
    assert_eq!(job.state, JobState::Cancelled, "{job:#?}");
    let job = daemon.status(id);
    let clean = activity(&job, "on_cancel.clean");
    assert_eq!(clean.state, ActivityState::Cancelled, "{clean:#?}");
    assert_eq!(clean.attempts.len(), 2, "{clean:#?}");
    assert!(!dir.join("cleaned").exists());
}

/// A handler's activity runs as its `user`, like any activity, with the
/// outcome in its environment. Needs real users (`HOLDFAST_USERS_TEST`).
#[test]
fn a_handler_runs_as_its_user() {
    let Some(accounts) = crate::users::accounts_or_skip("a_handler_runs_as_its_user") else {
        return;
    };
    let chain = r#"
[process.p.activity.fails]
retries = 0
shell = "exit 1"

[handler.on_failure.activity.as-user]
user = "hft-runas"
shell = 'echo "$(id -un) $HF_JOB_STATE $HF_FAILED"'
"#;
    let daemon = TestDaemon::start_with(
        r#"run_as_allowed = ["hft-runas"]"#,
        &[("runas.toml", chain)],
    );
    let id = daemon.submit("runas", &[]);
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let handler = activity(&job, "on_failure.as-user");
    assert_eq!(handler.state, ActivityState::Succeeded, "{handler:#?}");
    assert_eq!(
        daemon.logs(id, "on_failure.as-user", None).trim(),
        format!("{} failed runas.p.fails", accounts.run_as.name)
    );
}
