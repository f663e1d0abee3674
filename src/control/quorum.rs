//! The arbiters' rule: when a quorum of votes justifies an automatic decision.
//!
//! Pure functions of the votes, the followed decision and the policy, so every case
//! (one observer cut off, a flapping cluster, stale votes, an operator's decision) is
//! unit-tested here without brokers or clocks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{Decision, Origin, Vote};
use crate::config::AutomaticConfig;

/// What the votes justify now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The active cluster is healthy (or too few votes say otherwise).
    Steady {
        /// Arbiters that see the active cluster unhealthy for `unhealthy_after`.
        suspecting: Vec<String>,
    },
    /// Write a decision moving the fleet to `to`.
    Move {
        to: String,
        failback: bool,
        supporters: Vec<String>,
    },
    /// A move has a quorum but may not happen yet.
    Blocked { to: String, reason: String },
}

/// The inputs of one evaluation.
pub struct Inputs<'a> {
    pub policy: &'a AutomaticConfig,
    /// The cluster the fleet follows now (highest decision, or the file's default).
    pub active: &'a str,
    /// The highest decision (None: only the file's default so far).
    pub decision: Option<&'a Decision>,
    /// The newest automatic decision seen, if any (for `min_interval`).
    pub last_automatic: Option<&'a Decision>,
    /// Fresh votes of configured arbiters, by arbiter id (stale ones already removed).
    pub votes: &'a BTreeMap<String, Vote>,
    pub now_ms: i64,
}

fn unhealthy_for(v: &Vote, cluster: &str, at_least: Duration) -> bool {
    v.clusters
        .get(cluster)
        .is_some_and(|h| !h.healthy && h.for_ms >= at_least.as_millis() as u64)
}

fn healthy_for(v: &Vote, cluster: &str, at_least: Duration) -> bool {
    v.clusters
        .get(cluster)
        .is_some_and(|h| h.healthy && h.for_ms >= at_least.as_millis() as u64)
}

