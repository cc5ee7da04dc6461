//! [`Store`]: typed calls to the transition scripts (the plain reads are in `reads.rs`).
//!
//! All calls take `&self` and clone the multiplexed [`ConnectionManager`] (a cheap handle), so a
//! batch's calls issued concurrently share one connection and are pipelined by the client: one
//! network round trip for the whole batch instead of one per event.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::keys::Keys;
use super::records::*;
use super::scripts::Scripts;
use crate::config::RedisConfig;
use crate::decision::{ResourceKind, Resources};
use crate::error::{Error, ErrorKind};

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
}
