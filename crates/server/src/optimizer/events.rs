//! Applying one decoded event to the shared state. Each function runs the event's transition
//! script(s) and says what follows: replies, refusals, whether the queue should be dispatched.
//! Nothing here publishes; the batch does that after all of its commits.

use std::collections::HashSet;

use super::Ctx;
use super::applied::Applied;
use super::publish::{Grant, Reply};
use super::traces::SubmitTrace;
use crate::config::{BudgetKind, InfeasiblePolicy};
use crate::state::{
    CompleteOutcome, Completion, DependencyOutcome, DeregisterOutcome, ResolveOutcome,
    SubmitOutcome, SubmitRequest,
};
use switchyard_client::error::Error;
use switchyard_decision::{Resources, StrategyKind, TaskState};
use switchyard_protocol::{
    AgentRegister, Envelope, Inbound, MessageType, RejectReason, Replies, ReplyStatus, TaskSubmit,
};

/// Applies a batch: every completion in one `complete_tasks` call (so agents and patterns are
/// read and written once for the batch), everything else event by event, concurrently. One
/// result per event, in order.
pub(crate) async fn apply_batch(ctx: &Ctx, events: &[&Inbound]) -> Vec<Result<Applied, Error>> {
    let reports: Vec<Completion> = events
        .iter()
        .filter_map(|event| match event {
            Inbound::Complete(env) => Some(completion_of(&env.payload)),
            _ => None,
        })
        .collect();
    let c = &ctx.config.coordination;
    let mut outcomes: std::collections::VecDeque<Result<CompleteOutcome, Error>> = match ctx
        .store
        .complete_tasks(&reports, c.learning_rate, c.task_retention_s)
        .await
    {
        Ok(batch) => {
            ctx.metrics.agent_drifts.inc_by(batch.drifts);
            batch.outcomes.into_iter().map(Ok).collect()
        }
        Err(e) => reports
            .iter()
            .map(|_| Err(Error::new(e.kind(), e.to_string())))
            .collect(),
    };
    let applying = events.iter().map(|event| {
        let outcome = match event {
            Inbound::Complete(_) => outcomes.pop_front(),
            _ => None,
        };
        async move {
            match (event, outcome) {
                (Inbound::Complete(env), Some(outcome)) => completed(ctx, env, outcome?).await,
                _ => apply_event(ctx, event).await,
            }
        }
    });
    futures::future::join_all(applying).await
}

fn completion_of(p: &switchyard_protocol::TaskComplete) -> Completion<'_> {
    Completion {
        task_id: &p.task_id,
        agent_id: &p.agent_id,
        success: p.success,
        execution_time_s: p.execution_time_s,
        grant_seq: p.grant_seq,
        usage: (!p.usage.is_empty()).then_some(&p.usage),
    }
}

