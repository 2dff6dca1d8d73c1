//! The database on a read-only file system: opening it for reads, and
//! noticing when the file system can be written again.
//!
//! SQLite reads a WAL database through its WAL index (`holdfast.db-shm`).
//! On a read-only file system it can use an index that is already there
//! (it reads it into memory), but it cannot create one, and after a clean
//! stop there is none. Then only `immutable=1` opens the database: SQLite
//! takes no locks and never looks at the WAL, trusting that nothing changes
//! the file. Both ways are sound here because nothing can write while the
//! file system is read-only, and the store replaces these connections (under
//! its lock, see `mod.rs`) before it writes again.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use nix::sys::statvfs::{FsFlags, statvfs};
use rusqlite::{Connection, OpenFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{Store, StoreError};

/// Longest time between two checks of a read-only file system.
const RECHECK: Duration = Duration::from_secs(2);

/// How read-only connections are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// `mode=ro`: SQLite reads the WAL through the existing index.
    ReadOnly,
    /// `mode=ro&immutable=1`: no index to read the WAL with.
    Immutable,
}

/// True when the database at `path`, or the directory that holds it, is on
/// a file system mounted read-only. False when that cannot be told.
pub fn on_read_only_file_system(path: &Path) -> bool {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    [path, dir]
        .iter()
        .any(|p| statvfs(*p).is_ok_and(|stats| stats.flags().contains(FsFlags::ST_RDONLY)))
}

/// Open the existing database at `path` for reading, the first way that
/// reads it: with its WAL index, else immutable.
pub(super) fn open(path: &Path) -> Result<(Connection, Opening), StoreError> {
    if let Err(e) = std::fs::metadata(path)
        && e.kind() == std::io::ErrorKind::NotFound
    {
        return Err(StoreError::MissingOnReadOnly {
            path: path.to_path_buf(),
        });
    }
    let mut failure = None;
    for opening in [Opening::ReadOnly, Opening::Immutable] {
        // Opening is lazy: the first query reads the header and the index.
        let probed = connect(path, opening).and_then(|conn| {
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| {
                row.get::<_, i64>(0)
            })?;
            Ok(conn)
        });
        match probed {
            Ok(conn) => {
                if opening == Opening::Immutable {
                    warn_about_unread_wal(path);
                }
                return Ok((conn, opening));
            }
            Err(error) => {
                tracing::debug!(%error, ?opening, "cannot read the database this way");
                failure = Some(error);
            }
        }
    }
    Err(StoreError::Open {
        path: path.to_path_buf(),
        source: failure.unwrap_or(rusqlite::Error::InvalidQuery),
    })
}

/// A WAL left without its index (it was deleted, or never written to disk)
/// holds commits an immutable connection does not see. They are not lost:
/// the writer replays them once the file system is writable.
fn warn_about_unread_wal(path: &Path) {
    let mut wal = path.as_os_str().to_os_string();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        tracing::warn!(
            wal = %Path::new(&wal).display(),
            "the database's newest changes are in its WAL, which cannot be read without its index on a read-only file system; they show once the state directory is writable"
        );
    }
}

