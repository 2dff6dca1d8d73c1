//! The validated workflow model: what a chain file means once it has passed
//! every check. The daemon's engine and hfctl both work on these types; the
//! raw TOML shapes stay private to `parse`.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use crate::cron::{CatchUp, CronRule, Overlap};

/// One chain: one workflow file, fully validated.
#[derive(Debug, Clone)]
pub struct Chain {
    /// `[chain].name`, or the file stem.
    pub name: String,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// Hex SHA-256 of `source`: the definition's version.
    pub version: String,
    /// The file's text, kept so a job can be re-read against the exact
    /// definition it was submitted with.
    pub source: String,
    pub description: Option<String>,
    /// Activities of one job running at once (None: bounded only by the daemon).
    pub max_parallel: Option<usize>,
    /// Jobs of this chain running at once (None: unbounded); more wait queued.
    pub concurrency: Option<usize>,
    /// What `concurrency` counts: every job of the chain, or each tenant's
    /// jobs apart (`concurrency_per = "tenant"`).
    pub concurrency_per: ConcurrencyPer,
    /// Whole-job timeout.
    pub timeout: Option<Duration>,
    /// Declared parameters in file order.
    pub params: IndexMap<String, ParamSpec>,
    /// Processes in file order.
    pub processes: Vec<Process>,
    /// Every activity of every process, flattened: processes in file order,
    /// activities in file order within each. Indices into this vector are
    /// used throughout (`Process::activities`, `Activity::deps`).
    pub activities: Vec<Activity>,
    /// Schedule rules, parsed but evaluated by the daemon.
    pub schedules: Vec<Schedule>,
    /// Who may submit this chain (`group:NAME`, `user:NAME`); empty means
    /// anyone allowed on the socket. Root and the daemon's user always may.
    pub allow: Vec<String>,
    /// `journal = true`: the activities' output lines also go to the journal
    /// (rate-limited), with the job's fields.
    pub journal: bool,
    /// The highest `priority` a submitter who is not an operator may ask
    /// for; None means 0. Operators, root and the daemon's user (and so
    /// schedules) are not bounded.
    pub max_priority: Option<i32>,
    /// `[notify.NAME]`: notification rules for this chain's events only.
    pub notify: Vec<NotifyRule>,
}

impl Chain {
    /// The activity at `process.activity`, if any.
    pub fn activity(&self, process: &str, activity: &str) -> Option<&Activity> {
        self.activities
            .iter()
            .find(|a| a.process == process && a.name == activity)
    }

    pub fn process(&self, name: &str) -> Option<&Process> {
        self.processes.iter().find(|p| p.name == name)
    }
}

/// What a chain's `concurrency` is counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConcurrencyPer {
    /// Every job of the chain together.
    #[default]
    Chain,
    /// Each tenant's jobs apart; jobs without a tenant count together.
    Tenant,
}

impl ConcurrencyPer {
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPer::Chain => "chain",
            ConcurrencyPer::Tenant => "tenant",
        }
    }
}

/// Event kinds a notification rule may name in `on`.
pub const NOTIFY_KINDS: [&str; 13] = [
    "job.submitted",
    "job.started",
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.finished",
    "job.alert",
    "activity.started",
    "activity.succeeded",
    "activity.retrying",
    "activity.failed",
    "schedule.refused",
    "daemon.recovered",
];

/// A chain file's `[notify.NAME]`: the keys of a settings file rule, for
/// this chain's events only. What depends on the host (an `exec` program
/// that exists, a readable `secret_file`, an `[smtp]` server for `mail`,
/// the run-as user) is checked by the daemon when it loads the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyRule {
    pub name: String,
    /// 1-based line and column of the table's name, for the daemon's errors.
    pub line: usize,
    pub column: usize,
    /// Event kinds, each one of [`NOTIFY_KINDS`].
    pub on: Vec<String>,
    pub tenants: Vec<String>,
    /// Exactly one of `webhook`, `exec` and `mail_to` is set.
    pub webhook: Option<NotifyWebhook>,
    pub exec: Option<Vec<String>>,
    pub mail_to: Option<Vec<String>>,
    /// `mail = { attach_report = true }`: attach the job's HTML execution
    /// report to each mail.
    pub mail_attach_report: bool,
    pub coalesce: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub retry_delay: Option<Duration>,
    pub max_retry_delay: Option<Duration>,
    /// `[defaults]` `user` and `group`: an `exec` hook runs as the chain's
    /// activities that name no user of their own do.
    pub user: Option<String>,
    pub group: Option<String>,
}

