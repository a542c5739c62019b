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
//!
//! A checkpoint keeps it ([`saved`]); a restart loads it and writes only the documents whose
//! item changed since.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::directory::RamDirectory;
use tantivy::merge_policy::NoMergePolicy;
use tantivy::query::{Bm25StatisticsProvider, BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, TermSetQuery};
use tantivy::schema::{Field, STORED, STRING, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, doc};

use foldhash::fast::RandomState;
use foldhash::quality::FixedState;
use tidal_core::record::ItemMeta;

use crate::snapshot::ItemChange;

mod saved;

/// The writer's memory budget (tantivy's minimum per thread is 15 MB).
const WRITER_BYTES: usize = 32_000_000;

/// The seed of the hash a saved index keeps of each document's title and text. A build whose
/// hash differs only indexes every document again after a restart.
const CONTENT_SEED: u64 = 0x7469_6461_6c74_7874;

/// The process's text index (see the module docs).
pub struct TextIndex {
    id: Field,
    title: Field,
    text: Field,
    /// The index and its reader: a start replaces the empty ones with those a checkpoint kept.
    live: RwLock<Arc<Live>>,
    writer: Mutex<Writer>,
    /// Documents written since the index was created or restored.
    written: AtomicU64,
    /// Documents written, replaced or deleted since the index was created (a restored
    /// index's own not counted): it only grows.
    changes: AtomicU64,
    refresh: Duration,
    /// Merge every commit into one segment of the live documents only, so BM25's statistics
    /// do not depend on the history of replaced documents (`personalization.exact_search`).
    exact: bool,
}

/// An index with its reader, in memory.
struct Live {
    index: Index,
    /// The index's files as written (what the index reads goes through tantivy's managed
    /// directory, which checks and strips each file's footer).
    files: RamDirectory,
    reader: Option<IndexReader>,
}

struct Writer {
    writer: Option<IndexWriter>,
    /// Per indexed item id, the metadata its document was made from (the version's own,
    /// shared): a put that leaves the title and text alone (a new embedding, category, ...)
    /// does not replace the document (a replaced document stays in BM25's statistics until
    /// its segment is merged); and the hash of that title and text, which a save keeps.
    indexed: HashMap<Arc<str>, (Arc<ItemMeta>, u64), RandomState>,
    /// The documents of a restored index not confirmed yet, each with the hash of its title
    /// and text: the first put of the id with the same ones keeps the document instead of
    /// writing it again ([`TextIndex::forget_unconfirmed`] deletes those left).
    saved: HashMap<Box<str>, u64, RandomState>,
    /// Changes added since the last commit.
    pending: usize,
    last_commit: Instant,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex").finish_non_exhaustive()
    }
}

/// The hash a saved index keeps of a document's title and text.
fn content_hash(meta: &ItemMeta) -> u64 {
    FixedState::with_seed(CONTENT_SEED).hash_one((&meta.title, &meta.text))
}

/// How deep a text query may nest, counting its parentheses' depth and its `NOT`s: the query
/// parser recurses per level (a thousand parentheses, or 1500 `NOT`s, overflowed a read
/// thread's stack).
pub const MAX_NESTING: usize = 16;

/// The longest text query, in bytes.
pub const MAX_QUERY_BYTES: usize = 1024;

