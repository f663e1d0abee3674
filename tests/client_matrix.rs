//! The client matrix: real clients in five languages through kafka-sidecar, and across a failover
//! and a failback, each client one process for the whole run (never restarted).
//!
//! Producers (each on a topic of its own, all at once):
//! * Java kafka-clients 3.9.1 and 4.4.0 (tests/java), default config: idempotent, acks=all, 5 in flight;
//! * kafka-python (tests/python), defaults: idempotent;
//! * confluent-kafka on librdkafka (tests/clients/python), `enable.idempotence=true`;
//! * kafkajs (tests/clients/node), `idempotent: true, maxInFlightRequests: 1` on Kafka; not idempotent
//!   on tansu, which cannot serve its InitProducerId (see [`Client::producer`]);
//! * franz-go (tests/clients/go), default: idempotent;
//! * Sarama (tests/clients/go), `Producer.Idempotent=true`, `Net.MaxOpenRequests=1`.
//!
//! Consumer groups (one member each, see [`Member::Group`]): Java 3.9 and 4.4, confluent-kafka, kafkajs,
//! franz-go and Sarama with the classic protocol; Java 4.4 and confluent-kafka also as KIP-848 members
//! (`group.protocol=consumer`). They all read the topic of one producer ([`FEEDER`]).
//!
//! What is asserted per producer: exit 0 with `DONE`, no `FATAL`, no `ERR`, every record acknowledged,
//! and every acknowledged record found on one of the clusters (read directly with kcat, not through the
//! proxy) at the partition and offset its acknowledgement named: 0 missing. Per consumer group member:
//! it never dies (no `FATAL`, no exit), it reads every record its producer had acknowledged (0 skipped),
//! and it follows both switches: between them it reads records that only west holds, after the failback
//! records that only north holds. Printed, not asserted: the ack gap at each switch, which cluster
//! acknowledged what, duplicates (ids written to both clusters or twice to one), re-reads, and markdown
//! tables for the README's client table. Producers refresh their metadata every 3 s across the
//! switches, so what a client does at its first periodic refresh after a switch happens within the run.
//!
//! Two tansu brokers stand for the two data centres (different cluster ids, both node id 111, and both
//! hand out producer ids from the same counter, so ids collide). A failover to a cluster that does not
//! have the topic yet cannot be played on tansu (see [`Dc::Tansu`]). The `kafka_*` tests play both cases
//! on two real Apache Kafka 4.4 clusters leased from the Kafka kit (see [`kafka_pair`]), where each topic
//! has another topic id on each cluster: CI runs every client that survives that today
//! ([`KAFKA_PASSING`]: every client).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::harness::{metric, TestProxy};
use common::kafka::{self, Spec};
use common::readback::{read_topic_async, Log};
use common::tools::{
    parse_ack, parse_msg, Ack, ChildClient, ClientRun, ConsumerArgs, JavaClients, ProducerArgs,
    Tansu,
};
use tokio::sync::watch;

const PARTITIONS: u32 = 3;
/// Bound on each awaited phase (all clients together).
const PHASE_TIMEOUT: Duration = Duration::from_secs(45);
/// Bound on a client's whole run after the scenario.
const FINISH_TIMEOUT: Duration = Duration::from_secs(150);
/// Time compressed: what a client does at its first periodic metadata refresh after a switch
/// (5 minutes later, by default) happens within the run.
const METADATA_MAX_AGE_MS: u64 = 3000;
/// Records per second each producer writes.
const RATE: f64 = 40.0;
/// How long the producers of a run produce: it must outlast both switches, so that every producer
/// and consumer goes on past each. Producers only: 16 s, with room to spare.
const PRODUCERS: Duration = Duration::from_secs(16);
/// With consumer groups, which must rejoin on each cluster too (a first join on tansu takes half the
/// session timeout).
const WITH_GROUPS: Duration = Duration::from_secs(35);
/// Clients expected to fail: a member that stalls holds each phase up to its bound
/// ([`PHASE_TIMEOUT`]), and production must go on past both (the steady state has one too).
const PAST_STALLS: Duration = Duration::from_secs(3 * PHASE_TIMEOUT.as_secs() + 10);

// ------------------------------------------------------------------------------------------------ clients

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Client {
    Java(JavaClients),
    KafkaPython,
    Confluent,
    Kafkajs,
    Franz,
    Sarama,
}

const JAVA_3: Client = Client::Java(JavaClients::V3_9);
const JAVA_4: Client = Client::Java(JavaClients::V4_4);

/// The producer whose topic the consumer groups of a run read (see [`Member::Group`]).
const FEEDER: Client = JAVA_3;

impl Client {
    /// Every language (Java on kafka-clients 3.9), for the single-broker run.
    const ALL: [Client; 6] = [
        JAVA_3,
        Client::KafkaPython,
        Client::Confluent,
        Client::Kafkajs,
        Client::Franz,
        Client::Sarama,
    ];