pub(crate) async fn apply_event(ctx: &Ctx, event: &Inbound) -> Result<Applied, Error> {
    match event {
        Inbound::Register(env, capacity) => register(ctx, env, capacity).await,
        // Both travel on core NATS (signals.rs); a stored copy is applied the same way.
        Inbound::Heartbeat(env) => {
            super::liveness::apply_heartbeat(ctx, &env.payload.agent_id).await
        }
        Inbound::GrantAck(env) => {
            let grants: Vec<(String, u64)> = env
                .payload
                .grants
                .iter()
                .map(|g| (g.task_id.clone(), g.grant_seq))
                .collect();
            ctx.store.acknowledge_grants(&grants).await?;
            Ok(Applied::default())
        }
        Inbound::Deregister(env) => {
            let message_id = env.message_id.to_string();
            deregister(ctx, &env.payload.agent_id, &env.sender, &message_id).await
        }
        Inbound::Submit(env, required, strategy) => {
            let mut request = submit_request(env, required, *strategy, &ctx.config.tenants);
            request
                .options
                .extend(limit_options(&env.payload, &ctx.config.coordination));
            match budget_options(ctx, &env.payload) {
                Ok(options) => request.options.extend(options),
                Err((reason, message)) => return Ok(Applied::refuse(reason, message)),
            }
            let trace = SubmitTrace::new(env.trace.as_ref(), ctx.tracer.enabled());
            if let Some(trace) = &trace {
                request.options.extend(trace.options());
            }
            submit(ctx, &request, trace.as_ref()).await
        }
        Inbound::Complete(env) => {
            let c = &ctx.config.coordination;
            let completion = completion_of(&env.payload);
            let batch = ctx
                .store
                .complete_tasks(
                    std::slice::from_ref(&completion),
                    c.learning_rate,
                    c.task_retention_s,
                )
                .await?;
            ctx.metrics.agent_drifts.inc_by(batch.drifts);
            match batch.outcomes.into_iter().next() {
                Some(outcome) => completed(ctx, env, outcome).await,
                None => Err(Error::new(
                    switchyard_client::error::ErrorKind::Unexpected,
                    "complete_tasks returned no outcome",
                )),
            }
        }
        Inbound::HandoffInitiate(env) => super::handoff::begin(ctx, env).await,
        Inbound::HandoffAcknowledge(env) => super::handoff::resolve(ctx, env).await,
        Inbound::ResourceRequest(env, extra) => {
            super::handoff::grow_reservation(ctx, env, extra).await
        }
        Inbound::Cancel(env, operator) => super::cancel::apply_cancel(ctx, env, *operator).await,
    }
}

async fn register(
    ctx: &Ctx,
    env: &Envelope<AgentRegister>,
    capacity: &Resources,
) -> Result<Applied, Error> {
    let p = &env.payload;
    let lease = lease_ms(p.lease_s);
    ctx.store
        .register_agent(
            &p.agent_id,
            &p.agent_type,
            capacity,
            p.priority_weight,
            lease,
        )
        .await?;
    tracing::info!(agent_id = %p.agent_id, agent_type = %p.agent_type, "agent registered");
    // A restarted agent gets the grants it had not acknowledged now, not a resend later.
    let republish = ctx
        .store
        .unacknowledged_grants_of(&p.agent_id)
        .await?
        .iter()
        .filter_map(Grant::from_record)
        .map(Grant::without_replies)
        .collect();
    let reply = Reply::new(
        &env.sender,
        &env.message_id.to_string(),
        MessageType::AgentRegister,
        ReplyStatus::Registered,
    )
    .agent(&p.agent_id);
    Ok(Applied {
        replies: vec![reply],
        dispatch: true,
        republish,
        inboxes: vec![p.agent_id.clone()],
        ..Applied::default()
    })
}

fn submit_request(
    env: &Envelope<TaskSubmit>,
    required: &Resources,
    strategy: Option<StrategyKind>,
    tenants: &crate::config::TenantsConfig,
) -> SubmitRequest {
    let p = &env.payload;
    let tenant = p
        .tenant
        .clone()
        .unwrap_or_else(|| switchyard_decision::DEFAULT_TENANT.to_string());
    let cost = switchyard_decision::task_cost(tenants.weight(&tenant));
    SubmitRequest {
        task_id: p.task_id.clone(),
        message_id: env.message_id.to_string(),
        submitter: env.sender.clone(),
        task_type: p.task_type.clone(),
        priority: p.priority,
        required: *required,
        estimated_duration_s: p.estimated_duration_s,
        dependencies: p.dependencies.clone(),
        strategy: strategy.map(|k| k.as_str().to_string()),
        explain: p.explain,
        replies: p.replies,
        // Read by submit_task.lua for the task's fair place (lib.lua fair_place).
        options: vec![("tenant", tenant), ("fair_cost", cost.to_string())],
    }
}

