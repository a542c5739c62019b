//! The cohort rollups' retained signals in a checkpoint: written from the arrangement's
//! trace a slice at a time beside the worker's other work, and read back at a restore.

use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::trace::cursor::{Cursor as _, CursorList, cursor_list};
use differential_dataflow::trace::{Navigable, TraceReader};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use tidal_core::codec::{Cursor, DecodeError, put_u64, put_varint, put_zigzag};
use tidal_core::flow::{ItemKey, KindIdx, Persist, UserKey};
use tidal_core::record::Position;
use tidal_core::time::Time;

use super::RetainedTrace;
use crate::dense::SPILL;
use crate::{SignalEv, Slices};

/// Writes the retained signals (their weight summed over the times before the checkpoint's
/// frontier) into checkpoint part `retained` at every checkpoint marker, reading the
/// arrangement's trace once it is complete up to the frontier. The retraction times are not
/// saved: they follow from each signal's type and `ts_eff`.
///
/// The worker does not stand still for it: it takes the trace's batches as they are at the
/// frontier (immutable; merges make new ones) and encodes a slice of them per activation,
/// a slice of its time each ([`Slices`]), handing the bytes to the checkpointer's thread as they
/// are made, until all are written. Once its inputs are done (the dataflow ends) it writes
/// the rest at once.
pub(super) fn save_retained<'s>(
    arranged: Arranged<'s, RetainedTrace>,
    markers: StreamVec<'s, Time, (SignalEv, Time, isize)>,
    persist: Persist,
) {
    let scope = markers.scope();
    let index = scope.index();
    let mut trace = arranged.trace;
    let mut op = OperatorBuilder::new("SaveRetained".to_owned(), scope);
    let activator = scope.activator_for(op.operator_info().address);
    let mut batches = op.new_input(arranged.stream, Pipeline);
    let mut marks = op.new_input(markers, Pipeline);
    let mut pending: std::collections::VecDeque<(Time, Position)> = std::collections::VecDeque::new();
    let mut compacted: Time = 0;
    let mut streaming: Option<RetainedStream> = None;
    // Incomplete while a part is being written (the dataflow is not dropped under it).
    op.build_reschedule(move |_| {
        move |frontiers| {
            batches.for_each(|_, _| {});
            marks.for_each(|_, data| {
                for (ev, _, _) in data.iter() {
                    pending.push_back((
                        ev.ts_eff,
                        Position {
                            lsn: ev.item,
                            signals: ev.user,
                        },
                    ));
                }
            });
            let front = |i: usize| frontiers[i].frontier().iter().min().copied().unwrap_or(Time::MAX);
            let (arranged_to, marks_to) = (front(0), front(1));
            // With both inputs done the dataflow is about to end: no slice waits for later.
            let ending = arranged_to == Time::MAX && marks_to == Time::MAX;
            loop {
                if let Some(s) = streaming.as_mut() {
                    let until = (!ending).then(|| s.slices.until());
                    let done = s.step(until);
                    s.slices.ended();
                    if !done {
                        activator.activate();
                        break;
                    }
                    tracing::debug!(
                        worker = index,
                        signals = s.kept,
                        slices = s.slices.count,
                        ms = s.slices.spent.as_secs_f64() * 1e3,
                        "retained signals checkpointed"
                    );
                    streaming = None;
                }
                let Some(&(frontier, position)) = pending.front() else {
                    break;
                };
                if arranged_to < frontier {
                    break;
                }
                pending.pop_front();
                if !persist.writes() {
                    continue;
                }
                let batches = trace
                    .batches_through(timely::progress::frontier::AntichainRef::new(&[]))
                    .unwrap_or_default();
                let (cursor, storage) = cursor_list(batches);
                let (tx, rx) = std::sync::mpsc::channel::<Piece>();
                let fill = move |w: &mut dyn std::io::Write| {
                    for piece in rx {
                        match piece {
                            Piece::Bytes(bytes) => w.write_all(&bytes)?,
                            Piece::End => return Ok(()),
                        }
                    }
                    Err(std::io::Error::other("the retained signals stopped before their end"))
                };
                persist.write_later(index, "retained", frontier, position, Box::new(fill));
                streaming = Some(RetainedStream {
                    cursor,
                    storage,
                    frontier,
                    tx,
                    buf: Vec::with_capacity(SPILL + 64),
                    last_ts: 0,
                    kept: 0,
                    slices: Slices::new(),
                });
            }
            // What is compacted: the times before the arrangement's and the markers'
            // frontiers, never up to a checkpoint still to be read. Compaction to `c` shows an
            // earlier time as `c`, so for the times before a frontier `F` to stay before it,
            // `c < F`; a marker not received yet has `F` at or after the markers' frontier
            // (a marker may be sent at its own frontier). A part being written reads batches
            // taken before: compaction makes new ones and leaves those as they are.
            let to = arranged_to
                .min(marks_to)
                .min(pending.front().map_or(Time::MAX, |p| p.0))
                .saturating_sub(1);
            if to > compacted {
                compacted = to;
                let f = [to];
                trace.set_logical_compaction(timely::progress::frontier::AntichainRef::new(&f));
                trace.set_physical_compaction(timely::progress::frontier::AntichainRef::new(&f));
            }
            streaming.is_some()
        }
    });
}

