//! Kafka frame codec: length-prefixed frames off a byte stream, and the few request
//! header fields the relay needs without decoding a whole message.
//!
//! A frame is kept *with* its 4-byte length prefix so that a pass-through frame is
//! written out as the very bytes that were read: one contiguous slice, no re-encoding.

pub mod bounds;
pub mod fetch_walk;
mod schema;

use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Initial and minimum read buffer size. Large enough that a burst of small
/// produce requests is picked up with one read.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is negative")]
    NegativeLength(i32),
    #[error("frame of {len} bytes exceeds the limit of {max} bytes ({setting})")]
    Oversized {
        len: usize,
        max: usize,
        setting: &'static str,
    },
    #[error("frame of {0} bytes is too short for a Kafka header")]
    TooShort(usize),
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// Label for the frames-rejected metric, or None for plain I/O trouble.
    pub fn rejection_reason(&self) -> Option<&'static str> {
        match self {
            FrameError::Oversized { .. } => Some("oversized"),
            FrameError::NegativeLength(_) | FrameError::TooShort(_) => Some("malformed"),
            FrameError::Truncated(_) | FrameError::Io(_) => None,
        }
    }
}

/// Checks a 4-byte length prefix. `min` is the smallest body that can hold the header
/// the caller will look at (8 for requests, 4 for responses).
pub fn check_length(raw: i32, min: usize, max: usize) -> Result<usize, FrameError> {
    if raw < 0 {
        return Err(FrameError::NegativeLength(raw));
    }
    let len = raw as usize;
    if len > max {
        let setting = if min == 4 {
            "limits.max_response_frame_bytes"
        } else {
            "limits.max_frame_bytes"
        };
        return Err(FrameError::Oversized { len, max, setting });
    }
    if len < min {
        return Err(FrameError::TooShort(len));
    }
    Ok(len)
}

