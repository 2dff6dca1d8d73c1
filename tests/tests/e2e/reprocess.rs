//! Reprocessing with `hfctl retry`: a new job linked to the old one that
//! keeps what succeeded (with its outputs), re-runs what failed with its last
//! checkpoint, re-runs everything with `--from-start`, and is refused while
//! the job runs or when nothing is left to re-run.

use holdfast_api::{ActivityState, AttemptState, Job, JobState};
use holdfast_tests::TestDaemon;
use holdfast_tests::http::rpc_call;
use serde_json::json;

use crate::support::{activity, shown};

/// `a` records each run and reports an output; `b` uses that output and
/// fails (after a checkpoint) until the flag file exists.
const PIPELINE: &str = r#"
[params.day]
type = "string"
default = "monday"

[process.first.activity.a]
shell = '''
echo "a job=$HF_JOB_ID" >> @DIR@/a-runs
echo 'output {"token": "from-a"}' >&3
'''

[process.second]
after = ["first"]

[process.second.activity.b]
shell = '''
echo "b job=$HF_JOB_ID day=$HF_PARAM_DAY token=$TOKEN checkpoint=${HF_CHECKPOINT:-none}"
if [ ! -e @DIR@/b-may-pass ]; then
  echo 'checkpoint {"step": 2}' >&3
  exit 1
fi
'''
env = { TOKEN = "{{ outputs.first.a.token }}" }
retries = 0

[process.hold.activity.wait]
shell = "while [ ! -e @DIR@/release-$HF_JOB_ID ] && [ ! -e @DIR@/release-all ]; do sleep 0.02; done"
"#;

/// `hfctl --json retry ARGS... --wait`, required to exit 0; the new job.
fn retry_wait(daemon: &TestDaemon, job_id: u64, extra: &[&str]) -> Job {
    let id = job_id.to_string();
    let mut args = vec!["--json", "retry", id.as_str(), "--wait"];
    args.extend_from_slice(extra);
    let output = daemon.hfctl(&args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "`hfctl retry {job_id} --wait {extra:?}` reports the new job's success: {}",
        shown(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "`hfctl --json retry --wait` printed no job ({e}): {}",
            shown(&output)
        )
    })
}

fn a_runs(daemon: &TestDaemon) -> Vec<String> {
    std::fs::read_to_string(daemon.dir().join("a-runs"))
        .expect("a ran")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn retry_keeps_what_succeeded_and_reruns_the_rest() {
    let daemon = TestDaemon::start(&[("pipeline.toml", PIPELINE)]);
    std::fs::write(daemon.dir().join("release-all"), "").expect("the release file can be written");
    let whole = daemon.submit("pipeline", &["-p", "day=friday"]);
    let original = daemon.wait_done(whole);
    assert_eq!(original.state, JobState::Failed, "{original:#?}");
    assert_eq!(activity(&original, "second.b").state, ActivityState::Failed);
    assert_eq!(
        activity(&original, "hold.wait").state,
        ActivityState::Succeeded
    );
    assert_eq!(a_runs(&daemon).len(), 1);

    std::fs::write(daemon.dir().join("b-may-pass"), "").expect("the flag file can be written");
    let again = retry_wait(&daemon, whole, &[]);
    assert_ne!(again.id, whole);
    assert_eq!(again.retry_of, Some(whole), "{again:#?}");
    assert_eq!(again.state, JobState::Succeeded, "{again:#?}");
    assert_eq!(again.target, original.target);
    assert_eq!(again.params, original.params, "same parameters");
    assert_eq!(again.version, original.version, "same definition version");

    for kept in ["first.a", "hold.wait"] {
        let run = activity(&again, kept);
        assert_eq!(run.state, ActivityState::Succeeded, "{run:#?}");
        assert!(
            run.attempts.is_empty(),
            "a succeeded activity is kept, not run again: {run:#?}"
        );
    }
    let b = activity(&again, "second.b");
    assert_eq!(b.state, ActivityState::Succeeded, "{b:#?}");
    assert_eq!(b.attempts.len(), 1, "{b:#?}");
    assert_eq!(b.attempts[0].state, AttemptState::Succeeded, "{b:#?}");
    assert_eq!(
        again.outputs.get("first.a"),
        Some(&json!({"token": "from-a"})),
        "the kept activity's outputs are carried: {:#?}",
        again.outputs
    );
    assert_eq!(
        daemon.logs(again.id, "second.b", None),
        format!(
            "b job={} day=friday token=from-a checkpoint={{\"step\":2}}\n",
            again.id
        ),
        "b sees the carried output and the checkpoint its failed run left"
    );
    assert_eq!(a_runs(&daemon).len(), 1, "a did not run again");

    // Nothing left to re-run: refused without --from-start.
    let refused = daemon.hfctl(&["retry", &again.id.to_string()]);
    assert_eq!(refused.status.code(), Some(10), "{}", shown(&refused));

    let fresh = retry_wait(&daemon, again.id, &["--from-start"]);
    assert_eq!(fresh.retry_of, Some(again.id), "{fresh:#?}");
    assert_eq!(fresh.version, original.version);
    for path in ["first.a", "second.b", "hold.wait"] {
        let run = activity(&fresh, path);
        assert_eq!(run.state, ActivityState::Succeeded, "{run:#?}");
        assert_eq!(
            run.attempts.len(),
            1,
            "--from-start runs {path} again: {run:#?}"
        );
    }
    assert_eq!(
        a_runs(&daemon).last().map(String::as_str),
        Some(format!("a job={}", fresh.id).as_str()),
        "a ran again for the --from-start job"
    );
    assert_eq!(a_runs(&daemon).len(), 2);
}

#[test]
fn retry_of_a_running_job_is_refused() {
    let daemon = TestDaemon::start(&[("pipeline.toml", PIPELINE)]);
    let running = daemon.submit("pipeline.hold", &[]);
    daemon.wait_for(running, "running", |job| job.state == JobState::Running);

    let refused = daemon.hfctl(&["retry", &running.to_string()]);
    assert_eq!(
        refused.status.code(),
        Some(10),
        "INVALID_STATE exits 10: {}",
        shown(&refused)
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.starts_with("hfctl: ") && stderr.contains("running"),
        "one line saying why: {stderr:?}"
    );
    let answer = rpc_call(
        daemon.socket(),
        "job.retry",
        json!({"job_id": running, "from_start": true}),
    );
    assert_eq!(answer["error"]["code"], -31004, "{answer}");

    let missing = daemon.hfctl(&["retry", "999"]);
    assert_eq!(missing.status.code(), Some(6), "{}", shown(&missing));

    let listed = daemon.hfctl_json(&["list"]);
    assert_eq!(
        listed["jobs"].as_array().map(Vec::len),
        Some(1),
        "a refused retry creates no job: {listed}"
    );
    std::fs::write(daemon.dir().join(format!("release-{running}")), "")
        .expect("the release file can be written");
    assert_eq!(daemon.wait_done(running).state, JobState::Succeeded);
}
