//! The writer thread: the only code that appends to the WAL. It takes submissions from a
//! channel in groups (up to `max_batch_records` records or `max_batch_delay` of waiting),
//! drops duplicates, stamps the group with one clock and logical time, encodes every frame
//! into one reused buffer, writes it with one `write_all`, syncs once, pushes the committed
//! batch into the feed and answers every producer. A failed write or sync poisons
//! the WAL. In the wall clock an idle writer advances the clock and seals the feed every
//! `tick`, so that the passing of time reaches the dataflow.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tidal_core::record::{CommittedBatch, LoggedRecord, Record};
use tidal_core::time::{ClockMode, Durability, MAX_TS_MS, wall_clock_ms};

use super::clock::CommitClock;
use super::dedup::Dedup;
use super::format::{self, FrameMeta, MAX_FRAME_BYTES};
use super::handle::{Reply, Status, Submission, WalHandle};
use super::recovery::Recovered;
use super::segment::ActiveSegment;
use super::{Commit, WalError, WalOptions};
use crate::feed::Feed;

struct Writer {
    opts: WalOptions,
    feed: Arc<Feed>,
    status: Arc<Status>,
    clock: CommitClock,
    /// Shared with the handle, which snapshots it for checkpoints.
    dedup: Arc<Mutex<Dedup>>,
    next_lsn: u64,
    active: Option<ActiveSegment>,
    buf: Vec<u8>,
    poison: Option<String>,
}

/// One submission's fate within a group.
struct Plan {
    reply: Reply,
    records: Vec<Record>,
    error: Option<WalError>,
    duplicates: usize,
    accepted: usize,
    lsns: Option<(u64, u64)>,
}

