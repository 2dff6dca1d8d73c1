//! Watching every active Slurm job with one batched query per interval:
//! one `squeue` for all job ids at once (array tasks listed one by one),
//! an adaptive interval (short after a change, longer while nothing
//! moves), and exit codes from Slurm's own records (`scontrol` while the
//! job is listed, once per job or per array; `sacct` after, an array task
//! by its own job id).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tokio::process::Command;
use tokio::sync::{mpsc, watch};

/// The interval after a change or a new job; it doubles up to
/// [`SLOWEST`] while nothing changes.
const FASTEST: Duration = Duration::from_millis(250);
const SLOWEST: Duration = Duration::from_secs(5);
/// Queries a job may be missing from both `squeue` and `sacct` before it
/// is given up as lost.
const MISSES_BEFORE_LOST: u32 = 20;

/// A Slurm job an attempt runs as: a plain batch job, or one task of a
/// job array (a fan-out item; the task is the item's index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlurmRef {
    Job(u64),
    Task { array: u64, task: u32 },
}

impl SlurmRef {
    /// The id `squeue --jobs` takes for it (an array's id lists its tasks).
    fn queried(self) -> u64 {
        match self {
            SlurmRef::Job(id) | SlurmRef::Task { array: id, .. } => id,
        }
    }

    /// `628` or `628_3`, as `squeue` prints it.
    fn parse(text: &str) -> Option<SlurmRef> {
        match text.split_once('_') {
            None => text.parse().ok().map(SlurmRef::Job),
            Some((array, task)) => Some(SlurmRef::Task {
                array: array.parse().ok()?,
                task: task.parse().ok()?,
            }),
        }
    }
}

impl std::fmt::Display for SlurmRef {
    /// `628` or `628_3` (what `scancel` and `squeue` take).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlurmRef::Job(id) => write!(f, "{id}"),
            SlurmRef::Task { array, task } => write!(f, "{array}_{task}"),
        }
    }
}

/// What Slurm says about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// Slurm's state name (`PENDING`, `RUNNING`, `COMPLETED`, `TIMEOUT`,
    /// ...), or `LOST` when Slurm no longer knows the job.
    pub state: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// An array task's own job id, once Slurm started it.
    pub task_job_id: Option<u64>,
}

impl JobStatus {
    /// True once the job will not change any more.
    pub fn is_final(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "REQUEUE_HOLD"
                | "REQUEUE_FED"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
                | "STOPPED"
                | "RESV_DEL_HOLD"
        )
    }
}

/// How the cluster answered the last query (for `hfctl info`).
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub last_query: Option<SystemTime>,
    /// Why the last query failed (slurmctld unreachable, ...).
    pub error: Option<String>,
    pub watched: usize,
}

/// A job to watch: its status goes to `status` until final.
pub struct Watch {
    pub id: SlurmRef,
    /// An array task's own job id when already known (committed).
    pub task_job_id: Option<u64>,
    pub status: watch::Sender<Option<JobStatus>>,
}

/// One watched job: where its status goes, its queries missed, and (an
/// array task) its own job id once known.
struct Watched {
    status: watch::Sender<Option<JobStatus>>,
    misses: u32,
    task_job_id: Option<u64>,
}

