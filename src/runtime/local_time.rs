//! Customer-local time: the next local HH:MM on given weekdays, quiet-hour
//! windows, with DST gaps and overlaps resolved by chrono-tz.

use super::Millis;
use chrono::{Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;

/// The most zone names one thread remembers parsed ([`zone_named`]).
const ZONE_NAMES_MAX: usize = 256;

thread_local! {
    static ZONE_NAMES: super::per_thread::Memo<Box<str>, Option<Tz>> = Default::default();
}

/// The time zone an IANA name (`Europe/Berlin`) names, if any: what
/// `name.parse::<Tz>()` gives, remembered per thread by name (parsing is a
/// few hundred instructions, and the interpreter asks for the customer's or
/// the journey's zone on every schedule and every timed step). A thread
/// keeps at most `ZONE_NAMES_MAX` names and forgets them all when full.
pub fn zone_named(name: &str) -> Option<Tz> {
    super::per_thread::remembered(&ZONE_NAMES, ZONE_NAMES_MAX, name, || name.parse().ok())
}

/// Every day of the week (bit 0 = Monday … bit 6 = Sunday).
pub const ALL_DAYS: u8 = 0b0111_1111;

/// The first instant ≥ `now` whose local time in `zone` is `minute_of_day`,
/// on one of `days`. A local time that does not exist (DST gap) means the
/// first valid instant after it; one that exists twice (DST overlap) means
/// the earlier.
///
/// The answer is the earliest of the occurrences of that local time at or
/// after `now`, so for `now` anywhere in `[from, answer]` it is the same as
/// for `from`: each thread remembers the latest answer per (zone, time,
/// days) with the instant it was computed for ([`Recent`]), and customers
/// of one zone waiting for the same Monday 09:00 cost one calendar
/// computation, not one each.
pub fn next_local_time(now: Millis, zone: Tz, minute_of_day: u16, days: u8) -> Millis {
    let days = if days & ALL_DAYS == 0 { ALL_DAYS } else { days };
    Recent::with(zone, minute_of_day, days, |recent| {
        if recent.from <= now && now <= recent.next {
            return recent.next;
        }
        match next_local_time_computed(now, zone, minute_of_day, days) {
            Some(next) => {
                (recent.from, recent.next) = (now, next);
                next
            }
            None => now.saturating_add(86_400_000),
        }
    })
    .unwrap_or_else(|| {
        next_local_time_computed(now, zone, minute_of_day, days).unwrap_or(now.saturating_add(86_400_000))
    })
}

/// [`next_local_time`] by the calendar; `None` only where no day of `days`
/// came up (unreachable for a non-empty day set), which the caller turns
/// into a day later.
fn next_local_time_computed(now: Millis, zone: Tz, minute_of_day: u16, days: u8) -> Option<Millis> {
    let Some(now_utc) = chrono::DateTime::from_timestamp_millis(now) else {
        return Some(now);
    };
    let today = now_utc.with_timezone(&zone).date_naive();
    // Start a day early: the local date of `now` may be ahead of the instant
    // that local HH:MM falls on after a DST shift.
    for offset in -1..=8 {
        let date = today + Duration::days(offset);
        if days & weekday_bit(date) == 0 {
            continue;
        }
        let instant = resolve(zone, date, minute_of_day);
        if instant >= now {
            return Some(instant);
        }
    }
    None
}

/// One thread's latest answers of [`next_local_time`] and
/// [`is_local_time`] for one (zone, minute of day, days): a pure
/// function's results, so the cache changes no outcome.
#[derive(Clone, Copy)]
struct Recent {
    zone: Tz,
    minute_of_day: u16,
    days: u8,
    /// `next_local_time(t) == next` for every `t` in `from..=next`
    /// (empty while `from > next`).
    from: Millis,
    next: Millis,
    /// `is_local_time(checked) == is_local` (none yet while `checked` is
    /// `Millis::MIN`).
    checked: Millis,
    is_local: bool,
}

/// Slots of [`RECENT`], each holding one (zone, minute, days).
const RECENT_SLOTS: usize = 64;

thread_local! {
    static RECENT: std::cell::RefCell<[Option<Recent>; RECENT_SLOTS]> =
        const { std::cell::RefCell::new([None; RECENT_SLOTS]) };
}

impl Recent {
    /// Runs `f` on the thread's slot for (zone, minute, days), emptied first
    /// if it held another key; `None` if the slot is unavailable (a thread
    /// being torn down).
    fn with<T>(zone: Tz, minute_of_day: u16, days: u8, f: impl FnOnce(&mut Recent) -> T) -> Option<T> {
        let key = (zone as u32) ^ (u32::from(minute_of_day) << 10) ^ (u32::from(days) << 21);
        let slot = (key.wrapping_mul(0x9E37_79B9) >> 26) as usize % RECENT_SLOTS;
        RECENT
            .try_with(|recent| {
                let mut recent = recent.borrow_mut();
                let entry = &mut recent[slot];
                let fresh = Recent {
                    zone,
                    minute_of_day,
                    days,
                    from: Millis::MAX,
                    next: Millis::MIN,
                    checked: Millis::MIN,
                    is_local: false,
                };
                let entry = match entry {
                    Some(held) if held.zone == zone && held.minute_of_day == minute_of_day && held.days == days => held,
                    _ => entry.insert(fresh),
                };
                f(entry)
            })
            .ok()
    }
}

/// Whether `at` is local `minute_of_day` (to the second) on one of `days`
/// in `zone`: an instant [`next_local_time`] can return for these
/// arguments without a DST shift.
pub fn is_local_time(at: Millis, zone: Tz, minute_of_day: u16, days: u8) -> bool {
    let days = if days & ALL_DAYS == 0 { ALL_DAYS } else { days };
    Recent::with(zone, minute_of_day, days, |recent| {
        if recent.checked != at || at == Millis::MIN {
            (recent.checked, recent.is_local) = (at, is_local_time_computed(at, zone, minute_of_day, days));
        }
        recent.is_local
    })
    .unwrap_or_else(|| is_local_time_computed(at, zone, minute_of_day, days))
}

/// [`is_local_time`] by the calendar.
fn is_local_time_computed(at: Millis, zone: Tz, minute_of_day: u16, days: u8) -> bool {
    let Some(utc) = chrono::DateTime::from_timestamp_millis(at) else {
        return false;
    };
    let local = utc.with_timezone(&zone);
    at % 60_000 == 0
        && local.hour() * 60 + local.minute() == u32::from(minute_of_day)
        && days & weekday_bit(local.date_naive()) != 0
}

fn weekday_bit(date: NaiveDate) -> u8 {
    1 << date.weekday().num_days_from_monday()
}

/// The instant of local `minute_of_day` on `date` in `zone`.
fn resolve(zone: Tz, date: NaiveDate, minute_of_day: u16) -> Millis {
    let hour = u32::from(minute_of_day / 60);
    let minute = u32::from(minute_of_day % 60);
    let Some(naive) = date.and_hms_opt(hour, minute, 0) else {
        return 0;
    };
    let mut probe: NaiveDateTime = naive;
    // DST gaps are at most a few hours; step to the first valid local minute.
    for _ in 0..=24 * 60 {
        match zone.from_local_datetime(&probe) {
            LocalResult::Single(t) => return t.timestamp_millis(),
            LocalResult::Ambiguous(earlier, _) => return earlier.timestamp_millis(),
            LocalResult::None => probe += Duration::minutes(1),
        }
    }
    naive.and_utc().timestamp_millis()
}

/// Local minute of the day (0..1440) of an instant.
pub fn local_minute_of_day(now: Millis, zone: Tz) -> u16 {
    match chrono::DateTime::from_timestamp_millis(now) {
        Some(t) => {
            let local = t.with_timezone(&zone);
            (local.hour() * 60 + local.minute()) as u16
        }
        None => 0,
    }
}

/// If `now` is inside the local quiet window `[start, end)` (wrapping past
/// midnight when `start > end`), the instant the window ends; else `None`.
pub fn quiet_until(now: Millis, zone: Tz, start_minute: u16, end_minute: u16) -> Option<Millis> {
    if start_minute == end_minute {
        return None;
    }
    let minute = local_minute_of_day(now, zone);
    let inside = if start_minute < end_minute {
        (start_minute..end_minute).contains(&minute)
    } else {
        minute >= start_minute || minute < end_minute
    };
    inside.then(|| next_local_time(now, zone, end_minute, ALL_DAYS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names_are_what_parsing_gives_remembered_or_not() {
        let mut names: Vec<String> = [
            "Europe/Berlin",
            "europe/berlin",
            "Asia/Tehran",
            "UTC",
            "",
            "Mars/Olympus",
        ]
        .map(String::from)
        .to_vec();
        // More names than a thread keeps: some answers come after a reset.
        names.extend((0..ZONE_NAMES_MAX + 10).map(|i| format!("Etc/GMT+{}", i % 13)));
        names.extend((0..ZONE_NAMES_MAX + 10).map(|i| format!("Nowhere/{i}")));
        for _ in 0..2 {
            for name in &names {
                assert_eq!(zone_named(name), name.parse::<Tz>().ok(), "{name:?}");
            }
        }
    }

    fn at(text: &str) -> Millis {
        chrono::DateTime::parse_from_rfc3339(text)
            .expect("test time")
            .timestamp_millis()
    }

    #[test]
    fn next_nine_on_weekdays_skips_the_weekend() {
        // 2026-01-10 is a Saturday.
        let next = next_local_time(at("2026-01-10T12:00:00Z"), Tz::UTC, 9 * 60, 0b0001_1111);
        assert_eq!(next, at("2026-01-12T09:00:00Z"));
    }

    #[test]
    fn exactly_now_counts() {
        let now = at("2026-01-05T09:00:00Z");
        assert_eq!(next_local_time(now, Tz::UTC, 9 * 60, ALL_DAYS), now);
    }

    #[test]
    fn dst_gap_moves_to_the_first_valid_instant() {
        // Berlin springs forward on 2026-03-29: 02:00 → 03:00 local (01:00Z).
        let next = next_local_time(at("2026-03-29T00:00:00Z"), Tz::Europe__Berlin, 2 * 60 + 30, ALL_DAYS);
        assert_eq!(next, at("2026-03-29T01:00:00Z"));
    }

    #[test]
    fn dst_overlap_takes_the_earlier_instant() {
        // Berlin falls back on 2026-10-25: 02:30 local happens at 00:30Z and 01:30Z.
        let next = next_local_time(at("2026-10-24T23:00:00Z"), Tz::Europe__Berlin, 2 * 60 + 30, ALL_DAYS);
        assert_eq!(next, at("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn what_next_local_time_returns_is_a_local_time() {
        let berlin = Tz::Europe__Berlin;
        let monday_nine = next_local_time(at("2026-03-25T12:00:00Z"), berlin, 9 * 60, 0b0000_0001);
        assert!(is_local_time(monday_nine, berlin, 9 * 60, 0b0000_0001));
        assert!(!is_local_time(monday_nine, berlin, 9 * 60, 0b0000_0010));
        assert!(!is_local_time(monday_nine, Tz::UTC, 9 * 60, 0b0000_0001));
        assert!(!is_local_time(monday_nine + 1000, berlin, 9 * 60, 0b0000_0001));
        // A DST-gap instant is not the local time asked for: callers recompute.
        let gap = next_local_time(at("2026-03-29T00:00:00Z"), berlin, 2 * 60 + 30, ALL_DAYS);
        assert!(!is_local_time(gap, berlin, 2 * 60 + 30, ALL_DAYS));
    }

    #[test]
    fn remembered_answers_are_the_calendar_answers() {
        // Minute by minute over Berlin's spring and autumn shifts, on a
        // time inside a gap and one inside an overlap, and forwards then
        // backwards (the remembered window must not answer for earlier
        // instants), every answer equals the computed one.
        for (start, minute_of_day) in [
            ("2026-03-27T00:00:00Z", 2 * 60 + 30),
            ("2026-10-23T00:00:00Z", 2 * 60 + 30),
        ] {
            for days in [ALL_DAYS, 0b0100_0000, 0b0000_0001] {
                let start = at(start);
                let minutes: Vec<Millis> = (0..4 * 24 * 60).map(|m| start + m * 60_000 + 17).collect();
                for now in minutes.iter().chain(minutes.iter().rev()) {
                    let zone = Tz::Europe__Berlin;
                    let expected = next_local_time_computed(*now, zone, minute_of_day, days).expect("a day");
                    assert_eq!(next_local_time(*now, zone, minute_of_day, days), expected, "{now}");
                    let local = is_local_time_computed(expected, zone, minute_of_day, days);
                    assert_eq!(is_local_time(expected, zone, minute_of_day, days), local);
                    assert_eq!(
                        is_local_time(now - 17, zone, minute_of_day, days),
                        is_local_time_computed(now - 17, zone, minute_of_day, days)
                    );
                }
            }
        }
    }

    #[test]
    fn quiet_window_wraps_midnight() {
        let tokyo = Tz::Asia__Tokyo;
        // 14:00Z is 23:00 in Tokyo: inside 22:00–07:00, ends at 07:00 local = 22:00Z.
        assert_eq!(
            quiet_until(at("2026-05-01T14:00:00Z"), tokyo, 22 * 60, 7 * 60),
            Some(at("2026-05-01T22:00:00Z"))
        );
        // 07:00 local exactly is outside (the window is half-open).
        assert_eq!(quiet_until(at("2026-05-01T22:00:00Z"), tokyo, 22 * 60, 7 * 60), None);
    }
}
