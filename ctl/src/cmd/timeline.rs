//! `hfctl timeline JOB`: a Gantt chart of a job in the terminal: one row
//! per activity, its attempts as bars over a time axis, retry delays and
//! the job's queue wait between them.

use std::io::IsTerminal;

use chrono::Utc;
use holdfast_api::AttemptState;
use holdfast_api::rpc::HoldfastClient;

use super::Context;
use crate::error::{Error, Outcome};
use crate::gantt::{Gantt, Kind, Row};
use crate::output::{self, Palette, Style};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job.
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::complete::jobs))]
    pub job: u64,
    /// Columns to draw in [default: the terminal's width, else 100].
    #[arg(long, value_name = "COLUMNS", value_parser = clap::value_parser!(u16).range(40..))]
    pub width: Option<u16>,
}

/// Width when stdout is no terminal and `--width` is not given.
const DEFAULT_WIDTH: usize = 100;

/// The bar characters, also in the legend.
/// The characters of a chart: one per kind of cell, the axis' tick mark
/// and the bar's frame.
struct Glyphs {
    succeeded: char,
    running: char,
    failed: char,
    retry: char,
    queued: char,
    tick: char,
    frame: char,
}

/// Block and box-drawing characters, for a UTF-8 locale.
const UTF8: Glyphs = Glyphs {
    succeeded: '█',
    running: '▓',
    failed: '✗',
    retry: '·',
    queued: '░',
    tick: '┬',
    frame: '│',
};

/// The same in ASCII, for any other locale.
const ASCII: Glyphs = Glyphs {
    succeeded: '#',
    running: '=',
    failed: 'x',
    retry: '.',
    queued: '-',
    tick: '+',
    frame: '|',
};

fn glyphs(palette: &Palette) -> &'static Glyphs {
    if palette.utf8() { &UTF8 } else { &ASCII }
}

pub async fn run(ctx: &Context, args: Args) -> Result<Outcome, Error> {
    let daemon = ctx.connect().await?;
    let job = daemon.call(daemon.client.job_get(args.job)).await?;
    let gantt = Gantt::of(&job, Utc::now());
    if ctx.json {
        output::print_json(&job)?;
        return Ok(Outcome::Success);
    }
    let width = args.width.map_or_else(terminal_width, usize::from);
    let header = format!(
        "job {} {} {} ({} from submission)\n",
        job.id,
        ctx.palette.paint(&job.target, Some(Style::Bold)),
        ctx.palette
            .paint(job.state.as_str(), Some(output::job_state_style(job.state))),
        output::seconds(gantt.span)
    );
    output::print(&header)?;
    output::print(&render(&gantt, width, &ctx.palette))?;
    Ok(Outcome::Success)
}

/// The terminal's columns when stdout is one, else [`DEFAULT_WIDTH`].
pub fn terminal_width() -> usize {
    if !std::io::stdout().is_terminal() {
        return DEFAULT_WIDTH;
    }
    terminal_size::terminal_size().map_or(DEFAULT_WIDTH, |(w, _)| usize::from(w.0))
}

/// The chart in `width` columns: the axis, a row per activity (label, bar,
/// state and how long), and the legend.
pub fn render(gantt: &Gantt, width: usize, palette: &Palette) -> String {
    let labels: Vec<String> = gantt.rows.iter().map(|r| clip(&r.label, 32)).collect();
    let suffixes: Vec<String> = gantt.rows.iter().map(suffix).collect();
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let suffix_width = suffixes
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0);
    let bar_width = width.saturating_sub(label_width + suffix_width + 4).max(10);
    let per_cell = gantt.span / bar_width as f64;
    let g = glyphs(palette);
    let mut out = String::new();
    out.push_str(&axis(label_width, bar_width, gantt.span, g.tick));
    for ((row, label), suffix) in gantt.rows.iter().zip(&labels).zip(&suffixes) {
        let cells = cells(row, bar_width, per_cell);
        let mut bar = String::new();
        for cell in cells {
            match cell {
                None => bar.push(' '),
                Some(kind) => {
                    bar.push_str(&palette.paint(&glyph(g, kind).to_string(), style(kind)))
                }
            }
        }
        out.push_str(&format!(
            "{label:<label_width$} {frame}{bar}{frame} {suffix}\n",
            label_width = label_width,
            frame = g.frame
        ));
    }
    out.push_str(&format!(
        "{:label_width$}  {} succeeded  {} running  {} failed attempt  {} retry delay  {} queued\n",
        "", g.succeeded, g.running, g.failed, g.retry, g.queued
    ));
    out
}

/// `0s` under the bar's start, the middle and the end, with tick marks.
fn axis(label_width: usize, bar_width: usize, span: f64, tick: char) -> String {
    let mut marks = vec![' '; bar_width];
    let mut text = vec![' '; bar_width];
    for (position, at) in [(0, 0.0), (bar_width / 2, span / 2.0), (bar_width - 1, span)] {
        marks[position] = tick;
        let label: Vec<char> = if at == 0.0 {
            "0s".chars().collect()
        } else {
            output::seconds(at).chars().collect()
        };
        // The end's label ends at the end; the others start at their mark.
        let begin = if position == bar_width - 1 {
            bar_width.saturating_sub(label.len())
        } else {
            position
        };
        for (i, c) in label.iter().enumerate() {
            if let Some(slot) = text.get_mut(begin + i) {
                *slot = *c;
            }
        }
    }
    format!(
        "{:label_width$}  {}\n{:label_width$}  {}\n",
        "",
        text.iter().collect::<String>().trim_end(),
        "",
        marks.iter().collect::<String>()
    )
}

