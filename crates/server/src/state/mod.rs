//! Shared coordination state in Redis.
//!
//! Each state transition is one Lua script in `lua/` (headed by its KEYS/ARGV/returns contract),
//! loaded once per connection and invoked by SHA. Scripts read everything they need before their
//! first write, because Redis has no rollback: a transition happens whole or not at all. Every
//! transition is idempotent, so a redelivered event changes nothing and gets the same answer.

mod budgets;
mod connection;
mod dashboard;
mod deadlines;
mod fairness;
mod fleet;
mod handoffs;
mod keys;
mod reads;
mod records;
mod rows;
mod scripts;
mod sentinel;
mod store;
mod story;
mod waits;

pub use budgets::{BudgetState, Defined};
pub(crate) use connection::seed_urls;
pub use connection::{Connection, redis_client};
pub use dashboard::{AgentLease, DepartedAgent};
pub use deadlines::{Deadline, DeadlineKind, DeadlineOutcome};
pub use fairness::TenantCounts;
pub use fleet::{FleetCache, Refresh};
pub use handoffs::{
    AnswerOutcome, BeginHandoff, BeginOutcome, GrowOutcome, GrowRequest, HandoffRecord,
    HandoffVerdict, Refusal,
};
pub use keys::Keys;
pub use records::{
    CancelOutcome, CompleteOutcome, Completion, DependencyOutcome, DeregisterOutcome,
    ExpireOutcome, GrantOutcome, GrantRequest, HeartbeatOutcome, QueuedTask, RequeueOutcome,
    ResolveOutcome, SubmitOutcome, SubmitRequest,
};
pub use sentinel::SentinelConnection;
pub use store::{CompletedBatch, Store};
pub use story::TIMELINE_MAX_S;
