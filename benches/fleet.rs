//! Fleet failover benchmark (issue 14): how fast a decision reaches the fleet, and what
//! the control plane costs per broker and per sidecar.
//!
//! 1. `processes`: two tansu brokers, 3 `kafka-sidecar run` processes (the built
//!    binary) and `kafka-sidecar failover` run back and forth; prints the convergence
//!    time the command reports (decision written -> every sidecar's report that it
//!    applied it), per round, and the median.
//! 2. `simulation`: N simulated sidecars (default 500) in this process against one real
//!    tansu broker, each with the sidecar's own follower and reporter tasks and
//!    connections (the same code as `kafka-sidecar run`). Prints decision-to-sidecar
//!    latency (p50/p99/max over the fleet) and the control traffic per sidecar and at
//!    the broker, measured over a quiet window, then extrapolates to 5,000 sidecars.
//!
//! Run: `cargo bench --bench fleet` (`-- --sims 1000 --rounds 5 --poll-wait-ms 500
//! --report-interval-ms 5000 --skip-processes --broker HOST:PORT`).
//! Needs the test tools (`scripts/install-test-deps.sh`).

#[path = "../tests/common/tools.rs"]
mod tools;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_sidecar::cluster::Cluster;
use kafka_sidecar::config::ClusterConfig;
use kafka_sidecar::control::client::{KafkaControlLog, Topics, Traffic};
use kafka_sidecar::control::follower::{follow, report, ControlState};
use kafka_sidecar::control::log::{ControlLog, Part};
use kafka_sidecar::control::{Decision, Origin, Report};
use tokio::sync::{mpsc, watch};
use tools::{free_port, run_with_timeout, Tansu};

const BIN: &str = env!("CARGO_BIN_EXE_kafka-sidecar");

