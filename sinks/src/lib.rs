//! Arrangement sinks: the dataflow's outputs published into the serving layer.
//!
//! The contract with `tidal-dataflows` (types of the collections it hands to [`publish`]) is
//! in [`contract`].

pub mod contract;
