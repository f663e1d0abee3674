//! KIP-848 members across a switch: their membership ends on the new cluster's terms.
//!
//! A KIP-848 consumer (`group.protocol=consumer`) keeps its member id, epoch,
//! assignment and fetch positions across a reconnect. After a switch its heartbeat
//! (epoch > 0) reaches a cluster where the group does not know it (GROUP_ID_NOT_FOUND
//! when the group does not exist there: fatal in Java and librdkafka), and until that
//! heartbeat it fetches and commits at the old cluster's offsets (records skipped,
//! old offsets committed). So the proxy remembers, across sessions, in which switch
//! generation each KIP-848 member was last a member. In a session of a later
//! generation, until the member rejoins (a heartbeat at epoch 0):
//! - its heartbeat is answered FENCED_MEMBER_EPOCH by the proxy. Java
//!   (`AbstractHeartbeatRequestManager`: `transitionToFenced`, no backoff), librdkafka
//!   (`rdkafka_cgrp.c`: WAIT_REJOIN) and franz-go (`consumer_group_848.go`:
//!   `abandonAssignment`, same member id) drop the assignment with its positions and
//!   rejoin at epoch 0, then start from the new cluster's committed offsets (or
//!   auto.offset.reset);
//! - its commits are answered UNKNOWN_MEMBER_ID, never forwarded. librdkafka then
//!   heartbeats at once (and so gets fenced) and does not retry the commit, where
//!   STALE_MEMBER_EPOCH would make it re-send the same old offsets after the rejoin;
//!   Java fails the commit (CommitFailedException, as for STALE_MEMBER_EPOCH);
//! - fetches from its client (the request header's client id: fetches use other
//!   connections than the coordinator's) are answered NOT_LEADER_OR_FOLLOWER for
//!   every partition asked. Java, librdkafka and franz-go refresh metadata and fetch
//!   again (librdkafka after `fetch.error.backoff.ms`) without moving the position,
//!   so no record at an old-cluster position is delivered. FENCED_LEADER_EPOCH would
//!   start an offset validation, OFFSET_OUT_OF_RANGE a reset.
//!
//! Classic members (JoinGroup) are treated alike where they can be: their commits from
//! before the switch are refused, and their client's fetches are held until the client
//! joins the group again on the new cluster (its old positions are in range there after a
//! failback: records at the wrong place would be delivered).
//!
//! Fetch requests are looked at only while some member is left behind (one atomic
//! load otherwise), and then only their header until the client id matches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, FetchRequest,
    FetchResponse, OffsetCommitRequest, OffsetCommitResponse,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use parking_lot::Mutex;

use super::Joining;
use crate::codec;

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const UNKNOWN_MEMBER_ID: i16 = 25;
const FENCED_MEMBER_EPOCH: i16 = 110;

/// How long after a switch a member that has not rejoined holds back its client's
/// fetches. A live client heartbeats well within this (5 s by default); one that does
/// not was expired by the broker anyway, and a client id shared with other consumers
/// must not stall them for good.
const FETCH_HOLD: Duration = Duration::from_secs(60);
/// How long a member left behind is remembered (for its heartbeats) at most.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What the proxy knows of one KIP-848 member, whichever session carried it.
#[derive(Debug, Clone)]
struct Known {
    group_id: StrBytes,
    member_id: StrBytes,
    /// The client id of the requests that made it a member.
    client_id: Option<Bytes>,
    /// The switch generation it was last a member in (a successful heartbeat).
    generation: u64,
    /// When a newer generation was first seen while it was a member of this one.
    left_behind: Option<Instant>,
}

#[derive(Default)]
struct State {
    /// The newest generation a session was opened in.
    generation: u64,
    members: Vec<Known>,
}

impl State {
    /// Whether some member left behind still holds back its client's fetches.
    fn holding(&self, now: Instant) -> bool {
        self.members.iter().any(|m| holds(m, now))
    }

    /// A member of `group` joined in `generation`: its earlier generations' entries
    /// (same member id, or same client id) no longer hold anything back.
    fn rejoined(
        &mut self,
        group: &StrBytes,
        generation: u64,
        member: Option<&StrBytes>,
        client: Option<&[u8]>,
    ) {
        self.members.retain(|m| {
            !(m.group_id == *group
                && m.generation < generation
                && (member.is_some_and(|id| m.member_id == *id)
                    || (client.is_some() && m.client_id.as_deref() == client)))
        });
    }

