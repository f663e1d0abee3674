//! The proxy in front of real Apache Kafka 4.x brokers (KRaft), started by `scripts/kafka-cluster.sh`:
//! the data path with a partition leader moving on a 3-broker cluster (KIP-951 node endpoints), idempotent
//! producers across failover and failback between two real clusters (node ids colliding and not), and
//! consumer groups, classic and KIP-848, across a switch (also to a cluster without the topic yet).
//!
//! Clusters (leased per test binary, shared by its tests, see `tests/common/kafka.rs`):
//! `rk-a` and `rk-b` have one broker each, both node id 1 (colliding); `rk-d` one broker, node id 2;
//! `rk-c3` has three brokers with node ids 1001..1003 (no collision with the others, and ids above 1000
//! through the proxy).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::harness::metric;
use common::kafka::{self, is_proxy_address, lease, unique, Kafka, Spec};
use common::tools::{parse_msg, ChildClient, ConsumerArgs, JavaClients, ProducerArgs};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message, Statistics};
use tokio::sync::mpsc;

const PARTITIONS: i32 = 3;

fn cluster_a() -> Kafka {
    lease(
        "rk-a",
        &Spec {
            partitions: PARTITIONS as u32,
            ..Spec::default()
        },
    )
}

fn cluster_b() -> Kafka {
    lease(
        "rk-b",
        &Spec {
            partitions: PARTITIONS as u32,
            ..Spec::default()
        },
    )
}

/// One broker, node id 2: distinct from `rk-a`'s (a client's coordinator moves to another node id
/// at a switch, as between the client matrix's clusters).
fn cluster_d() -> Kafka {
    lease(
        "rk-d",
        &Spec {
            node_id_base: 2,
            partitions: PARTITIONS as u32,
            ..Spec::default()
        },
    )
}

fn cluster_c3() -> Kafka {
    lease(
        "rk-c3",
        &Spec {
            nodes: 3,
            node_id_base: 1001,
            partitions: PARTITIONS as u32,
            ..Spec::default()
        },
    )
}

/// Acknowledged ids that are on neither cluster; and copies beyond the first, over both clusters.
fn check_acked(
    acked: &BTreeSet<u64>,
    topic: &str,
    clusters: &[&Kafka],
) -> (Vec<u64>, u32, Vec<BTreeMap<u64, u32>>) {
    let logs: Vec<BTreeMap<u64, u32>> = clusters.iter().map(|k| k.read_all(topic)).collect();
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|id| logs.iter().all(|l| !l.contains_key(id)))
        .collect();
    let mut copies: BTreeMap<u64, u32> = BTreeMap::new();
    for l in &logs {
        for (id, n) in l {
            *copies.entry(*id).or_default() += n;
        }
    }
    let dups = copies.values().map(|n| n - 1).sum();
    (missing, dups, logs)
}

// ------------------------------------------------------------------------------------------------ producer identity

/// Waits (bounded) for `n` more ACK lines of a test producer.
async fn wait_ack_lines(p: &mut ChildClient, n: u64) {
    for _ in 0..n {
        p.wait_for_line(Duration::from_secs(90), |l| l.starts_with("ACK "))
            .await
            .unwrap();
    }
}

/// Waits (bounded) for `n` more acknowledgements on `rx`.
async fn wait_acks(rx: &mut mpsc::UnboundedReceiver<u64>, n: usize) {
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(90), rx.recv())
            .await
            .expect("acknowledgements keep coming")
            .expect("producer running");
    }
}

