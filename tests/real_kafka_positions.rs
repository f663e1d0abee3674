//! Issue 21, "consumers pick up where they left off on the other cluster": consumer positions across a
//! failover (north -> west) and a failback (west -> north) on the MirrorMaker 2 DR pair of
//! `scripts/kafka-cluster.sh dr-pair` (see `tests/real_kafka_dr.rs`, `docs/dr-drill.md`).
//!
//! Topic `T` (2 partitions) exists on both clusters; MirrorMaker 2 (DefaultReplicationPolicy) mirrors it
//! to `north.T` on west and `west.T` on north. Three producers write ids (a record's value is its id):
//! one through the proxy (ids from 0, 100/s, the application that fails over), and one directly on
//! each cluster (north from 1,000,000, west from 2,000,000, 20/s, round robin over the partitions: the
//! other applications of each data centre). So at each switch every partition of every topic the
//! consumers read moves on, through the mirror too, and a consumer that has read a record written after
//! the switch's snapshot on every partition has caught up: each phase ends at that event, no timer.
//!
//! Nine consumer processes subscribe through the proxy to `^((north|west)\.)?T$`, each a group of its
//! own; groups named `nosync-*` are excluded from MirrorMaker 2's offset sync, the others are synced:
//! * Java kafka-clients 4.4, classic protocol, its default `auto.offset.reset=latest`: synced and not;
//! * Java kafka-clients 3.9, classic, `latest`, not synced;
//! * Java 4.4 KIP-848 (`group.protocol=consumer`), `latest`: synced and not;
//! * confluent-kafka (librdkafka), classic, `earliest`, auto commit every 1 s: synced and not;
//! * franz-go, classic, `earliest` (ConsumeRegex): synced and not.
//!
//! The Java clients commit after every poll, franz-go after every fetch, librdkafka every second.
//!
//! Per consumer, per switch, per partition of the cluster it moved to (its local `T` and the mirror of
//! the other's), over the records there up to the high watermark of a snapshot taken after the switch:
//! * skipped: records never read by the group (not before the switch, not after): **asserted 0**;
//! * re-read: reads after the switch of records the group had read before it (printed, not asserted;
//!   the goal of issue 21 is at most about one fetched batch, plus what the client read but had not
//!   committed yet). Also printed: where the group started after the switch on each partition
//!   (`first offset read / first offset it had not read yet`).
//!
//! Records a `latest` group could never have read (written before its first read of that partition on
//! north) are left out. Asserted too: no acknowledged record is lost (each is in `T` on north or west),
//! no producer error, and no consumer process died (no FATAL, no exit).
//!
//! A record skipped at the failover and still unread after the failback counts at both switches.
//!
//! Baseline: main 5cdf419, before the proxy carries positions over (2-core VM shared with other jobs, 4
//! runs, ~1,100-1,500 records per partition of north's `T` at the failover, ~190-260 on west's `T`).
//! Re-read / skipped per partition (both partitions and all runs: min-max):
//!
//! | consumer | failover west:`T` | failover west:`north.T` | failback north:`T` | failback north:`west.T` |
//! |---|---|---|---|---|
//! | java-4.4 classic latest, nosync | 0 / 10-169 | 0 / 11-30 | 19-87 / 0 | 108-245 / 0 |
//! | java-4.4 classic latest, synced | 0 / 9-175 | 70-130 / 0 | 38-112 / 0 | 31-219 / 0-172 |
//! | java-3.9 classic latest, nosync | 0 / 8-172 | 0 / 6-56 | 18-58 / 0 | 104-372 / 0 |
//! | java-4.4 kip848 latest, nosync | 0 / 12-169 | 0 / 27-66 | 4-22 / 0 | 11-374 / 0 |
//! | java-4.4 kip848 latest, synced | 0 / 155-239 | 10-90 / 0 | 42-161 / 0 | 2-35 / 151-232 |
//! | librdkafka classic earliest, nosync | 189-256 / 0 | 1136-1532 / 0 | 53-186 / 0 | 240-397 / 0 |
//! | librdkafka classic earliest, synced | 189-255 / 0 | 88-217 / 0 | 42-109 / 0 | 82-135 / 0 |
//! | franz-go classic earliest, nosync | 189-255 / 0 | 1138-1531 / 0 | 42-1498 / 0 | 232-387 / 0 |
//! | franz-go classic earliest, synced | 189-255 / 0 | 88-130 / 0 | 44-1082 / 0 | 4-84 / 0 |
//!
//! Read: every `latest` group skips on west's `T` at the failover (no position there: it read those
//! records as `west.T` on north, and MM2 syncs only T -> north.T), and the unsynced ones skip the tail of
//! `north.T` they had not read at the switch; `earliest` groups re-read all of west's `T`, and without
//! sync all of `north.T`. The synced groups re-read 10-220 per partition of `north.T` (MM2's
//! `offset.lag.max=100` spacing). At the failback, groups resume north's `T` from their last commit there
//! (re-reading what they read of it on west), and `west.T` from their north commit of before the
//! failover (re-reading the west era) or MM2's sync, which starts the synced `latest` groups past what
//! they skipped on west (so it counts again). franz-go resumed north's `T` at its west offsets or from 0 in 3 of 4 runs (870-1,500
//! re-read). Record batches hold 1-9 records at the switch points (mean 1.3-3 per partition), so one
//! batch is the scale the re-reads should come down to.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kafka::{self, lease_dr_pair, unique, Kafka};
use common::tools::{parse_msg, ChildClient, ConsumerArgs, JavaClients};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

const PARTITIONS: i32 = 2;
const NORTH_BG: u64 = 1_000_000;
const WEST_BG: u64 = 2_000_000;
/// Bound on each awaited phase (all consumers together).
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------------------------------------ producers

