//! Live views: `hfctl wait` and `submit --follow` outliving a kill -9 of
//! the daemon, `logs -f` following a whole job and an activity through its
//! retries, and `hfctl ps` saying why queued and stalled jobs wait.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use holdfast_api::{ActivityState, JobState, WaitReason};
use holdfast_tests::{HFCTL_TIMEOUT, TestDaemon, eventually, finish_child_output};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::shown;

/// How long a step the daemon takes promptly may take on a loaded machine.
const STEP: Duration = Duration::from_secs(30);

/// Whether `child` holds a Unix socket connected to the daemon listening
/// on `socket`: hfctl has connected to it. A socket merely created is not
/// enough (killed before its `connect`, the daemon would be absent for
/// hfctl's first call, which `hfctl wait` rightly reports as no daemon
/// running), and neither is any connected one: hfctl's runtime holds a
/// socket pair of its own from the start. So the peer of one of its
/// sockets must be bound to `socket`, as `ss -x` shows (each line: local
/// address and inode, peer address and inode).
fn connected_to(child: &Child, socket: &Path) -> Result<(), String> {
    let fds = std::fs::read_dir(format!("/proc/{}/fd", child.id())).map_err(|e| e.to_string())?;
    let inodes: Vec<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_string())
        })
        .collect();
    let listed = std::process::Command::new("ss")
        .args(["-x", "-H", "state", "connected"])
        .output()
        .map_err(|e| format!("cannot run ss: {e}"))?;
    let table = String::from_utf8_lossy(&listed.stdout);
    // `u_str ESTAB 0 0 LOCAL INODE PEER INODE` (the state column is left
    // out when one state is asked for; the last four fields are the same).
    let sockets: Vec<[&str; 4]> = table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let n = fields.len();
            (n >= 4).then(|| [fields[n - 4], fields[n - 3], fields[n - 2], fields[n - 1]])
        })
        .collect();
    let daemon = socket.to_string_lossy();
    let connected = sockets.iter().any(|[_, inode, _, peer]| {
        inodes.iter().any(|i| i == inode)
            && sockets
                .iter()
                .any(|[address, own, _, _]| own == peer && *address == daemon)
    });
    if connected {
        Ok(())
    } else {
        Err(format!("no socket connected to {daemon} yet"))
    }
}

fn wait_for_file(path: &Path) {
    eventually(STEP, &format!("{} to exist", path.display()), || {
        if path.exists() { Ok(()) } else { Err("absent") }
    });
}

/// Its first attempt sleeps; after a restart, the next attempt fails.
pub const INTERRUPTED: &str = r#"
[process.p.activity.a]
shell = '''
if [ -e @DIR@/first-run ]; then
  echo second attempt
  exit 3
fi
touch @DIR@/first-run
echo first attempt
exec sleep 30
'''
retries = 0
"#;

