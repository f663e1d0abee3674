//! The producer-identity state machine: which upstream identity and sequence each
//! client record batch gets, and what the client is told about it. Pure and
//! synchronous: no sockets, no clock of its own, so it can be driven through
//! thousands of random schedules (`tests/producer_identity_sim.rs`).
//!
//! Vocabulary:
//! - a *client producer* is the producer id a client holds. Before the first switch
//!   these are the initial cluster's own ids ("raw" ids, passed through untouched).
//!   From the first switch on, every producer id handed to a client is the proxy's own,
//!   from [`NAMESPACE_BASE`] up, which no cluster ever issues: an id from one cluster can
//!   never be mistaken for an id from another, whatever numbers the clusters pick.
//! - an *upstream identity* is a producer id and epoch one cluster issued to the proxy
//!   for one client producer and one client epoch. A client's epoch bump (clients bump
//!   locally, without asking the broker) gets a fresh upstream identity.
//! - a *unit* is the record batches of one client producer for one partition in one
//!   Produce request: first client sequence, record count, fingerprint (batch CRCs).
//! - a *stream* maps one partition's client sequences onto one upstream identity:
//!   upstream sequence = client sequence - base. Its base comes from what the proxy
//!   knows: the sequence right after the last acknowledged unit (`acked_next`), or, when
//!   nothing is known (the first switch after start, or a client epoch it never saw
//!   begin), the first unit, which is then forwarded alone until acknowledged.
//!
//! Rules that make loss impossible rather than unlikely:
//! - Per stream, one upstream sequence range carries one unit only (same sequence,
//!   count, fingerprint). So a DUPLICATE_SEQUENCE_NUMBER for a unit sent before *is*
//!   that unit, and one for a unit never sent is not believed.
//! - A unit is forwarded only where the broker's sequence check has something to
//!   check against: right after an acknowledged or in-flight unit, or as a stream's
//!   first unit alone. Anything that would open a gap waits (the client gets
//!   NOT_ENOUGH_REPLICAS: retriable, "not written", no epoch bump) until the client
//!   resends in order.
//! - Broker answers that mean our upstream identity lost its state (UNKNOWN_PRODUCER_ID,
//!   OUT_OF_ORDER_SEQUENCE_NUMBER at the stream's head, INVALID_PRODUCER_EPOCH) move the
//!   client producer to a fresh upstream identity, anchored at `acked_next`; the client
//!   only sees a retriable error.
//!
//! And no client is ever stopped by the proxy itself: OUT_OF_ORDER_SEQUENCE_NUMBER and
//! DUPLICATE_SEQUENCE_NUMBER are fatal for kafkajs (its send() rejects), so the proxy
//! never answers either:
//! - a unit known to be written (a verified resend) is answered as Apache Kafka answers a
//!   duplicate inside its five-batch window: error 0 with the base offset the upstream
//!   gave it (-1 if the proxy never saw one), [`Verdict::Written`];
//! - a unit below the acknowledged sequence that is not known to be written (the proxy
//!   forgot it, or the client reuses acknowledged sequences for other records, as kafkajs
//!   does when it rolls back every partition of a failed request and re-partitions) is
//!   written: at-least-once, never lost. It starts a new stream on a fresh upstream
//!   identity (the old one's broker would drop it as a duplicate or refuse it), forwarded
//!   alone until acknowledged, and the partition's `acked_next` follows the client's new
//!   line from there;
//! - an upstream 45/46/47/59 the proxy cannot place becomes NOT_ENOUGH_REPLICAS.
//!
//! INVALID_PRODUCER_EPOCH stays for a batch of an epoch its client already left behind
//! (a broker fences it too). No known client sends one: Java and librdkafka bump only
//! once nothing is in flight, and kafkajs never bumps (one InitProducerId per connect).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub const REQUEST_TIMED_OUT: i16 = 7;
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const UNKNOWN_PRODUCER_ID: i16 = 59;

/// First producer id of the proxy's own namespace ("KS" in the top bytes). Clusters
/// count producer ids up from 0 (in blocks of 1,000 in Apache Kafka); none gets near 2^62.
pub const NAMESPACE_BASE: i64 = 0x4B53_0000_0000_0000;

/// The error a client gets for a unit the proxy holds back: retriable by every client,
/// and it says "not written" (librdkafka: not persisted), so idempotence is unaffected.
pub const HOLD: i16 = NOT_ENOUGH_REPLICAS;

/// Which cluster (by config name).
pub type ClusterName = Arc<str>;

/// One client producer's batches for one partition in one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub topic: Bytes,
    pub partition: i32,
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub count: i32,
    /// Identifies the content: a retry of the same batches has the same fingerprint.
    pub fingerprint: u64,
}

/// What to do with a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Before the first switch: the initial cluster's own id, untouched.
    PassThrough,
    /// Rewrite to this identity; `base` maps client sequences (upstream = client - base).
    Forward {
        upstream_id: i64,
        upstream_epoch: i16,
        base: i32,
        ticket: Ticket,
    },
    /// Do not forward: answer the client's partition with this error.
    Answer(i16),
    /// Do not forward: the unit is known to be written; answer success with the base
    /// offset it was written at (-1: not known), as a broker answers a duplicate.
    Written { base_offset: i64 },
    /// Get a fresh upstream identity on this cluster first (see [`Sequencer::install`]).
    NeedIdentity,
    /// Not yet: a unit on the wire decides where this one goes (its stream's first
    /// unit, or the partition's last unit on the old cluster). The caller may wait for
    /// an answer and ask again, or answer [`HOLD`] at once, as it must on the second
    /// `Await`; waiting in the proxy spares the client a retry backoff.
    Await,
}

