//! The documented Python agent (`tests/python/agent.py`, nats-py only) as a child process:
//! started, watched until registered, and its JSON result line read.

use std::process::Stdio;
use std::time::Duration;

use switchyard_server::state::Keys;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::{hget, within};

/// Starts `agent.py` as `agent_id` under the `coord` prefix, with `args` besides (`--nats`,
/// `--tasks`, TLS files...).
pub fn spawn_agent(agent_id: &str, args: &[&str]) -> Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/agent.py");
    Command::new("python3")
        .arg(script)
        .args(["--agent-id", agent_id, "--prefix", "coord"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts")
}

/// Waits (at most 30 s) until the optimizer applied the python agent's AGENT_REGISTER; fails at
/// once, with its stderr, if the agent exits first.
pub async fn registered(
    child: &mut Child,
    redis: &mut redis::aio::MultiplexedConnection,
    agent_id: &str,
) {
    let key = Keys::new("switchyard").agent(agent_id);
    within(30, "the python agent to register", async {
        loop {
            let status = hget(redis, &key, "status").await;
            if status.as_deref() == Some("active") {
                break;
            }
            if let Some(exit) = child.try_wait().expect("poll the agent") {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                panic!("the python agent exited ({exit}) before registering; stderr:\n{stderr}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The agent succeeded and its last stdout line is its JSON result; answers it and the line.
pub fn result_line(out: &std::process::Output) -> (serde_json::Value, String) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the python agent failed ({}); stderr:\n{stderr}\nstdout:\n{stdout}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no result line on stdout; stderr:\n{stderr}"));
    let result: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("result line is not JSON ({e}): {line}"));
    (result, line.to_string())
}
