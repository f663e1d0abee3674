//! Idempotent producers across a switch: the proxy owns the producer identity the
//! upstream sees.
//!
//! A producer id, its epoch and the per-partition sequence numbers belong to one
//! cluster. After a switch the client keeps its producer id (clients do not call
//! InitProducerId again on reconnect), so the new cluster answers
//! UNKNOWN_PRODUCER_ID or OUT_OF_ORDER_SEQUENCE_NUMBER and most clients treat that as
//! fatal. Instead of asking clients to cooperate, the proxy:
//!
//! 1. remembers which producer ids the *current* cluster issued (InitProducerId
//!    responses relayed during this generation): those pass through untouched;
//! 2. on the first Produce after a switch that carries any other producer id, obtains
//!    a fresh producer id from the new cluster (its own InitProducerId on the same
//!    connection), once per client producer id per generation;
//! 3. rewrites producer id, epoch and base sequence in every record batch header of
//!    that client (sequence offset per partition, so the new cluster sees a fresh
//!    producer starting at 0) and recomputes the batch CRC-32C. Records, compressed or
//!    not, are not touched. Responses need no change: they carry no producer id.
//!
//! A retry of the same batch maps to the same new sequence, so the new cluster still
//! de-duplicates it: idempotence keeps its meaning after the switch. The client's own
//! later InitProducerId calls with its producer id (epoch bumps, KIP-360) are mapped
//! too. Transactional batches are never rewritten: an open transaction cannot move
//! between clusters, so it fails on the new cluster and the application aborts and
//! retries it, as it would after any coordinator loss.
//!
//! Before the first switch (generation 0) none of this runs: every producer id is the
//! cluster's own, and the hot path does not even look at Produce requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest,
};
use kafka_protocol::protocol::Decodable;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use tokio::sync::OnceCell;

use crate::codec;
use crate::session::Session;

// Record batch v2 header layout (KIP-98).
const BATCH_LENGTH_OFFSET: usize = 8;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
const BATCH_HEADER_LEN: usize = 61;
const TRANSACTIONAL_FLAG: i16 = 0x10;

/// The new cluster's identity for one client producer id, in one generation.
pub struct Mapping {
    pub upstream_id: i64,
    upstream_epoch: Mutex<i16>,
    /// (topic, partition) -> the client's first sequence seen after the switch.
    seq_base: Mutex<HashMap<(Bytes, i32), i32>>,
}

impl Mapping {
    fn new(upstream_id: i64, upstream_epoch: i16) -> Self {
        Mapping {
            upstream_id,
            upstream_epoch: Mutex::new(upstream_epoch),
            seq_base: Mutex::new(HashMap::new()),
        }
    }

    /// The sequence the new cluster sees for a client's base sequence. Sequences wrap
    /// from i32::MAX to 0, so the offset is taken modulo 2^31.
    fn map_sequence(&self, topic: &Bytes, partition: i32, client_seq: i32) -> i32 {
        let mut bases = self.seq_base.lock();
        let base = *bases
            .entry((topic.clone(), partition))
            .or_insert(client_seq);
        map_sequence(base, client_seq)
    }
}

pub fn map_sequence(base: i32, client_seq: i32) -> i32 {
    (i64::from(client_seq) - i64::from(base)).rem_euclid(1 << 31) as i32
}

#[derive(Default)]
struct State {
    generation: u64,
    /// Producer ids the current generation's cluster issued to clients.
    native: HashMap<i64, ()>,
    /// Client producer id -> its mapping on the current generation's cluster.
    mapped: HashMap<i64, Arc<OnceCell<Arc<Mapping>>>>,
}

pub struct ProducerIdentities {
    enabled: AtomicBool,
    state: Mutex<State>,
}

impl Default for ProducerIdentities {
    fn default() -> Self {
        ProducerIdentities {
            enabled: AtomicBool::new(true),
            state: Mutex::new(State::default()),
        }
    }
}

/// What a Produce request's batches say about their producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Producer {
    None,
    Transactional,
    Idempotent { id: i64, epoch: i16 },
}

