//! `hfctl notifications [--failed] [--limit N]`: the deliveries of
//! notification rules (event, rule, attempts, last error, delivered at);
//! `hfctl notifications retry ID` delivers one again now.

use holdfast_api::Delivery;
use holdfast_api::rpc::HoldfastClient;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output::{self, Cell, Table};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Only deliveries that failed or are being retried.
    #[arg(long)]
    pub failed: bool,
    /// How many deliveries, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Deliver a notification again now (operators only).
    Retry {
        /// The delivery's id (first column of `hfctl notifications`).
        id: u64,
    },
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    if let Some(Action::Retry { id }) = args.action {
        let delivery = daemon.call(daemon.client.notification_retry(id)).await?;
        if ctx.json {
            output::print_json(&delivery)?;
        } else {
            output::print(&format!(
                "notification {id} ({} for rule {}) will be delivered again now\n",
                delivery.kind, delivery.rule
            ))?;
        }
        return Ok(Outcome::Success);
    }
    let deliveries = daemon
        .call(
            daemon
                .client
                .notification_list(Some(args.failed), Some(args.limit)),
        )
        .await?;
    if ctx.json {
        output::print_json(&deliveries)?;
    } else {
        output::print(&render(&deliveries, ctx))?;
    }
    Ok(Outcome::Success)
}

fn render(deliveries: &[Delivery], ctx: &Context) -> String {
    if deliveries.is_empty() {
        return "no notifications\n".into();
    }
    let mut table = Table::new(&[
        "ID",
        "EVENT",
        "KIND",
        "JOB",
        "RULE",
        "STATE",
        "ATTEMPTS",
        "DELIVERED",
        "LAST ERROR",
    ]);
    for d in deliveries {
        table.row(vec![
            Cell::from(d.id.to_string()),
            Cell::from(d.event_id.to_string()),
            Cell::from(d.kind.clone()),
            Cell::from(d.job_id.map_or("-".into(), |j| j.to_string())),
            Cell::from(d.rule.clone()),
            Cell::from(d.state.clone()),
            Cell::from(d.attempts.to_string()),
            Cell::from(d.delivered_at.as_deref().map_or("-".into(), output::time)),
            Cell::from(d.last_error.clone().unwrap_or_else(|| "-".into())),
        ]);
    }
    table.render(&ctx.palette)
}
