//! An incremental walk over a Fetch response (v4..=v18) as its bytes arrive, so a large
//! answer is relayed chunk by chunk instead of stored whole first.
//!
//! The caller hands the walk whatever it has of the frame; the walk patches the
//! fixed-size fields it finds (topic ids, leader epochs, the partition leader epoch of
//! each record batch header) in place and says how many bytes at the front are done
//! and may be sent. The small structural parts (response header, topic and partition
//! heads, tagged fields) are walked as whole "atoms": an atom cut by a chunk boundary
//! is left in the caller's buffer and walked again once more bytes came, and nothing in
//! it is patched before it is complete, so no field is patched twice. Records are
//! passed through as they come, looking only at the 17 bytes that start each batch.
//!
//! The one part that could change size, the top-level tagged fields (Fetch v16+
//! `node_endpoints`), ends the frame: it is handed to [`FetchPatches::tail`] whole,
//! which must keep its length (the length prefix went out first).
//!
//! The positions patched are the ones [`super::bounds::visit`] finds with the
//! `FetchResponse` layout, so the output equals the store-and-forward path's
//! (`topic_identity::translate`, then the address rewrite); the property test in
//! `crate::intercept` checks that over random answers and random chunk boundaries.

/// What the walk does with the fields it finds.
pub trait FetchPatches {
    /// Whether leader epochs are patched (fields and batch headers). False lets the
    /// records pass without looking at their batches.
    fn epochs(&self) -> bool;
    /// A topic id (16 bytes).
    fn topic_id(&mut self, id: &mut [u8]);
    /// A leader epoch (4 bytes): `current_leader.leader_epoch`, `diverging_epoch.epoch`,
    /// or a v2 record batch's partition leader epoch. Only called when [`Self::epochs`].
    fn epoch(&mut self, epoch: &mut [u8]);
    /// The top-level tagged fields (flexible versions) and whatever follows them up to
    /// the end of the frame, rewritten in place: the length must stay.
    fn tail(&mut self, tail: &mut [u8]) -> Result<(), String>;
    /// A topic's name (versions before 13; later ones name topics by [`Self::topic_id`],
    /// reported after patching). Only with [`FetchWalk::observing`].
    fn topic_name(&mut self, _name: &[u8]) {}
    /// A partition's index, before its records. Only with [`FetchWalk::observing`].
    fn partition(&mut self, _index: i32) {}
    /// The first 43 bytes of each whole v2 record batch (base offset up to the max
    /// timestamp), after patching. Only with [`FetchWalk::observing`].
    fn batch(&mut self, _header: &[u8]) {}
}

/// The frame is not the Fetch answer it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed FetchResponse v{version}: {what} (byte {at} of a {len}-byte frame)")]
pub struct FetchWalkError {
    pub version: i16,
    pub what: String,
    /// Offset in the frame (after its length prefix).
    pub at: u64,
    pub len: u64,
}

/// The versions the walk knows (those of the `FetchResponse` layout).
pub const VERSIONS: std::ops::RangeInclusive<i16> = 4..=18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Top,
    Topic,
    Partition,
    /// At a record batch boundary inside a partition's records.
    Batches,
    /// Inside a batch after its first 17 bytes.
    BatchBody,
    /// Records passed through without looking.
    RecordsRaw,
    PartitionTags,
    TopicTags,
    /// Flexible versions: the top-level tagged fields, through the end of the frame.
    Tail,
    /// Non-flexible versions: whatever follows the message (ignored by decoders).
    Rest,
    Done,
}

/// One Fetch answer being walked.
pub struct FetchWalk {
    version: i16,
    flexible: bool,
    epochs: bool,
    /// Topics, partitions and batch headers are reported (consumer positions).
    observe: bool,
    state: State,
    /// Bytes of the frame (after its length prefix) not yet done.
    left: u64,
    len: u64,
    topics_left: u64,
    partitions_left: u64,
    /// Bytes of the current partition's records not yet done.
    records_left: u64,
    /// Bytes of the current batch not yet done (in `BatchBody`).
    batch_left: u64,
}

/// Why an atom could not be walked.
enum Stop {
    /// Its end is not buffered yet.
    More,
    Bad(String),
}

type Step<T> = Result<T, Stop>;

/// A cursor over the buffered bytes of one atom.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
    /// Bytes of the frame from the start of `b` on (the atom can never be longer).
    frame_left: u64,
}

