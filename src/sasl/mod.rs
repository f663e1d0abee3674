//! Client-side SASL for upstream Kafka connections: SaslHandshake v1, then
//! SaslAuthenticate carrying PLAIN, SCRAM-SHA-256/512 or OAUTHBEARER messages.
//!
//! The exchange runs over a [`KafkaExchange`], so the same code serves
//! - the first authentication right after connect ([`crate::connection::Connection`] on the raw stream),
//! - re-authentication (KIP-368) on a live relayed connection, where the session's relay
//!   owns the socket. The relay must stop forwarding client requests to the broker while
//!   the exchange runs (and have received every earlier response): the broker reads every
//!   frame after a re-authentication SaslHandshake as part of the SASL exchange. The broker
//!   accepts a re-authentication even after the session has expired, as long as no other
//!   request came first: an expired session is closed at its next non-SASL request.
//!
//! Broker behaviour seen with Apache Kafka's own authenticator (kafka-clients 3.9.1):
//! - `session_lifetime_ms` is `connections.max.reauth.ms`, and for OAUTHBEARER at most the
//!   token's remaining lifetime, even when `connections.max.reauth.ms` is unset.
//! - The first re-authentication may follow the initial authentication at once; a second
//!   one starting less than 1 s after the previous *re-authentication start* gets
//!   ILLEGAL_SASL_STATE on its SaslHandshake ([`SaslError::Broker`]) and the session carries
//!   on. So does a SaslHandshake when the broker has re-authentication disabled.
//! - A re-authentication that changes the mechanism gets a successful SaslHandshake and
//!   then the connection is dropped ([`SaslError::Transport`]); Kafka also refuses a change
//!   of principal. A config change to either needs new connections.
//!
//! Credentials are resolved from their [`Secret`](crate::config::Secret)s on every call, so
//! rotated files are picked up. They are never logged.

mod scram;

#[cfg(test)]
mod gateway_tests;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::config::{SaslConfig, SaslMechanism, Secret};

pub use scram::{sasl_name, ScramClient, ScramHash};

/// SaslHandshake v1: v0 would put raw SASL tokens on the wire without Kafka framing.
pub const SASL_HANDSHAKE_VERSION: i16 = 1;
/// Highest SaslAuthenticate version we speak (v1+ carries `session_lifetime_ms`).
pub const MAX_SASL_AUTHENTICATE_VERSION: i16 = 2;

/// Why an authentication did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SaslError {
    /// The broker does not enable the configured mechanism.
    #[error("the broker does not enable SASL mechanism {requested} (enabled: {})", enabled_list(.enabled))]
    UnsupportedMechanism {
        requested: &'static str,
        enabled: Vec<String>,
    },
    /// The broker (or, for SCRAM, our check of the broker) rejected the credentials.
    /// `message` is the broker's `error_message` when it sent one.
    #[error("SASL authentication failed: {message}")]
    AuthenticationFailed { message: String },
    /// Any other error code in a SaslHandshake / SaslAuthenticate response, e.g.
    /// ILLEGAL_SASL_STATE for a re-authentication less than 1 s after the previous one.
    #[error("{api} failed with {error}{}", .message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        api: &'static str,
        error: ResponseError,
        message: Option<String>,
    },
    /// A credential is missing from the config or cannot be read (file, env).
    #[error("SASL credentials unavailable: {0}")]
    Credentials(String),
    /// The broker's SASL messages make no sense.
    #[error("SASL protocol error: {0}")]
    Protocol(String),
    /// Sending, receiving, encoding or decoding a Kafka frame failed.
    #[error("SASL exchange failed: {0:#}")]
    Transport(anyhow::Error),
}

impl SaslError {
    /// True for outcomes that mean "these credentials / this mechanism do not work here"
    /// (to be counted as a `sasl` failure), as opposed to I/O or protocol trouble.
    pub fn is_authentication_failure(&self) -> bool {
        matches!(
            self,
            SaslError::AuthenticationFailed { .. }
                | SaslError::UnsupportedMechanism { .. }
                | SaslError::Credentials(_)
        )
    }
}

fn enabled_list(enabled: &[String]) -> String {
    if enabled.is_empty() {
        "none".to_owned()
    } else {
        enabled.join(", ")
    }
}

pub use crate::connection::KafkaExchange;

/// A successful authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// From SaslAuthenticate v1+: the session must be re-authenticated within this many
    /// milliseconds (0: no limit). See [`reauth_delay`].
    pub session_lifetime_ms: i64,
    pub mechanism: &'static str,
}

