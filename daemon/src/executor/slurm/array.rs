//! A fan-out on Slurm: the items the engine starts together are one job
//! array (`sbatch --array=<items>%<max_parallel>`), each item's attempt
//! one task whose index is the item's. Each attempt's task joins the
//! array's [`ArrayBatch`]; the last to join submits it for all, and each
//! then watches its own task (`ARRAYID_ITEM`) like a plain Slurm job.
//!
//! One script serves every task, so what differs between items (argv,
//! `HF_ITEM`, `HF_ATTEMPT`, the checkpoint, the control file...) is in a
//! per-task script `<array dir>/<item>/task.sh` written before the
//! submission, and the environment all items share goes through `sbatch`
//! as for a plain job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use holdfast_workflow::Activity;
use tokio::sync::{Mutex, OnceCell, oneshot, watch};

use super::submit::{caps_and_user, prepare_dir, run_sbatch};
use super::{Client, SlurmAttempt};
use crate::executor::logs::LogSink;
use crate::executor::{AttemptEnd, AttemptKey, AttemptSpec, KillReason};
use crate::settings::Settings;

/// The script of every task: it runs its item's own script.
fn array_script(dir: &Path) -> String {
    format!(
        "#!/bin/sh\nexec /bin/sh {}/\"$SLURM_ARRAY_TASK_ID\"/task.sh\n",
        quote(&dir.display().to_string())
    )
}

/// `'text'` for the shell, a `'` inside as `'\''`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// A name `export` takes: a letter or `_`, then letters, digits and `_`.
fn shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One item's part of an array: what its task script sets and runs.
#[derive(Debug)]
struct Member {
    task: u32,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: Option<String>,
    dir: PathBuf,
    /// Who the task runs as (None: the daemon's user).
    identity: Option<crate::run_as::Identity>,
}

/// The items submitted as one job array. Made by the engine when it
/// starts them (each attempt committed first, with the array's name); each
/// item's attempt joins it, and the last one in submits.
#[derive(Debug)]
pub struct ArrayBatch {
    /// The array's Slurm job name: `hf-<daemon>-<first item's key>a`.
    pub name: String,
    /// `<slurm_spool>/<name>`: the array's script, a directory per task.
    pub dir: PathBuf,
    max_parallel: Option<usize>,
    /// Attempts handed to the executor; counted before any joins.
    expected: AtomicUsize,
    joined: Mutex<Joined>,
    result: watch::Sender<Option<Result<u64, (String, bool)>>>,
    /// The members' user, looked up once for all of them
    /// (`executor/prepare.rs`); Err: the message, and whether it passes.
    pub(in crate::executor) identity:
        OnceCell<Result<Option<crate::run_as::Identity>, (String, bool)>>,
}

/// The members in so far, and whether the array was stopped before it
/// went out (then it never does).
#[derive(Debug, Default)]
struct Joined {
    members: Vec<Member>,
    stopped: bool,
}

impl ArrayBatch {
    pub fn new(
        client: &Client,
        first: AttemptKey,
        settings: &Settings,
        activity: &Activity,
    ) -> Arc<Self> {
        let name = format!("{}{}a", client.prefix(), first.name());
        Arc::new(ArrayBatch {
            dir: settings.slurm_spool().join(&name),
            name,
            max_parallel: activity.max_parallel,
            expected: AtomicUsize::new(0),
            joined: Mutex::new(Joined::default()),
            result: watch::channel(None).0,
            identity: OnceCell::new(),
        })
    }

    /// One more attempt will join (called by the engine as it hands each
    /// attempt to the executor, before any of them runs).
    pub fn expect_one(&self) {
        self.expected.fetch_add(1, Ordering::AcqRel);
    }

