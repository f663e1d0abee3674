//! Fuzzing on the stable toolchain: property tests that feed hostile bytes to every
//! parser of outside input — the frame reader, the request peek and header offsets,
//! the admission check, every request and response the proxy decodes, the skims of
//! Produce/Fetch responses (through `rewrite_response`), and the record-batch rewrite.
//!
//! Inputs are arbitrary bytes and structure-aware mutations (bit flips, interesting
//! integers written over counts and lengths, insertions, deletions, truncation, with
//! and without fixing up the frame length) of real frames captured from real clients
//! and brokers (`tests/corpus/captured/`, see `hardening_corpus.rs`), plus crafted
//! frames (`tests/corpus/crafted/`) that must always be refused cleanly: every crash
//! found becomes one of those.
//!
//! A crash here is a panic or, worse, the process aborting on an allocation that the
//! bounds check should have refused. The CI run is bounded (`KSC_FUZZ_CASES` cases per
//! property, 25,000 by default: seconds); set it higher for a longer run.
//! Proptest prints the seed and the minimal failing input of a failure.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, InitProducerIdRequest,
    InitProducerIdResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ProduceRequest, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_sidecar::codec::{self, FrameReader};
use kafka_sidecar::rewrite::{self, NodeDirectory};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

struct Frame {
    name: String,
    request: bool,
    api: i16,
    version: i16,
    bytes: Bytes,
}

fn corpus_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(sub)
}

