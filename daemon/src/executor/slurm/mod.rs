//! The Slurm executor: an attempt of an `executor = "slurm"` activity is a
//! batch job submitted with `sbatch --parsable` under a name carrying the
//! attempt's key, its id committed, watched by the one batched poller
//! (`poll.rs`), its output and control file on the spool directory tailed
//! (`tail.rs`) into the same log and control parser as a local attempt's,
//! and its end reported as the same [`ExecEvent`]s. A fan-out's items
//! run as the tasks of one job array (`array.rs`).

mod array;
mod poll;
mod submit;
mod tail;
mod track;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use holdfast_api::{AttemptState, LoadError};
use holdfast_workflow::{Activity, Chain, Executor, SlurmOptions};
use serde::Deserialize;
use sha2::Digest;
use tokio::sync::{mpsc, oneshot, watch};

pub use array::ArrayBatch;
pub use poll::{Health, SlurmRef};

use super::logs::LogSink;
use super::{AttemptEnd, AttemptKey, AttemptSpec, ExecEvent, KillReason, LogHub};
use crate::settings::Settings;
use submit::{find_by_name, sbatch_options, submit};
use track::watch_to_end;

/// How long an attempt waits for Slurm to confirm a `scancel` before it
/// reports the stop anyway.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// `[slurm]` in the settings file: defaults under every chain's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSettings {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub constraint: Option<String>,
    #[serde(default)]
    pub sbatch_args: Vec<String>,
}

impl SlurmSettings {
    /// The activity's options over these: its keys win, `sbatch_args`
    /// come after the settings file's.
    pub fn merged(&self, own: &SlurmOptions) -> SlurmOptions {
        SlurmOptions {
            partition: own.partition.clone().or(self.partition.clone()),
            account: own.account.clone().or(self.account.clone()),
            qos: own.qos.clone().or(self.qos.clone()),
            constraint: own.constraint.clone().or(self.constraint.clone()),
            sbatch_args: self
                .sbatch_args
                .iter()
                .chain(&own.sbatch_args)
                .cloned()
                .collect(),
        }
    }
}

/// What a Slurm attempt needs beyond the common [`AttemptSpec`].
#[derive(Debug, Clone)]
pub struct SlurmAttempt {
    client: Arc<Client>,
    /// The Slurm job name: `hf-<daemon>-<job>-<activity index>-<attempt>`.
    pub name: String,
    /// The attempt's directory on the spool: script, output, control file.
    pub dir: PathBuf,
    pub options: SlurmOptions,
    pub cpus: Option<u32>,
    pub memory_max: Option<u64>,
    /// Set when a restarted daemon adopts an attempt an earlier run left
    /// `running`: its Slurm job id when it was committed, else None (found
    /// by its name). Nothing is submitted unless Slurm never had it.
    pub adopt: Option<Option<u64>>,
    /// Where reading the control file starts: 0, or for an adopted attempt
    /// how far the earlier run applied it (committed with its effects).
    pub control_offset: u64,
    /// A fan-out item's attempt: its task in the job array (the item's
    /// index); `name` is then the array's.
    pub task: Option<u32>,
    /// The array a new item attempt is submitted in, with the other items
    /// started with it.
    pub batch: Option<Arc<ArrayBatch>>,
    /// An adopted array task's own Slurm job id, when committed.
    pub task_job_id: Option<u64>,
}

/// The daemon's side of Slurm: the poller's queue and its health.
#[derive(Debug)]
pub struct Client {
    watch: mpsc::Sender<poll::Watch>,
    /// Names this daemon's jobs, so two daemons on one cluster never take
    /// each other's jobs for their own.
    tag: String,
    /// Arrays already given a `scancel` for a job cancel (one for all the
    /// items' tasks).
    cancelled: std::sync::Mutex<std::collections::HashSet<u64>>,
}

