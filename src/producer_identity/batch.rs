//! Record batch v2 headers (KIP-98): reading a partition's producer, sequences and
//! checksums, and rewriting producer id, epoch and base sequence with the CRC-32C
//! updated for the change. Records, compressed or not, are never touched.

use bytes::{Buf, Bytes, BytesMut};

const BATCH_LENGTH_OFFSET: usize = 8;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
pub(crate) const BATCH_HEADER_LEN: usize = 61;
const TRANSACTIONAL_FLAG: i16 = 0x10;
/// Producer id, epoch and base sequence: the bytes a remapped batch changes.
const IDENTITY: std::ops::Range<usize> = PRODUCER_ID_OFFSET..BASE_SEQUENCE_OFFSET + 4;
const IDENTITY_LEN: usize = IDENTITY.end - IDENTITY.start;
/// From how many record bytes after the header the CRC is updated for the change
/// instead of recomputed over the batch: the update costs about as much as a hardware
/// CRC-32C over a few KiB, and then stays the same for any batch size.
const CRC_UPDATE_FROM: usize = 4096;

/// What one partition's records say about their producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    /// No producer id (plain producer), or not a v2 batch.
    None,
    /// Transactional: never remapped (a transaction cannot move between clusters).
    Transactional,
    /// Idempotent: the batches of one producer id and epoch, consecutive sequences.
    Idempotent {
        id: i64,
        epoch: i16,
        first_seq: i32,
        count: i32,
        fingerprint: u64,
    },
}

