//! The write path: every record is checked against the schema and the limits before anything
//! is written (a request is all-or-nothing and an error names its first bad record), then
//! appended to the WAL and answered once durable.

use std::time::{Duration, Instant};

use tidal_core::ids::check_id;
use tidal_core::record::{ItemMeta, Record, Signal};
use tidal_core::time::{ClockMode, MAX_TS_MS, wall_clock_ms};
use tidal_sources::wal::Commit;

use super::Tidal;
use super::error::{Error, Overload, RETRY_AFTER, Result};
use super::types::{NewSignal, SignalsAck, Token, WriteAck};

/// The most tags an item may have.
pub const MAX_TAGS: usize = 256;

/// How often a write held back by the lag looks again.
const LAG_POLL: Duration = Duration::from_millis(1);

impl Tidal {
    /// Writes one signal; returns once it is durable.
    pub fn signal(&self, signal: NewSignal) -> Result<SignalsAck> {
        self.signals(vec![signal])
    }

    /// Writes signals as one record, all or nothing; returns once they are durable. A full
    /// WAL queue is waited out (the caller is slowed down rather than refused).
    pub fn signals(&self, signals: Vec<NewSignal>) -> Result<SignalsAck> {
        let record = self.signals_record(signals)?;
        let c = self.commit_blocking(vec![record])?;
        Ok(self.signals_ack(&c))
    }

    /// [`signals`](Self::signals) without blocking: refused with [`Error::Overloaded`] when
    /// the WAL queue is full or the dataflow is too far behind.
    pub async fn signals_async(&self, signals: Vec<NewSignal>) -> Result<SignalsAck> {
        self.admit()?;
        let record = self.signals_record(signals)?;
        self.write_signals_async(record).await
    }

    /// Writes a record made by [`signals_record`](Self::signals_record) without blocking.
    pub async fn write_signals_async(&self, record: Record) -> Result<SignalsAck> {
        self.admit()?;
        let c = self.commit_async(vec![record]).await?;
        Ok(self.signals_ack(&c))
    }

    /// Checks signals and makes them one WAL record.
    pub fn signals_record(&self, signals: Vec<NewSignal>) -> Result<Record> {
        if signals.is_empty() {
            return Err(Error::InvalidSignal {
                index: 0,
                message: "a request must hold at least one signal".into(),
            });
        }
        let now = wall_clock_ms();
        let mut out = Vec::with_capacity(signals.len());
        for (index, s) in signals.into_iter().enumerate() {
            out.push(self.check_signal(s, index, now)?);
        }
        Ok(Record::Signals(out))
    }

