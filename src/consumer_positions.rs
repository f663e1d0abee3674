//! Consumer positions carried across a switch.
//!
//! Offsets differ between two clusters mirrored by MirrorMaker 2, so a group that
//! moves from north to west would start wherever west's committed offsets say: the
//! replication tool's last offset sync (minutes old, or none), else the client's
//! `auto.offset.reset` (re-read everything, or skip what was not consumed yet). The
//! proxy sees what it takes to do better:
//! - each OffsetCommit its client makes and the answer to it (the group, and the next
//!   offset to read per partition); for exactly-once consumers, each TxnOffsetCommit,
//!   whose offsets count once the EndTxn of their transaction committed it;
//! - the record batch headers of the Fetch answers it relays to committing clients
//!   (base offset, last offset, first timestamp; uncompressed, no decompression),
//!   kept per partition from the last commit on, so a commit is tied to the first
//!   record of the batch before it (the anchor);
//! - both clusters.
//!
//! At a switch, for each group this sidecar's client committed in the generation that
//! ended, the positions are translated onto the new cluster and written there before
//! the client rejoins ([`carry`]); until then (bounded by `replication.carry_timeout`)
//! the group's JoinGroup, ConsumerGroupHeartbeat and OffsetFetch requests wait, so the
//! client's own OffsetFetch finds them. Topic names go through the replication policy
//! ([`names`]). The new cluster is called through [`carry::Target`], implemented on
//! real connections in [`target`].

pub mod carry;
pub mod names;
pub mod target;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, EndTxnRequest, EndTxnResponse, OffsetCommitRequest, OffsetCommitResponse,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::codec;
use crate::codec::bounds::{self, Bounded, Prim, Spot};
use crate::config::Config;
use crate::topic_identity::TopicIds;
use carry::{Anchor, Committed, Path};
use names::Names;

/// Batch headers kept per partition at most, the latest fetched (every group of the
/// client shares them: a slow group's commits need its own older batches, so nothing is
/// dropped at a commit, only the least recently fetched beyond this).
const RING: usize = 512;
/// Partitions tracked at most (with [`RING`], a bound on memory: ~80 MiB at worst).
const MAX_PARTITIONS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Batch {
    timestamp: i64,
}

/// The batch headers of one partition, in the order they were first fetched.
#[derive(Default)]
struct Ring {
    order: VecDeque<i64>,
    by_base: HashMap<i64, Batch>,
}

impl Ring {
    fn insert(&mut self, base: i64, b: Batch) {
        if self.by_base.insert(base, b).is_some() {
            return;
        }
        self.order.push_back(base);
        if self.order.len() > RING {
            if let Some(old) = self.order.pop_front() {
                self.by_base.remove(&old);
            }
        }
    }

    /// The anchor of committed offset `c`: the first record of the batch holding `c-1`
    /// (the latest batch starting before `c`). A batch that ends before `c-1` (records
    /// not fetched through this sidecar: a seek) still anchors before `c`.
    fn anchor_of(&self, c: i64) -> Option<Anchor> {
        self.by_base
            .iter()
            .filter(|(base, _)| **base < c)
            .max_by_key(|(base, _)| **base)
            .map(|(base, b)| Anchor {
                offset: *base,
                timestamp: b.timestamp,
            })
    }
}

type PartKey = (Arc<str>, Arc<str>, i32);
/// (cluster, group).
type GroupKey = (Arc<str>, Arc<str>);
type GroupCommits = HashMap<(Arc<str>, i32), Commit>;

#[derive(Debug, Clone, Copy)]
struct Commit {
    offset: i64,
    anchor: Option<Anchor>,
    generation: u64,
}

#[derive(Debug, Clone)]
struct Settings {
    enabled: bool,
    names: Names,
    timeout: Duration,
}

struct Pending {
    generation: u64,
    groups: HashSet<Arc<str>>,
    done: watch::Receiver<bool>,
}

