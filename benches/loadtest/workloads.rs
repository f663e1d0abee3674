//! Workloads, and one run of a workload in a mode against a target.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::cli::Args;
use crate::clients::{consume, open_idle, produce_fixed_rate, produce_max, Consumed, Producing};
use crate::kroxylicious::Kroxylicious;
use crate::modes::{first, Chain, Mode};
use crate::relays::Ports;
use crate::sampling::ProcStats;
use crate::targets::Target;

pub const SMALL: usize = 100;
pub const KIB: usize = 1024;
pub const LARGE: usize = 100 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    Small,
    Kib,
    Large,
    Connections,
    FixedRate,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Small => "small",
            Workload::Kib => "kib",
            Workload::Large => "large",
            Workload::Connections => "connections",
            Workload::FixedRate => "fixed_rate",
        }
    }
    pub fn parse(s: &str) -> anyhow::Result<Workload> {
        Ok(match s.trim() {
            "small" => Workload::Small,
            "kib" | "1k" => Workload::Kib,
            "large" => Workload::Large,
            "connections" => Workload::Connections,
            "fixed_rate" => Workload::FixedRate,
            other => bail!("unknown workload {other}"),
        })
    }
    /// Record size in bytes.
    pub fn size(self, args: &Args) -> usize {
        match self {
            Workload::Small | Workload::Connections => SMALL,
            Workload::Kib => KIB,
            Workload::Large => LARGE,
            Workload::FixedRate => args.fixed_size,
        }
    }
    /// Whether the modes are compared by throughput (as opposed to latency or memory).
    pub fn throughput(self) -> bool {
        matches!(self, Workload::Small | Workload::Kib | Workload::Large)
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
    /// The upstream: mock, tansu, kafka or external.
    pub target: String,
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
    /// Cores busy while the consumer read, by party (consumer, broker, relays).
    pub consume_cores: crate::clients::ConsumeCores,
    /// Payload bytes produced plus consumed (the denominator of CPU seconds per GB).
    pub payload_bytes: u64,
    pub connections: usize,
    /// kafka-sidecar's process, in the modes that run it.
    pub proxy: Option<ProcStats>,
    pub haproxy: Option<ProcStats>,
    pub kroxylicious: Option<ProcStats>,
    /// kafka-sidecar's `kafka_sidecar_batches_held_total` at the end of the run.
    pub held_batches: Option<u64>,
    /// kafka-sidecar's `kafka_sidecar_bytes_spliced_total` and `kafka_sidecar_bytes_total`
    /// at the end of the run (both directions).
    pub spliced_bytes: Option<(u64, u64)>,
    /// (seconds since start, produce MB/s in the 100 ms before).
    pub series: Vec<(f64, f64)>,
}

pub struct Env {
    pub args: Args,
    pub proxy_bin: PathBuf,
    pub haproxy_bin: Option<String>,
    pub kroxylicious: Option<Kroxylicious>,
    pub tck: f64,
    pub dir: PathBuf,
    pub ports: Ports,
}

impl RunResult {
    /// The process whose cost the mode is about: kafka-sidecar, HAProxy (in the chain, the
    /// floor for relaying the same bytes) or Kroxylicious.
    pub fn relay(&self) -> Option<&ProcStats> {
        match self.mode {
            Mode::Direct => None,
            Mode::Sidecar | Mode::SidecarSwitched => self.proxy.as_ref(),
            Mode::HaproxyChain => self.haproxy.as_ref(),
            Mode::Kroxylicious => self.kroxylicious.as_ref(),
        }
    }
}

pub fn run_one(
    env: &Env,
    target: &Target,
    w: Workload,
    mode: Mode,
    round: usize,
) -> anyhow::Result<RunResult> {
    let a = &env.args;
    let up = target.for_run(a, &env.ports, mode.needs_spare())?;
    let topic = format!(
        "lt-{}-{}-{}-{round}-{}",
        target.name(),
        w.name(),
        mode.name(),
        std::process::id()
    );
    up.create_topic(&topic, a.partitions)
        .with_context(|| format!("creating topic {topic}"))?;
    let result = measure(env, target, &up, &topic, w, mode, round);
    up.delete_topic(&topic);
    result
}

