//! Business dates: the instant a job runs as of (`schedule.at`,
//! `HF_SCHEDULED_AT`), the zone it is read in, and the template filters
//! that compute with it (`add`, `start_of`, `end_of`, `format`, `date`).
//!
//! Dates travel through templates as RFC 3339 text with the zone's offset
//! (`2026-12-01T04:00:00+01:00`), so a value can be written out, passed as
//! a parameter or given to another filter alike. Calendar arithmetic is
//! done on the wall clock of the zone, so adding a day across a change of
//! daylight saving time keeps the time of day; adding months clamps to the
//! end of the month (January 31 plus one month is February 28 or 29).

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{
    DateTime, Datelike, Days, FixedOffset, Local, LocalResult, Months, NaiveDate, NaiveDateTime,
    NaiveTime, SecondsFormat, TimeZone, Utc,
};
use minijinja::value::{Kwargs, Rest};
use minijinja::{Environment, Error, ErrorKind, State, Value};

use crate::zone::{NamedZone, ZoneError};

/// The context variable holding the zone filters compute in; not a name
/// templates can use (load-time checks allow only the documented ones).
pub(crate) const ZONE_VAR: &str = "__hf_zone";

/// The zone a business date is read in: a schedule's `timezone`, or the
/// host's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateZone {
    Named(NamedZone),
    /// The host's zone, as `chrono::Local` sees it (`TZ`, `/etc/localtime`).
    Local,
}

impl DateZone {
    /// `"local"` or an IANA name.
    pub fn parse(name: &str) -> Result<DateZone, String> {
        if name == "local" {
            return Ok(DateZone::Local);
        }
        NamedZone::get(name)
            .map(DateZone::Named)
            .map_err(|e| match e {
                ZoneError::Unknown(None) => {
                    format!("unknown time zone {name:?}; use an IANA name or \"local\"")
                }
                other => format!("unknown time zone {name:?}; {other}"),
            })
    }

    /// The IANA name, or `"local"`.
    pub fn name(&self) -> String {
        match self {
            DateZone::Named(tz) => tz.name().to_string(),
            DateZone::Local => "local".to_string(),
        }
    }

    /// `instant` on this zone's wall clock.
    pub fn at(&self, instant: DateTime<Utc>) -> DateTime<FixedOffset> {
        match self {
            DateZone::Named(tz) => instant.with_timezone(tz).fixed_offset(),
            DateZone::Local => instant.with_timezone(&Local).fixed_offset(),
        }
    }

    /// A wall clock time of this zone as an instant: a time a fall-back
    /// repeats is its first pass, a time a spring-forward gap skips is
    /// moved past the gap (as a fixed time of day of a schedule is).
    fn resolve(&self, wall: NaiveDateTime) -> Option<DateTime<FixedOffset>> {
        fn pick<Z: TimeZone>(zone: &Z, wall: NaiveDateTime) -> Option<DateTime<FixedOffset>> {
            // A gap is never longer than a day; step out of it by minutes.
            let mut probe = wall;
            for _ in 0..=24 * 60 {
                match zone.from_local_datetime(&probe) {
                    LocalResult::Single(t) => return Some(t.fixed_offset()),
                    LocalResult::Ambiguous(first, _) => return Some(first.fixed_offset()),
                    LocalResult::None => {
                        probe = probe.checked_add_signed(chrono::Duration::minutes(1))?;
                    }
                }
            }
            None
        }
        match self {
            DateZone::Named(tz) => pick(tz, wall),
            DateZone::Local => pick(&Local, wall),
        }
    }
}

/// The instant a job runs as of, in the zone it is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusinessDate {
    pub at: DateTime<Utc>,
    pub zone: DateZone,
}

impl BusinessDate {
    /// RFC 3339 in the zone, to the second: what `schedule.at` and
    /// `HF_SCHEDULED_AT` show.
    pub fn rfc3339(&self) -> String {
        show(self.zone.at(self.at))
    }

    /// A time an operator typed (`--at`, `--from`, `--to`), read in `zone`:
    /// `YYYY-MM-DD` (midnight), `YYYY-MM-DDTHH:MM[:SS]` (wall clock, also
    /// with a space) or RFC 3339 with an offset.
    pub fn parse(text: &str, zone: DateZone) -> Result<BusinessDate, String> {
        parse_in(text.trim(), zone)
            .map(|t| BusinessDate {
                at: t.with_timezone(&Utc),
                zone,
            })
            .ok_or_else(|| {
                format!(
                    "{text:?} is not a date or time that exists; write YYYY-MM-DD, \
                     YYYY-MM-DDTHH:MM[:SS] or RFC 3339 like 2026-12-01T04:00:00+01:00"
                )
            })
    }

