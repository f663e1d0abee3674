//! [`Target`] on real connections to the new cluster: the group coordinator for
//! committed offsets and the admin-style commit, each partition's leader for the
//! timestamp lookups. Connections are opened as the proxy opens all of its own
//! (TLS, SASL) and kept for the carry's duration.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FindCoordinatorResponse, ListOffsetsResponse, MetadataResponse,
    OffsetCommitResponse, OffsetFetchResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::carry::{CommitResult, Lookup, Target, EARLIEST};
use crate::cluster::Cluster;
use crate::codec;
use crate::connection::{Broker, Connection};
use crate::upstream::UpstreamStream;

type Conn = Broker<Connection<UpstreamStream>>;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const STALE_MEMBER_EPOCH: i16 = 113;
const LATEST: i64 = -1;

/// How often a coordinator that is not ready yet is asked again, and the first pause between: a
/// cluster that never served a group creates `__consumer_offsets` on the first FindCoordinator and
/// answers COORDINATOR_NOT_AVAILABLE until it is there (about a second on one KRaft node). The
/// pauses double up to [`MAX_PAUSE`]; the whole carry is bounded by `replication.carry_timeout`.
const ATTEMPTS: u32 = 12;
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// A coordinator error that says "ask again (maybe elsewhere)", not "no".
fn coordinator_not_ready(code: i16) -> bool {
    matches!(
        code,
        COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR
    )
}

/// The pause before attempt `attempt` (0-based) of a coordinator request.
fn pause(attempt: u32) -> Duration {
    FIRST_PAUSE
        .saturating_mul(1 << attempt.min(10))
        .min(MAX_PAUSE)
}

/// The new cluster, for one carry.
pub struct ClusterTarget {
    cluster: Arc<Cluster>,
    timeout: Duration,
    any: Option<Conn>,
    nodes: HashMap<i32, Conn>,
    /// Group -> coordinator node (asked once per carry: read, then commit).
    coordinators: HashMap<String, i32>,
}

impl ClusterTarget {
    pub fn new(cluster: Arc<Cluster>, timeout: Duration) -> Self {
        ClusterTarget {
            cluster,
            timeout,
            any: None,
            nodes: HashMap::new(),
            coordinators: HashMap::new(),
        }
    }

