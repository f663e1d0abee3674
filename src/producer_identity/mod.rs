//! Idempotent producers across a switch: the proxy owns the producer identity the
//! upstream sees, so that nothing a client was told is written can be lost.
//!
//! A producer id, its epoch and the per-partition sequences belong to one cluster,
//! and clusters number their producer ids alike (two fresh clusters both hand out the
//! same first id). After a switch the client keeps its id and sequences. The proxy:
//!
//! 1. passes everything through before the first switch (the ids are the cluster's own);
//! 2. from the first switch on, hands clients producer ids of its own namespace for
//!    every InitProducerId, so a client id can never be confused with a cluster's;
//! 3. gives each client producer an upstream identity per cluster and client epoch
//!    (its own InitProducerId, through [`UpstreamProducerIds`]), rewrites producer id,
//!    epoch and base sequence in the batch headers (CRC-32C recomputed), and decides
//!    in [`sequencer`] which batches may go out, which wait, and what the client is told.
//!
//! Transactional batches are never rewritten: an open transaction cannot move between
//! clusters, so it fails on the new cluster and the application retries it.

pub mod batch;
mod request;
pub mod sequencer;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    ResponseHeader,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use parking_lot::Mutex;

use crate::codec;
use crate::connection::{Broker, KafkaExchange};
pub use batch::{map_sequence, rewrite_batches};
use sequencer::{ClusterName, Sequencer, Ticket, Unit, Verdict};

/// Where a request is going: the cluster and the generation of its session.
#[derive(Debug, Clone)]
pub struct Route {
    pub cluster: ClusterName,
    pub generation: u64,
}

/// The one call producer identity makes to a broker: a fresh producer id.
pub trait UpstreamProducerIds {
    /// InitProducerId without a transactional id: the new producer id and epoch.
    fn init_producer_id(
        &mut self,
    ) -> impl std::future::Future<Output = anyhow::Result<(i64, i16)>> + Send;

    /// Writes the requests queued ahead of the one being decided: the answer a unit
    /// waits for may be theirs.
    fn send_queued(&mut self) -> impl std::future::Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }
}

/// How long a unit waits in the proxy for the answer it depends on ([`Verdict::Await`])
/// before the client is told to retry: a broker round trip, with room for a loaded
/// one. The connection's later requests wait behind it (they are not read meanwhile).
const AWAIT_ANSWER: Duration = Duration::from_secs(2);

pub use crate::config::DEFAULT_PRODUCER_ID_EXPIRATION as DEFAULT_EXPIRATION;

pub struct ProducerIdentities {
    enabled: AtomicBool,
    seq: Mutex<Sequencer>,
    /// Open sessions of generation 0: their units are not followed.
    gen0_sessions: AtomicUsize,
    /// A forwarded unit was answered or abandoned, or a switch started: units that
    /// await an answer decide again.
    answered: tokio::sync::Notify,
    /// Switches so far: a unit waiting when one starts stops waiting (its session is
    /// about to drain; the client resends on the new cluster).
    switches: std::sync::atomic::AtomicU64,
}

impl Default for ProducerIdentities {
    fn default() -> Self {
        ProducerIdentities {
            enabled: AtomicBool::new(true),
            seq: Mutex::new(Sequencer::new(DEFAULT_EXPIRATION)),
            gen0_sessions: AtomicUsize::new(0),
            answered: tokio::sync::Notify::new(),
            switches: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// A session of generation 0 is open while this lives.
pub struct Gen0Session(Option<Arc<ProducerIdentities>>);

impl Drop for Gen0Session {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            if p.gen0_sessions.fetch_sub(1, Ordering::Relaxed) == 1 {
                p.seq.lock().set_untracked_in_flight(false);
            }
        }
    }
}

/// Which topic a partition belongs to: by name (Produce v0-12) or id (v13+).
#[derive(Debug, Clone, PartialEq)]
struct TopicRef {
    name: StrBytes,
    id: uuid::Uuid,
}

/// What the answer to a rewritten Produce request needs.
#[cfg_attr(test, derive(Debug, PartialEq))]
pub struct ProduceHook {
    tickets: Vec<(TopicRef, i32, Ticket)>,
    /// Partitions the proxy answers itself: (error code, base offset), held back,
    /// refused, or known to be written already.
    answers: Vec<(TopicRef, i32, i16, i64)>,
    /// Every partition was answered by the proxy: the upstream was sent a cheap
    /// ApiVersions v0 in its place, and the whole Produce response is built here.
    substituted: Option<(i32, i16)>,
}

/// What producer identity made of a client Produce request.
pub struct ProduceRewrite {
    /// The request to send (patched, rebuilt, a stand-in, or as it came), still
    /// writable for topic identity's patches.
    pub frame: BytesMut,
    /// Set when the answer must go through [`ProducerIdentities::on_produce_response`].
    pub hook: Option<ProduceHook>,
    /// Where the client's topic ids (Produce v13+) lie in `frame`, found by the walk
    /// that decided the request: topic identity patches them there without walking the
    /// request again. None: the request was not walked, or was rebuilt.
    pub topic_ids: Option<Vec<usize>>,
}

impl ProduceHook {
    /// The proxy answers the whole request itself: the upstream got a stand-in.
    pub fn substituted(&self) -> bool {
        self.substituted.is_some()
    }
}

impl ProducerIdentities {
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    pub fn set_expiration(&self, expiry: Duration) {
        self.seq.lock().set_expiry(expiry);
    }

    /// Client producers remembered now (for the gauge).
    pub fn live(&self) -> usize {
        self.seq.lock().len()
    }

    pub fn stats(&self) -> sequencer::Stats {
        self.seq.lock().stats
    }

    /// Counts a session of `generation`; generation-0 sessions are tracked while open.
    pub fn session_opened(self: &Arc<Self>, generation: u64) -> Gen0Session {
        if generation != 0 {
            return Gen0Session(None);
        }
        self.gen0_sessions.fetch_add(1, Ordering::Relaxed);
        Gen0Session(Some(self.clone()))
    }

    /// Called when a switch starts generation 1: sessions still open from generation 0
    /// may have units of the same partitions in flight.
    pub fn switched(&self) {
        let open = self.gen0_sessions.load(Ordering::Relaxed) > 0;
        self.seq.lock().set_untracked_in_flight(open);
        self.switches.fetch_add(1, Ordering::Relaxed);
        self.answered.notify_waiters();
    }

