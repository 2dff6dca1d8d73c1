//! Daemon settings: built-in defaults, overridden by the settings file,
//! overridden by flags and environment. Also decides system or user mode and
//! the paths that follow from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the daemon runs: as the host's service or for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    System,
    User,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::System => "system",
            Mode::User => "user",
        }
    }
}

/// Errors reading or checking settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("settings file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "cannot find the user's directories (is HOME set?); pass --state-dir, --socket and --workflows-dir"
    )]
    NoHome,
}

/// Most runtime worker threads the settings may ask for.
const MAX_WORKER_THREADS: usize = 64;

/// The settings file, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    workflows_dir: Option<PathBuf>,
    tenants_dir: Option<PathBuf>,
    connections_dir: Option<PathBuf>,
    max_parallel: Option<usize>,
    worker_threads: Option<usize>,
    kill_grace: Option<String>,
    log_max_bytes: Option<Size>,
    max_request_bytes: Option<Size>,
    max_connections: Option<u32>,
    max_connections_per_user: Option<u32>,
    max_subscriptions_per_user: Option<u32>,
    max_interruptions: Option<u32>,
    socket_group: Option<String>,
    retention: Option<String>,
    retention_jobs: Option<u64>,
    audit_retention: Option<String>,
    #[serde(default)]
    operator_groups: Vec<String>,
    #[serde(default)]
    run_as_allowed: Vec<String>,
    run_as_default: Option<String>,
    #[serde(default)]
    run_as_groups: Vec<String>,
    run_as_recheck: Option<String>,
    user_database_wait: Option<String>,
    cgroup: Option<String>,
    /// Notification rules, `[notify.NAME]`.
    #[serde(default)]
    notify: std::collections::BTreeMap<String, crate::notify::RuleFile>,
    /// The SMTP server of mail rules.
    smtp: Option<crate::notify::smtp::SmtpFile>,
    metrics_listen: Option<String>,
    metrics_textfile: Option<PathBuf>,
    metrics_textfile_interval: Option<String>,
    /// The sendmail program of mail rules when there is no `[smtp]`.
    sendmail: Option<PathBuf>,
    /// Where Slurm attempts' scripts, output and control files go: a
    /// directory the cluster's nodes see at the same path.
    slurm_spool: Option<PathBuf>,
    /// `[slurm]`: defaults for every Slurm attempt.
    #[serde(default)]
    slurm: crate::executor::slurm::SlurmSettings,
}

/// A byte size: an integer, or a string like `64M` (K, M, G: powers of 1024).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(SizeText),
}

#[derive(Debug, Clone, Copy)]
struct SizeText(u64);

impl<'de> Deserialize<'de> for SizeText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_size(&text)
            .map(SizeText)
            .map_err(serde::de::Error::custom)
    }
}

impl Size {
    fn bytes(self) -> u64 {
        match self {
            Size::Bytes(b) => b,
            Size::Text(SizeText(b)) => b,
        }
    }
}

pub use holdfast_workflow::parse_size;