/// `hfctl wait JOB` and `hfctl submit --follow`, both connected when the
/// daemon is killed with SIGKILL mid-job, connect again once it is back and
/// end with the job's outcome (exit code 4: failed); `--follow` goes on
/// writing the log of the attempt that runs after the restart. Without the
/// reconnecting watch both would end with exit code 1 at the kill.
#[test]
fn wait_and_follow_outlive_a_kill_9_of_the_daemon() {
    let mut daemon = TestDaemon::start(&[("crash.toml", INTERRUPTED)]);
    let follower = daemon.hfctl_spawn(&["submit", "crash", "--follow"]);
    wait_for_file(&daemon.dir().join("first-run"));
    let listed = daemon.hfctl_json(&["list"]);
    let job_id = listed["jobs"][0]["id"].as_u64().expect("the submitted job");
    let running = daemon.wait_for(job_id, "attempt 1 running", |job| {
        job.activities[0].state == ActivityState::Running
    });
    let waiter = daemon.hfctl_spawn(&["wait", &job_id.to_string()]);
    eventually(STEP, "hfctl wait connected", || {
        connected_to(&waiter, daemon.socket())
    });

    daemon.kill9();
    if let Some(pid) = running.activities[0].attempts[0].pid {
        // The old attempt's `sleep` outlives a daemon killed with SIGKILL.
        let _ = kill(Pid::from_raw(-(pid as i32)), Signal::SIGKILL);
    }
    daemon.launch();

    let waited = finish_child_output(waiter, HFCTL_TIMEOUT);
    let followed = finish_child_output(follower, HFCTL_TIMEOUT);
    let job = daemon.status(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!(waited.status.code(), Some(4), "{}", shown(&waited));
    let stdout = String::from_utf8_lossy(&waited.stdout);
    assert!(
        stdout.contains(&format!("job {job_id} crash failed")),
        "{}",
        shown(&waited)
    );
    assert!(
        String::from_utf8_lossy(&waited.stderr).contains("connecting again"),
        "hfctl wait saw the daemon go: {}",
        shown(&waited)
    );
    assert_eq!(followed.status.code(), Some(4), "{}", shown(&followed));
    let log = String::from_utf8_lossy(&followed.stdout);
    assert!(log.contains("p.a | first attempt"), "{}", shown(&followed));
    assert!(
        log.contains("p.a | second attempt"),
        "the attempt after the restart is followed too: {}",
        shown(&followed)
    );
}

/// `hfctl wait --timeout` gives up with exit code 12 on a job that does not
/// end in time, and `hfctl wait` on several jobs exits by the worst outcome.
#[test]
fn wait_times_out_and_reports_the_worst_outcome() {
    let chains = [
        ("ok.toml", "[process.p.activity.a]\ncommand = [\"true\"]\n"),
        (
            "bad.toml",
            "[process.p.activity.a]\ncommand = [\"false\"]\nretries = 0\n",
        ),
        (
            "slow.toml",
            "[process.p.activity.a]\ncommand = [\"sleep\", \"30\"]\n",
        ),
    ];
    let daemon = TestDaemon::start(&chains);
    let ok = daemon.submit("ok", &[]);
    let bad = daemon.submit("bad", &[]);
    let slow = daemon.submit("slow", &[]);
    let both = daemon.hfctl(&["wait", &ok.to_string(), &bad.to_string()]);
    assert_eq!(both.status.code(), Some(4), "{}", shown(&both));
    let text = String::from_utf8_lossy(&both.stdout);
    assert!(text.contains(&format!("job {ok} ok succeeded")), "{text}");
    assert!(text.contains(&format!("job {bad} bad failed")), "{text}");
    let alone = daemon.hfctl(&["wait", &ok.to_string()]);
    assert_eq!(alone.status.code(), Some(0), "{}", shown(&alone));

    let timed_out = daemon.hfctl(&["wait", "--timeout", "0.5", &slow.to_string()]);
    assert_eq!(timed_out.status.code(), Some(12), "{}", shown(&timed_out));
    assert!(
        String::from_utf8_lossy(&timed_out.stderr).contains("had not ended after 0.5s"),
        "{}",
        shown(&timed_out)
    );
    daemon.hfctl(&["cancel", &slow.to_string()]);
}

const RETRIED: &str = r#"
[process.p]
mode = "parallel"

[process.p.activity.flaky]
shell = '''
if [ -e @DIR@/once ]; then
  echo attempt-two
  exit 0
fi
touch @DIR@/once
echo attempt-one
while [ ! -e @DIR@/go ]; do sleep 0.05; done
exit 1
'''
retries = 1
retry_delay = "1s"

[process.p.activity.steady]
shell = '''
echo steady-line
while [ ! -e @DIR@/go ]; do sleep 0.05; done
echo steady-done
'''
"#;

/// `hfctl logs JOB ACTIVITY -f` started during attempt 1 stays through the
/// retry delay and writes attempt 2 to its end (it used to stop when
/// attempt 1 failed); `hfctl logs JOB -f` follows every activity of the
/// job, each line prefixed with its activity, until the job ends.
#[test]
fn logs_follow_through_retries_and_the_whole_job() {
    let daemon = TestDaemon::start(&[("retried.toml", RETRIED)]);
    let job_id = daemon.submit("retried", &[]);
    daemon.wait_for(job_id, "both activities running", |job| {
        job.activities
            .iter()
            .all(|a| a.state == ActivityState::Running)
    });
    let id = job_id.to_string();
    let one = daemon.hfctl_spawn(&["logs", &id, "p.flaky", "-f"]);
    let whole = daemon.hfctl_spawn(&["logs", &id, "-f"]);
    eventually(STEP, "followers connected", || {
        connected_to(&one, daemon.socket()).and_then(|()| connected_to(&whole, daemon.socket()))
    });
    std::fs::write(daemon.dir().join("go"), "").expect("the go file");

    let one = finish_child_output(one, HFCTL_TIMEOUT);
    let whole = finish_child_output(whole, HFCTL_TIMEOUT);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(one.status.success(), "{}", shown(&one));
    assert_eq!(
        String::from_utf8_lossy(&one.stdout),
        "attempt-one\nattempt-two\n",
        "{}",
        shown(&one)
    );
    assert!(
        String::from_utf8_lossy(&one.stderr).contains("p.flaky attempt 2 starts"),
        "{}",
        shown(&one)
    );
    assert!(whole.status.success(), "{}", shown(&whole));
    let mut lines: Vec<String> = String::from_utf8_lossy(&whole.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "p.flaky | attempt-one",
            "p.flaky | attempt-two",
            "p.steady | steady-done",
            "p.steady | steady-line"
        ],
        "{}",
        shown(&whole)
    );
}

