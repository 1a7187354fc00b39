//! Serving-time scoring: personalised recommendations and similar items.
//!
//! Queries are owned values ([`RecommendQuery`], [`SimilarQuery`]) checked in one place
//! ([`RecommendQuery::validate`], [`SimilarQuery::validate`]), which both scoring methods
//! call first; the gRPC edge only maps the wire shape onto them. The server and the
//! evaluator call the same methods, so the quality `evaluate` reports is the quality the
//! server returns.
//!
//! A user is scored by the inner product of their folded-in vector with every item's
//! factors, blended with the votes of their recent items' neighbours. Small catalogues are
//! scored exactly; large ones retrieve candidates from the MIPS HNSW index and re-rank
//! them exactly, falling back to exact scoring when filters leave too few. Ties break by
//! item index, so results are deterministic.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::ids::{shown, ItemIdx, UserIdx};
use crate::linalg::{dot, norm};
use crate::memo::{Ranking, StateKey, RANKED};
use crate::data::EventKind;
use crate::interactions::RecentEvent;
use crate::model::Model;
use crate::repeat::SeenPolicy;
use crate::rules::{self, ItemFilter, Rules, Shortfall};
use crate::segments::{Segment, SegmentPopularity};
use crate::trending::{At, Window};
use crate::settings::ServingSettings;
use crate::communities::CommunityVotes;
use crate::social::{Contact, SocialVotes};

/// Largest `k` a request may ask for.
pub const MAX_K: usize = 1000;

/// Longest id (user, item, category) a request may carry, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Most items an anonymous session (`recent_items`) may list.
pub const MAX_SESSION_ITEMS: usize = 1000;

/// Most ids `exclude_item_ids` may list.
pub const MAX_EXCLUDED_ITEMS: usize = 10_000;

/// Checks that every id of `field` is non-empty and at most [`MAX_ID_BYTES`] long, and
/// that there are at most `max` of them.
fn check_ids<'a>(field: &'static str, ids: impl ExactSizeIterator<Item = &'a String>, max: usize) -> Result<()> {
    if ids.len() > max {
        return Err(Error::invalid_argument(field, format!("at most {max} ids, got {}", ids.len())));
    }
    for id in ids {
        if id.is_empty() {
            return Err(Error::invalid_argument(field, "must not contain empty ids"));
        }
        if id.len() > MAX_ID_BYTES {
            return Err(Error::invalid_argument(field, format!("ids are at most {MAX_ID_BYTES} bytes, got {}", id.len())));
        }
    }
    Ok(())
}

/// Who recommendations are for.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// A user id; unknown users get popular items.
    User(String),
    /// An anonymous session: the item ids it interacted with, oldest first.
    Session(Vec<String>),
}

/// A recommendation request in domain terms.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendQuery {
    /// The user or session to recommend for.
    pub subject: Subject,
    /// Number of items wanted, `1..=MAX_K`.
    pub k: usize,
    /// Whether items the user (or session) already had may come back, and how.
    pub seen: SeenPolicy,
    /// Never return these item ids (unknown ids are ignored).
    pub exclude_items: Vec<String>,
    /// Only items of this category.
    pub category: Option<String>,
    /// Business rules: filters, promotions, diversity.
    pub rules: Rules,
    /// Attributes passed with the request for a user without usable history (else the
    /// model's stored attributes of the user are used): they get their segment's popular
    /// items.
    pub attributes: Option<Segment>,
    /// Events of this user the model was not trained on (the server's live state),
    /// oldest first: they join the history, the fold-in, the recent items and the seen
    /// set. Items the model does not know are ignored.
    pub live: Vec<LiveEvent>,
    /// Events of the user's contacts the model was not trained on, by contact id (the
    /// server's live state; filled in by the server): social votes and reasons count them
    /// as the contacts' own, so a friend's purchase a minute ago is "1 friend bought this"
    /// now. Impressions and items the model was not trained on are ignored.
    pub contacts_live: Vec<(String, Vec<LiveEvent>)>,
    /// Whether a user's stored history counts; off for a user who asked to be forgotten
    /// while a model still holds them (they get the cold-start answer).
    pub use_stored_history: bool,
    /// Whether what the user's friends and followed accounts had joins the ranking (see
    /// [`crate::social`]): `None` as trained (on when the model has a social graph and
    /// its validation search gave the social votes a weight), `Some(false)` off,
    /// `Some(true)` on (with the default weight where training chose none).
    pub social: Option<bool>,
    /// Only items the user's contacts had (trained or since): a "friends bought" shelf,
    /// each with its social reason, ranked with the contacts' votes weighed as much as
    /// the embedding; empty for a user without contacts. Needs a user subject and social
    /// scoring on.
    pub from_contacts: bool,
}

/// The weights one ranking gives its signals besides the embedding: the recent items'
/// neighbour votes, the contacts' social votes and the communities' picks (each 0 for
/// none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blend {
    /// Share of the neighbour votes ([`ServingSettings::sequence_blend`]).
    pub sequence: f32,
    /// Weight of the social votes ([`ServingSettings::social_blend`]).
    pub social: f32,
    /// Weight of the communities' picks ([`ServingSettings::community_blend`]).
    pub community: f32,
}

/// What the people around a stored user had, for the rankings that weigh it: their
/// contacts' votes (see [`crate::social`]) and their communities' picks (see
/// [`crate::communities`]).
#[derive(Debug, Default)]
struct Around<'a> {
    /// The user's contacts (read once per request: with live edits, each read copies
    /// them) and their votes, when any contact had anything.
    contacts: Option<(Cow<'a, [Contact]>, SocialVotes)>,
    /// What the contacts did since training (see [`RecommendQuery::contacts_live`]).
    contacts_live: ContactsLive,
    /// Their communities' picks, when they have any.
    community: Option<CommunityVotes>,
}

impl Around<'_> {
    /// Whether `blend` weighs anything here.
    fn weighs(&self, blend: Blend) -> bool {
        (blend.social > 0.0 && self.contacts.is_some()) || (blend.community > 0.0 && self.community.is_some())
    }

    /// `item`'s votes under `blend`: `γ·social + κ·community`.
    #[inline]
    fn get(&self, item: ItemIdx, blend: Blend) -> f32 {
        let social = self.contacts.as_ref().map_or(0.0, |(_, v)| v.get(item));
        let community = self.community.as_ref().map_or(0.0, |v| v.get(item));
        blend.social.max(0.0) * social + blend.community.max(0.0) * community
    }

    /// Every item someone around voted for.
    fn items(&self) -> impl Iterator<Item = ItemIdx> + '_ {
        let social = self.contacts.iter().flat_map(|(_, v)| v.iter().map(|(i, _)| i));
        social.chain(self.community.iter().flat_map(CommunityVotes::items))
    }
}

/// What a user's contacts did since training: per contact index, the items new to
/// them (not in their trained history) and every live event as (item, kind).
#[derive(Debug, Default)]
struct ContactsLive {
    by_contact: foldhash::HashMap<u32, ContactSince>,
}

/// One contact's live events.
#[derive(Debug)]
struct ContactSince {
    /// Items new to them, sorted.
    new: Vec<ItemIdx>,
    /// Every event, as (item, kind).
    events: Vec<(ItemIdx, EventKind)>,
}

impl ContactsLive {
    /// Items contact `c` took up since training and had not had before.
    fn new_items(&self, c: u32) -> &[ItemIdx] {
        self.by_contact.get(&c).map_or(&[], |x| x.new.as_slice())
    }

    /// Contact `c`'s live events.
    fn events(&self, c: u32) -> &[(ItemIdx, EventKind)] {
        self.by_contact.get(&c).map_or(&[], |x| x.events.as_slice())
    }
}

/// A community pick at least this strong (the community's strongest is 1) that the
/// ranking weighs is explained by its community: "popular in your community club".
const COMMUNITY_REASON: f32 = 0.3;

/// An event the model was not trained on, as the server's live state keeps it.
#[derive(Debug, Clone, PartialEq, Hash)]
pub struct LiveEvent {
    /// The item acted on.
    pub item_id: String,
    /// What the user did.
    pub kind: EventKind,
    /// Its timestamp as given.
    pub timestamp: Option<i64>,
}

impl RecommendQuery {
    /// The top `k` for a user, leaving out what they have seen, without other filters.
    pub fn for_user(user_id: impl Into<String>, k: usize) -> RecommendQuery {
        RecommendQuery {
            subject: Subject::User(user_id.into()),
            k,
            seen: SeenPolicy::Trained,
            exclude_items: Vec::new(),
            category: None,
            rules: Rules::default(),
            attributes: None,
            live: Vec::new(),
            contacts_live: Vec::new(),
            from_contacts: false,
            use_stored_history: true,
            social: None,
        }
    }

    /// Checks every field; the error names the field as the API spells it.
    pub fn validate(&self) -> Result<()> {
        validate_k(self.k)?;
        match &self.subject {
            Subject::User(id) if id.is_empty() => return Err(Error::invalid_argument("user_id", "must not be empty")),
            Subject::User(id) => check_ids("user_id", std::iter::once(id), 1)?,
            Subject::Session(ids) => check_ids("recent_items", ids.iter(), MAX_SESSION_ITEMS)?,
        }
        check_ids("exclude_item_ids", self.exclude_items.iter(), MAX_EXCLUDED_ITEMS)?;
        if self.from_contacts {
            if let Subject::Session(_) = self.subject {
                return Err(Error::invalid_argument("from_contacts", "needs a user_id: a session has no contacts"));
            }
            if self.social == Some(false) {
                return Err(Error::invalid_argument("from_contacts", "needs social scoring: not with social false"));
            }
            if matches!(self.seen, SeenPolicy::BuyAgain | SeenPolicy::Include) {
                return Err(Error::invalid_argument("from_contacts", "lists what the user has not had: not with repeat_policy buy_again or exclude_seen false"));
            }
        }
        self.rules.validate()?;
        if let Some(a) = &self.attributes {
            a.validate()?;
        }
        match &self.category {
            Some(c) if c.is_empty() => Err(Error::invalid_argument("category", "must not be empty when set")),
            Some(c) => check_ids("category", std::iter::once(c), 1),
            None => Ok(()),
        }
    }
}

/// Similarity space for similar items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimilarMode {
    /// Cosine of collaborative embeddings: items chosen by the same users. The query item needs events.
    Collaborative,
    /// Cosine of content embeddings: shared catalogue features.
    Content,
    /// Both, weighted by the `similar_blend` setting; only one when the query item lacks the other.
    Blend,
}

/// A similar-items request in domain terms.
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarQuery {
    /// Id of the item to find similar items for.
    pub item_id: String,
    /// Number of items wanted, `1..=MAX_K`.
    pub k: usize,
    /// The space similarity is measured in.
    pub mode: SimilarMode,
    /// Business rules: filters, promotions, diversity.
    pub rules: Rules,
}

impl SimilarQuery {
    /// Checks every field; the error names the field as the API spells it.
    pub fn validate(&self) -> Result<()> {
        if self.item_id.is_empty() {
            return Err(Error::invalid_argument("item_id", "must not be empty"));
        }
        check_ids("item_id", std::iter::once(&self.item_id), 1)?;
        validate_k(self.k)?;
        self.rules.validate()
    }
}

pub(crate) fn validate_k(k: usize) -> Result<()> {
    if k == 0 || k > MAX_K {
        return Err(Error::invalid_argument("k", format!("must be between 1 and {MAX_K}, got {k}")));
    }
    Ok(())
}

/// Why an item was recommended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonKind {
    /// Personalised from the user's history.
    Personalized,
    /// Popular items: the subject has no usable history.
    Popular,
    /// Similar to the query item.
    Similar,
    /// An item the subject had, offered again: the data shows people come back to it.
    Repeat,
    /// Rising fastest against its own past (a trending list).
    Trending,
    /// Friends or followed accounts had it (social scoring).
    Social,
    /// Listed recently: a new-arrival boost, or an exploration slot for an item nobody
    /// has interacted with yet.
    NewArrival,
    /// Within the radius of the place the request named.
    Nearby,
}

/// A scored item with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The item, by index (see [`Model::item_id`]).
    pub item: ItemIdx,
    /// Higher is better; comparable only within one answer (model score, user count or similarity).
    pub score: f32,
    /// Why the item was chosen.
    pub reason: ReasonKind,
    /// A short explanation for people, e.g. "because of your interest in …".
    pub reason_text: String,
}

/// How candidates were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retrieval {
    /// Every eligible item was scored.
    Exact,
    /// Candidates came from the HNSW index and were re-ranked exactly.
    Ann,
    /// Popularity order (no personal signal).
    Popularity,
}

impl Retrieval {
    /// Lower-case name, as logs and tables show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Retrieval::Exact => "exact",
            Retrieval::Ann => "ann",
            Retrieval::Popularity => "popularity",
        }
    }
}

/// The answer to a [`RecommendQuery`].
#[derive(Debug, Clone)]
pub struct Recommendations {
    /// The recommended items, best first; fewer than `k` when too few are eligible.
    pub items: Vec<Scored>,
    /// How the candidates were found.
    pub retrieval: Retrieval,
    /// Why fewer than `k` items came back, if they did.
    pub shortfall: Option<Shortfall>,
}

