//! The router without a socket (`app(state).oneshot(..)`): authentication, body limits,
//! 404/405, timeouts, the error shape, overload answers, health, the OpenAPI document, and the
//! hardening defects seen through HTTP (event-clock jumps, delete then read-your-writes).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use tidal_core::{ClockMode, Config};
use tidal_serving::Tidal;
use tidal_serving::http::{AppState, app, openapi};

struct Api {
    tidal: Arc<Tidal>,
    state: AppState,
    _dir: tempfile::TempDir,
}

fn api(tune: impl FnOnce(&mut Config)) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default_filled();
    config.engine.data_dir = dir.path().display().to_string();
    config.engine.durability = tidal_core::Durability::Buffer;
    tune(&mut config);
    let tidal = Arc::new(Tidal::open(config).unwrap());
    let state = AppState::new(tidal.clone()).unwrap();
    Api {
        tidal,
        state,
        _dir: dir,
    }
}

impl Api {
    async fn call(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let resp = app(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let v =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, headers, v)
    }

    async fn send(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = Request::builder().method(method).uri(uri);
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        let (s, _, v) = self.call(req.unwrap()).await;
        (s, v)
    }
}

fn assert_error(status: StatusCode, v: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.len() > 10), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_guards_writes_and_not_reads() {
    let a = api(|c| c.server.auth_token = Some("s3cret".into()));
    let body = json!({"type": "view", "item": "a"}).to_string();
    let post = |auth: Option<&str>| {
        let mut r = Request::post("/v1/signals").header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = auth {
            r = r.header(header::AUTHORIZATION, a);
        }
        r.body(Body::from(body.clone())).unwrap()
    };
    let (s, h, v) = a.call(post(None)).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer");
    let (s, _, v) = a.call(post(Some("Bearer wrong"))).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, _, v) = a.call(post(Some("Bearer s3cret"))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The scheme in any case (RFC 9110); the token exactly.
    let (s, _, v) = a.call(post(Some("bearer s3cret"))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, v) = a.call(post(Some("Bearer S3CRET"))).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, _, v) = a.call(post(Some("Basic s3cret"))).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
    let (s, v) = a.send("GET", "/v1/rankings", None).await;
    assert_eq!(s, StatusCode::OK, "reads need no token: {v}");
    let (s, v) = a.send("DELETE", "/v1/items/a", None).await;
    assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_and_record_limits_are_413() {
    let a = api(|c| {
        c.server.body_limit_bytes = 1024;
        c.server.max_records_per_request = 3;
    });
    let big = "x".repeat(2000);
    let req = Request::post("/v1/signals")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big))
        .unwrap();
    let (s, _, v) = a.call(req).await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let four = json!([{"type": "view", "item": "a"}, {"type": "view", "item": "b"}, {"type": "view", "item": "c"}, {"type": "view", "item": "d"}]);
    let (s, v) = a.send("POST", "/v1/signals", Some(four)).await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "too_many_records");
    let nd = "{\"type\":\"view\",\"item\":\"a\"}\n".repeat(4);
    let req = Request::post("/v1/signals")
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from(nd))
        .unwrap();
    let (s, _, v) = a.call(req).await;
    assert_error(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "too_many_records");
    assert_eq!(a.tidal.stats().wal_lsn, 1, "only the configuration record was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods() {
    let a = api(|_| {});
    let (s, v) = a.send("GET", "/v2/nothing", None).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    let (s, v) = a.send("DELETE", "/v1/rankings", None).await;
    assert_error(s, &v, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let (s, v) = a.send("GET", "/v1/items/nobody", None).await;
    assert_error(s, &v, StatusCode::NOT_FOUND, "not_found");
    // An extractor's own refusal (a path that is not UTF-8) is in the error shape too.
    let (s, v) = a.send("GET", "/v1/items/%FF", None).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| m.contains("UTF-8")),
        "{v}"
    );
    // The routes the processes of a cluster ask each other: a process alone has no peers.
    let share = json!({"frontier": 1, "need": 1u64 << 46, "pairs": [["q", "a"]],
        "text": {"docs": 0, "tokens": [], "terms": []}});
    for (path, body) in [
        ("/v1/internal/share", share.clone()),
        ("/v1/internal/for_you", share),
        ("/v1/internal/user", json!({"frontier": 1, "id": "u"})),
        ("/v1/internal/embeddings", json!({"frontier": 1, "keys": []})),
        ("/v1/internal/text_stats", json!({"q": "a", "now": 0})),
    ] {
        let (s, v) = a.send("POST", path, Some(body)).await;
        assert_error(s, &v, StatusCode::NOT_FOUND, "not_a_cluster");
    }
}

/// A body that never finishes arriving.
struct Stalled;

