//! Fleet failover with real processes: two tansu brokers ("north" and "west"), several
//! `kafka-sidecar run` processes (the built binary), each with a Java producer at its
//! default settings (idempotent, acks=all), `kafka-sidecar failover` / `fleet` as an
//! operator runs them, and three `kafka-sidecar arbiter` processes for the automatic
//! cases. What is asserted are events (decision epochs and origins in every sidecar's
//! and arbiter's `/status`, the commands' exit codes and output) and the data invariant
//! (every acknowledged record is on a cluster at the partition and offset its ack
//! named), never timings.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::harness::{port_block, MAX_NODE_ID};
use common::readback::{self, Log};
use common::tools::{
    free_port, parse_ack, parse_msg, run_with_timeout, ChildClient, ConsumerArgs, JavaClients,
    ProducerArgs, Tansu,
};
use serde_json::Value;
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_kafka-sidecar");
const TOPIC: &str = "events";
const PARTITIONS: u32 = 3;
/// Bound on any awaited event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------------------------------------ processes

/// A `kafka-sidecar` child process (sidecar or arbiter) with an admin port; killed on drop.
struct Proc {
    name: String,
    child: Child,
    admin: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Proc {
    fn spawn(name: &str, args: &[&str], admin: SocketAddr) -> Proc {
        let log = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .suffix(".log")
            .tempfile()
            .unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("FLEET_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("HOSTNAME", name)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.reopen().unwrap()))
            .stderr(Stdio::from(log.reopen().unwrap()))
            .spawn()
            .unwrap();
        let p = Proc {
            name: name.into(),
            child,
            admin,
            log,
        };
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while TcpStream::connect_timeout(&admin, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{name}: admin port never opened\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    fn log_text(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.log.path()).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    fn status(&self) -> Value {
        http_get_json(self.admin, "/status").unwrap_or(Value::Null)
    }

    /// Polls `/status` (the process's own account of events) until `pred` holds.
    async fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let st = self.status();
            if pred(&st) {
                return st;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{}: not seen within {EVENT_TIMEOUT:?}: {what}\nstatus: {st:#}\nlog tail:\n{}",
                    self.name,
                    tail(&self.log_text(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log (tail) ----\n{}\n----",
                self.name,
                tail(&self.log_text(), 60)
            );
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

fn http_get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (_, body) = buf.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

// ------------------------------------------------------------------------------------------------ config

/// The automatic-failover policy of a test (`control.automatic`), or none.
#[derive(Clone)]
struct Auto {
    failback: bool,
    failback_after: &'static str,
    min_interval: &'static str,
}

/// A config file for a sidecar, the operator or an arbiter (they share the format;
/// arbiters and operators do not bind the listen ports).
fn write_config(
    dir: &std::path::Path,
    file: &str,
    clusters: &[(&str, String)],
    auto: Option<&Auto>,
    admin: Option<u16>,
) -> PathBuf {
    let ports = port_block();
    let mut y = format!(
        "listen: {{address: 127.0.0.1, bootstrap_port: {}, broker_port_base: {}, max_node_id: {MAX_NODE_ID}}}\nactive_cluster: north\nclusters:\n",
        ports.bootstrap, ports.broker_base
    );
    for (name, servers) in clusters {
        y.push_str(&format!(
            "  {name}: {{bootstrap_servers: [\"{servers}\"]}}\n"
        ));
    }
    if let Some(a) = admin {
        y.push_str(&format!("admin: {{address: \"127.0.0.1:{a}\"}}\n"));
    }
    y.push_str("limits: {connect_timeout: 3s, metadata_refresh_interval: 1s}\nswitch: {drain_timeout: 2s}\n");
    y.push_str("control:\n  poll_wait: 100ms\n  report_interval: 1s\n");
    if let Some(a) = auto {
        y.push_str(&format!(
            "  automatic:\n    priority: [north, west]\n    arbiters: [a1, a2, a3]\n    probe_interval: 300ms\n    probe_timeout: 1s\n    unhealthy_after: 2s\n    min_interval: {}\n    failback: {}\n    failback_after: {}\n",
            a.min_interval, a.failback, a.failback_after
        ));
    }
    let path = dir.join(file);
    std::fs::write(&path, y).unwrap();
    path
}

struct Sidecar {
    proc: Proc,
    bootstrap: String,
}

fn start_sidecar(dir: &std::path::Path, name: &str, clusters: &[(&str, String)]) -> Sidecar {
    let admin = free_port();
    let path = write_config(dir, &format!("{name}.yaml"), clusters, None, Some(admin));
    let cfg = std::fs::read_to_string(&path).unwrap();
    let port: u16 = cfg
        .split("bootstrap_port: ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let proc = Proc::spawn(
        name,
        &["run", "--config", path.to_str().unwrap()],
        ([127, 0, 0, 1], admin).into(),
    );
    Sidecar {
        proc,
        bootstrap: format!("127.0.0.1:{port}"),
    }
}

fn start_arbiter(
    dir: &std::path::Path,
    id: &str,
    clusters: &[(&str, String)],
    auto: &Auto,
) -> Proc {
    let admin = free_port();
    let path = write_config(dir, &format!("{id}.yaml"), clusters, Some(auto), None);
    Proc::spawn(
        id,
        &[
            "arbiter",
            "--config",
            path.to_str().unwrap(),
            "--id",
            id,
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ],
        ([127, 0, 0, 1], admin).into(),
    )
}

/// Runs `kafka-sidecar <args>` to completion (bounded) and returns (success, stdout, stderr).
async fn cli(args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_LOG", "warn");
    let out =
        tokio::task::spawn_blocking(move || run_with_timeout(cmd, None, Duration::from_secs(90)))
            .await
            .unwrap()
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("$ kafka-sidecar {}\n{stdout}{stderr}", args.join(" "));
    (out.status.success(), stdout, stderr)
}

fn tansu(id: &str) -> Tansu {
    let t = Tansu::builder().cluster_id(id).start().unwrap();
    t.create_topic(TOPIC, PARTITIONS).unwrap();
    t
}

/// Restarts a killed broker on the same port (empty: tansu keeps data in memory).
fn restart(old: &Tansu) -> Tansu {
    let t = Tansu::builder()
        .port(old.port)
        .cluster_id(old.cluster_id.clone())
        .start()
        .unwrap();
    t.create_topic(TOPIC, PARTITIONS).unwrap();
    t
}

// ------------------------------------------------------------------------------------------------ clients

/// A Java producer (default settings) through one sidecar; its ACK lines are kept with
/// the time they arrived.
struct Producer {
    name: String,
    acks: std::sync::Arc<std::sync::Mutex<Vec<(Instant, common::tools::Ack)>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<ChildClient>,
    start: u64,
}

impl Producer {
    /// Values are `start..`: distinct per producer, so an ack matches only its own record.
    fn start(name: &str, bootstrap: &str, start: u64) -> Producer {
        let args = ProducerArgs::new(bootstrap, TOPIC, 1_000_000)
            .rate(25.0)
            .start_at(start);
        let mut client = ChildClient::java_producer(JavaClients::V3_9, &args).unwrap();
        let acks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = acks.clone();
        let (stop, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    line = client.next_line(Duration::from_secs(600)) => match line {
                        Ok(Some(l)) => if let Some(a) = parse_ack(&l) { kept.lock().unwrap().push((Instant::now(), a)) },
                        _ => break,
                    },
                }
            }
            client
        });
        Producer {
            name: name.into(),
            acks,
            stop,
            task,
            start,
        }
    }

    fn max_acked(&self) -> u64 {
        self.acks
            .lock()
            .unwrap()
            .iter()
            .map(|(_, a)| a.i)
            .max()
            .unwrap_or(0)
    }

    /// Waits until an id above `id` is acknowledged.
    async fn wait_ack_above(&self, id: u64, what: &str) {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT * 2;
        while self.max_acked() <= id {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: no ack above {id}: {what}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the producer; returns its acknowledgements and what it printed otherwise.
    async fn stop(self) -> (Vec<(Instant, common::tools::Ack)>, String) {
        let _ = self.stop.send(true);
        let mut client = self.task.await.unwrap();
        client.kill();
        let run = client.snapshot();
        assert!(run.fatal().is_none(), "{}", run.describe());
        let acks = self.acks.lock().unwrap().clone();
        (acks, run.describe())
    }
}

/// A Java consumer group member through one sidecar; its MSG values are kept.
struct GroupConsumer {
    values: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl GroupConsumer {
    fn start(bootstrap: &str) -> GroupConsumer {
        let args = ConsumerArgs::topic(bootstrap, "fleet-group", TOPIC, 1_000_000_000)
            .timeout_sec(600.0)
            .prop("session.timeout.ms", "10000");
        let mut client = ChildClient::java_consumer(JavaClients::V3_9, &args).unwrap();
        let values = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = values.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(l)) = client.next_line(Duration::from_secs(600)).await {
                if let Some(v) = parse_msg(&l).and_then(|m| m.value.parse().ok()) {
                    kept.lock().unwrap().push(v);
                }
            }
        });
        GroupConsumer { values, task }
    }

    /// Waits until the group has read a value in `range` (records produced after a
    /// switch exist only on the new cluster).
    async fn wait_value_in(&self, range: std::ops::Range<u64>, what: &str) {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT * 2;
        while !self
            .values
            .lock()
            .unwrap()
            .iter()
            .any(|v| range.contains(v))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "consumer group: nothing in {range:?}: {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // The task owns the ChildClient: aborting it drops (kills) the JVM.
        self.task.abort();
    }
}

/// `events` on one cluster, read directly with kcat. The topic must exist.
fn read_topic(cluster: &Tansu) -> Log {
    readback::read_topic(&cluster.bootstrap(), TOPIC).expect("the topic exists")
}

/// Every acknowledgement after `since` (all if None) is on one of `clusters`, at the
/// partition and offset it named, with its value. Producers' ids are per producer, so
/// each producer writes a value prefix of its own: checked per (producer, id).
fn check_acks(
    name: &str,
    acks: &[(Instant, common::tools::Ack)],
    logs: &[&Log],
    since: Option<Instant>,
) -> usize {
    let mut checked = 0;
    for (at, a) in acks {
        if since.is_some_and(|s| *at < s) {
            continue;
        }
        let id = a.i.to_string();
        let found = logs
            .iter()
            .any(|l| l.get(&(a.partition, a.offset)) == Some(&id));
        assert!(
            found,
            "{name}: acknowledged id {} (partition {} offset {}) is on no cluster there",
            a.i, a.partition, a.offset
        );
        checked += 1;
    }
    checked
}

/// Two clusters, `n` sidecars each with a producer, all producing on north.
struct Fleet {
    north: Tansu,
    west: Tansu,
    dir: tempfile::TempDir,
    sidecars: Vec<Sidecar>,
    producers: Vec<Producer>,
    operator_config: PathBuf,
}

impl Fleet {
    async fn start(n: usize) -> Fleet {
        common::harness::init_logging();
        let north = tansu("dc-north");
        let west = tansu("dc-west");
        let dir = tempfile::tempdir().unwrap();
        let clusters = [("north", north.bootstrap()), ("west", west.bootstrap())];
        let sidecars: Vec<Sidecar> = (0..n)
            .map(|i| start_sidecar(dir.path(), &format!("sidecar-{i}"), &clusters))
            .collect();
        let operator_config = write_config(dir.path(), "operator.yaml", &clusters, None, None);
        for s in &sidecars {
            s.proc
                .wait_status("serving north", |st| {
                    st["active_cluster"] == "north" && st["ready"] == true
                })
                .await;
        }
        let producers: Vec<Producer> = sidecars
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Producer::start(
                    &format!("producer-{i}"),
                    &s.bootstrap,
                    i as u64 * 100_000_000,
                )
            })
            .collect();
        for p in &producers {
            p.wait_ack_above(p.start + 10, "acks from north").await;
        }
        Fleet {
            north,
            west,
            dir,
            sidecars,
            producers,
            operator_config,
        }
    }

    fn clusters(&self) -> Vec<(&'static str, String)> {
        vec![
            ("north", self.north.bootstrap()),
            ("west", self.west.bootstrap()),
        ]
    }

    /// Waits until every sidecar applied a decision of `epoch` to `cluster`, and
    /// returns the decisions they follow.
    async fn wait_all_on(&self, epoch: u64, cluster: &str) -> Vec<Value> {
        let mut out = vec![];
        for s in &self.sidecars {
            let st = s
                .proc
                .wait_status(&format!("epoch {epoch} applied, on {cluster}"), |st| {
                    st["control"]["applied_epoch"] == epoch && st["active_cluster"] == cluster
                })
                .await;
            out.push(st["control"]["decision"].clone());
        }
        out
    }

    /// Stops every producer (reading a topic with kcat ends only once nobody writes).
    async fn stop_producers(&mut self) -> Vec<(String, Vec<(Instant, common::tools::Ack)>)> {
        let mut out = vec![];
        for p in std::mem::take(&mut self.producers) {
            let name = p.name.clone();
            out.push((name, p.stop().await.0));
        }
        out
    }

    /// Each producer acknowledges records produced after now (through the new cluster).
    async fn producers_go_on(&self, what: &str) {
        for p in &self.producers {
            let above = p.max_acked() + 25;
            p.wait_ack_above(above, what).await;
        }
    }
}

// ------------------------------------------------------------------------------------------------ relay

/// A TCP relay in front of a broker that the test can cut and restore: a path from
/// one observer to one cluster.
struct Relay {
    port: u16,
    target: SocketAddr,
    stop: Option<watch::Sender<bool>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let mut r = Relay {
            port: free_port(),
            target,
            stop: None,
        };
        r.restore().await;
        r
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes the listener and every relayed connection: new connections are refused.
    fn cut(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
    }

    async fn restore(&mut self) {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let (tx, rx) = watch::channel(false);
        let target = self.target;
        tokio::spawn(async move {
            let mut stop = rx.clone();
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    a = l.accept() => {
                        let Ok((mut client, _)) = a else { continue };
                        let mut stop = rx.clone();
                        tokio::spawn(async move {
                            let Ok(mut up) = tokio::net::TcpStream::connect(target).await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut up) => {}
                                _ = stop.changed() => {}
                            }
                        });
                    }
                }
            }
        });
        self.stop = Some(tx);
    }
}

