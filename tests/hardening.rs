//! Hardening (issue 12): no frame, burst or slow peer crashes, hangs or wedges the proxy.
//!
//! The proxy runs as its own process (the built binary) so that a crash is seen as
//! one and its memory is its own. After each scenario: the process is alive, a real
//! client (rdkafka) produces and consumes through it, and its RSS is printed next to
//! the baseline (figures, not assertions).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::harness::{port_block, MAX_NODE_ID};
use common::tools::wait_for_port;
use kafka_protocol::messages::{self, ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_sidecar::codec::{self, FrameReader};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy binary, running in front of one upstream cluster.
struct ProxyProcess {
    child: Child,
    bootstrap: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// `limits`: extra `limits:` entries, e.g. `"write_stall_timeout: 2s"`.
    fn start(upstream: &str, limits: &str) -> ProxyProcess {
        Self::start_with(upstream, limits, MAX_NODE_ID)
    }

    fn start_with(upstream: &str, limits: &str, max_node_id: u16) -> ProxyProcess {
        let ports = port_block();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        let servers: Vec<String> = upstream.split(',').map(|s| format!("\"{s}\"")).collect();
        let upstream = servers.join(", ");
        let limits = if limits.is_empty() {
            String::new()
        } else {
            format!(", {limits}")
        };
        std::fs::write(
            &config,
            format!(
                "listen: {{address: 127.0.0.1, bootstrap_port: {}, broker_port_base: {}, max_node_id: {max_node_id}}}\n\
                 active_cluster: north\nclusters:\n  north:\n    bootstrap_servers: [{upstream}]\n\
                 limits: {{connect_timeout: 5s{limits}}}\n",
                ports.bootstrap, ports.broker_base
            ),
        )
        .unwrap();
        let log = dir.path().join("proxy.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kafka-sidecar"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start kafka-sidecar");
        let bootstrap = format!("127.0.0.1:{}", ports.bootstrap);
        wait_for_port(bootstrap.parse().unwrap(), Duration::from_secs(20)).expect("proxy up");
        ProxyProcess {
            child,
            bootstrap,
            log,
            _dir: dir,
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Alive, and a real client produces and consumes through it.
    async fn assert_serving(&mut self, topic: &str, tag: &str) {
        assert!(self.alive(), "the proxy died:\n{}", self.log());
        produce_and_consume(&self.bootstrap, topic, tag).await;
        assert!(self.alive(), "the proxy died:\n{}", self.log());
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- proxy log ----\n{}\n----", self.log());
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn init() {
    common::harness::init_logging();
}

/// Produces 20 messages tagged `tag` and reads every one of them back.
async fn produce_and_consume(bootstrap: &str, topic: &str, tag: &str) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    let mut want = BTreeSet::new();
    for i in 0..20 {
        let payload = format!("{tag}-{i}");
        p.send(
            FutureRecord::<(), _>::to(topic).payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("produce through the proxy: {e:?}"));
        want.insert(payload);
    }
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("check-{tag}"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !want.is_empty() {
            let m = c.recv().await.expect("consume through the proxy");
            if let Some(Ok(s)) = m.payload_view::<str>() {
                want.remove(s);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} messages never came back", want.len()));
}

fn request_frame<T: Encodable>(
    api: ApiKey,
    version: i16,
    corr: i32,
    client_id: &str,
    msg: &T,
) -> Bytes {
    let mut b = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())))
        .encode(&mut b, api.request_header_version(version))
        .unwrap();
    msg.encode(&mut b, version).unwrap();
    codec::frame_with_length(b)
}

/// A valid request of `api` at `version` (defaults, acks=1 for Produce).
fn some_request(api: ApiKey, version: i16, client_id: &str) -> Bytes {
    use messages::*;
    match api {
        ApiKey::Produce => request_frame(
            api,
            version,
            1,
            client_id,
            &ProduceRequest::default().with_acks(1),
        ),
        ApiKey::Fetch => request_frame(api, version, 1, client_id, &FetchRequest::default()),
        ApiKey::Metadata => request_frame(api, version, 1, client_id, &MetadataRequest::default()),
        ApiKey::FindCoordinator => request_frame(
            api,
            version,
            1,
            client_id,
            &FindCoordinatorRequest::default(),
        ),
        ApiKey::JoinGroup => request_frame(
            api,
            version,
            1,
            client_id,
            &JoinGroupRequest::default()
                .with_group_id(StrBytes::from_static_str("g").into())
                .with_protocol_type(StrBytes::from_static_str("consumer")),
        ),
        ApiKey::SaslHandshake => {
            request_frame(api, version, 1, client_id, &SaslHandshakeRequest::default())
        }
        ApiKey::ApiVersions => {
            request_frame(api, version, 1, client_id, &ApiVersionsRequest::default())
        }
        ApiKey::DescribeCluster => request_frame(
            api,
            version,
            1,
            client_id,
            &DescribeClusterRequest::default(),
        ),
        ApiKey::DescribeQuorum => request_frame(
            api,
            version,
            1,
            client_id,
            &DescribeQuorumRequest::default(),
        ),
        ApiKey::ConsumerGroupHeartbeat => request_frame(
            api,
            version,
            1,
            client_id,
            &ConsumerGroupHeartbeatRequest::default()
                .with_group_id(StrBytes::from_static_str("g").into()),
        ),
        other => panic!("no request builder for {other:?}"),
    }
}

/// (name, frame) of the crafted corpus, requests (`q`) or responses (`r`).
fn crafted(direction: char) -> Vec<(String, Bytes)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/crafted");
    let mut v: Vec<(String, Bytes)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.contains(&format!("-{direction}-")) && n.ends_with(".bin")
        })
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().to_string(),
                Bytes::from(std::fs::read(&p).unwrap()),
            )
        })
        .collect();
    v.sort();
    v
}

