//! Types serialized on the wire. Timestamps are RFC 3339 strings in UTC;
//! states are lowercase words. Only these types cross the socket: the daemon
//! converts its own store and engine types at the RPC edge.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Answer of `daemon.info`: the handshake every hfctl command starts with.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DaemonInfo {
    pub version: String,
    pub protocol: u32,
    pub pid: u32,
    pub started_at: String,
    pub uptime_seconds: u64,
    /// `system` or `user`.
    pub mode: String,
    pub max_parallel: usize,
    pub paths: DaemonPaths,
    pub counts: DaemonCounts,
    /// How attempts are confined: `cgroup <dir> (memory, pids, cpu)`, or
    /// why there are no cgroups and caps use rlimits.
    #[serde(default)]
    pub confinement: String,
    /// The Slurm executor's health (slurmctld reachable, last query),
    /// on a host with the Slurm client commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DaemonPaths {
    pub config: String,
    pub workflows_dir: String,
    #[serde(default)]
    pub tenants_dir: String,
    #[serde(default)]
    pub connections_dir: String,
    pub state_dir: String,
    pub socket: String,
    pub database: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct DaemonCounts {
    pub chains: usize,
    pub broken_chains: usize,
    pub queued_jobs: usize,
    pub running_jobs: usize,
    pub running_activities: usize,
}

/// Job states. `queued → running → succeeded | failed | cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Activity states within a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActivityState {
    Pending,
    Running,
    RetryWait,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl ActivityState {
    pub const ALL: [ActivityState; 7] = [
        ActivityState::Pending,
        ActivityState::Running,
        ActivityState::RetryWait,
        ActivityState::Succeeded,
        ActivityState::Failed,
        ActivityState::Skipped,
        ActivityState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActivityState::Pending => "pending",
            ActivityState::Running => "running",
            ActivityState::RetryWait => "retry_wait",
            ActivityState::Succeeded => "succeeded",
            ActivityState::Failed => "failed",
            ActivityState::Skipped => "skipped",
            ActivityState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<ActivityState> {
        ActivityState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ActivityState::Succeeded
                | ActivityState::Failed
                | ActivityState::Skipped
                | ActivityState::Cancelled
        )
    }
}

/// How one attempt ended (or `running` while it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// Recorded, process not yet known to have exited.
    Running,
    /// Exit code 0.
    Succeeded,
    /// Non-zero exit code.
    Failed,
    /// Ended by a signal it did not receive from us.
    Signaled,
    /// Killed because its timeout (or the job's) expired.
    Timeout,
    /// Killed because the job was cancelled.
    Cancelled,
    /// The daemon stopped or died while it ran.
    Interrupted,
    /// The process could not be started, or its templates could not be rendered.
    SpawnError,
    /// Killed by the kernel's OOM killer for going over its `memory_max`
    /// (cgroup enforcement only).
    Oom,
}

