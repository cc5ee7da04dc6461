//! Metrics per strategy, `run_all`, and the text table.
//!
//! Completion time is submit → successful completion (so it includes waiting for parents, for
//! capacity and for retries). The JSON shape is `{"workload", "seed", "tasks", "agents",
//! "strategies": {"<name>": StrategyMetrics}}`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::engine::{Placer, SimError, simulate};
use super::outcome::Outcome;
use super::workload::Workload;
use switchyard_decision::StrategyKind;

/// The oracle's name in reports.
pub const ORACLE: &str = "oracle";

/// One strategy's results on one workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StrategyMetrics {
    /// Mean of submit → successful completion over completed tasks, seconds.
    pub mean_completion_s: f64,
    /// 95th percentile (nearest rank) of the same, seconds.
    pub p95_completion_s: f64,
    /// Time of the last completion or final failure, seconds.
    pub makespan_s: f64,
    /// Time-averaged mean reserved/capacity over live agents while work remained, 0..1.
    pub utilization: f64,
    /// Share of attempted tasks whose first attempt succeeded, 0..1.
    pub first_attempt_success: f64,
    /// Completion time weighted by (priority + 1), seconds.
    pub priority_weighted_latency_s: f64,
    /// Completed tasks per second of makespan.
    pub throughput_per_s: f64,
    /// Tasks that completed successfully.
    pub tasks_completed: usize,
    /// Tasks that failed for good (retries exhausted, or a parent failed).
    pub tasks_failed: usize,
    /// Tasks neither completed nor failed when the run ended (nothing could run them).
    pub tasks_unfinished: usize,
    /// Grants (attempts) in total.
    pub attempts: u64,
    /// Failed attempts run again (the workload's `[retry]`, or a type's `max_attempts`).
    pub retries: u64,
    /// Tasks failed for their queue timeout.
    pub queue_timeouts: u64,
    /// Attempts stopped at their run timeout.
    pub run_timeouts: u64,
    /// Grants per agent type.
    pub grants_by_agent_type: BTreeMap<String, u64>,
    /// Per tenant, when the workload has more than one: its share of the grants made while
    /// every tenant had a task ready, against its weight's share.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tenant_shares: BTreeMap<String, TenantShare>,
    /// Per task type: how long its tasks waited from submit (or from being ready) to their
    /// first grant.
    pub waits_by_type: BTreeMap<String, TypeWait>,
    /// Mean duration of the last attempt of completed tasks, seconds: the unit of
    /// [`TypeWait::max_wait_in_mean_runs`].
    pub mean_run_s: f64,
    /// Per shared budget: the most drawn and used in any period, and per period.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub budgets: BTreeMap<String, crate::engine::BudgetUsage>,
}

/// One tenant's share of the grants made while every tenant was backlogged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantShare {
    /// Its weight.
    pub weight: f64,
    /// Grants made to it while every tenant had a task ready.
    pub grants: u64,
    /// `grants` over all such grants, 0..1.
    pub share: f64,
    /// Its weight over all weights, 0..1.
    pub target: f64,
    /// `|share - target| / target`.
    pub deviation: f64,
}

/// How long the tasks of one type waited for their first grant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeWait {
    /// Tasks of the type that were granted.
    pub granted: usize,
    /// Mean wait (submit → first grant, dependencies included), seconds.
    pub mean_wait_s: f64,
    /// Longest wait, seconds.
    pub max_wait_s: f64,
    /// Longest wait in mean task durations (`mean_run_s`).
    pub max_wait_in_mean_runs: f64,
}

/// Every strategy on one workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// The workload's name.
    pub workload: String,
    /// Its seed.
    pub seed: u64,
    /// Tasks submitted.
    pub tasks: u32,
    /// Agents at the start.
    pub agents: usize,
    /// Results per strategy name (`StrategyKind::as_str`, plus `oracle`).
    pub strategies: BTreeMap<String, StrategyMetrics>,
}

