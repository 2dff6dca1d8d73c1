//! The SQLite store: one writer thread that group-commits batches of
//! [`WriteOp`]s, and a small pool of read-only connections for queries.
//!
//! The database runs in WAL mode so readers never wait for the writer. Each
//! batch is one transaction. Batches that acknowledge something to a client
//! (`durable`) commit with `synchronous = FULL`, so an acknowledged job
//! survives power loss; engine transitions commit with `NORMAL`, which is
//! durable against a crash of the daemon (the WAL is in the OS's hands) and
//! fsyncs at checkpoints.
//!
//! A store opened on a read-only file system has readers and no writer
//! (`read_only.rs`); [`Store::make_writable`] gives it one in place, so every
//! clone (the RPC layer's, the engine's) writes from then on.

pub mod clean_stop;
#[cfg(test)]
mod digest_tests;
mod items;
pub mod lock;
pub mod private;
mod read;
pub mod read_only;
pub mod schema;
mod stats;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

pub use items::*;
pub use read::*;
pub use stats::{StatsFilter, stats};
pub use write::*;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot migrate database {path}: {source}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: rusqlite_migration::Error,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot start the store writer thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the store writer has stopped")]
    WriterGone,
    #[error("not written: the batch it builds on could not be committed")]
    AfterFailure,
    #[error(
        "{path} is missing, but {jobs} jobs keep secret parameters sealed with it; restore it \
         (it is not part of hfctl backup: keep it beside your backups), or move the database \
         aside to start afresh"
    )]
    SecretsKeyMissing { path: PathBuf, jobs: u64 },
    #[error("cannot open the database snapshot {path}: {source}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "database {path} is on a read-only file system; nothing can be written until it is writable"
    )]
    ReadOnly { path: PathBuf },
    #[error(
        "database {path} does not exist and cannot be created on a read-only file system; make the state directory writable"
    )]
    MissingOnReadOnly { path: PathBuf },
    #[error(
        "database {path} needs schema version {needed} but has {found}, and it cannot be changed on a read-only file system; make the state directory writable"
    )]
    SchemaOnReadOnly {
        path: PathBuf,
        found: i64,
        needed: usize,
    },
}

impl StoreError {
    /// True when the error means the disk cannot take writes now (full,
    /// read-only, I/O error), as opposed to a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::WriterGone | StoreError::AfterFailure | StoreError::ReadOnly { .. } => true,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

struct WriteRequest {
    ops: Vec<WriteOp>,
    durable: bool,
    link: Option<Link>,
    reply: oneshot::Sender<WriteOutcome>,
}

/// A batch's place in a sequence of batches each built on the one before
/// it (the engine's: it hands over the next batch while one commits). The
/// writer applies a batch only if the one it follows was committed: after
/// a failure, every later batch of the sequence that was already handed
/// over comes back unapplied ([`StoreError::AfterFailure`]), so none is
/// committed on top of writes that were not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// This batch's number in the sequence.
    pub seq: u64,
    /// The batch it follows, when that one was not answered yet as it was
    /// built.
    pub after: Option<u64>,
}

/// How a batch of writes went: committed, or the error with the writes
/// handed back, so the caller can keep them for a retry without having
/// copied them beforehand.
pub type WriteOutcome = Result<(), Box<Unwritten>>;

/// Writes that were not committed, and why.
#[derive(Debug)]
pub struct Unwritten {
    pub error: StoreError,
    pub ops: Vec<WriteOp>,
}

fn unwritten(error: StoreError, ops: Vec<WriteOp>) -> Box<Unwritten> {
    Box::new(Unwritten { error, ops })
}

/// A batch handed to the writer thread and not yet answered.
pub struct Committing(oneshot::Receiver<WriteOutcome>);

impl Committing {
    /// Wait for the batch's commit. (Only a writer thread that died while
    /// holding the batch loses it; the error says so.)
    pub async fn landed(&mut self) -> WriteOutcome {
        (&mut self.0)
            .await
            .unwrap_or_else(|_| Err(unwritten(StoreError::WriterGone, Vec::new())))
    }
}

/// What the writer thread is asked to do.
enum Request {
    Write(WriteRequest),
    /// Copy the WAL into the database and truncate it (a graceful stop), so
    /// that `holdfast.db` alone holds everything committed.
    Checkpoint(oneshot::Sender<Result<(), StoreError>>),
}

