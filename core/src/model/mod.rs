//! The trained model in memory: catalogue, users and their histories, embeddings, item
//! neighbours, popularity and (for large catalogues) the ANN indexes.
//!
//! Fields are private. What is stored comes in through [`ModelParts`] (from training or
//! from [`format::load`](crate::model::format::load)); everything derived from it (unit vectors, the popularity
//! order, the category index, which items have which embedding) is computed once in
//! [`Model::from_parts`], so it can never disagree with what it is derived from. Callers
//! address items and users by [`ItemIdx`] / [`UserIdx`]; scoring lives in
//! [`crate::recommend`], the on-disk form in [`format`].

pub mod calibrate;
mod edits;
pub mod format;
pub mod publish;
pub mod shortlist;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::activity::{ActivityTable, Quintiles};
use crate::als::CollabModel;
use crate::content::ContentSpace;
use crate::ann::{ip_item, AnnIndex, Rows};
use crate::data::{Item, User};
use crate::ids::{IdMap, ItemIdx, UserIdx};
use crate::interactions::RecentEvent;
use crate::linalg;
use crate::neighbors::Neighbours;
use crate::repeat::{NoveltyCurve, RepeatModel};
use crate::settings::ServingSettings;

use edits::{CatalogueEdits, Edited};

pub use format::{Counts, FileEntry, Manifest};

/// What the model keeps about one user for scoring.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserHistory {
    /// Every item the user interacted with and its total weight, sorted by item.
    seen: Vec<(u32, f32)>,
    /// The latest events, oldest first.
    recent: Vec<RecentEvent>,
}

impl UserHistory {
    /// A history from `(item, weight)` pairs sorted by item and the latest events.
    pub fn new(seen: Vec<(u32, f32)>, recent: Vec<RecentEvent>) -> UserHistory {
        debug_assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "seen must be sorted by item");
        UserHistory { seen, recent }
    }

    /// Every item interacted with and its total weight, by item index.
    pub fn seen(&self) -> impl ExactSizeIterator<Item = (ItemIdx, f32)> + '_ {
        self.seen.iter().map(|&(i, w)| (ItemIdx(i), w))
    }

    /// Whether the user interacted with `item`.
    pub fn has_seen(&self, item: ItemIdx) -> bool {
        self.seen.binary_search_by_key(&item.0, |&(i, _)| i).is_ok()
    }

    /// The latest events, oldest first.
    pub fn recent(&self) -> &[RecentEvent] {
        &self.recent
    }

    /// Number of distinct items interacted with.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether the user has no interaction at all.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The stored parts of a model, before anything is derived from them.
pub struct ModelParts {
    /// The manifest: counts, parameters, serving settings and file checksums.
    pub manifest: Manifest,
    /// The catalogue in item-index order.
    pub items: Vec<Item>,
    /// User id ↔ user index.
    pub users: IdMap,
    /// Attributes per user index (empty fields when unknown).
    pub user_attributes: Vec<User>,
    /// Per user index, the items interacted with and the latest events.
    pub histories: Vec<UserHistory>,
    /// Distinct users per item.
    pub popularity: Vec<f32>,
    /// Collaborative item factors and the parameters needed to fold users in.
    pub collab: CollabModel,
    /// Per user, the fold-in of their history (`users × factors`).
    pub user_factors: Array2<f32>,
    /// Unit-length content vectors (`items × dim`, zero rows without features).
    pub content: Array2<f32>,
    /// Per item, its strongest neighbours by co-occurrence and transitions.
    pub neighbours: Neighbours,
    /// Whether users come back to items they had (inactive when they do not).
    pub repeat: RepeatModel,
    /// Per user, their activity summary (profiles).
    pub activity: ActivityTable,
}

/// The three HNSW indexes; each is absent when nothing would be in it or when the
/// catalogue is small enough to score exactly.
#[derive(Default)]
pub(crate) struct Indexes {
    /// Inner product over collaborative vectors, through the MIPS transform.
    pub(crate) mips: Option<AnnIndex>,
    /// Cosine over collaborative vectors.
    pub(crate) collab: Option<AnnIndex>,
    /// Cosine over content vectors.
    pub(crate) content: Option<AnnIndex>,
}

