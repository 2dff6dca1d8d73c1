//! A job's runtime state inside the engine: which of its chain's activities
//! it runs, what each is waiting on, and what is ready to start.

use std::collections::BTreeSet;
use std::sync::Arc;

use holdfast_api::{ActivityState, FieldError, JobState};
use holdfast_workflow::Chain;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::{Caller, SubmitError};
use crate::executor::KillReason;
use crate::registry::Registry;
use holdfast_workflow::params::resolve_layered;

/// Why a job is being stopped before it finished by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Cancel,
    Timeout,
}

/// One activity of a running job.
#[derive(Debug, Default)]
pub struct ActRun {
    /// False for activities of the chain outside the job's target.
    pub included: bool,
    pub state: Option<ActivityState>,
    /// Attempts made so far (the running one included).
    pub attempts: u32,
    pub interruptions: u32,
    /// Attempts that could not start for lack of file descriptors; like
    /// interruptions they do not use up a retry (kept in memory only).
    pub deferred: u32,
    /// Included dependencies not yet finished.
    pub waiting: usize,
    /// Held while the attempt runs; sending on it stops the attempt.
    pub kill: Option<oneshot::Sender<KillReason>>,
    pub checkpoint: Option<Value>,
    pub outputs: Map<String, Value>,
    pub progress: Option<f64>,
    pub progress_text: Option<String>,
    /// The last failure cannot be cured by trying again (a template that
    /// cannot render): skip the retries.
    pub no_retry: bool,
    /// The running attempt's `error <text>`, if it sent one.
    pub error_message: Option<String>,
    /// What the last failed attempt said, for handlers' `job.errors`.
    pub last_error: Option<ActError>,
    /// A `foreach` activity's items, once its list is computed.
    pub fanout: Option<Box<super::items::FanOut>>,
    /// When its retry delay ends (milliseconds since the epoch), while it
    /// waits in `retry_wait` (kept in memory only, for `Job::waiting`).
    pub retry_due_at: Option<i64>,
}

/// What one failed attempt said.
#[derive(Debug, Clone, Default)]
pub struct ActError {
    pub error_id: String,
    pub error: Option<String>,
    pub error_tail: Option<String>,
    pub error_message: Option<String>,
}

impl ActRun {
    pub fn state(&self) -> ActivityState {
        self.state.unwrap_or(ActivityState::Pending)
    }
}

/// A queued or running job.
#[derive(Debug)]
pub struct JobRun {
    pub id: u64,
    /// The first job of its retry chain: `id` unless it is a retry.
    pub run_id: u64,
    pub chain: Arc<Chain>,
    pub target: String,
    /// `--until PROCESS`: the process whose upstream the job runs.
    pub until: Option<String>,
    pub params: Map<String, Value>,
    /// Names of the parameters whose values are secret: shown as `***`,
    /// stored sealed, given to activities only in their environment.
    pub secret: BTreeSet<String>,
    pub tenant: Option<String>,
    pub priority: i32,
    /// Activities are replaced by their `[simulate]` stand-ins.
    pub simulated: bool,
    /// The instant it runs as of (`schedule.at`, `HF_SCHEDULED_AT`).
    pub scheduled: Option<holdfast_workflow::BusinessDate>,
    pub state: JobState,
    pub alerts: u32,
    pub started_at: Option<i64>,
    pub acts: Vec<ActRun>,
    /// For each activity, the activities that list it in their deps.
    pub dependants: Vec<Vec<usize>>,
    /// Activities whose dependencies are done, in chain order.
    pub ready: BTreeSet<usize>,
    pub running: usize,
    /// Included activities not yet in a terminal state.
    pub unfinished: usize,
    /// An activity failed under `on_failure = "fail"`.
    pub failed: bool,
    pub stop: Option<Stop>,
    /// The outcome its handlers answer, decided (and committed) once the
    /// job's own graph is done; the job ends in it whatever they do.
    pub outcome: Option<JobState>,
    /// Handler activities not yet in a terminal state (part of
    /// `unfinished`).
    pub handlers_unfinished: usize,
    /// The handlers are being stopped (a second cancel, `kill_grace` after
    /// a cancel, or the job's timeout while they run).
    pub handlers_stop: Option<Stop>,
    /// Counted against its chain's `concurrency`.
    pub admitted: bool,
    pub timeout_timer: Option<tokio::task::AbortHandle>,
}

/// A submission checked against the registry: the chain, the activities
/// the target selects, and the resolved parameters.
pub struct Prepared {
    pub chain: Arc<Chain>,
    pub included: Vec<bool>,
    pub params: Map<String, Value>,
    /// The parameters whose values are secret: declared `secret` by the
    /// chain, or filled from the tenant's `[secrets]`.
    pub secret: BTreeSet<String>,
}

