//! The social graph: whom each user is friends with or follows, and what those contacts
//! had, as votes for a user's recommendations.
//!
//! In social commerce a friend's purchase is one of the strongest signals there is, and a
//! user with no history of their own but with friends is not a stranger. `social.csv`
//! (`user_id,other_id,kind,weight`) becomes, per user, a list of contacts: a `friend`
//! edge makes each end a contact of the other, a `follow` (or trust) edge makes
//! `other_id` a contact of `user_id`. Self-loops are ignored and repeated edges merge
//! (the strongest weight stands), so a file can be sent twice. The lists are stored with
//! the model as one flat table (`social.bin`), strongest contact first.
//!
//! At serving time the items the contacts had vote for the user: each contact gives
//! each of their items `weight / √(their item count)` (a contact who had everything says
//! little about any one item), summed over the strongest [`MAX_CONTACTS`] contacts and
//! scaled so the strongest vote is 1. Recommend blends the votes into its scores with
//! the trained social weight, and the reasons name how many contacts had the item.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{SocialEdge, SocialKind};
use crate::ids::{IdMap, ItemIdx, UserIdx};

/// Contacts of one user that vote, the strongest first: a user following ten thousand
/// accounts is not ten thousand times as informed.
pub const MAX_CONTACTS: usize = 200;

/// Contacts one user may gain while serving (`IngestSocialEdges`); more wait for a
/// retrain (which reads them from the event log), so a flood of follows cannot make each
/// of the user's requests slow. Only the strongest [`MAX_CONTACTS`] vote anyway.
pub const MAX_LIVE_CONTACTS: usize = 5_000;

/// The largest edge weight `social.csv` and `IngestSocialEdges` take: weights say how
/// strong one contact is next to another, and beyond this their products (votes, the
/// stand-in vector, influence shares) would leave `f32`'s range.
pub const MAX_EDGE_WEIGHT: f32 = 1e6;

/// An edge's weight as the graph keeps it: a usable weight as given (at most
/// [`MAX_EDGE_WEIGHT`]), anything else 1.
pub fn edge_weight(weight: f32) -> f32 {
    if weight.is_finite() && weight > 0.0 {
        weight.min(MAX_EDGE_WEIGHT)
    } else {
        1.0
    }
}

/// One contact of a user.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// The contact's user index.
    pub user: u32,
    /// The edge's strength (1 for an edge without one).
    pub weight: f32,
    /// Whether the edge is a friendship (else the user follows or trusts the contact).
    pub friend: bool,
}

/// Every user's contacts, in one table: user `u`'s are `contacts[offsets[u]..offsets[u + 1]]`,
/// strongest first (ties by user index).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SocialGraph {
    offsets: Vec<u32>,
    contacts: Vec<Contact>,
}

/// What building a graph from edges did with them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildReport {
    /// Edges read.
    pub edges: usize,
    /// Edges from a user to themselves (ignored).
    pub self_loops: usize,
    /// Edges naming a user the model does not know (ignored).
    pub unknown_users: usize,
    /// Contact entries that repeated an earlier one (merged).
    pub merged: usize,
}

impl SocialGraph {
    /// Builds every known user's contact list from `edges`; users are looked up in
    /// `users` (edges naming anyone else are ignored and counted).
    pub fn build(edges: &[SocialEdge], users: &IdMap) -> (SocialGraph, BuildReport) {
        let mut report = BuildReport {
            edges: edges.len(),
            ..BuildReport::default()
        };
        // Every directed contact entry, sorted by (user, contact) so repeats sit together:
        // a flat vector (16 bytes an entry) rather than a map, for graphs of tens of
        // millions of edges.
        let mut entries: Vec<(u32, u32, f32, bool)> = Vec::with_capacity(edges.len() * 2);
        for e in edges {
            let (Some(a), Some(b)) = (users.get(&e.user_id), users.get(&e.other_id)) else {
                report.unknown_users += 1;
                continue;
            };
            if a == b {
                report.self_loops += 1;
                continue;
            }
            let weight = edge_weight(e.weight);
            let friend = e.kind == SocialKind::Friend;
            entries.push((a, b, weight, friend));
            if friend {
                entries.push((b, a, weight, friend));
            }
        }
        entries.par_sort_unstable_by_key(|&(from, to, _, _)| (from, to));
        let mut graph = SocialGraph {
            offsets: Vec::with_capacity(users.len() + 1),
            contacts: Vec::with_capacity(entries.len()),
        };
        graph.offsets.push(0);
        let mut next = entries.iter().peekable();
        for user in 0..users.len() as u32 {
            let start = graph.contacts.len();
            while let Some(&(_, to, weight, friend)) = next.next_if(|e| e.0 == user) {
                match graph.contacts[start..].last_mut() {
                    Some(c) if c.user == to => {
                        report.merged += 1;
                        c.weight = c.weight.max(weight);
                        c.friend |= friend;
                    }
                    _ => graph.contacts.push(Contact { user: to, weight, friend }),
                }
            }
            graph.contacts[start..].sort_unstable_by(|a, b| b.weight.total_cmp(&a.weight).then(a.user.cmp(&b.user)));
            graph.offsets.push(graph.contacts.len() as u32);
        }
        (graph, report)
    }

