use super::*;
use std::collections::BTreeMap;

fn batch(base: i64, records: i32, first_ts: i64, log_append: bool) -> Vec<u8> {
    // a v2 batch header (61 bytes) with no records body: what the proxy reads of it
    let mut b = vec![0u8; 61];
    b[0..8].copy_from_slice(&base.to_be_bytes());
    b[8..12].copy_from_slice(&49i32.to_be_bytes());
    b[16] = 2;
    let attributes: i16 = if log_append { 0x08 } else { 0 };
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[23..27].copy_from_slice(&(records - 1).to_be_bytes());
    b[27..35].copy_from_slice(&first_ts.to_be_bytes());
    b[35..43].copy_from_slice(&(first_ts + 1000).to_be_bytes());
    b
}

#[test]
fn batch_headers_are_read_whole_and_a_cut_batch_is_left_out() {
    let mut records = batch(10, 5, 100, false);
    records.extend(batch(15, 3, 200, true));
    records.extend(&batch(18, 2, 300, false)[..30]);
    let seen: Vec<(i64, i64)> = batch_starts(&records)
        .filter_map(|at| batch_header(&records[at..]))
        .map(|(o, b)| (o, b.timestamp))
        .collect();
    assert_eq!(
        seen,
        vec![(10, 100), (15, 1200)],
        "LogAppendTime batches anchor on their max timestamp"
    );
    assert_eq!(
        batch_starts(&[0xff; 70]).count(),
        0,
        "garbage: nothing, no panic"
    );
}

#[test]
fn a_commit_anchors_on_the_batch_before_it_whichever_group_commits_first() {
    let mut ring = Ring::default();
    for (base, ts) in [(9, 30), (0, 10), (5, 20), (14, 40), (5, 20)] {
        ring.insert(base, Batch { timestamp: ts });
    }
    assert_eq!(ring.order.len(), 4, "a batch fetched twice is kept once");
    // a fast group commits first; a slow one still finds its older batch
    assert_eq!(
        ring.anchor_of(15),
        Some(Anchor {
            offset: 14,
            timestamp: 40
        })
    );
    assert_eq!(
        ring.anchor_of(9),
        Some(Anchor {
            offset: 5,
            timestamp: 20
        })
    );
    assert_eq!(ring.anchor_of(0), None);
    // bounded: the least recently fetched go first
    for base in 100..100 + RING as i64 {
        ring.insert(base, Batch { timestamp: base });
    }
    assert_eq!(ring.order.len(), RING);
    assert_eq!(
        ring.anchor_of(50),
        None,
        "older batches forgotten, never a later anchor"
    );
}

#[test]
fn group_of_reads_the_first_field_and_offset_fetch_v8_lists() {
    // JoinGroup v5 (not flexible): INT16 length
    let mut b = vec![0, 3];
    b.extend(b"g-1");
    b.extend([0; 8]);
    assert_eq!(
        group_of(ApiKey::JoinGroup as i16, 5, false, &b),
        Some("g-1")
    );
    // ConsumerGroupHeartbeat (flexible): uvarint length + 1
    let mut b = vec![4];
    b.extend(b"abc");
    assert_eq!(
        group_of(ApiKey::ConsumerGroupHeartbeat as i16, 0, true, &b),
        Some("abc")
    );
    // OffsetFetch v8: a compact array of groups
    let mut b = vec![2, 3];
    b.extend(b"gg");
    assert_eq!(
        group_of(ApiKey::OffsetFetch as i16, 8, true, &b),
        Some("gg")
    );
    for hostile in [&[][..], &[0x80; 12][..], &[9, 1][..], &[0xff, 0xff][..]] {
        let _ = group_of(ApiKey::OffsetFetch as i16, 8, true, hostile);
        let _ = group_of(ApiKey::JoinGroup as i16, 5, false, hostile);
    }
}

#[tokio::test(start_paused = true)]
async fn hold_waits_only_for_groups_being_carried_and_at_most_the_timeout() {
    let p = Arc::new(ConsumerPositions::default());
    let pend = |p: &ConsumerPositions| {
        let (tx, rx) = watch::channel(false);
        *p.pending.lock() = Some(Pending {
            generation: 2,
            groups: [Arc::from("g")].into_iter().collect(),
            done: rx,
        });
        p.holding.store(true, Ordering::Relaxed);
        tx
    };
    let tx = pend(&p);
    let t0 = tokio::time::Instant::now();
    p.hold(2, "other").await;
    p.hold(1, "g").await;
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "other groups and generations pass at once"
    );
    let waiting = tokio::spawn({
        let p = p.clone();
        async move { p.hold(2, "g").await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "the carried group waits");
    tx.send(true).unwrap();
    waiting.await.unwrap();
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(1),
        "released when the carry is done"
    );
    let _never = pend(&p);
    let t1 = tokio::time::Instant::now();
    p.hold(2, "g").await;
    assert_eq!(
        t1.elapsed(),
        p.settings.read().timeout,
        "never longer than carry_timeout"
    );
}

