//! Load generator: the same workloads directly against an upstream, through kafka-sidecar
//! before and after a switch, through HAProxy (TCP mode) and through Kroxylicious, on
//! several upstreams, alternating, repeated, with medians, spreads, an HTML report and a
//! JSON summary.
//!
//! ```text
//! cargo build --release --bin kafka-sidecar
//! cargo bench --bench loadtest -- [--rounds 3] [--targets mock,tansu,kafka] [--quick]
//! ```
//!
//! The relays run as child processes (`target/release/kafka-sidecar run --config ...`,
//! HAProxy, the Kroxylicious JVM), so their CPU seconds (utime + stime from
//! `/proc/<pid>/stat`) and peak RSS (`VmHWM`) are their own, not the load generator's.
//!
//! Targets (upstreams, `--targets`): `mock` (embedded librdkafka mock cluster, 3 brokers,
//! fresh per run), `tansu` (the kit's tansu broker, in memory, fresh per run), `kafka` (one
//! Apache Kafka broker from `scripts/kafka-cluster.sh`, started once), and `--bootstrap` for
//! any other cluster ("external").
//!
//! Modes (`--modes`):
//! - `direct`: clients to the upstream;
//! - `sidecar`: clients to kafka-sidecar, never switched (idempotent batches pass through);
//! - `sidecar_switched`: kafka-sidecar started on a spare cluster and switched (config file
//!   rewritten, hot-reloaded) to the measured upstream before the run; the run starts once
//!   its admin `/status` shows the switch done. From then on its producer-identity feature
//!   rewrites every idempotent batch (producer id, epoch, sequence, CRC);
//! - `haproxy_chain`: clients to HAProxy (TCP mode, no Kafka parsing) in front of
//!   kafka-sidecar. HAProxy relays exactly the bytes kafka-sidecar relays, so its CPU
//!   seconds per GB in that run is the floor a proxy process can reach on the same
//!   traffic. (HAProxy cannot sit alone in front of the upstream: the brokers advertise
//!   their own addresses and the clients would bypass it. kafka-sidecar advertises
//!   127.0.0.2, where HAProxy listens, and itself listens on 127.0.0.1.)
//! - `kroxylicious`: clients to Kroxylicious 0.12 (no filters, one port per broker).
//!
//! Producers are idempotent with acks=all (the Java client's default) unless
//! `--no-idempotence`. Every loop is bounded in messages and in time.
//!
//! Modules: `cli` (options), `targets` (the upstreams), `modes` (the relays of a mode),
//! `relays` (kafka-sidecar and HAProxy as child processes, the sidecar's switch),
//! `kroxylicious` (its launcher, built with Maven, and config), `sampling` (CPU and memory
//! from `/proc`), `clients` (producers, consumer, idle connections), `workloads` (one run of a
//! workload in a mode), `stats` (medians, spreads, comparisons with direct, targets),
//! `report` (HTML with inline SVG).

mod cli;
mod clients;
mod kroxylicious;
mod modes;
mod relays;
mod report;
mod sampling;
mod stats;
mod targets;
mod workloads;

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::Parser;
use serde_json::json;

use cli::{haproxy_bin, list, Args};
use modes::Mode;
use relays::{pin_self_away_from, Ports};
use report::{fmt_num, html_report, now_utc, print_comparisons};
use sampling::clk_tck;
use stats::summarize;
use targets::Target;
use workloads::{run_one, Env, Workload};

