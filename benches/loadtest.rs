//! Load generator: the same workloads directly against an upstream and through
//! kafka-sidecar (and, as the floor, through HAProxy in TCP mode), alternating,
//! repeated, with medians, an HTML report and a JSON summary.
//!
//! ```text
//! cargo build --release --bin kafka-sidecar
//! cargo bench --bench loadtest -- [--rounds 3] [--bootstrap host:port] [--quick]
//! ```
//!
//! The proxy runs as a child process (`target/release/kafka-sidecar run --config ...`),
//! so its CPU seconds (utime + stime from `/proc/<pid>/stat`) and peak RSS (`VmHWM`)
//! are its own, not the load generator's. The default upstream is an embedded
//! librdkafka mock cluster (3 brokers, a fresh one per run); `--bootstrap` points every
//! run at a real cluster instead.
//!
//! Modes:
//! - `direct`: clients to the upstream;
//! - `proxied`: clients to kafka-sidecar (no `admin:` section, so no metrics recorder);
//! - `proxied_metrics`: the same with an `admin:` section (metrics recorder on);
//! - `haproxy_chain`: clients to HAProxy (TCP mode, no Kafka parsing) in front of
//!   kafka-sidecar. HAProxy relays exactly the bytes kafka-sidecar relays, so its CPU
//!   seconds per GB in that run is the floor a proxy process can reach on the same
//!   traffic. (HAProxy cannot sit alone in front of the upstream: the brokers advertise
//!   their own addresses and the clients would bypass it. kafka-sidecar advertises
//!   127.0.0.2, where HAProxy listens, and itself listens on 127.0.0.1.)
//!
//! Every loop is bounded in messages and in time.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::DeliveryResult;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::json;

#[derive(Parser, Debug, Clone)]
#[command(about = "kafka-sidecar load test: direct vs proxied, alternating, medians")]
struct Args {
    /// Rounds; each round runs every workload in every mode, alternating the order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// A real cluster instead of the embedded mock (one fresh mock per run otherwise).
    #[arg(long)]
    bootstrap: Option<String>,
    /// Brokers of the embedded mock cluster.
    #[arg(long, default_value_t = 3)]
    mock_brokers: i32,
    /// Partitions of each test topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// kafka-sidecar binary (default: target/release/kafka-sidecar).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// HAProxy binary (default: $HAPROXY_BIN, .tools/env, /usr/sbin/haproxy); "none" skips it.
    #[arg(long)]
    haproxy_bin: Option<String>,
    /// Seconds of producing in the small/large throughput workloads.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Upper bound on messages in the small-message workload.
    #[arg(long, default_value_t = 3_000_000)]
    small_max: u64,
    /// Upper bound on messages in the large-message workload.
    #[arg(long, default_value_t = 30_000)]
    large_max: u64,
    /// Idle connections in the many-connections workload.
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// Users (producers) in the fixed-rate workload.
    #[arg(long, default_value_t = 8)]
    users: usize,
    /// Requests per user in the fixed-rate workload.
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Target total rate of the fixed-rate workload, messages per second.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Output directory for report.html and summary.json.
    #[arg(long, default_value = "target/loadtest")]
    out: PathBuf,
    /// One round, shorter runs (for a smoke test).
    #[arg(long)]
    quick: bool,
    /// Workloads to run (comma separated): small,large,connections,fixed_rate.
    #[arg(long, default_value = "small,large,connections,fixed_rate")]
    workloads: String,
    /// Pin the relays (kafka-sidecar, HAProxy) to this CPU and the load generator (clients
    /// and mock cluster) to the others, with `taskset`: measures what the proxy adds when
    /// it has a core of its own instead of competing with client and broker for one.
    #[arg(long)]
    pin_proxy_cpu: Option<usize>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// `Command` for a relay binary: under `taskset -c <cpu>` when pinning.
fn relay_command(bin: impl AsRef<std::ffi::OsStr>, pin: Option<usize>) -> Command {
    match pin {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// Pins this process (and every thread it starts from now on) to every CPU but `cpu`.
fn pin_self_away_from(cpu: usize) -> anyhow::Result<()> {
    let n = std::thread::available_parallelism()?.get();
    let others: Vec<String> = (0..n)
        .filter(|&c| c != cpu)
        .map(|c| c.to_string())
        .collect();
    anyhow::ensure!(!others.is_empty(), "--pin-proxy-cpu needs at least 2 CPUs");
    let status = Command::new("taskset")
        .arg("-p")
        .arg("-c")
        .arg(others.join(","))
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?;
    anyhow::ensure!(status.success(), "taskset failed: {status}");
    Ok(())
}

const SMALL: usize = 100;
const LARGE: usize = 100 * 1024;
const FIXED_SIZE: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Direct,
    Proxied,
    ProxiedMetrics,
    HaproxyChain,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Proxied => "proxied",
            Mode::ProxiedMetrics => "proxied_metrics",
            Mode::HaproxyChain => "haproxy_chain",
        }
    }
    fn color(self) -> &'static str {
        match self {
            Mode::Direct => "#1f77b4",
            Mode::Proxied => "#d62728",
            Mode::ProxiedMetrics => "#ff7f0e",
            Mode::HaproxyChain => "#2ca02c",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Workload {
    Small,
    Large,
    Connections,
    FixedRate,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Small => "small",
            Workload::Large => "large",
            Workload::Connections => "connections",
            Workload::FixedRate => "fixed_rate",
        }
    }
    fn parse(s: &str) -> anyhow::Result<Workload> {
        Ok(match s.trim() {
            "small" => Workload::Small,
            "large" => Workload::Large,
            "connections" => Workload::Connections,
            "fixed_rate" => Workload::FixedRate,
            other => bail!("unknown workload {other}"),
        })
    }
}