    /// Join the array with this attempt; once every expected attempt has,
    /// the array is submitted. The array's job id, or how this attempt
    /// ended without one. A stop (`kill`) before the array went out ends
    /// this attempt and keeps the array from ever going out: an array's
    /// members are stopped together (a cancel, a job timeout, the daemon
    /// stopping). A stop after it went out is handed on in `kill` to the
    /// watch of the task, which cancels it.
    pub(super) async fn join(
        &self,
        spec: &AttemptSpec,
        slurm: &SlurmAttempt,
        sink: &Arc<LogSink>,
        kill: &mut oneshot::Receiver<KillReason>,
    ) -> Result<u64, AttemptEnd> {
        let Some(task) = slurm.task else {
            return Err(AttemptEnd::spawn_error("not an array task".into()));
        };
        // An attempt with nothing to run leaves the array, which still
        // goes out for the others (maybe by this attempt, the last in).
        let member = (!spec.argv.is_empty()).then(|| Member {
            task,
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            working_dir: spec.working_dir.clone(),
            dir: slurm.dir.clone(),
            identity: spec.identity.clone(),
        });
        let mut result = self.result.subscribe();
        let leaving = member.is_none();
        self.arrive(spec, slurm, member, false).await;
        if leaving {
            return Err(AttemptEnd::spawn_error("empty command".into()));
        }
        let mut watching_kill = true;
        let answer = loop {
            // The select only wakes; its branches hold the watch's guard,
            // so the waiting on the lock comes after it.
            let stop = tokio::select! {
                answer = result.wait_for(Option::is_some) => {
                    let answer: Option<Result<u64, (String, bool)>> = match answer {
                        Ok(answer) => answer.clone(),
                        Err(_) => None,
                    };
                    break answer;
                }
                stop = &mut *kill, if watching_kill => stop,
            };
            watching_kill = false;
            // Err: the engine dropped its handle, nobody will ask this
            // attempt to stop.
            let Ok(reason) = stop else {
                continue;
            };
            let mut joined = self.joined.lock().await;
            let went_out = self.result.borrow().is_some();
            if !went_out {
                joined.stopped = true;
                return Err(AttemptEnd::stopped_before_start(reason));
            }
            drop(joined);
            // It went out meanwhile: the task's watch stops it.
            let (again, rearmed) = oneshot::channel();
            let _ = again.send(reason);
            *kill = rearmed;
        };
        match answer {
            Some(Ok(id)) => Ok(id),
            Some(Err((message, transient))) => {
                sink.note(&message).await;
                let mut end = AttemptEnd::spawn_error(message);
                end.transient = transient;
                Err(end)
            }
            None => Err(AttemptEnd::spawn_error(
                "the job array was never submitted".into(),
            )),
        }
    }

    /// An expected attempt that will not join after all: the array goes
    /// out without it for the others, at once if they have all joined;
    /// never, when it was `stopped` (cancelled, the job timed out, the
    /// daemon stopping), which stops every member.
    pub(super) async fn leave(&self, spec: &AttemptSpec, slurm: &SlurmAttempt, stopped: bool) {
        self.arrive(spec, slurm, None, stopped).await;
    }

