//! One client connection relayed to one upstream connection.
//!
//! Two loops run concurrently in the session's task: requests (client → upstream)
//! and responses (upstream → client). They share a FIFO of pending requests: Kafka
//! answers in request order on a connection, so the response loop pops the front
//! entry to learn the api key and version it needs for decoding. Requests that get
//! no answer (Produce with acks=0) are never queued.
//!
//! Most frames go through untouched, as the very `Bytes` that were read. The proxy
//! steps in only where [`crate::apis::TABLE`] says: requests go to the features
//! through [`crate::intercept`], responses carrying broker addresses through
//! [`crate::rewrite`]; and the session re-authenticates the upstream (KIP-368) on its
//! own correlation ids.
//!
//! A session sees the running proxy only through [`Runtime`] (config, switch,
//! features, shutdown, local endpoints), so the relay is tested over in-memory streams.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Encodable, StrBytes};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch, Notify};

use crate::api_versions::Offered;
use crate::apis;
use crate::cluster::{ApiMetrics, Cluster};
use crate::codec::fetch_walk::FetchPatches;
use crate::codec::{self, FrameError, FrameReader};
use crate::config::Config;
use crate::connection::{Broker, KafkaExchange};
use crate::feature::SessionContext;
use crate::intercept::{Features, Hook, SessionFeatures};
use crate::rewrite::{self, NodeDirectory};
use crate::splice::{Pipe, TcpHalf};
use crate::switch::{Activation, DrainOutcome, Switch};
use crate::upstream::{self, UpstreamStream};

/// Upstream answers at least this long are relayed as they arrive when their API
/// allows it ([`SessionFeatures::streams_answer`]); shorter ones are read whole first
/// (one read, one write: streaming them would only add a write).
const STREAM_MIN_BYTES: usize = 64 * 1024;
/// How much of a frame's start must be buffered before choosing: the correlation id.
const STREAM_HEAD: usize = 4;
/// Read size while streaming (the buffer is reused once the client took a chunk).
const STREAM_READ_BYTES: usize = 256 * 1024;
/// Record bytes passed through unseen at least this long are spliced (moved socket
/// to socket in the kernel) when both sides are plain TCP; shorter runs are read, as
/// a pipe costs two system calls more than a read does.
const SPLICE_MIN_BYTES: u64 = 32 * 1024;
/// Read size right after a splice: enough for the next batch's header, leaving its body
/// in the socket to be spliced too.
const SPLICE_PEEK_BYTES: usize = 4 * 1024;

/// What a session needs of the running proxy.
pub trait Runtime: Send + Sync + 'static {
    fn config(&self) -> Arc<Config>;
    fn switch(&self) -> &Switch;
    fn features(&self) -> &Arc<Features>;
    fn shutdown_signal(&self) -> watch::Receiver<bool>;
    /// The local (host, port) that stands for `node_id` (opening its listener if
    /// needed). Never an upstream address.
    fn local_endpoint(&self, node_id: i32) -> (StrBytes, i32);
}

/// Which local listener a client connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Bootstrap,
    Broker(i32),
}

impl Target {
    fn node(self) -> Option<i32> {
        match self {
            Target::Bootstrap => None,
            Target::Broker(n) => Some(n),
        }
    }
}

/// What to do with the response to a pending request.
enum Reply {
    /// Relay to the client: through the hook a feature left (see [`crate::intercept`]),
    /// then address rewriting.
    Client(Option<Hook>),
    /// The proxy's own request (re-authentication, producer id, group leave): hand the
    /// frame over.
    Internal(oneshot::Sender<Bytes>),
}

struct Pending {
    correlation_id: i32,
    api_key: i16,
    api_version: i16,
    sent: Instant,
    /// How long the broker may take to answer it (limits.response_timeout, or longer
    /// for a JoinGroup with a longer rebalance timeout).
    patience: Duration,
    api: Option<Arc<ApiMetrics>>,
    reply: Reply,
}

/// State shared by the two loops of one session.
pub(crate) struct Session<R> {
    rt: Arc<R>,
    act: Arc<Activation>,
    /// The features' view of this session, and their per-session state.
    features: SessionFeatures,
    /// The versions the upstream offers, for the proxy's own requests (asked once).
    offered: Mutex<Option<Arc<Offered>>>,
    pending: Mutex<VecDeque<Pending>>,
    /// Signalled by the response loop after each pop (room for one more request).
    space: Notify,
    /// Signalled when the pending queue becomes empty (drain).
    emptied: Notify,
    max_in_flight: usize,
    peer: SocketAddr,
    api_cache: Mutex<Vec<Option<Arc<ApiMetrics>>>>,
    next_internal_id: std::sync::atomic::AtomicI32,
    /// Set while the SASL exchange of a re-authentication runs on the connection.
    reauthenticating: std::sync::atomic::AtomicBool,
    /// Signalled when that exchange ends.
    reauth_done: Notify,
    /// When a frame last moved, in either direction (the idle timeout).
    last_activity: Mutex<Instant>,
    write_stall: Duration,
    response_timeout: Duration,
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    ClientClosed,
    UpstreamClosed,
    Idle,
    Switched(DrainOutcome),
    Shutdown,
    Error(anyhow::Error),
}

impl End {
    fn label(&self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::UpstreamClosed => "upstream_closed",
            End::Idle => "idle",
            End::Switched(_) => "switch",
            End::Shutdown => "shutdown",
            End::Error(_) => "error",
        }
    }
}

/// Serves one accepted client connection until either side closes.
pub async fn serve<R: Runtime>(rt: Arc<R>, client: TcpStream, peer: SocketAddr, target: Target) {
    let act = rt.switch().current();
    let cfg = rt.config();
    let cluster = act.cluster.clone();
    let _ = client.set_nodelay(true);
    if let Target::Broker(node) = target {
        cluster.ensure_node(node, cfg.limits.connect_timeout).await;
    }
    let candidates = cluster.candidates(target.node());
    let conn = match upstream::connect(cluster.as_ref(), &candidates, cfg.limits.connect_timeout)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            // Closing promptly lets the client try again (and fail over between its
            // own bootstrap entries, if it has any).
            tracing::warn!(%peer, cluster = %e.cluster, addr = %e.addr, reason = e.reason.label(), "closing client connection: upstream unreachable: {:#}", e.source);
            // Only a failed bootstrap connection says the cluster is unreachable: one
            // broker being down is the client's business (it will use the others).
            if target == Target::Bootstrap {
                cluster.set_reachable(false);
            }
            metrics::counter!(crate::admin::names::CLIENT_CONNECTIONS_CLOSED_TOTAL, "reason" => "upstream_unreachable").increment(1);
            return;
        }
    };
    cluster.set_reachable(true);
    tracing::debug!(%peer, ?target, cluster = %cluster.name(), upstream = %conn.addr, generation = act.generation, "session open");
    cluster.metrics.session_opened();
    let session = Session::new(rt.clone(), act.clone(), peer, &cfg);
    let lifetime = conn.session_lifetime_ms;
    let mut client = client;
    let (cr, cw) = client.split();
    let end = match conn.stream {
        UpstreamStream::Plain(mut tcp) => {
            let (ur, uw) = tcp.split();
            session.relay(cr, cw, ur, uw, lifetime).await
        }
        UpstreamStream::Tls(tls) => {
            let (ur, uw) = tokio::io::split(*tls);
            session.relay(cr, cw, ur, uw, lifetime).await
        }
    };
    cluster.metrics.session_closed();
    session.abandon_pending();
    metrics::counter!(crate::admin::names::CLIENT_CONNECTIONS_CLOSED_TOTAL, "reason" => end.label())
        .increment(1);
    match &end {
        End::Error(e) => {
            tracing::warn!(%peer, cluster = %cluster.name(), upstream = %conn.addr, "session closed: {e:#}")
        }
        End::Switched(o) => {
            tracing::debug!(%peer, cluster = %cluster.name(), upstream = %conn.addr, outcome = o.label(), "session closed for switch")
        }
        other => {
            tracing::debug!(%peer, cluster = %cluster.name(), upstream = %conn.addr, reason = other.label(), "session closed")
        }
    }
}

