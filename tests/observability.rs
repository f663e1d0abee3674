//! Observability end to end: the admin listener's `/metrics`, `/readyz` and `/status`
//! after real rdkafka traffic through the proxy to librdkafka's mock cluster.
//!
//! The metrics recorder is process-global, so every test uses cluster names of its
//! own and compares process-wide series (no cluster label) as before/after deltas.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::harness::{config_yaml, init_logging, port_block, TestProxy};
use kafka_sidecar::admin::names;
use kafka_sidecar::config::Config;
use kafka_sidecar::proxy::Proxy;
use prometheus_parse::Value;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Admin listener on an ephemeral port; the proxy reports the bound address.
const ADMIN: &str = "admin: {address: \"127.0.0.1:0\"}\n";

/// Generous bound for conditions that have no event to await (HTTP-visible state).
const DEADLINE: Duration = Duration::from_secs(30);

/// Like `TestProxy::start_with`, with `limits` extended by `limits_extra` (e.g. a fast
/// metadata refresh), which `extra` cannot do since the harness already writes `limits`.
async fn start_proxy(clusters: &[(&str, String)], active: &str, limits_extra: &str) -> TestProxy {
    init_logging();
    let ports = port_block();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    let base = config_yaml(&ports, clusters, active, ADMIN);
    let limits = "limits: {connect_timeout: 5s";
    assert!(base.contains(limits), "harness config changed:\n{base}");
    let yaml = base.replacen(limits, &format!("{limits}{limits_extra}"), 1);
    std::fs::write(&config_path, &yaml).unwrap();
    let cfg = Config::load(&config_path).unwrap();
    let proxy = Proxy::start(cfg, Some(config_path.clone())).await.unwrap();
    TestProxy {
        bootstrap: format!("127.0.0.1:{}", ports.bootstrap),
        proxy,
        ports,
        config_path,
        dir,
    }
}

fn admin_addr(tp: &TestProxy) -> SocketAddr {
    let a = tp.proxy.admin.expect("admin listener configured");
    assert_ne!(a.port(), 0, "the bound admin port, not the configured 0");
    a
}

/// One HTTP/1.1 GET with `Connection: close`: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("admin response timed out")
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("no header end");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

