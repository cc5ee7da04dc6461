//! Infeasible tasks and waiting reasons (issue 12, item 4): a task no agent's capacity covers is
//! refused (`coordination.infeasible = "refuse"`) or held (`"hold"`, the default); every waiting
//! or queued task says why it waits, in the status query, the client and `switchyard status`.
//! Against real servers: the scripts on a redis-server, then whole optimizers.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use common::scripts::{Fixture, RETENTION_S, cpu, fixture, res, submit_req, with_deps};
use common::{Cluster, OutputWithin, next_grant, within};
use switchyard_client::{Allocation, Coordinator};
use switchyard_decision::{ResourceKind, Resources};
use switchyard_protocol::{
    AgentRegister, RejectReason, StatusQuery, TaskSubmit, TaskWaitView, WaitReason,
};
use switchyard_server::config::InfeasiblePolicy;
use switchyard_server::state::{ExpireOutcome, Refusal, ResolveOutcome, SubmitOutcome};

async fn waits(f: &Fixture, include_tasks: u32, task_id: Option<&str>) -> Vec<TaskWaitView> {
    let query = StatusQuery {
        include_agents: false,
        include_tasks,
        task_id: task_id.map(str::to_string),
        ..StatusQuery::default()
    };
    f.store.task_waits(&query).await.expect("task waits")
}

fn reasons(views: &[TaskWaitView]) -> Vec<(&str, Option<&WaitReason>)> {
    views
        .iter()
        .map(|v| (v.task_id.as_str(), v.reason.as_ref()))
        .collect()
}

/// Each kind of reason, computed from what Redis holds (no optimizer runs here, so nothing is
/// dispatched behind the test's back), and the count of tasks waiting on dependencies.
#[tokio::test]
async fn every_waiting_reason_from_the_state() {
    let f = fixture().await;
    f.register("small", cpu(4000)).await;
    f.register("big", cpu(16_000)).await;
    f.granted("running", cpu(16_000), "big").await;
    let queued = [
        ("huge", 9, cpu(100_000)),
        ("blocked", 5, cpu(10_000)),
        ("fits", 5, cpu(1000)),
    ];
    for (id, priority, need) in queued {
        let req = submit_req(id, &format!("m-{id}"), priority, need);
        assert_eq!(f.submit(&req).await, SubmitOutcome::Queued, "{id}");
    }
    let child = with_deps(
        submit_req("child", "m-child", 7, cpu(1000)),
        &["fits", "blocked"],
    );
    assert_eq!(f.submit(&child).await, SubmitOutcome::Waiting { unmet: 2 });
    assert_eq!(f.store.waiting_depth().await.expect("depth"), 1);

    let all = waits(&f, 10, None).await;
    let unmet = WaitReason::Dependencies {
        unmet: vec!["blocked".into(), "fits".into()],
    };
    assert_eq!(
        reasons(&all),
        vec![
            ("huge", Some(&WaitReason::NoAgentWithCapacity)),
            ("child", Some(&unmet)),
            ("blocked", Some(&WaitReason::NoFreeCapacity { ahead: 1 })),
            ("fits", Some(&WaitReason::BehindQueue { ahead: 2 })),
        ],
        "by priority, then FIFO; the waiting task among the queued ones"
    );
    assert_eq!(all[0].detail, "no agent with capacity");
    assert_eq!(all[1].detail, "waiting on dependencies [blocked, fits]");
    assert_eq!(all[3].detail, "behind 2 higher-priority or earlier tasks");
    assert_eq!(waits(&f, 2, None).await.len(), 2, "bounded by the query");

    // By id: a granted task has a state and no reason; a queued one its rank.
    let running = waits(&f, 0, Some("running")).await;
    assert_eq!(reasons(&running), vec![("running", None)]);
    assert_eq!(running[0].state, "granted");
    let fits = waits(&f, 0, Some("fits")).await;
    assert_eq!(
        reasons(&fits),
        vec![("fits", Some(&WaitReason::BehindQueue { ahead: 2 }))]
    );
    let unknown = waits(&f, 0, Some("nope")).await;
    assert_eq!(unknown[0].state, "unknown");

    // The dependencies resolve: the task leaves the waiting count for the queue.
    for dep in ["fits", "blocked"] {
        f.store
            .resolve_dependency("child", dep, true, RETENTION_S)
            .await
            .expect("resolve");
    }
    assert_eq!(f.store.waiting_depth().await.expect("depth"), 0);
    let child = waits(&f, 0, Some("child")).await;
    assert_eq!(child[0].state, "queued");
    let failing = with_deps(submit_req("orphan", "m-orphan", 5, cpu(1)), &["never"]);
    assert_eq!(
        f.submit(&failing).await,
        SubmitOutcome::Waiting { unmet: 1 }
    );
    let failed = f
        .store
        .resolve_dependency("orphan", "never", false, RETENTION_S)
        .await
        .expect("resolve");
    assert!(
        matches!(failed, ResolveOutcome::Failed { .. }),
        "{failed:?}"
    );
    assert_eq!(f.store.waiting_depth().await.expect("depth"), 0);
}

