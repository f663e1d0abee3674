//! The HTML report with its inline SVG charts.

use std::process::Command;

use crate::cli::Args;
use crate::modes::Mode;
use crate::stats::{Comparison, Spread, Target};
use crate::workloads::{RunResult, Workload};

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
pub fn median_run<'a>(
    results: &'a [RunResult],
    target: &str,
    w: Workload,
    mode: Mode,
) -> Option<&'a RunResult> {
    let mut runs: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.target == target && r.workload == w && r.mode == mode)
        .collect();
    runs.sort_by(|a, b| a.produce_mb_per_s.total_cmp(&b.produce_mb_per_s));
    runs.get(runs.len() / 2).copied()
}

/// The cells of one comparison row: mode, MB/s, ratio to direct, relay CPU-s/GB, p99,
/// added p99 (each "median (min–max)" over the rounds).
fn comparison_cells(c: &Comparison) -> [String; 8] {
    let show = |s: &Option<Spread>, f: &dyn Fn(f64) -> String| {
        s.map(|s| s.show(f)).unwrap_or_else(|| "-".into())
    };
    let signed = |v: f64| format!("{v:+.0}");
    let ratio = |v: f64| format!("{v:.2}");
    [
        format!("{} / {} / {}", c.target, c.workload.name(), c.mode.name()),
        show(&c.produce_mb_per_s, &fmt_num),
        show(&c.throughput_ratio, &ratio),
        show(&c.consume_ratio, &ratio),
        show(&c.relay_cpu_s_per_gb, &ratio),
        show(&c.p99_us, &fmt_num),
        show(&c.added_p99_us, &signed),
        if c.errors > 0 {
            c.errors.to_string()
        } else {
            String::new()
        },
    ]
}

const COMPARISON_HEADERS: [&str; 8] = [
    "target / workload / mode",
    "produce MB/s",
    "produce ratio to direct",
    "consume ratio",
    "relay CPU-s/GB",
    "p99 µs",
    "added p99 µs",
    "errors",
];

/// The comparison table on the terminal.
pub fn print_comparisons(cmp: &[Comparison], rounds: usize) {
    println!(
        "\neach mode against direct on the same target, in the same round; median (min–max) over {rounds} round(s).\n\
         relay CPU-s/GB: kafka-sidecar (sidecar modes), HAProxy (haproxy_chain), Kroxylicious; added p99: fixed_rate is the latency measurement"
    );
    let rows: Vec<[String; 8]> = cmp.iter().map(comparison_cells).collect();
    let mut width = COMPARISON_HEADERS.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i == 0 {
                l += &format!(" {c}{}", " ".repeat(pad));
            } else {
                l += &format!("  {}{c}", " ".repeat(pad));
            }
        }
        println!("{}", l.trim_end());
    };
    line(&COMPARISON_HEADERS.map(String::from));
    for r in &rows {
        line(r);
    }
}

