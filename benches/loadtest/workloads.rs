//! Workloads and modes, and one run of a workload in a mode.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use serde::Serialize;

use crate::cli::Args;
use crate::clients::{consume, open_idle, produce_fixed_rate, produce_max};
use crate::relays::{start_haproxy, start_proxy, Ports};
use crate::sampling::ProcStats;

pub const SMALL: usize = 100;
pub const LARGE: usize = 100 * 1024;
pub const FIXED_SIZE: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Direct,
    Proxied,
    ProxiedMetrics,
    HaproxyChain,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Proxied => "proxied",
            Mode::ProxiedMetrics => "proxied_metrics",
            Mode::HaproxyChain => "haproxy_chain",
        }
    }
    pub fn color(self) -> &'static str {
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
pub enum Workload {
    Small,
    Large,
    Connections,
    FixedRate,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Small => "small",
            Workload::Large => "large",
            Workload::Connections => "connections",
            Workload::FixedRate => "fixed_rate",
        }
    }
    pub fn parse(s: &str) -> anyhow::Result<Workload> {
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
pub struct Latency {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub count: u64,
    /// (percentile, microseconds) for the chart.
    pub curve: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub workload: Workload,
    pub mode: Mode,
    pub round: usize,
    pub produced: u64,
    pub produce_errors: u64,
    pub produce_seconds: f64,
    pub produce_msgs_per_s: f64,
    pub produce_mb_per_s: f64,
    pub latency: Latency,
    pub consumed: u64,
    pub consume_seconds: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    /// Payload bytes produced plus consumed (the denominator of CPU seconds per GB).
    pub payload_bytes: u64,
    pub connections: usize,
    pub proxy: Option<ProcStats>,
    pub haproxy: Option<ProcStats>,
    /// (seconds since start, produce MB/s in the 100 ms before).
    pub series: Vec<(f64, f64)>,
}

pub struct Env {
    pub args: Args,
    pub proxy_bin: PathBuf,
    pub haproxy_bin: Option<String>,
    pub tck: f64,
    pub dir: PathBuf,
    pub ports: Ports,
}

pub fn first(list: &str) -> &str {
    list.split(',').next().unwrap_or(list)
}

pub fn run_one(env: &Env, w: Workload, mode: Mode, round: usize) -> anyhow::Result<RunResult> {
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

pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
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
