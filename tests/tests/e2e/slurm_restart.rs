//! Slurm attempts across daemon restarts and slurmctld outages, against
//! the real cluster (`scripts/slurm-up`): a daemon killed or stopped while
//! its Slurm job runs adopts it at restart (never a second submission), a
//! job whose id was never committed is found by its name, and attempts wait
//! while slurmctld is away. Skipped without a cluster, failed when
//! `HOLDFAST_SLURM_TEST=required`.

use holdfast_api::{AttemptState, JobState};
use holdfast_tests::slurm::{alone, cluster_up, job_state, jobs_named, shared, submitted_id};
use holdfast_tests::{TestDaemon, eventually};

use crate::slurm::{RunAsSpool, SLURM_WITHIN, run_as_spool};
use crate::support::{activity, shown};

/// A chain whose one Slurm activity prints, then waits for `@DIR@/go`
/// (written by the test while the daemon is down or back), prints again
/// and exits with the code in that file.
const GATED: &str = r#"
[process.p.activity.work]
executor = "slurm"
shell = '''
echo "attempt $HF_ATTEMPT" >> @DIR@/runs
echo before
while [ ! -e @DIR@/go ]; do sleep 0.1; done
echo after
exit "$(cat @DIR@/go)"
'''
"#;

/// Wait until the gated chain's Slurm job runs; its Slurm job id.
fn gated_job_running(daemon: &TestDaemon, job_id: u64) -> u64 {
    let runs = daemon.dir().join("runs");
    eventually(SLURM_WITHIN, "the Slurm job runs", || {
        let log = daemon.logs(job_id, "p.work", None);
        match submitted_id(&log) {
            Some(id) if job_state(id).as_deref() == Some("RUNNING") && runs.exists() => Ok(id),
            _ => Err(log),
        }
    })
    .0
}

/// Every Slurm job this test's daemon submitted for the gated activity.
fn gated_submissions(slurm_id: u64, job_id: u64) -> Vec<String> {
    let needle = format!("-{job_id}-0-");
    let name = jobs_named(&needle)
        .into_iter()
        .find(|(id, _, _)| *id == slurm_id)
        .map(|(_, name, _)| name)
        .expect("the Slurm job is listed");
    let prefix = name
        .rsplit_once(&needle)
        .expect("hf-<daemon>-<job>-<idx>-<n>")
        .0;
    jobs_named(&format!("{prefix}{needle}"))
        .into_iter()
        .map(|(_, name, _)| name)
        .collect()
}

/// kill -9 of the daemon while its Slurm job runs: the job runs on, the
/// restarted daemon adopts it (no kill, no second submission), and it
/// finishes exactly once, as the same attempt, with the output from both
/// sides of the restart in its log.
#[test]
fn kill9_while_a_slurm_job_runs_then_restart_adopts_it() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let mut daemon = TestDaemon::start(&[("work.toml", GATED)]);
    let job_id = daemon.submit("work", &[]);
    let slurm_id = gated_job_running(&daemon, job_id);
    daemon.kill9();
    assert_eq!(
        job_state(slurm_id).as_deref(),
        Some("RUNNING"),
        "a Slurm job outlives the daemon"
    );
    daemon.restart();
    std::fs::write(daemon.dir().join("go"), "0").expect("go");
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let work = activity(&job, "p.work");
    assert_eq!(work.attempts.len(), 1, "adopted, not resumed: {work:#?}");
    assert_eq!(work.attempts[0].state, AttemptState::Succeeded);
    let log = daemon.logs(job_id, "p.work", None);
    assert!(log.contains("adopted after a daemon restart"), "{log:?}");
    assert!(
        log.contains("before\n") && log.contains("after\n"),
        "{log:?}"
    );
    assert_eq!(
        gated_submissions(slurm_id, job_id).len(),
        1,
        "submitted once, never again"
    );
    assert_eq!(
        std::fs::read_to_string(daemon.dir().join("runs")).expect("runs"),
        "attempt 1\n",
        "the activity ran exactly once"
    );
}

/// A Slurm activity that raises an alert and reports progress, waits for
/// `@DIR@/go`, then raises a second alert and sends an output.
const ALERTING: &str = r#"
[process.p.activity.work]
executor = "slurm"
env = { PATH = "@BIN@:/usr/bin:/bin" }
shell = '''
echo "attempt $HF_ATTEMPT" >> @DIR@/runs
hfctl emit alert "before the restart"
hfctl emit progress 0.25 quarter
while [ ! -e @DIR@/go ]; do sleep 0.1; done
hfctl emit alert "after the restart"
hfctl emit output '{"rows": 3}'
'''
"#;

