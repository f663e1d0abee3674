//! One topic id per topic and rising leader epochs, whatever cluster is behind the
//! proxy.
//!
//! The same topic has another id on each cluster (MirrorMaker 2 and Cluster Linking
//! create mirror topics with new ids), and leader epochs restart low on the other
//! cluster. Clients that name topics by id (Java 4.1+ Produce v13, Fetch v13+,
//! KIP-848 assignments) or compare epochs (every current client discards metadata
//! whose leader epoch went backwards) break at a switch if they see either.
//!
//! - **Topic ids**: the client sees an id of the proxy's own, derived from the topic
//!   name (so it is the same on every cluster, in every sidecar, across restarts),
//!   plus an incarnation that moves on when a cluster reports a new id for a name it
//!   knew (the topic was deleted and re-created). Ids are learned from every answer
//!   that names a topic and its id (Metadata, DescribeTopicPartitions, CreateTopics,
//!   DeleteTopics, ConsumerGroupDescribe) and from the proxy's own metadata refresh.
//!   An id the proxy cannot map is left as it is: the broker answers it with
//!   UNKNOWN_TOPIC_ID, as it would any unknown id, never with another topic's data.
//! - **Leader epochs**: the client sees `epoch + generation * 2^20` (generation: the
//!   switches so far), so they only rise across switches. Epochs the client sends back
//!   are lowered again; one from an earlier generation (another cluster's) becomes -1
//!   (unknown), which brokers accept without fencing.
//!
//! Everything is patched in place (16-byte ids, 4-byte epochs, at positions the
//! layouts of [`crate::codec::bounds`] find): no message is decoded and re-encoded
//! for this, and a Fetch response's records are touched only in their batch headers
//! (the partition leader epoch is outside the batch CRC).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::codec::bounds::{self, Message, Prim, Spot};

/// How much the presented leader epochs rise per generation. Upstream epochs stay far
/// below it (a partition changes leader a million times in no real cluster); 2^31 / 2^20
/// leaves room for 2,047 switches in one process.
pub const EPOCH_STRIDE: i32 = 1 << 20;

/// The leader epochs of one generation, as clients see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epochs {
    offset: i32,
}

impl Epochs {
    pub fn of_generation(generation: u64) -> Self {
        let g = i32::try_from(generation.min(2047)).expect("bounded");
        Epochs {
            offset: g * EPOCH_STRIDE,
        }
    }

    /// Upstream → client. Sentinels (-1, unknown) stay as they are.
    pub fn up(self, e: i32) -> i32 {
        if e < 0 {
            e
        } else {
            e.saturating_add(self.offset)
        }
    }

    /// Whether epochs change at all (not in generation 0).
    pub fn raises(self) -> bool {
        self.offset != 0
    }

    /// Client → upstream. An epoch from an earlier generation (the other cluster's, or
    /// this one's before a switch) means nothing here: unknown (-1).
    pub fn down(self, e: i32) -> i32 {
        if e < 0 {
            e
        } else if e < self.offset {
            -1
        } else {
            e - self.offset
        }
    }
}

/// The id clients see for incarnation `incarnation` of topic `name`.
pub fn presented_id(name: &str, incarnation: u32) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"kafka-sidecar topic id\0");
    h.update(name.as_bytes());
    h.update(incarnation.to_be_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    // A v8 (custom) UUID: never the zero id nor any id a broker generates (v4).
    uuid::Builder::from_custom_bytes(b).into_uuid()
}

#[derive(Default)]
struct Upstream {
    by_name: HashMap<Arc<str>, Uuid>,
    by_id: HashMap<Uuid, Arc<str>>,
}

#[derive(Default)]
struct Tables {
    /// name -> (incarnation, presented id)
    presented: HashMap<Arc<str>, (u32, Uuid)>,
    /// presented id -> name
    names: HashMap<Uuid, Arc<str>>,
    clusters: HashMap<Arc<str>, Upstream>,
}

