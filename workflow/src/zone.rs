//! Named time zones (`Europe/Berlin`) from the host's tz database, as a
//! `chrono::TimeZone`, so schedules (croner) and business dates compute in
//! them with the same chrono code as in the host's own zone.
//!
//! The zones are read at run time from the system's zoneinfo files (the
//! `tzdata` package; `TZDIR` moves them) through jiff, rather than compiled
//! into the binaries: an update of the rules reaches HoldFast with the
//! host's `tzdata` update, and neither binary carries tens of thousands of
//! relocated pointers of zone tables that the loader writes at each start
//! (see ARCHITECTURE.md).
//!
//! A zone is looked up once per name and kept for the life of the process
//! (there are a few hundred names at most), which makes [`NamedZone`] a
//! `Copy` handle like the one it replaced.

use std::fmt;
use std::sync::{Mutex, PoisonError};

use chrono::{Datelike, Timelike};
use chrono::{FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone};
use jiff::tz::AmbiguousOffset;

/// One zone as looked up.
struct Entry {
    /// The name as the database spells it.
    name: String,
    tz: jiff::tz::TimeZone,
}

/// Every zone looked up so far, each once.
static ZONES: Mutex<Vec<&'static Entry>> = Mutex::new(Vec::new());

/// Why a name is not a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneError {
    /// No zone of that name; `Some` names the zone the name matches but for
    /// letter case.
    Unknown(Option<String>),
    /// The host has no tz database at all.
    NoDatabase,
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZoneError::Unknown(Some(spelled)) => write!(f, "did you mean {spelled:?}?"),
            ZoneError::Unknown(None) => f.write_str("no such zone in the tz database"),
            ZoneError::NoDatabase => f.write_str(
                "this host has no tz database (install the tzdata package, or set TZDIR)",
            ),
        }
    }
}

/// A named zone of the tz database.
#[derive(Clone, Copy)]
pub struct NamedZone(&'static Entry);

impl NamedZone {
    /// The zone `name` names, spelled exactly as the database spells it.
    pub fn get(name: &str) -> Result<NamedZone, ZoneError> {
        let mut zones = ZONES.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = zones.iter().find(|e| e.name == name) {
            return Ok(NamedZone(entry));
        }
        let tz = jiff::tz::TimeZone::get(name).map_err(|_| {
            if jiff::tz::db().is_definitively_empty() {
                ZoneError::NoDatabase
            } else {
                ZoneError::Unknown(None)
            }
        })?;
        // The database finds names whatever their case; a file names a
        // zone as the database spells it, so schedules read the same
        // everywhere.
        match tz.iana_name() {
            Some(spelled) if spelled == name => {}
            Some(spelled) => return Err(ZoneError::Unknown(Some(spelled.to_string()))),
            None => return Err(ZoneError::Unknown(None)),
        }
        let entry: &'static Entry = Box::leak(Box::new(Entry {
            name: name.to_string(),
            tz,
        }));
        zones.push(entry);
        Ok(NamedZone(entry))
    }

    /// The IANA name.
    pub fn name(&self) -> &'static str {
        &self.0.name
    }

    fn offset(&self, offset: jiff::tz::Offset) -> NamedOffset {
        NamedOffset {
            zone: *self,
            // Offsets in the database stay within a day, as chrono's must.
            fixed: FixedOffset::east_opt(offset.seconds())
                .unwrap_or(FixedOffset::east_opt(0).expect("zero is an offset")),
        }
    }
}

impl PartialEq for NamedZone {
    fn eq(&self, other: &NamedZone) -> bool {
        // Each name is looked up once, so one name is one entry.
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for NamedZone {}

impl fmt::Debug for NamedZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A zone's offset at one instant; chrono needs the zone back from it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NamedOffset {
    zone: NamedZone,
    fixed: FixedOffset,
}

impl Offset for NamedOffset {
    fn fix(&self) -> FixedOffset {
        self.fixed
    }
}

impl fmt::Debug for NamedOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.fixed, self.zone)
    }
}

impl fmt::Display for NamedOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.fixed, f)
    }
}

impl TimeZone for NamedZone {
    type Offset = NamedOffset;