/// Reads whole frames from a stream into a reusable buffer.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_frame: usize,
    min_body: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// `min_body`: 8 for request streams (api key, version, correlation id), 4 for responses.
    pub fn new(inner: R, max_frame: usize, min_body: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_frame,
            min_body,
        }
    }

    pub fn set_max_frame(&mut self, max: usize) {
        self.max_frame = max;
    }

    /// Returns the next complete frame (length prefix included) if one is already
    /// buffered, without touching the socket.
    pub fn try_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        Ok(self.try_frame_mut()?.map(BytesMut::freeze))
    }

    /// [`Self::try_frame`], the frame still writable: it shares the read buffer's
    /// allocation but owns its bytes, so a request the proxy patches (a Produce after a
    /// switch) is patched where it was read, without a copy.
    pub fn try_frame_mut(&mut self) -> Result<Option<BytesMut>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let raw = i32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes"));
        let len = check_length(raw, self.min_body, self.max_frame)?;
        let total = 4 + len;
        if self.buf.len() < total {
            // Make room for the whole frame once instead of growing step by step.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(total)))
    }

    /// Reads until a whole frame is buffered. `Ok(None)` on a clean end of stream
    /// between frames.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        Ok(self.next_frame_mut().await?.map(BytesMut::freeze))
    }

    /// [`Self::next_frame`], the frame still writable (see [`Self::try_frame_mut`]).
    pub async fn next_frame_mut(&mut self) -> Result<Option<BytesMut>, FrameError> {
        self.read_frame(false).await
    }

    /// Reads until a whole frame is buffered; `exact`: nothing past its end.
    async fn read_frame(&mut self, exact: bool) -> Result<Option<BytesMut>, FrameError> {
        loop {
            if let Some(frame) = self.try_frame_mut()? {
                return Ok(Some(frame));
            }
            let n = if exact {
                // try_frame_mut found the length valid, or fewer than 4 bytes here.
                let total = match self.buf.get(..4) {
                    Some(raw) => 4 + i32::from_be_bytes(raw.try_into().expect("4 bytes")) as usize,
                    None => 4,
                };
                self.read_upto(total - self.buf.len()).await?
            } else {
                if self.buf.capacity() - self.buf.len() < 4096 {
                    self.buf.reserve(READ_CHUNK);
                }
                self.inner.read_buf(&mut self.buf).await?
            };
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated(self.buf.len()))
                };
            }
        }
    }

    /// [`Self::next_frame`], reading nothing past the frame's end (but what earlier
    /// reads brought in): a large frame behind it is left in the stream, to be seen
    /// first by [`Self::next_head`] (and streamed, or spliced).
    pub async fn next_frame_exact(&mut self) -> Result<Option<Bytes>, FrameError> {
        Ok(self.read_frame(true).await?.map(BytesMut::freeze))
    }

    /// Reads until the next frame's length prefix and the first `head` bytes after it
    /// (or the whole frame, if shorter) are buffered; returns the frame's length without
    /// consuming anything. Unlike [`Self::next_frame`] it does not make room for the
    /// whole frame: a caller that streams the frame reads it with [`Self::fill`].
    /// `Ok(None)` on a clean end of stream between frames.
    pub async fn next_head(&mut self, head: usize) -> Result<Option<usize>, FrameError> {
        loop {
            if self.buf.len() >= 4 {
                let raw = i32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes"));
                let len = check_length(raw, self.min_body, self.max_frame)?;
                if self.buf.len() >= 4 + len.min(head) {
                    return Ok(Some(len));
                }
            }
            // At most one chunk: a large frame behind the head may be streamed, or its
            // records spliced, rather than read whole here.
            if self.read_upto(READ_CHUNK).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated(self.buf.len()))
                };
            }
        }
    }

    /// Reads at least one more byte, at most `max`: what follows may be taken from the
    /// stream directly instead ([`crate::splice`]). The end of the stream is an error
    /// here: the caller is inside a frame.
    pub async fn fill_upto(&mut self, max: usize) -> Result<(), FrameError> {
        match self.read_upto(max).await? {
            0 => Err(FrameError::Truncated(self.buf.len())),
            _ => Ok(()),
        }
    }

    async fn read_upto(&mut self, max: usize) -> Result<usize, FrameError> {
        if self.buf.capacity() - self.buf.len() < max {
            self.buf.reserve(max.max(READ_CHUNK));
        }
        Ok(self
            .inner
            .read_buf(&mut bytes::BufMut::limit(&mut self.buf, max))
            .await?)
    }

    /// The bytes read and not yet taken (a streamed frame is patched here, then split
    /// off).
    pub fn buffered_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The stream read from (bytes may be taken from it directly when nothing is
    /// buffered: [`crate::splice`]).
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// True when at least one more byte is buffered (a frame may be complete).
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// A write to a peer, failing with `TimedOut` when it makes no progress for `stall`.
pub async fn within_stall<F: std::future::Future<Output = std::io::Result<T>>, T>(
    stall: Option<std::time::Duration>,
    f: F,
) -> std::io::Result<T> {
    match stall {
        None => f.await,
        Some(d) => tokio::time::timeout(d, f).await.unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the peer accepted no data for {d:?} (limits.write_stall_timeout)"),
            ))
        }),
    }
}

/// Writes a batch of frames with as few syscalls as the kernel allows.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    write_frames_within(w, frames, None).await
}

/// [`write_frames`], failing with `TimedOut` when the peer accepts no byte for `stall`
/// (a peer that stopped reading must not hold the session, and its memory, forever).
pub async fn write_frames_within<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &mut Vec<Bytes>,
    stall: Option<std::time::Duration>,
) -> std::io::Result<()> {
    let mut start = 0;
    while start < frames.len() {
        let n = {
            // At most 64 slices per call: IOV_MAX is 1024 but more buys nothing.
            let end = (start + 64).min(frames.len());
            let slices: smallvec_slices::Slices = smallvec_slices::Slices::new(&frames[start..end]);
            within_stall(stall, w.write_vectored(slices.as_slices())).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut n = n;
        while n > 0 {
            let f = &mut frames[start];
            if n >= f.len() {
                n -= f.len();
                start += 1;
            } else {
                f.advance(n);
                n = 0;
            }
        }
    }
    frames.clear();
    // A TLS stream (tokio-rustls) may keep the tail of a write until flushed, and the
    // broker would wait for the end of a request that never comes. A no-op on TCP.
    within_stall(stall, w.flush()).await
}

/// A fixed array of `IoSlice`s on the stack (no allocation per write).
mod smallvec_slices {
    use super::*;

    pub struct Slices<'a> {
        slices: [IoSlice<'a>; 64],
        len: usize,
    }

    impl<'a> Slices<'a> {
        pub fn new(frames: &'a [Bytes]) -> Self {
            let mut slices = [IoSlice::new(&[]); 64];
            let len = frames.len().min(64);
            for (s, f) in slices.iter_mut().zip(frames) {
                *s = IoSlice::new(f);
            }
            Slices { slices, len }
        }
        pub fn as_slices(&self) -> &[IoSlice<'a>] {
            &self.slices[..self.len]
        }
    }
}

/// The fixed-position fields of a request header (identical in header v0, v1 and v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPeek {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Reads api key, version and correlation id from a frame (length prefix included).
pub fn peek_request(frame: &[u8]) -> RequestPeek {
    // The reader guarantees at least 8 body bytes.
    RequestPeek {
        api_key: i16::from_be_bytes([frame[4], frame[5]]),
        api_version: i16::from_be_bytes([frame[6], frame[7]]),
        correlation_id: i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]),
    }
}

