//! The wire layout of every message the proxy decodes, as data for [`super::bounds`].
//!
//! One module per message; each field names its wire type and the versions it is in
//! (`since`/`until`/`range`), and tagged fields their tag. Strings, bytes and arrays
//! switch to their compact encodings from the message's first flexible version, as
//! in every Kafka message. Written from the protocol guide and checked against
//! kafka-protocol 0.18 (messages of Kafka 4.1) by the property tests in `bounds`:
//! when a decoder of a newer release gains a field, those tests fail until the
//! layout here follows.

use kafka_protocol::messages;

use super::bounds::{
    arr, arr_of, f, opt, st, Bounded, Field, Message, BOOL, BYTES, I16, I32, I64, I8, NEVER, STR,
    U16, UUID,
};

/// Which layout each message type the proxy decodes is checked against.
macro_rules! bounded {
    ($($t:ident => $m:ident),* $(,)?) => {
        $(impl Bounded for messages::$t {
            const LAYOUT: &'static Message = &$m::MESSAGE;
        })*
    };
}

bounded! {
    ProduceRequest => produce_request,
    InitProducerIdRequest => init_producer_id_request,
    JoinGroupRequest => join_group_request,
    LeaveGroupRequest => leave_group_request,
    ConsumerGroupHeartbeatRequest => consumer_group_heartbeat_request,
    ApiVersionsRequest => api_versions_request,
    OffsetCommitResponse => offset_commit_response,
    MetadataResponse => metadata_response,
    FindCoordinatorResponse => find_coordinator_response,
    DescribeClusterResponse => describe_cluster_response,
    ApiVersionsResponse => api_versions_response,
    SaslHandshakeResponse => sasl_handshake_response,
    SaslAuthenticateResponse => sasl_authenticate_response,
    InitProducerIdResponse => init_producer_id_response,
    JoinGroupResponse => join_group_response,
    LeaveGroupResponse => leave_group_response,
    ConsumerGroupHeartbeatResponse => consumer_group_heartbeat_response,
    ProduceResponse => produce_response,
    FetchResponse => fetch_response,
    ShareFetchResponse => share_fetch_response,
    ShareAcknowledgeResponse => share_acknowledge_response,
    DescribeQuorumResponse => describe_quorum_response,
    CreateTopicsResponse => create_topics_response,
    ListOffsetsResponse => list_offsets_response,
    MetadataRequest => metadata_request,
    FetchRequest => fetch_request,
    ListOffsetsRequest => list_offsets_request,
    OffsetForLeaderEpochRequest => offset_for_leader_epoch_request,
    OffsetForLeaderEpochResponse => offset_for_leader_epoch_response,
    OffsetCommitRequest => offset_commit_request,
    OffsetFetchResponse => offset_fetch_response,
    OffsetFetchRequest => offset_fetch_request,
    TxnOffsetCommitRequest => txn_offset_commit_request,
    TxnOffsetCommitResponse => txn_offset_commit_response,
    EndTxnRequest => end_txn_request,
    EndTxnResponse => end_txn_response,
    DescribeTopicPartitionsRequest => describe_topic_partitions_request,
    DescribeTopicPartitionsResponse => describe_topic_partitions_response,
    ConsumerGroupDescribeResponse => consumer_group_describe_response,
    DeleteTopicsRequest => delete_topics_request,
    DeleteTopicsResponse => delete_topics_response,
}

pub(super) mod produce_request {
    use super::*;

    const PARTITION_PRODUCE_DATA: &[Field] = &[f("index", I32), f("records", BYTES)];
    pub const MESSAGE: Message = Message::new("ProduceRequest", 3, 13, 9, FIELDS);
    const FIELDS: &[Field] = &[
        f("transactional_id", STR),
        f("acks", I16),
        f("timeout_ms", I32),
        f("topic_data", arr(TOPIC_PRODUCE_DATA)),
    ];
    const TOPIC_PRODUCE_DATA: &[Field] = &[
        f("name", STR).until(12),
        f("topic_id", UUID).since(13),
        f("partition_data", arr(PARTITION_PRODUCE_DATA)),
    ];
}

pub(super) mod init_producer_id_request {
    use super::*;

    pub const MESSAGE: Message = Message::new("InitProducerIdRequest", 0, 5, 2, FIELDS);
    const FIELDS: &[Field] = &[
        f("transactional_id", STR),
        f("transaction_timeout_ms", I32),
        f("producer_id", I64).since(3),
        f("producer_epoch", I16).since(3),
    ];
}

pub(super) mod join_group_request {
    use super::*;

    pub const MESSAGE: Message = Message::new("JoinGroupRequest", 0, 9, 6, FIELDS);
    const FIELDS: &[Field] = &[
        f("group_id", STR),
        f("session_timeout_ms", I32),
        f("rebalance_timeout_ms", I32).since(1),
        f("member_id", STR),
        f("group_instance_id", STR).since(5),
        f("protocol_type", STR),
        f("protocols", arr(JOIN_GROUP_REQUEST_PROTOCOL)),
        f("reason", STR).since(8),
    ];
    const JOIN_GROUP_REQUEST_PROTOCOL: &[Field] = &[f("name", STR), f("metadata", BYTES)];
}

