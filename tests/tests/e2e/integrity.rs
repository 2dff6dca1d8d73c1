//! Data that must not be lost or shared: one daemon per state directory,
//! a database file that holds everything after a graceful stop, online
//! backups for operators only, job ids never given out twice, a private
//! state directory whatever the umask, and an attempt's orphaned process
//! group killed at recovery without cgroups.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_api::{ActivityState, AttemptState, JobState};
use holdfast_tests::process::{group_gone_within, is_alive};
use holdfast_tests::users::{self, STANDARD_PATH};
use holdfast_tests::{TestDaemon, bin_path, eventually, holdfastd_command, run_with_deadline};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::faults::{Tmpfs, daemon_on};
use crate::support::{activity, shown};

/// How long a process SIGKILLed by the daemon may take to finish dying.
const DYING: Duration = Duration::from_millis(500);

/// Runs until `@DIR@/release` exists; reports progress `holding` first.
const HOLD: &str = r#"
[process.p.activity.hold]
shell = '''
echo "progress 10 holding" >&3
while [ ! -e @DIR@/release ]; do sleep 0.02; done
'''
"#;

/// Done at once.
const QUICK: &str = r#"
[process.p.activity.quick]
command = ["true"]
"#;

/// Writes a line to its log.
const SAY: &str = r#"
[process.p.activity.say]
shell = "echo a line only the daemon and its operators may read"
"#;

/// True once `path` of the job runs and has reported `text`, its pid known.
fn holding(job: &holdfast_api::Job, path: &str, text: &str) -> bool {
    let run = activity(job, path);
    run.state == ActivityState::Running
        && run.progress_text.as_deref() == Some(text)
        && run
            .attempts
            .last()
            .is_some_and(|a| a.state == AttemptState::Running && a.pid.is_some())
}

/// Job ids and states in the database file at `path`, opened on its own.
fn stored_jobs(path: &Path) -> Vec<(u64, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("{} opens as a database: {e}", path.display()));
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("the integrity check runs");
    assert_eq!(integrity, "ok", "{} is consistent", path.display());
    let mut stmt = conn
        .prepare("SELECT id, state FROM jobs ORDER BY id")
        .expect("jobs can be listed");
    stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .expect("jobs can be read")
        .collect::<Result<_, _>>()
        .expect("every row reads")
}

/// A second daemon on the same state directory, with its own socket, must
/// exit before it touches anything: non-zero, with one line naming the
/// first daemon's pid, and without binding its socket. The first daemon's
/// running attempt is undisturbed (same attempt, same process) and its job
/// ends with that one attempt.
#[test]
fn a_second_daemon_on_the_same_state_directory_exits_naming_the_first() {
    let daemon = TestDaemon::start(&[("hold.toml", HOLD)]);
    let job_id = daemon.submit("hold", &[]);
    let running = daemon.wait_for(job_id, "holding", |job| holding(job, "p.hold", "holding"));
    let attempt_pid = activity(&running, "p.hold").attempts[0].pid;
    let first = daemon.pid().expect("the first daemon runs");
    let line = second_daemon_refused(&daemon, first);
    assert!(
        line.contains(&daemon.state_dir().display().to_string()),
        "the line names the state directory: {line}"
    );

    let now = daemon.status(job_id);
    let hold = activity(&now, "p.hold");
    assert_eq!(hold.attempts.len(), 1, "{now:#?}");
    assert_eq!(hold.attempts[0].state, AttemptState::Running, "{now:#?}");
    assert_eq!(hold.attempts[0].pid, attempt_pid, "{now:#?}");
    fs::write(daemon.dir().join("release"), "").expect("the flag can be written");
    let done = daemon.wait_done(job_id);
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert_eq!(activity(&done, "p.hold").attempts.len(), 1, "{done:#?}");
}

