//! Static bounds of a journey (spec §6): the longest an enrollment can stay
//! and the most sends it can produce. Both are upper bounds computed over
//! the statements, taking the worst branch everywhere:
//!
//! - `wait D` counts D; `wait for E within D { A } timeout { B }` counts D
//!   plus the longer of A and B;
//! - `wait until HH:MM` counts 1 day + 1 hour (DST slack); with `on DAYS`,
//!   the longest gap between two allowed days + 1 hour (at most 7 days + 1 hour);
//! - `wait until EXPR` counts [`WAIT_UNTIL_EXPR_MAX_SECONDS`] (the runtime
//!   clamps such waits to 365 days);
//! - a `send` counts the length of the quiet hours window in force (the send
//!   may be deferred by that much);
//! - `if`/`split` take the maximum of their branches, `repeat N` multiplies,
//!   `exit` ends the path.
//!
//! Arithmetic saturates, so absurd journeys get a huge bound, never a panic.

use super::Bounds;
use crate::syntax::ast::{Block, JourneyDecl, SettingKind, SettingsDecl, StatementKind};

/// The runtime clamps `wait until EXPR` to at most this long (365 days).
pub const WAIT_UNTIL_EXPR_MAX_SECONDS: i64 = 365 * DAY;

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

/// Bounds of one journey; `settings` supplies inherited quiet hours.
pub fn journey_bounds(journey: &JourneyDecl, settings: Option<&SettingsDecl>) -> Bounds {
    let quiet = quiet_window_seconds(&journey.settings)
        .or_else(|| settings.and_then(|s| quiet_window_seconds(&s.settings)))
        .unwrap_or(0);
    let (duration, sends, _) = block(&journey.body, quiet);
    Bounds {
        max_duration_seconds: duration,
        max_sends: sends,
    }
}

fn quiet_window_seconds(settings: &[crate::syntax::ast::Setting]) -> Option<i64> {
    settings.iter().find_map(|setting| match &setting.kind {
        SettingKind::QuietHours { start, end } => {
            let minutes = (i64::from(end.minutes()) - i64::from(start.minutes())).rem_euclid(24 * 60);
            Some(minutes * 60)
        }
        _ => None,
    })
}

/// (longest duration, most sends, whether every path ends in `exit`).
fn block(block: &Block, quiet: i64) -> (i64, u64, bool) {
    let mut duration: i64 = 0;
    let mut sends: u64 = 0;
    for statement in &block.statements {
        let (d, s, exits) = match &statement.kind {
            StatementKind::Send { .. } => (quiet, 1, false),
            StatementKind::Wait { duration } => (duration.seconds.max(0), 0, false),
            StatementKind::WaitUntilTime { days, .. } => {
                let gap_days = days.as_ref().map(|d| longest_gap_days(&d.words)).unwrap_or(1);
                (gap_days * DAY + HOUR, 0, false)
            }
            StatementKind::WaitUntilExpr { .. } => (WAIT_UNTIL_EXPR_MAX_SECONDS, 0, false),
            StatementKind::WaitFor {
                within, body, timeout, ..
            } => {
                let (bd, bs, be) = self::block(body, quiet);
                let (td, ts, te) = match timeout {
                    Some(timeout) => self::block(timeout, quiet),
                    None => (0, 0, false),
                };
                let window = within.map(|w| w.seconds.max(0)).unwrap_or(0);
                (window.saturating_add(bd.max(td)), bs.max(ts), be && te)
            }
            StatementKind::If { branches, otherwise } => {
                let mut worst = match otherwise {
                    Some(otherwise) => self::block(otherwise, quiet),
                    None => (0, 0, false),
                };
                for (_, branch) in branches {
                    let (d, s, e) = self::block(branch, quiet);
                    worst = (worst.0.max(d), worst.1.max(s), worst.2 && e);
                }
                worst
            }
            StatementKind::Split { arms, .. } => {
                let mut worst = (0, 0, !arms.is_empty());
                for arm in arms {
                    let (d, s, e) = self::block(&arm.body, quiet);
                    worst = (worst.0.max(d), worst.1.max(s), worst.2 && e);
                }
                worst
            }
            StatementKind::Set { .. } => (0, 0, false),
            StatementKind::Repeat { times, body } => {
                let (d, s, e) = self::block(body, quiet);
                let times = times.value.max(0);
                (d.saturating_mul(times), s.saturating_mul(times as u64), e && times > 0)
            }
            StatementKind::Exit => (0, 0, true),
        };
        duration = duration.saturating_add(d);
        sends = sends.saturating_add(s);
        if exits {
            return (duration, sends, true);
        }
    }
    (duration, sends, false)
}

/// The longest gap, in days, from one allowed day to the next (1 to 7).
fn longest_gap_days(words: &[crate::syntax::ast::Ident]) -> i64 {
    let mut allowed = [false; 7];
    for word in words {
        for day in day_set(&word.name).unwrap_or(&[]) {
            allowed[*day] = true;
        }
    }
    let days: Vec<i64> = (0..7).filter(|d| allowed[*d as usize]).collect();
    if days.is_empty() {
        return 7;
    }
    let mut longest = 0;
    for (index, day) in days.iter().enumerate() {
        let next = days.get(index + 1).copied().unwrap_or(days[0] + 7);
        longest = longest.max(next - day);
    }
    longest
}

/// The weekdays (0 = Monday) a day word stands for, `None` if it is not one.
pub(crate) fn day_set(word: &str) -> Option<&'static [usize]> {
    Some(match word {
        "mon" => &[0],
        "tue" => &[1],
        "wed" => &[2],
        "thu" => &[3],
        "fri" => &[4],
        "sat" => &[5],
        "sun" => &[6],
        "weekdays" => &[0, 1, 2, 3, 4],
        "weekends" => &[5, 6],
        "day" => &[0, 1, 2, 3, 4, 5, 6],
        _ => return None,
    })
}

/// The day words, for did-you-mean.
pub(crate) const DAY_WORDS: [&str; 10] = [
    "mon", "tue", "wed", "thu", "fri", "sat", "sun", "weekdays", "weekends", "day",
];

/// `90061` → `1d 1h 1m 1s`.
pub fn format_duration(seconds: i64) -> String {
    if seconds <= 0 {
        return "0s".into();
    }
    let mut rest = seconds;
    let mut parts = Vec::new();
    for (unit, size) in [("d", DAY), ("h", HOUR), ("m", 60), ("s", 1)] {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    parts.join(" ")
}
