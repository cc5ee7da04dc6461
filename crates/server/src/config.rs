//! One typed configuration, loaded from `config/default.toml` (embedded, so the documented
//! defaults are the defaults), an optional override file, then environment variables with the
//! seed's names. Validation reports every problem at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use switchyard_client::comm::ProtocolOptions;
use switchyard_client::error::{Error, ErrorKind};
use switchyard_client::transport::{NatsSecurity, parse_servers};

const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub nats: NatsConfig,
    pub redis: RedisConfig,
    pub coordination: CoordinationConfig,
    pub messages: MessagesConfig,
    pub jetstream: JetStreamConfig,
    pub metrics: MetricsConfig,
    /// The web dashboard on the metrics listener (`[dashboard]`; absent: on, read-only).
    #[serde(default)]
    pub dashboard: DashboardConfig,
    /// OpenTelemetry trace export (off unless an endpoint is set).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Tenants and their weights (fairness between tenants); absent: every tenant weighs 1.
    #[serde(default)]
    pub tenants: TenantsConfig,
    /// Shared budgets (`[[budgets]]`), none by default. Every replica writes its definitions to
    /// Redis at start (`Store::define_budgets`); the scripts apply what Redis holds.
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
}

/// `[tenants]`: how capacity is shared between tenants that compete for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsConfig {
    /// Weight by tenant id; a tenant not listed weighs 1. Every replica must be given the same
    /// table: a task's cost is fixed by the replica that takes its submit.
    #[serde(default)]
    pub weights: std::collections::BTreeMap<String, f64>,
}

impl TenantsConfig {
    /// The weight of a tenant (1 when not listed).
    pub fn weight(&self, tenant: &str) -> f64 {
        self.weights.get(tenant).copied().unwrap_or(1.0)
    }

    /// The tenant as a metric label: named in the config (or the default tenant), else `other`,
    /// so a label's values stay bounded however many tenants submit.
    pub fn label<'a>(&'a self, tenant: &'a str) -> &'a str {
        if tenant == switchyard_decision::DEFAULT_TENANT || self.weights.contains_key(tenant) {
            tenant
        } else {
            "other"
        }
    }

    fn problems(&self) -> Vec<String> {
        use switchyard_decision::fairness::{MAX_WEIGHT, MIN_WEIGHT};
        let mut out = Vec::new();
        for (tenant, weight) in &self.weights {
            if !switchyard_protocol::is_valid_id(tenant) {
                out.push(format!(
                    "tenants.weights: tenant {tenant:?} must be 1-128 of [A-Za-z0-9_.:-]"
                ));
            }
            if !(weight.is_finite() && (MIN_WEIGHT..=MAX_WEIGHT).contains(weight)) {
                out.push(format!(
                    "tenants.weights.{tenant} must be in {MIN_WEIGHT}..={MAX_WEIGHT}"
                ));
            }
        }
        out
    }
}

/// One shared budget, as an operator defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// The name tasks draw from it by: 1..=64 of `A-Z a-z 0-9 _ . -`.
    pub name: String,
    pub kind: BudgetKind,
    /// rate: units per period; concurrency: units held at once (a running task holds 1 unless
    /// its submit says otherwise).
    pub limit: u64,
    /// rate: the period of `limit`, seconds (default 60: per minute); ms resolution.
    #[serde(default)]
    pub period_s: Option<f64>,
    /// rate: the bucket size, the most drawn at once (default `limit`).
    #[serde(default)]
    pub burst: Option<u64>,
    /// rate: what it counts, the key of TASK_COMPLETE.usage that reconciles it (default
    /// `tokens`).
    #[serde(default)]
    pub unit: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    Rate,
    Concurrency,
}

/// Budget names per config: enough for any provider-and-model list, and a bound on the metric
/// labels and on the keys one grant script call may name.
pub const MAX_BUDGETS: usize = 64;

impl BudgetConfig {
    /// The period in ms (rate budgets; 60 s when not given).
    pub fn period_ms(&self) -> u64 {
        (self.period_s.unwrap_or(60.0) * 1000.0).round() as u64
    }

    pub fn burst(&self) -> u64 {
        self.burst.unwrap_or(self.limit)
    }

    pub fn unit(&self) -> &str {
        self.unit.as_deref().unwrap_or("tokens")
    }

    /// The token-bucket definition of a rate budget.
    pub fn rate(&self) -> switchyard_decision::budget::Rate {
        switchyard_decision::budget::Rate {
            limit: self.limit as i64,
            period_ms: self.period_ms() as i64,
            burst: self.burst() as i64,
        }
    }

    fn problems(&self) -> Vec<String> {
        let name = &self.name;
        let mut out = Vec::new();
        if !valid_budget_name(name) {
            out.push(format!(
                "budgets: name {name:?} must be 1..=64 of A-Z a-z 0-9 _ . -"
            ));
        }
        if self.limit == 0 {
            out.push(format!("budgets.{name}: limit must be >= 1"));
        }
        match self.kind {
            BudgetKind::Rate => out.extend(self.rate_problems()),
            BudgetKind::Concurrency => {
                if self.period_s.is_some() || self.burst.is_some() || self.unit.is_some() {
                    out.push(format!(
                        "budgets.{name}: period_s, burst and unit are for rate budgets only"
                    ));
                }
            }
        }
        out
    }

    fn rate_problems(&self) -> Vec<String> {
        let name = &self.name;
        let max = switchyard_decision::budget::MAX_SCALED as u128;
        let period = self.period_s.unwrap_or(60.0);
        let mut out = Vec::new();
        if !(period.is_finite() && (0.001..=31_536_000.0).contains(&period)) {
            out.push(format!("budgets.{name}: period_s must be 0.001..=31536000"));
        } else if (self.burst().max(self.limit) as u128) * (self.period_ms() as u128) > max {
            out.push(format!(
                "budgets.{name}: limit (and burst) times period_s in ms must be <= 2^50"
            ));
        }
        if self.burst() == 0 {
            out.push(format!("budgets.{name}: burst must be >= 1"));
        }
        let unit = self.unit();
        if unit.is_empty()
            || unit.len() > 32
            || !unit.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            out.push(format!(
                "budgets.{name}: unit must be 1..=32 of a-z A-Z 0-9 _"
            ));
        }
        out
    }
}

