//! The layouts against kafka-protocol itself, and lying frames against the walk.
//!
//! Oracle: kafka-protocol's encoder and decoder. (1) Every message it encodes, at every
//! version, is accepted by the walk, which consumes exactly its bytes. (2) Random
//! bodies generated from the layouts here (arrays of 0-3 elements, strings, bytes,
//! known and unknown tagged fields) are decoded by kafka-protocol consuming exactly
//! their bytes, and what it re-encodes is accepted by the walk and decodes to the same
//! message: a field missing, extra or of the wrong type in a layout fails this with
//! overwhelming probability. (3) The same bodies with one array count replaced by a
//! huge one are refused by the walk (if they were not, the decode that follows would
//! abort this test process).
//!
//! Seeds: proptest prints the failing seed and keeps it in
//! `proptest-regressions/`; `PROPTEST_CASES` raises the number of cases.

use super::*;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages;
use kafka_protocol::protocol::Encodable;
use proptest::prelude::*;

/// A message type under test, with kafka-protocol's encoder and decoder behind it.
struct Case {
    layout: &'static Message,
    /// Decodes `body` at a version, re-encodes the result. Err if the decoder refuses
    /// or leaves bytes over.
    roundtrip: fn(i16, &[u8]) -> Result<Vec<u8>, String>,
    /// kafka-protocol's encoding of `T::default()`.
    default: fn(i16) -> Result<Vec<u8>, String>,
    /// Decodes through codec's bounded entry point.
    guarded: fn(i16, Bytes) -> Result<(), DecodeErrorKind>,
}

#[derive(Debug, PartialEq, Eq)]
enum DecodeErrorKind {
    Refused,
    Other,
}

fn roundtrip<T: Decodable + Encodable + PartialEq + std::fmt::Debug>(
    v: i16,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    let mut b = Bytes::copy_from_slice(body);
    let m = T::decode(&mut b, v).map_err(|e| format!("decode: {e:#}"))?;
    if !b.is_empty() {
        return Err(format!("decoder left {} bytes", b.len()));
    }
    let mut out = BytesMut::new();
    m.encode(&mut out, v)
        .map_err(|e| format!("encode: {e:#}"))?;
    let mut again = out.clone().freeze();
    let m2 = T::decode(&mut again, v).map_err(|e| format!("re-decode: {e:#}"))?;
    if m2 != m {
        return Err(format!("re-decoded message differs: {m:?} vs {m2:?}"));
    }
    Ok(out.to_vec())
}

fn default_encoded<T: Encodable + Default>(v: i16) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::new();
    T::default()
        .encode(&mut out, v)
        .map_err(|e| format!("{e:#}"))?;
    Ok(out.to_vec())
}

fn guarded<T: Bounded>(v: i16, body: Bytes) -> Result<(), DecodeErrorKind> {
    match crate::codec::decode_body::<T>(v, body) {
        Ok(_) => Ok(()),
        Err(e) if e.is_refusal() => Err(DecodeErrorKind::Refused),
        Err(_) => Err(DecodeErrorKind::Other),
    }
}

macro_rules! cases {
    ($($t:ident),* $(,)?) => {
        vec![$(Case {
            layout: <messages::$t as Bounded>::LAYOUT,
            roundtrip: roundtrip::<messages::$t>,
            default: default_encoded::<messages::$t>,
            guarded: guarded::<messages::$t>,
        }),*]
    };
}

fn all_cases() -> Vec<Case> {
    cases![
        ProduceRequest,
        InitProducerIdRequest,
        JoinGroupRequest,
        LeaveGroupRequest,
        ConsumerGroupHeartbeatRequest,
        ApiVersionsRequest,
        OffsetCommitResponse,
        MetadataResponse,
        FindCoordinatorResponse,
        DescribeClusterResponse,
        ApiVersionsResponse,
        SaslHandshakeResponse,
        SaslAuthenticateResponse,
        InitProducerIdResponse,
        JoinGroupResponse,
        LeaveGroupResponse,
        ConsumerGroupHeartbeatResponse,
        ProduceResponse,
        FetchResponse,
        ShareFetchResponse,
        ShareAcknowledgeResponse,
        DescribeQuorumResponse,
        CreateTopicsResponse,
        ListOffsetsResponse,
        MetadataRequest,
        FetchRequest,
        ListOffsetsRequest,
        OffsetForLeaderEpochRequest,
        OffsetForLeaderEpochResponse,
        OffsetCommitRequest,
        OffsetFetchRequest,
        OffsetFetchResponse,
        TxnOffsetCommitRequest,
        TxnOffsetCommitResponse,
        EndTxnRequest,
        EndTxnResponse,
        DescribeTopicPartitionsRequest,
        DescribeTopicPartitionsResponse,
        ConsumerGroupDescribeResponse,
        DeleteTopicsRequest,
        DeleteTopicsResponse,
    ]
}

/// Writes random bodies that follow a layout (see the module doc).
pub(crate) struct Gen {
    state: u64,
    flexible: bool,
    version: i16,
    /// Replace the count of the array with this index (in writing order) by a huge one.
    lie_at: Option<u32>,
    arrays: u32,
    pub(crate) lied: bool,
}

