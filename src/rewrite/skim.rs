//! Skimming Produce (v10+) and Fetch (v16+) responses for their one field the proxy
//! rewrites: the top-level `node_endpoints` (KIP-951, tag 0). A broker fills it only
//! when it reports a new leader, so nearly every response has none, and decoding
//! each one fully (every topic and partition into owned structs) just to find that
//! out would cost the hot path allocations per partition. The skim walks the bytes
//! with no allocation and says whether the tag is there; the caller decodes fully
//! only then. `None` means the bytes do not parse as expected: the caller falls back
//! to the full decoder, which reports the problem.

/// Whether a Produce response body (after the header) carries `node_endpoints`.
pub fn produce_has_node_endpoints(body: &[u8], version: i16) -> Option<bool> {
    if !(10..=13).contains(&version) {
        return None;
    }
    let mut c = Cursor { b: body, at: 0 };
    for _ in 0..c.compact_len()? {
        // TopicProduceResponse
        if version <= 12 {
            c.compact_string()?;
        } else {
            c.skip(16)?; // topic id
        }
        for _ in 0..c.compact_len()? {
            // PartitionProduceResponse: index, error, base offset, append time, log start
            c.skip(4 + 2 + 8 + 8 + 8)?;
            for _ in 0..c.compact_len()? {
                // BatchIndexAndErrorMessage
                c.skip(4)?;
                c.compact_string()?;
                c.tagged_fields()?;
            }
            c.compact_string()?; // error message
            c.tagged_fields()?;
        }
        c.tagged_fields()?;
    }
    c.skip(4)?; // throttle time
    c.top_level_has_tag0()
}

/// Whether a Fetch response body (after the header) carries `node_endpoints`.
#[cfg(test)]
pub fn fetch_has_node_endpoints(body: &[u8], version: i16) -> Option<bool> {
    let at = fetch_tail_at(body, version)?;
    Cursor { b: body, at }.top_level_has_tag0()
}

