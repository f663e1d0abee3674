//! Authentication against Apache Kafka's own server-side SASL code: the Java gateway in
//! /work/shared/kafka-sasl-upstream (run its setup.sh once). Skipped, with a message, when
//! the gateway has not been built or java is missing.
//!
//! The gateway asks its upstream for ApiVersions at start (retrying for 10 s) and opens
//! one upstream connection per authenticated client, so each test runs a tiny fake
//! upstream that answers ApiVersions; that also lets a test check that an authenticated
//! connection relays requests.

use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::BytesMut;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::*;
use crate::config::{SaslConfig, SaslMechanism, Secret, TlsConfig};
use crate::connection::Connection;
use crate::tls::test_pki::{write, Ca};

const STEP: Duration = Duration::from_secs(20);
const MAX_FRAME: usize = 1 << 20;

fn gateway_home() -> PathBuf {
    std::env::var_os("SASL_UPSTREAM_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/kafka-sasl-upstream")
        })
}

const RUN_SH: &str = "/work/shared/kafka-sasl-upstream/run.sh";

fn gateway_available() -> bool {
    let ok = gateway_home().join("classes/.built").exists()
        && std::path::Path::new(RUN_SH).exists()
        && Command::new("java")
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED: the SASL gateway is not built (run /work/shared/kafka-sasl-upstream/setup.sh)"
        );
    }
    ok
}

/// A fake plaintext broker that answers ApiVersions (any version up to 3) and nothing
/// else. Threads end with the process.
fn fake_upstream() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || serve_api_versions(conn));
        }
    });
    port
}

fn serve_api_versions(mut conn: StdTcpStream) {
    loop {
        let mut len = [0u8; 4];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let mut req = vec![0u8; i32::from_be_bytes(len) as usize];
        if conn.read_exact(&mut req).is_err() {
            return;
        }
        let key = i16::from_be_bytes([req[0], req[1]]);
        let version = i16::from_be_bytes([req[2], req[3]]).min(3);
        if key != ApiKey::ApiVersions as i16 {
            return;
        }
        let keys = [
            (ApiKey::Produce, 3, 9),
            (ApiKey::Metadata, 0, 12),
            (ApiKey::ApiVersions, 0, 3),
        ];
        let resp = ApiVersionsResponse::default().with_api_keys(
            keys.iter()
                .map(|&(k, min, max)| {
                    ApiVersion::default()
                        .with_api_key(k as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        );
        let mut body = BytesMut::new();
        resp.encode(&mut body, version).unwrap();
        let mut frame = Vec::new();
        frame.extend_from_slice(&((4 + body.len()) as i32).to_be_bytes());
        frame.extend_from_slice(&req[4..8]); // response header v0: the correlation id
        frame.extend_from_slice(&body);
        if conn.write_all(&frame).is_err() {
            return;
        }
    }
}

/// The Java gateway, killed on drop. Its stderr goes to a file for the assertions and
/// for diagnosis.
struct Gateway {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start(args: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("gateway.log");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let upstream = format!("127.0.0.1:{}", fake_upstream());
        let child = Command::new(RUN_SH)
            .args(["--listen", &port.to_string(), "--upstream", &upstream])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the SASL gateway");
        let mut g = Gateway {
            child,
            port,
            log,
            _dir: dir,
        };
        // bounded readiness wait: the JVM takes a second or two, the port opens last
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return g;
            }
            if let Ok(Some(status)) = g.child.try_wait() {
                panic!("gateway exited with {status}:\n{}", g.log());
            }
            assert!(
                Instant::now() < deadline,
                "gateway not listening after 60 s:\n{}",
                g.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn tcp(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port)).await.unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- gateway log ---\n{}", self.log());
        }
    }
}

fn user_pass(mechanism: SaslMechanism, user: &str, password: &str) -> SaslConfig {
    SaslConfig {
        mechanism,
        username: Some(Secret::Inline(user.into())),
        password: Some(Secret::Inline(password.into())),
        token: None,
    }
}

/// An unsecured JWS (`alg: none`) as Kafka's unsecured validator accepts it.
fn unsecured_token(sub: &str, lifetime_s: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
    let payload = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"sub":"{sub}","iat":{now},"exp":{}}}"#,
        now + lifetime_s
    ));
    format!("{header}.{payload}.")
}

fn oauth(token: String) -> SaslConfig {
    SaslConfig {
        mechanism: SaslMechanism::OAuthBearer,
        username: None,
        password: None,
        token: Some(Secret::Inline(token)),
    }
}

async fn auth<S: AsyncRead + AsyncWrite + Unpin + Send>(
    ex: &mut Connection<&mut S>,
    sasl: &SaslConfig,
) -> Result<Authenticated, SaslError> {
    timeout(STEP, authenticate(ex, sasl))
        .await
        .expect("authentication timed out")
}

