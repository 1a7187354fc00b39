//! Train / validation / test splits of an event log, and their files.
//!
//! Every system in a comparison is trained and scored on the same split. A split is
//! written as three canonical event files (`train.csv`, `valid.csv`, `test.csv`) plus
//! `split.json` (protocol, seed, sizes), so outside tools can use exactly the same data.
//!
//! Protocols:
//! - `random`: per user, `max(1, round(0.2·n))` of their `n` distinct items (users with at
//!   least 5) go to test with a seeded RNG; validation is carved from the rest the same way
//!   with `seed + 1`. All events of a held-out (user, item) pair move together. Other
//!   shares ([`Shares`], e.g. 8:1:1 as social recommenders are often reported: test 0.1,
//!   validation 0.1 of every user's items) with [`split_with`].
//! - `loo`: leave-one-out for sequences: each user's last event is test, the one before is
//!   validation (users with at least 3 events; with 2, only test).
//! - `temporal`: a global cut at the 80% quantile of event time; validation is cut from
//!   training the same way. Needs unix timestamps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use affinity_core::data::{self, Event, ReadOptions, TimeKind};
use affinity_core::error::{Error, Result};
use affinity_core::ids::stable_hash;

/// Users with fewer distinct items than this stay entirely in training (random split).
pub const MIN_ITEMS_FOR_TEST: usize = 5;

/// How held-out events are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Random,
    Loo,
    Temporal,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Random => "random",
            Protocol::Loo => "loo",
            Protocol::Temporal => "temporal",
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "random" => Ok(Protocol::Random),
            "loo" => Ok(Protocol::Loo),
            "temporal" => Ok(Protocol::Temporal),
            other => Err(format!("unknown protocol {other:?} (random, loo, temporal)")),
        }
    }
}

/// A three-way split of an event log.
#[derive(Debug, Clone)]
pub struct SplitSet {
    pub protocol: Protocol,
    pub seed: u64,
    pub train: Vec<Event>,
    pub valid: Vec<Event>,
    pub test: Vec<Event>,
}

/// `split.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitInfo {
    pub protocol: Protocol,
    pub seed: u64,
    pub sizes: BTreeMap<String, usize>,
}

/// The shares of each user's distinct items a `random` split holds out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shares {
    /// Share for test.
    pub test: f64,
    /// Share for validation, of all the user's items (carved from what test leaves).
    pub valid: f64,
}

impl Default for Shares {
    /// A fifth for test, then a fifth of the rest for validation.
    fn default() -> Self {
        Shares { test: 0.2, valid: 0.16 }
    }
}

impl Shares {
    /// Checks that both shares are in (0, 1) and leave something to train on.
    ///
    /// # Errors
    /// `InvalidArgument` naming the share out of range.
    pub fn check(self) -> Result<Shares> {
        for (field, v) in [("test_share", self.test), ("valid_share", self.valid)] {
            if !(v > 0.0 && v < 1.0) {
                return Err(Error::invalid_argument(field, format!("must be between 0 and 1 (exclusive), got {v}")));
            }
        }
        if self.test + self.valid >= 1.0 {
            return Err(Error::invalid_argument("valid_share", format!("test {} + validation {} leave nothing to train on", self.test, self.valid)));
        }
        Ok(self)
    }
}

/// Moves `max(1, round(share·n))` random distinct items of each user with at least
/// [`MIN_ITEMS_FOR_TEST`] items out of `events`; returns (kept, held out).
pub fn random_holdout(events: Vec<Event>, seed: u64, share: f64) -> (Vec<Event>, Vec<Event>) {
    let mut per_user: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    for e in &events {
        if seen.insert((&e.user_id, &e.item_id)) {
            per_user.entry(&e.user_id).or_default().push(&e.item_id);
        }
    }
    let mut held: HashSet<(String, String)> = HashSet::new();
    for (user, items) in per_user {
        if items.len() < MIN_ITEMS_FOR_TEST {
            continue;
        }
        let n_test = ((items.len() as f64 * share).round() as usize).max(1);
        let mut sorted = items;
        sorted.sort_unstable();
        // Each user's draw depends only on the seed and the user id.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ stable_hash(user.as_bytes()));
        sorted.shuffle(&mut rng);
        for &item in &sorted[..n_test] {
            held.insert((user.to_string(), item.to_string()));
        }
    }
    events
        .into_iter()
        .partition(|e| !held.contains(&(e.user_id.clone(), e.item_id.clone())))
}

