//! `hfctl validate FILE...`: check workflow files and connection profiles
//! offline, with the same loaders the daemon uses, so a file that passes
//! here loads there. A file is a connection profile when it is in a
//! `connections.d` directory or has a `[connection]` table.

use std::path::PathBuf;

use holdfast_api::LoadError;
use serde::Serialize;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output::{self, Style};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workflow files (one chain each) or connection profiles.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// One file's verdict, as printed by `--json`.
#[derive(Debug, Serialize)]
struct Verdict {
    file: String,
    chain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<String>,
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
            if let Some(verdict) = connection_verdict(path) {
                return verdict;
            }
            match holdfast_workflow::load_file(path) {
                Ok(chain) => Verdict {
                    file,
                    chain: Some(chain.name.clone()),
                    connection: None,
                    ok: true,
                    activities: chain.activities.len(),
                    errors: Vec::new(),
                },
                Err(errors) => Verdict {
                    file,
                    chain: None,
                    connection: None,
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
                None if verdict.ok => text.push_str(&format!(
                    "{}: {} (connection {})\n",
                    verdict.file,
                    ctx.palette.paint("ok", Some(Style::Green)),
                    verdict.connection.as_deref().unwrap_or_default()
                )),
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

/// The verdict on `path` as a connection profile, or None when it is not
/// one (or cannot be read: the chain loader then says why).
fn connection_verdict(path: &std::path::Path) -> Option<Verdict> {
    use holdfast_workflow::connection::{is_connection_file, parse_connection};
    let source = std::fs::read_to_string(path).ok()?;
    if !is_connection_file(path, &source) {
        return None;
    }
    let file = path.display().to_string();
    Some(match parse_connection(path, &source) {
        Ok(connection) => Verdict {
            file,
            chain: None,
            connection: Some(connection.name),
            ok: true,
            activities: 0,
            errors: Vec::new(),
        },
        Err(errors) => Verdict {
            file,
            chain: None,
            connection: None,
            ok: false,
            activities: 0,
            errors,
        },
    })
}
