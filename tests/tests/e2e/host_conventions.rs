//! What a host expects of a daemon and the programs it starts: a log
//! redirected to a file is plain text, and activities get the soft
//! open-files limit programs are written for, whatever the daemon's own.

use holdfast_api::JobState;
use holdfast_tests::TestDaemon;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Prints the activity's open-files limits: soft and hard from the shell,
/// and the kernel's own line.
const LIMITS: &str = r#"
[process.p.activity.plain]
shell = "echo soft=$(ulimit -Sn) hard=$(ulimit -Hn); grep 'Max open files' /proc/self/limits"
retries = 0

[process.p.activity.capped]
shell = "echo soft=$(ulimit -Sn) hard=$(ulimit -Hn)"
nofile = 256
retries = 0
"#;

const FAILS: &str = r#"
[process.p.activity.boom]
shell = "echo about to fail >&2; exit 3"
retries = 0
"#;

/// Proves the daemon writes no colour escapes when stderr is not a
/// terminal: the fixture sends the daemon's stderr to a file, a job runs
/// and fails (so the log holds info, warn and error lines with fields), and
/// the file holds no ESC byte.
#[test]
fn a_redirected_log_has_no_colour_escapes() {
    let daemon = TestDaemon::start(&[("fails.toml", FAILS)]);
    let job_id = daemon.submit("fails", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let log = std::fs::read(daemon.log_path()).expect("read the daemon's log");
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("job_id=") || text.contains("job "),
        "the log has the job's lines: {text}"
    );
    let escapes = log.iter().filter(|&&b| b == 0x1b).count();
    assert_eq!(escapes, 0, "escape sequences in a redirected log: {text}");
}

/// Proves an activity without `nofile` starts with a soft RLIMIT_NOFILE
/// of 1024 (select() and many programs assume it) while the daemon's own
/// soft limit is higher, keeping the hard limit so it may raise it; and
/// that `nofile` still sets both limits.
#[test]
fn activities_get_the_conventional_soft_open_files_limit() {
    // The daemon inherits a raised soft limit, as under systemd's
    // LimitNOFILE=65536.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let raised = hard.min(65536);
    assert!(
        raised > 1024,
        "the hard open-files limit ({hard}) leaves nothing to test"
    );
    setrlimit(Resource::RLIMIT_NOFILE, raised, hard).expect("raise the soft limit");
    let daemon = TestDaemon::start(&[("limits.toml", LIMITS)]);
    let pid = daemon.pid().expect("the daemon runs");
    let daemon_limits =
        std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("the daemon's limits");
    let line = daemon_limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-files line");
    assert!(
        line.split_whitespace().nth(3) == Some(&raised.to_string()),
        "the daemon keeps its raised soft limit: {line}"
    );

    let job_id = daemon.submit("limits", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let hard_shown = if hard == nix::libc::RLIM_INFINITY {
        "unlimited".to_string()
    } else {
        hard.to_string()
    };
    let plain = daemon.logs(job_id, "p.plain", None);
    assert!(
        plain.contains(&format!("soft=1024 hard={hard_shown}")),
        "an activity without nofile: {plain}"
    );
    let kernel = plain
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no limits line: {plain}"));
    assert_eq!(
        kernel.split_whitespace().nth(3),
        Some("1024"),
        "the kernel agrees: {kernel}"
    );
    let capped = daemon.logs(job_id, "p.capped", None);
    assert!(
        capped.contains("soft=256 hard=256"),
        "nofile = 256 sets both: {capped}"
    );
}

/// Proves the log's messages say what happened on their own (the journal
/// shows the message without `-o verbose`): the job, its chain, the
/// activity, the reason and the error id of a failure; the directory being
/// watched; and the state directory's instance id, made once and kept
/// across a restart.
#[test]
fn log_messages_say_what_happened() {
    let mut daemon = TestDaemon::start(&[("fails.toml", FAILS)]);
    let job_id = daemon.submit("fails", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let error_id = job.activities[0].attempts[0]
        .error_id
        .clone()
        .expect("an error id");
    let log = std::fs::read_to_string(daemon.log_path()).expect("read the daemon's log");
    for expected in [
        format!("job {job_id} (fails) submitted by "),
        format!("job {job_id} (fails): p.boom attempt 1 started"),
        format!("job {job_id} (fails) failed: p.boom exited with code 3 [{error_id}]"),
        format!("job {job_id} (fails) finished: failed"),
        format!("watching {} for changes", daemon.workflows_dir().display()),
    ] {
        assert!(log.contains(&expected), "no {expected:?} in the log: {log}");
    }

    let id_file = daemon.state_dir().join("instance-id");
    let instance = std::fs::read_to_string(&id_file).expect("the state directory's instance-id");
    let instance = instance.trim().to_string();
    assert_eq!(instance.len(), 32, "{instance}");
    assert!(
        log.contains(&format!("instance {instance} of state directory")),
        "{log}"
    );
    daemon.restart();
    let again = std::fs::read_to_string(&id_file).expect("instance-id after a restart");
    assert_eq!(again.trim(), instance, "the id is kept across restarts");
}

/// Context switches of every thread of `pid` so far.
fn switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads");
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Proves an idle daemon sleeps: with workflow files loaded and watched
/// and nothing to run, its threads wake (almost) never. Every wait in it is
/// for an event (a file change, a connection, a timer that is due), not a
/// poll; a watcher or timer that ticks would add dozens of wake-ups a
/// second (the file watcher's former debouncer added 27).
#[test]
fn an_idle_daemon_does_not_wake_up() {
    let daemon = TestDaemon::start(&[("quiet.toml", FAILS)]);
    daemon.hfctl_json(&["info"]);
    let pid = daemon.pid().expect("the daemon's pid");
    let window = std::time::Duration::from_secs(2);
    let before = switches(pid);
    // A measurement window, not a wait for readiness: the daemon is ready.
    std::thread::sleep(window);
    let woke = switches(pid) - before;
    assert!(
        woke <= 10,
        "an idle daemon woke {woke} times in {window:?}; something polls"
    );
}
