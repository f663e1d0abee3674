//! The one table of the APIs the proxy looks into, and why.
//!
//! Everything else that depends on "which APIs does the proxy decode" is derived
//! from [`TABLE`] or checked against it by the tests below:
//! - the dispatch of client requests ([`crate::intercept`] matches on [`OnRequest`],
//!   exhaustively) and of upstream responses ([`crate::rewrite`] matches on
//!   [`OnResponse`], exhaustively): an API missing from the table is relayed as opaque
//!   bytes, never half-handled;
//! - ApiVersions capping ([`crate::api_versions`]): an API the proxy decodes on the
//!   client path is advertised only at the versions its layout and kafka-protocol
//!   both cover, so a newer broker cannot turn a feature off with a version the proxy
//!   cannot read;
//! - bounded decoding ([`crate::codec::bounds`]): the layouts a client request or
//!   an upstream answer is checked against before anything decodes it;
//! - the hardening tests' lists of decoded APIs.
//!
//! A row also covers APIs the proxy only *sends* on its own connections (metadata
//! refresh, SASL, the control plane): their answers are decoded through the same
//! bounded layouts, but client traffic of those APIs stays opaque and uncapped.

use kafka_protocol::messages::{self, ApiKey};
use kafka_protocol::protocol::VersionRange;

use crate::codec;
use crate::codec::bounds::{Bounded, BoundsError, Message};

/// What the proxy does with a client request of an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRequest {
    /// Producer identity after a switch (batches re-sequenced under the new
    /// cluster's producer id).
    Produce,
    /// Producer identity: the client's producer id mapped into the proxy's namespace.
    InitProducerId,
    /// Group membership: remembered, to leave the group at a switch.
    JoinGroup,
    LeaveGroup,
    ConsumerGroupHeartbeat,
    /// Group membership: refused while the client's KIP-848 member has not rejoined
    /// after a switch (it would fetch at the old cluster's positions); otherwise relayed.
    Fetch,
    /// Group membership: a KIP-848 member's commit refused until it rejoined after a
    /// switch (its offsets are the old cluster's); consumer positions: accepted
    /// commits recorded.
    OffsetCommit,
    /// Consumer positions: waits while the group's positions are carried after a switch.
    OffsetFetch,
    /// Consumer positions: offsets committed inside a transaction (exactly-once
    /// consumers), held until the transaction ends.
    TxnOffsetCommit,
    /// Consumer positions: a committed transaction's offsets become its groups'.
    EndTxn,
    /// Versions capped; asked too new, answered as a broker would (v0, UNSUPPORTED_VERSION).
    ApiVersions,
    /// Refused while the proxy holds the upstream credentials.
    Sasl,
}

/// What the proxy does with an upstream response of an API before the client gets it
/// (after any feature hook of its request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnResponse {
    /// Broker addresses replaced by local listeners.
    Metadata,
    FindCoordinator,
    DescribeCluster,
    /// KIP-951 node endpoints replaced (only present on leader-change errors).
    NodeEndpoints,
    /// Controller listeners removed (KIP-853).
    DescribeQuorum,
    /// Versions capped to what the proxy decodes.
    ApiVersions,
}

/// One API the proxy looks into.
#[derive(Debug)]
pub struct Api {
    pub key: ApiKey,
    /// Client requests: what the proxy does with them (None: relayed as they are).
    pub request: Option<OnRequest>,
    /// Upstream answers to client requests: rewritten from version `response_from` on.
    pub response: Option<OnResponse>,
    pub response_from: i16,
    /// Layout a client request is checked against at admission (and decoded with).
    pub request_layout: Option<&'static Message>,
    /// Whether client requests are checked against `request_layout` at admission.
    /// False for a hot API decoded only in rare states (the decode checks it then).
    pub admission_check: bool,
    /// Layout an upstream answer is checked against before anything decodes it
    /// (answers to client requests and to the proxy's own).
    pub response_layout: Option<&'static Message>,
    /// Whether client traffic of this API is looked into: then ApiVersions offers
    /// only versions the proxy can decode. False for APIs the proxy only sends itself.
    pub client_path: bool,
    /// A feature hook checks every answer to a client request of this API against its
    /// layout (not only after a switch).
    pub answers_always_checked: bool,
    /// Topic ids and leader epochs in its messages are translated
    /// ([`crate::topic_identity`]), both ways, at every version offered.
    pub translated: bool,
    /// Offered to clients at most at this version: the newer ones carry topic ids or
    /// leader epochs the proxy does not translate yet (the README lists them).
    pub client_max: Option<i16>,
    pub why: &'static str,
}

