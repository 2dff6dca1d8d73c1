//! The table of every method of the [`Holdfast`](crate::rpc::Holdfast)
//! trait as `rpc.discover` describes it: each parameter with the Rust type
//! the trait declares, the result and subscription item types, and the
//! errors the method can answer with. Schemas come from those types through
//! `schemars`; nothing here is JSON text.

use serde_json::{Map, Value};

use super::{Discovery, MethodError, MethodSpec, Param, Shape, SubscriptionId, p, schema};
use crate::error::ErrorCode::{
    InvalidParameters, InvalidState, NotFound, PermissionDenied, Unavailable,
};
use crate::types::{
    AuditEntry, BackfillResult, BackupChunk, CancelOutcome, ConnectionSummary, DaemonInfo,
    Delivery, Event, ItemPage, Job, JobList, JobState, LogChunk, Plan, ScheduleInfo, Stats,
    SubmitResult, TenantSummary, WorkflowDetail, WorkflowSummary,
};

use MethodError::{App, Internal, InvalidParams};

/// What every method can answer: a parameter it does not take or of the
/// wrong type (-32602).
const BASE: &[MethodError] = &[InvalidParams];
/// Reads of the store: also an unreadable store or log file.
const READ: &[MethodError] = &[InvalidParams, Internal, App(Unavailable)];
/// Reads with a filter or window the daemon checks (`state`, `since`).
const READ_FILTERED: &[MethodError] = &[
    InvalidParams,
    Internal,
    App(InvalidParameters),
    App(Unavailable),
];
/// Reads of one object by id or name.
const READ_ONE: &[MethodError] = &[InvalidParams, Internal, App(NotFound), App(Unavailable)];
/// Submissions (`job.submit`, `job.retry`, schedule fires).
const SUBMIT: &[MethodError] = &[
    InvalidParams,
    Internal,
    App(NotFound),
    App(InvalidParameters),
    App(PermissionDenied),
    App(InvalidState),
    App(Unavailable),
];
/// Changes of one object by id or name that operators (or owners) may make.
const CHANGE: &[MethodError] = &[
    InvalidParams,
    Internal,
    App(NotFound),
    App(PermissionDenied),
    App(InvalidState),
    App(Unavailable),
];
/// Subscriptions: an unknown object, the per-uid subscription cap.
const SUBSCRIBE: &[MethodError] = &[InvalidParams, Internal, App(NotFound), App(Unavailable)];

const SUBMIT_PARAMS: &[Param] = &[
    p::<String>("target").describe("chain, chain.process or chain.process.activity"),
    p::<Option<Map<String, Value>>>("params")
        .describe("parameters by name; see x-chain-params for each chain's schema"),
    p::<Option<String>>("tenant"),
    p::<Option<i32>>("priority").describe("higher runs first"),
    p::<Option<bool>>("simulate")
        .describe("replace every activity by its [simulate] stand-in"),
    p::<Option<String>>("request_id").describe(
        "client idempotency key (1-128 characters): the same key from the same uid answers with the first job",
    ),
    p::<Option<String>>("until").describe(
        "a process of the chain target: run it and every process it depends on, nothing else",
    ),
    p::<Option<String>>("at").describe(
        "the instant the job runs as of: YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] in the daemon's zone, or RFC 3339",
    ),
];

