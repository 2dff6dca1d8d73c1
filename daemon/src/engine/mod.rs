//! The engine: one task owns every queued and running job and reacts to a
//! closed set of events (RPC commands, attempt reports, timers, shutdown).
//!
//! Each turn of the loop takes every event waiting, applies them to the
//! in-memory state, collects the resulting writes and side effects, commits
//! the writes in one transaction and only then carries out the effects
//! (spawning processes, answering callers, waking watchers). So every
//! transition is committed before it is acted on or reported, and writes are
//! batched for free under load.
//!
//! The channels to the engine ([`wire`]) exist before the engine does: a
//! daemon whose state directory is read-only serves reads through its
//! [`EngineHandle`] while the engine is held back, and starts the engine
//! later with the same channels.

mod adopt;
pub mod backfill;
mod commit;
mod control;
mod events;
mod fanout;
mod handle;
mod handlers;
mod items;
mod items_recovery;
pub mod job;
mod policy;
mod queue;
mod recovery;
mod reload;
mod request;
mod run;
mod schedules;
mod slurm_array;
mod start;
mod submit;
mod waiting;

pub use handle::{EngineHandle, JobChange, Wiring, wire};

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use holdfast_api::{CancelOutcome, FieldError, JobState};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::executor::{self, AttemptSpec, ExecEvent, KillReason, LogHub};
use crate::registry::Registry;
use crate::settings::Settings;
use crate::store::{Store, StoreError, WriteOp};
pub use backfill::Backfill;
pub use job::JobRun;
pub use reload::ReloadError;
pub use schedules::{ScheduleAction, ScheduleControlError, ScheduleView};

/// Who made a request, from the socket's peer credentials.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups of the connecting process (SO_PEERGROUPS), as
    /// they were when it connected; empty where the kernel cannot tell.
    pub groups: Vec<u32>,
    pub pid: Option<u32>,
    pub user: String,
}

/// A submission, as the RPC layer passes it on.
#[derive(Debug)]
pub struct SubmitRequest {
    pub target: String,
    pub params: Map<String, Value>,
    pub tenant: Option<String>,
    pub priority: i32,
    pub simulate: bool,
    /// `--until PROCESS` (the target is then a chain).
    pub until: Option<String>,
    pub caller: Caller,
    /// The client's idempotency key (`request_id`), if it sent one.
    pub request_id: Option<String>,
    /// The instant it runs as of (`at`); the submission's without it.
    pub at: Option<holdfast_workflow::BusinessDate>,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("no chain named {0:?} is loaded; see `hfctl workflows`")]
    UnknownChain(String),
    #[error("invalid parameters")]
    Invalid(Vec<FieldError>),
    #[error("the job could not be stored: {0}")]
    Unavailable(String),
    #[error("the daemon is stopping and accepts no new jobs")]
    ShuttingDown,
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    PermissionDenied(String),
}

/// Counts for `daemon.info`.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub queued_jobs: usize,
    pub running_jobs: usize,
    pub running_activities: usize,
}

