//! A small Kafka client of the proxy's own, for the control topics: Metadata,
//! CreateTopics, Produce (acks=all), Fetch (long poll) and ListOffsets, on
//! connections opened by [`crate::upstream::connect`] (the cluster's TLS and SASL
//! settings, like the data path). It implements [`ControlLog`].
//!
//! One instance holds at most one connection per broker and is used by one task at a
//! time; a long-polling reader and a writer use separate instances. Any error drops
//! the connections and leader cache: the next call starts from the bootstrap servers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::log::{ControlLog, Entry, Part};
use crate::cluster::Cluster;
use crate::codec;
use crate::codec::bounds::Bounded;
use crate::connection::{Broker, Connection};
use crate::upstream::UpstreamStream;

/// Names and retention of the two topics (from `control:` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    pub control: String,
    pub fleet: String,
    /// retention.ms of the fleet topic (reports and votes).
    pub fleet_retention: Duration,
}

impl Topics {
    fn of(&self, part: Part) -> (&str, i32) {
        match part {
            Part::Decisions => (&self.control, 0),
            Part::Reports => (&self.fleet, 0),
            Part::Votes => (&self.fleet, 1),
        }
    }
}

/// Error codes the client handles by name.
mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
}

/// Highest version of each API this client speaks (chosen so that every request still
/// names topics rather than topic ids).
fn our_max(api: ApiKey) -> i16 {
    match api {
        ApiKey::Metadata => 12,
        ApiKey::Produce => 9,
        // 11: the last version without tagged fields; tansu 0.6 answers v12 with a
        // tagged field that v12 does not define.
        ApiKey::Fetch => 11,
        ApiKey::ListOffsets => 7,
        ApiKey::CreateTopics => 7,
        _ => 0,
    }
}

/// Bytes sent and received by the control plane (for the benchmark's traffic figures).
pub use crate::connection::Traffic;

/// One connection of the control client: the proxy's connection primitive (framing,
/// bounded decoding, versions asked once), renewed before a KIP-368 session lifetime
/// runs out.
struct Conn {
    broker: Broker<Connection<UpstreamStream>>,
    renew_at: Option<Instant>,
}

impl Conn {
    async fn open(
        cluster: &Cluster,
        addrs: &[String],
        timeout: Duration,
        traffic: Arc<Traffic>,
    ) -> anyhow::Result<Conn> {
        let c = crate::upstream::connect(cluster, addrs, timeout).await?;
        let renew_at = crate::sasl::reauth_delay(c.session_lifetime_ms).map(|d| Instant::now() + d);
        let mut conn = Connection::new(c.stream, "kafka-sidecar-control", cluster.max_frame())
            .with_first_correlation_id(1);
        conn.count_traffic(traffic);
        let mut broker = Broker::new(conn);
        broker.offered().await?;
        Ok(Conn { broker, renew_at })
    }

    fn expired(&self) -> bool {
        self.renew_at.is_some_and(|t| Instant::now() >= t)
    }

    /// One request at the newest version both sides speak (at most [`our_max`]).
    async fn call<Req: Encodable, Resp: Bounded>(
        &mut self,
        api: ApiKey,
        req: &Req,
    ) -> anyhow::Result<(Resp, i16)> {
        self.broker.call_newest(api, our_max(api), req).await
    }
}