/// How deep `q` nests: its parentheses' deepest level plus its `NOT`s.
pub fn nesting(q: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for c in q.chars() {
        match c {
            '(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest + words(q).filter(|w| *w == "NOT").count()
}

/// The words of a query between spaces and parentheses.
fn words(q: &str) -> impl Iterator<Item = &str> {
    q.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
}

/// `q` as the parser may read it: at most [`MAX_QUERY_BYTES`] (a request is refused before;
/// a peer's statistics request is cut), and past [`MAX_NESTING`] its words alone.
fn bounded(q: &str) -> std::borrow::Cow<'_, str> {
    let mut end = q.len().min(MAX_QUERY_BYTES);
    while !q.is_char_boundary(end) {
        end -= 1;
    }
    let q = &q[..end];
    if nesting(q) > MAX_NESTING {
        words(q).filter(|w| *w != "NOT").collect::<Vec<_>>().join(" ").into()
    } else {
        q.into()
    }
}

/// The index's schema and its fields (id, title, text).
fn schema() -> (Schema, Field, Field, Field) {
    let mut schema = Schema::builder();
    let id = schema.add_text_field("id", STRING | STORED);
    let title = schema.add_text_field("title", TEXT);
    let text = schema.add_text_field("text", TEXT);
    (schema.build(), id, title, text)
}

/// A writer for `index` (with `exact`, merged by [`TextIndex::commit`] only).
fn writer_of(index: &Index, exact: bool) -> tantivy::Result<IndexWriter> {
    let w = index.writer_with_num_threads::<TantivyDocument>(1, WRITER_BYTES)?;
    if exact {
        w.set_merge_policy(Box::new(NoMergePolicy));
    }
    Ok(w)
}

/// A reader of `index` reloaded on commit only.
fn reader_of(index: &Index) -> tantivy::Result<IndexReader> {
    index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()
}

impl TextIndex {
    /// An empty index whose changes become visible within `refresh`; with `exact`, every
    /// commit is merged into one segment of the live documents (deterministic scores, at the
    /// cost of rewriting the index when documents are replaced or deleted).
    pub fn new(refresh: Duration, exact: bool) -> TextIndex {
        let (schema, id, title, text) = schema();
        let files = RamDirectory::create();
        let index = match Index::create(files.clone(), schema, tantivy::IndexSettings::default()) {
            Ok(index) => index,
            // An empty directory in memory takes any schema.
            Err(e) => panic!("cannot create a text index in memory: {e}"),
        };
        let writer = writer_of(&index, exact)
            .map_err(|e| tracing::warn!(error = %e, "cannot open the text index writer; q= finds nothing"))
            .ok();
        let reader = reader_of(&index)
            .map_err(|e| tracing::warn!(error = %e, "cannot open the text index reader; q= finds nothing"))
            .ok();
        TextIndex {
            id,
            title,
            text,
            live: RwLock::new(Arc::new(Live { index, files, reader })),
            writer: Mutex::new(Writer {
                writer,
                indexed: HashMap::default(),
                saved: HashMap::default(),
                pending: 0,
                last_commit: Instant::now(),
            }),
            written: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            refresh,
            exact,
        }
    }

    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies a version's item changes; commits when the last commit is older than the
    /// refresh interval.
    pub fn apply(&self, changes: &[ItemChange]) {
        if changes.is_empty() {
            return;
        }
        let Ok(mut guard) = self.writer.lock() else { return };
        let live = self.live();
        let w = &mut *guard;
        let Some(writer) = w.writer.as_mut() else { return };
        let mut changed = 0;
        // A start hands over every item at once.
        w.indexed.reserve(changes.len());
        for c in changes {
            let now = c.shared_meta().filter(|m| m.title.is_some() || m.text.is_some());
            // A restored document: kept if made from the same title and text.
            let mut restored = false;
            if !w.saved.is_empty()
                && let Some(hash) = w.saved.remove(&*c.id)
            {
                if let Some(m) = now
                    && content_hash(m) == hash
                {
                    w.indexed.insert(c.id.clone(), (m.clone(), hash));
                    continue;
                }
                restored = true;
            }
            let indexed = match (w.indexed.get_mut(&c.id), now) {
                (None, None) if !restored => continue,
                (Some((old, _)), Some(new))
                    if Arc::ptr_eq(old, new) || (old.title == new.title && old.text == new.text) =>
                {
                    // The same document; the newest metadata is kept (not the old one alive).
                    *old = new.clone();
                    continue;
                }
                (before, _) => before.is_some() || restored,
            };
            changed += 1;
            // Only an indexed id has a document to replace: a delete costs a query's weight
            // even when it matches nothing (a million new items at a start: ~3 s).
            if indexed {
                writer.delete_term(Term::from_field_text(self.id, &c.id));
            }
            match now {
                Some(m) => w.indexed.insert(c.id.clone(), (m.clone(), content_hash(m))),
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
                match writer.add_document(d) {
                    Ok(_) => {
                        self.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(id = %c.id, error = %e, "cannot index an item's text"),
                }
            }
        }
        w.pending += changed;
        self.changes.fetch_add(changed as u64, Ordering::Relaxed);
        if w.last_commit.elapsed() >= self.refresh {
            self.commit(w, &live);
        }
    }

    /// Commits pending changes and reloads the reader.
    fn commit(&self, w: &mut Writer, live: &Live) {
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
            && let Ok(metas) = live.index.searchable_segment_metas()
            && (metas.len() > 1 || metas.iter().any(|m| m.num_deleted_docs() > 0))
            && let Err(e) = writer.merge(&metas.iter().map(|m| m.id()).collect::<Vec<_>>()).wait()
        {
            tracing::warn!(error = %e, "text index merge failed");
        }
        w.pending = 0;
        w.last_commit = Instant::now();
        if let Some(r) = &live.reader
            && let Err(e) = r.reload()
        {
            tracing::warn!(error = %e, "text index reload failed");
        }
    }

    /// Makes pending changes searchable if `now` or if the last commit is older than the
    /// refresh interval.
    pub fn refresh(&self, now: bool) {
        let Ok(mut w) = self.writer.lock() else { return };
        let live = self.live();
        if w.pending > 0 && (now || w.last_commit.elapsed() >= self.refresh) {
            self.commit(&mut w, &live);
        }
    }

    fn parse(&self, index: &Index, q: &str) -> Box<dyn Query> {
        let mut parser = QueryParser::for_index(index, vec![self.title, self.text]);
        parser.set_conjunction_by_default();
        parser.parse_query_lenient(&bounded(q)).0
    }

    fn run(&self, live: &Live, query: &dyn Query, limit: usize, stats: Option<&TextStats>) -> Vec<(String, f32)> {
        let Some(reader) = &live.reader else { return Vec::new() };
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
            // A boost past f32's range (`piano^1e400`) scores inf or NaN: such a hit ranks
            // nothing sensibly.
            .filter(|(score, _)| score.is_finite())
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
        let live = self.live();
        self.run(&live, &*self.parse(&live.index, q), limit, stats)
    }

    /// The BM25 of `q` for those of `ids` that match it (absent: no match); `stats` as in
    /// [`search`](Self::search).
    pub fn score(&self, q: &str, ids: &[&str], stats: Option<&TextStats>) -> Vec<(String, f32)> {
        if ids.is_empty() {
            return Vec::new();
        }
        let terms = ids.iter().map(|id| Term::from_field_text(self.id, id));
        let among: Box<dyn Query> = Box::new(ConstScoreQuery::new(Box::new(TermSetQuery::new(terms)), 0.0));
        let live = self.live();
        let query = BooleanQuery::new(vec![(Occur::Must, self.parse(&live.index, q)), (Occur::Must, among)]);
        self.run(&live, &query, ids.len(), stats)
    }

    /// This index's corpus statistics for the terms of `q` (committed documents): what a
    /// cluster adds up over its processes so that BM25 scores an item the same on any of
    /// them.
    pub fn stats(&self, q: &str) -> TextStats {
        let live = self.live();
        let Some(reader) = &live.reader else {
            return TextStats::default();
        };
        let searcher = reader.searcher();
        let query = self.parse(&live.index, q);
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

    /// Documents written since the index was created or restored (those a restored index
    /// held with the same title and text are not written again).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Documents written, replaced or deleted since the index was created (a restored
    /// index's own not counted): how far the index has moved from a copy saved when the count
    /// was lower.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Documents in the index (committed).
    pub fn len(&self) -> u64 {
        self.live().reader.as_ref().map_or(0, |r| r.searcher().num_docs())
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
        self.docs = self.docs.saturating_add(other.docs);
        for (field, n) in &other.tokens {
            match self.tokens.iter_mut().find(|(f, _)| f == field) {
                Some((_, m)) => *m = m.saturating_add(*n),
                None => self.tokens.push((*field, *n)),
            }
        }
        for (term, n) in &other.terms {
            match self.terms.iter_mut().find(|(t, _)| t == term) {
                Some((_, m)) => *m = m.saturating_add(*n),
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

    /// At most the documents counted (statistics from a peer are not trusted to hold
    /// that: BM25's idf asserts it).
    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let key = term.serialized_term();
        Ok(self
            .terms
            .iter()
            .find(|(t, _)| t == key)
            .map_or(0, |(_, n)| (*n).min(self.docs)))
    }
}

#[cfg(test)]
mod tests {
    use super::saved::SAVE_PENDING_MAX;
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

    #[test]
    fn statistics_from_a_peer_that_do_not_add_up_still_score() {
        let t = TextIndex::new(Duration::from_secs(3600), true);
        t.apply(&[put("a", "Piano tutorial", "piano"), put("b", "Guitar", "chords")]);
        t.refresh(true);
        let mut stats = t.stats("piano");
        assert!(stats.terms.iter().all(|(_, n)| *n <= stats.docs));
        // More documents holding a term than documents in all (BM25's idf asserts the
        // opposite), and sums that would overflow.
        stats.docs = 0;
        for (_, n) in &mut stats.terms {
            *n = u64::MAX;
        }
        let mut summed = stats.clone();
        summed.add(&stats);
        assert_eq!(summed.docs, 0);
        let hits = t.search("piano", 10, Some(&summed));
        assert_eq!(hits.len(), 1);
        assert!(hits.iter().all(|(_, s)| s.is_finite()), "{hits:?}");
    }

    #[test]
    fn deeply_nested_or_odd_queries_neither_overflow_nor_fail() {
        let t = TextIndex::new(Duration::from_secs(3600), true);
        t.apply(&[put("a", "Piano tutorial", "piano")]);
        t.refresh(true);
        let deep = format!("{}piano", "(".repeat(1000));
        assert_eq!(nesting(&deep), 1000);
        assert_eq!(t.search(&deep, 10, None).len(), 1, "read as the word");
        assert_eq!(nesting("NOT a NOT (b OR (c))"), 4);
        assert!(t.search("piano^1e400", 10, None).iter().all(|(_, s)| s.is_finite()));
        for q in [
            "a:(^".to_string(),
            "a:(".repeat(300),
            "-".repeat(1000) + "piano",
            "+".repeat(1000) + "piano",
            "\"".repeat(1000),
            "[".repeat(1000),
            "piano~".repeat(150),
            format!("{}piano{}", "(".repeat(16), ")".repeat(16)),
            "NOT ".repeat(2000) + "a",
            format!("{}{}piano", "(".repeat(16), "NOT ".repeat(246)),
        ] {
            let _ = t.search(&q, 10, None);
            let _ = t.stats(&q);
        }
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

    /// A saved index restored into a new one: puts with the same title and text keep their
    /// documents, others replace them, those never put again are deleted; the result scores
    /// exactly as an index built from scratch with the same documents.
    #[test]
    fn a_restored_index_keeps_confirmed_documents_and_forgets_the_others() {
        let words = ["piano", "guitar", "drum", "tutorial", "concert", "live", "solo", "week"];
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for round in 0..4 {
            let title = |next: &mut dyn FnMut(usize) -> usize| {
                (0..1 + next(3))
                    .map(|_| words[next(words.len())])
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let first: Vec<(String, String)> = (0..40).map(|i| (format!("i{i}"), title(&mut next))).collect();
            let before = Arc::new(TextIndex::new(Duration::from_secs(3600), true));
            for (id, t) in &first {
                before.apply(&[put(id, t, "")]);
            }
            // A save commits what is pending.
            let saved = before.save().expect("saved");
            assert_eq!(before.len(), 40);

            // What a recovery puts: most items as they were, some retitled, some gone, some new.
            let mut then: Vec<(String, Option<String>)> = Vec::new();
            for (id, t) in &first {
                match next(6) {
                    0 => {}
                    1 => then.push((id.clone(), None)),
                    2 => then.push((id.clone(), Some(title(&mut next)))),
                    _ => then.push((id.clone(), Some(t.clone()))),
                }
            }
            for i in 40..45 {
                then.push((format!("i{i}"), Some(title(&mut next))));
            }
            let restored = Arc::new(TextIndex::new(Duration::from_secs(3600), true));
            restored.restore_later(saved.clone());
            let fresh = TextIndex::new(Duration::from_secs(3600), true);
            let mut kept = 0;
            for (id, t) in &then {
                let change = match t {
                    Some(t) => put(id, t, ""),
                    None => ItemChange::remove(id),
                };
                restored.apply(std::slice::from_ref(&change));
                fresh.apply(&[change]);
                let was = first.iter().find(|(i, _)| i == id).map(|(_, t)| t);
                kept += usize::from(t.is_some() && was == t.as_ref());
            }
            restored.forget_unconfirmed();
            fresh.refresh(true);
            let live = then.iter().filter(|(_, t)| t.is_some()).count() as u64;
            assert_eq!(restored.len(), live, "round {round}");
            assert_eq!(
                restored.written() as usize,
                then.iter().filter(|(_, t)| t.is_some()).count() - kept
            );
            // Ties in tantivy's order of documents, which a restored index has in another.
            let search = |t: &TextIndex, q: &str| {
                let mut hits = t.search(q, 50, None);
                hits.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                hits
            };
            for q in words
                .iter()
                .copied()
                .chain(["piano tutorial", "drum live", "concert solo week"])
            {
                assert_eq!(search(&restored, q), search(&fresh, q), "round {round}: {q}");
                assert_eq!(restored.stats(q), fresh.stats(q), "round {round}: {q}");
            }
            // A save of the restored index restores again to the same, every document
            // confirmed by the same puts.
            let again = Arc::new(TextIndex::new(Duration::from_secs(3600), true));
            again.restore_later(restored.save().expect("saved again"));
            for (id, t) in &then {
                if let Some(t) = t {
                    again.apply(&[put(id, t, "")]);
                }
            }
            again.forget_unconfirmed();
            assert_eq!(again.written(), 0);
            assert_eq!(again.len(), live);
            assert_eq!(search(&again, "piano"), search(&fresh, "piano"));
        }
    }

    /// A catch-up's uncommitted changes are not committed by a save (it would hold the sink
    /// back until they are indexed): the save is left out until they are.
    #[test]
    fn a_save_waits_for_a_catch_up_to_be_committed() {
        let t = TextIndex::new(Duration::from_secs(3600), false);
        let changes: Vec<ItemChange> = (0..SAVE_PENDING_MAX + 1)
            .map(|i| put(&format!("i{i}"), "a", ""))
            .collect();
        t.apply(&changes);
        assert!(t.save().is_none());
        t.refresh(true);
        assert!(t.save().is_some());
        assert_eq!(t.len() as usize, SAVE_PENDING_MAX + 1);
    }

    #[test]
    fn a_damaged_saved_index_is_left_out() {
        let t = Arc::new(TextIndex::new(Duration::from_secs(3600), true));
        t.apply(&[put("a", "Piano tutorial", "")]);
        let mut saved = t.save().expect("saved");
        for damage in [saved.len() / 2, 3] {
            saved[damage] ^= 0x5a;
            let r = Arc::new(TextIndex::new(Duration::from_secs(3600), true));
            r.restore_later(saved.clone());
            r.apply(&[put("b", "Piano concert", "")]);
            r.forget_unconfirmed();
            let hits: Vec<String> = r.search("piano", 10, None).into_iter().map(|h| h.0).collect();
            assert_eq!(hits, ["b"], "damaged at {damage}: the index starts empty");
        }
        // Cut short.
        let r = Arc::new(TextIndex::new(Duration::from_secs(3600), true));
        r.restore_later(saved[..saved.len() - 7].to_vec());
        r.forget_unconfirmed();
        assert!(r.is_empty());
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
