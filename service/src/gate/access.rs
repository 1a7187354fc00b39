//! Which role each RPC needs: the one table the README's security section shows.
//!
//! Health and reflection are open (probes and tooling carry no key). Every RPC of
//! `affinity.v1.Recommender` is listed here; one missing from the table (a new RPC
//! nobody classified) needs `admin`, and a test walks the service descriptor so none
//! is missed.

use std::fmt;

/// What a key may do. Roles nest: `admin` may call everything, `write` may also read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Recommendations, lists, item statistics, model information.
    Read,
    /// Event ingest and catalogue updates.
    Write,
    /// Reload, delete a user, list users, user histories and profiles.
    Admin,
}

impl Role {
    /// The role's name in key files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The gRPC service every table entry belongs to.
pub const SERVICE: &str = "affinity.v1.Recommender";

/// Every RPC of [`SERVICE`] and the role it needs.
pub const RPC_ROLES: &[(&str, Role)] = &[
    ("Recommend", Role::Read),
    ("SimilarItems", Role::Read),
    ("RecommendForGroup", Role::Read),
    ("Popular", Role::Read),
    ("Trending", Role::Read),
    ("GetItemStats", Role::Read),
    ("ModelInfo", Role::Read),
    ("IngestEvents", Role::Write),
    ("StreamEvents", Role::Write),
    ("SetAvailability", Role::Write),
    ("UpsertItems", Role::Write),
    ("IngestSocialEdges", Role::Write),
    ("IngestMemberships", Role::Write),
    ("ReloadModel", Role::Admin),
    ("DeleteUser", Role::Admin),
    ("ListUsers", Role::Admin),
    ("GetUserProfile", Role::Admin),
    ("ListInfluencers", Role::Admin),
];

/// Services anyone may call.
const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// RPCs whose response is a stream (their status comes in trailers after the data);
/// every other RPC is unary: its status is known when its response headers are.
const STREAMING: &[&str] = &["StreamEvents", "Watch", "ServerReflectionInfo"];

/// Every label [`access`] gives, in a fixed order (metrics keep a slot per label).
pub fn labels() -> impl Iterator<Item = &'static str> {
    RPC_ROLES.iter().map(|(name, _)| *name).chain(OPEN_SERVICES.iter().copied()).chain(["other"])
}

/// What a request path (`/package.Service/Method`) needs, and the name metrics and logs
/// give it (static, so labelling a request allocates nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// `None`: open to anyone, never shed.
    pub role: Option<Role>,
    /// The method name for [`SERVICE`], the service name for open services, `other`
    /// for anything else.
    pub label: &'static str,
    /// The label's position in [`labels`].
    pub slot: usize,
    /// Whether the response is a stream.
    pub streaming: bool,
}

/// The access rule for `path`.
pub fn access(path: &str) -> Access {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    let streaming = STREAMING.contains(&method);
    if let Some(at) = OPEN_SERVICES.iter().position(|s| *s == service) {
        return Access {
            role: None,
            label: OPEN_SERVICES[at],
            slot: RPC_ROLES.len() + at,
            streaming,
        };
    }
    if service == SERVICE {
        if let Some(at) = RPC_ROLES.iter().position(|(name, _)| *name == method) {
            return Access {
                role: Some(RPC_ROLES[at].1),
                label: RPC_ROLES[at].0,
                slot: at,
                streaming,
            };
        }
    }
    Access {
        role: Some(Role::Admin),
        label: "other",
        slot: RPC_ROLES.len() + OPEN_SERVICES.len(),
        streaming,
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn every_rpc_of_the_service_descriptor_is_in_the_table() {
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = Vec::new();
        for file in &set.file {
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                assert_eq!(full, SERVICE, "a service the access table does not cover");
                methods.extend(service.method.iter().map(|m| m.name().to_string()));
            }
        }
        assert!(methods.len() >= 14, "{methods:?}");
        for m in &methods {
            assert!(RPC_ROLES.iter().any(|(name, _)| name == m), "RPC {m} has no role in RPC_ROLES");
        }
        for (name, _) in RPC_ROLES {
            assert!(methods.iter().any(|m| m == name), "RPC_ROLES lists {name}, which the service does not have");
        }
    }

    #[test]
    fn paths_map_to_roles_and_unknown_ones_need_admin() {
        assert_eq!(access("/affinity.v1.Recommender/Recommend").role, Some(Role::Read));
        assert_eq!(access("/affinity.v1.Recommender/IngestEvents").role, Some(Role::Write));
        assert_eq!(access("/affinity.v1.Recommender/DeleteUser").role, Some(Role::Admin));
        assert_eq!(access("/affinity.v1.Recommender/Future").role, Some(Role::Admin));
        assert_eq!(access("/grpc.health.v1.Health/Check").role, None);
        assert_eq!(access("/elsewhere.Svc/Do").label, "other");
        assert!(access("/affinity.v1.Recommender/StreamEvents").streaming && !access("/grpc.health.v1.Health/Check").streaming);
        for path in ["/affinity.v1.Recommender/Trending", "/grpc.health.v1.Health/Watch", "/x.Y/Z"] {
            let a = access(path);
            assert_eq!(labels().nth(a.slot), Some(a.label), "{path}");
        }
        assert!(Role::Admin > Role::Write && Role::Write > Role::Read);
    }
}
