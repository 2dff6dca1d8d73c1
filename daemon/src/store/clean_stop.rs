//! Whether the previous daemon stopped cleanly: a graceful stop (SIGTERM,
//! SIGINT) leaves the file `clean-stop` in the state directory after its
//! last write; the next start takes it away before recovery. An attempt
//! still recorded as running at start is then said to have been
//! interrupted by a stop or by a crash, whichever it was.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// An interrupted attempt's error when the daemon was stopped gracefully.
pub const STOPPED: &str = "interrupted: the daemon was stopped (graceful stop) while it ran";
/// An interrupted attempt's error when the daemon ended without a graceful
/// stop: it crashed, was killed (SIGKILL, OOM) or the machine went down.
pub const CRASHED: &str =
    "interrupted: the daemon crashed or was killed while it ran (it did not stop cleanly)";

/// How the previous daemon on this state directory ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastStop {
    Clean,
    Unclean,
}

impl LastStop {
    /// The error recorded for an attempt that daemon left running.
    pub fn interrupted_error(self) -> &'static str {
        match self {
            LastStop::Clean => STOPPED,
            LastStop::Unclean => CRASHED,
        }
    }
}

fn marker(state_dir: &Path) -> PathBuf {
    state_dir.join("clean-stop")
}

/// At a graceful stop, after the last write: the next start reads it.
pub fn mark(state_dir: &Path) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(marker(state_dir))?;
    writeln!(file, "stopped at {}", super::now_ms())?;
    file.sync_all()?;
    std::fs::File::open(state_dir)?.sync_all()
}

/// At start: how the previous daemon ended, the marker removed (durably)
/// so that a crash of this daemon is not taken for a clean stop.
pub fn take(state_dir: &Path) -> LastStop {
    match std::fs::remove_file(marker(state_dir)) {
        Ok(()) => {
            if let Err(error) = std::fs::File::open(state_dir).and_then(|d| d.sync_all()) {
                tracing::warn!(%error, "cannot sync the state directory after removing clean-stop");
            }
            LastStop::Clean
        }
        Err(error) => {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, "cannot remove clean-stop; taking the last stop for a crash");
            }
            LastStop::Unclean
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_taken_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(take(dir.path()), LastStop::Unclean);
        mark(dir.path()).expect("mark");
        assert_eq!(take(dir.path()), LastStop::Clean);
        assert_eq!(take(dir.path()), LastStop::Unclean, "a crash after a start");
    }
}