impl Cur<'_> {
    fn take(&mut self, n: u64) -> Step<usize> {
        if (self.at as u64).saturating_add(n) > self.frame_left {
            return Err(Stop::Bad(format!(
                "needs {n} bytes but only {} remain",
                self.frame_left - self.at as u64
            )));
        }
        let n = n as usize;
        if self.at + n > self.b.len() {
            return Err(Stop::More);
        }
        let at = self.at;
        self.at += n;
        Ok(at)
    }

    fn fixed<const N: usize>(&mut self) -> Step<[u8; N]> {
        let at = self.take(N as u64)?;
        Ok(self.b[at..at + N].try_into().expect("N bytes"))
    }

    fn i16(&mut self) -> Step<i16> {
        Ok(i16::from_be_bytes(self.fixed()?))
    }

    fn i32(&mut self) -> Step<i32> {
        Ok(i32::from_be_bytes(self.fixed()?))
    }

    fn uvarint(&mut self) -> Step<u32> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let [byte] = self.fixed::<1>()?;
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Stop::Bad("a varint longer than 5 bytes".into()))
    }

    /// Bytes the rest of the frame holds after the cursor.
    fn frame_rest(&self) -> u64 {
        self.frame_left - self.at as u64
    }

    /// An array count (nullable: null is none), refused when its elements (at least
    /// `min_each` bytes each) cannot fit.
    fn count(&mut self, flexible: bool, min_each: u64, what: &str) -> Step<u64> {
        let n: i64 = if flexible {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i32()?)
        };
        if n < -1 {
            return Err(Stop::Bad(format!("{what} has count {n}")));
        }
        let n = n.max(0) as u64;
        if n.saturating_mul(min_each) > self.frame_rest() {
            return Err(Stop::Bad(format!(
                "{what} claims {n} elements but only {} bytes remain",
                self.frame_rest()
            )));
        }
        Ok(n)
    }

    /// A string or bytes length (null is zero), refused when it runs past the frame.
    fn length(&mut self, flexible: bool, int16: bool, what: &str) -> Step<u64> {
        let n: i64 = if flexible {
            i64::from(self.uvarint()?) - 1
        } else if int16 {
            i64::from(self.i16()?)
        } else {
            i64::from(self.i32()?)
        };
        if n < -1 {
            return Err(Stop::Bad(format!("{what} has length {n}")));
        }
        let n = n.max(0) as u64;
        if n > self.frame_rest() {
            return Err(Stop::Bad(format!(
                "{what} needs {n} bytes but only {} remain",
                self.frame_rest()
            )));
        }
        Ok(n)
    }

    /// A tagged-fields section whose tags are all unknown (skipped).
    fn skip_tags(&mut self) -> Step<()> {
        let n = self.uvarint()?;
        if u64::from(n) * 2 > self.frame_rest() {
            return Err(Stop::Bad(format!("{n} tagged fields cannot fit")));
        }
        for _ in 0..n {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.take(u64::from(size))?;
        }
        Ok(())
    }
}

impl FetchWalk {
    /// A walk over a Fetch answer of `version` whose length prefix says `len` bytes.
    /// `epochs`: as [`FetchPatches::epochs`] will say. None for a version the walk does
    /// not know.
    pub fn new(version: i16, len: usize, epochs: bool) -> Option<Self> {
        if !VERSIONS.contains(&version) {
            return None;
        }
        Some(FetchWalk {
            version,
            flexible: version >= 12,
            epochs,
            observe: false,
            state: State::Header,
            left: len as u64,
            len: len as u64,
            topics_left: 0,
            partitions_left: 0,
            records_left: 0,
            batch_left: 0,
        })
    }

    /// Also reports topics, partitions and record batch headers to the patches.
    pub fn observing(mut self, on: bool) -> Self {
        self.observe = on;
        self
    }

