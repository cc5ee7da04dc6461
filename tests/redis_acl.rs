//! The Redis ACL of a secured deployment, against a real redis-server loading the file
//! `switchyard auth init` writes: the optimizer logs in as its own user and runs a whole task
//! flow; the default user reads nothing; the optimizer user touches no key outside its prefix and
//! runs no admin command; a wrong password stops the optimizer at start, naming the user.

// Test code: a helper that cannot go on should stop the test where it failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod common;

use std::path::{Path, PathBuf};

use common::{OptimizerProcess, OutputWithin, config_for, next_grant, register_within, within};
use switchyard_auth::redis_acl::{OPTIMIZER_COMMANDS, OPTIMIZER_USER};
use switchyard_client::error::ErrorKind;
use switchyard_client::{Allocation, Coordinator};
use switchyard_harness::{
    LocalServers, NatsServer, RedisCluster, RedisOptions, RedisSentinel, RedisServer,
};
use switchyard_protocol::{AgentRegister, StatusQuery, Subjects, TaskSubmit};
use switchyard_server::config::{Config, RedisConfig};
use switchyard_server::optimizer::{Faults, Optimizer};
use switchyard_server::state::{Connection, Keys, redis_client};

/// Not the default prefix, so the test shows `auth init` reads the configured one.
const PREFIX: &str = "fleet-a";

/// `switchyard auth init DIR` as a user runs it, with the key prefix in the environment.
fn auth_init(dir: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["auth", "init"])
        .arg(dir)
        .env("REDIS_KEY_PREFIX", PREFIX)
        .env_remove("SWITCHYARD_CONFIG")
        .output_within(60, "switchyard auth init");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("redis/users.acl"), "{stdout}");
    assert!(stdout.contains(OPTIMIZER_USER), "{stdout}");
}

/// NATS and a Redis that loads the ACL file from `auth init` (plus the harness's admin user),
/// and a configuration with the key prefix but no Redis login yet.
struct Secured {
    servers: LocalServers,
    config: Config,
    _auth: tempfile::TempDir,
    acl_dir: PathBuf,
}

impl Secured {
    async fn start() -> Secured {
        common::init_tracing();
        let auth = tempfile::tempdir().expect("tempdir");
        auth_init(auth.path());
        let acl_dir = auth.path().join("redis");
        let options = RedisOptions {
            acl_file: Some(acl_dir.join("users.acl")),
            ..RedisOptions::default()
        };
        let (nats, redis) = tokio::try_join!(NatsServer::start(), RedisServer::start_with(options))
            .expect("servers start");
        let servers = LocalServers { nats, redis };
        let mut config = config_for(&servers);
        config.redis.key_prefix = PREFIX.into();
        Secured {
            servers,
            config,
            _auth: auth,
            acl_dir,
        }
    }

    fn password_file(&self) -> String {
        self.acl_dir
            .join("optimizer.password")
            .to_string_lossy()
            .into_owned()
    }

    /// The Redis settings with the optimizer user's login.
    fn optimizer_redis(&self) -> RedisConfig {
        let mut redis = self.config.redis.clone();
        redis.username = OPTIMIZER_USER.into();
        redis.password_file = self.password_file();
        redis
    }

