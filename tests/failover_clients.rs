//! Failover and failback with real non-Rust clients against two independent tansu
//! brokers (two "data centres" with different cluster ids; both report node id 111, so
//! both land on the same local broker port of the proxy). Every client runs as one child
//! process for the whole scenario and is never restarted:
//!
//! * the Java `kafka-clients` producer with its default config (idempotent, acks=all)
//!   and a Java consumer group on `events`;
//! * the kafka-python producer with its defaults (idempotent) and a Java consumer
//!   subscribed by regex to `(north-|west-)?events`, the active-active pattern where each
//!   data centre holds its own `events` and a mirror of the other's (`north-events` on
//!   west, `west-events` on north).
//!
//! The switch is a config file edit (`active_cluster`), north -> west, then back. What
//! is asserted, per producer: it ends with `DONE`, exit 0, no `FATAL` and no `ERR`
//! line; every acknowledged record is on one of the clusters, at exactly the partition
//! and offset its acknowledgement named; the acknowledgements come from north, then
//! west, then north again (so everything acknowledged after the switch is on the new
//! cluster); each cluster's partitions hold ids in increasing order. The ack gap around
//! each switch and the duplicates across the boundary are printed, not asserted.
//!
//! Waits are on events (ACK and MSG lines): after a switch the test waits for an
//! acknowledgement, and a consumed record, of an id produced a second after the switch;
//! which cluster served them is checked afterwards against both clusters' logs, read
//! directly with kcat.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::harness::TestProxy;
use common::readback::{read_topic_async, Log};
use common::tools::{
    kcat_stdin, parse_ack, parse_msg, ChildClient, ClientRun, ConsumerArgs, JavaClients,
    ProducerArgs, Tansu,
};
use tokio::sync::{mpsc, watch};

const TOPIC: &str = "events";
const PARTITIONS: u32 = 3;
/// Producer rate (records/s) and count: 50 s, long enough to outlast the switches and
/// the group's rejoins on each cluster (a few seconds here).
const RATE: f64 = 50.0;
const COUNT: u64 = 2500;
/// Bound on any single awaited event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(90);
/// A consumer's `--expect`: more than it will ever see (it is stopped at the end).
const NEVER: u64 = 1_000_000_000;

// ------------------------------------------------------------------------------------------------ clients

/// A child client whose stdout lines are timestamped as they arrive (by a task that owns
/// the [`ChildClient`] until the output ends or it is told to stop).
struct Running {
    name: String,
    rx: mpsc::UnboundedReceiver<(Instant, String)>,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    /// How many lines the test has taken from `rx` (an index into `seen`: the reader
    /// task may have pushed more than the test has looked at).
    taken: usize,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<ChildClient>>,
}

