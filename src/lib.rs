//! # Switchyard
//!
//! A coordination service for fleets of software agents. Agents register what they can carry
//! (cpu, memory, LLM tokens, time); tasks arrive with a priority, resource needs and dependencies;
//! stateless optimizer replicas decide which agent runs each task, queue what does not fit, and
//! hand queued work out as capacity frees up.
//!
//! ## Layout
//!
//! The workspace's crates are the layers, from the bottom up; each may use only those above it
//! in this list, and the compiler holds them to it:
//!
//! * `switchyard-decision` (`crates/decision`) — pure decision logic with no I/O and no clock:
//!   resource vectors in exact milli-units, the task state machine, the placement strategies.
//! * `switchyard-protocol` (`crates/protocol`) — the JSON wire protocol: envelopes, payloads,
//!   validation of untrusted input, and the NATS subject map. No I/O.
//! * `switchyard-client` (`crates/client`) — what a Rust agent or orchestrator needs: the
//!   `Coordinator`, the `Agent` handle, the inter-agent protocol, the NATS transport and the error
//!   type. No Redis, no Prometheus, no clap.
//! * `switchyard-server` (`crates/server`) — the optimizer service: Redis state and Lua scripts,
//!   the streams, the replicas, configuration and metrics.
//! * `switchyard-sim` (`crates/sim`) — the deterministic discrete-event simulator.
//! * `switchyard-harness` (`crates/harness`) — real `nats-server` and `redis-server` child
//!   processes on free loopback ports, for tests, the demo and benchmarks.
//! * this crate, `switchyard` — the command-line tools: thin binaries (`bin/`) over the [`cli`]
//!   module, which holds the clap definitions and one handler per subcommand; what they drive:
//!   simulated fleets, the demo, the benchmarks and the live replay of a simulator workload
//!   ([`fleet`]); and the end-to-end tests (`tests/`).

pub mod cli;
pub mod fleet;
