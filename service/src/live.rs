//! Live user state: what users did since the model was trained.
//!
//! Every ingested event lands here (after it is durable) and the next `Recommend` for
//! that user passes these events to the engine, which folds them into the user's vector,
//! recent items and seen set. Memory is bounded twice: each user keeps at most
//! `per_user` latest events, and at most `max_users` users are kept, the least recently
//! active evicted first (their events stay in the log, and come back at the next retrain
//! or restart).
//!
//! Users are spread over shards by a hash of their id, each shard with its own lock, map
//! and eviction order, so concurrent batches rarely wait for each other and no single
//! map grows to a size whose rehash would stall every request (at a million users, one
//! map's resize took ~100 ms under the lock). Eviction is least-recently-active within a
//! shard, each shard holding its share of `max_users`.

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
    /// `(log position, event)`, by position.
    events: VecDeque<(u64, LiveEvent)>,
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
    /// Events per user, and users per shard.
    limits: LiveLimits,
    shards: Box<[Mutex<Inner>]>,
}

/// Most shards; fewer when `max_users` is small, so each holds at least this many users.
const MAX_SHARDS: usize = 64;
const MIN_USERS_PER_SHARD: usize = 1024;

/// Rough bytes of one kept event: its slot and its item id (allocator slack and queue
/// capacity not counted).
fn event_bytes(e: &LiveEvent) -> usize {
    std::mem::size_of::<(u64, LiveEvent)>() + e.item_id.len()
}

/// Rough bytes of one user's entry without its events: the map slot, the activity-index
/// slot and the two copies of the id.
fn user_bytes(user_id: &str) -> usize {
    std::mem::size_of::<(String, UserLive)>() + std::mem::size_of::<(u64, String)>() + 2 * user_id.len()
}

impl LiveUsers {
    /// Empty state with the given bounds.
    pub fn new(limits: LiveLimits) -> LiveUsers {
        let n = (limits.max_users / MIN_USERS_PER_SHARD).clamp(1, MAX_SHARDS);
        LiveUsers {
            limits: LiveLimits {
                per_user: limits.per_user,
                max_users: limits.max_users.div_ceil(n),
            },
            shards: (0..n).map(|_| Mutex::new(Inner::default())).collect(),
        }
    }

    fn shard_of(&self, user_id: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        user_id.hash(&mut h);
        (h.finish() % self.shards.len() as u64) as usize
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_user(&self, user_id: &str) -> std::sync::MutexGuard<'_, Inner> {
        self.lock(self.shard_of(user_id))
    }

