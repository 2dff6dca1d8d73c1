//! Attempt logs: a flood of output is capped and counted without blocking the
//! child, logs are read in pages, and a follow streams until the attempt ends.

use std::time::Duration;

use holdfast_api::JobState;
use holdfast_api::rpc::HoldfastClient;
use holdfast_tests::http::rpc_call;
use holdfast_tests::{HFCTL_TIMEOUT, TestDaemon, finish_child_output};
use serde_json::json;

use crate::support::{activity, shown};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Every regular file under `dir`, with its size.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                out.push((entry.path(), meta.len()));
            }
        }
    }
    out
}

#[test]
fn a_gigabyte_of_output_is_capped_and_counted() {
    let chain = r#"
[process.p.activity.flood]
command = ["head", "-c", "1073741824", "/dev/zero"]
timeout = "50s"
retries = 0
"#;
    let daemon = TestDaemon::start_with("log_max_bytes = \"1M\"\n", &[("flood.toml", chain)]);
    let job_id = daemon.submit("flood", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let attempt = &activity(&job, "p.flood").attempts[0];
    assert!(
        attempt.log_bytes <= MIB,
        "the log holds more than log_max_bytes: {attempt:#?}"
    );
    assert!(
        attempt.log_bytes > 0,
        "the log keeps the first bytes: {attempt:#?}"
    );
    assert!(
        attempt.log_dropped > 0,
        "dropped bytes are counted: {attempt:#?}"
    );
    assert_eq!(
        attempt.log_bytes + attempt.log_dropped,
        GIB,
        "kept and dropped bytes add up to what the child wrote: {attempt:#?}"
    );

    let info = rpc_call(daemon.socket(), "daemon.info", json!({}));
    let database = info["result"]["paths"]["database"]
        .as_str()
        .unwrap_or("")
        .to_string();
    for (path, size) in files_under(&daemon.state_dir()) {
        let shown_path = path.to_string_lossy();
        if !database.is_empty() && shown_path.starts_with(&database) {
            continue;
        }
        assert!(
            size <= MIB,
            "{shown_path} is {size} bytes, over log_max_bytes"
        );
    }

    let logs = daemon.hfctl(&["logs", &job_id.to_string(), "p.flood"]);
    assert!(logs.status.success(), "{}", shown(&logs));
    assert!(
        logs.stdout.len() as u64 <= MIB + 4096,
        "`hfctl logs` printed {} bytes of a capped log",
        logs.stdout.len()
    );
}

#[test]
fn logs_are_read_in_pages() {
    let chain = r#"
[process.p.activity.count]
shell = 'i=1; while [ $i -le 300 ]; do echo "line $i"; i=$((i + 1)); done; echo oops >&2'
"#;
    let daemon = TestDaemon::start(&[("count.toml", chain)]);
    let job_id = daemon.submit("count", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");

    // stdout and stderr reach the daemon through different pipes, so only
    // the order within each stream is certain.
    let stdout: String = (1..=300).map(|i| format!("line {i}\n")).collect();
    let whole = daemon.logs(job_id, "p.count", None);
    assert_eq!(
        whole.matches("oops\n").count(),
        1,
        "stderr is in the log: {whole:?}"
    );
    assert_eq!(
        whole.replacen("oops\n", "", 1),
        stdout,
        "`hfctl logs` prints the attempt's stdout in order"
    );
    let expected = whole;

    let mut offset = 0u64;
    let mut paged = String::new();
    for _ in 0..1000 {
        let answer = rpc_call(
            daemon.socket(),
            "job.logs",
            json!({"job_id": job_id, "activity": "p.count", "offset": offset, "max_bytes": 100}),
        );
        let chunk = &answer["result"];
        assert_eq!(chunk["offset"], offset, "{answer}");
        let data = chunk["data"].as_str().unwrap_or_else(|| panic!("{answer}"));
        assert!(data.len() <= 100, "max_bytes is respected: {answer}");
        paged.push_str(data);
        let next = chunk["next_offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("{answer}"));
        assert_eq!(next, offset + data.len() as u64, "{answer}");
        offset = next;
        if chunk["complete"] == true && data.is_empty() {
            break;
        }
        if chunk["complete"] == true && offset as usize >= expected.len() {
            break;
        }
        assert!(
            !data.is_empty(),
            "an unfinished read returned nothing: {answer}"
        );
    }
    assert_eq!(paged, expected, "pages put together are the whole log");
}

#[tokio::test]
async fn following_a_log_streams_until_the_attempt_ends() {
    let chain = r#"
[process.p.activity.talk]
shell = '''
echo one
echo "progress 50 waiting" >&3
i=0
while [ ! -e @DIR@/go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
echo two
'''
"#;
    let daemon = TestDaemon::start(&[("talk.toml", chain)]);
    let job_id = daemon.submit("talk", &[]);
    daemon.wait_for(job_id, "waiting for the go file", |job| {
        job.activities
            .iter()
            .any(|a| a.progress.unwrap_or(0.0) >= 50.0)
    });

    let client = daemon.client().await;
    let mut follow = client
        .job_follow_logs(job_id, Some("p.talk".to_string()), None, None)
        .await
        .expect("job.follow_logs subscribes");
    let mut seen = String::new();
    let mut told_to_go = false;
    let mut follower = None;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), follow.next())
            .await
            .unwrap_or_else(|_| panic!("no log chunk within 30s; seen so far {seen:?}"));
        let Some(chunk) = next else { break };
        let chunk = chunk.expect("job.log items are LogChunks");
        seen.push_str(&chunk.data);
        if seen.contains("one\n") && !told_to_go {
            follower = Some(daemon.hfctl_spawn(&["logs", &job_id.to_string(), "p.talk", "-f"]));
            std::fs::write(daemon.dir().join("go"), "").expect("the go file can be written");
            told_to_go = true;
        }
        if chunk.complete {
            break;
        }
    }
    assert_eq!(
        seen, "one\ntwo\n",
        "the follow delivered the whole log, in order"
    );
    let follower = follower.expect("the follower was started");
    let followed = finish_child_output(follower, HFCTL_TIMEOUT);
    assert!(followed.status.success(), "{}", shown(&followed));
    assert_eq!(
        String::from_utf8_lossy(&followed.stdout),
        "one\ntwo\n",
        "`hfctl logs -f` prints the log and ends with the attempt"
    );
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
}