pub(super) mod leave_group_request {
    use super::*;

    pub const MESSAGE: Message = Message::new("LeaveGroupRequest", 0, 5, 4, FIELDS);
    const FIELDS: &[Field] = &[
        f("group_id", STR),
        f("member_id", STR).until(2),
        f("members", arr(MEMBER_IDENTITY)).since(3),
    ];
    const MEMBER_IDENTITY: &[Field] = &[
        f("member_id", STR).since(3),
        f("group_instance_id", STR).since(3),
        f("reason", STR).since(5),
    ];
}

pub(super) mod consumer_group_heartbeat_request {
    use super::*;

    pub const MESSAGE: Message = Message::new("ConsumerGroupHeartbeatRequest", 0, 1, 0, FIELDS);
    const FIELDS: &[Field] = &[
        f("group_id", STR),
        f("member_id", STR),
        f("member_epoch", I32),
        f("instance_id", STR),
        f("rack_id", STR),
        f("rebalance_timeout_ms", I32),
        f("subscribed_topic_names", arr_of(STR)),
        f("subscribed_topic_regex", STR).since(1),
        f("server_assignor", STR),
        f("topic_partitions", arr(TOPIC_PARTITIONS)),
    ];
    const TOPIC_PARTITIONS: &[Field] = &[f("topic_id", UUID), f("partitions", arr_of(I32))];
}

pub(super) mod offset_commit_response {
    use super::*;

    pub const MESSAGE: Message = Message::new("OffsetCommitResponse", 2, 10, 8, FIELDS);
    const FIELDS: &[Field] = &[f("throttle_time_ms", I32).since(3), f("topics", arr(TOPIC))];
    const TOPIC: &[Field] = &[
        f("name", STR).until(9),
        f("topic_id", UUID).since(10),
        f("partitions", arr(PARTITION)),
    ];
    const PARTITION: &[Field] = &[f("partition_index", I32), f("error_code", I16)];
}

pub(super) mod api_versions_request {
    use super::*;

    pub const MESSAGE: Message = Message::new("ApiVersionsRequest", 0, 4, 3, FIELDS);
    const FIELDS: &[Field] = &[
        f("client_software_name", STR).since(3),
        f("client_software_version", STR).since(3),
    ];
}

pub(super) mod metadata_response {
    use super::*;

    pub const MESSAGE: Message = Message::new("MetadataResponse", 0, 13, 9, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32).since(3),
        f("brokers", arr(METADATA_RESPONSE_BROKER)),
        f("cluster_id", STR).since(2),
        f("controller_id", I32).since(1),
        f("topics", arr(METADATA_RESPONSE_TOPIC)),
        f("cluster_authorized_operations", I32).range(8, 10),
        f("error_code", I16).since(13),
    ];
    const METADATA_RESPONSE_BROKER: &[Field] = &[
        f("node_id", I32),
        f("host", STR),
        f("port", I32),
        f("rack", STR).since(1),
    ];
    const METADATA_RESPONSE_PARTITION: &[Field] = &[
        f("error_code", I16),
        f("partition_index", I32),
        f("leader_id", I32),
        f("leader_epoch", I32).since(7),
        f("replica_nodes", arr_of(I32)),
        f("isr_nodes", arr_of(I32)),
        f("offline_replicas", arr_of(I32)).since(5),
    ];
    const METADATA_RESPONSE_TOPIC: &[Field] = &[
        f("error_code", I16),
        f("name", STR),
        f("topic_id", UUID).since(10),
        f("is_internal", BOOL).since(1),
        f("partitions", arr(METADATA_RESPONSE_PARTITION)),
        f("topic_authorized_operations", I32).since(8),
    ];
}

pub(super) mod find_coordinator_response {
    use super::*;

    const COORDINATOR: &[Field] = &[
        f("key", STR).since(4),
        f("node_id", I32).since(4),
        f("host", STR).since(4),
        f("port", I32).since(4),
        f("error_code", I16).since(4),
        f("error_message", STR).since(4),
    ];
    pub const MESSAGE: Message = Message::new("FindCoordinatorResponse", 0, 6, 3, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32).since(1),
        f("error_code", I16).until(3),
        f("error_message", STR).range(1, 3),
        f("node_id", I32).until(3),
        f("host", STR).until(3),
        f("port", I32).until(3),
        f("coordinators", arr(COORDINATOR)).since(4),
    ];
}

pub(super) mod describe_cluster_response {
    use super::*;