impl<R: Runtime> Session<R> {
    fn new(rt: Arc<R>, act: Arc<Activation>, peer: SocketAddr, cfg: &Config) -> Self {
        let cluster = &act.cluster;
        let cx = SessionContext {
            peer,
            cluster: Arc::from(cluster.name()),
            cluster_label: cluster.name_label(),
            generation: act.generation,
            proxy_holds_credentials: cluster.config().sasl.is_some(),
        };
        let features = SessionFeatures::new(cx, rt.features().clone());
        Session {
            offered: Mutex::new(cluster.offered()),
            features,
            rt,
            act,
            pending: Mutex::new(VecDeque::with_capacity(8)),
            space: Notify::new(),
            emptied: Notify::new(),
            max_in_flight: cfg.limits.max_in_flight,
            peer,
            api_cache: Mutex::new(vec![None; 96]),
            next_internal_id: std::sync::atomic::AtomicI32::new(i32::MIN),
            reauthenticating: std::sync::atomic::AtomicBool::new(false),
            reauth_done: Notify::new(),
            last_activity: Mutex::new(Instant::now()),
            write_stall: cfg.limits.write_stall_timeout,
            response_timeout: cfg.limits.response_timeout,
        }
    }

    /// The session ended: requests still waiting will never be answered.
    fn abandon_pending(&self) {
        let left: Vec<Pending> = self.pending.lock().drain(..).collect();
        self.cluster()
            .metrics
            .in_flight
            .decrement(left.len() as f64);
        for p in left {
            if let Reply::Client(Some(hook)) = p.reply {
                self.features.abandoned(hook);
            }
        }
    }

