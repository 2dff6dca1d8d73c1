//! Watching every active Slurm job with one batched query per interval:
//! one `squeue` for all job ids at once, an adaptive interval (short after
//! a change, longer while nothing moves), and exit codes from Slurm's own
//! records (`scontrol` while the job is listed, `sacct` after).

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

/// What Slurm says about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// Slurm's state name (`PENDING`, `RUNNING`, `COMPLETED`, `TIMEOUT`,
    /// ...), or `LOST` when Slurm no longer knows the job.
    pub state: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
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
    pub id: u64,
    pub status: watch::Sender<Option<JobStatus>>,
}

/// The one task that queries Slurm for every watched job.
pub async fn run(mut requests: mpsc::Receiver<Watch>, health: watch::Sender<Health>) {
    let mut watched: HashMap<u64, (watch::Sender<Option<JobStatus>>, u32)> = HashMap::new();
    let mut interval = FASTEST;
    loop {
        if watched.is_empty() {
            let Some(request) = requests.recv().await else {
                return;
            };
            watched.insert(request.id, (request.status, 0));
            interval = FASTEST;
        }
        let deadline = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => {
                        watched.insert(request.id, (request.status, 0));
                        interval = FASTEST;
                    }
                    None => return,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        // An attempt that stopped watching (its task ended) is dropped.
        watched.retain(|_, (status, _)| !status.is_closed());
        if watched.is_empty() {
            continue;
        }
        let ids: Vec<u64> = watched.keys().copied().collect();
        let result = query(&ids).await;
        let changed = match &result {
            Ok(found) => {
                let mut changed = false;
                for id in ids {
                    let Some((status, misses)) = watched.get_mut(&id) else {
                        continue;
                    };
                    let now = match found.get(&id) {
                        Some(now) => now.clone(),
                        None if *misses + 1 >= MISSES_BEFORE_LOST => JobStatus {
                            state: "LOST".into(),
                            exit_code: None,
                            signal: None,
                        },
                        None => {
                            *misses += 1;
                            continue;
                        }
                    };
                    *misses = 0;
                    let is_final = now.is_final();
                    status.send_if_modified(|old| {
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
/// `squeue`; exit codes of the jobs that ended from `scontrol` (once per
/// job) or, for jobs `squeue` no longer lists, from one `sacct`.
async fn query(ids: &[u64]) -> Result<HashMap<u64, JobStatus>, String> {
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let out = Command::new("squeue")
        .args(["--noheader", "--states=all", "--format=%i|%T", "--jobs"])
        .arg(&list)
        .output()
        .await
        .map_err(|e| format!("cannot run squeue: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut found = HashMap::new();
    if out.status.success() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((id, state)) = line.trim().split_once('|') else {
                continue;
            };
            let Ok(id) = id.parse::<u64>() else {
                continue;
            };
            found.insert(
                id,
                JobStatus {
                    state: state.trim().to_string(),
                    exit_code: None,
                    signal: None,
                },
            );
        }
    } else if !stderr.contains("Invalid job id") {
        return Err(format!("squeue failed: {}", stderr.trim()));
    }
    for (id, status) in found.iter_mut() {
        if status.is_final()
            && let Some((exit_code, signal)) = scontrol_exit_code(*id).await
        {
            status.exit_code = Some(exit_code);
            status.signal = (signal != 0).then_some(signal);
        }
    }
    let missing: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| !found.contains_key(id))
        .collect();
    if !missing.is_empty() {
        found.extend(sacct(&missing).await);
    }
    Ok(found)
}

/// `ExitCode=3:0` of a job `scontrol` still lists: (exit code, signal).
async fn scontrol_exit_code(id: u64) -> Option<(i32, i32)> {
    let out = Command::new("scontrol")
        .args(["--oneliner", "show", "job", &id.to_string()])
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = text
        .split_whitespace()
        .find_map(|field| field.strip_prefix("ExitCode="))?;
    parse_exit_code(value)
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
}