impl AttemptState {
    pub const ALL: [AttemptState; 9] = [
        AttemptState::Running,
        AttemptState::Succeeded,
        AttemptState::Failed,
        AttemptState::Signaled,
        AttemptState::Timeout,
        AttemptState::Cancelled,
        AttemptState::Interrupted,
        AttemptState::SpawnError,
        AttemptState::Oom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Running => "running",
            AttemptState::Succeeded => "succeeded",
            AttemptState::Failed => "failed",
            AttemptState::Signaled => "signaled",
            AttemptState::Timeout => "timeout",
            AttemptState::Cancelled => "cancelled",
            AttemptState::Interrupted => "interrupted",
            AttemptState::SpawnError => "spawn_error",
            AttemptState::Oom => "oom",
        }
    }

    pub fn parse(s: &str) -> Option<AttemptState> {
        AttemptState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Answer of `job.submit`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SubmitResult {
    pub job_id: u64,
    pub state: JobState,
}

/// One job with its activity tree: answer of `job.get`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Job {
    pub id: u64,
    /// `chain`, `chain.process` or `chain.process.activity`.
    pub target: String,
    pub chain: String,
    pub state: JobState,
    /// Number of alerts raised (activities that failed under `on_failure =
    /// "continue"`, or `alert` messages).
    pub alerts: u32,
    /// What the latest alert said (an `alert` control message, or the
    /// error of an activity that failed under `on_failure = "continue"`).
    #[serde(default)]
    pub last_alert: Option<String>,
    pub params: Map<String, Value>,
    pub tenant: Option<String>,
    pub priority: i32,
    /// The user name of the submitter (or `schedule:<chain>.<name>`).
    pub submitted_by: String,
    pub submitter_uid: Option<u32>,
    pub submitter_pid: Option<u32>,
    /// Content hash of the chain definition this job runs.
    pub version: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Overall progress in percent, averaged over the job's activities.
    pub progress: f64,
    /// Why the job ended as it did, when that is not obvious from its
    /// activities (for example `job timeout after 2h`).
    pub reason: Option<String>,
    pub retry_of: Option<u64>,
    /// The id of the first job of its retry chain (`job.run_id`,
    /// `HF_RUN_ID`): its own id unless it is a `job.retry` of another.
    #[serde(default)]
    pub run_id: u64,
    /// `--until PROCESS`: the job runs that process and what it depends
    /// on, nothing else; a retry keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Run with every activity replaced by its `[simulate]` stand-in.
    #[serde(default)]
    pub simulated: bool,
    /// Outputs of each activity, keyed by `process.activity`.
    pub outputs: Map<String, Value>,
    pub activities: Vec<ActivityRun>,
    /// The state the job ends in, decided once its graph is done; its
    /// handlers (activities with `handler` set) run while this is set and
    /// `state` is still `running`. A handler never changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<JobState>,
    /// The instant the job runs as of (`schedule.at`, `HF_SCHEDULED_AT`),
    /// RFC 3339 in its zone: a schedule's fire, `--at`, or the submission.
    /// Absent for jobs stored before jobs had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    /// Why a job that has not ended runs nothing now, as the engine sees
    /// it at the call; absent when something runs or the job ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
}

/// Answer of `schedule.backfill`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BackfillResult {
    /// `chain.schedule`.
    pub schedule: String,
    /// Every fire of the range, oldest first, RFC 3339 in the schedule's
    /// zone.
    pub fires: Vec<String>,
    /// Jobs submitted at once (with `overlap = "allow"`, all of them;
    /// otherwise those of the first fire). Empty for a dry run.
    pub jobs: Vec<u64>,
    /// Fires waiting for the previous fire's jobs to end (`overlap` other
    /// than `"allow"`); each is submitted in order.
    pub queued: usize,
    pub dry_run: bool,
}

/// Why a queued or running job runs nothing (or less than it could) now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Waiting {
    pub reason: WaitReason,
    /// The same for people, with the figures (`chain etl runs 2 of its
    /// concurrency 2`).
    pub detail: String,
    /// When the wait ends, if that is known (a retry delay), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// The kinds of [`Waiting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// Queued: its chain (or tenant within the chain) runs `concurrency`
    /// jobs already.
    ChainConcurrency,
    /// Ready activities wait for a slot under the daemon's `max_parallel`.
    MaxParallel,
    /// Ready activities wait for a slot under the chain's `max_parallel`.
    JobMaxParallel,
    /// Nothing runs: an activity waits out its retry delay.
    RetryDelay,
    /// The daemon is stopping and starts nothing new.
    ShuttingDown,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::ChainConcurrency => "chain_concurrency",
            WaitReason::MaxParallel => "max_parallel",
            WaitReason::JobMaxParallel => "job_max_parallel",
            WaitReason::RetryDelay => "retry_delay",
            WaitReason::ShuttingDown => "shutting_down",
        }
    }
}

/// One activity of a job.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ActivityRun {
    /// `chain.process.activity`.
    pub path: String,
    pub process: String,
    pub activity: String,
    pub state: ActivityState,
    pub progress: Option<f64>,
    pub progress_text: Option<String>,
    pub attempts: Vec<Attempt>,
    /// `on_failure`, `on_success`, `on_cancel` or `on_exit` for the
    /// activities of a `[handler.<kind>]`; absent for the job's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// A handler that `undoes` this activity succeeded: its success was
    /// rolled back, so `job.retry` runs it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undone: bool,
    /// A fan-out (`foreach`): how its items stand. Absent for an activity
    /// without `foreach`, and until its item list is computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemCounts>,
}

/// One page of a fan-out's items (`job.items`), in index order.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ItemPage {
    /// `chain.process.activity` of the fan-out.
    pub activity: String,
    pub counts: ItemCounts,
    pub items: Vec<FanOutItem>,
    /// `offset` of the next page; None after the last.
    pub next_offset: Option<u32>,
}