/// A budget name: what a task names and the last part of its Redis key.
pub fn valid_budget_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn budget_problems(budgets: &[BudgetConfig]) -> Vec<String> {
    let mut out: Vec<String> = budgets.iter().flat_map(BudgetConfig::problems).collect();
    if budgets.len() > MAX_BUDGETS {
        out.push(format!("budgets: at most {MAX_BUDGETS} may be defined"));
    }
    let mut seen = std::collections::HashSet::new();
    for b in budgets {
        if !seen.insert(b.name.as_str()) {
            out.push(format!("budgets: {:?} is defined twice", b.name));
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// One server URL or a comma-separated list of them (`nats://` or `tls://` each).
    pub url: String,
    pub subject_prefix: String,
    /// PEM certificate authorities for TLS connections; empty: the system's roots.
    pub tls_ca_file: String,
    /// PEM client certificate for servers that verify clients; set with `tls_key_file`.
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
    /// NATS `.creds` file of this process's identity (`switchyard auth`); empty: no credentials.
    pub creds_file: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// One `redis://` URL; with `cluster`, the seed nodes, comma-separated; with
    /// `sentinel_master`, the sentinels, comma-separated.
    pub url: String,
    pub key_prefix: String,
    pub response_timeout_ms: u64,
    pub connection_timeout_ms: u64,
    /// Redis Cluster: connect with the cluster client, which follows the slot map. Absent from
    /// older config files, so it defaults to off there too.
    #[serde(default)]
    pub cluster: bool,
    /// PEM certificate authorities for `rediss://`; empty: the system's roots. (The three TLS
    /// files are absent from older config files, so they default to empty there too.)
    #[serde(default)]
    pub tls_ca_file: String,
    /// PEM client certificate for a Redis that verifies clients; set with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: String,
    /// Sentinel mode when not empty: the name the sentinels know the primary by. The primary is
    /// looked up through them, and again after a failover.
    #[serde(default)]
    pub sentinel_master: String,
    /// The ACL user to log in as, with the password in `password_file`; empty: the URL's user,
    /// or none. Under Sentinel the primary gets this login, the sentinels the URL's.
    #[serde(default)]
    pub username: String,
    /// A file holding the password (its first line); empty: the URL's password, or none.
    #[serde(default)]
    pub password_file: String,
    /// Entries kept in one task's story (`switchyard task ID`), the newest; absent from older
    /// config files, so 100 there too.
    #[serde(default = "default_story_max_entries")]
    pub story_max_entries: usize,
}

fn default_story_max_entries() -> usize {
    100
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinationConfig {
    pub max_concurrent_coordinations: usize,
    pub optimization_interval_s: f64,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub dispatch_window: usize,
    pub max_candidates: usize,
    /// A grant not acknowledged by its agent within this many ms is sent again.
    pub grant_resend_ms: u64,
    pub default_strategy: String,
    pub task_retention_s: u64,
    /// A task no active agent's capacity covers: refused at submit, or held in the queue.
    /// Absent from older config files, so it defaults to hold there too.
    #[serde(default)]
    pub infeasible: InfeasiblePolicy,
    /// Default schedule-to-start limit of a task that names none (seconds; 0: none).
    #[serde(default)]
    pub queue_timeout_s: f64,
    /// Default start-to-close limit of one attempt (seconds; 0: none).
    #[serde(default)]
    pub run_timeout_s: f64,
    /// Default number of attempts of a task (1: no retry).
    #[serde(default = "one_attempt")]
    pub max_attempts: u32,
    /// Default base of the retry back-off (seconds), doubled per failed attempt.
    #[serde(default = "one_second")]
    pub retry_backoff_s: f64,
    /// Longest retry back-off (seconds), whatever a task asks for.
    #[serde(default = "one_minute")]
    pub retry_backoff_max_s: f64,
    /// Hold an agent for the head task when it fits nowhere (starvation-free head).
    #[serde(default = "default_true")]
    pub head_reservation: bool,
    /// How long a head hold lasts unless a dispatch pass renews it (ms).
    #[serde(default = "default_head_hold_ms")]
    pub head_hold_ms: u64,
}

fn one_attempt() -> u32 {
    1
}

fn one_second() -> f64 {
    1.0
}

fn one_minute() -> f64 {
    60.0
}

fn default_true() -> bool {
    true
}

fn default_head_hold_ms() -> u64 {
    10_000
}

/// What a submit does with a task that no active agent's *capacity* (free or not) covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InfeasiblePolicy {
    /// Refuse it (`infeasible`); nothing is stored.
    Refuse,
    /// Queue it; it waits, with the reason `no agent with capacity` in status, until an agent
    /// that big registers. The default: agents may register after the work is submitted.
    #[default]
    Hold,
}

impl InfeasiblePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            InfeasiblePolicy::Refuse => "refuse",
            InfeasiblePolicy::Hold => "hold",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesConfig {
    pub message_buffer_size: usize,
    pub enable_message_tracking: bool,
    pub default_message_ttl_s: u64,
    pub max_message_bytes: usize,
    /// How long a sender waits for the acknowledgments of a message that asked for them, before
    /// retrying (guaranteed) or counting them as timed out (asynchronous), in ms.
    pub ack_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamConfig {
    pub ack_wait_ms: u64,
    pub max_deliver: i64,
    pub duplicate_window_s: u64,
    pub grants_max_age_s: u64,
    pub grants_max_bytes: i64,
    pub messages_max_age_s: u64,
    /// Copies of every stream and consumer Switchyard creates: 1, 3 or 5.
    pub replicas: usize,
    /// Pause before the n-th redelivery of an event that failed for a transient reason (ms); the
    /// last entry repeats. Together they should outlast a stall of tens of seconds.
    pub redelivery_backoff_ms: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub addr: String,
}

/// `[dashboard]`: the web dashboard served on the metrics listener (and by `switchyard
/// dashboard`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Serve `/`, `/dashboard` and `/api/*` next to `/metrics` (read-only views).
    pub enabled: bool,
    /// Allow the one mutating action, replaying a dead letter (POST). Off by default: anyone who
    /// reaches the metrics port can read the dashboard, but only a deployment that turns this on
    /// lets them republish events.
    pub allow_replay: bool,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            enabled: true,
            allow_replay: false,
        }
    }
}

/// `[telemetry]`: OTLP/HTTP export of the tasks' spans (docs/operations.md "Tracing").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`http://host:4318`; `/v1/traces` is added unless the
    /// URL ends with it). Empty: no export, and no span is built.
    pub otlp_endpoint: String,
    /// Spans waiting for export at most; more are dropped (and counted), never waited for.
    pub max_queued_spans: usize,
    /// Spans per export request at most.
    pub max_export_batch: usize,
    /// How long a span may wait for its batch to fill before it is sent anyway.
    pub export_interval_ms: u64,
    /// How long one export request may take.
    pub export_timeout_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: String::new(),
            max_queued_spans: 8192,
            max_export_batch: 512,
            export_interval_ms: 1000,
            export_timeout_ms: 5000,
        }
    }
}

impl TelemetryConfig {
    /// Whether spans are exported at all.
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }

    fn problems(&self) -> Vec<&'static str> {
        let endpoint = self.otlp_endpoint.trim();
        failed(&[
            (
                endpoint.is_empty() || endpoint.starts_with("http://"),
                "telemetry.otlp_endpoint must be an http:// URL (OTLP/HTTP; for TLS, send to a local collector)",
            ),
            (
                self.max_queued_spans >= 1 && self.max_export_batch >= 1,
                "telemetry.max_queued_spans and max_export_batch must be at least 1",
            ),
            (
                self.export_interval_ms >= 1 && self.export_timeout_ms >= 1,
                "telemetry.export_interval_ms and export_timeout_ms must be at least 1",
            ),
        ])
    }
}

