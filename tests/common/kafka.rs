//! Real Apache Kafka (KRaft) clusters and a MirrorMaker 2 pair for integration tests, started by
//! `scripts/kafka-cluster.sh`.
//!
//! cargo nextest runs every test in its own process, so a `OnceLock` alone cannot share a broker JVM
//! between the tests of one binary. Instead each test *leases* a cluster by key
//! (`scripts/kafka-cluster.sh lease`): the first lease starts it in `target/kafka-kit/<key>`, later ones
//! (from any process, serialised by `flock`) reuse it, and a watchdog stops it a few seconds after the last
//! leasing process has exited — also when a test panicked or was killed. `scripts/test.sh` reaps whatever is
//! left at the end of the run and fails if a JVM survives. Tests sharing a cluster use unique topic and group
//! names ([`unique`]).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::harness::{init_logging, TestProxy};
use super::tools::{parse_env_file, run_with_timeout};

/// Seconds a leased cluster outlives its last user process (the gap between two tests of a binary).
const LEASE_GRACE_SECS: u32 = 45;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plaintext,
    Ssl,
    SaslSsl,
}

/// What [`lease`] starts (options of `kafka-cluster.sh start`).
#[derive(Debug, Clone)]
pub struct Spec {
    pub nodes: u32,
    pub node_id_base: i32,
    pub security: Security,
    pub acl: bool,
    pub reauth_ms: Option<u64>,
    pub auto_create: bool,
    pub partitions: u32,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            nodes: 1,
            node_id_base: 1,
            security: Security::Plaintext,
            acl: false,
            reauth_ms: None,
            auto_create: true,
            partitions: 1,
        }
    }
}

impl Spec {
    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--nodes".into(),
            self.nodes.to_string(),
            "--node-id-base".into(),
            self.node_id_base.to_string(),
            "--security".into(),
            match self.security {
                Security::Plaintext => "plaintext",
                Security::Ssl => "ssl",
                Security::SaslSsl => "sasl_ssl",
            }
            .into(),
            "--auto-create".into(),
            self.auto_create.to_string(),
            "--partitions".into(),
            self.partitions.to_string(),
        ];
        if self.acl {
            a.push("--acl".into());
        }
        if let Some(ms) = self.reauth_ms {
            a.extend(["--reauth-ms".into(), ms.to_string()]);
        }
        a
    }
}

/// One running cluster, as `kafka-cluster.sh` described it in its `cluster.env`.
#[derive(Debug, Clone)]
pub struct Kafka {
    pub name: String,
    pub dir: PathBuf,
    /// The client listener (PLAINTEXT, SSL or SASL_SSL): what the proxy connects to.
    pub bootstrap: String,
    /// The internal PLAINTEXT listener (super user when ACLs are on): for verification and admin only.
    pub internal: String,
    pub node_ids: Vec<i32>,
    pub security: Security,
    pub ca_pem: Option<PathBuf>,
    pub cluster_id: String,
    pub app_user: String,
    pub app_password: String,
}

