//! `nats-server` with JetStream as a child process.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;

use super::pki::ServerTls;
use super::process::{Flavor, Managed, connect, contains, free_port, read_until};
use super::{HarnessError, binary};

/// A `nats-server` with JetStream on `127.0.0.1`, a free port and its own temporary store
/// directory. Dropping it kills the server.
#[derive(Debug)]
pub struct NatsServer {
    inner: Managed<Nats>,
}

impl NatsServer {
    /// Starts `nats-server -js` (version >= 2.12) on a free loopback port with its own store dir,
    /// and returns once it accepts clients.
    pub async fn start() -> Result<NatsServer, HarnessError> {
        let bin = binary::nats_server().await?;
        let inner = Managed::start(Nats::unique(), bin).await?;
        Ok(NatsServer { inner })
    }

    /// Starts `nats-server -js` as [`NatsServer::start`] does, but accepting only TLS clients
    /// with `tls`'s certificate (and, with [`ServerTls::verify_clients`], only clients that
    /// present a certificate signed by its CA). [`NatsServer::url`] is then `tls://...`.
    pub async fn start_tls(tls: ServerTls) -> Result<NatsServer, HarnessError> {
        let bin = binary::nats_server().await?;
        let mut flavor = Nats::unique();
        flavor.tls = Some(tls);
        let inner = Managed::start(flavor, bin).await?;
        Ok(NatsServer { inner })
    }

    /// Starts `nats-server -js` as [`NatsServer::start`] does, secured by `auth.config_file`
    /// (the include file `switchyard auth init` writes: operator, accounts, resolver), so only
    /// clients with credentials from that trust chain get in. Readiness is probed by connecting
    /// with `auth.probe_creds`.
    pub async fn start_secured(auth: NatsAuth) -> Result<NatsServer, HarnessError> {
        let bin = binary::nats_server().await?;
        let mut flavor = Nats::unique();
        flavor.auth = Some(auth);
        let inner = Managed::start(flavor, bin).await?;
        Ok(NatsServer { inner })
    }

    /// Asks the running server to reload its configuration (SIGHUP), as
    /// `nats-server --signal reload` does; a secured server re-reads its trust chain.
    pub fn reload(&self) -> Result<(), HarnessError> {
        let not_running = || io::Error::other("nats-server is not running");
        let pid = self.pid().ok_or_else(not_running)?;
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(not_running().into())
        }
    }

    /// The client URL, `nats://127.0.0.1:PORT` (`tls://` for a server started with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.inner.flavor().tls.is_some() {
            "tls"
        } else {
            "nats"
        };
        format!("{scheme}://127.0.0.1:{}", self.port())
    }

    /// The client port (stays the same across restarts).
    pub fn port(&self) -> u16 {
        self.inner.port()
    }

    /// The HTTP monitoring endpoint (`/varz`, `/connz`, `/jsz`, ...), `http://127.0.0.1:PORT`.
    /// The port is picked afresh at every start, so it may change across restarts.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.flavor().monitor_port())
    }

    /// The server's name (`server_name`), as JetStream reports stream and meta leaders.
    pub fn server_name(&self) -> &str {
        &self.inner.flavor().name
    }

    /// The HTTP monitoring port of the current start (0 when monitoring is off).
    pub(crate) fn monitor_port(&self) -> u16 {
        self.inner.flavor().monitor_port()
    }

    /// The process id of the running server, `None` after [`NatsServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }

    /// The JetStream store directory (survives restarts, removed on drop).
    pub fn store_dir(&self) -> PathBuf {
        store_dir(self.inner.dir())
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.inner.log_path()
    }

    /// Kills the server and starts it again on the same port with the same store; JetStream
    /// data survives.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        self.start_again().await
    }

    /// SIGKILLs the server and reaps it. Idempotent.
    pub fn kill(&mut self) {
        self.inner.kill();
    }

    /// Starts the server again after [`NatsServer::kill`], on the same port with the same store.
    /// (Kills it first if it is still running.)
    pub async fn start_again(&mut self) -> Result<(), HarnessError> {
        self.inner.start_again().await
    }
}

