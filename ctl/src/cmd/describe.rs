//! `hfctl describe CHAIN`: a chain's parameters, its processes in order and
//! each activity's command and policies, and its notification rules.
//! `--json` prints the `WorkflowDetail`.

use holdfast_api::rpc::HoldfastClient;
use holdfast_api::{ActivityInfo, WorkflowDetail};

use super::Context;
use crate::error::{Error, Outcome};
use crate::output::{self, Palette, Style, Table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The chain's name.
    pub chain: String,
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    let detail = daemon.call(daemon.client.workflow_get(args.chain)).await?;
    if ctx.json {
        output::print_json(&detail)?;
    } else {
        output::print(&render(&detail, &ctx.palette))?;
    }
    Ok(Outcome::Success)
}

/// A parameter's type as shown: `int 1..100` with its bounds (`1..`,
/// `..100` when one is open), `(secret)` for a secret.
fn kind_with_bounds(param: &holdfast_api::ParamInfo) -> String {
    let mut kind = param.kind.clone();
    if param.min.is_some() || param.max.is_some() {
        let bound = |b: &Option<serde_json::Value>| b.as_ref().map(output::json_value);
        kind.push_str(&format!(
            " {}..{}",
            bound(&param.min).unwrap_or_default(),
            bound(&param.max).unwrap_or_default()
        ));
    }
    if param.secret {
        kind.push_str(" (secret)");
    }
    kind
}

fn render(detail: &WorkflowDetail, palette: &Palette) -> String {
    let mut pairs: Vec<(&str, String)> = vec![
        ("chain", palette.paint(&detail.name, Some(Style::Bold))),
        ("file", detail.file.clone()),
        ("version", output::short_version(&detail.version)),
    ];
    if let Some(description) = &detail.description {
        pairs.push(("description", description.clone()));
    }
    if let Some(n) = detail.max_parallel {
        pairs.push(("max parallel", n.to_string()));
    }
    if let Some(n) = detail.concurrency {
        let per = match detail.concurrency_per.as_str() {
            "tenant" => " per tenant",
            _ => " per chain",
        };
        pairs.push(("concurrency", format!("{n}{per}")));
    }
    if let Some(secs) = detail.timeout_seconds {
        pairs.push(("timeout", output::seconds(secs)));
    }
    if let Some(n) = detail.max_priority {
        pairs.push(("max priority", format!("{n} (operators: any)")));
    }
    pairs.push((
        "tenants",
        if detail.tenants.is_empty() {
            "-".to_string()
        } else {
            detail.tenants.join(", ")
        },
    ));
    let mut out = output::fields(0, &pairs);

    out.push_str("\nparameters:\n");
    if detail.params.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let mut table =
            Table::new(&["NAME", "TYPE", "REQUIRED", "DEFAULT", "ENUM", "DESCRIPTION"]).indent(2);
        for param in &detail.params {
            table.row(vec![
                param.name.clone().into(),
                kind_with_bounds(param).into(),
                if param.required { "yes" } else { "no" }.into(),
                param
                    .default
                    .as_ref()
                    .map_or_else(|| "-".to_string(), output::json_value)
                    .into(),
                param
                    .allowed
                    .as_ref()
                    .map_or_else(
                        || "-".to_string(),
                        |values| {
                            values
                                .iter()
                                .map(output::json_value)
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                    )
                    .into(),
                param.description.clone().unwrap_or_default().into(),
            ]);
        }
        out.push_str(&table.render(palette));
    }

    out.push_str("\nprocesses:\n");
    for process in &detail.processes {
        let mut line = format!(
            "  {} ({})",
            palette.paint(&process.name, Some(Style::Bold)),
            process.mode
        );
        if !process.after.is_empty() {
            line.push_str(&format!(" after {}", process.after.join(", ")));
        }
        out.push_str(&line);
        out.push('\n');
        let mut table =
            Table::new(&["ACTIVITY", "TIMEOUT", "RETRIES", "ON FAILURE", "COMMAND"]).indent(4);
        for activity in &process.activities {
            table.row(vec![
                activity.name.clone().into(),
                activity
                    .timeout_seconds
                    .map_or_else(|| "-".to_string(), output::seconds)
                    .into(),
                retries(activity).into(),
                activity.on_failure.clone().into(),
                command_line(activity).into(),
            ]);
        }
        out.push_str(&table.render(palette));
        for activity in &process.activities {
            if let Some(user) = &activity.user {
                out.push_str(&format!(
                    "    {} runs as {user}{}\n",
                    activity.name,
                    activity
                        .group
                        .as_deref()
                        .map(|g| format!(" (group {g})"))
                        .unwrap_or_default()
                ));
            }
            if let Some(foreach) = &activity.foreach {
                out.push_str(&format!(
                    "    {} fans out: one run per item of foreach = {foreach}{}\n",
                    activity.name,
                    activity
                        .max_parallel
                        .map(|n| format!(", at most {n} at once"))
                        .unwrap_or_default()
                ));
            }
            if !activity.connections.is_empty() {
                out.push_str(&format!(
                    "    {} uses connections {}\n",
                    activity.name,
                    activity.connections.join(", ")
                ));
            }
            if let Some(executor) = &activity.executor {
                out.push_str(&format!("    {} runs on {executor}\n", activity.name));
            }
            for limit in &activity.limits {
                let how = if limit.mechanism.starts_with("not enforced") {
                    limit.mechanism.clone()
                } else {
                    format!("enforced by {}", limit.mechanism)
                };
                out.push_str(&format!(
                    "    {} {} = {}: {how}\n",
                    activity.name, limit.name, limit.value
                ));
            }
        }
    }
    if !detail.notify.is_empty() {
        out.push_str("\nnotifications:\n");
        for rule in &detail.notify {
            out.push_str(&format!(
                "  {} on {}: {}",
                palette.paint(&rule.name, Some(Style::Bold)),
                rule.on.join(", "),
                rule.target
            ));
            if let Some(user) = &rule.run_as {
                out.push_str(&format!(", as {user}"));
            }
            if let Some(secs) = rule.coalesce_seconds {
                out.push_str(&format!(", one digest per {}", output::seconds(secs)));
            }
            out.push('\n');
        }
    }
    out
}