/// Ids acknowledged, with when.
type Acks = Arc<Mutex<Vec<(u64, Instant)>>>;

struct Producing {
    acks: Acks,
    /// Ids at or above this were handed to the client after it was read (see [`Producing::next`]).
    next: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Producing {
    /// Every id from here on is sent after this call returns: on its partition it lands above any
    /// high watermark read before.
    fn next(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }
    fn count(&self) -> usize {
        self.acks.lock().unwrap().len()
    }
    fn ids(&self) -> BTreeSet<u64> {
        self.acks.lock().unwrap().iter().map(|a| a.0).collect()
    }
}

/// Writes ids `first..` to `topic` every `every`, until `stop` (bounded: 60,000 records). With
/// `round_robin`, id i goes to partition i % PARTITIONS; otherwise the client partitions by key.
fn produce(
    config: ClientConfig,
    topic: &str,
    first: u64,
    every: Duration,
    round_robin: bool,
    mut stop: watch::Receiver<bool>,
) -> Producing {
    let producer: FutureProducer = config.create().expect("producer");
    let acks: Acks = Default::default();
    let next = Arc::new(AtomicU64::new(first));
    let (a, n, topic) = (acks.clone(), next.clone(), topic.to_string());
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let mut pending = Vec::new();
        for i in first..first + 60_000 {
            tokio::select! { _ = tick.tick() => {}, _ = stop.changed() => break }
            n.store(i + 1, Ordering::SeqCst);
            let (p, t, a) = (producer.clone(), topic.clone(), a.clone());
            pending.push(tokio::spawn(async move {
                let v = i.to_string();
                let mut r = FutureRecord::to(&t).payload(&v).key(&v);
                if round_robin {
                    r = r.partition((i % PARTITIONS as u64) as i32);
                }
                match p.send(r, Duration::from_secs(60)).await {
                    Ok(_) => {
                        a.lock().unwrap().push((i, Instant::now()));
                        Ok(())
                    }
                    Err((e, _)) => Err(format!("{i}: {e}")),
                }
            }));
        }
        let mut errors = Vec::new();
        for h in pending {
            if let Err(e) = h.await.unwrap() {
                errors.push(e);
            }
        }
        errors
    });
    Producing { acks, next, task }
}

// ------------------------------------------------------------------------------------------------ consumers

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    JavaClassic(JavaClients),
    JavaKip848,
    Confluent,
    Franz,
}

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::JavaClassic(g) => format!("java-{} classic latest", g.name()),
            Kind::JavaKip848 => "java-4.4 kip848 latest".into(),
            Kind::Confluent => "librdkafka classic earliest".into(),
            Kind::Franz => "franz-go classic earliest".into(),
        }
    }

    fn start(self, bootstrap: &str, group: &str, pattern: &str) -> ChildClient {
        let timeout = 900.0;
        let expect = u32::MAX as u64;
        let started = match self {
            Kind::JavaClassic(g) => ChildClient::java_consumer(
                g,
                &ConsumerArgs::pattern(bootstrap, group, pattern, expect)
                    .timeout_sec(timeout)
                    .prop("auto.offset.reset", "latest"),
            ),
            Kind::JavaKip848 => ChildClient::java_consumer(
                JavaClients::V4_4,
                &ConsumerArgs::pattern(bootstrap, group, pattern, expect)
                    .timeout_sec(timeout)
                    .prop("auto.offset.reset", "latest")
                    .prop("group.protocol", "consumer"),
            ),
            // librdkafka and franz-go take a topic starting with ^ as a regex
            Kind::Confluent => ChildClient::confluent(
                "confluent_consumer.py",
                &ConsumerArgs::topic(bootstrap, group, pattern, expect)
                    .timeout_sec(timeout)
                    .prop("auto.commit.interval.ms", "1000")
                    .prop("topic.metadata.refresh.interval.ms", "1000")
                    .to_args(),
            ),
            Kind::Franz => ChildClient::go(
                "franz",
                "consume",
                &ConsumerArgs::topic(bootstrap, group, pattern, expect)
                    .timeout_sec(timeout)
                    .prop("metadata.max.age.ms", "1000")
                    .to_args(),
            ),
        };
        started.unwrap_or_else(|e| panic!("{}: {e:#}", self.name()))
    }
}

/// One record read: when the test saw the line, topic, partition, offset, id.
#[derive(Clone, Debug)]
struct Read {
    at: Instant,
    topic: String,
    partition: i32,
    offset: i64,
    id: u64,
}

