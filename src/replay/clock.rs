//! Clock values on the `tidal replay` command line: milliseconds since the Unix epoch, or an
//! RFC 3339 timestamp (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`, or a bare
//! date `2024-05-01` meaning midnight UTC). Durations (`--every`) use the schema's syntax.

use tidal_core::duration::Dur;

/// Parses a clock value: an integer (ms) or RFC 3339.
pub fn parse_clock(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map_err(|_| format!("clock {s:?} is too large for milliseconds since the epoch"));
    }
    parse_rfc3339(s).ok_or_else(|| {
        format!(
            "invalid clock {s:?}: expected milliseconds since the Unix epoch (1700000000000) or an RFC 3339 \
             timestamp (2023-11-14T22:13:20Z, 2023-11-14T23:13:20.5+01:00, 2023-11-14)"
        )
    })
}

/// Parses a duration such as `90s`, `6h` or `7d`.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let d: Dur = s.trim().parse().map_err(|e| format!("{e}"))?;
    if d.ms() == 0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(d.ms())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A fixed-width run of ASCII digits.
fn digits(s: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let part = s.get(range)?;
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// RFC 3339 (`date-time`, or a full date alone) to ms since the epoch; `None` if malformed
/// or before 1970.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let (year, month, day) = (digits(s, 0..4)?, digits(s, 5..7)?, digits(s, 8..10)?);
    if s.get(4..5)? != "-" || s.get(7..8)? != "-" || !(1..=12).contains(&month) {
        return None;
    }
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if s.len() == 10 {
        return u64::try_from(days * 86_400_000).ok();
    }
    if !matches!(s.get(10..11)?, "T" | "t" | " ") || s.get(13..14)? != ":" || s.get(16..17)? != ":" {
        return None;
    }
    let (hour, minute, second) = (digits(s, 11..13)?, digits(s, 14..16)?, digits(s, 17..19)?);
    // 60 is a leap second; it folds into the next minute as most systems do.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let first3: String = frac[..n].chars().chain("000".chars()).take(3).collect();
        millis = first3.parse().ok()?;
        rest = &frac[n..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(0..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.get(3..4)? != ":" {
                return None;
            }
            let (oh, om) = (digits(rest, 1..3)?, digits(rest, 4..6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 60 + om)
        }
    };
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60;
    u64::try_from(secs * 1_000 + millis).ok()
}

/// ms since the epoch as RFC 3339 UTC with milliseconds.
pub fn format_clock(ms: u64) -> String {
    tidal_sources::wal::verify::iso8601(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_milliseconds() {
        assert_eq!(parse_clock("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_clock(" 0 "), Ok(0));
        assert!(parse_clock("99999999999999999999999").is_err());
    }

    #[test]
    fn rfc3339_round_trips_through_the_formatter() {
        for ms in [0u64, 86_399_999, 951_782_400_000, 1_700_000_000_123, 4_102_444_800_000] {
            assert_eq!(parse_clock(&format_clock(ms)), Ok(ms), "{}", format_clock(ms));
        }
    }

    #[test]
    fn rfc3339_forms() {
        assert_eq!(parse_clock("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(parse_clock("2023-11-14t22:13:20.5z"), Ok(1_700_000_000_500));
        assert_eq!(parse_clock("2023-11-14 23:13:20.123456+01:00"), Ok(1_700_000_000_123));
        assert_eq!(parse_clock("2023-11-14T20:13:20-02:00"), Ok(1_700_000_000_000));
        assert_eq!(parse_clock("1970-01-02"), Ok(86_400_000));
        assert_eq!(parse_clock("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20+0100",
            "1969-12-31T23:59:59Z",
            "yesterday",
            "",
        ] {
            assert!(parse_clock(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400_000));
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("week").is_err());
    }
}
