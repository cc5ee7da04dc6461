//! Payloads of the coordinator's messages. Resource amounts on the wire are plain numbers in
//! whole units (cpu cores, memory MB, tokens, seconds), keyed by resource name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `AGENT_REGISTER`: an agent announces what it can carry. Re-registering updates capacity and
/// revives an agent that was marked dead or deregistered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRegister {
    pub agent_id: String,
    pub agent_type: String,
    /// Capacity per resource: `cpu`, `memory`, `tokens`, `time`. Absent means none.
    pub max_resources: BTreeMap<String, f64>,
    /// The seed's PRIORITY resource: a weight strategies may use to prefer this agent.
    #[serde(default = "default_priority_weight")]
    pub priority_weight: f64,
    /// Liveness lease in seconds: an agent silent (no HEARTBEAT) for longer is marked dead and its
    /// tasks go back to the queue. Absent or 0: no lease, the agent lives until it deregisters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_s: Option<f64>,
}

/// `HEARTBEAT`: the agent is alive. Renews its lease (timed by the coordinator's clock, not the
/// agent's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub agent_id: String,
}

/// `GRANT_ACK`: an agent received these grants (core NATS, `<prefix>.grant_ack.<agent_id>`).
/// Until a grant is acknowledged (or its task completed), the optimizers send it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantAck {
    pub agent_id: String,
    pub grants: Vec<GrantRef>,
}

/// One grant: its task and grant number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantRef {
    pub task_id: String,
    pub grant_seq: u64,
}

/// Most grants one GRANT_ACK may acknowledge.
pub const MAX_GRANTS_PER_ACK: usize = 256;

fn default_priority_weight() -> f64 {
    1.0
}

/// `AGENT_DEREGISTER`: an agent leaves; its granted tasks go back to the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDeregister {
    pub agent_id: String,
}

/// `TASK_SUBMIT`: an orchestrator asks for a task to be placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSubmit {
    pub task_id: String,
    #[serde(default = "default_task_type")]
    pub task_type: String,
    /// 0 (lowest) ..= 10 (highest), as in the seed. Higher priority is granted first.
    #[serde(default = "default_task_priority")]
    pub priority: u8,
    #[serde(default)]
    pub required_resources: BTreeMap<String, f64>,
    #[serde(default)]
    pub estimated_duration_s: f64,
    /// Task ids that must complete successfully before this one is queued.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// How to place this task (`least_loaded`, `round_robin`, `priority_based`, `load_balanced`,
    /// `adaptive`, `historical`); absent: the optimizer's default strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Ask for the placement decision to be explained: the grant then carries an
    /// [`explanation`](TaskGrant::explanation).
    #[serde(default, skip_serializing_if = "is_false")]
    pub explain: bool,
    /// Which COORDINATOR_REPLY messages the submitter wants for this task: `all` (default),
    /// `final` (only completed / failed) or `none`. Refusals always come as ERROR_REPORT.
    #[serde(default, skip_serializing_if = "Replies::is_all")]
    pub replies: Replies,
    /// Schedule-to-start limit, seconds: a task not granted this long after its submit (waiting
    /// on dependencies included), or after it re-entered the queue (a retry, or its agent left),
    /// fails with the reason `queue_timeout`. 0: none. Absent: the optimizer's default
    /// (`coordination.queue_timeout_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout_s: Option<f64>,
    /// Start-to-close limit of one attempt, seconds: a grant still running this long after it
    /// was made is taken back (its agent told to stop with a TASK_CANCEL notice whose reason is
    /// `run_timeout`), and the task is retried or fails with the reason `run_timeout`. 0: none.
    /// Absent: the optimizer's default (`coordination.run_timeout_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_timeout_s: Option<f64>,
    /// How many attempts the task may have (>= 1): a failed attempt (reported, or past its run
    /// timeout) is retried while attempts remain. Absent: `coordination.max_attempts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Base of the back-off before a retry, seconds, doubled per failed attempt up to
    /// `coordination.retry_backoff_max_s`. Absent: `coordination.retry_backoff_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_s: Option<f64>,
    /// The tenant the task belongs to, for fairness between tenants (1-128 of
    /// `[A-Za-z0-9_.:-]`); absent: the tenant `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The shared budgets the task draws from and how much (`{"openai-tpm": 3000}`): a rate
    /// budget's estimated units, a concurrency budget's slots (1 usually). Every name must be a
    /// budget the optimizer defines (`unknown_budget`); granted only when all allow the draw.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub budgets: BTreeMap<String, u64>,
}

