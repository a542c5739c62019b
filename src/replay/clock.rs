//! Clock values on the `tidal replay` command line: milliseconds since the Unix epoch, or an
//! RFC 3339 timestamp (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`, or a bare
//! date `2024-05-01` meaning midnight UTC), parsed and printed with jiff. Durations (`--every`)
//! use the schema's syntax.

use tidal_core::duration::Dur;

/// Parses a clock value: an integer (ms) or RFC 3339.
pub fn parse_clock(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let ms = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>()
            .map_err(|_| format!("clock {s:?} is too large for milliseconds since the epoch"))?
    } else {
        parse_rfc3339(s).ok_or_else(|| {
            format!(
                "invalid clock {s:?}: expected milliseconds since the Unix epoch (1700000000000) or an RFC 3339 \
                 timestamp (2023-11-14T22:13:20Z, 2023-11-14T23:13:20.5+01:00, 2023-11-14)"
            )
        })?
    };
    // Every clock of a log lies below 2^43 ms; a state as of a later one is never served.
    if ms >= tidal_core::time::MAX_TS_MS {
        return Err(format!(
            "clock {s:?} is past the last one a log can hold ({} ms, the year 2248)",
            tidal_core::time::MAX_TS_MS - 1
        ));
    }
    Ok(ms)
}

/// Parses a duration such as `90s`, `6h` or `7d`.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let d: Dur = s.trim().parse().map_err(|e| format!("{e}"))?;
    if d.ms() == 0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(d.ms())
}

/// RFC 3339 (`date-time` with an offset, or a full date alone meaning midnight UTC) to ms
/// since the epoch; `None` if malformed or before 1970.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let ts = match s.parse::<jiff::Timestamp>() {
        Ok(ts) => ts,
        Err(_) if s.len() == 10 => {
            let date: jiff::civil::Date = s.parse().ok()?;
            jiff::tz::Offset::UTC
                .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
                .ok()?
        }
        Err(_) => return None,
    };
    u64::try_from(ts.as_millisecond()).ok()
}

/// ms since the epoch as RFC 3339 UTC with milliseconds.
pub fn format_clock(ms: u64) -> String {
    match i64::try_from(ms)
        .ok()
        .and_then(|m| jiff::Timestamp::from_millisecond(m).ok())
    {
        Some(ts) => format!("{ts:.3}"),
        None => format!("{ms} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_milliseconds() {
        assert_eq!(parse_clock("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_clock(" 0 "), Ok(0));
        assert!(parse_clock("99999999999999999999999").is_err());
        assert!(parse_clock("99999999999999999").is_err_and(|e| e.contains("2248")));
    }

    #[test]
    fn rfc3339_round_trips_through_the_formatter() {
        for ms in [0u64, 86_399_999, 951_782_400_000, 1_700_000_000_123, 4_102_444_800_000] {
            assert_eq!(parse_clock(&format_clock(ms)), Ok(ms), "{}", format_clock(ms));
        }
        assert_eq!(format_clock(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
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