impl Kafka {
    fn from_env(path: &Path) -> Result<Kafka> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let env = parse_env_file(&text);
        let get = |k: &str| env.get(k).cloned().unwrap_or_default();
        Ok(Kafka {
            name: get("NAME"),
            dir: PathBuf::from(get("DIR")),
            bootstrap: get("BOOTSTRAP"),
            internal: get("INTERNAL_BOOTSTRAP"),
            node_ids: get("NODE_IDS")
                .split_whitespace()
                .map(|s| s.parse().context("NODE_IDS"))
                .collect::<Result<_>>()?,
            security: match get("SECURITY").as_str() {
                "ssl" => Security::Ssl,
                "sasl_ssl" => Security::SaslSsl,
                _ => Security::Plaintext,
            },
            ca_pem: Some(get("CA_PEM"))
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            cluster_id: get("CLUSTER_ID"),
            app_user: get("APP_USER"),
            app_password: get("APP_PASSWORD"),
        })
    }

    /// This cluster's entry of a proxy config's `clusters:` section (TLS with the test CA, SCRAM as `app`).
    pub fn proxy_cluster_yaml(&self, name: &str) -> String {
        let servers: Vec<String> = self
            .bootstrap
            .split(',')
            .map(|s| format!("\"{s}\""))
            .collect();
        let mut y = format!(
            "  {name}:\n    bootstrap_servers: [{}]\n",
            servers.join(", ")
        );
        if let Some(ca) = &self.ca_pem {
            y.push_str(&format!("    tls: {{ca_file: \"{}\"}}\n", ca.display()));
        }
        if self.security == Security::SaslSsl {
            y.push_str(&format!(
                "    sasl: {{mechanism: SCRAM-SHA-512, username: {}, password: {}}}\n",
                self.app_user, self.app_password
            ));
        }
        y
    }

    /// An rdkafka config on the internal listener (no proxy): for setup and for reading back.
    pub fn direct_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.internal);
        c
    }

    pub fn admin(&self) -> AdminClient<DefaultClientContext> {
        self.direct_config().create().expect("rdkafka admin client")
    }

    /// Creates `topic` with `partitions` partitions, replication factor 1 (or the given replica lists).
    pub async fn create_topic(&self, topic: &str, partitions: i32, replicas: Option<&[&[i32]]>) {
        let admin = self.admin();
        let t = match replicas {
            Some(r) => NewTopic::new(topic, r.len() as i32, TopicReplication::Variable(r)),
            None => NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        };
        let res = admin
            .create_topics(
                [&t],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .expect("create_topics");
        for r in res {
            if let Err((name, e)) = r {
                panic!("create topic {name} on {}: {e}", self.name);
            }
        }
        self.wait_topic(topic, Duration::from_secs(30));
    }

    /// Waits until every partition of `topic` has a leader (bounded).
    pub fn wait_topic(&self, topic: &str, timeout: Duration) {
        let c: BaseConsumer = self.direct_config().create().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                if let Some(t) = md.topics().first() {
                    if t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                    {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "topic {topic} has no leaders on {} after {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Partition -> leader node id, from a metadata request on the internal listener.
    pub fn leaders(&self, topic: &str) -> BTreeMap<i32, i32> {
        let c: BaseConsumer = self.direct_config().create().unwrap();
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        md.topics()
            .first()
            .map(|t| {
                t.partitions()
                    .iter()
                    .map(|p| (p.id(), p.leader()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every record of `topic` on this cluster, read directly: value -> number of copies.
    /// Values are decimal ids (what the test producers send); others are counted under u64::MAX.
    pub fn read_all(&self, topic: &str) -> BTreeMap<u64, u32> {
        self.read_records(topic)
            .into_iter()
            .fold(BTreeMap::new(), |mut m, (_, _, v)| {
                *m.entry(v.parse().unwrap_or(u64::MAX)).or_insert(0) += 1;
                m
            })
    }

    /// Every record of `topic`: (partition, offset, value), in partition/offset order. A missing topic reads
    /// as empty. Reads up to the high watermarks taken when it starts, so it also serves while clients
    /// still write (kcat's read to the end, [`super::readback::read_topic`], does not end then).
    pub fn read_records(&self, topic: &str) -> Vec<(i32, i64, String)> {
        let c: BaseConsumer = self
            .direct_config()
            .set("group.id", "ksc-verifier")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let Some(t) = md.topics().first().filter(|t| t.error().is_none()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for p in t.partitions() {
            let (lo, hi) = c
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            if hi <= lo {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(lo))
                .unwrap();
            c.assign(&tpl).unwrap();
            let mut next = lo;
            let deadline = Instant::now() + Duration::from_secs(60);
            while next < hi {
                assert!(
                    Instant::now() < deadline,
                    "reading {topic}/{} on {}",
                    p.id(),
                    self.name
                );
                if let Some(m) = c.poll(Duration::from_millis(500)) {
                    let m = m.unwrap();
                    let v = m
                        .payload()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default();
                    out.push((m.partition(), m.offset(), v));
                    next = m.offset() + 1;
                }
            }
        }
        out
    }

    /// Runs a Kafka command-line tool (main class) against this cluster's internal listener;
    /// `--bootstrap-server` is added. Panics with its output when it fails.
    pub fn tool(&self, class: &str, args: &[&str]) -> String {
        let mut full = vec!["--bootstrap-server", self.internal.as_str()];
        full.extend_from_slice(args);
        let out = run_tool(class, &full);
        assert!(
            out.status.success(),
            "{class} {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `scripts/kafka-cluster.sh tool CLASS ARGS...` (a JVM; a few seconds).
pub fn run_tool(class: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).arg("tool").arg(class).args(args);
    run_with_timeout(cmd, None, Duration::from_secs(120)).expect("run kafka tool")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    repo().join("scripts/kafka-cluster.sh")
}

/// Where leased clusters live: `<target>/kafka-kit` (the same root `scripts/test.sh` reaps).
pub fn lease_root() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("kafka-kit")
}

/// A port base whose `span` ports are free now, in 31600..32760: above the proxies' port blocks
/// (20000..31520) and tansu's ports (10000..20000), below Linux's ephemeral range.
fn free_port_base(span: u16) -> u16 {
    let slots = (32760 - 31600) / span;
    let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for _ in 0..200 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let base = 31600 + ((x >> 33) as u16 % slots) * span;
        if (base..base + span).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free block of {span} ports in 31600..32760");
}

fn run_lease(key: &str, span: u16, extra: &[String]) -> Result<String> {
    let dir = lease_root().join(key);
    let mut last = String::new();
    // a port block picked free can be taken by a concurrent test before the brokers bind it: try another
    for attempt in 0..3 {
        let base = free_port_base(span);
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .arg("lease")
            .arg("--dir")
            .arg(&dir)
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg("--grace")
            .arg(LEASE_GRACE_SECS.to_string())
            .arg("--port-base")
            .arg(base.to_string())
            .args(extra);
        let out = run_with_timeout(cmd, None, Duration::from_secs(600))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            if let Some(line) = stdout.lines().find(|l| l.starts_with("READY")) {
                return Ok(line.to_string());
            }
        }
        last = format!(
            "attempt {attempt}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("kafka lease {key} failed, retrying: {last}");
    }
    bail!("kafka-cluster.sh lease {key} failed: {last}")
}

/// Leases the cluster `key` (started with `spec` unless it already runs) for the rest of this process.
pub fn lease(key: &str, spec: &Spec) -> Kafka {
    static LEASED: OnceLock<Mutex<HashMap<String, Kafka>>> = OnceLock::new();
    init_logging();
    let mut map = LEASED.get_or_init(Default::default).lock().unwrap();
    if let Some(k) = map.get(key) {
        return k.clone();
    }
    let t0 = Instant::now();
    let mut args = vec!["--name".to_string(), key.to_string()];
    args.extend(spec.args());
    let line = run_lease(key, 30, &args).unwrap_or_else(|e| panic!("{e:#}"));
    let k = Kafka::from_env(&lease_root().join(key).join("cluster.env")).unwrap();
    println!(
        "[kafka] {key}: {} brokers (ids {:?}) ready after {:.1} s in this test ({line})",
        k.node_ids.len(),
        k.node_ids,
        t0.elapsed().as_secs_f64()
    );
    map.insert(key.to_string(), k.clone());
    k
}

/// Clusters `north` and `west` with MirrorMaker 2 replicating both ways (see `kafka-cluster.sh dr-pair`).
#[derive(Debug, Clone)]
pub struct DrPair {
    pub north: Kafka,
    pub west: Kafka,
    pub dir: PathBuf,
    pub offset_sync: bool,
}

pub fn lease_dr_pair(key: &str, offset_sync: bool) -> DrPair {
    init_logging();
    let t0 = Instant::now();
    let mut args = vec!["--dr-pair".to_string()];
    if !offset_sync {
        args.push("--no-offset-sync".into());
    }
    let line = run_lease(key, 130, &args).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = lease_root().join(key);
    let pair = DrPair {
        north: Kafka::from_env(&dir.join("north/cluster.env")).unwrap(),
        west: Kafka::from_env(&dir.join("west/cluster.env")).unwrap(),
        dir,
        offset_sync,
    };
    println!(
        "[kafka] {key}: DR pair ready after {:.1} s in this test ({line})",
        t0.elapsed().as_secs_f64()
    );
    pair
}

/// A name no other test (or earlier run against a reused cluster) has used.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    format!("{prefix}-{}-{t}-{n}", std::process::id())
}

// ------------------------------------------------------------------------------------------------ proxy

/// Node ids up to this get a proxy port (clusters with ids >= 1000 are in the tests).
pub const PROXY_MAX_NODE_ID: u16 = 1100;

/// The proxy's broker port base: right above the harness's bootstrap port, so that node ids up to
/// [`PROXY_MAX_NODE_ID`] stay below 32768 and the bootstrap port stays outside the broker range.
pub fn proxy_broker_base(ports: &super::harness::PortBlock) -> u16 {
    ports.bootstrap + 1
}

/// Proxy config for real clusters (`(name, cluster)`), `active` active.
pub fn proxy_yaml(
    ports: &super::harness::PortBlock,
    clusters: &[(&str, &Kafka)],
    active: &str,
    extra: &str,
) -> String {
    let mut y = format!(
        "listen: {{address: 127.0.0.1, bootstrap_port: {}, broker_port_base: {}, max_node_id: {PROXY_MAX_NODE_ID}}}\nactive_cluster: {active}\nclusters:\n",
        ports.bootstrap,
        proxy_broker_base(ports)
    );
    for (name, k) in clusters {
        y.push_str(&k.proxy_cluster_yaml(name));
    }
    y.push_str("limits: {connect_timeout: 5s}\nwatch: {poll_interval: 500ms, debounce: 50ms}\nswitch: {drain_timeout: 2s}\n");
    y.push_str(extra);
    y
}

/// A proxy in front of real clusters.
pub async fn start_proxy(clusters: &[(&str, &Kafka)], active: &str, extra: &str) -> TestProxy {
    TestProxy::start_yaml(|ports| proxy_yaml(ports, clusters, active, extra)).await
}

/// Rewrites the proxy's config file to make `active` active and waits until the proxy runs on it.
pub async fn switch(tp: &TestProxy, clusters: &[(&str, &Kafka)], active: &str, extra: &str) {
    tp.switch_yaml(proxy_yaml(&tp.ports, clusters, active, extra), active)
        .await;
}

/// The ports a client of `tp` may legitimately be told about: the bootstrap port and the proxy's broker ports.
pub fn is_proxy_address(tp: &TestProxy, host_port: &str) -> bool {
    let Some((_, port)) = host_port.rsplit_once(':') else {
        return false;
    };
    let Ok(port) = port.parse::<u16>() else {
        return false;
    };
    port == tp.ports.bootstrap || {
        let base = proxy_broker_base(&tp.ports);
        (base..=base + PROXY_MAX_NODE_ID).contains(&port)
    }
}
