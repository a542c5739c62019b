//! The dataflow graph, built from the schema on every worker: the WAL source feeds the
//! windows and decay materializers; their outputs, with the item states and the last LSN,
//! are what a sink publishes.

use std::sync::Arc;

use timely::dataflow::Scope;

use differential_dataflow::VecCollection;

use tidal_core::config::Config;
use tidal_core::features::Lanes;
use tidal_core::record::Position;
use tidal_core::time::Time;
use tidal_operators::decay::DecayKey;
use tidal_sinks::contract::{ItemKey, ItemState, KindIdx};
use tidal_sources::feed::Feed;
use tidal_sources::source::wal_source;

/// The collections the graph hands to its sink (the shapes `tidal_sinks::publish` takes).
pub struct Outputs<'s> {
    /// Current window lanes per (item, signal type).
    pub windows: VecCollection<'s, Time, ((ItemKey, KindIdx), Lanes), isize>,
    /// Current anchored decay sum per (item, signal type, half-life index, epoch start).
    pub decay: VecCollection<'s, Time, (DecayKey, i128), isize>,
    /// Current state per item key.
    pub items: VecCollection<'s, Time, (ItemKey, ItemState), isize>,
    /// One element: the log position applied.
    pub lsn: VecCollection<'s, Time, Position, isize>,
}

/// Builds source and materializers in `scope`.
pub fn build<'s>(scope: Scope<'s, Time>, feed: Arc<Feed>, config: Arc<Config>) -> Outputs<'s> {
    let source = wal_source(scope, feed, config.clone());
    let windows = tidal_operators::windows(source.signals.clone(), &config);
    let decay = tidal_operators::decay(source.signals, &config);
    Outputs {
        windows,
        decay,
        items: source.items,
        lsn: source.lsn,
    }
}
