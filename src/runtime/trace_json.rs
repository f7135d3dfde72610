//! The trace line's JSON writer: a `TraceRecord` written straight into an
//! output buffer, without an intermediate `String` per field or per line.
//!
//! Invariant: [`write_line`] produces exactly the bytes `serde_json` produces
//! for the record's `Serialize` derive (the same field order, the same
//! omissions, the same string escapes, RFC 3339 times as [`format_time`]
//! gives them). The tests below compare the two on every field, every escape
//! class and the edges of the fast time path.
//!
//! [`format_time`]: super::trace::format_time

use super::trace::{Kind, TraceRecord};
use super::Millis;
use std::cell::Cell;

/// The first millisecond of year 10000: below it (and from 1970 on) a time
/// is written by the civil-date arithmetic here; anything else goes through
/// chrono, which writes signed or five-digit years.
const FAST_TIME_END: Millis = 253_402_300_800_000;

/// Appends the record as one JSON object (no trailing newline).
pub fn write_line(record: &TraceRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"at\":\"");
    write_time(record.at, out);
    out.extend_from_slice(b"\",\"customer\":");
    write_str(&record.customer, out);
    if !record.journey.is_empty() {
        out.extend_from_slice(b",\"journey\":");
        write_str(&record.journey, out);
    }
    out.extend_from_slice(b",\"kind\":\"");
    out.extend_from_slice(kind_name(record.kind).as_bytes());
    out.push(b'"');
    let fields: [(&[u8], &Option<String>); 14] = [
        (b",\"version\":", &record.version),
        (b",\"message\":", &record.message),
        (b",\"channel\":", &record.channel),
        (b",\"id\":", &record.id),
        (b",\"engagement\":", &record.engagement),
        (b",\"subject\":", &record.subject),
        (b",\"body\":", &record.body),
        (b",\"locale\":", &record.locale),
        (b",\"reason\":", &record.reason),
        (b",\"error\":", &record.error),
        (b",\"goal\":", &record.goal),
        (b",\"split\":", &record.split),
        (b",\"arm\":", &record.arm),
        (b",\"attribute\":", &record.attribute),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            out.extend_from_slice(key);
            write_str(value, out);
        }
    }
    if let Some(value) = &record.value {
        out.extend_from_slice(b",\"value\":");
        serde_json::to_writer(&mut *out, value).expect("a JSON value always serializes into memory");
    }
    out.push(b'}');
}

/// The `snake_case` name serde gives the kind.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Enter => "enter",
        Kind::Send => "send",
        Kind::Skip => "skip",
        Kind::Goal => "goal",
        Kind::Exit => "exit",
        Kind::Split => "split",
        Kind::Set => "set",
        Kind::Engagement => "engagement",
        Kind::Error => "error",
    }
}

/// Appends `text` as a JSON string with serde_json's escapes: `"` and `\`,
/// the short forms `\b \f \n \r \t`, `\u00xx` (lower-case hex) for the other
/// control characters, and everything else (non-ASCII included) as is.
///
/// Eight bytes at a time: each word is appended whole and cut back to
/// its bytes before the first that needs an escape ([`special`] finds it),
/// so a run of plain text costs a store per word and an escape no copy of
/// variable length. The last word of a text is padded with spaces (never
/// escaped; copied into the padding, the one copy of variable length) and
/// cut back to the text's end.
pub fn write_str(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut from = 0;
    while from < bytes.len() {
        let rest = &bytes[from..];
        let (word, valid) = match rest.first_chunk::<8>() {
            Some(word) => (*word, 8),
            None => {
                let mut padded = [b' '; 8];
                padded[..rest.len()].copy_from_slice(rest);
                (padded, rest.len())
            }
        };
        let clean = special(u64::from_le_bytes(word));
        out.extend_from_slice(&word);
        if clean >= valid {
            out.truncate(out.len() - 8 + valid);
            from += valid;
            continue;
        }
        out.truncate(out.len() - 8 + clean);
        escape(word[clean], out);
        from += clean + 1;
    }
    out.push(b'"');
}

/// Appends the escape of a byte that needs one.
fn escape(byte: u8, out: &mut Vec<u8>) {
    match byte {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
        }
    }
}