/// One item of a fan-out: the instance `process.activity[index]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FanOutItem {
    pub index: u32,
    /// The item itself (`{{ item }}`, `HF_ITEM`).
    pub item: Value,
    /// `not_started`, `pending` (to start again), `running`, `retry_wait`,
    /// `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// Attempts made; the fields below describe the latest.
    pub attempts: u32,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error_id: Option<String>,
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub log_bytes: u64,
    /// The Slurm array task running the latest attempt (`ARRAYID_TASK`,
    /// the task being the item's index), once `sbatch` accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
    /// That task's own Slurm job id, once Slurm started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_task_job_id: Option<u64>,
}

/// A fan-out's items by state; `total` is fixed once the list is computed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ItemCounts {
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub running: u32,
    /// Waiting to run again after a failed attempt.
    pub retry_wait: u32,
    /// Not started: never, or not again after a stop (`on_failure = "fail"`,
    /// a cancel).
    pub not_started: u32,
    pub cancelled: u32,
}

/// One execution of an activity.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Attempt {
    pub number: u32,
    pub state: AttemptState,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Unique id of this failure, quoted in logs and the journal.
    pub error_id: Option<String>,
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Bytes of stdout and stderr kept in the attempt's log file.
    pub log_bytes: u64,
    /// Bytes dropped because the log cap was reached.
    pub log_dropped: u64,
    /// For an attempt that did not succeed: the last lines of its output
    /// (at most 20 lines and 4 KiB, secrets masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_tail: Option<String>,
    /// What the activity said with `error <text>` on its control channel
    /// (the latest, masked, at most 1000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// What the attempt used, recorded when it ended (absent while it
    /// runs, for simulated attempts and for attempts recorded before
    /// resource use was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceUse>,
    /// The Slurm job running this attempt (`executor = "slurm"`), once
    /// `sbatch` accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job_id: Option<u64>,
}

/// Resource use of one ended attempt. Which source gives which figure is
/// in docs/monitoring.md: `source` is `cgroup` (the attempt's own cgroup,
/// every process it started) or `rusage` (`wait4` of the leader: the
/// leader and the descendants it waited for).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceUse {
    /// `cgroup` or `rusage`.
    pub source: String,
    /// Wall time from spawn to the leader's exit, in milliseconds.
    pub wall_ms: u64,
    /// User CPU time, in microseconds.
    pub user_cpu_us: u64,
    /// System CPU time, in microseconds.
    pub system_cpu_us: u64,
    /// Peak memory in bytes: the cgroup's `memory.peak`, or the largest
    /// max RSS rusage reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// Bytes read from block devices (cgroup `io.stat` rbytes; rusage
    /// block input operations × 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices (cgroup `io.stat` wbytes; rusage
    /// block output operations × 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_write_bytes: Option<u64>,
}

/// One row of `job.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobSummary {
    pub id: u64,
    pub target: String,
    pub chain: String,
    pub state: JobState,
    pub alerts: u32,
    pub tenant: Option<String>,
    pub priority: i32,
    pub submitted_by: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub progress: f64,
    #[serde(default)]
    pub simulated: bool,
    /// As [`Job::waiting`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
}

/// Answer of `job.list`. Pass `next_before` back as `before` for the next page.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobList {
    pub jobs: Vec<JobSummary>,
    pub next_before: Option<u64>,
}

/// Outcome of cancelling one job.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CancelOutcome {
    pub job_id: u64,
    /// The job's state after the call (`cancelled` at once for a queued job,
    /// still `running` while a running job's activities are being stopped).
    pub state: Option<JobState>,
    /// Why the job could not be cancelled, if it could not.
    pub error: Option<String>,
}

/// A piece of an attempt's log (`job.logs` answer and `job.follow_logs` item).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogChunk {
    /// `chain.process.activity`.
    pub activity: String,
    pub attempt: u32,
    /// Byte offset of `data` in the log file.
    pub offset: u64,
    /// Offset to ask for next.
    pub next_offset: u64,
    /// The bytes, decoded as UTF-8 with invalid sequences replaced.
    pub data: String,
    /// True when the attempt has ended and everything up to its end was sent.
    pub complete: bool,
    /// Bytes the daemon dropped because the log cap was reached.
    pub dropped: u64,
    /// Why the log file could not be created (the output was then lost, and
    /// counted in `dropped`); absent when it was created or nothing was
    /// written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_error: Option<String>,
}