/// The second daemon's one line naming `pid`, from a run of `holdfastd`
/// on the state directory of `daemon` with its own socket; it must have
/// exited non-zero without binding that socket.
fn second_daemon_refused(daemon: &TestDaemon, pid: u32) -> String {
    let other_socket = daemon.dir().join("other.sock");
    let second = run_with_deadline(
        holdfastd_command(
            &daemon.config_path(),
            &other_socket,
            &daemon.state_dir(),
            &daemon.workflows_dir(),
        ),
        Duration::from_secs(20),
    );
    assert!(!second.status.success(), "{}", shown(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    let naming: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(&format!("pid {pid}")))
        .collect();
    assert_eq!(
        naming.len(),
        1,
        "one line names the first daemon's pid {pid}: {}",
        shown(&second)
    );
    assert!(
        !other_socket.exists(),
        "the second daemon stopped before binding its socket"
    );
    naming[0].to_string()
}

/// On a read-only state directory without a lock file (none can be
/// created), the daemon serves reads; once the directory is writable it
/// takes the lock before its engine starts, so from then on a second daemon
/// is refused as usual.
#[test]
fn a_read_only_state_directory_without_a_lock_file_is_locked_once_writable() {
    let Some(tmpfs) = Tmpfs::mount("8m") else {
        return;
    };
    let mut daemon = daemon_on(&tmpfs);
    let earlier = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(earlier).state, JobState::Succeeded);
    let status = daemon.stop();
    assert!(status.success(), "the daemon stops cleanly: {status}");
    let lock = tmpfs.path().join("holdfast.lock");
    fs::remove_file(&lock).expect("the lock file can be removed");
    let ro = tmpfs.remount("ro");
    assert!(ro.status.success(), "remount ro: {}", shown(&ro));

    daemon.launch();
    assert_eq!(
        daemon.status(earlier).state,
        JobState::Succeeded,
        "reads are served"
    );
    assert!(
        !lock.exists(),
        "no lock file can be created on a read-only file system"
    );

    let rw = tmpfs.remount("rw");
    assert!(rw.status.success(), "remount rw: {}", shown(&rw));
    eventually(
        Duration::from_secs(10),
        "a submission succeeds once the state directory is writable",
        || {
            let output = daemon.hfctl(&["--json", "submit", "quick"]);
            if output.status.success() {
                Ok(())
            } else {
                Err(shown(&output))
            }
        },
    );
    let pid = daemon.pid().expect("the daemon runs");
    let held = fs::read_to_string(&lock).expect("the lock file exists once writable");
    assert_eq!(
        held.trim(),
        pid.to_string(),
        "the lock file names the daemon"
    );
    second_daemon_refused(&daemon, pid);
}

/// After SIGTERM the WAL has been checkpointed into the database: the
/// `-wal` file is gone or empty, and a copy of `holdfast.db` alone (what a
/// careless backup takes) holds every acknowledged job.
#[test]
fn after_sigterm_the_database_file_alone_holds_every_job() {
    let mut daemon = TestDaemon::start(&[("quick.toml", QUICK)]);
    let ids: Vec<u64> = (0..5).map(|_| daemon.submit("quick", &[])).collect();
    for &id in &ids {
        assert_eq!(daemon.wait_done(id).state, JobState::Succeeded);
    }
    let status = daemon.stop();
    assert!(status.success(), "holdfastd stopped cleanly: {status}");

    let state = daemon.state_dir();
    let wal = state.join("holdfast.db-wal");
    let wal_len = fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        wal_len,
        0,
        "{} is empty or absent after a stop",
        wal.display()
    );
    let copy_dir = daemon.dir().join("copy");
    fs::create_dir(&copy_dir).expect("the copy directory can be made");
    let copy = copy_dir.join("holdfast.db");
    fs::copy(state.join("holdfast.db"), &copy).expect("the database file can be copied");
    let jobs = stored_jobs(&copy);
    let expected: Vec<(u64, String)> = ids.iter().map(|&id| (id, "succeeded".into())).collect();
    assert_eq!(
        jobs, expected,
        "the copy of holdfast.db alone has every job"
    );
}

