//! tidal's materializers, one differential operator per file: [`entities`] takes from the
//! broadcast control stream the records of the items this worker owns, interns them and keeps
//! their states; [`windows`] keeps the sliding window counts and totals of every (item,
//! signal type), [`decay`] keeps the exact, epoch-anchored decayed sums. Windows and decay
//! read the [`SignalEv`]s of the worker's own items (no exchange: the entities stage already
//! ran at the owner), expand each into fixed-point diffs (an insertion now, retractions at
//! future logical times: the temporal-filter pattern), and keep the running sum per key,
//! emitted as a differential collection of current values (the keyed-sum operator in
//! `sum.rs`).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use tidal_core::config::{Config, MAX_HALF_LIVES, MAX_WINDOWS};
use tidal_core::features::window_specs;
pub use tidal_core::flow::SignalEv;

mod background;
mod batches;
pub mod cohorts;
mod cow;
pub mod decay;
mod dense;
pub mod entities;
mod idmap;
mod merger;
mod pending;
mod sum;
pub mod users;
pub mod windows;

pub use cohorts::cohort_rollups;
pub use decay::decay;
pub use entities::{EntityOutputs, entities};
pub use users::{UserOutputs, users};
pub use windows::windows;

/// A seeded xorshift generator for the unit tests' random inputs (the same sequence every
/// run).
#[cfg(test)]
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
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