/// Which COORDINATOR_REPLY messages a sender wants. Fewer replies are fewer messages: a client
/// that does not wait for an answer should say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replies {
    /// Every reply: for a submit, queued / waiting / granted and then completed / failed.
    #[default]
    All,
    /// Only the final outcome (completed, failed or cancelled).
    Final,
    /// No replies at all.
    None,
}

impl Replies {
    pub fn as_str(self) -> &'static str {
        match self {
            Replies::All => "all",
            Replies::Final => "final",
            Replies::None => "none",
        }
    }

    /// Reads the stored name back; anything unknown (an older record) means `all`.
    pub fn parse(name: &str) -> Replies {
        match name {
            "final" => Replies::Final,
            "none" => Replies::None,
            _ => Replies::All,
        }
    }

    fn is_all(&self) -> bool {
        *self == Replies::All
    }

    /// Whether a reply with this status goes out.
    pub fn wants(self, status: ReplyStatus) -> bool {
        match self {
            Replies::All => true,
            Replies::Final => matches!(
                status,
                ReplyStatus::Completed | ReplyStatus::Failed | ReplyStatus::Cancelled
            ),
            Replies::None => false,
        }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn default_task_type() -> String {
    "default".to_string()
}

fn default_task_priority() -> u8 {
    5
}

/// `TASK_REQUEST`: the grant, sent to the chosen agent on its own subject. The agent's resources
/// for this task are already reserved when it arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskGrant {
    pub task_id: String,
    pub task_type: String,
    pub agent_id: String,
    pub priority: u8,
    pub resources: BTreeMap<String, f64>,
    pub estimated_duration_s: f64,
    /// Increments each time the task is granted again (after its agent died or left).
    pub grant_seq: u64,
    /// Who submitted the task (replies go to them).
    pub submitter: String,
    /// Why this agent: present when the submit asked for it (`explain`), except on a grant
    /// re-published after an optimizer replica died between committing and publishing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<GrantExplanation>,
}

/// How a grant's agent was chosen: the strategy, and every candidate it ranked with its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantExplanation {
    /// The strategy that decided (`least_loaded`, `round_robin`, ...).
    pub strategy: String,
    /// The agent granted. Normally the first candidate; a later one when the better ones filled
    /// up between the decision and the grant.
    pub chosen: String,
    /// The agents the strategy ranked (on a fleet of more than 256 agents, its sample of 64),
    /// best first.
    pub candidates: Vec<ExplainedCandidate>,
}

/// One ranked candidate in a [`GrantExplanation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainedCandidate {
    pub agent_id: String,
    /// Higher is better; comparable only within one explanation (each strategy has its own
    /// scale).
    pub score: f64,
}

/// `TASK_COMPLETE`: the agent reports the outcome; its reservation is released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskComplete {
    pub task_id: String,
    pub agent_id: String,
    pub success: bool,
    #[serde(default)]
    pub execution_time_s: f64,
    #[serde(default)]
    pub performance_metrics: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The `grant_seq` of the grant being reported. Optional, but recommended: with it, a late
    /// report about an earlier grant of the same task is refused (`stale_grant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_seq: Option<u64>,
    /// `all` (default): the agent is told the verdict in a COORDINATOR_REPLY; `none` (or
    /// `final`): only a refusal is reported (ERROR_REPORT), which saves a message per task.
    #[serde(default, skip_serializing_if = "Replies::is_all")]
    pub replies: Replies,
    /// What the task actually used, by unit (`{"tokens": 2500, "requests": 1}`): each rate budget
    /// it drew from whose unit is named here is reconciled (the difference between the draw and
    /// the use refunded or charged). Absent: the draws stand.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, u64>,
}