/// The closed set of things the engine reacts to, besides attempt reports.
#[derive(Debug)]
pub enum Command {
    Submit {
        request: SubmitRequest,
        reply: oneshot::Sender<Result<u64, SubmitError>>,
    },
    /// Reprocess a finished job (read by the caller from the store).
    Reprocess(Box<submit::ReprocessRequest>),
    Cancel {
        job_ids: Vec<u64>,
        reply: oneshot::Sender<Vec<CancelOutcome>>,
    },
    Counts {
        reply: oneshot::Sender<Counts>,
    },
    /// Why each of these jobs waits, for those that do.
    Waiting {
        job_ids: Vec<u64>,
        reply: oneshot::Sender<HashMap<u64, holdfast_api::Waiting>>,
    },
    /// A retry delay expired.
    RetryDue {
        job_id: u64,
        idx: usize,
        after: u32,
    },
    /// A fan-out item's retry delay expired.
    ItemRetryDue {
        job_id: u64,
        idx: usize,
        item: u32,
        after: u32,
    },
    /// A job's own timeout expired.
    JobTimeout {
        job_id: u64,
    },
    /// A cancelled job's handlers had their `kill_grace`.
    HandlersDue {
        job_id: u64,
    },
    /// Re-try writes that failed earlier.
    Flush,
    /// Re-read the workflows directory.
    Reload {
        reply: oneshot::Sender<Result<(), ReloadError>>,
    },
    /// A registry read on the blocking pool (`reload.rs`), or why the read
    /// failed.
    Reloaded {
        registry: Result<Box<Registry>, String>,
    },
    /// Chains refused for what the user database answered are due to be
    /// checked again (`run_as_recheck`).
    RecheckUsers,
    /// The scheduler's timer expired: run what is due.
    ScheduleTick,
    Schedules {
        reply: oneshot::Sender<Vec<ScheduleView>>,
    },
    ScheduleControl {
        chain: String,
        name: String,
        action: ScheduleAction,
        reply: oneshot::Sender<Result<ScheduleView, ScheduleControlError>>,
    },
    /// Submit (or with `dry_run`, list) the fires of a past range.
    ScheduleBackfill {
        chain: String,
        name: String,
        /// Planned by [`backfill::plan`], oldest first.
        fires: Vec<chrono::DateTime<chrono::Utc>>,
        reply: oneshot::Sender<Result<Backfill, ScheduleControlError>>,
    },
    /// Stop accepting work, interrupt running attempts, answer when all ended.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A side effect, carried out only after the batch's writes committed.
enum Effect {
    Submitted(oneshot::Sender<Result<u64, SubmitError>>, u64),
    Cancelled(oneshot::Sender<Vec<CancelOutcome>>, Vec<CancelOutcome>),
    Spawn(Box<AttemptSpec>, oneshot::Receiver<KillReason>),
    Kill(oneshot::Sender<KillReason>, KillReason),
    Timer(Duration, Command),
    JobTimer(u64, Duration),
    Changed(u64),
    ScheduleChanged(
        oneshot::Sender<Result<ScheduleView, ScheduleControlError>>,
        Result<ScheduleView, ScheduleControlError>,
    ),
    Backfilled(
        oneshot::Sender<Result<Backfill, ScheduleControlError>>,
        Result<Backfill, ScheduleControlError>,
    ),
}

/// A submission whose job row is being committed; it joins the engine's
/// state only once that succeeded.
struct PendingJob {
    job: JobRun,
    reply: oneshot::Sender<Result<u64, SubmitError>>,
}

pub struct Engine {
    settings: Arc<Settings>,
    /// The daemon's cgroup subtree, when attempts get cgroups.
    cgroups: Option<Arc<crate::cgroup::Cgroups>>,
    /// Submits and watches attempts run by the Slurm executor.
    slurm: Arc<executor::slurm::Client>,
    store: Store,
    registry: watch::Sender<Arc<Registry>>,
    changes: broadcast::Sender<JobChange>,
    hub: LogHub,
    commands_tx: mpsc::Sender<Command>,
    exec_tx: mpsc::Sender<ExecEvent>,
    held: watch::Sender<Option<Arc<str>>>,
    /// Seals jobs' secret parameter values; the error says why secrets
    /// cannot be kept (jobs without secrets run regardless).
    secrets: Result<Arc<crate::secrets::Sealer>, String>,

    jobs: HashMap<u64, JobRun>,
    /// Jobs waiting for their chain's `concurrency`, per chain, or per
    /// chain and tenant (`JobRun::concurrency_key`).
    queued: HashMap<String, queue::Queue>,
    admitted_per_chain: HashMap<String, usize>,
    dirty_chains: HashSet<String>,
    /// Admitted jobs with a ready activity and room under their
    /// `max_parallel`, by priority then age.
    ready_jobs: BTreeSet<(Reverse<i32>, u64)>,
    /// Attempts running across all jobs.
    running: usize,
    next_job_id: u64,
    error_counter: u64,
    shutting_down: Option<Vec<oneshot::Sender<()>>>,
    /// How the previous daemon ended: the words for the attempts it left
    /// running.
    last_stop: crate::store::clean_stop::LastStop,
    schedules: std::collections::BTreeMap<(String, String), schedules::ScheduleRun>,
    schedule_timer: Option<tokio::task::AbortHandle>,
    /// Schedules whose chain or rule went away, as they were: one that
    /// comes back takes up its pause and last fire from here.
    retired_schedules: HashMap<(String, String), schedules::ScheduleRun>,
    /// Events written with their transitions (`events.rs`).
    outbox: events::Outbox,
    /// Definition versions already written (or in a batch that will be
    /// retried until it is): a submission writes its chain's definition
    /// only the first time, not the whole source text with every job.
    recorded_versions: HashSet<String>,
    /// Reloads under way and asked for.
    reloads: reload::Reloads,

