//! Medians over the rounds, ratios, and the targets they are held to.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use crate::workloads::{Mode, RunResult, Workload};

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

pub fn modes_for(w: Workload, haproxy: bool) -> Vec<Mode> {
    let mut m = vec![Mode::Direct, Mode::Proxied];
    if w == Workload::Small {
        m.push(Mode::ProxiedMetrics);
    }
    if haproxy && matches!(w, Workload::Small | Workload::Large) {
        m.push(Mode::HaproxyChain);
    }
    m
}

pub fn summarize(results: &[RunResult]) -> (serde_json::Value, Vec<Target>) {
    let mut groups: BTreeMap<(Workload, Mode), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        groups.entry((r.workload, r.mode)).or_default().push(r);
    }
    let mut medians = serde_json::Map::new();
    let mut m: BTreeMap<(Workload, Mode, &str), f64> = BTreeMap::new();
    for ((w, mode), runs) in &groups {
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
                "proxy_cpu_seconds",
                med(runs, |r| r.proxy.as_ref().map(|p| p.cpu_seconds)),
            ),
            (
                "proxy_cpu_seconds_per_gb",
                med(runs, |r| r.proxy.as_ref().map(|p| p.cpu_seconds_per_gb)),
            ),
            (
                "proxy_peak_rss_mib",
                med(runs, |r| r.proxy.as_ref().map(|p| p.peak_rss_mib)),
            ),
            (
                "haproxy_cpu_seconds",
                med(runs, |r| r.haproxy.as_ref().map(|p| p.cpu_seconds)),
            ),
            (
                "haproxy_cpu_seconds_per_gb",
                med(runs, |r| r.haproxy.as_ref().map(|p| p.cpu_seconds_per_gb)),
            ),
            (
                "haproxy_peak_rss_mib",
                med(runs, |r| r.haproxy.as_ref().map(|p| p.peak_rss_mib)),
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
                m.insert((*w, *mode, k), v);
                obj.insert(k.into(), json!(v));
            }
        }
        medians.insert(format!("{}/{}", w.name(), mode.name()), obj.into());
    }
    let get = |w, mode, k| m.get(&(w, mode, k)).copied();
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let mut ratios = serde_json::Map::new();
    for w in [
        Workload::Small,
        Workload::Large,
        Workload::Connections,
        Workload::FixedRate,
    ] {
        for k in [
            "produce_mb_per_s",
            "consume_mb_per_s",
            "p50_us",
            "p99_us",
            "p999_us",
        ] {
            if let Some(r) = ratio(get(w, Mode::Proxied, k), get(w, Mode::Direct, k)) {
                ratios.insert(format!("{}/{k}", w.name()), json!(r));
            }
        }
    }

    let mut targets = vec![];
    let min_target = |name: &str, t: f64, v: Option<f64>, unit: &str| Target {
        name: name.into(),
        target: format!(">= {t}"),
        measured: v,
        unit: unit.into(),
        pass: v.map(|v| v >= t),
        by: v
            .map(|v| format!("{:+.1} %", (v - t) / t * 100.0))
            .unwrap_or_else(|| "not measured".into()),
    };
    let max_target = |name: &str, t: f64, v: Option<f64>, unit: &str| Target {
        name: name.into(),
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
    targets.push(min_target(
        "small messages: proxied/direct produce throughput",
        0.95,
        ratio(
            get(Workload::Small, Mode::Proxied, "produce_mb_per_s"),
            get(Workload::Small, Mode::Direct, "produce_mb_per_s"),
        ),
        "ratio",
    ));
    targets.push(min_target(
        "large messages: proxied/direct produce throughput",
        0.98,
        ratio(
            get(Workload::Large, Mode::Proxied, "produce_mb_per_s"),
            get(Workload::Large, Mode::Direct, "produce_mb_per_s"),
        ),
        "ratio",
    ));
    for w in [Workload::Small, Workload::Large] {
        targets.push(max_target(
            &format!(
                "{} messages: kafka-sidecar CPU-s/GB / HAProxy CPU-s/GB",
                w.name()
            ),
            1.5,
            ratio(
                get(w, Mode::Proxied, "proxy_cpu_seconds_per_gb"),
                get(w, Mode::HaproxyChain, "haproxy_cpu_seconds_per_gb"),
            ),
            "x",
        ));
    }
    targets.push(max_target(
        "fixed rate: added p99 produce latency (proxied - direct)",
        100.0,
        match (
            get(Workload::FixedRate, Mode::Proxied, "p99_us"),
            get(Workload::FixedRate, Mode::Direct, "p99_us"),
        ) {
            (Some(p), Some(d)) => Some(p - d),
            _ => None,
        },
        "us",
    ));
    targets.push(max_target(
        "many connections: proxy peak RSS",
        64.0,
        get(Workload::Connections, Mode::Proxied, "proxy_peak_rss_mib"),
        "MiB",
    ));
    let summary = json!({
        "medians": medians,
        "ratios_proxied_over_direct": ratios,
        "targets": targets,
    });
    (summary, targets)
}
