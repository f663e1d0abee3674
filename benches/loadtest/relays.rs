//! The relays under test (kafka-sidecar, HAProxy) as child processes, optionally pinned to a
//! CPU, and the sidecar's switch between clusters.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::sampling::Measured;

/// `Command` for a relay binary: under `taskset -c <cpu>` when pinning.
pub fn relay_command(bin: impl AsRef<std::ffi::OsStr>, pin: Option<usize>) -> Command {
    match pin {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// Pins this process (and every thread it starts from now on) to every CPU but `cpu`.
pub fn pin_self_away_from(cpu: usize) -> anyhow::Result<()> {
    let n = std::thread::available_parallelism()?.get();
    let others: Vec<String> = (0..n)
        .filter(|&c| c != cpu)
        .map(|c| c.to_string())
        .collect();
    anyhow::ensure!(!others.is_empty(), "--pin-proxy-cpu needs at least 2 CPUs");
    let status = Command::new("taskset")
        .arg("-p")
        .arg("-c")
        .arg(others.join(","))
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?;
    anyhow::ensure!(status.success(), "taskset failed: {status}");
    Ok(())
}

/// Waits until `child` listens on `addr` (60 s at most: a JVM on a busy machine is slow).
pub fn wait_port(addr: SocketAddr, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited during start-up: {status}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not listen on {addr} within 60 s")
}

/// The ports of one load test: one block below the ephemeral range (32768), spread by pid so
/// parallel runs don't clash. Broker ports are `broker_base + node id`, and tansu's node id is
/// 111, hence the width.
pub struct Ports {
    pub bootstrap: u16,
    pub admin: u16,
    pub broker_base: u16,
    pub kroxylicious: u16,
    pub tansu: u16,
    pub tansu_spare: u16,
    /// `kafka-cluster.sh --port-base`: it uses base+1, base+11 and base+21.
    pub kafka_base: u16,
}

/// Highest broker node id the relays map (tansu's is 111).
pub const MAX_NODE_ID: u16 = 120;

impl Ports {
    pub fn pick() -> Ports {
        let base = 20_000 + (std::process::id() % 68) as u16 * 170;
        Ports {
            bootstrap: base,
            admin: base + 1,
            broker_base: base + 10,
            kroxylicious: base + 10 + MAX_NODE_ID + 1,
            tansu: base + 141,
            tansu_spare: base + 142,
            kafka_base: base + 143,
        }
    }
}

/// kafka-sidecar's config: `upstream` as cluster `up` and, when given, `spare` as a second
/// cluster; `active` is the active one. The admin endpoint is always on: `sidecar_switched`
/// reads `/status` to know its switch has completed, so both sidecar modes run with it.
pub fn sidecar_yaml(
    ports: &Ports,
    upstream: &str,
    spare: Option<&str>,
    active: &str,
    advertised: &str,
) -> String {
    let spare = spare
        .map(|s| format!("  spare: {{bootstrap_servers: [\"{s}\"]}}\n"))
        .unwrap_or_default();
    format!(
        "listen: {{address: 127.0.0.1, advertised_host: \"{advertised}\", bootstrap_port: {}, broker_port_base: {}, max_node_id: {MAX_NODE_ID}}}\n\
         admin: {{address: \"127.0.0.1:{}\"}}\n\
         active_cluster: {active}\n\
         clusters:\n  up: {{bootstrap_servers: [\"{upstream}\"]}}\n{spare}\
         watch: {{poll_interval: 200ms, debounce: 20ms}}\n\
         switch: {{drain_timeout: 100ms}}\n",
        ports.bootstrap, ports.broker_base, ports.admin
    )
}

/// kafka-sidecar as a child process on the config `yaml` (written to `dir/proxy.yaml`).
pub fn start_proxy(
    bin: &Path,
    dir: &Path,
    ports: &Ports,
    yaml: &str,
    pin: Option<usize>,
) -> anyhow::Result<Measured> {
    let path = dir.join("proxy.yaml");
    std::fs::write(&path, yaml)?;
    let mut child = relay_command(bin, pin)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    wait_port(
        SocketAddr::from(([127, 0, 0, 1], ports.bootstrap)),
        &mut child,
        "kafka-sidecar",
    )?;
    Ok(Measured {
        child,
        cpu_start: 0.0,
    })
}

/// Rewrites the running sidecar's config file the way an editor would (a new file renamed
/// over it; the sidecar hot-reloads it) and waits until its admin `/status` reports `active`
/// as the active cluster after at least one switch. Bounded: 20 s.
pub fn switch_sidecar(dir: &Path, ports: &Ports, yaml: &str, active: &str) -> anyhow::Result<()> {
    let path = dir.join("proxy.yaml");
    let tmp = dir.join(".proxy.yaml.tmp");
    std::fs::write(&tmp, yaml)?;
    std::fs::rename(&tmp, &path)?;
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.admin));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(body) = http_get(admin, "/status") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                if v["active_cluster"] == active && v["switches"].as_u64().unwrap_or(0) >= 1 {
                    return Ok(());
                }
            }
            last = body;
        }
        // The admin endpoint has no long poll: ask again shortly.
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("kafka-sidecar did not switch to {active} within 20 s; last /status: {last}")
}

/// The sum of one counter over its labels in kafka-sidecar's `/metrics` (None: not
/// scraped, or not there).
pub fn sidecar_counter(ports: &Ports, name: &str) -> Option<u64> {
    let body = http_get(SocketAddr::from(([127, 0, 0, 1], ports.admin)), "/metrics").ok()?;
    let values: Vec<f64> = body
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() as u64)
}

/// One HTTP/1.1 GET with `Connection: close`, read to EOF (bounded: 5 s).
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: loadtest\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (_, body) = buf.split_once("\r\n\r\n").context("no HTTP header end")?;
    Ok(body.to_string())
}

pub fn start_haproxy(
    bin: &str,
    dir: &Path,
    ports: &Ports,
    node_ids: &[i32],
    pin: Option<usize>,
) -> anyhow::Result<Measured> {
    let mut cfg = String::from(
        "global\n  maxconn 8000\n  nbthread 2\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n",
    );
    let mut listen = |name: String, port: u16| {
        cfg.push_str(&format!(
            "listen {name}\n  bind 127.0.0.2:{port}\n  server s 127.0.0.1:{port}\n"
        ));
    };
    listen("bootstrap".into(), ports.bootstrap);
    for id in node_ids {
        listen(format!("node{id}"), ports.broker_base + *id as u16);
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let mut child = relay_command(bin, pin)
        .arg("-db")
        .arg("-q")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    wait_port(
        SocketAddr::from(([127, 0, 0, 2], ports.bootstrap)),
        &mut child,
        "haproxy",
    )?;
    Ok(Measured {
        child,
        cpu_start: 0.0,
    })
}