    fn active(&self, route: &Route) -> bool {
        route.generation > 0 && self.enabled.load(Ordering::Relaxed)
    }

    /// A client's InitProducerId after the first switch: always asks the cluster for a
    /// fresh id (the client's own id, if it sends one, is the proxy's, not the
    /// cluster's). Returns the rewritten frame, if any; the response goes through
    /// [`Self::map_init_response`].
    pub fn rewrite_init_request(
        &self,
        route: &Route,
        frame: &Bytes,
        version: i16,
    ) -> anyhow::Result<Option<Bytes>> {
        if !self.active(route) {
            return Ok(None);
        }
        let Some(mut req) =
            codec::decode_request::<InitProducerIdRequest>(ApiKey::InitProducerId, version, frame)
        else {
            anyhow::bail!("cannot decode InitProducerId v{version} request");
        };
        if req.transactional_id.is_some() {
            return Ok(None);
        }
        if req.producer_id.0 >= 0 {
            req.producer_id.0 = -1;
            req.producer_epoch = -1;
        }
        Ok(Some(codec::reframe_request(
            ApiKey::InitProducerId,
            version,
            frame,
            &req,
        )?))
    }

    /// The cluster's answer to a client InitProducerId after the first switch: the
    /// client gets an id of the proxy's namespace instead.
    pub fn map_init_response(
        &self,
        route: &Route,
        frame: Bytes,
        version: i16,
    ) -> anyhow::Result<Bytes> {
        let mut resp: InitProducerIdResponse =
            codec::decode_response(ApiKey::InitProducerId, version, &frame)?;
        if resp.error_code != 0 || resp.producer_id.0 < 0 {
            return Ok(frame);
        }
        let (id, epoch) = self.seq.lock().issue(
            &route.cluster,
            resp.producer_id.0,
            resp.producer_epoch,
            Instant::now(),
        );
        tracing::debug!(cluster = %route.cluster, upstream_producer_id = resp.producer_id.0, client_producer_id = id, "producer id issued from the proxy's namespace");
        resp.producer_id.0 = id;
        resp.producer_epoch = epoch;
        let hv = ApiKey::InitProducerId.response_header_version(version);
        let at = codec::response_body_offset(&frame, hv)
            .ok_or_else(|| anyhow::anyhow!("short InitProducerId response"))?;
        codec::reframe(&frame[4..at], &resp, version)
    }

    /// A client Produce request: decides every idempotent partition and patches its
    /// batch headers in place. The request is walked once ([`request::walk`]) and never
    /// decoded, unless the proxy answers some of its partitions itself and must cut
    /// them out (held back, refused or known written: rare, and then the patched
    /// request is decoded and re-encoded without them).
    pub async fn rewrite_produce<I: UpstreamProducerIds>(
        &self,
        route: &Route,
        mut frame: BytesMut,
        version: i16,
        ids: &mut I,
    ) -> anyhow::Result<ProduceRewrite> {
        if !self.active(route) {
            return Ok(ProduceRewrite {
                frame,
                hook: None,
                topic_ids: None,
            });
        }
        let flexible = ApiKey::Produce.request_header_version(version) >= 2;
        let body_at = codec::request_body_offset(&frame, flexible)
            .ok_or_else(|| anyhow::anyhow!("malformed Produce v{version} request header"))?;
        let walked = request::walk(version, &frame[body_at..])
            .with_context(|| format!("cannot decode Produce v{version} request"))?;
        let topic_ids: Vec<usize> = walked
            .topics
            .iter()
            .filter_map(|t| t.id.map(|at| body_at + at))
            .collect();
        if walked.acks == 0 || walked.transactional {
            return Ok(ProduceRewrite {
                frame,
                hook: None,
                topic_ids: Some(topic_ids),
            });
        }
        let mut hook = ProduceHook {
            tickets: Vec::new(),
            answers: Vec::new(),
            substituted: None,
        };
        // Batch headers to patch: (records' place in the frame, identity, base).
        let mut patches: Vec<(std::ops::Range<usize>, i64, i16, i32)> = Vec::new();
        // Partitions the proxy answers itself: (topic, partition) positions in the walk.
        let mut cut: Vec<(usize, usize)> = Vec::new();
        let mut partitions = 0usize;
        for (ti, topic) in walked.topics.iter().enumerate() {
            partitions += topic.partitions.len();
            // A copy: the name outlives the request in the sequencer's keys and the hook,
            // and a slice would keep the relay's whole read buffer alive with it.
            let name = Bytes::copy_from_slice(
                &frame[body_at + topic.name.start..body_at + topic.name.end],
            );
            let id = topic.id.map_or(uuid::Uuid::nil(), |at| {
                let at = body_at + at;
                uuid::Uuid::from_bytes(frame[at..at + 16].try_into().expect("16 bytes"))
            });
            let key: Bytes = if name.is_empty() {
                Bytes::copy_from_slice(id.as_bytes())
            } else {
                name.clone()
            };
            let tref = TopicRef {
                name: StrBytes::from_utf8(name)
                    .map_err(|e| anyhow::anyhow!("Produce v{version} topic name: {e}"))?,
                id,
            };
            for (pi, p) in topic.partitions.iter().enumerate() {
                let records = body_at + p.records.start..body_at + p.records.end;
                let batch::Producer::Idempotent {
                    id,
                    epoch,
                    first_seq,
                    count,
                    fingerprint,
                } = batch::producer_of(&frame[records.clone()]).context_partition(p.index)?
                else {
                    continue;
                };
                let unit = Unit {
                    topic: key.clone(),
                    partition: p.index,
                    producer_id: id,
                    epoch,
                    first_seq,
                    count,
                    fingerprint,
                };
                match self.decide(route, &unit, ids).await? {
                    Verdict::PassThrough => {}
                    Verdict::Forward {
                        upstream_id,
                        upstream_epoch,
                        base,
                        ticket,
                    } => {
                        patches.push((records, upstream_id, upstream_epoch, base));
                        hook.tickets.push((tref.clone(), p.index, ticket));
                    }
                    Verdict::Answer(code) => {
                        hook.answers.push((tref.clone(), p.index, code, -1));
                        cut.push((ti, pi));
                    }
                    Verdict::Written { base_offset } => {
                        hook.answers.push((tref.clone(), p.index, 0, base_offset));
                        cut.push((ti, pi));
                    }
                    Verdict::NeedIdentity | Verdict::Await => unreachable!("decide() resolves it"),
                }
            }
        }
        if patches.is_empty() && cut.is_empty() {
            return Ok(ProduceRewrite {
                frame,
                hook: None,
                topic_ids: Some(topic_ids),
            });
        }
        let cluster = route.cluster.to_string();
        metrics::counter!(crate::admin::names::BATCHES_REWRITTEN_TOTAL, "cluster" => cluster.clone())
            .increment(hook.tickets.len() as u64);
        let held = hook.answers.iter().filter(|a| a.2 != 0).count();
        if held > 0 {
            metrics::counter!(crate::admin::names::BATCHES_HELD_TOTAL, "cluster" => cluster)
                .increment(held as u64);
        }
        if cut.len() == partitions {
            // Nothing left to send, but the answer must keep its place among the
            // pipelined ones: a cheap request takes the Produce's slot.
            let corr = codec::peek_request(&frame).correlation_id;
            hook.substituted = Some((corr, version));
            return Ok(ProduceRewrite {
                frame: BytesMut::from(&crate::api_versions::v0_request(corr)[..]),
                hook: Some(hook),
                topic_ids: None,
            });
        }
        for (records, upstream_id, upstream_epoch, base) in patches {
            batch::patch_batches(&mut frame[records], |client_seq| {
                (upstream_id, upstream_epoch, map_sequence(base, client_seq))
            })?;
        }
        if cut.is_empty() {
            return Ok(ProduceRewrite {
                frame,
                hook: Some(hook),
                topic_ids: Some(topic_ids),
            });
        }
        // Partitions the proxy answers itself leave the request: the rare path that
        // decodes and re-encodes it (the batches are already patched).
        let frame = frame.freeze();
        let Some(mut req) =
            codec::decode_request::<ProduceRequest>(ApiKey::Produce, version, &frame)
        else {
            anyhow::bail!("cannot decode Produce v{version} request");
        };
        for (ti, topic) in req.topic_data.iter_mut().enumerate() {
            let mut pi = 0;
            topic.partition_data.retain(|_| {
                pi += 1;
                !cut.contains(&(ti, pi - 1))
            });
        }
        req.topic_data.retain(|t| !t.partition_data.is_empty());
        let rebuilt = codec::reframe_request(ApiKey::Produce, version, &frame, &req)?;
        Ok(ProduceRewrite {
            // A fresh buffer of its own: no copy.
            frame: rebuilt
                .try_into_mut()
                .unwrap_or_else(|f| BytesMut::from(&f[..])),
            hook: Some(hook),
            topic_ids: None,
        })
    }