    /// One expected attempt arrives, as `member` or leaving (None), or
    /// stops the array; the last one in submits the array when any member
    /// joined and nothing stopped it.
    async fn arrive(
        &self,
        spec: &AttemptSpec,
        slurm: &SlurmAttempt,
        member: Option<Member>,
        stop: bool,
    ) {
        let mut joined = self.joined.lock().await;
        joined.stopped |= stop;
        match member {
            Some(member) => joined.members.push(member),
            None => {
                self.expected.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if !joined.stopped
            && !joined.members.is_empty()
            && joined.members.len() >= self.expected.load(Ordering::Acquire)
        {
            let members: Vec<Member> = joined.members.drain(..).collect();
            let submitted = self.submit(spec, slurm, members).await;
            self.result.send_replace(Some(submitted));
        }
    }

    /// Write the array's and each task's script, then one `sbatch
    /// --array`, as the members' user (the first member's: they are items
    /// of one activity), not that of the attempt that happens to submit,
    /// which may be one leaving without a user.
    async fn submit(
        &self,
        spec: &AttemptSpec,
        slurm: &SlurmAttempt,
        mut members: Vec<Member>,
    ) -> Result<u64, (String, bool)> {
        members.sort_by_key(|m| m.task);
        let prepared = self.prepare(&members).map_err(|e| {
            (
                format!(
                    "cannot prepare the job array's directory {} on the Slurm spool: {e}; check \
                     the slurm_spool setting",
                    self.dir.display()
                ),
                false,
            )
        })?;
        let mut command = super::sbatch_command();
        let tasks = members
            .iter()
            .map(|m| m.task.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let throttle = self
            .max_parallel
            .map(|max| format!("%{max}"))
            .unwrap_or_default();
        command
            .arg("--parsable")
            .arg(format!("--job-name={}", self.name))
            .arg(format!("--array={tasks}{throttle}"))
            .arg(format!("--output={}/%a/output", self.dir.display()))
            .arg("--open-mode=append")
            .arg(format!("--chdir={}", self.dir.display()));
        let identity = members.first().and_then(|m| m.identity.as_ref());
        caps_and_user(&mut command, spec, slurm, identity);
        command
            .arg(self.dir.join("job.sh"))
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(&prepared)
            .stdin(std::process::Stdio::null());
        if let Some(identity) = identity {
            command
                .env("HOME", &identity.home)
                .env("USER", &identity.name)
                .env("LOGNAME", &identity.name);
        }
        run_sbatch(command).await.map_err(|(message, transient)| {
            if message.contains("Invalid job array specification") {
                let last = members.last().map_or(0, |m| m.task);
                return (
                    format!(
                        "{message} (the array task is the item's index, up to {last} here; \
                         the cluster's MaxArraySize bounds it: see `scontrol show config`)"
                    ),
                    transient,
                );
            }
            (message, transient)
        })
    }

    /// The array's directory and script, a directory per task with its
    /// script and control file (the task's user's); the environment every
    /// task shares, passed through `sbatch`.
    fn prepare(&self, members: &[Member]) -> std::io::Result<BTreeMap<String, String>> {
        use std::os::unix::fs::PermissionsExt;
        prepare_dir(&self.dir, None, "job.sh", &array_script(&self.dir))?;
        // Each task's user reaches its own directory inside, nothing more.
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o711))?;
        let envs: Vec<BTreeMap<&str, &str>> = members
            .iter()
            .map(|m| {
                m.env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            })
            .collect();
        let shared: BTreeMap<String, String> = envs
            .first()
            .map(|first| {
                first
                    .iter()
                    .filter(|(k, v)| envs.iter().all(|e| e.get(*k) == Some(*v)))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        for (member, env) in members.iter().zip(&envs) {
            let control = member.dir.join("control");
            let mut script = String::from("#!/bin/sh\n");
            // (Names are checked at load; one sh cannot export is left out
            // rather than stopping the script.)
            for (k, v) in env
                .iter()
                .filter(|(k, _)| !shared.contains_key(**k) && shell_name(k))
            {
                script.push_str(&format!("export {k}={}\n", quote(v)));
            }
            script.push_str(&format!(
                "export HF_CONTROL_FILE={}\nexec 3>>\"$HF_CONTROL_FILE\"\n",
                quote(&control.display().to_string())
            ));
            if let Some(dir) = &member.working_dir {
                script.push_str(&format!("cd {} || exit 1\n", quote(dir)));
            }
            let argv: Vec<String> = member.argv.iter().map(|a| quote(a)).collect();
            script.push_str(&format!("exec {}\n", argv.join(" ")));
            prepare_dir(&member.dir, member.identity.as_ref(), "task.sh", &script)?;
        }
        Ok(shared)
    }
}

impl Client {
    /// The Slurm side of a fan-out item's attempt submitted in array
    /// `name` (a new one's batch, or the committed name of one adopted):
    /// its task is the item, its files in `<spool>/<name>/<item>/`.
    pub fn item_attempt(
        self: &Arc<Self>,
        activity: &Activity,
        key: AttemptKey,
        settings: &Settings,
        name: &str,
        batch: Option<Arc<ArrayBatch>>,
    ) -> Option<SlurmAttempt> {
        let item = key.item?;
        let mut slurm = self.attempt(activity, key, settings)?;
        slurm.dir = settings.slurm_spool().join(name).join(item.to_string());
        slurm.name = name.to_string();
        slurm.task = Some(item);
        slurm.batch = batch;
        Some(slurm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn only_shell_names_are_exported() {
        assert!(shell_name("HF_ITEM") && shell_name("_x1"));
        assert!(!shell_name("1X") && !shell_name("A-B") && !shell_name(""));
    }
}