impl ProducerIdentities {
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// State of `generation`; older state is dropped at the first look after a switch.
    fn with_state<R>(&self, generation: u64, f: impl FnOnce(&mut State) -> R) -> R {
        let mut s = self.state.lock();
        if s.generation != generation {
            if generation < s.generation {
                // A session of an older generation (draining): give it a throwaway state.
                return f(&mut State::default());
            }
            *s = State {
                generation,
                ..State::default()
            };
        }
        f(&mut s)
    }

    fn active(&self, session: &Session) -> bool {
        session.act.generation > 0 && self.enabled.load(Ordering::Relaxed)
    }

    /// Records the producer id in an InitProducerId response the cluster issued.
    pub(crate) fn observe_init_response(&self, session: &Session, frame: &Bytes, version: i16) {
        if !self.active(session) {
            return;
        }
        if let Some(resp) = decode_init_response(frame, version) {
            if resp.error_code == 0 && resp.producer_id.0 >= 0 {
                self.with_state(session.act.generation, |s| {
                    s.native.insert(resp.producer_id.0, ());
                });
            }
        }
    }

    /// Rewrites a Produce request whose producer id the current cluster does not
    /// know. `Ok(None)`: forward the frame as it is.
    pub(crate) async fn maybe_rewrite_produce<UW: AsyncWrite + Unpin + Send>(
        &self,
        session: &Session,
        frame: &Bytes,
        version: i16,
        uw: &mut UW,
    ) -> anyhow::Result<Option<Bytes>> {
        if !self.active(session) {
            return Ok(None);
        }
        let hv = ApiKey::Produce.request_header_version(version);
        let body_at = codec::request_body_offset(frame, hv >= 2)
            .ok_or_else(|| anyhow::anyhow!("malformed Produce request header"))?;
        let mut body = frame.slice(body_at..);
        let mut req = ProduceRequest::decode(&mut body, version)
            .map_err(|e| anyhow::anyhow!("cannot decode Produce v{version}: {e}"))?;
        let (id, epoch) = match producer_of(&req) {
            Producer::Idempotent { id, epoch } => (id, epoch),
            Producer::None | Producer::Transactional => return Ok(None),
        };
        let Some(mapping) = self.mapping_for(session, id, epoch, uw).await? else {
            return Ok(None);
        };
        let cluster = session.act.cluster.name_label();
        let upstream_epoch = *mapping.upstream_epoch.lock();
        let mut batches = 0u64;
        for topic in req.topic_data.iter_mut() {
            let key: Bytes = if topic.name.0.is_empty() {
                Bytes::copy_from_slice(topic.topic_id.as_bytes())
            } else {
                topic.name.0.clone().into_bytes()
            };
            for p in topic.partition_data.iter_mut() {
                let Some(records) = p.records.take() else {
                    continue;
                };
                let rewritten = rewrite_batches(&records, |client_seq| {
                    (
                        mapping.upstream_id,
                        upstream_epoch,
                        mapping.map_sequence(&key, p.index, client_seq),
                    )
                });
                match rewritten {
                    Ok((r, n)) => {
                        batches += n;
                        p.records = Some(r);
                    }
                    Err(e) => {
                        metrics::counter!("kafka_sidecar_batch_rewrite_failures_total", "cluster" => cluster.clone()).increment(1);
                        return Err(e.context("rewriting record batches"));
                    }
                }
            }
        }
        metrics::counter!("kafka_sidecar_batches_rewritten_total", "cluster" => cluster)
            .increment(batches);
        Ok(Some(codec::reframe(&frame[4..body_at], &req, version)?))
    }

