//! The state directory's lock: one daemon per state directory, whatever
//! socket each was given.
//!
//! `holdfast.lock` in the state directory is locked with `flock` (exclusive,
//! without waiting) before anything touches the database, and held for the
//! daemon's life: the kernel drops it when the process ends, however it
//! ends, so a crash never leaves a stale lock. The holder writes its pid into
//! the file so a second daemon can say which one is in the way.
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
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                pid,
            });
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
}
