//! End-to-end tests: the real server binary on an ephemeral port, a model trained on
//! MovieLens-100K, and the real client binary.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;

use affinity_core::model::format;
use affinity_core::model::publish::Retention;
use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::similar_items_request::Mode;
use affinity_service::proto::{self, RecentItems};
use common::*;
use tonic::Code;

async fn client(server: &Server) -> RecommenderClient<tonic::transport::Channel> {
    RecommenderClient::connect(server.addr.clone()).await.expect("connect")
}

fn rec(user: &str, k: u32) -> proto::RecommendRequest {
    proto::RecommendRequest {
        subject: Some(Subject::UserId(user.to_string())),
        k,
        ..Default::default()
    }
}

fn ids(items: &[proto::ScoredItem]) -> Vec<String> {
    items.iter().map(|i| i.item_id.clone()).collect()
}

fn seen_by(user: &str) -> HashSet<String> {
    movielens().events.iter().filter(|e| e.user_id == user).map(|e| e.item_id.clone()).collect()
}

#[tokio::test]
async fn personalised_lists_differ_and_skip_seen_and_excluded_items() {
    let server = start_server(movielens_model()).await;
    let mut c = client(&server).await;
    let mut lists = HashSet::new();
    for user in ["1", "2", "3", "100", "405", "655"] {
        let r = c.recommend(rec(user, 10)).await.unwrap().into_inner();
        assert_eq!(r.items.len(), 10, "user {user}");
        assert_eq!(r.retrieval, proto::Retrieval::Exact as i32);
        let seen = seen_by(user);
        for item in &r.items {
            assert!(!seen.contains(&item.item_id), "user {user} got seen item {}", item.item_id);
            let reason = item.reason.as_ref().unwrap();
            assert_eq!(reason.kind, proto::reason::Kind::Personalized as i32);
        }
        let scores: Vec<f32> = r.items.iter().map(|i| i.score).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "scores sorted: {scores:?}");
        lists.insert(ids(&r.items));

        // Excluding the top three brings in the next items, still unseen.
        let excluded: Vec<String> = ids(&r.items)[..3].to_vec();
        let again = c
            .recommend(proto::RecommendRequest {
                exclude_item_ids: excluded.clone(),
                ..rec(user, 10)
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.items.len(), 10);
        for item in &again.items {
            assert!(!excluded.contains(&item.item_id));
            assert!(!seen.contains(&item.item_id));
        }
        assert_eq!(ids(&again.items)[..7], ids(&r.items)[3..]);
    }
    assert_eq!(lists.len(), 6, "every user gets a different list");
}

/// A model served through its HNSW indexes (as a large catalogue is) answers like the
/// exact one: retrieval says ANN, seen items stay out, and the lists mostly agree.
#[tokio::test]
async fn ann_served_model_agrees_with_exact_scoring() {
    let exact_server = start_server(movielens_model()).await;
    let ann_server = start_server(movielens_ann_model()).await;
    let (mut exact, mut ann) = (client(&exact_server).await, client(&ann_server).await);
    let (mut shared, mut total) = (0usize, 0usize);
    for user in ["1", "2", "3", "100", "405", "655", "13", "450"] {
        let want: HashSet<String> = ids(&exact.recommend(rec(user, 10)).await.unwrap().into_inner().items).into_iter().collect();
        let got = ann.recommend(rec(user, 10)).await.unwrap().into_inner();
        assert_eq!(got.retrieval, proto::Retrieval::Ann as i32, "user {user}");
        assert_eq!(got.items.len(), 10);
        let seen = seen_by(user);
        assert!(got.items.iter().all(|i| !seen.contains(&i.item_id)), "user {user} got a seen item");
        shared += got.items.iter().filter(|i| want.contains(&i.item_id)).count();
        total += 10;
    }
    assert!(shared * 10 >= total * 9, "ANN lists share {shared} of {total} items with exact");
    let similar = |mode: Mode| proto::SimilarItemsRequest {
        item_id: "1".into(),
        k: 10,
        mode: mode as i32,
        rules: None,
    };
    for mode in [Mode::Collaborative, Mode::Content, Mode::Blend] {
        let want = ids(&exact.similar_items(similar(mode)).await.unwrap().into_inner().items);
        let got = ids(&ann.similar_items(similar(mode)).await.unwrap().into_inner().items);
        assert_eq!(got.len(), 10, "{mode:?}");
        let overlap = got.iter().filter(|i| want.contains(i)).count();
        assert!(overlap >= 8, "{mode:?}: ANN shares {overlap}/10 with exact: {got:?} vs {want:?}");
    }
}

