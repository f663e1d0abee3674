//! A Fetch answer relayed as it arrives ([`codec::fetch_walk`] with
//! [`SessionFeatures::fetch_answer`]) against the same answer held whole
//! ([`SessionFeatures::on_answer`], then [`rewrite::rewrite_response`]).
//!
//! Random answers at every version the walk knows (0-3 topics of 0-3 partitions,
//! several record batches, a batch cut short, aborted transactions, diverging epochs,
//! leader hints, snapshot ids, unknown tags, node endpoints with shorter and longer
//! listener names, mapped, unmapped and nil topic ids, generations 0 and 1), split at
//! random chunk boundaries: the streamed bytes are the stored-and-forwarded bytes. The
//! one allowed difference: node endpoints whose rewrite is longer than the broker's
//! (store and forward re-encodes at a new length; streaming cannot, and leaves them
//! out at the same length). Then hostile bytes: never a panic, never a frame of
//! another length.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
    PartitionData, SnapshotId,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchResponse, ProducerId, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::codec::fetch_walk::{FetchWalk, VERSIONS};
use crate::feature::SessionContext;

/// Maps node n to (`host`, 19100 + n).
struct Dir {
    host: &'static str,
}

impl NodeDirectory for Dir {
    fn local_endpoint(&self, node_id: i32, _: &str, _: i32) -> (StrBytes, i32) {
        (StrBytes::from_static_str(self.host), 19100 + node_id)
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

const NAMES: [&str; 3] = ["orders", "payments", "audit"];

fn upstream_id(i: usize) -> Uuid {
    Uuid::from_u128(0x1000 + i as u128)
}

fn features(generation: u64) -> SessionFeatures {
    let f = Features::default();
    // Two of the three topics are known on "north"; the third id stays unmapped.
    f.topic_ids.learn("north", NAMES[0], upstream_id(0));
    f.topic_ids.learn("north", NAMES[1], upstream_id(1));
    let cx = SessionContext {
        peer: "127.0.0.1:1".parse::<SocketAddr>().unwrap(),
        cluster: Arc::from("north"),
        cluster_label: "north".into(),
        generation,
        proxy_holds_credentials: false,
    };
    SessionFeatures::new(cx, Arc::new(f))
}

fn records(r: &mut Rng) -> Option<Bytes> {
    if r.chance(6) {
        return None;
    }
    let mut buf = BytesMut::new();
    for b in 0..r.below(4) {
        let n = 1 + r.below(3);
        let recs: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: r.below(50) as i32,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: (b * 10 + i) as i64,
                sequence: -1,
                timestamp: 0,
                key: None,
                value: Some(Bytes::from(vec![b as u8; r.below(300) as usize])),
                headers: Default::default(),
            })
            .collect();
        RecordBatchEncoder::encode(
            &mut buf,
            &recs,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
    }
    if !buf.is_empty() && r.chance(3) {
        // A broker may cut the last batch short.
        let cut = r.below(buf.len() as u64) as usize;
        buf.truncate(buf.len() - cut.max(1));
    }
    if r.chance(10) {
        // Not batches at all.
        buf.extend((0..r.below(40)).map(|i| i as u8));
    }
    Some(buf.freeze())
}

fn tags(r: &mut Rng) -> std::collections::BTreeMap<i32, Bytes> {
    let mut t = std::collections::BTreeMap::new();
    if r.chance(4) {
        t.insert(
            50 + r.below(100) as i32,
            Bytes::from(vec![7; r.below(5) as usize]),
        );
    }
    t
}

fn answer(r: &mut Rng, v: i16) -> FetchResponse {
    let flexible = v >= 12;
    let mut m = FetchResponse::default()
        .with_throttle_time_ms(r.below(10) as i32)
        .with_session_id(if v >= 7 { r.below(1000) as i32 } else { 0 });
    for _ in 0..r.below(4) {
        let ti = r.below(4) as usize;
        let mut t = FetchableTopicResponse::default();
        if v >= 13 {
            t.topic_id = if ti == 3 {
                Uuid::nil()
            } else {
                upstream_id(ti)
            };
        } else {
            t.topic = TopicName(StrBytes::from_static_str(NAMES[ti % 3]));
        }
        for p in 0..r.below(4) {
            let mut pd = PartitionData::default()
                .with_partition_index(p as i32)
                .with_error_code(if r.chance(4) { 6 } else { 0 })
                .with_high_watermark(r.below(1 << 40) as i64)
                .with_last_stable_offset(r.below(1 << 40) as i64)
                .with_log_start_offset(if v >= 5 { r.below(100) as i64 } else { -1 })
                .with_preferred_read_replica(BrokerId(if v >= 11 {
                    r.below(3) as i32 - 1
                } else {
                    -1
                }))
                .with_records(records(r));
            pd.aborted_transactions = match r.below(3) {
                0 => None,
                1 => Some(vec![]),
                _ => Some(
                    (0..1 + r.below(3))
                        .map(|i| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(i as i64))
                                .with_first_offset(r.below(100) as i64)
                        })
                        .collect(),
                ),
            };
            if flexible {
                if r.chance(3) {
                    pd.diverging_epoch = EpochEndOffset::default()
                        .with_epoch(r.below(20) as i32)
                        .with_end_offset(r.below(1000) as i64);
                }
                if r.chance(3) {
                    pd.current_leader = LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(r.below(4) as i32))
                        .with_leader_epoch(r.below(20) as i32);
                }
                if r.chance(5) {
                    pd.snapshot_id = SnapshotId::default()
                        .with_end_offset(r.below(1000) as i64)
                        .with_epoch(r.below(20) as i32);
                }
                pd.unknown_tagged_fields = tags(r);
            }
            t.partitions.push(pd);
        }
        if flexible {
            t.unknown_tagged_fields = tags(r);
        }
        m.responses.push(t);
    }
    if flexible {
        m.unknown_tagged_fields = tags(r);
    }
    if v >= 16 && r.chance(2) {
        for n in 0..r.below(3) {
            let host = match r.below(3) {
                0 => "b1",
                1 => "broker-1.north.example.com",
                _ => "kafka-0.kafka-headless.data.svc.cluster.local",
            };
            let mut e = NodeEndpoint::default()
                .with_node_id(BrokerId(n as i32))
                .with_host(StrBytes::from_static_str(host))
                .with_port(9092)
                .with_rack(r.chance(2).then(|| StrBytes::from_static_str("rack-a")));
            e.unknown_tagged_fields = tags(r);
            m.node_endpoints.push(e);
        }
    }
    m
}