/// Authenticates with SaslHandshake v1 and SaslAuthenticate v2.
pub async fn authenticate<E: KafkaExchange>(
    ex: &mut E,
    sasl: &SaslConfig,
) -> Result<Authenticated, SaslError> {
    authenticate_with_version(ex, sasl, MAX_SASL_AUTHENTICATE_VERSION).await
}

/// As [`authenticate`], with the SaslAuthenticate version capped at `max_version` (for a
/// broker whose ApiVersions says it stops lower; v0 gives no session lifetime).
pub async fn authenticate_with_version<E: KafkaExchange>(
    ex: &mut E,
    sasl: &SaslConfig,
    max_version: i16,
) -> Result<Authenticated, SaslError> {
    let version = max_version.clamp(0, MAX_SASL_AUTHENTICATE_VERSION);
    let mechanism = sasl.mechanism.name();
    // Credentials first: an unreadable secret file is not worth a round trip.
    let mut client = MechanismClient::new(sasl)?;
    handshake(ex, mechanism).await?;
    let mut message = client.initial();
    // PLAIN and OAUTHBEARER take one or two rounds, SCRAM two; more means a confused server.
    for _ in 0..4 {
        let response = sasl_authenticate(ex, version, message).await?;
        match client.step(&response.auth_bytes)? {
            Some(next) => message = next,
            None => {
                let session_lifetime_ms = if version >= 1 {
                    response.session_lifetime_ms
                } else {
                    0
                };
                tracing::debug!(
                    mechanism,
                    session_lifetime_ms,
                    "SASL authentication succeeded"
                );
                return Ok(Authenticated {
                    session_lifetime_ms,
                    mechanism,
                });
            }
        }
    }
    Err(SaslError::Protocol(format!(
        "{mechanism} exchange did not finish after 4 rounds"
    )))
}

async fn handshake<E: KafkaExchange>(ex: &mut E, mechanism: &'static str) -> Result<(), SaslError> {
    let request =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
    let mut body = BytesMut::new();
    request
        .encode(&mut body, SASL_HANDSHAKE_VERSION)
        .map_err(|e| SaslError::Transport(e.context("cannot encode SaslHandshake")))?;
    let resp = ex
        .exchange(ApiKey::SaslHandshake, SASL_HANDSHAKE_VERSION, body.freeze())
        .await
        .map_err(SaslError::Transport)?;
    let resp: SaslHandshakeResponse = crate::codec::decode_body(SASL_HANDSHAKE_VERSION, resp)
        .map_err(|e| {
            SaslError::Transport(
                anyhow::Error::new(e).context("cannot decode SaslHandshake response"),
            )
        })?;
    match ResponseError::try_from_code(resp.error_code) {
        None => Ok(()),
        Some(ResponseError::UnsupportedSaslMechanism) => Err(SaslError::UnsupportedMechanism {
            requested: mechanism,
            enabled: resp.mechanisms.iter().map(|m| m.to_string()).collect(),
        }),
        Some(error) => Err(SaslError::Broker {
            api: "SaslHandshake",
            error,
            message: None,
        }),
    }
}

async fn sasl_authenticate<E: KafkaExchange>(
    ex: &mut E,
    version: i16,
    auth_bytes: Vec<u8>,
) -> Result<SaslAuthenticateResponse, SaslError> {
    let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(auth_bytes));
    let mut body = BytesMut::new();
    request
        .encode(&mut body, version)
        .map_err(|e| SaslError::Transport(e.context("cannot encode SaslAuthenticate")))?;
    let resp = ex
        .exchange(ApiKey::SaslAuthenticate, version, body.freeze())
        .await
        .map_err(SaslError::Transport)?;
    let resp: SaslAuthenticateResponse = crate::codec::decode_body(version, resp).map_err(|e| {
        SaslError::Transport(
            anyhow::Error::new(e).context("cannot decode SaslAuthenticate response"),
        )
    })?;
    let message = resp.error_message.as_ref().map(|m| m.to_string());
    match ResponseError::try_from_code(resp.error_code) {
        None => Ok(resp),
        Some(ResponseError::SaslAuthenticationFailed) => Err(SaslError::AuthenticationFailed {
            message: message.unwrap_or_else(|| "no message from the broker".to_owned()),
        }),
        Some(error) => Err(SaslError::Broker {
            api: "SaslAuthenticate",
            error,
            message,
        }),
    }
}

/// The client side of one mechanism's exchange.
enum MechanismClient {
    /// One message, the server answers with nothing.
    Plain(Option<Vec<u8>>),
    /// Server answers nothing on success, or a JSON error challenge which RFC 7628
    /// makes us acknowledge with `\x01` before the broker fails the exchange.
    OAuthBearer {
        initial: Option<Vec<u8>>,
        error: Option<String>,
    },
    Scram {
        client: ScramClient,
        sent_final: bool,
    },
}