    /// Bytes of the frame (after its length prefix) not yet done.
    pub fn left(&self) -> u64 {
        self.left
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Walks `buf`: the frame's bytes from the first one not yet done, as many as have
    /// arrived (never past the frame's end). Patches what it finds and returns how many
    /// bytes at the front are done; the rest must be offered again, with more behind.
    pub fn advance(
        &mut self,
        buf: &mut [u8],
        p: &mut dyn FetchPatches,
    ) -> Result<usize, FetchWalkError> {
        debug_assert!(buf.len() as u64 <= self.left, "past the end of the frame");
        let all_here = buf.len() as u64 == self.left;
        let mut pos = 0usize;
        let result = loop {
            if self.state == State::Done {
                break Ok(());
            }
            let before = self.state;
            match self.step(buf, pos, p) {
                Ok(n) => {
                    pos += n;
                    if n == 0 && self.state == before {
                        // A pass-through state with nothing buffered.
                        break Ok(());
                    }
                }
                Err(Stop::More) if all_here => {
                    break Err(format!(
                        "truncated: the frame ends inside {}",
                        self.state_name()
                    ))
                }
                Err(Stop::More) => break Ok(()),
                Err(Stop::Bad(what)) => break Err(what),
            }
        };
        let at = self.len - self.left + pos as u64;
        self.left -= pos as u64;
        result.map(|()| pos).map_err(|what| FetchWalkError {
            version: self.version,
            what,
            at,
            len: self.len,
        })
    }

    /// Bytes from here on that the walk passes through without looking at them (the
    /// rest of a record batch, or of a partition's records): the caller may relay them
    /// without reading them, then say so with [`Self::skip`].
    pub fn blind_run(&self) -> u64 {
        match self.state {
            State::BatchBody => self.batch_left,
            State::RecordsRaw => self.records_left,
            _ => 0,
        }
    }

    /// Counts `n` bytes (at most [`Self::blind_run`]) as done without seeing them.
    pub fn skip(&mut self, n: u64) {
        assert!(
            n <= self.blind_run(),
            "skipped past what the walk passes blind"
        );
        let done = self.pass(n);
        debug_assert_eq!(done, n);
        self.left -= n;
    }

    /// Up to `avail` bytes of a pass-through run; returns how many it took.
    fn pass(&mut self, avail: u64) -> u64 {
        match self.state {
            State::BatchBody => {
                let n = self.batch_left.min(avail);
                self.batch_left -= n;
                if self.batch_left == 0 {
                    self.state = State::Batches;
                }
                n
            }
            State::RecordsRaw => {
                let n = self.records_left.min(avail);
                self.records_left -= n;
                if self.records_left == 0 {
                    self.state = self.after_records();
                }
                n
            }
            _ => 0,
        }
    }

    fn state_name(&self) -> &'static str {
        match self.state {
            State::Header => "the response header",
            State::Top => "the top-level fields",
            State::Topic => "a topic",
            State::Partition => "a partition's head",
            State::Batches | State::BatchBody | State::RecordsRaw => "records",
            State::PartitionTags => "a partition's tagged fields",
            State::TopicTags => "a topic's tagged fields",
            State::Tail => "the top-level tagged fields",
            State::Rest | State::Done => "the end",
        }
    }

