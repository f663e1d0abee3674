//! kafka-sidecar: a Kafka-protocol-aware sidecar proxy.
//!
//! Where things live:
//! - [`config`]: the YAML file, validation, secrets.
//! - [`config_watch`]: hot reload of the (ConfigMap-mounted) config file.
//! - [`codec`]: Kafka frame reading/writing, request header peeking, and bounded decoding
//!   of outside bytes ([`codec::bounds`]).
//! - [`rewrite`]: response rewriting of broker addresses and ApiVersions capping.
//! - [`listeners`]: local bootstrap and per-node-id broker listeners.
//! - [`upstream`]: opening upstream connections (TCP, [`tls`], [`sasl`]).
//! - [`cluster`]: an upstream cluster at run time (learned brokers, reachability).
//! - [`session`]: one client connection relayed to one upstream connection.
//! - [`splice`]: record batches moved socket to socket inside the kernel.
//! - [`intercept`]: the requests the proxy looks into (one list) and the hooks on their answers.
//! - [`switch`]: the active cluster, failover/failback and session draining.
//! - [`producer_identity`]: idempotent producers that survive a switch.
//! - [`group_membership`]: consumer group members left on the old cluster at a switch.
//! - [`proxy`]: start-up, config application, status and shutdown.
//! - [`admin`]: HTTP metrics, health and status.
//! - [`control`]: fleet failover decisions through control topics; arbiters; fleet reports.

pub mod admin;
pub mod api_versions;
pub mod apis;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod config_watch;
pub mod connection;
pub mod consumer_positions;
pub mod control;
#[cfg(feature = "demo")]
pub mod demo;
pub mod feature;
pub mod group_membership;
pub mod intercept;
pub mod listeners;
pub mod producer_identity;
pub mod proxy;
pub mod rewrite;
pub mod sasl;
pub mod session;
pub mod splice;
pub mod switch;
pub mod tls;
pub mod topic_identity;
pub mod upstream;
