//! The discrete-event loop.
//!
//! Events (arrivals, attempt completions, retry re-queues, agent events) sit in a binary heap
//! ordered by virtual time, then by insertion. After all events of one instant are applied, the
//! ready queue (priority descending, then by the task's fair place among tenants — plain FIFO for
//! one tenant — as in Redis, with the decision crate's [`FairClock`]) is dispatched the way
//! the optimizer dispatches: the queue head of `dispatch_window` tasks is planned with the real
//! [`plan_batch`](switchyard_decision::plan_batch) against a snapshot of the live agents and the learned patterns, each task is
//! granted on its first candidate that still fits, and rounds repeat while a whole window was
//! granted. Every completion updates the agent's score with [`updated_score`](switchyard_decision::updated_score) and the pattern
//! table with [`PatternTable::record`], the same learning as the live system.
//!
//! With `head_reservation` the head hold is kept as the optimizer keeps it (one hold, for the
//! first task of the queue that fits nowhere, with the decision crate's rules).
//!
//! Capacity and dependency invariants are checked on every grant; a violation ends the run with
//! [`SimError::Invariant`] instead of a panic.

mod budgets;
mod dispatch;
mod lifecycle;
mod limits;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use super::outcome::Outcome;
use super::state::{Run, SimAgent};
use super::tasks::{SimTask, generate};
use super::workload::Workload;
use lifecycle::build_agents;
use switchyard_decision::{FairClock, HeadHold, PatternTable, Strategy, TaskEvent, TaskState};

pub use budgets::BudgetUsage;
pub use lifecycle::agent_id;

/// Who places tasks: one of the real strategies, or the oracle.
#[derive(Clone, Copy)]
pub enum Placer<'a> {
    /// A real strategy, exactly as the optimizer runs it.
    Strategy(&'a dyn Strategy),
    /// The [`Oracle`](super::oracle::Oracle), rebuilt each round from the current hidden truth.
    Oracle,
}

/// Why a simulation stopped early.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// The engine caught itself breaking a rule of the real system.
    #[error("simulation invariant broken at t={at_s:.3}s: {what}")]
    Invariant {
        /// Virtual time, seconds.
        at_s: f64,
        /// What went wrong.
        what: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    AgentEvent(usize),
    Finish {
        task: usize,
        grant: u32,
    },
    Requeue(usize),
    Arrival(usize),
    /// The queue deadline of a task's wait before grant number `grants + 1`.
    QueueDeadline {
        task: usize,
        grants: u32,
    },
    /// The run deadline of one grant.
    RunDeadline {
        task: usize,
        grant: u32,
    },
    /// A blocked rate budget refills enough: dispatch again.
    BudgetWake,
}

/// Work counters of one run: what must stay flat per event as runs get longer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Work {
    /// The most events the heap ever held at once.
    pub peak_heap: usize,
    /// Dispatch rounds, and ready-queue entries they looked at in all.
    pub rounds: u64,
    pub scanned: u64,
}

fn to_us(s: f64) -> u64 {
    (s.max(0.0) * 1e6).round() as u64
}

/// Runs `workload` once with `placer`.
pub fn simulate(workload: &Workload, placer: Placer<'_>) -> Result<Outcome, SimError> {
    let mut engine = Engine::new(workload, placer);
    engine.run()?;
    Ok(engine.into_outcome())
}

