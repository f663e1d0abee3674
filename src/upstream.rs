//! Opening a connection to an upstream broker: TCP, then TLS and SASL when the
//! cluster asks for them, all within `limits.connect_timeout`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::{split_host_port, ClusterConfig};
use crate::connection::Connection;

/// What opening a connection needs to know of a cluster (implemented by
/// [`crate::cluster::Cluster`]; tests can bring their own).
pub trait Endpoint: Sync {
    fn name(&self) -> &str;
    /// The cluster name as a metric label (no allocation per connection).
    fn name_label(&self) -> metrics::SharedString;
    fn config(&self) -> std::sync::Arc<ClusterConfig>;
    fn tls_client_config(&self) -> Option<std::sync::Arc<rustls::ClientConfig>>;
    fn max_frame(&self) -> usize;
}

/// A connected (and authenticated) upstream byte stream.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why an upstream connection failed; the label of the connect-failures metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    Refused,
    Timeout,
    Tls,
    Sasl,
    Other,
}

impl FailReason {
    pub fn label(self) -> &'static str {
        match self {
            FailReason::Refused => "refused",
            FailReason::Timeout => "timeout",
            FailReason::Tls => "tls",
            FailReason::Sasl => "sasl",
            FailReason::Other => "other",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot connect to cluster '{cluster}' at {addr} ({}): {source:#}", reason.label())]
pub struct ConnectError {
    pub cluster: String,
    pub addr: String,
    pub reason: FailReason,
    pub source: anyhow::Error,
}

pub struct Connected {
    pub stream: UpstreamStream,
    pub addr: String,
    /// KIP-368 session lifetime the broker granted (0: none).
    pub session_lifetime_ms: i64,
}

/// Tries `candidates` in order until one connects. Returns the last error if none does.
pub async fn connect(
    cluster: &impl Endpoint,
    candidates: &[String],
    timeout: Duration,
) -> Result<Connected, ConnectError> {
    let mut last = None;
    for addr in candidates {
        match connect_one(cluster, addr, timeout).await {
            Ok(c) => {
                metrics::counter!(crate::admin::names::UPSTREAM_CONNECTIONS_TOTAL, "cluster" => cluster.name_label())
                    .increment(1);
                return Ok(c);
            }
            Err(e) => {
                metrics::counter!(
                    crate::admin::names::UPSTREAM_CONNECT_FAILURES_TOTAL,
                    "cluster" => cluster.name_label(),
                    "reason" => e.reason.label()
                )
                .increment(1);
                tracing::warn!(cluster = %e.cluster, addr = %e.addr, reason = e.reason.label(), "upstream connect failed: {:#}", e.source);
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| ConnectError {
        cluster: cluster.name().to_string(),
        addr: "-".into(),
        reason: FailReason::Other,
        source: anyhow::anyhow!("no upstream address known"),
    }))
}

async fn connect_one(
    cluster: &impl Endpoint,
    addr: &str,
    timeout: Duration,
) -> Result<Connected, ConnectError> {
    let fail = |reason, source| ConnectError {
        cluster: cluster.name().to_string(),
        addr: addr.to_string(),
        reason,
        source,
    };
    match tokio::time::timeout(timeout, connect_inner(cluster, addr)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err((reason, source))) => Err(fail(reason, source)),
        Err(_) => Err(fail(
            FailReason::Timeout,
            anyhow::anyhow!("no connection within {timeout:?} (limits.connect_timeout)"),
        )),
    }
}

async fn connect_inner(
    cluster: &impl Endpoint,
    addr: &str,
) -> Result<Connected, (FailReason, anyhow::Error)> {
    let (host, _port) =
        split_host_port(addr).map_err(|e| (FailReason::Other, anyhow::anyhow!("'{addr}' {e}")))?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| {
        let reason = match e.kind() {
            io::ErrorKind::ConnectionRefused => FailReason::Refused,
            io::ErrorKind::TimedOut => FailReason::Timeout,
            _ => FailReason::Other,
        };
        (reason, anyhow::Error::new(e))
    })?;
    // Kafka frames are written whole; Nagle would only add latency.
    let _ = tcp.set_nodelay(true);
    let cfg = cluster.config();
    let mut stream = match (&cfg.tls, cluster.tls_client_config()) {
        (Some(tls), Some(client_cfg)) => {
            let name = tls.server_name.clone().unwrap_or_else(|| host.to_string());
            let s = crate::tls::connect(tcp, client_cfg, &name)
                .await
                .map_err(|e| (FailReason::Tls, e))?;
            UpstreamStream::Tls(Box::new(s))
        }
        _ => UpstreamStream::Plain(tcp),
    };
    let mut session_lifetime_ms = 0;
    if let Some(sasl) = &cfg.sasl {
        let mut ex = Connection::new(&mut stream, "kafka-sidecar", cluster.max_frame());
        match crate::sasl::authenticate(&mut ex, sasl).await {
            Ok(a) => {
                session_lifetime_ms = a.session_lifetime_ms;
                metrics::counter!(crate::admin::names::SASL_AUTHENTICATIONS_TOTAL, "cluster" => cluster.name_label(), "result" => "ok").increment(1);
            }
            Err(e) => {
                metrics::counter!(crate::admin::names::SASL_AUTHENTICATIONS_TOTAL, "cluster" => cluster.name_label(), "result" => "error").increment(1);
                return Err((FailReason::Sasl, anyhow::Error::new(e)));
            }
        }
    }
    Ok(Connected {
        stream,
        addr: addr.to_string(),
        session_lifetime_ms,
    })
}