const GATE: &str = r#"
[chain]
concurrency = 1

[process.p.activity.hold]
shell = 'while [ ! -e @DIR@/go ]; do sleep 0.05; done'
"#;

const WIDE: &str = r#"
[process.p.activity.a]
command = ["true"]
"#;

const FLAKY: &str = r#"
[process.p.activity.a]
command = ["false"]
retries = 1
retry_delay = "1h"
"#;

/// The wait reason of `job_id` in `hfctl --json ps`.
fn reason_in_ps(daemon: &TestDaemon, job_id: u64) -> Option<Value> {
    let ps = daemon.hfctl_json(&["ps"]);
    ps["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["id"].as_u64() == Some(job_id))
        .map(|j| j["waiting"].clone())
}

/// With the daemon's `max_parallel = 1` taken by a running job: a second
/// job of a `concurrency = 1` chain waits for its chain, a job of another
/// chain waits for `max_parallel`, and a job whose activity failed waits
/// out its retry delay (with the time it ends); `hfctl ps` lists the
/// queued jobs with these reasons, and `job.get` carries them too.
#[test]
fn ps_shows_queued_jobs_and_why_each_waits() {
    let daemon = TestDaemon::start_with(
        "max_parallel = 1\n",
        &[
            ("gate.toml", GATE),
            ("wide.toml", WIDE),
            ("flaky.toml", FLAKY),
        ],
    );
    let flaky = daemon.submit("flaky", &[]);
    daemon.wait_for(flaky, "in its retry delay", |job| {
        job.activities[0].state == ActivityState::RetryWait
    });
    let first = daemon.submit("gate", &[]);
    daemon.wait_for(first, "running", |job| {
        job.activities[0].state == ActivityState::Running
    });
    let second = daemon.submit("gate", &[]);
    let third = daemon.submit("gate", &[]);
    let wide = daemon.submit("wide", &[]);

    let reason = |job: u64| -> Result<WaitReason, String> {
        let waiting = reason_in_ps(&daemon, job).ok_or("not listed by ps")?;
        serde_json::from_value::<WaitReason>(waiting["reason"].clone())
            .map_err(|e| format!("job {job} waits for no reason ({e}): {waiting}"))
    };
    // The engine admits a job in the pass after its submission: wait for it.
    eventually(STEP, "each job's wait reason", || {
        let seen = [reason(second)?, reason(wide)?, reason(flaky)?];
        let expected = [
            WaitReason::ChainConcurrency,
            WaitReason::MaxParallel,
            WaitReason::RetryDelay,
        ];
        if seen == expected {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    let retry = reason_in_ps(&daemon, flaky).expect("listed");
    assert!(retry["until"].is_string(), "the delay's end: {retry}");
    assert!(
        reason_in_ps(&daemon, first).is_some_and(|w| w.is_null()),
        "the running job waits for nothing"
    );
    assert_eq!(
        daemon.status(second).waiting.map(|w| w.reason),
        Some(WaitReason::ChainConcurrency),
        "job.get says it too"
    );

    let table = daemon.hfctl(&["ps"]);
    let text = String::from_utf8_lossy(&table.stdout);
    let line_of = |job: u64| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{job} ")))
            .unwrap_or_else(|| panic!("job {job} in ps: {text}"))
            .to_string()
    };
    assert!(line_of(second).contains("queued"), "{text}");
    assert!(
        line_of(second).contains("chain_concurrency: chain gate runs 1 of its concurrency 1"),
        "{text}"
    );
    // Positions in the queue, from one listing and from job.get alike.
    assert!(line_of(second).contains("; 0 queued ahead"), "{text}");
    assert!(line_of(third).contains("; 1 queued ahead"), "{text}");
    let detail = daemon.status(third).waiting.map(|w| w.detail);
    assert!(
        detail
            .as_deref()
            .is_some_and(|d| d.ends_with("; 1 queued ahead")),
        "{detail:?}"
    );
    assert!(line_of(wide).contains("max_parallel"), "{text}");
    assert!(
        line_of(flaky).contains("retry_delay: p.a waits to retry"),
        "{text}"
    );

    std::fs::write(daemon.dir().join("go"), "").expect("the go file");
    daemon.hfctl(&["cancel", &flaky.to_string()]);
    for job in [first, second, third, wide] {
        assert_eq!(daemon.wait_done(job).state, JobState::Succeeded);
    }
}