/// Cheap to clone; every clone talks to the same writer and reader pool.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    /// Held shared by every read for the whole of its query, and exclusively
    /// by [`Store::make_writable`] while it swaps read-only connections for a
    /// writer: so no read on a read-only connection (which may not see a
    /// writer's locks, see `read_only.rs`) overlaps a write.
    access: RwLock<Access>,
}

/// The connections of one mode: a writer and readers, or readers alone.
struct Access {
    /// None while the database is on a read-only file system.
    writer: Option<mpsc::Sender<Request>>,
    readers: ReaderPool,
}

struct ReaderPool {
    path: PathBuf,
    kind: ReaderKind,
    idle: Mutex<Vec<Connection>>,
}

/// How the pool opens a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderKind {
    /// Read-only connections beside the writer.
    Normal,
    /// A read-only file system: see `read_only.rs`.
    ReadOnly(read_only::Opening),
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How backup snapshots in the state directory are named.
const SNAPSHOT_PREFIX: &str = ".backup-";

impl Store {
    /// Open (creating if needed) the database at `path`, apply migrations and
    /// start the writer thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let writer = open_writer(path)?;
        Ok(Store::with(path, Some(writer), ReaderKind::Normal))
    }

    /// Open the database at `path` for a daemon's start: read-write, or
    /// read-only when the file system holding it is mounted read-only (see
    /// [`Store::is_read_only`]). Any other failure is an error.
    pub fn open_at_start(path: &Path) -> Result<Store, StoreError> {
        if !read_only::on_read_only_file_system(path) {
            match Store::open(path) {
                Ok(store) => return Ok(store),
                // Remounted read-only between the check and the open?
                Err(error) if read_only::on_read_only_file_system(path) => {
                    tracing::debug!(%error, "the database cannot be opened for writing");
                }
                Err(error) => return Err(error),
            }
        }
        Store::open_read_only(path)
    }

    /// Open an existing database for reading only, on a file system that
    /// cannot be written. Its schema must be the one this build writes.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let (conn, opening) = read_only::open(path)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let needed = schema::latest();
        if usize::try_from(found) != Ok(needed) {
            return Err(StoreError::SchemaOnReadOnly {
                path: path.to_path_buf(),
                found,
                needed,
            });
        }
        let store = Store::with(path, None, ReaderKind::ReadOnly(opening));
        store.access().readers.put_back(conn);
        Ok(store)
    }

    fn with(path: &Path, writer: Option<mpsc::Sender<Request>>, kind: ReaderKind) -> Store {
        Store {
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                access: RwLock::new(Access {
                    writer,
                    readers: ReaderPool {
                        path: path.to_path_buf(),
                        kind,
                        idle: Mutex::new(Vec::new()),
                    },
                }),
            }),
        }
    }

    /// True while the store has no writer (its file system was read-only).
    pub fn is_read_only(&self) -> bool {
        self.access().writer.is_none()
    }

    /// Give a read-only store its writer: open the database for writing,
    /// apply migrations and start the writer thread, then read through
    /// ordinary connections. Waits for reads in flight on the read-only
    /// connections, and holds new ones until done. A no-op on a store that
    /// already writes; on failure the store stays read-only. Blocking.
    pub fn make_writable(&self) -> Result<(), StoreError> {
        let mut access = self
            .shared
            .access
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if access.writer.is_some() {
            return Ok(());
        }
        // Close the read-only connections before the writer opens: SQLite
        // shares one mapping of the WAL index per database file within a
        // process, and one mapped read-only would leave the writer unable to
        // write. (On failure they reopen as they are needed.)
        access.readers.close();
        let writer = open_writer(&self.shared.path)?;
        access.writer = Some(writer);
        access.readers.kind = ReaderKind::Normal;
        Ok(())
    }

    fn access(&self) -> std::sync::RwLockReadGuard<'_, Access> {
        self.shared
            .access
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Commit `ops` in one transaction (possibly grouped with other callers'
    /// batches). Resolves once committed.
    pub async fn write(&self, ops: Vec<WriteOp>, durable: bool) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut committing = self.start_write(ops, durable, None).map_err(|u| u.error)?;
        committing.landed().await.map_err(|u| u.error)
    }

    /// Hand `ops` to the writer thread for one transaction and return at
    /// once: the caller goes on with other work while the commit (and its
    /// fsync) runs, and awaits the answer when it needs it. Refused at
    /// once, with the writes handed back, on a read-only store. With a
    /// `link`, the batch is applied only if the one it follows committed.
    pub fn start_write(
        &self,
        ops: Vec<WriteOp>,
        durable: bool,
        link: Option<Link>,
    ) -> Result<Committing, Box<Unwritten>> {
        let Some(writer) = self.access().writer.clone() else {
            let error = StoreError::ReadOnly {
                path: self.shared.path.clone(),
            };
            return Err(unwritten(error, ops));
        };
        let (reply, rx) = oneshot::channel();
        writer
            .send(Request::Write(WriteRequest {
                ops,
                durable,
                link,
                reply,
            }))
            .map_err(|refused| match refused.0 {
                Request::Write(request) => unwritten(StoreError::WriterGone, request.ops),
                Request::Checkpoint(_) => unwritten(StoreError::WriterGone, Vec::new()),
            })?;
        Ok(Committing(rx))
    }

    /// At a graceful stop, after the last write: checkpoint the WAL into the
    /// database and truncate it, so a copy of `holdfast.db` alone (or a lost
    /// `-wal` file) loses nothing. Idle read connections are closed first so
    /// none holds back the checkpoint. A no-op on a read-only store.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        let writer = {
            let access = self.access();
            access.readers.close();
            access.writer.clone()
        };
        let Some(writer) = writer else {
            return Ok(());
        };
        let (reply, rx) = oneshot::channel();
        writer
            .send(Request::Checkpoint(reply))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Run a read-only query on a pooled connection, off the async threads.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_now(f))
            .await
            .map_err(|_| StoreError::WriterGone)?
    }

    /// Remove backup snapshots a daemon that died while making one left in
    /// `dir` (see [`Store::snapshot`]). Call only while holding the state
    /// directory's lock, so no other daemon is making one.
    pub fn remove_stale_snapshots(dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(SNAPSHOT_PREFIX) && name.ends_with(".db") {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::info!(path = %entry.path().display(), "removed a backup snapshot left by an earlier daemon")
                    }
                    Err(error) => {
                        tracing::warn!(%error, path = %entry.path().display(), "cannot remove a backup snapshot left by an earlier daemon")
                    }
                }
            }
        }
    }

    /// A consistent copy of the database, as an open file already unlinked
    /// from `dir` (so a crash leaves nothing behind): `VACUUM INTO` on a
    /// read connection, one read transaction, so it holds exactly what was
    /// committed when it began, with no WAL beside it.
    pub async fn snapshot(&self, dir: &Path) -> Result<std::fs::File, StoreError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{SNAPSHOT_PREFIX}{}-{n}.db", std::process::id()));
        let target = path.clone();
        let made = self
            .read(move |conn| {
                conn.execute("VACUUM INTO ?1", [target.to_string_lossy().as_ref()])?;
                Ok(())
            })
            .await;
        let opened = made.and_then(|()| {
            std::fs::File::open(&path).map_err(|source| StoreError::Snapshot {
                path: path.clone(),
                source,
            })
        });
        if let Err(error) = std::fs::remove_file(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, path = %path.display(), "cannot remove a database snapshot");
        }
        opened
    }

    /// A long read that must see the database as it is now but need not
    /// hold up the caller: the read transaction begins here, on the calling
    /// thread (so it sees exactly what is committed now, whatever is
    /// written after), and `f` runs on a thread of its own; the answer
    /// arrives on the returned channel. For start-up, where a whole-table
    /// count would otherwise delay READY=1.
    pub fn read_from_now<T, F>(&self, f: F) -> oneshot::Receiver<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        // On a read-only store the engine, the only writer, is held back:
        // nothing can change before the thread reads, and its connection
        // comes from the pool under the access guard as every read's does
        // (see `make_writable`).
        let pinned = if self.is_read_only() {
            None
        } else {
            match self.access().readers.begin_read() {
                Ok(conn) => Some(conn),
                Err(error) => {
                    let _ = reply.send(Err(error));
                    return rx;
                }
            }
        };
        let store = self.clone();
        let spawned = std::thread::Builder::new()
            .name("store-reader".into())
            .spawn(move || {
                let result = match pinned {
                    Some(conn) => {
                        let result = f(&conn);
                        // The connection is not pooled again: a read-only
                        // pool may have been replaced meanwhile.
                        let _ = conn.execute_batch("COMMIT");
                        result
                    }
                    None => store.read_now(f),
                };
                let _ = reply.send(result);
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a store reader thread");
        }
        rx
    }

    /// A read on the calling thread (start-up and recovery only).
    pub fn read_now<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.access().readers.with(f)
    }
}

