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
//!   that spreads a batch across the fleet, and sampling that keeps large fleets cheap.
//! * [`strategies`] — the seed's strategies (round-robin, priority-based, load-balanced,
//!   adaptive, historical) and [`StrategyKind`] to select them by name.
//! * [`budget`] — shared budgets: token-bucket and concurrency arithmetic, mirrored in Lua.
//! * [`learning`] — the performance-score update, the reference `complete_task.lua` implements.
//! * [`patterns`] — success and duration learned per (task type, agent type).

pub mod budget;
pub mod learning;
pub mod patterns;
pub mod placement;
pub mod resources;
pub mod strategies;
pub mod task_state;

pub use learning::{NEUTRAL_SCORE, updated_score};
pub use patterns::{PatternStats, PatternTable};
pub use placement::{
    AgentView, CandidateScore, DecisionContext, Explanation, LeastLoaded, PlannedGrant, Strategy,
    TaskView, plan_batch, plan_batch_explained, plan_batch_with, sample_candidates,
};
pub use resources::{MAX_AMOUNT, ResourceError, ResourceKind, Resources};
pub use strategies::{Adaptive, Historical, LoadBalanced, PriorityBased, RoundRobin, StrategyKind};
pub use task_state::{InvalidTransition, TaskEvent, TaskState};
