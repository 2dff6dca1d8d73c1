//! Outputs: what an activity reports with `output {...}` reaches its
//! dependants' argv, environment and working directory, shows in `job.get`,
//! and a reference to a key that was never produced fails the dependant
//! cleanly.

use std::time::Duration;

use holdfast_api::{ActivityState, AttemptState, JobState};
use holdfast_tests::TestDaemon;
use serde_json::json;

use crate::support::activity;

/// A render failure ends the job at once; a job still unfinished after this
/// is stuck.
const RENDER_FAILURE_ENDS_WITHIN: Duration = Duration::from_secs(15);

#[test]
fn outputs_reach_a_dependants_argv_env_and_working_dir_and_show_in_job_get() {
    let chain = r#"
[process.up.activity.make]
shell = '''
mkdir -p @DIR@/work-$HF_JOB_ID
echo 'output {"rows": 1250, "table": "facts"}' >&3
echo "output {\"label\": \"two words; \$(touch @DIR@/injected)\"}" >&3
echo "output {\"dir\": \"@DIR@/work-$HF_JOB_ID\"}" >&3
'''

[process.down]
after = ["up"]
mode = "parallel"

[process.down.activity.args]
command = ["printf", "[%s]\n", "{{ outputs.up.make.rows }}", "{{ outputs.up.make.label }}"]

[process.down.activity.env]
shell = 'echo "rows=$ROWS table=$TABLE label=$LABEL"'
env = { ROWS = "{{ outputs.up.make.rows }}", TABLE = "{{ outputs.up.make.table }}", LABEL = "{{ outputs.up.make.label }}" }

[process.down.activity.cwd]
command = ["pwd"]
working_dir = "{{ outputs.up.make.dir }}"
"#;
    let daemon = TestDaemon::start(&[("flow.toml", chain)]);
    let job_id = daemon.submit("flow", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");

    let label = format!(
        "two words; $(touch {}/injected)",
        daemon.dir().to_string_lossy()
    );
    let work_dir = daemon.dir().join(format!("work-{job_id}"));
    assert_eq!(
        job.outputs.get("up.make"),
        Some(&json!({
            "rows": 1250,
            "table": "facts",
            "label": label,
            "dir": work_dir.to_string_lossy(),
        })),
        "the three output messages are merged under process.activity: {:#?}",
        job.outputs
    );
    for path in ["down.args", "down.env", "down.cwd"] {
        assert!(
            job.outputs.get(path).is_none_or(|o| o == &json!({})),
            "{path} reported no output: {:#?}",
            job.outputs
        );
    }

    assert_eq!(
        daemon.logs(job_id, "down.args", None),
        format!("[1250]\n[{label}]\n"),
        "each output is one argv element, never split or run"
    );
    assert_eq!(
        daemon.logs(job_id, "down.env", None),
        format!("rows=1250 table=facts label={label}\n"),
        "outputs reach a shell activity through its templated env"
    );
    assert_eq!(
        daemon.logs(job_id, "down.cwd", None),
        format!("{}\n", work_dir.to_string_lossy()),
        "an output can name the working directory"
    );
    assert!(
        !daemon.dir().join("injected").exists(),
        "an output value ran as shell code"
    );
}

/// A chain whose `mid.use` references an output key `up.make` never
/// produces; `retries` is spliced into `mid.use`.
fn missing_key_chain(retries: u32) -> String {
    format!(
        r#"
[process.up.activity.make]
shell = '''echo 'output {{"rows": 1}}' >&3'''

[process.mid]
after = ["up"]

[process.mid.activity.use]
command = ["echo", "{{{{ outputs.up.make.missing }}}}"]
retries = {retries}
retry_delay = "10ms"

[process.last]
after = ["mid"]

[process.last.activity.never]
shell = "touch @DIR@/never-ran"
"#
    )
}

fn assert_missing_key_fails_cleanly(retries: u32) {
    let chain = missing_key_chain(retries);
    let daemon = TestDaemon::start(&[("gap.toml", &chain)]);
    let job_id = daemon.submit("gap", &[]);
    daemon.wait_for_within(
        job_id,
        "finished (a template that cannot render fails its activity at once)",
        RENDER_FAILURE_ENDS_WITHIN,
        |job| job.state.is_terminal(),
    );
    let job = daemon.status(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!(activity(&job, "up.make").state, ActivityState::Succeeded);

    let used = activity(&job, "mid.use");
    assert_eq!(used.state, ActivityState::Failed, "{used:#?}");
    assert_eq!(
        used.attempts.len(),
        1,
        "a template that cannot render is not retried (retries = {retries}): {used:#?}"
    );
    let attempt = &used.attempts[0];
    assert_eq!(attempt.state, AttemptState::SpawnError, "{attempt:#?}");
    assert_eq!(attempt.pid, None, "nothing was spawned: {attempt:#?}");
    assert!(attempt.error_id.is_some(), "{attempt:#?}");
    let error = attempt.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("outputs.up.make.missing") && error.contains("missing"),
        "the error names the reference: {error:?}"
    );

    let never = activity(&job, "last.never");
    assert_eq!(never.state, ActivityState::Skipped, "{never:#?}");
    assert!(never.attempts.is_empty(), "{never:#?}");
    assert!(!daemon.dir().join("never-ran").exists());
}

#[test]
fn a_missing_output_key_fails_the_activity_and_skips_dependants() {
    assert_missing_key_fails_cleanly(0);
}

#[test]
fn a_missing_output_key_is_not_retried() {
    assert_missing_key_fails_cleanly(2);
}
