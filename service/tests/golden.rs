//! Golden answers: the MovieLens model's `Recommend` and `SimilarItems` replies for 200
//! users and 200 items (three modes) must stay what they were when the file was written.
//!
//! It pins behaviour across refactors through the wire API only (the real server binary,
//! a generated client), so it holds whatever the insides look like. Item ids must match
//! exactly and scores to 1e-4. After a deliberate change of scoring, rewrite the file with
//! `AFFINITY_BLESS_GOLDEN=1 cargo test --release -p affinity-service --test golden` and
//! say why in the commit.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::similar_items_request::Mode;
use affinity_service::proto::{self, ScoredItem};
use common::*;

const GOLDEN: &str = "tests/golden/movielens.tsv";

fn line(kind: &str, id: &str, items: &[ScoredItem]) -> String {
    let mut s = format!("{kind}\t{id}\t");
    for (n, i) in items.iter().enumerate() {
        if n > 0 {
            s.push(',');
        }
        let _ = write!(s, "{}:{:.6}", i.item_id, i.score);
    }
    s
}

/// Parses `id:score,id:score` into pairs.
fn entries(field: &str) -> Vec<(String, f64)> {
    if field.is_empty() {
        return Vec::new();
    }
    field
        .split(',')
        .map(|e| {
            let (id, score) = e.rsplit_once(':').expect("id:score");
            (id.to_string(), score.parse().expect("score"))
        })
        .collect()
}

#[tokio::test]
async fn movielens_answers_match_the_golden_file() {
    let server = start_server(movielens_model()).await;
    let mut c = RecommenderClient::connect(server.addr.clone()).await.expect("connect");
    let mut lines = Vec::new();
    for user in 1..=200 {
        let r = c
            .recommend(proto::RecommendRequest {
                subject: Some(Subject::UserId(user.to_string())),
                k: 10,
                ..Default::default()
            })
            .await
            .expect("recommend")
            .into_inner();
        lines.push(line("recommend", &user.to_string(), &r.items));
    }
    for item in 1..=200 {
        for (name, mode) in [("collaborative", Mode::Collaborative), ("content", Mode::Content), ("blend", Mode::Blend)] {
            let r = c
                .similar_items(proto::SimilarItemsRequest {
                    item_id: item.to_string(),
                    k: 10,
                    mode: mode as i32,
                    rules: None,
                })
                .await;
            let text = match r {
                Ok(r) => line(&format!("similar-{name}"), &item.to_string(), &r.into_inner().items),
                Err(s) => format!("similar-{name}\t{item}\terror {:?}", s.code()),
            };
            lines.push(text);
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("AFFINITY_BLESS_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create golden dir");
        std::fs::write(&path, lines.join("\n") + "\n").expect("write golden file");
        return;
    }
    let golden = std::fs::read_to_string(&path).expect("golden file (bless it first)");
    let golden: Vec<&str> = golden.lines().collect();
    assert_eq!(golden.len(), lines.len(), "number of answers");
    let mut mismatches = Vec::new();
    for (want, got) in golden.iter().zip(&lines) {
        let w: Vec<&str> = want.splitn(3, '\t').collect();
        let g: Vec<&str> = got.splitn(3, '\t').collect();
        assert_eq!(w[..2], g[..2], "answer order");
        let same = if w[2].starts_with("error") || g[2].starts_with("error") {
            w[2] == g[2]
        } else {
            let (we, ge) = (entries(w[2]), entries(g[2]));
            we.len() == ge.len() && we.iter().zip(&ge).all(|(a, b)| a.0 == b.0 && (a.1 - b.1).abs() <= 1e-4)
        };
        if !same {
            mismatches.push(format!("want {want}\n got {got}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} answers changed; first:\n{}",
        mismatches.len(),
        lines.len(),
        mismatches[..mismatches.len().min(3)].join("\n")
    );
}
