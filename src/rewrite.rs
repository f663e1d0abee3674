//! Response rewriting: every broker address the upstream hands out is replaced by the
//! proxy's own listener for that node id, and ApiVersions is capped to what the proxy
//! can decode and re-encode.
//!
//! Only the responses [`crate::apis::TABLE`] names are decoded; everything else stays opaque
//! bytes. Produce and Fetch responses are looked at only at the versions that can carry
//! KIP-951 `node_endpoints` (filled only on NOT_LEADER_OR_FOLLOWER style errors): a
//! skim without allocation ([`skim`]) finds the list absent in the common case, and
//! only a response that has it is decoded and re-encoded.

mod skim;
pub mod tail;

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, DescribeClusterResponse, DescribeQuorumResponse, FetchResponse,
    FindCoordinatorResponse, MetadataResponse, ProduceResponse, ShareAcknowledgeResponse,
    ShareFetchResponse,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::api_versions::{self, UNSUPPORTED_VERSION};
use crate::apis::{self, OnResponse};
use crate::codec::bounds::Bounded;

/// Where the proxy serves a node id, and what the upstream said about it.
pub trait NodeDirectory {
    /// Records the upstream address of `node_id` and returns the local (host, port)
    /// to advertise instead. Never returns the upstream address.
    fn local_endpoint(
        &self,
        node_id: i32,
        upstream_host: &str,
        upstream_port: i32,
    ) -> (StrBytes, i32);
}

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    // `reason`, not `source`: the message already says it, and `{:#}` would repeat it.
    #[error("cannot decode {api:?} v{version} response: {reason:#}")]
    Decode {
        api: ApiKey,
        version: i16,
        reason: anyhow::Error,
    },
    #[error("cannot encode {api:?} v{version} response: {reason:#}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: anyhow::Error,
    },
    #[error("response frame too short")]
    Short,
}

/// Splits a response frame (length prefix included) into the raw header bytes
/// (correlation id and, for header v1, tagged fields) and the body.
fn split_response(frame: &Bytes, header_version: i16) -> Result<(Bytes, Bytes), RewriteError> {
    let at =
        crate::codec::response_body_offset(frame, header_version).ok_or(RewriteError::Short)?;
    Ok((frame.slice(4..at), frame.slice(at..)))
}

/// Every response body is decoded through codec's bounded entry point.
fn decode<T: Bounded>(api: ApiKey, version: i16, body: Bytes) -> Result<T, RewriteError> {
    crate::codec::decode_response_body(api, version, body).map_err(|e| RewriteError::Decode {
        api,
        version,
        reason: e.into(),
    })
}

fn reframe<T: Encodable>(
    api: ApiKey,
    version: i16,
    header: &Bytes,
    msg: &T,
) -> Result<Bytes, RewriteError> {
    crate::codec::reframe(header, msg, version).map_err(|reason| RewriteError::Encode {
        api,
        version,
        reason,
    })
}

macro_rules! rewrite_endpoints {
    ($list:expr, $dir:expr) => {
        for e in $list.iter_mut() {
            let (host, port) = $dir.local_endpoint(e.node_id.0, &e.host, e.port);
            e.host = host;
            e.port = port;
        }
    };
}