fn frame(r: &mut Rng, v: i16, m: &FetchResponse) -> Bytes {
    let hv = ApiKey::Fetch.response_header_version(v);
    let mut header = ResponseHeader::default().with_correlation_id(r.below(1000) as i32);
    if hv >= 1 {
        header.unknown_tagged_fields = tags(r);
    }
    let mut body = BytesMut::new();
    header.encode(&mut body, hv).unwrap();
    m.encode(&mut body, v).unwrap();
    codec::frame_with_length(body)
}

/// Store and forward: the session's path for a frame held whole.
fn stored(f: &SessionFeatures, v: i16, frame: Bytes, dir: &Dir) -> anyhow::Result<Bytes> {
    let frame = f.on_answer(ApiKey::Fetch as i16, v, None, frame)?;
    Ok(rewrite::rewrite_response(
        ApiKey::Fetch as i16,
        v,
        frame,
        dir,
    )?)
}

/// Streaming, as the session does it: `frame` arrives in chunks cut by `r`; the walk
/// sees what has arrived from its first byte not done, and what it has done is sent.
fn streamed(
    f: &SessionFeatures,
    v: i16,
    frame: &[u8],
    dir: &Dir,
    r: &mut Rng,
) -> Result<Vec<u8>, codec::fetch_walk::FetchWalkError> {
    streamed_observing(f, v, frame, dir, r, false).map(|(out, _)| out)
}