/// `webhook = { url, secret_file, ca_file }` of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyWebhook {
    pub url: String,
    pub secret_file: Option<PathBuf>,
    /// PEM certificates trusted besides the system's, for an https URL.
    pub ca_file: Option<PathBuf>,
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub kind: ParamKind,
    pub required: bool,
    /// Already checked against `kind` and `allowed`.
    pub default: Option<Value>,
    /// `enum = [...]`: the values allowed, already of `kind`.
    pub allowed: Option<Vec<Value>>,
    /// For strings: a regular expression the whole value must match.
    pub pattern: Option<String>,
    /// For `int` and `float`: the smallest value allowed, of `kind`.
    pub min: Option<Value>,
    /// For `int` and `float`: the largest value allowed, of `kind`.
    pub max: Option<Value>,
    pub description: Option<String>,
    /// `secret = true`: the value is a credential. It is shown as `***`
    /// everywhere (answers, the audit, refusals, `HF_PARAMS`), kept out of
    /// the job's stored parameters, and reaches the activity only through
    /// its environment (`HF_PARAM_<NAME>`): a template that would put it in
    /// `command` or `working_dir` is a load error.
    pub secret: bool,
}

impl ParamSpec {
    /// How a value of this parameter may be shown to anyone.
    pub fn shown<'a>(&self, value: &'a Value) -> Cow<'a, Value> {
        if self.secret {
            Cow::Owned(Value::String(crate::params::MASK.to_string()))
        } else {
            Cow::Borrowed(value)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    String,
    Int,
    Float,
    Bool,
    /// `YYYY-MM-DD`, a real calendar date; kept as that string.
    Date,
    /// RFC 3339; kept as the string given.
    DateTime,
    /// Any JSON value.
    Json,
}

impl ParamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamKind::String => "string",
            ParamKind::Int => "int",
            ParamKind::Float => "float",
            ParamKind::Bool => "bool",
            ParamKind::Date => "date",
            ParamKind::DateTime => "datetime",
            ParamKind::Json => "json",
        }
    }
}

/// A named stage: a group of activities run serially or in parallel.
#[derive(Debug, Clone)]
pub struct Process {
    pub name: String,
    pub mode: Mode,
    /// Names of processes that must finish before this one starts.
    pub after: Vec<String>,
    /// Indices into `Chain::activities`, in file order.
    pub activities: Vec<usize>,
    /// `[handler.<kind>]`: runs once the job's graph is done, never before.
    pub handler: Option<HandlerKind>,
}

/// Which outcome a `[handler.<kind>]` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HandlerKind {
    OnFailure,
    OnSuccess,
    OnCancel,
    /// Always, after the handler of the outcome.
    OnExit,
}

impl HandlerKind {
    pub const ALL: [HandlerKind; 4] = [
        HandlerKind::OnFailure,
        HandlerKind::OnSuccess,
        HandlerKind::OnCancel,
        HandlerKind::OnExit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandlerKind::OnFailure => "on_failure",
            HandlerKind::OnSuccess => "on_success",
            HandlerKind::OnCancel => "on_cancel",
            HandlerKind::OnExit => "on_exit",
        }
    }

    pub fn parse(name: &str) -> Option<HandlerKind> {
        HandlerKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serial,
    Parallel,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Serial => "serial",
            Mode::Parallel => "parallel",
        }
    }
}

