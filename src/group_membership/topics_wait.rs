//! A classic group joining on the new cluster before its topics exist there.
//!
//! After a failover to a cluster where the client's topic does not exist yet (it is
//! auto-created moments later, by the first producer's metadata request), a classic
//! consumer can rejoin first. Its leader then assigns the subscribed topics as they are
//! at that instant: no partitions. Java notices the topic at its next metadata refresh
//! and rejoins; librdkafka (2.16, range assignor) was seen to stay in its empty
//! assignment for good (45 s and more, one run in seven of the client matrix).
//!
//! So the first JoinGroup of a group after a switch waits, bounded by [`BOUND`], while
//! none of the topics its subscription lists exists on the new cluster. Only "none":
//! a regex subscriber lists what matched on the old cluster (`orders`, `west.orders`),
//! and a mirrored topic that only the old cluster holds never appears on the new one.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bytes::Buf;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolSubscription, JoinGroupRequest, MetadataResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::codec;
use crate::connection::{Broker, KafkaExchange};

/// How long a join waits at most for its topics: about what producers take to
/// auto-create a topic after a switch (their first acknowledgements on the new cluster
/// came 1-5 s after it in the client matrix), and well under the JoinGroup timeouts of
/// the clients (librdkafka: session.timeout.ms + 3 s).
pub(crate) const BOUND: Duration = Duration::from_secs(5);
/// Between two looks at the new cluster's topics.
const POLL: Duration = Duration::from_millis(200);

/// Asks the new cluster which topics exist (without creating any).
pub(crate) trait TopicLookup {
    /// How many of `topics` the cluster has.
    fn existing(&mut self, topics: &[String])
        -> impl Future<Output = anyhow::Result<usize>> + Send;
}

impl<E: KafkaExchange> TopicLookup for Broker<E> {
    async fn existing(&mut self, topics: &[String]) -> anyhow::Result<usize> {
        let v = self.version(ApiKey::Metadata, 12).await?;
        let req = codec::metadata_request_for(topics.iter().map(String::as_str));
        let md: MetadataResponse = self.call(ApiKey::Metadata, v, &req).await?;
        Ok(md
            .topics
            .iter()
            .filter(|t| t.error_code == 0 && !t.partitions.is_empty())
            .count())
    }
}

/// The topics a classic consumer's JoinGroup subscribes to (all its protocols, i.e.
/// assignors, list the same ones); empty for other protocol types (Connect, streams
/// leaders' own) and for subscriptions the proxy cannot read.
pub(crate) fn subscribed_topics(req: &JoinGroupRequest) -> Vec<String> {
    if &*req.protocol_type != "consumer" {
        return Vec::new();
    }
    let mut topics: Vec<String> = Vec::new();
    for p in &req.protocols {
        let mut b = p.metadata.clone();
        if b.remaining() < 2 {
            continue;
        }
        let version = b.get_i16();
        if !(0..=3).contains(&version) {
            continue;
        }
        let Ok(sub) = ConsumerProtocolSubscription::decode(&mut b, version) else {
            continue;
        };
        for t in sub.topics {
            if !topics.iter().any(|k| *k == *t) {
                topics.push(t.to_string());
            }
        }
    }
    topics
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// Some subscribed topic exists (at once: `waited` zero).
    Present { waited: Duration },
    /// None appeared within the bound.
    Absent,
    /// The cluster could not be asked; the join goes on.
    Failed(String),
}

/// Waits while none of `topics` exists, asking every [`POLL`], at most `bound`.
pub(crate) async fn while_none_exists<T: TopicLookup>(
    lookup: &mut T,
    topics: &[String],
    bound: Duration,
) -> Waited {
    let started = Instant::now();
    let deadline = started + bound;
    let mut polled = false;
    loop {
        match lookup.existing(topics).await {
            Ok(n) if n > 0 => {
                // The first lookup's own round trip is not waiting.
                let waited = if polled {
                    started.elapsed()
                } else {
                    Duration::ZERO
                };
                return Waited::Present { waited };
            }
            Ok(_) => {}
            Err(e) => return Waited::Failed(format!("{e:#}")),
        }
        if Instant::now() + POLL > deadline {
            return Waited::Absent;
        }
        tokio::time::sleep(POLL).await;
        polled = true;
    }
}

/// Which groups already had their first join after the latest switch (one per proxy):
/// only that one waits.
#[derive(Default)]
pub struct JoinWaits {
    waited: Mutex<HashMap<StrBytes, u64>>,
}

