//! JSON-RPC bodies: arbitrary bytes as a request, through jsonrpsee's
//! request type and then through the real method table generated from
//! holdfast-api's `Holdfast` trait (every method's named parameters are
//! decoded exactly as the daemon decodes them), and as the wire types a
//! client reads. Nothing may panic, and every answer must be one
//! well-formed JSON-RPC response.
//!
//! The handlers here refuse everything once their parameters have been
//! decoded; what the daemon does with decoded parameters, and the HTTP and
//! WebSocket layers in front of it, are exercised by the end-to-end tests.

#![no_main]

use std::sync::OnceLock;

use holdfast_api::rpc::HoldfastServer;
use holdfast_api::{
    AuditEntry, BackfillResult, CancelOutcome, ConnectionSummary, DaemonInfo, Delivery, ErrorCode,
    ItemPage, Job, JobList, JobState, LogChunk, Plan, ScheduleInfo, Stats, SubmitResult,
    TenantSummary, WorkflowDetail, WorkflowSummary,
};
use jsonrpsee::core::{RpcResult, SubscriptionResult, async_trait};
use jsonrpsee::types::{ErrorObjectOwned, Request};
use jsonrpsee::{Extensions, Methods, PendingSubscriptionSink, RpcModule};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// Answers every call with UNAVAILABLE once jsonrpsee has decoded its
/// parameters; a decoding failure is answered by jsonrpsee itself.
struct Refuser;

fn refuse<T>() -> RpcResult<T> {
    Err(refusal())
}

fn refusal() -> ErrorObjectOwned {
    ErrorCode::Unavailable.error("refused by the fuzz target")
}

#[async_trait]
impl HoldfastServer for Refuser {
    async fn daemon_info(&self) -> RpcResult<DaemonInfo> {
        refuse()
    }

    async fn job_submit(
        &self,
        _ext: &Extensions,
        target: String,
        _params: Option<Map<String, Value>>,
        _tenant: Option<String>,
        _priority: Option<i32>,
        _simulate: Option<bool>,
        _request_id: Option<String>,
        _until: Option<String>,
        _at: Option<String>,
    ) -> RpcResult<SubmitResult> {
        let _ = target.len();
        refuse()
    }

    async fn job_plan(
        &self,
        _ext: &Extensions,
        _target: String,
        _params: Option<Map<String, Value>>,
        _tenant: Option<String>,
        _until: Option<String>,
        _at: Option<String>,
    ) -> RpcResult<Plan> {
        refuse()
    }

    async fn job_get(&self, _job_id: u64) -> RpcResult<Job> {
        refuse()
    }

    async fn job_items(
        &self,
        _job_id: u64,
        _activity: String,
        _offset: Option<u32>,
        _limit: Option<u32>,
    ) -> RpcResult<ItemPage> {
        refuse()
    }

    async fn job_list(
        &self,
        _state: Option<String>,
        _chain: Option<String>,
        _limit: Option<u32>,
        _before: Option<u64>,
        _tenant: Option<String>,
        _since: Option<String>,
    ) -> RpcResult<JobList> {
        refuse()
    }

    async fn job_cancel(
        &self,
        _ext: &Extensions,
        _job_ids: Vec<u64>,
    ) -> RpcResult<Vec<CancelOutcome>> {
        refuse()
    }

    async fn job_retry(
        &self,
        _ext: &Extensions,
        _job_id: u64,
        _from_start: Option<bool>,
        _from: Option<String>,
    ) -> RpcResult<SubmitResult> {
        refuse()
    }

    async fn job_logs(
        &self,
        _job_id: u64,
        _activity: Option<String>,
        _attempt: Option<u32>,
        _offset: Option<u64>,
        _max_bytes: Option<u64>,
    ) -> RpcResult<LogChunk> {
        refuse()
    }

    async fn job_follow_logs(
        &self,
        pending: PendingSubscriptionSink,
        _ext: &Extensions,
        _job_id: u64,
        _activity: Option<String>,
        _attempt: Option<u32>,
        _offset: Option<u64>,
    ) -> SubscriptionResult {
        pending.reject(refusal()).await;
        Ok(())
    }

    async fn job_watch(
        &self,
        pending: PendingSubscriptionSink,
        _ext: &Extensions,
        _job_id: u64,
    ) -> SubscriptionResult {
        pending.reject(refusal()).await;
        Ok(())
    }

    async fn workflow_list(&self) -> RpcResult<Vec<WorkflowSummary>> {
        refuse()
    }

    async fn discover(&self) -> RpcResult<Value> {
        refuse()
    }

    async fn schedule_list(&self) -> RpcResult<Vec<ScheduleInfo>> {
        refuse()
    }