    /// Whether `text` is a bare date (`YYYY-MM-DD`) rather than a time.
    pub fn is_bare_date(text: &str) -> bool {
        text.trim().len() == 10 && NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").is_ok()
    }
}

fn show(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// Reads a date or time in `zone`; None for anything else, an impossible
/// date (February 30) included.
fn parse_in(text: &str, zone: DateZone) -> Option<DateTime<FixedOffset>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(zone.at(t.with_timezone(&Utc)));
    }
    if BusinessDate::is_bare_date(text) {
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        return zone.resolve(date.and_time(NaiveTime::MIN));
    }
    for pattern in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(wall) = NaiveDateTime::parse_from_str(text, pattern) {
            return zone.resolve(wall);
        }
    }
    None
}

/// Registers the date filters on the template environment.
pub(crate) fn register(env: &mut Environment<'static>) {
    env.add_filter("add", add);
    env.add_filter("start_of", start_of);
    env.add_filter("end_of", end_of);
    env.add_filter("format", format);
    env.add_filter("date", date);
}

fn zone_of(state: &State) -> DateZone {
    state
        .lookup(ZONE_VAR)
        .and_then(|v| v.as_str().and_then(|name| DateZone::parse(name).ok()))
        .unwrap_or(DateZone::Local)
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

/// The filter's input as a time in the template's zone.
fn input(state: &State, filter: &str, value: &Value) -> Result<DateTime<FixedOffset>, Error> {
    let zone = zone_of(state);
    let text = value.as_str().ok_or_else(|| {
        invalid(format!(
            "{filter} takes a date or time as text, like schedule.at or \"2026-12-01\"; got {value}"
        ))
    })?;
    parse_in(text, zone).ok_or_else(|| {
        invalid(format!(
            "{filter}: {text:?} is not a date or time that exists; use YYYY-MM-DD or RFC 3339, \
             or parse it first with date('FORMAT')"
        ))
    })
}

/// `add(days=, weeks=, months=, years=, hours=, minutes=)`: calendar
/// arithmetic on the zone's wall clock; months and years clamp to the end
/// of the month.
fn add(state: &State, value: Value, kwargs: Kwargs) -> Result<String, Error> {
    let t = input(state, "add", &value)?;
    let get =
        |key: &str| -> Result<i64, Error> { Ok(kwargs.get::<Option<i64>>(key)?.unwrap_or(0)) };
    let (years, months, weeks, days, hours, minutes) = (
        get("years")?,
        get("months")?,
        get("weeks")?,
        get("days")?,
        get("hours")?,
        get("minutes")?,
    );
    kwargs.assert_all_used()?;
    let out_of_range = || invalid("add: the date is out of range".to_string());
    let total_months = years
        .checked_mul(12)
        .and_then(|m| m.checked_add(months))
        .ok_or_else(out_of_range)?;
    let total_days = weeks
        .checked_mul(7)
        .and_then(|d| d.checked_add(days))
        .ok_or_else(out_of_range)?;
    let wall = t.naive_local();
    let date = shift_months(wall.date(), total_months).ok_or_else(out_of_range)?;
    let date = shift_days(date, total_days).ok_or_else(out_of_range)?;
    let zone = zone_of(state);
    let moved = zone
        .resolve(date.and_time(wall.time()))
        .ok_or_else(out_of_range)?;
    // Hours and minutes are elapsed time, not wall clock.
    let elapsed = chrono::Duration::try_hours(hours)
        .zip(chrono::Duration::try_minutes(minutes))
        .and_then(|(h, m)| h.checked_add(&m))
        .ok_or_else(out_of_range)?;
    let moved = moved.checked_add_signed(elapsed).ok_or_else(out_of_range)?;
    Ok(show(zone.at(moved.with_timezone(&Utc))))
}

fn shift_months(date: NaiveDate, months: i64) -> Option<NaiveDate> {
    let n = u32::try_from(months.unsigned_abs()).ok()?;
    if months >= 0 {
        date.checked_add_months(Months::new(n))
    } else {
        date.checked_sub_months(Months::new(n))
    }
}

fn shift_days(date: NaiveDate, days: i64) -> Option<NaiveDate> {
    if days >= 0 {
        date.checked_add_days(Days::new(days.unsigned_abs()))
    } else {
        date.checked_sub_days(Days::new(days.unsigned_abs()))
    }
}

/// The units `start_of` and `end_of` take.
const UNITS: [&str; 5] = ["hour", "day", "week", "month", "year"];

/// The first wall clock moment of `unit` holding `wall`, and the first of
/// the next one. Weeks start on Monday (ISO 8601).
fn unit_bounds(wall: NaiveDateTime, unit: &str) -> Option<(NaiveDateTime, NaiveDateTime)> {
    let date = wall.date();
    let midnight = |d: NaiveDate| d.and_time(NaiveTime::MIN);
    match unit {
        "hour" => {
            let start = date.and_hms_opt(chrono::Timelike::hour(&wall), 0, 0)?;
            Some((start, start.checked_add_signed(chrono::Duration::hours(1))?))
        }
        "day" => Some((midnight(date), midnight(date.succ_opt()?))),
        "week" => {
            let monday =
                date.checked_sub_days(Days::new(u64::from(date.weekday().num_days_from_monday())))?;
            Some((
                midnight(monday),
                midnight(monday.checked_add_days(Days::new(7))?),
            ))
        }
        "month" => {
            let first = date.with_day(1)?;
            Some((
                midnight(first),
                midnight(first.checked_add_months(Months::new(1))?),
            ))
        }
        "year" => {
            let first = NaiveDate::from_ymd_opt(date.year(), 1, 1)?;
            Some((
                midnight(first),
                midnight(NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)?),
            ))
        }
        _ => None,
    }
}