impl MechanismClient {
    fn new(sasl: &SaslConfig) -> Result<MechanismClient, SaslError> {
        Ok(match sasl.mechanism {
            SaslMechanism::Plain => {
                let (user, password) = user_password(sasl)?;
                MechanismClient::Plain(Some(plain_message(&user, &password)?))
            }
            SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                let hash = if sasl.mechanism == SaslMechanism::ScramSha256 {
                    ScramHash::Sha256
                } else {
                    ScramHash::Sha512
                };
                let (user, password) = user_password(sasl)?;
                MechanismClient::Scram {
                    client: ScramClient::new(hash, &user, &password),
                    sent_final: false,
                }
            }
            SaslMechanism::OAuthBearer => {
                let token = resolve(&sasl.token, "token")?;
                MechanismClient::OAuthBearer {
                    initial: Some(oauthbearer_message(&token)?),
                    error: None,
                }
            }
        })
    }

    fn initial(&mut self) -> Vec<u8> {
        match self {
            MechanismClient::Plain(m) => m.take().unwrap_or_default(),
            MechanismClient::OAuthBearer { initial, .. } => initial.take().unwrap_or_default(),
            MechanismClient::Scram { client, .. } => client.client_first(),
        }
    }

    /// Handles the server's bytes; `Some` is the next message, `None` means done.
    fn step(&mut self, server: &[u8]) -> Result<Option<Vec<u8>>, SaslError> {
        match self {
            MechanismClient::Plain(_) => Ok(None),
            MechanismClient::OAuthBearer { error, .. } => {
                if let Some(e) = error.take() {
                    // the broker should have failed the `\x01` acknowledgement
                    return Err(SaslError::AuthenticationFailed { message: e });
                }
                if server.is_empty() {
                    return Ok(None);
                }
                *error = Some(String::from_utf8_lossy(server).into_owned());
                Ok(Some(vec![0x01]))
            }
            MechanismClient::Scram { client, sent_final } => {
                if !*sent_final {
                    *sent_final = true;
                    client.handle_server_first(server).map(Some)
                } else {
                    client.handle_server_final(server).map(|()| None)
                }
            }
        }
    }
}

fn resolve(secret: &Option<Secret>, field: &str) -> Result<String, SaslError> {
    secret
        .as_ref()
        .ok_or_else(|| SaslError::Credentials(format!("sasl.{field} is not set")))?
        .resolve()
        .map_err(|e| SaslError::Credentials(format!("sasl.{field}: {e:#}")))
}

fn user_password(sasl: &SaslConfig) -> Result<(String, String), SaslError> {
    Ok((
        resolve(&sasl.username, "username")?,
        resolve(&sasl.password, "password")?,
    ))
}

/// PLAIN (RFC 4616) with an empty authorization id: `\0user\0password`.
pub fn plain_message(username: &str, password: &str) -> Result<Vec<u8>, SaslError> {
    if username.contains('\0') || password.contains('\0') {
        return Err(SaslError::Credentials(
            "PLAIN username and password must not contain NUL".to_owned(),
        ));
    }
    let mut m = Vec::with_capacity(2 + username.len() + password.len());
    m.push(0);
    m.extend_from_slice(username.as_bytes());
    m.push(0);
    m.extend_from_slice(password.as_bytes());
    Ok(m)
}

/// OAUTHBEARER (RFC 7628) client initial response: `n,,\x01auth=Bearer <token>\x01\x01`.
pub fn oauthbearer_message(token: &str) -> Result<Vec<u8>, SaslError> {
    // RFC 6750 b64token characters; anything else would break the framing
    let ok = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    if token.is_empty() || !token.chars().all(ok) {
        return Err(SaslError::Credentials(
            "OAUTHBEARER token is empty or has characters outside the bearer token syntax"
                .to_owned(),
        ));
    }
    Ok(format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes())
}