    /// Whether no user has a contact.
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
    }

    /// Contact entries in all (a friendship counts twice, once per end).
    pub fn n_contacts(&self) -> usize {
        self.contacts.len()
    }

    /// The contacts of `user`, strongest first (none for a user the graph does not hold).
    pub fn contacts(&self, user: UserIdx) -> &[Contact] {
        let u = user.0 as usize;
        match (self.offsets.get(u), self.offsets.get(u + 1)) {
            (Some(&a), Some(&b)) => &self.contacts[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Whether the table is consistent and fits a model of `n_users` users.
    pub fn fits(&self, n_users: usize) -> bool {
        if self.is_empty() && self.offsets.is_empty() {
            return true;
        }
        self.offsets.len() == n_users + 1
            && self.offsets.first() == Some(&0)
            && self.offsets.windows(2).all(|w| w[0] <= w[1])
            && self.offsets.last().is_some_and(|&n| n as usize == self.contacts.len())
            && self.contacts.iter().all(|c| (c.user as usize) < n_users && c.weight.is_finite() && c.weight > 0.0)
    }

    /// Heap bytes the table takes.
    pub fn heap_bytes(&self) -> usize {
        self.offsets.capacity() * 4 + self.contacts.capacity() * std::mem::size_of::<Contact>()
    }
}

/// The votes of `contacts` (one user's, strongest first) for the items they had:
/// `items_of(c)` lists contact `c`'s trained items, `new_of(c)` the ones they took up
/// since (none of them trained), `affinity(c)` weighs the contact.
pub fn votes<'n, I>(contacts: &[Contact], items_of: impl Fn(u32) -> I, new_of: impl Fn(u32) -> &'n [ItemIdx], affinity: impl Fn(u32) -> f32) -> SocialVotes
where
    I: ExactSizeIterator<Item = ItemIdx>,
{
    let mut votes: foldhash::HashMap<ItemIdx, (f32, u32)> = Default::default();
    for c in contacts.iter().take(MAX_CONTACTS) {
        let (items, new) = (items_of(c.user), new_of(c.user));
        let n = items.len() + new.len();
        if n == 0 {
            continue;
        }
        let v = c.weight * affinity(c.user) / (n as f32).sqrt();
        for i in items.chain(new.iter().copied()) {
            let slot = votes.entry(i).or_insert((0.0, 0));
            slot.0 += v;
            slot.1 += 1;
        }
    }
    let mut votes = SocialVotes { votes };
    votes.scale_to_strongest();
    votes
}

/// Contacts added and removed while serving (`IngestSocialEdges`), over the trained
/// table: a user's contacts are the trained ones not removed, with added ones in place of
/// (or next to) them.
#[derive(Debug, Clone, Default)]
pub struct SocialEdits {
    added: foldhash::HashMap<u32, Vec<Contact>>,
    removed: foldhash::HashSet<(u32, u32)>,
}

impl SocialEdits {
    /// Whether nothing was edited.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// Whether `to` can become (or stay) a contact `from` added while serving: at most
    /// [`MAX_LIVE_CONTACTS`] each.
    pub fn can_add(&self, from: u32, to: u32) -> bool {
        self.added.get(&from).is_none_or(|list| list.len() < MAX_LIVE_CONTACTS || list.iter().any(|c| c.user == to))
    }

    /// Makes `to` a contact of `from` (or changes the edge): the latest word stands.
    /// Check [`SocialEdits::can_add`] first.
    pub fn add(&mut self, from: u32, to: u32, weight: f32, friend: bool) {
        self.removed.remove(&(from, to));
        let list = self.added.entry(from).or_default();
        match list.iter_mut().find(|c| c.user == to) {
            Some(c) => *c = Contact { user: to, weight, friend },
            None => list.push(Contact { user: to, weight, friend }),
        }
    }

    /// Takes `to` off `from`'s contacts; `trained` says whether the trained table has
    /// the edge (only then is the removal kept).
    pub fn remove(&mut self, from: u32, to: u32, trained: bool) {
        if let Some(list) = self.added.get_mut(&from) {
            list.retain(|c| c.user != to);
            if list.is_empty() {
                self.added.remove(&from);
            }
        }
        if trained {
            self.removed.insert((from, to));
        }
    }

    /// Whether `user` may have contacts, given the trained ones: cheap, and true when
    /// unsure (every trained contact removed).
    pub fn may_have_contacts(&self, user: u32, trained: &[Contact]) -> bool {
        !trained.is_empty() || self.added.contains_key(&user)
    }

    /// `user`'s contacts: `trained` corrected by the edits, strongest first.
    pub fn contacts(&self, user: u32, trained: &[Contact]) -> Vec<Contact> {
        let added = self.added.get(&user).map_or(&[][..], Vec::as_slice);
        let replaced: foldhash::HashSet<u32> = added.iter().map(|c| c.user).collect();
        let mut out: Vec<Contact> = trained
            .iter()
            .filter(|c| !replaced.contains(&c.user) && !self.removed.contains(&(user, c.user)))
            .chain(added)
            .copied()
            .collect();
        out.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.user.cmp(&b.user)));
        out
    }
}