    const DESCRIBE_CLUSTER_BROKER: &[Field] = &[
        f("broker_id", I32),
        f("host", STR),
        f("port", I32),
        f("rack", STR),
        f("is_fenced", BOOL).since(2),
    ];
    pub const MESSAGE: Message = Message::new("DescribeClusterResponse", 0, 2, 0, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32),
        f("error_code", I16),
        f("error_message", STR),
        f("endpoint_type", I8).since(1),
        f("cluster_id", STR),
        f("controller_id", I32),
        f("brokers", arr(DESCRIBE_CLUSTER_BROKER)),
        f("cluster_authorized_operations", I32),
    ];
}

pub(super) mod api_versions_response {
    use super::*;

    const API_VERSION: &[Field] = &[
        f("api_key", I16),
        f("min_version", I16),
        f("max_version", I16),
    ];
    pub const MESSAGE: Message = Message::new("ApiVersionsResponse", 0, 4, 3, FIELDS);
    const FIELDS: &[Field] = &[
        f("error_code", I16),
        f("api_keys", arr(API_VERSION)),
        f("throttle_time_ms", I32).since(1),
        f("supported_features", arr(SUPPORTED_FEATURE_KEY)).tag(0),
        f("finalized_features_epoch", I64).tag(1),
        f("finalized_features", arr(FINALIZED_FEATURE_KEY)).tag(2),
        f("zk_migration_ready", BOOL).tag(3),
    ];
    const FINALIZED_FEATURE_KEY: &[Field] = &[
        f("name", STR).since(3),
        f("max_version_level", I16).since(3),
        f("min_version_level", I16).since(3),
    ];
    const SUPPORTED_FEATURE_KEY: &[Field] = &[
        f("name", STR).since(3),
        f("min_version", I16).since(3),
        f("max_version", I16).since(3),
    ];
}

pub(super) mod sasl_handshake_response {
    use super::*;

    pub const MESSAGE: Message = Message::new("SaslHandshakeResponse", 0, 1, NEVER, FIELDS);
    const FIELDS: &[Field] = &[f("error_code", I16), f("mechanisms", arr_of(STR))];
}

pub(super) mod sasl_authenticate_response {
    use super::*;

    pub const MESSAGE: Message = Message::new("SaslAuthenticateResponse", 0, 2, 2, FIELDS);
    const FIELDS: &[Field] = &[
        f("error_code", I16),
        f("error_message", STR),
        f("auth_bytes", BYTES),
        f("session_lifetime_ms", I64).since(1),
    ];
}

pub(super) mod init_producer_id_response {
    use super::*;

    pub const MESSAGE: Message = Message::new("InitProducerIdResponse", 0, 6, 2, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32),
        f("error_code", I16),
        f("producer_id", I64),
        f("producer_epoch", I16),
        f("ongoing_txn_producer_id", I64).since(6),
        f("ongoing_txn_producer_epoch", I16).since(6),
    ];
}

pub(super) mod join_group_response {
    use super::*;

    pub const MESSAGE: Message = Message::new("JoinGroupResponse", 0, 9, 6, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32).since(2),
        f("error_code", I16),
        f("generation_id", I32),
        f("protocol_type", STR).since(7),
        f("protocol_name", STR),
        f("leader", STR),
        f("skip_assignment", BOOL).since(9),
        f("member_id", STR),
        f("members", arr(JOIN_GROUP_RESPONSE_MEMBER)),
    ];
    const JOIN_GROUP_RESPONSE_MEMBER: &[Field] = &[
        f("member_id", STR),
        f("group_instance_id", STR).since(5),
        f("metadata", BYTES),
    ];
}

pub(super) mod leave_group_response {
    use super::*;

    pub const MESSAGE: Message = Message::new("LeaveGroupResponse", 0, 5, 4, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32).since(1),
        f("error_code", I16),
        f("members", arr(MEMBER_RESPONSE)).since(3),
    ];
    const MEMBER_RESPONSE: &[Field] = &[
        f("member_id", STR).since(3),
        f("group_instance_id", STR).since(3),
        f("error_code", I16).since(3),
    ];
}

pub(super) mod consumer_group_heartbeat_response {
    use super::*;

    const ASSIGNMENT: &[Field] = &[f("topic_partitions", arr(TOPIC_PARTITIONS))];
    pub const MESSAGE: Message = Message::new("ConsumerGroupHeartbeatResponse", 0, 1, 0, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32),
        f("error_code", I16),
        f("error_message", STR),
        f("member_id", STR),
        f("member_epoch", I32),
        f("heartbeat_interval_ms", I32),
        f("assignment", opt(ASSIGNMENT)),
    ];
    const TOPIC_PARTITIONS: &[Field] = &[f("topic_id", UUID), f("partitions", arr_of(I32))];
}

pub(super) mod produce_response {
    use super::*;

