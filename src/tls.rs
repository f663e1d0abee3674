//! Upstream TLS: rustls client configs built from [`TlsConfig`] and the client handshake.
//!
//! The `ring` provider is passed explicitly everywhere because the process installs no
//! default rustls `CryptoProvider`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::pem::{self, PemObject};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::TlsConfig;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client config for one cluster: trust roots (the PEM `ca_file`, else the
/// system trust store), an optional client certificate for mutual TLS, or, with
/// `dangerous_disable_verification`, a verifier that accepts any server certificate.
pub fn client_config(tls: &TlsConfig) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("the ring crypto provider offers no safe TLS protocol version")?;
    let builder = if tls.dangerous_disable_verification {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
    } else {
        builder.with_root_certificates(root_store(tls)?)
    };
    let config = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert_file), Some(key_file)) => {
            let certs = load_certs(cert_file).context("tls.client_cert_file")?;
            let key = load_key(key_file).context("tls.client_key_file")?;
            builder.with_client_auth_cert(certs, key).with_context(|| {
                format!(
                    "tls: client certificate {} and key {} cannot be used together",
                    cert_file.display(),
                    key_file.display()
                )
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("tls: client_cert_file and client_key_file go together"),
    };
    Ok(Arc::new(config))
}

/// Logs a loud warning when a cluster's TLS config disables certificate verification.
pub fn warn_if_insecure(cluster: &str, tls: &TlsConfig) {
    if tls.dangerous_disable_verification {
        tracing::warn!(
            cluster,
            "TLS CERTIFICATE VERIFICATION IS DISABLED for cluster '{cluster}' \
             (tls.dangerous_disable_verification: true): any server, including an attacker \
             in the path, is accepted and can read the traffic and the SASL credentials. \
             Use this only in tests."
        );
    }
}

/// The name to send as SNI and to verify: `tls.server_name`, else the broker's host.
pub fn server_name<'a>(tls: &'a TlsConfig, broker_host: &'a str) -> &'a str {
    tls.server_name.as_deref().unwrap_or(broker_host)
}

/// Runs the TLS client handshake on a connected socket. Errors say why the handshake
/// failed (unknown issuer, name mismatch, alert from the server, not a TLS port, ...);
/// the caller adds the cluster and address.
pub async fn connect(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    server_name: &str,
) -> anyhow::Result<TlsStream<TcpStream>> {
    // `[::1]` style hosts arrive here when taken verbatim from a bootstrap address
    let bare = server_name
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(server_name);
    let name = ServerName::try_from(bare.to_owned())
        .map_err(|e| anyhow!("invalid TLS server name '{server_name}': {e}"))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| anyhow!("{}", describe_handshake_error(&e, bare)))
}

/// Turns a handshake failure into a sentence with a hint at the usual cause.
fn describe_handshake_error(e: &std::io::Error, server_name: &str) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => format!(
                "TLS handshake failed: the connection was closed during the handshake ({e}); \
                 is this port a TLS listener?"
            ),
            _ => format!("TLS handshake failed: {e}"),
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "TLS handshake failed: certificate unknown issuer: the server certificate is not \
             signed by a CA in tls.ca_file or the system trust store (set tls.ca_file to the CA \
             that signed it)"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(
            c @ (CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. }),
        ) => format!(
            "TLS handshake failed: server certificate name mismatch: {c} \
             (expected '{server_name}'; set tls.server_name to a name the certificate holds)"
        ),
        rustls::Error::InvalidCertificate(c) => {
            format!("TLS handshake failed: the server certificate was rejected: {c}")
        }
        rustls::Error::AlertReceived(alert) => {
            let hint = match alert {
                AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::AccessDenied => {
                    " (does the server require a client certificate, or not trust ours?)"
                }
                AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure => {
                    " (no TLS version or cipher suite in common?)"
                }
                _ => "",
            };
            format!("TLS handshake failed: the server sent alert {alert:?}{hint}")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "TLS handshake failed: {tls} (the server did not answer with TLS; is this a \
             plaintext port?)"
        ),
        other => format!("TLS handshake failed: {other}"),
    }
}

fn root_store(tls: &TlsConfig) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    if let Some(ca_file) = &tls.ca_file {
        let certs = load_certs(ca_file).context("tls.ca_file")?;
        for (i, cert) in certs.into_iter().enumerate() {
            roots.add(cert).with_context(|| {
                format!(
                    "tls.ca_file: certificate #{} in {} is not a valid CA certificate",
                    i + 1,
                    ca_file.display()
                )
            })?;
        }
        return Ok(roots);
    }
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "problem reading the system trust store");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::debug!(added, ignored, "skipped unparsable system CA certificates");
    }
    if roots.is_empty() {
        let errors: Vec<String> = native.errors.iter().map(|e| e.to_string()).collect();
        bail!(
            "tls: no trusted CA certificates found in the system trust store{}; set tls.ca_file",
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join("; "))
            }
        );
    }
    Ok(roots)
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        bail!("no CERTIFICATE PEM block in {}", path.display());
    }
    Ok(certs)
}

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "no unencrypted private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY PEM \
             block) in {}",
            path.display()
        ),
        e => pem_error(path, e),
    })
}