/// The modes run for a workload: HAProxy's chain only where its CPU per GB is compared
/// (throughput workloads); many connections only direct and kafka-sidecar (its RSS).
fn modes_for(w: Workload, wanted: &[Mode], env: &Env) -> Vec<Mode> {
    wanted
        .iter()
        .copied()
        .filter(|m| match m {
            Mode::HaproxyChain => env.haproxy_bin.is_some() && w.throughput(),
            Mode::Kroxylicious => env.kroxylicious.is_some() && w != Workload::Connections,
            Mode::SidecarSwitched => w != Workload::Connections,
            Mode::Direct | Mode::Sidecar => true,
        })
        .collect()
}

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
    let workloads: Vec<Workload> = list(&args.workloads)
        .map(Workload::parse)
        .collect::<anyhow::Result<_>>()?;
    let wanted: Vec<Mode> = list(&args.modes)
        .map(Mode::parse)
        .collect::<anyhow::Result<_>>()?;
    let kroxylicious = if wanted.contains(&Mode::Kroxylicious) {
        kroxylicious::prepare(args.java.as_deref())
    } else {
        None
    };
    let dir = std::env::temp_dir().join(format!("kafka-sidecar-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let env = Env {
        args: args.clone(),
        proxy_bin,
        haproxy_bin,
        kroxylicious,
        tck: clk_tck(),
        dir: dir.clone(),
        ports: Ports::pick(),
    };
    let started = Instant::now();
    let targets = Target::start_all(&args, &dir, &env.ports)?;
    let upstreams: Vec<String> = targets.iter().map(|t| t.describe(&args)).collect();
    println!(
        "kafka-sidecar loadtest: {} rounds, {} producers, upstreams:\n  {}",
        args.rounds,
        if args.no_idempotence {
            "non-idempotent (acks=all)"
        } else {
            "idempotent (enable.idempotence=true, acks=all)"
        },
        upstreams.join("\n  ")
    );
    println!(
        "sidecar: {} (child process); floor: {}; kroxylicious: {}; {}",
        env.proxy_bin.display(),
        env.haproxy_bin
            .as_deref()
            .unwrap_or("none (HAProxy not found)"),
        if env.kroxylicious.is_some() {
            "0.12.0"
        } else {
            "not run"
        },
        match args.pin_proxy_cpu {
            Some(c) => format!("relays pinned to CPU {c}, load generator to the others"),
            None => "no CPU pinning (everything shares every core)".to_string(),
        }
    );
    let mut results = vec![];
    for target in &targets {
        for round in 0..args.rounds {
            for w in &workloads {
                let mut modes = modes_for(*w, &wanted, &env);
                // Alternate: odd rounds run the modes in reverse order.
                if round % 2 == 1 {
                    modes.reverse();
                }
                for mode in modes {
                    let r = run_one(&env, target, *w, mode, round).with_context(|| {
                        format!(
                            "{}, round {round}, {} via {}",
                            target.name(),
                            w.name(),
                            mode.name()
                        )
                    })?;
                    println!(
                        "[{:>6.1}s] {:<5} r{round} {:<11} {:<16} {:>8} msgs {:>8.0} msg/s {:>7.1} MB/s  p50 {:>7.0} µs p99 {:>7.0} µs  consume {:>7.1} MB/s ({:.0} MB{}){}{}{}{}",
                        started.elapsed().as_secs_f64(),
                        target.name(),
                        w.name(),
                        mode.name(),
                        r.produced,
                        r.produce_msgs_per_s,
                        r.produce_mb_per_s,
                        r.latency.p50_us,
                        r.latency.p99_us,
                        r.consume_mb_per_s,
                        r.consume_mb_per_s * r.consume_seconds,
                        consume_cores(&r),
                        r.relay()
                            .map(|p| format!("  relay {:.2} CPU-s ({:.2}/GB) peak RSS {:.1} MiB", p.cpu_seconds, p.cpu_seconds_per_gb, p.peak_rss_mib))
                            .unwrap_or_default(),
                        match (&r.proxy, r.mode) {
                            (Some(p), Mode::HaproxyChain) => format!("  (sidecar behind it {:.2}/GB)", p.cpu_seconds_per_gb),
                            _ => String::new(),
                        } + &r.held_batches.filter(|n| *n > 0).map(|n| format!("  {n} batches held")).unwrap_or_default()
                          + &r.spliced_bytes.filter(|(_, all)| *all > 0).map(|(s, all)| format!("  {:.0} % spliced", 100.0 * s as f64 / all as f64)).unwrap_or_default(),
                        if r.connections > 0 {
                            format!("  {} idle connections", r.connections)
                        } else {
                            String::new()
                        },
                        if r.produce_errors > 0 { format!("  {} errors", r.produce_errors) } else { String::new() },
                    );
                    results.push(r);
                }
            }
        }
    }
    drop(targets);
    let (summary, comparisons, targets) = summarize(&results);
    print_comparisons(&comparisons, args.rounds);
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
        "upstreams": upstreams,
        "idempotent": !args.no_idempotence,
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
        html_report(
            &args,
            &upstreams,
            &results,
            &comparisons,
            &summary,
            &targets,
        ),
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

/// Who was busy while the consumer read, in cores: `, cores: consumer 0.95 broker 0.23`.
fn consume_cores(r: &workloads::RunResult) -> String {
    if r.consumed == 0 {
        return String::new();
    }
    let c = &r.consume_cores;
    let mut s = format!(", cores: consumer {:.2}", c.consumer);
    if let Some(b) = c.broker {
        s += &format!(" broker {b:.2}");
    }
    if let Some(x) = c.relays {
        s += &format!(" relays {x:.2}");
    }
    s
}
