//! The control channel on fd 3: progress seen while the activity runs,
//! malformed lines kept as warnings in the attempt's log, alerts counted, and
//! `hfctl emit` as the way shell scripts write these lines.

use std::time::Duration;

use holdfast_api::{ActivityState, AttemptState, Job, JobState};
use holdfast_tests::{TestDaemon, eventually, hfctl_command, run_with_deadline};
use serde_json::{Value, json};

use crate::support::{activity, shown};

/// How long a message written by a running activity may take to show in
/// `job.get`.
const SEEN_WITHIN: Duration = Duration::from_secs(10);

/// Poll `hfctl status JOB` until the activity `path` is running with
/// `percent` progress and `text`; returns the job as seen then.
fn progress_seen(daemon: &TestDaemon, job_id: u64, path: &str, percent: f64, text: &str) -> Job {
    let what = format!("job {job_id}: {path} running at {percent}% {text:?}");
    let (job, _) = eventually(SEEN_WITHIN, &what, || {
        let job = daemon.status(job_id);
        let run = activity(&job, path);
        let seen = (run.state, run.progress, run.progress_text.clone());
        if seen
            == (
                ActivityState::Running,
                Some(percent),
                Some(text.to_string()),
            )
        {
            Ok(job)
        } else {
            Err(format!("{seen:?}"))
        }
    });
    job
}

#[test]
fn progress_shows_while_running_and_malformed_lines_are_logged_not_fatal() {
    let chain = r#"
[process.p.activity.work]
shell = '''
echo "progress 30 warming up" >&3
while [ ! -e @DIR@/go ]; do sleep 0.02; done
echo "progress 150" >&3
echo "bogus line" >&3
echo "checkpoint {not json" >&3
echo 'output [1, 2]' >&3
echo "alert" >&3
echo "alert disk nearly full" >&3
echo "alert queue backlog" >&3
echo "progress 90 almost" >&3
echo finished
'''
retries = 0
"#;
    let daemon = TestDaemon::start(&[("ctl.toml", chain)]);
    let job_id = daemon.submit("ctl", &[]);

    let running = progress_seen(&daemon, job_id, "p.work", 30.0, "warming up");
    assert_eq!(running.state, JobState::Running, "{running:#?}");
    assert!(
        (running.progress - 30.0).abs() < 1e-9,
        "the job's progress is its only activity's: {running:#?}"
    );
    assert_eq!(running.alerts, 0, "{running:#?}");

    std::fs::write(daemon.dir().join("go"), "").expect("the gate file can be written");
    let job = daemon.wait_done(job_id);
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "malformed control lines are not fatal: {job:#?}"
    );
    let work = activity(&job, "p.work");
    assert_eq!(work.attempts.len(), 1, "{work:#?}");
    assert_eq!(work.attempts[0].state, AttemptState::Succeeded, "{work:#?}");
    assert_eq!(
        job.alerts, 2,
        "two well-formed alerts; `alert` without a text is malformed: {job:#?}"
    );
    assert!(
        job.outputs.get("p.work").is_none_or(|o| o == &json!({})),
        "`output [1, 2]` is not an object and records nothing: {:?}",
        job.outputs
    );

    let log = daemon.logs(job_id, "p.work", None);
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.starts_with("[holdfast] ignored control message: "))
        .collect();
    assert_eq!(
        warnings.len(),
        5,
        "one warning per malformed line (progress 150, bogus, checkpoint, output, alert):\n{log}"
    );
    for needle in ["150", "\"bogus\"", "checkpoint", "output", "alert"] {
        assert!(
            warnings.iter().any(|w| w.contains(needle)),
            "no warning mentions {needle}:\n{log}"
        );
    }
    // The warnings and stdout come through different pipes, so their order
    // in the log is not fixed.
    assert!(
        log.lines().any(|line| line == "finished"),
        "the activity's own output is kept:\n{log}"
    );
}