    /// The mapping of a client producer id on the current cluster, created (with an
    /// InitProducerId of the proxy's own) the first time it is needed in this
    /// generation; None when the current cluster issued that id itself.
    async fn mapping_for<UW: AsyncWrite + Unpin + Send>(
        &self,
        session: &Session,
        id: i64,
        epoch: i16,
        uw: &mut UW,
    ) -> anyhow::Result<Option<Arc<Mapping>>> {
        let cell = self.with_state(session.act.generation, |s| {
            if s.native.contains_key(&id) {
                None
            } else {
                Some(s.mapped.entry(id).or_default().clone())
            }
        });
        let Some(cell) = cell else { return Ok(None) };
        let cluster = session.act.cluster.name_label();
        let mapping = cell
            .get_or_try_init(|| async {
                let m = new_upstream_identity(session, uw).await?;
                tracing::info!(cluster = %cluster, client_producer_id = id, client_epoch = epoch, upstream_producer_id = m.upstream_id, "idempotent producer from before the switch gets a producer id on the new cluster");
                metrics::counter!("kafka_sidecar_producer_ids_remapped_total", "cluster" => cluster.clone()).increment(1);
                anyhow::Ok(Arc::new(m))
            })
            .await
            .inspect_err(|_| {
                metrics::counter!("kafka_sidecar_batch_rewrite_failures_total", "cluster" => cluster.clone()).increment(1);
            })?
            .clone();
        Ok(Some(mapping))
    }

    /// Maps the client's own InitProducerId (epoch bump with its producer id) onto
    /// the upstream identity. Returns the rewritten frame and the client producer id
    /// to put back into the response.
    pub(crate) async fn maybe_rewrite_init<UW: AsyncWrite + Unpin + Send>(
        &self,
        session: &Session,
        frame: &Bytes,
        version: i16,
        uw: &mut UW,
    ) -> anyhow::Result<Option<(Bytes, i64)>> {
        if !self.active(session) {
            return Ok(None);
        }
        let hv = ApiKey::InitProducerId.request_header_version(version);
        let body_at = codec::request_body_offset(frame, hv >= 2)
            .ok_or_else(|| anyhow::anyhow!("malformed InitProducerId request header"))?;
        let mut body = frame.slice(body_at..);
        let mut req = InitProducerIdRequest::decode(&mut body, version)?;
        if req.transactional_id.is_some() || req.producer_id.0 < 0 {
            return Ok(None);
        }
        let client_id = req.producer_id.0;
        // A client may bump its epoch (KIP-360) before it produces anything on the new
        // cluster, e.g. after requests were cut off by the switch: map it all the same.
        let Some(mapping) = self
            .mapping_for(session, client_id, req.producer_epoch, uw)
            .await?
        else {
            return Ok(None);
        };
        req.producer_id.0 = mapping.upstream_id;
        req.producer_epoch = *mapping.upstream_epoch.lock();
        Ok(Some((
            codec::reframe(&frame[4..body_at], &req, version)?,
            client_id,
        )))
    }

    /// The response to a mapped InitProducerId: records the new upstream epoch (the
    /// client restarts its sequences at 0, so the offsets are learned again) and puts
    /// the client's producer id back.
    pub(crate) fn map_init_response(
        &self,
        session: &Session,
        frame: Bytes,
        version: i16,
        client_id: i64,
    ) -> anyhow::Result<Bytes> {
        let hv = ApiKey::InitProducerId.response_header_version(version);
        let Some(mut resp) = decode_init_response(&frame, version) else {
            anyhow::bail!("cannot decode InitProducerId v{version} response");
        };
        if resp.error_code == 0 {
            let mapping = self.with_state(session.act.generation, |s| {
                s.mapped.get(&client_id).and_then(|c| c.get().cloned())
            });
            if let Some(m) = mapping {
                if resp.producer_id.0 == m.upstream_id {
                    *m.upstream_epoch.lock() = resp.producer_epoch;
                    m.seq_base.lock().clear();
                } else {
                    // The cluster issued a new id (epoch exhausted): map to that one.
                    let fresh = Arc::new(Mapping::new(resp.producer_id.0, resp.producer_epoch));
                    self.with_state(session.act.generation, |s| {
                        s.mapped
                            .insert(client_id, Arc::new(OnceCell::new_with(Some(fresh))));
                    });
                }
            }
            resp.producer_id.0 = client_id;
        }
        let header_len = codec::response_body_offset(&frame, hv)
            .ok_or_else(|| anyhow::anyhow!("short response"))?;
        codec::reframe(&frame[4..header_len], &resp, version)
    }
}

