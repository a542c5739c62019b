//! `for_you` through the real binary: a user who likes three piano videos gets the other
//! piano videos first, with `explain` saying why; a re-embedded item moves; a hidden item
//! leaves; the preference vector is readable; a wrong embedding dimension is a 400 naming
//! it; `q=` ranks by BM25 alone or searches within cohort trending; everything survives
//! `kill -9`.

mod common;

use common::Server;
use serde_json::{Value, json};

const T0: u64 = 1_700_000_000_000;

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn for_you_through_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let s = Server::start(&data, &["--clock", "event"], &[]);
    // Piano videos point one way, guitar another, cooking a third (a little away from piano).
    let catalogue: Vec<(String, &str, [f32; 4])> = (0..5)
        .map(|i| (format!("piano-{i}"), "keys", [1.0, 0.1 * i as f32, 0.0, 0.05]))
        .chain((0..3).map(|i| (format!("guitar-{i}"), "strings", [0.0, 1.0, 0.1 * i as f32, 0.0])))
        .chain((0..6).map(|i| (format!("cooking-{i}"), "chef", [-0.2, 0.0, 1.0, 0.1 * i as f32])))
        .collect();
    for (id, creator, e) in &catalogue {
        let (status, v) = s.put(
            &format!("/v1/items/{id}"),
            &json!({"creator": creator, "title": id, "created_at": T0 - 30 * 86_400_000, "embedding": e}),
        );
        assert_eq!(status, 200, "{v}");
    }
    // Cooking is what everybody watches; two of the other piano videos have a few views.
    let mut signals = Vec::new();
    for i in 0..6 {
        for u in 0..(10 - i) {
            signals.push(json!({"type": "view", "item": format!("cooking-{i}"), "user": format!("fan{u}"), "ts": T0}));
        }
    }
    for item in ["piano-3", "piano-4"] {
        signals.push(json!({"type": "view", "item": item, "user": "fan0", "ts": T0}));
    }
    // Pia likes three piano videos.
    for item in ["piano-0", "piano-1", "piano-2"] {
        signals.push(json!({"type": "like", "item": item, "user": "pia", "ts": T0}));
    }
    let (status, ack) = s.post("/v1/signals", &Value::Array(signals));
    assert_eq!(status, 200, "{ack}");
    let lsn = ack["lsn"].as_u64().expect("lsn");

    let (status, r) = s.get(&format!(
        "/v1/rankings?profile=for_you&user=pia&explain=1&limit=5&min_lsn={lsn}"
    ));
    assert_eq!(status, 200, "{r}");
    let listed = ids(&r);
    assert_eq!(&listed[..2], ["piano-3", "piano-4"], "piano first: {r}");
    assert!(
        !listed
            .iter()
            .any(|i| ["piano-0", "piano-1", "piano-2"].contains(&i.as_str())),
        "what she already saw is not listed: {r}"
    );
    let why = &r["items"][0]["features"];
    assert!(why["sim"].as_f64().expect("sim") > 0.95, "{why}");
    assert!(
        why["terms"]["sim"].as_f64().expect("sim term") > why["terms"]["pop"].as_f64().expect("pop term"),
        "{why}"
    );
    assert!(
        why["sources"].as_array().expect("sources").contains(&json!("nearest")),
        "{why}"
    );
    let cooking = r["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["id"] == "cooking-0")
        .expect("the most popular item is a candidate too");
    assert!(cooking["features"]["sim"].as_f64().expect("sim") < 0.0, "{cooking}");
    assert_eq!(cooking["features"]["pop"], cooking["features"]["max_pop"], "{cooking}");

    // Her vector points at piano.
    let (status, u) = s.get("/v1/users/pia?vector=1");
    assert_eq!(status, 200, "{u}");
    let v: Vec<f64> = u["vector"]
        .as_array()
        .expect("vector")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    assert_eq!(v.len(), 4);
    assert!(
        v[0] > 2.5 && v[0] > 5.0 * v[1].abs() && v[0] > 5.0 * v[2].abs(),
        "{v:?}"
    );
    assert_eq!(u["pulls"], 3, "{u}");

    // A user with no history is ranked by popularity.
    let (status, r) = s.get(&format!(
        "/v1/rankings?profile=for_you&user=newcomer&explain=1&limit=3&min_lsn={lsn}"
    ));
    assert_eq!(status, 200, "{r}");
    assert_eq!(ids(&r), ["cooking-0", "cooking-1", "cooking-2"], "{r}");
    assert_eq!(r["items"][0]["features"]["vector"], false, "{r}");

    // Re-embedded towards guitar, piano-3 falls behind piano-4 (her vector follows too).
    let (status, v) = s.put(
        "/v1/items/piano-3",
        &json!({"creator": "keys", "title": "piano-3", "created_at": T0 - 30 * 86_400_000, "embedding": [0.0, 1.0, 0.0, 0.0]}),
    );
    assert_eq!(status, 200, "{v}");
    let lsn = v["lsn"].as_u64().expect("lsn");
    let (_, r) = s.get(&format!("/v1/rankings?profile=for_you&user=pia&limit=5&min_lsn={lsn}"));
    let listed = ids(&r);
    assert_eq!(listed[0], "piano-4", "{r}");
    // Hidden, piano-4 leaves her ranking.
    let (status, ack) = s.post(
        "/v1/signals",
        &json!([{"type": "hide", "item": "piano-4", "user": "pia", "ts": T0}]),
    );
    assert_eq!(status, 200, "{ack}");
    let lsn = ack["lsn"].as_u64().expect("lsn");
    let (_, r) = s.get(&format!(
        "/v1/rankings?profile=for_you&user=pia&limit=20&filter=all&min_lsn={lsn}"
    ));
    assert!(!ids(&r).contains(&"piano-4".to_string()), "{r}");
    assert!(
        ids(&r).contains(&"piano-0".to_string()),
        "filter=all lists what she saw: {r}"
    );

    // following, newest first (all created at once: by id), or by hot at a half-life.
    let (status, v) = s.post(
        "/v1/relationships",
        &json!({"user": "pia", "creator": "keys", "kind": "follow"}),
    );
    assert_eq!(status, 200, "{v}");
    let lsn = v["lsn"].as_u64().expect("lsn");
    let (_, r) = s.get(&format!("/v1/rankings?profile=following&user=pia&min_lsn={lsn}"));
    assert_eq!(ids(&r), ["piano-0", "piano-1", "piano-2", "piano-3"], "{r}");
    let scored = s.ranking(&format!("profile=following&user=pia&half_life=24h&min_lsn={lsn}"));
    assert_eq!(
        scored,
        [
            ("piano-0".to_string(), 3.0),
            ("piano-1".to_string(), 3.0),
            ("piano-2".to_string(), 3.0),
            ("piano-3".to_string(), 1.0)
        ],
        "likes weigh 3, views 1, no decay at the clock of the signals"
    );

    // Text: q= alone ranks by BM25; with a profile and a cohort it searches within cohort
    // trending — every result matches and is trending among that cohort.
    for (u, region) in [("us1", "US"), ("us2", "US"), ("eu1", "EU")] {
        let (status, v) = s.put(&format!("/v1/users/{u}"), &json!({"attributes": {"region": region}}));
        assert_eq!(status, 200, "{v}");
    }
    for (id, title, text) in [
        ("v-piano-basics", "Piano basics", "scales and chords on the piano"),
        ("v-piano-jazz", "Jazz piano", "swing"),
        ("v-piano-eu", "Piano recital", "Vienna"),
        ("v-guitar", "Guitar basics", "no keys here"),
    ] {
        let (status, v) = s.put(
            &format!("/v1/items/{id}"),
            &json!({"creator": "tutor", "title": title, "text": text, "created_at": T0}),
        );
        assert_eq!(status, 200, "{v}");
    }
    let mut signals = Vec::new();
    for (u, item, n) in [
        ("us1", "v-piano-jazz", 3),
        ("us2", "v-piano-basics", 1),
        ("us1", "v-guitar", 5),
        ("eu1", "v-piano-eu", 9),
    ] {
        for k in 0..n {
            signals.push(json!({"type": "view", "item": item, "user": u, "ts": T0, "id": format!("{u}-{item}-{k}")}));
        }
    }
    let (status, ack) = s.post("/v1/signals", &Value::Array(signals));
    assert_eq!(status, 200, "{ack}");
    let lsn = ack["lsn"].as_u64().expect("lsn");
    let (status, r) = s.get(&format!("/v1/rankings?q=piano&limit=10&min_lsn={lsn}"));
    assert_eq!(status, 200, "{r}");
    let listed = ids(&r);
    assert_eq!(listed[0], "v-piano-basics", "two mentions of piano rank first: {r}");
    for want in ["v-piano-jazz", "v-piano-eu"] {
        assert!(listed.contains(&want.to_string()), "{want} matches: {r}");
    }
    assert!(!listed.contains(&"v-guitar".to_string()), "{r}");
    let (status, r) = s.get(&format!(
        "/v1/rankings?q=piano&profile=trending&cohort=region:US&explain=1&min_lsn={lsn}"
    ));
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        ids(&r),
        ["v-piano-jazz", "v-piano-basics"],
        "matching and trending among US users: {r}"
    );
    let top = &r["items"][0]["features"];
    assert_eq!(top["terms"]["profile"], 0.5, "{top}");
    assert!(top["bm25"].as_f64().expect("bm25") > 0.0, "{top}");
    let (status, r) = s.get(&format!("/v1/rankings?q=piano+basics&min_lsn={lsn}"));
    assert_eq!(
        (status, ids(&r)),
        (200, vec!["v-piano-basics".to_string()]),
        "every term: {r}"
    );
    let (status, v) = s.get("/v1/rankings?q=");
    assert_eq!(status, 400, "{v}");

    // A put answers the embedding as a read shows it (an f32's shortest decimal).
    let put = json!({"embedding": [0.9, 0.1, 0.0, 0.3]});
    let (status, v) = s.put("/v1/items/nines", &put);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["embedding"], put["embedding"], "{v}");
    let (_, got) = s.get(&format!("/v1/items/nines?min_lsn={}", v["lsn"]));
    assert_eq!(got["embedding"], put["embedding"], "{got}");

    // Bad input is a 400 naming the problem.
    let (status, v) = s.put("/v1/items/odd", &json!({"embedding": [1.0, 2.0, 3.0]}));
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_item")),
        "{v}"
    );
    assert!(v["error"]["message"].as_str().expect("message").contains("4"), "{v}");
    let (status, v) = s.put("/v1/items/zero", &json!({"embedding": [0.0, 0.0, 0.0, 0.0]}));
    assert_eq!(status, 400, "{v}");
    let (status, v) = s.get("/v1/rankings?profile=for_you");
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().expect("message").contains("needs user="),
        "{v}"
    );
    let (status, v) = s.get("/v1/users/pia?vector=maybe");
    assert_eq!(status, 400, "{v}");

    // kill -9 and restart: the same answers, and the dimension is still fixed.
    let paths = [
        "/v1/rankings?q=piano&profile=trending&cohort=region:US",
        "/v1/rankings?profile=for_you&user=pia&explain=1",
        "/v1/rankings?profile=for_you&user=newcomer",
        "/v1/users/pia?vector=1",
    ];
    // Reads name the last write's LSN: after the restart they also wait for the
    // nearest-item index, rebuilt in the background, to hold what they read.
    let read = |s: &Server, p: &str| {
        let p = if p.starts_with("/v1/rankings") {
            format!("{p}&min_lsn={lsn}")
        } else {
            p.to_string()
        };
        let (_, mut v) = s.get(&p);
        v.as_object_mut().map(|o| o.remove("as_of"));
        v
    };
    let before: Vec<Value> = paths.iter().map(|p| read(&s, p)).collect();
    s.kill9();
    let s = Server::start(&data, &["--clock", "event"], &[]);
    for (p, want) in paths.iter().zip(&before) {
        assert_eq!(&read(&s, p), want, "{p} after kill -9");
    }
    let (status, v) = s.put("/v1/items/odd", &json!({"embedding": [1.0, 2.0, 3.0]}));
    assert_eq!(status, 400, "the dimension is still 4 after the restart: {v}");
}