#[derive(Debug, Clone, Default, Serialize)]
struct ProcStats {
    cpu_seconds: f64,
    cpu_seconds_per_gb: f64,
    peak_rss_mib: f64,
    rss_mib: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Latency {
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    count: u64,
    /// (percentile, microseconds) for the chart.
    curve: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
struct RunResult {
    workload: Workload,
    mode: Mode,
    round: usize,
    produced: u64,
    produce_errors: u64,
    produce_seconds: f64,
    produce_msgs_per_s: f64,
    produce_mb_per_s: f64,
    latency: Latency,
    consumed: u64,
    consume_seconds: f64,
    consume_msgs_per_s: f64,
    consume_mb_per_s: f64,
    /// Payload bytes produced plus consumed (the denominator of CPU seconds per GB).
    payload_bytes: u64,
    connections: usize,
    proxy: Option<ProcStats>,
    haproxy: Option<ProcStats>,
    /// (seconds since start, produce MB/s in the 100 ms before).
    series: Vec<(f64, f64)>,
}

// ---------------------------------------------------------------- processes

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32, tck: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / tck
}

/// (VmHWM, VmRSS) in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

struct Measured {
    child: Child,
    cpu_start: f64,
}

impl Measured {
    fn mark(&mut self, tck: f64) {
        self.cpu_start = cpu_seconds(self.child.id(), tck);
    }
    fn stats(&self, tck: f64, bytes: u64) -> ProcStats {
        let cpu = (cpu_seconds(self.child.id(), tck) - self.cpu_start).max(0.0);
        let (hwm, rss) = rss_mib(self.child.id());
        ProcStats {
            cpu_seconds: cpu,
            cpu_seconds_per_gb: if bytes > 0 {
                cpu / (bytes as f64 / 1e9)
            } else {
                0.0
            },
            peak_rss_mib: hwm,
            rss_mib: rss,
        }
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(addr: SocketAddr, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited during start-up: {status}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not listen on {addr} within 15 s")
}

struct Ports {
    bootstrap: u16,
    broker_base: u16,
    admin: u16,
}

impl Ports {
    fn pick() -> Ports {
        // Below the ephemeral range (32768), spread by pid so parallel runs don't clash.
        let base = 20_000 + (std::process::id() % 500) as u16 * 24;
        Ports {
            bootstrap: base,
            broker_base: base + 2,
            admin: base + 1,
        }
    }
}

fn start_proxy(
    bin: &Path,
    dir: &Path,
    ports: &Ports,
    upstream: &str,
    metrics: bool,
    advertised: &str,
    pin: Option<usize>,
) -> anyhow::Result<Measured> {
    let admin = if metrics {
        format!("admin: {{address: \"127.0.0.1:{}\"}}\n", ports.admin)
    } else {
        String::new()
    };
    let cfg = format!(
        "listen: {{address: 127.0.0.1, advertised_host: \"{advertised}\", bootstrap_port: {}, broker_port_base: {}, max_node_id: 20}}\n\
         {admin}active_cluster: up\n\
         clusters:\n  up: {{bootstrap_servers: [\"{upstream}\"]}}\n\
         switch: {{drain_timeout: 100ms}}\n",
        ports.bootstrap, ports.broker_base
    );
    let path = dir.join("proxy.yaml");
    std::fs::write(&path, cfg)?;
    let mut child = relay_command(bin, pin)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    wait_port(
        SocketAddr::from(([127, 0, 0, 1], ports.bootstrap)),
        &mut child,
        "kafka-sidecar",
    )?;
    Ok(Measured {
        child,
        cpu_start: 0.0,
    })
}

fn start_haproxy(
    bin: &str,
    dir: &Path,
    ports: &Ports,
    node_ids: &[i32],
    pin: Option<usize>,
) -> anyhow::Result<Measured> {
    let mut cfg = String::from(
        "global\n  maxconn 8000\n  nbthread 2\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n",
    );
    let mut listen = |name: String, port: u16| {
        cfg.push_str(&format!(
            "listen {name}\n  bind 127.0.0.2:{port}\n  server s 127.0.0.1:{port}\n"
        ));
    };
    listen("bootstrap".into(), ports.bootstrap);
    for id in node_ids {
        listen(format!("node{id}"), ports.broker_base + *id as u16);
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let mut child = relay_command(bin, pin)
        .arg("-db")
        .arg("-q")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    wait_port(
        SocketAddr::from(([127, 0, 0, 2], ports.bootstrap)),
        &mut child,
        "haproxy",
    )?;
    Ok(Measured {
        child,
        cpu_start: 0.0,
    })
}

// ---------------------------------------------------------------- clients

struct LatencyContext {
    hist: Arc<Mutex<Histogram<u64>>>,
    acked: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
}

impl ClientContext for LatencyContext {}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Instant>) {
        match result {
            Ok(_) => {
                let us = sent.elapsed().as_micros().max(1) as u64;
                let _ = self.hist.lock().expect("histogram").record(us);
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

fn producer_config(bootstrap: &str, linger_ms: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", linger_ms)
        .set("queue.buffering.max.messages", "200000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", "30000")
        .set("log_level", "3");
    c
}

struct ProduceOutcome {
    produced: u64,
    errors: u64,
    seconds: f64,
    latency: Latency,
    series: Vec<(f64, f64)>,
}

fn latency_of(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let curve = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99]
        .iter()
        .map(|&p| (p, h.value_at_quantile(p / 100.0) as f64))
        .collect();
    Latency {
        p50_us: h.value_at_quantile(0.5) as f64,
        p90_us: h.value_at_quantile(0.9) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
        p999_us: h.value_at_quantile(0.999) as f64,
        max_us: h.max() as f64,
        count: h.len(),
        curve,
    }
}

/// Produces `size`-byte messages as fast as the client allows, for at most `seconds`
/// and `max` messages, then waits (bounded) for every acknowledgement.
fn produce_max(
    bootstrap: &str,
    topic: &str,
    size: usize,
    max: u64,
    seconds: f64,
) -> anyhow::Result<ProduceOutcome> {
    let hist = Arc::new(Mutex::new(new_hist()));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ctx = LatencyContext {
        hist: hist.clone(),
        acked: acked.clone(),
        errors: errors.clone(),
    };
    let producer: ThreadedProducer<LatencyContext> =
        producer_config(bootstrap, "5").create_with_context(ctx)?;
    // Connect and learn the metadata before the clock starts.
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let payload = vec![b'x'; size];
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let mut series = vec![];
    let mut sent = 0u64;
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut out = vec![];
            let mut last = 0u64;
            let mut t = Instant::now();
            let hard_stop = start + Duration::from_secs_f64(seconds + 35.0);
            while !done.load(Ordering::Relaxed) && Instant::now() < hard_stop {
                std::thread::sleep(Duration::from_millis(100));
                let now = acked.load(Ordering::Relaxed);
                let dt = t.elapsed().as_secs_f64();
                t = Instant::now();
                out.push((
                    start.elapsed().as_secs_f64(),
                    (now - last) as f64 * size as f64 / dt / 1e6,
                ));
                last = now;
            }
            out
        });
        let deadline = start + Duration::from_secs_f64(seconds);
        while sent < max && Instant::now() < deadline {
            let rec =
                BaseRecord::with_opaque_to(topic, Box::new(Instant::now())).payload(&payload[..]);
            match producer.send::<(), [u8]>(rec) {
                Ok(()) => sent += 1,
                Err((e, _)) => {
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        std::thread::sleep(Duration::from_micros(200));
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
        let _ = producer.flush(Duration::from_secs(30));
        done.store(true, Ordering::Relaxed);
        series = sampler.join().expect("sampler");
    });
    let seconds = start.elapsed().as_secs_f64();
    let latency = latency_of(&hist.lock().expect("histogram"));
    Ok(ProduceOutcome {
        produced: acked.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed) + (sent - acked.load(Ordering::Relaxed).min(sent)),
        seconds,
        latency,
        series,
    })
}

/// `users` producers, each sending `requests` messages on a fixed schedule so that
/// together they offer `rate` messages per second. Latency is measured from the
/// scheduled send time (no coordinated omission).
fn produce_fixed_rate(
    bootstrap: &str,
    topic: &str,
    users: usize,
    requests: usize,
    rate: f64,
) -> anyhow::Result<ProduceOutcome> {
    let hist = Arc::new(Mutex::new(new_hist()));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut producers = vec![];
    for _ in 0..users {
        let ctx = LatencyContext {
            hist: hist.clone(),
            acked: acked.clone(),
            errors: errors.clone(),
        };
        let p: ThreadedProducer<LatencyContext> =
            producer_config(bootstrap, "0").create_with_context(ctx)?;
        p.client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))?;
        producers.push(p);
    }
    let interval = Duration::from_secs_f64(users as f64 / rate);
    let payload = vec![b'r'; FIXED_SIZE];
    let start = Instant::now() + Duration::from_millis(50);
    let series = Mutex::new(vec![]);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut last = 0u64;
            let mut t = Instant::now();
            let hard_stop = Instant::now() + interval * requests as u32 + Duration::from_secs(35);
            while !done.load(Ordering::Relaxed) && Instant::now() < hard_stop {
                std::thread::sleep(Duration::from_millis(100));
                let now = acked.load(Ordering::Relaxed);
                let dt = t.elapsed().as_secs_f64();
                t = Instant::now();
                series.lock().expect("series").push((
                    start.elapsed().as_secs_f64(),
                    (now - last) as f64 * FIXED_SIZE as f64 / dt / 1e6,
                ));
                last = now;
            }
        });
        let handles: Vec<_> = producers
            .iter()
            .enumerate()
            .map(|(u, p)| {
                let payload = &payload;
                let errors = &errors;
                s.spawn(move || {
                    // Users are staggered evenly within one interval.
                    let offset = interval.mul_f64(u as f64 / users as f64);
                    for i in 0..requests {
                        let due = start + offset + interval * i as u32;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        let rec =
                            BaseRecord::with_opaque_to(topic, Box::new(due)).payload(&payload[..]);
                        if p.send::<(), [u8]>(rec).is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let _ = p.flush(Duration::from_secs(30));
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        done.store(true, Ordering::Relaxed);
        let _ = sampler.join();
    });
    let seconds = start.elapsed().as_secs_f64();
    let latency = latency_of(&hist.lock().expect("histogram"));
    Ok(ProduceOutcome {
        produced: acked.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds,
        latency,
        series: series.into_inner().expect("series"),
    })
}

/// Reads every message the upstream still holds, from the low watermark of every
/// partition (bounded in time). The mock cluster keeps only the newest ~5 MB of each
/// partition, so this reads at most that much of what was produced.
fn consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    produced: u64,
) -> anyhow::Result<(u64, u64, f64)> {
    if produced == 0 {
        return Ok((0, 0, 0.0));
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "loadtest")
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "1")
        .set("log_level", "3")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    let mut expected = 0u64;
    for p in 0..partitions {
        let (lo, hi) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        expected += (hi - lo).max(0) as u64;
    }
    consumer.assign(&tpl)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(30);
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut last_msg = Instant::now();
    while n < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                n += 1;
                bytes += m.payload_len() as u64;
                last_msg = Instant::now();
            }
            Some(Err(_)) => {}
            None => {
                if last_msg.elapsed() > Duration::from_secs(5) {
                    break;
                }
            }
        }
    }
    Ok((n, bytes, start.elapsed().as_secs_f64()))
}