impl JoinWaits {
    /// True the first time `group` joins in `generation` (> 0: after a switch).
    pub(crate) fn first_join(&self, group: &StrBytes, generation: u64) -> bool {
        if generation == 0 {
            return false;
        }
        let mut w = self.waited.lock();
        // Groups of earlier generations are done with.
        w.retain(|_, g| *g >= generation);
        match w.get(group) {
            Some(_) => false,
            None => {
                w.insert(group.clone(), generation);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::protocol::Encodable;

    /// Topics that appear after a number of lookups; counts the lookups.
    struct Appearing {
        after: usize,
        asked: usize,
        fail: bool,
        /// How long one lookup takes (its round trip).
        takes: Duration,
    }

    impl TopicLookup for Appearing {
        async fn existing(&mut self, topics: &[String]) -> anyhow::Result<usize> {
            self.asked += 1;
            tokio::time::sleep(self.takes).await;
            anyhow::ensure!(!self.fail, "connection refused");
            Ok(if self.asked > self.after {
                topics.len()
            } else {
                0
            })
        }
    }

    fn topics() -> Vec<String> {
        vec!["orders".to_string()]
    }

    #[tokio::test(start_paused = true)]
    async fn waits_until_a_topic_appears() {
        let mut l = Appearing {
            after: 4,
            asked: 0,
            fail: false,
            takes: Duration::ZERO,
        };
        let t0 = Instant::now();
        let w = while_none_exists(&mut l, &topics(), BOUND).await;
        assert_eq!(w, Waited::Present { waited: 4 * POLL });
        assert_eq!(l.asked, 5);
        assert_eq!(t0.elapsed(), 4 * POLL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_topic_that_exists_costs_one_lookup_and_no_wait() {
        // The lookup's own round trip is not waiting.
        let mut l = Appearing {
            after: 0,
            asked: 0,
            fail: false,
            takes: Duration::from_millis(15),
        };
        let t0 = Instant::now();
        let w = while_none_exists(&mut l, &topics(), BOUND).await;
        assert_eq!(
            w,
            Waited::Present {
                waited: Duration::ZERO
            }
        );
        assert_eq!((l.asked, t0.elapsed()), (1, Duration::from_millis(15)));
    }

    #[tokio::test(start_paused = true)]
    async fn never_longer_than_the_bound() {
        let mut l = Appearing {
            after: usize::MAX,
            asked: 0,
            fail: false,
            takes: Duration::ZERO,
        };
        let t0 = Instant::now();
        assert_eq!(
            while_none_exists(&mut l, &topics(), BOUND).await,
            Waited::Absent
        );
        assert!(t0.elapsed() <= BOUND, "{:?}", t0.elapsed());
        assert!(l.asked >= 20, "asked {} times", l.asked);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_cluster_does_not_hold_the_join() {
        let mut l = Appearing {
            after: 0,
            asked: 0,
            fail: true,
            takes: Duration::ZERO,
        };
        let t0 = Instant::now();
        let w = while_none_exists(&mut l, &topics(), BOUND).await;
        assert!(
            matches!(w, Waited::Failed(ref e) if e.contains("refused")),
            "{w:?}"
        );
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    fn join(
        protocol_type: &'static str,
        subscriptions: &[(i16, &[&'static str])],
    ) -> JoinGroupRequest {
        let protocols = subscriptions
            .iter()
            .map(|(version, topics)| {
                let sub = ConsumerProtocolSubscription::default().with_topics(
                    topics
                        .iter()
                        .map(|t| StrBytes::from_static_str(t))
                        .collect(),
                );
                let mut b = BytesMut::new();
                b.put_i16(*version);
                sub.encode(&mut b, *version).unwrap();
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(b.freeze())
            })
            .collect();
        JoinGroupRequest::default()
            .with_protocol_type(StrBytes::from_static_str(protocol_type))
            .with_protocols(protocols)
    }

    #[test]
    fn subscriptions_are_read_from_every_assignor_once() {
        let req = join(
            "consumer",
            &[(1, &["orders", "west.orders"]), (3, &["orders"])],
        );
        assert_eq!(subscribed_topics(&req), ["orders", "west.orders"]);
        // Not a consumer group, or a subscription version the proxy cannot read.
        assert!(subscribed_topics(&join("connect", &[(1, &["orders"])])).is_empty());
        let mut odd = join("consumer", &[(1, &["orders"])]);
        odd.protocols[0].metadata = bytes::Bytes::from_static(&[0, 9, 1]);
        assert!(subscribed_topics(&odd).is_empty());
    }

    #[test]
    fn only_the_first_join_of_a_group_after_a_switch_waits() {
        let w = JoinWaits::default();
        let (a, b) = (
            StrBytes::from_static_str("a"),
            StrBytes::from_static_str("b"),
        );
        assert!(!w.first_join(&a, 0), "never before any switch");
        assert!(w.first_join(&a, 1));
        assert!(!w.first_join(&a, 1));
        assert!(w.first_join(&b, 1));
        assert!(w.first_join(&a, 2), "again after the next switch");
        assert!(!w.first_join(&a, 2));
    }
}