/// A submit's effective time limits and retry settings (its own, else the optimizer's
/// defaults), as task-hash fields in whole ms for the scripts: only those that do something,
/// so a task without limits or retries stores none (and its submit costs no extra write).
pub(crate) fn limit_options(
    p: &TaskSubmit,
    defaults: &crate::config::CoordinationConfig,
) -> Vec<(&'static str, String)> {
    let ms = |s: f64| (s * 1000.0).round() as u64;
    let mut options = Vec::new();
    let queue = ms(p.queue_timeout_s.unwrap_or(defaults.queue_timeout_s));
    if queue > 0 {
        options.push(("queue_timeout_ms", queue.to_string()));
    }
    let run = ms(p.run_timeout_s.unwrap_or(defaults.run_timeout_s));
    if run > 0 {
        options.push(("run_timeout_ms", run.to_string()));
    }
    let attempts = p.max_attempts.unwrap_or(defaults.max_attempts).max(1);
    if attempts > 1 {
        let cap = defaults.retry_backoff_max_s;
        let base = p
            .retry_backoff_s
            .unwrap_or(defaults.retry_backoff_s)
            .min(cap);
        options.push(("max_attempts", attempts.to_string()));
        options.push(("retry_backoff_ms", ms(base).to_string()));
        options.push(("retry_backoff_max_ms", ms(cap).to_string()));
    }
    options
}

/// A submit's budgets as the task option the scripts read (`budgets`, lib.lua's
/// `budget_draws`), checked against this replica's budgets: an unknown name is refused
/// (`unknown_budget`); a draw no budget could ever allow (over a rate budget's burst, or a
/// concurrency budget's limit) is refused as `infeasible` under `coordination.infeasible =
/// "refuse"`, and queued under `hold` (its status then says which budget it waits for).
fn budget_options(
    ctx: &Ctx,
    task: &TaskSubmit,
) -> Result<Vec<(&'static str, String)>, (RejectReason, String)> {
    if task.budgets.is_empty() {
        return Ok(Vec::new());
    }
    for (name, amount) in &task.budgets {
        let Some(budget) = ctx.config.budgets.iter().find(|b| &b.name == name) else {
            return Err((
                RejectReason::UnknownBudget,
                format!(
                    "task {} draws from {name:?}, which is not a defined budget",
                    task.task_id
                ),
            ));
        };
        let most = match budget.kind {
            BudgetKind::Rate => budget.burst(),
            BudgetKind::Concurrency => budget.limit,
        };
        if *amount > most && ctx.config.coordination.infeasible == InfeasiblePolicy::Refuse {
            return Err((
                RejectReason::Infeasible,
                format!(
                    "task {} draws {amount} from budget {name}, which never allows more than {most} at once",
                    task.task_id
                ),
            ));
        }
    }
    let draws: Vec<(String, u64)> = task.budgets.iter().map(|(n, a)| (n.clone(), *a)).collect();
    Ok(vec![(
        "budgets",
        switchyard_decision::budget::encode_draws(&draws),
    )])
}

async fn deregister(
    ctx: &Ctx,
    agent_id: &str,
    sender: &str,
    message_id: &str,
) -> Result<Applied, Error> {
    let tasks = match ctx.store.deregister_agent(agent_id).await? {
        DeregisterOutcome::Refused(refusal) => return Ok(Applied::refused(refusal)),
        DeregisterOutcome::Deregistered { tasks } => tasks,
    };
    let cancelled = super::liveness::requeue_tasks(ctx, agent_id, &tasks).await?;
    let reply = Reply::new(
        sender,
        message_id,
        MessageType::AgentDeregister,
        ReplyStatus::Deregistered,
    )
    .agent(agent_id);
    let mut applied = Applied {
        replies: vec![reply],
        dispatch: true,
        ..Applied::default()
    };
    super::cancel::cancelled_without_agent(ctx, &cancelled, &mut applied).await?;
    Ok(applied)
}