/// The index in the word (little-endian: its first byte is the lowest) of
/// the first byte that needs an escape (`"`, `\\`, or below 0x20), or 8.
/// The classic SWAR tests flag every such byte; a borrow can flag a byte
/// that needs none only above one that does, so the lowest flag is exact.
fn special(word: u64) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = (word ^ (ONES * 0x22)).wrapping_sub(ONES) & !(word ^ (ONES * 0x22));
    let backslash = (word ^ (ONES * 0x5c)).wrapping_sub(ONES) & !(word ^ (ONES * 0x5c));
    ((below | quote | backslash) & HIGHS).trailing_zeros() as usize / 8
}

thread_local! {
    /// The last time this thread wrote by the civil-date arithmetic, with
    /// its text and the text's length (0 before the first): a trace's
    /// lines come in time order and those of one input share its instant
    /// (about seven lines in ten of the campaign library's trace repeat
    /// the time of the line before).
    static LAST_TIME: Cell<(Millis, [u8; 24], usize)> = const { Cell::new((0, [0; 24], 0)) };
}

/// Appends the time as [`super::trace::format_time`] formats it: RFC 3339
/// UTC with a `Z`, and `.mmm` only when there are milliseconds.
pub fn write_time(at: Millis, out: &mut Vec<u8>) {
    if !(0..FAST_TIME_END).contains(&at) {
        out.extend_from_slice(chrono_time(at).as_bytes());
        return;
    }
    let (last, text, length) = LAST_TIME.get();
    if length != 0 && last == at {
        out.extend_from_slice(&text[..length]);
        return;
    }
    let start = out.len();
    civil_time(at, out);
    let mut text = [0; 24];
    let length = out.len() - start;
    text[..length].copy_from_slice(&out[start..]);
    LAST_TIME.set((at, text, length));
}

/// [`write_time`]'s arithmetic, for a time in `0..FAST_TIME_END`.
fn civil_time(at: Millis, out: &mut Vec<u8>) {
    let millis = at % 1000;
    let seconds = at / 1000;
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"0000-00-00T00:00:00";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], month);
    put_digits(&mut text[8..10], day);
    put_digits(&mut text[11..13], of_day / 3600);
    put_digits(&mut text[14..16], of_day / 60 % 60);
    put_digits(&mut text[17..19], of_day % 60);
    out.extend_from_slice(&text);
    if millis != 0 {
        let mut fraction = *b".000";
        put_digits(&mut fraction[1..4], millis);
        out.extend_from_slice(&fraction);
    }
    out.push(b'Z');
}

/// chrono's rendering, for the times outside the fast path.
pub(super) fn chrono_time(at: Millis) -> String {
    match chrono::DateTime::from_timestamp_millis(at) {
        Some(time) => time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => at.to_string(),
    }
}

