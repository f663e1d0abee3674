//! The configuration file: types, defaults, loading and validation.
//!
//! The file is YAML (see `config/kafka-sidecar.yaml` for a commented example). Loading
//! is two steps so that a hot reload can refuse a broken edit and keep the last good
//! config: [`Config::parse`] turns text into a [`Config`] and [`Config::validate`]
//! checks everything that serde cannot (the active cluster exists, ports fit, secret
//! files are readable), naming the offending field in each error.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Default for `switch.producer_id_expiration`: Apache Kafka's `producer.id.expiration.ms`.
pub const DEFAULT_PRODUCER_ID_EXPIRATION: Duration = Duration::from_secs(24 * 3600);

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Local Kafka listeners the client connects to.
    pub listen: ListenConfig,
    /// Admin HTTP listener (metrics, health, status). Absent: no admin listener.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Name of the cluster (a key of `clusters`) that clients are sent to.
    pub active_cluster: String,
    /// Upstream clusters by name.
    pub clusters: BTreeMap<String, ClusterConfig>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub watch: WatchConfig,
    #[serde(default)]
    pub switch: SwitchConfig,
    /// How the clusters mirror each other, for carrying consumer positions across a
    /// switch (see `consumer_positions`).
    #[serde(default)]
    pub replication: ReplicationConfig,
    /// Fleet control plane (decisions carried by the clusters; see
    /// docs/fleet-failover.md). Absent: `active_cluster` alone decides.
    #[serde(default)]
    pub control: Option<ControlConfig>,
}

/// `control:`: decisions and reports through small topics on every cluster.
///
/// Precedence: with `control:` configured, the highest decision found on any reachable
/// cluster decides the active cluster; `active_cluster` is only the default used
/// before any decision exists. Changing the fleet is done by writing a decision
/// (`kafka-sidecar failover`), never by editing the file, so the two cannot pull
/// against each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Topic of the decisions (1 partition, kept forever). The `.internal` suffix keeps
    /// it out of MirrorMaker 2's default replication.
    pub topic: String,
    /// Topic of the sidecars' reports and the arbiters' votes (2 partitions).
    pub fleet_topic: String,
    /// retention.ms given to `fleet_topic` when it is created.
    #[serde(with = "humantime_serde")]
    pub fleet_retention: Duration,
    /// Long-poll wait of the decision fetch. Apache Kafka answers a waiting fetch as
    /// soon as a decision is appended, so this only sets how often an idle sidecar asks
    /// (traffic); a broker that holds the fetch for the whole wait (tansu 0.6) adds up
    /// to this much latency, so use ~100ms there.
    #[serde(with = "humantime_serde")]
    pub poll_wait: Duration,
    /// How often a sidecar reports (and at once after applying a decision).
    #[serde(with = "humantime_serde")]
    pub report_interval: Duration,
    /// Identity in reports. Default: `$POD_NAME`/`$HOSTNAME`, pid and a random suffix.
    pub id: Option<String>,
    /// Automatic failover by a quorum of arbiters (`kafka-sidecar arbiter`). Only the
    /// arbiters read it; absent, only operators fail over.
    pub automatic: Option<AutomaticConfig>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            topic: "kafka-sidecar.control.internal".into(),
            fleet_topic: "kafka-sidecar.fleet.internal".into(),
            fleet_retention: Duration::from_secs(600),
            poll_wait: Duration::from_secs(5),
            report_interval: Duration::from_secs(5),
            id: None,
            automatic: None,
        }
    }
}

