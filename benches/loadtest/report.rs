//! The HTML report with its inline SVG charts.

use std::process::Command;

use crate::cli::Args;
use crate::stats::Target;
use crate::workloads::{Mode, RunResult, Workload};

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// A small line chart as inline SVG. `x_nines`: x is a percentile, drawn on a
/// "number of nines" axis.
pub fn svg_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_nines: bool,
) -> String {
    let (w, h, l, r, t, b) = (560.0, 300.0, 60.0, 130.0, 30.0, 40.0);
    let tx = |x: f64| {
        if x_nines {
            -(1.0 - x / 100.0).max(1e-6).log10()
        } else {
            x
        }
    };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(x, y)| (tx(x), y)))
        .collect();
    let xmax = pts.iter().map(|p| p.0).fold(0.0f64, f64::max).max(1e-9);
    let xmin = if x_nines { tx(50.0) } else { 0.0 };
    let ymax = pts.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let sx = |x: f64| l + (x - xmin) / (xmax - xmin).max(1e-9) * (w - l - r);
    let sy = |y: f64| h - b - y / ymax * (h - t - b);
    let mut o = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='11'>\
         <text x='{}' y='16' font-size='13' font-weight='bold'>{}</text>",
        l,
        esc(title)
    );
    o += &format!(
        "<line x1='{l}' y1='{}' x2='{}' y2='{}' stroke='#333'/><line x1='{l}' y1='{t}' x2='{l}' y2='{}' stroke='#333'/>",
        h - b, w - r, h - b, h - b
    );
    for i in 0..=4 {
        let y = ymax * i as f64 / 4.0;
        o += &format!(
            "<line x1='{l}' x2='{}' y1='{py}' y2='{py}' stroke='#eee'/><text x='{}' y='{}' text-anchor='end'>{}</text>",
            w - r,
            l - 4.0,
            sy(y) + 4.0,
            fmt_num(y),
            py = sy(y)
        );
    }
    let xticks: Vec<(f64, String)> = if x_nines {
        [50.0, 90.0, 99.0, 99.9, 99.99]
            .iter()
            .map(|&p| (tx(p), format!("p{p}")))
            .collect()
    } else {
        (0..=4)
            .map(|i| {
                let x = xmax * i as f64 / 4.0;
                (x, format!("{x:.1}"))
            })
            .collect()
    };
    for (x, label) in xticks {
        o += &format!(
            "<text x='{}' y='{}' text-anchor='middle'>{}</text>",
            sx(x),
            h - b + 14.0,
            label
        );
    }
    o += &format!(
        "<text x='{}' y='{}' text-anchor='middle'>{}</text><text x='12' y='{}' transform='rotate(-90 12 {})' text-anchor='middle'>{}</text>",
        (l + w - r) / 2.0,
        h - 6.0,
        esc(x_label),
        (t + h - b) / 2.0,
        (t + h - b) / 2.0,
        esc(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(tx(x)), sy(y)))
            .collect();
        o += &format!(
            "<polyline fill='none' stroke='{}' stroke-width='2' points='{}'/>",
            s.color,
            path.join(" ")
        );
        let ly = t + 14.0 * i as f64 + 10.0;
        o += &format!(
            "<line x1='{}' x2='{}' y1='{ly}' y2='{ly}' stroke='{}' stroke-width='3'/><text x='{}' y='{}'>{}</text>",
            w - r + 8.0,
            w - r + 24.0,
            s.color,
            w - r + 28.0,
            ly + 4.0,
            esc(s.name)
        );
    }
    o + "</svg>"
}

pub fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The run of each mode whose produce throughput is the median of its rounds.
pub fn median_run(results: &[RunResult], w: Workload, mode: Mode) -> Option<&RunResult> {
    let mut runs: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.workload == w && r.mode == mode)
        .collect();
    runs.sort_by(|a, b| a.produce_mb_per_s.total_cmp(&b.produce_mb_per_s));
    runs.get(runs.len() / 2).copied()
}