/// Per user, event positions in chronological order (timestamp, then file order).
fn chronological(events: &[Event]) -> BTreeMap<&str, Vec<usize>> {
    let mut per_user: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (pos, e) in events.iter().enumerate() {
        per_user.entry(&e.user_id).or_default().push(pos);
    }
    for list in per_user.values_mut() {
        list.sort_by_key(|&p| (events[p].timestamp.unwrap_or(i64::MIN), p));
    }
    per_user
}

fn loo(events: Vec<Event>) -> (Vec<Event>, Vec<Event>, Vec<Event>) {
    let mut role = vec![0u8; events.len()]; // 0 train, 1 valid, 2 test
    for list in chronological(&events).values() {
        let n = list.len();
        if n >= 2 {
            role[list[n - 1]] = 2;
        }
        if n >= 3 {
            role[list[n - 2]] = 1;
        }
    }
    let (mut train, mut valid, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for (e, r) in events.into_iter().zip(role) {
        match r {
            0 => train.push(e),
            1 => valid.push(e),
            _ => test.push(e),
        }
    }
    (train, valid, test)
}

/// Splits at the 80% quantile of timestamps: (up to the cut, after it).
fn temporal_cut(events: Vec<Event>) -> (Vec<Event>, Vec<Event>) {
    let mut times: Vec<i64> = events.iter().filter_map(|e| e.timestamp).collect();
    if times.is_empty() {
        return (events, Vec::new());
    }
    times.sort_unstable();
    let cut = times[((times.len() as f64 * 0.8) as usize).min(times.len() - 1)];
    // Coarse times (days) may put the cut on the latest time itself: then the events at
    // that time are the test part, not nothing.
    let latest = times[times.len() - 1];
    events.into_iter().partition(|e| e.timestamp.is_none_or(|t| if cut == latest { t < cut } else { t <= cut }))
}

/// Splits `events` by `protocol`.
pub fn split(events: Vec<Event>, protocol: Protocol, seed: u64, time_kind: TimeKind) -> Result<SplitSet> {
    split_with(events, protocol, seed, time_kind, Shares::default())
}

/// [`split`] with the shares a `random` split holds out (the other protocols ignore them).
///
/// # Errors
/// As [`split`]; `InvalidArgument` for shares out of range.
pub fn split_with(events: Vec<Event>, protocol: Protocol, seed: u64, time_kind: TimeKind, shares: Shares) -> Result<SplitSet> {
    let shares = shares.check()?;
    // Impressions are exposures, not interactions: nothing to train on or to predict.
    let events: Vec<Event> = events.into_iter().filter(|e| e.kind.is_interaction()).collect();
    let (train, valid, test) = match protocol {
        Protocol::Random => {
            let (rest, test) = random_holdout(events, seed, shares.test);
            let (train, valid) = random_holdout(rest, seed.wrapping_add(1), shares.valid / (1.0 - shares.test));
            (train, valid, test)
        }
        Protocol::Loo => loo(events),
        Protocol::Temporal => {
            if time_kind != TimeKind::Unix {
                return Err(Error::invalid_argument(
                    "protocol",
                    "temporal needs unix timestamps; these events have only an order (use loo)",
                ));
            }
            let (rest, test) = temporal_cut(events);
            let (train, valid) = temporal_cut(rest);
            (train, valid, test)
        }
    };
    Ok(SplitSet {
        protocol,
        seed,
        train,
        valid,
        test,
    })
}

impl SplitSet {
    pub fn info(&self) -> SplitInfo {
        let mut sizes = BTreeMap::new();
        sizes.insert("train".to_string(), self.train.len());
        sizes.insert("valid".to_string(), self.valid.len());
        sizes.insert("test".to_string(), self.test.len());
        SplitInfo {
            protocol: self.protocol,
            seed: self.seed,
            sizes,
        }
    }

    /// Writes `train.csv`, `valid.csv`, `test.csv` and `split.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        data::write_events(&dir.join("train.csv"), &self.train)?;
        data::write_events(&dir.join("valid.csv"), &self.valid)?;
        data::write_events(&dir.join("test.csv"), &self.test)?;
        let info = serde_json::to_vec_pretty(&self.info())
            .map_err(|e| Error::invalid_file(dir.join("split.json"), e.to_string()))?;
        fs::write(dir.join("split.json"), info).map_err(|e| Error::io(dir.join("split.json"), e))
    }

    /// Reads a split written by [`SplitSet::write`].
    pub fn read(dir: &Path) -> Result<SplitSet> {
        Self::read_parts(dir, true)
    }

    /// Reads only `train.csv` and `valid.csv` (for tuning, which must never see test).
    pub fn read_without_test(dir: &Path) -> Result<SplitSet> {
        Self::read_parts(dir, false)
    }

    fn read_parts(dir: &Path, with_test: bool) -> Result<SplitSet> {
        let info_path = dir.join("split.json");
        let text = fs::read(&info_path).map_err(|e| Error::io(&info_path, e))?;
        let info: SplitInfo =
            serde_json::from_slice(&text).map_err(|e| Error::invalid_file(&info_path, e.to_string()))?;
        let read = |name: &str| data::read_events(&dir.join(name), ReadOptions::default()).map(|r| r.rows);
        Ok(SplitSet {
            protocol: info.protocol,
            seed: info.seed,
            train: read("train.csv")?,
            valid: read("valid.csv")?,
            test: if with_test { read("test.csv")? } else { Vec::new() },
        })
    }
}

