//! The matrix's results: one row per scenario, as a markdown table or JSON.

use serde::Serialize;

use super::invariants::{DeadLetters, Outcomes, Recovery, Reservations};

/// What one scenario showed.
#[derive(Debug, Default, Serialize)]
pub struct ScenarioReport {
    pub scenario: &'static str,
    pub fault: &'static str,
    /// What exactly was done (which node, how many agents...).
    pub note: String,
    /// Seconds from the start of the load to the start of the fault, and the fault's length.
    pub fault_at_s: f64,
    pub fault_for_s: f64,
    /// Submits JetStream stored (the tasks checked).
    pub tasks: u64,
    /// Submits never stored, even after retrying for a minute.
    pub not_accepted: u64,
    pub outcomes: Outcomes,
    /// Grants the agents received (re-grants included).
    pub grants: u64,
    pub double_worked: Vec<String>,
    /// Times an agent was handed more than its capacity (what the agents saw).
    pub over_capacity_seen: Vec<String>,
    /// Agent reservations sampled from Redis.
    pub reservations: Reservations,
    pub dead_letters: DeadLetters,
    pub recovery: Recovery,
    /// Agents Redis holds as dead at the end that the fault did not kill: alive, working, and
    /// judged dead (their leases ran out as far as the optimizers could tell).
    pub live_agents_marked_dead: Vec<String>,
    /// Agents the fault killed that Redis holds as dead at the end.
    pub killed_agents_marked_dead: u64,
    /// Longest time from an agent's kill to the re-grant of a task it was working on, and how
    /// many of those tasks were never granted again.
    pub regranted_after_kill_s: Option<f64>,
    pub never_regranted: u64,
    /// Optimizer processes that exited during start-up and were started again (as a supervisor
    /// would).
    pub optimizer_start_retries: u32,
    /// Completions agents could not get stored within two minutes.
    pub unreported_completions: u64,
    /// Every invariant broken, in words; empty when the scenario passed.
    pub violations: Vec<String>,
    pub passed: bool,
}

impl ScenarioReport {
    /// Fills in `violations` and `passed` from the counts.
    pub(crate) fn judge(&mut self) {
        let mut v = Vec::new();
        let o = &self.outcomes;
        if o.lost > 0 {
            v.push(format!("{} tasks lost (no record in Redis)", o.lost));
        }
        if o.stuck > 0 {
            v.push(format!("{} tasks not terminal at the deadline", o.stuck));
        }
        if self.not_accepted > 0 {
            v.push(format!("{} submits never accepted", self.not_accepted));
        }
        if !self.double_worked.is_empty() {
            v.push(format!(
                "{} overlapping grants of one task",
                self.double_worked.len()
            ));
        }
        let over = self.over_capacity_seen.len() + self.reservations.over.len();
        if over > 0 {
            v.push(format!("{over} over-capacity observations"));
        }
        if self.recovery.measured && self.recovery.first_grant_s.is_none() {
            v.push("no grant after the fault".to_string());
        }
        self.passed = v.is_empty();
        self.violations = v;
    }
}

/// The whole matrix.
#[derive(Debug, Serialize)]
pub struct ChaosReport {
    pub agents: usize,
    pub rate: f64,
    pub duration_s: f64,
    pub lease_s: f64,
    pub seed: u64,
    pub scenarios: Vec<ScenarioReport>,
    pub passed: bool,
}

fn seconds(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_string(), |s| format!("{s:.1} s"))
}

/// A recovery time, or why there is none.
fn recovered(r: &Recovery, s: Option<f64>) -> String {
    if r.measured {
        seconds(s)
    } else {
        "n/a (load over)".to_string()
    }
}

/// The markdown table, then the violations and notes of each scenario below it.
pub fn render_table(report: &ChaosReport) -> String {
    let mut out = String::from(
        "| scenario | tasks | lost | stuck | double-worked | over-capacity | dead letters: took effect / not / unknown | first grant | grant rate back | all terminal after load | verdict |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in &report.scenarios {
        let d = &s.dead_letters;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} | {} | {} |\n",
            s.scenario,
            s.tasks,
            s.outcomes.lost,
            s.outcomes.stuck,
            s.double_worked.len(),
            s.over_capacity_seen.len() + s.reservations.over.len(),
            d.took_effect,
            d.did_not,
            d.unknown,
            recovered(&s.recovery, s.recovery.first_grant_s),
            recovered(&s.recovery, s.recovery.rate_back_s),
            seconds(s.outcomes.drained_after_s),
            if s.passed { "pass" } else { "FAIL" },
        ));
    }
    for s in &report.scenarios {
        out.push_str(&notes(s));
    }
    out
}

/// A scenario's fault, violations, stragglers and other findings, one per line.
fn notes(s: &ScenarioReport) -> String {
    let mut lines: Vec<String> = s
        .violations
        .iter()
        .chain(&s.double_worked)
        .chain(&s.outcomes.stragglers)
        .chain(&s.over_capacity_seen)
        .chain(&s.reservations.over)
        .chain(&s.dead_letters.errors)
        .cloned()
        .collect();
    if !s.live_agents_marked_dead.is_empty() {
        lines.push(format!(
            "live agents marked dead: {}",
            s.live_agents_marked_dead.join(", ")
        ));
    }
    if let Some(after) = s.regranted_after_kill_s {
        lines.push(format!(
            "killed agents ({} marked dead): their tasks re-granted within {after:.1} s of the kill ({} never)",
            s.killed_agents_marked_dead, s.never_regranted
        ));
    }
    if s.optimizer_start_retries > 0 {
        lines.push(format!(
            "optimizer processes exited during start-up and were started again: {}",
            s.optimizer_start_retries
        ));
    }
    let mut out = format!("\n{}: {} ({}).", s.scenario, s.fault, s.note);
    for line in lines {
        out.push_str(&format!("\n  - {line}"));
    }
    out
}