    /// The sequencer's verdict, getting upstream identities as needed.
    async fn decide<I: UpstreamProducerIds>(
        &self,
        route: &Route,
        unit: &Unit,
        ids: &mut I,
    ) -> anyhow::Result<Verdict> {
        // Any answer wakes the waiters, often one for another partition: wait again,
        // up to one deadline.
        let mut deadline = None;
        let switches = self.switches.load(Ordering::Relaxed);
        // A fresh identity is needed at most once per cause; more means something is
        // badly wrong upstream, and the client is better off with an error.
        let mut identities = 0;
        while identities < 4 {
            // Made before the sequencer is asked, so an answer right after it is not missed:
            // a `Notified` sees every `notify_waiters` from its creation, polled or not (and
            // registers as a waiter only if polled, so deciding costs no lock).
            let answered = self.answered.notified();
            let v = self
                .seq
                .lock()
                .on_unit(&route.cluster, route.generation, unit, Instant::now());
            match v {
                Verdict::NeedIdentity => identities += 1,
                Verdict::Await => {
                    if self.switches.load(Ordering::Relaxed) != switches {
                        return Ok(self.hold());
                    }
                    let until = match deadline {
                        Some(d) => d,
                        None => {
                            // The unit it waits for may be queued on this very connection.
                            ids.send_queued().await?;
                            *deadline.insert(tokio::time::Instant::now() + AWAIT_ANSWER)
                        }
                    };
                    if until <= tokio::time::Instant::now() {
                        return Ok(self.hold());
                    }
                    // Woken or not, the sequencer is asked again.
                    let _ = tokio::time::timeout_at(until, answered).await;
                    continue;
                }
                v => return Ok(v),
            }
            let (id, epoch) = match ids.init_producer_id().await {
                Ok(got) => got,
                Err(e) => {
                    // Right after a switch the new cluster may still be loading its
                    // coordinator (COORDINATOR_LOAD_IN_PROGRESS) or refuse for a while:
                    // the client's batch is not written, and it retries; the session
                    // stays. A dead connection shows up on the next write anyway.
                    tracing::warn!(cluster = %route.cluster, client_producer_id = unit.producer_id, "cannot get an upstream producer identity yet, the client will retry: {e:#}");
                    metrics::counter!(crate::admin::names::BATCHES_HELD_TOTAL, "cluster" => route.cluster.to_string()).increment(1);
                    return Ok(Verdict::Answer(sequencer::HOLD));
                }
            };
            tracing::info!(cluster = %route.cluster, client_producer_id = unit.producer_id, client_epoch = unit.epoch, upstream_producer_id = id, upstream_epoch = epoch, "client producer gets an upstream identity on this cluster");
            metrics::counter!(crate::admin::names::PRODUCER_IDS_REMAPPED_TOTAL, "cluster" => route.cluster.to_string()).increment(1);
            self.seq
                .lock()
                .install(unit.producer_id, unit.epoch, &route.cluster, id, epoch);
        }
        anyhow::bail!(
            "no usable upstream identity for producer {} on {}",
            unit.producer_id,
            route.cluster
        )
    }

    /// A unit that waited for an answer in vain: the client is told to retry.
    fn hold(&self) -> Verdict {
        self.seq.lock().stats.held += 1;
        Verdict::Answer(sequencer::HOLD)
    }

