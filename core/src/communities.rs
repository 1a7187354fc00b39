//! Communities: group chats, community group-buying circles, clubs — named sets of users
//! from `communities.csv` (`user_id,community_id`).
//!
//! A community is a segment of its own: what is popular or trending in it is counted on
//! demand from its members, exactly as for a segment of user attributes (see
//! [`crate::segments`]), and a member without history of their own starts from their
//! community's list ("popular in community mums-club"). A member with a history of their
//! own gets their communities' picks (what members had more of than the store at large,
//! [`CommunityPicks`]) as one more vote in `Recommend`, weighed by the community weight
//! `train`'s search chose ("popular in your community mums-club"). The table is stored
//! with the model (`communities.bin`): community names sorted, and per user the indices
//! of their communities, sorted, in one flat list; the picks are derived from the
//! histories when the model is trained or loaded.

use serde::{Deserialize, Serialize};

use crate::data::Membership;
use rayon::prelude::*;

use crate::ids::{IdMap, ItemIdx, UserIdx};

/// Every user's communities.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Communities {
    /// Community ids, sorted: a community's index is its place here.
    names: Vec<String>,
    /// Members per community, by index.
    sizes: Vec<u32>,
    /// User `u`'s communities are `member_of[offsets[u]..offsets[u + 1]]`, sorted.
    offsets: Vec<u32>,
    member_of: Vec<u32>,
}

