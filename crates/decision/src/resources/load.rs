//! Fit checks and load figures over resource vectors.
//!
//! Kept apart from the vector type because these are the rules placement decides by, and the
//! Redis grant script mirrors [`fits_within`] exactly.

use super::{ResourceKind, Resources};

/// Whether `required` can be added on top of `reserved` without exceeding `capacity` in any kind.
///
/// This is the same check the Redis grant script makes atomically; here it is used to plan.
/// An overflowing sum counts as "does not fit" rather than wrapping.
pub fn fits_within(required: &Resources, reserved: &Resources, capacity: &Resources) -> bool {
    ResourceKind::ALL.into_iter().all(|kind| {
        reserved
            .get(kind)
            .checked_add(required.get(kind))
            .is_some_and(|total| total <= capacity.get(kind))
    })
}

/// Ratios `reserved / capacity` for every kind the agent has any capacity of.
///
/// Kinds with zero capacity are skipped: the agent simply does not offer them, which says
/// nothing about how loaded it is.
fn ratios<'a>(reserved: &'a Resources, capacity: &'a Resources) -> impl Iterator<Item = f64> + 'a {
    ResourceKind::ALL.into_iter().filter_map(|kind| {
        let cap = capacity.get(kind);
        (cap > 0).then(|| reserved.get(kind) as f64 / cap as f64)
    })
}

/// Mean load over the kinds the agent offers; 0.0 for an agent that offers nothing.
///
/// Can exceed 1.0 if capacity shrank below what is already reserved.
pub fn utilization(reserved: &Resources, capacity: &Resources) -> f64 {
    let (sum, count) = ratios(reserved, capacity).fold((0.0, 0u32), |(s, n), r| (s + r, n + 1));
    if count == 0 {
        0.0
    } else {
        sum / f64::from(count)
    }
}

/// Load of the agent's most loaded kind; 0.0 for an agent that offers nothing.
///
/// The bottleneck kind is what limits further placements, so this is the figure least-loaded
/// placement balances on.
pub fn peak_utilization(reserved: &Resources, capacity: &Resources) -> f64 {
    ratios(reserved, capacity).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpu: u64, memory: u64, tokens: u64, time: u64) -> Resources {
        Resources {
            cpu,
            memory,
            tokens,
            time,
        }
    }
    #[test]
    fn fits_within_exact_boundary() {
        let cap = res(1000, 1000, 0, 0);
        assert!(fits_within(&res(400, 0, 0, 0), &res(600, 0, 0, 0), &cap));
        assert!(!fits_within(&res(401, 0, 0, 0), &res(600, 0, 0, 0), &cap));
    }

    #[test]
    fn fits_within_needs_every_kind() {
        let cap = res(1000, 1000, 0, 0);
        assert!(!fits_within(&res(1, 0, 1, 0), &Resources::default(), &cap));
        assert!(fits_within(
            &Resources::default(),
            &Resources::default(),
            &cap
        ));
    }

    #[test]
    fn fits_within_treats_overflow_as_not_fitting() {
        let cap = res(u64::MAX, 0, 0, 0);
        assert!(!fits_within(
            &res(2, 0, 0, 0),
            &res(u64::MAX - 1, 0, 0, 0),
            &cap
        ));
    }

    #[test]
    fn fits_within_over_committed_agent_fits_nothing() {
        // Capacity shrank below what is reserved: nothing more may be placed.
        let cap = res(1000, 1000, 0, 0);
        assert!(!fits_within(&res(0, 1, 0, 0), &res(1500, 0, 0, 0), &cap));
    }

    #[test]
    fn utilization_is_mean_over_offered_kinds() {
        let cap = res(1000, 2000, 0, 0);
        let reserved = res(500, 2000, 0, 0);
        assert!((utilization(&reserved, &cap) - 0.75).abs() < 1e-12);
        assert!((peak_utilization(&reserved, &cap) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn utilization_of_agent_without_capacity_is_zero() {
        let none = Resources::default();
        assert_eq!(utilization(&res(5, 5, 5, 5), &none), 0.0);
        assert_eq!(peak_utilization(&res(5, 5, 5, 5), &none), 0.0);
    }

    #[test]
    fn utilization_of_idle_agent_is_zero() {
        let cap = res(1000, 1000, 1000, 1000);
        assert_eq!(utilization(&Resources::default(), &cap), 0.0);
        assert_eq!(peak_utilization(&Resources::default(), &cap), 0.0);
    }
}
