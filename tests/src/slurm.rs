//! The single-node Slurm cluster the Slurm end-to-end tests run against
//! (started by `scripts/slurm-up`): whether it is up, and what `squeue`
//! says about jobs, read directly so the tests check Slurm itself.

use std::process::Command;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The cluster is shared by the Slurm tests, which run in parallel; a test
/// that stops slurmctld takes it alone.
static CLUSTER: RwLock<()> = RwLock::new(());

/// Hold while a test uses the cluster.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    CLUSTER.read().unwrap_or_else(|e| e.into_inner())
}

/// Hold while a test disturbs the cluster (stops slurmctld).
pub fn alone() -> RwLockWriteGuard<'static, ()> {
    CLUSTER.write().unwrap_or_else(|e| e.into_inner())
}

/// `HOLDFAST_SLURM_TEST=required`: a machine without a running cluster
/// fails the Slurm tests instead of skipping them.
pub const REQUIRED_ENV: &str = "HOLDFAST_SLURM_TEST";

/// True when `sinfo` answers with a usable node. Otherwise the test is
/// skipped, or fails when [`REQUIRED_ENV`] is `required`.
pub fn cluster_up() -> bool {
    let state = Command::new("sinfo")
        .args(["--noheader", "--format=%T"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default();
    let up = state
        .lines()
        // A node whose job is finishing reads `completing` for a moment,
        // and an idle one the backfill scheduler has set aside for a
        // pending job (another test's, waiting for room) reads `planned`;
        // both are as up as an idle one.
        .any(|s| {
            matches!(
                s.trim_end_matches(['*', '~', '#', '+', '$', '@', '%']),
                "idle" | "mixed" | "allocated" | "completing" | "planned"
            )
        });
    if !up {
        assert!(
            std::env::var(REQUIRED_ENV).as_deref() != Ok("required"),
            "{REQUIRED_ENV}=required but no Slurm node is up (sinfo: {state:?}); run scripts/slurm-up"
        );
        eprintln!("skipped: no Slurm cluster (run scripts/slurm-up)");
    }
    up
}

/// The state `squeue` gives job `id` (`RUNNING`, `CANCELLED`, ...), or
/// None once Slurm no longer lists it.
pub fn job_state(id: u64) -> Option<String> {
    let out = Command::new("squeue")
        .args(["--noheader", "--states=all", "--format=%T", "--jobs"])
        .arg(id.to_string())
        .output()
        .expect("run squeue");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Every job Slurm lists (any state) whose name contains `needle`, as
/// (id, name, state), from one `squeue` and the finished ones `sacct -c`
/// still has: how many times an attempt was submitted.
pub fn jobs_named(needle: &str) -> Vec<(u64, String, String)> {
    let mut jobs = Vec::new();
    let out = Command::new("squeue")
        .args(["--noheader", "--states=all", "--format=%i|%j|%T"])
        .output()
        .expect("run squeue");
    let sacct = Command::new("sacct")
        .args([
            "-c",
            "--noheader",
            "--parsable2",
            "--format=JobID,JobName,State",
        ])
        .output()
        .expect("run sacct");
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&sacct.stdout).lines())
    {
        let fields: Vec<&str> = line.trim().split('|').collect();
        if let [id, name, state] = fields[..]
            && name.contains(needle)
            && let Ok(id) = id.parse::<u64>()
            && !jobs.iter().any(|(seen, _, _)| *seen == id)
        {
            jobs.push((id, name.to_string(), state.to_string()));
        }
    }
    jobs
}

/// The Slurm job id the attempt's log names ("submitted to Slurm as job N").
pub fn submitted_id(log: &str) -> Option<u64> {
    let rest = log.split("submitted to Slurm as job ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Put logging wrappers of the Slurm client commands first on the
/// (prepared, not yet launched) daemon's PATH: each call's arguments are
/// appended to `<dir>/<tool>.calls`, read back with [`client_calls`].
pub fn count_client_calls(daemon: &mut crate::TestDaemon) {
    let shims = daemon.dir().join("shims");
    std::fs::create_dir(&shims).expect("shims");
    for tool in ["squeue", "scontrol", "sacct", "sbatch"] {
        let real = ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
            .iter()
            .map(|dir| std::path::Path::new(dir).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is installed"));
        let shim = shims.join(tool);
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}/{tool}.calls\nexec {} \"$@\"\n",
                daemon.dir().display(),
                real.display()
            ),
        )
        .expect("write shim");
        std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    daemon.set_env(
        "PATH",
        format!(
            "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            shims.display()
        ),
    );
}

/// The calls of `tool` the daemon made, one line of arguments each (see
/// [`count_client_calls`]).
pub fn client_calls(daemon: &crate::TestDaemon, tool: &str) -> Vec<String> {
    std::fs::read_to_string(daemon.dir().join(format!("{tool}.calls")))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}
