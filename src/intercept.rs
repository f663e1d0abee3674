//! Where a session hands frames to the features, and tells them about a switch.
//!
//! The session relays frames; everything the proxy *does* with a client request is
//! decided here, in one dispatch over [`OnRequest`] (from [`crate::apis::TABLE`],
//! exhaustive: a new step does not compile until it is handled). A feature may
//! replace the frame (rewritten, or a cheap stand-in that keeps its place in the
//! pipeline) and may leave a [`Hook`] for the answer. Each session owns one
//! [`SessionFeatures`]: the features' per-session state, their shared state, and the
//! [`SessionContext`] they see. The session knows nothing of the features themselves.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, JoinGroupRequest, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::api_versions;
use crate::apis::{self, OnRequest};
use crate::codec::fetch_walk::FetchPatches;
use crate::codec::{self, RequestPeek};
use crate::connection::{Broker, KafkaExchange};
use crate::consumer_positions::{
    self, CommitAsk, ConsumerPositions, EndTxnAsk, Seen, TxnCommitAsk,
};
use crate::feature::SessionContext;
use crate::group_membership::{self, JoinWaits, Joining, Memberships, Rejoins, Waited};
use crate::producer_identity::{Gen0Session, ProduceHook, ProducerIdentities, Route};
use crate::rewrite::{self, NodeDirectory};
use crate::topic_identity::{self, Epochs, TopicIds, View, Way};

/// The features' state that outlives sessions (one per proxy).
#[derive(Default)]
pub struct Features {
    pub producers: Arc<ProducerIdentities>,
    pub topic_ids: TopicIds,
    pub rejoins: Arc<Rejoins>,
    pub positions: Arc<ConsumerPositions>,
    pub join_waits: JoinWaits,
}

/// What a feature left for the answer to one request.
pub enum Hook {
    Produce {
        hook: ProduceHook,
        version: i16,
    },
    InitProducerId {
        version: i16,
    },
    JoinGroup {
        joining: Joining,
        version: i16,
    },
    GroupHeartbeat {
        joining: Joining,
        version: i16,
    },
    /// A commit whose accepted offsets become the group's positions.
    OffsetCommit {
        ask: CommitAsk,
        version: i16,
    },
    /// Offsets committed in a transaction: accepted ones wait for its end.
    TxnOffsetCommit {
        ask: TxnCommitAsk,
        version: i16,
    },
    /// The end of a transaction that committed offsets.
    EndTxn {
        ask: EndTxnAsk,
        version: i16,
    },
    /// A fetch by a committing client: its batch headers anchor the next commits.
    Fetch {
        version: i16,
    },
    /// The proxy answered the request itself (this answer); a stand-in kept its place.
    Answered(Bytes),
    /// The client asked ApiVersions at a version the proxy cannot decode.
    ApiVersionsTooNew {
        corr: i32,
    },
    /// The client tried SASL although the proxy authenticates the upstream itself.
    SaslRefused {
        api_key: i16,
        version: i16,
        corr: i32,
    },
}

impl Hook {
    /// The hook's output is the client's answer as it is (no address rewriting): for
    /// answers the proxy builds at versions other than the request's.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Hook::Answered(_) | Hook::ApiVersionsTooNew { .. } | Hook::SaslRefused { .. }
        )
    }

    /// The upstream got a stand-in (ApiVersions v0) in the request's place: the
    /// answer is built by the hook, never read from the upstream, so nothing in it is
    /// translated.
    pub fn stands_in(&self) -> bool {
        match self {
            Hook::Produce { hook, .. } => hook.substituted(),
            h => h.is_final(),
        }
    }
}

/// What the proxy does with one client request.
pub struct Intercepted {
    pub frame: Bytes,
    pub hook: Option<Hook>,
    /// The step translated the client's topic ids already, at the places its own walk
    /// found them (a Produce request), without another walk.
    ids_translated: bool,
}

/// The features of one session.
pub struct SessionFeatures {
    cx: SessionContext,
    route: Route,
    epochs: Epochs,
    features: Arc<Features>,
    groups: Memberships,
    _gen0: Gen0Session,
}