/// Rewrites one response frame if its API carries broker addresses. Returns the frame
/// unchanged (same bytes, no copy) when there is nothing to rewrite.
pub fn rewrite_response(
    api_key: i16,
    version: i16,
    frame: Bytes,
    dir: &dyn NodeDirectory,
) -> Result<Bytes, RewriteError> {
    let Some(step) = apis::on_response(api_key, version) else {
        return Ok(frame);
    };
    let api = ApiKey::try_from(api_key).expect("the table holds known keys only");
    let (header, body) = split_response(&frame, api.response_header_version(version))?;
    match step {
        OnResponse::Metadata => {
            let mut m: MetadataResponse = decode(api, version, body)?;
            for b in m.brokers.iter_mut() {
                let (host, port) = dir.local_endpoint(b.node_id.0, &b.host, b.port);
                b.host = host;
                b.port = port;
            }
            reframe(api, version, &header, &m)
        }
        OnResponse::FindCoordinator => {
            let mut m: FindCoordinatorResponse = decode(api, version, body)?;
            // An error answer carries node id -1 and an empty host: leave it alone.
            if version < 4 && m.node_id.0 >= 0 {
                let (host, port) = dir.local_endpoint(m.node_id.0, &m.host, m.port);
                m.host = host;
                m.port = port;
            }
            for c in m.coordinators.iter_mut().filter(|c| c.node_id.0 >= 0) {
                let (host, port) = dir.local_endpoint(c.node_id.0, &c.host, c.port);
                c.host = host;
                c.port = port;
            }
            reframe(api, version, &header, &m)
        }
        OnResponse::DescribeCluster => {
            let mut m: DescribeClusterResponse = decode(api, version, body)?;
            for b in m.brokers.iter_mut() {
                let (host, port) = dir.local_endpoint(b.broker_id.0, &b.host, b.port);
                b.host = host;
                b.port = port;
            }
            reframe(api, version, &header, &m)
        }
        OnResponse::DescribeQuorum => {
            // Controllers' addresses: the proxy serves brokers only, so they are
            // removed rather than left to lead a client around the proxy.
            let mut m: DescribeQuorumResponse = decode(api, version, body)?;
            if m.nodes.iter().all(|n| n.listeners.is_empty()) {
                return Ok(frame);
            }
            for n in m.nodes.iter_mut() {
                n.listeners.clear();
            }
            reframe(api, version, &header, &m)
        }
        OnResponse::ApiVersions => {
            // A broker older than the request answers with a v0 body and
            // UNSUPPORTED_VERSION (the client then retries lower): if the body does not
            // decode at the request's version, it is decoded and relayed as v0. (Some,
            // like librdkafka's mock cluster, answer in the request's version.)
            let unsupported = body.get(..2) == Some(&UNSUPPORTED_VERSION.to_be_bytes()[..]);
            let (at, mut m) = match decode::<ApiVersionsResponse>(api, version, body.clone()) {
                Ok(m) => (version, m),
                Err(_) if unsupported && version > 0 => (0, decode(api, 0, body)?),
                Err(e) => return Err(e),
            };
            api_versions::cap(&mut m);
            reframe(api, at, &header, &m)
        }
        OnResponse::NodeEndpoints => node_endpoints(api, version, frame, header, body, dir),
    }
}