// ------------------------------------------------------------------------------------------------ tests

/// `failover --to west`, then `--to north`: every sidecar follows each decision, the
/// command says the whole fleet converged, a Java consumer group member reads what was
/// produced after each switch (so only the new cluster has it), `fleet` lists every
/// sidecar, and no acknowledged record is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_failover_and_failback_move_every_sidecar() {
    let f = Fleet::start(3).await;
    let cfg = f.operator_config.to_str().unwrap().to_string();
    // Every sidecar reports before the command (so the command knows the fleet).
    for s in &f.sidecars {
        s.proc
            .wait_status("reported once", |st| {
                st["control"]["clusters"]["north"]["reports_sent"].as_u64() > Some(0)
            })
            .await;
    }
    // A consumer group member through sidecar 0 as well.
    let group = GroupConsumer::start(&f.sidecars[0].bootstrap);
    group
        .wait_value_in(0..100_000_000, "the group consumes on north")
        .await;
    let at_failover = f.producers[0].max_acked() + 25;
    let (ok, out, err) = cli(&[
        "failover", "--to", "west", "--reason", "drill", "--config", &cfg,
    ])
    .await;
    assert!(ok, "failover --to west failed: {out}{err}");
    assert!(out.contains("3/3 sidecars on west"), "{out}");
    let ds = f.wait_all_on(1, "west").await;
    for d in &ds {
        assert_eq!(
            (
                d["epoch"].as_u64(),
                d["origin"].as_str(),
                d["reason"].as_str()
            ),
            (Some(1), Some("operator"), Some("drill"))
        );
    }
    f.producers_go_on("producing through west").await;
    group
        .wait_value_in(
            at_failover..100_000_000,
            "the group reads west after the failover",
        )
        .await;
    let at_failback = f.producers[0].max_acked() + 25;

    let (ok, out, err) = cli(&[
        "failover",
        "--to",
        "north",
        "--reason",
        "drill over",
        "--config",
        &cfg,
    ])
    .await;
    assert!(ok, "failover --to north failed: {out}{err}");
    assert!(out.contains("3/3 sidecars on north"), "{out}");
    f.wait_all_on(2, "north").await;
    f.producers_go_on("producing through north again").await;
    group
        .wait_value_in(
            at_failback..100_000_000,
            "the group reads north after the failback",
        )
        .await;
    drop(group);

    let (ok, out, _) = cli(&["fleet", "--json", "--config", &cfg]).await;
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    let sidecars = v["sidecars"].as_array().unwrap();
    let on_north: HashSet<&str> = sidecars
        .iter()
        .filter(|s| {
            s["fresh"] == true && s["report"]["cluster"] == "north" && s["report"]["epoch"] == 2
        })
        .filter_map(|s| s["report"]["host"].as_str())
        .collect();
    assert_eq!(on_north.len(), 3, "{v:#}");
    for c in ["north", "west"] {
        assert_eq!(v["clusters"][c]["decision"]["epoch"], 2, "{v:#}");
    }

    // An unknown cluster is refused, and nothing is written.
    let (ok, _, err) = cli(&[
        "failover", "--to", "south", "--reason", "typo", "--config", &cfg,
    ])
    .await;
    assert!(!ok && err.contains("south"), "{err}");

    let mut f = f;
    let runs = f.stop_producers().await;
    let north = read_topic(&f.north);
    let west = read_topic(&f.west);
    for (name, acks) in runs {
        let n = check_acks(&name, &acks, &[&north, &west], None);
        println!("{name}: {n} acknowledged records, all found");
    }
}

