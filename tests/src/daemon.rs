//! The `TestDaemon` fixture: one real `holdfastd` in its own temporary
//! directory, started with sd_notify readiness, driven through the real
//! `hfctl` and the JSON-RPC client, and stopped when dropped.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use holdfast_api::Job;
use holdfast_api::rpc::HoldfastClient;
use nix::sys::signal::{Signal, kill};
use serde_json::Value;
use tempfile::TempDir;

use crate::command::{
    HFCTL_TIMEOUT, bin_dir, hfctl_command, holdfastd_command, pid_of, run_with_deadline, wait_child,
};

/// Replaced by the fixture's directory in workflow and settings text, so that
/// activities can leave files the test reads afterwards.
pub const DIR_PLACEHOLDER: &str = "@DIR@";
/// Replaced by the directory holding `holdfastd` and `hfctl` (see
/// [`bin_dir`]), so that an activity can put `hfctl` on its `PATH`.
pub const BIN_PLACEHOLDER: &str = "@BIN@";
/// Upper bound for waiting on a job to reach a state.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for `holdfastd` to report `READY=1`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for a graceful stop before the fixture kills the daemon.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How much of the daemon's log is printed when a test fails.
const LOG_TAIL_BYTES: usize = 24 * 1024;

/// Watch `job_id` until `pred` holds: subscribe to `job.watch` first, then read
/// the current state, so no change between the two is missed.
pub async fn watch_job(
    socket: &Path,
    job_id: u64,
    pred: &(dyn Fn(&Job) -> bool + Sync),
) -> Result<Job, String> {
    let client = holdfast_api::client::connect(socket)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut watch = client
        .job_watch(job_id)
        .await
        .map_err(|e| format!("job.watch failed: {e}"))?;
    let current = client
        .job_get(job_id)
        .await
        .map_err(|e| format!("job.get failed: {e}"))?;
    if pred(&current) {
        return Ok(current);
    }
    let mut last_state = current.state;
    loop {
        match watch.next().await {
            Some(Ok(job)) => {
                if pred(&job) {
                    return Ok(job);
                }
                last_state = job.state;
            }
            Some(Err(e)) => return Err(format!("job.watch sent an item that is not a Job: {e}")),
            None => {
                // The daemon closes the watch after the terminal state; the
                // job as stored is the final word.
                let job = client
                    .job_get(job_id)
                    .await
                    .map_err(|e| format!("job.get after the watch ended failed: {e}"))?;
                if pred(&job) {
                    return Ok(job);
                }
                return Err(format!(
                    "job.watch ended (last state {:?}, stored state {:?}) before the condition held",
                    last_state, job.state
                ));
            }
        }
    }
}

/// One `holdfastd` in a temporary directory:
///
/// ```text
/// <dir>/holdfast.toml    settings (absent unless given)
/// <dir>/hf.sock          the RPC socket
/// <dir>/state/           database and logs
/// <dir>/workflows.d/     chain files
/// <dir>/tenants.d/       tenant files
/// <dir>/connections.d/   connection profiles
/// <dir>/notify.sock      where READY=1 arrives
/// <dir>/holdfastd.log    the daemon's stdout and stderr, printed when a test fails
/// ```
pub struct TestDaemon {
    dir: TempDir,
    socket: PathBuf,
    notify: UnixDatagram,
    child: Option<Child>,
    /// Extra environment for the daemon (and so for its activities).
    env: Vec<(OsString, OsString)>,
    /// Start the daemon in a mount namespace of its own.
    own_mounts: bool,
    /// Bind mounts made in the daemon's mount namespace before it starts.
    binds: Vec<(PathBuf, PathBuf)>,
}

impl TestDaemon {
    /// Start a daemon with default settings and these chain files
    /// (`(file name, TOML text)`).
    pub fn start(workflows: &[(&str, &str)]) -> TestDaemon {
        TestDaemon::start_with("", workflows)
    }

    /// Start a daemon with this settings file text and these chain files.
    pub fn start_with(settings: &str, workflows: &[(&str, &str)]) -> TestDaemon {
        let settings = if settings.is_empty() {
            None
        } else {
            Some(settings)
        };
        let mut daemon = TestDaemon::prepare(settings, workflows);
        daemon.launch();
        daemon
    }

