//! Where records enter tidal: the write-ahead log ([`wal`]) and the timely source operator
//! that reads committed batches from a [`feed::Feed`] ([`source`]).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod checkpoint;
pub mod feed;
pub mod source;
pub mod wal;