/// Asks the new cluster for a producer id on the session's own connection.
async fn new_upstream_identity<UW: AsyncWrite + Unpin + Send>(
    session: &Session,
    uw: &mut UW,
) -> anyhow::Result<Mapping> {
    // v3 (KIP-360) is served by every broker version that clients of today negotiate with.
    let version = 3;
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    let resp: InitProducerIdResponse = session
        .internal_call(uw, ApiKey::InitProducerId, version, &req)
        .await
        .map_err(|e| e.context("the proxy's InitProducerId"))?;
    if resp.error_code != 0 {
        anyhow::bail!(
            "the new cluster refused InitProducerId with error code {}",
            resp.error_code
        );
    }
    Ok(Mapping::new(resp.producer_id.0, resp.producer_epoch))
}

fn decode_init_response(frame: &Bytes, version: i16) -> Option<InitProducerIdResponse> {
    codec::decode_response(ApiKey::InitProducerId, version, frame).ok()
}

/// The producer of a request, from the first record batch that has one.
fn producer_of(req: &ProduceRequest) -> Producer {
    for t in &req.topic_data {
        for p in &t.partition_data {
            let Some(r) = &p.records else { continue };
            if r.len() < BATCH_HEADER_LEN || r[MAGIC_OFFSET] != 2 {
                continue;
            }
            let attributes = (&r[ATTRIBUTES_OFFSET..]).get_i16();
            let id = (&r[PRODUCER_ID_OFFSET..]).get_i64();
            if attributes & TRANSACTIONAL_FLAG != 0 {
                return Producer::Transactional;
            }
            if id >= 0 {
                let epoch = (&r[PRODUCER_EPOCH_OFFSET..]).get_i16();
                return Producer::Idempotent { id, epoch };
            }
            return Producer::None;
        }
    }
    Producer::None
}

