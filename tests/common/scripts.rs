//! The fixture of the script tests (`state_scripts.rs`, `handoff_scripts.rs`,
//! `redis_cluster.rs`): one redis-server (or a Redis Cluster), a `Store` on it (key prefix `t`)
//! and a raw connection, with short-hand methods for the transitions and for reading what they
//! changed.

use switchyard_decision::Resources;
use switchyard_protocol::RejectReason;
use switchyard_server::config::RedisConfig;
use switchyard_server::state::{
    CompleteOutcome, Completion, Connection, GrantOutcome, Keys, Refusal, Store, SubmitOutcome,
    SubmitRequest,
};

/// How long finished tasks are kept, in seconds.
pub const RETENTION_S: u64 = 3600;
/// The learning rate of completions.
pub const LR: f64 = 0.5;

/// One redis-server (or cluster) and a store on it (key prefix `t`), plus a raw connection of
/// the same kind for direct reads.
pub struct Fixture {
    /// The server(s), kept alive as long as the fixture.
    pub _server: Box<dyn std::any::Any + Send + Sync>,
    pub store: Store,
    pub raw: Connection,
    pub keys: Keys,
    /// The Redis URL (or seed URLs), for a second store on the same server.
    pub url: String,
}

pub async fn fixture() -> Fixture {
    let server = switchyard_harness::RedisServer::start()
        .await
        .expect("redis-server starts");
    let url = server.url();
    fixture_on(Box::new(server), url, false).await
}

/// The fixture on a three-master Redis Cluster, connected through every node as a seed.
pub async fn cluster_fixture() -> Fixture {
    let cluster = switchyard_harness::RedisCluster::start()
        .await
        .expect("redis cluster starts");
    let seeds = cluster.seed_urls();
    fixture_on(Box::new(cluster), seeds, true).await
}

async fn fixture_on(
    server: Box<dyn std::any::Any + Send + Sync>,
    url: String,
    cluster: bool,
) -> Fixture {
    let config = RedisConfig {
        url,
        key_prefix: "t".into(),
        response_timeout_ms: 2000,
        connection_timeout_ms: 2000,
        cluster,
        ..switchyard_server::config::Config::default().redis
    };
    let store = Store::connect(&config).await.expect("store connects");
    let url = config.url.clone();
    let raw = Connection::open(&config).await.expect("raw connection");
    Fixture {
        _server: server,
        store,
        raw,
        keys: Keys::new("t"),
        url,
    }
}

/// `milli` milli-cpu and nothing else.
pub fn cpu(milli: u64) -> Resources {
    Resources {
        cpu: milli,
        ..Resources::default()
    }
}

/// Milli-cpu and memory.
pub fn res(cpu: u64, memory: u64) -> Resources {
    Resources {
        cpu,
        memory,
        ..Resources::default()
    }
}

/// The same resource amount of all four kinds.
pub fn all(amount: u64) -> Resources {
    Resources {
        cpu: amount,
        memory: amount,
        tokens: amount,
        time: amount,
    }
}

pub fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A submit of `task_id` by `orch`, of type `default`, with no dependencies.
pub fn submit_req(
    task_id: &str,
    message_id: &str,
    priority: u8,
    required: Resources,
) -> SubmitRequest {
    SubmitRequest {
        task_id: task_id.into(),
        message_id: message_id.into(),
        submitter: "orch".into(),
        task_type: "default".into(),
        priority,
        required,
        estimated_duration_s: 0.0,
        dependencies: Vec::new(),
        strategy: None,
        explain: false,
        replies: switchyard_protocol::Replies::All,
        options: Vec::new(),
    }
}

pub fn with_deps(mut req: SubmitRequest, deps: &[&str]) -> SubmitRequest {
    req.dependencies = deps.iter().map(|d| d.to_string()).collect();
    req
}

/// A completion refused with `reason` and exactly `message`, as the script words it.
pub fn refused(reason: RejectReason, message: &str) -> CompleteOutcome {
    CompleteOutcome::Refused(Refusal {
        reason,
        message: message.to_string(),
    })
}

/// A successful completion of `task_id` by `agent_id`, on any grant, taking no time.
pub fn completion<'a>(task_id: &'a str, agent_id: &'a str) -> Completion<'a> {
    Completion {
        task_id,
        agent_id,
        success: true,
        execution_time_s: 0.0,
        grant_seq: None,
        usage: None,
    }
}

/// The transitions, each answering its outcome (a Redis error fails the test).
impl Fixture {
    pub async fn register(&self, agent_id: &str, capacity: Resources) {
        self.store
            .register_agent(agent_id, "worker", &capacity, 1.0, 0)
            .await
            .expect("register_agent");
    }

    pub async fn submit(&self, req: &SubmitRequest) -> SubmitOutcome {
        self.store
            .submit_task(req, RETENTION_S)
            .await
            .expect("submit_task")
    }