/// `3 (5.0s, x2, max 1m00s)`, or `0`.
fn retries(activity: &ActivityInfo) -> String {
    if activity.retries == 0 {
        return "0".to_string();
    }
    let mut text = format!(
        "{} ({}",
        activity.retries,
        output::seconds(activity.retry_delay_seconds)
    );
    if activity.retry_backoff != 1.0 {
        text.push_str(&format!(", x{}", activity.retry_backoff));
    }
    if let Some(max) = activity.max_retry_delay_seconds {
        text.push_str(&format!(", max {}", output::seconds(max)));
    }
    text.push(')');
    text
}

/// The argv joined with spaces (arguments that would be ambiguous quoted);
/// a `shell` activity as `sh -c '...'`.
pub fn command_line(activity: &ActivityInfo) -> String {
    if activity.shell {
        let script = activity.command.last().map_or("", String::as_str);
        return format!("sh -c {}", quote(script, true));
    }
    argv_line(&activity.command)
}

/// An argv joined with spaces, ambiguous arguments quoted as sh would read them.
pub fn argv_line(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| quote(arg, false))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Single-quote `arg` when `always`, or when it is empty or holds blanks or
/// quotes; an inner `'` becomes `'\''` as in sh.
fn quote(arg: &str, always: bool) -> String {
    let needs = always
        || arg.is_empty()
        || arg
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '"' || c == '\\');
    if needs {
        format!("'{}'", arg.replace('\'', r"'\''"))
    } else {
        arg.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(command: &[&str], shell: bool) -> ActivityInfo {
        ActivityInfo {
            name: "a".into(),
            path: "c.p.a".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            shell,
            timeout_seconds: None,
            retries: 3,
            retry_delay_seconds: 5.0,
            retry_backoff: 2.0,
            max_retry_delay_seconds: Some(60.0),
            on_failure: "fail".into(),
            working_dir: None,
            user: None,
            group: None,
            limits: Vec::new(),
            executor: None,
            connections: Vec::new(),
            foreach: None,
            max_parallel: None,
        }
    }

    #[test]
    fn commands_for_people() {
        assert_eq!(
            command_line(&activity(
                &["python3", "x.py", "--date", "{{ params.date }}"],
                false
            )),
            "python3 x.py --date '{{ params.date }}'"
        );
        assert_eq!(
            command_line(&activity(&["/bin/sh", "-c", "cp /a/*.csv /b/"], true)),
            "sh -c 'cp /a/*.csv /b/'"
        );
        assert_eq!(
            command_line(&activity(&["/bin/sh", "-c", "echo 'hi'"], true)),
            r"sh -c 'echo '\''hi'\'''"
        );
    }

    #[test]
    fn retry_policy() {
        assert_eq!(retries(&activity(&["x"], false)), "3 (5.0s, x2, max 1m00s)");
    }
}
