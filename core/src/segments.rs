//! User segments and what is popular in them.
//!
//! Shops slice their users by region, age band, gender, occupation and income band; a
//! segment is any combination of those (an unset field matches everyone). Popularity in a
//! segment is counted on demand from the users who match — distinct users per item — and
//! never precomputed for every combination. A small segment's counts are noisy, so they
//! are smoothed toward the catalogue-wide popularity by a prior worth [`PRIOR_USERS`]
//! users: the ranking follows the segment where it has evidence and the whole store where
//! it has little. That is also how a user with no history but known attributes starts
//! (cold start): with their segment's list.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::data::User;
use crate::error::{Error, Result};
use crate::ids::ItemIdx;
use crate::model::Model;

/// Users' worth of catalogue-wide popularity mixed into a segment's counts.
pub const PRIOR_USERS: f32 = 20.0;

/// Age bands, as the proto spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AgeBand {
    /// Under 18.
    Under18,
    /// 18 to 24.
    From18To24,
    /// 25 to 34.
    From25To34,
    /// 35 to 44.
    From35To44,
    /// 45 to 54.
    From45To54,
    /// 55 and over.
    From55,
}

impl AgeBand {
    /// Every band, youngest first.
    pub const ALL: [AgeBand; 6] = [
        AgeBand::Under18,
        AgeBand::From18To24,
        AgeBand::From25To34,
        AgeBand::From35To44,
        AgeBand::From45To54,
        AgeBand::From55,
    ];

    /// The band of an age in years.
    pub fn of_age(age: u32) -> AgeBand {
        match age {
            0..=17 => AgeBand::Under18,
            18..=24 => AgeBand::From18To24,
            25..=34 => AgeBand::From25To34,
            35..=44 => AgeBand::From35To44,
            45..=54 => AgeBand::From45To54,
            _ => AgeBand::From55,
        }
    }

    /// The canonical name: `<18`, `18-24`, `25-34`, `35-44`, `45-54`, `55+`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgeBand::Under18 => "<18",
            AgeBand::From18To24 => "18-24",
            AgeBand::From25To34 => "25-34",
            AgeBand::From35To44 => "35-44",
            AgeBand::From45To54 => "45-54",
            AgeBand::From55 => "55+",
        }
    }
}

impl FromStr for AgeBand {
    type Err = String;

    /// A number of years (`21`) or a band name as [`AgeBand::as_str`] writes it.
    fn from_str(s: &str) -> std::result::Result<AgeBand, String> {
        let s = s.trim();
        if let Ok(age) = s.parse::<u32>() {
            return Ok(AgeBand::of_age(age));
        }
        AgeBand::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| format!("`{s}` is neither an age in years nor one of <18, 18-24, 25-34, 35-44, 45-54, 55+"))
    }
}

/// A set of users by attributes; `None` fields match everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Segment {
    /// Region, compared without case.
    pub region: Option<String>,
    /// Age band.
    pub age_band: Option<AgeBand>,
    /// Gender, compared without case.
    pub gender: Option<String>,
    /// Occupation, compared without case.
    pub occupation: Option<String>,
    /// Income band as the data writes it, compared without case.
    pub income: Option<String>,
    /// A community (see [`crate::communities`]), compared exactly; checked by
    /// [`Model::in_segment`], not by [`Segment::contains`].
    pub community: Option<String>,
}

fn field(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

fn same(want: &Option<String>, have: &str) -> bool {
    want.as_ref().is_none_or(|w| w.eq_ignore_ascii_case(have.trim()))
}

impl Segment {
    /// The segment a user's attributes place them in (fields they lack stay open; an age
    /// that is neither a number nor a band name is ignored).
    pub fn of_user(user: &User) -> Segment {
        Segment {
            region: field(&user.region),
            age_band: user.age.parse().ok(),
            gender: field(&user.gender),
            occupation: field(&user.occupation),
            income: field(&user.income),
            community: None,
        }
    }

    /// Whether no field is set (everyone).
    pub fn is_everyone(&self) -> bool {
        *self == Segment::default()
    }

    /// Whether `user`'s attributes are in the segment (the community, if any, is
    /// [`Model::in_segment`]'s to check).
    pub fn contains(&self, user: &User) -> bool {
        same(&self.region, &user.region)
            && same(&self.gender, &user.gender)
            && same(&self.occupation, &user.occupation)
            && same(&self.income, &user.income)
            && self.age_band.is_none_or(|b| user.age.parse::<AgeBand>().ok() == Some(b))
    }

    /// Checks field lengths; the error names the field as the API spells it.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("segment.region", &self.region),
            ("segment.gender", &self.gender),
            ("segment.occupation", &self.occupation),
            ("segment.income", &self.income),
            ("segment.community", &self.community),
        ] {
            if v.as_ref().is_some_and(|v| v.len() > crate::recommend::MAX_ID_BYTES) {
                return Err(Error::invalid_argument(name, format!("at most {} bytes", crate::recommend::MAX_ID_BYTES)));
            }
        }
        Ok(())
    }
}

