//! Cancellation of a request's scoring once nobody waits for its answer.
//!
//! The server hands scoring to the blocking pool; when the client's deadline passes or it
//! disconnects, the request's future is dropped but the blocking work would run on. A
//! [`Cancel`] is the flag the server flips then and scoring checks between chunks of work,
//! so abandoned requests stop costing CPU. It is a plain atomic: no runtime involved.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag scoring checks; cheap to clone and to check.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Option<Arc<AtomicBool>>);

impl Cancel {
    /// A token that is never cancelled.
    pub fn never() -> Cancel {
        Cancel(None)
    }

    /// A token that [`Cancel::cancel`] on any clone flips.
    pub fn new() -> Cancel {
        Cancel(Some(Arc::new(AtomicBool::new(false))))
    }

    /// Asks every holder to stop.
    pub fn cancel(&self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the work should stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
    }
}