/// Writes `value` as decimal digits filling `slot`, zero-padded on the left.
fn put_digits(slot: &mut [u8], mut value: i64) {
    for digit in slot.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Year, month and day of the proleptic Gregorian calendar for a day count
/// from 1970-01-01 (H. Hinnant's `civil_from_days`), for days ≥ 0.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_serde(record: &TraceRecord) -> String {
        serde_json::to_string(record).expect("a trace record serializes")
    }

    fn line(record: &TraceRecord) -> String {
        let mut out = Vec::new();
        write_line(record, &mut out);
        String::from_utf8(out).expect("the writer writes UTF-8")
    }

    fn every_field(text: &str) -> TraceRecord {
        let mut record = TraceRecord::new(1_767_607_200_123, text, text, Kind::Send);
        let some = || Some(text.to_string());
        record.version = some();
        record.message = some();
        record.channel = some();
        record.id = some();
        record.engagement = some();
        record.subject = some();
        record.body = some();
        record.locale = some();
        record.reason = some();
        record.error = some();
        record.goal = some();
        record.split = some();
        record.arm = some();
        record.attribute = some();
        record.value = Some(serde_json::json!({"b": [1, 2.5, -3e300, null, true], "a": text}));
        record
    }

    #[test]
    fn every_field_and_escape_as_serde_json_writes_them() {
        let mut every_byte = String::new();
        (0u8..0x80).for_each(|byte| every_byte.push(char::from(byte)));
        let texts = [
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "é ü 中文 🎉 \u{7f} \u{2028}",
            &every_byte,
        ];
        for text in texts {
            for kind in [
                Kind::Enter,
                Kind::Send,
                Kind::Skip,
                Kind::Goal,
                Kind::Exit,
                Kind::Split,
                Kind::Set,
                Kind::Engagement,
                Kind::Error,
            ] {
                let mut record = every_field(text);
                record.kind = kind;
                assert_eq!(line(&record), by_serde(&record), "{text:?} {kind:?}");
                let bare = TraceRecord::new(0, text, text, kind);
                assert_eq!(line(&bare), by_serde(&bare), "{text:?} {kind:?}");
            }
        }
        let no_journey = TraceRecord::new(5, "c", "", Kind::Error);
        assert_eq!(line(&no_journey), by_serde(&no_journey));
        assert!(!line(&no_journey).contains("journey"));
    }

    /// `write_str` writes `text` as serde_json does, after what the buffer
    /// held (it appends whole words and cuts them back).
    fn assert_written_as_serde_json(text: &str) {
        let mut out = b"before".to_vec();
        write_str(text, &mut out);
        let expected = format!("before{}", serde_json::to_string(text).expect("a string serializes"));
        assert_eq!(String::from_utf8(out).expect("UTF-8"), expected, "{text:?}");
    }

    #[test]
    fn an_escape_at_every_position_of_a_word() {
        for length in 0..24 {
            for position in 0..length {
                for special in ["\u{0}", "\u{1f}", "\"", "\\", " ", "\u{7f}", "é", "!", "#", "[", "]"] {
                    let text: String = (0..length)
                        .map(|index| if index == position { special } else { "a" })
                        .collect();
                    assert_written_as_serde_json(&text);
                }
            }
        }
    }

    /// Two escapes in one word (the second found after the first's, in the
    /// rest of the word) and text of several bytes per character across
    /// the word boundaries.
    #[test]
    fn two_escapes_at_every_pair_of_positions() {
        let specials = ["\n", "\"", "\\", "\u{1}", "é", "中"];
        for length in 2..19 {
            for first in 0..length {
                for second in first + 1..length {
                    for (a, b) in specials.iter().flat_map(|a| specials.iter().map(move |b| (a, b))) {
                        let text: String = (0..length)
                            .map(|index| match index {
                                _ if index == first => a,
                                _ if index == second => b,
                                _ => "x",
                            })
                            .collect();
                        assert_written_as_serde_json(&text);
                    }
                }
            }
        }
    }

    /// Texts that are all escapes, of the longest kind and of the shortest,
    /// at every length up to a few words (every word of them cut back).
    #[test]
    fn texts_of_escapes_only() {
        for length in 0..40 {
            for special in ["\u{1}", "\u{1f}", "\n", "\""] {
                assert_written_as_serde_json(&special.repeat(length));
            }
        }
    }

    /// A time written again right after itself, or after another one,
    /// is the same text.
    #[test]
    fn a_time_again_is_the_same_text() {
        let times = [
            0,
            1,
            999,
            1000,
            1_767_607_200_123,
            1_767_607_200_000,
            FAST_TIME_END - 1,
            -1,
            FAST_TIME_END,
        ];
        for a in times {
            for b in times {
                for at in [a, a, b, b, a] {
                    let mut out = b"x".to_vec();
                    write_time(at, &mut out);
                    assert_eq!(
                        String::from_utf8(out).expect("UTF-8"),
                        format!("x{}", chrono_time(at)),
                        "{a} {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn times_as_chrono_formats_them() {
        let mut times = vec![
            i64::MIN,
            -8_334_632_851_200_001,
            -62_167_219_200_001,
            -62_167_219_200_000,
            -1,
            0,
            1,
            999,
            1000,
            86_399_999,
            86_400_000,
            951_782_400_000, // 2000-02-29
            951_868_799_999,
            4_107_542_400_000, // 2100-03-01
            FAST_TIME_END - 1,
            FAST_TIME_END,
            8_210_298_412_799_999,
            i64::MAX,
        ];
        // Every 7,777,777,777 ms (about 90 days) from 1970 to 9999.
        times.extend((0..FAST_TIME_END).step_by(7_777_777_777));
        // Every hour and a bit of a leap year's February and March.
        times.extend((1_709_164_800_000..1_711_929_600_000).step_by(3_600_001));
        for at in times {
            let mut out = Vec::new();
            write_time(at, &mut out);
            assert_eq!(String::from_utf8(out).expect("UTF-8"), chrono_time(at), "{at}");
        }
    }
}