    /// Adds events with their log positions to their users' state; an event whose
    /// position the user already holds is skipped, so replaying a stretch of the log
    /// twice (a reload racing new ingests) changes nothing.
    pub fn apply<'a>(&self, events: impl IntoIterator<Item = (u64, &'a Event)>) {
        let mut by_shard: Vec<Vec<(u64, &Event)>> = vec![Vec::new(); self.shards.len()];
        // Impressions stay in the log (item metrics) but are not something the user did.
        for (seq, e) in events.into_iter().filter(|(_, e)| e.kind.is_interaction()) {
            by_shard[self.shard_of(&e.user_id)].push((seq, e));
        }
        for (shard, events) in by_shard.into_iter().enumerate().filter(|(_, e)| !e.is_empty()) {
            self.apply_in(&mut self.lock(shard), events);
        }
    }

    fn apply_in(&self, inner: &mut Inner, events: Vec<(u64, &Event)>) {
        for (seq, e) in events {
            if inner.users.get(&e.user_id).is_some_and(|u| u.events.binary_search_by_key(&seq, |x| x.0).is_ok()) {
                continue;
            }
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
                inner.bytes += user_bytes(&e.user_id);
            }
            user.touched = now;
            inner.by_activity.insert(now, e.user_id.clone());
            inner.bytes += event_bytes(&live);
            inner.events += 1;
            // Batches may be applied out of order: keep each user's events by position.
            let at = user.events.partition_point(|x| x.0 < seq);
            user.events.insert(at, (seq, live));
            while user.events.len() > self.limits.per_user {
                if let Some((_, old)) = user.events.pop_front() {
                    inner.bytes -= event_bytes(&old);
                    inner.events -= 1;
                }
            }
            while inner.users.len() > self.limits.max_users {
                let Some((_, oldest)) = inner.by_activity.pop_first() else { break };
                if let Some(gone) = inner.users.remove(&oldest) {
                    inner.events -= gone.events.len();
                    inner.bytes -= gone.events.iter().map(|x| event_bytes(&x.1)).sum::<usize>() + user_bytes(&oldest);
                    inner.evicted += 1;
                }
            }
        }
    }

    /// The user's live events, oldest first (empty for a user without any).
    pub fn events_of(&self, user_id: &str) -> Vec<LiveEvent> {
        self.lock_user(user_id).users.get(user_id).map(|u| u.events.iter().map(|x| x.1.clone()).collect()).unwrap_or_default()
    }

    /// Forgets a user's live events.
    pub fn remove(&self, user_id: &str) {
        let mut g = self.lock_user(user_id);
        let inner = &mut *g;
        if let Some(gone) = inner.users.remove(user_id) {
            inner.by_activity.remove(&gone.touched);
            inner.events -= gone.events.len();
            inner.bytes -= gone.events.iter().map(|x| event_bytes(&x.1)).sum::<usize>() + user_bytes(user_id);
        }
    }

    /// Drops every event at or before log position `position` (a model trained through
    /// it holds them now).
    pub fn forget_through(&self, position: u64) {
        for shard in 0..self.shards.len() {
            Self::forget_in(&mut self.lock(shard), position);
        }
    }

    fn forget_in(inner: &mut Inner, position: u64) {
        let mut emptied = Vec::new();
        for (id, user) in inner.users.iter_mut() {
            while user.events.front().is_some_and(|x| x.0 <= position) {
                if let Some((_, old)) = user.events.pop_front() {
                    inner.bytes -= event_bytes(&old);
                    inner.events -= 1;
                }
            }
            if user.events.is_empty() {
                emptied.push((id.clone(), user.touched));
            }
        }
        for (id, touched) in emptied {
            inner.users.remove(&id);
            inner.by_activity.remove(&touched);
            inner.bytes -= user_bytes(&id);
        }
    }

    /// Current sizes.
    pub fn stats(&self) -> LiveStats {
        let mut s = LiveStats::default();
        for shard in 0..self.shards.len() {
            let g = self.lock(shard);
            s.users += g.users.len();
            s.events += g.events;
            s.evicted += g.evicted;
            s.bytes += g.bytes;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use affinity_core::data::EventKind;

    use super::*;

    fn ev(u: &str, i: &str) -> Event {
        Event::new(u, i, EventKind::View, None)
    }

    fn numbered(events: &[Event], first: u64) -> Vec<(u64, &Event)> {
        events.iter().enumerate().map(|(n, e)| (first + n as u64, e)).collect()
    }

    #[test]
    fn keeps_the_latest_events_per_user_and_evicts_the_least_recently_active() {
        let live = LiveUsers::new(LiveLimits { per_user: 3, max_users: 2 });
        let first = [ev("a", "1"), ev("a", "2"), ev("b", "3"), ev("a", "4"), ev("a", "5")];
        live.apply(numbered(&first, 1));
        let a: Vec<String> = live.events_of("a").into_iter().map(|e| e.item_id).collect();
        assert_eq!(a, ["2", "4", "5"]);
        live.apply(numbered(&[ev("c", "6")], 6));
        assert!(live.events_of("b").is_empty(), "b was the least recently active");
        assert_eq!(live.events_of("a").len(), 3);
        let s = live.stats();
        assert_eq!((s.users, s.events, s.evicted), (2, 4, 1));
        assert!(s.bytes > 0);
    }

    #[test]
    fn replays_are_idempotent_order_is_by_position_and_a_retrained_model_takes_over() {
        let live = LiveUsers::new(LiveLimits::default());
        let e = [ev("a", "1"), ev("a", "2"), ev("a", "3")];
        live.apply([(3, &e[2]), (1, &e[0])]);
        live.apply(numbered(&e, 1));
        let items = |l: &LiveUsers| l.events_of("a").into_iter().map(|e| e.item_id).collect::<Vec<_>>();
        assert_eq!(items(&live), ["1", "2", "3"]);
        live.forget_through(2);
        assert_eq!(items(&live), ["3"]);
        live.forget_through(3);
        assert_eq!(live.stats().users, 0);
        assert_eq!(live.stats().bytes, 0);
    }

    #[test]
    fn many_users_spread_over_shards_within_the_cap() {
        let live = LiveUsers::new(LiveLimits { per_user: 2, max_users: 64 * 1024 });
        assert_eq!(live.shards.len(), 64);
        let events: Vec<Event> = (0..100_000).map(|n| ev(&format!("u{n}"), "1")).collect();
        live.apply(numbered(&events, 1));
        let s = live.stats();
        assert!(s.users <= 64 * 1024 && s.users > 60_000, "{s:?}");
        assert_eq!(s.evicted as usize + s.users, 100_000);
        assert_eq!(live.events_of("u99999").len(), 1, "the latest user is kept");
        for shard in live.shards.iter() {
            assert!(shard.lock().unwrap().users.len() <= 1024);
        }
    }
}