    /// A connection as the harness's admin user: every key and command.
    async fn admin(&self) -> redis::aio::MultiplexedConnection {
        common::redis_at_url(&self.servers.redis.admin_url()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_optimizer_runs_a_whole_flow_as_its_acl_user() {
    let secured = Secured::start().await;
    // The login from the environment, as docs/operations.md tells operators to set it.
    let password_file = secured.password_file();
    let optimizer = OptimizerProcess::spawn(
        &secured.config,
        &[
            ("REDIS_USERNAME", OPTIMIZER_USER),
            ("REDIS_PASSWORD_FILE", &password_file),
        ],
    );
    let nats = async_nats::connect(secured.servers.nats.url())
        .await
        .expect("nats connects");
    common::optimizer_ready(&nats).await;
    let registration = |id: &str| {
        AgentRegister::new(id, "worker")
            .capacity("cpu", 2.0)
            .capacity("memory", 1024.0)
    };
    let alpha = register_within(&nats, registration("alpha")).await;
    let beta = register_within(&nats, registration("beta")).await;
    let mut alpha_grants = alpha.grants().await.expect("grant stream");
    let mut beta_grants = beta.grants().await.expect("grant stream");
    let orch = Coordinator::with_client(nats.clone(), "orch", Subjects::default())
        .await
        .expect("coordinator");

    // `first` fills alpha (the least loaded picks either; the agent's own subject tells which),
    // `second` waits for it.
    let first = TaskSubmit::new("first").resource("cpu", 2.0);
    let granted = within(30, "first's answer", orch.allocate_task(first))
        .await
        .expect("first submitted");
    let Allocation::Granted { agent_id: holder } = granted else {
        panic!("first should be granted, got {granted:?}")
    };
    let second = TaskSubmit::new("second")
        .resource("cpu", 1.0)
        .depends_on("first");
    let waiting = within(30, "second's answer", orch.allocate_task(second))
        .await
        .expect("second submitted");
    assert_eq!(waiting, Allocation::Waiting);
    let (first_agent, first_grants) = if holder == "alpha" {
        (&alpha, &mut alpha_grants)
    } else {
        (&beta, &mut beta_grants)
    };
    let grant = next_grant(10, "first's grant", first_grants).await;
    assert_eq!(grant.payload.task_id, "first");
    within(30, "first's completion", async {
        first_agent
            .complete_task_confirmed("first", true, 0.1)
            .await
    })
    .await
    .expect("first completed");

    // The dependency met, `second` goes to whichever agent; complete it there.
    let second_agent = within(30, "second's grant", async {
        tokio::select! {
            g = alpha_grants.next() => (g, &alpha),
            g = beta_grants.next() => (g, &beta),
        }
    })
    .await;
    let (grant, agent) = second_agent;
    let grant = grant.expect("open").expect("grant");
    assert_eq!(grant.payload.task_id, "second");
    within(30, "second's completion", async {
        agent.complete_task_confirmed("second", true, 0.1).await
    })
    .await
    .expect("second completed");

    let query = StatusQuery {
        include_agents: true,
        include_patterns: true,
        ..StatusQuery::default()
    };
    let status = within(30, "the status", orch.status_with(query))
        .await
        .expect("status");
    assert_eq!(status.counters.get("completed"), Some(&2), "{status:?}");
    assert_eq!(status.queue_depth, 0);
    let mut ids: Vec<&str> = status.agents.iter().map(|a| a.agent_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["alpha", "beta"]);
    assert!(!status.patterns.is_empty(), "learned from two completions");

    let mut admin = secured.admin().await;
    every_key_is_under_the_prefix_and_nothing_was_refused(&mut admin).await;
    drop(optimizer);
}

/// What the optimizer wrote is all under `{fleet-a}:`, and Redis refused it nothing: the ACL
/// log holds no entry of its user.
async fn every_key_is_under_the_prefix_and_nothing_was_refused(
    admin: &mut redis::aio::MultiplexedConnection,
) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(admin)
        .await
        .expect("KEYS");
    assert!(keys.len() > 5, "{keys:?}");
    let tag = format!("{{{PREFIX}}}:");
    assert!(keys.iter().all(|k| k.starts_with(&tag)), "{keys:?}");
    let task = Keys::new(PREFIX).task("second");
    let state: Option<String> = redis::cmd("HGET")
        .arg(&task)
        .arg("state")
        .query_async(admin)
        .await
        .expect("HGET");
    assert_eq!(state.as_deref(), Some("completed"));

    let log: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(admin)
        .await
        .expect("ACL LOG");
    let refusals: Vec<String> = log
        .iter()
        .map(|entry| format!("{entry:?}"))
        // redis-rs announces itself with CLIENT SETINFO and ignores the answer; Redis 7.2 and
        // later log its refusal. No Switchyard code path needs it.
        .filter(|entry| !entry.contains("client|setinfo"))
        .collect();
    assert!(refusals.is_empty(), "refused: {refusals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_user_reads_nothing_and_an_optimizer_without_login_is_told_why() {
    let secured = Secured::start().await;
    let mut admin = secured.admin().await;
    let stats = Keys::new(PREFIX).stats();
    let () = redis::cmd("HSET")
        .arg(&stats)
        .arg("completed")
        .arg(1)
        .query_async(&mut admin)
        .await
        .expect("the admin writes");

    // Anonymous: the default user is off, so nothing is answered but NOAUTH.
    let mut anonymous = common::redis_at_url(&secured.servers.redis.url()).await;
    for cmd in [
        redis::cmd("HGETALL").arg(&stats).clone(),
        redis::cmd("KEYS").arg("*").clone(),
        redis::cmd("PING").clone(),
    ] {
        let e = cmd
            .query_async::<redis::Value>(&mut anonymous)
            .await
            .expect_err("the default user is off");
        assert_eq!(e.code(), Some("NOAUTH"), "{e}");
    }
    // Nor can anyone log in as `default`, whatever the password.
    let e = redis::cmd("AUTH")
        .arg("default")
        .arg("anything-at-all")
        .query_async::<redis::Value>(&mut anonymous)
        .await
        .expect_err("default is off");
    assert!(e.to_string().contains("WRONGPASS"), "{e}");

    // An optimizer configured without the login stops at start with a configuration error.
    let e = within(30, "a connect without login", async {
        switchyard_server::state::Store::connect(&secured.config.redis).await
    })
    .await
    .err()
    .expect("refused");
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("wants a login"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_optimizer_user_stays_inside_its_prefix_and_runs_no_admin_command() {
    let secured = Secured::start().await;
    let client = redis_client(&secured.optimizer_redis()).expect("client");
    let mut conn = within(30, "the optimizer user's connection", async {
        client.get_multiplexed_async_connection().await
    })
    .await
    .expect("the optimizer user logs in");
    let own = Keys::new(PREFIX).stats();
    let () = redis::cmd("HSET")
        .arg(&own)
        .arg("x")
        .arg(1)
        .query_async(&mut conn)
        .await
        .expect("its own keys");

    let other_tag = Keys::new("fleet-b").stats();
    let refused = [
        redis::cmd("HSET").arg(&other_tag).arg("x").arg(1).clone(),
        redis::cmd("HGETALL").arg("fleet-a:stats").clone(), // the prefix without its braces
        redis::cmd("SET").arg("unrelated").arg(1).clone(),
        redis::cmd("FLUSHALL").clone(),
        redis::cmd("FLUSHDB").clone(),
        redis::cmd("CONFIG").arg("GET").arg("*").clone(),
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendonly")
            .arg("yes")
            .clone(),
        redis::cmd("KEYS").arg("*").clone(),
        redis::cmd("KEYS").arg(format!("{{{PREFIX}}}:*")).clone(),
        redis::cmd("SCAN").arg(0).clone(),
        redis::cmd("ACL").arg("LIST").clone(),
        redis::cmd("EVAL").arg("return 1").arg(0).clone(),
        redis::cmd("SHUTDOWN").clone(),
    ];
    for cmd in refused {
        let e = cmd
            .query_async::<redis::Value>(&mut conn)
            .await
            .expect_err("refused");
        assert_eq!(e.code(), Some("NOPERM"), "{e}");
    }

    // A login written in the URL (no password file) works as well.
    let password = std::fs::read_to_string(secured.password_file()).expect("password");
    let mut by_url = secured.config.redis.clone();
    let login = format!("redis://{OPTIMIZER_USER}:{}@", password.trim());
    by_url.url = secured.servers.redis.url().replacen("redis://", &login, 1);
    within(30, "a store with the URL's login", async {
        switchyard_server::state::Store::connect(&by_url).await
    })
    .await
    .expect("the URL's login works");

    // It may load scripts, but a script runs with its permissions: a key outside the prefix is
    // refused whether it comes in KEYS or is named in the script.
    let through_keys = redis::Script::new("return redis.call('GET', KEYS[1])");
    let e = through_keys
        .key(&other_tag)
        .invoke_async::<redis::Value>(&mut conn)
        .await
        .expect_err("a key outside the prefix through KEYS");
    assert_eq!(e.code(), Some("NOPERM"), "{e}");
    let named = redis::Script::new("return redis.call('DEL', 'unrelated')");
    let e = named
        .key(&own)
        .invoke_async::<redis::Value>(&mut conn)
        .await
        .expect_err("a key named inside the script");
    assert!(e.to_string().contains("can't access"), "{e}");
    let flush = redis::Script::new("return redis.call('FLUSHALL')");
    let e = flush
        .key(&own)
        .invoke_async::<redis::Value>(&mut conn)
        .await
        .expect_err("an admin command inside a script");
    assert!(e.to_string().contains("can't run this command"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_the_optimizer_naming_the_user_not_the_password() {
    let secured = Secured::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let wrong = "0000000000000000wrong-password-0000000000000000";
    let wrong_file = tmp.path().join("wrong.password");
    std::fs::write(&wrong_file, format!("{wrong}\n")).expect("written");
    let mut redis = secured.optimizer_redis();
    redis.password_file = wrong_file.to_string_lossy().into_owned();

    let e = within(
        30,
        "a connect with a wrong password",
        Connection::open(&redis),
    )
    .await
    .err()
    .expect("refused");
    let message = format!("{e:#}");
    assert_eq!(e.kind(), ErrorKind::Config, "{message}");
    assert!(message.contains(OPTIMIZER_USER), "{message}");
    assert!(message.contains(&redis.password_file), "{message}");
    assert!(!message.contains(wrong), "{message}");

    // The optimizer binary exits with that message instead of retrying.
    let mut config = secured.config.clone();
    config.redis = redis.clone();
    let config_file = tmp.path().join("optimizer.toml");
    std::fs::write(&config_file, toml::to_string(&config).expect("toml")).expect("written");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_optimizer"))
        .arg("--config")
        .arg(&config_file)
        .env_remove("REDIS_URL")
        .env_remove("NATS_URL")
        .output_within(60, "the optimizer to give up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(OPTIMIZER_USER), "{stderr}");
    assert!(!stderr.contains(wrong), "{stderr}");

    // The same with the login written in the URL: the user is named, the password is not.
    let mut by_url = secured.config.redis.clone();
    let login = format!("redis://{OPTIMIZER_USER}:{wrong}@");
    by_url.url = secured.servers.redis.url().replacen("redis://", &login, 1);
    let e = Connection::open(&by_url).await.err().expect("refused");
    let message = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Config, "{message}");
    assert!(message.contains(OPTIMIZER_USER), "{message}");
    assert!(!message.contains(wrong), "{message}");

    // A password file that cannot be read is named, too.
    redis.password_file = tmp.path().join("missing").to_string_lossy().into_owned();
    let e = Connection::open(&redis).await.err().expect("refused");
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    let message = e.to_string();
    assert!(
        message.contains("cannot read redis.password_file") && message.contains("missing"),
        "{message}"
    );
}

/// The optimizer user's line of the `users.acl` that `auth init` writes, added to a running node
/// with ACL SETUSER. The harness's cluster and sentinel set-ups log in as the default user, so it
/// stays on there; CLIENT LIST shows that the optimizer logged in as its own user.
async fn add_optimizer_user(node: &RedisServer, users_acl: &str) {
    let line = users_acl
        .lines()
        .find(|l| l.starts_with(&format!("user {OPTIMIZER_USER} ")))
        .expect("the optimizer user's line");
    let mut setuser = redis::cmd("ACL");
    setuser.arg("SETUSER");
    for rule in line.split(' ').skip(1) {
        setuser.arg(rule);
    }
    let mut conn = common::redis_at_url(&node.admin_url()).await;
    let () = setuser.query_async(&mut conn).await.expect("ACL SETUSER");
}

/// Whether some client of `node` is logged in as the optimizer user, and what the node's ACL
/// log holds besides redis-rs's CLIENT SETINFO (see above).
async fn optimizer_clients_and_refusals(node: &RedisServer) -> (bool, Vec<String>) {
    let mut conn = common::redis_at_url(&node.admin_url()).await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .expect("CLIENT LIST");
    let log: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(&mut conn)
        .await
        .expect("ACL LOG");
    let refusals = log
        .iter()
        .map(|entry| format!("{entry:?}"))
        .filter(|entry| !entry.contains("client|setinfo"))
        .collect();
    (
        clients.contains(&format!("user={OPTIMIZER_USER} ")),
        refusals,
    )
}

/// The replica `one_task_through` leaves running, so its connections can be looked at.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    replica: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = within(30, "the replica to stop", self.replica).await;
    }
}

/// One task end to end through an in-process optimizer on `config`, left running.
async fn one_task_through(config: &Config) -> Running {
    let optimizer = within(60, "the optimizer to connect", async {
        Optimizer::connect(config.clone(), Faults::default()).await
    })
    .await
    .expect("the optimizer connects as its ACL user");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let replica = tokio::spawn(async move {
        let until_stopped = async {
            let _ = stopped.await;
        };
        optimizer.run(until_stopped).await.expect("optimizer runs");
    });
    let nats = async_nats::connect(&config.nats.url).await.expect("nats");
    let registration = AgentRegister::new("alpha", "worker").capacity("cpu", 2.0);
    let agent = register_within(&nats, registration).await;
    let orch = Coordinator::with_client(nats, "orch", Subjects::default())
        .await
        .expect("coordinator");
    let task = TaskSubmit::new("t1").resource("cpu", 1.0);
    let allocation = within(30, "the grant", orch.allocate_task(task))
        .await
        .expect("allocated");
    assert_eq!(
        allocation,
        Allocation::Granted {
            agent_id: "alpha".into()
        }
    );
    within(
        30,
        "the completion",
        agent.complete_task_confirmed("t1", true, 0.1),
    )
    .await
    .expect("completed");
    let status = within(30, "the status", orch.status())
        .await
        .expect("status");
    assert_eq!(status.counters.get("completed"), Some(&1), "{status:?}");
    Running { stop, replica }
}

/// The same user on every node of a Redis Cluster: the slot map, node checks and the scripts'
/// loading on every primary need nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_optimizer_user_suffices_on_a_redis_cluster() {
    common::init_tracing();
    let auth = tempfile::tempdir().expect("tempdir");
    auth_init(auth.path());
    let users = std::fs::read_to_string(auth.path().join("redis/users.acl")).expect("acl");
    let (nats, cluster) = within(60, "the servers", async {
        tokio::try_join!(NatsServer::start(), RedisCluster::start()).expect("servers start")
    })
    .await;
    for node in cluster.nodes() {
        add_optimizer_user(node, &users).await;
    }
    let mut config = config_for_nats(&nats);
    config.redis.url = cluster.seed_urls();
    config.redis.cluster = true;
    config.redis.username = OPTIMIZER_USER.into();
    config.redis.password_file = text(&auth.path().join("redis/optimizer.password"));
    let running = one_task_through(&config).await;
    let mut logged_in = false;
    for node in cluster.nodes() {
        let (clients, refusals) = optimizer_clients_and_refusals(node).await;
        logged_in |= clients;
        assert!(refusals.is_empty(), "node {}: {refusals:?}", node.port());
    }
    assert!(logged_in, "no node saw the optimizer user");
    running.stop().await;
}

/// Under Sentinel the primary gets the optimizer user's login (the sentinels none): ROLE is all
/// the lookup needs; a wrong password is refused by the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_optimizer_user_suffices_on_a_sentinel_primary() {
    common::init_tracing();
    let auth = tempfile::tempdir().expect("tempdir");
    auth_init(auth.path());
    let users = std::fs::read_to_string(auth.path().join("redis/users.acl")).expect("acl");
    let (nats, deployment) = within(90, "the servers", async {
        tokio::try_join!(NatsServer::start(), RedisSentinel::start()).expect("servers start")
    })
    .await;
    for node in deployment.nodes() {
        add_optimizer_user(node, &users).await;
    }
    let mut config = config_for_nats(&nats);
    config.redis.url = deployment.sentinel_urls();
    config.redis.sentinel_master = deployment.master_name().into();
    config.redis.username = OPTIMIZER_USER.into();
    config.redis.password_file = text(&auth.path().join("redis/optimizer.password"));
    let running = one_task_through(&config).await;
    let primary = deployment.primary_port().await.expect("primary");
    let node = deployment
        .nodes()
        .iter()
        .find(|n| n.port() == primary)
        .expect("the primary node");
    let (logged_in, refusals) = optimizer_clients_and_refusals(node).await;
    assert!(logged_in, "the primary saw no client of the optimizer user");
    assert!(refusals.is_empty(), "{refusals:?}");
    running.stop().await;

    let wrong = auth.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password-0123456789\n").expect("written");
    config.redis.password_file = text(&wrong);
    let refused = within(
        60,
        "a lookup with a wrong password",
        Connection::open(&config.redis),
    )
    .await
    .err()
    .expect("the primary refuses a wrong password");
    assert!(
        !refused.to_string().contains("not-the-password"),
        "{refused}"
    );
}

fn config_for_nats(nats: &NatsServer) -> Config {
    let mut config = Config::default();
    config.nats.url = nats.url();
    config.redis.key_prefix = PREFIX.into();
    config.metrics.addr = "127.0.0.1:0".into();
    config.coordination.optimization_interval_s = 0.5;
    config
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The ACL must grant every command the state layer sends and every command its scripts run
/// (Redis checks both): read from the sources (`redis.call('X'`, `cmd("X")` and the typed
/// methods called on a connection), so a new command fails here before it fails in production
/// with NOPERM.
#[test]
fn the_acl_grants_every_command_the_sources_use() {
    let granted: Vec<String> = OPTIMIZER_COMMANDS
        .iter()
        .map(|(c, _)| c.to_string())
        .collect();
    let state = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/server/src/state");
    let mut used = Vec::new();
    for dir in [state.clone(), state.join("lua")] {
        for entry in std::fs::read_dir(&dir).expect("state sources") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for opener in ["redis.call('", "redis.pcall('", "cmd(\""] {
                for piece in text.split(opener).skip(1) {
                    let name: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_alphabetic())
                        .collect();
                    if !name.is_empty() {
                        used.push((name.to_ascii_lowercase(), path.clone()));
                    }
                }
            }
            used.extend(typed_commands(&text).into_iter().map(|c| (c, path.clone())));
        }
    }
    assert!(used.len() > 20, "the sources were read: {used:?}");
    for (command, path) in &used {
        assert!(
            granted.contains(command),
            "{} uses {command}, which the optimizer's Redis ACL does not grant \
             (crates/auth/src/redis_acl.rs)",
            path.display()
        );
    }
}

/// The commands sent through redis-rs's typed methods, `self.conn().hgetall(...)`: the method
/// called on a connection, named as the command it sends (`zrangebyscore_limit` sends
/// ZRANGEBYSCORE ... LIMIT).
fn typed_commands(text: &str) -> Vec<String> {
    let not_commands = ["query_in_slot", "clone"];
    text.split(".conn()")
        .skip(1)
        .filter_map(|after| after.trim_start().strip_prefix('.'))
        .map(|call| {
            call.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|method| !method.is_empty() && !not_commands.contains(&method.as_str()))
        // redis-rs's variants of one command: `zrangebyscore_limit`, `zrange_withscores`.
        .map(|method| {
            method
                .trim_end_matches("_limit")
                .trim_end_matches("_withscores")
                .to_string()
        })
        .collect()
}