    fn prune(&mut self, now: Instant) {
        self.members.retain(|m| {
            m.left_behind
                .is_none_or(|t| now.duration_since(t) < FORGET_AFTER)
        });
    }
}

/// Classic members are held too: until their rebalance on the new cluster they fetch
/// at the old cluster's positions, and where those are in range there (a failback:
/// offsets from the other cluster), records at the wrong place are delivered (seen
/// as ~180 records read again after a failback with librdkafka).
fn holds(m: &Known, now: Instant) -> bool {
    m.left_behind
        .is_some_and(|t| now.duration_since(t) < FETCH_HOLD)
}

/// The group members (KIP-848 and classic) of every session, by switch generation
/// (one per proxy).
#[derive(Default)]
pub struct Rejoins {
    /// Some member left behind may hold back fetches: only then are they looked at.
    holding: AtomicBool,
    state: Mutex<State>,
}

impl Rejoins {
    fn update(&self, f: impl FnOnce(&mut State, Instant)) {
        let now = Instant::now();
        let mut s = self.state.lock();
        f(&mut s, now);
        s.prune(now);
        self.holding.store(s.holding(now), Ordering::Relaxed);
    }

    /// A session of `generation` opened: the first one of a new generation leaves the
    /// members of earlier ones behind.
    pub fn session_opened(&self, generation: u64) {
        if generation <= self.state.lock().generation {
            return;
        }
        self.update(|s, now| {
            if generation <= s.generation {
                return;
            }
            s.generation = generation;
            for m in s.members.iter_mut().filter(|m| m.generation < generation) {
                m.left_behind.get_or_insert(now);
            }
            let behind = s.members.iter().filter(|m| m.left_behind.is_some()).count();
            if behind > 0 {
                tracing::info!(generation, members = behind, "KIP-848 group members must rejoin on the new cluster: their heartbeats are fenced, their fetches and commits refused until then");
            }
        });
    }

