//! Synthetic stores with known structure, for tests and benchmarks that need a property
//! real data sets do not isolate.
//!
//! [`rebuy_store`] plants repeat consumption: a few consumable categories that regular
//! customers rebuy on a fixed cycle (every `L` purchases, `L` depending on the
//! category, with some jitter), and durable categories nobody buys twice. Everyone
//! else's purchases follow a taste for two durable categories and a popularity skew
//! within them, so new items are predictable too.
//!
//! [`kol_store`] plants key opinion leaders whose picks their followers copy, and
//! [`community_store`] communities whose members share favourites nobody else has.

use affinity_core::data::{Dataset, Event, EventKind, Item, Membership, SocialEdge, SocialKind};
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

/// Item `j` of category `c` in the generated stores with categories: `c{c}-i{j:03}`.
fn category_item(c: usize, j: usize) -> String {
    format!("c{c}-i{j:03}")
}

/// A catalogue of `categories` categories (`c0`, `c1`, …) of `per` items each.
fn category_catalogue(categories: usize, per: usize) -> Vec<Item> {
    (0..categories).flat_map(|c| (0..per).map(move |j| Item { category: format!("c{c}"), ..Item::bare(category_item(c, j)) })).collect()
}

/// A popularity-skewed draw from `0..n`: low indices far more often.
fn zipf(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> usize {
    (((n as f64 + 1.0).powf(rng.gen::<f64>()) - 1.0) as usize).min(n - 1)
}

/// Sizes of a [`kol_store`].
#[derive(Debug, Clone, Copy)]
pub struct KolSize {
    pub users: usize,
    pub categories: usize,
    pub items_per_category: usize,
    /// Views per ordinary user.
    pub views: usize,
    /// Accounts each ordinary user follows at random.
    pub follows: usize,
    /// Share of a category's fans who follow its planted leader.
    pub reach: f64,
    /// Chance a follower takes up each of their leader's picks.
    pub uptake: f64,
}

impl Default for KolSize {
    fn default() -> Self {
        KolSize { users: 1_200, categories: 6, items_per_category: 40, views: 12, follows: 8, reach: 0.6, uptake: 0.4 }
    }
}

/// A [`kol_store`] and what was planted in it.
#[derive(Debug, Clone)]
pub struct KolStore {
    pub data: Dataset,
    /// Per category `c{N}`, its planted leader: followed widely, their picks copied.
    pub leaders: Vec<String>,
    /// Accounts followed as widely as the leaders, whose picks nobody copies.
    pub decoys: Vec<String>,
    /// Per leader, the items they picked (tail items of their category).
    pub picks: Vec<Vec<String>>,
}

/// A social store with planted key opinion leaders: per category one leader whom most of
/// the category's fans follow and whose picks (tail items, early) followers take up
/// later with chance `uptake`, and one decoy as widely followed whose picks nobody takes
/// up. Ordinary users view items of two favourite categories (popularity-skewed) at
/// random times over 90 days and follow a few random accounts. Deterministic per seed.
pub fn kol_store(size: KolSize, seed: u64) -> KolStore {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let day = 86_400i64;
    let start = 1_767_225_600i64;
    let item = category_item;
    let items = category_catalogue(size.categories, size.items_per_category);
    let user = |u: usize| format!("u{u:05}");
    let leaders: Vec<String> = (0..size.categories).map(|c| format!("kol-{c}")).collect();
    let decoys: Vec<String> = (0..size.categories).map(|c| format!("decoy-{c}")).collect();
    // The leaders' picks: eight tail items of their category, in the first ten days.
    let picks: Vec<Vec<usize>> = (0..size.categories).map(|_| (0..8).map(|k| size.items_per_category / 2 + k * 2).collect()).collect();
    let mut events = Vec::new();
    let mut social = Vec::new();
    let follow = |a: &str, b: &str| SocialEdge { user_id: a.to_string(), other_id: b.to_string(), kind: SocialKind::Follow, weight: 1.0 };
    for c in 0..size.categories {
        for &j in &picks[c] {
            events.push(Event::new(&leaders[c], item(c, j), EventKind::View, Some(start + rng.gen_range(0..10 * day))));
        }
        // The decoy views as many items of its category, which nobody copies.
        for k in 0..8 {
            let j = (size.items_per_category / 2 + 1 + k * 2).min(size.items_per_category - 1);
            events.push(Event::new(&decoys[c], item(c, j), EventKind::View, Some(start + rng.gen_range(0..10 * day))));
        }
    }
    for u in 0..size.users {
        let me = user(u);
        let tastes = [rng.gen_range(0..size.categories), rng.gen_range(0..size.categories)];
        let mut had = std::collections::HashSet::new();
        for _ in 0..size.views {
            let c = tastes[rng.gen_range(0..2)];
            let j = zipf(&mut rng, size.items_per_category);
            if had.insert((c, j)) {
                events.push(Event::new(&me, item(c, j), EventKind::View, Some(start + rng.gen_range(0..90 * day))));
            }
        }
        for _ in 0..size.follows {
            social.push(follow(&me, &user(rng.gen_range(0..size.users))));
        }
        for c in tastes {
            if rng.gen::<f64>() < size.reach {
                social.push(follow(&me, &leaders[c]));
                // Ordinary fans follow a decoy just as often.
                social.push(follow(&me, &decoys[c]));
                for &j in &picks[c] {
                    if rng.gen::<f64>() < size.uptake && had.insert((c, j)) {
                        events.push(Event::new(&me, item(c, j), EventKind::View, Some(start + rng.gen_range(12 * day..90 * day))));
                    }
                }
            }
        }
    }
    let picks = picks.iter().enumerate().map(|(c, p)| p.iter().map(|&j| item(c, j)).collect()).collect();
    KolStore { data: Dataset { events, items, social, ..Dataset::default() }, leaders, decoys, picks }
}

#[cfg(test)]
mod kol_tests {
    use super::*;
    use affinity_core::data::TimeKind;
    use affinity_core::influence::Influence;
    use affinity_core::model::Model;
    use affinity_core::params::TrainParams;
    use affinity_core::recommend::RecommendQuery;
    use affinity_core::train::{train, NoProgress};

    /// Over every follower of a leader, the mean place (0 = first) of the leader's picks
    /// the follower had not had yet in their top 50 (50 for one not in it).
    fn mean_place_of_picks(model: &Model, store: &KolStore) -> f64 {
        let settings = model.default_settings();
        let (mut sum, mut n) = (0usize, 0usize);
        for (c, leader) in store.leaders.iter().enumerate() {
            for f in store.data.social.iter().filter(|e| &e.other_id == leader) {
                let had: std::collections::HashSet<&str> = store.data.events.iter().filter(|e| e.user_id == f.user_id).map(|e| e.item_id.as_str()).collect();
                let r = model.recommend(&RecommendQuery::for_user(f.user_id.as_str(), 50), &settings).unwrap();
                for p in store.picks[c].iter().filter(|p| !had.contains(p.as_str())) {
                    sum += r.items.iter().position(|s| model.item_id(s.item) == p).unwrap_or(50);
                    n += 1;
                }
            }
        }
        sum as f64 / n.max(1) as f64
    }

    #[test]
    fn planted_leaders_top_their_category_and_their_picks_rise_for_followers() {
        let store = kol_store(KolSize::default(), 7);
        let mut model = train(&store.data, TimeKind::Unix, &TrainParams::default(), &NoProgress);
        for (c, leader) in store.leaders.iter().enumerate() {
            let top = model.influencers(&format!("c{c}"), 3).unwrap();
            assert_eq!(top[0].0, leader.as_str(), "category c{c}: {top:?}");
            assert!(top[0].1.leader && top[0].1.adoptions > 50.0, "{:?}", top[0]);
        }
        let all = model.influencers("", 100).unwrap();
        let place = |id: &str| all.iter().position(|(u, _)| *u == id).unwrap_or(usize::MAX);
        let last_leader = store.leaders.iter().map(|l| place(l)).max().unwrap();
        let first_decoy = store.decoys.iter().map(|d| place(d)).min().unwrap();
        assert!(last_leader < first_decoy, "every leader above every decoy: {all:?}");

        let with = mean_place_of_picks(&model, &store);
        model.set_influence(Influence::default());
        let without = mean_place_of_picks(&model, &store);
        assert!(with < 0.8 * without, "mean place of the leaders' picks for their followers: {with:.2} with influence, {without:.2} without");
    }
}

/// Sizes of a [`community_store`].
#[derive(Debug, Clone, Copy)]
pub struct CommunitySize {
    pub users: usize,
    pub categories: usize,
    pub items_per_category: usize,
    /// Views per user (of their two favourite categories).
    pub views: usize,
    pub communities: usize,
    /// Members per community (each member in one).
    pub members: usize,
    /// A community's house favourites: tail items of any category.
    pub favourites: usize,
    /// Chance a member takes up each house favourite.
    pub uptake: f64,
}

impl Default for CommunitySize {
    fn default() -> Self {
        CommunitySize { users: 1_200, categories: 6, items_per_category: 40, views: 12, communities: 24, members: 30, favourites: 6, uptake: 0.35 }
    }
}

/// A [`community_store`] and what was planted in it.
#[derive(Debug, Clone)]
pub struct CommunityStore {
    pub data: Dataset,
    /// Per community `club-{N}`, its members.
    pub members: Vec<Vec<String>>,
    /// Per community, its house favourites.
    pub favourites: Vec<Vec<String>>,
}

/// A store with planted communities (`communities.csv`): every user views items of two
/// favourite categories (popularity-skewed); the first `communities × members` users
/// also belong to one community each, and take up each of its house favourites (tail
/// items of any category, which nobody outside it has) with chance `uptake`.
/// Deterministic per seed.
pub fn community_store(size: CommunitySize, seed: u64) -> CommunityStore {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let start = 1_767_225_600i64;
    let item = category_item;
    let items = category_catalogue(size.categories, size.items_per_category);
    // House favourites: distinct tail items, numbered past the catalogue's own.
    let favourites: Vec<Vec<String>> = (0..size.communities)
        .map(|k| (0..size.favourites).map(|f| item(rng.gen_range(0..size.categories), size.items_per_category + k * size.favourites + f)).collect())
        .collect();
    let mut items = items;
    items.extend(favourites.iter().flatten().map(|id| Item { category: id[..id.find('-').unwrap_or(0)].to_string(), ..Item::bare(id.clone()) }));
    let mut events = Vec::new();
    let mut memberships = Vec::new();
    let mut members = vec![Vec::new(); size.communities];
    for u in 0..size.users {
        let me = format!("u{u:05}");
        let tastes = [rng.gen_range(0..size.categories), rng.gen_range(0..size.categories)];
        let mut had = std::collections::HashSet::new();
        for _ in 0..size.views {
            let (c, j) = (tastes[rng.gen_range(0..2)], zipf(&mut rng, size.items_per_category));
            if had.insert(item(c, j)) {
                events.push(Event::new(&me, item(c, j), EventKind::View, Some(start + rng.gen_range(0..90 * 86_400))));
            }
        }
        let k = u / size.members.max(1);
        if k < size.communities {
            memberships.push(Membership { user_id: me.clone(), community_id: format!("club-{k}") });
            members[k].push(me.clone());
            for f in &favourites[k] {
                if rng.gen::<f64>() < size.uptake && had.insert(f.clone()) {
                    events.push(Event::new(&me, f.as_str(), EventKind::View, Some(start + rng.gen_range(0..90 * 86_400))));
                }
            }
        }
    }
    CommunityStore { data: Dataset { events, items, memberships, ..Dataset::default() }, members, favourites }
}

#[cfg(test)]
mod community_tests {
    use super::*;
    use crate::autotune::{autotune, Budget};
    use affinity_core::data::TimeKind;
    use affinity_core::model::Model;
    use affinity_core::params::TrainParams;
    use affinity_core::recommend::{ReasonKind, RecommendQuery};
    use affinity_core::train::{train, NoProgress};

    /// Over every member, the mean place (0 = first) in their top 20 of their
    /// community's favourites they had not had (20 for one not in it), and how many of
    /// those the list explains by the community.
    fn mean_place_of_favourites(model: &Model, store: &CommunityStore, social: Option<bool>) -> (f64, usize) {
        let settings = model.default_settings();
        let (mut sum, mut n, mut explained) = (0usize, 0usize, 0usize);
        for (k, members) in store.members.iter().enumerate() {
            for m in members {
                let had: std::collections::HashSet<&str> = store.data.events.iter().filter(|e| &e.user_id == m).map(|e| e.item_id.as_str()).collect();
                let r = model.recommend(&RecommendQuery { social, ..RecommendQuery::for_user(m.as_str(), 20) }, &settings).unwrap();
                for f in store.favourites[k].iter().filter(|f| !had.contains(f.as_str())) {
                    let place = r.items.iter().position(|s| model.item_id(s.item) == f);
                    sum += place.unwrap_or(20);
                    n += 1;
                    let why = format!("popular in your community club-{k}");
                    explained += place.is_some_and(|p| r.items[p].reason == ReasonKind::Social && r.items[p].reason_text == why) as usize;
                }
            }
        }
        (sum as f64 / n.max(1) as f64, explained)
    }

    #[test]
    fn the_search_weighs_communities_and_members_favourites_rise_with_the_reason() {
        let store = community_store(CommunitySize::default(), 3);
        // Starting from no community weight: only the search can give it one.
        let base = TrainParams { community_blend: 0.0, ..TrainParams::default() };
        let (params, report) = autotune(&store.data, TimeKind::Unix, &base, &Budget { trials: 2, ..Budget::default() }, &NoProgress);
        assert!(params.community_blend > 0.0, "community weight {} ({report:?})", params.community_blend);
        let model = train(&store.data, TimeKind::Unix, &params, &NoProgress);
        let (with, explained) = mean_place_of_favourites(&model, &store, None);
        let (without, unexplained) = mean_place_of_favourites(&model, &store, Some(false));
        assert!(
            with < 0.8 * without,
            "mean place of unseen house favourites: {with:.2} with community votes (weight {}), {without:.2} without",
            params.community_blend
        );
        assert!(explained > 100 && unexplained == 0, "{explained} favourites explained by the community, {unexplained} with it off");
        eprintln!("weight {} place {with:.2} vs {without:.2}, explained {explained}", params.community_blend);
    }
}