/// The control file of an adopted attempt is read on from where the
/// killed daemon had applied it (the offset is committed with what its
/// lines changed): an alert raised before the kill counts once, the one
/// raised after the restart is read, and the output arrives.
#[test]
fn an_adopted_slurm_attempt_does_not_count_its_alerts_twice() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let mut daemon = TestDaemon::start(&[("work.toml", ALERTING)]);
    let job_id = daemon.submit("work", &[]);
    gated_job_running(&daemon, job_id);
    daemon.wait_for(job_id, "the first alert and the progress", |job| {
        job.alerts == 1 && activity(job, "p.work").progress.is_some()
    });
    daemon.kill9();
    daemon.restart();
    std::fs::write(daemon.dir().join("go"), "").expect("go");
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(
        job.alerts, 2,
        "one alert before the kill, one after, none read twice: {job:#?}"
    );
    let work = activity(&job, "p.work");
    assert_eq!(work.attempts.len(), 1, "{work:#?}");
    assert_eq!(job.outputs["p.work"]["rows"], 3, "{job:#?}");
}

/// A Slurm activity that waits for `@DIR@/go` with a timeout of 8 s.
const TIMED: &str = r#"
[process.p.activity.work]
executor = "slurm"
timeout = "8s"
shell = '''
echo "attempt $HF_ATTEMPT" >> @DIR@/runs
while [ ! -e @DIR@/go ]; do sleep 0.1; done
'''
"#;

/// An adopted attempt's timeout counts from its start, not from the
/// adoption: with the daemon down past the deadline, the restarted daemon
/// cancels the Slurm job at once (a restarted clock would give it 8 s
/// more).
#[test]
fn an_adopted_slurm_attempt_keeps_its_timeout_from_its_start() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let mut daemon = TestDaemon::start(&[("work.toml", TIMED)]);
    let job_id = daemon.submit("work", &[]);
    let slurm_id = gated_job_running(&daemon, job_id);
    // The attempt started before this instant.
    let running = std::time::Instant::now();
    daemon.kill9();
    // Down past the attempt's deadline: this is the downtime under test,
    // not a wait for readiness.
    let past_deadline = std::time::Duration::from_secs(10);
    std::thread::sleep(past_deadline.saturating_sub(running.elapsed()));
    let restarted = std::time::Instant::now();
    daemon.restart();
    let job = daemon.wait_done(job_id);
    let ended_after = restarted.elapsed();
    let work = activity(&job, "p.work");
    assert_eq!(work.attempts.len(), 1, "{work:#?}");
    assert_eq!(work.attempts[0].state, AttemptState::Timeout, "{work:#?}");
    // A clock restarted at adoption would end it 8 s or more after the
    // restart; anything less is the timeout counted from the start (the
    // rest is the restart and the cancel, slow on a busy machine).
    assert!(
        ended_after < std::time::Duration::from_secs(8),
        "the timeout was over before the restart, yet the attempt ran {ended_after:?} more"
    );
    let state = job_state(slurm_id);
    assert!(
        matches!(state.as_deref(), None | Some("CANCELLED")),
        "squeue still shows Slurm job {slurm_id} as {state:?}"
    );
}

/// The crash window between `sbatch` answering and its job id being
/// committed: with the id gone from the store (as a crash there leaves
/// it), the restarted daemon finds the job by its name and adopts it; it
/// is never submitted a second time.
#[test]
fn an_uncommitted_slurm_job_is_found_by_its_name_at_restart() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let mut daemon = TestDaemon::start(&[("work.toml", GATED)]);
    let job_id = daemon.submit("work", &[]);
    let slurm_id = gated_job_running(&daemon, job_id);
    daemon.kill9();
    let changed = rusqlite::Connection::open(daemon.state_dir().join("holdfast.db"))
        .expect("open the database")
        .execute("UPDATE attempts SET slurm_job_id = NULL", [])
        .expect("forget the id");
    assert_eq!(changed, 1);
    daemon.launch();
    std::fs::write(daemon.dir().join("go"), "0").expect("go");
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let work = activity(&job, "p.work");
    assert_eq!(work.attempts.len(), 1, "{work:#?}");
    assert_eq!(
        work.attempts[0].slurm_job_id,
        Some(slurm_id),
        "found by name and committed"
    );
    assert_eq!(gated_submissions(slurm_id, job_id).len(), 1);
    assert_eq!(
        std::fs::read_to_string(daemon.dir().join("runs")).expect("runs"),
        "attempt 1\n"
    );
}

/// A graceful stop leaves the Slurm job running; it ends while the daemon
/// is down (exit code 3), and the restarted daemon records that outcome
/// from Slurm's records for the same attempt, without running it again.
#[test]
fn a_slurm_job_that_ends_while_the_daemon_is_stopped_is_recorded_at_restart() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let mut daemon = TestDaemon::start(&[("work.toml", GATED)]);
    let job_id = daemon.submit("work", &[]);
    let slurm_id = gated_job_running(&daemon, job_id);
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    assert_eq!(
        job_state(slurm_id).as_deref(),
        Some("RUNNING"),
        "a stop leaves the Slurm job running"
    );
    std::fs::write(daemon.dir().join("go"), "3").expect("go");
    eventually(
        SLURM_WITHIN,
        "the Slurm job ends while the daemon is down",
        || match job_state(slurm_id) {
            Some(state) if state == "RUNNING" || state == "COMPLETING" => Err(state),
            other => Ok(other),
        },
    );
    daemon.launch();
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let work = activity(&job, "p.work");
    assert_eq!(work.attempts.len(), 1, "{work:#?}");
    assert_eq!(work.attempts[0].state, AttemptState::Failed);
    assert_eq!(work.attempts[0].exit_code, Some(3), "exit code from Slurm");
    assert_eq!(gated_submissions(slurm_id, job_id).len(), 1);
    assert_eq!(
        std::fs::read_to_string(daemon.dir().join("runs")).expect("runs"),
        "attempt 1\n"
    );
}

