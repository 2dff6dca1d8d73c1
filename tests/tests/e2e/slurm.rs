//! The Slurm executor against a real single-node cluster (`scripts/slurm-up`):
//! chains mixing local and Slurm activities, exit codes and retries, the
//! control channel from inside a Slurm job, cancel and timeout through
//! `scancel`, a daemon killed or stopped while its Slurm jobs run (adopted
//! at restart), and the load error
//! on a host without Slurm. Skipped without a cluster, failed when
//! `HOLDFAST_SLURM_TEST=required`.

use std::time::Duration;

use holdfast_api::{AttemptState, JobState};
use holdfast_tests::slurm::{
    client_calls, cluster_up, count_client_calls, job_state, shared, submitted_id,
};
use holdfast_tests::{TestDaemon, eventually};
use serde_json::json;

use crate::support::{activity, shown};

/// Slurm answers a scancel in ~70 ms and lists jobs for minutes; this is
/// a generous bound for what the tests wait on.
pub(crate) const SLURM_WITHIN: Duration = Duration::from_secs(30);

/// A Slurm spool that a run-as job's user reaches (0711), with a `gate`
/// directory in it that such a job can read (0755), and daemon settings
/// that use the spool and allow `hft-runas`.
pub(crate) struct RunAsSpool {
    pub dir: tempfile::TempDir,
    pub gate: std::path::PathBuf,
    pub settings: String,
}

pub(crate) fn run_as_spool() -> RunAsSpool {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("hft-slurm-spool-")
        .tempdir()
        .expect("spool");
    let gate = dir.path().join("gate");
    std::fs::create_dir(&gate).expect("gate");
    for (path, mode) in [(dir.path(), 0o711), (gate.as_path(), 0o755)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let settings = format!(
        "run_as_allowed = [\"hft-runas\"]\nslurm_spool = \"{}/attempts\"\n",
        dir.path().display()
    );
    RunAsSpool {
        dir,
        gate,
        settings,
    }
}

/// Outputs flow local → Slurm → local, the Slurm step really ran as a
/// Slurm job (SLURM_JOB_ID, "submitted to Slurm" in its log), its output
/// file reached the attempt's log, and progress, checkpoint and output
/// sent from inside the job with `hfctl emit` and fd 3 reached the daemon
/// (the checkpoint of the failed first Slurm attempt is the second's
/// `HF_CHECKPOINT`).
#[test]
fn mixed_local_and_slurm_chain_passes_outputs_and_control_messages() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let chain = r#"
[process.a.activity.make]
shell = '''echo 'output {"rows": 41}' >&3'''

[process.b]
after = ["a"]

[process.b.activity.remote]
executor = "slurm"
cpus = 1
memory_max = "64M"
retries = 1
retry_delay = "0s"
env = { PATH = "@BIN@:/usr/bin:/bin", ROWS = "{{ outputs.a.make.rows }}" }
shell = '''
if [ "$HF_ATTEMPT" = 1 ]; then
  hfctl emit checkpoint '{"chunk": 7}'
  exit 1
fi
echo "on slurm job $SLURM_JOB_ID rows=$ROWS checkpoint=$HF_CHECKPOINT"
hfctl emit progress 0.5 halfway
echo "output {\"rows\": $((ROWS + 1))}" >&3
'''

[process.c]
after = ["b"]

[process.c.activity.report]
env = { ROWS = "{{ outputs.b.remote.rows }}" }
shell = 'echo "final rows=$ROWS"'
"#;
    let daemon = TestDaemon::start(&[("mixed.toml", chain)]);
    let job_id = daemon.submit("mixed", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:#?}\n{}",
        daemon.log_tail()
    );
    assert_eq!(job.outputs.get("b.remote"), Some(&json!({"rows": 42})));
    let remote = activity(&job, "b.remote");
    assert_eq!(
        remote.progress,
        Some(0.5),
        "progress from inside the Slurm job"
    );
    assert_eq!(remote.progress_text.as_deref(), Some("halfway"));
    let log = daemon.logs(job_id, "b.remote", Some(2));
    let slurm_id = submitted_id(&log).unwrap_or_else(|| panic!("no Slurm job id in {log:?}"));
    assert!(
        log.contains(&format!(
            "on slurm job {slurm_id} rows=41 checkpoint={{\"chunk\":7}}"
        )),
        "the output file was tailed into the log: {log:?}"
    );
    assert_eq!(
        daemon.logs(job_id, "c.report", None),
        "final rows=42\n",
        "the Slurm step's output reached the next local step"
    );

    // What operators see: the Slurm job per attempt, the executor's health
    // and the sbatch options each activity gets.
    let status = shown(&daemon.hfctl(&["status", &job_id.to_string()]));
    assert!(
        status.contains(&format!(
            "b.remote attempt 2: Slurm job {slurm_id} (succeeded)"
        )),
        "{status}"
    );
    let info = shown(&daemon.hfctl(&["info"]));
    assert!(info.contains("slurmctld reachable; last query"), "{info}");
    let describe = shown(&daemon.hfctl(&["describe", "mixed"]));
    assert!(
        describe.contains("remote runs on slurm (sbatch --mem=64M --cpus-per-task=1)"),
        "{describe}"
    );
    assert!(
        !describe.contains("make runs on"),
        "a local activity: {describe}"
    );
}