/// One step: a command run as a child process. Every field has the chain's
/// `[defaults]` already applied.
#[derive(Debug, Clone)]
pub struct Activity {
    pub process: String,
    pub name: String,
    /// `chain.process.activity`.
    pub path: String,
    /// Index of the owning process in `Chain::processes`.
    pub process_index: usize,
    pub program: Program,
    /// Extra environment; values are templates.
    pub env: IndexMap<String, String>,
    /// A template too.
    pub working_dir: Option<String>,
    pub timeout: Option<Duration>,
    /// Retries after the first attempt (so at most `retries + 1` attempts).
    pub retries: u32,
    pub retry_delay: Duration,
    /// Multiplier applied to the delay per attempt.
    pub retry_backoff: f64,
    pub max_retry_delay: Option<Duration>,
    pub on_failure: OnFailure,
    /// `memory_max`, in bytes, where set.
    pub memory_max: Option<u64>,
    /// Run as this user (and its primary group unless `group` is set).
    pub user: Option<String>,
    pub group: Option<String>,
    /// Most open files.
    pub nofile: Option<u64>,
    /// Most processes and threads.
    pub tasks_max: Option<u64>,
    /// CPU share relative to 100 (cgroup `cpu.weight` scale).
    pub cpu_weight: Option<u32>,
    /// Most CPU time per period, in percent of one CPU (`cpu_quota = "150%"`).
    pub cpu_quota: Option<u32>,
    /// Connection profiles it uses, by the names the chain knows them by
    /// (`connections = ["erp"]`); a tenant may map a name to its own
    /// profile. Given as `HF_CONN_<NAME>_<FIELD>` at each attempt's start.
    pub connections: Vec<String>,
    /// Where its attempts run (`executor`): here, or on a Slurm cluster.
    pub executor: Executor,
    /// `cpus`: CPUs for one attempt (Slurm's `--cpus-per-task`).
    pub cpus: Option<u32>,
    /// `[slurm]` options, `[defaults.slurm]` merged key by key.
    pub slurm: SlurmOptions,
    /// Indices into `Chain::activities` of the activities that must have
    /// finished before this one starts: every activity of each `after`
    /// process (transitively through the DAG is implied), plus the previous
    /// activity of a serial process.
    pub deps: Vec<usize>,
    /// Indices of upstream activities whose outputs this activity's
    /// templates reference (`outputs.<process>.<activity>`).
    pub output_refs: Vec<usize>,
    /// Secret parameters its templates read through `secret_file("name")`:
    /// each is written to a 0600 file of the activity's user for the
    /// attempt's lifetime.
    pub secret_files: Vec<String>,
    /// How the activity behaves in a simulated job (`[...simulate]`); None
    /// means a no-op that succeeds at once.
    pub simulate: Option<Simulate>,
    /// Set for the activities of a `[handler.<kind>]`.
    pub handler: Option<HandlerKind>,
    /// A handler activity's `undoes`: indices of the (non-handler)
    /// activities that count as not done once it succeeds.
    pub undoes: Vec<usize>,
    /// `foreach`: the activity runs once per item (a fan-out).
    pub foreach: Option<Foreach>,
    /// `max_parallel` of a fan-out: its items running at once (None: bounded
    /// only by the job's and the daemon's caps).
    pub max_parallel: Option<usize>,
}

/// Where a fan-out's items come from. The list is computed once, when the
/// activity first starts, and kept with the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Foreach {
    /// A template rendering a JSON array (`"{{ outputs.split.plan.chunks }}"`).
    List(String),
    /// `{ count = "...", chunk_size = N }`: items `{index, start, end}`
    /// covering `0..count` in chunks; `count` is a template or a number.
    Chunks { count: String, chunk_size: u64 },
    /// `"tenants"`: one item `{tenant, params}` per tenant that may run
    /// the chain (by name), with the tenant's `[params]`.
    Tenants,
}

/// Where an activity's attempts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Executor {
    /// A child process of the daemon.
    #[default]
    Local,
    /// A batch job submitted with `sbatch` to the host's Slurm cluster.
    Slurm,
}

impl Executor {
    pub fn as_str(self) -> &'static str {
        match self {
            Executor::Local => "local",
            Executor::Slurm => "slurm",
        }
    }
}

/// `[slurm]` options given to `sbatch`; unset keys leave Slurm's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub constraint: Option<String>,
    /// Extra `sbatch` arguments, after the ones HoldFast derives.
    pub sbatch_args: Vec<String>,
}

/// An activity's stand-in for simulated jobs: nothing is run, the attempt
/// just ends this way after `duration`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Simulate {
    pub exit_code: i32,
    pub duration: Duration,
    pub outputs: serde_json::Map<String, Value>,
}

