//! Tests of the real `affinity-trainer` binary on the real data sets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_affinity-trainer"))
        .args(args)
        .output()
        .expect("run affinity-trainer")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "trainer failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dataset(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets").join(name);
    assert!(dir.exists(), "data set missing: {} (tests need ../shared/datasets)", dir.display());
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn import(source: &str, input: &Path, out: &Path) {
    ok(&trainer(&["import", source, "--input", s(input), "--out", s(out)]));
}

/// Recall@10 of `name` in an evaluate JSON report.
fn recall_at_10(report: &serde_json::Value, name: &str) -> f64 {
    let model = report["models"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap();
    let m = model["metrics"].as_array().unwrap().iter().find(|m| m["k"] == 10).unwrap();
    m["recall"].as_f64().unwrap()
}

fn evaluate(events: &Path, json: &Path, baselines: &str) -> serde_json::Value {
    let out = trainer(&[
        "evaluate", "--events", s(events), "--protocol", "random", "--seed", "42", "--k", "10,20",
        "--baselines", baselines, "--json", s(json),
    ]);
    let table = ok(&out);
    assert!(table.contains("ItemKNN") && table.contains("affinity") && table.contains("Pop"), "{table}");
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

#[test]
fn movielens_import_train_and_evaluate_beats_itemknn() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ml");
    import("movielens", &dataset("movielens-100k"), &data);
    let events = std::fs::read_to_string(data.join("events.csv")).unwrap();
    assert_eq!(events.lines().count(), 100_001);
    assert!(events.starts_with("user_id,item_id,event,timestamp,value\n196,242,rating,881250949,3\n"));
    let items = std::fs::read_to_string(data.join("items.csv")).unwrap();
    assert!(items.contains("1,Toy Story (1995),Animation,,,Animation|Children's|Comedy|1995,true"), "{}", &items[..300]);
    // u.item is Latin-1: accented titles must come through intact.
    assert!(items.contains("Misérables"), "Latin-1 titles decoded");
    let users = std::fs::read_to_string(data.join("users.csv")).unwrap();
    assert!(users.contains("\n1,8,24,M,technician,\n"), "region = first zip digit");

    let root = dir.path().join("models");
    // Force the ANN path so this model carries its HNSW indexes.
    let ann_params = dir.path().join("ann.json");
    std::fs::write(&ann_params, r#"{"exact_max_items": 0}"#).unwrap();
    let out = ok(&trainer(&[
        "train", "--events", s(&data.join("events.csv")), "--items", s(&data.join("items.csv")),
        "--users", s(&data.join("users.csv")), "--out", s(&root), "--keep", "2", "--params", s(&ann_params), "--no-tune",
    ]));
    assert!(out.contains("943 users, 1682 items, 100000 events"), "{out}");
    let current = std::fs::read_to_string(root.join("current")).unwrap();
    let version = root.join(current.trim());
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(version.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["time_kind"], "unix");
    assert_eq!(manifest["counts"]["items"], 1682);
    for file in ["items.bin", "users.bin", "collab_items.f32", "content.f32", "collab_mips.graph.bin", "content.graph.bin"] {
        assert!(manifest["files"][file]["sha256"].as_str().unwrap().len() == 64, "{file} listed with checksum");
    }
    // Retraining twice more (back to back: version names sort within a second) keeps
    // only the two newest versions and moves `current`.
    let mut notes = Vec::new();
    for _ in 0..2 {
        let out = trainer(&["train", "--events", s(&data.join("events.csv")), "--out", s(&root), "--keep", "2", "--prune-grace", "0", "--tune-budget", "3"]);
        ok(&out);
        notes.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    assert!(notes[0].contains("tuned in") && notes[0].contains("3 fits"), "{}", notes[0]);
    let versions: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(versions.len(), 2);
    let latest = std::fs::read_to_string(root.join("current")).unwrap();
    assert_ne!(latest, current);
    // With defaults, a catalogue this small is scored exactly and carries no index.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(latest.trim()).join("manifest.json")).unwrap()).unwrap();
    let files: Vec<&String> = manifest["files"].as_object().unwrap().keys().collect();
    assert!(files.iter().all(|f| !f.contains("hnsw")) && files.len() >= 7, "{files:?}");
    // By default `train` searched on a slice of its own input and recorded what it did.
    let tuning = &manifest["tuning"];
    assert_eq!(tuning["fits"], 3, "{tuning}");
    assert_eq!(tuning["stopped_by"], "budget");
    assert_eq!(tuning["valid_users"], 943);
    assert!(tuning["validation"].as_str().unwrap().contains("latest by time"), "MovieLens has timestamps: {tuning}");
    assert!(tuning["best_ndcg10"].as_f64().unwrap() >= tuning["given_ndcg10"].as_f64().unwrap());
    // The same input and seed choose the same parameters.
    let first: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(versions.iter().map(|v| v.path()).find(|p| !p.ends_with(latest.trim())).unwrap().join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(first["params"], manifest["params"]);

    let report = evaluate(&data.join("events.csv"), &dir.path().join("ml.json"), "pop,itemknn,ease");
    assert_eq!(report["protocol"], "random");
    assert_eq!(report["seed"], 42);
    let (affinity, knn, pop) = (recall_at_10(&report, "affinity"), recall_at_10(&report, "ItemKNN"), recall_at_10(&report, "Pop"));
    assert!(affinity >= knn, "affinity Recall@10 {affinity} < ItemKNN {knn}");
    assert!(knn > pop, "ItemKNN {knn} should beat Pop {pop}");
    let ease = recall_at_10(&report, "EASE");
    assert!(ease > knn, "EASE {ease} should beat ItemKNN {knn}");

    // The same split written to files scores the same.
    let split_dir = dir.path().join("split");
    ok(&trainer(&["split", "--events", s(&data.join("events.csv")), "--protocol", "random", "--seed", "42", "--out", s(&split_dir)]));
    for f in ["train.csv", "valid.csv", "test.csv", "split.json"] {
        assert!(split_dir.join(f).is_file(), "{f}");
    }
    let json = dir.path().join("ml-split.json");
    ok(&trainer(&["evaluate", "--split", s(&split_dir), "--baselines", "pop", "--exact", "--json", s(&json)]));
    let from_files: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(recall_at_10(&from_files, "Pop"), pop, "same split, same Pop");
    let (exact, ann) = (recall_at_10(&from_files, "affinity-exact"), recall_at_10(&from_files, "affinity-ann"));
    assert!((exact - ann).abs() <= 0.01 * exact, "ANN {ann} within 1% of exact {exact}");
}

#[test]
fn lastfm_evaluate_beats_itemknn() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("lastfm");
    import("lastfm", &dataset("lastfm-hetrec"), &data);
    let social = std::fs::read_to_string(data.join("social.csv")).unwrap();
    assert_eq!(social.lines().count(), 25_434 + 1);
    // EASE on 17.6k items needs ~2.5 GB and a minute: benchmarks only.
    let report = evaluate(&data.join("events.csv"), &dir.path().join("lastfm.json"), "pop,itemknn");
    let (affinity, knn) = (recall_at_10(&report, "affinity"), recall_at_10(&report, "ItemKNN"));
    assert!(affinity >= knn, "affinity Recall@10 {affinity} < ItemKNN {knn}");

    // The friendships go into the model, with a social weight the search chose.
    let root = dir.path().join("models");
    // And a community of listeners 2 to 30.
    let communities = dir.path().join("communities.csv");
    std::fs::write(&communities, format!("user_id,community_id\n{}", (2..=30).map(|u| format!("{u},indie\n")).collect::<String>())).unwrap();
    let out = trainer(&[
        "train", "--events", s(&data.join("events.csv")), "--social", s(&data.join("social.csv")), "--communities", s(&communities), "--out", s(&root), "--tune-budget", "2",
    ]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("social graph: 25434 edge(s)") && err.contains("social weight"), "{err}");
    let current = std::fs::read_to_string(root.join("current")).unwrap();
    assert!(root.join(current.trim()).join("social.bin").is_file() && root.join(current.trim()).join("influence.bin").is_file());
    let m = affinity_core::model::format::load(&root).unwrap();
    let indie = m.communities().index("indie").expect("the community is in the model");
    assert_eq!(m.communities().size(indie), 29);
    // Evaluate takes the communities too: trained with them, and a row without the
    // social signals (communities' picks included) on the same model.
    let json = dir.path().join("communities.json");
    ok(&trainer(&["evaluate", "--events", s(&data.join("events.csv")), "--communities", s(&communities), "--baselines", "pop", "--json", s(&json)]));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let (with, without) = (recall_at_10(&report, "affinity"), recall_at_10(&report, "affinity-no-social"));
    assert!(with > 0.1 && without > 0.1, "{with} / {without}");
    // A bad membership stops training naming the file and line.
    std::fs::write(&communities, "user_id,community_id\n2,indie\n3,\n").unwrap();
    let out = trainer(&["train", "--events", s(&data.join("events.csv")), "--communities", s(&communities), "--out", s(&root), "--tune-budget", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("communities.csv:3:") && err.contains("community_id"), "{err}");
    let out = trainer(&["evaluate", "--events", s(&data.join("events.csv")), "--communities", s(&communities), "--baselines", "pop"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("communities.csv:3:"), "{err}");
    // A bad edge stops training naming the file and line.
    let bad = dir.path().join("bad-social.csv");
    std::fs::write(&bad, "user_id,other_id,kind,weight\n2,3,friend,1\n2,4,follow,-2\n").unwrap();
    let out = trainer(&["train", "--events", s(&data.join("events.csv")), "--social", s(&bad), "--out", s(&root), "--tune-budget", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad-social.csv:3:") && err.contains("weight: must be positive"), "{err}");
}

#[test]
fn other_importers_produce_canonical_files() {
    let dir = tempfile::tempdir().unwrap();
    let ft = dir.path().join("filmtrust");
    import("filmtrust", &dataset("filmtrust"), &ft);
    let events = std::fs::read_to_string(ft.join("events.csv")).unwrap();
    assert_eq!(events.lines().count(), 35_497 + 1);
    assert!(events.contains("\n1,1,rating,,2\n"));
    assert!(std::fs::read_to_string(ft.join("social.csv")).unwrap().contains("\n2,966,follow,1\n"));

    let seq = dir.path().join("beauty");
    import("sequence", &dataset("amazon-beauty").join("Beauty.txt"), &seq);
    let events = std::fs::read_to_string(seq.join("events.csv")).unwrap();
    assert!(events.contains("\n1,1,purchase,1,\n1,2,purchase,2,\n"));
    assert_eq!(events.lines().count(), 198_502 + 1);

    // Sequences have order-only timestamps: leave-one-out works, temporal is refused.
    let split_dir = dir.path().join("beauty-loo");
    let out = ok(&trainer(&["split", "--events", s(&seq.join("events.csv")), "--protocol", "loo", "--out", s(&split_dir)]));
    assert!(out.contains("test 22363 events"), "{out}");
    let out = trainer(&["split", "--events", s(&seq.join("events.csv")), "--protocol", "temporal", "--out", s(&split_dir)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("temporal needs unix timestamps"));
}

#[test]
fn malformed_rows_stop_training_naming_file_and_line_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.csv");
    let mut text = String::from("user_id,item_id,event,timestamp,value\n");
    for u in 0..20 {
        for i in 0..6 {
            text.push_str(&format!("u{u},i{},view,,\n", (u + i) % 15));
        }
    }
    text.push_str("u1,i1,teleport,,\n"); // line 122
    text.push_str("u2,\"bad,id\",view,,\n");
    std::fs::write(&events, text).unwrap();
    let root = dir.path().join("models");
    let out = trainer(&["train", "--events", s(&events), "--out", s(&root)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:122:", events.display())), "{err}");
    assert!(err.contains("teleport"), "{err}");
    assert!(!root.join("current").exists(), "nothing published");

    let out = trainer(&["train", "--events", s(&events), "--out", s(&root), "--skip-invalid"]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipped 2 invalid row(s)"), "{err}");
    assert!(root.join("current").exists());

    let out = trainer(&["train", "--events", s(&dir.path().join("missing.csv")), "--out", s(&root)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.csv"));

    // Too little data to hold a validation slice out, or no budget: train with the
    // parameters as given and say so, never fail for that.
    let tiny = dir.path().join("tiny.csv");
    std::fs::write(&tiny, "user_id,item_id,event,timestamp,value\na,x,view,,\na,y,view,,\nb,x,view,,\n").unwrap();
    let out = trainer(&["train", "--events", s(&tiny), "--out", s(&root)]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("trained with the parameters as given: too little data"));
    let out = trainer(&["train", "--events", s(&events), "--out", s(&root), "--skip-invalid", "--tune-budget", "0"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("trained with the parameters as given: the tuning budget is 0"));
}

#[test]
fn inputs_no_model_could_come_from_are_refused_before_anything_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let events = small_events(dir.path());
    let root = dir.path().join("models");
    let refused = |args: &[&str], says: &str| {
        let out = trainer(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!root.join("current").exists(), "nothing published");
    };
    // Only impressions: nothing to train on.
    let shown = dir.path().join("shown.csv");
    std::fs::write(&shown, "user_id,item_id,event,timestamp,value\nu1,i1,impression,1700000000,\nu2,i2,impression,1700000001,\n").unwrap();
    refused(&["train", "--events", s(&shown), "--out", s(&root)], "all 2 are impressions");
    // A placeholder date far ahead would be every other event's "now".
    let ahead = dir.path().join("ahead.csv");
    std::fs::write(&ahead, "user_id,item_id,event,timestamp,value\nu1,i1,view,1700000000,\nu2,i2,view,1700000001,\nu3,i1,view,9999999999,\n").unwrap();
    refused(&["train", "--events", s(&ahead), "--out", s(&root), "--no-tune"], "1 event(s) are stamped more than a day after now");
    // A misspelt parameter, or one no model can be built with.
    for (body, says) in [
        (r#"{"als": {"factor": 8}}"#, "unknown parameter `als.factor`"),
        (r#"{"recnet_events": 3}"#, "unknown parameter `recnet_events`"),
        (r#"{"als": {"factors": 0}}"#, "als.factors must be at least 1"),
        (r#"{"content": {"dim": 0}}"#, "content.dim must be at least 1"),
    ] {
        let params = dir.path().join("params.json");
        std::fs::write(&params, body).unwrap();
        refused(&["train", "--events", s(&events), "--out", s(&root), "--params", s(&params), "--no-tune"], says);
    }
    // Event kinds' weights are a map of the user's own keys.
    let params = dir.path().join("params.json");
    std::fs::write(&params, r#"{"weights": {"event_weights": {"view": 2.0}}, "als": {"factors": 8}}"#).unwrap();
    ok(&trainer(&["train", "--events", s(&events), "--out", s(&root), "--params", s(&params), "--no-tune"]));
    let out = trainer(&["evaluate", "--events", s(&events), "--k", "0"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--k"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Hit rate at 10 of `name` in an evaluate JSON report.
fn hr_at_10(report: &serde_json::Value, name: &str) -> f64 {
    let model = report["models"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap();
    model["metrics"].as_array().unwrap().iter().find(|m| m["k"] == 10).unwrap()["hr"].as_f64().unwrap()
}

#[test]
fn beauty_leave_one_out_uses_sequence_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("beauty");
    import("sequence", &dataset("amazon-beauty").join("Beauty.txt"), &data);
    let params = dir.path().join("params.json");
    std::fs::write(&params, r#"{"sequence": {"blend": 0.3}}"#).unwrap();
    let json = dir.path().join("beauty.json");
    ok(&trainer(&[
        "evaluate", "--events", s(&data.join("events.csv")), "--protocol", "loo", "--k", "10",
        "--baselines", "pop,itemknn", "--params", s(&params), "--json", s(&json),
    ]));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["protocol"], "loo");
    assert_eq!(report["split_sizes"]["test_users"], 22_363);
    let (affinity, knn) = (hr_at_10(&report, "affinity"), hr_at_10(&report, "ItemKNN"));
    assert!(affinity > knn, "affinity HR@10 {affinity} should beat ItemKNN {knn} on next-item prediction");
}

#[test]
fn tune_never_reads_the_test_part_and_its_output_feeds_train_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ml");
    import("movielens", &dataset("movielens-100k"), &data);
    let split_dir = dir.path().join("split");
    ok(&trainer(&["split", "--events", s(&data.join("events.csv")), "--protocol", "random", "--seed", "7", "--out", s(&split_dir)]));
    // Hide the test part: tuning must not need it.
    let test = split_dir.join("test.csv");
    let hidden = dir.path().join("test.csv.hidden");
    std::fs::rename(&test, &hidden).unwrap();
    let params = dir.path().join("params.json");
    let baselines = dir.path().join("baselines.json");
    let trials = dir.path().join("trials.json");
    let out = ok(&trainer(&[
        "tune", "--split", s(&split_dir), "--trials", "3", "--baselines", "itemknn", "--out", s(&params),
        "--baselines-out", s(&baselines), "--json", s(&trials),
    ]));
    assert!(out.contains("tuned on 943 validation users"), "{out}");
    let t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&trials).unwrap()).unwrap();
    let t = t.as_array().unwrap();
    let fits = |system: &str| {
        let f: std::collections::BTreeSet<u64> = t.iter().filter(|x| x["system"] == system).map(|x| x["fit"].as_u64().unwrap()).collect();
        f.len()
    };
    assert_eq!(fits("affinity"), 3);
    assert_eq!(fits("ItemKNN"), 3, "same budget (fits) for the baseline");
    // Each fitted affinity model is also scored with every blend of the sweep.
    assert_eq!(t.iter().filter(|x| x["system"] == "affinity").count(), 3 * affinity_lab::tune::BLEND_SWEEP.len());
    let best = t.iter().filter(|x| x["system"] == "affinity").map(|x| x["valid_ndcg10"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(best > 0.1, "validation NDCG@10 {best}");
    std::fs::rename(&hidden, &test).unwrap();

    // The chosen parameters are used and recorded by train.
    let root = dir.path().join("models");
    ok(&trainer(&["train", "--events", s(&data.join("events.csv")), "--params", s(&params), "--out", s(&root), "--no-tune"]));
    let version = std::fs::read_to_string(root.join("current")).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join(version.trim()).join("manifest.json")).unwrap()).unwrap();
    let chosen: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&params).unwrap()).unwrap();
    assert_eq!(manifest["params"], chosen);
    let json = dir.path().join("eval.json");
    ok(&trainer(&[
        "evaluate", "--split", s(&split_dir), "--params", s(&params), "--baselines", "itemknn",
        "--baseline-params", s(&baselines), "--json", s(&json),
    ]));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let knn = report["models"].as_array().unwrap().iter().find(|m| m["name"] == "ItemKNN").unwrap();
    let tuned: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&baselines).unwrap()).unwrap();
    assert_eq!(knn["params"]["neighbours"], tuned["itemknn_neighbours"]);
}

/// The version a successful `train` reports publishing.
fn published_version(out: &Output) -> String {
    let stdout = ok(out);
    stdout
        .split_whitespace()
        .skip_while(|w| *w != "model")
        .nth(1)
        .unwrap_or_else(|| panic!("no version in {stdout}"))
        .to_string()
}

fn small_events(dir: &Path) -> PathBuf {
    let events = dir.join("events.csv");
    let mut text = String::from("user_id,item_id,event,timestamp,value\n");
    for u in 0..30 {
        for i in 0..8 {
            text.push_str(&format!("u{u},i{},view,{},\n", (u * 3 + i) % 40, i));
        }
    }
    std::fs::write(&events, text).unwrap();
    events
}

#[test]
fn parallel_trainers_always_leave_a_loadable_current() {
    let dir = tempfile::tempdir().unwrap();
    let events = small_events(dir.path());
    for round in 0..20 {
        let root = dir.path().join(format!("r{round}"));
        let args = ["train", "--events", s(&events), "--out", s(&root), "--keep", "1", "--prune-grace", "0", "--no-tune"];
        let spawn = || Command::new(env!("CARGO_BIN_EXE_affinity-trainer")).args(args).output();
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(spawn);
            let b = scope.spawn(spawn);
            (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
        });
        let versions = [published_version(&a), published_version(&b)];
        let current = std::fs::read_to_string(root.join("current")).unwrap().trim().to_string();
        affinity_core::model::format::load(&root).unwrap_or_else(|e| panic!("round {round}: current does not load: {e}"));
        for v in &versions {
            assert!(*v == current || !root.join(v).exists(), "round {round}: {v} neither current nor pruned");
        }
        assert!(versions.contains(&current), "round {round}: current {current} is not one of {versions:?}");
        let leftovers: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(".tmp-") || n.starts_with(".current"))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: left behind {leftovers:?}");
    }
}

#[test]
fn abandoned_staging_directories_are_removed_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let events = small_events(dir.path());
    let root = dir.path().join("models");
    // A trainer killed mid-write: its staging directory, its lock no longer held.
    let dead = root.join(".tmp-20200101T000000Z-0000dead");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join("items.bin"), vec![0u8; 1024]).unwrap();
    std::fs::write(root.join(".tmp-20200101T000000Z-0000dead.lock"), b"").unwrap();
    // A trainer still writing: it holds the lock beside its directory.
    let live = root.join(".tmp-20200101T000001Z-00000a11");
    std::fs::create_dir_all(&live).unwrap();
    let lock = std::fs::File::create(root.join(".tmp-20200101T000001Z-00000a11.lock")).unwrap();
    lock.lock().unwrap();
    // An old version the grace period protects.
    ok(&trainer(&["train", "--events", s(&events), "--out", s(&root), "--keep", "1", "--no-tune"]));
    let first = std::fs::read_to_string(root.join("current")).unwrap();
    ok(&trainer(&["train", "--events", s(&events), "--out", s(&root), "--keep", "1", "--no-tune"]));
    assert!(!dead.exists(), "the dead writer's directory is removed");
    assert!(!root.join(".tmp-20200101T000000Z-0000dead.lock").exists());
    assert!(live.exists(), "a directory whose writer holds its lock is kept");
    assert!(root.join(first.trim()).exists(), "a version within the grace period is not pruned");
    drop(lock);
}

#[test]
fn train_reads_a_server_event_log_and_records_its_position() {
    use affinity_core::data::{Event, EventKind};
    use affinity_eventlog::{Context, Entry, EventLog, LogOptions, LoggedEvent};
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("events");
    let mut log = EventLog::open(&log_dir, LogOptions::default()).unwrap();
    let mut entries: Vec<Entry> = (0..59u32)
        .map(|n| {
            Entry::Event(LoggedEvent {
                event: Event::new(format!("u{}", n % 12), format!("i{}", (n * 7) % 19), EventKind::View, Some(1_700_000_000 + i64::from(n))),
                event_id: None,
                context: Context::default(),
            })
        })
        .collect();
    // A catalogue entry written while serving: an item nobody has acted on yet.
    let new_item = affinity_core::data::Item {
        category: "garden".into(),
        title: "Steel rake".into(),
        ..affinity_core::data::Item::bare("rake")
    };
    entries.push(Entry::Item(new_item.clone()));
    // Social edges changed while serving: two added, one added then taken away.
    let social = |a: &str, b: &str, kind, removed| {
        use affinity_core::data::SocialEdge;
        Entry::Social(affinity_eventlog::SocialChange { edge: SocialEdge { user_id: a.into(), other_id: b.into(), kind, weight: 1.0 }, removed })
    };
    use affinity_core::data::SocialKind::{Follow, Friend};
    entries.extend([social("u0", "u1", Friend, false), social("u2", "u3", Follow, false), social("u4", "u5", Friend, false), social("u5", "u4", Friend, true)]);
    // And memberships: u0 joins, u1 joins and leaves.
    let member = |u: &str, removed| {
        let membership = affinity_core::data::Membership { user_id: u.into(), community_id: "club".into() };
        Entry::Membership(affinity_eventlog::MembershipChange { membership, removed })
    };
    entries.extend([member("u0", false), member("u1", false), member("u1", true)]);
    log.append(&entries).unwrap();
    log.sync().unwrap();
    let root = dir.path().join("models");
    // The log alone, while its writer still holds it (a live server's log is read as is).
    let out = ok(&trainer(&["train", "--events-log", s(&log_dir), "--out", s(&root), "--no-tune"]));
    assert!(out.contains("12 users"), "{out}");
    let version = std::fs::read_to_string(root.join("current")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join(version.trim()).join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["log_position"], 67);
    let m = affinity_core::model::format::load(&root).unwrap();
    let contacts = |m: &affinity_core::model::Model, u: &str| m.contacts_of(m.user_index(u).unwrap()).iter().map(|c| m.user_ids()[c.user as usize].clone()).collect::<Vec<_>>();
    assert_eq!((contacts(&m, "u0"), contacts(&m, "u1"), contacts(&m, "u2")), (vec!["u1".to_string()], vec!["u0".to_string()], vec!["u3".to_string()]));
    assert!(contacts(&m, "u4").is_empty() && contacts(&m, "u5").is_empty(), "the friendship was ended");
    let club = m.communities().index("club").expect("the logged community");
    assert_eq!(m.communities().size(club), 1);
    assert!(m.communities().contains(club, m.user_index("u0").unwrap()));
    let rake = m.item_index("rake").expect("the logged catalogue entry is in the model");
    assert_eq!(m.item(rake), &new_item);
    assert!(m.has_content(rake) && !m.has_collab(rake));
    drop(log);
    // A deleted user stays out of every input, the CSV included.
    let mut deleted = affinity_eventlog::DeletedUsers::load(&log_dir).unwrap();
    deleted.add("u3").unwrap();
    let csv = dir.path().join("more.csv");
    std::fs::write(&csv, "user_id,item_id,event,timestamp,value\nu3,i1,view,,\nu99,i1,view,,\nu99,i2,view,,\n").unwrap();
    let out = trainer(&["train", "--events", s(&csv), "--events-log", s(&log_dir), "--out", s(&root), "--no-tune"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("dropped 6 event(s) of deleted users"), "{err}");
    let m = affinity_core::model::format::load(&root).unwrap();
    assert!(m.user_index("u3").is_none() && m.user_index("u99").is_some() && m.user_index("u4").is_some());
    assert!(contacts(&m, "u2").is_empty(), "edges to a deleted user are dropped");
    assert_eq!(contacts(&m, "u0"), vec!["u1".to_string()]);
    // Neither --events nor --events-log: a clear CLI error.
    let none = trainer(&["train", "--out", s(&root)]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("--events"), "{}", String::from_utf8_lossy(&none.stderr));
}
