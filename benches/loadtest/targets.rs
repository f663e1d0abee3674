//! The upstreams a run measures against: the embedded librdkafka mock cluster, tansu, a real
//! Apache Kafka broker from the kit, or an external cluster.
//!
//! Mock and tansu are cheap to start, so each run gets fresh ones (no run reads another's
//! data or memory). The Kafka broker is a JVM that takes seconds to start: one per load test,
//! and each run creates and deletes its own topic.
//!
//! `sidecar_switched` needs a second cluster to switch away from ("spare"): a second mock or
//! tansu per run; for Kafka and an external cluster the same cluster under a second name (the
//! proxy treats it as another cluster: after the switch every idempotent batch is rewritten
//! all the same, and a second JVM broker would take a core from the measurement).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;

use crate::cli::{tool, Args};
use crate::relays::{wait_port, Ports};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Mock,
    Tansu,
    Kafka,
    External,
}

/// One upstream kind for the whole load test (the Kafka broker lives as long as this).
pub struct Target {
    pub kind: Kind,
    /// Kafka or external: the bootstrap servers.
    bootstrap: Option<String>,
    /// Kafka: the state dir of `kafka-cluster.sh`, stopped on drop.
    kafka_dir: Option<PathBuf>,
    tansu_bin: Option<String>,
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Mock => "mock",
            Kind::Tansu => "tansu",
            Kind::Kafka => "kafka",
            Kind::External => "external",
        }
    }

    /// Starts what `--targets` and `--bootstrap` ask for.
    pub fn start_all(args: &Args, dir: &Path, ports: &Ports) -> anyhow::Result<Vec<Target>> {
        let mut out = vec![];
        for t in crate::cli::list(&args.targets) {
            out.push(match t {
                "mock" => Target {
                    kind: Kind::Mock,
                    bootstrap: None,
                    kafka_dir: None,
                    tansu_bin: None,
                },
                "tansu" => {
                    let bin = tool("TANSU_BIN")
                        .filter(|b| Path::new(b).exists())
                        .context(
                            "tansu not found: run scripts/install-test-deps.sh (or set TANSU_BIN)",
                        )?;
                    Target {
                        kind: Kind::Tansu,
                        bootstrap: None,
                        kafka_dir: None,
                        tansu_bin: Some(bin),
                    }
                }
                "kafka" => start_kafka(&dir.join("kafka"), ports.kafka_base)?,
                other => bail!("unknown target {other} (mock, tansu, kafka; or --bootstrap)"),
            });
        }
        if let Some(b) = &args.bootstrap {
            out.push(Target {
                kind: Kind::External,
                bootstrap: Some(b.clone()),
                kafka_dir: None,
                tansu_bin: None,
            });
        }
        anyhow::ensure!(!out.is_empty(), "no target: --targets is empty");
        Ok(out)
    }

    pub fn describe(&self, args: &Args) -> String {
        match self.kind {
            Kind::Mock => format!(
                "mock: embedded librdkafka mock cluster, {} brokers, fresh per run, in the load generator's process; it keeps only the last ~5 MB of each partition, so its consume phase reads ~30 MB in tens of ms: not a measurement (consume is measured on tansu and kafka)",
                args.mock_brokers
            ),
            Kind::Tansu => "tansu: one in-memory tansu broker, fresh per run".into(),
            Kind::Kafka => format!(
                "kafka: Apache Kafka (KRaft, 1 broker, scripts/kafka-cluster.sh) at {}",
                self.bootstrap.as_deref().unwrap_or("?")
            ),
            Kind::External => format!(
                "external cluster at {}",
                self.bootstrap.as_deref().unwrap_or("?")
            ),
        }
    }

    /// The upstream (and, when `spare`, the cluster to switch away from) for one run.
    pub fn for_run(&self, args: &Args, ports: &Ports, spare: bool) -> anyhow::Result<RunUpstream> {
        let mut up = RunUpstream {
            kind: self.kind,
            bootstrap: String::new(),
            spare: None,
            node_ids: vec![],
            mocks: vec![],
            tansus: vec![],
            tansu_bin: self.tansu_bin.clone(),
            kafka_pids: self
                .kafka_dir
                .as_deref()
                .map(kafka_pids)
                .unwrap_or_default(),
        };
        match self.kind {
            Kind::Mock => {
                let m = MockCluster::new(args.mock_brokers)?;
                up.bootstrap = m.bootstrap_servers();
                up.node_ids = (1..=args.mock_brokers).collect();
                up.mocks.push(m);
                if spare {
                    let s = MockCluster::new(1)?;
                    up.spare = Some(s.bootstrap_servers());
                    up.mocks.push(s);
                }
            }
            Kind::Tansu => {
                let bin = self
                    .tansu_bin
                    .as_deref()
                    .expect("tansu target has a binary");
                up.tansus.push(start_tansu(bin, ports.tansu)?);
                up.bootstrap = format!("127.0.0.1:{}", ports.tansu);
                // tansu's node id is always 111.
                up.node_ids = vec![111];
                if spare {
                    up.tansus.push(start_tansu(bin, ports.tansu_spare)?);
                    up.spare = Some(format!("127.0.0.1:{}", ports.tansu_spare));
                }
            }
            Kind::Kafka | Kind::External => {
                let b = self
                    .bootstrap
                    .clone()
                    .expect("kafka target has a bootstrap");
                let c: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &b)
                    .set("log_level", "3")
                    .create()?;
                let md = c.fetch_metadata(None, Duration::from_secs(10))?;
                up.node_ids = md.brokers().iter().map(|b| b.id()).collect();
                up.spare = spare.then(|| b.clone());
                up.bootstrap = b;
            }
        }
        Ok(up)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(dir) = &self.kafka_dir {
            let _ = Command::new("bash")
                .arg(kafka_script())
                .args(["stop", "--dir"])
                .arg(dir)
                .arg("--now")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-cluster.sh")
}