/// `TASK_CANCEL` (an event): the submitter of a task, or an operator, cancels it. Sent on
/// `<prefix>.task_cancel.<sender>` by the submitter, or on `<prefix>.task_cancel.operator.<sender>`
/// by an operator (in a secured deployment only the operator role may publish there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCancel {
    pub task_id: String,
    /// Why, for the record and the agent (free text, at most 256 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `TASK_CANCEL` (a notice): the optimizer tells the agent holding a granted task that the task
/// was cancelled, or that its grant ran past its run timeout (`reason` [`RUN_TIMEOUT`]: the
/// reservation is already released and a report of that grant is refused `stale_grant`; this
/// notice is sent once, and the agent need not confirm it). It travels on the agent's grant subject `<prefix>.task_request.<agent_id>` and
/// is sent again until the agent confirms, by reporting the grant failed (TASK_COMPLETE with
/// `success: false`), or its lease ends; either releases the reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCancelNotice {
    pub task_id: String,
    pub agent_id: String,
    /// The grant being cancelled: a notice for an earlier grant of the task is to be ignored.
    pub grant_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The `reason` of a TASK_CANCEL notice for a grant past its run timeout, and of a task that
/// failed for it.
pub const RUN_TIMEOUT: &str = "run_timeout";
/// The reason of a task that was not granted within its queue timeout.
pub const QUEUE_TIMEOUT: &str = "queue_timeout";

impl TaskCancelNotice {
    /// Whether the grant was stopped for running past its run timeout (not cancelled by a
    /// user): the task may run again elsewhere, and the agent need not confirm.
    pub fn is_run_timeout(&self) -> bool {
        self.reason.as_deref() == Some(RUN_TIMEOUT)
    }
}

/// Outcome of an operation, in a `COORDINATOR_REPLY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyStatus {
    Registered,
    Deregistered,
    /// The task was granted; `agent_id` says to whom.
    Granted,
    /// The task waits in the priority queue for capacity.
    Queued,
    /// The task waits for its dependencies.
    Waiting,
    Completed,
    Failed,
    /// The task was cancelled (a final status, like completed and failed).
    Cancelled,
    /// A granted task's cancel is under way: its agent has been told, and the task becomes
    /// `cancelled` when the agent confirms or its lease ends.
    Cancelling,
}

