//! Criterion micro-benchmarks of the request hot paths on the MovieLens-100K model
//! (trained with defaults, scored exactly, as served) and, for ANN search, the same model
//! forced through its HNSW index:
//!
//! - `recommend/known_user`: a stored user, answered from their kept ranking (see
//!   `affinity_core::memo`) as the server answers every request after a user's first;
//! - `recommend/known_user_scored`: the same with the memo off (exact scoring of every
//!   item, neighbour votes, reasons), as a user's first request or a changed state costs;
//! - `recommend/session_fold_in`: an anonymous session of 20 items (the fold-in);
//! - `recommend/ann`: a stored user through the index;
//! - `recommend/rules`: a stored user with a category filter and diversity;
//! - `similar/blend`: similar items, both spaces;
//! - `encode/response`: a 10-item `RecommendResponse` to protobuf bytes.
//!
//! ```text
//! cargo bench -p affinity-benches --bench hot_paths
//! ```

use affinity_core::data::TimeKind;
use affinity_core::params::TrainParams;
use affinity_core::recommend::{RecommendQuery, SimilarMode, SimilarQuery, Subject};
use affinity_core::rules::Rules;
use affinity_core::train::{train, NoProgress};
use affinity_lab::import::{self, Source};
use affinity_service::proto;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use prost::Message;

fn hot_paths(c: &mut Criterion) {
    let data = import::import(Source::MovieLens, std::path::Path::new("../shared/datasets/movielens-100k"))
        .or_else(|_| import::import(Source::MovieLens, std::path::Path::new("../../shared/datasets/movielens-100k")))
        .expect("MovieLens-100K under ../shared/datasets");
    let mut m = train(&data, TimeKind::Unix, &TrainParams::default(), &NoProgress);
    let exact = m.default_settings();
    let users: Vec<String> = m.user_ids().iter().take(200).cloned().collect();
    let items: Vec<String> = m.items().iter().take(200).map(|i| i.item_id.clone()).collect();
    let mut n = 0usize;
    let mut next = |len: usize| {
        n = (n + 1) % len;
        n
    };
    c.bench_function("recommend/known_user", |b| {
        b.iter(|| black_box(m.recommend(&RecommendQuery::for_user(users[next(users.len())].clone(), 10), &exact).unwrap()))
    });
    let scored = train(&data, TimeKind::Unix, &TrainParams::default(), &NoProgress);
    scored.keep_rankings(0);
    c.bench_function("recommend/known_user_scored", |b| {
        b.iter(|| black_box(scored.recommend(&RecommendQuery::for_user(users[next(users.len())].clone(), 10), &exact).unwrap()))
    });
    let session: Vec<String> = items.iter().take(20).cloned().collect();
    c.bench_function("recommend/session_fold_in", |b| {
        b.iter(|| {
            let q = RecommendQuery { subject: Subject::Session(session.clone()), ..RecommendQuery::for_user("x", 10) };
            black_box(m.recommend(&q, &exact).unwrap())
        })
    });
    let category = m.items()[0].category.clone();
    let rules = Rules { include_categories: vec![category], max_per_brand: None, mmr_lambda: Some(0.7), ..Rules::default() };
    c.bench_function("recommend/rules", |b| {
        b.iter(|| {
            let q = RecommendQuery { rules: rules.clone(), ..RecommendQuery::for_user(users[next(users.len())].clone(), 10) };
            black_box(m.recommend(&q, &exact).unwrap())
        })
    });
    c.bench_function("similar/blend", |b| {
        b.iter(|| {
            let q = SimilarQuery { item_id: items[next(items.len())].clone(), k: 10, mode: SimilarMode::Blend, rules: Rules::default() };
            black_box(m.similar_items(&q, &exact).unwrap())
        })
    });
    let r = m.recommend(&RecommendQuery::for_user(users[0].clone(), 10), &exact).unwrap();
    let response = proto::RecommendResponse {
        items: r
            .items
            .iter()
            .map(|s| proto::ScoredItem {
                item_id: m.item_id(s.item).to_string(),
                score: s.score,
                reason: Some(proto::Reason { kind: 1, text: s.reason_text.clone() }),
            })
            .collect(),
        model_version: m.version().to_string(),
        ..Default::default()
    };
    c.bench_function("encode/response", |b| b.iter(|| black_box(response.encode_to_vec())));
    let ann = exact.ann();
    m.ensure_indexes(&ann);
    c.bench_function("recommend/ann", |b| {
        b.iter(|| black_box(m.recommend(&RecommendQuery::for_user(users[next(users.len())].clone(), 10), &ann).unwrap()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = hot_paths
}
criterion_main!(benches);
