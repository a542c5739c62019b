//! Read-only access to a WAL directory, for replay, tools and recovery. Files are opened
//! read-only and never modified. Every frame's checksum, the LSN continuity across records
//! and segments, and the order of logical times are checked as the log is read; consecutive
//! records with the same time form one [`CommittedBatch`].

use std::path::{Path, PathBuf};

use tidal_core::record::{CommittedBatch, LoggedRecord};
use tidal_core::time::{Time, clock_of};

use super::error::WalError;
use super::format::{self, FrameMeta, HEADER_BYTES};
use super::segment::{SegmentFile, list_segments, valid_frame_after, zero_tail};

/// One decoded record with its stamp.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadRecord {
    /// LSN, time and clock.
    pub meta: FrameMeta,
    /// The record.
    pub record: tidal_core::Record,
    /// Its segment file.
    pub file: PathBuf,
    /// Its byte offset there.
    pub offset: u64,
}

struct Loaded {
    path: PathBuf,
    data: Vec<u8>,
    pos: usize,
    is_last: bool,
}

/// Reads a WAL directory record by record or batch by batch.
pub struct WalReader {
    segments: Vec<SegmentFile>,
    next_segment: usize,
    current: Option<Loaded>,
    tolerate_torn_tail: bool,
    next_lsn: Option<u64>,
    last_meta: Option<FrameMeta>,
    pending: Option<ReadRecord>,
    pending_err: Option<WalError>,
    torn: Option<(PathBuf, u64)>,
    /// Segments that end in zeros past their records (allocated ahead by the writer), with
    /// the offset where the zeros start.
    zero_tails: Vec<(PathBuf, u64)>,
    finished: bool,
    end: Option<(PathBuf, u64)>,
}

impl WalReader {
    /// Opens the WAL in `dir` for reading. With `tolerate_torn_tail`, a record cut short at
    /// the very end of the log ends the log quietly (see [`WalReader::torn_tail`]); without,
    /// it is a [`WalError::TornTail`].
    pub fn open(dir: impl AsRef<Path>, tolerate_torn_tail: bool) -> Result<WalReader, WalError> {
        let segments = list_segments(dir.as_ref())?;
        Ok(WalReader {
            segments,
            next_segment: 0,
            current: None,
            tolerate_torn_tail,
            next_lsn: None,
            last_meta: None,
            pending: None,
            pending_err: None,
            torn: None,
            zero_tails: Vec::new(),
            finished: false,
            end: None,
        })
    }

    /// Skips the segments that hold only records at or below `lsn` (a resume from a
    /// checkpoint covering them): reading starts at the segment holding `lsn + 1`, or the last
    /// one. Must be called before reading.
    pub fn skip_through(&mut self, lsn: u64) {
        let keep_from = self
            .segments
            .iter()
            .rposition(|s| s.first_lsn <= lsn.saturating_add(1))
            .unwrap_or(0);
        self.segments.drain(..keep_from);
    }

    /// The segment files, in log order.
    pub fn segments(&self) -> &[SegmentFile] {
        &self.segments
    }

    /// Where the torn tail starts (file, offset of the last whole record's end), once the
    /// reader has reached it.
    pub fn torn_tail(&self) -> Option<(PathBuf, u64)> {
        self.torn.clone()
    }

    /// The segments read so far that end in zeros past their records (space the writer
    /// allocated ahead and had not written: the end of the records, not damage), each with the
    /// offset where the zeros start.
    pub fn zero_tails(&self) -> &[(PathBuf, u64)] {
        &self.zero_tails
    }

