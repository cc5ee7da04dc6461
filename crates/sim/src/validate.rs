//! Semantic checks of a parsed [`Workload`]; every problem is collected, none stops the others.

use std::collections::BTreeSet;

use super::workload::{
    AgentEventKind, ArrivalKind, BudgetKindSpec, TaskStreamSpec, TaskTypeSpec, TruthSpec, Workload,
};
use switchyard_decision::Resources;
use switchyard_decision::resources::fits_within;

/// Most tasks one workload may submit; keeps a run bounded.
pub const MAX_TASKS: u32 = 1_000_000;
/// Highest task priority, as the wire protocol accepts.
pub const MAX_PRIORITY: u8 = 10;
/// Most agents one workload may declare.
pub const MAX_AGENTS: usize = 100_000;

/// Checks the workload and fills in its milli-unit amounts; returns every problem found.
pub(crate) fn validate(w: &mut Workload) -> Vec<String> {
    let mut errors = Vec::new();
    if !(w.learning_rate.is_finite() && w.learning_rate > 0.0 && w.learning_rate <= 1.0) {
        errors.push(format!(
            "learning_rate must be in (0, 1], got {}",
            w.learning_rate
        ));
    }
    if !(1..=64).contains(&w.max_candidates) {
        errors.push(format!(
            "max_candidates must be 1..=64, got {}",
            w.max_candidates
        ));
    }
    if w.dispatch_window == 0 {
        errors.push("dispatch_window must be at least 1".to_owned());
    }
    check_agent_types(w, &mut errors);
    check_events(w, &mut errors);
    check_tasks(&mut w.tasks, &mut errors);
    check_fit(w, &mut errors);
    for (tenant, weight) in &w.tenants {
        let (lo, hi) = (
            switchyard_decision::fairness::MIN_WEIGHT,
            switchyard_decision::fairness::MAX_WEIGHT,
        );
        if !(weight.is_finite() && (lo..=hi).contains(weight)) {
            errors.push(format!("tenants.{tenant}: weight must be in {lo}..={hi}"));
        }
    }
    check_budgets(w, &mut errors);
    if w.retry.max_attempts == 0 {
        errors.push("retry.max_attempts must be at least 1".to_owned());
    }
    if !(w.retry.backoff_max_s.is_finite() && w.retry.backoff_max_s >= 0.0) {
        errors.push(format!(
            "retry.backoff_max_s must be >= 0, got {}",
            w.retry.backoff_max_s
        ));
    }
    if !(w.retry.backoff_s.is_finite() && w.retry.backoff_s >= 0.0) {
        errors.push(format!(
            "retry.backoff_s must be >= 0, got {}",
            w.retry.backoff_s
        ));
    }
    errors
}

/// Budgets are defined once, each valid as the optimizer's config requires, and every draw names
/// a defined budget and fits in it (a larger draw could never be granted).
fn check_budgets(w: &Workload, errors: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    for b in &w.budgets {
        if !seen.insert(b.name.as_str()) {
            errors.push(format!("budget {:?} is defined twice", b.name));
        }
        let period = b.period_s.unwrap_or(60.0);
        if b.limit == 0 || b.burst == Some(0) || !(period.is_finite() && period >= 0.001) {
            errors.push(format!(
                "budget {}: limit and burst must be >= 1, period_s >= 0.001",
                b.name
            ));
        }
    }
    for ty in &w.tasks.types {
        if !(ty.usage_noise.is_finite() && ty.usage_noise >= 0.0) {
            errors.push(format!("task type {}: usage_noise must be >= 0", ty.name));
        }
        for (name, amount) in &ty.budgets {
            let Some(b) = w.budgets.iter().find(|b| &b.name == name) else {
                errors.push(format!("task type {}: no budget named {name:?}", ty.name));
                continue;
            };
            let most = match b.kind {
                BudgetKindSpec::Rate => b.burst.unwrap_or(b.limit),
                BudgetKindSpec::Concurrency => b.limit,
            };
            if *amount == 0 || *amount > most {
                errors.push(format!(
                    "task type {}: draws {amount} from budget {name}, which allows 1..={most}",
                    ty.name
                ));
            }
        }
    }
}

fn check_agent_types(w: &mut Workload, errors: &mut Vec<String>) {
    if w.agent_types.is_empty() {
        errors.push("agent_types must list at least one agent type".to_owned());
    }
    if w.agent_count() > MAX_AGENTS {
        errors.push(format!("at most {MAX_AGENTS} agents in total"));
    }
    let task_types: BTreeSet<String> = w.tasks.types.iter().map(|t| t.name.clone()).collect();
    let mut seen = BTreeSet::new();
    for t in &mut w.agent_types {
        let at = format!("agent type {:?}", t.name);
        if t.name.is_empty() || !seen.insert(t.name.clone()) {
            errors.push(format!("{at}: name must be non-empty and unique"));
        }
        if t.count == 0 {
            errors.push(format!("{at}: count must be at least 1"));
        }
        match Resources::from_units(&t.capacity) {
            Ok(r) if r.is_zero() => errors.push(format!("{at}: capacity is all zero")),
            Ok(r) => t.capacity_milli = r,
            Err(e) => errors.push(format!("{at}: capacity: {e}")),
        }
        for (task_type, truth) in &t.truth {
            let tt = format!("{at}: truth.{task_type}");
            if !task_types.contains(task_type) {
                errors.push(format!("{tt}: no task type of that name"));
            }
            check_truth(&tt, truth, errors);
        }
    }
}

