//! [`Shared`]: a trace's batches behind an `Arc` rather than differential's `Rc`, so that a
//! checkpoint can hand the retained signals' batches, as they are at its frontier, to the
//! checkpointer's thread and let it walk and encode them while the worker goes on. A batch is
//! immutable once made (a merge makes a new one), so sharing it across threads needs nothing
//! but the atomic count. Everything else is differential's: the wrapper only forwards.

use std::sync::Arc;

use differential_dataflow::trace::cursor::{Cursor, Navigable};
use differential_dataflow::trace::implementations::spine_fueled::{Merger, SpineBatch};
use timely::progress::frontier::AntichainRef;

/// A batch `B` shared by reference count across threads.
pub(crate) struct Shared<B>(Arc<B>);

impl<B> Clone for Shared<B> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

/// The batcher's and the mergers' output, shared.
impl<B> From<B> for Shared<B> {
    fn from(batch: B) -> Self {
        Shared(Arc::new(batch))
    }
}

impl<B: SpineBatch> SpineBatch for Shared<B> {
    type Time = B::Time;
    type Merger = SharedMerger<B>;
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A merge of two shared batches: the batches' own merge, its result shared.
pub(crate) struct SharedMerger<B: SpineBatch> {
    merger: B::Merger,
}

impl<B: SpineBatch> Merger<Shared<B>> for SharedMerger<B> {
    fn new(source1: &Shared<B>, source2: &Shared<B>, compaction_frontier: AntichainRef<B::Time>) -> Self {
        SharedMerger {
            merger: B::Merger::new(&source1.0, &source2.0, compaction_frontier),
        }
    }
    fn work(&mut self, source1: &Shared<B>, source2: &Shared<B>, fuel: &mut isize) {
        self.merger.work(&source1.0, &source2.0, fuel)
    }
    fn done(self) -> Option<Shared<B>> {
        self.merger.done().map(Shared::from)
    }
}

impl<B: Navigable> Navigable for Shared<B> {
    type Cursor = SharedCursor<B::Cursor>;
    fn cursor(&self) -> Self::Cursor {
        SharedCursor(self.0.cursor())
    }
}

/// A cursor over a shared batch: the batch's own cursor.
pub(crate) struct SharedCursor<C>(C);

impl<C: Cursor> Cursor for SharedCursor<C> {
    type Storage = Shared<C::Storage>;

    type Key<'a> = C::Key<'a>;
    type ValOwn = C::ValOwn;
    type Val<'a> = C::Val<'a>;
    type Time = C::Time;
    type TimeGat<'a> = C::TimeGat<'a>;
    type Diff = C::Diff;
    type DiffGat<'a> = C::DiffGat<'a>;
    type KeyContainer = C::KeyContainer;
    type ValContainer = C::ValContainer;
    type TimeContainer = C::TimeContainer;
    type DiffContainer = C::DiffContainer;

    #[inline]
    fn key_valid(&self, storage: &Self::Storage) -> bool {
        self.0.key_valid(&storage.0)
    }
    #[inline]
    fn val_valid(&self, storage: &Self::Storage) -> bool {
        self.0.val_valid(&storage.0)
    }
    #[inline]
    fn key<'a>(&self, storage: &'a Self::Storage) -> Self::Key<'a> {
        self.0.key(&storage.0)
    }
    #[inline]
    fn val<'a>(&self, storage: &'a Self::Storage) -> Self::Val<'a> {
        self.0.val(&storage.0)
    }
    #[inline]
    fn get_key<'a>(&self, storage: &'a Self::Storage) -> Option<Self::Key<'a>> {
        self.0.get_key(&storage.0)
    }
    #[inline]
    fn get_val<'a>(&self, storage: &'a Self::Storage) -> Option<Self::Val<'a>> {
        self.0.get_val(&storage.0)
    }
    #[inline]
    fn map_times<L: FnMut(Self::TimeGat<'_>, Self::DiffGat<'_>)>(&mut self, storage: &Self::Storage, logic: L) {
        self.0.map_times(&storage.0, logic)
    }
    #[inline]
    fn step_key(&mut self, storage: &Self::Storage) {
        self.0.step_key(&storage.0)
    }
    #[inline]
    fn seek_key(&mut self, storage: &Self::Storage, key: Self::Key<'_>) {
        self.0.seek_key(&storage.0, key)
    }
    #[inline]
    fn step_val(&mut self, storage: &Self::Storage) {
        self.0.step_val(&storage.0)
    }
    #[inline]
    fn seek_val(&mut self, storage: &Self::Storage, val: Self::Val<'_>) {
        self.0.seek_val(&storage.0, val)
    }
    #[inline]
    fn rewind_keys(&mut self, storage: &Self::Storage) {
        self.0.rewind_keys(&storage.0)
    }
    #[inline]
    fn rewind_vals(&mut self, storage: &Self::Storage) {
        self.0.rewind_vals(&storage.0)
    }
}
