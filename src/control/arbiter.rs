//! `kafka-sidecar arbiter`: one observer of the automatic failover quorum.
//!
//! Every `probe_interval` an arbiter probes every cluster (TCP, TLS, SASL and a
//! metadata request, as the data path connects), publishes its [`Vote`] to the fleet
//! topic on every cluster it can reach, reads the other arbiters' votes, and evaluates
//! [`quorum::evaluate`]. A decision is written only when a quorum of fresh votes agree
//! (see `docs/fleet-failover.md`). Sidecars never vote: the arbiters' traffic depends on
//! the number of arbiters and clusters, not on the fleet.
//!
//! The arbiter is generic over its [`ControlLog`]s and its [`HealthProbe`], and reads
//! time from tokio and a [`Clock`]: its decisions are unit-tested on in-memory logs,
//! a scripted probe and paused time (see the tests below).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::client::KafkaControlLog;
use super::follower::{follow, ControlState};
use super::log::{ControlLog, Part};
use super::quorum::{evaluate, Inputs, Verdict};
use super::{Clock, Decision, Health, Origin, Vote};
use crate::admin::names;
use crate::cluster::Cluster;
use crate::config::{AutomaticConfig, Config};

/// How an arbiter judges a cluster's health.
pub trait HealthProbe: Send + Sync + 'static {
    /// Probes `cluster` once: Ok, or the stage that failed (tcp, timeout, tls, sasl,
    /// metadata) and the error.
    fn probe(&self, cluster: &str) -> impl Future<Output = Result<(), (String, String)>> + Send;
}

/// The real probe: what the data path does to connect ([`super::client::probe`]).
pub struct KafkaProbe {
    clusters: BTreeMap<String, Arc<Cluster>>,
    timeout: Duration,
}

impl HealthProbe for KafkaProbe {
    async fn probe(&self, cluster: &str) -> Result<(), (String, String)> {
        match self.clusters.get(cluster) {
            Some(c) => super::client::probe(c, self.timeout).await,
            None => Err(("config".into(), format!("unknown cluster '{cluster}'"))),
        }
    }
}

/// Opens a control log on a cluster, by name. Every task gets its own (a long poll and
/// a write do not share a connection).
pub type OpenLog<L> = Box<dyn Fn(&str) -> L + Send + Sync>;

/// One cluster as this arbiter's probes see it.
#[derive(Debug, Clone, Serialize)]
struct Tracker {
    healthy: bool,
    #[serde(skip)]
    since: Instant,
    probes: u64,
    failing_stage: Option<String>,
    error: Option<String>,
    /// The last write of a vote or decision to this cluster's control topics failed.
    control_failed: bool,
    latency_ms: Option<f64>,
}

/// What `/status` of an arbiter shows.
#[derive(Debug, Clone, Default, Serialize)]
struct Status {
    evaluations: u64,
    verdict: Option<Verdict>,
    decisions_written: Vec<Decision>,
}

pub struct Arbiter<L = KafkaControlLog, P = KafkaProbe> {
    id: String,
    incarnation: String,
    cfg: Arc<Config>,
    policy: AutomaticConfig,
    /// Configured cluster names.
    clusters: Vec<String>,
    open_log: OpenLog<L>,
    probe: P,
    clock: Clock,
    control: Arc<ControlState>,
    trackers: Mutex<BTreeMap<String, Tracker>>,
    /// Latest vote per arbiter, with when this process received it (its own clock).
    votes: Mutex<BTreeMap<String, (Vote, Instant)>>,
    status: Mutex<Status>,
    seq: AtomicU64,
}

/// What a writer task is asked to append.
type Write = (Part, Bytes);

fn policy_of(cfg: &Config) -> anyhow::Result<AutomaticConfig> {
    super::ops::control_of(cfg)?
        .automatic
        .clone()
        .context("control.automatic is not configured: arbiters only act on that policy")
}