    fn from_offset(offset: &NamedOffset) -> NamedZone {
        offset.zone
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> LocalResult<NamedOffset> {
        self.offset_from_local_datetime(&local.and_time(NaiveTime::MIN))
    }

    /// A wall clock time a spring-forward gap skips has no offset (`None`);
    /// one a fall-back repeats has two, the earlier instant first.
    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> LocalResult<NamedOffset> {
        let Some(civil) = civil(local) else {
            return LocalResult::None;
        };
        match self.0.tz.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => LocalResult::Single(self.offset(offset)),
            AmbiguousOffset::Gap { .. } => LocalResult::None,
            AmbiguousOffset::Fold { before, after } => {
                LocalResult::Ambiguous(self.offset(before), self.offset(after))
            }
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> NamedOffset {
        self.offset_from_utc_datetime(&utc.and_time(NaiveTime::MIN))
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> NamedOffset {
        // Beyond jiff's range (years -9999 to 9999) the offset at its edge.
        let second = utc.and_utc().timestamp().clamp(
            jiff::Timestamp::MIN.as_second(),
            jiff::Timestamp::MAX.as_second(),
        );
        let instant = jiff::Timestamp::from_second(second).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        self.offset(self.0.tz.to_offset(instant))
    }
}

/// `local` as jiff's civil time; `None` outside its years.
fn civil(local: &NaiveDateTime) -> Option<jiff::civil::DateTime> {
    jiff::civil::DateTime::new(
        i16::try_from(local.year()).ok()?,
        local.month() as i8,
        local.day() as i8,
        local.hour() as i8,
        local.minute() as i8,
        local.second() as i8,
        // A leap second's nanoseconds go past a second in chrono.
        local.nanosecond().min(999_999_999) as i32,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn berlin() -> NamedZone {
        NamedZone::get("Europe/Berlin").expect("the host has tzdata")
    }

    #[test]
    fn offsets_follow_daylight_saving_time() {
        let winter = Utc
            .with_ymd_and_hms(2026, 1, 15, 12, 0, 0)
            .single()
            .expect("a valid time");
        let summer = Utc
            .with_ymd_and_hms(2026, 7, 15, 12, 0, 0)
            .single()
            .expect("a valid time");
        assert_eq!(
            winter.with_timezone(&berlin()).to_rfc3339(),
            "2026-01-15T13:00:00+01:00"
        );
        assert_eq!(
            summer.with_timezone(&berlin()).to_rfc3339(),
            "2026-07-15T14:00:00+02:00"
        );
    }

    #[test]
    fn a_skipped_time_has_no_offset_and_a_repeated_one_has_two() {
        let at = |h, m| {
            NaiveDate::from_ymd_opt(2026, 3, 29)
                .expect("a valid time")
                .and_hms_opt(h, m, 0)
                .expect("a valid time")
        };
        assert_eq!(berlin().from_local_datetime(&at(2, 30)), LocalResult::None);
        let fold = NaiveDate::from_ymd_opt(2026, 10, 25)
            .expect("a valid time")
            .and_hms_opt(2, 30, 0)
            .expect("a valid time");
        match berlin().from_local_datetime(&fold) {
            LocalResult::Ambiguous(first, second) => {
                assert_eq!(first.to_rfc3339(), "2026-10-25T02:30:00+02:00");
                assert_eq!(second.to_rfc3339(), "2026-10-25T02:30:00+01:00");
                assert!(first < second);
            }
            other => panic!("a repeated time: {other:?}"),
        }
        assert!(matches!(
            berlin().from_local_datetime(&at(12, 0)),
            LocalResult::Single(_)
        ));
    }

    #[test]
    fn names_are_exact_and_looked_up_once() {
        assert_eq!(berlin(), berlin());
        assert_eq!(berlin().name(), "Europe/Berlin");
        assert_ne!(berlin(), NamedZone::get("UTC").expect("UTC"));
        assert_eq!(
            NamedZone::get("europe/berlin"),
            Err(ZoneError::Unknown(Some("Europe/Berlin".into())))
        );
        assert_eq!(
            NamedZone::get("Mars/Olympus"),
            Err(ZoneError::Unknown(None))
        );
    }
}
