//! The commerce features against the demo store's planted ground truth, through the real
//! server binary (`--demo`) on an ephemeral port: lifecycle stages, RFM quintiles, the
//! trending spike and the steady seller, "near you", new arrivals and exploration.

mod common;

use std::collections::{HashMap, HashSet};

use affinity_core::data::{Dataset, EventKind, GeoPoint};
use affinity_core::demo::{generate, DemoSize, Planted, DEMO_SEED, STORES};
use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::{self, reason::Kind};
use common::*;
use tonic::Code;

const DAY: i64 = 86_400;

fn store() -> &'static Dataset {
    static DATA: std::sync::OnceLock<Dataset> = std::sync::OnceLock::new();
    DATA.get_or_init(|| generate(DemoSize::default(), DEMO_SEED))
}

fn latest() -> i64 {
    store().events.iter().filter_map(|e| e.timestamp).max().unwrap()
}

/// A demo server in a fresh directory, with extra flags.
async fn demo_server(dir: &tempfile::TempDir, flags: &[&str]) -> (Server, RecommenderClient<tonic::transport::Channel>) {
    let mut args: Vec<&std::ffi::OsStr> = vec!["--demo".as_ref()];
    args.extend(flags.iter().map(std::ffi::OsStr::new));
    let server = start_server_with(&args, Some(dir.path())).await;
    let client = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    (server, client)
}

fn kind(item: &proto::ScoredItem) -> Kind {
    Kind::try_from(item.reason.as_ref().unwrap().kind).unwrap()
}

fn text(item: &proto::ScoredItem) -> &str {
    &item.reason.as_ref().unwrap().text
}

/// The quintile score (1–5) of `v` among `all`: the share of values below it plus half
/// the ties, in fifths.
fn quintile(all: &[f64], v: f64) -> u32 {
    let below = all.iter().filter(|&&x| x < v).count() as f64;
    let equal = all.iter().filter(|&&x| x == v).count() as f64;
    (((below + equal / 2.0) / all.len() as f64 * 5.0).floor() as u32 + 1).min(5)
}

