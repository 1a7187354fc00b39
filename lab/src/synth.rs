//! Synthetic stores with known structure, for tests and benchmarks that need a property
//! real data sets do not isolate.
//!
//! [`rebuy_store`] plants repeat consumption: a few consumable categories that regular
//! customers rebuy on a fixed cycle (every `L` purchases, `L` depending on the
//! category, with some jitter), and durable categories nobody buys twice. Everyone
//! else's purchases follow a taste for two durable categories and a popularity skew
//! within them, so new items are predictable too.

use affinity_core::data::{Dataset, Event, EventKind, Item};
use rand::{Rng, SeedableRng};

/// Sizes of a [`rebuy_store`].
#[derive(Debug, Clone, Copy)]
pub struct RebuySize {
    pub users: usize,
    /// Items per category.
    pub items_per_category: usize,
    /// Consumable categories (cycles of 2, 3, 4, 5, 2, … purchases).
    pub consumables: usize,
    pub durables: usize,
    /// Purchases per user (before jitter of up to a third more).
    pub purchases: usize,
    /// Share of users who are regulars of one consumable.
    pub regulars: f64,
}

impl Default for RebuySize {
    fn default() -> Self {
        RebuySize {
            users: 1_500,
            items_per_category: 30,
            consumables: 4,
            durables: 8,
            purchases: 18,
            regulars: 0.5,
        }
    }
}

/// The cycle of consumable category `c`, in purchases.
pub fn cycle(c: usize) -> usize {
    2 + c % 4
}

/// A store with planted rebuy cycles: purchases with order timestamps and a catalogue
/// whose categories are `consumable-N` and `durable-N`.
pub fn rebuy_store(size: RebuySize, seed: u64) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n_cat = size.consumables + size.durables;
    let item = |c: usize, j: usize| format!("c{c:02}-i{j:03}");
    let items: Vec<Item> = (0..n_cat)
        .flat_map(|c| {
            (0..size.items_per_category).map(move |j| Item {
                category: if c < size.consumables { format!("consumable-{c}") } else { format!("durable-{}", c - size.consumables) },
                ..Item::bare(item(c, j))
            })
        })
        .collect();
    // Popularity skew within a category: rank j drawn with weight 1 / (j + 1).
    let pick = |rng: &mut rand_chacha::ChaCha8Rng| -> usize {
        let total: f64 = (0..size.items_per_category).map(|j| 1.0 / (j as f64 + 1.0)).sum();
        let mut x = rng.gen::<f64>() * total;
        for j in 0..size.items_per_category {
            x -= 1.0 / (j as f64 + 1.0);
            if x <= 0.0 {
                return j;
            }
        }
        size.items_per_category - 1
    };
    let mut events = Vec::new();
    for u in 0..size.users {
        let user = format!("u{u:05}");
        let tastes = [
            size.consumables + rng.gen_range(0..size.durables),
            size.consumables + rng.gen_range(0..size.durables),
        ];
        let staple = (rng.gen::<f64>() < size.regulars).then(|| {
            let c = rng.gen_range(0..size.consumables.max(1));
            (c, pick(&mut rng))
        });
        let n = size.purchases + rng.gen_range(0..=size.purchases / 3);
        let mut bought = std::collections::HashSet::new();
        let mut since = usize::MAX / 2;
        let mut due = 0;
        for t in 0..n {
            let (c, j) = match staple {
                Some((c, j)) if since + 1 >= due => {
                    since = 0;
                    // Jitter: one purchase later one time in five.
                    due = cycle(c) + usize::from(rng.gen::<f64>() < 0.2);
                    (c, j)
                }
                _ => {
                    since += 1;
                    let mut next = None;
                    for _ in 0..100 {
                        let c = tastes[rng.gen_range(0..2)];
                        let j = pick(&mut rng);
                        if !bought.contains(&(c, j)) {
                            next = Some((c, j));
                            break;
                        }
                    }
                    let Some(cj) = next else { continue };
                    cj
                }
            };
            bought.insert((c, j));
            events.push(Event::new(&user, item(c, j), EventKind::Purchase, Some(t as i64)));
        }
    }
    Dataset {
        events,
        items,
        ..Dataset::default()
    }
}