pub(crate) struct Engine<'w> {
    w: &'w Workload,
    placer: Placer<'w>,
    pub(crate) stream: Vec<SimTask>,
    pub(crate) runs: Vec<Run>,
    pub(crate) agents: Vec<SimAgent>,
    agent_index: HashMap<String, usize>,
    agent_type: Vec<usize>,
    speed_factor: Vec<f64>,
    patterns: PatternTable,
    heap: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    next_seq: u64,
    /// Every task's (arrival time µs, index) in the order they arrive, and how many of them
    /// were put in the heap so far.
    arrivals: Vec<(u64, usize)>,
    next_arrival: usize,
    /// What the run cost, counted (the regression guard's measure, not reported).
    pub(crate) work: Work,
    ready: BTreeSet<(Reverse<u8>, u64, usize)>,
    /// Fairness between tenants: the virtual clock, each task's place once queued (kept across
    /// retries), ready tasks per tenant, and grants per tenant made while every tenant of the
    /// workload had a task ready.
    fair: FairClock,
    place: Vec<Option<u64>>,
    ready_by_tenant: BTreeMap<String, usize>,
    pub(crate) backlogged_grants: BTreeMap<String, u64>,
    /// The head hold: (task index, hold).
    hold: Option<(usize, HeadHold)>,
    pub(crate) now_us: u64,
    finished: usize,
    pub(crate) last_finish_us: u64,
    pub(crate) util_area: f64,
    pub(crate) alive_area: f64,
    pub(crate) grants_by_type: Vec<u64>,
    pub(crate) budgets: budgets::SimBudgets,
}

