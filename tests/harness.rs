//! The test harness starts real servers, restarts them with their data, and cleans up after itself.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use async_nats::jetstream::{self, stream};
use redis::AsyncCommands;
use switchyard_harness::{LocalServers, NatsServer, RedisOptions, RedisServer};

fn version_at_least(version: &str, min: (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn redis_connection(url: &str) -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    Ok(client.get_multiplexed_async_connection().await?)
}

fn file_stream(name: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

#[tokio::test]
async fn local_servers_start_and_serve() -> Result<()> {
    let servers = LocalServers::start().await?;
    assert_ne!(servers.nats.port(), servers.redis.port());

    let client = async_nats::connect(servers.nats.url()).await?;
    let version = client.server_info().version;
    ensure!(
        version_at_least(&version, (2, 12)),
        "nats-server {version} < 2.12"
    );
    let js = jetstream::new(client);
    let stream = js.get_or_create_stream(file_stream("HARNESS")).await?;
    assert_eq!(stream.cached_info().config.name, "HARNESS");

    let mut con = redis_connection(&servers.redis.url()).await?;
    let () = con.set("harness:key", "value").await?;
    let value: String = con.get("harness:key").await?;
    assert_eq!(value, "value");
    Ok(())
}

#[tokio::test]
async fn nats_serves_its_monitoring_endpoint() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let nats = NatsServer::start().await?;
    let url = nats.monitor_url();
    let authority = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    stream.write_all(b"GET /varz HTTP/1.0\r\n\r\n").await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    ensure!(response.starts_with("HTTP/1.0 200"), "{response}");
    ensure!(response.contains("\"in_msgs\""), "{response}");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let varz: serde_json::Value = serde_json::from_str(body)?;
    ensure!(
        varz["port"].as_u64() == Some(u64::from(nats.port())),
        "the monitor of our own server: {varz}"
    );
    Ok(())
}

#[tokio::test]
async fn nats_restart_keeps_stream_messages() -> Result<()> {
    let mut nats = NatsServer::start().await?;
    let (port, pid) = (nats.port(), nats.pid());
    {
        let js = jetstream::new(async_nats::connect(nats.url()).await?);
        js.get_or_create_stream(file_stream("KEEP")).await?;
        for i in 0..3 {
            js.publish(format!("KEEP.{i}"), "hello".into())
                .await?
                .await?;
        }
    }

    nats.restart().await?;
    assert_eq!(nats.port(), port, "restart keeps the port");
    assert_ne!(nats.pid(), pid, "restart starts a new process");

    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    let info = js.get_stream("KEEP").await?.get_info().await?;
    assert_eq!(info.state.messages, 3);
    Ok(())
}

#[tokio::test]
async fn redis_kill_then_start_again() -> Result<()> {
    let mut redis = RedisServer::start().await?;
    let port = redis.port();
    let old_pid = redis.pid().context("running server has a pid")?;

    redis.kill();
    redis.kill(); // idempotent
    assert_eq!(redis.pid(), None);
    assert!(!process_alive(old_pid), "killed server is gone");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    redis.start_again().await?;
    assert_eq!(redis.port(), port, "start_again keeps the port");
    let mut con = redis_connection(&redis.url()).await?;
    let () = con.set("k", 1).await?;
    let value: i64 = con.get("k").await?;
    assert_eq!(value, 1);
    Ok(())
}

#[tokio::test]
async fn redis_appendonly_keeps_data_across_restart() -> Result<()> {
    let mut redis = RedisServer::start_with(RedisOptions {
        appendonly: true,
        ..RedisOptions::default()
    })
    .await?;
    let () = redis_connection(&redis.url())
        .await?
        .set("durable", "yes")
        .await?;

    redis.restart().await?;
    let value: Option<String> = redis_connection(&redis.url()).await?.get("durable").await?;
    assert_eq!(value.as_deref(), Some("yes"));
    Ok(())
}

#[tokio::test]
async fn nats_kill_then_start_again() -> Result<()> {
    let mut nats = NatsServer::start().await?;
    let port = nats.port();
    nats.kill();
    nats.kill(); // idempotent
    assert_eq!(nats.pid(), None);
    nats.start_again().await?;
    assert_eq!(nats.port(), port);
    let client = async_nats::connect(nats.url()).await?;
    client.flush().await?;
    Ok(())
}

#[tokio::test]
async fn drop_kills_the_processes() -> Result<()> {
    let servers = LocalServers::start().await?;
    let nats_pid = servers.nats.pid().context("nats pid")?;
    let redis_pid = servers.redis.pid().context("redis pid")?;
    let dirs = [servers.nats.store_dir(), servers.redis.dir().to_path_buf()];
    assert!(process_alive(nats_pid) && process_alive(redis_pid));

    drop(servers);
    assert!(
        !process_alive(nats_pid),
        "nats-server {nats_pid} still alive"
    );
    assert!(
        !process_alive(redis_pid),
        "redis-server {redis_pid} still alive"
    );
    for dir in dirs {
        assert!(!dir.exists(), "{} not removed", dir.display());
    }
    Ok(())
}

#[tokio::test]
async fn many_servers_start_in_parallel() -> Result<()> {
    let starts = (0..6).map(|_| tokio::spawn(LocalServers::start()));
    let servers = futures::future::try_join_all(starts).await?;
    let servers: Vec<LocalServers> = servers.into_iter().collect::<Result<_, _>>()?;
    let mut ports: Vec<u16> = servers
        .iter()
        .flat_map(|s| [s.nats.port(), s.redis.port()])
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 12, "every server has its own port");
    tokio::time::timeout(Duration::from_secs(5), async {
        for s in &servers {
            redis_connection(&s.redis.url()).await?;
            async_nats::connect(s.nats.url()).await?.flush().await?;
        }
        anyhow::Ok(())
    })
    .await
    .context("timed out after 5s waiting for every server to accept a connection")??;
    Ok(())
}
