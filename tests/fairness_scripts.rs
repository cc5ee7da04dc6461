//! Fairness between tenants and the head hold (issue 12, items 5 and 7) in the Redis scripts,
//! against a real redis-server (no NATS): the virtual-time arithmetic of submit_task and
//! grant_tasks is the decision crate's `FairClock`, and a hold taken through one connection is
//! enforced by grant_tasks for every other (a second replica has nothing to know).

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use common::scripts::{Fixture, cpu, fixture, submit_req};
use switchyard_decision::{FairClock, task_cost};
use switchyard_server::config::RedisConfig;
use switchyard_server::state::{GrantOutcome, Store, SubmitOutcome, SubmitRequest};

fn tenant_req(task_id: &str, priority: u8, tenant: &str, weight: f64) -> SubmitRequest {
    let mut req = submit_req(task_id, &format!("m-{task_id}"), priority, cpu(1000));
    req.options = vec![
        ("tenant", tenant.to_string()),
        ("fair_cost", task_cost(weight).to_string()),
    ];
    req
}

async fn submit_all(f: &Fixture, reqs: &[SubmitRequest]) {
    for req in reqs {
        assert_eq!(
            f.submit(req).await,
            SubmitOutcome::Queued,
            "{}",
            req.task_id
        );
    }
}

/// The queue order and every stored place are what the decision crate's `FairClock` computes
/// for the same submits and grants (the arithmetic is written twice, in Rust and in Lua).
#[tokio::test]
async fn lua_places_match_the_fair_clock() {
    let f = fixture().await;
    f.register("a1", cpu(1000)).await;
    let mut clock = FairClock::default();
    let mut expected: Vec<(u64, String)> = Vec::new();
    let mut reqs = Vec::new();
    for i in 0..20 {
        reqs.push(("flood", 2.0, format!("f{i:02}")));
    }
    for i in 0..5 {
        reqs.push(("quiet", 1.0, format!("q{i:02}")));
    }
    for (tenant, weight, id) in &reqs {
        submit_all(&f, &[tenant_req(id, 5, tenant, *weight)]).await;
        let start = clock.enqueue(tenant, task_cost(*weight));
        expected.push((start, id.clone()));
        assert_eq!(
            f.task_field(id, "queue_seq").await,
            start.to_string(),
            "{id}"
        );
    }
    // Grant the head, then a late tenant starts at the virtual time granted so far.
    let head = f.queue_ids().await[0].clone();
    assert!(matches!(
        f.grant(&head, &["a1"]).await,
        GrantOutcome::Granted { .. }
    ));
    let granted_start: u64 = f.task_field(&head, "queue_seq").await.parse().unwrap();
    clock.granted(granted_start);
    submit_all(&f, &[tenant_req("late", 5, "late", 1.0)]).await;
    assert_eq!(
        f.task_field("late", "queue_seq").await,
        clock.enqueue("late", 1000).to_string()
    );
    // The queue is ordered by place (ties by id, as the zset orders equal scores).
    expected.retain(|(_, id)| *id != head);
    expected.push((clock.finish["late"] - 1000, "late".into()));
    expected.sort();
    let order: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
    assert_eq!(f.queue_ids().await, order);
}

/// Without tenants every task is the default tenant: queue order is priority, then FIFO.
#[tokio::test]
async fn one_tenant_keeps_priority_then_fifo() {
    let f = fixture().await;
    let tasks = [("a", 5), ("b", 9), ("c", 5), ("d", 1), ("e", 9)];
    for (id, priority) in tasks {
        let req = submit_req(id, &format!("m-{id}"), priority, cpu(1000));
        assert_eq!(f.submit(&req).await, SubmitOutcome::Queued);
    }
    assert_eq!(f.queue_ids().await, ["b", "e", "a", "c", "d"]);
}

/// Two tenants backlogged, weights 2:1, one submitting ten times more: the queue head serves
/// them 2:1, and the per-tenant counters say what was granted.
#[tokio::test]
async fn the_queue_interleaves_backlogged_tenants_by_weight() {
    let f = fixture().await;
    f.register("a1", cpu(1_000_000)).await;
    let mut reqs: Vec<SubmitRequest> = (0..300)
        .map(|i| tenant_req(&format!("big{i:03}"), 5, "big", 2.0))
        .collect();
    reqs.extend((0..30).map(|i| tenant_req(&format!("small{i:02}"), 5, "small", 1.0)));
    submit_all(&f, &reqs).await;
    let head: Vec<String> = f.queue_ids().await.into_iter().take(90).collect();
    let big = head.iter().filter(|id| id.starts_with("big")).count();
    assert!(
        (59..=61).contains(&big),
        "{big} of 90 to the tenant of weight 2"
    );
    for id in &head {
        assert!(matches!(
            f.grant(id, &["a1"]).await,
            GrantOutcome::Granted { .. }
        ));
    }
    let counts = f.store.tenant_counts().await.expect("tenant counts");
    assert_eq!(counts["big"].granted as usize, big);
    assert_eq!(counts["small"].granted as usize, 90 - big);
    assert_eq!(counts["big"].submitted, 300);
}

