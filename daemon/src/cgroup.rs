//! Per-attempt cgroups (cgroup v2), where the daemon owns a delegated
//! subtree.
//!
//! With `cgroup = "auto"` (the default) the daemon uses its own cgroup when
//! systemd delegated it (`Delegate=yes` in holdfast.service, which systemd
//! marks with the `trusted.delegate` or `user.delegate` attribute); with a
//! path it uses that cgroup (created if missing); with `"off"` none. Inside
//! the subtree:
//!
//! - the daemon's own processes move to the leaf `holdfastd/` (cgroup v2
//!   lets a cgroup hand controllers to its children only when it has no
//!   processes of its own);
//! - the `memory`, `pids` and `cpu` controllers the parent granted are
//!   enabled for the children;
//! - every attempt runs in its own child `attempt-<job>-<activity>-<n>`,
//!   joined by the child before `exec` (so nothing it starts is ever
//!   outside), with `memory.max` (and `memory.swap.max = 0`, so a cap is a
//!   cap, and `memory.oom.group = 1`, so the OOM killer takes the whole
//!   attempt), `pids.max`, `cpu.weight` and `cpu.max` written first;
//! - when the attempt's leader exits, or a stop reaches SIGKILL,
//!   `cgroup.kill` ends everything it started, including processes that
//!   left its process group; `memory.events` tells an OOM kill apart from
//!   any other SIGKILL; the directory is then removed;
//! - at start, attempt cgroups left by an earlier daemon (one killed with
//!   SIGKILL, say) are killed and removed before recovery runs.
//!
//! Which controllers were granted is a fact about the host, settled once at
//! start ([`setup`]) and kept in [`host`] for `hfctl describe`.

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The leaf the daemon's own processes move to.
pub const DAEMON_LEAF: &str = "holdfastd";
const ATTEMPT_PREFIX: &str = "attempt-";
/// `cpu.max` period, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// The `cgroup` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSetting {
    /// The daemon's own cgroup, if systemd delegated it.
    Auto,
    Off,
    /// This cgroup directory (under a cgroup v2 mount).
    Path(PathBuf),
}

impl CgroupSetting {
    pub fn parse(text: &str) -> Result<CgroupSetting, String> {
        match text {
            "auto" => Ok(CgroupSetting::Auto),
            "off" => Ok(CgroupSetting::Off),
            path if path.starts_with('/') => Ok(CgroupSetting::Path(PathBuf::from(path))),
            other => Err(format!(
                "cgroup must be \"auto\", \"off\" or the absolute path of a cgroup v2 directory; got {other:?}"
            )),
        }
    }
}

/// Why cgroups could not be used, or what failed with one.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Unsuitable(String),
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The controllers enabled for attempt cgroups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Controllers {
    pub memory: bool,
    pub cpu: bool,
    pub pids: bool,
}

/// The caps an attempt's cgroup enforces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory_max: Option<u64>,
    pub tasks_max: Option<u64>,
    pub cpu_weight: Option<u32>,
    /// Percent of one CPU.
    pub cpu_quota: Option<u32>,
}

/// The subtree the daemon owns.
#[derive(Debug)]
pub struct Cgroups {
    base: PathBuf,
    controllers: Controllers,
}

/// What [`setup`] settled: cgroups in use, or why not.
#[derive(Debug, Clone)]
pub enum Availability {
    Active(Arc<Cgroups>),
    Unavailable(String),
}

impl Availability {
    pub fn cgroups(&self) -> Option<&Arc<Cgroups>> {
        match self {
            Availability::Active(c) => Some(c),
            Availability::Unavailable(_) => None,
        }
    }

