//! A Fetch answer's node endpoints (KIP-951, v16+) rewritten *without changing the
//! frame's length*, so an answer whose length prefix already went to the client (it
//! is relayed as it arrives, see `crate::codec::fetch_walk`) can still be rewritten.
//!
//! `node_endpoints` is tag 0 of the top-level tagged fields, the very end of the
//! answer. The rewritten section is made exactly as long as the upstream's:
//!
//! - a shorter rewrite (the usual case: a sidecar listens on `127.0.0.1`, brokers
//!   have longer names) is padded with one or two *unknown* tagged fields. Every
//!   client skips tags it does not know: the Java client keeps them in
//!   `unknownTaggedFields`, franz-go in `UnknownTags`, librdkafka's
//!   `rd_kafka_buf_read_tags` skips a tag its callback does not handle, and so does
//!   kafka-protocol. The padding tags (126, 127) are far from the few Fetch defines.
//! - a longer one cannot fit: the endpoints are then *dropped* (replaced by padding).
//!   That costs the client nothing it relies on: a broker sends node endpoints only
//!   with NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH, where every client also
//!   refreshes its metadata, which is what it does without KIP-951. The frame is never
//!   wrong, and no connection is closed for it. Only the streaming path drops; a frame
//!   held whole is re-encoded at its new size instead (see `super::node_endpoints`).

use bytes::{BufMut, Bytes};
use kafka_protocol::messages::ApiKey;

use super::{NodeDirectory, RewriteError};

/// Tags of the padding fields (unknown to every client).
const PAD_TAGS: [u32; 2] = [126, 127];

/// The node endpoints of a Fetch answer's tail, rewritten at the same length.
#[derive(Debug, PartialEq, Eq)]
pub enum Tail {
    /// No node endpoints: nothing to do.
    Unchanged,
    /// The rewritten tail, as long as the original.
    Fits(Vec<u8>),
    /// The rewrite would be longer: the original's length with the endpoints left out.
    Dropped(Vec<u8>),
}

fn bad(version: i16, what: impl Into<String>) -> RewriteError {
    RewriteError::Decode {
        api: ApiKey::Fetch,
        version,
        reason: anyhow::anyhow!("node endpoints: {}", what.into()),
    }
}

struct Cur<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cur<'a> {
    fn uvarint(&mut self) -> Option<u32> {
        let (v, n) = crate::codec::read_uvarint(self.b.get(self.at..)?)?;
        self.at += n;
        Some(v)
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
}