/// Open the database at `path` for writing, apply migrations and start the
/// writer thread.
fn open_writer(path: &Path) -> Result<mpsc::Sender<Request>, StoreError> {
    let mut conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let named = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    configure(&conn).map_err(|e| match e {
        StoreError::Sqlite(source) => named(source),
        other => other,
    })?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(named)?;
    schema::migrations()
        .to_latest(&mut conn)
        .map_err(|source| StoreError::Migrate {
            path: path.to_path_buf(),
            source,
        })?;
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || writer_loop(conn, rx))
        .map_err(StoreError::Thread)?;
    Ok(tx)
}

impl ReaderPool {
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match conn {
            Some(c) => c,
            None => self.connect()?,
        };
        let result = f(&conn);
        self.put_back(conn);
        result
    }

    /// A connection of its own with a read transaction begun: what it
    /// reads until `COMMIT` is what is committed now.
    fn begin_read(&self) -> Result<Connection, StoreError> {
        let conn = self.connect()?;
        conn.execute_batch("BEGIN")?;
        // A transaction takes its snapshot at its first read.
        conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |_| Ok(()))?;
        Ok(conn)
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let conn = match self.kind {
            ReaderKind::Normal => Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?,
            ReaderKind::ReadOnly(opening) => read_only::connect(&self.path, opening)?,
        };
        configure(&conn)?;
        Ok(conn)
    }

    /// Close every idle connection.
    fn close(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    fn put_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < 8
        {
            idle.push(conn);
        }
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// The writer thread: take every request waiting, apply them in one
/// transaction, answer all. A failed batch is retried request by request so
/// one bad request cannot fail the others; a request linked to one that
/// failed (or was itself sent back) is sent back unapplied.
fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Request>) {
    let mut synchronous_full = None;
    // A checkpoint asked for while a batch was gathered runs after it.
    let mut checkpoint: Option<oneshot::Sender<Result<(), StoreError>>> = None;
    // The last linked batch that was not committed.
    let mut broken: Option<u64> = None;
    loop {
        if let Some(reply) = checkpoint.take() {
            let _ = reply.send(truncate_wal(&conn));
        }
        let first = match rx.recv() {
            Ok(Request::Write(req)) => req,
            Ok(Request::Checkpoint(reply)) => {
                checkpoint = Some(reply);
                continue;
            }
            Err(_) => break,
        };
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(Request::Write(req)) => batch.push(req),
                Ok(Request::Checkpoint(reply)) => {
                    checkpoint = Some(reply);
                    break;
                }
                Err(_) => break,
            }
        }
        let batch: Vec<WriteRequest> = batch
            .into_iter()
            .filter_map(|req| {
                if follows_a_failure(req.link, &mut broken) {
                    let _ = req
                        .reply
                        .send(Err(unwritten(StoreError::AfterFailure, req.ops)));
                    return None;
                }
                Some(req)
            })
            .collect();
        if batch.is_empty() {
            continue;
        }
        let durable = batch.iter().any(|r| r.durable);
        if synchronous_full != Some(durable) {
            let mode = if durable { "FULL" } else { "NORMAL" };
            if conn.pragma_update(None, "synchronous", mode).is_ok() {
                synchronous_full = Some(durable);
            }
        }
        let all_ops = batch.iter().flat_map(|r| r.ops.iter());
        match apply(&mut conn, all_ops) {
            Ok(()) => {
                for req in batch {
                    let _ = req.reply.send(Ok(()));
                }
            }
            Err(e) => {
                let alone = batch.len() == 1;
                // The engine's linked batches first: one sent back behind a
                // failure is answered at once, not after every other
                // caller's write has waited out its own busy timeout (the
                // engine waits for that answer). Other callers' writes do
                // not depend on the engine's, nor on each other's order.
                let (mut batch, unlinked): (Vec<WriteRequest>, Vec<WriteRequest>) =
                    batch.into_iter().partition(|req| req.link.is_some());
                batch.extend(unlinked);
                for req in batch {
                    if follows_a_failure(req.link, &mut broken) {
                        let _ = req
                            .reply
                            .send(Err(unwritten(StoreError::AfterFailure, req.ops)));
                        continue;
                    }
                    let result = if alone {
                        Err(clone_error(&e))
                    } else {
                        apply(&mut conn, req.ops.iter())
                    };
                    if result.is_err()
                        && let Some(link) = req.link
                    {
                        broken = Some(link.seq);
                    }
                    let _ = req.reply.send(result.map_err(|e| unwritten(e, req.ops)));
                }
            }
        }
    }
}

