//! Batch planning, and sampling that keeps a decision's cost flat as the fleet grows.

use std::sync::Arc;

use super::explain::{Explanation, explain};
use super::{AgentView, DecisionContext, Strategy, TaskView, fits};

/// Fleets larger than this are sampled rather than ranked whole.
pub const SAMPLE_ABOVE: usize = 256;
/// How many agents a sampled decision ranks.
pub const SAMPLE_SIZE: usize = 64;

/// The proposal for one task of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedGrant {
    /// Index of the task in the slice passed to [`plan_batch`].
    pub task_index: usize,
    /// Agent ids to try, best first, at most `max_candidates`; empty if the task fits nowhere.
    pub candidates: Vec<String>,
    /// Every ranked candidate with its score, when the caller asked for this task's decision to
    /// be explained ([`plan_batch_explained`]); `None` otherwise.
    pub explanation: Option<Explanation>,
    /// The agent type this task is sent to explore ([`Strategy::explores`]): a grant to an agent
    /// of that type is counted as an exploration of the pair
    /// ([`PatternStats::explorations`](crate::PatternStats::explorations)).
    pub explores: Option<Arc<str>>,
}

/// How a batch is planned: candidate cap, sampling thresholds, and which decisions to explain.
#[derive(Debug, Clone, Copy)]
struct PlanOptions<'a> {
    max_candidates: usize,
    sample_above: usize,
    sample_size: usize,
    /// `explain[i]`: explain the decision for task `i`; missing entries mean no.
    explain: &'a [bool],
}

impl PlanOptions<'_> {
    fn explains(&self, task_index: usize) -> bool {
        self.explain.get(task_index).copied().unwrap_or(false)
    }
}

/// Plans a batch of tasks, in the order given (the caller passes highest priority first).
///
/// Each task is ranked against a working copy of the agents in which the earlier tasks of this
/// batch are already reserved on their first candidate. Without that, every task of a batch would
/// see the same snapshot and pile onto the same best agent, and all but the first would fall
/// back at grant time. The result is a proposal only; the grant script has the final word.
///
/// Fleets above [`SAMPLE_ABOVE`] agents are ranked on a [`sample_candidates`] sample of
/// [`SAMPLE_SIZE`], so a strategy ranks at most that many agents however large the fleet. (The
/// working copy of the snapshot is still made once per batch: linear, but once per batch rather
/// than per decision, and smaller than reading the snapshot from Redis in the first place.)
///
/// Indexes a strategy returns that are out of range, repeated, or where the task does not fit
/// are skipped, so a faulty strategy degrades the plan but cannot make it unsafe.
pub fn plan_batch(
    strategy: &dyn Strategy,
    tasks: &[TaskView],
    agents: &[AgentView],
    ctx: &DecisionContext<'_>,
    max_candidates: usize,
) -> Vec<PlannedGrant> {
    plan_batch_with(
        strategy,
        tasks,
        agents,
        ctx,
        max_candidates,
        SAMPLE_ABOVE,
        SAMPLE_SIZE,
    )
}

/// [`plan_batch`] with explicit sampling thresholds: fleets larger than `sample_above` are ranked
/// on samples of `sample_size`. For tests and benchmarks that compare sampled and full ranking.
pub fn plan_batch_with(
    strategy: &dyn Strategy,
    tasks: &[TaskView],
    agents: &[AgentView],
    ctx: &DecisionContext<'_>,
    max_candidates: usize,
    sample_above: usize,
    sample_size: usize,
) -> Vec<PlannedGrant> {
    let options = PlanOptions {
        max_candidates,
        sample_above,
        sample_size,
        explain: &[],
    };
    plan(strategy, tasks, agents, ctx, options)
}

/// [`plan_batch`], and for each task `i` with `explain[i]` true, an [`Explanation`] of its
/// decision: every candidate the strategy ranked (on a sampled fleet, the sample), with its
/// score, best first. Explaining costs one more scoring of the task, so only asked-for decisions
/// pay it. The plan itself is the same as without explanations.
pub fn plan_batch_explained(
    strategy: &dyn Strategy,
    tasks: &[TaskView],
    agents: &[AgentView],
    ctx: &DecisionContext<'_>,
    max_candidates: usize,
    explain: &[bool],
) -> Vec<PlannedGrant> {
    let options = PlanOptions {
        max_candidates,
        sample_above: SAMPLE_ABOVE,
        sample_size: SAMPLE_SIZE,
        explain,
    };
    plan(strategy, tasks, agents, ctx, options)
}

