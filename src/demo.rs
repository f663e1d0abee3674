//! `kafka-sidecar demo`: the proxy at work without owning a Kafka cluster.
//!
//! Starts two in-process upstream clusters (librdkafka's mock cluster, three brokers
//! each: "north" and "west"), the proxy in front of them with a real config file, and
//! real rdkafka clients through it: an idempotent producer and a consumer group. Half
//! way through it edits the config file to fail over to west, then fails back, and
//! prints what each side saw.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::Message;

use crate::config::Config;
use crate::proxy::Proxy;

mod fleet;

const TOPIC: &str = "orders";

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

/// Runs the demo; `messages` is how many messages the producer sends.
pub async fn run(messages: u32) -> anyhow::Result<()> {
    let north = MockCluster::new(3).context("starting mock cluster north")?;
    let west = MockCluster::new(3).context("starting mock cluster west")?;
    for m in [&north, &west] {
        m.create_topic(TOPIC, 3, 3)?;
    }
    let (nb, wb) = (north.bootstrap_servers(), west.bootstrap_servers());
    println!("upstream cluster north: 3 brokers at {nb}");
    println!("upstream cluster west:  3 brokers at {wb}");

    let dir = tempfile_dir()?;
    let path = dir.join("config.yaml");
    std::fs::write(&path, config_text(first(&nb), first(&wb), "north"))?;
    let proxy = Proxy::start(Config::load(&path)?, Some(path.clone())).await?;
    let bootstrap = proxy.bootstrap.to_string();
    println!(
        "kafka-sidecar listening: bootstrap.servers={bootstrap}, config {}",
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
    println!("\nthe client's view of the cluster (every address is the proxy's):");
    for b in md.brokers() {
        println!("  broker {} at {}:{}", b.id(), b.host(), b.port());
    }

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "demo-group")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()?;
    consumer.subscribe(&[TOPIC])?;
    let consumed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let consumer_task = {
        let consumed = consumed.clone();
        tokio::spawn(async move {
            while let Ok(m) = consumer.recv().await {
                let _ = m.offset();
                consumed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };

    println!("\nproducing {messages} messages (idempotent producer, acks=all), switching clusters on the way:");
    let started = Instant::now();
    let mut acked = 0u32;
    let mut errors = 0u32;
    let third = (messages / 3).max(1);
    for i in 0..messages {
        if i == third || i == 2 * third {
            let to = if i == third { "west" } else { "north" };
            std::fs::write(&path, config_text(first(&nb), first(&wb), to))?;
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
                "  [{:>5.1}s] config edited: active_cluster={to}; clients keep running",
                started.elapsed().as_secs_f64()
            );
        }
        let payload = format!("order-{i}");
        match producer
            .send(
                FutureRecord::to(TOPIC).key(&payload).payload(&payload),
                Duration::from_secs(30),
            )
            .await
        {
            Ok(_) => acked += 1,
            Err((e, _)) => {
                errors += 1;
                println!("  delivery error for {payload}: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    producer.flush(Duration::from_secs(10))?;
    println!(
        "  [{:>5.1}s] producer done: {acked} acknowledged, {errors} errors, never restarted",
        started.elapsed().as_secs_f64()
    );

    let on_north = count(&nb)?;
    let on_west = count(&wb)?;
    println!("\nwhere the messages are (read directly from each cluster):");
    println!(
        "  north: {on_north}   west: {on_west}   total: {}",
        on_north + on_west
    );
    // Give the consumer a moment to catch up on north after the failback.
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumed.load(std::sync::atomic::Ordering::Relaxed) < u64::from(acked) / 2
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "  the consumer group read {} messages through the proxy (offsets only carry over between clusters if the replication tool syncs them)",
        consumed.load(std::sync::atomic::Ordering::Relaxed)
    );
    let status = proxy.shared.status();
    println!("\nproxy status:");
    println!(
        "  active cluster: {}, switches: {}",
        status["active_cluster"], status["switches"]
    );
    if let Some(ms) = status["last_switch"]["duration_ms"].as_f64() {
        println!(
            "  last switch: change applied -> first response from the new cluster in {ms:.1} ms"
        );
    }
    consumer_task.abort();
    let _ = consumer_task.await;
    // Clients first, so that they leave quietly while the proxy still serves them.
    drop(producer);
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(errors == 0, "{errors} messages were not delivered");
    println!("\npart 1 finished: the producer and the consumer survived a failover and a failback without a restart.");
    fleet::run().await?;
    println!("\ndemo finished.");
    Ok(())
}

fn first(list: &str) -> &str {
    list.split(',').next().unwrap_or(list)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("kafka-sidecar-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Number of messages on `TOPIC` of a cluster (high minus low watermark per partition).
fn count(bootstrap: &str) -> anyhow::Result<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "demo-verifier")
        .create()?;
    let mut total = 0;
    for p in 0..3 {
        let (lo, hi) = c.fetch_watermarks(TOPIC, p, Duration::from_secs(10))?;
        total += hi - lo;
    }
    Ok(total)
}