/// What a user's contacts had, as votes: per item, the scaled vote (strongest 1) and how
/// many contacts had it.
#[derive(Debug, Clone, Default)]
pub struct SocialVotes {
    votes: foldhash::HashMap<ItemIdx, (f32, u32)>,
}

impl SocialVotes {
    /// Whether no contact had anything.
    pub fn is_empty(&self) -> bool {
        self.votes.is_empty()
    }

    /// The vote for `item` (0 without one).
    #[inline]
    pub fn get(&self, item: ItemIdx) -> f32 {
        self.votes.get(&item).map_or(0.0, |v| v.0)
    }

    /// How many contacts had `item`.
    pub fn contacts_with(&self, item: ItemIdx) -> u32 {
        self.votes.get(&item).map_or(0, |v| v.1)
    }

    /// The votes multiplied by `weight(item)`, scaled again so the strongest is 1.
    pub fn weighed(mut self, weight: impl Fn(ItemIdx) -> f32) -> SocialVotes {
        for (&i, v) in self.votes.iter_mut() {
            v.0 *= weight(i);
        }
        self.scale_to_strongest();
        self
    }

    /// Scales the votes so the strongest is 1 (when any is positive).
    fn scale_to_strongest(&mut self) {
        let max = self.votes.values().map(|v| v.0).fold(0.0f32, f32::max);
        if max > 0.0 {
            self.votes.values_mut().for_each(|v| v.0 /= max);
        }
    }

