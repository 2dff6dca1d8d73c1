//! Conventions of `hfctl` and `job.list` found when porting scripts: lists
//! filtered by tenant and age, page sizes refused outside their range
//! rather than clamped.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use holdfast_api::AttemptState;
use holdfast_tests::TestDaemon;
use holdfast_tests::http::rpc_call;
use serde_json::{Value, json};

use crate::support::shown;

const WORK: &str = r#"
[process.p.activity.a]
shell = "true"
"#;

fn ids(list: &Value) -> Vec<u64> {
    list["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("a job list: {list}"))
        .iter()
        .map(|j| j["id"].as_u64().expect("an id"))
        .collect()
}

/// Proves `hfctl list --tenant T` (and `job.list` with `tenant`) returns
/// that tenant's jobs only, and `--since` keeps the jobs created at or after
/// a duration back, a date or an instant; a `since` that cannot be read is
/// refused on its field.
#[test]
fn list_filters_by_tenant_and_since() {
    let daemon = TestDaemon::start(&[("work.toml", WORK)]);
    daemon.write_tenant("north", "[params]\n");
    daemon.write_tenant("south", "[params]\n");
    daemon.hfctl_json(&["reload"]);
    let north_1 = daemon.submit("work", &["--tenant", "north"]);
    let south = daemon.submit("work", &["--tenant", "south"]);
    let plain = daemon.submit("work", &[]);
    for id in [north_1, south, plain] {
        daemon.wait_done(id);
    }
    // Everything before this instant is older than the next job.
    let cut = daemon.status(plain).created_at;
    let north_2 = daemon.submit("work", &["--tenant", "north"]);
    daemon.wait_done(north_2);

    let north = daemon.hfctl_json(&["list", "--tenant", "north"]);
    assert_eq!(ids(&north), vec![north_2, north_1], "{north}");
    let by_rpc = rpc_call(daemon.socket(), "job.list", json!({"tenant": "south"}));
    assert_eq!(ids(&by_rpc["result"]), vec![south], "{by_rpc}");
    let nobody = daemon.hfctl_json(&["list", "--tenant", "nobody"]);
    assert_eq!(ids(&nobody), Vec::<u64>::new());

    let recent = daemon.hfctl_json(&["list", "--since", "1h"]);
    assert_eq!(ids(&recent), vec![north_2, plain, south, north_1]);
    let after_cut = daemon.hfctl_json(&["list", "--since", &cut]);
    assert!(
        ids(&after_cut).contains(&north_2) && !ids(&after_cut).contains(&south),
        "--since an instant keeps only jobs created from then: {after_cut} (cut {cut})"
    );
    let future = daemon.hfctl_json(&["list", "--since", "2999-01-01"]);
    assert_eq!(ids(&future), Vec::<u64>::new(), "a date: {future}");
    let both = daemon.hfctl_json(&["list", "--tenant", "north", "--since", &cut]);
    assert_eq!(ids(&both), vec![north_2]);

    let bad = daemon.hfctl(&["list", "--since", "last week"]);
    assert_eq!(bad.status.code(), Some(8), "{}", shown(&bad));
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        said.starts_with("hfctl: ") && said.contains("since: give a duration"),
        "the refusal names the field and its forms: {said}"
    );
}

/// Proves a page of 0 or 5000 jobs is refused, not clamped: hfctl says the
/// range 1..=1000 (usage error, exit 2) and `job.list` answers -32602 with a
/// message naming it; 1000 itself is accepted.
#[test]
fn list_limits_outside_the_range_are_refused() {
    let daemon = TestDaemon::start(&[("work.toml", WORK)]);
    for limit in ["0", "5000"] {
        let out = daemon.hfctl(&["list", "--limit", limit]);
        assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("1..=1000"),
            "the range is named: {}",
            shown(&out)
        );
    }
    for limit in [0, 1001, 5000] {
        let answer = rpc_call(daemon.socket(), "job.list", json!({"limit": limit}));
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
        assert_eq!(
            answer["error"]["message"],
            format!("limit must be between 1 and 1000 (got {limit})"),
            "{answer}"
        );
    }
    let fine = rpc_call(daemon.socket(), "job.list", json!({"limit": 1000}));
    assert!(fine["result"]["jobs"].is_array(), "{fine}");
    assert_eq!(
        daemon.hfctl(&["list", "--limit", "1000"]).status.code(),
        Some(0)
    );
}