/// Starts the writer thread after recovery.
pub(crate) fn spawn(
    opts: WalOptions,
    feed: Arc<Feed>,
    rec: Recovered,
    clock: CommitClock,
) -> Result<WalHandle, WalError> {
    let active = match &rec.active {
        Some(path) => Some(ActiveSegment::open_existing(path, opts.durability)?),
        None => None,
    };
    let status = Arc::new(Status::default());
    status.last_lsn.store(rec.next_lsn - 1, Ordering::Release);
    status.signals.store(rec.signals, Ordering::Release);
    status.dedup_entries.store(rec.dedup.len() as u64, Ordering::Release);
    status.clock_ms.store(clock.clock_ms(), Ordering::Release);
    status
        .last_time
        .store(clock.last_time().unwrap_or(0), Ordering::Release);
    let (tx, rx) = crossbeam_channel::bounded(opts.queue_capacity);
    let dedup = Arc::new(Mutex::new(rec.dedup));
    let mut writer = Writer {
        opts,
        feed,
        status: status.clone(),
        clock,
        dedup: dedup.clone(),
        next_lsn: rec.next_lsn,
        active,
        buf: Vec::with_capacity(1 << 20),
        poison: None,
    };
    let thread = std::thread::Builder::new()
        .name("tidal-wal-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| WalError::io(std::path::PathBuf::from("<wal writer thread>"), e))?;
    Ok(WalHandle::new(tx, thread, status, dedup))
}

impl Writer {
    fn run(&mut self, rx: Receiver<Submission>) {
        loop {
            let first = match rx.recv_timeout(self.opts.tick) {
                Ok(s) => s,
                Err(RecvTimeoutError::Timeout) => {
                    self.idle_tick();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut records = first.records.len();
            let mut group = vec![first];
            // With no delay the group is what is queued now: `recv_deadline` with a deadline
            // already passed still spins and yields the core (crossbeam's backoff) before it
            // looks at the clock, and on two busy cores a yield can cost the commit a slice.
            let wait = !self.opts.max_batch_delay.is_zero();
            let deadline = Instant::now() + self.opts.max_batch_delay;
            while records < self.opts.max_batch_records {
                let next = match rx.try_recv() {
                    Ok(s) => Ok(s),
                    Err(_) if wait => rx.recv_deadline(deadline),
                    Err(_) => break,
                };
                match next {
                    Ok(s) => {
                        records += s.records.len();
                        group.push(s);
                    }
                    Err(_) => break,
                }
            }
            let wrote = self.commit_group(group);
            if !wrote {
                self.idle_tick();
            }
        }
        self.finish();
    }

    /// Moves the clock without a batch: in the wall clock to now, in the event clock to the
    /// floor other processes asked for (nothing when none did), and seals the feed there.
    fn idle_tick(&mut self) {
        if self.poison.is_some() {
            return;
        }
        let seal = match self.opts.clock {
            ClockMode::Wall => self.clock.advance_idle(wall_clock_ms()),
            ClockMode::Event => match self.status.floor.load(Ordering::Acquire) {
                0 => return,
                floor => self.clock.raise_floor(floor),
            },
        };
        self.status.clock_ms.store(self.clock.clock_ms(), Ordering::Release);
        self.feed.advance(seal);
    }

    fn finish(&mut self) {
        if self.poison.is_none()
            && let Some(seg) = &mut self.active
            // A stop syncs whatever the durability mode.
            && let Err(e) = seg.seal(Durability::Fsync)
        {
            tracing::error!(file = %seg.path.display(), error = %e, "WAL sync at shutdown failed");
        }
        self.feed.close();
    }

    /// Commits one group; returns whether anything was written.
    fn commit_group(&mut self, group: Vec<Submission>) -> bool {
        if let Some(cause) = &self.poison {
            for s in group {
                s.reply.send(Err(WalError::Poisoned { cause: cause.clone() }));
            }
            return false;
        }
        let wall = wall_clock_ms();
        // Another process's batch acknowledged before these came is ordered before them.
        let floor = self.status.floor.load(Ordering::Acquire);
        if floor > 0 {
            self.clock.raise_floor(floor);
        }
        let clock_before = self.clock.clock_ms();
        let mut plans: Vec<Plan> = group.into_iter().map(|s| self.check(s, clock_before)).collect();
        // Duplicates are judged at the clock the accepted records ask for.
        let target_all = self.clock.target(
            plans.iter().filter(|p| p.error.is_none()).flat_map(|p| &p.records),
            wall,
        );
        let dedup_clock = self.clock.peek(target_all);
        {
            let mut dedup = self.dedup.lock().unwrap_or_else(|p| p.into_inner());
            for p in plans.iter_mut().filter(|p| p.error.is_none()) {
                dedup_plan(&mut dedup, p, dedup_clock);
            }
        }

        let writable = plans.iter().any(|p| p.error.is_none() && !p.records.is_empty());
        let mut batch = None;
        if writable {
            let target = self.clock.target(
                plans.iter().filter(|p| p.error.is_none()).flat_map(|p| &p.records),
                wall,
            );
            let stamp = self.clock.stamp(target);
            self.dedup
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .commit(self.clock.clock_ms());
            let Some((clock_ms, time)) = stamp else {
                for p in plans {
                    p.reply.send(Err(WalError::ClockExhausted));
                }
                return false;
            };
            let logged = self.encode(&mut plans, clock_ms, time);
            if let Err(e) = self.write_buffer() {
                let cause = e.to_string();
                tracing::error!(error = %cause, "WAL write failed; the WAL is poisoned");
                self.status.poison(cause.clone());
                self.poison = Some(cause.clone());
                for p in plans {
                    p.reply.send(Err(WalError::Poisoned { cause: cause.clone() }));
                }
                return false;
            }
            self.next_lsn += logged.len() as u64;
            let written: usize = plans.iter().filter(|p| p.error.is_none()).map(|p| p.accepted).sum();
            batch = Some((
                CommittedBatch {
                    time,
                    clock_ms,
                    records: logged,
                },
                written,
            ));
        }

        {
            let dedup = self.dedup.lock().unwrap_or_else(|p| p.into_inner());
            self.status.dedup_entries.store(dedup.len() as u64, Ordering::Release);
            self.status.dedup_evicted.store(dedup.evicted(), Ordering::Release);
        }
        // The batch is in the feed before any producer is answered, so that whatever a
        // producer has been told is committed is already on its way to the readers: a
        // checkpoint or a flush asked of the feed after an acknowledgement covers it.
        let wrote = match batch {
            Some((b, written)) => {
                let time = b.time;
                let wrote = !b.records.is_empty();
                if wrote {
                    // In the feed now, the reader woken once the producers are answered:
                    // woken first, the dataflow took the core the answers needed.
                    self.feed.push_quietly(Arc::new(b));
                }
                // Published once the batch is in the feed: a checkpoint asked for up to the
                // last LSN read here covers a batch the feed has.
                self.status.last_lsn.store(self.next_lsn - 1, Ordering::Release);
                self.status.clock_ms.store(self.clock.clock_ms(), Ordering::Release);
                self.status.last_time.store(time, Ordering::Release);
                self.status.signals.fetch_add(written as u64, Ordering::AcqRel);
                wrote
            }
            None => false,
        };
        let last_lsn = self.next_lsn - 1;
        let clock_ms = self.clock.clock_ms();
        let time = self.clock.last_time().unwrap_or(0);
        for p in plans {
            let result = match p.error {
                Some(e) => Err(e),
                None => {
                    let (first_lsn, last) = p.lsns.unwrap_or((last_lsn, last_lsn));
                    Ok(Commit {
                        first_lsn,
                        last_lsn: last,
                        clock_ms,
                        time,
                        accepted: p.accepted,
                        duplicates: p.duplicates,
                    })
                }
            };
            p.reply.send(result);
        }
        if wrote {
            let _ = self.feed.wake_for_batches();
        }
        wrote
    }

    /// Checks a submission's size and times; a bad submission is answered with its error and
    /// writes nothing. In the event clock, once the clock is set (`clock_ms > 0`), a signal
    /// may move it forward by at most `max_clock_jump_ms`.
    fn check(&self, s: Submission, clock_ms: u64) -> Plan {
        let mut plan = Plan {
            reply: s.reply,
            records: s.records,
            error: None,
            duplicates: 0,
            accepted: 0,
            lsns: None,
        };
        if let Some(e) = self.check_records(&plan.records, clock_ms) {
            plan.error = Some(e);
            plan.records.clear();
        }
        plan
    }

    fn check_records(&self, records: &[Record], clock_ms: u64) -> Option<WalError> {
        if let Some(bytes) = records
            .iter()
            .map(|r| format::frame_len(r) - 4)
            .find(|&n| n > MAX_FRAME_BYTES)
        {
            return Some(WalError::TooLarge {
                bytes,
                max: MAX_FRAME_BYTES,
            });
        }
        let event = self.opts.clock == ClockMode::Event;
        let limit = clock_ms.saturating_add(self.opts.max_clock_jump_ms);
        let mut index = 0;
        for (ri, r) in records.iter().enumerate() {
            match r {
                Record::Signals(sigs) => {
                    for sig in sigs {
                        if let Some(ts) = sig.ts {
                            if ts >= MAX_TS_MS {
                                return Some(WalError::TimeOutOfRange {
                                    index,
                                    what: "ts",
                                    value: ts,
                                });
                            }
                            if event && clock_ms > 0 && ts > limit {
                                return Some(WalError::ClockJump {
                                    index,
                                    ts,
                                    clock: clock_ms,
                                    max_ms: self.opts.max_clock_jump_ms,
                                });
                            }
                        }
                        index += 1;
                    }
                }
                Record::ClockAdvance { to_ms } if *to_ms >= MAX_TS_MS => {
                    return Some(WalError::TimeOutOfRange {
                        index: ri,
                        what: "advance_to",
                        value: *to_ms,
                    });
                }
                _ => {}
            }
        }
        None
    }

    /// Encodes every planned record into the buffer with its LSN; moves them into the batch.
    fn encode(&mut self, plans: &mut [Plan], clock_ms: u64, time: u64) -> Vec<LoggedRecord> {
        self.buf.clear();
        let mut lsn = self.next_lsn;
        let mut logged = Vec::new();
        for p in plans.iter_mut().filter(|p| p.error.is_none() && !p.records.is_empty()) {
            let start_buf = self.buf.len();
            let start_lsn = lsn;
            let mut failed = None;
            for r in &p.records {
                if let Err(bytes) = format::encode_frame(&mut self.buf, FrameMeta { lsn, time, clock_ms }, r) {
                    failed = Some(bytes);
                    break;
                }
                lsn += 1;
            }
            if let Some(bytes) = failed {
                self.buf.truncate(start_buf);
                lsn = start_lsn;
                p.error = Some(WalError::TooLarge {
                    bytes,
                    max: MAX_FRAME_BYTES,
                });
                continue;
            }
            p.lsns = Some((start_lsn, lsn - 1));
            for (i, record) in std::mem::take(&mut p.records).into_iter().enumerate() {
                logged.push(LoggedRecord {
                    lsn: start_lsn + i as u64,
                    record,
                });
            }
        }
        logged
    }

    /// Writes the buffer to the active segment (rolling it first if full) and syncs once.
    fn write_buffer(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let durability = self.opts.durability;
        let full = self
            .active
            .as_ref()
            .is_none_or(|a| a.has_records && a.len >= self.opts.segment_bytes);
        if full {
            // Sealed without the zeros allocated past its records, before the next exists.
            if let Some(mut old) = self.active.take() {
                old.seal(durability)?;
            }
            self.active = Some(ActiveSegment::create(&self.opts.dir, self.next_lsn, durability)?);
        }
        let Some(seg) = self.active.as_mut() else {
            return Err(WalError::Closed);
        };
        seg.write(&self.buf)?;
        seg.has_records = true;
        let injected = self.opts.fail_sync.as_ref().is_some_and(|f| f.load(Ordering::Acquire));
        if injected {
            return Err(WalError::io(
                &seg.path,
                std::io::Error::other("injected sync failure (fault-injection hook)"),
            ));
        }
        seg.sync(durability)
    }
}

/// Drops a checked submission's duplicate signals at the dedup clock.
fn dedup_plan(dedup: &mut Dedup, plan: &mut Plan, dedup_clock: u64) {
    if dedup.enabled() {
        for r in &mut plan.records {
            if let Record::Signals(sigs) = r {
                plan.duplicates += dedup.filter(sigs, dedup_clock);
            }
        }
        if plan.duplicates > 0 {
            plan.records
                .retain(|r| !matches!(r, Record::Signals(s) if s.is_empty()));
        }
    }
    plan.accepted = plan.records.iter().map(Record::signal_count).sum();
}