    /// Lay out the directory without starting the daemon; `launch` starts it.
    /// `None` leaves the settings file absent (built-in defaults).
    pub fn prepare(settings: Option<&str>, workflows: &[(&str, &str)]) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("hf-e2e-")
            .tempdir()
            .expect("a temporary directory can be created");
        let root = dir.path().to_path_buf();
        let place = |text: &str| place_in(text, &root);
        fs::create_dir_all(root.join("workflows.d")).expect("workflows.d can be created");
        fs::create_dir_all(root.join("tenants.d")).expect("tenants.d can be created");
        fs::create_dir_all(root.join("connections.d")).expect("connections.d can be created");
        fs::create_dir_all(root.join("state")).expect("state dir can be created");
        if let Some(settings) = settings {
            fs::write(root.join("holdfast.toml"), place(settings))
                .expect("settings can be written");
        }
        for (name, text) in workflows {
            fs::write(root.join("workflows.d").join(name), place(text))
                .expect("a workflow file can be written");
        }
        let notify =
            UnixDatagram::bind(root.join("notify.sock")).expect("the notify socket can be bound");
        TestDaemon {
            socket: root.join("hf.sock"),
            dir,
            notify,
            child: None,
            env: Vec::new(),
            own_mounts: false,
            binds: Vec::new(),
        }
    }

    /// Start the daemon launched next in a mount namespace of its own
    /// (private propagation; needs root), so that a test can mount over a
    /// file for it alone with `nsenter --target PID --mount`.
    pub fn in_own_mount_namespace(&mut self) {
        self.own_mounts = true;
    }

    /// Start the daemon launched next in a mount namespace of its own with
    /// `source` bound over `target` before it starts (needs root): for
    /// instance a FIFO over `/etc/passwd`, so that it starts on a user
    /// database that hangs.
    pub fn bind_before_start(&mut self, source: &Path, target: &Path) {
        self.own_mounts = true;
        self.binds
            .push((source.to_path_buf(), target.to_path_buf()));
    }

    /// Give the daemon started by the next `launch` (and the activities it
    /// runs, which inherit its environment) `key=value`.
    pub fn set_env(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) {
        let key = key.into();
        let value = value.into();
        match self.env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.env.push((key, value)),
        }
    }

    /// `text` with `@DIR@` and `@BIN@` replaced, as chain files are written.
    pub fn place(&self, text: &str) -> String {
        place_in(text, self.dir())
    }

    /// Write (or overwrite) a chain file in place, placeholders replaced.
    pub fn write_workflow(&self, name: &str, text: &str) {
        fs::write(self.workflows_dir().join(name), self.place(text))
            .expect("a workflow file can be written");
    }

    /// Save a chain file the way editors do: write a temporary file next to
    /// it, then rename it over the old one.
    pub fn save_workflow_by_rename(&self, name: &str, text: &str) {
        let temporary = self.workflows_dir().join(format!(".{name}.tmp-save"));
        fs::write(&temporary, self.place(text)).expect("a temporary file can be written");
        fs::rename(&temporary, self.workflows_dir().join(name))
            .expect("the temporary file can be renamed over the chain file");
    }

    /// Send `signal` to the running daemon.
    pub fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("the daemon is running");
        kill(pid_of(child.id()), signal).expect("the daemon can be signalled");
    }

    /// Start the daemon and wait for `READY=1`; panics when it does not
    /// become ready (the daemon's log is printed as the fixture is dropped).
    pub fn launch(&mut self) {
        if let Err(e) = self.try_launch() {
            panic!("holdfastd did not start: {e}");
        }
    }

    /// Start the daemon and wait for `READY=1`.
    pub fn try_launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the daemon is already running");
        self.drain_notifications();
        let log = self.open_log();
        let mut cmd = holdfastd_command(
            &self.config_path(),
            &self.socket,
            &self.state_dir(),
            &self.workflows_dir(),
        );
        cmd.arg("--tenants-dir").arg(self.tenants_dir());
        cmd.arg("--connections-dir").arg(self.connections_dir());
        if self.own_mounts {
            // unshare(1) execs the daemon: the child's pid is the daemon's.
            let mut wrapped = std::process::Command::new("unshare");
            wrapped.args(["--mount", "--propagation", "private", "--"]);
            if !self.binds.is_empty() {
                // sh makes the mounts in the new namespace and execs the
                // daemon, which keeps the pid.
                let mut script = String::new();
                for i in 0..self.binds.len() {
                    script.push_str(&format!(
                        "mount --bind \"${}\" \"${}\" && ",
                        2 * i + 1,
                        2 * i + 2
                    ));
                }
                script.push_str(&format!("shift {} && exec \"$@\"", 2 * self.binds.len()));
                wrapped.args(["sh", "-c", &script, "sh"]);
                for (source, target) in &self.binds {
                    wrapped.arg(source).arg(target);
                }
            }
            wrapped
                .arg(cmd.get_program())
                .args(cmd.get_args())
                .stdin(Stdio::null());
            for (key, value) in cmd.get_envs() {
                match value {
                    Some(value) => wrapped.env(key, value),
                    None => wrapped.env_remove(key),
                };
            }
            cmd = wrapped;
        }
        let xdg = self.dir().join("xdg");
        cmd.env("NOTIFY_SOCKET", self.dir().join("notify.sock"))
            .env("XDG_CONFIG_HOME", xdg.join("config"))
            .env("XDG_STATE_HOME", xdg.join("state"))
            .env("XDG_DATA_HOME", xdg.join("data"))
            .env("XDG_CACHE_HOME", xdg.join("cache"))
            .env("XDG_RUNTIME_DIR", xdg.join("runtime"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot spawn holdfastd: {e}"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn open_log(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("the daemon log file can be opened")
    }

    /// Drop notifications a previous run left (for example `STOPPING=1`).
    fn drain_notifications(&self) {
        let mut buf = [0u8; 4096];
        self.notify
            .set_nonblocking(true)
            .expect("the notify socket can be made non-blocking");
        while self.notify.recv(&mut buf).is_ok() {}
        self.notify
            .set_nonblocking(false)
            .expect("the notify socket can be made blocking");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let child = self.child.as_mut().expect("the daemon was spawned");
        let result = wait_for_ready(&self.notify, child);
        if matches!(child.try_wait(), Ok(Some(_))) {
            self.child = None;
        }
        result
    }

    /// The RPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The fixture's directory (what `@DIR@` was replaced by).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    pub fn workflows_dir(&self) -> PathBuf {
        self.dir().join("workflows.d")
    }

    /// The tenant files directory (`--tenants-dir`).
    pub fn tenants_dir(&self) -> PathBuf {
        self.dir().join("tenants.d")
    }

    /// Write (or overwrite) `tenants.d/<name>.toml`, placeholders replaced.
    pub fn write_tenant(&self, name: &str, text: &str) {
        fs::write(
            self.tenants_dir().join(format!("{name}.toml")),
            self.place(text),
        )
        .expect("a tenant file can be written");
    }

    /// The connection profiles directory (`--connections-dir`).
    pub fn connections_dir(&self) -> PathBuf {
        self.dir().join("connections.d")
    }

    /// Write (or overwrite) `connections.d/<name>.toml`, placeholders
    /// replaced.
    pub fn write_connection(&self, name: &str, text: &str) {
        fs::write(
            self.connections_dir().join(format!("{name}.toml")),
            self.place(text),
        )
        .expect("a connection file can be written");
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir().join("holdfast.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir().join("holdfastd.log")
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The end of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read(self.log_path()).unwrap_or_default();
        let start = log.len().saturating_sub(LOG_TAIL_BYTES);
        format!(
            "---- holdfastd log ({}, last {} bytes) ----\n{}\n---- end of holdfastd log ----",
            self.log_path().display(),
            log.len() - start,
            String::from_utf8_lossy(&log[start..])
        )
    }

    /// Run `hfctl --socket <socket> ARGS...`.
    pub fn hfctl<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let mut cmd = hfctl_command(&self.socket);
        cmd.args(args);
        run_with_deadline(cmd, HFCTL_TIMEOUT)
    }

    /// Start `hfctl --socket <socket> ARGS...` without waiting for it; collect
    /// it with [`finish_child`].
    pub fn hfctl_spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Child {
        let mut cmd = hfctl_command(&self.socket);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().expect("hfctl can be spawned")
    }

    /// Run `hfctl --socket <socket> --json ARGS...`, require success and parse
    /// what it printed.
    pub fn hfctl_json<S: AsRef<OsStr>>(&self, args: &[S]) -> Value {
        let mut full: Vec<&OsStr> = vec![OsStr::new("--json")];
        full.extend(args.iter().map(AsRef::as_ref));
        let output = self.hfctl(&full);
        let shown = describe_args(&full);
        assert!(
            output.status.success(),
            "`hfctl {shown}` failed with {}\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "`hfctl {shown}` printed something that is not one JSON document ({e}):\n{}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// Submit `target` with extra hfctl arguments (`-p K=V`, `--priority N`,
    /// ...) and return the new job's id.
    pub fn submit(&self, target: &str, extra: &[&str]) -> u64 {
        let mut args = vec!["submit", target];
        args.extend_from_slice(extra);
        let answer = self.hfctl_json(&args);
        assert_eq!(
            answer["state"], "queued",
            "a new job is reported queued: {answer}"
        );
        answer["job_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("`hfctl --json submit` printed no job_id: {answer}"))
    }

    /// `hfctl --json status JOB`, as printed.
    pub fn status_value(&self, job_id: u64) -> Value {
        self.hfctl_json(&["status", &job_id.to_string()])
    }

    /// `hfctl --json status JOB`, read as the wire `Job` type.
    pub fn status(&self, job_id: u64) -> Job {
        let value = self.status_value(job_id);
        serde_json::from_value(value.clone()).unwrap_or_else(|e| {
            panic!("`hfctl --json status {job_id}` is not a Job ({e}):\n{value:#}")
        })
    }

    /// `hfctl logs JOB ACTIVITY [--attempt N]`, required to succeed.
    pub fn logs(&self, job_id: u64, activity: &str, attempt: Option<u32>) -> String {
        let mut args = vec!["logs".to_string(), job_id.to_string(), activity.to_string()];
        if let Some(attempt) = attempt {
            args.push("--attempt".to_string());
            args.push(attempt.to_string());
        }
        let output = self.hfctl(&args);
        assert!(
            output.status.success(),
            "`hfctl {}` failed with {}\nstderr: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Wait, through a `job.watch` subscription, until `pred` holds for the
    /// job; returns the job as the watch reported it.
    pub fn wait_for(&self, job_id: u64, what: &str, pred: impl Fn(&Job) -> bool + Sync) -> Job {
        self.wait_for_within(job_id, what, JOB_TIMEOUT, pred)
    }

    /// [`TestDaemon::wait_for`] with its own upper bound, for conditions
    /// that must hold quickly (so a hang fails fast).
    pub fn wait_for_within(
        &self,
        job_id: u64,
        what: &str,
        within: Duration,
        pred: impl Fn(&Job) -> bool + Sync,
    ) -> Job {
        let socket = self.socket.clone();
        let outcome = thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("cannot build a runtime: {e}"))?;
                    runtime.block_on(async {
                        match tokio::time::timeout(within, watch_job(&socket, job_id, &pred)).await
                        {
                            Ok(result) => result,
                            Err(_) => Err(format!("timed out after {within:?}")),
                        }
                    })
                })
                .join()
        });
        match outcome {
            Ok(Ok(job)) => job,
            Ok(Err(e)) => {
                let now = self.hfctl(&["--json", "status", &job_id.to_string()]);
                panic!(
                    "job {job_id} never became {what}: {e}\nits status now: {}",
                    String::from_utf8_lossy(&now.stdout)
                )
            }
            Err(_) => panic!("watching job {job_id} panicked"),
        }
    }

    /// Wait until the job has finished and return `hfctl --json status JOB`.
    pub fn wait_done(&self, job_id: u64) -> Job {
        self.wait_for(job_id, "finished", |job| job.state.is_terminal());
        self.status(job_id)
    }

    /// A JSON-RPC client (WebSocket over the socket). Use it inside a tokio
    /// runtime.
    pub async fn client(&self) -> impl HoldfastClient + use<> {
        let socket = self.socket.clone();
        connect(socket).await
    }

    /// Stop with SIGTERM and start again in the same directory.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop();
            assert!(
                status.success(),
                "holdfastd did not stop cleanly on SIGTERM: {status}"
            );
        }
        self.launch();
    }

    /// Send SIGTERM and wait for the daemon to exit (killing it if it does
    /// not within the grace the fixture allows).
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the daemon is running");
        let _ = kill(pid_of(child.id()), Signal::SIGTERM);
        let (status, killed) = wait_child(&mut child, STOP_TIMEOUT);
        let status = status.expect("the daemon can be waited for");
        assert!(
            !killed,
            "holdfastd did not exit within {STOP_TIMEOUT:?} of SIGTERM"
        );
        status
    }

    /// Kill the daemon with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the daemon is running");
        let _ = kill(pid_of(child.id()), Signal::SIGKILL);
        let _ = child.wait();
    }
}

