//! The process's text index: tantivy (BM25, the default tokenizer) over the items' `title`
//! and `text`, in memory, near-real-time.
//!
//! Every shard sink hands it the item changes of each version it publishes ([`TextIndex::apply`]:
//! an item put replaces its document, a deleted or forgotten item's document goes). Changes
//! become searchable at a commit: the sink commits when the last one is older than
//! `personalization.text_refresh`, and a search commits what is pending when it is asked to
//! (a read with `min_lsn`) or when the last commit is that old — so a change is visible within
//! `text_refresh`, and at once to a read that waited for its LSN. One index for the whole
//! process (not per shard) keeps BM25's corpus statistics, and so the scores, the same for
//! any number of workers. It is not versioned: a reader checks each hit against the version
//! it reads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tantivy::collector::TopDocs;
use tantivy::merge_policy::NoMergePolicy;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, TermSetQuery};
use tantivy::schema::{Field, STORED, STRING, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

use crate::snapshot::ItemChange;

/// A hash of an item's title and text.
fn text_hash(title: Option<&str>, text: Option<&str>) -> u64 {
    let mut h = blake3::Hasher::new();
    for part in [title, text] {
        match part {
            Some(s) => {
                h.update(&[1]);
                h.update(&(s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
            None => {
                h.update(&[0]);
            }
        }
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(out)
}

/// The writer's memory budget (tantivy's minimum per thread is 15 MB).
const WRITER_BYTES: usize = 32_000_000;

/// The process's text index (see the module docs).
pub struct TextIndex {
    index: Index,
    id: Field,
    title: Field,
    text: Field,
    reader: Option<IndexReader>,
    writer: Mutex<Writer>,
    refresh: Duration,
    /// Merge every commit into one segment of the live documents only, so BM25's statistics
    /// do not depend on the history of replaced documents (`personalization.exact_search`).
    exact: bool,
}

struct Writer {
    writer: Option<IndexWriter>,
    /// Per indexed item id, a hash of its title and text: a put that leaves them alone (a
    /// new embedding, category, ...) does not replace the document (a replaced document
    /// stays in BM25's statistics until its segment is merged).
    indexed: HashMap<String, u64>,
    /// Changes added since the last commit.
    pending: usize,
    last_commit: Instant,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex").finish_non_exhaustive()
    }
}

impl TextIndex {
    /// An empty index whose changes become visible within `refresh`; with `exact`, every
    /// commit is merged into one segment of the live documents (deterministic scores, at the
    /// cost of rewriting the index when documents are replaced or deleted).
    pub fn new(refresh: Duration, exact: bool) -> TextIndex {
        let mut schema = Schema::builder();
        let id = schema.add_text_field("id", STRING | STORED);
        let title = schema.add_text_field("title", TEXT);
        let text = schema.add_text_field("text", TEXT);
        let index = Index::create_in_ram(schema.build());
        let writer = match index.writer_with_num_threads::<TantivyDocument>(1, WRITER_BYTES) {
            Ok(w) => {
                if exact {
                    w.set_merge_policy(Box::new(NoMergePolicy));
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the text index writer; q= finds nothing");
                None
            }
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| tracing::warn!(error = %e, "cannot open the text index reader; q= finds nothing"))
            .ok();
        TextIndex {
            index,
            id,
            title,
            text,
            reader,
            writer: Mutex::new(Writer {
                writer,
                indexed: HashMap::new(),
                pending: 0,
                last_commit: Instant::now(),
            }),
            refresh,
            exact,
        }
    }

    /// Applies a version's item changes; commits when the last commit is older than the
    /// refresh interval.
    pub fn apply(&self, changes: &[ItemChange]) {
        if changes.is_empty() {
            return;
        }
        let Ok(mut guard) = self.writer.lock() else { return };
        let w = &mut *guard;
        let Some(writer) = w.writer.as_mut() else { return };
        let mut changed = 0;
        for c in changes {
            let now = c
                .meta
                .as_ref()
                .filter(|m| m.title.is_some() || m.text.is_some())
                .map(|m| text_hash(m.title.as_deref(), m.text.as_deref()));
            if w.indexed.get(&c.id).copied() == now {
                continue;
            }
            changed += 1;
            writer.delete_term(Term::from_field_text(self.id, &c.id));
            match now {
                Some(h) => w.indexed.insert(c.id.clone(), h),
                None => w.indexed.remove(&c.id),
            };
            if let (Some(meta), Some(_)) = (&c.meta, now) {
                let mut d = doc!(self.id => c.id.as_str());
                if let Some(t) = &meta.title {
                    d.add_text(self.title, t);
                }
                if let Some(t) = &meta.text {
                    d.add_text(self.text, t);
                }
                if let Err(e) = writer.add_document(d) {
                    tracing::warn!(id = %c.id, error = %e, "cannot index an item's text");
                }
            }
        }
        w.pending += changed;
        if w.last_commit.elapsed() >= self.refresh {
            self.commit(w);
        }
    }

    /// Commits pending changes and reloads the reader.
    fn commit(&self, w: &mut Writer) {
        if w.pending == 0 {
            return;
        }
        if let Some(writer) = w.writer.as_mut()
            && let Err(e) = writer.commit()
        {
            tracing::warn!(error = %e, "text index commit failed");
            return;
        }
        if self.exact
            && let Some(writer) = w.writer.as_mut()
            && let Ok(metas) = self.index.searchable_segment_metas()
            && (metas.len() > 1 || metas.iter().any(|m| m.num_deleted_docs() > 0))
            && let Err(e) = writer.merge(&metas.iter().map(|m| m.id()).collect::<Vec<_>>()).wait()
        {
            tracing::warn!(error = %e, "text index merge failed");
        }
        w.pending = 0;
        w.last_commit = Instant::now();
        if let Some(r) = &self.reader
            && let Err(e) = r.reload()
        {
            tracing::warn!(error = %e, "text index reload failed");
        }
    }

    /// Makes pending changes searchable if `now` or if the last commit is older than the
    /// refresh interval.
    pub fn refresh(&self, now: bool) {
        let Ok(mut w) = self.writer.lock() else { return };
        if w.pending > 0 && (now || w.last_commit.elapsed() >= self.refresh) {
            self.commit(&mut w);
        }
    }

    fn parse(&self, q: &str) -> Box<dyn Query> {
        let mut parser = QueryParser::for_index(&self.index, vec![self.title, self.text]);
        parser.set_conjunction_by_default();
        parser.parse_query_lenient(q).0
    }

    fn run(&self, query: &dyn Query, limit: usize) -> Vec<(String, f32)> {
        let Some(reader) = &self.reader else { return Vec::new() };
        let searcher = reader.searcher();
        let Ok(top) = searcher.search(query, &TopDocs::with_limit(limit.max(1))) else {
            return Vec::new();
        };
        top.into_iter()
            .filter_map(|(score, addr)| {
                let d: TantivyDocument = searcher.doc(addr).ok()?;
                let id = d.get_first(self.id)?.as_str()?.to_string();
                Some((id, score))
            })
            .collect()
    }

    /// The `limit` items best matching `q` (every term, in the title or the text), by BM25,
    /// best first.
    pub fn search(&self, q: &str, limit: usize) -> Vec<(String, f32)> {
        self.run(&*self.parse(q), limit)
    }

    /// The BM25 of `q` for those of `ids` that match it (absent: no match).
    pub fn score(&self, q: &str, ids: &[&str]) -> Vec<(String, f32)> {
        if ids.is_empty() {
            return Vec::new();
        }
        let terms = ids.iter().map(|id| Term::from_field_text(self.id, id));
        let among: Box<dyn Query> = Box::new(ConstScoreQuery::new(Box::new(TermSetQuery::new(terms)), 0.0));
        let query = BooleanQuery::new(vec![(Occur::Must, self.parse(q)), (Occur::Must, among)]);
        self.run(&query, ids.len())
    }

    /// Documents in the index (committed).
    pub fn len(&self) -> u64 {
        self.reader.as_ref().map_or(0, |r| r.searcher().num_docs())
    }

    /// Whether no document is committed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_core::record::ItemMeta;

    fn put(id: &str, title: &str, text: &str) -> ItemChange {
        ItemChange {
            id: id.into(),
            meta: Some(ItemMeta {
                title: Some(title.into()),
                text: Some(text.into()),
                ..ItemMeta::default()
            }),
        }
    }

    #[test]
    fn finds_puts_forgets_deletes_and_scores_a_subset() {
        let t = TextIndex::new(Duration::from_secs(3600), true);
        t.apply(&[
            put("a", "Piano tutorial", "learn the piano in a week"),
            put("b", "Guitar tutorial", "chords"),
            put("c", "Piano concert", "live"),
        ]);
        assert!(t.search("piano", 10).is_empty(), "not committed yet");
        t.refresh(true);
        let hits: Vec<String> = t.search("piano", 10).into_iter().map(|h| h.0).collect();
        assert_eq!(hits, ["a", "c"], "a mentions piano twice");
        let both: Vec<String> = t.search("piano tutorial", 10).into_iter().map(|h| h.0).collect();
        assert_eq!(both, ["a"], "every term must match");
        let scored = t.score("piano", &["c", "b"]);
        assert_eq!(scored.len(), 1);
        assert_eq!(scored[0].0, "c");
        assert!(scored[0].1 > 0.0);
        t.apply(&[
            ItemChange {
                id: "a".into(),
                meta: None,
            },
            put("c", "Drum concert", ""),
        ]);
        t.refresh(true);
        assert!(t.search("piano", 10).is_empty());
        assert_eq!(t.search("drum", 10).len(), 1);
        // Query syntax in the text is taken leniently.
        let _ = t.search("piano: \"unclosed AND (", 10);
    }
}
