//! Interactions taken in since the model was trained, for time windows.
//!
//! Windowed popularity, trends and item metrics count what the model kept of its
//! training data plus these, so "the last day" includes today's events. Each entry keeps
//! its log position and ids (to survive a model swap) and is resolved to the live model's
//! indices as it arrives and again whenever a model is installed; a user the model does
//! not know gets an index past the model's users (counted for everyone, in no segment),
//! and an item it does not know is kept but not counted until a model knows it.
//! Memory is bounded by a cap on entries (the oldest go first); a retrained model that
//! took the events in makes them redundant, and [`LiveInteractions::forget_through`]
//! drops them.

use std::collections::HashMap;
use std::sync::Mutex;

use affinity_core::data::Event;
use affinity_core::model::Model;
use affinity_core::trending::Recent;

/// One kept interaction, by ids.
struct Kept {
    seq: u64,
    user: Box<str>,
    item: Box<str>,
    time: i64,
    kind: affinity_core::data::EventKind,
    value: f32,
}

#[derive(Default)]
struct Inner {
    /// By log position.
    kept: Vec<Kept>,
    /// Those resolved against the model of `version`, in any order; shared with readers
    /// (copied on write only while one holds it).
    resolved: std::sync::Arc<Vec<Recent>>,
    /// Users the live model does not know → their index past its users.
    strangers: HashMap<Box<str>, u32>,
    /// The live model's user count.
    n_users: u32,
    /// The version `resolved` is resolved against.
    version: String,
}

impl Inner {
    fn resolve(&mut self, model: &Model, k: &Kept) -> Option<Recent> {
        let item = model.item_index(&k.item)?.0;
        let user = match model.user_index(&k.user) {
            Some(u) => u.0,
            None => {
                let next = self.n_users + self.strangers.len() as u32;
                *self.strangers.entry(k.user.clone()).or_insert(next)
            }
        };
        Some(Recent { user, item, time: k.time, kind: k.kind, value: k.value })
    }

    /// Resolves every kept entry afresh against `model`.
    fn rebase(&mut self, model: &Model) {
        self.n_users = model.n_users() as u32;
        self.version = model.version().to_string();
        self.strangers.clear();
        let kept = std::mem::take(&mut self.kept);
        self.resolved = std::sync::Arc::new(kept.iter().filter_map(|k| self.resolve(model, k)).collect());
        self.kept = kept;
    }
}

/// The interactions since training, bounded (see the module docs).
pub struct LiveInteractions {
    inner: Mutex<Inner>,
    cap: usize,
}

impl LiveInteractions {
    /// Keeps at most `cap` interactions.
    pub fn new(cap: usize) -> LiveInteractions {
        LiveInteractions { inner: Mutex::new(Inner::default()), cap: cap.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds timed events with their log positions, resolved against `model` (the live
    /// one); a position already held is skipped, so replays change nothing.
    pub fn apply<'a>(&self, model: Option<&Model>, events: impl IntoIterator<Item = (u64, &'a Event)>) {
        let mut g = self.lock();
        let inner = &mut *g;
        if let Some(m) = model.filter(|m| m.version() != inner.version) {
            // Resolved against another model (a swap raced this batch): start afresh.
            inner.rebase(m);
        }
        for (seq, e) in events {
            let Some(time) = e.timestamp else { continue };
            let at = inner.kept.partition_point(|k| k.seq < seq);
            if inner.kept.get(at).is_some_and(|k| k.seq == seq) {
                continue;
            }
            let k = Kept { seq, user: e.user_id.as_str().into(), item: e.item_id.as_str().into(), time, kind: e.kind, value: e.value.unwrap_or(0.0) };
            if let Some(r) = model.and_then(|m| inner.resolve(m, &k)) {
                std::sync::Arc::make_mut(&mut inner.resolved).push(r);
            }
            inner.kept.insert(at, k);
        }
        if inner.kept.len() > self.cap {
            // Drop the oldest quarter at once, so trimming is rare.
            let drop = inner.kept.len() - self.cap + self.cap / 4;
            inner.kept.drain(..drop.min(inner.kept.len()));
            if let Some(m) = model {
                inner.rebase(m);
            }
        }
    }

    /// Resolves every entry against a newly installed model.
    pub fn rebase(&self, model: &Model) {
        self.lock().rebase(model);
    }

    /// Drops entries at or before log position `position` (the model holds them) and
    /// resolves the rest against `model`.
    pub fn forget_through(&self, position: u64, model: &Model) {
        let mut g = self.lock();
        g.kept.retain(|k| k.seq > position);
        g.rebase(model);
    }

    /// Drops a user's entries (they asked to be forgotten).
    pub fn remove_user(&self, user_id: &str, model: Option<&Model>) {
        let mut g = self.lock();
        g.kept.retain(|k| &*k.user != user_id);
        match model {
            Some(m) => g.rebase(m),
            None => g.resolved = Default::default(),
        }
    }

    /// The interactions resolved against `model` (re-resolved first if they were
    /// resolved against another, as around a reload: a request always reads indices of
    /// the model it answers from). The lock is held only to take the snapshot.
    pub fn snapshot(&self, model: &Model) -> std::sync::Arc<Vec<Recent>> {
        let mut g = self.lock();
        if g.version != model.version() {
            g.rebase(model);
        }
        std::sync::Arc::clone(&g.resolved)
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.lock().kept.len()
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use affinity_core::data::{Event, EventKind, TimeKind};
    use affinity_core::demo::{generate, DemoSize, DEMO_SEED};
    use affinity_core::params::TrainParams;
    use affinity_core::train::{train, NoProgress};

    use super::*;

    #[test]
    fn replays_are_idempotent_strangers_get_their_own_index_and_the_cap_holds() {
        let size = DemoSize { users: 30, items: 40, events_per_user: 5, planted: false };
        let mut p = TrainParams::default();
        p.als.factors = 4;
        let m = train(&generate(size, DEMO_SEED), TimeKind::Unix, &p, &NoProgress);
        let ev = |u: &str, i: &str, t: i64| Event::new(u, i, EventKind::View, Some(t));
        let events = [ev("user-0001", "sku-0001", 10), ev("stranger", "sku-0002", 11), ev("stranger", "unknown-item", 12), Event::new("x", "sku-0003", EventKind::View, None)];
        let numbered = || events.iter().enumerate().map(|(n, e)| (n as u64 + 1, e));
        let live = LiveInteractions::new(100);
        live.apply(Some(&m), numbered());
        live.apply(Some(&m), numbered());
        assert_eq!(live.len(), 3, "untimed events are not kept; a replay adds nothing");
        let r = live.snapshot(&m);
        assert_eq!(r.len(), 2, "the unknown item waits for a model that knows it");
        assert_eq!(r[0].user, m.user_index("user-0001").unwrap().0);
        assert_eq!(r[1].user, m.n_users() as u32, "the first stranger comes right after the model's users");
        live.forget_through(1, &m);
        assert_eq!(live.snapshot(&m).len(), 1);
        let capped = LiveInteractions::new(8);
        let many: Vec<Event> = (0..20).map(|t| ev("user-0002", "sku-0004", t)).collect();
        capped.apply(Some(&m), many.iter().enumerate().map(|(n, e)| (n as u64 + 1, e)));
        assert!(capped.len() <= 8 && capped.len() >= 6, "{}", capped.len());
        assert!(capped.snapshot(&m).iter().all(|x| x.time >= 12), "the oldest went first");
    }
}
