//! Captures the fuzzing corpus (`tests/corpus/captured/`): real frames from real
//! clients (rdkafka: idempotent producer, consumer group, metadata) and real brokers
//! (librdkafka's mock cluster, and tansu when installed), recorded by a small relay
//! that rewrites broker addresses to itself with the proxy's own `rewrite` module so
//! that every connection goes through it.
//!
//! Not part of the normal run (the corpus is committed); refresh it with
//! `cargo nextest run --test hardening_corpus --run-ignored only`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use kafka_sidecar::codec::{self, FrameReader};
use kafka_sidecar::rewrite::{self, NodeDirectory};
use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// (direction 'q'/'r', api key, version) -> frames seen.
type Seen = Arc<Mutex<BTreeMap<(char, i16, i16), Vec<Bytes>>>>;

struct ToRelay(u16);

impl NodeDirectory for ToRelay {
    fn local_endpoint(&self, _node: i32, _host: &str, _port: i32) -> (StrBytes, i32) {
        (StrBytes::from_static_str("127.0.0.1"), i32::from(self.0))
    }
}

async fn relay(listener: TcpListener, upstream: String, seen: Seen) {
    let port = listener.local_addr().unwrap().port();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let upstream = upstream.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let Ok(up) = TcpStream::connect(&upstream).await else {
                return;
            };
            let (cr, mut cw) = client.into_split();
            let (ur, mut uw) = up.into_split();
            let pending = Arc::new(Mutex::new(std::collections::VecDeque::new()));
            let p2 = pending.clone();
            let s2 = seen.clone();
            let requests = async move {
                let mut r = FrameReader::new(cr, 1 << 26, 8);
                while let Ok(Some(f)) = r.next_frame().await {
                    let peek = codec::peek_request(&f);
                    let acks0 =
                        peek.api_key == 0 && codec::produce_acks(&f, peek.api_version) == Some(0);
                    if !acks0 {
                        p2.lock().push_back((peek.api_key, peek.api_version));
                    }
                    s2.lock()
                        .entry(('q', peek.api_key, peek.api_version))
                        .or_default()
                        .push(f.clone());
                    if uw.write_all(&f).await.is_err() {
                        return;
                    }
                }
            };
            let responses = async move {
                let mut r = FrameReader::new(ur, 1 << 26, 4);
                while let Ok(Some(f)) = r.next_frame().await {
                    let Some((api, version)) = pending.lock().pop_front() else {
                        continue;
                    };
                    seen.lock()
                        .entry(('r', api, version))
                        .or_default()
                        .push(f.clone());
                    let out = rewrite::rewrite_response(api, version, f, &ToRelay(port))
                        .expect("real responses rewrite");
                    if cw.write_all(&out).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! { _ = requests => {}, _ = responses => {} }
        });
    }
}

/// Produces (idempotent), consumes in a group and leaves, all through the relay.
async fn exercise(bootstrap: &str, topic: &str) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "20000")
        .create()
        .unwrap();
    for i in 0..20 {
        let payload = format!("corpus-{i}");
        p.send(
            FutureRecord::<(), _>::to(topic).payload(&payload),
            Duration::from_secs(20),
        )
        .await
        .expect("delivered");
    }
    drop(p);
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "corpus-group")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    // Whatever the group gets through in a few seconds (join, sync, fetch, commit):
    // the frames are the point, not the messages.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    let mut got = 0;
    while got < 20 {
        match tokio::time::timeout_at(deadline, c.recv()).await {
            Ok(Ok(m)) => {
                assert!(m.payload().is_some());
                got += 1;
            }
            Ok(Err(e)) => println!("consumer: {e}"),
            Err(_) => break,
        }
    }
    println!("consumed {got} messages");
    c.unsubscribe();
    drop(c);
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn write_corpus(source: &str, seen: &Seen) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/captured");
    std::fs::create_dir_all(&dir).unwrap();
    let mut n = 0;
    for ((d, api, v), frames) in seen.lock().iter() {
        // A few per kind, small ones first: the fuzzer mutates them, size buys nothing.
        let mut frames = frames.clone();
        frames.sort_by_key(|f| f.len());
        frames.dedup();
        for (i, f) in frames
            .iter()
            .filter(|f| f.len() <= 16 * 1024)
            .take(2)
            .enumerate()
        {
            let name = format!("{source}-{d}-{api}-v{v}-{i}.bin");
            std::fs::write(dir.join(name), f).unwrap();
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "refreshes the committed corpus"]
async fn capture_mock_cluster_frames() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("corpus", 2, 1).unwrap();
    let seen: Seen = Default::default();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bootstrap = l.local_addr().unwrap().to_string();
    tokio::spawn(relay(l, mock.bootstrap_servers(), seen.clone()));
    exercise(&bootstrap, "corpus").await;
    let n = write_corpus("mock", &seen);
    println!("wrote {n} frames from the mock cluster");
    assert!(n > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "refreshes the committed corpus"]
async fn capture_tansu_frames() {
    let tansu = common::tools::Tansu::start().expect("tansu (scripts/install-test-deps.sh)");
    tansu.create_topic("corpus", 2).unwrap();
    let seen: Seen = Default::default();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bootstrap = l.local_addr().unwrap().to_string();
    tokio::spawn(relay(l, tansu.bootstrap(), seen.clone()));
    exercise(&bootstrap, "corpus").await;
    let n = write_corpus("tansu", &seen);
    println!("wrote {n} frames from tansu");
    assert!(n > 10);
}