    const BATCH_INDEX_AND_ERROR_MESSAGE: &[Field] = &[
        f("batch_index", I32).since(8),
        f("batch_index_error_message", STR).since(8),
    ];
    const LEADER_ID_AND_EPOCH: &[Field] = &[
        f("leader_id", I32).since(10),
        f("leader_epoch", I32).since(10),
    ];
    const NODE_ENDPOINT: &[Field] = &[
        f("node_id", I32).since(10),
        f("host", STR).since(10),
        f("port", I32).since(10),
        f("rack", STR).since(10),
    ];
    const PARTITION_PRODUCE_RESPONSE: &[Field] = &[
        f("index", I32),
        f("error_code", I16),
        f("base_offset", I64),
        f("log_append_time_ms", I64),
        f("log_start_offset", I64).since(5),
        f("record_errors", arr(BATCH_INDEX_AND_ERROR_MESSAGE)).since(8),
        f("error_message", STR).since(8),
        f("current_leader", st(LEADER_ID_AND_EPOCH))
            .since(10)
            .tag(0),
    ];
    pub const MESSAGE: Message = Message::new("ProduceResponse", 3, 13, 9, FIELDS);
    const FIELDS: &[Field] = &[
        f("responses", arr(TOPIC_PRODUCE_RESPONSE)),
        f("throttle_time_ms", I32),
        f("node_endpoints", arr(NODE_ENDPOINT)).since(10).tag(0),
    ];
    const TOPIC_PRODUCE_RESPONSE: &[Field] = &[
        f("name", STR).until(12),
        f("topic_id", UUID).since(13),
        f("partition_responses", arr(PARTITION_PRODUCE_RESPONSE)),
    ];
}

pub(super) mod fetch_response {
    use super::*;

    const ABORTED_TRANSACTION: &[Field] = &[f("producer_id", I64), f("first_offset", I64)];
    const EPOCH_END_OFFSET: &[Field] = &[f("epoch", I32).since(12), f("end_offset", I64).since(12)];
    pub const MESSAGE: Message = Message::new("FetchResponse", 4, 18, 12, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32),
        f("error_code", I16).since(7),
        f("session_id", I32).since(7),
        f("responses", arr(FETCHABLE_TOPIC_RESPONSE)),
        f("node_endpoints", arr(NODE_ENDPOINT)).since(16).tag(0),
    ];
    const FETCHABLE_TOPIC_RESPONSE: &[Field] = &[
        f("topic", STR).until(12),
        f("topic_id", UUID).since(13),
        f("partitions", arr(PARTITION_DATA)),
    ];
    const LEADER_ID_AND_EPOCH: &[Field] = &[
        f("leader_id", I32).since(12),
        f("leader_epoch", I32).since(12),
    ];
    const NODE_ENDPOINT: &[Field] = &[
        f("node_id", I32).since(16),
        f("host", STR).since(16),
        f("port", I32).since(16),
        f("rack", STR).since(16),
    ];
    const PARTITION_DATA: &[Field] = &[
        f("partition_index", I32),
        f("error_code", I16),
        f("high_watermark", I64),
        f("last_stable_offset", I64),
        f("log_start_offset", I64).since(5),
        f("aborted_transactions", arr(ABORTED_TRANSACTION)),
        f("preferred_read_replica", I32).since(11),
        f("records", BYTES),
        f("diverging_epoch", st(EPOCH_END_OFFSET)).tag(0),
        f("current_leader", st(LEADER_ID_AND_EPOCH)).tag(1),
        f("snapshot_id", st(SNAPSHOT_ID)).tag(2),
    ];
    const SNAPSHOT_ID: &[Field] = &[f("end_offset", I64), f("epoch", I32)];
}

pub(super) mod share_fetch_response {
    use super::*;

    const ACQUIRED_RECORDS: &[Field] = &[
        f("first_offset", I64),
        f("last_offset", I64),
        f("delivery_count", I16),
    ];
    const LEADER_ID_AND_EPOCH: &[Field] = &[f("leader_id", I32), f("leader_epoch", I32)];
    const NODE_ENDPOINT: &[Field] = &[
        f("node_id", I32),
        f("host", STR),
        f("port", I32),
        f("rack", STR),
    ];
    const PARTITION_DATA: &[Field] = &[
        f("partition_index", I32),
        f("error_code", I16),
        f("error_message", STR),
        f("acknowledge_error_code", I16),
        f("acknowledge_error_message", STR),
        f("current_leader", st(LEADER_ID_AND_EPOCH)),
        f("records", BYTES),
        f("acquired_records", arr(ACQUIRED_RECORDS)),
    ];
    pub const MESSAGE: Message = Message::new("ShareFetchResponse", 1, 1, 0, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32),
        f("error_code", I16),
        f("error_message", STR),
        f("acquisition_lock_timeout_ms", I32),
        f("responses", arr(SHARE_FETCHABLE_TOPIC_RESPONSE)),
        f("node_endpoints", arr(NODE_ENDPOINT)),
    ];
    const SHARE_FETCHABLE_TOPIC_RESPONSE: &[Field] =
        &[f("topic_id", UUID), f("partitions", arr(PARTITION_DATA))];
}