/// Check a submission: the chain exists, the target names part of it, the
/// tenant exists, may run the chain and may be used by the caller, and the
/// parameters (chain defaults < tenant < schedule < submitted) are valid. Every field
/// problem is reported at once.
pub fn prepare(
    registry: &Registry,
    target: &str,
    until: Option<&str>,
    params: &Map<String, Value>,
    schedule: Option<&Map<String, Value>>,
    tenant: Option<&str>,
    caller: &Caller,
) -> Result<Prepared, SubmitError> {
    let chain_name = target.split('.').next().unwrap_or_default();
    let Some(chain) = registry.chain(chain_name).cloned() else {
        return Err(SubmitError::UnknownChain(chain_name.to_string()));
    };
    if !crate::access::may_submit_chain(caller, &chain.allow) {
        return Err(SubmitError::PermissionDenied(format!(
            "chain {} may be submitted only by {}",
            chain.name,
            chain.allow.join(", ")
        )));
    }
    let mut problems: Vec<FieldError> = Vec::new();
    let included = resolve_target(&chain, target, until)
        .map_err(|e| problems.push(e))
        .ok();
    let mut tenant_secrets: Option<Map<String, Value>> = None;
    let tenant_params = match tenant {
        None => None,
        Some(name) => match registry.tenant(name) {
            None => {
                problems.push(FieldError {
                    field: "tenant".into(),
                    message: format!("no tenant named {name:?}; see `hfctl tenants`"),
                });
                None
            }
            Some(t) if !t.may_run(&chain.name) => {
                problems.push(FieldError {
                    field: "tenant".into(),
                    message: format!("tenant {name} may not run chain {}", chain.name),
                });
                None
            }
            Some(t) => {
                if !crate::access::may_submit_for(caller, &t.groups) {
                    return Err(SubmitError::PermissionDenied(format!(
                        "submitting for tenant {name} is limited to members of {}",
                        t.groups.join(", ")
                    )));
                }
                let secrets = read_tenant_secrets(t, &chain, &mut problems);
                locked_by_tenant(t, &chain, params, !secrets.is_empty(), &mut problems);
                // A schedule's fire submits nothing of its own; its
                // `params` may not override a locked value either.
                if let Some(schedule) = schedule {
                    locked_by_tenant(t, &chain, schedule, false, &mut problems);
                }
                tenant_secrets = Some(secrets);
                Some(&t.params)
            }
        },
    };
    if let Some(included) = &included {
        let tenant = tenant.and_then(|name| registry.tenant(name)).map(|t| &**t);
        crate::connections::check_submit(
            registry,
            &chain,
            included,
            tenant,
            caller,
            &mut problems,
        )?;
    }
    let params = resolve_layered(
        &chain,
        tenant_params,
        tenant_secrets.as_ref(),
        schedule,
        params,
    )
    .map_err(|mut e| problems.append(&mut e))
    .ok();
    match (included, params) {
        (Some(included), Some(params)) if problems.is_empty() => Ok(Prepared {
            secret: holdfast_workflow::params::secret_values(
                &chain,
                &params,
                &tenant_secrets
                    .map(|s| s.keys().cloned().collect())
                    .unwrap_or_default(),
            )
            .keys()
            .cloned()
            .collect(),
            chain,
            included,
            params,
        }),
        _ => Err(SubmitError::Invalid(problems)),
    }
}

/// The tenant's `[secrets]` for the parameters `chain` declares, read now
/// (files and credentials), so an edited secret file reaches the next job.
/// A secret that cannot be read is a problem of the submission, named
/// without its value.
fn read_tenant_secrets(
    tenant: &holdfast_workflow::tenant::Tenant,
    chain: &Chain,
    problems: &mut Vec<FieldError>,
) -> Map<String, Value> {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
    let mut values = Map::new();
    for (name, source) in &tenant.secrets {
        let Some(spec) = chain.params.get(name) else {
            continue;
        };
        if !spec.secret {
            // Only a parameter declared secret is kept out of argv and
            // working_dir at load; another would show the value there.
            problems.push(FieldError {
                field: name.clone(),
                message: format!(
                    "tenant {} gives it from [secrets], but chain {} does not declare it \
                     secret; add secret = true to [params.{name}]",
                    tenant.name, chain.name
                ),
            });
            continue;
        }
        match source.read(credentials.as_deref()) {
            Ok(value) => {
                values.insert(name.clone(), value);
            }
            Err(message) => problems.push(FieldError {
                field: name.clone(),
                message: format!("tenant {}: {message}", tenant.name),
            }),
        }
    }
    values
}

