//! The audit trail: every mutating call (submit, cancel, retry, reload),
//! accepted or refused, with the caller's uid, user and pid, newest first.

use std::process::Output;

use holdfast_api::AuditEntry;
use holdfast_tests::{HFCTL_TIMEOUT, TestDaemon, finish_child_output};

use crate::support::shown;

const AUDITED: &str = r#"
[params.n]
type = "int"
required = true

[process.p.activity.wait]
shell = "while [ ! -e @DIR@/release ]; do sleep 0.02; done"
"#;

/// Run hfctl with `args` and return its output and pid, which the audit
/// row must name.
fn hfctl_with_pid(daemon: &TestDaemon, args: &[&str]) -> (Output, u32) {
    let child = daemon.hfctl_spawn(args);
    let pid = child.id();
    (finish_child_output(child, HFCTL_TIMEOUT), pid)
}

fn audit(daemon: &TestDaemon, extra: &[&str]) -> Vec<AuditEntry> {
    let mut args = vec!["audit"];
    args.extend_from_slice(extra);
    let value = daemon.hfctl_json(&args);
    serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("`hfctl --json audit` is not a list of entries ({e}): {value}"))
}

#[test]
fn mutating_calls_are_audited_with_caller_and_outcome() {
    let daemon = TestDaemon::start(&[("audited.toml", AUDITED)]);
    let uid = nix::unistd::getuid().as_raw();
    // (method, target, outcome, a word the detail holds, hfctl's pid)
    let mut expected: Vec<(&str, String, &str, String, u32)> = Vec::new();

    let (out, pid) = hfctl_with_pid(&daemon, &["--json", "submit", "audited", "-p", "n=1"]);
    assert!(out.status.success(), "{}", shown(&out));
    let answer: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("submit prints JSON");
    let first = answer["job_id"].as_u64().expect("a job id");
    expected.push((
        "job.submit",
        "audited".into(),
        "ok",
        format!("job {first}"),
        pid,
    ));

    let (out, pid) = hfctl_with_pid(&daemon, &["submit", "audited", "-p", "n=many"]);
    assert_eq!(out.status.code(), Some(8), "{}", shown(&out));
    expected.push((
        "job.submit",
        "audited".into(),
        "refused",
        "invalid".into(),
        pid,
    ));

    let (out, pid) = hfctl_with_pid(&daemon, &["cancel", &first.to_string()]);
    assert!(out.status.success(), "{}", shown(&out));
    expected.push((
        "job.cancel",
        format!("job {first}"),
        "ok",
        String::new(),
        pid,
    ));
    daemon.wait_done(first);

    let (out, pid) = hfctl_with_pid(&daemon, &["--json", "retry", &first.to_string()]);
    assert!(out.status.success(), "{}", shown(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("retry prints JSON");
    let second = answer["job_id"].as_u64().expect("a job id");
    expected.push((
        "job.retry",
        format!("job {first}"),
        "ok",
        format!("job {second}"),
        pid,
    ));

    let (out, pid) = hfctl_with_pid(&daemon, &["retry", &second.to_string()]);
    assert_eq!(out.status.code(), Some(10), "{}", shown(&out));
    expected.push((
        "job.retry",
        format!("job {second}"),
        "refused",
        "still".into(),
        pid,
    ));

    let (out, pid) = hfctl_with_pid(&daemon, &["reload"]);
    assert!(out.status.success(), "{}", shown(&out));
    expected.push(("config.reload", String::new(), "ok", String::new(), pid));

    std::fs::write(daemon.dir().join("release"), "").expect("the release file can be written");
    daemon.wait_done(second);

    let entries = audit(&daemon, &[]);
    assert_eq!(
        entries.len(),
        expected.len(),
        "one row per mutating call, reads are not audited: {entries:#?}"
    );
    let submitted_by = daemon.status(first).submitted_by;
    // Newest first.
    for (entry, (method, target, outcome, detail, pid)) in entries.iter().zip(expected.iter().rev())
    {
        assert_eq!(entry.method, *method, "{entry:#?}");
        if !target.is_empty() {
            assert_eq!(entry.target.as_deref(), Some(target.as_str()), "{entry:#?}");
        }
        assert_eq!(entry.outcome, *outcome, "{entry:#?}");
        assert!(
            entry
                .detail
                .as_deref()
                .unwrap_or_default()
                .contains(detail.as_str()),
            "the detail of {method} {outcome} mentions {detail:?}: {entry:#?}"
        );
        assert_eq!(entry.uid, Some(uid), "the caller's uid: {entry:#?}");
        assert_eq!(
            entry.user.as_deref(),
            Some(submitted_by.as_str()),
            "the caller's user name, as jobs record it: {entry:#?}"
        );
        assert_eq!(entry.pid, Some(*pid), "the calling hfctl's pid: {entry:#?}");
        assert!(!entry.at.is_empty(), "{entry:#?}");
    }
    let ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, ids unique: {ids:?}"
    );

    // Paging: `--limit` and `--before`.
    let newest = audit(&daemon, &["--limit", "2"]);
    assert_eq!(
        newest.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[..2],
        "{newest:#?}"
    );
    let older = audit(&daemon, &["--before", &ids[1].to_string()]);
    assert_eq!(
        older.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[2..],
        "{older:#?}"
    );

    let table = daemon.hfctl(&["audit"]);
    assert!(table.status.success(), "{}", shown(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    for word in [
        "job.submit",
        "job.cancel",
        "job.retry",
        "config.reload",
        "refused",
    ] {
        assert!(text.contains(word), "`hfctl audit` shows {word}:\n{text}");
    }
}

#[test]
fn refused_calls_on_unknown_jobs_and_chains_are_audited() {
    let daemon = TestDaemon::start(&[("audited.toml", AUDITED)]);
    let (out, submit_pid) = hfctl_with_pid(&daemon, &["submit", "nosuch"]);
    assert_eq!(out.status.code(), Some(6), "{}", shown(&out));
    let (out, cancel_pid) = hfctl_with_pid(&daemon, &["cancel", "42"]);
    assert!(!out.status.success(), "{}", shown(&out));
    let (out, retry_pid) = hfctl_with_pid(&daemon, &["retry", "42"]);
    assert_eq!(out.status.code(), Some(6), "{}", shown(&out));

    let entries = audit(&daemon, &[]);
    let found = |method: &str, target: &str, pid: u32| {
        entries.iter().any(|e| {
            e.method == method
                && e.target.as_deref() == Some(target)
                && e.outcome == "refused"
                && e.pid == Some(pid)
        })
    };
    assert!(found("job.submit", "nosuch", submit_pid), "{entries:#?}");
    assert!(found("job.cancel", "job 42", cancel_pid), "{entries:#?}");
    assert!(
        found("job.retry", "job 42", retry_pid),
        "a refused retry is audited like a refused cancel: {entries:#?}"
    );
}
