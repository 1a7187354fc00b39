//! A deterministic synthetic store for the demo server and smoke tests.
//!
//! Users have a region, age band and gender and prefer two categories; they view items
//! of those categories (popular ones more often), add some to the cart and buy some of
//! those. The result is small enough to train in a second and structured enough that
//! recommendations visibly follow each user's taste.
//!
//! On top of that base the store plants what the commerce features must find, with
//! known answers ([`Planted`]): users in every lifecycle stage (`user-<stage>-NN`), an
//! item whose sales spike in the last week (`sku-spike`) beside one that sells steadily
//! all along (`sku-steady`), new arrivals nobody has touched yet (`sku-new-NN`), and
//! stores in five cities that most items are sold from.

use rand::{Rng, SeedableRng};

use crate::data::{Dataset, Event, EventKind, GeoPoint, Item, User};

const CATEGORIES: [&str; 8] = ["shoes", "jackets", "books", "toys", "kitchen", "garden", "audio", "beauty"];
const BRANDS: [&str; 6] = ["acme", "northwind", "globex", "initech", "umbrella", "contoso"];
const REGIONS: [&str; 4] = ["north", "south", "east", "west"];
const AGES: [&str; 5] = ["18-24", "25-34", "35-44", "45-54", "55+"];
const ADJECTIVES: [&str; 8] = ["classic", "compact", "deluxe", "eco", "pro", "retro", "smart", "travel"];
/// The stores items are sold from: (city, latitude, longitude).
pub const STORES: [(&str, f64, f64); 5] = [
    ("london", 51.5072, -0.1276),
    ("manchester", 53.4808, -2.2426),
    ("birmingham", 52.4862, -1.8904),
    ("leeds", 53.8008, -1.5491),
    ("bristol", 51.4545, -2.5879),
];
/// Seconds in a day.
const DAY: i64 = 86_400;

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
    /// Whether to plant the lifecycle users, the spike, the steady seller and the new
    /// arrivals ([`Planted`]); needs at least 100 users.
    pub planted: bool,
}

/// What the store plants, with the answers the commerce features should find.
pub struct Planted;