fn plan(
    strategy: &dyn Strategy,
    tasks: &[TaskView],
    agents: &[AgentView],
    ctx: &DecisionContext<'_>,
    options: PlanOptions<'_>,
) -> Vec<PlannedGrant> {
    if agents.len() > options.sample_above {
        return plan_sampled(strategy, tasks, agents, ctx, options);
    }
    let mut working: Vec<AgentView> = agents.to_vec();
    let mut held = vec![0u32; working.len()];
    let mut plans = Vec::with_capacity(tasks.len());
    for (task_index, task) in tasks.iter().enumerate() {
        // A retry is not held for an agent it failed on: it goes elsewhere if it can.
        let hold = strategy
            .hold_for(task, &working, ctx, &held)
            .filter(|&i| !working.get(i).is_some_and(|a| task.avoids(&a.agent_id)));
        if let Some(agent) = hold {
            // The task waits in the queue for that agent; the next pass plans it again.
            if let Some(count) = held.get_mut(agent) {
                *count = count.saturating_add(1);
            }
            plans.push(PlannedGrant {
                task_index,
                candidates: Vec::new(),
                explanation: None,
                explores: None,
            });
            continue;
        }
        let ranked = strategy.rank(task, &working, ctx);
        let explanation = options
            .explains(task_index)
            .then(|| explain(strategy, task, &working, ctx, &ranked));
        let chosen = sanitise(ranked, task, &working, options.max_candidates);
        if let Some(agent) = chosen.first().and_then(|&first| working.get_mut(first)) {
            agent.reserved = agent.reserved.saturating_add(&task.required);
            agent.active_tasks = agent.active_tasks.saturating_add(1);
        }
        let candidates = chosen
            .iter()
            .filter_map(|&index| working.get(index))
            .map(|agent| agent.agent_id.to_string())
            .collect();
        plans.push(PlannedGrant {
            task_index,
            candidates,
            explanation,
            explores: strategy.explores(task, &working, ctx),
        });
    }
    plans
}

/// Large fleets: each task ranks a sample, and the batch's own reservations live in a small
/// copy-on-write overlay instead of a copy of the whole fleet, so a decision costs O(sample),
/// not O(fleet).
///
/// A strategy with [`Strategy::preferences`] is also offered the agents it prefers most: per
/// task type, the most preferred agents are found once per batch ([`PreferenceIndex`]), and each
/// task's views get the first [`PREFERRED`] agents with room and the first [`BUSY_OFFERED`]
/// without, besides the sample. So a large fleet neither loses its best agents to sampling nor
/// the choice of waiting for one of them ([`Strategy::hold_for`], asked as on a full plan).
fn plan_sampled(
    strategy: &dyn Strategy,
    tasks: &[TaskView],
    agents: &[AgentView],
    ctx: &DecisionContext<'_>,
    options: PlanOptions<'_>,
) -> Vec<PlannedGrant> {
    let mut fleet = Overlay::new(agents);
    let mut index = PreferenceIndex::default();
    let mut held: std::collections::HashMap<usize, u32> = std::collections::HashMap::new();
    // The offered agents and their views, reused from task to task.
    let mut offered: Vec<usize> = Vec::with_capacity(options.sample_size * 2);
    let mut views: Vec<AgentView> = Vec::with_capacity(offered.capacity());
    let mut held_views: Vec<u32> = Vec::with_capacity(offered.capacity());
    let mut plans = Vec::with_capacity(tasks.len());
    for (task_index, task) in tasks.iter().enumerate() {
        let order = index.order(strategy, task, agents, ctx, LOOK_DEEP * options.sample_size);
        offer(&mut offered, task, &fleet, order, options.sample_size);
        views.clear();
        views.extend(offered.iter().filter_map(|&i| fleet.view(i).cloned()));
        held_views.clear();
        held_views.extend(offered.iter().map(|i| held.get(i).copied().unwrap_or(0)));
        let hold = order
            .is_some()
            .then(|| strategy.hold_for(task, &views, ctx, &held_views));
        let hold = hold
            .flatten()
            .filter(|&i| !views.get(i).is_some_and(|a| task.avoids(&a.agent_id)));
        if let Some(&agent) = hold.and_then(|i| offered.get(i)) {
            *held.entry(agent).or_insert(0) += 1;
            plans.push(PlannedGrant {
                task_index,
                candidates: Vec::new(),
                explanation: None,
                explores: None,
            });
            continue;
        }
        let ranked: Vec<usize> = strategy.rank(task, &views, ctx);
        let explanation = options
            .explains(task_index)
            .then(|| explain(strategy, task, &views, ctx, &ranked));
        let chosen = sanitise(ranked, task, &views, options.max_candidates);
        let candidates = chosen
            .iter()
            .filter_map(|&i| views.get(i))
            .map(|a| a.agent_id.to_string())
            .collect();
        if let Some((&first, agent)) = chosen
            .first()
            .and_then(|&i| Some((offered.get(i)?, views.get(i)?)))
        {
            fleet.reserve(first, agent, task);
        }
        plans.push(PlannedGrant {
            task_index,
            candidates,
            explanation,
            explores: strategy.explores(task, &views, ctx),
        });
    }
    plans
}

