//! Request bodies to the facade's inputs: signal objects, arrays and NDJSON, item bodies.
//! Only the shape is checked here (fields, types); the schema's rules are the facade's. A
//! malformed record is reported with its index, so a batch's error names its first bad record.

use std::cell::Cell;

use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;

use tidal_core::record::{Embedding, ItemMeta};

use super::error::ApiError;
use crate::NewSignal;

fn too_many(max: usize) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_records",
        format!(
            "the request holds more than {max} records; the limit is {max} per request (server.max_records_per_request)"
        ),
    )
}

/// A serde error about the record at `index` (if known): a syntax error is `invalid_json`,
/// anything else `invalid_signal`.
fn record_error(e: &serde_json::Error, index: Option<usize>) -> ApiError {
    let syntax = matches!(e.classify(), Category::Syntax | Category::Eof | Category::Io);
    let e = match index {
        Some(i) => {
            let code = if syntax { "invalid_json" } else { "invalid_signal" };
            return ApiError::bad_request(code, format!("record {i}: {e}")).at(i);
        }
        None => e,
    };
    if syntax {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    } else {
        ApiError::bad_request("invalid_signal", e.to_string())
    }
}

/// `T` read from a JSON object only: serde's derived structs also take an array of their
/// fields in order, which would read `[]` as a user without attributes or `[["view", "m1"]]`
/// as a signal.
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Fields(std::marker::PhantomData)).map(Object)
    }
}

/// The signals of a `POST /v1/signals` body: NDJSON when `ndjson`, else one object or an
/// array. At most `max_records`; none is an error.
pub fn signals(body: &[u8], ndjson: bool, max_records: usize) -> Result<Vec<NewSignal>, ApiError> {
    let out = if ndjson {
        let mut out = Vec::new();
        for line in body.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if out.len() >= max_records {
                return Err(too_many(max_records));
            }
            let Object(s) = serde_json::from_slice(line).map_err(|e| record_error(&e, Some(out.len())))?;
            out.push(s);
        }
        out
    } else {
        let at = Cell::new(None);
        let over = Cell::new(false);
        let mut de = serde_json::Deserializer::from_slice(body);
        let body_seed = Body {
            max: max_records,
            at: &at,
            over: &over,
        };
        let parsed = body_seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
        match parsed {
            Ok(v) => v,
            Err(_) if over.get() => return Err(too_many(max_records)),
            Err(e) => return Err(record_error(&e, at.get())),
        }
    };
    if out.is_empty() {
        return Err(ApiError::bad_request("empty_body", "the request holds no signals"));
    }
    Ok(out)
}

/// Deserializes one signal object or an array of them, noting the index being read.
struct Body<'a> {
    max: usize,
    at: &'a Cell<Option<usize>>,
    over: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Body<'_> {
    type Value = Vec<NewSignal>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Body<'_> {
    type Value = Vec<NewSignal>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a signal object, an array of them, or NDJSON")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        loop {
            if out.len() >= self.max {
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    self.over.set(true);
                    return Err(serde::de::Error::custom("too many records"));
                }
                break;
            }
            self.at.set(Some(out.len()));
            match seq.next_element::<Object<NewSignal>>()? {
                Some(Object(s)) => out.push(s),
                None => break,
            }
        }
        self.at.set(None);
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.at.set(Some(0));
        let s = NewSignal::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        self.at.set(None);
        Ok(vec![s])
    }
}

/// A `PUT /v1/items/{id}` body; the echoed fields of a `GET` answer are accepted and ignored,
/// so a `GET` body can be `PUT` back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemBody {
    creator: Option<String>,
    title: Option<String>,
    text: Option<String>,
    category: Option<String>,
    tags: Option<Vec<String>>,
    created_at: Option<u64>,
    embedding: Option<Vec<f64>>,
    /// The id a `GET` echoes: it must be the path's.
    id: Option<String>,
    #[serde(rename = "signals")]
    _signals: Option<IgnoredAny>,
    #[serde(rename = "as_of")]
    _as_of: Option<IgnoredAny>,
    #[serde(rename = "lsn")]
    _lsn: Option<IgnoredAny>,
    #[serde(rename = "clock")]
    _clock: Option<IgnoredAny>,
}

/// The metadata of a `PUT /v1/items/{id}` body for item `id` (an empty body is an item
/// without metadata); an `id` in the body must be the path's.
pub fn item(body: &[u8], id: &str) -> Result<ItemMeta, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ItemMeta::default());
    }
    let Object::<ItemBody>(b) = serde_json::from_slice(body).map_err(|e| match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        }
        Category::Data => ApiError::bad_request(
            "invalid_item",
            format!("{e} (fields: creator, title, text, category, tags, created_at, embedding)"),
        ),
    })?;
    if let Some(named) = &b.id
        && named != id
    {
        return Err(ApiError::bad_request(
            "invalid_item",
            format!("id: the body names item {named:?}, the path {id:?}"),
        ));
    }
    let embedding = match b.embedding {
        None => None,
        Some(v) => {
            let mut e = Vec::with_capacity(v.len());
            for x in v {
                if !x.is_finite() || x.abs() > f32::MAX as f64 {
                    return Err(ApiError::bad_request(
                        "invalid_item",
                        "embedding must hold finite numbers within the range of f32",
                    ));
                }
                e.push(x as f32);
            }
            Some(Embedding(e))
        }
    };
    Ok(ItemMeta {
        creator: b.creator,
        title: b.title,
        text: b.text,
        category: b.category,
        tags: b.tags.unwrap_or_default(),
        created_at: b.created_at,
        embedding,
    })
}
