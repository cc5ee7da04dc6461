//! The dispatch pass: propose agents for the head of the priority queue with the configured
//! [`Strategy`](switchyard_decision::Strategy), commit each proposal through the atomic grant script,
//! and publish what was granted.
//!
//! Several replicas may dispatch the same queue head at once. That is safe: the grant script
//! re-checks that the task is still queued and that the agent still has room, so the loser of a
//! race gets `not_queued` or tries its next candidate.

use std::collections::HashSet;
use std::time::Instant;

use futures::future::join_all;

use super::budget_hints::{BudgetHints, sleep_until};
use super::publish::{Grant, Reply, publish_grant, send_reply};
use super::{Ctx, head};
use crate::state::{FleetCache, GrantOutcome, GrantRequest, QueuedTask};
use switchyard_client::error::Error;
use switchyard_decision::{
    AgentView, DecisionContext, HeadHold, PatternTable, PlannedGrant, Strategy, StrategyKind,
    TaskView, plan_batch_explained,
};
use switchyard_protocol::{MessageType, ReplyStatus, now_ms};

/// Most passes one dispatch call makes while every pass keeps granting a full window.
const MAX_ROUNDS: usize = 8;

/// Grants what fits from the queue head; returns the ids of tasks granted (and published).
pub(crate) async fn dispatch_queue(
    ctx: &Ctx,
    fleet: &mut FleetCache,
    hints: &mut BudgetHints,
) -> Result<HashSet<String>, Error> {
    let started = Instant::now();
    let mut granted_ids = HashSet::new();
    let mut stale_retry_left = true;
    hints.start_call();
    for _ in 0..MAX_ROUNDS {
        let round = dispatch_round(ctx, fleet, hints).await?;
        granted_ids.extend(round.granted.iter().map(|g| g.payload.task_id.clone()));
        if ctx.faults.stall_after_commit && !round.granted.is_empty() {
            tracing::warn!("fault injection: grants committed; stalling before publishing them");
            std::future::pending::<()>().await;
        }
        publish_grants(ctx, round.granted).await;
        // Go again when the window was fully granted (more may be waiting behind it), or once
        // when a proposal missed because the cache was stale (the next round reads what changed;
        // when the fleet is simply full, more rounds would only re-read the same queue head), or
        // when a budget newly refused a draw (the next round reads past its tasks).
        let retry_stale = round.stale_misses > 0 && std::mem::take(&mut stale_retry_left);
        if !(round.window_full || retry_stale || round.newly_blocked) {
            break;
        }
    }
    ctx.metrics
        .coordination_seconds
        .with_label_values(&["dispatch"])
        .observe(started.elapsed().as_secs_f64());
    Ok(granted_ids)
}

#[derive(Default)]
struct Round {
    granted: Vec<Grant>,
    window_full: bool,
    stale_misses: usize,
    /// A budget not known to be blocked refused a draw.
    newly_blocked: bool,
}