fn uvarint_len(v: u64) -> usize {
    let mut n = 1;
    let mut v = v >> 7;
    while v > 0 {
        n += 1;
        v >>= 7;
    }
    n
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Rewrites the node endpoints in `tail`: a Fetch (v16+) body's top-level tagged
/// fields and whatever bytes follow them (left as they are).
pub fn fetch_tail(
    version: i16,
    tail: &[u8],
    dir: &dyn NodeDirectory,
) -> Result<Tail, RewriteError> {
    let mut c = Cur { b: tail, at: 0 };
    let n = c
        .uvarint()
        .ok_or_else(|| bad(version, "cut short tagged-field count"))?;
    if u64::from(n) * 2 > tail.len() as u64 {
        return Err(bad(version, format!("{n} tagged fields cannot fit")));
    }
    // Each entry's bytes (tag, size, content) and whether it holds endpoints.
    let mut entries: Vec<(&[u8], Option<Vec<u8>>)> = Vec::with_capacity(n as usize);
    let mut any = false;
    for _ in 0..n {
        let start = c.at;
        let tag = c.uvarint().ok_or_else(|| bad(version, "cut short tag"))?;
        let size = c
            .uvarint()
            .ok_or_else(|| bad(version, "cut short tag size"))?;
        let content = c
            .take(size as usize)
            .ok_or_else(|| bad(version, format!("tag {tag} runs past the frame")))?;
        let entry = &tail[start..c.at];
        // An empty array (one byte) is no endpoints, as the skim says.
        if tag == 0 && size > 1 {
            let rewritten = endpoints(version, content, dir)?;
            let mut e = Vec::with_capacity(rewritten.len() + 4);
            put_uvarint(&mut e, 0);
            put_uvarint(&mut e, rewritten.len() as u64);
            e.extend_from_slice(&rewritten);
            entries.push((entry, Some(e)));
            any = true;
        } else {
            entries.push((entry, None));
        }
    }
    if !any {
        return Ok(Tail::Unchanged);
    }
    let section = c.at;
    let rest = &tail[section..];
    let kept: Vec<&[u8]> = entries
        .iter()
        .map(|(orig, new)| new.as_deref().unwrap_or(orig))
        .collect();
    if let Some(mut s) = section_of_length(&kept, section) {
        s.extend_from_slice(rest);
        return Ok(Tail::Fits(s));
    }
    let without: Vec<&[u8]> = entries
        .iter()
        .filter(|(_, new)| new.is_none())
        .map(|(orig, _)| *orig)
        .collect();
    // The endpoints entry took at least 3 bytes, and one or two padding fields can
    // fill any gap of 2 bytes or more: this always fits.
    let mut s = section_of_length(&without, section)
        .ok_or_else(|| bad(version, "cannot keep the section's length"))?;
    s.extend_from_slice(rest);
    Ok(Tail::Dropped(s))
}

/// A tagged-fields section of `entries` plus padding, exactly `target` bytes long.
fn section_of_length(entries: &[&[u8]], target: usize) -> Option<Vec<u8>> {
    let body: usize = entries.iter().map(|e| e.len()).sum();
    let n = entries.len() as u64;
    let pads: Vec<usize> = (0..=2usize).find_map(|k| {
        let fixed = uvarint_len(n + k as u64) + body;
        let room = target.checked_sub(fixed)?;
        match k {
            0 => (room == 0).then(Vec::new),
            1 => pad_size(room).map(|_| vec![room]),
            _ => (2..=8.min(room.saturating_sub(2)))
                .find(|&a| pad_size(a).is_some() && pad_size(room - a).is_some())
                .map(|a| vec![a, room - a]),
        }
    })?;
    let mut out = Vec::with_capacity(target);
    put_uvarint(&mut out, n + pads.len() as u64);
    for e in entries {
        out.extend_from_slice(e);
    }
    for (i, total) in pads.into_iter().enumerate() {
        let size = pad_size(total).expect("checked");
        put_uvarint(&mut out, u64::from(PAD_TAGS[i]));
        put_uvarint(&mut out, size as u64);
        out.resize(out.len() + size, 0);
    }
    debug_assert_eq!(out.len(), target);
    Some(out)
}

/// The content size of a padding field taking `total` bytes (tag, size, content).
fn pad_size(total: usize) -> Option<usize> {
    (1..=5).find_map(|size_len| {
        let size = total.checked_sub(1 + size_len)?;
        (uvarint_len(size as u64) == size_len).then_some(size)
    })
}

/// The content of a `node_endpoints` tag (a compact array of NodeEndpoint), with every
/// host and port replaced by the proxy's own listener for the node. The array must
/// fill the tag exactly, as the bounded decoder requires.
fn endpoints(
    version: i16,
    content: &[u8],
    dir: &dyn NodeDirectory,
) -> Result<Vec<u8>, RewriteError> {
    let mut c = Cur { b: content, at: 0 };
    let cut = |what: &str| bad(version, format!("cut short {what}"));
    let count = c.uvarint().ok_or_else(|| cut("count"))?;
    let count = count.saturating_sub(1);
    if u64::from(count) * 4 > content.len() as u64 {
        // Worded as the bounded walk words it (operators grep for one message).
        return Err(bad(
            version,
            format!(
                "field `node_endpoints` claims {count} elements but only {} bytes remain",
                content.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(content.len() + 64);
    put_uvarint(&mut out, u64::from(count) + 1);
    for _ in 0..count {
        let node_id = i32::from_be_bytes(
            c.take(4)
                .ok_or_else(|| cut("node id"))?
                .try_into()
                .expect("4"),
        );
        let host_len = c.uvarint().ok_or_else(|| cut("host"))?;
        let host = c
            .take(host_len.saturating_sub(1) as usize)
            .ok_or_else(|| cut("host"))?;
        let host = std::str::from_utf8(host).map_err(|_| bad(version, "host is not UTF-8"))?;
        let port = i32::from_be_bytes(c.take(4).ok_or_else(|| cut("port"))?.try_into().expect("4"));
        // rack (nullable) and the endpoint's own tagged fields stay as they are.
        let rest_at = c.at;
        let rack_len = c.uvarint().ok_or_else(|| cut("rack"))?;
        c.take(rack_len.saturating_sub(1) as usize)
            .ok_or_else(|| cut("rack"))?;
        c.at = crate::codec::skip_tagged_fields(content, c.at)
            .filter(|&end| end <= content.len())
            .ok_or_else(|| cut("tagged fields"))?;
        let (new_host, new_port) = dir.local_endpoint(node_id, host, port);
        out.put_i32(node_id);
        put_uvarint(&mut out, new_host.len() as u64 + 1);
        out.extend_from_slice(new_host.as_bytes());
        out.put_i32(new_port);
        out.extend_from_slice(&content[rest_at..c.at]);
    }
    if c.at != content.len() {
        return Err(bad(
            version,
            format!(
                "the tag declares {} bytes but its content takes {}",
                content.len(),
                c.at
            ),
        ));
    }
    Ok(out)
}

/// `frame` with its Fetch tail (from `at`) replaced by `tail` of the same length.
pub fn with_tail(frame: Bytes, at: usize, tail: &[u8]) -> Bytes {
    let mut buf = frame
        .try_into_mut()
        .unwrap_or_else(|f| bytes::BytesMut::from(&f[..]));
    buf[at..at + tail.len()].copy_from_slice(tail);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_fills_every_gap_but_one_byte_and_parses() {
        let entry: &[u8] = &[0, 3, 1, 2, 3];
        let exact = 1 + entry.len();
        assert_eq!(section_of_length(&[entry], exact).unwrap().len(), exact);
        assert!(section_of_length(&[entry], exact - 1).is_none(), "longer");
        assert!(
            section_of_length(&[entry], exact + 1).is_none(),
            "a 1-byte gap"
        );
        for target in exact + 2..40_000 {
            let s = section_of_length(&[entry], target)
                .unwrap_or_else(|| panic!("no padding for {target}"));
            assert_eq!(s.len(), target);
            assert_eq!(crate::codec::skip_tagged_fields(&s, 0), Some(target));
            assert_eq!(&s[1..1 + entry.len()], entry, "the field kept, first");
        }
    }

    #[test]
    fn dropping_always_fits() {
        // Whatever the endpoints entry took (3 bytes at least), the rest fits the length.
        let other: &[u8] = &[5, 1, 9];
        for endpoints in 3..20_000 {
            let target = 1 + other.len() + endpoints;
            let s = section_of_length(&[other], target).unwrap();
            assert_eq!(crate::codec::skip_tagged_fields(&s, 0), Some(target));
            let s = section_of_length(&[], endpoints + 1).unwrap();
            assert_eq!(crate::codec::skip_tagged_fields(&s, 0), Some(endpoints + 1));
        }
    }
}
