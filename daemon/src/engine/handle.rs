//! The engine's handle and wiring: the channels between the engine task
//! and everyone else (the RPC layer, `main`, the notifier), made before the
//! engine starts, and the handle's calls, each a `Command` and its answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use holdfast_api::CancelOutcome;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::{
    Backfill, Caller, Command, Counts, ScheduleAction, ScheduleControlError, ScheduleView,
    SubmitError, SubmitRequest,
};
use crate::executor::{self, LogHub};
use crate::registry::Registry;

/// How long `job.get`, `job.list` and `job.watch` wait for the engine to
/// say why jobs wait before they answer without it.
const WAITING_ANSWER: Duration = Duration::from_millis(100);

/// A change to a job, sent once the commit holding it has landed.
#[derive(Debug, Clone, Copy)]
pub struct JobChange {
    pub job_id: u64,
    /// The job is still queued or running in the engine, so as committed
    /// it has not ended either: a job that ends leaves the engine and its
    /// id never comes back (a retry is a new job). A watcher need not read
    /// the store to know it goes on. False when it may have ended.
    pub live: bool,
}

/// The handle the RPC layer and `main` hold.
#[derive(Clone)]
pub struct EngineHandle {
    pub(super) commands: mpsc::Sender<Command>,
    pub registry: watch::Receiver<Arc<Registry>>,
    /// A job each time one of its states changed (after the commit).
    pub changes: broadcast::Sender<JobChange>,
    /// The last event id committed to the outbox (`events.subscribe`).
    pub events: watch::Receiver<u64>,
    /// The last event id committed of a kind a notification rule names.
    pub notifier: watch::Receiver<u64>,
    pub logs: LogHub,
    /// Why the engine is held back from starting; None from the moment its
    /// loop runs.
    pub(super) held: watch::Receiver<Option<Arc<str>>>,
    /// How the Slurm executor's last query went (`hfctl info`).
    pub slurm_health: watch::Receiver<executor::slurm::Health>,
}

/// The engine's side of the channels [`wire`] makes; [`Engine::start`]
/// takes it.
pub struct Wiring {
    pub(super) commands_tx: mpsc::Sender<Command>,
    pub(super) commands_rx: mpsc::Receiver<Command>,
    pub(super) registry: watch::Sender<Arc<Registry>>,
    pub(super) changes: broadcast::Sender<JobChange>,
    pub(super) events: watch::Sender<u64>,
    pub(super) notifier: watch::Sender<u64>,
    pub(super) hub: LogHub,
    pub(super) held: watch::Sender<Option<Arc<str>>>,
    pub(super) slurm_health: watch::Sender<executor::slurm::Health>,
}

/// Make the channels between the engine and everyone else, with the
/// workflows loaded so far. `held` says why the engine will not start now
/// (None when it is about to).
pub fn wire(registry: Registry, held: Option<String>) -> (EngineHandle, Wiring) {
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let (registry_tx, registry_rx) = watch::channel(Arc::new(registry));
    let (changes, _) = broadcast::channel(4096);
    let (events_tx, events_rx) = watch::channel(0);
    let (notifier_tx, notifier_rx) = watch::channel(0);
    let hub = LogHub::default();
    let (held_tx, held_rx) = watch::channel(held.map(Arc::from));
    let (slurm_health_tx, slurm_health) = watch::channel(executor::slurm::Health::default());
    let handle = EngineHandle {
        slurm_health,
        commands: commands_tx.clone(),
        registry: registry_rx,
        changes: changes.clone(),
        events: events_rx,
        notifier: notifier_rx,
        logs: hub.clone(),
        held: held_rx,
    };
    let wiring = Wiring {
        commands_tx,
        commands_rx,
        registry: registry_tx,
        changes,
        events: events_tx,
        notifier: notifier_tx,
        hub,
        held: held_tx,
        slurm_health: slurm_health_tx,
    };
    (handle, wiring)
}