/// Environment variable → (table, key, what it sets, in one line for `--help`). The first six
/// are the seed's names.
const ENV_OVERRIDES: [(&str, &str, &str, &str); 39] = [
    (
        "MAX_CONCURRENT_COORDINATIONS",
        "coordination",
        "max_concurrent_coordinations",
        "event batches one replica works on at once, per lane",
    ),
    (
        "OPTIMIZATION_INTERVAL",
        "coordination",
        "optimization_interval_s",
        "seconds between maintenance passes (leases, re-dispatch, gauges)",
    ),
    (
        "LEARNING_RATE",
        "coordination",
        "learning_rate",
        "EMA weight of the newest completion in an agent's score, (0, 1]",
    ),
    (
        "MESSAGE_BUFFER_SIZE",
        "messages",
        "message_buffer_size",
        "bound of a messaging client's inbox",
    ),
    (
        "ENABLE_MESSAGE_TRACKING",
        "messages",
        "enable_message_tracking",
        "keep delivery records and drop duplicate messages",
    ),
    (
        "DEFAULT_MESSAGE_TTL",
        "messages",
        "default_message_ttl_s",
        "seconds an agent-to-agent message without a ttl lives (0: forever)",
    ),
    (
        "MESSAGE_ACK_TIMEOUT_MS",
        "messages",
        "ack_timeout_ms",
        "ms a sender waits for acknowledgments before resending",
    ),
    (
        "NATS_URL",
        "nats",
        "url",
        "nats-server(s) >= 2.12 with JetStream, comma-separated for a cluster",
    ),
    (
        "NATS_TLS_CA_FILE",
        "nats",
        "tls_ca_file",
        "PEM authorities for TLS to NATS (empty: the system's roots)",
    ),
    (
        "NATS_TLS_CERT_FILE",
        "nats",
        "tls_cert_file",
        "PEM client certificate for NATS (with NATS_TLS_KEY_FILE)",
    ),
    (
        "NATS_TLS_KEY_FILE",
        "nats",
        "tls_key_file",
        "PEM private key of NATS_TLS_CERT_FILE",
    ),
    (
        "NATS_CREDS",
        "nats",
        "creds_file",
        "this process's .creds file in a secured deployment (empty: none)",
    ),
    (
        "REDIS_URL",
        "redis",
        "url",
        "Redis (seeds with REDIS_CLUSTER, sentinels with REDIS_SENTINEL_MASTER)",
    ),
    (
        "REDIS_TLS_CA_FILE",
        "redis",
        "tls_ca_file",
        "PEM authorities for a rediss:// url (empty: the system's roots)",
    ),
    (
        "REDIS_TLS_CERT_FILE",
        "redis",
        "tls_cert_file",
        "PEM client certificate for Redis (with REDIS_TLS_KEY_FILE)",
    ),
    (
        "REDIS_TLS_KEY_FILE",
        "redis",
        "tls_key_file",
        "PEM private key of REDIS_TLS_CERT_FILE",
    ),
    (
        "METRICS_ADDR",
        "metrics",
        "addr",
        "where /metrics, /healthz and /readyz are served (port 0: any free port)",
    ),
    (
        "SUBJECT_PREFIX",
        "nats",
        "subject_prefix",
        "first token of every subject; stream names derive from it",
    ),
    (
        "REDIS_KEY_PREFIX",
        "redis",
        "key_prefix",
        "every Redis key starts with {this}: (a cluster hash tag)",
    ),
    (
        "REDIS_CLUSTER",
        "redis",
        "cluster",
        "the Redis is a Redis Cluster",
    ),
    (
        "REDIS_SENTINEL_MASTER",
        "redis",
        "sentinel_master",
        "Redis under Sentinel: the primary's name (REDIS_URL lists sentinels)",
    ),
    (
        "REDIS_USERNAME",
        "redis",
        "username",
        "Redis ACL user to log in as (with REDIS_PASSWORD_FILE)",
    ),
    (
        "REDIS_PASSWORD_FILE",
        "redis",
        "password_file",
        "file whose first line is the Redis password",
    ),
    (
        "TASK_STORY_MAX_ENTRIES",
        "redis",
        "story_max_entries",
        "entries kept in one task's story (the newest)",
    ),
    (
        "BATCH_SIZE",
        "coordination",
        "batch_size",
        "most events pulled and committed together",
    ),
    (
        "DEFAULT_STRATEGY",
        "coordination",
        "default_strategy",
        "placement strategy of tasks that name none",
    ),
    (
        "INFEASIBLE_POLICY",
        "coordination",
        "infeasible",
        "a task no agent could ever hold: hold (queue it) or refuse",
    ),
    (
        "TASK_QUEUE_TIMEOUT_S",
        "coordination",
        "queue_timeout_s",
        "default seconds a task may wait for its grant (0: no limit)",
    ),
    (
        "TASK_RUN_TIMEOUT_S",
        "coordination",
        "run_timeout_s",
        "default seconds one attempt may run (0: no limit)",
    ),
    (
        "TASK_MAX_ATTEMPTS",
        "coordination",
        "max_attempts",
        "default attempts per task, 1..=100",
    ),
    (
        "TASK_RETRY_BACKOFF_S",
        "coordination",
        "retry_backoff_s",
        "default seconds before the first retry, doubled after",
    ),
    (
        "TASK_RETRY_BACKOFF_MAX_S",
        "coordination",
        "retry_backoff_max_s",
        "longest retry back-off, seconds",
    ),
    (
        "HEAD_RESERVATION",
        "coordination",
        "head_reservation",
        "hold an agent for a head task that fits nowhere yet",
    ),
    (
        "HEAD_HOLD_MS",
        "coordination",
        "head_hold_ms",
        "ms a head hold lasts unless a dispatch pass renews it",
    ),
    (
        "JETSTREAM_REPLICAS",
        "jetstream",
        "replicas",
        "copies of every stream and consumer: 1, 3 or 5",
    ),
    // The OpenTelemetry standard names; the traces-only one (a full URL) wins over the base.
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "telemetry",
        "otlp_endpoint",
        "OTLP/HTTP collector base URL for traces (empty: no export)",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "telemetry",
        "otlp_endpoint",
        "OTLP/HTTP traces URL, used as given; wins over the base URL",
    ),
    (
        "DASHBOARD_ENABLED",
        "dashboard",
        "enabled",
        "serve the web dashboard on the metrics listener",
    ),
    (
        "DASHBOARD_ALLOW_REPLAY",
        "dashboard",
        "allow_replay",
        "let the dashboard replay dead letters (republishes events)",
    ),
];

impl Default for Config {
    fn default() -> Self {
        // The embedded file is part of the binary and covered by a unit test; should it ever fail
        // to parse, fall back to the same values spelled out in code.
        toml::from_str(DEFAULT_TOML).unwrap_or_else(|_| Config::builtin())
    }
}

impl Config {
    fn builtin() -> Config {
        Config {
            nats: NatsConfig {
                url: "nats://127.0.0.1:4222".into(),
                subject_prefix: "coord".into(),
                tls_ca_file: String::new(),
                tls_cert_file: String::new(),
                tls_key_file: String::new(),
                creds_file: String::new(),
            },
            redis: RedisConfig {
                url: "redis://127.0.0.1:6379/".into(),
                key_prefix: "switchyard".into(),
                response_timeout_ms: 2000,
                connection_timeout_ms: 2000,
                cluster: false,
                tls_ca_file: String::new(),
                tls_cert_file: String::new(),
                tls_key_file: String::new(),
                sentinel_master: String::new(),
                username: String::new(),
                password_file: String::new(),
                story_max_entries: 100,
            },
            coordination: CoordinationConfig {
                max_concurrent_coordinations: 10,
                optimization_interval_s: 5.0,
                learning_rate: 0.1,
                batch_size: 256,
                dispatch_window: 128,
                max_candidates: 4,
                grant_resend_ms: 1000,
                default_strategy: "least_loaded".into(),
                task_retention_s: 86_400,
                infeasible: InfeasiblePolicy::Hold,
                queue_timeout_s: 0.0,
                run_timeout_s: 0.0,
                max_attempts: 1,
                retry_backoff_s: 1.0,
                retry_backoff_max_s: 60.0,
                head_reservation: true,
                head_hold_ms: 10_000,
            },
            messages: MessagesConfig {
                message_buffer_size: 1000,
                enable_message_tracking: true,
                default_message_ttl_s: 300,
                max_message_bytes: 65_536,
                ack_timeout_ms: 5000,
            },
            jetstream: JetStreamConfig {
                ack_wait_ms: 30_000,
                max_deliver: 5,
                duplicate_window_s: 120,
                grants_max_age_s: 3600,
                grants_max_bytes: 1 << 30,
                messages_max_age_s: 86_400,
                replicas: 1,
                redelivery_backoff_ms: vec![1_000, 5_000, 15_000, 30_000],
            },
            metrics: MetricsConfig {
                addr: "127.0.0.1:9464".into(),
            },
            dashboard: DashboardConfig::default(),
            telemetry: TelemetryConfig::default(),
            tenants: TenantsConfig::default(),
            budgets: Vec::new(),
        }
    }

