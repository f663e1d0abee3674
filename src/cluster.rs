//! One upstream cluster as the proxy knows it at run time: its current config, the
//! broker addresses learned from its responses, whether it is reachable, and the
//! metric handles of its hot path (registered once, so the relay never allocates
//! label sets per request).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use metrics::{Counter, Gauge, Histogram, SharedString};
use parking_lot::{Mutex, RwLock};

use crate::admin::names;
use crate::api_versions::Offered;
use crate::config::{split_host_port, ClusterConfig};
use crate::connection::{Broker, Connection};
use crate::upstream::Endpoint;

/// Number of api keys with their own metric handles; larger (vendor) keys share "other".
const API_SLOTS: usize = 96;

pub struct Cluster {
    name: String,
    name_label: SharedString,
    config: RwLock<Arc<ClusterConfig>>,
    tls: RwLock<Option<Arc<rustls::ClientConfig>>>,
    max_frame: std::sync::atomic::AtomicUsize,
    /// node id -> upstream "host:port", as the cluster last described it.
    nodes: RwLock<HashMap<i32, String>>,
    reachable: AtomicBool,
    /// Unix millis of the last successful metadata refresh (0: never).
    last_refresh_ms: AtomicI64,
    /// One metadata refresh at a time; sessions that need one wait for it.
    refreshing: tokio::sync::Mutex<()>,
    /// The versions the cluster offered at the last refresh, for the proxy's own
    /// requests on sessions (brokers of one cluster offer the same).
    offered: RwLock<Option<Arc<Offered>>>,
    pub metrics: ClusterMetrics,
}

pub struct ClusterMetrics {
    pub bytes_to_upstream: Counter,
    pub bytes_to_client: Counter,
    /// Of `bytes_to_client`, those spliced ([`crate::splice`]).
    pub bytes_spliced_to_client: Counter,
    pub in_flight: Gauge,
    pub sessions: Gauge,
    reachable: Gauge,
    sessions_open: AtomicI64,
    per_api: Mutex<Vec<Option<Arc<ApiMetrics>>>>,
}

pub struct ApiMetrics {
    pub requests: Counter,
    pub responses: Counter,
    pub latency: Histogram,
}

impl ClusterMetrics {
    fn new(cluster: &SharedString) -> Self {
        let c = cluster.clone();
        ClusterMetrics {
            bytes_to_upstream: metrics::counter!(names::BYTES_TOTAL, "cluster" => c.clone(), "direction" => "client_to_upstream"),
            bytes_to_client: metrics::counter!(names::BYTES_TOTAL, "cluster" => c.clone(), "direction" => "upstream_to_client"),
            bytes_spliced_to_client: metrics::counter!(names::BYTES_SPLICED_TOTAL, "cluster" => c.clone(), "direction" => "upstream_to_client"),
            in_flight: metrics::gauge!(names::REQUESTS_IN_FLIGHT, "cluster" => c.clone()),
            sessions: metrics::gauge!(names::CLIENT_CONNECTIONS_OPEN, "cluster" => c.clone()),
            reachable: metrics::gauge!(names::UPSTREAM_REACHABLE, "cluster" => c.clone()),
            sessions_open: AtomicI64::new(0),
            per_api: Mutex::new(vec![None; API_SLOTS + 1]),
        }
    }

    pub fn session_opened(&self) {
        self.sessions_open.fetch_add(1, Ordering::Relaxed);
        self.sessions.increment(1.0);
    }

    pub fn session_closed(&self) {
        self.sessions_open.fetch_sub(1, Ordering::Relaxed);
        self.sessions.decrement(1.0);
    }

    pub fn session_count(&self) -> i64 {
        self.sessions_open.load(Ordering::Relaxed)
    }

    /// Handles for one api key; created on first use, then shared by every session.
    pub fn api(&self, cluster: &SharedString, api_key: i16) -> Arc<ApiMetrics> {
        let slot = usize::try_from(api_key)
            .ok()
            .filter(|&k| k < API_SLOTS)
            .unwrap_or(API_SLOTS);
        let mut per_api = self.per_api.lock();
        per_api[slot]
            .get_or_insert_with(|| {
                let api: SharedString = match ApiKey::try_from(api_key) {
                    Ok(k) if slot < API_SLOTS => SharedString::from(format!("{k:?}")),
                    _ => SharedString::const_str("Other"),
                };
                Arc::new(ApiMetrics {
                    requests: metrics::counter!(names::REQUESTS_TOTAL, "cluster" => cluster.clone(), "api" => api.clone()),
                    responses: metrics::counter!(names::RESPONSES_TOTAL, "cluster" => cluster.clone(), "api" => api.clone()),
                    latency: metrics::histogram!(names::REQUEST_DURATION_SECONDS, "cluster" => cluster.clone(), "api" => api),
                })
            })
            .clone()
    }
}

