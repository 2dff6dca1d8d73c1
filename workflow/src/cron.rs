//! Cron rules of schedules: an expression with its time zone, the instants
//! it fires at, and which of those to run when the scheduler wakes (after a
//! timer, or after downtime).
//!
//! Expressions are croner's, with its classic defaults: 5 fields, or 6 with
//! a leading seconds field; names, ranges, steps, lists, `L`, `W`, `#` and
//! the `@hourly`-style shortcuts; when both day of month and day of week are
//! restricted, a day matching either one fires. Times are wall clock times
//! in the rule's zone. A time of day written by value (`30 2`, `30 2,14`)
//! fires once a day whatever the clock does: when a spring-forward gap
//! skips it, at the first instant after the gap; when a fall-back repeats
//! it, at its first pass. A rule with a wildcard or a step in its time
//! fields (`*/30 * * * *`) follows elapsed time instead: it fires in both
//! passes of a repeated hour and not at all in a gap.

use crate::zone::{NamedZone, ZoneError};
use chrono::{DateTime, FixedOffset, Local, TimeZone, Timelike, Utc};
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};

/// What to do with fires missed while the daemon was down (or asleep).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Run nothing missed; a fire runs only if the scheduler is on time.
    None,
    /// Run the newest missed fire once.
    #[default]
    Latest,
    /// Run every missed fire, oldest first, up to `max_catch_up` of them.
    All,
}

impl CatchUp {
    const ALL: [CatchUp; 3] = [CatchUp::None, CatchUp::Latest, CatchUp::All];

    /// `"none"`, `"latest"` or `"all"`.
    pub fn parse(text: &str) -> Result<CatchUp, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == text)
            .ok_or_else(|| one_of("catch_up", &Self::ALL.map(CatchUp::as_str), text))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        }
    }
}

/// What to do when a schedule fires while its previous job still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// Drop the new fire.
    #[default]
    Skip,
    /// Queue the new job behind the running one.
    Queue,
    /// Start the new job alongside the running one.
    Allow,
}

impl Overlap {
    const ALL: [Overlap; 3] = [Overlap::Skip, Overlap::Queue, Overlap::Allow];

    /// `"skip"`, `"queue"` or `"allow"`.
    pub fn parse(text: &str) -> Result<Overlap, String> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == text)
            .ok_or_else(|| one_of("overlap", &Self::ALL.map(Overlap::as_str), text))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Allow => "allow",
        }
    }
}

fn one_of(key: &str, choices: &[&str], got: &str) -> String {
    let choices: Vec<String> = choices.iter().map(|c| format!("{c:?}")).collect();
    format!("{key} must be one of {}; got {got:?}", choices.join(", "))
}

/// How late a fire may be and still count as on time: the timer's own
/// latency, a busy host, a suspended VM that resumes within the minute.
pub const ON_TIME: chrono::Duration = chrono::Duration::seconds(60);

/// The zone a rule's wall clock times are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    Named(NamedZone),
    /// The host's zone, as `chrono::Local` sees it (`TZ`, `/etc/localtime`).
    Local,
}

/// A checked cron expression in a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronRule {
    expression: String,
    /// The whole rule.
    cron: Cron,
    /// For a rule that names its times of day by value (`30 2,14 * * *`,
    /// `0 8-18 * * 1-5`), one rule per time of day, each with the whole
    /// rule's dates; empty otherwise. See [`times_of_day`].
    times: Vec<Cron>,
    zone: Zone,
    /// False for a rule that matches no date at all (`0 0 30 2 *`), found
    /// once at parse time so that no search ever runs for it.
    fires: bool,
}

impl CronRule {
    /// `timezone` None = the host's zone (chrono::Local). Errors are
    /// one-line messages naming the problem.
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<CronRule, String> {
        let cron = parse_expression(expression)?;
        let zone = timezone.map(parse_zone).transpose()?;
        Ok(CronRule::new(expression, cron, zone))
    }

    /// The rule from parts already checked by [`parse_expression`] and
    /// [`parse_zone`].
    pub(crate) fn new(expression: &str, cron: Cron, zone: Option<NamedZone>) -> CronRule {
        let mut rule = CronRule {
            expression: expression.to_string(),
            times: times_of_day(expression, &cron),
            cron,
            zone: zone.map_or(Zone::Local, Zone::Named),
            fires: true,
        };
        // Without a year field a rule repeats at least every 400 years (the
        // Gregorian cycle), and croner searches up to the year 5000, so a
        // rule with no fire after 2000 has none at all.
        let origin = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
        rule.fires =
            origin.is_some_and(|origin| rule.search(&rule.cron, origin, Search::After).is_some());
        rule
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The IANA name of the rule's zone, or `"local"` for the host's zone.
    pub fn zone_name(&self) -> String {
        match self.zone {
            Zone::Named(tz) => tz.name().to_string(),
            Zone::Local => "local".to_string(),
        }
    }

    /// Whether no date matches the rule at all, like `0 0 30 2 *`.
    pub fn never_fires(&self) -> bool {
        !self.fires
    }

    /// `instant` as a wall clock time in the rule's zone, with its offset.
    pub fn in_zone(&self, instant: DateTime<Utc>) -> DateTime<FixedOffset> {
        match self.zone {
            Zone::Named(tz) => instant.with_timezone(&tz).fixed_offset(),
            Zone::Local => instant.with_timezone(&Local).fixed_offset(),
        }
    }

    /// First fire strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.crons()
            .iter()
            .filter_map(|cron| self.search(cron, after, Search::After))
            .min()
    }