    fn check_signal(&self, s: NewSignal, index: usize, now_ms: u64) -> Result<Signal> {
        let config = &self.config;
        let bad = |message: String| Error::InvalidSignal { index, message };
        let Some(st) = config.signal(&s.kind) else {
            let declared: Vec<&str> = config.signals.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::UnknownSignalType {
                index,
                name: s.kind,
                declared: declared.join(", "),
            });
        };
        let max_id = config.server.max_id_bytes;
        check_id("item", &s.item, max_id).map_err(bad)?;
        if let Some(u) = &s.user {
            check_id("user", u, max_id).map_err(bad)?;
        }
        if let Some(i) = &s.id {
            check_id("id", i, max_id).map_err(bad)?;
        }
        let weight = s.weight.unwrap_or(st.default_weight);
        if !weight.is_finite() {
            return Err(bad("weight must be a finite number".into()));
        }
        if weight < st.min_weight || weight > st.max_weight {
            // 1e300 as "1e300", not three hundred digits.
            let shown = if weight.abs() >= 1e9 {
                format!("{weight:e}")
            } else {
                weight.to_string()
            };
            return Err(bad(format!(
                "weight {shown} is outside [{}, {}] for signal type {:?}",
                st.min_weight, st.max_weight, st.name
            )));
        }
        if let Some(ts) = s.ts {
            if ts >= MAX_TS_MS {
                return Err(Error::TimeOutOfRange {
                    index,
                    what: "ts",
                    value: ts,
                });
            }
            let skew = config.engine.max_future_skew;
            if config.engine.clock == ClockMode::Wall && ts > now_ms.saturating_add(skew.ms()) {
                return Err(Error::TsInFuture {
                    index,
                    ts,
                    ahead_ms: ts - now_ms,
                    max: skew,
                });
            }
        }
        Ok(Signal {
            kind: s.kind,
            item: s.item,
            user: s.user,
            weight,
            ts: s.ts,
            id: s.id,
        })
    }

    /// Checks an item id against the id rules (length, no control characters).
    pub fn check_item_id(&self, id: &str) -> Result<()> {
        check_id("item id", id, self.config.server.max_id_bytes).map_err(Error::InvalidId)
    }

    /// Checks an item's metadata against the limits.
    pub fn check_item(&self, id: &str, meta: &ItemMeta) -> Result<()> {
        self.check_item_id(id)?;
        let max_id = self.config.server.max_id_bytes;
        if let Some(c) = &meta.creator {
            check_id("creator", c, max_id).map_err(Error::InvalidItem)?;
        }
        // A category is a filter's key (`category=`), held to the rules of one.
        if let Some(c) = &meta.category {
            check_id("category", c, max_id).map_err(Error::InvalidItem)?;
        }
        // Each distinct tag is a posting list of its own in every version: their number is
        // bounded as an item's attributes are.
        if meta.tags.len() > MAX_TAGS {
            return Err(Error::InvalidItem(format!(
                "tags: {} of them; an item has at most {MAX_TAGS}",
                meta.tags.len()
            )));
        }
        for t in &meta.tags {
            check_id("tag", t, max_id).map_err(Error::InvalidItem)?;
        }
        if let Some(c) = meta.created_at
            && c >= MAX_TS_MS
        {
            return Err(Error::InvalidItem(format!("created_at {c} is outside [0, 2^43) ms")));
        }
        if let Some(e) = &meta.embedding {
            let max = self.config.server.max_embedding_dim;
            if e.0.is_empty() || e.0.len() > max {
                return Err(Error::InvalidItem(format!(
                    "embedding has {} dimensions; it must have 1 to {max}",
                    e.0.len()
                )));
            }
            if !e.0.iter().all(|x| x.is_finite()) {
                return Err(Error::InvalidItem("embedding must hold finite numbers".into()));
            }
            if e.0.iter().all(|x| *x == 0.0) {
                return Err(Error::InvalidItem(
                    "embedding must not be all zeros (it is scaled to unit length)".into(),
                ));
            }
            let have = self.dimension().dim;
            if have != 0 && have != e.0.len() {
                return Err(self.other_dimension(e.0.len(), have));
            }
        }
        Ok(())
    }

    fn dimension(&self) -> std::sync::MutexGuard<'_, Dimension> {
        self.dimension.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn other_dimension(&self, dim: usize, have: usize) -> Error {
        let why = if self.config.personalization.dimension != 0 {
            "personalization.dimension"
        } else {
            "the first embedding stored"
        };
        Error::InvalidItem(format!(
            "embedding has {dim} dimensions; this tidal's embeddings have {have} ({why})"
        ))
    }

    /// Holds the dimension of `meta`'s embedding for its write: the first one written fixes
    /// it, and writes in flight with another are refused meanwhile. Whether this write holds
    /// it until [`settle_dimension`](Self::settle_dimension).
    fn claim_dimension(&self, meta: &ItemMeta) -> Result<bool> {
        let Some(e) = &meta.embedding else { return Ok(false) };
        let mut d = self.dimension();
        if d.dim == 0 {
            d.dim = e.0.len();
        } else if d.dim != e.0.len() {
            let have = d.dim;
            drop(d);
            return Err(self.other_dimension(e.0.len(), have));
        }
        if d.fixed {
            return Ok(false);
        }
        d.pending += 1;
        Ok(true)
    }

    /// After a write that held the dimension: written, it is fixed; refused (overload, a
    /// poisoned WAL) with no other write of it in flight and none written, it is free again.
    fn settle_dimension(&self, claimed: bool, written: bool) {
        if !claimed {
            return;
        }
        let mut d = self.dimension();
        d.pending = d.pending.saturating_sub(1);
        if written {
            d.fixed = true;
        } else if !d.fixed && d.pending == 0 {
            d.dim = 0;
        }
    }

    /// Puts an item's metadata (replacing what was there); returns once durable.
    pub fn put_item(&self, id: &str, meta: ItemMeta) -> Result<WriteAck> {
        self.check_item(id, &meta)?;
        let claimed = self.claim_dimension(&meta)?;
        let written = self.commit(vec![Record::ItemPut { id: id.into(), meta }]);
        self.settle_dimension(claimed, written.is_ok());
        written
    }

    /// [`put_item`](Self::put_item) without blocking.
    pub async fn put_item_async(&self, id: &str, meta: ItemMeta) -> Result<WriteAck> {
        self.check_item(id, &meta)?;
        let claimed = self.claim_dimension(&meta)?;
        let written = match self.admit() {
            Ok(()) => self.commit_async(vec![Record::ItemPut { id: id.into(), meta }]).await,
            Err(e) => Err(e),
        };
        self.settle_dimension(claimed, written.is_ok());
        Ok(self.write_ack(&written?))
    }

    /// Deletes an item: it leaves every ranking. Returns once durable.
    pub fn delete_item(&self, id: &str) -> Result<WriteAck> {
        self.check_item_id(id)?;
        self.commit(vec![Record::ItemDelete { id: id.into() }])
    }

    /// [`delete_item`](Self::delete_item) without blocking.
    pub async fn delete_item_async(&self, id: &str) -> Result<WriteAck> {
        self.check_item_id(id)?;
        self.admit()?;
        let c = self.commit_async(vec![Record::ItemDelete { id: id.into() }]).await?;
        Ok(self.write_ack(&c))
    }

    fn clock_record(&self, to_ms: u64) -> Result<Record> {
        if self.config.engine.clock != ClockMode::Event {
            return Err(Error::WallClock);
        }
        if to_ms >= MAX_TS_MS {
            return Err(Error::TimeOutOfRange {
                index: 0,
                what: "advance_to",
                value: to_ms,
            });
        }
        Ok(Record::ClockAdvance { to_ms })
    }

    /// Moves the event clock forward to `to_ms` (never back); windows slide and decays fall
    /// as of the new clock. Only in the event clock.
    pub fn advance_clock(&self, to_ms: u64) -> Result<WriteAck> {
        let record = self.clock_record(to_ms)?;
        self.commit(vec![record])
    }

    /// [`advance_clock`](Self::advance_clock) without blocking.
    pub async fn advance_clock_async(&self, to_ms: u64) -> Result<WriteAck> {
        let record = self.clock_record(to_ms)?;
        let c = self.commit_async(vec![record]).await?;
        Ok(self.write_ack(&c))
    }

    /// Writes one checked record; returns once durable.
    pub(super) fn write_one(&self, record: Record) -> Result<WriteAck> {
        self.commit(vec![record])
    }

    /// Writes one checked record without blocking (refused when overloaded).
    pub(super) async fn write_one_async(&self, record: Record) -> Result<WriteAck> {
        self.admit()?;
        let c = self.commit_async(vec![record]).await?;
        Ok(self.write_ack(&c))
    }

    fn commit(&self, records: Vec<Record>) -> Result<WriteAck> {
        let c = self.commit_blocking(records)?;
        Ok(self.write_ack(&c))
    }

    /// Appends records and waits until they are durable (and, in an event-clock cluster,
    /// told to the other processes).
    fn commit_blocking(&self, records: Vec<Record>) -> Result<Commit> {
        let c = self.wal.submit_blocking(records)?;
        if let Some(peers) = self.floor_peers() {
            Self::tell_floor(peers, c.time);
        }
        Ok(c)
    }

    /// In a cluster on the event clock, the peers a commit's time is told to before it is
    /// acknowledged (see [`Peers::push_floor`](crate::cluster::Peers::push_floor)).
    fn floor_peers(&self) -> Option<&std::sync::Arc<crate::cluster::Peers>> {
        self.peers
            .as_ref()
            .filter(|_| self.config.engine.clock == ClockMode::Event)
    }

    /// Another process of this event-clock cluster committed a batch at logical time `time`
    /// (`POST /v1/internal/floor`): this process's next batches come after it, and its part
    /// of the frontier passes it.
    pub fn raise_floor(&self, time: tidal_core::Time) -> Result<()> {
        if self.floor_peers().is_none() {
            return Err(Error::Unsupported {
                what: "only a process of a cluster on the event clock takes another's commits",
            });
        }
        // A clock no client may set would exhaust this log's times.
        let clock = tidal_core::time::clock_of(time);
        if clock >= MAX_TS_MS {
            return Err(Error::TimeOutOfRange {
                index: 0,
                what: "time",
                value: clock,
            });
        }
        self.wal.raise_floor(time);
        Ok(())
    }

    /// In an event-clock cluster, tells the other processes of this log's last batch, as a
    /// commit is told: after a restart their parts of the frontier then pass what this log
    /// recovered (an idle process does not move on its own). `Ok` when told, or when there
    /// is nothing to tell; an error while another process cannot be reached yet (it answers
    /// 503 while it starts): ask again.
    pub fn announce_last_batch(&self) -> Result<()> {
        let Some(peers) = self.floor_peers() else { return Ok(()) };
        // Told even with nothing recovered: the others' reads wait to hear from every process.
        peers.push_floor(self.wal.last_time())
    }

    /// Tells the other processes of an event-clock cluster of a commit at logical time `time`
    /// ([`Peers::push_floor`](crate::cluster::Peers::push_floor)). The write is durable either
    /// way: a process that cannot be told is logged, not answered as a failed write (a
    /// retry would write it twice); the cluster's dataflow stops without it anyway.
    fn tell_floor(peers: &crate::cluster::Peers, time: tidal_core::Time) {
        if let Err(e) = peers.push_floor(time) {
            tracing::warn!(error = %e, "could not tell the other processes of a commit");
        }
    }

    /// Appends records without blocking a thread; resolves once they are durable.
    pub async fn commit_async(&self, records: Vec<Record>) -> Result<Commit> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.wal.submit(
            records,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let c = match rx.await {
            Ok(r) => r?,
            Err(_) => return Err(Error::Closed),
        };
        // In an event-clock cluster the others learn of the batch before it is acknowledged:
        // a write made on another process after this acknowledgement is ordered after it.
        if let Some(peers) = self.floor_peers().cloned() {
            let time = c.time;
            if let Err(e) = tokio::task::spawn_blocking(move || Self::tell_floor(&peers, time)).await {
                tracing::warn!(error = %e, "could not tell the other processes of a commit");
            }
        }
        Ok(c)
    }

    /// Refuses a write while the dataflow is more than `engine.max_lag_signals` behind the WAL.
    /// A caller that has a large body to check asks this first, so that a refused request
    /// costs no parsing: under a flood of writes the refusals must leave the cores to the
    /// dataflow that has to catch up.
    pub fn admit(&self) -> Result<()> {
        let max = self.config.engine.max_lag_signals;
        let behind = self.lag();
        if behind > max {
            return Err(Error::Overloaded {
                reason: Overload::Lag { behind, max },
                retry_after: RETRY_AFTER,
            });
        }
        Ok(())
    }

    /// [`admit`](Self::admit) without blocking a thread, which first waits up to
    /// `engine.max_lag_wait_ms` for the dataflow to come within `engine.max_lag_signals` of
    /// the WAL: writers faster than the dataflow are slowed to its pace, and what they have
    /// written stays that close to visible.
    pub async fn admit_async(&self) -> Result<()> {
        let max = self.config.engine.max_lag_signals;
        if self.lag() <= max {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.engine.max_lag_wait_ms);
        while Instant::now() < deadline {
            tokio::time::sleep(LAG_POLL).await;
            if self.lag() <= max {
                return Ok(());
            }
        }
        self.admit()
    }

    /// Durable signals not yet visible to queries.
    fn lag(&self) -> u64 {
        self.wal.signals_written().saturating_sub(self.view().position.signals)
    }
}