/// `hfctl backup FILE` while jobs run writes a consistent database (it
/// passes SQLite's integrity check) with every job acknowledged before the
/// call, into a new file of mode 0600; an existing file is never
/// overwritten. The daemon's own snapshot does not stay in the state
/// directory, not even after a crash.
#[test]
fn hfctl_backup_while_jobs_run_is_a_consistent_copy() {
    let mut daemon = TestDaemon::start(&[("hold.toml", HOLD), ("quick.toml", QUICK)]);
    let held = daemon.submit("hold", &[]);
    daemon.wait_for(held, "holding", |job| holding(job, "p.hold", "holding"));
    let mut acknowledged = vec![held];
    acknowledged.extend((0..20).map(|_| daemon.submit("quick", &[])));
    // More submissions while the copy is made.
    let busy: Vec<Child> = (0..5)
        .map(|_| daemon.hfctl_spawn(&["submit", "quick"]))
        .collect();

    let file = daemon.dir().join("backup.db");
    let output = daemon.hfctl(&["backup".as_ref(), file.as_os_str()]);
    assert!(output.status.success(), "{}", shown(&output));
    for child in busy {
        let out = holdfast_tests::finish_child_output(child, Duration::from_secs(60));
        assert!(out.status.success(), "{}", shown(&out));
    }
    let mode = fs::metadata(&file)
        .expect("the copy exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the copy is private to the caller");
    let jobs = stored_jobs(&file);
    for id in &acknowledged {
        assert!(
            jobs.iter().any(|(j, _)| j == id),
            "job {id} acknowledged before the backup is in it: {jobs:?}"
        );
    }
    assert!(
        jobs.iter().any(|(j, s)| *j == held && s == "running"),
        "the held job is in the copy as running: {jobs:?}"
    );

    let again = daemon.hfctl(&["backup".as_ref(), file.as_os_str()]);
    assert_eq!(again.status.code(), Some(1), "{}", shown(&again));
    assert_eq!(
        stored_jobs(&file).len(),
        jobs.len(),
        "the existing copy was left as it was"
    );
    fs::write(daemon.dir().join("release"), "").expect("the flag can be written");

    // The daemon's snapshot was removed at once; one a crash left behind is
    // removed at the next start.
    let snapshots = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .expect("the state directory can be read")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with(".backup-"))
            .collect()
    };
    let state = daemon.state_dir();
    assert!(snapshots(&state).is_empty(), "{:?}", snapshots(&state));
    fs::write(state.join(".backup-1-0.db"), "left by a crash").expect("a stale snapshot");
    daemon.restart();
    assert!(snapshots(&state).is_empty(), "{:?}", snapshots(&state));
}

