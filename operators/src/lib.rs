//! tidal's materializers, one differential operator per file: [`windows`] keeps the sliding
//! window counts and totals of every (item, signal type), [`decay`] keeps the exact,
//! epoch-anchored decayed sums. Both read the stream of [`SignalEv`]s the WAL source emits,
//! route each event once to the worker that owns its item ([`shard`]), expand it there into
//! fixed-point diffs (an insertion now, retractions at future logical times: the
//! temporal-filter pattern), and keep the running sum per key, emitted as a differential
//! collection of current values (the keyed-sum operator in `sum.rs`).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use serde::{Deserialize, Serialize};

use tidal_core::config::{Config, MAX_HALF_LIVES, MAX_WINDOWS};
use tidal_core::features::window_specs;
use tidal_sinks::contract::{ItemKey, KindIdx};

pub mod decay;
mod dense;
mod sum;
pub mod windows;

pub use decay::decay;
pub use windows::windows;

/// One signal as the dataflow sees it: ids interned, weight in fixed point.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SignalEv {
    /// The item's dense key.
    pub item: ItemKey,
    /// The signal type's index in the schema.
    pub kind: KindIdx,
    /// `min(ts, T_commit)`, ms.
    pub ts_eff: u64,
    /// The weight in fixed point ([`tidal_core::features::weight_fixed`]).
    pub weight: i64,
    /// The user's interned id; 0 when the signal names no user.
    pub user: u64,
}

/// The worker-routing hash of an item key: the key itself, so that item `i` goes to worker
/// `i % peers` (timely takes the hash modulo the worker count, or masks its low bits for a
/// power of two, which is the same). Every materializer shards its state by item with this
/// function, so an event crosses workers once per materializer and its state needs no second
/// exchange. Keys are dense (the source assigns them in log order), so consecutive keys, hot
/// or not, alternate between workers, and a worker holds its items' state in arrays indexed
/// by `i / peers`.
pub fn shard(item: ItemKey) -> u64 {
    item
}

/// The numbers a materializer needs about one signal type, in ms, in fixed-size arrays so
/// the per-event loop touches no heap.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct KindSpec {
    /// `(W, g)` per window; the first `n_windows` are used.
    pub windows: [(u64, u64); MAX_WINDOWS],
    /// Number of declared windows.
    pub n_windows: usize,
    /// Half-lives; the first `n_half_lives` are used.
    pub half_lives: [u64; MAX_HALF_LIVES],
    /// Number of declared half-lives.
    pub n_half_lives: usize,
}

impl KindSpec {
    /// The declared windows.
    pub fn windows(&self) -> &[(u64, u64)] {
        &self.windows[..self.n_windows]
    }
    /// The declared half-lives.
    pub fn half_lives(&self) -> &[u64] {
        &self.half_lives[..self.n_half_lives]
    }
}

/// Per signal type (indexed by [`KindIdx`]), the windows and half-lives of a validated
/// configuration. Windows or half-lives beyond the configuration limits are ignored (a
/// validated configuration has none).
pub fn kind_specs(config: &Config) -> Vec<KindSpec> {
    config
        .signals
        .iter()
        .map(|st| {
            let mut spec = KindSpec::default();
            for (slot, w) in spec.windows.iter_mut().zip(window_specs(st)) {
                *slot = w;
                spec.n_windows += 1;
            }
            for (slot, h) in spec.half_lives.iter_mut().zip(st.half_lives.iter()) {
                *slot = h.ms();
                spec.n_half_lives += 1;
            }
            spec
        })
        .collect()
}