/// One round: the queue head, what changed in the fleet since the last round (one XRANGE, not a
/// read of every agent), a plan, and one script call that commits every grant of the plan.
async fn dispatch_round(
    ctx: &Ctx,
    fleet: &mut FleetCache,
    hints: &mut BudgetHints,
) -> Result<Round, Error> {
    let window = ctx.config.coordination.dispatch_window;
    hints.forget_past(Instant::now());
    let first = ctx.dispatch_store.queue_head(window).await?;
    if first.is_empty() {
        return Ok(Round::default());
    }
    ctx.metrics.dispatch_rounds.inc();
    // What the fleet has learned per (task type, agent type), read only when a strategy in play
    // uses it, and alongside the fleet log (and the head hold) rather than after it.
    let needs_patterns = ctx.strategy.uses_patterns()
        || first
            .iter()
            .any(|t| t.strategy.is_some_and(StrategyKind::uses_patterns));
    let (_, patterns, hold) = tokio::try_join!(
        fleet.refresh(&ctx.dispatch_store),
        async {
            if needs_patterns {
                ctx.dispatch_store.patterns().await
            } else {
                Ok(PatternTable::new())
            }
        },
        head::current_hold(ctx)
    )?;
    fleet.age(now_ms());
    let head = head::feasible_head(ctx, first, fleet.agents(), hints).await?;
    let plan = plan_head(
        ctx,
        &head,
        fleet.agents(),
        hold.as_ref().map(|s| &s.hold),
        &patterns,
    );
    head::update_hold(ctx, &head, &plan, fleet.agents(), hold.as_ref()).await?;
    let planned: Vec<&PlannedGrant> = plan.iter().filter(|p| !p.candidates.is_empty()).collect();
    let whys: Vec<String> = planned
        .iter()
        .map(|p| grant_why(ctx, &head[p.task_index], p))
        .collect();
    let requests: Vec<GrantRequest> = planned
        .iter()
        .zip(&whys)
        .map(|(p, why)| GrantRequest {
            task_id: &head[p.task_index].view.task_id,
            candidates: &p.candidates,
            budgets: &head[p.task_index].budgets,
            why,
            explores: p.explores.as_deref().unwrap_or(""),
        })
        .collect();
    let grants_started_ns = super::traces::now_ns();
    let outcomes = ctx.store.grant_tasks(&requests).await?;
    let mut round = Round::default();
    for (planned, outcome) in planned.into_iter().zip(outcomes) {
        let task = &head[planned.task_index];
        match outcome {
            GrantOutcome::Granted {
                agent_id,
                grant_seq,
            } => {
                ctx.metrics
                    .allocations
                    .with_label_values(&["granted"])
                    .inc();
                ctx.metrics
                    .tenant_granted
                    .with_label_values(&[ctx.config.tenants.label(&task.tenant)])
                    .inc();
                for (budget, amount) in &task.budgets {
                    ctx.metrics
                        .budget_granted
                        .with_label_values(&[budget])
                        .inc_by(*amount);
                }
                tracing::debug!(task_id = %task.view.task_id, agent_id = %agent_id, grant_seq, "task granted");
                let grant = Grant::from_queued(task, &agent_id, grant_seq)
                    .explained(planned.explanation.as_ref());
                if ctx.tracer.enabled() {
                    let score = planned.explanation.as_ref().and_then(|e| {
                        e.candidates
                            .iter()
                            .find(|c| *c.agent_id == *agent_id)
                            .map(|c| c.score)
                    });
                    super::traces::granted(
                        ctx,
                        task,
                        &grant.payload,
                        grant.trace.as_ref(),
                        score,
                        grants_started_ns,
                    );
                }
                round.granted.push(grant);
            }
            GrantOutcome::NoFit => round.stale_misses += 1,
            GrantOutcome::NotQueued { .. } => {}
            GrantOutcome::Budget { budget, wait_ms } => {
                ctx.metrics
                    .budget_blocked
                    .with_label_values(&[&budget])
                    .inc();
                round.newly_blocked |= hints.note(&budget, wait_ms);
            }
        }
    }
    round.window_full = head.len() == window && round.granted.len() == head.len();
    Ok(round)
}

/// Why a task's candidates, for its story: the strategy that ranked them and, when the submit
/// asked for the decision to be explained, their scores (`least_loaded a1=0.83,a2=0.61`).
fn grant_why(ctx: &Ctx, task: &QueuedTask, planned: &PlannedGrant) -> String {
    let strategy = task
        .strategy
        .map(StrategyKind::as_str)
        .unwrap_or_else(|| ctx.strategy.name());
    match &planned.explanation {
        Some(explained) => {
            let scores: Vec<String> = explained
                .candidates
                .iter()
                .take(ctx.config.coordination.max_candidates)
                .map(|c| format!("{}={:.3}", c.agent_id, c.score))
                .collect();
            format!("{} {}", explained.strategy, scores.join(","))
        }
        None => strategy.to_string(),
    }
}