    /// Fires in (after, until], oldest first, at most `limit` (the newest
    /// `limit` if there are more).
    ///
    /// The search walks back from `until`, so its cost is bounded by
    /// `limit` however long ago `after` is.
    pub fn fires_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut fires = Vec::new();
        if after >= until || limit == 0 {
            return fires;
        }
        for cron in self.crons() {
            let mut next = self.search(cron, until, Search::AtOrBefore);
            let mut found = 0;
            while let Some(fire) = next
                && fire > after
                && found < limit
            {
                fires.push(fire);
                found += 1;
                next = self.search(cron, fire, Search::Before);
            }
        }
        fires.sort_unstable();
        // Times of day that a spring-forward gap moves to its end can meet
        // there (02:00 and 02:30 both run at 03:00): that is one fire.
        fires.dedup();
        let extra = fires.len().saturating_sub(limit);
        fires.drain(..extra);
        fires
    }

    fn crons(&self) -> &[Cron] {
        if self.times.is_empty() {
            std::slice::from_ref(&self.cron)
        } else {
            &self.times
        }
    }

    fn search(&self, cron: &Cron, from: DateTime<Utc>, search: Search) -> Option<DateTime<Utc>> {
        if !self.fires {
            return None;
        }
        // Fires fall on whole seconds, and croner reads only whole seconds:
        // after 04:00:00.5 means after 04:00:00, and at or before 04:00:00.5
        // means at or before 04:00:00.
        let from = from.with_nanosecond(0).unwrap_or(from);
        match self.zone {
            Zone::Named(tz) => search_in(cron, &tz, from, search),
            Zone::Local => search_in(cron, &Local, from, search),
        }
    }
}

fn search_in<Z: TimeZone>(
    cron: &Cron,
    zone: &Z,
    from: DateTime<Utc>,
    search: Search,
) -> Option<DateTime<Utc>> {
    let from = from.with_timezone(zone);
    // croner bounds every search (years 1 to 5000, and a cap on steps);
    // running out of either is "no fire", like a date out of range.
    let found = match search {
        Search::After => cron.find_next_occurrence(&from, false),
        Search::Before => cron.find_previous_occurrence(&from, false),
        Search::AtOrBefore => cron.find_previous_occurrence(&from, true),
    };
    found.ok().map(|fire| fire.with_timezone(&Utc))
}

/// The most times of day a rule is split into; see [`times_of_day`].
const MAX_TIMES_OF_DAY: usize = 96;

/// Splits a rule that names its times of day by value into one rule per
/// time of day.
///
/// croner treats a rule as a fixed time of day only when its second, minute
/// and hour fields each hold one value; any other rule is an interval, which
/// skips the times a spring-forward gap removes and runs twice in an hour
/// that a fall-back repeats. Classic cron treats every time written by
/// value (`30 2,14`, `0 8-18`) as fixed, and so does HoldFast: each such
/// time of day becomes its own single-time rule, which croner moves out of
/// a gap and runs once in a repeat. Rules with a wildcard or a step in
/// those fields (`*/15 * * * *`, `0 */2 * * *`) stay intervals, and so does
/// a rule naming more than [`MAX_TIMES_OF_DAY`] times.
fn times_of_day(expression: &str, cron: &Cron) -> Vec<Cron> {
    let pattern = &cron.pattern;
    let by_value = [&pattern.seconds, &pattern.minutes, &pattern.hours]
        .iter()
        .all(|field| field.step == 1 && !field.from_wildcard);
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if !by_value || !(5..=6).contains(&fields.len()) {
        return Vec::new();
    }
    let (seconds, minutes, hours) = (
        pattern.seconds.values(),
        pattern.minutes.values(),
        pattern.hours.values(),
    );
    let count = seconds.len() * minutes.len() * hours.len();
    if count <= 1 || count > MAX_TIMES_OF_DAY {
        return Vec::new();
    }
    let dates = fields[fields.len() - 3..].join(" ");
    let mut times = Vec::with_capacity(count);
    for hour in &hours {
        for minute in &minutes {
            for second in &seconds {
                match parser().parse(&format!("{second} {minute} {hour} {dates}")) {
                    Ok(time) => times.push(time),
                    // The dates parsed as part of the whole rule; should
                    // they not on their own, the whole rule still works.
                    Err(_) => return Vec::new(),
                }
            }
        }
    }
    times
}