    /// One atom or one pass-through run from `buf[pos..]`: returns the bytes done.
    fn step(&mut self, buf: &mut [u8], pos: usize, p: &mut dyn FetchPatches) -> Step<usize> {
        let frame_left = self.left - pos as u64;
        let avail = (buf.len() - pos) as u64;
        let mut c = Cur {
            b: &buf[pos..],
            at: 0,
            frame_left,
        };
        let flexible = self.flexible;
        match self.state {
            State::Header => {
                c.take(4)?; // correlation id
                            // The response header is flexible from v12, as the body is.
                if self.flexible {
                    c.skip_tags()?;
                }
                self.state = State::Top;
                Ok(c.at)
            }
            State::Top => {
                c.take(4)?; // throttle time
                if self.version >= 7 {
                    c.take(2 + 4)?; // error code, session id
                }
                self.topics_left = c.count(flexible, 1, "responses")?;
                self.state = self.after_topic();
                Ok(c.at)
            }
            State::Topic => {
                let mut name = (0, 0);
                let id_at = if self.version >= 13 {
                    Some(c.take(16)?)
                } else {
                    let n = c.length(flexible, true, "topic")?;
                    name = (c.take(n)?, n as usize);
                    None
                };
                self.partitions_left = c.count(flexible, 1, "partitions")?;
                let done = c.at;
                if let Some(at) = id_at {
                    p.topic_id(&mut buf[pos + at..pos + at + 16]);
                } else if self.observe {
                    p.topic_name(&buf[pos + name.0..pos + name.0 + name.1]);
                }
                self.topics_left -= 1;
                self.state = self.after_partition();
                Ok(done)
            }
            State::Partition => {
                let head = c.take(4 + 2 + 8 + 8)?; // index, error, high watermark, last stable
                let index = i32::from_be_bytes(c.b[head..head + 4].try_into().expect("4"));
                if self.version >= 5 {
                    c.take(8)?; // log start offset
                }
                let aborted = c.count(flexible, 16, "aborted_transactions")?;
                for _ in 0..aborted {
                    c.take(8 + 8)?; // producer id, first offset
                    if flexible {
                        c.skip_tags()?;
                    }
                }
                if self.version >= 11 {
                    c.take(4)?; // preferred read replica
                }
                self.records_left = c.length(flexible, false, "records")?;
                self.partitions_left -= 1;
                if self.observe {
                    p.partition(index);
                }
                self.state = if self.epochs || self.observe {
                    State::Batches
                } else {
                    State::RecordsRaw
                };
                Ok(c.at)
            }
            State::Batches => {
                // As `topic_identity::raise_batch_epochs`: a batch needs its 17 header
                // bytes and its whole length inside the records; the first one that does
                // not (a broker may cut the last batch short) ends the patching.
                if self.records_left < 17 {
                    self.state = State::RecordsRaw;
                    return Ok(0);
                }
                c.take(17)?;
                let len = i32::from_be_bytes(c.b[8..12].try_into().expect("4"));
                let magic = c.b[16];
                let Ok(len) = u64::try_from(len) else {
                    self.state = State::RecordsRaw;
                    return Ok(0);
                };
                let end = 12 + len;
                if end > self.records_left {
                    self.state = State::RecordsRaw;
                    return Ok(0);
                }
                // Observed batches are taken as 43-byte atoms (up to the max timestamp).
                let head = if self.observe && magic >= 2 && end >= 43 {
                    c.take(43 - 17)?;
                    43
                } else {
                    17
                };
                if magic >= 2 && self.epochs {
                    p.epoch(&mut buf[pos + 12..pos + 16]);
                }
                if head == 43 {
                    p.batch(&buf[pos..pos + 43]);
                }
                self.records_left -= end;
                if end >= 17 {
                    self.batch_left = end - head;
                    self.state = State::BatchBody;
                    Ok(head as usize)
                } else {
                    // A batch shorter than its own header (garbage, but walked as the
                    // store-and-forward path walks it: the next batch starts inside).
                    Ok(end as usize)
                }
            }
            State::BatchBody | State::RecordsRaw => Ok(self.pass(avail) as usize),
            State::PartitionTags => {
                // Room for every epoch a sane partition has (diverging_epoch,
                // current_leader) and a few repeats; more is refused, not guessed at.
                let mut spots: [usize; 4] = [0; 4];
                let mut found = 0;
                let n = c.uvarint()?;
                if u64::from(n) * 2 > c.frame_rest() {
                    return Err(Stop::Bad(format!("{n} partition tagged fields cannot fit")));
                }
                for _ in 0..n {
                    let tag = c.uvarint()?;
                    let size = u64::from(c.uvarint()?);
                    let start = c.at;
                    c.take(size)?;
                    // Known tags are walked inside their declared size, which they must
                    // fill exactly (as the bounded decoder requires).
                    let mut inner = Cur {
                        b: &c.b[..c.at],
                        at: start,
                        frame_left: (start as u64) + size,
                    };
                    let epoch_at = match tag {
                        // diverging_epoch: epoch, end_offset
                        0 => Some(inner.take(4).and_then(|e| inner.take(8).map(|_| e))),
                        // current_leader: leader_id, leader_epoch
                        1 => Some(inner.take(4).and_then(|_| inner.take(4))),
                        // snapshot_id: end_offset, epoch (not a leader epoch)
                        2 => Some(inner.take(8 + 4).map(|_| usize::MAX)),
                        _ => None,
                    };
                    let Some(epoch_at) = epoch_at else { continue };
                    let bad = |_| Stop::Bad(format!("partition tagged field {tag} is cut short"));
                    let epoch_at = epoch_at.map_err(bad)?;
                    inner.skip_tags().map_err(bad)?;
                    if inner.at != c.at {
                        return Err(Stop::Bad(format!(
                            "partition tagged field {tag} declares {size} bytes but its content takes {}",
                            inner.at - start
                        )));
                    }
                    if epoch_at != usize::MAX && found < spots.len() {
                        spots[found] = epoch_at;
                        found += 1;
                    } else if epoch_at != usize::MAX {
                        return Err(Stop::Bad("a partition tag repeated".into()));
                    }
                }
                let done = c.at;
                if self.epochs {
                    for &at in &spots[..found] {
                        p.epoch(&mut buf[pos + at..pos + at + 4]);
                    }
                }
                self.state = self.after_partition();
                Ok(done)
            }
            State::TopicTags => {
                c.skip_tags()?;
                self.state = self.after_topic();
                Ok(c.at)
            }
            State::Tail => {
                // Structure first (nothing is sent before the whole tail is here).
                c.skip_tags()?;
                if avail < frame_left {
                    return Err(Stop::More);
                }
                p.tail(&mut buf[pos..]).map_err(Stop::Bad)?;
                self.state = State::Done;
                Ok(buf.len() - pos)
            }
            State::Rest => {
                let n = avail;
                if n == frame_left {
                    self.state = State::Done;
                }
                Ok(n as usize)
            }
            State::Done => Ok(0),
        }
    }

    fn after_records(&self) -> State {
        if self.flexible {
            State::PartitionTags
        } else {
            self.after_partition()
        }
    }

    /// After a partition (or a topic's head): the next partition, or the topic's end.
    fn after_partition(&self) -> State {
        if self.partitions_left > 0 {
            State::Partition
        } else if self.flexible {
            State::TopicTags
        } else {
            self.after_topic()
        }
    }

    /// After a topic (or the top-level head): the next topic, or the message's end.
    fn after_topic(&self) -> State {
        if self.topics_left > 0 {
            State::Topic
        } else if self.flexible {
            State::Tail
        } else {
            State::Rest
        }
    }
}
