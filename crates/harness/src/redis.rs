//! `redis-server` as a child process.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::pki::ServerTls;
use super::process::{Flavor, Managed, connect, free_port, read_until};
use super::{HarnessError, binary};

/// How the Redis server is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisOptions {
    /// Keep an append-only file in the server's directory, so data survives a kill/restart.
    /// Off by default (`--appendonly no`); RDB snapshots are always off (`--save ""`).
    pub appendonly: bool,
    /// Start with `--aclfile`: the users of this file (as `switchyard auth init` writes it, the
    /// default user off), plus the harness's own admin user, [`HARNESS_ADMIN`]. For a single
    /// server; replicas and sentinels would need a login to their primary, which the harness
    /// does not give them.
    pub acl_file: Option<PathBuf>,
}

/// The admin user the harness adds to a server started with [`RedisOptions::acl_file`], with a
/// password of its own per server ([`RedisServer::admin_url`]).
///
/// Why a user of its own: the readiness probe must tell *our* server from another process on
/// the same port, which it does by reading `CONFIG GET logfile`. With the default user off, an
/// anonymous client gets `-NOAUTH` to everything, which any Redis with a password would answer
/// too; so the probe logs in. The user goes into a copy of the file in the server's directory,
/// so the file under test is loaded as written, and tests get a login that may read every key
/// (to check what the restricted users did).
pub const HARNESS_ADMIN: &str = "switchyard-harness";

/// The file a server with an ACL loads: the given users and [`HARNESS_ADMIN`].
const ACL_COPY: &str = "users.acl";

/// A `redis-server` on `127.0.0.1`, a free port and its own temporary directory.
/// Dropping it kills the server.
#[derive(Debug)]
pub struct RedisServer {
    inner: Managed<Redis>,
}

impl RedisServer {
    /// Starts `redis-server` with the default [`RedisOptions`] and returns once it answers `PING`.
    pub async fn start() -> Result<RedisServer, HarnessError> {
        RedisServer::start_with(RedisOptions::default()).await
    }

    /// Starts `redis-server` with `options` and returns once it answers `PING`.
    pub async fn start_with(options: RedisOptions) -> Result<RedisServer, HarnessError> {
        let bin = binary::redis_server().await?;
        let acl = match options.acl_file {
            Some(file) => Some(Box::new(Acl {
                file,
                admin_password: new_password()?,
            })),
            None => None,
        };
        let flavor = Redis {
            appendonly: options.appendonly,
            cluster_bus_port: None,
            tls: None,
            replica_of: None,
            acl,
        };
        let inner = Managed::start(flavor, bin).await?;
        Ok(RedisServer { inner })
    }

    /// Starts `redis-server` serving TLS only (no plain port) with `tls`'s certificate; clients
    /// must present a certificate signed by its CA when [`ServerTls::verify_clients`] is set.
    /// [`RedisServer::url`] is then `rediss://...`.
    pub async fn start_tls(tls: ServerTls) -> Result<RedisServer, HarnessError> {
        let bin = binary::redis_server().await?;
        let flavor = Redis {
            appendonly: false,
            cluster_bus_port: None,
            tls: Some(tls),
            replica_of: None,
            acl: None,
        };
        let inner = Managed::start(flavor, bin).await?;
        Ok(RedisServer { inner })
    }

    /// Starts an empty Redis Cluster node (`cluster-enabled yes`, no slots, known to no other
    /// node yet), with its cluster bus on a free port of its own: the default, port + 10000, may
    /// be taken or beyond 65535. [`crate::RedisCluster`] joins such nodes. With `tls` the node
    /// serves TLS only, its cluster bus included.
    pub(crate) async fn start_cluster_node(
        tls: Option<ServerTls>,
    ) -> Result<RedisServer, HarnessError> {
        let bin = binary::redis_server().await?;
        let flavor = Redis {
            appendonly: false,
            cluster_bus_port: Some(free_port()?),
            tls,
            replica_of: None,
            acl: None,
        };
        let inner = Managed::start(flavor, bin).await?;
        Ok(RedisServer { inner })
    }

    /// Starts a replica of the server on loopback port `primary` (`--replicaof`). It answers
    /// `PING` before its first sync has finished; [`crate::RedisSentinel`] waits for the link.
    pub(crate) async fn start_replica_of(
        primary: u16,
        options: RedisOptions,
    ) -> Result<RedisServer, HarnessError> {
        let bin = binary::redis_server().await?;
        let flavor = Redis {
            appendonly: options.appendonly,
            cluster_bus_port: None,
            tls: None,
            replica_of: Some(primary),
            acl: None,
        };
        let inner = Managed::start(flavor, bin).await?;
        Ok(RedisServer { inner })
    }

