//! Deterministic simulation of idempotent producers through switches.
//!
//! A model of the broker's idempotence rules (sequence continuity per producer and
//! partition, the last five batches cached for duplicates, answered as Apache Kafka does
//! (success with the original offset) or as older brokers do (DUPLICATE_SEQUENCE_NUMBER),
//! epoch fencing, any sequence accepted from a producer the partition has no state for,
//! topics created on first use, UNKNOWN_TOPIC_ID for clients naming topics by an id the
//! cluster they were just switched to does not know yet), two model clients, and the proxy's real [`Sequencer`]
//! between them (units it must wait for an answer for wait on their connection, asked
//! again each step until a short deadline or a switch, as the proxy does),
//! with switches, failbacks, drained and cut-off connections at random
//! moments, topics existing or new on the target, and equal or different producer id
//! numbering on the two clusters. The clients:
//! - Java / librdkafka-like: up to 5 in flight per partition, in-order resends, a local
//!   epoch bump that restarts sequences at 0 on OUT_OF_ORDER_SEQUENCE_NUMBER /
//!   UNKNOWN_PRODUCER_ID at the head, DUPLICATE treated as success;
//! - kafkajs-like: one request in flight, several partitions per request, any partition
//!   error fails the whole request and rolls every partition's sequence back, keyless
//!   messages re-partitioned on each retry, no epoch bump, and 45/46/47/59 fatal. (Keyless
//!   re-partitioning is modelled from the first switch on only: against a broker directly it
//!   can lose records or stop kafkajs by itself, which is kafkajs's, not the proxy's.)
//!
//! Invariants: every record a client was told is written is on some cluster (at the
//! offset it was told, when it was told one), no client fails, and the proxy never
//! answers a rewritten or held batch with OUT_OF_ORDER_SEQUENCE_NUMBER,
//! DUPLICATE_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH or UNKNOWN_PRODUCER_ID (fatal for
//! kafkajs). Seeds are printed on failure; `SIM_SEED=<n>` replays one,
//! `SIM_SCHEDULES=<n>` runs more.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_sidecar::producer_identity::map_sequence;
use kafka_sidecar::producer_identity::sequencer::{
    Sequencer, Ticket, Unit, Verdict, DUPLICATE_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH,
    NOT_ENOUGH_REPLICAS, OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// A client naming a topic by an id the cluster does not have (Produce v13).
const UNKNOWN_TOPIC_ID: i16 = 100;
const NETWORK_ERROR: i16 = -100; // the connection closed: the client does not know
const PARTITIONS: i32 = 2;
/// How long the model proxy lets a unit wait for the answer it depends on
/// ([`Verdict::Await`]): short against the proxy's 2 s, so that schedules reach the
/// deadline too.
const AWAIT_STEPS: u64 = 30;

// ------------------------------------------------------------------------------- broker

/// Client error codes that stop kafkajs (its send() rejects).
const FATAL_FOR_KAFKAJS: [i16; 4] = [
    OUT_OF_ORDER_SEQUENCE_NUMBER,
    DUPLICATE_SEQUENCE_NUMBER,
    INVALID_PRODUCER_EPOCH,
    UNKNOWN_PRODUCER_ID,
];

#[derive(Default)]
struct PState {
    epoch: i16,
    last_seq: i32,
    /// (first, last) sequences and base offset of the last five batches written.
    cache: VecDeque<(i32, i32, i64)>,
}

struct Broker {
    next_pid: i64,
    topic_exists: bool,
    /// Answers a duplicate in the window with DUPLICATE_SEQUENCE_NUMBER (older brokers)
    /// instead of success with the original offset (Apache Kafka).
    dup_error: bool,
    created: HashSet<i32>,
    /// Partitions whose next Produce names the topic by an id this cluster does not know
    /// (a client that names topics by id, right after a switch to this cluster, until
    /// its metadata is refreshed): answered UNKNOWN_TOPIC_ID, retriable.
    stale_ids: HashSet<i32>,
    /// Whether clients name topics by id here (then every activation starts stale).
    by_id: bool,
    state: HashMap<(i64, i32), PState>,
    /// Record content ids written.
    log: HashSet<u64>,
    /// (record, partition, offset) written.
    placed: HashSet<(u64, i32, i64)>,
    next_offset: HashMap<i32, i64>,
}

impl Broker {
    fn new(first_pid: i64, topic_exists: bool, dup_error: bool) -> Self {
        Broker {
            next_pid: first_pid,
            topic_exists,
            dup_error,
            created: HashSet::new(),
            stale_ids: HashSet::new(),
            by_id: false,
            state: HashMap::new(),
            log: HashSet::new(),
            placed: HashSet::new(),
            next_offset: HashMap::new(),
        }
    }

    fn init_producer_id(&mut self) -> (i64, i16) {
        let id = self.next_pid;
        self.next_pid += 1;
        (id, 0)
    }

    /// Apache Kafka's ProducerStateManager rules, reduced to what matters here: the
    /// error code and base offset.
    fn produce(
        &mut self,
        pid: i64,
        epoch: i16,
        partition: i32,
        first: i32,
        recs: &[u64],
    ) -> (i16, i64) {
        if !self.topic_exists && self.created.insert(partition) {
            // Auto-created by this very request, which fails.
            return (UNKNOWN_TOPIC_OR_PARTITION, -1);
        }
        if self.stale_ids.remove(&partition) {
            return (UNKNOWN_TOPIC_ID, -1);
        }
        let last = first + recs.len() as i32 - 1;
        let write = |b: &mut Broker, s: &mut PState| {
            let next = b.next_offset.entry(partition).or_default();
            let base = *next;
            *next += recs.len() as i64;
            s.last_seq = last;
            s.cache.push_back((first, last, base));
            if s.cache.len() > 5 {
                s.cache.pop_front();
            }
            b.log.extend(recs.iter().copied());
            for (i, r) in recs.iter().enumerate() {
                b.placed.insert((*r, partition, base + i as i64));
            }
            (0, base)
        };
        let mut s = self.state.remove(&(pid, partition)).unwrap_or(PState {
            epoch: -1,
            last_seq: -1,
            cache: VecDeque::new(),
        });
        let dup = s
            .cache
            .iter()
            .find(|c| (c.0, c.1) == (first, last))
            .map(|c| c.2);
        let code = if s.epoch == -1 {
            // No state for this producer here: any sequence is accepted.
            s.epoch = epoch;
            write(self, &mut s)
        } else if epoch < s.epoch {
            (INVALID_PRODUCER_EPOCH, -1)
        } else if epoch > s.epoch {
            if first != 0 {
                (OUT_OF_ORDER_SEQUENCE_NUMBER, -1)
            } else {
                s.epoch = epoch;
                s.cache.clear();
                write(self, &mut s)
            }
        } else if let Some(base) = dup {
            if self.dup_error {
                (DUPLICATE_SEQUENCE_NUMBER, -1)
            } else {
                (0, base)
            }
        } else if first == s.last_seq.wrapping_add(1) {
            write(self, &mut s)
        } else {
            (OUT_OF_ORDER_SEQUENCE_NUMBER, -1)
        };
        self.state.insert((pid, partition), s);
        code
    }
}

// ------------------------------------------------------------------------------- client

#[derive(Clone, Debug)]
struct Batch {
    recs: Vec<u64>,
    seq: i32,
    retries: u32,
    in_flight: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Java / librdkafka-like.
    Java,
    /// kafkajs-like (`idempotent: true`, `maxInFlightRequests: 1`).
    Kafkajs,
}

/// A kafkajs message waiting to be acknowledged: its record, the partition its key
/// maps to, and whether it has no key (then re-partitioned on every try).
#[derive(Clone, Debug)]
struct Msg {
    rec: u64,
    home: usize,
    keyless: bool,
}

/// One partition of kafkajs's request in flight: (partition, sequence, records, result).
type JsPart = (usize, i32, Vec<u64>, Option<i16>);

struct Client {
    kind: Kind,
    pid: Option<i64>,
    epoch: i16,
    /// Per partition: batches not yet acknowledged, in sequence order.
    outstanding: Vec<VecDeque<Batch>>,
    next_seq: Vec<i32>,
    bump_pending: bool,
    acked: Vec<u64>,
    failed: Vec<u64>,
    fatal: Option<String>,
    next_record: u64,
    to_produce: u32,
    /// kafkajs: messages not yet handed to send(), in order.
    msgs: VecDeque<Msg>,
    /// kafkajs: the messages of the send() in progress, tried until written or failed.
    sending: Vec<Msg>,
    /// kafkajs: the one request in flight.
    request: Option<Vec<JsPart>>,
    /// kafkajs: tries of the current messages.
    tries: u32,
}

impl Client {
    fn new(kind: Kind, id: u64, to_produce: u32) -> Self {
        Client {
            kind,
            pid: None,
            epoch: 0,
            outstanding: vec![VecDeque::new(); PARTITIONS as usize],
            next_seq: vec![0; PARTITIONS as usize],
            bump_pending: false,
            acked: vec![],
            failed: vec![],
            fatal: None,
            next_record: id << 32,
            to_produce,
            msgs: VecDeque::new(),
            sending: vec![],
            request: None,
            tries: 0,
        }
    }

    fn in_flight(&self) -> usize {
        self.outstanding
            .iter()
            .flatten()
            .filter(|b| b.in_flight)
            .count()
    }

    fn done(&self) -> bool {
        self.fatal.is_some()
            || (self.to_produce == 0
                && self.outstanding.iter().all(VecDeque::is_empty)
                && self.msgs.is_empty()
                && self.sending.is_empty())
    }

    fn new_batch(&mut self, rng: &mut StdRng) {
        if self.to_produce == 0 {
            return;
        }
        let p = rng.random_range(0..PARTITIONS) as usize;
        let n = rng.random_range(1..=3u32).min(self.to_produce);
        self.to_produce -= n;
        let recs: Vec<u64> = (0..u64::from(n)).map(|i| self.next_record + i).collect();
        self.next_record += u64::from(n);
        if self.kind == Kind::Kafkajs {
            let keyless = rng.random_bool(0.5);
            self.msgs.extend(recs.into_iter().map(|rec| Msg {
                rec,
                home: p,
                keyless,
            }));
            return;
        }
        let seq = self.next_seq[p];
        self.next_seq[p] = seq.wrapping_add(n as i32) & i32::MAX;
        self.outstanding[p].push_back(Batch {
            recs,
            seq,
            retries: 0,
            in_flight: false,
        });
    }

    /// The next batch to send on a partition: the lowest unsent one, only if every
    /// earlier one is in flight (in-order delivery), at most 5 in flight.
    fn sendable(&self, p: usize) -> Option<usize> {
        if self.kind != Kind::Java || self.bump_pending || self.pid.is_none() {
            return None;
        }
        let q = &self.outstanding[p];
        let inflight = q.iter().filter(|b| b.in_flight).count();
        if inflight >= 5 {
            return None;
        }
        let i = q.iter().position(|b| !b.in_flight)?;
        q.iter().take(i).all(|b| b.in_flight).then_some(i)
    }

    /// kafkajs's next request: the messages of the send() in progress (up to six
    /// waiting ones for a new send()), keyless ones on a random partition
    /// (`repartition`), one batch per partition at that partition's sequence.
    fn js_request(&mut self, rng: &mut StdRng, repartition: bool) -> Option<Vec<JsPart>> {
        if self.kind != Kind::Kafkajs || self.pid.is_none() || self.request.is_some() {
            return None;
        }
        if self.sending.is_empty() {
            let n = self.msgs.len().min(6);
            self.sending = self.msgs.drain(..n).collect();
        }
        if self.sending.is_empty() {
            return None;
        }
        let mut parts: Vec<JsPart> = vec![];
        for m in &self.sending {
            let p = if m.keyless && repartition {
                rng.random_range(0..PARTITIONS) as usize
            } else {
                m.home
            };
            match parts.iter_mut().find(|x| x.0 == p) {
                Some(x) => x.2.push(m.rec),
                None => parts.push((p, self.next_seq[p], vec![m.rec], None)),
            }
        }
        self.request = Some(parts.clone());
        Some(parts)
    }

    fn on_result(&mut self, p: usize, seq: i32, epoch: i16, code: i16) {
        if self.kind == Kind::Kafkajs {
            return self.js_on_result(p, seq, code);
        }
        let q = &mut self.outstanding[p];
        let Some(i) = q.iter().position(|b| b.seq == seq && b.in_flight) else {
            return;
        };
        if epoch != self.epoch {
            // An answer from before our bump: what it says about the old epoch no longer
            // matters, except a success (the records are written).
            if code == 0 || code == DUPLICATE_SEQUENCE_NUMBER {
                let b = q.remove(i).expect("present");
                self.acked.extend(b.recs);
            } else {
                q[i].in_flight = false;
            }
            self.maybe_bump();
            return;
        }
        match code {
            0 | DUPLICATE_SEQUENCE_NUMBER => {
                let b = q.remove(i).expect("present");
                self.acked.extend(b.recs);
            }
            OUT_OF_ORDER_SEQUENCE_NUMBER | UNKNOWN_PRODUCER_ID if i == 0 => {
                q[i].in_flight = false;
                self.bump_pending = true;
            }
            OUT_OF_ORDER_SEQUENCE_NUMBER
            | UNKNOWN_PRODUCER_ID
            | NOT_ENOUGH_REPLICAS
            | UNKNOWN_TOPIC_OR_PARTITION
            | UNKNOWN_TOPIC_ID
            | NETWORK_ERROR => {
                q[i].in_flight = false;
                q[i].retries += 1;
                if q[i].retries > 500 {
                    // Delivery timeout: the application is told, the client bumps.
                    let b = q.remove(i).expect("present");
                    self.failed.extend(b.recs);
                    self.bump_pending = true;
                }
            }
            other => self.fatal = Some(format!("error {other} on seq {seq}")),
        }
        self.maybe_bump();
    }

    /// kafkajs: the request settles once every partition has an answer. All written:
    /// the sequences advance. Any error: the request fails as a whole (the Produce parser
    /// throws the first partition error), every partition's sequence stays where it was
    /// (rolled back) and all its messages are retried, unless the error is fatal.
    fn js_on_result(&mut self, p: usize, seq: i32, code: i16) {
        let Some(parts) = self.request.as_mut() else {
            return;
        };
        let Some(part) = parts
            .iter_mut()
            .find(|x| x.0 == p && x.1 == seq && x.3.is_none())
        else {
            return;
        };
        part.3 = Some(code);
        if parts.iter().any(|x| x.3.is_none()) {
            return;
        }
        let parts = self.request.take().expect("in flight");
        if let Some(&(p, seq, _, Some(code))) = parts
            .iter()
            .find(|x| x.3.is_some_and(|c| FATAL_FOR_KAFKAJS.contains(&c)))
        {
            self.fatal = Some(format!("kafkajs: error {code} on p{p} seq {seq}"));
            return;
        }
        if parts.iter().all(|x| x.3 == Some(0)) {
            for (p, _, recs, _) in parts {
                self.next_seq[p] = self.next_seq[p].wrapping_add(recs.len() as i32) & i32::MAX;
                self.acked.extend(recs);
            }
            self.sending.clear();
            self.tries = 0;
            return;
        }
        self.tries += 1;
        if self.tries > 500 {
            // Retries exhausted: send() rejects, the application is told.
            self.failed.extend(self.sending.drain(..).map(|m| m.rec));
            self.tries = 0;
        }
    }

    /// Java's bumpIdempotentProducerEpoch / librdkafka's drain-and-bump: once nothing is
    /// in flight, the epoch goes up and every partition restarts at 0.
    fn maybe_bump(&mut self) {
        if !self.bump_pending || self.in_flight() > 0 {
            return;
        }
        self.bump_pending = false;
        self.epoch += 1;
        for (p, q) in self.outstanding.iter_mut().enumerate() {
            let mut seq = 0i32;
            for b in q.iter_mut() {
                b.seq = seq;
                seq += b.recs.len() as i32;
            }
            self.next_seq[p] = seq;
        }
    }
}

// -------------------------------------------------------------------------------- proxy

/// A request on one client connection, as the proxy forwarded it.
struct Req {
    client: usize,
    partition: usize,
    client_seq: i32,
    client_epoch: i16,
    /// None: the proxy answered it itself with this code and base offset.
    upstream: Option<(i64, i16, i32)>,
    answer: (i16, i64),
    ticket: Option<Ticket>,
    recs: Vec<u64>,
    /// Processed by the broker (error, base offset), awaiting delivery.
    result: Option<(i16, i64)>,
    /// Not decided yet: the proxy waits for an answer this unit depends on, or a
    /// request ahead of it on the connection does (the proxy reads nothing meanwhile).
    undecided: Option<Unit>,
    /// Waiting since it was first asked: until this moment, and while no switch starts
    /// (generation at the first ask).
    parked: Option<(Instant, u64)>,
}

struct Conn {
    cluster: usize,
    generation: u64,
    /// Requests read by the proxy, in order.
    reqs: VecDeque<Req>,
    /// The proxy stopped reading (switch): the client's further writes are lost.
    draining: bool,
}

struct World {
    rng: StdRng,
    brokers: [Broker; 2],
    names: [Arc<str>; 2],
    active: usize,
    generation: u64,
    seq: Sequencer,
    clients: Vec<Client>,
    /// One connection per client (the current one) plus draining ones.
    conns: Vec<(usize, Conn)>,
    now: Instant,
    log: Vec<String>,
    /// Answers from the proxy (not passed through) that would stop kafkajs.
    proxy_fatal: Vec<String>,
    /// Successes whose base offset does not hold the batch's first record.
    bad_offsets: Vec<String>,
    /// Batches the proxy answered itself as written.
    proxy_written: u64,
    /// Units that waited for an answer, then went out / were held at the deadline or
    /// a switch.
    waited_forwarded: u64,
    waited_held: u64,
}

impl World {
    fn current_conn(&mut self, c: usize) -> usize {
        if let Some(i) = self
            .conns
            .iter()
            .position(|(cl, k)| *cl == c && !k.draining)
        {
            return i;
        }
        self.conns.push((
            c,
            Conn {
                cluster: self.active,
                generation: self.generation,
                reqs: VecDeque::new(),
                draining: false,
            },
        ));
        self.conns.len() - 1
    }

    fn init_client(&mut self, c: usize) {
        let b = self.active;
        let (pid, epoch) = self.brokers[b].init_producer_id();
        let (pid, epoch) = if self.generation == 0 {
            (pid, epoch)
        } else {
            self.seq.issue(&self.names[b], pid, epoch, self.now)
        };
        self.clients[c].pid = Some(pid);
        self.clients[c].epoch = epoch;
    }

    fn send(&mut self, c: usize, p: usize, i: usize) {
        let b = &mut self.clients[c].outstanding[p][i];
        b.in_flight = true;
        let (seq, recs) = (b.seq, b.recs.clone());
        self.submit(c, p, seq, recs);
    }

    /// kafkajs sends its next request, if it has one to send.
    fn send_js(&mut self, c: usize) {
        let repartition = self.generation > 0;
        let Some(parts) = self.clients[c].js_request(&mut self.rng, repartition) else {
            return;
        };
        for (p, seq, recs, _) in parts {
            self.submit(c, p, seq, recs);
        }
    }

    /// One client batch through the proxy onto the client's current connection: decided
    /// at once, unless a unit ahead of it on the connection is still undecided.
    fn submit(&mut self, c: usize, p: usize, seq: i32, recs: Vec<u64>) {
        let ci = self.current_conn(c);
        let client = &self.clients[c];
        let fingerprint = recs.iter().fold(u64::from(seq as u32), |h, r| {
            h.wrapping_mul(31).wrapping_add(*r)
        });
        let unit = Unit {
            topic: Bytes::from_static(b"orders"),
            partition: p as i32,
            producer_id: client.pid.expect("initialised"),
            epoch: client.epoch,
            first_seq: seq,
            count: recs.len() as i32,
            fingerprint,
        };
        if self.conns[ci].1.draining {
            unreachable!("current connection is never draining");
        }
        self.conns[ci].1.reqs.push_back(Req {
            client: c,
            partition: p,
            client_seq: unit.first_seq,
            client_epoch: unit.epoch,
            upstream: None,
            answer: (0, -1),
            ticket: None,
            recs,
            result: None,
            undecided: Some(unit),
            parked: None,
        });
        self.decide_waiting(ci);
    }

    /// The proxy decides what it has read on every connection and not decided yet, in
    /// order: as `ProducerIdentities::decide` does, a unit that must wait for an answer
    /// asks the sequencer again (here: at every step) until its deadline or a switch,
    /// then is held.
    fn decide_parked(&mut self) {
        for ci in 0..self.conns.len() {
            self.decide_waiting(ci);
        }
    }

    fn decide_waiting(&mut self, ci: usize) {
        while let Some(i) = self.conns[ci]
            .1
            .reqs
            .iter()
            .position(|r| r.undecided.is_some())
        {
            // After a switch the proxy reads nothing more from a draining connection:
            // only a unit it was already deciding is decided (held).
            if self.conns[ci].1.draining && self.conns[ci].1.reqs[i].parked.is_none() {
                return;
            }
            if !self.decide(ci, i) {
                return;
            }
        }
    }

    /// Asks the sequencer about one read unit; false while it waits.
    fn decide(&mut self, ci: usize, i: usize) -> bool {
        let cluster = self.conns[ci].1.cluster;
        let generation = self.conns[ci].1.generation;
        let (now, current_generation) = (self.now, self.generation);
        let req = &mut self.conns[ci].1.reqs[i];
        let unit = req.undecided.clone().expect("undecided");
        loop {
            match self
                .seq
                .on_unit(&self.names[cluster], generation, &unit, self.now)
            {
                Verdict::PassThrough => {
                    req.upstream = Some((unit.producer_id, unit.epoch, unit.first_seq));
                }
                Verdict::Forward {
                    upstream_id,
                    upstream_epoch,
                    base,
                    ticket,
                } => {
                    req.upstream = Some((
                        upstream_id,
                        upstream_epoch,
                        map_sequence(base, unit.first_seq),
                    ));
                    req.ticket = Some(ticket);
                    if req.parked.is_some() {
                        self.waited_forwarded += 1;
                    }
                }
                Verdict::Answer(code) => req.answer = (code, -1),
                Verdict::Await => match req.parked {
                    None => {
                        req.parked =
                            Some((now + Duration::from_millis(AWAIT_STEPS), current_generation));
                        return false;
                    }
                    Some((until, asked_at)) if now < until && asked_at == current_generation => {
                        return false;
                    }
                    Some(_) => {
                        self.waited_held += 1;
                        req.answer = (NOT_ENOUGH_REPLICAS, -1);
                    }
                },
                Verdict::Written { base_offset } => {
                    self.proxy_written += 1;
                    req.answer = (0, base_offset);
                }
                Verdict::NeedIdentity => {
                    let (id, e) = self.brokers[cluster].init_producer_id();
                    self.seq
                        .install(unit.producer_id, unit.epoch, &self.names[cluster], id, e);
                    continue;
                }
            }
            break;
        }
        req.undecided = None;
        let line = format!(
            "send c{} p{} seq{} e{}{} -> {:?} answer {:?}",
            req.client,
            req.partition,
            unit.first_seq,
            unit.epoch,
            if req.parked.is_some() {
                " (waited)"
            } else {
                ""
            },
            req.upstream,
            req.answer
        );
        self.log.push(line);
        true
    }

    /// The broker processes the oldest unprocessed request of a connection.
    fn process(&mut self, ci: usize) {
        let cluster = self.conns[ci].1.cluster;
        let Some(r) = self.conns[ci]
            .1
            .reqs
            .iter_mut()
            .find(|r| r.result.is_none())
        else {
            return;
        };
        if r.undecided.is_some() {
            // Not sent: the proxy has not decided it yet.
            return;
        }
        let code = match r.upstream {
            None => r.answer,
            Some((pid, epoch, seq)) => {
                self.brokers[cluster].produce(pid, epoch, r.partition as i32, seq, &r.recs)
            }
        };
        r.result = Some(code);
    }

    /// The oldest request's answer reaches the client (only once processed).
    fn deliver(&mut self, ci: usize) {
        let Some(front) = self.conns[ci].1.reqs.front() else {
            return;
        };
        if front.result.is_none() {
            return;
        }
        let r = self.conns[ci].1.reqs.pop_front().expect("front");
        let (mut code, mut offset) = r.result.expect("processed");
        if let Some(t) = &r.ticket {
            let reply = self.seq.on_result(t, code, offset);
            (code, offset) = (reply.error_code, reply.base_offset);
        }
        self.log.push(format!(
            "deliver c{} p{} seq{} e{} code {code} offset {offset}",
            r.client, r.partition, r.client_seq, r.client_epoch
        ));
        // Whatever the proxy rewrote or answered itself (not passed through).
        let from_proxy = r.ticket.is_some() || r.upstream.is_none();
        if from_proxy && FATAL_FOR_KAFKAJS.contains(&code) {
            self.proxy_fatal.push(format!(
                "error {code} to c{} p{} seq{} e{}",
                r.client, r.partition, r.client_seq, r.client_epoch
            ));
        }
        let placed = |b: &Broker| b.placed.contains(&(r.recs[0], r.partition as i32, offset));
        if code == 0 && offset >= 0 && !self.brokers.iter().any(placed) {
            self.bad_offsets.push(format!(
                "c{} p{} seq{}: first record {:#x} is not at offset {offset}",
                r.client, r.partition, r.client_seq, r.recs[0]
            ));
        }
        self.clients[r.client].on_result(r.partition, r.client_seq, r.client_epoch, code);
    }

    /// A connection closes: the broker may or may not have processed what it had; the
    /// client hears nothing back for any of it.
    fn close(&mut self, ci: usize) {
        let (_, mut conn) = self.conns.remove(ci);
        let cluster = conn.cluster;
        while let Some(mut r) = conn.reqs.pop_front() {
            if r.result.is_none() && self.rng.random_bool(0.5) {
                if let Some((pid, epoch, seq)) = r.upstream {
                    self.brokers[cluster].produce(pid, epoch, r.partition as i32, seq, &r.recs);
                }
                r.result = Some((0, -1));
            }
            if let Some(t) = &r.ticket {
                self.seq.abandon(t);
            }
            self.log.push(format!(
                "cut c{} p{} seq{} e{}",
                r.client, r.partition, r.client_seq, r.client_epoch
            ));
            self.clients[r.client].on_result(
                r.partition,
                r.client_seq,
                r.client_epoch,
                NETWORK_ERROR,
            );
        }
        self.refresh_untracked();
    }

    fn refresh_untracked(&mut self) {
        let open = self.conns.iter().any(|(_, k)| k.generation == 0);
        self.seq
            .set_untracked_in_flight(open && self.generation > 0);
    }

    fn switch(&mut self) {
        self.active = 1 - self.active;
        self.generation += 1;
        let b = &mut self.brokers[self.active];
        if b.by_id {
            b.stale_ids = (0..PARTITIONS).collect();
        }
        self.log
            .push(format!("switch to {}", self.names[self.active]));
        for (_, k) in self.conns.iter_mut() {
            k.draining = true;
        }
        self.refresh_untracked();
    }
}

struct Scenario {
    seed: u64,
    equal_ids: bool,
    topic_on_target: bool,
}

/// What a schedule went through, summed over a run to show the paths were taken.
#[derive(Debug, Default)]
struct Coverage {
    kafkajs_clients: u64,
    proxy_written: u64,
    rewritten: u64,
    reanchored: u64,
    verified_duplicates: u64,
    waited_forwarded: u64,
    waited_held: u64,
}

fn run(s: &Scenario) -> Result<Coverage, String> {
    let mut rng = StdRng::seed_from_u64(s.seed);
    let n_clients = rng.random_range(1..=3usize);
    let switches = rng.random_range(1..=4u32);
    let clients: Vec<Client> = (0..n_clients)
        .map(|i| {
            let kind = if rng.random_bool(0.4) {
                Kind::Kafkajs
            } else {
                Kind::Java
            };
            Client::new(kind, i as u64, rng.random_range(5..40))
        })
        .collect();
    // Either broker may answer duplicates as older brokers do, except the first one
    // when kafkajs talks to it directly (before the first switch): that stops kafkajs
    // without any proxy.
    let kafkajs = clients.iter().any(|c| c.kind == Kind::Kafkajs);
    let dup_error = [!kafkajs && rng.random_bool(0.5), rng.random_bool(0.5)];
    let mut w = World {
        brokers: [
            Broker::new(1, true, dup_error[0]),
            Broker::new(
                if s.equal_ids { 1 } else { 1000 },
                s.topic_on_target,
                dup_error[1],
            ),
        ],
        names: [Arc::from("north"), Arc::from("west")],
        active: 0,
        generation: 0,
        seq: Sequencer::new(Duration::from_secs(3600)),
        clients,
        conns: vec![],
        now: Instant::now(),
        log: vec![],
        proxy_fatal: vec![],
        bad_offsets: vec![],
        proxy_written: 0,
        waited_forwarded: 0,
        waited_held: 0,
        rng: StdRng::seed_from_u64(s.seed ^ 0x5eed),
    };
    // Clients that name topics by id (Java 4.1+ Produce v13, franz-go) meet
    // UNKNOWN_TOPIC_ID on each cluster they are switched to until their metadata is
    // refreshed (kafkajs names topics: never by id).
    let by_id = !kafkajs && rng.random_bool(0.5);
    for b in w.brokers.iter_mut() {
        b.by_id = by_id;
    }
    // Clients start at random moments: some before the first switch, some after.
    let starts: Vec<u32> = (0..n_clients).map(|_| rng.random_range(0..60)).collect();
    let mut switches_left = switches;
    let mut step = 0u32;
    while step < 20_000 {
        step += 1;
        w.now += Duration::from_millis(1);
        for (c, start) in starts.iter().enumerate() {
            if step == start + 1 {
                w.init_client(c);
            }
        }
        if w.clients
            .iter()
            .enumerate()
            .all(|(i, c)| step > starts[i] && c.done())
            && switches_left == 0
        {
            break;
        }
        match rng.random_range(0..100u32) {
            0..=2 if switches_left > 0 && step > 20 => {
                w.switch();
                switches_left -= 1;
            }
            3..=7 => {
                // Drain or cut a draining connection.
                if let Some(ci) = w.conns.iter().position(|(_, k)| k.draining) {
                    if rng.random_bool(0.7) {
                        // Drained: answers first, as far as they go.
                        for _ in 0..8 {
                            w.process(ci);
                            w.deliver(ci);
                        }
                    }
                    w.close(ci);
                }
            }
            8 => {
                // A client bumps its epoch on its own (librdkafka does after a timed-out
                // request whose messages may be persisted; Java after a delivery timeout):
                // every partition restarts at 0 under the new epoch.
                let c = rng.random_range(0..n_clients);
                // kafkajs never bumps: one InitProducerId per connect.
                if step > starts[c] && w.clients[c].pid.is_some() && w.clients[c].kind == Kind::Java
                {
                    w.clients[c].bump_pending = true;
                    w.clients[c].maybe_bump();
                }
            }
            9 if !w.conns.is_empty() => {
                // A connection breaks for no reason at all.
                let ci = rng.random_range(0..w.conns.len());
                w.close(ci);
            }
            10..=39 => {
                let c = rng.random_range(0..n_clients);
                if step > starts[c] {
                    w.clients[c].new_batch(&mut rng);
                }
            }
            40..=64 => {
                let c = rng.random_range(0..n_clients);
                let p = rng.random_range(0..PARTITIONS) as usize;
                if step > starts[c] {
                    // A client writing to a connection the proxy stopped reading: lost
                    // until the connection closes, then an error.
                    let ci = w.conns.iter().position(|(cl, _)| *cl == c);
                    if ci.is_some_and(|ci| w.conns[ci].1.draining)
                        && !w.conns.iter().any(|(cl, k)| *cl == c && !k.draining)
                    {
                        continue;
                    }
                    if let Some(i) = w.clients[c].sendable(p) {
                        w.send(c, p, i);
                    } else {
                        w.send_js(c);
                    }
                }
            }
            65..=82 if !w.conns.is_empty() => {
                let ci = rng.random_range(0..w.conns.len());
                w.process(ci);
            }
            _ if !w.conns.is_empty() => {
                let ci = rng.random_range(0..w.conns.len());
                w.deliver(ci);
            }
            _ => {}
        }
        // Answers, closed connections, switches and deadlines end waits.
        w.decide_parked();
    }
    let ctx =
        |w: &World, msg: String| {
            let n = std::env::var("SIM_TAIL")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(40);
            let tail: Vec<&String> = w.log.iter().rev().take(n).collect();
            format!(
            "seed {} (equal ids: {}, topic on target: {}): {msg}\nlast events, newest first:\n{}",
            s.seed,
            s.equal_ids,
            s.topic_on_target,
            tail.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
        )
        };
    if let Some(first) = w.proxy_fatal.first() {
        return Err(ctx(
            &w,
            format!(
                "the proxy answered {} batches with an error fatal for kafkajs, first: {first}",
                w.proxy_fatal.len()
            ),
        ));
    }
    if let Some(first) = w.bad_offsets.first() {
        return Err(ctx(
            &w,
            format!(
                "{} successes at a wrong offset, first: {first}",
                w.bad_offsets.len()
            ),
        ));
    }
    for (i, c) in w.clients.iter().enumerate() {
        if let Some(f) = &c.fatal {
            return Err(ctx(&w, format!("client {i} failed: {f}")));
        }
        for r in &c.acked {
            if !w.brokers[0].log.contains(r) && !w.brokers[1].log.contains(r) {
                return Err(ctx(
                    &w,
                    format!("client {i}: record {r:#x} acknowledged but on no cluster"),
                ));
            }
        }
        if !c.failed.is_empty() {
            return Err(ctx(
                &w,
                format!(
                    "client {i}: {} records failed (delivery timeout)",
                    c.failed.len()
                ),
            ));
        }
        if !c.done() {
            return Err(ctx(
                &w,
                format!("client {i} did not finish: {:?}", c.outstanding),
            ));
        }
    }
    Ok(Coverage {
        kafkajs_clients: w.clients.iter().filter(|c| c.kind == Kind::Kafkajs).count() as u64,
        proxy_written: w.proxy_written,
        rewritten: w.seq.stats.rewritten,
        reanchored: w.seq.stats.reanchored,
        verified_duplicates: w.seq.stats.verified_duplicates,
        waited_forwarded: w.waited_forwarded,
        waited_held: w.waited_held,
    })
}

#[test]
fn no_acknowledged_record_is_lost_across_random_switches() {
    let n: u64 = std::env::var("SIM_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seeds: Vec<u64> = match std::env::var("SIM_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(s) => vec![s],
        None => {
            let base: u64 = rand::random();
            println!("simulation base seed {base} ({n} schedules)");
            (0..n).map(|i| base.wrapping_add(i)).collect()
        }
    };
    let mut failures = vec![];
    let mut cov = Coverage::default();
    for seed in seeds {
        for (equal_ids, topic_on_target) in
            [(true, false), (true, true), (false, false), (false, true)]
        {
            let s = Scenario {
                seed,
                equal_ids,
                topic_on_target,
            };
            match run(&s) {
                Ok(c) => {
                    cov.kafkajs_clients += c.kafkajs_clients;
                    cov.proxy_written += c.proxy_written;
                    cov.rewritten += c.rewritten;
                    cov.reanchored += c.reanchored;
                    cov.verified_duplicates += c.verified_duplicates;
                    cov.waited_forwarded += c.waited_forwarded;
                    cov.waited_held += c.waited_held;
                }
                Err(e) => failures.push(e),
            }
        }
    }
    println!("paths taken: {cov:?}");
    if let Some(first) = failures.first() {
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for f in &failures {
            let line = f.lines().next().unwrap_or_default();
            let kind = line.split(": ").skip(1).collect::<Vec<_>>().join(": ");
            let kind: String = kind.chars().filter(|c| !c.is_ascii_digit()).collect();
            *kinds.entry(kind).or_default() += 1;
        }
        println!("failure kinds: {kinds:#?}");
        panic!(
            "{} failing schedules; the first (replay with SIM_SEED=<seed>):\n{first}",
            failures.len()
        );
    }
    if n >= 1000 {
        // The new paths are taken, not just allowed.
        assert!(cov.kafkajs_clients > 0, "{cov:?}");
        assert!(cov.proxy_written > 0, "{cov:?}");
        assert!(cov.rewritten > 0, "{cov:?}");
        assert!(cov.waited_forwarded > 0, "{cov:?}");
        assert!(cov.waited_held > 0, "{cov:?}");
    }
}
