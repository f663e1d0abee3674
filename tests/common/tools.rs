//! Real Kafka tools for the integration tests: a tansu broker, the Java and Python test clients, kcat, and the
//! SASL-enforcing upstream from `../shared/kafka-sasl-upstream`.
//!
//! Everything is found through `$KSC_TOOLS/env` (default `<repo>/.tools/env`), which
//! `scripts/install-test-deps.sh` writes. Every child process is killed on drop, every wait has a deadline, and
//! everything listens on 127.0.0.1 only.
//!
//! Blocking vs async: starting things (`Tansu::start`, `SaslUpstream::start`, `ChildClient::spawn`) blocks
//! briefly (well under a second normally) and works anywhere. Child-client output can be read blocking
//! (`wait_blocking`, `next_line_blocking`) outside a runtime, or with `.await` (`wait`, `next_line`,
//! `wait_for_line`) inside one; the stdout reader is a plain thread feeding a tokio channel, so a
//! current-thread runtime is never blocked by it.
//!
//! ## tansu 0.6.0 facts (checked against the binary)
//! * CLI: `tansu broker --listener-url tcp://127.0.0.1:P --advertised-listener-url tcp://HOST:P2
//!   --storage-engine memory://tansu/ --cluster-id ID`. Each flag also reads an env var (LISTENER_URL,
//!   ADVERTISED_LISTENER_URL, STORAGE_ENGINE, CLUSTER_ID, ...), so those are removed from the child's env here.
//! * `--cluster-id` (alias `--kafka-cluster-id`, default `tansu_cluster`) is what Metadata/DescribeCluster
//!   report as cluster id: give two brokers different ids to tell the "clusters" apart. The node id is always
//!   111, in every instance.
//! * Topics are NOT auto-created for the Java client's Metadata requests (it gets UNKNOWN_TOPIC_OR_PARTITION
//!   until `max.block.ms`); librdkafka/kcat producers do get auto-creation. Create topics up front with
//!   [`Tansu::create_topic`] (`tansu topic create --broker tcp://... --partitions N NAME`).
//! * Debian's kcat (librdkafka 2.0.2) can't parse tansu's ApiVersions v3 response; `KCAT_BIN` is a wrapper
//!   running it on librdkafka 2.16 (see install-test-deps.sh). `KCAT_DEBIAN_BIN` is the stock one.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tempfile::NamedTempFile;
use tokio::sync::mpsc;

// ------------------------------------------------------------------------------------------------ tools

/// Paths of the installed test tools (from `$KSC_TOOLS/env`).
#[derive(Debug, Clone)]
pub struct Tools {
    pub dir: PathBuf,
    pub tansu: PathBuf,
    /// kcat running on a current librdkafka (works against tansu).
    pub kcat: PathBuf,
    /// Debian's kcat on its own librdkafka 2.0.2.
    pub kcat_debian: PathBuf,
    pub haproxy: PathBuf,
    pub java: PathBuf,
    /// Classpath: compiled tests/java classes + kafka-clients 3.9 and its compression/slf4j jars.
    pub java_cp: String,
    pub kafka_clients_version: String,
    /// The same on kafka-clients 4.x (the Kafka kit's, 4.4.0), if installed.
    pub java_cp_4: Option<String>,
    pub kafka_clients_version_4: String,
    /// Python of the venv with kafka-python.
    pub python: PathBuf,
    /// `../shared/kafka-sasl-upstream/run.sh`, if the shared kit was there at install time.
    pub sasl_upstream_run: Option<PathBuf>,
    pub sasl_upstream_home: Option<PathBuf>,
    /// Client matrix (tests/clients/): node and the kafkajs node_modules, the franz-go and Sarama binaries.
    pub node: Option<PathBuf>,
    pub node_modules: Option<PathBuf>,
    pub franz: Option<PathBuf>,
    pub sarama: Option<PathBuf>,
    /// The repository root (CARGO_MANIFEST_DIR).
    pub repo: PathBuf,
    /// Every key of the env file, as read.
    pub env: HashMap<String, String>,
}

/// The installed tools; panics with a hint to run the installer when they're missing.
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| match load_tools() {
        Ok(t) => t,
        Err(e) => panic!("test tools not available: {e:#}\n  => run scripts/install-test-deps.sh"),
    })
}

