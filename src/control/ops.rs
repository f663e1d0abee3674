//! Operator commands: `kafka-sidecar failover` and `kafka-sidecar fleet`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::client::{KafkaControlLog, Topics};
use super::log::{read_to_end, ControlLog, Part};
use super::{highest, now_ms, Decision, Origin, Report};
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
struct Snapshot {
    name: String,
    log: KafkaControlLog,
    result: anyhow::Result<(Vec<Decision>, BTreeMap<String, Report>, i64)>,
}

async fn snapshot(cfg: &Config, create: bool) -> anyhow::Result<Vec<Snapshot>> {
    let c = control_of(cfg)?;
    let window = (c.report_interval * STALE_INTERVALS as u32).max(Duration::from_secs(15));
    let since = now_ms() - window.as_millis() as i64;
    let tasks = logs(cfg, create)?
        .into_iter()
        .map(|(name, mut log)| async move {
            let result = async {
                let ds = decisions(&mut log).await?;
                let (reports, end) = recent_reports(&mut log, since).await?;
                Ok((ds, reports, end))
            }
            .await;
            Snapshot { name, log, result }
        });
    Ok(futures::future::join_all(tasks).await)
}

/// `kafka-sidecar fleet`: every sidecar that reported recently, and each cluster's decision.
pub async fn fleet(cfg: &Config, json: bool) -> anyhow::Result<()> {
    let snaps = snapshot(cfg, false).await?;
    let now = now_ms();
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
    if !cfg.clusters.contains_key(&args.to) {
        bail!(
            "--to: '{}' is not one of the configured clusters ({})",
            args.to,
            cfg.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let snaps = snapshot(cfg, true).await?;
    let mut all = vec![];
    let mut fleet: BTreeMap<String, Report> = BTreeMap::new();
    let now = now_ms();
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
        at_ms: now_ms(),
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
    let started = Instant::now();
    let mut watchers = vec![];
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
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
        watchers.push(tokio::spawn(watch_reports(log, end, tx.clone())));
    }
    drop(tx);
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
    println!(
        "waiting for the {} sidecars reporting{} to follow epoch {} ...",
        fleet.len(),
        args.expect
            .map(|n| format!(" (at least {n})"))
            .unwrap_or_default(),
        decision.epoch
    );
    // Everyone known: the recent reporters, plus any sidecar that reports meanwhile.
    let mut latest: BTreeMap<String, Report> = fleet.clone();
    let follows = |r: &Report| r.epoch >= decision.epoch && r.cluster == decision.active;
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut newer = None;
    let (converged, on_target, alive, gone) = loop {
        tokio::select! {
            r = rx.recv() => match r {
                Some(r) => {
                    if r.epoch > decision.epoch && newer.is_none() {
                        println!("a newer decision (epoch {}) took over while waiting", r.epoch);
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
        let now = now_ms();
        let alive: Vec<&Report> = latest.values().filter(|r| is_fresh(r, now)).collect();
        let on_target = alive.iter().filter(|r| follows(r)).count();
        let gone = latest.len() - alive.len();
        let enough = on_target >= expected;
        let timed_out = tokio::time::Instant::now() >= deadline;
        if (enough && on_target == alive.len()) || timed_out {
            break (
                enough && on_target == alive.len(),
                on_target,
                alive.len(),
                gone,
            );
        }
    };
    for w in watchers {
        w.abort();
    }
    let total = alive.max(expected);
    let secs = started.elapsed().as_secs_f64();
    let gone_note = if gone > 0 {
        format!("; {gone} stopped reporting")
    } else {
        String::new()
    };
    if converged {
        println!(
            "{on_target}/{total} sidecars on {} after {secs:.2} s (decision epoch {}){gone_note}",
            decision.active, decision.epoch
        );
        return Ok(());
    }
    let now = now_ms();
    let laggards: Vec<String> = latest
        .values()
        .filter(|r| is_fresh(r, now) && !follows(r))
        .map(|r| format!("{} (on {}, epoch {})", r.id, r.cluster, r.epoch))
        .collect();
    bail!(
        "only {on_target}/{total} sidecars on {} after {secs:.1} s{gone_note} (decision epoch {} is written; sidecars follow it when they can read a control topic). Not yet: {}",
        decision.active,
        decision.epoch,
        if laggards.is_empty() { "(fewer sidecars than --expect)".to_string() } else { laggards.join(", ") }
    )
}

/// Streams every report written to one cluster from `from` on.
async fn watch_reports(mut log: KafkaControlLog, mut from: i64, tx: mpsc::UnboundedSender<Report>) {
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