impl Running {
    fn new(mut client: ChildClient) -> Running {
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        let (stop, mut stop_rx) = watch::channel(false);
        let name = client.name.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    line = client.next_line(Duration::from_secs(600)) => match line {
                        Ok(Some(line)) => {
                            let at = Instant::now();
                            kept.lock().unwrap().push((at, line.clone()));
                            let _ = tx.send((at, line));
                        }
                        // end of output (the process exited), or 10 minutes of silence
                        _ => break,
                    },
                }
            }
            client
        });
        Running {
            name,
            rx,
            seen,
            taken: 0,
            stop,
            task: Some(task),
        }
    }

    /// Stops the client and panics with `msg` and everything it printed.
    async fn fail(&mut self, msg: String) -> ! {
        let _ = self.stop.send(true);
        let run = match self.task.take() {
            Some(t) => t.await.map(|mut c| {
                c.kill();
                c.snapshot().describe()
            }),
            None => Ok(String::new()),
        };
        let dump = std::env::temp_dir().join(format!(
            "failover_clients-{}-{}.lines",
            self.name,
            std::process::id()
        ));
        let all: Vec<String> = self
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        let _ = std::fs::write(&dump, all.join("\n"));
        panic!(
            "{}: {msg} (all lines: {})\n  last lines:\n  {}\n{}",
            self.name,
            dump.display(),
            self.tail(30),
            run.unwrap_or_default()
        );
    }

    fn tail(&self, n: usize) -> String {
        let seen = self.seen.lock().unwrap();
        seen[seen.len().saturating_sub(n)..]
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    }

    /// Takes lines until `pred` has returned true; panics (bounded) otherwise.
    async fn wait_until(&mut self, what: &str, mut pred: impl FnMut(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((_, line))) => {
                    self.taken += 1;
                    if pred(&line) {
                        return;
                    }
                }
                Ok(None) => {
                    self.fail(format!("output ended while waiting for: {what}"))
                        .await
                }
                Err(_) => {
                    self.fail(format!("not seen within {EVENT_TIMEOUT:?}: {what}"))
                        .await
                }
            }
        }
    }

    async fn wait_acks(&mut self, n: usize, what: &str) {
        let mut left = n;
        self.wait_until(what, |l| {
            if parse_ack(l).is_some() {
                left -= 1;
            }
            left == 0
        })
        .await;
    }

    /// Waits until the consumer has printed every (topic, value) in `want`.
    async fn wait_msgs(&mut self, want: &[(&str, &str)], what: &str) {
        let mut left: HashSet<(String, String)> = want
            .iter()
            .map(|(t, v)| (t.to_string(), v.to_string()))
            .collect();
        self.wait_until(what, |l| {
            if let Some(m) = parse_msg(l) {
                left.remove(&(m.topic, m.value));
            }
            left.is_empty()
        })
        .await;
    }

    /// The highest id acknowledged so far.
    fn max_acked(&self) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, l)| parse_ack(l))
            .map(|a| a.i)
            .max()
            .unwrap_or(0)
    }

    /// Waits for an acknowledgement of an id above `id`: the producer is producing
    /// (which cluster acknowledged it is checked afterwards, against the clusters' logs).
    async fn wait_ack_above(&mut self, id: u64, what: &str) {
        self.wait_until(what, |l| parse_ack(l).is_some_and(|a| a.i > id))
            .await;
    }

    /// Waits until the consumer prints a record of `events` with an id above `id`:
    /// something produced after that point, which only the then active cluster holds.
    async fn wait_msg_above(&mut self, id: u64, what: &str) {
        self.wait_until(what, |l| {
            parse_msg(l)
                .is_some_and(|m| m.topic == TOPIC && m.value.parse::<u64>().is_ok_and(|v| v > id))
        })
        .await;
    }

    /// Waits for the process to exit by itself (bounded), with every line it printed.
    async fn finish(self, timeout: Duration) -> (ClientRun, Vec<(Instant, String)>) {
        let mut task = self.task.expect("running");
        let mut client = match tokio::time::timeout(timeout, &mut task).await {
            Ok(c) => c.unwrap(),
            Err(_) => {
                let _ = self.stop.send(true);
                task.await.unwrap()
            }
        };
        let run = client
            .wait(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let seen = self.seen.lock().unwrap().clone();
        (run, seen)
    }

    /// Stops a client that would run on (a consumer) and returns what it printed.
    async fn kill(self) -> ClientRun {
        let _ = self.stop.send(true);
        let mut client = self.task.expect("running").await.unwrap();
        client.kill();
        client.snapshot()
    }
}

// ------------------------------------------------------------------------------------------------ clusters

/// `topic` on `cluster`, read directly (not through the proxy) with kcat. The topic must exist.
async fn read_topic(cluster: &Tansu, topic: &str) -> Log {
    read_topic_async(cluster.bootstrap(), topic.to_string())
        .await
        .unwrap_or_else(|| panic!("no topic {topic} on {}", cluster.cluster_id))
}

