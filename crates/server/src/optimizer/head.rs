//! The head of the queue: reading it past tasks no agent could ever hold, and the head hold
//! that keeps a large task at the head from being starved by smaller ones (the rules are the
//! decision crate's, `placement/hold.rs`; the hold lives in Redis, `lua/hold_head.lua`, and
//! `grant_tasks.lua` enforces it atomically, so every replica honours it).

use std::sync::Arc;

use super::Ctx;
use super::budget_hints::BudgetHints;
use crate::state::QueuedTask;
use switchyard_client::error::Error;
use switchyard_decision::placement::shortfall;
use switchyard_decision::{AgentView, HeadHold, PlannedGrant, TaskView, choose_hold_agent};

/// Most further pages of the queue read in one round to get past tasks that fit no agent's
/// capacity (held infeasible tasks, `coordination.infeasible = "hold"`) or wait for a blocked
/// budget.
const MAX_EXTRA_PAGES: usize = 8;

/// Whether some agent's capacity covers the task (free or not).
fn coverable(task: &QueuedTask, agents: &[AgentView]) -> bool {
    agents
        .iter()
        .any(|a| shortfall(&task.view.required, a).is_some())
}

/// The head as the plan sees it: the tasks of `first` (the first page) that some agent could
/// ever hold and that draw from no budget known to be blocked for now (`hints`), and when some
/// were left out and the page was full, the next pages' too, up to a window. Without this, more
/// than a window of never-fitting tasks at the head stalled the whole queue, and a blocked
/// budget's tasks filled the window ahead of tasks of other budgets (or none).
pub(crate) async fn feasible_head(
    ctx: &Ctx,
    first: Vec<QueuedTask>,
    agents: &[AgentView],
    hints: &BudgetHints,
) -> Result<Vec<QueuedTask>, Error> {
    let window = ctx.config.coordination.dispatch_window;
    let usable = |t: &QueuedTask| !hints.blocks(t) && (agents.is_empty() || coverable(t, agents));
    if first.iter().all(usable) {
        return Ok(first);
    }
    let mut full = first.len() == window;
    let mut head: Vec<QueuedTask> = first.into_iter().filter(usable).collect();
    let mut offset = window;
    for _ in 0..MAX_EXTRA_PAGES {
        if !full || head.len() >= window {
            break;
        }
        let page = ctx.dispatch_store.queue_page(offset, window).await?;
        full = page.len() == window;
        offset += window;
        head.extend(page.into_iter().filter(usable));
    }
    head.truncate(window);
    Ok(head)
}

/// The hold standing now, when the head reservation is on.
pub(crate) struct StandingHold {
    pub(crate) hold: HeadHold,
    /// How long it lasts unless renewed, ms.
    left_ms: u64,
}

pub(crate) async fn current_hold(ctx: &Ctx) -> Result<Option<StandingHold>, Error> {
    if !ctx.config.coordination.head_reservation {
        return Ok(None);
    }
    let standing = ctx.dispatch_store.head_hold_left().await?;
    Ok(standing.map(|(hold, left_ms)| StandingHold { hold, left_ms }))
}

/// The first task of the head (in queue order) the plan found no room for and that fits on no
/// agent now, with the agent to hold for it (the decision crate's `choose_hold_agent`).
fn blocked_head<'h>(
    head: &'h [QueuedTask],
    plan: &[PlannedGrant],
    agents: &[AgentView],
    hold: Option<&HeadHold>,
) -> Option<(&'h TaskView, Arc<str>)> {
    let mut blocked: Vec<usize> = plan
        .iter()
        .filter(|p| p.candidates.is_empty())
        .map(|p| p.task_index)
        .collect();
    blocked.sort_unstable();
    blocked.into_iter().find_map(|i| {
        let task = &head[i].view;
        let current = hold
            .filter(|h| h.task_id == task.task_id)
            .map(|h| &*h.agent_id);
        choose_hold_agent(task, agents, current).map(|agent| (task, agent))
    })
}

/// After planning: holds an agent for the first task of the head the plan found no room for
/// (in queue order), renewing a standing hold once half its time has passed. Runs before the
/// grants are committed, so they already respect a new hold.
pub(crate) async fn update_hold(
    ctx: &Ctx,
    head: &[QueuedTask],
    plan: &[PlannedGrant],
    agents: &[AgentView],
    standing: Option<&StandingHold>,
) -> Result<(), Error> {
    let hold = standing.map(|s| &s.hold);
    if !ctx.config.coordination.head_reservation {
        return Ok(());
    }
    let chosen = blocked_head(head, plan, agents, hold);
    // The same hold, with more than half its time left: a renewal can wait for a later round
    // (every round of a full fleet would otherwise call the script).
    let fresh = |task: &str, agent: &str| {
        standing.is_some_and(|s| {
            s.hold.task_id == task
                && &*s.hold.agent_id == agent
                && s.left_ms > ctx.config.coordination.head_hold_ms / 2
        })
    };
    match chosen {
        Some((task, agent)) if fresh(&task.task_id, &agent) => {}
        Some((task, agent)) => {
            let standing = ctx
                .dispatch_store
                .hold_head(&task.task_id, &agent, ctx.config.coordination.head_hold_ms)
                .await?;
            let before = hold.map(|h| (h.task_id.as_str(), &*h.agent_id));
            if let Some((t, a)) = &standing
                && before != Some((t.as_str(), a.as_str()))
            {
                ctx.metrics.head_holds.inc();
                tracing::debug!(task_id = %t, agent_id = %a, "agent held for the head task");
            }
        }
        // A hold whose task left the queue is not read (head_hold) and is ended by the grant
        // script; one whose task is not blocked any more ends when it is granted.
        None => {}
    }
    Ok(())
}