impl<'w> Engine<'w> {
    fn new(w: &'w Workload, placer: Placer<'w>) -> Engine<'w> {
        let stream = generate(w);
        let runs = linked_runs(&stream);
        let agents = build_agents(w);
        let agent_index = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.to_string(), i))
            .collect();
        let agent_type = agents.iter().map(|a| a.type_index).collect();
        let speed_factor = vec![1.0; agents.len()];
        let mut engine = Engine {
            w,
            placer,
            stream,
            runs,
            agents,
            agent_index,
            agent_type,
            speed_factor,
            patterns: PatternTable::new(),
            heap: BinaryHeap::new(),
            next_seq: 0,
            arrivals: Vec::new(),
            next_arrival: 0,
            work: Work::default(),
            ready: BTreeSet::new(),
            fair: FairClock::default(),
            place: Vec::new(),
            ready_by_tenant: BTreeMap::new(),
            backlogged_grants: BTreeMap::new(),
            hold: None,
            now_us: 0,
            finished: 0,
            last_finish_us: 0,
            util_area: 0.0,
            alive_area: 0.0,
            grants_by_type: vec![0; w.agent_types.len()],
            budgets: budgets::SimBudgets::new(w),
        };
        engine.place = vec![None; engine.stream.len()];
        for task in &engine.stream {
            engine
                .ready_by_tenant
                .entry(task.tenant.clone())
                .or_insert(0);
            engine
                .backlogged_grants
                .entry(task.tenant.clone())
                .or_insert(0);
        }
        engine.arrivals = arrival_order(&engine.stream);
        // Arrival `i` keeps sequence number `i` (it used to be scheduled up front, first), so
        // the order of events, ties included, is what it always was.
        engine.next_seq = engine.stream.len() as u64;
        engine.schedule_next_arrival();
        for (i, e) in w.events.iter().enumerate() {
            engine.schedule(to_us(e.at_s), Ev::AgentEvent(i));
        }
        engine
    }

    fn schedule(&mut self, at_us: u64, ev: Ev) {
        self.heap.push(Reverse((at_us, self.next_seq, ev)));
        self.next_seq += 1;
        self.work.peak_heap = self.work.peak_heap.max(self.heap.len());
    }

    /// Puts the next arrival in the heap. Arrivals enter one at a time, each when the one
    /// before it is taken out, so the heap holds what is in flight (attempts, timers, one
    /// arrival), not every task yet to come: its cost per event does not grow with the run.
    fn schedule_next_arrival(&mut self) {
        if let Some(&(at_us, i)) = self.arrivals.get(self.next_arrival) {
            self.heap.push(Reverse((at_us, i as u64, Ev::Arrival(i))));
            self.next_arrival += 1;
            self.work.peak_heap = self.work.peak_heap.max(self.heap.len());
        }
    }

    fn run(&mut self) -> Result<(), SimError> {
        while let Some(Reverse((at, _, ev))) = self.heap.pop() {
            if matches!(ev, Ev::Arrival(_)) {
                // Before the same-instant peek below: the next arrival may be at `at` too.
                self.schedule_next_arrival();
            }
            self.advance(at);
            self.apply(ev)?;
            let same_instant = self.heap.peek().is_some_and(|Reverse((t, _, _))| *t == at);
            if !same_instant {
                self.dispatch()?;
            }
        }
        self.check_end()
    }

    /// After the last event nothing may still run or hold a reservation.
    fn check_end(&self) -> Result<(), SimError> {
        if let Some(t) = self.runs.iter().position(|r| r.is(TaskState::Granted)) {
            return Err(self.invariant(format!("task {t} still running after the last event")));
        }
        for agent in &self.agents {
            agent
                .check_capacity()
                .map_err(|what| self.invariant(what))?;
        }
        Ok(())
    }

    /// Moves the clock, integrating utilization while work remains.
    fn advance(&mut self, at_us: u64) {
        if at_us > self.now_us && self.finished < self.runs.len() {
            let dt = (at_us - self.now_us) as f64 / 1e6;
            let live = self.agents.iter().filter(|a| a.alive);
            let (sum, count) = live.fold((0.0, 0.0), |(s, n), a| {
                (
                    s + switchyard_decision::resources::utilization(&a.reserved, &a.capacity),
                    n + 1.0,
                )
            });
            self.util_area += sum * dt;
            self.alive_area += count * dt;
        }
        self.now_us = self.now_us.max(at_us);
    }

    fn apply(&mut self, ev: Ev) -> Result<(), SimError> {
        match ev {
            Ev::Arrival(t) => self.arrive(t),
            Ev::Requeue(t) => self.retry_due(t),
            Ev::Finish { task, grant } => self.finish(task, grant),
            Ev::AgentEvent(i) => self.agent_event(i),
            Ev::QueueDeadline { task, grants } => self.queue_deadline(task, grants),
            Ev::RunDeadline { task, grant } => self.run_deadline(task, grant),
            Ev::BudgetWake => Ok(()),
        }
    }

    /// Task `t` arrives in the state machine's initial state: queued, waiting for its parents,
    /// or failed because a parent already failed for good.
    pub(crate) fn arrive(&mut self, t: usize) -> Result<(), SimError> {
        let parent_failed = self.stream[t]
            .parents
            .iter()
            .any(|&p| self.runs[p].is(TaskState::Failed));
        let state = self.runs[t]
            .arrive(parent_failed)
            .map_err(|what| self.invariant(format!("task {t} {what}")))?;
        if state != TaskState::Failed {
            // Its fair place is taken at submit, waiting on parents or not, as submit_task does.
            self.fair_place(t);
        }
        match state {
            TaskState::Queued => {
                self.make_ready(t);
                self.start_queue_deadline(t);
            }
            TaskState::WaitingDependencies => self.start_queue_deadline(t),
            TaskState::Failed => {
                self.terminal();
                self.fail_dependents(t)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The back-off of `t`'s failed attempt is over: it is ready to be granted again.
    fn retry_due(&mut self, t: usize) -> Result<(), SimError> {
        if self.runs[t].retry_at_us.take().is_none() {
            return Err(self.invariant(format!("task {t} retried without a failed attempt")));
        }
        self.make_ready(t);
        self.start_queue_deadline(t);
        Ok(())
    }

    /// Moves task `t` by `event` through the state machine; an event it refuses is a broken
    /// invariant of the simulation, not something to paper over.
    pub(crate) fn step(&mut self, t: usize, event: TaskEvent) -> Result<TaskState, SimError> {
        self.runs[t]
            .step(event)
            .map_err(|what| self.invariant(format!("task {t}: {what}")))
    }

    /// Task `t`'s fair place among the tenants, taken the first time it is asked for (at its
    /// submit) and kept (as a requeue keeps its score in Redis).
    fn fair_place(&mut self, t: usize) -> u64 {
        if let Some(p) = self.place[t] {
            return p;
        }
        let tenant = &self.stream[t].tenant;
        let cost = switchyard_decision::task_cost(self.w.tenant_weight(tenant));
        let p = self.fair.enqueue(tenant, cost);
        self.place[t] = Some(p);
        p
    }

    /// Puts queued task `t` in the ready queue, where dispatch finds it, at its fair place.
    pub(crate) fn make_ready(&mut self, t: usize) {
        let place = self.fair_place(t);
        if self.ready.insert(self.ready_key(t, place)) {
            let tenant = self.stream[t].tenant.clone();
            *self.ready_by_tenant.entry(tenant).or_insert(0) += 1;
        }
    }

    pub(crate) fn type_name(&self, type_index: usize) -> &str {
        self.w
            .tasks
            .types
            .get(type_index)
            .map_or("", |t| t.name.as_str())
    }

    pub(crate) fn tenant_weight(&self, tenant: &str) -> f64 {
        self.w.tenant_weight(tenant)
    }

    fn ready_key(&self, t: usize, place: u64) -> (Reverse<u8>, u64, usize) {
        (Reverse(self.stream[t].priority), place, t)
    }

    /// Takes task `t` out of the ready queue without a grant (its queue timeout ran out): the
    /// virtual clock stays, and nothing counts towards the shares.
    pub(crate) fn drop_ready(&mut self, t: usize) {
        let place = self.place[t].unwrap_or(0);
        if self.ready.remove(&self.ready_key(t, place)) {
            if let Some(n) = self.ready_by_tenant.get_mut(&self.stream[t].tenant) {
                *n -= 1;
            }
        }
    }

    /// Takes granted task `t` out of the ready queue: the virtual clock moves to its place, and
    /// its tenant's grant counts towards the shares if every tenant had a task ready.
    pub(crate) fn take_ready(&mut self, t: usize) {
        let place = self.place[t].unwrap_or(0);
        // From the first task finished on: before it, grants fill an empty fleet in arrival
        // order, which shares no contended capacity.
        let backlogged = self.finished > 0 && self.ready_by_tenant.values().all(|&n| n > 0);
        if self.ready.remove(&self.ready_key(t, place)) {
            let tenant = &self.stream[t].tenant;
            if let Some(n) = self.ready_by_tenant.get_mut(tenant) {
                *n -= 1;
            }
            if backlogged {
                *self.backlogged_grants.entry(tenant.clone()).or_insert(0) += 1;
            }
        }
        self.fair.granted(place);
        if self.hold.as_ref().is_some_and(|(held, _)| *held == t) {
            self.hold = None;
        }
    }

    fn invariant(&self, what: String) -> SimError {
        SimError::Invariant {
            at_s: self.now_us as f64 / 1e6,
            what,
        }
    }

    fn into_outcome(self) -> Outcome {
        Outcome::from_engine(&self)
    }
}

/// Every task as (arrival time µs, index), in the order the heap would pop them: by time, then
/// by index (an arrival's sequence number).
fn arrival_order(stream: &[SimTask]) -> Vec<(u64, usize)> {
    let mut order: Vec<(u64, usize)> = stream
        .iter()
        .enumerate()
        .map(|(i, t)| (to_us(t.submit_s), i))
        .collect();
    // Already sorted for every arrival kind there is; sorting keeps it right for any other.
    order.sort_unstable();
    order
}

/// A fresh [`Run`] per task, each knowing its children.
fn linked_runs(stream: &[SimTask]) -> Vec<Run> {
    let mut runs: Vec<Run> = stream
        .iter()
        .map(|t| Run::new(t.parents.len() as u32))
        .collect();
    for (i, t) in stream.iter().enumerate() {
        for &p in &t.parents {
            if let Some(parent) = runs.get_mut(p) {
                parent.children.push(i);
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests;