/// Where a Fetch response body's (v16+) top-level tagged fields start. Bytes after
/// them are not looked at.
pub fn fetch_tail_at(body: &[u8], version: i16) -> Option<usize> {
    if !(16..=18).contains(&version) {
        return None;
    }
    let mut c = Cursor { b: body, at: 0 };
    c.skip(4 + 2 + 4)?; // throttle time, error code, session id
    for _ in 0..c.compact_len()? {
        c.skip(16)?; // topic id (v13+)
        for _ in 0..c.compact_len()? {
            // PartitionData: index, error, high watermark, last stable, log start
            c.skip(4 + 2 + 8 + 8 + 8)?;
            for _ in 0..c.compact_len()? {
                c.skip(8 + 8)?; // aborted transaction: producer id, first offset
                c.tagged_fields()?;
            }
            c.skip(4)?; // preferred read replica
            c.compact_bytes()?; // records
            c.tagged_fields()?;
        }
        c.tagged_fields()?;
    }
    Some(c.at)
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.at.checked_add(n)?;
        (end <= self.b.len()).then(|| self.at = end)
    }

    fn uvarint(&mut self) -> Option<u64> {
        let (v, n) = crate::codec::read_uvarint(self.b.get(self.at..)?)?;
        self.at += n;
        Some(u64::from(v))
    }

    /// A compact (nullable) array's element count; null counts as none.
    fn compact_len(&mut self) -> Option<u64> {
        let n = self.uvarint()?.saturating_sub(1);
        // Every element takes at least one byte: a bigger count is garbage, and
        // refusing it keeps a hostile count from spinning the loops.
        (n <= (self.b.len() - self.at) as u64).then_some(n)
    }

    fn compact_string(&mut self) -> Option<()> {
        let n = self.uvarint()?.saturating_sub(1);
        self.skip(usize::try_from(n).ok()?)
    }

    fn compact_bytes(&mut self) -> Option<()> {
        self.compact_string()
    }

    fn tagged_fields(&mut self) -> Option<()> {
        let end = crate::codec::skip_tagged_fields(self.b, self.at)?;
        (end <= self.b.len()).then(|| self.at = end)
    }

    /// A tagged-field count (not offset by one like arrays).
    fn compact_len_plain(&mut self) -> Option<u64> {
        let n = self.uvarint()?;
        (n <= (self.b.len() - self.at) as u64).then_some(n)
    }

    /// The top-level tagged fields, which must end the body: is tag 0 among them?
    fn top_level_has_tag0(&mut self) -> Option<bool> {
        let mut found = false;
        for _ in 0..self.compact_len_plain()? {
            let tag = self.uvarint()?;
            let size = self.uvarint()?;
            // An empty node_endpoints array would be one byte (count 0 + 1).
            found |= tag == 0 && size > 1;
            self.skip(usize::try_from(size).ok()?)?;
        }
        (self.at == self.b.len()).then_some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::{
        fetch_response, produce_response, BrokerId, FetchResponse, ProduceResponse, TopicName,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use std::collections::BTreeMap;

    fn encode<T: Encodable>(m: &T, v: i16) -> Bytes {
        let mut b = BytesMut::new();
        m.encode(&mut b, v).unwrap();
        b.freeze()
    }

    fn tags() -> BTreeMap<i32, Bytes> {
        BTreeMap::from([(7, Bytes::from_static(b"later"))])
    }

    /// A Produce response exercising every variable-length part, with or without
    /// node endpoints.
    fn produce(endpoints: bool) -> ProduceResponse {
        let mut partition = produce_response::PartitionProduceResponse::default()
            .with_index(2)
            .with_error_code(6)
            .with_error_message(Some(StrBytes::from_static_str("not leader")))
            .with_record_errors(vec![produce_response::BatchIndexAndErrorMessage::default()
                .with_batch_index(1)
                .with_batch_index_error_message(Some(StrBytes::from_static_str("bad")))]);
        partition.current_leader = produce_response::LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(3))
            .with_leader_epoch(9);
        partition.unknown_tagged_fields = tags();
        let mut topic = produce_response::TopicProduceResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("events")))
            .with_partition_responses(vec![
                partition,
                produce_response::PartitionProduceResponse::default(),
            ]);
        topic.unknown_tagged_fields = tags();
        let mut m = ProduceResponse::default()
            .with_responses(vec![topic, Default::default()])
            .with_throttle_time_ms(5);
        m.unknown_tagged_fields = tags();
        if endpoints {
            m.node_endpoints = vec![produce_response::NodeEndpoint::default()
                .with_node_id(BrokerId(3))
                .with_host(StrBytes::from_static_str("b3"))
                .with_port(9092)];
        }
        m
    }

    fn fetch(endpoints: bool) -> FetchResponse {
        let mut partition = fetch_response::PartitionData::default()
            .with_partition_index(1)
            .with_aborted_transactions(Some(vec![fetch_response::AbortedTransaction::default()
                .with_producer_id(kafka_protocol::messages::ProducerId(4))
                .with_first_offset(10)]))
            .with_records(Some(Bytes::from_static(&[0xAB; 300])));
        partition.current_leader = fetch_response::LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(2))
            .with_leader_epoch(1);
        partition.unknown_tagged_fields = tags();
        let topic = fetch_response::FetchableTopicResponse::default().with_partitions(vec![
            partition,
            fetch_response::PartitionData::default().with_records(None),
        ]);
        let mut m = FetchResponse::default().with_responses(vec![topic, Default::default()]);
        m.unknown_tagged_fields = tags();
        if endpoints {
            m.node_endpoints = vec![fetch_response::NodeEndpoint::default()
                .with_node_id(BrokerId(2))
                .with_host(StrBytes::from_static_str("b2"))
                .with_port(9092)];
        }
        m
    }

    #[test]
    fn produce_skim_agrees_with_the_encoder_at_every_flexible_version() {
        for v in 10..=13 {
            assert_eq!(
                produce_has_node_endpoints(&encode(&produce(false), v), v),
                Some(false),
                "v{v}"
            );
            assert_eq!(
                produce_has_node_endpoints(&encode(&produce(true), v), v),
                Some(true),
                "v{v}"
            );
            let empty = ProduceResponse::default();
            assert_eq!(
                produce_has_node_endpoints(&encode(&empty, v), v),
                Some(false),
                "v{v}"
            );
        }
    }

    #[test]
    fn fetch_skim_agrees_with_the_encoder_at_every_version_with_endpoints() {
        for v in 16..=18 {
            assert_eq!(
                fetch_has_node_endpoints(&encode(&fetch(false), v), v),
                Some(false),
                "v{v}"
            );
            assert_eq!(
                fetch_has_node_endpoints(&encode(&fetch(true), v), v),
                Some(true),
                "v{v}"
            );
        }
    }

    #[test]
    fn truncated_or_padded_bodies_are_not_skimmed() {
        let body = encode(&fetch(true), 17);
        for cut in [0, 1, 10, body.len() / 2, body.len() - 1] {
            assert_eq!(
                fetch_has_node_endpoints(&body[..cut], 17),
                None,
                "cut at {cut}"
            );
        }
        let mut padded = body.to_vec();
        padded.push(0);
        assert_eq!(fetch_has_node_endpoints(&padded, 17), None);
        let body = encode(&produce(false), 11);
        assert_eq!(
            produce_has_node_endpoints(&body[..body.len() - 1], 11),
            None
        );
        // A huge element count cannot make the skim loop.
        assert_eq!(
            produce_has_node_endpoints(&[0xff, 0xff, 0xff, 0xff, 0x0f], 11),
            None
        );
    }

    #[test]
    fn versions_without_the_field_are_not_skimmed() {
        assert_eq!(produce_has_node_endpoints(&[], 9), None);
        assert_eq!(fetch_has_node_endpoints(&[], 15), None);
    }
}