pub fn html_report(
    args: &Args,
    upstreams: &[String],
    results: &[RunResult],
    comparisons: &[Comparison],
    summary: &serde_json::Value,
    targets: &[Target],
) -> String {
    let mut body = String::new();
    body += &format!(
        "<h1>kafka-sidecar load test</h1><p>{} &middot; {} CPUs &middot; {} rounds, modes alternated, medians quoted &middot; {} producers</p><ul>{}</ul>",
        esc(&now_utc()),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        args.rounds,
        if args.no_idempotence { "non-idempotent (acks=all)" } else { "idempotent (acks=all)" },
        upstreams.iter().map(|u| format!("<li>{}</li>", esc(u))).collect::<String>()
    );
    body += "<h2>Each mode against direct</h2><p>Same target, same round; median (min&ndash;max) over the rounds. Relay CPU-s/GB: kafka-sidecar in the sidecar modes, HAProxy in haproxy_chain, the Kroxylicious JVM in kroxylicious. fixed_rate is the latency measurement (added p99 = mode p99 &minus; direct p99 in the same round).</p><table><tr>";
    for h in COMPARISON_HEADERS {
        body += &format!("<th>{}</th>", esc(h));
    }
    body += "</tr>";
    for c in comparisons {
        body += "<tr>";
        for cell in comparison_cells(c) {
            body += &format!("<td>{}</td>", esc(&cell));
        }
        body += "</tr>";
    }
    body += "</table>";
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
    body += "<h2>Medians</h2><table><tr><th>workload/mode</th><th>produce msg/s</th><th>produce MB/s</th><th>consume MB/s</th><th>p50 µs</th><th>p99 µs</th><th>p99.9 µs</th><th>max µs</th><th>relay CPU s</th><th>relay CPU-s/GB</th><th>relay peak RSS MiB</th><th>kafka-sidecar CPU-s/GB</th></tr>";
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
                f("relay_cpu_seconds"),
                f("relay_cpu_seconds_per_gb"),
                f("relay_peak_rss_mib"),
                f("sidecar_cpu_seconds_per_gb"),
            );
        }
    }
    body += "</table><h2>Charts (the median run of each mode)</h2><div class='charts'>";
    let mut panels: Vec<(&str, Workload)> = results
        .iter()
        .map(|r| (r.target.as_str(), r.workload))
        .collect();
    panels.sort();
    panels.dedup();
    for (t, w) in panels {
        let mut modes: Vec<Mode> = results
            .iter()
            .filter(|r| r.target == t && r.workload == w)
            .map(|r| r.mode)
            .collect();
        modes.sort();
        modes.dedup();
        let runs: Vec<&RunResult> = modes
            .iter()
            .filter_map(|m| median_run(results, t, w, *m))
            .collect();
        let tp: Vec<Series> = runs
            .iter()
            .map(|r| Series {
                name: r.mode.name(),
                color: r.mode.color(),
                points: r.series.clone(),
            })
            .collect();
        body += &svg_chart(
            &format!("{t} / {}: acknowledged produce throughput", w.name()),
            "seconds",
            "MB/s",
            &tp,
            false,
        );
        let lat: Vec<Series> = runs
            .iter()
            .map(|r| Series {
                name: r.mode.name(),
                color: r.mode.color(),
                points: r
                    .latency
                    .curve
                    .iter()
                    .map(|&(p, us)| (p, us / 1000.0))
                    .collect(),
            })
            .collect();
        body += &svg_chart(
            &format!("{t} / {}: produce latency by percentile", w.name()),
            "percentile",
            "ms",
            &lat,
            true,
        );
    }
    body += "</div><h2>Every run</h2><table><tr><th>target</th><th>round</th><th>workload</th><th>mode</th><th>produced</th><th>errors</th><th>MB/s</th><th>consume MB/s</th><th>cores while consuming: consumer / broker / relays</th><th>p99 µs</th><th>relay CPU s</th><th>relay CPU-s/GB</th><th>relay peak RSS MiB</th><th>kafka-sidecar CPU-s/GB</th></tr>";
    for r in results {
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.target),
            r.round,
            r.workload.name(),
            r.mode.name(),
            r.produced,
            r.produce_errors,
            r.produce_mb_per_s,
            r.consume_mb_per_s,
            if r.consumed > 0 {
                let c = &r.consume_cores;
                let opt = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
                format!("{:.2} / {} / {}", c.consumer, opt(c.broker), opt(c.relays))
            } else {
                String::new()
            },
            r.latency.p99_us,
            r.relay().map(|p| format!("{:.2}", p.cpu_seconds)).unwrap_or_default(),
            r.relay().map(|p| format!("{:.2}", p.cpu_seconds_per_gb)).unwrap_or_default(),
            r.relay().map(|p| format!("{:.1}", p.peak_rss_mib)).unwrap_or_default(),
            r.proxy.as_ref().map(|p| format!("{:.2}", p.cpu_seconds_per_gb)).unwrap_or_default(),
        );
    }
    body += "</table><p>CPU seconds per GB: the process's utime+stime during the run divided by payload bytes produced plus consumed. sidecar_switched: kafka-sidecar switched once (spare &rarr; the measured upstream) before the run, so it rewrites every idempotent batch. haproxy_chain: clients &rarr; HAProxy (TCP mode) &rarr; kafka-sidecar &rarr; upstream; HAProxy's figure is the floor for relaying the same bytes. kroxylicious: Kroxylicious 0.12, no filters. Latency of the fixed-rate workload is measured from each message's scheduled send time.</p>";
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
