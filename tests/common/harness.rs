//! Starting the proxy in-process in front of real upstreams, for integration tests.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use kafka_sidecar::config::Config;
use kafka_sidecar::proxy::Proxy;

/// Ports for one proxy: a bootstrap port and a block of broker ports, all free now.
/// Below 32768 so that no outgoing connection's ephemeral port can take them.
pub struct PortBlock {
    pub bootstrap: u16,
    pub broker_base: u16,
}

pub const MAX_NODE_ID: u16 = 120;

pub fn port_block() -> PortBlock {
    for _ in 0..200 {
        let base = 20000 + (rand_u16() % 90) * 128;
        let all_free =
            (base..base + MAX_NODE_ID + 1).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return PortBlock {
                bootstrap: base + MAX_NODE_ID,
                broker_base: base,
            };
        }
    }
    panic!("no free block of ports below 32768");
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish() as u16
}

pub struct TestProxy {
    pub proxy: Proxy,
    pub bootstrap: String,
    pub ports: PortBlock,
    pub config_path: PathBuf,
    pub dir: tempfile::TempDir,
}

/// YAML for a proxy in front of `clusters` (name, bootstrap servers), `active` active.
/// `extra` is appended verbatim (more top-level keys).
pub fn config_yaml(
    ports: &PortBlock,
    clusters: &[(&str, String)],
    active: &str,
    extra: &str,
) -> String {
    let mut section = String::new();
    for (name, servers) in clusters {
        let list: Vec<String> = servers.split(',').map(|s| format!("\"{s}\"")).collect();
        section.push_str(&format!(
            "  {name}:\n    bootstrap_servers: [{}]\n",
            list.join(", ")
        ));
    }
    config_yaml_clusters(ports, &section, active, extra)
}

/// Like [`config_yaml`], with the whole `clusters:` section given as YAML (its body, each
/// cluster indented by two spaces), so clusters can carry `tls:` and `sasl:` blocks.
pub fn config_yaml_clusters(
    ports: &PortBlock,
    clusters_section: &str,
    active: &str,
    extra: &str,
) -> String {
    let mut y = format!(
        "listen: {{address: 127.0.0.1, bootstrap_port: {}, broker_port_base: {}, max_node_id: {}}}\nactive_cluster: {active}\nclusters:\n",
        ports.bootstrap, ports.broker_base, MAX_NODE_ID
    );
    y.push_str(clusters_section);
    if !clusters_section.ends_with('\n') {
        y.push('\n');
    }
    y.push_str("limits: {connect_timeout: 5s}\nwatch: {poll_interval: 500ms, debounce: 50ms}\nswitch: {drain_timeout: 2s}\n");
    y.push_str(extra);
    y
}

impl TestProxy {
    pub async fn start(clusters: &[(&str, String)], active: &str) -> TestProxy {
        Self::start_with(clusters, active, "").await
    }

    pub async fn start_with(clusters: &[(&str, String)], active: &str, extra: &str) -> TestProxy {
        Self::start_yaml(|ports| config_yaml(ports, clusters, active, extra)).await
    }

    /// A proxy whose `clusters:` section is given as YAML (see [`config_yaml_clusters`]).
    pub async fn start_with_clusters_yaml(
        clusters_section: &str,
        active: &str,
        extra: &str,
    ) -> TestProxy {
        Self::start_yaml(|ports| config_yaml_clusters(ports, clusters_section, active, extra)).await
    }

    /// A proxy on a fresh port block with the config file `yaml(ports)`.
    pub async fn start_yaml(yaml: impl FnOnce(&PortBlock) -> String) -> TestProxy {
        init_logging();
        let ports = port_block();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.yaml");
        let yaml = yaml(&ports);
        std::fs::write(&config_path, &yaml).unwrap();
        let cfg = Config::load(&config_path).unwrap();
        let proxy = Proxy::start(cfg, Some(config_path.clone())).await.unwrap();
        TestProxy {
            bootstrap: format!("127.0.0.1:{}", ports.bootstrap),
            proxy,
            ports,
            config_path,
            dir,
        }
    }

    /// Rewrites the config file the way an editor would and waits until the proxy
    /// runs on a config whose active cluster is `active`.
    pub async fn switch_to(&self, clusters: &[(&str, String)], active: &str, extra: &str) {
        self.switch_yaml(config_yaml(&self.ports, clusters, active, extra), active)
            .await;
    }

    /// Replaces the config file with `yaml` the way an editor would (a new file renamed over
    /// it) and waits until the proxy runs on a config whose active cluster is `active`.
    pub async fn switch_yaml(&self, yaml: String, active: &str) {
        let tmp = self.dir.path().join(".config.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
        let mut rx = self.proxy.shared.switch.subscribe();
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if rx.borrow_and_update().cluster.name() == active {
                    return;
                }
                rx.changed().await.unwrap();
            }
        })
        .await
        .expect("proxy did not switch within 20 s");
    }
}

/// Logs to the test's captured output; level from RUST_LOG (default warn).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Sum of the samples of `name` carrying all `labels`, from this process's metrics recorder (which
/// must be installed, with `kafka_sidecar::admin::install_recorder`, before the proxy counts anything).
pub fn metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = kafka_sidecar::admin::install_recorder().unwrap().render();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