    async fn open(&self, node: Option<i32>) -> anyhow::Result<Conn> {
        if let Some(n) = node {
            self.cluster.ensure_node(n, self.timeout).await;
        }
        self.cluster
            .open_broker(node, self.timeout)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {:#}", e.addr, e.source))
    }

    async fn any(&mut self) -> anyhow::Result<&mut Conn> {
        if self.any.is_none() {
            self.any = Some(self.open(None).await?);
        }
        Ok(self.any.as_mut().expect("just set"))
    }

    async fn node(&mut self, id: i32) -> anyhow::Result<&mut Conn> {
        if !self.nodes.contains_key(&id) {
            let c = self.open(Some(id)).await?;
            self.nodes.insert(id, c);
        }
        Ok(self.nodes.get_mut(&id).expect("just set"))
    }

    async fn coordinator(&mut self, group: &str) -> anyhow::Result<&mut Conn> {
        if let Some(&node) = self.coordinators.get(group) {
            return self.node(node).await;
        }
        let mut attempt = 0;
        let node = loop {
            let any = self.any().await?;
            let v = any.version(ApiKey::FindCoordinator, 4).await?;
            let mut req = FindCoordinatorRequest::default().with_key_type(0);
            if v >= 4 {
                req = req.with_coordinator_keys(vec![StrBytes::from_string(group.to_string())]);
            } else {
                req = req.with_key(StrBytes::from_string(group.to_string()));
            }
            let r: FindCoordinatorResponse = any.call(ApiKey::FindCoordinator, v, &req).await?;
            let (err, node) = match r.coordinators.first() {
                Some(c) if v >= 4 => (c.error_code, c.node_id.0),
                _ => (r.error_code, r.node_id.0),
            };
            if err == 0 {
                break node;
            }
            anyhow::ensure!(
                coordinator_not_ready(err) && attempt + 1 < ATTEMPTS,
                "FindCoordinator for group '{group}': error code {err} (after {} attempts)",
                attempt + 1
            );
            tokio::time::sleep(pause(attempt)).await;
            attempt += 1;
        };
        self.coordinators.insert(group.to_string(), node);
        self.node(node).await
    }

    /// Forgets `group`'s coordinator after it answered `code`, and pauses before the next attempt
    /// when that code says to ask again; false when it does not (or attempts are used up).
    async fn again(&mut self, group: &str, code: i16, attempt: u32) -> bool {
        if !coordinator_not_ready(code) || attempt + 1 >= ATTEMPTS {
            return false;
        }
        self.coordinators.remove(group);
        tokio::time::sleep(pause(attempt)).await;
        true
    }

    /// Each partition's leader, for the topics asked.
    async fn leaders(
        &mut self,
        topics: &[&str],
    ) -> anyhow::Result<HashMap<(String, i32), Option<i32>>> {
        let any = self.any().await?;
        let v = any.version(ApiKey::Metadata, 12).await?;
        let req = codec::metadata_request_for(topics.iter().copied());
        let md: MetadataResponse = any.call(ApiKey::Metadata, v, &req).await?;
        for b in &md.brokers {
            self.cluster.learn_node(b.node_id.0, &b.host, b.port);
        }
        let mut out = HashMap::new();
        for t in &md.topics {
            let Some(name) = t.name.as_ref() else {
                continue;
            };
            for p in &t.partitions {
                let leader = (t.error_code == 0 && p.error_code == 0 && p.leader_id.0 >= 0)
                    .then_some(p.leader_id.0);
                out.insert((name.to_string(), p.partition_index), leader);
            }
        }
        Ok(out)
    }

    async fn list_offsets(
        &mut self,
        leader: i32,
        q: &[(String, i32, i64)],
    ) -> anyhow::Result<HashMap<(String, i32), (i16, i64)>> {
        let conn = self.node(leader).await?;
        let v = conn.version(ApiKey::ListOffsets, 7).await?;
        let mut by_topic: HashMap<&str, Vec<ListOffsetsPartition>> = HashMap::new();
        for (t, p, ts) in q {
            by_topic.entry(t).or_default().push(
                ListOffsetsPartition::default()
                    .with_partition_index(*p)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(*ts),
            );
        }
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        ListOffsetsTopic::default()
                            .with_name(StrBytes::from_string(t.to_string()).into())
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let r: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, v, &req).await?;
        Ok(r.topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    (
                        (t.name.to_string(), p.partition_index),
                        (p.error_code, p.offset),
                    )
                })
            })
            .collect())
    }
}

impl Target for ClusterTarget {
    async fn committed(
        &mut self,
        group: &str,
        parts: &[(String, i32)],
    ) -> anyhow::Result<HashMap<(String, i32), i64>> {
        let mut by_topic: HashMap<&str, Vec<i32>> = HashMap::new();
        for (t, p) in parts {
            by_topic.entry(t).or_default().push(*p);
        }
        let req = OffsetFetchRequest::default()
            .with_group_id(StrBytes::from_string(group.to_string()).into())
            .with_topics(Some(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(StrBytes::from_string(t.to_string()).into())
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            ));
        let mut attempt = 0;
        let r = loop {
            let conn = self.coordinator(group).await?;
            let v = conn.version(ApiKey::OffsetFetch, 7).await?;
            let r: OffsetFetchResponse = conn
                .call(ApiKey::OffsetFetch, v, &req)
                .await
                .with_context(|| format!("OffsetFetch of group '{group}'"))?;
            if r.error_code == 0 || !self.again(group, r.error_code, attempt).await {
                break r;
            }
            attempt += 1;
        };
        anyhow::ensure!(
            r.error_code == 0,
            "OffsetFetch of group '{group}': error code {}",
            r.error_code
        );
        let mut out = HashMap::new();
        for t in &r.topics {
            for p in &t.partitions {
                let o = if p.error_code == 0 {
                    p.committed_offset
                } else {
                    -1
                };
                out.insert((t.name.to_string(), p.partition_index), o);
            }
        }
        Ok(out)
    }