/// Reads the correlation id of a response frame (length prefix included).
pub fn peek_response_correlation(frame: &[u8]) -> i32 {
    i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]])
}

/// Offset of the request body (after the header) in a frame, given whether the
/// header is flexible (v2, with tagged fields). None if the frame is malformed.
pub fn request_body_offset(frame: &[u8], flexible_header: bool) -> Option<usize> {
    let mut pos = 12; // length, api key, version, correlation id
                      // client_id: nullable string with an int16 length in every header version.
    let len = i16::from_be_bytes(frame.get(pos..pos + 2)?.try_into().ok()?);
    pos += 2;
    if len > 0 {
        pos += len as usize;
    }
    if flexible_header {
        pos = skip_tagged_fields(frame, pos)?;
    }
    (pos <= frame.len()).then_some(pos)
}

/// The `acks` field of a Produce request, read without decoding the records.
/// Produce v3+ starts with transactional_id (nullable string; compact from v9), then acks.
pub fn produce_acks(frame: &[u8], api_version: i16) -> Option<i16> {
    let flexible = api_version >= 9;
    let mut pos = request_body_offset(frame, flexible)?;
    if api_version >= 3 {
        if flexible {
            let (len_plus_one, n) = read_uvarint(frame.get(pos..)?)?;
            pos += n + (len_plus_one.saturating_sub(1)) as usize;
        } else {
            let len = i16::from_be_bytes(frame.get(pos..pos + 2)?.try_into().ok()?);
            pos += 2 + len.max(0) as usize;
        }
    }
    Some(i16::from_be_bytes(
        frame.get(pos..pos + 2)?.try_into().ok()?,
    ))
}

/// The `rebalance_timeout_ms` of a JoinGroup request (v1+), read without decoding:
/// how long the broker may legitimately hold the answer back.
pub fn join_group_rebalance_timeout(frame: &[u8], api_version: i16) -> Option<i32> {
    if api_version < 1 {
        return None;
    }
    let flexible = api_version >= 6;
    let mut pos = request_body_offset(frame, flexible)?;
    // group_id (compact from v6), then session_timeout_ms, then rebalance_timeout_ms.
    if flexible {
        let (len_plus_one, n) = read_uvarint(frame.get(pos..)?)?;
        pos += n + (len_plus_one.saturating_sub(1)) as usize;
    } else {
        let len = i16::from_be_bytes(frame.get(pos..pos + 2)?.try_into().ok()?);
        pos += 2 + len.max(0) as usize;
    }
    pos += 4;
    Some(i32::from_be_bytes(
        frame.get(pos..pos + 4)?.try_into().ok()?,
    ))
}

