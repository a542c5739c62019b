//! Before the processes of a cluster build their dataflow they agree on the checkpoint they
//! all restore: every process offers the frontiers of its complete checkpoints, and the
//! newest frontier every process holds is taken (none: every process replays its whole WAL).
//! A checkpoint restores the state its process's workers held at that frontier, and the
//! state of every worker in the cluster depends on every process's log: only the same
//! frontier everywhere is a consistent state. Each process also tells the others its HTTP
//! address, for a host file that gives timely's addresses alone.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};

use timely::dataflow::InputHandleVec;
use timely::dataflow::operators::vec::{Broadcast, Input};
use timely::dataflow::operators::{Inspect, Probe};
use timely::worker::Worker;

use tidal_core::flow::Restore;
use tidal_core::time::Time;

/// A cluster's agreement on the checkpoint to restore, between the facade (which lists and
/// loads checkpoints) and the workers (which talk to the other processes).
#[derive(Debug)]
pub struct Agreement {
    /// The frontiers of this process's complete checkpoints.
    offer: Vec<Time>,
    /// This process's HTTP address, told to the others.
    http: String,
    /// The frontier agreed on: `Some(None)` when no checkpoint is common.
    chosen: Mutex<Option<Option<Time>>>,
    /// Every process's HTTP address as it told it (by process; empty: not heard from), set
    /// with `chosen`.
    addresses: Mutex<Vec<String>>,
    /// What this process restores (set by the facade once the agreed checkpoint is loaded):
    /// `Some(None)` for nothing.
    restore: Mutex<Option<Option<Arc<Restore>>>>,
    changed: Condvar,
}

impl Agreement {
    /// An agreement offering the checkpoints at `offer`, telling the others that this
    /// process answers HTTP at `http`.
    pub fn new(offer: Vec<Time>, http: String) -> Arc<Agreement> {
        Arc::new(Agreement {
            offer,
            http,
            chosen: Mutex::new(None),
            addresses: Mutex::new(Vec::new()),
            restore: Mutex::new(None),
            changed: Condvar::new(),
        })
    }

    /// Waits until the processes have agreed (`None`: no common checkpoint); `false` after
    /// `timeout` without an answer, in the outer option.
    pub fn chosen(&self, timeout: std::time::Duration) -> Option<Option<Time>> {
        let guard = self.chosen.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |c| c.is_none())
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }

    /// Hands the workers what to restore (the agreed checkpoint, loaded; or nothing).
    pub fn set_restore(&self, restore: Option<Arc<Restore>>) {
        *self.restore.lock().unwrap_or_else(|p| p.into_inner()) = Some(restore);
        self.changed.notify_all();
    }

    /// The HTTP address each process told (by process; empty for one not heard from), once
    /// [`chosen`](Self::chosen) has answered.
    pub fn addresses(&self) -> Vec<String> {
        self.addresses.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_chosen(&self, chosen: Option<Time>, addresses: Vec<String>) {
        *self.addresses.lock().unwrap_or_else(|p| p.into_inner()) = addresses;
        *self.chosen.lock().unwrap_or_else(|p| p.into_inner()) = Some(chosen);
        self.changed.notify_all();
    }

    fn wait_restore(&self) -> Option<Arc<Restore>> {
        let guard = self.restore.lock().unwrap_or_else(|p| p.into_inner());
        let guard = self
            .changed
            .wait_while(guard, |r| r.is_none())
            .unwrap_or_else(|p| p.into_inner());
        guard.clone().flatten()
    }
}

/// Runs the agreement on `worker` (every worker of the cluster takes part; the first worker
/// of each process speaks for it) and returns what this worker restores.
pub(crate) fn agree(
    worker: &mut Worker,
    agreement: &Agreement,
    speaker: Option<usize>,
    processes: usize,
) -> Option<Arc<Restore>> {
    let heard: Rc<RefCell<Vec<Offer>>> = Rc::default();
    let mut input: InputHandleVec<u64, Offer> = InputHandleVec::new();
    let seen = heard.clone();
    let probe = worker.dataflow::<u64, _, _>(|scope| {
        let (probe, _) = scope
            .input_from(&mut input)
            .broadcast()
            .inspect(move |offer: &Offer| seen.borrow_mut().push(offer.clone()))
            .probe();
        probe
    });
    if let Some(process) = speaker {
        input.send((process, agreement.http.clone(), agreement.offer.clone()));
    }
    input.close();
    while !probe.done() {
        worker.step();
    }
    let heard = heard.borrow();
    let offers: Vec<Vec<Time>> = heard.iter().map(|(_, _, o)| o.clone()).collect();
    let chosen = common(&offers, processes);
    if speaker.is_some() {
        if chosen.is_none() && offers.iter().any(|o| !o.is_empty()) {
            // Checkpoints that share no frontier: the processes' writers drifted apart (a
            // checkpoint_every small against the time one takes to write) or one lost its own.
            let held: Vec<String> = heard.iter().map(|(p, _, o)| format!("process {p}: {o:?}")).collect();
            tracing::warn!(
                checkpoints = %held.join("; "),
                "the processes hold no checkpoint at a common frontier: each replays its whole WAL"
            );
        }
        let mut addresses = vec![String::new(); processes];
        for (p, http, _) in heard.iter() {
            if let Some(a) = addresses.get_mut(*p) {
                a.clone_from(http);
            }
        }
        agreement.set_chosen(chosen, addresses);
    }
    agreement.wait_restore()
}

/// What a process tells the others: its index, its HTTP address and its checkpoints'
/// frontiers.
type Offer = (usize, String, Vec<Time>);

/// The newest frontier every one of `processes` offers.
fn common(offers: &[Vec<Time>], processes: usize) -> Option<Time> {
    if offers.len() < processes {
        return None;
    }
    let first = offers.first()?;
    first
        .iter()
        .copied()
        .filter(|t| offers.iter().all(|o| o.contains(t)))
        .max()
}

#[cfg(test)]
mod tests {
    use super::common;

    #[test]
    fn the_newest_frontier_every_process_holds() {
        assert_eq!(common(&[vec![5, 9], vec![9, 5]], 2), Some(9));
        assert_eq!(common(&[vec![5, 9], vec![5, 7]], 2), Some(5));
        assert_eq!(common(&[vec![5, 9], vec![7]], 2), None);
        assert_eq!(common(&[vec![5, 9]], 2), None, "a process offered nothing");
        assert_eq!(common(&[vec![], vec![]], 2), None);
    }
}