/// `hfctl emit` inside a Slurm job writes to the control file even where
/// fd 3 is not open (a job step started with `srun` does not inherit it;
/// here fd 3 is closed by hand), and the daemon takes the message.
#[test]
fn hfctl_emit_in_a_slurm_job_without_fd3_writes_the_control_file() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let chain = r#"
[process.p.activity.step]
executor = "slurm"
env = { PATH = "@BIN@:/usr/bin:/bin" }
shell = '''
exec 3>&-
hfctl emit output '{"via": "file"}'
srun --ntasks=1 hfctl emit progress 40 from srun
'''
"#;
    let daemon = TestDaemon::start(&[("step.toml", chain)]);
    let job_id = daemon.submit("step", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:#?}\n{}",
        daemon.logs(job_id, "p.step", None)
    );
    assert_eq!(job.outputs.get("p.step"), Some(&json!({"via": "file"})));
    let step = activity(&job, "p.step");
    assert_eq!(step.progress, Some(40.0), "from a job step: {step:#?}");
    assert_eq!(step.progress_text.as_deref(), Some("from srun"));
}

/// An exit code from Slurm's records fails the attempt with that code, and
/// the retry is a new Slurm job.
#[test]
fn slurm_exit_code_fails_the_attempt_and_the_retry_is_a_new_job() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let chain = r#"
[process.p.activity.fails]
executor = "slurm"
retries = 1
retry_delay = "0s"
shell = 'echo "attempt $HF_ATTEMPT"; exit 3'
"#;
    let daemon = TestDaemon::start(&[("fails.toml", chain)]);
    let job_id = daemon.submit("fails", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let fails = activity(&job, "p.fails");
    assert_eq!(fails.attempts.len(), 2, "{fails:#?}");
    for attempt in &fails.attempts {
        assert_eq!(attempt.state, AttemptState::Failed, "{attempt:#?}");
        assert_eq!(attempt.exit_code, Some(3), "{attempt:#?}");
    }
    let first = submitted_id(&daemon.logs(job_id, "p.fails", Some(1))).expect("first id");
    let second = submitted_id(&daemon.logs(job_id, "p.fails", Some(2))).expect("second id");
    assert_ne!(first, second, "each attempt is its own Slurm job");
    assert!(
        daemon
            .logs(job_id, "p.fails", Some(2))
            .contains("attempt 2")
    );
}

/// Cancelling a job cancels its Slurm job: Slurm itself says CANCELLED (or
/// no longer lists it) right after.
#[test]
fn cancel_scancels_the_slurm_job() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let chain = r#"
[process.p.activity.long]
executor = "slurm"
shell = 'echo started; sleep 300'
"#;
    let daemon = TestDaemon::start(&[("long.toml", chain)]);
    let job_id = daemon.submit("long", &[]);
    let (slurm_id, _) = eventually(SLURM_WITHIN, "the Slurm job runs", || {
        let log = daemon.logs(job_id, "p.long", None);
        match submitted_id(&log) {
            Some(id) if job_state(id).as_deref() == Some("RUNNING") && log.contains("started") => {
                Ok(id)
            }
            _ => Err(log),
        }
    });
    let out = daemon.hfctl(&["cancel", &job_id.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Cancelled, "{job:#?}");
    assert_eq!(
        activity(&job, "p.long").attempts[0].state,
        AttemptState::Cancelled
    );
    let state = job_state(slurm_id);
    assert!(
        matches!(state.as_deref(), None | Some("CANCELLED")),
        "squeue still shows Slurm job {slurm_id} as {state:?}"
    );
}