/// Sizes of a [`power_law_store`].
#[derive(Debug, Clone, Copy)]
pub struct PowerLawSize {
    pub items: usize,
    pub users: usize,
    pub events: usize,
    /// Items per category (categories hold consecutive popularity ranks' neighbours).
    pub items_per_category: usize,
}

/// A store shaped like real catalogues at scale: item popularity follows a power law
/// (Zipf, exponent ~1) within each of `items / items_per_category` categories, whose
/// own popularity is Zipf too; user activity is heavy-tailed (a few users make many
/// events); each user mostly stays in two categories. Events are views with unix times
/// over 90 days, one in five followed by a purchase at the item's price. Deterministic
/// per seed; generated in one pass, so tens of millions of events take seconds.
pub fn power_law_store(size: PowerLawSize, seed: u64) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let per_cat = size.items_per_category.clamp(1, size.items.max(1));
    let n_cat = size.items.div_ceil(per_cat).max(1);
    let items: Vec<Item> = (0..size.items)
        .map(|i| Item {
            title: format!("item {i}"),
            category: format!("c{}", i % n_cat),
            brand: format!("b{}", (i / 7) % 500),
            price: Some(1.0 + (i % 197) as f32 * 0.5),
            ..Item::bare(format!("i{i}"))
        })
        .collect();
    // Zipf(1) draws by inverse CDF of the harmonic series: rank ≈ n^u − 1.
    let zipf = |rng: &mut rand_chacha::ChaCha8Rng, n: usize| -> usize { (((n as f64 + 1.0).powf(rng.gen::<f64>()) - 1.0) as usize).min(n - 1) };
    let users_per_event = size.users.max(1);
    let start = 1_767_225_600i64;
    let mut events = Vec::with_capacity(size.events + size.events / 5);
    // Heavy-tailed activity: each event's user is Zipf-drawn over a shuffled user order.
    let mut order: Vec<u32> = (0..users_per_event as u32).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.gen_range(0..=i));
    }
    let taste = |u: u32, k: u32| ((u as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17 + k * 13) % n_cat as u64) as usize;
    // Every user gets at least one event, then the rest by activity.
    for n in 0..size.events {
        let u = if n < users_per_event { n as u32 } else { order[zipf(&mut rng, users_per_event)] };
        let c = if rng.gen_bool(0.85) { taste(u, rng.gen_range(0..2)) } else { zipf(&mut rng, n_cat) };
        let in_cat = size.items.saturating_sub(c).div_ceil(n_cat).max(1);
        let item = (c + n_cat * zipf(&mut rng, in_cat)).min(size.items - 1);
        let t = start + rng.gen_range(0..90 * 86_400);
        events.push(Event::new(format!("u{u}"), format!("i{item}"), EventKind::View, Some(t)));
        if rng.gen_bool(0.2) {
            events.push(Event { value: items[item].price, ..Event::new(format!("u{u}"), format!("i{item}"), EventKind::Purchase, Some(t + 60)) });
        }
    }
    Dataset { events, items, ..Dataset::default() }
}

#[cfg(test)]
mod power_law_tests {
    use super::*;

    #[test]
    fn power_law_store_is_skewed_deterministic_and_complete() {
        let size = PowerLawSize { items: 2_000, users: 1_000, events: 30_000, items_per_category: 50 };
        let a = power_law_store(size, 3);
        assert_eq!(a.events, power_law_store(size, 3).events);
        let mut per_item = std::collections::HashMap::new();
        for e in a.events.iter().filter(|e| e.kind == EventKind::View) {
            *per_item.entry(e.item_id.as_str()).or_insert(0usize) += 1;
        }
        let mut counts: Vec<usize> = per_item.values().copied().collect();
        counts.sort_unstable_by(|x, y| y.cmp(x));
        // The top 1% of items (20) draw at least a tenth of all views; uniform
        // popularity would give them about 1%.
        let top: usize = counts.iter().take(20).sum();
        let views: usize = counts.iter().sum();
        assert!(top * 10 >= views, "the top 1% of items draw {top} of {views} views");
        let users: std::collections::HashSet<&str> = a.events.iter().map(|e| e.user_id.as_str()).collect();
        assert_eq!(users.len(), 1_000, "every user has an event");
    }
}
