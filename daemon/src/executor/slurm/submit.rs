//! Talking to Slurm for one attempt: the `sbatch` options an activity
//! gets, its directory on the spool with the job script, submission,
//! finding a job by its name, and `scancel`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use holdfast_workflow::SlurmOptions;

use super::SlurmAttempt;
use crate::executor::logs::LogSink;
use crate::executor::{AttemptEnd, AttemptSpec};

/// The `sbatch` options derived from the activity: `--time` (whole
/// minutes, rounded up), `--mem`, `--cpus-per-task` and the `[slurm]`
/// keys, then `sbatch_args`.
pub(super) fn sbatch_options(
    options: &SlurmOptions,
    timeout: Option<Duration>,
    memory_max: Option<u64>,
    cpus: Option<u32>,
) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(timeout) = timeout {
        args.push(format!("--time={}", timeout.as_secs().div_ceil(60).max(1)));
    }
    if let Some(bytes) = memory_max {
        args.push(format!("--mem={}M", bytes.div_ceil(1 << 20).max(1)));
    }
    if let Some(cpus) = cpus {
        args.push(format!("--cpus-per-task={cpus}"));
    }
    for (flag, value) in [
        ("--partition", &options.partition),
        ("--account", &options.account),
        ("--qos", &options.qos),
        ("--constraint", &options.constraint),
    ] {
        if let Some(value) = value {
            args.push(format!("{flag}={value}"));
        }
    }
    args.extend(options.sbatch_args.iter().cloned());
    args
}

/// The script every attempt runs: fd 3 is the control file, so
/// `hfctl emit` and anything writing to fd 3 work as in a local attempt.
const SCRIPT: &str = "#!/bin/sh\nexec 3>>\"$HF_CONTROL_FILE\"\nexec \"$@\"\n";

/// The attempt's caps, Slurm options and user (`identity`) as `sbatch`
/// arguments: the same for a single job and an array.
pub(super) fn caps_and_user(
    command: &mut tokio::process::Command,
    spec: &AttemptSpec,
    slurm: &SlurmAttempt,
    identity: Option<&crate::run_as::Identity>,
) {
    command.args(sbatch_options(
        &slurm.options,
        spec.timeout,
        slurm.memory_max,
        slurm.cpus,
    ));
    if let Some(identity) = identity {
        command
            .arg(format!("--uid={}", identity.uid))
            .arg(format!("--gid={}", identity.gid));
    }
}

/// Submit the attempt with `sbatch --parsable`: its Slurm job id, or how
/// the attempt ended without one.
pub(super) async fn submit(
    spec: &AttemptSpec,
    slurm: &SlurmAttempt,
    sink: &Arc<LogSink>,
) -> Result<u64, AttemptEnd> {
    if spec.argv.is_empty() {
        return Err(AttemptEnd::spawn_error("empty command".into()));
    }
    let (output, control_file) =
        match prepare_dir(&slurm.dir, spec.identity.as_ref(), "job.sh", SCRIPT) {
            Ok(paths) => paths,
            Err(e) => {
                let message = format!(
                    "cannot prepare the attempt's directory {} on the Slurm spool: {e}; check the \
                 slurm_spool setting",
                    slurm.dir.display()
                );
                sink.note(&message).await;
                return Err(AttemptEnd::spawn_error(message));
            }
        };

    let mut command = super::sbatch_command();
    command
        .arg("--parsable")
        .arg(format!("--job-name={}", slurm.name))
        .arg(format!("--output={}", output.display()))
        .arg("--open-mode=append")
        .arg(format!(
            "--chdir={}",
            spec.working_dir
                .clone()
                .unwrap_or_else(|| slurm.dir.display().to_string())
        ));
    caps_and_user(&mut command, spec, slurm, spec.identity.as_ref());
    command
        .arg(slurm.dir.join("job.sh"))
        .args(&spec.argv)
        .current_dir(&slurm.dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("HF_CONTROL_FILE", &control_file)
        .stdin(std::process::Stdio::null());
    if let Some(identity) = &spec.identity {
        command
            .env("HOME", &identity.home)
            .env("USER", &identity.name)
            .env("LOGNAME", &identity.name);
    }
    match run_sbatch(command).await {
        Ok(id) => Ok(id),
        Err((message, transient)) => {
            sink.note(&message).await;
            let mut end = AttemptEnd::spawn_error(message);
            end.transient = transient;
            Err(end)
        }
    }
}

/// Run a prepared `sbatch --parsable`: the job id it answers, or why not
/// and whether that passes (slurmctld unreachable: tried again without
/// using up a retry).
pub(super) async fn run_sbatch(
    mut command: tokio::process::Command,
) -> Result<u64, (String, bool)> {
    match command.output().await {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            text.trim()
                .split(';')
                .next()
                .and_then(|id| id.parse::<u64>().ok())
                .ok_or_else(|| {
                    (
                        format!("sbatch answered {:?}, not a job id", text.trim()),
                        false,
                    )
                })
        }
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let transient = why.contains("Unable to contact slurm controller");
            Err((format!("sbatch refused the job: {why}"), transient))
        }
        Err(e) => Err((format!("cannot run sbatch: {e}"), false)),
    }
}

