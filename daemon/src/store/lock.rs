//! The state directory's lock: one daemon per state directory, whatever
//! socket each was given.
//!
//! `holdfast.lock` in the state directory is locked with `flock` (exclusive,
//! without waiting) before anything touches the database, and held for the
//! daemon's life: the kernel drops it when the process ends, however it
//! ends, so a crash never leaves a stale lock. The holder writes its pid into
//! the file so a second daemon can say which one is in the way. (A child
//! that a daemon killed with SIGKILL was starting keeps a copy of the
//! descriptor until it execs; a lock whose recorded holder is dead is
//! waited for, briefly.)
//!
//! On a read-only file system the lock file may not be creatable. A daemon
//! there only reads, so it goes on without the lock when the file is
//! missing, and takes it before its engine starts once the directory is
//! writable (see `main.rs`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name in the state directory.
pub const FILE_NAME: &str = "holdfast.lock";

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "state directory {dir} is in use by another holdfastd (pid {pid}); stop that daemon first, or give this one another state directory"
    )]
    Held { dir: PathBuf, pid: String },
    #[error(
        "cannot open the lock file {path}: {source}; check the state directory's owner and mode"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: Flock<File>,
}

/// Lock the state directory `dir`. `Ok(None)`: the directory is on a
/// read-only file system and holds no lock file, so none can be taken
/// (nor is one needed while nothing is written).
pub fn acquire(dir: &Path) -> Result<Option<StateLock>, LockError> {
    let path = dir.join(FILE_NAME);
    let writable = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path);
    let (file, can_write) = match writable {
        Ok(file) => (file, true),
        Err(error) if super::read_only::on_read_only_file_system(&path) => {
            match OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(file) => (file, false),
                Err(missing) if missing.kind() == std::io::ErrorKind::NotFound => {
                    tracing::debug!(%error, "no lock file on a read-only state directory");
                    return Ok(None);
                }
                Err(source) => return Err(LockError::Open { path, source }),
            }
        }
        Err(source) => return Err(LockError::Open { path, source }),
    };
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = match text.trim() {
                "" => "unknown".to_string(),
                pid => pid.to_string(),
            };
            match wait_for_dead_holder(file, &pid) {
                Some(locked) => locked,
                None => {
                    return Err(LockError::Held {
                        dir: dir.to_path_buf(),
                        pid,
                    });
                }
            }
        }
        Err((_, source)) => return Err(LockError::Lock { path, source }),
    };
    if can_write {
        // Best effort: the pid only makes the second daemon's message
        // clearer; the lock is what keeps it out.
        let pid = format!("{}\n", std::process::id());
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()));
        if let Err(error) = written {
            tracing::warn!(%error, path = %path.display(), "cannot write the pid into the lock file");
        }
    }
    Ok(Some(StateLock { _file: file }))
}

/// The lock is held but the daemon that wrote `pid` is gone: a process
/// it was starting when it died (killed between `clone` and `exec`) still
/// has a copy of the lock's descriptor, for the moment until it closes it
/// or execs. Wait for that, without polling, up to [`DEAD_HOLDER_WAIT`];
/// None when the holder is alive (another daemon) or the lock stays held.
fn wait_for_dead_holder(file: File, pid: &str) -> Option<Flock<File>> {
    let pid: i32 = pid.parse().ok()?;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) != Err(Errno::ESRCH);
    if alive {
        return None;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    // The thread blocks in `flock` until the lock is free; if that never
    // comes it stays blocked, and the daemon exits with the error anyway.
    std::thread::Builder::new()
        .name("state-lock".into())
        .spawn(move || {
            let _ = tx.send(Flock::lock(file, FlockArg::LockExclusive).ok());
        })
        .ok()?;
    rx.recv_timeout(DEAD_HOLDER_WAIT).ok().flatten()
}

/// How long a lock left to a dead daemon's half-started child is waited
/// for.
const DEAD_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    /// A second lock on the same directory (another open file, as another
    /// daemon would have) is refused with the holder's pid, and the lock is
    /// free again once the holder drops it.
    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = acquire(dir.path())
            .expect("lock")
            .expect("a writable directory");
        match acquire(dir.path()) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("the second lock must be refused: {other:?}"),
        }
        drop(first);
        assert!(acquire(dir.path()).expect("free again").is_some());
    }

    /// The lock held through a descriptor a dead daemon left behind (its
    /// half-started child's copy) is taken once that copy goes, instead of
    /// refusing to start.
    #[test]
    fn a_lock_left_to_a_dead_daemons_child_is_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let holder = acquire(dir.path())
            .expect("lock")
            .expect("a writable directory");
        // The pid of a process that has been reaped: the "daemon" is gone.
        let mut gone = std::process::Command::new("true")
            .spawn()
            .expect("true starts");
        let dead = gone.id();
        gone.wait().expect("true is reaped");
        std::fs::write(dir.path().join(FILE_NAME), format!("{dead}\n")).expect("pid written");
        let (released, release) = std::sync::mpsc::channel::<()>();
        let child_copy = std::thread::spawn(move || {
            // The copy goes when the test says so, after the second daemon
            // found the lock held.
            let _ = release.recv();
            drop(holder);
        });
        let started = std::time::Instant::now();
        let waiter = std::thread::spawn({
            let dir = dir.path().to_path_buf();
            move || acquire(&dir)
        });
        // Only once the second daemon waits (its waiting thread exists):
        // the copy must go while the lock is being waited for.
        let deadline = std::time::Instant::now() + DEAD_HOLDER_WAIT;
        while !thread_named("state-lock") {
            assert!(
                std::time::Instant::now() < deadline,
                "acquire never waited for the lock"
            );
            std::thread::yield_now();
        }
        released.send(()).expect("the holder listens");
        let taken = waiter.join().expect("acquire returns");
        child_copy.join().expect("the holder ends");
        assert!(
            matches!(taken, Ok(Some(_))),
            "taken once the dead daemon's copy went: {taken:?}"
        );
        assert!(started.elapsed() < DEAD_HOLDER_WAIT);
    }

    /// Whether a thread of this process has the name `name`.
    fn thread_named(name: &str) -> bool {
        std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .any(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.trim_end() == name)
            })
    }
}