/// The mapping between the ids clients see and each cluster's own (one per proxy).
#[derive(Default)]
pub struct TopicIds {
    t: RwLock<Tables>,
}

impl TopicIds {
    /// `cluster` says topic `name` has id `upstream`: returns the id clients see.
    pub fn learn(&self, cluster: &str, name: &str, upstream: Uuid) -> Uuid {
        if let Some(p) = self.known(cluster, name, upstream) {
            return p;
        }
        let mut t = self.t.write();
        let name: Arc<str> = Arc::from(name);
        let c = t.clusters.entry(Arc::from(cluster)).or_default();
        let earlier = c.by_name.insert(name.clone(), upstream);
        c.by_id.insert(upstream, name.clone());
        // The same cluster naming another id for the name: deleted and re-created.
        let recreated = earlier.is_some_and(|old| old != upstream);
        if let Some(old) = earlier.filter(|_| recreated) {
            c.by_id.remove(&old);
        }
        let (incarnation, id) = match t.presented.get(&name) {
            Some(&(i, id)) if !recreated => (i, id),
            Some(&(i, _)) => (i + 1, presented_id(&name, i + 1)),
            None => (0, presented_id(&name, 0)),
        };
        if recreated {
            tracing::info!(%cluster, topic = %name, %upstream, "topic re-created on the cluster: clients see a new topic id");
        }
        t.presented.insert(name.clone(), (incarnation, id));
        t.names.insert(id, name);
        id
    }

    fn known(&self, cluster: &str, name: &str, upstream: Uuid) -> Option<Uuid> {
        let t = self.t.read();
        let c = t.clusters.get(cluster)?;
        (c.by_name.get(name) == Some(&upstream)).then(|| t.presented.get(name).map(|p| p.1))?
    }

    /// The cluster's id for the topic a client named by `presented`.
    pub fn upstream_of(&self, cluster: &str, presented: Uuid) -> Option<Uuid> {
        let t = self.t.read();
        let name = t.names.get(&presented)?;
        t.clusters.get(cluster)?.by_name.get(name).copied()
    }

    /// The topic a client names by `presented`.
    pub fn name_of(&self, presented: Uuid) -> Option<Arc<str>> {
        self.t.read().names.get(&presented).cloned()
    }

    /// The id clients see for the cluster's id `upstream`.
    pub fn presented_of(&self, cluster: &str, upstream: Uuid) -> Option<Uuid> {
        let t = self.t.read();
        let name = t.clusters.get(cluster)?.by_id.get(&upstream)?;
        t.presented.get(name).map(|p| p.1)
    }
}

/// Which way a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Client → upstream.
    Down,
    /// Upstream → client.
    Up,
}

/// One message's translation: its layout, and the (struct, field) pairs that hold
/// leader epochs. Topic ids are every UUID field named `topic_id`.
struct Rule {
    layout: &'static Message,
    epochs: &'static [(&'static str, &'static str)],
    /// A Fetch response: the records' batch headers carry leader epochs too.
    records: bool,
    /// Each topic struct names the topic before its id: the answer teaches the id.
    learn: bool,
}

