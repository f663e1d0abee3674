//! The command line.

use std::path::{Path, PathBuf};

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "kafka-sidecar load test: direct vs proxied, alternating, medians")]
pub struct Args {
    /// Rounds; each round runs every workload in every mode, alternating the order.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// A real cluster instead of the embedded mock (one fresh mock per run otherwise).
    #[arg(long)]
    pub bootstrap: Option<String>,
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
    /// Output directory for report.html and summary.json.
    #[arg(long, default_value = "target/loadtest")]
    pub out: PathBuf,
    /// One round, shorter runs (for a smoke test).
    #[arg(long)]
    pub quick: bool,
    /// Workloads to run (comma separated): small,large,connections,fixed_rate.
    #[arg(long, default_value = "small,large,connections,fixed_rate")]
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