/// A trained model, ready to score.
pub struct Model {
    manifest: Manifest,
    items: Vec<Item>,
    item_ids: IdMap,
    users: IdMap,
    user_attributes: Vec<User>,
    histories: Vec<UserHistory>,
    popularity: Vec<f32>,
    /// Item indices by descending popularity, ties by index.
    popular_order: Vec<ItemIdx>,
    collab: CollabModel,
    user_factors: Array2<f32>,
    /// The mean of the stored user vectors with any weight: the "typical user", toward
    /// whom a stand-in vector built from few contacts is pulled. Computed on first use
    /// (only social cold starts need it), not on every load.
    mean_user: OnceLock<Vec<f32>>,
    /// Stored users' rankings kept between requests (see [`crate::memo`]), sized on
    /// first use.
    rankings: OnceLock<crate::memo::RankingMemo>,
    content: Array2<f32>,
    has_collab: Vec<bool>,
    has_content: Vec<bool>,
    /// Trained items without events (no collaborative vector) whose catalogue entry says
    /// when they were listed, by index: what exploration may offer.
    cold: Vec<ItemIdx>,
    /// Trained items with a listing time, by listing time (ties by index): new arrivals
    /// are a suffix.
    by_listing: Vec<(i64, ItemIdx)>,
    /// Per item, the unit-length collaborative vector (zero without events).
    collab_unit: Array2<f32>,
    /// Largest item factor norm (the MIPS transform's M).
    max_norm: f32,
    /// The items with the largest factor norms, largest first (at most
    /// [`Model::STRONGEST`]): the items that top most users' inner products, added to
    /// every ANN candidate set.
    strongest: Vec<ItemIdx>,
    indexes: Indexes,
    /// Training-time candidate lists for users with long histories.
    shortlists: shortlist::Shortlists,
    /// Whom each user is friends with or follows (empty without `social.csv`).
    pub(crate) social: crate::social::SocialGraph,
    /// Who moves their contacts (empty without a social graph).
    pub(crate) influence: crate::influence::Influence,
    /// Which communities each user belongs to (empty without `communities.csv`).
    pub(crate) communities: crate::communities::Communities,
    /// What each community's members had more of than the store (derived from
    /// `communities` and the histories by [`Model::set_communities`]).
    community_picks: std::sync::RwLock<crate::communities::CommunityPicks>,
    /// Memberships changed while serving, over `communities` (see
    /// [`Model::edit_membership`]); `community_edited` says whether there are any.
    community_edits: std::sync::RwLock<crate::communities::MembershipEdits>,
    community_edited: AtomicBool,
    /// Per user, whether they asked to be forgotten while this model serves: their
    /// history no longer votes for their contacts, nor is named in a reason.
    forgotten: Vec<AtomicBool>,
    /// Contacts added and removed while serving, over `social` (see
    /// [`Model::edit_social`]); `social_edited` says whether there are any, so requests
    /// on an unedited graph never take the lock.
    social_edits: std::sync::RwLock<crate::social::SocialEdits>,
    social_edited: AtomicBool,
    /// Category name → its items, sorted by index.
    categories: HashMap<String, Vec<ItemIdx>>,
    /// Brand name → its items, sorted by index.
    brands: HashMap<String, Vec<ItemIdx>>,
    neighbours: Neighbours,
    repeat: RepeatModel,
    pub(crate) activity: ActivityTable,
    /// RFM distributions at the data's latest time, computed on first use.
    pub(crate) quintiles: OnceLock<Quintiles>,
    /// Per item, whether it may be recommended: the catalogue's flag, changed at serving
    /// time by [`Model::set_available`] (an item taken off sale) without a new model.
    available: Vec<AtomicBool>,
    /// Catalogue changes made while serving (see [`Model::upsert_item`]).
    edits: CatalogueEdits,
    /// The trained catalogue's content space, built on the first upsert.
    content_space: OnceLock<ContentSpace>,
}

/// What [`Model::upsert_item`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// A catalogue entry was replaced.
    Updated(ItemIdx),
    /// The item is new to the model.
    Added(ItemIdx),
}

/// The items of each non-empty value of `field` (a category, a brand), in index order.
fn members(items: &[Item], field: impl Fn(&Item) -> &String) -> HashMap<String, Vec<ItemIdx>> {
    let mut by: HashMap<String, Vec<ItemIdx>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let value = field(item);
        if value.is_empty() {
            continue;
        }
        // Looked up first: a new value is copied once, not once per item.
        match by.get_mut(value) {
            Some(list) => list.push(ItemIdx(i as u32)),
            None => {
                by.insert(value.clone(), vec![ItemIdx(i as u32)]);
            }
        }
    }
    by
}

fn nonzero_rows(m: &Array2<f32>) -> Vec<bool> {
    m.rows().into_iter().map(|r| r.iter().any(|&x| x != 0.0)).collect()
}

/// `m · v` in chunks of rows through one matrix–vector product each, every chunk's
/// products handed to `sink(first row, products)`, `cancel` checked between chunks;
/// rows past a short `v` or a non-contiguous `m` fall back to a dot product per row.
fn products(m: &Array2<f32>, v: &[f32], cancel: &crate::cancel::Cancel, mut sink: impl FnMut(usize, &[f32])) -> crate::error::Result<()> {
    const CHUNK: usize = 16_384;
    let d = v.len();
    let mut part = vec![0.0f32; CHUNK.min(m.nrows())];
    let contiguous = m.as_slice().filter(|a| d > 0 && m.ncols() == d && a.len() == m.nrows() * d);
    for start in (0..m.nrows()).step_by(CHUNK) {
        if cancel.is_cancelled() {
            return Err(crate::error::Error::Cancelled);
        }
        let rows = CHUNK.min(m.nrows() - start);
        let part = &mut part[..rows];
        match contiguous {
            Some(all) => linalg::mat_vec(part, &all[start * d..(start + rows) * d], v),
            None => part.iter_mut().enumerate().for_each(|(r, p)| *p = if m.ncols() == d { linalg::dot(row(m, start + r), v) } else { 0.0 }),
        }
        sink(start, part);
    }
    Ok(())
}