/// What is translated in `api`'s messages going `way`, if anything. Epoch fields are
/// named with the struct (array) that holds them: `leader_epoch` means a partition's
/// leader epoch in some messages and something else in others.
fn rule(api: ApiKey, way: Way) -> Option<Rule> {
    use kafka_protocol::messages as m;
    use ApiKey as K;
    use Way::{Down, Up};
    fn l<T: bounds::Bounded>() -> &'static Message {
        T::LAYOUT
    }
    const NONE: &[(&str, &str)] = &[];
    let (layout, epochs): (&'static Message, &'static [(&'static str, &'static str)]) =
        match (api, way) {
            (K::Metadata, Down) => (l::<m::MetadataRequest>(), NONE),
            (K::Metadata, Up) => (
                l::<m::MetadataResponse>(),
                &[("partitions", "leader_epoch")],
            ),
            (K::Produce, Down) => (l::<m::ProduceRequest>(), NONE),
            (K::Produce, Up) => (
                l::<m::ProduceResponse>(),
                &[("current_leader", "leader_epoch")],
            ),
            (K::Fetch, Down) => (
                l::<m::FetchRequest>(),
                &[
                    ("partitions", "current_leader_epoch"),
                    ("partitions", "last_fetched_epoch"),
                ],
            ),
            (K::Fetch, Up) => {
                return Some(Rule {
                    layout: l::<m::FetchResponse>(),
                    epochs: &[
                        ("current_leader", "leader_epoch"),
                        ("diverging_epoch", "epoch"),
                    ],
                    records: true,
                    learn: false,
                })
            }
            (K::ListOffsets, Down) => (
                l::<m::ListOffsetsRequest>(),
                &[("partitions", "current_leader_epoch")],
            ),
            (K::ListOffsets, Up) => (
                l::<m::ListOffsetsResponse>(),
                &[("partitions", "leader_epoch")],
            ),
            (K::OffsetForLeaderEpoch, Down) => (
                l::<m::OffsetForLeaderEpochRequest>(),
                &[
                    ("partitions", "current_leader_epoch"),
                    ("partitions", "leader_epoch"),
                ],
            ),
            (K::OffsetForLeaderEpoch, Up) => (
                l::<m::OffsetForLeaderEpochResponse>(),
                &[("partitions", "leader_epoch")],
            ),
            (K::OffsetCommit, Down) => (
                l::<m::OffsetCommitRequest>(),
                &[("partitions", "committed_leader_epoch")],
            ),
            (K::OffsetFetch, Up) => (
                l::<m::OffsetFetchResponse>(),
                &[("partitions", "committed_leader_epoch")],
            ),
            (K::TxnOffsetCommit, Down) => (
                l::<m::TxnOffsetCommitRequest>(),
                &[("partitions", "committed_leader_epoch")],
            ),
            (K::ConsumerGroupHeartbeat, Down) => (l::<m::ConsumerGroupHeartbeatRequest>(), NONE),
            (K::ConsumerGroupHeartbeat, Up) => (l::<m::ConsumerGroupHeartbeatResponse>(), NONE),
            (K::ConsumerGroupDescribe, Up) => (l::<m::ConsumerGroupDescribeResponse>(), NONE),
            (K::DescribeTopicPartitions, Up) => (
                l::<m::DescribeTopicPartitionsResponse>(),
                &[("partitions", "leader_epoch")],
            ),
            (K::CreateTopics, Up) => (l::<m::CreateTopicsResponse>(), NONE),
            (K::DeleteTopics, Down) => (l::<m::DeleteTopicsRequest>(), NONE),
            (K::DeleteTopics, Up) => (l::<m::DeleteTopicsResponse>(), NONE),
            _ => return None,
        };
    // Answers whose topic structs hold the name before the id.
    let learn = way == Up
        && matches!(
            api,
            K::Metadata | K::DescribeTopicPartitions | K::CreateTopics | K::DeleteTopics
        );
    Some(Rule {
        layout,
        epochs,
        records: false,
        learn,
    })
}

/// The layouts a translated API's messages are walked with (request, answer), for
/// the table's version ranges.
pub fn layouts(api: ApiKey) -> (Option<&'static Message>, Option<&'static Message>) {
    (
        rule(api, Way::Down).map(|r| r.layout),
        rule(api, Way::Up).map(|r| r.layout),
    )
}

/// Whether `api` carries topic ids or leader epochs the proxy translates (at some
/// version, in some direction).
pub fn translates(api: ApiKey) -> bool {
    rule(api, Way::Down).is_some() || rule(api, Way::Up).is_some()
}

/// What a message is translated with: the cluster behind the session and its epochs.
pub struct View<'a> {
    pub ids: &'a TopicIds,
    pub cluster: &'a str,
    pub epochs: Epochs,
}