/// Positions that saw one batch fetched on north: `orders` partition 0, offsets 20-24,
/// first timestamp 700.
fn fetched_one_batch() -> (ConsumerPositions, Arc<str>, Arc<str>) {
    let p = ConsumerPositions::default();
    let north: Arc<str> = Arc::from("north");
    let topic: Arc<str> = Arc::from("orders");
    let mut seen = Seen::default();
    seen.topic(Some(topic.clone()));
    seen.partition(0);
    seen.batch(&batch(20, 5, 700, false));
    p.record(&north, seen);
    (p, north, topic)
}

#[test]
fn only_commits_the_broker_accepted_become_positions_with_their_anchors() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };
    use kafka_protocol::protocol::StrBytes;
    let (p, north, topic) = fetched_one_batch();
    let part = |i, o| {
        OffsetCommitRequestPartition::default()
            .with_partition_index(i)
            .with_committed_offset(o)
    };
    let req = OffsetCommitRequest::default()
        .with_group_id(StrBytes::from_static_str("g").into())
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(StrBytes::from_static_str("orders").into())
            .with_partitions(vec![part(0, 23), part(1, 9)])]);
    let frame = request_frame(ApiKey::OffsetCommit, 8, "app", &req);
    let ask = p.commit_request(&frame, 8).expect("recorded");
    assert!(
        p.watches(&frame),
        "the committing client's fetches are looked at"
    );
    let answered = |i, e| {
        OffsetCommitResponsePartition::default()
            .with_partition_index(i)
            .with_error_code(e)
    };
    let resp =
        OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
            .with_name(StrBytes::from_static_str("orders").into())
            .with_partitions(vec![answered(0, 0), answered(1, 25)])]);
    let answer =
        codec::response_frame(5, ApiKey::OffsetCommit.response_header_version(8), 8, &resp)
            .unwrap();
    p.commit_answered(&north, 0, ask, 8, &answer);
    let commits = p.commits.lock();
    let g = &commits[&(north.clone(), Arc::from("g"))];
    assert_eq!(g.len(), 1, "the refused partition is not a position");
    let c = g[&(topic, 0)];
    assert_eq!(
        (c.offset, c.anchor),
        (
            23,
            Some(Anchor {
                offset: 20,
                timestamp: 700
            })
        )
    );
}

/// A client request frame (length prefix, header with client id `client`).
fn request_frame<T: kafka_protocol::protocol::Encodable>(
    key: ApiKey,
    version: i16,
    client: &'static str,
    req: &T,
) -> Bytes {
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(5)
        .with_client_id(Some(StrBytes::from_static_str(client)))
        .encode(&mut body, key.request_header_version(version))
        .unwrap();
    req.encode(&mut body, version).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    frame.freeze()
}

/// The producer id of transactional id `txn` in these tests ("t1": 7, "t2": 8).
fn producer_of(txn: &str) -> i64 {
    if txn == "t1" {
        7
    } else {
        8
    }
}

/// Transactional id `txn` commits for group "g" on topic "orders", through `p`: `offsets`
/// are (partition, offset, the answer's error code for it).
fn txn_commit(
    p: &ConsumerPositions,
    cluster: &Arc<str>,
    (version, txn): (i16, &'static str),
    epoch: i16,
    offsets: &[(i32, i64, i16)],
) {
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::txn_offset_commit_response::{
        TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
    };
    use kafka_protocol::messages::{ProducerId, TxnOffsetCommitRequest};
    use kafka_protocol::protocol::StrBytes;
    let parts = offsets.iter().map(|(i, o, _)| {
        TxnOffsetCommitRequestPartition::default()
            .with_partition_index(*i)
            .with_committed_offset(*o)
    });
    let req = TxnOffsetCommitRequest::default()
        .with_transactional_id(StrBytes::from_static_str(txn).into())
        .with_group_id(StrBytes::from_static_str("g").into())
        .with_producer_id(ProducerId(producer_of(txn)))
        .with_producer_epoch(epoch)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(StrBytes::from_static_str("orders").into())
            .with_partitions(parts.collect())]);
    let frame = request_frame(ApiKey::TxnOffsetCommit, version, txn, &req);
    let ask = p.txn_commit_request(&frame, version).expect("recorded");
    let answered = offsets.iter().map(|(i, _, e)| {
        TxnOffsetCommitResponsePartition::default()
            .with_partition_index(*i)
            .with_error_code(*e)
    });
    let resp = TxnOffsetCommitResponse::default().with_topics(vec![
        TxnOffsetCommitResponseTopic::default()
            .with_name(StrBytes::from_static_str("orders").into())
            .with_partitions(answered.collect()),
    ]);
    let hv = ApiKey::TxnOffsetCommit.response_header_version(version);
    let answer = codec::response_frame(5, hv, version, &resp).unwrap();
    p.txn_commit_answered(cluster, 3, ask, version, &answer);
}