#[tokio::test]
async fn planted_lifecycle_users_are_classified_and_rfm_matches_a_direct_count() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut c) = demo_server(&dir, &[]).await;
    for stage in Planted::STAGES {
        for n in 0..Planted::USERS_PER_STAGE {
            let user = Planted::user(stage, n);
            let p = c.get_user_profile(proto::GetUserProfileRequest { user_id: user.clone(), ..Default::default() }).await.unwrap().into_inner();
            assert_eq!(p.stage, stage, "{user}: {p:?}");
        }
    }
    // Every stage also lists exactly its planted users among others of that stage.
    let listed = c
        .list_users(proto::ListUsersRequest { stage: Some("won-back".into()), page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let won_back: HashSet<String> = listed.users.into_iter().map(|u| u.user_id).collect();
    assert!((0..Planted::USERS_PER_STAGE).all(|n| won_back.contains(&Planted::user("won-back", n))));

    // RFM straight from the purchase events.
    let now = latest();
    let mut buyers: HashMap<&str, (i64, u32, f64)> = HashMap::new();
    for e in store().events.iter().filter(|e| e.kind == EventKind::Purchase) {
        let b = buyers.entry(e.user_id.as_str()).or_insert((i64::MIN, 0, 0.0));
        b.0 = b.0.max(e.timestamp.unwrap());
        b.1 += 1;
        b.2 += f64::from(e.value.unwrap_or(0.0));
    }
    let recency: Vec<f64> = buyers.values().map(|b| -((now - b.0) as f64)).collect();
    let frequency: Vec<f64> = buyers.values().map(|b| f64::from(b.1)).collect();
    let monetary: Vec<f64> = buyers.values().map(|b| b.2).collect();
    assert!(buyers.len() > 300, "{} buyers", buyers.len());
    for (user, b) in &buyers {
        let p = c.get_user_profile(proto::GetUserProfileRequest { user_id: user.to_string(), ..Default::default() }).await.unwrap().into_inner();
        let rfm = p.rfm.unwrap_or_else(|| panic!("{user} bought but has no RFM"));
        let want = (quintile(&recency, -((now - b.0) as f64)), quintile(&frequency, f64::from(b.1)), quintile(&monetary, b.2));
        assert_eq!((rfm.recency, rfm.frequency, rfm.monetary), want, "{user}");
        assert!((p.revenue - b.2).abs() < 1e-3 * b.2.max(1.0), "{user}: revenue {} vs {}", p.revenue, b.2);
    }
    let never = store().users.iter().find(|u| !buyers.contains_key(u.user_id.as_str())).unwrap();
    let p = c.get_user_profile(proto::GetUserProfileRequest { user_id: never.user_id.clone(), ..Default::default() }).await.unwrap().into_inner();
    assert!(p.rfm.is_none(), "{} never bought", never.user_id);
}

#[tokio::test]
async fn the_planted_spike_trends_in_its_window_only_and_the_steady_seller_never_tops() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut c) = demo_server(&dir, &[]).await;
    let trending = |now: i64, window: proto::Window| proto::TrendingRequest { k: 10, window: window as i32, now: Some(now), ..Default::default() };
    let week = c.trending(trending(latest(), proto::Window::Window7Days)).await.unwrap().into_inner();
    assert_eq!(week.items.first().map(|i| i.item_id.as_str()), Some(Planted::SPIKE), "{:?}", week.items);
    assert_eq!(kind(&week.items[0]), Kind::Trending);
    assert_eq!(text(&week.items[0]), "trending");
    // In its category too, with the category in the reason.
    let garden = c
        .trending(proto::TrendingRequest { category: Some("garden".into()), ..trending(latest(), proto::Window::Window7Days) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(garden.items[0].item_id, Planted::SPIKE);
    assert_eq!(text(&garden.items[0]), "trending in garden");
    // A month before, the spike had not happened: it is nowhere in the list.
    for back in [30, 45, 60] {
        let before = c.trending(trending(latest() - back * DAY, proto::Window::Window7Days)).await.unwrap().into_inner();
        assert!(before.items.iter().all(|i| i.item_id != Planted::SPIKE), "{back} days back: {:?}", before.items);
    }
    // The steady seller has more buyers than most items every week but never grows.
    for back in [0, 7, 14, 30, 60, 90] {
        for window in [proto::Window::Window1Day, proto::Window::Window7Days, proto::Window::Window30Days] {
            let r = c.trending(trending(latest() - back * DAY, window)).await.unwrap().into_inner();
            assert!(r.items.first().is_none_or(|i| i.item_id != Planted::STEADY), "{back} days back, {window:?}: {:?}", r.items);
        }
    }
    let popular = c
        .popular(proto::PopularRequest { k: 40, window: proto::Window::Window30Days as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let rank = popular.items.iter().position(|i| i.item_id == Planted::STEADY);
    assert!(rank.is_some(), "the steady seller is among the month's 40 most popular of 407: {:?}", popular.items);
}

fn place(item_id: &str) -> Option<GeoPoint> {
    store().items.iter().find(|i| i.item_id == item_id).and_then(|i| i.location)
}

#[tokio::test]
async fn near_you_filters_and_boosts_by_distance_and_new_arrivals_are_lifted() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut c) = demo_server(&dir, &["--explore-share", "0"]).await;
    let (_, lat, lon) = STORES[0];
    let here = GeoPoint { lat, lon };
    let near = |within_only: bool, boost: Option<f32>| proto::Near { latitude: lat, longitude: lon, radius_km: 5.0, within_only, boost };
    // Popular near you: only items within 5 km, each saying how far.
    let r = c
        .popular(proto::PopularRequest { k: 20, rules: Some(proto::Rules { near: Some(near(true, None)), ..Default::default() }), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.items.len(), 20);
    for i in &r.items {
        let d = place(&i.item_id).unwrap_or_else(|| panic!("{} has no place", i.item_id)).distance_km(&here);
        assert!(d <= 5.0, "{} is {d} km away", i.item_id);
        assert_eq!(kind(i), Kind::Nearby);
        assert!(text(i).starts_with("near you (") && text(i).contains("popular with all users"), "{}", text(i));
    }
    // Recommend with a nearness boost: nearby items rise, the rest may still come.
    let user = "user-0007";
    let plain = c.recommend(proto::RecommendRequest { subject: Some(Subject::UserId(user.into())), k: 10, ..Default::default() }).await.unwrap().into_inner();
    let boosted = c
        .recommend(proto::RecommendRequest {
            subject: Some(Subject::UserId(user.into())),
            k: 10,
            rules: Some(proto::Rules { near: Some(near(false, Some(2.0))), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let is_near = |id: &str| place(id).is_some_and(|p| p.distance_km(&here) <= 5.0);
    let count = |items: &[proto::ScoredItem]| items.iter().filter(|i| is_near(&i.item_id)).count();
    assert!(count(&boosted.items) > count(&plain.items), "plain {:?}\nboosted {:?}", plain.items, boosted.items);
    for i in &boosted.items {
        assert_eq!(kind(i) == Kind::Nearby, is_near(&i.item_id), "{}: {}", i.item_id, text(i));
    }
    // New arrivals (listed three days before the store's latest event, no events yet):
    // lifted into the popular list by the new-arrival rule, and said so.
    let fresh = c
        .popular(proto::PopularRequest {
            k: 10,
            rules: Some(proto::Rules { new_arrival_days: Some(7), new_arrival_boost: Some(2.0), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let new_ids: HashSet<String> = (0..Planted::NEW_ARRIVALS).map(Planted::new_arrival).collect();
    let lifted: Vec<&proto::ScoredItem> = fresh.items.iter().filter(|i| new_ids.contains(&i.item_id)).collect();
    assert_eq!(lifted.len(), Planted::NEW_ARRIVALS, "{:?}", fresh.items);
    assert!(lifted.iter().all(|i| kind(i) == Kind::NewArrival && text(i).starts_with("new arrival (listed 3 days ago)")));
    // Bad places and radii name their field.
    for (bad, field) in [
        (proto::Near { latitude: 91.0, ..near(true, None) }, "rules.near.latitude"),
        (proto::Near { radius_km: 0.0, ..near(true, None) }, "rules.near.radius_km"),
        (proto::Near { radius_km: -2.0, ..near(true, None) }, "rules.near.radius_km"),
    ] {
        let e = c
            .popular(proto::PopularRequest { k: 5, rules: Some(proto::Rules { near: Some(bad), ..Default::default() }), ..Default::default() })
            .await
            .unwrap_err();
        assert!(e.code() == Code::InvalidArgument && e.message().contains(field), "{}", e.message());
    }
    // A place nothing is near: an empty list that says the filters left nothing.
    let nowhere = c
        .popular(proto::PopularRequest {
            k: 5,
            rules: Some(proto::Rules { near: Some(proto::Near { latitude: -45.0, longitude: 170.0, ..near(true, None) }), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(nowhere.items.is_empty());
    assert_eq!(nowhere.shortfall, proto::Shortfall::Filters as i32);
    // "Popular in your region".
    let north = c
        .popular(proto::PopularRequest {
            k: 3,
            segment: Some(proto::UserAttributes { region: Some("north".into()), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(north.items.iter().all(|i| kind(i) == Kind::Popular && text(i) == "popular in north"), "{:?}", north.items);
}

#[tokio::test]
async fn exploration_gives_new_arrivals_the_tail_fixed_per_user_and_day() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut c) = demo_server(&dir, &[]).await;
    let new_ids: HashSet<String> = (0..Planted::NEW_ARRIVALS).map(Planted::new_arrival).collect();
    let users: Vec<String> = (0..200).map(|u| format!("user-{u:04}")).collect();
    let mut explored = 0;
    for user in &users {
        let ask = || proto::RecommendRequest { subject: Some(Subject::UserId(user.clone())), k: 10, ..Default::default() };
        let a = c.recommend(ask()).await.unwrap().into_inner();
        let b = c.recommend(ask()).await.unwrap().into_inner();
        let ids = |r: &proto::RecommendResponse| r.items.iter().map(|i| i.item_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b), "{user}: the same list on the same day");
        assert_eq!(a.items.len(), 10);
        let new: Vec<usize> = a.items.iter().enumerate().filter(|(_, i)| new_ids.contains(&i.item_id)).map(|(n, _)| n).collect();
        match new.as_slice() {
            [] => {}
            [9] => {
                explored += 1;
                assert_eq!(kind(&a.items[9]), Kind::NewArrival);
            }
            other => panic!("{user}: new arrivals at {other:?}: {:?}", a.items),
        }
    }
    // The default share is 5% of ten slots: about half the users get one.
    assert!((60..=140).contains(&explored), "{explored} of 200 lists explored");
    // Off: no list carries a new arrival.
    let dir = tempfile::tempdir().unwrap();
    let (_off, mut c) = demo_server(&dir, &["--explore-share", "0"]).await;
    for user in &users[..50] {
        let r = c.recommend(proto::RecommendRequest { subject: Some(Subject::UserId(user.clone())), k: 10, ..Default::default() }).await.unwrap().into_inner();
        assert!(r.items.iter().all(|i| !new_ids.contains(&i.item_id)), "{user}: {:?}", r.items);
    }
}

#[tokio::test]
async fn events_taken_in_while_serving_count_in_windows_trends_and_item_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut c) = demo_server(&dir, &[]).await;
    let item = "sku-0100";
    let at = latest() + 3600;
    let stats = |now: Option<i64>| proto::GetItemStatsRequest { item_id: item.into(), window: proto::Window::Window1Day as i32, now, ..Default::default() };
    let before = c.get_item_stats(stats(Some(at))).await.unwrap().into_inner();
    // Twelve shoppers the model never saw buy the item an hour after the data ends.
    let events = (0..12)
        .map(|n| proto::IngestEvent {
            user_id: format!("walk-in-{n:02}"),
            item_id: item.into(),
            event: "purchase".into(),
            timestamp: Some(at),
            value: Some(10.0),
            ..Default::default()
        })
        .collect();
    assert_eq!(c.ingest_events(proto::IngestEventsRequest { events }).await.unwrap().into_inner().stored, 12);
    // "Now" moves to the latest event the server knows; the metrics count the new ones.
    let after = c.get_item_stats(stats(None)).await.unwrap().into_inner();
    let purchases = |s: &proto::ItemStats| s.event_counts.get("purchase").copied().unwrap_or(0);
    assert_eq!(purchases(&after), purchases(&before) + 12, "{before:?}\n{after:?}");
    assert_eq!(after.users, before.users + 12);
    assert!((after.revenue - before.revenue - 120.0).abs() < 1e-6);
    let day = |window: proto::Window| proto::TrendingRequest { k: 10, window: window as i32, ..Default::default() };
    let trending = c.trending(day(proto::Window::Window1Day)).await.unwrap().into_inner();
    assert!(trending.items.iter().any(|i| i.item_id == item), "{:?}", trending.items);
    let popular = c.popular(proto::PopularRequest { k: 3, window: proto::Window::Window1Day as i32, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(popular.items[0].item_id, item, "{:?}", popular.items);
    // A shopper who asks to be forgotten leaves the counts at once.
    c.delete_user(proto::DeleteUserRequest { user_id: "walk-in-00".into() }).await.unwrap();
    let forgotten = c.get_item_stats(stats(Some(at))).await.unwrap().into_inner();
    assert_eq!(forgotten.users, after.users - 1);
    // An item added while serving has metrics from its first events on.
    let added = proto::CatalogueItem { item_id: "sku-fresh".into(), category: "shoes".into(), ..Default::default() };
    c.upsert_items(proto::UpsertItemsRequest { items: vec![added] }).await.unwrap();
    let bought = (0..3)
        .map(|n| proto::IngestEvent { user_id: format!("walk-in-{:02}", n + 5), item_id: "sku-fresh".into(), event: "purchase".into(), timestamp: Some(at), ..Default::default() })
        .collect();
    c.ingest_events(proto::IngestEventsRequest { events: bought }).await.unwrap();
    let fresh = c.get_item_stats(proto::GetItemStatsRequest { item_id: "sku-fresh".into(), window: proto::Window::Window1Day as i32, now: Some(at), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!((fresh.event_counts.get("purchase").copied(), fresh.users), (Some(3), 3), "{fresh:?}");
}
