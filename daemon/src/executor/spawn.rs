//! Starting a child with `clone(CLONE_VM | CLONE_VFORK)` and waiting for it
//! through a pidfd.
//!
//! `fork` copies the daemon's page tables and then takes a copy-on-write
//! fault (with a TLB shootdown across the runtime's threads) for every page
//! either side touches; with thousands of short activities that was most of
//! the daemon's CPU. A CLONE_VM child copies nothing, as glibc's
//! `posix_spawn` does; doing the clone here lets the child also join its
//! cgroup, set rlimits and switch users before `exec` (see [`spawn`]). The
//! child gets the output pipe on fds 1 and 2, the control pipe on fd 3 and
//! `/dev/null` on fd 0, becomes a process-group leader and has its signal
//! dispositions and mask reset (the Rust runtime ignores SIGPIPE, which
//! children must not inherit).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use nix::libc;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

#[cfg(not(target_pointer_width = "64"))]
compile_error!(
    "the child switches users with raw setgroups/setresgid/setresuid system calls, which take \
     16-bit ids on 32-bit targets; only 64-bit targets are supported"
);

/// What to run and how. Owned, so that the start can run on a blocking
/// thread (see [`spawn`]).
pub struct Request {
    pub argv: Vec<String>,
    /// Complete environment, `KEY=VALUE`.
    pub env: Vec<CString>,
    pub working_dir: Option<String>,
    /// Switch to this user (uid, gid, supplementary groups).
    pub identity: Option<crate::run_as::Identity>,
    pub rlimits: crate::caps::Rlimits,
    /// Becomes fds 1 and 2.
    pub output: OwnedFd,
    /// Becomes fd 3.
    pub control: OwnedFd,
    /// `cgroup.procs` of the attempt's cgroup, to join before anything else.
    pub cgroup_procs: Option<OwnedFd>,
}

/// The step of a start that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before the child exists: preparing its data.
    Prepare,
    Cgroup,
    Descriptors,
    Limits,
    WorkingDir,
    User,
    /// Finding the program in `PATH` (as the activity's user) and `exec`.
    Exec,
}

impl Stage {
    const ALL: [Stage; 7] = [
        Stage::Prepare,
        Stage::Cgroup,
        Stage::Descriptors,
        Stage::Limits,
        Stage::WorkingDir,
        Stage::User,
        Stage::Exec,
    ];

    fn code(self) -> libc::c_int {
        Stage::ALL.iter().position(|s| *s == self).unwrap_or(0) as libc::c_int
    }