#[derive(Clone, Copy)]
enum Search {
    After,
    Before,
    AtOrBefore,
}

/// Which fires to run when the scheduler wakes at `now`, given the last
/// instant already handled (`last`): the fires in (last, now]; `none` →
/// only the newest, and only if it is on time ([`ON_TIME`]); `latest` → the
/// newest; `all` → every one, oldest first, at most `max_catch_up` (the
/// newest ones; at least one).
pub fn due_fires(
    rule: &CronRule,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    catch_up: CatchUp,
    max_catch_up: usize,
) -> Vec<DateTime<Utc>> {
    match catch_up {
        CatchUp::None => {
            let mut fires = rule.fires_between(last, now, 1);
            fires.retain(|fire| now - *fire <= ON_TIME);
            fires
        }
        CatchUp::Latest => rule.fires_between(last, now, 1),
        CatchUp::All => rule.fires_between(last, now, max_catch_up.max(1)),
    }
}

/// The fields of a 6-field expression (seconds first), for messages.
const FIELDS: [(&str, &str); 6] = [
    ("seconds", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L or W"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT, L or #"),
];

const SHORTCUTS: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Checks a cron expression, with a message that names the field at fault.
pub(crate) fn parse_expression(expression: &str) -> Result<Cron, String> {
    let text = expression.trim();
    if text.is_empty() {
        return Err(
            "the cron expression is empty; write 5 fields (minute hour day-of-month month \
             day-of-week) like \"0 4 * * *\""
                .to_string(),
        );
    }
    if text.contains('@') {
        if !SHORTCUTS.iter().any(|s| s.eq_ignore_ascii_case(text)) {
            return Err(format!(
                "unknown cron shortcut {text:?}; use {}",
                SHORTCUTS.join(", ")
            ));
        }
        return parser().parse(text).map_err(|e| invalid(text, &e));
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    if !(5..=6).contains(&fields.len()) {
        return Err(format!(
            "cron expression {text:?} has {} fields; write 5 (minute hour day-of-month month \
             day-of-week), or 6 with seconds first",
            fields.len()
        ));
    }
    let offset = 6 - fields.len();
    for (index, field) in fields.iter().enumerate() {
        check_field(offset + index, field)?;
    }
    parser().parse(text).map_err(|error| {
        // croner's messages do not say which field is wrong: find the first
        // that fails on its own.
        for (index, field) in fields.iter().enumerate() {
            let mut alone = ["*"; 6];
            alone[offset + index] = field;
            if let Err(e) = parser().parse(&alone.join(" ")) {
                let (name, values) = FIELDS[offset + index];
                return format!(
                    "invalid {name} field {field:?} in cron expression {text:?}: {}; use {values}",
                    croner_message(&e)
                );
            }
        }
        invalid(text, &error)
    })
}

/// Letters are names, and each field takes only its own: croner would read
/// `MON` in the month field as 1, or `JAN` in the day-of-week field as
/// Monday.
fn check_field(index: usize, field: &str) -> Result<(), String> {
    let upper = field.to_ascii_uppercase();
    let allowed = |word: &str| match index {
        3 => matches!(word, "L" | "W" | "LW"),
        4 => MONTHS.contains(&word),
        5 => WEEKDAYS.contains(&word) || word == "L",
        _ => false,
    };
    let bad = upper
        .split(|c: char| !c.is_ascii_alphabetic())
        // `5L` and `15W` leave a letter after digits; the split keeps it.
        .find(|word| !word.is_empty() && !allowed(word));
    match bad {
        Some(word) => {
            let (name, values) = FIELDS[index];
            Err(format!(
                "invalid {name} field {field:?}: {word:?} is not allowed there; use {values}"
            ))
        }
        None => Ok(()),
    }
}

fn invalid(text: &str, error: &CronError) -> String {
    format!(
        "invalid cron expression {text:?}: {}",
        croner_message(error)
    )
}

/// croner's message, in the project's style: lowercase, no final period,
/// without croner's own prefixes.
fn croner_message(error: &CronError) -> String {
    let message = match error {
        CronError::InvalidPattern(m)
        | CronError::IllegalCharacters(m)
        | CronError::ComponentError(m) => m.clone(),
        other => other.to_string(),
    };
    let message = message.trim().trim_end_matches('.');
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An IANA time zone name, exactly as the tz database spells it.
pub(crate) fn parse_zone(name: &str) -> Result<NamedZone, String> {
    NamedZone::get(name).map_err(|e| match e {
        ZoneError::Unknown(None) => format!(
            "unknown time zone {name:?}; use an IANA name like \"Europe/Berlin\" or \"UTC\""
        ),
        other => format!("unknown time zone {name:?}; {other}"),
    })
}

#[cfg(test)]
mod tests;
