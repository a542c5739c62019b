//! [`Delta`]: the sink's compact form of an [`Update`], as it crosses to worker 0 and waits
//! for its time to complete. An item state is boxed, so a window or decay change — nearly
//! all of the traffic — moves as a small record.

use serde::{Deserialize, Serialize};

use tidal_core::features::Lanes;

use crate::snapshot::Update;
use tidal_core::flow::{HalfLifeIdx, ItemKey, ItemState, KindIdx};

/// One change the sink applies (see [`Update`], whose variants it mirrors).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Delta {
    Window {
        key: ItemKey,
        kind: KindIdx,
        lanes: Lanes,
    },
    Decay {
        key: ItemKey,
        kind: KindIdx,
        hl: HalfLifeIdx,
        epoch: u64,
        sum: i128,
    },
    Item {
        key: ItemKey,
        state: Box<ItemState>,
    },
}

impl Delta {
    /// The item key and the slot of the value this delta changes: two deltas with the same
    /// slot are values of one functional entry.
    pub(crate) fn slot(&self) -> (ItemKey, u128) {
        match self {
            Delta::Window { key, kind, .. } => (*key, u128::from(*kind) << 96),
            Delta::Decay {
                key, kind, hl, epoch, ..
            } => (
                *key,
                1 << 120 | u128::from(*kind) << 96 | u128::from(*hl) << 64 | u128::from(*epoch),
            ),
            Delta::Item { key, .. } => (*key, 2 << 120),
        }
    }
}

impl From<Update> for Delta {
    fn from(u: Update) -> Delta {
        match u {
            Update::Window { key, kind, lanes } => Delta::Window { key, kind, lanes },
            Update::Decay {
                key,
                kind,
                hl,
                epoch,
                sum,
            } => Delta::Decay {
                key,
                kind,
                hl,
                epoch,
                sum,
            },
            Update::Item { key, state } => Delta::Item {
                key,
                state: Box::new(state),
            },
        }
    }
}