/// Rewrites producer id, epoch and base sequence of every v2 batch in `records`
/// (`map` gets the client's base sequence and returns the new id, epoch, sequence),
/// recomputing each batch's CRC-32C. Returns the new records and the batch count.
pub fn rewrite_batches(
    records: &Bytes,
    mut map: impl FnMut(i32) -> (i64, i16, i32),
) -> anyhow::Result<(Bytes, u64)> {
    let mut out = BytesMut::from(&records[..]);
    let mut pos = 0usize;
    let mut n = 0;
    while pos < out.len() {
        let rest = &out[pos..];
        anyhow::ensure!(
            rest.len() >= BATCH_HEADER_LEN,
            "truncated record batch header at byte {pos}"
        );
        let batch_len = (&rest[BATCH_LENGTH_OFFSET..]).get_i32();
        anyhow::ensure!(
            batch_len >= 49,
            "record batch length {batch_len} is too small"
        );
        let end = pos + 12 + batch_len as usize;
        anyhow::ensure!(end <= out.len(), "record batch overruns its partition data");
        anyhow::ensure!(
            rest[MAGIC_OFFSET] == 2,
            "record batch magic {} is not 2",
            rest[MAGIC_OFFSET]
        );
        let client_seq = (&rest[BASE_SEQUENCE_OFFSET..]).get_i32();
        let (id, epoch, seq) = map(client_seq);
        out[pos + PRODUCER_ID_OFFSET..pos + PRODUCER_ID_OFFSET + 8]
            .copy_from_slice(&id.to_be_bytes());
        out[pos + PRODUCER_EPOCH_OFFSET..pos + PRODUCER_EPOCH_OFFSET + 2]
            .copy_from_slice(&epoch.to_be_bytes());
        out[pos + BASE_SEQUENCE_OFFSET..pos + BASE_SEQUENCE_OFFSET + 4]
            .copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&out[pos + ATTRIBUTES_OFFSET..end]);
        out[pos + CRC_OFFSET..pos + CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        pos = end;
        n += 1;
    }
    Ok((out.freeze(), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    fn batch(
        producer_id: i64,
        epoch: i16,
        base_seq: i32,
        n: i32,
        compression: Compression,
    ) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i64::from(i),
                sequence: base_seq.wrapping_add(i),
                timestamp: 1_700_000_000_000,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("value-{i}"))),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn decode_all(b: &Bytes) -> Vec<Record> {
        let mut b = b.clone();
        let mut out = vec![];
        while b.has_remaining() {
            // The decoder verifies the CRC-32C of each batch.
            let set = RecordBatchDecoder::decode(&mut b).expect("valid batch, CRC checked");
            out.extend(set.records);
        }
        out
    }

    #[test]
    fn rewrite_sets_identity_and_a_valid_crc() {
        let b = batch(4242, 3, 100, 5, Compression::None);
        let (out, n) = rewrite_batches(&b, |seq| (77, 0, seq - 100)).unwrap();
        assert_eq!(n, 1);
        let recs = decode_all(&out);
        assert_eq!(recs.len(), 5);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.producer_id, 77);
            assert_eq!(r.producer_epoch, 0);
            assert_eq!(
                r.sequence, i as i32,
                "records keep their offsets from the new base"
            );
            assert_eq!(r.value.as_deref(), Some(format!("value-{i}").as_bytes()));
        }
    }

    #[test]
    fn several_batches_in_one_partition() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(9, 1, 10, 2, Compression::None));
        all.extend_from_slice(&batch(9, 1, 12, 3, Compression::None));
        let mut seen = vec![];
        let (out, n) = rewrite_batches(&all.freeze(), |seq| {
            seen.push(seq);
            (5, 2, seq - 10)
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen, vec![10, 12]);
        let seqs: Vec<i32> = decode_all(&out).iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn compressed_batch_only_header_changes() {
        for c in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch(1, 0, 0, 20, c);
            let (out, _) = rewrite_batches(&b, |s| (2, 5, s)).unwrap();
            assert_eq!(out.len(), b.len());
            // Everything after the header (the compressed records) is byte-identical.
            assert_eq!(&out[BATCH_HEADER_LEN..], &b[BATCH_HEADER_LEN..], "{c:?}");
            let recs = decode_all(&out);
            assert_eq!(recs.len(), 20);
            assert!(recs
                .iter()
                .all(|r| r.producer_id == 2 && r.producer_epoch == 5));
        }
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        assert_eq!(map_sequence(i32::MAX - 1, i32::MAX - 1), 0);
        assert_eq!(map_sequence(i32::MAX - 1, i32::MAX), 1);
        // The client wrapped to 0 after i32::MAX.
        assert_eq!(map_sequence(i32::MAX - 1, 0), 2);
        assert_eq!(map_sequence(5, 4), i32::MAX);
        let b = batch(1, 0, i32::MAX - 1, 4, Compression::None);
        let (out, _) = rewrite_batches(&b, |s| (1, 0, map_sequence(i32::MAX - 1, s))).unwrap();
        let seqs: Vec<i32> = decode_all(&out).iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3]);
    }

    #[test]
    fn truncated_batches_are_refused() {
        let b = batch(1, 0, 0, 3, Compression::None);
        assert!(rewrite_batches(&b.slice(..b.len() - 1), |s| (1, 0, s)).is_err());
        assert!(rewrite_batches(&b.slice(..30), |s| (1, 0, s)).is_err());
    }

    #[test]
    fn producer_detection() {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        let mut req = ProduceRequest::default();
        let mut t = TopicProduceData::default();
        t.partition_data
            .push(PartitionProduceData::default().with_records(Some(batch(
                -1,
                -1,
                -1,
                1,
                Compression::None,
            ))));
        req.topic_data.push(t);
        assert_eq!(producer_of(&req), Producer::None);
        req.topic_data[0].partition_data[0].records = Some(batch(7, 2, 0, 1, Compression::None));
        assert_eq!(producer_of(&req), Producer::Idempotent { id: 7, epoch: 2 });
    }
}