    fn name(self) -> &'static str {
        match self {
            Client::Java(JavaClients::V3_9) => "java-3.9",
            Client::Java(JavaClients::V4_4) => "java-4.4",
            Client::KafkaPython => "kafka-python",
            Client::Confluent => "confluent-kafka",
            Client::Kafkajs => "kafkajs",
            Client::Franz => "franz-go",
            Client::Sarama => "sarama",
        }
    }

    fn topic(self, prefix: &str) -> String {
        format!("{prefix}-{}", self.name())
    }

    /// The producer in its idempotent mode (see the module doc). kafkajs's idempotent producer asks for
    /// its id with InitProducerId v1, which tansu 0.6 answers with UNKNOWN_SERVER_ERROR (its storage wants
    /// the producer id and epoch only v3+ requests carry), so on tansu kafkajs runs with
    /// `kafkajs_idempotent` false: acks=all, maxInFlightRequests 1, not idempotent.
    fn producer(self, args: ProducerArgs, kafkajs_idempotent: bool) -> ChildClient {
        let started = match self {
            Client::Java(gen) => ChildClient::java_producer(gen, &args),
            Client::KafkaPython => ChildClient::python_producer(&args),
            Client::Confluent => ChildClient::confluent("confluent_producer.py", &args.to_args()),
            Client::Kafkajs => ChildClient::kafkajs(
                "producer.js",
                &args.idempotence(kafkajs_idempotent).acks("all").to_args(),
            ),
            Client::Franz => ChildClient::go("franz", "produce", &args.to_args()),
            Client::Sarama => ChildClient::go("sarama", "produce", &args.to_args()),
        };
        started.unwrap_or_else(|e| panic!("{}: {e:#}", self.name()))
    }

    /// `args` with the client's name for how often it refreshes metadata unasked (Java's
    /// `metadata.max.age.ms`, 5 minutes by default in most clients).
    fn metadata_max_age(self, args: ProducerArgs, ms: u64) -> ProducerArgs {
        let key = match self {
            Client::KafkaPython => "metadata_max_age_ms",
            Client::Confluent => "topic.metadata.refresh.interval.ms",
            _ => "metadata.max.age.ms",
        };
        args.prop(key, ms.to_string())
    }

    /// A consumer group member speaking `protocol`, where the language has a test consumer (and, for
    /// KIP-848, where it speaks it: Java and librdkafka).
    fn consumer(self, protocol: Protocol, args: ConsumerArgs) -> Option<ChildClient> {
        // As the producers: what a consumer does at its first periodic metadata refresh after a
        // switch (e.g. seeing a topic auto-created on the target after its group joined there)
        // happens within the run, not 5 minutes later.
        let args = match self {
            Client::Java(_) => args.prop("metadata.max.age.ms", METADATA_MAX_AGE_MS.to_string()),
            Client::Confluent => args.prop(
                "topic.metadata.refresh.interval.ms",
                METADATA_MAX_AGE_MS.to_string(),
            ),
            _ => args,
        };
        let args = match (protocol, self) {
            (Protocol::Classic, _) => args,
            (Protocol::Consumer, Client::Java(_) | Client::Confluent) => {
                args.prop("group.protocol", "consumer")
            }
            (Protocol::Consumer, _) => panic!("{}: no KIP-848 test consumer", self.name()),
        };
        let started = match self {
            Client::Java(gen) => ChildClient::java_consumer(gen, &args),
            Client::KafkaPython => return None,
            Client::Confluent => ChildClient::confluent("confluent_consumer.py", &args.to_args()),
            Client::Kafkajs => ChildClient::kafkajs("consumer.js", &args.to_args()),
            Client::Franz => ChildClient::go("franz", "consume", &args.to_args()),
            Client::Sarama => ChildClient::go("sarama", "consume", &args.to_args()),
        };
        Some(started.unwrap_or_else(|e| panic!("{}: {e:#}", self.name())))
    }
}

/// How a consumer group member talks to its coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Protocol {
    /// JoinGroup/SyncGroup/Heartbeat, client-side assignment.
    Classic,
    /// KIP-848 (`group.protocol=consumer`): ConsumerGroupHeartbeat, broker-side assignment.
    Consumer,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Classic => "classic",
            Protocol::Consumer => "kip848",
        }
    }
}

/// One process of a matrix run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Member {
    /// A producer on a topic of its own.
    Producer(Client),
    /// A consumer group of one member, reading the topic of [`FEEDER`]'s producer (which a run with
    /// groups always has): what is checked is how the consumer follows the switches, so one producer
    /// that survives them today feeds every group.
    Group(Client, Protocol),
}

impl Member {
    fn name(self) -> String {
        match self {
            Member::Producer(c) => c.name().to_string(),
            Member::Group(c, p) => format!("{} consumer ({})", c.name(), p.name()),
        }
    }
}

/// A client process whose stdout lines are timestamped as they arrive, by a task that owns the
/// [`ChildClient`] until its output ends or it is told to stop.
struct Tracked {
    member: Member,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    /// How many lines have arrived (changes wake waiters).
    count: watch::Receiver<usize>,
    stop: watch::Sender<bool>,
    /// The client, and whether its output ended (it exited) before it was told to stop.
    task: tokio::task::JoinHandle<(ChildClient, bool)>,
}

