//! The data path end to end: real rdkafka clients through the proxy to librdkafka's
//! mock cluster (three brokers).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::harness::TestProxy;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

fn consumer(bootstrap: &str, group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer")
}

async fn produce_range(p: &FutureProducer, topic: &str, range: std::ops::Range<u32>) {
    let records = range
        .map(|i| (None, Some(i.to_string()), format!("m-{i}").into_bytes()))
        .collect();
    send_all(p, topic, records).await;
}

/// Sends (partition, key, payload) records at once and waits until each is acknowledged.
async fn send_all(
    p: &FutureProducer,
    topic: &str,
    records: Vec<(Option<i32>, Option<String>, Vec<u8>)>,
) {
    let sends = records.into_iter().map(|(partition, key, payload)| {
        let p = p.clone();
        let topic = topic.to_string();
        async move {
            let mut r = FutureRecord::to(&topic).payload(&payload);
            if let Some(k) = &key {
                r = r.key(k);
            }
            if let Some(part) = partition {
                r = r.partition(part);
            }
            p.send(r, Duration::from_secs(30)).await.map_err(|(e, _)| e)
        }
    });
    for r in futures::future::join_all(sends).await {
        r.expect("delivery through the proxy");
    }
}

async fn consume_n(c: &StreamConsumer, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < n {
            let m = c.recv().await.expect("consume through the proxy");
            seen.insert(String::from_utf8_lossy(m.payload().unwrap()).into_owned());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} messages consumed", seen.len()));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_group_and_broker_down_on_three_broker_mock() {
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic("orders", 6, 3).unwrap();
    let upstream = mock.bootstrap_servers();
    let tp = TestProxy::start(&[("north", upstream.clone())], "north").await;

    let p = producer(&tp.bootstrap, &[]);
    produce_range(&p, "orders", 0..100).await;

    // The client only ever learns proxy addresses.
    let md = p
        .client()
        .fetch_metadata(Some("orders"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.brokers().len(), 3);
    for b in md.brokers() {
        assert_eq!(b.host(), "127.0.0.1");
        let port = b.port() as u16;
        assert_eq!(
            port,
            tp.ports.broker_base + b.id() as u16,
            "broker {} on its node port",
            b.id()
        );
        assert!(
            !upstream.contains(&format!(":{port}")),
            "leaked upstream port {port}"
        );
    }

    // A broker goes down mid-run; leadership moves to broker 1 and the client finishes.
    mock.broker_down(2).unwrap();
    for part in 0..6 {
        mock.partition_leader("orders", part, Some(1)).unwrap();
    }
    produce_range(&p, "orders", 100..200).await;

    let c = consumer(&tp.bootstrap, "g-orders");
    c.subscribe(&["orders"]).unwrap();
    let seen = consume_n(&c, 200).await;
    let expected: BTreeSet<String> = (0..200).map(|i| format!("m-{i}")).collect();
    assert_eq!(seen, expected);
    // The group coordinator was found through the proxy too.
    let assignment = c.assignment().unwrap();
    assert_eq!(assignment.count(), 6);
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_does_not_wedge_correlation_tracking() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("fire", 1, 1).unwrap();
    let tp = TestProxy::start(&[("north", mock.bootstrap_servers())], "north").await;
    let p = producer(&tp.bootstrap, &[("acks", "0"), ("linger.ms", "0")]);
    for i in 0..50 {
        let payload = format!("m-{i}");
        p.send(
            FutureRecord::to("fire").payload(&payload).key("k"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    // A request with a response on the same connections still gets its answer.
    let md = p
        .client()
        .fetch_metadata(Some("fire"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 1);
    let c = consumer(&tp.bootstrap, "g-fire");
    c.subscribe(&["fire"]).unwrap();
    assert_eq!(consume_n(&c, 50).await.len(), 50);
    tp.proxy.shutdown().await;
}

/// ApiVersions request frame with the given version and correlation id.
fn api_versions_request(version: i16, corr: i32) -> Vec<u8> {
    let mut body = vec![];
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&corr.to_be_bytes());
    body.extend_from_slice(&(-1i16).to_be_bytes());
    if version >= 3 {
        // header tagged fields, client software name/version (compact strings), body tags
        body.extend_from_slice(&[0, 2, b't', 2, b'1', 0]);
    }
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend(body);
    f
}

async fn read_frame(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_newer_than_the_proxy_gets_v0_unsupported_version() {
    let mock = MockCluster::new(1).unwrap();
    let tp = TestProxy::start(&[("north", mock.bootstrap_servers())], "north").await;
    let mut s = tokio::net::TcpStream::connect(&tp.bootstrap).await.unwrap();
    s.write_all(&api_versions_request(99, 7)).await.unwrap();
    let body = read_frame(&mut s).await;
    assert_eq!(
        i32::from_be_bytes(body[0..4].try_into().unwrap()),
        7,
        "correlation id"
    );
    assert_eq!(
        i16::from_be_bytes(body[4..6].try_into().unwrap()),
        35,
        "UNSUPPORTED_VERSION"
    );
    // The same connection then negotiates normally at a version the mock broker speaks.
    s.write_all(&api_versions_request(1, 8)).await.unwrap();
    let body = read_frame(&mut s).await;
    assert_eq!(i32::from_be_bytes(body[0..4].try_into().unwrap()), 8);
    assert_eq!(
        i16::from_be_bytes(body[4..6].try_into().unwrap()),
        0,
        "no error at v1"
    );
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_close_only_that_connection() {
    let mock = MockCluster::new(1).unwrap();
    let tp = TestProxy::start(&[("north", mock.bootstrap_servers())], "north").await;
    for bad in [
        i32::MAX.to_be_bytes().to_vec(),
        (-1i32).to_be_bytes().to_vec(),
        vec![0, 0, 0, 2, 0, 1],
    ] {
        let mut s = tokio::net::TcpStream::connect(&tp.bootstrap).await.unwrap();
        s.write_all(&bad).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("connection closed promptly")
            .unwrap_or(0);
        assert_eq!(n, 0, "no reply to a bad frame {bad:?}, just a close");
    }
    // The proxy still serves well-formed clients.
    let mut s = tokio::net::TcpStream::connect(&tp.bootstrap).await.unwrap();
    s.write_all(&api_versions_request(1, 1)).await.unwrap();
    let body = read_frame(&mut s).await;
    assert_eq!(i16::from_be_bytes(body[4..6].try_into().unwrap()), 0);
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_closes_the_client_promptly_and_proxy_survives() {
    // Port 1 on loopback: nothing listens there.
    let tp = TestProxy::start(&[("north", "127.0.0.1:1".to_string())], "north").await;
    let mut s = tokio::net::TcpStream::connect(&tp.bootstrap).await.unwrap();
    s.write_all(&api_versions_request(3, 1)).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("closed within the connect timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let (ready, why) = tp.proxy.shared.readiness();
    assert!(
        !ready,
        "not ready while the active cluster is unreachable: {why}"
    );
    // Still accepting.
    assert!(tokio::net::TcpStream::connect(&tp.bootstrap).await.is_ok());
    tp.proxy.shutdown().await;
}

/// 100 KiB records whose bytes say which record they are (a shifted or torn copy
/// would not match).
fn big_payload(i: u32) -> Vec<u8> {
    let mut v = format!("rec-{i:05}-").into_bytes();
    v.extend(
        (0..100 * 1024u32).map(|j| (j.wrapping_mul(31) ^ i.wrapping_mul(2_654_435_761)) as u8),
    );
    v
}

/// Large Fetch answers stream through, their record batches spliced (moved socket to
/// socket inside the kernel, never read by the proxy): every record arrives whole, in
/// order, and the splice path was taken (its counter moved). The mock keeps ~5 MB per
/// partition, so 2 × 40 records of 100 KiB are all still there to read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_fetch_answers_are_spliced_and_arrive_intact() {
    const C: &str = "splice_north";
    kafka_sidecar::admin::install_recorder().expect("metrics recorder");
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("big", 2, 1).unwrap();
    let tp = TestProxy::start(&[(C, mock.bootstrap_servers())], C).await;
    let p = producer(&tp.bootstrap, &[("linger.ms", "20")]);
    let records = (0..80u32)
        .map(|i| (Some((i % 2) as i32), None, big_payload(i)))
        .collect();
    send_all(&p, "big", records).await;

    let c: rdkafka::consumer::StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &tp.bootstrap)
        .set("group.id", "g-big")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for part in 0..2 {
        tpl.add_partition_offset("big", part, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut next = [0u32, 1];
    tokio::time::timeout(Duration::from_secs(60), async {
        while next != [80, 81] {
            let m = c.recv().await.expect("consume through the proxy");
            let part = m.partition() as usize;
            let want = big_payload(next[part]);
            assert!(
                m.payload() == Some(&want[..]),
                "partition {part}: record at offset {} is not record {}",
                m.offset(),
                next[part]
            );
            next[part] += 2;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("consumed up to records {next:?} of 80"));
    let spliced = common::harness::metric(
        "kafka_sidecar_bytes_spliced_total",
        &[("cluster", C), ("direction", "upstream_to_client")],
    );
    assert!(
        spliced > 1_000_000.0,
        "record batches were spliced, not copied: {spliced} bytes"
    );
    tp.proxy.shutdown().await;
}
