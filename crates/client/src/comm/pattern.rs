//! The seed's protocol selection rule: synchronous for small groups (≤2 agents), asynchronous
//! for reliable medium groups (3–5), a pipeline for sequential workflows, broadcast for large
//! parallel groups. A recommendation, with the delivery mode each pattern maps to.

use switchyard_protocol::DeliveryMode;

/// How the agents of a group depend on each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowShape {
    /// Each agent consumes the previous one's output.
    Sequential,
    /// Agents work side by side on parts of the whole.
    Parallel,
}

/// A communication pattern for a group of agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommunicationPattern {
    /// Request/reply with every member: cheap to reason about, only sensible for a pair.
    Synchronous,
    /// Stored messages to each member; members answer in their own time.
    Asynchronous,
    /// Each stage hands its result to the next with guaranteed delivery.
    Pipeline,
    /// One message to every agent.
    Broadcast,
}

/// Largest group that talks synchronously.
pub const SYNCHRONOUS_MAX: usize = 2;
/// Largest group that gets individual asynchronous messages; larger groups get a broadcast.
pub const ASYNCHRONOUS_MAX: usize = 5;

/// The seed's rule. Sequential workflows of more than one agent are pipelines whatever their
/// size (their order matters more than their fan-out); otherwise the group size decides.
pub fn recommend_pattern(group_size: usize, shape: WorkflowShape) -> CommunicationPattern {
    match (shape, group_size) {
        (WorkflowShape::Sequential, n) if n > 1 => CommunicationPattern::Pipeline,
        (_, n) if n <= SYNCHRONOUS_MAX => CommunicationPattern::Synchronous,
        (_, n) if n <= ASYNCHRONOUS_MAX => CommunicationPattern::Asynchronous,
        _ => CommunicationPattern::Broadcast,
    }
}

impl CommunicationPattern {
    /// The delivery mode messages of this pattern travel in.
    pub fn delivery_mode(self) -> DeliveryMode {
        match self {
            CommunicationPattern::Synchronous => DeliveryMode::Synchronous,
            CommunicationPattern::Asynchronous => DeliveryMode::Asynchronous,
            CommunicationPattern::Pipeline => DeliveryMode::Guaranteed,
            CommunicationPattern::Broadcast => DeliveryMode::Asynchronous,
        }
    }

    /// Whether one message goes to every agent instead of one per member.
    pub fn is_broadcast(self) -> bool {
        self == CommunicationPattern::Broadcast
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CommunicationPattern::Synchronous => "synchronous",
            CommunicationPattern::Asynchronous => "asynchronous",
            CommunicationPattern::Pipeline => "pipeline",
            CommunicationPattern::Broadcast => "broadcast",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_seed_rule_at_every_boundary() {
        use CommunicationPattern::*;
        let parallel = |n| recommend_pattern(n, WorkflowShape::Parallel);
        assert_eq!(parallel(1), Synchronous);
        assert_eq!(parallel(2), Synchronous);
        assert_eq!(parallel(3), Asynchronous);
        assert_eq!(parallel(5), Asynchronous);
        assert_eq!(parallel(6), Broadcast);
        assert_eq!(parallel(500), Broadcast);
        assert_eq!(recommend_pattern(2, WorkflowShape::Sequential), Pipeline);
        assert_eq!(recommend_pattern(40, WorkflowShape::Sequential), Pipeline);
        assert_eq!(recommend_pattern(1, WorkflowShape::Sequential), Synchronous);
    }

    #[test]
    fn patterns_map_to_delivery_modes() {
        assert_eq!(
            CommunicationPattern::Pipeline.delivery_mode(),
            DeliveryMode::Guaranteed
        );
        assert!(CommunicationPattern::Broadcast.is_broadcast());
        assert_eq!(
            CommunicationPattern::Synchronous.delivery_mode(),
            DeliveryMode::Synchronous
        );
    }
}
