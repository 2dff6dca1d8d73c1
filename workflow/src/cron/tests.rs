//! Tests of cron rules: the syntax, time zones and daylight saving
//! transitions, and which fires are due after downtime. Every instant is
//! passed in: no result depends on the current time.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use chrono::SecondsFormat;

use super::*;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn rule(expression: &str, zone: &str) -> CronRule {
    CronRule::parse(expression, Some(zone)).unwrap()
}

fn show(rule: &CronRule, fires: &[DateTime<Utc>]) -> Vec<String> {
    fires
        .iter()
        .map(|f| rule.in_zone(*f).to_rfc3339_opts(SecondsFormat::Secs, false))
        .collect()
}

/// The first `count` fires after `from`, by repeated `next_after`, in
/// the rule's zone.
fn next(expression: &str, zone: &str, from: &str, count: usize) -> Vec<String> {
    let rule = rule(expression, zone);
    let mut fires = Vec::new();
    let mut at = utc(from);
    for _ in 0..count {
        at = rule.next_after(at).unwrap();
        fires.push(at);
    }
    // Walking back from the last fire must give the same fires.
    assert_eq!(
        rule.fires_between(utc(from), at, count + 1),
        fires,
        "{expression} in {zone}"
    );
    show(&rule, &fires)
}

fn error(expression: &str) -> String {
    CronRule::parse(expression, Some("UTC")).unwrap_err()
}

#[test]
fn five_and_six_fields() {
    assert_eq!(
        next("0 4 * * *", "UTC", "2026-05-01T04:00:00Z", 2),
        ["2026-05-02T04:00:00+00:00", "2026-05-03T04:00:00+00:00"]
    );
    // A leading seconds field.
    assert_eq!(
        next("*/20 0 4 * * *", "UTC", "2026-05-01T00:00:00Z", 4),
        [
            "2026-05-01T04:00:00+00:00",
            "2026-05-01T04:00:20+00:00",
            "2026-05-01T04:00:40+00:00",
            "2026-05-02T04:00:00+00:00"
        ]
    );
    assert_eq!(
        next("30 15 10 * * *", "UTC", "2026-05-01T00:00:00Z", 1),
        ["2026-05-01T10:15:30+00:00"]
    );
}

#[test]
fn names_ranges_steps_and_lists() {
    // 2026-05-01 is a Friday.
    assert_eq!(
        next("0 9 * * mon-wed", "UTC", "2026-05-01T00:00:00Z", 4),
        [
            "2026-05-04T09:00:00+00:00",
            "2026-05-05T09:00:00+00:00",
            "2026-05-06T09:00:00+00:00",
            "2026-05-11T09:00:00+00:00"
        ]
    );
    assert_eq!(
        next("0 0 1 JAN,jul *", "UTC", "2026-05-01T00:00:00Z", 2),
        ["2026-07-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"]
    );
    assert_eq!(
        next("10-50/20 8 * * *", "UTC", "2026-05-01T00:00:00Z", 4),
        [
            "2026-05-01T08:10:00+00:00",
            "2026-05-01T08:30:00+00:00",
            "2026-05-01T08:50:00+00:00",
            "2026-05-02T08:10:00+00:00"
        ]
    );
    assert_eq!(
        next("*/15 * * * *", "UTC", "2026-05-01T00:07:00Z", 3),
        [
            "2026-05-01T00:15:00+00:00",
            "2026-05-01T00:30:00+00:00",
            "2026-05-01T00:45:00+00:00"
        ]
    );
    assert_eq!(
        next("0 6,18 1-2 * *", "UTC", "2026-05-01T12:00:00Z", 4),
        [
            "2026-05-01T18:00:00+00:00",
            "2026-05-02T06:00:00+00:00",
            "2026-05-02T18:00:00+00:00",
            "2026-06-01T06:00:00+00:00"
        ]
    );
    // 7 is Sunday, like 0; `?` is "any".
    assert_eq!(
        next("0 12 ? * 7", "UTC", "2026-05-01T00:00:00Z", 1),
        ["2026-05-03T12:00:00+00:00"]
    );
}

