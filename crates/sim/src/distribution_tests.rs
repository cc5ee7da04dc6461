use super::*;
use crate::report::StrategyMetrics;

fn metrics(mean: f64, p95: f64, first_ok: f64) -> StrategyMetrics {
    StrategyMetrics {
        mean_completion_s: mean,
        p95_completion_s: p95,
        first_attempt_success: first_ok,
        ..StrategyMetrics::default()
    }
}

/// A report where every strategy has mean `rest`, except round_robin (`rr`), adaptive
/// (`adaptive`) and the oracle (`oracle`); p95 is twice the mean, first-attempt success 0.9
/// (adaptive 0.8).
fn report(name: &str, rr: f64, adaptive: f64, oracle: f64, rest: f64) -> RunInput {
    let mut strategies = BTreeMap::new();
    for kind in StrategyKind::ALL {
        strategies.insert(kind.as_str().to_owned(), metrics(rest, rest * 2.0, 0.9));
    }
    strategies.insert("round_robin".into(), metrics(rr, rr * 2.0, 0.9));
    strategies.insert("adaptive".into(), metrics(adaptive, adaptive * 2.0, 0.8));
    strategies.insert(ORACLE.into(), metrics(oracle, oracle * 2.0, 1.0));
    RunInput {
        report: SimReport {
            workload: name.into(),
            seed: 0,
            tasks: 10,
            agents: 3,
            strategies,
        },
        offered_load: 0.8,
        file: None,
    }
}

#[test]
fn nearest_rank_percentiles() {
    let v: Vec<f64> = (1..=10).map(f64::from).rev().collect();
    assert_eq!(nearest_rank(&v, 0.5), Some(5.0));
    assert_eq!(nearest_rank(&v, 0.1), Some(1.0));
    assert_eq!(nearest_rank(&v, 0.9), Some(9.0));
    assert_eq!(nearest_rank(&v, 0.0), Some(1.0));
    assert_eq!(nearest_rank(&v, 1.0), Some(10.0));
    assert_eq!(nearest_rank(&[3.0], 0.1), Some(3.0));
    assert_eq!(nearest_rank(&[], 0.5), None);
    let v: Vec<f64> = (1..=30).map(f64::from).collect();
    assert_eq!(nearest_rank(&v, 0.1), Some(3.0));
    assert_eq!(nearest_rank(&v, 0.5), Some(15.0));
}

#[test]
fn gain_captured_and_its_ill_defined_cases() {
    assert_eq!(gain_captured(100.0, 75.0, 50.0), Some(0.5));
    assert_eq!(gain_captured(100.0, 50.0, 50.0), Some(1.0));
    assert_eq!(gain_captured(100.0, 120.0, 50.0), Some(-0.4));
    assert_eq!(gain_captured(100.0, 40.0, 50.0), Some(1.2));
    // The oracle exactly 5% better: defined; less: not.
    assert_eq!(gain_captured(100.0, 95.0, 95.0), Some(1.0));
    assert_eq!(gain_captured(100.0, 96.0, 96.0), None);
    assert_eq!(gain_captured(100.0, 90.0, 110.0), None);
    assert_eq!(gain_captured(0.0, 0.0, 0.0), None);
}

#[test]
fn worst_p95_counts_ties_and_ignores_the_oracle() {
    let r = report("w", 10.0, 30.0, 50.0, 5.0);
    assert_eq!(worst_p95(&r.report), vec!["adaptive"]);
    let r = report("w", 30.0, 30.0, 1.0, 5.0);
    let worst = worst_p95(&r.report);
    assert_eq!(worst.len(), 2);
    assert!(worst.contains(&"round_robin") && worst.contains(&"adaptive"));
}

#[test]
fn summary_over_hand_built_workloads() {
    let runs = vec![
        report("g0", 100.0, 75.0, 50.0, 100.0), // adaptive gain 0.5, ratio 1.5
        report("g1", 100.0, 110.0, 90.0, 100.0), // gain -1.0, ratio 1.22
        report("g2", 100.0, 98.0, 98.0, 100.0), // oracle within 5%: no gain, ratio 1.0
        report("g3", 100.0, 60.0, 60.0, 100.0), // gain 1.0, ratio 1.0
    ];
    let d = summarize(9, 1.0, &runs, 2);
    assert_eq!((d.workloads, d.gain_workloads, d.gain_excluded), (4, 3, 1));
    let a = &d.strategies["adaptive"];
    assert_eq!(a.gain_median, Some(0.5));
    assert_eq!(a.gain_p10, Some(-1.0));
    assert_eq!(a.gain_worst, Some(-1.0));
    assert_eq!(a.ratio_median, Some(1.0));
    assert_eq!(a.ratio_worst, Some(1.5));
    assert_eq!(a.ratio_p90, Some(1.5));
    // adaptive has the worst p95 in g1 only (elsewhere it ties round_robin's 100 at most in
    // none: g0 75 < 100, g2 98 < 100, g3 60 < 100).
    assert_eq!(a.worst_p95_count, 1);
    assert_eq!(a.first_ok_at_least_rr, 0);
    let rr = &d.strategies["round_robin"];
    assert_eq!(rr.gain_median, Some(0.0));
    assert_eq!(rr.first_ok_at_least_rr, 4);
    // round_robin ties for worst in g0, g2 and g3 with the others at 100.
    assert_eq!(rr.worst_p95_count, 3);
    assert_eq!(d.lowest_adaptive_gain, vec![1, 0]);
    assert!(!d.per_workload[2].gain_defined);
    assert!(d.per_workload[2].gain.is_empty());
    assert_eq!(d.per_workload[2].ratio["adaptive"], 1.0);
    let table = d.render_table();
    assert!(table.contains("1 left out"), "{table}");
    assert!(table.contains("g1") && table.contains("-100%"), "{table}");
}

#[test]
fn run_many_keeps_input_order() {
    let options = crate::generate::GenOptions { tasks_scale: 0.02 };
    let ws: Vec<Workload> = (0..4)
        .map(|i| crate::generate::generate(4, i, &options).unwrap())
        .collect();
    let mut seen = Vec::new();
    let reports = run_many(&ws, 2, &mut |i, _| seen.push(i)).unwrap();
    let names: Vec<&str> = reports.iter().map(|r| r.workload.as_str()).collect();
    assert_eq!(names, ["gen-4-0", "gen-4-1", "gen-4-2", "gen-4-3"]);
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3]);
    assert_eq!(reports, run_many(&ws, 1, &mut |_, _| {}).unwrap());
}
