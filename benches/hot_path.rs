//! Criterion micro-benchmarks of the proxy's hot paths.
//!
//! `cargo bench --bench hot_path` (add `-- --quick` for a short run).
//!
//! - frame header parse: `codec::peek_request` and `codec::produce_acks` on a Produce v9
//!   (flexible) and v7 frame;
//! - pass-through relay of a produce frame: `codec::FrameReader` over an in-memory
//!   reader into `codec::write_frames` to a sink, 100 B and 100 KiB records, one frame
//!   at a time and a burst of 64;
//! - Metadata response rewrite: `rewrite::rewrite_response` on a 100-broker,
//!   10,000-partition Metadata v12 response;
//! - a Produce request and its answer through producer identity and topic identity, as
//!   `intercept` runs them, at generation 0 and after a switch (an idempotent producer's
//!   batches re-sequenced: batch headers patched in place with a fresh CRC-32C, the
//!   request walked once; the answer decoded, sequenced, re-encoded): one partition of
//!   100 B and of 100 KiB (v9, topics by name), 4 topics x 4 partitions x 16 KiB (v13,
//!   topics by id); also printed first as the thread's CPU time per request, steadier than
//!   wall time on a shared machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, MetadataResponse, ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use kafka_sidecar::codec::{self, FrameReader};
use kafka_sidecar::rewrite::{self, NodeDirectory};

/// Counts heap allocations, to check that relaying a frame allocates nothing.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations per relayed frame in the steady state of the codec's pass-through
/// path (read, peek, acks, batch, write), over 10,000 back-to-back Produce frames.
fn allocations_per_frame(record_bytes: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let one = produce_frame(9, record_bytes);
    let frames = 10_000usize;
    let mut input = Vec::with_capacity(one.len() * frames);
    for _ in 0..frames {
        input.extend_from_slice(&one);
    }
    rt.block_on(async {
        let mut reader = FrameReader::new(&input[..], 100 << 20, 8);
        let mut sink = tokio::io::sink();
        let mut batch: Vec<Bytes> = Vec::with_capacity(64);
        let mut n = 0usize;
        let mut before = 0;
        while let Some(frame) = reader.next_frame().await.expect("frame") {
            n += 1;
            if n == 100 {
                // Warmed up: the read buffer and the batch exist.
                before = ALLOCATIONS.load(Ordering::Relaxed);
            }
            let peek = codec::peek_request(&frame);
            black_box(codec::produce_acks(&frame, peek.api_version));
            batch.push(frame);
            if !reader.has_buffered() || batch.len() == 64 {
                codec::write_frames(&mut sink, &mut batch)
                    .await
                    .expect("write");
            }
        }
        (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / (n - 100) as f64
    })
}

/// A Produce request frame (length prefix included) with one partition carrying
/// `record_bytes` of opaque record-batch bytes.
fn produce_frame(version: i16, record_bytes: usize) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("rdkafka")));
    let partition = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(Bytes::from(vec![0xabu8; record_bytes])));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("bench-topic")))
        .with_partition_data(vec![partition]);
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![topic]);
    let mut body = BytesMut::new();
    header
        .encode(&mut body, ApiKey::Produce.request_header_version(version))
        .expect("header");
    req.encode(&mut body, version).expect("produce");
    codec::frame_with_length(body)
}

/// A Metadata response frame with `brokers` brokers and `topics` × `partitions` partitions
/// (replication factor 3).
fn metadata_frame(version: i16, brokers: i32, topics: i32, partitions: i32) -> Bytes {
    let mut m = MetadataResponse::default();
    for id in 0..brokers {
        m.brokers.push(
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(format!(
                    "b-{id}.kafka-prod.eu-west-1.example.internal"
                )))
                .with_port(9092)
                .with_rack(Some(StrBytes::from_string(format!("zone-{}", id % 3)))),
        );
    }
    m.cluster_id = Some(StrBytes::from_static_str("bench-cluster-id"));
    m.controller_id = BrokerId(0);
    for t in 0..topics {
        let mut topic = MetadataResponseTopic::default().with_name(Some(TopicName(
            StrBytes::from_string(format!("service.events.topic-{t:04}")),
        )));
        for p in 0..partitions {
            let leader = (t * partitions + p) % brokers;
            let replicas: Vec<BrokerId> =
                (0..3).map(|r| BrokerId((leader + r) % brokers)).collect();
            topic.partitions.push(
                MetadataResponsePartition::default()
                    .with_partition_index(p)
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(7)
                    .with_replica_nodes(replicas.clone())
                    .with_isr_nodes(replicas),
            );
        }
        m.topics.push(topic);
    }
    let mut body = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(99)
        .encode(&mut body, ApiKey::Metadata.response_header_version(version))
        .expect("header");
    m.encode(&mut body, version).expect("metadata");
    codec::frame_with_length(body)
}

