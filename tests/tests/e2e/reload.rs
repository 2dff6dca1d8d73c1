//! Reloading workflows: the directory watcher sees new files, editor-style
//! saves (temporary file and rename), broken edits (the last good version
//! stays submittable) and deletions; jobs keep the definition version they
//! were submitted with, and so do their retries.

use std::time::Duration;

use holdfast_api::{JobState, WorkflowSummary};
use holdfast_tests::{TestDaemon, eventually};
use nix::sys::signal::Signal;

use crate::support::shown;

/// The watcher reloads within a second of a save; this leaves a margin.
const RELOADED_WITHIN: Duration = Duration::from_secs(2);

const BASE: &str = r#"
[process.p.activity.a]
command = ["true"]
"#;

fn fresh(version: u32, description: &str) -> String {
    format!(
        r#"
[chain]
description = "{description}"

[process.p.activity.say]
command = ["echo", "fresh v{version}"]
"#
    )
}

/// A broken edit: line 6, column 1 holds an unknown key.
const BROKEN: &str = r#"
[chain]
description = "broken"

[process.p.activity.say]
bogus = 1
command = ["echo", "fresh broken"]
"#;

fn workflows(daemon: &TestDaemon) -> Vec<WorkflowSummary> {
    let value = daemon.hfctl_json(&["workflows"]);
    serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("`hfctl --json workflows` is not a list ({e}): {value}"))
}

/// Wait until `hfctl --json workflows` shows chain `name` as `pred` wants
/// (`None`: the chain is not listed); returns its entry and the wait.
fn wait_workflow(
    daemon: &TestDaemon,
    name: &str,
    what: &str,
    pred: impl Fn(Option<&WorkflowSummary>) -> bool,
) -> (Option<WorkflowSummary>, Duration) {
    eventually(RELOADED_WITHIN, &format!("chain {name} {what}"), || {
        let listed = workflows(daemon);
        let entry = listed.iter().find(|w| w.name == name);
        if pred(entry) {
            Ok(entry.cloned())
        } else {
            Err(format!("{listed:#?}"))
        }
    })
}