impl Arbiter<KafkaControlLog, KafkaProbe> {
    /// An arbiter on the configured clusters, probing them as the data path connects.
    pub fn new(cfg: Config, id: String) -> anyhow::Result<Arc<Self>> {
        let policy = policy_of(&cfg)?;
        let clusters: BTreeMap<String, Arc<Cluster>> = cfg
            .clusters
            .iter()
            .map(|(n, c)| {
                Ok((
                    n.clone(),
                    Cluster::new(n, c.clone(), cfg.limits.max_frame_bytes)?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let topics = super::ops::topics(super::ops::control_of(&cfg)?);
        let timeout = cfg.limits.connect_timeout.min(policy.probe_timeout * 2);
        let logs = clusters.clone();
        let open_log: OpenLog<KafkaControlLog> = Box::new(move |name| {
            KafkaControlLog::new(logs[name].clone(), topics.clone(), true, timeout)
        });
        let probe = KafkaProbe {
            clusters,
            timeout: policy.probe_timeout,
        };
        Arbiter::with_parts(cfg, id, open_log, probe, super::system_clock())
    }
}

impl<L: ControlLog + 'static, P: HealthProbe> Arbiter<L, P> {
    /// An arbiter on logs opened by `open_log` (one per configured cluster and task),
    /// judging health with `probe`, reading wall-clock time from `clock`.
    pub fn with_parts(
        cfg: Config,
        id: String,
        open_log: OpenLog<L>,
        probe: P,
        clock: Clock,
    ) -> anyhow::Result<Arc<Self>> {
        let policy = policy_of(&cfg)?;
        if !policy.arbiters.contains(&id) {
            anyhow::bail!(
                "--id: '{id}' is not listed in control.automatic.arbiters ({}); its votes would not count",
                policy.arbiters.join(", ")
            );
        }
        if policy.arbiters.len() < 3 {
            tracing::warn!(
                "fewer than 3 arbiters: a single site's failure can block or fake a quorum"
            );
        }
        let clusters: Vec<String> = cfg.clusters.keys().cloned().collect();
        let now = Instant::now();
        let trackers = clusters
            .iter()
            .map(|c| {
                (
                    c.clone(),
                    Tracker {
                        healthy: false,
                        since: now,
                        probes: 0,
                        failing_stage: None,
                        error: None,
                        control_failed: false,
                        latency_ms: None,
                    },
                )
            })
            .collect();
        Ok(Arc::new(Arbiter {
            incarnation: super::process_id(),
            control: Arc::new(ControlState::new(format!("arbiter:{id}"))),
            id,
            cfg: Arc::new(cfg),
            policy,
            clusters,
            open_log,
            probe,
            clock,
            trackers: Mutex::new(trackers),
            votes: Mutex::new(BTreeMap::new()),
            status: Mutex::new(Status::default()),
            seq: AtomicU64::new(0),
        }))
    }

    fn log(&self, cluster: &str) -> L {
        (self.open_log)(cluster)
    }

    fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// The cluster the fleet follows now, and the decision behind it.
    fn active(&self) -> (String, Option<Decision>) {
        let d = self.control.decision();
        let active = d
            .as_ref()
            .filter(|d| self.cfg.clusters.contains_key(&d.active))
            .map_or_else(|| self.cfg.active_cluster.clone(), |d| d.active.clone());
        (active, d)
    }

    /// Runs until `shutdown` changes.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let c = self.cfg.control.as_ref().expect("validated").clone();
        let mut writers = BTreeMap::new();
        let mut tasks = vec![];
        for name in &self.clusters {
            let name = name.clone();
            tasks.push(tokio::spawn(follow(
                self.log(&name),
                name.clone(),
                self.control.clone(),
                c.poll_wait,
                {
                    let name = name.clone();
                    move |d: Decision| {
                        tracing::info!(cluster = %name, epoch = d.epoch, active = %d.active, origin = d.origin.label(), writer = %d.writer, reason = %d.reason, "following decision")
                    }
                },
                shutdown.clone(),
            )));
            tasks.push(tokio::spawn(self.clone().read_votes(
                name.clone(),
                c.poll_wait,
                shutdown.clone(),
            )));
            let (tx, rx) = mpsc::channel::<Write>(8);
            writers.insert(name.clone(), tx);
            tasks.push(tokio::spawn(self.clone().write_loop(name, rx)));
        }
        // Series exist from the start, so that `increase()` sees the first one.
        for kind in ["failover", "failback"] {
            metrics::counter!(names::ARBITER_DECISIONS_TOTAL, "kind" => kind).increment(0);
        }
        metrics::counter!(names::ARBITER_BLOCKED_TOTAL, "reason" => "min_interval").increment(0);
        let mut tick = tokio::time::interval(self.policy.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = shutdown;
        let mut pending: Option<(String, usize)> = None;
        let mut repaired: BTreeMap<String, (u64, u32)> = BTreeMap::new();
        let mut last_verdict_kind = String::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            self.probe_all().await;
            let vote = self.own_vote();
            let bytes = Bytes::from(serde_json::to_vec(&vote).expect("a vote serializes"));
            for tx in writers.values() {
                let _ = tx.try_send((Part::Votes, bytes.clone()));
            }
            self.votes
                .lock()
                .insert(self.id.clone(), (vote, Instant::now()));
            let verdict = self.evaluate();
            let kind = match &verdict {
                Verdict::Steady { suspecting } if suspecting.is_empty() => "steady".to_string(),
                Verdict::Steady { suspecting } => format!("suspect:{}", suspecting.join(",")),
                Verdict::Move { to, .. } => format!("move:{to}"),
                Verdict::Blocked { to, .. } => format!("blocked:{to}"),
            };
            if kind != last_verdict_kind {
                match &verdict {
                    Verdict::Steady { suspecting } if !suspecting.is_empty() => tracing::warn!(
                        suspecting = ?suspecting, quorum = self.policy.quorum(),
                        "active cluster unhealthy in some arbiters' views, below the quorum: no decision"),
                    Verdict::Blocked { to, reason } => {
                        metrics::counter!(names::ARBITER_BLOCKED_TOTAL, "reason" => "min_interval")
                            .increment(1);
                        tracing::warn!(%to, "a quorum supports a move, blocked: {reason}")
                    }
                    _ => tracing::info!(verdict = %kind, "verdict"),
                }
                last_verdict_kind = kind;
            }
            {
                let mut st = self.status.lock();
                st.evaluations += 1;
                st.verdict = Some(verdict.clone());
            }
            match verdict {
                Verdict::Move {
                    to,
                    failback,
                    supporters,
                } => {
                    // The first supporter (by id) writes at once; the others wait a tick
                    // per rank, so that normally one decision is written, not three.
                    let rank = supporters
                        .iter()
                        .position(|s| *s == self.id)
                        .unwrap_or(supporters.len());
                    let seen = match &pending {
                        Some((t, n)) if *t == to => n + 1,
                        _ => 1,
                    };
                    pending = Some((to.clone(), seen));
                    if seen > rank {
                        pending = None;
                        self.decide(&to, failback, &supporters, &writers);
                    }
                }
                _ => pending = None,
            }
            // Anti-entropy: a cluster that missed a decision (down when it was written,
            // or rebuilt empty) gets the highest one, so sidecars that reach only it
            // follow it too.
            if let Some(best) = self.control.decision() {
                let views = self.control.to_json();
                for (name, tx) in &writers {
                    let v = &views["clusters"][name];
                    let behind =
                        v["reachable"] == true && v["epoch"].as_u64().unwrap_or(0) < best.epoch;
                    let entry = repaired.entry(name.clone()).or_insert((0, 0));
                    if behind && (entry.0 != best.epoch || entry.1 >= 10) {
                        tracing::info!(cluster = %name, epoch = best.epoch, "copying the highest decision to a cluster that lacks it");
                        let _ = tx.try_send((Part::Decisions, Bytes::from(best.to_json())));
                        *entry = (best.epoch, 0);
                    } else {
                        entry.1 += 1;
                    }
                }
            }
        }
        for t in tasks {
            t.abort();
        }
    }

    fn decide(
        &self,
        to: &str,
        failback: bool,
        supporters: &[String],
        writers: &BTreeMap<String, mpsc::Sender<Write>>,
    ) {
        let (active, prev) = self.active();
        let votes: BTreeMap<String, Vote> = self.fresh_votes();
        let evidence = serde_json::json!({
            "rule": if failback { "failback: preferred cluster healthy for failback_after in a quorum of views" } else { "failover: active cluster failing every probe for unhealthy_after in a quorum of views, target healthy" },
            "quorum": self.policy.quorum(),
            "arbiters": self.policy.arbiters,
            "supporters": supporters,
            "votes": votes,
            "probes": *self.trackers.lock(),
            "unhealthy_after_ms": self.policy.unhealthy_after.as_millis() as u64,
            "failback_after_ms": self.policy.failback_after.as_millis() as u64,
            "min_interval_ms": self.policy.min_interval.as_millis() as u64,
        });
        let d = Decision {
            epoch: prev.as_ref().map_or(0, |d| d.epoch) + 1,
            active: to.to_string(),
            previous: Some(active.clone()),
            reason: if failback {
                format!(
                    "automatic failback to '{to}' (preferred, healthy for {:?})",
                    self.policy.failback_after
                )
            } else {
                format!(
                    "automatic failover: '{active}' unhealthy for {:?} in {} of {} arbiters' views",
                    self.policy.unhealthy_after,
                    supporters.len(),
                    self.policy.arbiters.len()
                )
            },
            origin: Origin::Automatic,
            writer: format!("arbiter:{}", self.id),
            host: super::host_name(),
            pid: std::process::id(),
            at_ms: self.now_ms(),
            evidence: Some(evidence),
        };
        tracing::warn!(
            epoch = d.epoch, from = %active, to = %to, failback,
            evidence = %d.evidence.as_ref().map(|e| e.to_string()).unwrap_or_default(),
            "writing automatic decision"
        );
        metrics::counter!(names::ARBITER_DECISIONS_TOTAL, "kind" => if failback { "failback" } else { "failover" }).increment(1);
        let bytes = Bytes::from(d.to_json());
        for tx in writers.values() {
            let _ = tx.try_send((Part::Decisions, bytes.clone()));
        }
        // Follow it at once (the followers will read it back too).
        self.control.adopt(&d);
        self.status.lock().decisions_written.push(d);
    }

    fn fresh_votes(&self) -> BTreeMap<String, Vote> {
        let window = (self.policy.probe_interval * 3)
            .max(self.policy.probe_timeout + self.policy.probe_interval * 2);
        self.votes
            .lock()
            .iter()
            .filter(|(_, (_, at))| at.elapsed() <= window)
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    fn evaluate(&self) -> Verdict {
        let (active, decision) = self.active();
        let votes = self.fresh_votes();
        for c in &self.clusters {
            let n = votes
                .values()
                .filter(|v| v.clusters.get(c).is_some_and(|h| !h.healthy))
                .count();
            metrics::gauge!(names::ARBITER_VOTES_UNHEALTHY, "cluster" => c.clone()).set(n as f64);
        }
        // The newest automatic decision this arbiter knows of: the followed one if
        // automatic, else whatever it wrote itself.
        let last_auto = self.control.last_automatic();
        evaluate(&Inputs {
            policy: &self.policy,
            active: &active,
            decision: decision.as_ref(),
            last_automatic: last_auto.as_ref(),
            votes: &votes,
            now_ms: self.now_ms(),
        })
    }

    fn own_vote(&self) -> Vote {
        let (active, d) = self.active();
        let now = Instant::now();
        let clusters = self
            .trackers
            .lock()
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    Health {
                        healthy: t.healthy,
                        for_ms: now.duration_since(t.since).as_millis() as u64,
                        failing_stage: t.failing_stage.clone(),
                        error: t.error.clone(),
                    },
                )
            })
            .collect();
        Vote {
            arbiter: self.id.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            incarnation: self.incarnation.clone(),
            at_ms: self.now_ms(),
            epoch: d.map_or(0, |d| d.epoch),
            active,
            clusters,
        }
    }

