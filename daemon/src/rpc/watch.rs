//! `job.watch`: the job after its changes, ending with its terminal state.
//!
//! A job of thousands of activities changes thousands of times; sending the
//! whole tree after each change would cost more than running it. So a full
//! snapshot goes out at most every [`MIN_INTERVAL`], and for a job whose
//! snapshot takes long to read and serialise, at most once per
//! [`COST_SHARE`] times that work (up to [`MAX_INTERVAL`]): a watcher spends
//! about a fiftieth of the time on snapshots while each takes under 100 ms,
//! and at most one snapshot per 5 s beyond. The cheap state check after
//! every change makes sure the terminal snapshot is sent at once. The
//! check reads the store only when the engine could not vouch that the
//! job goes on ([`crate::engine::JobChange::live`]).
//!
//! A watcher that does not read is not sent more snapshots than its
//! connection's queue has room for: while the queue is half full, a due
//! snapshot is put off (the next one supersedes it, so nothing is lost but
//! intermediate states), and only the terminal snapshot waits for room.

use std::time::Duration;

use holdfast_api::ErrorCode;
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::{PendingSubscriptionSink, SubscriptionSink};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::RpcServer;
use crate::store;

const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// The time between two snapshots is at least this many times what the
/// last one took to read and serialise (a 2,000-activity job's takes 10 to
/// 20 ms on a small host, so one goes out every 0.5 to 1 s).
const COST_SHARE: u32 = 50;
/// However slow a snapshot, one goes out at least this often while the job
/// changes.
const MAX_INTERVAL: Duration = Duration::from_secs(5);

/// Time to wait after a snapshot that took `cost` before the next.
fn interval_after(cost: Duration) -> Duration {
    (cost * COST_SHARE).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// True while the connection's message queue is at least half full: the
/// client is not keeping up, so a snapshot that a later one supersedes is
/// better not queued.
fn backlogged(sink: &SubscriptionSink) -> bool {
    sink.max_capacity() - sink.capacity() >= (sink.max_capacity() / 2).max(1)
}

pub(super) async fn handle(
    server: &RpcServer,
    pending: PendingSubscriptionSink,
    job_id: u64,
) -> SubscriptionResult {
    // Subscribe before the first read so no change falls in between.
    let mut changes = server.engine.changes.subscribe();
    // The job, and how long reading it took the reader (not the wait for
    // a reader, nor the engine's answer on why it waits).
    let snapshot = || {
        let store = server.store.clone();
        async move {
            let (mut job, read) = store
                .read(move |conn| {
                    let began = std::time::Instant::now();
                    let job = store::get_job(conn, job_id)?;
                    Ok((job, began.elapsed()))
                })
                .await?;
            if let Some(job) = job.as_mut() {
                super::get::with_waiting(server, job).await;
            }
            Ok::<_, store::StoreError>(job.map(|job| (job, read)))
        }
    };
    let Some((job, _)) = snapshot().await.map_err(|e| e.to_string())? else {
        pending
            .reject(ErrorCode::NotFound.error(format!("job {job_id} does not exist")))
            .await;
        return Ok(());
    };
    let sink = pending.accept().await?;
    if job.state.is_terminal() {
        sink.send(serde_json::value::to_raw_value(&job)?).await?;
        return Err(format!("job {job_id} finished").into());
    }
    sink.send(serde_json::value::to_raw_value(&job)?).await?;
    let mut last_sent = Instant::now();
    let mut interval = MIN_INTERVAL;
    // A change seen but not yet sent as a snapshot.
    let mut unsent = false;
    loop {
        let due = last_sent + interval;
        let event = tokio::select! {
            r = changes.recv() => Some(r),
            () = tokio::time::sleep_until(due), if unsent => None,
            () = sink.closed() => return Ok(()),
        };
        match event {
            Some(Ok(change)) if change.job_id != job_id => continue,
            // Known to go on: no need to read its state.
            Some(Ok(change)) if change.live && Instant::now() < due => {
                unsent = true;
                continue;
            }
            Some(Ok(change)) if change.live => {}
            Some(Ok(_)) | Some(Err(RecvError::Lagged(_))) => {
                let state = server
                    .store
                    .read(move |conn| store::job_state(conn, job_id))
                    .await
                    .map_err(|e| e.to_string())?;
                match state {
                    None => return Err(format!("job {job_id} was deleted").into()),
                    Some(s) if s.is_terminal() => break,
                    Some(_) if Instant::now() < due => {
                        unsent = true;
                        continue;
                    }
                    Some(_) => {}
                }
            }
            Some(Err(RecvError::Closed)) => return Err("the daemon is stopping".into()),
            None => {}
        }
        if backlogged(&sink) {
            // Look again when the next snapshot would be due.
            last_sent = Instant::now();
            unsent = true;
            continue;
        }
        let Some((job, read)) = snapshot().await.map_err(|e| e.to_string())? else {
            return Err(format!("job {job_id} was deleted").into());
        };
        let terminal = job.state.is_terminal();
        let began = Instant::now();
        let message = serde_json::value::to_raw_value(&job)?;
        interval = interval_after(read + began.elapsed());
        sink.send(message).await?;
        last_sent = Instant::now();
        unsent = false;
        if terminal {
            return Err(format!("job {job_id} finished").into());
        }
    }
    let Some((job, _)) = snapshot().await.map_err(|e| e.to_string())? else {
        return Err(format!("job {job_id} was deleted").into());
    };
    sink.send(serde_json::value::to_raw_value(&job)?).await?;
    Err(format!("job {job_id} finished").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_snapshots_are_spaced_out_within_bounds() {
        assert_eq!(interval_after(Duration::from_micros(300)), MIN_INTERVAL);
        assert_eq!(
            interval_after(Duration::from_millis(10)),
            Duration::from_millis(500)
        );
        assert_eq!(interval_after(Duration::from_secs(1)), MAX_INTERVAL);
    }
}
