//! The Slurm scenario: 200 one-second activities on the Slurm executor at
//! the node's parallelism, against a shell pipeline of `sbatch --wait`
//! doing the same, and what HoldFast's polling costs while they are active:
//! every Slurm client the daemon starts goes through a counting wrapper
//! put first in its `PATH`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};

use super::{Daemon, secs};

/// Attempts in the scenario.
const ATTEMPTS: usize = 200;
/// The Slurm clients the daemon may start.
const CLIENTS: [&str; 5] = ["sbatch", "squeue", "scontrol", "sacct", "scancel"];

/// CPUs of the first node (`sinfo -o %c`): the parallelism of both runs.
fn node_cpus() -> Result<usize> {
    let out = Command::new("sinfo").args(["-h", "-o", "%c"]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next().and_then(|l| l.trim().parse().ok()) {
        Some(n) if out.status.success() => Ok(n),
        _ => bail!(
            "no Slurm cluster answers (sinfo: {}); start one with scripts/slurm-up",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// A directory of wrappers that log each call's name to `calls` and run
/// the real client.
fn counting_path(dir: &std::path::Path) -> Result<String> {
    let wrappers = dir.join("wrappers");
    std::fs::create_dir_all(&wrappers)?;
    let log = dir.join("calls");
    for client in CLIENTS {
        let real = which(client)?;
        let path = wrappers.join(client);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho {client} >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            ),
        )?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(format!(
        "{}:{}",
        wrappers.display(),
        std::env::var("PATH").unwrap_or_default()
    ))
}

fn which(program: &str) -> Result<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("{program} is not in PATH"))
}

fn count_calls(log: &std::path::Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *counts.entry(line.to_string()).or_insert(0) += 1;
    }
    counts
}

/// A chain of [`ATTEMPTS`] one-second Slurm activities, at most
/// `parallel` of them submitted at once.
fn chain(parallel: usize) -> String {
    let mut chain = format!(
        "[chain]\nmax_parallel = {parallel}\n[defaults]\nexecutor = \"slurm\"\n\
         [process.p]\nmode = \"parallel\"\n"
    );
    for i in 0..ATTEMPTS {
        chain.push_str(&format!(
            "[process.p.activity.a{i}]\ncommand = [\"sleep\", \"1\"]\n"
        ));
    }
    chain
}

/// Calls per client, and the queries (every client but sbatch) among them.
fn tally(calls: &BTreeMap<String, usize>) -> (usize, usize) {
    let sbatch = calls.get("sbatch").copied().unwrap_or(0);
    let queries = calls
        .iter()
        .filter(|(name, _)| name.as_str() != "sbatch")
        .map(|(_, n)| n)
        .sum();
    (sbatch, queries)
}

pub fn slurm_vs_sbatch() -> Result<()> {
    let cpus = node_cpus()?;
    let scratch = tempfile::tempdir()?;
    let path = counting_path(scratch.path())?;
    let log = scratch.path().join("calls");
    let daemon = Daemon::new_with_env(
        &format!("max_parallel = {ATTEMPTS}\n"),
        &[
            ("slurm.toml", chain(cpus)),
            ("slurm-all.toml", chain(ATTEMPTS)),
        ],
        &[("PATH", &path)],
    )?;

    // The baseline first, so both start from an idle node.
    let started = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "seq {ATTEMPTS} | xargs -P{cpus} -I{{}} sbatch --wait --quiet -o /dev/null \
             --wrap 'sleep 1'"
        ))
        .status()?;
    if !status.success() {
        bail!("the sbatch --wait pipeline failed");
    }
    let baseline = secs(started.elapsed());

    let started = Instant::now();
    daemon.hfctl(&["submit", "slurm", "--wait"])?;
    let ours = secs(started.elapsed());
    let calls = count_calls(&log);
    let (sbatch, queries) = tally(&calls);
    println!(
        "slurm: {ATTEMPTS} one-second activities on Slurm, max_parallel {cpus}: holdfast {ours:.1} s"
    );
    println!(
        "slurm: seq {ATTEMPTS} | xargs -P{cpus} sbatch --wait --wrap 'sleep 1':     {baseline:.1} s"
    );
    println!("slurm: ratio holdfast/sbatch {:.2}", ours / baseline);
    println!(
        "slurm: Slurm clients started by holdfastd: {calls:?}; {sbatch} sbatch (one per attempt), \
         {queries} queries = {:.1} per minute with {cpus} attempts active",
        queries as f64 / (ours / 60.0)
    );

    // All attempts submitted at once: Slurm queues them and runs as many
    // as the node has CPUs; the daemon tracks all of them.
    std::fs::remove_file(&log)?;
    let started = Instant::now();
    daemon.hfctl(&["submit", "slurm-all", "--wait"])?;
    let all = secs(started.elapsed());
    let calls = count_calls(&log);
    let (sbatch, queries) = tally(&calls);
    println!(
        "slurm: the same with max_parallel {ATTEMPTS} (all submitted at once): holdfast {all:.1} s; \
         clients {calls:?}; {sbatch} sbatch, {queries} queries = {:.1} per minute with up to \
         {ATTEMPTS} attempts active",
        queries as f64 / (all / 60.0)
    );
    Ok(())
}
