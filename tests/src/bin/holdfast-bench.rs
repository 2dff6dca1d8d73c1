//! `holdfast-bench`: measures the real daemon and CLI on this machine and
//! prints medians, for BENCHMARKS.md. Build with `--release` and run
//! `cargo run --release -p holdfast-tests --bin holdfast-bench [SCENARIO...]`
//! (scenarios: spawn, cgroup, submit, notify, fanout, throughput, reload,
//! status, stats, startup, growth, logs, slurm, pueue, smoke; default all
//! but logs, which writes 1 GiB files (deleted after each run), slurm,
//! which needs a running cluster (`scripts/slurm-up`), pueue, which
//! installs pueue under target/pueue when missing and takes minutes,
//! growth, which builds histories up to 10^6 jobs (about 1 GB of disk, tens
//! of minutes), and smoke, a few seconds of the spawn, submit and growth
//! paths that CI runs so the benchmark cannot rot).
//!
//! Every scenario starts its own daemon in a temporary directory and waits
//! for `READY=1` on `NOTIFY_SOCKET`; none of them sleeps to wait.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use holdfast_api::rpc::HoldfastClient;
use holdfast_tests::{bin_path, hfctl_command};
use tempfile::TempDir;

#[path = "bench/growth.rs"]
mod growth;
#[path = "bench/logs.rs"]
mod logs;
#[path = "bench/notify.rs"]
mod notify;
#[path = "bench/pueue.rs"]
mod pueue;
#[path = "bench/slurm.rs"]
mod slurm;

const RUNS: usize = 5;

fn main() -> Result<()> {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let all = wanted.is_empty();
    let want = |name: &str| all || wanted.iter().any(|w| w == name);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "holdfast-bench: {} cores",
        std::thread::available_parallelism()?.get()
    );
    if want("spawn") {
        spawn_vs_xargs()?;
    }
    if want("cgroup") {
        spawn_with_cgroups()?;
    }
    if want("submit") {
        separate_submits()?;
    }
    if want("notify") {
        notify::with_notify_rules()?;
    }
    if wanted.iter().any(|w| w == "logs") {
        logs::capture_vs_file()?;
    }
    if want("fanout") {
        runtime.block_on(fan_out_vs_xargs())?;
    }
    if want("throughput") {
        runtime.block_on(submit_throughput())?;
    }
    if want("reload") {
        runtime.block_on(reload_latency())?;
    }
    if wanted.iter().any(|w| w == "slurm") {
        slurm::slurm_vs_sbatch()?;
    }
    if wanted.iter().any(|w| w == "pueue") {
        pueue::hfctl_vs_pueue()?;
    }
    if wanted.iter().any(|w| w == "growth") {
        growth::idle()?;
        let sizes = growth::Sizes::full();
        runtime.block_on(growth::queue(&sizes))?;
        runtime.block_on(growth::history(&sizes))?;
    }
    if let [first, dir, n] = wanted.as_slice()
        && first == "growth-db"
    {
        let n = n
            .parse()
            .context("growth-db DIR N: N is a number of jobs")?;
        return runtime.block_on(growth::make_db(std::path::Path::new(dir), n));
    }
    if wanted.iter().any(|w| w == "smoke") {
        smoke()?;
        growth::idle()?;
        let sizes = growth::Sizes::smoke();
        runtime.block_on(growth::queue(&sizes))?;
        runtime.block_on(growth::history(&sizes))?;
    }
    if want("status") || want("stats") || want("startup") {
        runtime.block_on(history(want("status"), want("stats"), want("startup")))?;
    }
    Ok(())
}

