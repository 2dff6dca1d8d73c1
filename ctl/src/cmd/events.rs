//! `hfctl events [-f] [--since ID] [--chain C] [--tenant T] [--kind K]`:
//! the daemon's events (job, activity and schedule transitions), one line
//! each, through the `events.subscribe` subscription; `-f` follows them and
//! reconnects across a daemon restart, resuming after the last id printed.

use std::time::{Duration, Instant};

use holdfast_api::Event;
use holdfast_api::rpc::HoldfastClient;

use super::Context;
use crate::daemon::{Daemon, Transport};
use crate::error::is_lost;
use crate::error::{Error, Outcome};
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep printing events as they happen; when the daemon goes away, wait
    /// for it and go on after the last event printed.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only events after this id. Without it: every event kept, or with
    /// `-f` those from now on.
    #[arg(long, value_name = "ID")]
    pub since: Option<u64>,
    /// Only events of this chain.
    #[arg(long, value_name = "CHAIN")]
    pub chain: Option<String>,
    /// Only events of jobs of this tenant.
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Only events of this kind (e.g. job.failed); may be repeated.
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
}

/// How long `-f` waits for a daemon that went away to answer again.
const RECONNECT_WAIT: Duration = Duration::from_secs(600);

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let mut since = match (args.since, args.follow) {
        (Some(id), _) => Some(id),
        (None, false) => Some(0),
        (None, true) => None,
    };
    let mut daemon = ctx.connect_subscribing().await?;
    // Set once the daemon went away: until when `-f` waits for it.
    let mut reconnecting: Option<Instant> = None;
    loop {
        let subscribed = daemon
            .call(daemon.client.events_subscribe(
                since,
                args.chain.clone(),
                args.tenant.clone(),
                (!args.kinds.is_empty()).then(|| args.kinds.clone()),
                None,
                Some(args.follow),
            ))
            .await;
        let mut subscription = match (subscribed, reconnecting) {
            (Ok(subscription), _) => subscription,
            // The daemon we reached was still stopping: wait for the next.
            (Err(error), Some(deadline)) if is_lost(&error) && Instant::now() < deadline => {
                daemon = reconnect(ctx, deadline).await?;
                continue;
            }
            (Err(error), _) => return Err(error),
        };
        while let Some(item) = subscription.next().await {
            let event = item.map_err(|e| daemon.bad_item(e))?;
            if ctx.json {
                output::print_json_line(&event)?;
            } else {
                output::print(&line(&event))?;
            }
            since = Some(event.id);
        }
        if !args.follow {
            return Ok(Outcome::Success);
        }
        // The daemon stopped (or closed a subscriber that fell behind):
        // connect again and go on after the last event printed.
        drop(subscription);
        let deadline = Instant::now() + RECONNECT_WAIT;
        reconnecting = Some(deadline);
        daemon = reconnect(ctx, deadline).await?;
    }
}

/// Connect again to a daemon that went away, until `deadline`. A daemon
/// still stopping may take the connection and drop it during the
/// handshake; that is tried again too, as `hfctl wait` does.
async fn reconnect(ctx: &Context, deadline: Instant) -> Result<Daemon, Error> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match Daemon::connect_waiting(|| ctx.socket(), left, Transport::Subscribing).await {
            Err(error) if is_lost(&error) && Instant::now() < deadline => {
                tokio::time::sleep(RETRY_PAUSE.min(left)).await;
            }
            other => return other,
        }
    }
}

/// The pause between tries at a daemon that dropped the connection.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// One event as a line for people.
pub fn line(event: &Event) -> String {
    let mut text = format!(
        "{:>6}  {}  {:<18}",
        event.id,
        output::time(&event.at),
        event.kind
    );
    if let Some(job) = event.job_id {
        text.push_str(&format!(" job {job}"));
    }
    if let Some(chain) = &event.chain
        && event.schedule.is_none()
    {
        text.push_str(&format!(" {chain}"));
    }
    if let Some(schedule) = &event.schedule {
        text.push_str(&format!(" schedule {schedule}"));
    }
    if let Some(tenant) = &event.tenant {
        text.push_str(&format!(" tenant {tenant}"));
    }
    if let Some(activity) = &event.activity {
        text.push_str(&format!(" {activity}"));
        if let Some(attempt) = event.attempt {
            text.push_str(&format!(" attempt {attempt}"));
        }
    }
    if event.kind.starts_with("job.")
        && let Some(state) = event.state
    {
        text.push_str(&format!(" {}", state.as_str()));
    }
    for failed in &event.failed {
        text.push_str(&format!(" failed:{}", failed.activity));
        if let Some(id) = &failed.error_id {
            text.push_str(&format!("({id})"));
        }
    }
    if let Some(id) = &event.error_id {
        text.push_str(&format!(" {id}"));
    }
    if let Some(error) = &event.error {
        let error: String = error
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        text.push_str(&format!(": {error}"));
    }
    text.push('\n');
    text
}
