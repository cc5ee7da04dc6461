//! # switchyard-client
//!
//! How orchestrators and agents written in Rust talk to Switchyard. It speaks NATS only: an agent
//! that depends on this crate compiles no Redis client, no Prometheus and no command-line parser.
//! Anything here can be done from another language by following `docs/protocol.md`.
//!
//! ## Layout
//!
//! * [`Coordinator`] — for orchestrators: `allocate_task`, `submit_task`, `register_agent`,
//!   `status`, and a stream of replies and error reports.
//! * [`Agent`] — for agents: registers itself, receives its grants, reports completions.
//! * [`comm`] — the inter-agent protocol (`CommunicationProtocol`): four delivery modes, a bounded
//!   priority inbox, acknowledgments, TTL, duplicate suppression, handoffs and resource requests.
//! * [`transport`] — NATS: connecting with a server version check, publishing with `Nats-Msg-Id`,
//!   the one pull loop (`Puller`) and the one map of callers waiting for answers (`Waiters`);
//!   the optimizer service uses the same transport.
//! * [`error`] — the error type every Switchyard crate returns, each kind saying whether to retry.
//!
//! The wire types come from `switchyard-protocol`, re-exported as [`protocol`].

mod agent;
mod calls;
pub mod comm;
mod coordinator;
pub mod error;
mod router;
mod sync;
pub mod transport;

pub use error::{Error, ErrorKind};
pub use switchyard_protocol as protocol;

pub use agent::{Agent, GrantStream, Work};
pub use calls::request_status;
pub use coordinator::{Allocation, Cancellation, Coordinator};
pub use router::ClientEvent;

use std::time::Duration;

/// How long a client waits for the coordinator's reply before giving up with a retryable error.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);