/// A whole matrix as the rows an index search measures against (no rows when it is
/// not contiguous, which a model's matrices always are).
fn matrix_rows(m: &Array2<f32>) -> Rows<'_> {
    Rows { data: m.as_slice().unwrap_or(&[]), dim: m.ncols(), scale: 1.0 }
}

fn row(m: &Array2<f32>, i: usize) -> &[f32] {
    m.row(i).to_slice().unwrap_or(&[])
}

impl Model {
    /// Derives everything serving needs from the stored parts. Builds no ANN index; see
    /// [`Model::build_indexes`].
    pub fn from_parts(parts: ModelParts) -> Model {
        let ModelParts {
            manifest,
            items,
            users,
            user_attributes,
            histories,
            popularity,
            collab,
            user_factors,
            content,
            neighbours,
            repeat,
            activity,
        } = parts;
        // The derived tables are independent: built in parallel (a million-item model's
        // take about a second each).
        let ((item_ids, (has_collab, has_content)), ((collab_unit, norms), (popular_order, (categories, brands)))) = rayon::join(
            || {
                rayon::join(
                    || IdMap::from_ids(items.iter().map(|i| i.item_id.clone()).collect()),
                    || rayon::join(|| nonzero_rows(&collab.item_factors), || nonzero_rows(&content)),
                )
            },
            || {
                rayon::join(
                    || {
                        // Unit vectors, and each item's factor norm from the same pass.
                        let mut unit = collab.item_factors.clone();
                        let norms: Vec<f32> = unit.rows_mut().into_iter().map(|mut r| r.as_slice_mut().map_or(0.0, linalg::normalize)).collect();
                        (unit, norms)
                    },
                    || {
                        rayon::join(
                            || {
                                let mut order: Vec<ItemIdx> = (0..items.len() as u32).map(ItemIdx).collect();
                                order.sort_unstable_by(|a, b| popularity[b.get()].total_cmp(&popularity[a.get()]).then(a.cmp(b)));
                                order
                            },
                            || (members(&items, |i| &i.category), members(&items, |i| &i.brand)),
                        )
                    },
                )
            },
        );
        let forgotten = (0..histories.len()).map(|_| AtomicBool::new(false)).collect();
        let cold = (0..items.len() as u32).map(ItemIdx).filter(|i| !has_collab[i.get()] && items[i.get()].listed_at.is_some()).collect();
        let mut by_listing: Vec<(i64, ItemIdx)> = items.iter().enumerate().filter_map(|(i, it)| it.listed_at.map(|t| (t, ItemIdx(i as u32)))).collect();
        by_listing.sort_unstable();
        let max_norm = norms.iter().copied().fold(0.0f32, f32::max);
        let mut strongest: Vec<(f32, ItemIdx)> = norms.iter().enumerate().map(|(i, &n)| (n, ItemIdx(i as u32))).filter(|x| x.0 > 0.0).collect();
        if strongest.len() > Self::STRONGEST {
            strongest.select_nth_unstable_by(Self::STRONGEST, |a, b| b.0.total_cmp(&a.0));
            strongest.truncate(Self::STRONGEST);
        }
        strongest.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let strongest: Vec<ItemIdx> = strongest.into_iter().map(|x| x.1).collect();
        let available = items.iter().map(|i| AtomicBool::new(i.available)).collect();
        Model {
            available,
            edits: CatalogueEdits::new(items.len()),
            content_space: OnceLock::new(),
            activity,
            quintiles: OnceLock::new(),
            manifest,
            items,
            item_ids,
            users,
            user_attributes,
            histories,
            popular_order,
            popularity,
            collab,
            user_factors,
            mean_user: OnceLock::new(),
            rankings: OnceLock::new(),
            content,
            has_collab,
            has_content,
            cold,
            by_listing,
            collab_unit,
            max_norm,
            strongest,
            indexes: Indexes::default(),
            shortlists: shortlist::Shortlists::default(),
            social: crate::social::SocialGraph::default(),
            influence: crate::influence::Influence::default(),
            communities: crate::communities::Communities::default(),
            community_picks: Default::default(),
            community_edits: Default::default(),
            community_edited: AtomicBool::new(false),
            forgotten,
            social_edits: Default::default(),
            social_edited: AtomicBool::new(false),
            categories,
            brands,
            neighbours,
            repeat,
        }
    }

    /// Builds the three HNSW indexes (inner product over item vectors scaled into the unit
    /// ball, collaborative cosine, content cosine), replacing any the model had.
    pub fn build_indexes(&mut self) {
        let hp = self.manifest.params.hnsw;
        let d = self.collab.item_factors.ncols();
        // One index at a time, each one's input vectors dropped once it holds its copy.
        let build = |points: Vec<(u32, Vec<f32>)>, dim: usize| {
            let t = std::time::Instant::now();
            let built = (!points.is_empty()).then(|| AnnIndex::build(&points, dim, hp));
            tracing::debug!(dim, points = points.len(), seconds = t.elapsed().as_secs_f64(), "HNSW index built");
            built
        };
        let max_norm = self.max_norm;
        self.indexes = Indexes {
            mips: build(Self::index_points(&self.has_collab, &self.collab.item_factors, |y| ip_item(y, max_norm)), d),
            collab: build(Self::index_points(&self.has_collab, &self.collab_unit, <[f32]>::to_vec), d),
            content: build(Self::index_points(&self.has_content, &self.content, <[f32]>::to_vec), self.content.ncols()),
        };
    }