    /// Defaults, then `path` (if any), then the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let file = match path {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                Error::with_source(ErrorKind::Config, format!("cannot read {}", p.display()), e)
            })?),
            None => None,
        };
        let env: Vec<(String, String)> = std::env::vars().collect();
        Config::from_sources(file.as_deref(), &env)
    }

    /// Builds a config from an optional TOML override text and environment pairs; pure, so
    /// tests need not touch the process environment.
    pub fn from_sources(file: Option<&str>, env: &[(String, String)]) -> Result<Config, Error> {
        let mut errors = Vec::new();
        let mut merged: toml::Table = toml::from_str(DEFAULT_TOML)
            .map_err(|e| Error::with_source(ErrorKind::Config, "embedded default.toml", e))?;
        if let Some(text) = file {
            match toml::from_str::<toml::Table>(text) {
                Ok(overrides) => merge(&mut merged, overrides),
                Err(e) => errors.push(format!("config file: {e}")),
            }
        }
        apply_env(&mut merged, env, &mut errors);
        apply_budgets_env(&mut merged, env, &mut errors);
        let config = match toml::Value::Table(merged).try_into::<Config>() {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(format!("config: {e}"));
                None
            }
        };
        if let Some(c) = &config {
            errors.extend(c.problems());
        }
        match config {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(Error::new(
                ErrorKind::Config,
                format!("invalid configuration:\n  - {}", errors.join("\n  - ")),
            )),
        }
    }

    /// Every semantic problem with the values, for [`Config::from_sources`].
    pub fn problems(&self) -> Vec<String> {
        let fixed = [
            self.coordination.problems(),
            self.messages.problems(),
            self.jetstream.problems(),
            self.redis.problems(),
        ];
        let mut problems: Vec<String> = fixed.into_iter().flatten().map(str::to_string).collect();
        problems.extend(connection_problems(&self.nats, &self.redis));
        problems.extend(self.metrics.problems().into_iter().map(str::to_string));
        problems.extend(self.telemetry.problems().into_iter().map(str::to_string));
        problems.extend(self.tenants.problems());
        problems.extend(budget_problems(&self.budgets));
        problems
    }
}

/// The messages of the checks that failed, in the order given.
fn failed(checks: &[(bool, &'static str)]) -> Vec<&'static str> {
    checks
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, message)| *message)
        .collect()
}

impl CoordinationConfig {
    fn problems(&self) -> Vec<&'static str> {
        failed(&[
            (
                self.max_concurrent_coordinations >= 1,
                "coordination.max_concurrent_coordinations must be >= 1",
            ),
            (
                self.optimization_interval_s.is_finite() && self.optimization_interval_s > 0.0,
                "coordination.optimization_interval_s must be > 0",
            ),
            (
                self.learning_rate.is_finite()
                    && self.learning_rate > 0.0
                    && self.learning_rate <= 1.0,
                "coordination.learning_rate must be in (0, 1]",
            ),
            (
                (1..=10_000).contains(&self.batch_size),
                "coordination.batch_size must be 1..=10000",
            ),
            (
                self.dispatch_window >= 1,
                "coordination.dispatch_window must be >= 1",
            ),
            (
                (1..=64).contains(&self.max_candidates),
                "coordination.max_candidates must be 1..=64",
            ),
            (
                (50..=600_000).contains(&self.grant_resend_ms),
                "coordination.grant_resend_ms must be 50..=600000",
            ),
            (
                limit_ok(self.queue_timeout_s),
                "coordination.queue_timeout_s must be 0..=2592000 (0: none)",
            ),
            (
                limit_ok(self.run_timeout_s),
                "coordination.run_timeout_s must be 0..=2592000 (0: none)",
            ),
            (
                (1..=switchyard_protocol::MAX_ATTEMPTS).contains(&self.max_attempts),
                "coordination.max_attempts must be 1..=100",
            ),
            (
                limit_ok(self.retry_backoff_s),
                "coordination.retry_backoff_s must be 0..=2592000",
            ),
            (
                limit_ok(self.retry_backoff_max_s),
                "coordination.retry_backoff_max_s must be 0..=2592000",
            ),
            (
                (100..=600_000).contains(&self.head_hold_ms),
                "coordination.head_hold_ms must be 100..=600000",
            ),
            (
                switchyard_decision::StrategyKind::parse(&self.default_strategy).is_some(),
                "coordination.default_strategy must be one of least_loaded, round_robin, priority_based, load_balanced, adaptive, historical",
            ),
        ])
    }
}

/// A time limit or back-off in seconds as TASK_SUBMIT accepts it (0 ..= 30 days).
fn limit_ok(seconds: f64) -> bool {
    seconds.is_finite() && (0.0..=switchyard_protocol::MAX_TIME_LIMIT_S).contains(&seconds)
}

impl MessagesConfig {
    fn problems(&self) -> Vec<&'static str> {
        failed(&[
            (
                self.message_buffer_size >= 1,
                "messages.message_buffer_size must be >= 1",
            ),
            (
                self.max_message_bytes >= 1024,
                "messages.max_message_bytes must be >= 1024",
            ),
            (
                self.ack_timeout_ms >= 1,
                "messages.ack_timeout_ms must be > 0",
            ),
        ])
    }
}

impl JetStreamConfig {
    fn problems(&self) -> Vec<&'static str> {
        failed(&[
            (self.max_deliver >= 1, "jetstream.max_deliver must be >= 1"),
            (
                self.ack_wait_ms >= 100,
                "jetstream.ack_wait_ms must be >= 100",
            ),
            (
                [1, 3, 5].contains(&self.replicas),
                "jetstream.replicas must be 1, 3 or 5",
            ),
            (
                !self.redelivery_backoff_ms.is_empty(),
                "jetstream.redelivery_backoff_ms must list at least one pause",
            ),
        ])
    }
}

/// NATS and Redis in one list: the error list has always interleaved them (timeout, URLs, then
/// the subject prefix), and one function per section would reorder what users already see.
fn connection_problems(nats: &NatsConfig, redis: &RedisConfig) -> Vec<String> {
    let prefix = &nats.subject_prefix;
    let mut problems = owned(failed(&[(
        redis.response_timeout_ms >= 1,
        "redis.response_timeout_ms must be >= 1",
    )]));
    if let Err(bad) = parse_servers(&nats.url) {
        problems.extend(bad.iter().map(|entry| format!("nats.url: {entry}")));
    }
    problems.extend(owned(failed(&[
        (
            crate::state::seed_urls(&redis.url)
                .iter()
                .all(|url| url.starts_with("redis://") || url.starts_with("rediss://")),
            "redis.url must start with redis:// or rediss:// (TLS)",
        ),
        (
            !prefix.is_empty()
                && !prefix.contains(['*', '>', ' '])
                && !prefix.starts_with('.')
                && !prefix.ends_with('.'),
            "nats.subject_prefix must be a literal subject without wildcards",
        ),
        (
            nats.tls_cert_file.is_empty() == nats.tls_key_file.is_empty(),
            "nats.tls_cert_file and nats.tls_key_file must be set together",
        ),
    ])));
    problems
}

fn owned(messages: Vec<&'static str>) -> Vec<String> {
    messages.into_iter().map(str::to_string).collect()
}

