//! Hostile clients and faults around a real daemon: a thousand connections
//! at once, clients that stall or vanish in the middle of a request or a
//! subscription, activities that close their output early or flood their
//! control channel, the log directory deleted under the daemon, and a state
//! directory that is full or read-only. Each time the daemon must keep
//! serving, record what happened, and recover without a restart where the
//! fault clears.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use holdfast_api::rpc::HoldfastClient;
use holdfast_api::{AttemptState, JobState};
use holdfast_tests::process::peak_rss_kib;
use holdfast_tests::{TestDaemon, eventually, hfctl_command, run_with_deadline};

use crate::support::{activity, shown};

/// How long `hfctl info` may take while the daemon is under attack. It
/// answers in milliseconds when idle; this only has to catch a daemon that
/// stopped serving.
const RESPONSIVE: Duration = Duration::from_secs(5);
/// Exit code of hfctl for UNAVAILABLE.
pub(crate) const EXIT_UNAVAILABLE: i32 = 11;

/// One activity that succeeds at once.
pub(crate) const QUICK: &str = r#"
[process.p.activity.a]
command = ["true"]
"#;

/// Run `hfctl --json info` and require an answer within `within`; returns
/// how long it took.
fn info_within(daemon: &TestDaemon, within: Duration) -> Duration {
    let began = Instant::now();
    let mut cmd = hfctl_command(daemon.socket());
    cmd.args(["--json", "info"]);
    let output = run_with_deadline(cmd, within);
    assert!(
        output.status.success(),
        "hfctl info failed while the daemon should be serving: {}",
        shown(&output)
    );
    began.elapsed()
}

/// Open file descriptors of a process.
pub(crate) fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The daemon's descriptors once the connection of a client that just
/// ended is released (asynchronously, a moment after the client exits):
/// the count as soon as it drops, else, after a bounded watch, the count
/// it stayed at.
fn settled_fds(pid: u32) -> usize {
    let first = open_fds(pid);
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let now = open_fds(pid);
        if now < first {
            return now;
        }
        thread::sleep(Duration::from_millis(5));
    }
    first
}

/// Wait until the daemon holds at most `limit` descriptors (closed
/// connections are released asynchronously).
fn fds_settle(daemon: &TestDaemon, limit: usize, what: &str) {
    let pid = daemon.pid().expect("the daemon runs");
    eventually(Duration::from_secs(15), what, || {
        let now = open_fds(pid);
        if now <= limit {
            Ok(now)
        } else {
            Err(format!("{now} open descriptors, expected at most {limit}"))
        }
    });
}