/// [`streamed`], for a client that commits offsets when `observe`: the batch headers
/// the walk reported come back too.
fn streamed_observing(
    f: &SessionFeatures,
    v: i16,
    frame: &[u8],
    dir: &Dir,
    r: &mut Rng,
    observe: bool,
) -> Result<(Vec<u8>, Option<crate::consumer_positions::Seen>), codec::fetch_walk::FetchWalkError> {
    let mut patches = f.fetch_answer(v, dir, observe);
    let mut walk = FetchWalk::new(v, frame.len() - 4, patches.epochs())
        .unwrap()
        .observing(patches.observing());
    let mut buf = BytesMut::new();
    let mut sent = Vec::with_capacity(frame.len());
    let mut fed = 0;
    let mut prefix = 4;
    while !walk.is_done() {
        assert!(fed < frame.len(), "the walk wants bytes past the frame");
        let n = match r.below(4) {
            0 => 1,
            1 => 1 + r.below(20) as usize,
            2 => 1 + r.below(600) as usize,
            _ => frame.len(),
        };
        let end = (fed + n).min(frame.len());
        buf.extend_from_slice(&frame[fed..end]);
        fed = end;
        if buf.len() < prefix {
            continue;
        }
        let avail = (buf.len() - prefix).min(walk.left() as usize);
        let done = walk.advance(&mut buf[prefix..prefix + avail], &mut patches)?;
        if done > 0 {
            sent.extend_from_slice(&buf.split_to(prefix + done));
            prefix = 0;
        }
        // What the session splices: part of a blind run, straight from the socket to
        // the client (unchanged, never seen by the walk), once nothing is buffered.
        let blind = walk.blind_run();
        if buf.is_empty() && prefix == 0 && blind > 0 && r.below(2) == 0 {
            let k = 1 + r.below(blind) as usize;
            sent.extend_from_slice(&frame[fed..fed + k]);
            fed += k;
            walk.skip(k as u64);
            SPLICED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // As the session's loop: the walk is offered what is buffered (nothing),
            // which ends a frame whose last bytes were skipped.
            assert_eq!(walk.advance(&mut [], &mut patches)?, 0);
        }
    }
    assert_eq!(fed, frame.len());
    assert!(buf.is_empty(), "bytes left behind");
    Ok((sent, patches.seen))
}

fn decode(v: i16, frame: &[u8]) -> (ResponseHeader, FetchResponse) {
    let mut b = Bytes::copy_from_slice(&frame[4..]);
    let h = ResponseHeader::decode(&mut b, ApiKey::Fetch.response_header_version(v)).unwrap();
    let m = FetchResponse::decode(&mut b, v).unwrap();
    assert!(b.is_empty());
    (h, m)
}

/// What one case exercised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Seen {
    Untouched,
    Patched,
    EndpointsPadded,
    EndpointsLeftOut,
}

