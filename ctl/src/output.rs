//! Output for people and for scripts: aligned tables, durations, times,
//! state colours, and writing to stdout without panicking on a closed pipe.

use std::fmt::Write as _;
use std::io::Write;

use holdfast_api::{ActivityState, JobState};
use serde::Serialize;

use crate::error::Error;

pub use holdfast_report::text::{
    duration, elapsed_text, json_value, percent, seconds, short_version, time,
};

/// A colour or emphasis for one piece of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Green,
    Red,
    Yellow,
    Dim,
    Bold,
}

impl Style {
    fn anstyle(self) -> anstyle::Style {
        use anstyle::AnsiColor;
        match self {
            Style::Green => AnsiColor::Green.on_default(),
            Style::Red => AnsiColor::Red.on_default(),
            Style::Yellow => AnsiColor::Yellow.on_default(),
            Style::Dim => anstyle::Style::new().dimmed(),
            Style::Bold => anstyle::Style::new().bold(),
        }
    }
}

/// How to draw for this stdout: whether to colour, and whether the
/// locale's character set has the box-drawing characters of trees, bars
/// and charts (else ASCII).
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    enabled: bool,
    utf8: bool,
}

impl Palette {
    /// Colour when anstream (clap's own terminal crate) says so for stdout:
    /// a terminal that supports colour, unless `NO_COLOR` is set (and not
    /// empty), `CLICOLOR=0` or `TERM=dumb`; always with `CLICOLOR_FORCE`.
    /// UTF-8 when the locale says so ([`utf8_locale`]).
    pub fn detect() -> Palette {
        let choice = anstream::AutoStream::choice(&std::io::stdout());
        Palette {
            enabled: choice != anstream::ColorChoice::Never,
            utf8: utf8_locale(),
        }
    }

    #[cfg(test)]
    pub fn plain() -> Palette {
        Palette {
            enabled: false,
            utf8: true,
        }
    }

    #[cfg(test)]
    pub fn ascii() -> Palette {
        Palette {
            enabled: false,
            utf8: false,
        }
    }

    /// Whether colours are on (for views that style text themselves).
    pub fn colour(&self) -> bool {
        self.enabled
    }

    /// Whether box-drawing and block characters may be printed.
    pub fn utf8(&self) -> bool {
        self.utf8
    }

    pub fn paint(&self, text: &str, style: Option<Style>) -> String {
        match style {
            Some(style) if self.enabled && !text.is_empty() => {
                let style = style.anstyle();
                format!("{}{text}{}", style.render(), style.render_reset())
            }
            _ => text.to_string(),
        }
    }
}

/// Whether the locale's character set is UTF-8: the first of `LC_ALL`,
/// `LC_CTYPE` and `LANG` that is set and not empty (the order the C
/// library reads them in) names it (`en_US.UTF-8`, `C.utf8`). Unset, or
/// `C`/`POSIX`, is ASCII.
pub fn utf8_locale() -> bool {
    ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .is_some_and(|value| {
            let value = value.to_ascii_lowercase();
            value.contains("utf-8") || value.contains("utf8")
        })
}

pub fn job_state_style(state: JobState) -> Style {
    match state {
        JobState::Succeeded => Style::Green,
        JobState::Failed => Style::Red,
        JobState::Queued | JobState::Running => Style::Yellow,
        JobState::Cancelled => Style::Dim,
    }
}

pub fn activity_state_style(state: ActivityState) -> Option<Style> {
    match state {
        ActivityState::Succeeded => Some(Style::Green),
        ActivityState::Failed => Some(Style::Red),
        ActivityState::Running | ActivityState::RetryWait => Some(Style::Yellow),
        ActivityState::Skipped | ActivityState::Cancelled => Some(Style::Dim),
        ActivityState::Pending => None,
    }
}

/// One table cell: its text, and a style applied after the text is padded
/// (escape codes must not count towards the column width).
#[derive(Debug, Clone)]
pub struct Cell {
    text: String,
    style: Option<Style>,
}