impl Cluster {
    pub fn new(
        name: &str,
        config: ClusterConfig,
        max_frame: usize,
    ) -> anyhow::Result<Arc<Cluster>> {
        let name_label = SharedString::from(name.to_string());
        let c = Cluster {
            name: name.to_string(),
            metrics: ClusterMetrics::new(&name_label),
            name_label,
            config: RwLock::new(Arc::new(ClusterConfig {
                bootstrap_servers: vec![],
                tls: None,
                sasl: None,
                replication_alias: None,
            })),
            tls: RwLock::new(None),
            max_frame: max_frame.into(),
            nodes: RwLock::new(HashMap::new()),
            reachable: AtomicBool::new(false),
            last_refresh_ms: AtomicI64::new(0),
            refreshing: tokio::sync::Mutex::new(()),
            offered: RwLock::new(None),
        };
        c.update(config, max_frame)?;
        Ok(Arc::new(c))
    }

    /// Applies a changed cluster config in place: new connections use it, live
    /// sessions are not disturbed (a rotated password needs no reconnect).
    pub fn update(&self, config: ClusterConfig, max_frame: usize) -> anyhow::Result<()> {
        let tls = match &config.tls {
            Some(t) => {
                crate::tls::warn_if_insecure(&self.name, t);
                Some(
                    crate::tls::client_config(t)
                        .map_err(|e| anyhow::anyhow!("clusters.{}.tls: {e:#}", self.name))?,
                )
            }
            None => None,
        };
        *self.tls.write() = tls;
        *self.config.write() = Arc::new(config);
        self.max_frame.store(max_frame, Ordering::Relaxed);
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn name_label(&self) -> SharedString {
        self.name_label.clone()
    }

    pub fn config(&self) -> Arc<ClusterConfig> {
        self.config.read().clone()
    }

    pub fn tls_client_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.read().clone()
    }

    /// The versions the cluster offered at its last refresh, if it had one.
    pub fn offered(&self) -> Option<Arc<Offered>> {
        self.offered.read().clone()
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame.load(Ordering::Relaxed)
    }

    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Records the outcome of a connection attempt or refresh; logs only a change.
    pub fn set_reachable(&self, ok: bool) {
        // Set every time (an atomic store), so that racing callers cannot leave the
        // gauge disagreeing with the flag for longer than until the next call.
        self.metrics.reachable.set(if ok { 1.0 } else { 0.0 });
        if self.reachable.swap(ok, Ordering::Relaxed) == ok {
            return;
        }
        if ok {
            tracing::info!(cluster = %self.name, "cluster reachable");
        } else {
            tracing::warn!(cluster = %self.name, "cluster unreachable");
        }
    }

    pub fn last_refresh_ms(&self) -> i64 {
        self.last_refresh_ms.load(Ordering::Relaxed)
    }

    pub fn learn_node(&self, node_id: i32, host: &str, port: i32) {
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let known = self.nodes.read().get(&node_id) == Some(&addr);
        if !known {
            tracing::debug!(cluster = %self.name, node_id, %addr, "learned broker address");
            self.nodes.write().insert(node_id, addr);
        }
    }

    pub fn nodes(&self) -> Vec<(i32, String)> {
        let mut v: Vec<_> = self
            .nodes
            .read()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        v.sort();
        v
    }

