//! `hfctl workflows`: every chain the daemon knows, loaded or broken, with
//! its load error. `--json` prints the `workflow.list` answer.

use holdfast_api::WorkflowSummary;
use holdfast_api::rpc::HoldfastClient;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output::{self, Cell, Palette, Style, Table};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(ctx: &Context, _args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    let workflows = daemon.call(daemon.client.workflow_list()).await?;
    if ctx.json {
        output::print_json(&workflows)?;
    } else if workflows.is_empty() {
        output::print(&format!(
            "no workflows; put chain files in {}\n",
            daemon.info.paths.workflows_dir
        ))?;
    } else {
        output::print(&render(&workflows, &ctx.palette))?;
    }
    Ok(Outcome::Success)
}

fn render(workflows: &[WorkflowSummary], palette: &Palette) -> String {
    let mut table = Table::new(&["NAME", "STATUS", "VERSION", "FILE", "ERROR"]);
    for workflow in workflows {
        let style = match workflow.status.as_str() {
            "loaded" => Style::Green,
            _ => Style::Red,
        };
        table.row(vec![
            workflow.name.clone().into(),
            Cell::styled(workflow.status.clone(), Some(style)),
            workflow
                .version
                .as_deref()
                .map_or_else(|| "-".to_string(), output::short_version)
                .into(),
            workflow.file.clone().into(),
            workflow
                .error
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
                .into(),
        ]);
    }
    table.render(palette)
}
