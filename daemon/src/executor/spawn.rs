//! Starting a child with `posix_spawn` and waiting for it through a pidfd.
//!
//! `fork` copies the daemon's page tables and then takes a copy-on-write
//! fault (with a TLB shootdown across the runtime's threads) for every page
//! either side touches; with thousands of short activities that was most of
//! the daemon's CPU. glibc's `posix_spawn` uses `clone(CLONE_VM |
//! CLONE_VFORK)`, which copies nothing. Its file actions put the output pipe
//! on fds 1 and 2, the control pipe on fd 3 and `/dev/null` on fd 0, make the
//! child a process-group leader and reset signal dispositions and the mask
//! (the Rust runtime ignores SIGPIPE, which children must not inherit).

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::libc;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

/// What to run.
pub struct Program<'a> {
    pub argv: &'a [String],
    /// Complete environment, `KEY=VALUE`.
    pub env: Vec<CString>,
    pub working_dir: Option<&'a str>,
}

/// Why a child could not be started, in words for the attempt's error.
pub fn describe(error: &io::Error, program: &str) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => format!("command not found: {program:?}"),
        io::ErrorKind::PermissionDenied => format!("permission denied running {program:?}"),
        _ => format!("cannot start {program:?}: {error}"),
    }
}

/// The daemon's environment with `overrides` applied (later wins), as the
/// `KEY=VALUE` strings `posix_spawn` takes.
pub fn environment(overrides: &[(String, String)]) -> io::Result<Vec<CString>> {
    let mut vars: Vec<(Vec<u8>, Vec<u8>)> = std::env::vars_os()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    for (key, value) in overrides {
        let key = key.as_bytes();
        match vars.iter_mut().find(|(k, _)| k.as_slice() == key) {
            Some(slot) => slot.1 = value.as_bytes().to_vec(),
            None => vars.push((key.to_vec(), value.as_bytes().to_vec())),
        }
    }
    vars.into_iter()
        .map(|(mut k, v)| {
            k.push(b'=');
            k.extend_from_slice(&v);
            CString::new(k).map_err(|_| invalid("an environment value contains a NUL byte"))
        })
        .collect()
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

/// Find `program` the way a shell would, with the child's `PATH`.
fn resolve(program: &str, env: &[CString], working_dir: Option<&str>) -> io::Result<PathBuf> {
    if program.contains('/') {
        let path = Path::new(program);
        return Ok(match working_dir {
            Some(dir) if path.is_relative() => Path::new(dir).join(path),
            _ => path.to_path_buf(),
        });
    }
    let path_var = env
        .iter()
        .find_map(|kv| kv.to_bytes().strip_prefix(b"PATH="))
        .map(|p| p.to_vec())
        .unwrap_or_else(|| b"/usr/local/bin:/usr/bin:/bin".to_vec());
    for dir in path_var.split(|&b| b == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let candidate = Path::new(OsStr::from_bytes(dir)).join(program);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(io::Error::from(io::ErrorKind::NotFound))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Start the child. `output` goes to fds 1 and 2, `control` to fd 3.
#[allow(unsafe_code)]
pub fn spawn(program: &Program<'_>, output: RawFd, control: RawFd) -> io::Result<Pid> {
    let first = program
        .argv
        .first()
        .ok_or_else(|| invalid("empty command"))?;
    let path = resolve(first, &program.env, program.working_dir)?;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| invalid("NUL byte in the command"))?;
    let argv: Vec<CString> = program
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| invalid("an argument contains a NUL byte")))
        .collect::<io::Result<_>>()?;
    let cwd = program
        .working_dir
        .map(|d| CString::new(d.as_bytes()).map_err(|_| invalid("NUL byte in working_dir")))
        .transpose()?;
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut env_ptrs: Vec<*mut libc::c_char> =
        program.env.iter().map(|e| e.as_ptr().cast_mut()).collect();
    env_ptrs.push(std::ptr::null_mut());
    let dev_null: &CStr = c"/dev/null";

    // SAFETY: the attribute and file-action objects are initialised before
    // use and destroyed on every path; every pointer handed to libc points
    // into a CString or vector that outlives the call.
    unsafe {
        let mut actions = MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
        check(libc::posix_spawn_file_actions_init(actions.as_mut_ptr()))?;
        let mut actions = actions.assume_init();
        let mut attr = MaybeUninit::<libc::posix_spawnattr_t>::uninit();
        if let Err(e) = check(libc::posix_spawnattr_init(attr.as_mut_ptr())) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let mut attr = attr.assume_init();
        let result = (|| {
            if let Some(cwd) = &cwd {
                check(libc::posix_spawn_file_actions_addchdir_np(
                    &mut actions,
                    cwd.as_ptr(),
                ))?;
            }
            check(libc::posix_spawn_file_actions_addopen(
                &mut actions,
                0,
                dev_null.as_ptr(),
                libc::O_RDONLY,
                0,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                output,
                1,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                output,
                2,
            ))?;
            // dup2 onto itself clears close-on-exec (glibc follows POSIX 2017).
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                control,
                3,
            ))?;

            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &all))?;
            check(libc::posix_spawnattr_setsigmask(&mut attr, &none))?;
            check(libc::posix_spawnattr_setpgroup(&mut attr, 0))?;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETPGROUP
                    | libc::POSIX_SPAWN_SETSIGDEF
                    | libc::POSIX_SPAWN_SETSIGMASK) as libc::c_short,
            ))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &actions,
                &attr,
                argv_ptrs.as_ptr(),
                env_ptrs.as_ptr(),
            ))?;
            Ok(Pid::from_raw(pid))
        })();
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut actions);
        result
    }
}

