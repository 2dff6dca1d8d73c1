//! Partial runs and a run's stable identity: `hfctl submit CHAIN --until
//! PROCESS` runs that process and what it depends on, nothing else (and a
//! retry keeps that plan); `job.run_id` / `HF_RUN_ID` stay the first job's
//! id across `hfctl retry`.

use holdfast_api::{ActivityState, Job, JobState};
use holdfast_tests::TestDaemon;
use holdfast_tests::http::rpc_call;
use serde_json::json;

use crate::support::{activity, shown};

/// `extract` reports a row count; `validate` needs it and fails until the
/// flag file exists; `load` comes after `validate`; `audit` depends on
/// nothing. Every activity records that it ran, with its job and run ids.
const ETL: &str = r#"
[process.extract.activity.e]
shell = '''
echo "extract job=$HF_JOB_ID run=$HF_RUN_ID" >> @DIR@/ran
echo 'output {"rows": 42}' >&3
'''

[process.validate]
after = ["extract"]

[process.validate.activity.v]
command = ["sh", "-c", "echo \"validate rows=$1 run=$2 job=$HF_JOB_ID\" >> @DIR@/ran; test -e @DIR@/valid", "v", "{{ outputs.extract.e.rows }}", "{{ job.run_id }}"]
retries = 0

[process.load]
after = ["validate"]

[process.load.activity.l]
shell = 'echo "load job=$HF_JOB_ID" >> @DIR@/ran'

[process.audit.activity.a]
shell = 'echo "audit job=$HF_JOB_ID" >> @DIR@/ran'
"#;

