//! What a feature sees of the session it works for, and nothing more.
//!
//! A feature (producer identity, group membership) looks into some requests and
//! answers of a session. It gets this context, its own per-session state, and a
//! [`Broker`](crate::connection::Broker) to call the cluster on the session's own
//! upstream connection when it must; it never sees the session, the listeners or the
//! runtime, so its logic is tested without sockets. [`crate::intercept`] is where the
//! session hands frames to features and tells them about a switch.

use std::net::SocketAddr;
use std::sync::Arc;

/// One session, as features key their state and label their metrics.
#[derive(Debug, Clone)]
pub struct SessionContext {
    /// The client's address (logs).
    pub peer: SocketAddr,
    /// The upstream cluster of this session.
    pub cluster: Arc<str>,
    /// The same, as a metric label.
    pub cluster_label: metrics::SharedString,
    /// The switch generation the session was opened in (0 until the first switch).
    pub generation: u64,
    /// The proxy authenticates to this cluster itself (SASL): a client's own SASL
    /// attempt is refused.
    pub proxy_holds_credentials: bool,
}