/// A backup holds every job's parameters: a socket member is refused (exit
/// 7, no file left), an operator gets it, written by hfctl as the operator
/// (the file is theirs), and an operator cannot use the root daemon to write
/// where they may not (a file under /etc is not created).
#[test]
fn hfctl_backup_is_for_operators_only_and_written_as_the_caller() {
    let accounts = match users::accounts() {
        Ok(accounts) => accounts,
        Err(reason) => {
            assert!(
                !users::required(),
                "cannot run here ({}=required): {reason}",
                users::REQUIRED_ENV
            );
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let daemon = users::SystemDaemon::start(
        r#"
socket_group = "hft-sock"
operator_groups = ["hft-ops"]
run_as_default = "hft-runas"
"#,
        &[("quick.toml", QUICK)],
        &[],
    );
    let job = daemon.submit("quick", &[]);
    let drop_dir = daemon.dir().join("drop");
    fs::create_dir(&drop_dir).expect("a drop directory can be made");
    fs::set_permissions(&drop_dir, fs::Permissions::from_mode(0o1777))
        .expect("the drop directory can be opened to everyone");

    let member_file = drop_dir.join("member.db");
    let refused = accounts.member.hfctl(
        daemon.socket(),
        &["backup".as_ref(), member_file.as_os_str()],
    );
    assert_eq!(refused.status.code(), Some(7), "{}", shown(&refused));
    assert!(!member_file.exists(), "a refused backup leaves no file");

    let operator_file = drop_dir.join("operator.db");
    let output = accounts.operator.hfctl(
        daemon.socket(),
        &["backup".as_ref(), operator_file.as_os_str()],
    );
    assert!(output.status.success(), "{}", shown(&output));
    let meta = fs::metadata(&operator_file).expect("the operator's copy exists");
    assert_eq!(
        meta.uid(),
        accounts.operator.uid,
        "hfctl wrote it as the operator"
    );
    assert!(stored_jobs(&operator_file).iter().any(|(id, _)| *id == job));

    let forbidden = PathBuf::from(format!("/etc/hft-backup-probe-{}", std::process::id()));
    let output = accounts
        .operator
        .hfctl(daemon.socket(), &["backup".as_ref(), forbidden.as_os_str()]);
    let created = forbidden.exists();
    let _ = fs::remove_file(&forbidden);
    assert!(!output.status.success(), "{}", shown(&output));
    assert!(
        !created,
        "nothing was written under /etc on the operator's behalf"
    );
}

/// Ids come from a durable high-water mark: after retention deleted the
/// newest (here: every) job and the daemon restarted, the next job gets a
/// new id, not the deleted job's.
#[test]
fn a_job_id_is_never_given_out_twice_after_retention() {
    let mut daemon = TestDaemon::start_with(r#"retention = "1ms""#, &[("quick.toml", QUICK)]);
    let first = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(first).state, JobState::Succeeded);
    // The sweep at start deletes the finished job.
    daemon.restart();
    eventually(Duration::from_secs(20), "retention deleted the job", || {
        let output = daemon.hfctl(&["status", &first.to_string()]);
        match output.status.code() {
            Some(6) => Ok(()),
            _ => Err(shown(&output)),
        }
    });
    daemon.restart();
    let next = daemon.submit("quick", &[]);
    assert!(
        next > first,
        "job {first} was deleted by retention; the next job must get a new id, got {next}"
    );
}

/// A daemon started by hand in system mode, through `sh` with umask 022
/// (what a login shell has), with its readiness read from its own notify
/// socket. Stopped with SIGTERM when dropped.
pub(crate) struct ByHand {
    child: Option<Child>,
}

impl ByHand {
    fn start(daemon: &TestDaemon) -> ByHand {
        ByHand::start_as(daemon, "022", daemon.socket(), &[])
    }

    /// [`ByHand::start`] with umask `umask` (octal digits), the socket at
    /// `socket`, and `sh` run through `wrapper` (a program and its
    /// arguments, none for no wrapper).
    pub(crate) fn start_as(
        daemon: &TestDaemon,
        umask: &str,
        socket: &Path,
        wrapper: &[&str],
    ) -> ByHand {
        let notify_path = daemon.dir().join("by-hand-notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("the notify socket can be bound");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(daemon.log_path())
            .expect("the daemon log can be opened");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg("/bin/sh");
                cmd
            }
            None => Command::new("/bin/sh"),
        };
        cmd.arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(bin_path("holdfastd"))
            .arg("--system")
            .arg("--config")
            .arg(daemon.config_path())
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(daemon.state_dir())
            .arg("--workflows-dir")
            .arg(daemon.workflows_dir())
            .arg("--tenants-dir")
            .arg(daemon.tenants_dir())
            .arg("--connections-dir")
            .arg(daemon.connections_dir())
            .arg("-v")
            .env_clear()
            .env("PATH", STANDARD_PATH)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log can be shared"))
            .stderr(log);
        let mut child = cmd.spawn().expect("holdfastd can be started");
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a read timeout can be set");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            match notify.recv(&mut buf) {
                Ok(n)
                    if String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .any(|l| l == "READY=1") =>
                {
                    break;
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("reading the notify socket failed: {e}"),
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "holdfastd exited with {status} before READY=1\n{}",
                    daemon.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no READY=1 within 20s\n{}",
                daemon.log_tail()
            );
        }
        ByHand { child: Some(child) }
    }
}