/// Like the proxy's directory: every node id is served on localhost at base + id.
struct LocalDirectory {
    host: StrBytes,
}

impl NodeDirectory for LocalDirectory {
    fn local_endpoint(&self, node_id: i32, _host: &str, _port: i32) -> (StrBytes, i32) {
        (self.host.clone(), 19_100 + node_id)
    }
}

fn header_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("header_parse");
    for version in [7i16, 9] {
        let frame = produce_frame(version, 100);
        g.bench_function(format!("peek_request/produce_v{version}"), |b| {
            b.iter(|| codec::peek_request(black_box(&frame)))
        });
        g.bench_function(format!("produce_acks/produce_v{version}"), |b| {
            b.iter(|| codec::produce_acks(black_box(&frame), black_box(version)))
        });
    }
    g.finish();
}

fn relay(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("relay_produce");
    for (label, record_bytes) in [("100B", 100usize), ("100KiB", 100 * 1024)] {
        for burst in [1usize, 64] {
            let one = produce_frame(9, record_bytes);
            let mut input = Vec::with_capacity(one.len() * burst);
            for _ in 0..burst {
                input.extend_from_slice(&one);
            }
            g.throughput(Throughput::Bytes(input.len() as u64));
            g.bench_function(format!("{label}/burst{burst}"), |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let mut reader = FrameReader::new(black_box(&input[..]), 100 << 20, 8);
                        let mut sink = tokio::io::sink();
                        let mut batch: Vec<Bytes> = Vec::with_capacity(64);
                        while let Some(frame) = reader.next_frame().await.expect("frame") {
                            let peek = codec::peek_request(&frame);
                            black_box(codec::produce_acks(&frame, peek.api_version));
                            batch.push(frame);
                            if !reader.has_buffered() || batch.len() == 64 {
                                codec::write_frames(&mut sink, &mut batch)
                                    .await
                                    .expect("write");
                            }
                        }
                    })
                })
            });
        }
    }
    g.finish();
}