impl NatsConfig {
    /// The TLS and credentials files that are set, for
    /// [`switchyard_client::transport::connect_secured`].
    pub fn security(&self) -> NatsSecurity {
        let path = |file: &str| (!file.is_empty()).then(|| PathBuf::from(file));
        NatsSecurity {
            ca_file: path(&self.tls_ca_file),
            cert_file: path(&self.tls_cert_file),
            key_file: path(&self.tls_key_file),
            creds_file: path(&self.creds_file),
        }
    }
}

impl RedisConfig {
    /// Several URLs only make sense to the cluster client (seeds) or under Sentinel (the
    /// sentinels); a single Redis has one address.
    /// An empty prefix would make the hash tag `{}`, which Redis Cluster ignores (it hashes the
    /// whole key), scattering a deployment's keys over the slots. TLS files with a plain URL
    /// would be silently unused, so they are refused.
    fn problems(&self) -> Vec<&'static str> {
        let seeds = crate::state::seed_urls(&self.url);
        let tls_files = [&self.tls_ca_file, &self.tls_cert_file, &self.tls_key_file];
        let tls_seeds = seeds.iter().filter(|u| u.starts_with("rediss://")).count();
        let sentinel = !self.sentinel_master.is_empty();
        failed(&[
            (
                tls_seeds == 0 || tls_seeds == seeds.len(),
                "redis.url must not mix redis:// and rediss:// seeds",
            ),
            (
                tls_files.iter().all(|f| f.is_empty()) || self.uses_tls(),
                "redis.tls_* files need a rediss:// redis.url",
            ),
            (
                self.tls_cert_file.is_empty() == self.tls_key_file.is_empty(),
                "redis.tls_cert_file and redis.tls_key_file must be set together",
            ),
            (!seeds.is_empty() || sentinel, "redis.url must name a Redis"),
            (
                self.cluster || sentinel || seeds.len() <= 1,
                "redis.url may list several nodes only with redis.cluster = true or redis.sentinel_master",
            ),
            (
                !(self.cluster && sentinel),
                "redis.cluster = true and redis.sentinel_master exclude each other",
            ),
            (
                !sentinel || !seeds.is_empty(),
                "redis.url must list at least one sentinel when redis.sentinel_master is set",
            ),
            (
                !sentinel || (!self.uses_tls() && tls_files.iter().all(|f| f.is_empty())),
                "TLS to Redis under Sentinel is not supported yet",
            ),
            (
                !self.sentinel_master.contains(char::is_whitespace),
                "redis.sentinel_master must be a name without blanks",
            ),
            (
                !self.key_prefix.is_empty(),
                "redis.key_prefix must not be empty",
            ),
            (
                (1..=100_000).contains(&self.story_max_entries),
                "redis.story_max_entries must be 1..=100000",
            ),
            (
                self.username.is_empty() || !self.password_file.is_empty(),
                "redis.username needs redis.password_file",
            ),
            (
                sentinel || self.password_file.is_empty() || !seeds.iter().any(|u| has_login(u)),
                "redis.url must not carry a login when redis.username / redis.password_file are set",
            ),
        ])
    }
}

/// Whether a `redis://` URL carries `user:password@` (or `:password@`).
fn has_login(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
        .is_some_and(|authority| authority.contains('@'))
}

impl RedisConfig {
    /// Whether the URL (every seed) asks for TLS.
    pub fn uses_tls(&self) -> bool {
        let seeds = crate::state::seed_urls(&self.url);
        !seeds.is_empty() && seeds.iter().all(|url| url.starts_with("rediss://"))
    }
}

impl MetricsConfig {
    fn problems(&self) -> Vec<&'static str> {
        failed(&[(
            self.addr.parse::<std::net::SocketAddr>().is_ok(),
            "metrics.addr must be host:port",
        )])
    }
}