impl StrategyMetrics {
    /// Summarises one run.
    pub fn from_outcome(o: &Outcome) -> StrategyMetrics {
        let times: Vec<(f64, u8)> = o
            .tasks
            .iter()
            .filter_map(|t| t.completed_s.map(|c| (c - t.submit_s, t.priority)))
            .collect();
        let (mean, p95, weighted) = completion_stats(times.clone());
        let n = times.len();
        let attempted = o.tasks.iter().filter_map(|t| t.first_attempt_ok);
        let (ok, tried) =
            attempted.fold((0usize, 0usize), |(ok, n), x| (ok + usize::from(x), n + 1));
        let failed = o.tasks.iter().filter(|t| t.failed).count();
        StrategyMetrics {
            mean_completion_s: mean,
            p95_completion_s: p95,
            makespan_s: o.makespan_s,
            utilization: o.utilization,
            first_attempt_success: ratio(ok as f64, tried as f64),
            priority_weighted_latency_s: weighted,
            throughput_per_s: ratio(n as f64, o.makespan_s),
            tasks_completed: n,
            tasks_failed: failed,
            tasks_unfinished: o.tasks.len() - n - failed,
            attempts: o.tasks.iter().map(|t| u64::from(t.grants)).sum(),
            retries: o.tasks.iter().map(|t| u64::from(t.retries)).sum(),
            queue_timeouts: o.tasks.iter().filter(|t| t.queue_timed_out).count() as u64,
            run_timeouts: o.tasks.iter().map(|t| u64::from(t.run_timeouts)).sum(),
            grants_by_agent_type: o.grants_by_agent_type.clone(),
            tenant_shares: tenant_shares(o),
            waits_by_type: waits_by_type(o),
            mean_run_s: mean_run_s(o),
            budgets: o.budgets.clone(),
        }
    }
}

fn tenant_shares(o: &Outcome) -> BTreeMap<String, TenantShare> {
    if o.backlogged_grants.len() < 2 {
        return BTreeMap::new();
    }
    let total: u64 = o.backlogged_grants.values().map(|(_, n)| n).sum();
    let weights: f64 = o.backlogged_grants.values().map(|(w, _)| w).sum();
    o.backlogged_grants
        .iter()
        .map(|(tenant, &(weight, grants))| {
            let share = ratio(grants as f64, total as f64);
            let target = ratio(weight, weights);
            let deviation = ratio((share - target).abs(), target);
            let row = TenantShare {
                weight,
                grants,
                share,
                target,
                deviation,
            };
            (tenant.clone(), row)
        })
        .collect()
}

fn mean_run_s(o: &Outcome) -> f64 {
    let runs: Vec<f64> = o
        .tasks
        .iter()
        .filter_map(|t| Some(t.completed_s? - t.last_start_s?))
        .collect();
    ratio(runs.iter().sum(), runs.len() as f64)
}

fn waits_by_type(o: &Outcome) -> BTreeMap<String, TypeWait> {
    let unit = mean_run_s(o);
    let mut waits: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for t in &o.tasks {
        if let Some(start) = t.first_start_s {
            waits
                .entry(&t.task_type)
                .or_default()
                .push(start - t.submit_s);
        }
    }
    waits
        .into_iter()
        .map(|(name, w)| {
            let max = w.iter().copied().fold(0.0, f64::max);
            let row = TypeWait {
                granted: w.len(),
                mean_wait_s: ratio(w.iter().sum(), w.len() as f64),
                max_wait_s: max,
                max_wait_in_mean_runs: ratio(max, unit),
            };
            (name.to_owned(), row)
        })
        .collect()
}

/// `a / b`, or 0 when `b` is not positive (JSON has no NaN).
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Mean, nearest-rank p95, and (priority + 1)-weighted mean of (completion time, priority).
fn completion_stats(mut times: Vec<(f64, u8)>) -> (f64, f64, f64) {
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = times.len();
    let mean = ratio(times.iter().map(|t| t.0).sum(), n as f64);
    let rank = ((n as f64 * 0.95).ceil() as usize).clamp(1, n.max(1)) - 1;
    let p95 = times.get(rank).map_or(0.0, |t| t.0);
    let weight: f64 = times.iter().map(|t| f64::from(t.1) + 1.0).sum();
    let weighted: f64 = times.iter().map(|t| t.0 * (f64::from(t.1) + 1.0)).sum();
    (mean, p95, ratio(weighted, weight))
}

/// Runs every [`StrategyKind`] and the oracle on the same workload (same seed, same tasks).
pub fn run_all(workload: &Workload) -> Result<SimReport, SimError> {
    let mut strategies = BTreeMap::new();
    for kind in StrategyKind::ALL {
        let strategy = kind.build();
        let outcome = simulate(workload, Placer::Strategy(strategy.as_ref()))?;
        strategies.insert(
            kind.as_str().to_owned(),
            StrategyMetrics::from_outcome(&outcome),
        );
    }
    let outcome = simulate(workload, Placer::Oracle)?;
    strategies.insert(ORACLE.to_owned(), StrategyMetrics::from_outcome(&outcome));
    Ok(SimReport {
        workload: workload.name.clone(),
        seed: workload.seed,
        tasks: workload.tasks.count,
        agents: workload.agent_count(),
        strategies,
    })
}