    /// Every voted item with its vote, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (ItemIdx, f32)> + '_ {
        self.votes.iter().map(|(&i, v)| (i, v.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(a: &str, b: &str, kind: SocialKind, weight: f32) -> SocialEdge {
        SocialEdge {
            user_id: a.into(),
            other_id: b.into(),
            kind,
            weight,
        }
    }

    fn users(n: usize) -> IdMap {
        IdMap::from_ids((0..n).map(|u| format!("u{u}")).collect())
    }

    #[test]
    fn live_contacts_stop_at_the_cap_and_removing_an_untrained_edge_keeps_nothing() {
        let mut e = SocialEdits::default();
        for to in 1..=MAX_LIVE_CONTACTS as u32 {
            assert!(e.can_add(0, to));
            e.add(0, to, 1.0, false);
        }
        let over = MAX_LIVE_CONTACTS as u32 + 1;
        assert!(!e.can_add(0, over), "over the cap");
        assert!(e.can_add(0, 5), "changing a contact already added is allowed at the cap");
        assert!(e.can_add(1, over), "the cap is per user");
        assert_eq!(e.contacts(0, &[]).len(), MAX_LIVE_CONTACTS);
        // A trained edge removed is remembered; an edge that was only added live is just gone.
        e.remove(0, 5, false);
        e.remove(2, 9, true);
        assert!(!e.removed.contains(&(0, 5)) && e.removed.contains(&(2, 9)));
        let trained = [Contact { user: 9, weight: 1.0, friend: true }, Contact { user: 3, weight: 2.0, friend: false }];
        assert_eq!(e.contacts(2, &trained).iter().map(|c| c.user).collect::<Vec<_>>(), vec![3]);
        assert!(e.may_have_contacts(2, &trained) && e.may_have_contacts(0, &[]) && !e.may_have_contacts(4, &[]));
    }

    #[test]
    fn weights_beyond_the_cap_are_held_to_it_and_unusable_ones_count_one() {
        assert_eq!(edge_weight(3e38), MAX_EDGE_WEIGHT);
        assert_eq!(edge_weight(2.5), 2.5);
        for w in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert_eq!(edge_weight(w), 1.0, "{w}");
        }
    }

    #[test]
    fn friends_go_both_ways_follows_one_way_and_repeats_merge() {
        let edges = vec![
            edge("u0", "u1", SocialKind::Friend, 1.0),
            edge("u1", "u0", SocialKind::Friend, 1.0),
            edge("u2", "u0", SocialKind::Follow, 3.0),
            edge("u2", "u0", SocialKind::Follow, 5.0),
            edge("u3", "u3", SocialKind::Follow, 1.0),
            edge("u3", "nobody", SocialKind::Follow, 1.0),
        ];
        let (g, report) = SocialGraph::build(&edges, &users(4));
        assert_eq!(report, BuildReport { edges: 6, self_loops: 1, unknown_users: 1, merged: 3 });
        let ids = |u: u32| g.contacts(UserIdx(u)).iter().map(|c| (c.user, c.weight, c.friend)).collect::<Vec<_>>();
        assert_eq!(ids(0), vec![(1, 1.0, true)], "a follow does not make a contact of the one followed");
        assert_eq!(ids(1), vec![(0, 1.0, true)]);
        assert_eq!(ids(2), vec![(0, 5.0, false)], "the strongest of repeated edges stands");
        assert!(ids(3).is_empty() && g.contacts(UserIdx(99)).is_empty());
        assert!(g.fits(4) && !g.fits(5));
        assert_eq!(SocialGraph::build(&edges, &users(4)).0, g, "the same edges, the same table");
    }

    #[test]
    fn votes_count_contacts_and_weigh_down_those_who_had_everything() {
        let edges = vec![edge("u0", "u1", SocialKind::Friend, 1.0), edge("u0", "u2", SocialKind::Follow, 1.0)];
        let (g, _) = SocialGraph::build(&edges, &users(3));
        // u1 had items 5 and 6; u2 had 5 and sixteen others.
        let items = |c: u32| -> std::vec::IntoIter<ItemIdx> {
            match c {
                1 => vec![ItemIdx(5), ItemIdx(6)].into_iter(),
                2 => std::iter::once(ItemIdx(5)).chain((10..26).map(ItemIdx)).collect::<Vec<_>>().into_iter(),
                _ => Vec::new().into_iter(),
            }
        };
        let v = votes(g.contacts(UserIdx(0)), items, |_| &[][..], |_| 1.0);
        assert_eq!(v.get(ItemIdx(5)), 1.0, "the item both had is the strongest");
        assert_eq!(v.contacts_with(ItemIdx(5)), 2);
        assert!(v.get(ItemIdx(6)) > v.get(ItemIdx(10)), "one of two items says more than one of seventeen");
        assert_eq!((v.get(ItemIdx(7)), v.contacts_with(ItemIdx(7))), (0.0, 0));
        assert!(votes(g.contacts(UserIdx(1)), items, |_| &[][..], |_| 1.0).iter().all(|(i, _)| i == ItemIdx(0) || i.0 >= 5), "u1 sees u0's items (none here)");
    }
}

#[cfg(test)]
mod served {
    //! Social scoring through `Model::recommend`, on the demo store with a planted gift.
    use crate::data::{Event, EventKind, SocialEdge, SocialKind, TimeKind};
    use crate::recommend::{ReasonKind, RecommendQuery};
    use crate::testing::{fast_params, small_store};
    use crate::train::{train, NoProgress};