/// North's broker killed: the arbiters' quorum fails the fleet over after
/// unhealthy_after; producers go on through west; once north is back (empty), an
/// operator fails back by command, and a stale-epoch-free decision lands on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn north_killed_automatic_failover_then_manual_failback() {
    let mut f = Fleet::start(3).await;
    let auto = Auto {
        failback: false,
        failback_after: "2s",
        min_interval: "1h",
    };
    let clusters = f.clusters();
    let arbiters: Vec<Proc> = ["a1", "a2", "a3"]
        .iter()
        .map(|id| start_arbiter(f.dir.path(), id, &clusters, &auto))
        .collect();
    for a in &arbiters {
        a.wait_status("sees both clusters healthy", |st| {
            st["probes"]["north"]["healthy"] == true && st["probes"]["west"]["healthy"] == true
        })
        .await;
    }
    f.north.kill();
    let killed = Instant::now();
    let ds = f.wait_all_on(1, "west").await;
    for d in &ds {
        assert_eq!(d["origin"], "automatic", "{d:#}");
        assert!(
            d["writer"].as_str().unwrap().starts_with("arbiter:"),
            "{d:#}"
        );
        let supporters = d["evidence"]["supporters"].as_array().unwrap();
        assert!(supporters.len() >= 2, "{d:#}");
    }
    f.producers_go_on("producing through west after the automatic failover")
        .await;
    // Exactly one automatic epoch, whoever wrote it.
    for a in &arbiters {
        let st = a.status();
        assert_eq!(st["control"]["decision"]["epoch"], 1, "{st:#}");
    }

    // North comes back empty; the operator fails back by command.
    f.north = restart(&f.north);
    let cfg = f.operator_config.to_str().unwrap().to_string();
    let (ok, out, err) = cli(&[
        "failover",
        "--to",
        "north",
        "--reason",
        "north rebuilt",
        "--config",
        &cfg,
    ])
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("3/3 sidecars on north"), "{out}");
    f.wait_all_on(2, "north").await;
    f.producers_go_on("producing through the rebuilt north")
        .await;

    // Acks after the kill came from west or the rebuilt north (the killed in-memory
    // broker took its own acknowledged records with it).
    let runs = f.stop_producers().await;
    let north = read_topic(&f.north);
    let west = read_topic(&f.west);
    for (name, acks) in runs {
        // The ACK lines are read with a lag, so a record north acknowledged just before
        // the kill can be read after `killed`; north took those with it. North is dead
        // from the first acknowledgement found on west on: everything from there must be
        // on west or the rebuilt north.
        let first_west = acks
            .iter()
            .find(|(at, a)| {
                *at >= killed && west.get(&(a.partition, a.offset)) == Some(&a.i.to_string())
            })
            .map(|(at, _)| *at);
        let excused = acks
            .iter()
            .filter(|(at, _)| *at >= killed && first_west.is_some_and(|f| *at < f))
            .count();
        println!("{name}: {excused} acks read after the kill but before the first one from west (north's, lost with it)");
        let n = check_acks(&name, &acks, &[&north, &west], first_west.or(Some(killed)));
        assert!(n > 0, "{name}: nothing acknowledged after the kill");
        println!("{name}: {n} records acknowledged after the kill, all found");
    }
}

