//! Business hours: one weekly schedule in one IANA time zone, per team (`[teams.hours]`).
//!
//! Kept deliberately simple (open days, one opening and one closing time) because that is what
//! the support teams we serve configure; a team open around the clock simply has no hours.
//! Daylight-saving changes are handled by `jiff`: "09:00 in Europe/Paris" is 09:00 local on
//! both sides of the change.
//!
//! A schedule parses itself while the configuration is read (`serde(try_from)`), so a bad one
//! stops start-up and the desk only ever holds a valid one. It lives under `config` because it
//! is a configuration type first; it imports nothing else of the crate but `domain`.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::domain::UnixMillis;

/// `[teams.hours]` as written: what [`Hours`] is parsed from and printed back as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursConfig {
    /// An IANA zone such as `Asia/Shanghai`.
    pub timezone: String,
    /// Open days: `mon` … `sun`.
    pub days: Vec<String>,
    /// Local opening and closing time, `HH:MM`, 24-hour clock.
    pub open: String,
    pub close: String,
}

/// Why a schedule was refused: the field of `[teams.hours]` at fault, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct HoursError {
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> HoursError {
    HoursError {
        field,
        message: message.into(),
    }
}

/// A parsed schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "HoursConfig", into = "HoursConfig")]
pub struct Hours {
    /// As written, so that the configuration prints back exactly what was read.
    written: HoursConfig,
    tz: TimeZone,
    /// Monday first.
    days: [bool; 7],
    open: Time,
    close: Time,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(w: Weekday) -> usize {
    usize::try_from(w.to_monday_zero_offset()).unwrap_or(0)
}

fn parse_time(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

impl TryFrom<HoursConfig> for Hours {
    type Error = HoursError;

    fn try_from(written: HoursConfig) -> Result<Self, Self::Error> {
        Self::parse(&written)
    }
}

impl From<Hours> for HoursConfig {
    fn from(hours: Hours) -> Self {
        hours.written
    }
}

impl Hours {
    /// # Errors
    /// [`HoursError`] naming the bad field of `[teams.hours]`.
    pub fn parse(c: &HoursConfig) -> Result<Self, HoursError> {
        let tz = TimeZone::get(&c.timezone).map_err(|_| {
            refuse(
                "timezone",
                format!("{:?} is not a known IANA time zone", c.timezone),
            )
        })?;
        let mut days = [false; 7];
        if c.days.is_empty() {
            return Err(refuse("days", "needs at least one day"));
        }
        for d in &c.days {
            let i = DAY_NAMES
                .iter()
                .position(|n| n == d)
                .ok_or_else(|| refuse("days", format!("{d:?} must be one of {DAY_NAMES:?}")))?;
            days[i] = true;
        }
        let open = parse_time(&c.open)
            .ok_or_else(|| refuse("open", format!("{:?} must be HH:MM", c.open)))?;
        let close = parse_time(&c.close)
            .ok_or_else(|| refuse("close", format!("{:?} must be HH:MM", c.close)))?;
        if close <= open {
            return Err(refuse(
                "close",
                "must be after open (hours that run past midnight are not supported)",
            ));
        }
        Ok(Self {
            written: c.clone(),
            tz,
            days,
            open,
            close,
        })
    }

    /// Whether the team is open at `at`.
    pub fn is_open(&self, at: UnixMillis) -> bool {
        let Some(local) = self.local(at) else {
            return true;
        };
        let time = local.time();
        self.days[day_index(local.weekday())] && time >= self.open && time < self.close
    }

    /// The next opening at or after `at`: `at` itself when open, `None` if never (no open
    /// day, which parsing refuses, or a time outside what the calendar can represent).
    pub fn next_open(&self, at: UnixMillis) -> Option<UnixMillis> {
        if self.is_open(at) {
            return Some(at);
        }
        let local = self.local(at)?;
        for n in 0..=7i64 {
            let date = local.date().checked_add(n.days()).ok()?;
            if !self.days[day_index(date.weekday())] {
                continue;
            }
            let opening = date.to_datetime(self.open).to_zoned(self.tz.clone()).ok()?;
            let ms = u64::try_from(opening.timestamp().as_millisecond()).ok()?;
            if ms > at {
                return Some(ms);
            }
        }
        None
    }

    fn local(&self, at: UnixMillis) -> Option<jiff::Zoned> {
        let ts = Timestamp::from_millisecond(i64::try_from(at).ok()?).ok()?;
        Some(ts.to_zoned(self.tz.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shanghai_weekdays() -> Hours {
        Hours::parse(&HoursConfig {
            timezone: "Asia/Shanghai".into(),
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            open: "09:00".into(),
            close: "18:00".into(),
        })
        .unwrap()
    }

    /// Milliseconds of a UTC date and time.
    fn utc(s: &str) -> UnixMillis {
        let ts: Timestamp = s.parse().unwrap();
        ts.as_millisecond() as u64
    }

    #[test]
    fn open_within_local_hours_on_open_days() {
        let h = shanghai_weekdays();
        // Monday 2026-11-30 10:00 in Shanghai is 02:00 UTC.
        assert!(h.is_open(utc("2026-11-30T02:00:00Z")));
        // 08:59 local: not yet.
        assert!(!h.is_open(utc("2026-11-30T00:59:00Z")));
        // 18:00 local: closed (the closing minute is not open).
        assert!(!h.is_open(utc("2026-11-30T10:00:00Z")));
        // Saturday noon local.
        assert!(!h.is_open(utc("2026-12-05T04:00:00Z")));
    }

    #[test]
    fn next_open_skips_closed_days_in_local_time() {
        let h = shanghai_weekdays();
        // Friday 2026-12-04 20:00 local -> Monday 2026-12-07 09:00 local = 01:00 UTC.
        assert_eq!(
            h.next_open(utc("2026-12-04T12:00:00Z")),
            Some(utc("2026-12-07T01:00:00Z"))
        );
        // Monday 07:00 local -> the same morning at 09:00.
        assert_eq!(
            h.next_open(utc("2026-11-29T23:00:00Z")),
            Some(utc("2026-11-30T01:00:00Z"))
        );
        let open = utc("2026-11-30T02:00:00Z");
        assert_eq!(h.next_open(open), Some(open));
    }

    #[test]
    fn bad_schedules_name_the_field() {
        let mut c = HoursConfig {
            timezone: "Mars/Olympus".into(),
            days: vec!["mon".into()],
            open: "09:00".into(),
            close: "18:00".into(),
        };
        assert_eq!(Hours::parse(&c).unwrap_err().field, "timezone");
        c.timezone = "UTC".into();
        c.days = vec!["monday".into()];
        assert_eq!(Hours::parse(&c).unwrap_err().field, "days");
        c.days = vec!["mon".into()];
        c.open = "9am".into();
        assert_eq!(Hours::parse(&c).unwrap_err().field, "open");
        c.open = "19:00".into();
        assert_eq!(Hours::parse(&c).unwrap_err().field, "close");
    }
}