/// Waits for one child without blocking a runtime thread: a pidfd becomes
/// readable when the child exits (Linux 5.3+); without pidfds, a blocking
/// thread waits instead.
pub struct ChildWait {
    pid: Pid,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<WaitStatus>,
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
        }
    }

    /// The child's exit status, once. Safe to call again after it resolved
    /// (cancel-safe: `select!` may drop it half-way).
    pub async fn wait(&mut self) -> io::Result<WaitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = match &self.pidfd {
            Some(fd) => loop {
                match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => {}
                    Ok(status) => break status,
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
                        match waitpid(pid, None) {
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
        Ok(status)
    }
}

/// Start the child through `fork`, for activities that switch users or set
/// caps: those steps must run in the child before `exec`, which
/// `posix_spawn` cannot do. Returns the pid; wait with [`ChildWait`].
#[allow(unsafe_code)]
pub fn spawn_forked(
    program: &Program<'_>,
    output: &OwnedFd,
    control: RawFd,
    identity: Option<&crate::run_as::Identity>,
    limits: crate::run_as::Limits,
) -> io::Result<Pid> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::process::CommandExt;

    let (first, rest) = program
        .argv
        .split_first()
        .ok_or_else(|| invalid("empty command"))?;
    let mut command = std::process::Command::new(first);
    command.args(rest).env_clear();
    for kv in &program.env {
        let bytes = kv.to_bytes();
        if let Some(eq) = bytes.iter().position(|&b| b == b'=') {
            command.env(
                OsStr::from_bytes(&bytes[..eq]),
                OsStr::from_bytes(&bytes[eq + 1..]),
            );
        }
    }
    match (program.working_dir, identity) {
        (Some(dir), _) => {
            command.current_dir(dir);
        }
        (None, Some(id)) if id.home.is_dir() => {
            command.current_dir(&id.home);
        }
        (None, Some(_)) => {
            command.current_dir("/");
        }
        (None, None) => {}
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(output.try_clone()?))
        .stderr(std::process::Stdio::from(output.try_clone()?))
        .process_group(0);
    let switch = identity.map(|id| (id.uid, id.gid, id.groups.clone()));
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (dup2, fcntl, setrlimit,
    // setpriority, setgroups, setgid, setuid) on values prepared before the
    // fork; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if control == 3 {
                if libc::fcntl(control, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(control, 3) == -1 {
                return Err(io::Error::last_os_error());
            }
            let set = |resource, value: Option<u64>| -> io::Result<()> {
                if let Some(v) = value {
                    let limit = libc::rlimit {
                        rlim_cur: v as libc::rlim_t,
                        rlim_max: v as libc::rlim_t,
                    };
                    if libc::setrlimit(resource, &limit) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            };
            set(libc::RLIMIT_AS, limits.address_space)?;
            set(libc::RLIMIT_NOFILE, limits.open_files)?;
            set(libc::RLIMIT_NPROC, limits.processes)?;
            if let Some(nice) = limits.nice {
                // Lowering nice below 0 needs privilege; a refusal leaves
                // the default rather than failing the activity.
                libc::setpriority(libc::PRIO_PROCESS, 0, nice);
            }
            if let Some((uid, gid, groups)) = &switch
                && (libc::setgroups(groups.len(), groups.as_ptr()) == -1
                    || libc::setgid(*gid) == -1
                    || libc::setuid(*uid) == -1)
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    // The pid is waited for through a pidfd like every other attempt; the
    // std handle neither waits nor kills when dropped.
    Ok(Pid::from_raw(child.id() as i32))
}
