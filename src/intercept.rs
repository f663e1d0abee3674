//! The requests the proxy looks into, and the hooks that see their answers.
//!
//! The session relays frames; everything the proxy *does* with a request is decided
//! here, in one dispatch: a feature may replace the frame (rewritten, or a cheap
//! stand-in that keeps its place in the pipeline) and may leave a [`ResponseHook`]
//! for the answer. The session knows nothing of the features themselves.
//!
//! [`DECODED`] lists every API whose messages the proxy decodes. ApiVersions answers
//! are capped to these (the ranges kafka-protocol handles), so that a newer broker
//! cannot silently turn a feature off with a version the proxy cannot read.

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, ResponseHeader, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use tokio::io::AsyncWrite;

use crate::codec::{self, RequestPeek};
use crate::group_membership::{Joining, Memberships};
use crate::producer_identity::{ProduceHook, SessionProducerIds};
use crate::rewrite;
use crate::session::Session;

/// Every API the proxy decodes, and why. Its ApiVersions answers offer only the
/// versions kafka-protocol can decode for these.
pub const DECODED: &[(ApiKey, &str)] = &[
    (ApiKey::Metadata, "broker addresses rewritten"),
    (ApiKey::FindCoordinator, "coordinator addresses rewritten"),
    (ApiKey::DescribeCluster, "broker addresses rewritten"),
    (ApiKey::ShareFetch, "node endpoints rewritten"),
    (ApiKey::ShareAcknowledge, "node endpoints rewritten"),
    (ApiKey::Fetch, "node endpoints rewritten (v16+)"),
    (ApiKey::DescribeQuorum, "controller listeners removed (v2+)"),
    (
        ApiKey::Produce,
        "node endpoints rewritten (v10+); producer identity after a switch",
    ),
    (ApiKey::InitProducerId, "producer identity after a switch"),
    (ApiKey::ApiVersions, "versions capped"),
    (
        ApiKey::SaslHandshake,
        "refused: the proxy holds the credentials",
    ),
    (
        ApiKey::SaslAuthenticate,
        "refused: the proxy holds the credentials",
    ),
    (ApiKey::JoinGroup, "group membership left at a switch"),
    (ApiKey::LeaveGroup, "group membership left at a switch"),
    (
        ApiKey::ConsumerGroupHeartbeat,
        "group membership left at a switch",
    ),
];

/// The version range the proxy handles for an API, or None where it relays the API as
/// opaque bytes (any version the upstream speaks is fine then).
pub fn proxy_versions(api_key: i16) -> Option<kafka_protocol::protocol::VersionRange> {
    let key = ApiKey::try_from(api_key).ok()?;
    DECODED
        .iter()
        .any(|(k, _)| *k == key)
        .then(|| key.valid_versions())
}

/// A feature's interest in the answer to one request.
pub(crate) trait ResponseHook: Send {
    /// Turns the upstream's answer into what the client gets (address rewriting
    /// follows).
    fn on_response(self: Box<Self>, s: &Session, frame: Bytes) -> anyhow::Result<Bytes>;
    /// The answer will never come: the session ended first.
    fn abandoned(self: Box<Self>, _s: &Session) {}
    /// The hook's output is the client's answer as it is (no address rewriting): for
    /// answers the proxy builds at versions other than the request's.
    fn is_final(&self) -> bool {
        false
    }
}

/// What the proxy does with one client request.
pub(crate) struct Intercepted {
    pub frame: Bytes,
    pub hook: Option<Box<dyn ResponseHook>>,
}

/// Dispatches a client request to the features that look into it.
pub(crate) async fn request<UW: AsyncWrite + Unpin + Send>(
    s: &Session,
    peek: &RequestPeek,
    frame: Bytes,
    uw: &mut UW,
) -> anyhow::Result<Intercepted> {
    let pass = |frame| Ok(Intercepted { frame, hook: None });
    let with = |frame, hook: Box<dyn ResponseHook>| {
        Ok(Intercepted {
            frame,
            hook: Some(hook),
        })
    };
    let version = peek.api_version;
    match ApiKey::try_from(peek.api_key) {
        Ok(ApiKey::Produce) => {
            let mut ids = SessionProducerIds {
                session: s,
                uw,
                version: None,
            };
            match s
                .shared
                .producers
                .rewrite_produce(&s.route, &frame, version, &mut ids)
                .await?
            {
                Some((f, hook)) => with(f, Box::new(Produce { hook, version })),
                None => pass(frame),
            }
        }
        Ok(ApiKey::InitProducerId) => {
            match s
                .shared
                .producers
                .rewrite_init_request(&s.route, &frame, version)?
            {
                Some(f) => with(f, Box::new(InitProducerId { version })),
                None => pass(frame),
            }
        }
        Ok(ApiKey::JoinGroup) => match Memberships::join_request(&frame, version) {
            Some(j) => with(
                frame,
                Box::new(JoinGroup {
                    joining: j,
                    version,
                }),
            ),
            None => pass(frame),
        },
        Ok(ApiKey::LeaveGroup) => {
            s.groups.leave_request(&frame, version);
            pass(frame)
        }
        Ok(ApiKey::ConsumerGroupHeartbeat) => match s.groups.heartbeat_request(&frame, version) {
            Some(j) => with(
                frame,
                Box::new(GroupHeartbeat {
                    joining: j,
                    version,
                }),
            ),
            None => pass(frame),
        },
        Ok(ApiKey::ApiVersions) if version > rewrite::max_api_versions_version() => {
            // Asked at a version the proxy cannot decode: answer as a broker does.
            let corr = peek.correlation_id;
            with(
                api_versions_v0_request(corr),
                Box::new(ApiVersionsTooNew { corr }),
            )
        }
        Ok(ApiKey::SaslHandshake) | Ok(ApiKey::SaslAuthenticate)
            if s.act.cluster.config().sasl.is_some() =>
        {
            tracing::warn!(peer = %s.peer, cluster = %s.act.cluster.name(), "client attempted SASL; kafka-sidecar holds the upstream credentials, so the client must connect with security.protocol=PLAINTEXT and no SASL settings");
            let corr = peek.correlation_id;
            with(
                api_versions_v0_request(corr),
                Box::new(SaslRefused {
                    api_key: peek.api_key,
                    version,
                    corr,
                }),
            )
        }
        _ => pass(frame),
    }
}