    /// The cluster bus port of a cluster node, `None` for a plain server.
    pub fn cluster_bus_port(&self) -> Option<u16> {
        self.inner.flavor().cluster_bus_port
    }

    /// A client for this server: over TLS with the harness's client certificate when it was
    /// started with TLS.
    pub(crate) fn client(&self) -> io::Result<redis::Client> {
        match &self.inner.flavor().tls {
            Some(tls) => tls_client(self.port(), tls),
            None => redis::Client::open(self.admin_url()).map_err(io::Error::other),
        }
    }

    /// [`RedisServer::url`] with the login of [`HARNESS_ADMIN`] for a server started with an
    /// ACL file (every key and command); the plain URL otherwise.
    pub fn admin_url(&self) -> String {
        match self.inner.flavor().acl.as_deref() {
            Some(Acl {
                admin_password: password,
                ..
            }) => format!(
                "redis://{HARNESS_ADMIN}:{password}@127.0.0.1:{}/",
                self.port()
            ),
            None => self.url(),
        }
    }

    /// The client URL, `redis://127.0.0.1:PORT/` (`rediss://` for a server started with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.inner.flavor().tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port())
    }

    /// The port (stays the same across restarts).
    pub fn port(&self) -> u16 {
        self.inner.port()
    }

    /// The process id of the running server, `None` after [`RedisServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }

    /// The server's working directory (survives restarts, removed on drop).
    pub fn dir(&self) -> &Path {
        self.inner.dir()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.inner.log_path()
    }

    /// Kills the server and starts it again on the same port and directory. Data survives only
    /// with [`RedisOptions::appendonly`].
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        self.start_again().await
    }

    /// SIGKILLs the server and reaps it. Idempotent.
    pub fn kill(&mut self) {
        self.inner.kill();
    }

    /// Starts the server again after [`RedisServer::kill`], on the same port and directory.
    /// (Kills it first if it is still running.)
    pub async fn start_again(&mut self) -> Result<(), HarnessError> {
        self.inner.start_again().await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.inner.kill();
    }
}

/// Redis specifics: arguments and the readiness probe.
#[derive(Debug)]
struct Redis {
    /// [`RedisOptions::appendonly`].
    appendonly: bool,
    /// Set for a Redis Cluster node: its cluster bus port.
    cluster_bus_port: Option<u16>,
    /// Set for a server that serves TLS only, on the port a plain server would listen on.
    tls: Option<ServerTls>,
    /// Set for a replica: the loopback port of its primary.
    replica_of: Option<u16>,
    /// Set with [`RedisOptions::acl_file`] (boxed: most servers have none).
    acl: Option<Box<Acl>>,
}

/// The users a server loads, and the password of [`HARNESS_ADMIN`] among them.
#[derive(Debug)]
struct Acl {
    file: PathBuf,
    admin_password: String,
}

impl Flavor for Redis {
    const SERVER: &'static str = "redis-server";

