//! kafka-sidecar: a Kafka-protocol-aware sidecar proxy.
//!
//! Where things live:
//! - [`config`]: the YAML file, validation, secrets.
//! - [`config_watch`]: hot reload of the (ConfigMap-mounted) config file.
//! - [`codec`]: Kafka frame reading/writing and request header peeking.
//! - [`rewrite`]: response rewriting of broker addresses and ApiVersions capping.
//! - [`listeners`]: local bootstrap and per-node-id broker listeners.
//! - [`upstream`]: opening upstream connections (TCP, [`tls`], [`sasl`]).
//! - [`session`]: one client connection relayed to one upstream connection.
//! - [`switch`]: the active cluster, failover/failback and session draining.
//! - [`admin`]: HTTP metrics, health and status.

pub mod admin;
pub mod codec;
pub mod config;
pub mod config_watch;
pub mod sasl;
pub mod tls;