/// Batch headers seen in one Fetch answer, as its walk reports them.
#[derive(Debug, Default)]
pub struct Seen {
    topic: Option<Arc<str>>,
    partition: i32,
    batches: Vec<(Arc<str>, i32, i64, Batch)>,
}

impl Seen {
    /// (topic, partition, base offset, anchor timestamp) of each batch, in order.
    #[cfg(test)]
    pub(crate) fn batches(&self) -> Vec<(String, i32, i64, i64)> {
        self.batches
            .iter()
            .map(|(t, p, o, b)| (t.to_string(), *p, *o, b.timestamp))
            .collect()
    }

    pub fn topic(&mut self, name: Option<Arc<str>>) {
        self.topic = name;
    }

    pub fn partition(&mut self, index: i32) {
        self.partition = index;
    }

    /// The first 43 bytes of a v2 batch.
    pub fn batch(&mut self, header: &[u8]) {
        if let (Some(t), Some((base, b))) = (&self.topic, batch_header(header)) {
            self.batches.push((t.clone(), self.partition, base, b));
        }
    }
}

/// What a committing client asked, carried to the answer.
#[derive(Debug, Clone)]
pub struct CommitAsk {
    group: Arc<str>,
    offsets: Vec<(Arc<str>, i32, i64)>,
}

impl CommitAsk {
    /// A commit request's group and offsets, by topic: (partition, offset).
    fn new<'a, P>(group: &str, topics: impl Iterator<Item = (&'a str, P)>) -> CommitAsk
    where
        P: Iterator<Item = (i32, i64)>,
    {
        let offsets = topics
            .flat_map(|(name, parts)| {
                let name: Arc<str> = Arc::from(name);
                parts.map(move |(p, o)| (name.clone(), p, o))
            })
            .collect();
        CommitAsk {
            group: Arc::from(group),
            offsets,
        }
    }
}

/// One transaction, as its client names it: transactional id, producer id and epoch (a
/// transaction is one producer id and epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Txn {
    id: Arc<str>,
    producer: (i64, i16),
}

/// A TxnOffsetCommit request, carried to its answer.
#[derive(Debug, Clone)]
pub struct TxnCommitAsk {
    txn: Txn,
    commit: CommitAsk,
}

/// An EndTxn request of a transaction that sent offsets, carried to its answer.
#[derive(Debug, Clone)]
pub struct EndTxnAsk {
    txn: Txn,
    /// Commits the transaction (false: aborts it).
    committed: bool,
}

/// Offsets sent in one open transaction, per group, anchored when accepted.
struct OpenTxn {
    producer: (i64, i16),
    groups: HashMap<Arc<str>, GroupCommits>,
}

/// (cluster, transactional id).
type TxnKey = (Arc<str>, Arc<str>);
/// Open transactions kept at most (each a client's producer; a bound on memory when
/// EndTxn answers never come).
const MAX_OPEN_TXNS: usize = 1024;

/// The positions of this sidecar's client's groups (one per proxy).
pub struct ConsumerPositions {
    settings: RwLock<Settings>,
    /// Some client committed: Fetch answers to committing clients are looked at.
    watching: AtomicBool,
    committers: RwLock<HashSet<Bytes>>,
    batches: Mutex<HashMap<PartKey, Ring>>,
    /// (cluster, group) -> (topic, partition) -> last commit.
    commits: Mutex<HashMap<GroupKey, GroupCommits>>,
    /// Some client commits offsets in transactions: its consumer has another client
    /// id, so every Fetch answer is looked at.
    watching_all: AtomicBool,
    /// Offsets of transactions not ended yet.
    open_txns: Mutex<HashMap<TxnKey, OpenTxn>>,
    /// A carry in progress: requests of its groups wait.
    holding: AtomicBool,
    pending: Mutex<Option<Pending>>,
}