/// One chain in `workflow.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowSummary {
    pub name: String,
    pub file: String,
    /// `loaded` or `broken`. A broken file whose chain loaded before keeps
    /// its last good version (`version` is set) and shows the error.
    pub status: String,
    pub version: Option<String>,
    pub description: Option<String>,
    /// The first of `errors`.
    pub error: Option<LoadError>,
    /// Every problem found in the file, in order.
    #[serde(default)]
    pub errors: Vec<LoadError>,
}

/// A workflow file that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LoadError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "{}:{}:{}: {}", self.file, line, column, self.message)
            }
            (Some(line), None) => write!(f, "{}:{}: {}", self.file, line, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

fn default_concurrency_per() -> String {
    "chain".to_string()
}

/// Answer of `workflow.get`: a chain as loaded.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowDetail {
    pub name: String,
    pub file: String,
    pub version: String,
    pub description: Option<String>,
    pub max_parallel: Option<usize>,
    pub concurrency: Option<usize>,
    /// What `concurrency` counts: `chain` (every job) or `tenant` (each
    /// tenant's jobs apart).
    #[serde(default = "default_concurrency_per")]
    pub concurrency_per: String,
    pub timeout_seconds: Option<f64>,
    pub params: Vec<ParamInfo>,
    pub processes: Vec<ProcessInfo>,
    /// Tenants whose files allow this chain.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// `[chain].max_priority` as written; None means 0. Bounds submitters
    /// outside the operator groups.
    #[serde(default)]
    pub max_priority: Option<i32>,
    /// The chain file's `[notify.NAME]` rules, as loaded.
    #[serde(default)]
    pub notify: Vec<NotifyRuleInfo>,
}

/// A chain file's notification rule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NotifyRuleInfo {
    /// `CHAIN.NAME`, as `notification.list` names it.
    pub name: String,
    pub on: Vec<String>,
    /// Where it delivers: `exec ARGV...`, `webhook URL` or `mail TO... via
    /// smtp HOST:PORT` / `via sendmail PATH`.
    pub target: String,
    /// The user an `exec` hook runs as; absent: the daemon's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ParamInfo {
    pub name: String,
    /// `string`, `int`, `float`, `bool`, `date`, `datetime` or `json`.
    #[serde(rename = "type")]
    pub kind: String,
    pub required: bool,
    pub default: Option<Value>,
    #[serde(rename = "enum")]
    pub allowed: Option<Vec<Value>>,
    /// `min` and `max` of an `int` or `float`, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Value>,
    pub description: Option<String>,
    /// Declared `secret = true`: its value is never shown, and goes to
    /// hfctl on stdin or in a file (`--params`), not on its command line.
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ProcessInfo {
    pub name: String,
    /// `serial` or `parallel`.
    pub mode: String,
    pub after: Vec<String>,
    pub activities: Vec<ActivityInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ActivityInfo {
    pub name: String,
    pub path: String,
    /// The argv template, or `["/bin/sh", "-c", script]` for `shell`.
    pub command: Vec<String>,
    pub shell: bool,
    pub timeout_seconds: Option<f64>,
    pub retries: u32,
    pub retry_delay_seconds: f64,
    pub retry_backoff: f64,
    pub max_retry_delay_seconds: Option<f64>,
    pub on_failure: String,
    pub working_dir: Option<String>,
    /// The user it runs as, when not the daemon's.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// Resource caps and how this host enforces each.
    #[serde(default)]
    pub limits: Vec<LimitInfo>,
    /// Connections it uses, by the names the chain gives them (a tenant
    /// may map a name to its own profile); never their fields.
    #[serde(default)]
    pub connections: Vec<String>,
    /// `foreach` as written (a template, `{ count = ..., chunk_size = N }`
    /// or `tenants`): the activity fans out, one instance per item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreach: Option<String>,
    /// A fan-out's `max_parallel`: its items running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<usize>,
    /// Where its attempts run when not locally: `slurm` and the `sbatch`
    /// options they get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
}

/// One resource cap of an activity.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LimitInfo {
    /// `memory_max`, `nofile`, `tasks_max` or `cpu_weight`.
    pub name: String,
    pub value: String,
    /// What enforces it here, e.g. `rlimit RLIMIT_AS (address space)`.
    pub mechanism: String,
}

