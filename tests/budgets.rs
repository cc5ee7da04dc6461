//! Shared budgets (issue 12, item 6) against real servers: a rate budget exhausted then refilled,
//! usage reconciled (refund and extra charge), concurrency slots released when a grant ends or
//! is taken back, the Lua arithmetic agreeing with `decision::budget` to the unit, and, live, an
//! unknown budget refused and two replicas never overspending a rate or a concurrency budget.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;

use common::scripts::{Fixture, RETENTION_S, cluster_fixture, cpu, fixture, ids, submit_req};
use common::{Cluster, within};
use switchyard_decision::budget::{Bucket, Draw};
use switchyard_harness::LocalServers;
use switchyard_protocol::TaskSubmit;
use switchyard_server::config::{BudgetConfig, BudgetKind};
use switchyard_server::state::{
    Completion, DeadlineKind, DeadlineOutcome, GrantOutcome, GrantRequest, SubmitOutcome,
};

fn rate(name: &str, limit: u64, period_s: f64, burst: u64) -> BudgetConfig {
    BudgetConfig {
        name: name.into(),
        kind: BudgetKind::Rate,
        limit,
        period_s: Some(period_s),
        burst: Some(burst),
        unit: Some("tokens".into()),
    }
}

fn slots(name: &str, limit: u64) -> BudgetConfig {
    BudgetConfig {
        name: name.into(),
        kind: BudgetKind::Concurrency,
        limit,
        period_s: None,
        burst: None,
        unit: None,
    }
}

/// Submits `task_id` drawing `draws`, queued.
async fn submit_drawing(f: &Fixture, task_id: &str, draws: &[(&str, u64)]) -> Vec<(String, u64)> {
    let draws: Vec<(String, u64)> = draws.iter().map(|(n, a)| (n.to_string(), *a)).collect();
    let mut req = submit_req(task_id, &format!("m-{task_id}"), 5, cpu(100));
    req.options
        .push(("budgets", switchyard_decision::budget::encode_draws(&draws)));
    assert_eq!(f.submit(&req).await, SubmitOutcome::Queued, "{task_id}");
    draws
}

async fn grant(f: &Fixture, task_id: &str, draws: &[(String, u64)], agent: &str) -> GrantOutcome {
    let candidates = ids(&[agent]);
    let request = GrantRequest {
        task_id,
        candidates: &candidates,
        budgets: draws,
        why: "",
        explores: "",
    };
    let mut outcomes = f.store.grant_tasks(&[request]).await.expect("grant_tasks");
    outcomes.remove(0)
}

async fn complete_with(f: &Fixture, task_id: &str, agent: &str, usage: &[(&str, u64)]) {
    let usage: BTreeMap<String, u64> = usage.iter().map(|(u, n)| (u.to_string(), *n)).collect();
    let report = Completion {
        task_id,
        agent_id: agent,
        success: true,
        execution_time_s: 0.0,
        grant_seq: None,
        usage: Some(&usage),
    };
    f.store
        .complete_task(&report, 0.5, RETENTION_S)
        .await
        .expect("complete");
}

async fn budget(f: &Fixture, name: &str) -> switchyard_server::state::BudgetState {
    f.store
        .budget_states(&[name.to_string()])
        .await
        .expect("budget state")
        .pop()
        .expect("defined")
}