    /// A ConsumerGroupHeartbeat request in a session of `generation`. Some(answer):
    /// the member is fenced by the proxy (the request is not forwarded).
    pub(crate) fn heartbeat_request(
        &self,
        generation: u64,
        frame: &Bytes,
        version: i16,
    ) -> anyhow::Result<Option<Bytes>> {
        let Some(req) = codec::decode_request::<ConsumerGroupHeartbeatRequest>(
            ApiKey::ConsumerGroupHeartbeat,
            version,
            frame,
        ) else {
            return Ok(None);
        };
        let client = client_id(frame);
        let group = &req.group_id.0;
        let same = |m: &Known| m.group_id == *group && m.member_id == req.member_id;
        match req.member_epoch {
            epoch if epoch > 0 => {
                let behind = {
                    let s = self.state.lock();
                    s.members
                        .iter()
                        .any(|m| same(m) && m.generation < generation)
                };
                if !behind {
                    return Ok(None);
                }
                tracing::info!(generation, group = %group, member = %req.member_id, epoch, "KIP-848 member from before the switch heartbeats: fenced by the proxy so that it rejoins on this cluster");
                let resp = ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(FENCED_MEMBER_EPOCH)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "kafka-sidecar: the active cluster was switched; rejoin the group",
                    )));
                answer(ApiKey::ConsumerGroupHeartbeat, frame, version, &resp).map(Some)
            }
            // Joining (again): the client holds no assignment, nor positions, any more.
            // franz-go rejoins under a fresh member id after UNKNOWN_MEMBER_ID: the
            // client id tells it too.
            0 => {
                self.update(|s, _| s.rejoined(group, generation, Some(&req.member_id), client));
                Ok(None)
            }
            // Leaving.
            _ => {
                self.update(|s, _| s.members.retain(|m| !same(m)));
                Ok(None)
            }
        }
    }

    /// A successful heartbeat answer in a session of `generation`: `member` is a member
    /// of its group in that generation.
    pub(crate) fn member_confirmed(&self, generation: u64, joining: &Joining, member: &StrBytes) {
        self.confirmed(generation, joining, member, true)
    }

    /// A successful classic JoinGroup answer in a session of `generation`. After a
    /// switch, the client's commits under this member id carry the old cluster's
    /// positions (a Java consumer commits them before it rejoins): they are refused,
    /// so the group starts on the new cluster from that cluster's own committed
    /// offsets (or auto.offset.reset) and skips nothing.
    pub(crate) fn classic_member_joined(
        &self,
        generation: u64,
        joining: &Joining,
        member: &StrBytes,
    ) {
        self.confirmed(generation, joining, member, false)
    }

    fn confirmed(&self, generation: u64, joining: &Joining, member: &StrBytes, kip848: bool) {
        self.update(|s, now| {
            if !kip848 {
                // A classic member joined in this generation (under a new member id):
                // its positions come from the new cluster's commits now.
                s.rejoined(
                    &joining.group_id,
                    generation,
                    None,
                    joining.client_id.as_deref(),
                );
            }
            let left_behind = (generation < s.generation).then_some(now);
            match s
                .members
                .iter_mut()
                .find(|m| m.group_id == joining.group_id && m.member_id == *member)
            {
                Some(m) if m.generation > generation => {}
                Some(m) => {
                    m.generation = generation;
                    m.left_behind = left_behind;
                    m.client_id.clone_from(&joining.client_id);
                }
                None => s.members.push(Known {
                    group_id: joining.group_id.clone(),
                    member_id: member.clone(),
                    client_id: joining.client_id.clone(),
                    generation,
                    left_behind,
                }),
            }
        });
    }

    /// An OffsetCommit request in a session of `generation`. Some(answer): the commit
    /// of a member that has not rejoined is refused (not forwarded).
    pub(crate) fn commit_request(
        &self,
        generation: u64,
        frame: &Bytes,
        version: i16,
    ) -> anyhow::Result<Option<Bytes>> {
        if generation == 0 {
            return Ok(None);
        }
        let Some(req) =
            codec::decode_request::<OffsetCommitRequest>(ApiKey::OffsetCommit, version, frame)
        else {
            return Ok(None);
        };
        if req.generation_id_or_member_epoch <= 0 || req.member_id.is_empty() {
            return Ok(None);
        }
        let behind = self.state.lock().members.iter().any(|m| {
            m.group_id == req.group_id.0
                && m.member_id == req.member_id
                && m.generation < generation
        });
        if !behind {
            return Ok(None);
        }
        tracing::info!(generation, group = %req.group_id.0, member = %req.member_id, "refused a commit of a group member from before the switch (its offsets are the old cluster's)");
        let resp = OffsetCommitResponse::default().with_topics(
            req.topics
                .iter()
                .map(|t| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(UNKNOWN_MEMBER_ID)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
        answer(ApiKey::OffsetCommit, frame, version, &resp).map(Some)
    }

    /// A Fetch request in a session of `generation`. Some(answer): its client's member
    /// has not rejoined, and its positions are the old cluster's.
    pub fn fetch_request(
        &self,
        generation: u64,
        frame: &Bytes,
        version: i16,
    ) -> anyhow::Result<Option<Bytes>> {
        if !self.holding.load(Ordering::Relaxed) || generation == 0 {
            return Ok(None);
        }
        let Some(client) = client_id(frame) else {
            return Ok(None);
        };
        let now = Instant::now();
        let held = {
            let s = self.state.lock();
            s.members.iter().any(|m| {
                m.generation < generation && m.client_id.as_deref() == Some(client) && holds(m, now)
            })
        };
        if !held {
            return Ok(None);
        }
        let Some(req) = codec::decode_request::<FetchRequest>(ApiKey::Fetch, version, frame) else {
            return Ok(None);
        };
        tracing::debug!(generation, client = %String::from_utf8_lossy(client), "refused a fetch: its client's KIP-848 member has not rejoined since the switch");
        let resp = FetchResponse::default().with_responses(
            req.topics
                .iter()
                .map(|t| {
                    FetchableTopicResponse::default()
                        .with_topic(t.topic.clone())
                        .with_topic_id(t.topic_id)
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    PartitionData::default()
                                        .with_partition_index(p.partition)
                                        .with_error_code(NOT_LEADER_OR_FOLLOWER)
                                        .with_high_watermark(-1)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
        answer(ApiKey::Fetch, frame, version, &resp).map(Some)
    }
}

/// The client id of a request frame (length prefix included); None if null or short.
pub(crate) fn client_id(frame: &[u8]) -> Option<&[u8]> {
    let len = i16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    frame.get(14..14 + usize::try_from(len).ok()?)
}

/// The proxy's own answer to the request in `frame`.
fn answer<T: Encodable>(api: ApiKey, frame: &[u8], version: i16, msg: &T) -> anyhow::Result<Bytes> {
    let corr = codec::peek_request(frame).correlation_id;
    codec::response_frame(corr, api.response_header_version(version), version, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group_membership::tests::{request_frame_from, response_frame};
    use crate::group_membership::Memberships;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };

    const GROUP: &str = "g848";

    fn heartbeat_frame(client: &'static str, member: &'static str, epoch: i32) -> Bytes {
        let req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(StrBytes::from_static_str(GROUP).into())
            .with_member_id(StrBytes::from_static_str(member))
            .with_member_epoch(epoch);
        request_frame_from(client, ApiKey::ConsumerGroupHeartbeat, 1, &req)
    }

    /// What the session does with a heartbeat of `client` in `generation`: the proxy's
    /// own answer, or the broker's (`error`, member id `member`) recorded.
    fn heartbeat(
        r: &Rejoins,
        generation: u64,
        client: &'static str,
        member: &'static str,
        epoch: i32,
    ) -> Option<ConsumerGroupHeartbeatResponse> {
        let frame = heartbeat_frame(client, member, epoch);
        if let Some(a) = r.heartbeat_request(generation, &frame, 1).unwrap() {
            return Some(codec::decode_response(ApiKey::ConsumerGroupHeartbeat, 1, &a).unwrap());
        }
        let session = Memberships::default();
        if let Some(joining) = session.heartbeat_request(&frame, 1) {
            let resp = ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(StrBytes::from_static_str(member)))
                .with_member_epoch(epoch.max(1));
            let answer = response_frame(ApiKey::ConsumerGroupHeartbeat, 1, &resp);
            if let Some(m) = session.heartbeat_response(&joining, &answer, 1) {
                r.member_confirmed(generation, &joining, &m);
            }
        }
        None
    }

    fn fetch(
        r: &Rejoins,
        generation: u64,
        client: &'static str,
        version: i16,
    ) -> Option<FetchResponse> {
        let topic = FetchTopic::default()
            .with_topic(StrBytes::from_static_str("t").into())
            .with_topic_id(uuid::Uuid::from_u128(7))
            .with_partitions(vec![
                FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(15),
                FetchPartition::default()
                    .with_partition(2)
                    .with_fetch_offset(21),
            ]);
        let req = FetchRequest::default()
            .with_max_wait_ms(500)
            .with_topics(vec![topic]);
        let frame = request_frame_from(client, ApiKey::Fetch, version, &req);
        let a = r.fetch_request(generation, &frame, version).unwrap()?;
        assert_eq!(codec::peek_response_correlation(&a), 5);
        Some(codec::decode_response(ApiKey::Fetch, version, &a).unwrap())
    }

    fn commit(
        r: &Rejoins,
        generation: u64,
        member: &'static str,
        epoch: i32,
    ) -> Option<OffsetCommitResponse> {
        let req = OffsetCommitRequest::default()
            .with_group_id(StrBytes::from_static_str(GROUP).into())
            .with_member_id(StrBytes::from_static_str(member))
            .with_generation_id_or_member_epoch(epoch)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(StrBytes::from_static_str("t").into())
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(15)])]);
        let frame = request_frame_from("rdkafka", ApiKey::OffsetCommit, 9, &req);
        let a = r.commit_request(generation, &frame, 9).unwrap()?;
        Some(codec::decode_response(ApiKey::OffsetCommit, 9, &a).unwrap())
    }

    /// A member of generation 0, then the switch to generation 1.
    fn switched() -> Rejoins {
        let r = Rejoins::default();
        assert!(heartbeat(&r, 0, "rdkafka", "m-1", 0).is_none());
        assert!(heartbeat(&r, 0, "rdkafka", "m-1", 3).is_none());
        assert!(
            !r.holding.load(Ordering::Relaxed),
            "nothing held before a switch"
        );
        assert!(fetch(&r, 0, "rdkafka", 12).is_none());
        r.session_opened(1);
        r
    }

    #[test]
    fn a_classic_members_commits_from_before_the_switch_are_refused_and_its_fetches_flow() {
        use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
        let r = Rejoins::default();
        let join = |generation: u64, member: &'static str| {
            let req = JoinGroupRequest::default()
                .with_group_id(StrBytes::from_static_str(GROUP).into())
                .with_protocol_type(StrBytes::from_static_str("consumer"));
            let frame = request_frame_from("java-1", ApiKey::JoinGroup, 9, &req);
            let joining = Memberships::joining(
                &codec::decode_request(ApiKey::JoinGroup, 9, &frame).expect("decodes"),
            );
            let resp = JoinGroupResponse::default()
                .with_member_id(StrBytes::from_static_str(member))
                .with_generation_id(4);
            let answer = response_frame(ApiKey::JoinGroup, 9, &resp);
            let m = Memberships::default()
                .join_response(joining.clone(), &answer, 9)
                .expect("a member");
            r.classic_member_joined(generation, &joining, &m);
        };
        join(0, "c-1");
        assert!(
            commit(&r, 0, "c-1", 4).is_none(),
            "before a switch: relayed"
        );
        r.session_opened(1);
        // The client commits north's positions on west before it rejoins there.
        let refused = commit(&r, 1, "c-1", 4).expect("refused");
        assert_eq!(
            refused.topics[0].partitions[0].error_code,
            UNKNOWN_MEMBER_ID
        );
        // Its fetches are not held (a classic client re-fetches its offsets on rejoin).
        assert!(fetch(&r, 1, "java-1", 12).is_none());
        // Joined on west: its commits there go through.
        join(1, "c-2");
        assert!(commit(&r, 1, "c-2", 1).is_none());
    }

    #[test]
    fn a_member_from_before_the_switch_is_fenced_and_its_fetches_and_commits_refused_until_it_rejoins(
    ) {
        let r = switched();
        // Sessions still draining on the old cluster relay as before.
        assert!(heartbeat(&r, 0, "rdkafka", "m-1", 3).is_none());
        assert!(fetch(&r, 0, "rdkafka", 12).is_none());
        // On the new cluster: every partition asked is refused, at any version.
        for v in [4, 11, 12, 13, 17, 18] {
            let resp = fetch(&r, 1, "rdkafka", v).expect("refused");
            let codes: Vec<(i32, i16)> = resp.responses[0]
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.error_code))
                .collect();
            assert_eq!(codes, vec![(0, 6), (2, 6)], "v{v}");
            assert!(resp.responses[0]
                .partitions
                .iter()
                .all(|p| p.records.as_ref().is_none_or(|r| r.is_empty())));
        }
        // Another client's fetches pass.
        assert!(fetch(&r, 1, "other", 12).is_none());
        // Commits at the old cluster's offsets are refused, not forwarded.
        let c = commit(&r, 1, "m-1", 3).expect("refused");
        assert_eq!(c.topics[0].partitions[0].error_code, UNKNOWN_MEMBER_ID);
        assert!(commit(&r, 1, "m-2", 3).is_none(), "another member's commit");
        // Its heartbeat is answered by the proxy: fenced.
        let hb = heartbeat(&r, 1, "rdkafka", "m-1", 3).expect("fenced");
        assert_eq!(hb.error_code, FENCED_MEMBER_EPOCH);
        // The rejoin (epoch 0) is forwarded and ends all of it.
        assert!(heartbeat(&r, 1, "rdkafka", "m-1", 0).is_none());
        assert!(!r.holding.load(Ordering::Relaxed));
        assert!(fetch(&r, 1, "rdkafka", 12).is_none());
        assert!(commit(&r, 1, "m-1", 1).is_none());
        assert!(heartbeat(&r, 1, "rdkafka", "m-1", 1).is_none());
        // The next switch leaves it behind again.
        r.session_opened(2);
        assert!(fetch(&r, 2, "rdkafka", 12).is_some());
        assert_eq!(
            heartbeat(&r, 2, "rdkafka", "m-1", 1).map(|h| h.error_code),
            Some(FENCED_MEMBER_EPOCH)
        );
    }

    #[test]
    fn a_rejoin_under_a_fresh_member_id_is_recognised_by_the_client_id() {
        // franz-go rejoins with a new member id after UNKNOWN_MEMBER_ID.
        let r = switched();
        assert!(heartbeat(&r, 1, "rdkafka", "m-new", 0).is_none());
        assert!(fetch(&r, 1, "rdkafka", 12).is_none());
        assert!(heartbeat(&r, 1, "rdkafka", "m-1", 3).is_none(), "forgotten");
    }

    #[test]
    fn a_member_confirmed_by_a_session_of_the_old_generation_after_the_switch_is_left_behind() {
        let r = Rejoins::default();
        r.session_opened(1);
        // The heartbeat answer of a session still draining on the old cluster.
        assert!(heartbeat(&r, 0, "c-2", "m-2", 0).is_none());
        assert!(fetch(&r, 1, "c-2", 12).is_some());
        assert!(heartbeat(&r, 1, "c-2", "m-2", 4).is_some());
    }

    #[test]
    fn a_leave_forgets_the_member_and_the_fetch_hold_expires() {
        let r = switched();
        assert!(heartbeat(&r, 1, "rdkafka", "m-1", -1).is_none());
        assert!(fetch(&r, 1, "rdkafka", 12).is_none());
        assert!(!r.holding.load(Ordering::Relaxed));

        let r = switched();
        // A member that never comes back stops holding its client id's fetches.
        r.update(|s, now| {
            for m in &mut s.members {
                m.left_behind = Some(now - FETCH_HOLD);
            }
        });
        assert!(!r.holding.load(Ordering::Relaxed));
        assert!(fetch(&r, 1, "rdkafka", 12).is_none());
        // ... but is still fenced if it shows up.
        assert!(heartbeat(&r, 1, "rdkafka", "m-1", 3).is_some());
        // And is forgotten at last.
        r.update(|s, now| {
            for m in &mut s.members {
                m.left_behind = Some(now - FORGET_AFTER);
            }
        });
        assert!(r.state.lock().members.is_empty());
    }

    #[test]
    fn client_ids_are_read_from_the_header() {
        let f = heartbeat_frame("rdkafka", "m", 0);
        assert_eq!(client_id(&f), Some(&b"rdkafka"[..]));
        assert_eq!(client_id(&f[..16]), None, "short");
        let mut null = f.to_vec();
        null[12..14].copy_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(client_id(&null), None);
    }
}