    async fn probe_all(&self) {
        let probes = self.clusters.iter().map(|c| async move {
            let started = Instant::now();
            let r = self.probe.probe(c).await;
            (c.clone(), r, started.elapsed())
        });
        let results = futures::future::join_all(probes).await;
        let now = Instant::now();
        let mut trackers = self.trackers.lock();
        for (name, r, took) in results {
            let t = trackers.get_mut(&name).expect("every cluster tracked");
            let ok = r.is_ok() && !t.control_failed;
            if ok != t.healthy || t.probes == 0 {
                if t.probes > 0 {
                    tracing::warn!(cluster = %name, healthy = ok, error = ?r.as_ref().err(), "cluster health changed");
                }
                t.since = now;
            }
            t.healthy = ok;
            t.probes += 1;
            t.latency_ms = Some(took.as_secs_f64() * 1000.0);
            match r {
                Ok(()) if !ok => {
                    t.failing_stage = Some("control".into());
                    t.error = Some("cannot write to the control topics".into());
                }
                Ok(()) => {
                    t.failing_stage = None;
                    t.error = None;
                }
                Err((stage, e)) => {
                    t.failing_stage = Some(stage);
                    t.error = Some(e);
                }
            }
            metrics::gauge!(names::ARBITER_PROBE_HEALTHY, "cluster" => name.clone()).set(if ok {
                1.0
            } else {
                0.0
            });
        }
    }

