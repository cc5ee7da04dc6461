//! The task stream of a workload, drawn once from its seed.
//!
//! Every strategy is run against exactly the same tasks (arrival times, types, priorities,
//! estimates and dependency DAG), so differences between strategies come from their decisions.

use super::rng::SplitMix;
use super::workload::{ArrivalKind, TaskStreamSpec, Workload};
use switchyard_decision::Resources;

/// One task as submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct SimTask {
    /// Index of its type in `tasks.types`.
    pub type_index: usize,
    /// Priority, higher first.
    pub priority: u8,
    /// Resources it needs, milli-units.
    pub required: Resources,
    /// The estimate strategies see, seconds.
    pub estimated_s: f64,
    /// Virtual submission time, seconds.
    pub submit_s: f64,
    /// Earlier tasks that must complete successfully before this one may start.
    pub parents: Vec<usize>,
    /// Length of the longest dependency chain ending here (1 for a task without parents).
    pub depth: u32,
    /// Its tenant (its type's, `default` when the type names none).
    pub tenant: String,
}

/// Draws the task stream of `w`; the same workload always gives the same tasks.
pub fn generate(w: &Workload) -> Vec<SimTask> {
    let mut rng = SplitMix::new(w.seed);
    let spec = &w.tasks;
    let total_weight: f64 = spec.types.iter().map(|t| t.weight).sum();
    let mut tasks: Vec<SimTask> = Vec::with_capacity(spec.count as usize);
    let mut clock = 0.0;
    for i in 0..spec.count as usize {
        clock = arrival_time(spec, i, clock, &mut rng);
        let type_index = pick_type(spec, total_weight, &mut rng);
        let ty = &spec.types[type_index];
        let [plo, phi] = ty.priority;
        let [dlo, dhi] = ty.estimated_duration_s;
        let priority = rng.range_inclusive(u64::from(plo), u64::from(phi)) as u8;
        let estimated_s = if dhi > dlo { rng.range(dlo, dhi) } else { dlo };
        let parents = pick_parents(spec, &tasks, &mut rng);
        let depth = 1 + parents.iter().map(|&p| tasks[p].depth).max().unwrap_or(0);
        tasks.push(SimTask {
            type_index,
            priority,
            required: ty.required_milli,
            estimated_s,
            submit_s: clock,
            parents,
            depth,
            tenant: ty
                .tenant
                .clone()
                .unwrap_or_else(|| switchyard_decision::DEFAULT_TENANT.to_owned()),
        });
    }
    tasks
}

fn arrival_time(spec: &TaskStreamSpec, i: usize, clock: f64, rng: &mut SplitMix) -> f64 {
    match spec.arrival {
        ArrivalKind::Poisson => clock + rng.exponential(spec.rate_per_s.unwrap_or(1.0)),
        ArrivalKind::Bursty => {
            let size = spec.burst_size.unwrap_or(1).max(1) as usize;
            (i / size) as f64 * spec.burst_every_s.unwrap_or(1.0)
        }
    }
}

fn pick_type(spec: &TaskStreamSpec, total_weight: f64, rng: &mut SplitMix) -> usize {
    let mut x = rng.range(0.0, total_weight);
    for (i, t) in spec.types.iter().enumerate() {
        if x < t.weight {
            return i;
        }
        x -= t.weight;
    }
    spec.types.len().saturating_sub(1)
}

/// Parents among the `lookback` most recent tasks whose chains are still short enough.
fn pick_parents(spec: &TaskStreamSpec, tasks: &[SimTask], rng: &mut SplitMix) -> Vec<usize> {
    let d = &spec.dependencies;
    if d.probability <= 0.0 || rng.unit() >= d.probability {
        return Vec::new();
    }
    let start = tasks.len().saturating_sub(d.lookback as usize);
    let eligible: Vec<usize> = (start..tasks.len())
        .filter(|&j| tasks[j].depth < d.max_depth)
        .collect();
    if eligible.is_empty() {
        return Vec::new();
    }
    let want = rng.range_inclusive(1, u64::from(d.fan_in)) as usize;
    let mut parents = Vec::with_capacity(want);
    for _ in 0..want * 3 {
        if parents.len() == want {
            break;
        }
        let pick = eligible[rng.range_inclusive(0, eligible.len() as u64 - 1) as usize];
        if !parents.contains(&pick) {
            parents.push(pick);
        }
    }
    parents.sort_unstable();
    parents
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(extra: &str, arrival: &str) -> Workload {
        let text = format!(
            r#"
seed = 9
[[agent_types]]
name = "a"
count = 1
capacity = {{ cpu = 4 }}
[tasks]
count = 200
{arrival}
[[tasks.types]]
name = "x"
weight = 3
priority = [2, 4]
resources = {{ cpu = 1 }}
estimated_duration_s = [1.0, 3.0]
[[tasks.types]]
name = "y"
priority = [7, 7]
resources = {{ cpu = 2 }}
estimated_duration_s = [5.0, 5.0]
{extra}
"#
        );
        Workload::parse(&text).unwrap()
    }

    #[test]
    fn same_seed_same_tasks() {
        let w = workload("", "arrival = \"poisson\"\nrate_per_s = 2.0");
        assert_eq!(generate(&w), generate(&w));
    }

    #[test]
    fn tasks_follow_their_types() {
        let w = workload("", "arrival = \"poisson\"\nrate_per_s = 2.0");
        let tasks = generate(&w);
        let mut last = 0.0;
        for t in &tasks {
            assert!(t.submit_s >= last);
            last = t.submit_s;
            if t.type_index == 0 {
                assert!((2..=4).contains(&t.priority));
                assert!((1.0..=3.0).contains(&t.estimated_s));
            } else {
                assert_eq!(t.priority, 7);
                assert_eq!(t.estimated_s, 5.0);
            }
        }
        let x = tasks.iter().filter(|t| t.type_index == 0).count();
        assert!((120..=180).contains(&x), "weight 3:1 gave {x} of 200");
    }

    #[test]
    fn bursts_arrive_together() {
        let w = workload(
            "",
            "arrival = \"bursty\"\nburst_size = 50\nburst_every_s = 10.0",
        );
        let tasks = generate(&w);
        assert_eq!(tasks[49].submit_s, 0.0);
        assert_eq!(tasks[50].submit_s, 10.0);
        assert_eq!(tasks[199].submit_s, 30.0);
    }

    #[test]
    fn dependencies_are_earlier_and_depth_bounded() {
        let deps =
            "[tasks.dependencies]\nprobability = 0.9\nfan_in = 3\nmax_depth = 4\nlookback = 10";
        let w = workload(deps, "arrival = \"poisson\"\nrate_per_s = 2.0");
        let tasks = generate(&w);
        assert!(tasks.iter().any(|t| t.parents.len() > 1));
        assert!(tasks.iter().any(|t| t.depth == 4));
        for (i, t) in tasks.iter().enumerate() {
            assert!(t.depth <= 4);
            for &p in &t.parents {
                assert!(p < i && i - p <= 10);
            }
        }
    }
}
