//! Bad input through the real binary: each malformed request is a 4xx in SPEC §5's error
//! shape naming the problem, a bad batch writes nothing, and the server keeps serving. Also
//! authentication, the loopback rule, and configuration errors at start.

mod common;

use common::{Server, tidal};
use serde_json::{Value, json};

fn assert_error(status: u16, v: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{v}");
    assert_eq!(v["error"]["code"], want_code, "{v}");
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| m.len() > 10),
        "message: {v}"
    );
}

#[test]
fn malformed_requests_get_clear_4xx_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &[], &[]);
    let (_, h) = s.get("/healthz");
    let lsn0 = h["lsn"].as_u64().expect("lsn");

    let long = "x".repeat(300);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"item": "a"}), "invalid_signal"),
        (json!({"type": "view"}), "invalid_signal"),
        (json!({"type": "nope", "item": "a"}), "unknown_signal_type"),
        (json!({"type": "view", "item": ""}), "invalid_signal"),
        (json!({"type": "view", "item": long}), "invalid_signal"),
        (json!({"type": "view", "item": "a\u{7}b"}), "invalid_signal"),
        (
            json!({"type": "view", "item": "a", "weight": "heavy"}),
            "invalid_signal",
        ),
        (json!({"type": "view", "item": "a", "weight": 1e9}), "invalid_signal"),
        (json!({"type": "view", "item": "a", "ts": -5}), "invalid_signal"),
        (json!({"type": "view", "item": "a", "ts": 1.5}), "invalid_signal"),
        (
            json!({"type": "view", "item": "a", "ts": 8_000_000_000_000u64}),
            "ts_in_future",
        ),
        (
            json!({"type": "view", "item": "a", "ts": 99_999_999_999_999u64}),
            "time_out_of_range",
        ),
        (
            json!({"type": "view", "item": "a", "ts": 18_446_744_073_709_551_000u64}),
            "time_out_of_range",
        ),
        (json!({"type": "view", "item": "a", "colour": "red"}), "invalid_signal"),
        (json!(42), "invalid_signal"),
        (json!([]), "empty_body"),
    ];
    for (body, code) in cases {
        let (st, v) = s.post("/v1/signals", &body);
        assert_error(st, &v, 400, code);
    }
    let (st, v) = s.post_raw("/v1/signals", "{not json", "application/json");
    assert_error(st, &v, 400, "invalid_json");

    // All-or-nothing: the third record is bad, nothing of the batch is written.
    let batch = json!([{"type": "view", "item": "ok1"}, {"type": "view", "item": "ok2"}, {"type": "view"}]);
    let (st, v) = s.post("/v1/signals", &batch);
    assert_error(st, &v, 400, "invalid_signal");
    assert_eq!(v["error"]["index"], 2, "{v}");
    let nd = "{\"type\":\"view\",\"item\":\"n1\"}\n{\"type\":\"bogus\",\"item\":\"n2\"}\n";
    let (st, v) = s.post_raw("/v1/signals", nd, "application/x-ndjson");
    assert_error(st, &v, 400, "unknown_signal_type");
    assert_eq!(v["error"]["index"], 1, "{v}");
    let (_, h) = s.get("/healthz");
    assert_eq!(h["lsn"].as_u64(), Some(lsn0), "a rejected request wrote something");
    for id in ["ok1", "ok2", "n1"] {
        let (st, _) = s.get(&format!("/v1/items/{id}"));
        assert_eq!(st, 404, "{id} was written by a rejected batch");
    }

    // Items.
    let (st, v) = s.put("/v1/items/a", &json!({"tags": "notalist"}));
    assert_error(st, &v, 400, "invalid_item");
    let (st, v) = s.put("/v1/items/a", &json!({"embedding": [1.0, "x"]}));
    assert_error(st, &v, 400, "invalid_item");
    let (st, v) = s.put("/v1/items/a", &json!({"embedding": vec![0.5; 5000]}));
    assert_error(st, &v, 400, "invalid_item");
    let (st, v) = s.put("/v1/items/a", &json!({"created_at": "yesterday"}));
    assert_error(st, &v, 400, "invalid_item");
    // Tags are bounded in number (each is a posting list of its own).
    let tags: Vec<String> = (0..257).map(|i| format!("t{i}")).collect();
    let (st, v) = s.put("/v1/items/a", &json!({ "tags": tags }));
    assert_error(st, &v, 400, "invalid_item");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("256")), "{v}");
    // A GET body can be put back, but not under another item's id.
    let (st, v) = s.put("/v1/items/a", &json!({"id": "other", "title": "x"}));
    assert_error(st, &v, 400, "invalid_item");
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| m.contains("\"other\"")),
        "{v}"
    );
    // A category is a filter's key: an empty one could never be asked for.
    for (category, words) in [("", "category must not be empty"), ("a\u{1}b", "category")] {
        let (st, v) = s.put("/v1/items/a", &json!({ "category": category }));
        assert_error(st, &v, 400, "invalid_item");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains(words)), "{v}");
    }
    let (st, _) = s.get("/v1/items/a");
    assert_eq!(st, 404, "a refused item was written");
    // A weight far out of bounds is shown in exponent form, not as hundreds of digits.
    let (st, v) = s.post("/v1/signals", &json!({"type": "view", "item": "a", "weight": 1e300}));
    assert_error(st, &v, 400, "invalid_signal");
    let m = v["error"]["message"].as_str().unwrap_or_default();
    assert!(m.contains("weight 1e300 is outside") && m.len() < 200, "{m}");

    // Rankings parameters.
    for (q, code) in [
        ("profile=nope", ""),
        ("limit=5000", ""),
        ("limit=abc", ""),
        ("window=3h", ""),
        ("signals=view:x", ""),
        // A weight that makes scores infinite (or inf − inf, NaN) ranks nothing sensibly.
        ("signals=view:1e308", ""),
        ("profile=rising&signals=view:1e7,like:1", ""),
        ("signal=nope", ""),
        ("half_life=2h&profile=hot", ""),
        ("cursor=%%%", ""),
        ("min_lsn=abc", "invalid_parameter"),
    ] {
        let (st, v) = s.get(&format!("/v1/rankings?{q}"));
        assert_eq!(st, 400, "{q}: {v}");
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{q}: {v}"
        );
        if !code.is_empty() {
            assert_eq!(v["error"]["code"], code, "{q}");
        }
    }
    // Text whose parentheses nest deeper than the parser may recurse (a thousand levels
    // overflowed the read thread's stack and took the process down).
    for q in [
        "(".repeat(17) + "piano",
        "(".repeat(1000) + "piano",
        "NOT%20".repeat(17) + "piano",
    ] {
        let (st, v) = s.get(&format!("/v1/rankings?q={q}"));
        assert_eq!(st, 400, "{v}");
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| m.contains("nested")),
            "{v}"
        );
    }
    let (st, v) = s.get("/v1/rankings?q=a:(%5E");
    assert_eq!(st, 200, "{v}");
    let (st, v) = s.get("/v1/rankings?min_lsn=999999999");
    assert_error(st, &v, 400, "lsn_not_written");
    // A parameter given twice: which one was meant cannot be told, on every read.
    for path in [
        "/v1/rankings?limit=5&limit=7",
        "/v1/rankings?profile=trending&profile=hot",
        "/v1/items/fine?min_lsn=1&min_lsn=2",
        "/v1/users/u1?vector=1&vector=0",
    ] {
        let (st, v) = s.get(path);
        assert_error(st, &v, 400, "repeated_parameter");
        let named = path
            .split(['?', '&'])
            .nth(1)
            .and_then(|p| p.split('=').next())
            .unwrap_or_default();
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| m.contains(named)),
            "{path}: the message names {named}: {v}"
        );
    }

    // Unknown endpoint, wrong method, clock in wall mode, too large a body.
    let (st, v) = s.get("/v1/nothing");
    assert_error(st, &v, 404, "not_found");
    let (st, v) = s.delete("/v1/rankings");
    assert_error(st, &v, 405, "method_not_allowed");
    let (st, v) = s.post("/v1/clock", &json!({"advance_to": 5}));
    assert_error(st, &v, 400, "wall_clock");
    let (st, v) = s.get("/v1/items/never-seen");
    assert_error(st, &v, 404, "not_found");
    // A body over the 16 MiB limit: the server answers 413 from the declared length at once.
    let (st, text) = raw_request(
        &s,
        "POST /v1/signals HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\n\r\n[",
    );
    assert_eq!(st, 413, "{text}");
    assert!(text.contains("body_too_large"), "{text}");

    // Still serving, and good writes still work.
    let (st, v) = s.post("/v1/signals", &json!({"type": "view", "item": "fine"}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["accepted"], 1);
}

