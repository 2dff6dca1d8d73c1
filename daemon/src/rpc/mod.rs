//! The JSON-RPC surface: the `HoldfastServer` implementation, delegating
//! each method to the file of the same name, and conversions between engine
//! errors and JSON-RPC error objects.
//!
//! While the engine is held back (the daemon started on a read-only state
//! directory) every method that changes state is refused here with
//! UNAVAILABLE, before it reaches the engine; reads go on, from the store.

mod audit;
mod backup;
mod cancel;
mod connection;
mod discover;
mod envelope;
mod events;
mod get;
mod info;
mod items;
mod limits;
mod list;
mod logs;
mod named_params;
mod notification;
mod plan;
mod protocol;
mod retry;
mod schedule;
mod since;
pub mod socket;
mod socket_group;
mod stats;
mod submit;
mod tenant;
mod watch;
mod workflow;
mod ws_relay;

use std::sync::Arc;

use holdfast_api::ConnectionSummary;
use holdfast_api::rpc::HoldfastServer;
use holdfast_api::{
    AuditEntry, BackfillResult, CancelOutcome, DaemonInfo, ErrorCode, ItemPage, Job, JobList,
    LogChunk, Plan, ScheduleInfo, SubmitResult, TenantSummary, WorkflowDetail, WorkflowSummary,
};
use jsonrpsee::core::{RpcResult, SubscriptionResult, async_trait};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::{Extensions, PendingSubscriptionSink};
use serde_json::{Map, Value};

use crate::engine::{Caller, EngineHandle, ScheduleAction};
use crate::settings::Settings;
use crate::store::{AuditRow, Store, StoreError, WriteOp, now_ms};

/// Shared by every connection.
#[derive(Clone)]
pub struct RpcServer {
    pub engine: EngineHandle,
    pub store: Store,
    pub settings: Arc<Settings>,
    pub started_at: i64,
}

impl RpcServer {
    /// A server over an empty store and registry in `dir`, for unit tests
    /// that look at what the server registers.
    #[cfg(test)]
    pub(crate) fn for_tests(dir: &std::path::Path) -> RpcServer {
        use crate::settings::{Mode, Overrides};
        let settings = Settings::load(&Overrides {
            config: Some(dir.join("absent.toml")),
            socket: Some(dir.join("hf.sock")),
            state_dir: Some(dir.join("state")),
            workflows_dir: Some(dir.join("w")),
            tenants_dir: None,
            connections_dir: None,
            mode: Some(Mode::User),
        })
        .expect("settings");
        let store = Store::open(&dir.join("hf.db")).expect("store");
        let (engine, _wiring) = crate::engine::wire(crate::registry::Registry::default(), None);
        RpcServer {
            engine,
            store,
            settings: Arc::new(settings),
            started_at: 0,
        }
    }
}

/// A store failure as the caller sees it: no paths, no internals.
pub(crate) fn store_error(error: StoreError) -> ErrorObjectOwned {
    tracing::error!(%error, "store read failed");
    if error.is_unavailable() {
        ErrorCode::Unavailable.error("the daemon's store is unavailable; try again shortly")
    } else {
        ErrorObjectOwned::owned::<()>(-32603, "internal error reading the store", None)
    }
}

/// A refused submission as a JSON-RPC error.
pub(crate) fn submit_error(target: &str, error: crate::engine::SubmitError) -> ErrorObjectOwned {
    use crate::engine::SubmitError;
    match error {
        SubmitError::Invalid(fields) => {
            let summary = fields
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; ");
            ErrorCode::InvalidParameters.error_with(
                format!("invalid parameters for {target}: {summary}"),
                fields,
            )
        }
        e @ SubmitError::UnknownChain(_) => ErrorCode::NotFound.error(e.to_string()),
        e @ SubmitError::InvalidState(_) => ErrorCode::InvalidState.error(e.to_string()),
        e @ SubmitError::PermissionDenied(_) => ErrorCode::PermissionDenied.error(e.to_string()),
        e @ (SubmitError::Unavailable(_) | SubmitError::ShuttingDown) => {
            ErrorCode::Unavailable.error(e.to_string())
        }
    }
}

