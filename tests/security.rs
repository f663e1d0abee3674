//! Upstream security end to end. A real rdkafka client talks plaintext, without any
//! credentials, to the proxy; the proxy holds TLS and SASL towards Apache Kafka's own
//! server-side authentication code (`../shared/kafka-sasl-upstream`, started through
//! `tests/common/tools.rs`) in front of a tansu broker that advertises the gateway.
//!
//! Every wait is for an event (a delivery report, a consumed message, a client error
//! callback, a log line) with a generous deadline that only guards against hangs.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::harness::{metric, TestProxy};
use common::tools::{tansu_behind_sasl, SaslUpstream, SaslUpstreamBuilder, Tansu};
use kafka_protocol::messages::{
    ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Guards against hangs only; nothing here is expected to take more than a few seconds.
const GUARD: Duration = Duration::from_secs(45);
const CLUSTER: &str = "sec";
const ALL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

// ------------------------------------------------------------------------------------ log capture

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        // Also into the test's output, for failures.
        eprint!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

static LOGS: OnceLock<Capture> = OnceLock::new();

/// Sends this test process's logs (the proxy's at trace level) into a buffer, and
/// installs the metrics recorder, before anything else runs. nextest gives each test
/// its own process, so the buffer holds one test's logs.
fn init() {
    LOGS.get_or_init(|| {
        let cap = Capture(Arc::new(Mutex::new(Vec::new())));
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,kafka_sidecar=trace",
            ))
            .with_ansi(false)
            .with_writer(cap.clone())
            .try_init()
            .expect("the first subscriber of this test process");
        cap
    });
    kafka_sidecar::admin::install_recorder().expect("metrics recorder");
}

fn logs() -> String {
    let cap = LOGS.get().expect("init() first");
    let buf = cap.0.lock().unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// Waits for a log line containing all of `needles`.
async fn wait_for_log(needles: &[&str]) -> String {
    wait_until(&format!("a log line with {needles:?}"), || {
        logs()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
    })
    .await
}

/// Polls `probe` (cheap, local) until it yields something; panics after [`GUARD`].
async fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + GUARD;
    for _ in 0..100_000 {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what} after {GUARD:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gave up waiting for {what}");
}

// ------------------------------------------------------------------------------------ metrics

fn connect_failures(reason: &str) -> f64 {
    metric(
        kafka_sidecar::admin::names::UPSTREAM_CONNECT_FAILURES_TOTAL,
        &[("cluster", CLUSTER), ("reason", reason)],
    )
}

// ------------------------------------------------------------------------------------ PKI

/// A test CA, a gateway certificate it signed (for 127.0.0.1 and localhost), and a
/// second, unrelated CA.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let issuer = ca("kafka-sidecar test CA");
    let other = ca("some other CA");
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "sasl-gateway");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &*issuer).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", &issuer.pem()),
        other_ca: write("other-ca.pem", &other.pem()),
        // the chain: leaf, then the CA
        cert: write("server.pem", &format!("{}{}", cert.pem(), issuer.pem())),
        // PKCS#8 PEM ("BEGIN PRIVATE KEY")
        key: write("server.key", &key.serialize_pem()),
        _dir: dir,
    }
}

// ------------------------------------------------------------------------------------ upstream