async fn submit(
    ctx: &Ctx,
    req: &SubmitRequest,
    trace: Option<&SubmitTrace>,
) -> Result<Applied, Error> {
    let outcome = ctx
        .store
        .submit_task(req, ctx.config.coordination.task_retention_s)
        .await?;
    if let Some(trace) = trace {
        super::traces::submitted(ctx, req, trace, &outcome);
    }
    let reply = |status| {
        Reply::new(
            &req.submitter,
            &req.message_id,
            MessageType::TaskSubmit,
            status,
        )
        .task(&req.task_id)
    };
    let mut applied = submit_outcome(ctx, req, outcome, reply).await?;
    // Only the replies the submitter asked for (the batch sends `queued` later, if at all).
    applied.replies.retain(|r| req.replies.wants(r.body.status));
    if !req.replies.wants(ReplyStatus::Queued) {
        applied.queued_submit = None;
    }
    Ok(applied)
}

async fn submit_outcome(
    ctx: &Ctx,
    req: &SubmitRequest,
    outcome: SubmitOutcome,
    reply: impl Fn(ReplyStatus) -> Reply,
) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    match outcome {
        SubmitOutcome::Queued => {
            applied.dispatch = true;
            applied.queued_submit = Some((
                req.task_id.clone(),
                req.submitter.clone(),
                req.message_id.clone(),
            ));
        }
        SubmitOutcome::Waiting { unmet } => {
            ctx.metrics
                .allocations
                .with_label_values(&["waiting"])
                .inc();
            applied
                .replies
                .push(reply(ReplyStatus::Waiting).detail(format!("{unmet} unmet dependencies")));
        }
        SubmitOutcome::Failed { reason } => {
            ctx.metrics.allocations.with_label_values(&["failed"]).inc();
            applied
                .replies
                .push(reply(ReplyStatus::Failed).detail(reason));
            fail_early_dependents(ctx, &req.task_id, &mut applied).await?;
        }
        SubmitOutcome::Duplicate { state, agent } => {
            return duplicate_submit(ctx, req, state, &agent, reply).await;
        }
        SubmitOutcome::Refused(refusal) => return Ok(Applied::refused(refusal)),
    }
    Ok(applied)
}

/// The same submit again (a redelivery or a client retry): answer with the current state, and
/// send the grant again (it also stays in the outbox until acknowledged); agents drop copies by
/// task and grant number.
async fn duplicate_submit(
    ctx: &Ctx,
    req: &SubmitRequest,
    state: TaskState,
    agent: &str,
    reply: impl Fn(ReplyStatus) -> Reply,
) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    match state {
        TaskState::Granted => {
            if let Some(grant) = ctx
                .store
                .task_record(&req.task_id)
                .await?
                .as_ref()
                .and_then(Grant::from_record)
            {
                applied.republish.push(grant.without_replies());
            }
            applied
                .replies
                .push(reply(ReplyStatus::Granted).agent(agent));
        }
        TaskState::Queued => {
            applied.dispatch = true;
            applied.queued_submit = Some((
                req.task_id.clone(),
                req.submitter.clone(),
                req.message_id.clone(),
            ));
        }
        TaskState::WaitingDependencies => applied.replies.push(reply(ReplyStatus::Waiting)),
        TaskState::Completed => applied
            .replies
            .push(reply(ReplyStatus::Completed).agent(agent)),
        TaskState::Failed => {
            applied
                .replies
                .push(reply(ReplyStatus::Failed).agent(agent));
            // The first delivery may have died between failing the task and its dependents.
            fail_early_dependents(ctx, &req.task_id, &mut applied).await?;
        }
        TaskState::Cancelled => applied
            .replies
            .push(reply(ReplyStatus::Cancelled).agent(agent)),
    }
    Ok(applied)
}

/// A task that failed at its own submit (a dependency of its own had failed) may already have
/// dependents: the protocol lets a dependent be submitted first, and it then waits in this task's
/// dependents set. They fail in turn, as they would had this task failed on an agent. Read after
/// the failure was committed, so every dependent registered before it is seen; one registered
/// after it finds this task failed at its own submit. Resolving is idempotent.
async fn fail_early_dependents(
    ctx: &Ctx,
    task_id: &str,
    applied: &mut Applied,
) -> Result<(), Error> {
    let dependents = ctx.store.dependents_of(task_id).await?;
    if dependents.is_empty() {
        return Ok(());
    }
    resolve_dependents(ctx, task_id, DependencyOutcome::Failed, dependents, applied).await
}

