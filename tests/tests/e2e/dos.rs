//! Denial of service by a socket member: one user holding idle connections
//! by the hundred or more subscriptions than its share, the daemon running
//! out of file descriptors, and log followers that never read. Each time
//! the others must still be served, jobs must still run, and the daemon
//! must neither flood its log, spin, nor grow without bound.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_api::rpc::HoldfastClient;
use holdfast_api::{AttemptState, Job, JobState};
use holdfast_tests::users::{self, Account, STANDARD_PATH, SystemDaemon};
use holdfast_tests::{
    TestDaemon, eventually, finish_child, finish_child_output, hfctl_command, run_with_deadline,
};

use crate::faults::open_fds;
use crate::support::{activity, shown};
use crate::users::accounts_or_skip;

/// How long `hfctl info` may take while the daemon is under attack.
const RESPONSIVE: Duration = Duration::from_secs(5);
/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// One activity that succeeds at once.
const QUICK: &str = r#"
[process.p.activity.a]
command = ["true"]
"#;

/// The pid of the daemon serving `socket`, from the peer credentials of a
/// connection (the system daemon's child handle is the fixture's own).
fn daemon_pid(socket: &Path) -> u32 {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let stream = UnixStream::connect(socket).expect("the daemon's socket takes a connection");
    let cred = getsockopt(&stream, PeerCredentials).expect("the socket has peer credentials");
    u32::try_from(cred.pid()).expect("a pid is positive")
}

/// CPU time (user and system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat is readable");
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15, so 11 and 12 here.
    Duration::from_millis((fields[11] + fields[12]) * 1000 / TICKS_PER_SECOND)
}

/// Resident memory of the process in bytes (VmRSS).
fn rss(pid: u32) -> u64 {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status is readable");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("status has VmRSS")
        * 1024
}