/// Writes `values` straight into `topic` on `cluster` (not through the proxy).
fn write_direct(cluster: &Tansu, topic: &str, values: &[&str]) {
    let input: String = values.iter().map(|v| format!("{v}\n")).collect();
    let out = kcat_stdin(
        &["-b", &cluster.bootstrap(), "-P", "-t", topic],
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "kcat -P {topic} on {}: {}",
        cluster.cluster_id,
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Dcs {
    north: Tansu,
    west: Tansu,
}

impl Dcs {
    /// Two tansu brokers; each holds `events` and a mirror topic of the other's.
    fn start() -> Dcs {
        let north = Tansu::builder().cluster_id("dc-north").start().unwrap();
        let west = Tansu::builder().cluster_id("dc-west").start().unwrap();
        for dc in [&north, &west] {
            dc.create_topic(TOPIC, PARTITIONS).unwrap();
            // The mirror of the other data centre's topic, and (empty) its own name
            // under the other's prefix: after a switch the regex consumer still fetches
            // its old assignment (`west-events` on west) until it rebalances, and tansu
            // 0.6 answers that Fetch (v12) with a tagged field valid only from v16, which
            // the Java client rejects as a parse error. A Kafka broker answers
            // UNKNOWN_TOPIC_OR_PARTITION, so this only keeps tansu out of the way.
            dc.create_topic("west-events", PARTITIONS).unwrap();
            dc.create_topic("north-events", PARTITIONS).unwrap();
        }
        Dcs { north, west }
    }

    fn clusters(&self) -> [(&'static str, String); 2] {
        [
            ("north", self.north.bootstrap()),
            ("west", self.west.bootstrap()),
        ]
    }
}

// ------------------------------------------------------------------------------------------------ checks

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum From {
    North,
    West,
}

/// The producer's acknowledgements checked against both clusters' logs. Panics unless
/// every acknowledged record is on a cluster at the (partition, offset) its
/// acknowledgement named and the acknowledgements come from north, then west, then
/// north. Prints the ack gap around each switch and the duplicates.
fn check_producer(
    name: &str,
    run: &ClientRun,
    lines: &[(Instant, String)],
    north: &Log,
    west: &Log,
) {
    assert!(run.fatal().is_none(), "{}", run.describe());
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let done = run
        .done()
        .unwrap_or_else(|| panic!("no DONE line: {}", run.describe()));
    assert!(run.errors().is_empty(), "{}", run.describe());
    assert_eq!(
        run.acked_ids().len() as u64,
        COUNT,
        "{done}: {}",
        run.describe()
    );

    // Who acknowledged each ACK line, in the order the client reported them.
    let expected = [From::North, From::West, From::North];
    let mut segment = 0;
    let mut boundaries: Vec<(usize, usize)> = Vec::new(); // (last ack of old, first ack of new)
    let acks: Vec<(Instant, common::tools::Ack)> = lines
        .iter()
        .filter_map(|(at, l)| Some((*at, parse_ack(l)?)))
        .collect();
    let mut newest = 0u64;
    for (k, (_, a)) in acks.iter().enumerate() {
        let id = a.i.to_string();
        // An acknowledgement without an offset (DUPLICATE_SEQUENCE_NUMBER: written
        // before) is checked by id on its partition.
        let found = |log: &Log| {
            if a.offset < 0 {
                log.range((a.partition, i64::MIN)..=(a.partition, i64::MAX))
                    .any(|(_, v)| *v == id)
            } else {
                log.get(&(a.partition, a.offset)) == Some(&id)
            }
        };
        let on_north = found(north);
        let on_west = found(west);
        let is = |f: From| match f {
            From::North => on_north,
            From::West => on_west,
        };
        assert!(
            on_north || on_west,
            "{name}: acknowledged id {} (partition {} offset {}) is on neither cluster there",
            a.i,
            a.partition,
            a.offset
        );
        let older = a.i < newest;
        newest = newest.max(a.i);
        if is(expected[segment]) {
            continue;
        }
        // A re-send the proxy confirmed as written is answered with the offset it got when it
        // was written, on the cluster before (as a broker answers a duplicate in its window):
        // a record older than one already acknowledged, not a move to another cluster.
        if segment > 0 && is(expected[segment - 1]) && older {
            continue;
        }
        assert!(
            segment + 1 < expected.len() && is(expected[segment + 1]),
            "{name}: ACK {k} (id {}) came from {} but the acks so far were from {:?}: \
             acknowledgements must go north, then west, then north",
            a.i,
            if on_north { "north" } else { "west" },
            expected[segment]
        );
        segment += 1;
        boundaries.push((k - 1, k));
    }
    assert_eq!(
        segment, 2,
        "{name}: acknowledgements from north, west and north again (reached {:?})",
        expected[segment]
    );

    // Ordering per partition on each cluster: a producer's ids only grow.
    for (dc, log) in [("north", north), ("west", west)] {
        for p in 0..PARTITIONS as i32 {
            let ids: Vec<u64> = log
                .range((p, i64::MIN)..=(p, i64::MAX))
                .filter_map(|(_, v)| v.parse().ok())
                .collect();
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "{name}: ids on {dc} partition {p} are not in increasing order: {ids:?}"
            );
        }
    }

    // Report: gap and duplicates.
    let mut copies: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
    for v in north.values() {
        if let Ok(id) = v.parse() {
            copies.entry(id).or_default().0 += 1;
        }
    }
    for v in west.values() {
        if let Ok(id) = v.parse() {
            copies.entry(id).or_default().1 += 1;
        }
    }
    for (which, (last_old, first_new)) in ["failover", "failback"].iter().zip(&boundaries) {
        let (t0, a0) = &acks[*last_old];
        let (t1, a1) = &acks[*first_new];
        let gap = t1.duration_since(*t0);
        let lo = a0.i.min(a1.i);
        let hi = a0.i.max(a1.i);
        let on_both: Vec<u64> = copies
            .range(lo.saturating_sub(50)..=hi + 50)
            .filter(|(_, (n, w))| *n > 0 && *w > 0)
            .map(|(id, _)| *id)
            .collect();
        println!(
            "{name} {which}: ack gap {} ms (last old-cluster ack id {}, first new-cluster ack id {}); \
             ids written to both clusters around it: {on_both:?}",
            gap.as_millis(),
            a0.i,
            a1.i
        );
    }
    let on_both = copies.values().filter(|(n, w)| *n > 0 && *w > 0).count();
    let extra: u32 = copies.values().map(|(n, w)| n + w - 1).sum();
    println!(
        "{name}: {done}; north holds {} ids, west {} ids; on both clusters: {on_both}; duplicate copies in total: {extra}",
        copies.values().filter(|(n, _)| *n > 0).count(),
        copies.values().filter(|(_, w)| *w > 0).count(),
    );
}

/// Panics unless the consumer read `events` from west between the failover and the
/// failback (a record at a partition and offset where west holds it and north does
/// not), and from north after the failback. `marks` are the times of the failover and
/// of the failback.
fn check_consumer_follows(
    name: &str,
    lines: &[(Instant, String)],
    marks: (Instant, Instant),
    north: &Log,
    west: &Log,
) {
    let from = |range: &dyn Fn(Instant) -> bool, on: &Log, other: &Log| {
        lines
            .iter()
            .filter(|(at, _)| range(*at))
            .filter_map(|(_, l)| parse_msg(l))
            .filter(|m| m.topic == TOPIC)
            .filter(|m| {
                let at = (m.partition, m.offset);
                on.get(&at) == Some(&m.value) && other.get(&at) != Some(&m.value)
            })
            .count()
    };
    let (failover, failback) = marks;
    let on_west = from(&|at| at > failover && at < failback, west, north);
    let on_north = from(&|at| at > failback, north, west);
    println!(
        "{name}: after the failover read {on_west} records only west holds; after the failback {on_north} only north holds"
    );
    assert!(
        on_west > 0,
        "{name}: between failover and failback it read nothing that is only on west"
    );
    assert!(
        on_north > 0,
        "{name}: after the failback it read nothing that is only on north"
    );
}

/// Prints what a consumer read, per topic and cluster (MSG lines matched against the
/// cluster logs).
fn report_consumer(name: &str, run: &ClientRun, logs: &[(&str, &str, &Log)]) {
    let msgs = run.msgs();
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for m in &msgs {
        for (dc, topic, log) in logs {
            if *topic == m.topic && log.get(&(m.partition, m.offset)) == Some(&m.value) {
                *per.entry(format!("{topic}@{dc}")).or_default() += 1;
            }
        }
    }
    let distinct: BTreeSet<(&str, &str)> = msgs
        .iter()
        .map(|m| (m.topic.as_str(), m.value.as_str()))
        .collect();
    let other: Vec<&String> = run
        .lines
        .iter()
        .filter(|l| !l.starts_with("MSG ") && !l.starts_with("VERSION"))
        .collect();
    println!(
        "{name}: {} MSG lines, {} distinct (topic, value), read per topic@cluster: {per:?}; other lines: {other:?}",
        msgs.len(),
        distinct.len()
    );
}

/// Switches the proxy to `to` by a config edit. Returns the id above which records
/// exist only on `to` (a second of production after the switch) and when it happened.
async fn switch(
    tp: &TestProxy,
    clusters: &[(&str, String)],
    to: &str,
    producer: &Running,
) -> (u64, Instant) {
    tp.switch_to(clusters, to, "").await;
    (producer.max_acked() + RATE as u64, Instant::now())
}

/// Lets the producer finish, stops the consumer, and checks both against the clusters'
/// logs (see [`check_producer`] and [`check_consumer_follows`]). Returns the consumer's
/// run and the `events` logs of north and west.
async fn finish_and_check(
    dcs: &Dcs,
    (producer_name, producer): (&str, Running),
    (consumer_name, consumer): (&str, Running),
    switched_at: (Instant, Instant),
) -> (ClientRun, Log, Log) {
    let (run, lines) = producer.finish(Duration::from_secs(120)).await;
    let consumer_lines = consumer.seen.lock().unwrap().clone();
    let consumer_run = consumer.kill().await;
    let north = read_topic(&dcs.north, TOPIC).await;
    let west = read_topic(&dcs.west, TOPIC).await;
    check_producer(producer_name, &run, &lines, &north, &west);
    check_consumer_follows(consumer_name, &consumer_lines, switched_at, &north, &west);
    (consumer_run, north, west)
}

// ------------------------------------------------------------------------------------------------ tests

/// Java kafka-clients, default producer config (idempotent since 3.0, acks=all), and a
/// Java consumer group on `events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_default_producer_and_consumer_group_survive_failover_and_failback() {
    common::harness::init_logging();
    let dcs = Dcs::start();
    let clusters = dcs.clusters();
    let tp = TestProxy::start(&clusters, "north").await;

    let mut consumer = Running::new(
        ChildClient::java_consumer(
            JavaClients::V3_9,
            &ConsumerArgs::topic(&tp.bootstrap, "failover-group", TOPIC, NEVER).timeout_sec(600.0),
        )
        .unwrap(),
    );
    let mut producer = Running::new(
        ChildClient::java_producer(
            JavaClients::V3_9,
            &ProducerArgs::new(&tp.bootstrap, TOPIC, COUNT).rate(RATE),
        )
        .unwrap(),
    );

    // Steady state on north.
    producer.wait_acks(100, "acks from north").await;
    consumer
        .wait_until("the group consumes on north", |l| l.starts_with("MSG "))
        .await;

    // Failover. Everything produced more than a second after it exists only on west.
    let (at_failover, failover) = switch(&tp, &clusters, "west", &producer).await;
    producer
        .wait_ack_above(at_failover, "the producer goes on after the failover")
        .await;
    consumer
        .wait_msg_above(at_failover, "the group resumes after the failover")
        .await;

    // Failback.
    let (at_failback, failback) = switch(&tp, &clusters, "north", &producer).await;
    producer
        .wait_ack_above(at_failback, "the producer goes on after the failback")
        .await;
    consumer
        .wait_msg_above(at_failback, "the group resumes after the failback")
        .await;

    let (consumer_run, north, west) = finish_and_check(
        &dcs,
        ("java producer (default config)", producer),
        ("java consumer group", consumer),
        (failover, failback),
    )
    .await;
    report_consumer(
        "java consumer group",
        &consumer_run,
        &[("north", TOPIC, &north), ("west", TOPIC, &west)],
    );
    let status = tp.proxy.shared.status();
    assert_eq!(status["active_cluster"], "north");
    assert_eq!(status["switches"], 2);
    tp.proxy.shutdown().await;
}

/// kafka-python with its defaults (idempotent) producing `events`, and a Java consumer
/// subscribed to `(north-|west-)?events`: on north it reads `events` and `west-events`,
/// after the switch `events` and `north-events` on west, after the failback north again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_default_producer_and_regex_consumer_survive_failover_and_failback() {
    common::harness::init_logging();
    let dcs = Dcs::start();
    let clusters = dcs.clusters();
    // What the mirroring would have copied: west's events on north, north's on west.
    write_direct(
        &dcs.north,
        "west-events",
        &["west-mirrored-0", "west-mirrored-1"],
    );
    write_direct(
        &dcs.west,
        "north-events",
        &["north-mirrored-0", "north-mirrored-1"],
    );
    let tp = TestProxy::start(&clusters, "north").await;

    let mut consumer = Running::new(
        ChildClient::java_consumer(
            JavaClients::V3_9,
            &ConsumerArgs::pattern(&tp.bootstrap, "regex-group", "(north-|west-)?events", NEVER)
                .timeout_sec(600.0),
        )
        .unwrap(),
    );
    let mut producer = Running::new(
        ChildClient::python_producer(&ProducerArgs::new(&tp.bootstrap, TOPIC, COUNT).rate(RATE))
            .unwrap(),
    );

    // Steady state on north: both topics the pattern matches there.
    producer.wait_acks(100, "acks from north").await;
    consumer
        .wait_msgs(
            &[
                ("west-events", "west-mirrored-0"),
                ("west-events", "west-mirrored-1"),
            ],
            "the regex consumer reads the mirror topic on north",
        )
        .await;
    consumer
        .wait_until("the regex consumer reads events on north", |l| {
            l.starts_with("MSG events ")
        })
        .await;

    // Failover: the pattern now matches west's topics.
    let (at_failover, failover) = switch(&tp, &clusters, "west", &producer).await;
    producer
        .wait_ack_above(at_failover, "the producer goes on after the failover")
        .await;
    consumer
        .wait_msgs(
            &[
                ("north-events", "north-mirrored-0"),
                ("north-events", "north-mirrored-1"),
            ],
            "the regex consumer reads north-events on west",
        )
        .await;
    consumer
        .wait_msg_above(at_failover, "the regex consumer reads events on west")
        .await;

    // Failback.
    let (at_failback, failback) = switch(&tp, &clusters, "north", &producer).await;
    write_direct(&dcs.north, "west-events", &["west-mirrored-late"]);
    producer
        .wait_ack_above(at_failback, "the producer goes on after the failback")
        .await;
    consumer
        .wait_msgs(
            &[("west-events", "west-mirrored-late")],
            "the regex consumer resumes west-events on north",
        )
        .await;
    consumer
        .wait_msg_above(at_failback, "the regex consumer resumes events on north")
        .await;

    let (consumer_run, north, west) = finish_and_check(
        &dcs,
        ("kafka-python producer (defaults)", producer),
        ("java regex consumer", consumer),
        (failover, failback),
    )
    .await;
    let north_mirror = read_topic(&dcs.north, "west-events").await;
    let west_mirror = read_topic(&dcs.west, "north-events").await;
    report_consumer(
        "java regex consumer",
        &consumer_run,
        &[
            ("north", TOPIC, &north),
            ("west", TOPIC, &west),
            ("north", "west-events", &north_mirror),
            ("west", "north-events", &west_mirror),
        ],
    );
    let status = tp.proxy.shared.status();
    assert_eq!(status["active_cluster"], "north");
    assert_eq!(status["switches"], 2);
    tp.proxy.shutdown().await;
}
