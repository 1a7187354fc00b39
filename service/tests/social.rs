//! Social scoring through the real server: a model trained on LastFM (every event a
//! `view`, as a storefront sends them) with its friendships, queried over gRPC.

mod common;

use std::path::Path;

use affinity_core::data::{EventKind, TimeKind};
use affinity_core::model::format;
use affinity_core::model::publish::Retention;
use affinity_core::params::TrainParams;
use affinity_core::train::{train, NoProgress};
use affinity_lab::import::{self, Source};
use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::{self, reason::Kind};
use common::{dataset_dir, start_server};

#[tokio::test]
async fn friends_tastes_reach_the_list_with_reasons_and_can_be_switched_off() {
    let mut data = import::import(Source::LastFm, &dataset_dir("lastfm-hetrec")).expect("import LastFM");
    for e in &mut data.events {
        e.kind = EventKind::View;
        e.value = None;
    }
    // A listener whose whole history is hidden from the model: known only through friends.
    let newcomer = data.social.iter().map(|e| e.user_id.clone()).find(|u| data.social.iter().filter(|e| &e.user_id == u).count() >= 5).unwrap();
    data.events.retain(|e| e.user_id != newcomer);
    let mut m = train(&data, TimeKind::None, &TrainParams::default(), &NoProgress);
    assert!(!m.social().is_empty());
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("social-lastfm");
    let _ = std::fs::remove_dir_all(&root);
    format::save(&mut m, &root, Retention::default()).unwrap();
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let ask = |user: &str, social: Option<bool>| proto::RecommendRequest {
        subject: Some(Subject::UserId(user.to_string())),
        k: 10,
        social,
        ..Default::default()
    };
    let kinds = |items: &[proto::ScoredItem]| items.iter().map(|i| i.reason.as_ref().map_or(0, |r| r.kind)).collect::<Vec<_>>();

    // A listener with history and friends: some of the list comes with the friends' count.
    let user = data.social[0].user_id.clone();
    let on = c.recommend(ask(&user, None)).await.unwrap().into_inner().items;
    let social: Vec<&proto::ScoredItem> = on.iter().filter(|i| i.reason.as_ref().unwrap().kind == Kind::Social as i32).collect();
    assert!(!social.is_empty(), "{:?}", kinds(&on));
    let text = &social[0].reason.as_ref().unwrap().text;
    assert!(text.ends_with("friends viewed this") || text == "1 friend viewed this", "{text}");
    let off = c.recommend(ask(&user, Some(false))).await.unwrap().into_inner().items;
    assert!(off.iter().all(|i| i.reason.as_ref().unwrap().kind != Kind::Social as i32), "{:?}", kinds(&off));

    // The newcomer gets the friends' artists, not the popular list.
    let theirs = c.recommend(ask(&newcomer, None)).await.unwrap().into_inner().items;
    assert_eq!(theirs.len(), 10);
    assert!(theirs[0].reason.as_ref().unwrap().kind == Kind::Social as i32, "{:?}", kinds(&theirs));
    let popular = c.recommend(ask(&newcomer, Some(false))).await.unwrap().into_inner().items;
    assert!(popular.iter().all(|i| i.reason.as_ref().unwrap().kind == Kind::Popular as i32));
    assert_ne!(theirs.iter().map(|i| &i.item_id).collect::<Vec<_>>(), popular.iter().map(|i| &i.item_id).collect::<Vec<_>>());

    // Friends who ask to be forgotten no longer shape anyone's list, also after a restart.
    let friends: Vec<String> = data.social.iter().filter(|e| e.user_id == newcomer).map(|e| e.other_id.clone()).collect();
    for f in &friends {
        c.delete_user(proto::DeleteUserRequest { user_id: f.clone() }).await.unwrap();
    }
    let after = c.recommend(ask(&newcomer, None)).await.unwrap().into_inner().items;
    assert!(after.iter().all(|i| i.reason.as_ref().unwrap().kind == Kind::Popular as i32), "{:?}", kinds(&after));
    drop(c);
    drop(server);
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let restarted = c.recommend(ask(&newcomer, None)).await.unwrap().into_inner().items;
    assert!(restarted.iter().all(|i| i.reason.as_ref().unwrap().kind == Kind::Popular as i32), "{:?}", kinds(&restarted));
}