    /// A broker client on this session's upstream connection, for the features.
    /// `queued`: client requests admitted but not yet written; they go out ahead of
    /// the proxy's own.
    fn broker<'a, UW: AsyncWrite + Unpin + Send>(
        &'a self,
        uw: &'a mut UW,
        queued: &'a mut Vec<Bytes>,
    ) -> Broker<SessionExchange<'a, R, UW>> {
        Broker::with_offered(
            SessionExchange {
                session: self,
                uw,
                queued,
            },
            self.offered.lock().clone(),
        )
    }

    /// Keeps what a broker client learned of the upstream's versions.
    fn keep_offered<E>(&self, b: &Broker<E>) {
        if let Some(o) = b.known_offered() {
            self.offered.lock().get_or_insert(o);
        }
    }

    fn cluster(&self) -> &Cluster {
        &self.act.cluster
    }

    fn api_metrics(&self, api_key: i16) -> Arc<ApiMetrics> {
        let slot = usize::try_from(api_key)
            .ok()
            .filter(|&k| k < 95)
            .unwrap_or(95);
        let mut cache = self.api_cache.lock();
        cache[slot]
            .get_or_insert_with(|| {
                let c = self.cluster();
                c.metrics.api(&c.name_label(), api_key)
            })
            .clone()
    }

    async fn relay<CR, CW, UR, UW>(
        &self,
        cr: CR,
        mut cw: CW,
        ur: UR,
        mut uw: UW,
        session_lifetime_ms: i64,
    ) -> End
    where
        CR: AsyncRead + Unpin + Send,
        CW: AsyncWrite + TcpHalf + Unpin + Send,
        UR: AsyncRead + TcpHalf + Unpin + Send,
        UW: AsyncWrite + Unpin + Send,
    {
        let limits = self.rt.config().limits.clone();
        let mut client = FrameReader::new(cr, limits.max_frame_bytes, 8);
        let mut upstream = FrameReader::new(ur, limits.max_response_frame_bytes, 4);
        let requests = self.requests(&mut client, &mut uw, session_lifetime_ms);
        let responses = self.responses(&mut upstream, &mut cw);
        tokio::select! {
            end = requests => end,
            end = responses => end,
        }
    }

    /// Client → upstream.
    async fn requests<CR, UW>(
        &self,
        client: &mut FrameReader<CR>,
        uw: &mut UW,
        session_lifetime_ms: i64,
    ) -> End
    where
        CR: AsyncRead + Unpin + Send,
        UW: AsyncWrite + Unpin + Send,
    {
        let mut act_rx = self.rt.switch().subscribe();
        // A switch while this session was connecting must be seen by the first check.
        act_rx.mark_changed();
        let mut shutdown = self.rt.shutdown_signal();
        let mut out: Vec<Bytes> = Vec::with_capacity(8);
        let mut reauth_at =
            crate::sasl::reauth_delay(session_lifetime_ms).map(|d| tokio::time::Instant::now() + d);
        loop {
            let idle = self.rt.config().limits.idle_timeout;
            // Answers count as activity too: wait only for what is left of the window.
            let idle_left = idle
                .saturating_sub(self.last_activity.lock().elapsed())
                .max(Duration::from_millis(100));
            let read = tokio::select! {
                biased;
                _ = act_rx.changed() => {
                    let (generation, same_cluster) = {
                        let now = act_rx.borrow_and_update();
                        (now.generation, Arc::ptr_eq(&now.cluster, &self.act.cluster))
                    };
                    if generation != self.act.generation {
                        let outcome = self.drain().await;
                        // Back to this very cluster (a switch back during a switch):
                        // the client's membership stays valid there.
                        if !same_cluster {
                            let mut broker = self.broker(uw, &mut out);
                            self.features.on_switch_away(&mut broker).await;
                        }
                        return End::Switched(outcome);
                    }
                    continue;
                }
                _ = shutdown.changed() => {
                    self.drain().await;
                    return End::Shutdown;
                }
                _ = sleep_until_opt(reauth_at) => {
                    match self.reauthenticate(uw).await {
                        Ok(lifetime) => {
                            reauth_at = crate::sasl::reauth_delay(lifetime).map(|d| tokio::time::Instant::now() + d);
                            continue;
                        }
                        Err(e) => return End::Error(e.context("upstream re-authentication failed")),
                    }
                }
                r = tokio::time::timeout(idle_left, client.next_frame_mut()) => r,
            };
            let frame = match read {
                // Idle means no frame in either direction (answers count too).
                Err(_)
                    if self.pending.lock().is_empty()
                        && self.last_activity.lock().elapsed() >= idle =>
                {
                    return End::Idle
                }
                Err(_) => continue,
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) => return End::ClientClosed,
                Ok(Err(e)) => return self.frame_error("client", e),
            };
            *self.last_activity.lock() = Instant::now();
            let mut next = Some(frame);
            // Pick up whatever else the same read brought in, then write it all at once.
            while let Some(frame) = next.take() {
                if let Err(e) = self.wait_for_room(uw, &mut out).await {
                    return End::Error(e);
                }
                if let Err(e) = self.on_request(frame, uw, &mut out).await {
                    return End::Error(e);
                }
                match client.try_frame_mut() {
                    Ok(f) => next = f,
                    Err(e) => return self.frame_error("client", e),
                }
            }
            if let Err(e) = self.write_upstream(uw, &mut out).await {
                return End::Error(e);
            }
        }
    }

    fn frame_error(&self, side: &str, e: FrameError) -> End {
        if let Some(reason) = e.rejection_reason() {
            metrics::counter!(crate::admin::names::FRAMES_REJECTED_TOTAL, "reason" => reason)
                .increment(1);
            tracing::warn!(peer = %self.peer, cluster = %self.cluster().name(), "rejected frame from {side}: {e}; closing the connection");
        }
        match e {
            FrameError::Io(e) if side == "client" => {
                tracing::debug!(peer = %self.peer, "client read error: {e}");
                End::ClientClosed
            }
            e => End::Error(anyhow::Error::new(e).context(format!("reading from {side}"))),
        }
    }

    /// Queues one client request for the upstream (into `out`), recording what its
    /// response will need.
    async fn on_request<UW: AsyncWrite + Unpin + Send>(
        &self,
        frame: BytesMut,
        uw: &mut UW,
        out: &mut Vec<Bytes>,
    ) -> anyhow::Result<()> {
        let peek = codec::peek_request(&frame);
        // A frame that lies about its contents (an array count its bytes cannot hold)
        // is refused before anything decodes it: it ends this connection only.
        if let Err(e) = apis::check_request(&frame) {
            metrics::counter!(crate::admin::names::FRAMES_REJECTED_TOTAL, "reason" => "malformed")
                .increment(1);
            return Err(anyhow::Error::new(e).context("refused a client request"));
        }
        let cluster = self.cluster();
        let api = self.api_metrics(peek.api_key);
        api.requests.increment(1);
        cluster
            .metrics
            .bytes_to_upstream
            .increment(frame.len() as u64);
        if peek.api_key == ApiKey::Produce as i16
            && codec::produce_acks(&frame, peek.api_version) == Some(0)
        {
            // acks=0: the broker sends nothing back, so nothing is queued (and nothing
            // is remapped: idempotence needs acks=all).
            out.push(frame.freeze());
            return Ok(());
        }
        let looked_into =
            apis::lookup(peek.api_key).filter(|a| a.request.is_some() || a.translated);
        let (frame, hook) = match looked_into {
            None => (frame.freeze(), None),
            Some(api) => {
                let mut broker = self.broker(uw, out);
                let i = self
                    .features
                    .on_request(api, &peek, frame, &mut broker)
                    .await?;
                self.keep_offered(&broker);
                (i.frame, i.hook)
            }
        };
        let reply = Reply::Client(hook);
        self.push_pending(Pending {
            correlation_id: peek.correlation_id,
            api_key: peek.api_key,
            api_version: peek.api_version,
            sent: Instant::now(),
            patience: self.patience_for(&peek, &frame),
            api: Some(api),
            reply,
        })
        .await;
        out.push(frame);
        Ok(())
    }

    /// Writes `frames` (left empty) to the upstream, within limits.write_stall_timeout.
    async fn write_upstream<UW: AsyncWrite + Unpin + Send>(
        &self,
        uw: &mut UW,
        frames: &mut Vec<Bytes>,
    ) -> anyhow::Result<()> {
        codec::write_frames_within(uw, frames, Some(self.write_stall))
            .await
            .map_err(|e| anyhow::Error::new(e).context("writing to upstream"))
    }

    /// Back-pressure: waits (not reading the client) until fewer than `max_in_flight`
    /// requests are pending. Frames already admitted are written first: their answers
    /// are what frees the room (waiting with them unwritten would deadlock).
    async fn wait_for_room<UW: AsyncWrite + Unpin + Send>(
        &self,
        uw: &mut UW,
        out: &mut Vec<Bytes>,
    ) -> anyhow::Result<()> {
        loop {
            let room = self.space.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.pending.lock().len() < self.max_in_flight {
                return Ok(());
            }
            if !out.is_empty() {
                self.write_upstream(uw, out).await?;
                continue;
            }
            // Bounded: the response loop ends the session if the oldest request waits
            // longer than limits.response_timeout.
            room.await;
        }
    }

    /// Records a request whose answer is awaited. Never waits: client requests are
    /// admitted only when there is room ([`Self::wait_for_room`]); the proxy's own few
    /// requests may go beyond `max_in_flight`.
    async fn push_pending(&self, p: Pending) {
        self.pending.lock().push_back(p);
        self.cluster().metrics.in_flight.increment(1.0);
    }

    /// Upstream → client.
    async fn responses<UR, CW>(&self, upstream: &mut FrameReader<UR>, cw: &mut CW) -> End
    where
        UR: AsyncRead + TcpHalf + Unpin + Send,
        CW: AsyncWrite + TcpHalf + Unpin + Send,
    {
        let mut out: Vec<Bytes> = Vec::with_capacity(8);
        // How often an upstream that sends nothing is checked on.
        let check = (self.response_timeout / 4).min(Duration::from_secs(5));
        loop {
            let len = match tokio::time::timeout(check, upstream.next_head(STREAM_HEAD)).await {
                Err(_) => {
                    if let Some(end) = self.check_upstream_stalled() {
                        return end;
                    }
                    continue;
                }
                Ok(Ok(Some(len))) => len,
                Ok(Ok(None)) => return self.upstream_closed().await,
                Ok(Err(e)) => return self.frame_error("upstream", e),
            };
            *self.last_activity.lock() = Instant::now();
            if len >= STREAM_MIN_BYTES && upstream.buffered_mut().len() < 4 + len {
                let corr = codec::peek_response_correlation(upstream.buffered_mut());
                if let Some((version, observe)) = self.streamable(corr) {
                    if let Err(end) = self
                        .stream_response(
                            corr,
                            (version, observe),
                            len,
                            upstream,
                            cw,
                            &mut out,
                            check,
                        )
                        .await
                    {
                        return end;
                    }
                    continue;
                }
            }
            let frame = loop {
                match tokio::time::timeout(check, upstream.next_frame_exact()).await {
                    Err(_) => {
                        if let Some(end) = self.check_upstream_stalled() {
                            return end;
                        }
                    }
                    Ok(Ok(Some(f))) => break f,
                    Ok(Ok(None)) => return self.upstream_closed().await,
                    Ok(Err(e)) => return self.frame_error("upstream", e),
                }
            };
            *self.last_activity.lock() = Instant::now();
            if let Err(e) = self.on_response(frame, &mut out) {
                return End::Error(e);
            }
            loop {
                match upstream.try_frame() {
                    Ok(Some(f)) => {
                        if let Err(e) = self.on_response(f, &mut out) {
                            return End::Error(e);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return self.frame_error("upstream", e),
                }
            }
            if !out.is_empty() {
                if let Err(end) = self.write_client(cw, &mut out).await {
                    return end;
                }
                self.rt.switch().note_served(&self.act);
            }
            if self.pending.lock().is_empty() {
                self.emptied.notify_waiters();
            }
        }
    }

    async fn write_client<CW: AsyncWrite + Unpin + Send>(
        &self,
        cw: &mut CW,
        out: &mut Vec<Bytes>,
    ) -> Result<(), End> {
        codec::write_frames_within(cw, out, Some(self.write_stall))
            .await
            .map_err(|e| self.client_write_failed(e))
    }

    /// A write to the client failed (copied or spliced): the session ends.
    fn client_write_failed(&self, e: std::io::Error) -> End {
        if e.kind() == std::io::ErrorKind::TimedOut {
            tracing::warn!(peer = %self.peer, cluster = %self.cluster().name(), "closing a client that stopped reading its responses: {e}");
        }
        End::Error(anyhow::Error::new(e).context("writing to client"))
    }

    /// The version of the answer with correlation id `corr` if it may be relayed as it
    /// arrives ([`SessionFeatures::streams_answer`]): it must be the next one awaited.
    fn streamable(&self, corr: i32) -> Option<(i16, bool)> {
        let q = self.pending.lock();
        let p = q.front().filter(|p| p.correlation_id == corr)?;
        let Reply::Client(hook) = &p.reply else {
            return None;
        };
        SessionFeatures::streams_answer(p.api_key, p.api_version, hook.as_ref())
            .then_some((p.api_version, matches!(hook, Some(Hook::Fetch { .. }))))
    }

    /// Relays a large Fetch answer as it arrives instead of reading it whole first:
    /// each read is walked ([`codec::fetch_walk`]: topic ids, leader epochs and node
    /// endpoints patched in place, at the same length) and written to the client at
    /// once. The request stays at the front of the queue until the last byte is
    /// written, so a drain (switch, shutdown) waits for the whole frame, and
    /// back-pressure and the stall check see it as in flight meanwhile.
    ///
    /// A frame found malformed after its first bytes went out cannot be taken back:
    /// the session ends (closing the client's connection) with the reason logged.
    #[allow(clippy::too_many_arguments)]
    async fn stream_response<UR, CW>(
        &self,
        corr: i32,
        (version, observe): (i16, bool),
        len: usize,
        upstream: &mut FrameReader<UR>,
        cw: &mut CW,
        out: &mut Vec<Bytes>,
        check: Duration,
    ) -> Result<(), End>
    where
        UR: AsyncRead + TcpHalf + Unpin + Send,
        CW: AsyncWrite + TcpHalf + Unpin + Send,
    {
        let dir = Directory { session: self };
        let mut patches = self.features.fetch_answer(version, &dir, observe);
        let mut walk = codec::fetch_walk::FetchWalk::new(version, len, patches.epochs())
            .expect("streamable versions are walked")
            .observing(patches.observing());
        let metrics = &self.cluster().metrics;
        let bytes_to_client = &metrics.bytes_to_client;
        // Made when the first long blind run comes; None after it could not be made.
        let mut pipe: Option<Option<Pipe>> = None;
        // The last blind run was spliced, so the next is likely long too (batches of one
        // producer are alike): read just past its start instead of into it.
        let mut peek = false;
        // The length prefix goes out as it came: the walk keeps the frame's length.
        let mut prefix = 4usize;
        loop {
            let buf = upstream.buffered_mut();
            let avail = (buf.len() - prefix).min(walk.left() as usize);
            let done = match walk.advance(&mut buf[prefix..prefix + avail], &mut patches) {
                Ok(n) => n,
                Err(e) => {
                    metrics::counter!(crate::admin::names::FRAMES_REJECTED_TOTAL, "reason" => "malformed").increment(1);
                    tracing::warn!(peer = %self.peer, cluster = %self.cluster().name(), correlation_id = corr, "closing the client connection in the middle of a streamed Fetch answer: {e}");
                    return Err(End::Error(
                        anyhow::Error::new(e).context("streaming a Fetch answer"),
                    ));
                }
            };
            if done > 0 {
                let n = prefix + done;
                prefix = 0;
                out.push(buf.split_to(n).freeze());
                bytes_to_client.increment(n as u64);
                self.write_client(cw, out).await?;
            }
            if walk.is_done() {
                break;
            }
            let blind = walk.blind_run();
            if blind >= SPLICE_MIN_BYTES && prefix == 0 && upstream.buffered_mut().is_empty() {
                if let (Some(from), Some(to)) = (upstream.get_ref().tcp(), cw.tcp()) {
                    let pipe = pipe.get_or_insert_with(|| {
                        Pipe::new()
                            .inspect_err(|e| {
                                tracing::debug!("no pipe to splice through ({e}); copying")
                            })
                            .ok()
                    });
                    if let Some(pipe) = pipe {
                        let n = self.splice(pipe, from, to, blind, check).await?;
                        walk.skip(n as u64);
                        bytes_to_client.increment(n as u64);
                        metrics.bytes_spliced_to_client.increment(n as u64);
                        *self.last_activity.lock() = Instant::now();
                        peek = true;
                        continue;
                    }
                }
            } else if blind > 0 {
                peek = false;
            }
            loop {
                // Nothing past the frame's end: a large answer behind it may be spliced.
                let unread = (prefix + walk.left() as usize)
                    .saturating_sub(upstream.buffered_mut().len())
                    .max(1);
                let max = if peek {
                    SPLICE_PEEK_BYTES
                } else {
                    STREAM_READ_BYTES
                };
                let read = upstream.fill_upto(unread.min(max));
                match tokio::time::timeout(check, read).await {
                    Err(_) => {
                        if let Some(end) = self.check_upstream_stalled() {
                            return Err(end);
                        }
                    }
                    Ok(Ok(())) => break,
                    Ok(Err(e)) => return Err(self.frame_error("upstream", e)),
                }
            }
            *self.last_activity.lock() = Instant::now();
        }
        self.features.fetch_answered(patches);
        let p = {
            let mut q = self.pending.lock();
            match q.front() {
                Some(p) if p.correlation_id == corr => q.pop_front(),
                _ => None,
            }
        };
        if let Some(p) = p {
            self.answered(&p);
        }
        self.rt.switch().note_served(&self.act);
        if self.pending.lock().is_empty() {
            self.emptied.notify_waiters();
        }
        Ok(())
    }

    /// Moves up to `max` bytes (one pipe's worth) of a streamed answer from the
    /// upstream to the client inside the kernel, under the same stall checks as a read
    /// and a write. The pipe is empty again when it returns `Ok`.
    async fn splice(
        &self,
        pipe: &mut Pipe,
        from: &tokio::net::TcpStream,
        to: &tokio::net::TcpStream,
        max: u64,
        check: Duration,
    ) -> Result<usize, End> {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        let n = loop {
            match tokio::time::timeout(check, pipe.fill(from, max)).await {
                Err(_) => {
                    if let Some(end) = self.check_upstream_stalled() {
                        return Err(end);
                    }
                }
                Ok(Ok(0)) => {
                    return Err(self.frame_error("upstream", FrameError::Truncated(0)));
                }
                Ok(Ok(n)) => break n,
                Ok(Err(e)) => return Err(self.frame_error("upstream", FrameError::Io(e))),
            }
        };
        codec::within_stall(Some(self.write_stall), pipe.drain(to))
            .await
            .map_err(|e| self.client_write_failed(e))?;
        Ok(n)
    }

    /// Book-keeping for a request whose answer came (taken off the queue).
    fn answered(&self, p: &Pending) {
        self.space.notify_one();
        self.cluster().metrics.in_flight.decrement(1.0);
        if let Some(api) = &p.api {
            api.responses.increment(1);
            api.latency.record(p.sent.elapsed());
        }
    }

    fn on_response(&self, frame: Bytes, out: &mut Vec<Bytes>) -> anyhow::Result<()> {
        let corr = codec::peek_response_correlation(&frame);
        let p = {
            let mut q = self.pending.lock();
            match q.front() {
                Some(p) if p.correlation_id == corr => q.pop_front(),
                _ => {
                    // Out of order would be a broker bug; find it rather than guess.
                    let pos = q.iter().position(|p| p.correlation_id == corr);
                    pos.and_then(|i| q.remove(i))
                }
            }
        };
        let Some(p) = p else {
            // Nothing was waiting for it: a broker answering an acks=0 Produce (librdkafka's
            // mock cluster does). The client expects nothing, so it is dropped.
            tracing::debug!(peer = %self.peer, correlation_id = corr, "dropping an unsolicited upstream response");
            metrics::counter!(crate::admin::names::UNSOLICITED_RESPONSES_TOTAL).increment(1);
            return Ok(());
        };
        self.answered(&p);
        self.cluster()
            .metrics
            .bytes_to_client
            .increment(frame.len() as u64);
        match p.reply {
            Reply::Internal(tx) => {
                let _ = tx.send(frame);
            }
            Reply::Client(hook) => {
                let is_final = hook.as_ref().is_some_and(Hook::is_final);
                let frame = if hook.is_some() || SessionFeatures::translates(p.api_key) {
                    self.features
                        .on_answer(p.api_key, p.api_version, hook, frame)?
                } else {
                    frame
                };
                if is_final {
                    out.push(frame);
                    return Ok(());
                }
                let dir = Directory { session: self };
                let f = rewrite::rewrite_response(p.api_key, p.api_version, frame, &dir)
                    .map_err(|e| anyhow::Error::new(e).context("rewriting response"))?;
                out.push(f);
            }
        }
        Ok(())
    }

    /// How long the broker may take to answer a request: a JoinGroup is held until
    /// the group rebalances, up to its rebalance timeout (the Java consumer's
    /// `max.poll.interval.ms`), which may exceed `limits.response_timeout`.
    fn patience_for(&self, peek: &codec::RequestPeek, frame: &[u8]) -> Duration {
        let mut d = self.response_timeout;
        if peek.api_key == ApiKey::JoinGroup as i16 {
            if let Some(ms) = codec::join_group_rebalance_timeout(frame, peek.api_version) {
                let rebalance = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
                d = d.max(rebalance + Duration::from_secs(30));
            }
        }
        d
    }

    /// The longest any request now in flight may wait (what a request queued behind
    /// them may have to wait too: a broker answers one connection's requests in order).
    fn longest_patience(&self) -> Duration {
        let q = self.pending.lock();
        q.iter()
            .map(|p| p.patience)
            .max()
            .unwrap_or(self.response_timeout)
            .max(self.response_timeout)
    }

    /// Ends the session when the oldest request in flight has waited longer than its
    /// patience (a broker that stopped answering, or trickles).
    fn check_upstream_stalled(&self) -> Option<End> {
        let (api_key, waited, patience) = {
            let q = self.pending.lock();
            let oldest = q.iter().min_by_key(|p| p.sent)?;
            (oldest.api_key, oldest.sent.elapsed(), oldest.patience)
        };
        if waited < patience {
            return None;
        }
        let api = ApiKey::try_from(api_key)
            .map(|k| format!("{k:?}"))
            .unwrap_or_else(|_| api_key.to_string());
        tracing::warn!(peer = %self.peer, cluster = %self.cluster().name(), "closing the session: the broker has not answered a {api} request for {waited:?} (limits.response_timeout, or the JoinGroup's rebalance timeout: {patience:?})");
        Some(End::Error(anyhow::anyhow!(
            "upstream stalled: no answer to a {api} request for {waited:?}"
        )))
    }

    /// The upstream closed the connection. During a re-authentication that is how a
    /// broker refuses it (error response, then close): the re-authentication, not this
    /// loop, ends the session then, so the failure is counted and logged with the
    /// broker's reason. Its waiters are released in case no answer came.
    async fn upstream_closed(&self) -> End {
        use std::sync::atomic::Ordering;
        let done = self.reauth_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if !self.reauthenticating.load(Ordering::Relaxed) {
            return End::UpstreamClosed;
        }
        let removed = {
            let mut q = self.pending.lock();
            let before = q.len();
            q.retain(|p| !matches!(p.reply, Reply::Internal(_)));
            before - q.len()
        };
        self.cluster().metrics.in_flight.decrement(removed as f64);
        done.await;
        End::UpstreamClosed
    }

    /// Waits (bounded) for in-flight responses to reach the client.
    async fn drain(&self) -> DrainOutcome {
        let window = self.rt.config().switch.drain_timeout;
        let outcome = match tokio::time::timeout(window, self.wait_empty()).await {
            Ok(()) => DrainOutcome::Drained,
            Err(_) => DrainOutcome::CutOff,
        };
        metrics::counter!(crate::admin::names::DRAINED_SESSIONS_TOTAL, "outcome" => outcome.label())
            .increment(1);
        outcome
    }

    /// Resolves once no request is waiting for its response.
    async fn wait_empty(&self) {
        loop {
            let n = self.emptied.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.pending.lock().is_empty() {
                return;
            }
            n.await;
        }
    }

    /// Sends one request of the proxy's own on this session's upstream connection, after
    /// the client requests `queued` ahead of it, and waits for its response frame.
    /// Client requests are not read meanwhile.
    pub(crate) async fn internal_request<UW: AsyncWrite + Unpin + Send>(
        &self,
        uw: &mut UW,
        queued: &mut Vec<Bytes>,
        api: ApiKey,
        version: i16,
        body: &[u8],
    ) -> anyhow::Result<Bytes> {
        let corr = self
            .next_internal_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let frame = encode_request(api, version, corr, body)?;
        let (tx, rx) = oneshot::channel();
        self.push_pending(Pending {
            correlation_id: corr,
            api_key: api as i16,
            api_version: version,
            sent: Instant::now(),
            patience: self.response_timeout,
            api: None,
            reply: Reply::Internal(tx),
        })
        .await;
        // The answer comes after those of the requests ahead of it, and a JoinGroup may
        // legitimately take its rebalance timeout: wait as long as the longest of them.
        let timeout = self.longest_patience();
        queued.push(frame);
        self.write_upstream(uw, queued).await?;
        let frame = tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| {
                anyhow::anyhow!("no answer to the proxy's {api:?} request within {timeout:?}")
            })?
            .map_err(|_| {
                anyhow::anyhow!("upstream closed before answering the proxy's {api:?} request")
            })?;
        Ok(frame)
    }

    /// KIP-368: authenticates again on the live connection before the session expires.
    async fn reauthenticate<UW: AsyncWrite + Unpin + Send>(
        &self,
        uw: &mut UW,
    ) -> anyhow::Result<i64> {
        let cluster = self.cluster();
        let Some(sasl) = cluster.config().sasl.clone() else {
            return Ok(0);
        };
        // The broker reads every frame during re-authentication as part of the SASL
        // exchange: earlier responses must be back first, and client requests wait
        // (this loop does not read the client meanwhile).
        let window = self.longest_patience();
        if tokio::time::timeout(window, self.wait_empty())
            .await
            .is_err()
        {
            anyhow::bail!(
                "in-flight requests did not complete within {window:?} before re-authentication"
            );
        }
        // Nothing is queued: the request loop writes what it admits before it waits.
        let mut queued = Vec::new();
        let mut ex = SessionExchange {
            session: self,
            uw,
            queued: &mut queued,
        };
        let flag = &self.reauthenticating;
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        let result = crate::sasl::authenticate(&mut ex, &sasl).await;
        flag.store(false, std::sync::atomic::Ordering::Relaxed);
        self.reauth_done.notify_waiters();
        let label = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(crate::admin::names::SASL_REAUTHENTICATIONS_TOTAL, "cluster" => cluster.name_label(), "result" => label).increment(1);
        let a = result?;
        tracing::debug!(peer = %self.peer, cluster = %cluster.name(), lifetime_ms = a.session_lifetime_ms, "upstream re-authenticated");
        Ok(a.session_lifetime_ms)
    }
}

