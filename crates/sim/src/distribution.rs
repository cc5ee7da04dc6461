//! How the strategies do across many workloads (`switchyard sim --generate`): per strategy the
//! distribution of the gain captured and of the ratio to the oracle, on mean completion time.
//!
//! * gain captured = (round_robin − strategy) / (round_robin − oracle): 1 is the oracle's
//!   improvement over round_robin, 0 is none of it, negative is worse than round_robin. Where
//!   the oracle is within [`MIN_ORACLE_EDGE`] of round_robin the denominator is noise, so the
//!   workload is left out of the gain distribution (and counted), but kept for the ratio.
//! * ratio to oracle = strategy / oracle: 1 is as good as the oracle, higher is worse.
//!
//! Percentiles are nearest-rank (as the report's p95): the q-quantile of n sorted values is the
//! ⌈q·n⌉-th (at least the first). [`run_many`] runs the workloads on a few threads and returns
//! the reports in input order, so nothing depends on scheduling.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use serde::Serialize;

use super::engine::SimError;
use super::report::{ORACLE, SimReport, run_all};
use super::workload::Workload;
use switchyard_decision::StrategyKind;

/// The oracle must beat round_robin's mean completion by at least this share of it for the gain
/// to be defined.
pub const MIN_ORACLE_EDGE: f64 = 0.05;
/// The strategy whose lowest gains are listed for study.
pub const STUDIED: &str = "adaptive";
const BASELINE: &str = "round_robin";

/// One simulated workload and what the distribution needs to know about it.
#[derive(Debug, Clone)]
pub struct RunInput {
    pub report: SimReport,
    /// Offered load of the workload (`generate::offered_load`).
    pub offered_load: f64,
    /// Where the workload was written, if it was.
    pub file: Option<String>,
}

/// The distribution of one strategy over the workloads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyDistribution {
    /// Median gain captured (over the workloads where it is defined); `None` if there are none.
    pub gain_median: Option<f64>,
    /// 10th percentile of the gain captured: the bad side.
    pub gain_p10: Option<f64>,
    /// Lowest gain captured.
    pub gain_worst: Option<f64>,
    /// Median ratio of mean completion to the oracle's.
    pub ratio_median: Option<f64>,
    /// 90th percentile of the ratio: the bad side.
    pub ratio_p90: Option<f64>,
    /// Highest ratio.
    pub ratio_worst: Option<f64>,
    /// Workloads where its p95 completion was the worst of all strategies (the oracle aside;
    /// ties count for each strategy tied).
    pub worst_p95_count: usize,
    /// Workloads where its first-attempt success was at least round_robin's.
    pub first_ok_at_least_rr: usize,
}

/// One workload's line in the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadLine {
    pub index: usize,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub agents: usize,
    pub tasks: u32,
    pub offered_load: f64,
    pub round_robin_mean_s: f64,
    pub oracle_mean_s: f64,
    /// Whether the oracle beat round_robin by [`MIN_ORACLE_EDGE`] or more.
    pub gain_defined: bool,
    /// Gain captured per strategy (empty when not defined).
    pub gain: BTreeMap<String, f64>,
    /// Ratio to the oracle per strategy.
    pub ratio: BTreeMap<String, f64>,
}

/// The whole distribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    pub seed: u64,
    pub workloads: usize,
    pub tasks_scale: f64,
    /// Workloads in the gain distribution.
    pub gain_workloads: usize,
    /// Workloads left out of it: the oracle within [`MIN_ORACLE_EDGE`] of round_robin.
    pub gain_excluded: usize,
    pub strategies: BTreeMap<String, StrategyDistribution>,
    /// The workloads where [`STUDIED`] captured the least gain, lowest first (indices into
    /// `per_workload`).
    pub lowest_adaptive_gain: Vec<usize>,
    pub per_workload: Vec<WorkloadLine>,
}

