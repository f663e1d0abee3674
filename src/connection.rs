//! The one way the proxy talks to a broker on its own: framing, correlation ids,
//! bounded decoding of answers, and one cached version negotiation per connection.
//!
//! - [`KafkaExchange`] is the transport seam: one request body out, its answer body
//!   back. [`Connection`] implements it on a stream nobody else uses (a fresh upstream
//!   connection: SASL, metadata refresh, health probes, the control plane); a relayed
//!   session implements it in-band, between its client's requests (re-authentication,
//!   producer identity, group leave). State machines written against it (SASL, the
//!   features) are unit-tested without sockets.
//! - [`Broker`] adds what every caller wants on top: typed calls whose answers are
//!   decoded through [`crate::codec`]'s bounded entry point, and the versions the
//!   broker offers, asked once (ApiVersions v0, which every broker answers).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::api_versions::Offered;
use crate::codec;
use crate::codec::bounds::Bounded;

/// One Kafka request/response round trip on some connection.
pub trait KafkaExchange: Send {
    /// Sends one request with the given api key/version and encoded body (the impl adds
    /// the request header with its own correlation id and client id) and returns the
    /// response body (response header already stripped).
    fn exchange(
        &mut self,
        api_key: ApiKey,
        api_version: i16,
        body: Bytes,
    ) -> impl Future<Output = anyhow::Result<Bytes>> + Send;

    /// Writes the requests queued ahead of the caller (a session's client requests
    /// already admitted but not yet written), so that answers the caller waits for can
    /// come. A connection of the proxy's own queues nothing.
    fn send_queued(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }
}

impl<E: KafkaExchange + ?Sized> KafkaExchange for &mut E {
    fn exchange(
        &mut self,
        api_key: ApiKey,
        api_version: i16,
        body: Bytes,
    ) -> impl Future<Output = anyhow::Result<Bytes>> + Send {
        (**self).exchange(api_key, api_version, body)
    }

    fn send_queued(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send {
        (**self).send_queued()
    }
}

/// Bytes a connection sent and received (frames, approximately), for traffic figures.
#[derive(Debug, Default)]
pub struct Traffic {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// [`KafkaExchange`] directly on a stream nobody else is using. It reads exactly one
/// answer frame per request and nothing beyond, so the stream can be handed on
/// afterwards ([`Connection::into_stream`]) with no bytes lost. The caller bounds
/// each exchange with a timeout.
pub struct Connection<S> {
    stream: S,
    next_correlation_id: i32,
    client_id: StrBytes,
    max_frame: usize,
    traffic: Option<Arc<Traffic>>,
}

impl<S> Connection<S> {
    pub fn new(stream: S, client_id: &'static str, max_frame: usize) -> Self {
        Connection {
            stream,
            next_correlation_id: 0,
            client_id: StrBytes::from_static_str(client_id),
            max_frame,
            traffic: None,
        }
    }

    /// Starts numbering requests at `id`.
    pub fn with_first_correlation_id(mut self, id: i32) -> Self {
        self.next_correlation_id = id;
        self
    }

    /// Counts what goes over this connection into `t`.
    pub fn count_traffic(&mut self, t: Arc<Traffic>) {
        self.traffic = Some(t);
    }

    /// The correlation id the next request will use.
    pub fn next_correlation_id(&self) -> i32 {
        self.next_correlation_id
    }