    fn from_code(code: libc::c_int) -> Stage {
        usize::try_from(code)
            .ok()
            .and_then(|i| Stage::ALL.get(i).copied())
            .unwrap_or(Stage::Exec)
    }
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
#[error("{stage:?}: {source}")]
pub struct SpawnError {
    pub stage: Stage,
    #[source]
    pub source: io::Error,
}

impl SpawnError {
    fn prepare(source: io::Error) -> SpawnError {
        SpawnError {
            stage: Stage::Prepare,
            source,
        }
    }
}

/// Why a child could not be started, in words for the attempt's error.
pub fn describe(error: &SpawnError, request: &Request) -> String {
    let program = request.argv.first().map_or("", String::as_str);
    let source = &error.source;
    match error.stage {
        Stage::Prepare | Stage::Exec => match source.kind() {
            io::ErrorKind::NotFound => format!("command not found: {program:?}"),
            io::ErrorKind::PermissionDenied => format!("permission denied running {program:?}"),
            _ => format!("cannot start {program:?}: {source}"),
        },
        Stage::Cgroup => format!("cannot join the attempt's cgroup: {source}"),
        Stage::Descriptors => format!("cannot set up the child's file descriptors: {source}"),
        Stage::Limits => format!("cannot apply the activity's rlimits: {source}"),
        Stage::WorkingDir => {
            let dir = request
                .working_dir
                .as_deref()
                .or_else(|| request.identity.as_ref().and_then(|id| id.home.to_str()))
                .unwrap_or("/");
            let who = request
                .identity
                .as_ref()
                .map(|id| format!(" as user {}", id.name))
                .unwrap_or_default();
            let why = match source.kind() {
                io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                io::ErrorKind::NotFound => "no such directory".to_string(),
                io::ErrorKind::NotADirectory => "not a directory".to_string(),
                _ => source.to_string(),
            };
            format!("cannot enter the working directory {dir:?}{who}: {why}")
        }
        Stage::User => format!(
            "cannot switch to user {:?}: {source}",
            request.identity.as_ref().map_or("", |id| id.name.as_str())
        ),
    }
}

/// The daemon's own environment as `KEY=VALUE` strings, read at the first
/// start: it no longer changes by then (`main` drops systemd's variables
/// before any thread starts), and reading and copying it again for every
/// child cost more than the rest of preparing one.
static DAEMON_ENVIRONMENT: LazyLock<Vec<(Vec<u8>, CString)>> = LazyLock::new(|| {
    std::env::vars_os()
        .filter_map(|(key, value)| {
            let key = key.as_bytes().to_vec();
            let mut entry = key.clone();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            Some((key, CString::new(entry).ok()?))
        })
        .collect()
});

/// The daemon's environment with `overrides` applied (later wins), as the
/// `KEY=VALUE` strings `posix_spawn` takes.
pub fn environment(overrides: &[(String, String)]) -> io::Result<Vec<CString>> {
    let overridden = |key: &[u8]| overrides.iter().any(|(k, _)| k.as_bytes() == key);
    let mut env: Vec<CString> = DAEMON_ENVIRONMENT
        .iter()
        .filter(|(key, _)| !overridden(key))
        .map(|(_, entry)| entry.clone())
        .collect();
    for (at, (key, value)) in overrides.iter().enumerate() {
        if overrides[at + 1..].iter().any(|(k, _)| k == key) {
            continue;
        }
        let entry = CString::new(format!("{key}={value}"))
            .map_err(|_| invalid("an environment value contains a NUL byte"))?;
        env.push(entry);
    }
    Ok(env)
}

/// A fresh environment for `identity`: HOME, USER, LOGNAME, SHELL and a
/// standard PATH (plus LANG if the daemon has one), then `overrides`.
pub fn clean_environment(
    identity: &crate::run_as::Identity,
    overrides: &[(String, String)],
) -> io::Result<Vec<CString>> {
    let mut vars: Vec<(String, String)> = vec![
        ("HOME".into(), identity.home.display().to_string()),
        ("USER".into(), identity.name.clone()),
        ("LOGNAME".into(), identity.name.clone()),
        ("SHELL".into(), "/bin/sh".into()),
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
    ];
    if let Ok(lang) = std::env::var("LANG") {
        vars.push(("LANG".into(), lang));
    }
    for (key, value) in overrides {
        match vars.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => vars.push((key.clone(), value.clone())),
        }
    }
    vars.into_iter()
        .map(|(k, v)| {
            CString::new(format!("{k}={v}"))
                .map_err(|_| invalid("an environment value contains a NUL byte"))
        })
        .collect()
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.to_string())
}

/// Where the child looks for `program`, in order: the program itself when
/// it holds a `/` (relative to `working_dir`), else each directory of the
/// child's `PATH`. Nothing is looked at here: the child tries them with
/// `execve`, as `execvp` does, after switching users, so a directory the
/// activity's user may not search is never searched for it with the
/// daemon's rights.
fn candidates(program: &str, env: &[CString], working_dir: Option<&str>) -> Vec<PathBuf> {
    if program.contains('/') {
        let path = Path::new(program);
        return vec![match working_dir {
            Some(dir) if path.is_relative() => Path::new(dir).join(path),
            _ => path.to_path_buf(),
        }];
    }
    let path_var = env
        .iter()
        .find_map(|kv| kv.to_bytes().strip_prefix(b"PATH="))
        .map(|p| p.to_vec())
        .unwrap_or_else(|| b"/usr/local/bin:/usr/bin:/bin".to_vec());
    path_var
        .split(|&b| b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { b".".as_slice() } else { dir };
            Path::new(OsStr::from_bytes(dir)).join(program)
        })
        .collect()
}