/// Opens up to `n` client connections (8 threads) that each complete one ApiVersions
/// round trip and then stay idle. Bounded: 20 s in all; returns what it got.
fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    // ApiVersions v0, header v1: api key 18, version 0, correlation id, null client id.
    const REQ: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    let deadline = Instant::now() + Duration::from_secs(20);
    let threads = 8;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut conns = vec![];
                    for _ in (t..n).step_by(threads) {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        let Ok(mut c) =
                            TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(5)))
                        else {
                            continue;
                        };
                        let ok = c
                            .set_read_timeout(Some(left.max(Duration::from_millis(100))))
                            .is_ok()
                            && c.write_all(&REQ).is_ok()
                            && {
                                let mut len = [0u8; 4];
                                c.read_exact(&mut len).is_ok() && {
                                    let mut body = vec![
                                        0u8;
                                        i32::from_be_bytes(len).clamp(0, 1 << 20)
                                            as usize
                                    ];
                                    c.read_exact(&mut body).is_ok()
                                }
                            };
                        if ok {
                            conns.push(c);
                        }
                    }
                    conns
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

// ---------------------------------------------------------------- runs

struct Env {
    args: Args,
    proxy_bin: PathBuf,
    haproxy_bin: Option<String>,
    tck: f64,
    dir: PathBuf,
    ports: Ports,
}