/// Carried with a forwarded unit to its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    producer_id: i64,
    topic: Bytes,
    partition: i32,
    serial: u64,
    start: i64,
    count: i32,
    first_seq: i32,
    fingerprint: u64,
}

/// What the client is told about a forwarded unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub error_code: i16,
    /// Meaningful with error 0: where the unit was written (-1: not known).
    pub base_offset: i64,
}

#[derive(Debug, Default)]
struct Entry {
    count: i32,
    fingerprint: u64,
    first_seq: i32,
    /// Copies of this unit on the wire now.
    in_flight: u32,
    /// Times sent: a duplicate answer is believable only for a unit sent before.
    sends: u32,
    acked: bool,
    /// Where the upstream wrote it, once acknowledged (-1: not known).
    base_offset: i64,
}

#[derive(Debug)]
struct Stream {
    cluster: ClusterName,
    serial: u64,
    client_epoch: i16,
    upstream_id: i64,
    upstream_epoch: i16,
    base: i32,
    /// Upstream offset (from 0) -> unit sent there.
    entries: BTreeMap<i64, Entry>,
    /// Every offset below this was acknowledged (entries there were dropped).
    floor: i64,
    acked_any: bool,
}

impl Stream {
    fn offset(&self, client_seq: i32) -> i64 {
        (i64::from(client_seq) - i64::from(self.base)).rem_euclid(1 << 31)
    }
    fn in_flight(&self) -> bool {
        self.entries.values().any(|e| e.in_flight > 0)
    }
    /// Acknowledged entries beyond the last few are folded into `floor`.
    fn compact(&mut self) {
        const KEEP_ACKED: usize = 8;
        while self.entries.values().filter(|e| e.acked).count() > KEEP_ACKED {
            let (&start, e) = self.entries.iter().next().expect("non-empty");
            if !e.acked {
                break;
            }
            self.floor = self.floor.max(start + i64::from(e.count));
            self.entries.remove(&start);
        }
    }
}

#[derive(Debug, Default)]
struct Part {
    /// Client sequence right after the last acknowledged unit (current client epoch).
    acked_next: Option<i32>,
    /// With nothing known, the lowest sequence held back so far: a later unit must not
    /// become the base ahead of it.
    lowest_held: Option<i32>,
    /// The last units acknowledged in this client epoch, whatever stream carried them:
    /// a client that missed an acknowledgement (its connection was cut at a switch)
    /// resends the unit, and it is then known to be written. (first sequence, count,
    /// fingerprint, base offset.)
    recent: std::collections::VecDeque<(i32, i32, u64, i64)>,
    /// The current stream is last; older ones stay while they have units in flight.
    streams: Vec<Stream>,
}

#[derive(Debug, Clone, Copy)]
struct Upstream {
    id: i64,
    epoch: i16,
    client_epoch: i16,
    serial: u64,
}

#[derive(Debug)]
struct Producer {
    client_epoch: i16,
    /// Every partition of this epoch starts at sequence 0 (a fresh id, or a bump seen).
    starts_at_zero: bool,
    upstreams: HashMap<ClusterName, Upstream>,
    parts: HashMap<(Bytes, i32), Part>,
    last_used: Instant,
}

impl Producer {
    fn new(client_epoch: i16, starts_at_zero: bool, now: Instant) -> Self {
        Producer {
            client_epoch,
            starts_at_zero,
            upstreams: HashMap::new(),
            parts: HashMap::new(),
            last_used: now,
        }
    }
    fn in_flight(&self) -> bool {
        self.parts
            .values()
            .any(|p| p.streams.iter().any(Stream::in_flight))
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub held: u64,
    pub verified_duplicates: u64,
    pub unverified_duplicates: u64,
    pub reanchored: u64,
    /// Units below the acknowledged sequence, not known to be written, written anew.
    pub rewritten: u64,
    pub expired: u64,
}

pub struct Sequencer {
    producers: HashMap<i64, Producer>,
    next_id: i64,
    next_serial: u64,
    expiry: Duration,
    last_sweep: Option<Instant>,
    /// Sessions from before the first switch (not followed) may have units in flight.
    untracked_in_flight: bool,
    pub stats: Stats,
}

impl Sequencer {
    /// `expiry`: how long an idle client producer is remembered (Kafka forgets idle
    /// producers after `producer.id.expiration.ms`, one day by default).
    pub fn new(expiry: Duration) -> Self {
        Sequencer {
            producers: HashMap::new(),
            next_id: NAMESPACE_BASE,
            next_serial: 1,
            expiry,
            last_sweep: None,
            untracked_in_flight: false,
            stats: Stats::default(),
        }
    }

    /// Whether sessions of generation 0 (whose units the proxy passes through without
    /// following them) are still open.
    pub fn set_untracked_in_flight(&mut self, on: bool) {
        self.untracked_in_flight = on;
    }

    pub fn set_expiry(&mut self, expiry: Duration) {
        self.expiry = expiry;
    }

