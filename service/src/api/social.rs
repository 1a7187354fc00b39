//! `IngestSocialEdges` and `IngestMemberships`: wire changes → checked log entries, all
//! or none, the first bad one named by its index and field.

use affinity_core::data::{Membership, SocialEdge, SocialKind};
use affinity_core::social::MAX_EDGE_WEIGHT;
use affinity_core::Error;
use affinity_eventlog::{MembershipChange, SocialChange};

use super::catalogue::{bad_entry, check_entry_id};
use super::ingest::MAX_BATCH;
use crate::proto;
use crate::status::ApiError;

fn bad(n: usize, field: &str, why: impl std::fmt::Display) -> ApiError {
    bad_entry("edges", n, field, why)
}

fn check_id(n: usize, field: &str, id: &str) -> Result<(), ApiError> {
    check_entry_id("edges", n, field, id)
}

/// Checks edge changes: ids as everywhere, two different users, a known kind, a weight
/// that is finite and not negative (0 means 1).
pub(crate) fn checked(r: proto::IngestSocialEdgesRequest) -> Result<Vec<SocialChange>, ApiError> {
    if r.edges.len() > MAX_BATCH {
        return Err(Error::invalid_argument("edges", format!("at most {MAX_BATCH} edges per call, got {}", r.edges.len())).into());
    }
    r.edges
        .into_iter()
        .enumerate()
        .map(|(n, e)| {
            check_id(n, "user_id", &e.user_id)?;
            check_id(n, "other_id", &e.other_id)?;
            if e.user_id == e.other_id {
                return Err(bad(n, "other_id", "a user cannot be their own contact"));
            }
            let kind = match proto::SocialEdgeKind::try_from(e.kind) {
                Ok(proto::SocialEdgeKind::Friend) => SocialKind::Friend,
                Ok(proto::SocialEdgeKind::Follow) => SocialKind::Follow,
                Ok(proto::SocialEdgeKind::Unspecified) => return Err(bad(n, "kind", "required: SOCIAL_EDGE_KIND_FRIEND or SOCIAL_EDGE_KIND_FOLLOW")),
                Err(_) => return Err(bad(n, "kind", format!("unknown value {}", e.kind))),
            };
            if !e.weight.is_finite() || e.weight < 0.0 || e.weight > MAX_EDGE_WEIGHT {
                return Err(bad(n, "weight", format!("must be a number from 0 (meaning 1) to {MAX_EDGE_WEIGHT}, got {}", e.weight)));
            }
            let weight = if e.weight == 0.0 { 1.0 } else { e.weight };
            Ok(SocialChange { edge: SocialEdge { user_id: e.user_id, other_id: e.other_id, kind, weight }, removed: e.remove })
        })
        .collect()
}

/// Checks membership changes: ids as everywhere.
pub(crate) fn checked_memberships(r: proto::IngestMembershipsRequest) -> Result<Vec<MembershipChange>, ApiError> {
    if r.memberships.len() > MAX_BATCH {
        return Err(Error::invalid_argument("memberships", format!("at most {MAX_BATCH} memberships per call, got {}", r.memberships.len())).into());
    }
    r.memberships
        .into_iter()
        .enumerate()
        .map(|(n, m)| {
            check_entry_id("memberships", n, "user_id", &m.user_id)?;
            check_entry_id("memberships", n, "community_id", &m.community_id)?;
            Ok(MembershipChange { membership: Membership { user_id: m.user_id, community_id: m.community_id }, removed: m.remove })
        })
        .collect()
}