/// `txn` ends its transaction (`error`: the answer's error code). False: the proxy did not
/// hook the request (no open transaction of `txn`).
fn end_txn(
    p: &ConsumerPositions,
    cluster: &Arc<str>,
    (version, txn): (i16, &'static str),
    (epoch, committed, error): (i16, bool, i16),
    generation: u64,
) -> bool {
    use kafka_protocol::messages::end_txn_response::EndTxnResponse;
    use kafka_protocol::messages::{EndTxnRequest, ProducerId};
    use kafka_protocol::protocol::StrBytes;
    let req = EndTxnRequest::default()
        .with_transactional_id(StrBytes::from_static_str(txn).into())
        .with_producer_id(ProducerId(producer_of(txn)))
        .with_producer_epoch(epoch)
        .with_committed(committed);
    let frame = request_frame(ApiKey::EndTxn, version, txn, &req);
    let Some(ask) = p.end_txn_request(cluster, &frame, version) else {
        return false;
    };
    let resp = EndTxnResponse::default().with_error_code(error);
    let hv = ApiKey::EndTxn.response_header_version(version);
    let answer = codec::response_frame(5, hv, version, &resp).unwrap();
    p.end_txn_answered(cluster, generation, ask, version, &answer);
    true
}

/// Partition of "orders" -> (offset, anchor, generation).
type Positions = BTreeMap<i32, (i64, Option<Anchor>, u64)>;

/// Group "g"'s positions on `cluster`.
fn positions_of(p: &ConsumerPositions, cluster: &Arc<str>) -> Option<Positions> {
    p.commits
        .lock()
        .get(&(cluster.clone(), Arc::from("g")))
        .map(|g| {
            g.iter()
                .map(|(k, c)| (k.1, (c.offset, c.anchor, c.generation)))
                .collect()
        })
}

/// Exactly-once consumers commit through their producer, inside a transaction: the
/// offsets count once EndTxn committed that transaction (same producer id and epoch),
/// never after an abort, a refused commit, or an EndTxn of a stale epoch.
#[test]
fn offsets_committed_in_a_transaction_become_positions_when_it_commits() {
    for version in [2, 4] {
        // v4 is flexible (v3+), v2 not
        let (p, north, _) = fetched_one_batch();
        let fetch = request_frame(
            ApiKey::Fetch,
            12,
            "consumer-1",
            &kafka_protocol::messages::FetchRequest::default(),
        );
        assert!(
            !p.watches(&fetch),
            "nothing committed yet: no fetch looked at"
        );
        let commit = |epoch, offset| {
            txn_commit(
                &p,
                &north,
                (version, "t1"),
                epoch,
                &[(0, offset, 0), (1, 9, 25)],
            )
        };
        let end = |epoch, committed, error, generation| {
            end_txn(
                &p,
                &north,
                (version, "t1"),
                (epoch, committed, error),
                generation,
            )
        };

        commit(0, 23);
        assert!(
            p.watches(&fetch),
            "the consumer's fetches (another client id) are looked at"
        );
        assert_eq!(
            positions_of(&p, &north),
            None,
            "not a position before the transaction commits"
        );
        assert!(
            end(0, false, 0, 3),
            "an EndTxn of an open transaction is hooked"
        );
        assert_eq!(positions_of(&p, &north), None, "aborted: never a position");
        assert!(!end(0, true, 0, 3), "the aborted transaction is gone");

        commit(0, 21);
        commit(1, 23); // the producer's next epoch: a new transaction
        assert!(end(0, true, 0, 3), "hooked: t1 has an open transaction");
        assert_eq!(
            positions_of(&p, &north),
            None,
            "an EndTxn of a stale epoch commits nothing"
        );
        assert!(end(1, true, 51, 3), "hooked");
        assert_eq!(
            positions_of(&p, &north),
            None,
            "an EndTxn the broker refused commits nothing"
        );
        assert!(end(1, true, 0, 4));
        let anchor = Some(Anchor {
            offset: 20,
            timestamp: 700,
        });
        assert_eq!(
            positions_of(&p, &north),
            Some(BTreeMap::from([(0, (23, anchor, 4))])),
            "committed: the accepted partition is a position, anchored, of the generation it committed in"
        );
        assert!(!end(1, true, 0, 4), "ended: nothing open any more");
    }
}

/// A transaction step of the property test below.
#[derive(Debug, Clone)]
enum TxnStep {
    /// TxnOffsetCommit by a transactional id of (partition, offset, accepted) at this
    /// producer epoch.
    Commit(&'static str, i16, Vec<(i32, i64, bool)>),
    /// EndTxn by a transactional id: epoch, commit (else abort), the broker refused it.
    End(&'static str, i16, bool, bool),
}

fn txn_step() -> impl proptest::strategy::Strategy<Value = TxnStep> {
    use proptest::prelude::*;
    // two producers (as two stream threads) committing for the same group
    let txn = || prop_oneof![Just("t1"), Just("t2")];
    prop_oneof![
        (
            txn(),
            0i16..3,
            proptest::collection::vec((0i32..3, 0i64..1000, any::<bool>()), 1..4)
        )
            .prop_map(|(t, e, o)| TxnStep::Commit(t, e, o)),
        (txn(), 0i16..3, any::<bool>(), proptest::bool::weighted(0.2))
            .prop_map(|(t, e, c, refused)| TxnStep::End(t, e, c, refused)),
    ]
}

proptest::proptest! {
    /// Random schedules of TxnOffsetCommit and EndTxn of two transactional ids interleaved
    /// (epochs out of order, aborts, refused commits and EndTxns) against a model: a position is only ever what an accepted
    /// TxnOffsetCommit sent in the transaction (producer id and epoch) whose EndTxn committed,
    /// the latest such per partition. Seeds: proptest prints the failing case and keeps it in
    /// `proptest-regressions/`.
    #[test]
    fn transactional_positions_follow_a_model(steps in proptest::collection::vec(txn_step(), 1..40)) {
        let p = ConsumerPositions::default();
        let north: Arc<str> = Arc::from("north");
        // the model: each transactional id's open transaction (epoch, partition -> offset),
        // the group's positions
        let mut open: BTreeMap<&str, (i16, BTreeMap<i32, i64>)> = BTreeMap::new();
        let mut model: BTreeMap<i32, i64> = BTreeMap::new();
        for step in &steps {
            match step {
                TxnStep::Commit(txn, epoch, offsets) => {
                    let wire: Vec<(i32, i64, i16)> = offsets
                        .iter()
                        .map(|(i, o, ok)| (*i, *o, if *ok { 0 } else { 25 }))
                        .collect();
                    txn_commit(&p, &north, (4, txn), *epoch, &wire);
                    // a partition named twice: the broker's answer lists it twice too
                    let accepted: Vec<_> = offsets.iter().filter(|o| o.2).collect();
                    if !accepted.is_empty() {
                        if open.get(txn).is_none_or(|(e, _)| e != epoch) {
                            open.insert(txn, (*epoch, BTreeMap::new()));
                        }
                        let (_, m) = open.get_mut(txn).expect("set above");
                        for (i, o, _) in offsets {
                            // the proxy keeps a partition accepted anywhere in the answer
                            if offsets.iter().any(|x| x.0 == *i && x.2) {
                                m.insert(*i, *o);
                            }
                        }
                    }
                }
                TxnStep::End(txn, epoch, committed, refused) => {
                    let hooked = end_txn(&p, &north, (4, txn), (*epoch, *committed, if *refused { 51 } else { 0 }), 1);
                    proptest::prop_assert_eq!(hooked, open.contains_key(txn), "hooked exactly when a transaction of this id is open");
                    if !refused && open.get(txn).is_some_and(|(e, _)| e == epoch) {
                        let (_, m) = open.remove(txn).expect("checked");
                        if *committed {
                            model.extend(m);
                        }
                    }
                }
            }
            let got: BTreeMap<i32, i64> = positions_of(&p, &north)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            proptest::prop_assert_eq!(&got, &model, "after {:?}", step);
        }
    }
}