impl SimReport {
    /// Strategy names in display order: `StrategyKind::ALL`, then the oracle.
    pub fn names(&self) -> Vec<&str> {
        StrategyKind::ALL
            .iter()
            .map(|k| k.as_str())
            .chain([ORACLE])
            .filter(|n| self.strategies.contains_key(*n))
            .collect()
    }

    /// A plain-text table, one row per strategy; `vs rr` is the mean completion time relative
    /// to round_robin.
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "workload {}  seed {}  tasks {}  agents {}\n",
            self.workload, self.seed, self.tasks, self.agents
        );
        let _ = writeln!(
            out,
            "{:<14} {:>9} {:>9} {:>8} {:>9} {:>7} {:>6} {:>9} {:>7} {:>6} {:>6} {:>7} {:>9}",
            "strategy",
            "mean s",
            "p95 s",
            "vs rr",
            "makespan",
            "util",
            "1st ok",
            "prio-w s",
            "thru/s",
            "done",
            "failed",
            "retries",
            "q/r t-out"
        );
        let rr = self
            .strategies
            .get("round_robin")
            .map(|m| m.mean_completion_s);
        for name in self.names() {
            if let Some(m) = self.strategies.get(name) {
                out.push_str(&table_row(name, m, rr));
            }
        }
        self.render_shares(&mut out);
        self.render_waits(&mut out);
        for name in self.names() {
            let budgets = self.strategies.get(name).map(|m| &m.budgets);
            for (budget, u) in budgets.into_iter().flatten() {
                out.push_str(&budget_row(name, budget, u));
            }
        }
        out
    }

    /// Tenant shares while all were backlogged, one row per strategy (when there are tenants).
    fn render_shares(&self, out: &mut String) {
        let Some(first) = self
            .strategies
            .values()
            .find(|m| !m.tenant_shares.is_empty())
        else {
            return;
        };
        let _ = write!(
            out,
            "\ntenant share of grants while all backlogged (target)\n{:<14}",
            "strategy"
        );
        for (tenant, s) in &first.tenant_shares {
            let _ = write!(
                out,
                " {:>20}",
                format!("{tenant} ({:.1}%)", s.target * 100.0)
            );
        }
        let _ = writeln!(out, " {:>10}", "worst dev");
        for name in self.names() {
            let Some(m) = self.strategies.get(name) else {
                continue;
            };
            let _ = write!(out, "{name:<14}");
            for s in m.tenant_shares.values() {
                let _ = write!(out, " {:>19.1}%", s.share * 100.0);
            }
            let worst = m
                .tenant_shares
                .values()
                .map(|s| s.deviation)
                .fold(0.0, f64::max);
            let _ = writeln!(out, " {:>9.1}%", worst * 100.0);
        }
    }

    /// Longest wait for a first grant per task type, in mean task durations.
    fn render_waits(&self, out: &mut String) {
        let Some(first) = self.strategies.values().next() else {
            return;
        };
        if first.waits_by_type.len() < 2 {
            return;
        }
        let _ = write!(
            out,
            "\nlongest wait for a first grant, in mean task durations\n{:<14}",
            "strategy"
        );
        for name in first.waits_by_type.keys() {
            let _ = write!(out, " {name:>12}");
        }
        let _ = writeln!(out, " {:>10}", "mean run s");
        for name in self.names() {
            let Some(m) = self.strategies.get(name) else {
                continue;
            };
            let _ = write!(out, "{name:<14}");
            for w in m.waits_by_type.values() {
                let _ = write!(out, " {:>12.2}", w.max_wait_in_mean_runs);
            }
            let _ = writeln!(out, " {:>10.2}", m.mean_run_s);
        }
    }
}