/// Everything the child reads, prepared before the clone: until `exec` the
/// child runs in the daemon's memory (CLONE_VM) and must not allocate, take
/// a lock or call anything but plain system calls.
#[derive(Clone, Copy)]
#[repr(C)]
struct ChildPlan {
    /// Paths to try with `execve`, in order ([`candidates`]).
    paths: *const *const libc::c_char,
    path_count: usize,
    argv: *const *mut libc::c_char,
    envp: *const *mut libc::c_char,
    /// Null for "stay where the daemon is".
    cwd: *const libc::c_char,
    dev_null: libc::c_int,
    output: libc::c_int,
    control: libc::c_int,
    /// -1 without a cgroup.
    cgroup_procs: libc::c_int,
    /// (resource, soft, hard).
    rlimits: [(libc::c_int, u64, u64); 3],
    rlimit_count: usize,
    nice: Option<libc::c_int>,
    switch: bool,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: *const libc::gid_t,
    group_count: usize,
    /// The step the child is at ([`Stage::code`]).
    stage: libc::c_int,
    /// Set by the child when a step fails; 0 after a successful `exec`.
    error: libc::c_int,
}

/// Stack of the child until `exec`: the steps above need little.
const CHILD_STACK: usize = 64 * 1024;

/// Start the child: `/dev/null` on fd 0, `output` on fds 1 and 2, `control`
/// on fd 3, its own process group, default signal dispositions and an
/// empty mask, then the request's cgroup, rlimits, user and (as that user)
/// working directory, and `exec` of the first candidate that can be run
/// (see [`candidates`]). The calling thread waits until the child has called
/// `exec` (a slow `chdir` or cgroup join included): call it from a blocking
/// thread, not a runtime worker. Gives the child's pid, and its start time
/// when the clock tells it without reading `/proc` ([`super::start_time`]).
///
/// Like glibc's `posix_spawn`, this uses `clone(CLONE_VM | CLONE_VFORK)`:
/// the daemon's page tables are not copied (a `fork` of the multi-threaded
/// daemon cost ~1.4 ms per attempt, most of the daemon's CPU with many
/// short activities), and the daemon's thread waits until the child has
/// called `exec`. Unlike `posix_spawn` (before glibc 2.38's cgroup
/// attribute, which Debian 12 lacks) it can join a cgroup, set rlimits and
/// switch users on the way. Users are switched with raw system calls: glibc's
/// `setuid` would try to change the credentials of every thread it knows,
/// which in a CLONE_VM child are the daemon's.
#[allow(unsafe_code)]
pub fn spawn(request: &Request) -> Result<(Pid, Option<u64>), SpawnError> {
    let first = request
        .argv
        .first()
        .ok_or_else(|| SpawnError::prepare(invalid("empty command")))?;
    let paths: Vec<CString> = candidates(first, &request.env, request.working_dir.as_deref())
        .into_iter()
        .map(|path| CString::new(path.as_os_str().as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| SpawnError::prepare(invalid("NUL byte in the command")))?;
    let path_ptrs: Vec<*const libc::c_char> = paths.iter().map(|p| p.as_ptr()).collect();
    let argv: Vec<CString> = request
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| invalid("an argument contains a NUL byte")))
        .collect::<io::Result<_>>()
        .map_err(SpawnError::prepare)?;
    let cwd = match (request.working_dir.as_deref(), request.identity.as_ref()) {
        (Some(dir), _) => Some(dir.as_bytes().to_vec()),
        (None, Some(id)) if id.home.is_dir() => Some(id.home.as_os_str().as_bytes().to_vec()),
        (None, Some(_)) => Some(b"/".to_vec()),
        (None, None) => None,
    }
    .map(|d| CString::new(d).map_err(|_| invalid("NUL byte in working_dir")))
    .transpose()
    .map_err(SpawnError::prepare)?;
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut env_ptrs: Vec<*mut libc::c_char> =
        request.env.iter().map(|e| e.as_ptr().cast_mut()).collect();
    env_ptrs.push(std::ptr::null_mut());

    // Copies numbered 4 or more (even with the daemon's stdio closed), so
    // that no dup2 onto 0..=3 overwrites another's source.
    let dev_null = std::fs::File::open("/dev/null").map_err(SpawnError::prepare)?;
    let dev_null = dup_above_3(dev_null.as_fd()).map_err(SpawnError::prepare)?;
    let output = dup_above_3(request.output.as_fd()).map_err(SpawnError::prepare)?;
    let control = dup_above_3(request.control.as_fd()).map_err(SpawnError::prepare)?;
    let cgroup_procs = request
        .cgroup_procs
        .as_ref()
        .map(|fd| dup_above_3(fd.as_fd()))
        .transpose()
        .map_err(SpawnError::prepare)?;

    // A cap at or above the daemon's own hard limit is already met (and
    // could not be raised without privilege): only lower ones are set.
    let limits = request.rlimits;
    let mut rlimits = [(0, 0, 0); 3];
    let mut rlimit_count = 0;
    for (resource, value) in [
        (libc::RLIMIT_AS, limits.address_space),
        (libc::RLIMIT_NOFILE, limits.open_files),
        (libc::RLIMIT_NPROC, limits.processes),
    ] {
        let Some(v) = value else { continue };
        if hard_limit(resource).is_some_and(|hard| v >= hard) {
            continue;
        }
        rlimits[rlimit_count] = (resource as libc::c_int, v, v);
        rlimit_count += 1;
    }
    // Without a `nofile` cap an activity gets the soft open-files limit
    // programs expect (select() breaks past 1024), whatever the daemon
    // raised its own to; the hard limit stays, so a program may raise it.
    if limits.open_files.is_none()
        && let Some((soft, hard)) = current_limit(libc::RLIMIT_NOFILE)
        && soft > ACTIVITY_NOFILE_SOFT
    {
        rlimits[rlimit_count] = (
            libc::RLIMIT_NOFILE as libc::c_int,
            ACTIVITY_NOFILE_SOFT.min(hard),
            hard,
        );
        rlimit_count += 1;
    }
    let identity = request.identity.as_ref();
    let mut plan = ChildPlan {
        paths: path_ptrs.as_ptr(),
        path_count: path_ptrs.len(),
        argv: argv_ptrs.as_ptr(),
        envp: env_ptrs.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        dev_null: dev_null.as_raw_fd(),
        output: output.as_raw_fd(),
        control: control.as_raw_fd(),
        cgroup_procs: cgroup_procs.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
        rlimits,
        rlimit_count,
        nice: limits.nice,
        switch: identity.is_some(),
        uid: identity.map_or(0, |id| id.uid),
        gid: identity.map_or(0, |id| id.gid),
        groups: identity.map_or(std::ptr::null(), |id| id.groups.as_ptr()),
        group_count: identity.map_or(0, |id| id.groups.len()),
        stage: Stage::Prepare.code(),
        error: 0,
    };
    // Changing credentials marks the memory the child shares with the
    // daemon as not dumpable; the daemon's setting is put back after.
    // SAFETY: prctl with PR_GET_DUMPABLE takes no pointers.
    let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) };
    let mut stack = vec![0u8; CHILD_STACK];
    let window = super::start_time::Window::open();

    // SAFETY: the plan, the strings and pointer arrays it points into and
    // the stack all outlive the call, and the daemon's thread is suspended
    // (CLONE_VFORK) until the child has exec'd or exited, so the child's
    // reads and its one write (`error`) never race with this thread. All
    // signals are blocked around the clone so that no handler of the
    // daemon's runs on the child's stack; the child resets them before
    // unblocking.
    let (pid, stage, error) = unsafe {
        let top = stack.as_mut_ptr().add(CHILD_STACK);
        let top = top.sub(top as usize % 16);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
        let pid = libc::clone(
            child_main,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut plan).cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        if identity.is_some() && dumpable == 1 {
            libc::prctl(libc::PR_SET_DUMPABLE, 1);
        }
        if pid == -1 {
            return Err(SpawnError::prepare(clone_error));
        }
        (
            pid,
            std::ptr::read_volatile(&raw const plan.stage),
            std::ptr::read_volatile(&raw const plan.error),
        )
    };
    drop(stack);
    if error != 0 {
        // The child exited without exec: reap it and report why.
        let _ = waitpid(Pid::from_raw(pid), None);
        return Err(SpawnError {
            stage: Stage::from_code(stage),
            source: io::Error::from_raw_os_error(error),
        });
    }
    Ok((Pid::from_raw(pid), window.start_time()))
}