    fn args(&self, port: u16, dir: &Path, log: &Path) -> Vec<OsString> {
        let appendonly = if self.appendonly { "yes" } else { "no" };
        let mut args: Vec<OsString> = ["--bind", "127.0.0.1"]
            .into_iter()
            .chain(["--save", "", "--appendonly", appendonly])
            .map(OsString::from)
            .collect();
        match &self.tls {
            None => args.extend(["--port".into(), port.to_string().into()]),
            Some(tls) => args.extend(tls_args(port, tls)),
        }
        args.extend([
            "--dir".into(),
            dir.as_os_str().to_owned(),
            "--logfile".into(),
            log.as_os_str().to_owned(),
        ]);
        if self.acl.is_some() {
            args.extend(["--aclfile".into(), dir.join(ACL_COPY).into_os_string()]);
        }
        if let Some(primary) = self.replica_of {
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary.to_string().into(),
            ]);
        }
        if let Some(bus_port) = self.cluster_bus_port {
            // nodes.conf lands in `dir`, so every node keeps its own cluster state.
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus_port.to_string(),
                ]
                .into_iter()
                .chain(["--cluster-node-timeout", "2000"])
                .map(OsString::from),
            );
            if let Some(tls) = &self.tls {
                // The bus over TLS; a node dials the others with the client certificate (its
                // server certificate is not one a verifying peer accepts from a client).
                args.extend([
                    "--tls-cluster".into(),
                    "yes".into(),
                    "--tls-client-cert-file".into(),
                    tls.client_cert_file.clone().into_os_string(),
                    "--tls-client-key-file".into(),
                    tls.client_key_file.clone().into_os_string(),
                ]);
            }
        }
        args
    }

    /// The ACL copy: the given file's users, then [`HARNESS_ADMIN`] (rewritten before every
    /// start; Redis itself never writes it back).
    fn prepare(&self, dir: &Path) -> io::Result<()> {
        let Some(acl) = self.acl.as_deref() else {
            return Ok(());
        };
        let mut users = std::fs::read_to_string(&acl.file)?;
        if !users.is_empty() && !users.ends_with('\n') {
            users.push('\n');
        }
        let password = &acl.admin_password;
        users.push_str(&format!(
            "user {HARNESS_ADMIN} on >{password} ~* &* +@all\n"
        ));
        std::fs::write(dir.join(ACL_COPY), users)
    }

    /// Sends `PING` and `CONFIG GET logfile`: ready when the answer is `+PONG` and our own log
    /// file (which tells our server from another one on the same port). While Redis is still
    /// loading its append-only file it answers `-LOADING`, which counts as not ready. A TLS
    /// server is asked the same by a TLS client. A server with an ACL file is asked as
    /// [`HARNESS_ADMIN`] (see there why).
    async fn probe(&self, port: u16, log: &Path) -> io::Result<bool> {
        if let Some(tls) = &self.tls {
            return probe_tls(port, log, tls).await;
        }
        let log = log.to_string_lossy();
        let (login, logged_in) = match self.acl.as_deref() {
            Some(Acl {
                admin_password: password,
                ..
            }) => (format!("AUTH {HARNESS_ADMIN} {password}\r\n"), "+OK\r\n"),
            None => (String::new(), ""),
        };
        let expected = format!(
            "{logged_in}+PONG\r\n*2\r\n$7\r\nlogfile\r\n${}\r\n{log}\r\n",
            log.len()
        );
        let mut stream = connect(port).await?;
        let request = format!("{login}PING\r\nCONFIG GET logfile\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |b| {
            b.len() >= expected.len() || b.starts_with(b"-")
        })
        .await?;
        Ok(buf.starts_with(expected.as_bytes()))
    }
}

/// 16 random bytes from the operating system, hex.
fn new_password() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// TLS on `port` and no plain port: a client that does not speak TLS cannot get in.
fn tls_args(port: u16, tls: &ServerTls) -> Vec<OsString> {
    let auth_clients = if tls.verify_clients { "yes" } else { "no" };
    let mut args: Vec<OsString> = ["--port", "0", "--tls-port", &port.to_string()]
        .into_iter()
        .map(OsString::from)
        .collect();
    args.extend([
        "--tls-cert-file".into(),
        tls.cert_file.clone().into_os_string(),
        "--tls-key-file".into(),
        tls.key_file.clone().into_os_string(),
        "--tls-ca-cert-file".into(),
        tls.ca_file.clone().into_os_string(),
        "--tls-auth-clients".into(),
        auth_clients.into(),
    ]);
    args
}

/// A TLS client for the server on `port`, presenting the client certificate of `tls`.
fn tls_client(port: u16, tls: &ServerTls) -> io::Result<redis::Client> {
    let certificates = redis::TlsCertificates {
        client_tls: Some(redis::ClientTlsConfig {
            client_cert: std::fs::read(&tls.client_cert_file)?,
            client_key: std::fs::read(&tls.client_key_file)?,
        }),
        root_cert: Some(std::fs::read(&tls.ca_file)?),
    };
    redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}/"), certificates)
        .map_err(io::Error::other)
}

/// [`Redis::probe`] over TLS, presenting the client certificate of `tls`.
async fn probe_tls(port: u16, log: &Path, tls: &ServerTls) -> io::Result<bool> {
    let mut conn = tls_client(port, tls)?
        .get_multiplexed_async_connection()
        .await
        .map_err(io::Error::other)?;
    let (pong, logfile): (String, Vec<String>) = redis::pipe()
        .cmd("PING")
        .cmd("CONFIG")
        .arg("GET")
        .arg("logfile")
        .query_async(&mut conn)
        .await
        .map_err(io::Error::other)?;
    Ok(pong == "PONG" && logfile.get(1).map(String::as_str) == Some(&*log.to_string_lossy()))
}