/// Patch positions found by a walk: (byte offset in the body, what).
enum Patch {
    Id {
        owner: &'static str,
    },
    Epoch,
    Records {
        len: usize,
    },
    /// A topic name (for learning the id that follows it in the same struct).
    Name {
        len: usize,
        owner: &'static str,
    },
}

/// Translates one frame (length prefix included; the body starts at `body_at`) in
/// place. Returns the frame unchanged when there is nothing to translate.
pub fn translate(
    view: &View<'_>,
    api: ApiKey,
    version: i16,
    way: Way,
    frame: Bytes,
    body_at: usize,
) -> anyhow::Result<Bytes> {
    let Some(rule) = rule(api, way) else {
        return Ok(frame);
    };
    if !rule.layout.versions().contains(&version) || frame.len() < body_at {
        return Ok(frame);
    }
    let mut spots: Vec<(usize, Patch)> = Vec::new();
    let body = &frame[body_at..];
    bounds::visit(rule.layout, version, body, &mut |s: Spot| match s.prim {
        Prim::Uuid if s.field == "topic_id" => spots.push((s.at, Patch::Id { owner: s.owner })),
        Prim::I32 if rule.epochs.contains(&(s.owner, s.field)) => spots.push((s.at, Patch::Epoch)),
        Prim::Bytes if rule.records && s.field == "records" => {
            spots.push((s.at, Patch::Records { len: s.len }))
        }
        Prim::Str if rule.learn && s.field == "name" => spots.push((
            s.at,
            Patch::Name {
                len: s.len,
                owner: s.owner,
            },
        )),
        _ => {}
    })?;
    let needs_epochs = view.epochs.raises();
    if !spots.iter().any(|(_, p)| match p {
        Patch::Id { .. } => true,
        Patch::Epoch | Patch::Records { .. } => needs_epochs,
        Patch::Name { .. } => false,
    }) {
        return Ok(frame);
    }
    let mut buf = frame
        .try_into_mut()
        .unwrap_or_else(|f| BytesMut::from(&f[..]));
    let body = &mut buf[body_at..];
    let mut last_name: Option<(usize, usize, &'static str)> = None;
    for (at, p) in spots {
        match p {
            Patch::Name { len, owner } => last_name = Some((at, len, owner)),
            Patch::Id { owner } => {
                let id = Uuid::from_bytes(body[at..at + 16].try_into().expect("16"));
                if id.is_nil() {
                    continue;
                }
                let mapped = match way {
                    Way::Down => {
                        patch_id_down(view, api, &mut body[at..at + 16]);
                        continue;
                    }
                    Way::Up => {
                        // An answer that names the topic teaches its id.
                        let name = last_name
                            .take()
                            .filter(|&(_, _, o)| o == owner)
                            .and_then(|(a, l, _)| std::str::from_utf8(&body[a..a + l]).ok())
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned);
                        match name {
                            Some(n) => Some(view.ids.learn(view.cluster, &n, id)),
                            None => view.ids.presented_of(view.cluster, id),
                        }
                    }
                };
                put_id(view, api, way, id, mapped, &mut body[at..at + 16]);
            }
            Patch::Epoch if needs_epochs => {
                let slot = &mut body[at..at + 4];
                let e = i32::from_be_bytes(slot.try_into().expect("4"));
                let t = match way {
                    Way::Down => view.epochs.down(e),
                    Way::Up => view.epochs.up(e),
                };
                slot.copy_from_slice(&t.to_be_bytes());
            }
            Patch::Records { len } if needs_epochs => {
                raise_batch_epochs(&mut body[at..at + len], view.epochs)
            }
            Patch::Epoch | Patch::Records { .. } => {}
        }
    }
    Ok(buf.freeze())
}