const fn layout<T: Bounded>() -> Option<&'static Message> {
    Some(T::LAYOUT)
}

const fn api(key: ApiKey, why: &'static str) -> Api {
    Api {
        key,
        request: None,
        response: None,
        response_from: 0,
        request_layout: None,
        admission_check: true,
        response_layout: None,
        client_path: false,
        answers_always_checked: false,
        translated: false,
        client_max: None,
        why,
    }
}

impl Api {
    const fn on_request(mut self, step: OnRequest, l: Option<&'static Message>) -> Self {
        self.request = Some(step);
        self.request_layout = l;
        self.client_path = true;
        self
    }
    /// [`Self::on_request`] for a hot API the step rarely decodes: not walked at
    /// admission, so relaying it costs nothing more.
    const fn on_request_rarely(mut self, step: OnRequest, l: Option<&'static Message>) -> Self {
        self = self.on_request(step, l);
        self.admission_check = false;
        self
    }
    const fn on_response(mut self, step: OnResponse, from: i16) -> Self {
        self.response = Some(step);
        self.response_from = from;
        self.client_path = true;
        self
    }
    /// Client answers decoded by a feature hook: always, or only in some states
    /// (producer identity after a switch).
    const fn hooked(mut self, always: bool) -> Self {
        self.client_path = true;
        self.answers_always_checked = always;
        self
    }
    /// Topic ids and leader epochs translated (requests and answers are walked with
    /// the layouts, so both must cover every version offered).
    const fn translated(mut self, request: Option<&'static Message>) -> Self {
        self.translated = true;
        self.client_path = true;
        if request.is_some() {
            self.request_layout = request;
        }
        self
    }
    /// Offered to clients up to `v` only (see [`Api::client_max`]).
    const fn capped(mut self, v: i16) -> Self {
        self.client_path = true;
        self.client_max = Some(v);
        self
    }
    const fn answers(mut self, l: Option<&'static Message>) -> Self {
        self.response_layout = l;
        self
    }
}

