//! The running proxy: shared state, start-up, config application and shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use kafka_protocol::protocol::StrBytes;
use serde_json::json;
use tokio::sync::watch;

use crate::config::Config;
use crate::control::follower::ControlState;
use crate::intercept::Features;
use crate::listeners::Listeners;
use crate::session::Runtime;
use crate::switch::Switch;

/// State every session and listener shares.
pub struct Shared {
    me: Weak<Shared>,
    config: watch::Sender<Arc<Config>>,
    pub switch: Switch,
    pub features: Arc<Features>,
    pub listeners: Listeners,
    advertised_host: StrBytes,
    shutdown: watch::Sender<bool>,
    pub reload_status: parking_lot::Mutex<Option<crate::config_watch::ReloadStatusHandle>>,
    /// The fleet control plane (with `control:` in the config).
    pub control: Option<Arc<ControlState>>,
    /// Config reloads and followed decisions apply one at a time.
    apply_lock: parking_lot::Mutex<()>,
}

impl Shared {
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The local address to advertise for a node id (opening its listener if needed).
    /// A node without a port is sent to the bootstrap port: never to the real broker.
    pub fn local_endpoint(&self, node_id: i32) -> (StrBytes, i32) {
        let listen = &self.config.borrow().listen.clone();
        let port = self
            .listeners
            .ensure_broker(&self.me, node_id, listen.broker_port(node_id))
            .unwrap_or(listen.bootstrap_port);
        (self.advertised_host.clone(), i32::from(port))
    }

    /// Applies a new validated config. Listener addresses are fixed at start.
    pub fn apply(&self, cfg: Arc<Config>) -> anyhow::Result<()> {
        let _one_at_a_time = self.apply_lock.lock();
        let old = self.config();
        if old.listen != cfg.listen {
            tracing::warn!("listen settings changed; they take effect only after a restart");
        }
        if old.admin != cfg.admin {
            tracing::warn!("admin settings changed; they take effect only after a restart");
        }
        if old.control.is_some() != cfg.control.is_some()
            || old.control.as_ref().map(|c| (&c.topic, c.poll_wait))
                != cfg.control.as_ref().map(|c| (&c.topic, c.poll_wait))
        {
            tracing::warn!("control settings changed; they take effect only after a restart");
        }
        if let Some(d) = self.followed_decision(&cfg) {
            if old.active_cluster != cfg.active_cluster {
                tracing::warn!(
                    file = %cfg.active_cluster, decision_epoch = d.epoch, decision = %d.active,
                    "active_cluster changed in the file, but a fleet decision is in force and takes precedence; use `kafka-sidecar failover --to {}` to move the fleet",
                    cfg.active_cluster
                );
            }
        }
        // Before the switch: a carry it starts uses the replication settings of this
        // config, not the previous one's (an edit may change both at once).
        self.features.positions.configure(&cfg);
        self.apply_effective(&cfg)?;
        let producers = &self.features.producers;
        producers.set_enabled(cfg.switch.remap_producer_ids);
        producers.set_expiration(cfg.switch.producer_id_expiration);
        self.config.send_replace(cfg);
        Ok(())
    }

    /// The decision the fleet follows, if there is one this config can apply. With
    /// `control:` configured it takes precedence over `active_cluster`, which is only
    /// the default before any decision exists.
    fn followed_decision(&self, cfg: &Config) -> Option<crate::control::Decision> {
        let d = self.control.as_ref()?.decision()?;
        if !cfg.clusters.contains_key(&d.active) {
            tracing::error!(epoch = d.epoch, active = %d.active, "the fleet decision names a cluster this config does not have; not followed");
            return None;
        }
        Some(d)
    }

    /// Switches to the effective active cluster of `cfg` (file default or decision).
    fn apply_effective(&self, cfg: &Config) -> anyhow::Result<()> {
        let decision = self.followed_decision(cfg);
        let before = self.switch.current();
        let switched = match &decision {
            Some(d) if d.active != cfg.active_cluster => {
                let mut effective = cfg.clone();
                effective.active_cluster = d.active.clone();
                self.switch.apply(&effective)?
            }
            _ => self.switch.apply(cfg)?,
        };
        if switched {
            self.features.producers.switched();
            let now = self.switch.current();
            self.features.positions.switched(
                before.cluster.name(),
                now.cluster.clone(),
                now.generation,
                cfg.limits.connect_timeout,
            );
            self.spawn_refresh();
        }
        if let (Some(control), Some(d)) = (&self.control, decision) {
            control.note_applied(d.epoch);
        }
        Ok(())
    }