    /// One line for `daemon.info`.
    pub fn describe(&self) -> String {
        match self {
            Availability::Active(c) => {
                let on = c.controllers;
                let names: Vec<&str> = [(on.memory, "memory"), (on.pids, "pids"), (on.cpu, "cpu")]
                    .into_iter()
                    .filter_map(|(enabled, name)| enabled.then_some(name))
                    .collect();
                let controllers = if names.is_empty() {
                    "no controllers: caps use rlimits".to_string()
                } else {
                    names.join(", ")
                };
                format!(
                    "cgroup per attempt under {} ({controllers})",
                    c.base.display()
                )
            }
            Availability::Unavailable(why) => format!("no cgroups, caps use rlimits: {why}"),
        }
    }
}

static HOST: OnceLock<Availability> = OnceLock::new();

/// What this daemon settled at start; `Unavailable` before [`setup`] ran.
pub fn host() -> Availability {
    HOST.get().cloned().unwrap_or_else(|| {
        Availability::Unavailable(
            "decided when the engine starts (the state directory is read-only)".into(),
        )
    })
}

/// Decide at start whether attempts get cgroups, take the subtree over and
/// clean what an earlier daemon left. Logs the outcome; never fails the
/// start (caps then fall back to rlimits).
pub fn setup(setting: &CgroupSetting) -> Availability {
    let outcome = match setting {
        CgroupSetting::Off => Availability::Unavailable("cgroup = \"off\" in the settings".into()),
        CgroupSetting::Auto => match delegated_own_cgroup() {
            Ok(base) => take(&base),
            Err(why) => Availability::Unavailable(why),
        },
        CgroupSetting::Path(base) => take(base),
    };
    match &outcome {
        Availability::Active(c) => tracing::info!(
            cgroup = %c.base.display(),
            memory = c.controllers.memory,
            cpu = c.controllers.cpu,
            pids = c.controllers.pids,
            "each attempt runs in its own cgroup"
        ),
        Availability::Unavailable(why) if matches!(setting, CgroupSetting::Path(_)) => {
            tracing::error!(reason = %why, "cannot use the configured cgroup; caps fall back to rlimits")
        }
        Availability::Unavailable(why) => {
            tracing::info!(reason = %why, "attempts run without cgroups; caps use rlimits")
        }
    }
    let _ = HOST.set(outcome.clone());
    outcome
}

fn take(base: &Path) -> Availability {
    match Cgroups::take(base) {
        Ok(c) => Availability::Active(Arc::new(c)),
        Err(e) => Availability::Unavailable(e.to_string()),
    }
}

/// The daemon's own cgroup v2 directory, if systemd delegated it.
fn delegated_own_cgroup() -> Result<PathBuf, String> {
    let own = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let path = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or("no cgroup v2 hierarchy")?;
    if path == "/" {
        return Err("the daemon runs in the root cgroup, which it does not own".into());
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup v2 file system is mounted")?;
    let dir = mount.join(path.trim_start_matches('/'));
    let delegated = ["trusted.delegate", "user.delegate"]
        .iter()
        .any(|name| xattr(&dir, name).is_some_and(|v| v == b"1"));
    if delegated {
        Ok(dir)
    } else {
        Err(format!(
            "cgroup {} is not delegated to holdfastd (run it as a systemd service with \
             Delegate=yes, or name a cgroup in the cgroup setting)",
            dir.display()
        ))
    }
}

/// The mount point of the cgroup v2 file system, from `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = before.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        (root == "/").then(|| PathBuf::from(point.replace("\\040", " ")))
    })
}

#[allow(unsafe_code)]
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = [0u8; 16];
    // SAFETY: both strings are NUL-terminated and live across the call; the
    // kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        nix::libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n).ok().map(|n| buf[..n].to_vec())
}

