//! Ranking parameters: defaults, declared profiles, and every refusal with its code and
//! the parameter it names.

#![allow(clippy::unwrap_used, clippy::type_complexity)] // test helpers

use std::collections::HashMap;
use std::sync::Arc;

use tidal_core::features::{Lanes, TOTAL_LANE};
use tidal_core::flow::ItemState;
use tidal_core::record::ItemMeta;
use tidal_core::{Config, Dur};
use tidal_serving::query::{Base, Feature, RankParams, encode_cursor, item_view, rank};
use tidal_sinks::{SnapshotBuilder, Update};

fn config() -> Config {
    Config::parse(
        r#"
[[signals]]
name = "view"
half_lives = ["1h", "24h"]
windows = [{ size = "1h" }, { size = "24h" }]
rank_weight = 1.0

[[signals]]
name = "like"
half_lives = ["24h"]
windows = [{ size = "24h" }, { size = "7d" }]
rank_weight = 3.0

[[signals]]
name = "skip"
windows = [{ size = "1h" }]

[[profiles]]
name = "viral"
base = "rising"
signals = { like = 1.0 }
window = "7d"
max_per_creator = 1

[[profiles]]
name = "local-music"
base = "trending"
window = "24h"
category = "music"
exclude = ["spam1"]
cohort = "region:US"
filter = "unseen"
"#,
    )
    .unwrap()
}

fn parse(q: &[(&str, &str)]) -> Result<RankParams, tidal_serving::query::QueryError> {
    let pairs: Vec<(String, String)> = q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    RankParams::parse(&pairs, &config())
}

#[test]
fn defaults_come_from_the_schema() {
    let p = parse(&[]).unwrap();
    assert_eq!((p.profile.as_str(), p.base), ("trending", Base::Trending));
    assert_eq!((p.limit, p.offset, p.explain, p.max_per_creator), (20, 0, false, None));
    // rank weights 1 and 3; skip (0) is left out; each type's first window.
    let terms: Vec<_> = p.terms.iter().map(|t| (t.kind, t.weight, t.feature)).collect();
    assert_eq!(
        terms,
        vec![
            (
                0,
                1.0,
                Feature::Window {
                    index: 0,
                    size: Dur(3_600_000)
                }
            ),
            (
                1,
                3.0,
                Feature::Window {
                    index: 0,
                    size: Dur(86_400_000)
                }
            ),
        ]
    );
    let p = parse(&[("profile", "hot"), ("signals", "like:2, view:0.5")]).unwrap();
    let terms: Vec<_> = p.terms.iter().map(|t| (t.kind, t.weight, t.feature)).collect();
    assert_eq!(
        terms,
        vec![
            (
                0,
                0.5,
                Feature::HalfLife {
                    index: 0,
                    size: Dur(3_600_000)
                }
            ),
            (
                1,
                2.0,
                Feature::HalfLife {
                    index: 0,
                    size: Dur(86_400_000)
                }
            ),
        ]
    );
    let p = parse(&[("profile", "viral")]).unwrap();
    assert_eq!((p.base, p.max_per_creator), (Base::Rising, Some(1)));
    assert_eq!(
        p.terms[0].feature,
        Feature::Window {
            index: 1,
            size: Dur(7 * 86_400_000)
        }
    );
    let p = parse(&[
        ("profile", "viral"),
        ("max_per_creator", "4"),
        ("cursor", &encode_cursor(40)),
        ("explain", "1"),
    ])
    .unwrap();
    assert_eq!((p.max_per_creator, p.offset, p.explain), (Some(4), 40, true));
    let map: HashMap<String, String> = [("limit".to_string(), "1000".to_string())].into();
    assert_eq!(RankParams::from_map(&map, &config()).unwrap().limit, 1000);
}