/// Neighbour votes per item for one request: a dense table over a small catalogue (an
/// indexed add per vote, an indexed load per scored item), a fast-hash map over a large
/// one (where zeroing a table per request would cost more than the votes).
#[derive(Default)]
enum Votes {
    /// No recent items voted.
    #[default]
    None,
    /// By item index, and the items with a vote.
    Dense(Vec<f32>, Vec<ItemIdx>),
    /// By item.
    Sparse(foldhash::HashMap<ItemIdx, f32>),
}

/// Catalogues up to this size tally votes in a dense table.
const DENSE_VOTES: usize = 1 << 16;

impl Votes {
    /// Scales the votes so the strongest is 1 (when any is positive).
    fn scale_to_strongest(&mut self) {
        let max = match self {
            Votes::None => 0.0,
            Votes::Dense(table, voted) => voted.iter().map(|i| table[i.get()]).fold(0.0f32, f32::max),
            Votes::Sparse(m) => m.values().copied().fold(0.0f32, f32::max),
        };
        if max <= 0.0 {
            return;
        }
        match self {
            Votes::None => {}
            Votes::Dense(table, voted) => voted.iter().for_each(|i| table[i.get()] /= max),
            Votes::Sparse(m) => m.values_mut().for_each(|v| *v /= max),
        }
    }

    fn get(&self, i: ItemIdx) -> f32 {
        match self {
            Votes::None => 0.0,
            Votes::Dense(v, _) => v.get(i.get()).copied().unwrap_or(0.0),
            Votes::Sparse(m) => m.get(&i).copied().unwrap_or(0.0),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Votes::None => true,
            Votes::Dense(_, voted) => voted.is_empty(),
            Votes::Sparse(m) => m.is_empty(),
        }
    }

    /// The items with a vote.
    fn items(&self) -> Vec<ItemIdx> {
        match self {
            Votes::None => Vec::new(),
            Votes::Dense(_, voted) => voted.clone(),
            Votes::Sparse(m) => m.keys().copied().collect(),
        }
    }
}

/// Which items may be returned for one request.
struct Eligibility<'a> {
    model: &'a Model,
    /// What the user had and what the request excludes, as bits: scoring asks every item.
    seen_bits: ItemBits,
    excluded_bits: ItemBits,
    /// How many ids the two sets were given: room an index search leaves for them.
    dropped: usize,
    /// The rules' filters (and the request's category).
    filter: ItemFilter<'a>,
    /// The items an include filter narrows to (sorted), when one is set.
    narrowed: Option<Vec<ItemIdx>>,
}

/// A set of item indices as bits: membership in one load, where scoring asks it of
/// every item.
struct ItemBits(Vec<u64>);

impl ItemBits {
    fn of(items: &[ItemIdx], n: usize) -> ItemBits {
        let mut bits = vec![0u64; n.div_ceil(64)];
        for i in items.iter().filter(|i| i.get() < n) {
            bits[i.get() / 64] |= 1 << (i.get() % 64);
        }
        ItemBits(bits)
    }

    #[inline]
    fn has(&self, i: ItemIdx) -> bool {
        self.0.get(i.get() / 64).is_some_and(|w| w & (1 << (i.get() % 64)) != 0)
    }
}

impl<'a> Eligibility<'a> {
    fn new(model: &'a Model, seen: &[ItemIdx], excluded: &[ItemIdx], filter: ItemFilter<'a>) -> Eligibility<'a> {
        let narrowed = filter.narrowed();
        let n = model.n_items_with_added();
        let (seen_bits, excluded_bits) = (ItemBits::of(seen, n), ItemBits::of(excluded, n));
        Eligibility { model, seen_bits, excluded_bits, dropped: seen.len() + excluded.len(), filter, narrowed }
    }

    #[inline]
    fn allows(&self, i: ItemIdx) -> bool {
        !self.seen_bits.has(i) && self.allows_had(i)
    }

    /// Whether `i`, an item nobody has interacted with (trained without events, or added
    /// while serving), may fill an exploration slot.
    fn allows_new(&self, i: ItemIdx) -> bool {
        !self.excluded_bits.has(i) && !self.seen_bits.has(i) && self.filter.passes(i)
    }

    /// Whether `i` passes every filter but the seen one: what a returning item must pass.
    /// Items added while serving have no collaborative vector yet and are not offered.
    #[inline]
    fn allows_had(&self, i: ItemIdx) -> bool {
        i.get() < self.model.n_items() && !self.excluded_bits.has(i) && self.filter.passes(i)
    }

    /// Every eligible item, in index order: only the narrowed items when a filter
    /// narrows.
    fn all(&self) -> Box<dyn Iterator<Item = ItemIdx> + '_> {
        match &self.narrowed {
            Some(members) => Box::new(members.iter().copied().filter(|&i| self.allows(i))),
            None => Box::new((0..self.model.n_items() as u32).map(ItemIdx).filter(|&i| self.allows(i))),
        }
    }
}

/// A ranked list of popular-kind (or trending) items, each with `text` as its reason.
fn popular_answer(ranked: Vec<(f32, ItemIdx)>, shortfall: Option<Shortfall>, reason: ReasonKind, text: &str) -> Recommendations {
    Recommendations {
        items: ranked
            .into_iter()
            .map(|(score, item)| Scored { item, score, reason, reason_text: text.to_string() })
            .collect(),
        retrieval: Retrieval::Popularity,
        shortfall,
    }
}

/// Whether a filter's narrowed list is short enough to score exactly rather than search
/// the index for it: a graph search computes about `ef × 32` distances (its candidate
/// list times the links of the bottom layer) and then drops what the filter refuses, so
/// a list up to that size (at least [`NARROW_FLOOR`]) is cheaper and exact to score
/// whole (scale bench, 100k items, a 100-item category: 23 µs exact against 179 µs
/// through the index at ef 10).
fn narrow_enough(narrowed: Option<&Vec<ItemIdx>>, settings: &ServingSettings, k: usize) -> bool {
    narrowed.is_some_and(|n| n.len() <= (settings.ef_search.max(k) * 32).max(NARROW_FLOOR))
}

/// Narrowed lists up to this many items are always scored exactly (about 25 µs).
const NARROW_FLOOR: usize = 1_024;

/// Room a first index search makes for items the filter drops (what the user had, what
/// the request excludes); users who had more start from their training-time list
/// (`model::shortlist`) or search in growing rounds.
pub(crate) const SEARCH_ROOM: usize = 500;

/// Candidates MMR diversity chooses among at most: each pick is compared with every
/// candidate left, so k = 1,000 costs two million similarities.
const MAX_MMR_POOL: usize = 2_000;

/// The list a ranking gives under the rules: promotions applied, then the best `k`
/// (diversified when asked), and why it is short if it is.
fn finish(model: &Model, mut scored: Vec<(f32, ItemIdx)>, k: usize, rules: &Rules) -> (Vec<(f32, ItemIdx)>, Option<Shortfall>) {
    rules::boost(model, &mut scored, rules, model.clock());
    if !rules.diversifies() {
        let top = top_k(scored, k);
        let short = (top.len() < k).then_some(Shortfall::Filters);
        return (top, short);
    }
    // Diversity chooses among a pool well beyond `k` (MMR, which compares every pick with
    // every candidate, among at most MAX_MMR_POOL); when the caps leave it short, the rest
    // of the eligible items fill in by relevance under the caps (MMR over the whole
    // catalogue would cost k × catalogue similarities).
    let eligible = scored.len();
    let mmr = rules.mmr_lambda.is_some_and(|l| l < 1.0);
    let pool = if mmr { (k * 10).clamp(200, MAX_MMR_POOL) } else { (k * 10).max(200) };
    let (mut chosen, mut capped) = rules::diversify(model, top_k(scored.clone(), pool), k, rules, true);
    if chosen.len() < k && eligible > pool {
        (chosen, capped) = rules::diversify(model, top_k(scored, eligible), k, rules, false);
    }
    let short = match (chosen.len() < k, capped) {
        (false, _) => None,
        (true, true) => Some(Shortfall::Diversity),
        (true, false) => Some(Shortfall::Filters),
    };
    (chosen, short)
}

/// Scores `items`, checking for cancellation every few thousand, so a request nobody
/// waits for stops within one chunk's work.
fn score_all<T>(items: impl Iterator<Item = ItemIdx>, cancel: &Cancel, mut score: impl FnMut(ItemIdx) -> T) -> Result<Vec<T>> {
    const CHUNK: usize = 4096;
    let mut out = Vec::new();
    for (n, i) in items.enumerate() {
        if n % CHUNK == 0 && cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        out.push(score(i));
    }
    Ok(out)
}