impl Tracked {
    fn new(member: Member, mut child: ChildClient) -> Tracked {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        let (count_tx, count) = watch::channel(0);
        let (stop, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let ended = loop {
                tokio::select! {
                    _ = stop_rx.changed() => break false,
                    line = child.next_line(FINISH_TIMEOUT) => match line {
                        Ok(Some(line)) => {
                            let mut v = kept.lock().unwrap();
                            v.push((Instant::now(), line));
                            count_tx.send_replace(v.len());
                        }
                        Ok(None) => break true, // end of output: the process exited
                        Err(_) => break false, // silence
                    },
                }
            };
            (child, ended)
        });
        Tracked {
            member,
            lines,
            count,
            stop,
            task,
        }
    }

    fn acks(&self) -> Vec<(Instant, Ack)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(at, l)| Some((*at, parse_ack(l)?)))
            .collect()
    }

    fn max_acked(&self) -> Option<u64> {
        self.acks().iter().map(|(_, a)| a.i).max()
    }

    /// Waits (until `deadline`) for `pred` to hold on everything printed so far; false if it never did.
    async fn wait_for(
        &mut self,
        deadline: tokio::time::Instant,
        mut pred: impl FnMut(&[(Instant, String)]) -> bool,
    ) -> bool {
        loop {
            if pred(&self.lines.lock().unwrap()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.count.changed()).await {
                Ok(Ok(())) => {}
                // output ended (a last check: lines may have come with the close) or deadline
                _ => return pred(&self.lines.lock().unwrap()),
            }
        }
    }

    /// Waits for `n` acknowledgements in all.
    async fn wait_acks(&mut self, n: usize, deadline: tokio::time::Instant) -> bool {
        self.wait_for(deadline, |lines| {
            lines.iter().filter(|(_, l)| parse_ack(l).is_some()).count() >= n
        })
        .await
    }

    /// Waits for an acknowledgement of an id above `id`; false at the deadline, and as soon as the client
    /// reports an error (it failed: the others go on without waiting for it).
    async fn wait_ack_above(&mut self, id: u64, deadline: tokio::time::Instant) -> bool {
        let mut acked = false;
        self.wait_for(deadline, |lines| {
            acked = lines
                .iter()
                .any(|(_, l)| parse_ack(l).is_some_and(|a| a.i > id));
            acked
                || lines
                    .iter()
                    .any(|(_, l)| l.starts_with("ERR ") || l.starts_with("FATAL"))
        })
        .await;
        acked
    }

    /// Waits for a consumer to read a record whose value is above `mark`; false at the deadline, and as
    /// soon as it reports a fatal error or exits.
    async fn read_above(&mut self, mark: u64, deadline: tokio::time::Instant) -> bool {
        let mut read = false;
        self.wait_for(deadline, |lines| {
            read = lines.iter().any(|(_, l)| {
                parse_msg(l).is_some_and(|m| m.value.parse::<u64>().is_ok_and(|v| v > mark))
            });
            read || lines.iter().any(|(_, l)| l.starts_with("FATAL"))
        })
        .await;
        read
    }

    /// Stops a client that would run on (a consumer); what it printed, and whether it had exited by
    /// itself before (its run then has the exit code).
    async fn stop(self) -> (ClientRun, Vec<(Instant, String)>, bool) {
        let _ = self.stop.send(true);
        let (mut child, ended) = self.task.await.expect("reader task");
        let run = match ended {
            true => child.wait(Duration::from_secs(5)).await.ok(),
            false => None,
        };
        child.kill();
        let lines = self.lines.lock().unwrap().clone();
        (run.unwrap_or_else(|| child.snapshot()), lines, ended)
    }

    /// Waits for the process to exit by itself (killed after `timeout`); its run and timestamped lines.
    async fn finish(self, timeout: Duration) -> (ClientRun, Vec<(Instant, String)>) {
        let mut task = self.task;
        let (mut child, _) = match tokio::time::timeout(timeout, &mut task).await {
            Ok(c) => c.expect("reader task"),
            Err(_) => {
                let _ = self.stop.send(true);
                task.await.expect("reader task")
            }
        };
        let run = match child.wait(Duration::from_secs(5)).await {
            Ok(run) => run,
            Err(e) => {
                let mut run = child.snapshot();
                run.lines.push(format!("FATAL (test) {e:#}"));
                run
            }
        };
        let lines = self.lines.lock().unwrap().clone();
        (run, lines)
    }
}

// ------------------------------------------------------------------------------------------------ checks