fn load_tools() -> Result<Tools> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = match std::env::var_os("KSC_TOOLS") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => repo.join(".tools"),
    };
    let env_file = dir.join("env");
    let text = std::fs::read_to_string(&env_file)
        .with_context(|| format!("cannot read {}", env_file.display()))?;
    let env = parse_env_file(&text);
    let get = |k: &str| -> Result<String> {
        env.get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| anyhow!("{} has no {k}", env_file.display()))
    };
    let file = |k: &str| -> Result<PathBuf> {
        let p = PathBuf::from(get(k)?);
        if !p.exists() {
            bail!("{k}={} does not exist", p.display());
        }
        Ok(p)
    };
    let optional = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    Ok(Tools {
        tansu: file("TANSU_BIN")?,
        kcat: file("KCAT_BIN")?,
        kcat_debian: optional("KCAT_DEBIAN_BIN").unwrap_or_else(|| PathBuf::from("/usr/bin/kcat")),
        haproxy: optional("HAPROXY_BIN").unwrap_or_else(|| PathBuf::from("/usr/sbin/haproxy")),
        java: file("KSC_JAVA")?,
        java_cp: get("KSC_JAVA_CP")?,
        kafka_clients_version: get("KSC_KAFKA_CLIENTS_VERSION").unwrap_or_default(),
        java_cp_4: get("KSC_JAVA_CP_4").ok(),
        kafka_clients_version_4: get("KSC_KAFKA_CLIENTS_VERSION_4").unwrap_or_default(),
        python: file("KSC_PYTHON")?,
        sasl_upstream_run: optional("SASL_UPSTREAM_RUN").filter(|p| p.exists()),
        sasl_upstream_home: optional("SASL_UPSTREAM_HOME"),
        node: optional("KSC_NODE").filter(|p| p.exists()),
        node_modules: optional("KSC_NODE_MODULES").filter(|p| p.exists()),
        franz: optional("KSC_FRANZ_BIN").filter(|p| p.exists()),
        sarama: optional("KSC_SARAMA_BIN").filter(|p| p.exists()),
        dir,
        repo,
        env,
    })
}

/// Parses `export KEY='value'` / `KEY=value` lines (what install-test-deps.sh writes).
pub fn parse_env_file(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .unwrap_or(v);
        out.insert(k.trim().to_string(), v.to_string());
    }
    out
}

// ------------------------------------------------------------------------------------------------ ports

fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos() ^ std::process::id() as u128);
    h.finish()
}

/// A currently free loopback port in 10000..20000 (below Linux's ephemeral range, so an outgoing connection
/// can't take it, and apart from harness.rs's proxy port blocks in 20000..31520), never the same one twice in
/// this process. Random, so parallel test processes rarely collide; [`Tansu::start`] retries on another port
/// if its pick was taken meanwhile.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..1000 {
        let port = 10000 + (random_u64() % 10000) as u16;
        if handed.lock().unwrap().contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.lock().unwrap().insert(port);
            return port;
        }
    }
    panic!("no free port found in 10000..20000");
}

/// Polls a TCP connect to `addr` until it succeeds or `timeout` passes.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing accepts connections on {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ------------------------------------------------------------------------------------------------ logs

/// A temp file that a child's stdout and/or stderr append to.
struct LogFile {
    file: NamedTempFile,
}