/// The soft and hard RLIMIT_NOFILE of this process, from /proc.
fn nofile_limits() -> (u64, u64) {
    let limits = fs::read_to_string("/proc/self/limits").expect("/proc/self/limits is readable");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("/proc/self/limits has a Max open files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let value = |i: usize| numbers.get(i).copied().unwrap_or(u64::MAX);
    (value(0), value(1))
}

/// Raise this process's soft RLIMIT_NOFILE to `needed` (the daemon, started
/// afterwards, inherits it). `prlimit` does it because the workspace keeps
/// `unsafe` out of the tests.
fn raise_nofile(needed: u64) {
    let (soft, hard) = nofile_limits();
    if soft >= needed {
        return;
    }
    assert!(
        hard >= needed,
        "this test needs {needed} open files but the hard limit is {hard}; raise it (ulimit -Hn)"
    );
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={needed}:{hard}"))
        .status()
        .expect("prlimit (util-linux) can be run");
    assert!(status.success(), "prlimit failed: {status}");
    let (soft, _) = nofile_limits();
    assert!(soft >= needed, "the soft limit is still {soft}");
}

#[test]
fn a_thousand_connections_at_once_do_not_stop_the_daemon() {
    const CONNECTIONS: usize = 1000;
    // The connections, the daemon's own files, hfctl and the test harness.
    raise_nofile(CONNECTIONS as u64 + 512);
    let daemon = TestDaemon::start(&[("quick.toml", QUICK)]);
    let pid = daemon.pid().expect("the daemon runs");
    info_within(&daemon, RESPONSIVE);
    let baseline = settled_fds(pid);

    let began = Instant::now();
    let held: Vec<UnixStream> = (0..CONNECTIONS)
        .map(|i| {
            UnixStream::connect(daemon.socket())
                .unwrap_or_else(|e| panic!("connection {i} of {CONNECTIONS} was refused: {e}"))
        })
        .collect();
    let connected = began.elapsed();
    // The daemon accepts them all (each is one descriptor in the daemon).
    eventually(
        Duration::from_secs(15),
        "the daemon accepts every connection",
        || {
            let now = open_fds(pid);
            if now >= baseline + CONNECTIONS {
                Ok(now)
            } else {
                Err(format!("{now} descriptors open, baseline {baseline}"))
            }
        },
    );
    let took = info_within(&daemon, RESPONSIVE);
    eprintln!(
        "{CONNECTIONS} connections opened in {connected:?}; hfctl info answered in {took:?} while they were open"
    );
    // Work still runs: an activity needs pipes, a log and a process.
    let job_id = daemon.submit("quick", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");

    drop(held);
    fds_settle(
        &daemon,
        baseline + 16,
        "the daemon releases the closed connections",
    );
    info_within(&daemon, RESPONSIVE);
    let job_id = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(job_id).state, JobState::Succeeded);
}

#[test]
fn a_stalled_client_does_not_hold_up_others() {
    let daemon = TestDaemon::start(&[("quick.toml", QUICK)]);
    // Half a head, a whole head with half a body, and a half WebSocket
    // upgrade: each sends some bytes and then nothing more.
    let partial: [&[u8]; 3] = [
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Ty",
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 200\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"meth",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    ];
    let stalled: Vec<UnixStream> = partial
        .iter()
        .map(|bytes| {
            let mut stream = UnixStream::connect(daemon.socket()).expect("a client can connect");
            stream.write_all(bytes).expect("half a request can be sent");
            stream
        })
        .collect();
    for _ in 0..3 {
        info_within(&daemon, RESPONSIVE);
    }
    let job_id = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(job_id).state, JobState::Succeeded);
    // The stalled clients are still connected (nothing closed them), and
    // closing them now changes nothing for the others.
    drop(stalled);
    info_within(&daemon, RESPONSIVE);
}