#[tokio::test]
async fn a_group_gets_items_for_all_and_least_misery_leaves_nobody_further_behind() {
    let server = start_server(common::movielens_model()).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let users: Vec<String> = ["1", "2", "3"].map(String::from).to_vec();
    let ask = |users: Vec<String>, strategy: proto::GroupStrategy| proto::RecommendForGroupRequest {
        user_ids: users,
        k: 10,
        strategy: strategy as i32,
        ..Default::default()
    };
    let avg = c.recommend_for_group(ask(users.clone(), proto::GroupStrategy::Average)).await.unwrap().into_inner();
    let lm = c.recommend_for_group(ask(users.clone(), proto::GroupStrategy::LeastMisery)).await.unwrap().into_inner();
    assert_eq!((avg.items.len(), lm.items.len()), (10, 10));
    let lowest = |items: &[proto::GroupItem]| items.iter().map(|i| i.member_scores.iter().copied().fold(f32::INFINITY, f32::min)).sum::<f32>();
    assert!(lowest(&lm.items) >= lowest(&avg.items), "{} < {}", lowest(&lm.items), lowest(&avg.items));
    for i in &avg.items {
        assert_eq!(i.member_scores.len(), 3);
        assert!((i.score - i.member_scores.iter().sum::<f32>() / 3.0).abs() < 1e-5);
        assert!(i.reason.starts_with("fits "), "{}", i.reason);
    }
    // Items no member had.
    let m = affinity_core::model::format::load(&affinity_core::model::format::resolve(common::movielens_model()).unwrap()).unwrap();
    for i in avg.items.iter().chain(&lm.items) {
        let item = m.item_index(&i.item_id).unwrap();
        assert!(users.iter().all(|u| !m.history(m.user_index(u).unwrap()).has_seen(item)), "{} was had by a member", i.item_id);
    }

    for (users, field) in [(Vec::new(), "user_ids"), ((0..101).map(|u| u.to_string()).collect(), "user_ids")] {
        let e = c.recommend_for_group(ask(users, proto::GroupStrategy::Average)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains(field), "{}", e.message());
    }
    // Rules are checked once for the group, before any member is ranked.
    let mut bad = ask(users.clone(), proto::GroupStrategy::Average);
    bad.rules = Some(proto::Rules { min_price: Some(5.0), max_price: Some(1.0), ..Default::default() });
    let e = c.recommend_for_group(bad).await.unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("rules.max_price"), "{e:?}");
    let mut bad = ask(users, proto::GroupStrategy::Average);
    bad.strategy = 9;
    let e = c.recommend_for_group(bad).await.unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("strategy"), "{e:?}");
}

#[tokio::test]
async fn planted_leaders_are_listed_per_category_and_deleted_ones_are_not() {
    let store = affinity_lab::synth::kol_store(affinity_lab::synth::KolSize::default(), 11);
    let mut m = train(&store.data, TimeKind::Unix, &TrainParams::default(), &NoProgress);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("social-kol");
    let _ = std::fs::remove_dir_all(&root);
    format::save(&mut m, &root, Retention::default()).unwrap();
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let list = |category: &str, k: u32| proto::ListInfluencersRequest { category: category.to_string(), k };

    let top = c.list_influencers(list("c2", 3)).await.unwrap().into_inner().influencers;
    assert_eq!(top.len(), 3);
    assert_eq!(top[0].user_id, store.leaders[2], "{top:?}");
    assert!(top[0].leader && top[0].followers > 100 && top[0].adoptions > 50.0, "{:?}", top[0]);
    let all = c.list_influencers(list("", 6)).await.unwrap().into_inner().influencers;
    let mut named: Vec<&str> = all.iter().map(|i| i.user_id.as_str()).collect();
    named.sort_unstable();
    assert_eq!(named, store.leaders.iter().map(String::as_str).collect::<Vec<_>>(), "the six planted leaders top the list, no decoy");
    assert!(c.list_influencers(list("no-such-category", 5)).await.unwrap().into_inner().influencers.is_empty());
    for k in [0, 101] {
        let e = c.list_influencers(list("c2", k)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "k = {k}");
        assert!(e.message().contains('k'), "{}", e.message());
    }

    // A deleted leader is never named again.
    c.delete_user(proto::DeleteUserRequest { user_id: store.leaders[2].clone() }).await.unwrap();
    let after = c.list_influencers(list("c2", 3)).await.unwrap().into_inner().influencers;
    assert!(after.iter().all(|i| i.user_id != store.leaders[2]), "{after:?}");
}