/// The one task that queries Slurm for every watched job.
pub async fn run(mut requests: mpsc::Receiver<Watch>, health: watch::Sender<Health>) {
    let mut watched: HashMap<SlurmRef, Watched> = HashMap::new();
    let add = |watched: &mut HashMap<SlurmRef, Watched>, request: Watch| {
        watched.insert(
            request.id,
            Watched {
                status: request.status,
                misses: 0,
                task_job_id: request.task_job_id,
            },
        );
    };
    let mut interval = FASTEST;
    loop {
        if watched.is_empty() {
            let Some(request) = requests.recv().await else {
                return;
            };
            add(&mut watched, request);
            interval = FASTEST;
        }
        let deadline = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => {
                        add(&mut watched, request);
                        interval = FASTEST;
                    }
                    None => return,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        // An attempt that stopped watching (its task ended) is dropped.
        watched.retain(|_, w| !w.status.is_closed());
        if watched.is_empty() {
            continue;
        }
        let ids: Vec<(SlurmRef, Option<u64>)> =
            watched.iter().map(|(id, w)| (*id, w.task_job_id)).collect();
        let result = query(&ids).await;
        let changed = match &result {
            Ok(found) => {
                let mut changed = false;
                for (id, _) in ids {
                    let Some(w) = watched.get_mut(&id) else {
                        continue;
                    };
                    let now = match found.get(&id) {
                        Some(now) => now.clone(),
                        None if w.misses + 1 >= MISSES_BEFORE_LOST => JobStatus {
                            state: "LOST".into(),
                            exit_code: None,
                            signal: None,
                            task_job_id: w.task_job_id,
                        },
                        None => {
                            w.misses += 1;
                            continue;
                        }
                    };
                    w.misses = 0;
                    w.task_job_id = now.task_job_id.or(w.task_job_id);
                    let is_final = now.is_final();
                    w.status.send_if_modified(|old| {
                        let new = old.as_ref() != Some(&now);
                        if new {
                            changed = true;
                            *old = Some(now);
                        }
                        new
                    });
                    if is_final {
                        watched.remove(&id);
                    }
                }
                changed
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = watched.len(), "cannot query Slurm; its attempts wait");
                false
            }
        };
        health.send_replace(Health {
            last_query: Some(SystemTime::now()),
            error: result.err(),
            watched: watched.len(),
        });
        interval = if changed {
            FASTEST
        } else {
            (interval * 2).min(SLOWEST)
        };
    }
}

