//! Failover and failback with real rdkafka clients that are never restarted: two
//! independent librdkafka mock clusters, a steady producer (acks=all) and a consumer
//! group through the proxy, the config file rewritten in the middle of the run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::harness::TestProxy;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;

const TOPIC: &str = "events";
const PARTITIONS: i32 = 3;

/// Every message on a cluster, read directly (not through the proxy): id -> count.
fn read_cluster(bootstrap: &str) -> BTreeMap<u64, u32> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "verifier")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        let (lo, hi) = c
            .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
            .unwrap();
        if hi <= lo {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, p, Offset::Offset(lo))
            .unwrap();
        c.assign(&tpl).unwrap();
        let mut next = lo;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while next < hi {
            assert!(
                std::time::Instant::now() < deadline,
                "reading {bootstrap} partition {p}"
            );
            if let Some(m) = c.poll(Duration::from_millis(500)) {
                let m = m.unwrap();
                let id: u64 = std::str::from_utf8(m.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                *out.entry(id).or_insert(0) += 1;
                next = m.offset() + 1;
            }
        }
    }
    out
}

struct Outcome {
    acked: BTreeSet<u64>,
    errors: Vec<String>,
}

/// Sends ids 0, 1, 2, ... every 10 ms until `stop` (at most `max`); reports each
/// acknowledgement on `acks`.
async fn run_producer(
    p: FutureProducer,
    max: u64,
    stop: tokio::sync::watch::Receiver<bool>,
    acks: mpsc::UnboundedSender<u64>,
) -> (u64, Outcome) {
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    let mut pending = Vec::new();
    let mut sent = 0;
    while sent < max && !*stop.borrow() {
        interval.tick().await;
        let i = sent;
        sent += 1;
        let p = p.clone();
        let acks = acks.clone();
        pending.push(tokio::spawn(async move {
            let payload = i.to_string();
            let r = p
                .send(
                    FutureRecord::to(TOPIC).payload(&payload).key(&payload),
                    Duration::from_secs(60),
                )
                .await;
            match r {
                Ok(_) => {
                    let _ = acks.send(i);
                    Ok(i)
                }
                Err((e, _)) => Err(format!("{i}: {e}")),
            }
        }));
    }
    let mut out = Outcome {
        acked: BTreeSet::new(),
        errors: vec![],
    };
    for h in pending {
        match h.await.unwrap() {
            Ok(i) => {
                out.acked.insert(i);
            }
            Err(e) => out.errors.push(e),
        }
    }
    (sent, out)
}

/// Waits (bounded) for `n` more acknowledgements; returns the highest id acknowledged.
async fn wait_acks(rx: &mut mpsc::UnboundedReceiver<u64>, last: &mut u64, n: u64) -> u64 {
    // Acknowledgements already queued are history: take them first.
    while let Ok(id) = rx.try_recv() {
        *last = (*last).max(id);
    }
    for _ in 0..n {
        let id = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("acknowledgements keep coming")
            .expect("producer running");
        *last = (*last).max(id);
    }
    *last
}