/// What a completion's outcome calls for: replies, refusals, the dependents' turn.
async fn completed(
    ctx: &Ctx,
    env: &switchyard_protocol::Envelope<switchyard_protocol::TaskComplete>,
    outcome: CompleteOutcome,
) -> Result<Applied, Error> {
    let p = &env.payload;
    if ctx.tracer.enabled() {
        super::traces::completed(ctx, p, &outcome).await;
    }
    let (success, submitter, submit_id, dependents) = match outcome {
        CompleteOutcome::Finished {
            success,
            submitter,
            submit_message_id,
            dependents,
        } => (success, submitter, submit_message_id, dependents),
        CompleteOutcome::Cancelled {
            submitter,
            submit_message_id,
            dependents,
        } => return confirmed_cancel(ctx, env, &submitter, &submit_message_id, dependents).await,
        CompleteOutcome::Retrying {
            submitter,
            submit_message_id,
            retry_at_ms,
            attempt,
        } => {
            let mut applied = finished(env, ReplyStatus::Failed);
            let retry = Retry {
                task_id: &p.task_id,
                cause: "failed",
                submitter: &submitter,
                submit_message_id: &submit_message_id,
                retry_at_ms,
                attempt,
            };
            retry.tell(ctx, &mut applied);
            return Ok(applied);
        }
        CompleteOutcome::Refused(refusal) => return Ok(Applied::refused(refusal)),
    };
    ctx.metrics
        .allocations
        .with_label_values(&[if success { "completed" } else { "failed" }])
        .inc();
    tracing::debug!(task_id = %p.task_id, agent_id = %p.agent_id, success, "task finished");
    let status = if success {
        ReplyStatus::Completed
    } else {
        ReplyStatus::Failed
    };
    let mut applied = finished(env, status);
    if !submitter.is_empty() {
        applied.replies.push(
            Reply::new(&submitter, &submit_id, MessageType::TaskSubmit, status)
                .task(&p.task_id)
                .agent(&p.agent_id),
        );
    }
    let outcome = if success {
        DependencyOutcome::Completed
    } else {
        DependencyOutcome::Failed
    };
    resolve_dependents(ctx, &p.task_id, outcome, dependents, &mut applied).await?;
    Ok(applied)
}

/// A failed attempt that runs again after its back-off: counted, logged, and its submitter (if
/// it wants every reply) told it is `queued` again, with when and which attempt. No final reply.
pub(crate) struct Retry<'a> {
    pub task_id: &'a str,
    /// Why the attempt ended: failed | run_timeout.
    pub cause: &'static str,
    pub submitter: &'a str,
    pub submit_message_id: &'a str,
    pub retry_at_ms: u64,
    pub attempt: u32,
}

impl Retry<'_> {
    pub(crate) fn tell(&self, ctx: &Ctx, applied: &mut Applied) {
        ctx.metrics
            .task_retries
            .with_label_values(&[self.cause])
            .inc();
        tracing::info!(task_id = %self.task_id, cause = self.cause, attempt = self.attempt, retry_at_ms = self.retry_at_ms, "attempt failed: retrying after back-off");
        if self.submitter.is_empty() {
            return;
        }
        let reason = switchyard_protocol::WaitReason::RetryBackoff {
            until_ms: self.retry_at_ms,
            attempt: self.attempt,
        };
        applied.replies.push(
            Reply::new(
                self.submitter,
                self.submit_message_id,
                MessageType::TaskSubmit,
                ReplyStatus::Queued,
            )
            .task(self.task_id)
            .detail(format!("{}: {}", self.cause, reason.describe())),
        );
    }
}

