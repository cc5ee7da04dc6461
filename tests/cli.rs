//! The binaries as a user runs them: the demo and the benchmark end to end with their JSON
//! summaries, the optimizer's /healthz and /metrics, and a refused configuration.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{OptimizerProcess, OutputWithin, config_for, within};
use switchyard_harness::LocalServers;

/// How long one run of a binary may take before the test fails.
const LIMIT_S: u64 = 300;

/// A command with no NATS_URL / REDIS_URL, so the CLI starts its own servers.
fn switchyard(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(args)
        .env_remove("NATS_URL")
        .env_remove("REDIS_URL")
        .env_remove("SWITCHYARD_CONFIG");
    cmd
}

fn json_of(output: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout {stdout}\nstderr {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON line ({e}): {stdout}"))
}

#[test]
fn demo_json_summary_accounts_for_every_task() {
    let output = switchyard(&["demo", "--json", "--tasks", "60", "--agents", "6"])
        .output_within(LIMIT_S, "demo to finish");
    let summary = json_of(&output);
    assert_eq!(summary["tasks_submitted"], 60);
    let completed = summary["tasks_completed"].as_u64().expect("completed");
    let failed = summary["tasks_failed"].as_u64().expect("failed");
    assert_eq!(completed + failed, 60, "{summary}");
    assert!(completed > 0, "{summary}");
    let p50 = summary["grant_latency_ms"]["p50"].as_f64().expect("p50");
    let p99 = summary["grant_latency_ms"]["p99"].as_f64().expect("p99");
    assert!(p50 > 0.0 && p50 <= p99, "{summary}");
    assert_eq!(summary["agents"].as_array().map(Vec::len), Some(6));
    // The closing announcement: each group in the pattern chosen for its size and shape, and
    // every member reached.
    let groups = summary["announcements"].as_array().expect("announcements");
    let pattern_of = |group: &str| {
        groups
            .iter()
            .find(|g| g["group"] == group)
            .map(|g| g["pattern"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(
        pattern_of("fleet").as_deref(),
        Some("broadcast"),
        "{summary}"
    );
    assert_eq!(
        pattern_of("pair").as_deref(),
        Some("synchronous"),
        "{summary}"
    );
    assert_eq!(
        pattern_of("pipeline").as_deref(),
        Some("pipeline"),
        "{summary}"
    );
    for g in groups {
        assert_eq!(g["delivered"], g["members"], "{g}");
    }
}

#[test]
fn message_bench_delivers_everything_and_serves_critical_messages_first() {
    let args = [
        "message-bench",
        "--json",
        "--messages",
        "300",
        "--backlog-seconds",
        "0.5",
    ];
    let report = json_of(&switchyard(&args).output_within(LIMIT_S, "message-bench to finish"));
    let modes = report["throughput"].as_array().expect("throughput");
    assert_eq!(modes.len(), 3, "{report}");
    for mode in modes {
        assert_eq!(mode["delivered"], 300, "{mode}");
    }
    let p50 = |p: &str| {
        report["backlog_latency_ms"][p]["p50"]
            .as_f64()
            .expect("p50 per priority")
    };
    assert!(p50("critical") < p50("low"), "{report}");
}

#[test]
fn bench_json_reports_lifecycles_latency_and_no_double_grants() {
    let args = [
        "bench",
        "--json",
        "--rate",
        "200",
        "--duration",
        "2",
        "--agents",
        "5",
        "--replicas",
        "2",
    ];
    let report = json_of(&switchyard(&args).output_within(LIMIT_S, "bench to finish"));
    assert_eq!(report["double_grants"], 0, "{report}");
    assert_eq!(report["unfinished"], 0, "{report}");
    assert!(
        report["lifecycles_per_s"].as_f64().expect("rate") > 0.0,
        "{report}"
    );
    for p in ["p50", "p99", "p999"] {
        assert!(
            report["grant_latency_ms"][p].as_f64().is_some(),
            "{p} missing: {report}"
        );
    }
    assert_eq!(report["submitted"], report["completed"], "{report}");
}

#[test]
fn closed_loop_bench_counts_each_task_once_and_reports_baseline_and_server_cost() {
    let args = [
        "bench",
        "--json",
        "--duration",
        "2",
        "--rate",
        "0",
        "--inflight",
        "64",
        "--agents",
        "8",
        "--baseline",
        "--baseline-seconds",
        "1",
    ];
    let report = json_of(&switchyard(&args).output_within(LIMIT_S, "bench to finish"));
    assert_eq!(report["mode"], "closed_loop", "{report}");
    let count = |field: &str| {
        report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {report}"))
    };
    assert!(count("submitted") > 0, "{report}");
    assert_eq!(
        count("completed"),
        count("submitted"),
        "every submit drained"
    );
    assert_eq!(count("unfinished"), 0, "{report}");
    assert_eq!(count("double_grants"), 0, "{report}");
    assert_eq!(count("duplicate_completions"), 0, "{report}");
    assert!(
        count("completed_in_window") <= count("completed"),
        "{report}"
    );
    let positive = |value: &serde_json::Value| value.as_f64().is_some_and(|v| v > 0.0);
    assert!(positive(&report["baseline_allocations_per_s"]), "{report}");
    assert!(positive(&report["ratio_to_baseline"]), "{report}");
    let per_lifecycle = &report["per_lifecycle"];
    assert!(positive(&per_lifecycle["nats_msgs"]), "{report}");
    assert!(positive(&per_lifecycle["redis_commands"]), "{report}");
    assert!(
        !per_lifecycle["redis_top_commands"]
            .as_array()
            .expect("top commands")
            .is_empty(),
        "{report}"
    );
    assert!(
        report["idle_per_s"].is_null(),
        "no --idle-seconds: {report}"
    );
}

#[test]
fn invalid_configuration_lists_every_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_optimizer"))
        .env("LEARNING_RATE", "2.5")
        .env("MAX_CONCURRENT_COORDINATIONS", "many")
        .env("NATS_URL", "nats://127.0.0.1:1")
        .output_within(
            LIMIT_S,
            "the optimizer to refuse its configuration and exit",
        );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("learning_rate"), "{stderr}");
    assert!(stderr.contains("MAX_CONCURRENT_COORDINATIONS"), "{stderr}");
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // One write: `write!` on a socket may split the request into several segments.
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimizer_serves_healthz_and_the_seed_metrics() {
    let servers = LocalServers::start().await.expect("servers");
    let mut config = config_for(&servers);
    let port = common::free_port();
    config.metrics.addr = format!("127.0.0.1:{port}");
    let optimizer = OptimizerProcess::spawn(&config, &[]);
    // Ready when it answers; it binds the port only after connecting to NATS and Redis.
    within(30, "/healthz", async {
        while http_get(port, "/healthz").map(|(s, _)| s) != Some(200) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (status, body) = http_get(port, "/metrics").expect("metrics answer");
    assert_eq!(status, 200, "{}", optimizer.log());
    for name in [
        "switchyard_events_in_flight",
        "switchyard_dead_letters_total",
        "switchyard_grant_republishes_total",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    let (status, response) = http_get(port, "/readyz").expect("readyz answers");
    assert_eq!(status, 200, "{}", optimizer.log());
    assert!(response.ends_with("\r\n\r\nready\n"), "{response}");
    assert_eq!(http_get(port, "/nope").map(|(s, _)| s), Some(404));
}

/// Written to a file (not a terminal), the optimizer's log is JSON lines without colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimizer_logs_json_lines_without_colour_when_not_on_a_terminal() {
    let servers = LocalServers::start().await.expect("servers");
    let mut config = config_for(&servers);
    let port = common::free_port();
    config.metrics.addr = format!("127.0.0.1:{port}");
    let optimizer = OptimizerProcess::spawn(&config, &[("RUST_LOG", "info")]);
    // It logs the metrics address just before serving it.
    within(30, "the optimizer to serve /healthz", async {
        while http_get(port, "/healthz").map(|(s, _)| s) != Some(200) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let log = optimizer.log();
    assert!(!log.contains('\x1b'), "ANSI escape in the log:\n{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let serving = lines
        .iter()
        .find(|l| l["message"] == "serving /metrics, /healthz and /readyz")
        .unwrap_or_else(|| panic!("no serving line in\n{log}"));
    assert_eq!(serving["level"], "INFO", "{serving}");
    assert!(
        serving["addr"].as_str().is_some(),
        "fields at the top: {serving}"
    );
}

#[test]
fn decision_cost_reports_every_strategy_at_every_size() {
    let output = switchyard(&[
        "decision-cost",
        "--agents",
        "50,600",
        "--millis",
        "20",
        "--json",
    ])
    .output_within(LIMIT_S, "decision-cost to finish");
    let rows = json_of(&output);
    let rows = rows.as_array().expect("a JSON array");
    assert_eq!(rows.len(), 12, "6 strategies × 2 sizes: {rows:?}");
    for row in rows {
        assert!(
            row["micros_per_decision"].as_f64().is_some_and(|v| v > 0.0),
            "{row}"
        );
    }
}

/// A tiny workload for `sim --live`: two agent types (one slow and flaky, so retries happen),
/// a few dependencies, 12 tasks.
const TINY_WORKLOAD: &str = r#"
name = "tiny"
seed = 11
[[agent_types]]
name = "quick"
count = 2
capacity = { cpu = 2, memory = 2048 }
truth.job = { speed = 0.5 }
[[agent_types]]
name = "flaky"
count = 2
capacity = { cpu = 2, memory = 2048 }
truth.job = { speed = 2.0, failure_rate = 0.3 }
[tasks]
count = 40
arrival = "poisson"
rate_per_s = 4.0
[[tasks.types]]
name = "job"
priority = [1, 9]
resources = { cpu = 1, memory = 512 }
estimated_duration_s = [0.5, 1.5]
[tasks.dependencies]
probability = 0.3
[retry]
max_attempts = 6
backoff_s = 0.5
"#;

#[test]
fn sim_live_json_reports_every_strategy_but_the_oracle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tiny.toml");
    std::fs::write(&path, TINY_WORKLOAD).expect("workload written");
    let workload = path.to_string_lossy().to_string();
    let args = [
        "sim",
        "--live",
        "--workload",
        workload.as_str(),
        "--json",
        "--tasks",
        "12",
        "--time-scale",
        "20",
    ];
    let report = json_of(&switchyard(&args).output_within(LIMIT_S, "sim --live to finish"));
    assert_eq!(report["workload"], "tiny");
    assert_eq!(report["tasks"], 12, "cut to --tasks: {report}");
    assert_eq!(report["agents"], 4);
    let strategies = report["strategies"].as_object().expect("strategies");
    let names: Vec<&str> = strategies.keys().map(String::as_str).collect();
    let mut expected: Vec<&str> = switchyard_decision::StrategyKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    expected.sort_unstable();
    assert_eq!(names, expected, "every strategy, no oracle");
    for (name, m) in strategies {
        let count = |field: &str| {
            m[field]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}.{field}"))
        };
        assert!(count("tasks_completed") > 0, "{name}: {m}");
        assert_eq!(count("tasks_unfinished"), 0, "{name}: {m}");
        assert_eq!(
            count("tasks_completed") + count("tasks_failed"),
            12,
            "{name}: {m}"
        );
        assert!(
            m["mean_completion_s"].as_f64().is_some_and(|s| s > 0.0),
            "{name}: {m}"
        );
        let grants: u64 = m["grants_by_agent_type"]
            .as_object()
            .expect("grants by type")
            .values()
            .filter_map(|v| v.as_u64())
            .sum();
        assert_eq!(grants, count("attempts"), "{name}: {m}");
    }
}

#[test]
fn chaos_refuses_an_unknown_scenario_and_names_the_known_ones() {
    let output = switchyard(&["chaos", "--scenario", "no-such-fault"])
        .output_within(LIMIT_S, "chaos to refuse");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "refused: {stderr}");
    for name in [
        "optimizer-kill",
        "nats-node-kill",
        "redis-restart",
        "duplicate-flood",
    ] {
        assert!(stderr.contains(name), "names {name}: {stderr}");
    }
}

#[test]
fn auth_init_and_add_agent_write_the_server_include_and_one_creds_file_each() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("auth");
    let dir_arg = dir.to_str().expect("utf-8 path");
    let init = switchyard(&["auth", "init", dir_arg])
        .output()
        .expect("runs");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let conf = std::fs::read_to_string(dir.join("nats-auth.conf")).expect("include written");
    assert!(conf.contains("operator:") && conf.contains("resolver_preload"));

    let add = switchyard(&["auth", "add-agent", "agent-1", "--dir", dir_arg])
        .output()
        .expect("runs");
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let path = String::from_utf8_lossy(&add.stdout).trim().to_string();
    let creds = std::fs::read_to_string(&path).expect("creds written");
    assert!(creds.contains("BEGIN NATS USER JWT") && creds.contains("BEGIN USER NKEY SEED"));

    let bad = switchyard(&["auth", "add-agent", "a.b", "--dir", dir_arg])
        .output()
        .expect("runs");
    assert!(
        !bad.status.success(),
        "an id that is not a subject token is refused"
    );
    let again = switchyard(&["auth", "init", dir_arg])
        .output()
        .expect("runs");
    assert!(
        !again.status.success(),
        "init does not overwrite a trust chain"
    );
}

/// `--help` of both binaries lists every environment variable the configuration reads (from the
/// configuration's own list, so none can be added without appearing) and the ones the binaries
/// read themselves; `--version` names the build as `switchyard_build_info` does.
#[test]
fn help_lists_every_environment_variable_and_version_names_the_build() {
    let binaries = [
        ("optimizer", env!("CARGO_BIN_EXE_optimizer")),
        ("switchyard", env!("CARGO_BIN_EXE_switchyard")),
    ];
    for (name, binary) in binaries {
        let help = Command::new(binary)
            .arg("--help")
            .output_within(LIMIT_S, "--help to print");
        assert!(help.status.success(), "{name} --help: {:?}", help.status);
        let help = String::from_utf8_lossy(&help.stdout);
        let always = ["BUDGETS", "SWITCHYARD_CONFIG", "LOG_FORMAT", "RUST_LOG"];
        for var in switchyard_server::config::env_override_names().chain(always) {
            assert!(
                help.lines()
                    .any(|l| l.split_whitespace().next() == Some(var) && l.len() > var.len() + 10),
                "{name} --help does not describe {var}:\n{help}"
            );
        }
        let version = Command::new(binary)
            .arg("--version")
            .output_within(LIMIT_S, "--version to print");
        let version = String::from_utf8_lossy(&version.stdout);
        let expected = format!("{name} {}", switchyard_server::build::version_line());
        assert_eq!(version.trim(), expected);
    }
}
