//! The parts of the OpenAPI document that are not a handler or a facade type: its header and
//! the shapes of answers rendered from metadata (items) or assembled in a handler.

use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::OpenApi;
use utoipa::openapi::info::{Info, License};

use crate::query::AsOf;

/// The document's header; paths and schemas are added by the routes.
pub(super) fn base() -> OpenApi {
    let mut info = Info::new("tidal", env!("CARGO_PKG_VERSION"));
    info.description = Some(
        "A streaming ranking engine for content feeds: engagement signals in, rankings out. \
         Writes are durable when answered and carry the LSN that a read passes as min_lsn to see them."
            .into(),
    );
    info.license = Some(License::new("Apache-2.0"));
    OpenApi::new(info, utoipa::openapi::Paths::new())
}

/// An item's metadata (every field optional).
#[derive(Serialize, ToSchema)]
pub struct ItemBodyDoc {
    /// The author (an id).
    creator: Option<String>,
    /// Title (searchable).
    title: Option<String>,
    /// Body text (searchable).
    text: Option<String>,
    /// Category.
    category: Option<String>,
    /// Tags.
    tags: Option<Vec<String>>,
    /// Creation time, ms since the epoch.
    created_at: Option<u64>,
    /// An embedding (f32 values, a fixed dimension).
    embedding: Option<Vec<f32>>,
}

/// One signal type's features; maps are keyed by duration (`"24h"`).
#[derive(Serialize, ToSchema)]
pub struct FeaturesDoc {
    /// All-time Σ weight.
    total: f64,
    /// `count_W` per window.
    counts: std::collections::BTreeMap<String, f64>,
    /// `count_W / W_h` per window.
    velocity: std::collections::BTreeMap<String, f64>,
    /// `(count_W − (count_2W − count_W)) / W_h` per window.
    acceleration: std::collections::BTreeMap<String, f64>,
    /// `Σ w·2^(−(T−ts)/h)` per half-life.
    decay: std::collections::BTreeMap<String, f64>,
}

/// An item: its id, its metadata fields (when put), every feature and the state read.
#[derive(Serialize, ToSchema)]
pub struct ItemDoc {
    /// Item id.
    id: String,
    /// The metadata fields (creator, title, ...) appear at this level when the item was put.
    #[serde(flatten)]
    meta: ItemBodyDoc,
    /// Features per signal type.
    signals: std::collections::BTreeMap<String, FeaturesDoc>,
    /// The state the answer was read from.
    as_of: AsOf,
}

/// The answer to a delete.
#[derive(Serialize, ToSchema)]
pub struct DeleteAnswer {
    /// The item id.
    pub id: String,
    /// LSN of the delete: a read with `min_lsn` of it no longer lists the item.
    pub lsn: u64,
    /// `T_commit`, ms.
    pub clock: u64,
    /// In a cluster: what a read on any process passes as `min_lsn` to see the delete.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "1:2040")]
    pub token: Option<crate::tidal::Token>,
}

/// The clocks.
#[derive(Serialize, ToSchema)]
pub struct ClockAnswer {
    /// The commit clock, ms.
    pub clock: u64,
    /// The last LSN written.
    pub lsn: u64,
    /// What queries see.
    pub serving: AsOf,
    /// Where the cohort counts stand: `serving`, or behind it while the counts of a cohort
    /// just declared are built.
    pub cohorts: AsOf,
    /// `wall` or `event`.
    pub mode: String,
}

/// A healthy server.
#[derive(Serialize, ToSchema)]
pub struct HealthAnswer {
    /// `ok`.
    pub status: String,
    /// The LSN visible to queries.
    pub lsn: u64,
    /// The serving clock, ms.
    pub clock: u64,
}
