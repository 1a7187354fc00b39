//! Ingest end to end: the real server binary with its event log in a model root of its
//! own, the events sent over gRPC, the next `Recommend` reflecting them, and a restart
//! replaying them.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::{self, IngestEvent};
use common::*;
use tonic::Code;

/// A model root of this test's own holding the MovieLens model (the event log goes into
/// `events/` inside it).
fn own_root(name: &str) -> PathBuf {
    let shared = movielens_model();
    let version = std::fs::read_to_string(shared.join("current")).unwrap().trim().to_string();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&root);
    copy_dir(&shared.join(&version), &root.join(&version));
    std::fs::write(root.join("current"), format!("{version}\n")).unwrap();
    root
}

fn event(user: &str, item: &str, kind: &str) -> IngestEvent {
    IngestEvent {
        user_id: user.into(),
        item_id: item.into(),
        event: kind.into(),
        ..Default::default()
    }
}

fn categories() -> HashMap<String, String> {
    movielens().items.iter().map(|i| (i.item_id.clone(), i.category.clone())).collect()
}

async fn top10(c: &mut RecommenderClient<tonic::transport::Channel>, user: &str) -> Vec<proto::ScoredItem> {
    let r = proto::RecommendRequest {
        subject: Some(Subject::UserId(user.into())),
        k: 10,
        ..Default::default()
    };
    c.recommend(r).await.unwrap().into_inner().items
}

/// Category of every item of the demo store.
fn demo_categories() -> HashMap<String, String> {
    let data = affinity_core::demo::generate(affinity_core::demo::DemoSize::default(), affinity_core::demo::DEMO_SEED);
    data.items.into_iter().map(|i| (i.item_id, i.category)).collect()
}

#[tokio::test]
async fn three_views_of_a_category_turn_a_new_users_list_to_it() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ingest-demo");
    let _ = std::fs::remove_dir_all(&root);
    affinity_service::demo::prepare_model(&root).unwrap();
    let cats = demo_categories();
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let before = top10(&mut c, "new-shopper").await;
    // Three items of the category least present in the popular list.
    let count = |items: &[proto::ScoredItem], cat: &str| items.iter().filter(|i| cats[&i.item_id] == cat).count();
    let mut all: Vec<&String> = cats.values().collect();
    all.sort();
    all.dedup();
    let category = all.into_iter().min_by_key(|c| count(&before, c)).unwrap().clone();
    let mut viewed: Vec<&String> = cats.iter().filter(|(_, c)| **c == category).map(|(i, _)| i).collect();
    viewed.sort();
    let batch = proto::IngestEventsRequest {
        events: viewed.iter().take(3).map(|i| event("new-shopper", i, "view")).collect(),
    };
    assert_eq!(c.ingest_events(batch).await.unwrap().into_inner().stored, 3);
    let after = top10(&mut c, "new-shopper").await;
    eprintln!("{category} in the top 10: {} before, {} after three views", count(&before, &category), count(&after, &category));
    assert!(count(&after, &category) >= 5, "{} of 10 from {category}", count(&after, &category));
}