/// What to score against: per user, the held-out items, and whether the held-out item may
/// be one the user already has in their history (leave-one-out repeats).
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Held-out distinct items per user, sorted by user id.
    pub relevant: BTreeMap<String, Vec<String>>,
    /// Leave-one-out: history items are excluded from the ranking except the held-out one.
    pub keep_relevant_seen: bool,
}

/// Builds the scoring target from held-out events given the events the model is fit on.
pub fn target(protocol: Protocol, fit: &[Event], held_out: &[Event]) -> Target {
    let mut history: HashMap<&str, HashSet<&str>> = HashMap::new();
    if protocol == Protocol::Temporal {
        for e in fit {
            history.entry(&e.user_id).or_default().insert(&e.item_id);
        }
    }
    let mut relevant: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in held_out {
        // Temporal: items a user already had before the cut are not predictions.
        if history.get(e.user_id.as_str()).is_some_and(|h| h.contains(e.item_id.as_str())) {
            continue;
        }
        let items = relevant.entry(e.user_id.clone()).or_default();
        if !items.contains(&e.item_id) {
            items.push(e.item_id.clone());
        }
    }
    Target {
        relevant,
        keep_relevant_seen: protocol == Protocol::Loo,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use affinity_core::data::EventKind;

    fn ev(u: &str, i: &str, t: Option<i64>) -> Event {
        Event::new(u, i, EventKind::View, t)
    }

    fn pairs(events: &[Event]) -> HashSet<(String, String)> {
        events.iter().map(|e| (e.user_id.clone(), e.item_id.clone())).collect()
    }

    #[test]
    fn random_split_has_disjoint_pairs_and_right_sizes() {
        let mut events = Vec::new();
        for u in 0..30 {
            for i in 0..20 {
                events.push(ev(&format!("u{u}"), &format!("i{}", (u * 7 + i) % 60), None));
            }
        }
        events.push(ev("small", "i1", None));
        let s = split(events.clone(), Protocol::Random, 42, TimeKind::None).unwrap();
        assert_eq!(s.train.len() + s.valid.len() + s.test.len(), events.len());
        let (tr, va, te) = (pairs(&s.train), pairs(&s.valid), pairs(&s.test));
        assert!(tr.is_disjoint(&te) && tr.is_disjoint(&va) && va.is_disjoint(&te), "no leaks");
        // 20 items → 4 to test; 16 left → round(3.2) = 3 to validation.
        assert_eq!(te.len(), 30 * 4);
        assert_eq!(va.len(), 30 * 3);
        assert!(tr.contains(&("small".into(), "i1".into())));
        let again = split(events.clone(), Protocol::Random, 42, TimeKind::None).unwrap();
        assert_eq!(pairs(&again.test), te);
        // 8:1:1: 20 items → 2 to test, 2 to validation.
        let s = split_with(events.clone(), Protocol::Random, 42, TimeKind::None, Shares { test: 0.1, valid: 0.1 }).unwrap();
        assert_eq!((pairs(&s.test).len(), pairs(&s.valid).len()), (30 * 2, 30 * 2));
        for (bad, field) in [(Shares { test: 0.0, valid: 0.1 }, "test_share"), (Shares { test: 0.5, valid: 0.5 }, "valid_share")] {
            let e = split_with(events.clone(), Protocol::Random, 42, TimeKind::None, bad).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn loo_takes_last_and_second_last_by_time() {
        let events = vec![
            ev("a", "x", Some(3)),
            ev("a", "y", Some(1)),
            ev("a", "z", Some(2)),
            ev("a", "w", Some(4)),
            ev("b", "x", Some(1)),
            ev("b", "y", Some(2)),
            ev("c", "x", Some(1)),
        ];
        let s = split(events, Protocol::Loo, 0, TimeKind::Order).unwrap();
        assert_eq!(pairs(&s.test), pairs(&[ev("a", "w", None), ev("b", "y", None)]));
        assert_eq!(pairs(&s.valid), pairs(&[ev("a", "x", None)]));
        assert_eq!(s.train.len(), 4);
        let t = target(Protocol::Loo, &s.train, &s.test);
        assert!(t.keep_relevant_seen);
        assert_eq!(t.relevant["a"], vec!["w".to_string()]);
    }

    #[test]
    fn temporal_cuts_by_time_and_needs_unix_times() {
        let events: Vec<Event> = (0..100).map(|t| ev(&format!("u{}", t % 5), &format!("i{t}"), Some(1_000_000_000 + t))).collect();
        let s = split(events.clone(), Protocol::Temporal, 0, TimeKind::Unix).unwrap();
        let max_train = s.train.iter().chain(&s.valid).filter_map(|e| e.timestamp).max().unwrap();
        let min_test = s.test.iter().filter_map(|e| e.timestamp).min().unwrap();
        assert!(max_train < min_test);
        assert_eq!(s.test.len(), 19);
        let max_fit = s.train.iter().filter_map(|e| e.timestamp).max().unwrap();
        assert!(s.valid.iter().all(|e| e.timestamp.unwrap() > max_fit));
        let err = split(events, Protocol::Temporal, 0, TimeKind::Order).unwrap_err();
        assert!(err.to_string().contains("protocol"), "{err}");
    }

    #[test]
    fn split_files_round_trip() {
        let events: Vec<Event> = (0..50).map(|t| ev(&format!("u{}", t % 5), &format!("i{t}"), Some(t))).collect();
        let s = split(events, Protocol::Loo, 3, TimeKind::Order).unwrap();
        let dir = tempfile::tempdir().unwrap();
        s.write(dir.path()).unwrap();
        let back = SplitSet::read(dir.path()).unwrap();
        assert_eq!(back.protocol, Protocol::Loo);
        assert_eq!(back.seed, 3);
        assert_eq!(back.test, s.test);
        assert_eq!(back.train, s.train);
    }
}