/// North frozen (SIGSTOP): automatic failover; north resumed: automatic failback after
/// failback_after (enabled here). North keeps its data, so every acknowledged record
/// of the whole run is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn north_frozen_automatic_failover_and_automatic_failback() {
    let mut f = Fleet::start(3).await;
    let auto = Auto {
        failback: true,
        failback_after: "2s",
        min_interval: "4s",
    };
    let clusters = f.clusters();
    let arbiters: Vec<Proc> = ["a1", "a2", "a3"]
        .iter()
        .map(|id| start_arbiter(f.dir.path(), id, &clusters, &auto))
        .collect();
    for a in &arbiters {
        a.wait_status("sees both clusters healthy", |st| {
            st["probes"]["north"]["healthy"] == true && st["probes"]["west"]["healthy"] == true
        })
        .await;
    }
    f.north.pause().unwrap();
    let ds = f.wait_all_on(1, "west").await;
    assert!(ds.iter().all(|d| d["origin"] == "automatic"), "{ds:#?}");
    f.producers_go_on("producing through west while north is frozen")
        .await;
    f.north.resume().unwrap();
    let ds = f.wait_all_on(2, "north").await;
    for d in &ds {
        assert_eq!(d["origin"], "automatic", "{d:#}");
        assert!(d["reason"].as_str().unwrap().contains("failback"), "{d:#}");
    }
    f.producers_go_on("producing through north after the automatic failback")
        .await;
    let runs = f.stop_producers().await;
    let north = read_topic(&f.north);
    let west = read_topic(&f.west);
    for (name, acks) in runs {
        let n = check_acks(&name, &acks, &[&north, &west], None);
        println!("{name}: {n} acknowledged records, all found");
    }
}