impl Wiring {
    /// Replace the workflows the handle shows, before the engine starts
    /// (once it runs, it reloads them itself).
    pub fn set_registry(&self, registry: Registry) {
        self.registry.send_replace(Arc::new(registry));
    }
}

impl EngineHandle {
    /// Why the engine is held back from starting (the state directory is
    /// read-only), or None once it runs. It never goes back to held.
    pub fn held(&self) -> Option<Arc<str>> {
        self.held.borrow().clone()
    }

    /// Ask the engine loop; None when it is held back (nothing would
    /// answer yet) or has stopped.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        if self.held.borrow().is_some() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn submit(&self, request: SubmitRequest) -> Result<u64, SubmitError> {
        self.ask(|reply| Command::Submit { request, reply })
            .await
            .unwrap_or(Err(SubmitError::ShuttingDown))
    }

    pub async fn reprocess(
        &self,
        original: crate::store::StoredJob,
        from_start: bool,
        from: Option<String>,
        caller: Caller,
    ) -> Result<u64, SubmitError> {
        self.ask(|reply| {
            Command::Reprocess(Box::new(super::submit::ReprocessRequest {
                original,
                from_start,
                from,
                caller,
                reply,
                checked: None,
            }))
        })
        .await
        .unwrap_or(Err(SubmitError::ShuttingDown))
    }

    pub async fn cancel(&self, job_ids: Vec<u64>) -> Vec<CancelOutcome> {
        self.ask(|reply| Command::Cancel { job_ids, reply })
            .await
            .unwrap_or_default()
    }

    pub async fn counts(&self) -> Counts {
        self.ask(|reply| Command::Counts { reply })
            .await
            .unwrap_or_default()
    }

    /// The counts, answered by the engine loop itself; None once it has
    /// stopped. The systemd watchdog is fed only when this answers.
    pub async fn probe(&self) -> Option<Counts> {
        self.ask(|reply| Command::Counts { reply }).await
    }

    /// Why each of `job_ids` waits (`Job::waiting`); empty while the
    /// engine is held back or stopped, or when it does not answer within
    /// [`WAITING_ANSWER`]: reads must not hang on a busy engine.
    pub async fn waiting(&self, job_ids: Vec<u64>) -> HashMap<u64, holdfast_api::Waiting> {
        if job_ids.is_empty() {
            return HashMap::new();
        }
        let ask = self.ask(|reply| Command::Waiting { job_ids, reply });
        tokio::time::timeout(WAITING_ANSWER, ask)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    pub async fn schedules(&self) -> Vec<ScheduleView> {
        self.ask(|reply| Command::Schedules { reply })
            .await
            .unwrap_or_default()
    }

    pub async fn schedule_control(
        &self,
        chain: String,
        name: String,
        action: ScheduleAction,
    ) -> Result<ScheduleView, ScheduleControlError> {
        self.ask(|reply| Command::ScheduleControl {
            chain,
            name,
            action,
            reply,
        })
        .await
        .unwrap_or(Err(ScheduleControlError::Stopping))
    }

    /// Submit the fires of a backfill planned by [`backfill::plan`].
    pub async fn schedule_backfill(
        &self,
        chain: String,
        name: String,
        fires: Vec<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Backfill, ScheduleControlError> {
        self.ask(|reply| Command::ScheduleBackfill {
            chain,
            name,
            fires,
            reply,
        })
        .await
        .unwrap_or(Err(ScheduleControlError::Stopping))
    }

    /// Re-read the workflows directory; resolves once a registry read
    /// after this call is in place.
    pub async fn reload(&self) -> Result<(), super::ReloadError> {
        if self.held.borrow().is_some() {
            return Err(super::ReloadError::NotStarted);
        }
        self.ask(|reply| Command::Reload { reply })
            .await
            .unwrap_or(Err(super::ReloadError::Stopping))
    }

    /// Ask the engine to stop; resolves once every attempt has ended.
    pub async fn shutdown(&self) {
        let _ = self.ask(|reply| Command::Shutdown { reply }).await;
    }
}
