//! `job.watch`: the job after every change, ending with its terminal state.

use holdfast_api::ErrorCode;
use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::SubscriptionResult;
use tokio::sync::broadcast::error::RecvError;

use super::RpcServer;
use crate::store;

pub(super) async fn handle(
    server: &RpcServer,
    pending: PendingSubscriptionSink,
    job_id: u64,
) -> SubscriptionResult {
    // Subscribe before the first read so no change falls in between.
    let mut changes = server.engine.changes.subscribe();
    let read = |server: &RpcServer| {
        let store = server.store.clone();
        async move { store.read(move |conn| store::get_job(conn, job_id)).await }
    };
    let Some(job) = read(server).await.map_err(|e| e.to_string())? else {
        pending
            .reject(ErrorCode::NotFound.error(format!("job {job_id} does not exist")))
            .await;
        return Ok(());
    };
    let sink = pending.accept().await?;
    let mut terminal = job.state.is_terminal();
    sink.send(serde_json::value::to_raw_value(&job)?).await?;
    while !terminal {
        let changed = tokio::select! {
            r = changes.recv() => r,
            () = sink.closed() => return Ok(()),
        };
        match changed {
            Ok(id) if id != job_id => continue,
            Ok(_) | Err(RecvError::Lagged(_)) => {
                // Coalesce a burst of changes into one read.
                while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
                    changes.try_recv()
                {}
            }
            Err(RecvError::Closed) => return Err("the daemon is stopping".into()),
        }
        let Some(job) = read(server).await.map_err(|e| e.to_string())? else {
            return Err(format!("job {job_id} was deleted").into());
        };
        terminal = job.state.is_terminal();
        sink.send(serde_json::value::to_raw_value(&job)?).await?;
    }
    Err(format!("job {job_id} finished").into())
}