/// A close-on-exec copy of `fd` numbered 4 or more.
#[allow(unsafe_code)]
fn dup_above_3(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let copy = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(4))?;
    // SAFETY: fcntl returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// The soft RLIMIT_NOFILE an activity starts with when its chain sets no
/// `nofile`: the kernel's and systemd's default.
const ACTIVITY_NOFILE_SOFT: u64 = 1024;

/// The daemon's (soft, hard) limits of `resource`, as the kernel reports
/// them (`RLIM_INFINITY` included); `None` when unknown.
#[allow(unsafe_code)]
fn current_limit(resource: libc::__rlimit_resource_t) -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`, which outlives the
    // call.
    let rc = unsafe { libc::getrlimit(resource, &mut limit) };
    (rc == 0).then_some((limit.rlim_cur, limit.rlim_max))
}

/// The hard limit of `resource` for the daemon; `None` for unlimited or
/// unknown.
#[allow(unsafe_code)]
fn hard_limit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`, which outlives the
    // call.
    let rc = unsafe { libc::getrlimit(resource, &mut limit) };
    (rc == 0 && limit.rlim_max != libc::RLIM_INFINITY).then_some(limit.rlim_max)
}

/// The child, between the clone and `exec`. Plain system calls only.
#[allow(unsafe_code)]
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the plan `spawn` passed, alive and not touched by
    // the suspended parent; every pointer in it is valid until exec. The
    // calls below are single system calls that affect only this process.
    unsafe {
        let plan = arg.cast::<ChildPlan>();
        let fail = |plan: *mut ChildPlan| -> libc::c_int {
            (*plan).error = *libc::__errno_location();
            libc::_exit(127)
        };
        let at = |plan: *mut ChildPlan, stage: Stage| (*plan).stage = stage.code();
        // Default dispositions (the daemon ignores SIGPIPE and handles
        // others; handlers are not shared, CLONE_SIGHAND is not set).
        for signal in 1..=libc::SIGRTMAX() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        let p: ChildPlan = *plan;
        // Join the attempt's cgroup first, while still the daemon's user,
        // so that nothing the child starts is ever outside it.
        at(plan, Stage::Cgroup);
        if p.cgroup_procs >= 0 && libc::write(p.cgroup_procs, b"0".as_ptr().cast(), 1) != 1 {
            return fail(plan);
        }
        // Every source is numbered 4 or more (see `dup_above_3`).
        at(plan, Stage::Descriptors);
        if libc::dup2(p.dev_null, 0) == -1
            || libc::dup2(p.output, 1) == -1
            || libc::dup2(p.output, 2) == -1
            || libc::dup2(p.control, 3) == -1
            || libc::setpgid(0, 0) == -1
        {
            return fail(plan);
        }
        at(plan, Stage::Limits);
        for &(resource, soft, hard) in p.rlimits.iter().take(p.rlimit_count) {
            let limit = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            if libc::setrlimit(resource as _, &limit) == -1 {
                return fail(plan);
            }
        }
        if let Some(nice) = p.nice {
            // Lowering nice below 0 needs privilege; a refusal leaves the
            // default rather than failing the activity.
            libc::setpriority(libc::PRIO_PROCESS, 0, nice);
        }
        at(plan, Stage::User);
        if p.switch
            && (libc::syscall(libc::SYS_setgroups, p.group_count, p.groups) == -1
                || libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid) == -1
                || libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid) == -1)
        {
            return fail(plan);
        }
        // Only now, as the target user: `working_dir` is a template a
        // submitter steers, so the kernel must check the access as the user
        // the activity runs as, never as the daemon.
        at(plan, Stage::WorkingDir);
        if !p.cwd.is_null() && libc::chdir(p.cwd) == -1 {
            return fail(plan);
        }
        // Nothing else the daemon holds reaches the program, not even a
        // descriptor it inherited without close-on-exec (Linux 5.9+; on
        // older kernels the call fails and close-on-exec alone applies).
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // As execvp: a candidate that is missing (or under something that
        // is not a directory) is skipped; a refused one is remembered, so
        // that "permission denied" wins over "not found" at the end.
        at(plan, Stage::Exec);
        let mut denied = false;
        *libc::__errno_location() = libc::ENOENT;
        for i in 0..p.path_count {
            libc::execve(*p.paths.add(i), p.argv.cast(), p.envp.cast());
            match *libc::__errno_location() {
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                libc::EACCES => denied = true,
                _ => return fail(plan),
            }
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(plan)
    }
}