impl Cgroups {
    /// Take `base` over: move its processes to the daemon's leaf, remove
    /// leftover attempt cgroups, enable the controllers it was granted.
    fn take(base: &Path) -> Result<Cgroups, CgroupError> {
        if !base.exists() {
            fs::create_dir(base).map_err(io_error("create the cgroup", base))?;
        }
        let fs_type = nix::sys::statfs::statfs(base)
            .map_err(|e| io_error("inspect", base)(e.into()))?
            .filesystem_type();
        if fs_type != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
            return Err(CgroupError::Unsuitable(format!(
                "{} is not on a cgroup v2 file system",
                base.display()
            )));
        }
        // The daemon lives in the subtree's leaf: cgroup v2 lets a cgroup
        // hand controllers to children only without processes of its own,
        // and moving an attempt's child between two cgroups needs write
        // access to their common ancestor, which this tests once, here.
        let procs = base.join("cgroup.procs");
        let resident = fs::read_to_string(&procs).map_err(io_error("read", &procs))?;
        let leaf = base.join(DAEMON_LEAF);
        if !leaf.exists() {
            fs::create_dir(&leaf).map_err(io_error("create the cgroup", &leaf))?;
        }
        let target = leaf.join("cgroup.procs");
        let daemon = std::process::id().to_string();
        let movers = resident
            .split_whitespace()
            .chain(std::iter::once(daemon.as_str()));
        for pid in movers {
            match fs::write(&target, pid) {
                // Gone since the list was read.
                Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {}
                other => other.map_err(io_error("move a process into", &leaf))?,
            }
        }
        let leftovers = remove_leftovers(base);
        if leftovers > 0 {
            tracing::warn!(
                count = leftovers,
                "killed the attempt cgroups an earlier daemon left behind"
            );
        }
        let controllers = enable_controllers(base);
        Ok(Cgroups {
            base: base.to_path_buf(),
            controllers,
        })
    }

    pub fn controllers(&self) -> Controllers {
        self.controllers
    }

    /// Create the cgroup of one attempt with its caps written, ready for
    /// the child to join.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> Result<AttemptCgroup, CgroupError> {
        let dir = self.base.join(format!("{ATTEMPT_PREFIX}{name}"));
        if let Err(e) = fs::create_dir(&dir) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(io_error("create the cgroup", &dir)(e));
            }
            // Left by an attempt whose cleanup has not finished: the same
            // attempt key never runs twice, so whatever is there is stale.
            kill(&dir);
            remove_dir_blocking(&dir);
            fs::create_dir(&dir).map_err(io_error("create the cgroup", &dir))?;
        }
        let configured = write_limits(&dir, limits).and_then(|()| {
            let procs = dir.join("cgroup.procs");
            fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(io_error("open", &procs))
        });
        match configured {
            Ok(procs) => Ok(AttemptCgroup {
                dir,
                procs: Some(procs.into()),
            }),
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                Err(e)
            }
        }
    }
}

/// Write an attempt cgroup's caps before anything joins it.
fn write_limits(dir: &Path, limits: &CgroupLimits) -> Result<(), CgroupError> {
    let write = |file: &str, value: String| -> Result<(), CgroupError> {
        let path = dir.join(file);
        fs::write(&path, value).map_err(io_error("write", &path))
    };
    if let Some(bytes) = limits.memory_max {
        write("memory.max", bytes.to_string())?;
        // Without swap accounting the file is absent: nothing to cap.
        if dir.join("memory.swap.max").exists() {
            write("memory.swap.max", "0".into())?;
        }
        write("memory.oom.group", "1".into())?;
    }
    if let Some(tasks) = limits.tasks_max {
        write("pids.max", tasks.to_string())?;
    }
    if let Some(weight) = limits.cpu_weight {
        write("cpu.weight", weight.to_string())?;
    }
    if let Some(percent) = limits.cpu_quota {
        let quota = u64::from(percent) * CPU_PERIOD_US / 100;
        write("cpu.max", format!("{quota} {CPU_PERIOD_US}"))?;
    }
    Ok(())
}

/// Enable the wanted controllers `base` was granted; report which took.
fn enable_controllers(base: &Path) -> Controllers {
    let granted = fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
    let control = base.join("cgroup.subtree_control");
    let enable = |name: &str| {
        if !granted.split_whitespace().any(|c| c == name) {
            return false;
        }
        match fs::write(&control, format!("+{name}")) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(controller = name, error = %e, "cannot enable a cgroup controller");
                false
            }
        }
    };
    Controllers {
        memory: enable("memory"),
        cpu: enable("cpu"),
        pids: enable("pids"),
    }
}