/// (smoke) A few seconds of the spawn and submit scenarios' code paths on
/// whatever build HOLDFAST_BIN_DIR points at (and, from `main`, a tiny
/// growth run), so CI notices when the benchmark breaks. Its figures mean
/// nothing.
fn smoke() -> Result<()> {
    let mut chain = String::from("[chain]\nmax_parallel = 2\n[process.p]\nmode = \"parallel\"\n");
    for i in 0..20 {
        chain.push_str(&format!(
            "[process.p.activity.a{i}]\ncommand = [\"sh\", \"-c\", \"true\"]\n"
        ));
    }
    let one = "[process.p.activity.a]\ncommand = [\"true\"]\n".to_string();
    let mut daemon = Daemon::new(
        "max_parallel = 2\n",
        &[("many.toml", chain), ("one.toml", one)],
    )?;
    let started = Instant::now();
    daemon.hfctl(&["submit", "many", "--wait"])?;
    let spawn = secs(started.elapsed());
    let submits = daemon.submit_all_and_wait("one", 20)?;
    daemon.hfctl(&["list", "--limit", "20"])?;
    daemon.stop()?;
    println!("smoke: 20 activities {spawn:.3} s, 20 separate submits until done {submits:.3} s");
    Ok(())
}

/// A daemon in a temp dir, without debug logging.
struct Daemon {
    dir: TempDir,
    child: Option<Child>,
    /// Variables set in the daemon's environment.
    env: Vec<(String, String)>,
}

impl Daemon {
    fn new(settings: &str, workflows: &[(&str, String)]) -> Result<Daemon> {
        Daemon::new_with_env(settings, workflows, &[])
    }

    fn new_with_env(
        settings: &str,
        workflows: &[(&str, String)],
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("workflows.d"))?;
        std::fs::write(dir.path().join("holdfast.toml"), settings)?;
        for (name, text) in workflows {
            std::fs::write(dir.path().join("workflows.d").join(name), text)?;
        }
        let mut daemon = Daemon {
            dir,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        daemon.start()?;
        Ok(daemon)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("hf.sock")
    }