    /// Client producers remembered now.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// A producer id for a client from the proxy's namespace, backed by an identity
    /// `cluster` just issued (an InitProducerId answered after the first switch).
    /// Returns the id and epoch to give the client.
    pub fn issue(
        &mut self,
        cluster: &ClusterName,
        upstream_id: i64,
        upstream_epoch: i16,
        now: Instant,
    ) -> (i64, i16) {
        let id = self.next_id;
        self.next_id += 1;
        let serial = self.serial();
        let mut p = Producer::new(0, true, now);
        p.upstreams.insert(
            cluster.clone(),
            Upstream {
                id: upstream_id,
                epoch: upstream_epoch,
                client_epoch: 0,
                serial,
            },
        );
        self.producers.insert(id, p);
        (id, 0)
    }

    /// Installs a fresh upstream identity after [`Verdict::NeedIdentity`]. A concurrent
    /// request may have installed one already: the first stays, this one is unused.
    pub fn install(
        &mut self,
        producer_id: i64,
        client_epoch: i16,
        cluster: &ClusterName,
        upstream_id: i64,
        upstream_epoch: i16,
    ) {
        let serial = self.serial();
        let Some(p) = self.producers.get_mut(&producer_id) else {
            return;
        };
        if p.client_epoch != client_epoch {
            return;
        }
        let current = p.upstreams.get(cluster);
        if current.is_some_and(|u| u.client_epoch == client_epoch) {
            return;
        }
        p.upstreams.insert(
            cluster.clone(),
            Upstream {
                id: upstream_id,
                epoch: upstream_epoch,
                client_epoch,
                serial,
            },
        );
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// Decides one unit. `generation` 0 means no switch happened yet.
    pub fn on_unit(
        &mut self,
        cluster: &ClusterName,
        generation: u64,
        u: &Unit,
        now: Instant,
    ) -> Verdict {
        if generation == 0 && u.producer_id < NAMESPACE_BASE {
            return Verdict::PassThrough;
        }
        self.maybe_sweep(now);
        let p = self
            .producers
            .entry(u.producer_id)
            .or_insert_with(|| Producer::new(u.epoch, false, now));
        p.last_used = now;
        if u.epoch != p.client_epoch {
            if epoch_older(u.epoch, p.client_epoch) {
                // A batch of an epoch the client itself has left behind.
                return Verdict::Answer(INVALID_PRODUCER_EPOCH);
            }
            // The client bumped its epoch (locally, as Java and librdkafka do on
            // OUT_OF_ORDER / UNKNOWN_PRODUCER_ID / delivery timeout): every partition
            // restarts at 0, and the old upstream identities cannot take that.
            p.client_epoch = u.epoch;
            p.starts_at_zero = true;
            p.upstreams.clear();
            for part in p.parts.values_mut() {
                part.acked_next = Some(0);
                part.lowest_held = None;
                part.recent.clear();
                part.streams.retain(Stream::in_flight);
            }
        }
        let Some(up) = p.upstreams.get(cluster).copied() else {
            return Verdict::NeedIdentity;
        };
        let starts_at_zero = p.starts_at_zero;
        let part = p
            .parts
            .entry((u.topic.clone(), u.partition))
            .or_insert_with(|| Part {
                acked_next: starts_at_zero.then_some(0),
                lowest_held: None,
                recent: std::collections::VecDeque::new(),
                streams: Vec::new(),
            });
        let current = part
            .streams
            .last()
            .is_some_and(|s| s.serial == up.serial && s.client_epoch == up.client_epoch);
        if !current {
            // A unit of this epoch still on the wire elsewhere (a draining session of the
            // old cluster) decides where this partition continues: wait for its answer.
            let busy = part
                .streams
                .iter()
                .any(|s| s.client_epoch == up.client_epoch && s.in_flight());
            if busy {
                return Verdict::Await;
            }
            let base = match part.acked_next {
                // Nothing known (the first switch after start): the first unit seen is
                // the base, but not while sessions from before the switch, whose units
                // the proxy did not follow, may still have this partition's earlier
                // units on the wire.
                None if self.untracked_in_flight
                    || part.lowest_held.is_some_and(|h| seq_before(h, u.first_seq)) =>
                {
                    let h = part.lowest_held.get_or_insert(u.first_seq);
                    if seq_before(u.first_seq, *h) {
                        *h = u.first_seq;
                    }
                    self.stats.held += 1;
                    return Verdict::Answer(HOLD);
                }
                Some(next) => {
                    if let Some(base_offset) = already_written(part, u, &mut self.stats) {
                        return Verdict::Written { base_offset };
                    }
                    if next == u.first_seq || follows_written(part, u.epoch, u.first_seq) {
                        // Right after the last acknowledged unit, or after a unit the client
                        // was told is written (its line went back and forth: kafkajs).
                        u.first_seq
                    } else if seq_before(u.first_seq, next) {
                        // Below what is acknowledged, yet not a unit known to be written:
                        // the client went back (kafkajs after a failed request) or the proxy
                        // forgot the unit. Write it (at-least-once) as the first unit of a
                        // stream on this identity, which holds no state for this partition
                        // (a stream that is not current is never on the current identity);
                        // the client's line continues from it.
                        self.stats.rewritten += 1;
                        part.acked_next = Some(u.first_seq);
                        u.first_seq
                    } else {
                        // An earlier unit must come first.
                        self.stats.held += 1;
                        return Verdict::Answer(HOLD);
                    }
                }
                None => u.first_seq,
            };
            part.lowest_held = None;
            part.streams.retain(Stream::in_flight);
            // An identity carries one stream per partition: coming back to a cluster
            // later must not restart sequences under an identity that wrote there.
            p.upstreams.retain(|c, _| c == cluster);
            part.streams.push(Stream {
                cluster: cluster.clone(),
                serial: up.serial,
                client_epoch: up.client_epoch,
                upstream_id: up.id,
                upstream_epoch: up.epoch,
                base,
                entries: BTreeMap::new(),
                floor: 0,
                acked_any: false,
            });
        }
        let s = part.streams.last_mut().expect("current stream");
        let off = s.offset(u.first_seq);
        let end = off + i64::from(u.count);
        let ticket = Ticket {
            producer_id: u.producer_id,
            topic: u.topic.clone(),
            partition: u.partition,
            serial: s.serial,
            start: off,
            count: u.count,
            first_seq: u.first_seq,
            fingerprint: u.fingerprint,
        };
        let forward = |s: &Stream, ticket| Verdict::Forward {
            upstream_id: s.upstream_id,
            upstream_epoch: s.upstream_epoch,
            base: s.base,
            ticket,
        };
        // The same unit again (a client retry).
        if let Some(e) = s.entries.get_mut(&off) {
            if e.count == u.count && e.fingerprint == u.fingerprint {
                if e.acked {
                    self.stats.verified_duplicates += 1;
                    return Verdict::Written {
                        base_offset: e.base_offset,
                    };
                }
                e.in_flight += 1;
                e.sends += 1;
                return forward(s, ticket);
            }
        }
        // Overlap with another unit, or reuse of an acknowledged range.
        let overlapping = s
            .entries
            .range(..end)
            .rev()
            .take_while(|(st, e)| **st + i64::from(e.count) > off)
            .map(|(_, e)| (e.in_flight > 0, e.acked))
            .collect::<Vec<_>>();
        if off < s.floor || overlapping.iter().any(|(_, acked)| *acked) {
            let busy = s.in_flight();
            if let Some(base_offset) = already_written(part, u, &mut self.stats) {
                return Verdict::Written { base_offset };
            }
            // The client reuses sequences known to be written with other records (kafkajs
            // rolls back every partition of a failed request, and a retry may re-partition):
            // this identity's broker would drop them as a duplicate or refuse them. Once
            // nothing is on the wire, write them on a fresh identity (the not-current path
            // above), never lose them, and never stop the client with an error.
            if busy {
                self.stats.held += 1;
                return Verdict::Answer(HOLD);
            }
            p.upstreams.remove(cluster);
            self.stats.reanchored += 1;
            return Verdict::NeedIdentity;
        }
        if overlapping.iter().any(|(in_flight, _)| *in_flight) {
            self.stats.held += 1;
            return Verdict::Answer(HOLD);
        }
        if !overlapping.is_empty() {
            // Only units in doubt (sent, answer lost) overlap: the client gave up on them
            // and re-sequenced. Their range may be written under this identity, so start
            // over on a fresh one from what is known to be acknowledged.
            p.upstreams.remove(cluster);
            self.stats.reanchored += 1;
            return Verdict::NeedIdentity;
        }
        // Contiguity: the unit must start where a known unit ends (or at the start).
        let predecessor_end = s
            .entries
            .range(..off)
            .next_back()
            .map(|(st, e)| st + i64::from(e.count))
            .unwrap_or(s.floor);
        // Until the stream's first unit is acknowledged the broker may hold no state for
        // this producer, and then accepts any sequence: nothing but the first goes out.
        if predecessor_end != off {
            let busy = s.in_flight();
            if let Some(base_offset) = already_written(part, u, &mut self.stats) {
                return Verdict::Written { base_offset };
            }
            if !busy && follows_written(part, u.epoch, u.first_seq) {
                // The client continues after a unit it was told is written, but this
                // stream does not end there (the client's line went back and forth): a
                // fresh identity starts a stream here (the not-current path above).
                p.upstreams.remove(cluster);
                self.stats.reanchored += 1;
                return Verdict::NeedIdentity;
            }
            self.stats.held += 1;
            return Verdict::Answer(HOLD);
        }
        if !s.acked_any && !s.entries.is_empty() {
            if s.in_flight() {
                return Verdict::Await;
            }
            self.stats.held += 1;
            return Verdict::Answer(HOLD);
        }
        s.entries.insert(
            off,
            Entry {
                count: u.count,
                fingerprint: u.fingerprint,
                first_seq: u.first_seq,
                in_flight: 1,
                sends: 1,
                acked: false,
                base_offset: -1,
            },
        );
        forward(s, ticket)
    }

    /// The upstream's answer (error, base offset) for a forwarded unit; returns what the
    /// client is told. Never OUT_OF_ORDER_SEQUENCE_NUMBER or DUPLICATE_SEQUENCE_NUMBER.
    pub fn on_result(&mut self, t: &Ticket, error: i16, base_offset: i64) -> Reply {
        let reply = |error_code| Reply {
            error_code,
            base_offset: -1,
        };
        // A unit the proxy no longer follows: what it cannot place becomes "not written",
        // and the client's resend is decided afresh.
        let unplaced = match error {
            0 => Reply {
                error_code: 0,
                base_offset,
            },
            OUT_OF_ORDER_SEQUENCE_NUMBER
            | DUPLICATE_SEQUENCE_NUMBER
            | INVALID_PRODUCER_EPOCH
            | UNKNOWN_PRODUCER_ID => reply(HOLD),
            other => reply(other),
        };
        let Some(p) = self.producers.get_mut(&t.producer_id) else {
            return unplaced;
        };
        let client_epoch = p.client_epoch;
        let Some(part) = p.parts.get_mut(&(t.topic.clone(), t.partition)) else {
            return unplaced;
        };
        let Some(s) = part.streams.iter_mut().find(|s| s.serial == t.serial) else {
            return unplaced;
        };
        let stream_epoch = s.client_epoch;
        let cluster = s.cluster.clone();
        let floor = s.floor;
        let head = s
            .entries
            .iter()
            .find(|(_, e)| !e.acked)
            .map(|(st, _)| *st)
            .unwrap_or(floor);
        let Some(e) = s.entries.get_mut(&t.start) else {
            return unplaced;
        };
        e.in_flight = e.in_flight.saturating_sub(1);
        let known = (e.base_offset >= 0).then_some(e.base_offset);
        let written_at = match error {
            0 => known.unwrap_or(base_offset),
            DUPLICATE_SEQUENCE_NUMBER if e.sends > 1 => {
                // Written by an earlier copy: success, as Apache Kafka answers a duplicate.
                self.stats.verified_duplicates += 1;
                known.unwrap_or(base_offset.max(-1))
            }
            DUPLICATE_SEQUENCE_NUMBER => {
                // Never sent before under this identity, yet "already written": whatever
                // the broker holds there is not this unit. Start over on a fresh identity.
                self.stats.unverified_duplicates += 1;
                tracing::error!(producer_id = t.producer_id, partition = t.partition, "upstream called a batch a duplicate that the proxy never sent before; not acknowledging it, moving the producer to a fresh upstream identity");
                s.entries.remove(&t.start);
                reanchor(p, &cluster, t.serial, &mut self.stats);
                return reply(HOLD);
            }
            // Written or not, nobody knows: keep the range reserved for this unit; the
            // client's retry goes to the same sequences and the broker de-duplicates it.
            REQUEST_TIMED_OUT | NOT_ENOUGH_REPLICAS_AFTER_APPEND => return reply(error),
            OUT_OF_ORDER_SEQUENCE_NUMBER | UNKNOWN_PRODUCER_ID | INVALID_PRODUCER_EPOCH => {
                s.entries.remove(&t.start);
                if t.start == head {
                    // The broker lost (or never had) our identity's state.
                    reanchor(p, &cluster, t.serial, &mut self.stats);
                }
                // Otherwise an earlier unit failed; the client resends in order.
                return reply(HOLD);
            }
            _ => {
                // Any other error: the broker did not write it.
                s.entries.remove(&t.start);
                return reply(error);
            }
        };
        e.acked = true;
        e.base_offset = written_at;
        s.acked_any = true;
        s.compact();
        if stream_epoch == client_epoch {
            const RECENT: usize = 16;
            if part.recent.len() == RECENT {
                part.recent.pop_front();
            }
            part.recent
                .push_back((t.first_seq, t.count, t.fingerprint, written_at));
            let end = t.first_seq.wrapping_add(t.count) & i32::MAX;
            match part.acked_next {
                Some(next) if next != t.first_seq && seq_before(t.first_seq, next) => {}
                _ => part.acked_next = Some(end),
            }
        }
        Reply {
            error_code: 0,
            base_offset: written_at,
        }
    }

    /// The answer to a forwarded unit will never come (the connection closed): it may
    /// or may not be written.
    pub fn abandon(&mut self, t: &Ticket) {
        let entry = self
            .producers
            .get_mut(&t.producer_id)
            .and_then(|p| p.parts.get_mut(&(t.topic.clone(), t.partition)))
            .and_then(|part| part.streams.iter_mut().find(|s| s.serial == t.serial))
            .and_then(|s| s.entries.get_mut(&t.start));
        if let Some(e) = entry {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }

    fn maybe_sweep(&mut self, now: Instant) {
        let due = self
            .last_sweep
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10));
        if !due {
            return;
        }
        self.last_sweep = Some(now);
        self.sweep(now);
    }