/// Only arbiter a1 loses its path to north (its bootstrap goes through a relay the test
/// cuts): a1 votes north unhealthy for well over unhealthy_after, a2 and a3 see it
/// healthy, and no decision is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_arbiter_cut_from_north_moves_nothing() {
    common::harness::init_logging();
    let north = tansu("dc-north");
    let west = tansu("dc-west");
    let dir = tempfile::tempdir().unwrap();
    let auto = Auto {
        failback: false,
        failback_after: "2s",
        min_interval: "1h",
    };
    let mut relay = Relay::start(north.listen).await;
    let direct = [("north", north.bootstrap()), ("west", west.bootstrap())];
    let via_relay = [("north", relay.addr()), ("west", west.bootstrap())];
    let a1 = start_arbiter(dir.path(), "a1", &via_relay, &auto);
    let others: Vec<Proc> = ["a2", "a3"]
        .iter()
        .map(|id| start_arbiter(dir.path(), id, &direct, &auto))
        .collect();
    let sidecar = start_sidecar(dir.path(), "sidecar-0", &direct);
    for a in std::iter::once(&a1).chain(&others) {
        a.wait_status("sees both clusters healthy", |st| {
            st["probes"]["north"]["healthy"] == true
        })
        .await;
    }
    relay.cut();
    // a1's own vote: north unhealthy for more than twice unhealthy_after.
    a1.wait_status("a1 sees north down for 4 s", |st| {
        st["votes"]["a1"]["vote"]["clusters"]["north"]["healthy"] == false
            && st["votes"]["a1"]["vote"]["clusters"]["north"]["for_ms"].as_u64() > Some(4000)
    })
    .await;
    // Then ten more evaluations on every arbiter, each with all three votes fresh.
    for a in std::iter::once(&a1).chain(&others) {
        let from = a.status()["evaluations"].as_u64().unwrap();
        let st = a
            .wait_status("10 more evaluations", |st| {
                st["evaluations"].as_u64() > Some(from + 10)
            })
            .await;
        assert!(
            st["control"]["decision"].is_null(),
            "{} decided: {st:#}",
            a.name
        );
        assert!(
            st["decisions_written"].as_array().unwrap().is_empty(),
            "{st:#}"
        );
        let fresh = st["votes"]
            .as_object()
            .unwrap()
            .values()
            .filter(|v| v["fresh"] == true)
            .count();
        assert_eq!(fresh, 3, "{}: not all votes fresh: {st:#}", a.name);
        assert_eq!(st["verdict"]["verdict"], "steady", "{st:#}");
        assert_eq!(
            st["verdict"]["suspecting"],
            serde_json::json!(["a1"]),
            "{st:#}"
        );
    }
    let st = sidecar.proc.status();
    assert_eq!(st["active_cluster"], "north", "{st:#}");
    assert!(st["control"]["decision"].is_null(), "{st:#}");
}