pub(super) mod share_acknowledge_response {
    use super::*;

    const LEADER_ID_AND_EPOCH: &[Field] = &[f("leader_id", I32), f("leader_epoch", I32)];
    const NODE_ENDPOINT: &[Field] = &[
        f("node_id", I32),
        f("host", STR),
        f("port", I32),
        f("rack", STR),
    ];
    const PARTITION_DATA: &[Field] = &[
        f("partition_index", I32),
        f("error_code", I16),
        f("error_message", STR),
        f("current_leader", st(LEADER_ID_AND_EPOCH)),
    ];
    pub const MESSAGE: Message = Message::new("ShareAcknowledgeResponse", 1, 1, 0, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32),
        f("error_code", I16),
        f("error_message", STR),
        f("responses", arr(SHARE_ACKNOWLEDGE_TOPIC_RESPONSE)),
        f("node_endpoints", arr(NODE_ENDPOINT)),
    ];
    const SHARE_ACKNOWLEDGE_TOPIC_RESPONSE: &[Field] =
        &[f("topic_id", UUID), f("partitions", arr(PARTITION_DATA))];
}

pub(super) mod describe_quorum_response {
    use super::*;

    pub const MESSAGE: Message = Message::new("DescribeQuorumResponse", 0, 2, 0, FIELDS);
    const FIELDS: &[Field] = &[
        f("error_code", I16),
        f("error_message", STR).since(2),
        f("topics", arr(TOPIC_DATA)),
        f("nodes", arr(NODE)).since(2),
    ];
    const LISTENER: &[Field] = &[
        f("name", STR).since(2),
        f("host", STR).since(2),
        f("port", U16).since(2),
    ];
    const NODE: &[Field] = &[
        f("node_id", I32).since(2),
        f("listeners", arr(LISTENER)).since(2),
    ];
    const PARTITION_DATA: &[Field] = &[
        f("partition_index", I32),
        f("error_code", I16),
        f("error_message", STR).since(2),
        f("leader_id", I32),
        f("leader_epoch", I32),
        f("high_watermark", I64),
        f("current_voters", arr(REPLICA_STATE)),
        f("observers", arr(REPLICA_STATE)),
    ];
    const REPLICA_STATE: &[Field] = &[
        f("replica_id", I32),
        f("replica_directory_id", UUID).since(2),
        f("log_end_offset", I64),
        f("last_fetch_timestamp", I64).since(1),
        f("last_caught_up_timestamp", I64).since(1),
    ];
    const TOPIC_DATA: &[Field] = &[f("topic_name", STR), f("partitions", arr(PARTITION_DATA))];
}

pub(super) mod create_topics_response {
    use super::*;

    pub const MESSAGE: Message = Message::new("CreateTopicsResponse", 2, 7, 5, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32),
        f("topics", arr(CREATABLE_TOPIC_RESULT)),
    ];
    const CREATABLE_TOPIC_RESULT: &[Field] = &[
        f("name", STR),
        f("topic_id", UUID).since(7),
        f("error_code", I16),
        f("error_message", STR),
        f("num_partitions", I32).since(5),
        f("replication_factor", I16).since(5),
        f("configs", arr(CREATABLE_TOPIC_CONFIGS)).since(5),
        f("topic_config_error_code", I16).since(5).tag(0),
    ];
    const CREATABLE_TOPIC_CONFIGS: &[Field] = &[
        f("name", STR).since(5),
        f("value", STR).since(5),
        f("read_only", BOOL).since(5),
        f("config_source", I8).since(5),
        f("is_sensitive", BOOL).since(5),
    ];
}

pub(super) mod list_offsets_response {
    use super::*;

    pub const MESSAGE: Message = Message::new("ListOffsetsResponse", 1, 10, 6, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32).since(2),
        f("topics", arr(LIST_OFFSETS_TOPIC_RESPONSE)),
    ];
    const LIST_OFFSETS_TOPIC_RESPONSE: &[Field] = &[
        f("name", STR),
        f("partitions", arr(LIST_OFFSETS_PARTITION_RESPONSE)),
    ];
    const LIST_OFFSETS_PARTITION_RESPONSE: &[Field] = &[
        f("partition_index", I32),
        f("error_code", I16),
        f("timestamp", I64),
        f("offset", I64),
        f("leader_epoch", I32).since(4),
    ];
}

pub(super) mod metadata_request {
    use super::*;

    pub const MESSAGE: Message = Message::new("MetadataRequest", 0, 13, 9, FIELDS);
    const FIELDS: &[Field] = &[
        f("topics", arr(METADATA_REQUEST_TOPIC)),
        f("allow_auto_topic_creation", BOOL).since(4),
        f("include_cluster_authorized_operations", BOOL).range(8, 10),
        f("include_topic_authorized_operations", BOOL).since(8),
    ];
    const METADATA_REQUEST_TOPIC: &[Field] = &[f("topic_id", UUID).since(10), f("name", STR)];
}

