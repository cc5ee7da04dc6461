//! Shared budgets in the simulator, with the grant and completion scripts' arithmetic
//! (`decision::budget`) at virtual time: a task is granted only when every budget its type draws
//! from allows the draw; each budget serves its tasks in queue order within a pass; a blocked
//! rate budget's tasks are left out of the dispatch window until its refill is due, when a wake
//! event dispatches again (as a live replica does); completion reconciles each rate draw with
//! the usage (the draw times a mean-1 log-normal factor, `usage_noise`) and releases concurrency
//! slots; a dying agent's tasks release their slots, with no refund.

use std::collections::HashMap;

use super::{Engine, Ev};
use crate::rng::SplitMix;
use crate::workload::{BudgetKindSpec, Workload};
use switchyard_decision::budget::{Bucket, Draw, Rate, hold, release};

/// Budget states and what was drawn and used, per budget.
pub(crate) struct SimBudgets {
    kinds: Vec<Option<Rate>>,
    limits: Vec<i64>,
    buckets: Vec<Bucket>,
    held: Vec<i64>,
    index: HashMap<String, usize>,
    /// Per budget: a rate budget blocked until this time (ms), if known.
    blocked_until: Vec<Option<i64>>,
    /// Per budget: (grant time ms, drawn, used) of every draw; `used` is set at completion.
    pub(crate) log: Vec<Vec<(i64, u64, u64)>>,
    /// Per task: where its current draws sit in `log`, to record the usage.
    entries: HashMap<usize, Vec<(usize, usize)>>,
    wake_at: Option<u64>,
}

impl SimBudgets {
    pub(crate) fn new(w: &Workload) -> SimBudgets {
        let kinds: Vec<Option<Rate>> = w
            .budgets
            .iter()
            .map(|b| (b.kind == BudgetKindSpec::Rate).then(|| b.rate()))
            .collect();
        SimBudgets {
            buckets: kinds
                .iter()
                .map(|k| k.map_or(Bucket { level: 0, at_ms: 0 }, |r| r.full(0)))
                .collect(),
            limits: w.budgets.iter().map(|b| b.limit as i64).collect(),
            held: vec![0; kinds.len()],
            index: w
                .budgets
                .iter()
                .enumerate()
                .map(|(i, b)| (b.name.clone(), i))
                .collect(),
            blocked_until: vec![None; kinds.len()],
            log: vec![Vec::new(); kinds.len()],
            entries: HashMap::new(),
            wake_at: None,
            kinds,
        }
    }