    pub async fn grant(&self, task_id: &str, candidates: &[&str]) -> GrantOutcome {
        self.store
            .grant_task(task_id, &ids(candidates))
            .await
            .expect("grant_task")
    }

    /// Submits `task_id` (message `m-<task_id>`) needing `need` and grants it to `agent_id`.
    pub async fn granted(&self, task_id: &str, need: Resources, agent_id: &str) {
        let req = submit_req(task_id, &format!("m-{task_id}"), 5, need);
        let submitted = self.submit(&req).await;
        assert_eq!(submitted, SubmitOutcome::Queued, "{task_id}");
        let outcome = self.grant(task_id, &[agent_id]).await;
        assert!(
            matches!(outcome, GrantOutcome::Granted { .. }),
            "{outcome:?}"
        );
    }

    pub async fn complete_report(&self, report: &Completion<'_>) -> CompleteOutcome {
        self.store
            .complete_task(report, LR, RETENTION_S)
            .await
            .expect("complete_task")
    }

    /// `agent_id` reports `task_id` done (or failed), on any grant.
    pub async fn complete(&self, task_id: &str, agent_id: &str, success: bool) -> CompleteOutcome {
        let report = Completion {
            success,
            ..completion(task_id, agent_id)
        };
        self.complete_report(&report).await
    }

    /// `agent_id` reports `task_id` done, about grant `grant_seq` (`None`: any grant).
    pub async fn complete_grant(
        &self,
        task_id: &str,
        agent_id: &str,
        grant_seq: Option<u64>,
    ) -> CompleteOutcome {
        let report = Completion {
            grant_seq,
            ..completion(task_id, agent_id)
        };
        self.complete_report(&report).await
    }
}

/// Reading what the transitions changed.
impl Fixture {
    /// One field of an agent's record ("" when the field is absent).
    pub async fn agent_field(&self, agent_id: &str, field: &str) -> String {
        self.store
            .agent_record(agent_id)
            .await
            .expect("agent_record")
            .unwrap_or_else(|| panic!("agent {agent_id} has no record"))
            .get(field)
            .cloned()
            .unwrap_or_default()
    }

    pub async fn agent_i64(&self, agent_id: &str, field: &str) -> i64 {
        let raw = self.agent_field(agent_id, field).await;
        raw.parse()
            .unwrap_or_else(|_| panic!("{agent_id}.{field} = {raw:?} is not an integer"))
    }

    /// The four reservations of an agent, in milli-units: cpu, memory, tokens, time.
    pub async fn reserved(&self, agent_id: &str) -> [i64; 4] {
        let mut out = [0; 4];
        for (i, field) in ["res_cpu", "res_memory", "res_tokens", "res_time"]
            .into_iter()
            .enumerate()
        {
            out[i] = self.agent_i64(agent_id, field).await;
        }
        out
    }

    /// One field of a task's record ("" when the task or the field is absent).
    pub async fn task_field(&self, task_id: &str, field: &str) -> String {
        self.store
            .task_record(task_id)
            .await
            .expect("task_record")
            .and_then(|r| r.get(field).cloned())
            .unwrap_or_default()
    }

    pub async fn task_state(&self, task_id: &str) -> Option<String> {
        self.store
            .task_record(task_id)
            .await
            .expect("task_record")
            .and_then(|r| r.get("state").cloned())
    }

    /// The queued task ids, in grant order.
    pub async fn queue_ids(&self) -> Vec<String> {
        self.store
            .queue_head(1000)
            .await
            .expect("queue_head")
            .into_iter()
            .map(|t| t.view.task_id)
            .collect()
    }

    /// The tasks an agent holds, sorted.
    pub async fn tasks_of(&mut self, agent_id: &str) -> Vec<String> {
        let mut members: Vec<String> = self
            .raw_query(
                "SMEMBERS",
                redis::cmd("SMEMBERS").arg(self.keys.agent_tasks(agent_id)),
            )
            .await;
        members.sort();
        members
    }

    /// Runs one raw command (named `what` in a failure) on the fixture's connection.
    pub async fn raw_query<T: redis::FromRedisValue>(&mut self, what: &str, cmd: &redis::Cmd) -> T {
        cmd.query_async(&mut self.raw)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    pub async fn zcard(&mut self, key: &str) -> u64 {
        self.raw_query("ZCARD", redis::cmd("ZCARD").arg(key)).await
    }

    pub async fn scard(&mut self, key: &str) -> u64 {
        self.raw_query("SCARD", redis::cmd("SCARD").arg(key)).await
    }

    pub async fn ttl(&mut self, key: &str) -> i64 {
        self.raw_query("TTL", redis::cmd("TTL").arg(key)).await
    }

    pub async fn pttl(&mut self, key: &str) -> i64 {
        self.raw_query("PTTL", redis::cmd("PTTL").arg(key)).await
    }

    pub async fn exists(&mut self, key: &str) -> bool {
        let n: i64 = self
            .raw_query("EXISTS", redis::cmd("EXISTS").arg(key))
            .await;
        n == 1
    }
}
