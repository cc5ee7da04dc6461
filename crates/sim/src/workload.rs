//! The simulator's workload format (TOML), field by field in `docs/workloads.md`.
//!
//! A workload describes the fleet (agent types with their capacities and their *hidden* true
//! speed and failure rate per task type), scheduled agent events (degrade, die), the task stream
//! (arrivals, task types, dependency shape) and the retry policy. Unknown fields are refused, and
//! every semantic problem is reported at once (see [`WorkloadError`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use switchyard_decision::Resources;

/// A whole simulation scenario.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Name shown in reports; the CLI uses the file stem when empty.
    #[serde(default)]
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: String,
    /// Seed of every random draw: same seed, same result.
    pub seed: u64,
    /// Weight of the newest completion in scores and patterns (the optimizer's LEARNING_RATE).
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Candidates planned per task (the optimizer's `max_candidates`).
    #[serde(default = "default_max_candidates")]
    pub max_candidates: usize,
    /// Queued tasks examined per dispatch round (the optimizer's `dispatch_window`).
    #[serde(default = "default_dispatch_window")]
    pub dispatch_window: usize,
    /// The fleet.
    pub agent_types: Vec<AgentTypeSpec>,
    /// Scheduled changes to single agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<AgentEventSpec>,
    /// The task stream.
    pub tasks: TaskStreamSpec,
    /// What happens to failed attempts.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Tenant weights (the optimizer's `[tenants] weights`); a tenant not listed weighs 1.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, f64>,
    /// Hold an agent for a head task that fits nowhere (the optimizer's
    /// `coordination.head_reservation`).
    #[serde(default = "yes")]
    pub head_reservation: bool,
    /// Shared budgets the task types draw from (as the optimizer's `[[budgets]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetSpec>,
}

/// One shared budget, as the optimizer's config defines it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    pub name: String,
    pub kind: BudgetKindSpec,
    /// rate: units per period; concurrency: slots.
    pub limit: u64,
    /// rate: the period in seconds (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_s: Option<f64>,
    /// rate: the bucket size (default `limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKindSpec {
    Rate,
    Concurrency,
}

impl BudgetSpec {
    pub fn period_ms(&self) -> i64 {
        (self.period_s.unwrap_or(60.0) * 1000.0).round() as i64
    }

    /// The token-bucket definition of a rate budget.
    pub fn rate(&self) -> switchyard_decision::budget::Rate {
        switchyard_decision::budget::Rate {
            limit: self.limit as i64,
            period_ms: self.period_ms(),
            burst: self.burst.unwrap_or(self.limit) as i64,
        }
    }
}

/// One kind of agent and how many of them there are.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTypeSpec {
    /// Type name, also the `agent_type` strategies see.
    pub name: String,
    /// Number of agents of this type.
    pub count: u32,
    /// Capacity in whole units per resource kind (cpu, memory, tokens, time).
    pub capacity: BTreeMap<String, f64>,
    /// Hidden truth per task type; task types not listed get [`TruthSpec::default`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub truth: BTreeMap<String, TruthSpec>,
    /// `capacity` in milli-units, filled in by validation.
    #[serde(skip)]
    pub capacity_milli: Resources,
}

/// How an agent type really performs on one task type; strategies never see this.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TruthSpec {
    /// Actual duration = estimated × speed × noise (so 0.5 is twice as fast as estimated).
    #[serde(default = "one")]
    pub speed: f64,
    /// Probability that one attempt fails.
    #[serde(default)]
    pub failure_rate: f64,
    /// Log-space standard deviation of the mean-1 log-normal noise on the duration.
    #[serde(default)]
    pub noise: f64,
}

impl Default for TruthSpec {
    fn default() -> Self {
        TruthSpec {
            speed: 1.0,
            failure_rate: 0.0,
            noise: 0.0,
        }
    }
}

/// A scheduled change to one agent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEventSpec {
    /// Virtual time of the event, seconds from the start.
    pub at_s: f64,
    /// Which agent.
    pub agent: AgentRef,
    /// What happens.
    pub kind: AgentEventKind,
    /// For `degrade`: multiplier on the agent's durations from then on (2.0 = half as fast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_factor: Option<f64>,
}

/// An agent named by its type and its index within the type (0-based).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRef {
    /// The agent type's name.
    #[serde(rename = "type")]
    pub agent_type: String,
    /// Index within the type, `0..count`.
    pub index: u32,
}

/// Kinds of agent event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentEventKind {
    /// The agent becomes slower (`speed_factor`) for attempts started from then on.
    Degrade,
    /// The agent disappears; its running tasks are re-queued.
    Die,
}

/// The task stream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskStreamSpec {
    /// Number of tasks submitted.
    pub count: u32,
    /// How arrivals are spaced.
    pub arrival: ArrivalKind,
    /// For `poisson`: mean arrivals per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// For `bursty`: tasks per burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_size: Option<u32>,
    /// For `bursty`: seconds between bursts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_every_s: Option<f64>,
    /// Task types, drawn by weight.
    pub types: Vec<TaskTypeSpec>,
    /// Dependency DAG shape.
    #[serde(default)]
    pub dependencies: DependencySpec,
}