fn first(list: &str) -> &str {
    list.split(',').next().unwrap_or(list)
}

fn run_one(env: &Env, w: Workload, mode: Mode, round: usize) -> anyhow::Result<RunResult> {
    let a = &env.args;
    // A fresh mock cluster per run: no run reads another's data or memory.
    let mut mock = None;
    let (upstream, node_ids): (String, Vec<i32>) = match &a.bootstrap {
        Some(b) => {
            let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", b).create()?;
            let md = c.fetch_metadata(None, Duration::from_secs(10))?;
            (b.clone(), md.brokers().iter().map(|b| b.id()).collect())
        }
        None => {
            let m = MockCluster::new(a.mock_brokers)?;
            let servers = m.bootstrap_servers();
            mock = Some(m);
            (servers, (1..=a.mock_brokers).collect())
        }
    };
    let topic = format!(
        "lt-{}-{}-{round}-{}",
        w.name(),
        mode.name(),
        std::process::id()
    );
    match &mock {
        Some(m) => m.create_topic(&topic, a.partitions, 1)?,
        None => create_topic(&upstream, &topic, a.partitions)?,
    }

    let mut proxy = match mode {
        Mode::Direct => None,
        Mode::Proxied | Mode::ProxiedMetrics => Some(start_proxy(
            &env.proxy_bin,
            &env.dir,
            &env.ports,
            first(&upstream),
            mode == Mode::ProxiedMetrics,
            "127.0.0.1",
            a.pin_proxy_cpu,
        )?),
        Mode::HaproxyChain => Some(start_proxy(
            &env.proxy_bin,
            &env.dir,
            &env.ports,
            first(&upstream),
            false,
            "127.0.0.2",
            a.pin_proxy_cpu,
        )?),
    };
    let mut haproxy = match (mode, &env.haproxy_bin) {
        (Mode::HaproxyChain, Some(bin)) => Some(start_haproxy(
            bin,
            &env.dir,
            &env.ports,
            &node_ids,
            a.pin_proxy_cpu,
        )?),
        _ => None,
    };
    let client_bootstrap = match mode {
        Mode::Direct => upstream.clone(),
        Mode::Proxied | Mode::ProxiedMetrics => format!("127.0.0.1:{}", env.ports.bootstrap),
        Mode::HaproxyChain => format!("127.0.0.2:{}", env.ports.bootstrap),
    };
    let client_addr: SocketAddr = first(&client_bootstrap)
        .replace("localhost", "127.0.0.1")
        .parse()
        .with_context(|| format!("bootstrap address {client_bootstrap}"))?;
    if let Some(p) = proxy.as_mut() {
        p.mark(env.tck);
    }
    if let Some(h) = haproxy.as_mut() {
        h.mark(env.tck);
    }

    let scale = if a.quick { 0.5 } else { 1.0 };
    let mut idle = vec![];
    let (size, outcome) = match w {
        Workload::Small => (
            SMALL,
            produce_max(
                &client_bootstrap,
                &topic,
                SMALL,
                a.small_max,
                a.seconds * scale,
            )?,
        ),
        Workload::Large => (
            LARGE,
            produce_max(
                &client_bootstrap,
                &topic,
                LARGE,
                a.large_max,
                a.seconds * scale,
            )?,
        ),
        Workload::Connections => {
            idle = open_idle(client_addr, a.idle_connections);
            (
                SMALL,
                produce_max(&client_bootstrap, &topic, SMALL, a.small_max, scale)?,
            )
        }
        Workload::FixedRate => (
            FIXED_SIZE,
            produce_fixed_rate(
                &client_bootstrap,
                &topic,
                a.users,
                if a.quick { a.requests / 2 } else { a.requests },
                a.rate,
            )?,
        ),
    };
    let (consumed, consumed_bytes, consume_seconds) = match w {
        Workload::Small | Workload::Large => {
            consume(&client_bootstrap, &topic, a.partitions, outcome.produced)?
        }
        _ => (0, 0, 0.0),
    };
    let produced_bytes = outcome.produced * size as u64;
    let payload_bytes = produced_bytes + consumed_bytes;
    let proxy_stats = proxy.as_ref().map(|p| p.stats(env.tck, payload_bytes));
    let haproxy_stats = haproxy.as_ref().map(|h| h.stats(env.tck, payload_bytes));
    let connections = idle.len();
    drop(idle);
    drop(haproxy);
    drop(proxy);
    let per = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    Ok(RunResult {
        workload: w,
        mode,
        round,
        produced: outcome.produced,
        produce_errors: outcome.errors,
        produce_seconds: outcome.seconds,
        produce_msgs_per_s: per(outcome.produced, outcome.seconds),
        produce_mb_per_s: per(produced_bytes, outcome.seconds) / 1e6,
        latency: outcome.latency,
        consumed,
        consume_seconds,
        consume_msgs_per_s: per(consumed, consume_seconds),
        consume_mb_per_s: per(consumed_bytes, consume_seconds) / 1e6,
        payload_bytes,
        connections,
        proxy: proxy_stats,
        haproxy: haproxy_stats,
        series: outcome.series,
    })
}

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let res = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(20),
            admin.create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            ),
        )
        .await
    })??;
    for r in res {
        if let Err((t, e)) = r {
            bail!("creating topic {t}: {e}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- summary

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn med(runs: &[&RunResult], f: impl Fn(&RunResult) -> Option<f64>) -> Option<f64> {
    median(runs.iter().filter_map(|r| f(r)).collect())
}

#[derive(Serialize)]
struct Target {
    name: String,
    target: String,
    measured: Option<f64>,
    unit: String,
    pass: Option<bool>,
    by: String,
}

fn modes_for(w: Workload, haproxy: bool) -> Vec<Mode> {
    let mut m = vec![Mode::Direct, Mode::Proxied];
    if w == Workload::Small {
        m.push(Mode::ProxiedMetrics);
    }
    if haproxy && matches!(w, Workload::Small | Workload::Large) {
        m.push(Mode::HaproxyChain);
    }
    m
}

fn summarize(results: &[RunResult]) -> (serde_json::Value, Vec<Target>) {
    let mut groups: BTreeMap<(Workload, Mode), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        groups.entry((r.workload, r.mode)).or_default().push(r);
    }
    let mut medians = serde_json::Map::new();
    let mut m: BTreeMap<(Workload, Mode, &str), f64> = BTreeMap::new();
    for ((w, mode), runs) in &groups {
        let fields: Vec<(&str, Option<f64>)> = vec![
            (
                "produce_msgs_per_s",
                med(runs, |r| Some(r.produce_msgs_per_s)),
            ),
            ("produce_mb_per_s", med(runs, |r| Some(r.produce_mb_per_s))),
            (
                "consume_msgs_per_s",
                med(runs, |r| (r.consumed > 0).then_some(r.consume_msgs_per_s)),
            ),
            (
                "consume_mb_per_s",
                med(runs, |r| (r.consumed > 0).then_some(r.consume_mb_per_s)),
            ),
            ("p50_us", med(runs, |r| Some(r.latency.p50_us))),
            ("p99_us", med(runs, |r| Some(r.latency.p99_us))),
            ("p999_us", med(runs, |r| Some(r.latency.p999_us))),
            ("max_us", med(runs, |r| Some(r.latency.max_us))),
            (
                "proxy_cpu_seconds",
                med(runs, |r| r.proxy.as_ref().map(|p| p.cpu_seconds)),
            ),
            (
                "proxy_cpu_seconds_per_gb",
                med(runs, |r| r.proxy.as_ref().map(|p| p.cpu_seconds_per_gb)),
            ),
            (
                "proxy_peak_rss_mib",
                med(runs, |r| r.proxy.as_ref().map(|p| p.peak_rss_mib)),
            ),
            (
                "haproxy_cpu_seconds",
                med(runs, |r| r.haproxy.as_ref().map(|p| p.cpu_seconds)),
            ),
            (
                "haproxy_cpu_seconds_per_gb",
                med(runs, |r| r.haproxy.as_ref().map(|p| p.cpu_seconds_per_gb)),
            ),
            (
                "haproxy_peak_rss_mib",
                med(runs, |r| r.haproxy.as_ref().map(|p| p.peak_rss_mib)),
            ),
            (
                "produce_errors",
                med(runs, |r| Some(r.produce_errors as f64)),
            ),
        ];
        let mut obj = serde_json::Map::new();
        obj.insert("runs".into(), json!(runs.len()));
        for (k, v) in fields {
            if let Some(v) = v {
                m.insert((*w, *mode, k), v);
                obj.insert(k.into(), json!(v));
            }
        }
        medians.insert(format!("{}/{}", w.name(), mode.name()), obj.into());
    }
    let get = |w, mode, k| m.get(&(w, mode, k)).copied();
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let mut ratios = serde_json::Map::new();
    for w in [
        Workload::Small,
        Workload::Large,
        Workload::Connections,
        Workload::FixedRate,
    ] {
        for k in [
            "produce_mb_per_s",
            "consume_mb_per_s",
            "p50_us",
            "p99_us",
            "p999_us",
        ] {
            if let Some(r) = ratio(get(w, Mode::Proxied, k), get(w, Mode::Direct, k)) {
                ratios.insert(format!("{}/{k}", w.name()), json!(r));
            }
        }
    }

    let mut targets = vec![];
    let min_target = |name: &str, t: f64, v: Option<f64>, unit: &str| Target {
        name: name.into(),
        target: format!(">= {t}"),
        measured: v,
        unit: unit.into(),
        pass: v.map(|v| v >= t),
        by: v
            .map(|v| format!("{:+.1} %", (v - t) / t * 100.0))
            .unwrap_or_else(|| "not measured".into()),
    };
    let max_target = |name: &str, t: f64, v: Option<f64>, unit: &str| Target {
        name: name.into(),
        target: format!("<= {t}"),
        measured: v,
        unit: unit.into(),
        pass: v.map(|v| v <= t),
        by: v
            .map(|v| {
                if v <= t {
                    format!("{:.2} {unit} to spare", t - v)
                } else {
                    format!(
                        "over by {:.2} {unit} ({:+.0} %)",
                        v - t,
                        (v - t) / t * 100.0
                    )
                }
            })
            .unwrap_or_else(|| "not measured".into()),
    };
    targets.push(min_target(
        "small messages: proxied/direct produce throughput",
        0.95,
        ratio(
            get(Workload::Small, Mode::Proxied, "produce_mb_per_s"),
            get(Workload::Small, Mode::Direct, "produce_mb_per_s"),
        ),
        "ratio",
    ));
    targets.push(min_target(
        "large messages: proxied/direct produce throughput",
        0.98,
        ratio(
            get(Workload::Large, Mode::Proxied, "produce_mb_per_s"),
            get(Workload::Large, Mode::Direct, "produce_mb_per_s"),
        ),
        "ratio",
    ));
    for w in [Workload::Small, Workload::Large] {
        targets.push(max_target(
            &format!(
                "{} messages: kafka-sidecar CPU-s/GB / HAProxy CPU-s/GB",
                w.name()
            ),
            1.5,
            ratio(
                get(w, Mode::Proxied, "proxy_cpu_seconds_per_gb"),
                get(w, Mode::HaproxyChain, "haproxy_cpu_seconds_per_gb"),
            ),
            "x",
        ));
    }
    targets.push(max_target(
        "fixed rate: added p99 produce latency (proxied - direct)",
        100.0,
        match (
            get(Workload::FixedRate, Mode::Proxied, "p99_us"),
            get(Workload::FixedRate, Mode::Direct, "p99_us"),
        ) {
            (Some(p), Some(d)) => Some(p - d),
            _ => None,
        },
        "us",
    ));
    targets.push(max_target(
        "many connections: proxy peak RSS",
        64.0,
        get(Workload::Connections, Mode::Proxied, "proxy_peak_rss_mib"),
        "MiB",
    ));
    let summary = json!({
        "medians": medians,
        "ratios_proxied_over_direct": ratios,
        "targets": targets,
    });
    (summary, targets)
}

// ---------------------------------------------------------------- report

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// A small line chart as inline SVG. `x_nines`: x is a percentile, drawn on a
/// "number of nines" axis.
fn svg_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_nines: bool,
) -> String {
    let (w, h, l, r, t, b) = (560.0, 300.0, 60.0, 130.0, 30.0, 40.0);
    let tx = |x: f64| {
        if x_nines {
            -(1.0 - x / 100.0).max(1e-6).log10()
        } else {
            x
        }
    };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(x, y)| (tx(x), y)))
        .collect();
    let xmax = pts.iter().map(|p| p.0).fold(0.0f64, f64::max).max(1e-9);
    let xmin = if x_nines { tx(50.0) } else { 0.0 };
    let ymax = pts.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let sx = |x: f64| l + (x - xmin) / (xmax - xmin).max(1e-9) * (w - l - r);
    let sy = |y: f64| h - b - y / ymax * (h - t - b);
    let mut o = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='11'>\
         <text x='{}' y='16' font-size='13' font-weight='bold'>{}</text>",
        l,
        esc(title)
    );
    o += &format!(
        "<line x1='{l}' y1='{}' x2='{}' y2='{}' stroke='#333'/><line x1='{l}' y1='{t}' x2='{l}' y2='{}' stroke='#333'/>",
        h - b, w - r, h - b, h - b
    );
    for i in 0..=4 {
        let y = ymax * i as f64 / 4.0;
        o += &format!(
            "<line x1='{l}' x2='{}' y1='{py}' y2='{py}' stroke='#eee'/><text x='{}' y='{}' text-anchor='end'>{}</text>",
            w - r,
            l - 4.0,
            sy(y) + 4.0,
            fmt_num(y),
            py = sy(y)
        );
    }
    let xticks: Vec<(f64, String)> = if x_nines {
        [50.0, 90.0, 99.0, 99.9, 99.99]
            .iter()
            .map(|&p| (tx(p), format!("p{p}")))
            .collect()
    } else {
        (0..=4)
            .map(|i| {
                let x = xmax * i as f64 / 4.0;
                (x, format!("{x:.1}"))
            })
            .collect()
    };
    for (x, label) in xticks {
        o += &format!(
            "<text x='{}' y='{}' text-anchor='middle'>{}</text>",
            sx(x),
            h - b + 14.0,
            label
        );
    }
    o += &format!(
        "<text x='{}' y='{}' text-anchor='middle'>{}</text><text x='12' y='{}' transform='rotate(-90 12 {})' text-anchor='middle'>{}</text>",
        (l + w - r) / 2.0,
        h - 6.0,
        esc(x_label),
        (t + h - b) / 2.0,
        (t + h - b) / 2.0,
        esc(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(tx(x)), sy(y)))
            .collect();
        o += &format!(
            "<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>",
            s.color,
            path.join(" ")
        );
        let ly = t + 14.0 * i as f64 + 10.0;
        o += &format!(
            "<line x1='{}' x2='{}' y1='{ly}' y2='{ly}' stroke='{}' stroke-width='3'/><text x='{}' y='{}'>{}</text>",
            w - r + 8.0,
            w - r + 24.0,
            s.color,
            w - r + 28.0,
            ly + 4.0,
            esc(s.name)
        );
    }
    o + "</svg>"
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The run of each mode whose produce throughput is the median of its rounds.
fn median_run(results: &[RunResult], w: Workload, mode: Mode) -> Option<&RunResult> {
    let mut runs: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.workload == w && r.mode == mode)
        .collect();
    runs.sort_by(|a, b| a.produce_mb_per_s.total_cmp(&b.produce_mb_per_s));
    runs.get(runs.len() / 2).copied()
}