/// The status of each of `ids` Slurm still knows: states from one
/// `squeue` (`-r`: array tasks one per line, with their own job ids);
/// exit codes of the jobs that ended from `scontrol` (once per job, or
/// once per array for all its tasks) or, for jobs `squeue` no longer
/// lists, from one `sacct` (an array task by its own job id, given with
/// it when known).
async fn query(ids: &[(SlurmRef, Option<u64>)]) -> Result<HashMap<SlurmRef, JobStatus>, String> {
    let mut queried: Vec<u64> = ids.iter().map(|(id, _)| id.queried()).collect();
    queried.sort_unstable();
    queried.dedup();
    let list = queried
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new("squeue")
        .args([
            "--noheader",
            "--array",
            "--states=all",
            "--format=%i|%T|%A",
            "--jobs",
        ])
        .arg(&list)
        .output()
        .await
        .map_err(|e| format!("cannot run squeue: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut found = HashMap::new();
    if out.status.success() {
        // An array lists all its tasks; only the watched ones count.
        found = parse_squeue(&String::from_utf8_lossy(&out.stdout));
        found.retain(|id, _| ids.iter().any(|(watched, _)| watched == id));
    } else if !stderr.contains("Invalid job id") {
        return Err(format!("squeue failed: {}", stderr.trim()));
    }
    // Exit codes: a plain job's own, and one scontrol per array with a
    // task that ended.
    let mut arrays: Vec<u64> = Vec::new();
    for (id, status) in found.iter_mut() {
        if !status.is_final() {
            continue;
        }
        match id {
            SlurmRef::Job(job) => {
                if let Some((exit_code, signal)) = scontrol_exit_codes(*job)
                    .await
                    .and_then(|codes| codes.get(id).copied())
                {
                    status.exit_code = Some(exit_code);
                    status.signal = (signal != 0).then_some(signal);
                }
            }
            SlurmRef::Task { array, .. } => {
                if !arrays.contains(array) {
                    arrays.push(*array);
                }
            }
        }
    }
    for array in arrays {
        let Some(codes) = scontrol_exit_codes(array).await else {
            continue;
        };
        for (id, (exit_code, signal)) in codes {
            if let Some(status) = found.get_mut(&id).filter(|s| s.is_final()) {
                status.exit_code = Some(exit_code);
                status.signal = (signal != 0).then_some(signal);
            }
        }
    }
    // Jobs squeue no longer lists: Slurm's records, an array task by its
    // own job id (sacct does not take an array's id).
    let mut by_record: HashMap<u64, SlurmRef> = HashMap::new();
    for (id, task_job_id) in ids {
        if found.contains_key(id) {
            continue;
        }
        match (id, task_job_id) {
            (SlurmRef::Job(job), _) => {
                by_record.insert(*job, *id);
            }
            (SlurmRef::Task { .. }, Some(own)) => {
                by_record.insert(*own, *id);
            }
            (SlurmRef::Task { .. }, None) => {}
        }
    }
    if !by_record.is_empty() {
        let records: Vec<u64> = by_record.keys().copied().collect();
        for (record, mut status) in sacct(&records).await {
            if let Some(id) = by_record.get(&record) {
                if matches!(id, SlurmRef::Task { .. }) {
                    status.task_job_id = Some(record);
                }
                found.insert(*id, status);
            }
        }
    }
    Ok(found)
}

/// `squeue --array --format=%i|%T|%A` lines: `628|RUNNING|628` for a job,
/// `628_3|RUNNING|630` for an array task (630 its own id once it runs; a
/// pending task shows the array's).
pub fn parse_squeue(text: &str) -> HashMap<SlurmRef, JobStatus> {
    let mut found = HashMap::new();
    for line in text.lines() {
        let mut fields = line.trim().split('|');
        let (Some(id), Some(state)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(id) = SlurmRef::parse(id.trim()) else {
            continue;
        };
        let state = state.trim().to_string();
        let task_job_id = match id {
            SlurmRef::Task { .. } if state != "PENDING" => {
                fields.next().and_then(|own| own.trim().parse().ok())
            }
            _ => None,
        };
        found.insert(
            id,
            JobStatus {
                state,
                exit_code: None,
                signal: None,
                task_job_id,
            },
        );
    }
    found
}

/// `ExitCode=3:0` of a job `scontrol` still lists, or of every task of an
/// array (`scontrol` lists each with its `ArrayTaskId=`).
async fn scontrol_exit_codes(id: u64) -> Option<HashMap<SlurmRef, (i32, i32)>> {
    let out = Command::new("scontrol")
        .args(["--oneliner", "show", "job", &id.to_string()])
        .output()
        .await
        .ok()?;
    Some(parse_scontrol(&String::from_utf8_lossy(&out.stdout)))
}

/// `scontrol --oneliner show job` lines: exit code and signal by job, or
/// by array task for the lines with a single `ArrayTaskId=`.
pub fn parse_scontrol(text: &str) -> HashMap<SlurmRef, (i32, i32)> {
    let mut codes = HashMap::new();
    for line in text.lines() {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name).and_then(|f| f.strip_prefix('=')))
        };
        let Some(exit) = field("ExitCode").and_then(parse_exit_code) else {
            continue;
        };
        let id = match (field("ArrayJobId"), field("ArrayTaskId")) {
            (Some(array), Some(task)) => match (array.parse(), task.parse()) {
                (Ok(array), Ok(task)) => SlurmRef::Task { array, task },
                // A range of tasks still pending.
                _ => continue,
            },
            _ => match field("JobId").and_then(|id| id.parse().ok()) {
                Some(id) => SlurmRef::Job(id),
                None => continue,
            },
        };
        codes.insert(id, exit);
    }
    codes
}