impl Default for ConsumerPositions {
    fn default() -> Self {
        let defaults = crate::config::ReplicationConfig::default();
        ConsumerPositions {
            settings: RwLock::new(Settings {
                enabled: defaults.carry_consumer_positions,
                names: Names {
                    policy: defaults.policy,
                    separator: defaults.separator,
                    aliases: Vec::new(),
                },
                timeout: defaults.carry_timeout,
            }),
            watching: AtomicBool::new(false),
            committers: RwLock::default(),
            batches: Mutex::default(),
            commits: Mutex::default(),
            watching_all: AtomicBool::new(false),
            open_txns: Mutex::default(),
            holding: AtomicBool::new(false),
            pending: Mutex::new(None),
        }
    }
}

impl ConsumerPositions {
    /// Takes the `replication:` settings of a (re)loaded config.
    pub fn configure(&self, cfg: &Config) {
        let r = &cfg.replication;
        *self.settings.write() = Settings {
            enabled: r.carry_consumer_positions,
            names: Names {
                policy: r.policy,
                separator: r.separator.clone(),
                aliases: cfg.replication_aliases(),
            },
            timeout: r.carry_timeout,
        };
    }

    fn enabled(&self) -> bool {
        self.settings.read().enabled
    }

    /// Whether Fetch answers to the client of this request are looked at.
    pub fn watches(&self, frame: &[u8]) -> bool {
        if !self.watching.load(Ordering::Relaxed) {
            return false;
        }
        if self.watching_all.load(Ordering::Relaxed) {
            return true;
        }
        client_id(frame).is_some_and(|c| self.committers.read().contains(c))
    }

    /// A client's OffsetCommit request (`frame`, whole): what to record once the
    /// answer says it was accepted.
    pub fn commit_request(&self, frame: &Bytes, version: i16) -> Option<CommitAsk> {
        if !self.enabled() {
            return None;
        }
        let req =
            codec::decode_request::<OffsetCommitRequest>(ApiKey::OffsetCommit, version, frame)?;
        if let Some(c) = client_id(frame) {
            if !self.committers.read().contains(c) {
                self.committers.write().insert(Bytes::copy_from_slice(c));
            }
            self.watching.store(true, Ordering::Relaxed);
        }
        Some(CommitAsk::new(
            req.group_id.0.as_str(),
            req.topics.iter().map(|t| {
                let parts = t.partitions.iter();
                (
                    t.name.0.as_str(),
                    parts.map(|p| (p.partition_index, p.committed_offset)),
                )
            }),
        ))
    }

    /// The answer to a commit: accepted partitions become the group's positions on
    /// `cluster`, tied to their anchors.
    pub fn commit_answered(
        &self,
        cluster: &Arc<str>,
        generation: u64,
        ask: CommitAsk,
        version: i16,
        frame: &Bytes,
    ) {
        let Ok(resp) =
            codec::decode_response::<OffsetCommitResponse>(ApiKey::OffsetCommit, version, frame)
        else {
            return;
        };
        let ok = accepted(resp.topics.iter().flat_map(|t| {
            let name = t.name.0.as_str();
            t.partitions
                .iter()
                .map(move |p| (name, p.partition_index, p.error_code))
        }));
        let accepted = self.anchored(cluster, generation, ask.offsets, |t, p| {
            ok.contains(&(t, p))
        });
        let mut commits = self.commits.lock();
        commits
            .entry((cluster.clone(), ask.group))
            .or_default()
            .extend(accepted);
    }

    /// The offsets `accepted` took, each tied to its anchor among the batch headers
    /// fetched on `cluster` so far.
    fn anchored(
        &self,
        cluster: &Arc<str>,
        generation: u64,
        offsets: Vec<(Arc<str>, i32, i64)>,
        accepted: impl Fn(&str, i32) -> bool,
    ) -> GroupCommits {
        let batches = self.batches.lock();
        offsets
            .into_iter()
            .filter(|(topic, partition, _)| accepted(topic, *partition))
            .map(|(topic, partition, offset)| {
                let key = (cluster.clone(), topic.clone(), partition);
                let anchor = batches.get(&key).and_then(|ring| ring.anchor_of(offset));
                let commit = Commit {
                    offset,
                    anchor,
                    generation,
                };
                ((topic, partition), commit)
            })
            .collect()
    }