/// The daemon's threads now blocked opening a FIFO, by name (the kernel
/// function they sleep in; `fifo_open` where `wait_for_partner` is inlined).
fn threads_waiting_on_a_fifo(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads");
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("wchan"))
                .is_ok_and(|wchan| matches!(wchan.trim(), "wait_for_partner" | "fifo_open"))
        })
        .map(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            name.trim().to_string()
        })
        .collect()
}

/// A log write that cannot finish (here: its file is a FIFO nobody reads,
/// as a disk stuck in writeback would hold it) holds up only the log
/// writer thread. The attempt's timeout still stops it, RPCs are answered
/// and jobs that print nothing run meanwhile (output of other attempts
/// would queue behind the stuck write, as on a stuck disk); once the write
/// goes through, the output and the daemon's note are in the log in order
/// and counted.
#[test]
fn a_stuck_log_write_stalls_only_log_capture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let killed = dir.path().join("killed");
    nix::unistd::mkfifo(&killed, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let stuck_chain = format!(
        "[process.p.activity.a]\ntimeout = \"1s\"\nshell = 'echo hello; trap \"echo killed > {}; exit 1\" TERM; sleep 60 & wait'\n",
        killed.display()
    );
    let chains = [
        (
            "quick.toml",
            "[process.p.activity.a]\ncommand = [\"true\"]\n",
        ),
        ("stuck.toml", stuck_chain.as_str()),
    ];
    let daemon = TestDaemon::start(&chains);
    let pid = daemon.pid().expect("the daemon runs");
    let first = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(first).state, JobState::Succeeded);

    // The next job's log, made a FIFO before the job exists.
    let next = first + 1;
    let logs = daemon.state_dir().join("logs").join(next.to_string());
    std::fs::create_dir_all(&logs).expect("the job's log directory");
    let fifo = logs.join("stuck.p.a.1.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // The activity says when its timeout's SIGTERM reached it.
    let (told, signal) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let text = std::fs::read_to_string(&killed).unwrap_or_default();
        let _ = told.send(text);
    });
    let stuck = daemon.submit("stuck", &[]);
    assert_eq!(stuck, next, "job ids are handed out in order");

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let blocked = loop {
        let blocked = threads_waiting_on_a_fifo(pid);
        if !blocked.is_empty() {
            break blocked;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no daemon thread ever opened the log FIFO\n{}",
            daemon.log_tail()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        blocked,
        ["holdfastd-logs"],
        "only the log writer waits on the stuck file, no runtime worker"
    );

    // The timeout stops the activity although its note cannot be written.
    let said = signal
        .recv_timeout(Duration::from_secs(30))
        .expect("the timeout's SIGTERM reached the activity while its log was stuck");
    assert_eq!(said, "killed\n");

    // The daemon answers and runs other work while the log is stuck.
    let info = rpc_call(daemon.socket(), "daemon.info", json!({}));
    assert!(info["result"]["pid"].is_u64(), "{info}");
    let other = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(other).state, JobState::Succeeded);
    let status = daemon.status(stuck);
    assert_eq!(
        status.state,
        JobState::Running,
        "the stuck job waits for its log: {status:#?}"
    );
    assert_eq!(
        threads_waiting_on_a_fifo(pid),
        ["holdfastd-logs"],
        "the timeout's note waits on the log writer, not on a worker"
    );

    // Read the FIFO: the writes go through and the attempt ends.
    let mut reader = std::fs::File::open(&fifo).expect("open the FIFO for reading");
    let job = daemon.wait_done(stuck);
    let expected = "hello\n[holdfast] timeout after 1s; stopping the process group\n";
    let attempt = &activity(&job, "p.a").attempts[0];
    assert_eq!(
        attempt.state,
        holdfast_api::AttemptState::Timeout,
        "{job:#?}"
    );
    assert_eq!(attempt.log_bytes, expected.len() as u64, "{job:#?}");
    let mut got = vec![0u8; expected.len()];
    std::io::Read::read_exact(&mut reader, &mut got).expect("read the FIFO");
    assert_eq!(String::from_utf8_lossy(&got), expected);
}