/// slurmctld going away makes attempts wait, not fail: with the controller
/// stopped while a Slurm job runs (and ends), `hfctl info` reports it
/// unreachable and the attempt stays running; once slurmctld is back
/// (`scripts/slurm-up`), the attempt ends as the job did, submitted once.
/// Takes the cluster alone (the other Slurm tests wait); about 30 s.
#[test]
fn slurmctld_away_makes_attempts_wait_not_fail() {
    if !cluster_up() {
        return;
    }
    let _alone = alone();
    let daemon = TestDaemon::start(&[("work.toml", GATED)]);
    let job_id = daemon.submit("work", &[]);
    let slurm_id = gated_job_running(&daemon, job_id);
    let pid: i32 = std::fs::read_to_string("/run/slurmctld.pid")
        .expect("slurmctld pid file")
        .trim()
        .parse()
        .expect("a pid");
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("stop slurmctld");
    eventually(
        SLURM_WITHIN,
        "slurmctld exits",
        || match nix::sys::signal::kill(pid, None) {
            Err(_) => Ok(()),
            Ok(()) => Err("still running"),
        },
    );
    // Whatever happens next, the cluster is brought back for the others.
    struct Up;
    impl Drop for Up {
        fn drop(&mut self) {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/slurm-up");
            let status = std::process::Command::new(script).status();
            assert!(status.is_ok_and(|s| s.success()), "scripts/slurm-up failed");
        }
    }
    let up = Up;
    std::fs::write(daemon.dir().join("go"), "0").expect("go");
    let (info, _) = eventually(SLURM_WITHIN, "hfctl info reports slurmctld away", || {
        let info = shown(&daemon.hfctl(&["info"]));
        if info.contains("slurmctld unreachable") && info.contains("attempts wait") {
            Ok(info)
        } else {
            Err(info)
        }
    });
    let job = daemon.status(job_id);
    assert_eq!(job.state, JobState::Running, "waits: {job:#?}\n{info}");
    assert_eq!(
        activity(&job, "p.work").attempts[0].state,
        AttemptState::Running
    );
    drop(up);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(activity(&job, "p.work").attempts.len(), 1);
    assert_eq!(gated_submissions(slurm_id, job_id).len(), 1);
}

/// A run-as Slurm job adopted after kill -9: its output file and control
/// file are the job's user's, and the restarted daemon reads them as that
/// user's (the output after the restart reaches the log, the output sent
/// on the control file is recorded). Needs real users
/// (`HOLDFAST_USERS_TEST`) and the cluster.
#[test]
fn kill9_then_restart_adopts_a_run_as_slurm_job_and_reads_its_files() {
    use std::os::unix::fs::PermissionsExt;
    if crate::users::accounts_or_skip(
        "kill9_then_restart_adopts_a_run_as_slurm_job_and_reads_its_files",
    )
    .is_none()
        || !cluster_up()
    {
        return;
    }
    let _cluster = shared();
    // The spool and the gate, reachable by the job's user.
    let RunAsSpool {
        dir: _spool,
        gate,
        settings,
    } = run_as_spool();
    let chain = format!(
        r#"
[process.p.activity.work]
executor = "slurm"
user = "hft-runas"
shell = '''
echo "before as $(id -un)"
while [ ! -e {gate}/go ]; do sleep 0.1; done
echo "after as $(id -un)"
echo 'output {{"rows": 3}}' >&3
'''
"#,
        gate = gate.display()
    );
    let mut daemon = TestDaemon::start_with(&settings, &[("work.toml", &chain)]);
    let job_id = daemon.submit("work", &[]);
    eventually(SLURM_WITHIN, "the Slurm job runs", || {
        let log = daemon.logs(job_id, "p.work", None);
        if log.contains("before as hft-runas\n") {
            Ok(())
        } else {
            Err(log)
        }
    });
    daemon.kill9();
    daemon.restart();
    let go = gate.join("go");
    std::fs::write(&go, "").expect("go");
    std::fs::set_permissions(&go, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let job = daemon.wait_done(job_id);
    let log = daemon.logs(job_id, "p.work", None);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{log}");
    assert!(
        log.contains("adopted after a daemon restart") && log.contains("after as hft-runas\n"),
        "the adopted job's output is read: {log:?}"
    );
    assert_eq!(job.outputs["p.work"]["rows"], 3, "{job:#?}\n{log}");
}