impl LogFile {
    fn new(prefix: &str) -> Result<Self> {
        let file = tempfile::Builder::new()
            .prefix(prefix)
            .suffix(".log")
            .tempfile()?;
        Ok(LogFile { file })
    }
    fn stdio(&self) -> Result<Stdio> {
        // O_APPEND, so stdout and stderr sharing the file don't overwrite each other
        Ok(Stdio::from(
            OpenOptions::new().append(true).open(self.file.path())?,
        ))
    }
    fn path(&self) -> &Path {
        self.file.path()
    }
    fn read(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(self.file.path()) {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        s
    }
    fn tail(&self, lines: usize) -> String {
        let all = self.read();
        let v: Vec<&str> = all.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

fn kill_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

fn signal(child: &Child, sig: &str) -> Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()?;
    if !st.success() {
        bail!("kill -{sig} {} failed", child.id());
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------ tansu

/// How to start a [`Tansu`] broker; see [`Tansu::builder`].
#[derive(Debug, Clone, Default)]
pub struct TansuBuilder {
    port: Option<u16>,
    advertised: Option<String>,
    cluster_id: Option<String>,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    start_timeout: Option<Duration>,
}

impl TansuBuilder {
    /// Listen on 127.0.0.1:`port` (default: a [`free_port`]).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    /// `host:port` to advertise in Metadata/FindCoordinator/DescribeCluster (default: the listen address),
    /// e.g. a SASL gateway's or the proxy's address in front of it.
    pub fn advertised(mut self, host_port: impl Into<String>) -> Self {
        self.advertised = Some(host_port.into());
        self
    }
    /// Cluster id reported to clients (tansu's default: `tansu_cluster`).
    pub fn cluster_id(mut self, id: impl Into<String>) -> Self {
        self.cluster_id = Some(id.into());
        self
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra_args.push(a.into());
        self
    }
    /// An env var for the broker, e.g. `RUST_LOG=debug`.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = Some(t);
        self
    }
    pub fn start(self) -> Result<Tansu> {
        let tries = if self.port.is_some() { 1 } else { 3 };
        let mut last = None;
        for _ in 0..tries {
            match self.try_start(self.port.unwrap_or_else(free_port)) {
                Ok(t) => return Ok(t),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap())
    }

    fn try_start(&self, port: u16) -> Result<Tansu> {
        let t = tools();
        let listen: SocketAddr = ([127, 0, 0, 1], port).into();
        let advertised = self
            .advertised
            .clone()
            .unwrap_or_else(|| listen.to_string());
        let cluster_id = self
            .cluster_id
            .clone()
            .unwrap_or_else(|| "tansu_cluster".to_string());
        let log = LogFile::new("tansu-")?;
        let mut cmd = Command::new(&t.tansu);
        cmd.arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://{listen}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{advertised}"))
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .arg("--cluster-id")
            .arg(&cluster_id)
            .args(&self.extra_args);
        for k in [
            "CLUSTER_ID",
            "LISTENER_URL",
            "ADVERTISED_LISTENER_URL",
            "STORAGE_ENGINE",
            "SCHEMA_REGISTRY",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            cmd.env_remove(k);
        }
        cmd.env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.stdio()?)
            .stderr(log.stdio()?);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", t.tansu.display()))?;
        let mut tansu = Tansu {
            child,
            port,
            listen,
            advertised,
            cluster_id,
            log,
            paused: false,
        };
        let deadline = Instant::now() + self.start_timeout.unwrap_or(Duration::from_secs(20));
        loop {
            if let Some(st) = tansu.child.try_wait()? {
                bail!(
                    "tansu on {listen} exited at start ({st}):\n{}",
                    tansu.log.tail(30)
                );
            }
            if TcpStream::connect_timeout(&listen, Duration::from_millis(250)).is_ok() {
                return Ok(tansu);
            }
            if Instant::now() >= deadline {
                bail!(
                    "tansu on {listen} not accepting connections in time:\n{}",
                    tansu.log.tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A single-node, in-memory tansu broker on 127.0.0.1; killed on drop. Node id is always 111.
pub struct Tansu {
    child: Child,
    pub port: u16,
    pub listen: SocketAddr,
    /// `host:port` it advertises.
    pub advertised: String,
    pub cluster_id: String,
    log: LogFile,
    paused: bool,
}

impl Tansu {
    pub fn builder() -> TansuBuilder {
        TansuBuilder::default()
    }
    /// A broker on a free port advertising its own address.
    pub fn start() -> Result<Tansu> {
        Self::builder().start()
    }
    /// `127.0.0.1:port`, the listen address (not necessarily the advertised one).
    pub fn bootstrap(&self) -> String {
        self.listen.to_string()
    }
    /// Creates a topic (tansu doesn't auto-create topics for the Java client). Fails if it exists.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        let mut cmd = Command::new(&tools().tansu);
        cmd.args(["topic", "create", "--broker"])
            .arg(format!("tcp://{}", self.listen))
            .arg("--partitions")
            .arg(partitions.to_string())
            .arg(name);
        cmd.env("NO_COLOR", "1");
        let out = run_with_timeout(cmd, None, Duration::from_secs(20))?;
        if !out.status.success() {
            bail!(
                "tansu topic create {name} on {} failed ({}): {}{}",
                self.listen,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Everything the broker printed so far.
    pub fn log(&self) -> String {
        self.log.read()
    }
    pub fn log_path(&self) -> &Path {
        self.log.path()
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// Kills the broker now (a data centre going away); the port stays free for a new one.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }
    /// SIGSTOP: the broker keeps its sockets but answers nothing (a hung cluster).
    pub fn pause(&mut self) -> Result<()> {
        signal(&self.child, "STOP")?;
        self.paused = true;
        Ok(())
    }
    /// SIGCONT after [`Tansu::pause`].
    pub fn resume(&mut self) -> Result<()> {
        signal(&self.child, "CONT")?;
        self.paused = false;
        Ok(())
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if self.paused {
            let _ = signal(&self.child, "CONT");
        }
        kill_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "---- tansu {} log (tail) ----\n{}\n----",
                self.listen,
                self.log.tail(40)
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------ clients

/// What a test client printed, parsed. See tests/java/TestProducer.java and TestConsumer.java.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub i: u64,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub value: String,
}

/// Parses an `ACK i partition offset` line.
pub fn parse_ack(line: &str) -> Option<Ack> {
    let mut it = line.strip_prefix("ACK ")?.split_whitespace();
    Some(Ack {
        i: it.next()?.parse().ok()?,
        partition: it.next()?.parse().ok()?,
        offset: it.next()?.parse().ok()?,
    })
}

/// Parses a `MSG topic partition offset value` line.
pub fn parse_msg(line: &str) -> Option<Msg> {
    let mut it = line.strip_prefix("MSG ")?.splitn(4, ' ');
    Some(Msg {
        topic: it.next()?.to_string(),
        partition: it.next()?.parse().ok()?,
        offset: it.next()?.parse().ok()?,
        value: it.next().unwrap_or("").to_string(),
    })
}

/// Reads `key=<number>` out of a line like `DONE acked=20 errors=0`.
pub fn line_field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// A finished client run.
#[derive(Debug, Clone)]
pub struct ClientRun {
    pub name: String,
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    pub lines: Vec<String>,
    pub stderr: String,
}

impl ClientRun {
    pub fn acks(&self) -> Vec<Ack> {
        self.lines.iter().filter_map(|l| parse_ack(l)).collect()
    }
    /// Distinct acknowledged `i`s.
    pub fn acked_ids(&self) -> HashSet<u64> {
        self.acks().into_iter().map(|a| a.i).collect()
    }
    pub fn msgs(&self) -> Vec<Msg> {
        self.lines.iter().filter_map(|l| parse_msg(l)).collect()
    }
    pub fn errors(&self) -> Vec<&String> {
        self.lines
            .iter()
            .filter(|l| l.starts_with("ERR "))
            .collect()
    }
    pub fn fatal(&self) -> Option<&String> {
        self.lines.iter().find(|l| l.starts_with("FATAL"))
    }
    /// The `DONE ...` line, if the client got that far.
    pub fn done(&self) -> Option<&String> {
        self.lines.iter().find(|l| l.starts_with("DONE"))
    }
    pub fn version(&self) -> Option<&String> {
        self.lines.iter().find(|l| l.starts_with("VERSION "))
    }
    /// A readable dump for assertion messages.
    pub fn describe(&self) -> String {
        let out: Vec<&String> = self
            .lines
            .iter()
            .filter(|l| !l.starts_with("ACK ") && !l.starts_with("MSG "))
            .collect();
        let stderr_tail: Vec<&str> = self.stderr.lines().collect();
        format!(
            "{} exited {:?}; {} ACK, {} MSG lines; other stdout:\n  {}\nstderr (tail):\n  {}",
            self.name,
            self.code,
            self.acks().len(),
            self.msgs().len(),
            out.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  "),
            stderr_tail[stderr_tail.len().saturating_sub(30)..].join("\n  ")
        )
    }
}

/// Which kafka-clients the Java test clients run on: install-test-deps.sh compiles tests/java against
/// each (`KSC_JAVA_CP`, `KSC_JAVA_CP_4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JavaClients {
    /// kafka-clients 3.9.1 (the last 3.x: Produce by topic name, OffsetCommit v9).
    V3_9,
    /// kafka-clients 4.4.0 (Produce v13 and OffsetCommit/OffsetFetch v10 name topics by id).
    V4_4,
}

impl JavaClients {
    pub fn name(self) -> &'static str {
        match self {
            JavaClients::V3_9 => "3.9",
            JavaClients::V4_4 => "4.4",
        }
    }
}

/// A test client process (Java or Python) whose stdout lines are streamed through a channel and also kept;
/// stderr goes to a temp file. Killed on drop.
pub struct ChildClient {
    pub name: String,
    child: Child,
    rx: mpsc::UnboundedReceiver<String>,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    stderr: LogFile,
}

impl ChildClient {
    /// Spawns `cmd` with piped stdout and stderr into a temp file.
    pub fn spawn(name: impl Into<String>, mut cmd: Command) -> Result<ChildClient> {
        let name = name.into();
        let stderr = LogFile::new(&format!(
            "{}-",
            name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        ))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.stdio()?);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {name}: {cmd:?}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::unbounded_channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        let reader = std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    kept.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            })?;
        Ok(ChildClient {
            name,
            child,
            rx,
            lines,
            reader: Some(reader),
            stderr,
        })
    }

    /// `java -cp <the classpath of kafka-clients `gen`> <class> args...`; `KSC_JAVA_LOG` (warn by default)
    /// sets the client log level.
    pub fn java(gen: JavaClients, class: &str, args: &[String]) -> Result<ChildClient> {
        let t = tools();
        let cp = match gen {
            JavaClients::V3_9 => &t.java_cp,
            JavaClients::V4_4 => t.java_cp_4.as_ref().ok_or_else(|| {
                anyhow!("KSC_JAVA_CP_4 missing: run scripts/install-test-deps.sh")
            })?,
        };
        let mut cmd = Command::new(&t.java);
        cmd.arg("-cp").arg(cp).arg(class).args(args);
        Self::spawn(format!("{class}-{}", gen.name()), cmd)
    }

    /// tests/java/TestProducer.java on kafka-clients `gen`.
    pub fn java_producer(gen: JavaClients, p: &ProducerArgs) -> Result<ChildClient> {
        Self::java(gen, "TestProducer", &p.to_args())
    }

    /// tests/java/TestConsumer.java on kafka-clients `gen` (a KIP-848 member with
    /// `.prop("group.protocol", "consumer")`).
    pub fn java_consumer(gen: JavaClients, c: &ConsumerArgs) -> Result<ChildClient> {
        Self::java(gen, "TestConsumer", &c.to_args())
    }

    /// tests/python/test_producer.py on kafka-python (props use kafka-python names, e.g. `sasl_plain_username`).
    pub fn python_producer(p: &ProducerArgs) -> Result<ChildClient> {
        let t = tools();
        let mut cmd = Command::new(&t.python);
        cmd.arg("-u")
            .arg(t.repo.join("tests/python/test_producer.py"))
            .args(p.to_args());
        Self::spawn("test_producer.py", cmd)
    }

    /// A Go test client of tests/clients/go (`franz` or `sarama`): `<bin> produce|consume args...`.
    /// `KSC_GO_LOG` (warn by default) sets the client log level.
    pub fn go(which: &str, sub: &str, args: &[String]) -> Result<ChildClient> {
        let t = tools();
        let bin = match which {
            "franz" => t.franz.clone(),
            "sarama" => t.sarama.clone(),
            _ => bail!("no Go test client {which}"),
        }
        .ok_or_else(|| {
            anyhow!("KSC_FRANZ_BIN/KSC_SARAMA_BIN missing: run scripts/install-test-deps.sh")
        })?;
        let mut cmd = Command::new(bin);
        cmd.arg(sub).args(args);
        Self::spawn(format!("ksc-{which}-{sub}"), cmd)
    }

    /// tests/clients/node/`script` on kafkajs. `KSC_JS_LOG` (warn by default) sets the client log level.
    pub fn kafkajs(script: &str, args: &[String]) -> Result<ChildClient> {
        let t = tools();
        let (Some(node), Some(modules)) = (&t.node, &t.node_modules) else {
            bail!("KSC_NODE/KSC_NODE_MODULES missing: run scripts/install-test-deps.sh");
        };
        let mut cmd = Command::new(node);
        cmd.arg(t.repo.join("tests/clients/node").join(script))
            .args(args)
            .env("NODE_PATH", modules)
            .env("KAFKAJS_NO_PARTITIONER_WARNING", "1");
        Self::spawn(format!("kafkajs-{script}"), cmd)
    }

    /// tests/clients/python/`script` on confluent-kafka (props use librdkafka names).
    pub fn confluent(script: &str, args: &[String]) -> Result<ChildClient> {
        let t = tools();
        let mut cmd = Command::new(&t.python);
        cmd.arg("-u")
            .arg(t.repo.join("tests/clients/python").join(script))
            .args(args);
        Self::spawn(script, cmd)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Takes the stream of stdout lines (to follow them from another task); the lines
    /// are still kept for [`ChildClient::wait`] and [`ChildClient::lines`].
    pub fn take_line_stream(&mut self) -> mpsc::UnboundedReceiver<String> {
        let (_, closed) = mpsc::unbounded_channel();
        std::mem::replace(&mut self.rx, closed)
    }

    /// Every stdout line so far (including ones not yet taken from the channel).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.read()
    }

    /// The next stdout line; `Ok(None)` at end of output, `Err` on timeout.
    pub async fn next_line(&mut self, timeout: Duration) -> Result<Option<String>> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .map_err(|_| anyhow!("{}: no output line within {timeout:?}", self.name))
    }

    /// Takes lines until one satisfies `pred` and returns it; `Err` on timeout or end of output.
    pub async fn wait_for_line(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => bail!(
                    "{}: expected line not seen within {timeout:?}\n{}",
                    self.name,
                    self.snapshot().describe()
                ),
                Ok(None) => bail!(
                    "{}: output ended before the expected line\n{}",
                    self.name,
                    self.snapshot().describe()
                ),
                Ok(Some(l)) if pred(&l) => return Ok(l),
                Ok(Some(_)) => {}
            }
        }
    }

    /// Blocking [`ChildClient::next_line`], for use outside an async runtime.
    pub fn next_line_blocking(&mut self, timeout: Duration) -> Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.rx.try_recv() {
                Ok(l) => return Ok(Some(l)),
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(None),
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if Instant::now() >= deadline {
                bail!("{}: no output line within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit and its output to end; kills it and errs after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Result<ClientRun> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(self.finish(st));
            }
            if Instant::now() >= deadline {
                return Err(self.timed_out(timeout));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Blocking [`ChildClient::wait`].
    pub fn wait_blocking(&mut self, timeout: Duration) -> Result<ClientRun> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(self.finish(st));
            }
            if Instant::now() >= deadline {
                return Err(self.timed_out(timeout));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(&mut self, st: ExitStatus) -> ClientRun {
        if let Some(r) = self.reader.take() {
            let _ = r.join(); // the pipe closes when the process is gone (no grandchildren hold it)
        }
        ClientRun {
            name: self.name.clone(),
            code: st.code(),
            lines: self.lines(),
            stderr: self.stderr(),
        }
    }

    fn timed_out(&mut self, timeout: Duration) -> anyhow::Error {
        kill_child(&mut self.child);
        let run = self.snapshot();
        anyhow!(
            "{} did not exit within {timeout:?}; killed.\n{}",
            self.name,
            run.describe()
        )
    }

    /// The output so far, without waiting.
    pub fn snapshot(&self) -> ClientRun {
        ClientRun {
            name: self.name.clone(),
            code: None,
            lines: self.lines(),
            stderr: self.stderr(),
        }
    }

    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }
}

impl Drop for ChildClient {
    fn drop(&mut self) {
        kill_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "---- {} (pid {}) ----\n{}\n----",
                self.name,
                self.child.id(),
                self.snapshot().describe()
            );
        }
    }
}

/// Flags for TestProducer / test_producer.py.
#[derive(Debug, Clone)]
pub struct ProducerArgs {
    pub bootstrap: String,
    pub topic: String,
    pub count: u64,
    /// Records per second; 0 = as fast as possible.
    pub rate_per_sec: f64,
    /// First value (values are start..start+count).
    pub start: u64,
    pub acks: Option<String>,
    /// None = the client's default.
    pub idempotence: Option<bool>,
    pub props: Vec<(String, String)>,
}

impl ProducerArgs {
    pub fn new(bootstrap: impl Into<String>, topic: impl Into<String>, count: u64) -> Self {
        ProducerArgs {
            bootstrap: bootstrap.into(),
            topic: topic.into(),
            count,
            rate_per_sec: 0.0,
            start: 0,
            acks: None,
            idempotence: None,
            props: Vec::new(),
        }
    }
    pub fn rate(mut self, per_sec: f64) -> Self {
        self.rate_per_sec = per_sec;
        self
    }
    pub fn start_at(mut self, start: u64) -> Self {
        self.start = start;
        self
    }
    pub fn acks(mut self, acks: impl Into<String>) -> Self {
        self.acks = Some(acks.into());
        self
    }
    pub fn idempotence(mut self, on: bool) -> Self {
        self.idempotence = Some(on);
        self
    }
    pub fn prop(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.props.push((k.into(), v.into()));
        self
    }
    pub fn props(mut self, kvs: impl IntoIterator<Item = (String, String)>) -> Self {
        self.props.extend(kvs);
        self
    }
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--bootstrap".into(),
            self.bootstrap.clone(),
            "--topic".into(),
            self.topic.clone(),
            "--count".into(),
            self.count.to_string(),
            "--rate-per-sec".into(),
            self.rate_per_sec.to_string(),
            "--start".into(),
            self.start.to_string(),
        ];
        if let Some(acks) = &self.acks {
            a.extend(["--acks".into(), acks.clone()]);
        }
        if let Some(i) = self.idempotence {
            a.extend(["--idempotence".into(), i.to_string()]);
        }
        for (k, v) in &self.props {
            a.extend(["--prop".into(), format!("{k}={v}")]);
        }
        a
    }
}

/// Flags for TestConsumer.
#[derive(Debug, Clone)]
pub struct ConsumerArgs {
    pub bootstrap: String,
    pub group: String,
    pub topic: Option<String>,
    pub pattern: Option<String>,
    /// Distinct (topic, value) pairs to wait for.
    pub expect: u64,
    pub timeout_sec: f64,
    pub props: Vec<(String, String)>,
    /// Exactly once: each poll's records are written to this topic and the consumer's
    /// positions committed in the same transaction (TestConsumer `--txn-out`).
    pub txn_out: Option<String>,
}

impl ConsumerArgs {
    pub fn topic(
        bootstrap: impl Into<String>,
        group: impl Into<String>,
        topic: impl Into<String>,
        expect: u64,
    ) -> Self {
        ConsumerArgs {
            bootstrap: bootstrap.into(),
            group: group.into(),
            topic: Some(topic.into()),
            pattern: None,
            expect,
            timeout_sec: 60.0,
            props: Vec::new(),
            txn_out: None,
        }
    }
    pub fn pattern(
        bootstrap: impl Into<String>,
        group: impl Into<String>,
        regex: impl Into<String>,
        expect: u64,
    ) -> Self {
        ConsumerArgs {
            topic: None,
            pattern: Some(regex.into()),
            ..Self::topic(bootstrap, group, "", expect)
        }
    }
    pub fn timeout_sec(mut self, s: f64) -> Self {
        self.timeout_sec = s;
        self
    }
    pub fn prop(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.props.push((k.into(), v.into()));
        self
    }
    pub fn props(mut self, kvs: impl IntoIterator<Item = (String, String)>) -> Self {
        self.props.extend(kvs);
        self
    }
    pub fn txn_out(mut self, topic: impl Into<String>) -> Self {
        self.txn_out = Some(topic.into());
        self
    }
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--bootstrap".into(),
            self.bootstrap.clone(),
            "--group".into(),
            self.group.clone(),
        ];
        if let Some(t) = &self.topic {
            a.extend(["--topic".into(), t.clone()]);
        }
        if let Some(p) = &self.pattern {
            a.extend(["--pattern".into(), p.clone()]);
        }
        a.extend([
            "--expect".into(),
            self.expect.to_string(),
            "--timeout-sec".into(),
            self.timeout_sec.to_string(),
        ]);
        for (k, v) in &self.props {
            a.extend(["--prop".into(), format!("{k}={v}")]);
        }
        if let Some(t) = &self.txn_out {
            a.extend(["--txn-out".into(), t.clone()]);
        }
        a
    }
}