pub(super) mod fetch_request {
    use super::*;

    const FETCH_PARTITION: &[Field] = &[
        f("partition", I32),
        f("current_leader_epoch", I32).since(9),
        f("fetch_offset", I64),
        f("last_fetched_epoch", I32).since(12),
        f("log_start_offset", I64).since(5),
        f("partition_max_bytes", I32),
        f("replica_directory_id", UUID).since(17).tag(0),
        f("high_watermark", I64).since(18).tag(1),
    ];
    const FETCH_TOPIC: &[Field] = &[
        f("topic", STR).until(12),
        f("topic_id", UUID).since(13),
        f("partitions", arr(FETCH_PARTITION)),
    ];
    const FORGOTTEN_TOPIC: &[Field] = &[
        f("topic", STR).range(7, 12),
        f("topic_id", UUID).since(13),
        f("partitions", arr_of(I32)).since(7),
    ];
    pub const MESSAGE: Message = Message::new("FetchRequest", 4, 18, 12, FIELDS);
    const FIELDS: &[Field] = &[
        f("replica_id", I32).until(14),
        f("max_wait_ms", I32),
        f("min_bytes", I32),
        f("max_bytes", I32),
        f("isolation_level", I8),
        f("session_id", I32).since(7),
        f("session_epoch", I32).since(7),
        f("topics", arr(FETCH_TOPIC)),
        f("forgotten_topics_data", arr(FORGOTTEN_TOPIC)).since(7),
        f("rack_id", STR).since(11),
        f("cluster_id", STR).since(12).tag(0),
        f("replica_state", st(REPLICA_STATE)).since(15).tag(1),
    ];
    const REPLICA_STATE: &[Field] = &[
        f("replica_id", I32).since(15),
        f("replica_epoch", I64).since(15),
    ];
}

pub(super) mod list_offsets_request {
    use super::*;

    pub const MESSAGE: Message = Message::new("ListOffsetsRequest", 1, 10, 6, FIELDS);
    const FIELDS: &[Field] = &[
        f("replica_id", I32),
        f("isolation_level", I8).since(2),
        f("topics", arr(LIST_OFFSETS_TOPIC)),
        f("timeout_ms", I32).since(10),
    ];
    const LIST_OFFSETS_PARTITION: &[Field] = &[
        f("partition_index", I32),
        f("current_leader_epoch", I32).since(4),
        f("timestamp", I64),
    ];
    const LIST_OFFSETS_TOPIC: &[Field] =
        &[f("name", STR), f("partitions", arr(LIST_OFFSETS_PARTITION))];
}

pub(super) mod offset_for_leader_epoch_request {
    use super::*;

    pub const MESSAGE: Message = Message::new("OffsetForLeaderEpochRequest", 2, 4, 4, FIELDS);
    const FIELDS: &[Field] = &[
        f("replica_id", I32).since(3),
        f("topics", arr(OFFSET_FOR_LEADER_TOPIC)),
    ];
    const OFFSET_FOR_LEADER_PARTITION: &[Field] = &[
        f("partition", I32),
        f("current_leader_epoch", I32).since(2),
        f("leader_epoch", I32),
    ];
    const OFFSET_FOR_LEADER_TOPIC: &[Field] = &[
        f("topic", STR),
        f("partitions", arr(OFFSET_FOR_LEADER_PARTITION)),
    ];
}

pub(super) mod offset_for_leader_epoch_response {
    use super::*;

    const EPOCH_END_OFFSET: &[Field] = &[
        f("error_code", I16),
        f("partition", I32),
        f("leader_epoch", I32).since(1),
        f("end_offset", I64),
    ];
    pub const MESSAGE: Message = Message::new("OffsetForLeaderEpochResponse", 2, 4, 4, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32).since(2),
        f("topics", arr(OFFSET_FOR_LEADER_TOPIC_RESULT)),
    ];
    const OFFSET_FOR_LEADER_TOPIC_RESULT: &[Field] =
        &[f("topic", STR), f("partitions", arr(EPOCH_END_OFFSET))];
}

pub(super) mod offset_commit_request {
    use super::*;

    pub const MESSAGE: Message = Message::new("OffsetCommitRequest", 2, 9, 8, FIELDS);
    const FIELDS: &[Field] = &[
        f("group_id", STR),
        f("generation_id_or_member_epoch", I32).since(1),
        f("member_id", STR).since(1),
        f("group_instance_id", STR).since(7),
        f("retention_time_ms", I64).range(2, 4),
        f("topics", arr(OFFSET_COMMIT_REQUEST_TOPIC)),
    ];
    const OFFSET_COMMIT_REQUEST_PARTITION: &[Field] = &[
        f("partition_index", I32),
        f("committed_offset", I64),
        f("committed_leader_epoch", I32).since(6),
        f("committed_metadata", STR),
    ];
    const OFFSET_COMMIT_REQUEST_TOPIC: &[Field] = &[
        f("name", STR),
        f("partitions", arr(OFFSET_COMMIT_REQUEST_PARTITION)),
    ];
}

