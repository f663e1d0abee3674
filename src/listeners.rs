//! Local listeners: the bootstrap port, and one port per upstream broker node id
//! (`broker_port_base + node_id`), so the same node id always has the same local port,
//! across restarts and across a switch of clusters. Broker listeners are opened on
//! the fly the first time a response names their node id. A node id without a fixed
//! port (at or above `listen.max_node_id`) gets a port from the OS, kept for the
//! life of the process.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::session::{self, Runtime, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Bound(u16),
    /// No port could be bound at that time (file descriptors exhausted, say): tried
    /// again after [`BIND_RETRY`].
    Failed(Instant),
}

/// How long a node id whose listener could not be bound waits before the next try.
const BIND_RETRY: Duration = Duration::from_secs(1);

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
    pub async fn bind_bootstrap<R: Runtime>(
        &self,
        shared: &Arc<R>,
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
    /// `port` is its fixed port (`broker_port_base + node_id`); a node id without one
    /// (at or above `max_node_id`, as ZooKeeper-era clusters number brokers from 1001)
    /// or whose fixed port is taken gets a port chosen by the OS, so every node id
    /// has a port of its own. None only if no port can be bound right now (the caller
    /// sends clients to the bootstrap port then; the bind is tried again later).
    pub fn ensure_broker<R: Runtime>(
        &self,
        shared: &Weak<R>,
        node_id: i32,
        port: Option<u16>,
    ) -> Option<u16> {
        let mut brokers = self.brokers.lock();
        match brokers.get(&node_id) {
            Some(State::Bound(p)) => return Some(*p),
            Some(State::Failed(at)) if at.elapsed() < BIND_RETRY => return None,
            _ => {}
        }
        let fixed = port.map(|p| (p, bind_now(SocketAddr::new(self.address, p))));
        let bound = match fixed {
            Some((_, Ok(l))) => Ok(l),
            Some((p, Err(e))) => {
                tracing::error!(node_id, port = p, "cannot open the broker listener on its port: {e}; using a port chosen by the OS instead");
                bind_now(SocketAddr::new(self.address, 0))
            }
            None => {
                tracing::warn!(node_id, "node id is outside listen.max_node_id: serving it on a port chosen by the OS (raise max_node_id for a stable port)");
                bind_now(SocketAddr::new(self.address, 0))
            }
        };
        let state = match bound.and_then(|l| Ok((l.local_addr()?.port(), l))) {
            Ok((p, l)) => {
                tracing::info!(node_id, local = %SocketAddr::new(self.address, p), "broker listener ready");
                spawn_accept(shared.clone(), l, Target::Broker(node_id));
                State::Bound(p)
            }
            Err(e) => {
                tracing::error!(node_id, "cannot open a broker listener: {e}; clients are sent to the bootstrap port until it can be opened");
                State::Failed(Instant::now())
            }
        };
        brokers.insert(node_id, state);
        match state {
            State::Bound(p) => Some(p),
            State::Failed(_) => None,
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
                State::Failed(_) => None,
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

fn spawn_accept<R: Runtime>(shared: Weak<R>, l: TcpListener, target: Target) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_node_id_gets_a_port_of_its_own() {
        let l = Listeners::new("127.0.0.1".parse().unwrap());
        let none: Weak<crate::session::tests::NoRuntime> = Weak::new();
        // No fixed port (node id beyond max_node_id): the OS picks one, kept after.
        let high = l.ensure_broker(&none, 1001, None).expect("a port");
        assert_eq!(l.ensure_broker(&none, 1001, None), Some(high));
        let other = l.ensure_broker(&none, 1002, None).expect("a port");
        assert_ne!(high, other);
        // A fixed port already taken: another port, not the bootstrap fallback.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let p = l.ensure_broker(&none, 7, Some(taken_port)).expect("a port");
        assert_ne!(p, taken_port);
    }
}