/// What one producer did, checked against the clusters.
struct Outcome {
    client: Client,
    version: String,
    /// Records the client was asked to produce, and distinct ones acknowledged.
    produced: u64,
    acked: usize,
    /// Acknowledged ids found on neither cluster at the partition and offset their ack named.
    missing: Vec<u64>,
    /// How many acknowledgements came from north before, west during, north after the switches
    /// (in the order the client reported them; a later return to a cluster counts as a new segment).
    segments: Vec<(&'static str, usize)>,
    /// Ids present more than once across both clusters, and the extra copies.
    duplicated_ids: usize,
    extra_copies: usize,
    /// Last ack from the old cluster -> first from the new, per switch.
    gaps: Vec<Duration>,
    /// Why the run fails the test (empty: it passes).
    failures: Vec<String>,
    /// DATALOSS lines (franz-go reports detected loss this way) and other noteworthy output.
    notes: Vec<String>,
}

fn check_producer(
    client: Client,
    count: u64,
    run: &ClientRun,
    lines: &[(Instant, String)],
    north: &Log,
    west: Option<&Log>,
) -> Outcome {
    let empty = Log::new();
    let west = west.unwrap_or(&empty);
    let mut failures = Vec::new();
    if let Some(f) = run.fatal() {
        failures.push(f.clone());
    }
    if run.code != Some(0) {
        failures.push(format!("exit code {:?}", run.code));
    }
    if run.done().is_none() {
        failures.push("no DONE line".into());
    }
    let errors = run.errors();
    if !errors.is_empty() {
        failures.push(format!("{} ERR lines, first: {}", errors.len(), errors[0]));
    }
    let acks: Vec<(Instant, Ack)> = lines
        .iter()
        .filter_map(|(at, l)| Some((*at, parse_ack(l)?)))
        .collect();
    let distinct: HashSet<u64> = acks.iter().map(|(_, a)| a.i).collect();
    if distinct.len() as u64 != count {
        failures.push(format!(
            "{} of {count} records acknowledged",
            distinct.len()
        ));
    }
    let holds = |log: &Log, p: i32, id: &str| {
        log.range((p, i64::MIN)..=(p, i64::MAX))
            .any(|(_, v)| v == id)
    };
    let mut missing = Vec::new();
    let mut missing_lines = Vec::new();
    let mut no_offset = Vec::new();
    let mut segments: Vec<(&'static str, usize)> = Vec::new();
    let mut gaps = Vec::new();
    let mut last: Option<(&'static str, Instant)> = None;
    for (at, a) in &acks {
        let id = a.i.to_string();
        let at_po = (a.partition, a.offset);
        let from = if north.get(&at_po) == Some(&id) {
            "north"
        } else if west.get(&at_po) == Some(&id) {
            "west"
        } else if a.offset < 0 && holds(north, a.partition, &id) {
            // acknowledged without an offset (what clients report for DUPLICATE_SEQUENCE_NUMBER: a
            // retry of a batch the broker already has), and the record is there
            no_offset.push(a.i);
            "north"
        } else if a.offset < 0 && holds(west, a.partition, &id) {
            no_offset.push(a.i);
            "west"
        } else {
            missing.push(a.i);
            missing_lines.push(format!("ACK {} {} {}", a.i, a.partition, a.offset));
            continue;
        };
        match segments.last_mut() {
            Some((c, n)) if *c == from => *n += 1,
            _ => {
                if let Some((_, t0)) = last {
                    gaps.push(at.duration_since(t0));
                }
                segments.push((from, 1));
            }
        }
        last = Some((from, *at));
    }
    if !missing.is_empty() {
        let placed: Vec<String> = missing
            .iter()
            .take(5)
            .map(|id| {
                let id = id.to_string();
                let find = |log: &Log| {
                    log.iter()
                        .filter(|(_, v)| **v == id)
                        .map(|((p, o), _)| format!("{p}/{o}"))
                        .collect::<Vec<_>>()
                };
                format!("{id} is at north {:?}, west {:?}", find(north), find(west))
            })
            .collect();
        failures.push(format!(
            "{} acknowledged records are not where their acks say on either cluster: {:?}{}; {}",
            missing.len(),
            &missing_lines[..missing_lines.len().min(5)],
            if missing.len() > 5 { " ..." } else { "" },
            placed.join("; ")
        ));
    }
    let mut notes: Vec<String> = run
        .lines
        .iter()
        .filter(|l| l.starts_with("DATALOSS"))
        .cloned()
        .collect();
    if !no_offset.is_empty() {
        notes.push(format!(
            "{} acks without an offset (ids {:?}), records found in their partition",
            no_offset.len(),
            &no_offset[..no_offset.len().min(10)]
        ));
    }
    if !failures.is_empty() {
        failures.push(dump(Member::Producer(client), run, lines));
    }
    let mut copies: HashMap<u64, usize> = HashMap::new();
    for v in north.values().chain(west.values()) {
        if let Ok(id) = v.parse() {
            *copies.entry(id).or_default() += 1;
        }
    }
    let duplicated_ids = copies.values().filter(|n| **n > 1).count();
    let extra_copies = copies.values().map(|n| n - 1).sum();
    Outcome {
        client,
        version: version(run),
        produced: count,
        acked: distinct.len(),
        missing,
        segments,
        duplicated_ids,
        extra_copies,
        gaps,
        failures,
        notes,
    }
}

/// What one consumer group member did across the switches, checked against the feeder's
/// acknowledgements and the clusters. Consumer offsets do not carry over between two clusters without
/// a replication tool, so where it starts reading on the other cluster is `auto.offset.reset`
/// (earliest): re-reads are expected, skips are not.
struct GroupOutcome {
    member: Member,
    version: String,
    /// MSG lines, and distinct values among them.
    records: usize,
    distinct: usize,
    /// Acknowledged ids of the feeder this member never read, though it read past them (a gap on
    /// west) or they are on north, where it reads to the end.
    skipped: Vec<u64>,
    /// Acknowledged ids only west holds, beyond the last record this member read from their
    /// partition there before the failback moved it: no client can read those without a mirror
    /// or another switch (the test clusters are not mirrored). Printed, not a failure.
    unreached: Vec<u64>,
    /// Records read between the failover and the failback that only west holds (at that partition
    /// and offset), and after the failback that only north holds: it followed both switches.
    west_between: usize,
    north_after: usize,
    errors: usize,
    failures: Vec<String>,
}

fn check_group(
    member: Member,
    (run, lines, exited): &(ClientRun, Vec<(Instant, String)>, bool),
    (failover, failback): (Instant, Instant),
    acked: &HashSet<u64>,
    north: &Log,
    west: &Log,
) -> GroupOutcome {
    let msgs: Vec<(Instant, common::tools::Msg)> = lines
        .iter()
        .filter_map(|(at, l)| Some((*at, parse_msg(l)?)))
        .collect();
    let only = |m: &common::tools::Msg, on: &Log, other: &Log| {
        let at = (m.partition, m.offset);
        on.get(&at) == Some(&m.value) && other.get(&at) != Some(&m.value)
    };
    let read: HashSet<u64> = msgs
        .iter()
        .filter_map(|(_, m)| m.value.parse().ok())
        .collect();
    // Where each acknowledged id landed, and how far this member read on west per partition.
    let ids = |log: &Log| -> HashMap<u64, (i32, i64)> {
        log.iter()
            .filter_map(|(at, v)| Some((v.parse().ok()?, *at)))
            .collect()
    };
    let (on_north, on_west) = (ids(north), ids(west));
    let mut west_reach: HashMap<i32, i64> = HashMap::new();
    for (_, m) in msgs.iter().filter(|(_, m)| only(m, west, north)) {
        let r = west_reach.entry(m.partition).or_insert(m.offset);
        *r = (*r).max(m.offset);
    }
    let (mut skipped, mut unreached): (Vec<u64>, Vec<u64>) = acked
        .difference(&read)
        .copied()
        .partition(|id| match (on_north.get(id), on_west.get(id)) {
            (None, Some((p, o))) => west_reach.get(p).is_some_and(|r| r > o),
            _ => true,
        });
    skipped.sort_unstable();
    unreached.sort_unstable();
    let west_between = msgs
        .iter()
        .filter(|(at, m)| *at > failover && *at < failback && only(m, west, north))
        .count();
    let north_after = msgs
        .iter()
        .filter(|(at, m)| *at > failback && only(m, north, west))
        .count();
    let mut failures = Vec::new();
    if let Some(f) = run.fatal() {
        failures.push(f.clone());
    }
    if *exited {
        failures.push(format!("exited by itself (code {:?})", run.code));
    }
    if !skipped.is_empty() {
        failures.push(format!(
            "{} acknowledged records never read, ids {:?}{}",
            skipped.len(),
            &skipped[..skipped.len().min(10)],
            if skipped.len() > 10 { " ..." } else { "" }
        ));
    }
    if west_between == 0 || north_after == 0 {
        failures.push(format!(
            "did not follow: {west_between} records only west holds read between the switches, {north_after} only north holds after the failback"
        ));
    }
    let errors = run.errors();
    if !failures.is_empty() {
        if let Some(e) = errors.first() {
            failures.push(format!("{} ERR lines, first: {e}", errors.len()));
        }
        failures.push(dump(member, run, lines));
    }
    GroupOutcome {
        member,
        version: version(run),
        records: msgs.len(),
        distinct: msgs
            .iter()
            .map(|(_, m)| &m.value)
            .collect::<HashSet<_>>()
            .len(),
        skipped,
        unreached,
        west_between,
        north_after,
        errors: errors.len(),
        failures,
    }
}

/// The client's name and version from its `VERSION` line.
fn version(run: &ClientRun) -> String {
    run.version()
        .map(|v| v.trim_start_matches("VERSION ").to_string())
        .unwrap_or_else(|| "?".into())
}

/// Writes what a failed client printed (stdout lines, and its stderr: client logs) to two temp files;
/// says where.
fn dump(member: Member, run: &ClientRun, lines: &[(Instant, String)]) -> String {
    let name = member.name().replace([' ', '(', ')'], "");
    let path = |ext| {
        let pid = std::process::id();
        std::env::temp_dir().join(format!("client_matrix-{name}-{pid}.{ext}"))
    };
    let all: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let (stdout, stderr) = (path("lines"), path("stderr"));
    match std::fs::write(&stdout, all.join("\n")).and(std::fs::write(&stderr, &run.stderr)) {
        Ok(()) => format!("its output: {}, {}", stdout.display(), stderr.display()),
        Err(e) => format!("its output not kept: {e}"),
    }
}

fn result(failures: &[String]) -> String {
    if failures.is_empty() {
        "ok".to_string()
    } else {
        format!("FAIL: {}", failures.join("; "))
    }
}

/// Prints the outcomes as markdown tables (the README's client table comes from these lines) and
/// panics with every failure.
fn report(title: &str, outcomes: &[Outcome], groups: &[GroupOutcome], elapsed: Duration) {
    println!("\n### {title} ({:.1} s)", elapsed.as_secs_f64());
    println!("| producer | version | produced / acked / found | acks per cluster, in order | ack gap at each switch | duplicated ids (extra copies) | result |");
    println!("|---|---|---|---|---|---|---|");
    for o in outcomes {
        let segs: Vec<String> = o.segments.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let gaps: Vec<String> = o
            .gaps
            .iter()
            .map(|g| format!("{} ms", g.as_millis()))
            .collect();
        println!(
            "| {} | {} | {} / {} / {} | {} | {} | {} ({}) | {}{} |",
            o.client.name(),
            o.version,
            o.produced,
            o.acked,
            o.acked - o.missing.len(),
            segs.join(", "),
            gaps.join(", "),
            o.duplicated_ids,
            o.extra_copies,
            result(&o.failures),
            if o.notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", o.notes.join("; "))
            }
        );
    }
    if !groups.is_empty() {
        println!(
            "\n| consumer group (reads {}) | version | consumed (distinct) | skipped | left unread on west at the failback (no mirror) | only-west records read between the switches / only-north after | ERR lines | result |",
            FEEDER.name()
        );
        println!("|---|---|---|---|---|---|---|---|");
    }
    for g in groups {
        println!(
            "| {} | {} | {} ({}) | {} | {} | {} / {} | {} | {} |",
            g.member.name(),
            g.version,
            g.records,
            g.distinct,
            g.skipped.len(),
            g.unreached.len(),
            g.west_between,
            g.north_after,
            g.errors,
            result(&g.failures)
        );
    }
    let failed: Vec<String> = outcomes
        .iter()
        .map(|o| (Member::Producer(o.client), &o.failures))
        .chain(groups.iter().map(|g| (g.member, &g.failures)))
        .filter(|(_, f)| !f.is_empty())
        .map(|(m, f)| format!("{}: {}", m.name(), f.join("; ")))
        .collect();
    assert!(failed.is_empty(), "{title}:\n  {}", failed.join("\n  "));
}

// ------------------------------------------------------------------------------------------------ scenarios

/// Every client through the proxy to one tansu broker: each producer writes `COUNT` records to its
/// own topic while a consumer group of the same language reads them back, proxy addresses only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_produces_and_consumes_through_the_proxy() {
    const COUNT: u64 = 200;
    const PREFIX: &str = "through";
    let t0 = Instant::now();
    let north = Dc::Tansu(Tansu::builder().cluster_id("dc-north").start().unwrap());
    for c in Client::ALL {
        north.create_topic(&c.topic(PREFIX)).await;
    }
    let clusters = [("north", north.bootstrap())];
    let tp = TestProxy::start(&clusters, "north").await;

    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for c in Client::ALL {
        let topic = c.topic(PREFIX);
        producers.push(Tracked::new(
            Member::Producer(c),
            c.producer(
                ProducerArgs::new(&tp.bootstrap, &topic, COUNT).rate(100.0),
                false,
            ),
        ));
        let group = format!("matrix-{}", c.name());
        let args = ConsumerArgs::topic(&tp.bootstrap, group, &topic, COUNT).timeout_sec(90.0);
        if let Some(child) = c.consumer(Protocol::Classic, args) {
            consumers.push((c, Tracked::new(Member::Group(c, Protocol::Classic), child)));
        }
    }
    let mut runs = Vec::new();
    for (c, p) in Client::ALL.into_iter().zip(producers) {
        runs.push((c, p.finish(FINISH_TIMEOUT).await));
    }
    let mut consumer_runs = Vec::new();
    for (c, k) in consumers {
        consumer_runs.push((c, k.finish(FINISH_TIMEOUT).await.0));
    }
    let logs = read_dc(&north, PREFIX, &Client::ALL).await;
    let mut outcomes = Vec::new();
    for (c, (run, lines)) in &runs {
        outcomes.push(check_producer(*c, COUNT, run, lines, &logs[c], None));
    }
    // The consumers: every record of their topic, each MSG where the cluster holds it.
    for (c, run) in &consumer_runs {
        let o = outcomes.iter_mut().find(|o| o.client == *c).unwrap();
        let log = &logs[c];
        let msgs: Vec<_> = run.lines.iter().filter_map(|l| parse_msg(l)).collect();
        let values: HashSet<&str> = msgs.iter().map(|m| m.value.as_str()).collect();
        let misplaced = msgs
            .iter()
            .filter(|m| log.get(&(m.partition, m.offset)) != Some(&m.value))
            .count();
        let expected: HashSet<String> = (0..COUNT).map(|i| i.to_string()).collect();
        let unread = expected
            .iter()
            .filter(|v| !values.contains(v.as_str()))
            .count();
        println!(
            "{} consumer: {:?}, exit {:?}, {} MSG lines, {} distinct values, {unread} of {COUNT} not read, {misplaced} not where the cluster holds them",
            c.name(),
            run.done().or(run.lines.iter().find(|l| l.starts_with("TIMEOUT"))),
            run.code,
            msgs.len(),
            values.len()
        );
        if run.code != Some(0) || run.done().is_none() || unread > 0 || misplaced > 0 {
            o.failures.push(format!(
                "consumer: exit {:?}, {unread} unread, {misplaced} misplaced; {}",
                run.code,
                run.describe()
            ));
        }
    }
    report(
        "through the proxy, one tansu broker",
        &outcomes,
        &[],
        t0.elapsed(),
    );
    tp.proxy.shutdown().await;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The topics exist on both clusters before the run.
    HasTopic,
    /// The topics exist only on north; the failover target creates them when the clients first use
    /// them there (`auto.create.topics.enable`). Real Kafka only: see [`Dc::Tansu`].
    AutoCreated,
}

/// One data centre.
enum Dc {
    /// tansu 0.6 never auto-creates a topic, and it acknowledges a Produce to a topic it lacks without
    /// making the records readable (Metadata and Fetch go on answering UNKNOWN_TOPIC_OR_PARTITION; once
    /// the topic is created, the partition answers every Produce with UNKNOWN_SERVER_ERROR, its storage
    /// finding a batch already at the offset). So on tansu a switch to a cluster without the topic loses
    /// acknowledged records whatever the proxy does: only [`Target::HasTopic`] is meaningful there.
    Tansu(Tansu),
    /// A real Apache Kafka cluster leased from the Kafka kit (see [`kafka_pair`]).
    Kafka { bootstrap: String },
}

impl Dc {
    fn bootstrap(&self) -> String {
        match self {
            Dc::Tansu(t) => t.bootstrap(),
            Dc::Kafka { bootstrap } => bootstrap.clone(),
        }
    }