/// Runs every workload under all strategies and the oracle on `threads` threads; the reports
/// come back in input order. `on_done(index, report)` is called on the calling thread as each
/// finishes (in completion order: for progress only).
pub fn run_many(
    workloads: &[Workload],
    threads: usize,
    on_done: &mut dyn FnMut(usize, &SimReport),
) -> Result<Vec<SimReport>, SimError> {
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    let mut results: Vec<Option<Result<SimReport, SimError>>> = vec![None; workloads.len()];
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(w) = workloads.get(i) else { break };
                    if tx.send((i, run_all(w))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, result) in rx {
            if let Ok(report) = &result {
                on_done(i, report);
            }
            results[i] = Some(result);
        }
    });
    // A worker that panicked leaves its slot empty; the scope has already re-raised the panic.
    results.into_iter().flatten().collect()
}

/// The distribution over `runs` (in workload order); `worst` is how many lowest-gain workloads
/// of [`STUDIED`] to name.
pub fn summarize(seed: u64, tasks_scale: f64, runs: &[RunInput], worst: usize) -> Distribution {
    let per_workload: Vec<WorkloadLine> = runs.iter().enumerate().map(line).collect();
    let gain_workloads = per_workload.iter().filter(|l| l.gain_defined).count();
    let strategies = strategy_names()
        .map(|name| {
            let gains: Vec<f64> = per_workload
                .iter()
                .filter_map(|l| l.gain.get(name).copied())
                .collect();
            let ratios: Vec<f64> = per_workload
                .iter()
                .filter_map(|l| l.ratio.get(name).copied())
                .collect();
            let reports = runs.iter().map(|r| &r.report);
            let dist = StrategyDistribution {
                gain_median: nearest_rank(&gains, 0.5),
                gain_p10: nearest_rank(&gains, 0.1),
                gain_worst: nearest_rank(&gains, 0.0),
                ratio_median: nearest_rank(&ratios, 0.5),
                ratio_p90: nearest_rank(&ratios, 0.9),
                ratio_worst: nearest_rank(&ratios, 1.0),
                worst_p95_count: reports
                    .clone()
                    .filter(|r| worst_p95(r).contains(&name))
                    .count(),
                first_ok_at_least_rr: reports.filter(|r| first_ok_at_least_rr(r, name)).count(),
            };
            (name.to_owned(), dist)
        })
        .collect();
    Distribution {
        seed,
        workloads: runs.len(),
        tasks_scale,
        gain_workloads,
        gain_excluded: runs.len() - gain_workloads,
        strategies,
        lowest_adaptive_gain: lowest_gain(&per_workload, STUDIED, worst),
        per_workload,
    }
}

fn strategy_names() -> impl Iterator<Item = &'static str> {
    StrategyKind::ALL.iter().map(|k| k.as_str())
}

fn mean_of(report: &SimReport, name: &str) -> Option<f64> {
    report.strategies.get(name).map(|m| m.mean_completion_s)
}

fn line((index, run): (usize, &RunInput)) -> WorkloadLine {
    let r = &run.report;
    let rr = mean_of(r, BASELINE).unwrap_or(0.0);
    let oracle = mean_of(r, ORACLE).unwrap_or(0.0);
    let mut gain = BTreeMap::new();
    let mut ratio = BTreeMap::new();
    for name in strategy_names() {
        let Some(mean) = mean_of(r, name) else {
            continue;
        };
        if let Some(g) = gain_captured(rr, mean, oracle) {
            gain.insert(name.to_owned(), g);
        }
        if oracle > 0.0 {
            ratio.insert(name.to_owned(), mean / oracle);
        }
    }
    WorkloadLine {
        index,
        name: r.workload.clone(),
        file: run.file.clone(),
        agents: r.agents,
        tasks: r.tasks,
        offered_load: run.offered_load,
        round_robin_mean_s: rr,
        oracle_mean_s: oracle,
        gain_defined: gain_defined(rr, oracle),
        gain,
        ratio,
    }
}

/// Whether the oracle beats round_robin's mean by at least [`MIN_ORACLE_EDGE`] of it.
pub fn gain_defined(round_robin: f64, oracle: f64) -> bool {
    round_robin > 0.0 && round_robin - oracle >= MIN_ORACLE_EDGE * round_robin
}

/// (round_robin − strategy) / (round_robin − oracle), when [`gain_defined`].
pub fn gain_captured(round_robin: f64, strategy: f64, oracle: f64) -> Option<f64> {
    gain_defined(round_robin, oracle).then(|| (round_robin - strategy) / (round_robin - oracle))
}