    /// The batches handed to the store and not yet answered, oldest first
    /// (at most `commit::DEPTH`).
    in_flight: std::collections::VecDeque<commit::InFlight>,
    /// The number of the last batch handed to the store (`store::Link`).
    batch_seq: u64,
    /// Commands about jobs whose first commit is under way, taken again
    /// once it lands.
    deferred: Vec<Command>,
    // The batch being built.
    ops: Vec<WriteOp>,
    durable: bool,
    effects: Vec<Effect>,
    pending_jobs: Vec<PendingJob>,
    progress_dirty: HashSet<(u64, usize)>,
    /// Activities whose checkpoint, or outputs, changed in this batch: only
    /// the last value is written, as for progress.
    checkpoint_dirty: HashSet<(u64, usize)>,
    outputs_dirty: HashSet<(u64, usize)>,
    /// Fan-out items whose checkpoint or outputs changed in this batch.
    item_dirty: HashSet<(u64, usize, u32)>,
    /// Slurm attempts whose control file was read further in this batch:
    /// the offset is committed with what its lines changed.
    control_offsets: HashMap<executor::AttemptKey, u64>,
}

impl Engine {
    /// Build the engine on `wiring`, with the workflows it holds, resume
    /// what a previous daemon left unfinished, and return it. Call
    /// [`Engine::run`] to start it.
    pub fn start(
        settings: Arc<Settings>,
        store: Store,
        wiring: Wiring,
    ) -> Result<(Engine, mpsc::Receiver<Command>, mpsc::Receiver<ExecEvent>), StoreError> {
        let Wiring {
            commands_tx,
            commands_rx,
            registry: registry_tx,
            changes,
            events: events_tx,
            notifier: notifier_tx,
            hub,
            held,
            slurm_health,
        } = wiring;
        let mut outbox = events::Outbox::new(
            store.read_now(crate::store::max_event_id)?,
            events_tx,
            notifier_tx,
        );
        outbox.want(crate::notify::rules_of(&settings.notify, &registry_tx.borrow()).iter());
        let (exec_tx, exec_rx) = mpsc::channel(8192);
        let next_job_id = store.read_now(crate::store::max_job_id)? + 1;
        // Before recovery: attempt cgroups an earlier daemon left are killed.
        let cgroups = crate::cgroup::setup(&settings.cgroup).cgroups().cloned();
        let slurm = executor::slurm::Client::start(&settings, slurm_health);
        // No attempt runs yet: secret files a crashed daemon left go now.
        crate::secret_files::clear(&settings.socket);
        // A missing key is made anew only while nothing was sealed with
        // the old one: otherwise every job keeping secrets would fail.
        let key = settings.secrets_key();
        if !key.exists() {
            let sealed = store.read_now(crate::store::sealed_jobs)?;
            if sealed > 0 {
                return Err(StoreError::SecretsKeyMissing {
                    path: key,
                    jobs: sealed,
                });
            }
        }
        let last_stop = crate::store::clean_stop::take(&settings.state_dir);
        let secrets = crate::secrets::Sealer::open_or_create(&key)
            .map(Arc::new)
            .map_err(|e| {
                tracing::error!(error = %e, "jobs with secret parameters cannot be run");
                e.to_string()
            });
        let mut engine = Engine {
            secrets,
            cgroups,
            slurm,
            settings,
            store,
            registry: registry_tx,
            changes,
            hub,
            commands_tx,
            exec_tx,
            held,
            jobs: HashMap::new(),
            queued: HashMap::new(),
            admitted_per_chain: HashMap::new(),
            dirty_chains: HashSet::new(),
            ready_jobs: BTreeSet::new(),
            running: 0,
            next_job_id,
            error_counter: 0,
            shutting_down: None,
            last_stop,
            schedules: std::collections::BTreeMap::new(),
            schedule_timer: None,
            retired_schedules: HashMap::new(),
            outbox,
            ops: Vec::new(),
            durable: false,
            in_flight: std::collections::VecDeque::with_capacity(commit::DEPTH),
            batch_seq: 0,
            deferred: Vec::new(),
            effects: Vec::new(),
            pending_jobs: Vec::new(),
            progress_dirty: HashSet::new(),
            checkpoint_dirty: HashSet::new(),
            outputs_dirty: HashSet::new(),
            item_dirty: HashSet::new(),
            control_offsets: HashMap::new(),
            recorded_versions: HashSet::new(),
            reloads: reload::Reloads::default(),
        };
        engine.record_definitions();
        engine.recover()?;
        let stored = schedules::load_states(&engine.store)?;
        engine.sync_schedules(Some(stored));
        engine.startup_catch_up();
        Ok((engine, commands_rx, exec_rx))
    }