pub fn evaluate(i: &Inputs) -> Verdict {
    let p = i.policy;
    let epoch = i.decision.map_or(0, |d| d.epoch);
    // Only votes cast under the same decision count: an arbiter that has not seen the
    // latest decision judges a different active cluster.
    let current: Vec<&Vote> = i
        .votes
        .values()
        .filter(|v| p.arbiters.contains(&v.arbiter) && v.epoch == epoch && v.active == i.active)
        .collect();
    let suspecting: Vec<String> = current
        .iter()
        .filter(|v| unhealthy_for(v, i.active, p.unhealthy_after))
        .map(|v| v.arbiter.clone())
        .collect();

    let mut proposal = None;
    if suspecting.len() >= p.quorum() {
        // Failover: the first cluster in priority order that the suspecting voters
        // (a quorum of them) see healthy.
        for target in p.priority.iter().filter(|c| *c != i.active) {
            let supporters: Vec<String> = current
                .iter()
                .filter(|v| {
                    unhealthy_for(v, i.active, p.unhealthy_after)
                        && healthy_for(v, target, Duration::ZERO)
                })
                .map(|v| v.arbiter.clone())
                .collect();
            if supporters.len() >= p.quorum() {
                proposal = Some((target.clone(), false, supporters));
                break;
            }
        }
    } else if p.failback {
        // Failback: only away from an automatic decision (an operator's choice is
        // never undone by automation), to the preferred cluster once it has been
        // healthy for `failback_after` in a quorum of views.
        let preferred = &p.priority[0];
        let automatic = i.decision.is_some_and(|d| d.origin == Origin::Automatic);
        if automatic && i.active != preferred {
            let supporters: Vec<String> = current
                .iter()
                .filter(|v| healthy_for(v, preferred, p.failback_after))
                .map(|v| v.arbiter.clone())
                .collect();
            if supporters.len() >= p.quorum() {
                proposal = Some((preferred.clone(), true, supporters));
            }
        }
    }
    let Some((to, failback, supporters)) = proposal else {
        return Verdict::Steady { suspecting };
    };
    if let Some(last) = i.last_automatic {
        let since = i.now_ms.saturating_sub(last.at_ms).max(0) as u128;
        if since < p.min_interval.as_millis() {
            return Verdict::Blocked {
                to,
                reason: format!(
                    "min_interval: the last automatic decision (epoch {}) was {:.0} s ago, the minimum is {:?}",
                    last.epoch,
                    since as f64 / 1000.0,
                    p.min_interval
                ),
            };
        }
    }
    Verdict::Move {
        to,
        failback,
        supporters,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Health;
    use super::*;

    fn policy() -> AutomaticConfig {
        AutomaticConfig {
            priority: vec!["north".into(), "west".into()],
            arbiters: vec!["a1".into(), "a2".into(), "a3".into()],
            unhealthy_after: Duration::from_secs(10),
            min_interval: Duration::from_secs(600),
            failback_after: Duration::from_secs(60),
            ..Default::default()
        }
    }

    fn vote(
        arbiter: &str,
        epoch: u64,
        active: &str,
        north: (bool, u64),
        west: (bool, u64),
    ) -> Vote {
        let h = |(healthy, s): (bool, u64)| Health {
            healthy,
            for_ms: s * 1000,
            failing_stage: None,
            error: None,
        };
        Vote {
            arbiter: arbiter.into(),
            seq: 1,
            incarnation: "x".into(),
            at_ms: 0,
            epoch,
            active: active.into(),
            clusters: [("north".into(), h(north)), ("west".into(), h(west))].into(),
        }
    }

    fn votes(v: Vec<Vote>) -> BTreeMap<String, Vote> {
        v.into_iter().map(|v| (v.arbiter.clone(), v)).collect()
    }

    fn decision(epoch: u64, active: &str, origin: Origin, at_ms: i64) -> Decision {
        Decision {
            epoch,
            active: active.into(),
            previous: None,
            reason: String::new(),
            origin,
            writer: "w".into(),
            host: "h".into(),
            pid: 1,
            at_ms,
            evidence: None,
        }
    }

    fn eval(
        p: &AutomaticConfig,
        active: &str,
        d: Option<&Decision>,
        last: Option<&Decision>,
        v: &BTreeMap<String, Vote>,
    ) -> Verdict {
        evaluate(&Inputs {
            policy: p,
            active,
            decision: d,
            last_automatic: last,
            votes: v,
            now_ms: 1_000_000,
        })
    }

    #[test]
    fn a_quorum_that_sees_north_down_and_west_up_moves_the_fleet() {
        let p = policy();
        let v = votes(vec![
            vote("a1", 0, "north", (false, 12), (true, 100)),
            vote("a2", 0, "north", (false, 11), (true, 100)),
            vote("a3", 0, "north", (true, 100), (true, 100)),
        ]);
        match eval(&p, "north", None, None, &v) {
            Verdict::Move {
                to,
                failback,
                supporters,
            } => {
                assert_eq!((to.as_str(), failback), ("west", false));
                assert_eq!(supporters, ["a1", "a2"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_observer_cut_off_moves_nothing() {
        let p = policy();
        let v = votes(vec![
            vote("a1", 0, "north", (false, 1000), (true, 100)),
            vote("a2", 0, "north", (true, 100), (true, 100)),
            vote("a3", 0, "north", (true, 100), (true, 100)),
        ]);
        assert_eq!(
            eval(&p, "north", None, None, &v),
            Verdict::Steady {
                suspecting: vec!["a1".into()]
            }
        );
    }

    #[test]
    fn not_long_enough_unhealthy_target_down_stale_epoch_or_unknown_arbiter_move_nothing() {
        let p = policy();
        // Down, but not for unhealthy_after yet.
        let v = votes(vec![
            vote("a1", 0, "north", (false, 9), (true, 1)),
            vote("a2", 0, "north", (false, 9), (true, 1)),
        ]);
        assert!(matches!(
            eval(&p, "north", None, None, &v),
            Verdict::Steady { .. }
        ));
        // Both down: no healthy target.
        let v = votes(vec![
            vote("a1", 0, "north", (false, 99), (false, 9)),
            vote("a2", 0, "north", (false, 99), (false, 9)),
        ]);
        assert!(matches!(
            eval(&p, "north", None, None, &v),
            Verdict::Steady { .. }
        ));
        // Votes cast under an older decision do not count.
        let d = decision(4, "north", Origin::Operator, 0);
        let v = votes(vec![
            vote("a1", 3, "north", (false, 99), (true, 9)),
            vote("a2", 3, "north", (false, 99), (true, 9)),
        ]);
        assert!(matches!(
            eval(&p, "north", Some(&d), None, &v),
            Verdict::Steady { .. }
        ));
        // Votes of arbiters not in the config do not count.
        let v = votes(vec![
            vote("a1", 0, "north", (false, 99), (true, 9)),
            vote("rogue", 0, "north", (false, 99), (true, 9)),
        ]);
        assert!(matches!(
            eval(&p, "north", None, None, &v),
            Verdict::Steady { .. }
        ));
    }

    #[test]
    fn min_interval_blocks_a_second_automatic_decision() {
        let mut p = policy();
        p.failback = true;
        let d = decision(1, "west", Origin::Automatic, 1_000_000 - 30_000);
        // West now down too, north back: a quorum for a move back, but too soon.
        let v = votes(vec![
            vote("a1", 1, "west", (true, 100), (false, 20)),
            vote("a2", 1, "west", (true, 100), (false, 20)),
        ]);
        match eval(&p, "west", Some(&d), Some(&d), &v) {
            Verdict::Blocked { to, reason } => {
                assert_eq!(to, "north");
                assert!(reason.contains("min_interval"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Long enough later, it may.
        let old = decision(1, "west", Origin::Automatic, 1_000_000 - 601_000);
        assert!(matches!(
            eval(&p, "west", Some(&old), Some(&old), &v),
            Verdict::Move { .. }
        ));
    }

    #[test]
    fn failback_is_manual_by_default_and_never_undoes_an_operator() {
        let mut p = policy();
        p.min_interval = Duration::ZERO;
        let auto = decision(1, "west", Origin::Automatic, 0);
        let v = votes(vec![
            vote("a1", 1, "west", (true, 61), (true, 100)),
            vote("a2", 1, "west", (true, 61), (true, 100)),
        ]);
        assert!(matches!(
            eval(&p, "west", Some(&auto), Some(&auto), &v),
            Verdict::Steady { .. }
        ));
        p.failback = true;
        assert_eq!(
            eval(&p, "west", Some(&auto), Some(&auto), &v),
            Verdict::Move {
                to: "north".into(),
                failback: true,
                supporters: vec!["a1".into(), "a2".into()]
            }
        );
        // Healthy, but not for failback_after.
        let young = votes(vec![
            vote("a1", 1, "west", (true, 59), (true, 100)),
            vote("a2", 1, "west", (true, 59), (true, 100)),
        ]);
        assert!(matches!(
            eval(&p, "west", Some(&auto), Some(&auto), &young),
            Verdict::Steady { .. }
        ));
        // An operator sent the fleet to west: automation leaves it there.
        let op = decision(2, "west", Origin::Operator, 0);
        let v2 = votes(vec![
            vote("a1", 2, "west", (true, 61), (true, 100)),
            vote("a2", 2, "west", (true, 61), (true, 100)),
        ]);
        assert!(matches!(
            eval(&p, "west", Some(&op), Some(&auto), &v2),
            Verdict::Steady { .. }
        ));
    }
}