/// [`KafkaExchange`] over a live session: the proxy's own requests go out between the
/// client's, on correlation ids of the proxy's own (SASL re-authentication, features).
pub(crate) struct SessionExchange<'a, R, UW> {
    session: &'a Session<R>,
    uw: &'a mut UW,
    /// Client requests admitted before the proxy's own: written first, in order.
    queued: &'a mut Vec<Bytes>,
}

impl<R: Runtime, UW: AsyncWrite + Unpin + Send> KafkaExchange for SessionExchange<'_, R, UW> {
    async fn exchange(
        &mut self,
        api_key: ApiKey,
        api_version: i16,
        body: Bytes,
    ) -> anyhow::Result<Bytes> {
        let frame = self
            .session
            .internal_request(self.uw, self.queued, api_key, api_version, &body)
            .await?;
        let at = codec::response_body_offset(&frame, api_key.response_header_version(api_version))
            .ok_or_else(|| anyhow::anyhow!("short {api_key:?} response"))?;
        Ok(frame.slice(at..))
    }

    async fn send_queued(&mut self) -> anyhow::Result<()> {
        self.session.write_upstream(self.uw, self.queued).await
    }
}

/// Records upstream addresses and hands out local listeners while rewriting.
struct Directory<'a, R> {
    session: &'a Session<R>,
}