/// Blind runs relayed without the walk seeing them (as the session splices them).
static SPLICED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Cases whose observed answer held batch headers (the comparison is not vacuous).
static OBSERVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn check_one(v: i16, seed: u64, chunks: u64, generation: u64, host: &'static str) -> Seen {
    let mut r = Rng(seed | 1);
    let m = answer(&mut r, v);
    let upstream = frame(&mut r, v, &m);
    let f = features(generation);
    let dir = Dir { host };
    let want = stored(&f, v, upstream.clone(), &dir).unwrap();
    // Half the cases as a committing client's (batch headers observed for consumer
    // positions: larger atoms, same bytes).
    let observe = chunks % 2 == 0;
    let (got, seen) =
        streamed_observing(&f, v, &upstream, &dir, &mut Rng(chunks | 1), observe).unwrap();
    if let Some(seen) = seen {
        let whole = crate::consumer_positions::seen_in(&f.features.topic_ids, v, &want)
            .expect("the stored answer walks");
        assert_eq!(
            seen.batches(),
            whole.batches(),
            "streamed and stored answers show the same batch headers"
        );
        if !whole.batches().is_empty() {
            OBSERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    assert_eq!(
        got.len(),
        upstream.len(),
        "the streamed frame changed length"
    );
    assert_eq!(
        &got[..4],
        &upstream[..4],
        "the length prefix went out as it came"
    );
    let seen = if want.len() != upstream.len() {
        Seen::EndpointsLeftOut
    } else if !m.node_endpoints.is_empty() {
        Seen::EndpointsPadded
    } else if want != upstream {
        Seen::Patched
    } else {
        Seen::Untouched
    };
    if want.len() == upstream.len() {
        assert_eq!(&got[..], &want[..], "v{v} seed {seed} chunks {chunks}");
    } else {
        // The rewrite was longer: held whole, the answer was re-encoded; streamed, its
        // endpoints were left out. Everything else is the same.
        let (hw, mut mw) = decode(v, &want);
        let (hg, mut mg) = decode(v, &got);
        assert_eq!(hw, hg);
        assert!(!mw.node_endpoints.is_empty());
        assert!(mg.node_endpoints.is_empty(), "endpoints left out");
        mw.node_endpoints.clear();
        mw.unknown_tagged_fields.retain(|t, _| *t < 126);
        mg.unknown_tagged_fields.retain(|t, _| *t < 126);
        assert_eq!(mw, mg, "v{v} seed {seed}");
    }
    // Whatever was padded decodes, and to what the client should see.
    let (_, mg) = decode(v, &got);
    for e in &mg.node_endpoints {
        assert_eq!(e.host.as_str(), host);
        assert_eq!(e.port, 19100 + e.node_id.0);
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn streamed_answers_are_the_stored_ones(
        v in VERSIONS,
        seed in any::<u64>(),
        chunks in any::<u64>(),
        generation in 0u64..2,
        long in any::<bool>(),
    ) {
        let host = if long { "kafka-sidecar.local.svc.cluster.local.example" } else { "127.0.0.1" };
        check_one(v, seed, chunks, generation, host);
    }

    /// Hostile upstream bytes: one byte changed, or the length prefix cut, or garbage.
    /// The walk refuses or passes them, never panics, never asks for bytes past the
    /// frame, and what it passes keeps the frame's length.
    #[test]
    fn hostile_answers_never_panic(
        v in VERSIONS,
        seed in any::<u64>(),
        chunks in any::<u64>(),
        flip in any::<usize>(),
        to in any::<u8>(),
        cut in any::<usize>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..64),
        how in 0u8..3,
    ) {
        let mut r = Rng(seed | 1);
        let m = answer(&mut r, v);
        let upstream = frame(&mut r, v, &m);
        let mut bad = upstream.to_vec();
        match how {
            0 => {
                let at = 4 + flip % (bad.len() - 4);
                bad[at] = to;
            }
            1 => {
                // The frame says it is shorter than the message: the walk sees the
                // message end early.
                let keep = 4 + cut % (bad.len() - 4);
                bad.truncate(keep);
                let len = (keep - 4) as i32;
                bad[..4].copy_from_slice(&len.to_be_bytes());
            }
            _ => {
                bad.truncate(4 + 10.min(bad.len() - 4));
                bad.extend_from_slice(&garbage);
                let len = (bad.len() - 4) as i32;
                bad[..4].copy_from_slice(&len.to_be_bytes());
            }
        }
        let f = features(1);
        let dir = Dir { host: "127.0.0.1" };
        if let Ok(got) = streamed(&f, v, &bad, &dir, &mut Rng(chunks | 1)) {
            prop_assert_eq!(got.len(), bad.len());
        }
    }
}

/// A frame whose length prefix ends it inside the message, at any byte: refused
/// once the walk has the whole (short) frame, whatever the chunks.
#[test]
fn every_message_cut_short_is_refused() {
    for v in [4, 11, 12, 16, 17] {
        let mut r = Rng(42 + v as u64);
        let mut m = answer(&mut r, v);
        while m.responses.is_empty() {
            m = answer(&mut r, v);
        }
        let upstream = frame(&mut r, v, &m);
        let f = features(1);
        let dir = Dir { host: "127.0.0.1" };
        for keep in 4..upstream.len() - 1 {
            let mut bad = upstream[..keep].to_vec();
            bad[..4].copy_from_slice(&((keep - 4) as i32).to_be_bytes());
            let err = streamed(&f, v, &bad, &dir, &mut Rng(keep as u64 | 1)).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("malformed FetchResponse v{v}")),
                "{err}"
            );
        }
    }
}

#[test]
fn every_version_and_shape_is_covered_at_least_once() {
    use std::collections::HashSet;
    let long = "a-much-longer-sidecar-host-name.example";
    for v in VERSIONS {
        let mut seen = HashSet::new();
        for seed in 0..200 {
            seen.insert(check_one(v, seed * 7919 + 1, seed, seed % 2, "127.0.0.1"));
            seen.insert(check_one(v, seed * 104_729 + 3, seed + 1, seed % 2, long));
        }
        let mut want = vec![Seen::Untouched, Seen::Patched];
        if v >= 16 {
            want.extend([Seen::EndpointsPadded, Seen::EndpointsLeftOut]);
        }
        for w in want {
            assert!(seen.contains(&w), "v{v}: no case was {w:?}");
        }
    }
    assert!(
        OBSERVED.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "some observed answers held batch headers"
    );
    assert!(
        SPLICED.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "some blind runs were relayed unseen, as the session splices them"
    );
}
