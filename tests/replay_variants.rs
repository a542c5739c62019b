//! Variants in one pass: rankings against decay computed from scratch, one pass equal to
//! separate runs, the measures seeing a changed half-life, and the evaluation schedule.

mod replay_support;

use replay_support::*;
use tidal::replay::{ReplayOptions, ReplayReport, VariantSpec, replay};
use tidal_core::record::Record;

/// `old` is viewed a lot early, `mid` a little later, `new` a little just now: a long
/// half-life ranks `old` first, a short one `new`.
fn scenario(dir: &std::path::Path) -> Vec<(String, u64, f64)> {
    let baseline = with_view_half_lives(&["24h", "1h"]);
    let mut requests = vec![
        vec![Record::Config {
            toml: baseline.to_toml(),
        }],
        vec![put("old", "a"), put("mid", "a"), put("new", "b"), put("zzz", "b")],
    ];
    let mut events = Vec::new();
    let mut add = |requests: &mut Vec<Vec<Record>>, item: &str, n: usize, ts: u64| {
        let sigs: Vec<_> = (0..n).map(|u| view(item, &format!("u{u}"), ts)).collect();
        for _ in 0..n {
            events.push((item.to_string(), ts, 1.0));
        }
        requests.push(vec![Record::Signals(sigs)]);
    };
    add(&mut requests, "old", 8, T0);
    add(&mut requests, "zzz", 1, T0 + 30 * MIN);
    add(&mut requests, "mid", 3, T0 + 2 * HOUR);
    add(&mut requests, "new", 3, T0 + 3 * HOUR);
    add(&mut requests, "zzz", 1, T0 + 5 * HOUR);
    // Small segments: the log spans several files.
    write_wal(dir, &requests, 600);
    events
}

fn variant(name: &str, half_lives: &[&str]) -> VariantSpec {
    VariantSpec {
        name: name.into(),
        config: with_view_half_lives(half_lives),
        origin: format!("{name}.toml"),
    }
}

fn options(dir: &std::path::Path, variants: Vec<VariantSpec>, at: &[u64]) -> ReplayOptions {
    ReplayOptions {
        variants,
        at: at.to_vec(),
        queries: vec![
            "profile=hot&signal=view&limit=2".into(),
            "profile=top&signal=view".into(),
        ],
        ..ReplayOptions::new(dir)
    }
}

fn ranking(report: &ReplayReport, variant: &str, at: u64, query: &str) -> Vec<(String, f64)> {
    report
        .row(variant, at, query)
        .unwrap_or_else(|| panic!("no row {variant} {at} {query}"))
        .items
        .iter()
        .map(|i| (i.id.clone(), i.score))
        .collect()
}

fn assert_close(got: &[(String, f64)], want: &[(String, f64)], what: &str) {
    let ids = |v: &[(String, f64)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(ids(got), ids(want), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g.1 - w.1).abs() <= 1e-9 * w.1.abs().max(1.0), "{what}: {g:?} vs {w:?}");
    }
}

#[test]
fn shorter_half_life_changes_hot_and_the_measures_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let events = scenario(dir.path());
    let t = T0 + 3 * HOUR + MIN;
    let report = replay(&options(dir.path(), vec![variant("short", &["1h", "24h"])], &[t])).unwrap();
    assert_eq!(report.variants[0].origin, "WAL");
    // Reading stops once the last clock is evaluated: the batch at T0 + 5h is never read.
    assert_eq!(report.events, 15);
    let hot = "profile=hot&signal=view&limit=2";
    for (name, h) in [("baseline", 24 * HOUR), ("short", HOUR)] {
        let want: Vec<_> = decay_scores(&events, h, t).into_iter().take(2).collect();
        assert_close(&ranking(&report, name, t, hot), &want, name);
    }
    let base = report.row("baseline", t, hot).unwrap();
    let vs = |r: &tidal::replay::ResultRow| r.vs_baseline.clone().expect("compared");
    assert_eq!(vs(base).overlap_at_k, 1.0);
    assert_eq!(vs(base).rbo, 1.0);
    let short = report.row("short", t, hot).unwrap();
    let base_ids: Vec<&str> = base.items.iter().map(|i| i.id.as_str()).collect();
    let short_ids: Vec<&str> = short.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(base_ids, ["old", "new"]);
    assert_eq!(short_ids, ["new", "mid"]);
    assert_eq!(vs(short).overlap_at_k, 0.5);
    assert!(vs(short).rbo < 1.0 && vs(short).rbo > 0.0);
    assert!(vs(short).kendall_tau.unwrap() < 0.0);
    assert_eq!(short.entering, ["mid"]);
    assert_eq!(short.leaving, ["old"]);
    // `top` does not depend on half-lives: the variant agrees with the baseline.
    let top = report.row("short", t, "profile=top&signal=view").unwrap();
    assert_eq!(vs(top).rbo, 1.0);
    assert_eq!(vs(top).kendall_tau, Some(1.0));
}