/// Submit `target` with `--wait`, require success, return the job's
/// activity `p.say` log.
fn run_and_read(daemon: &TestDaemon, target: &str) -> String {
    let job_id = daemon.submit(target, &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    daemon.logs(job_id, "p.say", None)
}

#[test]
fn the_watcher_sees_new_renamed_broken_and_deleted_files() {
    let daemon = TestDaemon::start(&[("base.toml", BASE)]);
    assert!(workflows(&daemon).iter().all(|w| w.name != "fresh"));

    daemon.write_workflow("fresh.toml", &fresh(1, "first"));
    let (entry, took) = wait_workflow(&daemon, "fresh", "loaded", |w| {
        w.is_some_and(|w| w.status == "loaded")
    });
    let first = entry
        .expect("listed")
        .version
        .expect("a loaded chain has a version");
    assert!(took < RELOADED_WITHIN, "{took:?}");
    assert_eq!(run_and_read(&daemon, "fresh"), "fresh v1\n");

    daemon.save_workflow_by_rename("fresh.toml", &fresh(2, "second"));
    let (entry, _) = wait_workflow(&daemon, "fresh", "at its second version", |w| {
        w.is_some_and(|w| w.description.as_deref() == Some("second"))
    });
    let entry = entry.expect("listed");
    let second = entry.version.clone().expect("a version");
    assert_ne!(second, first, "a changed file is a new version");
    assert_eq!(entry.status, "loaded", "{entry:#?}");
    assert_eq!(run_and_read(&daemon, "fresh"), "fresh v2\n");

    daemon.write_workflow("fresh.toml", BROKEN);
    let (entry, _) = wait_workflow(&daemon, "fresh", "listed broken", |w| {
        w.is_some_and(|w| w.status == "broken")
    });
    let entry = entry.expect("listed");
    assert_eq!(
        entry.version.as_deref(),
        Some(second.as_str()),
        "a broken edit keeps the last good version: {entry:#?}"
    );
    let error = entry.error.clone().expect("a broken chain shows its error");
    assert_eq!(
        entry.errors.first(),
        Some(&error),
        "`errors` lists every problem, the first being `error`: {entry:#?}"
    );
    assert_eq!(
        (error.line, error.column),
        (Some(6), Some(1)),
        "the error points at the unknown key: {error:#?}"
    );
    assert!(error.message.contains("bogus"), "{error:#?}");
    assert!(error.file.ends_with("fresh.toml"), "{error:#?}");
    assert_eq!(
        run_and_read(&daemon, "fresh"),
        "fresh v2\n",
        "the last good version is still submittable"
    );
    let table = daemon.hfctl(&["workflows"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("broken") && text.contains(":6:1"),
        "`hfctl workflows` shows the broken file and where: {}",
        shown(&table)
    );

    std::fs::remove_file(daemon.workflows_dir().join("fresh.toml"))
        .expect("the chain file can be removed");
    wait_workflow(&daemon, "fresh", "gone", |w| w.is_none());
    let refused = daemon.hfctl(&["submit", "fresh"]);
    assert_eq!(
        refused.status.code(),
        Some(6),
        "a deleted chain cannot be submitted: {}",
        shown(&refused)
    );

    // SIGHUP reloads too, and does not stop the daemon.
    daemon.write_workflow("late.toml", BASE);
    daemon.signal(Signal::SIGHUP);
    wait_workflow(&daemon, "late", "loaded", |w| {
        w.is_some_and(|w| w.status == "loaded")
    });
    assert!(daemon.hfctl(&["info"]).status.success());
    assert!(
        workflows(&daemon).iter().any(|w| w.name == "base"),
        "untouched chains stay"
    );
}

fn versioned(n: u32) -> String {
    format!(
        r#"
[process.a.activity.gate]
shell = "while [ ! -e @DIR@/gate ]; do sleep 0.02; done"

[process.p]
after = ["a"]

[process.p.activity.say]
command = ["echo", "version-{n}"]
"#
    )
}

#[test]
fn a_running_job_keeps_its_version_and_so_does_its_retry() {
    let daemon = TestDaemon::start(&[("versioned.toml", &versioned(1))]);
    let job_id = daemon.submit("versioned", &[]);
    let running = daemon.wait_for(job_id, "running", |job| job.state == JobState::Running);
    let old = running.version.clone();

    daemon.save_workflow_by_rename("versioned.toml", &versioned(2));
    let (entry, _) = wait_workflow(&daemon, "versioned", "at a new version", |w| {
        w.and_then(|w| w.version.as_deref())
            .is_some_and(|v| v != old)
    });
    let new = entry.and_then(|e| e.version).expect("a version");
    assert_eq!(
        daemon.status(job_id).version,
        old,
        "a running job keeps its version after an edit"
    );

    std::fs::write(daemon.dir().join("gate"), "").expect("the gate file can be written");
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.version, old);
    assert_eq!(
        daemon.logs(job_id, "p.say", None),
        "version-1\n",
        "activities started after the edit still run the job's own version"
    );

    let output = daemon.hfctl(&[
        "--json",
        "retry",
        &job_id.to_string(),
        "--from-start",
        "--wait",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", shown(&output));
    let retried: holdfast_api::Job =
        serde_json::from_slice(&output.stdout).expect("retry --wait prints the job");
    assert_eq!(retried.version, old, "a retry runs the original's version");
    assert_eq!(daemon.logs(retried.id, "p.say", None), "version-1\n");

    let fresh_id = daemon.submit("versioned", &[]);
    let fresh_job = daemon.wait_done(fresh_id);
    assert_eq!(
        fresh_job.version, new,
        "a new submission gets the new version"
    );
    assert_eq!(daemon.logs(fresh_id, "p.say", None), "version-2\n");
}

#[test]
fn a_job_of_a_deleted_chain_finishes_and_can_be_retried() {
    let daemon = TestDaemon::start(&[("doomed.toml", &versioned(1))]);
    let job_id = daemon.submit("doomed", &[]);
    daemon.wait_for(job_id, "running", |job| job.state == JobState::Running);

    std::fs::remove_file(daemon.workflows_dir().join("doomed.toml"))
        .expect("the chain file can be removed");
    wait_workflow(&daemon, "doomed", "gone", |w| w.is_none());

    std::fs::write(daemon.dir().join("gate"), "").expect("the gate file can be written");
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(daemon.logs(job_id, "p.say", None), "version-1\n");

    let output = daemon.hfctl(&[
        "--json",
        "retry",
        &job_id.to_string(),
        "--from-start",
        "--wait",
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "a retry runs the stored definition even when the file is gone: {}",
        shown(&output)
    );
    let retried: holdfast_api::Job =
        serde_json::from_slice(&output.stdout).expect("retry --wait prints the job");
    assert_eq!(retried.version, job.version);
    assert_eq!(daemon.logs(retried.id, "p.say", None), "version-1\n");
}