impl futures_core::Stream for Stalled {
    type Item = Result<Vec<u8>, std::io::Error>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Pending
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out() {
    let a = api(|c| c.server.request_timeout_ms = 200);
    let started = Instant::now();
    let req = Request::post("/v1/signals")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(Stalled))
        .unwrap();
    let (s, _, v) = a.call(req).await;
    assert_error(s, &v, StatusCode::SERVICE_UNAVAILABLE, "timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_bad_record_and_write_nothing() {
    let a = api(|_| {});
    let lsn0 = a.tidal.stats().wal_lsn;
    let batch = json!([{"type": "view", "item": "ok1"}, {"type": "view", "item": "ok2"}, {"type": "view"}]);
    let (s, v) = a.send("POST", "/v1/signals", Some(batch)).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_signal");
    assert_eq!(v["error"]["index"], 2, "{v}");
    let batch = json!([{"type": "view", "item": "ok1"}, {"type": "nope", "item": "ok2"}]);
    let (s, v) = a.send("POST", "/v1/signals", Some(batch)).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "unknown_signal_type");
    assert_eq!(v["error"]["index"], 1, "{v}");
    let req = Request::post("/v1/signals")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("[{\"type\":\"view\",\"item\":\"a\"}, {oops"))
        .unwrap();
    let (s, _, v) = a.call(req).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_json");
    assert_eq!(v["error"]["index"], 1, "{v}");
    let (s, v) = a.send("GET", "/v1/rankings?profile=nope", None).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "unknown_profile");
    // A body is an object: an array of its fields in order is not (serde would take it).
    for (method, uri, body, code) in [
        ("POST", "/v1/signals", json!([["view", "m1"]]), "invalid_signal"),
        (
            "POST",
            "/v1/signals",
            json!([{"type": "view", "item": "a"}, ["view", "m1"]]),
            "invalid_signal",
        ),
        ("PUT", "/v1/users/u1", json!([]), "invalid_body"),
        ("PUT", "/v1/users/u1", json!([{"region": "US"}]), "invalid_body"),
        ("PUT", "/v1/cohorts/c1", json!([{"region": "US"}]), "invalid_body"),
        (
            "POST",
            "/v1/relationships",
            json!(["u1", "ann", "follow", true]),
            "invalid_body",
        ),
        ("PUT", "/v1/items/m5", json!(["ann", "a title"]), "invalid_item"),
    ] {
        let (s, v) = a.send(method, uri, Some(body.clone())).await;
        assert_error(s, &v, StatusCode::BAD_REQUEST, code);
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| m.contains("object")),
            "{uri} {body}: {v}"
        );
    }
    let req = Request::post("/v1/signals")
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from("{\"type\":\"view\",\"item\":\"a\"}\n[\"view\",\"b\"]\n"))
        .unwrap();
    let (s, _, v) = a.call(req).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_signal");
    assert_eq!(v["error"]["index"], 1, "{v}");
    assert_eq!(a.tidal.stats().wal_lsn, lsn0, "a refused request wrote something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_503_with_retry_after_and_reads_go_on() {
    let a = api(|c| c.engine.max_lag_signals = 2);
    let (s, v) = a
        .send("POST", "/v1/signals", Some(json!({"type": "view", "item": "seen"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let visible = v["lsn"].as_u64().unwrap();
    a.tidal.wait_visible(visible).unwrap();
    // The dataflow falls behind: the WAL still takes writes until the lag passes the bound.
    a.tidal.hold_dataflow_for_tests(true);
    let three = json!([{"type": "view", "item": "a"}, {"type": "view", "item": "b"}, {"type": "view", "item": "c"}]);
    let (s, v) = a.send("POST", "/v1/signals", Some(three)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let req = Request::post("/v1/signals")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"type": "view", "item": "d"}).to_string()))
        .unwrap();
    let (s, h, v) = a.call(req).await;
    assert_error(s, &v, StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert_eq!(h[header::RETRY_AFTER], "1");
    // Refused before the body is parsed: a flood of refused requests costs no checking, so
    // even a body that would be a 400 is answered 503 while overloaded.
    let req = Request::post("/v1/signals")
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from(
            "{\"type\": \"view\", \"item\": \"e\"}\nnot json\n".repeat(2000),
        ))
        .unwrap();
    let (s, _, v) = a.call(req).await;
    assert_error(s, &v, StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    for path in ["/v1/items/x", "/v1/clock"] {
        let (s, _) = a
            .send(if path == "/v1/clock" { "POST" } else { "PUT" }, path, Some(json!({})))
            .await;
        assert_ne!(s, StatusCode::OK, "{path} was written while overloaded");
    }
    // A first embedding refused does not fix the dimension.
    let (s, v) = a
        .send("PUT", "/v1/items/e3", Some(json!({"embedding": [1.0, 0.0, 0.0]})))
        .await;
    assert_error(s, &v, StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    // Reads are answered from the last state meanwhile, at once.
    let started = Instant::now();
    let (s, v) = a.send("GET", "/v1/rankings?profile=top", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    assert!(started.elapsed() < Duration::from_millis(500));
    let (s, _) = a.send("GET", "/healthz", None).await;
    assert_eq!(s, StatusCode::OK);
    // Caught up, writes are taken again.
    a.tidal.hold_dataflow_for_tests(false);
    a.tidal.wait_visible(a.tidal.stats().wal_lsn).unwrap();
    let (s, v) = a
        .send("POST", "/v1/signals", Some(json!({"type": "view", "item": "d"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = a
        .send("PUT", "/v1/items/e4", Some(json!({"embedding": [1.0, 0.0, 0.0, 0.0]})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The first one written does.
    let (s, v) = a
        .send("PUT", "/v1/items/e3", Some(json!({"embedding": [1.0, 0.0, 0.0]})))
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_item");
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| m.contains("have 4")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_back_by_the_lag_waits_for_the_dataflow_then_is_taken_or_refused() {
    let a = api(|c| {
        c.engine.max_lag_signals = 2;
        c.engine.max_lag_wait_ms = 400;
    });
    a.tidal.hold_dataflow_for_tests(true);
    let three = json!([{"type": "view", "item": "a"}, {"type": "view", "item": "b"}, {"type": "view", "item": "c"}]);
    let (s, v) = a.send("POST", "/v1/signals", Some(three)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let lsn0 = a.tidal.stats().wal_lsn;
    // The dataflow stays behind: the write waits its 400 ms, then is refused, unwritten.
    let started = Instant::now();
    let (s, v) = a
        .send("POST", "/v1/signals", Some(json!({"type": "view", "item": "d"})))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "overloaded", "{v}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400), "refused after {waited:?}");
    assert_eq!(a.tidal.stats().wal_lsn, lsn0, "a refused write was written");
    // The dataflow catches up while a write waits: it is taken, and no 503 is seen.
    let tidal = a.tidal.clone();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        tidal.hold_dataflow_for_tests(false);
    });
    let started = Instant::now();
    let (s, v) = a
        .send("POST", "/v1/signals", Some(json!({"type": "view", "item": "d"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "it waited for the catch-up"
    );
    release.await.unwrap();
    assert!(v["lsn"].as_u64().unwrap() > lsn0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_once_the_dataflow_has_stopped() {
    let a = api(|_| {});
    let (s, v) = a.send("GET", "/healthz", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ok");
    a.tidal.shutdown().unwrap();
    let (s, v) = a.send("GET", "/healthz", None).await;
    assert_error(s, &v, StatusCode::SERVICE_UNAVAILABLE, "dataflow_stopped");
    let (s, v) = a
        .send("POST", "/v1/signals", Some(json!({"type": "view", "item": "a"})))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
}

/// Issue: one signal with a far-future ts pinned the event clock for ever. Now it is a 400
/// naming the record, the clock does not move, and the server keeps ranking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_clock_jumps_are_refused_and_ranking_goes_on() {
    let a = api(|c| c.engine.clock = ClockMode::Event);
    let t0 = 1_700_000_000_000u64;
    let (s, v) = a
        .send(
            "POST",
            "/v1/signals",
            Some(json!({"type": "view", "item": "a", "ts": t0})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["clock"], t0);
    let (s, v) = a
        .send(
            "POST",
            "/v1/signals",
            Some(json!([{"type": "view", "item": "b", "ts": t0 + 1}, {"type": "view", "item": "a", "ts": 18_446_744_073_709_551_000u64}])),
        )
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "time_out_of_range");
    assert_eq!(v["error"]["index"], 1);
    let (s, v) = a
        .send(
            "POST",
            "/v1/signals",
            Some(json!([{"type": "view", "item": "b", "ts": t0 + 1}, {"type": "view", "item": "a", "ts": t0 + 31 * 86_400_000}])),
        )
        .await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "clock_jump");
    assert_eq!(v["error"]["index"], 1);
    let (s, v) = a
        .send(
            "POST",
            "/v1/signals",
            Some(json!({"type": "view", "item": "b", "ts": t0 + 60_000})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["clock"], t0 + 60_000, "the refused records did not move the clock");
    let (s, r) = a
        .send(
            "GET",
            &format!(
                "/v1/rankings?profile=trending&signal=view&window=1h&min_lsn={}",
                v["lsn"]
            ),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let ids: Vec<&str> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    // The clock is moved further only by POST /v1/clock.
    let (s, v) = a
        .send(
            "POST",
            "/v1/clock",
            Some(json!({"advance_to": t0 + 40 * 86_400_000u64})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["clock"], t0 + 40 * 86_400_000u64);
}

/// Issue: a delete answered 204 without an LSN, so a read right after could still list the
/// item. Now every write answers its LSN and a read with it never lists the deleted item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_read_with_min_lsn_never_lists_the_item() {
    let a = api(|_| {});
    for round in 0..25 {
        let id = format!("it{round}");
        let (s, put) = a
            .send("PUT", &format!("/v1/items/{id}"), Some(json!({"creator": "ann"})))
            .await;
        assert_eq!(s, StatusCode::OK, "{put}");
        assert!(
            put["lsn"].as_u64().is_some() && put["clock"].as_u64().is_some(),
            "{put}"
        );
        let (s, ack) = a
            .send(
                "POST",
                "/v1/signals",
                Some(json!({"type": "like", "item": id, "id": format!("k{round}")})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{ack}");
        let (s, del) = a.send("DELETE", &format!("/v1/items/{id}"), None).await;
        assert_eq!(s, StatusCode::OK, "{del}");
        assert_eq!(del["id"], id.as_str());
        assert!(del["lsn"].as_u64().unwrap() > ack["lsn"].as_u64().unwrap());
        let (s, r) = a
            .send(
                "GET",
                &format!("/v1/rankings?profile=top&signal=like&limit=100&min_lsn={}", del["lsn"]),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert!(
            !r["items"].as_array().unwrap().iter().any(|i| i["id"] == id.as_str()),
            "round {round}: {id} listed after its delete: {r}"
        );
        let (s, _) = a
            .send("GET", &format!("/v1/items/{id}?min_lsn={}", del["lsn"]), None)
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}

/// Every route of SPEC §5 that this version serves is in the OpenAPI document, and every
/// operation of the document is a route of the router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_route() {
    let doc = openapi();
    let json: Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
    assert!(json["openapi"].as_str().unwrap().starts_with("3."));
    let paths = json["paths"].as_object().unwrap();
    let spec_routes = [
        ("post", "/v1/signals"),
        ("put", "/v1/items/{id}"),
        ("get", "/v1/items/{id}"),
        ("delete", "/v1/items/{id}"),
        ("get", "/v1/rankings"),
        ("put", "/v1/users/{id}"),
        ("get", "/v1/users/{id}"),
        ("delete", "/v1/users/{id}"),
        ("put", "/v1/cohorts/{name}"),
        ("get", "/v1/cohorts"),
        ("delete", "/v1/cohorts/{name}"),
        ("post", "/v1/relationships"),
        ("post", "/v1/clock"),
        ("get", "/v1/clock"),
        ("get", "/v1/schema"),
        ("get", "/healthz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        // Between the processes of a cluster (SPEC §11).
        ("post", "/v1/internal/share"),
        ("post", "/v1/internal/for_you"),
        ("post", "/v1/internal/user"),
        ("post", "/v1/internal/embeddings"),
        ("post", "/v1/internal/text_stats"),
        ("post", "/v1/internal/floor"),
        ("post", "/v1/internal/creators"),
    ];
    for (method, path) in spec_routes {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    let a = api(|c| c.engine.clock = ClockMode::Event);
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let uri = path.replace("{id}", "x").replace("{name}", "x");
            let (s, v) = a.send(&method.to_uppercase(), &uri, Some(json!({}))).await;
            let unrouted = v["error"]["code"] == "method_not_allowed"
                || (s == StatusCode::NOT_FOUND
                    && v["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("no endpoint")));
            assert!(!unrouted, "{method} {path} is documented but not routed: {v}");
        }
    }
    assert_eq!(
        operations,
        spec_routes.len(),
        "the document has operations beyond the known routes"
    );
    let (s, v) = a.send("GET", "/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_lists_declared_profiles_and_a_query_names_one() {
    let declared = Config::parse("[[profiles]]\nname = \"fy-light\"\nbase = \"for_you\"\nw_sim = 0.3\nw_pop = 0.7\n")
        .expect("a profile");
    let a = api(|c| c.profiles = declared.profiles);
    let (s, v) = a.send("GET", "/v1/schema", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let profiles = v["profiles"].as_array().expect("profiles");
    assert_eq!(profiles.len(), 1, "{v}");
    assert_eq!(
        (&profiles[0]["name"], &profiles[0]["base"], &profiles[0]["w_sim"]),
        (&json!("fy-light"), &json!("for_you"), &json!(0.3)),
        "{v}"
    );
    let (s, v) = a.send("GET", "/v1/rankings?profile=fy-light&user=u1", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = a.send("GET", "/v1/rankings?profile=fy-light", None).await;
    assert_error(s, &v, StatusCode::BAD_REQUEST, "invalid_parameter");
}