impl<R: Runtime> NodeDirectory for Directory<'_, R> {
    fn local_endpoint(&self, node_id: i32, host: &str, port: i32) -> (StrBytes, i32) {
        let s = self.session;
        s.cluster().learn_node(node_id, host, port);
        s.rt.local_endpoint(node_id)
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Encodes a request frame of the proxy's own.
pub(crate) fn encode_request(
    api: ApiKey,
    version: i16,
    corr: i32,
    body: &[u8],
) -> anyhow::Result<Bytes> {
    let header = kafka_protocol::messages::RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_static_str("kafka-sidecar")));
    let mut buf = BytesMut::with_capacity(64 + body.len());
    header.encode(&mut buf, api.request_header_version(version))?;
    buf.extend_from_slice(body);
    Ok(codec::frame_with_length(buf))
}

#[cfg(test)]
pub(crate) mod tests {
    //! The relay over in-memory streams: a real session between a client and an
    //! upstream that are both this test, so every byte each side sees is checked.

    use super::*;
    use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
    use kafka_protocol::messages::{
        ApiVersionsRequest, BrokerId, MetadataRequest, MetadataResponse, RequestHeader,
    };
    use kafka_protocol::protocol::Decodable;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// A runtime for sessions under test: two clusters, no listeners (node n is
    /// advertised as 127.0.0.1:19000+n).
    pub(crate) struct NoRuntime {
        config: Arc<Config>,
        switch: Switch,
        features: Arc<Features>,
        shutdown: watch::Sender<bool>,
    }

