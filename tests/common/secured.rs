//! A secured deployment for tests, as `switchyard auth init` sets it up: nats-server in operator
//! mode with the generated trust chain, redis-server with the generated ACL file (the default
//! user off), one optimizer replica with its `.creds` and its Redis user, and identities minted
//! on demand; and clients that collect the permissions violations the server reports.

use std::path::PathBuf;

use switchyard_auth::Role;
use switchyard_auth::creds::identity_of;
use switchyard_auth::directory::AuthDir;
use switchyard_client::transport::{NatsSecurity, connect_secured};
use switchyard_client::{Agent, Coordinator};
use switchyard_harness::{LocalServers, NatsAuth, NatsServer, RedisOptions, RedisServer};
use switchyard_protocol::{AgentRegister, Subjects};
use tokio::sync::mpsc;

use super::{Cluster, config_for, within};

/// A secured deployment with one optimizer replica, and the directory of its identities.
pub struct Secured {
    pub auth: AuthDir,
    pub cluster: Cluster,
    _dir: tempfile::TempDir,
}

impl Secured {
    pub async fn start() -> Secured {
        super::init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = AuthDir::init(dir.path(), Subjects::default(), "switchyard").expect("auth init");
        let optimizer_creds = auth.creds_path(Role::Optimizer, "optimizer");
        let nats = NatsServer::start_secured(NatsAuth {
            config_file: auth.server_conf_path(),
            probe_creds: optimizer_creds.clone(),
        })
        .await
        .expect("secured nats-server starts");
        // Redis as `auth init` secures it: the default user off, the optimizer's ACL user.
        let redis_files = dir.path().join("redis");
        let redis = RedisServer::start_with(RedisOptions {
            acl_file: Some(redis_files.join("users.acl")),
            ..RedisOptions::default()
        })
        .await
        .expect("redis starts with the ACL file");
        let servers = LocalServers { nats, redis };
        let mut config = config_for(&servers);
        config.nats.creds_file = optimizer_creds.display().to_string();
        config.redis.username = "switchyard-optimizer".into();
        config.redis.password_file = redis_files.join("optimizer.password").display().to_string();
        let cluster = Cluster::start_on(servers, config, 1).await;
        Secured {
            auth,
            cluster,
            _dir: dir,
        }
    }

    /// Mints `role` `name` (if not yet) and answers its creds file.
    pub fn creds(&self, role: Role, name: &str) -> PathBuf {
        let path = self.auth.creds_path(role, name);
        if !path.exists() {
            self.auth.add(role, name).expect("identity added");
        }
        path
    }

    /// Connects as `role` `name` the way every Switchyard client does.
    pub async fn client(&self, role: Role, name: &str) -> async_nats::Client {
        let security = NatsSecurity {
            creds_file: Some(self.creds(role, name)),
            ..NatsSecurity::default()
        };
        connect_secured(&self.cluster.servers.nats.url(), name, &security)
            .await
            .expect("connects with its credentials")
    }

    /// Connects as `role` `name` and collects the errors the server reports to it.
    pub async fn watched(&self, role: Role, name: &str) -> Watched {
        let text = std::fs::read_to_string(self.creds(role, name)).expect("creds");
        let prefix = identity_of(&text).expect("identity").inbox_prefix();
        let (tx, errors) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::with_credentials(&text)
            .expect("creds parse")
            .custom_inbox_prefix(prefix)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(self.cluster.servers.nats.url())
            .await
            .expect("connects");
        Watched { client, errors }
    }

    pub async fn agent(&self, name: &str, cpu: f64) -> Agent {
        let registration = AgentRegister::new(name, "worker").capacity("cpu", cpu);
        let client = self.client(Role::Agent, name).await;
        within(
            30,
            "an agent to register with its own credentials",
            Agent::register(client, Subjects::default(), registration),
        )
        .await
        .expect("registers")
    }

    pub async fn orchestrator(&self, name: &str) -> Coordinator {
        let client = self.client(Role::Orchestrator, name).await;
        Coordinator::with_client(client, name, Subjects::default())
            .await
            .expect("coordinator")
    }
}

/// A client and the server errors (permissions violations) reported to it.
pub struct Watched {
    pub client: async_nats::Client,
    pub errors: mpsc::UnboundedReceiver<String>,
}

impl Watched {
    /// Publishes on `subject` and expects the server to refuse it.
    pub async fn publish_refused(&mut self, subject: &str) {
        self.client
            .publish(subject.to_string(), b"{}".to_vec().into())
            .await
            .expect("handed to the connection");
        self.client.flush().await.expect("flushed");
        self.expect_violation(&format!("Publish to \"{subject}\""))
            .await;
    }

    /// Subscribes to `subject` and expects the server to refuse it.
    pub async fn subscribe_refused(&mut self, subject: &str) {
        let _sub = self
            .client
            .subscribe(subject.to_string())
            .await
            .expect("handed to the connection");
        self.client.flush().await.expect("flushed");
        self.expect_violation(&format!("Subscription to \"{subject}\""))
            .await;
    }

    /// Waits (at most 10 s) for a permissions violation naming `what`.
    pub async fn expect_violation(&mut self, what: &str) {
        within(10, &format!("a permissions violation for {what}"), async {
            loop {
                let error = self.errors.recv().await.expect("connection open");
                if error.contains("Permissions Violation") && error.contains(what) {
                    return;
                }
            }
        })
        .await;
    }
}