impl Communities {
    /// Builds the table from `memberships` over the model's `users` (memberships of
    /// anyone else are ignored; repeated ones count once). Returns it and how many
    /// memberships named an unknown user.
    pub fn build(memberships: &[Membership], users: &IdMap) -> (Communities, usize) {
        let mut names: Vec<String> = memberships.iter().map(|m| m.community_id.clone()).collect();
        names.sort_unstable();
        names.dedup();
        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(memberships.len());
        let mut unknown = 0;
        for m in memberships {
            match (users.get(&m.user_id), names.binary_search(&m.community_id)) {
                (Some(u), Ok(c)) => pairs.push((u, c as u32)),
                _ => unknown += 1,
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        let mut sizes = vec![0u32; names.len()];
        let mut offsets = Vec::with_capacity(users.len() + 1);
        let mut member_of = Vec::with_capacity(pairs.len());
        offsets.push(0);
        let mut next = pairs.iter().peekable();
        for u in 0..users.len() as u32 {
            while let Some(&(_, c)) = next.next_if(|p| p.0 == u) {
                member_of.push(c);
                sizes[c as usize] += 1;
            }
            offsets.push(member_of.len() as u32);
        }
        (Communities { names, sizes, offsets, member_of }, unknown)
    }

    /// Whether there is no community.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The index of community `id`.
    pub fn index(&self, id: &str) -> Option<u32> {
        self.names.binary_search_by(|n| n.as_str().cmp(id)).ok().map(|c| c as u32)
    }

    /// The id of community `c`.
    pub fn name(&self, c: u32) -> &str {
        self.names.get(c as usize).map_or("", String::as_str)
    }

    /// How many members community `c` has.
    pub fn size(&self, c: u32) -> u32 {
        self.sizes.get(c as usize).copied().unwrap_or(0)
    }

    /// The communities `user` belongs to, sorted by index.
    pub fn of_user(&self, user: UserIdx) -> &[u32] {
        let u = user.0 as usize;
        match (self.offsets.get(u), self.offsets.get(u + 1)) {
            (Some(&a), Some(&b)) => &self.member_of[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Whether `user` belongs to community `c`.
    pub fn contains(&self, c: u32, user: UserIdx) -> bool {
        self.of_user(user).binary_search(&c).is_ok()
    }

    /// Whether the table is consistent and fits a model of `n_users` users.
    pub fn fits(&self, n_users: usize) -> bool {
        if self.is_empty() && self.offsets.is_empty() {
            return true;
        }
        self.offsets.len() == n_users + 1
            && self.sizes.len() == self.names.len()
            && self.names.windows(2).all(|w| w[0] < w[1])
            && self.offsets.windows(2).all(|w| w[0] <= w[1])
            && self.offsets.last().is_some_and(|&n| n as usize == self.member_of.len())
            && self.member_of.iter().all(|&c| (c as usize) < self.names.len())
    }
}

/// Communities one user may join while serving (`IngestMemberships`); more wait for a
/// retrain (which reads them from the event log), so a flood of joins cannot make each of
/// the user's requests slow.
pub const MAX_LIVE_JOINS: usize = 1_000;

/// Memberships joined and left while serving (`IngestMemberships`), over the trained
/// table. Communities are named by id: one created since training has no index.
#[derive(Debug, Clone, Default)]
pub struct MembershipEdits {
    /// Per user, the communities they joined and left (by id; checked per user, so a
    /// look-up allocates nothing: community Popular asks for every user).
    joined: foldhash::HashMap<u32, Vec<String>>,
    left: foldhash::HashMap<u32, Vec<String>>,
}

impl MembershipEdits {
    /// `user` joins `community` (again: no change). Returns false, changing nothing, when
    /// the user already joined [`MAX_LIVE_JOINS`] communities while serving.
    pub fn join(&mut self, user: u32, community: &str) -> bool {
        let list = self.joined.entry(user).or_default();
        if !list.iter().any(|c| c == community) {
            if list.len() >= MAX_LIVE_JOINS {
                return false;
            }
            list.push(community.to_string());
        }
        Self::take_out(&mut self.left, user, community);
        true
    }

    /// `user` leaves `community`; `trained` says whether the trained table has them in it
    /// (only then is the leave kept: leaving a community never joined changes nothing).
    pub fn leave(&mut self, user: u32, community: &str, trained: bool) {
        Self::take_out(&mut self.joined, user, community);
        if !trained {
            return;
        }
        let list = self.left.entry(user).or_default();
        if !list.iter().any(|c| c == community) {
            list.push(community.to_string());
        }
    }

    fn take_out(lists: &mut foldhash::HashMap<u32, Vec<String>>, user: u32, community: &str) {
        if let Some(list) = lists.get_mut(&user) {
            list.retain(|c| c != community);
            if list.is_empty() {
                lists.remove(&user);
            }
        }
    }

    /// Whether `user` is in `community`, given whether the trained table says so.
    pub fn is_member(&self, user: u32, community: &str, trained: bool) -> bool {
        if self.joined(user).iter().any(|c| c == community) {
            return true;
        }
        trained && !self.has_left(user, community)
    }

    /// The communities `user` joined while serving.
    pub fn joined(&self, user: u32) -> &[String] {
        self.joined.get(&user).map_or(&[], Vec::as_slice)
    }

    /// Whether `user` left `community` while serving.
    pub fn has_left(&self, user: u32, community: &str) -> bool {
        self.left.get(&user).is_some_and(|l| l.iter().any(|c| c == community))
    }
}

/// Items a community's members had at least this many of are its picks: one member's
/// items say nothing about the community.
pub const MIN_PICK_MEMBERS: u32 = 2;

/// A community's picks kept per community, strongest first.
pub const PICKS_PER_COMMUNITY: usize = 100;

/// What each community's members had more of than the store at large: per community, its
/// strongest [`PICKS_PER_COMMUNITY`] items, each scored by how many members had it times
/// `weight(item)` (a rarity weight: items everyone has say nothing of the community),
/// scaled so the strongest is 1. Derived from the histories when the model is trained or
/// loaded, so `Recommend` reads a member's communities' picks instead of their members.
#[derive(Debug, Clone, Default)]
pub struct CommunityPicks {
    lists: Vec<Vec<(ItemIdx, f32)>>,
}

impl CommunityPicks {
    /// Counts every community's picks, communities in parallel; `items_of(u)` lists what
    /// user `u` had.
    pub fn compute<I>(communities: &Communities, n_users: usize, items_of: impl Fn(UserIdx) -> I + Sync, weight: impl Fn(ItemIdx) -> f32 + Sync) -> CommunityPicks
    where
        I: Iterator<Item = ItemIdx>,
    {
        let lists = Self::count(communities, n_users, |_| true, items_of, weight).into_iter().map(|(_, list)| list).collect();
        CommunityPicks { lists }
    }

    /// Counts the picks of communities `which` again (after a member was forgotten,
    /// whom `items_of` now lists nothing for).
    pub fn recount<I>(&mut self, which: &[u32], communities: &Communities, n_users: usize, items_of: impl Fn(UserIdx) -> I + Sync, weight: impl Fn(ItemIdx) -> f32 + Sync)
    where
        I: Iterator<Item = ItemIdx>,
    {
        for (c, list) in Self::count(communities, n_users, |c| which.contains(&c), items_of, weight) {
            if let Some(slot) = self.lists.get_mut(c as usize) {
                *slot = list;
            }
        }
    }

    /// The picks of every community `wanted` names, by community index.
    fn count<I>(communities: &Communities, n_users: usize, wanted: impl Fn(u32) -> bool, items_of: impl Fn(UserIdx) -> I + Sync, weight: impl Fn(ItemIdx) -> f32 + Sync) -> Vec<(u32, Vec<(ItemIdx, f32)>)>
    where
        I: Iterator<Item = ItemIdx>,
    {
        let mut members: Vec<(u32, Vec<u32>)> = (0..communities.sizes.len() as u32).filter(|&c| wanted(c)).map(|c| (c, Vec::new())).collect();
        for u in 0..n_users as u32 {
            for &c in communities.of_user(UserIdx(u)) {
                if let Ok(at) = members.binary_search_by_key(&c, |m| m.0) {
                    members[at].1.push(u);
                }
            }
        }
        members
            .par_iter()
            .map(|(c, m)| {
                let mut counts: foldhash::HashMap<ItemIdx, u32> = Default::default();
                for &u in m {
                    for i in items_of(UserIdx(u)) {
                        *counts.entry(i).or_insert(0) += 1;
                    }
                }
                let mut list: Vec<(ItemIdx, f32)> =
                    counts.into_iter().filter(|&(_, n)| n >= MIN_PICK_MEMBERS).map(|(i, n)| (i, n as f32 * weight(i))).collect();
                list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                list.truncate(PICKS_PER_COMMUNITY);
                if let Some(top) = list.first().map(|x| x.1).filter(|&t| t > 0.0) {
                    list.iter_mut().for_each(|x| x.1 /= top);
                }
                (*c, list)
            })
            .collect()
    }

    /// Community `c`'s picks, strongest first (none for a community created while
    /// serving).
    pub fn of(&self, c: u32) -> &[(ItemIdx, f32)] {
        self.lists.get(c as usize).map_or(&[], Vec::as_slice)
    }

    /// Whether no community has a pick.
    pub fn is_empty(&self) -> bool {
        self.lists.iter().all(Vec::is_empty)
    }
}

/// One member's view of their communities' picks: per item, its strongest standing in
/// any of their communities (strongest pick 1) and which community that is.
#[derive(Debug, Clone, Default)]
pub struct CommunityVotes {
    votes: foldhash::HashMap<ItemIdx, (f32, u32)>,
}

impl CommunityVotes {
    /// The votes of communities `member_of` (indices).
    pub fn of(picks: &CommunityPicks, member_of: impl IntoIterator<Item = u32>) -> CommunityVotes {
        let mut votes: foldhash::HashMap<ItemIdx, (f32, u32)> = Default::default();
        for c in member_of {
            for &(i, v) in picks.of(c) {
                let slot = votes.entry(i).or_insert((v, c));
                if v > slot.0 {
                    *slot = (v, c);
                }
            }
        }
        CommunityVotes { votes }
    }

    /// Whether no community voted.
    pub fn is_empty(&self) -> bool {
        self.votes.is_empty()
    }

    /// The vote for `item` (0 without one).
    #[inline]
    pub fn get(&self, item: ItemIdx) -> f32 {
        self.votes.get(&item).map_or(0.0, |v| v.0)
    }

    /// The community whose pick `item` is most, if any.
    pub fn community(&self, item: ItemIdx) -> Option<u32> {
        self.votes.get(&item).map(|v| v.1)
    }

    /// Every voted item, in no particular order.
    pub fn items(&self) -> impl Iterator<Item = ItemIdx> + '_ {
        self.votes.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_joins_stop_at_the_cap_and_leaving_what_was_never_joined_keeps_nothing() {
        let mut e = MembershipEdits::default();
        for n in 0..MAX_LIVE_JOINS {
            assert!(e.join(7, &format!("c{n}")));
        }
        assert!(!e.join(7, "one-more"), "over the cap: not taken");
        assert!(e.join(7, "c3"), "joining again is no change, even at the cap");
        assert_eq!(e.joined(7).len(), MAX_LIVE_JOINS);
        assert!(e.join(8, "one-more"), "the cap is per user");
        // Leaving a community the user only joined live takes the join back; leaving one
        // they were never in keeps no record.
        e.leave(7, "c3", false);
        e.leave(7, "never", false);
        assert!(!e.is_member(7, "c3", false) && !e.has_left(7, "never"));
        assert_eq!(e.joined(7).len(), MAX_LIVE_JOINS - 1);
        e.leave(8, "trained", true);
        assert!(e.has_left(8, "trained") && !e.is_member(8, "trained", true));
    }

    #[test]
    fn memberships_become_sorted_lists_and_unknown_users_are_counted() {
        let m = |u: &str, c: &str| Membership { user_id: u.into(), community_id: c.into() };
        let users = IdMap::from_ids(vec!["a".into(), "b".into(), "c".into()]);
        let (t, unknown) = Communities::build(&[m("b", "runners"), m("a", "mums"), m("b", "mums"), m("b", "mums"), m("zed", "mums")], &users);
        assert_eq!(unknown, 1);
        let (mums, runners) = (t.index("mums").unwrap(), t.index("runners").unwrap());
        assert_eq!((t.name(mums), t.size(mums), t.size(runners)), ("mums", 2, 1), "a repeated membership counts once");
        assert_eq!(t.of_user(UserIdx(1)), &[mums, runners]);
        assert!(t.contains(mums, UserIdx(0)) && !t.contains(runners, UserIdx(0)) && t.of_user(UserIdx(2)).is_empty());
        assert!(t.index("nobody").is_none() && t.of_user(UserIdx(9)).is_empty());
        assert!(t.fits(3) && !t.fits(4) && Communities::default().fits(3));
    }
}

#[cfg(test)]
mod served {
    //! Communities through `Model`: Popular per community and a member's cold start.
    use crate::data::{Event, EventKind, Membership, TimeKind};
    use crate::recommend::{ReasonKind, RecommendQuery};
    use crate::rules::Rules;
    use crate::segments::Segment;
    use crate::testing::{fast_params, small_store};
    use crate::train::{train, NoProgress};
    use crate::trending::{At, Window};

    #[test]
    fn a_community_has_its_own_popular_list_and_starts_its_newcomers_with_it() {
        let mut data = small_store();
        let mut users: Vec<String> = data.events.iter().map(|e| e.user_id.clone()).collect();
        users.dedup();
        // Twelve members who all had the club's item, which nobody else had.
        for u in &users[..12] {
            data.memberships.push(Membership { user_id: u.clone(), community_id: "club".into() });
            data.events.push(Event::new(u.as_str(), "club-item", EventKind::Purchase, Some(1_700_000_000)));
        }
        data.memberships.push(Membership { user_id: "newcomer".into(), community_id: "club".into() });
        let m = train(&data, TimeKind::Unix, &fast_params(), &NoProgress);
        let at = || At { now: None, live: &[] };
        let club = Segment { community: Some("club".into()), ..Segment::default() };
        let (list, members) = m.popular_in(&club, None, &Rules::default(), 5, Window::All, at()).unwrap();
        assert_eq!(members, 13, "the newcomer is a member too");
        assert_eq!(m.item_id(list.items[0].item), "club-item");
        let (everyone, _) = m.popular_in(&Segment::default(), None, &Rules::default(), 5, Window::All, at()).unwrap();
        assert!(everyone.items.iter().all(|s| m.item_id(s.item) != "club-item"), "twelve buyers do not top the store");
        let nobody = Segment { community: Some("no-such-club".into()), ..Segment::default() };
        assert_eq!(m.popular_in(&nobody, None, &Rules::default(), 5, Window::All, at()).unwrap().1, 0);
        assert!(m.trending_in(&club, None, &Rules::default(), 5, 7, at()).is_ok());

        // The newcomer (no events, no contacts) starts from the club's list.
        let r = m.recommend(&RecommendQuery::for_user("newcomer", 5), &m.default_settings()).unwrap();
        assert_eq!(m.item_id(r.items[0].item), "club-item");
        assert_eq!((r.items[0].reason, r.items[0].reason_text.as_str()), (ReasonKind::Popular, "popular in community club"));

        // Memberships changed while serving: one more member, the newcomer leaves, a
        // community nobody had at training time.
        let other = users[20].clone();
        assert!(m.edit_membership(&Membership { user_id: other.clone(), community_id: "club".into() }, false));
        assert!(m.edit_membership(&Membership { user_id: "newcomer".into(), community_id: "club".into() }, true));
        assert!(m.edit_membership(&Membership { user_id: other.clone(), community_id: "pop-up".into() }, false));
        assert!(!m.edit_membership(&Membership { user_id: "stranger".into(), community_id: "club".into() }, false), "an unknown user waits");
        assert_eq!(m.popular_in(&club, None, &Rules::default(), 5, Window::All, at()).unwrap().1, 13);
        let pop_up = Segment { community: Some("pop-up".into()), ..Segment::default() };
        assert_eq!(m.popular_in(&pop_up, None, &Rules::default(), 5, Window::All, at()).unwrap().1, 1);
        let u = m.user_index(&other).unwrap();
        assert_eq!(m.communities_of(u), vec![("club".to_string(), 13), ("pop-up".to_string(), 0)], "trained member counts");
        let r = m.recommend(&RecommendQuery::for_user("newcomer", 5), &m.default_settings()).unwrap();
        assert!(r.items.iter().all(|s| s.reason_text != "popular in community club"), "{:?}", r.items);

        // The table travels with the model.
        let mut m = m;
        let dir = tempfile::tempdir().unwrap();
        let path = crate::model::format::save(&mut m, dir.path(), crate::model::publish::Retention::default()).unwrap();
        assert_eq!(crate::model::format::load(&path).unwrap().communities(), m.communities());
    }

    #[test]
    fn a_forgotten_member_stops_counting_in_the_picks() {
        let mut data = small_store();
        let mut users: Vec<String> = data.events.iter().map(|e| e.user_id.clone()).collect();
        users.dedup();
        for u in &users[..3] {
            data.memberships.push(Membership { user_id: u.clone(), community_id: "club".into() });
        }
        // Two members had the rare item: just enough to make it a pick.
        for u in &users[..2] {
            data.events.push(Event::new(u.as_str(), "club-rare", EventKind::Purchase, Some(1_700_000_000)));
        }
        let m = train(&data, TimeKind::Unix, &fast_params(), &NoProgress);
        let (third, rare) = (m.user_index(&users[2]).unwrap(), m.item_index("club-rare").unwrap());
        assert!(m.community_votes(third).get(rare) > 0.0, "two members had it");
        m.forget_user(m.user_index(&users[0]).unwrap());
        assert_eq!(m.community_votes(third).get(rare), 0.0, "one member left who had it");
    }
}

