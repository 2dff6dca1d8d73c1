//! The JSON-RPC method trait. Method names are a contract; every method takes
//! its parameters by name. `holdfastd` implements the generated
//! `HoldfastServer`; `hfctl` and the tests call through `HoldfastClient`.

// `job.submit` takes six named parameters; the server method jsonrpsee
// generates from it adds `self` and the extensions, and lint attributes on
// the trait do not reach the generated code.
#![allow(clippy::too_many_arguments)]

use jsonrpsee::core::{RpcResult, SubscriptionResult};
use jsonrpsee::proc_macros::rpc;
use serde_json::{Map, Value};

use crate::types::ConnectionSummary;
use crate::types::ItemPage;
use crate::types::Stats;
use crate::types::{
    AuditEntry, BackfillResult, BackupChunk, CancelOutcome, DaemonInfo, Job, JobList, LogChunk,
    Plan, ScheduleInfo, SubmitResult, TenantSummary, WorkflowDetail, WorkflowSummary,
};
use crate::types::{Delivery, Event, JobState};

#[rpc(server, client)]
pub trait Holdfast {
    /// Version, protocol number, pid, uptime, mode, paths and counts.
    #[method(name = "daemon.info", param_kind = map)]
    async fn daemon_info(&self) -> RpcResult<DaemonInfo>;

    /// Queue one run of `target` (`chain`, `chain.process` or
    /// `chain.process.activity`). Answers once the job is durably committed.
    /// `simulate`: run it through the engine with every activity replaced by
    /// its `[simulate]` stand-in (a no-op that succeeds by default).
    /// `request_id`: a client idempotency key; the same key from the same
    /// uid answers with the first job instead of making another.
    /// `until` (a process name; `target` is then the chain alone): run that
    /// process and every process it depends on through `after`, nothing
    /// else. In `params`, `null` is no value (an optional parameter
    /// without a default stays absent).
    /// `at`: the instant the job runs as of (`schedule.at`), read in the
    /// daemon's zone; the submission's instant without it.
    #[method(name = "job.submit", param_kind = map, with_extensions)]
    #[allow(clippy::too_many_arguments)]
    async fn job_submit(
        &self,
        target: String,
        params: Option<Map<String, Value>>,
        tenant: Option<String>,
        priority: Option<i32>,
        simulate: Option<bool>,
        request_id: Option<String>,
        until: Option<String>,
        at: Option<String>,
    ) -> RpcResult<SubmitResult>;

    /// Check a submission and return what it would run, creating no job
    /// (`hfctl submit --dry-run`). Same parameters and errors as `job.submit`;
    /// `at` renders it as of that instant instead of now.
    #[method(name = "job.plan", param_kind = map, with_extensions)]
    async fn job_plan(
        &self,
        target: String,
        params: Option<Map<String, Value>>,
        tenant: Option<String>,
        until: Option<String>,
        at: Option<String>,
    ) -> RpcResult<Plan>;

    /// One job with its activities and attempts.
    #[method(name = "job.get", param_kind = map)]
    async fn job_get(&self, job_id: u64) -> RpcResult<Job>;

    /// A fan-out's items (`activity` is `process.activity` or
    /// `chain.process.activity`) in index order from `offset` (0), at most
    /// `limit` (100, at most 1000) with the counts by state.
    #[method(name = "job.items", param_kind = map)]
    async fn job_items(
        &self,
        job_id: u64,
        activity: String,
        offset: Option<u32>,
        limit: Option<u32>,
    ) -> RpcResult<ItemPage>;

    /// Recent jobs, newest first. `before` pages: pass the previous answer's
    /// `next_before`. `limit` is 1–1000 (50 when not given); `tenant` keeps
    /// that tenant's jobs; `since` (a duration back from now such as `7d`,
    /// a date `YYYY-MM-DD` in the daemon's zone, or an RFC 3339 instant)
    /// keeps jobs created at or after it.
    #[method(name = "job.list", param_kind = map)]
    async fn job_list(
        &self,
        state: Option<String>,
        chain: Option<String>,
        limit: Option<u32>,
        before: Option<u64>,
        tenant: Option<String>,
        since: Option<String>,
    ) -> RpcResult<JobList>;

