//! Log output: the journal when it answers (structured fields such as
//! `HF_JOB_ID` become journal fields), stderr otherwise. `-v` and `RUST_LOG`
//! set the level.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Install the global subscriber. `verbosity` counts `-v` flags.
pub fn init(verbosity: u8) {
    let default = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{default},hyper=warn,jsonrpsee=warn,soketto=warn"))
    });
    // Under systemd, JOURNAL_STREAM says stderr already goes to the journal;
    // then log natively so fields survive.
    let journal = std::env::var_os("JOURNAL_STREAM")
        .and_then(|_| tracing_journald::layer().ok())
        .map(|layer| {
            layer
                .with_field_prefix(None)
                .with_syslog_identifier("holdfastd".into())
        });
    match journal {
        Some(layer) => {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init();
        }
        None => {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_target(false),
                )
                .try_init();
        }
    }
}