fn metadata_rewrite(c: &mut Criterion) {
    let version = 12;
    let frame = metadata_frame(version, 100, 100, 100);
    let dir = LocalDirectory {
        host: StrBytes::from_static_str("127.0.0.1"),
    };
    let mut g = c.benchmark_group("metadata_rewrite");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("100_brokers_10k_partitions_v12", |b| {
        b.iter_batched(
            || frame.clone(),
            |f| {
                rewrite::rewrite_response(ApiKey::Metadata as i16, version, f, &dir)
                    .expect("rewrite")
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A Fetch v17 response frame: 10 topics × 10 partitions of 1 KiB records, no node
/// endpoints (the common case).
fn fetch_frame(version: i16) -> Bytes {
    use kafka_protocol::messages::{fetch_response, FetchResponse};
    let mut m = FetchResponse::default();
    for _ in 0..10 {
        let mut topic = fetch_response::FetchableTopicResponse::default();
        for p in 0..10 {
            topic.partitions.push(
                fetch_response::PartitionData::default()
                    .with_partition_index(p)
                    .with_high_watermark(1_000_000)
                    .with_last_stable_offset(1_000_000)
                    .with_records(Some(Bytes::from(vec![0x5a; 1024]))),
            );
        }
        m.responses.push(topic);
    }
    fetch_response_frame(version, &m)
}

/// A Fetch response frame (header v1, correlation id 99).
fn fetch_response_frame(version: i16, m: &kafka_protocol::messages::FetchResponse) -> Bytes {
    let mut body = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(99)
        .encode(&mut body, ApiKey::Fetch.response_header_version(version))
        .expect("header");
    m.encode(&mut body, version).expect("fetch");
    codec::frame_with_length(body)
}

/// The check every Fetch v16+ response goes through for KIP-951 node endpoints: the
/// skim the proxy does, against the full decode it replaced.
fn fetch_response_check(c: &mut Criterion) {
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;
    let version = 17;
    let frame = fetch_frame(version);
    let dir = LocalDirectory {
        host: StrBytes::from_static_str("127.0.0.1"),
    };
    let mut g = c.benchmark_group("fetch_v17_100_partitions_no_endpoints");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("rewrite_response (skim)", |b| {
        b.iter(|| {
            rewrite::rewrite_response(ApiKey::Fetch as i16, version, frame.clone(), &dir)
                .expect("rewrite")
        })
    });
    g.bench_function("full decode (before)", |b| {
        b.iter(|| {
            let at = codec::response_body_offset(&frame, 1).expect("header");
            let mut body = frame.slice(at..);
            FetchResponse::decode(&mut body, version).expect("decode")
        })
    });
    g.finish();
}

/// One Produce request shape of the producer-identity benchmark.
#[derive(Clone, Copy)]
struct ProduceShape {
    label: &'static str,
    version: i16,
    topics: u128,
    partitions: i32,
    record_bytes: usize,
}

const PRODUCE_SHAPES: &[ProduceShape] = &[
    ProduceShape {
        label: "v9 1x1x100B",
        version: 9,
        topics: 1,
        partitions: 1,
        record_bytes: 100,
    },
    ProduceShape {
        label: "v9 1x1x100KiB",
        version: 9,
        topics: 1,
        partitions: 1,
        record_bytes: 100 * 1024,
    },
    // Java 4.1+: topics by id, several topics and partitions per request.
    ProduceShape {
        label: "v13 4x4x16KiB",
        version: 13,
        topics: 4,
        partitions: 4,
        record_bytes: 16 * 1024,
    },
];

impl ProduceShape {
    fn bytes(&self) -> u64 {
        self.topics as u64 * self.partitions as u64 * self.record_bytes as u64
    }

    fn name(&self, t: usize) -> String {
        format!("bench-topic-{t}")
    }

    /// A Produce request whose every partition holds one idempotent batch of producer 5
    /// at sequence `seq`, with one record of `record_bytes`; topics by id from v13.
    fn request(&self, seq: i32, ids: &[uuid::Uuid]) -> Bytes {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let record = Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: 5,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: seq,
            timestamp: 0,
            key: None,
            value: Some(Bytes::from(vec![0x5au8; self.record_bytes])),
            headers: Default::default(),
            delete_horizon: false,
        };
        let mut records = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut records,
            std::slice::from_ref(&record),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("batch");
        let records = records.freeze();
        let mut req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000);
        for (t, id) in ids.iter().enumerate() {
            let mut topic = if self.version >= 13 {
                TopicProduceData::default().with_topic_id(*id)
            } else {
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(self.name(t))))
            };
            for p in 0..self.partitions {
                topic.partition_data.push(
                    PartitionProduceData::default()
                        .with_index(p)
                        .with_records(Some(records.clone())),
                );
            }
            req.topic_data.push(topic);
        }
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(self.version)
            .with_correlation_id(42)
            .encode(
                &mut body,
                ApiKey::Produce.request_header_version(self.version),
            )
            .expect("header");
        req.encode(&mut body, self.version).expect("produce");
        codec::frame_with_length(body)
    }

    /// The broker's answer (topics by the cluster's `ids` from v13): every partition
    /// written.
    fn response(&self, ids: &[uuid::Uuid]) -> Bytes {
        use kafka_protocol::messages::produce_response::{
            PartitionProduceResponse, TopicProduceResponse,
        };
        use kafka_protocol::messages::ProduceResponse;
        let mut resp = ProduceResponse::default();
        for (t, id) in ids.iter().enumerate() {
            let mut topic = if self.version >= 13 {
                TopicProduceResponse::default().with_topic_id(*id)
            } else {
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_string(self.name(t))))
            };
            for p in 0..self.partitions {
                topic.partition_responses.push(
                    PartitionProduceResponse::default()
                        .with_index(p)
                        .with_base_offset(1),
                );
            }
            resp.responses.push(topic);
        }
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(42)
            .encode(
                &mut buf,
                ApiKey::Produce.response_header_version(self.version),
            )
            .expect("header");
        resp.encode(&mut buf, self.version).expect("response");
        codec::frame_with_length(buf)
    }
}

struct CountingIds(i64);

impl kafka_sidecar::producer_identity::UpstreamProducerIds for CountingIds {
    async fn init_producer_id(&mut self) -> anyhow::Result<(i64, i16)> {
        self.0 += 1;
        Ok((self.0, 0))
    }
}