impl Gen {
    pub(crate) fn new(seed: u64, msg: &Message, version: i16, lie_at: Option<u32>) -> Self {
        Gen {
            state: seed | 1,
            flexible: version >= msg.flexible_from,
            version,
            lie_at,
            arrays: 0,
            lied: false,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic from the seed proptest prints.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn uvarint(out: &mut Vec<u8>, mut v: u32) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub(crate) fn message(&mut self, msg: &Message) -> Vec<u8> {
        let mut out = vec![];
        self.fields(msg.fields, &mut out);
        out
    }

    fn fields(&mut self, fields: &[Field], out: &mut Vec<u8>) {
        for f in fields.iter().filter(|f| f.tag.is_none()) {
            if f.in_version(self.version) {
                self.value(f.ty, out);
            }
        }
        if self.flexible {
            let mut tags: Vec<(u32, Vec<u8>)> = vec![];
            for f in fields.iter() {
                if let Some(tag) = f.tag {
                    if f.in_version(self.version) && self.below(2) == 0 {
                        let mut content = vec![];
                        self.value(f.ty, &mut content);
                        tags.push((tag, content));
                    }
                }
            }
            if self.below(4) == 0 {
                // An unknown tag (no message here uses tags this high).
                let len = self.below(4) as usize;
                let content = (0..len).map(|_| self.next() as u8).collect();
                tags.push((100 + self.below(50) as u32, content));
            }
            Self::uvarint(out, tags.len() as u32);
            for (tag, content) in tags {
                Self::uvarint(out, tag);
                Self::uvarint(out, content.len() as u32);
                out.extend_from_slice(&content);
            }
        }
    }

    fn len(&mut self, p: Prim, n: usize, out: &mut Vec<u8>) {
        if self.flexible {
            Self::uvarint(out, n as u32 + 1);
        } else if p == Prim::Str {
            out.extend_from_slice(&(n as i16).to_be_bytes());
        } else {
            out.extend_from_slice(&(n as i32).to_be_bytes());
        }
    }

    fn prim(&mut self, p: Prim, out: &mut Vec<u8>) {
        match p {
            Prim::Bool => out.push(self.below(2) as u8),
            Prim::I8 => out.push(self.next() as u8),
            Prim::I16 | Prim::U16 => out.extend_from_slice(&(self.next() as u16).to_be_bytes()),
            Prim::I32 => out.extend_from_slice(&(self.next() as u32).to_be_bytes()),
            Prim::I64 => out.extend_from_slice(&self.next().to_be_bytes()),
            Prim::Uuid => {
                out.extend_from_slice(&self.next().to_be_bytes());
                out.extend_from_slice(&self.next().to_be_bytes());
            }
            Prim::Str => {
                let n = self.below(6) as usize;
                self.len(p, n, out);
                for _ in 0..n {
                    out.push(b'a' + self.below(26) as u8);
                }
            }
            Prim::Bytes => {
                let n = self.below(8) as usize;
                self.len(p, n, out);
                for _ in 0..n {
                    out.push(self.next() as u8);
                }
            }
        }
    }

    fn count(&mut self, out: &mut Vec<u8>) -> usize {
        let n = self.below(4) as usize;
        let index = self.arrays;
        self.arrays += 1;
        if self.lie_at == Some(index) {
            self.lied = true;
            if self.flexible {
                Self::uvarint(out, u32::MAX);
            } else {
                out.extend_from_slice(&i32::MAX.to_be_bytes());
            }
        } else if self.flexible {
            Self::uvarint(out, n as u32 + 1);
        } else {
            out.extend_from_slice(&(n as i32).to_be_bytes());
        }
        n
    }

    fn value(&mut self, ty: Ty, out: &mut Vec<u8>) {
        match ty {
            Ty::Prim(p) => self.prim(p, out),
            Ty::Struct(fields) => self.fields(fields, out),
            Ty::OptStruct(fields) => {
                if self.below(2) == 0 {
                    out.push(0xff);
                } else {
                    out.push(1);
                    self.fields(fields, out);
                }
            }
            Ty::Array(fields) => {
                for _ in 0..self.count(out) {
                    self.fields(fields, out);
                }
            }
            Ty::ArrayOf(p) => {
                for _ in 0..self.count(out) {
                    self.prim(p, out);
                }
            }
        }
    }
}

#[test]
fn every_encoder_output_of_the_default_message_is_walked_exactly() {
    for case in all_cases() {
        let l = case.layout;
        for v in l.versions() {
            let body = (case.default)(v).unwrap_or_else(|e| panic!("{} v{v}: {e}", l.name));
            let used = check(l, v, &body).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(used, body.len(), "{} v{v}", l.name);
        }
    }
}

/// The frame of issue 12: a JoinGroup v5 request whose protocols array claims
/// 2^31-1 entries, 40 bytes in all. Decoding it unguarded aborts the process.
pub(crate) fn join_group_v5_huge_count() -> Bytes {
    let mut body = BytesMut::new();
    body.extend_from_slice(&11i16.to_be_bytes()); // JoinGroup
    body.extend_from_slice(&5i16.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(-1i16).to_be_bytes()); // client id: null
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(b"g"); // group id
    body.extend_from_slice(&10_000i32.to_be_bytes()); // session timeout
    body.extend_from_slice(&10_000i32.to_be_bytes()); // rebalance timeout
    body.extend_from_slice(&0i16.to_be_bytes()); // member id ""
    body.extend_from_slice(&(-1i16).to_be_bytes()); // group instance id null
    body.extend_from_slice(&8i16.to_be_bytes());
    body.extend_from_slice(b"consumer");
    body.extend_from_slice(&i32::MAX.to_be_bytes()); // protocols: 2^31-1 entries
    crate::codec::frame_with_length(body)
}

#[test]
fn the_issue_frame_is_refused_with_a_clear_error() {
    let frame = join_group_v5_huge_count();
    assert!(frame.len() < 50, "a small frame: {} bytes", frame.len());
    let err = crate::apis::check_request(&frame).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("JoinGroupRequest v5") && text.contains("`protocols` claims 2147483647"),
        "{text}"
    );
    let decoded: Option<messages::JoinGroupRequest> =
        crate::codec::decode_request(messages::ApiKey::JoinGroup, 5, &frame);
    assert!(decoded.is_none());
}

#[test]
fn a_lying_known_tag_size_is_refused() {
    // ProduceResponse v10 with node_endpoints (tag 0) declaring 1 byte but holding 2
    // entries' worth: the decoder would read past the declared size.
    let mut m = messages::ProduceResponse::default();
    m.node_endpoints = vec![Default::default(), Default::default()];
    let mut body = BytesMut::new();
    m.encode(&mut body, 10).unwrap();
    let mut body = body.to_vec();
    // Layout: responses (1 byte: 0+1), throttle (4), tag count (1), tag 0, size.
    assert_eq!(body[6], 0, "tag 0");
    body[7] = 1;
    let err = check(messages::ProduceResponse::LAYOUT, 10, &body).unwrap_err();
    assert!(err.to_string().contains("node_endpoints"), "{err}");
}

fn arbitrary_case() -> impl Strategy<Value = (usize, i16, u64)> {
    let n = all_cases().len();
    (0..n, any::<u16>(), any::<u64>()).prop_map(|(i, v, seed)| {
        let l = all_cases()[i].layout;
        let span = (l.max - l.min + 1) as u16;
        (i, l.min + (v % span) as i16, seed)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Bodies that follow a layout are what kafka-protocol decodes and re-encodes.
    #[test]
    fn generated_bodies_agree_with_kafka_protocol((i, v, seed) in arbitrary_case()) {
        let case = &all_cases()[i];
        let l = case.layout;
        let body = Gen::new(seed, l, v, None).message(l);
        prop_assert_eq!(check(l, v, &body).map_err(|e| TestCaseError::fail(e.to_string()))?, body.len());
        let again = (case.roundtrip)(v, &body)
            .map_err(|e| TestCaseError::fail(format!("{} v{v} seed {seed}: {e}", l.name)))?;
        prop_assert_eq!(check(l, v, &again).map_err(|e| TestCaseError::fail(e.to_string()))?, again.len());
        prop_assert_eq!((case.guarded)(v, Bytes::from(body)), Ok(()));
    }

    /// One array count replaced by a huge one: refused, never decoded.
    #[test]
    fn a_huge_count_anywhere_is_refused((i, v, seed) in arbitrary_case(), which in 0u32..6) {
        let case = &all_cases()[i];
        let l = case.layout;
        let mut g = Gen::new(seed, l, v, Some(which));
        let body = g.message(l);
        if g.lied {
            let err = check(l, v, &body).unwrap_err();
            prop_assert!(matches!(err, BoundsError::Malformed { .. }), "{}", err);
            prop_assert_eq!((case.guarded)(v, Bytes::from(body)), Err(DecodeErrorKind::Refused));
        }
    }

    /// Any bytes at all: the walk ends (refusing or not) and a guarded decode never
    /// aborts the process.
    #[test]
    fn arbitrary_bytes_never_crash((i, v, _seed) in arbitrary_case(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let case = &all_cases()[i];
        let _ = (case.guarded)(v, Bytes::from(body));
    }
}

/// Every layout the proxy walks (the API table's, the topic identity's) is one of the
/// cases above, so the oracle tests cover it.
#[test]
fn every_layout_in_use_is_property_tested() {
    let cases = all_cases();
    // By name and versions: a `const` layout has no single address to compare.
    let tested = |l: &'static Message| {
        cases
            .iter()
            .any(|c| (c.layout.name, c.layout.min, c.layout.max) == (l.name, l.min, l.max))
    };
    for a in crate::apis::TABLE {
        let (down, up) = crate::topic_identity::layouts(a.key);
        for l in [a.request_layout, a.response_layout, down, up]
            .into_iter()
            .flatten()
        {
            assert!(tested(l), "{:?}: {} has no property test", a.key, l.name);
        }
    }
}