/// Lines of the daemon's log that contain `text`.
fn log_lines(daemon: &TestDaemon, text: &str) -> usize {
    fs::read_to_string(daemon.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

/// CPU the process uses over `window` (an observation, not a wait).
fn cpu_over(pid: u32, window: Duration) -> Duration {
    let before = cpu_time(pid);
    std::thread::sleep(window);
    cpu_time(pid).saturating_sub(before)
}

/// `hfctl --json info` as root, required to answer within [`RESPONSIVE`].
fn info_answers(socket: &Path) {
    let mut cmd = hfctl_command(socket);
    cmd.args(["--json", "info"]);
    let output = run_with_deadline(cmd, RESPONSIVE);
    assert!(
        output.status.success(),
        "hfctl info failed: {}",
        shown(&output)
    );
}

/// A command that runs what follows it as `account` (uid, primary gid and
/// supplementary groups) in a small clean environment.
fn as_user(account: &Account) -> Command {
    let mut cmd = Command::new(users::tool("setpriv").unwrap_or_else(|e| panic!("{e}")));
    cmd.arg(format!("--reuid={}", account.uid))
        .arg(format!("--regid={}", account.gid))
        .arg("--init-groups")
        .arg("--")
        .env_clear()
        .env("PATH", STANDARD_PATH)
        .env("HOME", &account.home);
    cmd
}

/// Open `count` connections to `socket` as `account` and keep them open,
/// sending nothing, until the returned child's stdin is closed. Returns once
/// every connection is made (the kernel queues what the daemon has not
/// accepted yet, so this does not depend on the daemon serving them).
/// Perl (`perl-base`, always on Debian) holds them, as only a process
/// running as the user can connect as it.
fn hold_connections(account: &Account, socket: &Path, count: usize) -> Child {
    const SCRIPT: &str = r#"
use IO::Socket::UNIX;
my ($path, $count) = @ARGV;
my @held;
for (1 .. $count) {
    push @held, IO::Socket::UNIX->new(Peer => $path) or die "connect: $!\n";
}
$| = 1;
print scalar(@held), "\n";
<STDIN>;
"#;
    let mut child = as_user(account)
        .arg(users::tool("perl").unwrap_or_else(|e| panic!("{e}")))
        .arg("-e")
        .arg(SCRIPT)
        .arg(socket)
        .arg(count.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv and perl can be run");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("the holder says how many it holds");
    assert_eq!(
        line.trim(),
        count.to_string(),
        "the holder made every connection"
    );
    child
}

/// One user holding 400 idle connections gets only its
/// `max_connections_per_user` of them served (the rest are answered 503 and
/// closed, so the daemon's descriptors do not grow with them), while root
/// and another user still connect, a job still runs, the refusals are
/// logged a few times rather than 400, and the daemon does not spin. Before
/// the caps every idle connection held a descriptor until the daemon ran
/// out of them.
#[test]
fn idle_connections_of_one_user_cannot_starve_the_others() {
    const HELD: usize = 400;
    /// The default `max_connections_per_user` (left unset, so the same
    /// settings start a daemon from before the caps).
    const PER_USER: usize = 64;
    let Some(accounts) = accounts_or_skip("idle_connections_of_one_user_cannot_starve_the_others")
    else {
        return;
    };
    let settings = "socket_group = \"hft-sock\"\nrun_as_default = \"hft-runas\"\n";
    let daemon = SystemDaemon::start(settings, &[("quick.toml", QUICK)], &[]);
    let pid = daemon_pid(daemon.socket());
    let baseline = open_fds(pid);

    let mut holder = hold_connections(&accounts.member, daemon.socket(), HELD);
    // The daemon takes every queued connection off the backlog and keeps
    // only the user's share.
    eventually(
        Duration::from_secs(30),
        "the daemon holds only the user's share of its idle connections",
        || {
            let now = open_fds(pid);
            if now <= baseline + PER_USER + 4 {
                Ok(now)
            } else {
                Err(format!("{now} descriptors open (baseline {baseline})"))
            }
        },
    );

    // The same user is turned away, with the reason...
    let refused = accounts.member.hfctl(daemon.socket(), &["--json", "info"]);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("close idle clients"),
        "a user past max_connections_per_user must be refused, and told why: {}",
        shown(&refused)
    );
    // ...while another user and root get in, and jobs run.
    let other = accounts
        .etl_member
        .hfctl(daemon.socket(), &["--json", "info"]);
    assert!(
        other.status.success(),
        "another user is refused: {}",
        shown(&other)
    );
    info_answers(daemon.socket());
    let job_id = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(job_id).state, JobState::Succeeded);

    // Hundreds of refusals, a few warnings; and nothing spins meanwhile.
    let warnings = log_lines(&daemon, "connection refused");
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} refusal warnings for ~{HELD} refusals"
    );
    let used = cpu_over(pid, Duration::from_secs(2));
    assert!(
        used < Duration::from_millis(300),
        "the daemon used {used:?} of CPU in 2 s while idle connections were held"
    );

    drop(holder.stdin.take());
    let _ = holder.wait();
}

/// Chain for the descriptor test: one activity looked up by user name
/// (root, allowed explicitly) and one plain; neither may retry, so a
/// success after a failed start shows that the failed start used no retry.
const STARVED: &str = r#"
[process.a.activity.lookup]
user = "root"
command = ["true"]
retries = 0

[process.b.activity.plain]
command = ["true"]
retries = 0
"#;

/// The soft RLIMIT_NOFILE of process `pid`, from /proc.
fn soft_nofile(pid: u32) -> u64 {
    let limits =
        fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc/PID/limits is readable");
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
        .expect("the limits have a numeric Max open files")
}

/// Set the soft RLIMIT_NOFILE of process `pid` (the hard one is kept).
fn set_nofile(pid: u32, soft: u64) {
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={soft}:"))
        .status()
        .expect("prlimit (util-linux) can be run");
    assert!(status.success(), "prlimit failed: {status}");
}