/// ApiVersions through the gateway to the fake upstream: proves the connection is
/// authenticated and relaying.
async fn api_versions<S: AsyncRead + AsyncWrite + Unpin + Send>(
    ex: &mut Connection<&mut S>,
) -> anyhow::Result<()> {
    let mut body = BytesMut::new();
    ApiVersionsRequest::default()
        .with_client_software_name("kafka-sidecar-test".into())
        .with_client_software_version("0".into())
        .encode(&mut body, 3)?;
    let mut resp = timeout(STEP, ex.exchange(ApiKey::ApiVersions, 3, body.freeze())).await??;
    let resp = ApiVersionsResponse::decode(&mut resp, 3)?;
    anyhow::ensure!(
        resp.error_code == 0,
        "ApiVersions error {}",
        resp.error_code
    );
    anyhow::ensure!(
        resp.api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Metadata as i16),
        "no Metadata in {resp:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_authenticates_every_mechanism() {
    if !gateway_available() {
        return;
    }
    let g = Gateway::start(&[
        "--mechanisms",
        "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
        "--user",
        "alice:alice-secret",
    ])
    .await;

    let good = [
        user_pass(SaslMechanism::Plain, "alice", "alice-secret"),
        user_pass(SaslMechanism::ScramSha256, "alice", "alice-secret"),
        user_pass(SaslMechanism::ScramSha512, "alice", "alice-secret"),
        oauth(unsecured_token("alice", 3600)),
    ];
    for sasl in &good {
        let mut tcp = g.tcp().await;
        let mut ex = Connection::new(&mut tcp, "kafka-sidecar-test", MAX_FRAME);
        let a = auth(&mut ex, sasl)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", sasl.mechanism.name()));
        assert_eq!(a.mechanism, sasl.mechanism.name());
        if sasl.mechanism == SaslMechanism::OAuthBearer {
            // even without connections.max.reauth.ms the session ends when the token does
            assert!(
                (3_590_000..=3_600_000).contains(&a.session_lifetime_ms),
                "{a:?}"
            );
        } else {
            // no connections.max.reauth.ms: no session limit
            assert_eq!(a.session_lifetime_ms, 0, "{a:?}");
        }
        api_versions(&mut ex).await.unwrap();
    }

    // wrong passwords: the broker's own error text comes back typed
    for (mechanism, want) in [
        (
            SaslMechanism::Plain,
            "Authentication failed: Invalid username or password",
        ),
        (SaslMechanism::ScramSha256, "invalid credentials"),
        (SaslMechanism::ScramSha512, "invalid credentials"),
    ] {
        let mut tcp = g.tcp().await;
        let mut ex = Connection::new(&mut tcp, "kafka-sidecar-test", MAX_FRAME);
        let err = auth(&mut ex, &user_pass(mechanism.clone(), "alice", "wrong"))
            .await
            .unwrap_err();
        match &err {
            SaslError::AuthenticationFailed { message } => {
                assert!(message.contains(want), "{}: {message}", mechanism.name())
            }
            other => panic!("{}: {other:?}", mechanism.name()),
        }
        assert!(err.is_authentication_failure());
    }

    // unknown SCRAM user
    let mut tcp = g.tcp().await;
    let mut ex = Connection::new(&mut tcp, "kafka-sidecar-test", MAX_FRAME);
    let err = auth(
        &mut ex,
        &user_pass(SaslMechanism::ScramSha256, "mallory", "alice-secret"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SaslError::AuthenticationFailed { .. }),
        "{err}"
    );

    // an expired OAUTHBEARER token: error challenge, `\x01`, then the failure
    let mut tcp = g.tcp().await;
    let mut ex = Connection::new(&mut tcp, "kafka-sidecar-test", MAX_FRAME);
    let err = auth(&mut ex, &oauth(unsecured_token("alice", -60)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SaslError::AuthenticationFailed { message } if message.contains("invalid_token")),
        "{err}"
    );

    let log = g.log();
    assert_eq!(log.matches("auth-ok").count(), 4, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_reauthentication() {
    if !gateway_available() {
        return;
    }
    const LIFETIME_MS: i64 = 3000;
    let g = Gateway::start(&[
        "--mechanisms",
        "PLAIN,SCRAM-SHA-512",
        "--user",
        "alice:alice-secret",
        "--reauth-ms",
        &LIFETIME_MS.to_string(),
    ])
    .await;
    let scram = user_pass(SaslMechanism::ScramSha512, "alice", "alice-secret");
    let plain = user_pass(SaslMechanism::Plain, "alice", "alice-secret");

    // a mechanism the broker does not enable
    let mut tcp = g.tcp().await;
    let mut ex = Connection::new(&mut tcp, "t", MAX_FRAME);
    let err = auth(&mut ex, &oauth(unsecured_token("alice", 3600)))
        .await
        .unwrap_err();
    match &err {
        SaslError::UnsupportedMechanism { requested, enabled } => {
            assert_eq!(*requested, "OAUTHBEARER");
            assert_eq!(enabled, &["PLAIN", "SCRAM-SHA-512"]);
        }
        other => panic!("{other:?}"),
    }

    // A session that never re-authenticates is closed at its first request after expiry;
    // one that re-authenticates late (before any other request) survives. Run both while
    // the main connection below does its own checks.
    let expired = {
        let mut tcp = g.tcp().await;
        let plain = plain.clone();
        tokio::spawn(async move {
            let mut ex = Connection::new(&mut tcp, "t", MAX_FRAME);
            authenticate(&mut ex, &plain).await.unwrap();
            tokio::time::sleep(Duration::from_millis(LIFETIME_MS as u64 + 500)).await;
            api_versions(&mut ex).await
        })
    };
    let late = {
        let mut tcp = g.tcp().await;
        let plain = plain.clone();
        tokio::spawn(async move {
            let mut ex = Connection::new(&mut tcp, "t", MAX_FRAME);
            authenticate(&mut ex, &plain).await.unwrap();
            tokio::time::sleep(Duration::from_millis(LIFETIME_MS as u64 + 500)).await;
            let a = authenticate(&mut ex, &plain).await?;
            api_versions(&mut ex).await?;
            anyhow::Ok(a)
        })
    };

    let mut tcp = g.tcp().await;
    let mut ex = Connection::new(&mut tcp, "t", MAX_FRAME);
    let a = auth(&mut ex, &scram).await.unwrap();
    assert!(
        a.session_lifetime_ms > LIFETIME_MS - 1000 && a.session_lifetime_ms <= LIFETIME_MS,
        "{a:?}"
    );
    api_versions(&mut ex).await.unwrap();
    // The 1 s minimum is between re-authentication *starts*: the first one may follow the
    // initial authentication immediately, a second one right after it is refused.
    auth(&mut ex, &scram).await.unwrap();
    let err = auth(&mut ex, &scram).await.unwrap_err();
    assert!(
        matches!(
            err,
            SaslError::Broker {
                api: "SaslHandshake",
                error: ResponseError::IllegalSaslState,
                ..
            }
        ),
        "{err:?}"
    );
    // the refused attempt leaves the session intact
    api_versions(&mut ex).await.unwrap();
    // on schedule
    tokio::time::sleep(reauth_delay(a.session_lifetime_ms).unwrap()).await;
    let again = auth(&mut ex, &scram).await.unwrap();
    assert!(again.session_lifetime_ms > 0, "{again:?}");
    api_versions(&mut ex).await.unwrap();
    // Changing the mechanism on re-authentication: Kafka accepts the SaslHandshake, then
    // drops the connection instead of answering the SaslAuthenticate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = auth(&mut ex, &plain).await.unwrap_err();
    assert!(matches!(err, SaslError::Transport(_)), "{err:?}");
    assert!(api_versions(&mut ex).await.is_err());

    let expired = timeout(STEP, expired).await.unwrap().unwrap();
    assert!(expired.is_err(), "an expired session kept working");
    let late = timeout(STEP, late).await.unwrap().unwrap();
    let late = late.expect("a late re-authentication is accepted");
    assert!(late.session_lifetime_ms > 0);

    let log = g.log();
    if std::env::var_os("SHOW_GATEWAY_LOG").is_some() {
        eprintln!("{log}");
    }
    assert!(log.contains("reauth-ok"), "{log}");
    assert!(log.contains("session-expired-close"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_tls_and_sasl() {
    if !gateway_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("gateway test CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    let cert = write(
        dir.path(),
        "server.pem",
        &format!("{}{}", leaf.cert_pem, ca.pem()),
    );
    let key = write(dir.path(), "server.key", &leaf.key_pem);
    let g = Gateway::start(&[
        "--mechanisms",
        "SCRAM-SHA-256,SCRAM-SHA-512",
        "--user",
        "alice:alice-secret",
        "--tls",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;
    let tls = TlsConfig {
        ca_file: Some(write(dir.path(), "ca.pem", &ca.pem())),
        client_cert_file: None,
        client_key_file: None,
        server_name: None,
        dangerous_disable_verification: false,
    };
    let config = crate::tls::client_config(&tls).unwrap();

    let stream = crate::tls::connect(g.tcp().await, config.clone(), "localhost");
    let mut stream = timeout(STEP, stream).await.unwrap().unwrap();
    let mut ex = Connection::new(&mut stream, "kafka-sidecar-test", MAX_FRAME);
    let a = auth(
        &mut ex,
        &user_pass(SaslMechanism::ScramSha512, "alice", "alice-secret"),
    )
    .await
    .unwrap();
    assert_eq!(a.mechanism, "SCRAM-SHA-512");
    api_versions(&mut ex).await.unwrap();

    let stream = crate::tls::connect(g.tcp().await, config.clone(), "127.0.0.1");
    let mut stream = timeout(STEP, stream).await.unwrap().unwrap();
    let mut ex = Connection::new(&mut stream, "kafka-sidecar-test", MAX_FRAME);
    let err = auth(
        &mut ex,
        &user_pass(SaslMechanism::ScramSha256, "alice", "nope"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SaslError::AuthenticationFailed { .. }),
        "{err}"
    );

    // the certificate check applies: a wrong name is refused before any SASL
    let err = timeout(
        STEP,
        crate::tls::connect(g.tcp().await, config, "kafka.example"),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(format!("{err:#}").contains("name mismatch"), "{err:#}");
}