/// `control.automatic`: when arbiters may fail the fleet over on their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutomaticConfig {
    /// Clusters in order of preference; the target of a failover is the first healthy
    /// one after the active cluster is lost; automatic failback returns to the first.
    pub priority: Vec<String>,
    /// Ids of the arbiters whose votes count (run each with `arbiter --id`).
    pub arbiters: Vec<String>,
    /// Votes needed; default a majority of `arbiters`. Must be a majority.
    pub quorum: Option<usize>,
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Time allowed for one probe (TCP, TLS, SASL, metadata, control topic).
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// The active cluster must fail every probe this long before a vote says so.
    #[serde(with = "humantime_serde")]
    pub unhealthy_after: Duration,
    /// Minimum time between two automatic decisions (against tug-of-war).
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// Return to the first cluster of `priority` automatically.
    pub failback: bool,
    /// ... once it has been healthy this long.
    #[serde(with = "humantime_serde")]
    pub failback_after: Duration,
}

impl Default for AutomaticConfig {
    fn default() -> Self {
        AutomaticConfig {
            priority: vec![],
            arbiters: vec![],
            quorum: None,
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(2),
            unhealthy_after: Duration::from_secs(30),
            min_interval: Duration::from_secs(1800),
            failback: false,
            failback_after: Duration::from_secs(900),
        }
    }
}

impl AutomaticConfig {
    pub fn quorum(&self) -> usize {
        self.quorum.unwrap_or(self.arbiters.len() / 2 + 1)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address the Kafka listeners bind to (loopback in a sidecar).
    #[serde(default = "default_listen_address")]
    pub address: IpAddr,
    /// Host name written into rewritten broker addresses. Defaults to `address`.
    #[serde(default)]
    pub advertised_host: Option<String>,
    /// Port of the bootstrap listener (`bootstrap.servers=localhost:<port>`).
    pub bootstrap_port: u16,
    /// Broker with node id N is served on `broker_port_base + N`.
    pub broker_port_base: u16,
    /// Node ids `0 .. max_node_id` get a fixed port; a larger one gets a port chosen by
    /// the OS (kept while the process runs).
    #[serde(default = "default_max_node_id")]
    pub max_node_id: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `host:port` of the admin HTTP listener.
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Seed brokers, `host:port`.
    pub bootstrap_servers: Vec<String>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    /// This cluster's name in the replication tool's topic names (MirrorMaker 2's
    /// cluster alias: `orders` from here is `<alias>.orders` on the others). Default:
    /// the cluster's key in `clusters`.
    #[serde(default)]
    pub replication_alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM bundle of trusted CAs. Absent: the system trust store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Name sent as SNI and verified against the certificate. Default: the broker's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Disables certificate verification. Only for tests; logged as a warning at start.
    #[serde(default)]
    pub dangerous_disable_verification: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "OAUTHBEARER")]
    OAuthBearer,
}

impl SaslMechanism {
    pub fn name(&self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    #[serde(default)]
    pub username: Option<Secret>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// OAUTHBEARER token.
    #[serde(default)]
    pub token: Option<Secret>,
}

/// A credential: inline, or read from a file (a mounted Secret) or an environment
/// variable each time it is needed, so a rotated file is picked up without a restart.
/// Never printed: `Debug` and `Serialize` redact inline values.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    Inline(String),
    File { file: PathBuf },
    Env { env: String },
}