/// Files are named `<source>-<q|r>-<api key>-v<version>-<n>.bin` and hold one frame,
/// length prefix included.
fn load(sub: &str) -> Vec<Frame> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(corpus_dir(sub)) else {
        return out;
    };
    for e in entries {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".bin") else {
            continue;
        };
        let parts: Vec<&str> = stem.split('-').collect();
        let n = parts.len();
        assert!(n >= 5, "corpus file name {name}");
        out.push(Frame {
            request: parts[n - 4] == "q",
            api: parts[n - 3].parse().unwrap(),
            version: parts[n - 2].trim_start_matches('v').parse().unwrap(),
            bytes: Bytes::from(std::fs::read(&path).unwrap()),
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn cases() -> u32 {
    std::env::var("KSC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25_000)
}

struct AnyDir;

impl NodeDirectory for AnyDir {
    fn local_endpoint(&self, node_id: i32, _host: &str, _port: i32) -> (StrBytes, i32) {
        (
            StrBytes::from_static_str("127.0.0.1"),
            20000i32.wrapping_add(node_id),
        )
    }
}

/// What producer identity does with a partition's record batches.
fn parse_records(records: &Bytes) {
    let _ = kafka_sidecar::producer_identity::batch::producer_of(records);
    let _ = kafka_sidecar::producer_identity::rewrite_batches(records, |s| (7, 1, s));
}

/// Everything the proxy does with a client request frame.
fn parse_request(frame: &Bytes) {
    if frame.len() < 12 {
        return;
    }
    let peek = codec::peek_request(frame);
    let _ = kafka_sidecar::apis::check_request(frame);
    for flexible in [false, true] {
        let _ = codec::request_body_offset(frame, flexible);
    }
    let v = peek.api_version;
    match ApiKey::try_from(peek.api_key) {
        Ok(ApiKey::Produce) => {
            let _ = codec::produce_acks(frame, v);
            if let Ok(req) = codec::try_decode_request::<ProduceRequest>(ApiKey::Produce, v, frame)
            {
                for t in &req.topic_data {
                    for p in &t.partition_data {
                        if let Some(records) = &p.records {
                            parse_records(records);
                        }
                    }
                }
            }
        }
        Ok(ApiKey::InitProducerId) => {
            let _ = codec::try_decode_request::<InitProducerIdRequest>(
                ApiKey::InitProducerId,
                v,
                frame,
            );
        }
        Ok(ApiKey::JoinGroup) => {
            let _ = codec::try_decode_request::<JoinGroupRequest>(ApiKey::JoinGroup, v, frame);
        }
        Ok(ApiKey::LeaveGroup) => {
            let _ = codec::try_decode_request::<LeaveGroupRequest>(ApiKey::LeaveGroup, v, frame);
        }
        Ok(ApiKey::ConsumerGroupHeartbeat) => {
            let _ = codec::try_decode_request::<ConsumerGroupHeartbeatRequest>(
                ApiKey::ConsumerGroupHeartbeat,
                v,
                frame,
            );
        }
        _ => {}
    }
}

/// Everything the proxy does with an upstream response frame to (api, version).
/// Returns the error of the typed decode of the group, producer-id and SASL
/// responses, if it was one of those and failed.
fn parse_response(api: i16, version: i16, frame: &Bytes) -> Option<String> {
    if frame.len() < 8 {
        return None;
    }
    let _ = codec::peek_response_correlation(frame);
    let _ = rewrite::rewrite_response(api, version, frame.clone(), &AnyDir);
    fn err<T>(r: anyhow::Result<T>) -> Option<String> {
        r.err().map(|e| format!("{e:#}"))
    }
    let v = version;
    match ApiKey::try_from(api) {
        Ok(k @ ApiKey::InitProducerId) => err(codec::decode_response::<InitProducerIdResponse>(
            k, v, frame,
        )),
        Ok(k @ ApiKey::JoinGroup) => err(codec::decode_response::<JoinGroupResponse>(k, v, frame)),
        Ok(k @ ApiKey::LeaveGroup) => {
            err(codec::decode_response::<LeaveGroupResponse>(k, v, frame))
        }
        Ok(k @ ApiKey::SaslHandshake) => {
            err(codec::decode_response::<SaslHandshakeResponse>(k, v, frame))
        }
        Ok(k @ ApiKey::SaslAuthenticate) => err(
            codec::decode_response::<SaslAuthenticateResponse>(k, v, frame),
        ),
        Ok(k @ ApiKey::ConsumerGroupHeartbeat) => err(codec::decode_response::<
            ConsumerGroupHeartbeatResponse,
        >(k, v, frame)),
        _ => None,
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    /// Write a big-endian interesting value (count or length) at a position.
    Interesting(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

const INTERESTING: [&[u8]; 10] = [
    &[0x7f, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0xfe],
    &[0x80, 0x00, 0x00, 0x00],
    &[0x7f, 0xff],
    &[0xff, 0xff],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0x80, 0x80, 0x80, 0x80, 0x80],
    &[0x00, 0x00, 0x10, 0x00],
    &[0x00],
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::SetByte(p, b)),
        (any::<usize>(), 0u8..INTERESTING.len() as u8)
            .prop_map(|(p, i)| Mutation::Interesting(p, i)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(p, v)| Mutation::Insert(p, v)),
        (any::<usize>(), 1usize..16).prop_map(|(p, n)| Mutation::Delete(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..32).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
    ]
}

/// Applies mutations to the body (after the length prefix), never to the 4-byte api
/// key/version of a request (the frame stays one of the API it was), and optionally
/// fixes up the length prefix so the frame reader hands the result on.
fn mutate(frame: &[u8], ms: &[Mutation], fix_len: bool) -> Bytes {
    // The length, then a request's api key and version (a response's correlation id).
    let keep = 8;
    let mut v = frame.to_vec();
    for m in ms {
        let span = v.len().saturating_sub(keep).max(1);
        let at = |p: usize| keep + p % span;
        match m {
            Mutation::FlipBit(p, b) if v.len() > keep => {
                let i = at(*p);
                v[i] ^= 1 << b;
            }
            Mutation::SetByte(p, x) if v.len() > keep => {
                let i = at(*p);
                v[i] = *x;
            }
            Mutation::Interesting(p, i) => {
                let i0 = at(*p).min(v.len());
                let bytes = INTERESTING[*i as usize];
                for (k, b) in bytes.iter().enumerate() {
                    if i0 + k < v.len() {
                        v[i0 + k] = *b;
                    }
                }
            }
            Mutation::Insert(p, bytes) => {
                let i = at(*p).min(v.len());
                v.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(p, n) if v.len() > keep => {
                let i = at(*p).min(v.len());
                let end = (i + n).min(v.len());
                v.drain(i..end);
            }
            Mutation::Truncate(p) if v.len() > keep => {
                let i = at(*p).min(v.len());
                v.truncate(i);
            }
            Mutation::Duplicate(p, n) if v.len() > keep => {
                let i = at(*p).min(v.len());
                let end = (i + n).min(v.len());
                let d = v[i..end].to_vec();
                v.splice(end..end, d);
            }
            _ => {}
        }
    }
    if fix_len && v.len() >= 4 {
        let len = (v.len() - 4) as i32;
        v[..4].copy_from_slice(&len.to_be_bytes());
    }
    Bytes::from(v)
}

fn runner(name: &str) -> TestRunner {
    let cfg = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    println!("{name}: {} cases", cfg.cases);
    TestRunner::new(cfg)
}

#[test]
fn corpus_is_there() {
    let captured = load("captured");
    assert!(
        captured.len() >= 20,
        "tests/corpus/captured has {} frames",
        captured.len()
    );
    let apis: std::collections::BTreeSet<(bool, i16)> =
        captured.iter().map(|f| (f.request, f.api)).collect();
    println!(
        "corpus: {} frames, {} (direction, api) kinds",
        captured.len(),
        apis.len()
    );
}

/// Crafted frames (regressions and the frames): refused or parsed, never a crash.
#[test]
fn crafted_frames_are_handled() {
    let crafted = load("crafted");
    assert!(!crafted.is_empty());
    for f in &crafted {
        if f.request {
            parse_request(&f.bytes);
            if f.name.contains("huge") {
                let e = kafka_sidecar::apis::check_request(&f.bytes).expect_err(&f.name);
                println!("{}: {e}", f.name);
            }
        } else {
            let typed = parse_response(f.api, f.version, &f.bytes);
            if f.name.contains("huge") {
                let e = rewrite::rewrite_response(f.api, f.version, f.bytes.clone(), &AnyDir)
                    .err()
                    .map(|e| e.to_string());
                let e = if kafka_sidecar::apis::on_response(f.api, f.version).is_some() {
                    e
                } else {
                    typed
                };
                let e = e.unwrap_or_else(|| panic!("{} was not refused", f.name));
                assert!(e.contains("claims"), "{}: {e}", f.name);
                println!("{}: {e}", f.name);
            }
        }
    }
}

#[test]
fn mutated_real_frames_never_crash_a_parser() {
    let corpus = load("captured");
    assert!(!corpus.is_empty());
    let t = Instant::now();
    let mut runner = runner("mutated frames");
    let strategy = (
        0..corpus.len(),
        proptest::collection::vec(mutation(), 1..6),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(i, ms, fix)| {
            let f = &corpus[i];
            let m = mutate(&f.bytes, &ms, fix);
            if f.request {
                parse_request(&m);
            } else {
                let _ = parse_response(f.api, f.version, &m);
            }
            Ok(())
        })
        .unwrap();
    println!("mutated frames: {:?}", t.elapsed());
}

/// Byte streams (concatenated, mutated frames or noise) through the frame reader, each
/// frame it yields through the request parsers.
#[test]
fn frame_reader_and_request_parsers_on_streams() {
    let corpus: Vec<Frame> = load("captured").into_iter().filter(|f| f.request).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let t = Instant::now();
    let mut runner = runner("request streams");
    let strategy = (
        proptest::collection::vec(
            (0..corpus.len(), proptest::collection::vec(mutation(), 0..3)),
            0..6,
        ),
        proptest::collection::vec(any::<u8>(), 0..64),
        1usize..4096,
    );
    runner
        .run(&strategy, |(picks, noise, max)| {
            let mut stream = BytesMut::new();
            for (i, ms) in &picks {
                stream.extend_from_slice(&mutate(&corpus[*i].bytes, ms, true));
            }
            stream.extend_from_slice(&noise);
            let stream = stream.freeze();
            rt.block_on(async {
                let mut r = FrameReader::new(&stream[..], max.max(12), 8);
                for _ in 0..64 {
                    match r.next_frame().await {
                        Ok(Some(f)) => parse_request(&f),
                        _ => break,
                    }
                }
            });
            Ok(())
        })
        .unwrap();
    println!("request streams: {:?}", t.elapsed());
}

/// Arbitrary bytes as a response body of every API the proxy inspects, at every version.
#[test]
fn arbitrary_response_bodies() {
    let t = Instant::now();
    let mut runner = runner("arbitrary responses");
    let apis: Vec<i16> = (0..100).filter(|k| ApiKey::try_from(*k).is_ok()).collect();
    let strategy = (
        0..apis.len(),
        0i16..20,
        proptest::collection::vec(any::<u8>(), 0..200),
    );
    runner
        .run(&strategy, |(i, v, body)| {
            let mut f = BytesMut::new();
            f.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
            f.extend_from_slice(&1i32.to_be_bytes());
            f.extend_from_slice(&body);
            let _ = parse_response(apis[i], v, &f.freeze());
            Ok(())
        })
        .unwrap();
    println!("arbitrary responses: {:?}", t.elapsed());
}

/// Record batches of real Produce requests, mutated directly (the request around them
/// stays valid, so every mutation reaches the batch parsers).
#[test]
fn mutated_record_batches() {
    let batches: Vec<Bytes> = load("captured")
        .into_iter()
        .filter(|f| f.request && f.api == 0)
        .filter_map(|f| {
            codec::try_decode_request::<ProduceRequest>(ApiKey::Produce, f.version, &f.bytes).ok()
        })
        .flat_map(|r| r.topic_data.into_iter())
        .flat_map(|t| t.partition_data.into_iter())
        .filter_map(|p| p.records)
        .collect();
    assert!(
        !batches.is_empty(),
        "the corpus has Produce requests with records"
    );
    let t = Instant::now();
    let mut runner = runner("record batches");
    let strategy = (
        0..batches.len(),
        proptest::collection::vec(mutation(), 1..6),
    );
    runner
        .run(&strategy, |(i, ms)| {
            // mutate() spares the first 8 bytes (a frame's header): pad them.
            let mut padded = vec![0u8; 8];
            padded.extend_from_slice(&batches[i]);
            let m = mutate(&padded, &ms, false).slice(8..);
            parse_records(&m);
            Ok(())
        })
        .unwrap();
    println!("record batches: {:?}", t.elapsed());
}
