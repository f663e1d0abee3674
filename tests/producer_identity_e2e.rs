//! Idempotent producers through failover and failback, end to end: real clients
//! (Java kafka-clients with its default config, kafka-python with its defaults,
//! librdkafka with `enable.idempotence=true`), two real brokers (tansu), the proxy in
//! between, switches by config edit. Every acknowledged record is looked up on the
//! clusters afterwards: the test fails if any is missing, if a client reports an error
//! or dies, or if it does not finish.
//!
//! Scenarios: two freshly started brokers (their producer ids collide: both hand out
//! the same first id); brokers whose ids differ; and a switch storm (several switches
//! at random moments, seed printed) under three producers, one idle across a switch,
//! plus one started right after a switch.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::harness::TestProxy;
use common::readback::read_topic;
use common::tools::{parse_ack, Ack, ChildClient, JavaClients, ProducerArgs, Tansu};
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::watch;

const TOPIC: &str = "orders";
const EVENT_TIMEOUT: Duration = Duration::from_secs(90);

/// One producer under test and what it reported.
enum Client {
    Child(ChildClient),
    Rdkafka(tokio::task::JoinHandle<RdRun>),
}

struct RdRun {
    acks: Vec<Ack>,
    errors: Vec<String>,
}

struct TestProducer {
    name: String,
    client: Client,
    /// Highest id acknowledged so far (fed by the client's output).
    max_acked: watch::Receiver<u64>,
    start: u64,
    count: u64,
}

/// An rdkafka idempotent producer in this process: `count` ids from `start` at `rate`,
/// `pause_at` = Some((after_n, resume)) stops after n sends until `resume` turns true.
fn rdkafka_producer(
    name: &str,
    bootstrap: &str,
    start: u64,
    count: u64,
    rate: f64,
    pause: Option<(u64, watch::Receiver<bool>)>,
) -> TestProducer {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "120000")
        .set("linger.ms", "5")
        .create()
        .expect("rdkafka producer");
    let (tx, rx) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        let mut sends = futures::stream::FuturesUnordered::new();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let mut pause = pause;
        let mut run = RdRun {
            acks: vec![],
            errors: vec![],
        };
        use futures::StreamExt;
        for i in start..start + count {
            if let Some((after, resume)) = pause.as_mut() {
                if i - start == *after {
                    // Idle across a switch: nothing in flight, nothing sent.
                    while let Some(r) = sends.next().await {
                        record(&mut run, &tx, r);
                    }
                    let _ = resume.wait_for(|r| *r).await;
                }
            }
            tick.tick().await;
            let p = producer.clone();
            sends.push(async move {
                let v = i.to_string();
                let r = p
                    .send(
                        FutureRecord::to(TOPIC).payload(&v).key(&v),
                        Duration::from_secs(130),
                    )
                    .await;
                (i, r.map(|d| (d.partition, d.offset)).map_err(|(e, _)| e))
            });
            while let Some(Some(r)) = futures::FutureExt::now_or_never(sends.next()) {
                record(&mut run, &tx, r);
            }
        }
        while let Some(r) = sends.next().await {
            record(&mut run, &tx, r);
        }
        let _ = producer.flush(Duration::from_secs(10));
        run
    });
    TestProducer {
        name: name.to_string(),
        client: Client::Rdkafka(task),
        max_acked: rx,
        start,
        count,
    }
}

type SendResult = (u64, Result<(i32, i64), rdkafka::error::KafkaError>);

fn record(run: &mut RdRun, tx: &watch::Sender<u64>, (i, r): SendResult) {
    match r {
        Ok((partition, offset)) => {
            run.acks.push(Ack {
                i,
                partition,
                offset,
            });
            tx.send_if_modified(|m| {
                let up = i > *m;
                *m = (*m).max(i);
                up
            });
        }
        Err(e) => run.errors.push(format!("id {i}: {e}")),
    }
}

/// A Java or Python child producer whose ACK lines feed `max_acked`.
fn child_producer(name: &str, mut client: ChildClient, start: u64, count: u64) -> TestProducer {
    let (tx, rx) = watch::channel(0u64);
    let mut lines = client.take_line_stream();
    tokio::spawn(async move {
        while let Some(l) = lines.recv().await {
            if let Some(a) = parse_ack(&l) {
                tx.send_if_modified(|m| {
                    let up = a.i > *m;
                    *m = (*m).max(a.i);
                    up
                });
            }
        }
    });
    TestProducer {
        name: name.to_string(),
        client: Client::Child(client),
        max_acked: rx,
        start,
        count,
    }
}

impl TestProducer {
    /// Waits until the producer acknowledged an id above `above`.
    async fn wait_ack_above(&mut self, above: u64, what: &str) {
        let name = self.name.clone();
        tokio::time::timeout(EVENT_TIMEOUT, self.max_acked.wait_for(|m| *m > above))
            .await
            .unwrap_or_else(|_| {
                panic!("{name}: no ack above {above} within {EVENT_TIMEOUT:?} ({what})")
            })
            .unwrap_or_else(|_| panic!("{name}: ended before an ack above {above} ({what})"));
    }

