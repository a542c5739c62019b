//! Durations as the schema writes them: an integer and a unit, `s`, `m`, `h` or `d`
//! (`90s`, `24m`, `1h`, `7d`). The same strings key the feature maps in responses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole number of milliseconds, written and parsed as `<n><unit>`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub u64);

const UNITS: [(char, u64); 4] = [('d', 86_400_000), ('h', 3_600_000), ('m', 60_000), ('s', 1_000)];

impl Dur {
    /// The duration in milliseconds.
    pub fn ms(self) -> u64 {
        self.0
    }

    /// The duration in hours, as used by velocity and acceleration.
    pub fn hours(self) -> f64 {
        self.0 as f64 / 3_600_000.0
    }

    /// Seconds.
    pub const fn secs(s: u64) -> Dur {
        Dur(s * 1_000)
    }
}

impl fmt::Display for Dur {
    /// The largest unit that divides the duration exactly (`24m`, `1h`, `168m`, `7d`), except
    /// that one day is written `24h`, as feeds usually say.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return write!(f, "0s");
        }
        for (unit, ms) in UNITS {
            if unit == 'd' && self.0 == ms {
                continue;
            }
            if self.0.is_multiple_of(ms) {
                return write!(f, "{}{}", self.0 / ms, unit);
            }
        }
        write!(f, "{}ms", self.0)
    }
}

/// Why a duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected an integer and a unit s, m, h or d (e.g. 90s, 24m, 1h, 7d)")]
pub struct DurParseError {
    /// The text that was given.
    pub input: String,
}

impl FromStr for Dur {
    type Err = DurParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurParseError { input: s.to_string() };
        let s = s.trim();
        let unit = s.chars().last().ok_or_else(err)?;
        let per = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, ms)| *ms)
            .ok_or_else(err)?;
        let digits = &s[..s.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let n: u64 = digits.parse().map_err(|_| err())?;
        n.checked_mul(per).map(Dur).ok_or_else(err)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        for (s, ms) in [
            ("90s", 90_000),
            ("24m", 1_440_000),
            ("1h", 3_600_000),
            ("7d", 604_800_000),
        ] {
            let d: Dur = s.parse().expect("parses");
            assert_eq!(d.ms(), ms);
            assert_eq!(d.to_string(), s);
        }
        assert_eq!(Dur(60 * 60_000).to_string(), "1h");
        assert_eq!(Dur(168 * 60_000).to_string(), "168m");
        assert_eq!("1d".parse::<Dur>().expect("parses").to_string(), "24h");
        assert_eq!(Dur(2 * 86_400_000).to_string(), "2d");
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "h", "1", "1x", "-1h", "1.5h", "1 h", "99999999999999999999d"] {
            assert!(s.parse::<Dur>().is_err(), "{s:?} should not parse");
        }
    }
}
