//! Request bodies to records: signal objects, arrays and NDJSON, item bodies. Every check of
//! SPEC §5/§9 happens here, before anything is written, so a batch is all-or-nothing and the
//! error names the index of the first bad record.

use serde_json::{Map, Value};

use tidal_core::config::Config;
use tidal_core::ids::check_id;
use tidal_core::record::{Embedding, ItemMeta, Signal};
use tidal_core::time::ClockMode;

use super::error::ApiError;

/// Splits a signals body into JSON values: NDJSON when `ndjson`, else one object or an array.
pub fn signal_values(body: &[u8], ndjson: bool, max_records: usize) -> Result<Vec<Value>, ApiError> {
    let too_many = |n: usize| {
        ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            format!("the request holds {n} records or more; the limit is {max_records} per request"),
        )
    };
    if ndjson {
        let mut out = Vec::new();
        for (i, line) in body.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if out.len() >= max_records {
                return Err(too_many(out.len() + 1));
            }
            let v: Value = serde_json::from_slice(line).map_err(|e| {
                ApiError::bad_request("invalid_json", format!("line {} is not valid JSON: {e}", i + 1)).at(out.len())
            })?;
            out.push(v);
        }
        if out.is_empty() {
            return Err(ApiError::bad_request("empty_body", "the NDJSON body holds no signals"));
        }
        return Ok(out);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")))?;
    match v {
        Value::Array(a) => {
            if a.is_empty() {
                return Err(ApiError::bad_request("empty_body", "the array holds no signals"));
            }
            if a.len() > max_records {
                return Err(too_many(a.len()));
            }
            Ok(a)
        }
        Value::Object(_) => Ok(vec![v]),
        _ => Err(ApiError::bad_request(
            "invalid_signal",
            "expected a signal object, an array of them, or NDJSON",
        )),
    }
}

/// What a signal is checked against.
pub struct SignalRules<'a> {
    /// The schema.
    pub config: &'a Config,
    /// The wall clock now (ms), for the future-skew check in the wall clock.
    pub now_ms: u64,
}

/// Validates one signal object into a [`Signal`]; errors name the field.
pub fn signal(v: &Value, rules: &SignalRules<'_>, index: usize) -> Result<Signal, ApiError> {
    let bad = |msg: String| ApiError::bad_request("invalid_signal", msg).at(index);
    let Value::Object(m) = v else {
        return Err(bad(format!("record {index} is not a JSON object")));
    };
    for k in m.keys() {
        if !["type", "item", "user", "weight", "ts", "id"].contains(&k.as_str()) {
            return Err(bad(format!(
                "record {index}: unknown field {k:?} (expected type, item, user, weight, ts, id)"
            )));
        }
    }
    let max_id = rules.config.server.max_id_bytes;
    let kind = req_str(m, "type").map_err(|e| bad(format!("record {index}: {e}")))?;
    let Some(st) = rules.config.signal(kind) else {
        let known: Vec<_> = rules.config.signals.iter().map(|s| s.name.as_str()).collect();
        return Err(ApiError::bad_request(
            "unknown_signal_type",
            format!(
                "record {index}: unknown signal type {kind:?}; the schema declares {}",
                known.join(", ")
            ),
        )
        .at(index));
    };
    let item = req_str(m, "item").map_err(|e| bad(format!("record {index}: {e}")))?;
    check_id("item", item, max_id).map_err(|e| bad(format!("record {index}: {e}")))?;
    let user = opt_str(m, "user").map_err(|e| bad(format!("record {index}: {e}")))?;
    if let Some(u) = user {
        check_id("user", u, max_id).map_err(|e| bad(format!("record {index}: {e}")))?;
    }
    let id = opt_str(m, "id").map_err(|e| bad(format!("record {index}: {e}")))?;
    if let Some(i) = id {
        check_id("id", i, max_id).map_err(|e| bad(format!("record {index}: {e}")))?;
    }
    let weight = match m.get("weight") {
        None | Some(Value::Null) => st.default_weight,
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|w| w.is_finite())
            .ok_or_else(|| bad(format!("record {index}: weight must be a finite number")))?,
        Some(_) => return Err(bad(format!("record {index}: weight must be a number"))),
    };
    if weight < st.min_weight || weight > st.max_weight {
        return Err(bad(format!(
            "record {index}: weight {weight} is outside [{}, {}] for signal type {:?}",
            st.min_weight, st.max_weight, st.name
        )));
    }
    let ts = match m.get("ts") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| {
            bad(format!(
                "record {index}: ts must be a non-negative integer of milliseconds since the epoch"
            ))
        })?),
        Some(_) => {
            return Err(bad(format!(
                "record {index}: ts must be an integer of milliseconds since the epoch"
            )));
        }
    };
    if let (Some(ts), ClockMode::Wall) = (ts, rules.config.engine.clock) {
        let limit = rules.now_ms + rules.config.engine.max_future_skew.ms();
        if ts > limit {
            return Err(ApiError::bad_request(
                "ts_in_future",
                format!(
                    "record {index}: ts {ts} is {} ms ahead of the clock; at most {} is allowed",
                    ts - rules.now_ms,
                    rules.config.engine.max_future_skew
                ),
            )
            .at(index));
        }
    }
    Ok(Signal {
        kind: kind.to_string(),
        item: item.to_string(),
        user: user.map(str::to_string),
        weight,
        ts,
        id: id.map(str::to_string),
    })
}