/// Unsigned varint (protobuf style, as used by flexible versions). Returns the value
/// and the number of bytes it took.
pub fn read_uvarint(b: &[u8]) -> Option<(u32, usize)> {
    let mut value: u32 = 0;
    for (i, &byte) in b.iter().enumerate().take(5) {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Length of the length prefix plus the response header (correlation id and, for
/// header v1, tagged fields): where the response body starts. None if malformed.
pub fn response_body_offset(frame: &[u8], header_version: i16) -> Option<usize> {
    let mut pos = 8;
    if frame.len() < pos {
        return None;
    }
    if header_version >= 1 {
        pos = skip_tagged_fields(frame, pos)?;
    }
    (pos <= frame.len()).then_some(pos)
}

/// Skips a tagged-fields section starting at `pos`; returns the position after it
/// (which the caller checks against the length).
pub fn skip_tagged_fields(frame: &[u8], mut pos: usize) -> Option<usize> {
    let (count, n) = read_uvarint(frame.get(pos..)?)?;
    pos += n;
    for _ in 0..count {
        let (_tag, n) = read_uvarint(frame.get(pos..)?)?;
        pos += n;
        let (size, n) = read_uvarint(frame.get(pos..)?)?;
        pos += n + size as usize;
    }
    Some(pos)
}

/// Why an outside message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame lies about its own contents (a count or length that cannot fit):
    /// refused before the decoder could allocate from it.
    #[error(transparent)]
    Refused(#[from] bounds::BoundsError),
    #[error("{0:?} frame too short for its header")]
    Short(kafka_protocol::messages::ApiKey),
    #[error("cannot decode {message} v{version}: {source:#}")]
    Invalid {
        message: &'static str,
        version: i16,
        source: anyhow::Error,
    },
}

impl DecodeError {
    /// True when the frame itself is hostile or corrupt (not just a version or field
    /// value the decoder does not accept): the connection it came from is closed.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            DecodeError::Refused(bounds::BoundsError::Malformed { .. })
        )
    }
}

/// The one way to decode a message body that came from outside (a client or an
/// upstream): its layout is checked first ([`bounds`]), so no count on the wire can
/// make the decoder allocate more than the body holds.
pub fn decode_body<T: bounds::Bounded>(version: i16, body: Bytes) -> Result<T, DecodeError> {
    decode_with(T::LAYOUT, version, body)
}

fn decode_with<T: kafka_protocol::protocol::Decodable>(
    layout: &'static bounds::Message,
    version: i16,
    mut body: Bytes,
) -> Result<T, DecodeError> {
    bounds::check(layout, version, &body)?;
    T::decode(&mut body, version).map_err(|source| DecodeError::Invalid {
        message: layout.name,
        version,
        source,
    })
}

/// Decodes a response body (after its header) of `api` at `version`, checked against
/// the layout of `T` (`api`'s response type).
pub fn decode_response_body<T: bounds::Bounded>(
    _api: kafka_protocol::messages::ApiKey,
    version: i16,
    body: Bytes,
) -> Result<T, DecodeError> {
    decode_body(version, body)
}

/// Decodes the body of a response frame (length prefix included) of `api` at
/// `version`, checked against the layout of `T` (`api`'s response type).
/// The error is a [`DecodeError`] (downcast to tell a refused frame).
pub fn decode_response<T: bounds::Bounded>(
    api: kafka_protocol::messages::ApiKey,
    version: i16,
    frame: &Bytes,
) -> anyhow::Result<T> {
    let at = response_body_offset(frame, api.response_header_version(version))
        .ok_or(DecodeError::Short(api))?;
    Ok(decode_body(version, frame.slice(at..))?)
}

/// Decodes the body of a request frame (length prefix included) of `api` at
/// `version` (`T` must be `api`'s request type); None if it does not decode. A frame
/// that lies about its contents is logged.
pub fn decode_request<T: bounds::Bounded>(
    api: kafka_protocol::messages::ApiKey,
    version: i16,
    frame: &Bytes,
) -> Option<T> {
    match try_decode_request(api, version, frame) {
        Ok(m) => Some(m),
        Err(e) => {
            if e.is_refusal() {
                tracing::warn!("refused a client request: {e}");
            }
            None
        }
    }
}

/// [`decode_request`] with the reason it failed.
pub fn try_decode_request<T: bounds::Bounded>(
    api: kafka_protocol::messages::ApiKey,
    version: i16,
    frame: &Bytes,
) -> Result<T, DecodeError> {
    let at = request_body_offset(frame, api.request_header_version(version) >= 2)
        .ok_or(DecodeError::Short(api))?;
    decode_body(version, frame.slice(at..))
}

/// Checks a body against `layout` at `version`; versions the layout does not cover
/// pass (their messages are relayed as opaque bytes).
pub fn check_body(
    layout: &'static bounds::Message,
    version: i16,
    body: &[u8],
) -> Result<(), bounds::BoundsError> {
    if !layout.versions().contains(&version) {
        return Ok(());
    }
    bounds::check(layout, version, body).map(|_| ())
}

/// A frame made of `header` (raw header bytes, without the length prefix) and `msg`
/// encoded at `version`: how a rewritten message keeps its original header.
pub fn reframe<T: kafka_protocol::protocol::Encodable>(
    header: &[u8],
    msg: &T,
    version: i16,
) -> anyhow::Result<Bytes> {
    let size = msg.compute_size(version)?;
    let mut out = BytesMut::with_capacity(4 + header.len() + size);
    out.extend_from_slice(&((header.len() + size) as i32).to_be_bytes());
    out.extend_from_slice(header);
    msg.encode(&mut out, version)?;
    Ok(out.freeze())
}

/// A client request of `api` at `version` with its body replaced by `msg`, its own
/// header (correlation id, client id) kept as it was.
pub fn reframe_request<T: kafka_protocol::protocol::Encodable>(
    api: kafka_protocol::messages::ApiKey,
    version: i16,
    frame: &[u8],
    msg: &T,
) -> anyhow::Result<Bytes> {
    let body_at = request_body_offset(frame, api.request_header_version(version) >= 2)
        .ok_or_else(|| anyhow::anyhow!("malformed {api:?} request header"))?;
    reframe(&frame[4..body_at], msg, version)
}

/// A response frame of the proxy's own: header v`header_version` with `corr`, then
/// `msg` at `version`.
pub fn response_frame<T: kafka_protocol::protocol::Encodable>(
    corr: i32,
    header_version: i16,
    version: i16,
    msg: &T,
) -> anyhow::Result<Bytes> {
    use kafka_protocol::protocol::Encodable;
    let mut buf = BytesMut::new();
    kafka_protocol::messages::ResponseHeader::default()
        .with_correlation_id(corr)
        .encode(&mut buf, header_version)?;
    msg.encode(&mut buf, version)?;
    Ok(frame_with_length(buf))
}

/// A Metadata request for just `topics`, creating none of them: the proxy's own
/// lookups must never auto-create a topic on a cluster.
pub fn metadata_request_for<'a>(
    topics: impl IntoIterator<Item = &'a str>,
) -> kafka_protocol::messages::MetadataRequest {
    use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
    use kafka_protocol::protocol::StrBytes;
    MetadataRequest::default()
        .with_topics(Some(
            topics
                .into_iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(StrBytes::from_string(t.to_string()).into()))
                })
                .collect(),
        ))
        .with_allow_auto_topic_creation(false)
}

