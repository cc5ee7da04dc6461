//! Four scenarios of the fault matrix (`switchyard chaos`) with a small load, through the
//! library's entry point: a Redis restart with its append-only file, a failover of Redis under
//! Sentinel (the primary killed, the replica promoted), a restart of the whole single-node NATS,
//! and one optimizer of two frozen (SIGSTOP) for 15 s, through which no live agent may lose its
//! lease. Each starts its own servers and two optimizer processes, runs agents with
//! 5 s leases under 30 submits/s for 12 s (30 s for the stop), injects the fault a third of the way in, and checks that every task
//! ended, none was worked twice at once and no agent was over its capacity.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use switchyard::fleet::chaos::{ChaosOptions, Scenario, ScenarioReport, render_table, run_chaos};
use switchyard_server::config::Config;

const RATE: f64 = 30.0;
const DURATION_S: u64 = 12;

/// Runs `scenario` under `duration_s` seconds of load (the fault starts a third of the way in).
async fn run(scenario: Scenario, duration_s: u64) -> ScenarioReport {
    let mut config = Config::default();
    // Events held by a connection the fault broke come back after one ack wait: keep it short.
    config.jetstream.ack_wait_ms = 5_000;
    let options = ChaosOptions {
        scenarios: vec![scenario],
        agents: 8,
        rate: RATE,
        duration: Duration::from_secs(duration_s),
        lease_s: 5.0,
        seed: 11,
        optimizer_bin: PathBuf::from(env!("CARGO_BIN_EXE_optimizer")),
        drain_within: Duration::from_secs(60),
    };
    let report = tokio::time::timeout(
        Duration::from_secs(240),
        run_chaos(&config, &options, &|_| {}),
    )
    .await
    .expect("the scenario finishes within 4 minutes")
    .expect("the scenario runs");
    let table = render_table(&report);
    let mut scenarios = report.scenarios;
    let s = scenarios.pop().expect("one scenario");
    assert_invariants(&s, duration_s, &table);
    s
}

fn assert_invariants(s: &ScenarioReport, duration_s: u64, table: &str) {
    let expected = RATE * duration_s as f64;
    assert!(
        (s.tasks as f64) >= expected * 0.9,
        "{} tasks stored of ~{expected} offered\n{table}",
        s.tasks
    );
    assert_eq!(s.not_accepted, 0, "every submit stored\n{table}");
    assert_eq!(s.outcomes.lost, 0, "no task lost\n{table}");
    assert_eq!(s.outcomes.stuck, 0, "no task stuck\n{table}");
    assert_eq!(
        s.outcomes.completed + s.outcomes.failed,
        s.tasks,
        "every task terminal\n{table}"
    );
    assert!(s.outcomes.completed > s.outcomes.failed, "{table}");
    assert!(
        s.double_worked.is_empty(),
        "no task worked twice at once\n{table}"
    );
    assert!(
        s.over_capacity_seen.is_empty(),
        "no agent handed too much\n{table}"
    );
    assert!(
        s.reservations.samples > 0,
        "reservations were sampled\n{table}"
    );
    assert!(
        s.reservations.over.is_empty(),
        "no agent reserved too much\n{table}"
    );
    assert!(s.grants >= s.outcomes.completed, "{table}");
    assert!(
        s.recovery.first_grant_s.is_some(),
        "grants after the fault\n{table}"
    );
    assert!(s.passed, "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_with_aof_loses_nothing() {
    let s = run(Scenario::RedisRestart, DURATION_S).await;
    assert!(
        s.fault_for_s >= 2.0,
        "redis was down at least 2 s: {}",
        s.fault_for_s
    );
}

/// Both optimizers and the checks find the primary through the sentinels; the replica had every
/// write when the primary was killed, so whatever the optimizers did before the kill is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_sentinel_failover_loses_nothing() {
    let s = run(Scenario::RedisFailover, DURATION_S).await;
    assert!(s.note.contains("promoted"), "{}", s.note);
    assert_eq!(
        s.dead_letters.took_effect, 0,
        "no dead letter for an event that took effect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_node_nats_restart_loses_nothing() {
    let s = run(Scenario::NatsRestart, DURATION_S).await;
    assert!(
        s.fault_for_s >= 2.0,
        "nats was down at least 2 s: {}",
        s.fault_for_s
    );
}

/// With heartbeats in a queue group, the frozen replica took half of them and dropped them: live
/// agents were judged dead and their tasks worked twice (this failed in every run before every
/// replica received every heartbeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_optimizer_judges_no_live_agent_dead() {
    // Long enough that the load goes on after the 15 s stop ends, so recovery is measured.
    let s = run(Scenario::OptimizerStop, 30).await;
    assert!(s.fault_for_s >= 10.0, "frozen for {} s", s.fault_for_s);
    assert!(
        s.live_agents_marked_dead.is_empty(),
        "live agents judged dead: {:?}",
        s.live_agents_marked_dead
    );
}