pub fn html_report(
    args: &Args,
    upstream: &str,
    results: &[RunResult],
    summary: &serde_json::Value,
    targets: &[Target],
) -> String {
    let mut body = String::new();
    body += &format!(
        "<h1>kafka-sidecar load test</h1><p>{} &middot; {} CPUs &middot; upstream: {} &middot; {} rounds, modes alternated, medians quoted</p>",
        esc(&now_utc()),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        esc(upstream),
        args.rounds
    );
    body += "<h2>Targets</h2><table><tr><th>target</th><th>required</th><th>measured (median)</th><th>result</th><th>margin</th></tr>";
    for t in targets {
        let (cls, res) = match t.pass {
            Some(true) => ("pass", "PASS"),
            Some(false) => ("miss", "MISS"),
            None => ("na", "n/a"),
        };
        body += &format!(
            "<tr><td>{}</td><td>{} {}</td><td>{}</td><td class='{cls}'>{res}</td><td>{}</td></tr>",
            esc(&t.name),
            esc(&t.target),
            esc(&t.unit),
            t.measured.map(fmt_num).unwrap_or_else(|| "-".into()),
            esc(&t.by)
        );
    }
    body += "</table>";
    body += "<h2>Medians</h2><table><tr><th>workload/mode</th><th>produce msg/s</th><th>produce MB/s</th><th>consume MB/s</th><th>p50 µs</th><th>p99 µs</th><th>p99.9 µs</th><th>max µs</th><th>proxy CPU s</th><th>proxy CPU-s/GB</th><th>proxy peak RSS MiB</th><th>HAProxy CPU-s/GB</th></tr>";
    if let Some(obj) = summary["medians"].as_object() {
        for (k, v) in obj {
            let f = |name: &str| v[name].as_f64().map(fmt_num).unwrap_or_else(|| "-".into());
            body += &format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(k),
                f("produce_msgs_per_s"),
                f("produce_mb_per_s"),
                f("consume_mb_per_s"),
                f("p50_us"),
                f("p99_us"),
                f("p999_us"),
                f("max_us"),
                f("proxy_cpu_seconds"),
                f("proxy_cpu_seconds_per_gb"),
                f("proxy_peak_rss_mib"),
                f("haproxy_cpu_seconds_per_gb"),
            );
        }
    }
    body += "</table><h2>Charts (the median run of each mode)</h2><div class='charts'>";
    let workloads: Vec<Workload> = {
        let mut v: Vec<Workload> = results.iter().map(|r| r.workload).collect();
        v.sort();
        v.dedup();
        v
    };
    for w in &workloads {
        let modes: Vec<Mode> = {
            let mut v: Vec<Mode> = results
                .iter()
                .filter(|r| r.workload == *w)
                .map(|r| r.mode)
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let tp: Vec<Series> = modes
            .iter()
            .filter_map(|m| {
                median_run(results, *w, *m).map(|r| Series {
                    name: m.name(),
                    color: m.color(),
                    points: r.series.clone(),
                })
            })
            .collect();
        body += &svg_chart(
            &format!("{}: acknowledged produce throughput", w.name()),
            "seconds",
            "MB/s",
            &tp,
            false,
        );
        let lat: Vec<Series> = modes
            .iter()
            .filter_map(|m| {
                median_run(results, *w, *m).map(|r| Series {
                    name: m.name(),
                    color: m.color(),
                    points: r
                        .latency
                        .curve
                        .iter()
                        .map(|&(p, us)| (p, us / 1000.0))
                        .collect(),
                })
            })
            .collect();
        body += &svg_chart(
            &format!("{}: produce latency by percentile", w.name()),
            "percentile",
            "ms",
            &lat,
            true,
        );
    }
    body += "</div><h2>Every run</h2><table><tr><th>round</th><th>workload</th><th>mode</th><th>produced</th><th>errors</th><th>MB/s</th><th>consume MB/s</th><th>p99 µs</th><th>proxy CPU s</th><th>proxy CPU-s/GB</th><th>proxy peak RSS MiB</th><th>HAProxy CPU-s/GB</th></tr>";
    for r in results {
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.round,
            r.workload.name(),
            r.mode.name(),
            r.produced,
            r.produce_errors,
            r.produce_mb_per_s,
            r.consume_mb_per_s,
            r.latency.p99_us,
            r.proxy.as_ref().map(|p| format!("{:.2}", p.cpu_seconds)).unwrap_or_default(),
            r.proxy.as_ref().map(|p| format!("{:.2}", p.cpu_seconds_per_gb)).unwrap_or_default(),
            r.proxy.as_ref().map(|p| format!("{:.1}", p.peak_rss_mib)).unwrap_or_default(),
            r.haproxy.as_ref().map(|p| format!("{:.2}", p.cpu_seconds_per_gb)).unwrap_or_default(),
        );
    }
    body += "</table><p>CPU seconds per GB: the process's utime+stime during the run divided by payload bytes produced plus consumed. haproxy_chain: clients &rarr; HAProxy (TCP mode) &rarr; kafka-sidecar &rarr; upstream; HAProxy's figure is the floor for relaying the same bytes. Latency of the fixed-rate workload is measured from each message's scheduled send time.</p>";
    format!(
        "<!doctype html><html><head><meta charset='utf-8'><title>kafka-sidecar load test</title><style>\
         body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}} \
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:first-child,th:first-child{{text-align:left}} \
         .pass{{background:#d4f7d4}} .miss{{background:#f7d4d4}} .charts svg{{margin:6px;border:1px solid #ddd}}\
         </style></head><body>{body}</body></html>\n"
    )
}

pub fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