    /// Forgets client producers idle for longer than the expiry.
    pub fn sweep(&mut self, now: Instant) {
        let expiry = self.expiry;
        let before = self.producers.len();
        self.producers
            .retain(|_, p| p.in_flight() || now.saturating_duration_since(p.last_used) < expiry);
        self.stats.expired += (before - self.producers.len()) as u64;
    }
}

fn reanchor(p: &mut Producer, cluster: &ClusterName, serial: u64, stats: &mut Stats) {
    if p.upstreams.get(cluster).is_some_and(|u| u.serial == serial) {
        p.upstreams.remove(cluster);
        stats.reanchored += 1;
    }
}

/// A unit from before `acked_next`: known to be written only if this very unit was
/// acknowledged (same sequence, count, content). Returns its base offset (-1: unknown).
fn already_written(part: &Part, u: &Unit, stats: &mut Stats) -> Option<i64> {
    let recent = part
        .recent
        .iter()
        .rev()
        .find(|&&(seq, count, fp, _)| seq == u.first_seq && count == u.count && fp == u.fingerprint)
        .map(|&(.., offset)| offset);
    let known = recent.or_else(|| {
        part.streams.iter().find_map(|s| {
            s.entries
                .values()
                .find(|e| {
                    e.acked
                        && e.first_seq == u.first_seq
                        && e.count == u.count
                        && e.fingerprint == u.fingerprint
                })
                .map(|e| e.base_offset)
        })
    });
    if known.is_some() {
        stats.verified_duplicates += 1;
    }
    known
}

/// Some unit known to be written (acknowledged in this client epoch) ends right at `seq`.
fn follows_written(part: &Part, client_epoch: i16, seq: i32) -> bool {
    let end = |first: i32, count: i32| first.wrapping_add(count) & i32::MAX;
    part.recent.iter().any(|&(f, c, ..)| end(f, c) == seq)
        || part.streams.iter().any(|s| {
            s.client_epoch == client_epoch
                && s.entries
                    .values()
                    .any(|e| e.acked && end(e.first_seq, e.count) == seq)
        })
}

/// `a` comes before `b` in the sequence space (which wraps at 2^31).
fn seq_before(a: i32, b: i32) -> bool {
    let d = (i64::from(b) - i64::from(a)).rem_euclid(1 << 31);
    d != 0 && d < (1 << 30)
}

/// `a` is an older epoch than `b` (epochs are 0..=i16::MAX and may wrap).
fn epoch_older(a: i16, b: i16) -> bool {
    let d = (i32::from(b) - i32::from(a)).rem_euclid(1 << 15);
    d != 0 && d < (1 << 14)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(pid: i64, epoch: i16, seq: i32, count: i32) -> Unit {
        Unit {
            topic: Bytes::from_static(b"orders"),
            partition: 0,
            producer_id: pid,
            epoch,
            first_seq: seq,
            count,
            fingerprint: (seq as u64) << 8 | count as u64,
        }
    }

    fn cl(n: &str) -> ClusterName {
        Arc::from(n)
    }

    fn forward(v: Verdict) -> (i64, i16, i32, Ticket) {
        match v {
            Verdict::Forward {
                upstream_id,
                upstream_epoch,
                base,
                ticket,
            } => (upstream_id, upstream_epoch, base, ticket),
            other => panic!("expected Forward, got {other:?}"),
        }
    }

    #[test]
    fn generation_zero_passes_raw_ids_through() {
        let mut s = Sequencer::new(Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(
            s.on_unit(&cl("north"), 0, &unit(1, 0, 0, 5), now),
            Verdict::PassThrough
        );
        assert!(s.is_empty());
    }

    #[test]
    fn first_switch_probes_with_the_first_unit_alone() {
        let mut s = Sequencer::new(Duration::from_secs(60));
        let now = Instant::now();
        let west = cl("west");
        assert_eq!(
            s.on_unit(&west, 1, &unit(1, 0, 100, 5), now),
            Verdict::NeedIdentity
        );
        s.install(1, 0, &west, 1, 0);
        let (id, epoch, base, t1) = forward(s.on_unit(&west, 1, &unit(1, 0, 100, 5), now));
        assert_eq!((id, epoch, base), (1, 0, 100));
        // The next unit waits until the first is acknowledged: the broker may have no
        // state for this producer yet and would accept a gap.
        assert_eq!(
            s.on_unit(&west, 1, &unit(1, 0, 105, 5), now),
            Verdict::Await
        );
        assert_eq!(s.on_result(&t1, 0, 0).error_code, 0);
        let (_, _, _, _t2) = forward(s.on_unit(&west, 1, &unit(1, 0, 105, 5), now));
        // A gap waits.
        assert_eq!(
            s.on_unit(&west, 1, &unit(1, 0, 120, 5), now),
            Verdict::Answer(HOLD)
        );
        // Pipelining behind an in-flight unit is fine once the stream has an ack.
        let _ = forward(s.on_unit(&west, 1, &unit(1, 0, 110, 5), now));
    }

    #[test]
    fn the_collision_of_raw_and_issued_ids_cannot_merge_identities() {
        // Both clusters issue producer id 1 first. A client holding north's 1 and a
        // client that got an id from west after the switch never share an identity.
        let mut s = Sequencer::new(Duration::from_secs(60));
        let now = Instant::now();
        let west = cl("west");
        let (issued, _) = s.issue(&west, 1, 0, now);
        assert!(issued >= NAMESPACE_BASE);
        assert_eq!(
            s.on_unit(&west, 1, &unit(1, 0, 40, 1), now),
            Verdict::NeedIdentity,
            "north's raw id 1 is not west's 1"
        );
        s.install(1, 0, &west, 2, 0);
        let (id, ..) = forward(s.on_unit(&west, 1, &unit(1, 0, 40, 1), now));
        assert_eq!(id, 2);
        let (id, _, base, _) = forward(s.on_unit(&west, 1, &unit(issued, 0, 0, 1), now));
        assert_eq!((id, base), (1, 0));
    }

    #[test]
    fn client_epoch_bump_gets_a_fresh_identity_and_restarts_at_zero() {
        let mut s = Sequencer::new(Duration::from_secs(60));
        let now = Instant::now();
        let west = cl("west");
        s.on_unit(&west, 1, &unit(1, 0, 10, 5), now);
        s.install(1, 0, &west, 7, 0);
        let (_, _, _, t) = forward(s.on_unit(&west, 1, &unit(1, 0, 10, 5), now));
        s.on_result(&t, 0, 0);
        assert_eq!(
            s.on_unit(&west, 1, &unit(1, 1, 0, 5), now),
            Verdict::NeedIdentity
        );
        s.install(1, 1, &west, 8, 0);
        let (id, _, base, _) = forward(s.on_unit(&west, 1, &unit(1, 1, 0, 5), now));
        assert_eq!((id, base), (8, 0));
        // A straggler of the old epoch is fenced, as a broker would.
        assert_eq!(
            s.on_unit(&west, 1, &unit(1, 0, 15, 5), now),
            Verdict::Answer(INVALID_PRODUCER_EPOCH)
        );
    }

    #[test]
    fn duplicate_is_believed_only_for_a_unit_sent_before() {
        let mut s = Sequencer::new(Duration::from_secs(60));
        let now = Instant::now();
        let west = cl("west");
        s.on_unit(&west, 1, &unit(1, 0, 0, 5), now);
        s.install(1, 0, &west, 7, 0);
        let (.., t) = forward(s.on_unit(&west, 1, &unit(1, 0, 0, 5), now));
        // First send answered "duplicate": not believable.
        assert_eq!(
            s.on_result(&t, DUPLICATE_SEQUENCE_NUMBER, -1).error_code,
            HOLD
        );
        assert_eq!(s.stats.unverified_duplicates, 1);
        // The retry starts over on a fresh identity.
        assert_eq!(
            s.on_unit(&west, 1, &unit(1, 0, 0, 5), now),
            Verdict::NeedIdentity
        );
        s.install(1, 0, &west, 9, 0);
        let (id, .., t) = forward(s.on_unit(&west, 1, &unit(1, 0, 0, 5), now));
        assert_eq!(id, 9);
        // Answer lost; the retry is answered "duplicate": that one is believed.
        s.abandon(&t);
        let (.., t) = forward(s.on_unit(&west, 1, &unit(1, 0, 0, 5), now));
        // ...and answered as a broker answers a duplicate: success.
        assert_eq!(
            s.on_result(&t, DUPLICATE_SEQUENCE_NUMBER, -1),
            Reply {
                error_code: 0,
                base_offset: -1
            }
        );
    }

    #[test]
    fn a_switch_continues_after_the_last_acknowledged_sequence() {
        let mut s = Sequencer::new(Duration::from_secs(60));
        let now = Instant::now();
        let (west, north) = (cl("west"), cl("north"));
        let (pid, _) = s.issue(&west, 5, 0, now);
        let (.., t) = forward(s.on_unit(&west, 1, &unit(pid, 0, 0, 10), now));
        s.on_result(&t, 0, 0);
        let (.., t_inflight) = forward(s.on_unit(&west, 1, &unit(pid, 0, 10, 10), now));
        // Switch to north while 10..20 is on the wire to west: north waits for it.
        assert_eq!(
            s.on_unit(&north, 2, &unit(pid, 0, 10, 10), now),
            Verdict::NeedIdentity
        );
        s.install(pid, 0, &north, 1, 0);
        assert_eq!(
            s.on_unit(&north, 2, &unit(pid, 0, 20, 10), now),
            Verdict::Await
        );
        // West acknowledges it: north continues at 20, mapped to 0.
        s.on_result(&t_inflight, 0, 10);
        assert_eq!(
            s.on_unit(&north, 2, &unit(pid, 0, 30, 10), now),
            Verdict::Answer(HOLD),
            "20 comes first"
        );
        let (id, _, base, _) = forward(s.on_unit(&north, 2, &unit(pid, 0, 20, 10), now));
        assert_eq!((id, base), (1, 20));
    }

    #[test]
    fn a_unit_whose_ack_the_client_missed_is_known_written_on_the_next_cluster() {
        let mut s = Sequencer::new(Duration::from_secs(60));
        let now = Instant::now();
        let (west, north) = (cl("west"), cl("north"));
        let (pid, _) = s.issue(&west, 5, 0, now);
        let (.., t) = forward(s.on_unit(&west, 1, &unit(pid, 0, 0, 10), now));
        // West acknowledges; the client's connection is cut before it reads that.
        s.on_result(&t, 0, 300);
        assert_eq!(
            s.on_unit(&north, 2, &unit(pid, 0, 0, 10), now),
            Verdict::NeedIdentity
        );
        s.install(pid, 0, &north, 1, 0);
        // North must not write it again, and the client must not be told it is out of
        // order or a duplicate (fatal for kafkajs): it is written, at west's offset 300.
        assert_eq!(
            s.on_unit(&north, 2, &unit(pid, 0, 0, 10), now),
            Verdict::Written { base_offset: 300 }
        );
        let (_, _, base, _) = forward(s.on_unit(&north, 2, &unit(pid, 0, 10, 5), now));
        assert_eq!(base, 10);
    }

    #[test]
    fn a_resend_of_an_acknowledged_unit_is_success_with_its_offset() {
        let mut s = Sequencer::new(Duration::from_secs(60));
        let now = Instant::now();
        let west = cl("west");
        let (pid, _) = s.issue(&west, 5, 0, now);
        let (.., t) = forward(s.on_unit(&west, 1, &unit(pid, 0, 0, 4), now));
        assert_eq!(
            s.on_result(&t, 0, 42),
            Reply {
                error_code: 0,
                base_offset: 42
            }
        );
        assert_eq!(
            s.on_unit(&west, 1, &unit(pid, 0, 0, 4), now),
            Verdict::Written { base_offset: 42 }
        );
    }

    #[test]
    fn other_records_on_acknowledged_sequences_are_written_on_a_fresh_identity() {
        // kafkajs: a request wrote partition 0 but failed on another partition; it rolls
        // partition 0's sequence back and the retry carries other records there.
        let mut s = Sequencer::new(Duration::from_secs(60));
        let now = Instant::now();
        let west = cl("west");
        let (pid, _) = s.issue(&west, 5, 0, now);
        let (.., t) = forward(s.on_unit(&west, 1, &unit(pid, 0, 0, 2), now));
        s.on_result(&t, 0, 7);
        let mut other = unit(pid, 0, 0, 3);
        other.fingerprint ^= 1;
        assert_eq!(s.on_unit(&west, 1, &other, now), Verdict::NeedIdentity);
        s.install(pid, 0, &west, 6, 0);
        let (id, _, base, t) = forward(s.on_unit(&west, 1, &other, now));
        assert_eq!((id, base), (6, 0), "a new stream from the reused sequence");
        assert_eq!(s.stats.rewritten, 1);
        // Alone until acknowledged, then the client's line continues from it.
        assert_eq!(
            s.on_unit(&west, 1, &unit(pid, 0, 3, 1), now),
            Verdict::Await
        );
        s.on_result(&t, 0, 9);
        let (id, _, base, _) = forward(s.on_unit(&west, 1, &unit(pid, 0, 3, 1), now));
        assert_eq!((id, base), (6, 0));
        // And the first records, resent as they were, are known written at offset 7.
        assert_eq!(
            s.on_unit(&west, 1, &unit(pid, 0, 0, 2), now),
            Verdict::Written { base_offset: 7 }
        );
    }

    #[test]
    fn a_client_line_that_goes_back_and_forth_continues_after_what_it_was_told() {
        // kafkajs: A written (the request failed elsewhere), B on A's sequences written
        // (failed again), then A again: it is written; the client continues after A.
        let mut s = Sequencer::new(Duration::from_secs(60));
        let now = Instant::now();
        let west = cl("west");
        let (pid, _) = s.issue(&west, 5, 0, now);
        let a = unit(pid, 0, 0, 3);
        let (.., t) = forward(s.on_unit(&west, 1, &a, now));
        s.on_result(&t, 0, 5);
        let mut b = unit(pid, 0, 0, 2);
        b.fingerprint ^= 1;
        assert_eq!(s.on_unit(&west, 1, &b, now), Verdict::NeedIdentity);
        s.install(pid, 0, &west, 6, 0);
        let (.., t) = forward(s.on_unit(&west, 1, &b, now));
        s.on_result(&t, 0, 8);
        assert_eq!(
            s.on_unit(&west, 1, &a, now),
            Verdict::Written { base_offset: 5 }
        );
        let c = unit(pid, 0, 3, 1);
        assert_eq!(s.on_unit(&west, 1, &c, now), Verdict::NeedIdentity);
        s.install(pid, 0, &west, 7, 0);
        let (id, _, base, _) = forward(s.on_unit(&west, 1, &c, now));
        assert_eq!((id, base), (7, 3));
    }

    #[test]
    fn a_forgotten_unit_below_the_acknowledged_sequence_is_written_on_the_next_cluster() {
        let mut s = Sequencer::new(Duration::from_secs(60));
        let now = Instant::now();
        let (west, north) = (cl("west"), cl("north"));
        let (pid, _) = s.issue(&west, 5, 0, now);
        let (.., t) = forward(s.on_unit(&west, 1, &unit(pid, 0, 0, 10), now));
        s.on_result(&t, 0, 0);
        s.on_unit(&north, 2, &unit(pid, 0, 4, 2), now);
        s.install(pid, 0, &north, 1, 0);
        let (id, _, base, _) = forward(s.on_unit(&north, 2, &unit(pid, 0, 4, 2), now));
        assert_eq!((id, base), (1, 4));
    }

    #[test]
    fn upstream_sequence_errors_never_reach_the_client() {
        let mut s = Sequencer::new(Duration::from_secs(60));
        let now = Instant::now();
        let west = cl("west");
        let (pid, _) = s.issue(&west, 5, 0, now);
        let (.., t) = forward(s.on_unit(&west, 1, &unit(pid, 0, 0, 1), now));
        let (.., t2) = forward({
            s.on_result(&t, 0, 0);
            s.on_unit(&west, 1, &unit(pid, 0, 1, 1), now)
        });
        for code in [
            OUT_OF_ORDER_SEQUENCE_NUMBER,
            DUPLICATE_SEQUENCE_NUMBER,
            INVALID_PRODUCER_EPOCH,
            UNKNOWN_PRODUCER_ID,
        ] {
            // A ticket the proxy no longer follows, and one it does.
            let mut gone = t2.clone();
            gone.serial = 0;
            assert_eq!(s.on_result(&gone, code, -1).error_code, HOLD);
        }
        assert_eq!(
            s.on_result(&t2, OUT_OF_ORDER_SEQUENCE_NUMBER, -1)
                .error_code,
            HOLD
        );
    }

    #[test]
    fn idle_producers_expire() {
        let mut s = Sequencer::new(Duration::from_secs(60));
        let now = Instant::now();
        let west = cl("west");
        s.issue(&west, 1, 0, now);
        s.issue(&west, 2, 0, now);
        assert_eq!(s.len(), 2);
        s.sweep(now + Duration::from_secs(61));
        assert_eq!(s.len(), 0);
        assert_eq!(s.stats.expired, 2);
    }

    #[test]
    fn sequence_and_epoch_order_wrap() {
        assert!(seq_before(i32::MAX, 0));
        assert!(seq_before(1, 2));
        assert!(!seq_before(2, 1));
        assert!(epoch_older(i16::MAX, 0));
        assert!(epoch_older(3, 4));
        assert!(!epoch_older(4, 3));
    }
}
