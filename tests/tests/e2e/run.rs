//! Running jobs: parallel and serial activities, `after` order across
//! processes, priority in the queue and who submitted a job.

use holdfast_api::rpc::HoldfastClient;
use holdfast_api::{ActivityState, JobState};
use holdfast_tests::TestDaemon;

use crate::support::{activity, intervals, timed};

#[test]
fn parallel_activities_overlap_and_serial_ones_do_not() {
    let chain = format!(
        r#"
[chain]
description = "two at once, then two in a row"
max_parallel = 4

[defaults]
retries = 0

[process.fan]
mode = "parallel"

[process.fan.activity.a]
shell = '{a}'

[process.fan.activity.b]
shell = '{b}'

[process.line]
mode = "serial"
after = ["fan"]

[process.line.activity.c]
shell = '{c}'

[process.line.activity.d]
shell = '{d}'
"#,
        a = timed("fan.a", "0.3"),
        b = timed("fan.b", "0.3"),
        c = timed("line.c", "0.3"),
        d = timed("line.d", "0.3"),
    );
    let daemon = TestDaemon::start(&[("shape.toml", &chain)]);
    let job_id = daemon.submit("shape", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    for activity in &job.activities {
        assert_eq!(activity.state, ActivityState::Succeeded, "{activity:#?}");
        assert_eq!(activity.attempts.len(), 1, "{activity:#?}");
    }

    let times = intervals(daemon.dir());
    let (a, b, c, d) = (
        times["fan.a"],
        times["fan.b"],
        times["line.c"],
        times["line.d"],
    );
    assert!(
        a.overlaps(b),
        "parallel activities ran one after the other: a {a:?}, b {b:?}"
    );
    assert!(
        !c.overlaps(d),
        "serial activities overlapped: c {c:?}, d {d:?}"
    );
    assert!(
        c.end <= d.start,
        "serial activities did not run in file order: c {c:?}, d {d:?}"
    );
    assert!(
        a.end.max(b.end) <= c.start,
        "`line` started before `fan` ended: a {a:?}, b {b:?}, c {c:?}"
    );
}

#[test]
fn after_orders_processes_across_the_graph() {
    // Declared in the reverse of the order they must run in, so that file
    // order cannot pass for dependency order.
    let chain = format!(
        r#"
[defaults]
retries = 0

[process.last]
after = ["left", "right"]

[process.last.activity.z]
shell = '{z}'

[process.right]
after = ["first"]

[process.right.activity.r]
shell = '{r}'

[process.left]
after = ["first"]

[process.left.activity.l]
shell = '{l}'

[process.first]
mode = "parallel"

[process.first.activity.f1]
shell = '{f1}'

[process.first.activity.f2]
shell = '{f2}'
"#,
        z = timed("z", "0.1"),
        r = timed("r", "0.1"),
        l = timed("l", "0.1"),
        f1 = timed("f1", "0.1"),
        f2 = timed("f2", "0.1"),
    );
    let daemon = TestDaemon::start(&[("diamond.toml", &chain)]);
    let job_id = daemon.submit("diamond", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.activities.len(), 5, "{job:#?}");

    let times = intervals(daemon.dir());
    let first_end = times["f1"].end.max(times["f2"].end);
    for name in ["l", "r"] {
        assert!(
            times[name].start >= first_end,
            "{name} started before `first` ended: {times:?}"
        );
    }
    let middle_end = times["l"].end.max(times["r"].end);
    assert!(
        times["z"].start >= middle_end,
        "z started before `left` and `right` ended: {times:?}"
    );
}

#[test]
fn higher_priority_job_starts_first() {
    let block = r#"
[process.p.activity.hold]
shell = "sleep 30"
"#;
    let work = r#"
[params.name]
type = "string"
required = true

[process.p.activity.note]
shell = 'echo "$HF_PARAM_NAME" >> @DIR@/order'
"#;
    let daemon = TestDaemon::start_with(
        "max_parallel = 1\n",
        &[("block.toml", block), ("work.toml", work)],
    );
    let blocker = daemon.submit("block", &[]);
    daemon.wait_for(blocker, "running its activity", |job| {
        job.activities
            .iter()
            .any(|a| a.state == ActivityState::Running)
    });
    let low = daemon.submit("work", &["-p", "name=low", "--priority", "1"]);
    let high = daemon.submit("work", &["-p", "name=high", "--priority", "10"]);

    let listed = daemon.hfctl_json(&["list", "--chain", "work"]);
    let ids: Vec<u64> = listed["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("`list --json` has no jobs array: {listed}"))
        .iter()
        .filter_map(|job| job["id"].as_u64())
        .collect();
    assert!(
        ids.contains(&low) && ids.contains(&high) && !ids.contains(&blocker),
        "`list --chain work` should show jobs {low} and {high} only: {listed}"
    );
    assert!(
        !daemon.dir().join("order").exists(),
        "a job ran while the only slot was taken"
    );

    let cancel = daemon.hfctl(&["cancel", &blocker.to_string()]);
    assert!(
        cancel.status.success(),
        "{}",
        crate::support::shown(&cancel)
    );
    let low_job = daemon.wait_done(low);
    let high_job = daemon.wait_done(high);
    assert_eq!(low_job.state, JobState::Succeeded, "{low_job:#?}");
    assert_eq!(high_job.state, JobState::Succeeded, "{high_job:#?}");
    assert_eq!(high_job.priority, 10);
    assert_eq!(low_job.priority, 1);

    let order = std::fs::read_to_string(daemon.dir().join("order")).expect("both jobs wrote");
    assert_eq!(
        order, "high\nlow\n",
        "the priority 10 job should run before the earlier priority 1 job"
    );
}

#[tokio::test]
async fn a_job_records_who_submitted_it() {
    let chain = r#"
[process.p.activity.a]
command = ["true"]
"#;
    let daemon = TestDaemon::start(&[("who.toml", chain)]);
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .expect("the user database can be read")
        .map(|u| u.name);

    let by_hfctl = daemon.submit("who", &[]);
    let client = daemon.client().await;
    let by_rpc = client
        .job_submit("who".to_string(), None, None, None, None, None, None, None)
        .await
        .expect("job.submit over WebSocket works")
        .job_id;
    assert_ne!(by_hfctl, by_rpc, "two submissions got the same job id");

    for job_id in [by_hfctl, by_rpc] {
        let job = daemon.wait_done(job_id);
        assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
        assert_eq!(job.submitter_uid, Some(uid.as_raw()), "{job:#?}");
        match &user {
            Some(name) => assert_eq!(&job.submitted_by, name, "{job:#?}"),
            None => assert!(!job.submitted_by.is_empty(), "{job:#?}"),
        }
        assert_eq!(activity(&job, "p.a").state, ActivityState::Succeeded);
    }
}