impl SessionFeatures {
    pub fn new(cx: SessionContext, features: Arc<Features>) -> Self {
        let _gen0 = features.producers.session_opened(cx.generation);
        features.rejoins.session_opened(cx.generation);
        SessionFeatures {
            route: Route {
                cluster: cx.cluster.clone(),
                generation: cx.generation,
            },
            epochs: Epochs::of_generation(cx.generation),
            cx,
            features,
            groups: Memberships::default(),
            _gen0,
        }
    }

    pub fn context(&self) -> &SessionContext {
        &self.cx
    }

    fn view(&self) -> View<'_> {
        View {
            ids: &self.features.topic_ids,
            cluster: &self.cx.cluster,
            epochs: self.epochs,
        }
    }

    /// Dispatches a client request of an API the table names to the features that
    /// look into it: its step first (producer identity keys on the ids the client
    /// sees), then topic ids and leader epochs are translated for the cluster.
    /// `broker` calls the cluster on the session's own connection.
    pub async fn on_request<E: KafkaExchange>(
        &self,
        api: &apis::Api,
        peek: &RequestPeek,
        frame: BytesMut,
        broker: &mut Broker<E>,
    ) -> anyhow::Result<Intercepted> {
        let mut i = match api.request {
            Some(OnRequest::Produce) => self.produce(peek, frame, broker).await?,
            Some(step) => self.step(step, peek, frame.freeze(), broker).await?,
            None => Intercepted {
                frame: frame.freeze(),
                hook: None,
                ids_translated: false,
            },
        };
        if api.translated && !i.ids_translated && !i.hook.as_ref().is_some_and(Hook::stands_in) {
            let flexible = api.key.request_header_version(peek.api_version) >= 2;
            let at = codec::request_body_offset(&i.frame, flexible)
                .ok_or_else(|| anyhow::anyhow!("malformed {:?} request header", api.key))?;
            i.frame = topic_identity::translate(
                &self.view(),
                api.key,
                peek.api_version,
                Way::Down,
                i.frame,
                at,
            )?;
        }
        Ok(i)
    }

    /// A Produce request: producer identity patches its batch headers, then topic ids
    /// are patched at the places its walk found, both in the bytes the request was read
    /// into (no copy, no second walk).
    async fn produce<E: KafkaExchange>(
        &self,
        peek: &RequestPeek,
        frame: BytesMut,
        broker: &mut Broker<E>,
    ) -> anyhow::Result<Intercepted> {
        let version = peek.api_version;
        let mut r = self
            .features
            .producers
            .rewrite_produce(&self.route, frame, version, broker)
            .await?;
        if let Some(at) = &r.topic_ids {
            topic_identity::translate_ids_down(&self.view(), ApiKey::Produce, &mut r.frame, at);
        }
        Ok(Intercepted {
            frame: r.frame.freeze(),
            hook: r.hook.map(|hook| Hook::Produce { hook, version }),
            ids_translated: r.topic_ids.is_some(),
        })
    }

    async fn step<E: KafkaExchange>(
        &self,
        step: OnRequest,
        peek: &RequestPeek,
        frame: Bytes,
        broker: &mut Broker<E>,
    ) -> anyhow::Result<Intercepted> {
        let pass = |frame| {
            Ok(Intercepted {
                frame,
                hook: None,
                ids_translated: false,
            })
        };
        let with = |frame, hook| {
            Ok(Intercepted {
                frame,
                hook: Some(hook),
                ids_translated: false,
            })
        };
        let version = peek.api_version;
        let positions = &self.features.positions;
        let producers = &self.features.producers;
        let rejoins = &self.features.rejoins;
        let generation = self.cx.generation;
        let answered = |answer: Option<Bytes>, frame| match answer {
            Some(a) => with(
                api_versions::v0_request(peek.correlation_id),
                Hook::Answered(a),
            ),
            None => pass(frame),
        };
        match step {
            OnRequest::Produce => unreachable!("Produce requests take SessionFeatures::produce"),
            OnRequest::InitProducerId => {
                match producers.rewrite_init_request(&self.route, &frame, version)? {
                    Some(f) => with(f, Hook::InitProducerId { version }),
                    None => pass(frame),
                }
            }
            OnRequest::JoinGroup => {
                self.hold_group(peek, &frame).await;
                // Decoded once, for the join wait and for the answer's hook.
                match codec::decode_request::<JoinGroupRequest>(ApiKey::JoinGroup, version, &frame)
                {
                    Some(req) => {
                        self.wait_for_topics(&req, broker).await;
                        let joining = Memberships::joining(&req);
                        with(frame, Hook::JoinGroup { joining, version })
                    }
                    None => pass(frame),
                }
            }
            OnRequest::LeaveGroup => {
                self.groups.leave_request(&frame, version);
                pass(frame)
            }
            OnRequest::ConsumerGroupHeartbeat => {
                if let Some(a) = rejoins.heartbeat_request(generation, &frame, version)? {
                    return answered(Some(a), frame);
                }
                self.hold_group(peek, &frame).await;
                match self.groups.heartbeat_request(&frame, version) {
                    Some(joining) => with(frame, Hook::GroupHeartbeat { joining, version }),
                    None => pass(frame),
                }
            }
            OnRequest::Fetch => match rejoins.fetch_request(generation, &frame, version)? {
                Some(a) => answered(Some(a), frame),
                None if positions.watches(&frame) => with(frame, Hook::Fetch { version }),
                None => pass(frame),
            },
            OnRequest::OffsetCommit => match rejoins.commit_request(generation, &frame, version)? {
                Some(a) => answered(Some(a), frame),
                None => match positions.commit_request(&frame, version) {
                    Some(ask) => with(frame, Hook::OffsetCommit { ask, version }),
                    None => pass(frame),
                },
            },
            OnRequest::OffsetFetch => {
                self.hold_group(peek, &frame).await;
                pass(frame)
            }
            OnRequest::TxnOffsetCommit => match positions.txn_commit_request(&frame, version) {
                Some(ask) => with(frame, Hook::TxnOffsetCommit { ask, version }),
                None => pass(frame),
            },
            OnRequest::EndTxn => match positions.end_txn_request(&self.cx.cluster, &frame, version)
            {
                Some(ask) => with(frame, Hook::EndTxn { ask, version }),
                None => pass(frame),
            },
            OnRequest::ApiVersions if version > api_versions::max_request_version() => {
                // Asked at a version the proxy cannot decode: answer as a broker does.
                let corr = peek.correlation_id;
                with(
                    api_versions::v0_request(corr),
                    Hook::ApiVersionsTooNew { corr },
                )
            }
            OnRequest::ApiVersions => pass(frame),
            OnRequest::Sasl if self.cx.proxy_holds_credentials => {
                tracing::warn!(peer = %self.cx.peer, cluster = %self.cx.cluster, "client attempted SASL; kafka-sidecar holds the upstream credentials, so the client must connect with security.protocol=PLAINTEXT and no SASL settings");
                let corr = peek.correlation_id;
                with(
                    api_versions::v0_request(corr),
                    Hook::SaslRefused {
                        api_key: peek.api_key,
                        version,
                        corr,
                    },
                )
            }
            OnRequest::Sasl => pass(frame),
        }
    }

    /// The first classic JoinGroup of a group after a switch waits (bounded) while none
    /// of its subscribed topics exists on the new cluster yet (see
    /// `group_membership::topics_wait`).
    async fn wait_for_topics<E: KafkaExchange>(
        &self,
        req: &JoinGroupRequest,
        broker: &mut Broker<E>,
    ) {
        let generation = self.cx.generation;
        if generation == 0 {
            return;
        }
        if !self
            .features
            .join_waits
            .first_join(&req.group_id.0, generation)
        {
            return;
        }
        let topics = group_membership::subscribed_topics(req);
        if topics.is_empty() {
            return;
        }
        let group = &req.group_id.0;
        let bound = group_membership::TOPICS_WAIT_BOUND;
        let waited = group_membership::while_none_exists(broker, &topics, bound).await;
        let outcome = match &waited {
            Waited::Present { waited } if waited.is_zero() => None,
            Waited::Present { .. } => Some("appeared"),
            Waited::Absent => Some("absent"),
            Waited::Failed(_) => Some("failed"),
        };
        if let Some(outcome) = outcome {
            metrics::counter!(crate::admin::names::GROUP_JOIN_WAITS_TOTAL, "outcome" => outcome)
                .increment(1);
        }
        match waited {
            Waited::Present { waited } if waited.is_zero() => {}
            Waited::Present { waited } => {
                tracing::info!(group = %group, ?topics, waited_ms = waited.as_millis() as u64, cluster = %self.cx.cluster, "a group's first join after the switch waited for its topic to be created on the new cluster (else its leader would assign nothing)");
            }
            Waited::Absent => {
                tracing::warn!(group = %group, ?topics, cluster = %self.cx.cluster, "none of the group's subscribed topics exists on the new cluster; it joins without them (a client that does not look again gets no partitions of them until its next rebalance)");
            }
            Waited::Failed(e) => {
                tracing::debug!(group = %group, cluster = %self.cx.cluster, "could not look up the group's topics before its join: {e}");
            }
        }
    }

    /// Waits while the positions of the group this request names are carried to the
    /// session's cluster after a switch (see [`consumer_positions`]).
    async fn hold_group(&self, peek: &RequestPeek, frame: &Bytes) {
        if !self.features.positions.carrying() {
            return;
        }
        let Some(api) = ApiKey::try_from(peek.api_key).ok() else {
            return;
        };
        let flexible = api.request_header_version(peek.api_version) >= 2;
        let Some(at) = codec::request_body_offset(frame, flexible) else {
            return;
        };
        if let Some(group) =
            consumer_positions::group_of(peek.api_key, peek.api_version, flexible, &frame[at..])
        {
            self.features
                .positions
                .hold(self.cx.generation, group)
                .await;
        }
    }

    /// Turns the upstream's answer to a client request of `api_key` at `version` into
    /// what the client gets: topic ids and leader epochs first (the features key on
    /// what the client sees), then the hook, if any. Address rewriting follows unless
    /// the hook [`Hook::is_final`].
    pub fn on_answer(
        &self,
        api_key: i16,
        version: i16,
        hook: Option<Hook>,
        frame: Bytes,
    ) -> anyhow::Result<Bytes> {
        let stood_in = hook.as_ref().is_some_and(Hook::stands_in);
        let translated = apis::lookup(api_key).filter(|a| a.translated && !stood_in);
        let frame = match translated {
            Some(api) => {
                let hv = api.key.response_header_version(version);
                let at = codec::response_body_offset(&frame, hv)
                    .ok_or_else(|| anyhow::anyhow!("short {:?} response", api.key))?;
                topic_identity::translate(&self.view(), api.key, version, Way::Up, frame, at)?
            }
            None => frame,
        };
        match hook {
            Some(h) => self.on_response(h, frame),
            None => Ok(frame),
        }
    }

    /// Whether answers to client requests of `api_key` go through [`Self::on_answer`]
    /// even without a hook.
    pub fn translates(api_key: i16) -> bool {
        apis::lookup(api_key).is_some_and(|a| a.translated)
    }

    /// Whether the answer to a client request of `api_key` at `version` with `hook`
    /// may be relayed as it arrives ([`codec::fetch_walk`]) instead of whole: Fetch
    /// answers without a hook, at the versions the walk knows. Everything
    /// [`Self::on_answer`] and the address rewrite do to them is then done by
    /// [`Self::fetch_answer`], in place and at the same length.
    pub fn streams_answer(api_key: i16, version: i16, hook: Option<&Hook>) -> bool {
        api_key == ApiKey::Fetch as i16
            && matches!(hook, None | Some(Hook::Fetch { .. }))
            && codec::fetch_walk::VERSIONS.contains(&version)
    }

    /// What a streamed Fetch answer's walk patches with (see [`Self::streams_answer`]).
    /// `observe`: the request left a [`Hook::Fetch`] (its batch headers are kept).
    pub fn fetch_answer<'a>(
        &'a self,
        version: i16,
        dir: &'a (dyn NodeDirectory + Sync),
        observe: bool,
    ) -> FetchAnswer<'a> {
        FetchAnswer {
            view: self.view(),
            endpoints: apis::on_response(ApiKey::Fetch as i16, version)
                == Some(apis::OnResponse::NodeEndpoints),
            version,
            dir,
            seen: observe.then(Seen::default),
        }
    }

    /// A streamed Fetch answer was relayed whole: what it showed is kept.
    pub fn fetch_answered(&self, answer: FetchAnswer<'_>) {
        if let Some(seen) = answer.seen {
            self.features.positions.record(&self.cx.cluster, seen);
        }
    }

    fn on_response(&self, hook: Hook, frame: Bytes) -> anyhow::Result<Bytes> {
        let producers = &self.features.producers;
        match hook {
            Hook::Produce { hook, version } => {
                let out = producers.on_produce_response(&self.route, hook, frame, version);
                metrics::gauge!(crate::admin::names::PRODUCER_IDENTITIES)
                    .set(producers.live() as f64);
                out
            }
            Hook::InitProducerId { version } => {
                let out = producers.map_init_response(&self.route, frame, version);
                metrics::gauge!(crate::admin::names::PRODUCER_IDENTITIES)
                    .set(producers.live() as f64);
                out
            }
            Hook::JoinGroup { joining, version } => {
                // A response that lies about its contents ends the session, as everywhere.
                apis::check_response(ApiKey::JoinGroup, version, &frame)?;
                if let Some(member) = self.groups.join_response(joining.clone(), &frame, version) {
                    let rejoins = &self.features.rejoins;
                    rejoins.classic_member_joined(self.cx.generation, &joining, &member);
                }
                Ok(frame)
            }
            Hook::GroupHeartbeat { joining, version } => {
                apis::check_response(ApiKey::ConsumerGroupHeartbeat, version, &frame)?;
                if let Some(member) = self.groups.heartbeat_response(&joining, &frame, version) {
                    let rejoins = &self.features.rejoins;
                    rejoins.member_confirmed(self.cx.generation, &joining, &member);
                }
                Ok(frame)
            }
            Hook::OffsetCommit { ask, version } => {
                let positions = &self.features.positions;
                positions.commit_answered(
                    &self.cx.cluster,
                    self.cx.generation,
                    ask,
                    version,
                    &frame,
                );
                Ok(frame)
            }
            Hook::TxnOffsetCommit { ask, version } => {
                let positions = &self.features.positions;
                let (cluster, generation) = (&self.cx.cluster, self.cx.generation);
                positions.txn_commit_answered(cluster, generation, ask, version, &frame);
                Ok(frame)
            }
            Hook::EndTxn { ask, version } => {
                let positions = &self.features.positions;
                let (cluster, generation) = (&self.cx.cluster, self.cx.generation);
                positions.end_txn_answered(cluster, generation, ask, version, &frame);
                Ok(frame)
            }
            Hook::Fetch { version } => {
                let f = &self.features;
                f.positions
                    .fetch_answered(&f.topic_ids, &self.cx.cluster, version, &frame);
                Ok(frame)
            }
            Hook::Answered(answer) => Ok(answer),
            Hook::ApiVersionsTooNew { corr } => api_versions::answer_too_new(corr, frame),
            Hook::SaslRefused {
                api_key,
                version,
                corr,
            } => sasl_refusal(api_key, version, corr),
        }
    }

    /// The answer will never come: the session ended first.
    pub fn abandoned(&self, hook: Hook) {
        if let Hook::Produce { hook, .. } = hook {
            self.features.producers.abandon(&hook);
        }
    }

    /// The session is closing for a switch to another cluster, its requests drained:
    /// what the client holds on this cluster is handed back while the connection is
    /// still there (consumer group memberships are left).
    pub async fn on_switch_away<E: KafkaExchange>(&self, broker: &mut Broker<E>) {
        self.groups.leave_all(&self.cx, broker).await;
    }
}

