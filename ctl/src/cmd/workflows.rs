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
            daemon.info().await?.paths.workflows_dir
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
            error_cell(workflow).into(),
        ]);
    }
    table.render(palette)
}

/// The first error, and how many more there are (all of them: `hfctl
/// validate FILE` or `--json`).
fn error_cell(workflow: &WorkflowSummary) -> String {
    let Some(first) = &workflow.error else {
        return String::new();
    };
    match workflow.errors.len() {
        0 | 1 => first.to_string(),
        n => format!("{first} (and {} more)", n - 1),
    }
}