    /// Applies a newly seen fleet decision (called by the control followers).
    pub fn follow_decision(&self, d: &crate::control::Decision) {
        let _one_at_a_time = self.apply_lock.lock();
        tracing::info!(
            epoch = d.epoch, active = %d.active, origin = d.origin.label(), writer = %d.writer,
            reason = %d.reason, "following fleet decision"
        );
        match self.apply_effective(&self.config()) {
            Ok(()) => {
                metrics::gauge!(crate::admin::names::CONTROL_DECISION_EPOCH).set(d.epoch as f64);
                metrics::counter!(crate::admin::names::CONTROL_DECISIONS_APPLIED_TOTAL, "origin" => d.origin.label()).increment(1);
            }
            Err(e) => tracing::error!(epoch = d.epoch, "cannot apply the fleet decision: {e:#}"),
        }
    }

    /// This sidecar's report for the fleet topic.
    pub fn fleet_report(&self) -> crate::control::Report {
        let control = self.control.as_ref().expect("reports only with control");
        let cfg = self.config();
        crate::control::Report {
            id: control.id.clone(),
            host: crate::control::host_name(),
            pid: std::process::id(),
            cluster: self.switch.current().cluster.name().to_string(),
            epoch: control.applied_epoch(),
            at_ms: crate::control::now_ms(),
            interval_ms: cfg
                .control
                .as_ref()
                .map_or(0, |c| c.report_interval.as_millis() as u64),
            reachable: control.reachable(),
        }
    }

    /// Refreshes the active cluster's broker list now (e.g. right after a switch) so
    /// that broker ports route to the right brokers before clients ask.
    fn spawn_refresh(&self) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move { me.refresh_active().await });
    }

    async fn refresh_active(&self) {
        let act = self.switch.current();
        let timeout = self.config().limits.connect_timeout;
        match act.cluster.refresh(timeout).await {
            Ok(r) => {
                for id in r.brokers {
                    self.local_endpoint(id);
                }
                let ids = &self.features.topic_ids;
                for (name, id) in r.topics {
                    ids.learn(act.cluster.name(), &name, id);
                }
            }
            Err(e) => {
                tracing::warn!(cluster = %act.cluster.name(), "cannot refresh broker list: {e:#}")
            }
        }
    }

    /// Ready when a client would be served: the active cluster answered recently.
    pub fn readiness(&self) -> (bool, String) {
        let act = self.switch.current();
        if act.cluster.is_reachable() {
            (
                true,
                format!("active cluster '{}' reachable", act.cluster.name()),
            )
        } else {
            (
                false,
                format!("active cluster '{}' is not reachable", act.cluster.name()),
            )
        }
    }

    /// The operator's view (served as JSON on the admin port and by `status`).
    pub fn status(&self) -> serde_json::Value {
        let act = self.switch.current();
        let cfg = self.config();
        let clusters: serde_json::Map<String, serde_json::Value> = self
            .switch
            .clusters()
            .iter()
            .map(|c| {
                (
                    c.name().to_string(),
                    json!({
                        "reachable": c.is_reachable(),
                        "sessions": c.metrics.session_count(),
                        "brokers": c.nodes().into_iter().map(|(id, addr)| json!({"node_id": id, "upstream": addr})).collect::<Vec<_>>(),
                    }),
                )
            })
            .collect();
        let host = self.advertised_host.to_string();
        let listeners: Vec<_> = std::iter::once(json!({"listener": "bootstrap", "address": format!("{host}:{}", cfg.listen.bootstrap_port)}))
            .chain(self.listeners.brokers().into_iter().map(|(node, port)| {
                json!({"listener": "broker", "node_id": node, "address": format!("{host}:{port}"), "upstream": act.cluster.nodes().into_iter().find(|(n, _)| *n == node).map(|(_, a)| a)})
            }))
            .collect();
        let reload = self
            .reload_status
            .lock()
            .as_ref()
            .map(|h| h.to_json())
            .unwrap_or(serde_json::Value::Null);
        let control = self.control.as_ref().map(|c| {
            let mut v = c.to_json();
            v["applied_epoch"] = json!(c.applied_epoch());
            v["file_active_cluster"] = json!(cfg.active_cluster);
            v
        });
        json!({
            "active_cluster": act.cluster.name(),
            "control": control,
            "active_since": humantime::format_rfc3339_millis(act.since).to_string(),
            "generation": act.generation,
            "switches": self.switch.switch_count(),
            "last_switch": self.switch.last_switch(),
            "last_reload": reload,
            "ready": self.readiness().0,
            "clusters": clusters,
            "listeners": listeners,
        })
    }
}

impl Runtime for Shared {
    fn config(&self) -> Arc<Config> {
        Shared::config(self)
    }
    fn switch(&self) -> &Switch {
        &self.switch
    }
    fn features(&self) -> &Arc<Features> {
        &self.features
    }
    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        Shared::shutdown_signal(self)
    }
    fn local_endpoint(&self, node_id: i32) -> (StrBytes, i32) {
        Shared::local_endpoint(self, node_id)
    }
}