fn check_truth(tt: &str, truth: &TruthSpec, errors: &mut Vec<String>) {
    if !(truth.speed.is_finite() && truth.speed > 0.0) {
        errors.push(format!("{tt}: speed must be > 0, got {}", truth.speed));
    }
    if !(0.0..=1.0).contains(&truth.failure_rate) {
        errors.push(format!(
            "{tt}: failure_rate must be in [0, 1], got {}",
            truth.failure_rate
        ));
    }
    if !(truth.noise.is_finite() && truth.noise >= 0.0) {
        errors.push(format!("{tt}: noise must be >= 0, got {}", truth.noise));
    }
}

fn check_events(w: &Workload, errors: &mut Vec<String>) {
    for (i, e) in w.events.iter().enumerate() {
        let at = format!("events[{i}]");
        if !(e.at_s.is_finite() && e.at_s >= 0.0) {
            errors.push(format!("{at}: at_s must be >= 0, got {}", e.at_s));
        }
        match w.agent_types.iter().find(|t| t.name == e.agent.agent_type) {
            None => errors.push(format!("{at}: no agent type {:?}", e.agent.agent_type)),
            Some(t) if e.agent.index >= t.count => errors.push(format!(
                "{at}: agent index {} out of range (type {:?} has {})",
                e.agent.index, t.name, t.count
            )),
            Some(_) => {}
        }
        match (e.kind, e.speed_factor) {
            (AgentEventKind::Degrade, Some(f)) if f.is_finite() && f > 0.0 => {}
            (AgentEventKind::Degrade, _) => {
                errors.push(format!("{at}: degrade needs speed_factor > 0"));
            }
            (AgentEventKind::Die, Some(_)) => {
                errors.push(format!("{at}: die takes no speed_factor"));
            }
            (AgentEventKind::Die, None) => {}
        }
    }
}

fn check_tasks(t: &mut TaskStreamSpec, errors: &mut Vec<String>) {
    if t.count == 0 || t.count > MAX_TASKS {
        errors.push(format!(
            "tasks.count must be 1..={MAX_TASKS}, got {}",
            t.count
        ));
    }
    check_arrival(t, errors);
    if t.types.is_empty() {
        errors.push("tasks.types must list at least one task type".to_owned());
    }
    let mut seen = BTreeSet::new();
    for ty in &mut t.types {
        if ty.name.is_empty() || !seen.insert(ty.name.clone()) {
            errors.push(format!(
                "task type {:?}: name must be non-empty and unique",
                ty.name
            ));
        }
        check_task_type(ty, errors);
    }
    let d = &t.dependencies;
    if !(0.0..=1.0).contains(&d.probability) {
        errors.push(format!(
            "tasks.dependencies.probability must be in [0, 1], got {}",
            d.probability
        ));
    }
    if d.fan_in == 0 || d.max_depth == 0 || d.lookback == 0 {
        errors.push(
            "tasks.dependencies: fan_in, max_depth and lookback must be at least 1".to_owned(),
        );
    }
}

fn check_task_type(ty: &mut TaskTypeSpec, errors: &mut Vec<String>) {
    let at = format!("task type {:?}", ty.name);
    for (name, limit) in [
        ("queue_timeout_s", ty.queue_timeout_s),
        ("run_timeout_s", ty.run_timeout_s),
    ] {
        if limit.is_some_and(|s| !(s.is_finite() && s >= 0.0)) {
            errors.push(format!("{at}: {name} must be >= 0, got {limit:?}"));
        }
    }
    if ty.max_attempts == Some(0) {
        errors.push(format!("{at}: max_attempts must be at least 1"));
    }
    if !(ty.weight.is_finite() && ty.weight > 0.0) {
        errors.push(format!("{at}: weight must be > 0, got {}", ty.weight));
    }
    let [lo, hi] = ty.priority;
    if lo > hi || hi > MAX_PRIORITY {
        errors.push(format!(
            "{at}: priority must be [low, high] with low <= high <= 10"
        ));
    }
    let [dlo, dhi] = ty.estimated_duration_s;
    if !(dlo.is_finite() && dhi.is_finite() && dlo > 0.0 && dlo <= dhi) {
        errors.push(format!(
            "{at}: estimated_duration_s must be [low, high] with 0 < low <= high"
        ));
    }
    match Resources::from_units(&ty.resources) {
        Ok(r) => ty.required_milli = r,
        Err(e) => errors.push(format!("{at}: resources: {e}")),
    }
}

