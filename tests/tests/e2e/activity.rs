//! What an activity sees: rendered templates in its argv, outputs of upstream
//! activities, its environment and the control channel.

use holdfast_api::{ActivityState, JobState};
use holdfast_tests::TestDaemon;
use serde_json::{Value, json};

use crate::support::{activity, shown};

#[test]
fn templates_render_params_job_id_and_upstream_outputs() {
    let chain = r#"
[params.name]
type = "string"
required = true

[process.p]
mode = "serial"

[process.p.activity.greet]
command = ["echo", "{{ params.name }}", "{{ job.id }}"]

[process.p.activity.a]
shell = '''echo 'output {"rows": 7}' >&3'''

[process.q]
after = ["p"]

[process.q.activity.use]
command = ["echo", "rows={{ outputs.p.a.rows }}"]
"#;
    let daemon = TestDaemon::start(&[("tmpl.toml", chain)]);
    // `command` is an argv: shell syntax in a value stays text.
    let name = "Ada; touch @DIR@/injected $(touch @DIR@/injected)";
    let name = name.replace("@DIR@", &daemon.dir().to_string_lossy());
    let job_id = daemon.submit("tmpl", &["-p", &format!("name={name}")]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");

    let greeting = daemon.logs(job_id, "p.greet", None);
    assert_eq!(
        greeting,
        format!("{name} {job_id}\n"),
        "params.name and job.id are rendered"
    );
    assert!(
        !daemon.dir().join("injected").exists(),
        "a parameter value ran as shell code"
    );

    assert_eq!(
        job.outputs.get("p.a"),
        Some(&json!({"rows": 7})),
        "the output message is recorded under process.activity: {:?}",
        job.outputs
    );
    let used = daemon.logs(job_id, "q.use", None);
    assert_eq!(
        used, "rows=7\n",
        "the upstream output reached the downstream argv"
    );
}

#[test]
fn the_activity_environment_is_set() {
    let chain = r#"
[params.region]
type = "string"
default = "north"

[params.count]
type = "int"
required = true

[process.stage.activity.show]
shell = '''
echo "job=$HF_JOB_ID"
echo "chain=$HF_CHAIN"
echo "process=$HF_PROCESS"
echo "activity=$HF_ACTIVITY"
echo "attempt=$HF_ATTEMPT"
echo "region=$HF_PARAM_REGION"
echo "count=$HF_PARAM_COUNT"
echo "control=$HF_CONTROL_FD"
echo "params=$HF_PARAMS"
extra=""; n=4
while [ $n -lt 1024 ]; do [ -e /proc/$$/fd/$n ] && extra="$extra $n"; n=$((n+1)); done
echo "extra_fds=$extra"
'''
"#;
    let daemon = TestDaemon::start(&[("envcheck.toml", chain)]);
    let job_id = daemon.submit("envcheck", &["-p", "count=5"]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");

    let log = daemon.logs(job_id, "stage.show", None);
    let value = |key: &str| -> String {
        log.lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= line in the log:\n{log}"))
            .to_string()
    };
    assert_eq!(value("job"), job_id.to_string());
    assert_eq!(
        value("extra_fds"),
        "",
        "an activity holds fds 0-3 only, none of the daemon's (nor any the daemon inherited)"
    );
    assert_eq!(value("chain"), "envcheck");
    assert_eq!(value("process"), "stage");
    assert_eq!(value("activity"), "show");
    assert_eq!(value("attempt"), "1");
    assert_eq!(
        value("region"),
        "north",
        "a defaulted parameter is in the environment"
    );
    assert_eq!(value("count"), "5");
    assert_eq!(value("control"), "3");
    let params: Value = serde_json::from_str(&value("params"))
        .unwrap_or_else(|e| panic!("HF_PARAMS is not JSON ({e}):\n{log}"));
    assert_eq!(
        params,
        json!({"region": "north", "count": 5}),
        "HF_PARAMS holds every parameter"
    );
}

#[test]
fn control_messages_raise_alerts_and_report_progress() {
    let chain = r#"
[process.p.activity.a]
shell = '''
echo "progress 40 loading" >&3
echo "alert stock below threshold" >&3
echo done
'''
"#;
    let daemon = TestDaemon::start(&[("signal.toml", chain)]);
    let job_id = daemon.submit("signal", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "an alert does not fail the job: {job:#?}"
    );
    assert_eq!(job.alerts, 1, "{job:#?}");
    assert_eq!(
        job.last_alert.as_deref(),
        Some("signal.p.a: stock below threshold"),
        "the job keeps what the alert said: {job:#?}"
    );
    let status = daemon.hfctl(&["status", &job_id.to_string()]);
    assert!(
        String::from_utf8_lossy(&status.stdout)
            .contains("(last: signal.p.a: stock below threshold)"),
        "hfctl status shows the last alert: {}",
        shown(&status)
    );
    let a = activity(&job, "p.a");
    assert_eq!(a.state, ActivityState::Succeeded, "{a:#?}");
    assert_eq!(
        daemon.logs(job_id, "p.a", None),
        "done\n",
        "control lines stay out of the log"
    );
}
