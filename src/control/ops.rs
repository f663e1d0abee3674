//! Operator commands: `kafka-sidecar failover` and `kafka-sidecar fleet`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::client::{KafkaControlLog, Topics};
use super::log::{read_to_end, ControlLog, Part};
use super::{highest, now_ms, Clock, Decision, Origin, Report};
use crate::cluster::Cluster;
use crate::config::{Config, ControlConfig};

/// Reports older than this many of their own intervals are stale.
pub const STALE_INTERVALS: u64 = 3;
/// Bound on records read back in one listing.
const MAX_RECORDS: usize = 1_000_000;

pub fn control_of(cfg: &Config) -> anyhow::Result<&ControlConfig> {
    cfg.control
        .as_ref()
        .context("the config has no `control:` section: fleet commands need the control topics")
}

pub fn topics(c: &ControlConfig) -> Topics {
    Topics {
        control: c.topic.clone(),
        fleet: c.fleet_topic.clone(),
        fleet_retention: c.fleet_retention,
    }
}

/// One control log per configured cluster.
pub fn logs(cfg: &Config, create: bool) -> anyhow::Result<Vec<(String, KafkaControlLog)>> {
    let c = control_of(cfg)?;
    cfg.clusters
        .iter()
        .map(|(name, cc)| {
            let cluster = Cluster::new(name, cc.clone(), cfg.limits.max_frame_bytes)?;
            Ok((
                name.clone(),
                KafkaControlLog::new(cluster, topics(c), create, cfg.limits.connect_timeout),
            ))
        })
        .collect()
}

/// Every decision on one cluster, in log order.
pub async fn decisions<L: ControlLog>(log: &mut L) -> anyhow::Result<Vec<Decision>> {
    let (entries, _) = read_to_end(log, Part::Decisions, 0, MAX_RECORDS).await?;
    Ok(entries
        .iter()
        .filter_map(|e| Decision::parse(&e.value))
        .collect())
}

/// Reports written since `since_ms` (newest per sidecar id), and the end offset.
pub async fn recent_reports<L: ControlLog>(
    log: &mut L,
    since_ms: i64,
) -> anyhow::Result<(BTreeMap<String, Report>, i64)> {
    let from = match log.offset_for_time(Part::Reports, since_ms).await {
        Ok(o) => o,
        // A broker without timestamp lookups: read what retention kept.
        Err(_) => log.bounds(Part::Reports).await?.0,
    };
    let (entries, end) = read_to_end(log, Part::Reports, from, MAX_RECORDS).await?;
    let mut out = BTreeMap::new();
    for e in entries {
        if let Ok(r) = serde_json::from_slice::<Report>(&e.value) {
            if r.at_ms >= since_ms {
                merge_report(&mut out, r);
            }
        }
    }
    Ok((out, end))
}

fn merge_report(into: &mut BTreeMap<String, Report>, r: Report) {
    match into.get(&r.id) {
        Some(old) if old.at_ms > r.at_ms => {}
        _ => {
            into.insert(r.id.clone(), r);
        }
    }
}

fn is_fresh(r: &Report, now: i64) -> bool {
    now - r.at_ms <= (STALE_INTERVALS * r.interval_ms.max(100)) as i64
}

/// What each cluster holds, read concurrently.
struct Snapshot<L> {
    name: String,
    log: L,
    result: anyhow::Result<(Vec<Decision>, BTreeMap<String, Report>, i64)>,
}

/// Every cluster's decisions and the reports written since `now - window`.
async fn snapshot<L: ControlLog>(
    logs: Vec<(String, L)>,
    report_interval: Duration,
    now: i64,
) -> Vec<Snapshot<L>> {
    let window = (report_interval * STALE_INTERVALS as u32).max(Duration::from_secs(15));
    let since = now - window.as_millis() as i64;
    let tasks = logs.into_iter().map(|(name, mut log)| async move {
        let result = async {
            let ds = decisions(&mut log).await?;
            let (reports, end) = recent_reports(&mut log, since).await?;
            Ok((ds, reports, end))
        }
        .await;
        Snapshot { name, log, result }
    });
    futures::future::join_all(tasks).await
}

