//! The workload's hidden truth, acted out by live agents: how long each attempt takes and
//! whether it fails, drawn exactly as the simulator draws it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::fleet::WorkModel;
use switchyard_protocol::TaskGrant;
use switchyard_sim::Workload;
use switchyard_sim::rng::SplitMix;

/// The task id of one attempt of stream task `index`. Each retry is a new task on the wire
/// (a finished task id cannot be submitted again), so the attempt is part of the id.
pub(crate) fn task_id(index: usize, attempt: u32) -> String {
    format!("t{index:05}-a{attempt}")
}

/// `(index, attempt)` of an id made by [`task_id`].
pub(crate) fn parse_task_id(id: &str) -> Option<(usize, u32)> {
    let (index, attempt) = id.strip_prefix('t')?.split_once("-a")?;
    Some((index.parse().ok()?, attempt.parse().ok()?))
}

/// One agent's degradation factor (1 = healthy), shared between the driver, which applies the
/// workload's `degrade` events, and the agent's work model, which reads it when an attempt
/// starts.
#[derive(Clone)]
pub(crate) struct SpeedFactor(Arc<AtomicU64>);

impl SpeedFactor {
    pub(crate) fn healthy() -> SpeedFactor {
        SpeedFactor(Arc::new(AtomicU64::new(1.0f64.to_bits())))
    }

    pub(crate) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    /// Multiplies the factor (repeated degradations compound, as in the simulator). Only the
    /// driver writes, so load-then-store cannot lose an update.
    pub(crate) fn multiply(&self, by: f64) {
        self.0.store((self.get() * by).to_bits(), Ordering::Relaxed);
    }
}

/// How an agent of type `type_index` works: an attempt takes `estimate × speed × degradation ×
/// noise` and fails with the type's `failure_rate` for the grant's task type. Luck is drawn from
/// the simulator's stream for (task, grants before this one), counting the earlier attempts and
/// the earlier grants of this attempt (a grant cut short by a dying agent), so every strategy,
/// live or simulated, meets the same luck for the same attempt. The estimate on the wire is
/// already in compressed (real) seconds, so the sleep is too.
pub(crate) fn work_model(
    workload: Arc<Workload>,
    type_index: usize,
    factor: SpeedFactor,
) -> WorkModel {
    Arc::new(move |grant: &TaskGrant| {
        let estimate = grant.estimated_duration_s.max(0.0);
        let Some((index, attempt)) = parse_task_id(&grant.task_id) else {
            return (Duration::from_secs_f64(estimate), true);
        };
        let truth = workload.truth(type_index, &grant.task_type);
        let earlier_grants =
            u64::from(attempt.saturating_sub(1)) + grant.grant_seq.saturating_sub(1);
        let mut rng = SplitMix::keyed(workload.seed, index as u64, earlier_grants);
        let success = rng.unit() >= truth.failure_rate;
        let noise = rng.lognormal_unit_mean(truth.noise);
        let seconds = estimate * truth.speed * factor.get() * noise;
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        (Duration::from_secs_f64(seconds), success)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Arc<Workload> {
        let text = r#"
seed = 3
[[agent_types]]
name = "slow"
count = 1
capacity = { cpu = 4 }
truth.job = { speed = 2.0, failure_rate = 0.5 }
[tasks]
count = 10
arrival = "poisson"
rate_per_s = 1.0
[[tasks.types]]
name = "job"
priority = [1, 1]
resources = { cpu = 1 }
estimated_duration_s = [1.0, 1.0]
"#;
        Arc::new(Workload::parse(text).expect("valid workload"))
    }

    fn grant(task_id: &str, grant_seq: u64) -> TaskGrant {
        TaskGrant {
            task_id: task_id.into(),
            task_type: "job".into(),
            agent_id: "slow-000".into(),
            priority: 1,
            resources: Default::default(),
            estimated_duration_s: 0.1,
            grant_seq,
            submitter: "driver".into(),
            explanation: None,
        }
    }

    #[test]
    fn task_ids_round_trip() {
        assert_eq!(parse_task_id(&task_id(42, 3)), Some((42, 3)));
        assert_eq!(parse_task_id("x42-a3"), None);
        assert_eq!(parse_task_id("t42"), None);
    }

    #[test]
    fn work_follows_the_truth_and_degradation() {
        let factor = SpeedFactor::healthy();
        let work = work_model(workload(), 0, factor.clone());
        let (took, _) = work(&grant(&task_id(0, 1), 1));
        assert!((took.as_secs_f64() - 0.2).abs() < 1e-9, "{took:?}");
        factor.multiply(4.0);
        factor.multiply(2.0);
        let (took, _) = work(&grant(&task_id(0, 1), 1));
        assert!((took.as_secs_f64() - 1.6).abs() < 1e-9, "{took:?}");
    }

    #[test]
    fn luck_is_keyed_by_attempt_not_by_call() {
        let work = work_model(workload(), 0, SpeedFactor::healthy());
        let outcomes: Vec<bool> = (0..200)
            .map(|i| work(&grant(&task_id(i, 1), 1)).1)
            .collect();
        let again: Vec<bool> = (0..200)
            .map(|i| work(&grant(&task_id(i, 1), 1)).1)
            .collect();
        assert_eq!(outcomes, again);
        let failures = outcomes.iter().filter(|ok| !**ok).count();
        assert!(
            (70..=130).contains(&failures),
            "{failures} of 200 at rate 0.5"
        );
    }
}
