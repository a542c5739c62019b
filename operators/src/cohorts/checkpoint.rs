//! The cohort rollups' retained signals in a checkpoint: written from the arrangement's
//! trace by the checkpointer's thread while the worker goes on, and read back at a restore.

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
use crate::SignalEv;
use crate::dense::SPILL;

/// Writes the retained signals (their weight summed over the times before the checkpoint's
/// frontier) into checkpoint part `retained` at every checkpoint marker, reading the
/// arrangement's trace once it is complete up to the frontier. The retraction times are not
/// saved: they follow from each signal's type and `ts_eff`.
///
/// The worker does not encode them: it takes the trace's batches as they are at the frontier
/// (immutable; merges make new ones, and the batches are shared across threads: [`Shared`])
/// and hands them to the checkpointer's thread, which walks and encodes them. Encoded on the
/// worker, a slice per activation, they took ~130 ms of it per checkpoint at 2M retained
/// signals, in the way of every signal that came meanwhile.
///
/// [`Shared`]: super::shared::Shared
pub(super) fn save_retained<'s>(
    arranged: Arranged<'s, RetainedTrace>,
    markers: StreamVec<'s, Time, (SignalEv, Time, isize)>,
    persist: Persist,
) {
    let scope = markers.scope();
    let index = scope.index();
    let mut trace = arranged.trace;
    let mut op = OperatorBuilder::new("SaveRetained".to_owned(), scope);
    let mut batches = op.new_input(arranged.stream, Pipeline);
    let mut marks = op.new_input(markers, Pipeline);
    let mut pending: std::collections::VecDeque<(Time, Position)> = std::collections::VecDeque::new();
    let mut compacted: Time = 0;
    op.build(move |_| {
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
            while let Some(&(frontier, position)) = pending.front() {
                if arranged_to < frontier {
                    break;
                }
                pending.pop_front();
                if !persist.writes() {
                    continue;
                }
                let taken = trace
                    .batches_through(timely::progress::frontier::AntichainRef::new(&[]))
                    .unwrap_or_default();
                let (mut cursor, storage) = cursor_list(taken);
                let fill = move |w: &mut dyn std::io::Write| {
                    let began = std::time::Instant::now();
                    let kept = encode_retained(&mut cursor, &storage, frontier, w)?;
                    tracing::debug!(
                        worker = index,
                        signals = kept,
                        ms = began.elapsed().as_secs_f64() * 1e3,
                        "retained signals checkpointed"
                    );
                    Ok(())
                };
                persist.write_later(index, "retained", frontier, position, Box::new(fill));
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
        }
    });
}

type RetainedBatch = <RetainedTrace as TraceReader>::Batch;

type RetainedCursor = CursorList<<RetainedBatch as Navigable>::Cursor>;

/// Encodes the retained signals: a record per signal behind a tag byte (1: the previous
/// record's user; 2: a new user, its key follows), then a 0. Item and type are varints,
/// `ts_eff` the difference from the previous record's, the weight a zigzag varint. Returns how
/// many signals it wrote.
fn encode_retained(
    cursor: &mut RetainedCursor,
    storage: &Vec<RetainedBatch>,
    frontier: Time,
    w: &mut dyn std::io::Write,
) -> std::io::Result<u64> {
    let mut buf = Vec::with_capacity(SPILL + 64);
    let (mut last_ts, mut kept) = (0u64, 0u64);
    while cursor.key_valid(storage) {
        let user = *cursor.key(storage);
        let mut named = false;
        while cursor.val_valid(storage) {
            let (item, kind, ts_eff) = *cursor.val(storage);
            let mut weight = 0i64;
            cursor.map_times(storage, |t, d| {
                if *t < frontier {
                    weight = weight.wrapping_add(*d);
                }
            });
            if weight != 0 {
                if named {
                    buf.push(1);
                } else {
                    buf.push(2);
                    put_u64(&mut buf, user);
                    named = true;
                }
                put_varint(&mut buf, item);
                put_varint(&mut buf, u64::from(kind));
                put_zigzag(&mut buf, ts_eff.wrapping_sub(last_ts) as i64);
                last_ts = ts_eff;
                put_zigzag(&mut buf, weight);
                kept += 1;
            }
            cursor.step_val(storage);
        }
        cursor.step_key(storage);
        if buf.len() >= SPILL {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    buf.push(0);
    w.write_all(&buf)?;
    Ok(kept)
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