/// The tenant's values that `given` (a submission, a schedule's `params`)
/// may not override, each override a problem of its own: those the tenant
/// marked `locked = true`, for whoever submits; and, when it `lends_secrets`
/// to the job, every value it sets (`[params]`, `[secrets]`), since a
/// tenant that lends secrets also decides where they go (say, `db_host`
/// cannot be pointed at another server). Whoever may change them edits the
/// tenant's file.
fn locked_by_tenant(
    tenant: &holdfast_workflow::tenant::Tenant,
    chain: &Chain,
    given: &Map<String, Value>,
    lends_secrets: bool,
    problems: &mut Vec<FieldError>,
) {
    for name in given.keys() {
        if !chain.params.contains_key(name) {
            continue;
        }
        let why = if tenant.locked.contains(name) {
            " and locked there,"
        } else if lends_secrets
            && (tenant.params.contains_key(name) || tenant.secrets.contains_key(name))
        {
            ", which lends this job its secrets,"
        } else {
            continue;
        };
        problems.push(FieldError {
            field: name.clone(),
            message: format!(
                "set by tenant {}{why} so it cannot be overridden; change it in the tenant's file",
                tenant.name
            ),
        });
    }
}

/// The activities of process `until` and of every process it depends on
/// (through `after`, transitively), or why `until` cannot be used.
fn upstream_of(chain: &Chain, target: &str, until: &str) -> Result<Vec<bool>, FieldError> {
    let refuse = |message: String| FieldError {
        field: "until".into(),
        message,
    };
    if target.contains('.') {
        return Err(refuse(format!(
            "--until goes with a chain, not {target}; submit {} --until {until}",
            chain.name
        )));
    }
    match chain.process(until) {
        None => {
            let names: Vec<&str> = (chain.processes.iter())
                .filter(|p| p.handler.is_none())
                .map(|p| p.name.as_str())
                .collect();
            return Err(refuse(format!(
                "chain {} has no process {until:?}; its processes: {}",
                chain.name,
                names.join(", ")
            )));
        }
        Some(p) if p.handler.is_some() => {
            return Err(refuse(format!(
                "{until} is a handler; handlers run with every job, give a process"
            )));
        }
        Some(_) => {}
    }
    let mut included = vec![false; chain.activities.len()];
    let mut stack: Vec<usize> = (chain.activities.iter().enumerate())
        .filter(|(_, a)| a.process == until)
        .map(|(idx, _)| idx)
        .collect();
    while let Some(idx) = stack.pop() {
        if std::mem::replace(&mut included[idx], true) {
            continue;
        }
        stack.extend(chain.activities[idx].deps.iter().copied());
    }
    Ok(included)
}

/// Which activities a target selects (with `until`, that process and its
/// upstream), checked against the chain.
pub fn resolve_target(
    chain: &Chain,
    target: &str,
    until: Option<&str>,
) -> Result<Vec<bool>, FieldError> {
    let mut parts = target.splitn(3, '.');
    let _chain = parts.next();
    let process = parts.next();
    let activity = parts.next();
    let included: Vec<bool> = match (until, process, activity) {
        (Some(until), _, _) => upstream_of(chain, target, until)?,
        (None, None, _) => vec![true; chain.activities.len()],
        (None, Some(p), None) => {
            if chain.process(p).is_none() {
                return Err(FieldError {
                    field: "target".into(),
                    message: format!("chain {} has no process {p:?}", chain.name),
                });
            }
            chain.activities.iter().map(|a| a.process == p).collect()
        }
        (None, Some(p), Some(a)) => {
            if chain.activity(p, a).is_none() {
                return Err(FieldError {
                    field: "target".into(),
                    message: format!("chain {} has no activity {p}.{a}", chain.name),
                });
            }
            chain
                .activities
                .iter()
                .map(|x| x.process == p && x.name == a)
                .collect()
        }
    };
    let mut included = included;
    for (idx, activity) in chain.activities.iter().enumerate() {
        // A job's handlers answer whatever part of the chain it runs.
        if activity.handler.is_some() {
            included[idx] = true;
            continue;
        }
        if !included[idx] {
            continue;
        }
        for &source in &activity.output_refs {
            if !included[source] {
                return Err(FieldError {
                    field: "target".into(),
                    message: format!(
                        "{} uses outputs of {}, which target {target} does not run; submit \
                         {} --until {} to run it with what it depends on",
                        activity.path, chain.activities[source].path, chain.name, activity.process
                    ),
                });
            }
        }
    }
    Ok(included)
}