/// Users encoded between two looks at the clock.
const USERS_PER_LOOK: u32 = if cfg!(debug_assertions) { 1 } else { 256 };

/// What the worker hands the checkpointer's thread for the retained part.
enum Piece {
    Bytes(Vec<u8>),
    /// Everything is sent (without it the part is incomplete and fails).
    End,
}

type RetainedBatch = <RetainedTrace as TraceReader>::Batch;

/// The retained part of one checkpoint being encoded, a slice at a time.
struct RetainedStream {
    cursor: CursorList<<RetainedBatch as Navigable>::Cursor>,
    storage: Vec<RetainedBatch>,
    frontier: Time,
    tx: std::sync::mpsc::Sender<Piece>,
    buf: Vec<u8>,
    last_ts: u64,
    kept: u64,
    slices: Slices,
}

impl RetainedStream {
    /// Encodes users' signals until `until` (or all of them): a record per signal behind a
    /// tag byte (1: the previous record's user; 2: a new user, its key follows), then a 0.
    /// Item and type are varints, `ts_eff` the difference from the previous record's, the
    /// weight a zigzag varint. True once everything is handed over (or the checkpointer no
    /// longer takes it).
    fn step(&mut self, until: Option<std::time::Instant>) -> bool {
        let (cursor, storage, frontier) = (&mut self.cursor, &self.storage, self.frontier);
        let mut users = 0u32;
        while cursor.key_valid(storage) {
            let user = *cursor.key(storage);
            let mut named = false;
            while cursor.val_valid(storage) {
                let (item, kind, ts_eff) = *cursor.val(storage);
                let mut w = 0i64;
                cursor.map_times(storage, |t, d| {
                    if *t < frontier {
                        w = w.wrapping_add(*d);
                    }
                });
                if w != 0 {
                    if named {
                        self.buf.push(1);
                    } else {
                        self.buf.push(2);
                        put_u64(&mut self.buf, user);
                        named = true;
                    }
                    put_varint(&mut self.buf, item);
                    put_varint(&mut self.buf, u64::from(kind));
                    put_zigzag(&mut self.buf, ts_eff.wrapping_sub(self.last_ts) as i64);
                    self.last_ts = ts_eff;
                    put_zigzag(&mut self.buf, w);
                    self.kept += 1;
                }
                cursor.step_val(storage);
            }
            cursor.step_key(storage);
            if self.buf.len() >= SPILL {
                let full = std::mem::replace(&mut self.buf, Vec::with_capacity(SPILL + 64));
                if self.tx.send(Piece::Bytes(full)).is_err() {
                    return true;
                }
            }
            users += 1;
            if users.is_multiple_of(USERS_PER_LOOK) && until.is_some_and(|u| std::time::Instant::now() >= u) {
                return false;
            }
        }
        self.buf.push(0);
        let last = std::mem::take(&mut self.buf);
        let _ = self.tx.send(Piece::Bytes(last)).and_then(|()| self.tx.send(Piece::End));
        true
    }
}

/// Reads what [`save_retained`] wrote: `(user, item, type, ts_eff, weight)` per signal.
pub(super) fn load_retained(
    bytes: &[u8],
    mut each: impl FnMut(UserKey, ItemKey, KindIdx, u64, i64),
) -> Result<(), DecodeError> {
    let mut c = Cursor::new(bytes);
    let (mut user, mut last_ts) = (None, 0u64);
    loop {
        match c.u8("retained")? {
            0 => break,
            1 => {}
            2 => user = Some(c.u64("user")?),
            tag => {
                return Err(DecodeError::OutOfRange {
                    what: "retained",
                    value: u64::from(tag),
                });
            }
        }
        let Some(user) = user else {
            return Err(DecodeError::OutOfRange {
                what: "retained user",
                value: 1,
            });
        };
        let item = c.varint("item")?;
        let kind = c.varint("kind")?;
        let kind = KindIdx::try_from(kind).map_err(|_| DecodeError::OutOfRange {
            what: "kind",
            value: kind,
        })?;
        let ts_eff = last_ts.wrapping_add(c.zigzag("ts_eff")? as u64);
        last_ts = ts_eff;
        let w = c.zigzag("weight")?;
        each(user, item, kind, ts_eff, w);
    }
    c.finish()
}