struct Member {
    name: String,
    group: String,
    synced: bool,
    child: ChildClient,
    reads: Arc<Mutex<Vec<Read>>>,
    /// Lines seen so far (changes wake waiters); the sender is dropped when the output ends.
    lines: watch::Receiver<usize>,
    other: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn start(kind: Kind, synced: bool, bootstrap: &str, pattern: &str) -> Member {
        let tag = match kind {
            Kind::JavaClassic(JavaClients::V3_9) => "j39c",
            Kind::JavaClassic(JavaClients::V4_4) => "j44c",
            Kind::JavaKip848 => "j44k",
            Kind::Confluent => "rdk",
            Kind::Franz => "franz",
        };
        let group = unique(&format!("{}pos-{tag}", if synced { "" } else { "nosync-" }));
        let mut child = kind.start(bootstrap, &group, pattern);
        let mut rx = child.take_line_stream();
        let reads: Arc<Mutex<Vec<Read>>> = Default::default();
        let other: Arc<Mutex<Vec<String>>> = Default::default();
        let (tx, lines) = watch::channel(0usize);
        let (r, o) = (reads.clone(), other.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while let Some(line) = rx.recv().await {
                let at = Instant::now();
                match parse_msg(&line).and_then(|m| Some((m.value.parse::<u64>().ok()?, m))) {
                    Some((id, m)) => r.lock().unwrap().push(Read {
                        at,
                        topic: m.topic,
                        partition: m.partition,
                        offset: m.offset,
                        id,
                    }),
                    None => o.lock().unwrap().push(line),
                }
                n += 1;
                tx.send_replace(n);
            }
        });
        Member {
            name: format!(
                "{}, {}",
                kind.name(),
                if synced { "synced" } else { "nosync" }
            ),
            group,
            synced,
            child,
            reads,
            lines,
            other,
        }
    }

    /// FATAL line or the end of its output (the process exited).
    fn died(&self) -> Option<String> {
        if let Some(f) = self
            .other
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.starts_with("FATAL"))
        {
            return Some(f.clone());
        }
        self.lines
            .has_changed()
            .is_err()
            .then(|| "its output ended (the process exited)".to_string())
    }

    /// Waits until `pred` holds on its reads; false at the deadline or when it died.
    async fn wait(
        &mut self,
        deadline: tokio::time::Instant,
        pred: impl Fn(&[Read]) -> bool,
    ) -> bool {
        loop {
            if pred(&self.reads.lock().unwrap()) {
                return true;
            }
            if self.died().is_some() {
                return false;
            }
            match tokio::time::timeout_at(deadline, self.lines.changed()).await {
                Ok(Ok(())) => {}
                _ => return pred(&self.reads.lock().unwrap()),
            }
        }
    }
}

/// Waits for every member to satisfy `pred` on its reads (one deadline for all); the names of those
/// that did not.
async fn wait_members(
    members: &mut [Member],
    what: &str,
    pred: impl Fn(&[Read]) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    let mut late = Vec::new();
    for m in members.iter_mut() {
        if !m.wait(deadline, &pred).await {
            late.push(m.name.clone());
        }
    }
    if !late.is_empty() {
        println!("  not within {PHASE_TIMEOUT:?}: {what}: {late:?}");
    }
    late
}

// ------------------------------------------------------------------------------------------------ clusters

/// High watermark per partition of `topic` on `k`.
fn high_watermarks(k: &Kafka, topic: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = k.direct_config().create().unwrap();
    (0..PARTITIONS)
        .map(|p| {
            let (_, hi) = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("watermarks of {topic}/{p} on {}: {e}", k.name));
            (p, hi)
        })
        .collect()
}

