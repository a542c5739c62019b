//! [`RunMerger`]: differential's merger of vector chains for a merge batcher, except that
//! chains whose updates do not overlap are laid end to end.

use differential_dataflow::batcher::merge::vec::VecMerger;
use differential_dataflow::batcher::merge::{Extractor, Merger};
use differential_dataflow::difference::Semigroup;
use timely::PartialOrder;
use timely::progress::frontier::{Antichain, AntichainRef};

/// Differential's merger of vector chains, except that two chains whose updates do not
/// overlap are laid end to end instead of merged update by update, and a chunk whose updates
/// are all ready is handed on whole. A restore hands the arrangement its retained signals in
/// key order (the checkpoint walked the trace), at time 0: the batcher's geometric ladder
/// otherwise moved each of them about a dozen times, and its extraction once more (~3 s of
/// a restart at 10M signals).
pub(crate) struct RunMerger<D, T, R>(VecMerger<D, T, R>);

impl<D, T, R> Default for RunMerger<D, T, R> {
    fn default() -> Self {
        RunMerger(VecMerger::default())
    }
}

/// Whether every update of `before` comes strictly before every update of `after`.
fn ends_before<D: Ord, T: Ord, R>(before: &[Vec<(D, T, R)>], after: &[Vec<(D, T, R)>]) -> bool {
    let last = before.iter().rev().find_map(|c| c.last());
    let first = after.iter().find_map(|c| c.first());
    match (last, first) {
        (Some((d1, t1, _)), Some((d2, t2, _))) => (d1, t1) < (d2, t2),
        // An empty chain goes anywhere.
        _ => true,
    }
}

impl<D, T, R> Merger for RunMerger<D, T, R>
where
    D: Ord + Clone + 'static,
    T: Ord + Clone + PartialOrder + 'static,
    R: Semigroup + 'static,
{
    type Chunk = Vec<(D, T, R)>;

    fn merge(
        &mut self,
        list1: Vec<Self::Chunk>,
        list2: Vec<Self::Chunk>,
        output: &mut Vec<Self::Chunk>,
        stash: &mut Vec<Self::Chunk>,
    ) {
        if ends_before(&list1, &list2) {
            output.extend(list1.into_iter().filter(|c| !c.is_empty()));
            output.extend(list2.into_iter().filter(|c| !c.is_empty()));
        } else if ends_before(&list2, &list1) {
            output.extend(list2.into_iter().filter(|c| !c.is_empty()));
            output.extend(list1.into_iter().filter(|c| !c.is_empty()));
        } else {
            self.0.merge(list1, list2, output, stash);
        }
    }

    fn len(chunk: &Self::Chunk) -> usize {
        chunk.len()
    }
}

impl<D, T, R> Extractor for RunMerger<D, T, R>
where
    D: Ord + Clone + 'static,
    T: Ord + Clone + PartialOrder + 'static,
    R: Semigroup + 'static,
{
    type Time = T;

    fn extract(
        &mut self,
        merged: Vec<Self::Chunk>,
        upper: AntichainRef<T>,
        frontier: &mut Antichain<T>,
        readied: &mut Vec<Self::Chunk>,
        kept: &mut Vec<Self::Chunk>,
        stash: &mut Vec<Self::Chunk>,
    ) {
        // A chunk all of whose updates are ready goes as it is (a restore's are, at time 0);
        // the others are split update by update, in order.
        for chunk in merged {
            if chunk.iter().all(|(_, t, _)| !upper.less_equal(t)) {
                if !chunk.is_empty() {
                    readied.push(chunk);
                }
            } else {
                self.0.extract(vec![chunk], upper, frontier, readied, kept, stash);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Update = (u64, u64, i64);
    /// An update as the batcher holds it.
    type Held = ((u64, ()), u64, i64);

    /// A sorted, consolidated chain of `updates` in chunks of `size`.
    fn chain(mut updates: Vec<Update>, size: usize) -> Vec<Vec<Held>> {
        updates.sort_unstable();
        updates.dedup_by(|b, a| {
            let same = (a.0, a.1) == (b.0, b.1);
            if same {
                a.2 += b.2;
            }
            same
        });
        updates.retain(|u| u.2 != 0);
        let all: Vec<_> = updates.into_iter().map(|(d, t, r)| ((d, ()), t, r)).collect();
        all.chunks(size.max(1)).map(<[_]>::to_vec).collect()
    }

    fn flat(chains: &[Vec<Held>]) -> Vec<Held> {
        chains.iter().flatten().copied().collect()
    }

    proptest! {
        /// Laid end to end or merged, and split whole or update by update, two chains give
        /// what differential's own merger gives: chains that do not overlap (a restore's, in
        /// key order) and chains that do.
        #[test]
        fn run_merger_agrees_with_differentials(
            a in prop::collection::vec((0u64..50, 0u64..4, -2i64..3), 0..40),
            b in prop::collection::vec((0u64..50, 0u64..4, -2i64..3), 0..40),
            apart in any::<bool>(),
            size in 1usize..6,
            upper in 0u64..5,
        ) {
            // Apart: every update of `b` after every one of `a`.
            let b: Vec<Update> = if apart { b.into_iter().map(|(d, t, r)| (d + 100, t, r)).collect() } else { b };
            let (ca, cb) = (chain(a, size), chain(b, size));
            let (mut ours, mut theirs) = (RunMerger::default(), VecMerger::default());
            let (mut out1, mut out2) = (Vec::new(), Vec::new());
            ours.merge(cb.clone(), ca.clone(), &mut out1, &mut Vec::new());
            theirs.merge(cb, ca, &mut out2, &mut Vec::new());
            prop_assert_eq!(flat(&out1), flat(&out2));
            let upper = Antichain::from_elem(upper);
            let mut got = (Antichain::new(), Vec::new(), Vec::new());
            let mut want = (Antichain::new(), Vec::new(), Vec::new());
            ours.extract(out1, upper.borrow(), &mut got.0, &mut got.1, &mut got.2, &mut Vec::new());
            theirs.extract(out2, upper.borrow(), &mut want.0, &mut want.1, &mut want.2, &mut Vec::new());
            prop_assert_eq!(got.0, want.0);
            prop_assert_eq!(flat(&got.1), flat(&want.1));
            prop_assert_eq!(flat(&got.2), flat(&want.2));
        }
    }
}
