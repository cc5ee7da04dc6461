//! TLS to NATS and Redis, against real servers started with certificates generated in the test:
//! an optimizer over `tls://` NATS that requires client certificates and a `rediss://` Redis
//! runs a task end to end, and a client that trusts the wrong CA, presents no (or a foreign)
//! client certificate, or speaks plain Redis to a TLS-only Redis is refused, quickly and saying so.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::path::Path;

use common::{Cluster, config_for, hget, next_grant, python, require_python_nats, within};
use switchyard_client::Allocation;
use switchyard_client::error::Error;
use switchyard_client::transport::{NatsSecurity, connect_secured};
use switchyard_harness::{LocalServers, NatsServer, RedisCluster, RedisServer, TestPki};
use switchyard_protocol::TaskSubmit;
use switchyard_server::config::{Config, RedisConfig};
use switchyard_server::state::{Connection, Keys};

/// How long a refused connection may take to fail: refusals must not hang.
const REFUSED_WITHIN: u64 = 20;

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Servers that accept TLS clients with certificates only, and a configuration that uses them.
async fn tls_servers(pki: &TestPki) -> (LocalServers, Config) {
    let (nats, redis) = tokio::try_join!(
        NatsServer::start_tls(pki.server_tls(true)),
        RedisServer::start_tls(pki.server_tls(true)),
    )
    .expect("TLS servers start");
    let servers = LocalServers { nats, redis };
    let mut config = config_for(&servers);
    config.nats.tls_ca_file = text(&pki.ca_file());
    config.nats.tls_cert_file = text(&pki.client_cert_file());
    config.nats.tls_key_file = text(&pki.client_key_file());
    config.redis.tls_ca_file = text(&pki.ca_file());
    config.redis.tls_cert_file = text(&pki.client_cert_file());
    config.redis.tls_key_file = text(&pki.client_key_file());
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    (servers, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optimizer_over_tls_nats_and_rediss_grants_and_completes_a_task() {
    let pki = TestPki::generate().expect("certificates");
    let (servers, config) = tls_servers(&pki).await;
    assert!(servers.nats.url().starts_with("tls://"));
    assert!(servers.redis.url().starts_with("rediss://"));
    let cluster = Cluster::start_on(servers, config, 1).await;

    // The client library (Agent, Coordinator) over TLS with the CA and the client certificate.
    let agent = within(
        30,
        "the agent to register",
        cluster.agent("tls-a", "w", 2.0, 1024.0),
    )
    .await;
    let mut grants = agent.grants().await.expect("grant stream");
    let orch = cluster.coordinator("tls-orch").await;
    let task = TaskSubmit::new("tls-task").resource("cpu", 1.0);
    let allocation = within(30, "the submit's answer", orch.allocate_task(task))
        .await
        .expect("submitted");
    assert_eq!(
        allocation,
        Allocation::Granted {
            agent_id: "tls-a".into()
        }
    );
    let grant = next_grant(10, "the grant", &mut grants).await;
    assert_eq!(grant.payload.task_id, "tls-task");
    within(
        30,
        "the completion",
        agent.complete_task_confirmed("tls-task", true, 0.1),
    )
    .await
    .expect("completion applied");

    // Read back over rediss:// with the same settings the optimizer used.
    let mut redis = cluster.redis().await;
    let key = Keys::new("switchyard").task("tls-task");
    assert_eq!(
        hget(&mut redis, &key, "state").await.as_deref(),
        Some("completed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_agent_connects_with_an_ssl_context_and_completes_a_task() {
    require_python_nats();
    let pki = TestPki::generate().expect("certificates");
    let (servers, config) = tls_servers(&pki).await;
    let cluster = Cluster::start_on(servers, config, 1).await;
    let mut redis = cluster.redis().await;
    let (ca, cert, key) = (
        text(&pki.ca_file()),
        text(&pki.client_cert_file()),
        text(&pki.client_key_file()),
    );
    let tls = ["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key];
    let url = cluster.servers.nats.url();
    let args = [&["--nats", &url, "--tasks", "1"][..], &tls].concat();
    let mut child = python::spawn_agent("py-tls", &args);
    python::registered(&mut child, &mut redis, "py-tls").await;

    let orch = cluster.coordinator("tls-orch").await;
    orch.submit_task(TaskSubmit::new("py-tls-task").resource("cpu", 1.0))
        .await
        .expect("submitted");
    let out = within(60, "the python agent to finish", child.wait_with_output())
        .await
        .expect("agent output");
    let (result, line) = python::result_line(&out);
    assert_eq!(
        result["completed"],
        serde_json::json!(["py-tls-task"]),
        "{line}"
    );
}

/// Connects to `url` with `tls`, expecting a refusal within [`REFUSED_WITHIN`]; answers it.
async fn nats_refused(url: &str, tls: NatsSecurity, what: &str) -> Error {
    let attempt = connect_secured(url, "tls-negative", &tls);
    match within(REFUSED_WITHIN, what, attempt).await {
        Ok(_) => panic!("{what}: connected, but should have been refused"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_refuses_a_wrong_ca_and_clients_without_a_valid_certificate() {
    let pki = TestPki::generate().expect("certificates");
    let nats = NatsServer::start_tls(pki.server_tls(true))
        .await
        .expect("nats starts");
    let url = nats.url();
    let client = |ca: &Path, cert: Option<(&Path, &Path)>| NatsSecurity {
        ca_file: Some(ca.to_path_buf()),
        cert_file: cert.map(|(c, _)| c.to_path_buf()),
        key_file: cert.map(|(_, k)| k.to_path_buf()),
        creds_file: None,
    };
    let (ca, other_ca) = (pki.ca_file(), pki.other_ca_file());
    let ours = (pki.client_cert_file(), pki.client_key_file());
    let ours = Some((ours.0.as_path(), ours.1.as_path()));
    let foreign = (pki.other_client_cert_file(), pki.other_client_key_file());

    // The right CA and certificate connect: the refusals below are for the reason given.
    let good_tls = client(&ca, ours);
    let good = connect_secured(&url, "tls-positive", &good_tls);
    within(REFUSED_WITHIN, "a good client", good)
        .await
        .expect("the right CA and client certificate connect");

    let e = nats_refused(
        &url,
        client(&other_ca, ours),
        "a client trusting another CA",
    )
    .await;
    let message = e.to_string();
    assert!(
        message.contains("cannot connect to NATS") && message.contains("UnknownIssuer"),
        "a wrong CA says so: {message}"
    );

    let e = nats_refused(&url, client(&ca, None), "a client without a certificate").await;
    let message = e.to_string();
    assert!(message.contains("CertificateRequired"), "{message}");

    let foreign = Some((foreign.0.as_path(), foreign.1.as_path()));
    let e = nats_refused(
        &url,
        client(&ca, foreign),
        "a client with a foreign certificate",
    )
    .await;
    let message = e.to_string();
    assert!(message.contains("UnknownCA"), "{message}");
}

/// Opens a Redis connection as the optimizer does, expecting a refusal within [`REFUSED_WITHIN`].
async fn redis_refused(config: &RedisConfig, what: &str) -> Error {
    match within(REFUSED_WITHIN, what, Connection::open(config)).await {
        Ok(_) => panic!("{what}: connected, but should have been refused"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_only_redis_refuses_plain_clients_and_a_wrong_ca() {
    let pki = TestPki::generate().expect("certificates");
    // No client certificates required: the CA alone must do.
    let redis = RedisServer::start_tls(pki.server_tls(false))
        .await
        .expect("redis starts");
    let mut config = Config::default().redis;
    config.url = redis.url();
    config.tls_ca_file = text(&pki.ca_file());
    let mut conn = within(
        REFUSED_WITHIN,
        "rediss:// with the CA",
        Connection::open(&config),
    )
    .await
    .expect("rediss:// with the CA only connects");
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");

    let mut plain = config.clone();
    plain.url = redis.url().replacen("rediss://", "redis://", 1);
    plain.tls_ca_file.clear();
    let e = redis_refused(&plain, "a plain client").await;
    let message = e.to_string();
    assert!(
        message.contains("cannot connect to Redis") && message.contains("use rediss://"),
        "a plain client is told why: {message}"
    );

    let mut wrong = config.clone();
    wrong.tls_ca_file = text(&pki.other_ca_file());
    let e = redis_refused(&wrong, "a client trusting another CA").await;
    let message = e.to_string();
    assert!(
        message.contains("cannot connect to Redis") && message.contains("UnknownIssuer"),
        "a wrong CA says so: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_verifies_clients_refuses_one_without_a_certificate() {
    let pki = TestPki::generate().expect("certificates");
    let redis = RedisServer::start_tls(pki.server_tls(true))
        .await
        .expect("redis starts");
    let mut config = Config::default().redis;
    config.url = redis.url();
    config.tls_ca_file = text(&pki.ca_file());
    let e = redis_refused(&config, "a client without a certificate").await;
    let message = e.to_string();
    assert!(
        message.contains("cannot connect to Redis") && message.contains("CertificateRequired"),
        "{message}"
    );

    config.tls_cert_file = text(&pki.client_cert_file());
    config.tls_key_file = text(&pki.client_key_file());
    let connected = within(
        REFUSED_WITHIN,
        "a client with a certificate",
        Connection::open(&config),
    );
    connected.await.expect("the client certificate is accepted");
}

/// The cluster client over TLS: every node of a TLS-only Redis Cluster (cluster bus on TLS too)
/// is reached with the configured CA and client certificate, redirections included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_client_reaches_every_node_of_a_tls_redis_cluster() {
    let pki = TestPki::generate().expect("certificates");
    let cluster = within(
        60,
        "the TLS cluster",
        RedisCluster::start_tls(pki.server_tls(true)),
    )
    .await
    .expect("cluster starts");
    let mut config = Config::default();
    config.redis.cluster = true;
    config.redis.url = cluster.seed_urls();
    assert!(
        config.redis.url.starts_with("rediss://"),
        "{}",
        config.redis.url
    );
    config.redis.tls_ca_file = text(&pki.ca_file());
    config.redis.tls_cert_file = text(&pki.client_cert_file());
    config.redis.tls_key_file = text(&pki.client_key_file());
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    let mut conn = within(
        REFUSED_WITHIN,
        "the cluster connection",
        Connection::open(&config.redis),
    )
    .await
    .expect("the cluster client connects over TLS");

    // Keys without a hash tag spread over the slots: the thirds they fall in are the nodes.
    let mut thirds = std::collections::BTreeSet::new();
    for i in 0..30 {
        let key = format!("tls-k{i}");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("KEYSLOT");
        thirds.insert(slot / (16384 / 3 + 1));
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(i)
            .query_async(&mut conn)
            .await
            .expect("SET");
        let back: i64 = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("GET");
        assert_eq!(back, i, "{key}");
    }
    assert_eq!(thirds.len(), 3, "the keys reached every node: {thirds:?}");

    let mut wrong = config.redis.clone();
    wrong.tls_ca_file = text(&pki.other_ca_file());
    let e = redis_refused(&wrong, "a cluster client trusting another CA").await;
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}