/// A PEM error that names the file and never quotes its contents: `pem::Error`'s Display
/// prints the offending line (`IllegalSectionStart`) or decoder details, which in a key file
/// could be key material.
fn pem_error(path: &Path, e: pem::Error) -> anyhow::Error {
    let what = match e {
        pem::Error::Io(e) => {
            return anyhow::Error::new(e).context(format!("cannot read {}", path.display()))
        }
        pem::Error::MissingSectionEnd { .. } => "a PEM block without its END line",
        pem::Error::IllegalSectionStart { .. } => "a malformed PEM BEGIN line",
        pem::Error::Base64Decode(_) => "a PEM block whose body is not valid base64",
        pem::Error::SectionTooLarge => "a PEM block too large for a certificate or key",
        pem::Error::NoItemsFound => "no PEM block of the expected kind",
        _ => "unparsable PEM",
    };
    anyhow!("cannot parse PEM in {}: {what}", path.display())
}

/// `dangerous_disable_verification`: any certificate chain and name are accepted. The
/// handshake signatures are still checked (as rustls' own examples do), which proves only
/// that the server holds the key of the certificate it sent.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
pub(crate) mod test_pki {
    //! A throwaway CA and certificates for TLS tests.

    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    pub struct Ca {
        pub issuer: CertifiedIssuer<'static, KeyPair>,
    }

    pub struct Leaf {
        pub cert_pem: String,
        pub key_pem: String,
    }

    impl Ca {
        pub fn new(name: &str) -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let issuer =
                CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            Ca { issuer }
        }

        pub fn pem(&self) -> String {
            self.issuer.pem()
        }