    impl NoRuntime {
        pub(crate) fn new() -> Arc<Self> {
            let config = Arc::new(config("north"));
            let switch = Switch::new(&config).unwrap();
            Arc::new(NoRuntime {
                config,
                switch,
                features: Arc::new(Features::default()),
                shutdown: watch::channel(false).0,
            })
        }
    }

    fn config(active: &str) -> Config {
        Config::parse(&format!(
            "listen: {{address: 127.0.0.1, bootstrap_port: 0, broker_port_base: 0}}
active_cluster: {active}
clusters:
  north: {{bootstrap_servers: ['north.invalid:9092']}}
  west: {{bootstrap_servers: ['west.invalid:9092']}}
limits: {{max_in_flight: 4}}
switch: {{drain_timeout: 5s}}
"
        ))
        .unwrap()
    }

    impl Runtime for NoRuntime {
        fn config(&self) -> Arc<Config> {
            self.config.clone()
        }
        fn switch(&self) -> &Switch {
            &self.switch
        }
        fn features(&self) -> &Arc<Features> {
            &self.features
        }
        fn shutdown_signal(&self) -> watch::Receiver<bool> {
            self.shutdown.subscribe()
        }
        fn local_endpoint(&self, node_id: i32) -> (StrBytes, i32) {
            (StrBytes::from_static_str("127.0.0.1"), 19000 + node_id)
        }
    }

    /// A session relaying between the returned client and upstream ends.
    fn start(rt: &Arc<NoRuntime>) -> (DuplexStream, DuplexStream, tokio::task::JoinHandle<End>) {
        let (client, proxy_client) = tokio::io::duplex(1 << 16);
        let (upstream, proxy_upstream) = tokio::io::duplex(1 << 16);
        let act = rt.switch.current();
        let cfg = rt.config();
        let session = Session::new(rt.clone(), act, "127.0.0.1:1".parse().unwrap(), &cfg);
        let task = tokio::spawn(async move {
            let (cr, cw) = tokio::io::split(proxy_client);
            let (ur, uw) = tokio::io::split(proxy_upstream);
            let end = session.relay(cr, cw, ur, uw, 0).await;
            session.abandon_pending();
            end
        });
        (client, upstream, task)
    }