    /// Store every loaded chain's definition so jobs can be pinned to it.
    fn record_definitions(&mut self) {
        let registry = self.registry.borrow().clone();
        let now = crate::store::now_ms();
        for entry in registry.entries.values() {
            if let Some(chain) = &entry.chain {
                self.record_definition(chain, now);
            }
        }
    }

    /// Write `chain`'s definition version unless it already was. (The
    /// table is never pruned and a failed batch keeps its writes for the
    /// retry, so a version once pushed stays recorded.)
    fn record_definition(&mut self, chain: &holdfast_workflow::Chain, now: i64) {
        if self.recorded_versions.contains(&chain.version) {
            return;
        }
        self.recorded_versions.insert(chain.version.clone());
        self.ops.push(WriteOp::Definition {
            version: chain.version.clone(),
            chain: chain.name.clone(),
            file: chain.file.display().to_string(),
            source: chain.source.clone(),
            loaded_at: now,
        });
    }

    /// The event loop. Returns after a shutdown has completed.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut exec: mpsc::Receiver<ExecEvent>,
    ) {
        // From here on commands are answered: the handle stops saying the
        // engine is held back, and callers may send.
        self.held.send_replace(None);
        self.arm_users_recheck();
        // Writes from recovery, and the first scheduling round.
        let mut more = true;
        loop {
            if !more {
                tokio::select! {
                    biased;
                    outcome = commit::landed(&mut self.in_flight), if !self.in_flight.is_empty() => {
                        if !self.landed(outcome).await {
                            // Failed: tried again on the next command (a
                            // flush is due in a second), not at once.
                            continue;
                        }
                    }
                    Some(event) = exec.recv() => self.on_exec(event),
                    Some(command) = commands.recv() => self.on_command(command),
                    else => break,
                }
            }
            // Take everything else already waiting, up to a bound so one
            // turn stays short.
            for _ in 0..1024 {
                match exec.try_recv() {
                    Ok(event) => self.on_exec(event),
                    Err(_) => break,
                }
            }
            for _ in 0..256 {
                match commands.try_recv() {
                    Ok(command) => self.on_command(command),
                    Err(_) => break,
                }
            }
            self.schedule();
            more = self.commit();
            if self.shutdown_complete() {
                break;
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Submit { request, reply } => self.submit(request, reply),
            Command::Reprocess(request) => self.reprocess(*request),
            // A job whose first commit is under way is known to whoever
            // read the store (the batch may have committed already): its
            // command waits for that commit instead of calling it unknown.
            Command::Cancel { job_ids, reply } if job_ids.iter().any(|id| self.is_pending(*id)) => {
                self.deferred.push(Command::Cancel { job_ids, reply });
            }
            Command::Waiting { job_ids, reply }
                if job_ids.iter().any(|id| self.is_pending(*id)) =>
            {
                self.deferred.push(Command::Waiting { job_ids, reply });
            }
            Command::Cancel { job_ids, reply } => {
                let outcomes = job_ids.into_iter().map(|id| self.cancel(id)).collect();
                self.durable = true;
                self.effects.push(Effect::Cancelled(reply, outcomes));
            }
            Command::Counts { reply } => {
                let queued = self
                    .jobs
                    .values()
                    .filter(|j| j.state == JobState::Queued)
                    .count();
                let _ = reply.send(Counts {
                    queued_jobs: queued,
                    running_jobs: self.jobs.len() - queued,
                    running_activities: self.running,
                });
            }
            Command::RetryDue { job_id, idx, after } => self.retry_due(job_id, idx, after),
            Command::ItemRetryDue {
                job_id,
                idx,
                item,
                after,
            } => self.item_retry_due(job_id, idx, item, after),
            Command::JobTimeout { job_id } => self.job_timeout(job_id),
            Command::HandlersDue { job_id } => self.handlers_due(job_id),
            Command::Flush => {}
            Command::Reload { reply } => self.reload_asked(reply),
            Command::Reloaded { registry } => self.reloaded(registry),
            Command::RecheckUsers => self.recheck_users(),
            Command::ScheduleTick => self.schedule_tick(),
            Command::Schedules { reply } => {
                let _ = reply.send(self.schedule_views());
            }
            Command::Waiting { job_ids, reply } => {
                let _ = reply.send(self.waiting_of(&job_ids));
            }
            Command::ScheduleControl {
                chain,
                name,
                action,
                reply,
            } => {
                // Answered after the commit, like every other change.
                let result = self.schedule_control(&chain, &name, action);
                self.durable = true;
                self.effects.push(Effect::ScheduleChanged(reply, result));
            }
            Command::ScheduleBackfill {
                chain,
                name,
                fires,
                reply,
            } => {
                let result = self.schedule_backfill(&chain, &name, fires);
                self.effects.push(Effect::Backfilled(reply, result));
            }
            Command::Shutdown { reply } => self.begin_shutdown(reply),
        }
    }

    fn on_exec(&mut self, event: ExecEvent) {
        match event {
            ExecEvent::Started {
                key,
                pid,
                start_time,
            } => {
                self.record_pid(key, executor::StartedPid { pid, start_time });
                // A pid reported on its own is news to watchers (one that
                // rides on an end or a control message comes with theirs).
                self.effects.push(Effect::Changed(key.job_id));
            }
            ExecEvent::Control {
                key,
                message,
                offset,
                held,
            } => {
                self.on_control(key, message, offset);
                // The attempt's reader may send more.
                drop(held);
            }
            ExecEvent::Ended { key, end, started } => {
                // An attempt that ended before its pid was reported: the
                // pid is written in the batch of its end, before it.
                if let Some(started) = started {
                    self.record_pid(key, started);
                }
                self.on_attempt_end(key, end);
            }
            ExecEvent::Detached { key } => self.on_detached(key),
            ExecEvent::SlurmSubmitted { key, slurm_job_id } => match key.item {
                Some(item) => self.ops.push(WriteOp::ItemSlurmJob {
                    job_id: key.job_id,
                    idx: key.idx,
                    item,
                    attempt: key.number,
                    slurm_job_id: Some(slurm_job_id),
                    task_job_id: None,
                }),
                None => self.ops.push(WriteOp::AttemptSlurmJob {
                    job_id: key.job_id,
                    idx: key.idx,
                    number: key.number,
                    slurm_job_id,
                }),
            },
            ExecEvent::SlurmTaskJob { key, task_job_id } => {
                if let Some(item) = key.item {
                    self.ops.push(WriteOp::ItemSlurmJob {
                        job_id: key.job_id,
                        idx: key.idx,
                        item,
                        attempt: key.number,
                        slurm_job_id: None,
                        task_job_id: Some(task_job_id),
                    });
                }
            }
        }
    }

    /// Write an attempt's (or a fan-out item's) pid and start time.
    fn record_pid(&mut self, key: executor::AttemptKey, started: executor::StartedPid) {
        let executor::StartedPid { pid, start_time } = started;
        self.ops.push(match key.item {
            None => WriteOp::AttemptPid {
                job_id: key.job_id,
                idx: key.idx,
                number: key.number,
                pid,
                pid_start: start_time,
            },
            Some(item) => WriteOp::ItemPid {
                job_id: key.job_id,
                idx: key.idx,
                item,
                pid,
                pid_start: start_time,
            },
        });
    }

    fn begin_shutdown(&mut self, reply: oneshot::Sender<()>) {
        self.stop_users_recheck();
        let waiters = self.shutting_down.get_or_insert_with(Vec::new);
        waiters.push(reply);
        tracing::info!(
            running = self.running,
            "stopping: interrupting running activities"
        );
        for job in self.jobs.values_mut() {
            for act in &mut job.acts {
                if let Some(kill) = act.kill.take() {
                    self.effects.push(Effect::Kill(kill, KillReason::Shutdown));
                }
                for run in act.fanout.iter_mut().flat_map(|f| f.live.values_mut()) {
                    if let Some(kill) = run.kill.take() {
                        self.effects.push(Effect::Kill(kill, KillReason::Shutdown));
                    }
                }
            }
        }
    }

    fn shutdown_complete(&mut self) -> bool {
        if self.running > 0 || !self.ops.is_empty() || !self.in_flight.is_empty() {
            return false;
        }
        match self.shutting_down.take() {
            Some(waiters) => {
                for waiter in waiters {
                    let _ = waiter.send(());
                }
                true
            }
            None => false,
        }
    }

    /// A fresh error id: unique per failure, quoted in logs and the journal.
    fn error_id(&mut self) -> String {
        self.error_counter += 1;
        format!(
            "E{:X}-{:04X}",
            crate::store::now_ms(),
            self.error_counter & 0xFFFF
        )
    }
}