/// What the proxy does to a Produce request and its answer, as `intercept` does it:
/// producer identity, then topic ids (Produce v13) on the request; topic ids, then
/// producer identity on the answer. Generation 0 (before any switch: producer identity
/// passes, topic ids are translated) and after a switch (every batch of an idempotent
/// producer re-sequenced). Each frame owns its bytes in a buffer it shares, as the
/// relay's frames do in their read buffer (patched where they lie, no copy).
fn produce_after_switch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("produce_path");
    for shape in PRODUCE_SHAPES {
        g.throughput(Throughput::Bytes(shape.bytes()));
        for (when, generation) in [("generation 0", 0u64), ("after a switch", 1)] {
            produce_case(shape, generation, &rt, |make, run| {
                let seq = std::cell::Cell::new(0i32);
                g.bench_function(format!("{}/{when}", shape.label), |b| {
                    b.iter_batched(
                        || {
                            let s = seq.get();
                            seq.set(s + 1);
                            make(s)
                        },
                        &mut *run,
                        BatchSize::SmallInput,
                    )
                });
            });
        }
    }
    g.finish();
}

/// The same as CPU time of the thread per request (wall time on a shared machine
/// mostly measures the other processes): a batch of frames made first, then run.
fn produce_cpu_per_request() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for shape in PRODUCE_SHAPES {
        // About 1 GB of records per case, in batches of about 32 MB of frames.
        let total = (1_000_000_000 / shape.bytes()).clamp(200, 20_000) as i32;
        let batch = (32_000_000 / shape.bytes()).clamp(1, 1_000) as i32;
        for (when, generation) in [("generation 0", 0u64), ("after a switch", 1)] {
            produce_case(shape, generation, &rt, |make, run| {
                for s in 0..20 {
                    black_box(run(make(s)));
                }
                let (mut done, mut cpu) = (0, 0);
                while done < total {
                    let frames: Vec<BytesMut> = (0..batch).map(|i| make(20 + done + i)).collect();
                    let t0 = thread_cpu_ns();
                    for frame in frames {
                        black_box(run(frame));
                    }
                    cpu += thread_cpu_ns().saturating_sub(t0);
                    done += batch;
                }
                println!(
                    "produce_path/{}/{when}: {:.2} µs CPU per request and answer ({done} requests)",
                    shape.label,
                    cpu as f64 / 1e3 / f64::from(done)
                );
            });
        }
    }
}

/// CPU time of this thread so far, in ns (Linux; 0 elsewhere).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Sets up one case of [`produce_after_switch`] and hands `body` a maker of requests
/// (by sequence) and the request + answer path.
fn produce_case(
    shape: &ProduceShape,
    generation: u64,
    rt: &tokio::runtime::Runtime,
    body: impl FnOnce(&dyn Fn(i32) -> BytesMut, &mut dyn FnMut(BytesMut) -> Bytes),
) {
    use kafka_sidecar::producer_identity::{ProducerIdentities, Route};
    use kafka_sidecar::topic_identity::{translate, Epochs, TopicIds, View, Way};
    let topic_ids = TopicIds::default();
    // Each cluster has ids of its own; the client names topics by those it was shown.
    let own = |c: u128| -> Vec<uuid::Uuid> {
        (0..shape.topics)
            .map(|t| uuid::Uuid::from_u128(c * 1000 + t + 1))
            .collect()
    };
    let mut presented = vec![];
    for (c, cluster) in ["north", "west"].into_iter().enumerate() {
        presented = (0..shape.topics as usize)
            .map(|t| topic_ids.learn(cluster, &shape.name(t), own(c as u128)[t]))
            .collect();
    }
    let producers = ProducerIdentities::default();
    let cluster = if generation == 0 { "north" } else { "west" };
    let resp = shape.response(&own(generation.into()));
    let route = Route {
        cluster: std::sync::Arc::from(cluster),
        generation,
    };
    let view = View {
        ids: &topic_ids,
        cluster,
        epochs: Epochs::of_generation(generation),
    };
    let mut up = CountingIds(0);
    let flexible = ApiKey::Produce.request_header_version(shape.version) >= 2;
    let hv = ApiKey::Produce.response_header_version(shape.version);
    // As the relay reads them: each frame owns its bytes in a read buffer it shares.
    let make = |s: i32| {
        let f = shape.request(s, &presented);
        let mut buf = BytesMut::with_capacity(f.len() + 64);
        buf.extend_from_slice(&f);
        buf.extend_from_slice(&[0u8; 64]);
        buf.split_to(f.len())
    };
    let mut run = |frame: BytesMut| {
        let (out, hook) = rewrite_request(
            rt,
            &producers,
            &route,
            &view,
            frame,
            shape.version,
            flexible,
            &mut up,
        );
        black_box(out);
        let answer = resp.clone();
        let at = codec::response_body_offset(&answer, hv).expect("header");
        let answer = translate(&view, ApiKey::Produce, shape.version, Way::Up, answer, at)
            .expect("translate");
        match hook {
            Some(hook) => producers
                .on_produce_response(&route, hook, answer, shape.version)
                .expect("response"),
            None => answer,
        }
    };
    body(&make, &mut run);
}