    /// Cancel queued or running jobs.
    #[method(name = "job.cancel", param_kind = map, with_extensions)]
    async fn job_cancel(&self, job_ids: Vec<u64>) -> RpcResult<Vec<CancelOutcome>>;

    /// Reprocess a finished job: a new job linked to it (`retry_of`), on the
    /// same definition version, target and parameters, that re-runs what
    /// failed, was cancelled or skipped and keeps what succeeded (with its
    /// outputs). `from_start` re-runs everything; `from` (a process name)
    /// re-runs that process and every process after it, even where they
    /// succeeded. Activities a handler `undoes` always run again.
    #[method(name = "job.retry", param_kind = map, with_extensions)]
    async fn job_retry(
        &self,
        job_id: u64,
        from_start: Option<bool>,
        from: Option<String>,
    ) -> RpcResult<SubmitResult>;

    /// Read an attempt's log from `offset`. `activity` is `process.activity`
    /// or `chain.process.activity`; without it the job must have exactly one
    /// activity. Without `attempt`, the latest attempt.
    #[method(name = "job.logs", param_kind = map)]
    async fn job_logs(
        &self,
        job_id: u64,
        activity: Option<String>,
        attempt: Option<u32>,
        offset: Option<u64>,
        max_bytes: Option<u64>,
    ) -> RpcResult<LogChunk>;

    /// Follow an attempt's log: chunks as they are written, then a close
    /// notification when the attempt has ended.
    #[subscription(name = "job.follow_logs" => "job.log", unsubscribe = "job.unfollow_logs", item = LogChunk, param_kind = map, with_extensions)]
    async fn job_follow_logs(
        &self,
        job_id: u64,
        activity: Option<String>,
        attempt: Option<u32>,
        offset: Option<u64>,
    ) -> SubscriptionResult;

    /// Watch a job: its state after every change, ending with the terminal one.
    #[subscription(name = "job.watch" => "job.changed", unsubscribe = "job.unwatch", item = Job, param_kind = map, with_extensions)]
    async fn job_watch(&self, job_id: u64) -> SubscriptionResult;

    /// Every chain, loaded or broken, with load errors.
    #[method(name = "workflow.list", param_kind = map)]
    async fn workflow_list(&self) -> RpcResult<Vec<WorkflowSummary>>;

    /// An OpenRPC document describing every method, built at run time so
    /// that `job.submit` carries a JSON Schema of each loaded chain's
    /// parameters.
    #[method(name = "rpc.discover", param_kind = map)]
    async fn discover(&self) -> RpcResult<Value>;

    /// Every schedule of every loaded chain, with its next and last fire.
    #[method(name = "schedule.list", param_kind = map)]
    async fn schedule_list(&self) -> RpcResult<Vec<ScheduleInfo>>;

    /// Stop a schedule from firing until resumed (kept across restarts).
    #[method(name = "schedule.pause", param_kind = map, with_extensions)]
    async fn schedule_pause(&self, name: String) -> RpcResult<ScheduleInfo>;

    /// Let a paused schedule fire again; fires missed while paused are not run.
    #[method(name = "schedule.resume", param_kind = map, with_extensions)]
    async fn schedule_resume(&self, name: String) -> RpcResult<ScheduleInfo>;

    /// Fire a schedule now (its jobs as a fire would submit them), as of
    /// `at` (read in the schedule's zone) when given.
    #[method(name = "schedule.trigger", param_kind = map, with_extensions)]
    async fn schedule_trigger(&self, name: String, at: Option<String>) -> RpcResult<ScheduleInfo>;