/// An unsecured JWS (alg none) as Kafka's unsecured OAUTHBEARER validator accepts it.
fn unsecured_jws(sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
    let claims = URL_SAFE_NO_PAD
        .encode(format!(r#"{{"sub":"{sub}","iat":{now},"exp":{}}}"#, now + 3600).as_bytes());
    format!("{header}.{claims}.")
}

/// `sasl:` block for `mechanism` as alice.
fn sasl_yaml(mechanism: &str, password: &str) -> String {
    if mechanism == "OAUTHBEARER" {
        format!(
            "{{mechanism: OAUTHBEARER, token: \"{}\"}}",
            unsecured_jws("alice")
        )
    } else {
        format!("{{mechanism: {mechanism}, username: alice, password: \"{password}\"}}")
    }
}

/// The body of the `clusters:` section: one cluster [`CLUSTER`] at `bootstrap`.
fn cluster_yaml(bootstrap: &str, ca_file: Option<&Path>, sasl: &str) -> String {
    let tls = ca_file
        .map(|p| format!("    tls: {{ca_file: \"{}\"}}\n", p.display()))
        .unwrap_or_default();
    format!("  {CLUSTER}:\n    bootstrap_servers: [\"{bootstrap}\"]\n{tls}    sasl: {sasl}\n")
}

/// tansu behind a gateway (alice:alice-secret unless `sasl` adds users).
fn upstream(
    sasl: impl FnOnce(SaslUpstreamBuilder) -> SaslUpstreamBuilder,
) -> (Tansu, SaslUpstream) {
    tansu_behind_sasl("security", sasl).expect("tansu behind the SASL gateway")
}

// ------------------------------------------------------------------------------------ clients

/// What librdkafka reported through its error callback.
#[derive(Debug)]
struct ClientError {
    code: Option<RDKafkaErrorCode>,
    text: String,
}

#[derive(Clone)]
struct Ctx {
    errors: mpsc::UnboundedSender<ClientError>,
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        let _ = self.errors.send(ClientError {
            code: error.rdkafka_error_code(),
            text: format!("{error} ({reason})"),
        });
    }
}

impl ConsumerContext for Ctx {}

fn ctx() -> (Ctx, mpsc::UnboundedReceiver<ClientError>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Ctx { errors: tx }, rx)
}

fn client_config(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        // reconnect soon after the proxy closed a connection (credential rotation)
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "500");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

fn producer(
    bootstrap: &str,
    extra: &[(&str, &str)],
) -> (FutureProducer<Ctx>, mpsc::UnboundedReceiver<ClientError>) {
    let (ctx, rx) = ctx();
    let p = client_config(bootstrap, extra)
        .set("message.timeout.ms", "30000")
        .create_with_context(ctx)
        .expect("producer");
    (p, rx)
}

fn consumer(
    bootstrap: &str,
    group: &str,
) -> (StreamConsumer<Ctx>, mpsc::UnboundedReceiver<ClientError>) {
    let (ctx, rx) = ctx();
    let c = client_config(bootstrap, &[])
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("fetch.wait.max.ms", "100")
        .create_with_context(ctx)
        .expect("consumer");
    (c, rx)
}

fn payload(topic: &str, i: usize) -> String {
    format!("{topic}-{i}")
}

