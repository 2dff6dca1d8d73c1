//! `hfctl reload`: make the daemon re-read its workflow files now and show
//! what loaded and what is broken.

use holdfast_api::rpc::HoldfastClient;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(ctx: &Context, _args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    let chains = daemon.call(daemon.client.config_reload()).await?;
    if ctx.json {
        output::print_json(&chains)?;
        let broken = chains.iter().any(|c| c.error.is_some());
        return Ok(if broken {
            Outcome::Failed
        } else {
            Outcome::Success
        });
    }
    let broken: Vec<_> = chains.iter().filter(|c| c.error.is_some()).collect();
    output::print(&format!(
        "reloaded: {} chains, {} broken\n",
        chains.len(),
        broken.len()
    ))?;
    for chain in &broken {
        if let Some(error) = &chain.error {
            eprintln!("hfctl: {error}");
        }
    }
    Ok(if broken.is_empty() {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}
