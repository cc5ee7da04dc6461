//! The measurement behind BENCHMARKS.md's shared-budget table (not a pass/fail test: run it with
//! `cargo test --release --test budget_bench -- --ignored --nocapture`; `BUDGET_BURST=200` for
//! a bucket of one draw). Real nats-server and
//! redis-server, two optimizer replicas, 8 agents with room for 32 tasks at once, and a
//! tokens-per-period rate budget as the binding constraint: tasks draw an estimate of 200 tokens,
//! really use a log-normal amount around it (σ 0.3, mean 200) and report it; the budget is
//! reconciled. Time is compressed 6×: a 10 s period stands for a minute (the arithmetic is the
//! same at any period; only the number of grants per period matters). Printed per run, as one
//! JSON line: the largest share of the limit granted (draws) and used (actual usage, by grant
//! time) in any sliding period, and the task rate achieved against the rate the budget allows.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, within};
use switchyard_harness::LocalServers;
use switchyard_protocol::{Replies, TaskSubmit};
use switchyard_server::config::{BudgetConfig, BudgetKind};
use switchyard_server::state::Keys;

const LIMIT: u64 = 20_000;
const PERIOD_MS: i64 = 10_000;
const DRAW: u64 = 200;

/// The bucket size: `BUDGET_BURST` (default 400, 2% of the limit; at least one draw).
fn burst() -> u64 {
    std::env::var("BUDGET_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
        .max(DRAW)
}
const TASK_MS: u64 = 500;
const TASKS: usize = 400;

/// A mean-1 log-normal factor with σ = 0.3, from a xorshift state.
fn noise(state: &mut u64) -> f64 {
    let mut uniform = || {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state >> 11) as f64 / (1u64 << 53) as f64
    };
    let (u1, u2) = (uniform().max(1e-12), uniform());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (0.3 * z - 0.045).exp()
}

type Used = Arc<Mutex<BTreeMap<String, u64>>>;

async fn agent(cluster: &Cluster, id: &str, seed: u64, used: Used) -> tokio::task::JoinHandle<()> {
    let agent = Arc::new(cluster.agent(id, "worker", 4.0, 1000.0).await);
    let mut grants = agent.grants().await.expect("grants");
    tokio::spawn(async move {
        let mut state = seed;
        while let Some(Ok(grant)) = grants.next().await {
            let tokens = (DRAW as f64 * noise(&mut state)).round() as u64;
            let (agent, used) = (agent.clone(), used.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(TASK_MS)).await;
                used.lock()
                    .unwrap()
                    .insert(grant.payload.task_id.clone(), tokens);
                let usage = BTreeMap::from([("tokens".to_string(), tokens)]);
                let _ = agent
                    .complete_grant_with_usage(&grant.payload, true, 0.5, usage)
                    .await;
            });
        }
    })
}

/// The largest sum of `amount` over any window of `PERIOD_MS` starting at a grant, among
/// windows that end before the last grant (the queue was never empty in them).
fn max_window(grants: &[(i64, u64)]) -> u64 {
    let last = grants.last().map_or(0, |g| g.0);
    let mut best = 0;
    for (i, (start, _)) in grants.iter().enumerate() {
        if start + PERIOD_MS > last {
            break;
        }
        let sum: u64 = grants[i..]
            .iter()
            .take_while(|(t, _)| *t < start + PERIOD_MS)
            .map(|(_, a)| a)
            .sum();
        best = best.max(sum);
    }
    best
}

async fn one_run(run: usize) {
    let servers = LocalServers::start().await.expect("servers");
    let mut config = common::config_for(&servers);
    config.budgets = vec![BudgetConfig {
        name: "tpm".into(),
        kind: BudgetKind::Rate,
        limit: LIMIT,
        period_s: Some(PERIOD_MS as f64 / 1000.0),
        burst: Some(burst()),
        unit: Some("tokens".into()),
    }];
    let cluster = Cluster::start_on(servers, config, 2).await;
    let used: Used = Arc::default();
    let mut agents = Vec::new();
    for i in 0..8u64 {
        let id = format!("a{i}");
        agents.push(
            agent(
                &cluster,
                &id,
                0x9e37_79b9 + i * 7919 + run as u64,
                used.clone(),
            )
            .await,
        );
    }
    let orch = cluster.coordinator("orch").await;
    let ids: Vec<String> = (0..TASKS).map(|i| format!("t{i}")).collect();
    for id in &ids {
        let mut task = TaskSubmit::new(id).resource("cpu", 1.0).budget("tpm", DRAW);
        task.replies = Replies::None;
        orch.submit_task(task).await.expect("submit");
    }
    within(300, "every task to complete", async {
        while used.lock().unwrap().len() < TASKS {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let keys = Keys::new("switchyard");
    let mut conn = cluster.redis().await;
    let used = used.lock().unwrap().clone();
    let mut drawn = Vec::new();
    let mut spent = Vec::new();
    for id in &ids {
        let at = common::hget_i64(&mut conn, &keys.task(id), "granted_at").await;
        drawn.push((at, DRAW));
        spent.push((at, used.get(id).copied().unwrap_or(0)));
    }
    drawn.sort_unstable();
    spent.sort_unstable();
    let span_ms = (drawn[TASKS - 1].0 - drawn[0].0) as f64;
    let mean_use = spent.iter().map(|s| s.1).sum::<u64>() as f64 / TASKS as f64;
    // What the budget allows: LIMIT tokens per period at the mean actual use, after the burst.
    let allowed_per_s = LIMIT as f64 / (PERIOD_MS as f64 / 1000.0) / mean_use;
    let achieved_per_s = (TASKS as f64 - burst() as f64 / DRAW as f64) / (span_ms / 1000.0);
    let drawn_max = max_window(&drawn) as f64 / LIMIT as f64;
    let used_max = max_window(&spent) as f64 / LIMIT as f64;
    let busy = TASKS as f64 * TASK_MS as f64 / (span_ms * 32.0);
    println!(
        "{{\"run\": {run}, \"drawn_max_share\": {drawn_max:.4}, \"used_max_share\": {used_max:.4}, \"mean_use\": {mean_use:.1}, \"allowed_tasks_per_s\": {allowed_per_s:.3}, \"achieved_tasks_per_s\": {achieved_per_s:.3}, \"budget_utilisation\": {:.4}, \"agent_utilisation\": {busy:.4}, \"span_s\": {:.1}}}",
        achieved_per_s / allowed_per_s,
        span_ms / 1000.0
    );
    for a in agents {
        a.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn tpm_budget_under_two_replicas() {
    for run in 0..3 {
        one_run(run).await;
    }
}