struct Produce {
    hook: ProduceHook,
    version: i16,
}

impl ResponseHook for Produce {
    fn on_response(self: Box<Self>, s: &Session, frame: Bytes) -> anyhow::Result<Bytes> {
        let p = &s.shared.producers;
        let out = p.on_produce_response(&s.route, self.hook, frame, self.version);
        metrics::gauge!(crate::admin::names::PRODUCER_IDENTITIES).set(p.live() as f64);
        out
    }
    fn abandoned(self: Box<Self>, s: &Session) {
        s.shared.producers.abandon(&self.hook);
    }
}

struct InitProducerId {
    version: i16,
}

impl ResponseHook for InitProducerId {
    fn on_response(self: Box<Self>, s: &Session, frame: Bytes) -> anyhow::Result<Bytes> {
        let p = &s.shared.producers;
        let out = p.map_init_response(&s.route, frame, self.version);
        metrics::gauge!(crate::admin::names::PRODUCER_IDENTITIES).set(p.live() as f64);
        out
    }
}

struct JoinGroup {
    joining: Joining,
    version: i16,
}

impl ResponseHook for JoinGroup {
    fn on_response(self: Box<Self>, s: &Session, frame: Bytes) -> anyhow::Result<Bytes> {
        // A response that lies about its contents ends the session, as everywhere.
        codec::check_response(ApiKey::JoinGroup, self.version, &frame)?;
        s.groups.join_response(self.joining, &frame, self.version);
        Ok(frame)
    }
}

struct GroupHeartbeat {
    joining: Joining,
    version: i16,
}

impl ResponseHook for GroupHeartbeat {
    fn on_response(self: Box<Self>, s: &Session, frame: Bytes) -> anyhow::Result<Bytes> {
        codec::check_response(ApiKey::ConsumerGroupHeartbeat, self.version, &frame)?;
        s.groups
            .heartbeat_response(self.joining, &frame, self.version);
        Ok(frame)
    }
}

/// The client asked ApiVersions at a version the proxy cannot decode: the upstream was
/// asked v0, and the client gets v0 with UNSUPPORTED_VERSION and the ranges both sides
/// support, so it retries lower (what a broker does).
struct ApiVersionsTooNew {
    corr: i32,
}

impl ResponseHook for ApiVersionsTooNew {
    fn on_response(self: Box<Self>, _s: &Session, frame: Bytes) -> anyhow::Result<Bytes> {
        let mut m: ApiVersionsResponse = codec::decode_body(0, frame.slice(8..))?;
        rewrite::cap_api_versions(&mut m);
        if let Some(av) = m
            .api_keys
            .iter_mut()
            .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        {
            av.max_version = av.max_version.min(rewrite::max_api_versions_version());
        }
        m.error_code = rewrite::UNSUPPORTED_VERSION;
        response_frame(self.corr, 0, 0, &m)
    }
    fn is_final(&self) -> bool {
        true
    }
}

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;

/// The client tried SASL although the proxy authenticates the upstream itself.
struct SaslRefused {
    api_key: i16,
    version: i16,
    corr: i32,
}

impl ResponseHook for SaslRefused {
    fn on_response(self: Box<Self>, _s: &Session, _frame: Bytes) -> anyhow::Result<Bytes> {
        let msg = "kafka-sidecar authenticates to the upstream cluster itself: configure the client with security.protocol=PLAINTEXT and no SASL settings";
        let (corr, version) = (self.corr, self.version);
        if self.api_key == ApiKey::SaslHandshake as i16 {
            // An empty mechanism list: the client reports that its mechanism is not enabled.
            let m = SaslHandshakeResponse::default().with_error_code(UNSUPPORTED_SASL_MECHANISM);
            let hv = ApiKey::SaslHandshake.response_header_version(version);
            response_frame(corr, hv, version, &m)
        } else {
            let m = SaslAuthenticateResponse::default()
                .with_error_code(ILLEGAL_SASL_STATE)
                .with_error_message(Some(StrBytes::from_static_str(msg)));
            let hv = ApiKey::SaslAuthenticate.response_header_version(version);
            response_frame(corr, hv, version, &m)
        }
    }
}

/// ApiVersions v0 with the given correlation id: understood by every broker, cheap to
/// answer. It stands in for a request the proxy answers itself, so that the answer
/// keeps its place among pipelined ones.
pub(crate) fn api_versions_v0_request(corr: i32) -> Bytes {
    let mut f = bytes::BytesMut::with_capacity(14);
    f.extend_from_slice(&10i32.to_be_bytes());
    f.extend_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
    f.extend_from_slice(&0i16.to_be_bytes());
    f.extend_from_slice(&corr.to_be_bytes());
    f.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    f.freeze()
}

pub(crate) fn response_frame<T: Encodable>(
    corr: i32,
    header_version: i16,
    version: i16,
    msg: &T,
) -> anyhow::Result<Bytes> {
    let mut buf = bytes::BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(corr)
        .encode(&mut buf, header_version)?;
    msg.encode(&mut buf, version)?;
    Ok(codec::frame_with_length(buf))
}