/// One row of the audit trail: who called what, when, and how it went.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntry {
    pub id: u64,
    pub at: String,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub pid: Option<u32>,
    pub method: String,
    pub target: Option<String>,
    /// `ok` or `refused`.
    pub outcome: String,
    pub detail: Option<String>,
}

/// One tenant in `tenant.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TenantSummary {
    pub name: String,
    pub file: String,
    /// `loaded` or `broken` (a broken file keeps its last good version).
    pub status: String,
    pub description: Option<String>,
    /// Chains it may run; None means every chain.
    pub chains: Option<Vec<String>>,
    pub groups: Vec<String>,
    pub params: Map<String, Value>,
    /// Parameters of `params` the tenant locked: no submission overrides
    /// them.
    #[serde(default)]
    pub locked: Vec<String>,
    pub error: Option<LoadError>,
}

/// What a submission would do, without doing it: answer of `job.plan`
/// (`hfctl submit --dry-run`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    pub target: String,
    pub chain: String,
    pub version: String,
    pub tenant: Option<String>,
    /// `until`, when given: the waves hold that process and its upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Parameters after defaults, tenant values and the submitted ones.
    pub params: Map<String, Value>,
    /// Activities grouped in the order they could run: every activity of a
    /// wave depends only on activities of earlier waves.
    pub waves: Vec<Vec<PlannedActivity>>,
}

/// One activity of a plan, as it would be started.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PlannedActivity {
    pub path: String,
    /// Rendered argv. An argument that uses an upstream activity's output is
    /// shown as its template, since the output does not exist yet.
    pub argv: Vec<String>,
    /// The variables the chain sets (`env`), with values of names that look
    /// secret (PASSWORD, TOKEN, SECRET, KEY, ...) masked, plus the `HF_*`
    /// variables.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub timeout_seconds: Option<f64>,
    pub retries: u32,
    pub memory_max: Option<u64>,
    pub depends_on: Vec<String>,
}

/// One schedule in `schedule.list` (and the answer of `schedule.*`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleInfo {
    pub chain: String,
    pub name: String,
    pub cron: String,
    /// IANA zone, or `local` for the host's.
    pub timezone: String,
    pub enabled: bool,
    pub paused: bool,
    /// `none`, `latest` or `all`.
    pub catch_up: String,
    /// `skip`, `queue` or `allow`.
    pub overlap: String,
    pub tenants: Vec<String>,
    /// Next fire as RFC 3339 in UTC; None when paused or disabled.
    pub next_fire: Option<String>,
    /// Fires at or before this instant have been handled.
    pub last_handled: String,
    pub last_job: Option<u64>,
    pub last_job_state: Option<JobState>,
    /// Why the last fire created no job (every tenant's reason); absent
    /// when it created them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When that fire was refused, RFC 3339 in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<String>,
    /// Fires of a backfill still waiting to be submitted, oldest first
    /// (RFC 3339 in the schedule's zone); absent when none waits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backfill: Vec<String>,
}

/// A piece of a database copy (`store.backup` item). The daemon makes one
/// consistent snapshot and sends it in order; the caller writes the bytes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BackupChunk {
    /// Byte offset of `data` in the copy.
    pub offset: u64,
    /// The copy's whole size in bytes.
    pub size: u64,
    /// The bytes, base64 (standard alphabet, padded).
    pub data: String,
    /// True on the last chunk: everything up to `size` was sent.
    pub complete: bool,
}

impl BackupChunk {
    /// A chunk of `bytes` at `offset` of a copy of `size` bytes.
    pub fn new(offset: u64, size: u64, bytes: &[u8], complete: bool) -> BackupChunk {
        use base64::Engine;
        BackupChunk {
            offset,
            size,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
            complete,
        }
    }

    /// The chunk's bytes; `None` when `data` is not base64.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .ok()
    }
}

/// One connection profile in `connection.list`. Secret values are never
/// sent: secret fields are named, their values shown as `***`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConnectionSummary {
    pub name: String,
    pub file: String,
    /// `loaded` or `broken` (a broken file keeps its last good version).
    pub status: String,
    pub kind: Option<String>,
    pub description: Option<String>,
    /// The fields (`host`, `port`, ...) with each secret one as `***`; None
    /// when the caller may not see them (only root, the daemon's user and
    /// operator_groups members may).
    pub fields: Option<Map<String, Value>>,
    /// Names of the secret fields.
    pub secrets: Vec<String>,
    /// Who may submit chains using it; empty means anyone.
    pub allow: Vec<String>,
    /// Chains whose jobs use it: `chain`, or `chain (tenant NAME)` when a
    /// tenant's `[connections]` maps a chain's name to it.
    pub used_by: Vec<String>,
    /// Errors of the current file, if it is broken.
    pub errors: Vec<LoadError>,
}