/// Waits (bounded) until the consumer has read an id above `above`.
async fn consumer_reads_above(seen: &mut mpsc::UnboundedReceiver<u64>, above: u64, what: &str) {
    while seen.try_recv().is_ok() {}
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let id = seen.recv().await.expect("consumer running");
            if id > above {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

async fn failover_scenario(producer_props: &[(&str, &str)]) {
    let north = MockCluster::new(3).unwrap();
    let west = MockCluster::new(3).unwrap();
    for m in [&north, &west] {
        m.create_topic(TOPIC, PARTITIONS, 3).unwrap();
    }
    let clusters = [
        ("north", north.bootstrap_servers()),
        ("west", west.bootstrap_servers()),
    ];
    let tp = TestProxy::start(&clusters, "north").await;

    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &tp.bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    for (k, v) in producer_props {
        pc.set(*k, *v);
    }
    let producer: FutureProducer = pc.create().unwrap();

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &tp.bootstrap)
        .set("group.id", "failover-group")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("auto.commit.interval.ms", "200")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<u64>();
    let consumer_task = tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(m) => {
                    let id: u64 = std::str::from_utf8(m.payload().unwrap())
                        .unwrap()
                        .parse()
                        .unwrap();
                    if seen_tx.send(id).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("consumer: {e}"),
            }
        }
    });
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let producer_task = tokio::spawn(run_producer(producer, 20_000, stop_rx, ack_tx));
    let mut last_ack = 0;
    // Before: a steady state on north, read by the consumer.
    let before = wait_acks(&mut ack_rx, &mut last_ack, 150).await;
    consumer_reads_above(&mut seen_rx, 0, "the consumer reads from north").await;
    // Failover: the producer keeps going on west, the consumer group resumes there.
    tp.switch_to(&clusters, "west", "").await;
    let switched_at = wait_acks(&mut ack_rx, &mut last_ack, 1).await.max(before);
    wait_acks(&mut ack_rx, &mut last_ack, 150).await;
    consumer_reads_above(
        &mut seen_rx,
        switched_at + 20,
        "the consumer group resumed on west after the failover",
    )
    .await;
    // Failback.
    tp.switch_to(&clusters, "north", "").await;
    let failback_after_id = wait_acks(&mut ack_rx, &mut last_ack, 1).await;
    wait_acks(&mut ack_rx, &mut last_ack, 150).await;
    consumer_reads_above(
        &mut seen_rx,
        failback_after_id + 20,
        "the consumer group resumed on north after the failback",
    )
    .await;
    stop_tx.send(true).unwrap();
    drop(ack_rx);
    let (sent, outcome) = producer_task.await.unwrap();
    assert!(
        outcome.errors.is_empty(),
        "the producer kept working across failover and failback: {:?}",
        &outcome.errors[..outcome.errors.len().min(5)]
    );
    assert_eq!(
        outcome.acked.len() as u64,
        sent,
        "every message was acknowledged"
    );

    let on_north = read_cluster(&north.bootstrap_servers());
    let on_west = read_cluster(&west.bootstrap_servers());
    for id in &outcome.acked {
        assert!(
            on_north.contains_key(id) || on_west.contains_key(id),
            "acknowledged message {id} is on neither cluster"
        );
    }
    assert!(
        !on_west.is_empty(),
        "messages landed on west after the failover"
    );
    assert!(
        on_north.keys().any(|&id| id > failback_after_id),
        "messages landed on north after the failback"
    );
    let duplicates: u32 = on_north.values().chain(on_west.values()).sum::<u32>() - sent as u32;
    let on_both = on_north.keys().filter(|k| on_west.contains_key(k)).count();
    println!(
        "north: {} messages, west: {} messages, written to both clusters: {on_both}, duplicate copies: {duplicates}",
        on_north.len(),
        on_west.len()
    );

    // Close the consumer while the proxy and clusters are up: rdkafka leaves the group on close.
    drop(seen_rx);
    consumer_task.abort();
    let _ = tokio::time::timeout(Duration::from_secs(30), consumer_task).await;
    let status = tp.proxy.shared.status();
    assert_eq!(status["active_cluster"], "north");
    assert_eq!(status["switches"], 2);
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdkafka_producer_and_consumer_group_survive_failover_and_failback() {
    common::harness::init_logging();
    failover_scenario(&[("enable.idempotence", "false")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdkafka_idempotent_producer_survives_failover_and_failback() {
    common::harness::init_logging();
    failover_scenario(&[("enable.idempotence", "true")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_back_during_a_switch_leaves_no_session_on_the_other_cluster() {
    common::harness::init_logging();
    let north = MockCluster::new(3).unwrap();
    let west = MockCluster::new(3).unwrap();
    for m in [&north, &west] {
        m.create_topic(TOPIC, PARTITIONS, 3).unwrap();
    }
    let clusters = [
        ("north", north.bootstrap_servers()),
        ("west", west.bootstrap_servers()),
    ];
    let tp = TestProxy::start(&clusters, "north").await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &tp.bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let send = |i: u64| {
        let p = producer.clone();
        async move {
            let payload = i.to_string();
            p.send(
                FutureRecord::to(TOPIC).payload(&payload).key(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        }
    };
    for i in 0..20 {
        send(i).await;
    }
    // Fail over and back before the first switch has even drained.
    let base = std::fs::read_to_string(&tp.config_path).unwrap();
    let west_cfg = kafka_sidecar::config::Config::parse(
        &base.replace("active_cluster: north", "active_cluster: west"),
    )
    .unwrap();
    let north_cfg = kafka_sidecar::config::Config::parse(&base).unwrap();
    tp.proxy.shared.apply(Arc::new(west_cfg)).unwrap();
    tp.proxy.shared.apply(Arc::new(north_cfg)).unwrap();
    assert_eq!(tp.proxy.shared.switch.current().generation, 2);
    for i in 20..60 {
        send(i).await;
    }
    let on_north = read_cluster(&north.bootstrap_servers());
    let on_west = read_cluster(&west.bootstrap_servers());
    assert!(
        (20..60).all(|i| on_north.contains_key(&i)),
        "everything after the switch back is on north"
    );
    assert!(on_west.is_empty(), "nothing reached west: {on_west:?}");
    let status = tp.proxy.shared.status();
    assert_eq!(status["clusters"]["west"]["sessions"], 0, "{status:#}");
    drop(producer);
    tp.proxy.shutdown().await;
}

/// A KIP-848 consumer (`group.protocol=consumer`, ConsumerGroupHeartbeat) follows a
/// switch: it reads from north, then, without a restart, from west.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_consumer_follows_a_switch() {
    common::harness::init_logging();
    let north = MockCluster::new(1).unwrap();
    let west = MockCluster::new(1).unwrap();
    for m in [&north, &west] {
        m.create_topic(TOPIC, 2, 1).unwrap();
    }
    let clusters = [
        ("north", north.bootstrap_servers()),
        ("west", west.bootstrap_servers()),
    ];
    let tp = TestProxy::start(&clusters, "north").await;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &tp.bootstrap)
        .set("group.id", "kip848-group")
        .set("group.protocol", "consumer")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let write = |bootstrap: String, prefix: &'static str| async move {
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        for i in 0..4 {
            let v = format!("{prefix}-{i}");
            p.send(
                FutureRecord::to(TOPIC).payload(&v).key(&v),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        }
    };
    // Reads until a record starting with `prefix` arrives (bounded).
    let read_from = |prefix: &'static str| {
        let consumer = &consumer;
        async move {
            tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    match consumer.recv().await {
                        Ok(m)
                            if m.payload()
                                .is_some_and(|p| p.starts_with(prefix.as_bytes())) =>
                        {
                            return
                        }
                        Ok(_) => {}
                        Err(e) => eprintln!("consumer: {e}"),
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no '{prefix}' record within 60 s"))
        }
    };
    write(north.bootstrap_servers(), "north").await;
    read_from("north").await;
    tp.switch_to(&clusters, "west", "").await;
    write(west.bootstrap_servers(), "west").await;
    read_from("west").await;
    drop(consumer);
    tp.proxy.shutdown().await;
}