/// Java client properties for SASL/PLAIN or SCRAM-SHA-256/512 over plaintext
/// (`protocol` = "SASL_PLAINTEXT" or "SASL_SSL").
pub fn java_sasl_props(
    protocol: &str,
    mechanism: &str,
    user: &str,
    password: &str,
) -> Vec<(String, String)> {
    let module = if mechanism.eq_ignore_ascii_case("PLAIN") {
        "org.apache.kafka.common.security.plain.PlainLoginModule"
    } else {
        "org.apache.kafka.common.security.scram.ScramLoginModule"
    };
    vec![
        ("security.protocol".into(), protocol.into()),
        ("sasl.mechanism".into(), mechanism.into()),
        (
            "sasl.jaas.config".into(),
            format!("{module} required username=\"{user}\" password=\"{password}\";"),
        ),
    ]
}

/// kafka-python options for SASL (for [`ChildClient::python_producer`]).
pub fn python_sasl_props(
    protocol: &str,
    mechanism: &str,
    user: &str,
    password: &str,
) -> Vec<(String, String)> {
    vec![
        ("security_protocol".into(), protocol.into()),
        ("sasl_mechanism".into(), mechanism.into()),
        ("sasl_plain_username".into(), user.into()),
        ("sasl_plain_password".into(), password.into()),
    ]
}