pub(super) mod offset_fetch_request {
    use super::*;

    pub const MESSAGE: Message = Message::new("OffsetFetchRequest", 1, 9, 6, FIELDS);
    const FIELDS: &[Field] = &[
        f("group_id", STR).until(7),
        f("topics", arr(OFFSET_FETCH_REQUEST_TOPIC)).until(7),
        f("groups", arr(OFFSET_FETCH_REQUEST_GROUP)).since(8),
        f("require_stable", BOOL).since(7),
    ];
    const OFFSET_FETCH_REQUEST_TOPIC: &[Field] =
        &[f("name", STR), f("partition_indexes", arr_of(I32))];
    const OFFSET_FETCH_REQUEST_GROUP: &[Field] = &[
        f("group_id", STR),
        f("member_id", STR).since(9),
        f("member_epoch", I32).since(9),
        f("topics", arr(OFFSET_FETCH_REQUEST_TOPIC)),
    ];
}

pub(super) mod offset_fetch_response {
    use super::*;

    pub const MESSAGE: Message = Message::new("OffsetFetchResponse", 1, 10, 6, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32).since(3),
        f("topics", arr(OFFSET_FETCH_RESPONSE_TOPIC)).until(7),
        f("error_code", I16).range(2, 7),
        f("groups", arr(OFFSET_FETCH_RESPONSE_GROUP)).since(8),
    ];
    const OFFSET_FETCH_RESPONSE_GROUP: &[Field] = &[
        f("group_id", STR).since(8),
        f("topics", arr(OFFSET_FETCH_RESPONSE_TOPICS)).since(8),
        f("error_code", I16).since(8),
    ];
    const OFFSET_FETCH_RESPONSE_PARTITION: &[Field] = &[
        f("partition_index", I32).until(7),
        f("committed_offset", I64).until(7),
        f("committed_leader_epoch", I32).range(5, 7),
        f("metadata", STR).until(7),
        f("error_code", I16).until(7),
    ];
    const OFFSET_FETCH_RESPONSE_PARTITIONS: &[Field] = &[
        f("partition_index", I32).since(8),
        f("committed_offset", I64).since(8),
        f("committed_leader_epoch", I32).since(8),
        f("metadata", STR).since(8),
        f("error_code", I16).since(8),
    ];
    const OFFSET_FETCH_RESPONSE_TOPIC: &[Field] = &[
        f("name", STR).until(7),
        f("partitions", arr(OFFSET_FETCH_RESPONSE_PARTITION)).until(7),
    ];
    const OFFSET_FETCH_RESPONSE_TOPICS: &[Field] = &[
        f("name", STR).range(8, 9),
        f("topic_id", UUID).since(10),
        f("partitions", arr(OFFSET_FETCH_RESPONSE_PARTITIONS)).since(8),
    ];
}

pub(super) mod txn_offset_commit_request {
    use super::*;

    pub const MESSAGE: Message = Message::new("TxnOffsetCommitRequest", 0, 5, 3, FIELDS);
    const FIELDS: &[Field] = &[
        f("transactional_id", STR),
        f("group_id", STR),
        f("producer_id", I64),
        f("producer_epoch", I16),
        f("generation_id", I32).since(3),
        f("member_id", STR).since(3),
        f("group_instance_id", STR).since(3),
        f("topics", arr(TXN_OFFSET_COMMIT_REQUEST_TOPIC)),
    ];
    const TXN_OFFSET_COMMIT_REQUEST_PARTITION: &[Field] = &[
        f("partition_index", I32),
        f("committed_offset", I64),
        f("committed_leader_epoch", I32).since(2),
        f("committed_metadata", STR),
    ];
    const TXN_OFFSET_COMMIT_REQUEST_TOPIC: &[Field] = &[
        f("name", STR),
        f("partitions", arr(TXN_OFFSET_COMMIT_REQUEST_PARTITION)),
    ];
}

pub(super) mod txn_offset_commit_response {
    use super::*;

    pub const MESSAGE: Message = Message::new("TxnOffsetCommitResponse", 0, 5, 3, FIELDS);
    const FIELDS: &[Field] = &[f("throttle_time_ms", I32), f("topics", arr(TOPIC))];
    const TOPIC: &[Field] = &[f("name", STR), f("partitions", arr(PARTITION))];
    const PARTITION: &[Field] = &[f("partition_index", I32), f("error_code", I16)];
}

pub(super) mod end_txn_request {
    use super::*;

    pub const MESSAGE: Message = Message::new("EndTxnRequest", 0, 5, 3, FIELDS);
    const FIELDS: &[Field] = &[
        f("transactional_id", STR),
        f("producer_id", I64),
        f("producer_epoch", I16),
        f("committed", BOOL),
    ];
}