/// One line per budget: a rate budget's most drawn and used in any window of one period, as a
/// share of its limit, and the range of what was drawn per period; a concurrency budget's grants
/// per minute (the per-period lists are in the JSON).
fn budget_row(name: &str, budget: &str, u: &crate::engine::BudgetUsage) -> String {
    let periods = &u.drawn_per_period;
    let (lo, hi) = periods
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let lo = if periods.is_empty() { 0 } else { lo };
    if u.period_s > 0.0 {
        format!(
            "{name:<14} budget {budget}: {} per {}s; most drawn in any window {:.1}%, most used {:.1}%; drawn per period {lo}..{hi}\n",
            u.limit,
            u.period_s,
            u.max_drawn_share * 100.0,
            u.max_used_share * 100.0
        )
    } else {
        format!(
            "{name:<14} budget {budget}: {} slots; grants per minute {lo}..{hi}\n",
            u.limit
        )
    }
}

/// One line of the table; `rr` is round_robin's mean completion time, if known.
fn table_row(name: &str, m: &StrategyMetrics, rr: Option<f64>) -> String {
    let vs = match rr {
        Some(base) if base > 0.0 => format!("{:+.1}%", (m.mean_completion_s / base - 1.0) * 100.0),
        _ => "-".to_owned(),
    };
    format!(
        "{:<14} {:>9.2} {:>9.2} {:>8} {:>9.1} {:>6.1}% {:>5.1}% {:>9.2} {:>7.3} {:>6} {:>6} {:>7} {:>9}\n",
        name,
        m.mean_completion_s,
        m.p95_completion_s,
        vs,
        m.makespan_s,
        m.utilization * 100.0,
        m.first_attempt_success * 100.0,
        m.priority_weighted_latency_s,
        m.throughput_per_s,
        m.tasks_completed,
        m.tasks_failed,
        m.retries,
        format!("{}/{}", m.queue_timeouts, m.run_timeouts)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::TaskRecord;

    fn record(submit: f64, done: Option<f64>, priority: u8, first: Option<bool>) -> TaskRecord {
        TaskRecord {
            submit_s: submit,
            priority,
            parents: vec![],
            first_start_s: done.map(|_| submit),
            last_start_s: done.map(|_| submit),
            completed_s: done,
            failed: done.is_none() && first.is_some(),
            grants: u32::from(first.is_some()),
            first_attempt_ok: first,
            retries: 0,
            queue_timed_out: false,
            run_timeouts: 0,
            task_type: "t".into(),
        }
    }

    #[test]
    fn metrics_from_hand_built_outcome() {
        let mut tasks: Vec<TaskRecord> = (0..19)
            .map(|i| record(0.0, Some(1.0 + i as f64), 0, Some(true)))
            .collect();
        tasks.push(record(0.0, Some(100.0), 9, Some(false)));
        tasks.push(record(0.0, None, 0, Some(false)));
        tasks.push(record(0.0, None, 0, None));
        let o = Outcome {
            tasks,
            makespan_s: 100.0,
            utilization: 0.5,
            grants_by_agent_type: BTreeMap::new(),
            backlogged_grants: BTreeMap::new(),
            budgets: BTreeMap::new(),
        };
        let m = StrategyMetrics::from_outcome(&o);
        assert_eq!(m.tasks_completed, 20);
        assert_eq!(m.tasks_failed, 1);
        assert_eq!(m.tasks_unfinished, 1);
        let mean = ((1..=19).sum::<i32>() as f64 + 100.0) / 20.0;
        assert!((m.mean_completion_s - mean).abs() < 1e-9);
        assert_eq!(m.p95_completion_s, 19.0); // nearest rank: 19th of 20
        assert!((m.first_attempt_success - 19.0 / 21.0).abs() < 1e-9);
        assert!((m.throughput_per_s - 0.2).abs() < 1e-9);
        // The priority-9 task weighs 10 against 1 for each other.
        let w = ((1..=19).sum::<i32>() as f64 + 1000.0) / 29.0;
        assert!((m.priority_weighted_latency_s - w).abs() < 1e-9);
    }

    #[test]
    fn empty_outcome_gives_zeros_not_nan() {
        let o = Outcome {
            tasks: vec![],
            makespan_s: 0.0,
            utilization: 0.0,
            grants_by_agent_type: BTreeMap::new(),
            backlogged_grants: BTreeMap::new(),
            budgets: BTreeMap::new(),
        };
        let m = StrategyMetrics::from_outcome(&o);
        assert_eq!(m.mean_completion_s, 0.0);
        assert_eq!(m.p95_completion_s, 0.0);
        assert_eq!(m.throughput_per_s, 0.0);
        assert_eq!(m.first_attempt_success, 0.0);
    }
}