const LONG: &str = r#"
[process.p.activity.a]
shell = "sleep 300"
"#;

/// Waits until attempt `number` of `p.a` runs.
fn attempt_running(daemon: &TestDaemon, job: u64, number: u32) {
    daemon.wait_for(job, &format!("running attempt {number}"), |j| {
        j.activities.iter().any(|a| {
            a.attempts
                .iter()
                .any(|t| t.number == number && t.state == AttemptState::Running)
        })
    });
}

/// Proves an interrupted attempt's error says how the daemon ended: a
/// graceful stop (SIGTERM) reads "was stopped (graceful stop)" and leaves
/// the `clean-stop` marker, which the next start takes away; a crash
/// (SIGKILL) reads "crashed or was killed". Both carry an error id.
#[test]
fn an_interruption_says_stop_or_crash() {
    let mut daemon = TestDaemon::start(&[("long.toml", LONG)]);
    let job = daemon.submit("long", &[]);
    attempt_running(&daemon, job, 1);
    let status = daemon.stop();
    assert!(status.success(), "a graceful stop: {status}");
    let marker = daemon.state_dir().join("clean-stop");
    assert!(
        marker.exists(),
        "a graceful stop leaves {}",
        marker.display()
    );
    daemon.launch();
    assert!(!marker.exists(), "the start takes the marker away");
    attempt_running(&daemon, job, 2);
    daemon.kill9();
    daemon.launch();
    attempt_running(&daemon, job, 3);

    let now = daemon.status(job);
    let attempts = &crate::support::activity(&now, "p.a").attempts;
    let first = &attempts[0];
    assert_eq!(first.state, AttemptState::Interrupted);
    assert_eq!(
        first.error.as_deref(),
        Some("interrupted: the daemon was stopped (graceful stop) while it ran"),
        "{first:?}"
    );
    let second = &attempts[1];
    assert_eq!(second.state, AttemptState::Interrupted);
    assert_eq!(
        second.error.as_deref(),
        Some(
            "interrupted: the daemon crashed or was killed while it ran (it did not stop cleanly)"
        ),
        "{second:?}"
    );
    assert!(first.error_id.is_some() && second.error_id.is_some());
    daemon.hfctl_json(&["cancel", &job.to_string()]);
}

const UNRENDERABLE: &str = r#"
[process.up.activity.make]
shell = "true"

[process.mid]
after = ["up"]

[process.mid.activity.use]
command = ["echo", "{{ outputs.up.make.missing }}"]
"#;

