//! Consumer group members a session joined, handed back to the old cluster at a switch.
//!
//! When the proxy closes a session for a switch, the client's group membership on
//! the old cluster is dead (the client's next connection goes to the new cluster),
//! but the old cluster does not know that until the member's session timeout runs
//! out (45 s by default). Until then its group cannot complete a rebalance, which
//! stalls a failback that comes sooner (the returning client waits for its own
//! ghost) and any other members still on that cluster. The client cannot leave by
//! itself: the proxy already closed its way there. So the session remembers the
//! classic-protocol memberships it carried (JoinGroup request and answer) and,
//! after draining, sends a LeaveGroup for them on the same upstream connection,
//! which was the group coordinator's.
//!
//! KIP-848 groups (`group.protocol=consumer`) are handled the same way: membership is
//! learned from ConsumerGroupHeartbeat, and the leave is a heartbeat with member epoch
//! -1 (-2 for a static member), as the client itself sends on close. What a KIP-848
//! member does on the new cluster until it rejoins there is [`rejoin`]'s business.

mod rejoin;
mod topics_wait;

pub use rejoin::Rejoins;
pub use topics_wait::JoinWaits;
pub(crate) use topics_wait::{
    subscribed_topics, while_none_exists, Waited, BOUND as TOPICS_WAIT_BOUND,
};

use bytes::Bytes;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;

use crate::codec;
use crate::connection::{Broker, KafkaExchange};
use crate::feature::SessionContext;

/// The group a JoinGroup or ConsumerGroupHeartbeat request named, carried to its
/// response.
#[derive(Debug, Clone)]
pub struct Joining {
    group_id: StrBytes,
    group_instance_id: Option<StrBytes>,
    /// The member id the request carried (KIP-848 v1 clients choose their own).
    member_id: StrBytes,
    /// The request header's client id (KIP-848: tells which fetches are the member's).
    client_id: Option<Bytes>,
}

/// Which group protocol the membership belongs to, i.e. how to leave it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Protocol {
    /// JoinGroup/SyncGroup/Heartbeat; left with LeaveGroup.
    Classic,
    /// KIP-848 ConsumerGroupHeartbeat; left with a heartbeat at epoch -1/-2.
    Consumer,
}

#[derive(Debug, Clone, PartialEq)]
struct Member {
    group_id: StrBytes,
    member_id: StrBytes,
    group_instance_id: Option<StrBytes>,
    protocol: Protocol,
}

/// The memberships of one session.
#[derive(Default)]
pub(crate) struct Memberships {
    members: Mutex<Vec<Member>>,
}

impl Memberships {
    /// A JoinGroup request: what its response will need to record the membership.
    pub(crate) fn joining(req: &JoinGroupRequest) -> Joining {
        Joining {
            group_id: req.group_id.0.clone(),
            group_instance_id: req.group_instance_id.clone(),
            member_id: req.member_id.clone(),
            client_id: None,
        }
    }

    /// A ConsumerGroupHeartbeat request. A leaving heartbeat (negative epoch) forgets
    /// the group at once; any other carries what its response needs.
    pub(crate) fn heartbeat_request(&self, frame: &Bytes, version: i16) -> Option<Joining> {
        let req: ConsumerGroupHeartbeatRequest =
            codec::decode_request(ApiKey::ConsumerGroupHeartbeat, version, frame)?;
        if req.member_epoch < 0 {
            self.members.lock().retain(|m| m.group_id != req.group_id.0);
            return None;
        }
        Some(Joining {
            group_id: req.group_id.0,
            group_instance_id: req.instance_id,
            member_id: req.member_id,
            client_id: rejoin::client_id(frame).map(Bytes::copy_from_slice),
        })
    }