/// Orders by score descending, then item index ascending.
fn by_score(a: &(f32, ItemIdx), b: &(f32, ItemIdx)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Keeps the best `k` of `scored`, sorted.
fn top_k(mut scored: Vec<(f32, ItemIdx)>, k: usize) -> Vec<(f32, ItemIdx)> {
    if scored.len() > k {
        scored.select_nth_unstable_by(k, by_score);
        scored.truncate(k);
    }
    scored.sort_by(by_score);
    scored
}

/// Exponent of the popularity that divides each social vote: what a user's contacts had
/// counts more the fewer people had it (LastFM, views only, seed 1, `evaluate` with the
/// default parameters and a social weight of 0.1: 0.5 gave Recall@10 0.1941 against
/// 0.1911 without social votes, 0 gave 0.1921, 1 gave 0.1918).
pub(crate) const SOCIAL_RARITY: f32 = 0.5;

/// Which of a contact's events on an item a social reason names: the strongest.
fn social_rank(kind: EventKind) -> u8 {
    match kind {
        EventKind::Purchase => 6,
        EventKind::Like => 5,
        EventKind::Share => 4,
        EventKind::Rating => 3,
        EventKind::Cart => 2,
        EventKind::Click | EventKind::View => 1,
        EventKind::Impression => 0,
    }
}

fn item_label(model: &Model, i: ItemIdx) -> &str {
    let item = model.item(i);
    if item.title.is_empty() {
        &item.item_id
    } else {
        &item.title
    }
}

/// The subject's interacted items (sorted), its vector, its recent items, and for
/// returns: the user's index and their recent events.
struct Profile {
    history: Vec<ItemIdx>,
    vector: Option<Vec<f32>>,
    recent: Vec<ItemIdx>,
    user: Option<usize>,
    events: Vec<RecentEvent>,
}

/// Multiply-adds one request may cost and still count as light (about 100 µs here):
/// see [`Model::is_light`].
const LIGHT_WORK: usize = 1 << 20;

impl Model {
    /// Whether a request of `k` items with `subject_items` session or live items and
    /// `excluded` ids is light enough on this model (an exact scoring pass over a small
    /// catalogue, a short fold-in) that a server may run it where it received it instead
    /// of handing it to a worker pool: the hop costs more than such work.
    pub fn is_light(&self, settings: &ServingSettings, k: usize, subject_items: usize, excluded: usize) -> bool {
        let dims = self.manifest().params.als.factors + self.manifest().params.content.dim;
        settings.scores_exactly(self.n_items_with_added())
            && self.n_items_with_added().saturating_mul(dims) <= LIGHT_WORK
            && k <= 100
            && subject_items <= 50
            && excluded <= 1000
    }

    /// [`Model::is_light`] for a whole `Recommend` query: also not light when it folds a
    /// stored history in again (live events on a known user: the fold-in covers the whole
    /// history), may count a segment's popularity over every user (a subject without a
    /// usable vector whose attributes name a segment), or reads the histories of a user's
    /// contacts (social votes).
    pub fn is_light_query(&self, settings: &ServingSettings, query: &RecommendQuery) -> bool {
        let (stored, session) = match &query.subject {
            Subject::User(id) => (self.user_index(id).filter(|_| query.use_stored_history), 0),
            Subject::Session(items) => (None, items.len()),
        };
        let history = match (stored, query.live.is_empty()) {
            (Some(u), false) => self.history(u).len(),
            _ => 0,
        };
        // Attributes naming a segment (passed in, or stored for a user without a usable
        // vector) may send a subject without a session to the segment's popular list.
        let segmented = query.attributes.as_ref().is_some_and(|a| !a.is_everyone())
            || stored.is_some_and(|u| self.user_vector(u).iter().all(|&x| x == 0.0) && !Segment::of_user(self.user_attributes(u)).is_everyone());
        // Social votes read every contact's history, community votes a member's
        // communities: never light.
        let social = query.social != Some(false)
            && stored.is_some_and(|u| self.may_have_contacts(u) || self.in_a_community(u));
        // Diversity rules compare candidates with each other: never light.
        !(social || segmented && session == 0 || query.rules.diversifies())
            && self.is_light(settings, query.k, session + query.live.len() + history, query.exclude_items.len())
    }

    /// Recommends items for a user or an anonymous session.
    ///
    /// # Errors
    /// `InvalidArgument` naming the field when the query is out of its domain.
    pub fn recommend(&self, query: &RecommendQuery, settings: &ServingSettings) -> Result<Recommendations> {
        self.recommend_or_cancel(query, settings, &Cancel::never())
    }

    /// [`Model::recommend`], stopping with [`Error::Cancelled`] once `cancel` is set.
    ///
    /// # Errors
    /// `InvalidArgument` naming the field when the query is out of its domain;
    /// `Cancelled` when cancelled.
    pub fn recommend_or_cancel(&self, query: &RecommendQuery, settings: &ServingSettings, cancel: &Cancel) -> Result<Recommendations> {
        let social = match query.social {
            Some(false) => 0.0,
            // On the contacts' shelf every item is a contact's: how many (and how alike)
            // had it counts as much as the embedding's term (both reach 1).
            _ if query.from_contacts => settings.social_blend.max(1.0),
            Some(true) if settings.social_blend <= 0.0 => crate::params::DEFAULT_SOCIAL_BLEND,
            _ => settings.social_blend,
        };
        // A contacts-only shelf names the contacts, not the communities.
        let community = if query.social == Some(false) || query.from_contacts { 0.0 } else { settings.community_blend };
        let blend = Blend { sequence: settings.sequence_blend, social, community };
        let mut one = self.rank_blends(query, settings, &[blend], cancel)?;
        Ok(one.swap_remove(0))
    }

    /// The same request ranked once per neighbour blend in `blends` (in place of
    /// `settings.sequence_blend`), sharing the work that does not depend on it (the
    /// subject's vector, eligibility, candidate scores, neighbour votes): how tuning
    /// compares blends on one fitted model. With a single blend this is exactly
    /// [`Model::recommend`]. With several, ANN candidates include the neighbours' votes
    /// for every blend, even 0, so an ANN-scored blend 0 may see a few more candidates
    /// than served blend 0 would.
    ///
    /// # Errors
    /// `InvalidArgument` naming the field when the query is out of its domain.
    pub fn recommend_blends(&self, query: &RecommendQuery, settings: &ServingSettings, blends: &[Blend]) -> Result<Vec<Recommendations>> {
        self.rank_blends(query, settings, blends, &Cancel::never())
    }

    fn rank_blends(&self, query: &RecommendQuery, settings: &ServingSettings, blends: &[Blend], cancel: &Cancel) -> Result<Vec<Recommendations>> {
        query.validate()?;
        let mut excluded: Vec<ItemIdx> = query.exclude_items.iter().filter_map(|id| self.item_index(id)).collect();
        excluded.sort_unstable();
        let mut profile = self.profile(&query.subject, &query.live, query.use_stored_history);
        let history = std::mem::take(&mut profile.history);
        // Items the subject had come back only through the rules of the policy (and never
        // when the rules exclude everything interacted with, or ask for diversity: a
        // spread of new items).
        let buy_again = query.seen == SeenPolicy::BuyAgain;
        let (seen, returns) = match query.seen {
            _ if query.rules.exclude_interacted && !buy_again => (history, Vec::new()),
            SeenPolicy::Exclude => (history, Vec::new()),
            SeenPolicy::Include => (Vec::new(), Vec::new()),
            SeenPolicy::Trained | SeenPolicy::BuyAgain => {
                let floor = if buy_again { f32::MIN_POSITIVE } else { 0.0 };
                let returns = if buy_again || (self.repeat().is_active() && !query.rules.diversifies()) {
                    self.repeat().propensity(profile.user, &history, &profile.events, floor)
                } else {
                    Vec::new()
                };
                (history, returns)
            }
        };
        let filter = Eligibility::new(self, &seen, &excluded, ItemFilter::new(self, &query.rules, query.category.as_deref()));
        let recent = std::mem::take(&mut profile.recent);
        // What the user's contacts and communities had, when any ranking weighs it (a
        // stored user only: the graph and the communities know no one else).
        let around = match profile.user {
            Some(u) if query.social != Some(false) => {
                let user = UserIdx(u as u32);
                let weighed = |w: fn(&Blend) -> f32| blends.iter().any(|b| w(b) > 0.0);
                let social = weighed(|b| b.social) && self.has_social();
                let contacts_live = if social { self.contacts_live(&query.contacts_live) } else { ContactsLive::default() };
                let contacts = social
                    .then(|| {
                        let contacts = self.contacts_of(user);
                        let votes = self.social_votes(user, &contacts, &contacts_live);
                        (contacts, votes)
                    })
                    .filter(|(_, v)| !v.is_empty());
                let community = (weighed(|b| b.community) && self.has_communities()).then(|| self.community_votes(user)).filter(|v| !v.is_empty());
                Around { contacts, contacts_live, community }
            }
            _ => Around::default(),
        };
        let mut answers = self.rank_eligible(query, settings, blends, cancel, profile, &recent, &filter, returns, &around)?;
        for answer in &mut answers {
            if query.seen != SeenPolicy::BuyAgain && !query.from_contacts {
                self.explore(answer, &filter, &recent, query, settings);
            }
            self.annotate(&mut answer.items, &query.rules);
        }
        Ok(answers)
    }

    /// [`Model::rank_blends`] once eligibility is settled: buy-again, popular for a
    /// subject without usable history, or personalised once per blend.
    #[allow(clippy::too_many_arguments)]
    fn rank_eligible(
        &self,
        query: &RecommendQuery,
        settings: &ServingSettings,
        blends: &[Blend],
        cancel: &Cancel,
        mut profile: Profile,
        recent: &[ItemIdx],
        filter: &Eligibility<'_>,
        returns: Vec<(f32, ItemIdx)>,
        around: &Around<'_>,
    ) -> Result<Vec<Recommendations>> {
        if query.seen == SeenPolicy::BuyAgain {
            return Ok(vec![self.buy_again(returns, filter, query.k, &query.rules); blends.len()]);
        }
        let personal = profile.vector.take().filter(|v| v.iter().any(|&x| x != 0.0));
        // A user without a usable history but with contacts: their contacts' tastes stand
        // in for theirs (and what the contacts had votes as for everyone).
        let from_friends = personal.is_none();
        let personal = personal.or_else(|| around.contacts.as_ref().and_then(|(contacts, _)| self.contacts_vector(contacts)));
        // The shelf lists what contacts had even when none of them has a vector yet.
        let personal = personal.or_else(|| (query.from_contacts && around.contacts.is_some()).then(|| self.mean_user().to_vec()));
        let Some(u) = personal.filter(|_| !query.from_contacts || around.contacts.is_some()) else {
            if query.from_contacts {
                // Nobody the user knows had anything: an empty shelf, not someone else's list.
                let empty = Recommendations { items: Vec::new(), retrieval: Retrieval::Exact, shortfall: Some(Shortfall::Filters) };
                return Ok(vec![empty; blends.len()]);
            }
            return Ok(vec![self.cold_answer(query, filter); blends.len()]);
        };
        // The memo keeps rankings by the user's own vector, not a stand-in.
        if let (Some(user), [blend], false) = (profile.user, blends, from_friends) {
            if let Some((mut items, mut shortfall)) = self.remembered(query, settings, *blend, user, &u, recent, filter, around, cancel)? {
                if !returns.is_empty() {
                    items = self.mix_returns(items, &returns, filter, query.k);
                    shortfall = shortfall.filter(|_| items.len() < query.k);
                }
                return Ok(vec![Recommendations { items, retrieval: Retrieval::Exact, shortfall }]);
            }
        }
        let votes = if blends.iter().any(|b| b.sequence > 0.0) { self.neighbour_votes(recent, settings) } else { Votes::default() };
        let (raw, retrieval) = match &around.contacts {
            // The shelf's candidates are the contacts' eligible items, scored exactly.
            Some((_, social)) if query.from_contacts => {
                let mut items: Vec<ItemIdx> = social.iter().map(|(i, _)| i).filter(|&i| filter.allows(i)).collect();
                items.sort_unstable();
                (score_all(items.into_iter(), cancel, |i| (dot(&u, self.item_vector(i)), i))?, Retrieval::Exact)
            }
            _ => self.candidates(&u, &votes, around, filter, query, settings, cancel)?,
        };
        let (mut raw, last) = (Some(raw), blends.len().saturating_sub(1));
        let mut answers = Vec::with_capacity(blends.len());
        for (n, &b) in blends.iter().enumerate() {
            // The last (for a served request, the only) blend takes the candidates; the
            // others rank a copy.
            let candidates = if n == last { raw.take().unwrap_or_default() } else { raw.clone().unwrap_or_default() };
            if from_friends && b.social <= 0.0 {
                answers.push(self.cold_answer(query, filter));
                continue;
            }
            let (mut ranked, mut shortfall) = finish(self, self.blend(&u, candidates, &votes, around, b), query.k, &query.rules);
            if shortfall.is_some() && retrieval == Retrieval::Ann {
                // The index's candidates ran short under the caps: every eligible item.
                let all = score_all(filter.all(), cancel, |i| (dot(&u, self.item_vector(i)), i))?;
                (ranked, shortfall) = finish(self, self.blend(&u, all, &votes, around, b), query.k, &query.rules);
            }
            let mut items: Vec<Scored> = ranked
                .into_iter()
                .map(|(score, item)| match (&around.contacts, self.community_pick(around, item, b)) {
                    // A contact had it and that counted (on the shelf, every item is theirs).
                    (Some((contacts, votes)), None) if b.social > 0.0 && votes.contacts_with(item) > 0 && (query.from_contacts || votes.get(item) > 0.0) => {
                        self.social_scored(contacts, &around.contacts_live, item, score)
                    }
                    (_, Some(c)) => Scored {
                        item,
                        score,
                        reason: ReasonKind::Social,
                        reason_text: format!("popular in your community {}", self.communities().name(c)),
                    },
                    _ if from_friends => Scored {
                        item,
                        score,
                        reason: ReasonKind::Social,
                        reason_text: "matches your friends' tastes".to_string(),
                    },
                    _ => self.personal(item, score, recent),
                })
                .collect();
            if !returns.is_empty() && !query.from_contacts {
                items = self.mix_returns(items, &returns, filter, query.k);
                shortfall = shortfall.filter(|_| items.len() < query.k);
            }
            answers.push(Recommendations { items, retrieval, shortfall });
        }
        Ok(answers)
    }

    /// The best `k` eligible items for stored user `user` from their kept ranking (see
    /// [`crate::memo`]), ranking every item new to them first when no kept ranking stands
    /// for this request's state; each with its reason (the user's own: nobody around
    /// weighs in when the memo answers). `None` when the memo does not answer this request: a
    /// ranking it cannot reproduce (an index search, items the user had allowed back,
    /// rules that lift or spread scores, votes from people around), a filter that narrows
    /// to a list (scored item by item, which is cheap and sums in another order than the
    /// catalogue's matrix–vector product), more than a kept ranking holds, or filters that
    /// leave fewer than `k` of the kept items.
    #[allow(clippy::too_many_arguments)]
    fn remembered(
        &self,
        query: &RecommendQuery,
        settings: &ServingSettings,
        blend: Blend,
        user: usize,
        u: &[f32],
        recent: &[ItemIdx],
        filter: &Eligibility<'_>,
        around: &Around<'_>,
        cancel: &Cancel,
    ) -> Result<Option<(Vec<Scored>, Option<Shortfall>)>> {
        let memo = self.rankings();
        let excludes_history = query.seen != SeenPolicy::Include || query.rules.exclude_interacted;
        let applies = memo.is_on()
            && excludes_history
            && query.k <= RANKED
            && filter.narrowed.is_none()
            && !query.from_contacts
            && settings.scores_exactly(self.n_items())
            && !query.rules.boosts()
            && !query.rules.diversifies()
            && !around.weighs(blend);
        if !applies {
            return Ok(None);
        }
        // Everything the kept scores depend on besides the model and the user.
        let state = StateKey::of((query.use_stored_history, blend.sequence.to_bits(), settings.recency_decay.to_bits(), settings.max_recent, &query.live));
        // A request nobody waits for stops here, as scoring would stop it.
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let kept = memo.get(user as u32, state);
        let ranking = match &kept {
            Some(r) => std::sync::Arc::clone(r),
            None => {
                // As the exact path ranks (candidates, blend, finish), over every item
                // new to the user instead of the eligible ones.
                let votes = if blend.sequence > 0.0 { self.neighbour_votes(recent, settings) } else { Votes::default() };
                let all = self.score_every_item(u, cancel)?;
                let new: Vec<(f32, ItemIdx)> = all.iter().enumerate().map(|(i, &s)| (s, ItemIdx(i as u32))).filter(|&(_, i)| !filter.seen_bits.has(i)).collect();
                let complete = new.len() <= RANKED;
                let items = top_k(self.blend(u, new, &votes, around, blend), RANKED);
                let ranking = std::sync::Arc::new(Ranking::new(state, items, complete));
                memo.put(user as u32, ranking.clone());
                // A user forgotten meanwhile keeps nothing (forgetting drops what was kept
                // before it; this drops what a request in flight kept after).
                if self.is_forgotten(UserIdx(user as u32)) {
                    memo.forget(user as u32);
                }
                ranking
            }
        };
        let mut top = Vec::with_capacity(query.k);
        for (at, &(score, item)) in ranking.items.iter().enumerate() {
            if top.len() == query.k {
                break;
            }
            if filter.allows(item) {
                let because = ranking.because(at, || self.because_of(item, recent));
                top.push(self.explained(item, score, because));
            }
        }
        let answers = top.len() == query.k || ranking.complete;
        memo.count(kept.is_some() && answers);
        if !answers {
            return Ok(None);
        }
        let shortfall = (top.len() < query.k).then_some(Shortfall::Filters);
        Ok(Some((top, shortfall)))
    }

    /// Gives the tail of a list to items nobody has interacted with yet, as many slots as
    /// `settings.explore_share` draws for this subject today (see [`crate::explore`]).
    fn explore(&self, answer: &mut Recommendations, filter: &Eligibility<'_>, recent: &[ItemIdx], query: &RecommendQuery, settings: &ServingSettings) {
        if settings.explore_share <= 0.0 {
            return;
        }
        let key = match &query.subject {
            Subject::User(id) => id.as_str(),
            Subject::Session(items) => items.first().map_or("", String::as_str),
        };
        let day = crate::explore::today();
        let n = crate::explore::slots(key, day, settings.explore_share, query.k);
        if n == 0 {
            return;
        }
        let listed: std::collections::HashSet<ItemIdx> = answer.items.iter().map(|s| s.item).collect();
        let now = self.clock();
        let fresh = |i: ItemIdx| self.item(i).listed_within(now, crate::explore::NEW_DAYS);
        let candidates: Vec<ItemIdx> = self.cold_items().filter(|&i| !listed.contains(&i) && fresh(i) && filter.allows_new(i)).collect();
        let picked = crate::explore::pick(self, candidates, recent, key, day, n);
        if picked.is_empty() {
            return;
        }
        // The new items take the last places (or join a short list), each with the score
        // of the place it takes, so the list stays in score order.
        let keep = answer.items.len().min(query.k - picked.len());
        let floor = answer.items.get(keep.saturating_sub(1)).map_or(0.0, |s| s.score);
        let scores: Vec<f32> = (0..picked.len()).map(|j| answer.items.get(keep + j).map_or(floor, |s| s.score)).collect();
        answer.items.truncate(keep);
        answer.items.extend(picked.into_iter().zip(scores).map(|(item, score)| Scored {
            item,
            score,
            reason: ReasonKind::NewArrival,
            reason_text: "new arrival: nobody has tried it yet".to_string(),
        }));
        answer.shortfall = answer.shortfall.filter(|_| answer.items.len() < query.k);
    }

    /// Merges items the subject had (with the probability that each is next) into a
    /// ranking of new items by the probability that the next consumption is each: the
    /// new item at rank `r` gets `(1 − Σ p) · h(r)` (see [`crate::repeat`]). Scores
    /// become those probabilities once any return makes the list; otherwise the ranking
    /// is returned as it was.
    fn mix_returns(&self, novel: Vec<Scored>, returns: &[(f32, ItemIdx)], filter: &Eligibility<'_>, k: usize) -> Vec<Scored> {
        let repeat = self.repeat();
        let returning: f32 = returns.iter().map(|r| r.0).sum::<f32>().min(1.0);
        let mut back: Vec<(f32, ItemIdx)> = returns.iter().copied().filter(|&(_, i)| filter.allows_had(i)).collect();
        back.sort_by(by_score);
        let novel_p = |rank: usize| (1.0 - returning) * repeat.novelty.at(rank);
        // Merge by probability: `take` counts the returns that make the list.
        let (mut n, mut take) = (0, 0);
        while n + take < k && (n < novel.len() || take < back.len()) {
            let back_wins = take < back.len() && (n >= novel.len() || back[take].0 > novel_p(n + 1));
            if back_wins {
                take += 1;
            } else {
                n += 1;
            }
        }
        if take == 0 {
            return novel;
        }
        let mut out: Vec<Scored> = novel
            .into_iter()
            .take(n)
            .enumerate()
            .map(|(r, s)| Scored { score: novel_p(r + 1), ..s })
            .collect();
        out.extend(back.into_iter().take(take).map(|(p, item)| Scored {
            item,
            score: p,
            reason: ReasonKind::Repeat,
            reason_text: format!("you came back to {} before", item_label(self, item)),
        }));
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        out
    }

    /// "Buy it again": the eligible items the subject had, by repeat propensity.
    fn buy_again(&self, mut returns: Vec<(f32, ItemIdx)>, filter: &Eligibility<'_>, k: usize, rules: &Rules) -> Recommendations {
        returns.retain(|&(_, i)| filter.allows_had(i));
        let (ranked, shortfall) = finish(self, returns, k, rules);
        Recommendations {
            items: ranked
                .into_iter()
                .map(|(score, item)| Scored {
                    item,
                    score,
                    reason: ReasonKind::Repeat,
                    reason_text: format!("you had {} before", item_label(self, item)),
                })
                .collect(),
            retrieval: Retrieval::Exact,
            shortfall,
        }
    }

    /// A personalised result with its reason: the one of the latest recent items it is
    /// most like.
    fn personal(&self, item: ItemIdx, score: f32, recent: &[ItemIdx]) -> Scored {
        self.explained(item, score, self.because_of(item, recent))
    }

    /// The recent item a personalised `item` is most like: what its reason names.
    fn because_of(&self, item: ItemIdx, recent: &[ItemIdx]) -> Option<ItemIdx> {
        // The explanation looks at the latest few items only: a reason should name
        // something the user did lately, and each candidate costs a dot product per item.
        const EXPLAINED_BY: usize = 10;
        recent
            .iter()
            .rev()
            .filter(|&&r| self.has_collab(r))
            .take(EXPLAINED_BY)
            .map(|&r| (dot(self.unit_vector(r), self.unit_vector(item)), r))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, r)| r)
    }

    /// A personalised result whose reason names `because`.
    fn explained(&self, item: ItemIdx, score: f32, because: Option<ItemIdx>) -> Scored {
        Scored {
            item,
            score,
            reason: ReasonKind::Personalized,
            reason_text: match because {
                Some(r) => format!("because of your interest in {}", item_label(self, r)),
                None => "matches your history".to_string(),
            },
        }
    }

    /// Who the request is for, as scoring needs it. Live events (see
    /// [`RecommendQuery::live`]) extend a user's stored history, or make one for a user the
    /// model has never seen; the vector is then folded in from both, each live event
    /// weighted as training would weigh it.
    fn profile(&self, subject: &Subject, live: &[LiveEvent], use_stored: bool) -> Profile {
        match subject {
            Subject::User(user_id) => {
                let stored = self.user_index(user_id).filter(|_| use_stored);
                let live: Vec<RecentEvent> = live
                    .iter()
                    .filter_map(|e| {
                        self.trained_item_index(&e.item_id).map(|item| RecentEvent {
                            item,
                            kind: e.kind,
                            timestamp: e.timestamp,
                        })
                    })
                    .collect();
                let mut events: Vec<RecentEvent> = stored.map(|u| self.history(u).recent().to_vec()).unwrap_or_default();
                events.extend(live.iter().copied());
                if live.is_empty() {
                    // The stored history as it is: sorted by item, its vector folded in
                    // at training.
                    let history: Vec<ItemIdx> = stored.map(|u| self.history(u).seen().map(|(i, _)| i).collect()).unwrap_or_default();
                    return Profile {
                        history,
                        vector: stored.map(|u| self.user_vector(u).to_vec()),
                        recent: events.iter().map(|r| r.item).collect(),
                        user: stored.map(|u| u.get()),
                        events,
                    };
                }
                let mut weights: HashMap<u32, f32> = stored.map(|u| self.history(u).seen().map(|(i, w)| (i.0, w)).collect()).unwrap_or_default();
                let kinds = self.manifest().params.weights.event_weights;
                let scale = self.manifest().weight_scale.max(f32::MIN_POSITIVE);
                for e in &live {
                    *weights.entry(e.item.0).or_insert(0.0) += kinds.of(e.kind) / scale;
                }
                let mut weighted: Vec<(u32, f32)> = weights.iter().map(|(&i, &w)| (i, w)).collect();
                weighted.sort_unstable_by_key(|x| x.0);
                let vector = Some(self.fold_in(&weighted));
                let mut history: Vec<ItemIdx> = weights.keys().map(|&i| ItemIdx(i)).collect();
                history.sort_unstable();
                Profile {
                    history,
                    vector,
                    recent: events.iter().map(|r| r.item).collect(),
                    user: stored.map(|u| u.get()),
                    events,
                }
            }
            Subject::Session(ids) => {
                let recent: Vec<ItemIdx> = ids.iter().filter_map(|id| self.trained_item_index(id)).collect();
                let mut history = recent.clone();
                history.sort_unstable();
                history.dedup();
                let weighted: Vec<(u32, f32)> = history.iter().map(|i| (i.0, 1.0)).collect();
                // A session's items count as consumptions of whatever kind returns are
                // counted over.
                let kind = self.repeat().kinds.first().copied().unwrap_or(EventKind::View);
                Profile {
                    vector: (!weighted.is_empty()).then(|| self.fold_in(&weighted)),
                    events: recent.iter().map(|&item| RecentEvent { item, kind, timestamp: None }).collect(),
                    history,
                    recent,
                    user: None,
                }
            }
        }
    }

    /// Votes of the recent items (oldest first) for their neighbours, most recent
    /// strongest, scaled so the strongest vote is 1.
    fn neighbour_votes(&self, recent: &[ItemIdx], settings: &ServingSettings) -> Votes {
        let recent = &recent[recent.len().saturating_sub(settings.max_recent)..];
        let expected: usize = recent.iter().map(|&r| self.neighbours_of(r).len()).sum();
        // Each recent item votes for its neighbours, the latest strongest.
        fn tally(model: &Model, recent: &[ItemIdx], decay: f32, mut add: impl FnMut(usize, f32)) {
            let mut w = 1.0f32;
            for &r in recent.iter().rev() {
                for &(j, s) in model.neighbours_of(r) {
                    add(j as usize, w * s);
                }
                w *= decay;
            }
        }
        let n = self.n_items_with_added();
        let mut votes = if n <= DENSE_VOTES {
            let (mut table, mut voted, mut has) = (vec![0.0f32; n], Vec::with_capacity(expected.min(n)), vec![false; n]);
            tally(self, recent, settings.recency_decay, |j, v| {
                if let (Some(t), Some(h)) = (table.get_mut(j), has.get_mut(j)) {
                    if !*h {
                        *h = true;
                        voted.push(ItemIdx(j as u32));
                    }
                    *t += v;
                }
            });
            Votes::Dense(table, voted)
        } else {
            let mut m = foldhash::HashMap::with_capacity_and_hasher(expected, Default::default());
            tally(self, recent, settings.recency_decay, |j, v| *m.entry(ItemIdx(j as u32)).or_insert(0.0) += v);
            Votes::Sparse(m)
        };
        votes.scale_to_strongest();
        votes
    }

    /// Eligible candidates for user vector `u` with their inner products: every eligible
    /// item (exact), or the ANN index's hits plus the voted and promoted items when the
    /// settings score through the index and that leaves enough (`k`, or several times
    /// `k` under diversity rules).
    #[allow(clippy::too_many_arguments)]
    fn candidates(
        &self,
        u: &[f32],
        votes: &Votes,
        around: &Around<'_>,
        filter: &Eligibility<'_>,
        query: &RecommendQuery,
        settings: &ServingSettings,
        cancel: &Cancel,
    ) -> Result<(Vec<(f32, ItemIdx)>, Retrieval)> {
        let score = |i: ItemIdx| (dot(u, self.item_vector(i)), i);
        let k = query.k;
        let need = if query.rules.diversifies() { k * 4 } else { k };
        // A filter that narrows to a short list is scored exactly: cheaper than searching.
        let narrow = narrow_enough(filter.narrowed.as_ref(), settings, k);
        if !settings.scores_exactly(self.n_items()) && !narrow {
            if let Some(index) = &self.indexes().mips {
                let q = crate::ann::ip_query(u, index.dim());
                // An index of MIPS-transformed vectors (models before the inner-product
                // graph) leaves low-norm items crowded together, which its search wades
                // through: there the items closest in angle (cosine index) and the
                // strongest items by norm, which top most inner products, join the
                // candidates.
                let transformed = index.dim() == u.len() + 1;
                // Room for what the filter drops (up to `SEARCH_ROOM` items at first): a user who
                // had thousands of items searches for four times more each round rather
                // than for all of them at once, and once a search would cost about what
                // scoring everything does (a list of a 32nd of the catalogue), scores
                // exactly.
                let mut want = (need + filter.dropped.min(SEARCH_ROOM)).min(index.len());
                // Candidates whatever the index finds: voted, promoted, new arrivals.
                let mut extra = votes.items();
                extra.extend(around.items());
                extra.extend(query.rules.promoted.iter().filter_map(|(id, _)| self.item_index(id)));
                extra.extend(query.rules.new_arrival_items(self, self.clock()));
                // A user who had more than a first round makes room for starts from the
                // list training made for them (see `model::shortlist`), re-scored with the
                // current vector; a list that live events or filters thinned out falls
                // through to the search.
                if let Some(list) = self.stored_shortlist(query).filter(|_| !transformed) {
                    let mut cands: Vec<ItemIdx> = list.iter().map(|&i| ItemIdx(i)).filter(|&i| filter.allows(i)).collect();
                    // Enough only when the list itself (not the voted or promoted extras)
                    // leaves `need` eligible: else the filter is selective and the search
                    // answers.
                    if cands.len() >= need {
                        cands.extend(extra.iter().copied().filter(|&i| filter.allows(i)));
                        cands.sort_unstable();
                        cands.dedup();
                        return Ok((cands.into_iter().map(score).collect(), Retrieval::Ann));
                    }
                }
                loop {
                    let ef = settings.ef_search.max(want);
                    let mut cands: Vec<ItemIdx> = index.search(&q, want, ef, self.mips_rows()).into_iter().map(|h| ItemIdx(h.item)).collect();
                    if let (true, Some(cosine)) = (transformed, &self.indexes().collab) {
                        cands.extend(cosine.search(&q[..u.len()], want, ef, self.unit_rows()).into_iter().map(|h| ItemIdx(h.item)));
                    }
                    cands.extend_from_slice(&extra);
                    cands.retain(|&i| filter.allows(i));
                    cands.sort_unstable();
                    cands.dedup();
                    // Enough only when the searches (not the strongest items, which pass a
                    // selective filter by chance) left `need` eligible: else search on or
                    // score exactly.
                    if cands.len() >= need {
                        if transformed {
                            cands.extend(self.strongest_items().iter().copied().filter(|&i| filter.allows(i)));
                            cands.sort_unstable();
                            cands.dedup();
                        }
                        return Ok((cands.into_iter().map(score).collect(), Retrieval::Ann));
                    }
                    let next = (want * 4).min(index.len());
                    if want == index.len() || next.saturating_mul(32) > index.len() {
                        break;
                    }
                    want = next;
                }
            }
        }
        if filter.narrowed.is_none() {
            // The whole catalogue: one matrix–vector product, then the eligible items.
            let all = self.score_every_item(u, cancel)?;
            let mut raw = Vec::with_capacity(all.len());
            for (i, &s) in all.iter().enumerate() {
                let i = ItemIdx(i as u32);
                if filter.allows(i) {
                    raw.push((s, i));
                }
            }
            return Ok((raw, Retrieval::Exact));
        }
        Ok((score_all(filter.all(), cancel, score)?, Retrieval::Exact))
    }

    /// The training-time candidate list of the query's stored user, if they have one and
    /// it still stands for them: their stored history counts, items they had are not
    /// asked for (the list holds none), and their live events are too few (a tenth of
    /// their history) to move their vector far from the one the list was ranked by.
    fn stored_shortlist(&self, query: &RecommendQuery) -> Option<&[u32]> {
        if !query.use_stored_history || query.seen == SeenPolicy::Include {
            return None;
        }
        let Subject::User(id) = &query.subject else { return None };
        let user = self.user_index(id)?;
        let list = self.shortlist(user)?;
        (query.live.len() * 10 <= self.history(user).len()).then_some(list)
    }

    /// Blends inner products with neighbour, social and community votes:
    /// `(1 − β)·(u·y)/(|u|·M) + β·vote + γ·social + κ·community`. Inner products are
    /// scaled into [-1, 1] by |u| and the largest item norm M; every kind of vote is
    /// already scaled so the strongest is 1. Without votes (or β = γ = κ = 0) the inner
    /// products stand as they are.
    fn blend(&self, u: &[f32], mut raw: Vec<(f32, ItemIdx)>, votes: &Votes, around: &Around<'_>, blend: Blend) -> Vec<(f32, ItemIdx)> {
        let beta = if votes.is_empty() { 0.0 } else { blend.sequence.clamp(0.0, 1.0) };
        let weighs = around.weighs(blend);
        if beta == 0.0 && !weighs {
            return raw;
        }
        let scale = (1.0 - beta) / (norm(u) * self.max_norm()).max(f32::MIN_POSITIVE);
        if weighs {
            for x in raw.iter_mut() {
                x.0 = scale * x.0 + beta * votes.get(x.1) + around.get(x.1, blend);
            }
        } else {
            for x in raw.iter_mut() {
                x.0 = scale * x.0 + beta * votes.get(x.1);
            }
        }
        raw
    }

    /// The community `item` is a strong pick of (see [`COMMUNITY_REASON`]), when `blend`
    /// weighs it above what the user's contacts had: the reason names the stronger.
    fn community_pick(&self, around: &Around<'_>, item: ItemIdx, blend: Blend) -> Option<u32> {
        let votes = around.community.as_ref().filter(|_| blend.community > 0.0)?;
        let community = votes.get(item);
        let social = around.contacts.as_ref().map_or(0.0, |(_, v)| v.get(item));
        let stronger = blend.community * community > blend.social.max(0.0) * social;
        votes.community(item).filter(|_| community >= COMMUNITY_REASON && stronger)
    }

    /// The answer for a subject without a usable history (nor contacts to stand in): the
    /// popular items of their segment, when their attributes say which (passed in, or
    /// stored for a known user), else the store's.
    fn cold_answer(&self, query: &RecommendQuery, filter: &Eligibility<'_>) -> Recommendations {
        let stored = match &query.subject {
            Subject::User(id) => self.user_index(id).filter(|_| query.use_stored_history).map(|u| self.home_segment(u, query.social != Some(false))),
            Subject::Session(_) => None,
        };
        let segment = query.attributes.clone().or(stored).filter(|s| !s.is_everyone());
        let counted = segment.map(|s| {
            let p = self.segment_popularity(&s);
            (s, p)
        });
        self.popular(filter, query.k, &query.rules, counted.as_ref().map(|(s, p)| (s, p)))
    }

    /// The segment a stored user starts from: their largest community when they belong
    /// to one and `social` signals are on (members of a group chat or buying circle share
    /// more than demographics), else their attributes.
    fn home_segment(&self, user: UserIdx, social: bool) -> Segment {
        let largest = if social { self.communities_of(user).into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))) } else { None };
        match largest {
            Some((community, _)) => Segment { community: Some(community), ..Segment::default() },
            None => Segment::of_user(self.user_attributes(user)),
        }
    }

    /// The mean of a user's `contacts`' vectors (as [`Model::contacts_of`] gives them:
    /// nobody forgotten), each by its edge weight (contacts without a vector left out),
    /// with the typical user's vector as one more contact: a stand-in for a user with none.
    fn contacts_vector(&self, contacts: &[Contact]) -> Option<Vec<f32>> {
        let mut sum = vec![0.0f32; self.manifest().params.als.factors];
        let mut total = 0.0f32;
        for c in contacts.iter().take(crate::social::MAX_CONTACTS) {
            let v = self.user_vector(UserIdx(c.user));
            if v.len() != sum.len() || v.iter().all(|&x| x == 0.0) {
                continue;
            }
            sum.iter_mut().zip(v).for_each(|(s, x)| *s += c.weight * x);
            total += c.weight;
        }
        if total <= 0.0 {
            return None;
        }
        // The typical user counts as one more contact of weight 1: a user known through one
        // or two contacts leans toward what everyone likes (FilmTrust cold start, 3 seeds:
        // Recall@10 0.633 without this prior, 0.655 with it; LastFM's 0.478 and 0.476).
        let mean = self.mean_user();
        Some(sum.into_iter().zip(mean).map(|(s, m)| (s + m) / (total + 1.0)).collect())
    }

    /// The contacts' live events (by id, as the server passes them) on items the model
    /// knows, by contact index.
    fn contacts_live(&self, given: &[(String, Vec<LiveEvent>)]) -> ContactsLive {
        let mut out = ContactsLive::default();
        for (id, events) in given {
            let Some(c) = self.user_index(id) else { continue };
            let events: Vec<(ItemIdx, EventKind)> =
                events.iter().filter(|e| e.kind.is_interaction()).filter_map(|e| self.trained_item_index(&e.item_id).map(|i| (i, e.kind))).collect();
            let h = self.history(c);
            let mut new: Vec<ItemIdx> = events.iter().map(|e| e.0).filter(|&i| !h.has_seen(i)).collect();
            new.sort_unstable();
            new.dedup();
            if !events.is_empty() {
                out.by_contact.insert(c.0, ContactSince { new, events });
            }
        }
        out
    }

    /// What `user`'s contacts had, as votes (see [`crate::social`]). Contacts count by
    /// how alike their taste is (the cosine of the two vectors; every contact alike for a
    /// user without one) times how much their picks are taken up
    /// ([`crate::influence::Influence::vote_factor`]), and each item by how rare it is: friends' favourites that
    /// everyone has say little the embedding does not already know.
    fn social_votes(&self, user: UserIdx, contacts: &[Contact], live: &ContactsLive) -> SocialVotes {
        let me = self.user_vector(user);
        let mine = norm(me);
        let alike = |c: u32| {
            let theirs = self.user_vector(UserIdx(c));
            let alike = match (mine > 0.0, norm(theirs)) {
                (false, _) => 1.0,
                (true, n) if n > 0.0 => (dot(me, theirs) / (mine * n)).max(0.0),
                _ => 0.0,
            };
            alike * self.influence.vote_factor(UserIdx(c))
        };
        // `contacts` come from `contacts_of`, which leaves forgotten users out.
        let items_of = |c: u32| self.history(UserIdx(c)).seen().map(|(i, _)| i);
        crate::social::votes(contacts, items_of, |c| live.new_items(c), alike)
            .weighed(|i| self.popularity(i).max(1.0).powf(-SOCIAL_RARITY))
    }

    /// A result a user's `contacts` had, with a reason naming how many of them had it and
    /// what they did: "3 friends bought this", "liked by alice".
    fn social_scored(&self, contacts: &[Contact], live: &ContactsLive, item: ItemIdx, score: f32) -> Scored {
        let (mut friends, mut followed, mut first_followed, mut strongest) = (0usize, 0usize, None, None::<EventKind>);
        for c in contacts.iter().take(crate::social::MAX_CONTACTS) {
            let h = self.history(UserIdx(c.user));
            let since = live.events(c.user);
            if !(h.has_seen(item) || since.iter().any(|e| e.0 == item)) {
                continue;
            }
            if c.friend {
                friends += 1;
            } else {
                followed += 1;
                first_followed.get_or_insert(c.user);
            }
            let kinds = h.recent().iter().filter(|e| e.item == item).map(|e| e.kind);
            for kind in kinds.chain(since.iter().filter(|e| e.0 == item).map(|e| e.1)) {
                if strongest.is_none_or(|s| social_rank(kind) > social_rank(s)) {
                    strongest = Some(kind);
                }
            }
        }
        let (did, done) = match strongest {
            Some(EventKind::Purchase) => ("bought this", "bought by"),
            Some(EventKind::Like) => ("liked this", "liked by"),
            Some(EventKind::Share) => ("shared this", "shared by"),
            Some(EventKind::Rating) => ("rated this", "rated by"),
            Some(EventKind::Cart) => ("put this in their cart", "in the cart of"),
            Some(EventKind::View | EventKind::Click) => ("viewed this", "viewed by"),
            Some(EventKind::Impression) | None => ("chose this", "chosen by"),
        };
        let plural = |n: usize, one: &str, many: &str| if n == 1 { format!("1 {one}") } else { format!("{n} {many}") };
        let reason_text = match (friends, followed, first_followed) {
            (0, 1, Some(f)) => format!("{done} {}", self.users().id(f)),
            (0, n, _) => format!("{} {did}", plural(n, "person you follow", "people you follow")),
            (f, 0, _) => format!("{} {did}", plural(f, "friend", "friends")),
            (f, n, _) => format!("{} and {} {did}", plural(f, "friend", "friends"), plural(n, "person you follow", "people you follow")),
        };
        Scored { item, score, reason: ReasonKind::Social, reason_text }
    }

    /// The most popular eligible items: store-wide, or within `segment` (its counts
    /// smoothed toward store-wide popularity, see [`crate::segments`]).
    fn popular(&self, filter: &Eligibility<'_>, k: usize, rules: &Rules, segment: Option<(&Segment, &SegmentPopularity)>) -> Recommendations {
        // Popularity order needs no scoring: the first eligible items are the answer, but
        // promotions, diversity and a segment's order choose among a wider pool: the
        // store's top items and every item the segment had.
        let wide = rules.boosts() || rules.diversifies() || segment.is_some();
        let pool = if wide { (k * 10).max(200) } else { k };
        let score = |i: ItemIdx| match segment {
            Some((_, p)) => p.score(self, i),
            None => self.popularity(i),
        };
        let mut candidates: Vec<ItemIdx> = self.popular_order().iter().copied().filter(|&i| filter.allows(i)).take(pool).collect();
        if let Some((_, p)) = segment {
            candidates.extend(p.counts.keys().copied().filter(|&i| filter.allows(i)));
        }
        candidates.extend(rules.promoted.iter().filter_map(|(id, _)| self.item_index(id)).filter(|&i| filter.allows(i)));
        candidates.extend(rules.new_arrival_items(self, self.clock()).into_iter().filter(|&i| filter.allows(i)));
        candidates.sort_unstable();
        candidates.dedup();
        let scored: Vec<(f32, ItemIdx)> = candidates.into_iter().map(|i| (score(i), i)).collect();
        let (mut ranked, mut shortfall) = finish(self, scored, k, rules);
        if shortfall == Some(Shortfall::Diversity) {
            // The pool ran short under the caps: every eligible item.
            let all: Vec<(f32, ItemIdx)> = self.popular_order().iter().copied().filter(|&i| filter.allows(i)).map(|i| (score(i), i)).collect();
            (ranked, shortfall) = finish(self, all, k, rules);
        }
        let text = match segment {
            Some((s, _)) => format!("popular {}", s.among()),
            None => "popular with all users (no history for this user yet)".to_string(),
        };
        popular_answer(ranked, shortfall, ReasonKind::Popular, &text)
    }

    /// The most popular items of `segment` (everyone when it sets no field), under
    /// `rules` and an optional category, over all time or a window of days before `now`
    /// (default: the latest event time known, see [`At`]); also returns how many users
    /// the segment holds.
    ///
    /// # Errors
    /// `InvalidArgument` naming the field for a bad `k`, segment, category or rule;
    /// `FailedPrecondition` for a window on data without unix timestamps.
    pub fn popular_in(&self, segment: &Segment, category: Option<&str>, rules: &Rules, k: usize, window: Window, at: At<'_>) -> Result<(Recommendations, usize)> {
        let (mut answer, users) = self.popular_listing(segment, category, rules, k, window, at)?;
        self.annotate(&mut answer.items, rules);
        Ok((answer, users))
    }

    fn popular_listing(&self, segment: &Segment, category: Option<&str>, rules: &Rules, k: usize, window: Window, at: At<'_>) -> Result<(Recommendations, usize)> {
        let filter = self.listing_filter(segment, category, rules, k)?;
        let days = match window {
            Window::All if segment.is_everyone() => return Ok((self.popular(&filter, k, rules, None), self.n_users())),
            Window::All => {
                let counted = self.segment_popularity(segment);
                let users = counted.users;
                return Ok((self.popular(&filter, k, rules, Some((segment, &counted))), users));
            }
            Window::Days(d) => d,
        };
        let (counts, users) = self.windowed_popularity(segment, days, at)?;
        let scored: Vec<(f32, ItemIdx)> = counts.into_iter().filter(|&(i, _)| filter.allows(i)).map(|(i, c)| (c, i)).collect();
        let text = format!("popular {} in the last {days} day{}", segment.among(), if days == 1 { "" } else { "s" });
        Ok((self.listed(scored, k, rules, ReasonKind::Popular, &text), users))
    }

    /// Items rising fastest in `segment` over the last `days` days against their own
    /// past (see [`crate::trending`]), under `rules` and an optional category; also
    /// returns how many users the segment holds.
    ///
    /// # Errors
    /// As [`Model::popular_in`].
    pub fn trending_in(&self, segment: &Segment, category: Option<&str>, rules: &Rules, k: usize, days: u32, at: At<'_>) -> Result<(Recommendations, usize)> {
        let filter = self.listing_filter(segment, category, rules, k)?;
        let pool = if rules.diversifies() || rules.boosts() { (k * 10).max(200) } else { k };
        let (scored, users) = self.trending(segment, days, at, pool, |i| filter.allows(i))?;
        let what = category.map_or_else(|| "trending".to_string(), |c| format!("trending in {c}"));
        let text = if segment.is_everyone() { what } else { format!("{what} {}", segment.among()) };
        let mut answer = self.listed(scored, k, rules, ReasonKind::Trending, &text);
        self.annotate(&mut answer.items, rules);
        Ok((answer, users))
    }

    /// Checks a listing request and builds its filter.
    fn listing_filter<'a>(&'a self, segment: &Segment, category: Option<&'a str>, rules: &'a Rules, k: usize) -> Result<Eligibility<'a>> {
        validate_k(k)?;
        segment.validate()?;
        rules.validate()?;
        if let Some(c) = category {
            check_ids("category", std::iter::once(&c.to_string()), 1)?;
        }
        Ok(Eligibility::new(self, &[], &[], ItemFilter::new(self, rules, category)))
    }

    /// A ranked list of popular-kind items under the rules, each with `text` as reason.
    fn listed(&self, scored: Vec<(f32, ItemIdx)>, k: usize, rules: &Rules, reason: ReasonKind, text: &str) -> Recommendations {
        let (ranked, shortfall) = finish(self, scored, k, rules);
        popular_answer(ranked, shortfall, reason, text)
    }

    /// Gives items a location or new-arrival rule singled out that reason, ahead of the
    /// one their ranking gave ("near you (1.2 km); because of your interest in …").
    fn annotate(&self, items: &mut [Scored], rules: &Rules) {
        if rules.near.is_none() && rules.new_arrivals.is_none() {
            return;
        }
        let now = self.clock();
        for s in items.iter_mut() {
            if let Some((kind, text)) = rules::reason_prefix(rules, self.item(s.item), now) {
                s.reason = kind;
                s.reason_text = format!("{text}; {}", s.reason_text);
            }
        }
    }

    /// Items most similar to the query item in the given space, best first.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad query; `NotFound` for an unknown item or one without
    /// the embedding the mode needs.
    pub fn similar_items(&self, query: &SimilarQuery, settings: &ServingSettings) -> Result<Vec<Scored>> {
        self.similar_items_or_cancel(query, settings, &Cancel::never())
    }

    /// [`Model::similar_items`], stopping with [`Error::Cancelled`] once `cancel` is set.
    ///
    /// # Errors
    /// As [`Model::similar_items`], and `Cancelled` when cancelled.
    pub fn similar_items_or_cancel(&self, query: &SimilarQuery, settings: &ServingSettings, cancel: &Cancel) -> Result<Vec<Scored>> {
        Ok(self.similar_items_with_shortfall(query, settings, cancel)?.0)
    }

    /// [`Model::similar_items_or_cancel`], also saying why fewer than `k` came back.
    ///
    /// # Errors
    /// As [`Model::similar_items_or_cancel`].
    pub fn similar_items_with_shortfall(
        &self,
        query: &SimilarQuery,
        settings: &ServingSettings,
        cancel: &Cancel,
    ) -> Result<(Vec<Scored>, Option<Shortfall>)> {
        query.validate()?;
        let item_id = &query.item_id;
        let k = query.k;
        let q = self
            .item_index(item_id)
            .ok_or_else(|| Error::NotFound(format!("item `{}` is not in model {}", shown(item_id), self.version())))?;
        let has_c = self.has_collab(q);
        let has_t = self.has_content(q);
        let w = match query.mode {
            SimilarMode::Collaborative if !has_c => {
                return Err(Error::NotFound(format!(
                    "item `{}` has no events, so it has no collaborative embedding; try mode content", shown(item_id)
                )))
            }
            SimilarMode::Content if !has_t => {
                return Err(Error::NotFound(format!(
                    "item `{}` has no catalogue features, so it has no content embedding; try mode collaborative", shown(item_id)
                )))
            }
            SimilarMode::Blend if !has_c && !has_t => {
                return Err(Error::NotFound(format!(
                    "item `{}` has neither events nor catalogue features to compare by", shown(item_id)
                )))
            }
            SimilarMode::Collaborative => 1.0,
            SimilarMode::Content => 0.0,
            SimilarMode::Blend if !has_t => 1.0,
            SimilarMode::Blend if !has_c => 0.0,
            SimilarMode::Blend => settings.similar_blend,
        };
        let score = |i: ItemIdx| {
            let mut s = 0.0;
            if w > 0.0 && self.has_collab(i) {
                s += w * dot(self.unit_vector(q), self.unit_vector(i));
            }
            if w < 1.0 && self.has_content(i) {
                s += (1.0 - w) * dot(self.content_vector(q), self.content_vector(i));
            }
            (s, i)
        };
        let filter = ItemFilter::new(self, &query.rules, None);
        let eligible = |i: &ItemIdx| *i != q && filter.passes(*i);
        let narrowed = filter.narrowed();
        let exact = || match &narrowed {
            Some(members) => score_all(members.iter().copied().filter(eligible), cancel, score),
            None => {
                // Every item: a matrix–vector product per space over the trained items,
                // then the entries edited or added while serving one by one (their
                // vectors are not in the trained matrices).
                let mut all = vec![0.0f32; self.n_items()];
                if w > 0.0 {
                    self.similarity_to_every_item(q, true, w, &mut all, cancel)?;
                }
                if w < 1.0 {
                    self.similarity_to_every_item(q, false, 1.0 - w, &mut all, cancel)?;
                }
                let edited = self.edited_items();
                Ok((0..self.n_items_with_added() as u32)
                    .map(ItemIdx)
                    .filter(eligible)
                    .map(|i| if i.get() < all.len() && edited.binary_search(&i).is_err() { (all[i.get()], i) } else { score(i) })
                    .collect())
            }
        };
        let need = if query.rules.diversifies() { k * 4 } else { k };
        let narrow = narrow_enough(narrowed.as_ref(), settings, k);
        let scored: Vec<(f32, ItemIdx)> = if settings.scores_exactly(self.n_items()) || narrow {
            exact()?
        } else {
            let want = need * 2 + 10;
            let ef = settings.ef_search.max(want);
            let mut cands: Vec<ItemIdx> = Vec::new();
            let indexes = self.indexes();
            if w > 0.0 {
                if let Some(index) = &indexes.collab {
                    cands.extend(index.search(self.unit_vector(q), want, ef, self.unit_rows()).into_iter().map(|h| ItemIdx(h.item)));
                }
            }
            if w < 1.0 {
                if let Some(index) = &indexes.content {
                    cands.extend(index.search(self.content_vector(q), want, ef, self.content_rows()).into_iter().map(|h| ItemIdx(h.item)));
                }
                // Entries written while serving are not in the index (or sit there under
                // their old vector): score them all.
                cands.extend(self.edited_items());
            }
            cands.extend(query.rules.promoted.iter().filter_map(|(id, _)| self.item_index(id)));
            cands.extend(query.rules.new_arrival_items(self, self.clock()));
            cands.sort_unstable();
            cands.dedup();
            let found: Vec<(f32, ItemIdx)> = cands.into_iter().filter(eligible).map(score).collect();
            // Filters left too few of the index's neighbours: every eligible item.
            if found.len() < need { exact()? } else { found }
        };
        let text = match query.mode {
            SimilarMode::Collaborative => "often chosen by the same users",
            SimilarMode::Content => "shares catalogue features",
            SimilarMode::Blend => "similar by co-interaction and catalogue features",
        };
        let (ranked, shortfall) = finish(self, scored, k, &query.rules);
        let mut items: Vec<Scored> = ranked
            .into_iter()
            .map(|(score, item)| Scored {
                item,
                score,
                reason: ReasonKind::Similar,
                reason_text: text.to_string(),
            })
            .collect();
        self.annotate(&mut items, &query.rules);
        Ok((items, shortfall))
    }
}