    /// The LSN the next record would have (1 for an empty log), as far as read.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn.unwrap_or(1)
    }

    /// LSN, time and clock of the last record read.
    pub fn last_meta(&self) -> Option<FrameMeta> {
        self.last_meta
    }

    /// The last segment read and the offset just past its last whole record.
    pub fn end_position(&self) -> Option<(PathBuf, u64)> {
        self.end.clone()
    }

    fn corrupt(path: &Path, offset: usize, reason: impl Into<String>) -> WalError {
        WalError::Corrupt {
            file: path.to_path_buf(),
            offset: offset as u64,
            reason: reason.into(),
        }
    }

    /// A damaged spot: a torn tail if it is at the end of the last segment with nothing
    /// valid after it, corruption otherwise.
    fn damaged(&mut self, offset: usize, reason: String, after_lsn: u64) -> Result<Option<ReadRecord>, WalError> {
        let Some(cur) = &self.current else {
            return Ok(None);
        };
        let torn = cur.is_last && !valid_frame_after(&cur.data, offset + 1, after_lsn);
        let path = cur.path.clone();
        self.finished = true;
        if !torn {
            return Err(Self::corrupt(&path, offset, reason));
        }
        self.end = Some((path.clone(), offset as u64));
        if self.tolerate_torn_tail {
            self.torn = Some((path, offset as u64));
            Ok(None)
        } else {
            Err(WalError::TornTail {
                file: path,
                offset: offset as u64,
                reason,
            })
        }
    }

    fn load_next_segment(&mut self) -> Result<bool, WalError> {
        let Some(seg) = self.segments.get(self.next_segment).cloned() else {
            return Ok(false);
        };
        self.next_segment += 1;
        let is_last = self.next_segment == self.segments.len();
        let data = std::fs::read(&seg.path).map_err(|e| WalError::io(&seg.path, e))?;
        let expected = *self.next_lsn.get_or_insert(seg.first_lsn);
        let header = format::check_header(&data);
        // A segment created by a crash before its header was whole.
        let partial_header = data.len() < HEADER_BYTES && format::header().starts_with(&data);
        self.end = Some((seg.path.clone(), data.len() as u64));
        let pos = HEADER_BYTES.min(data.len());
        self.current = Some(Loaded {
            path: seg.path.clone(),
            data,
            pos,
            is_last,
        });
        if let Err(reason) = header {
            if partial_header {
                self.damaged(0, reason.to_string(), expected.saturating_sub(1))?;
                return Ok(false);
            }
            self.finished = true;
            return Err(Self::corrupt(&seg.path, 0, reason.to_string()));
        }
        if seg.first_lsn != expected {
            self.finished = true;
            return Err(Self::corrupt(
                &seg.path,
                0,
                format!(
                    "LSN gap: the segment is named for LSN {} but the log before it ends at LSN {}",
                    seg.first_lsn,
                    expected.saturating_sub(1)
                ),
            ));
        }
        Ok(true)
    }

    /// The next record, `None` at the end of the log (or at a tolerated torn tail).
    pub fn next_record(&mut self) -> Result<Option<ReadRecord>, WalError> {
        if let Some(r) = self.pending.take() {
            return Ok(Some(r));
        }
        loop {
            if self.finished {
                return Ok(None);
            }
            let at_end = self.current.as_ref().is_none_or(|c| c.pos >= c.data.len());
            if !at_end
                && let Some(cur) = &mut self.current
                && cur.data.get(cur.pos..cur.pos + 4) == Some(&[0; 4])
                && zero_tail(&cur.data, cur.pos)
            {
                // Zeros past the records: this segment's records end here.
                self.zero_tails.push((cur.path.clone(), cur.pos as u64));
                self.end = Some((cur.path.clone(), cur.pos as u64));
                cur.pos = cur.data.len();
                continue;
            }
            if at_end {
                if !self.load_next_segment()? {
                    self.finished = true;
                    return Ok(None);
                }
                continue;
            }
            return self.decode_at_cursor();
        }
    }

    fn decode_at_cursor(&mut self) -> Result<Option<ReadRecord>, WalError> {
        let expected = self.next_lsn.unwrap_or(1);
        let Some(cur) = &self.current else {
            return Ok(None);
        };
        let pos = cur.pos;
        let frame = match format::decode_frame(&cur.data[pos..]) {
            Ok(f) => f,
            Err(e) => return self.damaged(pos, e.to_string(), expected.saturating_sub(1)),
        };
        let path = cur.path.clone();
        let meta = frame.meta;
        let fail = |this: &mut WalReader, reason: String| {
            this.finished = true;
            Err(Self::corrupt(&path, pos, reason))
        };
        if meta.lsn != expected {
            return fail(self, format!("LSN gap: expected LSN {expected}, found {}", meta.lsn));
        }
        if clock_of(meta.time) != meta.clock_ms {
            return fail(
                self,
                format!(
                    "record LSN {} has time {} but clock {}",
                    meta.lsn, meta.time, meta.clock_ms
                ),
            );
        }
        if let Some(prev) = self.last_meta
            && meta.time < prev.time
        {
            return fail(
                self,
                format!(
                    "record LSN {} goes back in time ({} after {})",
                    meta.lsn, meta.time, prev.time
                ),
            );
        }
        let record = match frame.record() {
            Ok(r) => r,
            Err(reason) => return fail(self, format!("record LSN {}: {reason}", meta.lsn)),
        };
        let size = frame.size;
        if let Some(cur) = &mut self.current {
            cur.pos += size;
        }
        self.next_lsn = Some(expected + 1);
        self.last_meta = Some(meta);
        Ok(Some(ReadRecord {
            meta,
            record,
            file: path,
            offset: pos as u64,
        }))
    }

    /// The next committed batch: consecutive records sharing one logical time.
    pub fn next_batch(&mut self) -> Result<Option<CommittedBatch>, WalError> {
        if let Some(e) = self.pending_err.take() {
            return Err(e);
        }
        let Some(first) = self.next_record()? else {
            return Ok(None);
        };
        let time: Time = first.meta.time;
        let clock_ms = first.meta.clock_ms;
        let mut records = vec![LoggedRecord {
            lsn: first.meta.lsn,
            record: first.record,
        }];
        loop {
            match self.next_record() {
                Ok(Some(r)) if r.meta.time == time => {
                    records.push(LoggedRecord {
                        lsn: r.meta.lsn,
                        record: r.record,
                    });
                }
                Ok(Some(r)) => {
                    self.pending = Some(r);
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    // Hand out the whole records first; the error comes next.
                    self.pending_err = Some(e);
                    break;
                }
            }
        }
        Ok(Some(CommittedBatch {
            time,
            clock_ms,
            records,
        }))
    }
}

impl Iterator for WalReader {
    type Item = Result<CommittedBatch, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}
