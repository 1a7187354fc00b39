//! Segments on MovieLens-100K: segment popularity equals a direct count, a segment's
//! list predicts the items of users whose whole history is hidden better than the
//! store-wide list, and a new visitor with attributes gets their segment's list.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use affinity_core::data::{Dataset, TimeKind, User};
use affinity_core::model::Model;
use affinity_core::params::TrainParams;
use affinity_core::recommend::{RecommendQuery, ReasonKind};
use affinity_core::rules::Rules;
use affinity_core::segments::{AgeBand, Segment};
use affinity_core::train::{train, NoProgress};
use affinity_core::trending::Window;
use affinity_lab::import::{import, Source};
use rand::seq::SliceRandom;
use rand::SeedableRng;

fn movielens() -> Dataset {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/movielens-100k");
    assert!(dir.is_dir(), "data set missing: {} (tests need ../shared/datasets)", dir.display());
    import(Source::MovieLens, &dir).expect("import MovieLens")
}

/// Popularity needs no embedding quality: a short fit.
fn fit(data: &Dataset) -> Model {
    let mut params = TrainParams::default();
    params.als.iterations = 2;
    params.als.factors = 8;
    train(data, TimeKind::Unix, &params, &NoProgress)
}

/// The segment the tests slice by: age band and gender.
fn age_and_gender(u: &User) -> Segment {
    Segment {
        age_band: u.age.parse::<AgeBand>().ok(),
        gender: Some(u.gender.clone()),
        ..Segment::default()
    }
}

fn top10(m: &Model, s: &Segment) -> Vec<String> {
    let (r, _) = m.popular_in(s, None, &Rules::default(), 10, Window::All, affinity_core::trending::At::default()).unwrap();
    r.items.iter().map(|x| m.item_id(x.item).to_string()).collect()
}

#[test]
fn segment_popularity_is_a_direct_count_and_beats_the_store_list_for_hidden_users() {
    let data = movielens();
    let m = fit(&data);
    // Women aged 18–24: counts equal a direct count over the events.
    let segment = Segment { age_band: Some(AgeBand::From18To24), gender: Some("F".into()), ..Segment::default() };
    let members: HashSet<&str> = data.users.iter().filter(|u| segment.contains(u)).map(|u| u.user_id.as_str()).collect();
    let mut direct: HashMap<&str, HashSet<&str>> = HashMap::new();
    for e in data.events.iter().filter(|e| members.contains(e.user_id.as_str())) {
        direct.entry(e.item_id.as_str()).or_default().insert(&e.user_id);
    }
    let counted = m.segment_popularity(&segment);
    assert_eq!(counted.users, members.len());
    assert_eq!(counted.counts.len(), direct.len());
    for (item, n) in &counted.counts {
        assert_eq!(*n as usize, direct[m.item_id(*item)].len(), "item {}", m.item_id(*item));
    }

    // A new visitor known only by age 21 and gender F gets that list, with its reason.
    let q = RecommendQuery { attributes: Some(Segment { age_band: "21".parse().ok(), gender: Some("F".into()), ..Segment::default() }), ..RecommendQuery::for_user("new-visitor", 10) };
    let r = m.recommend(&q, &m.default_settings()).unwrap();
    let got: Vec<String> = r.items.iter().map(|x| m.item_id(x.item).to_string()).collect();
    assert_eq!(got, top10(&m, &segment));
    assert!(r.items.iter().all(|x| x.reason == ReasonKind::Popular && x.reason_text == "popular with gender F, age 18-24"), "{:?}", r.items[0]);

    // Users whose whole history is hidden: the segment's list (from their attributes)
    // against the store-wide list, Recall@10, five seeds.
    let (mut seg_total, mut all_total) = (0.0, 0.0);
    for seed in 1..=5u64 {
        let mut ids: Vec<&User> = data.users.iter().collect();
        ids.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let hidden: HashMap<&str, &User> = ids[..ids.len() / 5].iter().map(|u| (u.user_id.as_str(), *u)).collect();
        let kept = Dataset {
            events: data.events.iter().filter(|e| !hidden.contains_key(e.user_id.as_str())).cloned().collect(),
            users: data.users.iter().filter(|u| !hidden.contains_key(u.user_id.as_str())).cloned().collect(),
            ..data.clone()
        };
        let m = fit(&kept);
        let mut truth: HashMap<&str, HashSet<&str>> = HashMap::new();
        for e in data.events.iter().filter(|e| hidden.contains_key(e.user_id.as_str())) {
            truth.entry(e.user_id.as_str()).or_default().insert(&e.item_id);
        }
        let store = top10(&m, &Segment::default());
        let mut lists: HashMap<Segment, Vec<String>> = HashMap::new();
        let (mut seg, mut all) = (0.0, 0.0);
        for (user, items) in &truth {
            let s = age_and_gender(hidden[user]);
            let list = lists.entry(s.clone()).or_insert_with(|| top10(&m, &s));
            let recall = |l: &[String]| l.iter().filter(|i| items.contains(i.as_str())).count() as f64 / items.len().min(10) as f64;
            seg += recall(list);
            all += recall(&store);
        }
        let n = truth.len() as f64;
        eprintln!("seed {seed}: {} hidden users · Recall@10 segment list {:.4} · store list {:.4}", truth.len(), seg / n, all / n);
        seg_total += seg / n;
        all_total += all / n;
    }
    eprintln!("mean over 5 seeds: segment {:.4} · store {:.4}", seg_total / 5.0, all_total / 5.0);
    assert!(seg_total > all_total, "segment lists {seg_total} vs store list {all_total}");
}