/// The Slurm job of an attempt whose id was not committed, by its name:
/// `squeue` while Slurm lists it (a job array by its array id, `%F`),
/// else Slurm's records (`sacct -c`, then `sacct`), filtered by name here
/// since `sacct -c` ignores `--name`. Slurm's records give an array's
/// tasks by their own ids only, so an array no longer listed is not found
/// this way.
pub(super) async fn find_by_name(name: &str, array: bool) -> Option<u64> {
    let listed = tokio::process::Command::new("squeue")
        .args(["--noheader", "--states=all", "--format=%F|%j"])
        .arg(format!("--name={name}"))
        .output()
        .await
        .ok()?;
    let records = |out: &std::process::Output| -> Option<u64> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.trim().split_once('|'))
            .find(|(_, job)| *job == name)
            .and_then(|(id, _)| id.parse().ok())
    };
    if let Some(id) = records(&listed) {
        return Some(id);
    }
    if array {
        return None;
    }
    for completion in [true, false] {
        let mut command = tokio::process::Command::new("sacct");
        if completion {
            command.arg("--completion");
        }
        let out = command
            .args(["--noheader", "--parsable2", "--format=JobID,JobName"])
            .arg(format!("--name={name}"))
            .output()
            .await
            .ok()?;
        if out.status.success() {
            return records(&out);
        }
    }
    None
}

/// `scancel` a job, an array (all its tasks) or one task (`ARRAYID_N`).
pub(super) async fn scancel(id: &str, sink: &Arc<LogSink>) {
    match tokio::process::Command::new("scancel")
        .arg(id)
        .output()
        .await
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            sink.note(&format!("scancel {id} failed: {}", stderr.trim()))
                .await;
        }
        Err(e) => sink.note(&format!("cannot run scancel: {e}")).await,
    }
}

/// Make the attempt's directory with its script and an empty control file,
/// owned by the user it runs as (who writes there from the node).
///
/// The directory is that user's once it is handed over, so the daemon
/// writes in it only before that: a directory left by an earlier try of
/// the same attempt is removed (without following links) and made again,
/// the files are created new (never through a link the user left), and
/// ownership is given with `lchown`, which changes a link, not its target.
pub(super) fn prepare_dir(
    dir: &Path,
    identity: Option<&crate::run_as::Identity>,
    script_name: &str,
    script_text: &str,
) -> std::io::Result<(PathBuf, PathBuf)> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(root) = dir.parent()
        && !root.exists()
    {
        std::fs::create_dir_all(root)?;
        // Run-as attempts reach their own directory inside: traversable,
        // not listable (the daemon's umask would make it 0700).
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_dir_all(dir)?;
            std::fs::create_dir(dir)?;
        }
        Err(e) => return Err(e),
    }
    let create = |path: &Path, mode: u32, bytes: &[u8]| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)?;
        file.write_all(bytes)?;
        // The umask may have taken bits the mode asked for.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
    };
    let script = dir.join(script_name);
    create(&script, 0o700, script_text.as_bytes())?;
    let control = dir.join("control");
    create(&control, 0o600, b"")?;
    if let Some(id) = identity {
        let owner = (Some(id.uid), Some(id.gid));
        for path in [&script, &control, dir] {
            std::os::unix::fs::lchown(path, owner.0, owner.1)?;
        }
    }
    Ok((dir.join("output"), control))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::slurm::SlurmSettings;

    /// Options from the settings file sit under the chain's; the caps map to
    /// whole minutes, MiB and CPUs.
    #[test]
    fn sbatch_options_merge_settings_and_activity() {
        let settings = SlurmSettings {
            partition: Some("batch".into()),
            qos: Some("low".into()),
            sbatch_args: vec!["--nice=1".into()],
            ..SlurmSettings::default()
        };
        let own = SlurmOptions {
            qos: Some("high".into()),
            sbatch_args: vec!["--exclusive".into()],
            ..SlurmOptions::default()
        };
        let args = sbatch_options(
            &settings.merged(&own),
            Some(Duration::from_secs(61)),
            Some(1536 * 1024),
            Some(2),
        );
        assert_eq!(
            args,
            [
                "--time=2",
                "--mem=2M",
                "--cpus-per-task=2",
                "--partition=batch",
                "--qos=high",
                "--nice=1",
                "--exclusive"
            ]
        );
    }
}
