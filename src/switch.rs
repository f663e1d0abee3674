//! The failover switch: which cluster is active, and moving every client to another.
//!
//! Each activation of a cluster is a *generation*. A session is bound for its whole
//! life to the generation that was current when it connected. When the active
//! cluster changes, the generation moves on: new connections go to the new cluster at
//! once, and each older session stops reading requests, waits up to
//! `switch.drain_timeout` for its in-flight responses, then closes, so its client
//! reconnects to the same local port and lands on the new cluster. A switch back in
//! the middle of a switch is just one more generation: no session can ever serve two
//! clusters, so none ends up on a mix.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::config::Config;

/// One activation of a cluster.
pub struct Activation {
    pub generation: u64,
    pub cluster: Arc<Cluster>,
    pub since: SystemTime,
    /// When the change that led here was applied (for the switch duration).
    pub applied_at: Instant,
    /// Set by the first response the new cluster serves to a client.
    first_served: AtomicBool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SwitchRecord {
    pub from: String,
    pub to: String,
    pub at: String,
    /// Change applied → first response from the new cluster relayed to a client.
    pub duration_ms: Option<f64>,
}

pub struct Switch {
    clusters: Mutex<BTreeMap<String, Arc<Cluster>>>,
    current: watch::Sender<Arc<Activation>>,
    last: Mutex<Option<SwitchRecord>>,
    switches: std::sync::atomic::AtomicU64,
}

impl Switch {
    pub fn new(cfg: &Config) -> anyhow::Result<Switch> {
        let mut clusters = BTreeMap::new();
        for (name, c) in &cfg.clusters {
            clusters.insert(
                name.clone(),
                Cluster::new(name, c.clone(), cfg.limits.max_frame_bytes)?,
            );
        }
        let active = clusters[&cfg.active_cluster].clone();
        set_active_gauges(&clusters, &cfg.active_cluster);
        let (current, _) = watch::channel(Arc::new(Activation {
            generation: 0,
            cluster: active,
            since: SystemTime::now(),
            applied_at: Instant::now(),
            first_served: AtomicBool::new(true),
        }));
        Ok(Switch {
            clusters: Mutex::new(clusters),
            current,
            last: Mutex::new(None),
            switches: 0.into(),
        })
    }

    pub fn current(&self) -> Arc<Activation> {
        self.current.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Activation>> {
        self.current.subscribe()
    }

    pub fn clusters(&self) -> Vec<Arc<Cluster>> {
        self.clusters.lock().values().cloned().collect()
    }

    pub fn last_switch(&self) -> Option<SwitchRecord> {
        self.last.lock().clone()
    }

    pub fn switch_count(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }

    /// Applies a validated config: updates cluster settings in place and, if the
    /// active cluster changed, starts a new generation. Returns true on a switch.
    pub fn apply(&self, cfg: &Config) -> anyhow::Result<bool> {
        let mut clusters = self.clusters.lock();
        // Build everything first so that a failure changes nothing.
        let mut fresh = BTreeMap::new();
        for (name, c) in &cfg.clusters {
            match clusters.get(name) {
                Some(existing) => {
                    if *existing.config() != *c {
                        existing.update(c.clone(), cfg.limits.max_frame_bytes)?;
                        tracing::info!(cluster = %name, "cluster settings updated; live sessions keep running");
                    }
                    fresh.insert(name.clone(), existing.clone());
                }
                None => {
                    fresh.insert(
                        name.clone(),
                        Cluster::new(name, c.clone(), cfg.limits.max_frame_bytes)?,
                    );
                }
            }
        }
        *clusters = fresh;
        let cur = self.current();
        if cur.cluster.name() == cfg.active_cluster {
            return Ok(false);
        }
        let next = clusters[&cfg.active_cluster].clone();
        set_active_gauges(&clusters, &cfg.active_cluster);
        drop(clusters);
        let from = cur.cluster.name().to_string();
        let to = next.name().to_string();
        tracing::info!(%from, %to, generation = cur.generation + 1, "switching active cluster: new connections go to '{to}', sessions on '{from}' drain and close");
        metrics::counter!(crate::admin::names::SWITCHES_TOTAL, "from" => from.clone(), "to" => to.clone()).increment(1);
        self.switches.fetch_add(1, Ordering::Relaxed);
        *self.last.lock() = Some(SwitchRecord {
            from,
            to,
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            duration_ms: None,
        });
        self.current.send_replace(Arc::new(Activation {
            generation: cur.generation + 1,
            cluster: next,
            since: SystemTime::now(),
            applied_at: Instant::now(),
            first_served: AtomicBool::new(false),
        }));
        Ok(true)
    }

    /// Called when a session of `act` relays a response to its client: the first one
    /// after a switch completes the switch's timing.
    pub fn note_served(&self, act: &Activation) {
        if act.first_served.load(Ordering::Relaxed)
            || act.first_served.swap(true, Ordering::Relaxed)
        {
            return;
        }
        let took = act.applied_at.elapsed();
        metrics::gauge!(crate::admin::names::SWITCH_DURATION_SECONDS).set(took.as_secs_f64());
        if let Some(rec) = self.last.lock().as_mut() {
            rec.duration_ms = Some(took.as_secs_f64() * 1000.0);
        }
        tracing::info!(cluster = %act.cluster.name(), took_ms = took.as_millis() as u64, "first response from the new cluster served");
    }
}

fn set_active_gauges(clusters: &BTreeMap<String, Arc<Cluster>>, active: &str) {
    for name in clusters.keys() {
        metrics::gauge!(crate::admin::names::ACTIVE_CLUSTER, "cluster" => name.clone())
            .set(if name == active { 1.0 } else { 0.0 });
    }
}

/// Outcome of draining one session at a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every in-flight response reached the client before the close.
    Drained,
    /// The drain window ran out with responses still outstanding.
    CutOff,
}

impl DrainOutcome {
    pub fn label(self) -> &'static str {
        match self {
            DrainOutcome::Drained => "drained",
            DrainOutcome::CutOff => "cut_off",
        }
    }
}

/// Default for tests and docs: how long a switch lets sessions drain.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);