/// Many stalled clients whose request head is complete but whose body never
/// comes: jsonrpsee takes a connection permit (`max_connections`) for each
/// request before reading its body, so they must not be able to take all of
/// the permits and lock everyone else out.
#[test]
fn stalled_request_bodies_cannot_use_up_the_connection_limit() {
    const STALLED: usize = 200;
    raise_nofile(STALLED as u64 + 512);
    let daemon = TestDaemon::start_with("max_connections = 64\n", &[("quick.toml", QUICK)]);
    let head = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{";
    let stalled: Vec<UnixStream> = (0..STALLED)
        .map(|_| {
            let mut stream = UnixStream::connect(daemon.socket()).expect("a client can connect");
            stream.write_all(head).expect("a head can be sent");
            stream
        })
        .collect();
    // Whether the daemon times them out or never counts them, hfctl must
    // get through while they stay connected.
    eventually(
        Duration::from_secs(40),
        "hfctl info gets through while clients with a stalled body stay connected",
        || {
            let mut cmd = hfctl_command(daemon.socket());
            cmd.args(["--json", "info"]);
            let output = run_with_deadline(cmd, RESPONSIVE);
            if output.status.success() {
                Ok(())
            } else {
                Err(shown(&output))
            }
        },
    );
    drop(stalled);
}

#[tokio::test]
async fn a_client_vanishing_mid_subscription_changes_nothing() {
    let chain = r#"
[process.p.activity.chatty]
shell = '''
i=0
while [ ! -e @DIR@/go ] && [ $i -lt 40000 ]; do
    echo "chatter $i: some text to fill the log with"
    i=$((i + 1))
    [ $((i % 10)) -eq 0 ] && sleep 0.01
done
echo "done after $i lines"
'''
timeout = "60s"
retries = 0
"#;
    let daemon = TestDaemon::start(&[("chatty.toml", chain)]);
    let pid = daemon.pid().expect("the daemon runs");
    let job_id = daemon.submit("chatty", &[]);
    daemon.wait_for(job_id, "running", |job| job.state == JobState::Running);
    let baseline = open_fds(pid);

    for round in 0..20 {
        let client = holdfast_api::client::connect(daemon.socket())
            .await
            .expect("a client can connect");
        let mut follow = client
            .job_follow_logs(job_id, Some("p.chatty".to_string()), None, None)
            .await
            .expect("job.follow_logs subscribes");
        // Half of the followers read a chunk first; the others vanish
        // without reading anything.
        if round % 2 == 0 {
            let first = tokio::time::timeout(Duration::from_secs(20), follow.next())
                .await
                .expect("a chunk arrives within 20s")
                .expect("the follow is open")
                .expect("items are LogChunks");
            assert!(!first.data.is_empty() || first.complete, "{first:?}");
        }
        drop(follow);
        drop(client);
    }
    // A follower that vanishes without unsubscribing: the raw socket closes
    // under the WebSocket session.
    let mut raw = UnixStream::connect(daemon.socket()).expect("a client can connect");
    raw.write_all(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("an upgrade can be sent");
    raw.write_all(&ws_text_frame(&format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"job.follow_logs","params":{{"job_id":{job_id},"activity":"p.chatty"}}}}"#
    )))
    .expect("a subscription can be sent");
    let mut some = [0u8; 512];
    raw.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout can be set");
    let read = raw.read(&mut some).expect("the daemon answers the upgrade");
    assert!(read > 0, "the daemon closed the raw WebSocket at once");
    drop(raw);

    // Every client is gone, so blocking this runtime's thread is harmless.
    info_within(&daemon, RESPONSIVE);
    fds_settle(
        &daemon,
        baseline + 8,
        "the daemon releases the connections of vanished followers",
    );
    assert_eq!(
        daemon.status(job_id).state,
        JobState::Running,
        "the followers came and went while the job ran"
    );
    fs::write(daemon.dir().join("go"), "").expect("the go file can be written");
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let log = daemon.logs(job_id, "p.chatty", None);
    assert!(log.contains("done after"), "the log is whole: {log}");
}

/// A masked WebSocket text frame, as a client must send.
fn ws_text_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[test]
fn an_activity_that_closes_its_stdout_early_succeeds() {
    let chain = r#"
[process.p.activity.closer]
shell = "exec 1>&-; sleep 0.2; echo done >&2"
timeout = "30s"
retries = 0
"#;
    let daemon = TestDaemon::start(&[("closer.toml", chain)]);
    let job_id = daemon.submit("closer", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let attempt = &activity(&job, "p.closer").attempts[0];
    assert_eq!(attempt.state, AttemptState::Succeeded, "{attempt:#?}");
    assert_eq!(
        daemon.logs(job_id, "p.closer", None),
        "done\n",
        "stderr is still captured after stdout closed"
    );
}

#[test]
fn a_control_channel_flood_is_absorbed() {
    const LINES: u32 = 100_000;
    let chain = format!(
        r#"
[process.p.activity.flood]
shell = '''
awk 'BEGIN {{ for (i = 1; i <= {LINES}; i++) printf "progress %.3f step %d\n", i * 100 / {LINES}, i }}' >&3
touch @DIR@/flooded
'''
timeout = "120s"
retries = 0
"#
    );
    let daemon = TestDaemon::start(&[("flood.toml", &chain)]);
    let flooded = daemon.dir().join("flooded");

    let done = AtomicBool::new(false);
    let (job_id, latencies) = thread::scope(|scope| {
        // Ask the daemon for its info in a loop while the flood runs; the
        // control pipe blocks the writer whenever the daemon falls behind,
        // so the flood lasts as long as the daemon takes to read it.
        let prober = scope.spawn(|| {
            let mut latencies = Vec::new();
            while !done.load(Ordering::Acquire) {
                latencies.push(info_within(&daemon, RESPONSIVE));
            }
            latencies
        });
        let job_id = daemon.submit("flood", &[]);
        let began = Instant::now();
        let job = daemon.wait_done(job_id);
        done.store(true, Ordering::Release);
        eprintln!(
            "{LINES} progress lines took {:?} end to end",
            began.elapsed()
        );
        assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
        (job_id, prober.join().expect("the prober does not panic"))
    });
    assert!(flooded.exists(), "the flood ran to its end");
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "hfctl info answered {} times during the flood, slowest {slowest:?}",
        latencies.len()
    );
    assert!(!latencies.is_empty(), "hfctl info ran during the flood");

    let job = daemon.status(job_id);
    let flood = activity(&job, "p.flood");
    // Progress is recorded as it comes (the very last value is checked by
    // the next test).
    assert!(
        flood.progress.is_some_and(|p| p > 50.0),
        "progress from the flood is recorded: {flood:#?}"
    );
}

