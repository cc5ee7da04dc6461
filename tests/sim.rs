//! The simulator end to end: every shipped workload parses and runs under every strategy, the
//! oracle beats round-robin where agents differ, and the CLI's JSON, table and SVG.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::OutputWithin;
use switchyard_sim::{ORACLE, parse_named, run_all};

const SHIPPED: [&str; 8] = [
    "homogeneous",
    "heterogeneous",
    "degrading",
    "recovering",
    "bursty_deep_deps",
    "tenant_flood",
    "head_task",
    "large_fleet",
];

/// Fleets above this many agents run only their first `LARGE_FLEET_TASKS` tasks in
/// `every_shipped_workload_parses_and_runs` (a debug build runs it).
const LARGE_FLEET: usize = 1_000;
const LARGE_FLEET_TASKS: u32 = 400;

fn workload_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/workloads/{name}.toml"))
}

fn load(name: &str) -> switchyard_sim::Workload {
    let text = std::fs::read_to_string(workload_path(name)).expect("workload file");
    parse_named(&text, name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_shipped_workload_parses_and_runs() {
    let names: Vec<String> = std::fs::read_dir(workload_path("x").parent().expect("dir"))
        .expect("config/workloads")
        .filter_map(|e| {
            e.ok()?
                .path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .collect();
    for required in SHIPPED {
        assert!(names.iter().any(|n| n == required), "{required} missing");
    }
    for name in &names {
        let mut w = load(name);
        if w.agent_count() > LARGE_FLEET {
            // A benchmark-sized workload (large_fleet: 50,000 tasks on 2,000 agents) runs its
            // first tasks here; its full run is measured in BENCHMARKS.md.
            w.tasks.count = w.tasks.count.min(LARGE_FLEET_TASKS);
        }
        let report = run_all(&w).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.strategies.len(), 7, "{name}");
        for (strategy, m) in &report.strategies {
            let at = format!("{name}/{strategy}");
            assert!(m.tasks_completed > 0, "{at}");
            assert_eq!(
                m.tasks_completed + m.tasks_failed + m.tasks_unfinished,
                w.tasks.count as usize,
                "{at}"
            );
            assert!(
                m.mean_completion_s > 0.0 && m.mean_completion_s <= m.p95_completion_s * 2.0,
                "{at}"
            );
            assert!((0.0..=1.0).contains(&m.utilization), "{at}");
            assert!((0.0..=1.0).contains(&m.first_attempt_success), "{at}");
        }
    }
}

#[test]
fn oracle_beats_round_robin_on_heterogeneous() {
    let report = run_all(&load("heterogeneous")).expect("runs");
    let oracle = &report.strategies[ORACLE];
    let rr = &report.strategies["round_robin"];
    assert!(
        oracle.mean_completion_s < rr.mean_completion_s,
        "oracle {} vs round_robin {}",
        oracle.mean_completion_s,
        rr.mean_completion_s
    );
    assert!(oracle.first_attempt_success >= rr.first_attempt_success);
}

/// The target: with a tenant submitting 10x the others, each tenant's share of the
/// grants made while all are backlogged is within 10% of its weight's share.
#[test]
fn tenants_share_by_weight_under_a_flood() {
    let w = load("tenant_flood");
    let outcome = switchyard_sim::simulate(
        &w,
        switchyard_sim::Placer::Strategy(&switchyard_decision::LeastLoaded),
    )
    .expect("runs");
    let m = switchyard_sim::StrategyMetrics::from_outcome(&outcome);
    assert_eq!(m.tenant_shares.len(), 3);
    for (tenant, share) in &m.tenant_shares {
        assert!(share.grants > 100, "{tenant}: {share:?}");
        assert!(share.deviation < 0.10, "{tenant}: {share:?}");
    }
}

/// The target: a head task needing a whole agent is granted within about one mean task
/// duration under a steady stream of small tasks; without the reservation it waits for the
/// stream to end.
#[test]
fn a_whole_agent_task_waits_about_one_task_duration() {
    let mut w = load("head_task");
    let run = |w: &switchyard_sim::Workload| {
        let outcome = switchyard_sim::simulate(
            w,
            switchyard_sim::Placer::Strategy(&switchyard_decision::LeastLoaded),
        )
        .expect("runs");
        switchyard_sim::StrategyMetrics::from_outcome(&outcome).waits_by_type["big"].clone()
    };
    let held = run(&w);
    assert!(held.granted >= 5, "{held:?}");
    assert!(held.max_wait_in_mean_runs <= 1.2, "{held:?}");
    w.head_reservation = false;
    let starved = run(&w);
    assert!(starved.max_wait_in_mean_runs > 10.0, "{starved:?}");
}

fn sim_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("sim")
        .args(args)
        .env_remove("SWITCHYARD_CONFIG")
        .output_within(300, "switchyard sim to finish")
}

#[test]
fn cli_json_has_every_strategy_and_is_deterministic() {
    let path = workload_path("degrading");
    let path = path.to_str().expect("utf-8 path");
    let first = sim_cli(&["--workload", path, "--json"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = sim_cli(&["--workload", path, "--json"]);
    assert_eq!(first.stdout, second.stdout);
    let json: serde_json::Value = serde_json::from_slice(&first.stdout).expect("one JSON object");
    assert_eq!(json["workload"], "degrading");
    let names = [
        "round_robin",
        "priority_based",
        "load_balanced",
        "adaptive",
        "historical",
        "least_loaded",
        "oracle",
    ];
    for name in names {
        let s = &json["strategies"][name];
        for key in [
            "mean_completion_s",
            "p95_completion_s",
            "makespan_s",
            "utilization",
            "first_attempt_success",
            "tasks_completed",
        ] {
            assert!(s[key].is_number(), "{name}.{key} in {json}");
        }
    }
}

#[test]
fn cli_table_and_plot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("chart.svg");
    let path = workload_path("homogeneous");
    let out = sim_cli(&[
        "--workload",
        path.to_str().expect("utf-8"),
        "--plot",
        svg.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("round_robin") && table.contains("oracle"),
        "{table}"
    );
    let chart = std::fs::read_to_string(&svg).expect("svg written");
    assert!(
        chart.starts_with("<svg") && chart.contains(">adaptive<"),
        "{chart}"
    );
}

#[test]
fn cli_lists_every_workload_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(workload_path("homogeneous"))
        .expect("read")
        .replace("count = 16", "count = 0")
        .replace("rate_per_s = 2.5", "rate_per_s = 0");
    std::fs::write(&bad, text).expect("write");
    let out = sim_cli(&["--workload", bad.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("count must be at least 1") && err.contains("rate_per_s"),
        "{err}"
    );
}