/// When to start re-authenticating a session that lives `session_lifetime_ms` (from the
/// end of the previous authentication): None for 0 (no limit), else 85-90 % of the
/// lifetime with jitter, as the Java client does (it uses 85-95 %; we keep a larger
/// margin for a relay that first has to drain in-flight requests). At least 100 ms. For
/// lifetimes of 2 s and more the delay is over 1 s, so the broker never refuses the
/// re-authentication as too early (ILLEGAL_SASL_STATE within 1 s of the last one).
pub fn reauth_delay(session_lifetime_ms: i64) -> Option<Duration> {
    if session_lifetime_ms <= 0 {
        return None;
    }
    let fraction = 0.85 + 0.05 * rand::random::<f64>();
    let ms = (session_lifetime_ms as f64 * fraction) as u64;
    Some(Duration::from_millis(ms.max(100)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Decodable;
    use std::collections::VecDeque;

    #[test]
    fn plain_and_oauthbearer_messages() {
        assert_eq!(plain_message("alice", "pw").unwrap(), b"\0alice\0pw");
        assert!(plain_message("al\0ice", "pw").is_err());
        assert_eq!(
            oauthbearer_message("aGVhZA.cGF5bG9hZA.").unwrap(),
            b"n,,\x01auth=Bearer aGVhZA.cGF5bG9hZA.\x01\x01"
        );
        assert!(oauthbearer_message("a b").is_err());
        assert!(oauthbearer_message("").is_err());
    }

    #[test]
    fn reauth_delay_bounds() {
        assert_eq!(reauth_delay(0), None);
        assert_eq!(reauth_delay(-5), None);
        assert_eq!(reauth_delay(10), Some(Duration::from_millis(100)));
        for _ in 0..1000 {
            let d = reauth_delay(2000).unwrap();
            assert!(d > Duration::from_secs(1), "{d:?}");
            let d = reauth_delay(3_600_000).unwrap();
            assert!(
                d >= Duration::from_millis(3_060_000) && d <= Duration::from_millis(3_240_000),
                "{d:?}"
            );
        }
        assert!(reauth_delay(i64::MAX).is_some());
    }

    /// A scripted broker: checks each request and answers with a prepared body.
    type Check = Box<dyn Fn(&[u8]) + Send>;

    /// Expected api key and version, a check of the request body, the response body.
    type Step = (ApiKey, i16, Check, Bytes);

    struct Scripted {
        steps: VecDeque<Step>,
    }

    impl KafkaExchange for Scripted {
        fn exchange(
            &mut self,
            api_key: ApiKey,
            api_version: i16,
            body: Bytes,
        ) -> impl std::future::Future<Output = anyhow::Result<Bytes>> + Send {
            let step = self.steps.pop_front();
            async move {
                let (key, version, check, response) =
                    step.ok_or_else(|| anyhow::anyhow!("unexpected request {api_key:?}"))?;
                assert_eq!((api_key, api_version), (key, version));
                check(&body);
                Ok(response)
            }
        }
    }

    fn encode<M: Encodable>(m: &M, version: i16) -> Bytes {
        let mut b = BytesMut::new();
        m.encode(&mut b, version).unwrap();
        b.freeze()
    }

    fn handshake_ok() -> Bytes {
        encode(
            &SaslHandshakeResponse::default()
                .with_mechanisms(vec!["PLAIN".into(), "SCRAM-SHA-256".into()]),
            1,
        )
    }

    fn auth_request_bytes(body: &[u8], version: i16) -> Bytes {
        SaslAuthenticateRequest::decode(&mut Bytes::copy_from_slice(body), version)
            .unwrap()
            .auth_bytes
    }

    fn plain_config(password: &str) -> SaslConfig {
        SaslConfig {
            mechanism: SaslMechanism::Plain,
            username: Some(Secret::Inline("alice".into())),
            password: Some(Secret::Inline(password.into())),
            token: None,
        }
    }

    #[tokio::test]
    async fn plain_exchange_returns_the_session_lifetime() {
        let mut ex = Scripted {
            steps: VecDeque::from([
                (
                    ApiKey::SaslHandshake,
                    1,
                    Box::new(|b: &[u8]| {
                        let r = SaslHandshakeRequest::decode(&mut Bytes::copy_from_slice(b), 1)
                            .unwrap();
                        assert_eq!(r.mechanism.as_str(), "PLAIN");
                    }) as Check,
                    handshake_ok(),
                ),
                (
                    ApiKey::SaslAuthenticate,
                    2,
                    Box::new(|b: &[u8]| assert_eq!(auth_request_bytes(b, 2), &b"\0alice\0pw"[..])),
                    encode(
                        &SaslAuthenticateResponse::default().with_session_lifetime_ms(5000),
                        2,
                    ),
                ),
            ]),
        };
        let a = authenticate(&mut ex, &plain_config("pw")).await.unwrap();
        assert_eq!(
            a,
            Authenticated {
                session_lifetime_ms: 5000,
                mechanism: "PLAIN"
            }
        );
    }

    #[tokio::test]
    async fn broker_errors_are_typed() {
        // unsupported mechanism lists what the broker enables
        let mut ex = Scripted {
            steps: VecDeque::from([(
                ApiKey::SaslHandshake,
                1,
                Box::new(|_: &[u8]| {}) as Check,
                encode(
                    &SaslHandshakeResponse::default()
                        .with_error_code(ResponseError::UnsupportedSaslMechanism.code())
                        .with_mechanisms(vec!["SCRAM-SHA-512".into(), "GSSAPI".into()]),
                    1,
                ),
            )]),
        };
        let err = authenticate(&mut ex, &plain_config("pw"))
            .await
            .unwrap_err();
        assert!(err.is_authentication_failure());
        assert_eq!(
            err.to_string(),
            "the broker does not enable SASL mechanism PLAIN (enabled: SCRAM-SHA-512, GSSAPI)"
        );

        // authentication failure carries the broker's message
        let mut ex = Scripted {
            steps: VecDeque::from([
                (
                    ApiKey::SaslHandshake,
                    1,
                    Box::new(|_: &[u8]| {}) as Check,
                    handshake_ok(),
                ),
                (
                    ApiKey::SaslAuthenticate,
                    1,
                    Box::new(|_: &[u8]| {}),
                    encode(
                        &SaslAuthenticateResponse::default()
                            .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                            .with_error_message(Some(
                                "Authentication failed: Invalid username or password".into(),
                            )),
                        1,
                    ),
                ),
            ]),
        };
        let err = authenticate_with_version(&mut ex, &plain_config("bad"), 1)
            .await
            .unwrap_err();
        match &err {
            SaslError::AuthenticationFailed { message } => {
                assert_eq!(
                    message,
                    "Authentication failed: Invalid username or password"
                )
            }
            other => panic!("{other:?}"),
        }

        // ILLEGAL_SASL_STATE on a too-early re-authentication
        let mut ex = Scripted {
            steps: VecDeque::from([(
                ApiKey::SaslHandshake,
                1,
                Box::new(|_: &[u8]| {}) as Check,
                encode(
                    &SaslHandshakeResponse::default()
                        .with_error_code(ResponseError::IllegalSaslState.code()),
                    1,
                ),
            )]),
        };
        let err = authenticate(&mut ex, &plain_config("pw"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SaslError::Broker {
                    error: ResponseError::IllegalSaslState,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.is_authentication_failure());
    }

    #[tokio::test]
    async fn oauthbearer_error_challenge_is_acknowledged() {
        let cfg = SaslConfig {
            mechanism: SaslMechanism::OAuthBearer,
            username: None,
            password: None,
            token: Some(Secret::Inline("e30.e30.".into())),
        };
        let mut ex = Scripted {
            steps: VecDeque::from([
                (
                    ApiKey::SaslHandshake,
                    1,
                    Box::new(|_: &[u8]| {}) as Check,
                    handshake_ok(),
                ),
                (
                    ApiKey::SaslAuthenticate,
                    2,
                    Box::new(|b: &[u8]| {
                        assert_eq!(
                            auth_request_bytes(b, 2),
                            &b"n,,\x01auth=Bearer e30.e30.\x01\x01"[..]
                        )
                    }),
                    encode(
                        &SaslAuthenticateResponse::default()
                            .with_auth_bytes(Bytes::from_static(b"{\"status\":\"invalid_token\"}")),
                        2,
                    ),
                ),
                (
                    ApiKey::SaslAuthenticate,
                    2,
                    Box::new(|b: &[u8]| assert_eq!(auth_request_bytes(b, 2), &b"\x01"[..])),
                    encode(
                        &SaslAuthenticateResponse::default()
                            .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                            .with_error_message(Some("{\"status\":\"invalid_token\"}".into())),
                        2,
                    ),
                ),
            ]),
        };
        let err = authenticate(&mut ex, &cfg).await.unwrap_err();
        assert!(
            matches!(&err, SaslError::AuthenticationFailed { message } if message.contains("invalid_token")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn missing_credentials_fail_before_the_wire() {
        let cfg = SaslConfig {
            mechanism: SaslMechanism::ScramSha256,
            username: Some(Secret::Inline("alice".into())),
            password: Some(Secret::File {
                file: "/nonexistent/password".into(),
            }),
            token: None,
        };
        let mut ex = Scripted {
            steps: VecDeque::new(),
        };
        let err = authenticate(&mut ex, &cfg).await.unwrap_err();
        assert!(matches!(err, SaslError::Credentials(_)), "{err}");
        assert!(err.to_string().contains("sasl.password"), "{err}");
    }
}
