//! Against a real 3-node JetStream cluster on loopback (`switchyard_harness::NatsCluster`):
//! `jetstream.replicas` gives every stream and optimizer consumer that many copies and a later
//! lower setting never reduces them; a client given the server list keeps publishing and reading
//! when the node leading the stream (and holding the client's connection) is killed, and nothing
//! stored before is lost; an optimizer connected through the list keeps granting tasks.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use switchyard_client::{Agent, Coordinator, GrantStream, transport};
use switchyard_harness::{NatsCluster, RedisServer};
use switchyard_protocol::{AgentRegister, Subjects, TaskSubmit};
use switchyard_server::config::Config;
use switchyard_server::optimizer::{Faults, Optimizer};
use switchyard_server::streams::{ensure_streams, optimizer_consumers};

/// Waits for `future` or fails the test after `secs` seconds, saying what it waited for.
async fn within<T>(secs: u64, what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s waiting for {what}"))
}

/// Retries `attempt` every 100 ms until it returns `Some`, failing after `secs` seconds with
/// `what` and the last error.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let last = match tokio::time::timeout(Duration::from_secs(secs), attempt()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(e)) => e,
            Err(_) => "attempt hung".to_owned(),
        };
        assert!(
            Instant::now() < deadline,
            "gave up after {secs}s waiting for {what}; last error: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_cluster() -> NatsCluster {
    let started = Instant::now();
    let cluster = within(60, "the 3-node cluster to form", NatsCluster::start(3))
        .await
        .expect("cluster starts");
    eprintln!("3-node cluster formed in {:?}", started.elapsed());
    cluster
}

async fn replicas_of(js: &jetstream::Context, name: &str) -> usize {
    let stream = js.get_stream(name).await.expect("stream exists");
    stream.cached_info().config.num_replicas
}

async fn consumer_replicas(js: &jetstream::Context, stream: &str, consumer: &str) -> usize {
    let stream = js.get_stream(stream).await.expect("stream exists");
    let consumer: consumer::PullConsumer = stream
        .get_consumer(consumer)
        .await
        .expect("consumer exists");
    consumer.cached_info().config.num_replicas
}

fn stream_names(subjects: &Subjects) -> [String; 3] {
    [
        subjects.events_stream(),
        subjects.dead_letter_stream(),
        subjects.messages_stream(),
    ]
}

/// What an optimizer does at start with `config`: the streams, then its consumers (bounded).
async fn ensure_all(js: &jetstream::Context, subjects: &Subjects, config: &Config) {
    let bytes = config.messages.max_message_bytes;
    within(
        30,
        "ensure_streams",
        ensure_streams(js, subjects, &config.jetstream, bytes),
    )
    .await
    .expect("streams ensured");
    within(
        30,
        "optimizer consumers",
        optimizer_consumers(js, subjects, &config.jetstream),
    )
    .await
    .expect("consumers ensured");
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_applied_raised_and_never_lowered() {
    let cluster = start_cluster().await;
    let client = within(
        10,
        "connect",
        transport::connect(&cluster.url(), "replicas-test"),
    )
    .await
    .expect("connects through the list");
    let js = jetstream::new(client);
    let mut config = Config::default();

    // Fresh streams get the configured 3; a later optimizer configured with 1 keeps them at 3.
    let subjects = Subjects::new("three".to_owned());
    for replicas in [3, 1] {
        config.jetstream.replicas = replicas;
        ensure_all(&js, &subjects, &config).await;
        for name in stream_names(&subjects) {
            assert_eq!(
                replicas_of(&js, &name).await,
                3,
                "{name} with replicas = {replicas}"
            );
        }
        let events = subjects.events_stream();
        for consumer in [
            subjects.optimizer_consumer(),
            subjects.optimizer_control_consumer(),
        ] {
            let n = consumer_replicas(&js, &events, &consumer).await;
            assert_eq!(n, 3, "{consumer} with replicas = {replicas}");
        }
    }

    // Streams created with 1 copy (an older config) are raised to 3.
    let subjects = Subjects::new("raised".to_owned());
    for replicas in [1, 3] {
        config.jetstream.replicas = replicas;
        ensure_all(&js, &subjects, &config).await;
        for name in stream_names(&subjects) {
            assert_eq!(replicas_of(&js, &name).await, replicas, "{name}");
        }
    }
    let events = subjects.events_stream();
    let n = consumer_replicas(&js, &events, &subjects.optimizer_consumer()).await;
    assert_eq!(n, 3, "the optimizer consumer follows its raised stream");
}

const FAILOVER_STREAM: &str = "FAILOVER";
const FAILOVER_SUBJECT: &str = "failover.data";
/// Messages published before the node is killed, and after.
const BEFORE: usize = 50;
const AFTER: usize = 50;

/// Publishes message `i` with a message id, so a retry after a lost ack is stored once.
async fn publish(js: &jetstream::Context, i: usize) -> Result<(), String> {
    let headers = transport::msg_id_headers(&format!("m-{i}"));
    let ack = js
        .publish_with_headers(FAILOVER_SUBJECT, headers, i.to_string().into())
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|_| ()).map_err(|e| e.to_string())
}