impl Drop for ByHand {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

/// Started by hand with umask 022, a system-mode daemon still keeps its
/// state private: the log directory it creates is 0700, the database, its
/// WAL, the lock file and an attempt's log are 0600. The state directory
/// that already existed as 0755 keeps its mode but is warned about, once.
#[test]
fn state_is_private_whatever_the_umask_and_a_looser_directory_is_warned_about() {
    if let Err(reason) = users::accounts() {
        assert!(
            !users::required(),
            "cannot run here ({}=required): {reason}",
            users::REQUIRED_ENV
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let daemon = TestDaemon::prepare(
        Some(
            r#"
socket_group = "hft-sock"
run_as_default = "hft-runas"
"#,
        ),
        &[("say.toml", SAY)],
    );
    fs::set_permissions(daemon.dir(), fs::Permissions::from_mode(0o711))
        .expect("the fixture directory can be opened");
    let state = daemon.state_dir();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755))
        .expect("the state directory can be made 0755");
    let running = ByHand::start(&daemon);
    let job = daemon.submit("say", &[]);
    assert_eq!(daemon.wait_done(job).state, JobState::Succeeded);

    let mode = |path: &Path| {
        fs::metadata(path)
            .unwrap_or_else(|e| panic!("{} exists: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let logs = state.join("logs");
    assert_eq!(mode(&logs), 0o700, "{}", logs.display());
    for name in ["holdfast.db", "holdfast.db-wal", "holdfast.lock"] {
        assert_eq!(mode(&state.join(name)), 0o600, "{name}");
    }
    let mut attempt_logs = Vec::new();
    let mut dirs = vec![logs.join(job.to_string())];
    while let Some(dir) = dirs.pop() {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        for entry in fs::read_dir(&dir).expect("the job's log directory can be read") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                attempt_logs.push(path);
            }
        }
    }
    assert!(!attempt_logs.is_empty(), "the attempt left a log file");
    for path in &attempt_logs {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
    assert_eq!(mode(&state), 0o755, "an existing directory keeps its mode");
    drop(running);
    let log = fs::read_to_string(daemon.log_path()).expect("the daemon log can be read");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("is mode 0755"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning about the 0755 state directory: {warnings:#?}"
    );
    assert!(
        warnings[0].contains(&state.display().to_string()),
        "{warnings:?}"
    );
}

/// Without cgroups, an attempt's grandchild that cleaned its environment
/// (`env -i`, so the `HF_*` markers are gone) but stayed in the attempt's
/// process group is killed when the daemon recovers after a kill -9, even
/// though the group's leader has exited in the meantime.
#[test]
fn an_env_cleaned_grandchild_in_the_attempt_group_is_killed_at_recovery() {
    let chain = r#"
[process.p.activity.spawner]
shell = '''
if [ "$HF_ATTEMPT" -gt 1 ]; then exit 0; fi
env -i /bin/sh -c 'echo $$ > @DIR@/escapee; exec /bin/sleep 60' &
while [ ! -s @DIR@/escapee ]; do sleep 0.02; done
echo "progress 10 spawned" >&3
while [ ! -e @DIR@/leader-may-exit ]; do sleep 0.02; done
'''
"#;
    let mut daemon = TestDaemon::start_with(r#"cgroup = "off""#, &[("spawner.toml", chain)]);
    let job_id = daemon.submit("spawner", &[]);
    let running = daemon.wait_for(job_id, "spawned", |job| {
        holding(job, "p.spawner", "spawned")
    });
    let leader = activity(&running, "p.spawner").attempts[0]
        .pid
        .expect("the leader's pid is recorded") as i32;
    let escapee: i32 = fs::read_to_string(daemon.dir().join("escapee"))
        .expect("the escapee wrote its pid")
        .trim()
        .parse()
        .expect("a pid");
    let environ = fs::read(format!("/proc/{escapee}/environ")).expect("its environment reads");
    assert!(
        !environ.windows(3).any(|w| w == b"HF_"),
        "the escapee carries no HF_ marker"
    );

    daemon.kill9();
    fs::write(daemon.dir().join("leader-may-exit"), "").expect("the flag can be written");
    eventually(
        Duration::from_secs(10),
        "the orphaned leader exited and was reaped",
        || {
            if Path::new(&format!("/proc/{leader}")).exists() {
                Err(format!("/proc/{leader} still exists"))
            } else {
                Ok(())
            }
        },
    );
    assert!(is_alive(escapee), "the escapee keeps the old group alive");

    daemon.launch();
    let survivors = group_gone_within(leader, DYING);
    let _ = kill(Pid::from_raw(escapee), Signal::SIGKILL);
    assert!(
        survivors.is_empty(),
        "process group {leader} still has {survivors:?} after recovery"
    );
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
}
