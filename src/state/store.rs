//! [`Store`]: typed calls to the transition scripts and the few plain reads around them.
//!
//! All calls take `&self` and clone the multiplexed [`ConnectionManager`] (a cheap handle), so a
//! batch's calls issued concurrently share one connection and are pipelined by the client: one
//! network round trip for the whole batch instead of one per event.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::keys::Keys;
use super::records::*;
use super::rows::{AGENT_FIELDS, TASK_FIELDS, agent_status, agent_view, queued_task};
use super::scripts::Scripts;
use crate::config::RedisConfig;
use crate::decision::{AgentView, PatternTable, ResourceKind, Resources};
use crate::error::{Error, ErrorKind};
use crate::protocol::{CoordinationSync, PatternRow, StatusQuery};

/// Starting performance score of a new agent: neutral, so it is neither favoured nor starved.
pub use crate::decision::NEUTRAL_SCORE;

/// Handle to the shared state. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    keys: Keys,
    // Visible to the sibling modules that add transitions to `Store` (handoffs.rs).
    pub(super) scripts: std::sync::Arc<Scripts>,
}

impl Store {
    /// Connects with explicit timeouts and loads every script once (later calls use EVALSHA).
    pub async fn connect(config: &RedisConfig) -> Result<Store, Error> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| Error::with_source(ErrorKind::Config, "invalid redis.url", e))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_millis(config.response_timeout_ms)))
            .set_connection_timeout(Some(Duration::from_millis(config.connection_timeout_ms)))
            .set_number_of_retries(3);
        let conn = client
            .get_connection_manager_with_config(manager_config)
            .await?;
        let store = Store {
            conn,
            keys: Keys::new(config.key_prefix.clone()),
            scripts: std::sync::Arc::new(Scripts::new()),
        };
        for script in store.scripts.all() {
            script
                .prepare_invoke()
                .load_async(&mut store.conn())
                .await?;
        }
        Ok(store)
    }

    pub(super) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub async fn register_agent(
        &self,
        agent_id: &str,
        agent_type: &str,
        capacity: &Resources,
        priority_weight: f64,
        lease_ms: u64,
    ) -> Result<(), Error> {
        let mut inv = self.scripts.register_agent.prepare_invoke();
        inv.key(self.keys.agent(agent_id)).key(self.keys.agents());
        inv.arg(agent_id).arg(agent_type);
        for kind in ResourceKind::ALL {
            inv.arg(capacity.get(kind));
        }
        inv.arg(priority_weight).arg(NEUTRAL_SCORE).arg(lease_ms);
        let _: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        Ok(())
    }

    pub async fn deregister_agent(&self, agent_id: &str) -> Result<DeregisterOutcome, Error> {
        let reply: Vec<String> = self
            .scripts
            .deregister_agent
            .key(self.keys.agent(agent_id))
            .key(self.keys.agents())
            .key(self.keys.agent_tasks(agent_id))
            .arg(agent_id)
            .invoke_async(&mut self.conn())
            .await?;
        DeregisterOutcome::parse(&reply)
    }

    pub async fn submit_task(
        &self,
        req: &SubmitRequest,
        retention_s: u64,
    ) -> Result<SubmitOutcome, Error> {
        let k = &self.keys;
        let mut inv = self.scripts.submit_task.prepare_invoke();
        inv.key(k.task(&req.task_id))
            .key(k.unmet_dependencies(&req.task_id))
            .key(k.queue())
            .key(k.queue_seq())
            .key(k.stats());
        for dep in &req.dependencies {
            inv.key(k.task(dep)).key(k.dependents(dep));
        }
        inv.arg(&req.task_id)
            .arg(&req.message_id)
            .arg(&req.submitter)
            .arg(&req.task_type)
            .arg(req.priority);
        for kind in ResourceKind::ALL {
            inv.arg(req.required.get(kind));
        }
        inv.arg(req.estimated_duration_s)
            .arg(retention_s)
            .arg(req.dependencies.len());
        for dep in &req.dependencies {
            inv.arg(dep);
        }
        inv.arg(req.strategy.as_deref().unwrap_or(""))
            .arg(if req.explain { "1" } else { "0" });
        let reply: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        SubmitOutcome::parse(&reply)
    }

    /// Tries the candidates in order; see `lua/grant_task.lua`.
    pub async fn grant_task(
        &self,
        task_id: &str,
        candidates: &[String],
    ) -> Result<GrantOutcome, Error> {
        let k = &self.keys;
        let mut inv = self.scripts.grant_task.prepare_invoke();
        inv.key(k.task(task_id))
            .key(k.queue())
            .key(k.grant_outbox())
            .key(k.stats());
        for agent in candidates {
            inv.key(k.agent(agent)).key(k.agent_tasks(agent));
        }
        inv.arg(task_id).arg(candidates.len());
        for agent in candidates {
            inv.arg(agent);
        }
        let reply: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        GrantOutcome::parse(&reply)
    }

    pub async fn complete_task(
        &self,
        report: &Completion<'_>,
        learning_rate: f64,
        retention_s: u64,
    ) -> Result<CompleteOutcome, Error> {
        let k = &self.keys;
        let reply: Vec<String> = self
            .scripts
            .complete_task
            .key(k.task(report.task_id))
            .key(k.agent(report.agent_id))
            .key(k.agent_tasks(report.agent_id))
            .key(k.dependents(report.task_id))
            .key(k.stats())
            .key(k.grant_outbox())
            .key(k.patterns())
            .arg(report.task_id)
            .arg(report.agent_id)
            .arg(if report.success { 1 } else { 0 })
            .arg(report.execution_time_s)
            .arg(learning_rate)
            .arg(retention_s)
            .arg(report.grant_seq.unwrap_or(0))
            .invoke_async(&mut self.conn())
            .await?;
        CompleteOutcome::parse(&reply)
    }

    pub async fn resolve_dependency(
        &self,
        task_id: &str,
        dependency_id: &str,
        dependency_succeeded: bool,
        retention_s: u64,
    ) -> Result<ResolveOutcome, Error> {
        let k = &self.keys;
        let reply: Vec<String> = self
            .scripts
            .resolve_dependency
            .key(k.task(task_id))
            .key(k.unmet_dependencies(task_id))
            .key(k.queue())
            .key(k.stats())
            .key(k.dependents(task_id))
            .arg(task_id)
            .arg(dependency_id)
            .arg(if dependency_succeeded {
                "completed"
            } else {
                "failed"
            })
            .arg(retention_s)
            .invoke_async(&mut self.conn())
            .await?;
        ResolveOutcome::parse(&reply)
    }

    pub async fn requeue_task(
        &self,
        task_id: &str,
        agent_id: &str,
    ) -> Result<RequeueOutcome, Error> {
        let k = &self.keys;
        let reply: Vec<String> = self
            .scripts
            .requeue_task
            .key(k.task(task_id))
            .key(k.agent(agent_id))
            .key(k.agent_tasks(agent_id))
            .key(k.queue())
            .key(k.stats())
            .key(k.grant_outbox())
            .arg(task_id)
            .arg(agent_id)
            .invoke_async(&mut self.conn())
            .await?;
        RequeueOutcome::parse(&reply)
    }

    pub async fn record_heartbeat(&self, agent_id: &str) -> Result<HeartbeatOutcome, Error> {
        let reply: Vec<String> = self
            .scripts
            .record_heartbeat
            .key(self.keys.agent(agent_id))
            .arg(agent_id)
            .invoke_async(&mut self.conn())
            .await?;
        HeartbeatOutcome::parse(&reply)
    }

    /// Marks the agent dead if its lease ran out (Redis clock); see `lua/expire_agent.lua`.
    pub async fn expire_agent(&self, agent_id: &str) -> Result<ExpireOutcome, Error> {
        let reply: Vec<String> = self
            .scripts
            .expire_agent
            .key(self.keys.agent(agent_id))
            .key(self.keys.agents())
            .key(self.keys.agent_tasks(agent_id))
            .arg(agent_id)
            .invoke_async(&mut self.conn())
            .await?;
        ExpireOutcome::parse(&reply)
    }

    /// Active agents with a lease whose last heartbeat is older than the lease (Redis clock).
    /// Only candidates: `expire_agent` re-checks atomically.
    pub async fn agents_past_lease(&self) -> Result<Vec<String>, Error> {
        let ids = self.active_agent_ids().await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut self.conn()).await?;
        let now = secs * 1000 + micros / 1000;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.keys.agent(id))
                .arg("lease_ms")
                .arg("last_heartbeat");
        }
        let rows: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(&mut self.conn()).await?;
        Ok(ids
            .into_iter()
            .zip(rows)
            .filter(|(_, (lease, last))| matches!((lease, last), (Some(l), Some(t)) if *l > 0 && t + l < now))
            .map(|(id, _)| id)
            .collect())
    }

    /// Everything learned per (task type, agent type), for strategies and `status --patterns`.
    pub async fn patterns(&self) -> Result<PatternTable, Error> {
        let fields: BTreeMap<String, String> = self.conn().hgetall(self.keys.patterns()).await?;
        Ok(super::rows::pattern_table(&fields))
    }

    /// Takes the broadcast lease for `ttl_ms` if nobody holds it (one atomic SET NX PX).
    pub async fn take_sync_lease(&self, holder: &str, ttl_ms: u64) -> Result<bool, Error> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.keys.sync_lease())
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut self.conn())
            .await?;
        Ok(taken.is_some())
    }

    /// Ids of active agents.
    pub async fn active_agent_ids(&self) -> Result<Vec<String>, Error> {
        Ok(self.conn().smembers(self.keys.agents()).await?)
    }

    /// Views of all active agents, read in one pipelined round trip after the id list.
    pub async fn agent_snapshot(&self) -> Result<Vec<AgentView>, Error> {
        let ids = self.active_agent_ids().await?;
        let rows = self.agent_rows(&ids).await?;
        Ok(ids
            .into_iter()
            .zip(rows)
            .filter(|(_, row)| row.get(1).map(String::as_str) == Some("active"))
            .map(|(id, row)| agent_view(id, &row))
            .collect())
    }

    async fn agent_rows(&self, ids: &[String]) -> Result<Vec<Vec<String>>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new()); // an empty pipeline is refused by the client ("empty command")
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.keys.agent(id))
                .arg(&AGENT_FIELDS[..]);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.conn()).await?;
        Ok(rows
            .into_iter()
            .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
            .collect())
    }

    /// Up to `limit` tasks from the head of the priority queue, in order.
    pub async fn queue_head(&self, limit: usize) -> Result<Vec<QueuedTask>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = self
            .conn()
            .zrange(self.keys.queue(), 0, limit as isize - 1)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.keys.task(id))
                .arg(&TASK_FIELDS[..]);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.conn()).await?;
        Ok(ids
            .into_iter()
            .zip(rows)
            .filter(|(_, row)| row.first().and_then(|s| s.as_deref()) == Some("queued"))
            .map(|(id, row)| {
                queued_task(id, row.into_iter().map(Option::unwrap_or_default).collect())
            })
            .collect())
    }

    /// One task's record (all fields), or `None` when unknown or expired.
    pub async fn task_record(
        &self,
        task_id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, Error> {
        let map: BTreeMap<String, String> = self.conn().hgetall(self.keys.task(task_id)).await?;
        Ok(if map.is_empty() { None } else { Some(map) })
    }

    /// One agent's record (all fields), or `None`.
    pub async fn agent_record(
        &self,
        agent_id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, Error> {
        let map: BTreeMap<String, String> = self.conn().hgetall(self.keys.agent(agent_id)).await?;
        Ok(if map.is_empty() { None } else { Some(map) })
    }

    /// The grant of `task_id` number `grant_seq` reached NATS: drop it from the outbox.
    pub async fn mark_grants_published(&self, grants: &[(String, u64)]) -> Result<(), Error> {
        if grants.is_empty() {
            return Ok(());
        }
        let members: Vec<String> = grants.iter().map(|(t, s)| format!("{t}|{s}")).collect();
        let _: i64 = self.conn().zrem(self.keys.grant_outbox(), members).await?;
        Ok(())
    }

    /// Grants committed more than `older_than_ms` ago (Redis clock) whose publication was never
    /// confirmed: a replica died between commit and publish.
    pub async fn stale_grants(
        &self,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, Error> {
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut self.conn()).await?;
        let cutoff = (secs * 1000 + micros / 1000).saturating_sub(older_than_ms);
        let members: Vec<String> = self
            .conn()
            .zrangebyscore_limit(self.keys.grant_outbox(), 0, cutoff, 0, limit as isize)
            .await?;
        Ok(members
            .iter()
            .filter_map(|m| m.rsplit_once('|'))
            .filter_map(|(t, s)| Some((t.to_string(), s.parse().ok()?)))
            .collect())
    }

    pub async fn queue_depth(&self) -> Result<u64, Error> {
        Ok(self.conn().zcard(self.keys.queue()).await?)
    }

    /// A coordination snapshot for status queries and sync broadcasts.
    pub async fn coordination_sync(&self, query: &StatusQuery) -> Result<CoordinationSync, Error> {
        let queue_depth = self.queue_depth().await?;
        let counters: BTreeMap<String, u64> = self.conn().hgetall(self.keys.stats()).await?;
        let mut agents = Vec::new();
        if query.include_agents {
            let mut ids: Vec<String> = self.active_agent_ids().await?;
            ids.sort();
            let rows = self.agent_rows(&ids).await?;
            agents = ids
                .into_iter()
                .zip(rows)
                .map(|(id, row)| agent_status(id, &row))
                .collect();
        }
        let patterns = if query.include_patterns {
            pattern_rows(&self.patterns().await?)
        } else {
            Vec::new()
        };
        Ok(CoordinationSync {
            patterns,
            queue_depth,
            counters,
            agents,
        })
    }
}

fn pattern_rows(table: &PatternTable) -> Vec<PatternRow> {
    table
        .iter()
        .map(|(task_type, agent_type, s)| PatternRow {
            task_type: task_type.to_string(),
            agent_type: agent_type.to_string(),
            attempts: s.attempts,
            successes: s.successes,
            success_ema: s.success_ema,
            duration_ratio_ema: s.duration_ratio_ema,
        })
        .collect()
}