#[test]
fn two_variants_in_one_pass_equal_separate_runs() {
    let dir = tempfile::tempdir().unwrap();
    scenario(dir.path());
    let times = [T0 + 10 * MIN, T0 + 2 * HOUR + 30 * MIN, T0 + 6 * HOUR];
    let (a, b) = (variant("short", &["1h"]), variant("week", &["7d", "30m"]));
    let both = replay(&options(dir.path(), vec![a.clone(), b.clone()], &times)).unwrap();
    let only_a = replay(&options(dir.path(), vec![a], &times)).unwrap();
    let only_b = replay(&options(dir.path(), vec![b], &times)).unwrap();
    assert_eq!(both.times, times);
    for &t in &times {
        for q in &both.queries {
            for (name, alone) in [("baseline", &only_a), ("short", &only_a), ("week", &only_b)] {
                assert_eq!(ranking(&both, name, t, q), ranking(alone, name, t, q), "{name} {t} {q}");
                let (x, y) = (both.row(name, t, q).unwrap(), alone.row(name, t, q).unwrap());
                assert_eq!(x.vs_baseline, y.vs_baseline);
                assert_eq!(x.as_of.clock, t);
            }
        }
    }
}

#[test]
fn periodic_evaluation_and_until() {
    let dir = tempfile::tempdir().unwrap();
    let events = scenario(dir.path());
    let opts = ReplayOptions {
        every: Some(HOUR),
        from: Some(T0),
        until: Some(T0 + 4 * HOUR),
        ..options(dir.path(), vec![], &[])
    };
    let report = replay(&opts).unwrap();
    let want: Vec<u64> = (0..=4).map(|k| T0 + k * HOUR).collect();
    assert_eq!(report.times, want);
    // The last batch (after --until) is not applied.
    assert_eq!(report.events, 15);
    assert_eq!(report.last_clock, Some(T0 + 3 * HOUR));
    for &t in &want {
        let top: Vec<_> = decay_scores(&events, 24 * HOUR, t).into_iter().take(2).collect();
        assert_close(
            &ranking(&report, "baseline", t, "profile=hot&signal=view&limit=2"),
            &top,
            "hot",
        );
    }
    // With no clock given, the end of the log.
    let end = replay(&options(dir.path(), vec![], &[])).unwrap();
    assert_eq!(end.times, [T0 + 5 * HOUR]);
    assert_eq!(end.events, 16);
}

/// A query one variant's schema cannot answer is that variant's error in each of its rows
/// (the baseline's are answered and compared with nothing); one that no variant can answer
/// is refused before the replay starts.
#[test]
fn a_query_a_variant_schema_cannot_answer_is_its_rows_error() {
    let dir = tempfile::tempdir().unwrap();
    let events = scenario(dir.path());
    let query = "profile=hot&signal=view&half_life=24h&limit=2";
    let mut opts = options(dir.path(), vec![variant("short", &["1h"])], &[T0 + 4 * HOUR]);
    opts.queries = vec![query.into()];
    let report = replay(&opts).unwrap();
    let t = T0 + 4 * HOUR;
    let top: Vec<_> = decay_scores(&events, 24 * HOUR, t).into_iter().take(2).collect();
    assert_close(&ranking(&report, "baseline", t, query), &top, "the baseline answers");
    let row = report.row("short", t, query).expect("the variant's row");
    assert!(row.items.is_empty() && row.vs_baseline.is_none(), "{row:?}");
    assert!(row.error.as_deref().is_some_and(|e| e.contains("half_life")), "{row:?}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("short") && w.contains("not answered")),
        "{:?}",
        report.warnings
    );
    // Neither schema declares a 2h half-life.
    opts.queries = vec!["profile=hot&signal=view&half_life=2h".into()];
    let e = replay(&opts).unwrap_err().to_string();
    assert!(
        e.contains("short") && e.contains("baseline") && e.contains("half_life"),
        "{e}"
    );
}

