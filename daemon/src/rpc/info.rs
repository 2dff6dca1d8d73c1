//! `daemon.info`: the handshake (version, protocol), paths and counts.

use holdfast_api::{DaemonCounts, DaemonInfo, DaemonPaths, PROTOCOL_VERSION};
use jsonrpsee::core::RpcResult;

use super::RpcServer;
use crate::store::{now_ms, rfc3339};

pub(super) async fn handle(server: &RpcServer) -> RpcResult<DaemonInfo> {
    let mut counts = server.engine.counts().await;
    if server.engine.held().is_some() {
        // No engine to ask: what the database says (unfinished work waits
        // for the state directory to be writable).
        if let Ok((queued, running, attempts)) =
            server.store.read(crate::store::stored_counts).await
        {
            counts.queued_jobs = queued;
            counts.running_jobs = running;
            counts.running_activities = attempts;
        }
    }
    let registry = server.engine.registry.borrow().clone();
    let slurm_health = server.engine.slurm_health.borrow().clone();
    let settings = &server.settings;
    Ok(DaemonInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
        started_at: rfc3339(server.started_at),
        uptime_seconds: ((now_ms() - server.started_at).max(0) / 1000) as u64,
        mode: settings.mode.as_str().to_string(),
        max_parallel: settings.max_parallel,
        paths: DaemonPaths {
            config: settings.config.display().to_string(),
            workflows_dir: settings.workflows_dir.display().to_string(),
            tenants_dir: settings.tenants_dir.display().to_string(),
            connections_dir: settings.connections_dir.display().to_string(),
            state_dir: settings.state_dir.display().to_string(),
            socket: settings.socket.display().to_string(),
            database: settings.database().display().to_string(),
        },
        counts: DaemonCounts {
            chains: registry.loaded_count(),
            broken_chains: registry.broken_count(),
            queued_jobs: counts.queued_jobs,
            running_jobs: counts.running_jobs,
            running_activities: counts.running_activities,
        },
        confinement: crate::cgroup::host().describe(),
        slurm: crate::executor::slurm::describe_health(slurm_health),
    })
}