/// The KIP-951 node endpoints of Produce, Fetch and the share-group answers.
fn node_endpoints(
    api: ApiKey,
    version: i16,
    frame: Bytes,
    header: Bytes,
    body: Bytes,
    dir: &dyn NodeDirectory,
) -> Result<Bytes, RewriteError> {
    match api {
        ApiKey::Produce => {
            if skim::produce_has_node_endpoints(&body, version) == Some(false) {
                return Ok(frame);
            }
            let mut m: ProduceResponse = decode(api, version, body)?;
            if m.node_endpoints.is_empty() {
                return Ok(frame);
            }
            rewrite_endpoints!(m.node_endpoints, dir);
            reframe(api, version, &header, &m)
        }
        ApiKey::Fetch => {
            // In place, at the same length, as the streaming path does it (so both give
            // the same bytes); re-encoded only when the rewrite is longer.
            if let Some(at) = skim::fetch_tail_at(&body, version) {
                let body_at = frame.len() - body.len();
                match tail::fetch_tail(version, &body[at..], dir)? {
                    tail::Tail::Unchanged => return Ok(frame),
                    tail::Tail::Fits(t) => return Ok(tail::with_tail(frame, body_at + at, &t)),
                    tail::Tail::Dropped(_) => {}
                }
            }
            let mut m: FetchResponse = decode(api, version, body)?;
            if m.node_endpoints.is_empty() {
                return Ok(frame);
            }
            rewrite_endpoints!(m.node_endpoints, dir);
            reframe(api, version, &header, &m)
        }
        ApiKey::ShareFetch => {
            let mut m: ShareFetchResponse = decode(api, version, body)?;
            if m.node_endpoints.is_empty() {
                return Ok(frame);
            }
            rewrite_endpoints!(m.node_endpoints, dir);
            reframe(api, version, &header, &m)
        }
        ApiKey::ShareAcknowledge => {
            let mut m: ShareAcknowledgeResponse = decode(api, version, body)?;
            if m.node_endpoints.is_empty() {
                return Ok(frame);
            }
            rewrite_endpoints!(m.node_endpoints, dir);
            reframe(api, version, &header, &m)
        }
        // The table's node-endpoint rows are the four above (a test checks it).
        _ => Ok(frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn node_endpoint_rows_are_the_ones_rewritten() {
        for a in apis::TABLE {
            if a.response == Some(OnResponse::NodeEndpoints) {
                assert!(
                    matches!(
                        a.key,
                        ApiKey::Produce
                            | ApiKey::Fetch
                            | ApiKey::ShareFetch
                            | ApiKey::ShareAcknowledge
                    ),
                    "{:?}: node endpoints the rewrite does not know",
                    a.key
                );
            }
        }
    }
    use bytes::BytesMut;
    use kafka_protocol::messages::{
        api_versions_response::ApiVersion, describe_cluster_response::DescribeClusterBroker,
        fetch_response, find_coordinator_response::Coordinator,
        metadata_response::MetadataResponseBroker, produce_response, BrokerId, ResponseHeader,
    };
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// Maps node n to 127.0.0.1:(19100+n) and remembers what it was told.
    #[derive(Default)]
    struct TestDir {
        seen: RefCell<Vec<(i32, String, i32)>>,
    }

    impl NodeDirectory for TestDir {
        fn local_endpoint(&self, node_id: i32, host: &str, port: i32) -> (StrBytes, i32) {
            self.seen
                .borrow_mut()
                .push((node_id, host.to_string(), port));
            (StrBytes::from_static_str("127.0.0.1"), 19100 + node_id)
        }
    }

    fn response_frame<T: Encodable>(api: ApiKey, version: i16, msg: &T) -> Bytes {
        let hv = api.response_header_version(version);
        let mut header = ResponseHeader::default().with_correlation_id(77);
        if hv >= 1 {
            header
                .unknown_tagged_fields
                .insert(99, Bytes::from_static(b"hdr"));
        }
        let mut body = BytesMut::new();
        header.encode(&mut body, hv).unwrap();
        msg.encode(&mut body, version).unwrap();
        crate::codec::frame_with_length(body)
    }

    fn decode_frame<T: Decodable>(api: ApiKey, version: i16, frame: &Bytes) -> (ResponseHeader, T) {
        let mut b = frame.slice(4..);
        let h = ResponseHeader::decode(&mut b, api.response_header_version(version)).unwrap();
        let m = T::decode(&mut b, version).unwrap();
        assert!(b.is_empty(), "trailing bytes after {api:?} v{version}");
        (h, m)
    }

    fn tagged() -> BTreeMap<i32, Bytes> {
        BTreeMap::from([(1000, Bytes::from_static(b"future"))])
    }

    fn flexible(api: ApiKey, version: i16) -> bool {
        api.response_header_version(version) >= 1
    }

    #[test]
    fn metadata_every_version_rewrites_all_brokers_and_keeps_tags() {
        let api = ApiKey::Metadata;
        for v in api.valid_versions().min..=api.valid_versions().max {
            let mut m = MetadataResponse::default();
            for id in [1, 2, 3] {
                let mut b = MetadataResponseBroker::default()
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_string(format!("broker-{id}.dc1.example")))
                    .with_port(9092);
                if flexible(api, v) {
                    b.unknown_tagged_fields = tagged();
                }
                m.brokers.push(b);
            }
            if flexible(api, v) {
                m.unknown_tagged_fields = tagged();
            }
            let dir = TestDir::default();
            let out = rewrite_response(api as i16, v, response_frame(api, v, &m), &dir).unwrap();
            let (h, got): (_, MetadataResponse) = decode_frame(api, v, &out);
            assert_eq!(h.correlation_id, 77);
            assert_eq!(got.brokers.len(), 3, "v{v}");
            for b in &got.brokers {
                assert_eq!(b.host.as_str(), "127.0.0.1", "v{v}");
                assert_eq!(b.port, 19100 + b.node_id.0, "v{v}");
                if flexible(api, v) {
                    assert_eq!(b.unknown_tagged_fields, tagged(), "v{v}");
                }
            }
            if flexible(api, v) {
                assert_eq!(got.unknown_tagged_fields, tagged(), "v{v}");
                assert_eq!(h.unknown_tagged_fields.get(&99).unwrap(), "hdr");
            }
            assert_eq!(
                dir.seen.borrow()[0],
                (1, "broker-1.dc1.example".into(), 9092)
            );
        }
    }

    #[test]
    fn find_coordinator_single_and_batched() {
        let api = ApiKey::FindCoordinator;
        for v in api.valid_versions().min..=api.valid_versions().max {
            let mut m = FindCoordinatorResponse::default();
            if v < 4 {
                m.node_id = BrokerId(2);
                m.host = StrBytes::from_static_str("real-host");
                m.port = 9093;
            } else {
                for (key, id) in [("g1", 2), ("g2", 3), ("bad", -1)] {
                    m.coordinators.push(
                        Coordinator::default()
                            .with_key(StrBytes::from_static_str(key))
                            .with_node_id(BrokerId(id))
                            .with_host(StrBytes::from_static_str(if id < 0 {
                                ""
                            } else {
                                "real-host"
                            }))
                            .with_port(if id < 0 { -1 } else { 9093 }),
                    );
                }
            }
            let out = rewrite_response(
                api as i16,
                v,
                response_frame(api, v, &m),
                &TestDir::default(),
            )
            .unwrap();
            let (_, got): (_, FindCoordinatorResponse) = decode_frame(api, v, &out);
            if v < 4 {
                assert_eq!((got.host.as_str(), got.port), ("127.0.0.1", 19102), "v{v}");
            } else {
                assert_eq!(got.coordinators.len(), 3, "one coordinator per key, v{v}");
                assert_eq!(got.coordinators[0].port, 19102);
                assert_eq!(got.coordinators[1].port, 19103);
                assert_eq!(got.coordinators[1].host.as_str(), "127.0.0.1");
                // The error entry is left as the broker sent it.
                assert_eq!(
                    (got.coordinators[2].host.as_str(), got.coordinators[2].port),
                    ("", -1)
                );
            }
        }
    }

    #[test]
    fn describe_cluster_every_version() {
        let api = ApiKey::DescribeCluster;
        for v in api.valid_versions().min..=api.valid_versions().max {
            let mut m = DescribeClusterResponse::default();
            m.brokers.push(
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(5))
                    .with_host(StrBytes::from_static_str("b5.real"))
                    .with_port(9092),
            );
            m.unknown_tagged_fields = tagged();
            let out = rewrite_response(
                api as i16,
                v,
                response_frame(api, v, &m),
                &TestDir::default(),
            )
            .unwrap();
            let (_, got): (_, DescribeClusterResponse) = decode_frame(api, v, &out);
            assert_eq!(got.brokers[0].host.as_str(), "127.0.0.1");
            assert_eq!(got.brokers[0].port, 19105);
            assert_eq!(got.unknown_tagged_fields, tagged());
        }
    }

    #[test]
    fn produce_node_endpoints_rewritten_from_v10() {
        let api = ApiKey::Produce;
        for v in 10..=api.valid_versions().max {
            let mut m = ProduceResponse::default();
            m.node_endpoints.push(
                produce_response::NodeEndpoint::default()
                    .with_node_id(BrokerId(3))
                    .with_host(StrBytes::from_static_str("leader.real"))
                    .with_port(9092),
            );
            let out = rewrite_response(
                api as i16,
                v,
                response_frame(api, v, &m),
                &TestDir::default(),
            )
            .unwrap();
            let (_, got): (_, ProduceResponse) = decode_frame(api, v, &out);
            assert_eq!(got.node_endpoints[0].host.as_str(), "127.0.0.1", "v{v}");
            assert_eq!(got.node_endpoints[0].port, 19103, "v{v}");
            assert_eq!(
                got.node_endpoints[0].node_id.0, 3,
                "leader id and endpoint agree"
            );
        }
    }

    #[test]
    fn produce_without_endpoints_is_the_same_bytes() {
        let api = ApiKey::Produce;
        let frame = response_frame(api, 11, &ProduceResponse::default());
        let out = rewrite_response(api as i16, 11, frame.clone(), &TestDir::default()).unwrap();
        assert_eq!(
            out.as_ptr(),
            frame.as_ptr(),
            "no copy when nothing to rewrite"
        );
        // Below v10 it is not even decoded.
        let frame = response_frame(api, 9, &ProduceResponse::default());
        let out = rewrite_response(api as i16, 9, frame.clone(), &TestDir::default()).unwrap();
        assert_eq!(out.as_ptr(), frame.as_ptr());
    }

    #[test]
    fn fetch_node_endpoints_rewritten_from_v16_and_records_kept() {
        let api = ApiKey::Fetch;
        for v in 16..=api.valid_versions().max {
            let mut m = FetchResponse::default();
            let mut topic = fetch_response::FetchableTopicResponse::default();
            topic.partitions.push(
                fetch_response::PartitionData::default()
                    .with_partition_index(0)
                    .with_records(Some(Bytes::from_static(b"opaque-record-bytes"))),
            );
            m.responses.push(topic);
            m.node_endpoints.push(
                fetch_response::NodeEndpoint::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("real"))
                    .with_port(1),
            );
            let out = rewrite_response(
                api as i16,
                v,
                response_frame(api, v, &m),
                &TestDir::default(),
            )
            .unwrap();
            let (_, got): (_, FetchResponse) = decode_frame(api, v, &out);
            assert_eq!(got.node_endpoints[0].port, 19101);
            assert_eq!(
                got.responses[0].partitions[0].records.as_deref(),
                Some(&b"opaque-record-bytes"[..])
            );
        }
    }

    #[test]
    fn api_versions_capped_to_what_the_proxy_decodes() {
        let api = ApiKey::ApiVersions;
        for v in api.valid_versions().min..=api.valid_versions().max {
            let mut m = ApiVersionsResponse::default();
            m.api_keys = vec![
                ApiVersion::default()
                    .with_api_key(3)
                    .with_min_version(0)
                    .with_max_version(99),
                ApiVersion::default()
                    .with_api_key(0)
                    .with_min_version(0)
                    .with_max_version(50),
                // Opaque APIs keep the upstream's range.
                ApiVersion::default()
                    .with_api_key(12)
                    .with_min_version(0)
                    .with_max_version(42),
                // A vendor key far outside the known range stays too.
                ApiVersion::default()
                    .with_api_key(10001)
                    .with_min_version(0)
                    .with_max_version(1),
            ];
            let out = rewrite_response(
                api as i16,
                v,
                response_frame(api, v, &m),
                &TestDir::default(),
            )
            .unwrap();
            let (_, got): (_, ApiVersionsResponse) = decode_frame(api, v, &out);
            let find = |k: i16| got.api_keys.iter().find(|a| a.api_key == k).unwrap();
            assert_eq!(find(3).max_version, ApiKey::Metadata.valid_versions().max);
            assert_eq!(find(0).min_version, ApiKey::Produce.valid_versions().min);
            assert_eq!(find(0).max_version, ApiKey::Produce.valid_versions().max);
            assert_eq!(find(12).max_version, 42);
            assert_eq!(find(10001).max_version, 1);
        }
    }

    #[test]
    fn undecodable_response_is_an_error_not_a_panic() {
        let api = ApiKey::Metadata;
        let mut body = BytesMut::new();
        body.extend_from_slice(&77i32.to_be_bytes());
        body.extend_from_slice(&[0xff; 3]);
        let frame = crate::codec::frame_with_length(body);
        for v in [1, 9, 12] {
            let err = rewrite_response(api as i16, v, frame.clone(), &TestDir::default());
            assert!(err.is_err(), "v{v}");
        }
        let err = rewrite_response(
            api as i16,
            12,
            Bytes::from_static(&[0, 0, 0, 1, 0]),
            &TestDir::default(),
        );
        assert!(matches!(err, Err(RewriteError::Short)));
    }

    #[test]
    fn opaque_apis_pass_through_untouched() {
        let frame = Bytes::from_static(&[0, 0, 0, 4, 0, 0, 0, 1]);
        for key in [2i16, 8, 9, 11, 12, 14, 10001] {
            let out = rewrite_response(key, 3, frame.clone(), &TestDir::default()).unwrap();
            assert_eq!(out.as_ptr(), frame.as_ptr());
        }
    }

    #[test]
    fn describe_quorum_controller_listeners_are_removed() {
        use kafka_protocol::messages::describe_quorum_response::{Listener, Node};
        let api = ApiKey::DescribeQuorum;
        let mut m = DescribeQuorumResponse::default();
        m.nodes
            .push(Node::default().with_node_id(BrokerId(3)).with_listeners(
                vec![Listener::default()
                .with_name(StrBytes::from_static_str("CONTROLLER"))
                .with_host(StrBytes::from_static_str("controller-3.internal"))
                .with_port(9093)],
            ));
        let out = rewrite_response(
            api as i16,
            2,
            response_frame(api, 2, &m),
            &TestDir::default(),
        )
        .unwrap();
        let (_, got): (_, DescribeQuorumResponse) = decode_frame(api, 2, &out);
        assert_eq!(got.nodes.len(), 1);
        assert_eq!(got.nodes[0].node_id, BrokerId(3));
        assert!(got.nodes[0].listeners.is_empty());
        // Before v2 there are no listeners: not even decoded.
        let f = response_frame(api, 1, &DescribeQuorumResponse::default());
        let out = rewrite_response(api as i16, 1, f.clone(), &TestDir::default()).unwrap();
        assert_eq!(out.as_ptr(), f.as_ptr());
    }

    #[test]
    fn api_versions_v0_answer_to_a_newer_request_is_relayed_as_v0() {
        // An old broker answers ApiVersions v3 with a v0 body and UNSUPPORTED_VERSION.
        let api = ApiKey::ApiVersions;
        let mut m = ApiVersionsResponse::default().with_error_code(UNSUPPORTED_VERSION);
        m.api_keys = vec![ApiVersion::default()
            .with_api_key(18)
            .with_min_version(0)
            .with_max_version(2)];
        // ApiVersions responses always have header v0.
        let mut body = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(5)
            .encode(&mut body, 0)
            .unwrap();
        m.encode(&mut body, 0).unwrap();
        let frame = crate::codec::frame_with_length(body);
        let out = rewrite_response(api as i16, 3, frame, &TestDir::default()).unwrap();
        let (h, got): (_, ApiVersionsResponse) = decode_frame(api, 0, &out);
        assert_eq!(h.correlation_id, 5);
        assert_eq!(got.error_code, UNSUPPORTED_VERSION);
        assert_eq!(got.api_keys[0].max_version, 2);
    }

    #[test]
    fn a_response_claiming_a_huge_array_is_an_error_not_an_abort() {
        // Metadata v12: throttle time, then brokers as a compact array of u32::MAX - 1.
        let api = ApiKey::Metadata;
        let mut body = BytesMut::new();
        body.extend_from_slice(&77i32.to_be_bytes());
        body.extend_from_slice(&[0]); // header tagged fields
        body.extend_from_slice(&0i32.to_be_bytes());
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        let frame = crate::codec::frame_with_length(body);
        let err = rewrite_response(api as i16, 12, frame, &TestDir::default()).unwrap_err();
        assert!(err.to_string().contains("`brokers` claims"), "{err}");
    }
}