#[tokio::test]
async fn ingested_events_shape_the_next_recommend_and_survive_a_restart() {
    let root = own_root("ingest-live");
    let cats = categories();
    // Three animated films a new user has just viewed.
    let viewed = ["1", "71", "95"];
    let category = cats["1"].clone();
    let in_category = |items: &[proto::ScoredItem]| items.iter().filter(|i| cats[&i.item_id] == category).count();

    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let before = top10(&mut c, "shopper-1").await;
    assert_eq!(before[0].reason.as_ref().unwrap().kind, proto::reason::Kind::Popular as i32);
    let batch = proto::IngestEventsRequest {
        events: viewed.iter().map(|i| event("shopper-1", i, "view")).collect(),
    };
    let r = c.ingest_events(batch).await.unwrap().into_inner();
    assert_eq!((r.stored, r.duplicates, r.last_sequence), (3, 0, 3));
    let after = top10(&mut c, "shopper-1").await;
    // MovieLens' category is a film's first genre, which taste follows loosely: Toy Story's
    // viewers also watch Star Wars. The list still moves toward the genre.
    eprintln!("MovieLens {category} in the top 10: {} before, {} after three views", in_category(&before), in_category(&after));
    assert!(in_category(&after) > in_category(&before));
    assert_ne!(after[0].reason.as_ref().unwrap().kind, proto::reason::Kind::Popular as i32, "personalised now");
    assert!(after.iter().all(|i| !viewed.contains(&i.item_id.as_str())), "viewed items count as seen");
    // A purchase of the top item: never recommended again (MovieLens has no returns).
    let bought = after[0].item_id.clone();
    let r = c
        .ingest_events(proto::IngestEventsRequest {
            events: vec![IngestEvent {
                event_id: Some("order-1".into()),
                ..event("shopper-1", &bought, "purchase")
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.stored, r.last_sequence), (1, 4));
    let again = top10(&mut c, "shopper-1").await;
    assert!(again.iter().all(|i| i.item_id != bought));
    drop(server);

    // A restart replays the log: same answer, and a retried event is not stored twice.
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    assert_eq!(top10(&mut c, "shopper-1").await.iter().map(|i| &i.item_id).collect::<Vec<_>>(), again.iter().map(|i| &i.item_id).collect::<Vec<_>>());
    let retry = proto::IngestEventsRequest {
        events: vec![IngestEvent {
            event_id: Some("order-1".into()),
            ..event("shopper-1", &bought, "purchase")
        }],
    };
    let r = c.ingest_events(retry).await.unwrap().into_inner();
    assert_eq!((r.stored, r.duplicates), (0, 1));
    // Events for items the model does not know are stored and never break Recommend.
    let r = c.ingest_events(proto::IngestEventsRequest { events: vec![event("shopper-1", "new-sku-9", "view")] }).await.unwrap().into_inner();
    assert_eq!((r.stored, r.last_sequence), (1, 5));
    assert_eq!(top10(&mut c, "shopper-1").await.len(), 10);
}

#[tokio::test]
async fn a_stored_users_kept_ranking_gives_way_to_their_next_event() {
    let root = own_root("ingest-kept");
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let ids = |l: &[proto::ScoredItem]| l.iter().map(|i| i.item_id.clone()).collect::<Vec<_>>();
    let first = top10(&mut c, "1").await;
    assert_eq!(ids(&top10(&mut c, "1").await), ids(&first), "the kept ranking answers as scoring did");
    let bought = first[0].item_id.clone();
    let order = IngestEvent { event_id: Some("order-kept".into()), ..event("1", &bought, "purchase") };
    c.ingest_events(proto::IngestEventsRequest { events: vec![order] }).await.unwrap();
    let after = top10(&mut c, "1").await;
    assert!(after.iter().all(|i| i.item_id != bought), "what they bought is seen at once");
    assert_ne!(ids(&after)[..9], ids(&first)[1..], "their vector moved with the purchase, not just the list");
}

#[tokio::test]
async fn impressions_are_stored_but_never_count_as_seen() {
    let root = own_root("ingest-impressions");
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let before = top10(&mut c, "1").await;
    let shown: Vec<IngestEvent> = before.iter().map(|i| event("1", &i.item_id, "impression")).collect();
    let r = c.ingest_events(proto::IngestEventsRequest { events: shown }).await.unwrap().into_inner();
    assert_eq!(r.stored, 10);
    let info = c.model_info(proto::ModelInfoRequest {}).await.unwrap().into_inner();
    assert_eq!((info.log_appended, info.live_events), (10, 0), "logged, not live");
    let after = top10(&mut c, "1").await;
    let ids = |l: &[proto::ScoredItem]| l.iter().map(|i| i.item_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before), "an item shown is not an item seen");
}

#[tokio::test]
async fn a_bad_event_refuses_its_whole_batch_naming_index_and_field() {
    let root = own_root("ingest-bad");
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let future = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + 3 * 86_400;
    let cases: Vec<(IngestEvent, &str)> = vec![
        (event("u", "1", "teleport"), "events[1].event"),
        (event("", "1", "view"), "events[1].user_id"),
        (event("u", "", "view"), "events[1].item_id"),
        (IngestEvent { timestamp: Some(future), ..event("u", "1", "view") }, "events[1].timestamp"),
        (IngestEvent { value: Some(f32::NAN), ..event("u", "1", "rating") }, "events[1].value"),
        (IngestEvent { value: Some(-1.0), ..event("u", "1", "rating") }, "events[1].value"),
    ];
    for (bad, field) in cases {
        let batch = proto::IngestEventsRequest {
            events: vec![event("u", "2", "view"), bad, event("u", "3", "view")],
        };
        let e = c.ingest_events(batch).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    // Nothing of the refused batches was stored: the next event is the log's first.
    let r = c.ingest_events(proto::IngestEventsRequest { events: vec![event("u", "2", "view")] }).await.unwrap().into_inner();
    assert_eq!((r.stored, r.last_sequence), (1, 1));
}

#[tokio::test]
async fn without_an_event_log_ingest_is_unavailable_and_reads_keep_serving() {
    let root = own_root("ingest-off");
    let server = start_server_with(&["--model".as_ref(), root.as_os_str(), "--no-ingest".as_ref()], None).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let e = c.ingest_events(proto::IngestEventsRequest { events: vec![event("u", "1", "view")] }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("without an event log"), "{}", e.message());
    assert_eq!(top10(&mut c, "1").await.len(), 10);
    assert!(!root.join("events").exists(), "nothing written");
}

#[tokio::test]
async fn every_acknowledged_event_survives_a_sigkill() {
    let root = own_root("ingest-crash");
    let mut lost = 0;
    let mut acked_total = 0;
    for round in 0..3u64 {
        let mut server = start_server(&root).await;
        let addr = server.addr.clone();
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let addr = addr.clone();
                tokio::spawn(async move {
                    let mut c = RecommenderClient::connect(addr).await.unwrap();
                    // Odd producers send over StreamEvents, even ones with IngestEvents.
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    let mut acks = if p % 2 == 1 {
                        Some(c.stream_events(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner())
                    } else {
                        None
                    };
                    let mut acked = Vec::new();
                    for n in 0u64.. {
                        let ids: Vec<String> = (0..10).map(|k| format!("r{round}-p{p}-b{n}-e{k}")).collect();
                        let batch = proto::IngestEventsRequest {
                            events: ids
                                .iter()
                                .map(|id| IngestEvent {
                                    event_id: Some(id.clone()),
                                    ..event(&format!("crash-user-{p}"), "50", "view")
                                })
                                .collect(),
                        };
                        let ok = match &mut acks {
                            Some(stream) => tx.send(batch).await.is_ok() && matches!(stream.message().await, Ok(Some(_))),
                            None => c.ingest_events(batch).await.is_ok(),
                        };
                        if !ok {
                            break;
                        }
                        acked.extend(ids);
                    }
                    acked
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(150 + 97 * round)).await;
        server.kill();
        let mut acked = Vec::new();
        for p in producers {
            acked.extend(p.await.unwrap());
        }
        // What the trainer would read from the log.
        let stored: std::collections::HashSet<String> = affinity_eventlog::read_dir(&root.join("events"), 1)
            .unwrap()
            .into_iter()
            .filter_map(|r| r.entry.into_event().and_then(|e| e.event_id))
            .collect();
        lost += acked.iter().filter(|id| !stored.contains(*id)).count();
        acked_total += acked.len();
        assert!(!acked.is_empty(), "round {round}: nothing was acknowledged before the kill");
    }
    eprintln!("{acked_total} acknowledged events over 3 SIGKILLs, {lost} lost");
    assert_eq!(lost, 0);
    // The log still opens (any torn tail cut) and takes writes after the last kill.
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let r = c.ingest_events(proto::IngestEventsRequest { events: vec![event("after", "1", "view")] }).await.unwrap().into_inner();
    assert_eq!(r.stored, 1);
}

#[tokio::test]
async fn a_model_trained_through_the_log_is_replayed_only_after_its_position() {
    let root = own_root("ingest-retrain");
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let first = proto::IngestEventsRequest {
        events: ["1", "71", "95"].iter().map(|i| event("retrain-user", i, "view")).collect(),
    };
    assert_eq!(c.ingest_events(first).await.unwrap().into_inner().last_sequence, 3);
    drop(server);

    // What `affinity-trainer train --events ... --events-log ROOT/events` does.
    let records = affinity_eventlog::read_dir(&root.join("events"), 1).unwrap();
    let position = records.last().unwrap().seq;
    let mut data = movielens().clone();
    data.events.extend(records.into_iter().filter_map(|r| r.entry.into_event()).map(|e| e.event));
    let mut m = affinity_core::train::train(&data, affinity_core::data::TimeKind::Unix, &Default::default(), &affinity_core::train::NoProgress);
    m.record_log_position(position);
    affinity_core::model::format::save(&mut m, &root, Default::default()).unwrap();

    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let info = c.model_info(proto::ModelInfoRequest {}).await.unwrap().into_inner();
    assert_eq!((info.log_position, info.live_events, info.log_next_position), (3, 0, 4), "{info:?}");
    // The user is now in the model itself; a new event is live on top of it.
    let r = c.ingest_events(proto::IngestEventsRequest { events: vec![event("retrain-user", "588", "view")] }).await.unwrap().into_inner();
    assert_eq!(r.last_sequence, 4);
    let info = c.model_info(proto::ModelInfoRequest {}).await.unwrap().into_inner();
    assert_eq!((info.live_users, info.live_events), (1, 1));
    assert_eq!(info.log_appended, 1, "since this start");
    assert!(info.log_syncs >= 1, "the acknowledged batch was synced");
    let top = top10(&mut c, "retrain-user").await;
    assert!(top.iter().all(|i| !["1", "71", "95", "588"].contains(&i.item_id.as_str())), "trained and live items are both seen");
}

#[tokio::test]
async fn an_item_taken_off_sale_never_appears_again_also_after_a_restart() {
    let root = own_root("ingest-availability");
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    // Star Wars tops the popular list; take it off sale with the top item of a user.
    let user_top = top10(&mut c, "1").await[0].item_id.clone();
    let off = proto::SetAvailabilityRequest {
        items: vec![
            proto::ItemAvailability { item_id: "50".into(), available: false },
            proto::ItemAvailability { item_id: user_top.clone(), available: false },
            proto::ItemAvailability { item_id: "not-in-model".into(), available: false },
        ],
    };
    let r = c.set_availability(off).await.unwrap().into_inner();
    assert_eq!((r.stored, r.unknown), (3, 1));
    let gone = |items: &[proto::ScoredItem]| items.iter().all(|i| i.item_id != "50" && i.item_id != user_top);
    assert!(gone(&top10(&mut c, "1").await));
    assert!(gone(&top10(&mut c, "a-new-user").await), "popular answers too");
    drop(server);
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    assert!(gone(&top10(&mut c, "1").await), "after a restart");
    assert!(gone(&top10(&mut c, "a-new-user").await));
    let on = proto::SetAvailabilityRequest { items: vec![proto::ItemAvailability { item_id: "50".into(), available: true }] };
    c.set_availability(on).await.unwrap();
    assert_eq!(top10(&mut c, "a-new-user").await[0].item_id, "50", "back on sale");
    let bad = proto::SetAvailabilityRequest { items: vec![proto::ItemAvailability { item_id: String::new(), available: false }] };
    let e = c.set_availability(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("items[0].item_id"), "{}", e.message());
}

type Client = RecommenderClient<tonic::transport::Channel>;

/// What a user's list holds when filtered to `category`.
async fn in_category(c: &mut Client, user: &str, category: &str) -> Vec<String> {
    let r = proto::RecommendRequest {
        subject: Some(Subject::UserId(user.into())),
        k: 1000,
        category: Some(category.into()),
        ..Default::default()
    };
    c.recommend(r).await.unwrap().into_inner().items.into_iter().map(|i| i.item_id).collect()
}

async fn similar(c: &mut Client, item: &str, mode: proto::similar_items_request::Mode) -> Result<Vec<String>, tonic::Status> {
    let r = proto::SimilarItemsRequest { item_id: item.into(), k: 10, mode: mode as i32, rules: None };
    Ok(c.similar_items(r).await?.into_inner().items.into_iter().map(|i| i.item_id).collect())
}

fn catalogue_item(item: &affinity_core::data::Item) -> proto::CatalogueItem {
    proto::CatalogueItem {
        item_id: item.item_id.clone(),
        title: item.title.clone(),
        category: item.category.clone(),
        brand: item.brand.clone(),
        price: item.price,
        tags: item.tags.clone(),
        available: None,
        latitude: item.location.map(|p| p.lat),
        longitude: item.location.map(|p| p.lon),
        listed_at: item.listed_at,
    }
}

/// What the upsert test's entries must have done.
async fn check_upserts(c: &mut Client, when: &str, moved: &str, old_category: &str) {
    use proto::similar_items_request::Mode;
    assert_eq!(in_category(c, "1", "staff-picks").await, vec![moved.to_string()], "{when}: the new category filter");
    assert!(!in_category(c, "1", old_category).await.iter().any(|i| i == moved), "{when}: gone from the old one");
    assert_eq!(similar(c, "star-wars-remastered", Mode::Content).await.unwrap()[0], "50", "{when}: the new item's content neighbour");
    assert_eq!(similar(c, "star-wars-remastered", Mode::Blend).await.unwrap()[0], "50", "{when}: blend");
    let of_star = similar(c, "50", Mode::Content).await.unwrap();
    assert!(of_star.iter().any(|i| i == "star-wars-remastered"), "{when}: {of_star:?}");
    assert_eq!(similar(c, "never-added", Mode::Content).await.unwrap_err().code(), Code::NotFound, "{when}");
}

#[tokio::test]
async fn upserted_items_apply_to_filters_and_similar_items_and_hold_after_a_restart_and_a_reload() {
    let root = own_root("ingest-upsert");
    let args = ["--model".as_ref(), root.as_os_str(), "--reload-poll".as_ref(), "0".as_ref()];
    let server = start_server_with(&args, None).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let entry = |id: &str| movielens().items.iter().find(|i| i.item_id == id).unwrap().clone();
    // The user's top item moves to a category of its own; a twin of Star Wars arrives.
    let moved = top10(&mut c, "1").await[0].item_id.clone();
    let old_category = entry(&moved).category;
    assert!(in_category(&mut c, "1", &old_category).await.contains(&moved));
    let star = entry("50");
    let twin = proto::CatalogueItem {
        item_id: "star-wars-remastered".into(),
        title: format!("{} remastered", star.title),
        ..catalogue_item(&star)
    };
    let request = proto::UpsertItemsRequest {
        items: vec![proto::CatalogueItem { category: "staff-picks".into(), ..catalogue_item(&entry(&moved)) }, twin],
    };
    let r = c.upsert_items(request).await.unwrap().into_inner();
    assert_eq!((r.updated, r.added), (1, 1));

    // A bad entry refuses its whole batch, naming index and field.
    let bad = proto::UpsertItemsRequest {
        items: vec![
            proto::CatalogueItem { item_id: "never-added".into(), category: "Drama".into(), ..Default::default() },
            proto::CatalogueItem { item_id: "x".into(), price: Some(-1.0), ..Default::default() },
        ],
    };
    let e = c.upsert_items(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("items[1].price"), "{}", e.message());

    check_upserts(&mut c, "at once", &moved, &old_category).await;
    drop(server);
    let server = start_server_with(&args, None).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    check_upserts(&mut c, "after a restart", &moved, &old_category).await;
    // A version trained from the old catalogue gets the entries too.
    let v = publish(&root, 16);
    let r = c.reload_model(proto::ReloadModelRequest {}).await.unwrap().into_inner();
    assert_eq!((r.version.as_str(), r.changed), (v.as_str(), true));
    check_upserts(&mut c, "after a reload", &moved, &old_category).await;
}

/// Trains a small MovieLens model variant (different factors per version) into `root`.
fn publish(root: &Path, factors: usize) -> String {
    let mut params = affinity_core::params::TrainParams::default();
    params.als.factors = factors;
    params.als.iterations = 4;
    let mut m = affinity_core::train::train(movielens(), affinity_core::data::TimeKind::Unix, &params, &affinity_core::train::NoProgress);
    let retention = affinity_core::model::publish::Retention { keep: 10, ..Default::default() };
    affinity_core::model::format::save(&mut m, root, retention).unwrap();
    m.version().to_string()
}

#[tokio::test]
async fn reload_under_load_switches_versions_without_a_failed_request_and_refuses_a_corrupt_one() {
    let root = own_root("ingest-reload");
    let server = start_server_with(&["--model".as_ref(), root.as_os_str(), "--reload-poll".as_ref(), "0".as_ref()], None).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let first = c.model_info(proto::ModelInfoRequest {}).await.unwrap().into_inner().version;
    // A live event before the reloads: it must survive them.
    c.ingest_events(proto::IngestEventsRequest { events: vec![event("reload-user", "50", "view")] }).await.unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (addr, stop) = (server.addr.clone(), std::sync::Arc::clone(&stop));
        tokio::spawn(async move {
            let mut c = RecommenderClient::connect(addr).await.unwrap();
            let (mut failed, mut answered, mut versions) = (0, 0, Vec::<String>::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.recommend(proto::RecommendRequest { subject: Some(Subject::UserId("1".into())), k: 10, ..Default::default() }).await {
                    Ok(r) => {
                        answered += 1;
                        let v = r.into_inner().model_version;
                        if versions.last() != Some(&v) {
                            versions.push(v);
                        }
                    }
                    Err(_) => failed += 1,
                }
            }
            (failed, answered, versions)
        })
    };
    let mut published = vec![first.clone()];
    let publish_off_runtime = |factors: usize| {
        let root = root.clone();
        tokio::task::spawn_blocking(move || publish(&root, factors))
    };
    for (n, factors) in [16usize, 24, 32].into_iter().enumerate() {
        let v = publish_off_runtime(factors).await.unwrap();
        let r = c.reload_model(proto::ReloadModelRequest {}).await.unwrap().into_inner();
        assert_eq!((r.version.as_str(), r.changed), (v.as_str(), true), "version {n}");
        published.push(v);
        if n == 1 {
            // A corrupt version made current: refused, the previous keeps serving.
            let bad = publish_off_runtime(8).await.unwrap();
            let users = root.join(&bad).join("users.bin");
            let mut bytes = std::fs::read(&users).unwrap();
            bytes[20] ^= 0xff;
            std::fs::write(&users, bytes).unwrap();
            let e = c.reload_model(proto::ReloadModelRequest {}).await.unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition);
            assert!(e.message().contains("users.bin") && e.message().contains("checksum"), "{}", e.message());
            let live = c.model_info(proto::ModelInfoRequest {}).await.unwrap().into_inner().version;
            assert_eq!(&live, published.last().unwrap());
        }
    }
    let r = c.reload_model(proto::ReloadModelRequest {}).await.unwrap().into_inner();
    assert!(!r.changed, "nothing new");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (failed, answered, versions) = load.await.unwrap();
    eprintln!("{answered} requests during 3 reloads and a refused one: {failed} failed; versions seen {versions:?}");
    assert_eq!(failed, 0);
    assert!(versions.len() >= 2 && versions.iter().all(|v| published.contains(v)), "{versions:?} vs {published:?}");
    // The live event survived every reload.
    let top = top10(&mut c, "reload-user").await;
    assert!(top.iter().all(|i| i.item_id != "50") && top[0].reason.as_ref().unwrap().kind == proto::reason::Kind::Personalized as i32);
}

#[tokio::test]
async fn the_server_picks_up_a_new_version_by_itself() {
    let root = own_root("ingest-poll");
    let server = start_server_with(&["--model".as_ref(), root.as_os_str(), "--reload-poll".as_ref(), "1".as_ref()], None).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let v = publish(&root, 16);
    let started = std::time::Instant::now();
    loop {
        let live = c.model_info(proto::ModelInfoRequest {}).await.unwrap().into_inner().version;
        if live == v {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "the new version never went live");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_stream_acknowledges_every_batch_in_order_and_a_bad_one_ends_it() {
    let root = own_root("ingest-stream");
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let batches: Vec<proto::IngestEventsRequest> = (0..5)
        .map(|n| proto::IngestEventsRequest {
            events: (0..3).map(|k| event(&format!("s{n}"), &format!("{}", 1 + n * 3 + k), "view")).collect(),
        })
        .chain([proto::IngestEventsRequest { events: vec![event("s9", "1", "teleport")] }])
        .collect();
    let mut acks = c.stream_events(tokio_stream::iter(batches)).await.unwrap().into_inner();
    let mut last = 0;
    for n in 0..5 {
        let a = acks.message().await.unwrap().unwrap_or_else(|| panic!("ack {n} missing"));
        assert_eq!((a.stored, a.last_sequence), (3, last + 3));
        last = a.last_sequence;
    }
    let e = acks.message().await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("events[0].event"), "{}", e.message());
    // Everything acknowledged before the bad batch is stored.
    let r = c.ingest_events(proto::IngestEventsRequest { events: vec![event("s0", "99", "view")] }).await.unwrap().into_inner();
    assert_eq!(r.last_sequence, 16);
}

/// Whether any file under `dir` contains `needle`.
fn bytes_found(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let p = e.unwrap().path();
        p.is_file() && std::fs::read(&p).unwrap().windows(needle.len()).any(|w| w == needle)
    })
}

#[tokio::test]
async fn a_deleted_user_is_forgotten_by_the_server_the_log_and_the_next_retrain() {
    let root = own_root("ingest-delete");
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    // "1" is a MovieLens user in the model; "zq-live-only" exists only in the live state.
    let events: Vec<IngestEvent> = ["1", "zq-live-only", "someone-else"]
        .iter()
        .flat_map(|u| ["71", "95"].map(|i| event(u, i, "view")))
        .collect();
    c.ingest_events(proto::IngestEventsRequest { events }).await.unwrap();
    let cold = top10(&mut c, "never-seen").await;
    for user in ["1", "zq-live-only"] {
        assert_ne!(top10(&mut c, user).await, cold);
        let r = c.delete_user(proto::DeleteUserRequest { user_id: user.into() }).await.unwrap().into_inner();
        assert_eq!(r.removed_events, 2);
        assert_eq!(top10(&mut c, user).await, cold, "{user} gets the cold-start answer at once");
    }
    let events_dir = root.join("events");
    assert!(!bytes_found(&events_dir, b"zq-live-only"), "no byte of the user's id is left in the events directory");
    assert!(bytes_found(&events_dir, b"someone-else"), "others are kept");
    drop(server);
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    assert_eq!(top10(&mut c, "1").await, cold, "after a restart, while the model still holds the user");
    assert_ne!(top10(&mut c, "someone-else").await, cold);
}

#[tokio::test]
async fn an_unusable_log_directory_turns_ingest_off_and_reads_keep_serving() {
    let root = own_root("ingest-unusable");
    // The events "directory" is a file: the log cannot be created there.
    let not_a_dir = root.join("events-file");
    std::fs::write(&not_a_dir, b"not a directory").unwrap();
    let server = start_server_with(&["--model".as_ref(), root.as_os_str(), "--events-dir".as_ref(), not_a_dir.as_os_str()], None).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let e = c.ingest_events(proto::IngestEventsRequest { events: vec![event("u", "1", "view")] }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("cannot be opened") && e.message().contains("events-file"), "{}", e.message());
    assert_eq!(top10(&mut c, "1").await.len(), 10, "reads keep serving");
}

#[tokio::test]
async fn a_full_disk_fails_writes_with_unavailable_keeps_reads_and_loses_nothing_acknowledged() {
    let root = own_root("ingest-full-disk");
    // A file size limit stands in for a full disk: with SIGXFSZ ignored (inherited through
    // exec), a write past it fails with EFBIG, as one on a full disk fails with ENOSPC.
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("trap '' XFSZ; ulimit -f 256; exec \"$0\" \"$@\"")
        .arg(server_bin())
        .args(["--listen", "127.0.0.1:0", "--model"])
        .arg(&root);
    let server = start(cmd).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let (mut acked, mut failure) = (0u64, None);
    for n in 0..10_000 {
        let batch = proto::IngestEventsRequest {
            events: (0..50).map(|k| event(&format!("full-{n}-{}", k % 5), &format!("{}", 1 + (n * 50 + k) % 1600), "view")).collect(),
        };
        match c.ingest_events(batch).await {
            Ok(r) => acked += u64::from(r.into_inner().stored),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let e = failure.expect("the log outgrows the limit");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    eprintln!("{acked} events acknowledged before the disk filled; then: {}", e.message());
    assert!(acked > 0);
    // Writes keep failing clearly; reads keep serving.
    let again = c.ingest_events(proto::IngestEventsRequest { events: vec![event("u", "1", "view")] }).await.unwrap_err();
    assert_eq!(again.code(), Code::Unavailable);
    assert_eq!(top10(&mut c, "1").await.len(), 10);
    drop(server);
    // With room again, every acknowledged event is back.
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let info = c.model_info(proto::ModelInfoRequest {}).await.unwrap().into_inner();
    assert!(info.live_events >= acked, "{} live events, {acked} acknowledged", info.live_events);
    let r = c.ingest_events(proto::IngestEventsRequest { events: vec![event("after", "1", "view")] }).await.unwrap().into_inner();
    assert!(r.last_sequence > acked);
}

#[tokio::test]
async fn user_profiles_come_from_the_model_and_the_live_state() {
    let root = own_root("ingest-profile");
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let ask = |user: &str| proto::GetUserProfileRequest { user_id: user.into(), ..Default::default() };
    let p = c.get_user_profile(ask("1")).await.unwrap().into_inner();
    let direct = movielens().events.iter().filter(|e| e.user_id == "1").count() as u32;
    assert_eq!(p.event_counts["rating"], direct);
    assert!(!p.stage.is_empty() && p.rfm.is_none(), "MovieLens has times but no purchases: {p:?}");
    assert!(p.churn_risk.is_some_and(|r| (0.0..=1.0).contains(&r)) && p.churn_reason.contains("since the last visit"), "{p:?}");
    assert!(!p.top_categories.is_empty());
    // Unknown: NOT_FOUND; after a live purchase: a new user with one.
    assert_eq!(c.get_user_profile(ask("profile-newcomer")).await.unwrap_err().code(), Code::NotFound);
    let now = p.now.unwrap();
    let purchase = IngestEvent { timestamp: Some(now), ..event("profile-newcomer", "50", "purchase") };
    c.ingest_events(proto::IngestEventsRequest { events: vec![purchase] }).await.unwrap();
    let p = c.get_user_profile(ask("profile-newcomer")).await.unwrap().into_inner();
    assert_eq!((p.event_counts["purchase"], p.stage.as_str()), (1, "new"));
    let bad = proto::GetUserProfileRequest { churn_days: Some(0.0), ..ask("1") };
    let e = c.get_user_profile(bad).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("churn_days"), "{}", e.message());
}