/// The group's committed offsets of `topic` on `k` (partitions without one are absent).
fn committed(k: &Kafka, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = k
        .direct_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let Ok(got) = c.committed_offsets(tpl, Duration::from_secs(10)) else {
        return BTreeMap::new();
    };
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Polls `ok` (a look at the clusters, blocking) every 500 ms until it holds or `timeout` passes.
async fn poll_until(
    what: &str,
    timeout: Duration,
    ok: impl Fn() -> bool + Send + Clone + 'static,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let f = ok.clone();
        if tokio::task::spawn_blocking(f).await.unwrap() {
            return true;
        }
        if Instant::now() >= deadline {
            println!("  gave up waiting for {what} after {timeout:?}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// (topic, partition, offset) -> id of the given topics of one cluster.
type Log = HashMap<(String, i32, i64), u64>;

fn read_log(k: &Kafka, topics: &[&str]) -> Log {
    let mut log = Log::new();
    for t in topics {
        for (p, o, v) in k.read_records(t) {
            if let Ok(id) = v.parse() {
                log.insert((t.to_string(), p, o), id);
            }
        }
    }
    log
}

/// Record batches (first and last offset) per (cluster, topic, partition), from the log segments
/// on disk (Kafka's DumpLogSegments, one JVM for all): what a timestamp lookup lands on is the start of
/// a batch, so a batch's size is the scale of what carrying a position over re-reads.
fn batches(
    clusters: &[(&str, &Kafka, [&str; 2])],
) -> HashMap<(String, String, i32), Vec<(i64, i64)>> {
    let mut files: HashMap<String, (String, String, i32)> = HashMap::new();
    for (name, k, topics) in clusters {
        let Ok(dirs) = std::fs::read_dir(&k.dir) else {
            continue;
        };
        for d in dirs
            .flatten()
            .filter(|d| d.file_name().to_string_lossy().starts_with("data-"))
        {
            for t in topics {
                for p in 0..PARTITIONS {
                    let Ok(segs) = std::fs::read_dir(d.path().join(format!("{t}-{p}"))) else {
                        continue;
                    };
                    for f in segs
                        .flatten()
                        .filter(|f| f.file_name().to_string_lossy().ends_with(".log"))
                    {
                        let path = f.path().display().to_string();
                        files.insert(path, (name.to_string(), t.to_string(), p));
                    }
                }
            }
        }
    }
    let list: Vec<&str> = files.keys().map(|f| f.as_str()).collect();
    let out = kafka::run_tool(
        "org.apache.kafka.tools.DumpLogSegments",
        &["--files", &list.join(",")],
    );
    let mut got: HashMap<(String, String, i32), Vec<(i64, i64)>> = HashMap::new();
    let mut current = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(f) = line.strip_prefix("Dumping ") {
            current = files.get(f.trim()).cloned();
        }
        let field = |k: &str| {
            let mut w = line.split_whitespace();
            w.position(|x| x == k)
                .and_then(|_| w.next()?.parse::<i64>().ok())
        };
        if let (Some(key), Some(base), Some(last)) =
            (&current, field("baseOffset:"), field("lastOffset:"))
        {
            got.entry(key.clone()).or_default().push((base, last));
        }
    }
    got
}

// ------------------------------------------------------------------------------------------------ the drill

/// One switch: where to, and what was measured there.
struct Switch {
    name: &'static str,
    to: &'static str,
    at: Instant,
    /// The topics read on the cluster switched to (its own `T` and its mirror of the other's).
    topics: [String; 2],
    /// High watermarks of the snapshot taken after the switch, per (topic, partition).
    marks: BTreeMap<(String, i32), i64>,
}

#[derive(Default, Clone, Copy)]
struct Cell {
    reread: usize,
    skipped: usize,
    /// First offset read after the switch, and the first offset it had not read before.
    started: Option<i64>,
    ideal: Option<i64>,
    /// Records in the batch holding the last record before `ideal` on the cluster switched to.
    batch: Option<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_positions_across_failover_and_failback_with_mirrormaker2() {
    let pair = lease_dr_pair("rk-dr", true);
    let (north, west) = (pair.north.clone(), pair.west.clone());
    let t0 = Instant::now();
    let topic = unique("pos");
    let (north_mirror, west_mirror) = (format!("north.{topic}"), format!("west.{topic}"));
    north.create_topic(&topic, PARTITIONS, None).await;
    west.create_topic(&topic, PARTITIONS, None).await;
    // MirrorMaker 2 creates its mirrors (refresh.topics.interval.seconds=1); every consumer then finds
    // all the topics its pattern matches from its first metadata on
    west.wait_topic(&north_mirror, Duration::from_secs(60));
    north.wait_topic(&west_mirror, Duration::from_secs(60));
    let clusters = [("north", &north), ("west", &west)];
    let tp = kafka::start_proxy(&clusters, "north", "").await;
    let pattern = format!("^((north|west)\\.)?{}$", topic.replace('.', "\\."));

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut members: Vec<Member> = [
        (Kind::JavaClassic(JavaClients::V4_4), false),
        (Kind::JavaClassic(JavaClients::V4_4), true),
        (Kind::JavaClassic(JavaClients::V3_9), false),
        (Kind::JavaKip848, false),
        (Kind::JavaKip848, true),
        (Kind::Confluent, false),
        (Kind::Confluent, true),
        (Kind::Franz, false),
        (Kind::Franz, true),
    ]
    .into_iter()
    .map(|(k, synced)| Member::start(k, synced, &tp.bootstrap, &pattern))
    .collect();

    let mut via_proxy = ClientConfig::new();
    via_proxy
        .set("bootstrap.servers", &tp.bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    let app = produce(
        via_proxy,
        &topic,
        0,
        Duration::from_millis(10),
        false,
        stop_rx.clone(),
    );
    let direct = |k: &Kafka| {
        let mut c = k.direct_config();
        c.set("enable.idempotence", "true").set("linger.ms", "5");
        c
    };
    let north_bg = produce(
        direct(&north),
        &topic,
        NORTH_BG,
        Duration::from_millis(50),
        true,
        stop_rx.clone(),
    );
    let west_bg = produce(
        direct(&west),
        &topic,
        WEST_BG,
        Duration::from_millis(50),
        true,
        stop_rx,
    );

    // steady state on north: every member reads every partition of both topics there ...
    let north_topics = [topic.clone(), west_mirror.clone()];
    let late = wait_members(&mut members, "reads on north", |reads| {
        north_topics.iter().all(|t| {
            (0..PARTITIONS).all(|p| {
                reads
                    .iter()
                    .filter(|r| &r.topic == t && r.partition == p)
                    .count()
                    >= 20
            })
        })
    })
    .await;
    assert!(
        late.is_empty(),
        "consumers read on north through the proxy: {late:?} did not"
    );
    // ... and MirrorMaker 2 has synced the synced groups' offsets of T to west's north.T once
    let (w, t) = (west.clone(), north_mirror.clone());
    let groups: Vec<String> = members
        .iter()
        .filter(|m| m.synced)
        .map(|m| m.group.clone())
        .collect();
    let synced = poll_until(
        "MM2 synced every synced group's offsets to west",
        PHASE_TIMEOUT,
        move || {
            groups
                .iter()
                .all(|g| committed(&w, g, &t).len() == PARTITIONS as usize)
        },
    )
    .await;
    println!("  MM2 synced every synced group's offsets of T to north.T on west before the failover: {synced}");
    println!("steady state after {:.1} s", t0.elapsed().as_secs_f64());

    let mut switches = Vec::new();
    for (name, to) in [("failover", "west"), ("failback", "north")] {
        let (new, old_bg, new_bg, mirror) = match to {
            "west" => (&west, &north_bg, &west_bg, &north_mirror),
            _ => (&north, &west_bg, &north_bg, &west_mirror),
        };
        let at = Instant::now();
        let acked_before = app.ids();
        kafka::switch(&tp, &clusters, to, "").await;
        let n = app.count();
        let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
        while app.count() < n + 200 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // the snapshot: once the new cluster holds (here or in its mirror) everything the application
        // had acknowledged before the switch
        let (k, topics) = (new.clone(), [topic.clone(), mirror.clone()]);
        let ts = topics.clone();
        poll_until(
            &format!("{to} holds every record acknowledged before the {name}"),
            PHASE_TIMEOUT,
            move || {
                let refs: Vec<&str> = ts.iter().map(|s| s.as_str()).collect();
                let held: HashSet<u64> = read_log(&k, &refs).into_values().collect();
                acked_before.iter().all(|id| held.contains(id))
            },
        )
        .await;
        let mut marks = BTreeMap::new();
        for t in &topics {
            for (p, hi) in high_watermarks(new, t) {
                marks.insert((t.clone(), p), hi);
            }
        }
        let (new_next, old_next) = (new_bg.next(), old_bg.next());
        let (new_range, old_range) = match to {
            "west" => (WEST_BG..WEST_BG + 1_000_000, NORTH_BG..NORTH_BG + 1_000_000),
            _ => (NORTH_BG..NORTH_BG + 1_000_000, WEST_BG..WEST_BG + 1_000_000),
        };
        // caught up: a record written after the snapshot read on every partition of both topics
        let caught_up_at = Instant::now();
        let late = wait_members(
            &mut members,
            &format!("caught up after the {name}"),
            |reads| {
                (0..PARTITIONS).all(|p| {
                    let after = reads.iter().filter(|r| r.at >= at && r.partition == p);
                    let mut local = false;
                    let mut mirrored = false;
                    for r in after {
                        local |= r.topic == topic && new_range.contains(&r.id) && r.id >= new_next;
                        mirrored |=
                            &r.topic == mirror && old_range.contains(&r.id) && r.id >= old_next;
                    }
                    local && mirrored
                })
            },
        )
        .await;
        println!(
            "{name} to {to}: snapshot {:.1} s after the switch, every consumer caught up {:.1} s later{}",
            (caught_up_at - at).as_secs_f64(),
            caught_up_at.elapsed().as_secs_f64(),
            if late.is_empty() { String::new() } else { format!(" (but {late:?})") }
        );
        switches.push(Switch {
            name,
            to,
            at,
            topics,
            marks,
        });
    }
    stop_tx.send(true).unwrap();
    let mut producer_errors = Vec::new();
    let mut acked = BTreeSet::new();
    for p in [app, north_bg, west_bg] {
        producer_errors.extend(p.task.await.unwrap());
        acked.extend(p.acks.lock().unwrap().iter().map(|a| a.0));
    }
    let deaths: Vec<String> = members
        .iter()
        .filter_map(|m| Some(format!("{}: {}", m.name, m.died()?)))
        .collect();
    for m in &mut members {
        m.child.kill();
    }

    // ---- what the clusters hold, and what each group read where
    let (n2, w2, t2) = (north.clone(), west.clone(), topic.clone());
    let (nm, wm) = (north_mirror.clone(), west_mirror.clone());
    let (north_log, west_log) = tokio::task::spawn_blocking(move || {
        (read_log(&n2, &[&t2, &wm]), read_log(&w2, &[&t2, &nm]))
    })
    .await
    .unwrap();
    let homes: HashSet<u64> = north_log
        .iter()
        .chain(&west_log)
        .filter(|((t, _, _), _)| *t == topic)
        .map(|(_, id)| *id)
        .collect();
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|id| !homes.contains(id))
        .collect();

    let short = |t: &str| t.replace(&topic, "T");
    let columns: Vec<(usize, String, i32)> = switches
        .iter()
        .enumerate()
        .flat_map(|(k, s)| {
            s.topics
                .iter()
                .flat_map(move |t| (0..PARTITIONS).map(move |p| (k, t.clone(), p)))
        })
        .collect();
    let (n3, w3, t3) = (north.clone(), west.clone(), topic.clone());
    let (nm, wm) = (north_mirror.clone(), west_mirror.clone());
    let batches = tokio::task::spawn_blocking(move || {
        batches(&[("north", &n3, [&t3, &wm]), ("west", &w3, [&t3, &nm])])
    })
    .await
    .unwrap();
    println!(
        "\nconsumer positions across a switch (MirrorMaker 2, offset sync for groups not named nosync-*), topic T = {topic}, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    println!("record batches (records per batch: mean, max) on each cluster:");
    let mut keys: Vec<_> = batches.keys().collect();
    keys.sort();
    for key in keys {
        let b = &batches[key];
        let sizes = b.iter().map(|(f, l)| l - f + 1);
        println!(
            "  {}:{}/{}: {} batches, mean {:.1}, max {}",
            key.0,
            short(&key.1),
            key.2,
            b.len(),
            sizes.clone().sum::<i64>() as f64 / b.len().max(1) as f64,
            sizes.max().unwrap_or(0)
        );
    }
    println!("\ncell: re-read / skipped (first offset read after the switch / first offset not read before it, records in the batch holding the one before it)\n");
    let header: Vec<String> = columns
        .iter()
        .map(|(k, t, p)| format!("{} {}:{}/{p}", switches[*k].name, switches[*k].to, short(t)))
        .collect();
    println!("| consumer | {} | re-read total |", header.join(" | "));
    println!("|---|{}---|", "---|".repeat(columns.len()));
    let mut skips = Vec::new();
    for m in &members {
        let reads = m.reads.lock().unwrap().clone();
        let cells = measure(&reads, &switches, &north_log, &west_log);
        let row: Vec<String> = columns
            .iter()
            .map(|key| {
                let mut c = cells.get(key).copied().unwrap_or_default();
                let (k, t, p) = key;
                let holding = c.ideal.map(|o| o - 1);
                c.batch = batches
                    .get(&(switches[*k].to.to_string(), t.clone(), *p))
                    .and_then(|b| {
                        b.iter()
                            .find(|(f, l)| holding.is_some_and(|o| *f <= o && o <= *l))
                    })
                    .map(|(f, l)| l - f + 1);
                let at = |o: Option<i64>| o.map_or("-".to_string(), |o| o.to_string());
                format!(
                    "{} / {} ({}/{}, {})",
                    c.reread,
                    c.skipped,
                    at(c.started),
                    at(c.ideal),
                    at(c.batch)
                )
            })
            .collect();
        let total: usize = cells.values().map(|c| c.reread).sum();
        println!("| {} | {} | {total} |", m.name, row.join(" | "));
        for ((k, t, p), c) in &cells {
            if c.skipped > 0 {
                skips.push(format!(
                    "{}: {} skipped at the {} on {}:{}/{p}",
                    m.name,
                    c.skipped,
                    switches[*k].name,
                    switches[*k].to,
                    short(t)
                ));
            }
        }
    }
    println!(
        "\nproducers: {} acknowledged (application through the proxy, and one directly on each cluster), {} errors, {} lost",
        acked.len(),
        producer_errors.len(),
        lost.len()
    );
    if !skips.is_empty() {
        // For whoever chases a skip: what the skipping clients said besides records, and where
        // their groups stand on both clusters now.
        for m in members
            .iter()
            .filter(|m| skips.iter().any(|s| s.starts_with(&m.name)))
        {
            println!(
                "\n{} (group {}), its output besides records:",
                m.name, m.group
            );
            for line in m.other.lock().unwrap().iter().rev().take(40).rev() {
                println!("    {line}");
            }
            let (n4, w4, g) = (north.clone(), west.clone(), m.group.clone());
            let (t4, nm4, wm4) = (topic.clone(), north_mirror.clone(), west_mirror.clone());
            let at = tokio::task::spawn_blocking(move || {
                [
                    ("north", committed(&n4, &g, &t4), committed(&n4, &g, &wm4)),
                    ("west", committed(&w4, &g, &t4), committed(&w4, &g, &nm4)),
                ]
            })
            .await
            .unwrap();
            for (cluster, local, mirror) in at {
                println!("    committed on {cluster}: T {local:?}, mirror {mirror:?}");
            }
        }
    }
    tp.proxy.shutdown().await;
    assert!(deaths.is_empty(), "consumers died: {deaths:?}");
    assert!(
        lost.is_empty(),
        "acknowledged and on neither cluster: {:?}",
        &lost[..lost.len().min(20)]
    );
    assert!(
        producer_errors.is_empty(),
        "producer errors: {:?}",
        &producer_errors[..producer_errors.len().min(5)]
    );
    assert!(
        skips.is_empty(),
        "records skipped across a switch:\n  {}",
        skips.join("\n  ")
    );
}

/// Per (switch index, topic, partition) of the cluster switched to: what the group re-read and skipped.
fn measure(
    reads: &[Read],
    switches: &[Switch],
    north: &Log,
    west: &Log,
) -> BTreeMap<(usize, String, i32), Cell> {
    let log_of = |c: &str| if c == "north" { north } else { west };
    let source = |r: &Read| {
        let key = (r.topic.clone(), r.partition, r.offset);
        ["north", "west"]
            .into_iter()
            .find(|c| log_of(c).get(&key) == Some(&r.id))
    };
    // the cluster of each phase: north, then each switch's target
    let on: Vec<&str> = std::iter::once("north")
        .chain(switches.iter().map(|s| s.to))
        .collect();
    // phase of a read: by when the test saw it, except that a record still coming from the cluster
    // just left (fetched before the switch) belongs to the phase before
    let phased: Vec<(usize, Option<&str>, &Read)> = reads
        .iter()
        .map(|r| {
            let mut ph = switches.iter().filter(|s| r.at >= s.at).count();
            let src = source(r);
            if ph > 0 && src.is_some_and(|c| c != on[ph] && c == on[ph - 1]) {
                ph -= 1;
            }
            (ph, src, r)
        })
        .collect();
    // a `latest` group never sees what was written on north before its first read of a partition
    let mut first: HashMap<(&str, i32), i64> = HashMap::new();
    for (_, _, r) in phased
        .iter()
        .filter(|(ph, src, _)| *ph == 0 && *src == Some("north"))
    {
        let f = first
            .entry((r.topic.as_str(), r.partition))
            .or_insert(r.offset);
        *f = (*f).min(r.offset);
    }
    let ignored: HashSet<u64> = north
        .iter()
        .filter(|((t, p, o), _)| first.get(&(t.as_str(), *p)).is_some_and(|f| o < f))
        .map(|(_, id)| *id)
        .collect();
    let mut cells = BTreeMap::new();
    for (k, s) in switches.iter().enumerate() {
        let ph = k + 1;
        let before: HashSet<u64> = phased.iter().filter(|x| x.0 < ph).map(|x| x.2.id).collect();
        let upto: HashSet<u64> = phased
            .iter()
            .filter(|x| x.0 <= ph)
            .map(|x| x.2.id)
            .collect();
        let log = log_of(s.to);
        for t in &s.topics {
            for p in 0..PARTITIONS {
                let in_phase: Vec<&Read> = phased
                    .iter()
                    .filter(|(q, src, r)| {
                        *q == ph && *src == Some(s.to) && r.topic == *t && r.partition == p
                    })
                    .map(|x| x.2)
                    .collect();
                let hi = s.marks[&(t.clone(), p)];
                let mut records: Vec<(i64, u64)> = log
                    .iter()
                    .filter(|((tt, pp, o), _)| tt == t && *pp == p && *o < hi)
                    .map(|((_, _, o), id)| (*o, *id))
                    .collect();
                records.sort_unstable();
                let fresh = |id: &u64| !ignored.contains(id) && !before.contains(id);
                cells.insert(
                    (k, t.clone(), p),
                    Cell {
                        reread: in_phase.iter().filter(|r| before.contains(&r.id)).count(),
                        skipped: records
                            .iter()
                            .filter(|(_, id)| fresh(id) && !upto.contains(id))
                            .count(),
                        started: in_phase.first().map(|r| r.offset),
                        ideal: Some(records.iter().find(|(_, id)| fresh(id)).map_or(hi, |r| r.0)),
                        batch: None,
                    },
                );
            }
        }
    }
    cells
}

// ------------------------------------------------------------------------------------------------ exactly once

/// Exactly-once consumers commit their positions through their transactional producer
/// (TxnOffsetCommit, then EndTxn), never with OffsetCommit; the proxy carries those positions
/// too. A consume-transform-produce application (librdkafka: `read_committed` consumer,
/// transactional producer, `send_offsets_to_transaction`, one transaction per poll of at most
/// 50 records, fetching as it goes) reads about half of each partition of `T` on north through
/// the proxy and stops; the proxy fails over to
/// west, where the group (named `nosync-*`: MirrorMaker 2 does not sync it, so only the proxy can
/// put a position there) resumes with `auto.offset.reset=latest` on `north.T`.
///
/// Asserted: the group's position on west's `north.T` exists for both partitions; the records
/// read on west and those read (and committed) on north cover every id: nothing skipped; re-read
/// at most 20 per partition (records are written one per batch, so the anchor's batch is one
/// record: a few records sharing a millisecond at most). Without the carry of transactional
/// commits west has no position for the group: with `latest` it skips every record left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_consumer_positions_are_carried_across_a_failover() {
    exactly_once_across_a_failover(EosApp::Librdkafka).await;
}

/// [`exactly_once_consumer_positions_are_carried_across_a_failover`] with Java kafka-clients 4.4
/// (`sendOffsetsToTransaction`; against Kafka 4.4 its transactions are KIP-890's, EndTxn v5
/// bumping the producer epoch at every commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_java_consumer_positions_are_carried_across_a_failover() {
    exactly_once_across_a_failover(EosApp::Java).await;
}

/// [`exactly_once_java_consumer_positions_are_carried_across_a_failover`] with a KIP-848 member
/// (`group.protocol=consumer`): its transactional commits carry the member epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_kip848_consumer_positions_are_carried_across_a_failover() {
    exactly_once_across_a_failover(EosApp::JavaKip848).await;
}

/// The consume-transform-produce application of the exactly-once tests.
#[derive(Clone, Copy, Debug)]
enum EosApp {
    /// rdkafka in this process.
    Librdkafka,
    /// tests/java/TestConsumer `--txn-out`, kafka-clients 4.4, classic group.
    Java,
    /// The same, KIP-848 group.
    JavaKip848,
}

const EOS_RECORDS: u64 = 600;

async fn exactly_once_across_a_failover(app: EosApp) {
    use rdkafka::Message;
    const RECORDS: u64 = EOS_RECORDS;
    let pair = lease_dr_pair("rk-dr", true);
    let (north, west) = (pair.north.clone(), pair.west.clone());
    let topic = unique("eos");
    let (mirror, out) = (format!("north.{topic}"), format!("{topic}-out"));
    north.create_topic(&topic, PARTITIONS, None).await;
    north.create_topic(&out, PARTITIONS, None).await;
    west.create_topic(&out, PARTITIONS, None).await;
    west.wait_topic(&mirror, Duration::from_secs(60));
    // one record per batch (each awaited), round robin, directly on north
    let producer: FutureProducer = north
        .direct_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for i in 0..RECORDS {
        let v = i.to_string();
        let r = FutureRecord::to(&topic)
            .payload(&v)
            .key(&v)
            .partition((i % PARTITIONS as u64) as i32);
        producer
            .send(r, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("record {i}: {e}"));
    }
    let (w, m) = (west.clone(), mirror.clone());
    assert!(
        poll_until("MirrorMaker 2 copied T to west", PHASE_TIMEOUT, move || {
            read_log(&w, &[&m]).len() as u64 >= RECORDS
        })
        .await,
        "west's {mirror} holds every record of north's {topic}"
    );
    let clusters = [("north", &north), ("west", &west)];
    let tp = kafka::start_proxy(&clusters, "north", "").await;
    let pattern = format!("^((north|west)\\.)?{}$", topic.replace('.', "\\."));
    let group = unique("nosync-eos");

    // the application, through the proxy: read, write each record to `out`, commit the
    // consumer's positions in the same transaction
    let read_on_north = match app {
        EosApp::Librdkafka => librdkafka_eos(&tp.bootstrap, &group, &pattern, &out).await,
        EosApp::Java => java_eos(&tp.bootstrap, &group, &pattern, &out, false).await,
        EosApp::JavaKip848 => java_eos(&tp.bootstrap, &group, &pattern, &out, true).await,
    };
    assert!(
        read_on_north.len() as u64 >= RECORDS / 2,
        "the application read {} records on north",
        read_on_north.len()
    );
    let on_north = committed(&north, &group, &topic);
    println!("  committed on north by transactions: {on_north:?}");

    kafka::switch(&tp, &clusters, "west", "").await;
    // the proxy writes them as the switch completes (the group's own requests wait for it)
    let (w, g, m) = (west.clone(), group.clone(), mirror.clone());
    let carried = poll_until("the group's position on west", PHASE_TIMEOUT, move || {
        committed(&w, &g, &m).len() == PARTITIONS as usize
    })
    .await;
    let on_west = committed(&west, &group, &mirror);
    println!("  the group's position on west's {mirror} after the failover: {on_west:?}");
    assert!(
        carried,
        "the proxy put the group's transactional positions on west: {on_west:?}"
    );

    // the group resumes on west: everything it had not committed on north is read there
    let (bootstrap, g, p) = (tp.bootstrap.clone(), group.clone(), pattern.clone());
    let wanted: BTreeSet<u64> = (0..RECORDS)
        .filter(|i| !read_on_north.contains(i))
        .collect();
    let want = wanted.clone();
    let read_on_west: Vec<(i32, u64)> = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = eos_consumer(&bootstrap, &g, "latest").create().unwrap();
        consumer.subscribe(&[&p]).unwrap();
        let mut read = Vec::new();
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + PHASE_TIMEOUT;
        while !want.is_subset(&seen) && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let id = id_of(&m);
                seen.insert(id);
                read.push((m.partition(), id));
            }
        }
        read
    })
    .await
    .unwrap();
    let seen: BTreeSet<u64> = read_on_west.iter().map(|r| r.1).collect();
    let skipped: Vec<u64> = wanted.difference(&seen).copied().collect();
    let mut reread = BTreeMap::<i32, usize>::new();
    for (p, id) in &read_on_west {
        if read_on_north.contains(id) {
            *reread.entry(*p).or_default() += 1;
        }
    }
    println!(
        "  read on north {}, on west {} ({} skipped, re-read per partition {reread:?})",
        read_on_north.len(),
        read_on_west.len(),
        skipped.len()
    );
    assert!(
        skipped.is_empty(),
        "records never read by the exactly-once group: {} (first {:?})",
        skipped.len(),
        &skipped[..skipped.len().min(10)]
    );
    assert!(
        reread.values().all(|n| *n <= 20),
        "re-read at most about one batch per partition: {reread:?}"
    );
}