fn html_report(
    args: &Args,
    upstream: &str,
    results: &[RunResult],
    summary: &serde_json::Value,
    targets: &[Target],
) -> String {
    let mut body = String::new();
    body += &format!(
        "<h1>kafka-sidecar load test</h1><p>{} &middot; {} CPUs &middot; upstream: {} &middot; {} rounds, modes alternated, medians quoted</p>",
        esc(&now_utc()),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        esc(upstream),
        args.rounds
    );
    body += "<h2>Targets</h2><table><tr><th>target</th><th>required</th><th>measured (median)</th><th>result</th><th>margin</th></tr>";
    for t in targets {
        let (cls, res) = match t.pass {
            Some(true) => ("pass", "PASS"),
            Some(false) => ("miss", "MISS"),
            None => ("na", "n/a"),
        };
        body += &format!(
            "<tr><td>{}</td><td>{} {}</td><td>{}</td><td class='{cls}'>{res}</td><td>{}</td></tr>",
            esc(&t.name),
            esc(&t.target),
            esc(&t.unit),
            t.measured.map(fmt_num).unwrap_or_else(|| "-".into()),
            esc(&t.by)
        );
    }
    body += "</table>";
    body += "<h2>Medians</h2><table><tr><th>workload/mode</th><th>produce msg/s</th><th>produce MB/s</th><th>consume MB/s</th><th>p50 µs</th><th>p99 µs</th><th>p99.9 µs</th><th>max µs</th><th>proxy CPU s</th><th>proxy CPU-s/GB</th><th>proxy peak RSS MiB</th><th>HAProxy CPU-s/GB</th></tr>";
    if let Some(obj) = summary["medians"].as_object() {
        for (k, v) in obj {
            let f = |name: &str| v[name].as_f64().map(fmt_num).unwrap_or_else(|| "-".into());
            body += &format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(k),
                f("produce_msgs_per_s"),
                f("produce_mb_per_s"),
                f("consume_mb_per_s"),
                f("p50_us"),
                f("p99_us"),
                f("p999_us"),
                f("max_us"),
                f("proxy_cpu_seconds"),
                f("proxy_cpu_seconds_per_gb"),
                f("proxy_peak_rss_mib"),
                f("haproxy_cpu_seconds_per_gb"),
            );
        }
    }
    body += "</table><h2>Charts (the median run of each mode)</h2><div class='charts'>";
    let workloads: Vec<Workload> = {
        let mut v: Vec<Workload> = results.iter().map(|r| r.workload).collect();
        v.sort();
        v.dedup();
        v
    };
    for w in &workloads {
        let modes: Vec<Mode> = {
            let mut v: Vec<Mode> = results
                .iter()
                .filter(|r| r.workload == *w)
                .map(|r| r.mode)
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let tp: Vec<Series> = modes
            .iter()
            .filter_map(|m| {
                median_run(results, *w, *m).map(|r| Series {
                    name: m.name(),
                    color: m.color(),
                    points: r.series.clone(),
                })
            })
            .collect();
        body += &svg_chart(
            &format!("{}: acknowledged produce throughput", w.name()),
            "seconds",
            "MB/s",
            &tp,
            false,
        );
        let lat: Vec<Series> = modes
            .iter()
            .filter_map(|m| {
                median_run(results, *w, *m).map(|r| Series {
                    name: m.name(),
                    color: m.color(),
                    points: r
                        .latency
                        .curve
                        .iter()
                        .map(|&(p, us)| (p, us / 1000.0))
                        .collect(),
                })
            })
            .collect();
        body += &svg_chart(
            &format!("{}: produce latency by percentile", w.name()),
            "percentile",
            "ms",
            &lat,
            true,
        );
    }
    body += "</div><h2>Every run</h2><table><tr><th>round</th><th>workload</th><th>mode</th><th>produced</th><th>errors</th><th>MB/s</th><th>consume MB/s</th><th>p99 µs</th><th>proxy CPU s</th><th>proxy CPU-s/GB</th><th>proxy peak RSS MiB</th><th>HAProxy CPU-s/GB</th></tr>";
    for r in results {
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.round,
            r.workload.name(),
            r.mode.name(),
            r.produced,
            r.produce_errors,
            r.produce_mb_per_s,
            r.consume_mb_per_s,
            r.latency.p99_us,
            r.proxy.as_ref().map(|p| format!("{:.2}", p.cpu_seconds)).unwrap_or_default(),
            r.proxy.as_ref().map(|p| format!("{:.2}", p.cpu_seconds_per_gb)).unwrap_or_default(),
            r.proxy.as_ref().map(|p| format!("{:.1}", p.peak_rss_mib)).unwrap_or_default(),
            r.haproxy.as_ref().map(|p| format!("{:.2}", p.cpu_seconds_per_gb)).unwrap_or_default(),
        );
    }
    body += "</table><p>CPU seconds per GB: the process's utime+stime during the run divided by payload bytes produced plus consumed. haproxy_chain: clients &rarr; HAProxy (TCP mode) &rarr; kafka-sidecar &rarr; upstream; HAProxy's figure is the floor for relaying the same bytes. Latency of the fixed-rate workload is measured from each message's scheduled send time.</p>";
    format!(
        "<!doctype html><html><head><meta charset='utf-8'><title>kafka-sidecar load test</title><style>\
         body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}} \
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:first-child,th:first-child{{text-align:left}} \
         .pass{{background:#d4f7d4}} .miss{{background:#f7d4d4}} .charts svg{{margin:6px;border:1px solid #ddd}}\
         </style></head><body>{body}</body></html>\n"
    )
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- main

