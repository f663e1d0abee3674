//! The command line.

use std::path::{Path, PathBuf};

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    about = "kafka-sidecar load test: direct vs kafka-sidecar (before and after a switch), HAProxy and Kroxylicious, on mock, tansu and Kafka upstreams, alternating, medians"
)]
pub struct Args {
    /// Rounds; each round runs every workload in every mode, alternating the order.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Upstreams to measure against (comma separated): mock (embedded librdkafka mock
    /// cluster, fresh per run), tansu (the kit's tansu binary, in memory, fresh per run),
    /// kafka (a real Apache Kafka broker from scripts/kafka-cluster.sh, started once).
    #[arg(long, default_value = "mock")]
    pub targets: String,
    /// A real cluster at this address as one more target ("external"; its topics are
    /// created and deleted by the run).
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Modes to run (comma separated): direct, sidecar, sidecar_switched, haproxy_chain,
    /// kroxylicious. Modes whose binary is missing (HAProxy, Java/Maven) are skipped.
    #[arg(
        long,
        default_value = "direct,sidecar,sidecar_switched,haproxy_chain,kroxylicious"
    )]
    pub modes: String,
    /// Producers without idempotence (acks=all stays). Default: enable.idempotence=true,
    /// acks=all, as the Java client does by default.
    #[arg(long)]
    pub no_idempotence: bool,
    /// Messages produced (and acknowledged) through each run's chain before its clock and
    /// CPU counters start: connections, metadata, JIT (Kroxylicious) and, after a switch,
    /// the producer id mapping are set up outside the measurement.
    #[arg(long, default_value_t = 2000)]
    pub warmup: u64,
    /// Brokers of the embedded mock cluster.
    #[arg(long, default_value_t = 3)]
    pub mock_brokers: i32,
    /// Partitions of each test topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// kafka-sidecar binary (default: target/release/kafka-sidecar).
    #[arg(long)]
    pub proxy_bin: Option<PathBuf>,
    /// HAProxy binary (default: $HAPROXY_BIN, .tools/env, /usr/sbin/haproxy); "none" skips it.
    #[arg(long)]
    pub haproxy_bin: Option<String>,
    /// Seconds of producing in the small/large throughput workloads.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Upper bound on messages in the 1 KiB workload.
    #[arg(long, default_value_t = 1_000_000)]
    pub kib_max: u64,
    /// Upper bound on messages in the small-message workload.
    #[arg(long, default_value_t = 3_000_000)]
    pub small_max: u64,
    /// Upper bound on messages in the large-message workload.
    #[arg(long, default_value_t = 30_000)]
    pub large_max: u64,
    /// Idle connections in the many-connections workload.
    #[arg(long, default_value_t = 1000)]
    pub idle_connections: usize,
    /// Users (producers) in the fixed-rate workload.
    #[arg(long, default_value_t = 8)]
    pub users: usize,
    /// Requests per user in the fixed-rate workload.
    #[arg(long, default_value_t = 500)]
    pub requests: usize,
    /// Target total rate of the fixed-rate workload, messages per second.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Record size of the fixed-rate workload, bytes.
    #[arg(long, default_value_t = 1024)]
    pub fixed_size: usize,
    /// Java for Kroxylicious (default: $KSC_JAVA, then `java` on the PATH).
    #[arg(long)]
    pub java: Option<String>,
    /// Output directory for report.html and summary.json.
    #[arg(long, default_value = "target/loadtest")]
    pub out: PathBuf,
    /// One round, shorter runs (for a smoke test).
    #[arg(long)]
    pub quick: bool,
    /// Workloads to run (comma separated): small (100 B), kib (1 KiB), large (100 KiB),
    /// connections, fixed_rate.
    #[arg(long, default_value = "kib,large,fixed_rate,connections")]
    pub workloads: String,
    /// Pin the relays (kafka-sidecar, HAProxy) to this CPU and the load generator (clients
    /// and mock cluster) to the others, with `taskset`: measures what the proxy adds when
    /// it has a core of its own instead of competing with client and broker for one.
    #[arg(long)]
    pub pin_proxy_cpu: Option<usize>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    pub bench: bool,
}

pub fn haproxy_bin(arg: &Option<String>) -> Option<String> {
    match arg.as_deref() {
        Some("none") => return None,
        Some(b) => return Some(b.to_string()),
        None => {}
    }
    tool("HAPROXY_BIN").or_else(|| {
        Path::new("/usr/sbin/haproxy")
            .exists()
            .then(|| "/usr/sbin/haproxy".to_string())
    })
}

/// A tool's path from the environment or from `.tools/env` (written by
/// scripts/install-test-deps.sh), e.g. `TANSU_BIN`, `KSC_JAVA`.
pub fn tool(var: &str) -> Option<String> {
    if let Ok(b) = std::env::var(var) {
        return Some(b);
    }
    let env = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/env");
    let text = std::fs::read_to_string(env).ok()?;
    let prefix = format!("export {var}=");
    text.lines().find_map(|l| {
        l.strip_prefix(&prefix)
            .map(|v| v.trim_matches('\'').trim_matches('"').to_string())
    })
}

/// A comma-separated option as its trimmed, non-empty items.
pub fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}
