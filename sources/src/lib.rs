//! Where records enter tidal: the write-ahead log ([`wal`]) and the timely source operator
//! that reads committed batches from a [`feed::Feed`] ([`source`]).

pub mod feed;
pub mod wal;
pub mod source;
