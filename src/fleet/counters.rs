//! What a window of load cost the servers: NATS messages and bytes (from the monitoring
//! endpoint's `/varz`), Redis commands (`INFO commandstats`, which counts the commands scripts
//! run too) and CPU time of nats-server, redis-server and this process.
//!
//! Counters are cumulative, so a window is two [`Snapshot`]s and their difference ([`Usage`]),
//! divided by the window's lifecycles or seconds ([`Cost`]). CPU time is read as time, not as
//! the percentage `/varz` offers: a percentage sampled at two instants says nothing about the
//! window between them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use switchyard_client::error::{Error, ErrorKind};

/// How long one counter read may take before it is given up.
const READ_WITHIN: Duration = Duration::from_secs(5);
/// Commands shown in a breakdown.
const TOP_COMMANDS: usize = 16;
/// Clock ticks per second in `/proc/<pid>/stat`. The kernel fixes USER_HZ at 100 for user
/// space on every mainstream architecture; reading it would need libc's `sysconf`.
const USER_HZ: f64 = 100.0;

/// Where the counters are read.
pub(crate) struct Probes {
    /// `http://host:port` of nats-server's monitoring endpoint; without it NATS figures are
    /// left out.
    pub(crate) nats_monitor: Option<String>,
    /// nats-server's process id when it runs on this machine (its CPU time is read from /proc).
    pub(crate) nats_pid: Option<u32>,
    pub(crate) redis: redis::aio::MultiplexedConnection,
}

/// NATS server totals since its start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NatsCounters {
    pub(crate) in_msgs: u64,
    pub(crate) out_msgs: u64,
    pub(crate) in_bytes: u64,
    pub(crate) out_bytes: u64,
}

/// One reading of every counter; `None` where a source is not available.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) nats: Option<NatsCounters>,
    pub(crate) nats_cpu_ms: Option<f64>,
    /// Calls per Redis command.
    pub(crate) redis_calls: BTreeMap<String, u64>,
    pub(crate) redis_cpu_ms: Option<f64>,
    pub(crate) process_cpu_ms: Option<f64>,
}

impl Probes {
    /// Reads every counter. A source that cannot be read is left out (with a warning) rather
    /// than failing the benchmark; Redis, which every run has, must answer.
    pub(crate) async fn snapshot(&mut self) -> Result<Snapshot, Error> {
        let nats = match &self.nats_monitor {
            Some(url) => warn_none("NATS /varz", read_varz(url).await),
            None => None,
        };
        let stats: String = redis_info(&mut self.redis, "commandstats").await?;
        let cpu: String = redis_info(&mut self.redis, "cpu").await?;
        Ok(Snapshot {
            nats,
            nats_cpu_ms: self.nats_pid.and_then(|pid| proc_cpu_ms(&pid.to_string())),
            redis_calls: parse_commandstats(&stats),
            redis_cpu_ms: redis_cpu_ms(&cpu),
            process_cpu_ms: proc_cpu_ms("self"),
        })
    }
}

fn warn_none<T>(what: &str, result: Result<T, Error>) -> Option<T> {
    result
        .map_err(|e| tracing::warn!(error = %e, "{what} not read; its figures are left out"))
        .ok()
}

async fn redis_info(
    conn: &mut redis::aio::MultiplexedConnection,
    section: &str,
) -> Result<String, Error> {
    Ok(redis::cmd("INFO").arg(section).query_async(conn).await?)
}

/// Calls per command from `INFO commandstats` lines such as
/// `cmdstat_evalsha:calls=12,usec=80,usec_per_call=6.67,rejected_calls=0,failed_calls=0`.
pub(crate) fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// A `name:value` number from an `INFO` reply.
pub(crate) fn info_number(info: &str, name: &str) -> Option<f64> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// redis-server's CPU time (every thread, user + system) from `INFO cpu`, in milliseconds.
pub(crate) fn redis_cpu_ms(info: &str) -> Option<f64> {
    Some((info_number(info, "used_cpu_sys")? + info_number(info, "used_cpu_user")?) * 1000.0)
}

/// User + system CPU time of a process (all its threads) from `/proc/<pid>/stat`, in ms.
fn proc_cpu_ms(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat_cpu_ms(&stat)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in ms. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted after its last `)`.
pub(crate) fn parse_proc_stat_cpu_ms(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 1000.0 / USER_HZ)
}

/// The message and byte totals of nats-server's `/varz`.
pub(crate) fn parse_varz(body: &str) -> Result<NatsCounters, Error> {
    let v: serde_json::Value = serde_json::from_str(body)?;
    let field = |name: &str| {
        v[name].as_u64().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("/varz has no number {name}"),
            )
        })
    };
    Ok(NatsCounters {
        in_msgs: field("in_msgs")?,
        out_msgs: field("out_msgs")?,
        in_bytes: field("in_bytes")?,
        out_bytes: field("out_bytes")?,
    })
}