/// An activity's timeout cancels its Slurm job at the timeout (not at
/// Slurm's whole-minute `--time`, which stays as a backstop) and the
/// attempt ends as `timeout`.
#[test]
fn timeout_cancels_the_slurm_job_and_ends_as_timeout() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let chain = r#"
[process.p.activity.slow]
executor = "slurm"
timeout = "2s"
shell = 'sleep 300'
"#;
    let daemon = TestDaemon::start(&[("slow.toml", chain)]);
    let job_id = daemon.submit("slow", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let slow = activity(&job, "p.slow");
    assert_eq!(slow.attempts[0].state, AttemptState::Timeout, "{slow:#?}");
    let slurm_id = submitted_id(&daemon.logs(job_id, "p.slow", None)).expect("slurm id");
    let state = job_state(slurm_id);
    assert!(
        matches!(state.as_deref(), None | Some("CANCELLED")),
        "squeue still shows Slurm job {slurm_id} as {state:?}"
    );
}

/// A chain that asks for Slurm on a daemon that cannot find `sbatch` is a
/// load error naming the key and what to do. Runs without a cluster.
#[test]
fn slurm_chain_without_sbatch_is_a_load_error() {
    let chain = r#"
[process.p.activity.remote]
executor = "slurm"
command = ["true"]
"#;
    let mut daemon = TestDaemon::prepare(None, &[("remote.toml", chain)]);
    daemon.set_env("PATH", "/nonexistent");
    daemon.launch();
    let listed = daemon.hfctl_json(&["workflows"]).to_string();
    assert!(
        listed.contains("sbatch is not in the daemon's PATH"),
        "load error listed: {listed}"
    );
    assert!(
        listed.contains("\"line\":3"),
        "position of executor: {listed}"
    );
}

/// An activity with `user` runs as that user on Slurm (`sbatch --uid`),
/// with its attempt directory on the spool its own. Needs real users
/// (`HOLDFAST_USERS_TEST`) and the cluster.
#[test]
fn a_slurm_activity_runs_as_its_user() {
    let Some(accounts) = crate::users::accounts_or_skip("a_slurm_activity_runs_as_its_user") else {
        return;
    };
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let RunAsSpool {
        dir: _spool,
        settings,
        ..
    } = run_as_spool();
    let chain = r#"
[process.p.activity.who]
executor = "slurm"
user = "hft-runas"
shell = 'echo "$(id -un) in slurm job $SLURM_JOB_ID"'
"#;
    let daemon = TestDaemon::start_with(&settings, &[("who.toml", chain)]);
    let job_id = daemon.submit("who", &[]);
    let job = daemon.wait_done(job_id);
    let log = daemon.logs(job_id, "p.who", None);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{log}");
    let slurm_id = submitted_id(&log).expect("slurm id");
    assert!(
        log.contains(&format!("{} in slurm job {slurm_id}", accounts.run_as.name)),
        "{log:?}"
    );
}