    /// Start and wait for READY=1; returns the time it took.
    fn start(&mut self) -> Result<Duration> {
        let notify = self.dir.path().join("notify.sock");
        let _ = std::fs::remove_file(&notify);
        let listener = UnixDatagram::bind(&notify)?;
        listener.set_read_timeout(Some(Duration::from_secs(120)))?;
        let started = Instant::now();
        let child = Command::new(bin_path("holdfastd"))
            .arg("--user")
            .arg("--config")
            .arg(self.dir.path().join("holdfast.toml"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--workflows-dir")
            .arg(self.dir.path().join("workflows.d"))
            .env("NOTIFY_SOCKET", &notify)
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("daemon.log"))?,
            )
            .spawn()
            .context("cannot start holdfastd")?;
        self.child = Some(child);
        let mut buf = [0u8; 4096];
        loop {
            let n = match listener.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let exited = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten())
                        .map_or_else(|| "still running".to_string(), |s| s.to_string());
                    let log = std::fs::read_to_string(self.dir.path().join("daemon.log"))
                        .unwrap_or_default();
                    let tail: String = log
                        .lines()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    bail!(
                        "holdfastd did not report READY=1 ({e}); it is {exited}; its log ends:\n{tail}"
                    );
                }
            };
            if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
                return Ok(started.elapsed());
            }
        }
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            child.wait()?;
        }
        Ok(())
    }

    fn hfctl(&self, args: &[&str]) -> Result<std::process::Output> {
        let out = hfctl_command(&self.socket()).args(args).output()?;
        if !out.status.success() {
            bail!(
                "hfctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// `count` separate `hfctl submit TARGET`, then wait until the last
    /// job ended: jobs run in submission order at equal priority, so the
    /// last one's end is the end of all of them. Returns the seconds taken.
    fn submit_all_and_wait(&self, target: &str, count: usize) -> Result<f64> {
        let started = Instant::now();
        let mut last = String::new();
        for _ in 0..count {
            let out = self.hfctl(&["--json", "submit", target])?;
            last = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let id = serde_json::from_str::<serde_json::Value>(&last)?["job_id"]
            .as_u64()
            .context("submit --json has job_id")?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let client = self.client().await?;
                wait_terminal(&client, id).await
            })?;
        Ok(secs(started.elapsed()))
    }

    async fn client(&self) -> Result<impl HoldfastClient + Send + Sync + 'static> {
        Ok(holdfast_api::client::connect(&self.socket()).await?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Wait until `job` is terminal, through `job.watch` (no polling).
async fn wait_terminal(client: &(impl HoldfastClient + Sync), job: u64) -> Result<()> {
    let mut sub = client.job_watch(job).await?;
    while let Some(update) = sub.next().await {
        if update?.state.is_terminal() {
            return Ok(());
        }
    }
    Ok(())
}

/// (a) One job of 2,000 `sh -c true` activities at max_parallel 2, against
/// `xargs -P2` running the same 2,000 commands.
fn spawn_vs_xargs() -> Result<()> {
    let mut chain = String::from("[chain]\nmax_parallel = 2\n[process.p]\nmode = \"parallel\"\n");
    for i in 0..2000 {
        chain.push_str(&format!(
            "[process.p.activity.a{i}]\ncommand = [\"sh\", \"-c\", \"true\"]\n"
        ));
    }
    let daemon = Daemon::new("max_parallel = 2\n", &[("many.toml", chain)])?;
    let mut ours = Vec::new();
    let mut xargs = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg("seq 2000 | xargs -P2 -n1 sh -c true")
            .status()?;
        if !status.success() {
            bail!("xargs failed");
        }
        xargs.push(secs(started.elapsed()));

        let started = Instant::now();
        daemon.hfctl(&["submit", "many", "--wait"])?;
        ours.push(secs(started.elapsed()));
    }
    let (o, x) = (median(ours.clone()), median(xargs.clone()));
    println!("spawn: 2000 activities, max_parallel 2: holdfast median {o:.3} s {ours:.3?}");
    println!("spawn: xargs -P2, 2000 x sh -c true:      median {x:.3} s {xargs:.3?}");
    println!("spawn: ratio holdfast/xargs {:.2}", o / x);
    Ok(())
}

/// The spawn scenario with each attempt in its own cgroup (fork + exec,
/// mkdir, cgroup.kill, rmdir) against the same daemon settings without
/// cgroups, alternating. Needs root and a cgroup v2 mount.
fn spawn_with_cgroups() -> Result<()> {
    let Some((base, _)) =
        holdfast_tests::cgroup::child_of_own(&format!("holdfast-bench-{}", std::process::id()))
    else {
        println!("cgroup: skipped, no cgroup v2 mount");
        return Ok(());
    };
    let mut chain = String::from("[chain]\nmax_parallel = 2\n[process.p]\nmode = \"parallel\"\n");
    for i in 0..2000 {
        chain.push_str(&format!(
            "[process.p.activity.a{i}]\ncommand = [\"sh\", \"-c\", \"true\"]\n"
        ));
    }
    let plain = Daemon::new(
        "max_parallel = 2\ncgroup = \"off\"\n",
        &[("many.toml", chain.clone())],
    )?;
    let confined = Daemon::new(
        &format!("max_parallel = 2\ncgroup = \"{}\"\n", base.display()),
        &[("many.toml", chain)],
    )?;
    let info = confined.hfctl(&["info"])?;
    println!(
        "cgroup: {}",
        String::from_utf8_lossy(&info.stdout)
            .lines()
            .find(|l| l.contains("confinement"))
            .unwrap_or("(no confinement line)")
            .trim()
    );
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let started = Instant::now();
        plain.hfctl(&["submit", "many", "--wait"])?;
        without.push(secs(started.elapsed()));
        let started = Instant::now();
        confined.hfctl(&["submit", "many", "--wait"])?;
        with.push(secs(started.elapsed()));
    }
    drop(confined);
    // What the daemon left (its holdfastd leaf when it had to move
    // processes; attempt cgroups are removed as they end).
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
    let _ = std::fs::remove_dir(&base);
    let (w, o) = (median(with.clone()), median(without.clone()));
    println!("cgroup: 2000 activities, a cgroup each: median {w:.3} s {with:.3?}");
    println!("cgroup: 2000 activities, no cgroups:    median {o:.3} s {without:.3?}");
    println!("cgroup: ratio with/without {:.2}", w / o);
    Ok(())
}

/// (b) 1,000 separate `hfctl submit` of a one-activity chain, until all are done.
fn separate_submits() -> Result<()> {
    let chain = "[process.p.activity.a]\ncommand = [\"true\"]\n".to_string();
    let mut daemon = Daemon::new("max_parallel = 2\n", &[("one.toml", chain)])?;
    let mut submit_each = Vec::new();
    let mut all_done = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let mut last = String::new();
        for _ in 0..1000 {
            let out = daemon.hfctl(&["--json", "submit", "one"])?;
            last = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let submitted = started.elapsed();
        let id: u64 = serde_json::from_str::<serde_json::Value>(&last)?["job_id"]
            .as_u64()
            .context("submit --json has job_id")?;
        daemon.hfctl(&["status", &id.to_string()])?;
        // Jobs run in submission order at equal priority: when the last is
        // done, wait for it through hfctl and check none is left.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = daemon.client().await?;
            wait_terminal(&client, id).await?;
            loop {
                let running = client
                    .job_list(Some("running".into()), None, Some(1), None, None, None)
                    .await?;
                let queued = client
                    .job_list(Some("queued".into()), None, Some(1), None, None, None)
                    .await?;
                if running.jobs.is_empty() && queued.jobs.is_empty() {
                    break;
                }
                if let Some(j) = running.jobs.first().or(queued.jobs.first()) {
                    wait_terminal(&client, j.id).await?;
                }
            }
            anyhow::Ok(())
        })?;
        all_done.push(secs(started.elapsed()));
        submit_each.push(secs(submitted) / 1000.0 * 1000.0);
        daemon.stop()?;
        std::fs::remove_dir_all(daemon.dir.path().join("state"))?;
        daemon.start()?;
    }
    println!(
        "submit: 1000 x `hfctl submit`: median {:.2} ms per submit {submit_each:.2?}",
        median(submit_each.clone())
    );
    println!(
        "submit: 1000 jobs submitted and all done: median {:.2} s {all_done:.2?}",
        median(all_done.clone())
    );
    Ok(())
}