fn merge(base: &mut toml::Table, overrides: toml::Table) {
    for (key, value) in overrides {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// `BUDGETS`: the whole `budgets` list as a TOML array of inline tables, replacing the file's,
/// e.g. `[{name = "openai-tpm", kind = "rate", limit = 90000, unit = "tokens"}]`.
fn apply_budgets_env(merged: &mut toml::Table, env: &[(String, String)], errors: &mut Vec<String>) {
    let Some((_, raw)) = env.iter().find(|(k, _)| k == "BUDGETS") else {
        return;
    };
    match toml::from_str::<toml::Table>(&format!("budgets = {raw}")) {
        Ok(mut table) => {
            if let Some(list) = table.remove("budgets") {
                merged.insert("budgets".into(), list);
            }
        }
        Err(e) => errors.push(format!("BUDGETS is not a TOML array of tables: {e}")),
    }
}

fn apply_env(merged: &mut toml::Table, env: &[(String, String)], errors: &mut Vec<String>) {
    for (var, table, key, _) in ENV_OVERRIDES {
        let Some((_, raw)) = env.iter().find(|(k, _)| k == var) else {
            continue;
        };
        let Some(toml::Value::Table(section)) = merged.get_mut(table) else {
            continue;
        };
        let value = match section.get(key) {
            // A number where the current value is whole may still be meant as a fraction (the
            // file wrote `5` for seconds): a fraction is kept, and the typed struct refuses it
            // where a whole number is required.
            Some(toml::Value::Integer(_)) => (raw.trim().parse::<i64>().map(toml::Value::Integer))
                .or_else(|_| raw.trim().parse::<f64>().map(toml::Value::Float))
                .ok(),
            Some(toml::Value::Float(_)) => raw.trim().parse::<f64>().map(toml::Value::Float).ok(),
            Some(toml::Value::Boolean(_)) => parse_bool(raw).map(toml::Value::Boolean),
            _ => Some(toml::Value::String(raw.clone())),
        };
        match value {
            Some(v) => {
                section.insert(key.to_string(), v);
            }
            None => errors.push(format!(
                "{var}={raw:?} is not a valid value for {table}.{key}"
            )),
        }
    }
}

/// One line of a binary's `--help` about an environment variable: its name, what it sets and
/// its default (none: no default worth naming).
pub fn env_help_line(name: &str, about: &str, default: Option<&str>) -> String {
    match default {
        Some(default) => format!("  {name:<29} {about} [default: {default}]"),
        None => format!("  {name:<29} {about}"),
    }
}

/// The `--help` lines of every environment variable the configuration reads, made from
/// [`ENV_OVERRIDES`] (so a new override is listed without anyone remembering to) and `BUDGETS`,
/// each with its default from the embedded `config/default.toml`.
pub fn env_help() -> String {
    let defaults: toml::Table = toml::from_str(DEFAULT_TOML).unwrap_or_default();
    let mut lines: Vec<String> = ENV_OVERRIDES
        .iter()
        .map(|(var, table, key, about)| {
            let default = defaults
                .get(*table)
                .and_then(|section| section.get(*key))
                .map(|value| match value {
                    toml::Value::String(s) if s.is_empty() => "empty".to_string(),
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            env_help_line(var, &format!("{about} ({table}.{key})"), default.as_deref())
        })
        .collect();
    lines.push(env_help_line(
        "BUDGETS",
        "the whole [[budgets]] list, a TOML array of inline tables",
        Some("none"),
    ));
    lines.join("\n")
}

/// The names of the environment variables that override configuration keys.
pub fn env_override_names() -> impl Iterator<Item = &'static str> {
    ENV_OVERRIDES.iter().map(|(var, ..)| *var)
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

impl Config {
    /// The settings of an inter-agent protocol endpoint (`[messages]` and `[jetstream]`) for a
    /// client that runs with this configuration (the message benchmark, the demo's agents).
    pub fn protocol_options(&self) -> ProtocolOptions {
        let m = &self.messages;
        ProtocolOptions {
            message_buffer_size: m.message_buffer_size.max(1),
            enable_tracking: m.enable_message_tracking,
            default_ttl_s: (m.default_message_ttl_s > 0).then_some(m.default_message_ttl_s),
            ack_timeout: Duration::from_millis(m.ack_timeout_ms.max(1)),
            messages_max_age: Duration::from_secs(self.jetstream.messages_max_age_s),
            duplicate_window: Duration::from_secs(self.jetstream.duplicate_window_s),
            max_message_bytes: m.max_message_bytes,
            ..ProtocolOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_parse_and_match_builtin() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).expect("default.toml parses");
        assert_eq!(parsed, Config::builtin());
        assert!(parsed.problems().is_empty());
    }

    #[test]
    fn env_help_names_every_override_with_its_default() {
        let help = env_help();
        for (var, table, key, _) in ENV_OVERRIDES {
            let line = help
                .lines()
                .find(|l| l.split_whitespace().next() == Some(var))
                .unwrap_or_else(|| panic!("{var} missing from\n{help}"));
            assert!(line.contains(&format!("({table}.{key})")), "{line}");
            assert!(line.contains("[default: "), "{line}");
        }
        assert!(help.contains("  NATS_URL "), "{help}");
        assert!(help.contains("[default: nats://127.0.0.1:4222]"), "{help}");
        assert!(help.contains("BUDGETS"), "{help}");
    }

    #[test]
    fn env_overrides_use_the_seed_names() {
        let c = Config::from_sources(
            None,
            &env(&[
                ("MAX_CONCURRENT_COORDINATIONS", "3"),
                ("LEARNING_RATE", "0.5"),
                ("NATS_URL", "nats://x:1"),
                ("ENABLE_MESSAGE_TRACKING", "false"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.coordination.max_concurrent_coordinations, 3);
        assert_eq!(c.coordination.learning_rate, 0.5);
        assert_eq!(c.nats.url, "nats://x:1");
        assert!(!c.messages.enable_message_tracking);
    }

    #[test]
    fn the_story_length_is_set_by_env_and_checked() {
        assert_eq!(Config::default().redis.story_max_entries, 100);
        let c =
            Config::from_sources(None, &env(&[("TASK_STORY_MAX_ENTRIES", "7")])).expect("valid");
        assert_eq!(c.redis.story_max_entries, 7);
        let e = Config::from_sources(None, &env(&[("TASK_STORY_MAX_ENTRIES", "0")]))
            .expect_err("0 entries refused");
        assert!(e.to_string().contains("redis.story_max_entries"), "{e}");
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let file = "[coordination]\nbatch_size = 7\nlearning_rate = 0.2\n";
        let c = Config::from_sources(Some(file), &env(&[("LEARNING_RATE", "0.3")])).expect("valid");
        assert_eq!(c.coordination.batch_size, 7);
        assert_eq!(c.coordination.learning_rate, 0.3);
        assert_eq!(c.coordination.dispatch_window, 128);
    }

    #[test]
    fn a_fraction_overrides_a_setting_the_file_wrote_whole() {
        let file = "[coordination]\noptimization_interval_s = 5\n";
        let c = Config::from_sources(Some(file), &env(&[("OPTIMIZATION_INTERVAL", "0.5")]))
            .expect("valid");
        assert_eq!(c.coordination.optimization_interval_s, 0.5);
        let err = Config::from_sources(None, &env(&[("MAX_CONCURRENT_COORDINATIONS", "2.5")]))
            .expect_err("a whole number is required");
        assert!(
            err.to_string().contains("max_concurrent_coordinations"),
            "{err}"
        );
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let file = "[coordination]\nlearning_rate = 2.0\nbatch_size = 0\n";
        let err = Config::from_sources(Some(file), &env(&[("OPTIMIZATION_INTERVAL", "soon")]))
            .expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("OPTIMIZATION_INTERVAL"), "{text}");
        assert!(text.contains("learning_rate"), "{text}");
        assert!(text.contains("batch_size"), "{text}");
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[test]
    fn time_limits_and_retries_are_set_by_file_or_env_and_checked() {
        let d = Config::default().coordination;
        assert_eq!((d.queue_timeout_s, d.run_timeout_s), (0.0, 0.0));
        assert_eq!(
            (d.max_attempts, d.retry_backoff_s, d.retry_backoff_max_s),
            (1, 1.0, 60.0)
        );
        let old = "[coordination]\nbatch_size = 7\n";
        let c = Config::from_sources(Some(old), &[]).expect("a file without them is valid");
        assert_eq!(c.coordination.max_attempts, 1);
        let c = Config::from_sources(
            None,
            &env(&[
                ("TASK_QUEUE_TIMEOUT_S", "30"),
                ("TASK_RUN_TIMEOUT_S", "600.5"),
                ("TASK_MAX_ATTEMPTS", "3"),
                ("TASK_RETRY_BACKOFF_S", "0.5"),
                ("TASK_RETRY_BACKOFF_MAX_S", "10"),
            ]),
        )
        .expect("valid");
        let c = c.coordination;
        assert_eq!((c.queue_timeout_s, c.run_timeout_s), (30.0, 600.5));
        assert_eq!(
            (c.max_attempts, c.retry_backoff_s, c.retry_backoff_max_s),
            (3, 0.5, 10.0)
        );
        let bad = "[coordination]\nmax_attempts = 0\nrun_timeout_s = -1\n";
        let text = Config::from_sources(Some(bad), &[])
            .expect_err("invalid")
            .to_string();
        assert!(text.contains("max_attempts"), "{text}");
        assert!(text.contains("run_timeout_s"), "{text}");
    }

    #[test]
    fn strategy_is_chosen_by_name_and_checked() {
        let c =
            Config::from_sources(None, &env(&[("DEFAULT_STRATEGY", "ADAPTIVE")])).expect("valid");
        assert_eq!(c.coordination.default_strategy, "ADAPTIVE");
        let err = Config::from_sources(None, &env(&[("DEFAULT_STRATEGY", "coin_flip")]))
            .expect_err("unknown");
        assert!(err.to_string().contains("default_strategy"), "{err}");
    }

    #[test]
    fn the_ack_timeout_is_set_by_file_or_env_and_must_be_positive() {
        assert_eq!(Config::default().messages.ack_timeout_ms, 5000);
        let c =
            Config::from_sources(None, &env(&[("MESSAGE_ACK_TIMEOUT_MS", "750")])).expect("valid");
        assert_eq!(c.messages.ack_timeout_ms, 750);
        let options = c.protocol_options();
        assert_eq!(options.ack_timeout, std::time::Duration::from_millis(750));
        let err =
            Config::from_sources(Some("[messages]\nack_timeout_ms = 0\n"), &[]).expect_err("zero");
        assert!(err.to_string().contains("ack_timeout_ms"), "{err}");
    }

    #[test]
    fn the_client_protocol_defaults_are_the_configuration_defaults() {
        let from_config = Config::default().protocol_options();
        let client = ProtocolOptions::default();
        assert_eq!(from_config.message_buffer_size, client.message_buffer_size);
        assert_eq!(from_config.enable_tracking, client.enable_tracking);
        assert_eq!(from_config.default_ttl_s, client.default_ttl_s);
        assert_eq!(from_config.ack_timeout, client.ack_timeout);
        assert_eq!(from_config.messages_max_age, client.messages_max_age);
        assert_eq!(from_config.duplicate_window, client.duplicate_window);
        assert_eq!(from_config.max_message_bytes, client.max_message_bytes);
    }

    #[test]
    fn nats_url_takes_a_list_and_every_bad_entry_is_reported() {
        let list = "nats://a:4222, tls://b:4222";
        let c = Config::from_sources(None, &env(&[("NATS_URL", list)])).expect("valid list");
        assert_eq!(c.nats.url, list);
        let file = "[nats]\nurl = \"nats://a:1,nats://b:2,nats://c:3\"\n";
        assert!(Config::from_sources(Some(file), &[]).is_ok());
        let err = Config::from_sources(None, &env(&[("NATS_URL", "http://x,nats://ok:1,,y")]))
            .expect_err("bad entries");
        let text = err.to_string();
        assert!(text.contains("nats.url: entry 1 \"http://x\""), "{text}");
        assert!(text.contains("nats.url: entry 3"), "{text}");
        assert!(text.contains("nats.url: entry 4 \"y\""), "{text}");
        assert!(!text.contains("entry 2"), "{text}");
    }

    #[test]
    fn tls_files_are_optional_and_cert_and_key_go_together() {
        let defaults = Config::default();
        assert_eq!(defaults.nats.security(), NatsSecurity::default());
        let file = "[nats]\ntls_ca_file = \"/etc/ca.pem\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n";
        let c = Config::from_sources(Some(file), &[]).expect("valid tls");
        let tls = c.nats.security();
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(tls.cert_file, Some(PathBuf::from("c.pem")));
        assert_eq!(tls.key_file, Some(PathBuf::from("k.pem")));
        let err = Config::from_sources(Some("[nats]\ntls_cert_file = \"c.pem\"\n"), &[])
            .expect_err("cert without key");
        assert!(err.to_string().contains("set together"), "{err}");
    }

    #[test]
    fn replicas_default_to_one_and_must_be_1_3_or_5() {
        assert_eq!(Config::default().jetstream.replicas, 1);
        for ok in [1, 3, 5] {
            let file = format!("[jetstream]\nreplicas = {ok}\n");
            let c = Config::from_sources(Some(&file), &[]).expect("valid replicas");
            assert_eq!(c.jetstream.replicas, ok);
        }
        for bad in [0, 2, 4, 7] {
            let file = format!("[jetstream]\nreplicas = {bad}\n");
            let err = Config::from_sources(Some(&file), &[]).expect_err("invalid replicas");
            assert!(
                err.to_string()
                    .contains("jetstream.replicas must be 1, 3 or 5"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_cluster_example_configuration_is_valid() {
        let c = Config::from_sources(Some(include_str!("../../../config/cluster.toml")), &[])
            .expect("config/cluster.toml is valid");
        assert_eq!(c.jetstream.replicas, 3);
    }

    #[test]
    fn a_cluster_is_chosen_by_file_or_env_and_may_list_seeds() {
        assert!(!Config::default().redis.cluster);
        let seeds = "redis://127.0.0.1:7000, redis://127.0.0.1:7001";
        let c = Config::from_sources(
            None,
            &env(&[("REDIS_CLUSTER", "true"), ("REDIS_URL", seeds)]),
        )
        .expect("valid");
        assert!(c.redis.cluster);
        let err = Config::from_sources(None, &env(&[("REDIS_URL", seeds)])).expect_err("two urls");
        assert!(err.to_string().contains("redis.cluster"), "{err}");
        let file = "[redis]\ncluster = true\nurl = \"redis://a:1,http://b:2\"\n";
        let err = Config::from_sources(Some(file), &[]).expect_err("not redis://");
        assert!(err.to_string().contains("redis://"), "{err}");
        let err = Config::from_sources(None, &env(&[("REDIS_KEY_PREFIX", "")])).expect_err("empty");
        assert!(err.to_string().contains("key_prefix"), "{err}");
    }

    #[test]
    fn trace_export_is_off_by_default_and_set_by_the_standard_env_names() {
        let c = Config::from_sources(None, &[]).expect("defaults");
        assert!(!c.telemetry.enabled());
        assert_eq!(
            c.telemetry,
            TelemetryConfig::default(),
            "file and code agree"
        );
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let c = Config::from_sources(None, &env(&[base])).expect("valid");
        assert_eq!(c.telemetry.otlp_endpoint, "http://collector:4318");
        assert!(c.telemetry.enabled());
        let full = (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://other:4318/v1/traces",
        );
        let c = Config::from_sources(None, &env(&[base, full])).expect("valid");
        assert_eq!(c.telemetry.otlp_endpoint, "http://other:4318/v1/traces");
        let file = "[telemetry]\notlp_endpoint = \"https://collector:4318\"";
        let err = Config::from_sources(Some(file), &[]).expect_err("https is not spoken");
        assert!(err.to_string().contains("telemetry.otlp_endpoint"), "{err}");
        let file = "[telemetry]\nmax_export_batch = 0";
        assert!(Config::from_sources(Some(file), &[]).is_err());
    }

    #[test]
    fn tls_files_and_replicas_are_set_by_env() {
        let c = Config::from_sources(
            None,
            &env(&[
                ("NATS_TLS_CA_FILE", "/n/ca.pem"),
                ("NATS_TLS_CERT_FILE", "/n/c.pem"),
                ("NATS_TLS_KEY_FILE", "/n/k.pem"),
                ("REDIS_URL", "rediss://r:6380/"),
                ("REDIS_TLS_CA_FILE", "/r/ca.pem"),
                ("REDIS_TLS_CERT_FILE", "/r/c.pem"),
                ("REDIS_TLS_KEY_FILE", "/r/k.pem"),
                ("JETSTREAM_REPLICAS", "3"),
            ]),
        )
        .expect("valid");
        let nats = c.nats.security();
        assert_eq!(nats.ca_file, Some(PathBuf::from("/n/ca.pem")));
        assert_eq!(nats.cert_file, Some(PathBuf::from("/n/c.pem")));
        assert_eq!(nats.key_file, Some(PathBuf::from("/n/k.pem")));
        let r = &c.redis;
        let files = [&r.tls_ca_file, &r.tls_cert_file, &r.tls_key_file];
        assert_eq!(files, ["/r/ca.pem", "/r/c.pem", "/r/k.pem"]);
        assert!(r.uses_tls());
        assert_eq!(c.jetstream.replicas, 3);
        let err = Config::from_sources(None, &env(&[("JETSTREAM_REPLICAS", "2")]))
            .expect_err("two replicas");
        assert!(err.to_string().contains("jetstream.replicas"), "{err}");
        let err = Config::from_sources(None, &env(&[("JETSTREAM_REPLICAS", "three")]))
            .expect_err("not a number");
        assert!(err.to_string().contains("JETSTREAM_REPLICAS"), "{err}");
    }

    #[test]
    fn rediss_is_accepted_and_its_files_are_checked() {
        let c = Config::from_sources(None, &env(&[("REDIS_URL", "rediss://r:6380/")]))
            .expect("rediss alone: the system's roots");
        assert!(c.redis.uses_tls() && c.redis.tls_ca_file.is_empty());
        assert!(!Config::default().redis.uses_tls());
        let plain_with_ca = env(&[("REDIS_TLS_CA_FILE", "/r/ca.pem")]);
        let err = Config::from_sources(None, &plain_with_ca).expect_err("files, plain url");
        assert!(err.to_string().contains("need a rediss://"), "{err}");
        let cert_only = env(&[
            ("REDIS_URL", "rediss://r:6380/"),
            ("REDIS_TLS_CERT_FILE", "/r/c.pem"),
        ]);
        let err = Config::from_sources(None, &cert_only).expect_err("cert without key");
        assert!(err.to_string().contains("redis.tls_cert_file and"), "{err}");
        let file = "[redis]\ncluster = true\nurl = \"rediss://a:1,redis://b:2\"\n";
        let err = Config::from_sources(Some(file), &[]).expect_err("mixed seeds");
        assert!(err.to_string().contains("must not mix"), "{err}");
        let file = "[redis]\ncluster = true\nurl = \"rediss://a:1,rediss://b:2\"\n";
        assert!(Config::from_sources(Some(file), &[]).is_ok());
    }

    #[test]
    fn sentinel_mode_names_the_master_lists_sentinels_and_excludes_cluster() {
        assert!(Config::default().redis.sentinel_master.is_empty());
        let sentinels = "redis://127.0.0.1:26379, redis://127.0.0.1:26380,redis://127.0.0.1:26381";
        let on = [
            ("REDIS_SENTINEL_MASTER", "mymaster"),
            ("REDIS_URL", sentinels),
        ];
        let c = Config::from_sources(None, &env(&on)).expect("valid sentinel mode");
        assert_eq!(c.redis.sentinel_master, "mymaster");
        let file = "[redis]\nsentinel_master = \"mymaster\"\nurl = \"redis://s:26379\"\n";
        let c = Config::from_sources(Some(file), &[]).expect("one sentinel is enough");
        assert_eq!(c.redis.url, "redis://s:26379");

        let both = "[redis]\ncluster = true\nsentinel_master = \"m\"\nurl = \"redis://a:1\"\n";
        let err = Config::from_sources(Some(both), &[]).expect_err("cluster and sentinel");
        assert!(err.to_string().contains("exclude each other"), "{err}");
        let none = [("REDIS_SENTINEL_MASTER", "m"), ("REDIS_URL", " , ")];
        let err = Config::from_sources(None, &env(&none)).expect_err("no sentinel");
        assert!(err.to_string().contains("at least one sentinel"), "{err}");
        assert!(!err.to_string().contains("must name a Redis"), "{err}");
        let blank = [
            ("REDIS_SENTINEL_MASTER", "my master"),
            ("REDIS_URL", sentinels),
        ];
        let err = Config::from_sources(None, &env(&blank)).expect_err("blank in name");
        assert!(err.to_string().contains("without blanks"), "{err}");
        let bad = [
            ("REDIS_SENTINEL_MASTER", "m"),
            ("REDIS_URL", "redis://a:1,http://b:2"),
        ];
        let err = Config::from_sources(None, &env(&bad)).expect_err("not redis://");
        assert!(err.to_string().contains("redis://"), "{err}");
    }

    #[test]
    fn the_redis_login_is_set_by_file_or_env_and_checked() {
        let r = Config::default().redis;
        assert!(
            r.username.is_empty() && r.password_file.is_empty(),
            "no login"
        );
        let login = [
            ("REDIS_USERNAME", "switchyard-optimizer"),
            ("REDIS_PASSWORD_FILE", "/auth/redis/optimizer.password"),
        ];
        let c = Config::from_sources(None, &env(&login)).expect("valid login");
        assert_eq!(c.redis.username, "switchyard-optimizer");
        assert_eq!(c.redis.password_file, "/auth/redis/optimizer.password");
        let file = "[redis]\npassword_file = \"/p\"\n";
        assert!(
            Config::from_sources(Some(file), &[]).is_ok(),
            "password alone"
        );
        let err = Config::from_sources(None, &env(&[("REDIS_USERNAME", "u")]))
            .expect_err("user without password");
        assert!(err.to_string().contains("redis.username needs"), "{err}");
        let url_too = [
            ("REDIS_PASSWORD_FILE", "/p"),
            ("REDIS_URL", "redis://u:secret@h:6379/"),
        ];
        let err = Config::from_sources(None, &env(&url_too)).expect_err("two logins");
        assert!(err.to_string().contains("must not carry a login"), "{err}");
        let in_url = [("REDIS_URL", "redis://u:secret@h:6379/")];
        assert!(
            Config::from_sources(None, &env(&in_url)).is_ok(),
            "URL login"
        );
        let sentinels = [
            ("REDIS_PASSWORD_FILE", "/p"),
            ("REDIS_SENTINEL_MASTER", "m"),
            ("REDIS_URL", "redis://:sentinel-pw@s:26379"),
        ];
        assert!(
            Config::from_sources(None, &env(&sentinels)).is_ok(),
            "the sentinels' login and the primary's"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_sources(Some("[nats]\nurll = \"x\"\n"), &[]).expect_err("typo");
        assert!(err.to_string().contains("urll"), "{err}");
    }

    #[test]
    fn tenant_weights_are_validated_whole_and_label_bounded() {
        let text = "[tenants]\nweights = { team-a = 2.0, \"bad|name\" = 1.0, zero = 0.0 }\n";
        let err = Config::from_sources(Some(text), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant \"bad|name\""), "{err}");
        assert!(err.contains("tenants.weights.zero"), "{err}");
        assert!(!err.contains("team-a"), "{err}");
        let c = Config::from_sources(Some("[tenants]\nweights = { team-a = 2.0 }\n"), &[]).unwrap();
        assert_eq!(c.tenants.weight("team-a"), 2.0);
        assert_eq!(c.tenants.weight("nobody"), 1.0);
        assert_eq!(c.tenants.label("team-a"), "team-a");
        assert_eq!(c.tenants.label("default"), "default");
        assert_eq!(c.tenants.label("nobody"), "other");
    }

    #[test]
    fn the_head_reservation_is_on_by_default_and_can_be_turned_off() {
        let c = Config::from_sources(None, &[]).unwrap();
        assert!(c.coordination.head_reservation);
        assert_eq!(c.coordination.head_hold_ms, 10_000);
        let off = Config::from_sources(
            None,
            &env(&[("HEAD_RESERVATION", "false"), ("HEAD_HOLD_MS", "50")]),
        );
        let err = off.unwrap_err().to_string();
        assert!(err.contains("head_hold_ms"), "{err}");
        let off = Config::from_sources(None, &env(&[("HEAD_RESERVATION", "false")])).unwrap();
        assert!(!off.coordination.head_reservation);
    }

    #[test]
    fn budgets_are_read_from_the_file_and_from_budgets_env_and_checked_whole() {
        let file = r#"
[[budgets]]
name = "openai-tpm"
kind = "rate"
limit = 90000
burst = 1500

[[budgets]]
name = "gpu"
kind = "concurrency"
limit = 4
"#;
        let c = Config::from_sources(Some(file), &[]).expect("valid budgets");
        assert_eq!(c.budgets.len(), 2);
        assert_eq!(c.budgets[0].period_ms(), 60_000);
        assert_eq!(c.budgets[0].unit(), "tokens");
        assert_eq!(c.budgets[0].rate().burst, 1500);
        let from_env = Config::from_sources(
            Some(file),
            &env(&[(
                "BUDGETS",
                r#"[{name = "rpm", kind = "rate", limit = 60, unit = "requests"}]"#,
            )]),
        )
        .expect("env budgets");
        assert_eq!(from_env.budgets.len(), 1);
        assert_eq!(from_env.budgets[0].unit(), "requests");
        let bad = r#"
[[budgets]]
name = "a b"
kind = "rate"
limit = 0
[[budgets]]
name = "c"
kind = "concurrency"
limit = 1
burst = 3
[[budgets]]
name = "c"
kind = "rate"
limit = 1
period_s = 0.0
"#;
        let e = Config::from_sources(Some(bad), &[])
            .unwrap_err()
            .to_string();
        for part in [
            "name \"a b\"",
            "limit must be >= 1",
            "rate budgets only",
            "defined twice",
            "period_s",
        ] {
            assert!(e.contains(part), "{part} missing from {e}");
        }
        assert!(Config::from_sources(None, &env(&[("BUDGETS", "[{")])).is_err());
    }
}
