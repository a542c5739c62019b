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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::merge_policy::NoMergePolicy;
use tantivy::query::{Bm25StatisticsProvider, BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, TermSetQuery};
use tantivy::schema::{Field, STORED, STRING, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

use foldhash::fast::RandomState;
use tidal_core::record::ItemMeta;

use crate::snapshot::ItemChange;

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
    /// Per indexed item id, the metadata its document was made from (the version's own,
    /// shared): a put that leaves the title and text alone (a new embedding, category, ...)
    /// does not replace the document (a replaced document stays in BM25's statistics until
    /// its segment is merged).
    indexed: HashMap<Arc<str>, Arc<ItemMeta>, RandomState>,
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
                indexed: HashMap::default(),
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
        // A start hands over every item at once.
        w.indexed.reserve(changes.len());
        for c in changes {
            let now = c.shared_meta().filter(|m| m.title.is_some() || m.text.is_some());
            let indexed = match (w.indexed.get_mut(&c.id), now) {
                (None, None) => continue,
                (Some(old), Some(new)) if Arc::ptr_eq(old, new) || (old.title == new.title && old.text == new.text) => {
                    // The same document; the newest metadata is kept (not the old one alive).
                    *old = new.clone();
                    continue;
                }
                (before, _) => before.is_some(),
            };
            changed += 1;
            // Only an indexed id has a document to replace: a delete costs a query's weight
            // even when it matches nothing (a million new items at a start: ~3 s).
            if indexed {
                writer.delete_term(Term::from_field_text(self.id, &c.id));
            }
            match now {
                Some(m) => w.indexed.insert(c.id.clone(), m.clone()),
                None => w.indexed.remove(&c.id),
            };
            if let Some(meta) = now {
                let mut d = doc!(self.id => &*c.id);
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

    fn run(&self, query: &dyn Query, limit: usize, stats: Option<&TextStats>) -> Vec<(String, f32)> {
        let Some(reader) = &self.reader else { return Vec::new() };
        let searcher = reader.searcher();
        let collector = TopDocs::with_limit(limit.max(1));
        let top = match stats {
            Some(stats) => searcher.search_with_statistics_provider(query, &collector, stats),
            None => searcher.search(query, &collector),
        };
        let Ok(top) = top else {
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
    /// `stats`: the corpus statistics BM25 uses (a cluster's sum, [`stats`](Self::stats) of
    /// every process), or this index's own when `None`.
    pub fn search(&self, q: &str, limit: usize, stats: Option<&TextStats>) -> Vec<(String, f32)> {
        self.run(&*self.parse(q), limit, stats)
    }

    /// The BM25 of `q` for those of `ids` that match it (absent: no match); `stats` as in
    /// [`search`](Self::search).
    pub fn score(&self, q: &str, ids: &[&str], stats: Option<&TextStats>) -> Vec<(String, f32)> {
        if ids.is_empty() {
            return Vec::new();
        }
        let terms = ids.iter().map(|id| Term::from_field_text(self.id, id));
        let among: Box<dyn Query> = Box::new(ConstScoreQuery::new(Box::new(TermSetQuery::new(terms)), 0.0));
        let query = BooleanQuery::new(vec![(Occur::Must, self.parse(q)), (Occur::Must, among)]);
        self.run(&query, ids.len(), stats)
    }

    /// This index's corpus statistics for the terms of `q` (committed documents): what a
    /// cluster adds up over its processes so that BM25 scores an item the same on any of
    /// them.
    pub fn stats(&self, q: &str) -> TextStats {
        let Some(reader) = &self.reader else {
            return TextStats::default();
        };
        let searcher = reader.searcher();
        let query = self.parse(q);
        let mut terms: Vec<(Vec<u8>, u64)> = Vec::new();
        query.query_terms(&mut |term, _| {
            let key = term.serialized_term().to_vec();
            if !terms.iter().any(|(k, _)| *k == key) {
                let df = searcher.doc_freq(term).unwrap_or(0);
                terms.push((key, df));
            }
        });
        let tokens = [self.title, self.text]
            .iter()
            .map(|f| (f.field_id(), searcher.total_num_tokens(*f).unwrap_or(0)))
            .collect();
        TextStats {
            docs: searcher.total_num_docs().unwrap_or(0),
            tokens,
            terms,
        }
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

/// BM25's corpus statistics for one query's terms: documents, tokens per field, and each
/// term's document frequency (keyed by tantivy's serialized term).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextStats {
    /// Documents.
    pub docs: u64,
    /// Tokens per field id.
    pub tokens: Vec<(u32, u64)>,
    /// Documents containing each term.
    pub terms: Vec<(Vec<u8>, u64)>,
}

impl TextStats {
    /// Adds another index's statistics (of the same query).
    pub fn add(&mut self, other: &TextStats) {
        self.docs += other.docs;
        for (field, n) in &other.tokens {
            match self.tokens.iter_mut().find(|(f, _)| f == field) {
                Some((_, m)) => *m += n,
                None => self.tokens.push((*field, *n)),
            }
        }
        for (term, n) in &other.terms {
            match self.terms.iter_mut().find(|(t, _)| t == term) {
                Some((_, m)) => *m += n,
                None => self.terms.push((term.clone(), *n)),
            }
        }
    }
}

impl Bm25StatisticsProvider for TextStats {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        Ok(self
            .tokens
            .iter()
            .find(|(f, _)| *f == field.field_id())
            .map_or(0, |(_, n)| *n))
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let key = term.serialized_term();
        Ok(self.terms.iter().find(|(t, _)| t == key).map_or(0, |(_, n)| *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_core::record::ItemMeta;

    fn put(id: &str, title: &str, text: &str) -> ItemChange {
        ItemChange::put(
            id,
            ItemMeta {
                title: Some(title.into()),
                text: Some(text.into()),
                ..ItemMeta::default()
            },
        )
    }

    #[test]
    fn finds_puts_forgets_deletes_and_scores_a_subset() {
        let t = TextIndex::new(Duration::from_secs(3600), true);
        t.apply(&[
            put("a", "Piano tutorial", "learn the piano in a week"),
            put("b", "Guitar tutorial", "chords"),
            put("c", "Piano concert", "live"),
        ]);
        assert!(t.search("piano", 10, None).is_empty(), "not committed yet");
        t.refresh(true);
        let hits: Vec<String> = t.search("piano", 10, None).into_iter().map(|h| h.0).collect();
        assert_eq!(hits, ["a", "c"], "a mentions piano twice");
        let both: Vec<String> = t.search("piano tutorial", 10, None).into_iter().map(|h| h.0).collect();
        assert_eq!(both, ["a"], "every term must match");
        let scored = t.score("piano", &["c", "b"], None);
        assert_eq!(scored.len(), 1);
        assert_eq!(scored[0].0, "c");
        assert!(scored[0].1 > 0.0);
        t.apply(&[ItemChange::remove("a"), put("c", "Drum concert", "")]);
        t.refresh(true);
        assert!(t.search("piano", 10, None).is_empty());
        assert_eq!(t.search("drum", 10, None).len(), 1);
        // Query syntax in the text is taken leniently.
        let _ = t.search("piano: \"unclosed AND (", 10, None);
    }

    /// Changes added to the index since its last commit.
    fn pending(t: &TextIndex) -> usize {
        t.writer.lock().map_or(0, |w| w.pending)
    }

    #[test]
    fn a_put_replaces_the_document_only_when_its_title_or_text_changes() {
        let t = TextIndex::new(Duration::from_secs(3600), false);
        t.apply(&[put("a", "Piano tutorial", "week one")]);
        assert_eq!(pending(&t), 1);
        t.refresh(true);
        // Same title and text, other metadata: the document stays.
        let other = ItemMeta {
            title: Some("Piano tutorial".into()),
            text: Some("week one".into()),
            category: Some("music".into()),
            ..ItemMeta::default()
        };
        t.apply(&[ItemChange::put("a", other)]);
        assert_eq!(pending(&t), 0, "an unchanged text is not indexed again");
        // A new text replaces it.
        t.apply(&[put("a", "Piano tutorial", "week two")]);
        assert_eq!(pending(&t), 1);
        t.refresh(true);
        let hits: Vec<String> = t.search("two", 10, None).into_iter().map(|h| h.0).collect();
        assert_eq!(hits, ["a"]);
        assert!(t.search("one", 10, None).is_empty());
        assert_eq!(t.search("piano", 10, None).len(), 1);
        // No title or text any more: the document goes.
        t.apply(&[ItemChange::put("a", ItemMeta::default())]);
        assert_eq!(pending(&t), 1);
        t.refresh(true);
        assert!(t.search("piano", 10, None).is_empty());
    }

    #[test]
    fn summed_statistics_score_a_split_corpus_like_one_index() {
        let docs = [
            ("a", "Piano tutorial", "learn the piano in a week"),
            ("b", "Guitar tutorial", "chords and more chords"),
            ("c", "Piano concert", "live"),
            ("d", "Drum solo", "a long drum solo"),
            ("e", "Piano and guitar", "duet"),
        ];
        let whole = TextIndex::new(Duration::from_secs(3600), true);
        let parts = [
            TextIndex::new(Duration::from_secs(3600), true),
            TextIndex::new(Duration::from_secs(3600), true),
        ];
        for (i, (id, title, text)) in docs.iter().enumerate() {
            whole.apply(&[put(id, title, text)]);
            parts[i % 2].apply(&[put(id, title, text)]);
        }
        whole.refresh(true);
        parts.iter().for_each(|p| p.refresh(true));
        for q in ["piano", "piano tutorial", "chords", "guitar piano"] {
            let mut stats = TextStats::default();
            parts.iter().for_each(|p| stats.add(&p.stats(q)));
            assert_eq!(stats, whole.stats(q), "{q}");
            let mut split: Vec<(String, f32)> = parts.iter().flat_map(|p| p.search(q, 10, Some(&stats))).collect();
            split.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let mut one = whole.search(q, 10, None);
            one.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            assert_eq!(split, one, "{q}");
            assert!(!one.is_empty(), "{q}");
            // Each part alone scores differently: the statistics are what make them agree.
            let alone: Vec<(String, f32)> = parts[0].search(q, 10, None);
            if let Some((id, score)) = alone.first() {
                let want = one.iter().find(|(i, _)| i == id).map(|(_, s)| *s);
                if q == "piano" {
                    assert_ne!(Some(*score), want, "{q}: a part's own statistics differ");
                }
            }
        }
    }
}
