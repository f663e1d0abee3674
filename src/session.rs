//! One client connection relayed to one upstream connection.
//!
//! Two loops run concurrently in the session's task: requests (client → upstream)
//! and responses (upstream → client). They share a FIFO of pending requests: Kafka
//! answers in request order on a connection, so the response loop pops the front
//! entry to learn the api key and version it needs for decoding. Requests that get
//! no answer (Produce with acks=0) are never queued.
//!
//! Most frames go through untouched, as the very `Bytes` that were read. The proxy
//! steps in only where it must: responses carrying broker addresses ([`crate::rewrite`]),
//! an ApiVersions request newer than it understands, a client attempting SASL while
//! the proxy holds the credentials, re-authentication of the upstream (KIP-368) on
//! its own correlation ids, and idempotent producers after a switch
//! ([`crate::producer_identity`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

use crate::cluster::{ApiMetrics, Cluster};
use crate::codec::{self, FrameError, FrameReader};
use crate::group_membership::Memberships;
use crate::intercept::{self, ResponseHook};
use crate::producer_identity::Route;
use crate::proxy::Shared;
use crate::rewrite::{self, NodeDirectory};
use crate::switch::{Activation, DrainOutcome};
use crate::upstream::{self, UpstreamStream};

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
    Client(Option<Box<dyn ResponseHook>>),
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
pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) act: Arc<Activation>,
    /// The cluster and generation, as producer identity keys them.
    pub(crate) route: Route,
    pending: Mutex<VecDeque<Pending>>,
    /// Signalled by the response loop after each pop (room for one more request).
    space: Notify,
    /// Signalled when the pending queue becomes empty (drain).
    emptied: Notify,
    max_in_flight: usize,
    pub(crate) peer: SocketAddr,
    api_cache: Mutex<Vec<Option<Arc<ApiMetrics>>>>,
    next_internal_id: std::sync::atomic::AtomicI32,
    /// Set while the SASL exchange of a re-authentication runs on the connection.
    reauthenticating: std::sync::atomic::AtomicBool,
    /// Signalled when that exchange ends.
    reauth_done: Notify,
    /// Consumer groups the client joined over this connection.
    pub(crate) groups: Memberships,
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
pub async fn serve(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr, target: Target) {
    let act = shared.switch.current();
    let cfg = shared.config();
    let cluster = act.cluster.clone();
    let _ = client.set_nodelay(true);
    if let Target::Broker(node) = target {
        cluster.ensure_node(node, cfg.limits.connect_timeout).await;
    }
    let candidates = cluster.candidates(target.node());
    let conn = match upstream::connect(&cluster, &candidates, cfg.limits.connect_timeout).await {
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
    let _gen0 = shared.producers.session_opened(act.generation);
    let session = Session {
        shared: shared.clone(),
        act: act.clone(),
        route: Route {
            cluster: std::sync::Arc::from(cluster.name()),
            generation: act.generation,
        },
        pending: Mutex::new(VecDeque::with_capacity(8)),
        space: Notify::new(),
        emptied: Notify::new(),
        max_in_flight: cfg.limits.max_in_flight,
        peer,
        api_cache: Mutex::new(vec![None; 96]),
        next_internal_id: std::sync::atomic::AtomicI32::new(i32::MIN),
        reauthenticating: std::sync::atomic::AtomicBool::new(false),
        reauth_done: Notify::new(),
        groups: Memberships::default(),
        last_activity: Mutex::new(Instant::now()),
        write_stall: cfg.limits.write_stall_timeout,
        response_timeout: cfg.limits.response_timeout,
    };
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
    let left: Vec<Pending> = session.pending.lock().drain(..).collect();
    cluster.metrics.in_flight.decrement(left.len() as f64);
    for p in left {
        if let Reply::Client(Some(hook)) = p.reply {
            hook.abandoned(&session);
        }
    }
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

impl Session {
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
        CW: AsyncWrite + Unpin + Send,
        UR: AsyncRead + Unpin + Send,
        UW: AsyncWrite + Unpin + Send,
    {
        let limits = self.shared.config().limits.clone();
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
        let mut act_rx = self.shared.switch.subscribe();
        // A switch while this session was connecting must be seen by the first check.
        act_rx.mark_changed();
        let mut shutdown = self.shared.shutdown_signal();
        let mut out: Vec<Bytes> = Vec::with_capacity(8);
        let mut reauth_at =
            crate::sasl::reauth_delay(session_lifetime_ms).map(|d| tokio::time::Instant::now() + d);
        loop {
            let idle = self.shared.config().limits.idle_timeout;
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
                            self.groups.leave_all(self, uw).await;
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
                r = tokio::time::timeout(idle_left, client.next_frame()) => r,
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
                match client.try_frame() {
                    Ok(f) => next = f,
                    Err(e) => return self.frame_error("client", e),
                }
            }
            if let Err(e) = codec::write_frames_within(uw, &mut out, Some(self.write_stall)).await {
                return End::Error(anyhow::Error::new(e).context("writing to upstream"));
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
        frame: Bytes,
        uw: &mut UW,
        out: &mut Vec<Bytes>,
    ) -> anyhow::Result<()> {
        let peek = codec::peek_request(&frame);
        // A frame that lies about its contents (an array count its bytes cannot hold)
        // is refused before anything decodes it: it ends this connection only.
        if let Err(e) = codec::check_request(&frame) {
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
            out.push(frame);
            return Ok(());
        }
        let intercepted = intercept::request(self, &peek, frame, uw).await?;
        let frame = intercepted.frame;
        let reply = Reply::Client(intercepted.hook);
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
                codec::write_frames_within(uw, out, Some(self.write_stall))
                    .await
                    .map_err(|e| anyhow::Error::new(e).context("writing to upstream"))?;
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
        UR: AsyncRead + Unpin + Send,
        CW: AsyncWrite + Unpin + Send,
    {
        let mut out: Vec<Bytes> = Vec::with_capacity(8);
        // How often an upstream that sends nothing is checked on.
        let check = (self.response_timeout / 4).min(Duration::from_secs(5));
        loop {
            let frame = match tokio::time::timeout(check, upstream.next_frame()).await {
                Err(_) => {
                    if let Some(end) = self.check_upstream_stalled() {
                        return end;
                    }
                    continue;
                }
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) => return self.upstream_closed().await,
                Ok(Err(e)) => return self.frame_error("upstream", e),
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
                if let Err(e) =
                    codec::write_frames_within(cw, &mut out, Some(self.write_stall)).await
                {
                    if e.kind() == std::io::ErrorKind::TimedOut {
                        tracing::warn!(peer = %self.peer, cluster = %self.cluster().name(), "closing a client that stopped reading its responses: {e}");
                    }
                    return End::Error(anyhow::Error::new(e).context("writing to client"));
                }
                self.shared.switch.note_served(&self.act);
            }
            if self.pending.lock().is_empty() {
                self.emptied.notify_waiters();
            }
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
        self.space.notify_one();
        let cluster = self.cluster();
        cluster.metrics.in_flight.decrement(1.0);
        cluster
            .metrics
            .bytes_to_client
            .increment(frame.len() as u64);
        if let Some(api) = &p.api {
            api.responses.increment(1);
            api.latency.record(p.sent.elapsed());
        }
        match p.reply {
            Reply::Internal(tx) => {
                let _ = tx.send(frame);
            }
            Reply::Client(hook) => {
                let frame = match hook {
                    Some(h) if h.is_final() => {
                        out.push(h.on_response(self, frame)?);
                        return Ok(());
                    }
                    Some(h) => h.on_response(self, frame)?,
                    None => frame,
                };
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
        let window = self.shared.config().switch.drain_timeout;
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

    /// Sends one request of the proxy's own on this session's upstream connection and
    /// waits for its response frame. Client requests are not read meanwhile.
    pub(crate) async fn internal_request<UW: AsyncWrite + Unpin + Send>(
        &self,
        uw: &mut UW,
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
        let mut frames = vec![frame];
        codec::write_frames_within(uw, &mut frames, Some(self.write_stall)).await?;
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

    /// [`Self::internal_request`] with the request encoded from `req` and the answer
    /// decoded.
    pub(crate) async fn internal_call<UW, Req, Resp>(
        &self,
        uw: &mut UW,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> anyhow::Result<Resp>
    where
        UW: AsyncWrite + Unpin + Send,
        Req: Encodable,
        Resp: Decodable,
    {
        let mut body = BytesMut::new();
        req.encode(&mut body, version)?;
        let frame = self.internal_request(uw, api, version, &body).await?;
        codec::decode_response(api, version, &frame)
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
        let mut ex = SessionExchange { session: self, uw };
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

/// Lets the SASL code drive an exchange over a live session.
struct SessionExchange<'a, UW> {
    session: &'a Session,
    uw: &'a mut UW,
}

impl<UW: AsyncWrite + Unpin + Send> crate::sasl::KafkaExchange for SessionExchange<'_, UW> {
    async fn exchange(
        &mut self,
        api_key: ApiKey,
        api_version: i16,
        body: Bytes,
    ) -> anyhow::Result<Bytes> {
        let frame = self
            .session
            .internal_request(self.uw, api_key, api_version, &body)
            .await?;
        let mut b = frame.slice(4..);
        ResponseHeader::decode(&mut b, api_key.response_header_version(api_version))?;
        Ok(b)
    }
}

/// Records upstream addresses and hands out local listeners while rewriting.
struct Directory<'a> {
    session: &'a Session,
}

impl NodeDirectory for Directory<'_> {
    fn local_endpoint(&self, node_id: i32, host: &str, port: i32) -> (StrBytes, i32) {
        let s = self.session;
        s.cluster().learn_node(node_id, host, port);
        s.shared.local_endpoint(node_id)
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
