//! Dispatch: planning rounds over the ready queue with the real `plan_batch`, and grants.

use std::cmp::Reverse;

use super::{Engine, Ev, Placer, SimError, to_us};
use crate::oracle::Oracle;
use crate::rng::SplitMix;
use switchyard_decision::resources::fits_within;
use switchyard_decision::{
    AgentView, DecisionContext, HeadHold, PlannedGrant, Resources, TaskEvent, TaskState, TaskView,
    beside_hold, choose_hold_agent, may_backfill, plan_batch,
};

impl Engine<'_> {
    /// One dispatch pass: planning rounds over the queue head, as the optimizer runs them.
    pub(super) fn dispatch(&mut self) -> Result<(), SimError> {
        let window = self.w.dispatch_window;
        loop {
            let head = self.queue_head(window);
            let views: Vec<AgentView> = self
                .agents
                .iter()
                .filter(|a| a.alive)
                .map(|a| a.view(self.now_us))
                .collect();
            if head.is_empty() || views.is_empty() {
                return Ok(());
            }
            let tasks: Vec<TaskView> = head.iter().map(|&t| self.task_view(t)).collect();
            let plans = self.plan_with_hold(&head, &tasks, &views);
            self.update_hold(&head, &tasks, &plans, &views);
            let mut granted = 0;
            let mut blocked = Vec::new();
            for plan in plans {
                let task = head[plan.task_index];
                if plan.candidates.is_empty() || !self.budgets_allow(task, &mut blocked) {
                    continue;
                }
                let fit = self.first_fitting(task, &plan.candidates);
                if let Some(agent) = fit {
                    self.grant(task, agent)?;
                    self.count_exploration(task, agent, plan.explores.as_deref());
                    granted += 1;
                }
            }
            if !(head.len() == window && granted == head.len()) {
                return Ok(());
            }
        }
    }

    /// A grant of `task` to `agent` that was sent to explore the agent's type is counted in the
    /// pair's pattern, as grant_tasks.lua counts it.
    fn count_exploration(&mut self, task: usize, agent: usize, explores: Option<&str>) {
        let agent_type = &self.agents[agent].type_name;
        if explores == Some(&**agent_type) {
            let task_type = &self.w.tasks.types[self.stream[task].type_index].name;
            self.patterns.record_exploration(task_type, agent_type);
        }
    }

    /// The first `window` ready tasks, in queue order, that some live agent could hold and
    /// whose rate budgets are not blocked. The walk stops once the window is full: a long
    /// queue costs a round only the tasks it skips, not its whole length.
    fn queue_head(&mut self, window: usize) -> Vec<usize> {
        self.expire_budget_blocks();
        let mut head = Vec::with_capacity(window);
        let mut scanned = 0;
        for &(_, _, t) in &self.ready {
            if head.len() == window {
                break;
            }
            scanned += 1;
            if self.coverable(t) && !self.budget_blocked(t) {
                head.push(t);
            }
        }
        self.work.rounds += 1;
        self.work.scanned += scanned;
        head
    }

    /// The first candidate that is alive, still has room and does not delay a held head task:
    /// the grant script's re-check.
    fn first_fitting(&self, task: usize, candidates: &[String]) -> Option<usize> {
        let required = &self.stream[task].required;
        let view = self.task_view(task);
        let hold = self.hold.as_ref().map(|(_, h)| h);
        candidates
            .iter()
            .filter_map(|id| self.agent_index.get(id).copied())
            .find(|&a| {
                let agent = &self.agents[a];
                agent.alive
                    && fits_within(required, &agent.reserved, &agent.capacity)
                    && may_backfill(&view, &agent.view(self.now_us), hold)
            })
    }

    /// Whether some live agent's capacity covers task `t` (the optimizer reads the queue head
    /// past the tasks that fit no agent's capacity).
    fn coverable(&self, t: usize) -> bool {
        let required = &self.stream[t].required;
        self.agents
            .iter()
            .any(|a| a.alive && fits_within(required, &Resources::default(), &a.capacity))
    }

    /// Plans the head as the optimizer does while a hold stands: the held task first against
    /// the whole fleet, the others beside the hold.
    fn plan_with_hold(
        &self,
        head: &[usize],
        tasks: &[TaskView],
        views: &[AgentView],
    ) -> Vec<PlannedGrant> {
        let hold = self.hold.as_ref().map(|(_, h)| h);
        let held = self
            .hold
            .as_ref()
            .and_then(|(t, _)| head.iter().position(|x| x == t));
        let mut plans = Vec::with_capacity(tasks.len());
        if let Some(i) = held {
            let mut own = self.plan(std::slice::from_ref(&tasks[i]), views);
            own.iter_mut().for_each(|p| p.task_index = i);
            plans.extend(own);
        }
        let rest: Vec<usize> = (0..tasks.len()).filter(|&i| Some(i) != held).collect();
        let rest_views: Vec<TaskView> = rest.iter().map(|&i| tasks[i].clone()).collect();
        // Without a hold the fleet is planned as it is: no copy of it per round.
        let mut others = match hold {
            Some(_) => self.plan(&rest_views, &beside_hold(views, hold)),
            None => self.plan(&rest_views, views),
        };
        others
            .iter_mut()
            .for_each(|p| p.task_index = rest[p.task_index]);
        plans.extend(others);
        plans
    }

    /// Holds an agent for the first task of the head the plan found no room for, as the
    /// optimizer's hold_head does (a hold for a task further ahead in the queue stands).
    fn update_hold(
        &mut self,
        head: &[usize],
        tasks: &[TaskView],
        plans: &[PlannedGrant],
        views: &[AgentView],
    ) {
        if !self.w.head_reservation {
            return;
        }
        if let Some((t, _)) = &self.hold
            && !self.runs[*t].is_ready()
        {
            self.hold = None;
        }
        let mut blocked: Vec<usize> = plans
            .iter()
            .filter(|p| p.candidates.is_empty())
            .map(|p| p.task_index)
            .collect();
        blocked.sort_unstable();
        let current = self.hold.as_ref().map(|(t, h)| (*t, h.agent_id.clone()));
        let chosen = blocked.into_iter().find_map(|i| {
            let keep = current
                .as_ref()
                .filter(|(t, _)| *t == head[i])
                .map(|(_, a)| &**a);
            choose_hold_agent(&tasks[i], views, keep).map(|agent| (i, agent))
        });
        let Some((i, agent_id)) = chosen else {
            return;
        };
        let t = head[i];
        if let Some((held, _)) = current
            && held != t
            && self.place_key(held) <= self.place_key(t)
        {
            return;
        }
        let hold = HeadHold {
            task_id: tasks[i].task_id.clone(),
            agent_id,
            required: tasks[i].required,
        };
        self.hold = Some((t, hold));
    }

    /// Where task `t` stands in the queue (smaller: further ahead).
    fn place_key(&self, t: usize) -> (Reverse<u8>, u64, usize) {
        (
            Reverse(self.stream[t].priority),
            self.place[t].unwrap_or(0),
            t,
        )
    }

    pub(super) fn task_view(&self, t: usize) -> TaskView {
        let task = &self.stream[t];
        TaskView {
            task_id: format!("t{t}"),
            task_type: self.w.tasks.types[task.type_index].name.clone(),
            priority: task.priority,
            required: task.required,
            seq: t as u64,
            estimated_duration_s: task.estimated_s,
            avoid_agents: self.runs[t]
                .failed_agents
                .iter()
                .map(|&a| self.agents[a].id.to_string())
                .collect(),
        }
    }

    pub(super) fn plan(&self, tasks: &[TaskView], views: &[AgentView]) -> Vec<PlannedGrant> {
        let ctx = DecisionContext::new(&self.patterns);
        let max = self.w.max_candidates;
        match self.placer {
            Placer::Strategy(s) => plan_batch(s, tasks, views, &ctx, max),
            Placer::Oracle => {
                let oracle = Oracle::new(
                    self.w,
                    &self.agent_index,
                    &self.agent_type,
                    &self.speed_factor,
                    self.releases(),
                );
                plan_batch(&oracle, tasks, views, &ctx, max)
            }
        }
    }

    /// Per agent, its running attempts as (seconds until they end, resources), soonest first:
    /// hidden truth only the oracle is given.
    fn releases(&self) -> Vec<Vec<(f64, Resources)>> {
        self.agents
            .iter()
            .map(|agent| {
                let mut ends: Vec<(f64, Resources)> = agent
                    .running
                    .iter()
                    .map(|&t| {
                        let run = &self.runs[t];
                        let end_us = run.last_start_us + to_us(run.outcome.1).max(1);
                        let left = end_us.saturating_sub(self.now_us) as f64 / 1e6;
                        (left, self.stream[t].required)
                    })
                    .collect();
                ends.sort_by(|a, b| a.0.total_cmp(&b.0));
                ends
            })
            .collect()
    }

    pub(super) fn grant(&mut self, t: usize, a: usize) -> Result<(), SimError> {
        if !self.runs[t].is_ready() {
            let run = &self.runs[t];
            let what = format!(
                "task {t} granted while {:?} (back-off {:?})",
                run.state, run.retry_at_us
            );
            return Err(self.invariant(what));
        }
        if let Some(&p) = self.stream[t]
            .parents
            .iter()
            .find(|&&p| !self.runs[p].is(TaskState::Completed))
        {
            return Err(self.invariant(format!("task {t} granted before its parent {p} completed")));
        }
        self.take_ready(t);
        self.agents[a].reserve(t, &self.stream[t].required);
        self.agents[a]
            .check_capacity()
            .map_err(|what| self.invariant(what))?;
        self.take_budgets(t);
        self.check_budgets().map_err(|what| self.invariant(what))?;
        let outcome = self.draw_attempt(t, a);
        if let Some(n) = self.grants_by_type.get_mut(self.agents[a].type_index) {
            *n += 1;
        }
        self.step(t, TaskEvent::Granted)?;
        let run = &mut self.runs[t];
        run.grants += 1;
        run.agent = Some(a);
        run.first_start_us.get_or_insert(self.now_us);
        run.last_start_us = self.now_us;
        run.outcome = outcome;
        let grant = run.grants;
        self.schedule(
            self.now_us + to_us(outcome.1).max(1),
            Ev::Finish { task: t, grant },
        );
        self.start_run_deadline(t, grant);
        Ok(())
    }

    /// Success and actual duration of the next attempt of `t` on `a`, from the hidden truth.
    /// Drawn from a stream keyed by (task, attempt), so every strategy meets the same luck.
    pub(super) fn draw_attempt(&self, t: usize, a: usize) -> (bool, f64) {
        let task = &self.stream[t];
        let truth = self.w.truth(
            self.agents[a].type_index,
            &self.w.tasks.types[task.type_index].name,
        );
        let mut rng = SplitMix::keyed(self.w.seed, t as u64, u64::from(self.runs[t].grants));
        let success = rng.unit() >= truth.failure_rate;
        let noise = rng.lognormal_unit_mean(truth.noise);
        (
            success,
            task.estimated_s * truth.speed * self.agents[a].speed_factor * noise,
        )
    }
}
