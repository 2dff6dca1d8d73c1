//! `hfctl tenants`: every tenant file, the chains it may run, the groups
//! that may submit for it, its parameters, and load errors.

use holdfast_api::rpc::HoldfastClient;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output::{self, Cell, Table};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(ctx: &Context, _args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    let tenants = daemon.call(daemon.client.tenant_list()).await?;
    if ctx.json {
        output::print_json(&tenants)?;
        return Ok(Outcome::Success);
    }
    if tenants.is_empty() {
        output::print("no tenants\n")?;
        return Ok(Outcome::Success);
    }
    let mut table = Table::new(&["NAME", "STATUS", "CHAINS", "GROUPS", "PARAMS", "ERROR"]);
    for t in &tenants {
        table.row(vec![
            Cell::from(t.name.clone()),
            Cell::from(t.status.clone()),
            Cell::from(
                t.chains
                    .as_ref()
                    .map_or_else(|| "all".to_string(), |c| c.join(",")),
            ),
            Cell::from(if t.groups.is_empty() {
                "-".to_string()
            } else {
                t.groups.join(",")
            }),
            Cell::from(
                t.params
                    .iter()
                    .map(|(k, v)| {
                        let locked = if t.locked.contains(k) {
                            " (locked)"
                        } else {
                            ""
                        };
                        format!("{k}={}{locked}", output::json_value(v))
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Cell::from(t.error.as_ref().map(|e| e.to_string()).unwrap_or_default()),
        ]);
    }
    output::print(&table.render(&ctx.palette))?;
    Ok(Outcome::Success)
}