/// Plans the queue head: tasks that asked for a strategy of their own (TASK_SUBMIT.strategy) are
/// planned with it, the rest with the optimizer's default, each group in queue order. Tasks whose
/// submit asked for `explain` get their decision explained. While a head hold stands, the held
/// task is planned first against the whole fleet and the others beside the hold.
fn plan_head(
    ctx: &Ctx,
    head: &[QueuedTask],
    agents: &[AgentView],
    hold: Option<&HeadHold>,
    patterns: &PatternTable,
) -> Vec<PlannedGrant> {
    let decision = DecisionContext::new(patterns);
    let max_candidates = ctx.config.coordination.max_candidates;
    let held = hold.and_then(|h| head.iter().position(|t| t.view.task_id == h.task_id));
    let mut groups: Vec<(Option<StrategyKind>, Vec<usize>)> = Vec::new();
    let mut plans = Vec::with_capacity(head.len());
    if let Some(index) = held {
        plans.extend(plan_group(
            ctx,
            head,
            &[index],
            agents,
            &decision,
            max_candidates,
        ));
    }
    let beside = switchyard_decision::beside_hold(agents, hold);
    for (index, task) in head.iter().enumerate() {
        if Some(index) == held {
            continue;
        }
        match groups.iter_mut().find(|(kind, _)| *kind == task.strategy) {
            Some((_, members)) => members.push(index),
            None => groups.push((task.strategy, vec![index])),
        }
    }
    for (_, members) in groups {
        plans.extend(plan_group(
            ctx,
            head,
            &members,
            &beside,
            &decision,
            max_candidates,
        ));
    }
    plans
}

/// Plans some tasks of the head (one strategy: that of the first member) in the order given.
fn plan_group(
    ctx: &Ctx,
    head: &[QueuedTask],
    members: &[usize],
    agents: &[AgentView],
    decision: &DecisionContext<'_>,
    max_candidates: usize,
) -> Vec<PlannedGrant> {
    let own = members
        .first()
        .and_then(|&i| head[i].strategy)
        .map(StrategyKind::build);
    let strategy: &dyn Strategy = own.as_deref().unwrap_or(ctx.strategy.as_ref());
    let views: Vec<TaskView> = members.iter().map(|&i| head[i].view.clone()).collect();
    let explain: Vec<bool> = members.iter().map(|&i| head[i].explain).collect();
    let mut planned_group =
        plan_batch_explained(strategy, &views, agents, decision, max_candidates, &explain);
    for planned in &mut planned_group {
        planned.task_index = members[planned.task_index];
    }
    planned_group
}

/// Sends grants to their agents (core NATS) and tells the submitters. A grant stays in the
/// outbox until its agent acknowledges it; until then any replica sends it again every
/// `grant_resend_ms` (see `grants.rs`), so a lost publication or an offline agent costs time,
/// never the grant.
pub(crate) async fn publish_grants(ctx: &Ctx, grants: Vec<Grant>) {
    if grants.is_empty() {
        return;
    }
    let results = join_all(grants.iter().map(|g| publish_grant(ctx, g))).await;
    let now = now_ms();
    for (grant, result) in grants.into_iter().zip(results) {
        if let Err(e) = result {
            if let Some(held_back) = ctx.warnings.due("grant not sent") {
                tracing::warn!(task_id = %grant.payload.task_id, error = %e, held_back, "grant not sent; the outbox sends it again");
            }
            continue;
        }
        let latency = now.saturating_sub(grant.submitted_at_ms) as f64 / 1000.0;
        ctx.metrics
            .grant_latency
            .with_label_values(&["submit_to_grant"])
            .observe(latency);
        if grant.replies.wants(ReplyStatus::Granted) {
            let reply = Reply::new(
                &grant.payload.submitter,
                &grant.submit_message_id,
                MessageType::TaskSubmit,
                ReplyStatus::Granted,
            )
            .task(&grant.payload.task_id)
            .agent(&grant.payload.agent_id);
            send_reply(ctx, reply).await;
        }
    }
}

/// Coalesces dispatch requests: batches finishing at the same time share one pass instead of
/// each reading the queue head and the fleet snapshot. One pass runs at a time per replica.
pub(crate) struct Dispatcher {
    requested: std::sync::atomic::AtomicU64,
    wake: tokio::sync::Notify,
    done: tokio::sync::watch::Sender<(u64, std::sync::Arc<HashSet<String>>)>,
}