    pub fn into_stream(self) -> S {
        self.stream
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> KafkaExchange for Connection<S> {
    async fn exchange(
        &mut self,
        api_key: ApiKey,
        api_version: i16,
        body: Bytes,
    ) -> anyhow::Result<Bytes> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(api_version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut frame = BytesMut::with_capacity(64 + body.len());
        frame.put_i32(0); // length, patched below
        header
            .encode(&mut frame, api_key.request_header_version(api_version))
            .with_context(|| format!("cannot encode {api_key:?} v{api_version} header"))?;
        frame.extend_from_slice(&body);
        let len = i32::try_from(frame.len() - 4).context("request too large")?;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        self.stream
            .write_all(&frame)
            .await
            .with_context(|| format!("cannot send {api_key:?} request"))?;
        // TLS keeps the tail of a write until flushed.
        self.stream.flush().await?;

        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.with_context(|| {
            format!("connection closed while waiting for the {api_key:?} response")
        })?;
        let len = codec::check_length(i32::from_be_bytes(len), 4, self.max_frame)
            .with_context(|| format!("{api_key:?} response frame"))?;
        let mut buf = vec![0u8; len];
        self.stream
            .read_exact(&mut buf)
            .await
            .with_context(|| format!("connection closed inside the {api_key:?} response"))?;
        if let Some(t) = &self.traffic {
            t.sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
            t.received.fetch_add(4 + len as u64, Ordering::Relaxed);
        }
        let mut buf = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut buf, api_key.response_header_version(api_version))
            .with_context(|| format!("cannot decode the {api_key:?} response header"))?;
        if header.correlation_id != correlation_id {
            bail!(
                "{api_key:?} response has correlation id {}, expected {correlation_id}",
                header.correlation_id
            );
        }
        Ok(buf)
    }
}

/// Typed calls and version negotiation over an exchange.
pub struct Broker<E> {
    ex: E,
    offered: Option<Arc<Offered>>,
}

impl<E> Broker<E> {
    /// The versions learned so far (to seed the next broker on the same connection).
    pub fn known_offered(&self) -> Option<Arc<Offered>> {
        self.offered.clone()
    }

    pub fn into_exchange(self) -> E {
        self.ex
    }
}

impl<E: KafkaExchange> Broker<E> {
    pub fn new(ex: E) -> Self {
        Broker { ex, offered: None }
    }

    /// Starts from versions already known for this broker (e.g. the cluster's, from
    /// its last metadata refresh): no ApiVersions round trip then.
    pub fn with_offered(ex: E, offered: Option<Arc<Offered>>) -> Self {
        Broker { ex, offered }
    }

    pub fn exchange_mut(&mut self) -> &mut E {
        &mut self.ex
    }

    /// The versions the broker offers, asked once.
    pub async fn offered(&mut self) -> anyhow::Result<&Offered> {
        if self.offered.is_none() {
            // v0: understood by every broker, whatever it supports.
            let av: ApiVersionsResponse = self
                .call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
                .await?;
            anyhow::ensure!(
                av.error_code == 0,
                "the broker answered ApiVersions with error code {}",
                av.error_code
            );
            self.offered = Some(Arc::new(Offered::new(&av)));
        }
        Ok(self.offered.as_ref().expect("just set"))
    }

    /// The newest version of `api` both sides speak, at most `at_most`.
    pub async fn version(&mut self, api: ApiKey, at_most: i16) -> anyhow::Result<i16> {
        self.offered().await?.pick(api, at_most)
    }

    /// One request at `version`; the answer decoded through its bounded layout.
    pub async fn call<Req: Encodable, Resp: Bounded>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> anyhow::Result<Resp> {
        let mut body = BytesMut::new();
        req.encode(&mut body, version)
            .with_context(|| format!("cannot encode {api:?} v{version}"))?;
        let answer = self.ex.exchange(api, version, body.freeze()).await?;
        codec::decode_body(version, answer)
            .with_context(|| format!("the broker's {api:?} v{version} answer"))
    }

