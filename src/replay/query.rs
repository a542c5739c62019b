//! `--query` strings: the query part of a `GET /v1/rankings` URL (`profile=hot&limit=10`),
//! decoded by the same decoder the live server's queries go through
//! ([`RankQuery::parse`]), and parsed into ranking parameters for every variant's schema
//! before anything is replayed.

use tidal_core::config::Config;
use tidal_serving::RankQuery;
use tidal_serving::query::RankParams;

/// Parameters that make no sense in a replay, or that its report does not carry (`explain`:
/// the report lists ids and scores), dropped with a warning.
const IGNORED: [&str; 2] = ["min_lsn", "explain"];

/// Decoded `(name, value)` pairs.
pub type Pairs = Vec<(String, String)>;

/// The decoded `(name, value)` pairs of a query string (a leading `?` is allowed), and the
/// names of ignored parameters that were dropped.
pub fn pairs(query: &str) -> Result<(Pairs, Vec<String>), String> {
    let q = RankQuery::parse(query).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    for (k, v) in q.pairs() {
        if IGNORED.contains(&k.as_str()) {
            dropped.push(k.clone());
        } else {
            out.push((k.clone(), v.clone()));
        }
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
            ]
        );
        assert_eq!(dropped, vec!["min_lsn".to_string(), "explain".to_string()]);
        assert!(pairs("").unwrap().0.is_empty());
    }

    #[test]
    fn parses_against_the_schema() {
        let config = Config::default_filled();
        assert!(parse("profile=hot&half_life=24h&limit=5", &config).is_ok());
        let e = parse("profile=hot&half_life=5h", &config).unwrap_err();
        assert!(e.contains("half_life"), "{e}");
        assert!(parse("nonsense=1", &config).is_err());
        let e = parse("profile=hot&limit=5&limit=7", &config).unwrap_err();
        assert!(e.contains("limit") && e.contains("more than once"), "{e}");
    }
}