#[cfg(test)]
mod classic_tests {
    use super::*;
    use crate::group_membership::tests::request_frame_from;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};

    fn joining(client: &'static [u8]) -> Joining {
        Joining {
            group_id: StrBytes::from_static_str("gc"),
            group_instance_id: None,
            member_id: StrBytes::default(),
            client_id: Some(Bytes::from_static(client)),
        }
    }

    fn fetch_refused(r: &Rejoins, generation: u64, client: &'static str) -> bool {
        let req = FetchRequest::default().with_topics(vec![FetchTopic::default()
            .with_topic(StrBytes::from_static_str("t").into())
            .with_partitions(vec![FetchPartition::default().with_fetch_offset(430)])]);
        let frame = request_frame_from(client, ApiKey::Fetch, 12, &req);
        r.fetch_request(generation, &frame, 12).unwrap().is_some()
    }

    #[test]
    fn a_classic_members_fetches_wait_for_its_rejoin_on_the_new_cluster() {
        let r = Rejoins::default();
        r.classic_member_joined(
            0,
            &joining(b"rdkafka"),
            &StrBytes::from_static_str("m-north"),
        );
        assert!(
            !fetch_refused(&r, 0, "rdkafka"),
            "nothing held before a switch"
        );
        r.session_opened(1);
        assert!(
            fetch_refused(&r, 1, "rdkafka"),
            "old positions not fetched on the new cluster"
        );
        assert!(!fetch_refused(&r, 1, "other"), "other clients pass");
        r.classic_member_joined(
            1,
            &joining(b"rdkafka"),
            &StrBytes::from_static_str("m-west"),
        );
        assert!(
            !fetch_refused(&r, 1, "rdkafka"),
            "rejoined: positions come from the new cluster's commits"
        );
    }
}