impl Client {
    /// Start the poller. Call inside the runtime.
    pub fn start(settings: &Settings, health: watch::Sender<Health>) -> Arc<Client> {
        let digest = sha2::Sha256::digest(settings.database().display().to_string().as_bytes());
        let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        let (watch_tx, watch_rx) = mpsc::channel(1024);
        tokio::spawn(poll::run(watch_rx, health));
        Arc::new(Client {
            watch: watch_tx,
            tag,
            cancelled: std::sync::Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// True for the first cancel of array `id`: its tasks are cancelled
    /// with one `scancel ARRAYID`.
    fn cancel_array_once(&self, id: u64) -> bool {
        self.cancelled
            .lock()
            .map(|mut set| set.insert(id))
            .unwrap_or(true)
    }

    fn prefix(&self) -> String {
        format!("hf-{}-", self.tag)
    }

    /// The Slurm side of an attempt, for activities that run on Slurm.
    pub fn attempt(
        self: &Arc<Self>,
        activity: &Activity,
        key: AttemptKey,
        settings: &Settings,
    ) -> Option<SlurmAttempt> {
        if activity.executor != Executor::Slurm {
            return None;
        }
        let name = format!("{}{}", self.prefix(), key.name());
        Some(SlurmAttempt {
            client: self.clone(),
            dir: settings.slurm_spool().join(&name),
            name,
            options: settings.slurm.merged(&activity.slurm),
            cpus: activity.cpus,
            memory_max: activity.memory_max,
            adopt: None,
            control_offset: 0,
            task: None,
            batch: None,
            task_job_id: None,
        })
    }
}

/// Check, when a chain is loaded, that this host can submit its Slurm
/// activities: `sbatch` must be in the daemon's PATH. slurmctld being
/// unreachable is not a load error: attempts wait for it.
pub fn check_chain(chain: &Chain) -> Vec<LoadError> {
    let Some(first) = chain
        .activities
        .iter()
        .find(|a| a.executor == Executor::Slurm)
    else {
        return Vec::new();
    };
    if find_in_path("sbatch").is_some() {
        return Vec::new();
    }
    let at = holdfast_workflow::setting_position(chain, first, "executor");
    vec![LoadError {
        file: chain.file.display().to_string(),
        line: at.map(|(line, _)| line),
        column: at.map(|(_, column)| column),
        message: format!(
            "{}: executor = \"slurm\", but sbatch is not in the daemon's PATH; install the \
             Slurm client commands (slurm-client) and configure the cluster, or use executor = \
             \"local\"",
            first.path
        ),
    }]
}

/// `sbatch` as the daemon's own PATH finds it. The job's environment
/// (which may set `PATH`) is given to the command, and a program name
/// would be looked up in that: a chain must not choose what the daemon
/// runs.
fn sbatch_command() -> tokio::process::Command {
    tokio::process::Command::new(find_in_path("sbatch").unwrap_or_else(|| PathBuf::from("sbatch")))
}

/// Whether this host has the Slurm client (`sbatch` on the daemon's PATH).
pub fn available() -> bool {
    find_in_path("sbatch").is_some()
}

/// Whether `sbatch` is on the daemon's PATH, looked up at most once per
/// [`PING_FRESH`]: `daemon.info` asks on every call, and a look-up is a
/// `stat` of each PATH directory.
fn sbatch_seen_lately() -> bool {
    static SEEN: std::sync::Mutex<Option<(std::time::Instant, bool)>> = std::sync::Mutex::new(None);
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match *seen {
        Some((at, found)) if at.elapsed() < PING_FRESH => found,
        _ => {
            let found = find_in_path("sbatch").is_some();
            *seen = Some((std::time::Instant::now(), found));
            found
        }
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// How long an answer of `scontrol ping` is shown before it is asked
/// again.
const PING_FRESH: Duration = Duration::from_secs(5);

/// The last answer of `scontrol ping` and when it came.
#[derive(Clone)]
struct Ping {
    at: std::time::Instant,
    text: String,
}

/// The shared [`Ping`], and whether a ping runs now.
static PING: std::sync::Mutex<(Option<Ping>, bool)> = std::sync::Mutex::new((None, false));

/// Ask `scontrol ping` in the background, unless a ping runs already:
/// `daemon.info` is every client's handshake and must not wait for (or
/// start one process per call of) a command that hangs while slurmctld is
/// away.
pub fn refresh_ping() {
    {
        let mut ping = PING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ping.1 {
            return;
        }
        ping.1 = true;
    }
    tokio::spawn(async {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::process::Command::new("scontrol")
                .arg("ping")
                .output(),
        )
        .await;
        let text = match answer {
            Ok(Ok(out)) if String::from_utf8_lossy(&out.stdout).contains("is UP") => {
                "slurmctld reachable".to_string()
            }
            Ok(Ok(out)) => format!(
                "slurmctld unreachable: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ),
            Ok(Err(e)) => format!("cannot run scontrol: {e}"),
            Err(_) => "slurmctld unreachable: scontrol ping took over 5s".to_string(),
        };
        let mut ping = PING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *ping = (
            Some(Ping {
                at: std::time::Instant::now(),
                text,
            }),
            false,
        );
    });
}

/// The Slurm line of `hfctl info`: None on a host without `sbatch`;
/// else whether `scontrol ping` reached slurmctld (its last answer, at
/// most [`PING_FRESH`] old or being asked again), and how the poller's
/// last query went. Never waits for a Slurm command.
pub fn describe_health(health: Health) -> Option<String> {
    if !sbatch_seen_lately() {
        return None;
    }
    let last = PING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .0
        .clone();
    if last.as_ref().is_none_or(|p| p.at.elapsed() > PING_FRESH) {
        refresh_ping();
    }
    let (mut text, checked) = match last {
        Some(ping) => (ping.text, Some(ping.at.elapsed().as_secs())),
        None => ("slurmctld not checked yet".to_string(), None),
    };
    match health.last_query {
        Some(at) => {
            let ago = at.elapsed().unwrap_or_default().as_secs();
            text.push_str(&format!(
                "; last query {ago}s ago, {} jobs watched",
                health.watched
            ));
            if let Some(error) = &health.error {
                text.push_str(&format!(" (it failed: {error}; attempts wait)"));
            }
        }
        None => text.push_str("; no Slurm job watched yet"),
    }
    if let Some(checked) = checked {
        text.push_str(&format!("; scontrol ping {checked}s ago"));
    }
    Some(text)
}

/// What `hfctl describe` says about an activity's executor.
pub fn describe(activity: &Activity, settings: &Settings) -> Option<String> {
    if activity.executor != Executor::Slurm {
        return None;
    }
    let options = settings.slurm.merged(&activity.slurm);
    let mut parts = vec!["slurm (sbatch".to_string()];
    parts.extend(sbatch_options(
        &options,
        activity.timeout,
        activity.memory_max,
        activity.cpus,
    ));
    let mut text = parts.join(" ") + ")";
    if activity.foreach.is_some() {
        text.push_str(&format!(
            "; items as one job array (--array=<items>{})",
            activity
                .max_parallel
                .map(|max| format!("%{max}"))
                .unwrap_or_default()
        ));
    }
    if activity.memory_max.is_some() || activity.cpus.is_some() {
        // Without Slurm's cgroup plugins (task/cgroup) they only place the job.
        text.push_str(
            "; --mem and --cpus-per-task are enforced only where the cluster runs task/cgroup",
        );
    }
    Some(text)
}

/// An attempt of a job array that ends before it joins leaves its array:
/// one that could not be prepared lets the array go out for the others,
/// one that was `stopped` (its job cancelled or timed out, the daemon
/// stopping: every member is) keeps it from going out. Any other attempt
/// has nothing to leave.
pub(super) async fn leave_array(spec: &AttemptSpec, stopped: bool) {
    if let Some(slurm) = &spec.slurm
        && let Some(batch) = &slurm.batch
    {
        batch.leave(spec, slurm, stopped).await;
    }
}

/// Run one attempt as a Slurm batch job (or adopt the one an earlier
/// daemon submitted), to its end. None: the daemon is stopping and the job
/// is left running in Slurm, for the next start to adopt.
pub(super) async fn run(
    spec: AttemptSpec,
    events: &mpsc::Sender<ExecEvent>,
    mut kill: oneshot::Receiver<KillReason>,
    hub: &LogHub,
) -> Option<AttemptEnd> {
    let key = spec.key;
    let Some(slurm) = spec.slurm.clone() else {
        return Some(AttemptEnd::spawn_error("not a Slurm attempt".into()));
    };
    let masker = crate::mask::Masker::new(spec.secrets.iter().cloned());
    let sink = Arc::new(
        LogSink::new(spec.log_path.clone(), spec.log_max_bytes, hub.register(key))
            .masking(masker.clone()),
    );
    let finish = |sink: &LogSink, mut end: AttemptEnd| {
        end.log_bytes = sink.written();
        end.log_dropped = sink.dropped();
        end.log_error = sink.create_error();
        if end.state != AttemptState::Succeeded {
            end.error_tail = sink.tail();
        }
        end
    };
    let output = slurm.dir.join("output");
    let control_file = slurm.dir.join("control");
    let id = match slurm.adopt {
        Some(Some(id)) => id,
        Some(None) => match find_by_name(&slurm.name, slurm.task.is_some()).await {
            Some(id) => id,
            None => {
                // The daemon died between committing the attempt and
                // Slurm accepting it: nothing ran, it is run again.
                let mut end = AttemptEnd::spawn_error(format!(
                    "Slurm has no job named {}: the daemon stopped before submitting it",
                    slurm.name
                ));
                end.state = AttemptState::Interrupted;
                return Some(finish(&sink, end));
            }
        },
        None => match &slurm.batch {
            Some(batch) => match batch.join(&spec, &slurm, &sink, &mut kill).await {
                Ok(id) => id,
                Err(end) => return Some(finish(&sink, end)),
            },
            None => match submit(&spec, &slurm, &sink).await {
                Ok(id) => id,
                Err(end) => return Some(finish(&sink, end)),
            },
        },
    };
    let target = match slurm.task {
        Some(task) => SlurmRef::Task { array: id, task },
        None => SlurmRef::Job(id),
    };
    // The id is recorded first: the note may wait for the log writer.
    if slurm.adopt != Some(Some(id)) {
        let _ = events
            .send(ExecEvent::SlurmSubmitted {
                key,
                slurm_job_id: id,
            })
            .await;
    }
    if slurm.adopt.is_some() {
        sink.note(&format!(
            "submitted to Slurm as job {target} ({}); adopted after a daemon restart, its output \
             so far follows",
            slurm.name
        ))
        .await;
    } else {
        sink.note(&format!(
            "submitted to Slurm as job {target} ({})",
            slurm.name
        ))
        .await;
    }
    watch_to_end(
        spec,
        slurm,
        target,
        output,
        control_file,
        sink,
        masker,
        events,
        kill,
    )
    .await
}
