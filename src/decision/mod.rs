//! Pure decision logic: no I/O, no clock, no randomness.
//!
//! Everything the optimizer *decides* lives here, separated from how it talks to NATS and Redis,
//! so the rules can be unit-tested exhaustively and reasoned about without a running system.
//! Inputs that vary (snapshots of agents and tasks, seeds, cursors) are passed in by callers;
//! the same inputs always give the same answer.
//!
//! * [`resources`] — resource vectors in exact integer milli-units, validation of wire amounts,
//!   fit checks and utilization.
//! * [`task_state`] — the task lifecycle state machine; the reference the Redis Lua scripts
//!   implement.
//! * [`placement`] — the [`Strategy`] seam, the default [`LeastLoaded`] strategy, and batch
//!   planning that spreads a batch across the fleet.

pub mod placement;
pub mod resources;
pub mod task_state;

pub use placement::{AgentView, LeastLoaded, PlannedGrant, Strategy, TaskView, plan_batch};
pub use resources::{MAX_AMOUNT, ResourceError, ResourceKind, Resources};
pub use task_state::{InvalidTransition, TaskEvent, TaskState};
