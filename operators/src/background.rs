//! [`Background`]: work an operator starts on a thread of its own when it is built and takes
//! once the work is done.
//!
//! A restore decodes its checkpoint parts this way: the dataflow's operators are all built
//! before any runs, so every part (the users, the interned items, the keyed sums) decodes side
//! by side on the machine's cores, beside the text and nearest-item indexes' loads, rather
//! than one after another on the worker; and an operator whose part is not decoded yet
//! holds its initial capabilities and lets the worker run the others, the thread activating
//! it when the part is ready.

use std::sync::mpsc::{Receiver, TryRecvError, channel};

use timely::scheduling::SyncActivator;

use tidal_core::flow::Persist;

/// Worker `index`'s part `what` of the restored checkpoint, if there is one, decoding by
/// `decode` on a thread of its own, which activates `operator` (the operator that waits for
/// it) once the part can be taken; the operator may be gone with its dataflow, then nobody
/// is woken.
pub(crate) fn decoding<T, F>(
    persist: &Persist,
    index: usize,
    what: &str,
    operator: SyncActivator,
    decode: F,
) -> Option<Background<T>>
where
    T: Send + 'static,
    F: FnOnce(Vec<u8>) -> T + Send + 'static,
{
    let bytes = persist.take_restored(index, what)?;
    let woken = move || {
        let _ = operator.activate();
    };
    Some(Background::start(
        &format!("tidal-{what}-load-{index}"),
        move || decode(bytes),
        woken,
    ))
}

/// The outcome of the work: its result, or its panic.
type Outcome<T> = std::thread::Result<T>;

/// Work running on another thread, or done.
pub(crate) struct Background<T> {
    rx: Option<Receiver<Outcome<T>>>,
    got: Option<Outcome<T>>,
}

impl<T: Send + 'static> Background<T> {
    /// Runs `work` on a thread named `name`, which calls `done` once the result can be taken;
    /// on this one, at once, if no thread starts.
    pub(crate) fn start<F, D>(name: &str, work: F, done: D) -> Background<T>
    where
        F: FnOnce() -> T + Send + 'static,
        D: FnOnce() + Send + 'static,
    {
        let run = |work: F| std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        // The work stays reachable here should the thread not start.
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(work)));
        let theirs = slot.clone();
        let (tx, rx) = channel();
        let spawned = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            let work = theirs.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(work) = work {
                // The receiver may be gone (the dataflow dropped): nothing to tell.
                let _ = tx.send(run(work));
                done();
            }
        });
        let waiting = Background {
            rx: Some(rx),
            got: None,
        };
        match spawned {
            Ok(_) => waiting,
            Err(e) => {
                tracing::debug!(name, error = %e, "no thread for background work: done here");
                match slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    Some(work) => Background {
                        rx: None,
                        got: Some(run(work)),
                    },
                    None => waiting,
                }
            }
        }
    }

    /// Whether the result can be taken without waiting.
    pub(crate) fn ready(&mut self) -> bool {
        if self.got.is_none()
            && let Some(rx) = &self.rx
        {
            match rx.try_recv() {
                Ok(outcome) => self.got = Some(outcome),
                Err(TryRecvError::Empty) => {}
                // The thread ended without a result: `take` says so.
                Err(TryRecvError::Disconnected) => return true,
            }
        }
        self.got.is_some()
    }

    /// The work's result, waiting for it if need be. A panic in the work is resumed here.
    pub(crate) fn take(self) -> T {
        let outcome = match (self.got, self.rx) {
            (Some(outcome), _) => outcome,
            (None, Some(rx)) => match rx.recv() {
                Ok(outcome) => outcome,
                Err(_) => panic!("background work ended without a result"),
            },
            (None, None) => panic!("background work ended without a result"),
        };
        match outcome {
            Ok(t) => t,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::Background;

    #[test]
    fn the_result_comes_back_after_done_and_a_panic_is_resumed() {
        let told = Arc::new(AtomicBool::new(false));
        let t = told.clone();
        let mut b = Background::start(
            "test-bg",
            || (1..=10u64).sum::<u64>(),
            move || t.store(true, Ordering::SeqCst),
        );
        while !told.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // Once told, the result is there.
        assert!(b.ready());
        assert_eq!(b.take(), 55);
        let p = Background::start("test-bg-panic", || -> u64 { panic!("part does not decode") }, || {});
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.take()));
        let message = caught
            .err()
            .and_then(|e| e.downcast_ref::<&str>().map(|s| s.to_string()));
        assert_eq!(message.as_deref(), Some("part does not decode"));
    }
}
