//! Moving one group's positions to the new cluster: the decisions, over a narrow
//! [`Target`] so that they are tested without a broker.
//!
//! For every partition the sidecar's client committed on the old cluster (offset `C`,
//! the next record to read):
//! - the copy's offset comes from a timestamp lookup: `T` is the timestamp of the
//!   first record of the fetched batch holding `C-1` (the anchor). That record comes
//!   before `C` and its copy carries `T`, so the earliest offset with a timestamp
//!   `>= T` on the copy is at or before the copy of `C`: nothing is skipped, and what
//!   is read again is about that one batch (plus records sharing its millisecond).
//!   `C = 0` maps to the copy's earliest offset; same-offset mirrors (Cluster Linking)
//!   map `C` to itself;
//! - the new cluster may already hold a position for the group (the replication
//!   tool's offset sync, or an earlier stay there): the later of the two wins, both
//!   being at or before the real position;
//! - without a translation, the synced position stands, and without that the client's
//!   `auto.offset.reset` decides;
//! - the write is an admin-style commit (generation -1, no member), which Kafka accepts
//!   only while the group has no members there: a group already active on the new
//!   cluster is never moved, nor rewound.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use super::names::Names;

/// Where the records before a committed offset began: the first record of the fetched
/// batch holding `C-1`, and its timestamp (CreateTime as the producer set it, or the
/// broker's LogAppendTime: either way what a consumer and MirrorMaker 2 see).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub offset: i64,
    pub timestamp: i64,
}

/// One partition a group committed on the old cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub anchor: Option<Anchor>,
}

/// A lookup on the new cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The offset asked for (the log end where no record is as late as the timestamp).
    At(i64),
    /// The topic or partition is not there (yet).
    Absent,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommitResult {
    Written,
    /// The group has members on the new cluster: nothing written.
    GroupActive,
    Failed(String),
}

/// Earliest offset, as a ListOffsets timestamp.
pub const EARLIEST: i64 = -2;

/// What the carry needs of the new cluster.
pub trait Target: Send {
    /// The group's committed offsets there, -1 where none (topic, partition).
    fn committed(
        &mut self,
        group: &str,
        parts: &[(String, i32)],
    ) -> impl Future<Output = anyhow::Result<HashMap<(String, i32), i64>>> + Send;
    /// Per (topic, partition, timestamp): the earliest offset whose timestamp is at
    /// least that ([`EARLIEST`]: the earliest offset), the log end where none is.
    fn offsets_for_times(
        &mut self,
        query: &[(String, i32, i64)],
    ) -> impl Future<Output = HashMap<(String, i32), Lookup>> + Send;
    /// Commits as an admin (generation -1, no member, leader epoch -1).
    fn commit_if_empty(
        &mut self,
        group: &str,
        offsets: &[(String, i32, i64)],
    ) -> impl Future<Output = CommitResult> + Send;
}

/// How a partition's position on the new cluster was decided (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Path {
    /// Translated by the proxy and written.
    Translated,
    /// The position already there (the replication tool's sync) is as late or later.
    Synced,
    /// Nothing to go by: the client's `auto.offset.reset` decides.
    Reset,
    /// The group is active on the new cluster: left as it is.
    Active,
}

impl Path {
    pub fn label(self) -> &'static str {
        match self {
            Path::Translated => "translated",
            Path::Synced => "synced",
            Path::Reset => "reset",
            Path::Active => "active",
        }
    }
}

/// The outcome for one partition, on the new cluster's names.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub topic: String,
    pub partition: i32,
    pub path: Path,
    /// The position the group starts from there (None: auto.offset.reset).
    pub offset: Option<i64>,
    /// Why there was no translation, when there was none.
    pub why_not: Option<String>,
}

/// The later of a translation and a position already there, and how it was chosen.
pub fn decide(translated: Option<i64>, existing: i64) -> (Option<i64>, Path, bool) {
    match translated {
        Some(t) if t > existing => (Some(t), Path::Translated, true),
        Some(t) if t == existing => (Some(t), Path::Translated, false),
        _ if existing >= 0 => (Some(existing), Path::Synced, false),
        _ => (None, Path::Reset, false),
    }
}

/// Carries one group's commits on `from` to `to`.
pub async fn carry_group<T: Target>(
    target: &mut T,
    names: &Names,
    from: &str,
    to: &str,
    group: &str,
    commits: &[Committed],
) -> anyhow::Result<Vec<Outcome>> {
    struct Part {
        topic: String,
        partition: i32,
        query: Option<i64>,
        why_not: Option<String>,
        same: Option<i64>,
    }
    let mut parts = Vec::new();
    for c in commits {
        let Some(topic) = names.map(&c.topic, from, to) else {
            continue;
        };
        let (query, same, why_not) = if names.same_offsets() {
            (None, Some(c.offset), None)
        } else if c.offset <= 0 {
            (Some(EARLIEST), None, None)
        } else if let Some(a) = c.anchor {
            (Some(a.timestamp), None, None)
        } else {
            let why = "the sidecar did not see the fetched batch before the committed offset";
            (None, None, Some(why.to_string()))
        };
        parts.push(Part {
            topic,
            partition: c.partition,
            query,
            why_not,
            same,
        });
    }
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<(String, i32)> = parts
        .iter()
        .map(|p| (p.topic.clone(), p.partition))
        .collect();
    let existing = target.committed(group, &keys).await?;
    let query: Vec<(String, i32, i64)> = parts
        .iter()
        .filter_map(|p| Some((p.topic.clone(), p.partition, p.query?)))
        .collect();
    let mut found = if query.is_empty() {
        HashMap::new()
    } else {
        target.offsets_for_times(&query).await
    };
    let mut outcomes = Vec::new();
    let mut writes = Vec::new();
    for p in parts {
        let key = (p.topic.clone(), p.partition);
        let mut why_not = p.why_not;
        let translated = match (p.same, found.remove(&key)) {
            (Some(o), _) => Some(o),
            (None, Some(Lookup::At(o))) => Some(o),
            (None, Some(Lookup::Absent)) => {
                why_not = Some("the topic or partition is not on the new cluster".into());
                None
            }
            (None, Some(Lookup::Failed(e))) => {
                why_not = Some(format!("the timestamp lookup failed: {e}"));
                None
            }
            (None, None) => None,
        };
        let there = existing.get(&key).copied().unwrap_or(-1);
        let (offset, path, write) = decide(translated, there);
        if write {
            writes.push((p.topic.clone(), p.partition, offset.expect("written")));
        }
        outcomes.push(Outcome {
            topic: p.topic,
            partition: p.partition,
            path,
            offset,
            why_not: (translated.is_none()).then_some(why_not).flatten(),
        });
    }
    if !writes.is_empty() {
        match target.commit_if_empty(group, &writes).await {
            CommitResult::Written => {}
            CommitResult::GroupActive => {
                for o in outcomes.iter_mut().filter(|o| o.path == Path::Translated) {
                    if writes.iter().any(|w| w.0 == o.topic && w.1 == o.partition) {
                        o.path = Path::Active;
                        o.offset = None;
                    }
                }
            }
            CommitResult::Failed(e) => anyhow::bail!("cannot commit the translated positions: {e}"),
        }
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests;