impl Tidal {
    fn token(&self, lsn: u64) -> Option<Token> {
        let cluster = &self.config.cluster;
        (!cluster.is_single()).then_some(Token {
            process: cluster.process_id,
            lsn,
        })
    }

    fn signals_ack(&self, c: &Commit) -> SignalsAck {
        SignalsAck {
            accepted: c.accepted,
            duplicates: c.duplicates,
            lsn: c.last_lsn,
            clock: c.clock_ms,
            token: self.token(c.last_lsn),
        }
    }

    fn write_ack(&self, c: &Commit) -> WriteAck {
        WriteAck {
            lsn: c.last_lsn,
            clock: c.clock_ms,
            token: self.token(c.last_lsn),
        }
    }
}

/// The embedding dimension in force (SPEC §12): the schema's, the one the state's embeddings
/// have, or the first one written; and the writes of a first one still in flight.
#[derive(Debug, Default)]
pub(crate) struct Dimension {
    /// 0: none yet.
    dim: usize,
    /// Written (or declared, or held by the state): no refusal frees it.
    fixed: bool,
    /// Writes holding a dimension not yet fixed.
    pending: usize,
}

impl Dimension {
    /// The dimension a start finds (0: none).
    pub(crate) fn fixed_at(dim: usize) -> Dimension {
        Dimension {
            dim,
            fixed: dim != 0,
            pending: 0,
        }
    }
}