/// `kafka-sidecar fleet`: every sidecar that reported recently, and each cluster's decision.
pub async fn fleet(cfg: &Config, json: bool) -> anyhow::Result<()> {
    let c = control_of(cfg)?;
    let now = now_ms();
    let snaps = snapshot(logs(cfg, false)?, c.report_interval, now).await;
    let mut reports = BTreeMap::new();
    let mut per_cluster = BTreeMap::new();
    for s in &snaps {
        match &s.result {
            Ok((ds, rs, _)) => {
                per_cluster.insert(
                    s.name.clone(),
                    serde_json::json!({"reachable": true, "decision": highest(ds)}),
                );
                for r in rs.values() {
                    merge_report(&mut reports, r.clone());
                }
            }
            Err(e) => {
                per_cluster.insert(
                    s.name.clone(),
                    serde_json::json!({"reachable": false, "error": format!("{e:#}")}),
                );
            }
        }
    }
    if per_cluster.values().all(|v| v["reachable"] == false) {
        bail!(
            "no cluster's control topics are readable: {}",
            serde_json::Value::from_iter(per_cluster.clone())
        );
    }
    if json {
        let v = serde_json::json!({
            "clusters": per_cluster,
            "sidecars": reports.values().map(|r| serde_json::json!({"report": r, "last_seen_ms_ago": now - r.at_ms, "fresh": is_fresh(r, now)})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for (name, v) in &per_cluster {
        match v["decision"].as_object() {
            Some(d) => println!(
                "cluster {name}: decision epoch {} -> {} ({}, {}: {})",
                d["epoch"],
                d["active"].as_str().unwrap_or(""),
                d["origin"].as_str().unwrap_or(""),
                d["writer"].as_str().unwrap_or(""),
                d["reason"].as_str().unwrap_or("")
            ),
            None if v["reachable"] == true => println!("cluster {name}: no decision yet"),
            None => println!(
                "cluster {name}: unreachable ({})",
                v["error"].as_str().unwrap_or("")
            ),
        }
    }
    println!(
        "{:<40} {:<24} {:<10} {:>6} {:>10}  reachable",
        "SIDECAR", "HOST", "CLUSTER", "EPOCH", "LAST SEEN"
    );
    let mut by_cluster: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reports.values() {
        let fresh = is_fresh(r, now);
        if fresh {
            *by_cluster.entry(&r.cluster).or_default() += 1;
        }
        println!(
            "{:<40} {:<24} {:<10} {:>6} {:>8.1}s{}  {}",
            r.id,
            r.host,
            r.cluster,
            r.epoch,
            (now - r.at_ms) as f64 / 1000.0,
            if fresh { " " } else { "!" },
            r.reachable.join(",")
        );
    }
    let fresh = reports.values().filter(|r| is_fresh(r, now)).count();
    println!(
        "{fresh} sidecars reporting ({}); {} stale (!)",
        by_cluster
            .iter()
            .map(|(c, n)| format!("{n} on {c}"))
            .collect::<Vec<_>>()
            .join(", "),
        reports.len() - fresh
    );
    Ok(())
}

/// Options of `kafka-sidecar failover`.
pub struct FailoverArgs {
    pub to: String,
    pub reason: String,
    /// How long to wait for the fleet to converge.
    pub timeout: Duration,
    /// Sidecars expected; default: those that reported recently.
    pub expect: Option<usize>,
}

/// `kafka-sidecar failover`: writes a decision to every reachable cluster, then watches
/// the fleet's reports until every sidecar follows it. Errors (non-zero exit) if no
/// cluster took the decision or the fleet did not converge within the timeout.
pub async fn failover(cfg: &Config, args: FailoverArgs) -> anyhow::Result<()> {
    failover_on(cfg, logs(cfg, true)?, args, &super::system_clock())
        .await
        .map(drop)
}

/// [`failover`] on any [`ControlLog`]s (one per cluster, named), reading wall-clock
/// time from `clock`. Returns how the fleet converged.
pub async fn failover_on<L: ControlLog + 'static>(
    cfg: &Config,
    logs: Vec<(String, L)>,
    args: FailoverArgs,
    clock: &Clock,
) -> anyhow::Result<Convergence> {
    if !cfg.clusters.contains_key(&args.to) {
        bail!(
            "--to: '{}' is not one of the configured clusters ({})",
            args.to,
            cfg.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let c = control_of(cfg)?;
    let now = clock();
    let snaps = snapshot(logs, c.report_interval, now).await;
    let mut all = vec![];
    let mut fleet: BTreeMap<String, Report> = BTreeMap::new();
    let mut readable = vec![];
    for s in snaps {
        match s.result {
            Ok((ds, rs, end)) => {
                all.extend(ds);
                for r in rs.into_values().filter(|r| is_fresh(r, now)) {
                    merge_report(&mut fleet, r);
                }
                readable.push((s.name, s.log, end));
            }
            Err(e) => eprintln!("cluster {}: control topics not readable: {e:#}; the decision will not be written there", s.name),
        }
    }
    if readable.is_empty() {
        bail!("no cluster's control topics are readable; nothing written");
    }
    let prev = highest(&all).cloned();
    let decision = Decision {
        epoch: prev.as_ref().map_or(0, |d| d.epoch) + 1,
        active: args.to.clone(),
        previous: Some(
            prev.as_ref()
                .map_or(cfg.active_cluster.clone(), |d| d.active.clone()),
        ),
        reason: args.reason.clone(),
        origin: Origin::Operator,
        writer: format!("operator:{}", super::process_id()),
        host: super::host_name(),
        pid: std::process::id(),
        at_ms: clock(),
        evidence: None,
    };
    let value = Bytes::from(decision.to_json());
    let writes = readable.into_iter().map(|(name, mut log, end)| {
        let value = value.clone();
        async move {
            let r = log.append(Part::Decisions, &[value]).await;
            (name, log, end, r)
        }
    });
    let written = futures::future::join_all(writes).await;
    let mut watched = vec![];
    let mut took = vec![];
    for (name, log, end, r) in written {
        match r {
            Ok(offset) => {
                took.push(name.clone());
                println!(
                    "decision epoch {} (-> {}) written to cluster {name} at offset {offset}",
                    decision.epoch, decision.active
                );
            }
            Err(e) => eprintln!("cluster {name}: cannot write the decision: {e:#}"),
        }
        watched.push((log, end));
    }
    if took.is_empty() {
        bail!("the decision could not be written to any cluster");
    }
    // Without --expect: every sidecar that is reporting must follow (at least one, if
    // any reported before the command).
    let expected = args.expect.unwrap_or(usize::from(!fleet.is_empty()));
    if fleet.is_empty() && args.expect.is_none() {
        println!(
            "no sidecar reported recently: nothing to wait for (use --expect N to wait for N)"
        );
    }
    println!("{}", waiting_line(fleet.len(), args.expect, decision.epoch));
    let conv = converge(watched, &decision, fleet, expected, args.timeout, clock).await;
    if let Some(epoch) = conv.newer {
        println!("a newer decision (epoch {epoch}) took over while waiting");
    }
    let gone_note = if conv.gone.is_empty() {
        String::new()
    } else {
        format!(
            "; {} stopped reporting ({})",
            conv.gone.len(),
            conv.gone.join(", ")
        )
    };
    let total = conv.alive.max(expected);
    let secs = conv.waited.as_secs_f64();
    if conv.converged {
        println!(
            "{}/{total} sidecars on {} after {secs:.2} s (decision epoch {}){gone_note}",
            conv.on_target, decision.active, decision.epoch
        );
        return Ok(conv);
    }
    bail!(
        "only {}/{total} sidecars on {} after {secs:.1} s{gone_note} (decision epoch {} is written; sidecars follow it when they can read a control topic). Not yet: {}",
        conv.on_target,
        decision.active,
        decision.epoch,
        if conv.laggards.is_empty() { "(fewer sidecars than --expect)".to_string() } else { conv.laggards.join(", ") }
    )
}

/// What `failover` says it waits for: the sidecars that reported recently and, with
/// `--expect`, how many it waits for in all (which may be more than have reported yet).
fn waiting_line(reporting: usize, expect: Option<usize>, epoch: u64) -> String {
    let sidecars = |n: usize| format!("{n} sidecar{}", if n == 1 { "" } else { "s" });
    let whom = match (reporting, expect) {
        (0, Some(n)) => format!("{} (none reported recently)", sidecars(n)),
        (r, Some(n)) if n > r => format!("{} ({r} reporting so far)", sidecars(n)),
        (r, _) => format!("the {} reporting", sidecars(r)),
    };
    format!("waiting for {whom} to follow epoch {epoch} ...")
}

/// Where the fleet stands against a decision, from its reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Convergence {
    /// Every sidecar still reporting follows the decision, and at least as many as expected.
    pub converged: bool,
    /// Sidecars still reporting that follow it.
    pub on_target: usize,
    /// Sidecars still reporting.
    pub alive: usize,
    /// Sidecars that stopped reporting (ids): not waited for.
    pub gone: Vec<String>,
    /// Sidecars still reporting that do not follow it: "id (on cluster, epoch n)".
    pub laggards: Vec<String>,
    /// A newer decision some sidecar followed meanwhile.
    pub newer: Option<u64>,
    /// How long it was watched.
    pub waited: Duration,
}

/// Watches the reports appended to each log from its offset on until every known
/// sidecar (those in `known`, plus any that reports meanwhile) that is still reporting
/// follows `decision` and at least `expected` do, or `timeout` passes.
pub async fn converge<L: ControlLog + 'static>(
    logs: Vec<(L, i64)>,
    decision: &Decision,
    known: BTreeMap<String, Report>,
    expected: usize,
    timeout: Duration,
    clock: &Clock,
) -> Convergence {
    let started = tokio::time::Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    let watchers: Vec<_> = logs
        .into_iter()
        .map(|(log, from)| tokio::spawn(watch_reports(log, from, tx.clone())))
        .collect();
    drop(tx);
    let mut latest = known;
    let follows = |r: &Report| r.epoch >= decision.epoch && r.cluster == decision.active;
    let deadline = started + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut newer = None;
    let conv = loop {
        tokio::select! {
            r = rx.recv() => match r {
                Some(r) => {
                    if r.epoch > decision.epoch && newer.is_none() {
                        newer = Some(r.epoch);
                    }
                    merge_report(&mut latest, r);
                }
                None => tokio::time::sleep_until(deadline).await,
            },
            _ = tick.tick() => {}
        }
        // A sidecar that stopped reporting (shut down, rescheduled) is not waited for;
        // it is counted and named as gone.
        let now = clock();
        let (alive, gone): (Vec<&Report>, Vec<&Report>) =
            latest.values().partition(|r| is_fresh(r, now));
        let on_target = alive.iter().filter(|r| follows(r)).count();
        let converged = on_target >= expected && on_target == alive.len();
        if converged || tokio::time::Instant::now() >= deadline {
            break Convergence {
                converged,
                on_target,
                alive: alive.len(),
                gone: gone.iter().map(|r| r.id.clone()).collect(),
                laggards: alive
                    .iter()
                    .filter(|r| !follows(r))
                    .map(|r| format!("{} (on {}, epoch {})", r.id, r.cluster, r.epoch))
                    .collect(),
                newer,
                waited: started.elapsed(),
            };
        }
    };
    for w in watchers {
        w.abort();
    }
    conv
}

/// Streams every report written to one cluster from `from` on.
async fn watch_reports<L: ControlLog>(
    mut log: L,
    mut from: i64,
    tx: mpsc::UnboundedSender<Report>,
) {
    loop {
        match log
            .read(Part::Reports, from, Duration::from_millis(100))
            .await
        {
            Ok(got) => {
                for e in got {
                    from = e.offset + 1;
                    if let Ok(r) = serde_json::from_slice::<Report>(&e.value) {
                        if tx.send(r).is_err() {
                            return;
                        }
                    }
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// For the benchmark and tests: the traffic counters of a set of logs.
pub fn traffic_of(logs: &[(String, KafkaControlLog)]) -> Vec<Arc<super::client::Traffic>> {
    logs.iter().map(|(_, l)| l.traffic.clone()).collect()
}

#[cfg(test)]
mod tests {
    //! `failover` on two in-memory clusters with simulated sidecars (the real follower
    //! and reporter tasks), on paused time.
    use std::sync::Arc;

    use parking_lot::Mutex;
    use tokio::sync::watch;

    use super::super::follower::{follow, report, ControlState};

    #[test]
    fn the_waiting_line_counts_what_it_waits_for() {
        assert_eq!(
            super::waiting_line(0, Some(2), 3),
            "waiting for 2 sidecars (none reported recently) to follow epoch 3 ..."
        );
        assert_eq!(
            super::waiting_line(1, Some(2), 3),
            "waiting for 2 sidecars (1 reporting so far) to follow epoch 3 ..."
        );
        assert_eq!(
            super::waiting_line(2, Some(2), 3),
            "waiting for the 2 sidecars reporting to follow epoch 3 ..."
        );
        assert_eq!(
            super::waiting_line(1, None, 1),
            "waiting for the 1 sidecar reporting to follow epoch 1 ..."
        );
    }
    use super::super::log::memory::MemoryLog;
    use super::*;

    const REPORT_INTERVAL: Duration = Duration::from_secs(1);

    fn config() -> Config {
        Config::parse(
            r#"
listen: {address: 127.0.0.1, bootstrap_port: 19092, broker_port_base: 19100}
active_cluster: north
clusters:
  north: {bootstrap_servers: ["n1:9092"]}
  west: {bootstrap_servers: ["w1:9092"]}
control: {poll_wait: 100ms, report_interval: 1s}
"#,
        )
        .unwrap()
    }

    struct Clusters {
        north: MemoryLog,
        west: MemoryLog,
        clock: Clock,
    }

    impl Clusters {
        fn new() -> Clusters {
            let clock = super::super::paused_clock();
            Clusters {
                north: MemoryLog::with_clock(clock.clone()),
                west: MemoryLog::with_clock(clock.clone()),
                clock,
            }
        }

        fn logs(&self) -> Vec<(String, MemoryLog)> {
            vec![
                ("north".into(), self.north.clone()),
                ("west".into(), self.west.clone()),
            ]
        }

        /// A sidecar on north that reports to both clusters every second and, if
        /// `follows`, reads the decisions and moves to the cluster they name. Stops
        /// when the returned sender is dropped.
        fn sidecar(&self, id: &str, follows: bool) -> watch::Sender<bool> {
            let state = Arc::new(ControlState::new(id.into()));
            let on = Arc::new(Mutex::new("north".to_string()));
            let (stop, stop_rx) = watch::channel(false);
            for (name, log) in self.logs() {
                if follows {
                    let (state2, on) = (state.clone(), on.clone());
                    tokio::spawn(follow(
                        log.clone(),
                        name.clone(),
                        state.clone(),
                        Duration::from_millis(100),
                        move |d: Decision| {
                            *on.lock() = d.active.clone();
                            state2.note_applied(d.epoch);
                        },
                        stop_rx.clone(),
                    ));
                }
                let (state2, on, clock, id) = (
                    state.clone(),
                    on.clone(),
                    self.clock.clone(),
                    id.to_string(),
                );
                tokio::spawn(report(
                    log,
                    name,
                    state.clone(),
                    REPORT_INTERVAL,
                    move || Report {
                        id: id.clone(),
                        host: "h".into(),
                        pid: 1,
                        cluster: on.lock().clone(),
                        epoch: state2.applied_epoch(),
                        at_ms: clock(),
                        interval_ms: REPORT_INTERVAL.as_millis() as u64,
                        reachable: vec![],
                    },
                    stop_rx.clone(),
                ));
            }
            stop
        }

        /// Starts sidecars `(id, follows)` and lets each report twice.
        async fn reporting(&self, sidecars: &[(&str, bool)]) -> Vec<watch::Sender<bool>> {
            let stops = sidecars
                .iter()
                .map(|(id, follows)| self.sidecar(id, *follows))
                .collect();
            tokio::time::sleep(REPORT_INTERVAL * 2).await;
            stops
        }

        async fn failover(&self, expect: Option<usize>) -> anyhow::Result<Convergence> {
            failover_on(
                &config(),
                self.logs(),
                FailoverArgs {
                    to: "west".into(),
                    reason: "test".into(),
                    timeout: Duration::from_secs(30),
                    expect,
                },
                &self.clock,
            )
            .await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn converges_when_every_reporting_sidecar_follows() {
        let c = Clusters::new();
        let _s = c
            .reporting(&[("s1", true), ("s2", true), ("s3", true)])
            .await;
        let conv = c.failover(None).await.unwrap();
        assert!(conv.converged, "{conv:?}");
        assert_eq!((conv.on_target, conv.alive), (3, 3), "{conv:?}");
        assert!(conv.gone.is_empty() && conv.laggards.is_empty(), "{conv:?}");
        // The decision is on both clusters, and a second one builds on it.
        for log in [&c.north, &c.west] {
            let mut log = log.clone();
            let ds = decisions(&mut log).await.unwrap();
            assert_eq!(ds.len(), 1);
            assert_eq!((ds[0].epoch, ds[0].active.as_str()), (1, "west"));
            assert_eq!(ds[0].previous.as_deref(), Some("north"));
        }
        c.failover(None).await.unwrap();
        let mut west = c.west.clone();
        assert_eq!(decisions(&mut west).await.unwrap()[1].epoch, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sidecar_that_stopped_reporting_is_named_and_not_waited_for() {
        let c = Clusters::new();
        let mut s = c.reporting(&[("s1", true), ("s2", false)]).await;
        // s2 reported recently, then stops (shut down) without following.
        drop(s.pop());
        let conv = c.failover(None).await.unwrap();
        assert!(conv.converged, "{conv:?}");
        assert_eq!(conv.on_target, 1, "{conv:?}");
        assert_eq!(conv.gone, vec!["s2".to_string()], "{conv:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_naming_the_sidecars_that_do_not_follow() {
        let c = Clusters::new();
        // s2 keeps reporting but cannot read the decisions.
        let _s = c.reporting(&[("s1", true), ("s2", false)]).await;
        let err = c.failover(None).await.unwrap_err().to_string();
        assert!(err.contains("only 1/2 sidecars on west"), "{err}");
        assert!(err.contains("Not yet: s2 (on north, epoch 0)"), "{err}");
        assert!(err.contains("decision epoch 1 is written"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn expect_waits_for_sidecars_that_have_not_reported_yet() {
        let c = Clusters::new();
        let _s = c.reporting(&[("s1", true)]).await;
        let err = c.failover(Some(2)).await.unwrap_err().to_string();
        assert!(err.contains("only 1/2 sidecars on west"), "{err}");
        assert!(err.contains("fewer sidecars than --expect"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_cluster_is_skipped_and_all_unreadable_writes_nothing() {
        let c = Clusters::new();
        let _s = c.reporting(&[("s1", true)]).await;
        c.north.set_down(true);
        let conv = c.failover(None).await.unwrap();
        assert!(conv.converged, "{conv:?}");
        c.west.set_down(true);
        let err = c.failover(None).await.unwrap_err().to_string();
        assert!(err.contains("nothing written"), "{err}");
    }
}