    /// A ConsumerGroupHeartbeat response: the member id (given by the coordinator on
    /// the first heartbeat in v0), or the end of the membership. Returns the member id
    /// the answer confirmed, if any.
    pub(crate) fn heartbeat_response(
        &self,
        joining: &Joining,
        frame: &Bytes,
        version: i16,
    ) -> Option<StrBytes> {
        let resp = codec::decode_response::<ConsumerGroupHeartbeatResponse>(
            ApiKey::ConsumerGroupHeartbeat,
            version,
            frame,
        )
        .ok()?;
        let mut members = self.members.lock();
        match resp.error_code {
            0 => {
                let member_id = resp.member_id.unwrap_or_else(|| joining.member_id.clone());
                if member_id.is_empty() {
                    return None;
                }
                members.retain(|m| m.group_id != joining.group_id);
                members.push(Member {
                    group_id: joining.group_id.clone(),
                    member_id: member_id.clone(),
                    group_instance_id: joining.group_instance_id.clone(),
                    protocol: Protocol::Consumer,
                });
                Some(member_id)
            }
            // UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH: the coordinator dropped the member.
            25 | 110 => {
                members.retain(|m| m.group_id != joining.group_id);
                None
            }
            // Anything else (coordinator moving, throttling) leaves the membership as is.
            _ => None,
        }
    }

    /// A JoinGroup response: the member id the coordinator gave the client. Returns it
    /// when the client is a member now (not only told its id).
    pub(crate) fn join_response(
        &self,
        joining: Joining,
        frame: &Bytes,
        version: i16,
    ) -> Option<StrBytes> {
        let Ok(resp) =
            codec::decode_response::<JoinGroupResponse>(ApiKey::JoinGroup, version, frame)
        else {
            return None;
        };
        let mut members = self.members.lock();
        members.retain(|m| m.group_id != joining.group_id);
        // MEMBER_ID_REQUIRED (79) hands out a member id before the real join; any other
        // error leaves the client without a membership.
        if (resp.error_code == 0 || resp.error_code == 79) && !resp.member_id.is_empty() {
            members.push(Member {
                group_id: joining.group_id,
                member_id: resp.member_id.clone(),
                group_instance_id: joining.group_instance_id,
                protocol: Protocol::Classic,
            });
        }
        (resp.error_code == 0 && !resp.member_id.is_empty()).then_some(resp.member_id)
    }