fn measure(
    env: &Env,
    target: &Target,
    up: &crate::targets::RunUpstream,
    topic: &str,
    w: Workload,
    mode: Mode,
    round: usize,
) -> anyhow::Result<RunResult> {
    let a = &env.args;
    let mut chain = Chain::start(env, mode, up)?;
    let client_bootstrap = chain.bootstrap.clone();
    let client_addr: std::net::SocketAddr = first(&client_bootstrap)
        .replace("localhost", "127.0.0.1")
        .parse()
        .with_context(|| format!("bootstrap address {client_bootstrap}"))?;
    let size = w.size(a);
    let producing = Producing {
        bootstrap: &client_bootstrap,
        topic,
        idempotent: !a.no_idempotence,
    };
    // Warm-up outside the clock and the CPU counters (bounded: 20 MB, 20 s).
    if a.warmup > 0 {
        let n = a.warmup.min((20_000_000 / size as u64).max(1));
        let warm = produce_max(&producing, size, n, 20.0)?;
        if warm.produced < n {
            bail!(
                "warm-up: {} of {n} messages acknowledged ({} errors)",
                warm.produced,
                warm.errors
            );
        }
    }
    chain.mark(env.tck);

    let scale = if a.quick { 0.5 } else { 1.0 };
    let mut idle = vec![];
    let outcome = match w {
        Workload::Small => produce_max(&producing, size, a.small_max, a.seconds * scale)?,
        Workload::Kib => produce_max(&producing, size, a.kib_max, a.seconds * scale)?,
        Workload::Large => produce_max(&producing, size, a.large_max, a.seconds * scale)?,
        Workload::Connections => {
            idle = open_idle(client_addr, a.idle_connections);
            produce_max(&producing, size, a.small_max, scale)?
        }
        Workload::FixedRate => produce_fixed_rate(
            &producing,
            size,
            a.users,
            if a.quick { a.requests / 2 } else { a.requests },
            a.rate,
        )?,
    };
    let consumed = if w.throughput() {
        let (broker, relays) = (up.broker_pids(), chain.relay_pids());
        consume(
            &client_bootstrap,
            topic,
            a.partitions,
            outcome.produced,
            (&broker, &relays),
            env.tck,
        )?
    } else {
        Consumed::default()
    };
    let consumed_bytes = consumed.bytes;
    let consume_seconds = consumed.seconds;
    let produced_bytes = outcome.produced * size as u64;
    let payload_bytes = produced_bytes + consumed_bytes;
    let stats =
        |m: &Option<crate::sampling::Measured>| m.as_ref().map(|p| p.stats(env.tck, payload_bytes));
    let (proxy, haproxy, kroxylicious) = (
        stats(&chain.sidecar),
        stats(&chain.haproxy),
        stats(&chain.kroxylicious),
    );
    // Batches kafka-sidecar answered NOT_ENOUGH_REPLICAS (the client retried them after
    // its backoff): after a switch they show in the fixed-rate tail.
    let held_batches = chain.sidecar.as_ref().map(|_| {
        crate::relays::sidecar_counter(&env.ports, "kafka_sidecar_batches_held_total").unwrap_or(0)
    });
    // How much of what kafka-sidecar relayed never entered its memory (splice).
    let spliced_bytes = chain.sidecar.as_ref().map(|_| {
        let c = |name| crate::relays::sidecar_counter(&env.ports, name).unwrap_or(0);
        (
            c("kafka_sidecar_bytes_spliced_total"),
            c("kafka_sidecar_bytes_total"),
        )
    });
    let connections = idle.len();
    drop(idle);
    drop(chain);
    let per = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    Ok(RunResult {
        target: target.name().to_string(),
        workload: w,
        mode,
        round,
        produced: outcome.produced,
        produce_errors: outcome.errors,
        produce_seconds: outcome.seconds,
        produce_msgs_per_s: per(outcome.produced, outcome.seconds),
        produce_mb_per_s: per(produced_bytes, outcome.seconds) / 1e6,
        latency: outcome.latency,
        consumed: consumed.messages,
        consume_seconds,
        consume_msgs_per_s: per(consumed.messages, consume_seconds),
        consume_cores: consumed.cores,
        consume_mb_per_s: per(consumed_bytes, consume_seconds) / 1e6,
        payload_bytes,
        connections,
        proxy,
        haproxy,
        kroxylicious,
        held_batches,
        spliced_bytes,
        series: outcome.series,
    })
}