#[test]
fn hfctl_emit_writes_every_kind_of_message_from_a_shell_activity() {
    // The first attempt reports through hfctl (progress last: the messages
    // arrive in order on one pipe, so once it shows, the others have been
    // taken), waits to be observed, then fails; the second shows the
    // checkpoint the first one saved.
    let chain = r#"
[process.p.activity.emit]
env = { PATH = "@BIN@:/usr/bin:/bin" }
shell = '''
if [ "$HF_ATTEMPT" -gt 1 ]; then
  echo "checkpoint=$HF_CHECKPOINT"
  exit 0
fi
hfctl emit checkpoint '{"chunk":150}'
echo "emit checkpoint exit $?"
hfctl emit output '{"rows":1250}'
echo "emit output exit $?"
hfctl emit alert stock below threshold
echo "emit alert exit $?"
hfctl emit progress 150 2>/dev/null
echo "emit 150 exit $?"
hfctl emit output '[1]' 2>/dev/null
echo "emit array exit $?"
hfctl emit progress 65 "loading facts"
while [ ! -e @DIR@/go ]; do sleep 0.02; done
exit 1
'''
retries = 1
retry_delay = "10ms"
"#;
    let daemon = TestDaemon::start(&[("emit.toml", chain)]);
    let job_id = daemon.submit("emit", &[]);

    let running = progress_seen(&daemon, job_id, "p.emit", 65.0, "loading facts");
    let first = daemon.logs(job_id, "p.emit", Some(1));
    for kind in ["checkpoint", "output", "alert"] {
        assert!(
            first.contains(&format!("emit {kind} exit 0\n")),
            "`hfctl emit {kind}` succeeds inside an activity:\n{first}"
        );
    }
    assert_eq!(running.alerts, 1, "{running:#?}");
    assert_eq!(
        running.outputs.get("p.emit"),
        Some(&json!({"rows": 1250})),
        "{running:#?}"
    );

    std::fs::write(daemon.dir().join("go"), "").expect("the gate file can be written");
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let states: Vec<AttemptState> = activity(&job, "p.emit")
        .attempts
        .iter()
        .map(|a| a.state)
        .collect();
    assert_eq!(states, [AttemptState::Failed, AttemptState::Succeeded]);

    let first = daemon.logs(job_id, "p.emit", Some(1));
    assert!(
        first.contains("emit 150 exit 2\n"),
        "`hfctl emit progress 150` is a usage error (exit 2):\n{first}"
    );
    assert!(
        first.contains("emit array exit 2\n"),
        "`hfctl emit output '[1]'` is a usage error (exit 2):\n{first}"
    );
    assert!(
        !first.contains("[holdfast] ignored control message"),
        "hfctl wrote nothing malformed to the channel:\n{first}"
    );
    let second = daemon.logs(job_id, "p.emit", Some(2));
    let checkpoint = second
        .lines()
        .find_map(|line| line.strip_prefix("checkpoint="))
        .unwrap_or_else(|| panic!("no checkpoint line:\n{second}"));
    let checkpoint: Value = serde_json::from_str(checkpoint)
        .unwrap_or_else(|e| panic!("HF_CHECKPOINT is not JSON ({e}):\n{second}"));
    assert_eq!(checkpoint, json!({"chunk": 150}));
}

#[test]
fn hfctl_emit_outside_an_activity_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let socket = dir.path().join("nobody.sock");
    for args in [
        &["emit", "progress", "150"][..],
        &["emit", "progress", "-1"][..],
        &["emit", "progress", "50"][..],
        &["emit", "checkpoint", "{"][..],
    ] {
        let mut cmd = hfctl_command(&socket);
        cmd.args(args).env_remove("HF_CONTROL_FD");
        let output = run_with_deadline(cmd, Duration::from_secs(20));
        assert_eq!(
            output.status.code(),
            Some(2),
            "hfctl {args:?}: {}",
            shown(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with("hfctl: ") || stderr.contains("error"),
            "hfctl {args:?} says why: {}",
            shown(&output)
        );
    }
}
