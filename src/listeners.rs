//! Local listeners: the bootstrap port, and one port per upstream broker node id
//! (`broker_port_base + node_id`), so the same node id always has the same local port,
//! across restarts and across a switch of clusters. Broker listeners are opened on
//! the fly the first time a response names their node id.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::proxy::Shared;
use crate::session::{self, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Bound(u16),
    /// Binding failed (port taken, node id out of range); logged once.
    Failed,
}

pub struct Listeners {
    address: IpAddr,
    brokers: Mutex<HashMap<i32, State>>,
}

impl Listeners {
    pub fn new(address: IpAddr) -> Self {
        Listeners {
            address,
            brokers: Mutex::new(HashMap::new()),
        }
    }

    /// Binds the bootstrap listener. Failing here is fatal: the client has nowhere to go.
    pub async fn bind_bootstrap(
        &self,
        shared: &Arc<Shared>,
        port: u16,
    ) -> anyhow::Result<SocketAddr> {
        let addr = SocketAddr::new(self.address, port);
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (listen.bootstrap_port): {e}"))?;
        let local = l.local_addr()?;
        tracing::info!(%local, "bootstrap listener ready");
        spawn_accept(Arc::downgrade(shared), l, Target::Bootstrap);
        Ok(local)
    }

    /// The local port of `node_id`, opening its listener if this is the first time.
    /// None if it has no port (out of range) or its port cannot be bound.
    pub fn ensure_broker(
        &self,
        shared: &Weak<Shared>,
        node_id: i32,
        port: Option<u16>,
    ) -> Option<u16> {
        let mut brokers = self.brokers.lock();
        if let Some(state) = brokers.get(&node_id) {
            return match state {
                State::Bound(p) => Some(*p),
                State::Failed => None,
            };
        }
        let state = match port {
            None => {
                tracing::error!(node_id, "broker node id has no local port (listen.broker_port_base + node id must stay below broker_port_base + max_node_id); clients are sent to the bootstrap port instead");
                State::Failed
            }
            Some(port) => match bind_now(SocketAddr::new(self.address, port)) {
                Ok(l) => {
                    tracing::info!(node_id, local = %SocketAddr::new(self.address, port), "broker listener ready");
                    spawn_accept(shared.clone(), l, Target::Broker(node_id));
                    State::Bound(port)
                }
                Err(e) => {
                    tracing::error!(node_id, port, "cannot open broker listener: {e}; clients are sent to the bootstrap port instead");
                    State::Failed
                }
            },
        };
        brokers.insert(node_id, state);
        match state {
            State::Bound(p) => Some(p),
            State::Failed => None,
        }
    }

    /// (node id, local port) of every open broker listener.
    pub fn brokers(&self) -> Vec<(i32, u16)> {
        let mut v: Vec<_> = self
            .brokers
            .lock()
            .iter()
            .filter_map(|(n, s)| match s {
                State::Bound(p) => Some((*n, *p)),
                State::Failed => None,
            })
            .collect();
        v.sort();
        v
    }
}

/// Binds synchronously: called while rewriting a response, which must not return
/// before the advertised port accepts connections.
fn bind_now(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

fn spawn_accept(shared: Weak<Shared>, l: TcpListener, target: Target) {
    tokio::spawn(async move {
        let mut shutdown = match shared.upgrade() {
            Some(s) => s.shutdown_signal(),
            None => return,
        };
        let listener_label = match target {
            Target::Bootstrap => "bootstrap",
            Target::Broker(_) => "broker",
        };
        loop {
            let accepted = tokio::select! {
                r = l.accept() => r,
                _ = shutdown.changed() => return,
            };
            match accepted {
                Ok((sock, peer)) => {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    metrics::counter!(crate::admin::names::CLIENT_CONNECTIONS_ACCEPTED_TOTAL, "listener" => listener_label).increment(1);
                    tokio::spawn(session::serve(shared, sock, peer, target));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(?target, "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
}