/// Java producer, default config (idempotent since 3.0), through the proxy: `from` -> `to` -> `from`.
async fn java_default_producer_across_failover_and_failback(from: Kafka, to: Kafka) {
    const COUNT: u64 = 1500;
    let t0 = Instant::now();
    let topic = unique("java-pid");
    // the topic exists on the first cluster only: on the other it is auto-created by the first
    // metadata request after the switch (a failover target that never saw it)
    from.create_topic(&topic, PARTITIONS, None).await;
    let clusters = [("north", &from), ("west", &to)];
    let tp = kafka::start_proxy(&clusters, "north", "").await;
    let mut producer = ChildClient::java_producer(
        JavaClients::V3_9,
        &ProducerArgs::new(&tp.bootstrap, &topic, COUNT).rate(150.0),
    )
    .unwrap();
    wait_ack_lines(&mut producer, 300).await;
    kafka::switch(&tp, &clusters, "west", "").await;
    wait_ack_lines(&mut producer, 400).await;
    kafka::switch(&tp, &clusters, "north", "").await;
    wait_ack_lines(&mut producer, 300).await;
    let run = producer.wait(Duration::from_secs(120)).await.unwrap();
    assert!(
        run.fatal().is_none() && run.errors().is_empty() && run.done().is_some(),
        "{}",
        run.describe()
    );
    let acked: BTreeSet<u64> = run.acked_ids().into_iter().collect();
    assert_eq!(acked.len() as u64, COUNT, "{}", run.describe());
    let (missing, dups, logs) = check_acked(&acked, &topic, &[&from, &to]);
    println!(
        "java default producer {} -> {} -> {}: {} acked, on from {} / on to {}, missing {}, duplicate copies {dups}, {:.1} s",
        from.name,
        to.name,
        from.name,
        acked.len(),
        logs[0].len(),
        logs[1].len(),
        missing.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged messages are on neither cluster (first: {:?}); {}",
        missing.len(),
        &missing[..missing.len().min(10)],
        run.describe()
    );
    assert!(
        !logs[1].is_empty(),
        "messages landed on the failover target"
    );
    let last_on_to = logs[1].keys().max().copied().unwrap_or(0);
    assert!(
        logs[0].keys().any(|&id| id > last_on_to),
        "messages landed on the first cluster again after the failback"
    );
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_default_producer_failover_failback_colliding_node_ids() {
    let (a, b) = (cluster_a(), cluster_b());
    java_default_producer_across_failover_and_failback(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_default_producer_failover_failback_distinct_node_ids() {
    let (a, c) = (cluster_a(), cluster_c3());
    java_default_producer_across_failover_and_failback(a, c).await;
}

/// rdkafka with `enable.idempotence=true` through the proxy: `from` -> `to` -> `from`.
async fn rdkafka_idempotent_producer_across_failover_and_failback(from: Kafka, to: Kafka) {
    let t0 = Instant::now();
    let topic = unique("rd-pid");
    from.create_topic(&topic, PARTITIONS, None).await;
    let clusters = [("north", &from), ("west", &to)];
    let tp = kafka::start_proxy(&clusters, "north", "").await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &tp.bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "90000")
        .create()
        .unwrap();
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<u64>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t = topic.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut pending = Vec::new();
        let mut sent = 0u64;
        while !*stop_rx.borrow() && sent < 20_000 {
            tick.tick().await;
            let (p, t, tx, i) = (producer.clone(), t.clone(), ack_tx.clone(), sent);
            sent += 1;
            pending.push(tokio::spawn(async move {
                let v = i.to_string();
                let r = p
                    .send(
                        FutureRecord::to(&t).payload(&v).key(&v),
                        Duration::from_secs(90),
                    )
                    .await;
                match r {
                    Ok(_) => {
                        let _ = tx.send(i);
                        Ok(i)
                    }
                    Err((e, _)) => Err(format!("{i}: {e}")),
                }
            }));
        }
        let mut acked = BTreeSet::new();
        let mut errors = Vec::new();
        for h in pending {
            match h.await.unwrap() {
                Ok(i) => {
                    acked.insert(i);
                }
                Err(e) => errors.push(e),
            }
        }
        (sent, acked, errors)
    });
    wait_acks(&mut ack_rx, 300).await;
    kafka::switch(&tp, &clusters, "west", "").await;
    wait_acks(&mut ack_rx, 400).await;
    kafka::switch(&tp, &clusters, "north", "").await;
    wait_acks(&mut ack_rx, 300).await;
    stop_tx.send(true).unwrap();
    drop(ack_rx);
    let (sent, acked, errors) = task.await.unwrap();
    let (missing, dups, logs) = check_acked(&acked, &topic, &[&from, &to]);
    println!(
        "rdkafka idempotent producer {} -> {} -> {}: {sent} sent, {} acked, {} errors, on from {} / on to {}, missing {}, duplicate copies {dups}, {:.1} s",
        from.name,
        to.name,
        from.name,
        acked.len(),
        errors.len(),
        logs[0].len(),
        logs[1].len(),
        missing.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        errors.is_empty(),
        "the producer kept working: {:?}",
        &errors[..errors.len().min(5)]
    );
    assert_eq!(acked.len() as u64, sent, "every message was acknowledged");
    assert!(
        missing.is_empty(),
        "{} acknowledged messages are on neither cluster (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        !logs[1].is_empty(),
        "messages landed on the failover target"
    );
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdkafka_idempotent_producer_failover_failback_colliding_node_ids() {
    let (a, b) = (cluster_a(), cluster_b());
    rdkafka_idempotent_producer_across_failover_and_failback(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdkafka_idempotent_producer_failover_failback_distinct_node_ids() {
    let (a, c) = (cluster_a(), cluster_c3());
    rdkafka_idempotent_producer_across_failover_and_failback(a, c).await;
}

// ------------------------------------------------------------------------------------------------ KIP-951

/// Broker names librdkafka reports in its statistics: every address it ever learned.
#[derive(Clone, Default)]
struct SeenBrokers(Arc<Mutex<BTreeSet<String>>>);

impl ClientContext for SeenBrokers {
    fn stats(&self, s: Statistics) {
        let mut seen = self.0.lock().unwrap();
        for b in s.brokers.values() {
            seen.insert(b.name.clone());
        }
    }
}

/// A 3-broker cluster; the leader of the partition a producer writes to moves (reassignment). The broker
/// that lost leadership answers with NOT_LEADER_OR_FOLLOWER plus the new leader's endpoint (KIP-951,
/// Produce v10+): the client must learn only proxy addresses, and every acknowledged message is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_follows_a_leader_move_with_only_proxy_addresses() {
    let c3 = cluster_c3();
    let t0 = Instant::now();
    let topic = unique("kip951");
    c3.create_topic(&topic, 1, Some(&[&[1001, 1002]])).await;
    assert_eq!(c3.leaders(&topic)[&0], 1001);
    let tp = kafka::start_proxy(&[("c3", &c3)], "c3", "").await;
    let seen = SeenBrokers::default();
    let producer: FutureProducer<SeenBrokers> = ClientConfig::new()
        .set("bootstrap.servers", &tp.bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("statistics.interval.ms", "200")
        .set("message.timeout.ms", "60000")
        .create_with_context(seen.clone())
        .unwrap();
    let mut acked = BTreeSet::new();
    let send = |from: u64, n: u64| {
        let (p, t) = (producer.clone(), topic.clone());
        async move {
            let mut ok = Vec::new();
            for i in from..from + n {
                let v = i.to_string();
                p.send(
                    FutureRecord::to(&t).payload(&v).key(&v),
                    Duration::from_secs(60),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("message {i}: {e}"));
                ok.push(i);
            }
            ok
        }
    };
    acked.extend(send(0, 200).await);
    // move the partition: replicas [1001, 1002] -> [1002, 1003]; the leader becomes 1002
    let plan = c3.dir.join(format!("{topic}.json"));
    std::fs::write(
        &plan,
        format!(
            r#"{{"version":1,"partitions":[{{"topic":"{topic}","partition":0,"replicas":[1002,1003]}}]}}"#
        ),
    )
    .unwrap();
    let plan_s = plan.to_string_lossy().into_owned();
    // a producer keeps writing while the leader moves
    let (p, t) = (producer.clone(), topic.clone());
    let during = tokio::spawn(async move {
        let mut ok = Vec::new();
        for i in 10_000u64..10_300 {
            let v = i.to_string();
            if p.send(
                FutureRecord::to(&t).payload(&v).key(&v),
                Duration::from_secs(60),
            )
            .await
            .is_ok()
            {
                ok.push(i);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ok
    });
    let c = c3.clone();
    tokio::task::spawn_blocking(move || {
        c.tool(
            "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
            &["--reassignment-json-file", &plan_s, "--execute"],
        )
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while c3.leaders(&topic)[&0] != 1002 {
        assert!(Instant::now() < deadline, "the leader did not move to 1002");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = during.await.unwrap();
    assert_eq!(
        during.len(),
        300,
        "every message sent while the leader moved was acknowledged"
    );
    acked.extend(during);
    acked.extend(send(20_000, 200).await);
    // the client's view: statistics are emitted every 200 ms; wait for one after the move
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names = seen.0.lock().unwrap().clone();
    let leaked: Vec<&String> = names
        .iter()
        .filter(|n| {
            let addr = n
                .split("://")
                .last()
                .unwrap_or(n)
                .split('/')
                .next()
                .unwrap_or("");
            !addr.is_empty() && addr != "GroupCoordinator" && !is_proxy_address(&tp, addr)
        })
        .collect();
    println!("brokers known to the client: {names:?}");
    assert!(
        leaked.is_empty(),
        "the client learned real broker addresses: {leaked:?}"
    );
    let (missing, dups, _) = check_acked(&acked, &topic, &[&c3]);
    println!(
        "leader move 1001 -> 1002: {} acked, missing {}, duplicate copies {dups}, {:.1} s",
        acked.len(),
        missing.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but not on the cluster: {missing:?}"
    );
    assert_eq!(dups, 0, "idempotent producer wrote duplicates");
    tp.proxy.shutdown().await;
}

// ------------------------------------------------------------------------------------------------ consumer groups

/// Reads from `consumer` until every value of `want` was seen (bounded); returns every value read,
/// in order (records of other phases included: re-reads show up there).
async fn read_until(
    consumer: &StreamConsumer,
    want: &BTreeSet<String>,
    what: &str,
) -> Result<Vec<String>, String> {
    let mut missing = want.clone();
    let mut got = Vec::new();
    // partition -> (first, last) offset read: where the consumer started on this cluster
    let mut span: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !missing.is_empty() {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => {
                let v = String::from_utf8_lossy(m.payload().unwrap_or(b"")).into_owned();
                missing.remove(&v);
                got.push(v);
                let e = span.entry(m.partition()).or_insert((m.offset(), m.offset()));
                e.1 = m.offset();
            }
            Ok(Err(e)) => eprintln!("consumer: {e}"),
            Err(_) => {
                return Err(format!(
                    "{what}: {} of {} records never read within 60 s (e.g. {:?}); offsets read per partition (first, last): {span:?}",
                    missing.len(),
                    want.len(),
                    missing.first()
                ))
            }
        }
    }
    Ok(got)
}

/// Writes `phase-0 .. phase-59` directly to `k` (not through the proxy).
async fn produce_phase(k: &Kafka, topic: &str, phase: &str) -> BTreeSet<String> {
    let p: FutureProducer = k.direct_config().create().unwrap();
    let mut want = BTreeSet::new();
    for i in 0..60 {
        let v = format!("{phase}-{i}");
        p.send(
            FutureRecord::to(topic).payload(&v).key(&v),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        want.insert(v);
    }
    want
}

/// A consumer group through the proxy: reads north, fails over to west (must read every record written
/// there after the switch), fails back (must read every record written on north after that). Records of an
/// earlier phase read again are counted as re-reads and printed; a record never read fails the test.
async fn consumer_group_across_a_switch(protocol: &str) {
    let (a, b) = (cluster_a(), cluster_b());
    let t0 = Instant::now();
    let topic = unique(&format!("cg-{protocol}"));
    a.create_topic(&topic, PARTITIONS, None).await;
    b.create_topic(&topic, PARTITIONS, None).await;
    let clusters = [("north", &a), ("west", &b)];
    let tp = kafka::start_proxy(&clusters, "north", "").await;
    let group = unique("group");
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &tp.bootstrap)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("auto.commit.interval.ms", "200")
        .set("fetch.wait.max.ms", "100")
        .set("group.protocol", protocol);
    if protocol == "classic" {
        cc.set("session.timeout.ms", "10000");
    }
    // polled inline and declared after the proxy: on a failure it closes while the proxy still runs
    // (librdkafka's close can wait a long time for a coordinator that is gone)
    let consumer: StreamConsumer = cc.create().unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let phase1 = produce_phase(&a, &topic, "north1").await;
    read_until(&consumer, &phase1, "before the switch")
        .await
        .unwrap();
    let alive = |when: &str| {
        let fatal = consumer.client().fatal_error();
        assert!(
            fatal.is_none(),
            "{protocol} consumer died {when}: {fatal:?}"
        );
    };
    // let an auto-commit of phase 1 reach north before leaving it
    tokio::time::sleep(Duration::from_millis(600)).await;
    kafka::switch(&tp, &clusters, "west", "").await;
    let t_switch = Instant::now();
    let phase2 = produce_phase(&b, &topic, "west").await;
    let on_west = read_until(
        &consumer,
        &phase2,
        &format!("{protocol} group after the failover"),
    )
    .await;
    let failover_s = t_switch.elapsed().as_secs_f64();
    alive("after the failover");
    let on_west = on_west.unwrap_or_else(|e| {
        let per_partition = |k: &Kafka| {
            k.read_records(&topic)
                .iter()
                .fold(BTreeMap::<i32, usize>::new(), |mut m, r| {
                    *m.entry(r.0).or_default() += 1;
                    m
                })
        };
        panic!(
            "{e}; records per partition: west {:?}, north {:?}",
            per_partition(&b),
            per_partition(&a)
        )
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    kafka::switch(&tp, &clusters, "north", "").await;
    let t_back = Instant::now();
    let phase3 = produce_phase(&a, &topic, "north2").await;
    let on_north = read_until(
        &consumer,
        &phase3,
        &format!("{protocol} group after the failback"),
    )
    .await
    .unwrap();
    let failback_s = t_back.elapsed().as_secs_f64();
    alive("after the failback");
    let reread_west = on_west.iter().filter(|v| v.starts_with("north1-")).count();
    let reread_north = on_north.iter().filter(|v| v.starts_with("north1-")).count();
    println!(
        "{protocol} consumer group: every record read on west {failover_s:.1} s after the failover and on north {failback_s:.1} s after the failback; re-read: {reread_west} north records on west, {reread_north} north records after the failback; {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    drop(consumer);
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_consumer_group_across_failover_and_failback() {
    consumer_group_across_a_switch("classic").await;
}

// A KIP-848 consumer keeps its member epoch and fetch positions across the reconnect: the proxy fences
// it on the new cluster and refuses its fetches until it rejoined there (group_membership::rejoin), so
// it starts from that cluster's committed offsets and skips nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_consumer_group_across_failover_and_failback() {
    consumer_group_across_a_switch("consumer").await;
}

/// Reads `c`'s MSG lines until every value of `want` was seen (bounded).
async fn read_lines_until(c: &mut ChildClient, want: &BTreeSet<String>, what: &str) {
    let mut missing = want.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_line(left).await {
            Ok(Some(l)) => {
                if let Some(m) = parse_msg(&l) {
                    missing.remove(&m.value);
                }
            }
            Ok(None) => panic!(
                "{what}: the consumer's output ended; {} records unread",
                missing.len()
            ),
            Err(e) => panic!(
                "{what}: {} of {} records never read: {e}",
                missing.len(),
                want.len()
            ),
        }
    }
}

/// A classic librdkafka group (confluent-kafka 2.16) fails over to a cluster where its topic does
/// not exist yet; the topic appears there only once the group's first JoinGroup has reached the
/// proxy, as a producer's first request would have it auto-created a moment after the group
/// rejoined. Without the proxy's wait (`group_membership::topics_wait`) the group's leader
/// assigned the topic's partitions as they were then, none, and read nothing on west (seen in the
/// client matrix; 0 of 60 here). Every record written on west must be read, and when the group
/// joined before the topic existed, that join must have waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_classic_group_fails_over_before_its_topic_exists_there() {
    let (a, d) = (cluster_a(), cluster_d());
    let topic = unique("cg-later");
    a.create_topic(&topic, PARTITIONS, None).await;
    let clusters = [("north", &a), ("west", &d)];
    // Before the proxy counts anything: requests and the join wait are read below.
    kafka_sidecar::admin::install_recorder().expect("metrics recorder");
    let tp = kafka::start_proxy(&clusters, "north", "").await;
    let args = ConsumerArgs::topic(&tp.bootstrap, unique("group"), &topic, 120)
        .timeout_sec(120.0)
        .prop("topic.metadata.refresh.interval.ms", "3000");
    let mut c = ChildClient::confluent("confluent_consumer.py", &args.to_args()).unwrap();
    let north = produce_phase(&a, &topic, "north").await;
    read_lines_until(&mut c, &north, "before the switch").await;
    kafka::switch(&tp, &clusters, "west", "").await;
    let joins = || {
        metric(
            kafka_sidecar::admin::names::REQUESTS_TOTAL,
            &[("cluster", "west"), ("api", "JoinGroup")],
        )
    };
    // librdkafka either rejoins at once (the case the wait is for: its leader would assign the
    // missing topic's partitions, none) or, when its metadata said "unknown topic" first, waits
    // for the topic before it joins again. Both orders happen; the topic appears on west after
    // the first JoinGroup reached the proxy, or after 10 s without one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while joins() < 1.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let joined_first = joins() >= 1.0;
    d.create_topic(&topic, PARTITIONS, None).await;
    let west = produce_phase(&d, &topic, "west").await;
    read_lines_until(
        &mut c,
        &west,
        "after the failover to a cluster without the topic",
    )
    .await;
    let waits = kafka_sidecar::admin::names::GROUP_JOIN_WAITS_TOTAL;
    let waited = metric(waits, &[("outcome", "appeared")]);
    println!("joined west before its topic existed: {joined_first}; join waits (topic appeared): {waited}");
    if joined_first {
        assert_eq!(
            waited, 1.0,
            "the group's first join on west waited for the topic (and only that join)"
        );
    }
    let run = c.wait(Duration::from_secs(30)).await.unwrap();
    assert!(run.fatal().is_none(), "consumer died: {:?}", run.fatal());
    tp.proxy.shutdown().await;
}
