//! Walking many heap-allocated values whose first touch is a cache miss each (a million
//! users' slots, items' metadata): a batch at a time, a first pass reading one word of each
//! (plain loads that do not wait on one another, so their misses overlap), then the work on
//! the batch from the cache. One value after the other, each atomic reference-count increment
//! or encoding waited for its own miss, and the misses were the whole cost.

/// Values per batch.
const BATCH: usize = 64;

/// Hands `items` to `work` a batch at a time, each batch first read by `touch` (a word of
/// each value, summed so the loads are not optimised away); stops at `work`'s first error.
pub(crate) fn touched_in_batches<T, E>(
    items: impl Iterator<Item = T>,
    touch: impl Fn(&T) -> u64,
    mut work: impl FnMut(&mut Vec<T>) -> Result<(), E>,
) -> Result<(), E> {
    let mut items = items;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        batch.clear();
        batch.extend(items.by_ref().take(BATCH));
        if batch.is_empty() {
            return Ok(());
        }
        std::hint::black_box(batch.iter().fold(0u64, |n, t| n.wrapping_add(touch(t))));
        work(&mut batch)?;
    }
}