/// A health probe: a fresh connection to one of the cluster's *bootstrap servers*
/// (TCP, TLS, SASL, ApiVersions) and a Metadata request. On failure, the stage that
/// failed (`tcp`, `timeout`, `tls`, `sasl`, `metadata`) and the error.
pub async fn probe(cluster: &Cluster, timeout: Duration) -> Result<(), (String, String)> {
    let servers = cluster.config().bootstrap_servers.clone();
    let r = tokio::time::timeout(timeout, async {
        let mut conn = Conn::open(cluster, &servers, timeout, Arc::default())
            .await
            .map_err(|e| {
                let stage = match e.downcast_ref::<crate::upstream::ConnectError>() {
                    Some(ce) => match ce.reason {
                        crate::upstream::FailReason::Tls => "tls",
                        crate::upstream::FailReason::Sasl => "sasl",
                        crate::upstream::FailReason::Timeout => "timeout",
                        _ => "tcp",
                    },
                    None => "metadata",
                };
                (stage.to_string(), format!("{e:#}"))
            })?;
        let req = MetadataRequest::default().with_topics(Some(vec![]));
        let (_md, _): (MetadataResponse, _) = conn
            .call(ApiKey::Metadata, &req)
            .await
            .map_err(|e| ("metadata".to_string(), format!("{e:#}")))?;
        Ok(())
    })
    .await;
    r.unwrap_or_else(|_| Err(("timeout".into(), format!("no answer within {timeout:?}"))))
}

/// [`ControlLog`] on a real cluster.
pub struct KafkaControlLog {
    cluster: Arc<Cluster>,
    topics: Topics,
    /// Create the topics when missing (sidecars try too; without the Create ACL the
    /// attempt fails harmlessly and they wait for an operator or arbiter to do it).
    create: bool,
    timeout: Duration,
    conns: HashMap<i32, Conn>,
    /// (topic, partition) -> (leader node id, address).
    leaders: HashMap<(String, i32), (i32, String)>,
    pub traffic: Arc<Traffic>,
}

