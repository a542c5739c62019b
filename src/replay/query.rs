//! `--query` strings: the query part of a `GET /v1/rankings` URL (`profile=hot&limit=10`),
//! decoded as a browser would encode it (`%XX` escapes, `+` for a space), and parsed into
//! ranking parameters for every variant's schema before anything is replayed.

use tidal_core::config::Config;
use tidal_serving::query::RankParams;

/// Parameters that make no sense in a replay and are dropped (with a warning).
const IGNORED: [&str; 1] = ["min_lsn"];

/// Decodes `%XX` and `+`; `None` on a malformed escape or bytes that are not UTF-8.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Decoded `(name, value)` pairs.
pub type Pairs = Vec<(String, String)>;

/// The decoded `(name, value)` pairs of a query string (a leading `?` is allowed), and the
/// names of ignored parameters that were dropped.
pub fn pairs(query: &str) -> Result<(Pairs, Vec<String>), String> {
    let query = query.trim();
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let bad = || format!("query {query:?}: malformed escape in {part:?}");
        let (k, v) = (decode(k).ok_or_else(bad)?, decode(v).ok_or_else(bad)?);
        if IGNORED.contains(&k.as_str()) {
            dropped.push(k);
            continue;
        }
        out.push((k, v));
    }
    Ok((out, dropped))
}

/// Parses `query` for `config`'s schema.
pub fn parse(query: &str, config: &Config) -> Result<RankParams, String> {
    let (pairs, _) = pairs(query)?;
    RankParams::parse(&pairs, config).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_a_url() {
        let (p, dropped) = pairs("?profile=hot&tag=sci+fi&category=a%26b&min_lsn=7&explain").unwrap();
        assert_eq!(
            p,
            vec![
                ("profile".to_string(), "hot".to_string()),
                ("tag".to_string(), "sci fi".to_string()),
                ("category".to_string(), "a&b".to_string()),
                ("explain".to_string(), String::new()),
            ]
        );
        assert_eq!(dropped, vec!["min_lsn".to_string()]);
        assert!(pairs("tag=%zz").is_err());
        assert!(pairs("tag=%e9").is_err());
        assert!(pairs("").unwrap().0.is_empty());
    }

    #[test]
    fn parses_against_the_schema() {
        let config = Config::default_filled();
        assert!(parse("profile=hot&half_life=24h&limit=5", &config).is_ok());
        let e = parse("profile=hot&half_life=5h", &config).unwrap_err();
        assert!(e.contains("half_life"), "{e}");
        assert!(parse("nonsense=1", &config).is_err());
    }
}
