//! `hfctl stats [CHAIN[.PROCESS[.ACTIVITY]]] [--since 7d] [--tenant T]`:
//! runs, success rate, retries, duration and queue-wait percentiles, peak
//! memory and CPU per chain and per activity, from `stats.get`.

use std::time::Duration;

use holdfast_api::Percentiles;
use holdfast_api::rpc::HoldfastClient;

use super::Context;
use crate::error::{Error, Outcome};
use crate::output::{self, Align, Cell, Table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// CHAIN, CHAIN.PROCESS or CHAIN.PROCESS.ACTIVITY; every chain without.
    pub target: Option<String>,
    /// Count jobs created since: a duration back from now (7d, 12h), a date
    /// (2026-12-01, from its midnight in the daemon's zone) or an RFC 3339
    /// instant.
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// Only this tenant's jobs.
    #[arg(long)]
    pub tenant: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    let stats = daemon
        .call(
            daemon
                .client
                .stats_get(args.target, Some(args.since), args.tenant),
        )
        .await?;
    if ctx.json {
        output::print_json(&stats)?;
        return Ok(Outcome::Success);
    }
    let mut text = format!("since {}\n\n", output::time(&stats.since));
    let mut chains = Table::new(&[
        "CHAIN",
        "JOBS",
        "OK",
        "FAILED",
        "CANCELLED",
        "RATE",
        "RETRIES",
        "P50",
        "P95",
        "MAX",
        "WAIT P50",
        "WAIT P95",
        "PEAK MEM",
        "CPU",
    ]);
    for column in 1..=13 {
        chains = chains.align(column, Align::Right);
    }
    for c in &stats.chains {
        let mut row: Vec<Cell> = vec![
            c.chain.clone().into(),
            c.jobs.to_string().into(),
            c.succeeded.to_string().into(),
            c.failed.to_string().into(),
            c.cancelled.to_string().into(),
            rate(c.success_rate).into(),
            c.retries.to_string().into(),
        ];
        row.extend(figures(
            &c.duration,
            &c.queue_wait,
            c.peak_memory_bytes,
            c.cpu_us,
        ));
        chains.row(row);
    }
    text.push_str(&chains.render(&ctx.palette));
    if !stats.activities.is_empty() {
        let mut activities = Table::new(&[
            "ACTIVITY", "RUNS", "OK", "FAILED", "RATE", "ATTEMPTS", "P50", "P95", "MAX",
            "WAIT P50", "WAIT P95", "PEAK MEM", "CPU",
        ]);
        for column in 1..=12 {
            activities = activities.align(column, Align::Right);
        }
        for a in &stats.activities {
            let mut row: Vec<Cell> = vec![
                a.path.clone().into(),
                a.runs.to_string().into(),
                a.succeeded.to_string().into(),
                a.failed.to_string().into(),
                rate(a.success_rate).into(),
                a.attempts.to_string().into(),
            ];
            row.extend(figures(
                &a.duration,
                &a.queue_wait,
                a.peak_memory_bytes,
                a.cpu_us,
            ));
            activities.row(row);
        }
        text.push('\n');
        text.push_str(&activities.render(&ctx.palette));
    }
    output::print(&text)?;
    Ok(Outcome::Success)
}

/// Duration p50, p95, max, wait p50, p95, peak memory and CPU cells.
fn figures(
    duration: &Percentiles,
    wait: &Percentiles,
    peak: Option<u64>,
    cpu_us: u64,
) -> Vec<Cell> {
    let ms = |v: Option<u64>| {
        v.map_or_else(
            || "-".to_string(),
            |v| output::duration(Duration::from_millis(v)),
        )
    };
    vec![
        ms(duration.p50_ms).into(),
        ms(duration.p95_ms).into(),
        ms(duration.max_ms).into(),
        ms(wait.p50_ms).into(),
        ms(wait.p95_ms).into(),
        peak.map_or_else(|| "-".to_string(), output::compact_bytes)
            .into(),
        output::duration(Duration::from_micros(cpu_us)).into(),
    ]
}

/// `97.5%`, or `-` when nothing ended.
fn rate(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0))
}
