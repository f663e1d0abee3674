//! The sidecar's side of the control plane: follow the highest decision found on any
//! reachable cluster, and report what it applied.
//!
//! Per cluster, two tasks with a connection each: a *follower* long-polling the
//! decisions partition (a new decision is seen within a round trip of its write), and
//! a *reporter* writing a small [`Report`] every `report_interval` and at once after a
//! decision is applied. The sidecar never reads reports or votes, so its control
//! traffic is the same in a fleet of 5 and of 5,000.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use super::log::{ControlLog, Part};
use super::{Decision, Report};
use crate::admin::names;

/// What one cluster's control topic looks like from here.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterView {
    pub reachable: bool,
    /// Highest decision epoch read from this cluster (0: none).
    pub epoch: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix ms of the last successful read.
    pub last_ok_ms: i64,
    pub reports_sent: u64,
}

/// Shared by the follower and reporter tasks and the proxy.
pub struct ControlState {
    pub id: String,
    best: Mutex<Option<Decision>>,
    /// The highest automatic decision seen (for the arbiters' `min_interval`), even if
    /// an operator's decision came after it.
    last_automatic: Mutex<Option<Decision>>,
    clusters: Mutex<BTreeMap<String, ClusterView>>,
    /// Epoch of the last applied decision (wakes the reporters when it changes).
    applied: watch::Sender<u64>,
    /// Clusters whose first read of the decisions finished (either way).
    first_pass: watch::Sender<usize>,
}

impl ControlState {
    pub fn new(id: String) -> ControlState {
        ControlState {
            id,
            best: Mutex::new(None),
            last_automatic: Mutex::new(None),
            clusters: Mutex::new(BTreeMap::new()),
            applied: watch::channel(0).0,
            first_pass: watch::channel(0).0,
        }
    }

    pub fn applied_epoch(&self) -> u64 {
        *self.applied.borrow()
    }

    /// The highest decision seen since start.
    pub fn decision(&self) -> Option<Decision> {
        self.best.lock().clone()
    }

    pub fn last_automatic(&self) -> Option<Decision> {
        self.last_automatic.lock().clone()
    }

    /// Notes every decision read, for [`ControlState::last_automatic`].
    pub fn note_seen(&self, d: &Decision) {
        if d.origin == super::Origin::Automatic {
            let mut last = self.last_automatic.lock();
            if last.as_ref().is_none_or(|l| d.supersedes(l)) {
                *last = Some(d.clone());
            }
        }
    }

    /// Records `d`, read from `cluster`. True if it is now the highest decision.
    pub fn offer(&self, cluster: &str, d: &Decision) -> bool {
        {
            let mut cs = self.clusters.lock();
            let v = cs.entry(cluster.to_string()).or_default();
            v.epoch = v.epoch.max(d.epoch);
        }
        self.adopt(d)
    }

    /// Takes `d` as the decision followed if it is the highest (e.g. one this process
    /// just wrote). True if it is.
    pub fn adopt(&self, d: &Decision) -> bool {
        self.note_seen(d);
        let mut best = self.best.lock();
        if best.as_ref().is_none_or(|b| d.supersedes(b)) {
            *best = Some(d.clone());
            return true;
        }
        false
    }

    pub fn set_reachable(&self, cluster: &str, result: Result<(), String>) {
        let mut cs = self.clusters.lock();
        let v = cs.entry(cluster.to_string()).or_default();
        let ok = result.is_ok();
        if ok {
            v.last_ok_ms = super::now_ms();
            v.error = None;
        } else {
            v.error = result.err();
        }
        if v.reachable != ok {
            if ok {
                tracing::info!(%cluster, "control topic readable");
            } else {
                tracing::warn!(%cluster, error = v.error.as_deref().unwrap_or(""), "control topic not readable");
            }
        }
        v.reachable = ok;
        metrics::gauge!(names::CONTROL_REACHABLE, "cluster" => cluster.to_string()).set(if ok {
            1.0
        } else {
            0.0
        });
    }

    pub fn reachable(&self) -> Vec<String> {
        self.clusters
            .lock()
            .iter()
            .filter(|(_, v)| v.reachable)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn count_report(&self, cluster: &str) {
        self.clusters
            .lock()
            .entry(cluster.to_string())
            .or_default()
            .reports_sent += 1;
    }

    /// Called by the proxy after it applied a decision: reporters report now.
    pub fn note_applied(&self, epoch: u64) {
        self.applied.send_replace(epoch);
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "decision": self.decision(),
            "clusters": *self.clusters.lock(),
        })
    }
}