impl Activity {
    /// Delay before retry number `retry` (1 for the first retry), with
    /// backoff applied and capped by `max_retry_delay`.
    pub fn retry_delay_for(&self, retry: u32) -> Duration {
        let factor = self
            .retry_backoff
            .powi(retry.saturating_sub(1).min(64) as i32);
        let secs = self.retry_delay.as_secs_f64() * factor;
        let delay = if secs.is_finite() && secs < 1e9 {
            Duration::from_secs_f64(secs.max(0.0))
        } else {
            Duration::from_secs(1_000_000_000)
        };
        match self.max_retry_delay {
            Some(max) => delay.min(max),
            None => delay,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// An argv; each element is a template. Never passed to a shell.
    Command(Vec<String>),
    /// A script run with `/bin/sh -c`. Never a template: values reach it
    /// through the environment.
    Shell(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The job fails; dependants are skipped.
    Fail,
    /// The job goes on (dependants run) and ends with an alert.
    Continue,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Fail => "fail",
            OnFailure::Continue => "continue",
        }
    }
}

/// A `[schedule.<name>]` table, with its cron rule already parsed and
/// checked (expression and zone); the daemon evaluates it.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: String,
    /// `cron` in `timezone`; `rule.expression()` is the text as written.
    pub rule: CronRule,
    /// The IANA zone the rule is read in; None for the host's zone.
    pub timezone: Option<String>,
    /// Already checked against the chain's parameters.
    pub params: serde_json::Map<String, Value>,
    /// One job per tenant on each fire; empty for a single job.
    pub tenants: Vec<String>,
    /// What to run of the fires missed while the daemon was down.
    pub catch_up: CatchUp,
    /// With `catch_up = "all"`, the most missed fires run (the newest).
    /// At least 1; 10 unless the file says otherwise.
    pub max_catch_up: usize,
    /// What to do when a fire comes while this schedule's last job runs.
    pub overlap: Overlap,
    pub enabled: bool,
}

impl Schedule {
    /// `max_catch_up` when the file does not set it.
    pub const DEFAULT_MAX_CATCH_UP: usize = 10;

    /// The cron expression as written.
    pub fn cron(&self) -> &str {
        self.rule.expression()
    }

    /// The zone the schedule's business dates are read in: its
    /// `timezone`, else the host's.
    pub fn zone(&self) -> crate::dates::DateZone {
        self.timezone
            .as_deref()
            .and_then(|name| crate::dates::DateZone::parse(name).ok())
            .unwrap_or(crate::dates::DateZone::Local)
    }

    /// The schedule's `params` for a fire at `date`: values that are
    /// templates are rendered (as text, checked like a submitted value
    /// afterwards). Errors are `(parameter, message)`.
    pub fn params_at(
        &self,
        date: &crate::dates::BusinessDate,
    ) -> Result<serde_json::Map<String, Value>, Vec<(String, String)>> {
        let mut params = serde_json::Map::new();
        let mut errors = Vec::new();
        for (name, value) in &self.params {
            match value {
                Value::String(text) if crate::template::has_template_syntax(text) => {
                    match crate::template::render_schedule_value(text, date) {
                        Ok(rendered) => {
                            params.insert(name.clone(), Value::String(rendered));
                        }
                        Err(e) => errors.push((name.clone(), e.to_string())),
                    }
                }
                other => {
                    params.insert(name.clone(), other.clone());
                }
            }
        }
        if errors.is_empty() {
            Ok(params)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(delay_secs: u64, backoff: f64, max_secs: Option<u64>) -> Activity {
        Activity {
            process: "p".to_string(),
            name: "a".to_string(),
            path: "c.p.a".to_string(),
            process_index: 0,
            program: Program::Command(vec!["true".to_string()]),
            env: IndexMap::new(),
            working_dir: None,
            timeout: None,
            retries: 5,
            retry_delay: Duration::from_secs(delay_secs),
            retry_backoff: backoff,
            max_retry_delay: max_secs.map(Duration::from_secs),
            on_failure: OnFailure::Fail,
            memory_max: None,
            deps: Vec::new(),
            output_refs: Vec::new(),
            secret_files: Vec::new(),
            simulate: None,
            handler: None,
            undoes: Vec::new(),
            foreach: None,
            max_parallel: None,
            user: None,
            group: None,
            nofile: None,
            tasks_max: None,
            cpu_weight: None,
            cpu_quota: None,
            connections: Vec::new(),
            executor: Executor::Local,
            cpus: None,
            slurm: SlurmOptions::default(),
        }
    }

    #[test]
    fn retry_delay_grows_by_backoff_and_is_capped() {
        let a = activity(5, 2.0, Some(30));
        let delays: Vec<u64> = (1..=5).map(|r| a.retry_delay_for(r).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 30, 30]);
        // Retry 0 is treated like the first retry.
        assert_eq!(a.retry_delay_for(0), Duration::from_secs(5));
    }

    #[test]
    fn retry_delay_without_backoff_or_cap() {
        let a = activity(3, 1.0, None);
        assert_eq!(a.retry_delay_for(1), Duration::from_secs(3));
        assert_eq!(a.retry_delay_for(50), Duration::from_secs(3));
        // A huge backoff saturates instead of overflowing.
        let a = activity(1, 1000.0, None);
        assert_eq!(a.retry_delay_for(60), Duration::from_secs(1_000_000_000));
    }
}
