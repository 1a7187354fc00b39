//! Exploration: a small, steady share of `Recommend` slots for items nobody has
//! interacted with yet.
//!
//! An item without events has no collaborative vector, so personalised scoring cannot
//! rank it, and without being shown it never earns the events that would let it rank.
//! A share of list slots (the server's `explore_share`, off in models and evaluation)
//! goes to such items, at the tail of the list where it costs the least. Only items
//! known to be new are explored: listed within [`NEW_DAYS`] (by the catalogue's
//! `listed_at`, or added while serving). A catalogue row with no events and no listing
//! date may be stock nobody wants rather than something new, and is left alone. Which users get
//! a slot and which new item fills it are fixed per user and day (a hash of both), so a
//! page reload shows the same list, and tomorrow may show another item.

use crate::ids::ItemIdx;
use crate::linalg::dot;
use crate::model::Model;

/// How recently an item without events must have been listed to be explored.
pub const NEW_DAYS: i64 = 30;

/// New items close enough to the subject's taste that one of them is drawn.
const SHORTLIST: usize = 3;

/// FNV-1a over `key` and `day`, finished with a SplitMix64 step: stable across builds
/// and platforms (the standard hasher promises neither).
fn hash(key: &str, day: i64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(day.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The UTC day number of the clock.
pub(crate) fn today() -> i64 {
    crate::data::unix_now() / 86_400
}

/// How many of `k` slots go to new items for `key` on `day`: `share × k` on average,
/// the whole part always and the fraction when the day's draw falls below it; never
/// more than half the list (so a one-item list never explores).
pub(crate) fn slots(key: &str, day: i64, share: f32, k: usize) -> usize {
    if share <= 0.0 || k == 0 {
        return 0;
    }
    let expected = f64::from(share.min(1.0)) * k as f64;
    let whole = expected.floor();
    let draw = (hash(key, day) >> 11) as f64 / (1u64 << 53) as f64;
    let n = whole as usize + usize::from(draw < expected - whole);
    n.min(k / 2)
}

/// Picks `n` of the `candidates` (new, eligible items) for a subject whose recent items
/// are `recent`: the shortlist closest in content to those items (or, without them, the
/// most recently listed), then a draw fixed by `key` and `day` among it.
pub(crate) fn pick(model: &Model, mut candidates: Vec<ItemIdx>, recent: &[ItemIdx], key: &str, day: i64, n: usize) -> Vec<ItemIdx> {
    if n == 0 || candidates.is_empty() {
        return Vec::new();
    }
    let taste: Vec<&[f32]> = recent.iter().filter(|&&r| model.has_content(r)).map(|&r| model.content_vector(r)).collect();
    let affinity = |i: ItemIdx| -> f32 {
        if taste.is_empty() || !model.has_content(i) {
            return 0.0;
        }
        let v = model.content_vector(i);
        taste.iter().map(|t| dot(t, v)).sum::<f32>() / taste.len() as f32
    };
    let listed = |i: ItemIdx| model.item(i).listed_at.unwrap_or(i64::MIN);
    let mut scored: Vec<(f32, i64, ItemIdx)> = candidates.drain(..).map(|i| (affinity(i), listed(i), i)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    let short = scored.len().min(SHORTLIST.max(n));
    let start = (hash(key, day.wrapping_add(1)) % short as u64) as usize;
    (0..n.min(short)).map(|j| scored[(start + j) % short].2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_average_the_share_and_are_fixed_per_user_and_day() {
        assert_eq!(slots("u", 1, 0.0, 10), 0);
        assert_eq!(slots("u", 1, 0.2, 10), 2);
        assert_eq!(slots("u", 1, 0.9, 10), 5, "never more than half the list");
        let users: Vec<String> = (0..4000).map(|u| format!("user-{u}")).collect();
        let total: usize = users.iter().map(|u| slots(u, 20_000, 0.05, 10)).sum();
        let mean = total as f64 / users.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "mean slots {mean}");
        assert!(users.iter().all(|u| slots(u, 20_000, 0.05, 10) == slots(u, 20_000, 0.05, 10)));
        let moved = users.iter().filter(|u| slots(u, 20_000, 0.05, 10) != slots(u, 20_001, 0.05, 10)).count();
        assert!(moved > 1000, "the draw changes from day to day ({moved} of 4000 moved)");
    }
}
