//! Medians and spreads over the rounds, each mode compared with `direct` on the same target,
//! and the targets (issue 5) they are held to.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use crate::modes::Mode;
use crate::workloads::{RunResult, Workload};

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub fn med(runs: &[&RunResult], f: impl Fn(&RunResult) -> Option<f64>) -> Option<f64> {
    median(runs.iter().filter_map(|r| f(r)).collect())
}

#[derive(Serialize)]
pub struct Target {
    pub name: String,
    pub target: String,
    pub measured: Option<f64>,
    pub unit: String,
    pub pass: Option<bool>,
    pub by: String,
}

/// Median, minimum and maximum of one figure over the rounds: the spread is the run-to-run
/// noise to read any difference against.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(v: Vec<f64>) -> Option<Spread> {
        let v: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
        let median = median(v.clone())?;
        Some(Spread {
            median,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: v.len(),
        })
    }
    /// "median (min–max)", or just the median of a single round.
    pub fn show(&self, f: impl Fn(f64) -> String) -> String {
        if self.n > 1 {
            format!("{} ({}–{})", f(self.median), f(self.min), f(self.max))
        } else {
            f(self.median)
        }
    }
}

/// One mode against `direct`, on one target and workload, over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub target: String,
    pub workload: Workload,
    pub mode: Mode,
    pub produce_mb_per_s: Option<Spread>,
    /// This mode's produce throughput / direct's in the same round.
    pub throughput_ratio: Option<Spread>,
    pub consume_ratio: Option<Spread>,
    pub p50_us: Option<Spread>,
    pub p99_us: Option<Spread>,
    /// This mode's p50 / p99 minus direct's in the same round (fixed rate: the latency the
    /// relay adds).
    pub added_p50_us: Option<Spread>,
    pub added_p99_us: Option<Spread>,
    /// CPU seconds per GB of the mode's relay (kafka-sidecar, HAProxy in the chain, or
    /// Kroxylicious).
    pub relay_cpu_s_per_gb: Option<Spread>,
    pub relay_peak_rss_mib: Option<Spread>,
    pub errors: u64,
}

pub fn compare(results: &[RunResult]) -> Vec<Comparison> {
    let mut groups: BTreeMap<(&str, Workload, Mode), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        groups
            .entry((r.target.as_str(), r.workload, r.mode))
            .or_default()
            .push(r);
    }
    let direct = |t: &str, w: Workload, round: usize| {
        results.iter().find(|r| {
            r.target == t && r.workload == w && r.mode == Mode::Direct && r.round == round
        })
    };
    let mut out = vec![];
    for ((t, w, mode), runs) in &groups {
        let paired = |f: &dyn Fn(&RunResult, &RunResult) -> Option<f64>| {
            Spread::of(
                runs.iter()
                    .filter_map(|r| direct(t, *w, r.round).and_then(|d| f(r, d)))
                    .collect(),
            )
        };
        let each = |f: &dyn Fn(&RunResult) -> Option<f64>| {
            Spread::of(runs.iter().filter_map(|r| f(r)).collect())
        };
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        let is_direct = *mode == Mode::Direct;
        out.push(Comparison {
            target: t.to_string(),
            workload: *w,
            mode: *mode,
            produce_mb_per_s: each(&|r| Some(r.produce_mb_per_s)),
            throughput_ratio: if is_direct {
                None
            } else {
                paired(&|r, d| ratio(r.produce_mb_per_s, d.produce_mb_per_s))
            },
            consume_ratio: if is_direct {
                None
            } else {
                paired(&|r, d| {
                    (r.consumed > 0 && d.consumed > 0)
                        .then(|| ratio(r.consume_mb_per_s, d.consume_mb_per_s))
                        .flatten()
                })
            },
            p50_us: each(&|r| (r.latency.count > 0).then_some(r.latency.p50_us)),
            p99_us: each(&|r| (r.latency.count > 0).then_some(r.latency.p99_us)),
            added_p50_us: if is_direct {
                None
            } else {
                paired(&|r, d| Some(r.latency.p50_us - d.latency.p50_us))
            },
            added_p99_us: if is_direct {
                None
            } else {
                paired(&|r, d| Some(r.latency.p99_us - d.latency.p99_us))
            },
            relay_cpu_s_per_gb: each(&|r| r.relay().map(|p| p.cpu_seconds_per_gb)),
            relay_peak_rss_mib: each(&|r| r.relay().map(|p| p.peak_rss_mib)),
            errors: runs.iter().map(|r| r.produce_errors).sum(),
        });
    }
    out
}