    fn friends(a: &str, b: &str) -> SocialEdge {
        SocialEdge { user_id: a.into(), other_id: b.into(), kind: SocialKind::Friend, weight: 1.0 }
    }

    /// With the default social weight: a search may choose another on real data.
    #[test]
    fn three_friends_buying_an_item_put_it_in_the_list_with_their_count() {
        let mut data = small_store();
        let users: Vec<String> = {
            let mut u: Vec<String> = data.events.iter().map(|e| e.user_id.clone()).collect();
            u.dedup();
            u
        };
        let (me, buyers) = (&users[0], &users[1..4]);
        for b in buyers {
            data.events.push(Event::new(b.as_str(), "gift", EventKind::Purchase, Some(1_700_000_000)));
            data.social.push(friends(me, b));
        }
        // A stranger's purchase of another rare item: no friend had it.
        data.events.push(Event::new(users[5].as_str(), "other-gift", EventKind::Purchase, Some(1_700_000_000)));
        // A newcomer with no events of their own, friends with the buyers.
        for b in buyers {
            data.social.push(friends("newcomer", b));
        }
        let m = train(&data, TimeKind::Unix, &fast_params(), &NoProgress);
        let settings = m.default_settings();
        let r = m.recommend(&RecommendQuery::for_user(me.as_str(), 10), &settings).unwrap();
        let gift = r.items.iter().find(|s| m.item_id(s.item) == "gift");
        let gift = gift.unwrap_or_else(|| panic!("the friends' gift is in the top 10: {:?}", r.items));
        assert_eq!((gift.reason, gift.reason_text.as_str()), (ReasonKind::Social, "3 friends bought this"));
        assert!(r.items.iter().all(|s| m.item_id(s.item) != "other-gift"));

        // Off for this request: the gift has no other signal and the reasons no friends.
        let off = RecommendQuery { social: Some(false), ..RecommendQuery::for_user(me.as_str(), 10) };
        let r = m.recommend(&off, &settings).unwrap();
        assert!(r.items.iter().all(|s| s.reason != ReasonKind::Social && m.item_id(s.item) != "gift"), "{:?}", r.items);

        // A user with no events but with friends: the friends' items first, not only popular ones.
        let r = m.recommend(&RecommendQuery::for_user("newcomer", 10), &settings).unwrap();
        assert_eq!(r.items.len(), 10);
        let gift = r.items.iter().position(|s| m.item_id(s.item) == "gift");
        assert!(gift.is_some_and(|g| g < 5), "the item all three friends had is in the top 5: {:?}", r.items);
        assert!(r.items.iter().all(|s| s.reason == ReasonKind::Social), "{:?}", r.items);
        let alone = RecommendQuery { social: Some(false), ..RecommendQuery::for_user("newcomer", 10) };
        assert!(m.recommend(&alone, &settings).unwrap().items.iter().all(|s| s.reason == ReasonKind::Popular));

        // The "friends bought" shelf: only what the friends had, each with its reason,
        // nothing the user had; empty for a user without contacts; not for a session.
        let shelf = RecommendQuery { from_contacts: true, ..RecommendQuery::for_user(me.as_str(), 20) };
        let r = m.recommend(&shelf, &settings).unwrap();
        let had = |u: &str, item: &str| data.events.iter().any(|e| e.user_id == u && e.item_id == item);
        assert!(!r.items.is_empty() && r.items.len() <= 20);
        for s in &r.items {
            let id = m.item_id(s.item);
            assert!(buyers.iter().any(|b| had(b, id)) && !had(me, id), "{id} is a friend's, not mine");
            assert_eq!(s.reason, ReasonKind::Social, "{s:?}");
        }
        assert!(r.items.iter().take(3).any(|s| m.item_id(s.item) == "gift"), "all three had the gift: {:?}", r.items);
        let loner = users.iter().find(|u| !data.social.iter().any(|e| &e.user_id == *u || &e.other_id == *u)).unwrap();
        let r = m.recommend(&RecommendQuery { from_contacts: true, ..RecommendQuery::for_user(loner.as_str(), 10) }, &settings).unwrap();
        assert!(r.items.is_empty() && r.shortfall.is_some(), "{:?}", r.items);
        let session = RecommendQuery { from_contacts: true, subject: crate::recommend::Subject::Session(vec!["gift".into()]), ..shelf.clone() };
        let e = m.recommend(&session, &settings).unwrap_err();
        assert!(e.to_string().contains("from_contacts"), "{e}");
        let off = RecommendQuery { social: Some(false), ..shelf };
        assert!(m.recommend(&off, &settings).unwrap_err().to_string().contains("from_contacts"));

        // The graph travels with the model.
        let mut m = m;
        let dir = tempfile::tempdir().unwrap();
        let path = crate::model::format::save(&mut m, dir.path(), crate::model::publish::Retention::default()).unwrap();
        let back = crate::model::format::load(&path).unwrap();
        assert_eq!(back.social(), m.social());
        assert!(!m.influence().is_empty());
        assert_eq!(back.influence(), m.influence());
        let q = RecommendQuery::for_user(me.as_str(), 10);
        assert_eq!(back.recommend(&q, &settings).unwrap().items, m.recommend(&q, &settings).unwrap().items);
    }
}

#[cfg(test)]
mod live {
    //! Edges added and removed while serving, through `Model::edit_social`.
    use crate::data::{Event, EventKind, SocialEdge, SocialKind, TimeKind};
    use crate::ids::UserIdx;
    use crate::recommend::RecommendQuery;
    use crate::testing::{fast_params, small_store};
    use crate::train::{train, NoProgress};