    /// A client's TxnOffsetCommit request: its offsets, to keep once accepted, until
    /// their transaction ends. From now on every Fetch answer is looked at (the
    /// consumer that read those records is another client than the producer that
    /// commits them).
    pub fn txn_commit_request(&self, frame: &Bytes, version: i16) -> Option<TxnCommitAsk> {
        if !self.enabled() {
            return None;
        }
        let req = codec::decode_request::<TxnOffsetCommitRequest>(
            ApiKey::TxnOffsetCommit,
            version,
            frame,
        )?;
        self.watching_all.store(true, Ordering::Relaxed);
        self.watching.store(true, Ordering::Relaxed);
        let commit = CommitAsk::new(
            req.group_id.0.as_str(),
            req.topics.iter().map(|t| {
                let parts = t.partitions.iter();
                (
                    t.name.0.as_str(),
                    parts.map(|p| (p.partition_index, p.committed_offset)),
                )
            }),
        );
        Some(TxnCommitAsk {
            txn: Txn {
                id: Arc::from(req.transactional_id.0.as_str()),
                producer: (req.producer_id.0, req.producer_epoch),
            },
            commit,
        })
    }

    /// The answer to a TxnOffsetCommit: the accepted offsets wait for their
    /// transaction's end. A producer id or epoch other than the open transaction's
    /// starts a new one (the old one can no longer commit: it was ended, fenced or
    /// timed out).
    pub fn txn_commit_answered(
        &self,
        cluster: &Arc<str>,
        generation: u64,
        ask: TxnCommitAsk,
        version: i16,
        frame: &Bytes,
    ) {
        let Ok(resp) = codec::decode_response::<TxnOffsetCommitResponse>(
            ApiKey::TxnOffsetCommit,
            version,
            frame,
        ) else {
            return;
        };
        let ok = accepted(resp.topics.iter().flat_map(|t| {
            let name = t.name.0.as_str();
            t.partitions
                .iter()
                .map(move |p| (name, p.partition_index, p.error_code))
        }));
        let TxnCommitAsk { txn, commit } = ask;
        let accepted = self.anchored(cluster, generation, commit.offsets, |t, p| {
            ok.contains(&(t, p))
        });
        if accepted.is_empty() {
            return;
        }
        let mut open = self.open_txns.lock();
        let key = (cluster.clone(), txn.id);
        if !open.contains_key(&key) && open.len() >= MAX_OPEN_TXNS {
            return;
        }
        let fresh = || OpenTxn {
            producer: txn.producer,
            groups: HashMap::new(),
        };
        let open_txn = open.entry(key).or_insert_with(fresh);
        if open_txn.producer != txn.producer {
            *open_txn = fresh();
        }
        open_txn
            .groups
            .entry(commit.group)
            .or_default()
            .extend(accepted);
    }

    /// A client's EndTxn request, when its transaction sent offsets through here.
    pub fn end_txn_request(
        &self,
        cluster: &Arc<str>,
        frame: &Bytes,
        version: i16,
    ) -> Option<EndTxnAsk> {
        if !self.watching_all.load(Ordering::Relaxed) {
            return None;
        }
        let req = codec::decode_request::<EndTxnRequest>(ApiKey::EndTxn, version, frame)?;
        let id: Arc<str> = Arc::from(req.transactional_id.0.as_str());
        let key = (cluster.clone(), id.clone());
        self.open_txns
            .lock()
            .contains_key(&key)
            .then_some(EndTxnAsk {
                txn: Txn {
                    id,
                    producer: (req.producer_id.0, req.producer_epoch),
                },
                committed: req.committed,
            })
    }