async fn publish_stored(js: &jetstream::Context, i: usize) {
    eventually(30, &format!("message {i} to be stored"), || publish(js, i)).await;
}

/// The stream's leader as its info reports it.
async fn stream_leader(js: &jetstream::Context, name: &str) -> Result<String, String> {
    let stream = js.get_stream(name).await.map_err(|e| e.to_string())?;
    let cluster = stream.cached_info().cluster.clone();
    cluster
        .and_then(|c| c.leader)
        .filter(|leader| !leader.is_empty())
        .ok_or_else(|| "the stream has no leader".to_owned())
}

/// Asks the stream's leader to step down in favour of `to` until `to` leads, so the test kills
/// the node that both leads the stream and holds the client's connection.
async fn move_stream_leader(client: &async_nats::Client, js: &jetstream::Context, to: &str) {
    let what = format!("{to} to lead {FAILOVER_STREAM}");
    eventually(30, &what, || async {
        let leader = stream_leader(js, FAILOVER_STREAM).await?;
        if leader == to {
            return Ok(());
        }
        let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{FAILOVER_STREAM}");
        let body = serde_json::json!({ "placement": { "preferred": to } }).to_string();
        let reply = client
            .request(subject, body.into())
            .await
            .map_err(|e| e.to_string())?;
        // Give the election a moment before looking (and asking) again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Err(format!(
            "{leader} led; step-down answered {}",
            String::from_utf8_lossy(&reply.payload)
        ))
    })
    .await;
}