fn infeasible(outcome: &SubmitOutcome) -> bool {
    matches!(
        outcome,
        SubmitOutcome::Refused(Refusal {
            reason: RejectReason::Infeasible,
            ..
        })
    )
}

/// Under policy refuse, the submit checks the largest capacity of each kind among active agents,
/// kept by register, deregister and expire; a refusal stores nothing.
#[tokio::test]
async fn refuse_checks_the_largest_capacity_of_each_kind() {
    let mut f = fixture().await;
    f.store = f
        .store
        .clone()
        .with_infeasible_policy(InfeasiblePolicy::Refuse);
    let nothing = submit_req("nothing", "m-nothing", 5, Resources::default());
    assert!(infeasible(&f.submit(&nothing).await), "no agent at all");

    f.register("small", cpu(4000)).await;
    assert_eq!(f.submit(&nothing).await, SubmitOutcome::Queued);
    let job = submit_req("job", "m-job", 5, cpu(8000));
    match f.submit(&job).await {
        SubmitOutcome::Refused(refusal) => {
            assert_eq!(refusal.reason, RejectReason::Infeasible);
            assert_eq!(
                refusal.message,
                "task job needs cpu 8; the largest cpu capacity of an active agent is 4"
            );
        }
        other => panic!("refused expected: {other:?}"),
    }
    assert!(f.store.task_record("job").await.expect("read").is_none());

    // A big enough agent: the same message is accepted now; once it leaves, refused again.
    f.register("big", cpu(8000)).await;
    assert_eq!(f.submit(&job).await, SubmitOutcome::Queued);
    f.store.deregister_agent("big").await.expect("deregister");
    let again = submit_req("job-2", "m-job-2", 5, cpu(8000));
    assert!(infeasible(&f.submit(&again).await), "big left");

    // A leased agent that expires leaves the index too.
    f.store
        .register_agent("leased", "worker", &cpu(8000), 1.0, 1)
        .await
        .expect("register");
    assert_eq!(f.submit(&again).await, SubmitOutcome::Queued);
    within(10, "the 1 ms lease to run out", async {
        while f.store.expire_agent("leased", 0).await.expect("expire") == ExpireOutcome::Alive {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    let third = submit_req("job-3", "m-job-3", 5, cpu(8000));
    assert!(infeasible(&f.submit(&third).await), "leased expired");

    // Per kind only: the largest cpu and the largest memory are on two agents. Accepted, and the
    // status, which looks at whole agents, says no agent can hold it.
    f.register("memory", res(0, 64_000)).await;
    let split = submit_req("split", "m-split", 5, res(2000, 1000));
    assert_eq!(f.submit(&split).await, SubmitOutcome::Queued);
    let view = waits(&f, 0, Some("split")).await;
    assert_eq!(view[0].reason, Some(WaitReason::NoAgentWithCapacity));

    // Agents registered by a version that kept no index: a starting replica indexes them.
    for kind in ResourceKind::ALL {
        let key = f.keys.capacity_index(kind.as_str());
        let _: () = f.raw_query("DEL", redis::cmd("DEL").arg(&key)).await;
    }
    let fourth = submit_req("job-4", "m-job-4", 5, cpu(2000));
    assert!(infeasible(&f.submit(&fourth).await), "nothing indexed");
    let indexed = f.store.index_capacities().await.expect("index");
    assert_eq!(indexed, 2, "small and memory are active");
    assert_eq!(f.submit(&fourth).await, SubmitOutcome::Queued);
    assert_eq!(f.zcard(&f.keys.capacity_index("cpu")).await, 1);
}

async fn reason_of(orch: &Coordinator, task_id: &str) -> Option<WaitReason> {
    orch.task_status(task_id)
        .await
        .expect("status answers")
        .and_then(|v| v.reason)
}

/// Waits (bounded) until the task's reason is `want`.
async fn reason_becomes(orch: &Coordinator, task_id: &str, want: WaitReason) {
    within(15, &format!("{task_id}: {want:?}"), async {
        while reason_of(orch, task_id).await.as_ref() != Some(&want) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}

async fn big_agent(cluster: &Cluster) -> switchyard_client::Agent {
    let reg = AgentRegister::new("big", "worker").capacity("cpu", 128.0);
    within(
        30,
        "big to register",
        switchyard_client::Agent::register(cluster.nats().await, cluster.subjects(), reg),
    )
    .await
    .expect("registers")
}

/// Policy hold (the default), live: an infeasible task is queued and says so; an agent big
/// enough registers and gets it; when that agent leaves, its task and the one queued behind it
/// are held again with the reason, and granted when it comes back. `switchyard status` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_keeps_an_infeasible_task_until_an_agent_fits_it() {
    let cluster = Cluster::start(1).await;
    let orch = cluster.coordinator("orch").await;
    let _small = cluster.agent("small", "worker", 4.0, 1000.0).await;
    let huge = TaskSubmit::new("huge").resource("cpu", 100.0);
    let first = orch.allocate_task(huge).await.expect("answered");
    assert_eq!(first, Allocation::Queued);
    assert_eq!(
        reason_of(&orch, "huge").await,
        Some(WaitReason::NoAgentWithCapacity)
    );
    let child = TaskSubmit::new("child").depends_on("huge");
    assert_eq!(
        orch.allocate_task(child).await.expect("answered"),
        Allocation::Waiting
    );
    let status = status_command(&cluster, &["--tasks", "5"]);
    assert!(status.contains("waiting on dependencies 1"), "{status}");
    assert!(status.contains("no agent with capacity"), "{status}");
    assert!(
        status.contains("waiting on dependencies [huge]"),
        "{status}"
    );

    let big = big_agent(&cluster).await;
    let mut grants = big.grants().await.expect("grants");
    let grant = next_grant(15, "huge granted to big", &mut grants).await;
    assert_eq!(grant.payload.task_id, "huge");
    let second = TaskSubmit::new("huge-2").resource("cpu", 100.0);
    assert_eq!(
        orch.allocate_task(second).await.expect("answered"),
        Allocation::Queued
    );
    // It fits on no agent now, so the agent it will fit on is held for it (head reservation).
    reason_becomes(
        &orch,
        "huge-2",
        WaitReason::AgentHeld {
            agent_id: "big".into(),
        },
    )
    .await;

    // The only agent big enough leaves: its task comes back, and both are held.
    big.deregister().await.expect("deregistered");
    drop(grants);
    reason_becomes(&orch, "huge", WaitReason::NoAgentWithCapacity).await;
    reason_becomes(&orch, "huge-2", WaitReason::NoAgentWithCapacity).await;
    let one = status_command(&cluster, &["--task", "huge-2"]);
    assert!(
        one.contains("huge-2") && one.contains("no agent with capacity"),
        "{one}"
    );

    let back = big_agent(&cluster).await;
    let mut grants = back.grants().await.expect("grants");
    let regrant = next_grant(15, "huge granted again", &mut grants).await;
    assert_eq!(
        (regrant.payload.task_id.as_str(), regrant.payload.grant_seq),
        ("huge", 2)
    );
}

/// Policy refuse, live: the submitter hears `infeasible`; a task accepted while a big agent was
/// there is held, not refused, when that agent leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_answers_infeasible_and_holds_what_it_accepted() {
    let mut cluster = Cluster::start(0).await;
    cluster.config.coordination.infeasible = InfeasiblePolicy::Refuse;
    cluster.add_replica().await;
    let orch = cluster.coordinator("orch").await;
    let _small = cluster.agent("small", "worker", 4.0, 1000.0).await;
    let refused = orch
        .allocate_task(TaskSubmit::new("huge").resource("cpu", 100.0))
        .await
        .expect_err("refused");
    assert_eq!(refused.reason_code(), Some("infeasible"), "{refused}");
    let small_job = TaskSubmit::new("small-job").resource("cpu", 1.0);
    let granted = orch.allocate_task(small_job).await.expect("answered");
    assert!(matches!(granted, Allocation::Granted { .. }), "{granted:?}");

    let big = big_agent(&cluster).await;
    let mut grants = big.grants().await.expect("grants");
    let huge = TaskSubmit::new("huge").resource("cpu", 100.0);
    let accepted = orch.allocate_task(huge).await.expect("answered now");
    assert_eq!(
        accepted,
        Allocation::Granted {
            agent_id: "big".into()
        }
    );
    next_grant(15, "huge granted to big", &mut grants).await;
    big.deregister().await.expect("deregistered");
    reason_becomes(&orch, "huge", WaitReason::NoAgentWithCapacity).await;
    let late = orch
        .allocate_task(TaskSubmit::new("huge-3").resource("cpu", 100.0))
        .await
        .expect_err("refused");
    assert_eq!(late.reason_code(), Some("infeasible"), "{late}");
}

/// `switchyard status ARGS` against the cluster's servers; its standard output.
fn status_command(cluster: &Cluster, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("status")
        .args(args)
        .env("NATS_URL", cluster.servers.nats.url())
        .env_remove("SWITCHYARD_CONFIG")
        .output_within(60, "switchyard status");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