/// The caller recorded for the connection, or an anonymous one if the
/// request did not come through the socket (never happens in practice).
pub(crate) fn caller(ext: &Extensions) -> Caller {
    ext.get::<Caller>().cloned().unwrap_or(Caller {
        uid: u32::MAX,
        gid: u32::MAX,
        groups: Vec::new(),
        pid: None,
        user: "unknown".into(),
    })
}

/// A subscription slot of the caller's uid (see [`limits::Limits`]), held
/// for as long as the subscription lasts, or the refusal to reject it with.
/// `None` when the request did not come through the socket (nothing to
/// count against).
fn subscription_slot(ext: &Extensions) -> Result<Option<limits::Permit>, ErrorObjectOwned> {
    let Some(limits) = ext.get::<Arc<limits::Limits>>() else {
        return Ok(None);
    };
    let who = caller(ext);
    match limits.subscribe(who.uid, crate::access::is_admin(&who)) {
        Ok(permit) => Ok(Some(permit)),
        Err(refused) => {
            tracing::debug!(uid = who.uid, user = %who.user, "subscription refused: {refused}");
            Err(ErrorCode::Unavailable.error(refused.to_string()))
        }
    }
}

impl RpcServer {
    /// Let a call that changes state through only when the engine runs;
    /// while it is held back (the state directory is read-only), refuse it
    /// with UNAVAILABLE and the reason. Such a refusal cannot be audited
    /// (nothing can be written), so it is logged. The engine is never held
    /// back again once it runs, so a call let through reaches a running
    /// engine, and one refused got the read-only answer.
    fn writable(&self, method: &'static str, ext: &Extensions) -> RpcResult<()> {
        match self.engine.held() {
            None => Ok(()),
            Some(reason) => {
                let who = caller(ext);
                tracing::info!(method, user = %who.user, uid = who.uid, "refused: {reason}");
                Err(ErrorCode::Unavailable.error(reason.to_string()))
            }
        }
    }

    /// Record a mutating call in the audit table.
    pub(crate) async fn audit(
        &self,
        caller: &Caller,
        method: &'static str,
        target: Option<String>,
        outcome: &str,
        detail: Option<String>,
    ) {
        let row = AuditRow {
            at: now_ms(),
            uid: Some(caller.uid),
            user: Some(caller.user.clone()),
            pid: caller.pid,
            method,
            target,
            outcome: outcome.to_string(),
            detail,
        };
        if let Err(error) = self
            .store
            .write(vec![WriteOp::Audit(Box::new(row))], false)
            .await
        {
            tracing::error!(%error, method, "cannot write the audit row");
        }
    }
}

#[async_trait]
impl HoldfastServer for RpcServer {
    async fn daemon_info(&self) -> RpcResult<DaemonInfo> {
        info::handle(self).await
    }

    async fn job_submit(
        &self,
        ext: &Extensions,
        target: String,
        params: Option<Map<String, Value>>,
        tenant: Option<String>,
        priority: Option<i32>,
        simulate: Option<bool>,
        request_id: Option<String>,
        until: Option<String>,
        at: Option<String>,
    ) -> RpcResult<SubmitResult> {
        self.writable("job.submit", ext)?;
        submit::handle(
            self,
            caller(ext),
            target,
            params,
            tenant,
            priority,
            simulate.unwrap_or(false),
            request_id,
            until,
            at,
        )
        .await
    }

    async fn job_plan(
        &self,
        ext: &Extensions,
        target: String,
        params: Option<Map<String, Value>>,
        tenant: Option<String>,
        until: Option<String>,
        at: Option<String>,
    ) -> RpcResult<Plan> {
        plan::handle(self, caller(ext), target, params, tenant, until, at).await
    }

