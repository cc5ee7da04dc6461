//! The kinds of resource, and their names on the wire and in Redis.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of resource an agent can carry and a task can need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// CPU cores.
    Cpu,
    /// Memory, in whatever unit the fleet agrees on (typically MiB).
    Memory,
    /// LLM tokens.
    Tokens,
    /// Wall-clock time budget, in seconds.
    Time,
}

impl ResourceKind {
    /// Every kind, in a fixed order, so loops over kinds are exhaustive and deterministic.
    pub const ALL: [ResourceKind; 4] = [
        ResourceKind::Cpu,
        ResourceKind::Memory,
        ResourceKind::Tokens,
        ResourceKind::Time,
    ];

    /// The canonical lowercase name, used on the wire and as Redis hash field names.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Cpu => "cpu",
            ResourceKind::Memory => "memory",
            ResourceKind::Tokens => "tokens",
            ResourceKind::Time => "time",
        }
    }

    /// Parses a kind name case-insensitively, because the Python seed implementation sends
    /// upper-case enum names (`"CPU"`) while this service emits lower-case ones.
    pub fn parse(name: &str) -> Option<Self> {
        ResourceKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for kind in ResourceKind::ALL {
            assert_eq!(ResourceKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
    }

    #[test]
    fn kind_parse_is_case_insensitive() {
        assert_eq!(ResourceKind::parse("CPU"), Some(ResourceKind::Cpu));
        assert_eq!(ResourceKind::parse("Memory"), Some(ResourceKind::Memory));
        assert_eq!(ResourceKind::parse("TOKENS"), Some(ResourceKind::Tokens));
        assert_eq!(ResourceKind::parse("tImE"), Some(ResourceKind::Time));
    }

    #[test]
    fn kind_parse_rejects_unknown() {
        assert_eq!(ResourceKind::parse("gpu"), None);
        assert_eq!(ResourceKind::parse(""), None);
        assert_eq!(ResourceKind::parse(" cpu"), None);
    }

    #[test]
    fn kind_serde_is_snake_case() {
        let json = serde_json::to_string(&ResourceKind::Tokens).unwrap();
        assert_eq!(json, "\"tokens\"");
        let back: ResourceKind = serde_json::from_str("\"memory\"").unwrap();
        assert_eq!(back, ResourceKind::Memory);
    }
}