#[test]
fn last_weekday_and_nth() {
    // The last day of the month, leap February included.
    assert_eq!(
        next("0 0 L * *", "UTC", "2028-01-31T00:00:00Z", 3),
        [
            "2028-02-29T00:00:00+00:00",
            "2028-03-31T00:00:00+00:00",
            "2028-04-30T00:00:00+00:00"
        ]
    );
    // The weekday nearest the 15th: 2026-08-15 is a Saturday, 2026-11-15
    // a Sunday.
    assert_eq!(
        next("0 0 15W 8,11 *", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-08-14T00:00:00+00:00", "2026-11-16T00:00:00+00:00"]
    );
    // The last weekday of the month: 2026-05-31 is a Sunday.
    assert_eq!(
        next("0 0 LW * *", "UTC", "2026-05-01T00:00:00Z", 1),
        ["2026-05-29T00:00:00+00:00"]
    );
    // The last Friday, and the second Monday.
    assert_eq!(
        next("0 0 * * 5L", "UTC", "2026-05-01T00:00:00Z", 2),
        ["2026-05-29T00:00:00+00:00", "2026-06-26T00:00:00+00:00"]
    );
    assert_eq!(
        next("0 0 * * MON#2", "UTC", "2026-05-01T00:00:00Z", 2),
        ["2026-05-11T00:00:00+00:00", "2026-06-08T00:00:00+00:00"]
    );
}

#[test]
fn shortcuts() {
    let from = "2026-05-06T10:30:00Z"; // a Wednesday
    let first = |expression: &str| next(expression, "UTC", from, 1).remove(0);
    assert_eq!(first("@hourly"), "2026-05-06T11:00:00+00:00");
    assert_eq!(first("@daily"), "2026-05-07T00:00:00+00:00");
    assert_eq!(first("@weekly"), "2026-05-10T00:00:00+00:00");
    assert_eq!(first("@monthly"), "2026-06-01T00:00:00+00:00");
    assert_eq!(first("@yearly"), "2027-01-01T00:00:00+00:00");
    assert_eq!(first("@annually"), "2027-01-01T00:00:00+00:00");
    assert_eq!(first("@DAILY"), "2026-05-07T00:00:00+00:00");
}

#[test]
fn day_of_month_or_day_of_week() {
    // Both restricted: the 13th, or any Friday (2026-05-01 is one).
    assert_eq!(
        next("0 0 13 * FRI", "UTC", "2026-04-30T00:00:00Z", 4),
        [
            "2026-05-01T00:00:00+00:00",
            "2026-05-08T00:00:00+00:00",
            "2026-05-13T00:00:00+00:00",
            "2026-05-15T00:00:00+00:00"
        ]
    );
    // Only one restricted: that one decides.
    assert_eq!(
        next("0 0 13 * *", "UTC", "2026-04-30T00:00:00Z", 1),
        ["2026-05-13T00:00:00+00:00"]
    );
}

#[test]
fn bad_expressions_name_the_problem() {
    assert_eq!(
        error("  "),
        "the cron expression is empty; write 5 fields (minute hour day-of-month month \
         day-of-week) like \"0 4 * * *\""
    );
    assert_eq!(
        error("0 4 * *"),
        "cron expression \"0 4 * *\" has 4 fields; write 5 (minute hour day-of-month month \
         day-of-week), or 6 with seconds first"
    );
    // A year field is not part of the syntax.
    assert!(error("0 0 4 * * * 2027").contains("has 7 fields"));
    assert_eq!(
        error("60 4 * * *"),
        "invalid minute field \"60\" in cron expression \"60 4 * * *\": number out of \
         bounds; use 0-59"
    );
    assert_eq!(
        error("0 24 * * *"),
        "invalid hour field \"24\" in cron expression \"0 24 * * *\": number out of bounds; \
         use 0-23"
    );
    assert!(error("0 0 32 * *").starts_with("invalid day-of-month field \"32\""));
    assert!(error("0 0 * 13 *").starts_with("invalid month field \"13\""));
    assert!(error("0 0 * * 8").starts_with("invalid day-of-week field \"8\""));
    assert!(error("0 0 * * 1#6").starts_with("invalid day-of-week field \"1#6\""));
    assert!(error("61 0 0 * * *").starts_with("invalid seconds field \"61\""));
    assert!(error("*/0 * * * *").contains("step cannot be zero"));
    assert!(error("5-1 * * * *").starts_with("invalid minute field \"5-1\""));
    // Names only where they belong: croner alone would read MON as 1 in
    // the month field.
    assert_eq!(
        error("0 0 * MON *"),
        "invalid month field \"MON\": \"MON\" is not allowed there; use 1-12 or JAN-DEC"
    );
    assert_eq!(
        error("0 0 * * JAN"),
        "invalid day-of-week field \"JAN\": \"JAN\" is not allowed there; use 0-7 or \
         SUN-SAT, L or #"
    );
    assert!(error("0 noon * * *").starts_with("invalid hour field \"noon\""));
    assert_eq!(
        error("@fortnightly"),
        "unknown cron shortcut \"@fortnightly\"; use @yearly, @annually, @monthly, \
         @weekly, @daily, @hourly"
    );
    assert!(error("@daily 5").starts_with("unknown cron shortcut"));
}

#[test]
fn time_zones() {
    let from = "2026-05-01T00:00:00Z";
    assert_eq!(
        next("0 4 * * *", "America/Bogota", from, 1),
        ["2026-05-01T04:00:00-05:00"]
    );
    assert_eq!(
        show(
            &rule("0 4 * * *", "UTC"),
            &[rule("0 4 * * *", "America/Bogota")
                .next_after(utc(from))
                .unwrap()]
        ),
        ["2026-05-01T09:00:00+00:00"]
    );
    assert_eq!(
        next("0 4 * * *", "Asia/Kolkata", from, 1),
        ["2026-05-02T04:00:00+05:30"]
    );
    assert_eq!(
        rule("0 4 * * *", "Asia/Kolkata").zone_name(),
        "Asia/Kolkata"
    );
    assert_eq!(rule("0 4 * * *", "UTC").zone_name(), "UTC");
    let local = CronRule::parse("0 4 * * *", None).unwrap();
    assert_eq!(local.zone_name(), "local");
    assert_eq!(local.expression(), "0 4 * * *");
    assert_eq!(
        CronRule::parse("0 4 * * *", Some("Mars/Olympus")).unwrap_err(),
        "unknown time zone \"Mars/Olympus\"; use an IANA name like \"Europe/Berlin\" or \
         \"UTC\""
    );
    assert_eq!(
        CronRule::parse("0 4 * * *", Some("europe/berlin")).unwrap_err(),
        "unknown time zone \"europe/berlin\"; did you mean \"Europe/Berlin\"?"
    );
}

/// 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST, and 02:30 does
/// not exist.
#[test]
fn berlin_spring_forward_runs_a_skipped_time_once_after_the_gap() {
    assert_eq!(
        next("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00"
        ]
    );
    // From inside the day, past the moved fire, it is not repeated.
    let rule = rule("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        rule.next_after(utc("2026-03-29T01:00:00Z")),
        Some(utc("2026-03-30T00:30:00Z"))
    );
    for until in ["2026-03-29T01:00:00Z", "2026-03-29T06:00:00Z"] {
        assert_eq!(
            rule.fires_between(utc("2026-03-28T12:00:00Z"), utc(until), 10),
            [utc("2026-03-29T01:00:00Z")],
            "until {until}"
        );
    }
    assert!(
        rule.fires_between(utc("2026-03-28T12:00:00Z"), utc("2026-03-29T00:59:59Z"), 10)
            .is_empty()
    );
    // Times on either side of the gap are untouched.
    assert_eq!(
        next("30 1,3 * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", 2),
        ["2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00+02:00"]
    );
}

/// 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET, and 02:00-02:59
/// happens twice.
#[test]
fn berlin_fall_back_runs_a_repeated_time_once() {
    assert_eq!(
        next("30 2 * * *", "Europe/Berlin", "2026-10-23T12:00:00Z", 3),
        [
            "2026-10-24T02:30:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-26T02:30:00+01:00"
        ]
    );
    // Asked from inside the repeated hour's second pass, or from
    // between the two 02:30s, the second 02:30 is not a fire.
    let rule = rule("30 2 * * *", "Europe/Berlin");
    for after in ["2026-10-25T00:45:00Z", "2026-10-25T01:10:00Z"] {
        assert_eq!(
            rule.next_after(utc(after)),
            Some(utc("2026-10-26T01:30:00Z")),
            "after {after}"
        );
    }
    // Walking back from anywhere in or after the repeat finds the one fire.
    for until in [
        "2026-10-25T00:30:00Z",
        "2026-10-25T01:10:00Z",
        "2026-10-25T01:30:00Z",
        "2026-10-25T02:00:00Z",
    ] {
        assert_eq!(
            rule.fires_between(utc("2026-10-24T12:00:00Z"), utc(until), 10),
            [utc("2026-10-25T00:30:00Z")],
            "until {until}"
        );
    }
}

/// 2026-03-08 in New York: 02:00 EST becomes 03:00 EDT.
#[test]
fn new_york_spring_forward_runs_a_skipped_time_once_after_the_gap() {
    assert_eq!(
        next("30 2 * * *", "America/New_York", "2026-03-06T12:00:00Z", 3),
        [
            "2026-03-07T02:30:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:30:00-04:00"
        ]
    );
}

/// 2026-11-01 in New York: 02:00 EDT becomes 01:00 EST, so 01:00-01:59
/// happens twice and 02:30 once.
#[test]
fn new_york_fall_back_runs_a_repeated_time_once() {
    assert_eq!(
        next("30 2 * * *", "America/New_York", "2026-10-30T12:00:00Z", 3),
        [
            "2026-10-31T02:30:00-04:00",
            "2026-11-01T02:30:00-05:00",
            "2026-11-02T02:30:00-05:00"
        ]
    );
    // The repeated hour itself: 01:30 runs once, at its first pass.
    assert_eq!(
        next("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
}

/// Times of day named by value behave like single daily times, as in
/// classic cron, not like croner's intervals.
#[test]
fn listed_times_of_day_are_fixed_times_across_transitions() {
    assert_eq!(
        next("30 2,14 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 3),
        [
            "2026-03-28T14:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T14:30:00+02:00"
        ]
    );
    assert_eq!(
        next("30 2,14 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 3),
        [
            "2026-10-24T14:30:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T14:30:00+01:00"
        ]
    );
    // Several times in one gap, and the time that ends it, run once.
    assert_eq!(
        next("0,30 2-3 * * *", "Europe/Berlin", "2026-03-28T23:00:00Z", 3),
        [
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:30:00+02:00",
            "2026-03-30T02:00:00+02:00"
        ]
    );
    assert_eq!(
        next("0 1-3 * * *", "America/New_York", "2026-11-01T04:00:00Z", 3),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T03:00:00-05:00"
        ]
    );
}

/// A wildcard or a step makes an interval: real elapsed time, so the
/// repeated half hour runs again and the skipped one does not.
#[test]
fn intervals_follow_elapsed_time_across_transitions() {
    assert_eq!(
        next("*/30 * * * *", "Europe/Berlin", "2026-10-25T00:00:00Z", 4),
        [
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-25T03:00:00+01:00"
        ]
    );
    assert_eq!(
        next("*/30 * * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", 3),
        [
            "2026-03-29T01:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:30:00+02:00"
        ]
    );
}

#[test]
fn next_after_is_strictly_after() {
    let rule = rule("0 4 * * *", "UTC");
    assert_eq!(
        rule.next_after(utc("2026-05-01T04:00:00Z")),
        Some(utc("2026-05-02T04:00:00Z"))
    );
    assert_eq!(
        rule.next_after(utc("2026-05-01T04:00:00.5Z")),
        Some(utc("2026-05-02T04:00:00Z"))
    );
    assert_eq!(
        rule.next_after(utc("2026-05-01T03:59:59.999Z")),
        Some(utc("2026-05-01T04:00:00Z"))
    );
}

#[test]
fn fires_between_is_half_open_oldest_first_and_bounded() {
    let rule = rule("0 4 * * *", "UTC");
    let fires = |after: &str, until: &str, limit| {
        show(&rule, &rule.fires_between(utc(after), utc(until), limit))
    };
    // (after, until]: a fire at `after` is excluded, one at `until` kept.
    assert_eq!(
        fires("2026-05-01T04:00:00Z", "2026-05-03T04:00:00Z", 10),
        ["2026-05-02T04:00:00+00:00", "2026-05-03T04:00:00+00:00"]
    );
    assert_eq!(
        fires("2026-05-01T04:00:00Z", "2026-05-03T04:00:00.5Z", 10),
        ["2026-05-02T04:00:00+00:00", "2026-05-03T04:00:00+00:00"]
    );
    // The newest `limit`, oldest first.
    assert_eq!(
        fires("2026-01-01T00:00:00Z", "2026-05-03T12:00:00Z", 2),
        ["2026-05-02T04:00:00+00:00", "2026-05-03T04:00:00+00:00"]
    );
    assert!(fires("2026-05-03T00:00:00Z", "2026-05-01T00:00:00Z", 10).is_empty());
    assert!(fires("2026-05-01T00:00:00Z", "2026-05-03T00:00:00Z", 0).is_empty());
    // Years of a per-second rule cost only `limit` steps.
    let every_second = self::rule("* * * * * *", "UTC");
    let started = Instant::now();
    let newest =
        every_second.fires_between(utc("2000-01-01T00:00:00Z"), utc("2026-05-03T12:00:00Z"), 3);
    assert_eq!(
        newest,
        [
            utc("2026-05-03T11:59:58Z"),
            utc("2026-05-03T11:59:59Z"),
            utc("2026-05-03T12:00:00Z")
        ]
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn an_impossible_rule_never_fires_and_costs_nothing_to_ask() {
    for expression in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 0 31 2 *"] {
        let rule = rule(expression, "Europe/Berlin");
        assert!(rule.never_fires(), "{expression}");
        let started = Instant::now();
        for _ in 0..1000 {
            assert_eq!(rule.next_after(utc("2026-05-01T00:00:00Z")), None);
            assert!(
                rule.fires_between(utc("2000-01-01T00:00:00Z"), utc("2026-05-01T00:00:00Z"), 10)
                    .is_empty()
            );
        }
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // A rare rule is not an impossible one.
    let leap_day = rule("0 0 29 2 *", "UTC");
    assert!(!leap_day.never_fires());
    assert_eq!(
        leap_day.next_after(utc("2026-05-01T00:00:00Z")),
        Some(utc("2028-02-29T00:00:00Z"))
    );
    // 2100 is not a leap year.
    assert_eq!(
        leap_day.next_after(utc("2096-03-01T00:00:00Z")),
        Some(utc("2104-02-29T00:00:00Z"))
    );
}

fn due(
    rule: &CronRule,
    last: &str,
    now: &str,
    catch_up: CatchUp,
    max_catch_up: usize,
) -> Vec<String> {
    show(
        rule,
        &due_fires(rule, utc(last), utc(now), catch_up, max_catch_up),
    )
}

#[test]
fn due_fires_after_downtime() {
    let rule = rule("0 4 * * *", "UTC");
    // Down from just after the 2026-05-07 fire until mid-morning of the
    // 10th: the 8th, 9th and 10th were missed.
    let (last, now) = ("2026-05-07T04:00:00Z", "2026-05-10T10:00:00Z");
    assert!(due(&rule, last, now, CatchUp::None, 10).is_empty());
    assert_eq!(
        due(&rule, last, now, CatchUp::Latest, 10),
        ["2026-05-10T04:00:00+00:00"]
    );
    assert_eq!(
        due(&rule, last, now, CatchUp::All, 10),
        [
            "2026-05-08T04:00:00+00:00",
            "2026-05-09T04:00:00+00:00",
            "2026-05-10T04:00:00+00:00"
        ]
    );
    // max_catch_up keeps the newest.
    assert_eq!(
        due(&rule, last, now, CatchUp::All, 2),
        ["2026-05-09T04:00:00+00:00", "2026-05-10T04:00:00+00:00"]
    );
    assert_eq!(
        due(&rule, last, now, CatchUp::All, 0),
        ["2026-05-10T04:00:00+00:00"]
    );
    // Nothing new since the last run.
    for catch_up in [CatchUp::None, CatchUp::Latest, CatchUp::All] {
        assert!(due(&rule, now, now, catch_up, 10).is_empty());
        assert!(due(&rule, "2026-05-10T04:00:00Z", now, catch_up, 10).is_empty());
    }
}

#[test]
fn due_fires_on_time() {
    let rule = rule("0 4 * * *", "UTC");
    let last = "2026-05-09T04:00:00Z";
    // A timer that wakes on time, or a little late, runs the fire
    // whatever the catch-up.
    for now in [
        "2026-05-10T04:00:00Z",
        "2026-05-10T04:00:30Z",
        "2026-05-10T04:01:00Z",
    ] {
        for catch_up in [CatchUp::None, CatchUp::Latest, CatchUp::All] {
            assert_eq!(
                due(&rule, last, now, catch_up, 10),
                ["2026-05-10T04:00:00+00:00"],
                "{now} {catch_up:?}"
            );
        }
    }
    // Past ON_TIME the fire is missed: `none` drops it.
    let late = "2026-05-10T04:01:01Z";
    assert!(due(&rule, last, late, CatchUp::None, 10).is_empty());
    assert_eq!(
        due(&rule, last, late, CatchUp::Latest, 10),
        ["2026-05-10T04:00:00+00:00"]
    );
    // `none` with several fires missed runs the newest if it is on
    // time, not the older ones.
    let minutely = self::rule("* * * * *", "UTC");
    assert_eq!(
        due(
            &minutely,
            "2026-05-10T03:00:00Z",
            "2026-05-10T04:00:20Z",
            CatchUp::None,
            10
        ),
        ["2026-05-10T04:00:00+00:00"]
    );
}

#[test]
fn due_fires_catch_up_a_gap_day_once() {
    let rule = rule("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        due(
            &rule,
            "2026-03-27T12:00:00Z",
            "2026-03-30T12:00:00Z",
            CatchUp::All,
            10
        ),
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00"
        ]
    );
}

#[test]
fn catch_up_and_overlap_words() {
    for catch_up in [CatchUp::None, CatchUp::Latest, CatchUp::All] {
        assert_eq!(CatchUp::parse(catch_up.as_str()), Ok(catch_up));
    }
    for overlap in [Overlap::Skip, Overlap::Queue, Overlap::Allow] {
        assert_eq!(Overlap::parse(overlap.as_str()), Ok(overlap));
    }
    assert_eq!(CatchUp::default(), CatchUp::Latest);
    assert_eq!(Overlap::default(), Overlap::Skip);
    assert_eq!(
        CatchUp::parse("Latest").unwrap_err(),
        "catch_up must be one of \"none\", \"latest\", \"all\"; got \"Latest\""
    );
    assert_eq!(
        Overlap::parse("replace").unwrap_err(),
        "overlap must be one of \"skip\", \"queue\", \"allow\"; got \"replace\""
    );
}