/// Two `for_you` weightings of one profile, compared in one pass: similarity alone lists the
/// unpopular item next to what the user liked, popularity alone the popular one.
#[test]
fn for_you_weightings_compare_in_one_pass() {
    use tidal_core::config::ProfileDef;
    use tidal_core::record::{Embedding, ItemMeta};
    let dir = tempfile::tempdir().unwrap();
    let weighting = |w_sim: f64, w_pop: f64| {
        let mut c = with_view_half_lives(&["24h"]);
        c.personalization.exact_search = true;
        c.profiles.push(ProfileDef {
            name: "fy".into(),
            base: "for_you".into(),
            signals: Default::default(),
            window: None,
            half_life: None,
            max_per_creator: None,
            w_sim: Some(w_sim),
            w_pop: Some(w_pop),
            w_aff: None,
            candidates: None,
            exploration: Some(0.0),
            w_text: None,
            w_profile: None,
            ..ProfileDef::default()
        });
        c.validate().expect("valid");
        c
    };
    let embedded = |id: &str, e: [f32; 2]| Record::ItemPut {
        id: id.into(),
        meta: ItemMeta {
            embedding: Some(Embedding(e.to_vec())),
            ..ItemMeta::default()
        },
    };
    let baseline = weighting(0.5, 0.5);
    let mut requests = vec![
        vec![Record::Config {
            toml: baseline.to_toml(),
        }],
        vec![
            embedded("liked", [1.0, 0.0]),
            embedded("near", [0.9, 0.1]),
            embedded("popular", [0.0, 1.0]),
        ],
        vec![Record::Signals(vec![signal("like", "liked", "u1", T0, 1.0)])],
    ];
    for u in 0..5 {
        requests.push(vec![Record::Signals(vec![view("popular", &format!("v{u}"), T0)])]);
    }
    requests.push(vec![Record::Signals(vec![view("near", "v0", T0)])]);
    write_wal(dir.path(), &requests, 1 << 20);
    let spec = |name: &str, c: tidal::Config| VariantSpec {
        name: name.into(),
        config: c,
        origin: format!("{name}.toml"),
    };
    let q = "profile=fy&user=u1&limit=2";
    let report = replay(&ReplayOptions {
        variants: vec![
            spec("similar", weighting(1.0, 0.0)),
            spec("popular", weighting(0.0, 1.0)),
        ],
        at: vec![T0 + MIN],
        queries: vec![q.into()],
        ..ReplayOptions::new(dir.path())
    })
    .unwrap();
    let ids = |v: &str| -> Vec<String> { ranking(&report, v, T0 + MIN, q).into_iter().map(|(id, _)| id).collect() };
    assert_eq!(ids("similar"), ["near", "popular"], "cosine first");
    assert_eq!(ids("popular"), ["popular", "near"], "popularity first");
    assert!(
        !ids("baseline").contains(&"liked".to_string()),
        "what u1 saw is not listed"
    );
}

/// A query naming a cohort declared midway cannot be answered before the declaration, as
/// the live server answers 400 then: that clock's row says why, the replay goes on, and the
/// clocks after it rank the cohort's items.
#[test]
fn a_query_unanswerable_at_one_clock_is_a_row_error_not_a_failed_replay() {
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    let config = with_view_half_lives(&["24h"]);
    let mut user = BTreeMap::new();
    user.insert("region".to_string(), "US".to_string());
    write_wal(
        dir.path(),
        &[
            vec![Record::Config { toml: config.to_toml() }],
            vec![Record::UserPut {
                id: "u1".into(),
                attributes: user.clone(),
            }],
            vec![Record::Signals(vec![view("a", "u1", T0)])],
            vec![Record::Signals(vec![view("b", "u1", T0 + HOUR)])],
            vec![Record::CohortPut {
                name: "us".into(),
                rule: user,
            }],
            vec![Record::Signals(vec![view("c", "u1", T0 + 2 * HOUR)])],
        ],
        1 << 20,
    );
    let cohort = "profile=trending&signal=view&window=24h&cohort=us".to_string();
    let all = "profile=trending&signal=view&window=24h".to_string();
    let opts = ReplayOptions {
        at: vec![T0 + 30 * MIN, T0 + 3 * HOUR],
        queries: vec![cohort.clone(), all.clone()],
        ..ReplayOptions::new(dir.path())
    };
    let report = replay(&opts).expect("the replay runs to its end");
    let early = report.row("baseline", T0 + 30 * MIN, &cohort).expect("early row");
    let e = early.error.as_deref().expect("the early row says why");
    assert!(e.contains("no declared cohort \"us\""), "{e}");
    assert!(early.items.is_empty());
    assert!(early.vs_baseline.is_none(), "nothing to compare");
    assert!(
        report
            .row("baseline", T0 + 30 * MIN, &all)
            .expect("row")
            .error
            .is_none()
    );
    assert_eq!(ranking(&report, "baseline", T0 + 30 * MIN, &all).len(), 1);
    let late = report.row("baseline", T0 + 3 * HOUR, &cohort).expect("late row");
    assert!(late.error.is_none(), "{:?}", late.error);
    let ids: Vec<&str> = late.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("not answered at 1 of 2 clocks")),
        "{:?}",
        report.warnings
    );
    // The JSON report carries the error on its row and leaves it out of answered ones.
    let json = serde_json::to_value(&report).unwrap();
    let rows = json["results"].as_array().unwrap();
    assert_eq!(rows.iter().filter(|r| r.get("error").is_some()).count(), 1);
}