    /// The answer to an EndTxn: a commit makes the transaction's offsets its groups'
    /// positions on `cluster` (as an OffsetCommit's would be), an abort drops them; an
    /// error leaves them for the client's retry.
    pub fn end_txn_answered(
        &self,
        cluster: &Arc<str>,
        generation: u64,
        ask: EndTxnAsk,
        version: i16,
        frame: &Bytes,
    ) {
        let Ok(resp) = codec::decode_response::<EndTxnResponse>(ApiKey::EndTxn, version, frame)
        else {
            return;
        };
        if resp.error_code != 0 {
            return;
        }
        // Ended: taken out whether committed or aborted (another epoch's is left).
        let ended = match self.open_txns.lock().entry((cluster.clone(), ask.txn.id)) {
            Entry::Occupied(o) if o.get().producer == ask.txn.producer => o.remove(),
            _ => return,
        };
        if !ask.committed {
            return;
        }
        let mut commits = self.commits.lock();
        for (group, offsets) in ended.groups {
            let positions = commits.entry((cluster.clone(), group)).or_default();
            for (at, mut c) in offsets {
                // Positions count from the generation the transaction committed in.
                c.generation = generation;
                positions.insert(at, c);
            }
        }
    }

    /// A Fetch answer (after translation: topic ids are the ones clients see) relayed
    /// to a committing client: keeps its batch headers.
    pub fn fetch_answered(&self, ids: &TopicIds, cluster: &Arc<str>, version: i16, frame: &Bytes) {
        if let Some(seen) = seen_in(ids, version, frame) {
            self.record(cluster, seen);
        }
    }
}

/// The batch headers of a whole Fetch answer (frame with its length prefix; topic ids
/// the ones clients see). None: the answer does not walk.
pub(crate) fn seen_in(ids: &TopicIds, version: i16, frame: &Bytes) -> Option<Seen> {
    let at = codec::response_body_offset(frame, ApiKey::Fetch.response_header_version(version))?;
    let body = &frame[at..];
    let mut seen = Seen::default();
    let layout = <kafka_protocol::messages::FetchResponse as Bounded>::LAYOUT;
    let walked = bounds::visit(
        layout,
        version,
        body,
        &mut |s: Spot| match (s.prim, s.field) {
            (Prim::Str, "topic") => seen.topic(
                std::str::from_utf8(&body[s.at..s.at + s.len])
                    .ok()
                    .map(Arc::from),
            ),
            (Prim::Uuid, "topic_id") => {
                let id = uuid::Uuid::from_slice(&body[s.at..s.at + 16]).ok();
                seen.topic(id.and_then(|id| ids.name_of(id)));
            }
            (Prim::I32, "partition_index") if s.owner == "partitions" => seen.partition(
                i32::from_be_bytes(body[s.at..s.at + 4].try_into().expect("4")),
            ),
            (Prim::Bytes, "records") => {
                let records = &body[s.at..s.at + s.len];
                for at in batch_starts(records) {
                    seen.batch(&records[at..at + 43]);
                }
            }
            _ => {}
        },
    );
    walked.ok().map(|_| seen)
}

impl ConsumerPositions {
    /// Keeps the batch headers a Fetch answer's walk reported.
    pub fn record(&self, cluster: &Arc<str>, seen: Seen) {
        if seen.batches.is_empty() {
            return;
        }
        let mut batches = self.batches.lock();
        for (topic, partition, base, b) in seen.batches {
            let key = (cluster.clone(), topic, partition);
            if !batches.contains_key(&key) && batches.len() >= MAX_PARTITIONS {
                continue;
            }
            batches.entry(key).or_default().insert(base, b);
        }
    }

