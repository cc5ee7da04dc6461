//! The seed's placement strategies, and choosing one by name.
//!
//! All of them implement [`Strategy`] and are pure: the same task, agents and
//! [`DecisionContext`](super::DecisionContext) always give the same answer, on every replica and
//! in the simulator. [`StrategyKind`] names them for configuration and the wire.
//!
//! * [`RoundRobin`] — take turns, ignoring everything but fit: the naive baseline.
//! * [`PriorityBased`] — urgent tasks get the best agents, routine ones keep them free.
//! * [`LoadBalanced`] — even out mean utilization across all resource kinds.
//! * [`Adaptive`] — shortest expected completion time, from learned patterns and scores.
//! * [`Historical`] — highest learned success rate for the (task type, agent type) pair.

use super::placement::{LeastLoaded, Strategy};

mod basic;
mod learned;

pub use basic::{LoadBalanced, PriorityBased, RoundRobin};
pub use learned::{Adaptive, Historical};

/// The strategies that can be selected by name.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// [`LeastLoaded`]: the optimizer's default.
    #[default]
    LeastLoaded,
    /// [`RoundRobin`].
    RoundRobin,
    /// [`PriorityBased`].
    PriorityBased,
    /// [`LoadBalanced`].
    LoadBalanced,
    /// [`Adaptive`].
    Adaptive,
    /// [`Historical`].
    Historical,
}

impl StrategyKind {
    /// Every kind, in declaration order.
    pub const ALL: [StrategyKind; 6] = [
        StrategyKind::LeastLoaded,
        StrategyKind::RoundRobin,
        StrategyKind::PriorityBased,
        StrategyKind::LoadBalanced,
        StrategyKind::Adaptive,
        StrategyKind::Historical,
    ];

    /// The stable name used in configuration, metrics and the wire; equals the built
    /// strategy's [`Strategy::name`].
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::LeastLoaded => "least_loaded",
            StrategyKind::RoundRobin => "round_robin",
            StrategyKind::PriorityBased => "priority_based",
            StrategyKind::LoadBalanced => "load_balanced",
            StrategyKind::Adaptive => "adaptive",
            StrategyKind::Historical => "historical",
        }
    }

    /// Parses a name case-insensitively, with `-` or `_` separators, so both our
    /// `round_robin` and the seed's `ROUND_ROBIN` are accepted. `None` for unknown names.
    pub fn parse(name: &str) -> Option<StrategyKind> {
        let normal = name.trim().to_ascii_lowercase().replace('-', "_");
        StrategyKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == normal)
    }

    /// A fresh strategy of this kind.
    pub fn build(self) -> Box<dyn Strategy> {
        match self {
            StrategyKind::LeastLoaded => Box::new(LeastLoaded),
            StrategyKind::RoundRobin => Box::new(RoundRobin),
            StrategyKind::PriorityBased => Box::new(PriorityBased),
            StrategyKind::LoadBalanced => Box::new(LoadBalanced),
            StrategyKind::Adaptive => Box::new(Adaptive),
            StrategyKind::Historical => Box::new(Historical),
        }
    }

    /// Whether strategies of this kind read learned patterns (without building one).
    pub fn uses_patterns(self) -> bool {
        matches!(self, StrategyKind::Adaptive | StrategyKind::Historical)
    }
}

impl std::fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StrategyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StrategyKind::parse(s).ok_or_else(|| format!("unknown strategy {s:?}"))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hold_tests;

#[cfg(test)]
mod expected_tests;