#[tokio::test]
async fn filters_apply_before_truncation() {
    let server = start_server(movielens_model()).await;
    let mut c = client(&server).await;
    let categories: HashMap<&str, &str> = movielens()
        .items
        .iter()
        .map(|i| (i.item_id.as_str(), i.category.as_str()))
        .collect();
    let r = c
        .recommend(proto::RecommendRequest {
            category: Some("Animation".into()),
            ..rec("1", 20)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.items.len(), 20);
    for item in &r.items {
        assert_eq!(categories[item.item_id.as_str()], "Animation");
    }
    // A rare category: fewer eligible items than k returns all of them, no more.
    let n_fantasy = categories.values().filter(|c| **c == "Fantasy").count();
    let r = c
        .recommend(proto::RecommendRequest {
            category: Some("Fantasy".into()),
            exclude_seen: Some(false),
            ..rec("1", 1000)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.items.len(), n_fantasy);
    // Including seen items lets a user's own history back in.
    let r = c
        .recommend(proto::RecommendRequest {
            exclude_seen: Some(false),
            ..rec("1", 50)
        })
        .await
        .unwrap()
        .into_inner();
    let seen = seen_by("1");
    assert!(r.items.iter().any(|i| seen.contains(&i.item_id)));
}

#[tokio::test]
async fn unknown_users_get_popular_items_and_sessions_are_personalised() {
    let server = start_server(movielens_model()).await;
    let mut c = client(&server).await;
    let r = c.recommend(rec("no-such-user", 5)).await.unwrap().into_inner();
    assert_eq!(r.items.len(), 5);
    assert_eq!(r.retrieval, proto::Retrieval::Popularity as i32);
    assert_eq!(r.items[0].reason.as_ref().unwrap().kind, proto::reason::Kind::Popular as i32);
    // Star Wars (50) is the most rated film in MovieLens-100K.
    assert_eq!(r.items[0].item_id, "50");

    let session = vec!["1".to_string(), "71".to_string(), "95".to_string()]; // Toy Story, Lion King, Aladdin
    let r = c
        .recommend(proto::RecommendRequest {
            subject: Some(Subject::RecentItems(RecentItems { item_ids: session.clone() })),
            k: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.items.len(), 10);
    assert!(r.items.iter().all(|i| !session.contains(&i.item_id)));
    assert_eq!(r.items[0].reason.as_ref().unwrap().kind, proto::reason::Kind::Personalized as i32);
}

#[tokio::test]
async fn content_neighbours_of_toy_story_share_a_genre() {
    let server = start_server(movielens_model()).await;
    let mut c = client(&server).await;
    let genres: HashMap<&str, HashSet<&str>> = movielens()
        .items
        .iter()
        .map(|i| {
            let g = i.tags.iter().map(String::as_str).filter(|t| !t.chars().all(|c| c.is_ascii_digit())).collect();
            (i.item_id.as_str(), g)
        })
        .collect();
    let toy_story = movielens().items.iter().find(|i| i.title == "Toy Story (1995)").unwrap();
    let r = c
        .similar_items(proto::SimilarItemsRequest {
            item_id: toy_story.item_id.clone(),
            k: 10,
            mode: Mode::Content as i32,
            rules: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.items.len(), 10);
    let mine = &genres[toy_story.item_id.as_str()];
    for item in &r.items {
        assert_ne!(item.item_id, toy_story.item_id);
        assert!(
            !genres[item.item_id.as_str()].is_disjoint(mine),
            "{} shares no genre with Toy Story",
            item.item_id
        );
    }
    for mode in [Mode::Collaborative, Mode::Blend, Mode::Unspecified] {
        let r = c
            .similar_items(proto::SimilarItemsRequest {
                item_id: toy_story.item_id.clone(),
                k: 10,
                mode: mode as i32,
                rules: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.items.len(), 10, "{mode:?}");
        assert!(r.items.iter().all(|i| i.item_id != toy_story.item_id));
    }
}

#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let server = start_server(movielens_model()).await;
    let mut c = client(&server).await;
    let sim = |item: &str, k: u32, mode: i32| proto::SimilarItemsRequest {
        item_id: item.into(),
        k,
        mode,
        rules: None,
    };
    let e = c.similar_items(sim("no-such-item", 10, 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("no-such-item"), "{}", e.message());
    for (req, field) in [
        (sim("", 10, 0), "item_id"),
        (sim("1", 0, 0), "k"),
        (sim("1", 1001, 0), "k"),
        (sim("1", 10, 42), "mode"),
    ] {
        let e = c.similar_items(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(field), "{} should name {field}", e.message());
    }
    for (req, field) in [
        (rec("", 10), "user_id"),
        (rec("1", 0), "k"),
        (rec("1", 1001), "k"),
        (
            proto::RecommendRequest {
                subject: None,
                k: 10,
                ..Default::default()
            },
            "subject",
        ),
        (
            proto::RecommendRequest {
                exclude_item_ids: vec![String::new()],
                ..rec("1", 10)
            },
            "exclude_item_ids",
        ),
    ] {
        let e = c.recommend(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(field), "{} should name {field}", e.message());
    }
    // k = 1000 is allowed.
    assert_eq!(c.recommend(rec("1", 1000)).await.unwrap().into_inner().items.len(), 1000);
    // Ids are bounded and never echoed whole: a 20 KB id is refused with a short message
    // the client can read (it used to overflow the status header), and an unknown id
    // within the limit is cut in NOT_FOUND's message.
    let huge = "x".repeat(20_000);
    for e in [
        c.similar_items(sim(&huge, 10, 0)).await.unwrap_err(),
        c.recommend(rec(&huge, 10)).await.unwrap_err(),
        c.recommend(proto::RecommendRequest {
            exclude_item_ids: vec![huge.clone()],
            ..rec("1", 10)
        })
        .await
        .unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        assert!(e.message().len() < 200 && e.message().contains("256 bytes"), "{}", e.message());
    }
    let e = c.similar_items(sim(&"y".repeat(250), 10, 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().len() < 200 && e.message().contains("(250 bytes)"), "{}", e.message());
    let info = c.model_info(proto::ModelInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.users, 943);
    assert_eq!(info.items, 1682);
    assert_eq!(info.events, 100_000);
    assert_eq!(info.format_version, format::FORMAT_VERSION);
}

#[tokio::test]
async fn batch_client_answers_in_input_order() {
    let server = start_server(movielens_model()).await;
    let mut c = client(&server).await;
    let users: Vec<String> = (1..=120).rev().map(|u| u.to_string()).chain(["not-a-user".to_string()]).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.txt");
    let mut text = String::new();
    for (n, u) in users.iter().enumerate() {
        text.push_str(u);
        text.push('\n');
        if n % 17 == 0 {
            text.push('\n'); // blank lines are ignored
        }
    }
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_affinity-client"))
        .args(["--addr", &server.addr, "--format", "tsv", "recommend", "--k", "10", "--concurrency", "16", "--users-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), users.len());
    for (line, user) in lines.iter().zip(&users) {
        let (u, items) = line.split_once('\t').unwrap();
        assert_eq!(u, user);
        let single = c.recommend(rec(user, 10)).await.unwrap().into_inner();
        assert_eq!(items, ids(&single.items).join(","));
    }

    // An RPC error names the user and fails the run.
    std::fs::write(&file, "1\n\n   \n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_affinity-client"))
        .args(["--addr", &server.addr, "--format", "tsv", "recommend", "--k", "0", "--users-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("user 1:"), "{stderr}");
}

fn refuses(model: &std::path::Path, expect_in_message: &str) {
    let (ok, stderr) = run_server_expecting_exit(model);
    assert!(!ok, "server accepted a bad model: {stderr}");
    assert!(stderr.contains(expect_in_message), "message should name {expect_in_message}: {stderr}");
    assert!(!stderr.contains("panicked"), "server panicked: {stderr}");
}

#[test]
fn missing_partial_or_corrupt_models_are_refused_naming_the_file() {
    let root = movielens_model();
    let version = format::resolve(root).unwrap();
    let dir = tempfile::tempdir().unwrap();

    refuses(&dir.path().join("nothing-here"), "nothing-here");

    let corrupt = dir.path().join("corrupt");
    copy_dir(&version, &corrupt);
    let f = corrupt.join("collab_items.f32");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    refuses(&corrupt, "collab_items.f32");

    let truncated = dir.path().join("truncated");
    copy_dir(&format::resolve(movielens_ann_model()).unwrap(), &truncated);
    let f = truncated.join("content.graph.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    refuses(&truncated, "content.graph.bin");

    let partial = dir.path().join("partial");
    copy_dir(&version, &partial);
    std::fs::remove_file(partial.join("users.bin")).unwrap();
    refuses(&partial, "users.bin");

    let newer = dir.path().join("newer");
    copy_dir(&version, &newer);
    let m = newer.join("manifest.json");
    let text = std::fs::read_to_string(&m).unwrap();
    let text = text.replacen(&format!("\"format_version\": {}", format::FORMAT_VERSION), "\"format_version\": 99", 1);
    std::fs::write(&m, text).unwrap();
    refuses(&newer, "manifest.json");

    let garbage = dir.path().join("garbage");
    copy_dir(&version, &garbage);
    std::fs::write(garbage.join("manifest.json"), "{not json").unwrap();
    refuses(&garbage, "manifest.json");

    // A model root whose `current` names a version that is gone.
    let dangling = dir.path().join("dangling");
    std::fs::create_dir_all(&dangling).unwrap();
    std::fs::write(dangling.join("current"), "20250101T000000Z-deadbeef\n").unwrap();
    refuses(&dangling, "20250101T000000Z-deadbeef");
}

#[tokio::test]
async fn demo_server_passes_the_client_smoke_check_from_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let smoke = |addr: &str| {
        Command::new(env!("CARGO_BIN_EXE_affinity-client"))
            .args(["--addr", addr, "smoke", "--wait-seconds", "30"])
            .output()
            .unwrap()
    };
    let server = start_server_with(&["--demo".as_ref()], Some(dir.path())).await;
    let out = smoke(&server.addr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("smoke: ok"), "{stdout}");
    assert!(dir.path().join("affinity-demo-model/current").is_file());
    drop(server);
    // A second run reuses the model it made.
    let server = start_server_with(&["--demo".as_ref()], Some(dir.path())).await;
    assert!(smoke(&server.addr).status.success());
    let versions = std::fs::read_dir(dir.path().join("affinity-demo-model"))
        .unwrap()
        .filter(|e| e.as_ref().is_ok_and(|e| format::is_version_name(&e.file_name().to_string_lossy())))
        .count();
    assert_eq!(versions, 1, "the second run reused the first run's model");
}

/// The quality the server returns is the quality `evaluate` reports: same model, same
/// test users, Recall@10 recomputed from the batch client's output.
#[tokio::test]
async fn served_quality_equals_evaluated_quality() {
    use affinity_core::data::{Dataset, TimeKind};
    use affinity_lab::eval;
    use affinity_lab::rank::Affinity;
    use affinity_core::params::TrainParams;
    use affinity_lab::split::{self, Protocol};
    use affinity_core::train::{train, NoProgress};

    let s = split::split(movielens().events.clone(), Protocol::Random, 42, TimeKind::Unix).unwrap();
    let fit_events: Vec<_> = s.train.iter().chain(&s.valid).cloned().collect();
    let target = split::target(Protocol::Random, &fit_events, &s.test);
    let data = Dataset {
        events: fit_events,
        items: movielens().items.clone(),
        ..Dataset::default()
    };
    let mut m = train(&data, TimeKind::Unix, &TrainParams::default(), &NoProgress);
    let evaluated = eval::score(&Affinity::new(&m), &m, &target, &[10])[0].recall;
    let root = tempfile::tempdir().unwrap();
    format::save(&mut m, root.path(), Retention::default()).unwrap();
    drop(m);

    let server = start_server(root.path()).await;
    let users_file = root.path().join("test-users.txt");
    let users: Vec<&String> = target.relevant.keys().collect();
    std::fs::write(&users_file, users.iter().map(|u| format!("{u}\n")).collect::<String>()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_affinity-client"))
        .args(["--addr", &server.addr, "--format", "tsv", "recommend", "--k", "10", "--users-file"])
        .arg(&users_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut total = 0.0;
    let mut n = 0usize;
    for line in stdout.lines() {
        let (user, items) = line.split_once('\t').unwrap();
        let relevant: HashSet<&str> = target.relevant[user].iter().map(String::as_str).collect();
        let hits = items.split(',').filter(|i| relevant.contains(i)).count();
        total += hits as f64 / relevant.len().min(10) as f64;
        n += 1;
    }
    assert_eq!(n, users.len());
    let served = total / n as f64;
    assert!((served - evaluated).abs() < 1e-6, "served Recall@10 {served} vs evaluated {evaluated}");
    assert!(served > 0.3, "Recall@10 {served} is implausibly low");
}

/// Server reflection answers in both protocol versions (v1alpha is what Python's
/// grpcio-reflection and older grpcurl speak).
#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = start_server(movielens_model()).await;
    let channel = affinity_service::client::connect(&server.addr).await.unwrap();

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut answers = alpha.server_reflection_info(futures::stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer {answer:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"affinity.v1.Recommender".to_string()), "{names:?}");

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut current = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let mut answers = current.server_reflection_info(futures::stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    assert!(format!("{answer:?}").contains("affinity.v1.Recommender"));
}

/// SIGTERM while the model is still loading ends the server at once, not after the load.
#[test]
fn shutdown_during_a_slow_model_load_exits_at_once() {
    let root = tempfile::tempdir().unwrap();
    let version = format::resolve(movielens_model()).unwrap();
    let copy = root.path().join(version.file_name().unwrap());
    copy_dir(&version, &copy);
    // A 1 GiB (sparse) file listed in the manifest: verifying it takes seconds (about 5 s
    // here; the server used to finish the load before honouring the signal).
    let big = std::fs::File::create(copy.join("padding.bin")).unwrap();
    big.set_len(1 << 30).unwrap();
    let manifest = copy.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["files"]["padding.bin"] = serde_json::json!({ "sha256": "0".repeat(64), "bytes": 1u64 << 30 });
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();

    let mut child = Command::new(server_bin())
        .args(["--listen", "127.0.0.1:0", "--model"])
        .arg(&copy)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let sent = std::time::Instant::now();
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("shutdown while the model was loading"), "{stderr}");
    assert!(took < std::time::Duration::from_millis(1500), "took {took:?} to stop");
}

#[tokio::test]
async fn repeat_policy_buy_again_lists_only_history_and_exclude_seen_overrides_it() {
    let server = start_server(movielens_model()).await;
    let mut c = client(&server).await;
    let seen = seen_by("1");
    let again = |exclude_seen: Option<bool>| proto::RecommendRequest {
        repeat_policy: proto::RepeatPolicy::BuyAgain as i32,
        exclude_seen,
        ..rec("1", 20)
    };
    let r = c.recommend(again(None)).await.unwrap().into_inner();
    assert_eq!(r.items.len(), 20);
    for item in &r.items {
        assert!(seen.contains(&item.item_id), "buy again returned {} the user never had", item.item_id);
        assert_eq!(item.reason.as_ref().unwrap().kind, proto::reason::Kind::Repeat as i32);
    }
    // An explicit exclude_seen wins over the policy (compatibility).
    let r = c.recommend(again(Some(true))).await.unwrap().into_inner();
    assert!(r.items.iter().all(|i| !seen.contains(&i.item_id)));
    // MovieLens has no repeat ratings: the trained policy excludes what users had.
    let trained = proto::RecommendRequest {
        repeat_policy: proto::RepeatPolicy::Trained as i32,
        ..rec("1", 20)
    };
    let r = c.recommend(trained).await.unwrap().into_inner();
    assert!(r.items.iter().all(|i| !seen.contains(&i.item_id)));
    let bad = proto::RecommendRequest {
        repeat_policy: 99,
        ..rec("1", 20)
    };
    let e = c.recommend(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("repeat_policy"), "{}", e.message());
}

#[tokio::test]
async fn business_rules_hold_over_grpc_exact_and_ann() {
    let category: HashMap<String, String> = movielens().items.iter().map(|i| (i.item_id.clone(), i.category.clone())).collect();
    for model in [movielens_model(), movielens_ann_model()] {
        let server = start_server(model).await;
        let mut c = client(&server).await;
        let ruled = |rules: proto::Rules| proto::RecommendRequest { rules: Some(rules), ..rec("1", 10) };
        // A selective filter still fills the list.
        let docs = c
            .recommend(ruled(proto::Rules { include_categories: vec!["Documentary".into()], ..Default::default() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(docs.items.len(), 10);
        assert!(docs.items.iter().all(|i| category[&i.item_id] == "Documentary"));
        assert_eq!(docs.shortfall, proto::Shortfall::None as i32);
        // At most two per category, still ten items, none seen.
        let diverse = c.recommend(ruled(proto::Rules { max_per_category: 2, ..Default::default() })).await.unwrap().into_inner();
        assert_eq!(diverse.items.len(), 10);
        let mut per: HashMap<&str, usize> = HashMap::new();
        for i in &diverse.items {
            *per.entry(category[&i.item_id].as_str()).or_default() += 1;
        }
        assert!(per.values().all(|&n| n <= 2), "{per:?}");
        assert!(diverse.items.iter().all(|i| !seen_by("1").contains(&i.item_id)));
        // A promoted item (unseen by the user) goes first.
        let plain = c.recommend(rec("1", 10)).await.unwrap().into_inner();
        let promoted = plain.items[9].item_id.clone();
        let boosted = c
            .recommend(ruled(proto::Rules { promoted: vec![proto::Promotion { item_id: promoted.clone(), boost: 2.0 }], ..Default::default() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(boosted.items[0].item_id, promoted);
        // A filter nothing passes: an empty list, said so, not an error.
        let none = c.recommend(ruled(proto::Rules { min_price: Some(1.0), ..Default::default() })).await.unwrap().into_inner();
        assert!(none.items.is_empty());
        assert_eq!(none.shortfall, proto::Shortfall::Filters as i32);
        // Contradictory rules name their field.
        let e = c
            .recommend(ruled(proto::Rules { min_price: Some(10.0), max_price: Some(5.0), ..Default::default() }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("rules.max_price"), "{}", e.message());
        let e = c.recommend(ruled(proto::Rules { mmr_lambda: Some(2.0), ..Default::default() })).await.unwrap_err();
        assert!(e.code() == Code::InvalidArgument && e.message().contains("rules.mmr_lambda"), "{}", e.message());
        // Similar items under rules.
        let similar = c
            .similar_items(proto::SimilarItemsRequest {
                item_id: "1".into(),
                k: 10,
                mode: Mode::Blend as i32,
                rules: Some(proto::Rules { exclude_categories: vec!["Animation".into(), "Comedy".into()], max_per_category: 3, ..Default::default() }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(similar.items.len(), 10);
        assert!(similar.items.iter().all(|i| !["Animation", "Comedy"].contains(&category[&i.item_id].as_str())));
    }
}

#[tokio::test]
async fn segment_popularity_and_cold_start_by_attributes_over_grpc() {
    let server = start_server(movielens_model()).await;
    let mut c = client(&server).await;
    let attrs = proto::UserAttributes { age: Some("21".into()), gender: Some("F".into()), ..Default::default() };
    let popular = c
        .popular(proto::PopularRequest { segment: Some(attrs.clone()), k: 10, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let direct = movielens().users.iter().filter(|u| u.gender == "F" && (18..=24).contains(&u.age.parse::<u32>().unwrap_or(0))).count();
    assert_eq!(popular.segment_users as usize, direct);
    assert_eq!(popular.items.len(), 10);
    let store = c.popular(proto::PopularRequest { k: 10, ..Default::default() }).await.unwrap().into_inner();
    assert_ne!(ids(&popular.items), ids(&store.items), "a segment has its own list");
    // A new visitor with those attributes gets the segment's list, saying so.
    let cold = c
        .recommend(proto::RecommendRequest { attributes: Some(attrs), ..rec("first-visit", 10) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&cold.items), ids(&popular.items));
    assert_eq!(cold.items[0].reason.as_ref().unwrap().text, "popular with gender F, age 18-24");
    // A bad age names its field.
    let bad = proto::UserAttributes { age: Some("eighteen".into()), ..Default::default() };
    let e = c.popular(proto::PopularRequest { segment: Some(bad.clone()), k: 10, ..Default::default() }).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("segment.age"), "{}", e.message());
    let e = c.recommend(proto::RecommendRequest { attributes: Some(bad), ..rec("x", 10) }).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("attributes.age"), "{}", e.message());
}

#[tokio::test]
async fn list_users_pages_through_a_segment_and_filters_by_stage() {
    let server = start_server(movielens_model()).await;
    let mut c = client(&server).await;
    let segment = proto::UserAttributes { gender: Some("F".into()), ..Default::default() };
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let r = c
            .list_users(proto::ListUsersRequest { segment: Some(segment.clone()), page_size: 50, page_token: token.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert!(r.users.len() <= 50);
        all.extend(r.users.into_iter().map(|u| u.user_id));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    let direct: HashSet<String> = movielens().users.iter().filter(|u| u.gender == "F").map(|u| u.user_id.clone()).collect();
    assert_eq!(all.len(), direct.len());
    assert_eq!(all.into_iter().collect::<HashSet<_>>(), direct);
    let churned = c
        .list_users(proto::ListUsersRequest { stage: Some("churned".into()), page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!churned.users.is_empty() && churned.users.iter().all(|u| u.stage == "churned"));
    let e = c.list_users(proto::ListUsersRequest { stage: Some("asleep".into()), ..Default::default() }).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("stage"), "{}", e.message());
}

#[tokio::test]
async fn windowed_popularity_and_trending_over_grpc() {
    let server = start_server(movielens_model()).await;
    let mut c = client(&server).await;
    let month = c
        .popular(proto::PopularRequest { k: 10, window: proto::Window::Window30Days as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(month.items.len(), 10);
    assert!(month.items.iter().all(|i| i.reason.as_ref().unwrap().text == "popular with all users in the last 30 days"));
    let all = c.popular(proto::PopularRequest { k: 10, ..Default::default() }).await.unwrap().into_inner();
    assert_ne!(ids(&month.items), ids(&all.items), "the last month is not all time");
    let trending = c.trending(proto::TrendingRequest { k: 10, ..Default::default() }).await.unwrap().into_inner();
    assert!(trending.items.iter().all(|i| i.reason.as_ref().unwrap().text == "trending"));
    let bad = c.popular(proto::PopularRequest { k: 10, window: 9, ..Default::default() }).await.unwrap_err();
    assert!(bad.code() == Code::InvalidArgument && bad.message().contains("window"), "{}", bad.message());
}

#[tokio::test]
async fn item_stats_over_grpc_match_a_direct_count() {
    let server = start_server(movielens_model()).await;
    let mut c = client(&server).await;
    let end = movielens().events.iter().filter_map(|e| e.timestamp).max().unwrap();
    let from = end - 30 * 86_400;
    let direct = movielens().events.iter().filter(|e| e.item_id == "50" && e.timestamp.is_some_and(|t| t > from)).count() as u32;
    let s = c
        .get_item_stats(proto::GetItemStatsRequest { item_id: "50".into(), window: proto::Window::Window30Days as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s.window_days, s.event_counts["rating"]), (30, direct));
    assert!(s.ctr.is_none(), "no impressions in MovieLens");
    let e = c.get_item_stats(proto::GetItemStatsRequest { item_id: "nope".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}
