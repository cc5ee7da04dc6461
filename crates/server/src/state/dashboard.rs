//! Reads only the web dashboard makes (crate::dashboard): agents' leases, agents that left the
//! fleet lately, and the queue's depth per priority. Each is bounded: by the active fleet, by the
//! departed-agents index (which the leaving scripts trim), by the number of priorities.

use super::rows::agent_status;
use super::store::Store;
use switchyard_client::error::Error;
use switchyard_protocol::{AgentStatusView, MAX_TASK_PRIORITY};

/// An agent's liveness lease as the dashboard shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AgentLease {
    /// The lease (ms); 0 = the agent has none and never expires by silence.
    pub lease_ms: u64,
    /// When it runs out unless a heartbeat renews it (Redis clock, ms).
    pub deadline_ms: Option<u64>,
}

/// An agent that died or deregistered lately.
#[derive(Debug, Clone, PartialEq)]
pub struct DepartedAgent {
    /// Its last row (`status` is `dead` or `deregistered`).
    pub agent: AgentStatusView,
    /// When it left (Redis clock, ms): `died_at` for a dead agent.
    pub left_at_ms: u64,
}

impl Store {
    /// Each agent's lease and deadline, in the order of `ids` (two round trips).
    pub async fn agent_leases(&self, ids: &[String]) -> Result<Vec<AgentLease>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGET").arg(self.keys().agent(id)).arg("lease_ms");
        }
        let leases: Vec<Option<u64>> = pipe.query_async(&mut self.conn()).await?;
        let deadlines = self.lease_deadlines(ids).await?;
        Ok(leases
            .into_iter()
            .zip(deadlines)
            .map(|(lease, deadline)| AgentLease {
                lease_ms: lease.unwrap_or(0),
                deadline_ms: deadline.map(|d| d as u64),
            })
            .collect())
    }

    /// Agents that left the fleet (dead or deregistered), newest first, at most `limit`, from the
    /// departed-agents index the leaving scripts keep (a day, 1000 agents at most). An agent that
    /// registered again since is left out: it is in the fleet again.
    pub async fn departed_agents(&self, limit: usize) -> Result<Vec<DepartedAgent>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let listed: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.keys().departed_agents())
            .arg(0)
            .arg(limit - 1)
            .arg("REV")
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await?;
        let ids: Vec<String> = listed.iter().map(|(id, _)| id.clone()).collect();
        let rows = self.agent_rows(&ids).await?;
        Ok(listed
            .into_iter()
            .zip(rows)
            .filter(|(_, row)| {
                let status = row.get(1).map(String::as_str).unwrap_or_default();
                !status.is_empty() && status != "active"
            })
            .map(|((id, left_at), row)| DepartedAgent {
                agent: agent_status(id, &row),
                left_at_ms: left_at as u64,
            })
            .collect())
    }

    /// Queued tasks per priority, highest priority first, priorities with none left out: one
    /// ZCOUNT per priority over its band of queue scores (`queue_score` in lua/lib.lua).
    pub async fn queue_depth_by_priority(&self) -> Result<Vec<(u8, u64)>, Error> {
        let mut pipe = redis::pipe();
        let priorities: Vec<u8> = (0..=MAX_TASK_PRIORITY).rev().collect();
        for p in &priorities {
            let low = (100 - u64::from(*p)) as f64 * 1e13;
            pipe.cmd("ZCOUNT")
                .arg(self.keys().queue())
                .arg(low)
                .arg(format!("({}", low + 1e13));
        }
        let counts: Vec<u64> = pipe.query_async(&mut self.conn()).await?;
        Ok(priorities
            .into_iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .collect())
    }
}
