//! `hfctl audit [--limit N]`: who submitted, cancelled, retried or reloaded
//! what, and how it went.

use holdfast_api::rpc::HoldfastClient;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output::{self, Cell, Table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many entries, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Only entries older than this id (paging).
    #[arg(long, value_name = "ID")]
    pub before: Option<u64>,
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    let entries = daemon
        .call(daemon.client.audit_list(Some(args.limit), args.before))
        .await?;
    if ctx.json {
        output::print_json(&entries)?;
        return Ok(Outcome::Success);
    }
    let mut table = Table::new(&[
        "ID", "TIME", "USER", "PID", "METHOD", "TARGET", "OUTCOME", "DETAIL",
    ]);
    for e in &entries {
        table.row(vec![
            Cell::from(e.id.to_string()),
            Cell::from(output::time(&e.at)),
            Cell::from(match (&e.user, e.uid) {
                (Some(user), Some(uid)) => format!("{user} ({uid})"),
                (Some(user), None) => user.clone(),
                (None, Some(uid)) => uid.to_string(),
                (None, None) => "-".into(),
            }),
            Cell::from(e.pid.map_or("-".into(), |p| p.to_string())),
            Cell::from(e.method.clone()),
            Cell::from(e.target.clone().unwrap_or_else(|| "-".into())),
            Cell::from(e.outcome.clone()),
            Cell::from(e.detail.clone().unwrap_or_default()),
        ]);
    }
    output::print(&table.render(&ctx.palette))?;
    Ok(Outcome::Success)
}