/// The client's topic ids in a request at known places (in `frame`), found by a walk
/// of its own (producer identity's of a Produce request): what [`translate`] does to a
/// Produce request, whose only translated fields are topic ids, without walking it again.
pub fn translate_ids_down(view: &View<'_>, api: ApiKey, frame: &mut [u8], at: &[usize]) {
    for &at in at {
        patch_id_down(view, api, &mut frame[at..at + 16]);
    }
}

/// A client's topic id (16 bytes) becomes the cluster's own; nil and unknown ids stay.
fn patch_id_down(view: &View<'_>, api: ApiKey, slot: &mut [u8]) {
    let id = Uuid::from_bytes(slot.try_into().expect("16"));
    if id.is_nil() {
        return;
    }
    let mapped = view.ids.upstream_of(view.cluster, id);
    put_id(view, api, Way::Down, id, mapped, slot);
}

fn put_id(view: &View<'_>, api: ApiKey, way: Way, id: Uuid, mapped: Option<Uuid>, slot: &mut [u8]) {
    match mapped {
        Some(m) => slot.copy_from_slice(m.as_bytes()),
        None => {
            tracing::debug!(cluster = view.cluster, %id, ?way, ?api, "topic id not mapped; left as it is");
            metrics::counter!(crate::admin::names::TOPIC_IDS_UNMAPPED_TOTAL, "cluster" => view.cluster.to_string()).increment(1);
        }
    }
}

/// A topic id in an upstream answer that does not name its topic (a Fetch answer),
/// patched in place (16 bytes) as [`translate`] patches it.
pub fn present_topic_id(view: &View<'_>, api: ApiKey, slot: &mut [u8]) {
    let id = Uuid::from_bytes(slot.try_into().expect("16 bytes"));
    if id.is_nil() {
        return;
    }
    let mapped = view.ids.presented_of(view.cluster, id);
    put_id(view, api, Way::Up, id, mapped, slot);
}

/// A leader epoch in an upstream answer, patched in place (4 bytes) as [`translate`]
/// patches it.
pub fn raise_epoch(epochs: Epochs, slot: &mut [u8]) {
    let e = i32::from_be_bytes(slot.try_into().expect("4 bytes"));
    slot.copy_from_slice(&epochs.up(e).to_be_bytes());
}