impl Dispatcher {
    pub(crate) fn new() -> Dispatcher {
        Dispatcher {
            requested: std::sync::atomic::AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            done: tokio::sync::watch::channel((0, std::sync::Arc::default())).0,
        }
    }

    /// Asks for a pass that starts after this call (so it sees the caller's commits) and waits
    /// for it. Returns the ids that pass granted.
    pub(crate) async fn dispatch_after_commit(&self) -> std::sync::Arc<HashSet<String>> {
        let ticket = self
            .requested
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let mut done = self.done.subscribe();
        self.wake.notify_one();
        match done.wait_for(|(generation, _)| *generation >= ticket).await {
            Ok(state) => state.1.clone(),
            Err(_) => std::sync::Arc::default(),
        }
    }

    /// The pass loop; ends when `stop` turns true, releasing anyone still waiting. The fleet
    /// cache lives here: one pass runs at a time, so it needs no lock.
    pub(crate) async fn run(&self, ctx: &Ctx, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut fleet = FleetCache::new();
        let mut hints = BudgetHints::default();
        let gauge_period =
            std::time::Duration::from_secs_f64(ctx.config.coordination.optimization_interval_s);
        let mut gauges_due = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    self.done.send_replace((u64::MAX, std::sync::Arc::default()));
                    return;
                }
                _ = self.wake.notified() => {}
                _ = sleep_until(hints.next_due()) => {}
            }
            let ticket = self.requested.load(std::sync::atomic::Ordering::SeqCst);
            let granted = dispatch_queue(ctx, &mut fleet, &mut hints)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "dispatch failed; the next pass retries");
                    HashSet::new()
                });
            if gauges_due.elapsed() >= gauge_period {
                // Also keeps the cache read while the queue is empty, so an idle spell longer
                // than the fleet log's retention does not end in a read of every agent.
                if let Err(e) = fleet.refresh(&ctx.dispatch_store).await {
                    tracing::warn!(error = %e, "fleet cache not refreshed");
                }
                set_utilization_gauges(ctx, fleet.agents());
                set_budget_gauges(ctx).await;
                gauges_due = std::time::Instant::now();
            }
            self.done
                .send_replace((ticket, std::sync::Arc::new(granted)));
        }
    }
}

/// Mean and max utilization of the active agents, from the fleet cache (no Redis reads; at most
/// once per OPTIMIZATION_INTERVAL).
fn set_utilization_gauges(ctx: &Ctx, agents: &[AgentView]) {
    let utilizations = agents
        .iter()
        .map(|a| switchyard_decision::resources::utilization(&a.reserved, &a.capacity));
    let (sum, max, count) = utilizations.fold((0.0, 0.0_f64, 0usize), |(s, m, n), u| {
        (s + u, m.max(u), n + 1)
    });
    let mean = if count == 0 { 0.0 } else { sum / count as f64 };
    let gauge = &ctx.metrics.agent_utilization;
    gauge.with_label_values(&["mean"]).set(mean);
    gauge.with_label_values(&["max"]).set(max);
}

/// The budgets' state as gauges (one pipelined read; at most once per OPTIMIZATION_INTERVAL).
async fn set_budget_gauges(ctx: &Ctx) {
    if ctx.config.budgets.is_empty() {
        return;
    }
    let names: Vec<String> = ctx.config.budgets.iter().map(|b| b.name.clone()).collect();
    let states = match ctx.dispatch_store.budget_states(&names).await {
        Ok(states) => states,
        Err(e) => {
            tracing::warn!(error = %e, "budget gauges not refreshed");
            return;
        }
    };
    for b in states {
        let m = &ctx.metrics;
        m.budget_available
            .with_label_values(&[&b.name])
            .set(b.available as f64);
        m.budget_in_use
            .with_label_values(&[&b.name])
            .set(b.in_use as f64);
        m.budget_debt
            .with_label_values(&[&b.name])
            .set(b.debt as f64);
    }
}
