//! `GET /v1/items/{id}`: an item's metadata and every feature of every signal type, as of
//! the snapshot's clock.

use serde_json::{Map, Value, json};

use tidal_core::Config;
use tidal_core::features::{decay_sum, weight_float};
use tidal_sinks::Snapshot;
use tidal_sinks::contract::{HalfLifeIdx, KindIdx};

/// The item's view: `id`, its metadata fields (when put), `signals: {type: {total, counts,
/// velocity, acceleration, decay}}` keyed by duration strings (`"24h"`), and `as_of`.
/// `None` for an unknown or deleted id. An item known only from signals has no metadata.
pub fn item_view(snapshot: &Snapshot, config: &Config, id: &str) -> Option<Value> {
    let (_, entry) = snapshot.item(id)?;
    let state = entry.state()?;
    if state.deleted {
        return None;
    }
    let mut obj = Map::new();
    obj.insert("id".into(), Value::String(state.id.clone()));
    if let Some(Value::Object(meta)) = state.meta.as_ref().and_then(|m| serde_json::to_value(m).ok()) {
        obj.extend(meta);
    }
    let clock = snapshot.clock_ms();
    let mut signals = Map::new();
    for (k, st) in config.signals.iter().enumerate() {
        let kind = k as KindIdx;
        let lanes = entry.lanes(kind).copied().unwrap_or_default();
        let (mut counts, mut velocity, mut acceleration, mut decay) = (Map::new(), Map::new(), Map::new(), Map::new());
        for (j, w) in st.windows.iter().enumerate() {
            let key = w.size.to_string();
            counts.insert(key.clone(), json!(lanes.count(j)));
            velocity.insert(key.clone(), json!(lanes.count(j) / w.size.hours()));
            acceleration.insert(key, json!(weight_float(lanes.rise_fixed(j)) / w.size.hours()));
        }
        for (h, hl) in st.half_lives.iter().enumerate() {
            let value = decay_sum(entry.epochs(kind, h as HalfLifeIdx), hl.ms(), clock);
            // `+ 0.0` turns an empty sum's -0.0 into 0.0.
            decay.insert(hl.to_string(), json!(value + 0.0));
        }
        signals.insert(
            st.name.clone(),
            json!({
                "total": lanes.total(),
                "counts": counts,
                "velocity": velocity,
                "acceleration": acceleration,
                "decay": decay,
            }),
        );
    }
    obj.insert("signals".into(), Value::Object(signals));
    obj.insert("as_of".into(), json!({"clock": clock, "lsn": snapshot.lsn}));
    Some(Value::Object(obj))
}