/// A task finished on its agent (completed, failed or cancelled): capacity freed, so dispatch;
/// the reporting agent answered `status` if it asked for every reply.
fn finished(
    env: &switchyard_protocol::Envelope<switchyard_protocol::TaskComplete>,
    status: ReplyStatus,
) -> Applied {
    let p = &env.payload;
    let mut applied = Applied {
        dispatch: true,
        ..Applied::default()
    };
    if p.replies == Replies::All {
        applied.replies.push(
            Reply::new(
                &env.sender,
                &env.message_id.to_string(),
                MessageType::TaskComplete,
                status,
            )
            .task(&p.task_id)
            .agent(&p.agent_id),
        );
    }
    applied
}

/// The agent confirmed the cancel of its task (a failure report after the cancel): the task is
/// cancelled, its reservation released, its dependents fail with `dependency_cancelled`.
async fn confirmed_cancel(
    ctx: &Ctx,
    env: &switchyard_protocol::Envelope<switchyard_protocol::TaskComplete>,
    submitter: &str,
    submit_message_id: &str,
    dependents: Vec<String>,
) -> Result<Applied, Error> {
    let p = &env.payload;
    ctx.metrics
        .allocations
        .with_label_values(&["cancelled"])
        .inc();
    tracing::info!(task_id = %p.task_id, agent_id = %p.agent_id, "cancel confirmed by the agent");
    let mut applied = finished(env, ReplyStatus::Cancelled);
    super::cancel::tell_submitter(&mut applied, &p.task_id, submitter, submit_message_id);
    let cancelled = DependencyOutcome::Cancelled;
    resolve_dependents(ctx, &p.task_id, cancelled, dependents, &mut applied).await?;
    Ok(applied)
}

/// Walks the dependents of a finished task: each becomes queued, keeps waiting, or fails in
/// turn (cascading). The task's own dependents learn how it ended (`outcome`); theirs, in turn,
/// that their dependency failed. `visited` guards against dependency cycles.
pub(crate) async fn resolve_dependents(
    ctx: &Ctx,
    task_id: &str,
    outcome: DependencyOutcome,
    dependents: Vec<String>,
    applied: &mut Applied,
) -> Result<(), Error> {
    let retention = ctx.config.coordination.task_retention_s;
    let mut frontier: Vec<(String, String, DependencyOutcome)> = dependents
        .into_iter()
        .map(|d| (task_id.to_string(), d, outcome))
        .collect();
    let mut visited = HashSet::new();
    while let Some((dependency, dependent, how)) = frontier.pop() {
        if !visited.insert(dependent.clone()) {
            continue;
        }
        match ctx
            .store
            .resolve_dependency_as(&dependent, &dependency, how, retention)
            .await?
        {
            ResolveOutcome::Queued => applied.dispatch = true,
            ResolveOutcome::Waiting | ResolveOutcome::Noop => {}
            ResolveOutcome::Failed {
                submitter,
                submit_message_id,
                dependents,
            } => {
                ctx.metrics.allocations.with_label_values(&["failed"]).inc();
                let why = match how {
                    DependencyOutcome::Cancelled => "dependency_cancelled",
                    _ => "dependency_failed",
                };
                tracing::info!(task_id = %dependent, dependency = %dependency, why, "task failed with a dependency");
                if !submitter.is_empty() {
                    let reply = Reply::new(
                        &submitter,
                        &submit_message_id,
                        MessageType::TaskSubmit,
                        ReplyStatus::Failed,
                    )
                    .task(&dependent)
                    .detail(format!("{why}:{dependency}"));
                    applied.replies.push(reply);
                }
                frontier.extend(
                    dependents
                        .into_iter()
                        .map(|d| (dependent.clone(), d, DependencyOutcome::Failed)),
                );
            }
        }
    }
    Ok(())
}

/// Seconds of lease on the wire to whole milliseconds (0 = no lease).
fn lease_ms(lease_s: Option<f64>) -> u64 {
    lease_s.map(|s| (s * 1000.0).round() as u64).unwrap_or(0)
}