/// Fetches and acks what the consumer delivers into `seen`, until it holds `0..count`.
async fn read_until_all(
    consumer: &consumer::PullConsumer,
    seen: &mut BTreeSet<usize>,
    count: usize,
    secs: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::from("none");
    while seen.len() < count {
        assert!(
            Instant::now() < deadline,
            "gave up after {secs}s reading {count} messages: have {}; last error: {last}",
            seen.len()
        );
        if let Err(e) = fetch_into(consumer, seen).await {
            last = e;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(
        *seen,
        (0..count).collect(),
        "exactly the published messages"
    );
}

async fn fetch_into(
    consumer: &consumer::PullConsumer,
    seen: &mut BTreeSet<usize>,
) -> Result<(), String> {
    let mut batch = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    while let Some(message) = batch.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let n = String::from_utf8_lossy(&message.payload).parse::<usize>();
        seen.insert(n.map_err(|e| e.to_string())?);
        message.ack().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Every message stored, by sequence: nothing lost, nothing twice.
async fn assert_stored(js: &jetstream::Context, count: usize) {
    let stream = js.get_stream(FAILOVER_STREAM).await.expect("stream info");
    assert_eq!(stream.cached_info().state.messages, count as u64);
    for seq in 1..=count as u64 {
        let message = stream.get_raw_message(seq).await.expect("stored message");
        assert_eq!(
            message.payload,
            (seq - 1).to_string().as_bytes(),
            "sequence {seq}"
        );
    }
}

/// Every replica of the stream is current again.
async fn replicas_current(js: &jetstream::Context) -> Result<(), String> {
    let stream = js
        .get_stream(FAILOVER_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let peers = stream
        .cached_info()
        .cluster
        .as_ref()
        .map(|c| c.replicas.clone())
        .unwrap_or_default();
    let current = peers.iter().filter(|p| p.current && !p.offline).count();
    match current {
        2 => Ok(()),
        _ => Err(format!("followers: {peers:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_and_reading_survive_the_loss_of_the_stream_leader() {
    let mut cluster = start_cluster().await;
    let client = within(
        10,
        "connect",
        transport::connect(&cluster.url(), "failover-test"),
    )
    .await
    .expect("connects through the list");
    let js = jetstream::new(client.clone());
    let config = stream::Config {
        name: FAILOVER_STREAM.into(),
        subjects: vec!["failover.>".into()],
        storage: stream::StorageType::File,
        num_replicas: 3,
        ..Default::default()
    };
    let stream = within(30, "the stream", js.create_stream(config))
        .await
        .expect("stream created");
    let reader = consumer::pull::Config {
        durable_name: Some("reader".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        // Unacknowledged deliveries lost with the node come back quickly.
        ack_wait: Duration::from_secs(2),
        ..Default::default()
    };
    let reader = within(30, "the consumer", stream.create_consumer(reader))
        .await
        .expect("consumer created");
    for i in 0..BEFORE {
        publish_stored(&js, i).await;
    }
    let mut seen = BTreeSet::new();
    read_until_all(&reader, &mut seen, BEFORE, 30).await;

    let connected = client.server_info().server_name;
    move_stream_leader(&client, &js, &connected).await;
    let victim = cluster
        .index_of(&connected)
        .expect("connected to a cluster node");
    cluster.kill(victim).expect("kill the leader");
    let killed = Instant::now();

    publish_stored(&js, BEFORE).await;
    eprintln!(
        "first publish after the kill stored after {:?}",
        killed.elapsed()
    );
    for i in BEFORE + 1..BEFORE + AFTER {
        publish_stored(&js, i).await;
    }
    let leader = eventually(30, "a new stream leader", || {
        stream_leader(&js, FAILOVER_STREAM)
    })
    .await;
    assert_ne!(leader, connected, "the killed node cannot lead");
    assert_ne!(
        client.server_info().server_name,
        connected,
        "the client failed over"
    );
    read_until_all(&reader, &mut seen, BEFORE + AFTER, 30).await;
    assert_stored(&js, BEFORE + AFTER).await;
    eprintln!(
        "stream readable with all messages {:?} after the kill",
        killed.elapsed()
    );

    within(60, "the node to rejoin", cluster.start_again(victim))
        .await
        .expect("node rejoins");
    eventually(30, "every replica current again", || replicas_current(&js)).await;
    assert_stored(&js, BEFORE + AFTER).await;
}

/// Submits a task (retrying while the cluster fails over; a repeated submit of one task id is
/// granted once) and waits for the agent to receive its grant.
async fn granted(orch: &Coordinator, grants: &mut GrantStream, task_id: &str) {
    let task = TaskSubmit::new(task_id).resource("cpu", 1.0);
    let what = format!("the submit of {task_id} to be stored");
    eventually(30, &what, || async {
        orch.submit_task(task.clone())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    let what = format!("the grant of {task_id}");
    within(60, &what, async {
        loop {
            let grant = grants.next().await.expect("grant stream open");
            if grant.expect("a grant").payload.task_id == task_id {
                return;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optimizer_on_the_cluster_keeps_granting_after_a_node_loss() {
    let redis = RedisServer::start().await.expect("redis starts");
    let mut cluster = start_cluster().await;
    let config = common::cluster_config(&cluster, &redis);
    let optimizer = Optimizer::connect(config.clone(), Faults::default());
    let optimizer = within(60, "the optimizer to connect", optimizer)
        .await
        .expect("optimizer connects");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(optimizer.run(async {
        let _ = stopped.await;
    }));

    let subjects = Subjects::new(config.nats.subject_prefix.clone());
    let url = cluster.url();
    let agent_client = transport::connect(&url, "worker")
        .await
        .expect("agent connects");
    let registration = AgentRegister::new("worker", "backend")
        .capacity("cpu", 8.0)
        .capacity("memory", 8192.0);
    let agent = within(
        30,
        "the agent to register",
        Agent::register(agent_client, subjects.clone(), registration),
    )
    .await
    .expect("agent registers");
    let mut grants = agent.grants().await.expect("grant stream");
    let orch_client = transport::connect(&url, "orch")
        .await
        .expect("orch connects");
    let js = jetstream::new(orch_client.clone());
    let orch = Coordinator::with_client(orch_client, "orch", subjects.clone())
        .await
        .expect("coordinator");
    granted(&orch, &mut grants, "before-loss").await;

    // Kill the node leading the events stream the submits and the optimizer go through.
    let events = subjects.events_stream();
    let leader = eventually(30, "the events stream's leader", || {
        stream_leader(&js, &events)
    })
    .await;
    let victim = cluster.index_of(&leader).expect("leader is a cluster node");
    cluster.kill(victim).expect("kill the events leader");
    let killed = Instant::now();
    granted(&orch, &mut grants, "after-loss").await;
    eprintln!(
        "task granted {:?} after the events leader was killed",
        killed.elapsed()
    );

    within(60, "the node to rejoin", cluster.start_again(victim))
        .await
        .expect("node rejoins");
    let _ = stop.send(());
    within(30, "the optimizer to stop", running)
        .await
        .expect("optimizer task")
        .expect("optimizer ran without error");
}