/// The control plane's view of this sidecar (it does not depend on the proxy).
impl crate::control::follower::FleetMember for Shared {
    fn control_state(&self) -> Option<Arc<ControlState>> {
        self.control.clone()
    }
    fn clusters(&self) -> Vec<Arc<crate::cluster::Cluster>> {
        self.switch.clusters()
    }
    fn follow_decision(&self, d: &crate::control::Decision) {
        Shared::follow_decision(self, d)
    }
    fn fleet_report(&self) -> crate::control::Report {
        Shared::fleet_report(self)
    }
    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        Shared::shutdown_signal(self)
    }
}

/// A started proxy. Dropping it does not stop it; call [`Proxy::shutdown`].
pub struct Proxy {
    pub shared: Arc<Shared>,
    pub bootstrap: SocketAddr,
    pub admin: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Starts listeners, the background refresh of the active cluster, the admin
    /// endpoint (if configured) and, with `watch_path`, the config file watcher.
    pub async fn start(cfg: Config, watch_path: Option<PathBuf>) -> anyhow::Result<Proxy> {
        cfg.validate()?;
        let cfg = Arc::new(cfg);
        // The recorder must exist before any metric handle is created (the clusters'
        // hot-path handles are made in `Switch::new`): a handle taken earlier is a
        // no-op forever.
        let prometheus = match &cfg.admin {
            Some(_) => {
                let handle = crate::admin::install_recorder()?;
                crate::admin::describe_metrics();
                Some(handle)
            }
            None => None,
        };
        let switch = Switch::new(&cfg)?;
        let (config_tx, _) = watch::channel(cfg.clone());
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            config: config_tx,
            switch,
            features: Arc::new({
                let f = Features::default();
                f.positions.configure(&cfg);
                f
            }),
            listeners: Listeners::new(cfg.listen.address),
            advertised_host: StrBytes::from_string(cfg.listen.advertised_host()),
            shutdown,
            reload_status: parking_lot::Mutex::new(None),
            control: cfg.control.as_ref().map(|c| {
                Arc::new(ControlState::new(
                    c.id.clone().unwrap_or_else(crate::control::process_id),
                ))
            }),
            apply_lock: parking_lot::Mutex::new(()),
        });
        let mut tasks = vec![];
        if let Some(c) = &cfg.control {
            tasks.extend(
                crate::control::follower::spawn(&shared, c, cfg.limits.connect_timeout).await,
            );
        }
        let bootstrap = shared
            .listeners
            .bind_bootstrap(&shared, cfg.listen.bootstrap_port)
            .await?;

        // Keep the active cluster's broker list (and readiness) fresh.
        {
            let s = shared.clone();
            let mut act_rx = s.switch.subscribe();
            let mut shutdown = s.shutdown_signal();
            tasks.push(tokio::spawn(async move {
                loop {
                    s.refresh_active().await;
                    tokio::select! {
                        _ = tokio::time::sleep(s.config().limits.metadata_refresh_interval) => {}
                        _ = act_rx.changed() => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }));
        }

        if let Some(path) = watch_path {
            let (tx, mut rx) = watch::channel(cfg.clone());
            let (status, handle) = crate::config_watch::spawn(path, cfg.clone(), tx)?;
            *shared.reload_status.lock() = Some(status);
            tasks.push(handle);
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let next = rx.borrow_and_update().clone();
                    if let Err(e) = s.apply(next) {
                        tracing::error!("config accepted but could not be applied: {e:#}; keeping the previous settings");
                    }
                }
            }));
        }

        let admin = match (&cfg.admin, prometheus) {
            (Some(a), Some(handle)) => {
                let l = tokio::net::TcpListener::bind(&a.address)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("cannot listen on {} (admin.address): {e}", a.address)
                    })?;
                let local = l.local_addr()?;
                let s1 = shared.clone();
                let s2 = shared.clone();
                let state = Arc::new(crate::admin::AdminState {
                    prometheus: handle,
                    status: Arc::new(move || s1.status()),
                    ready: Arc::new(move || s2.readiness()),
                });
                let mut shutdown = shared.shutdown_signal();
                tasks.push(tokio::spawn(crate::admin::serve(l, state, async move {
                    let _ = shutdown.changed().await;
                })));
                Some(local)
            }
            _ => None,
        };
        Ok(Proxy {
            shared,
            bootstrap,
            admin,
            tasks,
        })
    }

    /// Stops accepting, lets sessions drain (bounded) and stops background tasks.
    pub async fn shutdown(self) {
        let _ = self.shared.shutdown.send(true);
        let drain = self.shared.config().switch.drain_timeout;
        let deadline = tokio::time::Instant::now() + drain + Duration::from_millis(200);
        while self
            .shared
            .switch
            .clusters()
            .iter()
            .any(|c| c.metrics.session_count() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in self.tasks {
            t.abort();
        }
    }
}