fn bound(
    state: &State,
    filter: &str,
    value: Value,
    unit: &str,
    end: bool,
) -> Result<String, Error> {
    let t = input(state, filter, &value)?;
    if !UNITS.contains(&unit) {
        return Err(invalid(format!(
            "{filter}({unit:?}): the unit must be one of {}",
            UNITS.map(|u| format!("{u:?}")).join(", ")
        )));
    }
    let out_of_range = || invalid(format!("{filter}: the date is out of range"));
    let (start, next) = unit_bounds(t.naive_local(), unit).ok_or_else(out_of_range)?;
    // The end is the last second of the unit, as a report's "to" is.
    let wall = if end {
        next.checked_sub_signed(chrono::Duration::seconds(1))
            .ok_or_else(out_of_range)?
    } else {
        start
    };
    let zone = zone_of(state);
    let resolved = zone.resolve(wall).ok_or_else(out_of_range)?;
    Ok(show(resolved))
}

/// `start_of("day"|"week"|"month"|"year"|"hour")`.
fn start_of(state: &State, value: Value, unit: &str) -> Result<String, Error> {
    bound(state, "start_of", value, unit, false)
}

/// `end_of(...)`: the last second of the unit.
fn end_of(state: &State, value: Value, unit: &str) -> Result<String, Error> {
    bound(state, "end_of", value, unit, true)
}

/// A strftime pattern checked before use: chrono panics when it formats
/// with an invalid one.
fn strftime_items(pattern: &str) -> Result<Vec<Item<'_>>, Error> {
    let items: Vec<Item<'_>> = StrftimeItems::new(pattern).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(invalid(format!(
            "format: {pattern:?} is not a valid strftime pattern; use %Y, %m, %d, %H, %M, %S, \
             %j, %V, %A, %B and the like"
        )));
    }
    Ok(items)
}

/// `format('%Y-%m')` on a date: strftime in the template's zone. Anything
/// else is minijinja's own `format` (`"%s-%s" | format(a, b)`).
fn format(state: &State, value: Value, args: Rest<Value>) -> Result<Value, Error> {
    let zone = zone_of(state);
    let as_date = match (value.as_str(), args.as_slice()) {
        (Some(text), [pattern]) if pattern.as_str().is_some() => {
            parse_in(text, zone).zip(pattern.as_str())
        }
        _ => None,
    };
    let Some((t, pattern)) = as_date else {
        if let Some(text) = value.as_str() {
            printf_widths_bounded(text)?;
        }
        return minijinja::filters::format(state, &value, args);
    };
    let items = strftime_items(pattern)?;
    let mut out = String::new();
    write!(out, "{}", t.format_with_items(items.into_iter()))
        .map_err(|_| invalid(format!("format: cannot write the date with {pattern:?}")))?;
    Ok(Value::from(out))
}

