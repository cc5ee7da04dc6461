//! `switchyard sim --generate` end to end on a few tiny workloads: the JSON is deterministic,
//! the files written with `--out` run alone to the same figures, and the table names them.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::OutputWithin;

fn sim_cli(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("sim")
        .args(args)
        .env_remove("SWITCHYARD_CONFIG")
        .output_within(300, "switchyard sim to finish");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const TINY: [&str; 6] = ["--generate", "3", "--seed", "5", "--tasks-scale", "0.02"];

#[test]
fn generated_json_is_deterministic_and_files_replay_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let mut args = TINY.to_vec();
    args.extend(["--json", "--out", out_dir, "--worst", "2"]);
    let first = sim_cli(&args);
    let second = sim_cli(&args);
    assert_eq!(first.stdout, second.stdout);
    let json: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(json["workloads"], 3);
    let defined = json["gain_workloads"].as_u64().unwrap();
    let lowest = json["lowest_adaptive_gain"].as_array().unwrap().len() as u64;
    assert_eq!(lowest, defined.min(2), "{json}");
    for name in ["round_robin", "adaptive", "historical"] {
        let s = &json["strategies"][name];
        assert!(s["ratio_median"].is_number(), "{name} in {json}");
        assert!(s["worst_p95_count"].is_number(), "{name} in {json}");
    }
    for line in json["per_workload"].as_array().unwrap() {
        let file = line["file"].as_str().unwrap();
        let alone: serde_json::Value =
            serde_json::from_slice(&sim_cli(&["--workload", file, "--json"]).stdout).unwrap();
        assert_eq!(alone["workload"], line["name"]);
        let mean = |name: &str| alone["strategies"][name]["mean_completion_s"].clone();
        assert_eq!(mean("round_robin"), line["round_robin_mean_s"], "{file}");
        assert_eq!(mean("oracle"), line["oracle_mean_s"], "{file}");
    }
}

#[test]
fn generated_table_lists_every_strategy() {
    let out = sim_cli(&TINY);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("3 generated workloads, seed 5"), "{table}");
    for name in [
        "least_loaded",
        "round_robin",
        "priority_based",
        "load_balanced",
        "adaptive",
        "historical",
    ] {
        assert!(table.contains(name), "{name} missing:\n{table}");
    }
    assert!(!table.lines().any(|l| l.starts_with("oracle")), "{table}");
}