fn check_arrival(t: &TaskStreamSpec, errors: &mut Vec<String>) {
    match t.arrival {
        ArrivalKind::Poisson => {
            if !t.rate_per_s.is_some_and(|r| r.is_finite() && r > 0.0) {
                errors.push("tasks: poisson arrival needs rate_per_s > 0".to_owned());
            }
            if t.burst_size.is_some() || t.burst_every_s.is_some() {
                errors.push("tasks: burst_size / burst_every_s are for bursty arrival".to_owned());
            }
        }
        ArrivalKind::Bursty => {
            if t.burst_size.is_none_or(|n| n == 0) {
                errors.push("tasks: bursty arrival needs burst_size >= 1".to_owned());
            }
            if !t.burst_every_s.is_some_and(|s| s.is_finite() && s > 0.0) {
                errors.push("tasks: bursty arrival needs burst_every_s > 0".to_owned());
            }
            if t.rate_per_s.is_some() {
                errors.push("tasks: rate_per_s is for poisson arrival".to_owned());
            }
        }
    }
}

/// Every task type must fit on an empty agent of some type, or its tasks could never run.
fn check_fit(w: &Workload, errors: &mut Vec<String>) {
    for ty in &w.tasks.types {
        let fits = w
            .agent_types
            .iter()
            .any(|a| fits_within(&ty.required_milli, &Resources::default(), &a.capacity_milli));
        if !fits && !w.agent_types.is_empty() {
            errors.push(format!("task type {:?} fits on no agent type", ty.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::workload::WorkloadError;
    use super::*;

    const GOOD: &str = r#"
seed = 1
[[agent_types]]
name = "a"
count = 2
capacity = { cpu = 4, memory = 1024 }
truth.job = { speed = 0.5, failure_rate = 0.1, noise = 0.2 }
[tasks]
count = 10
arrival = "poisson"
rate_per_s = 1.0
[[tasks.types]]
name = "job"
priority = [1, 5]
resources = { cpu = 1 }
estimated_duration_s = [1.0, 2.0]
"#;

    fn errors_of(text: &str) -> Vec<String> {
        match Workload::parse(text) {
            Err(WorkloadError::Invalid(errors)) => errors,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn good_workload_parses_with_milli_units() {
        let w = Workload::parse(GOOD).unwrap();
        assert_eq!(w.agent_types[0].capacity_milli.cpu, 4000);
        assert_eq!(w.tasks.types[0].required_milli.cpu, 1000);
        assert_eq!(w.truth(0, "job").speed, 0.5);
        assert_eq!(w.truth(0, "other"), Default::default());
        assert_eq!(w.retry.max_attempts, 3);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = GOOD.replace("seed = 1", "seed = 1\nsede = 2");
        assert!(matches!(
            Workload::parse(&text),
            Err(WorkloadError::Syntax(_))
        ));
        let text = GOOD.replace("noise = 0.2", "noise = 0.2, sped = 1");
        assert!(matches!(
            Workload::parse(&text),
            Err(WorkloadError::Syntax(_))
        ));
    }

    #[test]
    fn every_error_is_listed() {
        let text = GOOD
            .replace("count = 2", "count = 0")
            .replace("failure_rate = 0.1", "failure_rate = 1.5")
            .replace("truth.job", "truth.nope")
            .replace("rate_per_s = 1.0", "rate_per_s = -1.0")
            .replace("priority = [1, 5]", "priority = [5, 1]")
            .replace("cpu = 1 }", "cpu = 1, gpu = 1 }");
        let errors = errors_of(&text);
        let joined = errors.join("\n");
        for needle in [
            "count must be",
            "failure_rate",
            "no task type of that name",
            "rate_per_s",
            "priority",
            "gpu",
        ] {
            assert!(joined.contains(needle), "{needle} missing from {joined}");
        }
        assert!(errors.len() >= 6, "{errors:?}");
    }

    #[test]
    fn events_are_checked() {
        let text = format!(
            "{GOOD}\n[[events]]\nat_s = 5\nagent = {{ type = \"a\", index = 2 }}\nkind = \"degrade\"\n\
             [[events]]\nat_s = -1\nagent = {{ type = \"zz\", index = 0 }}\nkind = \"die\"\nspeed_factor = 2\n"
        );
        let joined = errors_of(&text).join("\n");
        for needle in [
            "index 2 out of range",
            "speed_factor > 0",
            "at_s",
            "no agent type",
            "die takes no",
        ] {
            assert!(joined.contains(needle), "{needle} missing from {joined}");
        }
    }

    #[test]
    fn task_type_that_fits_nowhere_is_refused() {
        let text = GOOD.replace("resources = { cpu = 1 }", "resources = { cpu = 100 }");
        assert!(
            errors_of(&text)
                .join("\n")
                .contains("fits on no agent type")
        );
    }

    #[test]
    fn error_display_lists_all() {
        let err = WorkloadError::Invalid(vec!["one".into(), "two".into()]);
        let text = err.to_string();
        assert!(text.contains("one") && text.contains("two"), "{text}");
    }
}