    fn is_tansu(&self) -> bool {
        matches!(self, Dc::Tansu(_))
    }

    async fn create_topic(&self, name: &str) {
        match self {
            Dc::Tansu(t) => t.create_topic(name, PARTITIONS).unwrap(),
            Dc::Kafka { bootstrap } => {
                use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
                use rdkafka::client::DefaultClientContext;
                let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", bootstrap)
                    .create()
                    .unwrap();
                let topic = NewTopic::new(name, PARTITIONS as i32, TopicReplication::Fixed(1));
                let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
                for r in admin.create_topics(&[topic], &opts).await.unwrap() {
                    r.unwrap_or_else(|(t, e)| panic!("create topic {t} on {bootstrap}: {e}"));
                }
            }
        }
    }

    /// `tansu: storage errors` for the report, when it is tansu and it had any.
    fn storage_errors(&self) -> Option<usize> {
        match self {
            Dc::Tansu(t) => Some(t.log().matches("AlreadyExists").count()).filter(|n| *n > 0),
            Dc::Kafka { .. } => None,
        }
    }
}

/// Every client's topic on `dc`, read directly with kcat, in parallel. A topic the cluster lacks
/// reads as empty.
async fn read_dc(dc: &Dc, prefix: &str, clients: &[Client]) -> HashMap<Client, Log> {
    let reads = clients
        .iter()
        .map(|c| read_topic_async(dc.bootstrap(), c.topic(prefix)));
    let logs = futures::future::join_all(reads).await;
    let logs = logs.into_iter().map(Option::unwrap_or_default);
    clients.iter().copied().zip(logs).collect()
}

/// Every member of a run at once (see [`Member`]) through failover (north -> west) and failback;
/// then every acknowledgement looked up on both clusters, and every consumer group's reads checked
/// against the acknowledgements of the producer it reads.
async fn failover_and_failback(
    north: Dc,
    west: Dc,
    target: Target,
    prefix: &str,
    members: &[Member],
    production: Duration,
) {
    let groups: Vec<(Client, Protocol)> = members
        .iter()
        .filter_map(|m| match *m {
            Member::Group(c, p) => Some((c, p)),
            Member::Producer(_) => None,
        })
        .collect();
    let mut clients: Vec<Client> = members
        .iter()
        .filter_map(|m| match *m {
            Member::Producer(c) => Some(c),
            Member::Group(..) => None,
        })
        .collect();
    if !groups.is_empty() && !clients.contains(&FEEDER) {
        clients.push(FEEDER);
    }
    let feeder = clients.iter().position(|c| *c == FEEDER);
    let count = (production.as_secs_f64() * RATE) as u64;
    let t0 = Instant::now();
    for c in &clients {
        north.create_topic(&c.topic(prefix)).await;
        if target == Target::HasTopic {
            west.create_topic(&c.topic(prefix)).await;
        }
    }
    let clusters = [("north", north.bootstrap()), ("west", west.bootstrap())];
    // Before the proxy counts anything: the carried consumer positions are checked at the end.
    kafka_sidecar::admin::install_recorder().expect("metrics recorder");
    let tp = TestProxy::start(&clusters, "north").await;

    let kafkajs_idempotent = !north.is_tansu();
    let mut producers: Vec<Tracked> = clients
        .iter()
        .map(|c| {
            let args = ProducerArgs::new(&tp.bootstrap, c.topic(prefix), count).rate(RATE);
            let args = c.metadata_max_age(args, METADATA_MAX_AGE_MS);
            Tracked::new(Member::Producer(*c), c.producer(args, kafkajs_idempotent))
        })
        .collect();
    let mut consumers: Vec<Tracked> = groups
        .iter()
        .map(|&(c, protocol)| {
            let group = format!("{prefix}-{}-{}", c.name(), protocol.name());
            let args =
                ConsumerArgs::topic(&tp.bootstrap, group, FEEDER.topic(prefix), u32::MAX as u64)
                    .timeout_sec((production + FINISH_TIMEOUT).as_secs_f64());
            let child = c
                .consumer(protocol, args)
                .unwrap_or_else(|| panic!("{}: no test consumer", c.name()));
            Tracked::new(Member::Group(c, protocol), child)
        })
        .collect();
    // Steady state on north: two seconds of acknowledgements from every producer, and every consumer
    // group reading (so that each switch meets an active member).
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    let mut stalled = None;
    for (i, p) in producers.iter_mut().enumerate() {
        if !p.wait_acks(2 * RATE as usize, deadline).await {
            stalled = Some(i);
            break;
        }
    }
    if let Some(i) = stalled {
        // Its output (the client's own logs on stderr) is kept for the report: a stall before any
        // switch was seen once in CI (kafkajs) with nothing logged by the proxy.
        let p = producers.swap_remove(i);
        let (member, last) = (p.member, p.lines.lock().unwrap().last().cloned());
        let (run, lines, _) = p.stop().await;
        panic!(
            "{}: no steady production on north: {last:?}; {}",
            member.name(),
            dump(member, &run, &lines)
        );
    }
    for k in &mut consumers {
        k.read_above(0, deadline).await;
    }
    let started = t0.elapsed();

    let mut phases = Vec::new();
    let mut switched = Vec::new();
    for (to, name) in [("west", "failover"), ("north", "failback")] {
        let marks: Vec<u64> = producers
            .iter()
            .map(|p| p.max_acked().unwrap_or(0) + 2 * RATE as u64)
            .collect();
        let at = Instant::now();
        switched.push(at);
        tp.switch_to(&clusters, to, "").await;
        // Every producer goes on: an ack of a record produced two seconds after the switch ...
        let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
        let mut stalled = Vec::new();
        for (p, mark) in producers.iter_mut().zip(&marks) {
            if !p.wait_ack_above(*mark, deadline).await {
                stalled.push(p.member.name());
            }
        }
        // ... and every consumer group reads a record produced two seconds after the switch
        for k in &mut consumers {
            if !k.read_above(marks[feeder.unwrap()], deadline).await {
                stalled.push(k.member.name());
            }
        }
        println!(
            "{name} to {to}: every producer acknowledged again (and consumer read) after {} ms{}",
            at.elapsed().as_millis(),
            if stalled.is_empty() {
                String::new()
            } else {
                format!(" (except {stalled:?}: error, or no ack within {PHASE_TIMEOUT:?})")
            }
        );
        phases.push(at.elapsed());
    }

    let mut runs = Vec::new();
    for (c, p) in clients.iter().zip(producers) {
        runs.push((*c, p.finish(FINISH_TIMEOUT).await));
    }
    // The consumers get until they have read every record the feeder had acknowledged, or the deadline.
    let acked: HashSet<u64> = feeder.map(|i| runs[i].1 .0.acked_ids()).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    let mut group_runs = Vec::new();
    for mut k in consumers {
        k.wait_for(deadline, |lines| {
            let read: HashSet<u64> = lines
                .iter()
                .filter_map(|(_, l)| parse_msg(l)?.value.parse().ok())
                .collect();
            acked.is_subset(&read) || lines.iter().any(|(_, l)| l.starts_with("FATAL"))
        })
        .await;
        group_runs.push((k.member, k.stop().await));
    }
    let north_logs = read_dc(&north, prefix, &clients).await;
    let west_logs = read_dc(&west, prefix, &clients).await;
    let outcomes: Vec<Outcome> = runs
        .iter()
        .map(|(c, (run, lines))| {
            check_producer(*c, count, run, lines, &north_logs[c], Some(&west_logs[c]))
        })
        .collect();
    let group_outcomes: Vec<GroupOutcome> = group_runs
        .iter()
        .map(|(m, run)| {
            let switches = (switched[0], switched[1]);
            check_group(
                *m,
                run,
                switches,
                &acked,
                &north_logs[&FEEDER],
                &west_logs[&FEEDER],
            )
        })
        .collect();
    println!(
        "timing: steady state after {:.1} s, failover phase {:.1} s, failback phase {:.1} s",
        started.as_secs_f64(),
        phases[0].as_secs_f64(),
        phases[1].as_secs_f64()
    );
    for (name, dc) in [("north", &north), ("west", &west)] {
        if let Some(n) = dc.storage_errors() {
            println!("{name} tansu log: {n} AlreadyExists storage errors (UNKNOWN_SERVER_ERROR to clients)");
        }
    }
    let status = tp.proxy.shared.status();
    assert_eq!(status["active_cluster"], "north");
    assert_eq!(status["switches"], 2);
    // Each switch carried every group's positions (translated, or decided per partition): none gave
    // up on a whole group, e.g. because the target had never served a group before (a fresh
    // cluster's coordinator is not available until it has created its offsets topic).
    if !groups.is_empty() {
        let positions = kafka_sidecar::admin::names::CONSUMER_POSITIONS_TOTAL;
        for path in ["failed", "timeout"] {
            assert_eq!(
                metric(positions, &[("path", path)]),
                0.0,
                "consumer positions carried with path {path}"
            );
        }
        assert!(
            metric(positions, &[]) > 0.0,
            "no consumer positions carried"
        );
    }
    tp.proxy.shutdown().await;
    report(
        &format!(
            "failover and failback on {}, {target:?}",
            if north.is_tansu() { "tansu" } else { "Kafka" }
        ),
        &outcomes,
        &group_outcomes,
        t0.elapsed(),
    );
}

fn tansu_pair() -> (Dc, Dc) {
    (
        Dc::Tansu(Tansu::builder().cluster_id("dc-north").start().unwrap()),
        Dc::Tansu(Tansu::builder().cluster_id("dc-west").start().unwrap()),
    )
}

/// Two tansu brokers, the topic on both beforehand: every producer but franz-go's (below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_keeps_every_ack_across_failover_and_failback() {
    let (north, west) = tansu_pair();
    let members = [
        Member::Producer(JAVA_3),
        Member::Producer(Client::KafkaPython),
        Member::Producer(Client::Confluent),
        Member::Producer(Client::Kafkajs),
        Member::Producer(Client::Sarama),
    ];
    failover_and_failback(north, west, Target::HasTopic, "both", &members, PRODUCERS).await;
}

