//! `kafka-sidecar` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use kafka_sidecar::config::Config;
use kafka_sidecar::proxy::Proxy;

/// A Kafka-protocol-aware sidecar proxy.
///
/// Clients connect in plaintext to localhost (`bootstrap.servers=localhost:<bootstrap_port>`);
/// kafka-sidecar relays them to the active upstream cluster, rewrites every broker
/// address to its own local listeners, holds the upstream TLS and SASL credentials, and
/// fails clients over to another cluster when `active_cluster` changes in the
/// (hot-reloaded) config file, without restarting them.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Log format. The level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "KAFKA_SIDECAR_LOG_FORMAT")]
    log_format: LogFormat,
    /// Threads that relay traffic. 1 (the default) runs everything on one thread: a
    /// sidecar typically gets a fraction of a core, and one thread saves the cross-thread
    /// wake-ups that dominate the cost of small request/response round trips. 0: one per
    /// CPU.
    #[arg(
        long,
        global = true,
        default_value_t = 1,
        env = "KAFKA_SIDECAR_WORKER_THREADS"
    )]
    worker_threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy. The config file is watched: edits apply without a restart, a
    /// broken edit is refused and the last good config keeps running.
    Run {
        /// Config file (YAML). See config/kafka-sidecar.yaml for every option.
        #[arg(
            long,
            short,
            env = "KAFKA_SIDECAR_CONFIG",
            default_value = "/etc/kafka-sidecar/config.yaml"
        )]
        config: PathBuf,
    },
    /// Validate a config file and print the effective config (defaults filled in,
    /// inline secrets redacted). Exits 1 with the field and problem if it is invalid.
    Check {
        /// Config file (YAML).
        config: PathBuf,
    },
    /// Move the whole fleet to another cluster: writes a decision to the control topic
    /// of every reachable cluster, then waits until every sidecar that reported
    /// recently follows it. Exits 1 if no cluster took the decision or the fleet did
    /// not converge in time. Needs `control:` in the config.
    Failover {
        /// Cluster to move the fleet to.
        #[arg(long)]
        to: String,
        /// Why (recorded in the decision).
        #[arg(long)]
        reason: String,
        #[arg(
            long,
            short,
            env = "KAFKA_SIDECAR_CONFIG",
            default_value = "/etc/kafka-sidecar/config.yaml"
        )]
        config: PathBuf,
        /// How long to wait for the fleet.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Number of sidecars to wait for (default: those that reported recently).
        #[arg(long)]
        expect: Option<usize>,
    },
    /// List the fleet: every sidecar that reported recently (where it runs, the cluster
    /// it uses, the decision epoch it applied, when it last reported) and each
    /// cluster's decision.
    Fleet {
        #[arg(
            long,
            short,
            env = "KAFKA_SIDECAR_CONFIG",
            default_value = "/etc/kafka-sidecar/config.yaml"
        )]
        config: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run an arbiter: one observer of the automatic failover quorum
    /// (`control.automatic`). Run three, on independent sites.
    Arbiter {
        #[arg(
            long,
            short,
            env = "KAFKA_SIDECAR_CONFIG",
            default_value = "/etc/kafka-sidecar/config.yaml"
        )]
        config: PathBuf,
        /// This arbiter's id (one of `control.automatic.arbiters`).
        #[arg(long)]
        id: String,
        /// Admin HTTP address for /status and /metrics (default: the config's `admin`).
        #[arg(long)]
        admin: Option<String>,
    },
    /// Print the status JSON of a running proxy (from its admin endpoint).
    Status {
        /// Admin address of the running proxy.
        #[arg(long, default_value = "127.0.0.1:9644")]
        admin: String,
    },
    /// Self-contained demo: starts two in-process upstream clusters (librdkafka's mock
    /// cluster), the proxy in front of them, and real clients through it; switches the
    /// active cluster while they run and prints what happened.
    #[cfg(feature = "demo")]
    Demo {
        /// Messages the demo producer sends.
        #[arg(long, default_value_t = 300)]
        messages: u32,
        /// Show the proxies' logs on the terminal, between the demo's lines.
        #[arg(long, short)]
        verbose: bool,
        /// Where the proxies' logs go without --verbose (default:
        /// kafka-sidecar-demo-<pid>.log in the temp directory).
        #[arg(long)]
        log_file: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The demo's logs: to a file it names (its terminal output is a story in plain words),
/// or with --verbose to the terminal as a filtered selection.
#[cfg(feature = "demo")]
fn demo_logging(
    format: LogFormat,
    verbose: bool,
    log_file: &mut Option<PathBuf>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    if verbose {
        // Between the demo's own lines: the proxies' decisions, not every connection.
        *log_file = None;
        init_logging(format, "warn,kafka_sidecar=info,librdkafka=off,rdkafka=off,kafka_sidecar::upstream=off,kafka_sidecar::session=off,kafka_sidecar::control=warn,kafka_sidecar::proxy=warn,kafka_sidecar::cluster=warn,kafka_sidecar::listeners=warn,kafka_sidecar::config_watch=warn,kafka_sidecar::producer_identity=warn");
        return Ok(());
    }
    let path = log_file.get_or_insert_with(|| {
        std::env::temp_dir().join(format!("kafka-sidecar-demo-{}.log", std::process::id()))
    });
    let file = std::fs::File::create(&*path)
        .with_context(|| format!("cannot create the demo's log file {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    #[cfg_attr(not(feature = "demo"), allow(unused_mut))]
    let mut cli = Cli::parse();
    #[cfg(feature = "demo")]
    if let Command::Demo {
        verbose, log_file, ..
    } = &mut cli.command
    {
        if let Err(e) = demo_logging(cli.log_format, *verbose, log_file) {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    } else {
        init_logging(cli.log_format, "info");
    }
    #[cfg(not(feature = "demo"))]
    init_logging(cli.log_format, "info");
    // The demo's in-process clients make blocking calls on the runtime: it needs threads.
    #[cfg(feature = "demo")]
    let threads = match cli.command {
        Command::Demo { .. } => 0,
        _ => cli.worker_threads,
    };
    #[cfg(not(feature = "demo"))]
    let threads = cli.worker_threads;
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    let rt = builder.enable_all().build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Check { config } => {
            let cfg = Config::load(&config)?;
            println!("# {}: valid", config.display());
            print!("{}", cfg.to_redacted_yaml());
            Ok(())
        }
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            tracing::info!(
                config = %config.display(),
                active_cluster = %cfg.active_cluster,
                clusters = ?cfg.clusters.keys().collect::<Vec<_>>(),
                "starting kafka-sidecar {}",
                env!("CARGO_PKG_VERSION")
            );
            let proxy = Proxy::start(cfg, Some(config)).await?;
            wait_for_signal().await;
            tracing::info!("shutting down: draining sessions");
            proxy.shutdown().await;
            Ok(())
        }
        Command::Failover {
            to,
            reason,
            config,
            timeout,
            expect,
        } => {
            let cfg = Config::load(&config)?;
            kafka_sidecar::control::ops::failover(
                &cfg,
                kafka_sidecar::control::ops::FailoverArgs {
                    to,
                    reason,
                    timeout,
                    expect,
                },
            )
            .await
        }
        Command::Fleet { config, json } => {
            let cfg = Config::load(&config)?;
            kafka_sidecar::control::ops::fleet(&cfg, json).await
        }
        Command::Arbiter { config, id, admin } => run_arbiter(config, id, admin).await,
        Command::Status { admin } => {
            let body = http_get(&admin, "/status").await?;
            println!("{body}");
            Ok(())
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            messages, log_file, ..
        } => kafka_sidecar::demo::run(messages, log_file.as_deref()).await,
    }
}

async fn run_arbiter(config: PathBuf, id: String, admin: Option<String>) -> anyhow::Result<()> {
    use std::sync::Arc;
    let cfg = Config::load(&config)?;
    let admin = admin.or_else(|| cfg.admin.as_ref().map(|a| a.address.clone()));
    // The recorder first: metric handles taken before it would be no-ops.
    let prometheus = match &admin {
        Some(_) => {
            let h = kafka_sidecar::admin::install_recorder()?;
            kafka_sidecar::admin::describe_metrics();
            Some(h)
        }
        None => None,
    };
    let arbiter = kafka_sidecar::control::arbiter::Arbiter::new(cfg, id.clone())?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut admin_task = None;
    if let (Some(addr), Some(handle)) = (admin, prometheus) {
        let l = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (admin): {e}"))?;
        let a = arbiter.clone();
        let state = Arc::new(kafka_sidecar::admin::AdminState {
            prometheus: handle,
            status: Arc::new(move || a.status()),
            ready: Arc::new(|| (true, "arbiter running".into())),
        });
        let mut rx = stop_rx.clone();
        admin_task = Some(tokio::spawn(kafka_sidecar::admin::serve(
            l,
            state,
            async move {
                let _ = rx.changed().await;
            },
        )));
    }
    tracing::info!(%id, "arbiter starting");
    let run = tokio::spawn(arbiter.run(stop_rx));
    wait_for_signal().await;
    let _ = stop.send(true);
    let _ = run.await;
    if let Some(t) = admin_task {
        t.abort();
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A one-shot HTTP/1.1 GET (the admin endpoint is local; no client library needed).
async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot reach the admin endpoint at {addr}"))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_string())
}
