//! `hfctl info`: the daemon's version, protocol, paths and counts. With
//! `--wait SECONDS` it waits for a daemon that is still starting, or
//! restarting.

use std::time::{Duration, Instant};

use holdfast_api::DaemonInfo;

use super::Context;
use crate::daemon::{Daemon, Transport};
use crate::error::is_lost;
use crate::error::{Error, Outcome};
use crate::output::{self, Palette, Style};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep trying while nothing answers on the socket, for up to this many
    /// seconds (for scripts that have just started a daemon).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0, value_parser = parse_seconds)]
    pub wait: f64,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=1e9).contains(&secs) => Ok(secs),
        _ => Err(format!("expected a number of seconds, got '{text}'")),
    }
}

/// The pause before asking again a daemon that dropped the call.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.wait);
    let info = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let daemon = Daemon::connect_waiting(|| ctx.socket(), left, Transport::OneShot).await?;
        match daemon.info().await {
            // A daemon that is going away (a restart) may take the call
            // and drop it unanswered: ask again while the wait lasts.
            Err(error) if is_lost(&error) && Instant::now() < deadline => {
                tokio::time::sleep(RETRY_PAUSE.min(left)).await;
            }
            answered => break answered?,
        }
    };
    if ctx.json {
        output::print_json(&info)?;
    } else {
        output::print(&render(&info, &ctx.palette))?;
    }
    Ok(Outcome::Success)
}

fn render(info: &DaemonInfo, palette: &Palette) -> String {
    let counts = &info.counts;
    let chains = if counts.broken_chains > 0 {
        format!(
            "{} ({})",
            counts.chains,
            palette.paint(
                &format!("{} broken", counts.broken_chains),
                Some(Style::Red)
            )
        )
    } else {
        counts.chains.to_string()
    };
    let pairs: Vec<(&str, String)> = vec![
        ("version", info.version.clone()),
        ("protocol", info.protocol.to_string()),
        ("pid", info.pid.to_string()),
        (
            "uptime",
            format!(
                "{} (since {})",
                output::duration(Duration::from_secs(info.uptime_seconds)),
                output::time(&info.started_at)
            ),
        ),
        ("mode", info.mode.clone()),
        ("max parallel", info.max_parallel.to_string()),
        ("config", info.paths.config.clone()),
        ("workflows", info.paths.workflows_dir.clone()),
        ("state", info.paths.state_dir.clone()),
        ("database", info.paths.database.clone()),
        ("socket", info.paths.socket.clone()),
        ("confinement", info.confinement.clone()),
        ("slurm", info.slurm.clone().unwrap_or_else(|| "-".into())),
        ("chains", chains),
        (
            "jobs",
            format!(
                "{} queued, {} running ({} activities)",
                counts.queued_jobs, counts.running_jobs, counts.running_activities
            ),
        ),
    ];
    let mut out = palette.paint("holdfastd", Some(Style::Bold));
    out.push('\n');
    out.push_str(&output::fields(2, &pairs));
    out
}
