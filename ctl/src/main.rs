//! `hfctl`, the HoldFast command-line client: parses the command line, runs
//! one command against the daemon's socket and turns how it ended into an
//! exit code.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---:|---|
//! | 0 | success (with `--wait`/`--follow`: the job succeeded, alerts or not) |
//! | 1 | any other error (a job that could not be cancelled, a workflow file that does not validate, a lost connection, ...) |
//! | 2 | usage error (bad flags or arguments, `-p` without `=`) |
//! | 3 | no daemon answers on the socket (or one going away dropped the connection as it was opened) |
//! | 4 | with `--wait`/`--follow`: the job ended `failed` |
//! | 5 | with `--wait`/`--follow`: the job ended `cancelled` |
//! | 6 | NOT_FOUND: no such job, chain, activity or log |
//! | 7 | PERMISSION_DENIED, or the socket may not be opened |
//! | 8 | INVALID_PARAMETERS: one line per bad field follows |
//! | 9 | the daemon speaks another protocol version |
//! | 10 | INVALID_STATE: the job's state does not allow the call |
//! | 11 | UNAVAILABLE: the daemon cannot do this now (or its connection backlog is full) |
//! | 12 | `hfctl wait --timeout`: a job had not ended in time |
//!
//! Errors go to stderr as one line starting `hfctl: ` (INVALID_PARAMETERS
//! adds a line per field).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod complete;
mod daemon;
mod docs;
mod error;
use holdfast_report::gantt;
mod link;
mod output;
mod socket;
mod watch;

use cmd::Context;
use error::{Error, Outcome};

// Generic over its command enum: `Command` when hfctl runs, `WholeCommand`
// for what walks the whole tree (docs, completions). (Not a doc comment:
// clap would show it in `--help`.)
/// Submit, watch and inspect HoldFast jobs.
#[derive(Debug, Parser)]
#[command(name = "hfctl", version, about, max_term_width = 100)]
struct Cli<C: Subcommand> {
    /// The daemon's socket [default: the user daemon's if it exists, else
    /// /run/holdfast/holdfast.sock].
    #[arg(long, global = true, env = "HOLDFAST_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print one JSON document for scripts instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: C,
}

/// The command line hfctl parses when it runs.
type Parsed = Cli<Command>;
/// The whole command tree, every command's arguments built at once: what
/// the man pages and shell completions are made from.
pub(crate) type Whole = Cli<WholeCommand>;