/// `COORDINATOR_REPLY`: the coordinator's answer to an operation, sent to the operation's sender
/// with `correlation_id` = the operation's `message_id`. A task can get several replies over its
/// life (queued, then granted); each carries the submit's message id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorReply {
    /// The operation answered, e.g. `task_submit`.
    pub op: String,
    pub status: ReplyStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `ERROR_REPORT`: why a message was refused. `code` is a stable, documented reason code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub code: String,
    pub message: String,
    /// The subject the offending message arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// `STATUS_QUERY`: asks for a [`CoordinationSync`] snapshot (core NATS request/reply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusQuery {
    /// Include the per-agent table.
    #[serde(default = "default_true")]
    pub include_agents: bool,
    /// Include what has been learned per (task type, agent type).
    #[serde(default)]
    pub include_patterns: bool,
    /// List up to this many waiting and queued tasks, first by priority, each with why it waits
    /// (capped at [`MAX_STATUS_TASKS`](crate::MAX_STATUS_TASKS)); 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub include_tasks: u32,
    /// Also list this one task, whatever its state, with why it waits if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl Default for StatusQuery {
    fn default() -> Self {
        StatusQuery {
            include_agents: true,
            include_patterns: false,
            include_tasks: 0,
            task_id: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// One agent's state in a [`CoordinationSync`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatusView {
    pub agent_id: String,
    pub agent_type: String,
    pub status: String,
    pub capacity: BTreeMap<String, f64>,
    pub reserved: BTreeMap<String, f64>,
    pub utilization: f64,
    pub performance_score: f64,
    pub active_tasks: u64,
    pub last_heartbeat_ms: u64,
    /// How long the agent takes relative to its type's learned pattern: `exp(pace)` (1: as its
    /// type; 8: eight times slower). 1 when nothing is learned yet or from an older server.
    #[serde(default = "one")]
    pub pace_factor: f64,
    /// How much more often than its type the agent fails: a moving average of
    /// `failed − (1 − type success)`, in `[-1, 1]` (0: as its type).
    #[serde(default)]
    pub failure_excess: f64,
    /// Changes in the agent's pace detected so far (each restarts what is learned about it).
    #[serde(default)]
    pub drifts: u64,
}

fn one() -> f64 {
    1.0
}

/// `COORDINATION_SYNC`: a snapshot of coordination state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordinationSync {
    pub queue_depth: u64,
    /// Counters since the store was created: submitted, granted, completed, failed, requeued,
    /// cancelled, timed_out (time limits that ran out), retried (failed attempts run again).
    pub counters: BTreeMap<String, u64>,
    pub agents: Vec<AgentStatusView>,
    /// Learned statistics per (task type, agent type), when asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<PatternRow>,
    /// Tasks waiting on dependencies (state `waiting`; not in `queue_depth`).
    #[serde(default)]
    pub waiting_depth: u64,
    /// Waiting and queued tasks with why each waits, when asked for (`include_tasks`, `task_id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<crate::TaskWaitView>,
    /// Per tenant (fairness between tenants), lifetime counts; absent before any tenant's task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, TenantCountsView>,
    /// The shared budgets the answering replica defines, as Redis holds them now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetView>,
    /// The story of the task named by `STATUS_QUERY.task_id`: what happened to it, oldest
    /// first (the newest `redis.story_max_entries`); absent when no task was named or nothing
    /// is recorded (unknown, expired, or submitted before stories were kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub story: Vec<crate::StoryEntry>,
}

/// One tenant's counts in a [`CoordinationSync`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantCountsView {
    /// Tasks of the tenant accepted (queued or waiting on dependencies).
    pub submitted: u64,
    /// Grants made to the tenant's tasks (a task granted again counts again).
    pub granted: u64,
}

/// One shared budget in a [`CoordinationSync`], at the Redis time of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetView {
    pub name: String,
    /// `rate` or `concurrency`.
    pub kind: String,
    /// rate: units per period; concurrency: slots.
    pub limit: u64,
    /// rate: the period in ms (0 for concurrency).
    #[serde(default)]
    pub period_ms: u64,
    /// rate: the bucket size (0 for concurrency).
    #[serde(default)]
    pub burst: u64,
    /// rate: the usage unit that reconciles it (empty for concurrency).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// rate: whole units available now; concurrency: free slots.
    pub available: u64,
    /// concurrency: slots held (0 for rate).
    #[serde(default)]
    pub in_use: u64,
    /// rate: units owed (usage beyond the draws), paid back by the refill (0 otherwise).
    #[serde(default)]
    pub debt: u64,
}

/// One (task type, agent type) pair's learned statistics in a [`CoordinationSync`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternRow {
    pub task_type: String,
    pub agent_type: String,
    pub attempts: u64,
    pub successes: u64,
    /// Moving average of success (1) and failure (0).
    pub success_ema: f64,
    /// Moving average of actual / estimated duration over successes (1.0 = as estimated).
    pub duration_ratio_ema: f64,
    /// Grants `adaptive` made to explore the pair (counted when granted).
    #[serde(default)]
    pub explorations: u64,
}