/// North flapping (every arbiter's path to north cut and restored, repeatedly): one
/// automatic failover, then failback and any further move are blocked by min_interval
/// however often north comes and goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_north_gets_one_automatic_decision_per_min_interval() {
    common::harness::init_logging();
    let north = tansu("dc-north");
    let west = tansu("dc-west");
    let dir = tempfile::tempdir().unwrap();
    let auto = Auto {
        failback: true,
        failback_after: "1s",
        min_interval: "1h",
    };
    let mut relay = Relay::start(north.listen).await;
    let via_relay = [("north", relay.addr()), ("west", west.bootstrap())];
    let arbiters: Vec<Proc> = ["a1", "a2", "a3"]
        .iter()
        .map(|id| start_arbiter(dir.path(), id, &via_relay, &auto))
        .collect();
    for a in &arbiters {
        a.wait_status("sees north healthy", |st| {
            st["probes"]["north"]["healthy"] == true
        })
        .await;
    }
    for cycle in 0..3 {
        relay.cut();
        for a in &arbiters {
            a.wait_status("north down in its probes", |st| {
                st["probes"]["north"]["healthy"] == false
            })
            .await;
        }
        if cycle == 0 {
            for a in &arbiters {
                a.wait_status("the automatic failover", |st| {
                    st["control"]["decision"]["epoch"] == 1
                })
                .await;
            }
        } else {
            // Down for longer than unhealthy_after again (nothing to fail over from:
            // west is active), then back.
            arbiters[0]
                .wait_status("north down 3 s", |st| {
                    st["votes"]["a1"]["vote"]["clusters"]["north"]["for_ms"].as_u64() > Some(3000)
                        && st["votes"]["a1"]["vote"]["clusters"]["north"]["healthy"] == false
                })
                .await;
        }
        relay.restore().await;
        // North healthy for well over failback_after in every view: a failback has a
        // quorum, and min_interval blocks it.
        for a in &arbiters {
            a.wait_status("failback blocked by min_interval", |st| {
                st["verdict"]["verdict"] == "blocked"
                    && st["verdict"]["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("min_interval"))
            })
            .await;
        }
    }
    for a in &arbiters {
        let st = a.status();
        assert_eq!(st["control"]["decision"]["epoch"], 1, "{}: {st:#}", a.name);
        assert_eq!(st["control"]["decision"]["active"], "west");
        for d in st["decisions_written"].as_array().unwrap() {
            assert_eq!(d["epoch"], 1, "{}: wrote {d:#}", a.name);
        }
    }
}