        /// A leaf certificate for the given subject alternative names.
        pub fn leaf(&self, names: &[&str]) -> Leaf {
            let mut params =
                CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &*self.issuer).unwrap();
            Leaf {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        }
    }

    pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::test_pki::{write, Ca, Leaf};
    use super::*;
    use rustls::server::WebPkiClientVerifier;
    use rustls::ServerConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn tls_config() -> TlsConfig {
        TlsConfig {
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            server_name: None,
            dangerous_disable_verification: false,
        }
    }

    fn server_config(leaf: &Leaf, client_ca: Option<&Ca>) -> Arc<ServerConfig> {
        let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.issuer.der().clone()).unwrap();
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        Arc::new(builder.with_single_cert(certs, key).unwrap())
    }

    /// A one-connection TLS echo-ish server: answers "ping" with "pong".
    async fn serve_once(config: Arc<ServerConfig>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                let mut buf = [0u8; 4];
                if tls.read_exact(&mut buf).await.is_ok() && &buf == b"ping" {
                    let _ = tls.write_all(b"pong").await;
                    let _ = tls.flush().await;
                }
            }
        });
        addr
    }

    async fn ping(addr: std::net::SocketAddr, cfg: &TlsConfig, name: &str) -> anyhow::Result<()> {
        let config = client_config(cfg)?;
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = connect(tcp, config, name).await?;
        tls.write_all(b"ping").await?;
        tls.flush().await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        anyhow::ensure!(&buf == b"pong", "unexpected reply {buf:?}");
        Ok(())
    }

    struct Fixture {
        dir: tempfile::TempDir,
        ca: Ca,
        server: Leaf,
    }

    fn fixture() -> Fixture {
        let ca = Ca::new("test CA");
        let server = ca.leaf(&["localhost", "127.0.0.1"]);
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            ca,
            server,
        }
    }

    #[tokio::test]
    async fn handshake_succeeds_with_the_ca() {
        let f = fixture();
        let addr = serve_once(server_config(&f.server, None)).await;
        let cfg = TlsConfig {
            ca_file: Some(write(f.dir.path(), "ca.pem", &f.ca.pem())),
            ..tls_config()
        };
        ping(addr, &cfg, "localhost").await.unwrap();
        // an IP address SAN works too
        let addr = serve_once(server_config(&f.server, None)).await;
        ping(addr, &cfg, "127.0.0.1").await.unwrap();
    }

    #[tokio::test]
    async fn handshake_fails_with_another_ca() {
        let f = fixture();
        let other = Ca::new("other CA");
        let addr = serve_once(server_config(&f.server, None)).await;
        let cfg = TlsConfig {
            ca_file: Some(write(f.dir.path(), "other.pem", &other.pem())),
            ..tls_config()
        };
        let err = format!("{:#}", ping(addr, &cfg, "localhost").await.unwrap_err());
        assert!(err.contains("unknown issuer"), "{err}");
    }

    #[tokio::test]
    async fn handshake_fails_on_name_mismatch() {
        let f = fixture();
        let addr = serve_once(server_config(&f.server, None)).await;
        let cfg = TlsConfig {
            ca_file: Some(write(f.dir.path(), "ca.pem", &f.ca.pem())),
            ..tls_config()
        };
        let err = format!(
            "{:#}",
            ping(addr, &cfg, "broker.example").await.unwrap_err()
        );
        assert!(err.contains("name mismatch"), "{err}");
        assert!(err.contains("broker.example"), "{err}");
        assert!(err.contains("localhost"), "{err}");
    }

    #[tokio::test]
    async fn disabled_verification_accepts_anything() {
        let f = fixture();
        let addr = serve_once(server_config(&f.server, None)).await;
        let cfg = TlsConfig {
            dangerous_disable_verification: true,
            ..tls_config()
        };
        warn_if_insecure("test", &cfg);
        ping(addr, &cfg, "wrong.name.example").await.unwrap();
    }

    #[tokio::test]
    async fn mutual_tls_with_client_certificate() {
        let f = fixture();
        let client_ca = Ca::new("client CA");
        let client = client_ca.leaf(&["sidecar"]);
        let cfg = TlsConfig {
            ca_file: Some(write(f.dir.path(), "ca.pem", &f.ca.pem())),
            client_cert_file: Some(write(f.dir.path(), "client.pem", &client.cert_pem)),
            client_key_file: Some(write(f.dir.path(), "client.key", &client.key_pem)),
            ..tls_config()
        };
        let addr = serve_once(server_config(&f.server, Some(&client_ca))).await;
        ping(addr, &cfg, "localhost").await.unwrap();

        // without the client certificate the server refuses us (in TLS 1.3 the alert
        // arrives after the client's side of the handshake, i.e. on the first read)
        let no_cert = TlsConfig {
            client_cert_file: None,
            client_key_file: None,
            ..cfg
        };
        let addr = serve_once(server_config(&f.server, Some(&client_ca))).await;
        let err = format!("{:#}", ping(addr, &no_cert, "localhost").await.unwrap_err());
        assert!(err.to_lowercase().contains("certificate"), "{err}");
    }

    #[tokio::test]
    async fn plaintext_server_is_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // a Kafka broker reads the ClientHello as a huge frame length and hangs up
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4];
            let _ = tcp.read_exact(&mut buf).await;
        });
        let cfg = TlsConfig {
            dangerous_disable_verification: true,
            ..tls_config()
        };
        let err = format!("{:#}", ping(addr, &cfg, "localhost").await.unwrap_err());
        assert!(err.contains("TLS listener"), "{err}");
    }

    #[test]
    fn config_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TlsConfig {
            ca_file: Some(write(dir.path(), "empty.pem", "")),
            ..tls_config()
        };
        let err = format!("{:#}", client_config(&cfg).unwrap_err());
        assert!(
            err.contains("tls.ca_file") && err.contains("no CERTIFICATE"),
            "{err}"
        );

        let ca = Ca::new("ca");
        let cfg = TlsConfig {
            ca_file: Some(write(dir.path(), "ca.pem", &ca.pem())),
            client_cert_file: Some(write(dir.path(), "c.pem", &ca.pem())),
            client_key_file: Some(write(dir.path(), "k.pem", &ca.pem())),
            ..tls_config()
        };
        let err = format!("{:#}", client_config(&cfg).unwrap_err());
        assert!(
            err.contains("tls.client_key_file") && err.contains("private key"),
            "{err}"
        );
    }

    /// A broken key file is named, and none of its contents reach the error: `pem::Error`'s
    /// own Display would quote the offending line.
    #[test]
    fn pem_errors_name_the_file_and_never_quote_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("ca");
        let secret = "c2VjcmV0LWtleS1tYXRlcmlhbA";
        let cases = [
            (
                "truncated.pem",
                format!("-----BEGIN PRIVATE KEY-----\n{secret}\n"),
            ),
            ("badline.pem", format!("-----BEGIN PRIVATE KEY {secret}\n")),
            (
                "base64.pem",
                format!("-----BEGIN PRIVATE KEY-----\n{secret}!!\n-----END PRIVATE KEY-----\n"),
            ),
        ];
        for (name, body) in cases {
            let key = write(dir.path(), name, &body);
            let cfg = TlsConfig {
                ca_file: Some(write(dir.path(), "ca.pem", &ca.pem())),
                client_cert_file: Some(write(dir.path(), "c.pem", &ca.pem())),
                client_key_file: Some(key.clone()),
                ..tls_config()
            };
            let err = format!("{:#}", client_config(&cfg).unwrap_err());
            assert!(err.contains("tls.client_key_file"), "{err}");
            assert!(err.contains(&key.display().to_string()), "{err}");
            assert!(
                !err.contains("c2VjcmV0"),
                "{name}: the error quotes the file: {err}"
            );
        }
        let missing = dir.path().join("missing.pem");
        let cfg = TlsConfig {
            ca_file: Some(missing.clone()),
            ..tls_config()
        };
        let err = format!("{:#}", client_config(&cfg).unwrap_err());
        assert!(
            err.contains("tls.ca_file") && err.contains("missing.pem"),
            "{err}"
        );
    }
}