    async fn schedule_pause(&self, _ext: &Extensions, _name: String) -> RpcResult<ScheduleInfo> {
        refuse()
    }

    async fn schedule_resume(&self, _ext: &Extensions, _name: String) -> RpcResult<ScheduleInfo> {
        refuse()
    }

    async fn schedule_trigger(
        &self,
        _ext: &Extensions,
        _name: String,
        _at: Option<String>,
    ) -> RpcResult<ScheduleInfo> {
        refuse()
    }

    async fn schedule_backfill(
        &self,
        _ext: &Extensions,
        _name: String,
        _from: String,
        _to: String,
        _dry_run: Option<bool>,
    ) -> RpcResult<BackfillResult> {
        refuse()
    }

    async fn stats_get(
        &self,
        _target: Option<String>,
        _since: Option<String>,
        _tenant: Option<String>,
    ) -> RpcResult<Stats> {
        refuse()
    }

    async fn tenant_list(&self) -> RpcResult<Vec<TenantSummary>> {
        refuse()
    }

    async fn audit_list(
        &self,
        _limit: Option<u32>,
        _before: Option<u64>,
    ) -> RpcResult<Vec<AuditEntry>> {
        refuse()
    }

    async fn config_reload(&self, _ext: &Extensions) -> RpcResult<Vec<WorkflowSummary>> {
        refuse()
    }

    async fn workflow_get(&self, _name: String) -> RpcResult<WorkflowDetail> {
        refuse()
    }

    async fn store_backup(
        &self,
        pending: PendingSubscriptionSink,
        _ext: &Extensions,
    ) -> SubscriptionResult {
        pending.reject(refusal()).await;
        Ok(())
    }

    async fn connection_list(&self, _ext: &Extensions) -> RpcResult<Vec<ConnectionSummary>> {
        refuse()
    }

    #[allow(clippy::too_many_arguments)]
    async fn events_subscribe(
        &self,
        pending: PendingSubscriptionSink,
        _ext: &Extensions,
        _since: Option<u64>,
        _chain: Option<String>,
        _tenant: Option<String>,
        _kinds: Option<Vec<String>>,
        _states: Option<Vec<JobState>>,
        _follow: Option<bool>,
    ) -> SubscriptionResult {
        pending.reject(refusal()).await;
        Ok(())
    }

    async fn notification_list(
        &self,
        _failed: Option<bool>,
        _limit: Option<u32>,
    ) -> RpcResult<Vec<Delivery>> {
        refuse()
    }

    async fn notification_retry(&self, _ext: &Extensions, _id: u64) -> RpcResult<Delivery> {
        refuse()
    }
}

fn methods() -> &'static Methods {
    static METHODS: OnceLock<Methods> = OnceLock::new();
    METHODS.get_or_init(|| {
        let module: RpcModule<Refuser> = Refuser.into_rpc();
        module.into()
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime can be built")
    })
}

/// Generated by jsonrpsee from the subscriptions of the trait.
const UNSUBSCRIBE: &[&str] = &["job.unfollow_logs", "job.unwatch", "store.backup_cancel"];

/// The codes an answer to a single request may carry.
const KNOWN_CODES: &[i64] = &[-32700, -32600, -32601, -32602, -32603, -31005];

fuzz_target!(|data: &[u8]| {
    // The wire types a client decodes (answers and notifications).
    let _ = serde_json::from_slice::<Job>(data);
    let _ = serde_json::from_slice::<JobList>(data);
    let _ = serde_json::from_slice::<LogChunk>(data);
    let _ = serde_json::from_slice::<WorkflowDetail>(data);
    let _ = serde_json::from_slice::<DaemonInfo>(data);
    let _ = serde_json::from_slice::<Vec<CancelOutcome>>(data);

    let Ok(request) = serde_json::from_slice::<Request<'_>>(data) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let method = request.method.to_string();
    let answer = runtime().block_on(methods().raw_json_request(text, 16));
    let (answer, _notifications) = answer.expect("a request that decoded once decodes again");
    let answer: Value = serde_json::from_str(answer.get()).expect("the answer is JSON");
    assert_eq!(answer["jsonrpc"], "2.0", "a JSON-RPC 2.0 answer: {answer}");
    let Some(error) = answer.get("error") else {
        // Unsubscribing answers whether the subscription existed.
        assert!(
            UNSUBSCRIBE.contains(&method.as_str()) && answer["result"] == false,
            "{method}: every handler refuses, yet the answer is not an error: {answer}"
        );
        return;
    };
    let code = error["code"].as_i64().expect("an error has a numeric code");
    assert!(
        KNOWN_CODES.contains(&code),
        "{method}: unexpected error code {code}: {answer}"
    );
    assert!(
        error["message"].is_string(),
        "an error has a message: {answer}"
    );
});