/// kcat `-X` flags for SASL.
pub fn kcat_sasl_args(protocol: &str, mechanism: &str, user: &str, password: &str) -> Vec<String> {
    [
        format!("security.protocol={protocol}"),
        format!("sasl.mechanisms={mechanism}"),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
    ]
    .into_iter()
    .flat_map(|x| ["-X".to_string(), x])
    .collect()
}

// ------------------------------------------------------------------------------------------------ commands

/// Runs `cmd` to completion, feeding `stdin`; kills it after `timeout` (the returned status then shows the
/// signal and the output is what it printed until then). Errs only if it can't be spawned.
pub fn run_with_timeout(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out_t = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err_t = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// Runs kcat (on librdkafka 2.16) with `args`, 60 s at most.
pub fn kcat(args: &[&str]) -> Output {
    kcat_with(args, None, Duration::from_secs(60))
}

/// Runs kcat with `input` on stdin (for `-P`), 60 s at most.
pub fn kcat_stdin(args: &[&str], input: &[u8]) -> Output {
    kcat_with(args, Some(input), Duration::from_secs(60))
}

pub fn kcat_with(args: &[&str], input: Option<&[u8]>, timeout: Duration) -> Output {
    let mut cmd = Command::new(&tools().kcat);
    cmd.args(args);
    run_with_timeout(cmd, input, timeout).expect("run kcat")
}

// ------------------------------------------------------------------------------------------------ SASL upstream

/// How to start a [`SaslUpstream`]; see [`SaslUpstream::builder`].
#[derive(Debug, Clone)]
pub struct SaslUpstreamBuilder {
    upstream: String,
    port: Option<u16>,
    mechanisms: Vec<String>,
    users: Vec<(String, String)>,
    reauth_ms: Option<u64>,
    tls: Option<(PathBuf, PathBuf)>,
    extra_args: Vec<String>,
    start_timeout: Duration,
}

impl SaslUpstreamBuilder {
    /// Listen port (default: a [`free_port`]). The upstream broker must advertise 127.0.0.1:this port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    /// e.g. `["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]` (default: the first three).
    pub fn mechanisms(mut self, m: &[&str]) -> Self {
        self.mechanisms = m.iter().map(|s| s.to_string()).collect();
        self
    }
    /// Adds a user (default when none is given: the kit's alice:alice-secret and bob:bob-secret).
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }
    /// `connections.max.reauth.ms` (KIP-368).
    pub fn reauth_ms(mut self, ms: u64) -> Self {
        self.reauth_ms = Some(ms);
        self
    }
    /// Serve SASL_SSL with this PEM chain and PKCS#8 PEM key.
    pub fn tls(mut self, cert_pem: impl Into<PathBuf>, key_pem: impl Into<PathBuf>) -> Self {
        self.tls = Some((cert_pem.into(), key_pem.into()));
        self
    }
    /// Any other run.sh flag (`--idle-ms`, `--oauth-required-scope`, ...).
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra_args.push(a.into());
        self
    }
    pub fn start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }

    pub fn start(self) -> Result<SaslUpstream> {
        let t = tools();
        let run = t.sasl_upstream_run.clone().ok_or_else(|| {
            anyhow!("SASL_UPSTREAM_RUN not set: ../shared/kafka-sasl-upstream missing at install time; run scripts/install-test-deps.sh")
        })?;
        let port = self.port.unwrap_or_else(free_port);
        let log = LogFile::new("sasl-upstream-")?;
        let mut cmd = Command::new("bash");
        cmd.arg(&run)
            .arg("--listen")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--upstream")
            .arg(&self.upstream)
            .arg("--mechanisms")
            .arg(self.mechanisms.join(","));
        for (u, p) in &self.users {
            cmd.arg("--user").arg(format!("{u}:{p}"));
        }
        if let Some(ms) = self.reauth_ms {
            cmd.arg("--reauth-ms").arg(ms.to_string());
        }
        if let Some((cert, key)) = &self.tls {
            cmd.arg("--tls")
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        cmd.args(&self.extra_args);
        if let Some(home) = &t.sasl_upstream_home {
            cmd.env("SASL_UPSTREAM_HOME", home);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.stdio()?)
            .stderr(log.stdio()?);
        // run.sh execs java, so the child's pid is the JVM's
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", run.display()))?;
        let mut gw = SaslUpstream { child, port, log };
        let deadline = Instant::now() + self.start_timeout;
        loop {
            if let Some(st) = gw.child.try_wait()? {
                bail!(
                    "SASL upstream on port {port} exited at start ({st}):\n{}",
                    gw.log.tail(30)
                );
            }
            // its "listening" line comes after the bind (a TCP probe would add accepted/closed lines to the log)
            if gw.log.read().contains("] listening ") {
                return Ok(gw);
            }
            if Instant::now() >= deadline {
                bail!(
                    "SASL upstream on port {port} not listening in time:\n{}",
                    gw.log.tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// `../shared/kafka-sasl-upstream/run.sh`: Apache Kafka's own SASL server code in front of one plaintext
/// broker, on 127.0.0.1. Killed on drop. Log lines: `auth-ok`, `auth-failed`, `reauth-begin`, `reauth-ok`,
/// `session-expired-close`.
pub struct SaslUpstream {
    child: Child,
    pub port: u16,
    log: LogFile,
}

impl SaslUpstream {
    /// A gateway in front of `upstream` (`host:port` of a plaintext broker that advertises the gateway).
    pub fn builder(upstream: impl Into<String>) -> SaslUpstreamBuilder {
        SaslUpstreamBuilder {
            upstream: upstream.into(),
            port: None,
            mechanisms: vec![
                "PLAIN".into(),
                "SCRAM-SHA-256".into(),
                "SCRAM-SHA-512".into(),
            ],
            users: Vec::new(),
            reauth_ms: None,
            tls: None,
            extra_args: Vec::new(),
            start_timeout: Duration::from_secs(30),
        }
    }
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn log(&self) -> String {
        self.log.read()
    }
    /// How many log lines contain `needle` (e.g. "auth-ok", "reauth-ok").
    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .read()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }
}

impl Drop for SaslUpstream {
    fn drop(&mut self) {
        kill_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "---- SASL upstream :{} log (tail) ----\n{}\n----",
                self.port,
                self.log.tail(40)
            );
        }
    }
}

/// A tansu broker behind a SASL gateway: tansu on a free port advertising the gateway's address.
pub fn tansu_behind_sasl(
    cluster_id: &str,
    sasl: impl FnOnce(SaslUpstreamBuilder) -> SaslUpstreamBuilder,
) -> Result<(Tansu, SaslUpstream)> {
    let gw_port = free_port();
    let tansu = Tansu::builder()
        .advertised(format!("127.0.0.1:{gw_port}"))
        .cluster_id(cluster_id)
        .start()?;
    let gw = sasl(SaslUpstream::builder(tansu.bootstrap()).port(gw_port)).start()?;
    Ok((tansu, gw))
}
