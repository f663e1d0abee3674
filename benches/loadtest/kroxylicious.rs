//! Kroxylicious 0.12 (a Java Kafka proxy, no filters) as a child process: built once from
//! `benches/loadtest/kroxylicious/` (a ten-line main on `kroxylicious-runtime` from Maven
//! Central) into `target/kroxylicious/`, configured with one virtual cluster whose gateway
//! maps one port per broker (`portIdentifiesNode`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

use crate::relays::{relay_command, wait_port, Ports};
use crate::sampling::Measured;

/// The built launcher: `java -cp <classpath> loadtest.KroxyliciousMain <config>`.
pub struct Kroxylicious {
    pub java: String,
    pub classpath: String,
}

/// Builds the launcher with Maven unless `target/kroxylicious` already holds it (a second
/// run downloads and compiles nothing). `None` (with the reason printed) when Java or Maven
/// is missing or the build fails: the load test then skips the mode.
pub fn prepare(java: Option<&str>) -> Option<Kroxylicious> {
    match build(java) {
        Ok(k) => Some(k),
        Err(e) => {
            println!("kroxylicious mode skipped: {e:#}");
            None
        }
    }
}

fn build(java: Option<&str>) -> anyhow::Result<Kroxylicious> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/kroxylicious");
    let done = out.join(".complete");
    if !done.exists() {
        let pom = root.join("benches/loadtest/kroxylicious/pom.xml");
        println!(
            "building the Kroxylicious launcher (mvn, once) into {}",
            out.display()
        );
        let log =
            std::fs::File::create(std::env::temp_dir().join("loadtest-kroxylicious-mvn.log"))?;
        let status = Command::new("nice")
            .args(["-n", "10", "mvn", "-q", "-B", "-f"])
            .arg(&pom)
            .args([
                "package",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
            ])
            .arg(format!("-DoutputDirectory={}", out.join("lib").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("running mvn (apt-get install maven)")?;
        if !status.success() {
            bail!(
                "mvn failed ({status}); see {}",
                std::env::temp_dir()
                    .join("loadtest-kroxylicious-mvn.log")
                    .display()
            );
        }
        std::fs::write(&done, "")?;
    }
    let classpath = format!(
        "{}:{}",
        out.join("classes").display(),
        out.join("lib/*").display()
    );
    let java = java
        .map(str::to_string)
        .or_else(|| crate::cli::tool("KSC_JAVA"))
        .unwrap_or_else(|| "java".to_string());
    Ok(Kroxylicious { java, classpath })
}

/// The config: one virtual cluster in front of `upstream`; its gateway listens on
/// 127.0.0.1:`ports.kroxylicious` for bootstrap and on the next ports, one per node id of
/// `node_ids` (their range, in order), as Kroxylicious 0.12's `portIdentifiesNode` maps them.
pub fn config_yaml(upstream: &str, node_ids: &[i32], ports: &Ports) -> String {
    let lo = node_ids.iter().copied().min().unwrap_or(0);
    let hi = node_ids.iter().copied().max().unwrap_or(0);
    format!(
        "virtualClusters:\n\
         - name: loadtest\n\
         \x20 targetCluster:\n\
         \x20   bootstrapServers: \"{upstream}\"\n\
         \x20 gateways:\n\
         \x20 - name: default\n\
         \x20   portIdentifiesNode:\n\
         \x20     bootstrapAddress: \"127.0.0.1:{}\"\n\
         \x20     nodeIdRanges:\n\
         \x20     - name: brokers\n\
         \x20       start: {lo}\n\
         \x20       end: {hi}\n\
         \x20 logNetwork: false\n\
         \x20 logFrames: false\n",
        ports.kroxylicious
    )
}

pub fn start(
    k: &Kroxylicious,
    dir: &Path,
    ports: &Ports,
    upstream: &str,
    node_ids: &[i32],
    pin: Option<usize>,
) -> anyhow::Result<Measured> {
    let path: PathBuf = dir.join("kroxylicious.yaml");
    std::fs::write(&path, config_yaml(upstream, node_ids, ports))?;
    let log = dir.join("kroxylicious.log");
    let mut child = relay_command(&k.java, pin)
        // A fixed heap so its size does not depend on the machine; 100 KiB records need room.
        .args([
            "-Xms256m",
            "-Xmx1g",
            "-cp",
            &k.classpath,
            "loadtest.KroxyliciousMain",
        ])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(dir.join("kroxylicious.err"))?)
        .spawn()
        .with_context(|| format!("starting {}", k.java))?;
    if let Err(e) = wait_port(
        SocketAddr::from(([127, 0, 0, 1], ports.kroxylicious)),
        &mut child,
        "kroxylicious",
    ) {
        let _ = child.kill();
        let _ = child.wait();
        let err = std::fs::read_to_string(dir.join("kroxylicious.err")).unwrap_or_default();
        let tail: Vec<&str> = err.lines().rev().take(20).collect();
        bail!(
            "{e:#}\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(Measured {
        child,
        cpu_start: 0.0,
    })
}
