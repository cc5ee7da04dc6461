//! # Switchyard
//!
//! A coordination service for fleets of software agents. Agents register what they can carry
//! (cpu, memory, LLM tokens, time); tasks arrive with a priority, resource needs and dependencies;
//! stateless optimizer replicas decide which agent runs each task, queue what does not fit, and
//! hand queued work out as capacity frees up.
//!
//! ## Layout
//!
//! The folders are the layers, from the wire inwards:
//!
//! * [`protocol`] — the JSON wire protocol: the envelope every message shares, the payload of each
//!   message type, validation of untrusted input, and the NATS subject map (the only module that
//!   builds subject strings).
//! * [`decision`] — pure decision logic with no I/O and no clock: resource vectors in exact
//!   milli-units, the task state machine, and the placement [`decision::Strategy`] seam.
//! * [`state`] — the shared state in Redis: key names (the only module that builds them), one Lua
//!   script per state transition (`src/state/lua/*.lua`, batch scripts where a pulled batch pays),
//!   each checking everything before its first write so a transition either happens whole or not
//!   at all, and each idempotent; and the fleet cache a replica keeps from the fleet log.
//! * [`transport`] — NATS JetStream: streams and consumers created idempotently, the server version
//!   check, publishing with `Nats-Msg-Id` for dedupe, the one pull loop (`Puller`) and the one map
//!   of callers waiting for answers (`Waiters`).
//! * [`optimizer`] — the stateless optimizer service: pulls events in batches, applies them through
//!   the Redis scripts, dispatches queued work, publishes grants and replies. `run(config, shutdown)`
//!   lets tests run replicas in-process.
//! * [`client`] — the client library: an orchestrator's `Coordinator` (allocate / complete tasks) and
//!   an `Agent` handle with its stream of grants. Clients speak NATS only, never Redis.
//! * [`comm`] — the inter-agent protocol (`CommunicationProtocol`): four delivery modes, a
//!   bounded priority inbox, acknowledgments, TTL, duplicate suppression, handoffs and resource
//!   requests.
//! * [`harness`] — starts real `nats-server` and `redis-server` child processes on free loopback
//!   ports for tests and the demo.
//! * [`sim`] — the deterministic discrete-event simulator behind `switchyard sim`.
//! * [`fleet`] — simulated agent fleets and the demo / benchmark drivers behind the CLI, and the
//!   live replay of a simulator workload through the real optimizer (`sim --live`).
//! * [`config`], [`metrics`], [`error`] — typed configuration, metric names, error kinds.
//!
//! The binaries in `bin/` are thin wrappers over these modules.

pub mod client;
pub mod comm;
pub mod config;
pub mod decision;
pub mod error;
pub mod fleet;
pub mod harness;
pub mod metrics;
pub mod optimizer;
pub mod protocol;
pub mod sim;
pub mod state;
pub mod transport;

pub use error::{Error, ErrorKind};