/// `text` with `@DIR@` replaced by `dir` and `@BIN@` by [`bin_dir`].
/// Wait on `notify` (the daemon's NOTIFY_SOCKET) for `READY=1` from
/// `child`, for up to [`READY_TIMEOUT`]; an error says what happened
/// instead (it exited, nothing came).
pub(crate) fn wait_for_ready(notify: &UnixDatagram, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    loop {
        match notify.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                if text.lines().any(|line| line.trim() == "READY=1") {
                    return Ok(());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(format!("reading the notify socket failed: {e}")),
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "holdfastd exited with {status} before sending READY=1"
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "holdfastd sent no READY=1 within {READY_TIMEOUT:?}"
            ));
        }
    }
}

fn place_in(text: &str, dir: &Path) -> String {
    text.replace(DIR_PLACEHOLDER, &dir.to_string_lossy())
        .replace(BIN_PLACEHOLDER, &bin_dir().to_string_lossy())
}

async fn connect(socket: PathBuf) -> impl HoldfastClient {
    match holdfast_api::client::connect(&socket).await {
        Ok(client) => client,
        Err(e) => panic!(
            "cannot connect a JSON-RPC client to {}: {e}",
            socket.display()
        ),
    }
}

fn describe_args(args: &[&OsStr]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(pid_of(child.id()), Signal::SIGTERM);
            let (_, killed) = wait_child(&mut child, STOP_TIMEOUT);
            if killed {
                eprintln!("holdfastd ignored SIGTERM for {STOP_TIMEOUT:?} and was killed");
            }
        }
        if thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}