/// Raises the partition leader epoch of every v2 record batch (bytes 12..16 of its
/// header; outside the CRC, which starts at the attributes). A trailing partial batch
/// (a broker may cut a fetch short) is left as it is.
fn raise_batch_epochs(records: &mut [u8], epochs: Epochs) {
    let mut at = 0usize;
    while records.len() >= at + 17 {
        let len = i32::from_be_bytes(records[at + 8..at + 12].try_into().expect("4"));
        let Ok(len) = usize::try_from(len) else {
            return;
        };
        let end = at + 12 + len;
        if end > records.len() {
            return;
        }
        if records[at + 16] >= 2 {
            raise_epoch(epochs, &mut records[at + 12..at + 16]);
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_ids_depend_on_the_name_and_incarnation_only() {
        assert_eq!(presented_id("orders", 0), presented_id("orders", 0));
        assert_ne!(presented_id("orders", 0), presented_id("orders", 1));
        assert_ne!(presented_id("orders", 0), presented_id("payments", 0));
        assert!(!presented_id("orders", 0).is_nil());
    }

    #[test]
    fn one_id_per_topic_on_every_cluster_and_a_new_one_for_a_recreated_topic() {
        let ids = TopicIds::default();
        let (un, uw) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let p = ids.learn("north", "orders", un);
        assert_eq!(
            ids.learn("west", "orders", uw),
            p,
            "same id on the other cluster"
        );
        assert_eq!(ids.upstream_of("north", p), Some(un));
        assert_eq!(ids.upstream_of("west", p), Some(uw));
        assert_eq!(ids.presented_of("west", uw), Some(p));
        assert_eq!(ids.upstream_of("south", p), None);
        // Restart: a fresh table presents the same id.
        assert_eq!(TopicIds::default().learn("west", "orders", uw), p);
        // Re-created on west: a new id for clients, the old upstream id forgotten.
        let uw2 = Uuid::from_u128(3);
        let p2 = ids.learn("west", "orders", uw2);
        assert_ne!(p2, p);
        assert_eq!(ids.presented_of("west", uw), None);
        assert_eq!(ids.upstream_of("west", p2), Some(uw2));
    }

    #[test]
    fn epochs_rise_across_generations_and_old_ones_come_back_unknown() {
        let g0 = Epochs::of_generation(0);
        let g1 = Epochs::of_generation(1);
        let g2 = Epochs::of_generation(2);
        assert_eq!(g0.up(7), 7);
        assert!(g1.up(0) > g0.up(1_000));
        assert!(g2.up(0) > g1.up(1_000));
        assert_eq!(g1.down(g1.up(5)), 5);
        assert_eq!(g1.down(g0.up(5)), -1, "an epoch of the other cluster");
        assert_eq!(g1.up(-1), -1);
        assert_eq!(g1.down(-1), -1);
    }

    #[test]
    fn batch_headers_get_raised_epochs_and_their_crc_still_holds() {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
            TimestampType,
        };
        let rec = |o: i64| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 3,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: o,
            sequence: -1,
            timestamp: 0,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Default::default(),
        };
        let mut buf = BytesMut::new();
        for o in 0..2 {
            RecordBatchEncoder::encode(
                &mut buf,
                &[rec(o)],
                &RecordEncodeOptions {
                    version: 2,
                    compression: Compression::None,
                },
            )
            .unwrap();
        }
        // A partial trailing batch, as a broker may send.
        let whole = buf.len();
        buf.extend_from_slice(&buf.clone()[..20]);
        raise_batch_epochs(&mut buf[..], Epochs::of_generation(1));
        let mut b = buf.split_to(whole).freeze();
        let set = RecordBatchDecoder::decode_all(&mut b).unwrap();
        assert_eq!(set.len(), 2);
        for s in set {
            for r in s.records {
                assert_eq!(r.partition_leader_epoch, 3 + EPOCH_STRIDE);
            }
        }
    }

    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::metadata_response::{
        MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{FetchRequest, MetadataResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    fn body<T: Encodable>(m: &T, v: i16) -> Bytes {
        let mut b = BytesMut::new();
        m.encode(&mut b, v).unwrap();
        b.freeze()
    }

    fn metadata(upstream: Uuid, epoch: i32) -> MetadataResponse {
        let mut t = MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("orders"))))
            .with_topic_id(upstream);
        t.partitions
            .push(MetadataResponsePartition::default().with_leader_epoch(epoch));
        MetadataResponse::default().with_topics(vec![t])
    }

    #[test]
    fn answers_teach_and_present_ids_and_requests_go_back_with_the_clusters_own() {
        let ids = TopicIds::default();
        let (un, uw) = (Uuid::from_u128(11), Uuid::from_u128(22));
        let north = View {
            ids: &ids,
            cluster: "north",
            epochs: Epochs::of_generation(0),
        };
        let out = translate(
            &north,
            ApiKey::Metadata,
            12,
            Way::Up,
            body(&metadata(un, 4), 12),
            0,
        )
        .unwrap();
        let got = MetadataResponse::decode(&mut out.clone(), 12).unwrap();
        let presented = got.topics[0].topic_id;
        assert_eq!(presented, presented_id("orders", 0));
        assert_eq!(
            got.topics[0].partitions[0].leader_epoch, 4,
            "generation 0: as it is"
        );

        // After a switch: west's own id and epoch, seen as the same id and a higher epoch.
        let west = View {
            ids: &ids,
            cluster: "west",
            epochs: Epochs::of_generation(1),
        };
        let out = translate(
            &west,
            ApiKey::Metadata,
            12,
            Way::Up,
            body(&metadata(uw, 1), 12),
            0,
        )
        .unwrap();
        let got = MetadataResponse::decode(&mut out.clone(), 12).unwrap();
        assert_eq!(got.topics[0].topic_id, presented);
        assert_eq!(got.topics[0].partitions[0].leader_epoch, 1 + EPOCH_STRIDE);

        // The client fetches by the presented id with the epoch it saw: west gets its own.
        let unknown = Uuid::from_u128(99);
        let fetch = FetchRequest::default().with_topics(vec![
            FetchTopic::default()
                .with_topic_id(presented)
                .with_partitions(vec![FetchPartition::default()
                    .with_current_leader_epoch(1 + EPOCH_STRIDE)
                    .with_last_fetched_epoch(4)]),
            FetchTopic::default().with_topic_id(unknown),
        ]);
        let out = translate(&west, ApiKey::Fetch, 17, Way::Down, body(&fetch, 17), 0).unwrap();
        let got = FetchRequest::decode(&mut out.clone(), 17).unwrap();
        assert_eq!(got.topics[0].topic_id, uw);
        let p = &got.topics[0].partitions[0];
        assert_eq!(p.current_leader_epoch, 1);
        assert_eq!(
            p.last_fetched_epoch, -1,
            "north's epoch means nothing on west"
        );
        assert_eq!(
            got.topics[1].topic_id, unknown,
            "unmapped: the broker says UNKNOWN_TOPIC_ID"
        );
    }

    /// Producer identity's walk finds a Produce request's topic ids; patching them
    /// there is what the walk of [`translate`] does.
    #[test]
    fn produce_ids_patched_at_known_places_as_translate_patches_them() {
        use crate::codec::bounds::Bounded as _;
        use kafka_protocol::messages::produce_request::TopicProduceData;
        use kafka_protocol::messages::ProduceRequest;
        let ids = TopicIds::default();
        let p = ids.learn("north", "orders", Uuid::from_u128(1));
        ids.learn("west", "orders", Uuid::from_u128(2));
        let view = View {
            ids: &ids,
            cluster: "west",
            epochs: Epochs::of_generation(1),
        };
        let req = ProduceRequest::default().with_topic_data(vec![
            TopicProduceData::default().with_topic_id(p),
            TopicProduceData::default().with_topic_id(Uuid::from_u128(99)),
            TopicProduceData::default().with_topic_id(Uuid::nil()),
        ]);
        let b = body(&req, 13);
        let mut at = vec![];
        crate::codec::bounds::visit(ProduceRequest::LAYOUT, 13, &b, &mut |s| {
            if s.field == "topic_id" {
                at.push(s.at)
            }
        })
        .unwrap();
        let walked = translate(&view, ApiKey::Produce, 13, Way::Down, b.clone(), 0).unwrap();
        let mut patched = BytesMut::from(&b[..]);
        translate_ids_down(&view, ApiKey::Produce, &mut patched, &at);
        let patched = patched.freeze();
        assert_eq!(patched, walked);
        let got = ProduceRequest::decode(&mut patched.clone(), 13).unwrap();
        assert_eq!(got.topic_data[0].topic_id, Uuid::from_u128(2));
        assert_eq!(got.topic_data[1].topic_id, Uuid::from_u128(99));
        let mut untouched = BytesMut::from(&b[..]);
        translate_ids_down(&view, ApiKey::Produce, &mut untouched, &[]);
        assert_eq!(untouched.freeze(), b);
    }

    #[test]
    fn a_frame_that_lies_is_refused_not_patched() {
        let ids = TopicIds::default();
        let view = View {
            ids: &ids,
            cluster: "north",
            epochs: Epochs::of_generation(1),
        };
        let mut b = BytesMut::from(&body(&metadata(Uuid::from_u128(1), 0), 12)[..]);
        let n = b.len();
        b[n - 3..].copy_from_slice(&[0xff, 0xff, 0x7f]);
        assert!(translate(&view, ApiKey::Metadata, 12, Way::Up, b.freeze(), 0).is_err());
    }
}