pub(super) mod end_txn_response {
    use super::*;

    pub const MESSAGE: Message = Message::new("EndTxnResponse", 0, 5, 3, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32),
        f("error_code", I16),
        f("producer_id", I64).since(5),
        f("producer_epoch", I16).since(5),
    ];
}

pub(super) mod describe_topic_partitions_request {
    use super::*;

    const CURSOR: &[Field] = &[f("topic_name", STR), f("partition_index", I32)];
    pub const MESSAGE: Message = Message::new("DescribeTopicPartitionsRequest", 0, 0, 0, FIELDS);
    const FIELDS: &[Field] = &[
        f("topics", arr(TOPIC_REQUEST)),
        f("response_partition_limit", I32),
        f("cursor", opt(CURSOR)),
    ];
    const TOPIC_REQUEST: &[Field] = &[f("name", STR)];
}

pub(super) mod describe_topic_partitions_response {
    use super::*;

    const CURSOR: &[Field] = &[f("topic_name", STR), f("partition_index", I32)];
    pub const MESSAGE: Message = Message::new("DescribeTopicPartitionsResponse", 0, 0, 0, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32),
        f("topics", arr(DESCRIBE_TOPIC_PARTITIONS_RESPONSE_TOPIC)),
        f("next_cursor", opt(CURSOR)),
    ];
    const DESCRIBE_TOPIC_PARTITIONS_RESPONSE_PARTITION: &[Field] = &[
        f("error_code", I16),
        f("partition_index", I32),
        f("leader_id", I32),
        f("leader_epoch", I32),
        f("replica_nodes", arr_of(I32)),
        f("isr_nodes", arr_of(I32)),
        f("eligible_leader_replicas", arr_of(I32)),
        f("last_known_elr", arr_of(I32)),
        f("offline_replicas", arr_of(I32)),
    ];
    const DESCRIBE_TOPIC_PARTITIONS_RESPONSE_TOPIC: &[Field] = &[
        f("error_code", I16),
        f("name", STR),
        f("topic_id", UUID),
        f("is_internal", BOOL),
        f(
            "partitions",
            arr(DESCRIBE_TOPIC_PARTITIONS_RESPONSE_PARTITION),
        ),
        f("topic_authorized_operations", I32),
    ];
}

pub(super) mod consumer_group_describe_response {
    use super::*;

    const ASSIGNMENT: &[Field] = &[f("topic_partitions", arr(TOPIC_PARTITIONS))];
    const DESCRIBED_GROUP: &[Field] = &[
        f("error_code", I16),
        f("error_message", STR),
        f("group_id", STR),
        f("group_state", STR),
        f("group_epoch", I32),
        f("assignment_epoch", I32),
        f("assignor_name", STR),
        f("members", arr(MEMBER)),
        f("authorized_operations", I32),
    ];
    const MEMBER: &[Field] = &[
        f("member_id", STR),
        f("instance_id", STR),
        f("rack_id", STR),
        f("member_epoch", I32),
        f("client_id", STR),
        f("client_host", STR),
        f("subscribed_topic_names", arr_of(STR)),
        f("subscribed_topic_regex", STR),
        f("assignment", st(ASSIGNMENT)),
        f("target_assignment", st(ASSIGNMENT)),
        f("member_type", I8).since(1),
    ];
    pub const MESSAGE: Message = Message::new("ConsumerGroupDescribeResponse", 0, 1, 0, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32),
        f("groups", arr(DESCRIBED_GROUP)),
    ];
    const TOPIC_PARTITIONS: &[Field] = &[
        f("topic_id", UUID),
        f("topic_name", STR),
        f("partitions", arr_of(I32)),
    ];
}

pub(super) mod delete_topics_request {
    use super::*;

    const DELETE_TOPIC_STATE: &[Field] = &[f("name", STR).since(6), f("topic_id", UUID).since(6)];
    pub const MESSAGE: Message = Message::new("DeleteTopicsRequest", 1, 6, 4, FIELDS);
    const FIELDS: &[Field] = &[
        f("topics", arr(DELETE_TOPIC_STATE)).since(6),
        f("topic_names", arr_of(STR)).until(5),
        f("timeout_ms", I32),
    ];
}

pub(super) mod delete_topics_response {
    use super::*;

    const DELETABLE_TOPIC_RESULT: &[Field] = &[
        f("name", STR),
        f("topic_id", UUID).since(6),
        f("error_code", I16),
        f("error_message", STR).since(5),
    ];
    pub const MESSAGE: Message = Message::new("DeleteTopicsResponse", 1, 6, 4, FIELDS);
    const FIELDS: &[Field] = &[
        f("throttle_time_ms", I32).since(1),
        f("responses", arr(DELETABLE_TOPIC_RESULT)),
    ];
}