impl Secret {
    /// Reads the current value. Files are trimmed of one trailing newline (as `kubectl
    /// create secret --from-file` keeps it).
    pub fn resolve(&self) -> anyhow::Result<String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File { file } => {
                let mut s = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read secret file {}", file.display()))?;
                if s.ends_with('\n') {
                    s.pop();
                    if s.ends_with('\r') {
                        s.pop();
                    }
                }
                Ok(s)
            }
            Secret::Env { env } => {
                std::env::var(env).with_context(|| format!("environment variable {env} is not set"))
            }
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret(<redacted>)"),
            Secret::File { file } => write!(f, "Secret(file: {})", file.display()),
            Secret::Env { env } => write!(f, "Secret(env: {env})"),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Secret::Inline(_) => s.serialize_str("<redacted>"),
            Secret::File { file } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("file", file)?;
                m.end()
            }
            Secret::Env { env } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("env", env)?;
                m.end()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest frame accepted from a client, in bytes.
    pub max_frame_bytes: usize,
    /// Largest frame accepted from an upstream broker, in bytes. Separate because a
    /// consumer's `fetch.max.bytes` decides how large a Fetch response may be.
    pub max_response_frame_bytes: usize,
    /// Time allowed to open (and authenticate) an upstream connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A session with no traffic in either direction for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Requests a client may have outstanding on one connection. More pipelined
    /// requests wait (the client is not read) until answers free room.
    pub max_in_flight: usize,
    /// A client or broker that accepts no byte of a pending write for this long (a
    /// client that stopped reading its responses) has its session closed.
    #[serde(with = "humantime_serde")]
    pub write_stall_timeout: Duration,
    /// The oldest request in flight on a session unanswered for this long (a broker
    /// that stopped answering or trickles bytes) closes the session. A JoinGroup gets
    /// its own rebalance timeout (+30 s) if that is longer: the broker holds it until
    /// the group rebalances. Also how long the proxy's own requests (re-authentication,
    /// group leave, producer id) wait behind the client's.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// How often the active cluster's broker list is re-read in the background. This
    /// also re-checks reachability, so it bounds how long `/readyz` lags an outage or
    /// a recovery when no client traffic shows it first.
    #[serde(with = "humantime_serde")]
    pub metadata_refresh_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 100 * 1024 * 1024,
            max_response_frame_bytes: 256 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            max_in_flight: 1024,
            write_stall_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(360),
            metadata_refresh_interval: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Re-read the config this often even without file events (events can be lost,
    /// e.g. on some network file systems).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Quiet time after the last file event before the config is re-read.
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            poll_interval: Duration::from_secs(10),
            debounce: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchConfig {
    /// How long sessions on the old cluster may wait for their in-flight responses.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Give idempotent producers a fresh producer id on the new cluster and rewrite
    /// their batches, so they survive a switch (see `producer_identity`).
    pub remap_producer_ids: bool,
    /// How long the proxy remembers an idle client producer's mapping (Apache Kafka
    /// forgets idle producers after `producer.id.expiration.ms`, one day by default).
    #[serde(with = "humantime_serde")]
    pub producer_id_expiration: Duration,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            drain_timeout: Duration::from_secs(5),
            remap_producer_ids: true,
            producer_id_expiration: DEFAULT_PRODUCER_ID_EXPIRATION,
        }
    }
}

/// `replication:`: how topics and offsets of one cluster appear on the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    pub policy: ReplicationPolicy,
    /// Between the source alias and the topic name (`prefix` policy).
    pub separator: String,
    /// At a switch, move each consumer group's committed positions to the new cluster
    /// (only what this sidecar's client committed; never rewinds an active group).
    pub carry_consumer_positions: bool,
    /// How long a group's requests wait at most for its positions to be in place on
    /// the new cluster after a switch (then the client goes on without them).
    #[serde(with = "humantime_serde")]
    pub carry_timeout: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            policy: ReplicationPolicy::Prefix,
            separator: ".".into(),
            carry_consumer_positions: true,
            carry_timeout: Duration::from_secs(10),
        }
    }
}

/// How a topic's name and offsets on one cluster relate to its copy on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationPolicy {
    /// MirrorMaker 2's DefaultReplicationPolicy: `orders` of cluster `north` is
    /// `north.orders` elsewhere; offsets differ (translated by timestamp).
    Prefix,
    /// MirrorMaker 2's IdentityReplicationPolicy: same names, offsets differ.
    Identity,
    /// Confluent Cluster Linking mirror topics: same names, same offsets.
    SameOffsets,
}

fn default_listen_address() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn default_max_node_id() -> u16 {
    1000
}

impl ListenConfig {
    pub fn advertised_host(&self) -> String {
        self.advertised_host
            .clone()
            .unwrap_or_else(|| self.address.to_string())
    }

    /// The local port for a broker node id, if that node id has one.
    pub fn broker_port(&self, node_id: i32) -> Option<u16> {
        if node_id < 0 || node_id >= i32::from(self.max_node_id) {
            return None;
        }
        u16::try_from(i32::from(self.broker_port_base) + node_id).ok()
    }
}