    /// Builds the indexes if `settings` score this catalogue through them and the model
    /// has none yet (small catalogues are published without indexes).
    pub fn ensure_indexes(&mut self, settings: &ServingSettings) {
        if !settings.scores_exactly(self.n_items()) && !self.has_indexes() {
            self.build_indexes();
        }
    }

    /// Whether the model holds its ANN indexes.
    pub fn has_indexes(&self) -> bool {
        self.indexes.mips.is_some() || self.indexes.collab.is_some() || self.indexes.content.is_some()
    }

    /// `(item, vector)` for every item that has one.
    fn index_points(has: &[bool], rows: &Array2<f32>, map: impl Fn(&[f32]) -> Vec<f32>) -> Vec<(u32, Vec<f32>)> {
        has.iter()
            .enumerate()
            .filter(|(_, &h)| h)
            .map(|(i, _)| (i as u32, map(row(rows, i))))
            .collect()
    }

    /// The manifest: version, counts, parameters, files.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub(crate) fn manifest_mut(&mut self) -> &mut Manifest {
        &mut self.manifest
    }

    /// Records the last event-log position the training data included.
    pub fn record_log_position(&mut self, position: u64) {
        self.manifest.log_position = position;
    }

    /// Records how the parameters were chosen (written to the manifest on save).
    /// The hit curve it measured, if any, becomes the model's (see [`Model::set_novelty`]).
    pub fn record_tuning(&mut self, report: crate::params::TuningReport) {
        if let Some(curve) = report.novelty {
            self.set_novelty(curve);
        }
        self.manifest.tuning = Some(report);
    }

    /// What the model learned about users coming back to items they had.
    pub fn repeat(&self) -> &RepeatModel {
        &self.repeat
    }

    /// Records the hit curve of new items measured on a validation slice, which places
    /// returning items among new ones under the trained seen-items policy.
    pub fn set_novelty(&mut self, curve: NoveltyCurve) {
        self.repeat.set_novelty(curve);
    }

    /// User id ↔ user index.
    pub fn users(&self) -> &IdMap {
        &self.users
    }

    /// Whom each user is friends with or follows.
    pub fn social(&self) -> &crate::social::SocialGraph {
        &self.social
    }

    /// Sets the social graph (built over this model's user indices).
    pub fn set_social(&mut self, graph: crate::social::SocialGraph) {
        self.social = graph;
    }

    /// Whether any user has a contact (trained or added while serving).
    pub fn has_social(&self) -> bool {
        !self.social.is_empty() || self.social_edited.load(Ordering::Acquire)
    }

    /// `user`'s contacts as they stand: the trained ones corrected by live edits,
    /// strongest first.
    pub fn contacts_of(&self, user: UserIdx) -> Cow<'_, [crate::social::Contact]> {
        let trained = self.social.contacts(user);
        let contacts = if self.social_edited.load(Ordering::Acquire) {
            let edits = self.social_edits.read().unwrap_or_else(|p| p.into_inner());
            Cow::Owned(edits.contacts(user.0, trained))
        } else {
            Cow::Borrowed(trained)
        };
        // Forgotten users are nobody's contact: they take no place among the strongest.
        if contacts.iter().any(|c| self.is_forgotten(UserIdx(c.user))) {
            return Cow::Owned(contacts.iter().filter(|c| !self.is_forgotten(UserIdx(c.user))).copied().collect());
        }
        contacts
    }

    /// Whether `user` may have contacts (cheap: no list is built; true when unsure).
    pub fn may_have_contacts(&self, user: UserIdx) -> bool {
        let trained = self.social.contacts(user);
        if !self.social_edited.load(Ordering::Acquire) {
            return !trained.is_empty();
        }
        self.social_edits.read().unwrap_or_else(|p| p.into_inner()).may_have_contacts(user.0, trained)
    }

    /// Adds (or with `remove`, takes away) a social edge while serving, as `social.csv`
    /// would: a friendship both ways, a follow one way; a removed friendship takes both
    /// directions away, a removed follow one. Returns false, changing nothing, when the
    /// model does not know both users or the edge is a self-loop (a retrain that reads the
    /// event log takes the edge in).
    pub fn edit_social(&self, edge: &crate::data::SocialEdge, remove: bool) -> bool {
        let (Some(a), Some(b)) = (self.user_index(&edge.user_id), self.user_index(&edge.other_id)) else {
            return false;
        };
        if a == b {
            return false;
        }
        let friend = edge.kind == crate::data::SocialKind::Friend;
        let weight = crate::social::edge_weight(edge.weight);
        let mut edits = self.social_edits.write().unwrap_or_else(|p| p.into_inner());
        let pairs: &[(u32, u32)] = if friend { &[(a.0, b.0), (b.0, a.0)] } else { &[(a.0, b.0)] };
        // A user at the live cap keeps their contacts until a retrain takes the edge in.
        if !remove && !pairs.iter().all(|&(from, to)| edits.can_add(from, to)) {
            return false;
        }
        // A follow added or taken away on a friendship leaves the other side following
        // (as a retrain reading the log has it): no longer a friend.
        if !friend {
            let other_side = edits.contacts(b.0, self.social.contacts(b)).into_iter().find(|c| c.user == a.0 && c.friend);
            if let Some(c) = other_side.filter(|_| edits.can_add(b.0, a.0)) {
                edits.add(b.0, a.0, c.weight, false);
            }
        }
        for &(from, to) in pairs {
            if remove {
                let trained = self.social.contacts(UserIdx(from)).iter().any(|c| c.user == to);
                edits.remove(from, to, trained);
            } else {
                edits.add(from, to, weight, friend);
            }
        }
        self.social_edited.store(true, Ordering::Release);
        true
    }

    /// Which communities each user belongs to.
    pub fn communities(&self) -> &crate::communities::Communities {
        &self.communities
    }

    /// Sets the community table (built over this model's user indices) and counts each
    /// community's picks from the histories.
    pub fn set_communities(&mut self, communities: crate::communities::Communities) {
        let picks = crate::communities::CommunityPicks::compute(&communities, self.n_users(), |u| self.kept_items(u), |i| self.pick_weight(i));
        self.community_picks = std::sync::RwLock::new(picks);
        self.communities = communities;
    }

    /// What `user` had, as community picks count it: nothing once they were forgotten.
    fn kept_items(&self, user: UserIdx) -> impl Iterator<Item = ItemIdx> + '_ {
        self.history(user).seen().take(if self.is_forgotten(user) { 0 } else { usize::MAX }).map(|(i, _)| i)
    }

    /// How much one member's item counts toward a community pick: rarer items more.
    fn pick_weight(&self, item: ItemIdx) -> f32 {
        self.popularity(item).max(1.0).powf(-crate::recommend::SOCIAL_RARITY)
    }

    /// Whether `user` belongs to any community (as trained and changed while serving),
    /// without listing them.
    pub fn in_a_community(&self, user: UserIdx) -> bool {
        let trained = self.communities.of_user(user);
        if !self.community_edited.load(Ordering::Acquire) {
            return !trained.is_empty();
        }
        let edits = self.community_edits.read().unwrap_or_else(|p| p.into_inner());
        !edits.joined(user.0).is_empty() || trained.iter().any(|&c| !edits.has_left(user.0, self.communities.name(c)))
    }

    /// Whether any user belongs to a community (as trained or since).
    pub fn has_communities(&self) -> bool {
        !self.communities.is_empty() || self.community_edited.load(Ordering::Acquire)
    }

    /// The picks of `user`'s communities, as votes (none for a user in no community, or
    /// only in communities created since training).
    pub fn community_votes(&self, user: UserIdx) -> crate::communities::CommunityVotes {
        let picks = self.community_picks.read().unwrap_or_else(|p| p.into_inner());
        if !self.community_edited.load(Ordering::Acquire) {
            return crate::communities::CommunityVotes::of(&picks, self.communities.of_user(user).iter().copied());
        }
        let member_of = self.communities_of(user).into_iter().filter_map(|(c, _)| self.communities.index(&c));
        crate::communities::CommunityVotes::of(&picks, member_of)
    }

    /// Whether `user` is in `segment`: their attributes match and, when the segment
    /// names a community, they belong to it; never a user who was forgotten (segment
    /// Popular, Trending and ListUsers stop counting them at once).
    pub fn in_segment(&self, segment: &crate::segments::Segment, user: UserIdx) -> bool {
        !self.is_forgotten(user) && segment.contains(self.user_attributes(user)) && segment.community.as_ref().is_none_or(|c| self.is_member(user, c))
    }

    /// Whether `user` belongs to `community`, as trained and changed while serving.
    pub fn is_member(&self, user: UserIdx, community: &str) -> bool {
        let trained = self.communities.index(community).is_some_and(|c| self.communities.contains(c, user));
        if !self.community_edited.load(Ordering::Acquire) {
            return trained;
        }
        self.community_edits.read().unwrap_or_else(|p| p.into_inner()).is_member(user.0, community, trained)
    }

    /// The communities `user` belongs to with their trained member counts (0 for one
    /// created while serving), as trained and changed while serving.
    pub fn communities_of(&self, user: UserIdx) -> Vec<(String, u32)> {
        let trained = self.communities.of_user(user).iter().map(|&c| (self.communities.name(c).to_string(), self.communities.size(c)));
        if !self.community_edited.load(Ordering::Acquire) {
            return trained.collect();
        }
        let edits = self.community_edits.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, u32)> = trained.filter(|(name, _)| !edits.has_left(user.0, name)).collect();
        let kept: foldhash::HashSet<String> = out.iter().map(|(name, _)| name.clone()).collect();
        for c in edits.joined(user.0).iter().filter(|c| !kept.contains(c.as_str())) {
            out.push((c.clone(), self.communities.index(c).map_or(0, |i| self.communities.size(i))));
        }
        out
    }

    /// `user_id` joins (or with `remove`, leaves) `community_id` while serving. Returns
    /// false, changing nothing, for a user the model does not know (a retrain that reads
    /// the event log takes the membership in).
    pub fn edit_membership(&self, membership: &crate::data::Membership, remove: bool) -> bool {
        let Some(user) = self.user_index(&membership.user_id) else { return false };
        let community = &membership.community_id;
        let trained = self.communities.index(community).is_some_and(|c| self.communities.contains(c, user));
        let mut edits = self.community_edits.write().unwrap_or_else(|p| p.into_inner());
        let taken = if remove {
            edits.leave(user.0, community, trained);
            true
        } else {
            edits.join(user.0, community)
        };
        self.community_edited.store(true, Ordering::Release);
        taken
    }

    /// Who moves their contacts (see [`crate::influence`]).
    pub fn influence(&self) -> &crate::influence::Influence {
        &self.influence
    }

    /// Sets the influence table (computed over this model's social graph).
    pub fn set_influence(&mut self, influence: crate::influence::Influence) {
        self.influence = influence;
    }

    /// Forgets `user` as a contact and member, on this shared model as it serves: their
    /// history no longer votes in their friends' and followers' recommendations nor
    /// counts in their communities' picks, and no segment or community counts them (see
    /// [`Model::in_segment`]). Their own requests are the server's business: it stops
    /// using their stored history.
    pub fn forget_user(&self, user: UserIdx) {
        self.forget_users(&[user]);
    }

    /// [`Model::forget_user`] for many users at once: each community's picks are counted
    /// again once, however many of its members go.
    pub fn forget_users(&self, users: &[UserIdx]) {
        let mut recount: Vec<u32> = Vec::new();
        for &user in users {
            if let Some(f) = self.forgotten.get(user.0 as usize) {
                f.store(true, Ordering::Relaxed);
            }
            // Their kept ranking came from their history too.
            if let Some(memo) = self.rankings.get() {
                memo.forget(user.0);
            }
            recount.extend_from_slice(self.communities.of_user(user));
        }
        recount.sort_unstable();
        recount.dedup();
        if !recount.is_empty() {
            let mut picks = self.community_picks.write().unwrap_or_else(|p| p.into_inner());
            picks.recount(&recount, &self.communities, self.n_users(), |u| self.kept_items(u), |i| self.pick_weight(i));
        }
    }

    /// Whether `user` was forgotten (see [`Model::forget_user`]).
    pub fn is_forgotten(&self, user: UserIdx) -> bool {
        self.forgotten.get(user.0 as usize).is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// The version name.
    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    /// The settings the trainer chose; the server's defaults.
    pub fn default_settings(&self) -> ServingSettings {
        self.manifest.serving
    }

    /// Number of items in the trained catalogue (items added while serving come after
    /// them; see [`Model::n_items_with_added`]).
    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// Number of items including those added while serving.
    pub fn n_items_with_added(&self) -> usize {
        self.items.len() + self.edits.n_added()
    }

    /// Number of users with a history.
    pub fn n_users(&self) -> usize {
        self.histories.len()
    }

    /// Every item as trained, by index (see [`Model::item`] for the current entry).
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Whether `item` may be recommended now (see [`Model::set_available`]).
    #[inline]
    pub fn is_available(&self, item: ItemIdx) -> bool {
        match self.available.get(item.get()) {
            Some(a) => a.load(Ordering::Relaxed),
            None => self.edits.added_available(item).unwrap_or(false),
        }
    }

    /// Takes `item` off sale (or back on) for every later request, on this shared model
    /// as it serves; the stored catalogue entry keeps the trained value.
    pub fn set_available(&self, item: ItemIdx, available: bool) {
        match self.available.get(item.get()) {
            Some(a) => a.store(available, Ordering::Relaxed),
            None => {
                self.edits.set_added_available(item, available);
            }
        }
    }

    /// Writes a catalogue entry while serving, on this shared model: a known item's entry
    /// is replaced (category, price, title, brand, tags and availability apply from the
    /// next request on), an unknown one is added after the trained items. Either gets its
    /// content vector from the trained catalogue's vocabulary and IDF, so it takes part in
    /// content and blended similar items at once. Added items have no collaborative
    /// vector, so personalised recommendations offer them only after a retrain. The first
    /// call builds the content space (one pass over the catalogue).
    pub fn upsert_item(&self, item: Item) -> Upserted {
        let space = self.content_space.get_or_init(|| ContentSpace::of(&self.items, &self.manifest.params.content));
        let mut content = space.embed(&item);
        if content.iter().all(|&x| x == 0.0) {
            content = Vec::new();
        }
        let trained = self.items_index(&item.item_id);
        let available = item.available;
        let (at, new) = self.edits.write(trained, Edited { item, content });
        if trained.is_some() {
            self.set_available(at, available);
        }
        if new {
            Upserted::Added(at)
        } else {
            Upserted::Updated(at)
        }
    }

    /// The current catalogue entry of `item` (as last upserted, else as trained).
    pub fn item(&self, item: ItemIdx) -> &Item {
        match self.edits.get(item) {
            Some(e) => &e.item,
            None => &self.items[item.get()],
        }
    }

    /// The external id of `item`.
    pub fn item_id(&self, item: ItemIdx) -> &str {
        &self.item(item).item_id
    }

    /// The index of an external item id, including items added while serving.
    pub fn item_index(&self, item_id: &str) -> Option<ItemIdx> {
        self.items_index(item_id).or_else(|| self.edits.added_index(item_id))
    }

    /// The index of an item the model was trained with.
    pub fn trained_item_index(&self, item_id: &str) -> Option<ItemIdx> {
        self.items_index(item_id)
    }

    fn items_index(&self, item_id: &str) -> Option<ItemIdx> {
        self.item_ids.get(item_id).map(ItemIdx)
    }

    /// The index of an external user id.
    pub fn user_index(&self, user_id: &str) -> Option<UserIdx> {
        self.users.get(user_id).map(UserIdx)
    }

    /// Every user id, by index.
    pub fn user_ids(&self) -> &[String] {
        self.users.ids()
    }

    /// The history of `user`.
    pub fn history(&self, user: UserIdx) -> &UserHistory {
        &self.histories[user.get()]
    }

    /// Every user's history, by index.
    pub fn histories(&self) -> &[UserHistory] {
        &self.histories
    }

    /// The attributes of `user` (empty fields when unknown).
    pub fn user_attributes(&self, user: UserIdx) -> &User {
        &self.user_attributes[user.get()]
    }

    /// Distinct users who interacted with `item`.
    pub fn popularity(&self, item: ItemIdx) -> f32 {
        self.popularity.get(item.get()).copied().unwrap_or(0.0)
    }

    /// Items by descending popularity, ties by index.
    pub fn popular_order(&self) -> &[ItemIdx] {
        &self.popular_order
    }

    /// Whether `item` has a collaborative embedding (it has events).
    pub fn has_collab(&self, item: ItemIdx) -> bool {
        self.has_collab.get(item.get()).copied().unwrap_or(false)
    }

    /// Whether `item` has a content embedding (it has catalogue features).
    pub fn has_content(&self, item: ItemIdx) -> bool {
        match self.edits.get(item) {
            Some(e) => !e.content.is_empty(),
            None => self.has_content[item.get()],
        }
    }

    /// The items whose current category is `category`, sorted by index, trained and
    /// added (empty for an unknown category).
    pub fn items_in_category(&self, category: &str) -> Cow<'_, [ItemIdx]> {
        let trained = self.categories.get(category).map_or(&[][..], Vec::as_slice);
        self.current_members(trained, || self.edits.moved_into(category), |item| item.category == category)
    }

    /// The items whose current brand is `brand`, sorted by index, trained and added.
    pub fn items_of_brand(&self, brand: &str) -> Cow<'_, [ItemIdx]> {
        let trained = self.brands.get(brand).map_or(&[][..], Vec::as_slice);
        self.current_members(trained, || self.edits.moved_into_brand(brand), |item| item.brand == brand)
    }

    /// A trained member list, corrected for catalogue edits: items an edit brought in
    /// added, items that no longer match dropped.
    fn current_members<'a>(&'a self, trained: &'a [ItemIdx], moved_in: impl FnOnce() -> Vec<ItemIdx>, matches: impl Fn(&Item) -> bool) -> Cow<'a, [ItemIdx]> {
        if !self.edits.any() {
            return Cow::Borrowed(trained);
        }
        let mut members: Vec<ItemIdx> = trained.iter().copied().chain(moved_in()).collect();
        members.sort_unstable();
        members.dedup();
        members.retain(|&i| matches(self.item(i)));
        Cow::Owned(members)
    }

    /// Items nobody has interacted with yet and whose listing time is known: trained
    /// items without events listed in the catalogue with a date, and items added while
    /// serving (listed when added), by index.
    pub(crate) fn cold_items(&self) -> impl Iterator<Item = ItemIdx> + '_ {
        self.cold.iter().copied().chain((self.n_items() as u32..self.n_items_with_added() as u32).map(ItemIdx))
    }

    /// Items listed at `since` or later (trained, and edited or added while serving).
    pub(crate) fn listed_since(&self, since: i64) -> Vec<ItemIdx> {
        let start = self.by_listing.partition_point(|&(t, _)| t < since);
        let mut out: Vec<ItemIdx> = self.by_listing[start..].iter().map(|&(_, i)| i).filter(|&i| self.item(i).listed_at.is_some_and(|t| t >= since)).collect();
        out.extend(self.edits.edited().into_iter().filter(|&i| self.item(i).listed_at.is_some_and(|t| t >= since)));
        out.sort_unstable();
        out.dedup();
        out
    }

    /// "Now" for rules that count days: the latest event time the model holds, or the
    /// clock for a model whose data has no unix times.
    pub fn clock(&self) -> i64 {
        self.activity.now.filter(|_| self.manifest.time_kind == crate::data::TimeKind::Unix).unwrap_or_else(crate::data::unix_now)
    }

    /// Every item edited or added while serving, sorted.
    pub(crate) fn edited_items(&self) -> Vec<ItemIdx> {
        self.edits.edited()
    }

    pub(crate) fn item_vector(&self, item: ItemIdx) -> &[f32] {
        row(&self.collab.item_factors, item.get())
    }

    /// `u · y` for every trained item, by index: one matrix–vector product (see
    /// [`products`]).
    pub(crate) fn score_every_item(&self, u: &[f32], cancel: &crate::cancel::Cancel) -> crate::error::Result<Vec<f32>> {
        let mut out = vec![0.0f32; self.n_items()];
        products(&self.collab.item_factors, u, cancel, |start, p| out[start..start + p.len()].copy_from_slice(p))?;
        Ok(out)
    }

    /// Adds `weight ×` the cosine between `q` and every trained item to `out`, in the
    /// collaborative space (`collab`) or the content space (see [`products`]). Rows
    /// without a vector are zero and add 0.
    pub(crate) fn similarity_to_every_item(&self, q: ItemIdx, collab: bool, weight: f32, out: &mut [f32], cancel: &crate::cancel::Cancel) -> crate::error::Result<()> {
        let (matrix, v) = if collab { (&self.collab_unit, self.unit_vector(q)) } else { (&self.content, self.content_vector(q)) };
        let v: Vec<f32> = v.iter().map(|x| x * weight).collect();
        products(matrix, &v, cancel, |start, p| out[start..start + p.len()].iter_mut().zip(p).for_each(|(o, p)| *o += p))
    }

    /// What the inner-product index measures against: the item factors, scaled by
    /// `1 / M` as they were when it was built (see [`crate::ann::ip_item`]).
    pub(crate) fn mips_rows(&self) -> Rows<'_> {
        let m = if self.max_norm > 0.0 { self.max_norm } else { 1.0 };
        Rows { scale: 1.0 / m, ..matrix_rows(&self.collab.item_factors) }
    }

    /// What the collaborative cosine index measures against: the unit vectors.
    pub(crate) fn unit_rows(&self) -> Rows<'_> {
        matrix_rows(&self.collab_unit)
    }

    /// What the content index measures against: the trained content vectors.
    pub(crate) fn content_rows(&self) -> Rows<'_> {
        matrix_rows(&self.content)
    }

    pub(crate) fn unit_vector(&self, item: ItemIdx) -> &[f32] {
        row(&self.collab_unit, item.get())
    }

    pub(crate) fn content_vector(&self, item: ItemIdx) -> &[f32] {
        match self.edits.get(item) {
            Some(e) => &e.content,
            None => row(&self.content, item.get()),
        }
    }

    pub(crate) fn user_vector(&self, user: UserIdx) -> &[f32] {
        row(&self.user_factors, user.get())
    }

    /// Keeps at most `users` stored users' rankings between requests (see
    /// [`crate::memo`]; 0 keeps none). Takes effect only before the first request that
    /// would use the memo (it is sized once); returns whether it did.
    pub fn keep_rankings(&self, users: usize) -> bool {
        self.rankings.set(crate::memo::RankingMemo::new(users)).is_ok()
    }

    /// How many users' rankings are kept now.
    pub fn kept_rankings(&self) -> usize {
        self.rankings.get().map_or(0, |m| m.len())
    }

    /// Kept users, hits and misses of the rankings memo since the model was loaded.
    pub fn ranking_memo_stats(&self) -> crate::memo::MemoStats {
        self.rankings.get().map(|m| m.stats()).unwrap_or_default()
    }

    /// The rankings memo, sized by default unless [`Model::keep_rankings`] came first.
    pub(crate) fn rankings(&self) -> &crate::memo::RankingMemo {
        self.rankings.get_or_init(|| crate::memo::RankingMemo::new(crate::memo::DEFAULT_USERS))
    }

    /// The mean stored user vector (see the field).
    pub(crate) fn mean_user(&self) -> &[f32] {
        self.mean_user.get_or_init(|| {
            let mut sum = vec![0.0f32; self.user_factors.ncols()];
            let mut n = 0usize;
            for r in self.user_factors.rows() {
                if r.iter().any(|&x| x != 0.0) {
                    sum.iter_mut().zip(r.iter()).for_each(|(s, x)| *s += x);
                    n += 1;
                }
            }
            sum.into_iter().map(|s| s / n.max(1) as f32).collect()
        })
    }

    /// Folds a weighted history in, exactly as training folded in every stored user.
    pub(crate) fn fold_in(&self, weighted: &[(u32, f32)]) -> Vec<f32> {
        self.collab.user_vector(weighted)
    }

    pub(crate) fn neighbours_of(&self, item: ItemIdx) -> &[(u32, f32)] {
        self.neighbours.get(item.get()).map_or(&[], Vec::as_slice)
    }

    /// Items with the largest factor norms ever kept as ANN candidates.
    pub(crate) const STRONGEST: usize = 256;

    /// The items with the largest factor norms, largest first.
    pub(crate) fn strongest_items(&self) -> &[ItemIdx] {
        &self.strongest
    }

    pub(crate) fn max_norm(&self) -> f32 {
        self.max_norm
    }

    pub(crate) fn indexes(&self) -> &Indexes {
        &self.indexes
    }
}