/// One broker from the kit, leased by this process: `lease` returns once the broker answers
/// and leaves the JVM running (its output goes to a file: a pipe would stay open as long as
/// the JVM), and its watchdog stops the broker a few seconds after this process is gone,
/// also when the load test was killed. Dropping the target stops it at once.
fn start_kafka(dir: &Path, port_base: u16) -> anyhow::Result<Target> {
    std::fs::create_dir_all(dir)?;
    // Not in `dir`: `start` clears the *.log files there.
    let log = dir.with_extension("start.out");
    println!(
        "starting an Apache Kafka broker (scripts/kafka-cluster.sh, {})",
        dir.display()
    );
    let status = Command::new("bash")
        .arg(kafka_script())
        .args([
            "start",
            "--name",
            "loadtest",
            "--nodes",
            "1",
            "--auto-create",
            "false",
        ])
        .arg("--port-base")
        .arg(port_base.to_string())
        .arg("--dir")
        .arg(dir)
        .arg("--foreground-timeout")
        .arg("180")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(dir.with_extension("start.err"))?)
        .status()
        .context("running scripts/kafka-cluster.sh lease")?;
    // Stopped on drop even when the start failed half way.
    let mut target = Target {
        kind: Kind::Kafka,
        bootstrap: None,
        kafka_dir: Some(dir.to_path_buf()),
        tansu_bin: None,
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        bail!(
            "kafka-cluster.sh lease failed ({status}): {out}{}",
            std::fs::read_to_string(dir.with_extension("start.err")).unwrap_or_default()
        );
    }
    let bootstrap = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("bootstrap="))
        .context("kafka-cluster.sh printed no READY line")?
        .to_string();
    target.bootstrap = Some(bootstrap);
    Ok(target)
}

pub struct Tansu(Child);

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tansu(bin: &str, port: u16) -> anyhow::Result<Tansu> {
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.arg("broker")
        .arg("--listener-url")
        .arg(format!("tcp://{listen}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://{listen}"))
        .arg("--storage-engine")
        .arg("memory://tansu/")
        .arg("--cluster-id")
        .arg(format!("loadtest-{port}"));
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
    let mut child = cmd
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    wait_port(listen.parse()?, &mut child, "tansu")?;
    Ok(Tansu(child))
}

/// The upstream of one run; fresh mocks and tansus die with it.
pub struct RunUpstream {
    pub kind: Kind,
    pub bootstrap: String,
    /// The cluster `sidecar_switched` starts on and switches away from.
    pub spare: Option<String>,
    pub node_ids: Vec<i32>,
    mocks: Vec<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    tansus: Vec<Tansu>,
    tansu_bin: Option<String>,
    /// Kafka: the brokers' processes (their pid files in the kit's state dir).
    kafka_pids: Vec<u32>,
}

/// The broker processes `kafka-cluster.sh` started in `dir` (`broker-<id>.pid`).
fn kafka_pids(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("broker-") && name.ends_with(".pid")
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect()
}

impl RunUpstream {
    /// The measured upstream's own processes, when it runs outside the load generator
    /// (tansu, the kit's Kafka brokers); empty for the in-process mock and external
    /// clusters.
    pub fn broker_pids(&self) -> Vec<u32> {
        match self.kind {
            Kind::Tansu => self.tansus.first().map(|t| t.0.id()).into_iter().collect(),
            Kind::Kafka => self.kafka_pids.clone(),
            Kind::Mock | Kind::External => vec![],
        }
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        match self.kind {
            Kind::Mock => Ok(self.mocks[0].create_topic(topic, partitions, 1)?),
            Kind::Tansu => {
                // tansu's own CLI: what the tests use to create its topics.
                let bin = self.tansu_bin.as_deref().expect("tansu binary");
                let out = Command::new(bin)
                    .args(["topic", "create", "--broker"])
                    .arg(format!("tcp://{}", self.bootstrap))
                    .arg("--partitions")
                    .arg(partitions.to_string())
                    .arg(topic)
                    .env("NO_COLOR", "1")
                    .stdin(Stdio::null())
                    .output()
                    .context("tansu topic create")?;
                anyhow::ensure!(
                    out.status.success(),
                    "tansu topic create {topic}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(())
            }
            Kind::Kafka | Kind::External => admin_topic(&self.bootstrap, topic, Some(partitions)),
        }
    }

    /// Real clusters keep what a run wrote: delete its topic (mocks and tansus just die).
    pub fn delete_topic(&self, topic: &str) {
        if matches!(self.kind, Kind::Kafka | Kind::External) {
            if let Err(e) = admin_topic(&self.bootstrap, topic, None) {
                eprintln!("warning: deleting topic {topic}: {e:#}");
            }
        }
    }
}

/// Creates (`Some(partitions)`) or deletes (`None`) a topic with the admin API (bounded: 20 s).
fn admin_topic(bootstrap: &str, topic: &str, create: Option<i32>) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "3")
        .create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    let res = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), async {
            match create {
                Some(p) => {
                    admin
                        .create_topics(
                            &[NewTopic::new(topic, p, TopicReplication::Fixed(1))],
                            &opts,
                        )
                        .await
                }
                None => admin.delete_topics(&[topic], &opts).await,
            }
        })
        .await
    })??;
    for r in res {
        if let Err((t, e)) = r {
            bail!("topic {t}: {e}");
        }
    }
    Ok(())
}