fn req_str<'v>(m: &'v Map<String, Value>, field: &str) -> Result<&'v str, String> {
    match m.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(format!("field {field:?} is required")),
        Some(_) => Err(format!("field {field:?} must be a string")),
    }
}

fn opt_str<'v>(m: &'v Map<String, Value>, field: &str) -> Result<Option<&'v str>, String> {
    match m.get(field) {
        Some(Value::String(s)) => Ok(Some(s)),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(format!("field {field:?} must be a string")),
    }
}

/// Validates a `PUT /v1/items/{id}` body.
pub fn item(body: &[u8], config: &Config) -> Result<ItemMeta, ApiError> {
    let bad = |msg: String| ApiError::bad_request("invalid_item", msg);
    let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")))?
    };
    let Value::Object(m) = v else {
        return Err(bad("the item body must be a JSON object".into()));
    };
    let max_id = config.server.max_id_bytes;
    let mut meta = ItemMeta::default();
    for (k, v) in &m {
        match k.as_str() {
            "creator" => {
                let c = opt_str(&m, k).map_err(bad)?;
                if let Some(c) = c {
                    check_id("creator", c, max_id).map_err(bad)?;
                }
                meta.creator = c.map(str::to_string);
            }
            "title" => meta.title = opt_str(&m, k).map_err(bad)?.map(str::to_string),
            "text" => meta.text = opt_str(&m, k).map_err(bad)?.map(str::to_string),
            "category" => meta.category = opt_str(&m, k).map_err(bad)?.map(str::to_string),
            "tags" => match v {
                Value::Null => {}
                Value::Array(a) => {
                    for t in a {
                        let Value::String(t) = t else {
                            return Err(bad("tags must be an array of strings".into()));
                        };
                        check_id("tag", t, max_id).map_err(bad)?;
                        meta.tags.push(t.clone());
                    }
                }
                _ => return Err(bad("tags must be an array of strings".into())),
            },
            "created_at" => match v {
                Value::Null => {}
                Value::Number(n) => {
                    meta.created_at =
                        Some(n.as_u64().ok_or_else(|| {
                            bad("created_at must be a non-negative integer of ms since the epoch".into())
                        })?)
                }
                _ => return Err(bad("created_at must be an integer of ms since the epoch".into())),
            },
            "embedding" => match v {
                Value::Null => {}
                Value::Array(a) => {
                    if a.is_empty() || a.len() > config.server.max_embedding_dim {
                        return Err(bad(format!(
                            "embedding has {} dimensions; it must have 1 to {}",
                            a.len(),
                            config.server.max_embedding_dim
                        )));
                    }
                    let mut e = Vec::with_capacity(a.len());
                    for x in a {
                        let f = x.as_f64().filter(|f| f.is_finite() && f.abs() <= f32::MAX as f64);
                        e.push(f.ok_or_else(|| bad("embedding must hold finite numbers".into()))? as f32);
                    }
                    meta.embedding = Some(Embedding(e));
                }
                _ => return Err(bad("embedding must be an array of numbers".into())),
            },
            // Echoed fields of a GET answer are accepted and ignored, so a GET body can be PUT back.
            "id" | "signals" | "as_of" => {}
            other => {
                return Err(bad(format!(
                    "unknown field {other:?} (expected creator, title, text, category, tags, created_at, embedding)"
                )));
            }
        }
    }
    Ok(meta)
}
