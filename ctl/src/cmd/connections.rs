//! `hfctl connections`: every connection profile, its kind, its fields
//! (for operators; secret ones as `***`), who may use it, the chains that
//! use it, and load errors.

use holdfast_api::rpc::HoldfastClient;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output::{self, Cell, Table};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(ctx: &Context, _args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    let connections = daemon.call(daemon.client.connection_list()).await?;
    if ctx.json {
        output::print_json(&connections)?;
        return Ok(Outcome::Success);
    }
    if connections.is_empty() {
        output::print("no connections\n")?;
        return Ok(Outcome::Success);
    }
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_string()
        } else {
            items.join(",")
        }
    };
    let mut table = Table::new(&[
        "NAME", "KIND", "STATUS", "FIELDS", "ALLOW", "USED BY", "ERROR",
    ]);
    for c in &connections {
        let fields = match &c.fields {
            Some(fields) => fields
                .iter()
                .map(|(k, v)| format!("{k}={}", output::json_value(v)))
                .collect::<Vec<_>>()
                .join(" "),
            // Members see which secret fields exist, not the others.
            None => c
                .secrets
                .iter()
                .map(|k| format!("{k}=***"))
                .chain(["(other fields: operators only)".to_string()])
                .collect::<Vec<_>>()
                .join(" "),
        };
        table.row(vec![
            Cell::from(c.name.clone()),
            Cell::from(c.kind.clone().unwrap_or_else(|| "-".into())),
            Cell::from(c.status.clone()),
            Cell::from(fields),
            Cell::from(list(&c.allow)),
            Cell::from(list(&c.used_by)),
            Cell::from(
                c.errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        ]);
    }
    output::print(&table.render(&ctx.palette))?;
    Ok(Outcome::Success)
}
