use super::*;
use crate::report::run_all;

fn toml_of(seed: u64, index: u64) -> String {
    let w = generate(seed, index, &GenOptions::default()).unwrap();
    to_toml(&w).unwrap()
}

#[test]
fn same_seed_and_index_give_the_same_file() {
    for i in 0..5 {
        assert_eq!(toml_of(1, i), toml_of(1, i));
    }
}

#[test]
fn different_seeds_or_indices_differ() {
    assert_ne!(toml_of(1, 0), toml_of(2, 0));
    assert_ne!(toml_of(1, 0), toml_of(1, 1));
    let names: BTreeSet<String> = (0..3).map(|i| workload_name(7, i)).collect();
    assert_eq!(names.len(), 3);
}

/// Checks a generated workload against the documented ranges.
fn assert_in_ranges(w: &Workload) {
    let at = &w.name;
    let agents = w.agent_count() as f64;
    assert!(
        (AGENTS.0..=AGENTS.1 + 1.0).contains(&agents),
        "{at}: {agents}"
    );
    assert!((2..=8).contains(&w.agent_types.len()), "{at}");
    assert!((1..=5).contains(&w.tasks.types.len()), "{at}");
    for at_type in &w.agent_types {
        for t in &w.tasks.types {
            let held = slots(&at_type.capacity_milli, &t.required_milli);
            assert!(held >= 1, "{at}: {} holds no {}", at_type.name, t.name);
            let truth = at_type.truth[&t.name];
            assert!((0.0..=0.5).contains(&truth.failure_rate), "{at}");
            assert!((0.0..=0.5).contains(&truth.noise), "{at}");
        }
    }
    let d = &w.tasks.dependencies;
    assert!(
        d.probability <= 0.6 && (1..=8).contains(&d.max_depth),
        "{at}"
    );
    let load = offered_load(w).unwrap();
    // The rate is rounded to 4 significant digits.
    assert!((0.499..=0.951).contains(&load), "{at}: load {load}");
    let count = w.tasks.count;
    assert!((TASKS_MIN..=TASKS_MAX).contains(&count), "{at}: {count}");
}

#[test]
fn every_generated_workload_is_valid_across_200_seeds() {
    for seed in 0..200 {
        let w = generate(seed, seed % 7, &GenOptions::default())
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_in_ranges(&w);
        // And the file parses back through the ordinary path, validation included.
        let text = to_toml(&w).unwrap();
        let back = crate::parse_named(&text, "ignored").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.name, w.name);
    }
}

#[test]
fn the_draws_cover_the_interesting_cases() {
    let ws: Vec<Workload> = (0..100)
        .map(|i| generate(3, i, &GenOptions::default()).unwrap())
        .collect();
    let any = |f: &dyn Fn(&Workload) -> bool| ws.iter().any(f);
    assert!(any(&|w| w.tasks.arrival == ArrivalKind::Bursty));
    assert!(any(&|w| w.tasks.arrival == ArrivalKind::Poisson));
    assert!(any(&|w| w
        .events
        .iter()
        .any(|e| e.kind == AgentEventKind::Die)));
    assert!(any(&|w| w
        .events
        .iter()
        .any(|e| e.speed_factor.is_some_and(|f| f < 1.0))));
    assert!(any(&|w| w.description.contains("specialists")));
    assert!(any(&|w| w.description.contains("flaky")));
    assert!(any(&|w| w.description.contains("3x faster")));
    assert!(any(&|w| w.agent_count() > 1000));
    assert!(any(&|w| w.agent_count() < 50));
}

#[test]
fn toml_round_trip_gives_the_same_file_and_report() {
    let options = GenOptions { tasks_scale: 0.1 };
    for i in 0..3 {
        let w = generate(11, i, &options).unwrap();
        let text = to_toml(&w).unwrap();
        let back = crate::parse_named(&text, "ignored").unwrap();
        assert_eq!(to_toml(&back).unwrap(), text);
        assert_eq!(run_all(&back).unwrap(), run_all(&w).unwrap());
    }
}

#[test]
fn tasks_scale_changes_only_the_count_and_event_times() {
    let full = generate(5, 2, &GenOptions::default()).unwrap();
    let tenth = generate(5, 2, &GenOptions { tasks_scale: 0.1 }).unwrap();
    assert_eq!(
        tenth.tasks.count,
        (f64::from(full.tasks.count) * 0.1).round() as u32
    );
    assert_eq!(tenth.tasks.rate_per_s, full.tasks.rate_per_s);
    assert_eq!(tenth.seed, full.seed);
    assert_eq!(tenth.events.len(), full.events.len());
    let tiny = generate(5, 2, &GenOptions { tasks_scale: 0.0 }).unwrap();
    assert_eq!(tiny.tasks.count, 1);
}

#[test]
fn task_count_is_clamped() {
    assert_eq!(task_count(20, 1.0), TASKS_MIN);
    assert_eq!(task_count(100, 1.0), 2000);
    assert_eq!(task_count(2000, 1.0), TASKS_MAX);
    assert_eq!(task_count(100, 0.5), 1000);
}

#[test]
fn apportion_keeps_the_total_and_every_type() {
    assert_eq!(apportion(20, &[1.0, 1.0]), vec![10, 10]);
    let counts = apportion(20, &[100.0, 1.0, 1.0]);
    assert_eq!(counts.iter().sum::<u32>(), 20);
    assert!(counts.iter().all(|&c| c >= 1), "{counts:?}");
}

#[test]
fn service_capacity_by_hand() {
    // Two agents holding 4 one-cpu tasks of 10 s (speed 1, no failures): 0.8 tasks/s. One
    // agent with speed 0.5 and a 50% failure rate: per success 10 s, so 0.4 tasks/s each.
    let text = r#"
seed = 1
[[agent_types]]
name = "a"
count = 2
capacity = { cpu = 4 }
[[agent_types]]
name = "b"
count = 1
capacity = { cpu = 4 }
truth.job = { speed = 0.5, failure_rate = 0.5 }
[tasks]
count = 10
arrival = "poisson"
rate_per_s = 0.6
[[tasks.types]]
name = "job"
priority = [1, 1]
resources = { cpu = 1 }
estimated_duration_s = [5.0, 15.0]
"#;
    let w = crate::parse_named(text, "x").unwrap();
    assert!((service_capacity(&w) - 1.2).abs() < 1e-9);
    assert!((offered_load(&w).unwrap() - 0.5).abs() < 1e-9);
}

#[test]
fn rounding_helpers() {
    assert_eq!(significant(1234.567, 4), 1235.0);
    assert_eq!(significant(0.012345, 3), 0.0123);
    assert_eq!(round_to(2.345_678, 2), 2.35);
}
