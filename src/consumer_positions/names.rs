//! Topic names across the replication tool: which topic on the new cluster holds the
//! records a group read from a topic on the old one.
//!
//! MirrorMaker 2's default policy copies `orders` of cluster `north` to `north.orders`
//! on every other cluster; a topic named `<alias><sep><rest>` after another cluster's
//! alias is that cluster's `<rest>`. So the copy of north's `orders` on west is
//! `north.orders`, and the copy of north's `west.orders` on west is west's own
//! `orders` (the original). The identity policy and Cluster Linking keep names.

use crate::config::ReplicationPolicy;

/// How names map, with each cluster's alias in the replication tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Names {
    pub policy: ReplicationPolicy,
    pub separator: String,
    /// (cluster key in the config, alias in topic names).
    pub aliases: Vec<(String, String)>,
}

impl Names {
    fn alias_of<'a>(&'a self, cluster: &'a str) -> &'a str {
        self.aliases
            .iter()
            .find(|(c, _)| c == cluster)
            .map_or(cluster, |(_, a)| a)
    }

    /// The name on cluster `to` of the records topic `topic` holds on cluster `from`.
    /// None: no copy is expected there (internal topics, a copy of a third cluster's
    /// copy).
    pub fn map(&self, topic: &str, from: &str, to: &str) -> Option<String> {
        if is_internal(topic) {
            return None;
        }
        match self.policy {
            ReplicationPolicy::Identity | ReplicationPolicy::SameOffsets => Some(topic.to_string()),
            ReplicationPolicy::Prefix => {
                let (origin, base) = self.origin(topic, from);
                if origin == to {
                    return Some(base.to_string());
                }
                if origin != from {
                    // A copy of a third cluster's topic: MirrorMaker 2 does not copy
                    // copies back (its cycle detection), so `to` has its own copy of the
                    // original under the third cluster's prefix.
                    return Some(format!("{}{}{base}", self.alias_of(origin), self.separator));
                }
                Some(format!("{}{}{base}", self.alias_of(from), self.separator))
            }
        }
    }

    /// (cluster the records were first written on, their topic name there).
    fn origin<'t>(&'t self, topic: &'t str, on: &'t str) -> (&'t str, &'t str) {
        for (cluster, alias) in &self.aliases {
            if cluster == on {
                continue;
            }
            if let Some(rest) = topic
                .strip_prefix(alias.as_str())
                .and_then(|r| r.strip_prefix(self.separator.as_str()))
                .filter(|r| !r.is_empty())
            {
                return (cluster, rest);
            }
        }
        (on, topic)
    }

    /// Offsets are the same on every copy (no lookup needed).
    pub fn same_offsets(&self) -> bool {
        self.policy == ReplicationPolicy::SameOffsets
    }
}

/// Kafka's own topics and MirrorMaker 2's: never carried.
fn is_internal(topic: &str) -> bool {
    topic.starts_with("__")
        || topic.ends_with(".internal")
        || topic.starts_with("mm2-")
        || topic == "heartbeats"
        || topic.ends_with(".heartbeats")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mm2() -> Names {
        Names {
            policy: ReplicationPolicy::Prefix,
            separator: ".".into(),
            aliases: vec![
                ("north".into(), "north".into()),
                ("west".into(), "west".into()),
            ],
        }
    }

    #[test]
    fn prefix_policy_maps_originals_to_copies_and_copies_back_to_originals() {
        let n = mm2();
        assert_eq!(
            n.map("orders", "north", "west").as_deref(),
            Some("north.orders")
        );
        assert_eq!(
            n.map("west.orders", "north", "west").as_deref(),
            Some("orders")
        );
        assert_eq!(
            n.map("orders", "west", "north").as_deref(),
            Some("west.orders")
        );
        assert_eq!(
            n.map("north.orders", "west", "north").as_deref(),
            Some("orders")
        );
        // a dotted name that is no alias stays a local topic
        assert_eq!(
            n.map("eu.orders", "north", "west").as_deref(),
            Some("north.eu.orders")
        );
    }

    #[test]
    fn aliases_and_separators_other_than_the_cluster_keys() {
        let n = Names {
            policy: ReplicationPolicy::Prefix,
            separator: "_".into(),
            aliases: vec![
                ("north".into(), "dc1".into()),
                ("west".into(), "dc2".into()),
                ("south".into(), "dc3".into()),
            ],
        };
        assert_eq!(
            n.map("orders", "north", "west").as_deref(),
            Some("dc1_orders")
        );
        assert_eq!(
            n.map("dc2_orders", "north", "west").as_deref(),
            Some("orders")
        );
        // north's copy of south's topic: west has its own copy of south's original
        assert_eq!(
            n.map("dc3_orders", "north", "west").as_deref(),
            Some("dc3_orders")
        );
        assert_eq!(
            n.map("dc3_orders", "north", "south").as_deref(),
            Some("orders")
        );
    }

    #[test]
    fn identity_policies_keep_names_and_internal_topics_are_never_carried() {
        for policy in [ReplicationPolicy::Identity, ReplicationPolicy::SameOffsets] {
            let n = Names { policy, ..mm2() };
            assert_eq!(n.map("orders", "north", "west").as_deref(), Some("orders"));
            assert_eq!(n.same_offsets(), policy == ReplicationPolicy::SameOffsets);
        }
        let n = mm2();
        for t in [
            "__consumer_offsets",
            "mm2-offset-syncs.west.internal",
            "north.checkpoints.internal",
            "heartbeats",
            "north.heartbeats",
        ] {
            assert_eq!(n.map(t, "north", "west"), None, "{t}");
        }
    }
}