/// A consumer group per language follows the switches on tansu, and reads every record. Each of them
/// skips records today: north's last ones before the failover (Java 274, confluent-kafka 108 of 1400
/// in one run: they go on at positions from the other cluster), or the last ones west acknowledged
/// before the failback (kafkajs 53, Sarama 2: the consumer never returns to west).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "consumers skip records acknowledged around a switch on tansu"]
async fn every_consumer_group_follows_failover_and_failback() {
    let (north, west) = tansu_pair();
    let members = [
        Member::Group(JAVA_3, Protocol::Classic),
        Member::Group(Client::Confluent, Protocol::Classic),
        Member::Group(Client::Kafkajs, Protocol::Classic),
        Member::Group(Client::Sarama, Protocol::Classic),
    ];
    failover_and_failback(
        north,
        west,
        Target::HasTopic,
        "groups",
        &members,
        WITH_GROUPS,
    )
    .await;
}

/// franz-go remembers each topic's id (Metadata v10+). The same topic has another id on the other
/// cluster, and when a metadata refresh after the switch shows it, franz-go takes the topic for deleted
/// and re-created: it fails every buffered and new record of the topic with UNKNOWN_TOPIC_ID ("we do not
/// adopt the new ID ... until it is purged"), for good. Nothing acknowledged is lost, but the producer
/// is dead for that topic. Fixing it takes topic ids that stay the same across a switch (or none) in
/// what the proxy shows clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "tansu: its consumer group skips records around a switch (see every_consumer_group_follows_failover_and_failback); the franz-go producer passes, on Kafka in CI"]
async fn franz_go_keeps_producing_across_failover_and_failback() {
    let (north, west) = tansu_pair();
    let members = [
        Member::Producer(Client::Franz),
        Member::Group(Client::Franz, Protocol::Classic),
    ];
    failover_and_failback(
        north,
        west,
        Target::HasTopic,
        "franz",
        &members,
        PAST_STALLS,
    )
    .await;
}

