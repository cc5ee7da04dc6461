//! The client library: how orchestrators and agents written in Rust talk to Switchyard. It
//! speaks NATS only (agents never touch Redis); anything here can be done from another language
//! by following `docs/protocol.md`.
//!
//! * [`Coordinator`] — for orchestrators: `allocate_task`, `submit_task`, `register_agent`,
//!   `status`, and a stream of replies and error reports.
//! * [`Agent`] — for agents: registers itself, receives its grants, reports completions.

mod agent;
mod coordinator;
mod router;

pub use agent::{Agent, GrantStream};
pub use coordinator::{Allocation, Coordinator};
pub use router::ClientEvent;

use std::time::Duration;

/// How long a client waits for the coordinator's reply before giving up with a retryable error.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);