    /// The client left by itself.
    pub(crate) fn leave_request(&self, frame: &Bytes, version: i16) {
        if let Some(req) =
            codec::decode_request::<LeaveGroupRequest>(ApiKey::LeaveGroup, version, frame)
        {
            self.members.lock().retain(|m| m.group_id != req.group_id.0);
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.members.lock().is_empty()
    }

    /// At a switch to another cluster: leaves every group this session joined, on its
    /// own upstream connection (the coordinator's). Best effort: the outcome is logged
    /// and counted, never fatal.
    pub(crate) async fn leave_all<E: KafkaExchange>(
        &self,
        cx: &SessionContext,
        broker: &mut Broker<E>,
    ) {
        let members = std::mem::take(&mut *self.members.lock());
        for m in members {
            let result = leave_member(broker, &m).await;
            let label = match &result {
                Ok(()) => "ok",
                Err(_) => "error",
            };
            metrics::counter!(crate::admin::names::GROUP_LEAVES_TOTAL, "cluster" => cx.cluster_label.clone(), "result" => label).increment(1);
            match result {
                Ok(()) => {
                    tracing::info!(cluster = %cx.cluster, group = %m.group_id, member = %m.member_id, "left the consumer group on the old cluster for the client")
                }
                Err(e) => {
                    tracing::info!(cluster = %cx.cluster, group = %m.group_id, member = %m.member_id, "could not leave the consumer group on the old cluster (the member expires by session timeout): {e:#}")
                }
            }
        }
    }
}

/// Ends one membership the way its protocol does.
async fn leave_member<E: KafkaExchange>(broker: &mut Broker<E>, m: &Member) -> anyhow::Result<()> {
    let api = match m.protocol {
        Protocol::Classic => ApiKey::LeaveGroup,
        Protocol::Consumer => ApiKey::ConsumerGroupHeartbeat,
    };
    let (lowest, newest) = broker
        .offered()
        .await?
        .range(api)
        .ok_or_else(|| anyhow::anyhow!("the old cluster offered no {api:?} version"))?;
    let ours = api.valid_versions();
    let (lowest, newest) = (lowest.max(ours.min), newest.min(ours.max));
    anyhow::ensure!(
        lowest <= newest,
        "no {api:?} version in common with the old cluster"
    );
    match m.protocol {
        // The oldest version that can name the member is the one every broker (and
        // librdkafka's mock) implements best; a static member needs v3+.
        Protocol::Classic if m.group_instance_id.is_some() => {
            leave(broker, m, lowest.max(3).min(newest)).await
        }
        Protocol::Classic => leave(broker, m, lowest).await,
        Protocol::Consumer => leave_heartbeat(broker, m, newest).await,
    }
}

async fn leave<E: KafkaExchange>(
    broker: &mut Broker<E>,
    m: &Member,
    version: i16,
) -> anyhow::Result<()> {
    let mut req = LeaveGroupRequest::default().with_group_id(m.group_id.clone().into());
    if version >= 3 {
        req.members = vec![MemberIdentity::default()
            .with_member_id(m.member_id.clone())
            .with_group_instance_id(m.group_instance_id.clone())
            .with_reason(Some(StrBytes::from_static_str(
                "kafka-sidecar: the active cluster was switched",
            )))];
    } else if m.group_instance_id.is_some() {
        anyhow::bail!("a static member cannot leave with LeaveGroup v{version}");
    } else {
        req.member_id = m.member_id.clone();
    }
    let resp: LeaveGroupResponse = broker.call(ApiKey::LeaveGroup, version, &req).await?;
    let code = resp
        .members
        .iter()
        .map(|r| r.error_code)
        .find(|&c| c != 0)
        .unwrap_or(resp.error_code);
    anyhow::ensure!(code == 0, "LeaveGroup answered with error code {code}");
    Ok(())
}

/// KIP-848: a heartbeat at epoch -1 (dynamic member) or -2 (static member) leaves.
async fn leave_heartbeat<E: KafkaExchange>(
    broker: &mut Broker<E>,
    m: &Member,
    version: i16,
) -> anyhow::Result<()> {
    let req = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(m.group_id.clone().into())
        .with_member_id(m.member_id.clone())
        .with_member_epoch(if m.group_instance_id.is_some() {
            -2
        } else {
            -1
        })
        .with_instance_id(m.group_instance_id.clone());
    let resp: ConsumerGroupHeartbeatResponse = broker
        .call(ApiKey::ConsumerGroupHeartbeat, version, &req)
        .await?;
    anyhow::ensure!(
        resp.error_code == 0,
        "ConsumerGroupHeartbeat (leave) answered with error code {}",
        resp.error_code
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::protocol::Encodable;

    fn request_frame<T: Encodable>(api: ApiKey, version: i16, body: &T) -> Bytes {
        request_frame_from("c", api, version, body)
    }

    /// A request frame of client `client` (correlation id 5).
    pub(super) fn request_frame_from<T: Encodable>(
        client: &'static str,
        api: ApiKey,
        version: i16,
        body: &T,
    ) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(5)
            .with_client_id(Some(StrBytes::from_static_str(client)))
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        codec::frame_with_length(buf)
    }

    pub(super) fn response_frame<T: Encodable>(api: ApiKey, version: i16, body: &T) -> Bytes {
        let mut buf = BytesMut::new();
        kafka_protocol::messages::ResponseHeader::default()
            .with_correlation_id(5)
            .encode(&mut buf, api.response_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        codec::frame_with_length(buf)
    }

    fn join(version: i16, group: &'static str, instance: Option<&'static str>) -> Joining {
        let req = JoinGroupRequest::default()
            .with_group_id(StrBytes::from_static_str(group).into())
            .with_member_id(StrBytes::from_static_str(""))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_group_instance_id(instance.map(StrBytes::from_static_str));
        // Through the frame and the decoding the intercept uses, at this version.
        let frame = request_frame(ApiKey::JoinGroup, version, &req);
        Memberships::joining(
            &codec::decode_request(ApiKey::JoinGroup, version, &frame).expect("decodes"),
        )
    }

    fn answer(error: i16, member: &'static str, version: i16) -> Bytes {
        let resp = JoinGroupResponse::default()
            .with_error_code(error)
            .with_member_id(StrBytes::from_static_str(member));
        response_frame(ApiKey::JoinGroup, version, &resp)
    }

    #[test]
    fn records_the_member_id_of_each_joined_group_across_header_versions() {
        for version in [0, 5, 6, 9] {
            let m = Memberships::default();
            let instance = (version >= 5).then_some("pod-1");
            m.join_response(
                join(version, "g", instance),
                &answer(0, "m-1", version),
                version,
            );
            m.join_response(
                join(version, "h", None),
                &answer(0, "m-2", version),
                version,
            );
            let members = m.members.lock().clone();
            assert_eq!(members.len(), 2, "v{version}");
            assert_eq!(members[0].member_id.as_str(), "m-1");
            assert_eq!(
                members[0].group_instance_id.as_deref(),
                instance,
                "v{version}"
            );
        }
    }

    #[test]
    fn a_rejoin_replaces_the_member_and_an_error_forgets_it() {
        let m = Memberships::default();
        m.join_response(join(9, "g", None), &answer(79, "m-1", 9), 9);
        m.join_response(join(9, "g", None), &answer(0, "m-2", 9), 9);
        assert_eq!(m.members.lock().len(), 1);
        assert_eq!(m.members.lock()[0].member_id.as_str(), "m-2");
        // UNKNOWN_MEMBER_ID (25): the coordinator no longer knows the client.
        m.join_response(join(9, "g", None), &answer(25, "", 9), 9);
        assert!(m.is_empty());
    }

    #[test]
    fn the_clients_own_leave_forgets_the_group() {
        let m = Memberships::default();
        m.join_response(join(7, "g", None), &answer(0, "m-1", 7), 7);
        m.join_response(join(7, "h", None), &answer(0, "m-2", 7), 7);
        let leave = LeaveGroupRequest::default()
            .with_group_id(StrBytes::from_static_str("g").into())
            .with_members(vec![
                MemberIdentity::default().with_member_id(StrBytes::from_static_str("m-1"))
            ]);
        m.leave_request(&request_frame(ApiKey::LeaveGroup, 4, &leave), 4);
        let members = m.members.lock().clone();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].group_id.as_str(), "h");
    }