impl Cell {
    pub fn styled(text: impl Into<String>, style: Option<Style>) -> Cell {
        Cell {
            text: text.into(),
            style,
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell { text, style: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::from(text.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Columns aligned on the widest cell, two spaces apart, no trailing blanks.
#[derive(Debug)]
pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<Cell>>,
    indent: usize,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            align: vec![Align::Left; headers.len()],
            rows: Vec::new(),
            indent: 0,
        }
    }

    /// A table without a header line.
    #[cfg(test)]
    pub fn headless(columns: usize) -> Table {
        Table {
            headers: Vec::new(),
            align: vec![Align::Left; columns],
            rows: Vec::new(),
            indent: 0,
        }
    }

    pub fn align(mut self, column: usize, align: Align) -> Table {
        if let Some(slot) = self.align.get_mut(column) {
            *slot = align;
        }
        self
    }

    pub fn indent(mut self, spaces: usize) -> Table {
        self.indent = spaces;
        self
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn render(&self, palette: &Palette) -> String {
        let columns = self.align.len();
        let mut widths = vec![0; columns];
        let header_cells: Vec<Cell> = self
            .headers
            .iter()
            .map(|h| Cell::styled(h.clone(), Some(Style::Bold)))
            .collect();
        let all_rows = (!header_cells.is_empty())
            .then_some(&header_cells)
            .into_iter()
            .chain(self.rows.iter());
        for row in all_rows.clone() {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(width(&cell.text));
            }
        }
        let mut out = String::new();
        for row in all_rows {
            let mut line = " ".repeat(self.indent);
            // Trailing empty cells would only leave blanks at the line's end.
            let used = row
                .iter()
                .rposition(|c| !c.text.is_empty())
                .map_or(0, |i| i + 1);
            for (i, cell) in row.iter().enumerate().take(used.min(columns)) {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[i] - width(&cell.text));
                let last = i + 1 == used;
                let painted = palette.paint(&cell.text, cell.style);
                match self.align[i] {
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(&painted);
                    }
                    Align::Left => {
                        line.push_str(&painted);
                        if !last {
                            line.push_str(&pad);
                        }
                    }
                }
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// Display width in terminal columns (unicode-width, as ratatui uses):
/// a CJK character takes two, a combining accent none, so a chain or
/// tenant named in any script stays aligned.
fn width(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

/// A byte count for people: `512 B`, `1.5 KiB`, `64.0 MiB`, `1.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// An attempt's resource use in a few characters: `1.2s cpu 45M` (user
/// and system CPU together, then peak memory), empty when not recorded.
pub fn resources(usage: Option<&holdfast_api::ResourceUse>) -> String {
    let Some(usage) = usage else {
        return String::new();
    };
    let cpu = (usage.user_cpu_us + usage.system_cpu_us) as f64 / 1e6;
    let mut text = if cpu < 10.0 {
        format!("{cpu:.1}s cpu")
    } else {
        format!("{cpu:.0}s cpu")
    };
    if let Some(peak) = usage.peak_memory_bytes {
        text.push(' ');
        text.push_str(&compact_bytes(peak));
    }
    text
}

/// `812K`, `45M`, `1.2G`: binary units, one letter.
pub fn compact_bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let n = n as f64;
    if n < K * K {
        format!("{:.0}K", n / K)
    } else if n < K * K * K {
        format!("{:.0}M", n / (K * K))
    } else {
        format!("{:.1}G", n / (K * K * K))
    }
}

/// Aligned `key: value` lines under an indent.
pub fn fields(indent: usize, pairs: &[(&str, String)]) -> String {
    let key_width = pairs.iter().map(|(k, _)| width(k) + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let key = format!("{key}:");
        let _ = writeln!(
            out,
            "{}{key:<key_width$}  {value}",
            " ".repeat(indent),
            key_width = key_width
        );
    }
    out
}

/// Write text to stdout.
pub fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Error::Stdout)
}

/// Write one JSON document (pretty, newline-terminated) to stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::Stdout(e.into()))?;
    text.push('\n');
    print(&text)
}

/// Write one JSON object on one line to stdout (for streams).
pub fn print_json_line<T: Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    let mut text = serde_json::to_string(value).map_err(|e| Error::Stdout(e.into()))?;
    text.push('\n');
    print(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_for_people() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn table_aligns_on_widest_cell() {
        let mut table = Table::new(&["ID", "TARGET", "STATE"]).align(0, Align::Right);
        table.row(vec!["7".into(), "nightly-etl".into(), "running".into()]);
        table.row(vec!["1234".into(), "x".into(), "failed".into()]);
        let text = table.render(&Palette::plain());
        assert_eq!(
            text,
            "  ID  TARGET       STATE\n   7  nightly-etl  running\n1234  x            failed\n"
        );
    }

    #[test]
    fn table_counts_characters_and_trims_line_ends() {
        let mut table = Table::headless(3);
        table.row(vec!["├─ a".into(), "ok".into(), "".into()]);
        table.row(vec!["b".into(), "".into(), "".into()]);
        table.row(vec!["c".into(), "".into(), "x".into()]);
        assert_eq!(
            table.render(&Palette::plain()),
            "├─ a  ok\nb\nc         x\n"
        );
    }

    #[test]
    fn wide_and_combining_characters_keep_columns_aligned() {
        let mut table = Table::headless(2);
        table.row(vec!["日本".into(), "1".into()]);
        table.row(vec!["e\u{301}te\u{301}".into(), "2".into()]);
        table.row(vec!["abcde".into(), "3".into()]);
        // 日本 is four columns wide, été three: each is padded to five.
        assert_eq!(
            table.render(&Palette::plain()),
            "日本   1\ne\u{301}te\u{301}    2\nabcde  3\n"
        );
    }

    #[test]
    fn colour_does_not_change_widths() {
        let palette = Palette {
            enabled: true,
            utf8: true,
        };
        let mut table = Table::headless(2);
        table.row(vec![Cell::styled("ok", Some(Style::Green)), "1".into()]);
        table.row(vec!["long".into(), "2".into()]);
        let text = table.render(&palette);
        assert_eq!(text, "\x1b[32mok\x1b[0m    1\nlong  2\n");
    }

    #[test]
    fn aligned_fields() {
        let text = fields(2, &[("id", "42".into()), ("submitted by", "ana".into())]);
        assert_eq!(text, "  id:            42\n  submitted by:  ana\n");
    }
}
