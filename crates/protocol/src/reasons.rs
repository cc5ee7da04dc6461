//! The reason codes of refused messages: stable, documented in `docs/protocol.md` §7, and a
//! bounded metric label.

/// Why a message was refused. `as_str` is the documented reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    PayloadTooLarge,
    MalformedJson,
    InvalidEnvelope,
    UnsupportedVersion,
    Expired,
    SubjectMismatch,
    UnexpectedType,
    InvalidPayload,
    InvalidId,
    InvalidPriority,
    InvalidDuration,
    InvalidDependencies,
    Resource(&'static str),
    UnknownAgent,
    AgentNotActive,
    UnknownTask,
    WrongAgent,
    TaskExists,
    TaskNotGranted,
    StaleGrant,
    InvalidStrategy,
    AgentConflict,
    /// A handoff id the coordinator does not know: never begun, already answered, or its
    /// deadline passed.
    UnknownHandoff,
    /// The receiving agent lacks free capacity for what it would take on.
    InsufficientCapacity,
    /// No registered agent's capacity covers what the task needs, and the optimizer refuses such
    /// tasks (`coordination.infeasible = "refuse"`).
    Infeasible,
    /// A TASK_CANCEL from neither the task's submitter nor an operator.
    NotSubmitter,
    /// A handoff of a task whose cancel was requested: it is being stopped, not moved.
    TaskCancelling,
    /// A submit's `budgets` (or a completion's `usage`) is malformed: a bad name, an amount out
    /// of range, too many entries.
    InvalidBudget,
    /// A submit names a budget the optimizer does not define.
    UnknownBudget,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::InvalidEnvelope => "invalid_envelope",
            RejectReason::UnsupportedVersion => "unsupported_version",
            RejectReason::Expired => "expired",
            RejectReason::SubjectMismatch => "subject_mismatch",
            RejectReason::UnexpectedType => "unexpected_type",
            RejectReason::InvalidPayload => "invalid_payload",
            RejectReason::InvalidId => "invalid_id",
            RejectReason::InvalidPriority => "invalid_priority",
            RejectReason::InvalidDuration => "invalid_duration",
            RejectReason::InvalidDependencies => "invalid_dependencies",
            RejectReason::Resource(code) => code,
            RejectReason::UnknownAgent => "unknown_agent",
            RejectReason::AgentNotActive => "agent_not_active",
            RejectReason::UnknownTask => "unknown_task",
            RejectReason::WrongAgent => "wrong_agent",
            RejectReason::TaskExists => "task_exists",
            RejectReason::TaskNotGranted => "task_not_granted",
            RejectReason::StaleGrant => "stale_grant",
            RejectReason::InvalidStrategy => "invalid_strategy",
            RejectReason::AgentConflict => "agent_conflict",
            RejectReason::UnknownHandoff => "unknown_handoff",
            RejectReason::InsufficientCapacity => "insufficient_capacity",
            RejectReason::Infeasible => "infeasible",
            RejectReason::NotSubmitter => "not_submitter",
            RejectReason::TaskCancelling => "task_cancelling",
            RejectReason::InvalidBudget => "invalid_budget",
            RejectReason::UnknownBudget => "unknown_budget",
        }
    }
}