    async fn discover(&self) -> RpcResult<Value> {
        Ok(discover::handle(self))
    }

    async fn schedule_list(&self) -> RpcResult<Vec<ScheduleInfo>> {
        schedule::list(self).await
    }

    async fn schedule_pause(&self, ext: &Extensions, name: String) -> RpcResult<ScheduleInfo> {
        self.writable("schedule.pause", ext)?;
        schedule::control(self, caller(ext), name, ScheduleAction::Pause).await
    }

    async fn schedule_resume(&self, ext: &Extensions, name: String) -> RpcResult<ScheduleInfo> {
        self.writable("schedule.resume", ext)?;
        schedule::control(self, caller(ext), name, ScheduleAction::Resume).await
    }

    async fn schedule_trigger(
        &self,
        ext: &Extensions,
        name: String,
        at: Option<String>,
    ) -> RpcResult<ScheduleInfo> {
        self.writable("schedule.trigger", ext)?;
        schedule::control(self, caller(ext), name, ScheduleAction::Trigger { at }).await
    }

    async fn schedule_backfill(
        &self,
        ext: &Extensions,
        name: String,
        from: String,
        to: String,
        dry_run: Option<bool>,
    ) -> RpcResult<BackfillResult> {
        self.writable("schedule.backfill", ext)?;
        schedule::backfill(self, caller(ext), name, from, to, dry_run.unwrap_or(false)).await
    }

    async fn tenant_list(&self) -> RpcResult<Vec<TenantSummary>> {
        tenant::list(self)
    }

    async fn stats_get(
        &self,
        target: Option<String>,
        since: Option<String>,
        tenant: Option<String>,
    ) -> RpcResult<holdfast_api::Stats> {
        stats::handle(self, target, since, tenant).await
    }

    async fn job_get(&self, job_id: u64) -> RpcResult<Job> {
        get::handle(self, job_id).await
    }

    async fn job_items(
        &self,
        job_id: u64,
        activity: String,
        offset: Option<u32>,
        limit: Option<u32>,
    ) -> RpcResult<ItemPage> {
        items::handle(self, job_id, activity, offset, limit).await
    }

    async fn job_list(
        &self,
        state: Option<String>,
        chain: Option<String>,
        limit: Option<u32>,
        before: Option<u64>,
        tenant: Option<String>,
        since: Option<String>,
    ) -> RpcResult<JobList> {
        list::handle(self, state, chain, limit, before, tenant, since).await
    }

    async fn job_cancel(
        &self,
        ext: &Extensions,
        job_ids: Vec<u64>,
    ) -> RpcResult<Vec<CancelOutcome>> {
        self.writable("job.cancel", ext)?;
        cancel::handle(self, caller(ext), job_ids).await
    }

    async fn job_retry(
        &self,
        ext: &Extensions,
        job_id: u64,
        from_start: Option<bool>,
        from: Option<String>,
    ) -> RpcResult<SubmitResult> {
        self.writable("job.retry", ext)?;
        retry::handle(self, caller(ext), job_id, from_start.unwrap_or(false), from).await
    }

    async fn audit_list(
        &self,
        limit: Option<u32>,
        before: Option<u64>,
    ) -> RpcResult<Vec<AuditEntry>> {
        audit::handle(self, limit, before).await
    }

    async fn job_logs(
        &self,
        job_id: u64,
        activity: Option<String>,
        attempt: Option<u32>,
        offset: Option<u64>,
        max_bytes: Option<u64>,
    ) -> RpcResult<LogChunk> {
        logs::handle(self, job_id, activity, attempt, offset, max_bytes).await
    }

    async fn job_follow_logs(
        &self,
        pending: PendingSubscriptionSink,
        ext: &Extensions,
        job_id: u64,
        activity: Option<String>,
        attempt: Option<u32>,
        offset: Option<u64>,
    ) -> SubscriptionResult {
        let _slot = match subscription_slot(ext) {
            Ok(slot) => slot,
            Err(refused) => {
                pending.reject(refused).await;
                return Ok(());
            }
        };
        logs::follow(self, pending, job_id, activity, attempt, offset).await
    }