#[test]
fn a_profiles_declared_filters_are_the_query_defaults() {
    let set = |v: &[&str]| {
        v.iter()
            .map(|s| s.to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let p = parse(&[("profile", "local-music")]).unwrap();
    assert_eq!((p.profile.as_str(), p.base), ("local-music", Base::Trending));
    assert_eq!(p.category.as_deref(), Some("music"));
    assert_eq!(p.exclude, set(&["spam1"]));
    assert_eq!(p.cohort, Some(vec![("region".to_string(), "US".to_string())]));
    assert!(!p.unseen, "without user= there is nothing to filter");
    let p = parse(&[("profile", "local-music"), ("user", "u1")]).unwrap();
    assert!(p.unseen, "the profile's filter=unseen applies to its user");
    // A query's own parameters replace the profile's (exclusions add up).
    let p = parse(&[
        ("profile", "local-music"),
        ("user", "u1"),
        ("filter", "all"),
        ("category", "news"),
        ("cohort", "region:EU"),
        ("exclude", "x1,x2"),
    ])
    .unwrap();
    assert!(!p.unseen);
    assert_eq!(p.category.as_deref(), Some("news"));
    assert_eq!(p.cohort, Some(vec![("region".to_string(), "EU".to_string())]));
    assert_eq!(p.exclude, set(&["spam1", "x1", "x2"]));
    // The built-in base knows none of them.
    let p = parse(&[("profile", "trending"), ("user", "u1")]).unwrap();
    assert!(p.category.is_none() && p.cohort.is_none() && p.exclude.is_empty() && !p.unseen);
}

#[test]
fn bad_parameters_are_named() {
    let cases: &[(&[(&str, &str)], &str, &str)] = &[
        (&[("profile", "for_you")], "invalid_parameter", "user"),
        (
            &[("profile", "for_you"), ("user", "u1"), ("filter", "none")],
            "invalid_parameter",
            "filter",
        ),
        (&[("profile", "following")], "invalid_parameter", "user"),
        (&[("filter", "unseen")], "invalid_parameter", "filter"),
        (&[("filter", "seen"), ("user", "u1")], "invalid_parameter", "filter"),
        (&[("user", "")], "invalid_parameter", "user"),
        (&[("cohort", "planet:mars")], "unknown_dimension", "cohort"),
        (&[("cohort", "Region!")], "invalid_parameter", "cohort"),
        (&[("cohort", "region:US,region:EU")], "invalid_parameter", "cohort"),
        (
            &[("cohort", "region:US"), ("profile", "hot")],
            "invalid_parameter",
            "cohort",
        ),
        (&[("profile", "bogus")], "unknown_profile", "profile"),
        (&[("signal", "clicks")], "unknown_signal", "signal"),
        (&[("signals", "view:1,clicks:2")], "unknown_signal", "signals"),
        (&[("signals", "view:-1")], "invalid_parameter", "signals"),
        (&[("signals", "view:x")], "invalid_parameter", "signals"),
        (&[("signals", "view:1,view:2")], "invalid_parameter", "signals"),
        (&[("signals", "view,,like")], "invalid_parameter", "signals"),
        (
            &[("signal", "view"), ("signals", "like:1")],
            "invalid_parameter",
            "signals",
        ),
        (&[("window", "7d")], "undeclared_window", "window"),
        (&[("window", "fortnight")], "invalid_parameter", "window"),
        (
            &[("signal", "skip"), ("profile", "hot")],
            "undeclared_half_life",
            "half_life",
        ),
        (
            &[("profile", "hot"), ("half_life", "1h")],
            "undeclared_half_life",
            "half_life",
        ),
        (&[("profile", "hot"), ("window", "1h")], "invalid_parameter", "window"),
        (&[("half_life", "1h")], "invalid_parameter", "half_life"),
        (
            &[("profile", "viral"), ("half_life", "24h")],
            "invalid_parameter",
            "half_life",
        ),
        (&[("profile", "top"), ("window", "24h")], "invalid_parameter", "window"),
        (&[("profile", "new"), ("signal", "view")], "invalid_parameter", "signal"),
        (
            &[("profile", "for_you"), ("user", "u1"), ("window", "24h")],
            "invalid_parameter",
            "window",
        ),
        (
            &[("profile", "following"), ("user", "u1"), ("signals", "like:1")],
            "invalid_parameter",
            "signals",
        ),
        (
            &[("q", "piano"), ("cohort", "region:US")],
            "invalid_parameter",
            "cohort",
        ),
        (&[("q", "piano"), ("signals", "view:1")], "invalid_parameter", "signals"),
        (&[("q", "piano"), ("half_life", "1h")], "invalid_parameter", "half_life"),
        (&[("limit", "1001")], "limit_too_large", "limit"),
        (&[("limit", "0")], "invalid_parameter", "limit"),
        (&[("limit", "ten")], "invalid_parameter", "limit"),
        (&[("max_per_creator", "0")], "invalid_parameter", "max_per_creator"),
        (&[("cursor", "abc")], "invalid_cursor", "cursor"),
        (&[("cursor", "pZZ")], "invalid_cursor", "cursor"),
        (&[("cursor", "pfffffff")], "invalid_cursor", "cursor"),
        (&[("explain", "yes")], "invalid_parameter", "explain"),
        (&[("min_lsn", "-3")], "invalid_parameter", "min_lsn"),
        (&[("category", "")], "invalid_parameter", "category"),
        (&[("q", "")], "invalid_parameter", "q"),
        (
            &[("q", "piano"), ("profile", "following"), ("user", "u1")],
            "invalid_parameter",
            "q",
        ),
        (&[("limt", "5")], "unknown_parameter", "limt"),
        (&[("limit", "5"), ("limit", "7")], "repeated_parameter", "limit"),
        (
            &[("profile", "trending"), ("cohort", "region:US"), ("profile", "hot")],
            "repeated_parameter",
            "profile",
        ),
    ];
    for (q, code, param) in cases {
        let e = parse(q).expect_err(&format!("{q:?} should be refused"));
        assert_eq!((e.code(), e.param()), (*code, *param), "{q:?}: {e}");
        assert!(
            e.to_string().contains(param),
            "{q:?}: the message names the parameter: {e}"
        );
    }
    let e = parse(&[("q", "piano"), ("half_life", "1h")]).unwrap_err();
    assert!(e.to_string().contains("BM25 alone"), "{e}");
    let e = parse(&[("profile", "hot"), ("window", "1h")]).unwrap_err();
    assert!(e.to_string().contains("half_life="), "says what hot reads instead: {e}");
    // What a profile reads is taken.
    parse(&[
        ("profile", "following"),
        ("user", "u1"),
        ("half_life", "24h"),
        ("signal", "like"),
    ])
    .expect("following by hot");
    parse(&[("profile", "viral"), ("window", "24h")]).expect("a declared rising profile's window");
    parse(&[("profile", "top"), ("signals", "view:1,like:2")]).expect("top's signals");
    parse(&[("q", "piano"), ("profile", "trending"), ("cohort", "region:US")]).expect("search within cohort trending");
    let e = parse(&[("profile", "for_you")]).unwrap_err();
    assert!(e.to_string().contains("needs user="), "{e}");
    let p = parse(&[("profile", "for_you"), ("user", "u1")]).expect("for_you with a user");
    assert!(p.unseen, "for_you drops seen items by default");
    let p = parse(&[("profile", "for_you"), ("user", "u1"), ("filter", "all")]).expect("filter=all");
    assert!(!p.unseen, "filter=all keeps seen items");
}

#[test]
fn item_view_reports_every_feature() {
    let config = config();
    let mut b = SnapshotBuilder::new(&config);
    let meta = ItemMeta {
        creator: Some("ann".into()),
        title: Some("Piano".into()),
        ..ItemMeta::default()
    };
    let mut lanes = Lanes::default();
    lanes.0[0] = 6 << 20; // count_1h = 6
    lanes.0[1] = 8 << 20; // count_2h = 8
    lanes.0[2] = 30 << 20; // count_24h = 30
    lanes.0[3] = 70 << 20; // count_48h = 70
    lanes.0[TOTAL_LANE] = 100 << 20;
    let h = 3_600_000u64;
    let clock = 100 * 16 * h + 2 * h;
    let epoch = 100 * 16 * h;
    b.apply(vec![
        (
            Update::Item {
                key: 1,
                state: ItemState {
                    id: "a".into(),
                    meta: Some(std::sync::Arc::new(meta)),
                    deleted: false,
                },
            },
            1,
        ),
        (
            Update::Item {
                key: 2,
                state: ItemState {
                    id: "b".into(),
                    meta: None,
                    deleted: false,
                },
            },
            1,
        ),
        (
            Update::Item {
                key: 3,
                state: ItemState {
                    id: "gone".into(),
                    meta: None,
                    deleted: true,
                },
            },
            1,
        ),
        (Update::Window { key: 1, kind: 0, lanes }, 1),
        (Update::Window { key: 3, kind: 0, lanes }, 1),
        // 4 signals of weight 1 at the epoch start: decay_1h = 4 · 2^-2 at clock.
        (
            Update::Decay {
                key: 1,
                kind: 0,
                hl: 0,
                epoch,
                sum: 4 << 48,
            },
            1,
        ),
    ]);
    let snap = tidal_sinks::View::single(Arc::new(b.snapshot(tidal_core::time::time_at(clock) + 1)));
    // The JSON answered for the view (SPEC §5's shape).
    let v = serde_json::to_value(item_view(&snap, &config, "a").unwrap()).unwrap();
    assert_eq!(v["id"], "a");
    assert_eq!(v["creator"], "ann");
    assert_eq!(v["title"], "Piano");
    let view = &v["signals"]["view"];
    assert_eq!(view["total"], 100.0);
    assert_eq!(view["counts"]["1h"], 6.0);
    assert_eq!(view["counts"]["24h"], 30.0);
    assert_eq!(view["velocity"]["1h"], 6.0);
    assert_eq!(view["velocity"]["24h"], 30.0 / 24.0);
    // acceleration = (count_W − (count_2W − count_W)) / W
    assert_eq!(view["acceleration"]["1h"], (6.0 - (8.0 - 6.0)) / 1.0);
    assert_eq!(view["acceleration"]["24h"], (30.0 - (70.0 - 30.0)) / 24.0);
    assert!((view["decay"]["1h"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(view["decay"]["24h"], 0.0);
    assert_eq!(v["signals"]["like"]["counts"]["7d"], 0.0);
    assert_eq!(v["as_of"]["clock"], clock);
    // Known from signals only: no metadata fields. Deleted or unknown: none.
    let b_view = serde_json::to_value(item_view(&snap, &config, "b").unwrap()).unwrap();
    assert!(b_view.get("creator").is_none() && b_view.get("signals").is_some());
    assert!(item_view(&snap, &config, "gone").is_none());
    assert!(item_view(&snap, &config, "nobody").is_none());

    // The ranking's response shape (SPEC §5) and explain output.
    let pairs = vec![
        ("signal".to_string(), "view".to_string()),
        ("explain".to_string(), "1".to_string()),
    ];
    let r = rank(&snap, &config, &RankParams::parse(&pairs, &config).unwrap()).unwrap();
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["items"][0]["id"], "a", "the deleted item is never listed");
    assert_eq!(json["items"][0]["rank"], 1);
    assert_eq!(json["items"][0]["score"], 6.0);
    assert_eq!(json["items"][0]["features"]["terms"][0]["velocity"], 6.0);
    assert_eq!(json["items"].as_array().unwrap().len(), 1);
    assert!(json["next_cursor"].is_null());
    assert_eq!(json["as_of"]["lsn"], 0);
    let plain = rank(&snap, &config, &RankParams::parse(&pairs[..1], &config).unwrap()).unwrap();
    assert!(
        serde_json::to_value(&plain).unwrap()["items"][0]
            .get("features")
            .is_none()
    );
}