/// Values given on the command line or in the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub workflows_dir: Option<PathBuf>,
    pub tenants_dir: Option<PathBuf>,
    pub connections_dir: Option<PathBuf>,
    pub mode: Option<Mode>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub workflows_dir: PathBuf,
    pub tenants_dir: PathBuf,
    /// Connection profiles (`connections.d/`).
    pub connections_dir: PathBuf,
    pub max_parallel: usize,
    /// Threads of the async runtime: they serve the socket and drive the
    /// engine and the executor. The store's writer, the log writer and the
    /// blocking pool are threads of their own. Read at start only.
    pub worker_threads: usize,
    pub kill_grace: Duration,
    pub log_max_bytes: u64,
    pub max_request_bytes: u32,
    pub max_connections: u32,
    /// Connections one uid may hold at once (root and the daemon's user
    /// are not counted against it).
    pub max_connections_per_user: u32,
    /// `job.follow_logs`, `job.watch` and `store.backup` subscriptions one
    /// uid may hold.
    pub max_subscriptions_per_user: u32,
    pub max_interruptions: u32,
    /// Group given the socket in system mode (when it exists).
    pub socket_group: Option<String>,
    /// Finished jobs older than this are deleted (with their logs).
    pub retention: Duration,
    /// At most this many finished jobs are kept, newest first.
    pub retention_jobs: Option<u64>,
    /// Audit rows older than this are deleted.
    pub audit_retention: Duration,
    /// Members may cancel or reprocess anyone's jobs, operate schedules and
    /// reload the configuration.
    pub operator_groups: Vec<String>,
    /// Users activities may name in `user` (`root` only if listed).
    pub run_as_allowed: Vec<String>,
    /// Who activities that name no user run as, in system mode as root.
    pub run_as_default: Option<String>,
    /// Groups a run-as activity may name in `group` besides its user's own
    /// (root's group only if listed).
    pub run_as_groups: Vec<String>,
    /// How often chains refused because the user database did not confirm
    /// a user or group they name are checked again (never when zero).
    pub run_as_recheck: Duration,
    /// How long a check of who a chain runs as (at load, at a resume)
    /// waits for the user database before calling the user unconfirmed.
    pub user_database_wait: Duration,
    /// Where attempts get their cgroups (see [`crate::cgroup`]).
    pub cgroup: crate::cgroup::CgroupSetting,
    /// Notification rules, checked (see [`crate::notify::rules`]).
    pub notify: std::sync::Arc<Vec<crate::notify::Rule>>,
    /// A TCP address serving only `GET /metrics` (off when None).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// A file the metrics are written to for node_exporter's textfile
    /// collector, every `metrics_textfile_interval`.
    pub metrics_textfile: Option<PathBuf>,
    pub metrics_textfile_interval: Duration,
    /// `[smtp]`, its password read; chain files' mail rules use it too.
    pub smtp: Option<crate::notify::smtp::Smtp>,
    /// The sendmail program mail rules use without `[smtp]`.
    pub sendmail: PathBuf,
    /// Spool directory of Slurm attempts, shared with the nodes (see
    /// [`Settings::slurm_spool`]).
    pub slurm_spool: Option<PathBuf>,
    /// `[slurm]` defaults (see [`crate::executor::slurm`]).
    pub slurm: crate::executor::slurm::SlurmSettings,
}