/// librdkafka's exactly-once application: reads about half of each partition on north, one
/// transaction per poll of at most 50 records, then leaves the group. The ids it read (all
/// committed).
async fn librdkafka_eos(bootstrap: &str, group: &str, pattern: &str, out: &str) -> BTreeSet<u64> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    const RECORDS: u64 = EOS_RECORDS;
    let (bootstrap, g, p, o) = (
        bootstrap.to_string(),
        group.to_string(),
        pattern.to_string(),
        out.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = eos_consumer(&bootstrap, &g, "earliest")
            // a few batches per fetch and little read ahead: the application fetches as it
            // goes, as one under load does (and the proxy sees the batches it commits after)
            .set("max.partition.fetch.bytes", "512")
            .set("queued.min.messages", "10")
            .set("queued.max.messages.kbytes", "1")
            .create()
            .unwrap();
        consumer.subscribe(&[&p]).unwrap();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("transactional.id", format!("{g}-txn"))
            .create()
            .unwrap();
        producer.init_transactions(Duration::from_secs(30)).unwrap();
        let mut read = BTreeSet::new();
        let deadline = Instant::now() + PHASE_TIMEOUT;
        // about half of each partition
        let half = |read: &BTreeSet<u64>, p: u64| {
            read.iter()
                .filter(|id| *id % PARTITIONS as u64 == p)
                .count() as u64
                >= RECORDS / 2 / PARTITIONS as u64
        };
        while !(0..PARTITIONS as u64).all(|p| half(&read, p)) && Instant::now() < deadline {
            let mut got = Vec::new();
            while got.len() < 50 {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        let id = id_of(&m);
                        got.push(id);
                    }
                    Some(Err(e)) => panic!("consumer on north: {e}"),
                    None => break,
                }
            }
            if got.is_empty() {
                continue;
            }
            producer.begin_transaction().unwrap();
            for id in &got {
                let v = id.to_string();
                producer
                    .send(BaseRecord::to(&o).payload(&v).key(&v))
                    .unwrap_or_else(|(e, _)| panic!("transform of {id}: {e}"));
            }
            let positions = consumer.position().unwrap();
            let meta = consumer.group_metadata().unwrap();
            producer
                .send_offsets_to_transaction(&positions, &meta, Duration::from_secs(30))
                .unwrap();
            producer
                .commit_transaction(Duration::from_secs(30))
                .unwrap();
            read.extend(got);
        }
        // leaves the group: west sees it empty
        drop(consumer);
        read
    })
    .await
    .unwrap()
}

