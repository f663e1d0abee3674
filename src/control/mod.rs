//! The fleet control plane: failover decisions carried by the clusters themselves.
//!
//! Every configured cluster holds two small topics (see `docs/fleet-failover.md`):
//! - the *control* topic (one partition, kept forever, a few records a year): the
//!   [`Decision`]s. Every sidecar long-polls it on every cluster it can reach and
//!   follows the decision with the highest `(epoch, writer)`: the same answer everywhere.
//! - the *fleet* topic (two partitions, short retention): partition 0 holds the
//!   sidecars' [`Report`]s, partition 1 the arbiters' [`Vote`]s. Sidecars write reports
//!   there and never read it, so a sidecar's control traffic does not grow with the fleet.
//!
//! Layers: [`log::ControlLog`] is the narrow seam to a broker (append / read / bounds);
//! [`client`] implements it on kafka-protocol over [`crate::upstream::connect`] (same
//! TCP/TLS/SASL settings as the data path). [`follower`] runs in each sidecar,
//! [`arbiter`] is the optional automatic-failover role, [`ops`] the operator commands.

pub mod arbiter;
pub mod client;
pub mod follower;
pub mod log;
pub mod ops;
pub mod quorum;

use serde::{Deserialize, Serialize};

/// Who made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `kafka-sidecar failover` (an operator).
    Operator,
    /// A quorum of arbiters.
    Automatic,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Origin::Operator => "operator",
            Origin::Automatic => "automatic",
        }
    }
}

/// One failover decision: from `epoch` on, clients go to `active`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub epoch: u64,
    pub active: String,
    /// The cluster the fleet followed before (as the writer saw it).
    #[serde(default)]
    pub previous: Option<String>,
    pub reason: String,
    pub origin: Origin,
    /// Unique id of the writer; breaks ties between decisions of equal epoch.
    pub writer: String,
    pub host: String,
    pub pid: u32,
    /// Wall-clock time of writing, Unix milliseconds.
    pub at_ms: i64,
    /// For automatic decisions: the votes and probe results that justified it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<serde_json::Value>,
}

impl Decision {
    /// True if `self` takes precedence over `other`: higher epoch, then the greater
    /// writer id. A total order on what is in the records, so every reader agrees.
    pub fn supersedes(&self, other: &Decision) -> bool {
        (self.epoch, &self.writer) > (other.epoch, &other.writer)
    }

    pub fn parse(value: &[u8]) -> Option<Decision> {
        let d: Decision = serde_json::from_slice(value).ok()?;
        (d.epoch > 0 && !d.active.is_empty()).then_some(d)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a decision serializes")
    }
}

/// The highest of some decisions (by [`Decision::supersedes`]).
pub fn highest<'a>(ds: impl IntoIterator<Item = &'a Decision>) -> Option<&'a Decision> {
    ds.into_iter()
        .fold(None, |best: Option<&Decision>, d| match best {
            Some(b) if !d.supersedes(b) => Some(b),
            _ => Some(d),
        })
}

/// A sidecar's periodic report (fleet topic, partition 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// The cluster its clients are sent to now.
    pub cluster: String,
    /// Epoch of the decision it follows (0: none, the file's default).
    pub epoch: u64,
    pub at_ms: i64,
    /// Its report interval: a report older than 3 intervals is stale.
    pub interval_ms: u64,
    /// Clusters whose control topic it can read.
    #[serde(default)]
    pub reachable: Vec<String>,
}

/// An arbiter's vote (fleet topic, partition 1): what it sees of every cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    pub arbiter: String,
    /// Increases with every vote of this arbiter's process; with `incarnation`, lets
    /// readers tell a fresh vote from a replay without trusting clocks.
    pub seq: u64,
    pub incarnation: String,
    pub at_ms: i64,
    /// The epoch of the decision the arbiter follows.
    pub epoch: u64,
    /// The active cluster it sees (from the highest decision or the file's default).
    pub active: String,
    pub clusters: std::collections::BTreeMap<String, Health>,
}

/// One arbiter's view of one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    /// How long (on the arbiter's monotonic clock) the cluster has been in this state.
    pub for_ms: u64,
    /// The stage that failed last (tcp, tls, sasl, metadata, control), if unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where this process runs, for decisions and reports.
pub fn host_name() -> String {
    for var in ["POD_NAME", "HOSTNAME"] {
        if let Ok(h) = std::env::var(var) {
            if !h.is_empty() {
                return h;
            }
        }
    }
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Unique id of a process: host, pid and a random suffix (pids repeat across pods).
pub fn process_id() -> String {
    format!(
        "{}-{}-{:04x}",
        host_name(),
        std::process::id(),
        rand::random::<u16>()
    )
}

pub fn now_ms() -> i64 {
    crate::cluster::now_ms()
}

/// Wall-clock Unix ms, as the arbiter and `failover` read it. A parameter so that
/// their state machines run on tokio's paused time in tests ([`paused_clock`]).
pub type Clock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    std::sync::Arc::new(now_ms)
}

/// A wall clock that follows tokio's (possibly paused) time from a fixed origin.
#[cfg(test)]
pub fn paused_clock() -> Clock {
    let origin = tokio::time::Instant::now();
    std::sync::Arc::new(move || 1_700_000_000_000 + origin.elapsed().as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(epoch: u64, writer: &str, active: &str) -> Decision {
        Decision {
            epoch,
            active: active.into(),
            previous: None,
            reason: "t".into(),
            origin: Origin::Operator,
            writer: writer.into(),
            host: "h".into(),
            pid: 1,
            at_ms: 0,
            evidence: None,
        }
    }

    #[test]
    fn highest_epoch_wins_and_ties_break_by_writer() {
        let a = d(3, "a", "west");
        let b = d(3, "b", "north");
        let c = d(2, "z", "north");
        assert!(b.supersedes(&a) && !a.supersedes(&b));
        assert!(a.supersedes(&c));
        // Order of arrival does not matter.
        for order in [[&a, &b, &c], [&c, &b, &a], [&b, &c, &a]] {
            assert_eq!(highest(order).unwrap().writer, "b");
        }
        assert!(highest(std::iter::empty::<&Decision>()).is_none());
    }

    #[test]
    fn decision_round_trips_and_junk_is_ignored() {
        let x = d(7, "w", "west");
        assert_eq!(Decision::parse(&x.to_json()), Some(x));
        assert_eq!(Decision::parse(b"not json"), None);
        assert_eq!(Decision::parse(br#"{"epoch":0}"#), None);
    }
}