/// Two real Apache Kafka 4 clusters of one KRaft node each, north node id 1 and west node id 2, with
/// `auto.create.topics.enable=true` and 3 default partitions (north's topics have 3 too), leased from
/// the Kafka kit (`tests/common/kafka.rs`): shared by the `kafka_*` tests of this binary, stopped by a
/// watchdog after its last test process exits. Started one after the other (the lease is serialised).
fn kafka_pair() -> (Dc, Dc) {
    let spec = |node_id_base| Spec {
        node_id_base,
        partitions: PARTITIONS,
        ..Spec::default()
    };
    let t0 = Instant::now();
    let north = kafka::lease("matrix-north", &spec(1));
    let west = kafka::lease("matrix-west", &spec(2));
    println!(
        "kafka: north {} (node ids {:?}), west {} (node ids {:?}) leased in {:.1} s",
        north.bootstrap,
        north.node_ids,
        west.bootstrap,
        west.node_ids,
        t0.elapsed().as_secs_f64()
    );
    (
        Dc::Kafka {
            bootstrap: north.bootstrap,
        },
        Dc::Kafka {
            bootstrap: west.bootstrap,
        },
    )
}

/// On Kafka, these survive both switches in both variants today (CI runs them; see the module doc for
/// what is asserted).
const KAFKA_PASSING: &[Member] = &[
    Member::Producer(JAVA_3),
    Member::Producer(JAVA_4),
    Member::Producer(Client::KafkaPython),
    Member::Producer(Client::Confluent),
    Member::Producer(Client::Kafkajs),
    Member::Producer(Client::Sarama),
    Member::Producer(Client::Franz),
    Member::Group(JAVA_3, Protocol::Classic),
    Member::Group(JAVA_4, Protocol::Classic),
    Member::Group(JAVA_4, Protocol::Consumer),
    Member::Group(Client::Confluent, Protocol::Classic),
    Member::Group(Client::Confluent, Protocol::Consumer),
    Member::Group(Client::Kafkajs, Protocol::Classic),
    Member::Group(Client::Sarama, Protocol::Classic),
];

