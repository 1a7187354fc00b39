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