    /// The answer to a rewritten Produce request: every forwarded partition's result
    /// goes through the sequencer (a duplicate the proxy cannot vouch for is not passed
    /// on as success, one it can becomes success with its offset, and no partition gets
    /// OUT_OF_ORDER / DUPLICATE_SEQUENCE_NUMBER), and the partitions the proxy answered
    /// itself are added.
    pub fn on_produce_response(
        &self,
        route: &Route,
        hook: ProduceHook,
        frame: Bytes,
        version: i16,
    ) -> anyhow::Result<Bytes> {
        let hv = ApiKey::Produce.response_header_version(version);
        let (header, mut resp) = match hook.substituted {
            Some((corr, _)) => {
                let mut h = BytesMut::new();
                ResponseHeader::default()
                    .with_correlation_id(corr)
                    .encode(&mut h, hv)?;
                (h.freeze(), ProduceResponse::default())
            }
            None => {
                let at = codec::response_body_offset(&frame, hv)
                    .ok_or_else(|| anyhow::anyhow!("short Produce response"))?;
                let resp: ProduceResponse =
                    codec::decode_response(ApiKey::Produce, version, &frame)?;
                (frame.slice(4..at), resp)
            }
        };
        {
            let mut seq = self.seq.lock();
            let mut seen = vec![false; hook.tickets.len()];
            for t in resp.responses.iter_mut() {
                for p in t.partition_responses.iter_mut() {
                    let found = hook.tickets.iter().position(|(tr, idx, _)| {
                        *idx == p.index && tr.name == t.name.0 && tr.id == t.topic_id
                    });
                    let Some(i) = found else { continue };
                    seen[i] = true;
                    let r = seq.on_result(&hook.tickets[i].2, p.error_code, p.base_offset);
                    tracing::trace!(cluster = %route.cluster, partition = p.index, upstream_error = p.error_code, base_offset = p.base_offset, client_error = r.error_code, client_base_offset = r.base_offset, ticket = ?hook.tickets[i].2, "produce result");
                    if p.error_code == sequencer::DUPLICATE_SEQUENCE_NUMBER && r.error_code != 0 {
                        metrics::counter!(crate::admin::names::DUPLICATES_REFUSED_TOTAL, "cluster" => route.cluster.to_string()).increment(1);
                    }
                    if r.error_code != p.error_code {
                        p.error_code = r.error_code;
                        p.error_message = None;
                        p.record_errors.clear();
                        p.log_append_time_ms = -1;
                    }
                    p.base_offset = r.base_offset;
                }
            }
            for (i, (_, _, t)) in hook.tickets.iter().enumerate() {
                if !seen[i] {
                    seq.abandon(t);
                }
            }
        }
        if !hook.tickets.is_empty() {
            self.answered.notify_waiters();
        }
        for (tref, index, code, base_offset) in hook.answers {
            let topic = match resp
                .responses
                .iter_mut()
                .position(|t| t.name.0 == tref.name && t.topic_id == tref.id)
            {
                Some(i) => &mut resp.responses[i],
                None => {
                    resp.responses.push(
                        TopicProduceResponse::default()
                            .with_name(tref.name.into())
                            .with_topic_id(tref.id),
                    );
                    resp.responses.last_mut().expect("just pushed")
                }
            };
            topic.partition_responses.push(
                PartitionProduceResponse::default()
                    .with_index(index)
                    .with_error_code(code)
                    .with_base_offset(base_offset)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1),
            );
        }
        codec::reframe(&header, &resp, version)
    }

    /// The session ended before the answer came: the units may or may not be written.
    pub fn abandon(&self, hook: &ProduceHook) {
        {
            let mut seq = self.seq.lock();
            for (_, _, t) in &hook.tickets {
                seq.abandon(t);
            }
        }
        self.answered.notify_waiters();
    }
}

trait PartitionContext<T> {
    fn context_partition(self, index: i32) -> anyhow::Result<T>;
}

impl<T> PartitionContext<T> for anyhow::Result<T> {
    fn context_partition(self, index: i32) -> anyhow::Result<T> {
        self.map_err(|e| e.context(format!("record batches of partition {index}")))
    }
}

/// [`UpstreamProducerIds`] over any connection to the cluster (in a session, the
/// session's own upstream connection, between its client's requests). The
/// InitProducerId version is the newest both the cluster and the proxy speak.
impl<E: KafkaExchange> UpstreamProducerIds for Broker<E> {
    async fn send_queued(&mut self) -> anyhow::Result<()> {
        self.exchange_mut().send_queued().await
    }

    async fn init_producer_id(&mut self) -> anyhow::Result<(i64, i16)> {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1);
        let (resp, version): (InitProducerIdResponse, _) = self
            .call_newest(ApiKey::InitProducerId, i16::MAX, &req)
            .await?;
        anyhow::ensure!(
            resp.error_code == 0,
            "the cluster refused InitProducerId v{version} with error code {}",
            resp.error_code
        );
        Ok((resp.producer_id.0, resp.producer_epoch))
    }
}