/// Reads the headers of every batch in a partition's records, with bounds checks.
pub fn producer_of(records: &[u8]) -> anyhow::Result<Producer> {
    let mut pos = 0usize;
    let mut out = Producer::None;
    let mut fingerprint: u64 = 0xcbf2_9ce4_8422_2325;
    while pos < records.len() {
        let rest = &records[pos..];
        anyhow::ensure!(
            rest.len() >= BATCH_HEADER_LEN,
            "truncated record batch header at byte {pos}"
        );
        if rest[MAGIC_OFFSET] != 2 {
            return Ok(Producer::None);
        }
        let batch_len = (&rest[BATCH_LENGTH_OFFSET..]).get_i32();
        anyhow::ensure!(
            batch_len >= 49,
            "record batch length {batch_len} is too small"
        );
        let end = 12 + batch_len as usize;
        anyhow::ensure!(
            end <= rest.len(),
            "record batch overruns its partition data"
        );
        let attributes = (&rest[ATTRIBUTES_OFFSET..]).get_i16();
        if attributes & TRANSACTIONAL_FLAG != 0 {
            return Ok(Producer::Transactional);
        }
        let id = (&rest[PRODUCER_ID_OFFSET..]).get_i64();
        if id < 0 {
            return Ok(Producer::None);
        }
        let epoch = (&rest[PRODUCER_EPOCH_OFFSET..]).get_i16();
        let seq = (&rest[BASE_SEQUENCE_OFFSET..]).get_i32();
        let last_delta = (&rest[LAST_OFFSET_DELTA_OFFSET..]).get_i32();
        anyhow::ensure!(
            (0..i32::MAX).contains(&last_delta),
            "record batch last offset delta {last_delta} is invalid"
        );
        let crc = (&rest[CRC_OFFSET..]).get_u32();
        for b in crc.to_be_bytes() {
            fingerprint = (fingerprint ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        out = match out {
            Producer::None => Producer::Idempotent {
                id,
                epoch,
                first_seq: seq,
                count: last_delta + 1,
                fingerprint,
            },
            Producer::Idempotent {
                id: i,
                epoch: e,
                first_seq,
                count,
                ..
            } => {
                anyhow::ensure!(
                    i == id && e == epoch,
                    "one partition's batches name two producers"
                );
                anyhow::ensure!(
                    seq == first_seq.wrapping_add(count) & i32::MAX,
                    "one partition's batches are not consecutive"
                );
                Producer::Idempotent {
                    id,
                    epoch,
                    first_seq,
                    count: count.saturating_add(last_delta + 1),
                    fingerprint,
                }
            }
            Producer::Transactional => unreachable!("returned above"),
        };
        pos += end;
    }
    Ok(out)
}

/// The upstream sequence of a client sequence in a stream with `base`. Sequences wrap
/// from i32::MAX to 0, so the offset is taken modulo 2^31.
pub fn map_sequence(base: i32, client_seq: i32) -> i32 {
    (i64::from(client_seq) - i64::from(base)).rem_euclid(1 << 31) as i32
}

/// Rewrites producer id, epoch and base sequence of every v2 batch in `records`
/// (`map` gets the client's base sequence and returns the new id, epoch, sequence),
/// recomputing each batch's CRC-32C. Returns the new records and the batch count.
pub fn rewrite_batches(
    records: &Bytes,
    map: impl FnMut(i32) -> (i64, i16, i32),
) -> anyhow::Result<(Bytes, u64)> {
    let mut out = BytesMut::from(&records[..]);
    let n = patch_batches(&mut out, map)?;
    Ok((out.freeze(), n))
}

/// [`rewrite_batches`] in place: only the 14 header bytes of producer id, epoch and
/// base sequence and the 4 of the CRC change in each batch; the records (compressed or
/// not) are read by the CRC but never moved. Returns the batch count. On an error the
/// batches before the faulty one are already patched.
pub fn patch_batches(
    records: &mut [u8],
    mut map: impl FnMut(i32) -> (i64, i16, i32),
) -> anyhow::Result<u64> {
    let mut pos = 0usize;
    let mut n = 0;
    while pos < records.len() {
        let rest = &records[pos..];
        anyhow::ensure!(
            rest.len() >= BATCH_HEADER_LEN,
            "truncated record batch header at byte {pos}"
        );
        let batch_len = (&rest[BATCH_LENGTH_OFFSET..]).get_i32();
        anyhow::ensure!(
            batch_len >= 49,
            "record batch length {batch_len} is too small"
        );
        let end = pos + 12 + batch_len as usize;
        anyhow::ensure!(
            end <= records.len(),
            "record batch overruns its partition data"
        );
        anyhow::ensure!(
            rest[MAGIC_OFFSET] == 2,
            "record batch magic {} is not 2",
            rest[MAGIC_OFFSET]
        );
        let client_seq = (&rest[BASE_SEQUENCE_OFFSET..]).get_i32();
        let (id, epoch, seq) = map(client_seq);
        let batch = &mut records[pos..end];
        let before: [u8; IDENTITY_LEN] = batch[IDENTITY].try_into().expect("14 bytes");
        batch[PRODUCER_ID_OFFSET..PRODUCER_ID_OFFSET + 8].copy_from_slice(&id.to_be_bytes());
        batch[PRODUCER_EPOCH_OFFSET..PRODUCER_EPOCH_OFFSET + 2]
            .copy_from_slice(&epoch.to_be_bytes());
        batch[BASE_SEQUENCE_OFFSET..BASE_SEQUENCE_OFFSET + 4].copy_from_slice(&seq.to_be_bytes());
        let crc = if batch.len() - IDENTITY.end < CRC_UPDATE_FROM {
            crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
        } else {
            let old = (&batch[CRC_OFFSET..]).get_u32();
            crc_update::patched(old, &before, &batch[IDENTITY], batch.len() - IDENTITY.end)
        };
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        pos = end;
        n += 1;
    }
    Ok(n)
}

/// CRC-32C updated for a change of a few bytes, without reading the rest of the batch.
///
/// The CRC is affine in the message over GF(2): for two messages of one length,
/// `crc(a) ^ crc(b)` is the CRC (initial value 0, no final xor) of `a ^ b`. Changing
/// bytes that are followed by `n` unchanged bytes changes the CRC by the CRC of the
/// change times x^(8n) modulo the CRC polynomial, and x^(8n) is a product of at most 64
/// precomputed powers x^(2^k).
mod crc_update {
    /// CRC-32C's polynomial, bit-reflected (bit 31 is the coefficient of x^0).
    const POLY: u32 = 0x82F6_3B78;

    /// a * b modulo POLY, both reflected.
    const fn mul(a: u32, mut b: u32) -> u32 {
        let mut product = 0;
        let mut i = 0;
        while i < 32 {
            if a & (1 << (31 - i)) != 0 {
                product ^= b;
            }
            // b *= x
            b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
            i += 1;
        }
        product
    }

    /// x^(2^k) modulo POLY.
    const X_POW_2K: [u32; 64] = {
        let mut t = [0u32; 64];
        t[0] = 1 << 30; // x^1
        let mut k = 1;
        while k < 64 {
            t[k] = mul(t[k - 1], t[k - 1]);
            k += 1;
        }
        t
    };

    /// x^(8n) modulo POLY: what n zero bytes after a CRC register do to it.
    fn x_pow_8n(n: usize) -> u32 {
        let mut p = 1 << 31; // x^0
        let mut bits = (n as u64) << 3;
        let mut k = 0;
        while bits != 0 {
            if bits & 1 != 0 {
                p = mul(X_POW_2K[k], p);
            }
            bits >>= 1;
            k += 1;
        }
        p
    }

    /// The CRC of a message whose CRC was `crc`, after `before` became `after` (same
    /// length) with `trailing` unchanged bytes after them.
    pub(super) fn patched(crc: u32, before: &[u8], after: &[u8], trailing: usize) -> u32 {
        debug_assert_eq!(before.len(), after.len());
        let change = crc32c::crc32c(before) ^ crc32c::crc32c(after);
        crc ^ mul(x_pow_8n(trailing), change)
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        proptest! {
            /// The update equals the CRC computed over the changed message, for changes
            /// anywhere and any length after them.
            #[test]
            fn update_equals_recomputing(
                mut msg in proptest::collection::vec(any::<u8>(), 1..20_000),
                at in any::<prop::sample::Index>(),
                change in proptest::collection::vec(any::<u8>(), 1..32),
            ) {
                let at = at.index(msg.len());
                let len = change.len().min(msg.len() - at);
                let old = crc32c::crc32c(&msg);
                let before = msg[at..at + len].to_vec();
                msg[at..at + len].copy_from_slice(&change[..len]);
                let trailing = msg.len() - at - len;
                let updated = super::patched(old, &before, &msg[at..at + len], trailing);
                prop_assert_eq!(updated, crc32c::crc32c(&msg));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    fn batch(
        producer_id: i64,
        epoch: i16,
        base_seq: i32,
        n: i32,
        compression: Compression,
    ) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i64::from(i),
                sequence: base_seq.wrapping_add(i),
                timestamp: 1_700_000_000_000,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("value-{i}"))),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn decode_all(b: &Bytes) -> Vec<Record> {
        let mut b = b.clone();
        let mut out = vec![];
        while b.has_remaining() {
            // The decoder verifies the CRC-32C of each batch.
            let set = RecordBatchDecoder::decode(&mut b).expect("valid batch, CRC checked");
            out.extend(set.records);
        }
        out
    }

    #[test]
    fn rewrite_sets_identity_and_a_valid_crc() {
        let b = batch(4242, 3, 100, 5, Compression::None);
        let (out, n) = rewrite_batches(&b, |seq| (77, 0, seq - 100)).unwrap();
        assert_eq!(n, 1);
        let recs = decode_all(&out);
        assert_eq!(recs.len(), 5);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.producer_id, 77);
            assert_eq!(r.producer_epoch, 0);
            assert_eq!(
                r.sequence, i as i32,
                "records keep their offsets from the new base"
            );
            assert_eq!(r.value.as_deref(), Some(format!("value-{i}").as_bytes()));
        }
    }

    /// Batches long enough for the CRC to be updated rather than recomputed: the result
    /// is what recomputing gives, and a batch that arrived with a wrong CRC keeps a wrong
    /// one (the broker refuses it as corrupt, as it would without the proxy).
    #[test]
    fn large_batches_get_their_crc_updated() {
        let mut all = BytesMut::new();
        for (seq, n) in [(10, 400), (410, 900)] {
            all.extend_from_slice(&batch(9, 1, seq, n, Compression::None));
        }
        assert!(all.len() > 3 * CRC_UPDATE_FROM);
        let mut patched = all.clone();
        assert_eq!(patch_batches(&mut patched, |s| (5, 0, s - 10)).unwrap(), 2);
        let recs = decode_all(&patched.clone().freeze());
        assert_eq!(recs.len(), 1300);
        assert!(recs.iter().all(|r| r.producer_id == 5));
        let mut pos = 0;
        while pos < patched.len() {
            let end = pos + 12 + (&patched[pos + BATCH_LENGTH_OFFSET..]).get_i32() as usize;
            let batch = &patched[pos..end];
            let crc = (&batch[CRC_OFFSET..]).get_u32();
            assert_eq!(crc, crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]));
            pos = end;
        }
        // A corrupt batch stays corrupt.
        let mut corrupt = all.clone();
        corrupt[ATTRIBUTES_OFFSET + 100] ^= 1;
        patch_batches(&mut corrupt, |s| (5, 0, s - 10)).unwrap();
        let crc = (&corrupt[CRC_OFFSET..]).get_u32();
        let end = 12 + (&corrupt[BATCH_LENGTH_OFFSET..]).get_i32() as usize;
        assert_ne!(crc, crc32c::crc32c(&corrupt[ATTRIBUTES_OFFSET..end]));
    }

    #[test]
    fn several_batches_in_one_partition() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(9, 1, 10, 2, Compression::None));
        all.extend_from_slice(&batch(9, 1, 12, 3, Compression::None));
        let mut seen = vec![];
        let (out, n) = rewrite_batches(&all.freeze(), |seq| {
            seen.push(seq);
            (5, 2, seq - 10)
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen, vec![10, 12]);
        let seqs: Vec<i32> = decode_all(&out).iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn compressed_batch_only_header_changes() {
        for c in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch(1, 0, 0, 20, c);
            let (out, _) = rewrite_batches(&b, |s| (2, 5, s)).unwrap();
            assert_eq!(out.len(), b.len());
            // Everything after the header (the compressed records) is byte-identical.
            assert_eq!(&out[BATCH_HEADER_LEN..], &b[BATCH_HEADER_LEN..], "{c:?}");
            let recs = decode_all(&out);
            assert_eq!(recs.len(), 20);
            assert!(recs
                .iter()
                .all(|r| r.producer_id == 2 && r.producer_epoch == 5));
        }
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        assert_eq!(map_sequence(i32::MAX - 1, i32::MAX - 1), 0);
        assert_eq!(map_sequence(i32::MAX - 1, i32::MAX), 1);
        // The client wrapped to 0 after i32::MAX.
        assert_eq!(map_sequence(i32::MAX - 1, 0), 2);
        assert_eq!(map_sequence(5, 4), i32::MAX);
        let b = batch(1, 0, i32::MAX - 1, 4, Compression::None);
        let (out, _) = rewrite_batches(&b, |s| (1, 0, map_sequence(i32::MAX - 1, s))).unwrap();
        let seqs: Vec<i32> = decode_all(&out).iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3]);
    }

    #[test]
    fn truncated_batches_are_refused() {
        let b = batch(1, 0, 0, 3, Compression::None);
        assert!(rewrite_batches(&b.slice(..b.len() - 1), |s| (1, 0, s)).is_err());
        assert!(rewrite_batches(&b.slice(..30), |s| (1, 0, s)).is_err());
    }

    #[test]
    fn producer_detection() {
        assert_eq!(
            producer_of(&batch(-1, -1, -1, 1, Compression::None)).unwrap(),
            Producer::None
        );
        let mut two = BytesMut::new();
        two.extend_from_slice(&batch(7, 2, 10, 3, Compression::None));
        two.extend_from_slice(&batch(7, 2, 13, 2, Compression::Lz4));
        match producer_of(&two).unwrap() {
            Producer::Idempotent {
                id,
                epoch,
                first_seq,
                count,
                ..
            } => {
                assert_eq!((id, epoch, first_seq, count), (7, 2, 10, 5))
            }
            other => panic!("{other:?}"),
        }
        let mut gap = BytesMut::new();
        gap.extend_from_slice(&batch(7, 2, 10, 3, Compression::None));
        gap.extend_from_slice(&batch(7, 2, 20, 2, Compression::None));
        assert!(producer_of(&gap).is_err());
        let b = batch(7, 2, 10, 3, Compression::None);
        assert!(producer_of(&b[..b.len() - 1]).is_err());
        assert!(producer_of(&b[..30]).is_err());
    }

    #[test]
    fn retries_have_the_same_fingerprint_and_other_content_does_not() {
        let fp = |b: &Bytes| match producer_of(b).unwrap() {
            Producer::Idempotent { fingerprint, .. } => fingerprint,
            other => panic!("{other:?}"),
        };
        let a = batch(7, 2, 10, 3, Compression::None);
        assert_eq!(fp(&a), fp(&a.clone()));
        assert_ne!(fp(&a), fp(&batch(7, 2, 10, 4, Compression::None)));
    }
}