impl JobRun {
    /// The queue its chain's `concurrency` counts it in: the chain's, or
    /// with `concurrency_per = "tenant"` its tenant's within the chain.
    pub fn concurrency_key(&self) -> String {
        match (self.chain.concurrency_per, &self.tenant) {
            (holdfast_workflow::ConcurrencyPer::Tenant, Some(tenant)) => {
                format!("{}\u{0}{tenant}", self.chain.name)
            }
            _ => self.chain.name.clone(),
        }
    }

    /// The parameters as anyone may see them: secrets as `***`.
    pub fn shown_params(&self) -> Map<String, Value> {
        holdfast_workflow::params::masked_names(&self.params, &self.secret)
    }

    /// A new job in state `queued` with every included activity pending.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        chain: Arc<Chain>,
        target: String,
        included: &[bool],
        params: Map<String, Value>,
        tenant: Option<String>,
        priority: i32,
    ) -> JobRun {
        let n = chain.activities.len();
        let mut dependants = vec![Vec::new(); n];
        for (idx, activity) in chain.activities.iter().enumerate() {
            for &dep in &activity.deps {
                if dep < n {
                    dependants[dep].push(idx);
                }
            }
        }
        let acts = (0..n)
            .map(|idx| ActRun {
                included: included.get(idx).copied().unwrap_or(false),
                ..ActRun::default()
            })
            .collect();
        let mut job = JobRun {
            id,
            run_id: id,
            chain,
            target,
            until: None,
            params,
            secret: BTreeSet::new(),
            tenant,
            priority,
            simulated: false,
            scheduled: None,
            state: JobState::Queued,
            alerts: 0,
            started_at: None,
            acts,
            dependants,
            ready: BTreeSet::new(),
            running: 0,
            unfinished: 0,
            failed: false,
            stop: None,
            outcome: None,
            handlers_unfinished: 0,
            handlers_stop: None,
            admitted: false,
            timeout_timer: None,
        };
        job.recount();
        job
    }

    /// Recompute `waiting`, `unfinished` and `ready` from activity states.
    pub fn recount(&mut self) {
        self.unfinished = 0;
        self.handlers_unfinished = 0;
        self.ready.clear();
        for idx in 0..self.acts.len() {
            if !self.acts[idx].included {
                continue;
            }
            let waiting = self.chain.activities[idx]
                .deps
                .iter()
                .filter(|&&d| self.acts[d].included && !self.releases_dependants(d))
                .count();
            let act = &mut self.acts[idx];
            act.waiting = waiting;
            if !act.state().is_terminal() {
                self.unfinished += 1;
                if self.chain.activities[idx].handler.is_some() {
                    self.handlers_unfinished += 1;
                }
            }
            if act.state() == ActivityState::Pending && waiting == 0 && self.may_start(idx) {
                self.ready.insert(idx);
            }
        }
    }

    /// True when activity `idx` is finished in a way that lets dependants run:
    /// it succeeded, or failed under `on_failure = "continue"`.
    pub fn releases_dependants(&self, idx: usize) -> bool {
        match self.acts[idx].state() {
            ActivityState::Succeeded => true,
            ActivityState::Failed => {
                self.chain.activities[idx].on_failure == holdfast_workflow::OnFailure::Continue
            }
            _ => false,
        }
    }

    /// Outputs of the activities `idx` references, shaped for templates:
    /// `{process: {activity: {key: value}}}`.
    pub fn outputs_for(&self, idx: usize) -> Map<String, Value> {
        let mut outputs = Map::new();
        // A handler sees every activity of the job, with or without outputs,
        // so `outputs.p.a.key | default(...)` works for one that made none.
        let every: Vec<usize>;
        let sources = if self.chain.activities[idx].handler.is_some() {
            every = (self.chain.activities.iter().enumerate())
                .filter(|(i, a)| a.handler.is_none() && self.acts[*i].included)
                .map(|(i, _)| i)
                .collect();
            &every
        } else {
            &self.chain.activities[idx].output_refs
        };
        for &source in sources {
            let activity = &self.chain.activities[source];
            let entry = outputs
                .entry(activity.process.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = entry {
                // A fan-out's outputs are its items', as a list in item order.
                let value = match &self.acts[source].fanout {
                    Some(fan) => fan.outputs_list(),
                    None => Value::Object(self.acts[source].outputs.clone()),
                };
                map.insert(activity.name.clone(), value);
            }
        }
        outputs
    }

    /// The state the job ends in once nothing is unfinished.
    pub fn final_state(&self) -> JobState {
        if let Some(outcome) = self.outcome {
            return outcome;
        }
        match self.stop {
            Some(Stop::Cancel) => JobState::Cancelled,
            Some(Stop::Timeout) => JobState::Failed,
            None if self.failed => JobState::Failed,
            None => JobState::Succeeded,
        }
    }
}
