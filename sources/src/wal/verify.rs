//! The checks and listings behind `tidal wal verify DIR` and `tidal wal inspect DIR`. Both
//! read the directory with a [`WalReader`] and never modify it.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use tidal_core::record::Record;

use super::error::WalError;
use super::format::{kind_name, record_kind};
use super::reader::WalReader;

/// What `verify` found in a WAL directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The directory.
    pub dir: PathBuf,
    /// Segment files.
    pub segments: usize,
    /// Bytes in the segment files.
    pub bytes: u64,
    /// Records (client requests).
    pub records: u64,
    /// Committed batches (group commits).
    pub batches: u64,
    /// Signals in those records.
    pub signals: u64,
    /// LSN of the first record.
    pub first_lsn: Option<u64>,
    /// LSN of the last record.
    pub last_lsn: Option<u64>,
    /// Commit clock of the first and last batch, ms.
    pub clock_range: Option<(u64, u64)>,
    /// A torn tail: the file and the offset where the last whole record ends.
    pub torn_tail: Option<(PathBuf, u64)>,
    /// Damage other than a torn tail, where reading stopped (the counts above are of the
    /// records before it): the file, the offset and what is wrong.
    pub damage: Option<(PathBuf, u64, String)>,
}

impl VerifyReport {
    /// Whether the log is whole (no torn tail).
    pub fn is_clean(&self) -> bool {
        self.torn_tail.is_none() && self.damage.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "WAL {}", self.dir.display())?;
        writeln!(f, "  segments  {} ({} bytes)", self.segments, self.bytes)?;
        writeln!(f, "  records   {} in {} batches", self.records, self.batches)?;
        writeln!(f, "  signals   {}", self.signals)?;
        match (self.first_lsn, self.last_lsn) {
            (Some(a), Some(b)) => writeln!(f, "  lsn       {a} ..= {b}")?,
            _ => writeln!(f, "  lsn       (empty log)")?,
        }
        if let Some((a, b)) = self.clock_range {
            writeln!(f, "  clock     {} ({a}) .. {} ({b})", iso8601(a), iso8601(b))?;
        }
        if let Some((file, offset, reason)) = &self.damage {
            return write!(
                f,
                "  status    CORRUPT in {} at offset {offset}: {reason} (the counts above are of the records \
                 before it; a start refuses this log)",
                file.display()
            );
        }
        match &self.torn_tail {
            Some((file, offset)) => write!(
                f,
                "  status    TORN TAIL in {} at offset {offset}: the last record is cut short \
                 (opening the WAL truncates it)",
                file.display()
            ),
            None => write!(f, "  status    ok: every checksum, LSN and time verified"),
        }
    }
}

/// Reads the whole WAL in `dir`, checking every frame: a torn tail or other damage is
/// described in the report (reading stops at damage); fails only when the log cannot be
/// opened.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport, WalError> {
    let dir = dir.as_ref();
    let mut reader = WalReader::open(dir, true)?;
    let mut report = VerifyReport {
        dir: dir.to_path_buf(),
        ..VerifyReport::default()
    };
    report.segments = reader.segments().len();
    for seg in reader.segments() {
        report.bytes += std::fs::metadata(&seg.path)
            .map_err(|e| WalError::io(&seg.path, e))?
            .len();
    }
    loop {
        let batch = match reader.next_batch() {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(WalError::Corrupt { file, offset, reason }) => {
                report.damage = Some((file, offset, reason));
                return Ok(report);
            }
            Err(e) => return Err(e),
        };
        report.batches += 1;
        report.records += batch.records.len() as u64;
        report.signals += batch
            .records
            .iter()
            .map(|r| r.record.signal_count() as u64)
            .sum::<u64>();
        if report.first_lsn.is_none() {
            report.first_lsn = batch.records.first().map(|r| r.lsn);
        }
        report.last_lsn = Some(batch.last_lsn());
        report.clock_range = Some(match report.clock_range {
            None => (batch.clock_ms, batch.clock_ms),
            Some((a, _)) => (a, batch.clock_ms),
        });
    }
    report.torn_tail = reader.torn_tail();
    Ok(report)
}

/// Writes one line per record of the WAL in `dir` (at most `limit`): LSN, logical time,
/// clock, kind and a summary. A torn tail ends the listing with a note; other damage is an
/// error after the records before it.
pub fn inspect(dir: impl AsRef<Path>, out: &mut dyn Write, limit: Option<usize>) -> Result<(), WalError> {
    let dir = dir.as_ref();
    let io = |e| WalError::io(PathBuf::from("<output>"), e);
    let mut reader = WalReader::open(dir, true)?;
    let mut n = 0usize;
    while limit.is_none_or(|l| n < l) {
        let Some(r) = reader.next_record()? else {
            break;
        };
        n += 1;
        writeln!(
            out,
            "lsn={} time={} clock={} ({}) kind={} {}",
            r.meta.lsn,
            r.meta.time,
            r.meta.clock_ms,
            iso8601(r.meta.clock_ms),
            kind_name(record_kind(&r.record)),
            summary(&r.record)
        )
        .map_err(io)?;
    }
    if let Some((file, offset)) = reader.torn_tail() {
        writeln!(out, "torn tail in {} at offset {offset}", file.display()).map_err(io)?;
    }
    Ok(())
}

fn clip(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

/// A one-line description of a record.
pub fn summary(record: &Record) -> String {
    match record {
        Record::Signals(sigs) => {
            let mut kinds: Vec<(&str, usize)> = Vec::new();
            for s in sigs {
                match kinds.iter_mut().find(|(k, _)| *k == s.kind) {
                    Some((_, n)) => *n += 1,
                    None => kinds.push((&s.kind, 1)),
                }
            }
            let by_kind: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}×{n}")).collect();
            let first = sigs.first().map_or(String::new(), |s| {
                format!(
                    " first: {} item={}{}",
                    s.kind,
                    clip(&s.item),
                    s.user
                        .as_deref()
                        .map_or(String::new(), |u| format!(" user={}", clip(u)))
                )
            });
            format!("{} signals [{}]{first}", sigs.len(), by_kind.join(", "))
        }
        Record::ItemPut { id, meta } => format!(
            "item={}{}{} tags={}{}",
            clip(id),
            meta.creator
                .as_deref()
                .map_or(String::new(), |c| format!(" creator={}", clip(c))),
            meta.title
                .as_deref()
                .map_or(String::new(), |t| format!(" title={}", clip(t))),
            meta.tags.len(),
            meta.embedding
                .as_ref()
                .map_or(String::new(), |e| format!(" embedding_dim={}", e.0.len()))
        ),
        Record::ItemDelete { id } => format!("item={}", clip(id)),
        Record::ClockAdvance { to_ms } => format!("to={to_ms} ({})", iso8601(*to_ms)),
        Record::Config { toml } => format!("{} bytes of TOML", toml.len()),
        Record::UserPut { id, attributes } => format!("user={} attributes={}", clip(id), attributes.len()),
        Record::UserDelete { id } => format!("user={}", clip(id)),
        Record::CohortPut { name, rule } => format!("cohort={} where={}", clip(name), rule.len()),
        Record::CohortDelete { name } => format!("cohort={}", clip(name)),
        Record::Relationship {
            user,
            creator,
            kind,
            active,
        } => format!(
            "user={} creator={} {} active={active}",
            clip(user),
            clip(creator),
            kind.name()
        ),
    }
}

/// `ms` since the Unix epoch as a UTC ISO 8601 timestamp.
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::iso8601;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