/// Whether a request linked by `link` follows a batch that was not committed; if so it
/// is not committed either, and the next one linked to it is sent back too.
fn follows_a_failure(link: Option<Link>, broken: &mut Option<u64>) -> bool {
    match link {
        Some(link) if link.after.is_some() && link.after == *broken => {
            *broken = Some(link.seq);
            true
        }
        _ => false,
    }
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`: every frame of the WAL copied into
/// the database (fsynced) and the WAL emptied. SQLite answers `busy = 1`
/// when a reader kept it from finishing; that is an error here.
fn truncate_wal(conn: &Connection) -> Result<(), StoreError> {
    let (busy, _, _): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    if busy != 0 {
        return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("a reader kept the checkpoint from finishing".into()),
        )));
    }
    Ok(())
}

fn apply<'a>(
    conn: &mut Connection,
    ops: impl Iterator<Item = &'a WriteOp>,
) -> Result<(), StoreError> {
    let began = std::time::Instant::now();
    let tx = conn.transaction()?;
    let mut highest_new_job = None;
    for op in ops {
        op.apply(&tx)?;
        highest_new_job = highest_new_job.max(op.new_job_id());
    }
    if let Some(id) = highest_new_job {
        raise_high_water(&tx, id)?;
    }
    tx.commit()?;
    crate::metrics::global().store_commit(began.elapsed());
    Ok(())
}

fn clone_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(code, msg)) => {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, msg.clone()))
        }
        StoreError::WriterGone => StoreError::WriterGone,
        other => StoreError::Sqlite(rusqlite::Error::InvalidParameterName(other.to_string())),
    }
}

/// Milliseconds since the Unix epoch, the store's time unit.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit_row() -> WriteOp {
        WriteOp::Audit(Box::new(AuditRow {
            at: 1,
            uid: Some(0),
            user: None,
            pid: None,
            method: "job.submit",
            target: None,
            outcome: "ok".into(),
            detail: None,
        }))
    }

    fn event_row(id: u64) -> WriteOp {
        WriteOp::Event(Box::new(EventRow {
            id,
            kind: "job.submitted".into(),
            at: 1,
            job_id: None,
            chain: None,
            tenant: None,
            payload: "{}".into(),
        }))
    }

    fn insert_job(id: u64) -> WriteOp {
        WriteOp::InsertJob(Box::new(NewJob {
            id,
            target: "c".into(),
            chain: "c".into(),
            version: "v1".into(),
            params: "{}".into(),
            tenant: None,
            priority: 0,
            submitted_by: "root".into(),
            submitter_uid: Some(0),
            submitter_gid: Some(0),
            submitter_pid: None,
            retry_of: None,
            run_id: id,
            until: None,
            simulated: false,
            created_at: 1,
            scheduled_at: None,
            scheduled_zone: None,
            secrets: None,
            activities: vec![(0, "c.p.a".into())],
        }))
    }

    /// The high-water mark is raised once per transaction, to the highest
    /// id it created whatever the order of its jobs, never lowered, and
    /// outlives the jobs themselves.
    #[tokio::test]
    async fn a_batch_raises_the_job_id_high_water_mark_to_its_highest_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("t.db")).expect("open");
        let definition = WriteOp::Definition {
            version: "v1".into(),
            chain: "c".into(),
            file: "c.toml".into(),
            source: String::new(),
            loaded_at: 1,
        };
        let max = |store: &Store| store.read_now(max_job_id).expect("read");
        store
            .write(
                vec![definition, insert_job(5), insert_job(9), insert_job(7)],
                true,
            )
            .await
            .expect("batch");
        assert_eq!(max(&store), 9);
        store.write(vec![insert_job(3)], true).await.expect("lower");
        assert_eq!(max(&store), 9);
        Connection::open(dir.path().join("t.db"))
            .and_then(|conn| conn.execute_batch("DELETE FROM activities; DELETE FROM jobs"))
            .expect("delete");
        assert_eq!(max(&store), 9, "the mark outlives the jobs");
        store.write(vec![audit_row()], true).await.expect("no job");
        assert_eq!(max(&store), 9);
    }

    fn audit_count(store: &Store) -> i64 {
        store
            .read_now(|conn| {
                Ok(conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get::<_, i64>(0))?)
            })
            .expect("read")
    }

    /// A linked batch whose predecessor failed comes back unapplied, with
    /// its writes, and so does the one linked to it; an unlinked batch and
    /// a new sequence are written. Whether the writer takes the batches in
    /// one transaction or one by one, the outcome is the same.
    #[tokio::test]
    async fn batches_linked_to_a_failed_one_come_back_unapplied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("t.db")).expect("open");
        store.write(vec![event_row(1)], true).await.expect("first");
        for round in 0..20u64 {
            let base = round * 10;
            let link = |seq, after| Some(Link { seq, after });
            // The event id is taken: this batch fails.
            let mut failing = store
                .start_write(vec![event_row(1)], true, link(base + 1, None))
                .expect("handed over");
            let mut second = store
                .start_write(vec![audit_row()], true, link(base + 2, Some(base + 1)))
                .expect("handed over");
            let mut third = store
                .start_write(
                    vec![audit_row(), audit_row()],
                    false,
                    link(base + 3, Some(base + 2)),
                )
                .expect("handed over");
            let mut unlinked = store
                .start_write(vec![audit_row()], true, None)
                .expect("handed over");
            let failed = failing.landed().await.expect_err("a taken event id");
            assert!(
                !matches!(failed.error, StoreError::AfterFailure),
                "the first failure is its own: {}",
                failed.error
            );
            assert_eq!(failed.ops.len(), 1);
            let second = second.landed().await.expect_err("follows a failure");
            assert!(matches!(second.error, StoreError::AfterFailure));
            assert_eq!(second.ops.len(), 1, "its writes come back");
            let third = third.landed().await.expect_err("follows one sent back");
            assert!(matches!(third.error, StoreError::AfterFailure));
            assert_eq!(third.ops.len(), 2);
            unlinked.landed().await.expect("not linked: written");
            // A new sequence, once the failure was heard of, is written.
            let mut fresh = store
                .start_write(vec![audit_row()], true, link(base + 4, None))
                .expect("handed over");
            let mut after_fresh = store
                .start_write(vec![audit_row()], true, link(base + 5, Some(base + 4)))
                .expect("handed over");
            fresh.landed().await.expect("a new sequence");
            after_fresh.landed().await.expect("follows one written");
        }
        // Each round wrote the unlinked row and the new sequence's two.
        assert_eq!(audit_count(&store), 20 * 3);
    }

    /// `read_from_now` reads what was committed when it was called, not
    /// what its thread finds when it gets to run: a write committed in
    /// between is not seen, and a read after it is.
    #[tokio::test]
    async fn a_read_from_now_sees_the_store_as_it_was_when_called() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("t.db")).expect("open");
        store.write(vec![audit_row()], true).await.expect("first");
        let (go, wait) = mpsc::channel::<()>();
        let read = store.read_from_now(move |conn| {
            wait.recv().expect("released");
            Ok(conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get::<_, i64>(0))?)
        });
        store.write(vec![audit_row()], true).await.expect("second");
        go.send(()).expect("release");
        assert_eq!(read.await.expect("answered").expect("read"), 1);
        let now = store
            .read_now(|conn| {
                Ok(conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get::<_, i64>(0))?)
            })
            .expect("read");
        assert_eq!(now, 2);
    }
}
