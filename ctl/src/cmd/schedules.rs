//! `hfctl schedules`: every schedule with its rule, zone, next and last
//! fire, the state of its last job, and whether it is paused.

use holdfast_api::ScheduleInfo;
use holdfast_api::rpc::HoldfastClient;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output::{self, Cell, Palette, Table};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(ctx: &Context, _args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    let schedules = daemon.call(daemon.client.schedule_list()).await?;
    if ctx.json {
        output::print_json(&schedules)?;
    } else {
        output::print(&render(&schedules, &ctx.palette))?;
    }
    Ok(Outcome::Success)
}

pub fn render(schedules: &[ScheduleInfo], palette: &Palette) -> String {
    if schedules.is_empty() {
        return "no schedules\n".into();
    }
    let mut table = Table::new(&[
        "SCHEDULE",
        "CRON",
        "ZONE",
        "NEXT FIRE",
        "LAST JOB",
        "STATE",
        "PAUSED",
        "TENANTS",
    ]);
    for s in schedules {
        table.row(vec![
            Cell::from(format!("{}.{}", s.chain, s.name)),
            Cell::from(s.cron.clone()),
            Cell::from(s.timezone.clone()),
            Cell::from(match (&s.next_fire, s.enabled) {
                (Some(t), _) => output::time(t),
                (None, false) => "disabled".into(),
                (None, true) => "-".into(),
            }),
            Cell::from(s.last_job.map_or("-".into(), |j| j.to_string())),
            match s.last_job_state {
                Some(state) => Cell::styled(state.as_str(), Some(output::job_state_style(state))),
                None => Cell::from("-"),
            },
            Cell::from(if s.paused { "yes" } else { "no" }),
            Cell::from(if s.tenants.is_empty() {
                "-".to_string()
            } else {
                s.tenants.join(",")
            }),
        ]);
    }
    let mut out = table.render(palette);
    // Refused fires below the table: their reasons are too long for a column.
    for s in schedules {
        if let Some(error) = &s.last_error {
            let at = s.last_error_at.as_deref().map_or("-".into(), output::time);
            out.push_str(&format!(
                "{}.{}: last fire refused at {at}: {error}\n",
                s.chain, s.name
            ));
        }
        if let (Some(next), Some(last)) = (s.backfill.first(), s.backfill.last()) {
            out.push_str(&format!(
                "{}.{}: backfill under way, {} fires waiting ({next} to {last})\n",
                s.chain,
                s.name,
                s.backfill.len()
            ));
        }
    }
    out
}