struct Args {
    sims: usize,
    rounds: usize,
    poll_wait: Duration,
    report_interval: Duration,
    skip_processes: bool,
    /// Simulate against this broker instead of a fresh tansu (e.g. an Apache Kafka
    /// started with scripts/kafka-cluster.sh).
    broker: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        sims: 500,
        rounds: 5,
        poll_wait: Duration::from_millis(500),
        report_interval: Duration::from_secs(5),
        skip_processes: false,
        broker: None,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--sims" => a.sims = next.parse().expect("--sims N"),
            "--rounds" => a.rounds = next.parse().expect("--rounds N"),
            "--broker" => a.broker = Some(next),
            "--poll-wait-ms" => a.poll_wait = Duration::from_millis(next.parse().expect("ms")),
            "--report-interval-ms" => {
                a.report_interval = Duration::from_millis(next.parse().expect("ms"))
            }
            "--skip-processes" => {
                a.skip_processes = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn pct(v: &[f64], p: f64) -> f64 {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

// ------------------------------------------------------------------------------------------------ processes

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn processes(a: &Args) {
    let north = Tansu::builder().cluster_id("dc-north").start().unwrap();
    let west = Tansu::builder().cluster_id("dc-west").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for poll_wait in [Duration::from_millis(100), a.poll_wait] {
        let mut kids = vec![];
        let mut operator = None;
        for i in 0..3 {
            let base = 21000 + i * 200 + (poll_wait.as_millis() as u16 % 7) * 1000;
            let y = format!(
                "listen: {{address: 127.0.0.1, bootstrap_port: {}, broker_port_base: {base}, max_node_id: 120}}\nactive_cluster: north\nclusters:\n  north: {{bootstrap_servers: [\"{}\"]}}\n  west: {{bootstrap_servers: [\"{}\"]}}\nlimits: {{connect_timeout: 3s}}\ncontrol: {{poll_wait: {}ms, report_interval: 1s, id: bench-{i}}}\n",
                base + 150,
                north.bootstrap(),
                west.bootstrap(),
                poll_wait.as_millis()
            );
            let path = dir.path().join(format!("s{i}.yaml"));
            std::fs::write(&path, y).unwrap();
            let child = std::process::Command::new(BIN)
                .args(["run", "--config", path.to_str().unwrap()])
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            kids.push(Kill(child));
            operator = Some(path);
        }
        let operator = operator.unwrap();
        let mut times = vec![];
        let mut to = "west";
        // The first round also waits for the sidecars' first reports.
        let mut round = 0;
        while times.len() < a.rounds && round < a.rounds * 3 {
            round += 1;
            let mut cmd = std::process::Command::new(BIN);
            cmd.args([
                "failover",
                "--to",
                to,
                "--reason",
                "bench",
                "--expect",
                "3",
                "--timeout",
                "20s",
                "--config",
                operator.to_str().unwrap(),
            ])
            .env("RUST_LOG", "error");
            let out = run_with_timeout(cmd, None, Duration::from_secs(40)).unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.lines().find(|l| l.contains("sidecars on"));
            match (out.status.success(), line) {
                (true, Some(l)) if round > 1 => {
                    let secs: f64 = l
                        .split(" after ")
                        .nth(1)
                        .and_then(|r| r.split(' ').next())
                        .and_then(|s| s.parse().ok())
                        .unwrap();
                    println!("processes poll_wait={:?}: {l}", poll_wait);
                    times.push(secs);
                }
                (true, _) => {}
                (false, _) => println!(
                    "round {round} did not converge: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
            to = if to == "west" { "north" } else { "west" };
        }
        if !times.is_empty() {
            let mut t = times.clone();
            println!(
                "RESULT processes: 3 sidecar processes, poll_wait {:?}: decision -> whole fleet reported, median {:.0} ms, max {:.0} ms over {} rounds",
                poll_wait,
                median(&mut t) * 1000.0,
                t.last().unwrap() * 1000.0,
                t.len()
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------ simulation

fn simulation(a: &Args) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tansu = match &a.broker {
            Some(_) => None,
            None => Some(Tansu::builder().cluster_id("dc-sim").start().unwrap()),
        };
        let bootstrap = a.broker.clone().unwrap_or_else(|| tansu.as_ref().unwrap().bootstrap());
        println!("simulation against {}", if a.broker.is_some() { bootstrap.as_str() } else { "a fresh tansu broker" });
        let cluster = Cluster::new(
            "north",
            ClusterConfig { bootstrap_servers: vec![bootstrap.clone()], tls: None, sasl: None, replication_alias: None },
            64 << 20,
        )
        .unwrap();
        let topics = Topics {
            control: "kafka-sidecar.control.internal".into(),
            fleet: "kafka-sidecar.fleet.internal".into(),
            fleet_retention: Duration::from_secs(600),
        };
        let timeout = Duration::from_secs(20);
        // Create the topics once, up front.
        let mut op = KafkaControlLog::new(cluster.clone(), topics.clone(), true, timeout);
        // A fresh Kafka topic has no leader for a moment: retry.
        let mut tries = 0;
        while let Err(e) = op.bounds(Part::Decisions).await {
            tries += 1;
            assert!(tries < 40, "control topic not usable: {e:#}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        op.bounds(Part::Reports).await.ok();

        let traffic = Arc::new(Traffic::default());
        let (stop, stop_rx) = watch::channel(false);
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(usize, u64, Instant)>();
        let started = Instant::now();
        for i in 0..a.sims {
            let state = Arc::new(ControlState::new(format!("sim-{i}")));
            let reader = KafkaControlLog::new(cluster.clone(), topics.clone(), false, timeout).with_traffic(traffic.clone());
            let writer = KafkaControlLog::new(cluster.clone(), topics.clone(), false, timeout).with_traffic(traffic.clone());
            let tx = seen_tx.clone();
            let st = state.clone();
            tokio::spawn(follow(reader, "north".into(), state.clone(), a.poll_wait, move |d: Decision| {
                st.note_applied(d.epoch);
                let _ = tx.send((i, d.epoch, Instant::now()));
            }, stop_rx.clone()));
            let st = state.clone();
            let interval = a.report_interval;
            tokio::spawn(report(writer, "north".into(), state, interval, move || Report {
                id: st.id.clone(),
                host: "sim".into(),
                pid: i as u32,
                cluster: "north".into(),
                epoch: st.applied_epoch(),
                at_ms: kafka_sidecar::control::now_ms(),
                interval_ms: interval.as_millis() as u64,
                reachable: vec!["north".into()],
            }, stop_rx.clone()));
            // Spread the connection storm a little.
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        println!("simulation: {} sidecars started in {:.1} s (2 connections each)", a.sims, started.elapsed().as_secs_f64());
        // Warm-up: every simulated sidecar has a connection and is polling.
        tokio::time::sleep(a.report_interval + a.poll_wait * 2).await;

        // Quiet window: the steady cost of following and reporting.
        let window = a.report_interval * 2;
        let (s0, r0) = (traffic.sent.load(Ordering::Relaxed), traffic.received.load(Ordering::Relaxed));
        tokio::time::sleep(window).await;
        let (s1, r1) = (traffic.sent.load(Ordering::Relaxed), traffic.received.load(Ordering::Relaxed));
        let secs = window.as_secs_f64();
        let to_broker = (s1 - s0) as f64 / secs;
        let from_broker = (r1 - r0) as f64 / secs;
        let fetches_per_s = a.sims as f64 / a.poll_wait.as_secs_f64();
        let reports_per_s = a.sims as f64 / a.report_interval.as_secs_f64();
        println!(
            "RESULT traffic: {} sidecars, poll_wait {:?}, report_interval {:?}: broker receives {:.1} KB/s and sends {:.1} KB/s ({:.0} fetches/s + {:.0} reports/s expected); per sidecar {:.0} B/s up, {:.0} B/s down",
            a.sims, a.poll_wait, a.report_interval, to_broker / 1024.0, from_broker / 1024.0, fetches_per_s, reports_per_s,
            to_broker / a.sims as f64, from_broker / a.sims as f64
        );

        // Decisions: written by an operator's log, seen by every simulated sidecar.
        // Above whatever the broker already holds (an external one may have history).
        let base = kafka_sidecar::control::ops::decisions(&mut op).await.unwrap().iter().map(|d| d.epoch).max().unwrap_or(0);
        let mut all = vec![];
        for epoch in base + 1..=base + a.rounds as u64 {
            while seen_rx.try_recv().is_ok() {}
            let d = Decision {
                epoch,
                active: if epoch % 2 == 1 { "west".into() } else { "north".into() },
                previous: None,
                reason: "bench".into(),
                origin: Origin::Operator,
                writer: "bench".into(),
                host: "bench".into(),
                pid: 0,
                at_ms: kafka_sidecar::control::now_ms(),
                evidence: None,
            };
            let t0 = Instant::now();
            op.append(Part::Decisions, &[Bytes::from(d.to_json())]).await.unwrap();
            let acked = t0.elapsed();
            let mut lat = vec![];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while lat.len() < a.sims {
                match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
                    Ok(Some((_, e, at))) if e == epoch => lat.push(at.duration_since(t0).as_secs_f64() * 1000.0),
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "round {epoch}: produce acked after {:.1} ms; {}/{} sidecars saw the decision: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                acked.as_secs_f64() * 1000.0, lat.len(), a.sims,
                pct(&lat, 0.5), pct(&lat, 0.99), lat.last().copied().unwrap_or(f64::NAN)
            );
            all.extend(lat);
            tokio::time::sleep(a.poll_wait).await;
        }
        all.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "RESULT simulation: {} sidecars x {} decisions on one broker: decision write -> sidecar applied p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            a.sims, a.rounds, pct(&all, 0.5), pct(&all, 0.99), all.last().copied().unwrap_or(f64::NAN)
        );
        let k = 5000.0 / a.sims as f64;
        println!(
            "EXTRAPOLATION 5,000 sidecars per cluster pair (each follows and reports on both clusters): per cluster {:.0} fetches/s + {:.0} produces/s, {:.0} KB/s in + {:.0} KB/s out, {} connections; per sidecar {:.0} B/s per cluster (unchanged with fleet size)",
            5000.0 / a.poll_wait.as_secs_f64(), 5000.0 / a.report_interval.as_secs_f64(),
            to_broker * k / 1024.0, from_broker * k / 1024.0, 10_000,
            (to_broker + from_broker) / a.sims as f64
        );
        let _ = stop.send(true);
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(tansu);
    });
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it too: stay quick then.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let a = args();
    if !std::env::args().any(|x| x == "--bench") {
        println!("fleet bench: run with `cargo bench --bench fleet`");
        return;
    }
    let _ = free_port;
    if !a.skip_processes {
        processes(&a);
    }
    simulation(&a);
}