    async fn job_watch(
        &self,
        pending: PendingSubscriptionSink,
        ext: &Extensions,
        job_id: u64,
    ) -> SubscriptionResult {
        let _slot = match subscription_slot(ext) {
            Ok(slot) => slot,
            Err(refused) => {
                pending.reject(refused).await;
                return Ok(());
            }
        };
        watch::handle(self, pending, job_id).await
    }

    async fn workflow_list(&self) -> RpcResult<Vec<WorkflowSummary>> {
        workflow::list(self)
    }

    async fn config_reload(&self, ext: &Extensions) -> RpcResult<Vec<WorkflowSummary>> {
        self.writable("config.reload", ext)?;
        let who = caller(ext);
        if !crate::access::is_operator(&who, &self.settings) {
            let message = "reloading is for root, the daemon's user and operator_groups members";
            self.audit(&who, "config.reload", None, "refused", Some(message.into()))
                .await;
            return Err(ErrorCode::PermissionDenied.error(message));
        }
        if let Err(error) = self.engine.reload().await {
            let message = error.to_string();
            self.audit(&who, "config.reload", None, "failed", Some(message.clone()))
                .await;
            return Err(ErrorCode::Unavailable.error(message));
        }
        let listed = workflow::list(self)?;
        let broken = listed.iter().filter(|w| w.error.is_some()).count();
        self.audit(
            &caller(ext),
            "config.reload",
            None,
            "ok",
            Some(format!("{} chains, {broken} broken", listed.len())),
        )
        .await;
        Ok(listed)
    }

    async fn workflow_get(&self, name: String) -> RpcResult<WorkflowDetail> {
        workflow::get(self, &name)
    }

    async fn store_backup(
        &self,
        pending: PendingSubscriptionSink,
        ext: &Extensions,
    ) -> SubscriptionResult {
        let _slot = match subscription_slot(ext) {
            Ok(slot) => slot,
            Err(refused) => {
                pending.reject(refused).await;
                return Ok(());
            }
        };
        backup::handle(self, pending, ext).await
    }

    async fn connection_list(&self, ext: &Extensions) -> RpcResult<Vec<ConnectionSummary>> {
        connection::list(self, &caller(ext))
    }

    async fn events_subscribe(
        &self,
        pending: PendingSubscriptionSink,
        ext: &Extensions,
        since: Option<u64>,
        chain: Option<String>,
        tenant: Option<String>,
        kinds: Option<Vec<String>>,
        states: Option<Vec<holdfast_api::JobState>>,
        follow: Option<bool>,
    ) -> SubscriptionResult {
        let filter = holdfast_api::EventFilter {
            chain,
            tenant,
            kinds: kinds.unwrap_or_default(),
            states: states.unwrap_or_default(),
        };
        let follow = follow.unwrap_or(true);
        // A subscription like the others: without a slot one member could
        // hold 256 per connection on every connection it may open, each
        // reading a page of events at every commit.
        let _slot = match subscription_slot(ext) {
            Ok(slot) => slot,
            Err(refused) => {
                pending.reject(refused).await;
                return Ok(());
            }
        };
        events::handle(self, pending, caller(ext), since, filter, follow).await
    }

    async fn notification_list(
        &self,
        failed: Option<bool>,
        limit: Option<u32>,
    ) -> RpcResult<Vec<holdfast_api::Delivery>> {
        notification::list(self, failed.unwrap_or(false), limit).await
    }

    async fn notification_retry(
        &self,
        ext: &Extensions,
        id: u64,
    ) -> RpcResult<holdfast_api::Delivery> {
        self.writable("notification.retry", ext)?;
        notification::retry(self, caller(ext), id).await
    }
}