/// The Java 4.4 exactly-once application (TestConsumer `--txn-out`): reads half of the
/// records on north, a transaction per poll of at most 20, then leaves the group. The ids it
/// read (all committed).
async fn java_eos(
    bootstrap: &str,
    group: &str,
    pattern: &str,
    out: &str,
    kip848: bool,
) -> BTreeSet<u64> {
    let mut args = ConsumerArgs::pattern(bootstrap, group, pattern, EOS_RECORDS / 2)
        .timeout_sec(PHASE_TIMEOUT.as_secs_f64())
        .prop("auto.offset.reset", "earliest")
        // a few batches per fetch: the application fetches as it goes
        .prop("max.partition.fetch.bytes", "512")
        .prop("max.poll.records", "20")
        .txn_out(out);
    if kip848 {
        args = args.prop("group.protocol", "consumer");
    }
    let mut c = ChildClient::java_consumer(JavaClients::V4_4, &args).expect("java consumer");
    let run = c
        .wait(PHASE_TIMEOUT + Duration::from_secs(30))
        .await
        .expect("the Java application ends");
    assert_eq!(
        run.code,
        Some(0),
        "the Java application: {}",
        run.describe()
    );
    run.msgs()
        .iter()
        .map(|m| m.value.parse().expect("ids"))
        .collect()
}

/// A `read_committed` consumer of `group` without auto commit (the exactly-once tests).
fn eos_consumer(bootstrap: &str, group: &str, reset: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", reset);
    c
}

/// The id a record of these tests carries as its value.
fn id_of(m: &rdkafka::message::BorrowedMessage<'_>) -> u64 {
    use rdkafka::Message;
    let v = m.payload().expect("a value");
    std::str::from_utf8(v)
        .expect("utf-8")
        .parse()
        .expect("an id")
}