/// A streamed Fetch answer's patches: topic ids and leader epochs as
/// [`topic_identity::translate`] patches them, node endpoints as
/// [`rewrite::rewrite_response`] rewrites them, at the same length
/// ([`rewrite::tail`]).
pub struct FetchAnswer<'a> {
    view: View<'a>,
    /// Node endpoints are rewritten at this version.
    endpoints: bool,
    version: i16,
    dir: &'a (dyn NodeDirectory + Sync),
    /// Batch headers for consumer positions (the client commits offsets).
    seen: Option<Seen>,
}

impl FetchAnswer<'_> {
    /// The walk must report topics, partitions and batch headers.
    pub fn observing(&self) -> bool {
        self.seen.is_some()
    }
}

impl FetchPatches for FetchAnswer<'_> {
    fn epochs(&self) -> bool {
        self.view.epochs.raises()
    }

    fn topic_id(&mut self, id: &mut [u8]) {
        topic_identity::present_topic_id(&self.view, ApiKey::Fetch, id);
        if let Some(s) = &mut self.seen {
            let presented = uuid::Uuid::from_slice(id).ok();
            s.topic(presented.and_then(|p| self.view.ids.name_of(p)));
        }
    }

    fn epoch(&mut self, epoch: &mut [u8]) {
        topic_identity::raise_epoch(self.view.epochs, epoch);
    }

    fn topic_name(&mut self, name: &[u8]) {
        if let Some(s) = &mut self.seen {
            s.topic(std::str::from_utf8(name).ok().map(Arc::from));
        }
    }

    fn partition(&mut self, index: i32) {
        if let Some(s) = &mut self.seen {
            s.partition(index);
        }
    }

    fn batch(&mut self, header: &[u8]) {
        if let Some(s) = &mut self.seen {
            s.batch(header);
        }
    }

    fn tail(&mut self, tail: &mut [u8]) -> Result<(), String> {
        if !self.endpoints {
            return Ok(());
        }
        match rewrite::tail::fetch_tail(self.version, tail, self.dir) {
            Ok(rewrite::tail::Tail::Unchanged) => {}
            Ok(rewrite::tail::Tail::Fits(t)) => tail.copy_from_slice(&t),
            Ok(rewrite::tail::Tail::Dropped(t)) => {
                // Rare by construction (a listener name longer than the broker's, on a
                // leader change): the client refreshes its metadata instead.
                tracing::debug!(cluster = %self.view.cluster, "node endpoints left out of a streamed Fetch answer: the proxy's addresses are longer than the broker's");
                tail.copy_from_slice(&t);
            }
            Err(e) => return Err(format!("{e:#}")),
        }
        Ok(())
    }
}

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;

/// The answer to a client's SASL request while the proxy holds the credentials.
fn sasl_refusal(api_key: i16, version: i16, corr: i32) -> anyhow::Result<Bytes> {
    let msg = "kafka-sidecar authenticates to the upstream cluster itself: configure the client with security.protocol=PLAINTEXT and no SASL settings";
    if api_key == ApiKey::SaslHandshake as i16 {
        // An empty mechanism list: the client reports that its mechanism is not enabled.
        let m = SaslHandshakeResponse::default().with_error_code(UNSUPPORTED_SASL_MECHANISM);
        let hv = ApiKey::SaslHandshake.response_header_version(version);
        codec::response_frame(corr, hv, version, &m)
    } else {
        let m = SaslAuthenticateResponse::default()
            .with_error_code(ILLEGAL_SASL_STATE)
            .with_error_message(Some(StrBytes::from_static_str(msg)));
        let hv = ApiKey::SaslAuthenticate.response_header_version(version);
        codec::response_frame(corr, hv, version, &m)
    }
}

#[cfg(test)]
mod stream_tests;