    fn request<T: Encodable>(api: ApiKey, version: i16, corr: i32, body: &T) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(corr)
            .with_client_id(Some(StrBytes::from_static_str("test")))
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        codec::frame_with_length(buf)
    }

    async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<Bytes> {
        let n = match s.read_i32().await {
            Ok(n) => n,
            Err(_) => return None,
        };
        let mut b = vec![0u8; n as usize];
        s.read_exact(&mut b).await.unwrap();
        let mut f = BytesMut::new();
        f.extend_from_slice(&n.to_be_bytes());
        f.extend_from_slice(&b);
        Some(f.freeze())
    }

    fn metadata_answer(corr: i32, version: i16) -> Bytes {
        let mut m = MetadataResponse::default();
        m.brokers.push(
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(3))
                .with_host(StrBytes::from_static_str("broker-3.north.example"))
                .with_port(9092),
        );
        let hv = ApiKey::Metadata.response_header_version(version);
        codec::response_frame(corr, hv, version, &m).unwrap()
    }

    #[tokio::test]
    async fn relays_bytes_as_they_are_and_rewrites_broker_addresses() {
        let rt = NoRuntime::new();
        let (mut client, mut upstream, task) = start(&rt);
        let av = request(ApiKey::ApiVersions, 0, 1, &ApiVersionsRequest::default());
        let md = request(
            ApiKey::Metadata,
            12,
            2,
            &MetadataRequest::default().with_topics(Some(vec![])),
        );
        client.write_all(&av).await.unwrap();
        client.write_all(&md).await.unwrap();
        // The upstream gets the very bytes the client sent, in order.
        assert_eq!(read_frame(&mut upstream).await.unwrap(), av);
        assert_eq!(read_frame(&mut upstream).await.unwrap(), md);
        // The ApiVersions answer (nothing to cap in it) comes back as it is; the
        // Metadata one is rewritten.
        let av_answer = codec::response_frame(
            1,
            0,
            0,
            &kafka_protocol::messages::ApiVersionsResponse::default(),
        )
        .unwrap();
        upstream.write_all(&av_answer).await.unwrap();
        upstream.write_all(&metadata_answer(2, 12)).await.unwrap();
        assert_eq!(read_frame(&mut client).await.unwrap(), av_answer);
        let got = read_frame(&mut client).await.unwrap();
        let mut body = got.slice(4..);
        kafka_protocol::messages::ResponseHeader::decode(&mut body, 1).unwrap();
        let m = MetadataResponse::decode(&mut body, 12).unwrap();
        assert_eq!(m.brokers[0].host.as_str(), "127.0.0.1");
        assert_eq!(m.brokers[0].port, 19003);
        // The upstream address was learned for the broker listener of node 3.
        let cluster = rt.switch.current().cluster.clone();
        assert_eq!(
            cluster.nodes(),
            vec![(3, "broker-3.north.example:9092".to_string())]
        );
        drop(client);
        assert!(matches!(task.await.unwrap(), End::ClientClosed));
    }

    // Paused time: the timeout below fires only once every task is idle, i.e. when the
    // session is really waiting for room, not merely slow.
    #[tokio::test(start_paused = true)]
    async fn stops_reading_the_client_at_max_in_flight_and_resumes_on_answers() {
        let rt = NoRuntime::new();
        let (mut client, mut upstream, task) = start(&rt);
        // max_in_flight is 4: the fifth request waits for an answer.
        for corr in 0..5 {
            client
                .write_all(&request(
                    ApiKey::ApiVersions,
                    0,
                    corr,
                    &ApiVersionsRequest::default(),
                ))
                .await
                .unwrap();
        }
        for corr in 0..4 {
            let f = read_frame(&mut upstream).await.unwrap();
            assert_eq!(codec::peek_request(&f).correlation_id, corr);
        }
        let early = tokio::time::timeout(Duration::from_millis(200), read_frame(&mut upstream));
        assert!(
            early.await.is_err(),
            "a fifth request went out beyond max_in_flight"
        );
        let answer = codec::response_frame(
            0,
            0,
            0,
            &kafka_protocol::messages::ApiVersionsResponse::default(),
        )
        .unwrap();
        upstream.write_all(&answer).await.unwrap();
        let f = read_frame(&mut upstream).await.unwrap();
        assert_eq!(codec::peek_request(&f).correlation_id, 4);
        assert_eq!(read_frame(&mut client).await.unwrap(), answer);
        drop(upstream);
        assert!(matches!(task.await.unwrap(), End::UpstreamClosed));
    }

    #[tokio::test]
    async fn a_switch_drains_what_is_in_flight_then_ends_the_session() {
        let rt = NoRuntime::new();
        let (mut client, mut upstream, task) = start(&rt);
        let md = request(ApiKey::Metadata, 12, 9, &MetadataRequest::default());
        client.write_all(&md).await.unwrap();
        assert_eq!(read_frame(&mut upstream).await.unwrap(), md);
        assert!(rt.switch.apply(&config("west")).unwrap(), "switched");
        // A request sent after the switch is not forwarded to the old cluster.
        let late = request(ApiKey::Metadata, 12, 10, &MetadataRequest::default());
        client.write_all(&late).await.unwrap();
        upstream.write_all(&metadata_answer(9, 12)).await.unwrap();
        let got = read_frame(&mut client).await.unwrap();
        assert_eq!(codec::peek_response_correlation(&got), 9);
        match task.await.unwrap() {
            End::Switched(DrainOutcome::Drained) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            read_frame(&mut upstream).await.is_none(),
            "the request sent after the switch reached the old cluster"
        );
    }

    /// A Fetch v17 answer: one topic, one partition with `records` of raw bytes and a
    /// leader hint, node endpoints for node 2.
    fn large_fetch_answer(corr: i32, records: usize) -> Bytes {
        use kafka_protocol::messages::fetch_response::{
            FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
        };
        let mut pd = PartitionData::default()
            .with_records(Some(Bytes::from(vec![0xAB; records])))
            .with_error_code(6);
        pd.current_leader = LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(2))
            .with_leader_epoch(4);
        let m = kafka_protocol::messages::FetchResponse::default()
            .with_responses(vec![FetchableTopicResponse::default()
                .with_topic_id(uuid::Uuid::from_u128(7))
                .with_partitions(vec![pd])])
            .with_node_endpoints(vec![NodeEndpoint::default()
                .with_node_id(BrokerId(2))
                .with_host(StrBytes::from_static_str("broker-2.north.example"))
                .with_port(9092)]);
        codec::response_frame(corr, 1, 17, &m).unwrap()
    }

    /// The client sends a Fetch v17 request; the upstream gets it as it was sent.
    async fn fetch_through<C, U>(client: &mut C, upstream: &mut U, corr: i32)
    where
        C: tokio::io::AsyncWrite + Unpin,
        U: AsyncRead + Unpin,
    {
        let fetch = request(
            ApiKey::Fetch,
            17,
            corr,
            &kafka_protocol::messages::FetchRequest::default(),
        );
        client.write_all(&fetch).await.unwrap();
        assert_eq!(read_frame(upstream).await.unwrap(), fetch);
    }

    /// Reads what the client gets until the proxy closes the connection.
    async fn read_to_close(s: &mut DuplexStream) -> Vec<u8> {
        let mut got = vec![];
        let _ = s.read_to_end(&mut got).await;
        got
    }

    #[tokio::test]
    async fn a_large_fetch_answer_streams_through_with_its_endpoints_rewritten() {
        let rt = NoRuntime::new();
        let (mut client, mut upstream, task) = start(&rt);
        fetch_through(&mut client, &mut upstream, 5).await;
        let answer = large_fetch_answer(5, 300 * 1024);
        let half = answer.len() / 2;
        upstream.write_all(&answer[..half]).await.unwrap();
        // Bytes reach the client before the upstream sent the rest (held whole, the
        // answer would wait for its last byte; the guard only catches that hang).
        let mut first = vec![0u8; 64 * 1024];
        tokio::time::timeout(Duration::from_secs(60), client.read_exact(&mut first))
            .await
            .expect("no byte of the answer before its end: not streamed")
            .unwrap();
        assert_eq!(&first[..], &answer[..first.len()]);
        let rest = answer.slice(half..);
        let writer = tokio::spawn(async move {
            for c in rest.chunks(7000) {
                upstream.write_all(c).await.unwrap();
            }
            upstream
        });
        let mut tail = vec![0u8; answer.len() - first.len()];
        client.read_exact(&mut tail).await.unwrap();
        first.extend_from_slice(&tail);
        let mut body = Bytes::from(first).slice(4..);
        kafka_protocol::messages::ResponseHeader::decode(&mut body, 1).unwrap();
        let m = kafka_protocol::messages::FetchResponse::decode(&mut body, 17).unwrap();
        assert_eq!(m.node_endpoints[0].host.as_str(), "127.0.0.1");
        assert_eq!(m.node_endpoints[0].port, 19002);
        let records = m.responses[0].partitions[0].records.as_ref().unwrap();
        assert_eq!(records.len(), 300 * 1024);
        let cluster = rt.switch.current().cluster.clone();
        assert_eq!(
            cluster.nodes(),
            vec![(2, "broker-2.north.example:9092".to_string())]
        );
        drop(writer.await.unwrap());
        assert!(matches!(task.await.unwrap(), End::UpstreamClosed));
    }

    /// A session over loopback TCP (what the proxy runs on): the client's end, the
    /// upstream's end, the session. Record bytes are spliced here, as in production.
    async fn start_tcp(
        rt: &Arc<NoRuntime>,
    ) -> (TcpStream, TcpStream, tokio::task::JoinHandle<End>) {
        async fn pair() -> (TcpStream, TcpStream) {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            (a, l.accept().await.unwrap().0)
        }
        let (client, mut proxy_client) = pair().await;
        let (upstream, mut proxy_upstream) = pair().await;
        let act = rt.switch.current();
        let cfg = rt.config();
        let session = Session::new(rt.clone(), act, "127.0.0.1:1".parse().unwrap(), &cfg);
        let task = tokio::spawn(async move {
            let (cr, cw) = proxy_client.split();
            let (ur, uw) = proxy_upstream.split();
            let end = session.relay(cr, cw, ur, uw, 0).await;
            session.abandon_pending();
            end
        });
        (client, upstream, task)
    }

    /// Over TCP the answer's 2 MiB of records are spliced, the rest walked: the client
    /// gets the same bytes the in-memory relay gives (endpoints rewritten, records as
    /// they were), while the upstream dribbles them in uneven pieces.
    #[tokio::test]
    async fn over_tcp_a_large_fetch_answer_is_spliced_byte_for_byte() {
        let rt = NoRuntime::new();
        let (mut client, mut upstream, task) = start_tcp(&rt).await;
        fetch_through(&mut client, &mut upstream, 5).await;
        let mut answer = large_fetch_answer(5, 2 << 20).to_vec();
        // Records no relay could produce by accident: each byte says where it is.
        let start = answer
            .windows(64)
            .position(|w| w.iter().all(|&b| b == 0xAB))
            .unwrap();
        for (i, b) in answer[start..start + (2 << 20)].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let answer = Bytes::from(answer);
        let sent = answer.clone();
        let writer = tokio::spawn(async move {
            for (i, c) in sent.chunks(100_003).enumerate() {
                upstream.write_all(c).await.unwrap();
                if i % 3 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            upstream
        });
        let got = read_frame(&mut client).await.unwrap();
        assert_eq!(got.len(), answer.len());
        let mut body = got.slice(4..);
        kafka_protocol::messages::ResponseHeader::decode(&mut body, 1).unwrap();
        let m = kafka_protocol::messages::FetchResponse::decode(&mut body, 17).unwrap();
        assert_eq!(m.node_endpoints[0].host.as_str(), "127.0.0.1");
        assert_eq!(m.node_endpoints[0].port, 19002);
        let records = m.responses[0].partitions[0].records.as_ref().unwrap();
        assert!(
            records
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i % 251) as u8),
            "the records arrived changed"
        );
        assert_eq!(records.len(), 2 << 20);
        drop(writer.await.unwrap());
        assert!(matches!(task.await.unwrap(), End::UpstreamClosed));
    }

    /// An upstream that closes in the middle of the records (inside a spliced run):
    /// the session ends with the reason, the client's connection closes after a
    /// prefix of the answer, never a frame completed with other bytes.
    #[tokio::test]
    async fn over_tcp_an_upstream_gone_in_the_middle_of_spliced_records_closes_the_client() {
        let rt = NoRuntime::new();
        let (mut client, mut upstream, task) = start_tcp(&rt).await;
        fetch_through(&mut client, &mut upstream, 6).await;
        let answer = large_fetch_answer(6, 1 << 20);
        upstream.write_all(&answer[..700 * 1024]).await.unwrap();
        drop(upstream);
        let mut got = vec![];
        let _ = client.read_to_end(&mut got).await;
        assert!(got.len() > 64 * 1024, "the records went out as they came");
        assert!(
            got.len() <= 700 * 1024,
            "nothing beyond what the upstream sent"
        );
        assert_eq!(&got[4..100], &answer[4..100]);
        match task.await.unwrap() {
            End::Error(e) => {
                let e = format!("{e:#}");
                assert!(e.contains("reading from upstream"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_streamed_answer_found_malformed_midway_closes_the_client_connection() {
        let rt = NoRuntime::new();
        let (mut client, mut upstream, task) = start(&rt);
        fetch_through(&mut client, &mut upstream, 6).await;
        // The partition's tagged fields, after its 200 KiB of records, claim 127 fields
        // in the few bytes left: found only once the records went out.
        let answer = large_fetch_answer(6, 200 * 1024);
        let mut bad = answer.to_vec();
        let records_end = bad
            .windows(64)
            .rposition(|w| w.iter().all(|&b| b == 0xAB))
            .unwrap()
            + 64;
        bad[records_end] = 0x7f;
        let writer = tokio::spawn(async move {
            upstream.write_all(&bad).await.unwrap();
            upstream
        });
        let got = read_to_close(&mut client).await;
        assert!(got.len() > 100 * 1024, "the records went out as they came");
        assert!(
            got.len() < answer.len(),
            "the frame was cut, not completed wrongly"
        );
        match task.await.unwrap() {
            End::Error(e) => {
                let e = format!("{e:#}");
                assert!(e.contains("malformed FetchResponse v17"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_lying_request_ends_the_session_before_it_reaches_the_upstream() {
        let rt = NoRuntime::new();
        let (mut client, mut upstream, task) = start(&rt);
        // A JoinGroup v5 whose protocols array claims 2^31-1 elements in a few bytes.
        let mut body = BytesMut::new();
        let good = kafka_protocol::messages::JoinGroupRequest::default();
        good.encode(&mut body, 5).unwrap();
        let n = body.len();
        body[n - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
        let mut frame = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::JoinGroup as i16)
            .with_request_api_version(5)
            .with_correlation_id(1)
            .encode(&mut frame, 1)
            .unwrap();
        frame.extend_from_slice(&body);
        client
            .write_all(&codec::frame_with_length(frame))
            .await
            .unwrap();
        match task.await.unwrap() {
            End::Error(e) => assert!(format!("{e:#}").contains("refused"), "{e:#}"),
            other => panic!("{other:?}"),
        }
        assert!(read_frame(&mut upstream).await.is_none());
    }
}