/// For tests and docs: the id namespace start.
pub use sequencer::NAMESPACE_BASE;

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// A request the proxy rewrites: the frame to send and the answer's hook.
    async fn rewritten<I: UpstreamProducerIds>(
        p: &ProducerIdentities,
        route: &Route,
        f: &Bytes,
        version: i16,
        ids: &mut I,
    ) -> (Bytes, ProduceHook) {
        let r = p
            .rewrite_produce(route, BytesMut::from(&f[..]), version, ids)
            .await
            .unwrap();
        (r.frame.freeze(), r.hook.expect("rewritten"))
    }

    /// Hands out producer ids from a counter, as a broker does; no socket.
    struct Ids(i64);

    impl UpstreamProducerIds for Ids {
        async fn init_producer_id(&mut self) -> anyhow::Result<(i64, i16)> {
            self.0 += 1;
            Ok((self.0, 0))
        }
    }

    fn records(pid: i64, epoch: i16, seq: i32, n: i32) -> Bytes {
        let recs: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: pid,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i64::from(i),
                sequence: seq + i,
                timestamp: 0,
                key: None,
                value: Some(Bytes::from(format!("v{i}"))),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut b = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut b,
            &recs,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        b.freeze()
    }

    fn produce_frame(version: i16, parts: &[(i32, Bytes)]) -> Bytes {
        let mut t =
            TopicProduceData::default().with_name(StrBytes::from_static_str("orders").into());
        for (p, r) in parts {
            t.partition_data.push(
                PartitionProduceData::default()
                    .with_index(*p)
                    .with_records(Some(r.clone())),
            );
        }
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![t]);
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .encode(&mut buf, ApiKey::Produce.request_header_version(version))
            .unwrap();
        req.encode(&mut buf, version).unwrap();
        codec::frame_with_length(buf)
    }

    fn response_frame(version: i16, resp: &ProduceResponse) -> Bytes {
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(42)
            .encode(&mut buf, ApiKey::Produce.response_header_version(version))
            .unwrap();
        resp.encode(&mut buf, version).unwrap();
        codec::frame_with_length(buf)
    }

    /// The producer id and first sequence of a rewritten request's first partition.
    fn first_identity(frame: &Bytes, version: i16) -> (i64, i32) {
        let req: ProduceRequest = codec::decode_request(ApiKey::Produce, version, frame).unwrap();
        let records = req.topic_data[0].partition_data[0]
            .records
            .as_ref()
            .unwrap();
        match batch::producer_of(records).unwrap() {
            batch::Producer::Idempotent { id, first_seq, .. } => (id, first_seq),
            other => panic!("{other:?}"),
        }
    }

    /// Counts how often the requests queued ahead were written.
    struct Flushing(Ids, usize);

    impl UpstreamProducerIds for Flushing {
        async fn init_producer_id(&mut self) -> anyhow::Result<(i64, i16)> {
            self.0.init_producer_id().await
        }
        async fn send_queued(&mut self) -> anyhow::Result<()> {
            self.1 += 1;
            Ok(())
        }
    }

    fn answer_all(partitions: &[i32], base_offset: i64) -> ProduceResponse {
        let mut t =
            TopicProduceResponse::default().with_name(StrBytes::from_static_str("orders").into());
        for &i in partitions {
            t.partition_responses.push(
                PartitionProduceResponse::default()
                    .with_index(i)
                    .with_base_offset(base_offset),
            );
        }
        ProduceResponse::default().with_responses(vec![t])
    }

    /// `f` rewritten in a task of its own (it may wait for an answer): the result, the
    /// ids it used, and how long it took.
    fn decide_apart<I: UpstreamProducerIds + Send + 'static>(
        p: &Arc<ProducerIdentities>,
        route: &Route,
        f: Bytes,
        version: i16,
        mut ids: I,
    ) -> tokio::task::JoinHandle<((Bytes, ProduceHook), I, Duration)> {
        let (p, route) = (p.clone(), route.clone());
        tokio::spawn(async move {
            let t0 = tokio::time::Instant::now();
            let got = rewritten(&p, &route, &f, version, &mut ids).await;
            (got, ids, t0.elapsed())
        })
    }

    /// After a switch a partition's first unit goes out alone; the unit pipelined behind
    /// it waits in the proxy for that answer instead of sending the client into a retry
    /// backoff, and goes out as soon as the answer comes. Paused clock: no real waiting.
    #[tokio::test(start_paused = true)]
    async fn a_unit_behind_a_streams_first_waits_for_its_answer_then_goes_out() {
        let p = Arc::new(ProducerIdentities::default());
        let route = Route {
            cluster: Arc::from("west"),
            generation: 1,
        };
        let version = 9;
        let mut ids = Flushing(Ids(0), 0);
        let f1 = produce_frame(version, &[(0, records(5, 0, 10, 2))]);
        let (_, hook1) = rewritten(&p, &route, &f1, version, &mut ids).await;
        // Partition 1's first unit, in flight too.
        let f1b = produce_frame(version, &[(1, records(5, 0, 4, 1))]);
        let (_, hook1b) = rewritten(&p, &route, &f1b, version, &mut ids).await;
        assert_eq!(ids.1, 0, "nothing waited");
        let f2 = produce_frame(version, &[(0, records(5, 0, 12, 1))]);
        let waiting = decide_apart(&p, &route, f2, version, Flushing(Ids(100), 0));
        // Let it reach the wait, well inside AWAIT_ANSWER; partition 1's answer comes
        // first and wakes it, but it is not the one it waits for.
        tokio::time::sleep(AWAIT_ANSWER / 4).await;
        assert!(
            !waiting.is_finished(),
            "the second unit waits for the first's answer"
        );
        p.on_produce_response(
            &route,
            hook1b,
            response_frame(version, &answer_all(&[1], 3)),
            version,
        )
        .unwrap();
        tokio::time::sleep(AWAIT_ANSWER / 4).await;
        assert!(
            !waiting.is_finished(),
            "another partition's answer does not end the wait"
        );
        p.on_produce_response(
            &route,
            hook1,
            response_frame(version, &answer_all(&[0], 7)),
            version,
        )
        .unwrap();
        let ((out2, hook2), Flushing(_, flushed), waited) = waiting.await.unwrap();
        assert_eq!(flushed, 1, "what was queued ahead went out before the wait");
        assert!(
            waited < AWAIT_ANSWER,
            "woken by the answer, not the timeout"
        );
        assert!(hook2.answers.is_empty(), "not held: {:?}", hook2.answers);
        assert_eq!(
            first_identity(&out2, version),
            (1, 2),
            "on the first unit's identity, after it"
        );
        assert_eq!(p.stats().held, 0);
    }

    /// A switch ends the wait: the session is about to drain, and the client resends
    /// on the new cluster.
    #[tokio::test(start_paused = true)]
    async fn a_switch_ends_the_wait_with_a_hold() {
        let p = Arc::new(ProducerIdentities::default());
        let route = Route {
            cluster: Arc::from("west"),
            generation: 1,
        };
        let version = 9;
        let f1 = produce_frame(version, &[(0, records(5, 0, 10, 2))]);
        let _in_flight = rewritten(&p, &route, &f1, version, &mut Ids(0)).await;
        let f2 = produce_frame(version, &[(0, records(5, 0, 12, 1))]);
        let waiting = decide_apart(&p, &route, f2, version, Ids(100));
        tokio::time::sleep(AWAIT_ANSWER / 4).await;
        assert!(!waiting.is_finished());
        p.switched();
        let ((_, hook2), _, waited) = waiting.await.unwrap();
        assert!(
            waited < AWAIT_ANSWER,
            "ended by the switch, not the timeout"
        );
        assert_eq!(hook2.answers.len(), 1);
        assert_eq!(hook2.answers[0].2, sequencer::HOLD);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_partition_is_cut_from_the_request_and_answered_in_the_response() {
        let p = ProducerIdentities::default();
        let route = Route {
            cluster: Arc::from("west"),
            generation: 1,
        };
        let version = 9;
        let mut ids = Ids(0);
        // Partition 0: the stream's first unit; partition 1's first unit too.
        let f = produce_frame(
            version,
            &[(0, records(5, 0, 10, 2)), (1, records(5, 0, 3, 1))],
        );
        let (out, hook) = rewritten(&p, &route, &f, version, &mut ids).await;
        assert_eq!(first_identity(&out, version), (1, 0));
        let req: ProduceRequest = codec::decode_request(ApiKey::Produce, version, &out).unwrap();
        assert_eq!(req.topic_data[0].partition_data.len(), 2);
        // Before partition 0's first unit is acknowledged, its next one is held back.
        let f2 = produce_frame(version, &[(0, records(5, 0, 12, 1))]);
        let (out2, hook2) = rewritten(&p, &route, &f2, version, &mut ids).await;
        assert_eq!(
            codec::peek_request(&out2).api_key,
            ApiKey::ApiVersions as i16,
            "nothing left to send: a stand-in keeps the answer's place"
        );
        // The broker answers the first request: partition 0 written, partition 1 too.
        let mut resp = ProduceResponse::default();
        let mut t =
            TopicProduceResponse::default().with_name(StrBytes::from_static_str("orders").into());
        for i in 0..2 {
            t.partition_responses.push(
                PartitionProduceResponse::default()
                    .with_index(i)
                    .with_base_offset(7),
            );
        }
        resp.responses.push(t);
        let back = p
            .on_produce_response(&route, hook, response_frame(version, &resp), version)
            .unwrap();
        let got: ProduceResponse = codec::decode_response(ApiKey::Produce, version, &back).unwrap();
        assert!(got.responses[0]
            .partition_responses
            .iter()
            .all(|r| r.error_code == 0));
        // The stand-in's answer becomes a Produce answer with the held partition.
        let held = p
            .on_produce_response(&route, hook2, Bytes::from_static(&[0; 8]), version)
            .unwrap();
        let got: ProduceResponse = codec::decode_response(ApiKey::Produce, version, &held).unwrap();
        assert_eq!(codec::peek_response_correlation(&held), 42);
        let r = &got.responses[0].partition_responses[0];
        assert_eq!(
            (r.index, r.error_code, r.base_offset),
            (0, sequencer::HOLD, -1)
        );
        // Now that partition 0 has an acknowledgement, the same unit goes out.
        let f3 = produce_frame(version, &[(0, records(5, 0, 12, 1))]);
        let (out3, _) = rewritten(&p, &route, &f3, version, &mut ids).await;
        assert_eq!(first_identity(&out3, version), (1, 2));
        // The first request again (its answer missed): both partitions are known written,
        // answered as a broker answers a duplicate, with the offsets they were written at.
        let (out4, hook4) = rewritten(&p, &route, &f, version, &mut ids).await;
        assert_eq!(
            codec::peek_request(&out4).api_key,
            ApiKey::ApiVersions as i16
        );
        let again = p
            .on_produce_response(&route, hook4, Bytes::from_static(&[0; 8]), version)
            .unwrap();
        let got: ProduceResponse =
            codec::decode_response(ApiKey::Produce, version, &again).unwrap();
        let mut got: Vec<_> = got.responses[0]
            .partition_responses
            .iter()
            .map(|r| (r.index, r.error_code, r.base_offset))
            .collect();
        got.sort();
        assert_eq!(got, vec![(0, 0, 7), (1, 0, 7)]);
    }

    /// A cluster still loading its coordinator after a switch, then ready.
    struct Loading(u32);

    impl UpstreamProducerIds for Loading {
        async fn init_producer_id(&mut self) -> anyhow::Result<(i64, i16)> {
            self.0 += 1;
            anyhow::ensure!(self.0 > 1, "refused with error code 14");
            Ok((77, 0))
        }
    }

    #[tokio::test]
    async fn a_cluster_not_ready_for_init_producer_id_holds_the_batch_and_keeps_the_session() {
        let p = ProducerIdentities::default();
        let route = Route {
            cluster: Arc::from("west"),
            generation: 1,
        };
        let mut ids = Loading(0);
        let f = produce_frame(9, &[(0, records(5, 0, 10, 2))]);
        let (out, hook) = rewritten(&p, &route, &f, 9, &mut ids).await;
        assert_eq!(
            codec::peek_request(&out).api_key,
            ApiKey::ApiVersions as i16
        );
        let held = p
            .on_produce_response(&route, hook, Bytes::from_static(&[0; 8]), 9)
            .unwrap();
        let got: ProduceResponse = codec::decode_response(ApiKey::Produce, 9, &held).unwrap();
        assert_eq!(
            got.responses[0].partition_responses[0].error_code,
            sequencer::HOLD
        );
        // The client's retry gets an identity and goes out.
        let (out, _) = rewritten(&p, &route, &f, 9, &mut ids).await;
        let req: ProduceRequest = codec::decode_request(ApiKey::Produce, 9, &out).unwrap();
        match batch::producer_of(
            req.topic_data[0].partition_data[0]
                .records
                .as_ref()
                .unwrap(),
        )
        .unwrap()
        {
            batch::Producer::Idempotent { id, .. } => assert_eq!(id, 77),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn nothing_is_touched_before_the_first_switch() {
        let p = ProducerIdentities::default();
        let route = Route {
            cluster: Arc::from("north"),
            generation: 0,
        };
        let f = produce_frame(9, &[(0, records(5, 0, 10, 2))]);
        let r = p
            .rewrite_produce(&route, BytesMut::from(&f[..]), 9, &mut Ids(0))
            .await
            .unwrap();
        assert!(r.hook.is_none() && r.topic_ids.is_none());
        assert_eq!(r.frame, f);
    }

    /// The way Produce requests were rewritten before they were patched in place
    /// (decoded, batches re-encoded, request re-encoded): the reference the in-place
    /// path must equal byte for byte.
    impl ProducerIdentities {
        async fn rewrite_produce_decoded<I: UpstreamProducerIds>(
            &self,
            route: &Route,
            frame: &Bytes,
            version: i16,
            ids: &mut I,
        ) -> anyhow::Result<Option<(Bytes, ProduceHook)>> {
            if !self.active(route) {
                return Ok(None);
            }
            let Some(mut req) =
                codec::decode_request::<ProduceRequest>(ApiKey::Produce, version, frame)
            else {
                anyhow::bail!("cannot decode Produce v{version} request");
            };
            if req.acks == 0 || req.transactional_id.is_some() {
                return Ok(None);
            }
            let mut hook = ProduceHook {
                tickets: Vec::new(),
                answers: Vec::new(),
                substituted: None,
            };
            let mut changed = false;
            let mut partitions_left = 0usize;
            for topic in req.topic_data.iter_mut() {
                let key: Bytes = if topic.name.0.is_empty() {
                    Bytes::copy_from_slice(topic.topic_id.as_bytes())
                } else {
                    topic.name.0.clone().into_bytes()
                };
                let tref = TopicRef {
                    name: topic.name.0.clone(),
                    id: topic.topic_id,
                };
                let mut kept = Vec::with_capacity(topic.partition_data.len());
                for mut p in std::mem::take(&mut topic.partition_data) {
                    let Some(records) = p.records.as_ref() else {
                        kept.push(p);
                        continue;
                    };
                    let batch::Producer::Idempotent {
                        id,
                        epoch,
                        first_seq,
                        count,
                        fingerprint,
                    } = batch::producer_of(records).context_partition(p.index)?
                    else {
                        kept.push(p);
                        continue;
                    };
                    let unit = Unit {
                        topic: key.clone(),
                        partition: p.index,
                        producer_id: id,
                        epoch,
                        first_seq,
                        count,
                        fingerprint,
                    };
                    match self.decide(route, &unit, ids).await? {
                        Verdict::PassThrough => kept.push(p),
                        Verdict::Forward {
                            upstream_id,
                            upstream_epoch,
                            base,
                            ticket,
                        } => {
                            let (r, _) = rewrite_batches(records, |client_seq| {
                                (upstream_id, upstream_epoch, map_sequence(base, client_seq))
                            })?;
                            p.records = Some(r);
                            hook.tickets.push((tref.clone(), p.index, ticket));
                            changed = true;
                            kept.push(p);
                        }
                        Verdict::Answer(code) => {
                            hook.answers.push((tref.clone(), p.index, code, -1));
                            changed = true;
                        }
                        Verdict::Written { base_offset } => {
                            hook.answers.push((tref.clone(), p.index, 0, base_offset));
                            changed = true;
                        }
                        Verdict::NeedIdentity | Verdict::Await => {
                            unreachable!("decide() resolves it")
                        }
                    }
                }
                partitions_left += kept.len();
                topic.partition_data = kept;
            }
            if !changed {
                return Ok(None);
            }
            let peek = codec::peek_request(frame);
            if partitions_left == 0 {
                hook.substituted = Some((peek.correlation_id, version));
                return Ok(Some((
                    crate::api_versions::v0_request(peek.correlation_id),
                    hook,
                )));
            }
            req.topic_data.retain(|t| !t.partition_data.is_empty());
            Ok(Some((
                codec::reframe_request(ApiKey::Produce, version, frame, &req)?,
                hook,
            )))
        }
    }

    /// One partition's records in a random request.
    fn random_records(rng: &mut rand::rngs::StdRng, pid: i64, epoch: i16, seq: &mut i32) -> Bytes {
        use rand::Rng;
        let mut out = BytesMut::new();
        let kind = rng.random_range(0..10);
        let batches = rng.random_range(1..=3);
        for _ in 0..batches {
            let n = rng.random_range(1..=3);
            // 0-5: idempotent; 6: transactional; 7: plain; 8: old message format (v1).
            let (pid, epoch, transactional, magic) = match kind {
                6 => (pid + 100, 0, true, 2),
                7 => (-1, -1, false, 2),
                8 => (-1, -1, false, 1),
                _ => (pid, epoch, false, 2),
            };
            let compression = [
                Compression::None,
                Compression::Gzip,
                Compression::Snappy,
                Compression::Lz4,
                Compression::Zstd,
            ][rng.random_range(0..5)];
            if magic == 1 {
                // An old-format message (v1; its CRC is never read by the proxy).
                let value = vec![b'o'; rng.random_range(48..300)];
                out.extend_from_slice(&0i64.to_be_bytes());
                out.extend_from_slice(&(22 + value.len() as i32).to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, 0, 1, 0]);
                out.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
                out.extend_from_slice(&(-1i32).to_be_bytes());
                out.extend_from_slice(&(value.len() as i32).to_be_bytes());
                out.extend_from_slice(&value);
                continue;
            }
            let recs: Vec<Record> = (0..n)
                .map(|i| Record {
                    transactional,
                    control: false,
                    partition_leader_epoch: 0,
                    producer_id: pid,
                    producer_epoch: epoch,
                    timestamp_type: TimestampType::Creation,
                    offset: i64::from(i),
                    sequence: if pid < 0 { -1 } else { seq.wrapping_add(i) },
                    timestamp: 1_700_000_000_000,
                    key: Some(Bytes::from(format!("k{i}"))),
                    value: Some(Bytes::from(vec![b'v'; rng.random_range(0..300)])),
                    headers: Default::default(),
                    delete_horizon: false,
                })
                .collect();
            RecordBatchEncoder::encode(
                &mut out,
                &recs,
                &RecordEncodeOptions {
                    version: 2,
                    compression,
                },
            )
            .unwrap();
            if pid >= 0 && !transactional {
                *seq = seq.wrapping_add(n);
            }
        }
        out.freeze()
    }

    /// The broker's answer to a request the proxy sent: every partition answered,
    /// written or refused at random.
    fn random_answer(rng: &mut rand::rngs::StdRng, version: i16, sent: &Bytes) -> Bytes {
        use rand::Rng;
        let req: ProduceRequest = codec::decode_request(ApiKey::Produce, version, sent).unwrap();
        let mut resp = ProduceResponse::default();
        for t in &req.topic_data {
            let mut topic = TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id);
            for p in &t.partition_data {
                let (code, offset) = match rng.random_range(0..8) {
                    0 => (sequencer::DUPLICATE_SEQUENCE_NUMBER, -1),
                    1 => (sequencer::OUT_OF_ORDER_SEQUENCE_NUMBER, -1),
                    2 => (sequencer::NOT_ENOUGH_REPLICAS, -1),
                    _ => (0, rng.random_range(0..1_000_000)),
                };
                topic.partition_responses.push(
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(code)
                        .with_base_offset(offset),
                );
            }
            resp.responses.push(topic);
        }
        response_frame(version, &resp)
    }

    /// Random streams of requests (several topics, partitions and batches each;
    /// compressed, transactional, plain and old-format batches; re-sends, answers in any
    /// order, lost answers) through two proxies: the in-place path and the decoding one
    /// must send the same bytes, leave the same hooks and give the client the same
    /// answers.
    // Paused clock: units that wait for an answer that never comes time out at once.
    #[tokio::test(start_paused = true)]
    async fn in_place_rewrite_equals_decode_and_re_encode() {
        use rand::{Rng, SeedableRng};
        // Requests seen: passed, patched, patched and cut, answered whole by the proxy.
        let mut seen = [0usize; 4];
        for seed in 0..150u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let version = [3i16, 7, 9, 12, 13][rng.random_range(0..5)];
            let (new, old) = (ProducerIdentities::default(), ProducerIdentities::default());
            let (mut new_ids, mut old_ids) = (Ids(0), Ids(0));
            let route = Route {
                cluster: Arc::from("west"),
                generation: 1,
            };
            let topics = rng.random_range(1..=3u8);
            let mut seqs: std::collections::HashMap<(u8, i32, i64), i32> = Default::default();
            let mut sent: Vec<Bytes> = vec![];
            let mut pending: Vec<(ProduceHook, ProduceHook, Bytes)> = vec![];
            for step in 0..30 {
                let ctx = format!("seed {seed}, v{version}, step {step}");
                match rng.random_range(0..10) {
                    // A new request.
                    0..=4 => {
                        let mut req = ProduceRequest::default()
                            .with_acks(-1)
                            .with_timeout_ms(1000);
                        if rng.random_range(0..12) == 0 {
                            req.transactional_id = Some(StrBytes::from_static_str("tx").into());
                        }
                        for t in 0..topics {
                            if rng.random_range(0..3) == 0 {
                                continue;
                            }
                            let mut topic = if version >= 13 {
                                TopicProduceData::default()
                                    .with_topic_id(uuid::Uuid::from_u128(u128::from(t) + 1))
                            } else {
                                TopicProduceData::default()
                                    .with_name(StrBytes::from_string(format!("topic-{t}")).into())
                            };
                            for p in 0..rng.random_range(1..=3) {
                                let pid = rng.random_range(5..=6);
                                let seq = seqs.entry((t, p, pid)).or_insert(0);
                                let records = (rng.random_range(0..10) != 0)
                                    .then(|| random_records(&mut rng, pid, 0, seq));
                                topic.partition_data.push(
                                    PartitionProduceData::default()
                                        .with_index(p)
                                        .with_records(records),
                                );
                            }
                            req.topic_data.push(topic);
                        }
                        let mut buf = BytesMut::new();
                        RequestHeader::default()
                            .with_request_api_key(ApiKey::Produce as i16)
                            .with_request_api_version(version)
                            .with_correlation_id(step)
                            .encode(&mut buf, ApiKey::Produce.request_header_version(version))
                            .unwrap();
                        req.encode(&mut buf, version).unwrap();
                        sent.push(codec::frame_with_length(buf));
                    }
                    // A re-send of an earlier request.
                    5..=6 if !sent.is_empty() => {
                        let f = sent[rng.random_range(0..sent.len())].clone();
                        sent.push(f);
                    }
                    // An answer, or a lost one.
                    7..=9 if !pending.is_empty() => {
                        let (hn, ho, out) = pending.remove(rng.random_range(0..pending.len()));
                        if rng.random_range(0..6) == 0 {
                            new.abandon(&hn);
                            old.abandon(&ho);
                            continue;
                        }
                        let answer = if hn.substituted() {
                            Bytes::from_static(&[0; 8])
                        } else {
                            random_answer(&mut rng, version, &out)
                        };
                        let a = new.on_produce_response(&route, hn, answer.clone(), version);
                        let b = old.on_produce_response(&route, ho, answer, version);
                        assert_eq!(a.unwrap(), b.unwrap(), "{ctx}: the client's answer");
                        continue;
                    }
                    _ => continue,
                }
                let f = sent.last().unwrap().clone();
                let r = new
                    .rewrite_produce(&route, BytesMut::from(&f[..]), version, &mut new_ids)
                    .await
                    .unwrap();
                let o = old
                    .rewrite_produce_decoded(&route, &f, version, &mut old_ids)
                    .await
                    .unwrap();
                if let Some(at) = &r.topic_ids {
                    // The ids' places in what is sent are those of the client's ids.
                    let body_at = codec::request_body_offset(&f, version >= 9).unwrap();
                    let w = request::walk(version, &f[body_at..]).unwrap();
                    let want: Vec<usize> = w
                        .topics
                        .iter()
                        .filter_map(|t| t.id.map(|a| a + body_at))
                        .collect();
                    assert_eq!(at, &want, "{ctx}");
                    for &a in at {
                        assert_eq!(&r.frame[a..a + 16], &f[a..a + 16], "{ctx}");
                    }
                }
                match (r.hook, o) {
                    (None, None) => {
                        seen[0] += 1;
                        assert_eq!(r.frame, f, "{ctx}: passed as it came")
                    }
                    (Some(hn), Some((out, ho))) => {
                        seen[match (hn.substituted(), hn.answers.is_empty()) {
                            (true, _) => 3,
                            (false, true) => 1,
                            (false, false) => 2,
                        }] += 1;
                        assert_eq!(r.frame, out, "{ctx}: the bytes sent upstream");
                        assert_eq!(hn, ho, "{ctx}: the hook");
                        pending.push((hn, ho, out));
                    }
                    (a, b) => panic!("{ctx}: in place {a:?}, decoded {b:?}"),
                }
            }
        }
        assert!(seen.iter().all(|&n| n > 20), "every path taken: {seen:?}");
    }
}