impl NatsServer {
    /// Starts one node of a cluster: as [`NatsServer::start`], plus a route listener on
    /// `route.port` that solicits routes to the other nodes.
    pub(crate) async fn start_node(route: Route) -> Result<NatsServer, HarnessError> {
        let bin = binary::nats_server().await?;
        let mut flavor = Nats::unique();
        flavor.route = Some(route);
        let inner = Managed::start(flavor, bin).await?;
        Ok(NatsServer { inner })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.inner.kill();
    }
}

/// NATS specifics: arguments and the readiness probe.
#[derive(Debug)]
struct Nats {
    /// Unique per server, so the probe can tell our server from another one on the same port.
    name: String,
    /// The HTTP monitoring port of the current start (0 before the first).
    monitor_port: AtomicU16,
    /// Set for a cluster node; fixed for its life so the other nodes find it after a restart.
    route: Option<Route>,
    /// Set for a server that accepts TLS clients only.
    tls: Option<ServerTls>,
    /// Set for a server that accepts only clients with credentials.
    auth: Option<NatsAuth>,
}

/// What a secured server loads and how the harness proves it is up.
#[derive(Debug, Clone)]
pub struct NatsAuth {
    /// A nats-server configuration file with the operator, accounts and resolver.
    pub config_file: PathBuf,
    /// A `.creds` file from that trust chain, used by the readiness probe.
    pub probe_creds: PathBuf,
}

/// A cluster node's route settings.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// The cluster's name, shared by its nodes and unique per cluster (so two clusters started by
    /// parallel tests can never join each other).
    pub(crate) cluster_name: String,
    /// This node's route (cluster) port.
    pub(crate) port: u16,
    /// The route ports of the other nodes.
    pub(crate) peers: Vec<u16>,
}

impl Route {
    fn args(&self) -> Vec<OsString> {
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect();
        let mut args: Vec<OsString> = vec![
            "--cluster".into(),
            format!("nats://127.0.0.1:{}", self.port).into(),
            "--cluster_name".into(),
            self.cluster_name.clone().into(),
        ];
        if !peers.is_empty() {
            args.extend(["--routes".into(), peers.join(",").into()]);
        }
        args
    }
}

impl Nats {
    fn unique() -> Nats {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Nats {
            name: format!("switchyard-test-{}-{n}", std::process::id()),
            monitor_port: AtomicU16::new(0),
            route: None,
            tls: None,
            auth: None,
        }
    }

    fn monitor_port(&self) -> u16 {
        self.monitor_port.load(Ordering::Relaxed)
    }

    /// A free port for this start's monitoring endpoint. Fresh at every start: if it was taken
    /// in the meantime the server exits and the start is retried, with another one.
    fn pick_monitor_port(&self) -> u16 {
        // Port 0 leaves monitoring off rather than failing the start over a side feature.
        let port = free_port().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no free port for nats-server monitoring; it stays off");
            0
        });
        self.monitor_port.store(port, Ordering::Relaxed);
        port
    }
}

fn secured_conf(dir: &Path) -> PathBuf {
    dir.join("secured.conf")
}

fn store_dir(dir: &Path) -> PathBuf {
    dir.join("store")
}

/// The server's TLS flags: its certificate, the CA it trusts for client certificates, and
/// whether it requires one.
fn tls_args(tls: &ServerTls) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--tls".into(),
        "--tlscert".into(),
        tls.cert_file.clone().into(),
        "--tlskey".into(),
        tls.key_file.clone().into(),
        "--tlscacert".into(),
        tls.ca_file.clone().into(),
    ];
    if tls.verify_clients {
        args.push("--tlsverify".into());
    }
    args
}

