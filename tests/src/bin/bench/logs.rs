//! The log capture scenario: one activity writing 1 GiB to its stdout
//! (`head -c 1G /dev/zero`), captured by the daemon into the attempt's log
//! with the cap off, against the same command writing the same bytes
//! straight to a file in the same directory tree, alternating, five runs
//! each. The daemon's CPU time (user + system, from `/proc/PID/stat`) is
//! read around each captured run and stated per GiB. Every file is deleted
//! after its run: the disk is shared.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{Daemon, RUNS, median, secs};

/// Bytes each run writes.
const BYTES: u64 = 1 << 30;

/// The daemon's user + system CPU time so far, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields resume after the command name's last ')': state is field 3,
    // utime field 14 and stime field 15.
    let after = &stat[stat.rfind(')').context("a /proc stat line")? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11)
        .zip(fields.get(12))
        .and_then(|(u, s)| Some(u.parse::<u64>().ok()? + s.parse::<u64>().ok()?))
        .context("utime and stime in /proc/PID/stat")?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100);
    Ok(ticks as f64 / per_second as f64)
}

/// Size of the newest attempt log under `logs`, then remove it all.
fn take_log(logs: &Path) -> Result<u64> {
    let mut size = 0;
    for job in std::fs::read_dir(logs)?.flatten() {
        for file in std::fs::read_dir(job.path())?.flatten() {
            size += file.metadata()?.len();
        }
        std::fs::remove_dir_all(job.path())?;
    }
    Ok(size)
}

pub fn capture_vs_file() -> Result<()> {
    let chain = "[process.p.activity.a]\ncommand = [\"head\", \"-c\", \"1G\", \"/dev/zero\"]\n";
    // The cap off: larger than what the activity writes.
    let daemon = Daemon::new(
        "max_parallel = 2\nlog_max_bytes = \"4G\"\n",
        &[("big.toml", chain.to_string())],
    )?;
    let pid = daemon.child.as_ref().context("a running daemon")?.id();
    let logs = daemon.dir.path().join("state").join("logs");
    let target = daemon.dir.path().join("baseline.out");
    let (mut ours, mut plain, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let started = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg("head -c 1G /dev/zero > \"$1\"")
            .arg("sh")
            .arg(&target)
            .status()?;
        plain.push(secs(started.elapsed()));
        let written = std::fs::metadata(&target)?.len();
        std::fs::remove_file(&target)?;
        if !status.success() || written != BYTES {
            bail!("the baseline wrote {written} bytes ({status})");
        }

        let before = cpu_seconds(pid)?;
        let started = Instant::now();
        daemon.hfctl(&["submit", "big", "--wait"])?;
        ours.push(secs(started.elapsed()));
        cpu.push(cpu_seconds(pid)? - before);
        let captured = take_log(&logs)?;
        if captured != BYTES {
            bail!("the daemon captured {captured} bytes, not {BYTES}");
        }
    }
    let (o, p, c) = (
        median(ours.clone()),
        median(plain.clone()),
        median(cpu.clone()),
    );
    println!("logs: 1 GiB on stdout, captured: median {o:.3} s {ours:.3?}");
    println!("logs: head -c 1G > file:         median {p:.3} s {plain:.3?}");
    println!("logs: ratio captured/file {:.2}", o / p);
    println!("logs: daemon CPU per captured GiB: median {c:.3} s {cpu:.3?}");
    Ok(())
}
