//! `job.logs` and the `job.follow_logs` subscription: reading an attempt's
//! log file by offset, and streaming it as it grows.
//!
//! A follower is fed only as fast as it reads: each chunk waits for room in
//! its connection's bounded message queue before the next one is read from
//! the file, so a client that never reads costs the daemon at most that
//! queue and one chunk per subscription, however much the log grows (the
//! rest stays in the file, and the follower gets it, nothing skipped, once
//! it reads again).

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use holdfast_api::{ErrorCode, LogChunk};
use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::{RpcResult, SubscriptionResult};
use jsonrpsee::types::ErrorObjectOwned;

use super::{RpcServer, store_error};
use crate::executor::{AttemptKey, logs::log_path};
use crate::store::{self, AttemptRef};

const DEFAULT_CHUNK: u64 = 1 << 20;
const MAX_CHUNK: u64 = 16 << 20;
/// Largest chunk a follower is sent at once: with the connection's queue of
/// a few such messages, what a follower that does not read can pin.
const FOLLOW_CHUNK: u64 = 64 << 10;

async fn resolve(
    server: &RpcServer,
    job_id: u64,
    activity: Option<String>,
    attempt: Option<u32>,
) -> Result<Result<AttemptRef, String>, ErrorObjectOwned> {
    server
        .store
        .read(move |conn| store::find_attempt(conn, job_id, activity.as_deref(), attempt))
        .await
        .map_err(store_error)
}

fn file_of(server: &RpcServer, job_id: u64, at: &AttemptRef) -> PathBuf {
    log_path(&server.settings.logs_dir(), job_id, &at.path, at.number)
}

/// Read up to `max` bytes at `offset`. A missing file reads as empty.
fn read_at(path: &PathBuf, offset: u64, max: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    if offset >= size {
        return Ok((Vec::new(), size));
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    file.take(max).read_to_end(&mut data)?;
    Ok((data, size))
}

fn chunk(at: &AttemptRef, offset: u64, data: &[u8], size: u64, finished: bool) -> LogChunk {
    let next_offset = offset + data.len() as u64;
    LogChunk {
        activity: at.path.clone(),
        attempt: at.number,
        offset,
        next_offset,
        data: String::from_utf8_lossy(data).into_owned(),
        complete: finished && next_offset >= size,
        dropped: at.log_dropped,
        log_error: at.log_error.clone(),
    }
}

fn io_error(e: std::io::Error) -> ErrorObjectOwned {
    tracing::error!(error = %e, "cannot read a log file");
    ErrorObjectOwned::owned::<()>(-32603, "cannot read the log file", None)
}

pub(super) async fn handle(
    server: &RpcServer,
    job_id: u64,
    activity: Option<String>,
    attempt: Option<u32>,
    offset: Option<u64>,
    max_bytes: Option<u64>,
) -> RpcResult<LogChunk> {
    let at = resolve(server, job_id, activity, attempt)
        .await?
        .map_err(|m| ErrorCode::NotFound.error(m))?;
    let offset = offset.unwrap_or(0);
    if at.log_error.is_some() {
        // There is no file to read; the chunk says why.
        return Ok(chunk(&at, offset, &[], offset, at.finished));
    }
    let path = file_of(server, job_id, &at);
    let max = max_bytes.unwrap_or(DEFAULT_CHUNK).clamp(1, MAX_CHUNK);
    let (data, size) = tokio::task::spawn_blocking(move || read_at(&path, offset, max))
        .await
        .map_err(|_| ErrorObjectOwned::owned::<()>(-32603, "log read failed", None))?
        .map_err(io_error)?;
    Ok(chunk(&at, offset, &data, size, at.finished))
}

pub(super) async fn follow(
    server: &RpcServer,
    pending: PendingSubscriptionSink,
    job_id: u64,
    activity: Option<String>,
    attempt: Option<u32>,
    offset: Option<u64>,
) -> SubscriptionResult {
    let mut changes = server.engine.changes.subscribe();
    // Wait until the activity has an attempt to follow (it may not have
    // started yet), waking on the job's changes rather than polling.
    let mut first = resolve(server, job_id, activity.clone(), attempt)
        .await
        .map_err(|e| e.message().to_string())?;
    let at = loop {
        match first {
            Ok(at) => break at,
            Err(message) if message.contains("has not started") => {
                let state = server
                    .store
                    .read(move |conn| store::job_state(conn, job_id))
                    .await
                    .map_err(|e| e.to_string())?;
                if state.is_some_and(|s| s.is_terminal()) {
                    pending.reject(ErrorCode::NotFound.error(message)).await;
                    return Ok(());
                }
                loop {
                    match changes.recv().await {
                        Ok(change) if change.job_id == job_id => break,
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(_) => return Err("the daemon is stopping".into()),
                    }
                }
                first = resolve(server, job_id, activity.clone(), attempt)
                    .await
                    .map_err(|e| e.message().to_string())?;
            }
            Err(message) => {
                pending.reject(ErrorCode::NotFound.error(message)).await;
                return Ok(());
            }
        }
    };
    let sink = pending.accept().await?;
    let key = AttemptKey {
        job_id,
        idx: at.idx,
        number: at.number,
        item: at.item,
    };
    let path = file_of(server, job_id, &at);
    let mut offset = offset.unwrap_or(0);
    loop {
        // Take the growth signal before reading so no write is missed.
        let mut growth = server.engine.logs.watch(key);
        let live = growth.is_some();
        let p = path.clone();
        let (data, size) = tokio::task::spawn_blocking(move || read_at(&p, offset, FOLLOW_CHUNK))
            .await
            .map_err(|_| "log read failed".to_string())?
            .map_err(|e| e.to_string())?;
        if !data.is_empty() {
            let piece = chunk(&at, offset, &data, size, false);
            offset = piece.next_offset;
            let message = serde_json::value::to_raw_value(&piece)?;
            // Waits while the connection's queue is full (the client does
            // not read): no more of the file is read meanwhile.
            sink.send(message).await?;
            continue;
        }
        if !live {
            // Not running: either finished (send the end) or about to be
            // registered by the executor (re-check on the next change).
            let again = resolve(server, job_id, Some(at.path.clone()), Some(at.number))
                .await
                .map_err(|e| e.message().to_string())?;
            if let Ok(now) = again
                && now.finished
            {
                let mut last = chunk(&now, offset, &[], offset, true);
                last.complete = true;
                sink.send(serde_json::value::to_raw_value(&last)?).await?;
                return Err(format!("{} attempt {} finished", at.path, at.number).into());
            }
            tokio::select! {
                _ = changes.recv() => {}
                () = sink.closed() => return Ok(()),
            }
            continue;
        }
        if let Some(rx) = growth.as_mut() {
            tokio::select! {
                // Sender dropped means the attempt ended: loop to finish.
                _ = rx.changed() => {}
                _ = changes.recv() => {}
                () = sink.closed() => return Ok(()),
            }
        }
    }
}
