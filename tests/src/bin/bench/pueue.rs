//! The pueue scenario: 1,000 separate submissions of a one-command job,
//! two at a time, until all are done: `hfctl submit` against `pueue add`,
//! in the same invocation (HoldFast, pueue, HoldFast, HoldFast). pueue is installed
//! at a pinned version under `target/pueue` when it is missing, and runs
//! with its own directories in a temporary home.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{Daemon, median, secs};

/// The pueue release this baseline is measured against.
const PUEUE_VERSION: &str = "4.0.4";

/// Submissions per run.
const SUBMITS: usize = 1000;

/// `target/pueue/bin`, installed with `cargo install --locked` when missing.
fn pueue_bin() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pueue");
    let bin = root.join("bin");
    if !bin.join("pueued").is_file() {
        eprintln!(
            "pueue: installing pueue {PUEUE_VERSION} under {}",
            root.display()
        );
        let status = Command::new("cargo")
            .args([
                "install",
                "--locked",
                "pueue",
                "--version",
                PUEUE_VERSION,
                "--root",
            ])
            .arg(&root)
            .status()?;
        if !status.success() {
            bail!("cargo install pueue {PUEUE_VERSION} failed");
        }
    }
    Ok(bin)
}

/// A pueued with its own home, stopped on drop.
struct Pueue {
    bin: PathBuf,
    home: tempfile::TempDir,
    daemon: Child,
}

impl Pueue {
    fn start(bin: &Path) -> Result<Pueue> {
        let home = tempfile::tempdir()?;
        let pueue = Pueue {
            bin: bin.to_path_buf(),
            daemon: Command::new(bin.join("pueued"))
                .envs(Pueue::env_of(home.path()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
            home,
        };
        // Ready once its client gets an answer (pueued has no readiness
        // notification); bounded.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pueue.client(&["status"])?.status.success() {
            if Instant::now() > deadline {
                bail!("pueued did not answer within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let parallel = pueue.client(&["parallel", "2"])?;
        if !parallel.status.success() {
            bail!(
                "pueue parallel 2: {}",
                String::from_utf8_lossy(&parallel.stderr)
            );
        }
        Ok(pueue)
    }

    fn env_of(home: &Path) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("HOME", home.to_path_buf()),
            ("XDG_CONFIG_HOME", home.join("config")),
            ("XDG_DATA_HOME", home.join("data")),
            ("XDG_RUNTIME_DIR", home.join("run")),
        ]
    }

    fn client(&self, args: &[&str]) -> Result<std::process::Output> {
        std::fs::create_dir_all(self.home.path().join("run"))?;
        Ok(Command::new(self.bin.join("pueue"))
            .envs(Pueue::env_of(self.home.path()))
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    }
}

impl Drop for Pueue {
    fn drop(&mut self) {
        let _ = self.client(&["shutdown"]);
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// [`SUBMITS`] `pueue add -- true`, then `pueue wait` for all of them.
fn pueue_run(bin: &Path) -> Result<f64> {
    let pueue = Pueue::start(bin)?;
    let started = Instant::now();
    for _ in 0..SUBMITS {
        let out = pueue.client(&["add", "--", "true"])?;
        if !out.status.success() {
            bail!("pueue add: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let waited = pueue.client(&["wait"])?;
    if !waited.status.success() {
        bail!("pueue wait: {}", String::from_utf8_lossy(&waited.stderr));
    }
    Ok(secs(started.elapsed()))
}

/// [`SUBMITS`] `hfctl submit` on a fresh daemon, until the last is done
/// (jobs run in submission order at equal priority).
fn holdfast_run() -> Result<f64> {
    let chain = "[process.p.activity.a]\ncommand = [\"true\"]\n".to_string();
    let mut daemon = Daemon::new("max_parallel = 2\n", &[("one.toml", chain)])?;
    let took = daemon.submit_all_and_wait("one", SUBMITS)?;
    daemon.stop()?;
    Ok(took)
}

pub fn hfctl_vs_pueue() -> Result<()> {
    let bin = pueue_bin()?;
    // HoldFast before and twice after pueue, so a machine that got busier
    // or quieter during pueue's minutes shows in the spread.
    let first = holdfast_run()?;
    let pueue = pueue_run(&bin)?;
    let second = holdfast_run()?;
    let third = holdfast_run()?;
    let runs = [first, second, third];
    let ours = median(runs.to_vec());
    println!(
        "pueue: {SUBMITS} separate submissions of `true`, two at a time, until all done: \
         holdfast {ours:.2} s (median of {:.2?}, {:.2} ms each), \
         pueue {PUEUE_VERSION} {pueue:.2} s ({:.2} ms each)",
        runs,
        ours * 1000.0 / SUBMITS as f64,
        pueue * 1000.0 / SUBMITS as f64
    );
    println!("pueue: pueue/holdfast {:.1}x", pueue / ours);
    Ok(())
}
