//! The JSON wire protocol, documented for other languages in `docs/protocol.md`.
//!
//! Every message is an [`Envelope`] whose `payload` depends on its [`MessageType`]; each message
//! type travels on its own NATS subject, built only by [`Subjects`]. Input from the wire is
//! untrusted: [`decode`] turns bytes into a typed [`Inbound`] message or a [`Rejection`] carrying a
//! bounded reason code, never a panic.

mod envelope;
mod messages;
mod messaging;
mod reasons;
mod story;
mod subjects;
mod trace;
mod validate;
mod waits;

pub use envelope::{
    DeliveryMode, Envelope, MessagePriority, MessageType, PROTOCOL_VERSION, RetryPolicy,
};
pub use messages::{
    AgentDeregister, AgentRegister, AgentStatusView, BudgetView, CoordinationSync,
    CoordinatorReply, ErrorReport, ExplainedCandidate, GrantAck, GrantExplanation, GrantRef,
    Heartbeat, MAX_GRANTS_PER_ACK, PatternRow, QUEUE_TIMEOUT, RUN_TIMEOUT, Replies, ReplyStatus,
    StatusQuery, TaskCancel, TaskCancelNotice, TaskComplete, TaskGrant, TaskSubmit,
    TenantCountsView,
};
pub use messaging::{
    DEFAULT_HANDOFF_TIMEOUT_S, HandoffAcknowledge, HandoffInitiate, HandoffOutcome, HandoffStatus,
    MessageAck, ResourceGrant, ResourceRequest,
};
pub use story::{
    LATENCY_BOUNDS_MS, StoryEntry, StoryEvent, TIMELINE_BUCKET_S, TimelinePoint,
    estimate_percentile_ms, timeline_bucket_start_s,
};
pub use subjects::{ALL_AGENTS, Subjects};
pub use trace::{
    ROOT_STATE_ENTRY, TRACEPARENT_HEADER, TRACESTATE_HEADER, TraceContext, TraceParseError,
    random_span_id, to_hex,
};
pub use validate::{
    Inbound, MAX_ATTEMPTS, MAX_TASK_PRIORITY, MAX_TIME_LIMIT_S, RejectReason, Rejection, decode,
    is_valid_id, now_ms, validate_agent_id,
};
pub use waits::{MAX_STATUS_TASKS, TaskWaitView, WaitReason, utc_time};
