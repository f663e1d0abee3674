//! The modes: what stands between the clients and the upstream, started for one run.

use anyhow::bail;
use serde::Serialize;

use crate::kroxylicious;
use crate::relays::{sidecar_yaml, start_haproxy, start_proxy, switch_sidecar};
use crate::sampling::Measured;
use crate::targets::RunUpstream;
use crate::workloads::Env;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Clients to the upstream.
    Direct,
    /// Clients to kafka-sidecar, which has never switched: idempotent batches pass through.
    Sidecar,
    /// Clients to kafka-sidecar after one switch (spare → up) completed before the run: its
    /// producer-identity feature rewrites every idempotent batch.
    SidecarSwitched,
    /// Clients to HAProxy (TCP mode) in front of kafka-sidecar (never switched).
    HaproxyChain,
    /// Clients to Kroxylicious 0.12 (no filters).
    Kroxylicious,
}

pub const ALL: [Mode; 5] = [
    Mode::Direct,
    Mode::Sidecar,
    Mode::SidecarSwitched,
    Mode::HaproxyChain,
    Mode::Kroxylicious,
];

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Sidecar => "sidecar",
            Mode::SidecarSwitched => "sidecar_switched",
            Mode::HaproxyChain => "haproxy_chain",
            Mode::Kroxylicious => "kroxylicious",
        }
    }
    pub fn parse(s: &str) -> anyhow::Result<Mode> {
        match ALL.iter().find(|m| m.name() == s) {
            Some(m) => Ok(*m),
            None => bail!(
                "unknown mode {s} (one of {})",
                ALL.map(Mode::name).join(", ")
            ),
        }
    }
    pub fn color(self) -> &'static str {
        match self {
            Mode::Direct => "#1f77b4",
            Mode::Sidecar => "#d62728",
            Mode::SidecarSwitched => "#ff7f0e",
            Mode::HaproxyChain => "#2ca02c",
            Mode::Kroxylicious => "#9467bd",
        }
    }
    /// Whether the mode's sidecar is configured with a second cluster (to switch away from,
    /// and in `sidecar` too, so that the switch is the only difference between the two).
    pub fn needs_spare(self) -> bool {
        matches!(self, Mode::Sidecar | Mode::SidecarSwitched)
    }
}

/// The relays of one run, killed on drop.
pub struct Chain {
    /// What the clients bootstrap from.
    pub bootstrap: String,
    /// kafka-sidecar, in the modes that run it.
    pub sidecar: Option<Measured>,
    pub haproxy: Option<Measured>,
    pub kroxylicious: Option<Measured>,
}

impl Chain {
    /// Starts the relays of `mode` in front of `up`; for `sidecar_switched`, switches the
    /// sidecar once and returns after its `/status` shows the switch complete.
    pub fn start(env: &Env, mode: Mode, up: &RunUpstream) -> anyhow::Result<Chain> {
        let pin = env.args.pin_proxy_cpu;
        let ports = &env.ports;
        let local = format!("127.0.0.1:{}", ports.bootstrap);
        let upstream = first(&up.bootstrap);
        let mut chain = Chain {
            bootstrap: local.clone(),
            sidecar: None,
            haproxy: None,
            kroxylicious: None,
        };
        match mode {
            Mode::Direct => chain.bootstrap = up.bootstrap.clone(),
            Mode::Sidecar | Mode::HaproxyChain => {
                // In the chain the sidecar advertises 127.0.0.2, where HAProxy listens.
                let advertised = if mode == Mode::HaproxyChain {
                    "127.0.0.2"
                } else {
                    "127.0.0.1"
                };
                let spare = up.spare.as_deref().map(first);
                let yaml = sidecar_yaml(ports, upstream, spare, "up", advertised);
                chain.sidecar = Some(start_proxy(&env.proxy_bin, &env.dir, ports, &yaml, pin)?);
                if mode == Mode::HaproxyChain {
                    let Some(bin) = &env.haproxy_bin else {
                        bail!("haproxy_chain without HAProxy");
                    };
                    chain.haproxy = Some(start_haproxy(bin, &env.dir, ports, &up.node_ids, pin)?);
                    chain.bootstrap = format!("127.0.0.2:{}", ports.bootstrap);
                }
            }
            Mode::SidecarSwitched => {
                let Some(spare) = up.spare.as_deref().map(first) else {
                    bail!("sidecar_switched without a spare cluster");
                };
                let before = sidecar_yaml(ports, upstream, Some(spare), "spare", "127.0.0.1");
                chain.sidecar = Some(start_proxy(&env.proxy_bin, &env.dir, ports, &before, pin)?);
                let after = sidecar_yaml(ports, upstream, Some(spare), "up", "127.0.0.1");
                switch_sidecar(&env.dir, ports, &after, "up")?;
            }
            Mode::Kroxylicious => {
                let Some(k) = &env.kroxylicious else {
                    bail!("kroxylicious mode without its launcher");
                };
                chain.kroxylicious = Some(kroxylicious::start(
                    k,
                    &env.dir,
                    ports,
                    upstream,
                    &up.node_ids,
                    pin,
                )?);
                chain.bootstrap = format!("127.0.0.1:{}", ports.kroxylicious);
            }
        }
        Ok(chain)
    }

    /// Starts the CPU counters of every relay.
    pub fn mark(&mut self, tck: f64) {
        for m in [&mut self.sidecar, &mut self.haproxy, &mut self.kroxylicious]
            .into_iter()
            .flatten()
        {
            m.mark(tck);
        }
    }

    /// The processes of every relay in the chain.
    pub fn relay_pids(&self) -> Vec<u32> {
        [&self.sidecar, &self.haproxy, &self.kroxylicious]
            .into_iter()
            .flatten()
            .map(|m| m.child.id())
            .collect()
    }
}

pub fn first(list: &str) -> &str {
    list.split(',').next().unwrap_or(list)
}