    async fn read_votes(
        self: Arc<Self>,
        cluster: String,
        wait: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut log = self.log(&cluster);
        let mut next: Option<i64> = None;
        loop {
            let step = async {
                let from = match next {
                    Some(n) => n,
                    // Votes older than the freshness window are useless: start at the end.
                    None => log.bounds(Part::Votes).await?.1,
                };
                next = Some(from);
                let started = Instant::now();
                let got = log.read(Part::Votes, from, wait).await?;
                for e in &got {
                    next = Some(e.offset + 1);
                    if let Ok(v) = serde_json::from_slice::<Vote>(&e.value) {
                        if v.arbiter != self.id && self.policy.arbiters.contains(&v.arbiter) {
                            let mut votes = self.votes.lock();
                            let newer = votes.get(&v.arbiter).is_none_or(|(old, _)| {
                                old.incarnation != v.incarnation && v.at_ms >= old.at_ms
                                    || old.incarnation == v.incarnation && v.seq > old.seq
                            });
                            if newer {
                                votes.insert(v.arbiter.clone(), (v, Instant::now()));
                            }
                        }
                    }
                }
                if got.is_empty() && started.elapsed() < wait / 4 {
                    tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
                }
                anyhow::Ok(())
            };
            let r = tokio::select! {
                r = step => r,
                _ = shutdown.changed() => return,
            };
            if r.is_err() {
                next = None;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }

    async fn write_loop(self: Arc<Self>, cluster: String, mut rx: mpsc::Receiver<Write>) {
        let mut log = self.log(&cluster);
        while let Some((part, value)) = rx.recv().await {
            let r = log.append(part, &[value]).await;
            let failed = r.is_err();
            if let Err(e) = r {
                tracing::debug!(%cluster, part = part.label(), "control write failed: {e:#}");
            }
            if let Some(t) = self.trackers.lock().get_mut(&cluster) {
                t.control_failed = failed;
            }
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let votes: BTreeMap<String, serde_json::Value> = {
            let window = (self.policy.probe_interval * 3)
                .max(self.policy.probe_timeout + self.policy.probe_interval * 2);
            self.votes
                .lock()
                .iter()
                .map(|(k, (v, at))| (k.clone(), serde_json::json!({"fresh": at.elapsed() <= window, "received_ms_ago": at.elapsed().as_millis() as u64, "vote": v})))
                .collect()
        };
        let (active, _) = self.active();
        let st = self.status.lock().clone();
        serde_json::json!({
            "role": "arbiter",
            "id": self.id,
            "active_cluster": active,
            "control": self.control.to_json(),
            "probes": *self.trackers.lock(),
            "votes": votes,
            "quorum": self.policy.quorum(),
            "evaluations": st.evaluations,
            "verdict": st.verdict,
            "decisions_written": st.decisions_written,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Three arbiters on two in-memory clusters, with scripted probes, on paused time:
    //! each test moves virtual time and asserts the decisions the arbiters write.
    use std::collections::BTreeSet;

    use super::super::log::memory::MemoryLog;
    use super::*;

    const ARBITERS: [&str; 3] = ["a1", "a2", "a3"];
    const UNHEALTHY_AFTER: Duration = Duration::from_secs(10);
    const MIN_INTERVAL: Duration = Duration::from_secs(600);
    const FAILBACK_AFTER: Duration = Duration::from_secs(30);

    /// One arbiter's probe: the clusters listed in `down` fail.
    #[derive(Clone, Default)]
    struct Scripted {
        down: Arc<Mutex<BTreeSet<String>>>,
    }

    impl Scripted {
        fn set(&self, cluster: &str, up: bool) {
            let mut d = self.down.lock();
            if up {
                d.remove(cluster);
            } else {
                d.insert(cluster.to_string());
            }
        }
    }

    impl HealthProbe for Scripted {
        async fn probe(&self, cluster: &str) -> Result<(), (String, String)> {
            if self.down.lock().contains(cluster) {
                Err(("tcp".into(), "scripted: connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    fn config(failback: bool) -> Config {
        Config::parse(&format!(
            r#"
listen: {{address: 127.0.0.1, bootstrap_port: 19092, broker_port_base: 19100}}
active_cluster: north
clusters:
  north: {{bootstrap_servers: ["n1:9092"]}}
  west: {{bootstrap_servers: ["w1:9092"]}}
control:
  poll_wait: 100ms
  automatic:
    priority: [north, west]
    arbiters: [a1, a2, a3]
    probe_interval: 1s
    probe_timeout: 500ms
    unhealthy_after: {}s
    min_interval: {}s
    failback: {failback}
    failback_after: {}s
"#,
            UNHEALTHY_AFTER.as_secs(),
            MIN_INTERVAL.as_secs(),
            FAILBACK_AFTER.as_secs()
        ))
        .unwrap()
    }

    struct Site {
        north: MemoryLog,
        west: MemoryLog,
        /// Each arbiter's probe, in ARBITERS order.
        probes: Vec<Scripted>,
        arbiters: Vec<Arc<Arbiter<MemoryLog, Scripted>>>,
        clock: Clock,
        _stop: watch::Sender<bool>,
    }

    impl Site {
        fn start(failback: bool) -> Site {
            let clock = super::super::paused_clock();
            let north = MemoryLog::with_clock(clock.clone());
            let west = MemoryLog::with_clock(clock.clone());
            let (stop, stop_rx) = watch::channel(false);
            let mut probes = vec![];
            let mut arbiters = vec![];
            for id in ARBITERS {
                let probe = Scripted::default();
                let (n, w) = (north.clone(), west.clone());
                let open: OpenLog<MemoryLog> = Box::new(move |name| match name {
                    "north" => n.clone(),
                    "west" => w.clone(),
                    other => panic!("no cluster {other}"),
                });
                let a = Arbiter::with_parts(
                    config(failback),
                    id.into(),
                    open,
                    probe.clone(),
                    clock.clone(),
                )
                .unwrap();
                tokio::spawn(a.clone().run(stop_rx.clone()));
                probes.push(probe);
                arbiters.push(a);
            }
            Site {
                north,
                west,
                probes,
                arbiters,
                clock,
                _stop: stop,
            }
        }

        /// North's broker dies (every probe fails, its logs refuse every call) or returns.
        fn north_up(&self, up: bool) {
            for p in &self.probes {
                p.set("north", up);
            }
            self.north.set_down(!up);
        }

        /// The decisions on `log` (distinct, in log order).
        fn decisions(log: &MemoryLog) -> Vec<Decision> {
            let mut out: Vec<Decision> = vec![];
            for v in log.values(Part::Decisions) {
                let d = Decision::parse(&v).unwrap();
                if !out.contains(&d) {
                    out.push(d);
                }
            }
            out
        }

        /// Waits (in virtual time) for the first decision of `epoch` on `log`.
        async fn decision(log: &MemoryLog, epoch: u64) -> Decision {
            let mut log = log.clone();
            let mut from = 0;
            loop {
                let got = log
                    .read(Part::Decisions, from, Duration::from_secs(86_400))
                    .await
                    .unwrap();
                assert!(!got.is_empty(), "no decision of epoch {epoch} within a day");
                for e in got {
                    from = e.offset + 1;
                    let d = Decision::parse(&e.value).unwrap();
                    if d.epoch == epoch {
                        return d;
                    }
                }
            }
        }
    }

    /// Virtual time passes (paused clock: no real waiting).
    async fn pass(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn quorum_fails_over_after_unhealthy_after_once() {
        let site = Site::start(false);
        pass(Duration::from_secs(5)).await;
        assert!(Site::decisions(&site.west).is_empty());
        site.north_up(false);
        let down_at = (site.clock)();
        let d = Site::decision(&site.west, 1).await;
        assert_eq!((d.active.as_str(), d.origin), ("west", Origin::Automatic));
        assert_eq!(d.previous.as_deref(), Some("north"));
        assert!(d.writer.starts_with("arbiter:"), "{d:?}");
        assert!(
            d.at_ms - down_at >= UNHEALTHY_AFTER.as_millis() as i64,
            "decided {} ms after north went down, before unhealthy_after",
            d.at_ms - down_at
        );
        let supporters = d.evidence.as_ref().unwrap()["supporters"]
            .as_array()
            .unwrap()
            .len();
        assert!(supporters >= 2, "{d:?}");
        // Every arbiter follows it, and no further decision comes (west stays healthy).
        pass(MIN_INTERVAL * 2).await;
        for a in &site.arbiters {
            let (active, followed) = a.active();
            assert_eq!(
                (active.as_str(), followed.map(|d| d.epoch)),
                ("west", Some(1))
            );
        }
        assert!(Site::decisions(&site.west).iter().all(|d| d.epoch == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn one_arbiter_cut_off_from_north_moves_nothing() {
        let site = Site::start(false);
        // Only a1 loses north; a2 and a3 see it healthy.
        site.probes[0].set("north", false);
        pass(UNHEALTHY_AFTER * 10).await;
        assert!(Site::decisions(&site.north).is_empty());
        assert!(Site::decisions(&site.west).is_empty());
        for a in &site.arbiters {
            let st = a.status();
            assert_eq!(st["verdict"]["verdict"], "steady", "{st:#}");
            assert_eq!(
                st["verdict"]["suspecting"],
                serde_json::json!(["a1"]),
                "{st:#}"
            );
            let fresh = st["votes"]
                .as_object()
                .unwrap()
                .values()
                .filter(|v| v["fresh"] == true)
                .count();
            assert_eq!(fresh, 3, "{st:#}");
        }
        // A second arbiter losing north makes a quorum.
        site.probes[1].set("north", false);
        let d = Site::decision(&site.west, 1).await;
        assert_eq!(d.active, "west");
    }

    #[tokio::test(start_paused = true)]
    async fn failback_waits_for_min_interval_after_the_failover() {
        let site = Site::start(true);
        pass(Duration::from_secs(5)).await;
        site.north_up(false);
        let failover = Site::decision(&site.west, 1).await;
        // North returns: healthy for failback_after long before min_interval is over.
        pass(Duration::from_secs(20)).await;
        site.north_up(true);
        pass(FAILBACK_AFTER * 3).await;
        for a in &site.arbiters {
            let st = a.status();
            assert_eq!(st["verdict"]["verdict"], "blocked", "{st:#}");
            assert!(
                st["verdict"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("min_interval"),
                "{st:#}"
            );
            assert_eq!(st["control"]["decision"]["epoch"], 1, "{st:#}");
        }
        let failback = Site::decision(&site.north, 2).await;
        assert_eq!(
            (failback.active.as_str(), failback.origin),
            ("north", Origin::Automatic)
        );
        assert!(failback.reason.contains("failback"), "{failback:?}");
        assert!(
            failback.at_ms - failover.at_ms >= MIN_INTERVAL.as_millis() as i64,
            "failback {} ms after the failover",
            failback.at_ms - failover.at_ms
        );
        // Both clusters carry it (west directly, north by the writers).
        assert_eq!(Site::decision(&site.west, 2).await.active, "north");
    }

    #[tokio::test(start_paused = true)]
    async fn without_failback_the_fleet_stays_on_the_target() {
        let site = Site::start(false);
        pass(Duration::from_secs(5)).await;
        site.north_up(false);
        Site::decision(&site.west, 1).await;
        pass(Duration::from_secs(20)).await;
        site.north_up(true);
        pass(MIN_INTERVAL * 3).await;
        for log in [&site.north, &site.west] {
            let epochs: BTreeSet<u64> = Site::decisions(log).iter().map(|d| d.epoch).collect();
            assert_eq!(epochs, BTreeSet::from([1]));
        }
        for a in &site.arbiters {
            let st = a.status();
            assert_eq!(st["verdict"]["verdict"], "steady", "{st:#}");
            assert_eq!(st["active_cluster"], "west", "{st:#}");
        }
    }
}