fn ran(daemon: &TestDaemon) -> Vec<String> {
    std::fs::read_to_string(daemon.dir().join("ran"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn paths(job: &Job) -> Vec<String> {
    let mut paths: Vec<String> = job
        .activities
        .iter()
        .map(|a| format!("{}.{}", a.process, a.activity))
        .collect();
    paths.sort();
    paths
}

/// `--until validate` runs `extract` (which `validate` is after) and
/// `validate`, never `load` (downstream) nor `audit` (unrelated); the dry
/// run shows the same plan; `hfctl submit etl.validate` alone is refused
/// with a pointer to `--until`, because `validate` needs `extract`'s
/// output; a retry of the partial job keeps the partial plan and `until`.
#[test]
fn until_runs_the_process_and_its_upstream_and_nothing_else() {
    let daemon = TestDaemon::start(&[("etl.toml", ETL)]);

    let alone = daemon.hfctl(&["submit", "etl.validate"]);
    assert_eq!(alone.status.code(), Some(8), "{}", shown(&alone));
    let said = String::from_utf8_lossy(&alone.stderr);
    assert!(
        said.contains("--until validate"),
        "the refusal points at --until: {said}"
    );

    let plan = daemon.hfctl_json(&["submit", "etl", "--until", "validate", "--dry-run"]);
    let planned: Vec<&str> = plan["waves"]
        .as_array()
        .unwrap_or_else(|| panic!("a plan has waves: {plan}"))
        .iter()
        .flat_map(|wave| wave.as_array().into_iter().flatten())
        .filter_map(|a| a["path"].as_str())
        .collect();
    assert_eq!(planned, ["etl.extract.e", "etl.validate.v"], "{plan}");
    assert_eq!(plan["until"], "validate", "{plan}");

    let id = daemon.submit("etl", &["--until", "validate"]);
    let job = daemon.wait_done(id);
    assert_eq!(
        job.state,
        JobState::Failed,
        "validate fails first: {job:#?}"
    );
    assert_eq!(job.until.as_deref(), Some("validate"), "{job:#?}");
    assert_eq!(paths(&job), ["extract.e", "validate.v"], "{job:#?}");
    assert_eq!(
        ran(&daemon),
        [
            format!("extract job={id} run={id}"),
            format!("validate rows=42 run={id} job={id}"),
        ]
    );

    std::fs::write(daemon.dir().join("valid"), "").expect("the flag file can be written");
    let output = daemon.hfctl(&["--json", "retry", &id.to_string(), "--wait"]);
    assert!(output.status.success(), "{}", shown(&output));
    let again: Job = serde_json::from_slice(&output.stdout).expect("retry prints the job");
    assert_eq!(again.state, JobState::Succeeded, "{again:#?}");
    assert_eq!(again.until.as_deref(), Some("validate"), "{again:#?}");
    assert_eq!(paths(&again), ["extract.e", "validate.v"], "{again:#?}");
    assert_eq!(
        activity(&again, "extract.e").state,
        ActivityState::Succeeded
    );
    let lines = ran(&daemon);
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("load") || l.starts_with("audit")),
        "nothing outside the plan ran: {lines:?}"
    );

    // Through JSON-RPC: an unknown process, and --until with a process
    // target, are field errors on `until`.
    for (target, until) in [("etl", "nope"), ("etl.load", "validate")] {
        let answer = rpc_call(
            daemon.socket(),
            "job.submit",
            json!({"target": target, "until": until}),
        );
        assert_eq!(answer["error"]["code"], -31002, "{answer}");
        assert_eq!(answer["error"]["data"][0]["field"], "until", "{answer}");
    }
}

/// A retry is a new job with a new id, but `job.run_id` and `HF_RUN_ID`
/// are the first job's, also for a retry of a retry, so paths built from
/// them find what the first job left; `hfctl status` shows the run.
#[test]
fn run_id_is_the_first_jobs_id_across_retries() {
    let daemon = TestDaemon::start(&[("etl.toml", ETL)]);
    let first = daemon.submit("etl", &[]);
    let job = daemon.wait_done(first);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!(job.run_id, first, "{job:#?}");

    // The retry fails again (still no flag), then its retry succeeds.
    let output = daemon.hfctl(&["--json", "retry", &first.to_string(), "--wait"]);
    let second: Job = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("retry prints the job ({e}): {}", shown(&output)));
    assert_ne!(second.id, first);
    assert_eq!(second.run_id, first, "{second:#?}");
    std::fs::write(daemon.dir().join("valid"), "").expect("the flag file can be written");
    let output = daemon.hfctl(&["--json", "retry", &second.id.to_string(), "--wait"]);
    assert!(output.status.success(), "{}", shown(&output));
    let third: Job = serde_json::from_slice(&output.stdout).expect("retry prints the job");
    assert_eq!(third.state, JobState::Succeeded, "{third:#?}");
    assert_eq!(third.run_id, first, "a retry of a retry: {third:#?}");

    let validations: Vec<String> = ran(&daemon)
        .into_iter()
        .filter(|l| l.starts_with("validate"))
        .collect();
    assert_eq!(
        validations,
        [
            format!("validate rows=42 run={first} job={first}"),
            format!("validate rows=42 run={first} job={}", second.id),
            format!("validate rows=42 run={first} job={}", third.id),
        ]
    );
    assert!(
        ran(&daemon).contains(&format!("load job={}", third.id)),
        "the whole chain ran: {:?}",
        ran(&daemon)
    );

    let status = daemon.hfctl(&["status", &third.id.to_string()]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["run:", &first.to_string()]),
        "hfctl status shows the run: {text}"
    );
}

/// A `--until` job interrupted by a restart resumes with the same partial
/// plan (recovery reads `until` back): `later`, downstream of `held`,
/// never runs, and the job keeps its `until` and `run_id`.
#[test]
fn a_partial_job_stays_partial_across_a_restart() {
    let chain = r#"
[process.first.activity.f]
shell = 'echo "first job=$HF_JOB_ID" >> @DIR@/ran'

[process.held]
after = ["first"]

[process.held.activity.h]
shell = "while [ ! -e @DIR@/go ]; do sleep 0.02; done; echo held >> @DIR@/ran"

[process.later]
after = ["held"]

[process.later.activity.l]
shell = 'echo later >> @DIR@/ran'
"#;
    let mut daemon = TestDaemon::start(&[("hold.toml", chain)]);
    let id = daemon.submit("hold", &["--until", "held"]);
    daemon.wait_for(id, "running held", |job| {
        activity(job, "held.h").state == ActivityState::Running
    });
    daemon.restart();
    std::fs::write(daemon.dir().join("go"), "").expect("the flag file can be written");
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(paths(&job), ["first.f", "held.h"], "{job:#?}");
    assert_eq!(job.until.as_deref(), Some("held"), "{job:#?}");
    assert_eq!(job.run_id, id, "{job:#?}");
    let lines = ran(&daemon);
    assert!(
        lines.contains(&"held".to_string()) && !lines.contains(&"later".to_string()),
        "{lines:?}"
    );
}