    /// The active cluster changed from `from` (generation `generation - 1`) to `to`:
    /// carries the positions committed there, holding the groups' requests until done.
    pub fn switched(
        self: &Arc<Self>,
        from: &str,
        to: Arc<Cluster>,
        generation: u64,
        connect_timeout: Duration,
    ) {
        let settings = self.settings.read().clone();
        if !settings.enabled {
            return;
        }
        let ended = generation.saturating_sub(1);
        let work: Vec<(Arc<str>, Vec<Committed>)> = {
            let commits = self.commits.lock();
            commits
                .iter()
                .filter(|((c, _), _)| &**c == from)
                .map(|((_, g), parts)| {
                    let list: Vec<Committed> = parts
                        .iter()
                        .filter(|(_, c)| c.generation == ended)
                        .map(|((t, p), c)| Committed {
                            topic: t.clone(),
                            partition: *p,
                            offset: c.offset,
                            anchor: c.anchor,
                        })
                        .collect();
                    (g.clone(), list)
                })
                .filter(|(_, l)| !l.is_empty())
                .collect()
        };
        if work.is_empty() {
            return;
        }
        let (tx, rx) = watch::channel(false);
        *self.pending.lock() = Some(Pending {
            generation,
            groups: work.iter().map(|(g, _)| g.clone()).collect(),
            done: rx,
        });
        self.holding.store(true, Ordering::Relaxed);
        let me = self.clone();
        let from: Arc<str> = Arc::from(from);
        tracing::info!(%from, to = %to.name(), groups = work.len(), "carrying consumer positions to the new cluster before the groups rejoin");
        tokio::spawn(async move {
            let started = Instant::now();
            let mut target = target::ClusterTarget::new(to.clone(), connect_timeout);
            let run = async {
                for (group, commits) in &work {
                    me.carry_one(
                        &mut target,
                        &settings.names,
                        &from,
                        to.name(),
                        group,
                        commits,
                    )
                    .await;
                }
            };
            if tokio::time::timeout(settings.timeout, run).await.is_err() {
                tracing::warn!(%from, to = %to.name(), "carrying consumer positions took longer than replication.carry_timeout; the groups go on with what the new cluster has (synced offsets, else auto.offset.reset)");
                metrics::counter!(crate::admin::names::CONSUMER_POSITIONS_TOTAL, "path" => "timeout").increment(1);
            }
            metrics::histogram!(crate::admin::names::CONSUMER_POSITIONS_CARRY_SECONDS)
                .record(started.elapsed().as_secs_f64());
            let _ = tx.send(true);
            let mut p = me.pending.lock();
            if p.as_ref().is_some_and(|p| p.generation == generation) {
                *p = None;
                me.holding.store(false, Ordering::Relaxed);
            }
        });
    }

    async fn carry_one(
        &self,
        target: &mut target::ClusterTarget,
        names: &Names,
        from: &str,
        to: &str,
        group: &str,
        commits: &[Committed],
    ) {
        match carry::carry_group(target, names, from, to, group, commits).await {
            Ok(outcomes) => {
                for o in outcomes {
                    metrics::counter!(crate::admin::names::CONSUMER_POSITIONS_TOTAL, "path" => o.path.label()).increment(1);
                    match o.path {
                        Path::Translated => {
                            tracing::debug!(group, topic = %o.topic, partition = o.partition, offset = ?o.offset, "consumer position translated")
                        }
                        Path::Synced => {
                            tracing::info!(group, topic = %o.topic, partition = o.partition, offset = ?o.offset, why = o.why_not.as_deref().unwrap_or("the synced offset is later"), "consumer position: the new cluster's own (synced) offset")
                        }
                        Path::Reset => {
                            tracing::warn!(group, topic = %o.topic, partition = o.partition, why = o.why_not.as_deref().unwrap_or("-"), "consumer position not carried: the client's auto.offset.reset decides")
                        }
                        Path::Active => {
                            tracing::warn!(group, topic = %o.topic, partition = o.partition, "consumer position not carried: the group already has members on the new cluster (never rewound)")
                        }
                    }
                }
            }
            Err(e) => {
                metrics::counter!(crate::admin::names::CONSUMER_POSITIONS_TOTAL, "path" => "failed").increment(1);
                tracing::warn!(group, %from, %to, "cannot carry the group's positions; it goes on with what the new cluster has: {e:#}");
            }
        }
    }

