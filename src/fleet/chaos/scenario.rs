//! The fault matrix as a table: one [`Scenario`] per fault, and what each needs of the topology.
//! A new scenario is one more variant, one more row in [`Scenario::spec`] and one more arm in
//! `faults::inject`.

use serde::Serialize;

/// One fault injected once, mid-load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// SIGKILL one of the two optimizer processes, start it again 5 s later.
    OptimizerKill,
    /// SIGSTOP one optimizer process for 15 s, then SIGCONT.
    OptimizerStop,
    /// SIGKILL the node of a 3-node NATS cluster (streams at 3 replicas) that leads the events
    /// stream, start it again 10 s later.
    NatsNodeKill,
    /// SIGKILL the only nats-server, start it again 2 s later on the same store.
    NatsRestart,
    /// SIGKILL redis-server (AOF, `appendfsync everysec`), start it again 2 s later on the same
    /// directory.
    RedisRestart,
    /// Redis under Sentinel (primary and replica with AOF everysec, three sentinels): SIGKILL
    /// the primary once the replica has caught up, wait for the sentinels to promote the
    /// replica, start the killed node again (it rejoins as a replica).
    RedisFailover,
    /// SIGSTOP the single redis-server for 30 s, then SIGCONT.
    RedisStop,
    /// Cut one optimizer's link to Redis (a TCP proxy) for 10 s.
    RedisPartition,
    /// Cut one optimizer's link to NATS (a TCP proxy) for 10 s.
    NatsPartition,
    /// Drop a quarter of the agents mid-task, without completing or deregistering, so their
    /// leases run out.
    AgentKill,
    /// Publish every submit so far again, with the same message ids and with new ones, and every
    /// completion so far again with new ids.
    DuplicateFlood,
}

/// The NATS a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NatsShape {
    Single,
    /// Three routed nodes; every stream and consumer at `jetstream.replicas = 3`.
    Cluster3,
}

/// The Redis a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedisShape {
    Single,
    /// A primary and a replica watched by three sentinels; everything connects in sentinel mode.
    Sentinel,
}

/// From when the recovery time of a scenario is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecoverFrom {
    /// The fault's start: a kill is over once it happened; what follows is recovery.
    Start,
    /// The fault's end: while a server is stopped or a link cut, nothing is expected of it.
    End,
}

/// What a scenario needs and how it is measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    /// One line for the report.
    pub(crate) fault: &'static str,
    pub(crate) nats: NatsShape,
    pub(crate) redis: RedisShape,
    /// The optimizers reach Redis through a TCP proxy each.
    pub(crate) redis_proxy: bool,
    /// The optimizers reach NATS through a TCP proxy each.
    pub(crate) nats_proxy: bool,
    pub(crate) recover_from: RecoverFrom,
}

impl Scenario {
    /// Every scenario, in the order the matrix runs them.
    pub const ALL: [Scenario; 11] = [
        Scenario::OptimizerKill,
        Scenario::OptimizerStop,
        Scenario::NatsNodeKill,
        Scenario::NatsRestart,
        Scenario::RedisRestart,
        Scenario::RedisFailover,
        Scenario::RedisStop,
        Scenario::RedisPartition,
        Scenario::NatsPartition,
        Scenario::AgentKill,
        Scenario::DuplicateFlood,
    ];

    pub(crate) fn spec(self) -> Spec {
        let plain = |name, fault, recover_from| Spec {
            name,
            fault,
            nats: NatsShape::Single,
            redis: RedisShape::Single,
            redis_proxy: false,
            nats_proxy: false,
            recover_from,
        };
        use RecoverFrom::{End, Start};
        match self {
            Scenario::OptimizerKill => plain(
                "optimizer-kill",
                "SIGKILL optimizer 1 of 2, restart after 5 s",
                Start,
            ),
            Scenario::OptimizerStop => {
                plain("optimizer-stop", "SIGSTOP optimizer 1 of 2 for 15 s", End)
            }
            Scenario::NatsNodeKill => Spec {
                nats: NatsShape::Cluster3,
                ..plain(
                    "nats-node-kill",
                    "SIGKILL the events stream leader's node of 3 (R3), back after 10 s",
                    Start,
                )
            },
            Scenario::NatsRestart => plain(
                "nats-restart",
                "SIGKILL the single nats-server, start again after 2 s",
                End,
            ),
            Scenario::RedisRestart => plain(
                "redis-restart",
                "SIGKILL redis-server (AOF everysec), start again after 2 s",
                End,
            ),
            Scenario::RedisFailover => Spec {
                redis: RedisShape::Sentinel,
                ..plain(
                    "redis-failover",
                    "SIGKILL the Redis primary (Sentinel, replica caught up), replica promoted",
                    Start,
                )
            },
            Scenario::RedisStop => plain(
                "redis-stop",
                "SIGSTOP the single redis-server for 30 s",
                End,
            ),
            Scenario::RedisPartition => Spec {
                redis_proxy: true,
                ..plain("redis-partition", "cut optimizer 1 <-> Redis for 10 s", End)
            },
            Scenario::NatsPartition => Spec {
                nats_proxy: true,
                ..plain("nats-partition", "cut optimizer 1 <-> NATS for 10 s", End)
            },
            Scenario::AgentKill => plain(
                "agent-kill",
                "drop 1/4 of the agents mid-task (leases run out)",
                Start,
            ),
            Scenario::DuplicateFlood => plain(
                "duplicate-flood",
                "re-publish submits (same and new ids) and completions",
                Start,
            ),
        }
    }

    /// The scenario called `name` (as `--scenario` takes it).
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.spec().name == name)
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_a_distinct_name_that_parses_back() {
        let mut names = std::collections::HashSet::new();
        for scenario in Scenario::ALL {
            assert!(names.insert(scenario.name()), "{} twice", scenario.name());
            assert_eq!(Scenario::from_name(scenario.name()), Some(scenario));
        }
        assert_eq!(Scenario::from_name("no-such-fault"), None);
    }

    /// A proxy, a kill or a stop of "the" redis-server needs a single one; the failover needs
    /// the sentinels.
    #[test]
    fn every_scenario_runs_on_the_redis_its_fault_acts_on() {
        for scenario in Scenario::ALL {
            let spec = scenario.spec();
            let single = spec.redis_proxy
                || matches!(scenario, Scenario::RedisRestart | Scenario::RedisStop);
            if single {
                assert_eq!(spec.redis, RedisShape::Single, "{}", spec.name);
            }
        }
        assert_eq!(Scenario::RedisFailover.spec().redis, RedisShape::Sentinel);
    }
}