impl Config {
    /// Parses YAML text. Errors carry the line and column and, for unknown or
    /// missing fields, the field name.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let cfg: Config = serde_norway::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(cfg)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let cfg = Config::parse(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        cfg.validate()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(cfg)
    }

    pub fn active(&self) -> &ClusterConfig {
        &self.clusters[&self.active_cluster]
    }

    /// Checks what serde cannot. Each error names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.clusters.is_empty() {
            bail!("clusters: at least one cluster is required");
        }
        if !self.clusters.contains_key(&self.active_cluster) {
            bail!(
                "active_cluster: '{}' is not one of the configured clusters ({})",
                self.active_cluster,
                self.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        self.validate_replication()?;
        let l = &self.listen;
        let last = u32::from(l.broker_port_base) + u32::from(l.max_node_id);
        if l.max_node_id == 0 {
            bail!("listen.max_node_id: must be at least 1");
        }
        if last > 65536 {
            bail!(
                "listen.broker_port_base: {} + max_node_id {} exceeds port 65535",
                l.broker_port_base,
                l.max_node_id
            );
        }
        if (u32::from(l.broker_port_base)..last).contains(&u32::from(l.bootstrap_port)) {
            bail!(
                "listen.bootstrap_port: {} falls inside the broker port range {}..{}",
                l.bootstrap_port,
                l.broker_port_base,
                last
            );
        }
        if self.limits.max_frame_bytes < 1024 {
            bail!("limits.max_frame_bytes: must be at least 1024");
        }
        if self.limits.max_response_frame_bytes < 1024 {
            bail!("limits.max_response_frame_bytes: must be at least 1024");
        }
        if self.limits.max_in_flight == 0 {
            bail!("limits.max_in_flight: must be at least 1");
        }
        if self.limits.write_stall_timeout < Duration::from_millis(100) {
            bail!("limits.write_stall_timeout: must be at least 100ms");
        }
        if self.limits.response_timeout < Duration::from_secs(1) {
            bail!("limits.response_timeout: must be at least 1s");
        }
        if self.limits.metadata_refresh_interval < Duration::from_millis(100) {
            bail!("limits.metadata_refresh_interval: must be at least 100ms");
        }
        if let Some(admin) = &self.admin {
            admin.address.parse::<std::net::SocketAddr>().map_err(|_| {
                anyhow::anyhow!("admin.address: '{}' is not ip:port", admin.address)
            })?;
        }
        for (name, c) in &self.clusters {
            c.validate(name)?;
        }
        if let Some(control) = &self.control {
            self.validate_control(control)?;
        }
        Ok(())
    }

    /// The replication alias of each cluster (its key unless `replication_alias` says).
    pub fn replication_aliases(&self) -> Vec<(String, String)> {
        self.clusters
            .iter()
            .map(|(name, c)| {
                let alias = c.replication_alias.clone().unwrap_or_else(|| name.clone());
                (name.clone(), alias)
            })
            .collect()
    }

    fn validate_replication(&self) -> anyhow::Result<()> {
        let r = &self.replication;
        if r.policy == ReplicationPolicy::Prefix && r.separator.is_empty() {
            bail!("replication.separator: must not be empty with policy prefix");
        }
        let mut seen = std::collections::BTreeSet::new();
        for (name, alias) in self.replication_aliases() {
            if alias.is_empty() {
                bail!("clusters.{name}.replication_alias: must not be empty");
            }
            if !seen.insert(alias.clone()) {
                bail!("clusters.{name}.replication_alias: '{alias}' is the alias of another cluster too");
            }
        }
        if r.carry_timeout > Duration::from_secs(60) {
            bail!("replication.carry_timeout: at most 60s (clients' requests wait for it)");
        }
        Ok(())
    }

    fn validate_control(&self, c: &ControlConfig) -> anyhow::Result<()> {
        for (field, t) in [("topic", &c.topic), ("fleet_topic", &c.fleet_topic)] {
            if t.is_empty()
                || t.len() > 249
                || !t
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
            {
                bail!("control.{field}: '{t}' is not a valid topic name");
            }
        }
        if c.topic == c.fleet_topic {
            bail!("control.fleet_topic: must differ from control.topic");
        }
        if c.poll_wait < Duration::from_millis(10) || c.poll_wait > Duration::from_secs(30) {
            bail!("control.poll_wait: must be between 10ms and 30s");
        }
        if c.report_interval < Duration::from_millis(100) {
            bail!("control.report_interval: must be at least 100ms");
        }
        if let Some(a) = &c.automatic {
            if a.priority.len() < 2 {
                bail!("control.automatic.priority: name at least two clusters");
            }
            for p in &a.priority {
                if !self.clusters.contains_key(p) {
                    bail!("control.automatic.priority: '{p}' is not a configured cluster");
                }
            }
            if a.arbiters.is_empty() {
                bail!("control.automatic.arbiters: list the arbiter ids (three, on independent sites)");
            }
            let n = a.arbiters.len();
            let q = a.quorum();
            if q <= n / 2 || q > n {
                bail!("control.automatic.quorum: {q} is not a majority of the {n} arbiters");
            }
            if a.probe_interval < Duration::from_millis(100) {
                bail!("control.automatic.probe_interval: must be at least 100ms");
            }
            if a.unhealthy_after < a.probe_interval {
                bail!("control.automatic.unhealthy_after: must be at least probe_interval");
            }
        }
        Ok(())
    }

    /// The config as YAML with inline secrets redacted (for `kafka-sidecar check`).
    pub fn to_redacted_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

impl ClusterConfig {
    fn validate(&self, name: &str) -> anyhow::Result<()> {
        if self.bootstrap_servers.is_empty() {
            bail!("clusters.{name}.bootstrap_servers: at least one host:port is required");
        }
        for (i, s) in self.bootstrap_servers.iter().enumerate() {
            split_host_port(s).map_err(|e| {
                anyhow::anyhow!("clusters.{name}.bootstrap_servers[{i}]: '{s}' {e}")
            })?;
        }
        if let Some(tls) = &self.tls {
            for (field, f) in [
                ("ca_file", &tls.ca_file),
                ("client_cert_file", &tls.client_cert_file),
                ("client_key_file", &tls.client_key_file),
            ] {
                if let Some(p) = f {
                    std::fs::metadata(p).map_err(|e| {
                        anyhow::anyhow!("clusters.{name}.tls.{field}: {}: {e}", p.display())
                    })?;
                }
            }
            if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                bail!("clusters.{name}.tls: client_cert_file and client_key_file go together");
            }
        }
        if let Some(sasl) = &self.sasl {
            let need: &[(&str, &Option<Secret>)] = match sasl.mechanism {
                SaslMechanism::OAuthBearer => &[("token", &sasl.token)],
                _ => &[("username", &sasl.username), ("password", &sasl.password)],
            };
            for (field, secret) in need {
                let secret = secret.as_ref().ok_or_else(|| {
                    anyhow::anyhow!(
                        "clusters.{name}.sasl.{field}: required for {}",
                        sasl.mechanism.name()
                    )
                })?;
                secret
                    .resolve()
                    .map_err(|e| anyhow::anyhow!("clusters.{name}.sasl.{field}: {e:#}"))?;
            }
        }
        Ok(())
    }
}

