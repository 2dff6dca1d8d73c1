//! `hfctl validate FILE...`: check workflow files offline, with the same
//! loader the daemon uses, so a file that passes here loads there.

use std::path::PathBuf;

use holdfast_api::LoadError;
use serde::Serialize;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output::{self, Style};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workflow files (one chain each).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// One file's verdict, as printed by `--json`.
#[derive(Debug, Serialize)]
struct Verdict {
    file: String,
    chain: Option<String>,
    ok: bool,
    #[serde(skip)]
    activities: usize,
    errors: Vec<LoadError>,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let verdicts: Vec<Verdict> = args
        .files
        .iter()
        .map(|path| {
            let file = path.display().to_string();
            match holdfast_workflow::load_file(path) {
                Ok(chain) => Verdict {
                    file,
                    chain: Some(chain.name.clone()),
                    ok: true,
                    activities: chain.activities.len(),
                    errors: Vec::new(),
                },
                Err(errors) => Verdict {
                    file,
                    chain: None,
                    ok: false,
                    activities: 0,
                    errors,
                },
            }
        })
        .collect();
    let all_ok = verdicts.iter().all(|v| v.ok);
    if ctx.json {
        output::print_json(&verdicts)?;
    } else {
        let mut text = String::new();
        for verdict in &verdicts {
            match &verdict.chain {
                Some(chain) if verdict.ok => text.push_str(&format!(
                    "{}: {} (chain {chain}, {} {})\n",
                    verdict.file,
                    ctx.palette.paint("ok", Some(Style::Green)),
                    verdict.activities,
                    if verdict.activities == 1 {
                        "activity"
                    } else {
                        "activities"
                    }
                )),
                _ if verdict.errors.is_empty() => {
                    eprintln!("{}: cannot be loaded", verdict.file);
                }
                _ => {
                    for error in &verdict.errors {
                        eprintln!("{error}");
                    }
                }
            }
        }
        output::print(&text)?;
    }
    Ok(if all_ok {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}
