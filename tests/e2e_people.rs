//! Users, cohorts and relationships through the real binary: a cohort declared at run time
//! answers exact counts on the next read with its `min_lsn`; attribute changes, deletes,
//! hidden items, blocks and follows show in the rankings; everything survives `kill -9`;
//! bad input is a 4xx naming the problem.

mod common;

use common::Server;
use serde_json::{Value, json};

const T0: u64 = 1_700_000_000_000;

fn counts(s: &Server, item: &str, cohort: &str, lsn: u64) -> (bool, f64, f64) {
    let (status, v) = s.get(&format!("/v1/items/{item}?cohort={cohort}&min_lsn={lsn}"));
    assert_eq!(status, 200, "{v}");
    let c = &v["cohort"];
    (
        c["estimated"].as_bool().expect("estimated"),
        c["signals"]["view"]["counts"]["24h"].as_f64().expect("view count"),
        c["signals"]["like"]["counts"]["24h"].as_f64().expect("like count"),
    )
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn users_cohorts_and_relationships_through_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let s = Server::start(&data, &["--clock", "event"], &[]);
    let people = [
        ("ann", "US", "F"),
        ("bob", "US", "M"),
        ("cat", "EU", "F"),
        ("dan", "EU", "M"),
        ("eve", "US", "F"),
    ];
    for (u, region, gender) in people {
        let (status, v) = s.put(
            &format!("/v1/users/{u}"),
            &json!({"attributes": {"region": region, "gender": gender, "plan": "free"}}),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["attributes"]["region"], region);
    }
    for (n, (i, creator)) in [
        ("song-a", "amy"),
        ("song-b", "ben"),
        ("song-c", "amy"),
        ("song-d", "cy"),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, _) = s.put(
            &format!("/v1/items/{i}"),
            &json!({"creator": creator, "created_at": T0 + n as u64}),
        );
        assert_eq!(status, 200);
    }
    // Who did what: views and likes, at T0.
    let mut signals = Vec::new();
    let plan = [
        ("ann", "song-a", "view", 3),
        ("ann", "song-a", "like", 1),
        ("bob", "song-a", "view", 1),
        ("cat", "song-b", "view", 2),
        ("dan", "song-b", "view", 4),
        ("eve", "song-a", "view", 2),
        ("eve", "song-c", "like", 2),
        ("bob", "song-d", "view", 5),
    ];
    for (n, (u, item, kind, times)) in plan.iter().enumerate() {
        for k in 0..*times {
            signals.push(json!({"type": kind, "item": item, "user": u, "ts": T0, "id": format!("{n}-{k}")}));
        }
    }
    let (status, ack) = s.post("/v1/signals", &Value::Array(signals));
    assert_eq!(status, 200, "{ack}");
    let lsn = ack["lsn"].as_u64().expect("lsn");

    // A single dimension is exact; an undeclared composite is an estimate.
    assert_eq!(counts(&s, "song-a", "region:US", lsn), (false, 6.0, 1.0));
    assert_eq!(counts(&s, "song-b", "gender:M", lsn), (false, 4.0, 0.0));
    let (est, views, _) = counts(&s, "song-a", "region:US,gender:F", lsn);
    assert!(est);
    // US views 6, F views 5, all views 6: 6·5/6.
    assert!((views - 5.0).abs() < 1e-9, "{views}");
    let (status, r) = s.get(&format!("/v1/rankings?cohort=region:US,gender:F&min_lsn={lsn}"));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["estimated"], true, "{r}");

    // Declared at run time: exact at once, from the signals already in the windows.
    let (status, v) = s.put(
        "/v1/cohorts/us-women",
        &json!({"where": {"region": "US", "gender": "F"}}),
    );
    assert_eq!(status, 200, "{v}");
    let lsn = v["lsn"].as_u64().expect("lsn");
    assert_eq!(counts(&s, "song-a", "region:US,gender:F", lsn), (false, 5.0, 1.0));
    assert_eq!(counts(&s, "song-c", "gender:F,region:US", lsn), (false, 0.0, 2.0));
    let (status, r) = s.get(&format!(
        "/v1/rankings?cohort=region:US,gender:F&signals=view:1,like:3&min_lsn={lsn}&explain=1"
    ));
    assert_eq!(status, 200, "{r}");
    assert!(r.get("estimated").is_none(), "{r}");
    assert_eq!(ids(&r), ["song-a", "song-c"]);
    assert_eq!(r["items"][0]["features"]["cohort"]["cohort"], "us-women");
    // A declared cohort answers by its name too; an undeclared name is a 400 naming it.
    let (_, by_name) = s.get(&format!(
        "/v1/rankings?cohort=us-women&signals=view:1,like:3&min_lsn={lsn}&explain=1"
    ));
    assert_eq!(by_name["items"], r["items"], "{by_name}");
    let (status, v) = s.get("/v1/rankings?cohort=no-such-cohort");
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-cohort")),
        "{v}"
    );
    let (status, v) = s.get("/v1/items/song-a?cohort=us-women");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["cohort"]["signals"]["view"]["counts"]["24h"], 5.0, "{v}");
    let (_, list) = s.get(&format!("/v1/cohorts?min_lsn={lsn}"));
    assert_eq!(list["cohorts"][0]["name"], "us-women", "{list}");
    // The schema in force lists the cohorts declared since the start too.
    let (_, schema) = s.get("/v1/schema");
    assert_eq!(schema["cohorts"], list["cohorts"], "{schema}");
    // The list follows min_lsn: a cohort declared, then dropped, read with each write's LSN.
    for k in 0..5 {
        let name = format!("tmp-{k}");
        let (status, v) = s.put(&format!("/v1/cohorts/{name}"), &json!({"where": {"region": "EU"}}));
        assert_eq!(status, 200, "{v}");
        let (status, list) = s.get(&format!("/v1/cohorts?min_lsn={}", v["lsn"]));
        assert_eq!(status, 200, "{list}");
        let names = |l: &Value| -> Vec<String> {
            l["cohorts"]
                .as_array()
                .expect("cohorts")
                .iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        };
        assert!(names(&list).contains(&name), "{name} listed at its LSN: {list}");
        let (status, v) = s.delete(&format!("/v1/cohorts/{name}"));
        assert_eq!(status, 200, "{v}");
        let (_, list) = s.get(&format!("/v1/cohorts?min_lsn={}", v["lsn"]));
        assert!(!names(&list).contains(&name), "{name} gone at the delete's LSN: {list}");
    }
    for (path, code) in [
        ("/v1/cohorts?min_lsn=999999999", "lsn_not_written"),
        ("/v1/cohorts?since=1", "unknown_parameter"),
        ("/v1/items/song-a?colour=red", "unknown_parameter"),
    ] {
        let (status, v) = s.get(path);
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some(code)), "{path}: {v}");
    }
    let (status, v) = s.delete("/v1/cohorts/Bad!");
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_cohort")),
        "a name no cohort can have: {v}"
    );
    let (_, ann) = s.get(&format!("/v1/users/ann?min_lsn={lsn}"));
    assert_eq!(ann["cohorts"], json!(["region:US", "gender:F", "us-women"]), "{ann}");
    assert_eq!(
        (ann["seen"].as_u64(), ann["liked"].as_u64()),
        (Some(1), Some(1)),
        "{ann}"
    );
    assert_eq!(ann["top_creators"][0]["creator"], "amy", "{ann}");

    // An attribute change moves the user's in-window signals to the other cohort.
    let (_, v) = s.put("/v1/users/dan", &json!({"attributes": {"region": "US", "gender": "M"}}));
    let lsn = v["lsn"].as_u64().expect("lsn");
    assert!(v.get("token").is_none(), "a process alone answers no token: {v}");
    assert_eq!(counts(&s, "song-b", "region:US", lsn), (false, 4.0, 0.0));
    assert_eq!(counts(&s, "song-b", "region:EU", lsn), (false, 2.0, 0.0));
    // A deleted user's signals leave every cohort and stay counted globally.
    let (status, v) = s.delete("/v1/users/dan");
    assert_eq!(status, 200, "{v}");
    let lsn = v["lsn"].as_u64().expect("lsn");
    assert_eq!(counts(&s, "song-b", "region:US", lsn), (false, 0.0, 0.0));
    let (_, item) = s.get("/v1/items/song-b");
    assert_eq!(item["signals"]["view"]["total"], 6.0);
    let (status, _) = s.get("/v1/users/dan");
    assert_eq!(status, 404);

    // Hidden items, blocked creators, unseen, following.
    let (status, ack) = s.post(
        "/v1/signals",
        &json!([{"type": "hide", "item": "song-d", "user": "ann", "ts": T0, "id": "h1"}]),
    );
    assert_eq!(status, 200, "{ack}");
    let (_, v) = s.post(
        "/v1/relationships",
        &json!({"user": "ann", "creator": "ben", "kind": "block"}),
    );
    assert_eq!(v["kind"], "block", "{v}");
    let (_, v) = s.post(
        "/v1/relationships",
        &json!({"user": "ann", "creator": "cy", "kind": "follow"}),
    );
    let lsn = v["lsn"].as_u64().expect("lsn");
    let (status, ann) = s.get(&format!("/v1/users/ann?min_lsn={lsn}"));
    assert_eq!(status, 200, "{ann}");
    assert_eq!(
        (&ann["seen"], &ann["liked"], &ann["hidden"]),
        (&json!(2), &json!(1), &json!(1)),
        "the hide marks song-d seen and hidden: {ann}"
    );
    assert_eq!(
        (&ann["follows"], &ann["blocks"]),
        (&json!(["cy"]), &json!(["ben"])),
        "{ann}"
    );
    assert!(ann["as_of"]["lsn"].as_u64().is_some_and(|l| l >= lsn), "{ann}");
    assert!(ann["as_of"]["clock"].as_u64().is_some_and(|c| c >= T0), "{ann}");
    let (_, all) = s.get(&format!("/v1/rankings?profile=top&min_lsn={lsn}"));
    assert_eq!(ids(&all), ["song-a", "song-b", "song-c", "song-d"], "{all}");
    let (_, mine) = s.get(&format!("/v1/rankings?profile=top&user=ann&min_lsn={lsn}"));
    assert_eq!(ids(&mine), ["song-a", "song-c"], "song-d hidden, ben blocked: {mine}");
    let (_, unseen) = s.get(&format!(
        "/v1/rankings?profile=top&user=ann&filter=unseen&min_lsn={lsn}"
    ));
    assert_eq!(ids(&unseen), ["song-c"], "{unseen}");
    let (_, following) = s.get(&format!("/v1/rankings?profile=following&user=bob&min_lsn={lsn}"));
    assert_eq!(ids(&following), Vec::<String>::new());
    let (_, v) = s.post(
        "/v1/relationships",
        &json!({"user": "bob", "creator": "amy", "kind": "follow"}),
    );
    let lsn = v["lsn"].as_u64().expect("lsn");
    let (_, following) = s.get(&format!("/v1/rankings?profile=following&user=bob&min_lsn={lsn}"));
    assert_eq!(ids(&following), ["song-c", "song-a"], "newest first: {following}");

    // Bad input: a 4xx naming the problem, nothing written.
    for (path, body, code, words) in [
        (
            "/v1/users/x",
            json!({"attributes": {"region": 3}}),
            "invalid_body",
            "attributes",
        ),
        ("/v1/users/x", json!({"attrs": {}}), "invalid_body", "attrs"),
        (
            "/v1/cohorts/x",
            json!({"where": {"planet": "mars"}}),
            "invalid_cohort",
            "where.planet",
        ),
        (
            "/v1/cohorts/Bad!",
            json!({"where": {"region": "US"}}),
            "invalid_cohort",
            "cohort name",
        ),
        ("/v1/cohorts/x", json!({"where": {}}), "invalid_cohort", "where"),
        (
            "/v1/cohorts/x",
            json!({"where": {"region": "US,gender:F"}}),
            "invalid_cohort",
            "where.region",
        ),
        (
            "/v1/users/x",
            json!({"attributes": {"region": "US,gender:F"}}),
            "invalid_user",
            "attributes.region",
        ),
    ] {
        let (status, v) = s.put(path, &body);
        assert_eq!(status, 400, "{path} {body}: {v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains(words)), "{v}");
    }
    let (status, v) = s.post(
        "/v1/relationships",
        &json!({"user": "a", "creator": "b", "kind": "like"}),
    );
    assert_eq!(status, 400, "{v}");
    let (status, v) = s.get("/v1/rankings?cohort=planet:mars");
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("unknown_dimension")),
        "{v}"
    );
    let (status, v) = s.get("/v1/rankings?profile=hot&cohort=region:US");
    assert_eq!(status, 400, "{v}");

    // kill -9 and restart: the same answers.
    let paths = [
        "/v1/rankings?cohort=region:US,gender:F&signals=view:1,like:3",
        "/v1/rankings?cohort=region:EU",
        "/v1/rankings?profile=top&user=ann&filter=unseen",
        "/v1/rankings?profile=following&user=bob",
        "/v1/users/ann",
        "/v1/cohorts",
    ];
    let read = |s: &Server, p: &str| {
        let (_, mut v) = s.get(p);
        v.as_object_mut().map(|o| o.remove("as_of"));
        v
    };
    let before: Vec<Value> = paths.iter().map(|p| read(&s, p)).collect();
    s.kill9();
    let s = Server::start(&data, &["--clock", "event"], &[]);
    for (p, want) in paths.iter().zip(&before) {
        assert_eq!(&read(&s, p), want, "{p} after kill -9");
    }
}