/// Finished jobs from Slurm's records: `sacct -c` (the jobcomp file) on a
/// cluster without an accounting database, else `sacct`.
async fn sacct(ids: &[u64]) -> HashMap<u64, JobStatus> {
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    for completion in [true, false] {
        let mut command = Command::new("sacct");
        if completion {
            command.arg("--completion");
        }
        let Ok(out) = command
            .args([
                "--noheader",
                "--parsable2",
                "--format=JobID,State,ExitCode",
                "--jobs",
            ])
            .arg(&list)
            .output()
            .await
        else {
            return HashMap::new();
        };
        if out.status.success() {
            return parse_sacct(&String::from_utf8_lossy(&out.stdout));
        }
    }
    HashMap::new()
}

/// `sacct --parsable2` lines `ID|STATE|EXIT:SIGNAL`; job steps
/// (`ID.batch`) are skipped, and `CANCELLED by 0` is `CANCELLED`.
pub fn parse_sacct(text: &str) -> HashMap<u64, JobStatus> {
    let mut found = HashMap::new();
    for line in text.lines() {
        let mut fields = line.trim().split('|');
        let (Some(id), Some(state), Some(exit)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(id) = id.parse::<u64>() else {
            continue;
        };
        let state = state.split_whitespace().next().unwrap_or_default();
        let (exit_code, signal) = parse_exit_code(exit).unwrap_or((0, 0));
        found.insert(
            id,
            JobStatus {
                state: state.to_string(),
                exit_code: Some(exit_code),
                signal: (signal != 0).then_some(signal),
                task_job_id: None,
            },
        );
    }
    found
}

/// `3:0` → (3, 0).
fn parse_exit_code(text: &str) -> Option<(i32, i32)> {
    let (code, signal) = text.trim().split_once(':')?;
    Some((code.parse().ok()?, signal.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sacct_lines_give_state_and_exit_code() {
        let found = parse_sacct("7|FAILED|3:0\n7.batch|FAILED|3:0\n8|CANCELLED by 0|0:15\nbad\n");
        assert_eq!(found.len(), 2);
        assert_eq!(found[&7].state, "FAILED");
        assert_eq!(found[&7].exit_code, Some(3));
        assert_eq!(found[&8].state, "CANCELLED");
        assert_eq!(found[&8].signal, Some(15));
        assert!(found[&8].is_final());
    }

    /// Array tasks are listed one by one; a running task gives its own
    /// job id, a pending one the array's (not taken as its own).
    #[test]
    fn squeue_lines_give_jobs_and_array_tasks() {
        let found = parse_squeue("7|RUNNING|7\n628_1|RUNNING|629\n628_3|PENDING|628\nbad\n");
        assert_eq!(found.len(), 3);
        assert_eq!(found[&SlurmRef::Job(7)].task_job_id, None);
        let task = SlurmRef::Task {
            array: 628,
            task: 1,
        };
        assert_eq!(found[&task].task_job_id, Some(629));
        assert_eq!(task.to_string(), "628_1");
        let pending = SlurmRef::Task {
            array: 628,
            task: 3,
        };
        assert_eq!(found[&pending].state, "PENDING");
        assert_eq!(found[&pending].task_job_id, None);
    }

    /// `scontrol show job ARRAYID` gives every task's exit code; a line for
    /// a range of pending tasks is skipped.
    #[test]
    fn scontrol_lines_give_exit_codes_of_jobs_and_tasks() {
        let codes = parse_scontrol(
            "JobId=628 ArrayJobId=628 ArrayTaskId=4 JobState=COMPLETED ExitCode=0:0\n\
             JobId=630 ArrayJobId=628 ArrayTaskId=3 JobState=FAILED ExitCode=3:0\n\
             JobId=631 ArrayJobId=628 ArrayTaskId=5-6%2 JobState=PENDING ExitCode=0:0\n\
             JobId=7 JobName=x JobState=FAILED ExitCode=0:9\n",
        );
        assert_eq!(codes.len(), 3);
        assert_eq!(
            codes[&SlurmRef::Task {
                array: 628,
                task: 3
            }],
            (3, 0)
        );
        assert_eq!(codes[&SlurmRef::Job(7)], (0, 9));
    }
}
