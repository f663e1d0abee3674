//! Load generator: the same workloads directly against an upstream and through
//! kafka-sidecar (and, as the floor, through HAProxy in TCP mode), alternating,
//! repeated, with medians, an HTML report and a JSON summary.
//!
//! ```text
//! cargo build --release --bin kafka-sidecar
//! cargo bench --bench loadtest -- [--rounds 3] [--bootstrap host:port] [--quick]
//! ```
//!
//! The proxy runs as a child process (`target/release/kafka-sidecar run --config ...`),
//! so its CPU seconds (utime + stime from `/proc/<pid>/stat`) and peak RSS (`VmHWM`)
//! are its own, not the load generator's. The default upstream is an embedded
//! librdkafka mock cluster (3 brokers, a fresh one per run); `--bootstrap` points every
//! run at a real cluster instead.
//!
//! Modes:
//! - `direct`: clients to the upstream;
//! - `proxied`: clients to kafka-sidecar (no `admin:` section, so no metrics recorder);
//! - `proxied_metrics`: the same with an `admin:` section (metrics recorder on);
//! - `haproxy_chain`: clients to HAProxy (TCP mode, no Kafka parsing) in front of
//!   kafka-sidecar. HAProxy relays exactly the bytes kafka-sidecar relays, so its CPU
//!   seconds per GB in that run is the floor a proxy process can reach on the same
//!   traffic. (HAProxy cannot sit alone in front of the upstream: the brokers advertise
//!   their own addresses and the clients would bypass it. kafka-sidecar advertises
//!   127.0.0.2, where HAProxy listens, and itself listens on 127.0.0.1.)
//!
//! Every loop is bounded in messages and in time.
//!
//! Modules: `cli` (options), `relays` (kafka-sidecar and HAProxy as child processes),
//! `sampling` (their CPU and memory from `/proc`), `clients` (producers, consumer, idle
//! connections), `workloads` (one run of a workload in a mode), `stats` (medians, targets),
//! `report` (HTML with inline SVG).

mod cli;
mod clients;
mod relays;
mod report;
mod sampling;
mod stats;
mod workloads;

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::Parser;
use serde_json::json;

use cli::{haproxy_bin, Args};
use relays::{pin_self_away_from, Ports};
use report::{fmt_num, html_report, now_utc};
use sampling::clk_tck;
use stats::{modes_for, summarize};
use workloads::{run_one, Env, Workload};

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if !args.bench {
        // `cargo test --benches` runs bench targets without --bench: nothing to test here.
        println!("loadtest: run with `cargo bench --bench loadtest -- [options]`");
        return Ok(());
    }
    if args.quick {
        args.rounds = 1;
    }
    if let Some(cpu) = args.pin_proxy_cpu {
        pin_self_away_from(cpu)?;
    }
    let proxy_bin = args.proxy_bin.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/kafka-sidecar")
    });
    if !proxy_bin.exists() {
        bail!(
            "{} not found: run `cargo build --release --bin kafka-sidecar` first (or pass --proxy-bin)",
            proxy_bin.display()
        );
    }
    let haproxy_bin = haproxy_bin(&args.haproxy_bin).filter(|b| Path::new(b).exists());
    let workloads: Vec<Workload> = args
        .workloads
        .split(',')
        .map(Workload::parse)
        .collect::<anyhow::Result<_>>()?;
    let dir = std::env::temp_dir().join(format!("kafka-sidecar-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let env = Env {
        args: args.clone(),
        proxy_bin,
        haproxy_bin,
        tck: clk_tck(),
        dir: dir.clone(),
        ports: Ports::pick(),
    };
    let upstream = match &args.bootstrap {
        Some(b) => format!("{b} (real cluster)"),
        None => format!(
            "embedded librdkafka mock cluster, {} brokers, fresh per run, in the load generator's process",
            args.mock_brokers
        ),
    };
    println!(
        "kafka-sidecar loadtest: {} rounds, upstream: {upstream}",
        args.rounds
    );
    println!(
        "proxy: {} (child process); floor: {}; {}",
        env.proxy_bin.display(),
        env.haproxy_bin
            .as_deref()
            .unwrap_or("none (HAProxy not found)"),
        match args.pin_proxy_cpu {
            Some(c) => format!("relays pinned to CPU {c}, load generator to the others"),
            None => "no CPU pinning (everything shares every core)".to_string(),
        }
    );
    let started = Instant::now();
    let mut results = vec![];
    for round in 0..args.rounds {
        for w in &workloads {
            let mut modes = modes_for(*w, env.haproxy_bin.is_some());
            // Alternate: odd rounds run the modes in reverse order.
            if round % 2 == 1 {
                modes.reverse();
            }
            for mode in modes {
                let r = run_one(&env, *w, mode, round)
                    .with_context(|| format!("round {round}, {} via {}", w.name(), mode.name()))?;
                println!(
                    "[{:>5.1}s] round {round} {:<11} {:<15} {:>8} msgs {:>8.0} msg/s {:>7.1} MB/s  p50 {:>7.0} µs p99 {:>7.0} µs  consume {:>7.1} MB/s ({} in {:.2} s){}{}{}{}",
                    started.elapsed().as_secs_f64(),
                    w.name(),
                    mode.name(),
                    r.produced,
                    r.produce_msgs_per_s,
                    r.produce_mb_per_s,
                    r.latency.p50_us,
                    r.latency.p99_us,
                    r.consume_mb_per_s,
                    r.consumed,
                    r.consume_seconds,
                    r.proxy
                        .as_ref()
                        .map(|p| format!("  proxy {:.2} CPU-s ({:.2}/GB) peak RSS {:.1} MiB", p.cpu_seconds, p.cpu_seconds_per_gb, p.peak_rss_mib))
                        .unwrap_or_default(),
                    if r.connections > 0 {
                        format!("  {} idle connections", r.connections)
                    } else {
                        String::new()
                    },
                    r.haproxy
                        .as_ref()
                        .map(|p| format!("  haproxy {:.2} CPU-s ({:.2}/GB)", p.cpu_seconds, p.cpu_seconds_per_gb))
                        .unwrap_or_default(),
                    if r.produce_errors > 0 { format!("  {} errors", r.produce_errors) } else { String::new() },
                );
                results.push(r);
            }
        }
    }
    let (summary, targets) = summarize(&results);
    println!("\nmedians:");
    if let Some(obj) = summary["medians"].as_object() {
        for (k, v) in obj {
            println!("  {k:<28} {v}");
        }
    }
    println!(
        "\nproxied/direct: {}",
        summary["ratios_proxied_over_direct"]
    );
    println!("\ntargets:");
    for t in &targets {
        println!(
            "  [{}] {}: {} {} (required {} {}; {})",
            match t.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "n/a ",
            },
            t.name,
            t.measured.map(fmt_num).unwrap_or_else(|| "-".into()),
            t.unit,
            t.target,
            t.unit,
            t.by
        );
    }
    std::fs::create_dir_all(&args.out)?;
    let full = json!({
        "date": now_utc(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "upstream": upstream,
        "pin_proxy_cpu": args.pin_proxy_cpu,
        "args": format!("{:?}", args),
        "summary": summary,
        "runs": results,
    });
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&full)?,
    )?;
    std::fs::write(
        args.out.join("report.html"),
        html_report(&args, &upstream, &results, &summary, &targets),
    )?;
    println!(
        "\nwrote {} and {} in {:.0} s",
        args.out.join("report.html").display(),
        args.out.join("summary.json").display(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