/// Arrival processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArrivalKind {
    /// Exponential inter-arrival times with mean `1 / rate_per_s`.
    Poisson,
    /// `burst_size` tasks at once every `burst_every_s` seconds.
    Bursty,
}

/// One task type.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTypeSpec {
    /// Type name, also the `task_type` strategies see.
    pub name: String,
    /// Relative frequency.
    #[serde(default = "one")]
    pub weight: f64,
    /// Inclusive priority range `[low, high]`, within 0..=10; drawn uniformly.
    pub priority: [u8; 2],
    /// Resources one task needs, whole units per kind.
    pub resources: BTreeMap<String, f64>,
    /// Inclusive range of the estimated duration in seconds; drawn uniformly.
    pub estimated_duration_s: [f64; 2],
    /// Schedule-to-start limit, seconds (the service's `queue_timeout_s`): a task of this type
    /// not granted this long after it arrived, or after it re-entered the queue, fails.
    /// Absent or 0: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout_s: Option<f64>,
    /// Start-to-close limit of one attempt, seconds (`run_timeout_s`): an attempt still running
    /// then is stopped, its reservation released, and the task retried or failed. Absent or 0:
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_timeout_s: Option<f64>,
    /// Attempts of a task of this type; absent: `[retry] max_attempts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The tenant tasks of this type belong to (`default` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// What one task draws from each budget (its estimate, for a rate budget).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub budgets: BTreeMap<String, u64>,
    /// σ of the mean-1 log-normal factor between a rate draw and the actual usage reported at
    /// completion (0: usage = draw).
    #[serde(default)]
    pub usage_noise: f64,
    /// `resources` in milli-units, filled in by validation.
    #[serde(skip)]
    pub required_milli: Resources,
}

/// Shape of the dependency DAG.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DependencySpec {
    /// Probability that a task depends on earlier tasks at all.
    #[serde(default)]
    pub probability: f64,
    /// Most parents one task has (drawn uniformly in `1..=fan_in`).
    #[serde(default = "one_u32")]
    pub fan_in: u32,
    /// Longest chain: a task never gets a parent whose depth is already `max_depth`.
    #[serde(default = "default_max_depth")]
    pub max_depth: u32,
    /// Parents are drawn among the `lookback` tasks submitted just before.
    #[serde(default = "default_lookback")]
    pub lookback: u32,
}

impl Default for DependencySpec {
    fn default() -> Self {
        DependencySpec {
            probability: 0.0,
            fan_in: 1,
            max_depth: default_max_depth(),
            lookback: default_lookback(),
        }
    }
}

/// Retry policy for failed attempts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts per task, first included; after the last failure the task fails for good.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before re-queueing after the first failure; doubled for each further failure...
    #[serde(default = "one")]
    pub backoff_s: f64,
    /// ... up to this (the service's `coordination.retry_backoff_max_s`, default 60).
    #[serde(default = "default_backoff_max_s")]
    pub backoff_max_s: f64,
}

fn default_backoff_max_s() -> f64 {
    60.0
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: default_max_attempts(),
            backoff_s: 1.0,
            backoff_max_s: default_backoff_max_s(),
        }
    }
}

/// Why a workload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkloadError {
    /// Not valid TOML, a wrong type, or an unknown field.
    #[error("workload is not valid TOML for the format: {0}")]
    Syntax(String),
    /// Parsed, but the values do not make sense; every problem is listed.
    #[error("invalid workload:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Workload {
    /// Parses and validates a workload.
    pub fn parse(text: &str) -> Result<Workload, WorkloadError> {
        let mut workload: Workload =
            toml::from_str(text).map_err(|e| WorkloadError::Syntax(e.to_string()))?;
        let errors = super::validate::validate(&mut workload);
        if errors.is_empty() {
            Ok(workload)
        } else {
            Err(WorkloadError::Invalid(errors))
        }
    }

    /// Total number of agents.
    pub fn agent_count(&self) -> usize {
        self.agent_types.iter().map(|t| t.count as usize).sum()
    }

    /// The weight of a tenant (1 when not listed).
    pub fn tenant_weight(&self, tenant: &str) -> f64 {
        self.tenants.get(tenant).copied().unwrap_or(1.0)
    }

    /// The truth for an agent type (by index) on a task type (by name).
    pub fn truth(&self, agent_type: usize, task_type: &str) -> TruthSpec {
        self.agent_types
            .get(agent_type)
            .and_then(|t| t.truth.get(task_type))
            .copied()
            .unwrap_or_default()
    }
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn one_u32() -> u32 {
    1
}
pub(crate) fn default_learning_rate() -> f64 {
    0.1
}
pub(crate) fn default_max_candidates() -> usize {
    4
}
pub(crate) fn default_dispatch_window() -> usize {
    128
}
fn default_max_depth() -> u32 {
    8
}
fn default_lookback() -> u32 {
    20
}
fn default_max_attempts() -> u32 {
    3
}

#[cfg(test)]
#[path = "workload_tests.rs"]
mod tests;