    /// [`Self::call`] at the newest version both sides speak (at most `at_most`);
    /// returns the version used too.
    pub async fn call_newest<Req: Encodable, Resp: Bounded>(
        &mut self,
        api: ApiKey,
        at_most: i16,
        req: &Req,
    ) -> anyhow::Result<(Resp, i16)> {
        let v = self.version(api, at_most).await?;
        Ok((self.call(api, v, req).await?, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

    async fn read_request(s: &mut tokio::io::DuplexStream) -> (RequestHeader, Bytes) {
        let n = s.read_i32().await.unwrap();
        let mut req = vec![0u8; n as usize];
        s.read_exact(&mut req).await.unwrap();
        let mut req = Bytes::from(req);
        let api = i16::from_be_bytes([req[0], req[1]]);
        let v = i16::from_be_bytes([req[2], req[3]]);
        let hv = ApiKey::try_from(api).unwrap().request_header_version(v);
        let h = RequestHeader::decode(&mut req, hv).unwrap();
        (h, req)
    }

    async fn answer<T: Encodable>(s: &mut tokio::io::DuplexStream, h: &RequestHeader, m: &T) {
        let api = ApiKey::try_from(h.request_api_key).unwrap();
        let f = codec::response_frame(
            h.correlation_id,
            api.response_header_version(h.request_api_version),
            h.request_api_version,
            m,
        )
        .unwrap();
        s.write_all(&f).await.unwrap();
    }

    #[tokio::test]
    async fn frames_numbers_and_checks_lengths() {
        let (client, mut server) = tokio::io::duplex(4096);
        let srv = tokio::spawn(async move {
            let (h, _) = read_request(&mut server).await;
            assert_eq!(h.correlation_id, 7);
            assert_eq!(h.client_id.as_deref(), Some("sidecar"));
            answer(&mut server, &h, &ApiVersionsResponse::default()).await;
            // second request: answer with an oversized frame length
            let _ = read_request(&mut server).await;
            server.write_i32(1 << 30).await.unwrap();
        });
        let mut c = Connection::new(client, "sidecar", 1 << 20).with_first_correlation_id(7);
        let body = Bytes::new();
        c.exchange(ApiKey::ApiVersions, 0, body.clone())
            .await
            .unwrap();
        assert_eq!(c.next_correlation_id(), 8);
        let err = c.exchange(ApiKey::ApiVersions, 0, body).await.unwrap_err();
        assert!(format!("{err:#}").contains("exceeds the limit"), "{err:#}");
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn negotiates_once_and_decodes_through_the_layouts() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let srv = tokio::spawn(async move {
            let (h, _) = read_request(&mut server).await;
            assert_eq!(h.request_api_key, ApiKey::ApiVersions as i16);
            assert_eq!(h.request_api_version, 0);
            let mut av = ApiVersionsResponse::default();
            av.api_keys.push(
                ApiVersion::default()
                    .with_api_key(ApiKey::Metadata as i16)
                    .with_min_version(0)
                    .with_max_version(9),
            );
            answer(&mut server, &h, &av).await;
            for _ in 0..2 {
                let (h, _) = read_request(&mut server).await;
                assert_eq!(h.request_api_key, ApiKey::Metadata as i16);
                assert_eq!(h.request_api_version, 9, "the newest both speak");
                answer(&mut server, &h, &MetadataResponse::default()).await;
            }
            // a lying answer: 2^31-1 brokers in a few bytes
            let (h, _) = read_request(&mut server).await;
            let mut f = BytesMut::new();
            f.put_i32(4 + 4 + 4);
            f.put_i32(h.correlation_id);
            f.put_i32(0); // throttle
            f.put_i32(i32::MAX); // broker count
            server.write_all(&f).await.unwrap();
        });
        let mut b = Broker::new(Connection::new(client, "sidecar", 1 << 20));
        let req = MetadataRequest::default().with_topics(Some(vec![]));
        for _ in 0..2 {
            let (_m, v): (MetadataResponse, _) =
                b.call_newest(ApiKey::Metadata, 12, &req).await.unwrap();
            assert_eq!(v, 9);
        }
        let err = b
            .call::<_, MetadataResponse>(ApiKey::Metadata, 9, &req)
            .await
            .unwrap_err();
        let refused = err
            .chain()
            .any(|e| matches!(e.downcast_ref::<codec::DecodeError>(), Some(d) if d.is_refusal()));
        assert!(refused, "{err:#}");
        srv.await.unwrap();
    }
}