/// Backoff after a failed read or write: 0.5 s doubling to 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(4))).min(Duration::from_secs(5))
}

/// Follows the decisions partition of one cluster until `shutdown`; calls `on_new`
/// with every decision that becomes the highest seen.
pub async fn follow<L: ControlLog>(
    mut log: L,
    cluster: String,
    state: Arc<ControlState>,
    poll_wait: Duration,
    on_new: impl Fn(Decision) + Send,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next: Option<i64> = None;
    let mut failures = 0u32;
    let mut first = true;
    loop {
        // The first read does not wait: start-up waits for it.
        let wait = if first { Duration::ZERO } else { poll_wait };
        let step = async {
            let from = match next {
                Some(n) => n,
                None => log.bounds(Part::Decisions).await?.0,
            };
            next = Some(from);
            let started = tokio::time::Instant::now();
            let got = log.read(Part::Decisions, from, wait).await?;
            // Only the highest of a batch is offered: a sidecar starting on a long
            // history switches once, not once per past decision.
            let mut batch_best: Option<Decision> = None;
            for e in &got {
                next = Some(e.offset + 1);
                match Decision::parse(&e.value) {
                    Some(d) => {
                        state.note_seen(&d);
                        if batch_best.as_ref().is_none_or(|b| d.supersedes(b)) {
                            batch_best = Some(d);
                        }
                    }
                    None => {
                        tracing::warn!(%cluster, offset = e.offset, "ignoring a control record that is not a decision")
                    }
                }
            }
            if let Some(d) = batch_best {
                if state.offer(&cluster, &d) {
                    on_new(d);
                }
            }
            // A broker that answers an empty fetch at once (ignoring max_wait) must not
            // make this a busy loop.
            if got.is_empty() && !wait.is_zero() && started.elapsed() < wait / 4 {
                tokio::time::sleep(poll_wait.min(Duration::from_millis(100))).await;
            }
            anyhow::Ok(())
        };
        let result = tokio::select! {
            r = step => r,
            _ = shutdown.changed() => return,
        };
        if std::mem::take(&mut first) {
            state.first_pass.send_modify(|n| *n += 1);
        }
        match result {
            Ok(()) => {
                failures = 0;
                state.set_reachable(&cluster, Ok(()));
            }
            Err(e) => {
                state.set_reachable(&cluster, Err(format!("{e:#}")));
                next = None;
                let wait = backoff(failures);
                failures = failures.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// Writes this sidecar's report to one cluster every `interval` and right after each
/// applied decision, until `shutdown`.
pub async fn report<L: ControlLog>(
    mut log: L,
    cluster: String,
    state: Arc<ControlState>,
    interval: Duration,
    make: impl Fn() -> Report + Send,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut applied = state.applied.subscribe();
    let mut failures = 0u32;
    loop {
        let value = Bytes::from(serde_json::to_vec(&make()).expect("a report serializes"));
        match log.append(Part::Reports, &[value]).await {
            Ok(_) => {
                failures = 0;
                state.count_report(&cluster);
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(%cluster, "cannot write fleet report: {e:#}");
                }
                failures = failures.saturating_add(1);
            }
        }
        let wait = if failures > 0 {
            backoff(failures).min(interval)
        } else {
            interval
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = applied.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// What the follower and reporter need from the running sidecar they serve. The
/// proxy implements it; the control plane never depends on the proxy itself (it sits
/// below it: proxy -> control, never back).
pub trait FleetMember: Send + Sync + 'static {
    /// The control state shared with the proxy (`None` without `control:`).
    fn control_state(&self) -> Option<Arc<ControlState>>;
    /// The configured clusters (one follower and one reporter each).
    fn clusters(&self) -> Vec<Arc<crate::cluster::Cluster>>;
    /// Applies a decision that became the highest seen.
    fn follow_decision(&self, d: &Decision);
    /// This sidecar's report, as of now.
    fn fleet_report(&self) -> Report;
    /// Changes when the sidecar shuts down.
    fn shutdown_signal(&self) -> watch::Receiver<bool>;
}

/// Starts the followers and reporters of a sidecar, one pair per cluster, and waits
/// (bounded by `min(timeout, 5s) + 1s`) until each cluster's decisions were read once, so that clients are not
/// sent to the file's default cluster when a decision says otherwise.
pub async fn spawn<M: FleetMember>(
    member: &Arc<M>,
    c: &crate::config::ControlConfig,
    timeout: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let state = member.control_state().expect("control state");
    // Series exist from the start, so that `increase()` sees the first decision.
    for origin in ["operator", "automatic"] {
        metrics::counter!(names::CONTROL_DECISIONS_APPLIED_TOTAL, "origin" => origin).increment(0);
    }
    metrics::gauge!(names::CONTROL_DECISION_EPOCH).set(0.0);
    let topics = super::ops::topics(c);
    let clusters = member.clusters();
    let mut tasks = vec![];
    for cluster in &clusters {
        let name = cluster.name().to_string();
        let reader =
            super::client::KafkaControlLog::new(cluster.clone(), topics.clone(), true, timeout);
        let writer =
            super::client::KafkaControlLog::new(cluster.clone(), topics.clone(), true, timeout);
        let m = member.clone();
        tasks.push(tokio::spawn(follow(
            reader,
            name.clone(),
            state.clone(),
            c.poll_wait,
            move |d| m.follow_decision(&d),
            member.shutdown_signal(),
        )));
        let m = member.clone();
        tasks.push(tokio::spawn(report(
            writer,
            name,
            state.clone(),
            c.report_interval,
            move || m.fleet_report(),
            member.shutdown_signal(),
        )));
    }
    let mut first = state.first_pass.subscribe();
    let n = clusters.len();
    // The first read does not long-poll: a connect and two or three round trips.
    let bound = timeout.min(Duration::from_secs(5)) + Duration::from_secs(1);
    if tokio::time::timeout(bound, first.wait_for(|k| *k >= n))
        .await
        .is_err()
    {
        tracing::warn!("not every cluster's control topic answered within {bound:?}; starting with what is known");
    }
    match state.decision() {
        Some(d) => {
            tracing::info!(epoch = d.epoch, active = %d.active, "starting under fleet decision")
        }
        None => tracing::info!(
            "no fleet decision found; the file's active_cluster applies until one is written"
        ),
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::super::log::memory::MemoryLog;
    use super::super::Origin;
    use super::*;

    fn decision(epoch: u64, active: &str, writer: &str) -> Bytes {
        Bytes::from(
            Decision {
                epoch,
                active: active.into(),
                previous: None,
                reason: "test".into(),
                origin: Origin::Operator,
                writer: writer.into(),
                host: "h".into(),
                pid: 1,
                at_ms: 0,
                evidence: None,
            }
            .to_json(),
        )
    }

    /// Two clusters with different decision histories: the follower of each offers
    /// what it reads, and the state ends on the highest, whichever cluster had it; a
    /// cluster going down changes nothing.
    #[tokio::test]
    async fn follows_the_highest_decision_across_clusters() {
        let north = MemoryLog::default();
        let west = MemoryLog::default();
        let state = Arc::new(ControlState::new("me".into()));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        for (name, log) in [("north", north.clone()), ("west", west.clone())] {
            let tx = tx.clone();
            tokio::spawn(follow(
                log,
                name.into(),
                state.clone(),
                Duration::from_millis(50),
                move |d| {
                    let _ = tx.send(d.epoch);
                },
                stop_rx.clone(),
            ));
        }
        let mut rx = rx;
        north
            .clone()
            .append(Part::Decisions, &[decision(1, "west", "op-a")])
            .await
            .unwrap();
        assert_eq!(rx.recv().await, Some(1));
        west.clone()
            .append(
                Part::Decisions,
                &[decision(1, "west", "op-a"), decision(2, "north", "op-b")],
            )
            .await
            .unwrap();
        assert_eq!(rx.recv().await, Some(2));
        // A stale writer's lower epoch on north is not followed.
        north.set_down(true);
        west.clone()
            .append(Part::Decisions, &[decision(1, "west", "op-z")])
            .await
            .unwrap();
        north.set_down(false);
        north
            .clone()
            .append(Part::Decisions, &[decision(3, "west", "op-c")])
            .await
            .unwrap();
        assert_eq!(rx.recv().await, Some(3));
        let best = state.decision().unwrap();
        assert_eq!((best.epoch, best.active.as_str()), (3, "west"));
        let _ = stop.send(true);
    }
}