impl KafkaControlLog {
    pub fn new(cluster: Arc<Cluster>, topics: Topics, create: bool, timeout: Duration) -> Self {
        KafkaControlLog {
            cluster,
            topics,
            create,
            timeout,
            conns: HashMap::new(),
            leaders: HashMap::new(),
            traffic: Arc::new(Traffic::default()),
        }
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn with_traffic(mut self, t: Arc<Traffic>) -> Self {
        self.traffic = t;
        self
    }

    /// Forgets every connection (after an error, or when the cluster's settings change).
    pub fn reset(&mut self) {
        self.conns.clear();
        self.leaders.clear();
    }

    /// A connection to any broker (for Metadata and CreateTopics).
    async fn any_conn(&mut self) -> anyhow::Result<&mut Conn> {
        self.conns.retain(|_, c| !c.expired());
        if let Some(&id) = self.conns.keys().next() {
            return Ok(self.conns.get_mut(&id).expect("present"));
        }
        let conn = Conn::open(
            &self.cluster,
            &self.cluster.candidates(None),
            self.timeout,
            self.traffic.clone(),
        )
        .await?;
        // -1: "a bootstrap connection", replaced by the leader's own key when it is one.
        Ok(self.conns.entry(-1).or_insert(conn))
    }

    /// The leader of (topic, partition), creating the topics if allowed and missing.
    async fn leader(&mut self, topic: &str, partition: i32) -> anyhow::Result<i32> {
        if let Some((id, _)) = self.leaders.get(&(topic.to_string(), partition)) {
            return Ok(*id);
        }
        for attempt in 0..2 {
            let md = self.metadata().await?;
            let t = md
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic));
            let missing = match t {
                None => true,
                Some(t) => t.error_code == code::UNKNOWN_TOPIC_OR_PARTITION,
            };
            if missing {
                if attempt == 0 && self.create {
                    self.create_topics().await?;
                    continue;
                }
                bail!(
                    "topic '{topic}' does not exist on cluster '{}'",
                    self.cluster.name()
                );
            }
            let t = t.expect("present");
            if t.error_code != code::NONE {
                bail!("metadata for '{topic}': error code {}", t.error_code);
            }
            let p = t
                .partitions
                .iter()
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| anyhow!("topic '{topic}' has no partition {partition}"))?;
            let leader = p.leader_id.0;
            let b = md
                .brokers
                .iter()
                .find(|b| b.node_id.0 == leader)
                .ok_or_else(|| anyhow!("'{topic}'/{partition} has no leader (node {leader})"))?;
            let addr = if b.host.contains(':') {
                format!("[{}]:{}", b.host, b.port)
            } else {
                format!("{}:{}", b.host, b.port)
            };
            self.leaders
                .insert((topic.to_string(), partition), (leader, addr));
            return Ok(leader);
        }
        bail!(
            "topic '{topic}' missing after creation on cluster '{}'",
            self.cluster.name()
        )
    }

    async fn metadata(&mut self) -> anyhow::Result<MetadataResponse> {
        let topics = [self.topics.control.as_str(), self.topics.fleet.as_str()];
        let req = codec::metadata_request_for(topics);
        let conn = self.any_conn().await?;
        let (md, _): (MetadataResponse, _) = conn.call(ApiKey::Metadata, &req).await?;
        Ok(md)
    }

    async fn create_topics(&mut self) -> anyhow::Result<()> {
        let cfg = |k: &str, v: String| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.into()))
                .with_value(Some(StrBytes::from_string(v)))
        };
        let topic = |name: &str, partitions: i32, retention_ms: i64| {
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.into())))
                .with_num_partitions(partitions)
                .with_replication_factor(-1)
                .with_configs(vec![
                    cfg("cleanup.policy", "delete".into()),
                    cfg("retention.ms", retention_ms.to_string()),
                ])
        };
        let req = CreateTopicsRequest::default()
            .with_topics(vec![
                // Decisions are few and must outlive any sidecar: kept forever.
                topic(&self.topics.control, 1, -1),
                topic(
                    &self.topics.fleet,
                    2,
                    self.topics.fleet_retention.as_millis() as i64,
                ),
            ])
            .with_timeout_ms(self.timeout.as_millis() as i32);
        let name = self.cluster.name().to_string();
        let conn = self.any_conn().await?;
        let (resp, _): (CreateTopicsResponse, _) = conn.call(ApiKey::CreateTopics, &req).await?;
        for t in &resp.topics {
            match t.error_code {
                code::NONE => {
                    tracing::info!(cluster = %name, topic = %t.name.as_str(), "created control topic")
                }
                code::TOPIC_ALREADY_EXISTS => {}
                e => bail!(
                    "cannot create topic '{}' on cluster '{name}': error code {e}{}",
                    t.name.as_str(),
                    t.error_message
                        .as_ref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ),
            }
        }
        Ok(())
    }

    /// The leader's connection for `part`.
    async fn leader_conn(&mut self, part: Part) -> anyhow::Result<(&mut Conn, String, i32)> {
        let (topic, partition) = self.topics.of(part);
        let (topic, partition) = (topic.to_string(), partition);
        let leader = self.leader(&topic, partition).await?;
        self.conns.retain(|_, c| !c.expired());
        if !self.conns.contains_key(&leader) {
            let addr = self.leaders[&(topic.clone(), partition)].1.clone();
            let conn =
                Conn::open(&self.cluster, &[addr], self.timeout, self.traffic.clone()).await?;
            self.conns.insert(leader, conn);
            // The bootstrap connection is no longer needed once a leader's is open.
            self.conns.remove(&-1);
        }
        Ok((
            self.conns.get_mut(&leader).expect("present"),
            topic,
            partition,
        ))
    }

    /// Runs `f`; on error forgets connections so the next call starts afresh.
    fn failed<T>(&mut self, r: anyhow::Result<T>) -> anyhow::Result<T> {
        if r.is_err() {
            self.reset();
        }
        r
    }

    async fn append_inner(&mut self, part: Part, values: &[Bytes]) -> anyhow::Result<i64> {
        let now = crate::cluster::now_ms();
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: now,
                key: None,
                value: Some(v.clone()),
                headers: Default::default(),
            })
            .collect();
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )?;
        let timeout_ms = self.timeout.as_millis() as i32;
        let (conn, topic, partition) = self.leader_conn(part).await?;
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(timeout_ms)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch.freeze()))])]);
        let (resp, _): (ProduceResponse, _) = conn.call(ApiKey::Produce, &req).await?;
        let p = resp
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .find(|p| p.index == partition)
            .ok_or_else(|| anyhow!("produce response without partition {partition}"))?;
        if p.error_code != code::NONE {
            bail!(
                "produce to '{topic}'/{partition} failed: error code {}",
                p.error_code
            );
        }
        Ok(p.base_offset)
    }

    async fn read_inner(
        &mut self,
        part: Part,
        from: i64,
        wait: Duration,
    ) -> anyhow::Result<Vec<Entry>> {
        let (conn, topic, partition) = self.leader_conn(part).await?;
        let req = fetch_request(&topic, partition, from, wait);
        let (resp, _): (FetchResponse, _) = conn.call(ApiKey::Fetch, &req).await?;
        if resp.error_code != code::NONE {
            bail!("fetch '{topic}': error code {}", resp.error_code);
        }
        let p = resp
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| {
                anyhow!(
                    "fetch response without partition {partition} of '{topic}' (it names {} topics)",
                    resp.responses.len()
                )
            })?;
        match p.error_code {
            code::NONE => {}
            code::OFFSET_OUT_OF_RANGE => {
                bail!("offset {from} of '{topic}'/{partition} is out of range")
            }
            code::NOT_LEADER_OR_FOLLOWER | code::LEADER_NOT_AVAILABLE => {
                bail!("leader of '{topic}'/{partition} moved")
            }
            e => bail!("fetch '{topic}'/{partition}: error code {e}"),
        }
        let mut out = Vec::new();
        if let Some(records) = &p.records {
            decode_batches(records.clone(), from, &mut out)?;
        }
        Ok(out)
    }

    async fn list_offset(&mut self, part: Part, timestamp: i64) -> anyhow::Result<i64> {
        let (conn, topic, partition) = self.leader_conn(part).await?;
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)])]);
        let (resp, _): (ListOffsetsResponse, _) = conn.call(ApiKey::ListOffsets, &req).await?;
        let p = resp
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| anyhow!("list offsets response without partition {partition}"))?;
        if p.error_code != code::NONE {
            bail!(
                "list offsets '{topic}'/{partition}: error code {}",
                p.error_code
            );
        }
        Ok(p.offset)
    }
}