/// The request half of [`produce_after_switch`], as `intercept::SessionFeatures::on_request`
/// does it.
#[allow(clippy::too_many_arguments)]
fn rewrite_request(
    rt: &tokio::runtime::Runtime,
    producers: &kafka_sidecar::producer_identity::ProducerIdentities,
    route: &kafka_sidecar::producer_identity::Route,
    view: &kafka_sidecar::topic_identity::View<'_>,
    frame: BytesMut,
    version: i16,
    flexible: bool,
    up: &mut CountingIds,
) -> (Bytes, Option<kafka_sidecar::producer_identity::ProduceHook>) {
    use kafka_sidecar::topic_identity::{translate, translate_ids_down, Way};
    let mut r = rt
        .block_on(producers.rewrite_produce(route, frame, version, up))
        .expect("rewrite");
    if r.hook.as_ref().is_some_and(|h| h.substituted()) {
        return (r.frame.freeze(), r.hook);
    }
    let out = match &r.topic_ids {
        Some(at) => {
            translate_ids_down(view, ApiKey::Produce, &mut r.frame, at);
            r.frame.freeze()
        }
        None => {
            let frame = r.frame.freeze();
            let at = codec::request_body_offset(&frame, flexible).expect("header");
            translate(view, ApiKey::Produce, version, Way::Down, frame, at).expect("translate")
        }
    };
    assert!(
        route.generation == 0 || r.hook.is_some(),
        "rewritten after a switch"
    );
    (out, r.hook)
}

/// A Fetch v17 response: 10 topics (by id) x 10 partitions, each with one record
/// batch of ~1 KiB (real v2 batches, so their headers' leader epochs get raised).
fn fetch_frame_by_id(version: i16) -> Bytes {
    use kafka_protocol::messages::{fetch_response, FetchResponse};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 7,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key: None,
        value: Some(Bytes::from(vec![0x5a; 1024])),
        headers: Default::default(),
    };
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        std::slice::from_ref(&record),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("batch");
    let batch = batch.freeze();
    let mut m = FetchResponse::default();
    for t in 0..10u128 {
        let mut topic = fetch_response::FetchableTopicResponse::default()
            .with_topic_id(uuid::Uuid::from_u128(t + 1));
        for p in 0..10 {
            topic.partitions.push(
                fetch_response::PartitionData::default()
                    .with_partition_index(p)
                    .with_high_watermark(1_000_000)
                    .with_last_stable_offset(1_000_000)
                    .with_records(Some(batch.clone())),
            );
        }
        m.responses.push(topic);
    }
    fetch_response_frame(version, &m)
}

/// Topic ids and leader epochs on a Fetch v17 response of 100 partitions (~100 KiB),
/// patched in place: generation 0 (ids only) and after a switch (ids, epochs, batch
/// headers). Each iteration gets a frame of its own, as the relay does (so the patch
/// needs no copy).
fn topic_identity(c: &mut Criterion) {
    use kafka_sidecar::topic_identity::{translate, Epochs, TopicIds, View, Way};
    let version = 17;
    let frame = fetch_frame_by_id(version);
    let ids = TopicIds::default();
    for t in 0..10u128 {
        ids.learn("north", &format!("topic-{t}"), uuid::Uuid::from_u128(t + 1));
    }
    let at = codec::response_body_offset(&frame, 1).expect("header");
    let mut g = c.benchmark_group("topic_identity_fetch_v17_100_partitions");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    for (label, generation) in [
        ("generation 0: ids", 0),
        ("after a switch: ids + epochs", 1),
    ] {
        let view = View {
            ids: &ids,
            cluster: "north",
            epochs: Epochs::of_generation(generation),
        };
        g.bench_function(label, |b| {
            b.iter_batched(
                || Bytes::from(frame.to_vec()),
                |f| translate(&view, ApiKey::Fetch, version, Way::Up, f, at).expect("translate"),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    header_parse,
    relay,
    metadata_rewrite,
    fetch_response_check,
    produce_after_switch,
    topic_identity
);

fn main() {
    for (label, bytes) in [("100 B", 100), ("100 KiB", 100 * 1024)] {
        println!(
            "relay_produce/{label}: {:.4} heap allocations per frame (steady state, codec path; each read-buffer refill is one)",
            allocations_per_frame(bytes)
        );
    }
    produce_cpu_per_request();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