async fn status_json(addr: SocketAddr) -> serde_json::Value {
    let (code, body) = get(addr, "/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A parsed `/metrics` scrape (with the prometheus-parse crate).
struct Scrape {
    text: String,
    parsed: prometheus_parse::Scrape,
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (code, text) = get(addr, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the Prometheus text parses");
    if let Some(path) = std::env::var_os("KAFKA_SIDECAR_SCRAPE_OUT") {
        // For scripts/validate-monitoring.sh, which runs `promtool check metrics` on it.
        std::fs::write(path, &text).unwrap();
    }
    Scrape { text, parsed }
}

impl Scrape {
    fn find(&self, metric: &str, labels: &[(&str, &str)]) -> Option<&prometheus_parse::Sample> {
        self.parsed
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    }

    /// Value of a counter, gauge or untyped series; 0 if it does not exist (yet).
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        match self.find(metric, labels).map(|s| &s.value) {
            None => 0.0,
            Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
            Some(other) => panic!("{metric}: not a single value: {other:?}"),
        }
    }

    /// Sum over every series of `metric` matching `labels`.
    fn sum(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.parsed
            .samples
            .iter()
            .filter(|s| {
                s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }

    fn must(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        assert!(
            self.find(metric, labels).is_some(),
            "no {metric}{labels:?} in the scrape:\n{}",
            self.text
        );
        self.value(metric, labels)
    }

    /// Every `kafka_sidecar_*` series is a declared name with HELP text.
    fn assert_all_declared(&self) {
        for s in &self.parsed.samples {
            if !s.metric.starts_with("kafka_sidecar_") {
                continue;
            }
            let base = ["_count", "_sum"]
                .iter()
                .find_map(|suf| {
                    s.metric
                        .strip_suffix(suf)
                        .filter(|b| names::ALL.contains(b))
                })
                .unwrap_or(&s.metric);
            assert!(
                names::ALL.contains(&base),
                "{} is emitted but not in admin::names::ALL",
                s.metric
            );
            assert!(
                self.parsed.docs.contains_key(base),
                "{base} has no HELP text"
            );
        }
    }
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

async fn produce(p: &FutureProducer, topic: &str, range: std::ops::Range<u32>) {
    let futures: Vec<_> = range
        .map(|i| {
            let p = p.clone();
            let topic = topic.to_string();
            async move {
                let payload = format!("m-{i}");
                p.send(
                    FutureRecord::to(&topic).payload(&payload).key(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
            }
        })
        .collect();
    for r in futures::future::join_all(futures).await {
        r.expect("delivery through the proxy");
    }
}

/// Polls `check` (an HTTP-visible condition with no event to await) until it holds.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = tokio::time::Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() > DEADLINE => {
                panic!("{what}: not within {DEADLINE:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_real_traffic() {
    const C: &str = "obs_traffic";
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic("obs-t", 3, 1).unwrap();
    let tp = TestProxy::start_with(&[(C, mock.bootstrap_servers())], C, ADMIN).await;
    let admin = admin_addr(&tp);
    let before = scrape(admin).await;
    let cl = [("cluster", C)];

    let p = producer(&tp.bootstrap);
    produce(&p, "obs-t", 0..60).await;
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &tp.bootstrap)
        .set("group.id", "obs-g")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap();
    c.subscribe(&["obs-t"]).unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..60 {
            c.recv().await.expect("consume through the proxy");
        }
    })
    .await
    .expect("60 messages consumed through the proxy");

    let s = scrape(admin).await;
    s.assert_all_declared();
    let to_up = s.must(
        names::BYTES_TOTAL,
        &[("cluster", C), ("direction", "client_to_upstream")],
    );
    let to_client = s.must(
        names::BYTES_TOTAL,
        &[("cluster", C), ("direction", "upstream_to_client")],
    );
    assert!(
        to_up > 0.0 && to_client > 0.0,
        "bytes {to_up} / {to_client}"
    );
    for api in [
        "ApiVersions",
        "Metadata",
        "Produce",
        "Fetch",
        "FindCoordinator",
    ] {
        let l = [("cluster", C), ("api", api)];
        assert!(s.must(names::REQUESTS_TOTAL, &l) >= 1.0, "{api} requests");
        assert!(s.must(names::RESPONSES_TOTAL, &l) >= 1.0, "{api} responses");
    }
    // Every Produce (acks=all) was answered before its delivery was reported.
    let pl = [("cluster", C), ("api", "Produce")];
    let produce_latencies = s.must(&format!("{}_count", names::REQUEST_DURATION_SECONDS), &pl);
    assert!(produce_latencies >= 1.0, "{produce_latencies}");
    match &s
        .find(names::REQUEST_DURATION_SECONDS, &pl)
        .expect("latency buckets")
        .value
    {
        Value::Histogram(b) => {
            let inf = b.iter().find(|c| c.less_than.is_infinite()).expect("+Inf");
            assert_eq!(inf.count, produce_latencies);
        }
        other => panic!("not a histogram: {other:?}"),
    }
    s.must(names::REQUESTS_IN_FLIGHT, &cl);
    for listener in ["bootstrap", "broker"] {
        let l = [("listener", listener)];
        let d = s.must(names::CLIENT_CONNECTIONS_ACCEPTED_TOTAL, &l)
            - before.value(names::CLIENT_CONNECTIONS_ACCEPTED_TOTAL, &l);
        assert!(d >= 1.0, "{listener} connections accepted: +{d}");
    }
    assert!(s.must(names::CLIENT_CONNECTIONS_OPEN, &cl) >= 2.0);
    // The background refresh and each session.
    assert!(s.must(names::UPSTREAM_CONNECTIONS_TOTAL, &cl) >= 3.0);
    assert_eq!(s.must(names::UPSTREAM_REACHABLE, &cl), 1.0);
    assert_eq!(s.must(names::ACTIVE_CLUSTER, &cl), 1.0);
    assert_eq!(
        s.value(names::UPSTREAM_CONNECT_FAILURES_TOTAL, &cl),
        0.0,
        "{}",
        s.text
    );

    // Clients leave: open connections go back to zero, closes are counted.
    drop(c);
    drop(p);
    let s = eventually("client connections closed", || async {
        let s = scrape(admin).await;
        match s.value(names::CLIENT_CONNECTIONS_OPEN, &cl) {
            0.0 => Ok(s),
            open => Err(format!("{open} open")),
        }
    })
    .await;
    let closed = s.sum(names::CLIENT_CONNECTIONS_CLOSED_TOTAL, &[])
        - before.sum(names::CLIENT_CONNECTIONS_CLOSED_TOTAL, &[]);
    assert!(closed >= 2.0, "closed +{closed}");
    assert_eq!(s.value(names::REQUESTS_IN_FLIGHT, &cl), 0.0);
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_active_cluster() {
    const C: &str = "obs_ready";
    let mock = MockCluster::new(1).unwrap();
    // Down before the proxy starts: its port refuses connections.
    mock.broker_down(1).unwrap();
    let tp = start_proxy(
        &[(C, mock.bootstrap_servers())],
        C,
        ", metadata_refresh_interval: 100ms",
    )
    .await;
    let admin = admin_addr(&tp);
    let cl = [("cluster", C)];
    let refused = [("cluster", C), ("reason", "refused")];

    assert_eq!(get(admin, "/healthz").await, (200, "ok\n".to_string()));
    // Not ready because a refresh failed, not merely because none finished yet.
    eventually("a refused refresh", || async {
        let n = scrape(admin)
            .await
            .value(names::UPSTREAM_CONNECT_FAILURES_TOTAL, &refused);
        if n >= 1.0 {
            Ok(())
        } else {
            Err("no refused connect yet".into())
        }
    })
    .await;
    let (code, body) = get(admin, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(C) && body.contains("not reachable"), "{body}");
    assert_eq!(status_json(admin).await["ready"], false);
    assert_eq!(
        get(admin, "/healthz").await.0,
        200,
        "alive though not ready"
    );
    let s = scrape(admin).await;
    assert_eq!(s.must(names::UPSTREAM_REACHABLE, &cl), 0.0);
    s.assert_all_declared();

    // Back: ready again without any client traffic.
    mock.broker_up(1).unwrap();
    eventually("/readyz 200 after the broker is back", || async {
        match get(admin, "/readyz").await {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code} {body}")),
        }
    })
    .await;
    let status = status_json(admin).await;
    assert_eq!(status["ready"], true);
    assert_eq!(status["clusters"][C]["reachable"], true);
    assert_eq!(
        scrape(admin).await.must(names::UPSTREAM_REACHABLE, &cl),
        1.0
    );

    // And down again.
    mock.broker_down(1).unwrap();
    eventually("/readyz 503 after the broker went down again", || async {
        match get(admin, "/readyz").await {
            (503, _) => Ok(()),
            (code, body) => Err(format!("{code} {body}")),
        }
    })
    .await;
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_reflect_a_switch_and_reloads() {
    let (a, b) = ("obs_a", "obs_b");
    let mock_a = MockCluster::new(1).unwrap();
    let mock_b = MockCluster::new(1).unwrap();
    mock_a.create_topic("obs-s", 1, 1).unwrap();
    mock_b.create_topic("obs-s", 1, 1).unwrap();
    let clusters = [
        (a, mock_a.bootstrap_servers()),
        (b, mock_b.bootstrap_servers()),
    ];
    let tp = TestProxy::start_with(&clusters, a, ADMIN).await;
    let admin = admin_addr(&tp);

    let st = status_json(admin).await;
    assert_eq!(st["active_cluster"], a);
    assert_eq!(st["switches"], 0);
    assert!(st["last_switch"].is_null(), "{st}");
    let since_before = st["active_since"].clone();

    let p = producer(&tp.bootstrap);
    produce(&p, "obs-s", 0..10).await;
    let before = scrape(admin).await;
    assert_eq!(before.must(names::ACTIVE_CLUSTER, &[("cluster", a)]), 1.0);
    assert_eq!(before.must(names::ACTIVE_CLUSTER, &[("cluster", b)]), 0.0);

    tp.switch_to(&clusters, b, ADMIN).await;
    // The same producer carries on, now served by `b`.
    produce(&p, "obs-s", 10..20).await;
    assert_eq!(messages_on(&mock_b), 10);

    // The switch's duration is recorded just after the first response is written to
    // the client, so it can trail the delivery report by a moment.
    let st = eventually("last_switch.duration_ms", || async {
        let st = status_json(admin).await;
        if st["last_switch"]["duration_ms"].is_number() {
            Ok(st)
        } else {
            Err(st["last_switch"].to_string())
        }
    })
    .await;
    assert_eq!(st["active_cluster"], b);
    assert_eq!(st["switches"], 1);
    assert_eq!(st["generation"], 1);
    assert_eq!(st["last_switch"]["from"], a);
    assert_eq!(st["last_switch"]["to"], b);
    assert!(st["last_switch"]["at"].is_string(), "{st}");
    assert_ne!(st["active_since"], since_before);
    assert_eq!(st["last_reload"]["reloads_ok"], 1);
    assert_eq!(st["clusters"][b]["reachable"], true);
    assert!(
        st["clusters"][a].is_object() && st["listeners"].is_array(),
        "{st}"
    );

    let s = scrape(admin).await;
    s.assert_all_declared();
    assert_eq!(
        s.must(names::SWITCHES_TOTAL, &[("from", a), ("to", b)]),
        1.0
    );
    assert_eq!(s.must(names::ACTIVE_CLUSTER, &[("cluster", a)]), 0.0);
    assert_eq!(s.must(names::ACTIVE_CLUSTER, &[("cluster", b)]), 1.0);
    assert!(s.must(names::SWITCH_DURATION_SECONDS, &[]) > 0.0);
    let ok = [("result", "ok")];
    assert!(
        s.must(names::CONFIG_RELOADS_TOTAL, &ok) - before.value(names::CONFIG_RELOADS_TOTAL, &ok)
            >= 1.0
    );
    // The producer's session on `a` ended with the switch.
    let drained =
        s.sum(names::DRAINED_SESSIONS_TOTAL, &[]) - before.sum(names::DRAINED_SESSIONS_TOTAL, &[]);
    assert!(drained >= 1.0, "drain outcomes +{drained}");
    assert!(s.must(names::REQUESTS_TOTAL, &[("cluster", b), ("api", "Produce")]) >= 1.0);

    // A broken edit is refused, counted and shown; the proxy stays on `b`.
    let reload = tp.proxy.shared.reload_status.lock().clone().unwrap();
    let mut rx = reload.subscribe();
    let tmp = tp.dir.path().join(".broken.tmp");
    std::fs::write(&tmp, "active_cluster: [not, a, name]\n").unwrap();
    std::fs::rename(&tmp, &tp.config_path).unwrap();
    tokio::time::timeout(DEADLINE, rx.wait_for(|r| r.reloads_failed >= 1))
        .await
        .expect("the broken config was evaluated")
        .unwrap();
    let st = status_json(admin).await;
    assert_eq!(st["active_cluster"], b);
    assert_eq!(st["last_reload"]["reloads_failed"], 1);
    assert_eq!(
        st["last_reload"]["last_outcome"]["result"], "failed",
        "{st}"
    );
    let s = scrape(admin).await;
    let err = [("result", "error")];
    assert!(
        s.must(names::CONFIG_RELOADS_TOTAL, &err) - before.value(names::CONFIG_RELOADS_TOTAL, &err)
            >= 1.0
    );
    assert_eq!(s.must(names::CONFIG_LAST_RELOAD_SUCCESS, &[]), 0.0);
    assert_eq!(
        get(admin, "/readyz").await.0,
        200,
        "a refused edit keeps serving"
    );
    tp.proxy.shutdown().await;
}

/// Messages on `obs-s` partition 0 of a mock cluster, asked directly (not through the proxy).
fn messages_on(mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>) -> i64 {
    let c: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", "obs-check")
        .create()
        .unwrap();
    let (lo, hi) = tokio::task::block_in_place(|| {
        c.fetch_watermarks("obs-s", 0, Duration::from_secs(10))
            .unwrap()
    });
    hi - lo
}