/// Every API the proxy decodes, in one place.
pub static TABLE: &[Api] = &[
    api(ApiKey::Produce, "node endpoints rewritten (v10+); producer identity after a switch; topic ids (v13), leader epochs")
        .on_request(OnRequest::Produce, layout::<messages::ProduceRequest>())
        .on_response(OnResponse::NodeEndpoints, 10)
        .translated(None)
        .answers(layout::<messages::ProduceResponse>()),
    api(ApiKey::Fetch, "node endpoints rewritten (v16+); topic ids, leader epochs; control plane reads; refused until a KIP-848 member rejoined after a switch")
        .on_request_rarely(OnRequest::Fetch, layout::<messages::FetchRequest>())
        .on_response(OnResponse::NodeEndpoints, 16)
        .translated(layout::<messages::FetchRequest>())
        .answers(layout::<messages::FetchResponse>()),
    api(ApiKey::Metadata, "broker addresses rewritten; topic ids, leader epochs; metadata refresh")
        .on_response(OnResponse::Metadata, 0)
        .translated(layout::<messages::MetadataRequest>())
        .answers(layout::<messages::MetadataResponse>()),
    api(ApiKey::FindCoordinator, "coordinator addresses rewritten")
        .on_response(OnResponse::FindCoordinator, 0)
        .answers(layout::<messages::FindCoordinatorResponse>()),
    api(ApiKey::DescribeCluster, "broker addresses rewritten")
        .on_response(OnResponse::DescribeCluster, 0)
        .answers(layout::<messages::DescribeClusterResponse>()),
    api(ApiKey::ShareFetch, "share groups: topic ids not translated yet, so not offered; node endpoints rewritten")
        .capped(-1)
        .on_response(OnResponse::NodeEndpoints, 0)
        .answers(layout::<messages::ShareFetchResponse>()),
    api(ApiKey::ShareAcknowledge, "share groups: topic ids not translated yet, so not offered; node endpoints rewritten")
        .capped(-1)
        .on_response(OnResponse::NodeEndpoints, 0)
        .answers(layout::<messages::ShareAcknowledgeResponse>()),
    api(ApiKey::DescribeQuorum, "controller listeners removed (v2+)")
        .on_response(OnResponse::DescribeQuorum, 2)
        .answers(layout::<messages::DescribeQuorumResponse>()),
    api(ApiKey::ApiVersions, "versions capped; version negotiation of the proxy's own connections")
        .on_request(OnRequest::ApiVersions, layout::<messages::ApiVersionsRequest>())
        .on_response(OnResponse::ApiVersions, 0)
        .answers(layout::<messages::ApiVersionsResponse>()),
    api(ApiKey::InitProducerId, "producer identity after a switch")
        .on_request(OnRequest::InitProducerId, layout::<messages::InitProducerIdRequest>())
        .hooked(false)
        .answers(layout::<messages::InitProducerIdResponse>()),
    api(ApiKey::SaslHandshake, "refused from clients: the proxy holds the credentials; the proxy's own SASL")
        .on_request(OnRequest::Sasl, None)
        .answers(layout::<messages::SaslHandshakeResponse>()),
    api(ApiKey::SaslAuthenticate, "refused from clients: the proxy holds the credentials; the proxy's own SASL")
        .on_request(OnRequest::Sasl, None)
        .answers(layout::<messages::SaslAuthenticateResponse>()),
    api(ApiKey::JoinGroup, "group membership left at a switch")
        .on_request(OnRequest::JoinGroup, layout::<messages::JoinGroupRequest>())
        .hooked(true)
        .answers(layout::<messages::JoinGroupResponse>()),
    api(ApiKey::LeaveGroup, "group membership left at a switch")
        .on_request(OnRequest::LeaveGroup, layout::<messages::LeaveGroupRequest>())
        .answers(layout::<messages::LeaveGroupResponse>()),
    api(ApiKey::ConsumerGroupHeartbeat, "group membership left at a switch; topic ids of assignments")
        .on_request(OnRequest::ConsumerGroupHeartbeat, layout::<messages::ConsumerGroupHeartbeatRequest>())
        .hooked(true)
        .translated(None)
        .answers(layout::<messages::ConsumerGroupHeartbeatResponse>()),
    api(ApiKey::CreateTopics, "topic ids of created topics; the control plane creates its topics")
        .translated(None)
        .answers(layout::<messages::CreateTopicsResponse>()),
    api(ApiKey::ListOffsets, "leader epochs; the control plane reads its logs' bounds")
        .translated(layout::<messages::ListOffsetsRequest>())
        .answers(layout::<messages::ListOffsetsResponse>()),
    api(ApiKey::OffsetCommit, "leader epochs; refused until a KIP-848 member rejoined after a switch; v10 names topics by id, which the proxy cannot walk yet (kafka-protocol 0.18)")
        .on_request(OnRequest::OffsetCommit, layout::<messages::OffsetCommitRequest>())
        .translated(None)
        .answers(layout::<messages::OffsetCommitResponse>()),
    api(ApiKey::OffsetFetch, "leader epochs in answers; waits for carried consumer positions after a switch; v10 names topics by id in requests, not walked yet")
        .on_request(OnRequest::OffsetFetch, layout::<messages::OffsetFetchRequest>())
        .translated(None)
        .answers(layout::<messages::OffsetFetchResponse>())
        .capped(9),
    api(ApiKey::TxnOffsetCommit, "leader epochs; consumer positions committed in a transaction; v6 names topics by id, which the proxy cannot walk yet (kafka-protocol 0.18)")
        .on_request(OnRequest::TxnOffsetCommit, layout::<messages::TxnOffsetCommitRequest>())
        .translated(None)
        .answers(layout::<messages::TxnOffsetCommitResponse>()),
    api(ApiKey::EndTxn, "consumer positions: a committed transaction's offsets become its groups'")
        .on_request(OnRequest::EndTxn, layout::<messages::EndTxnRequest>())
        .answers(layout::<messages::EndTxnResponse>()),
    api(ApiKey::OffsetForLeaderEpoch, "leader epochs both ways")
        .translated(layout::<messages::OffsetForLeaderEpochRequest>())
        .answers(layout::<messages::OffsetForLeaderEpochResponse>()),
    api(ApiKey::DeleteTopics, "topic ids (v6)")
        .translated(layout::<messages::DeleteTopicsRequest>())
        .answers(layout::<messages::DeleteTopicsResponse>()),
    api(ApiKey::DescribeTopicPartitions, "topic ids and leader epochs in answers")
        .translated(None)
        .answers(layout::<messages::DescribeTopicPartitionsResponse>()),
    api(ApiKey::ConsumerGroupDescribe, "topic ids of assignments in answers")
        .translated(None)
        .answers(layout::<messages::ConsumerGroupDescribeResponse>()),
    api(ApiKey::ShareGroupHeartbeat, "share groups: topic ids not translated yet, so not offered")
        .capped(-1),
    api(ApiKey::ShareGroupDescribe, "share groups: topic ids not translated yet, so not offered")
        .capped(-1),
    api(ApiKey::DescribeShareGroupOffsets, "share groups: topic ids not translated yet, so not offered")
        .capped(-1),
    api(ApiKey::AlterShareGroupOffsets, "share groups: topic ids not translated yet, so not offered")
        .capped(-1),
    api(ApiKey::DeleteShareGroupOffsets, "share groups: topic ids not translated yet, so not offered")
        .capped(-1),
];

