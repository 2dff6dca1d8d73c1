//! `hfctl cron next EXPR`: when a cron expression fires, worked out offline
//! with the same rules the daemon's scheduler uses, so an operator can try
//! a schedule (and its time zone's clock changes) before writing it down.

use chrono::{DateTime, SecondsFormat, Utc};
use holdfast_workflow::CronRule;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The next fire times of a cron expression.
    Next(NextArgs),
}

#[derive(Debug, clap::Args)]
pub struct NextArgs {
    /// 5 fields (minute hour day-of-month month day-of-week), 6 with
    /// seconds first, or @hourly, @daily, @weekly, @monthly, @yearly; quote
    /// it, like "0 4 * * *".
    #[arg(value_name = "EXPR")]
    pub expression: String,
    /// The IANA time zone the expression is read in, like Europe/Berlin
    /// [default: the host's].
    #[arg(long = "tz", value_name = "ZONE")]
    pub timezone: Option<String>,
    /// How many fire times to print.
    #[arg(
        short = 'n',
        long = "count",
        value_name = "COUNT",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub count: u32,
    /// Start after this RFC 3339 time, like 2026-03-29T00:00:00+01:00
    /// [default: now].
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    match args.command {
        Command::Next(args) => {
            let fires = next_fires(&args, Utc::now())?;
            if ctx.json {
                output::print_json(&fires)?;
            } else {
                let mut text = fires.join("\n");
                text.push('\n');
                output::print(&text)?;
            }
            Ok(Outcome::Success)
        }
    }
}

/// The next fires after `--from` (or `now`), as RFC 3339 times in the
/// rule's zone with their offsets.
fn next_fires(args: &NextArgs, now: DateTime<Utc>) -> Result<Vec<String>, Error> {
    let usage = |message: String| Error::Usage { message };
    let rule = CronRule::parse(&args.expression, args.timezone.as_deref()).map_err(usage)?;
    let from = match &args.from {
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map_err(|_| {
                usage(format!(
                    "invalid --from time {text:?}; write RFC 3339, like 2026-03-29T00:00:00+01:00"
                ))
            })?
            .with_timezone(&Utc),
        None => now,
    };
    if rule.never_fires() {
        return Err(usage(format!(
            "cron expression {:?} never fires: no date matches its day-of-month, month and \
             day-of-week fields",
            rule.expression()
        )));
    }
    let mut fires = Vec::new();
    let mut at = from;
    while fires.len() < args.count as usize {
        // Only the end of the calendar (the year 5000) stops a rule that
        // fires at all.
        let Some(fire) = rule.next_after(at) else {
            break;
        };
        fires.push(
            rule.in_zone(fire)
                .to_rfc3339_opts(SecondsFormat::Secs, false),
        );
        at = fire;
    }
    Ok(fires)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn next_args(line: &[&str]) -> NextArgs {
        let cli = Cli::try_parse_from(["cron"].iter().chain(line)).unwrap();
        let Command::Next(args) = cli.command;
        args
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn prints_fires_in_the_rule_zone_across_a_clock_change() {
        let args = next_args(&[
            "next",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "-n",
            "3",
            "--from",
            "2026-03-28T00:00:00+01:00",
        ]);
        assert_eq!(
            next_fires(&args, now()).unwrap(),
            [
                "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:30:00+02:00"
            ]
        );
        // Five by default, from now.
        let args = next_args(&["next", "@daily", "--tz", "UTC"]);
        assert_eq!(args.count, 5);
        let fires = next_fires(&args, now()).unwrap();
        assert_eq!(fires.len(), 5);
        assert_eq!(fires[0], "2026-05-02T00:00:00+00:00");
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        let usage = |line: &[&str]| match next_fires(&next_args(line), now()) {
            Err(Error::Usage { message }) => message,
            other => panic!("expected a usage error, got {other:?}"),
        };
        assert_eq!(
            usage(&["next", "0 4 * *"]),
            "cron expression \"0 4 * *\" has 4 fields; write 5 (minute hour day-of-month month \
             day-of-week), or 6 with seconds first"
        );
        assert_eq!(
            usage(&["next", "0 4 * * *", "--tz", "Mars/Olympus"]),
            "unknown time zone \"Mars/Olympus\"; use an IANA name like \"Europe/Berlin\" or \
             \"UTC\""
        );
        assert_eq!(
            usage(&["next", "0 4 * * *", "--from", "tomorrow"]),
            "invalid --from time \"tomorrow\"; write RFC 3339, like 2026-03-29T00:00:00+01:00"
        );
        assert!(usage(&["next", "0 0 30 2 *", "--tz", "UTC"]).contains("never fires"));
        let error = Cli::try_parse_from(["cron", "next", "@daily", "-n", "0"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }
}