/// The widest field a printf-style `format` may pad to. minijinja builds
/// the padding before anything can look at its size, so `"%9999999999s"`
/// is refused here instead.
const MAX_PRINTF_WIDTH: u64 = 10_000;

/// Refuses printf conversions in `spec` whose width or precision is larger
/// than [`MAX_PRINTF_WIDTH`] or taken from an argument (`*`).
fn printf_widths_bounded(spec: &str) -> Result<(), Error> {
    let bytes = spec.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        i += 1;
        while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b' ' | b'#' | b'0') {
            i += 1;
        }
        for part in 0..2 {
            if part == 1 {
                if bytes.get(i) != Some(&b'.') {
                    break;
                }
                i += 1;
            }
            if bytes.get(i) == Some(&b'*') {
                return Err(invalid(
                    "format: a width taken from an argument (`*`) is not offered".into(),
                ));
            }
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &spec[start..i];
            if digits.len() > 5 || digits.parse::<u64>().is_ok_and(|n| n > MAX_PRINTF_WIDTH) {
                return Err(invalid(format!(
                    "format: a width or precision over {MAX_PRINTF_WIDTH} is not offered"
                )));
            }
        }
        i += 1;
    }
    Ok(())
}

/// `date` reads a text as a date (`YYYY-MM-DD`, a time, RFC 3339);
/// `date('%d.%m.%Y')` reads it with a strftime pattern. Either way the
/// result is a time in the template's zone for the other filters. A date
/// that does not exist (February 30) is an error, never a guess.
fn date(state: &State, value: Value, pattern: Option<&str>) -> Result<String, Error> {
    let zone = zone_of(state);
    let Some(pattern) = pattern else {
        return input(state, "date", &value).map(show);
    };
    let text = value
        .as_str()
        .ok_or_else(|| invalid(format!("date takes a text to read; got {value}")))?;
    strftime_items(pattern)?;
    let wall = NaiveDateTime::parse_from_str(text, pattern)
        .or_else(|_| NaiveDate::parse_from_str(text, pattern).map(|d| d.and_time(NaiveTime::MIN)));
    let wall = wall.map_err(|e| {
        invalid(format!(
            "date: {text:?} does not match {pattern:?} as an existing date ({e})"
        ))
    })?;
    zone.resolve(wall)
        .map(show)
        .ok_or_else(|| invalid("date: the date is out of range".to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn render(template: &str, at: &str, zone: &str) -> Result<String, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        register(&mut env);
        env.render_str(
            template,
            minijinja::context! { at => at, __hf_zone => zone },
        )
        .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn months_clamp_to_the_end_of_the_month() {
        let r = |t| render(t, "2024-01-31T04:00:00+00:00", "UTC").unwrap();
        assert_eq!(r("{{ at | add(months=1) }}"), "2024-02-29T04:00:00+00:00");
        assert_eq!(r("{{ at | add(months=-1) | format('%Y-%m') }}"), "2023-12");
        assert_eq!(r("{{ '%-5s|%05.1f' | format('ab', 2.25) }}"), "ab   |002.2");
        for wide in [
            "{{ '%99999999999s' | format('x') }}",
            "{{ '%.20000f' | format(1.5) }}",
            "{{ '%*s' | format(9, 'x') }}",
        ] {
            let refused = render(wide, "2024-01-31T04:00:00+00:00", "UTC").unwrap_err();
            assert!(refused.contains("format: a width"), "{wide}: {refused}");
        }
        assert_eq!(
            r("{{ at | add(years=1, months=1) | format('%F') }}"),
            "2025-02-28"
        );
        assert_eq!(r("{{ at | add(days=-31) | format('%F') }}"), "2023-12-31");
        assert_eq!(
            r("{{ at | add(weeks=1, hours=-4) }}"),
            "2024-02-07T00:00:00+00:00"
        );
    }

    #[test]
    fn starts_and_ends_of_units() {
        let r = |t| render(t, "2026-12-02T15:30:10+01:00", "Europe/Berlin").unwrap();
        assert_eq!(r("{{ at | start_of('day') }}"), "2026-12-02T00:00:00+01:00");
        assert_eq!(r("{{ at | end_of('day') }}"), "2026-12-02T23:59:59+01:00");
        // 2026-12-02 is a Wednesday.
        assert_eq!(
            r("{{ at | start_of('week') }}"),
            "2026-11-30T00:00:00+01:00"
        );
        assert_eq!(r("{{ at | end_of('week') }}"), "2026-12-06T23:59:59+01:00");
        assert_eq!(
            r("{{ at | start_of('month') }}"),
            "2026-12-01T00:00:00+01:00"
        );
        assert_eq!(r("{{ at | end_of('month') }}"), "2026-12-31T23:59:59+01:00");
        assert_eq!(
            r("{{ at | start_of('month') | add(months=-1) | end_of('month') | format('%F') }}"),
            "2026-11-30"
        );
        assert!(render("{{ at | start_of('fortnight') }}", "2026-12-02", "UTC").is_err());
    }

    #[test]
    fn arithmetic_keeps_the_wall_clock_across_daylight_saving() {
        // Berlin leaves summer time on 2026-10-25.
        let r = render(
            "{{ at | add(days=1) }}",
            "2026-10-24T04:00:00+02:00",
            "Europe/Berlin",
        );
        assert_eq!(r.unwrap(), "2026-10-25T04:00:00+01:00");
        // An instant in another offset is shown in the template's zone.
        let r = render(
            "{{ at | add(days=0) }}",
            "2026-12-01T03:00:00Z",
            "Europe/Berlin",
        );
        assert_eq!(r.unwrap(), "2026-12-01T04:00:00+01:00");
    }

    #[test]
    fn dates_are_parsed_and_impossible_ones_refused() {
        let r = |t, at| render(t, at, "UTC");
        assert_eq!(
            r("{{ at | date }}", "2024-02-29").unwrap(),
            "2024-02-29T00:00:00+00:00"
        );
        assert_eq!(
            r(
                "{{ at | date('%d.%m.%Y') | format('%Y-%m-%d') }}",
                "31.12.2025"
            )
            .unwrap(),
            "2025-12-31"
        );
        assert!(
            r("{{ at | date }}", "2025-02-29")
                .unwrap_err()
                .contains("not a date")
        );
        assert!(r("{{ at | date('%d.%m.%Y') }}", "30.02.2025").is_err());
        assert!(r("{{ at | add(days=1) }}", "yesterday").is_err());
        assert!(
            r("{{ at | format('%Q') }}", "2025-01-01")
                .unwrap_err()
                .contains("strftime")
        );
        assert!(r("{{ at | add(fortnights=1) }}", "2025-01-01").is_err());
        // Jinja's printf-style format still works on other values.
        assert_eq!(r("{{ '%s-%s' | format(1, 2) }}", "x").unwrap(), "1-2");
    }

    /// Far-off dates are errors or values, never a panic in the daemon.
    #[test]
    fn extreme_arithmetic_never_panics() {
        for template in [
            "{{ at | add(years=200000) | start_of('week') | end_of('hour') }}",
            "{{ at | add(years=-262000) | start_of('week') }}",
            "{{ at | add(days=9223372036854775807) }}",
            "{{ at | add(days=-9223372036854775807, months=-9223372036854775807) }}",
            "{{ at | add(hours=9223372036854775807, minutes=9223372036854775807) }}",
            "{{ at | add(years=9223372036854775807) }}",
            "{{ at | add(years=7000) | end_of('year') | format('%Y') }}",
        ] {
            let _ = render(template, "2000-01-01T00:00:00Z", "Europe/Berlin");
            let _ = render(template, "+262143-12-31T23:59:59Z", "UTC");
        }
    }

    #[test]
    fn typed_times_are_read_in_the_zone() {
        let zone = DateZone::parse("Europe/Berlin").unwrap();
        let d = BusinessDate::parse("2026-12-01", zone).unwrap();
        assert_eq!(d.rfc3339(), "2026-12-01T00:00:00+01:00");
        let d = BusinessDate::parse("2026-07-01 04:30", zone).unwrap();
        assert_eq!(d.rfc3339(), "2026-07-01T04:30:00+02:00");
        let d = BusinessDate::parse("2026-12-01T03:00:00Z", zone).unwrap();
        assert_eq!(d.rfc3339(), "2026-12-01T04:00:00+01:00");
        assert!(BusinessDate::parse("2026-02-30", zone).is_err());
        assert!(BusinessDate::parse("soon", zone).is_err());
    }
}