/// franz-go's classic consumer: it follows both switches, but in one CI run of five it skipped 29
/// records around the failback ("unable to join group session: UNKNOWN_MEMBER_ID" after its commit of
/// the other cluster's positions was refused). Carrying consumer positions across a switch is issue
/// 21; until then it runs in the ignored test below, with the feeder it reads.
const KAFKA_FLAKY: &[Member] = &[
    Member::Producer(JAVA_3),
    Member::Group(Client::Franz, Protocol::Classic),
];

/// Real Kafka: `members` across failover and failback, each run on topics of its own.
async fn kafka_matrix(target: Target, prefix: &str, members: &[Member], production: Duration) {
    let (north, west) = kafka_pair();
    let prefix = format!("{prefix}{}", std::process::id());
    failover_and_failback(north, west, target, &prefix, members, production).await;
}

/// Real Kafka, the topics on both clusters beforehand (each with another topic id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_every_client_across_failover_and_failback_topic_on_both() {
    kafka_matrix(Target::HasTopic, "both", KAFKA_PASSING, WITH_GROUPS).await;
}

/// Real Kafka, the topics auto-created on the failover target by the clients' first use: the case
/// tansu cannot play (see [`Dc::Tansu`]): each client's first requests to west find no topic until a
/// metadata request through the proxy has it created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_every_client_across_failover_and_failback_topic_auto_created() {
    kafka_matrix(Target::AutoCreated, "new", KAFKA_PASSING, WITH_GROUPS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "franz-go's classic consumer skipped records around a failback once in five runs (issue 21)"]
async fn kafka_franz_go_consumer_across_failover_and_failback() {
    kafka_matrix(Target::AutoCreated, "franzc", KAFKA_FLAKY, WITH_GROUPS).await;
}