/// The q-quantile of `values` by nearest rank (q = 0: the least, q = 1: the greatest).
pub fn nearest_rank(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
    sorted.get(rank - 1).copied()
}

/// The strategies (not the oracle) with the highest p95 completion in `report`, ties included.
pub fn worst_p95(report: &SimReport) -> Vec<&'static str> {
    let p95 = |name: &str| report.strategies.get(name).map(|m| m.p95_completion_s);
    let worst = strategy_names()
        .filter_map(p95)
        .fold(f64::NEG_INFINITY, f64::max);
    strategy_names().filter(|n| p95(n) == Some(worst)).collect()
}

fn first_ok_at_least_rr(report: &SimReport, name: &str) -> bool {
    let ok = |n: &str| report.strategies.get(n).map(|m| m.first_attempt_success);
    matches!((ok(name), ok(BASELINE)), (Some(s), Some(rr)) if s >= rr)
}

/// Indices of the `k` lines with the lowest gain of `name` (lowest first, ties by index).
fn lowest_gain(lines: &[WorkloadLine], name: &str, k: usize) -> Vec<usize> {
    let mut with_gain: Vec<(f64, usize)> = lines
        .iter()
        .filter_map(|l| l.gain.get(name).map(|g| (*g, l.index)))
        .collect();
    with_gain.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    with_gain.into_iter().take(k).map(|(_, i)| i).collect()
}

impl Distribution {
    /// The readable table: one row per strategy, then the workloads to study.
    pub fn render_table(&self) -> String {
        let mut out = format!(
            "{} generated workloads, seed {}, tasks scale {}; gain captured over {} of them ({} left out: oracle within {:.0}% of round_robin)\n",
            self.workloads,
            self.seed,
            self.tasks_scale,
            self.gain_workloads,
            self.gain_excluded,
            MIN_ORACLE_EDGE * 100.0
        );
        let _ = writeln!(
            out,
            "{:<14} {:>9} {:>9} {:>11} {:>10} {:>10} {:>12} {:>10} {:>11}",
            "strategy",
            "gain med",
            "gain p10",
            "gain worst",
            "ratio med",
            "ratio p90",
            "ratio worst",
            "worst p95",
            "1st ok>=rr"
        );
        for name in strategy_names() {
            if let Some(d) = self.strategies.get(name) {
                let _ = writeln!(
                    out,
                    "{name:<14} {:>9} {:>9} {:>11} {:>10} {:>10} {:>12} {:>10} {:>11}",
                    percent(d.gain_median),
                    percent(d.gain_p10),
                    percent(d.gain_worst),
                    times(d.ratio_median),
                    times(d.ratio_p90),
                    times(d.ratio_worst),
                    format!("{}/{}", d.worst_p95_count, self.workloads),
                    format!("{}/{}", d.first_ok_at_least_rr, self.workloads),
                );
            }
        }
        self.render_lowest(&mut out);
        out
    }

    fn render_lowest(&self, out: &mut String) {
        if self.lowest_adaptive_gain.is_empty() {
            return;
        }
        let _ = writeln!(out, "\nlowest {STUDIED} gain captured:");
        for &i in &self.lowest_adaptive_gain {
            let Some(l) = self.per_workload.get(i) else {
                continue;
            };
            let _ = writeln!(
                out,
                "  {:<12} gain {:>7}  ratio {:>6}  agents {:>4}  tasks {:>5}  load {:>3.0}%  rr {:.1}s  oracle {:.1}s{}",
                l.name,
                percent(l.gain.get(STUDIED).copied()),
                times(l.ratio.get(STUDIED).copied()),
                l.agents,
                l.tasks,
                l.offered_load * 100.0,
                l.round_robin_mean_s,
                l.oracle_mean_s,
                l.file
                    .as_deref()
                    .map(|f| format!("  {f}"))
                    .unwrap_or_default()
            );
        }
    }
}

fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{:.0}%", x * 100.0))
}

fn times(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x"))
}

#[cfg(test)]
#[path = "distribution_tests.rs"]
mod tests;