/// The last progress an activity reports just before it exits is the one
/// recorded, however many came before it.
#[test]
fn the_last_progress_before_exit_is_recorded() {
    const JOBS: usize = 8;
    let chain = r#"
[process.p.activity.report]
shell = '''
awk 'BEGIN { for (i = 1; i <= 20000; i++) printf "progress %.3f step %d\n", i / 1000, i }' >&3
echo "progress 100 final" >&3
'''
timeout = "60s"
retries = 0
"#;
    let daemon = TestDaemon::start(&[("report.toml", chain)]);
    let ids: Vec<u64> = (0..JOBS).map(|_| daemon.submit("report", &[])).collect();
    let mut wrong = Vec::new();
    for id in ids {
        let job = daemon.wait_done(id);
        assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
        let job = daemon.status(id);
        let report = activity(&job, "p.report");
        if report.progress != Some(100.0) || report.progress_text.as_deref() != Some("final") {
            wrong.push(format!(
                "job {id}: {:?} {:?}",
                report.progress, report.progress_text
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "the final `progress 100 final` was lost for {} of {JOBS} jobs:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// An activity writing one endless control line (no newline, ever) must
/// not make the daemon buffer it: lines over 256 KiB are ignored.
#[test]
fn an_endless_control_line_is_not_buffered() {
    const BYTES: u64 = 256 * 1024 * 1024;
    let chain = format!(
        r#"
[process.p.activity.endless]
shell = "head -c {BYTES} /dev/zero | tr '\\0' x >&3"
timeout = "120s"
retries = 0
"#
    );
    let daemon = TestDaemon::start(&[("endless.toml", &chain)]);
    let pid = daemon.pid().expect("the daemon runs");
    let before = peak_rss_kib(pid);
    let job_id = daemon.submit("endless", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let grown = peak_rss_kib(pid).saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "the daemon's peak memory grew by {grown} KiB while an activity wrote {BYTES} bytes \
         without a newline to its control channel"
    );
    info_within(&daemon, RESPONSIVE);
}

#[test]
fn the_log_directory_deleted_under_the_daemon() {
    let chain = r#"
[process.p.activity.talk]
shell = '''
echo before
i=0
while [ ! -e @DIR@/go ] && [ $i -lt 1200 ]; do sleep 0.02; i=$((i + 1)); done
echo after
'''
timeout = "60s"
retries = 0
"#;
    let daemon = TestDaemon::start(&[("talk.toml", chain), ("quick.toml", QUICK)]);
    let logs = daemon.state_dir().join("logs");
    let first = daemon.submit("talk", &[]);
    eventually(
        Duration::from_secs(20),
        "the first line reaches the log",
        || {
            let log = daemon.logs(first, "p.talk", None);
            if log.contains("before") {
                Ok(())
            } else {
                Err(format!("log so far: {log:?}"))
            }
        },
    );

    fs::remove_dir_all(&logs).expect("the log directory can be removed");
    fs::write(daemon.dir().join("go"), "").expect("the go file can be written");
    let job = daemon.wait_done(first);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let attempt = &activity(&job, "p.talk").attempts[0];
    assert_eq!(attempt.state, AttemptState::Succeeded, "{attempt:#?}");
    assert_eq!(
        attempt.log_bytes,
        "before\nafter\n".len() as u64,
        "the attempt records what its process wrote, though the file is gone: {attempt:#?}"
    );
    // Its log file went with the directory: reading it says so.
    let gone = daemon.hfctl(&["logs", &first.to_string(), "p.talk"]);
    eprintln!(
        "hfctl logs of the job whose log was deleted: {}",
        shown(&gone)
    );
    assert!(
        !gone.status.success() || gone.stdout.is_empty(),
        "a deleted log cannot be shown: {}",
        shown(&gone)
    );

    // Later jobs recreate what they need and keep their logs.
    for _ in 0..3 {
        let job_id = daemon.submit("quick", &[]);
        assert_eq!(daemon.wait_done(job_id).state, JobState::Succeeded);
    }
    fs::remove_file(daemon.dir().join("go")).expect("the go file can be removed");
    let again = daemon.submit("talk", &[]);
    eventually(Duration::from_secs(20), "the new log is written", || {
        let log = daemon.logs(again, "p.talk", None);
        if log.contains("before") {
            Ok(())
        } else {
            Err(format!("log so far: {log:?}"))
        }
    });
    fs::write(daemon.dir().join("go"), "").expect("the go file can be written");
    let job = daemon.wait_done(again);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(daemon.logs(again, "p.talk", None), "before\nafter\n");
    assert!(logs.is_dir(), "the log directory is recreated");
    info_within(&daemon, RESPONSIVE);
}

/// A small tmpfs mounted on a fresh directory, unmounted (and the directory
/// removed) when dropped, whatever happened in between.
pub(crate) struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mount one, or say why not and return None: it needs root and a
    /// kernel that lets this process mount.
    pub(crate) fn mount(size: &str) -> Option<Tmpfs> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "SKIPPED: mounting a tmpfs needs root; run the suite as root to test a full or read-only state directory"
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("hf-e2e-tmpfs-")
            .tempdir()
            .expect("a mount point can be created")
            .keep();
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(Tmpfs { dir }),
            other => {
                let why = match other {
                    Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                eprintln!("SKIPPED: cannot mount a tmpfs on {}: {why}", dir.display());
                let _ = fs::remove_dir(&dir);
                None
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// `mount -o remount,<options>`.
    pub(crate) fn remount(&self, options: &str) -> Output {
        Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.dir)
            .output()
            .expect("mount can be run")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file there: detach it now; the kernel
            // frees it when the last file closes.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Runs until `@DIR@/go` exists.
const WAITER: &str = r#"
[process.p.activity.wait]
shell = '''
echo waiting
i=0
while [ ! -e @DIR@/go ] && [ $i -lt 1500 ]; do sleep 0.02; i=$((i + 1)); done
echo going
'''
timeout = "60s"
retries = 0
"#;

/// A daemon whose state directory is `tmpfs` (the fixture's `state` made a
/// link to it), with the quick chain.
pub(crate) fn daemon_on(tmpfs: &Tmpfs) -> TestDaemon {
    let mut daemon = TestDaemon::prepare(None, &[("quick.toml", QUICK), ("waiter.toml", WAITER)]);
    let state = daemon.state_dir();
    fs::remove_dir(&state).expect("the fixture's empty state directory can be removed");
    std::os::unix::fs::symlink(tmpfs.path(), &state).expect("the state directory can be linked");
    daemon.launch();
    daemon
}

/// Fill the file system holding `dir` with one file, until a write fails.
pub(crate) fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = File::create(&path).expect("the filler can be created");
    let block = vec![0xA5u8; 64 * 1024];
    loop {
        if let Err(e) = file.write_all(&block) {
            assert_eq!(e.kind(), ErrorKind::StorageFull, "filling failed: {e}");
            break;
        }
    }
    // Fill the last partial block too.
    while file.write_all(&[0xA5u8; 512]).is_ok() {}
    path
}

/// `hfctl --json submit quick`: Ok(job id) or Err(output) when refused.
fn try_submit(daemon: &TestDaemon) -> Result<u64, Output> {
    try_submit_with(daemon, &[])
}

/// As [`try_submit`], with more arguments to `hfctl submit quick`.
fn try_submit_with(daemon: &TestDaemon, more: &[&str]) -> Result<u64, Output> {
    let mut args = vec!["--json", "submit", "quick"];
    args.extend_from_slice(more);
    let output = daemon.hfctl(&args);
    if !output.status.success() {
        return Err(output);
    }
    let answer: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("hfctl --json submit prints JSON");
    Ok(answer["job_id"].as_u64().expect("the answer has a job_id"))
}

/// Submit until one submission is refused (at most `tries`); returns the
/// acknowledged ids and the refusal.
pub(crate) fn submit_until_refused(daemon: &TestDaemon, tries: usize) -> (Vec<u64>, Output) {
    let mut acknowledged = Vec::new();
    for _ in 0..tries {
        match try_submit(daemon) {
            Ok(id) => acknowledged.push(id),
            Err(output) => return (acknowledged, output),
        }
    }
    panic!(
        "{tries} submissions were all acknowledged though the state directory cannot be written"
    );
}

/// Every acknowledged job is still known, and each eventually succeeds.
fn all_present_and_done(daemon: &TestDaemon, ids: &[u64]) {
    for &id in ids {
        let job = daemon.wait_done(id);
        assert_eq!(job.state, JobState::Succeeded, "job {id}: {job:#?}");
    }
    let listed = daemon.hfctl_json(&["list", "--limit", "1000"]);
    let listed: Vec<u64> = listed["jobs"]
        .as_array()
        .expect("list has jobs")
        .iter()
        .filter_map(|j| j["id"].as_u64())
        .collect();
    for id in ids {
        assert!(
            listed.contains(id),
            "job {id} is missing from the list {listed:?}"
        );
    }
}

/// `clients` connections each submitting `each` jobs of `quick` at once;
/// the ids acknowledged. Every refusal must be UNAVAILABLE.
fn submit_together(daemon: &TestDaemon, clients: usize, each: usize) -> Vec<u64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let client = std::sync::Arc::new(
                holdfast_api::client::connect(daemon.socket())
                    .await
                    .expect("a client connects"),
            );
            for _ in 0..each {
                let client = client.clone();
                calls.spawn(async move {
                    client
                        .job_submit("quick".into(), None, None, None, None, None, None, None)
                        .await
                });
            }
        }
        let mut acknowledged = Vec::new();
        while let Some(answer) = calls.join_next().await {
            match answer.expect("a call task") {
                Ok(submitted) => acknowledged.push(submitted.job_id),
                Err(error) => {
                    let text = error.to_string();
                    assert!(
                        text.contains(&holdfast_api::ErrorCode::Unavailable.code().to_string())
                            && text.contains("cannot be written"),
                        "a refusal on a full disk is UNAVAILABLE: {text}"
                    );
                }
            }
        }
        acknowledged
    })
}

/// The ids of every job the daemon lists, in order.
pub(crate) fn listed_ids(daemon: &TestDaemon) -> Vec<u64> {
    let listed = daemon.hfctl_json(&["list", "--limit", "1000"]);
    let mut ids: Vec<u64> = listed["jobs"]
        .as_array()
        .expect("list has jobs")
        .iter()
        .filter_map(|j| j["id"].as_u64())
        .collect();
    ids.sort_unstable();
    ids
}

/// Reads of earlier jobs answer while nothing can be written.
fn reads_still_work(daemon: &TestDaemon, earlier: &[u64]) {
    for &id in earlier {
        let output = daemon.hfctl(&["--json", "status", &id.to_string()]);
        assert!(output.status.success(), "status {id}: {}", shown(&output));
    }
    let output = daemon.hfctl(&["--json", "list"]);
    assert!(output.status.success(), "list: {}", shown(&output));
    info_within(daemon, RESPONSIVE);
}

#[test]
fn a_full_state_disk_refuses_submissions_and_recovers() {
    const KEY: &str = "after-the-fill";
    let Some(tmpfs) = Tmpfs::mount("8m") else {
        return;
    };
    let daemon = daemon_on(&tmpfs);
    let mut acknowledged: Vec<u64> = (0..3).map(|_| daemon.submit("quick", &[])).collect();
    all_present_and_done(&daemon, &acknowledged);

    // A job that is running when the disk fills, and ends while it is full:
    // its end cannot be recorded until there is room again.
    let running = daemon.submit("waiter", &[]);
    // Its pid is recorded with its first report or 20 ms after its start:
    // wait for it, the check below reads it while the disk is full.
    daemon.wait_for(running, "running with its pid recorded", |job| {
        job.state == JobState::Running
            && activity(job, "p.wait")
                .attempts
                .first()
                .is_some_and(|a| a.pid.is_some())
    });

    let filler = fill(tmpfs.path());
    // Pages the database already owns may take a few more rows; the first
    // submission that needs a new page must be refused.
    let (taken, refused) = submit_until_refused(&daemon, 200);
    eprintln!(
        "disk full: {} submissions still acknowledged, then: {}",
        taken.len(),
        shown(&refused)
    );
    acknowledged.extend(&taken);
    assert_eq!(
        refused.status.code(),
        Some(EXIT_UNAVAILABLE),
        "a submission to a full disk is UNAVAILABLE: {}",
        shown(&refused)
    );
    let message = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(
        message.contains("full") || message.contains("space"),
        "the refusal says the disk is full: {}",
        shown(&refused)
    );
    reads_still_work(&daemon, &acknowledged);
    // Many submissions at once, over kept-alive connections: the engine
    // hands the store a batch while another commits, and a batch built on
    // one that failed must come back unapplied with it. Each submission is
    // acknowledged (it fit in pages the database owns) or refused, and
    // none refused is stored later (checked at the end).
    acknowledged.extend(submit_together(&daemon, 8, 16));
    // A refused submission leaves no trace of its idempotency key    // A refused submission leaves no trace of its idempotency key: the same
    // key once there is room makes a real job, not an answer pointing at
    // the job that was never stored.
    let keyed = try_submit_with(&daemon, &["--request-id", KEY])
        .expect_err("a keyed submission to a full disk is refused too");
    assert_eq!(
        keyed.status.code(),
        Some(EXIT_UNAVAILABLE),
        "{}",
        shown(&keyed)
    );
    fs::write(daemon.dir().join("go"), "").expect("the go file can be written");
    // The waiter exits now; the daemon cannot write that down yet.
    let pid = activity(&daemon.status(running), "p.wait").attempts[0]
        .pid
        .expect("a running attempt has a pid");
    eventually(Duration::from_secs(20), "the waiter exits", || {
        if holdfast_tests::process::is_alive(pid as i32) {
            Err("still running")
        } else {
            Ok(())
        }
    });
    let meanwhile = daemon.status(running);
    eprintln!(
        "disk full: the waiter exited; its job is reported {:?}",
        meanwhile.state
    );

    fs::remove_file(&filler).expect("the filler can be removed");
    let (after, _) = eventually(
        Duration::from_secs(10),
        "a submission succeeds once there is room again",
        || try_submit(&daemon).map_err(|output| shown(&output)),
    );
    acknowledged.push(after);
    let keyed = try_submit_with(&daemon, &["--request-id", KEY])
        .unwrap_or_else(|output| panic!("the key is free again: {}", shown(&output)));
    assert!(
        keyed > after,
        "the key refused on the full disk made a new job ({keyed}, after {after})"
    );
    acknowledged.push(keyed);
    for _ in 0..3 {
        acknowledged.push(daemon.submit("quick", &[]));
    }
    all_present_and_done(&daemon, &acknowledged);
    let waiter = daemon.wait_done(running);
    assert_eq!(waiter.state, JobState::Succeeded, "{waiter:#?}");
    let attempt = &activity(&waiter, "p.wait").attempts[0];
    assert_eq!(attempt.state, AttemptState::Succeeded, "{attempt:#?}");
    assert_eq!(attempt.exit_code, Some(0), "{attempt:#?}");
    // The store holds the acknowledged jobs and the waiter, nothing else:
    // no refused submission was written after all.
    let mut expected = acknowledged.clone();
    expected.push(running);
    expected.sort_unstable();
    assert_eq!(listed_ids(&daemon), expected);
    drop(daemon);
}

/// Files in the state directory, for the log of a test.
fn state_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The refusal `output` is UNAVAILABLE and says the state directory is
/// read-only.
fn refused_as_read_only(output: &Output, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(EXIT_UNAVAILABLE),
        "{what} on a read-only state directory is UNAVAILABLE: {}",
        shown(output)
    );
    let message = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(
        message.contains("read-only") || message.contains("read only"),
        "the refusal of {what} says the state directory is read-only: {}",
        shown(output)
    );
}

#[test]
fn a_read_only_state_directory_refuses_submissions() {
    let Some(tmpfs) = Tmpfs::mount("8m") else {
        return;
    };
    let mut daemon = daemon_on(&tmpfs);
    let earlier: Vec<u64> = (0..3).map(|_| daemon.submit("quick", &[])).collect();
    all_present_and_done(&daemon, &earlier);
    // A job running when the daemon stops: it is interrupted, and the engine
    // started once the directory is writable must resume it.
    let interrupted = daemon.submit("waiter", &[]);
    eventually(
        Duration::from_secs(20),
        "the waiter writes its first line",
        || {
            let log = daemon.logs(interrupted, "p.wait", None);
            if log.contains("waiting") {
                Ok(())
            } else {
                Err(format!("log so far: {log:?}"))
            }
        },
    );

    // Linux refuses to remount read-only while a file there is open for
    // writing, as the database is: try, and if refused (the usual case),
    // restart the daemon on the read-only file system instead.
    let live = tmpfs.remount("ro");
    let restarted = !live.status.success();
    if restarted {
        eprintln!(
            "remounting read-only under the running daemon is refused ({}); restarting it on the read-only state directory",
            String::from_utf8_lossy(&live.stderr).trim()
        );
        let status = daemon.stop();
        assert!(status.success(), "the daemon stops cleanly: {status}");
        let ro = tmpfs.remount("ro");
        assert!(ro.status.success(), "remount ro: {}", shown(&ro));
        eprintln!(
            "read-only state directory holds {:?}",
            state_files(tmpfs.path())
        );
        if let Err(e) = daemon.try_launch() {
            panic!("the daemon does not start on a read-only state directory: {e}");
        }
    }
    let refused = try_submit(&daemon).expect_err("a read-only state directory takes no job");
    eprintln!("read-only: {}", shown(&refused));
    refused_as_read_only(&refused, "a submission");
    let mut known = earlier.clone();
    known.push(interrupted);
    reads_still_work(&daemon, &known);
    assert!(
        daemon
            .logs(interrupted, "p.wait", Some(1))
            .contains("waiting"),
        "the log of an earlier attempt is read"
    );
    if restarted {
        // Without an engine, the counts come from the database: the
        // interrupted job still waits to run.
        let info = daemon.hfctl_json(&["info"]);
        assert_eq!(
            info["counts"]["running_jobs"], 1,
            "daemon.info counts the stored unfinished job: {info}"
        );
        // Nothing that changes state gets through, not even to say that a
        // finished job cannot be cancelled.
        let cancel = daemon.hfctl(&["cancel", &earlier[0].to_string()]);
        refused_as_read_only(&cancel, "a cancel");
    }

    let rw = tmpfs.remount("rw");
    assert!(rw.status.success(), "remount rw: {}", shown(&rw));
    let (after, _) = eventually(
        Duration::from_secs(10),
        "a submission succeeds once the state directory is writable",
        || try_submit(&daemon).map_err(|output| shown(&output)),
    );
    let mut all = earlier;
    all.push(after);
    all_present_and_done(&daemon, &all);
    fs::write(daemon.dir().join("go"), "").expect("the go file can be written");
    let waiter = daemon.wait_done(interrupted);
    assert_eq!(waiter.state, JobState::Succeeded, "{waiter:#?}");
    if restarted {
        let attempts = &activity(&waiter, "p.wait").attempts;
        assert_eq!(
            attempts.first().map(|a| a.state),
            Some(AttemptState::Interrupted),
            "the stop interrupted the first attempt and the late start ran it again: {attempts:#?}"
        );
    }
    drop(daemon);
}
