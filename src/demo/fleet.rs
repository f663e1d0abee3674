//! The demo's second part: a fleet of two sidecars with the control plane and three
//! arbiters (all in this process), an automatic failover when the embedded north
//! cluster goes down, and a one-command failback (`kafka-sidecar failover`'s code).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::Config;
use crate::control::arbiter::Arbiter;
use crate::control::ops::{failover, FailoverArgs};
use crate::proxy::Proxy;

use super::{read_back, Landing};

const TOPIC: &str = "payments";
const BROKERS: i32 = 3;

fn config_text(north: &str, west: &str, port_base: u16, id: &str) -> String {
    format!(
        "listen: {{address: 127.0.0.1, bootstrap_port: {}, broker_port_base: {port_base}, max_node_id: 50}}\n\
         active_cluster: north\n\
         clusters:\n  north: {{bootstrap_servers: [\"{north}\"]}}\n  west: {{bootstrap_servers: [\"{west}\"]}}\n\
         limits: {{connect_timeout: 2s}}\n\
         switch: {{drain_timeout: 1s}}\n\
         control:\n  id: {id}\n  poll_wait: 100ms\n  report_interval: 1s\n\
         \x20 automatic:\n    priority: [north, west]\n    arbiters: [a1, a2, a3]\n    probe_interval: 300ms\n    probe_timeout: 1s\n    unhealthy_after: 2s\n    min_interval: 1h\n",
        port_base + 60
    )
}

