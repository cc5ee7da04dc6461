//! Pure decision logic: no I/O, no clock, no randomness.
//!
//! Everything the optimizer *decides* lives here, separated from how it talks to NATS and Redis,
//! so the rules can be unit-tested exhaustively and reasoned about without a running system, and
//! so the simulator drives the very same code as production.
//! Inputs that vary (snapshots of agents and tasks, learned patterns, sequence numbers) are passed
//! in by callers; the same inputs always give the same answer.
//!
//! * [`resources`] — resource vectors in exact integer milli-units, validation of wire amounts,
//!   fit checks and utilization.
//! * [`task_state`] — the task lifecycle state machine: the one the Redis Lua scripts implement
//!   (their typed answers carry a [`TaskState`]), and the one the simulator and the live replay
//!   keep their tasks in.
//! * [`placement`] — the [`Strategy`] seam, the default [`LeastLoaded`] strategy, batch planning
//!   that spreads a batch across the fleet, and sampling that keeps large fleets cheap; and the
//!   head reservation ([`choose_hold_agent`], [`may_backfill`], [`beside_hold`]): which agent is
//!   held for a head task that fits nowhere, and what may still be granted there, the rules
//!   `grant_tasks.lua` enforces and the simulator follows.
//! * [`fairness`] — weighted fairness between tenants (start-time fair queuing): a task's place
//!   in the queue ([`FairClock`], [`task_cost`]), the arithmetic `submit_task.lua` and
//!   `grant_tasks.lua` mirror.
//! * [`strategies`] — the seed's strategies (round-robin, priority-based, load-balanced,
//!   adaptive, historical) and [`StrategyKind`] to select them by name.
//! * [`budget`] — shared budgets: token-bucket and concurrency arithmetic, mirrored in Lua.
//! * [`learning`] — the performance-score update, the reference `complete_task.lua` implements.
//! * [`patterns`] — success and duration learned per (task type, agent type).
//! * [`retry`] — the back-off of a failed attempt before it runs again.

pub mod budget;
pub mod fairness;
pub mod learning;
pub mod patterns;
pub mod placement;
pub mod resources;
pub mod retry;
pub mod strategies;
pub mod task_state;

pub use fairness::{DEFAULT_TENANT, FairClock, task_cost};
pub use learning::{AgentLearning, Completion, NEUTRAL_SCORE, updated_score};
pub use patterns::{PatternStats, PatternTable};
pub use placement::{
    AgentView, CandidateScore, DecisionContext, Explanation, HeadHold, LeastLoaded, PlannedGrant,
    Strategy, TaskView, beside_hold, choose_hold_agent, may_backfill, plan_batch,
    plan_batch_explained, plan_batch_with, sample_candidates,
};
pub use resources::{MAX_AMOUNT, ResourceError, ResourceKind, Resources};
pub use retry::{retry_backoff_ms, retry_backoff_s};
pub use strategies::{Adaptive, Historical, LoadBalanced, PriorityBased, RoundRobin, StrategyKind};
pub use task_state::{InvalidTransition, TaskEvent, TaskState};