/// The commands, declared once and derived twice. [`Command`] defers each
/// command's arguments until it is the one parsed (or its help is shown):
/// building all of them cost about 70 µs of every hfctl start
/// (BENCHMARKS.md). [`WholeCommand`] builds them at once, because clap's
/// `help` subcommand copies the tree as built when its parent is, so with
/// deferred arguments completing `hfctl help schedule p` would offer
/// nothing.
macro_rules! commands {
    ($($(#[$doc:meta])* $name:ident($args:ty),)+) => {
        #[derive(Debug, Subcommand)]
        #[command(defer = true)]
        enum Command {
            $($(#[$doc])* $name($args),)+
        }

        #[derive(Debug, Subcommand)]
        enum WholeCommand {
            $($(#[$doc])* $name($args),)+
        }
    };
}

commands! {
    /// Queue a job for a chain, process or activity.
    Submit(cmd::submit::Args),
    /// Recent jobs, or one job as a chain/process/activity tree.
    Status(cmd::status::Args),
    /// What is running now.
    Ps(cmd::ps::Args),
    /// Wait until jobs end (across daemon restarts); exit by their outcome.
    Wait(cmd::wait::Args),
    /// A job's attempts as a Gantt chart in the terminal.
    Timeline(cmd::timeline::Args),
    /// A job as one self-contained HTML file, to keep or send.
    Report(cmd::report::Args),
    /// A live view of running and queued jobs, or of one job; `q` quits.
    Watch(cmd::watch::Args),
    /// Jobs by state and chain, a page at a time.
    List(cmd::list::Args),
    /// Cancel queued or running jobs.
    Cancel(cmd::cancel::Args),
    /// An attempt's stdout and stderr.
    Logs(cmd::logs::Args),
    /// Loaded and broken workflow definitions.
    Workflows(cmd::workflows::Args),
    /// A chain's parameters, processes and activities.
    Describe(cmd::describe::Args),
    /// The daemon's version, protocol, paths and counts.
    Info(cmd::info::Args),
    /// Check workflow files without a daemon.
    Validate(cmd::validate::Args),
    /// Try a cron expression without a daemon: when it fires next.
    Cron(cmd::cron::Args),
    /// Reprocess a finished job: re-run what failed, keep what succeeded.
    Retry(cmd::retry::Args),
    /// Re-read the daemon's workflow files now.
    Reload(cmd::reload::Args),
    /// Every schedule, its next fire and its last job.
    Schedules(cmd::schedules::Args),
    /// Tenant files: chains, groups, parameters and load errors.
    Tenants(cmd::tenants::Args),
    /// Connection profiles, the chains using them and load errors.
    Connections(cmd::connections::Args),
    /// Pause, resume or trigger one schedule (CHAIN.NAME).
    Schedule(cmd::schedule::Args),
    /// The audit trail of submissions, cancels, retries and reloads.
    Audit(cmd::audit::Args),
    /// Runs, success rate, retries, durations, queue wait, memory and CPU per chain and activity.
    Stats(cmd::stats::Args),
    /// Job, activity and schedule events, one line each; -f follows them.
    Events(cmd::events::Args),
    /// Notification deliveries; `retry ID` delivers one again.
    Notifications(cmd::notifications::Args),
    /// Inside an activity: report progress, a checkpoint, outputs or an alert.
    Emit(cmd::emit::Args),
    /// Write a consistent copy of the daemon's database to a new file (operators only).
    Backup(cmd::backup::Args),
}

/// musl's own allocator maps and unmaps memory for nearly every burst of
/// allocations (clap's command tree, a JSON answer), a system call and
/// fresh zeroed pages each time; see ctl/Cargo.toml.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // `COMPLETE=bash hfctl ...`: a shell asking for completions.
    complete::if_requested();
    if let Some(dir) = docs::requested() {
        return docs::run(&dir);
    }
    let cli = Parsed::parse();
    let ctx = Context {
        socket: cli.socket,
        json: cli.json,
        palette: output::Palette::detect(),
    };
    // Each command's future on the heap: `main`'s own future (on the stack)
    // would otherwise be as large as the largest command's, and every
    // start would fault in that much stack.
    let command: Pin<Box<dyn Future<Output = Result<Outcome, Error>> + '_>> = match cli.command {
        Command::Submit(args) => Box::pin(cmd::submit::run(&ctx, args)),
        Command::Status(args) => Box::pin(cmd::status::run(&ctx, args)),
        Command::Ps(args) => Box::pin(cmd::ps::run(&ctx, args)),
        Command::Wait(args) => Box::pin(cmd::wait::run(&ctx, args)),
        Command::Timeline(args) => Box::pin(cmd::timeline::run(&ctx, args)),
        Command::Report(args) => Box::pin(cmd::report::run(&ctx, args)),
        Command::Watch(args) => Box::pin(cmd::watch::run(&ctx, args)),
        Command::List(args) => Box::pin(cmd::list::run(&ctx, args)),
        Command::Cancel(args) => Box::pin(cmd::cancel::run(&ctx, args)),
        Command::Logs(args) => Box::pin(cmd::logs::run(&ctx, args)),
        Command::Workflows(args) => Box::pin(cmd::workflows::run(&ctx, args)),
        Command::Describe(args) => Box::pin(cmd::describe::run(&ctx, args)),
        Command::Info(args) => Box::pin(cmd::info::run(&ctx, args)),
        Command::Validate(args) => Box::pin(std::future::ready(cmd::validate::run(&ctx, args))),
        Command::Cron(args) => Box::pin(std::future::ready(cmd::cron::run(&ctx, args))),
        Command::Retry(args) => Box::pin(cmd::retry::run(&ctx, args)),
        Command::Reload(args) => Box::pin(cmd::reload::run(&ctx, args)),
        Command::Schedules(args) => Box::pin(cmd::schedules::run(&ctx, args)),
        Command::Tenants(args) => Box::pin(cmd::tenants::run(&ctx, args)),
        Command::Connections(args) => Box::pin(cmd::connections::run(&ctx, args)),
        Command::Schedule(args) => Box::pin(cmd::schedule::run(&ctx, args)),
        Command::Audit(args) => Box::pin(cmd::audit::run(&ctx, args)),
        Command::Stats(args) => Box::pin(cmd::stats::run(&ctx, args)),
        Command::Events(args) => Box::pin(cmd::events::run(&ctx, args)),
        Command::Notifications(args) => Box::pin(cmd::notifications::run(&ctx, args)),
        Command::Emit(args) => Box::pin(std::future::ready(cmd::emit::run(args))),
        Command::Backup(args) => Box::pin(cmd::backup::run(&ctx, args)),
    };
    let result = command.await;
    match result {
        Ok(outcome) => ExitCode::from(outcome_code(outcome)),
        Err(error) => {
            let code = error_code(&error);
            report(error);
            ExitCode::from(code)
        }
    }
}

fn outcome_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Success => 0,
        Outcome::Failed => 1,
        Outcome::JobFailed => 4,
        Outcome::JobCancelled => 5,
    }
}

fn error_code(error: &Error) -> u8 {
    match error {
        // A reader that went away (`hfctl logs 7 | head`) is not a failure.
        Error::Stdout(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Error::NotRunning { .. } | Error::Dropped { .. } => 3,
        Error::NotFound { .. } => 6,
        Error::PermissionDenied { .. } | Error::SocketPermission { .. } => 7,
        Error::InvalidParameters { .. } => 8,
        Error::ProtocolMismatch { .. } => 9,
        Error::InvalidState { .. } => 10,
        Error::Usage { .. } => 2,
        Error::Unavailable { .. } | Error::Busy { .. } => 11,
        Error::WaitTimedOut { .. } => 12,
        Error::Handshake { .. }
        | Error::Rpc { .. }
        | Error::ConnectionLost { .. }
        | Error::Timeout { .. }
        | Error::BadAnswer { .. }
        | Error::WatchEnded { .. }
        | Error::ReadFile { .. }
        | Error::ParamsFile { .. }
        | Error::WriteFile { .. }
        | Error::BackupIncomplete { .. }
        | Error::Stdout(_) => 1,
    }
}

fn report(error: Error) {
    if let Some(text) = error_text(error) {
        eprintln!("{text}");
    }
}

/// What stderr says about `error`: one line starting `hfctl: ` (with a line
/// per field for INVALID_PARAMETERS), or nothing for a reader that went
/// away.
fn error_text(error: Error) -> Option<String> {
    match error {
        Error::Stdout(e) if e.kind() == std::io::ErrorKind::BrokenPipe => None,
        // `{:#}` appends each underlying cause after a colon.
        other => Some(format!("hfctl: {:#}", anyhow::Error::from(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    #[test]
    fn command_line_definition_is_consistent() {
        Parsed::command().debug_assert();
        Whole::command().debug_assert();
    }

    /// Every command's help as hfctl shows it (arguments deferred) and as
    /// the man pages and completions are made from it (built whole) is
    /// the same: clap applies a deferred command's arguments after the
    /// variant's attributes, so an `about` on an arguments struct would
    /// make them differ.
    #[test]
    fn deferred_and_whole_commands_show_the_same_help() {
        fn walk(command: &mut clap::Command, path: String, helps: &mut Vec<(String, String)>) {
            helps.push((path.clone(), command.render_long_help().to_string()));
            for sub in command.get_subcommands_mut() {
                // clap's own `help` copies the tree as built when its
                // parent is: the one place the two may differ.
                if sub.get_name() != "help" {
                    let path = format!("{path} {}", sub.get_name());
                    walk(sub, path, helps);
                }
            }
        }
        let helps = |mut command: clap::Command| {
            command.build();
            let mut helps = Vec::new();
            walk(&mut command, "hfctl".into(), &mut helps);
            helps
        };
        let (deferred, whole) = (helps(Parsed::command()), helps(Whole::command()));
        assert!(deferred.len() > 29, "every command is walked");
        assert_eq!(deferred, whole);
    }

    #[test]
    fn param_without_equals_is_a_usage_error() {
        let error = Parsed::try_parse_from(["hfctl", "submit", "etl", "-p", "date"])
            .expect_err("a parameter without '=' must be refused");
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn params_keep_equals_signs_in_values() {
        let cli = Parsed::try_parse_from([
            "hfctl",
            "--json",
            "submit",
            "etl",
            "-p",
            "filter=a=b",
            "--param",
            "date=2026-11-23",
            "--priority",
            "-5",
            "--socket",
            "/tmp/hf.sock",
        ])
        .expect("a valid command line");
        assert!(cli.json);
        assert_eq!(cli.socket, Some(PathBuf::from("/tmp/hf.sock")));
        let Command::Submit(args) = cli.command else {
            panic!("expected submit");
        };
        assert_eq!(
            args.param,
            vec![
                ("filter".to_string(), "a=b".to_string()),
                ("date".to_string(), "2026-11-23".to_string())
            ]
        );
        assert_eq!(args.priority, Some(-5));
    }

    #[test]
    fn exit_codes_follow_the_table() {
        let socket = PathBuf::from("/run/holdfast/holdfast.sock");
        assert_eq!(
            error_code(&Error::NotRunning {
                socket: socket.clone()
            }),
            3
        );
        assert_eq!(
            error_code(&Error::SocketPermission {
                socket,
                access: error::SocketAccess::Directory
            }),
            7
        );
        assert_eq!(
            error_code(&Error::Busy {
                socket: PathBuf::from("/run/holdfast/holdfast.sock"),
            }),
            11
        );
        assert_eq!(outcome_code(Outcome::JobFailed), 4);
        assert_eq!(outcome_code(Outcome::JobCancelled), 5);
        assert_eq!(
            error_code(&Error::NotFound {
                message: "job 9 does not exist".into()
            }),
            6
        );
    }

    #[test]
    fn every_error_line_starts_with_hfctl() {
        let socket = PathBuf::from("/run/holdfast/holdfast.sock");
        let errors = [
            Error::ProtocolMismatch {
                socket: socket.clone(),
                ours: 3,
                theirs: 2,
            },
            Error::ReadFile {
                path: PathBuf::from("/nonexistent/params.json"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            },
            Error::Rpc {
                code: -32602,
                message: "limit must be between 1 and 1000 (got 0)".into(),
            },
            Error::SocketPermission {
                socket,
                access: error::SocketAccess::Directory,
            },
        ];
        for error in errors {
            let text = error_text(error).expect("a line");
            assert!(text.starts_with("hfctl: "), "{text}");
            assert_eq!(text.lines().count(), 1, "{text}");
        }
        assert_eq!(
            error_text(Error::Stdout(std::io::Error::from(
                std::io::ErrorKind::BrokenPipe
            ))),
            None
        );
    }

    /// A connection a restarting daemon dropped as it was opened: exit
    /// code 3 as for no daemon, and its cause said once.
    #[test]
    fn a_dropped_connection_is_code_3_and_one_line_naming_its_cause_once() {
        let dropped = || Error::Dropped {
            socket: PathBuf::from("/run/holdfast/holdfast.sock"),
            cause: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        };
        assert_eq!(error_code(&dropped()), 3);
        let text = error_text(dropped()).expect("a line");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("it may be restarting"), "{text}");
        assert_eq!(text.matches("reset").count(), 1, "{text}");
    }

    #[test]
    fn not_running_is_one_clear_line() {
        let error = Error::NotRunning {
            socket: PathBuf::from("/run/holdfast/holdfast.sock"),
        };
        assert_eq!(
            format!("hfctl: {:#}", anyhow::Error::from(error)),
            "hfctl: no daemon answers on /run/holdfast/holdfast.sock; start one with 'holdfastd' (user mode) or 'systemctl start holdfast'"
        );
    }
}