/// A second store (another replica's connection) on the same Redis.
async fn second_replica(f: &Fixture) -> Store {
    let config = RedisConfig {
        url: f.url.clone(),
        key_prefix: "t".into(),
        ..switchyard_server::config::Config::default().redis
    };
    Store::connect(&config).await.expect("second store")
}

/// A hold taken by one replica is enforced by the grant script for another: nothing else goes on
/// the held agent unless it fits beside the held task, the other agents still take work, and
/// granting the held task ends the hold.
#[tokio::test]
async fn a_hold_is_honoured_by_every_replica() {
    let f = fixture().await;
    f.register("held", cpu(4000)).await;
    f.register("other", cpu(4000)).await;
    f.granted("running", cpu(2000), "held").await;
    submit_all(&f, &[submit_req("big", "m-big", 9, cpu(4000))]).await;
    submit_all(&f, &[submit_req("s1", "m-s1", 1, cpu(1000))]).await;
    submit_all(&f, &[submit_req("s2", "m-s2", 1, cpu(1000))]).await;
    let standing = f
        .store
        .hold_head("big", "held", 60_000)
        .await
        .expect("hold");
    assert_eq!(standing, Some(("big".into(), "held".into())));

    let other = second_replica(&f).await;
    let hold = other.head_hold().await.expect("read").expect("hold stands");
    assert_eq!(hold.task_id, "big");
    // The status says why big waits.
    let query = switchyard_protocol::StatusQuery {
        include_agents: false,
        task_id: Some("big".into()),
        ..Default::default()
    };
    let waits = other.task_waits(&query).await.expect("waits");
    assert_eq!(
        waits.last().and_then(|w| w.reason.clone()),
        Some(switchyard_protocol::WaitReason::AgentHeld {
            agent_id: "held".into()
        })
    );
    let s1 = other
        .grant_task("s1", &["held".to_string()])
        .await
        .expect("grant");
    assert_eq!(
        s1,
        GrantOutcome::NoFit,
        "the held agent takes nothing that delays big"
    );
    let s1 = other
        .grant_task("s1", &["held".to_string(), "other".to_string()])
        .await
        .expect("grant");
    assert!(matches!(s1, GrantOutcome::Granted { ref agent_id, .. } if agent_id == "other"));

    // A task further back cannot take the hold over; one further ahead could.
    let kept = other.hold_head("s2", "other", 60_000).await.expect("hold");
    assert_eq!(kept, Some(("big".into(), "held".into())));

    // The running task ends: big is granted on the held agent, and the hold ends with it.
    f.complete("running", "held", true).await;
    let big = other
        .grant_task("big", &["held".to_string()])
        .await
        .expect("grant");
    assert!(matches!(big, GrantOutcome::Granted { .. }), "{big:?}");
    assert!(other.head_hold().await.expect("read").is_none());
}

/// A hold expires unless renewed (a stopped replica's hold heals), and one whose task left the
/// queue is released.
#[tokio::test]
async fn a_hold_ends_by_expiry_or_when_its_task_leaves() {
    let f = fixture().await;
    f.register("held", cpu(4000)).await;
    f.granted("running", cpu(2000), "held").await;
    submit_all(&f, &[submit_req("big", "m-big", 9, cpu(4000))]).await;
    submit_all(&f, &[submit_req("s1", "m-s1", 1, cpu(1000))]).await;
    f.store.hold_head("big", "held", 100).await.expect("hold");
    common::within(10, "the hold to expire", async {
        while f.store.head_hold().await.expect("read").is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(matches!(
        f.grant("s1", &["held"]).await,
        GrantOutcome::Granted { .. }
    ));

    f.store
        .hold_head("big", "held", 60_000)
        .await
        .expect("hold");
    assert_eq!(
        f.store.release_stale_hold().await.expect("release"),
        Some(("big".into(), "held".into())),
        "a hold whose task is queued stays"
    );
    submit_all(&f, &[submit_req("s2", "m-s2", 1, cpu(1000))]).await;
    assert_eq!(f.grant("s2", &["held"]).await, GrantOutcome::NoFit);
    f.store
        .cancel_task("big", "orch", false, "cancelled", 3600)
        .await
        .expect("cancel");
    // Its task left the queue: no replica reads the hold any more, and the grant script ends it.
    assert!(f.store.head_hold().await.expect("read").is_none());
    assert!(matches!(
        f.grant("s2", &["held"]).await,
        GrantOutcome::Granted { .. }
    ));
    assert_eq!(f.store.release_stale_hold().await.expect("release"), None);
}