/// One read-only connection to the database at `path`.
pub(super) fn connect(path: &Path, opening: Opening) -> rusqlite::Result<Connection> {
    let mut uri = format!("file:{}?mode=ro", uri_path(path));
    if opening == Opening::Immutable {
        uri.push_str("&immutable=1");
    }
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// `path` as the path of a `file:` URI: every byte but unreserved ones and
/// `/` percent-encoded, so `?`, `#` and `%` in a name stay part of it.
fn uri_path(path: &Path) -> String {
    use std::fmt::Write;
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

impl Store {
    /// Resolve once the store has its writer: whenever its file system may
    /// have become writable (see [`Rechecks`]), check, and if it has, make
    /// the store writable. A failure to open it for writing is logged and
    /// tried again at the next check.
    pub async fn until_writable(&self) {
        let path = self.shared.path.clone();
        let mut rechecks = Rechecks::new();
        let mut last_failure: Option<String> = None;
        loop {
            if !self.is_read_only() {
                return;
            }
            if !on_read_only_file_system(&path) {
                let store = self.clone();
                let result = tokio::task::spawn_blocking(move || store.make_writable())
                    .await
                    .unwrap_or(Err(StoreError::WriterGone));
                match result {
                    Ok(()) => return,
                    Err(error) => {
                        let text = error.to_string();
                        if last_failure.as_deref() == Some(text.as_str()) {
                            tracing::debug!(%error, "the database still cannot be opened for writing");
                        } else {
                            tracing::warn!(%error, "the state directory's file system is writable but the database cannot be opened for writing; trying again");
                        }
                        last_failure = Some(text);
                    }
                }
            }
            rechecks.next().await;
        }
    }
}

/// When to look again at a read-only file system: at each change of this
/// process's mount table (a remount in its mount namespace, which the kernel
/// signals on `/proc/self/mountinfo`), and at least every [`RECHECK`], for
/// what that signal misses (a file system remounted from another mount
/// namespace changes its flags without touching this one's table).
struct Rechecks {
    mounts: Option<AsyncFd<File>>,
}

impl Rechecks {
    /// Must run on the runtime (the watch registers with its reactor).
    fn new() -> Rechecks {
        let mounts = File::open("/proc/self/mountinfo").and_then(watch_priority);
        match mounts {
            Ok(mounts) => Rechecks {
                mounts: Some(mounts),
            },
            Err(error) => {
                tracing::debug!(%error, "cannot watch the mount table; checking the state directory every {RECHECK:?}");
                Rechecks { mounts: None }
            }
        }
    }

    /// Resolve at the next mount table change or after [`RECHECK`].
    async fn next(&mut self) {
        let Some(mounts) = &self.mounts else {
            tokio::time::sleep(RECHECK).await;
            return;
        };
        let changed = tokio::select! {
            ready = mounts.ready(Interest::PRIORITY) => ready.map(|mut guard| guard.clear_ready()),
            () = tokio::time::sleep(RECHECK) => Ok(()),
        };
        if let Err(error) = changed {
            tracing::debug!(%error, "the mount table watch failed; checking the state directory every {RECHECK:?}");
            self.mounts = None;
        }
    }
}

/// `file` registered with the runtime's reactor for priority events.
#[allow(unsafe_code)]
fn watch_priority(file: File) -> std::io::Result<AsyncFd<File>> {
    // SAFETY: the AsyncFd takes `file`, which owns its descriptor and never
    // closes or replaces it while the AsyncFd holds it.
    unsafe { AsyncFd::register_with_interest(file, Interest::PRIORITY) }.map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditRow, WriteOp, list_audit};

    fn audit(method: &'static str) -> WriteOp {
        WriteOp::Audit(Box::new(AuditRow {
            at: 1,
            uid: Some(0),
            user: Some("root".into()),
            pid: None,
            method,
            target: None,
            outcome: "ok".into(),
            detail: None,
        }))
    }

    /// A database made by a daemon, the daemon gone (its files closed).
    async fn made_by_a_daemon(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("holdfast.db");
        let store = Store::open(&path).expect("open");
        store
            .write(vec![audit("job.submit")], true)
            .await
            .expect("write");
        drop(store);
        // Into the main file, as a daemon's last close leaves it (an
        // immutable connection does not read the WAL).
        Connection::open(&path)
            .and_then(|conn| {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    row.get::<_, i64>(0)
                })
            })
            .expect("checkpoint");
        path
    }

    #[test]
    fn uri_paths_are_escaped() {
        assert_eq!(uri_path(Path::new("/var/lib/hf/db")), "/var/lib/hf/db");
        assert_eq!(
            uri_path(Path::new("/a b/x?y#z%.db")),
            "/a%20b/x%3Fy%23z%25.db"
        );
    }

    #[tokio::test]
    async fn either_opening_reads_and_the_store_becomes_writable() {
        for opening in [Opening::ReadOnly, Opening::Immutable] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = made_by_a_daemon(dir.path()).await;
            let conn = connect(&path, opening).expect("connect");
            let store = Store::with(&path, None, super::super::ReaderKind::ReadOnly(opening));
            store.access().readers.put_back(conn);
            assert!(store.is_read_only());

            let rows = store
                .read(|conn| list_audit(conn, 10, None))
                .await
                .expect("read-only reads");
            assert_eq!(rows.len(), 1, "{opening:?}");
            let refused = store.write(vec![audit("job.cancel")], true).await;
            assert!(
                matches!(&refused, Err(e @ StoreError::ReadOnly { .. }) if e.is_unavailable()),
                "{refused:?}"
            );

            store.until_writable().await;
            assert!(!store.is_read_only());
            store
                .write(vec![audit("job.retry")], true)
                .await
                .expect("writes once writable");
            let rows = store
                .read(|conn| list_audit(conn, 10, None))
                .await
                .expect("reads after the switch");
            assert_eq!(rows.len(), 2, "{opening:?}");
        }
    }

    #[tokio::test]
    async fn opens_read_only_only_with_the_current_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = made_by_a_daemon(dir.path()).await;
        let store = Store::open_read_only(&path).expect("open read-only");
        assert!(store.is_read_only());

        let old = dir.path().join("old.db");
        Connection::open(&old)
            .and_then(|conn| conn.pragma_update(None, "user_version", 1))
            .expect("an old database");
        let refused = Store::open_read_only(&old).err();
        assert!(
            matches!(
                refused,
                Some(StoreError::SchemaOnReadOnly { found: 1, needed, .. }) if needed == crate::store::schema::latest()
            ),
            "{refused:?}"
        );

        let missing = Store::open_read_only(&dir.path().join("none.db")).err();
        assert!(
            matches!(missing, Some(StoreError::MissingOnReadOnly { .. })),
            "{missing:?}"
        );
    }
}