/// Splits `host:port` (IPv6 as `[::1]:9092`).
pub fn split_host_port(s: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = s.rsplit_once(':').ok_or("is not host:port")?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err("has an empty host");
    }
    let port: u16 = port.parse().map_err(|_| "has an invalid port")?;
    if port == 0 {
        return Err("has port 0");
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen: {address: 127.0.0.1, bootstrap_port: 19092, broker_port_base: 19100}
active_cluster: north
clusters:
  north: {bootstrap_servers: ["n1:9092", "[::1]:9093"]}
  west:
    bootstrap_servers: ["w1:9092"]
    sasl: {mechanism: PLAIN, username: alice, password: hunter2}
"#;

    #[test]
    fn parses_and_validates_good_config() {
        let c = Config::parse(GOOD).unwrap();
        c.validate().unwrap();
        assert_eq!(c.active_cluster, "north");
        assert_eq!(c.listen.broker_port(3), Some(19103));
        assert_eq!(c.listen.broker_port(-1), None);
        assert_eq!(c.listen.broker_port(1000), None);
        assert_eq!(c.limits.max_frame_bytes, 100 * 1024 * 1024);
    }

    #[test]
    fn unknown_active_cluster_names_the_field() {
        let text = GOOD.replace("active_cluster: north", "active_cluster: south");
        let err = Config::parse(&text).unwrap().validate().unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("active_cluster") && msg.contains("south"),
            "{msg}"
        );
    }

    #[test]
    fn bad_bootstrap_names_the_field() {
        let text = GOOD.replace("w1:9092", "w1");
        let err = Config::parse(&text).unwrap().validate().unwrap_err();
        assert!(
            format!("{err:#}").contains("clusters.west.bootstrap_servers[0]"),
            "{err:#}"
        );
    }

    #[test]
    fn unknown_field_is_refused() {
        let text = GOOD.replace("active_cluster", "active_clustr");
        let err = Config::parse(&text).unwrap_err();
        assert!(format!("{err:#}").contains("active_clustr"), "{err:#}");
    }

    #[test]
    fn missing_secret_file_is_refused() {
        let text = GOOD.replace("password: hunter2", "password: {file: /nonexistent/pw}");
        let err = Config::parse(&text).unwrap().validate().unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("clusters.west.sasl.password"), "{msg}");
    }

    #[test]
    fn redacted_yaml_hides_inline_secrets() {
        let c = Config::parse(GOOD).unwrap();
        let y = c.to_redacted_yaml();
        assert!(!y.contains("hunter2"), "{y}");
        assert!(y.contains("<redacted>"), "{y}");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn bootstrap_port_inside_broker_range_is_refused() {
        let text = GOOD.replace("bootstrap_port: 19092", "bootstrap_port: 19150");
        let err = Config::parse(&text).unwrap().validate().unwrap_err();
        assert!(
            format!("{err:#}").contains("listen.bootstrap_port"),
            "{err:#}"
        );
    }

    #[test]
    fn control_section_defaults_and_validation() {
        let base = format!("{GOOD}control: {{}}\n");
        let c = Config::parse(&base).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.control.as_ref().unwrap().topic,
            "kafka-sidecar.control.internal"
        );
        let auto = |extra: &str| {
            format!("{GOOD}control:\n  automatic: {{priority: [north, west], arbiters: [a1, a2, a3]{extra}}}\n")
        };
        let c = Config::parse(&auto("")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.control.unwrap().automatic.unwrap().quorum(), 2);
        for (extra, field) in [
            (", quorum: 1", "control.automatic.quorum"),
            (", quorum: 4", "control.automatic.quorum"),
            (", priority: [north, south]", "control.automatic.priority"),
        ] {
            let text = auto(extra).replace(
                "priority: [north, west], arbiters: [a1, a2, a3], priority",
                "arbiters: [a1, a2, a3], priority",
            );
            let err = Config::parse(&text).unwrap().validate().unwrap_err();
            assert!(format!("{err:#}").contains(field), "{extra}: {err:#}");
        }
        let text = format!("{GOOD}control: {{topic: 'bad topic'}}\n");
        let err = Config::parse(&text).unwrap().validate().unwrap_err();
        assert!(format!("{err:#}").contains("control.topic"), "{err:#}");
    }

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("a:1"), Ok(("a", 1)));
        assert_eq!(split_host_port("[::1]:9092"), Ok(("::1", 9092)));
        assert!(split_host_port("a").is_err());
        assert!(split_host_port(":9").is_err());
        assert!(split_host_port("a:x").is_err());
    }
}