    /// Some carry is in progress (group requests may have to wait).
    pub fn carrying(&self) -> bool {
        self.holding.load(Ordering::Relaxed)
    }

    /// A group request in a session of `generation`: waits while the group's
    /// positions are being carried to this cluster.
    pub async fn hold(&self, generation: u64, group: &str) {
        if !self.holding.load(Ordering::Relaxed) {
            return;
        }
        let (mut done, timeout) = {
            let p = self.pending.lock();
            let Some(p) = p.as_ref() else { return };
            if p.generation != generation || !p.groups.contains(group) {
                return;
            }
            (p.done.clone(), self.settings.read().timeout)
        };
        let waited = Instant::now();
        let _ = tokio::time::timeout(timeout, done.wait_for(|d| *d)).await;
        tracing::debug!(
            group,
            waited_ms = waited.elapsed().as_millis() as u64,
            "group request waited for its carried positions"
        );
    }
}

/// Where each whole v2 batch of a records field starts (its first 43 bytes present).
fn batch_starts(records: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || loop {
        let h = records.get(at..at.checked_add(43)?)?;
        let len = usize::try_from(i32::from_be_bytes(h[8..12].try_into().ok()?)).ok()?;
        let start = at;
        at = at.checked_add(12 + len)?;
        if at > records.len() {
            return None;
        }
        if h[16] >= 2 {
            return Some(start);
        }
    })
}

/// (base offset, header) of a v2 batch's first 43 bytes.
fn batch_header(h: &[u8]) -> Option<(i64, Batch)> {
    let h = h.get(..43)?;
    let be64 = |r: std::ops::Range<usize>| i64::from_be_bytes(h[r].try_into().expect("8"));
    let attributes = i16::from_be_bytes(h[21..23].try_into().expect("2"));
    // LogAppendTime: every record carries the batch's max timestamp.
    let timestamp = if attributes & 0x08 != 0 {
        be64(35..43)
    } else {
        be64(27..35)
    };
    Some((be64(0..8), Batch { timestamp }))
}

/// The request header's client id (v1+ headers).
/// The (topic, partition) pairs of a commit's answer without an error.
fn accepted<'a>(parts: impl Iterator<Item = (&'a str, i32, i16)>) -> HashSet<(&'a str, i32)> {
    parts
        .filter(|(_, _, error)| *error == 0)
        .map(|(topic, partition, _)| (topic, partition))
        .collect()
}

fn client_id(frame: &[u8]) -> Option<&[u8]> {
    let len = i16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    frame.get(14..14 + usize::try_from(len).ok()?)
}

/// The group a group request names: its first field, except OffsetFetch v8+ (the
/// first group of its list). `body` is the request body; `flexible`: compact strings.
pub fn group_of(api_key: i16, version: i16, flexible: bool, body: &[u8]) -> Option<&str> {
    let mut at = 0usize;
    if api_key == ApiKey::OffsetFetch as i16 && version >= 8 {
        let (n, used) = uvarint(body)?;
        if n < 2 {
            return None;
        }
        at = used;
    }
    let rest = body.get(at..)?;
    let (len, used) = if flexible {
        let (n, used) = uvarint(rest)?;
        (usize::try_from(n.checked_sub(1)?).ok()?, used)
    } else {
        let n = i16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
        (usize::try_from(n).ok()?, 2)
    };
    std::str::from_utf8(rest.get(used..used.checked_add(len)?)?).ok()
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().take(10).enumerate() {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests;