async fn read_varz(monitor: &str) -> Result<NatsCounters, Error> {
    let body = tokio::time::timeout(READ_WITHIN, http_get(monitor, "/varz"))
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                "NATS monitoring endpoint did not answer",
            )
        })??;
    parse_varz(&body)
}

/// A plain `GET` over HTTP/1.0, so the server answers with the whole body and closes (no
/// chunked encoding to undo); a new dependency would be more than this needs.
async fn http_get(base: &str, path: &str) -> Result<String, Error> {
    let authority = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let io = |e| Error::with_source(ErrorKind::Nats, format!("GET {base}{path} failed"), e);
    let mut stream = TcpStream::connect(&authority).await.map_err(io)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(io)?;
    http_body(&String::from_utf8_lossy(&response))
        .map(str::to_string)
        .ok_or_else(|| Error::new(ErrorKind::Nats, format!("GET {base}{path}: no 200 answer")))
}

/// The body of a `200` response.
pub(crate) fn http_body(response: &str) -> Option<&str> {
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then_some(body)
}

/// What happened between two snapshots.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Usage {
    pub(crate) nats_msgs: Option<u64>,
    pub(crate) nats_bytes: Option<u64>,
    /// Calls per Redis command, the counters' own `INFO` calls left out.
    pub(crate) redis_calls: BTreeMap<String, u64>,
    pub(crate) nats_cpu_ms: Option<f64>,
    pub(crate) redis_cpu_ms: Option<f64>,
    pub(crate) process_cpu_ms: Option<f64>,
}

impl Usage {
    /// The counters' growth from `before` to `after`. A counter that went down (the server was
    /// restarted in between) counts as 0 rather than wrapping around.
    pub(crate) fn between(before: &Snapshot, after: &Snapshot) -> Usage {
        let nats = before.nats.zip(after.nats);
        let redis_calls = after
            .redis_calls
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(name, n)| {
                let was = before.redis_calls.get(name).copied().unwrap_or(0);
                (name.clone(), n.saturating_sub(was))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        Usage {
            nats_msgs: nats
                .map(|(b, a)| (a.in_msgs + a.out_msgs).saturating_sub(b.in_msgs + b.out_msgs)),
            nats_bytes: nats
                .map(|(b, a)| (a.in_bytes + a.out_bytes).saturating_sub(b.in_bytes + b.out_bytes)),
            redis_calls,
            nats_cpu_ms: grown(before.nats_cpu_ms, after.nats_cpu_ms),
            redis_cpu_ms: grown(before.redis_cpu_ms, after.redis_cpu_ms),
            process_cpu_ms: grown(before.process_cpu_ms, after.process_cpu_ms),
        }
    }

    pub(crate) fn redis_commands(&self) -> u64 {
        self.redis_calls.values().sum()
    }

    /// Every figure divided by `by` (lifecycles, or seconds); `None` when `by` is not positive.
    pub(crate) fn per(&self, by: f64) -> Option<Cost> {
        if by <= 0.0 || by.is_nan() {
            return None;
        }
        let div = |v: f64| round4(v / by);
        let mut top: Vec<(&String, &u64)> = self.redis_calls.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        Some(Cost {
            nats_msgs: self.nats_msgs.map(|n| div(n as f64)),
            nats_bytes: self.nats_bytes.map(|n| div(n as f64)),
            redis_commands: div(self.redis_commands() as f64),
            redis_top_commands: top
                .into_iter()
                .take(TOP_COMMANDS)
                .map(|(command, n)| CommandCalls {
                    command: command.clone(),
                    calls: div(*n as f64),
                })
                .collect(),
            nats_cpu_ms: self.nats_cpu_ms.map(div),
            redis_cpu_ms: self.redis_cpu_ms.map(div),
            process_cpu_ms: self.process_cpu_ms.map(div),
        })
    }
}

fn grown(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some((after? - before?).max(0.0))
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Server work divided by lifecycles (cost of one) or by seconds (cost of a second). A figure
/// is absent (`null`) when its source was not available.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cost {
    /// NATS messages, in + out as nats-server counts them (client publishes, deliveries,
    /// JetStream API calls, acks).
    pub nats_msgs: Option<f64>,
    /// NATS payload bytes, in + out.
    pub nats_bytes: Option<f64>,
    /// Redis commands, including the ones Lua scripts run (`INFO commandstats`).
    pub redis_commands: f64,
    /// The most called Redis commands.
    pub redis_top_commands: Vec<CommandCalls>,
    /// nats-server CPU time (user + system), ms; only when it runs on this machine.
    pub nats_cpu_ms: Option<f64>,
    /// redis-server CPU time (user + system, every thread), ms.
    pub redis_cpu_ms: Option<f64>,
    /// This process's CPU time, ms: the in-process optimizer replicas, the simulated agents
    /// and the load generator together.
    pub process_cpu_ms: Option<f64>,
}

/// Calls of one Redis command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandCalls {
    pub command: String,
    pub calls: f64,
}