    fn heartbeat(
        m: &Memberships,
        version: i16,
        epoch: i32,
        member: &'static str,
    ) -> Option<Joining> {
        let req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(StrBytes::from_static_str("kip848").into())
            .with_member_id(StrBytes::from_static_str(member))
            .with_member_epoch(epoch);
        m.heartbeat_request(
            &request_frame(ApiKey::ConsumerGroupHeartbeat, version, &req),
            version,
        )
    }

    fn heartbeat_answer(error: i16, member: Option<&'static str>, version: i16) -> Bytes {
        let resp = ConsumerGroupHeartbeatResponse::default()
            .with_error_code(error)
            .with_member_id(member.map(StrBytes::from_static_str))
            .with_member_epoch(3);
        response_frame(ApiKey::ConsumerGroupHeartbeat, version, &resp)
    }

    #[test]
    fn kip848_heartbeats_track_the_member_until_it_leaves_or_is_fenced() {
        for v in 0..=1 {
            let m = Memberships::default();
            // v0: the coordinator hands out the member id on the first heartbeat.
            let j = heartbeat(&m, v, 0, "").expect("joining");
            m.heartbeat_response(&j, &heartbeat_answer(0, Some("m-9"), v), v);
            {
                let members = m.members.lock();
                assert_eq!(members.len(), 1, "v{v}");
                assert_eq!(members[0].member_id.as_str(), "m-9");
                assert_eq!(members[0].protocol, Protocol::Consumer);
            }
            // A transient error keeps it; FENCED_MEMBER_EPOCH ends it.
            let j = heartbeat(&m, v, 3, "m-9").expect("member");
            m.heartbeat_response(&j, &heartbeat_answer(14, None, v), v);
            assert!(!m.is_empty(), "v{v}");
            let j = heartbeat(&m, v, 3, "m-9").expect("member");
            m.heartbeat_response(&j, &heartbeat_answer(110, None, v), v);
            assert!(m.is_empty(), "v{v}");
            // The client's own leave (epoch -1) forgets it without waiting for the answer.
            let j = heartbeat(&m, v, 0, "m-10").expect("joining");
            m.heartbeat_response(&j, &heartbeat_answer(0, Some("m-10"), v), v);
            assert!(heartbeat(&m, v, -1, "m-10").is_none());
            assert!(m.is_empty(), "v{v}");
        }
    }
}