/// The row of `api_key`, if the proxy looks into that API at all.
pub fn lookup(api_key: i16) -> Option<&'static Api> {
    // Asked for every request and answer on the relay: an index, not a scan of the table.
    static INDEX: std::sync::LazyLock<Vec<Option<&'static Api>>> = std::sync::LazyLock::new(|| {
        let len = TABLE.iter().map(|a| a.key as usize + 1).max().unwrap_or(0);
        let mut index = vec![None; len];
        for a in TABLE {
            index[a.key as usize] = Some(a);
        }
        index
    });
    INDEX.get(usize::try_from(api_key).ok()?).copied().flatten()
}

/// What the proxy does with a client request of `api_key`.
pub fn on_request(api_key: i16) -> Option<OnRequest> {
    lookup(api_key)?.request
}

/// What the proxy does with the answer to a client request of `api_key` at `version`.
pub fn on_response(api_key: i16, version: i16) -> Option<OnResponse> {
    let a = lookup(api_key)?;
    a.response.filter(|_| version >= a.response_from)
}

/// Whether the answer to a client request of `api_key` at `version` is decoded (and
/// so checked against its layout) whatever the proxy's state: a hostile answer is
/// refused then, never relayed.
pub fn answer_always_checked(api_key: i16, version: i16) -> bool {
    on_response(api_key, version).is_some()
        || lookup(api_key).is_some_and(|a| a.answers_always_checked)
}

/// The version range the proxy handles on the client path for an API, or None where
/// it relays the API as opaque bytes (any version the upstream speaks is fine then).
/// It is what kafka-protocol knows of the API, narrowed to the layouts the proxy
/// checks its requests and answers against: a version outside them could not be
/// decoded, so it is never offered.
pub fn client_versions(api_key: i16) -> Option<VersionRange> {
    let a = lookup(api_key).filter(|a| a.client_path)?;
    let mut r = a.key.valid_versions();
    // Only what the proxy decodes on the client path narrows the range (an API it
    // merely caps, or calls itself, has layouts that do not matter to clients).
    let decoded = a.request.is_some() || a.response.is_some() || a.translated;
    let layouts = [a.request_layout, a.response_layout];
    for l in layouts.into_iter().flatten().filter(|_| decoded) {
        r.min = r.min.max(l.min);
        r.max = r.max.min(l.max);
    }
    if let Some(max) = a.client_max {
        r.max = r.max.min(max);
    }
    Some(r)
}

/// The layout client requests of `api` are checked against.
pub fn request_layout(api: ApiKey) -> Option<&'static Message> {
    lookup(api as i16)?.request_layout
}

/// The layout answers of `api` are checked against.
pub fn response_layout(api: ApiKey) -> Option<&'static Message> {
    lookup(api as i16)?.response_layout
}

/// Checks a client request frame (length prefix included) whose API the proxy may
/// decode: a frame that lies about its contents is refused here, at admission, so the
/// connection is closed before anything decodes it. Other APIs and versions the proxy
/// has no layout for pass (they are relayed as opaque bytes).
pub fn check_request(frame: &[u8]) -> Result<(), BoundsError> {
    if frame.len() < 12 {
        return Ok(()); // the frame reader refuses these
    }
    let peek = codec::peek_request(frame);
    let Some(api) = lookup(peek.api_key) else {
        return Ok(());
    };
    let Some(layout) = api.request_layout.filter(|_| api.admission_check) else {
        return Ok(());
    };
    let flexible_header = api.key.request_header_version(peek.api_version) >= 2;
    let Some(at) = codec::request_body_offset(frame, flexible_header) else {
        // A header that overruns the frame: nothing decodes it, the broker refuses it.
        return Ok(());
    };
    codec::check_body(layout, peek.api_version, &frame[at..])
}

