//! `kafka-sidecar demo`: the proxy at work without owning a Kafka cluster.
//!
//! Starts two in-process upstream clusters (librdkafka's mock cluster, three brokers
//! each: "north" and "west"), the proxy in front of them with a real config file, and
//! real rdkafka clients through it: an idempotent producer and a consumer group. Half
//! way through it edits the config file to fail over to west, then fails back, and
//! prints what each side saw.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::Config;
use crate::proxy::Proxy;

mod fleet;

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 3;

fn config_text(north: &str, west: &str, active: &str) -> String {
    format!(
        "# written by kafka-sidecar demo\n\
         listen: {{address: 127.0.0.1, bootstrap_port: 19092, broker_port_base: 19100, max_node_id: 100}}\n\
         active_cluster: {active}\n\
         clusters:\n  north: {{bootstrap_servers: [\"{north}\"]}}\n  west: {{bootstrap_servers: [\"{west}\"]}}\n\
         watch: {{poll_interval: 1s, debounce: 50ms}}\n\
         switch: {{drain_timeout: 2s}}\n"
    )
}

/// Runs the demo; `messages` is how many messages the producer sends. `log_file`: where
/// the proxies' tracing logs go (set up by the caller), named at the start; `None` when
/// they go to the terminal (`--verbose`).
pub async fn run(messages: u32, log_file: Option<&Path>) -> anyhow::Result<()> {
    println!(
        "kafka-sidecar demo: two Kafka clusters in this process, real Kafka clients, no restarts."
    );
    match log_file {
        Some(p) => println!(
            "The proxies' own logs go to {} (--verbose shows them here instead).",
            p.display()
        ),
        None => println!("The proxies' own logs are shown as they happen (--verbose)."),
    }
    println!("\n--- part 1: one sidecar; failover and failback by editing its config file ---");
    let north = MockCluster::new(3).context("starting mock cluster north")?;
    let west = MockCluster::new(3).context("starting mock cluster west")?;
    for m in [&north, &west] {
        m.create_topic(TOPIC, PARTITIONS, 3)?;
    }
    let (nb, wb) = (north.bootstrap_servers(), west.bootstrap_servers());
    println!("Two clusters, north ({nb}) and west ({wb}), 3 brokers each, both with a topic \"{TOPIC}\".");
    println!("Nothing replicates between them: a message is on the cluster it was written to.");

    let dir = tempfile_dir()?;
    let path = dir.join("config.yaml");
    write_config(&path, &config_text(first(&nb), first(&wb), "north"))?;
    let proxy = Proxy::start(Config::load(&path)?, Some(path.clone())).await?;
    let bootstrap = proxy.bootstrap.to_string();
    println!(
        "kafka-sidecar listens on {bootstrap} and relays to north (its config: {}).",
        path.display()
    );

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let md = producer
        .client()
        .fetch_metadata(Some(TOPIC), Duration::from_secs(10))?;
    let brokers: Vec<String> = md
        .brokers()
        .iter()
        .map(|b| format!("{} at {}:{}", b.id(), b.host(), b.port()))
        .collect();
    println!(
        "The clients see only the proxy: bootstrap.servers={bootstrap}, brokers {}.",
        brokers.join(", ")
    );

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "demo-group")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()?;
    consumer.subscribe(&[TOPIC])?;
    // Every payload the consumer group is handed, in order.
    let consumed = Arc::new(Mutex::new(Vec::<String>::new()));
    let consumer_task = {
        let consumed = consumed.clone();
        tokio::spawn(async move {
            while let Ok(m) = consumer.recv().await {
                let payload = m.payload().map(|p| String::from_utf8_lossy(p).into_owned());
                consumed.lock().push(payload.unwrap_or_default());
            }
        })
    };
    println!(
        "A consumer group (auto.offset.reset=earliest) reads \"{TOPIC}\"; an idempotent producer \
         (acks=all) sends {messages} orders, 10 ms apart."
    );

    let started = Instant::now();
    let mut acked = BTreeSet::new();
    let mut errors = 0u32;
    let third = (messages / 3).max(1);
    let mut active = "north";
    let mut pending_switch: Option<u32> = None;
    let mut switched_at = Vec::new();
    for i in 0..messages {
        if i == third || i == 2 * third {
            let to = if i == third { "west" } else { "north" };
            write_config(&path, &config_text(first(&nb), first(&wb), to))?;
            let mut rx = proxy.shared.switch.subscribe();
            tokio::time::timeout(Duration::from_secs(15), async {
                while rx.borrow_and_update().cluster.name() != to {
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
            })
            .await
            .context("the proxy did not pick up the config edit")?;
            println!(
                "  [{:>4.1}s] before order {i}: the config file now says active_cluster: {to}; the proxy reloaded it and switched.",
                started.elapsed().as_secs_f64()
            );
            active = to;
            pending_switch = Some(i);
            switched_at.push(Instant::now());
        }
        let payload = format!("order-{i}");
        match producer
            .send(
                FutureRecord::to(TOPIC).key(&payload).payload(&payload),
                Duration::from_secs(30),
            )
            .await
        {
            Ok(_) => {
                acked.insert(payload);
                if pending_switch.take().is_some() {
                    let ms = proxy.shared.status()["last_switch"]["duration_ms"].as_f64();
                    println!(
                        "           order {i} was acknowledged by {active}{}; the clients were not restarted.",
                        ms.map(|ms| format!(" ({ms:.0} ms from the switch to {active}'s first answer)"))
                            .unwrap_or_default()
                    );
                }
            }
            Err((e, _)) => {
                errors += 1;
                println!("  delivery error for {payload}: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    producer.flush(Duration::from_secs(10))?;
    println!(
        "  [{:>4.1}s] the producer is done: {} of {messages} acknowledged, {errors} errors.",
        started.elapsed().as_secs_f64(),
        acked.len()
    );

    println!("Where every acknowledged order landed (read back from each cluster directly, not through the proxy):");
    let on_north = read_back(&nb, TOPIC, PARTITIONS)?;
    let on_west = read_back(&wb, TOPIC, PARTITIONS)?;
    let landing = Landing::new(&acked, &[("north", &on_north), ("west", &on_west)]);
    landing.print();

    // The consumer group: it is on north now. Wait (bounded) until it has read every
    // order on north, then say what it read and why.
    let north_ids: BTreeSet<&String> = on_north.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !north_ids
        .iter()
        .all(|id| consumed.lock().iter().any(|c| c == *id))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer_task.abort();
    let _ = consumer_task.await;
    let read = consumed.lock().clone();
    let distinct: BTreeSet<&String> = read.iter().collect();
    let read_of = |ids: &[String]| ids.iter().filter(|id| distinct.contains(id)).count();
    let (read_north, read_west) = (read_of(&on_north), read_of(&on_west));
    println!(
        "The consumer group read {} of the {} orders ({read_north} of north's {}, {read_west} of west's {}; {} handed out more than once):",
        distinct.len(),
        acked.len(),
        on_north.len(),
        on_west.len(),
        read.len() - distinct.len()
    );
    let on_west_for = match switched_at[..] {
        [to_west, back, ..] => back - to_west,
        _ => Duration::ZERO,
    };
    explain_consumer(
        read_west,
        on_west.len(),
        on_west_for,
        read.len() - distinct.len(),
    );

    let status = proxy.shared.status();
    println!(
        "The proxy's /status: active cluster {}, {} switches.",
        status["active_cluster"], status["switches"]
    );
    // Clients first, so that they leave quietly while the proxy still serves them.
    drop(producer);
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(errors == 0, "{errors} messages were not delivered");
    anyhow::ensure!(
        landing.lost.is_empty(),
        "acknowledged but on no cluster: {:?}",
        landing.lost
    );
    println!("Part 1 done: a failover and a failback under a running producer and consumer, no restart, nothing lost.");
    fleet::run().await?;
    println!("\nDemo finished.");
    Ok(())
}

/// Why the consumer group read what it read, from what happened in this run.
fn explain_consumer(read_west: usize, on_west: usize, on_west_for: Duration, repeated: usize) {
    println!(
        "  - Each cluster has its own consumer offsets. At every switch the proxy makes the group rejoin \
         on the new cluster and carries its positions to the copy of \"orders\" there (north.orders on \
         west, MirrorMaker 2's naming); nothing mirrors the clusters in this demo, so the group starts \
         from the offsets committed on the new cluster, or at auto.offset.reset=earliest when there \
         are none."
    );
    if read_west < on_west {
        println!(
            "  - {} of west's orders were not read. The group is new on west, and a new group's first \
             join waits group.initial.rebalance.delay.ms (3 s, on this mock cluster as on a Kafka broker) \
             before it hands out partitions; west was active for {:.1} s. After the failback the group \
             reads north only, and nothing here copies west's orders to north (MirrorMaker 2 or Cluster \
             Linking would, in production, with the group's offsets).",
            on_west - read_west,
            on_west_for.as_secs_f64()
        );
    } else {
        println!("  - West's orders were all read while the group was on west.");
    }
    if repeated > 0 {
        println!(
            "  - {repeated} orders were handed out twice: back on north the group resumed from the offsets it \
             had committed there before the failover (auto-commit runs every 5 s), so it read part of north \
             again. Kafka consumers are at-least-once; give them idempotent processing."
        );
    }
}

/// Where the acknowledged messages are: each cluster's share, and the acknowledged ones on
/// no cluster (lost) or on more than one or twice (written again by a retry).
pub(crate) struct Landing {
    per_cluster: Vec<(String, usize)>,
    pub(crate) lost: Vec<String>,
    pub(crate) twice: usize,
    /// On a cluster but never acknowledged: in flight when the producer stopped.
    unacked: usize,
    acked: usize,
}

impl Landing {
    pub(crate) fn new(acked: &BTreeSet<String>, clusters: &[(&str, &Vec<String>)]) -> Landing {
        let mut seen: BTreeMap<&String, usize> = BTreeMap::new();
        for (_, ids) in clusters {
            for id in ids.iter() {
                *seen.entry(id).or_default() += 1;
            }
        }
        Landing {
            per_cluster: clusters
                .iter()
                .map(|(n, ids)| (n.to_string(), ids.len()))
                .collect(),
            lost: acked
                .iter()
                .filter(|id| !seen.contains_key(id))
                .cloned()
                .collect(),
            twice: seen.values().filter(|&&n| n > 1).count(),
            unacked: seen.keys().filter(|id| !acked.contains(**id)).count(),
            acked: acked.len(),
        }
    }

    pub(crate) fn print(&self) {
        let shares: Vec<String> = self
            .per_cluster
            .iter()
            .map(|(n, c)| format!("{c} on {n}"))
            .collect();
        println!(
            "  {} acknowledged: {}; {} lost, {} written twice.",
            self.acked,
            shares.join(", "),
            self.lost.len(),
            self.twice
        );
        if self.unacked > 0 {
            println!(
                "  (and {} written but never acknowledged: in flight when the demo stopped the producer)",
                self.unacked
            );
        }
    }
}

/// Replaces the config file in one step (write a sibling, rename it over), as an editor or
/// the kubelet does: a plain write truncates first, and the watcher may read the empty file
/// (and log that it refused it).
fn write_config(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

fn first(list: &str) -> &str {
    list.split(',').next().unwrap_or(list)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("kafka-sidecar-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Every message value on `topic` of a cluster, read directly (not through the proxy)
/// from the low to the high watermark of each partition.
pub(crate) fn read_back(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<String>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "demo-verifier")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0;
    for p in 0..partitions {
        let (lo, hi) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if hi > lo {
            tpl.add_partition_offset(topic, p, Offset::Offset(lo))?;
            remaining += hi - lo;
        }
    }
    let mut out = Vec::new();
    if remaining == 0 {
        return Ok(out);
    }
    c.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while remaining > 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading {topic} back from {bootstrap}: {remaining} messages not read in 20 s"
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m?;
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            remaining -= 1;
        }
    }
    Ok(out)
}