pub fn summarize(results: &[RunResult]) -> (serde_json::Value, Vec<Comparison>, Vec<Target>) {
    let mut groups: BTreeMap<(&str, Workload, Mode), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        groups
            .entry((r.target.as_str(), r.workload, r.mode))
            .or_default()
            .push(r);
    }
    let mut medians = serde_json::Map::new();
    for ((t, w, mode), runs) in &groups {
        let fields: Vec<(&str, Option<f64>)> = vec![
            (
                "produce_msgs_per_s",
                med(runs, |r| Some(r.produce_msgs_per_s)),
            ),
            ("produce_mb_per_s", med(runs, |r| Some(r.produce_mb_per_s))),
            (
                "consume_msgs_per_s",
                med(runs, |r| (r.consumed > 0).then_some(r.consume_msgs_per_s)),
            ),
            (
                "consume_mb_per_s",
                med(runs, |r| (r.consumed > 0).then_some(r.consume_mb_per_s)),
            ),
            ("p50_us", med(runs, |r| Some(r.latency.p50_us))),
            ("p99_us", med(runs, |r| Some(r.latency.p99_us))),
            ("p999_us", med(runs, |r| Some(r.latency.p999_us))),
            ("max_us", med(runs, |r| Some(r.latency.max_us))),
            (
                "relay_cpu_seconds",
                med(runs, |r| r.relay().map(|p| p.cpu_seconds)),
            ),
            (
                "relay_cpu_seconds_per_gb",
                med(runs, |r| r.relay().map(|p| p.cpu_seconds_per_gb)),
            ),
            (
                "relay_peak_rss_mib",
                med(runs, |r| r.relay().map(|p| p.peak_rss_mib)),
            ),
            (
                "sidecar_cpu_seconds_per_gb",
                med(runs, |r| r.proxy.as_ref().map(|p| p.cpu_seconds_per_gb)),
            ),
            (
                "produce_errors",
                med(runs, |r| Some(r.produce_errors as f64)),
            ),
        ];
        let mut obj = serde_json::Map::new();
        obj.insert("runs".into(), json!(runs.len()));
        for (k, v) in fields {
            if let Some(v) = v {
                obj.insert(k.into(), json!(v));
            }
        }
        medians.insert(format!("{t}/{}/{}", w.name(), mode.name()), obj.into());
    }
    let comparisons = compare(results);
    let targets = targets(&comparisons);
    let summary = json!({
        "medians": medians,
        "comparisons": comparisons,
        "targets": targets,
    });
    (summary, comparisons, targets)
}

/// The targets of issue 5, for kafka-sidecar before a switch, on each upstream.
fn targets(cmp: &[Comparison]) -> Vec<Target> {
    let find = |t: &str, w: Workload, m: Mode| {
        cmp.iter()
            .find(|c| c.target == t && c.workload == w && c.mode == m)
    };
    let mut names: Vec<&str> = cmp.iter().map(|c| c.target.as_str()).collect();
    names.dedup();
    let mut out = vec![];
    let min_target = |name: String, t: f64, v: Option<f64>, unit: &str| Target {
        name,
        target: format!(">= {t}"),
        measured: v,
        unit: unit.into(),
        pass: v.map(|v| v >= t),
        by: v
            .map(|v| format!("{:+.1} %", (v - t) / t * 100.0))
            .unwrap_or_else(|| "not measured".into()),
    };
    let max_target = |name: String, t: f64, v: Option<f64>, unit: &str| Target {
        name,
        target: format!("<= {t}"),
        measured: v,
        unit: unit.into(),
        pass: v.map(|v| v <= t),
        by: v
            .map(|v| {
                if v <= t {
                    format!("{:.2} {unit} to spare", t - v)
                } else {
                    format!(
                        "over by {:.2} {unit} ({:+.0} %)",
                        v - t,
                        (v - t) / t * 100.0
                    )
                }
            })
            .unwrap_or_else(|| "not measured".into()),
    };
    for t in names {
        for (w, req) in [
            (Workload::Small, 0.95),
            (Workload::Kib, 0.95),
            (Workload::Large, 0.98),
        ] {
            if let Some(c) = find(t, w, Mode::Sidecar) {
                out.push(min_target(
                    format!(
                        "{t}: {} records: sidecar/direct produce throughput",
                        w.name()
                    ),
                    req,
                    c.throughput_ratio.map(|s| s.median),
                    "ratio",
                ));
            }
            if let (Some(s), Some(h)) = (find(t, w, Mode::Sidecar), find(t, w, Mode::HaproxyChain))
            {
                out.push(max_target(
                    format!(
                        "{t}: {} records: kafka-sidecar CPU-s/GB / HAProxy CPU-s/GB",
                        w.name()
                    ),
                    1.5,
                    match (s.relay_cpu_s_per_gb, h.relay_cpu_s_per_gb) {
                        (Some(a), Some(b)) if b.median > 0.0 => Some(a.median / b.median),
                        _ => None,
                    },
                    "x",
                ));
            }
        }
        if let Some(c) = find(t, Workload::FixedRate, Mode::Sidecar) {
            out.push(max_target(
                format!("{t}: fixed rate: added p99 produce latency (sidecar - direct)"),
                100.0,
                c.added_p99_us.map(|s| s.median),
                "us",
            ));
        }
        if let Some(c) = find(t, Workload::Connections, Mode::Sidecar) {
            out.push(max_target(
                format!("{t}: many connections: kafka-sidecar peak RSS"),
                64.0,
                c.relay_peak_rss_mib.map(|s| s.median),
                "MiB",
            ));
        }
    }
    out
}