    async fn offsets_for_times(
        &mut self,
        query: &[(String, i32, i64)],
    ) -> HashMap<(String, i32), Lookup> {
        let mut out = HashMap::new();
        let mut topics: Vec<&str> = query.iter().map(|q| q.0.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        let leaders = match self.leaders(&topics).await {
            Ok(l) => l,
            Err(e) => {
                for (t, p, _) in query {
                    out.insert((t.clone(), *p), Lookup::Failed(format!("metadata: {e:#}")));
                }
                return out;
            }
        };
        let mut by_leader: HashMap<i32, Vec<(String, i32, i64)>> = HashMap::new();
        for (t, p, ts) in query {
            match leaders.get(&(t.clone(), *p)) {
                None => {
                    out.insert((t.clone(), *p), Lookup::Absent);
                }
                Some(None) => {
                    out.insert((t.clone(), *p), Lookup::Failed("no leader".into()));
                }
                Some(Some(l)) => by_leader.entry(*l).or_default().push((t.clone(), *p, *ts)),
            }
        }
        for (leader, q) in by_leader {
            let first = match self.list_offsets(leader, &q).await {
                Ok(r) => r,
                Err(e) => {
                    for (t, p, _) in q {
                        out.insert((t, p), Lookup::Failed(format!("{e:#}")));
                    }
                    continue;
                }
            };
            // No record as late as the timestamp (the copy has not caught up to the
            // anchor): the log end, where the rest of the copy will follow.
            let mut ends = Vec::new();
            for (t, p, ts) in &q {
                match first.get(&(t.clone(), *p)) {
                    Some((0, o)) if *o >= 0 => {
                        out.insert((t.clone(), *p), Lookup::At(*o));
                    }
                    Some((0, _)) if *ts != EARLIEST => ends.push((t.clone(), *p, LATEST)),
                    Some((UNKNOWN_TOPIC_OR_PARTITION, _)) => {
                        out.insert((t.clone(), *p), Lookup::Absent);
                    }
                    Some((e, _)) => {
                        out.insert(
                            (t.clone(), *p),
                            Lookup::Failed(format!("ListOffsets error code {e}")),
                        );
                    }
                    None => {
                        out.insert(
                            (t.clone(), *p),
                            Lookup::Failed("not in the ListOffsets answer".into()),
                        );
                    }
                }
            }
            if ends.is_empty() {
                continue;
            }
            match self.list_offsets(leader, &ends).await {
                Ok(r) => {
                    for (t, p, _) in ends {
                        let l = match r.get(&(t.clone(), p)) {
                            Some((0, o)) if *o >= 0 => Lookup::At(*o),
                            other => Lookup::Failed(format!("log end: {other:?}")),
                        };
                        out.insert((t, p), l);
                    }
                }
                Err(e) => {
                    for (t, p, _) in ends {
                        out.insert((t, p), Lookup::Failed(format!("{e:#}")));
                    }
                }
            }
        }
        out
    }

    async fn commit_if_empty(
        &mut self,
        group: &str,
        offsets: &[(String, i32, i64)],
    ) -> CommitResult {
        let mut by_topic: HashMap<&str, Vec<OffsetCommitRequestPartition>> = HashMap::new();
        for (t, p, o) in offsets {
            by_topic.entry(t).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
                    // The old cluster's epochs mean nothing here (KIP-1279's trap).
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(Some(StrBytes::from_static_str(
                        "kafka-sidecar: carried across a switch",
                    ))),
            );
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(StrBytes::from_string(group.to_string()).into())
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_retention_time_ms(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(StrBytes::from_string(t.to_string()).into())
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let mut attempt = 0;
        let r = loop {
            let result = async {
                let conn = self.coordinator(group).await?;
                let v = conn.version(ApiKey::OffsetCommit, 8).await?;
                let r: OffsetCommitResponse = conn.call(ApiKey::OffsetCommit, v, &req).await?;
                anyhow::Ok(r)
            }
            .await;
            let r = match result {
                Ok(r) => r,
                Err(e) => return CommitResult::Failed(format!("{e:#}")),
            };
            // One error for the whole group is how a coordinator says it is not ready.
            let first = r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                .find(|e| *e != 0);
            match first {
                Some(code) if self.again(group, code, attempt).await => attempt += 1,
                _ => break r,
            }
        };
        let errors: Vec<i16> = r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .filter(|e| *e != 0)
            .collect();
        match errors.first() {
            None => CommitResult::Written,
            Some(
                &(UNKNOWN_MEMBER_ID
                | ILLEGAL_GENERATION
                | REBALANCE_IN_PROGRESS
                | STALE_MEMBER_EPOCH),
            ) => CommitResult::GroupActive,
            Some(e) => CommitResult::Failed(format!("OffsetCommit error code {e}")),
        }
    }
}