    /// Where a connection for `node` should go. A node this cluster has is reached
    /// directly, and only directly: if it is down, the client sees that, as it would
    /// without the proxy. A node id this cluster does not have (a client's cache from
    /// before a switch) goes to any bootstrap server, which answers with a retriable
    /// error, and the client refreshes its metadata instead of hanging.
    pub fn candidates(&self, node: Option<i32>) -> Vec<String> {
        if let Some(addr) = node.and_then(|n| self.nodes.read().get(&n).cloned()) {
            return vec![addr];
        }
        let cfg = self.config();
        let n = cfg.bootstrap_servers.len();
        // Rotate so that load spreads and a dead first seed costs only some connections a timeout.
        let start = if n > 0 { rand::random_range(0..n) } else { 0 };
        let mut out: Vec<String> = (0..n)
            .map(|i| cfg.bootstrap_servers[(start + i) % n].clone())
            .collect();
        // Known brokers last: the bootstrap list may be stale.
        for (_, addr) in self.nodes() {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        out
    }

    /// Asks the cluster for its brokers over a connection of our own, so broker
    /// listeners route correctly before any client asked (e.g. right after a switch).
    /// Makes sure the address of `node` is known, refreshing the broker list if it is
    /// not (right after a switch, clients reconnect to broker ports before the new
    /// cluster's brokers are known; guessing a broker would pin the client to the
    /// wrong one). False if the cluster has no such node.
    pub async fn ensure_node(&self, node: i32, timeout: std::time::Duration) -> bool {
        if self.nodes.read().contains_key(&node) {
            return true;
        }
        let started = self.last_refresh_ms();
        let _guard = self.refreshing.lock().await;
        // Someone else refreshed while we waited: no need to ask again.
        if self.nodes.read().contains_key(&node) || self.last_refresh_ms() != started {
            return self.nodes.read().contains_key(&node);
        }
        if let Err(e) = self.refresh_locked(timeout, false).await {
            tracing::warn!(cluster = %self.name, node, "cannot refresh broker list: {e:#}");
        }
        self.nodes.read().contains_key(&node)
    }

    /// A connection of the proxy's own to `node` (any broker when None), with the
    /// versions last learned from this cluster (asked again if none are known yet).
    pub async fn open_broker(
        &self,
        node: Option<i32>,
        timeout: std::time::Duration,
    ) -> Result<Broker<Connection<crate::upstream::UpstreamStream>>, crate::upstream::ConnectError>
    {
        let conn = crate::upstream::connect(self, &self.candidates(node), timeout).await?;
        Ok(Broker::with_offered(
            Connection::new(conn.stream, "kafka-sidecar", self.max_frame()),
            self.offered(),
        ))
    }

    /// Asks the cluster for its brokers and every topic's id (the topic ids clients
    /// see are mapped from these before any client asks, e.g. right after a switch).
    pub async fn refresh(&self, timeout: std::time::Duration) -> anyhow::Result<Refreshed> {
        let _guard = self.refreshing.lock().await;
        self.refresh_locked(timeout, true).await
    }

    async fn refresh_locked(
        &self,
        timeout: std::time::Duration,
        topics: bool,
    ) -> anyhow::Result<Refreshed> {
        let result = tokio::time::timeout(timeout * 2, self.refresh_inner(timeout, topics)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("metadata refresh timed out")),
        };
        match &result {
            Ok(_) => {
                self.set_reachable(true);
                self.last_refresh_ms.store(now_ms(), Ordering::Relaxed);
            }
            Err(_) => self.set_reachable(false),
        }
        result
    }

    async fn refresh_inner(
        &self,
        timeout: std::time::Duration,
        topics: bool,
    ) -> anyhow::Result<Refreshed> {
        // Versions asked afresh: a refresh is where a broker upgrade is noticed.
        let mut broker = Broker::new(self.open_broker(None, timeout).await?.into_exchange());
        broker.offered().await?;
        *self.offered.write() = broker.known_offered();
        // v12: the newest that names topics the same way everywhere. No topics (an
        // empty list) when only brokers are wanted; all of them (null) otherwise.
        let version = broker.version(ApiKey::Metadata, 12).await?;
        let all = topics || version == 0;
        let req = MetadataRequest::default()
            .with_topics((!all).then(Vec::new))
            .with_allow_auto_topic_creation(false);
        let md: MetadataResponse = broker.call(ApiKey::Metadata, version, &req).await?;
        let mut out = Refreshed::default();
        for b in &md.brokers {
            self.learn_node(b.node_id.0, &b.host, b.port);
            out.brokers.push(b.node_id.0);
        }
        out.topics = md
            .topics
            .iter()
            .filter(|t| t.error_code == 0 && !t.topic_id.is_nil())
            .filter_map(|t| Some((t.name.as_ref()?.to_string(), t.topic_id)))
            .collect();
        Ok(out)
    }
}

/// What a metadata refresh learned.
#[derive(Debug, Default)]
pub struct Refreshed {
    pub brokers: Vec<i32>,
    /// (name, the cluster's topic id) of every topic it has (with `topics`).
    pub topics: Vec<(String, uuid::Uuid)>,
}

impl Endpoint for Cluster {
    fn name(&self) -> &str {
        &self.name
    }
    fn name_label(&self) -> SharedString {
        self.name_label.clone()
    }
    fn config(&self) -> Arc<ClusterConfig> {
        self.config.read().clone()
    }
    fn tls_client_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.read().clone()
    }
    fn max_frame(&self) -> usize {
        self.max_frame.load(Ordering::Relaxed)
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Host and port of a `host:port` string, for logs and status.
pub fn parse_addr(addr: &str) -> Option<(String, u16)> {
    split_host_port(addr).ok().map(|(h, p)| (h.to_string(), p))
}
