//! The `since` parameter of `job.list` and `stats.get`: a duration back from
//! now (`7d`, `12h`, `30m`), a date (`2026-12-01`, its midnight in the
//! daemon's zone) or an RFC 3339 instant, read as milliseconds since the
//! epoch.

use chrono::{Local, LocalResult, NaiveDate, TimeZone};
use holdfast_api::{ErrorCode, FieldError};
use jsonrpsee::types::ErrorObjectOwned;

/// What the field error says a `since` may be.
pub const SINCE_FORMS: &str =
    "give a duration back from now (7d, 12h, 30m), a date (2026-12-01) or an RFC 3339 instant";

/// `text` as ms since the epoch, counting a duration back from `now_ms`.
pub fn parse(text: &str, now_ms: i64) -> Option<i64> {
    if let Ok(back) = humantime::parse_duration(text) {
        return Some(now_ms.saturating_sub(i64::try_from(back.as_millis()).ok()?));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0)?;
        // A midnight skipped by a zone change: the first instant after it.
        return match Local.from_local_datetime(&midnight) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.timestamp_millis()),
            LocalResult::None => Local
                .from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                .earliest()
                .map(|t| t.timestamp_millis()),
        };
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// `parse`, or INVALID_PARAMETERS on the field `since`.
pub fn parse_param(text: &str, now_ms: i64) -> Result<i64, ErrorObjectOwned> {
    parse(text, now_ms).ok_or_else(|| {
        ErrorCode::InvalidParameters.error_with(
            format!("cannot read since {text:?}"),
            vec![FieldError {
                field: "since".into(),
                message: SINCE_FORMS.into(),
            }],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_duration_a_date_or_an_instant() {
        assert_eq!(parse("7d", 10 * 86_400_000), Some(3 * 86_400_000));
        assert_eq!(parse("1970-01-01T00:00:01Z", 0), Some(1000));
        let midnight = Local
            .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
            .earliest()
            .expect("a midnight")
            .timestamp_millis();
        assert_eq!(parse("2026-12-01", 0), Some(midnight));
        assert_eq!(parse("last week", 0), None);
        assert_eq!(parse("2026-13-01", 0), None);
    }
}