/// Durable submissions per second: one client, then 16, then 64 concurrent
/// clients, three rounds in turn, against a chain whose jobs stay queued
/// (concurrency 1 behind a long job), so only submission is measured.
async fn submit_throughput() -> Result<()> {
    let chain =
        "[chain]\nconcurrency = 1\n[process.p.activity.a]\ncommand = [\"sleep\", \"3600\"]\n"
            .to_string();
    let daemon = Daemon::new("max_parallel = 2\n", &[("hold.toml", chain)])?;
    // HOLDFAST_BENCH_SCALE multiplies both counts, for a longer (steadier,
    // or profiled) run.
    let scale: usize = std::env::var("HOLDFAST_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let single_submits = 500 * scale;
    let multi_submits = 2048 * scale;
    let pid = daemon.child.as_ref().context("daemon runs")?.id();
    // Per phase: submissions a second, and the daemon's CPU a submission
    // (every thread's time on a CPU, from the scheduler's own count): the
    // second is steadier than the first on a busy machine, and shows what
    // a submission costs the daemon however many clients share it.
    let mut single = Phase::default();
    let mut multi: [(usize, Phase); 2] = [(16, Phase::default()), (64, Phase::default())];
    for _ in 0..3 {
        let client = daemon.client().await?;
        let cpu = daemon_cpu_ns(pid)?;
        let started = Instant::now();
        for _ in 0..single_submits {
            client
                .job_submit("hold".into(), None, None, None, None, None, None, None)
                .await?;
        }
        single.record(single_submits, started.elapsed(), daemon_cpu_ns(pid)? - cpu);

        for (n, phase) in multi.iter_mut() {
            let mut clients = Vec::new();
            for _ in 0..*n {
                clients.push(daemon.client().await?);
            }
            let each = multi_submits / *n;
            let cpu = daemon_cpu_ns(pid)?;
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for client in clients {
                tasks.spawn(async move {
                    for _ in 0..each {
                        client
                            .job_submit("hold".into(), None, None, None, None, None, None, None)
                            .await?;
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
            phase.record(*n * each, started.elapsed(), daemon_cpu_ns(pid)? - cpu);
        }
    }
    let s = single.print("1 client:  ");
    for (n, phase) in multi {
        let m = phase.print(&format!("{n} clients:"));
        println!("throughput: ratio {n}/1 {:.2}", m / s);
    }
    Ok(())
}

/// One phase of the throughput scenario, run by run.
#[derive(Default)]
struct Phase {
    /// Submissions a second.
    rates: Vec<f64>,
    /// The daemon's CPU time a submission, µs.
    cpu_us: Vec<f64>,
}

impl Phase {
    /// Print the phase's line; returns its median rate.
    fn print(&self, label: &str) -> f64 {
        let rate = median(self.rates.clone());
        println!(
            "throughput: {label} median {rate:.0} submits/s {:.0?}, daemon CPU {:.1} µs a submission {:.1?}",
            self.rates,
            median(self.cpu_us.clone()),
            self.cpu_us
        );
        rate
    }

    fn record(&mut self, submissions: usize, took: Duration, cpu_ns: u64) {
        self.rates.push(submissions as f64 / secs(took));
        self.cpu_us
            .push(cpu_ns as f64 / 1_000.0 / submissions as f64);
    }
}

/// The CPU time of every thread of process `pid` so far, in ns: the first
/// field of each thread's `/proc/PID/task/TID/schedstat` (the scheduler's
/// own count, not ticks). A thread that ended since is not counted, so
/// differences are taken while the daemon's threads all live.
fn daemon_cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .context("the first field of /proc/PID/task/TID/schedstat")?;
    }
    Ok(total)
}

/// (c) `hfctl status JOB` latency with 100,000 jobs in history, and the time
/// from start to READY=1 with that history plus 1,000 queued jobs.
async fn history(status: bool, stats: bool, startup: bool) -> Result<()> {
    let one = "[process.p.activity.a]\ncommand = [\"true\"]\n".to_string();
    let hold =
        "[chain]\nconcurrency = 1\n[process.p.activity.a]\ncommand = [\"sleep\", \"3600\"]\n"
            .to_string();
    let mut daemon = Daemon::new(
        "max_parallel = 2\n",
        &[("one.toml", one), ("hold.toml", hold)],
    )?;
    // HOLDFAST_BENCH_HISTORY shrinks the history for a quick check.
    let total: u64 = std::env::var("HOLDFAST_BENCH_HISTORY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let clients = 16u64;
    for _ in 0..clients {
        let client = daemon.client().await?;
        tasks.spawn(async move {
            let mut last = 0;
            for _ in 0..total / clients {
                last = client
                    .job_submit("one".into(), None, None, None, None, None, None, None)
                    .await?
                    .job_id;
            }
            anyhow::Ok(last)
        });
    }
    let mut last = 0;
    while let Some(r) = tasks.join_next().await {
        last = last.max(r??);
    }
    let client = daemon.client().await?;
    wait_terminal(&client, last).await?;
    loop {
        let running = client
            .job_list(
                Some("running".into()),
                Some("one".into()),
                Some(1),
                None,
                None,
                None,
            )
            .await?;
        let queued = client
            .job_list(
                Some("queued".into()),
                Some("one".into()),
                Some(1),
                None,
                None,
                None,
            )
            .await?;
        match running.jobs.first().or(queued.jobs.first()) {
            Some(j) => wait_terminal(&client, j.id).await?,
            None => break,
        }
    }
    println!(
        "history: {total} jobs submitted and run in {:.1} s",
        secs(started.elapsed())
    );
    if status {
        let mut samples = Vec::new();
        let probe = (total / 2).to_string();
        for i in 0..101 {
            let started = Instant::now();
            let job = if i % 2 == 0 {
                probe.clone()
            } else {
                last.to_string()
            };
            daemon.hfctl(&["status", &job])?;
            samples.push(secs(started.elapsed()) * 1000.0);
        }
        let mut list = Vec::new();
        for _ in 0..51 {
            let started = Instant::now();
            daemon.hfctl(&["list", "--limit", "20"])?;
            list.push(secs(started.elapsed()) * 1000.0);
        }
        let mut info = Vec::new();
        for _ in 0..51 {
            let started = Instant::now();
            daemon.hfctl(&["info"])?;
            info.push(secs(started.elapsed()) * 1000.0);
        }
        println!(
            "status: `hfctl status JOB` with {total} jobs: median {:.2} ms (p90 {:.2} ms)",
            median(samples.clone()),
            percentile(&mut samples, 0.9)
        );
        println!(
            "status: `hfctl list --limit 20`: median {:.2} ms",
            median(list)
        );
        println!(
            "status: `hfctl info` (baseline round trip): median {:.2} ms",
            median(info)
        );
    }
    if stats {
        // `stats.get` over the whole history (every job is within 7 days),
        // for every chain and for one, through the RPC client so the
        // figure is the daemon's query, not hfctl's start.
        for (what, target) in [("every chain", None), ("chain one", Some("one"))] {
            let mut samples = Vec::new();
            for _ in 0..21 {
                let started = Instant::now();
                client
                    .stats_get(target.map(str::to_string), Some("7d".into()), None)
                    .await?;
                samples.push(secs(started.elapsed()) * 1000.0);
            }
            println!(
                "stats: `stats.get` ({what}) with {total} jobs: median {:.1} ms (p90 {:.1} ms)",
                median(samples.clone()),
                percentile(&mut samples, 0.9)
            );
        }
    }
    if startup {
        for _ in 0..1000 {
            client
                .job_submit("hold".into(), None, None, None, None, None, None, None)
                .await?;
        }
        drop(client);
        let mut samples = Vec::new();
        for _ in 0..RUNS {
            daemon.stop()?;
            samples.push(secs(daemon.start()?) * 1000.0);
        }
        println!(
            "startup: ready with {total} finished and 1000 queued jobs: median {:.0} ms {samples:.0?}",
            median(samples.clone())
        );
    }
    Ok(())
}

/// Reload latency: 500 chain files; one is replaced by a rename (as editors
/// save); time until `workflow.get` answers with the new version. The check
/// loop pauses 1 ms between calls, which bounds the resolution.
async fn reload_latency() -> Result<()> {
    let chain = |i: usize, marker: &str| {
        format!(
            "[chain]\ndescription = \"{marker}\"\n[params.day]\ntype = \"date\"\ndefault = \"2026-01-01\"\n\
             [process.extract]\nmode = \"parallel\"\n\
             [process.extract.activity.a]\ncommand = [\"echo\", \"{{{{ params.day }}}}\", \"{i}\"]\n\
             [process.extract.activity.b]\nshell = \"echo b\"\n\
             [process.load]\nafter = [\"extract\"]\n[process.load.activity.c]\ncommand = [\"true\"]\n"
        )
    };
    let files: Vec<(String, String)> = (0..500)
        .map(|i| (format!("c{i:03}.toml"), chain(i, "v0")))
        .collect();
    let named: Vec<(&str, String)> = files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let daemon = Daemon::new("max_parallel = 2\n", &named)?;
    let client = daemon.client().await?;
    let dir = daemon.dir.path().join("workflows.d");
    let mut samples = Vec::new();
    for run in 1..=11 {
        let marker = format!("v{run}");
        let tmp = dir.join(".c250.toml.tmp");
        std::fs::write(&tmp, chain(250, &marker))?;
        let started = Instant::now();
        std::fs::rename(&tmp, dir.join("c250.toml"))?;
        loop {
            let detail = client.workflow_get("c250".into()).await?;
            if detail.description.as_deref() == Some(marker.as_str()) {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the new definition did not appear within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        samples.push(secs(started.elapsed()) * 1000.0);
    }
    println!(
        "reload: rename to new definition answerable, 500 files: median {:.0} ms {samples:.0?}",
        median(samples.clone())
    );
    Ok(())
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

/// Peak resident memory (VmHWM) of process `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmHWM in /proc/PID/status")?;
    Ok(kib / 1024.0)
}

/// A chain of one fan-out activity: `count` items of `true`, two at once.
fn fan_out_chain(count: u64) -> String {
    format!(
        "[process.p.activity.items]\nforeach = {{ count = \"{count}\", chunk_size = 1 }}\n\
         max_parallel = 2\ncommand = [\"true\"]\n"
    )
}

/// Submit chain `fan` and return its job id.
fn submit_fan(daemon: &Daemon) -> Result<u64> {
    let out = daemon.hfctl(&["--json", "submit", "fan"])?;
    serde_json::from_slice::<serde_json::Value>(&out.stdout)?["job_id"]
        .as_u64()
        .context("submit --json has job_id")
}

/// (issue: fan-out) One job fanning out over 10,000 items of `true` at
/// max_parallel 2, against `xargs -P2` running the same 10,000 commands,
/// alternating; the daemon's peak RSS; `hfctl status JOB` while such a job
/// runs (in a separate run, so its own cost does not slow the timed ones);
/// then a 100,000-item fan-out on a fresh daemon, its time and the peak RSS.
async fn fan_out_vs_xargs() -> Result<()> {
    let daemon = Daemon::new("max_parallel = 2\n", &[("fan.toml", fan_out_chain(10_000))])?;
    let pid = daemon.child.as_ref().context("daemon runs")?.id();
    let client = daemon.client().await?;
    let (mut ours, mut xargs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let started = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg("seq 10000 | xargs -P2 -n1 true")
            .status()?;
        if !status.success() {
            bail!("xargs failed");
        }
        xargs.push(secs(started.elapsed()));

        let started = Instant::now();
        let job = submit_fan(&daemon)?;
        wait_terminal(&client, job).await?;
        ours.push(secs(started.elapsed()));
    }
    let (o, x) = (median(ours.clone()), median(xargs.clone()));
    println!("fanout: 10000 items, max_parallel 2: holdfast median {o:.3} s {ours:.3?}");
    println!("fanout: xargs -P2, 10000 x true:      median {x:.3} s {xargs:.3?}");
    println!("fanout: ratio holdfast/xargs {:.2}", o / x);

    let job = submit_fan(&daemon)?;
    let mut status_ms = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        daemon.hfctl(&["status", &job.to_string()])?;
        status_ms.push(secs(started.elapsed()) * 1000.0);
    }
    wait_terminal(&client, job).await?;
    let mut sorted = status_ms.clone();
    println!(
        "fanout: hfctl status JOB while 10000 items run: median {:.1} ms, p95 {:.1} ms",
        median(status_ms),
        percentile(&mut sorted, 0.95)
    );
    println!(
        "fanout: daemon peak RSS after four 10000-item jobs: {:.1} MiB",
        peak_rss_mib(pid)?
    );
    drop(client);
    drop(daemon);

    let daemon = Daemon::new(
        "max_parallel = 2\n",
        &[("fan.toml", fan_out_chain(100_000))],
    )?;
    let pid = daemon.child.as_ref().context("daemon runs")?.id();
    let client = daemon.client().await?;
    let started = Instant::now();
    let job = submit_fan(&daemon)?;
    wait_terminal(&client, job).await?;
    println!(
        "fanout: 100000 items, max_parallel 2: {:.1} s, daemon peak RSS {:.1} MiB",
        secs(started.elapsed()),
        peak_rss_mib(pid)?
    );
    Ok(())
}