#[tokio::test]
async fn a_model_without_a_graph_has_no_influencers() {
    let server = start_server(common::movielens_model()).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let e = c.list_influencers(proto::ListInfluencersRequest { category: String::new(), k: 10 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("--social"), "{}", e.message());
}

#[tokio::test]
async fn live_social_edges_change_the_list_survive_a_restart_and_go_with_a_deleted_user() {
    let mut store = affinity_lab::synth::kol_store(affinity_lab::synth::KolSize::default(), 5);
    let friends = ["u00001", "u00002", "u00003"];
    for f in friends {
        store.data.events.push(affinity_core::data::Event::new(f, "gift", EventKind::View, Some(1_767_225_600 + 100 * 86_400)));
    }
    let me = "u00010";
    // No contacts of their own at training time.
    store.data.social.retain(|e| e.user_id != me && e.other_id != me);
    let mut m = train(&store.data, TimeKind::Unix, &TrainParams::default(), &NoProgress);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("social-live");
    let _ = std::fs::remove_dir_all(&root);
    format::save(&mut m, &root, Retention::default()).unwrap();
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let change = |a: &str, b: &str, kind: proto::SocialEdgeKind, remove: bool| proto::SocialEdgeChange {
        user_id: a.to_string(),
        other_id: b.to_string(),
        kind: kind as i32,
        weight: 0.0,
        remove,
    };
    let send = |edges: Vec<proto::SocialEdgeChange>| proto::IngestSocialEdgesRequest { edges };
    let gift = |items: Vec<proto::ScoredItem>| items.into_iter().find(|i| i.item_id == "gift").map(|i| i.reason.unwrap().text);
    // The top 100: the friends' gift comes with their count (whether it makes the top 10
    // depends on how alike their tastes are; see core's social tests for that).
    let ask = || proto::RecommendRequest { subject: Some(Subject::UserId(me.to_string())), k: 100, ..Default::default() };
    let before = gift(c.recommend(ask()).await.unwrap().into_inner().items);
    assert!(before.as_deref().is_none_or(|t| !t.contains("friend")), "nobody I know had the gift: {before:?}");

    let edges = friends.iter().map(|f| change(me, f, proto::SocialEdgeKind::Friend, false)).chain([change(me, "newcomer", proto::SocialEdgeKind::Follow, false)]).collect();
    let r = c.ingest_social_edges(send(edges)).await.unwrap().into_inner();
    assert_eq!((r.stored, r.pending), (4, 1), "the edge to a user the model does not know waits");
    assert_eq!(gift(c.recommend(ask()).await.unwrap().into_inner().items).as_deref(), Some("3 friends viewed this"));
    // Sent twice: no change.
    let again = c.ingest_social_edges(send(vec![change(me, friends[0], proto::SocialEdgeKind::Friend, false)])).await.unwrap().into_inner();
    assert_eq!((again.stored, again.pending), (1, 0));
    assert_eq!(gift(c.recommend(ask()).await.unwrap().into_inner().items).as_deref(), Some("3 friends viewed this"));

    // Bad edges: nothing of the batch is stored.
    for (bad, field) in [
        (change(me, me, proto::SocialEdgeKind::Friend, false), "edges[1].other_id"),
        (change(me, friends[0], proto::SocialEdgeKind::Unspecified, false), "edges[1].kind"),
        (proto::SocialEdgeChange { weight: -1.0, ..change(me, friends[0], proto::SocialEdgeKind::Follow, false) }, "edges[1].weight"),
        (proto::SocialEdgeChange { weight: 3e38, ..change(me, friends[0], proto::SocialEdgeKind::Follow, false) }, "edges[1].weight"),
        (change("", friends[0], proto::SocialEdgeKind::Follow, false), "edges[1].user_id"),
    ] {
        let e = c.ingest_social_edges(send(vec![change(me, friends[0], proto::SocialEdgeKind::Friend, true), bad])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    assert_eq!(gift(c.recommend(ask()).await.unwrap().into_inner().items).as_deref(), Some("3 friends viewed this"), "the bad batches stored nothing");

    // A friend buys the gift now: their live purchase counts as theirs at once.
    let bought = proto::IngestEvent {
        user_id: friends[1].into(),
        item_id: "gift".into(),
        event: "purchase".into(),
        timestamp: Some(1_767_225_600 + 101 * 86_400),
        ..Default::default()
    };
    assert_eq!(c.ingest_events(proto::IngestEventsRequest { events: vec![bought] }).await.unwrap().into_inner().stored, 1);
    assert_eq!(gift(c.recommend(ask()).await.unwrap().into_inner().items).as_deref(), Some("3 friends bought this"));
    // The "friends bought" shelf: the friends' items only, the gift among the first.
    let shelf = c.recommend(proto::RecommendRequest { from_contacts: true, k: 10, ..ask() }).await.unwrap().into_inner().items;
    assert!(shelf.iter().all(|i| i.reason.as_ref().unwrap().kind == Kind::Social as i32), "{shelf:?}");
    assert!(shelf.iter().take(3).any(|i| i.item_id == "gift"), "{shelf:?}");
    let session = proto::RecommendRequest {
        subject: Some(Subject::RecentItems(proto::RecentItems { item_ids: vec!["gift".into()] })),
        from_contacts: true,
        k: 10,
        ..Default::default()
    };
    let e = c.recommend(session).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("from_contacts"), "{}", e.message());

    // A friendship ends (named from the other side); the rest survives a restart.
    c.ingest_social_edges(send(vec![change(friends[2], me, proto::SocialEdgeKind::Friend, true)])).await.unwrap();
    assert_eq!(gift(c.recommend(ask()).await.unwrap().into_inner().items).as_deref(), Some("2 friends bought this"));
    drop(c);
    drop(server);
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    assert_eq!(gift(c.recommend(ask()).await.unwrap().into_inner().items).as_deref(), Some("2 friends bought this"), "replayed from the log");

    // A deleted friend's edges go with them, also after a restart.
    c.delete_user(proto::DeleteUserRequest { user_id: friends[0].to_string() }).await.unwrap();
    let one = gift(c.recommend(ask()).await.unwrap().into_inner().items);
    // One friend left, whose taste is far from mine: the gift may drop out of the 100,
    // but is never again "2 friends".
    assert!(one.as_deref().is_none_or(|t| t == "1 friend bought this"), "{one:?}");
    drop(c);
    drop(server);
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    assert_eq!(gift(c.recommend(ask()).await.unwrap().into_inner().items), one);
}

#[tokio::test]
async fn popular_and_trending_per_community_over_grpc() {
    let mut store = affinity_lab::synth::kol_store(affinity_lab::synth::KolSize::default(), 3);
    let start = 1_767_225_600;
    for u in 0..30 {
        let user = format!("u{u:05}");
        store.data.memberships.push(affinity_core::data::Membership { user_id: user.clone(), community_id: "club".into() });
        store.data.events.push(affinity_core::data::Event::new(user, "club-item", EventKind::View, Some(start + 89 * 86_400)));
    }
    store.data.memberships.push(affinity_core::data::Membership { user_id: "club-newcomer".into(), community_id: "club".into() });
    // The community weight `train`'s search chose on the generated community store.
    let params = TrainParams { community_blend: 0.4, ..TrainParams::default() };
    let mut m = train(&store.data, TimeKind::Unix, &params, &NoProgress);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("social-community");
    let _ = std::fs::remove_dir_all(&root);
    format::save(&mut m, &root, Retention::default()).unwrap();
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    let club = |community: &str| Some(proto::UserAttributes { community: Some(community.to_string()), ..Default::default() });

    let popular = c.popular(proto::PopularRequest { segment: club("club"), k: 5, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!((popular.segment_users, popular.items[0].item_id.as_str()), (31, "club-item"));
    let trending = c.trending(proto::TrendingRequest { segment: club("club"), k: 5, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!((trending.segment_users, trending.items[0].item_id.as_str()), (31, "club-item"), "all thirty in the last week");
    let everyone = c.popular(proto::PopularRequest { k: 5, ..Default::default() }).await.unwrap().into_inner();
    assert!(everyone.items.iter().all(|i| i.item_id != "club-item"));

    let r = c
        .recommend(proto::RecommendRequest { subject: Some(Subject::UserId("club-newcomer".into())), k: 5, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.items[0].item_id.as_str(), r.items[0].reason.as_ref().unwrap().text.as_str()), ("club-item", "popular in community club"));

    let e = c.popular(proto::PopularRequest { segment: club(&"x".repeat(300)), k: 5, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("segment.community"), "{}", e.message());

    // Memberships change while serving: one joins, the newcomer leaves, a stranger waits.
    let change = |user: &str, remove: bool| proto::MembershipChange { user_id: user.to_string(), community_id: "club".into(), remove };
    let send = |memberships: Vec<proto::MembershipChange>| proto::IngestMembershipsRequest { memberships };
    let r = c.ingest_memberships(send(vec![change("u00100", false), change("club-newcomer", true), change("stranger", false)])).await.unwrap().into_inner();
    assert_eq!((r.stored, r.pending), (3, 1));
    let members = |c: &mut RecommenderClient<tonic::transport::Channel>| {
        let mut c = c.clone();
        async move { c.popular(proto::PopularRequest { segment: club("club"), k: 5, ..Default::default() }).await.unwrap().into_inner().segment_users }
    };
    assert_eq!(members(&mut c).await, 31, "one in, one out");
    let newcomer = proto::RecommendRequest { subject: Some(Subject::UserId("club-newcomer".into())), k: 5, ..Default::default() };
    let r = c.recommend(newcomer.clone()).await.unwrap().into_inner();
    assert!(r.items.iter().all(|i| i.reason.as_ref().unwrap().text != "popular in community club"));
    // A member with a history of their own (who joined live) gets the club's pick, and
    // the reason; not when the request turns social signals off.
    let joined = |social: Option<bool>| proto::RecommendRequest { subject: Some(Subject::UserId("u00100".into())), k: 10, social, ..Default::default() };
    let r = c.recommend(joined(None)).await.unwrap().into_inner();
    let club_pick = r.items.iter().find(|i| i.item_id == "club-item").map(|i| i.reason.as_ref().unwrap().text.as_str());
    assert_eq!(club_pick, Some("popular in your community club"), "{:?}", r.items);
    let r = c.recommend(joined(Some(false))).await.unwrap().into_inner();
    assert!(r.items.iter().all(|i| i.item_id != "club-item"), "{:?}", r.items);
    // Their profile says where they stand: the club joined live, their contacts, their
    // influence.
    let p = c.get_user_profile(proto::GetUserProfileRequest { user_id: "u00100".into(), ..Default::default() }).await.unwrap().into_inner();
    let follows = store.data.social.iter().filter(|e| e.user_id == "u00100" && e.other_id != "u00100").map(|e| &e.other_id).collect::<std::collections::HashSet<_>>().len();
    assert_eq!((p.communities, p.friends, p.following as usize), (vec!["club".to_string()], 0, follows));
    assert!(p.influence.is_some_and(|s| s > 0.0), "{:?}", p.influence);
    let e = c.ingest_memberships(send(vec![change("u00100", false), proto::MembershipChange { community_id: String::new(), ..change("u00101", false) }])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("memberships[1].community_id"), "{}", e.message());
    // After a restart, from the log.
    drop(c);
    drop(server);
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    assert_eq!(members(&mut c).await, 31);
    // Deleted members are counted no more at once (one who joined live, one from the
    // file), and their logged memberships go with them.
    c.delete_user(proto::DeleteUserRequest { user_id: "u00100".into() }).await.unwrap();
    c.delete_user(proto::DeleteUserRequest { user_id: "u00001".into() }).await.unwrap();
    assert_eq!(members(&mut c).await, 29);
    drop(c);
    drop(server);
    let server = start_server(&root).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.unwrap();
    assert_eq!(members(&mut c).await, 29);

    // The client sends files in batches: three memberships two at a time, two edges one
    // at a time (one naming a user the model does not know).
    let dir = tempfile::tempdir().unwrap();
    let (communities, social) = (dir.path().join("communities.csv"), dir.path().join("social.csv"));
    std::fs::write(&communities, "user_id,community_id\nu00200,club\nu00201,club\nstranger-2,club\n").unwrap();
    std::fs::write(&social, "user_id,other_id,kind,weight\nu00200,u00201,friend,\nu00200,stranger-2,follow,2\n").unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_affinity-client")).args(["--addr", &server.addr]).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = cli(&["memberships", "--file", communities.to_str().unwrap(), "--batch", "2"]);
    assert!(out.starts_with("stored 3 membership change(s), 1 naming a user"), "{out}");
    assert_eq!(members(&mut c).await, 31);
    let out = cli(&["social-edges", "--file", social.to_str().unwrap(), "--batch", "1"]);
    assert!(out.starts_with("stored 2 edge change(s), 1 naming a user"), "{out}");
    let out = cli(&["memberships", "--file", communities.to_str().unwrap(), "--remove"]);
    assert!(out.starts_with("stored 3 membership change(s)"), "{out}");
    assert_eq!(members(&mut c).await, 29);
}