/// The polling cost: with many Slurm attempts active at once, the daemon
/// starts one `squeue` per interval for all of them (each call lists
/// several job ids), not one per job per tick, and one `scontrol` per job
/// that ended. Counted with logging wrappers first on the daemon's PATH.
#[test]
fn slurm_jobs_are_polled_in_batches_not_one_process_per_job() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    const ACTIVITIES: usize = 12;
    let mut chain = String::from("[process.p]\nmode = \"parallel\"\n");
    for n in 0..ACTIVITIES {
        chain.push_str(&format!(
            "\n[process.p.activity.a{n}]\nexecutor = \"slurm\"\nshell = 'sleep 1'\n"
        ));
    }
    let mut daemon = TestDaemon::prepare(Some("max_parallel = 32\n"), &[("many.toml", &chain)]);
    count_client_calls(&mut daemon);
    daemon.launch();
    let began = std::time::Instant::now();
    let job_id = daemon.submit("many", &[]);
    let job = daemon.wait_done(job_id);
    let elapsed = began.elapsed();
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let calls = |tool: &str| client_calls(&daemon, tool);
    assert_eq!(
        calls("sbatch").len(),
        ACTIVITIES,
        "one submission per attempt"
    );
    let squeue = calls("squeue");
    // At most one per 250 ms (the shortest interval), whatever the number
    // of jobs; one process per job per tick would be about 12 times this.
    let bound = (elapsed.as_secs_f64() / 0.25).ceil() as usize + 2;
    assert!(
        squeue.len() <= bound,
        "{} squeue calls in {elapsed:?} (at most {bound}): {squeue:#?}",
        squeue.len()
    );
    assert!(
        squeue.iter().any(|call| call.contains(',')),
        "one squeue lists several jobs at once: {squeue:#?}"
    );
    // (`scontrol ping` is `hfctl info`'s, which the fixture calls.)
    let shows: Vec<String> = calls("scontrol")
        .into_iter()
        .filter(|call| call.contains("show job"))
        .collect();
    assert!(
        shows.len() <= ACTIVITIES,
        "scontrol once per ended job: {shows:#?}"
    );
}

/// A Slurm job's user owns its attempt directory on the spool, so it may
/// replace its output file with a symbolic link to a file only root reads
/// (here while the daemon is down, so that the restarted daemon opens the
/// file again when it adopts the job). The daemon never reads through the
/// link: the log says why and holds nothing of the file. Before, the root
/// daemon copied the file into the attempt's log, which every socket
/// member may read. Needs real users (`HOLDFAST_USERS_TEST`) and the
/// cluster.
#[test]
fn a_slurm_jobs_user_cannot_have_the_daemon_read_a_file_through_a_link() {
    use std::os::unix::fs::PermissionsExt;
    const SECRET: &str = "hf-ROOT-ONLY-41c7d2";
    if crate::users::accounts_or_skip(
        "a_slurm_jobs_user_cannot_have_the_daemon_read_a_file_through_a_link",
    )
    .is_none()
        || !cluster_up()
    {
        return;
    }
    let _cluster = shared();
    let RunAsSpool {
        dir: spool,
        gate,
        settings,
    } = run_as_spool();
    let chain = format!(
        r#"
[process.p.activity.work]
executor = "slurm"
user = "hft-runas"
shell = '''
echo before
while [ ! -e {gate}/go ]; do sleep 0.1; done
d=$(dirname "$HF_CONTROL_FILE")
rm -f "$d/output"
ln -s @DIR@/secret "$d/output"
'''
"#,
        gate = gate.display()
    );
    let mut daemon = TestDaemon::start_with(&settings, &[("work.toml", &chain)]);
    let secret = daemon.dir().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let job_id = daemon.submit("work", &[]);
    eventually(SLURM_WITHIN, "the Slurm job runs", || {
        let log = daemon.logs(job_id, "p.work", None);
        if log.contains("before\n") {
            Ok(())
        } else {
            Err(log)
        }
    });
    daemon.kill9();
    let go = gate.join("go");
    std::fs::write(&go, "").expect("go");
    std::fs::set_permissions(&go, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let attempts = spool.path().join("attempts");
    eventually(SLURM_WITHIN, "the job's user planted the link", || {
        let planted = std::fs::read_dir(&attempts)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .any(|entry| {
                std::fs::symlink_metadata(entry.path().join("output"))
                    .is_ok_and(|m| m.file_type().is_symlink())
            });
        if planted {
            Ok(())
        } else {
            Err("no link yet".to_string())
        }
    });
    daemon.restart();
    let job = daemon.wait_done(job_id);
    let log = daemon.logs(job_id, "p.work", None);
    assert!(
        !log.contains(SECRET),
        "the file behind the link was read: {log}"
    );
    assert!(
        log.contains("adopted after a daemon restart") && log.contains("symbolic link"),
        "the log says why the output is not read: {log}"
    );
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}\n{log}");
}
