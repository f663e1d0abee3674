//! The relays under test (kafka-sidecar, HAProxy) as child processes, optionally pinned to a CPU.

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

pub fn wait_port(addr: SocketAddr, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited during start-up: {status}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not listen on {addr} within 15 s")
}

pub struct Ports {
    pub bootstrap: u16,
    pub broker_base: u16,
    pub admin: u16,
}

impl Ports {
    pub fn pick() -> Ports {
        // Below the ephemeral range (32768), spread by pid so parallel runs don't clash.
        let base = 20_000 + (std::process::id() % 500) as u16 * 24;
        Ports {
            bootstrap: base,
            broker_base: base + 2,
            admin: base + 1,
        }
    }
}

pub fn start_proxy(
    bin: &Path,
    dir: &Path,
    ports: &Ports,
    upstream: &str,
    metrics: bool,
    advertised: &str,
    pin: Option<usize>,
) -> anyhow::Result<Measured> {
    let admin = if metrics {
        format!("admin: {{address: \"127.0.0.1:{}\"}}\n", ports.admin)
    } else {
        String::new()
    };
    let cfg = format!(
        "listen: {{address: 127.0.0.1, advertised_host: \"{advertised}\", bootstrap_port: {}, broker_port_base: {}, max_node_id: 20}}\n\
         {admin}active_cluster: up\n\
         clusters:\n  up: {{bootstrap_servers: [\"{upstream}\"]}}\n\
         switch: {{drain_timeout: 100ms}}\n",
        ports.bootstrap, ports.broker_base
    );
    let path = dir.join("proxy.yaml");
    std::fs::write(&path, cfg)?;
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