impl Planted {
    /// Lifecycle stages planted, as `user-<stage>-NN` ids (stage names as
    /// [`crate::activity::Stage::as_str`] spells them), ten users each.
    pub const STAGES: [&'static str; 5] = ["new", "active", "dormant", "churned", "won-back"];
    /// Users planted per stage.
    pub const USERS_PER_STAGE: usize = 10;
    /// An item bought by many users in the last seven days and rarely before.
    pub const SPIKE: &'static str = "sku-spike";
    /// An item a dozen users take every week for 22 weeks (all the history a model keeps
    /// for trends): high volume, no growth.
    pub const STEADY: &'static str = "sku-steady";
    /// New arrivals (listed three days before the store's latest event, no events).
    pub const NEW_ARRIVALS: usize = 5;

    /// The id of planted user `n` of `stage`.
    pub fn user(stage: &str, n: usize) -> String {
        format!("user-{stage}-{n:02}")
    }

    /// The id of new arrival `n`.
    pub fn new_arrival(n: usize) -> String {
        format!("sku-new-{n:02}")
    }
}

impl Default for DemoSize {
    fn default() -> Self {
        DemoSize {
            users: 500,
            items: 400,
            events_per_user: 30,
            planted: true,
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
                location: store_location(i),
                listed_at: None,
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
    let mut data = Dataset {
        events,
        items,
        users,
        social: Vec::new(),
        memberships: Vec::new(),
    };
    if size.planted && size.users >= 100 {
        plant(&mut data, &by_category, seed);
    }
    data
}

/// Where item `i` is sold: one of the [`STORES`], a little off its centre; every tenth
/// item is sold online only and has no place.
fn store_location(i: usize) -> Option<GeoPoint> {
    if i % 10 == 9 {
        return None;
    }
    let (_, lat, lon) = STORES[i % STORES.len()];
    // A deterministic offset of up to about two kilometres.
    let jitter = |k: usize| ((i * 7919 + k * 104_729) % 1000) as f64 / 1000.0 - 0.5;
    Some(GeoPoint { lat: lat + jitter(1) * 0.03, lon: lon + jitter(2) * 0.05 })
}

/// Adds the [`Planted`] users, items and events to the base store.
fn plant(data: &mut Dataset, by_category: &[Vec<usize>], seed: u64) {
    // A separate stream, so the base store stays what it was without plants.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let now = data.events.iter().filter_map(|e| e.timestamp).max().unwrap_or(1_767_225_600);
    let base_users = data.users.len();
    let mut item = |id: &str, title: &str, category: &str, price: f32, listed_at: Option<i64>| Item {
        item_id: id.to_string(),
        title: title.to_string(),
        category: category.to_string(),
        brand: BRANDS[0].to_string(),
        price: Some(price),
        tags: vec!["seasonal".to_string()],
        available: true,
        location: store_location(rng.gen_range(0..9)),
        listed_at,
    };
    let mut planted_items = vec![
        item(Planted::SPIKE, "acme paddling pool", "garden", 39.0, None),
        item(Planted::STEADY, "acme coffee beans", "kitchen", 12.0, None),
    ];
    for n in 0..Planted::NEW_ARRIVALS {
        let category = CATEGORIES[n % CATEGORIES.len()];
        planted_items.push(item(&Planted::new_arrival(n), &format!("acme new {category} {n}"), category, 25.0, Some(now - 3 * DAY)));
    }
    data.items.extend(planted_items);
    let price_of = |id: &str, items: &[Item]| items.iter().find(|i| i.item_id == id).and_then(|i| i.price);
    let event = |user: &str, item: &str, kind: EventKind, value: Option<f32>, t: i64| Event {
        user_id: user.to_string(),
        item_id: item.to_string(),
        kind,
        timestamp: Some(t),
        value,
    };

    // The spike: a purchase or two a month for twenty weeks, then forty buyers in the last week.
    for w in 0..20 {
        if w % 4 == 0 {
            let u = &data.users[rng.gen_range(0..base_users)].user_id;
            data.events.push(event(u, Planted::SPIKE, EventKind::View, None, now - (21 + w * 7) * DAY));
        }
    }
    for _ in 0..40 {
        let u = data.users[rng.gen_range(0..base_users)].user_id.clone();
        let t = now - rng.gen_range(DAY / 2..6 * DAY);
        data.events.push(event(&u, Planted::SPIKE, EventKind::View, None, t));
        data.events.push(event(&u, Planted::SPIKE, EventKind::Purchase, Some(39.0), t + 120));
    }
    // The steady seller: twelve users a week, every week, for 22 weeks.
    for w in 0..22 {
        for _ in 0..12 {
            let u = data.users[rng.gen_range(0..base_users)].user_id.clone();
            let t = now - w * 7 * DAY - rng.gen_range(DAY / 2..7 * DAY);
            data.events.push(event(&u, Planted::STEADY, EventKind::View, None, t));
            data.events.push(event(&u, Planted::STEADY, EventKind::Purchase, Some(12.0), t + 60));
        }
    }

    // Lifecycle users: visit times (days before now) chosen so each stage is unambiguous
    // under the default thresholds (new within 30 days, active within 30, churned after 90).
    for stage in Planted::STAGES {
        for n in 0..Planted::USERS_PER_STAGE {
            let id = Planted::user(stage, n);
            data.users.push(User {
                user_id: id.clone(),
                region: REGIONS[n % REGIONS.len()].to_string(),
                age: AGES[n % AGES.len()].to_string(),
                gender: if n % 2 == 0 { "f" } else { "m" }.to_string(),
                occupation: String::new(),
                income: String::new(),
            });
            let days: Vec<i64> = match stage {
                "new" => spaced(&mut rng, (5, 20), (1, 1), 4),
                "active" => spaced(&mut rng, (100, 140), (2, 14), 8),
                "dormant" => spaced(&mut rng, (130, 160), (45, 75), 6),
                "churned" => spaced(&mut rng, (220, 260), (110, 150), 6),
                _ => {
                    // Won back: a first spell, a silence of over ninety days, a return.
                    let mut d = spaced(&mut rng, (240, 260), (190, 200), 4);
                    d.extend(spaced(&mut rng, (15, 25), (1, 5), 3));
                    d
                }
            };
            let liked = rng.gen_range(0..CATEGORIES.len());
            for day in days {
                let pool = &by_category[liked];
                let it = data.items[pool[rng.gen_range(0..pool.len())]].item_id.clone();
                let t = now - day * DAY - rng.gen_range(0..DAY / 2);
                data.events.push(event(&id, &it, EventKind::View, None, t));
                if rng.gen_bool(0.6) {
                    let value = price_of(&it, &data.items);
                    data.events.push(event(&id, &it, EventKind::Purchase, value, t + 300));
                }
            }
        }
    }
}

/// `visits` days before now, from a first day drawn from `first` down to a last drawn
/// from `last` (ranges inclusive), evenly spaced with a little noise that never crosses
/// either end.
fn spaced(rng: &mut impl Rng, first: (i64, i64), last: (i64, i64), visits: usize) -> Vec<i64> {
    let first = rng.gen_range(first.0..=first.1);
    let last = rng.gen_range(last.0..=last.1);
    let step = (first - last) as f64 / (visits.max(2) - 1) as f64;
    (0..visits)
        .map(|v| {
            let day = first as f64 - step * v as f64;
            let noise = if v == 0 || v + 1 == visits { 0.0 } else { rng.gen_range(-0.3..0.3) * step };
            (day + noise).round() as i64
        })
        .collect()
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
            planted: false,
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