/// One event of the outbox (`events.subscribe` item, `hfctl events`): a
/// transition of a job, an activity or a schedule, committed in the same
/// transaction as the transition. Fields that do not apply to a kind are
/// left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Increasing, never given out twice; a resume point for `since`.
    pub id: u64,
    /// `job.submitted`, `job.started`, `job.succeeded`, `job.failed`,
    /// `job.cancelled`, `job.finished`, `job.alert`, `activity.started`,
    /// `activity.succeeded`, `activity.retrying`, `activity.failed`,
    /// `schedule.refused` or `daemon.recovered`.
    pub kind: String,
    /// When the transition happened, RFC 3339 in UTC.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The job's state after the transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// The job's parameters, secret values shown as `***`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Map<String, Value>>,
    /// `process.activity`, for activity events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
    /// An error, an alert's text or why a schedule fire was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failed attempt's last lines of output, secrets masked as stored
    /// (`activity.retrying`, `activity.failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_tail: Option<String>,
    /// The job's failed activities (job end events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedActivity>,
    /// From the job's start to its end (job end events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<u32>,
    /// `chain.schedule`, for schedule events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Commands that show more, e.g. `hfctl status 12`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
}

/// A failed activity in a job end event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FailedActivity {
    /// `process.activity`.
    pub activity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its last failed attempt's last lines of output, secrets masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_tail: Option<String>,
}

/// Which events `events.subscribe` sends; every field left out matches all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Event kinds, e.g. `job.failed`; empty for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Job states after the transition; empty for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<JobState>,
}

impl EventFilter {
    /// Does `event` pass the filter?
    pub fn matches(&self, event: &Event) -> bool {
        (self.chain.is_none() || self.chain == event.chain)
            && (self.tenant.is_none() || self.tenant == event.tenant)
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && (self.states.is_empty() || event.state.is_some_and(|s| self.states.contains(&s)))
    }
}

/// One notification: an event for a rule (`notification.list` item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Delivery {
    pub id: u64,
    pub event_id: u64,
    /// The rule's name, `NAME` of `[notify.NAME]`.
    pub rule: String,
    /// The event's kind.
    pub kind: String,
    pub job_id: Option<u64>,
    /// `pending`, `delivered` or `failed` (no attempt left; see
    /// `hfctl notifications retry`).
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When it is tried next (pending only), RFC 3339 in UTC.
    pub next_at: Option<String>,
    pub delivered_at: Option<String>,
    pub created_at: String,
}

/// `stats.get`: what ran since an instant, per chain and per activity.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Stats {
    /// Jobs created at or after this instant are counted (RFC 3339).
    pub since: String,
    /// The `CHAIN[.PROCESS[.ACTIVITY]]` asked for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// One entry per chain, by name.
    pub chains: Vec<ChainStats>,
    /// One entry per `chain.process.activity`, by path.
    pub activities: Vec<ActivityStats>,
}

/// Figures of one chain's jobs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChainStats {
    pub chain: String,
    /// Jobs created in the window, whatever their state.
    pub jobs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Queued or running.
    pub in_flight: u64,
    /// succeeded / (succeeded + failed); absent before any ended so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// Attempts beyond each activity's first.
    pub retries: u64,
    /// Ended jobs, first start to finish.
    pub duration: Percentiles,
    /// Started jobs, created to first start.
    pub queue_wait: Percentiles,
    /// The largest peak memory of one attempt, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// User and system CPU of every attempt, in microseconds.
    pub cpu_us: u64,
}

/// Figures of one activity (`chain.process.activity`) over its jobs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ActivityStats {
    pub path: String,
    /// Activity runs that ended succeeded, failed or cancelled.
    pub runs: u64,
    pub succeeded: u64,
    pub failed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    pub attempts: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    /// Ended attempts, start to end.
    pub duration: Percentiles,
    /// The job's creation to its first attempt's start.
    pub queue_wait: Percentiles,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    pub cpu_us: u64,
}

/// Nearest-rank percentiles of a set of durations, in milliseconds
/// (absent when the set is empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Percentiles {
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
}