async fn produce(p: &FutureProducer<Ctx>, topic: &str, range: std::ops::Range<usize>) {
    let sends: Vec<_> = range
        .map(|i| {
            let p = p.clone();
            let topic = topic.to_string();
            async move {
                let value = payload(&topic, i);
                p.send(
                    FutureRecord::to(&topic).payload(&value).key(&value),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
            }
        })
        .collect();
    for r in futures::future::join_all(sends).await {
        r.expect("delivery through the proxy");
    }
}

async fn consume(c: &StreamConsumer<Ctx>, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    tokio::time::timeout(GUARD, async {
        while seen.len() < n {
            let m = c.recv().await.expect("consume through the proxy");
            seen.insert(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} messages consumed", seen.len()));
    seen
}

/// Produces `n` messages through the proxy and consumes them all back.
async fn round_trip(bootstrap: &str, topic: &str, n: usize) {
    let (p, _perr) = producer(bootstrap, &[]);
    produce(&p, topic, 0..n).await;
    let (c, _cerr) = consumer(bootstrap, &format!("g-{topic}"));
    c.subscribe(&[topic]).unwrap();
    let seen = consume(&c, n).await;
    let expected: BTreeSet<String> = (0..n).map(|i| payload(topic, i)).collect();
    assert_eq!(seen, expected, "{topic}: every message arrives, once");
}

/// Waits for a client error callback matching `pred`; panics on a hang.
async fn wait_client_error(
    rx: &mut mpsc::UnboundedReceiver<ClientError>,
    what: &str,
    pred: impl Fn(&ClientError) -> bool,
) -> ClientError {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(GUARD, async {
        loop {
            let e = rx.recv().await.expect("client context alive");
            if pred(&e) {
                return e;
            }
            seen.push(e);
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("the client reported no {what}; it reported {seen:?}"))
}

/// A raw connection to the proxy that sends ApiVersions v0 and expects the proxy to
/// close it without an answer.
async fn expect_closed_without_answer(bootstrap: &str) {
    let mut s = tokio::net::TcpStream::connect(bootstrap).await.unwrap();
    // size 10: api key 18, version 0, correlation id 1, null client id
    let req = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    // The proxy may close before reading it: a failed write is fine too.
    let _ = s.write_all(&req).await;
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(GUARD, s.read(&mut buf))
        .await
        .expect("the proxy closes the connection instead of hanging");
    match r {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------ secrets

/// The secret is in no log line, in no rendering of the config, in no `check` output.
fn assert_secret_nowhere(secret: &str, tp: &TestProxy) {
    let l = logs();
    assert!(
        !l.contains(secret),
        "the secret appears in the proxy's logs"
    );
    let cfg = tp.proxy.shared.config();
    let y = cfg.to_redacted_yaml();
    assert!(!y.contains(secret), "redacted yaml shows the secret:\n{y}");
    assert!(
        !format!("{cfg:?}").contains(secret),
        "Debug shows the secret"
    );
    let status = tp.proxy.shared.status().to_string();
    assert!(!status.contains(secret), "status shows the secret");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kafka-sidecar"))
        .arg("check")
        .arg(&tp.config_path)
        .env("RUST_LOG", "trace")
        .output()
        .expect("run kafka-sidecar check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed: {stdout}\n{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "check prints the secret"
    );
}

// ------------------------------------------------------------------------------------ tests

async fn every_mechanism(tls: bool) {
    init();
    let pki = pki();
    let (tansu, gw) = upstream(|b| {
        let b = b.mechanisms(ALL_MECHANISMS).user("alice", "alice-secret");
        if tls {
            b.tls(&pki.cert, &pki.key)
        } else {
            b
        }
    });
    let ca = tls.then_some(pki.ca.as_path());
    for (i, mechanism) in ALL_MECHANISMS.iter().enumerate() {
        let topic = format!("t-{}", mechanism.to_lowercase());
        tansu.create_topic(&topic, 2).unwrap();
        let section = cluster_yaml(&gw.bootstrap(), ca, &sasl_yaml(mechanism, "alice-secret"));
        let tp = TestProxy::start_with_clusters_yaml(&section, CLUSTER, "").await;
        round_trip(&tp.bootstrap, &topic, 50).await;
        tp.proxy.shutdown().await;
        // The gateway saw the proxy authenticate with this mechanism.
        let ok_lines = gw.count_log("auth-ok");
        assert!(ok_lines > i, "no auth-ok for {mechanism}:\n{}", gw.log());
        assert!(
            gw.log()
                .lines()
                .any(|l| l.contains("auth-ok") && l.contains(mechanism)),
            "no {mechanism} auth-ok line:\n{}",
            gw.log()
        );
    }
    assert_eq!(gw.count_log("auth-failed"), 0, "{}", gw.log());
    assert_eq!(connect_failures("sasl"), 0.0);
    assert_eq!(connect_failures("tls"), 0.0);
    // PLAIN sends it in the clear, SCRAM derives keys from it: never logged either way.
    assert!(
        !logs().contains("alice-secret"),
        "the password is in the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mechanism_over_plaintext() {
    every_mechanism(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mechanism_over_tls() {
    every_mechanism(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_closes_the_client_promptly_and_never_logs_the_secret() {
    init();
    const SECRET: &str = "Wr0ng-but-s3cret-pa55word";
    let (_tansu, gw) = upstream(|b| {
        b.mechanisms(&["SCRAM-SHA-512"])
            .user("alice", "alice-secret")
    });
    let section = cluster_yaml(&gw.bootstrap(), None, &sasl_yaml("SCRAM-SHA-512", SECRET));
    let tp = TestProxy::start_with_clusters_yaml(&section, CLUSTER, "").await;

    expect_closed_without_answer(&tp.bootstrap).await;

    // A real client: a transport failure, not a hang.
    let (p, mut errors) = producer(&tp.bootstrap, &[]);
    let e = wait_client_error(&mut errors, "broker transport failure", |e| {
        matches!(
            e.code,
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
        )
    })
    .await;
    eprintln!("client reported: {e:?}");
    drop(p);

    let line = wait_for_log(&[
        "WARN",
        "upstream connect failed",
        "reason=\"sasl\"",
        &gw.bootstrap(),
    ])
    .await;
    assert!(line.contains(&format!("cluster={CLUSTER}")), "{line}");
    wait_for_log(&["WARN", "closing client connection", &gw.bootstrap()]).await;
    assert!(connect_failures("sasl") >= 1.0);
    assert_eq!(connect_failures("timeout"), 0.0);
    assert!(
        !tp.proxy.shared.readiness().0,
        "not ready with a wrong password"
    );
    assert!(gw.count_log("auth-failed") >= 1, "{}", gw.log());
    assert_eq!(gw.count_log("auth-ok"), 0, "{}", gw.log());

    assert_secret_nowhere(SECRET, &tp);
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_closes_the_client_promptly() {
    init();
    let pki = pki();
    let (_tansu, gw) = upstream(|b| {
        b.mechanisms(&["PLAIN"])
            .user("alice", "alice-secret")
            .tls(&pki.cert, &pki.key)
    });
    let section = cluster_yaml(
        &gw.bootstrap(),
        Some(&pki.other_ca),
        &sasl_yaml("PLAIN", "alice-secret"),
    );
    let tp = TestProxy::start_with_clusters_yaml(&section, CLUSTER, "").await;

    expect_closed_without_answer(&tp.bootstrap).await;
    let (p, mut errors) = producer(&tp.bootstrap, &[]);
    wait_client_error(&mut errors, "broker transport failure", |e| {
        matches!(
            e.code,
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
        )
    })
    .await;
    drop(p);

    let line = wait_for_log(&[
        "WARN",
        "upstream connect failed",
        "reason=\"tls\"",
        &gw.bootstrap(),
    ])
    .await;
    assert!(line.contains(&format!("cluster={CLUSTER}")), "{line}");
    assert!(connect_failures("tls") >= 1.0);
    assert_eq!(connect_failures("sasl"), 0.0);
    // The TLS handshake failed: the gateway never saw a SASL attempt.
    assert_eq!(gw.count_log("auth-ok"), 0, "{}", gw.log());
    assert_secret_nowhere("alice-secret", &tp);
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthentication_keeps_a_long_lived_client_going() {
    init();
    // Over TLS: the re-authentication shares the split TLS stream with live traffic.
    let pki = pki();
    let (tansu, gw) = upstream(|b| {
        b.mechanisms(&["SCRAM-SHA-256"])
            .user("alice", "alice-secret")
            .reauth_ms(3000)
            .tls(&pki.cert, &pki.key)
    });
    let topic = "reauth";
    tansu.create_topic(topic, 2).unwrap();
    let section = cluster_yaml(
        &gw.bootstrap(),
        Some(&pki.ca),
        &sasl_yaml("SCRAM-SHA-256", "alice-secret"),
    );
    let tp = TestProxy::start_with_clusters_yaml(&section, CLUSTER, "").await;

    // A consumer whose connections live through every re-authentication too.
    let (c, mut cerrors) = consumer(&tp.bootstrap, "g-reauth");
    c.subscribe(&[topic]).unwrap();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let got = Arc::new(tokio::sync::Notify::new());
    let consuming = {
        let seen = seen.clone();
        let got = got.clone();
        tokio::spawn(async move {
            loop {
                let m = c.recv().await.expect("consume through the proxy");
                seen.lock()
                    .unwrap()
                    .insert(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
                got.notify_one();
            }
        })
    };

    // Produce small bursts (several Produce requests in flight when a re-authentication
    // comes due), each acknowledged before the next, across several 3 s session lifetimes.
    let (p, mut perrors) = producer(&tp.bootstrap, &[("linger.ms", "0")]);
    let run = Duration::from_secs(12);
    let started = Instant::now();
    let mut n = 0;
    while n < 100_000 {
        produce(&p, topic, n..n + 8).await;
        n += 8;
        if started.elapsed() >= run && gw.count_log("reauth-ok") >= 4 {
            break;
        }
        assert!(
            started.elapsed() < run + GUARD,
            "no re-authentications:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every message arrives.
    let deadline = Instant::now() + GUARD;
    loop {
        let have = seen.lock().unwrap().len();
        if have >= n {
            break;
        }
        assert!(Instant::now() < deadline, "only {have} of {n} consumed");
        let _ = tokio::time::timeout(Duration::from_secs(1), got.notified()).await;
    }
    // Dropping the task drops the consumer: that closes it while the proxy still runs
    // (librdkafka's close talks to the group coordinator and can wait forever without one).
    consuming.abort();
    let _ = consuming.await;
    let expected: BTreeSet<String> = (0..n).map(|i| payload(topic, i)).collect();
    assert_eq!(*seen.lock().unwrap(), expected);

    let log = gw.log();
    assert!(gw.count_log("reauth-ok") >= 4, "{log}");
    for bad in ["session-expired-close", "reauth-failed", "auth-failed"] {
        assert_eq!(gw.count_log(bad), 0, "{bad} in the gateway log:\n{log}");
    }
    let ok = metric(
        kafka_sidecar::admin::names::SASL_REAUTHENTICATIONS_TOTAL,
        &[("cluster", CLUSTER), ("result", "ok")],
    );
    assert!(ok >= 4.0, "reauthentications ok = {ok}");
    let failed = metric(
        kafka_sidecar::admin::names::SASL_REAUTHENTICATIONS_TOTAL,
        &[("cluster", CLUSTER), ("result", "error")],
    );
    assert_eq!(failed, 0.0);
    // Neither client noticed anything.
    let client_errors: Vec<_> = std::iter::from_fn(|| perrors.try_recv().ok())
        .chain(std::iter::from_fn(|| cerrors.try_recv().ok()))
        .collect();
    assert!(client_errors.is_empty(), "client errors: {client_errors:?}");
    eprintln!("{n} messages over {:?}", started.elapsed());
    drop(p);
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_credential_files_are_used_by_new_connections() {
    init();
    let (tansu, gw) = upstream(|b| {
        b.mechanisms(&["PLAIN", "SCRAM-SHA-256"])
            .user("alice", "alice-secret")
            .user("bob", "bob-secret")
    });
    tansu.create_topic("rot", 1).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let user_file = secrets.path().join("username");
    let pw_file = secrets.path().join("password");
    // as `kubectl create secret --from-file` leaves them: with a trailing newline
    std::fs::write(&user_file, "alice\n").unwrap();
    std::fs::write(&pw_file, "not-alice-secret\n").unwrap();
    let sasl = format!(
        "{{mechanism: SCRAM-SHA-256, username: {{file: \"{}\"}}, password: {{file: \"{}\"}}}}",
        user_file.display(),
        pw_file.display()
    );
    let tp = TestProxy::start_with_clusters_yaml(
        &cluster_yaml(&gw.bootstrap(), None, &sasl),
        CLUSTER,
        "",
    )
    .await;

    // Wrong password first.
    expect_closed_without_answer(&tp.bootstrap).await;
    assert!(connect_failures("sasl") >= 1.0);

    // The right one: new connections use it, no restart.
    std::fs::write(&pw_file, "alice-secret\n").unwrap();
    let (p1, _e1) = producer(&tp.bootstrap, &[]);
    produce(&p1, "rot", 0..10).await;
    assert!(
        gw.log()
            .lines()
            .any(|l| l.contains("auth-ok") && l.contains("User:alice")),
        "{}",
        gw.log()
    );

    // Rotate to another user: new connections authenticate as bob; the sessions that
    // authenticated as alice carry on.
    std::fs::write(&user_file, "bob\n").unwrap();
    std::fs::write(&pw_file, "bob-secret\n").unwrap();
    let (p2, _e2) = producer(&tp.bootstrap, &[]);
    produce(&p2, "rot", 10..20).await;
    assert!(
        gw.log()
            .lines()
            .any(|l| l.contains("auth-ok") && l.contains("User:bob")),
        "{}",
        gw.log()
    );
    produce(&p1, "rot", 20..30).await;

    let (c, _ce) = consumer(&tp.bootstrap, "g-rot");
    c.subscribe(&["rot"]).unwrap();
    let seen = consume(&c, 30).await;
    assert_eq!(seen, (0..30).map(|i| payload("rot", i)).collect());
    for secret in ["alice-secret", "bob-secret", "not-alice-secret"] {
        assert!(!logs().contains(secret), "{secret} in the logs");
    }
    // Clients go first: librdkafka's teardown talks to the proxy.
    drop((p1, p2, c));
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthentication_reads_the_rotated_secret() {
    init();
    let (tansu, gw) = upstream(|b| {
        b.mechanisms(&["SCRAM-SHA-512"])
            .user("alice", "alice-secret")
            .reauth_ms(3000)
    });
    tansu.create_topic("rot-reauth", 1).unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let pw_file = secrets.path().join("password");
    std::fs::write(&pw_file, "alice-secret").unwrap();
    let sasl = format!(
        "{{mechanism: SCRAM-SHA-512, username: alice, password: {{file: \"{}\"}}}}",
        pw_file.display()
    );
    let tp = TestProxy::start_with_clusters_yaml(
        &cluster_yaml(&gw.bootstrap(), None, &sasl),
        CLUSTER,
        "",
    )
    .await;
    let (p, _errors) = producer(&tp.bootstrap, &[]);
    produce(&p, "rot-reauth", 0..10).await;

    // The gateway's users are fixed, so a rotation it can see on a live session is one
    // to a password it refuses: the next re-authentication must use the new file content
    // (and fail), not a copy from start-up.
    let reauth_errors = || {
        metric(
            kafka_sidecar::admin::names::SASL_REAUTHENTICATIONS_TOTAL,
            &[("cluster", CLUSTER), ("result", "error")],
        )
    };
    std::fs::write(&pw_file, "rotated-too-early").unwrap();
    wait_until("a failed re-authentication", || {
        (reauth_errors() >= 1.0).then_some(())
    })
    .await;
    wait_for_log(&["WARN", "re-authentication failed"]).await;

    // Rotated back: the client reconnects through the proxy and carries on; nothing lost.
    std::fs::write(&pw_file, "alice-secret").unwrap();
    produce(&p, "rot-reauth", 10..20).await;
    let (c, _ce) = consumer(&tp.bootstrap, "g-rot-reauth");
    c.subscribe(&["rot-reauth"]).unwrap();
    let seen = consume(&c, 20).await;
    assert_eq!(seen, (0..20).map(|i| payload("rot-reauth", i)).collect());
    assert!(!logs().contains("rotated-too-early"), "secret in the logs");
    drop((p, c));
    tp.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_attempting_sasl_gets_a_clear_authentication_error() {
    init();
    let (_tansu, gw) = upstream(|b| b.mechanisms(&["PLAIN"]).user("alice", "alice-secret"));
    let section = cluster_yaml(&gw.bootstrap(), None, &sasl_yaml("PLAIN", "alice-secret"));
    let tp = TestProxy::start_with_clusters_yaml(&section, CLUSTER, "").await;

    let (p, mut errors) = producer(
        &tp.bootstrap,
        &[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "client-user"),
            ("sasl.password", "client-password"),
        ],
    );
    let e = wait_client_error(&mut errors, "authentication error", |e| {
        e.code == Some(RDKafkaErrorCode::Authentication)
    })
    .await;
    eprintln!("client reported: {e:?}");
    assert!(e.text.contains("PLAIN"), "{e:?}");
    drop(p);
    let line = wait_for_log(&["WARN", "client attempted SASL"]).await;
    assert!(
        line.contains("PLAINTEXT"),
        "the log says what to do: {line}"
    );
    assert!(line.contains(&format!("cluster={CLUSTER}")), "{line}");

    // The same, frame by frame: SaslHandshake gets UNSUPPORTED_SASL_MECHANISM with no
    // mechanisms; a SaslAuthenticate without a handshake gets ILLEGAL_SASL_STATE with a
    // message saying what to do. Both are answered, neither hangs.
    let mut s = tokio::net::TcpStream::connect(&tp.bootstrap).await.unwrap();
    let hs = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    let mut body = raw_request(&mut s, ApiKey::SaslHandshake, 1, 7, &hs).await;
    let r = SaslHandshakeResponse::decode(&mut body, 1).unwrap();
    assert_eq!(r.error_code, 33, "UNSUPPORTED_SASL_MECHANISM: {r:?}");
    assert!(r.mechanisms.is_empty(), "{r:?}");
    let auth = SaslAuthenticateRequest::default()
        .with_auth_bytes(bytes::Bytes::from_static(b"\0client-user\0client-password"));
    let mut body = raw_request(&mut s, ApiKey::SaslAuthenticate, 2, 8, &auth).await;
    let r = SaslAuthenticateResponse::decode(&mut body, 2).unwrap();
    assert_eq!(r.error_code, 34, "ILLEGAL_SASL_STATE: {r:?}");
    let msg = r.error_message.map(|m| m.to_string()).unwrap_or_default();
    assert!(msg.contains("security.protocol=PLAINTEXT"), "{msg}");

    // The proxy's own upstream authentication was fine, and the client's credentials
    // never reached the upstream.
    assert!(gw.count_log("auth-ok") >= 1, "{}", gw.log());
    assert_eq!(gw.count_log("auth-failed"), 0, "{}", gw.log());
    assert!(!gw.log().contains("client-user"), "{}", gw.log());
    tp.proxy.shutdown().await;
}

/// Sends one request on a raw connection and returns the response body (after its header).
async fn raw_request<T: Encodable>(
    s: &mut tokio::net::TcpStream,
    api: ApiKey,
    version: i16,
    corr: i32,
    body: &T,
) -> bytes::Bytes {
    let mut buf = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")))
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut frame = (buf.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    s.write_all(&frame).await.unwrap();
    let read = async {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await?;
        let mut resp = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut resp).await?;
        std::io::Result::Ok(resp)
    };
    let resp = tokio::time::timeout(GUARD, read)
        .await
        .expect("an answer, not a hang")
        .expect("an answer, not a closed connection");
    let mut b = bytes::Bytes::from(resp);
    let h = ResponseHeader::decode(&mut b, api.response_header_version(version)).unwrap();
    assert_eq!(h.correlation_id, corr);
    b
}