/// Waits for one child without blocking a runtime thread: a pidfd becomes
/// readable when the child exits (Linux 5.3+); without pidfds, a blocking
/// thread waits instead.
pub struct ChildWait {
    pid: Pid,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<WaitStatus>,
    /// The leader's rusage, from the `wait4` that reaped it.
    rusage: Option<super::usage::Rusage>,
}

impl ChildWait {
    #[allow(unsafe_code)]
    pub fn new(pid: Pid) -> ChildWait {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        let pidfd = if fd >= 0 {
            // SAFETY: the syscall returned a new fd that nothing else owns;
            // an OwnedFd keeps it open, unchanged, for the AsyncFd's life.
            unsafe {
                let owned = OwnedFd::from_raw_fd(fd as RawFd);
                AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE).ok()
            }
        } else {
            None
        };
        ChildWait {
            pid,
            pidfd,
            status: None,
            rusage: None,
        }
    }

    /// The child's exit status, once. Safe to call again after it resolved
    /// (cancel-safe: `select!` may drop it half-way).
    pub async fn wait(&mut self) -> io::Result<WaitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let (status, rusage) = match &self.pidfd {
            Some(fd) => loop {
                match wait4(self.pid, true) {
                    Ok((WaitStatus::StillAlive, _)) => {}
                    Ok(reaped) => break reaped,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                let mut guard = fd.readable().await?;
                guard.clear_ready();
            },
            None => {
                let pid = self.pid;
                tokio::task::spawn_blocking(move || {
                    loop {
                        match wait4(pid, false) {
                            Err(nix::errno::Errno::EINTR) => continue,
                            other => return other,
                        }
                    }
                })
                .await
                .map_err(io::Error::other)??
            }
        };
        self.status = Some(status);
        self.rusage = Some(rusage);
        Ok(status)
    }

    /// The leader's rusage once `wait` resolved.
    pub fn rusage(&self) -> Option<super::usage::Rusage> {
        self.rusage
    }
}

/// `wait4` for one child: its status and its rusage (its own use and that
/// of the descendants it waited for). nix has `waitpid` but no `wait4`.
#[allow(unsafe_code)]
fn wait4(pid: Pid, no_hang: bool) -> nix::Result<(WaitStatus, super::usage::Rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain integers and timevals; all zeroes is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if no_hang { libc::WNOHANG } else { 0 };
    // SAFETY: both pointers are to live locals of the right types.
    let r = unsafe { libc::wait4(pid.as_raw(), &mut status, flags, &mut ru) };
    let rusage = super::usage::Rusage::from_libc(&ru);
    match r {
        -1 => Err(nix::errno::Errno::last()),
        0 => Ok((WaitStatus::StillAlive, rusage)),
        _ => WaitStatus::from_raw(pid, status).map(|s| (s, rusage)),
    }
}