    fn acked(&self) -> u64 {
        *self.max_acked.borrow()
    }

    /// Waits for the end and returns its acknowledgements, with every reported error.
    async fn finish(self) -> (String, Vec<Ack>, Vec<String>) {
        match self.client {
            Client::Child(mut c) => {
                let run = c.wait(Duration::from_secs(240)).await.unwrap();
                let mut problems: Vec<String> = run.errors().into_iter().cloned().collect();
                if let Some(f) = run.fatal() {
                    problems.push(f.clone());
                }
                if run.done().is_none() || run.code != Some(0) {
                    problems.push(format!("did not finish cleanly: {}", run.describe()));
                }
                (self.name, run.acks(), problems)
            }
            Client::Rdkafka(task) => {
                let run = tokio::time::timeout(Duration::from_secs(240), task)
                    .await
                    .expect("rdkafka producer finishes")
                    .unwrap();
                (self.name, run.acks, run.errors)
            }
        }
    }
}

/// Every producer's acknowledgements, looked up on both clusters.
async fn check_all(producers: Vec<TestProducer>, north: &Tansu, west: &Tansu) {
    let mut expected = HashMap::new();
    let mut results = vec![];
    for p in producers {
        expected.insert(p.name.clone(), (p.start, p.count));
        results.push(p.finish().await);
    }
    // The topic may not exist on a cluster nothing was written to.
    let read = |cluster: &Tansu| read_topic(&cluster.bootstrap(), TOPIC).unwrap_or_default();
    let (n, w) = (read(north), read(west));
    println!(
        "read back: north {} records, west {} records",
        n.len(),
        w.len()
    );
    let mut copies: HashMap<String, u32> = HashMap::new();
    for v in n.values().chain(w.values()) {
        *copies.entry(v.clone()).or_default() += 1;
    }
    let mut failures = vec![];
    for (name, acks, problems) in &results {
        let (start, count) = expected[name];
        // An acknowledgement without an offset (a duplicate the broker or the proxy
        // confirmed) is checked by id: the record must be on a cluster somewhere.
        let missing: Vec<u64> = acks
            .iter()
            .filter(|a| {
                let v = a.i.to_string();
                if a.offset < 0 {
                    return !copies.contains_key(&v);
                }
                n.get(&(a.partition, a.offset)) != Some(&v)
                    && w.get(&(a.partition, a.offset)) != Some(&v)
            })
            .map(|a| a.i)
            .collect();
        let nowhere = missing
            .iter()
            .filter(|i| !copies.contains_key(&i.to_string()))
            .count();
        if !missing.is_empty() {
            let a = acks.iter().find(|a| a.i == missing[0]).unwrap();
            let at_n = n.get(&(a.partition, a.offset));
            let at_w = w.get(&(a.partition, a.offset));
            println!("{name}: {nowhere} of the missing are on no cluster at all; first missing {a:?}: north has {at_n:?} there, west {at_w:?}");
        }
        let mut acked: Vec<u64> = acks.iter().map(|a| a.i).collect();
        acked.sort_unstable();
        acked.dedup();
        let without_offset = acks.iter().filter(|a| a.offset < 0).count();
        if without_offset > 0 {
            println!("{name}: {without_offset} acknowledgements without an offset (duplicates confirmed), checked by id");
        }
        let dups = (start..start + count)
            .filter(|i| copies.get(&i.to_string()).copied().unwrap_or(0) > 1)
            .count();
        println!(
            "{name}: {} acknowledged of {count}, {} missing from both clusters, {dups} written twice, errors: {problems:?}",
            acked.len(),
            missing.len()
        );
        if !missing.is_empty() {
            failures.push(format!(
                "{name}: {} acknowledged records are on neither cluster at the acknowledged position, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            ));
        }
        if acked.len() as u64 != count {
            failures.push(format!("{name}: {} of {count} acknowledged", acked.len()));
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {problems:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

struct Scenario {
    /// Burn producer ids on west first, so the clusters' numbering differs.
    ids_differ: bool,
    topic_on_west: bool,
}

async fn failover_and_failback(s: Scenario) {
    common::harness::init_logging();
    let north = Tansu::builder().cluster_id("dc-north").start().unwrap();
    let west = Tansu::builder().cluster_id("dc-west").start().unwrap();
    north.create_topic(TOPIC, 3).unwrap();
    if s.topic_on_west {
        west.create_topic(TOPIC, 3).unwrap();
    }
    if s.ids_differ {
        west.create_topic("warmup", 1).unwrap();
        for _ in 0..7 {
            let p: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", west.bootstrap())
                .set("enable.idempotence", "true")
                .create()
                .unwrap();
            p.send(
                FutureRecord::to("warmup").payload("x").key("x"),
                Duration::from_secs(30),
            )
            .await
            .expect("warm-up produce on west");
        }
    }
    let clusters = [("north", north.bootstrap()), ("west", west.bootstrap())];
    let tp = TestProxy::start(&clusters, "north").await;
    let (count, rate) = (1000u64, 50.0);
    let mut producers = vec![
        child_producer(
            "java (default config)",
            ChildClient::java_producer(
                JavaClients::V3_9,
                &ProducerArgs::new(&tp.bootstrap, TOPIC, count).rate(rate),
            )
            .unwrap(),
            0,
            count,
        ),
        child_producer(
            "kafka-python (defaults)",
            ChildClient::python_producer(
                &ProducerArgs::new(&tp.bootstrap, TOPIC, count)
                    .rate(rate)
                    .start_at(100_000),
            )
            .unwrap(),
            100_000,
            count,
        ),
        rdkafka_producer(
            "librdkafka (idempotent)",
            &tp.bootstrap,
            200_000,
            count,
            rate,
            None,
        ),
    ];
    for p in producers.iter_mut() {
        let s = p.start;
        p.wait_ack_above(s + 50, "steady state on north").await;
    }
    for to in ["west", "north"] {
        tp.switch_to(&clusters, to, "").await;
        for p in producers.iter_mut() {
            let above = p.acked() + 50;
            p.wait_ack_above(above, &format!("producing after the switch to {to}"))
                .await;
        }
    }
    check_all(producers, &north, &west).await;
    let stats = tp.proxy.shared.features.producers.stats();
    println!("sequencer: {stats:?}");
    assert_eq!(stats.unverified_duplicates, 0);
    tp.proxy.shutdown().await;
}

// tansu 0.6 acknowledges a Produce to a topic it does not have (err 0, offsets) and
// keeps nothing readable, and never creates a topic for the Java client: a failover
// target without the topic is tested on Apache Kafka (auto.create.topics.enable) in
// the real-Kafka suite, and in the simulation (`producer_identity_sim.rs`).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_clusters_whose_producer_ids_collide() {
    failover_and_failback(Scenario {
        ids_differ: false,
        topic_on_west: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_whose_producer_ids_differ() {
    failover_and_failback(Scenario {
        ids_differ: true,
        topic_on_west: true,
    })
    .await;
}

/// Several switches at random moments under load: two busy producers, one idle across
/// a switch, and one that starts right after a switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_storm_loses_nothing() {
    common::harness::init_logging();
    let seed: u64 = std::env::var("STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("switch storm seed {seed} (replay with STORM_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let north = Tansu::builder().cluster_id("dc-north").start().unwrap();
    let west = Tansu::builder().cluster_id("dc-west").start().unwrap();
    north.create_topic(TOPIC, 3).unwrap();
    west.create_topic(TOPIC, 3).unwrap();
    let clusters = [("north", north.bootstrap()), ("west", west.bootstrap())];
    let tp = Arc::new(TestProxy::start(&clusters, "north").await);
    let (resume_tx, resume_rx) = watch::channel(false);
    let mut producers = vec![
        rdkafka_producer("busy-1", &tp.bootstrap, 0, 1500, 100.0, None),
        rdkafka_producer("busy-2", &tp.bootstrap, 100_000, 1500, 100.0, None),
        rdkafka_producer(
            "idle-across-a-switch",
            &tp.bootstrap,
            200_000,
            300,
            100.0,
            Some((100, resume_rx)),
        ),
    ];
    for p in producers.iter_mut() {
        let s = p.start;
        p.wait_ack_above(s + 20, "steady state").await;
    }
    let switches = rng.random_range(4..=6);
    let mut active = "north";
    for k in 0..switches {
        let pause = Duration::from_millis(rng.random_range(200..1500));
        tokio::time::sleep(pause).await; // a random moment, not a synchronisation
        active = if active == "north" { "west" } else { "north" };
        tp.switch_to(&clusters, active, "").await;
        println!("switch {k} to {active} after {pause:?}");
        if k == 0 {
            producers.push(rdkafka_producer(
                "new-after-a-switch",
                &tp.bootstrap,
                300_000,
                300,
                100.0,
                None,
            ));
        }
        if k == 1 {
            let _ = resume_tx.send(true);
        }
    }
    // Everybody makes progress on the last cluster before the end.
    for p in producers.iter_mut() {
        if p.acked() + 1 < p.start + p.count {
            let above = p.acked();
            p.wait_ack_above(above, "progress after the storm").await;
        }
    }
    check_all(producers, &north, &west).await;
    let stats = tp.proxy.shared.features.producers.stats();
    println!("sequencer: {stats:?}");
    assert_eq!(stats.unverified_duplicates, 0);
}