impl TaskSubmit {
    /// A task with the seed's defaults: type `default`, priority 5, no needs, no dependencies.
    pub fn new(task_id: impl Into<String>) -> TaskSubmit {
        TaskSubmit {
            task_id: task_id.into(),
            task_type: default_task_type(),
            priority: default_task_priority(),
            required_resources: BTreeMap::new(),
            estimated_duration_s: 0.0,
            dependencies: Vec::new(),
            strategy: None,
            explain: false,
            replies: Replies::All,
            queue_timeout_s: None,
            run_timeout_s: None,
            max_attempts: None,
            retry_backoff_s: None,
            tenant: None,
            budgets: BTreeMap::new(),
        }
    }

    /// Fails the task (`queue_timeout`) if it is not granted within `seconds` (0: no limit).
    pub fn queue_timeout(mut self, seconds: f64) -> Self {
        self.queue_timeout_s = Some(seconds);
        self
    }

    /// Stops an attempt that runs longer than `seconds` (`run_timeout`; 0: no limit).
    pub fn run_timeout(mut self, seconds: f64) -> Self {
        self.run_timeout_s = Some(seconds);
        self
    }

    /// Runs the task up to `attempts` times (>= 1) while attempts fail.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Waits `seconds` before the first retry, doubling for each later one (capped by the
    /// optimizer's `coordination.retry_backoff_max_s`).
    pub fn retry_backoff(mut self, seconds: f64) -> Self {
        self.retry_backoff_s = Some(seconds);
        self
    }

    /// Belongs to `tenant` (fairness between tenants).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Draws `amount` from the shared budget `name` (estimated tokens for a rate budget, slots for
    /// a concurrency budget).
    pub fn budget(mut self, name: impl Into<String>, amount: u64) -> Self {
        self.budgets.insert(name.into(), amount);
        self
    }

    pub fn task_type(mut self, task_type: impl Into<String>) -> Self {
        self.task_type = task_type.into();
        self
    }

    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Needs `amount` whole units of `resource` (`cpu`, `memory`, `tokens`, `time`).
    pub fn resource(mut self, resource: &str, amount: f64) -> Self {
        self.required_resources.insert(resource.to_string(), amount);
        self
    }

    pub fn estimated_duration(mut self, seconds: f64) -> Self {
        self.estimated_duration_s = seconds;
        self
    }

    /// Places this task with `strategy` instead of the optimizer's default.
    pub fn strategy(mut self, strategy: switchyard_decision::StrategyKind) -> Self {
        self.strategy = Some(strategy.as_str().to_string());
        self
    }

    /// Asks for the grant to carry an explanation of the placement decision.
    pub fn explain(mut self, explain: bool) -> Self {
        self.explain = explain;
        self
    }

    /// Which replies the submitter wants (default: all).
    pub fn replies(mut self, replies: Replies) -> Self {
        self.replies = replies;
        self
    }

    pub fn depends_on(mut self, task_id: impl Into<String>) -> Self {
        self.dependencies.push(task_id.into());
        self
    }
}

impl AgentRegister {
    pub fn new(agent_id: impl Into<String>, agent_type: impl Into<String>) -> AgentRegister {
        AgentRegister {
            agent_id: agent_id.into(),
            agent_type: agent_type.into(),
            max_resources: BTreeMap::new(),
            priority_weight: default_priority_weight(),
            lease_s: None,
        }
    }

    /// Asks to be marked dead after `seconds` without a heartbeat (the Rust [`Agent`] client
    /// heartbeats every third of it).
    ///
    /// [`Agent`]: https://docs.rs/switchyard-client
    pub fn lease(mut self, seconds: f64) -> Self {
        self.lease_s = Some(seconds);
        self
    }

    /// Can carry `amount` whole units of `resource`.
    pub fn capacity(mut self, resource: &str, amount: f64) -> Self {
        self.max_resources.insert(resource.to_string(), amount);
        self
    }
}