impl Cost {
    /// One line per kind of figure, `unit` naming the divisor ("lifecycle", "s").
    pub fn render(&self, unit: &str) -> String {
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.digits$}"))
        };
        let top: Vec<String> = self
            .redis_top_commands
            .iter()
            .map(|c| format!("{} {:.2}", c.command, c.calls))
            .collect();
        format!(
            "  NATS msgs/{unit} {} · NATS bytes/{unit} {}\n  Redis commands/{unit} {:.2} ({})\n  CPU ms/{unit}: nats-server {} · redis-server {} · this process {}",
            opt(self.nats_msgs, 2),
            opt(self.nats_bytes, 0),
            self.redis_commands,
            top.join(", "),
            opt(self.nats_cpu_ms, 3),
            opt(self.redis_cpu_ms, 3),
            opt(self.process_cpu_ms, 3),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMANDSTATS: &str = "# Commandstats\r\n\
        cmdstat_evalsha:calls=120,usec=800,usec_per_call=6.67,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_hincrby:calls=240,usec=100,usec_per_call=0.42,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setname:calls=2,usec=1,usec_per_call=0.50,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=7,usec=300,usec_per_call=42.86,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn commandstats_calls_per_command() {
        let calls = parse_commandstats(COMMANDSTATS);
        assert_eq!(calls.len(), 4);
        assert_eq!(calls["evalsha"], 120);
        assert_eq!(calls["hincrby"], 240);
        assert_eq!(calls["client|setname"], 2);
        assert!(parse_commandstats("# Commandstats\r\n").is_empty());
    }

    #[test]
    fn redis_cpu_is_user_plus_system_in_ms() {
        let info = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\nused_cpu_sys_children:9.0\r\n";
        assert_eq!(redis_cpu_ms(info), Some(3750.0));
        assert_eq!(info_number(info, "used_cpu_sys_children"), Some(9.0));
        assert_eq!(redis_cpu_ms("# CPU\r\n"), None);
    }

    #[test]
    fn proc_stat_cpu_skips_a_command_name_with_spaces() {
        let stat = "4242 (nats (x) y) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 9 0 100";
        assert_eq!(parse_proc_stat_cpu_ms(stat), Some(2000.0));
        assert_eq!(parse_proc_stat_cpu_ms("garbage"), None);
    }

    #[test]
    fn varz_totals_and_http_body() {
        let body = r#"{"in_msgs":10,"out_msgs":20,"in_bytes":300,"out_bytes":400,"cpu":12.5}"#;
        let c = parse_varz(body).expect("varz parses");
        assert_eq!(
            (c.in_msgs, c.out_msgs, c.in_bytes, c.out_bytes),
            (10, 20, 300, 400)
        );
        assert!(parse_varz(r#"{"in_msgs":1}"#).is_err());
        let response = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{}";
        assert_eq!(http_body(response), Some("{}"));
        assert_eq!(http_body("HTTP/1.0 404 Not Found\r\n\r\nnope"), None);
    }

    fn snapshot(msgs: u64, evalsha: u64, info: u64, cpu: f64) -> Snapshot {
        Snapshot {
            nats: Some(NatsCounters {
                in_msgs: msgs,
                out_msgs: msgs * 2,
                in_bytes: msgs * 100,
                out_bytes: msgs * 200,
            }),
            nats_cpu_ms: Some(cpu),
            redis_calls: [("evalsha".to_string(), evalsha), ("info".to_string(), info)].into(),
            redis_cpu_ms: Some(cpu * 2.0),
            process_cpu_ms: None,
        }
    }

    #[test]
    fn usage_is_the_growth_between_snapshots_without_info() {
        let usage = Usage::between(&snapshot(10, 50, 3, 100.0), &snapshot(110, 250, 9, 300.0));
        assert_eq!(usage.nats_msgs, Some(300));
        assert_eq!(usage.nats_bytes, Some(30_000));
        assert_eq!(
            usage.redis_commands(),
            200,
            "INFO calls are the probe's, not the load's"
        );
        assert_eq!(usage.nats_cpu_ms, Some(200.0));
        assert_eq!(usage.redis_cpu_ms, Some(400.0));
        assert_eq!(
            usage.process_cpu_ms, None,
            "absent on either side stays absent"
        );
    }

    #[test]
    fn usage_never_goes_negative_and_divides() {
        let usage = Usage::between(&snapshot(110, 250, 9, 300.0), &snapshot(10, 50, 3, 100.0));
        assert_eq!(usage.nats_msgs, Some(0));
        assert_eq!(usage.nats_cpu_ms, Some(0.0));
        let usage = Usage::between(&snapshot(0, 0, 0, 0.0), &snapshot(100, 300, 1, 50.0));
        let cost = usage.per(100.0).expect("positive divisor");
        assert_eq!(cost.nats_msgs, Some(3.0));
        assert_eq!(cost.redis_commands, 3.0);
        assert_eq!(cost.redis_top_commands[0].command, "evalsha");
        assert_eq!(cost.nats_cpu_ms, Some(0.5));
        assert!(usage.per(0.0).is_none());
    }
}
