//! Data path v2 at fleet scale and across faults: grants on core NATS kept in the Redis outbox
//! until acknowledged, dispatch from the fleet log, two optimizer processes side by side.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    Cluster, OptimizerProcess, config_for, hget, hget_i64, next_grant, optimizer_ready, redis_at,
    register_within, wait_for_state, within,
};
use futures::StreamExt;
use switchyard_client::{Agent, Coordinator};
use switchyard_harness::LocalServers;
use switchyard_protocol::{
    AgentRegister, Envelope, GrantAck, GrantRef, MessageType, Replies, Subjects, TaskComplete,
    TaskGrant, TaskSubmit, now_ms,
};
use switchyard_server::state::Keys;

async fn outbox_len(redis: &mut redis::aio::MultiplexedConnection) -> u64 {
    redis::cmd("ZCARD")
        .arg(Keys::new("switchyard").grant_outbox())
        .query_async(redis)
        .await
        .expect("ZCARD")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_agent_gets_its_grant_when_it_returns() {
    let cluster = Cluster::start(1).await;
    let mut redis = cluster.redis().await;
    // The agent registers on a connection of its own, then goes away (connection closed).
    let away = async_nats::connect(cluster.servers.nats.url())
        .await
        .expect("nats");
    drop(register_within(&away, away_registration()).await);
    drop(away);

    let orch = cluster.coordinator("orch").await;
    orch.submit_task(TaskSubmit::new("while-away").resource("cpu", 1.0))
        .await
        .expect("stored");
    wait_for_state(&mut redis, 30, "while-away", "granted").await;
    assert_eq!(outbox_len(&mut redis).await, 1, "unacknowledged grant kept");
    let resent = grant_sent_again_to_a_listener(&cluster).await;
    the_returning_agent_gets_the_same_grant(&cluster, &mut redis, &resent).await;
}

fn away_registration() -> AgentRegister {
    AgentRegister::new("away", "worker").capacity("cpu", 1.0)
}

/// Anyone listening on the subject (here a plain subscriber, as after a network blip) gets
/// the grant again within the resend interval, without a new registration.
async fn grant_sent_again_to_a_listener(cluster: &Cluster) -> Envelope<TaskGrant> {
    let nats = cluster.nats().await;
    let mut tap = nats
        .subscribe("coord.task_request.away")
        .await
        .expect("subscribe");
    let resent = within(10, "the grant sent again", tap.next())
        .await
        .expect("a message");
    let resent: Envelope<TaskGrant> = serde_json::from_slice(&resent.payload).expect("grant");
    assert_eq!(
        (resent.payload.task_id.as_str(), resent.payload.grant_seq),
        ("while-away", 1)
    );
    resent
}

/// The agent comes back: its registration brings the grant at once, and its stream
/// acknowledges it, which empties the outbox.
async fn the_returning_agent_gets_the_same_grant(
    cluster: &Cluster,
    redis: &mut redis::aio::MultiplexedConnection,
    resent: &Envelope<TaskGrant>,
) {
    let back = async_nats::connect(cluster.servers.nats.url())
        .await
        .expect("nats");
    let agent = register_within(&back, away_registration()).await;
    let mut grants = agent.grants().await.expect("grants");
    let grant = next_grant(10, "the grant after returning", &mut grants).await;
    assert_eq!(grant.payload.task_id, "while-away");
    assert_eq!(
        grant.message_id, resent.message_id,
        "the same grant, not a new one"
    );
    within(10, "the acknowledgment applied", async {
        while outbox_len(redis).await != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    agent
        .complete_task_confirmed("while-away", true, 0.1)
        .await
        .expect("completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_returns_loses_its_task_when_its_lease_ends() {
    let cluster = Cluster::start(1).await;
    let mut redis = cluster.redis().await;
    let gone_nats = cluster.nats().await;
    let mut gone = orphan_granted_to_a_leased_agent(&cluster, &gone_nats, &mut redis).await;
    // It never takes the grant and stops heartbeating (its process hangs, say).
    gone.stop_heartbeats();

    let backup = cluster.agent("backup", "worker", 1.0, 0.0).await;
    let mut grants = backup.grants().await.expect("grants");
    let grant = next_grant(30, "the task, re-granted to the backup", &mut grants).await;
    assert_eq!(
        (grant.payload.task_id.as_str(), grant.payload.grant_seq),
        ("orphan", 2),
        "a new grant, not the old one resent"
    );
    the_old_grant_is_withdrawn(&mut redis, &gone, gone_nats).await;
    backup
        .complete_grant(&grant.payload, true, 0.1)
        .await
        .expect("completed");
    wait_for_state(&mut redis, 30, "orphan", "completed").await;
    let keys = Keys::new("switchyard");
    assert_eq!(hget_i64(&mut redis, &keys.stats(), "completed").await, 1);
}

/// Agent `gone` (1 cpu, a one-second lease) is granted task `orphan`.
async fn orphan_granted_to_a_leased_agent(
    cluster: &Cluster,
    gone_nats: &async_nats::Client,
    redis: &mut redis::aio::MultiplexedConnection,
) -> Agent {
    let reg = AgentRegister::new("gone", "worker")
        .capacity("cpu", 1.0)
        .lease(1.0);
    let gone = register_within(gone_nats, reg).await;
    let orch = cluster.coordinator("orch").await;
    orch.submit_task(TaskSubmit::new("orphan").resource("cpu", 1.0))
        .await
        .expect("stored");
    wait_for_state(redis, 30, "orphan", "granted").await;
    let holder = hget(redis, &Keys::new("switchyard").task("orphan"), "agent").await;
    assert_eq!(holder.as_deref(), Some("gone"));
    gone
}

/// The old grant is withdrawn: no copy of it is sent any more, and acting on it is refused.
async fn the_old_grant_is_withdrawn(
    redis: &mut redis::aio::MultiplexedConnection,
    gone: &Agent,
    gone_nats: async_nats::Client,
) {
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(Keys::new("switchyard").grant_outbox())
        .arg(0)
        .arg(-1)
        .query_async(redis)
        .await
        .expect("ZRANGE");
    assert!(!members.contains(&"orphan|1".to_string()), "{members:?}");
    let late = TaskComplete {
        task_id: "orphan".into(),
        agent_id: "gone".into(),
        success: true,
        execution_time_s: 1.0,
        performance_metrics: Default::default(),
        error: None,
        grant_seq: Some(1),
        replies: Replies::All,
        usage: Default::default(),
    };
    let mut events = gone.events();
    let env = Envelope::new("gone", MessageType::TaskComplete, late, now_ms());
    switchyard_client::transport::publish_stored(
        &async_nats::jetstream::new(gone_nats),
        "coord.task_complete.gone".into(),
        &env.message_id.to_string(),
        &env,
    )
    .await
    .expect("stored");
    let refusal = within(10, "the late completion refused", async {
        loop {
            if let Ok(switchyard_client::ClientEvent::Error(report)) = events.recv().await {
                return report.payload.code;
            }
        }
    })
    .await;
    assert!(
        ["agent_not_active", "stale_grant"].contains(&refusal.as_str()),
        "{refusal}"
    );
}

/// Redis's own command counters: total calls, and HMGET calls.
async fn redis_commands(redis: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .expect("INFO");
    let mut total = 0;
    let mut hmget = 0;
    for line in info.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let calls: u64 = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        total += calls;
        if name == "hmget" {
            hmget = calls;
        }
    }
    (total, hmget)
}

/// `switchyard_dispatch_rounds_total` read from a replica's /metrics endpoint.
async fn dispatch_rounds(port: u16) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The endpoint may come up a moment after the consumers do.
    let mut stream = within(30, "the metrics endpoint", async {
        loop {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(stream) => return stream,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .expect("request");
    let mut body = String::new();
    within(10, &format!("the /metrics answer on port {port}"), async {
        stream.read_to_string(&mut body).await
    })
    .await
    .expect("response");
    body.lines()
        .find_map(|l| l.strip_prefix("switchyard_dispatch_rounds_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Plays every agent of the fleet on one connection: takes each grant, acknowledges it, holds
/// it a little and completes it. Records every grant and the most tasks an agent held at once.
#[derive(Default)]
struct FleetBook {
    grants: HashMap<String, Vec<(String, u64)>>,
    held: HashMap<String, u32>,
    most_held: u32,
}

fn play_fleet(
    nats: async_nats::Client,
    book: Arc<Mutex<FleetBook>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let js = async_nats::jetstream::new(nats.clone());
        let mut grants = nats
            .subscribe("coord.task_request.*")
            .await
            .expect("subscribe");
        while let Some(message) = grants.next().await {
            let Ok(env) = serde_json::from_slice::<Envelope<TaskGrant>>(&message.payload) else {
                continue;
            };
            let g = env.payload;
            let ack = GrantAck {
                agent_id: g.agent_id.clone(),
                grants: vec![GrantRef {
                    task_id: g.task_id.clone(),
                    grant_seq: g.grant_seq,
                }],
            };
            let ack = Envelope::new(g.agent_id.clone(), MessageType::GrantAck, ack, now_ms());
            let _ = switchyard_client::transport::publish_core(
                &nats,
                format!("coord.grant_ack.{}", g.agent_id),
                &ack,
            )
            .await;
            {
                let Ok(mut book) = book.lock() else { return };
                let copies = book.grants.entry(g.task_id.clone()).or_default();
                if copies.iter().any(|(_, seq)| *seq == g.grant_seq) {
                    continue; // a copy of a grant already taken
                }
                copies.push((g.agent_id.clone(), g.grant_seq));
                let held = book.held.entry(g.agent_id.clone()).or_default();
                *held += 1;
                let held = *held;
                book.most_held = book.most_held.max(held);
            }
            tokio::spawn(complete_after_a_while(js.clone(), book.clone(), g));
        }
    })
}

/// Holds grant `g` for 30 ms, releases it in the book, then reports it complete.
async fn complete_after_a_while(
    js: async_nats::jetstream::Context,
    book: Arc<Mutex<FleetBook>>,
    g: TaskGrant,
) {
    tokio::time::sleep(Duration::from_millis(30)).await;
    let done = TaskComplete {
        task_id: g.task_id.clone(),
        agent_id: g.agent_id.clone(),
        success: true,
        execution_time_s: 0.03,
        performance_metrics: Default::default(),
        error: None,
        grant_seq: Some(g.grant_seq),
        replies: Replies::None,
        usage: Default::default(),
    };
    // Released in the book before the optimizer releases it in Redis: the book's count never
    // exceeds the real reservations.
    if let Ok(mut book) = book.lock() {
        if let Some(held) = book.held.get_mut(&g.agent_id) {
            *held -= 1;
        }
    }
    let env = Envelope::new(
        g.agent_id.clone(),
        MessageType::TaskComplete,
        done,
        now_ms(),
    );
    let subject = format!("coord.task_complete.{}", g.agent_id);
    switchyard_client::transport::publish_stored(&js, subject, &env.message_id.to_string(), &env)
        .await
        .expect("completion stored");
}

async fn register_fleet(nats: &async_nats::Client, range: std::ops::Range<usize>) {
    let js = async_nats::jetstream::new(nats.clone());
    let publishes = range.map(|i| {
        let js = js.clone();
        async move {
            let id = format!("fleet-{i:04}");
            let reg = AgentRegister::new(id.clone(), "worker").capacity("cpu", 2.0);
            let env = Envelope::new(id.clone(), MessageType::AgentRegister, reg, now_ms());
            let subject = format!("coord.agent_register.{id}");
            switchyard_client::transport::publish_stored(
                &js,
                subject,
                &env.message_id.to_string(),
                &env,
            )
            .await
            .expect("registration stored");
        }
    });
    futures::stream::iter(publishes)
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
}

async fn wait_for_count(
    redis: &mut redis::aio::MultiplexedConnection,
    cmd: &str,
    key: &str,
    field: Option<&str>,
    want: u64,
) {
    within(120, &format!("{key} to reach {want}"), async {
        loop {
            let mut c = redis::cmd(cmd);
            c.arg(key);
            if let Some(f) = field {
                c.arg(f);
            }
            let n: Option<u64> = c.query_async(redis).await.expect("count");
            if n.unwrap_or(0) >= want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Submits `count` tasks and waits until all completed; returns (Redis commands, HMGET calls,
/// dispatch rounds) spent meanwhile.
async fn run_phase(
    orch: &Coordinator,
    redis: &mut redis::aio::MultiplexedConnection,
    ports: &[u16],
    phase: &str,
    count: usize,
    completed_before: u64,
) -> (u64, u64, u64) {
    let (commands_0, hmget_0) = redis_commands(redis).await;
    let mut rounds_0 = 0;
    for port in ports {
        rounds_0 += dispatch_rounds(*port).await;
    }
    // A steady trickle, so that rounds hold a task or two in both phases and what a round costs
    // is compared like for like.
    let mut ticker = tokio::time::interval(Duration::from_millis(4));
    for i in 0..count {
        ticker.tick().await;
        let task = TaskSubmit::new(format!("{phase}-{i}"))
            .resource("cpu", 1.0)
            .replies(Replies::None);
        orch.submit_task(task).await.expect("submit stored");
    }
    let want = completed_before + count as u64;
    let stats = Keys::new("switchyard").stats();
    wait_for_count(redis, "HGET", &stats, Some("completed"), want).await;
    let (commands_1, hmget_1) = redis_commands(redis).await;

    let mut rounds_1 = 0;
    for port in ports {
        rounds_1 += dispatch_rounds(*port).await;
    }
    (
        commands_1 - commands_0,
        hmget_1 - hmget_0,
        rounds_1 - rounds_0,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_agents_two_optimizer_processes_grant_each_task_once() {
    common::init_tracing();
    let servers = LocalServers::start().await.expect("servers");
    let (optimizers, ports) = two_optimizers_with_metrics(&servers);
    let nats = async_nats::connect(servers.nats.url()).await.expect("nats");
    optimizer_ready(&nats).await;
    let mut redis = redis_at(&servers).await;
    let book = Arc::new(Mutex::new(FleetBook::default()));
    let fleet = play_fleet(
        async_nats::connect(servers.nats.url()).await.expect("nats"),
        book.clone(),
    );
    nats.flush().await.expect("flush");
    let orch = Coordinator::with_client(nats.clone(), "orch", Subjects::default())
        .await
        .expect("coordinator");

    // 200 agents, then 2,000: the same number of tasks through each fleet.
    register_fleet(&nats, 0..200).await;
    let agents = Keys::new("switchyard").agents();
    wait_for_count(&mut redis, "SCARD", &agents, None, 200).await;
    let small = run_phase(&orch, &mut redis, &ports, "small", 1000, 0).await;
    register_fleet(&nats, 200..2000).await;
    wait_for_count(&mut redis, "SCARD", &agents, None, 2000).await;
    let large = run_phase(&orch, &mut redis, &ports, "large", 1000, 1000).await;
    fleet.abort();

    every_fleet_task_granted_once_and_released(&book, &mut redis).await;
    dispatch_cost_does_not_follow_the_fleet(small, large);
    drop(optimizers);
}

/// Two optimizer processes, each with its metrics on a port of its own.
fn two_optimizers_with_metrics(servers: &LocalServers) -> (Vec<OptimizerProcess>, Vec<u16>) {
    let mut config = config_for(servers);
    let mut optimizers = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let port = common::free_port();
        config.metrics.addr = format!("127.0.0.1:{port}");
        optimizers.push(OptimizerProcess::spawn(&config, &[]));
        ports.push(port);
    }
    (optimizers, ports)
}

async fn every_fleet_task_granted_once_and_released(
    book: &Mutex<FleetBook>,
    redis: &mut redis::aio::MultiplexedConnection,
) {
    let (grants, most_held) = {
        let book = book.lock().expect("book");
        (book.grants.clone(), book.most_held)
    };
    assert_eq!(grants.len(), 2000, "every task granted");
    let twice: Vec<_> = grants.iter().filter(|(_, g)| g.len() != 1).collect();
    assert!(twice.is_empty(), "tasks granted more than once: {twice:?}");
    assert!(
        most_held <= 2,
        "an agent held {} tasks of 1 cpu with 2 cpus",
        most_held
    );
    let keys = Keys::new("switchyard");
    assert_eq!(hget_i64(redis, &keys.stats(), "granted").await, 2000);
    assert_eq!(
        outbox_len(redis).await,
        0,
        "every grant acknowledged or completed"
    );
    for i in [0, 199, 1999] {
        let agent = keys.agent(&format!("fleet-{i:04}"));
        assert_eq!(hget_i64(redis, &agent, "res_cpu").await, 0, "released");
    }
}

/// The cost of a dispatch round does not follow the fleet: ten times the agents, about the
/// same commands per round, and nowhere near one HMGET per agent per round. `small` and
/// `large` are (Redis commands, HMGET calls, dispatch rounds) with 200 and 2,000 agents, each
/// for the same number of tasks.
///
/// A cost that follows the fleet grows per round and per task alike. A busy machine only moves
/// tasks between rounds: fewer, fuller rounds cost more each and less per task (a CI run once
/// saw 1.8× the commands per round with 2,000 agents this way). So a cost fails the test only
/// when it grew by half both per round and per task.
fn dispatch_cost_does_not_follow_the_fleet(small: (u64, u64, u64), large: (u64, u64, u64)) {
    assert!(small.2 > 0 && large.2 > 0, "dispatch rounds counted");
    let growth = |small: u64, large: u64, small_rounds: u64, large_rounds: u64| {
        let per_task = large as f64 / small.max(1) as f64;
        let per_round = per_task * small_rounds as f64 / large_rounds as f64;
        (per_round, per_task)
    };
    let (cmds_round, cmds_task) = growth(small.0, large.0, small.2, large.2);
    let (hmget_round, hmget_task) = growth(small.1, large.1, small.2, large.2);
    eprintln!(
        "with 2,000 agents against 200: {cmds_round:.2}x the commands per dispatch round, \
         {cmds_task:.2}x per task; {hmget_round:.2}x / {hmget_task:.2}x the HMGETs \
         (rounds: {} and {}; commands {} and {}; HMGETs {} and {})",
        small.2, large.2, small.0, large.0, small.1, large.1
    );
    assert!(
        cmds_round.min(cmds_task) <= 1.5,
        "Redis commands grew with the fleet: {cmds_round:.2}x per dispatch round, {cmds_task:.2}x per task"
    );
    assert!(
        hmget_round.min(hmget_task) <= 1.5,
        "HMGETs grew with the fleet: {hmget_round:.2}x per dispatch round, {hmget_task:.2}x per task"
    );
}