/// Checks a response frame (length prefix included) of `api` at `version` against its
/// layout, for code that decodes it only if it can (and would otherwise relay a lie).
/// Versions without a layout pass.
pub fn check_response(api: ApiKey, version: i16, frame: &[u8]) -> Result<(), BoundsError> {
    let Some(layout) = response_layout(api) else {
        return Ok(());
    };
    let Some(at) = codec::response_body_offset(frame, api.response_header_version(version)) else {
        return Ok(());
    };
    codec::check_body(layout, version, &frame[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_once() {
        for (i, a) in TABLE.iter().enumerate() {
            assert!(
                TABLE[i + 1..].iter().all(|b| b.key != a.key),
                "{:?} twice",
                a.key
            );
        }
    }

    #[test]
    fn what_is_decoded_has_a_layout() {
        for a in TABLE {
            // Client requests the proxy decodes (SASL ones are refused, never decoded).
            if !matches!(a.request, None | Some(OnRequest::Sasl)) {
                assert!(
                    a.request_layout.is_some(),
                    "{:?}: decoded request without a layout",
                    a.key
                );
            }
            // Every answer the proxy decodes (rewritten, hooked, translated, or its
            // own); a row that only caps or translates requests decodes none.
            let answers = a.response.is_some()
                || a.request.is_some()
                || crate::topic_identity::layouts(a.key).1.is_some()
                || !a.client_path;
            if !answers {
                continue;
            }
            assert!(
                a.response_layout.is_some(),
                "{:?}: decoded answer without a layout",
                a.key
            );
        }
    }

    /// The APIs offered to clients below what kafka-protocol knows, and why (the
    /// README's table of capped versions says the same). A new kafka-protocol or a
    /// layout that grows changes this list on purpose.
    #[test]
    fn capped_client_versions_are_the_known_ones() {
        let mut capped = vec![];
        for a in TABLE.iter().filter(|a| a.client_path) {
            let ours = client_versions(a.key as i16).unwrap();
            if ours.max < a.key.valid_versions().max {
                capped.push((a.key, ours.max));
            }
        }
        let dropped = [
            ApiKey::ShareFetch,
            ApiKey::ShareAcknowledge,
            ApiKey::ShareGroupHeartbeat,
            ApiKey::ShareGroupDescribe,
            ApiKey::DescribeShareGroupOffsets,
            ApiKey::AlterShareGroupOffsets,
            ApiKey::DeleteShareGroupOffsets,
        ];
        let mut expected = vec![
            // kafka-protocol 0.18 decodes InitProducerId requests up to v5 only (v6,
            // KIP-939 two-phase commit, has fields it does not read).
            (ApiKey::InitProducerId, 5),
            // v10 names topics by id; kafka-protocol 0.18 stops at v9.
            (ApiKey::OffsetCommit, 9),
            (ApiKey::OffsetFetch, 9),
        ];
        expected.extend(dropped.iter().map(|k| (*k, -1)));
        capped.sort_by_key(|(k, _)| *k as i16);
        expected.sort_by_key(|(k, _)| *k as i16);
        assert_eq!(capped, expected);
    }

    /// Every API whose messages the topic identity translates is marked so in the
    /// table (or its translation would never run), and its walks cover every version
    /// offered.
    #[test]
    fn translated_apis_are_walked_at_every_offered_version() {
        for a in TABLE.iter().filter(|a| a.translated) {
            let ours = client_versions(a.key as i16).unwrap();
            let (down, up) = crate::topic_identity::layouts(a.key);
            assert!(down.is_some() || up.is_some(), "{:?}", a.key);
            for l in [down, up].into_iter().flatten() {
                assert!(
                    l.min <= ours.min && l.max >= ours.max,
                    "{:?}: offered {ours:?}, walked {}..={}",
                    a.key,
                    l.min,
                    l.max
                );
            }
        }
        for key in (0..=100).filter_map(|k| ApiKey::try_from(k).ok()) {
            let (down, up) = crate::topic_identity::layouts(key);
            if down.is_some() || up.is_some() {
                assert!(
                    lookup(key as i16).is_some_and(|a| a.translated),
                    "{key:?} has a translation the table does not run"
                );
            }
        }
    }

    #[test]
    fn client_path_apis_are_capped_and_own_calls_are_not() {
        for a in TABLE {
            let capped = client_versions(a.key as i16).is_some();
            assert_eq!(capped, a.client_path, "{:?}", a.key);
            if a.request.is_some() || a.response.is_some() {
                assert!(a.client_path, "{:?}", a.key);
            }
        }
        assert!(client_versions(ApiKey::Heartbeat as i16).is_none());
        assert!(client_versions(ApiKey::SyncGroup as i16).is_none());
    }

    #[test]
    fn response_steps_start_at_their_version() {
        assert_eq!(on_response(ApiKey::Produce as i16, 9), None);
        assert_eq!(
            on_response(ApiKey::Produce as i16, 10),
            Some(OnResponse::NodeEndpoints)
        );
        assert_eq!(on_response(ApiKey::Fetch as i16, 15), None);
        assert_eq!(on_response(ApiKey::DescribeQuorum as i16, 1), None);
        assert_eq!(on_response(ApiKey::OffsetCommit as i16, 9), None);
    }
}