impl Nats {
    /// Connects as a TLS client (CA and client certificate from `tls`): ready when the server
    /// that answers is ours and has JetStream on.
    async fn probe_tls(&self, port: u16, tls: &ServerTls) -> io::Result<bool> {
        let client = async_nats::ConnectOptions::new()
            .add_root_certificates(tls.ca_file.clone())
            .add_client_certificate(tls.client_cert_file.clone(), tls.client_key_file.clone())
            .connect(format!("tls://127.0.0.1:{port}"))
            .await
            .map_err(io::Error::other)?;
        let info = client.server_info();
        Ok(info.server_name == self.name && info.jetstream)
    }
}

impl Nats {
    /// Connects with the probe's credentials: ready when the server that answers is ours and
    /// has JetStream on.
    async fn probe_with_creds(&self, port: u16, auth: &NatsAuth) -> io::Result<bool> {
        let client = async_nats::ConnectOptions::with_credentials_file(&auth.probe_creds)
            .await?
            .connect(format!("nats://127.0.0.1:{port}"))
            .await
            .map_err(io::Error::other)?;
        let info = client.server_info();
        Ok(info.server_name == self.name && info.jetstream)
    }
}

impl Flavor for Nats {
    const SERVER: &'static str = "nats-server";

    fn args(&self, port: u16, dir: &Path, log: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["-a", "127.0.0.1", "-p", &port.to_string(), "-js"]
            .into_iter()
            .map(OsString::from)
            .collect();
        // Always on: the benchmark reads /varz for the server's message and byte counters.
        // Bound to loopback like the client port (`-a` applies to both).
        args.extend(["-m".into(), self.pick_monitor_port().to_string().into()]);
        args.extend([
            "-sd".into(),
            store_dir(dir).into_os_string(),
            "-l".into(),
            log.as_os_str().to_owned(),
            "--server_name".into(),
            self.name.clone().into(),
        ]);
        if let Some(route) = &self.route {
            args.extend(route.args());
        }
        if let Some(tls) = &self.tls {
            args.extend(tls_args(tls));
        }
        if self.auth.is_some() {
            args.extend(["-c".into(), secured_conf(dir).into_os_string()]);
        }
        args
    }

    /// A secured server's configuration file: the trust chain included, and the server name,
    /// which a reload does not take from the command line (it would refuse the reload as a
    /// change of name).
    fn prepare(&self, dir: &Path) -> io::Result<()> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        // nats-server resolves an include relative to the including file, even an absolute
        // path; a link next to it keeps it following the original, which `auth revoke` rewrites.
        let link = dir.join("nats-auth.conf");
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link)?;
        }
        std::os::unix::fs::symlink(&auth.config_file, &link)?;
        let text = format!(
            "server_name: \"{}\"\ninclude \"nats-auth.conf\"\n",
            self.name
        );
        std::fs::write(secured_conf(dir), text)
    }

    /// Reads the `INFO` line (must name our server and have JetStream on), then does a
    /// `CONNECT` + `PING` and waits for `PONG`. A TLS server is probed by a TLS client.
    async fn probe(&self, port: u16, _log: &Path) -> io::Result<bool> {
        if let Some(tls) = &self.tls {
            return self.probe_tls(port, tls).await;
        }
        if let Some(auth) = &self.auth {
            return self.probe_with_creds(port, auth).await;
        }
        let mut stream = connect(port).await?;
        let mut buf = Vec::new();
        read_until(&mut stream, &mut buf, |b| contains(b, b"\r\n")).await?;
        let ours = format!("\"server_name\":\"{}\"", self.name);
        if !buf.starts_with(b"INFO ")
            || !contains(&buf, ours.as_bytes())
            || !contains(&buf, b"\"jetstream\":true")
        {
            return Ok(false);
        }
        stream
            .write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
            .await?;
        buf.clear();
        read_until(&mut stream, &mut buf, |b| {
            contains(b, b"PONG\r\n") || contains(b, b"-ERR")
        })
        .await?;
        Ok(contains(&buf, b"PONG\r\n"))
    }
}
