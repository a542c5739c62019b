//! [`Background`]: work an operator starts on a thread of its own when it is built and takes
//! at its first activation.
//!
//! A restore decodes its checkpoint parts this way: the dataflow's operators are all built
//! before any runs, so every part (the users, the interned items, the keyed sums) decodes side
//! by side on the machine's cores, beside the text and nearest-item indexes' loads, rather
//! than one after another on the worker.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Work running on another thread, or done.
pub(crate) enum Background<T> {
    Running(JoinHandle<Option<T>>),
    Done(T),
}

impl<T: Send + 'static> Background<T> {
    /// Runs `work` on a thread named `name`; on this one, at once, if no thread starts.
    pub(crate) fn start<F>(name: &str, work: F) -> Background<T>
    where
        F: FnOnce() -> T + Send + 'static,
    {
        // The work stays reachable here should the thread not start.
        let slot = Arc::new(Mutex::new(Some(work)));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || theirs.lock().unwrap_or_else(|p| p.into_inner()).take().map(|w| w()));
        let left = || slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        match spawned {
            Ok(handle) => Background::Running(handle),
            Err(e) => {
                tracing::debug!(name, error = %e, "no thread for background work: done here");
                match left() {
                    Some(work) => Background::Done(work()),
                    None => unreachable!("a thread that did not start took the work"),
                }
            }
        }
    }

    /// The work's result, waiting for it if need be. A panic in the work is resumed here.
    pub(crate) fn take(self) -> T {
        match self {
            Background::Done(t) => t,
            Background::Running(handle) => match handle.join() {
                Ok(Some(t)) => t,
                Ok(None) => unreachable!("the thread ran without its work"),
                Err(panic) => std::panic::resume_unwind(panic),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Background;

    #[test]
    fn the_result_comes_back_and_a_panic_is_resumed() {
        let b = Background::start("test-bg", || (1..=10u64).sum::<u64>());
        assert_eq!(b.take(), 55);
        let p = Background::start("test-bg-panic", || -> u64 { panic!("part does not decode") });
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.take()));
        let message = caught
            .err()
            .and_then(|e| e.downcast_ref::<&str>().map(|s| s.to_string()));
        assert_eq!(message.as_deref(), Some("part does not decode"));
    }
}