#[tokio::test]
async fn a_rate_budget_runs_out_then_refills() {
    let f = fixture().await;
    f.store
        .define_budgets(&[rate("rps", 2, 1.0, 2)])
        .await
        .expect("defined");
    f.register("a", cpu(10_000)).await;
    let mut draws = Vec::new();
    for id in ["t1", "t2", "t3"] {
        draws.push(submit_drawing(&f, id, &[("rps", 1)]).await);
    }
    for (id, d) in ["t1", "t2"].iter().zip(&draws) {
        let outcome = grant(&f, id, d, "a").await;
        assert!(
            matches!(outcome, GrantOutcome::Granted { .. }),
            "{id}: {outcome:?}"
        );
    }
    match grant(&f, "t3", &draws[2], "a").await {
        GrantOutcome::Budget { budget, wait_ms } => {
            assert_eq!(budget, "rps");
            let wait = wait_ms.expect("a rate budget refills");
            assert!(
                (1..=500).contains(&wait),
                "one unit refills in 500 ms: {wait}"
            );
        }
        other => panic!("budget expected: {other:?}"),
    }
    assert_eq!(f.task_state("t3").await.as_deref(), Some("queued"));
    assert_eq!(budget(&f, "rps").await.available, 0);
    // Refilled by the Redis clock: granted within a bounded number of tries.
    within(5, "the budget to refill", async {
        loop {
            if let GrantOutcome::Granted { .. } = grant(&f, "t3", &draws[2], "a").await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// On a Redis Cluster the budget keys share the deployment's slot: grant, completion and requeue
/// with budgets are accepted (no CROSSSLOT).
#[tokio::test]
async fn budgets_work_on_a_redis_cluster() {
    let f = cluster_fixture().await;
    f.store
        .define_budgets(&[rate("tpm", 100, 36_000.0, 100), slots("gpu", 1)])
        .await
        .expect("defined");
    f.register("a", cpu(10_000)).await;
    let d = submit_drawing(&f, "c1", &[("tpm", 10), ("gpu", 1)]).await;
    assert!(matches!(
        grant(&f, "c1", &d, "a").await,
        GrantOutcome::Granted { .. }
    ));
    complete_with(&f, "c1", "a", &[("tokens", 20)]).await;
    assert_eq!(budget(&f, "tpm").await.available, 80);
    assert_eq!(budget(&f, "gpu").await.in_use, 0);
    let d = submit_drawing(&f, "c2", &[("gpu", 1)]).await;
    assert!(matches!(
        grant(&f, "c2", &d, "a").await,
        GrantOutcome::Granted { .. }
    ));
    f.store
        .requeue_task("c2", "a", RETENTION_S)
        .await
        .expect("requeue");
    assert_eq!(budget(&f, "gpu").await.in_use, 0);
}

#[tokio::test]
async fn usage_is_reconciled_refunded_or_charged_into_debt() {
    let f = fixture().await;
    // 10 000 tokens per ~11 days: no refill worth a token during the test.
    f.store
        .define_budgets(&[rate("tpm", 10_000, 1_000_000.0, 10_000)])
        .await
        .expect("defined");
    f.register("a", cpu(10_000)).await;
    let d = submit_drawing(&f, "cheap", &[("tpm", 3000)]).await;
    assert!(matches!(
        grant(&f, "cheap", &d, "a").await,
        GrantOutcome::Granted { .. }
    ));
    assert_eq!(budget(&f, "tpm").await.available, 7000);
    complete_with(&f, "cheap", "a", &[("tokens", 1000)]).await;
    assert_eq!(budget(&f, "tpm").await.available, 9000, "2000 refunded");

    let d = submit_drawing(&f, "dear", &[("tpm", 3000)]).await;
    assert!(matches!(
        grant(&f, "dear", &d, "a").await,
        GrantOutcome::Granted { .. }
    ));
    complete_with(&f, "dear", "a", &[("tokens", 8000)]).await;
    assert_eq!(budget(&f, "tpm").await.available, 1000, "5000 more charged");

    let d = submit_drawing(&f, "over", &[("tpm", 1000)]).await;
    assert!(matches!(
        grant(&f, "over", &d, "a").await,
        GrantOutcome::Granted { .. }
    ));
    complete_with(&f, "over", "a", &[("tokens", 5000)]).await;
    let state = budget(&f, "tpm").await;
    assert_eq!((state.available, state.debt), (0, 4000), "in debt");
    // A repeated completion changes nothing; a unit the budget does not count changes nothing.
    complete_with(&f, "over", "a", &[("tokens", 5000)]).await;
    assert_eq!(budget(&f, "tpm").await.debt, 4000);
    let d = submit_drawing(&f, "small", &[("tpm", 1)]).await;
    assert!(
        matches!(
            grant(&f, "small", &d, "a").await,
            GrantOutcome::Budget { .. }
        ),
        "debt blocks"
    );
}

#[tokio::test]
async fn concurrency_slots_are_released_by_completion_and_by_requeue() {
    let f = fixture().await;
    f.store
        .define_budgets(&[slots("gpu", 1)])
        .await
        .expect("defined");
    f.register("a", cpu(10_000)).await;
    let d1 = submit_drawing(&f, "j1", &[("gpu", 1)]).await;
    let d2 = submit_drawing(&f, "j2", &[("gpu", 1)]).await;
    assert!(matches!(
        grant(&f, "j1", &d1, "a").await,
        GrantOutcome::Granted { .. }
    ));
    assert_eq!(
        grant(&f, "j2", &d2, "a").await,
        GrantOutcome::Budget {
            budget: "gpu".into(),
            wait_ms: None
        }
    );
    assert_eq!(budget(&f, "gpu").await.in_use, 1);
    complete_with(&f, "j1", "a", &[]).await;
    assert_eq!(
        budget(&f, "gpu").await.in_use,
        0,
        "released by the completion"
    );
    assert!(matches!(
        grant(&f, "j2", &d2, "a").await,
        GrantOutcome::Granted { .. }
    ));
    f.store
        .requeue_task("j2", "a", RETENTION_S)
        .await
        .expect("requeue");
    assert_eq!(budget(&f, "gpu").await.in_use, 0, "released by the requeue");
    assert_eq!(f.task_field("j2", "budget_held").await, "0");
    // Taken back twice: released once.
    f.store
        .requeue_task("j2", "a", RETENTION_S)
        .await
        .expect("requeue again");
    assert_eq!(budget(&f, "gpu").await.in_use, 0);
    assert!(matches!(
        grant(&f, "j2", &d2, "a").await,
        GrantOutcome::Granted { .. }
    ));
    assert_eq!(budget(&f, "gpu").await.in_use, 1);
}

#[tokio::test]
async fn a_run_timeout_releases_the_slot_with_the_reservation() {
    let f = fixture().await;
    f.store
        .define_budgets(&[slots("gpu", 1)])
        .await
        .expect("defined");
    f.register("a", cpu(10_000)).await;
    let draws = vec![("gpu".to_string(), 1)];
    let mut req = submit_req("slow", "m-slow", 5, cpu(100));
    req.options
        .push(("budgets", switchyard_decision::budget::encode_draws(&draws)));
    req.options.push(("run_timeout_ms", "1".into()));
    assert_eq!(f.submit(&req).await, SubmitOutcome::Queued);
    assert!(matches!(
        grant(&f, "slow", &draws, "a").await,
        GrantOutcome::Granted { .. }
    ));
    assert_eq!(budget(&f, "gpu").await.in_use, 1);
    // Due 1 ms after the grant by the Redis clock: read until it is.
    let deadline = within(5, "the run deadline comes due", async {
        loop {
            let due = f.store.due_deadlines(10).await.expect("due_deadlines");
            if let Some(d) = due.into_iter().find(|d| d.kind == DeadlineKind::Run) {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let outcome = f
        .store
        .enforce_deadline(&deadline, "a", 0.1, RETENTION_S)
        .await
        .expect("enforce_deadline");
    assert!(
        matches!(outcome, DeadlineOutcome::Failed { .. }),
        "{outcome:?}"
    );
    assert_eq!(f.task_field("slow", "state").await, "failed");
    assert_eq!(budget(&f, "gpu").await.in_use, 0, "released with the grant");
    assert_eq!(f.task_field("slow", "budget_held").await, "0");
}

#[tokio::test]
async fn a_blocked_budget_does_not_hold_up_tasks_of_other_budgets() {
    let f = fixture().await;
    f.store
        .define_budgets(&[rate("slow", 1, 3600.0, 1), slots("free", 5)])
        .await
        .expect("defined");
    f.register("a", cpu(10_000)).await;
    let first = submit_drawing(&f, "first", &[("slow", 1)]).await;
    let big = submit_drawing(&f, "second", &[("slow", 1)]).await;
    let other = submit_drawing(&f, "other", &[("free", 1)]).await;
    let none = submit_drawing(&f, "none", &[]).await;
    let tasks = [
        ("first", &first),
        ("second", &big),
        ("other", &other),
        ("none", &none),
    ];
    let candidates = ids(&["a"]);
    let requests: Vec<GrantRequest> = tasks
        .iter()
        .map(|(id, d)| GrantRequest {
            task_id: id,
            candidates: &candidates,
            budgets: d,
            why: "",
            explores: "",
        })
        .collect();
    let outcomes = f.store.grant_tasks(&requests).await.expect("grant");
    assert!(matches!(outcomes[0], GrantOutcome::Granted { .. }));
    assert!(matches!(&outcomes[1], GrantOutcome::Budget { budget, .. } if budget == "slow"));
    assert!(matches!(outcomes[2], GrantOutcome::Granted { .. }));
    assert!(matches!(outcomes[3], GrantOutcome::Granted { .. }));
}

/// The script's bucket against `Rate`'s, step by step, with awkward numbers (a prime limit and
/// period, large levels): every taken draw and every reconciliation leaves exactly the level Rust
/// computes at the time the script recorded, and every refusal's wait lies between Rust's waits
/// at the Redis times before and after the call.
#[tokio::test]
async fn lua_and_rust_bucket_arithmetic_agree() {
    let f = fixture().await;
    let def = rate("odd", 999_983, 59.999, 1_499_977);
    let r = def.rate();
    f.store.define_budgets(&[def]).await.expect("defined");
    f.register("a", cpu(1_000_000)).await;
    let mut seed: u64 = 0x5eed;
    let mut next = move |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    let mut conn = f.raw.clone();
    for i in 0..60 {
        let before = bucket(&f).await;
        let t0 = redis_now(&mut conn).await;
        let amount = 1 + next(700_000);
        let id = format!("k{i}");
        let d = submit_drawing(&f, &id, &[("odd", amount)]).await;
        let outcome = grant(&f, &id, &d, "a").await;
        let t1 = redis_now(&mut conn).await;
        let after = bucket(&f).await;
        match outcome {
            GrantOutcome::Granted { .. } => {
                let Draw::Taken(expected) = r.draw(before, after.at_ms, amount as i64) else {
                    panic!(
                        "Rust refuses what Lua granted: {before:?} {amount} at {}",
                        after.at_ms
                    )
                };
                assert_eq!(expected, after, "draw {amount} from {before:?}");
                let used = next(900_000);
                complete_with(&f, &id, "a", &[("tokens", used)]).await;
                let settled = bucket(&f).await;
                let expected = r.reconcile(after, settled.at_ms, amount as i64, used as i64);
                assert_eq!(expected, settled, "reconcile {amount} with {used}");
            }
            GrantOutcome::Budget { wait_ms, .. } => {
                let wait = wait_ms.expect("a wait") as i64;
                let at = |t| match r.draw(before, t, amount as i64) {
                    Draw::Wait { wait_ms } => wait_ms,
                    _ => 0,
                };
                assert!(
                    at(t1) <= wait && wait <= at(t0),
                    "{wait} not in [{}, {}]",
                    at(t1),
                    at(t0)
                );
                assert_eq!(after, before, "a refusal writes nothing");
                f.store.requeue_task(&id, "a", RETENTION_S).await.ok();
            }
            other => panic!("{other:?}"),
        }
    }
}

async fn bucket(f: &Fixture) -> Bucket {
    let row = f.store.budget_record("odd").await.expect("read");
    let num = |k: &str| row.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Bucket {
        level: num("level"),
        at_ms: num("at"),
    }
}

async fn redis_now(conn: &mut switchyard_server::state::Connection) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(conn).await.expect("TIME");
    s * 1000 + us / 1000
}

/// Live: an unknown budget is refused; a draw larger than the burst is refused under policy
/// refuse.
#[tokio::test]
async fn unknown_budgets_and_oversized_draws_are_refused() {
    let servers = LocalServers::start().await.expect("servers");
    let mut config = common::config_for(&servers);
    config.budgets = vec![rate("tpm", 1000, 60.0, 100)];
    config.coordination.infeasible = switchyard_server::config::InfeasiblePolicy::Refuse;
    let cluster = Cluster::start_on(servers, config, 1).await;
    let orch = cluster.coordinator("orch").await;
    let _a = cluster.agent("a", "worker", 4.0, 1000.0).await;
    let refused = orch
        .allocate_task(TaskSubmit::new("x").resource("cpu", 1.0).budget("nope", 1))
        .await
        .expect_err("refused");
    assert_eq!(refused.reason_code(), Some("unknown_budget"), "{refused}");
    let refused = orch
        .allocate_task(TaskSubmit::new("y").resource("cpu", 1.0).budget("tpm", 101))
        .await
        .expect_err("refused");
    assert_eq!(refused.reason_code(), Some("infeasible"), "{refused}");
    let granted = orch
        .allocate_task(TaskSubmit::new("z").resource("cpu", 1.0).budget("tpm", 100))
        .await
        .expect("granted");
    assert!(
        matches!(granted, switchyard_client::Allocation::Granted { .. }),
        "{granted:?}"
    );
}

/// An agent that works each grant for `hold_ms`, counting how many of the fleet's tasks run at
/// once (`running`, its maximum in `peak`), and reports usage `tokens`.
async fn worker(
    cluster: &Cluster,
    id: &str,
    hold_ms: u64,
    running: std::sync::Arc<std::sync::atomic::AtomicI64>,
    peak: std::sync::Arc<std::sync::atomic::AtomicI64>,
) -> tokio::task::JoinHandle<()> {
    use std::sync::atomic::Ordering::SeqCst;
    let agent = cluster.agent(id, "worker", 8.0, 1000.0).await;
    let mut grants = agent.grants().await.expect("grants");
    tokio::spawn(async move {
        while let Some(Ok(grant)) = grants.next().await {
            let now = running.fetch_add(1, SeqCst) + 1;
            peak.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(hold_ms)).await;
            running.fetch_sub(1, SeqCst);
            let usage = BTreeMap::from([("tokens".to_string(), 1)]);
            let _ = agent
                .complete_grant_with_usage(&grant.payload, true, 0.0, usage)
                .await;
        }
    })
}

/// Three workers holding each grant `hold_ms`, and `n` tasks `<prefix><i>` each drawing 1 from
/// `budget`, all completed. Returns the task ids, the most tasks that ran at once, the workers.
async fn run_drawing(
    cluster: &Cluster,
    hold_ms: u64,
    prefix: &str,
    n: usize,
    budget: &str,
) -> (
    Vec<String>,
    std::sync::Arc<std::sync::atomic::AtomicI64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    use std::sync::atomic::AtomicI64;
    let (running, peak) = (
        std::sync::Arc::new(AtomicI64::new(0)),
        std::sync::Arc::new(AtomicI64::new(0)),
    );
    let mut workers = Vec::new();
    for id in ["w1", "w2", "w3"] {
        workers.push(worker(cluster, id, hold_ms, running.clone(), peak.clone()).await);
    }
    let orch = cluster.coordinator("orch").await;
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    for id in &ids {
        orch.submit_task(TaskSubmit::new(id).resource("cpu", 1.0).budget(budget, 1))
            .await
            .expect("submitted");
    }
    all_completed(cluster, &ids).await;
    (ids, peak, workers)
}

async fn two_replicas_with(budgets: Vec<BudgetConfig>) -> Cluster {
    let servers = LocalServers::start().await.expect("servers");
    let mut config = common::config_for(&servers);
    config.budgets = budgets;
    Cluster::start_on(servers, config, 2).await
}

async fn all_completed(cluster: &Cluster, ids: &[String]) {
    let keys = switchyard_server::state::Keys::new("switchyard");
    let mut conn = cluster.redis().await;
    within(60, "every task to complete", async {
        loop {
            let mut done = 0;
            for id in ids {
                if common::hget(&mut conn, &keys.task(id), "state")
                    .await
                    .as_deref()
                    == Some("completed")
                {
                    done += 1;
                }
            }
            if done == ids.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// Two replicas share one rate budget (10 per second, burst 2): over every one-second window
/// of the grants (Redis clock), at most burst + limit were granted, and over the whole run no
/// more than the bucket allows.
#[tokio::test]
async fn two_replicas_never_overspend_a_rate_budget() {
    let cluster = two_replicas_with(vec![rate("rps", 10, 1.0, 2)]).await;
    let (ids, _peak, workers) = run_drawing(&cluster, 5, "r", 40, "rps").await;
    let keys = switchyard_server::state::Keys::new("switchyard");
    let mut conn = cluster.redis().await;
    let mut at = Vec::new();
    for id in &ids {
        at.push(common::hget_i64(&mut conn, &keys.task(id), "granted_at").await);
    }
    at.sort_unstable();
    for (i, start) in at.iter().enumerate() {
        let within_second = at[i..].iter().take_while(|t| **t < start + 1000).count();
        assert!(
            within_second <= 12,
            "{within_second} grants in the second from {start}: {at:?}"
        );
    }
    let span_ms = at[at.len() - 1] - at[0];
    assert!(
        (at.len() as i64 - 2) * 100 <= span_ms + 1,
        "40 grants need at least 3.8 s at 10/s after a burst of 2: {span_ms} ms"
    );
    for w in workers {
        w.abort();
    }
}

/// Two replicas share a concurrency budget of 2: never more than 2 of its tasks run at once,
/// and 2 do (the agents could run 24).
#[tokio::test]
async fn a_concurrency_budget_holds_under_two_replicas() {
    use std::sync::atomic::Ordering::SeqCst;
    let cluster = two_replicas_with(vec![slots("gpu", 2)]).await;
    let (_ids, peak, workers) = run_drawing(&cluster, 150, "g", 12, "gpu").await;
    assert_eq!(
        peak.load(SeqCst),
        2,
        "at most, and as many as, the budget allows"
    );
    let held = cluster
        .redis()
        .await
        .hget::<_, _, Option<i64>>("{switchyard}:budget:gpu", "held")
        .await
        .expect("read");
    assert_eq!(held, Some(0), "every slot released");
    for w in workers {
        w.abort();
    }
}

/// The status says which budget a queued task waits for, and until when.
#[tokio::test]
async fn a_task_blocked_by_a_budget_says_so_in_status() {
    use switchyard_protocol::{StatusQuery, WaitReason};
    let f = fixture().await;
    f.store
        .define_budgets(&[rate("tpm", 100, 3600.0, 100), slots("gpu", 1)])
        .await
        .expect("defined");
    f.register("a", cpu(10_000)).await;
    let d = submit_drawing(&f, "first", &[("tpm", 100), ("gpu", 1)]).await;
    assert!(matches!(
        grant(&f, "first", &d, "a").await,
        GrantOutcome::Granted { .. }
    ));
    submit_drawing(&f, "rate", &[("tpm", 50)]).await;
    submit_drawing(&f, "slot", &[("gpu", 1)]).await;
    let query = StatusQuery {
        include_agents: false,
        include_tasks: 10,
        ..StatusQuery::default()
    };
    let views = f.store.task_waits(&query).await.expect("waits");
    let reason = |id: &str| {
        views
            .iter()
            .find(|v| v.task_id == id)
            .and_then(|v| v.reason.clone())
            .expect("a reason")
    };
    match reason("rate") {
        WaitReason::Budget { budget, until_ms } => {
            assert_eq!(budget, "tpm");
            assert!(until_ms.is_some(), "a rate budget refills");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        reason("slot"),
        WaitReason::Budget {
            budget: "gpu".into(),
            until_ms: None
        }
    );
    let detail = &views
        .iter()
        .find(|v| v.task_id == "rate")
        .expect("listed")
        .detail;
    assert!(
        detail.starts_with("budget tpm exhausted until "),
        "{detail}"
    );
}

/// More tasks waiting for a concurrency budget's slot than a dispatch window at the head of the
/// queue do not stall the tasks behind them: the dispatcher reads past them.
#[tokio::test]
async fn tasks_waiting_for_a_slot_do_not_stall_the_queue_behind_them() {
    let servers = LocalServers::start().await.expect("servers");
    let mut config = common::config_for(&servers);
    config.budgets = vec![slots("gpu", 1)];
    config.coordination.dispatch_window = 2;
    let cluster = Cluster::start_on(servers, config, 1).await;
    let _agent = cluster.agent("solo", "worker", 8.0, 1000.0).await;
    let orch = cluster.coordinator("orch").await;
    // The first takes the slot (and keeps it: nobody completes it); four more wait for it, ahead
    // of everything else by priority: two full windows.
    for i in 0..5 {
        let task = TaskSubmit::new(format!("gpu-{i}"))
            .resource("cpu", 1.0)
            .priority(9)
            .budget("gpu", 1);
        orch.submit_task(task).await.expect("submitted");
    }
    let behind = orch
        .allocate_task(TaskSubmit::new("plain").resource("cpu", 1.0).priority(1))
        .await
        .expect("allocated");
    if behind == switchyard_client::Allocation::Queued {
        common::wait_for_state(&mut cluster.redis().await, 10, "plain", "granted").await;
    } else {
        assert_eq!(
            behind,
            switchyard_client::Allocation::Granted {
                agent_id: "solo".into()
            }
        );
    }
    let keys = switchyard_server::state::Keys::new("switchyard");
    let mut conn = cluster.redis().await;
    for i in 1..5 {
        let state = common::hget(&mut conn, &keys.task(&format!("gpu-{i}")), "state").await;
        assert_eq!(
            state.as_deref(),
            Some("queued"),
            "gpu-{i} still waits for the slot"
        );
    }
}
