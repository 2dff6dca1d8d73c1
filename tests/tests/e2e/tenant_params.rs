//! Tenants as a batch manager needs them: a value a tenant file marks
//! `locked = true` cannot be overridden by a submission, and
//! `concurrency_per = "tenant"` counts a chain's `concurrency` per tenant.

use holdfast_api::{ActivityState, Job, JobState};
use holdfast_tests::TestDaemon;
use holdfast_tests::http::rpc_call;
use serde_json::json;

use crate::support::shown;

const BILLING: &str = r#"
[params.company]
type = "string"
required = true

[params.region]
type = "string"
default = "north"

[process.p.activity.a]
shell = 'echo "company=$HF_PARAM_COMPANY region=$HF_PARAM_REGION"'
"#;

/// `company` is locked by tenant afinia (`hfctl tenants` says so):
/// `-p company=air-e` (and a JSON `null`) are refused naming it, though the
/// caller is root, and no job is made; `region` is not locked and may be overridden; without `-p` the
/// job runs with the tenant's company.
#[test]
fn a_locked_tenant_value_cannot_be_overridden() {
    let daemon = TestDaemon::start(&[("billing.toml", BILLING)]);
    daemon.write_tenant(
        "afinia",
        "[params]\ncompany = { value = \"afinia\", locked = true }\nregion = \"south\"\n",
    );
    daemon.hfctl_json(&["reload"]);
    let tenants = daemon.hfctl(&["tenants"]);
    assert!(
        String::from_utf8_lossy(&tenants.stdout).contains("company=afinia (locked)"),
        "hfctl tenants shows the lock: {}",
        shown(&tenants)
    );

    let refused = daemon.hfctl(&[
        "submit",
        "billing",
        "--tenant",
        "afinia",
        "-p",
        "company=air-e",
    ]);
    assert_eq!(refused.status.code(), Some(8), "{}", shown(&refused));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("company: set by tenant afinia and locked there, so it cannot be overridden"),
        "the refusal names the parameter and why: {said}"
    );
    let answer = rpc_call(
        daemon.socket(),
        "job.submit",
        json!({"target": "billing", "tenant": "afinia", "params": {"company": null}}),
    );
    assert_eq!(answer["error"]["code"], -31002, "{answer}");
    assert_eq!(answer["error"]["data"][0]["field"], "company", "{answer}");
    let listed = daemon.hfctl_json(&["list"]);
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(0), "{listed}");

    let id = daemon.submit("billing", &["--tenant", "afinia", "-p", "region=east"]);
    let job = daemon.wait_done(id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.params["company"], "afinia", "{job:#?}");
    assert!(
        daemon
            .logs(id, "p.a", None)
            .contains("company=afinia region=east"),
        "the tenant's company, the submitted region"
    );
}

const GATE: &str = r#"
[chain]
concurrency = 1
concurrency_per = "tenant"

[process.p.activity.hold]
shell = "while [ ! -e @DIR@/go-$HF_JOB_ID ]; do sleep 0.02; done"
"#;

fn running(job: &Job) -> bool {
    job.activities
        .iter()
        .any(|a| a.state == ActivityState::Running)
}

/// With `concurrency = 1` per tenant, a job of tenant a and one of tenant
/// b run side by side, while a second job of a waits queued (b's job was
/// submitted after it and still started) until a's first job ends, also
/// across a restart; `hfctl describe` says how concurrency is counted.
#[test]
fn concurrency_per_tenant_lets_tenants_run_side_by_side() {
    let mut daemon = TestDaemon::start(&[("gate.toml", GATE)]);
    daemon.write_tenant("a", "");
    daemon.write_tenant("b", "");
    daemon.hfctl_json(&["reload"]);

    let a1 = daemon.submit("gate", &["--tenant", "a"]);
    daemon.wait_for(a1, "running", running);
    let a2 = daemon.submit("gate", &["--tenant", "a"]);
    let b1 = daemon.submit("gate", &["--tenant", "b"]);
    daemon.wait_for(b1, "running beside tenant a's job", running);
    let waiting = daemon.status(a2);
    assert_eq!(
        waiting.state,
        JobState::Queued,
        "a's second job waits for a's first: {waiting:#?}"
    );

    // After a restart the running jobs keep their tenants' slots.
    daemon.restart();
    daemon.wait_for(a1, "running again", running);
    daemon.wait_for(b1, "running again", running);
    let waiting = daemon.status(a2);
    assert_eq!(
        waiting.state,
        JobState::Queued,
        "still waiting after a restart: {waiting:#?}"
    );

    std::fs::write(daemon.dir().join(format!("go-{a1}")), "").expect("release a1");
    assert_eq!(daemon.wait_done(a1).state, JobState::Succeeded);
    daemon.wait_for(a2, "running once a's first job ended", running);
    assert_eq!(
        daemon.status(b1).state,
        JobState::Running,
        "b's job is still running"
    );
    for id in [a2, b1] {
        std::fs::write(daemon.dir().join(format!("go-{id}")), "").expect("release");
        assert_eq!(daemon.wait_done(id).state, JobState::Succeeded);
    }

    let described = daemon.hfctl(&["describe", "gate"]);
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(
        text.contains("1 per tenant"),
        "describe shows concurrency per tenant: {}",
        shown(&described)
    );
}

/// A schedule's `params` cannot override a locked tenant value either: a
/// trigger for tenants afinia (which locks `company`) and air-e (which
/// does not) makes air-e's job only, and the trigger's refusal names the
/// tenant and the parameter.
#[test]
fn a_schedule_cannot_override_a_locked_value() {
    let chain = format!(
        "{BILLING}\n[schedule.nightly]\ncron = \"0 3 1 1 *\"\ntenants = [\"afinia\", \"air-e\"]\n\
         params = {{ company = \"from-schedule\" }}\n"
    );
    let daemon = TestDaemon::start(&[("billing.toml", &chain)]);
    daemon.write_tenant(
        "afinia",
        "[params]\ncompany = { value = \"afinia\", locked = true }\n",
    );
    daemon.write_tenant("air-e", "[params]\ncompany = \"air-e\"\n");
    daemon.hfctl_json(&["reload"]);

    let fired = daemon.hfctl(&["schedule", "trigger", "billing.nightly"]);
    assert_eq!(fired.status.code(), Some(8), "{}", shown(&fired));
    let said = String::from_utf8_lossy(&fired.stderr);
    assert!(
        said.contains("tenant afinia: company: set by tenant afinia and locked there"),
        "the trigger says which tenant's job was refused and why: {said}"
    );
    let listed = daemon.hfctl_json(&["list"]);
    let jobs = listed["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(jobs.len(), 1, "air-e's job only: {listed}");
    assert_eq!(jobs[0]["tenant"], "air-e", "{listed}");
    let id = jobs[0]["id"].as_u64().expect("a job id");
    let job = daemon.wait_done(id);
    assert_eq!(job.params["company"], "from-schedule", "{job:#?}");
}