    /// Submit one fire of a schedule per instant its rule gives in
    /// [`from`, `to`] (dates read in the schedule's zone; a date as `to`
    /// includes that whole day), oldest first, at most 1,000. `dry_run`
    /// lists the instants and submits nothing.
    #[method(name = "schedule.backfill", param_kind = map, with_extensions)]
    async fn schedule_backfill(
        &self,
        name: String,
        from: String,
        to: String,
        dry_run: Option<bool>,
    ) -> RpcResult<BackfillResult>;

    /// Every tenant file, loaded or broken.
    #[method(name = "tenant.list", param_kind = map)]
    async fn tenant_list(&self) -> RpcResult<Vec<TenantSummary>>;

    /// The audit trail, newest first.
    #[method(name = "audit.list", param_kind = map)]
    async fn audit_list(
        &self,
        limit: Option<u32>,
        before: Option<u64>,
    ) -> RpcResult<Vec<AuditEntry>>;

    /// Re-read the workflows directory now (the daemon also does so when a
    /// file changes, and on SIGHUP). Answers with the registry afterwards.
    #[method(name = "config.reload", param_kind = map, with_extensions)]
    async fn config_reload(&self) -> RpcResult<Vec<WorkflowSummary>>;

    /// One chain's parameters, processes and activities.
    #[method(name = "workflow.get", param_kind = map)]
    async fn workflow_get(&self, name: String) -> RpcResult<WorkflowDetail>;

    /// A consistent copy of the whole database (every job's parameters
    /// included), for root, the daemon's user and operator_groups members.
    /// The daemon snapshots it and streams the bytes; the caller writes
    /// them, with its own rights, so the daemon never writes a file a caller
    /// names.
    #[subscription(name = "store.backup" => "store.backup_chunk", unsubscribe = "store.backup_cancel", item = BackupChunk, param_kind = map, with_extensions)]
    async fn store_backup(&self) -> SubscriptionResult;

    /// Every connection profile, loaded or broken, and the chains using
    /// it. Fields (hosts, ports) only for operators; secret values never.
    #[method(name = "connection.list", param_kind = map, with_extensions)]
    async fn connection_list(&self) -> RpcResult<Vec<ConnectionSummary>>;
    /// Events of the outbox (job, activity and schedule transitions) the
    /// caller may see: those after `since` first (from the database, kept
    /// for a while), then live, without gap or duplicate. Without `since`,
    /// only events from now on. Filters: `chain`, `tenant`, `kinds`,
    /// `states`. With `follow = false` the subscription closes once it has
    /// sent what was recorded when it began.
    #[subscription(name = "events.subscribe" => "events.event", unsubscribe = "events.unsubscribe", item = Event, param_kind = map, with_extensions)]
    async fn events_subscribe(
        &self,
        since: Option<u64>,
        chain: Option<String>,
        tenant: Option<String>,
        kinds: Option<Vec<String>>,
        states: Option<Vec<JobState>>,
        follow: Option<bool>,
    ) -> SubscriptionResult;

    /// Notification deliveries, newest first; `failed`: only those that
    /// failed or are being retried.
    #[method(name = "notification.list", param_kind = map)]
    async fn notification_list(
        &self,
        failed: Option<bool>,
        limit: Option<u32>,
    ) -> RpcResult<Vec<Delivery>>;

    /// Deliver a notification again now (operators only).
    #[method(name = "notification.retry", param_kind = map, with_extensions)]
    async fn notification_retry(&self, id: u64) -> RpcResult<Delivery>;

    /// Runs, success rate, retries, duration and queue-wait percentiles,
    /// peak memory and CPU per chain and per activity, over jobs created
    /// since `since` (a duration back from now such as `7d`, or an RFC 3339
    /// instant; 7 days by default). `target`: `CHAIN[.PROCESS[.ACTIVITY]]`.
    #[method(name = "stats.get", param_kind = map)]
    async fn stats_get(
        &self,
        target: Option<String>,
        since: Option<String>,
        tenant: Option<String>,
    ) -> RpcResult<Stats>;
}
