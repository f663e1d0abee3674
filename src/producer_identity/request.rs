//! One bounded walk of a Produce request body: where each topic's name or id, each
//! partition's index and records lie. Producer identity decides and patches from it,
//! and topic identity patches the ids it found, so the request is neither decoded nor
//! walked a second time (see [`crate::codec::bounds::visit`]).

use std::ops::Range;

use kafka_protocol::messages::ProduceRequest;

use crate::codec::bounds::{self, Bounded, BoundsError, Prim, Spot};

/// What the walk found; every position is in the body it walked.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Walked {
    pub acks: i16,
    /// A transactional id is set (not null).
    pub transactional: bool,
    pub topics: Vec<Topic>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Topic {
    /// The name's bytes (v0-12; empty from v13 on).
    pub name: Range<usize>,
    /// The topic id's 16 bytes (v13+).
    pub id: Option<usize>,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Partition {
    pub index: i32,
    /// The records' bytes (empty when null or empty).
    pub records: Range<usize>,
}

/// Walks a Produce request body at `version`; a body that lies is refused as by
/// [`bounds::check`].
pub(crate) fn walk(version: i16, body: &[u8]) -> Result<Walked, BoundsError> {
    let layout = ProduceRequest::LAYOUT;
    let flexible = version >= layout.flexible_from;
    let mut w = Walked::default();
    bounds::visit(layout, version, body, &mut |s: Spot| {
        let at = s.at;
        match (s.owner, s.field, s.prim) {
            (_, "transactional_id", Prim::Str) => {
                w.transactional = s.len > 0 || !null_string(body, at, flexible)
            }
            (_, "acks", Prim::I16) => {
                w.acks = i16::from_be_bytes([body[at], body[at + 1]]);
            }
            ("topic_data", "name", Prim::Str) => w.topics.push(Topic {
                name: at..at + s.len,
                id: None,
                partitions: Vec::new(),
            }),
            ("topic_data", "topic_id", Prim::Uuid) => w.topics.push(Topic {
                name: at..at,
                id: Some(at),
                partitions: Vec::new(),
            }),
            ("partition_data", "index", Prim::I32) => {
                let index = i32::from_be_bytes(body[at..at + 4].try_into().expect("4 bytes"));
                if let Some(t) = w.topics.last_mut() {
                    t.partitions.push(Partition {
                        index,
                        records: at + 4..at + 4,
                    });
                }
            }
            ("partition_data", "records", Prim::Bytes) => {
                if let Some(p) = w.topics.last_mut().and_then(|t| t.partitions.last_mut()) {
                    p.records = at..at + s.len;
                }
            }
            _ => {}
        }
    })?;
    Ok(w)
}

/// Whether the empty string value at `at` is null: its length prefix (just before it)
/// says -1 (int16 -1, or compact length 0).
fn null_string(body: &[u8], at: usize, flexible: bool) -> bool {
    if flexible {
        at >= 1 && body[at - 1] == 0
    } else {
        at >= 2 && body[at - 2..at] == [0xff, 0xff]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn body(req: &ProduceRequest, v: i16) -> Bytes {
        let mut b = BytesMut::new();
        req.encode(&mut b, v).unwrap();
        b.freeze()
    }

    #[test]
    fn finds_every_topic_partition_and_records_in_every_version() {
        for v in 3..=13 {
            for txn in [None, Some(""), Some("tx")] {
                let mut req = ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(5)
                    .with_transactional_id(txn.map(|t| StrBytes::from_static_str(t).into()));
                for t in 0..3u8 {
                    let mut topic = if v >= 13 {
                        TopicProduceData::default()
                            .with_topic_id(uuid::Uuid::from_u128(u128::from(t) + 1))
                    } else {
                        TopicProduceData::default()
                            .with_name(TopicName(StrBytes::from_string(format!("topic-{t}"))))
                    };
                    for p in 0..i32::from(t) {
                        let records = (p != 1).then(|| Bytes::from(vec![t; 10 + p as usize]));
                        topic.partition_data.push(
                            PartitionProduceData::default()
                                .with_index(p + 7)
                                .with_records(records),
                        );
                    }
                    req.topic_data.push(topic);
                }
                let b = body(&req, v);
                let w = walk(v, &b).unwrap();
                assert_eq!(w.acks, -1);
                assert_eq!(w.transactional, txn.is_some(), "v{v} {txn:?}");
                assert_eq!(w.topics.len(), 3);
                for (t, topic) in w.topics.iter().enumerate() {
                    if v >= 13 {
                        let at = topic.id.unwrap();
                        assert_eq!(&b[at..at + 16], &(t as u128 + 1).to_be_bytes());
                        assert!(topic.name.is_empty());
                    } else {
                        assert_eq!(&b[topic.name.clone()], format!("topic-{t}").as_bytes());
                        assert_eq!(topic.id, None);
                    }
                    assert_eq!(topic.partitions.len(), t);
                    for (p, part) in topic.partitions.iter().enumerate() {
                        assert_eq!(part.index, p as i32 + 7);
                        let want = if p == 1 {
                            vec![]
                        } else {
                            vec![t as u8; 10 + p]
                        };
                        assert_eq!(&b[part.records.clone()], &want[..]);
                    }
                }
            }
        }
    }

    #[test]
    fn a_body_that_lies_is_refused() {
        let req = ProduceRequest::default().with_topic_data(vec![TopicProduceData::default()]);
        let mut b = BytesMut::from(&body(&req, 7)[..]);
        let n = b.len();
        // The partition count of the one topic: far more than the bytes left.
        b[n - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(walk(7, &b).is_err());
    }
}