/// Builds a frame (length prefix + header + body) around an encoded response body.
pub fn frame_with_length(mut body: BytesMut) -> Bytes {
    let len = body.len() as i32;
    let mut out = BytesMut::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    body.clear();
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ProduceRequest, RequestHeader};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    async fn read_all(input: Vec<u8>, max: usize) -> Result<Vec<Bytes>, FrameError> {
        let mut r = FrameReader::new(&input[..], max, 8);
        let mut out = vec![];
        while let Some(f) = r.next_frame().await? {
            out.push(f);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn splits_back_to_back_frames() {
        let mut input = frame(&[0, 3, 0, 12, 0, 0, 0, 7]);
        input.extend(frame(&[0, 18, 0, 3, 0, 0, 0, 8, 1, 2, 3]));
        let frames = read_all(input, 1024).await.unwrap();
        assert_eq!(frames.len(), 2);
        let p = peek_request(&frames[1]);
        assert_eq!(
            p,
            RequestPeek {
                api_key: 18,
                api_version: 3,
                correlation_id: 8
            }
        );
    }

    #[tokio::test]
    async fn negative_length_is_an_error() {
        let err = read_all((-5i32).to_be_bytes().to_vec(), 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::NegativeLength(-5)), "{err}");
        assert_eq!(err.rejection_reason(), Some("malformed"));
    }

    #[tokio::test]
    async fn oversized_is_an_error_before_allocation() {
        let err = read_all(i32::MAX.to_be_bytes().to_vec(), 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Oversized { .. }), "{err}");
        assert_eq!(err.rejection_reason(), Some("oversized"));
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error() {
        let mut input = frame(&[0, 3, 0, 12, 0, 0, 0, 7, 9, 9]);
        input.truncate(input.len() - 3);
        let err = read_all(input, 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated(_)), "{err}");
    }

    #[tokio::test]
    async fn too_short_for_header_is_an_error() {
        let err = read_all(frame(&[0, 3, 0]), 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::TooShort(3)), "{err}");
    }

    #[tokio::test]
    async fn write_frames_writes_everything_in_order() {
        let mut frames: Vec<Bytes> = (0..200u8).map(|i| Bytes::from(vec![i; 3])).collect();
        let mut out: Vec<u8> = vec![];
        write_frames(&mut out, &mut frames).await.unwrap();
        assert_eq!(out.len(), 600);
        assert_eq!(&out[597..], &[199, 199, 199]);
        assert!(frames.is_empty());
    }

    /// Like tokio-rustls: accepts writes into a buffer that reaches the socket only on
    /// flush (or a later write).
    #[derive(Default)]
    struct HoldsUntilFlush {
        held: Vec<u8>,
        sent: Vec<u8>,
    }

    impl AsyncWrite for HoldsUntilFlush {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.get_mut().held.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let me = self.get_mut();
            let held = std::mem::take(&mut me.held);
            me.sent.extend_from_slice(&held);
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    #[tokio::test]
    async fn written_frames_are_flushed_for_tls() {
        for n in [1usize, 3, 100] {
            let mut w = HoldsUntilFlush::default();
            let mut frames: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![i as u8; 5])).collect();
            write_frames(&mut w, &mut frames).await.unwrap();
            assert_eq!(w.sent.len(), 5 * n, "everything reached the socket");
            assert!(w.held.is_empty());
        }
    }

    fn encoded_produce(version: i16, acks: i16, txn: Option<&str>) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(0)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("client-x")));
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(1000)
            .with_transactional_id(txn.map(|t| StrBytes::from_string(t.to_string()).into()));
        let hv = kafka_protocol::messages::ApiKey::Produce.request_header_version(version);
        let mut body = BytesMut::new();
        header.encode(&mut body, hv).unwrap();
        req.encode(&mut body, version).unwrap();
        frame(&body)
    }

    #[test]
    fn produce_acks_all_versions() {
        for version in 3..=13 {
            for (acks, txn) in [(0, None), (-1, Some("txn-1")), (1, None)] {
                let f = encoded_produce(version, acks, txn);
                assert_eq!(produce_acks(&f, version), Some(acks), "v{version}");
            }
        }
    }

    #[test]
    fn join_group_rebalance_timeout_all_versions() {
        use kafka_protocol::messages::JoinGroupRequest;
        for version in 0..=9 {
            let req = JoinGroupRequest::default()
                .with_group_id(StrBytes::from_static_str("a-group").into())
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(if version >= 1 { 1_800_000 } else { -1 });
            let hv = kafka_protocol::messages::ApiKey::JoinGroup.request_header_version(version);
            let mut body = BytesMut::new();
            RequestHeader::default()
                .with_request_api_key(11)
                .with_request_api_version(version)
                .with_client_id(Some(StrBytes::from_static_str("c")))
                .encode(&mut body, hv)
                .unwrap();
            req.encode(&mut body, version).unwrap();
            let f = frame(&body);
            let want = (version >= 1).then_some(1_800_000);
            assert_eq!(
                join_group_rebalance_timeout(&f, version),
                want,
                "v{version}"
            );
        }
        assert_eq!(
            join_group_rebalance_timeout(&[0, 0, 0, 9, 0, 11, 0, 6], 6),
            None
        );
    }

    #[test]
    fn produce_acks_on_garbage_is_none() {
        let f = frame(&[0, 0, 0, 9, 0, 0, 0, 1, 0x7f, 0x7f]);
        assert_eq!(produce_acks(&f, 9), None);
    }

    #[test]
    fn uvarint() {
        assert_eq!(read_uvarint(&[0x05]), Some((5, 1)));
        assert_eq!(read_uvarint(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(read_uvarint(&[0x80, 0x80]), None);
    }
}