/// A full (sessionless) fetch of one partition from `from`, waiting up to `wait`.
///
/// `max_wait_ms` is never 0. Kafka reads 0 as "answer at once", but tansu's fetch
/// handler (upstream source) reads partitions only inside a loop that runs while
/// `elapsed < max_wait && bytes < min_bytes`: a broker built so answers a 0 wait with
/// no topics at all ("fetch response without partition 0"). Every read up to a known
/// end (`read_to_end`: the `failover` and `fleet` commands) asks for no wait, so those
/// commands failed on such a broker, while sidecars, whose reads after the first one
/// long-poll, recovered. With 1 ms, Kafka and tansu answer at once when records are
/// there, which they are below a known end.
fn fetch_request(topic: &str, partition: i32, from: i64, wait: Duration) -> FetchRequest {
    let max_wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(from)
                .with_partition_max_bytes(1 << 20)])])
}

/// Decodes the complete record batches in `records` (a fetch may end in a partial one),
/// keeping records at offsets `>= from`. Counts from the wire are checked against the
/// bytes present before anything is allocated from them.
fn decode_batches(mut records: Bytes, from: i64, out: &mut Vec<Entry>) -> anyhow::Result<()> {
    // base offset (8) + batch length (4); the record count sits at byte 57.
    const COUNT_AT: usize = 57;
    while records.len() >= 12 {
        let batch_len = i32::from_be_bytes(records[8..12].try_into().expect("4 bytes"));
        let Ok(batch_len) = usize::try_from(batch_len) else {
            bail!("negative record batch length");
        };
        let total = 12 + batch_len;
        if records.len() < total {
            break; // a partial batch at the end of a fetch
        }
        let mut batch = records.split_to(total);
        if batch.len() < COUNT_AT + 4 {
            bail!("record batch too short");
        }
        let count = i32::from_be_bytes(batch[COUNT_AT..COUNT_AT + 4].try_into().expect("4 bytes"));
        // Every record takes at least 7 bytes on the wire.
        if count < 0 || count as usize > batch_len / 7 {
            bail!("record batch claims {count} records in {batch_len} bytes");
        }
        let set = RecordBatchDecoder::decode(&mut batch)
            .context("cannot decode a control record batch")?;
        for r in set.records {
            if r.offset >= from && !r.control {
                if let Some(value) = r.value {
                    out.push(Entry {
                        offset: r.offset,
                        timestamp: r.timestamp,
                        value,
                    });
                }
            }
        }
        let _ = batch.remaining();
    }
    Ok(())
}