/// Precedence (in-process proxies, real brokers): with `control:`, an edit of
/// `active_cluster` in the file never overrides the decision in force, and a sidecar
/// that starts after a decision starts on the decision's cluster, not the file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_edit_never_overrides_a_decision_and_new_sidecars_start_on_it() {
    use kafka_sidecar::config::Config;
    use kafka_sidecar::control::ops::{failover, FailoverArgs};
    common::harness::init_logging();
    let north = tansu("dc-north");
    let west = tansu("dc-west");
    let clusters = [("north", north.bootstrap()), ("west", west.bootstrap())];
    let control = "control: {poll_wait: 100ms, report_interval: 1s}\n";
    let tp = common::harness::TestProxy::start_with(&clusters, "north", control).await;
    let cfg = Config::load(&tp.config_path).unwrap();
    let decide = |to: &'static str| {
        let cfg = cfg.clone();
        async move {
            failover(
                &cfg,
                FailoverArgs {
                    to: to.into(),
                    reason: "precedence test".into(),
                    timeout: EVENT_TIMEOUT,
                    expect: Some(1),
                },
            )
            .await
            .unwrap()
        }
    };
    let wait_on = |to: &'static str| {
        let mut rx = tp.proxy.shared.switch.subscribe();
        async move {
            tokio::time::timeout(EVENT_TIMEOUT, async {
                while rx.borrow_and_update().cluster.name() != to {
                    rx.changed().await.unwrap();
                }
            })
            .await
            .unwrap_or_else(|_| panic!("not on {to}"))
        }
    };
    decide("west").await;
    wait_on("west").await;
    decide("north").await;
    wait_on("north").await;
    let switches = tp.proxy.shared.switch.switch_count();

    // Someone edits the file to west: the reload is applied, the decision stays in force.
    let reloads = |st: &Value| st["last_reload"]["reloads_ok"].as_u64().unwrap_or(0);
    let before = reloads(&tp.proxy.shared.status());
    let yaml = common::harness::config_yaml(&tp.ports, &clusters, "west", control);
    let tmp = tp.dir.path().join(".edit.tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, &tp.config_path).unwrap();
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while reloads(&tp.proxy.shared.status()) <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edit was never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = tp.proxy.shared.status();
    assert_eq!(st["active_cluster"], "north", "{st:#}");
    assert_eq!(st["control"]["file_active_cluster"], "west", "{st:#}");
    assert_eq!(st["control"]["decision"]["epoch"], 2, "{st:#}");
    assert_eq!(tp.proxy.shared.switch.switch_count(), switches, "{st:#}");

    // A sidecar whose file says west starts under decision 2: on north from the start.
    let late = common::harness::TestProxy::start_with(&clusters, "west", control).await;
    let st = late.proxy.shared.status();
    assert_eq!(st["active_cluster"], "north", "{st:#}");
    assert_eq!(st["control"]["decision"]["epoch"], 2, "{st:#}");
    late.proxy.shutdown().await;
    tp.proxy.shutdown().await;
}