    /// Whether `draws` may all be taken at `now` (nothing is taken); else the wait of the first
    /// rate budget that refuses (`None` for a concurrency budget).
    fn allows(&mut self, draws: &[(usize, u64)], now: i64) -> Result<(), (usize, Option<i64>)> {
        for &(b, amount) in draws {
            let amount = amount as i64;
            match self.kinds[b] {
                Some(rate) => match rate.draw(self.buckets[b], now, amount) {
                    Draw::Taken(_) => {}
                    Draw::Wait { wait_ms } => return Err((b, Some(wait_ms))),
                    Draw::TooLarge => return Err((b, None)),
                },
                None => {
                    if hold(self.limits[b], self.held[b], amount).is_none() {
                        return Err((b, None));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Engine<'_> {
    fn now_ms(&self) -> i64 {
        (self.now_us / 1000) as i64
    }

    /// The budgets task `t` draws from, by index, with the amounts.
    pub(super) fn draws_of(&self, t: usize) -> Vec<(usize, u64)> {
        let ty = &self.w.tasks.types[self.stream[t].type_index];
        ty.budgets
            .iter()
            .filter_map(|(name, amount)| Some((*self.budgets.index.get(name)?, *amount)))
            .collect()
    }

    /// Forgets the rate budget blocks whose refill is due by now.
    pub(super) fn expire_budget_blocks(&mut self) {
        let now = self.now_ms();
        for until in &mut self.budgets.blocked_until {
            if until.is_some_and(|u| u <= now) {
                *until = None;
            }
        }
    }

    /// Whether `t` draws from a rate budget known to be blocked now (left out of the window);
    /// after [`Engine::expire_budget_blocks`] at this instant.
    pub(super) fn budget_blocked(&self, t: usize) -> bool {
        if self.budgets.kinds.is_empty() {
            return false;
        }
        self.draws_of(t)
            .iter()
            .any(|&(b, _)| self.budgets.blocked_until[b].is_some())
    }

    /// Whether every budget of `t` allows its draw now; a budget refusing is blocked for the
    /// rest of the pass (`blocked`), and a wake is scheduled for its refill.
    pub(super) fn budgets_allow(&mut self, t: usize, blocked: &mut Vec<usize>) -> bool {
        let draws = self.draws_of(t);
        if draws.iter().any(|(b, _)| blocked.contains(b)) {
            return false;
        }
        let now = self.now_ms();
        match self.budgets.allows(&draws, now) {
            Ok(()) => true,
            Err((b, wait)) => {
                blocked.push(b);
                if let Some(wait) = wait {
                    self.budgets.blocked_until[b] = Some(now + wait);
                    self.wake((now + wait) as u64 * 1000);
                }
                false
            }
        }
    }

    fn wake(&mut self, at_us: u64) {
        if self
            .budgets
            .wake_at
            .is_some_and(|w| w <= at_us && w > self.now_us)
        {
            return;
        }
        self.budgets.wake_at = Some(at_us);
        self.schedule(at_us, Ev::BudgetWake);
    }

    /// Takes `t`'s draws (after `budgets_allow` said yes, at the same instant).
    pub(super) fn take_budgets(&mut self, t: usize) {
        let now = self.now_ms();
        let mut entries = Vec::new();
        for (b, amount) in self.draws_of(t) {
            match self.budgets.kinds[b] {
                Some(rate) => {
                    if let Draw::Taken(next) =
                        rate.draw(self.budgets.buckets[b], now, amount as i64)
                    {
                        self.budgets.buckets[b] = next;
                    }
                }
                None => self.budgets.held[b] += amount as i64,
            }
            entries.push((b, self.budgets.log[b].len()));
            self.budgets.log[b].push((now, amount, amount));
        }
        self.budgets.entries.insert(t, entries);
    }

    /// `t`'s attempt ended: rate draws reconciled with the usage, slots released.
    pub(super) fn settle_budgets(&mut self, t: usize) {
        let now = self.now_ms();
        let noise = self.w.tasks.types[self.stream[t].type_index].usage_noise;
        let mut rng = SplitMix::keyed(
            self.w.seed ^ 0xb0d6e7,
            t as u64,
            u64::from(self.runs[t].grants),
        );
        for (b, at) in self.budgets.entries.remove(&t).unwrap_or_default() {
            let drawn = self.budgets.log[b][at].1;
            match self.budgets.kinds[b] {
                Some(rate) => {
                    let used = (drawn as f64 * rng.lognormal_unit_mean(noise)).round() as u64;
                    self.budgets.log[b][at].2 = used;
                    let bucket = self.budgets.buckets[b];
                    self.budgets.buckets[b] =
                        rate.reconcile(bucket, now, drawn as i64, used as i64);
                }
                None => self.budgets.held[b] = release(self.budgets.held[b], drawn as i64),
            }
        }
    }

    /// `t` was taken back from a dying agent: slots released, rate draws not refunded.
    pub(super) fn release_slots(&mut self, t: usize) {
        for (b, at) in self.budgets.entries.remove(&t).unwrap_or_default() {
            if self.budgets.kinds[b].is_none() {
                let drawn = self.budgets.log[b][at].1 as i64;
                self.budgets.held[b] = release(self.budgets.held[b], drawn);
            }
        }
    }

    /// Every concurrency budget within its limit: the engine's invariant.
    pub(super) fn check_budgets(&self) -> Result<(), String> {
        for (b, held) in self.budgets.held.iter().enumerate() {
            if self.budgets.kinds[b].is_none() && *held > self.budgets.limits[b] {
                return Err(format!(
                    "budget {b} holds {held} of {}",
                    self.budgets.limits[b]
                ));
            }
        }
        Ok(())
    }
}

/// What one budget gave in a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BudgetUsage {
    /// rate: units per period; concurrency: slots.
    pub limit: u64,
    /// rate: the period, seconds (0 for concurrency).
    pub period_s: f64,
    /// rate: the most drawn in any window of one period, as a share of the limit.
    pub max_drawn_share: f64,
    /// rate: the most used (actual usage, by grant time) in any window of one period, as a share
    /// of the limit.
    pub max_used_share: f64,
    /// Units drawn per period (fixed periods from 0; concurrency: grants per minute).
    pub drawn_per_period: Vec<u64>,
    /// Units used per period, by grant time.
    pub used_per_period: Vec<u64>,
}

/// The largest sum of amounts over any window of `period_ms` starting at an entry.
fn max_window(entries: &[(i64, u64)], period_ms: i64) -> u64 {
    let mut best = 0;
    for (i, (start, _)) in entries.iter().enumerate() {
        let sum: u64 = entries[i..]
            .iter()
            .take_while(|(t, _)| *t < start + period_ms)
            .map(|(_, a)| a)
            .sum();
        best = best.max(sum);
    }
    best
}

fn per_period(entries: &[(i64, u64)], period_ms: i64) -> Vec<u64> {
    let mut out = Vec::new();
    for (t, amount) in entries {
        let i = (t / period_ms) as usize;
        if out.len() <= i {
            out.resize(i + 1, 0);
        }
        out[i] += amount;
    }
    out
}

impl Engine<'_> {
    /// Per budget name, what it gave in the run.
    pub(crate) fn budget_usage(&self) -> std::collections::BTreeMap<String, BudgetUsage> {
        let mut out = std::collections::BTreeMap::new();
        for (spec, log) in self.w.budgets.iter().zip(&self.budgets.log) {
            let period_ms = match spec.kind {
                BudgetKindSpec::Rate => spec.period_ms().max(1),
                BudgetKindSpec::Concurrency => 60_000,
            };
            let drawn: Vec<(i64, u64)> = log.iter().map(|e| (e.0, e.1)).collect();
            let used: Vec<(i64, u64)> = log.iter().map(|e| (e.0, e.2)).collect();
            let share = |x: u64| x as f64 / spec.limit.max(1) as f64;
            let rate = spec.kind == BudgetKindSpec::Rate;
            out.insert(
                spec.name.clone(),
                BudgetUsage {
                    limit: spec.limit,
                    period_s: if rate { period_ms as f64 / 1000.0 } else { 0.0 },
                    max_drawn_share: if rate {
                        share(max_window(&drawn, period_ms))
                    } else {
                        0.0
                    },
                    max_used_share: if rate {
                        share(max_window(&used, period_ms))
                    } else {
                        0.0
                    },
                    drawn_per_period: per_period(&drawn, period_ms),
                    used_per_period: per_period(&used, period_ms),
                },
            );
        }
        out
    }
}