/// How deep into the preference order a sampled decision looks, in sample sizes: the order is
/// kept only this deep, and the agents with room and busy ones are sought within it.
const LOOK_DEEP: usize = 4;
/// How many of a task's most preferred agents with room a sampled decision is offered.
pub(crate) const PREFERRED: usize = 16;
/// How many of its most preferred busy agents (capacity for the task, no room now) it is offered,
/// so it can decide to wait for one.
pub(crate) const BUSY_OFFERED: usize = 4;

/// The fleet as a sampled batch sees it: the snapshot plus the batch's own reservations, kept
/// copy-on-write for the few agents they touch.
struct Overlay<'a> {
    agents: &'a [AgentView],
    changed: std::collections::HashMap<usize, AgentView>,
    // Which agents are changed: a decision asks about ~k agents, and a bit test is much cheaper
    // than hashing every index (one linear allocation per batch).
    is_changed: Vec<bool>,
}

impl<'a> Overlay<'a> {
    fn new(agents: &'a [AgentView]) -> Overlay<'a> {
        Overlay {
            agents,
            changed: std::collections::HashMap::new(),
            is_changed: vec![false; agents.len()],
        }
    }

    fn len(&self) -> usize {
        self.agents.len()
    }

    fn view(&self, i: usize) -> Option<&AgentView> {
        if self.is_changed.get(i).copied().unwrap_or(false) {
            self.changed.get(&i)
        } else {
            self.agents.get(i)
        }
    }

    /// Records `task` as placed on agent `i`, whose current view is `agent`.
    fn reserve(&mut self, i: usize, agent: &AgentView, task: &TaskView) {
        let mut updated = agent.clone();
        updated.reserved = updated.reserved.saturating_add(&task.required);
        updated.active_tasks = updated.active_tasks.saturating_add(1);
        self.changed.insert(i, updated);
        if let Some(bit) = self.is_changed.get_mut(i) {
            *bit = true;
        }
    }
}

/// Per task type, the fleet's most preferred indexes by the strategy's [`Strategy::preferences`]
/// (best first, ties by index), built on first use in a batch. Preferences do not depend on load, so
/// the batch's own placements do not stale it.
#[derive(Default)]
struct PreferenceIndex {
    by_type: std::collections::HashMap<String, Option<Vec<usize>>>,
}

impl PreferenceIndex {
    /// The order for `task`'s type, its first `depth` agents (built on first use).
    fn order(
        &mut self,
        strategy: &dyn Strategy,
        task: &TaskView,
        agents: &[AgentView],
        ctx: &DecisionContext<'_>,
        depth: usize,
    ) -> Option<&[usize]> {
        if !self.by_type.contains_key(&task.task_type) {
            let order = sorted_by_preference(strategy, task, agents, ctx, depth);
            self.by_type.insert(task.task_type.clone(), order);
        }
        self.by_type.get(&task.task_type)?.as_deref()
    }
}

/// The `depth` most preferred agents' indexes for `task`, best first (ties by index), or `None`
/// when the strategy has no preferences. A partial selection, then a sort of what was selected:
/// linear in the fleet, once per task type per batch.
fn sorted_by_preference(
    strategy: &dyn Strategy,
    task: &TaskView,
    agents: &[AgentView],
    ctx: &DecisionContext<'_>,
    depth: usize,
) -> Option<Vec<usize>> {
    let keys = strategy.preferences(task, agents, ctx)?;
    let mut keyed: Vec<(f64, usize)> = keys
        .into_iter()
        .take(agents.len())
        .map(|key| if key.is_nan() { f64::INFINITY } else { key })
        .zip(0..)
        .collect();
    let order = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    if depth < keyed.len() {
        keyed.select_nth_unstable_by(depth, order);
        keyed.truncate(depth);
    }
    keyed.sort_by(order);
    Some(keyed.into_iter().map(|(_, i)| i).collect())
}

/// Fills `offered` with the agents a sampled decision for `task` sees: from the preference
/// order (when there is one) the first [`PREFERRED`] with room and [`BUSY_OFFERED`] busy ones that
/// could ever take it, looking at most [`LOOK_DEEP`] `× sample_size` deep; then a [`sample_candidates`]
/// sample of `sample_size` agents with room, without repeats.
fn offer(
    offered: &mut Vec<usize>,
    task: &TaskView,
    fleet: &Overlay<'_>,
    order: Option<&[usize]>,
    sample_size: usize,
) {
    offered.clear();
    let idle = crate::resources::Resources::default();
    let (mut with_room, mut busy) = (0, 0);
    for &i in order.unwrap_or(&[]).iter().take(LOOK_DEEP * sample_size) {
        let Some(agent) = fleet.view(i) else { continue };
        if fits(task, agent) && with_room < PREFERRED {
            with_room += 1;
            offered.push(i);
        } else if !fits(task, agent)
            && busy < BUSY_OFFERED
            && crate::resources::fits_within(&task.required, &idle, &agent.capacity)
        {
            busy += 1;
            offered.push(i);
        }
        if with_room == PREFERRED && busy == BUSY_OFFERED {
            break;
        }
    }
    let preferred = offered.len();
    let mut sample = Vec::with_capacity(sample_size.min(fleet.len()));
    sample_into(&mut sample, task, fleet.len(), sample_size, |i| {
        fleet.view(i).is_some_and(|a| fits(task, a))
    });
    for i in sample {
        if !offered[..preferred].contains(&i) {
            offered.push(i);
        }
    }
}

/// The ranking, sanitised and capped at `max_candidates`: in place, so a decision allocates
/// nothing for it (unless the task avoids some agents).
///
/// Agents the task avoids (where an attempt of it failed, [`TaskView::avoid_agents`]) are moved
/// after every other candidate, keeping the strategy's order within both groups, before the cap:
/// a retry goes to another agent whenever one fits, and to the same one when it is the only
/// one. Every strategy, and the simulator, get this rule here, in one place.
fn sanitise(
    mut ranked: Vec<usize>,
    task: &TaskView,
    agents: &[AgentView],
    max_candidates: usize,
) -> Vec<usize> {
    let avoiding = !task.avoid_agents.is_empty();
    let cap = if avoiding {
        ranked.len()
    } else {
        max_candidates
    };
    let mut kept = 0;
    for read in 0..ranked.len() {
        if kept >= cap {
            break;
        }
        let index = ranked[read];
        let ok = agents.get(index).is_some_and(|a| fits(task, a));
        if ok && !ranked[..kept].contains(&index) {
            ranked[kept] = index;
            kept += 1;
        }
    }
    ranked.truncate(kept);
    if avoiding {
        // A stable sort: `false` (not avoided) first, each group in the strategy's order.
        ranked.sort_by_key(|&i| agents.get(i).is_some_and(|a| task.avoids(&a.agent_id)));
        ranked.truncate(max_candidates);
    }
    ranked
}

/// A deterministic sample of at most `k` indexes of agents the task fits on.
///
/// Visits the fleet from a start derived from a hash of the task id, in steps of a stride
/// (also from the hash) coprime with the fleet size, so the walk reaches every agent once, and
/// stops after `k` fits. Different tasks start in different places, which spreads a batch over
/// the fleet; the same task and fleet always give the same sample, on every replica. When most
/// agents are full the walk goes further, up to the whole fleet, so a task that fits somewhere
/// is never starved by sampling; that is the only case where it costs more than `O(k)`.
pub fn sample_candidates(task: &TaskView, agents: &[AgentView], k: usize) -> Vec<usize> {
    let n = agents.len();
    if n == 0 || k == 0 {
        return Vec::new();
    }
    sample_by(task, n, k, |i| agents.get(i).is_some_and(|a| fits(task, a)))
}

/// The walk behind [`sample_candidates`], over `n` agents judged by `fits_at`.
fn sample_by(task: &TaskView, n: usize, k: usize, fits_at: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut sample = Vec::with_capacity(k.min(n));
    sample_into(&mut sample, task, n, k, fits_at);
    sample
}

/// [`sample_by`] into a buffer the caller reuses; `sample` is cleared first.
fn sample_into(
    sample: &mut Vec<usize>,
    task: &TaskView,
    n: usize,
    k: usize,
    fits_at: impl Fn(usize) -> bool,
) {
    sample.clear();
    if n == 0 || k == 0 {
        return;
    }
    let hash = fnv1a(task.task_id.as_bytes());
    let start = (hash % n as u64) as usize;
    let stride = coprime_stride(splitmix(hash), n);
    let mut index = start;
    for _ in 0..n {
        if fits_at(index) {
            sample.push(index);
            if sample.len() == k {
                break;
            }
        }
        index = (index + stride) % n;
    }
}

/// A stride in `1..n` (1 when `n < 3`) sharing no factor with `n`, so stepping by it modulo `n`
/// visits every index.
fn coprime_stride(seed: u64, n: usize) -> usize {
    if n < 3 {
        return 1;
    }
    let mut stride = 1 + (seed % (n as u64 - 1)) as usize;
    while gcd(stride, n) != 1 {
        stride = stride % (n - 1) + 1;
    }
    stride
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// FNV-1a: a fixed hash, unlike std's per-process seeded one, so every replica agrees.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64 finaliser: decorrelates the stride from the start.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