/// Sends raw bytes and reads the status line and body of the answer.
fn raw_request(s: &Server, head: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(head.as_bytes()).expect("write");
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&got).contains("}}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    (status, text)
}

#[test]
fn duplicates_are_counted_not_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &[], &[]);
    let sig = json!({"type": "like", "item": "d1", "user": "u", "id": "evt-1"});
    let (_, v) = s.post("/v1/signals", &sig);
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    let (_, v) = s.post(
        "/v1/signals",
        &json!([sig, {"type": "like", "item": "d1", "user": "u", "id": "evt-2"}]),
    );
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let lsn = v["lsn"].as_u64().expect("lsn");
    let (_, item) = s.get(&format!("/v1/items/d1?min_lsn={lsn}"));
    assert_eq!(item["signals"]["like"]["total"].as_f64(), Some(2.0), "{item}");
}

#[test]
fn writes_need_the_token_when_one_is_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &[], &[("TIDAL_AUTH_TOKEN", "s3cret")]);
    let (st, v) = s.post("/v1/signals", &json!({"type": "view", "item": "a"}));
    assert_error(st, &v, 401, "unauthorized");
    let r = ureq::post(&s.url("/v1/signals"))
        .set("Authorization", "Bearer wrong")
        .send_string(&json!({"type": "view", "item": "a"}).to_string());
    assert!(matches!(r, Err(ureq::Error::Status(401, _))));
    let r = ureq::post(&s.url("/v1/signals"))
        .set("Authorization", "Bearer s3cret")
        .send_string(&json!({"type": "view", "item": "a"}).to_string())
        .expect("authorized write");
    assert_eq!(r.status(), 200);
    let (st, _) = s.get("/v1/rankings");
    assert_eq!(st, 200, "reads need no token");
}

#[test]
fn refuses_a_public_address_without_a_token_and_bad_config_names_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tidal()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("TIDAL_AUTH_TOKEN")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token") && err.contains("0.0.0.0"), "{err}");

    // A bad field of the configuration, a declared profile's too, fails the start naming it.
    let refused = |toml: &str| -> String {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, toml).expect("write");
        let out = tidal()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("run");
        assert!(!out.status.success(), "{toml}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused("[[signals]]\nname = \"view\"\nwindows = [{ size = \"1h\", granularity = \"7m\" }]\n");
    assert!(err.contains("signals[0].windows[0].granularity"), "{err}");
    let err = refused("[[profiles]]\nname = \"mine\"\nbase = \"for_you\"\nexploration = 1.5\n");
    assert!(err.contains("profiles[0].exploration"), "{err}");

    let out = tidal().args(["config", "default"]).output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = tidal_core::config::Config::parse(&text).expect("the printed default parses");
    assert_eq!(parsed.signals.len(), 6);
}
