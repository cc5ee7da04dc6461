//! One managed server child process: free port, temp dir, spawn, readiness polling, kill.
//! The server-specific parts (arguments, readiness probe) come from a [`Flavor`].

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::HarnessError;

/// How often readiness is polled.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// How long a server may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// How long one readiness probe may take.
const PROBE_WITHIN: Duration = Duration::from_millis(500);
/// How many times a server that exits during start-up (port taken) is started again.
const ATTEMPTS: u32 = 5;
/// How many log lines an error shows.
const LOG_TAIL_LINES: usize = 25;
/// Largest probe reply we read before giving up on it.
const MAX_REPLY: usize = 64 * 1024;

/// What differs between servers.
pub(crate) trait Flavor {
    /// The binary name, for messages.
    const SERVER: &'static str;

    /// Command-line arguments for a start on `port`, keeping state in `dir`, logging to `log`.
    fn args(&self, port: u16, dir: &Path, log: &Path) -> Vec<OsString>;

    /// Files the server needs in `dir` before it starts (a config file it rewrites, say).
    /// Called before every start, so it must keep what an earlier run left there.
    fn prepare(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    /// One readiness probe: `Ok(true)` once *this* server (not another process that happens to
    /// listen on `port`) answers its protocol.
    async fn probe(&self, port: u16, log: &Path) -> io::Result<bool>;
}

/// A server child process with its port and temporary directory.
#[derive(Debug)]
pub(crate) struct Managed<F> {
    flavor: F,
    bin: PathBuf,
    /// Holds the store and the log; removed on drop (after the child is gone).
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl<F: Flavor> Managed<F> {
    /// Starts the server on a free port, trying new ports if it exits during start-up.
    pub(crate) async fn start(flavor: F, bin: PathBuf) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("switchyard-{}-", F::SERVER))
            .tempdir()?;
        let mut managed = Managed {
            flavor,
            bin,
            dir,
            port: 0,
            child: None,
        };
        let mut attempt = 1;
        loop {
            managed.port = free_port()?;
            match managed.launch().await {
                Ok(()) => return Ok(managed),
                Err(e @ HarnessError::Exited { .. }) if attempt < ATTEMPTS => {
                    tracing::debug!(server = F::SERVER, attempt, error = %e, "retrying on a new port");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Kills the server if it runs, then starts it again on the same port and directory.
    pub(crate) async fn start_again(&mut self) -> Result<(), HarnessError> {
        self.kill();
        let mut attempt = 1;
        loop {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(e @ HarnessError::Exited { .. }) if attempt < ATTEMPTS => {
                    tracing::debug!(server = F::SERVER, attempt, error = %e, "retrying same port");
                    tokio::time::sleep(POLL_EVERY * 5 * attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// SIGKILLs the child and reaps it. Does nothing when no child runs.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            // Fails only if the child already exited; `wait` reaps it either way.
            let _ = child.kill();
            let status = child.wait();
            tracing::debug!(server = F::SERVER, pid, ?status, "killed");
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn flavor(&self) -> &F {
        &self.flavor
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", F::SERVER))
    }

    /// Spawns the child on `self.port` and waits until it is ready; kills it on failure.
    async fn launch(&mut self) -> Result<(), HarnessError> {
        let log = self.log_path();
        self.flavor.prepare(self.dir.path())?;
        let log_file = OpenOptions::new().create(true).append(true).open(&log)?;
        let child = Command::new(&self.bin)
            .args(self.flavor.args(self.port, self.dir.path(), &log))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                server: F::SERVER,
                source,
            })?;
        tracing::debug!(
            server = F::SERVER,
            pid = child.id(),
            port = self.port,
            "spawned"
        );
        self.child = Some(child);
        let ready = self.wait_ready().await;
        if ready.is_err() {
            self.kill();
        }
        ready
    }

    /// Polls the probe until it succeeds, the child exits, or [`READY_WITHIN`] passes.
    async fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let started = Instant::now();
        let log = self.log_path();
        loop {
            if let Some(status) = self.exit_status()? {
                return Err(HarnessError::Exited {
                    server: F::SERVER,
                    status: status.to_string(),
                    log_tail: log_tail(&log),
                });
            }
            let probe = tokio::time::timeout(PROBE_WITHIN, self.flavor.probe(self.port, &log));
            if let Ok(Ok(true)) = probe.await {
                tracing::debug!(server = F::SERVER, port = self.port, after = ?started.elapsed(), "ready");
                return Ok(());
            }
            if started.elapsed() >= READY_WITHIN {
                return Err(HarnessError::NotReady {
                    server: F::SERVER,
                    after: started.elapsed(),
                    log_tail: log_tail(&log),
                });
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    fn exit_status(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child.try_wait(),
            None => Err(io::Error::other("server child is not running")),
        }
    }
}

impl<F> Drop for Managed<F> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // To read a failed test's server logs: the directory stays, and its path is logged.
        if std::env::var_os(KEEP_DIRS_VAR).is_some() {
            self.dir.disable_cleanup(true);
            tracing::info!(dir = %self.dir.path().display(), "server directory kept");
        }
    }
}

/// Set (to anything) to keep every server's directory (store, config, log) after the test.
pub const KEEP_DIRS_VAR: &str = "SWITCHYARD_KEEP_SERVER_DIRS";

/// A port that was free a moment ago (the listener is dropped before returning).
pub fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// The last lines of the log file, or a note that it could not be read.
fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// Connects to the server on loopback.
pub(crate) async fn connect(port: u16) -> io::Result<TcpStream> {
    TcpStream::connect(("127.0.0.1", port)).await
}

/// Reads from `stream` into `buf` until `done(buf)` holds.
pub(crate) async fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    while !done(buf) {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REPLY {
            return Err(io::Error::other("probe reply too long"));
        }
    }
    Ok(())
}

/// Whether `haystack` contains `needle`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