impl Settings {
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("holdfast.db")
    }

    /// The key that seals secret parameter values (`crate::secrets`).
    pub fn secrets_key(&self) -> PathBuf {
        self.state_dir.join("secrets.key")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// The `slurm_spool` setting, by default `slurm/` in the state
    /// directory (enough for a single-node cluster only).
    pub fn slurm_spool(&self) -> PathBuf {
        self.slurm_spool
            .clone()
            .unwrap_or_else(|| self.state_dir.join("slurm"))
    }

    /// Resolve settings: defaults < file < overrides.
    pub fn load(overrides: &Overrides) -> Result<Settings, SettingsError> {
        let mode = overrides.mode.unwrap_or_else(|| {
            if nix::unistd::geteuid().is_root() {
                Mode::System
            } else {
                Mode::User
            }
        });
        let defaults = DefaultPaths::for_mode(mode)?;
        let config = overrides.config.clone().unwrap_or(defaults.config.clone());
        let file = read_file(&config)?;
        let kill_grace = match &file.kill_grace {
            Some(text) => humantime::parse_duration(text).map_err(|e| SettingsError::Invalid {
                path: config.clone(),
                message: format!("kill_grace {text:?}: {e}"),
            })?,
            None => Duration::from_secs(10),
        };
        let duration = |key: &str, value: &Option<String>, default: Duration| match value {
            Some(text) => humantime::parse_duration(text).map_err(|e| SettingsError::Invalid {
                path: config.clone(),
                message: format!("{key} {text:?}: {e}"),
            }),
            None => Ok(default),
        };
        let retention = duration(
            "retention",
            &file.retention,
            Duration::from_secs(30 * 86_400),
        )?;
        let audit_retention = duration(
            "audit_retention",
            &file.audit_retention,
            Duration::from_secs(365 * 86_400),
        )?;
        let run_as_recheck = duration(
            "run_as_recheck",
            &file.run_as_recheck,
            Duration::from_secs(60),
        )?;
        // Each re-check reads every file and asks the user database again.
        if !run_as_recheck.is_zero() && run_as_recheck < Duration::from_secs(1) {
            return Err(SettingsError::Invalid {
                path: config.clone(),
                message: format!(
                    "run_as_recheck {:?}: at least \"1s\", or \"0s\" for never",
                    file.run_as_recheck.as_deref().unwrap_or_default()
                ),
            });
        }
        let user_database_wait = duration(
            "user_database_wait",
            &file.user_database_wait,
            crate::user_database::CHECK_WAIT,
        )?;
        if user_database_wait < Duration::from_millis(100) {
            return Err(SettingsError::Invalid {
                path: config.clone(),
                message: format!(
                    "user_database_wait {:?}: at least \"100ms\"",
                    file.user_database_wait.as_deref().unwrap_or_default()
                ),
            });
        }
        let metrics_textfile_interval = duration(
            "metrics_textfile_interval",
            &file.metrics_textfile_interval,
            Duration::from_secs(15),
        )?;
        let metrics_listen = match &file.metrics_listen {
            Some(text) => Some(text.parse().map_err(|_| SettingsError::Invalid {
                path: config.clone(),
                message: format!(
                    "metrics_listen {text:?}: give an address and port such as \"127.0.0.1:9464\""
                ),
            })?),
            None => None,
        };
        let max_parallel = file
            .max_parallel
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        if max_parallel == 0 {
            return Err(SettingsError::Invalid {
                path: config,
                message: "max_parallel must be at least 1".into(),
            });
        }
        // One by default: with the disk writes on threads of their own, a
        // second worker only added hand-offs (ARCHITECTURE.md, "Threads").
        let worker_threads = file.worker_threads.unwrap_or(1);
        if !(1..=MAX_WORKER_THREADS).contains(&worker_threads) {
            return Err(SettingsError::Invalid {
                path: config,
                message: format!("worker_threads must be from 1 to {MAX_WORKER_THREADS}"),
            });
        }
        let cgroup = match &file.cgroup {
            Some(text) => crate::cgroup::CgroupSetting::parse(text).map_err(|message| {
                SettingsError::Invalid {
                    path: config.clone(),
                    message,
                }
            })?,
            None => crate::cgroup::CgroupSetting::Auto,
        };
        let invalid = |message| SettingsError::Invalid {
            path: config.clone(),
            message,
        };
        let smtp = crate::notify::smtp::check(file.smtp).map_err(invalid)?;
        let sendmail = file
            .sendmail
            .unwrap_or_else(|| crate::notify::rules::SENDMAIL.into());
        let mail = crate::notify::rules::MailSettings {
            smtp: smtp.as_ref(),
            sendmail: &sendmail,
        };
        let notify = crate::notify::rules::check(file.notify, &mail).map_err(invalid)?;
        // Relative paths are taken from the working directory at start, and
        // kept absolute so `daemon.info` and log lines are unambiguous.
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        Ok(Settings {
            mode,
            socket: overrides
                .socket
                .clone()
                .or(file.socket)
                .map(absolute)
                .unwrap_or(defaults.socket),
            state_dir: overrides
                .state_dir
                .clone()
                .or(file.state_dir)
                .map(absolute)
                .unwrap_or(defaults.state_dir),
            workflows_dir: overrides
                .workflows_dir
                .clone()
                .or(file.workflows_dir)
                .map(absolute)
                .unwrap_or(defaults.workflows_dir),
            tenants_dir: overrides
                .tenants_dir
                .clone()
                .or(file.tenants_dir)
                .map(absolute)
                .unwrap_or(defaults.tenants_dir),
            connections_dir: overrides
                .connections_dir
                .clone()
                .or(file.connections_dir)
                .map(absolute)
                .unwrap_or(defaults.connections_dir),
            config: absolute(config),
            max_parallel,
            worker_threads,
            kill_grace,
            log_max_bytes: file.log_max_bytes.map_or(64 << 20, Size::bytes),
            max_request_bytes: file
                .max_request_bytes
                .map_or(1 << 20, |s| s.bytes().min(u32::MAX as u64) as u32),
            max_connections: file.max_connections.unwrap_or(1024),
            max_connections_per_user: file.max_connections_per_user.unwrap_or(64),
            max_subscriptions_per_user: file.max_subscriptions_per_user.unwrap_or(64),
            max_interruptions: file.max_interruptions.unwrap_or(3),
            retention,
            retention_jobs: file.retention_jobs,
            audit_retention,
            operator_groups: file.operator_groups,
            run_as_allowed: file.run_as_allowed,
            run_as_default: match mode {
                Mode::System => Some(file.run_as_default.unwrap_or_else(|| "holdfast".into())),
                Mode::User => file.run_as_default,
            },
            run_as_groups: file.run_as_groups,
            run_as_recheck,
            user_database_wait,
            socket_group: match mode {
                Mode::System => Some(file.socket_group.unwrap_or_else(|| "holdfast".into())),
                Mode::User => file.socket_group,
            },
            cgroup,
            notify: std::sync::Arc::new(notify),
            metrics_listen,
            metrics_textfile: file.metrics_textfile.map(absolute),
            metrics_textfile_interval,
            smtp,
            sendmail,
            slurm_spool: file.slurm_spool.map(absolute),
            slurm: file.slurm,
        })
    }
}

