//! The simulator: a deterministic discrete-event simulation of a fleet that drives the very same
//! placement code as the optimizer.
//!
//! Pure apart from the CLI reading the workload file: a virtual clock, a seeded random number
//! generator, and no I/O. Every [`switchyard_decision::StrategyKind`] plus an [`oracle`] that knows
//! the workload's hidden truth run on the same task stream, and [`report`] compares them.
//!
//! * [`workload`] — the TOML workload format (documented in `docs/workloads.md`), validated by
//!   `validate`.
//! * [`tasks`] — the task stream drawn from the workload's seed.
//! * [`engine`] — the event loop: arrivals, dispatch through `plan_batch`, completions, retries,
//!   agent events, learning.
//! * `state` — each task's progress and each agent's reservations. A task's lifecycle is the
//!   service's own [`switchyard_decision::TaskState`], moved only through its transition
//!   function (a broken transition ends the run with [`SimError::Invariant`]); what only a
//!   simulation has (not arrived yet, a retry back-off, the agent and grant number of the running
//!   attempt) is data beside it, not further states. A failed attempt that will be retried is
//!   `Requeued` (granted → queued) and waits out its back-off before it is ready again.
//! * [`oracle`] — the reference strategy that knows true speeds and failure rates.
//! * [`report`] — metrics per strategy, `run_all`, the text table and JSON; [`plot`] the SVG chart.
//! * [`outcome`] — the per-task record of one run.
//! * [`rng`] — SplitMix64 and the distributions drawn from it.
//! * [`generate`] — random heterogeneous workloads (`sim --generate`), and the offered load of
//!   any workload; [`distribution`] — how each strategy does across many workloads.

pub mod distribution;
pub mod engine;
pub mod generate;
pub mod oracle;
pub mod outcome;
pub mod plot;
pub mod report;
pub mod rng;
mod state;
pub mod tasks;
mod validate;
pub mod workload;

pub use engine::{Placer, SimError, simulate};
pub use outcome::{Outcome, TaskRecord};
pub use plot::render_svg;
pub use report::{ORACLE, SimReport, StrategyMetrics, TenantShare, TypeWait, run_all};
pub use validate::{MAX_AGENTS, MAX_TASKS};
pub use workload::{Workload, WorkloadError};

/// Parses a workload, naming it `default_name` (the CLI passes the file stem) when it has no
/// `name` of its own.
pub fn parse_named(text: &str, default_name: &str) -> Result<Workload, WorkloadError> {
    let mut workload = Workload::parse(text)?;
    if workload.name.is_empty() {
        workload.name = default_name.to_owned();
    }
    Ok(workload)
}
