//! Job facts as short text for people, shared by hfctl's tables and the
//! HTML report (which the daemon also renders for mail): durations, local
//! times, percentages, JSON values and an activity's progress.

use std::time::Duration;

use chrono::{DateTime, Local, Utc};
use holdfast_api::{ActivityRun, ActivityState};

/// `850ms`, `12.3s`, `4m05s`, `2h03m`, `3d04h`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    // Below this, one decimal still rounds to less than a minute.
    if ms < 59_950 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let secs = (ms + 500) / 1000;
    if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600)
    }
}

/// Seconds as sent on the wire (`timeout_seconds`) in the same format.
pub fn seconds(secs: f64) -> String {
    if secs.is_finite() && secs >= 0.0 {
        duration(Duration::from_secs_f64(secs))
    } else {
        format!("{secs}s")
    }
}

pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// An RFC 3339 time from the wire, in local time: `2026-11-23 14:02:11`.
/// Text that does not parse is shown as it came.
pub fn time(text: &str) -> String {
    match parse_time(text) {
        Some(t) => t
            .with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        None => text.to_string(),
    }
}

/// From `start` to `end`, or to now while there is no end.
pub fn elapsed(start: Option<&str>, end: Option<&str>) -> Option<Duration> {
    let start = parse_time(start?)?;
    let end = match end {
        Some(end) => parse_time(end)?,
        None => Utc::now(),
    };
    (end - start).to_std().ok()
}

/// `elapsed` formatted, or `-`.
pub fn elapsed_text(start: Option<&str>, end: Option<&str>) -> String {
    elapsed(start, end).map_or_else(|| "-".to_string(), duration)
}

/// `65%`, without decimals.
pub fn percent(value: f64) -> String {
    format!("{:.0}%", value.clamp(0.0, 100.0))
}

/// A JSON value for people: strings without quotes, the rest as JSON.
pub fn json_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The first 12 characters of a content hash.
pub fn short_version(version: &str) -> String {
    version.chars().take(12).collect()
}

/// An activity's last progress (`40% rows 400/1000`), or where it stopped
/// when it failed; empty once it succeeded.
pub fn progress(activity: &ActivityRun) -> String {
    let last = match (activity.progress, activity.progress_text.as_deref()) {
        (Some(p), Some(text)) if !text.is_empty() => format!("{} {text}", percent(p)),
        (Some(p), _) => percent(p),
        (None, Some(text)) => text.to_string(),
        (None, None) => String::new(),
    };
    match activity.state {
        _ if last.is_empty() => last,
        ActivityState::Succeeded | ActivityState::Skipped => String::new(),
        ActivityState::Failed | ActivityState::Cancelled => format!("stopped at {last}"),
        ActivityState::Pending | ActivityState::Running | ActivityState::RetryWait => last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(duration(ms(0)), "0ms");
        assert_eq!(duration(ms(850)), "850ms");
        assert_eq!(duration(ms(999)), "999ms");
        assert_eq!(duration(ms(1000)), "1.0s");
        assert_eq!(duration(ms(12_340)), "12.3s");
        assert_eq!(duration(ms(59_940)), "59.9s");
        assert_eq!(duration(ms(59_960)), "1m00s");
        assert_eq!(duration(ms(245_000)), "4m05s");
        assert_eq!(duration(ms(3_599_400)), "59m59s");
        assert_eq!(
            duration(Duration::from_secs(2 * 3600 + 3 * 60 + 59)),
            "2h03m"
        );
        assert_eq!(
            duration(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d04h"
        );
        assert_eq!(seconds(1800.0), "30m00s");
    }

    #[test]
    fn times_keep_unparsable_text() {
        assert_eq!(time("yesterday"), "yesterday");
        assert_eq!(
            time("2026-11-23T14:02:11Z").len(),
            "2026-11-23 14:02:11".len()
        );
        assert_eq!(
            elapsed(Some("2026-11-23T14:02:11Z"), Some("2026-11-23T14:06:16.5Z")),
            Some(Duration::from_millis(245_500))
        );
        assert_eq!(elapsed(None, None), None);
    }
}
