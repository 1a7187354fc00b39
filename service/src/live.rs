//! Live user state: what users did since the model was trained.
//!
//! Every ingested event lands here (after it is durable) and the next `Recommend` for
//! that user passes these events to the engine, which folds them into the user's vector,
//! recent items and seen set. Memory is bounded twice: each user keeps at most
//! `per_user` latest events, and at most `max_users` users are kept, the least recently
//! active evicted first (their events stay in the log, and come back at the next retrain
//! or restart).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use affinity_core::data::Event;
use affinity_core::recommend::LiveEvent;

/// Bounds of the live state.
#[derive(Debug, Clone, Copy)]
pub struct LiveLimits {
    /// Latest events kept per user.
    pub per_user: usize,
    /// Users kept; the least recently active are evicted beyond it.
    pub max_users: usize,
}

impl Default for LiveLimits {
    fn default() -> Self {
        LiveLimits {
            per_user: 100,
            max_users: 1_000_000,
        }
    }
}

/// Sizes of the live state, for `ModelInfo`, metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LiveStats {
    /// Users with live events.
    pub users: usize,
    /// Live events kept over all users.
    pub events: usize,
    /// Users evicted since start.
    pub evicted: u64,
    /// An estimate of the memory held, in bytes.
    pub bytes: usize,
}

struct UserLive {
    events: VecDeque<LiveEvent>,
    /// Activity clock value of the latest event (key in `by_activity`).
    touched: u64,
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, UserLive>,
    /// Activity clock → user, oldest first, for eviction.
    by_activity: BTreeMap<u64, String>,
    clock: u64,
    events: usize,
    bytes: usize,
    evicted: u64,
}

/// Per-user live events, bounded; shared by the ingest path and the handlers.
pub struct LiveUsers {
    limits: LiveLimits,
    inner: Mutex<Inner>,
}

/// Rough heap bytes of one kept event.
fn event_bytes(e: &LiveEvent) -> usize {
    std::mem::size_of::<LiveEvent>() + e.item_id.len()
}

impl LiveUsers {
    /// Empty state with the given bounds.
    pub fn new(limits: LiveLimits) -> LiveUsers {
        LiveUsers {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds events (in order) to their users' state.
    pub fn apply<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        let mut g = self.lock();
        let inner = &mut *g;
        for e in events {
            inner.clock += 1;
            let now = inner.clock;
            let live = LiveEvent {
                item_id: e.item_id.clone(),
                kind: e.kind,
                timestamp: e.timestamp,
            };
            let user = inner.users.entry(e.user_id.clone()).or_insert_with(|| UserLive {
                events: VecDeque::new(),
                touched: 0,
            });
            if user.touched != 0 {
                inner.by_activity.remove(&user.touched);
            } else {
                inner.bytes += e.user_id.len() + std::mem::size_of::<UserLive>();
            }
            user.touched = now;
            inner.by_activity.insert(now, e.user_id.clone());
            inner.bytes += event_bytes(&live);
            inner.events += 1;
            user.events.push_back(live);
            while user.events.len() > self.limits.per_user {
                if let Some(old) = user.events.pop_front() {
                    inner.bytes -= event_bytes(&old);
                    inner.events -= 1;
                }
            }
            while inner.users.len() > self.limits.max_users {
                let Some((_, oldest)) = inner.by_activity.pop_first() else { break };
                if let Some(gone) = inner.users.remove(&oldest) {
                    inner.events -= gone.events.len();
                    inner.bytes -= gone.events.iter().map(event_bytes).sum::<usize>() + oldest.len() + std::mem::size_of::<UserLive>();
                    inner.evicted += 1;
                }
            }
        }
    }

    /// The user's live events, oldest first (empty for a user without any).
    pub fn events_of(&self, user_id: &str) -> Vec<LiveEvent> {
        self.lock().users.get(user_id).map(|u| u.events.iter().cloned().collect()).unwrap_or_default()
    }

    /// Current sizes.
    pub fn stats(&self) -> LiveStats {
        let g = self.lock();
        LiveStats {
            users: g.users.len(),
            events: g.events,
            evicted: g.evicted,
            bytes: g.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use affinity_core::data::EventKind;

    use super::*;

    fn ev(u: &str, i: &str) -> Event {
        Event::new(u, i, EventKind::View, None)
    }

    #[test]
    fn keeps_the_latest_events_per_user_and_evicts_the_least_recently_active() {
        let live = LiveUsers::new(LiveLimits { per_user: 3, max_users: 2 });
        live.apply(&[ev("a", "1"), ev("a", "2"), ev("b", "3"), ev("a", "4"), ev("a", "5")]);
        let a: Vec<String> = live.events_of("a").into_iter().map(|e| e.item_id).collect();
        assert_eq!(a, ["2", "4", "5"]);
        live.apply(&[ev("c", "6")]);
        assert!(live.events_of("b").is_empty(), "b was the least recently active");
        assert_eq!(live.events_of("a").len(), 3);
        let s = live.stats();
        assert_eq!((s.users, s.events, s.evicted), (2, 4, 1));
        assert!(s.bytes > 0);
    }
}