pub async fn run() -> anyhow::Result<()> {
    println!("\n--- part 2: a fleet; automatic failover by a quorum of arbiters, one-command failback ---");
    let north = MockCluster::new(BROKERS).context("starting mock cluster north")?;
    let west = MockCluster::new(BROKERS).context("starting mock cluster west")?;
    for m in [&north, &west] {
        m.create_topic(TOPIC, 3, 3)?;
        // librdkafka's mock cluster has no CreateTopics: the control topics are made
        // here (on real clusters the first sidecar, arbiter or operator creates them).
        m.create_topic("kafka-sidecar.control.internal", 1, 3)?;
        m.create_topic("kafka-sidecar.fleet.internal", 2, 3)?;
    }
    let (nb, wb) = (north.bootstrap_servers(), west.bootstrap_servers());
    let first = |s: &str| s.split(',').next().unwrap_or(s).to_string();
    let dir = std::env::temp_dir().join(format!("kafka-sidecar-demo-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut proxies = vec![];
    let mut cfg = None;
    for (i, base) in [(0, 19200u16), (1, 19300u16)] {
        let path = dir.join(format!("sidecar-{i}.yaml"));
        std::fs::write(
            &path,
            config_text(&first(&nb), &first(&wb), base, &format!("demo-sidecar-{i}")),
        )?;
        let c = Config::load(&path)?;
        cfg = Some(c.clone());
        proxies.push(Proxy::start(c, Some(path)).await?);
    }
    let cfg = cfg.expect("two sidecars");
    println!(
        "Two new clusters, north and west, and two sidecars with `control:`: they follow failover"
    );
    println!("decisions written to a small topic on every cluster. Both start on north.");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut arbiters = vec![];
    for id in ["a1", "a2", "a3"] {
        let a = Arbiter::new(cfg.clone(), id.into())?;
        arbiters.push(tokio::spawn(a.run(stop_rx.clone())));
    }
    println!("Three arbiters probe both clusters and vote; 2 of 3 that see north down for 2 s write a failover decision.");

    // A producer through the first sidecar, all along.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", proxies[0].bootstrap.to_string())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let acked_ids = Arc::new(Mutex::new(BTreeSet::new()));
    let producing = {
        let (acked, failed, acked_ids) = (acked.clone(), failed.clone(), acked_ids.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                let payload = format!("payment-{i}");
                let send = producer.send(
                    FutureRecord::to(TOPIC).key(&payload).payload(&payload),
                    Duration::from_secs(60),
                );
                tokio::select! {
                    r = send => match r {
                        Ok(_) => {
                            acked_ids.lock().insert(payload.clone());
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => { failed.fetch_add(1, Ordering::Relaxed); }
                    },
                    _ = stop.changed() => return,
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let wait_until = |what: &'static str, pred: Box<dyn Fn() -> bool>| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pred() {
            anyhow::ensure!(Instant::now() < deadline, "not seen within 60 s: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    };
    {
        let acked = acked.clone();
        wait_until(
            "the producer is producing on north",
            Box::new(move || acked.load(Ordering::Relaxed) >= 50),
        )
        .await?;
    }
    let started = Instant::now();
    println!(
        "  [{:>4.1}s] a producer writes payments through sidecar 0: {} acknowledged so far.",
        0.0,
        acked.load(Ordering::Relaxed)
    );
    for b in 1..=BROKERS {
        north.broker_down(b)?;
    }
    println!(
        "  [{:>4.1}s] north goes down (all three brokers). The producer's requests now wait.",
        started.elapsed().as_secs_f64()
    );
    let shared: Vec<_> = proxies.iter().map(|p| p.shared.clone()).collect();
    {
        let shared = shared.clone();
        wait_until(
            "the automatic failover",
            Box::new(move || {
                shared
                    .iter()
                    .all(|s| s.status()["active_cluster"] == "west")
            }),
        )
        .await?;
    }
    let st = shared[0].status();
    let d = &st["control"]["decision"];
    let supporters: Vec<String> = d["evidence"]["supporters"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "  [{:>4.1}s] arbiters {} agreed: decision {} says \"{}\" ({} decision: {}).",
        started.elapsed().as_secs_f64(),
        match &supporters[..] {
            [] => "?".to_string(),
            [one] => one.clone(),
            [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
        },
        d["epoch"],
        d["active"].as_str().unwrap_or(""),
        d["origin"].as_str().unwrap_or(""),
        d["reason"].as_str().unwrap_or("")
    );
    println!("           Both sidecars follow it: they now relay to west.");
    let at_failover = acked.load(Ordering::Relaxed);
    {
        let acked = acked.clone();
        wait_until(
            "the producer goes on through west",
            Box::new(move || acked.load(Ordering::Relaxed) >= at_failover + 50),
        )
        .await?;
    }
    println!(
        "  [{:>4.1}s] the producer, never restarted, goes on through west: {} acknowledged so far.",
        started.elapsed().as_secs_f64(),
        acked.load(Ordering::Relaxed)
    );
    for b in 1..=BROKERS {
        north.broker_up(b)?;
    }
    println!(
        "  [{:>4.1}s] north is back. Failback is an operator's decision by default; one command moves the fleet:",
        started.elapsed().as_secs_f64()
    );
    println!("           $ kafka-sidecar failover --to north --reason \"north restored\"");
    failover(
        &cfg,
        FailoverArgs {
            to: "north".into(),
            reason: "north restored (demo)".into(),
            timeout: Duration::from_secs(30),
            expect: Some(2),
        },
    )
    .await?;
    let at_failback = acked.load(Ordering::Relaxed);
    {
        let acked = acked.clone();
        wait_until(
            "the producer goes on through north",
            Box::new(move || acked.load(Ordering::Relaxed) >= at_failback + 50),
        )
        .await?;
    }
    let _ = stop.send(true);
    let _ = producing.await;
    for a in arbiters {
        let _ = a.await;
    }
    let (ok, bad) = (
        acked.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!(
        "  [{:>4.1}s] the producer stops: {ok} acknowledged, {bad} delivery errors, never restarted.",
        started.elapsed().as_secs_f64()
    );
    for p in proxies {
        p.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("Where every acknowledged payment landed (read back from each cluster directly):");
    let on_north = read_back(&nb, TOPIC, 3)?;
    let on_west = read_back(&wb, TOPIC, 3)?;
    let acked_ids = acked_ids.lock().clone();
    let landing = Landing::new(&acked_ids, &[("north", &on_north), ("west", &on_west)]);
    landing.print();
    if landing.twice > 0 {
        println!(
            "  Written twice: requests north had taken but not answered when it went down were sent again \
             to west (at-least-once, as with any Kafka failover without replication)."
        );
    }
    anyhow::ensure!(bad == 0, "{bad} messages were not delivered");
    anyhow::ensure!(
        landing.lost.is_empty(),
        "acknowledged but on no cluster: {:?}",
        landing.lost
    );
    println!("Part 2 done: the fleet failed over by itself and came back with one command; nothing lost.");
    Ok(())
}