    fn edge(a: &str, b: &str, kind: SocialKind) -> SocialEdge {
        SocialEdge { user_id: a.into(), other_id: b.into(), kind, weight: 1.0 }
    }

    /// The store's users in the order their events come (each user's events together).
    fn users_of(data: &crate::data::Dataset) -> Vec<String> {
        let mut users: Vec<String> = data.events.iter().map(|e| e.user_id.clone()).collect();
        users.dedup();
        users
    }

    #[test]
    fn live_edges_change_contacts_and_the_friends_count() {
        let mut data = small_store();
        let users = users_of(&data);
        let (me, buyers) = (users[0].as_str(), &users[1..4]);
        for b in buyers {
            data.events.push(Event::new(b.as_str(), "gift", EventKind::Purchase, Some(1_700_000_000)));
        }
        // Trained with one friendship only.
        data.social.push(edge(me, &buyers[0], SocialKind::Friend));
        let m = train(&data, TimeKind::Unix, &fast_params(), &NoProgress);
        let settings = m.default_settings();
        let (u, b1, b2) = (m.user_index(me).unwrap(), m.user_index(&buyers[1]).unwrap(), m.user_index(&buyers[2]).unwrap());
        let contacts = |u: UserIdx| m.contacts_of(u).iter().map(|c| c.user).collect::<Vec<_>>();
        let reason = |k: usize| {
            let r = m.recommend(&RecommendQuery::for_user(me, k), &settings).unwrap();
            r.items.iter().find(|s| m.item_id(s.item) == "gift").map(|s| s.reason_text.clone())
        };

        assert!(m.edit_social(&edge(me, &buyers[1], SocialKind::Friend), false));
        assert!(m.edit_social(&edge(me, &buyers[2], SocialKind::Follow), false));
        assert!(contacts(b1).contains(&u.0) && !contacts(b2).contains(&u.0), "a friendship goes both ways, a follow one");
        assert_eq!(contacts(u).len(), 3);
        assert!(m.edit_social(&edge(me, &buyers[2], SocialKind::Follow), false), "repeating an edge is harmless");
        assert_eq!(contacts(u).len(), 3);
        let text = reason(10).expect("the gift is in the top 10");
        assert_eq!(text, "2 friends and 1 person you follow bought this");

        // Removing the trained friendship and the follow: one friend left.
        assert!(m.edit_social(&edge(&buyers[0], me, SocialKind::Friend), true));
        assert!(m.edit_social(&edge(me, &buyers[2], SocialKind::Follow), true));
        assert_eq!(contacts(u), vec![b1.0]);
        assert!(!contacts(m.user_index(&buyers[0]).unwrap()).contains(&u.0));
        // One friend's vote may not hold the gift in the top 10; further down it is named.
        assert_eq!(reason(100).as_deref(), Some("1 friend bought this"));

        // Unknown users and self-loops change nothing.
        assert!(!m.edit_social(&edge(me, "nobody", SocialKind::Friend), false));
        assert!(!m.edit_social(&edge(me, me, SocialKind::Friend), false));
        assert_eq!(contacts(u), vec![b1.0]);

        // A forgotten contact is nobody's contact: gone from the list, taking no place.
        m.forget_user(b1);
        assert!(contacts(u).is_empty());
        assert!(m.recommend(&RecommendQuery::for_user(me, 100), &settings).unwrap().items.iter().all(|s| s.reason_text != "1 friend bought this"));
    }

