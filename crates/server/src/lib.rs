//! # switchyard-server
//!
//! The optimizer service: stateless replicas that pull agents' events from JetStream, apply them
//! through atomic Redis scripts, dispatch queued work, and publish grants and replies. Several
//! replicas run side by side; correctness comes from the scripts and idempotent event handling,
//! never from in-process state.
//!
//! ## Layout
//!
//! * [`state`] — the shared state in Redis: key names (the only module that builds them), one Lua
//!   script per state transition (`src/state/lua/*.lua`, batch scripts where a pulled batch pays),
//!   each checking everything before its first write so a transition either happens whole or not
//!   at all, and each idempotent; and the fleet cache a replica keeps from the fleet log.
//! * [`streams`] — the events stream, the dead-letter and messages streams, and the optimizer
//!   replicas' durable consumers, created idempotently at start.
//! * [`optimizer`] — the replica itself: the control, submit and core lanes, dispatch rounds,
//!   grant resends, maintenance, the HTTP endpoints. `run(config, shutdown)` lets tests and the
//!   demo run replicas in-process.
//! * [`config`] — the one typed configuration (`config/default.toml`, a file, the environment),
//!   validated whole.
//! * [`dashboard`] — the web dashboard (embedded page and JSON views) on the metrics listener.
//! * [`metrics`] — every metric name of the service, built in one place.
//! * [`build`] — the version and commit of this build (`--version`, `switchyard_build_info`).
//!
//! Below it: `switchyard-decision` (what to decide), `switchyard-protocol` (the wire) and
//! `switchyard-client`'s transport (NATS).

pub mod build;
pub mod config;
pub mod dashboard;
pub mod metrics;
pub mod optimizer;
pub mod state;
pub mod streams;
