//! The SQLite store: one writer thread that group-commits batches of
//! [`WriteOp`]s, and a small pool of read-only connections for queries.
//!
//! The database runs in WAL mode so readers never wait for the writer. Each
//! batch is one transaction. Batches that acknowledge something to a client
//! (`durable`) commit with `synchronous = FULL`, so an acknowledged job
//! survives power loss; engine transitions commit with `NORMAL`, which is
//! durable against a crash of the daemon (the WAL is in the OS's hands) and
//! fsyncs at checkpoints.

mod read;
pub mod schema;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

pub use read::*;
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
}

impl StoreError {
    /// True when the error means the disk cannot take writes now (full,
    /// read-only, I/O error), as opposed to a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::WriterGone => true,
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
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Cheap to clone; every clone talks to the same writer and reader pool.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<WriteRequest>,
    readers: Arc<ReaderPool>,
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Open (creating if needed) the database at `path`, apply migrations and
    /// start the writer thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
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
        let (tx, rx) = mpsc::channel::<WriteRequest>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(StoreError::Thread)?;
        Ok(Store {
            writer: tx,
            readers: Arc::new(ReaderPool {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Commit `ops` in one transaction (possibly grouped with other callers'
    /// batches). Resolves once committed.
    pub async fn write(&self, ops: Vec<WriteOp>, durable: bool) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(WriteRequest {
                ops,
                durable,
                reply,
            })
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Run a read-only query on a pooled connection, off the async threads.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.with(f))
            .await
            .map_err(|_| StoreError::WriterGone)?
    }

    /// A read on the calling thread (start-up and recovery only).
    pub fn read_now<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.readers.with(f)
    }
}

impl ReaderPool {
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&c)?;
                c
            }
        };
        let result = f(&conn);
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < 8
        {
            idle.push(conn);
        }
        result
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
/// one bad request cannot fail the others.
fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<WriteRequest>) {
    let mut synchronous_full = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
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
            Err(_) if batch.len() > 1 => {
                for req in batch {
                    let result = apply(&mut conn, req.ops.iter());
                    let _ = req.reply.send(result);
                }
            }
            Err(e) => {
                for req in batch {
                    let _ = req.reply.send(Err(clone_error(&e)));
                }
            }
        }
    }
}

fn apply<'a>(
    conn: &mut Connection,
    ops: impl Iterator<Item = &'a WriteOp>,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    for op in ops {
        op.apply(&tx)?;
    }
    tx.commit()?;
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