/// The daemon really runs out of descriptors (its soft RLIMIT_NOFILE is
/// lowered to what it holds, plus a few that root's connections then take):
/// accepting backs off with one warning instead of spinning and logging
/// each failure; a job submitted meanwhile (on a connection opened before)
/// cannot start its activities, and they are requeued, not failed, with a
/// message that says why (not "user does not exist"); once descriptors are
/// free again both run and the job succeeds although neither may retry.
#[tokio::test]
async fn running_out_of_descriptors_requeues_activities_truthfully() {
    let daemon = TestDaemon::start_with(
        "run_as_allowed = [\"root\"]\n",
        &[("starved.toml", STARVED)],
    );
    let pid = daemon.pid().expect("the daemon runs");
    let client = daemon.client().await;
    client.daemon_info().await.expect("the client is connected");

    let original = soft_nofile(pid);
    // A few descriptors of room, then connections that take them and more
    // that wait in the backlog.
    let limit = open_fds(pid) as u64 + 4;
    set_nofile(pid, limit);
    let held: Vec<UnixStream> = (0..32)
        .map(|_| UnixStream::connect(daemon.socket()).expect("the kernel queues a connection"))
        .collect();
    eventually(
        Duration::from_secs(20),
        "the daemon runs out of descriptors",
        || {
            let open = open_fds(pid) as u64;
            if open >= limit {
                Ok(())
            } else {
                Err(format!("{open} of {limit} open"))
            }
        },
    );

    let submitted = client
        .job_submit("starved".into(), None, None, None, None, None, None, None)
        .await
        .expect("the submission goes through the open connection");
    // Each activity's first attempt fails to start.
    let deferred = |job: &Job| {
        ["a.lookup", "b.plain"].iter().all(|path| {
            activity(job, path)
                .attempts
                .first()
                .is_some_and(|a| a.state == AttemptState::SpawnError)
        })
    };
    let began = Instant::now();
    loop {
        // Reads may fail too while the daemon has no descriptors.
        if let Ok(job) = client.job_get(submitted.job_id).await
            && deferred(&job)
        {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the activities did not try to start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Out of descriptors with connections waiting: no spinning, no flood.
    let used = cpu_over(pid, Duration::from_secs(2));
    assert!(
        used < Duration::from_millis(500),
        "the daemon used {used:?} of CPU in 2 s while out of descriptors"
    );
    let warnings = log_lines(&daemon, "accept");
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings about accept in a few seconds"
    );

    // Descriptors come back: both activities start and the job succeeds.
    set_nofile(pid, original);
    drop(held);
    let job = daemon.wait_done(submitted.job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    // The run-as activity needs a descriptor for its user's look-up, then
    // two for its pipes. Its look-up usually fails first; but a descriptor
    // the daemon frees for a moment (for instance a connection over the
    // cap, answered and closed) can let it through, and then its pipes
    // fail. Either way the error must say why, truthfully.
    for (path, causes) in [
        ("a.lookup", &["cannot look up", "cannot create pipes"][..]),
        ("b.plain", &["cannot create pipes"][..]),
    ] {
        let run = activity(&job, path);
        assert!(run.attempts.len() >= 2, "{path}: {:?}", run.attempts);
        let first = &run.attempts[0];
        assert_eq!(first.state, AttemptState::SpawnError, "{path}: {first:?}");
        let error = first.error.as_deref().unwrap_or("");
        assert!(
            error.contains("out of file descriptors") && causes.iter().any(|c| error.contains(c)),
            "{path}: the first attempt's error says why: {error}"
        );
        assert!(!error.contains("does not exist"), "{path}: {error}");
        assert_eq!(
            run.attempts.last().map(|a| a.state),
            Some(AttemptState::Succeeded)
        );
    }
}

/// A raw WebSocket connection that subscribes and then never reads: the
/// upgrade and the JSON-RPC requests are written by hand (client frames
/// masked with a zero key), and nothing is ever read from the socket.
fn silent_follower(socket: &Path, requests: &[String]) -> UnixStream {
    let mut stream = UnixStream::connect(socket).expect("a client can connect");
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .expect("the upgrade can be sent");
    for request in requests {
        let payload = request.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        stream
            .write_all(&frame)
            .expect("a request frame can be sent");
    }
    stream
}

/// Chatty jobs: each activity writes 16 MB of text at once.
const CHATTY: &str = r#"
[process.p.activity.chatty]
shell = "yes 'chatter: some text to fill the log with, line after line' | head -c 16000000"
"#;

/// Four connections each follow the logs of four 16 MB jobs and never
/// read. Before, each follower read its log in 1 MiB chunks into a queue
/// of 1024 messages per connection, so the daemon's RSS grew by the sum of
/// the logs (256 MB here; 2 GB in the report); now each follower waits for
/// its connection's small queue, and RSS stays within a few MB of where it
/// was, while `hfctl` is still answered and jobs still run.
#[test]
fn followers_that_never_read_cannot_grow_the_daemon() {
    const JOBS: usize = 4;
    const CONNECTIONS: usize = 4;
    let daemon = TestDaemon::start_with(
        "log_max_bytes = \"32M\"\n",
        &[("chatty.toml", CHATTY), ("quick.toml", QUICK)],
    );
    let pid = daemon.pid().expect("the daemon runs");
    let jobs: Vec<u64> = (0..JOBS).map(|_| daemon.submit("chatty", &[])).collect();
    for &job_id in &jobs {
        assert_eq!(daemon.wait_done(job_id).state, JobState::Succeeded);
    }
    let baseline = rss(pid);

    let requests: Vec<String> = jobs
        .iter()
        .enumerate()
        .map(|(i, job_id)| {
            format!(
                r#"{{"jsonrpc":"2.0","id":{i},"method":"job.follow_logs","params":{{"job_id":{job_id},"activity":"p.chatty"}}}}"#
            )
        })
        .collect();
    let followers: Vec<UnixStream> = (0..CONNECTIONS)
        .map(|_| silent_follower(daemon.socket(), &requests))
        .collect();

    // Watch RSS while the followers sit there; serve others meanwhile.
    let began = Instant::now();
    let mut peak = baseline;
    let mut unanswered = Vec::new();
    while began.elapsed() < Duration::from_secs(6) {
        peak = peak.max(rss(pid));
        let child = hfctl_command(daemon.socket())
            .args(["--json", "info"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hfctl can be run");
        match finish_child(child, RESPONSIVE) {
            (Ok(output), false) if output.status.success() => {}
            (Ok(output), false) => unanswered.push(shown(&output)),
            (_, _) => unanswered.push(format!("no answer within {RESPONSIVE:?}")),
        }
    }
    peak = peak.max(rss(pid));
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "RSS {} MB before, peak {} MB with {CONNECTIONS}x{JOBS} silent followers",
        baseline >> 20,
        peak >> 20
    );
    assert!(
        grown < 48 << 20,
        "RSS grew by {} MB (from {} MB) with {CONNECTIONS}x{JOBS} silent followers",
        grown >> 20,
        baseline >> 20
    );
    assert!(unanswered.is_empty(), "hfctl info failed: {unanswered:?}");
    let job_id = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(job_id).state, JobState::Succeeded);
    drop(followers);
}

/// An activity that runs until the test creates `@DIR@/go`.
const UNTIL_GO: &str = r#"
[process.p.activity.wait]
shell = "echo started; until [ -e @DIR@/go ]; do sleep 0.05; done"
timeout = "60s"
"#;

/// One user may hold `max_subscriptions_per_user` follows and watches (2
/// here): a third is refused with the reason, while root and another user
/// still follow, and the slots come back when the follows end. Before the
/// cap, one user could open subscriptions until the daemon's memory ran out.
#[test]
fn subscriptions_of_one_user_are_capped() {
    let Some(accounts) = accounts_or_skip("subscriptions_of_one_user_are_capped") else {
        return;
    };
    let settings = "socket_group = \"hft-sock\"\nrun_as_default = \"hft-runas\"\n\
                    max_subscriptions_per_user = 2\n";
    let daemon = SystemDaemon::start(
        settings,
        &[("wait.toml", UNTIL_GO), ("quick.toml", QUICK)],
        &[],
    );
    let finished = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(finished).state, JobState::Succeeded);
    let running = daemon.submit("wait", &[]);
    let socket = daemon.socket();
    let running_id = running.to_string();
    let finished_id = finished.to_string();

    // Two follows of the running job take the member's two slots; each is
    // in once it has passed on the activity's first line.
    let followers: Vec<Child> = (0..2)
        .map(|_| {
            let mut child = as_user(&accounts.member)
                .arg(users::hfctl_for_everyone())
                .args(["--socket".as_ref(), socket.as_os_str()])
                .args(["logs", "-f", &running_id, "p.wait"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("hfctl can be run as the member");
            let mut line = String::new();
            BufReader::new(child.stdout.as_mut().expect("stdout is piped"))
                .read_line(&mut line)
                .expect("the follow's output can be read");
            assert_eq!(line, "started\n", "the follow passes on the log");
            child
        })
        .collect();
    // A third (of a finished job, which would end at once if let through)
    // is refused, with the reason.
    let follow_finished =
        |account: &Account| account.hfctl(daemon.socket(), &["logs", "-f", &finished_id, "p.a"]);
    let third = follow_finished(&accounts.member);
    assert!(
        !third.status.success()
            && String::from_utf8_lossy(&third.stderr).contains("max_subscriptions_per_user"),
        "a third follow by the same user must be refused, and say why: {}",
        shown(&third)
    );
    // Root and another user still follow.
    let other = follow_finished(&accounts.etl_member);
    assert!(other.status.success(), "another user: {}", shown(&other));
    let mut cmd = hfctl_command(daemon.socket());
    cmd.args(["logs", "-f", &finished_id, "p.a"]);
    let root = run_with_deadline(cmd, RESPONSIVE);
    assert!(root.status.success(), "root: {}", shown(&root));

    // The follows end with the job, and the slots come back.
    fs::write(daemon.dir().join("go"), "").expect("the go file can be written");
    for follower in followers {
        let output = finish_child_output(follower, RESPONSIVE);
        assert!(output.status.success(), "a follow: {}", shown(&output));
    }
    assert_eq!(daemon.wait_done(running).state, JobState::Succeeded);
    let again = follow_finished(&accounts.member);
    assert!(
        again.status.success(),
        "the member after its follows ended: {}",
        shown(&again)
    );
}

/// `events.subscribe` counts against `max_subscriptions_per_user` like the
/// other subscriptions. Before, it took no slot: one member could hold 256
/// event subscriptions on each of its 64 connections, every one reading a
/// page of events from the store at each commit and holding it while its
/// client did not read.
#[test]
fn event_subscriptions_count_against_the_users_cap() {
    let Some(accounts) = accounts_or_skip("event_subscriptions_count_against_the_users_cap") else {
        return;
    };
    let settings = "socket_group = \"hft-sock\"\nrun_as_default = \"hft-runas\"\n\
                    max_subscriptions_per_user = 2\n";
    let daemon = SystemDaemon::start(settings, &[("quick.toml", QUICK)], &[]);
    let finished = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(finished).state, JobState::Succeeded);
    let socket = daemon.socket();

    // Two followers of every event take the member's two slots; each is in
    // once it has printed the first event.
    let followers: Vec<Child> = (0..2)
        .map(|_| {
            let mut child = as_user(&accounts.member)
                .arg(users::hfctl_for_everyone())
                .args(["--socket".as_ref(), socket.as_os_str()])
                .args(["events", "-f", "--since", "0"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("hfctl can be run as the member");
            let mut line = String::new();
            BufReader::new(child.stdout.as_mut().expect("stdout is piped"))
                .read_line(&mut line)
                .expect("the follower's output can be read");
            assert!(line.contains("job.submitted"), "the first event: {line:?}");
            child
        })
        .collect();
    // A third (without -f, which ends at once if let through) is refused,
    // with the reason; another user still subscribes.
    let once = |account: &Account| account.hfctl(socket, &["events", "--since", "0"]);
    let third = once(&accounts.member);
    assert!(
        !third.status.success()
            && String::from_utf8_lossy(&third.stderr).contains("max_subscriptions_per_user"),
        "a third subscription by the same user must be refused, and say why: {}",
        shown(&third)
    );
    let other = once(&accounts.etl_member);
    assert!(other.status.success(), "another user: {}", shown(&other));

    // The slots come back when the followers go.
    for mut follower in followers {
        follower.kill().expect("the follower can be killed");
        follower.wait().expect("the follower is reaped");
    }
    let again = eventually(RESPONSIVE, "the member's slots come back", || {
        let output = once(&accounts.member);
        if output.status.success() {
            Ok(output)
        } else {
            Err(shown(&output))
        }
    });
    assert!(again.0.status.success());
}