/// (api key, version) from a corpus name `<what>-<q|r>-<api>-v<version>-<n>`.
fn api_of(name: &str) -> (i16, i16) {
    let parts: Vec<&str> = name.split('-').collect();
    let n = parts.len();
    (
        parts[n - 3].parse().unwrap(),
        parts[n - 2].trim_start_matches('v').parse().unwrap(),
    )
}

/// What a connection sees after sending something: closed by the proxy, or a frame.
async fn outcome(s: &mut TcpStream) -> Result<Bytes, String> {
    let mut r = FrameReader::new(s, 1 << 20, 4);
    match tokio::time::timeout(Duration::from_secs(15), r.next_frame()).await {
        Err(_) => panic!("neither an answer nor a close within 15 s"),
        Ok(Ok(Some(f))) => Ok(f),
        Ok(Ok(None)) => Err("closed".into()),
        Ok(Err(e)) => Err(e.to_string()),
    }
}

/// A relay in front of a real broker that answers requests whose client id is
/// `poison:<corpus name>` with that crafted response (the hostile broker), and relays
/// everything else.
async fn poisoning_relay(listener: TcpListener, upstream: String) {
    let responses: Arc<Vec<(String, Bytes)>> = Arc::new(crafted('r'));
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let upstream = upstream.clone();
        let responses = responses.clone();
        tokio::spawn(async move {
            let Ok(up) = TcpStream::connect(&upstream).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (mut ur, mut uw) = up.into_split();
            let cw = Arc::new(tokio::sync::Mutex::new(cw));
            let cw2 = cw.clone();
            let down = tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match ur.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if cw2.lock().await.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            let mut r = FrameReader::new(cr, 1 << 26, 8);
            while let Ok(Some(f)) = r.next_frame().await {
                let peek = codec::peek_request(&f);
                // client id: int16 length then bytes, right after the fixed header.
                let len = i16::from_be_bytes([f[12], f[13]]).max(0) as usize;
                let client_id = String::from_utf8_lossy(&f[14..14 + len]).to_string();
                if let Some(name) = client_id.strip_prefix("poison:") {
                    let (_, frame) = responses
                        .iter()
                        .find(|(n, _)| n == name)
                        .expect("crafted frame");
                    let mut frame = frame.to_vec();
                    frame[4..8].copy_from_slice(&peek.correlation_id.to_be_bytes());
                    let _ = cw.lock().await.write_all(&frame).await;
                    continue;
                }
                if uw.write_all(&f).await.is_err() {
                    break;
                }
            }
            down.abort();
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_from_either_side_close_only_their_connection() {
    init();
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("hardening", 1, 1).unwrap();
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap().to_string();
    tokio::spawn(poisoning_relay(relay, mock.bootstrap_servers()));
    let mut proxy = ProxyProcess::start(&relay_addr, "");
    proxy.assert_serving("hardening", "before").await;
    let baseline = proxy.rss_kib();
    let t = Instant::now();

    // A bystander connection stays open throughout: only the hostile ones close.
    let mut bystander = TcpStream::connect(&proxy.bootstrap).await.unwrap();

    for (name, frame) in crafted('q') {
        let mut s = TcpStream::connect(&proxy.bootstrap).await.unwrap();
        s.write_all(&frame).await.unwrap();
        let got = outcome(&mut s).await;
        println!("client {name}: {:?}", got.as_ref().map(|f| f.len()));
        assert!(
            got.is_err(),
            "{name}: the proxy relayed an answer instead of closing"
        );
        assert!(proxy.alive(), "the proxy died on {name}:\n{}", proxy.log());
    }
    for (name, _) in crafted('r') {
        let (api, version) = api_of(&name);
        let api = ApiKey::try_from(api).unwrap();
        let mut s = TcpStream::connect(&proxy.bootstrap).await.unwrap();
        s.write_all(&some_request(api, version, &format!("poison:{name}")))
            .await
            .unwrap();
        let got = outcome(&mut s).await;
        let decoded = kafka_sidecar::apis::answer_always_checked(api as i16, version);
        println!("upstream {name}: {:?}", got.as_ref().map(|f| f.len()));
        if decoded {
            assert!(
                got.is_err(),
                "{name}: the proxy relayed a response it should have refused"
            );
        }
        assert!(proxy.alive(), "the proxy died on {name}:\n{}", proxy.log());
    }
    let log = proxy.log();
    assert!(log.contains("claims 2147483647 elements"), "{log}");
    let refusals = log.matches("claims").count();
    println!(
        "{refusals} refusals logged, e.g.:\n{}",
        log.lines().find(|l| l.contains("claims")).unwrap_or("")
    );

    bystander
        .write_all(&some_request(ApiKey::ApiVersions, 0, "bystander"))
        .await
        .unwrap();
    assert!(
        outcome(&mut bystander).await.is_ok(),
        "the bystander lost its connection"
    );
    proxy.assert_serving("hardening", "after").await;
    println!(
        "hostile frames: {:?}; RSS baseline {baseline} KiB, after {} KiB",
        t.elapsed(),
        proxy.rss_kib()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_pipelined_requests_are_all_answered() {
    init();
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("hardening", 1, 1).unwrap();
    let mut proxy = ProxyProcess::start(&mock.bootstrap_servers(), "max_in_flight: 1024");
    let baseline = proxy.rss_kib();
    let t = Instant::now();
    let mut burst = BytesMut::new();
    for corr in 0..5000 {
        let f = request_frame(
            ApiKey::ApiVersions,
            0,
            corr,
            "pipeline",
            &messages::ApiVersionsRequest::default(),
        );
        burst.extend_from_slice(&f);
    }
    let s = TcpStream::connect(&proxy.bootstrap).await.unwrap();
    let (r, mut w) = s.into_split();
    // Written in one go while the answers are read concurrently.
    let writer = tokio::spawn(async move {
        w.write_all(&burst).await.unwrap();
        w
    });
    let mut reader = FrameReader::new(r, 1 << 20, 4);
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for corr in 0..5000 {
        let f = tokio::time::timeout(Duration::from_secs(30), reader.next_frame())
            .await
            .unwrap_or_else(|_| panic!("answer {corr} of 5000 never came"))
            .unwrap()
            .expect("connection open");
        assert_eq!(
            codec::peek_response_correlation(&f),
            corr,
            "answers in order"
        );
        if corr % 500 == 0 {
            peak.fetch_max(proxy.rss_kib(), std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _w = writer.await.unwrap();
    println!(
        "5,000 pipelined ApiVersions answered in {:?}; RSS baseline {baseline} KiB, peak {} KiB",
        t.elapsed(),
        peak.load(std::sync::atomic::Ordering::Relaxed)
    );
    proxy.assert_serving("hardening", "pipelined").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_reaped() {
    init();
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("big", 1, 1).unwrap();
    let mut proxy = ProxyProcess::start(&mock.bootstrap_servers(), "write_stall_timeout: 2s");
    // Some data worth fetching: 4 MB.
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &proxy.bootstrap)
        .create()
        .unwrap();
    let value = vec![b'x'; 8192];
    let sends: Vec<_> = (0..512)
        .map(|_| {
            p.send_result(FutureRecord::<(), _>::to("big").payload(&value[..]))
                .unwrap()
        })
        .collect();
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let baseline = proxy.rss_kib();
    // Fetch v4 of the whole partition, 200 times, never reading an answer.
    let fetch = messages::FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(8 << 20)
        .with_topics(vec![messages::fetch_request::FetchTopic::default()
            .with_topic(StrBytes::from_static_str("big").into())
            .with_partitions(vec![
                messages::fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(8 << 20),
            ])]);
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock
        .connect(proxy.bootstrap.parse().unwrap())
        .await
        .unwrap();
    let t = Instant::now();
    let mut sent = 0;
    for corr in 0..200 {
        let f = request_frame(ApiKey::Fetch, 4, corr, "never-reads", &fetch);
        match tokio::time::timeout(Duration::from_secs(10), s.write_all(&f)).await {
            Ok(Ok(())) => sent += 1,
            _ => break, // the proxy stopped reading us (back-pressure) or closed
        }
    }
    // The proxy reaps us: wait for its log line, then drain what it had sent. (The bound
    // only keeps a broken proxy from hanging the suite; a loaded machine is slow.)
    let deadline = Instant::now() + Duration::from_secs(120);
    while !proxy.log().contains("stopped reading") {
        assert!(Instant::now() < deadline, "not reaped:\n{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reaped_after = t.elapsed();
    let peak = proxy.rss_kib();
    let mut answers = 0;
    let mut r = FrameReader::new(&mut s, 64 << 20, 4);
    while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::from_secs(10), r.next_frame()).await
    {
        answers += 1;
    }
    assert!(
        answers < sent,
        "all {sent} answers arrived: nothing was cut off"
    );
    proxy.assert_serving("big", "after-slow-reader").await;
    println!(
        "never-reading client: {sent} Fetch requests sent, reaped after {reaped_after:?} with {answers} answers delivered; RSS baseline {baseline} KiB, at reaping {peak} KiB, after {} KiB",
        proxy.rss_kib()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_in_churn() {
    init();
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("hardening", 1, 1).unwrap();
    let mut proxy = ProxyProcess::start(&mock.bootstrap_servers(), "");
    proxy.assert_serving("hardening", "before-churn").await;
    let baseline = proxy.rss_kib();
    let t = Instant::now();
    let bootstrap = proxy.bootstrap.clone();
    let ok = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::with_capacity(10_000);
    for i in 0..10_000u32 {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let bootstrap = bootstrap.clone();
        let ok = ok.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let Ok(mut s) = TcpStream::connect(&bootstrap).await else {
                return;
            };
            if i % 2 == 0 {
                // Half ask something and read the answer, half hang up at once.
                if s.write_all(&some_request(ApiKey::ApiVersions, 0, "churn"))
                    .await
                    .is_ok()
                {
                    let mut r = FrameReader::new(&mut s, 1 << 20, 4);
                    if let Ok(Ok(Some(_))) =
                        tokio::time::timeout(Duration::from_secs(20), r.next_frame()).await
                    {
                        ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let churn = t.elapsed();
    let peak = proxy.rss_kib();
    let answered = ok.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        answered > 4_900,
        "only {answered} of 5,000 connections got an answer"
    );
    // Closed sessions are released once the proxy notices the closes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.assert_serving("hardening", "after-churn").await;
    println!(
        "10,000 connections in {churn:?} ({answered} answered); RSS baseline {baseline} KiB, right after {peak} KiB, settled {} KiB",
        proxy.rss_kib()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_under_load_loses_no_acknowledged_message() {
    init();
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic("load", 3, 3).unwrap();
    let mut proxy = ProxyProcess::start(&mock.bootstrap_servers(), "");
    let baseline = proxy.rss_kib();
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &proxy.bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let mut acked = BTreeSet::new();
    let mut pending = Vec::new();
    for i in 0..3000 {
        let payload = format!("load-{i}");
        pending.push((
            payload.clone(),
            p.send_result(FutureRecord::<(), _>::to("load").payload(&payload))
                .unwrap(),
        ));
        if i == 1000 {
            mock.broker_down(2).unwrap();
            for part in 0..3 {
                mock.partition_leader("load", part, Some(1)).unwrap();
            }
        }
        if i == 2000 {
            mock.broker_up(2).unwrap();
        }
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (payload, f) in pending {
        if let Ok(Ok(_)) = f.await {
            acked.insert(payload);
        }
    }
    println!("{} of 3000 acknowledged", acked.len());
    assert!(!acked.is_empty());
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &proxy.bootstrap)
        .set("group.id", "load-check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["load"]).unwrap();
    tokio::time::timeout(Duration::from_secs(90), async {
        while !acked.is_empty() {
            let m = c.recv().await.expect("consume");
            if let Some(Ok(s)) = m.payload_view::<str>() {
                acked.remove(s);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} acknowledged messages missing", acked.len()));
    proxy.assert_serving("load", "after-restart").await;
    println!(
        "broker restart under load: RSS baseline {baseline} KiB, after {} KiB",
        proxy.rss_kib()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stops_answering_is_reaped_and_comes_back() {
    init();
    let mut tansu = common::tools::Tansu::start().expect("tansu (scripts/install-test-deps.sh)");
    tansu.create_topic("stall", 1).unwrap();
    let mut proxy = ProxyProcess::start(&tansu.bootstrap(), "response_timeout: 3s");
    proxy.assert_serving("stall", "before-stop").await;
    let baseline = proxy.rss_kib();
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &proxy.bootstrap)
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let mut acked = BTreeSet::new();
    let mut pending = Vec::new();
    let t = Instant::now();
    for i in 0..200 {
        let payload = format!("stall-{i}");
        pending.push((
            payload.clone(),
            p.send_result(FutureRecord::<(), _>::to("stall").payload(&payload))
                .unwrap(),
        ));
        if i == 50 {
            tansu.pause().unwrap();
        }
        if i == 51 {
            // Stopped mid-stream: the proxy gives up on it after response_timeout.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !proxy.log().contains("has not answered") {
                assert!(
                    Instant::now() < deadline,
                    "stalled upstream not reaped:\n{}",
                    proxy.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tansu.resume().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (payload, f) in pending {
        if let Ok(Ok(_)) = f.await {
            acked.insert(payload);
        }
    }
    println!(
        "{} of 200 acknowledged across the stop ({:?})",
        acked.len(),
        t.elapsed()
    );
    assert!(acked.len() > 100);
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &proxy.bootstrap)
        .set("group.id", "stall-check")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .unwrap();
    c.subscribe(&["stall"]).unwrap();
    tokio::time::timeout(Duration::from_secs(90), async {
        while !acked.is_empty() {
            let m = c.recv().await.expect("consume");
            if let Some(Ok(s)) = m.payload_view::<str>() {
                acked.remove(s);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} acknowledged messages missing", acked.len()));
    proxy.assert_serving("stall", "after-stop").await;
    println!(
        "upstream stop: RSS baseline {baseline} KiB, after {} KiB",
        proxy.rss_kib()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ids_beyond_max_node_id_get_their_own_ports() {
    // Brokers 2 and 3 have no fixed port with max_node_id 2 (like ids from 1001 on a
    // ZooKeeper-era cluster with the default 1000): each still gets a port of its own,
    // not the bootstrap port, so partitions they lead are reachable.
    init();
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic("spread", 3, 1).unwrap();
    for part in 0..3 {
        mock.partition_leader("spread", part, Some(part + 1))
            .unwrap();
    }
    let mut proxy = ProxyProcess::start_with(&mock.bootstrap_servers(), "", 2);
    proxy.assert_serving("spread", "high-ids").await;
    let log = proxy.log();
    assert!(log.contains("outside listen.max_node_id"), "{log}");
    assert!(!log.contains("sent to the bootstrap port"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_responses_may_exceed_the_client_frame_limit() {
    // limits.max_frame_bytes bounds what clients send (1 MiB here); a consumer's
    // fetch.max.bytes decides how large its Fetch responses are, bounded separately by
    // limits.max_response_frame_bytes (256 MiB by default).
    init();
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("wide", 12, 1).unwrap();
    let mut proxy = ProxyProcess::start(&mock.bootstrap_servers(), "max_frame_bytes: 1048576");
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &proxy.bootstrap)
        .set("batch.size", "300000")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let value = vec![b'w'; 200_000];
    // One batch in each partition: a fetch of all of them is one 2.4 MB response.
    for i in 0..24 {
        p.send(
            FutureRecord::<(), _>::to("wide")
                .payload(&value[..])
                .partition(i % 12),
            Duration::from_secs(30),
        )
        .await
        .expect("produce");
    }
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &proxy.bootstrap)
        .set("group.id", "wide")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()
        .unwrap();
    c.subscribe(&["wide"]).unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..24 {
            let m = c.recv().await.expect("consume");
            assert_eq!(m.payload().map(|p| p.len()), Some(200_000));
        }
    })
    .await
    .expect("4.8 MB consumed through the proxy");
    assert!(
        !proxy.log().contains("exceeds the limit"),
        "{}",
        proxy.log()
    );
    assert!(proxy.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_group_may_wait_its_rebalance_timeout() {
    // Member A joins and then stops polling; member B's JoinGroup is held by the
    // coordinator until A rejoins or its rebalance timeout (max.poll.interval.ms, 8 s)
    // passes: longer than this proxy's response_timeout (1 s). The JoinGroup's own
    // rebalance timeout is what bounds its wait, so B's session is not cut.
    init();
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("joins", 2, 1).unwrap();
    let mut proxy = ProxyProcess::start(&mock.bootstrap_servers(), "response_timeout: 1s");
    let member = |name: &str| -> StreamConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &proxy.bootstrap)
            .set("group.id", "slow-join")
            .set("client.id", name)
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("max.poll.interval.ms", "8000")
            .create()
            .unwrap()
    };
    let a = member("a");
    a.subscribe(&["joins"]).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), a.recv()).await;
    let t = Instant::now();
    let b = member("b");
    b.subscribe(&["joins"]).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(12), b.recv()).await;
    println!("second member waited {:?}", t.elapsed());
    let log = proxy.log();
    assert!(!log.contains("has not answered"), "{log}");
    drop((a, b));
    proxy.assert_serving("joins", "after-slow-join").await;
}