/// The operator's command alone against tansu (no clients): `failover --to west` reads
/// both clusters' control topics (decisions and recent reports, up to their ends),
/// writes the decision and sees both sidecars follow it; `fleet` lists them. Guards the
/// control client against tansu's answers (this once failed on every run with
/// "control topics not readable" while the sidecars read the same topics fine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_command_on_tansu_reads_the_fleet_and_converges() {
    common::harness::init_logging();
    let north = tansu("dc-north");
    let west = tansu("dc-west");
    let dir = tempfile::tempdir().unwrap();
    let clusters = [("north", north.bootstrap()), ("west", west.bootstrap())];
    let sidecars: Vec<Sidecar> = (0..2)
        .map(|i| start_sidecar(dir.path(), &format!("sidecar-{i}"), &clusters))
        .collect();
    let cfg = write_config(dir.path(), "operator.yaml", &clusters, None, None);
    let cfg = cfg.to_str().unwrap();
    // A few reports each on both clusters, so the command reads a non-empty history.
    for s in &sidecars {
        s.proc
            .wait_status("reported 3 times to each cluster", |st| {
                ["north", "west"]
                    .iter()
                    .all(|c| st["control"]["clusters"][c]["reports_sent"].as_u64() >= Some(3))
            })
            .await;
    }
    let (ok, out, err) = cli(&[
        "failover", "--to", "west", "--reason", "tansu", "--config", cfg,
    ])
    .await;
    assert!(ok, "failover --to west failed: {out}{err}");
    assert!(!err.contains("not readable"), "{err}");
    for c in ["north", "west"] {
        assert!(out.contains(&format!("written to cluster {c}")), "{out}");
    }
    assert!(out.contains("2/2 sidecars on west"), "{out}");
    for s in &sidecars {
        s.proc
            .wait_status("on west under epoch 1", |st| {
                st["control"]["applied_epoch"] == 1 && st["active_cluster"] == "west"
            })
            .await;
    }
    // A second decision builds on the first one, read back from both clusters.
    let (ok, out, err) = cli(&[
        "failover", "--to", "north", "--reason", "back", "--config", cfg,
    ])
    .await;
    assert!(ok, "failover --to north failed: {out}{err}");
    assert!(out.contains("decision epoch 2"), "{out}");
    assert!(out.contains("2/2 sidecars on north"), "{out}");
    let (ok, out, err) = cli(&["fleet", "--json", "--config", cfg]).await;
    assert!(ok, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    for c in ["north", "west"] {
        assert_eq!(v["clusters"][c]["reachable"], true, "{v:#}");
        assert_eq!(v["clusters"][c]["decision"]["epoch"], 2, "{v:#}");
    }
    let fresh = v["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["fresh"] == true && s["report"]["cluster"] == "north")
        .count();
    assert_eq!(fresh, 2, "{v:#}");
}
