//! Quiet hours: a daily window of local wall-clock time in the user's IANA time zone,
//! possibly across midnight (22:00–07:00). Pure functions of the window and an instant.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed window. `start == end` is an empty window (no quiet hours), not a full day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl Window {
    /// Parses `HH:MM` bounds; None when either is not a valid time of day.
    pub fn parse(start: &str, end: &str) -> Option<Window> {
        Some(Window {
            start: parse_hhmm(start)?,
            end: parse_hhmm(end)?,
        })
    }

    fn contains_local(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            // Across midnight: late evening or early morning.
            t >= self.start || t < self.end
        }
    }

    /// When `now` falls inside the window in `tz`, the instant the window ends (epoch millis).
    pub fn deferral_until(&self, tz: Tz, now: DateTime<Utc>) -> Option<i64> {
        if self.start == self.end {
            return None;
        }
        let local = now.with_timezone(&tz).naive_local();
        if !self.contains_local(local.time()) {
            return None;
        }
        // The end is today when the clock has not reached it yet, else tomorrow.
        let mut date = local.date();
        if local.time() >= self.end {
            date = date.succ_opt()?;
        }
        let end = resolve(tz, date, self.end)?;
        // A DST shift can make the resolved end land at or before `now`: the window is over.
        (end > now).then(|| end.timestamp_millis())
    }
}

/// The instant of local `date` + `time` in `tz`. An ambiguous time (clocks go back) takes the
/// earlier instant; a time that does not exist (clocks go forward) takes the first instant
/// after the gap, so a window never ends later than the wall clock says.
fn resolve(tz: Tz, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    let naive = date.and_time(time);
    let mut probe = naive;
    // Gaps are at most a few hours; step in minutes until the local time exists.
    for _ in 0..(24 * 60) {
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(early, _) => return Some(early.with_timezone(&Utc)),
            LocalResult::None => probe += Duration::minutes(1),
        }
    }
    None
}

fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    NaiveTime::from_hms_opt(h, m, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn parses_and_rejects() {
        assert!(Window::parse("22:00", "07:30").is_some());
        assert!(Window::parse("24:00", "07:00").is_none());
        assert!(Window::parse("7", "08:00").is_none());
        assert!(Window::parse("aa:bb", "08:00").is_none());
    }

    #[test]
    fn across_midnight_in_a_non_utc_zone() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let w = Window::parse("22:00", "07:00").unwrap();
        // 23:30 Berlin on 10 Jan: deferred to 07:00 Berlin on 11 Jan.
        let until = w.deferral_until(tz, at(tz, 2025, 1, 10, 23, 30));
        assert_eq!(until, Some(at(tz, 2025, 1, 11, 7, 0).timestamp_millis()));
        // 03:00 Berlin: same night, ends at 07:00 the same day.
        let until = w.deferral_until(tz, at(tz, 2025, 1, 11, 3, 0));
        assert_eq!(until, Some(at(tz, 2025, 1, 11, 7, 0).timestamp_millis()));
        // 07:00 sharp and midday are outside.
        assert_eq!(w.deferral_until(tz, at(tz, 2025, 1, 11, 7, 0)), None);
        assert_eq!(w.deferral_until(tz, at(tz, 2025, 1, 11, 12, 0)), None);
        // 21:30 UTC is 22:30 in Berlin (inside) but outside for a UTC user.
        let now = Utc.with_ymd_and_hms(2025, 1, 10, 21, 30, 0).unwrap();
        assert!(w.deferral_until(tz, now).is_some());
        assert_eq!(w.deferral_until(chrono_tz::UTC, now), None);
    }

    #[test]
    fn same_day_window_and_empty_window() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let w = Window::parse("13:00", "14:00").unwrap();
        let until = w.deferral_until(tz, at(tz, 2025, 6, 1, 13, 15));
        assert_eq!(until, Some(at(tz, 2025, 6, 1, 14, 0).timestamp_millis()));
        assert_eq!(w.deferral_until(tz, at(tz, 2025, 6, 1, 14, 15)), None);
        let empty = Window::parse("08:00", "08:00").unwrap();
        assert_eq!(empty.deferral_until(tz, at(tz, 2025, 6, 1, 8, 0)), None);
    }

    #[test]
    fn window_ending_in_a_dst_gap_ends_after_the_gap() {
        // Berlin skips 02:00–03:00 on 30 March 2025.
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let w = Window::parse("23:00", "02:30").unwrap();
        let until = w.deferral_until(tz, at(tz, 2025, 3, 30, 1, 0)).unwrap();
        assert_eq!(until, at(tz, 2025, 3, 30, 3, 0).timestamp_millis());
    }
}