/// Kill and remove every attempt cgroup under `base`; how many there were.
fn remove_leftovers(base: &Path) -> usize {
    let Ok(entries) = fs::read_dir(base) else {
        return 0;
    };
    let mut count = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(ATTEMPT_PREFIX) || !entry.path().is_dir() {
            continue;
        }
        count += 1;
        kill(&entry.path());
        remove_dir_blocking(&entry.path());
    }
    count
}

/// The cgroup of one attempt.
#[derive(Debug)]
pub struct AttemptCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened for the child to write its pid into.
    procs: Option<OwnedFd>,
}

impl AttemptCgroup {
    /// The fd the child writes `0` to, joining before `exec`.
    pub fn procs_fd(&self) -> Option<BorrowedFd<'_>> {
        self.procs.as_ref().map(AsFd::as_fd)
    }

    /// SIGKILL everything in the cgroup.
    pub fn kill(&self) {
        kill(&self.dir);
    }

    /// One of the cgroup's interface files (`cpu.stat`, `memory.peak`,
    /// ...), or None when the kernel does not offer it.
    pub fn read(&self, file: &str) -> Option<String> {
        fs::read_to_string(self.dir.join(file)).ok()
    }

    /// How many times the OOM killer acted in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|text| oom_kills(&text))
            .unwrap_or(0)
    }

    /// Kill what is left and remove the directory once it is empty. A
    /// cgroup that will not empty is left for the next start to clean.
    pub async fn remove(mut self) {
        self.procs = None;
        kill(&self.dir);
        let mut wait = Duration::from_millis(2);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(cgroup = %self.dir.display(), error = %e, "cannot remove an attempt cgroup; the next start removes it");
                    return;
                }
                Err(_) => {}
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(100));
        }
    }
}

/// `oom_kill N` from a `memory.events` file.
fn oom_kills(events: &str) -> Option<u64> {
    events.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == "oom_kill").then(|| value.trim().parse().ok())?
    })
}

/// SIGKILL every process in the cgroup at `dir`: `cgroup.kill` (Linux
/// 5.14+), else each listed pid until none is left.
fn kill(dir: &Path) {
    match fs::write(dir.join("cgroup.kill"), "1") {
        Ok(()) => return,
        Err(e) if e.kind() == io::ErrorKind::NotFound && dir.exists() => {}
        Err(_) => return,
    }
    for _ in 0..100 {
        let pids = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let mut any = false;
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            any = true;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if !any {
            return;
        }
        std::thread::yield_now();
    }
}

/// Remove an emptied cgroup directory, waiting up to a second for its
/// processes to be gone (at start, before anything else runs).
fn remove_dir_blocking(dir: &Path) {
    for _ in 0..200 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    tracing::warn!(cgroup = %dir.display(), "cannot remove a leftover attempt cgroup");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_values() {
        assert_eq!(CgroupSetting::parse("auto"), Ok(CgroupSetting::Auto));
        assert_eq!(CgroupSetting::parse("off"), Ok(CgroupSetting::Off));
        assert_eq!(
            CgroupSetting::parse("/sys/fs/cgroup/x"),
            Ok(CgroupSetting::Path("/sys/fs/cgroup/x".into()))
        );
        assert!(CgroupSetting::parse("yes").is_err());
        assert!(CgroupSetting::parse("relative/path").is_err());
    }

    #[test]
    fn oom_kill_counts() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 1\n";
        assert_eq!(oom_kills(events), Some(2));
        assert_eq!(oom_kills("low 0\nmax 1\n"), None);
    }

    #[test]
    fn cgroup2_mount_points() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                      36 25 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount("36 25 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"),
            None
        );
    }
}