fn haproxy_bin(arg: &Option<String>) -> Option<String> {
    match arg.as_deref() {
        Some("none") => return None,
        Some(b) => return Some(b.to_string()),
        None => {}
    }
    if let Ok(b) = std::env::var("HAPROXY_BIN") {
        return Some(b);
    }
    let env = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/env");
    if let Ok(text) = std::fs::read_to_string(env) {
        for l in text.lines() {
            if let Some(v) = l.strip_prefix("export HAPROXY_BIN=") {
                return Some(v.trim_matches('\'').trim_matches('"').to_string());
            }
        }
    }
    Path::new("/usr/sbin/haproxy")
        .exists()
        .then(|| "/usr/sbin/haproxy".to_string())
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if !args.bench {
        // `cargo test --benches` runs bench targets without --bench: nothing to test here.
        println!("loadtest: run with `cargo bench --bench loadtest -- [options]`");
        return Ok(());
    }
    if args.quick {
        args.rounds = 1;
    }
    if let Some(cpu) = args.pin_proxy_cpu {
        pin_self_away_from(cpu)?;
    }
    let proxy_bin = args.proxy_bin.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/kafka-sidecar")
    });
    if !proxy_bin.exists() {
        bail!(
            "{} not found: run `cargo build --release --bin kafka-sidecar` first (or pass --proxy-bin)",
            proxy_bin.display()
        );
    }
    let haproxy_bin = haproxy_bin(&args.haproxy_bin).filter(|b| Path::new(b).exists());
    let workloads: Vec<Workload> = args
        .workloads
        .split(',')
        .map(Workload::parse)
        .collect::<anyhow::Result<_>>()?;
    let dir = std::env::temp_dir().join(format!("kafka-sidecar-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let env = Env {
        args: args.clone(),
        proxy_bin,
        haproxy_bin,
        tck: clk_tck(),
        dir: dir.clone(),
        ports: Ports::pick(),
    };
    let upstream = match &args.bootstrap {
        Some(b) => format!("{b} (real cluster)"),
        None => format!(
            "embedded librdkafka mock cluster, {} brokers, fresh per run, in the load generator's process",
            args.mock_brokers
        ),
    };
    println!(
        "kafka-sidecar loadtest: {} rounds, upstream: {upstream}",
        args.rounds
    );
    println!(
        "proxy: {} (child process); floor: {}; {}",
        env.proxy_bin.display(),
        env.haproxy_bin
            .as_deref()
            .unwrap_or("none (HAProxy not found)"),
        match args.pin_proxy_cpu {
            Some(c) => format!("relays pinned to CPU {c}, load generator to the others"),
            None => "no CPU pinning (everything shares every core)".to_string(),
        }
    );
    let started = Instant::now();
    let mut results = vec![];
    for round in 0..args.rounds {
        for w in &workloads {
            let mut modes = modes_for(*w, env.haproxy_bin.is_some());
            // Alternate: odd rounds run the modes in reverse order.
            if round % 2 == 1 {
                modes.reverse();
            }
            for mode in modes {
                let r = run_one(&env, *w, mode, round)
                    .with_context(|| format!("round {round}, {} via {}", w.name(), mode.name()))?;
                println!(
                    "[{:>5.1}s] round {round} {:<11} {:<15} {:>8} msgs {:>8.0} msg/s {:>7.1} MB/s  p50 {:>7.0} µs p99 {:>7.0} µs  consume {:>7.1} MB/s ({} in {:.2} s){}{}{}{}",
                    started.elapsed().as_secs_f64(),
                    w.name(),
                    mode.name(),
                    r.produced,
                    r.produce_msgs_per_s,
                    r.produce_mb_per_s,
                    r.latency.p50_us,
                    r.latency.p99_us,
                    r.consume_mb_per_s,
                    r.consumed,
                    r.consume_seconds,
                    r.proxy
                        .as_ref()
                        .map(|p| format!("  proxy {:.2} CPU-s ({:.2}/GB) peak RSS {:.1} MiB", p.cpu_seconds, p.cpu_seconds_per_gb, p.peak_rss_mib))
                        .unwrap_or_default(),
                    if r.connections > 0 {
                        format!("  {} idle connections", r.connections)
                    } else {
                        String::new()
                    },
                    r.haproxy
                        .as_ref()
                        .map(|p| format!("  haproxy {:.2} CPU-s ({:.2}/GB)", p.cpu_seconds, p.cpu_seconds_per_gb))
                        .unwrap_or_default(),
                    if r.produce_errors > 0 { format!("  {} errors", r.produce_errors) } else { String::new() },
                );
                results.push(r);
            }
        }
    }
    let (summary, targets) = summarize(&results);
    println!("\nmedians:");
    if let Some(obj) = summary["medians"].as_object() {
        for (k, v) in obj {
            println!("  {k:<28} {v}");
        }
    }
    println!(
        "\nproxied/direct: {}",
        summary["ratios_proxied_over_direct"]
    );
    println!("\ntargets:");
    for t in &targets {
        println!(
            "  [{}] {}: {} {} (required {} {}; {})",
            match t.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "n/a ",
            },
            t.name,
            t.measured.map(fmt_num).unwrap_or_else(|| "-".into()),
            t.unit,
            t.target,
            t.unit,
            t.by
        );
    }
    std::fs::create_dir_all(&args.out)?;
    let full = json!({
        "date": now_utc(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "upstream": upstream,
        "pin_proxy_cpu": args.pin_proxy_cpu,
        "args": format!("{:?}", args),
        "summary": summary,
        "runs": results,
    });
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&full)?,
    )?;
    std::fs::write(
        args.out.join("report.html"),
        html_report(&args, &upstream, &results, &summary, &targets),
    )?;
    println!(
        "\nwrote {} and {} in {:.0} s",
        args.out.join("report.html").display(),
        args.out.join("summary.json").display(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