    /// A follow added or taken away on a trained friendship: the other side keeps
    /// following, as a retrain reading the log builds it (`apply_to_social`).
    #[test]
    fn a_follow_on_a_friendship_leaves_the_other_side_following() {
        let mut data = small_store();
        let users = users_of(&data);
        let (a, b) = (users[0].as_str(), users[1].as_str());
        data.social.push(edge(a, b, SocialKind::Friend));
        let m = train(&data, TimeKind::Unix, &fast_params(), &NoProgress);
        let (ia, ib) = (m.user_index(a).unwrap(), m.user_index(b).unwrap());
        let friend = |x: UserIdx, y: UserIdx| m.contacts_of(x).iter().find(|c| c.user == y.0).map(|c| c.friend);
        assert_eq!((friend(ia, ib), friend(ib, ia)), (Some(true), Some(true)));
        assert!(m.edit_social(&edge(a, b, SocialKind::Follow), true));
        assert_eq!((friend(ia, ib), friend(ib, ia)), (None, Some(false)), "a unfollows b; b still follows a");
        assert!(m.edit_social(&edge(a, b, SocialKind::Follow), false));
        assert_eq!((friend(ia, ib), friend(ib, ia)), (Some(false), Some(false)), "each follows the other");
        assert!(m.edit_social(&edge(b, a, SocialKind::Friend), false));
        assert_eq!((friend(ia, ib), friend(ib, ia)), (Some(true), Some(true)), "friends again");
    }

    /// Friends' purchases since training (the server's live state) count as theirs.
    #[test]
    fn friends_buying_since_training_put_the_item_in_the_list_with_their_count() {
        use crate::recommend::{LiveEvent, ReasonKind};
        let mut data = small_store();
        let users = users_of(&data);
        let (me, friends) = (users[0].clone(), users[1..4].to_vec());
        for f in &friends {
            data.social.push(edge(&me, f, SocialKind::Friend));
        }
        // The gift is known to the model (a stranger bought it), not to the friends yet.
        data.events.push(Event::new(users[6].as_str(), "gift", EventKind::Purchase, Some(1_700_000_000)));
        let m = train(&data, TimeKind::Unix, &fast_params(), &NoProgress);
        let settings = m.default_settings();
        let bought = |f: &String| (f.clone(), vec![LiveEvent { item_id: "gift".into(), kind: EventKind::Purchase, timestamp: Some(1_700_000_100) }]);
        // The gift's place in the top 50 (50 when not in it) and its reason.
        let ask = |live: Vec<(String, Vec<LiveEvent>)>| {
            let q = crate::recommend::RecommendQuery { contacts_live: live, ..RecommendQuery::for_user(me.as_str(), 50) };
            let items = m.recommend(&q, &settings).unwrap().items;
            let at = items.iter().position(|s| m.item_id(s.item) == "gift");
            (at.unwrap_or(50), at.map(|p| (items[p].reason, items[p].reason_text.clone())))
        };
        let (before, why) = ask(Vec::new());
        assert!(why.is_none_or(|w| w.0 != ReasonKind::Social), "before: no friend had it");
        let (after, why) = ask(friends.iter().map(bought).collect());
        assert_eq!(why, Some((ReasonKind::Social, "3 friends bought this".to_string())));
        assert!(after + 10 <= before, "the gift rises from place {before} to {after}");
        // A stranger's live purchase says nothing to this user; unknown items are ignored.
        let stranger = (users[7].clone(), vec![LiveEvent { item_id: "gift".into(), kind: EventKind::Purchase, timestamp: None }]);
        let unknown = (friends[0].clone(), vec![LiveEvent { item_id: "not-in-the-model".into(), kind: EventKind::Purchase, timestamp: None }]);
        assert_eq!(ask(vec![stranger, unknown]).0, before);
    }
}