impl Segment {
    /// How a list's reason names the segment: "in north" for a region alone (shops say
    /// "popular in your region"), "with gender F, age 18-24" otherwise.
    pub fn among(&self) -> String {
        let only = |field: &Option<String>| field.is_some() && Segment { region: None, community: None, ..self.clone() }.is_everyone();
        match (&self.region, &self.community) {
            (Some(r), None) if only(&self.region) => format!("in {r}"),
            (None, Some(c)) if only(&self.community) => format!("in community {c}"),
            _ => format!("with {self}"),
        }
    }
}

impl fmt::Display for Segment {
    /// `gender F, age 18-24, region north`; `all users` for everyone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(g) = &self.gender {
            parts.push(format!("gender {g}"));
        }
        if let Some(a) = self.age_band {
            parts.push(format!("age {}", a.as_str()));
        }
        if let Some(r) = &self.region {
            parts.push(format!("region {r}"));
        }
        if let Some(o) = &self.occupation {
            parts.push(format!("occupation {o}"));
        }
        if let Some(i) = &self.income {
            parts.push(format!("income {i}"));
        }
        if let Some(c) = &self.community {
            parts.push(format!("community {c}"));
        }
        if parts.is_empty() {
            f.write_str("all users")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Popularity within one segment.
#[derive(Debug, Clone)]
pub struct SegmentPopularity {
    /// Users in the segment (with or without history).
    pub users: usize,
    /// Per item with any segment user, the distinct users of the segment who had it.
    pub counts: HashMap<ItemIdx, u32>,
}

impl SegmentPopularity {
    /// The smoothed score of `item`: its segment count plus [`PRIOR_USERS`] users' worth
    /// of its store-wide share.
    pub fn score(&self, model: &Model, item: ItemIdx) -> f32 {
        let share = model.popularity(item) / model.n_users().max(1) as f32;
        self.counts.get(&item).copied().unwrap_or(0) as f32 + PRIOR_USERS * share
    }
}

impl Model {
    /// Counts, per item, the distinct users of `segment` who interacted with it.
    pub fn segment_popularity(&self, segment: &Segment) -> SegmentPopularity {
        let mut counts: HashMap<ItemIdx, u32> = HashMap::new();
        let mut users = 0;
        for u in 0..self.n_users() {
            let user = crate::ids::UserIdx(u as u32);
            if !self.in_segment(segment, user) {
                continue;
            }
            users += 1;
            for (i, _) in self.history(user).seen() {
                *counts.entry(i).or_insert(0) += 1;
            }
        }
        SegmentPopularity { users, counts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(age: &str, gender: &str) -> User {
        User {
            user_id: "u".into(),
            age: age.into(),
            gender: gender.into(),
            ..User::default()
        }
    }

    #[test]
    fn ages_and_bands_parse_to_the_same_band() {
        assert_eq!("21".parse::<AgeBand>(), Ok(AgeBand::From18To24));
        assert_eq!("18-24".parse::<AgeBand>(), Ok(AgeBand::From18To24));
        assert_eq!("17".parse::<AgeBand>(), Ok(AgeBand::Under18));
        assert_eq!("55+".parse::<AgeBand>(), Ok(AgeBand::From55));
        assert!("18–24".parse::<AgeBand>().is_err(), "an en dash is not the ASCII hyphen");
        for b in AgeBand::ALL {
            assert_eq!(b.as_str().parse::<AgeBand>(), Ok(b));
        }
    }

    #[test]
    fn a_segment_matches_on_every_set_field_only() {
        let s = Segment { age_band: Some(AgeBand::From18To24), gender: Some("f".into()), ..Segment::default() };
        assert!(s.contains(&user("21", "F")));
        assert!(s.contains(&user("18-24", "F")));
        assert!(!s.contains(&user("30", "F")));
        assert!(!s.contains(&user("21", "M")));
        assert!(!s.contains(&user("", "F")), "an unknown age is not in an age band");
        assert!(Segment::default().contains(&user("", "")));
        assert_eq!(s.to_string(), "gender f, age 18-24");
        assert_eq!(Segment::of_user(&user("21", "F")), Segment { gender: Some("F".into()), ..s });
    }

    #[test]
    fn a_forgotten_user_stops_counting_in_segments() {
        use crate::testing::{fast_params, small_store};
        use crate::train::{train, NoProgress};
        let mut data = small_store();
        let mut ids: Vec<String> = data.events.iter().map(|e| e.user_id.clone()).collect();
        ids.dedup();
        data.users = ids[..3].iter().map(|id| User { user_id: id.clone(), gender: "F".into(), ..User::default() }).collect();
        let m = train(&data, crate::data::TimeKind::Unix, &fast_params(), &NoProgress);
        let women = Segment { gender: Some("F".into()), ..Segment::default() };
        assert_eq!(m.segment_popularity(&women).users, 3);
        m.forget_user(m.user_index(&ids[0]).unwrap());
        assert_eq!(m.segment_popularity(&women).users, 2);
    }
}

