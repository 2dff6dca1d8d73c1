//! Log output: the journal when it answers (structured fields such as
//! `HF_JOB_ID` become journal fields), stderr otherwise. `-v` and `RUST_LOG`
//! set the level. Once the state directory is known, journal entries also
//! carry `HF_INSTANCE` ([`set_instance`]).

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::Layered;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

/// Set once the journal layer is installed.
static TO_JOURNAL: AtomicBool = AtomicBool::new(false);

/// Swaps the journal layer for one that also sends `HF_INSTANCE` (see
/// [`set_instance`]); set once the journal layer is installed.
type JournalHandle = reload::Handle<Option<tracing_journald::Layer>, Layered<Targets, Registry>>;
static JOURNAL: OnceLock<JournalHandle> = OnceLock::new();

/// The journal layer as the daemon configures it.
fn journal_layer() -> std::io::Result<tracing_journald::Layer> {
    // `layer()` sends an empty datagram to /run/systemd/journal/socket and
    // fails unless journald is there to receive it.
    Ok(tracing_journald::layer()?
        .with_field_prefix(None)
        .with_syslog_identifier("holdfastd".into()))
}

/// From now on every journal entry carries `HF_INSTANCE=<id>` (the state
/// directory's id, see `crate::instance`). Nothing happens when logging goes
/// to stderr.
pub fn set_instance(id: &str) {
    let Some(handle) = JOURNAL.get() else { return };
    match journal_layer() {
        Ok(layer) => {
            let layer = layer.with_custom_fields([("HF_INSTANCE", id)]);
            if let Err(error) = handle.reload(Some(layer)) {
                tracing::warn!(%error, "cannot add HF_INSTANCE to the journal entries");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "the journal does not answer; entries go without HF_INSTANCE")
        }
    }
}

/// True when log lines go to the journal (so forwarding activities' output
/// there makes sense).
pub fn to_journal() -> bool {
    TO_JOURNAL.load(Ordering::Relaxed)
}

/// Where log lines should go, before checking that the journal answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Journal,
    Stderr,
}

/// `HOLDFAST_LOG=journal|stderr` decides; otherwise the journal is wanted
/// when stderr is the journal stream systemd connected (`JOURNAL_STREAM`
/// names stderr's device and inode), so a daemon run from a terminal, or by
/// a test with stderr in a file, keeps its log where it was started.
fn wanted(
    setting: Option<&str>,
    journal_stream: Option<&str>,
    stderr: Option<(u64, u64)>,
) -> Wanted {
    match setting {
        Some("journal") => return Wanted::Journal,
        Some("stderr") => return Wanted::Stderr,
        _ => {}
    }
    let parsed = journal_stream.and_then(|v| {
        let (dev, ino) = v.split_once(':')?;
        Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))
    });
    match (parsed, stderr) {
        (Some(stream), Some(stderr)) if stream == stderr => Wanted::Journal,
        _ => Wanted::Stderr,
    }
}

/// stderr's device and inode, as `JOURNAL_STREAM` spells them.
fn stderr_identity() -> Option<(u64, u64)> {
    let stat = nix::sys::stat::fstat(std::io::stderr().as_fd()).ok()?;
    Some((stat.st_dev, stat.st_ino))
}

/// Colour escapes only for a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>): a log redirected
/// to a file or a pipe stays plain text.
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The log filter: `RUST_LOG` when it is set and parses (comma-separated
/// `level` and `target=level` directives), otherwise `default` with the
/// HTTP and JSON-RPC libraries' chatter kept at `warn`. A `RUST_LOG` that
/// does not parse is reported on stderr, not ignored silently. `Targets`
/// rather than `EnvFilter`: the daemon needs no span or field directives,
/// and `EnvFilter` brings a regex engine into the binary for them.
fn filter(default: LevelFilter, rust_log: Option<&str>) -> Targets {
    if let Some(setting) = rust_log.filter(|s| !s.trim().is_empty()) {
        match setting.parse::<Targets>() {
            Ok(targets) => return targets,
            Err(error) => eprintln!(
                "holdfastd: RUST_LOG={setting:?} is not a filter of level and target=level \
                 directives ({error}); using {default}"
            ),
        }
    }
    Targets::new()
        .with_default(default)
        .with_targets(["hyper", "jsonrpsee", "soketto"].map(|t| (t, LevelFilter::WARN)))
}

/// Install the global subscriber. `verbosity` counts `-v` flags.
pub fn init(verbosity: u8) {
    let default = match verbosity {
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let filter = filter(default, std::env::var("RUST_LOG").ok().as_deref());
    let setting = std::env::var("HOLDFAST_LOG").ok();
    let journal_stream = std::env::var("JOURNAL_STREAM").ok();
    let wanted = wanted(
        setting.as_deref(),
        journal_stream.as_deref(),
        stderr_identity(),
    );
    let journal = match wanted {
        Wanted::Journal => match journal_layer() {
            Ok(layer) => Some(layer),
            Err(error) => {
                eprintln!("holdfastd: the journal does not answer ({error}); logging to stderr");
                None
            }
        },
        Wanted::Stderr => None,
    };
    match journal {
        Some(layer) => {
            let (layer, handle) = reload::Layer::new(Some(layer));
            let installed = tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init();
            if installed.is_ok() {
                let _ = JOURNAL.set(handle);
            }
            TO_JOURNAL.store(installed.is_ok(), Ordering::Relaxed);
        }
        None => {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(colour(
                            std::io::stderr().is_terminal(),
                            std::env::var_os("NO_COLOR").as_deref(),
                        ))
                        .with_target(false),
                )
                .try_init();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_only_when_stderr_is_the_journal_stream() {
        assert_eq!(
            wanted(None, Some("8:1234"), Some((8, 1234))),
            Wanted::Journal
        );
        assert_eq!(wanted(None, Some("8:1234"), Some((8, 99))), Wanted::Stderr);
        assert_eq!(wanted(None, None, Some((8, 1234))), Wanted::Stderr);
        assert_eq!(
            wanted(None, Some("garbage"), Some((8, 1234))),
            Wanted::Stderr
        );
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }

    #[test]
    fn rust_log_sets_the_filter_and_a_bad_one_is_not_taken() {
        use tracing::Level;
        let quiet = filter(LevelFilter::INFO, None);
        assert!(quiet.would_enable("holdfastd::engine", &Level::INFO));
        assert!(!quiet.would_enable("holdfastd::engine", &Level::DEBUG));
        assert!(!quiet.would_enable("hyper::proto", &Level::INFO));
        assert!(quiet.would_enable("hyper::proto", &Level::WARN));
        let set = filter(LevelFilter::INFO, Some("warn,holdfastd::engine=trace"));
        assert!(set.would_enable("holdfastd::engine::commit", &Level::TRACE));
        assert!(!set.would_enable("holdfastd::rpc", &Level::INFO));
        let bad = filter(LevelFilter::DEBUG, Some("holdfastd=loud"));
        assert!(bad.would_enable("holdfastd", &Level::DEBUG));
        assert_eq!(
            filter(LevelFilter::INFO, Some(" ")).default_level(),
            Some(LevelFilter::INFO)
        );
    }

    #[test]
    fn the_setting_wins() {
        assert_eq!(wanted(Some("journal"), None, None), Wanted::Journal);
        assert_eq!(
            wanted(Some("stderr"), Some("8:1234"), Some((8, 1234))),
            Wanted::Stderr
        );
        assert_eq!(
            wanted(Some("auto"), Some("8:1"), Some((8, 1))),
            Wanted::Journal
        );
    }
}