fn read_file(path: &Path) -> Result<SettingsFile, SettingsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SettingsFile::default()),
        Err(source) => {
            return Err(SettingsError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    toml::from_str(&text).map_err(|e| {
        let position = e
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("{line}:{column}: ")
            })
            .unwrap_or_default();
        SettingsError::Invalid {
            path: path.to_path_buf(),
            message: format!("{position}{}", e.message()),
        }
    })
}

struct DefaultPaths {
    config: PathBuf,
    socket: PathBuf,
    state_dir: PathBuf,
    workflows_dir: PathBuf,
    tenants_dir: PathBuf,
    connections_dir: PathBuf,
}

impl DefaultPaths {
    fn for_mode(mode: Mode) -> Result<DefaultPaths, SettingsError> {
        match mode {
            Mode::System => Ok(DefaultPaths {
                config: "/etc/holdfast/holdfast.toml".into(),
                socket: "/run/holdfast/holdfast.sock".into(),
                state_dir: "/var/lib/holdfast".into(),
                workflows_dir: "/etc/holdfast/workflows.d".into(),
                tenants_dir: "/etc/holdfast/tenants.d".into(),
                connections_dir: "/etc/holdfast/connections.d".into(),
            }),
            Mode::User => {
                let base = directories::BaseDirs::new().ok_or(SettingsError::NoHome)?;
                let config_dir = base.config_dir().join("holdfast");
                let state_dir = base
                    .state_dir()
                    .map(|d| d.join("holdfast"))
                    .unwrap_or_else(|| base.data_local_dir().join("holdfast"));
                let runtime = base
                    .runtime_dir()
                    .map(|d| d.join("holdfast"))
                    .unwrap_or_else(|| state_dir.join("run"));
                Ok(DefaultPaths {
                    config: config_dir.join("holdfast.toml"),
                    socket: runtime.join("holdfast.sock"),
                    state_dir,
                    workflows_dir: config_dir.join("workflows.d"),
                    tenants_dir: config_dir.join("tenants.d"),
                    connections_dir: config_dir.join("connections.d"),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_beats_defaults_and_flags_beat_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("holdfast.toml");
        std::fs::write(
            &config,
            "max_parallel = 3\nkill_grace = \"2s\"\nlog_max_bytes = \"1M\"\nsocket = \"/from/file.sock\"\n",
        )
        .expect("write");
        let settings = Settings::load(&Overrides {
            config: Some(config.clone()),
            socket: Some("/from/flag.sock".into()),
            state_dir: Some(dir.path().join("state")),
            workflows_dir: Some(dir.path().join("w")),
            tenants_dir: None,
            connections_dir: None,
            mode: Some(Mode::User),
        })
        .expect("load");
        assert_eq!(settings.max_parallel, 3);
        assert_eq!(settings.kill_grace, Duration::from_secs(2));
        assert_eq!(settings.log_max_bytes, 1 << 20);
        assert_eq!(settings.socket, PathBuf::from("/from/flag.sock"));
    }

    #[test]
    fn unknown_key_is_an_error_with_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("holdfast.toml");
        std::fs::write(&config, "max_parallel = 3\nbogus = 1\n").expect("write");
        let err = Settings::load(&Overrides {
            config: Some(config),
            mode: Some(Mode::User),
            ..Overrides::default()
        })
        .expect_err("must fail");
        assert!(err.to_string().contains("2:1"), "{err}");
    }

    #[test]
    fn worker_threads_default_to_one_and_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("holdfast.toml");
        let load = |text: &str| {
            std::fs::write(&config, text).expect("write");
            Settings::load(&Overrides {
                config: Some(config.clone()),
                mode: Some(Mode::User),
                ..Overrides::default()
            })
        };
        assert_eq!(load("").expect("load").worker_threads, 1);
        assert_eq!(
            load("worker_threads = 4\n").expect("load").worker_threads,
            4
        );
        for bad in ["worker_threads = 0\n", "worker_threads = 65\n"] {
            let err = load(bad).expect_err("out of range");
            assert!(
                err.to_string()
                    .contains("worker_threads must be from 1 to 64"),
                "{err}"
            );
        }
    }
}