/// Every method, in the trait's order.
pub(crate) const METHODS: &[MethodSpec] = &[
    MethodSpec::call(
        "daemon.info",
        "Version, protocol number, pid, uptime, mode, paths, counts and how attempts are confined.",
        &[],
        schema::<DaemonInfo>,
        BASE,
    ),
    MethodSpec::call(
        "job.submit",
        "Queue one run of a target; answers once the job is durably committed.",
        SUBMIT_PARAMS,
        schema::<SubmitResult>,
        SUBMIT,
    ),
    MethodSpec::call(
        "job.plan",
        "Check a submission and return what it would run, creating no job.",
        &[
            p::<String>("target"),
            p::<Option<Map<String, Value>>>("params"),
            p::<Option<String>>("tenant"),
            p::<Option<String>>("until"),
            p::<Option<String>>("at")
                .describe("render as of this instant (as job.submit reads it); now without it"),
        ],
        schema::<Plan>,
        SUBMIT,
    ),
    MethodSpec::call(
        "job.get",
        "One job with its activities and attempts.",
        &[p::<u64>("job_id")],
        schema::<Job>,
        READ_ONE,
    ),
    MethodSpec::call(
        "job.items",
        "A fan-out's items in index order, paged, with counts by state.",
        &[
            p::<u64>("job_id"),
            p::<String>("activity").describe("process.activity or chain.process.activity"),
            p::<Option<u32>>("offset").describe("0 by default"),
            p::<Option<u32>>("limit").describe("100 by default, at most 1000"),
        ],
        schema::<ItemPage>,
        READ_ONE,
    ),
    MethodSpec::call(
        "job.list",
        "Recent jobs, newest first, filtered and paged.",
        &[
            p::<Option<JobState>>("state"),
            p::<Option<String>>("chain"),
            p::<Option<u32>>("limit").describe("50 by default, 1-1000"),
            p::<Option<u64>>("before").describe("next_before of the previous page"),
            p::<Option<String>>("tenant"),
            p::<Option<String>>("since").describe(
                "a duration back from now (7d), a date (2026-12-01) or an RFC 3339 instant",
            ),
        ],
        schema::<JobList>,
        READ_FILTERED,
    ),
    MethodSpec::call(
        "job.cancel",
        "Cancel queued or running jobs.",
        &[p::<Vec<u64>>("job_ids")],
        schema::<Vec<CancelOutcome>>,
        // A job that cannot be cancelled is an outcome, not an error.
        &[
            InvalidParams,
            Internal,
            App(PermissionDenied),
            App(Unavailable),
        ],
    ),
    MethodSpec::call(
        "job.retry",
        "Reprocess a finished job, keeping what succeeded unless from_start.",
        &[
            p::<u64>("job_id"),
            p::<Option<bool>>("from_start"),
            p::<Option<String>>("from").describe("a process: re-run it and every process after it"),
        ],
        schema::<SubmitResult>,
        SUBMIT,
    ),
    MethodSpec::call(
        "job.logs",
        "Read an attempt's log from an offset.",
        &[
            p::<u64>("job_id"),
            p::<Option<String>>("activity").describe("process.activity or chain.process.activity"),
            p::<Option<u32>>("attempt").describe("the latest without it"),
            p::<Option<u64>>("offset"),
            p::<Option<u64>>("max_bytes").describe("1 MiB by default, at most 16 MiB"),
        ],
        schema::<LogChunk>,
        READ_ONE,
    ),
    MethodSpec::subscription::<LogChunk>(
        "job.follow_logs",
        "An attempt's log as it is written (WebSocket), ending with a close notification.",
        &[
            p::<u64>("job_id"),
            p::<Option<String>>("activity"),
            p::<Option<u32>>("attempt"),
            p::<Option<u64>>("offset"),
        ],
        "job.log",
        "job.unfollow_logs",
        SUBSCRIBE,
    ),
    MethodSpec::unsubscribe("job.unfollow_logs", "job.follow_logs"),
    MethodSpec::subscription::<Job>(
        "job.watch",
        "The job after each of its changes (WebSocket), ending with its terminal state.",
        &[p::<u64>("job_id")],
        "job.changed",
        "job.unwatch",
        SUBSCRIBE,
    ),
    MethodSpec::unsubscribe("job.unwatch", "job.watch"),
    MethodSpec::call(
        "workflow.list",
        "Every chain, loaded or broken, with load errors.",
        &[],
        schema::<Vec<WorkflowSummary>>,
        BASE,
    ),
    MethodSpec::call(
        "rpc.discover",
        "This document.",
        &[],
        schema::<Discovery>,
        BASE,
    ),
    MethodSpec::call(
        "schedule.list",
        "Every schedule with its next and last fire.",
        &[],
        schema::<Vec<ScheduleInfo>>,
        READ,
    ),
    MethodSpec::call(
        "schedule.pause",
        "Stop a schedule from firing until resumed.",
        &[p::<String>("name").describe("chain.schedule")],
        schema::<ScheduleInfo>,
        CHANGE,
    ),
    MethodSpec::call(
        "schedule.resume",
        "Let a paused schedule fire again; fires missed while paused are not run.",
        &[p::<String>("name").describe("chain.schedule")],
        schema::<ScheduleInfo>,
        CHANGE,
    ),
    MethodSpec::call(
        "schedule.trigger",
        "Fire a schedule now, as of at when given.",
        &[
            p::<String>("name").describe("chain.schedule"),
            p::<Option<String>>("at").describe(
                "the instant the fire runs as of, read in the schedule's zone; now without it",
            ),
        ],
        schema::<ScheduleInfo>,
        SUBMIT,
    ),
    MethodSpec::call(
        "schedule.backfill",
        "Submit one fire per instant of the schedule's rule in [from, to], oldest first, each as of its instant (at most 1000); dry_run lists them.",
        &[
            p::<String>("name").describe("chain.schedule"),
            p::<String>("from").describe("first instant of the range, read in the schedule's zone"),
            p::<String>("to").describe("last instant of the range; a date includes that whole day"),
            p::<Option<bool>>("dry_run"),
        ],
        schema::<BackfillResult>,
        SUBMIT,
    ),
    MethodSpec::call(
        "tenant.list",
        "Every tenant, loaded or broken.",
        &[],
        schema::<Vec<TenantSummary>>,
        BASE,
    ),
    MethodSpec::call(
        "audit.list",
        "The audit trail, newest first.",
        &[
            p::<Option<u32>>("limit").describe("50 by default, 1-10000"),
            p::<Option<u64>>("before").describe("an entry id"),
        ],
        schema::<Vec<AuditEntry>>,
        READ,
    ),
    MethodSpec::call(
        "config.reload",
        "Re-read workflow, tenant and connection files now; answers with the registry afterwards.",
        &[],
        schema::<Vec<WorkflowSummary>>,
        &[InvalidParams, App(PermissionDenied), App(Unavailable)],
    ),
    MethodSpec::call(
        "workflow.get",
        "One chain's parameters, processes and activities.",
        &[p::<String>("name")],
        schema::<WorkflowDetail>,
        &[InvalidParams, App(NotFound)],
    ),
    MethodSpec::subscription::<BackupChunk>(
        "store.backup",
        "A consistent copy of the database in order, base64, the last chunk marked complete (operators only); the caller writes the file.",
        &[],
        "store.backup_chunk",
        "store.backup_cancel",
        &[
            InvalidParams,
            Internal,
            App(PermissionDenied),
            App(Unavailable),
        ],
    ),
    MethodSpec::unsubscribe("store.backup_cancel", "store.backup"),
    MethodSpec::call(
        "connection.list",
        "Every connection profile, loaded or broken, with the chains using it; fields only for operators, secret values never.",
        &[],
        schema::<Vec<ConnectionSummary>>,
        BASE,
    ),
    MethodSpec::subscription::<Event>(
        "events.subscribe",
        "Events of jobs, activities and schedules: those after since first (from the database), then live, without gap or duplicate; without since, from now on.",
        &[
            p::<Option<u64>>("since").describe("the last event id seen"),
            p::<Option<String>>("chain"),
            p::<Option<String>>("tenant"),
            p::<Option<Vec<String>>>("kinds").describe("event kinds, e.g. job.failed"),
            p::<Option<Vec<JobState>>>("states").describe("the job's state after the transition"),
            p::<Option<bool>>("follow")
                .describe("false: close once the events recorded at the start were sent"),
        ],
        "events.event",
        "events.unsubscribe",
        SUBSCRIBE,
    ),
    MethodSpec::unsubscribe("events.unsubscribe", "events.subscribe"),
    MethodSpec::call(
        "notification.list",
        "Notification deliveries, newest first (failed: only those failed or being retried).",
        &[
            p::<Option<bool>>("failed"),
            p::<Option<u32>>("limit").describe("100 by default, at most 1000"),
        ],
        schema::<Vec<Delivery>>,
        READ,
    ),
    MethodSpec::call(
        "notification.retry",
        "Deliver a notification again now (operators only).",
        &[p::<u64>("id")],
        schema::<Delivery>,
        CHANGE,
    ),
    MethodSpec::call(
        "stats.get",
        "Runs, success rate, retries, duration and queue-wait percentiles, peak memory and CPU per chain and per activity.",
        &[
            p::<Option<String>>("target")
                .describe("CHAIN, CHAIN.PROCESS or CHAIN.PROCESS.ACTIVITY"),
            p::<Option<String>>("since").describe(
                "a duration back from now (7d, 12h), a date or an RFC 3339 instant; 7d by default",
            ),
            p::<Option<String>>("tenant"),
        ],
        schema::<Stats>,
        READ_FILTERED,
    ),
];

/// The id an unsubscribe call takes, by position.
pub(super) const UNSUBSCRIBE_PARAMS: &[Param] =
    &[p::<SubscriptionId>("subscription").describe("the id the subscribe call answered with")];

/// What an unsubscribe call answers: whether the subscription was open.
pub(super) const UNSUBSCRIBE_RESULT: Shape = schema::<bool>;