/// Proves `hfctl logs JOB ACT` of an attempt that never started (here its
/// command could not be rendered, so no process and no log) prints why,
/// the attempt's error on stderr after `hfctl: `, instead of nothing or
/// "printed no output"; `--json` still prints only the chunks.
#[test]
fn logs_of_an_attempt_that_did_not_start_say_why() {
    let daemon = TestDaemon::start(&[("gap.toml", UNRENDERABLE)]);
    let job = daemon.submit("gap", &[]);
    let done = daemon.wait_done(job);
    let attempt = &crate::support::activity(&done, "mid.use").attempts[0];
    assert_eq!(attempt.state, AttemptState::SpawnError, "{attempt:?}");
    let error = attempt.error.clone().expect("a spawn error has a reason");

    let out = daemon.hfctl(&["logs", &job.to_string(), "mid.use"]);
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert!(out.stdout.is_empty(), "{}", shown(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        said.trim_end(),
        format!("hfctl: attempt 1 of gap.mid.use did not start: {error}"),
        "{}",
        shown(&out)
    );
    let json = daemon.hfctl(&["--json", "logs", &job.to_string(), "mid.use"]);
    assert_eq!(json.status.code(), Some(0), "{}", shown(&json));
    assert!(json.stderr.is_empty(), "{}", shown(&json));
}

/// Proves the refusal of a user daemon's 0600 socket names its owner and
/// says only they may use it, rather than a group that would not help.
#[test]
fn a_private_socket_refusal_names_its_owner() {
    let Some(accounts) = crate::users::accounts_or_skip("a_private_socket_refusal_names_its_owner")
    else {
        return;
    };
    let daemon = TestDaemon::start(&[("work.toml", WORK)]);
    let socket = daemon.socket();
    let meta = std::fs::metadata(socket).expect("the socket exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "a user socket");
    // The outsider may reach the socket (not its state directory).
    std::fs::set_permissions(daemon.dir(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod the test directory");
    let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid()))
        .ok()
        .flatten()
        .expect("the socket's owner exists")
        .name;

    let out = accounts.outsider.hfctl(socket, &["list"]);
    assert_eq!(out.status.code(), Some(7), "{}", shown(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        said.trim_end(),
        format!(
            "hfctl: permission denied on {}; only its owner '{owner}' may use it (mode 0600); \
             run hfctl as '{owner}', or start a daemon of your own",
            socket.display()
        ),
        "{}",
        shown(&out)
    );
    assert!(!said.contains("group"), "no group to join: {said}");
}

/// Proves every error hfctl prints starts `hfctl: `, whatever its source:
/// no daemon, the daemon's NOT_FOUND and INVALID_PARAMETERS, a file it
/// cannot read, a file it cannot write.
#[test]
fn every_error_line_starts_with_hfctl() {
    let daemon = TestDaemon::start(&[("work.toml", WORK)]);
    let job = daemon.submit("work", &[]);
    daemon.wait_done(job);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("missing.json");
    let unwritable = dir.path().join("no-such-dir").join("report.html");
    let cases: Vec<(Vec<String>, i32)> = vec![
        (vec!["status".into(), "999".into()], 6),
        (vec!["list".into(), "--since".into(), "soon".into()], 8),
        (
            vec![
                "submit".into(),
                "work".into(),
                "--params".into(),
                missing.display().to_string(),
            ],
            1,
        ),
        (
            vec![
                "report".into(),
                job.to_string(),
                "--html".into(),
                unwritable.display().to_string(),
            ],
            1,
        ),
    ];
    for (args, code) in cases {
        let out = daemon.hfctl(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", shown(&out));
        let said = String::from_utf8_lossy(&out.stderr);
        let first = said.lines().next().unwrap_or_default();
        assert!(first.starts_with("hfctl: "), "{args:?}: {said:?}");
    }
    let mut cmd = holdfast_tests::hfctl_command(&dir.path().join("nobody.sock"));
    cmd.arg("list");
    let out = holdfast_tests::run_with_deadline(cmd, std::time::Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(3), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("hfctl: no daemon answers on "),
        "{}",
        shown(&out)
    );
}

const HALF_DONE: &str = r#"
[process.p.activity.good]
shell = "true"

[process.p.activity.bad]
shell = 'echo "progress 40 loading facts" >&3; exit 1'
"#;

const HALF_CANCELLED: &str = r#"
[process.p.activity.good]
shell = "true"

[process.q]
after = ["p"]

[process.q.activity.slow]
shell = 'echo "progress 30 copying" >&3; sleep 300'
"#;

/// Proves a job that failed or was cancelled shows the share of its work
/// done (an activity that succeeded counts, one that failed or was
/// cancelled does not), not 100%; and that an ended activity's last
/// report is frozen in the data and shown as where it stopped.
#[test]
fn progress_is_the_work_done_not_the_end() {
    let daemon = TestDaemon::start(&[("half.toml", HALF_DONE), ("slow.toml", HALF_CANCELLED)]);
    let failed = daemon.submit("half", &[]);
    let job = daemon.wait_done(failed);
    assert_eq!(job.state, holdfast_api::JobState::Failed, "{job:#?}");
    assert_eq!(job.progress, 50.0, "one of two activities done: {job:#?}");
    let bad = crate::support::activity(&job, "p.bad");
    assert_eq!(
        (bad.progress, bad.progress_text.as_deref()),
        (Some(40.0), Some("loading facts")),
        "the last report is kept as it was"
    );
    let list = daemon.hfctl_json(&["list", "--chain", "half"]);
    assert_eq!(list["jobs"][0]["progress"], 50.0, "{list}");
    let text = String::from_utf8_lossy(&daemon.hfctl(&["status", &failed.to_string()]).stdout)
        .into_owned();
    assert!(
        text.contains("stopped at 40% loading facts"),
        "hfctl status shows where it stopped: {text}"
    );

    let cancelled = daemon.submit("slow", &[]);
    daemon.wait_for(cancelled, "q.slow reporting", |j| {
        j.activities
            .iter()
            .any(|a| a.activity == "slow" && a.progress == Some(30.0))
    });
    daemon.hfctl_json(&["cancel", &cancelled.to_string()]);
    let job = daemon.wait_done(cancelled);
    assert_eq!(job.state, holdfast_api::JobState::Cancelled, "{job:#?}");
    assert_eq!(job.progress, 50.0, "{job:#?}");
}