impl ControlLog for KafkaControlLog {
    async fn append(&mut self, part: Part, values: &[Bytes]) -> anyhow::Result<i64> {
        let r = self.append_inner(part, values).await;
        self.failed(r)
    }

    async fn read(&mut self, part: Part, from: i64, wait: Duration) -> anyhow::Result<Vec<Entry>> {
        let r = tokio::time::timeout(wait + self.timeout, self.read_inner(part, from, wait))
            .await
            .unwrap_or_else(|_| Err(anyhow!("fetch timed out")));
        self.failed(r)
    }

    async fn bounds(&mut self, part: Part) -> anyhow::Result<(i64, i64)> {
        let limit = self.timeout * 2;
        let r = async {
            let start = self.list_offset(part, -2).await?;
            let end = self.list_offset(part, -1).await?;
            Ok((start, end))
        };
        let r = tokio::time::timeout(limit, r)
            .await
            .unwrap_or_else(|_| Err(anyhow!("list offsets timed out")));
        self.failed(r)
    }

    async fn offset_for_time(&mut self, part: Part, ts_ms: i64) -> anyhow::Result<i64> {
        let limit = self.timeout * 2;
        let r = tokio::time::timeout(limit, async {
            let o = self.list_offset(part, ts_ms).await?;
            // -1: no record that recent; the end is the answer.
            if o < 0 {
                self.list_offset(part, -1).await
            } else {
                Ok(o)
            }
        })
        .await
        .unwrap_or_else(|_| Err(anyhow!("list offsets timed out")));
        self.failed(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: i64, values: &[&str]) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: -1,
                timestamp: 5,
                key: None,
                value: Some(Bytes::from(v.to_string())),
                headers: Default::default(),
            })
            .collect();
        let mut b = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut b,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        b.freeze()
    }

    #[test]
    fn decodes_whole_batches_and_stops_at_a_partial_one() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(10, &["a", "b"]));
        all.extend_from_slice(&batch(12, &["c"]));
        let whole = all.len();
        all.extend_from_slice(&batch(13, &["d"])[..20]);
        let mut out = vec![];
        decode_batches(all.freeze(), 11, &mut out).unwrap();
        let got: Vec<(i64, &[u8])> = out.iter().map(|e| (e.offset, &e.value[..])).collect();
        assert_eq!(got, vec![(11, &b"b"[..]), (12, &b"c"[..])]);
        assert!(whole > 0);
    }

    #[test]
    fn a_fetch_never_asks_for_a_zero_wait() {
        let wait_of = |w: Duration| fetch_request("t", 0, 7, w).max_wait_ms;
        assert_eq!(wait_of(Duration::ZERO), 1);
        assert_eq!(wait_of(Duration::from_millis(250)), 250);
        assert_eq!(wait_of(Duration::from_secs(u64::MAX)), i32::MAX);
        let req = fetch_request("t", 1, 7, Duration::ZERO);
        let p = &req.topics[0].partitions[0];
        assert_eq!((p.partition, p.fetch_offset, req.min_bytes), (1, 7, 1));
    }

    #[test]
    fn a_hostile_record_count_is_refused_before_allocation() {
        let mut b = BytesMut::from(&batch(0, &["x"])[..]);
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let mut out = vec![];
        let err = decode_batches(b.freeze(), 0, &mut out).unwrap_err();
        assert!(format!("{err}").contains("claims"), "{err}");
    }
}
