//! A deterministic synthetic store for the demo server and smoke tests.
//!
//! Users have a region, age band and gender and prefer two categories; they view items
//! of those categories (popular ones more often), add some to the cart and buy some of
//! those. The result is small enough to train in a second and structured enough that
//! recommendations visibly follow each user's taste.

use rand::{Rng, SeedableRng};

use crate::data::{Dataset, Event, EventKind, Item, User};

const CATEGORIES: [&str; 8] = ["shoes", "jackets", "books", "toys", "kitchen", "garden", "audio", "beauty"];
const BRANDS: [&str; 6] = ["acme", "northwind", "globex", "initech", "umbrella", "contoso"];
const REGIONS: [&str; 4] = ["north", "south", "east", "west"];
const AGES: [&str; 5] = ["18-24", "25-34", "35-44", "45-54", "55+"];
const ADJECTIVES: [&str; 8] = ["classic", "compact", "deluxe", "eco", "pro", "retro", "smart", "travel"];

/// Seed of the store the demo server trains on.
pub const DEMO_SEED: u64 = 7;

/// Sizes of the generated store.
#[derive(Debug, Clone, Copy)]
pub struct DemoSize {
    /// Number of users.
    pub users: usize,
    /// Number of catalogue items, spread evenly over eight categories.
    pub items: usize,
    /// Item views per user; some views add a cart and a purchase event on top.
    pub events_per_user: usize,
}

impl Default for DemoSize {
    fn default() -> Self {
        DemoSize {
            users: 500,
            items: 400,
            events_per_user: 30,
        }
    }
}

/// Generates the store; the same `seed` always gives the same data.
pub fn generate(size: DemoSize, seed: u64) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let items: Vec<Item> = (0..size.items)
        .map(|i| {
            let category = CATEGORIES[i % CATEGORIES.len()];
            let brand = BRANDS[rng.gen_range(0..BRANDS.len())];
            let adjective = ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())];
            Item {
                item_id: format!("sku-{i:04}"),
                title: format!("{brand} {adjective} {category} {i}"),
                category: category.to_string(),
                brand: brand.to_string(),
                price: Some((rng.gen_range(5.0f32..200.0) * 100.0).round() / 100.0),
                tags: vec![adjective.to_string()],
                // A few items are out of stock: they must never be recommended.
                available: i % 37 != 5,
            }
        })
        .collect();
    let by_category: Vec<Vec<usize>> = (0..CATEGORIES.len())
        .map(|c| (0..size.items).filter(|i| i % CATEGORIES.len() == c).collect())
        .collect();
    let users: Vec<User> = (0..size.users)
        .map(|u| User {
            user_id: format!("user-{u:04}"),
            region: REGIONS[rng.gen_range(0..REGIONS.len())].to_string(),
            age: AGES[rng.gen_range(0..AGES.len())].to_string(),
            gender: if rng.gen_bool(0.5) { "f" } else { "m" }.to_string(),
            occupation: String::new(),
            income: String::new(),
        })
        .collect();
    let start: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
    let mut events = Vec::new();
    for user in &users {
        let liked = [rng.gen_range(0..CATEGORIES.len()), rng.gen_range(0..CATEGORIES.len())];
        let mut t = start + rng.gen_range(0..86_400 * 30);
        for _ in 0..size.events_per_user {
            let pool = &by_category[liked[rng.gen_range(0..2)]];
            // Skewed choice: low positions in the pool are the category's bestsellers.
            let pos = ((rng.gen::<f64>().powi(2)) * pool.len() as f64) as usize;
            let item = &items[pool[pos.min(pool.len() - 1)]];
            t += rng.gen_range(60..86_400);
            let mut push = |kind: EventKind, value: Option<f32>, t: i64| {
                events.push(Event {
                    user_id: user.user_id.clone(),
                    item_id: item.item_id.clone(),
                    kind,
                    timestamp: Some(t),
                    value,
                })
            };
            push(EventKind::View, None, t);
            if rng.gen_bool(0.25) {
                push(EventKind::Cart, None, t + 30);
                if rng.gen_bool(0.5) {
                    push(EventKind::Purchase, item.price, t + 120);
                }
            }
        }
    }
    Dataset {
        events,
        items,
        users,
        social: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_well_formed() {
        let size = DemoSize {
            users: 20,
            items: 40,
            events_per_user: 5,
        };
        let a = generate(size, 1);
        let b = generate(size, 1);
        assert_eq!(a.events, b.events);
        assert_eq!(a.items.len(), 40);
        assert!(a.events.len() >= 100);
        assert!(a.items.iter().any(|i| !i.available));
        assert_ne!(generate(size, 2).events, a.events);
    }
}