/// What each of the bar's cells shows. Each segment gets at least one
/// cell and starts after the one before it in the row, so a short attempt
/// or retry delay is seen and their order kept (at the cost of a cell's
/// shift to the right).
fn cells(row: &Row, width: usize, per_cell: f64) -> Vec<Option<Kind>> {
    let mut cells = vec![None; width];
    let mut taken = 0;
    for segment in &row.segments {
        // Rounded at both ends, so a row that starts when another ends
        // starts in the cell after that row's last.
        let first = ((segment.from / per_cell).round() as usize)
            .max(taken)
            .min(width - 1);
        let last = ((segment.to / per_cell).round() as usize).clamp(first + 1, width);
        for cell in &mut cells[first..last] {
            *cell = Some(segment.kind);
        }
        taken = last;
    }
    cells
}

fn glyph(g: &Glyphs, kind: Kind) -> char {
    match kind {
        Kind::Queued => g.queued,
        Kind::RetryDelay => g.retry,
        Kind::Attempt(AttemptState::Succeeded) => g.succeeded,
        Kind::Attempt(AttemptState::Running) => g.running,
        Kind::Attempt(_) => g.failed,
    }
}

fn style(kind: Kind) -> Option<Style> {
    match kind {
        Kind::Attempt(AttemptState::Succeeded) => Some(Style::Green),
        Kind::Attempt(AttemptState::Running) => Some(Style::Bold),
        Kind::Attempt(_) => Some(Style::Red),
        Kind::RetryDelay | Kind::Queued => Some(Style::Yellow),
    }
}

/// `succeeded 3.1s, 2 attempts`.
fn suffix(row: &Row) -> String {
    let took: f64 = row
        .segments
        .iter()
        .map(|s| s.to - s.from)
        .sum::<f64>()
        .max(0.0);
    let state = row.state.map_or("queued", |s| s.as_str());
    match row.attempts {
        0 if row.state.is_some() => state.to_string(),
        0 | 1 => format!("{state} {}", output::seconds(took)),
        n => format!("{state} {}, {n} attempts", output::seconds(took)),
    }
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let kept: String = text.chars().take(max - 1).collect();
        format!("{kept}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gantt::Segment;

    fn row(label: &str, segments: Vec<(Kind, f64, f64)>) -> Row {
        Row {
            label: label.into(),
            state: Some(holdfast_api::ActivityState::Succeeded),
            attempts: segments
                .iter()
                .filter(|s| matches!(s.0, Kind::Attempt(_)))
                .count() as u32,
            segments: segments
                .into_iter()
                .map(|(kind, from, to)| Segment {
                    kind,
                    from,
                    to,
                    attempt: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn bars_follow_the_time_axis_and_retries_show() {
        let gantt = Gantt {
            start: Utc::now(),
            span: 10.0,
            rows: vec![
                row(
                    "p.first",
                    vec![(Kind::Attempt(AttemptState::Succeeded), 0.0, 5.0)],
                ),
                row(
                    "p.second",
                    vec![
                        (Kind::Attempt(AttemptState::Failed), 5.0, 6.0),
                        (Kind::RetryDelay, 6.0, 6.0),
                        (Kind::Attempt(AttemptState::Succeeded), 6.0, 10.0),
                    ],
                ),
            ],
        };
        let text = render(&gantt, 60, &Palette::plain());
        let lines: Vec<&str> = text.lines().collect();
        let first = lines
            .iter()
            .find(|l| l.starts_with("p.first"))
            .expect("p.first");
        let second = lines
            .iter()
            .find(|l| l.starts_with("p.second"))
            .expect("p.second");
        let bar = |line: &str| -> Vec<char> {
            line.split('│').nth(1).expect("a bar").chars().collect()
        };
        let (first, second) = (bar(first), bar(second));
        assert_eq!(first.len(), second.len());
        let at = |bar: &[char], c: char| bar.iter().position(|&x| x == c).expect("drawn");
        let last = |bar: &[char], c: char| bar.iter().rposition(|&x| x == c).expect("drawn");
        // The first row's bar ends before the second's begins.
        assert!(
            last(&first, UTF8.succeeded) < at(&second, UTF8.failed),
            "{text}"
        );
        // Even a zero-length delay is marked, between the two attempts.
        let retry = at(&second, UTF8.retry);
        assert!(last(&second, UTF8.failed) < retry, "{text}");
        assert!(retry < at(&second, UTF8.succeeded), "{text}");
    }

    #[test]
    fn an_ascii_palette_draws_only_ascii() {
        let gantt = Gantt {
            start: Utc::now(),
            span: 4.0,
            rows: vec![row(
                "p.a",
                vec![
                    (Kind::Attempt(AttemptState::Failed), 0.0, 1.0),
                    (Kind::RetryDelay, 1.0, 2.0),
                    (Kind::Attempt(AttemptState::Running), 2.0, 4.0),
                ],
            )],
        };
        let text = render(&gantt, 40, &Palette::ascii());
        assert!(text.is_ascii(), "{text}");
        assert!(
            text.contains('x') && text.contains('=') && text.contains('+'),
            "{text}"
        );
    }
}