#[cfg(test)]
mod tests {
    //! Eligibility and validation on the seeded demo store: no external data.

    use std::collections::HashSet;
    use std::sync::OnceLock;

    use super::*;
    use crate::data::Item;
    use crate::model::Upserted;
    use crate::testing::{fast_params, small_model};

    fn model() -> &'static Model {
        static M: OnceLock<Model> = OnceLock::new();
        M.get_or_init(|| small_model(&fast_params()))
    }

    fn ids(m: &Model, r: &Recommendations) -> Vec<String> {
        r.items.iter().map(|s| m.item_id(s.item).to_string()).collect()
    }

    fn query(subject: Subject, k: usize) -> RecommendQuery {
        RecommendQuery {
            subject,
            k,
            seen: SeenPolicy::Exclude,
            exclude_items: Vec::new(),
            category: None,
            rules: Rules::default(),
            attributes: None,
            live: Vec::new(),
            contacts_live: Vec::new(),
            from_contacts: false,
            use_stored_history: true,
            social: None,
        }
    }

    /// Every item a request may return, counted directly.
    fn eligible_count(m: &Model, q: &RecommendQuery) -> usize {
        let excludes_seen = q.seen != SeenPolicy::Include;
        let seen: HashSet<ItemIdx> = match (&q.subject, excludes_seen) {
            (Subject::User(u), true) => m.user_index(u).map(|u| m.history(u).seen().map(|(i, _)| i).collect()).unwrap_or_default(),
            (Subject::Session(s), true) => s.iter().filter_map(|id| m.item_index(id)).collect(),
            _ => HashSet::new(),
        };
        m.items()
            .iter()
            .enumerate()
            .filter(|(i, item)| {
                item.available
                    && !seen.contains(&ItemIdx(*i as u32))
                    && !q.exclude_items.contains(&item.item_id)
                    && q.category.as_ref().is_none_or(|c| &item.category == c)
            })
            .count()
    }

    #[test]
    fn seen_excluded_category_and_unavailable_items_are_never_returned() {
        let m = model();
        let s = m.default_settings();
        let unavailable: HashSet<&str> = m.items().iter().filter(|i| !i.available).map(|i| i.item_id.as_str()).collect();
        assert!(!unavailable.is_empty(), "the demo store has items out of stock");
        for (n, user) in m.user_ids().iter().enumerate().take(40) {
            let u = m.user_index(user).unwrap();
            let seen: HashSet<String> = m.history(u).seen().map(|(i, _)| m.item_id(i).to_string()).collect();
            let mut q = query(Subject::User(user.clone()), 30);
            q.exclude_items = m.items().iter().skip(n % 7).step_by(9).map(|i| i.item_id.clone()).collect();
            if n % 2 == 0 {
                q.category = Some(m.items()[n % 8].category.clone());
            }
            let r = m.recommend(&q, &s).unwrap();
            let got = ids(m, &r);
            assert_eq!(got.len(), q.k.min(eligible_count(m, &q)), "user {user}: exactly min(k, eligible)");
            assert_eq!(got.iter().collect::<HashSet<_>>().len(), got.len(), "no duplicates");
            for id in &got {
                assert!(!seen.contains(id), "user {user} got seen item {id}");
                assert!(!q.exclude_items.contains(id), "user {user} got excluded item {id}");
                assert!(!unavailable.contains(id.as_str()), "user {user} got unavailable item {id}");
                if let Some(c) = &q.category {
                    assert_eq!(&m.item(m.item_index(id).unwrap()).category, c);
                }
            }
            // With the seen filter off, a user's own items may come back, still filtered.
            q.seen = SeenPolicy::Include;
            let all = m.recommend(&q, &s).unwrap();
            assert_eq!(all.items.len(), q.k.min(eligible_count(m, &q)));
            assert!(ids(m, &all).iter().all(|id| !unavailable.contains(id.as_str()) && !q.exclude_items.contains(id)));
        }
    }

    #[test]
    fn unknown_users_get_popular_items_and_sessions_are_personal() {
        let m = model();
        let s = m.default_settings();
        let mut q = query(Subject::User("stranger".into()), 10);
        q.category = Some("books".into());
        let r = m.recommend(&q, &s).unwrap();
        assert_eq!(r.retrieval, Retrieval::Popularity);
        assert_eq!(r.items.len(), 10);
        assert!(r.items.iter().all(|x| x.reason == ReasonKind::Popular && m.item(x.item).category == "books" && m.item(x.item).available));
        assert!(r.items.windows(2).all(|w| w[0].score >= w[1].score), "most popular first");

        let session: Vec<String> = m.items().iter().filter(|i| i.category == "toys").take(3).map(|i| i.item_id.clone()).collect();
        let r = m.recommend(&query(Subject::Session(session.clone()), 10), &s).unwrap();
        assert_eq!(r.retrieval, Retrieval::Exact);
        let got = ids(m, &r);
        assert!(got.iter().all(|id| !session.contains(id)), "session items are seen");
        let toys = r.items.iter().filter(|x| m.item(x.item).category == "toys").count();
        assert!(toys >= 5, "a toys session gets mostly toys, got {toys} of 10");
        // An unknown category matches nothing: an empty list, not an error.
        let mut q = query(Subject::User(m.user_ids()[0].clone()), 10);
        q.category = Some("no-such-category".into());
        assert!(m.recommend(&q, &s).unwrap().items.is_empty());
    }

    #[test]
    fn catalogue_edits_apply_to_filters_and_similar_items_at_once() {
        // Models of their own: edits change the model they are made on.
        let base = model().default_settings();
        for s in [base.exact(), base.ann()] {
            let mut m = small_model(&fast_params());
            m.ensure_indexes(&s);
            // A book becomes a toy: it leaves the books filter and joins the toys one.
            let user = m.user_ids()[2].clone();
            let in_category = |m: &Model, c: &str| {
                let mut q = query(Subject::User(user.clone()), MAX_K);
                q.category = Some(c.into());
                ids(m, &m.recommend(&q, &s).unwrap())
            };
            let books = in_category(&m, "books");
            let moved = books[0].clone();
            let mut entry = m.item(m.item_index(&moved).unwrap()).clone();
            entry.category = "toys".into();
            assert_eq!(m.upsert_item(entry), Upserted::Updated(m.item_index(&moved).unwrap()));
            assert!(!in_category(&m, "books").contains(&moved));
            assert!(in_category(&m, "toys").contains(&moved));
            assert_eq!(m.items_in_category("toys").iter().filter(|&&i| m.item_id(i) == moved).count(), 1);

            // A new toy lands beside the toys it shares features with.
            let toy = m.items().iter().find(|i| i.category == "toys" && i.available && !i.tags.is_empty()).unwrap().clone();
            let new = Item { item_id: "brand-new-toy".into(), ..toy.clone() };
            let Upserted::Added(idx) = m.upsert_item(new.clone()) else { panic!("a new id is added") };
            assert_eq!(idx.get(), m.n_items());
            assert_eq!((m.item_index("brand-new-toy"), m.n_items_with_added()), (Some(idx), m.n_items() + 1));
            let like_toy = m.similar_items(&SimilarQuery { item_id: toy.item_id.clone(), k: 5, mode: SimilarMode::Content, rules: Rules::default() }, &s).unwrap();
            assert_eq!(m.item_id(like_toy[0].item), "brand-new-toy", "its twin comes first");
            for mode in [SimilarMode::Content, SimilarMode::Blend] {
                let of_new = m.similar_items(&SimilarQuery { item_id: "brand-new-toy".into(), k: 5, mode, rules: Rules::default() }, &s).unwrap();
                assert_eq!(m.item_id(of_new[0].item), toy.item_id, "{mode:?}: the new item's twin comes first");
            }
            assert!(matches!(
                m.similar_items(&SimilarQuery { item_id: "brand-new-toy".into(), k: 5, mode: SimilarMode::Collaborative, rules: Rules::default() }, &s),
                Err(Error::NotFound(_))
            ));
            // Added items are not personalised until a retrain, and leave when off sale.
            let all = in_category(&m, "toys");
            assert!(!all.contains(&"brand-new-toy".to_string()));
            m.set_available(idx, false);
            let like_toy = m.similar_items(&SimilarQuery { item_id: toy.item_id.clone(), k: 5, mode: SimilarMode::Content, rules: Rules::default() }, &s).unwrap();
            assert!(like_toy.iter().all(|x| x.item != idx));
            // Upserting it again updates it in place.
            assert_eq!(m.upsert_item(Item { category: "books".into(), ..new }), Upserted::Updated(idx));
            assert_eq!(m.item(idx).category, "books");
            assert!(m.is_available(idx));
        }
    }

    #[test]
    fn bad_queries_name_their_field() {
        let m = model();
        let s = m.default_settings();
        let user = || query(Subject::User("user-0001".into()), 5);
        let cases = [
            (query(Subject::User(String::new()), 5), "user_id"),
            (query(Subject::Session(vec!["sku-0001".into(), String::new()]), 5), "recent_items"),
            (query(Subject::User("user-0001".into()), 0), "k"),
            (query(Subject::User("user-0001".into()), MAX_K + 1), "k"),
            (RecommendQuery { exclude_items: vec![String::new()], ..user() }, "exclude_item_ids"),
            (RecommendQuery { category: Some(String::new()), ..user() }, "category"),
            (query(Subject::User("u".repeat(MAX_ID_BYTES + 1)), 5), "user_id"),
            (query(Subject::Session(vec!["sku-0001".into(); MAX_SESSION_ITEMS + 1]), 5), "recent_items"),
            (RecommendQuery { exclude_items: vec!["x".into(); MAX_EXCLUDED_ITEMS + 1], ..user() }, "exclude_item_ids"),
            (RecommendQuery { exclude_items: vec!["x".repeat(MAX_ID_BYTES + 1)], ..user() }, "exclude_item_ids"),
            (RecommendQuery { category: Some("c".repeat(MAX_ID_BYTES + 1)), ..user() }, "category"),
        ];
        for (q, field) in cases {
            let e = m.recommend(&q, &s).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { field: f, .. } if f == field), "{field}: {e}");
        }
        let similar = |item_id: &str, k| SimilarQuery { item_id: item_id.into(), k, mode: SimilarMode::Blend, rules: Rules::default() };
        assert!(matches!(m.similar_items(&similar("", 5), &s), Err(Error::InvalidArgument { field: "item_id", .. })));
        assert!(matches!(m.similar_items(&similar("sku-0001", 0), &s), Err(Error::InvalidArgument { field: "k", .. })));
        assert!(matches!(m.similar_items(&similar("nope", 5), &s), Err(Error::NotFound(_))));
        assert!(matches!(m.similar_items(&similar(&"x".repeat(MAX_ID_BYTES + 1), 5), &s), Err(Error::InvalidArgument { field: "item_id", .. })));
        // The largest queries the limits allow still answer.
        let mut big = query(Subject::Session(vec!["sku-0001".into(); MAX_SESSION_ITEMS]), MAX_K);
        big.exclude_items = vec!["sku-0002".into(); MAX_EXCLUDED_ITEMS];
        assert!(m.recommend(&big, &s).is_ok());
        let got = m.similar_items(&similar("sku-0001", 5), &s).unwrap();
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|x| m.item_id(x.item) != "sku-0001" && m.item(x.item).available));
    }

    #[test]
    fn settings_switch_scoring_without_touching_the_model() {
        let m = model();
        let s = m.default_settings();
        let q = query(Subject::User(m.user_ids()[3].clone()), 10);
        let exact = m.recommend(&q, &s.exact()).unwrap();
        assert_eq!(exact.retrieval, Retrieval::Exact);
        // No index in a small model: ANN settings fall back to exact scoring.
        assert_eq!(m.recommend(&q, &s.ann()).unwrap().retrieval, Retrieval::Exact);
        let mut indexed = small_model(&fast_params());
        indexed.ensure_indexes(&s.ann());
        let ann = indexed.recommend(&q, &s.ann()).unwrap();
        assert_eq!(ann.retrieval, Retrieval::Ann);
        let (a, e) = (ids(&indexed, &ann), ids(m, &exact));
        let shared = a.iter().filter(|id| e.contains(id)).count();
        assert!(shared >= 8, "ANN shares {shared}/10 with exact");
        // The neighbour blend is read from the settings: turning it off changes scores.
        let off = ServingSettings { sequence_blend: 0.0, ..s };
        let with = m.recommend(&q, &ServingSettings { sequence_blend: 0.5, ..s }).unwrap();
        assert_ne!(m.recommend(&q, &off).unwrap().items, with.items);
    }

    /// A store larger than a kept ranking, so filters can leave too few of its items.
    fn larger_model() -> &'static Model {
        static M: OnceLock<Model> = OnceLock::new();
        M.get_or_init(|| {
            let store = crate::demo::generate(crate::demo::DemoSize { users: 150, items: 640, events_per_user: 20, planted: false }, crate::demo::DEMO_SEED);
            crate::train::train(&store, crate::data::TimeKind::Unix, &fast_params(), &crate::train::NoProgress)
        })
    }

    #[test]
    fn kept_rankings_answer_as_scoring_every_item_does() {
        let m = larger_model();
        let s = m.default_settings();
        assert!(s.sequence_blend > 0.0 && s.scores_exactly(m.n_items()) && m.n_items() > RANKED);
        let blend = Blend { sequence: s.sequence_blend, social: 0.0, community: 0.0 };
        // The reference: two blends at once, which the memo never answers.
        let scored = |q: &RecommendQuery| m.recommend_blends(q, &s, &[blend, blend]).unwrap().swap_remove(0);
        let category = m.items()[0].category.clone();
        let mut others: Vec<String> = m.items().iter().map(|i| i.category.clone()).filter(|c| *c != category).collect();
        others.sort();
        others.dedup();
        let mut fell_back = 0usize;
        for (n, user) in m.user_ids().iter().enumerate().take(60) {
            let plain = query(Subject::User(user.clone()), 10);
            let first = scored(&plain);
            let excluded: Vec<String> = first.items.iter().take(4).map(|x| m.item_id(x.item).to_string()).collect();
            let variants = [
                plain.clone(),
                RecommendQuery { k: 1 + n % 60, seen: SeenPolicy::Trained, ..plain.clone() },
                RecommendQuery { exclude_items: excluded, ..plain.clone() },
                // One category of eight, 50 deep: scored item by item (a narrowing filter).
                RecommendQuery { category: Some(category.clone()), k: 50, ..plain.clone() },
                // The same by excluding the other seven: more than a kept ranking holds.
                RecommendQuery { rules: Rules { exclude_categories: others.clone(), ..Rules::default() }, k: 50, ..plain.clone() },
                RecommendQuery {
                    live: vec![LiveEvent { item_id: m.item_id(ItemIdx((n * 7 % 640) as u32)).to_string(), kind: EventKind::Purchase, timestamp: Some(1_700_000_000) }],
                    ..plain.clone()
                },
            ];
            for q in &variants {
                let want = scored(q);
                // Twice: the first ranks and keeps, the second answers from the kept list.
                for round in 0..2 {
                    let got = m.recommend(q, &s).unwrap();
                    same_answer(&got.items, &want.items, &format!("user {user}, round {round}, {q:?}"));
                    assert_eq!(got.shortfall, want.shortfall);
                }
            }
            // The query excluding seven categories needed more of the eighth than the
            // kept list held: it was answered by scoring every item.
            m.recommend(&plain, &s).unwrap();
            let state = StateKey::of((true, blend.sequence.to_bits(), s.recency_decay.to_bits(), s.max_recent, &Vec::<LiveEvent>::new()));
            let kept = m.rankings().get(m.user_index(user).unwrap().0, state).expect("the plain query's ranking is kept");
            fell_back += usize::from(kept.items.iter().filter(|x| m.item(x.1).category == category).count() < 50);
        }
        assert!(fell_back > 0 && m.kept_rankings() > 0, "the memo kept rankings, and filters made some requests fall back");
        // Taking an item off sale shows at once in an answer from a kept ranking.
        let user = m.user_ids()[0].clone();
        let q = query(Subject::User(user), 10);
        let top = m.recommend(&q, &s).unwrap().items[0].item;
        m.set_available(top, false);
        let after = m.recommend(&q, &s).unwrap();
        m.set_available(top, true);
        assert!(after.items.iter().all(|x| x.item != top));
        same_answer(&after.items, &scored_without(m, &q, &s, top), "off sale");
    }

    /// The same items with the same reasons, and the same scores but for rounding: a
    /// category's items are scored one dot product each, the whole catalogue in one
    /// matrix–vector product, which may sum in another order.
    fn same_answer(got: &[Scored], want: &[Scored], what: &str) {
        let key = |r: &[Scored]| r.iter().map(|x| (x.item, x.reason, x.reason_text.clone())).collect::<Vec<_>>();
        assert_eq!(key(got), key(want), "{what}");
        assert!(got.iter().zip(want).all(|(a, b)| (a.score - b.score).abs() <= 1e-5 * b.score.abs().max(1.0)), "{what}");
    }

    /// The reference answer with `item` off sale.
    fn scored_without(m: &Model, q: &RecommendQuery, s: &ServingSettings, item: ItemIdx) -> Vec<Scored> {
        m.set_available(item, false);
        let b = Blend { sequence: s.sequence_blend, social: 0.0, community: 0.0 };
        let r = m.recommend_blends(q, s, &[b, b]).unwrap().swap_remove(0).items;
        m.set_available(item, true);
        r
    }

    #[test]
    fn ranking_several_blends_at_once_equals_one_call_per_blend() {
        let m = model();
        let s = m.default_settings();
        let blends = [0.0, 0.02, 0.3, 1.0].map(|b| Blend { sequence: b, social: s.social_blend, community: s.community_blend });
        for user in m.user_ids().iter().take(25) {
            let q = query(Subject::User(user.clone()), 12);
            let all = m.recommend_blends(&q, &s, &blends).unwrap();
            assert_eq!(all.len(), blends.len());
            for (r, &b) in all.iter().zip(&blends) {
                let one = m.recommend(&q, &ServingSettings { sequence_blend: b.sequence, ..s }).unwrap();
                assert_eq!(r.items, one.items, "user {user}, blend {b:?}");
            }
        }
    }

    #[test]
    fn an_item_taken_off_sale_disappears_from_every_answer_at_once() {
        let m = small_model(&fast_params());
        let s = m.default_settings();
        let top = |q: &RecommendQuery| m.recommend(q, &s).unwrap().items.iter().map(|x| x.item).collect::<Vec<_>>();
        let user = m.user_ids()[0].clone();
        let personal = top(&query(Subject::User(user.clone()), 5));
        let popular = top(&query(Subject::User("nobody".into()), 5));
        let (a, b) = (personal[0], popular[0]);
        m.set_available(a, false);
        m.set_available(b, false);
        assert!(!top(&query(Subject::User(user.clone()), 50)).contains(&a));
        assert!(!top(&query(Subject::User("nobody".into()), 50)).contains(&b));
        let similar = SimilarQuery { item_id: m.item_id(personal[1]).to_string(), k: 50, mode: SimilarMode::Blend, rules: Rules::default() };
        assert!(m.similar_items(&similar, &s).unwrap().iter().all(|x| x.item != a && x.item != b));
        m.set_available(a, true);
        assert_eq!(top(&query(Subject::User(user), 5))[0], a, "back on sale, back in the list");
    }

    #[test]
    fn cancelled_requests_stop_with_cancelled() {
        let m = model();
        let s = m.default_settings();
        let cancel = Cancel::new();
        let q = query(Subject::User(m.user_ids()[0].clone()), 10);
        assert!(m.recommend_or_cancel(&q, &s, &cancel).is_ok());
        cancel.cancel();
        // Answered from a kept ranking or scored, a cancelled request stops.
        assert!(matches!(m.recommend_or_cancel(&q, &s, &cancel), Err(Error::Cancelled)));
        // Items the user had allowed back: scored every time (no kept ranking answers).
        let include = RecommendQuery { seen: SeenPolicy::Include, ..q.clone() };
        assert!(matches!(m.recommend_or_cancel(&include, &s, &cancel), Err(Error::Cancelled)));
        let similar = SimilarQuery { item_id: "sku-0001".into(), k: 5, mode: SimilarMode::Blend, rules: Rules::default() };
        assert!(matches!(m.similar_items_or_cancel(&similar, &s, &cancel), Err(Error::Cancelled)));
        // Popular answers (no scoring loop) are not affected.
        assert!(m.recommend_or_cancel(&query(Subject::User("stranger".into()), 5), &s, &cancel).is_ok());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn id() -> impl Strategy<Value = String> {
            prop_oneof![
                // Real ids, so some requests get past validation and are scored.
                (0u32..130).prop_map(|n| format!("user-{n:04}")),
                (0u32..100).prop_map(|n| format!("sku-{n:04}")),
                ".{0,300}",
            ]
        }

        /// The demo store's distinct categories and brands.
        fn names(m: &Model) -> (Vec<String>, Vec<String>) {
            let mut c: Vec<String> = m.items().iter().map(|i| i.category.clone()).collect();
            let mut b: Vec<String> = m.items().iter().map(|i| i.brand.clone()).collect();
            c.sort();
            c.dedup();
            b.sort();
            b.dedup();
            (c, b)
        }

        fn pick(all: &[String], mask: u32) -> Vec<String> {
            all.iter().enumerate().filter(|(n, _)| mask & (1 << (n % 32)) != 0).map(|(_, x)| x.clone()).collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            /// Random rule sets on the demo store: no returned item breaks a rule, none
            /// comes twice, and exactly `min(k, eligible)` come back unless a diversity cap
            /// is said to have left fewer.
            #[test]
            fn rules_are_never_broken_and_lists_are_as_full_as_the_rules_allow(
                user in 0usize..140,
                k in 1usize..60,
                include_seen in any::<bool>(),
                masks in (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
                uses in (0u8..4, 0u8..4),
                prices in (proptest::option::of(0f32..210.0), proptest::option::of(0f32..210.0)),
                flags in (any::<bool>(), any::<bool>(), any::<bool>()),
                promoted in proptest::collection::vec((0u32..400, 0f32..2.0), 0..5),
                caps in (proptest::option::of(1usize..4), proptest::option::of(1usize..4), proptest::option::of(0f32..1.0)),
                near in proptest::option::of((0usize..5, 0.5f64..30.0, any::<bool>(), 0f32..1.0)),
                new_arrivals in proptest::option::of((1u32..60, 0f32..1.0)),
            ) {
                let m = model();
                let (categories, brands) = names(m);
                let (min_price, max_price) = match prices {
                    (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b))),
                    other => other,
                };
                let rules = Rules {
                    include_categories: if uses.0 & 1 != 0 { pick(&categories, masks.0) } else { Vec::new() },
                    exclude_categories: if uses.0 & 2 != 0 { pick(&categories, masks.1) } else { Vec::new() },
                    include_brands: if uses.1 & 1 != 0 { pick(&brands, masks.2) } else { Vec::new() },
                    exclude_brands: if uses.1 & 2 != 0 { pick(&brands, masks.3) } else { Vec::new() },
                    min_price,
                    max_price,
                    include_unavailable: flags.0,
                    exclude_interacted: flags.1,
                    promoted: promoted.iter().map(|&(n, b)| (format!("sku-{n:04}"), b)).collect(),
                    max_per_category: caps.0,
                    max_per_brand: caps.1,
                    mmr_lambda: caps.2,
                    near: near.map(|(store, radius_km, within_only, boost)| {
                        let (_, lat, lon) = crate::demo::STORES[store];
                        crate::rules::Near { point: crate::data::GeoPoint { lat, lon }, radius_km, within_only, boost }
                    }),
                    new_arrivals: new_arrivals.map(|(days, boost)| crate::rules::NewArrivals { days, boost }),
                };
                let user_id = if user < m.n_users() { m.user_ids()[user].clone() } else { "a-stranger".to_string() };
                let seen_policy = if include_seen { SeenPolicy::Include } else { SeenPolicy::Exclude };
                let q = RecommendQuery { rules: rules.clone(), seen: seen_policy, ..query(Subject::User(user_id.clone()), k) };
                let passes = |i: ItemIdx| {
                    let it = m.item(i);
                    (rules.include_unavailable || m.is_available(i))
                        && (rules.include_categories.is_empty() || rules.include_categories.contains(&it.category))
                        && !rules.exclude_categories.contains(&it.category)
                        && (rules.include_brands.is_empty() || rules.include_brands.contains(&it.brand))
                        && !rules.exclude_brands.contains(&it.brand)
                        && min_price.is_none_or(|lo| it.price.is_some_and(|p| p >= lo))
                        && max_price.is_none_or(|hi| it.price.is_some_and(|p| p <= hi))
                        && rules.near.is_none_or(|n| !n.within_only || it.location.is_some_and(|p| p.distance_km(&n.point) <= n.radius_km))
                };
                let history: HashSet<ItemIdx> = m.user_index(&user_id).map(|u| m.history(u).seen().map(|(i, _)| i).collect()).unwrap_or_default();
                let excludes_history = !include_seen || rules.exclude_interacted;
                let eligible = (0..m.n_items() as u32).map(ItemIdx).filter(|&i| passes(i) && !(excludes_history && history.contains(&i))).count();
                let exploring = ServingSettings { explore_share: 0.3, ..m.default_settings() };
                for settings in [m.default_settings().exact(), m.default_settings().ann(), exploring] {
                    let r = m.recommend(&q, &settings).unwrap();
                    let got: Vec<ItemIdx> = r.items.iter().map(|x| x.item).collect();
                    prop_assert!(got.iter().all(|&i| passes(i)), "a filter was broken: {:?}", got);
                    prop_assert!(!excludes_history || got.iter().all(|i| !history.contains(i)), "an interacted item came back");
                    let distinct: HashSet<ItemIdx> = got.iter().copied().collect();
                    prop_assert_eq!(distinct.len(), got.len(), "an item came twice");
                    for (cap, field) in [(rules.max_per_category, 0), (rules.max_per_brand, 1)] {
                        if let Some(cap) = cap {
                            let mut per: HashMap<&str, usize> = HashMap::new();
                            for &i in &got {
                                let it = m.item(i);
                                *per.entry(if field == 0 { it.category.as_str() } else { it.brand.as_str() }).or_insert(0) += 1;
                            }
                            prop_assert!(per.values().all(|&n| n <= cap), "a cap was broken: {:?}", per);
                        }
                    }
                    let full = k.min(eligible);
                    if rules.diversifies() {
                        prop_assert!(got.len() <= full);
                        if got.len() < full {
                            prop_assert_eq!(r.shortfall, Some(Shortfall::Diversity));
                        }
                    } else {
                        prop_assert_eq!(got.len(), full, "{} eligible, k {}", eligible, k);
                        prop_assert_eq!(r.shortfall.is_some(), got.len() < k);
                    }
                }
                // Similar items under the same rules: filters and caps hold there too.
                let sq = SimilarQuery { item_id: m.items()[user % m.n_items()].item_id.clone(), k, mode: SimilarMode::Blend, rules: rules.clone() };
                let (items, _) = m.similar_items_with_shortfall(&sq, &m.default_settings().ann(), &Cancel::never()).unwrap();
                prop_assert!(items.iter().all(|x| passes(x.item)));
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any query either answers within the rules or is refused naming a field;
            /// nothing panics.
            #[test]
            fn arbitrary_queries_answer_or_are_refused(
                session in proptest::option::of(proptest::collection::vec(id(), 0..40)),
                user in id(),
                k in 0usize..1100,
                policy in 0usize..4,
                exclude in proptest::collection::vec(id(), 0..20),
                category in proptest::option::of(prop_oneof![Just("toys".to_string()), ".{0,20}"]),
                similar_mode in 0usize..3,
            ) {
                let m = model();
                let s = m.default_settings();
                let q = RecommendQuery {
                    subject: session.map_or(Subject::User(user.clone()), Subject::Session),
                    k,
                    seen: [SeenPolicy::Trained, SeenPolicy::Exclude, SeenPolicy::Include, SeenPolicy::BuyAgain][policy],
                    exclude_items: exclude,
                    category,
                    rules: Rules::default(),
                    attributes: None,
                    live: Vec::new(),
                    contacts_live: Vec::new(),
                    from_contacts: false,
                    use_stored_history: true,
                    social: None,
                };
                match m.recommend(&q, &s) {
                    Ok(r) => {
                        prop_assert!(r.items.len() <= k);
                        prop_assert!(r.items.iter().all(|x| m.is_available(x.item) && !q.exclude_items.iter().any(|e| e == m.item_id(x.item))));
                    }
                    Err(e) => prop_assert!(matches!(e, Error::InvalidArgument { .. }), "{}", e),
                }
                let mode = [SimilarMode::Collaborative, SimilarMode::Content, SimilarMode::Blend][similar_mode];
                match m.similar_items(&SimilarQuery { item_id: user, k, mode, rules: Rules::default() }, &s) {
                    Ok(items) => prop_assert!(items.len() <= k),
                    Err(e) => prop_assert!(matches!(e, Error::InvalidArgument { .. } | Error::NotFound(_)), "{}", e),
                }
            }
        }
    }
}
